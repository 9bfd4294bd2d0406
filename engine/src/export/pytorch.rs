//! PyTorch weights: the fine-tuned model as a safetensors file whose tensor names and layouts are the
//! ones the usual model code loads with `load_state_dict(strict=True)`:
//! torchvision's `mobilenet_v2(num_classes=N)` and timm's `tf_efficientnet_lite0(num_classes=N)`.
//! BatchNorms keep their own tensors (`weight`, `bias`, `running_mean`, `running_var`, and
//! `num_batches_tracked`, which strict loading asks for); the classifier's weight is `[N, features]`.
//! The class labels and the preprocessing go beside it as `labels.json` (and in the file's metadata).

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};

use crate::bundle::BundleHeader;
use crate::model::{ConvBnAct, ImageClassifier, ModelKind};
use crate::readback;

use super::{ExportError, Preprocessing};

/// Where a Graft layer's tensors go in the PyTorch model: its conv's and its BatchNorm's prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerNames {
    /// Graft's module path (`stem`, `blocks.3.expand`, `head_conv`, …).
    pub graft: String,
    pub conv: String,
    pub norm: String,
}

/// The PyTorch names of `kind`'s conv layers, in Graft's order (stem, each block's expand,
/// depthwise and project, the head conv), and of its classifier.
pub fn layer_names(kind: ModelKind) -> (Vec<LayerNames>, &'static str) {
    let architecture = kind.architecture();
    let layer = |graft: String, conv: String, norm: String| LayerNames { graft, conv, norm };
    let mut layers = Vec::new();
    match kind {
        // torchvision: `features.0` the stem, `features.{i+1}` block i, `features.18` the head conv;
        // inside a block `conv.{n}` in order (conv-BN-ReLU6 groups are `Sequential`s of their own).
        ModelKind::MobileNetV2 => {
            layers.push(layer("stem".into(), "features.0.0".into(), "features.0.1".into()));
            let mut block = 0;
            for stage in architecture.stages {
                for _ in 0..stage.repeats {
                    let at = format!("features.{}.conv", block + 1);
                    let graft = |part: &str| format!("blocks.{block}.{part}");
                    if stage.expand_ratio == 1 {
                        layers.push(layer(graft("depthwise"), format!("{at}.0.0"), format!("{at}.0.1")));
                        layers.push(layer(graft("project"), format!("{at}.1"), format!("{at}.2")));
                    } else {
                        layers.push(layer(graft("expand"), format!("{at}.0.0"), format!("{at}.0.1")));
                        layers.push(layer(graft("depthwise"), format!("{at}.1.0"), format!("{at}.1.1")));
                        layers.push(layer(graft("project"), format!("{at}.2"), format!("{at}.3")));
                    }
                    block += 1;
                }
            }
            let head = format!("features.{}", block + 1);
            layers.push(layer("head_conv".into(), format!("{head}.0"), format!("{head}.1")));
            (layers, "classifier.1")
        }
        // timm: `conv_stem`/`bn1`, `blocks.{stage}.{index}` (the first stage's block is a
        // depthwise-separable one: `conv_dw`, `bn1`, `conv_pw`, `bn2`; the others inverted residuals:
        // `conv_pw`, `bn1`, `conv_dw`, `bn2`, `conv_pwl`, `bn3`), `conv_head`/`bn2`, `classifier`.
        ModelKind::EfficientNetLite0 => {
            layers.push(layer("stem".into(), "conv_stem".into(), "bn1".into()));
            let mut block = 0;
            for (s, stage) in architecture.stages.iter().enumerate() {
                for index in 0..stage.repeats {
                    let at = format!("blocks.{s}.{index}");
                    let graft = |part: &str| format!("blocks.{block}.{part}");
                    if stage.expand_ratio == 1 {
                        layers.push(layer(graft("depthwise"), format!("{at}.conv_dw"), format!("{at}.bn1")));
                        layers.push(layer(graft("project"), format!("{at}.conv_pw"), format!("{at}.bn2")));
                    } else {
                        layers.push(layer(graft("expand"), format!("{at}.conv_pw"), format!("{at}.bn1")));
                        layers.push(layer(graft("depthwise"), format!("{at}.conv_dw"), format!("{at}.bn2")));
                        layers.push(layer(graft("project"), format!("{at}.conv_pwl"), format!("{at}.bn3")));
                    }
                    block += 1;
                }
            }
            layers.push(layer("head_conv".into(), "conv_head".into(), "bn2".into()));
            (layers, "classifier")
        }
    }
}

/// One tensor of the state dict.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: StateData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StateData {
    F32(Vec<f32>),
    /// `num_batches_tracked` (int64 in PyTorch).
    I64(i64),
}

/// `model`'s state dict under the PyTorch names of `kind` (see [`layer_names`]), read back from any
/// device.
pub async fn state_dict(kind: ModelKind, model: &ImageClassifier) -> Result<Vec<StateTensor>, ExportError> {
    let (names, classifier) = layer_names(kind);
    let mut convs: Vec<&ConvBnAct> = vec![&model.stem];
    for block in &model.blocks {
        convs.extend(block.convs());
    }
    convs.push(&model.head_conv);
    if convs.len() != names.len() {
        return Err(ExportError::Unsupported(format!(
            "the model has {} conv layers where {} has {}",
            convs.len(),
            kind,
            names.len()
        )));
    }
    let mut tensors = Vec::new();
    let float = |name: String, shape: Vec<usize>, data: Vec<f32>| StateTensor {
        name,
        shape,
        data: StateData::F32(data),
    };
    for (layer, names) in convs.into_iter().zip(&names) {
        if layer.is_folded() {
            return Err(ExportError::Unsupported(format!(
                "{}: its BatchNorm is folded into the conv",
                names.graft
            )));
        }
        let weight = &layer.conv.weight;
        tensors.push(float(
            format!("{}.weight", names.conv),
            weight.dims().to_vec(),
            readback::to_f32_vec(weight.val()).await?,
        ));
        let norm = &layer.norm;
        let channels = norm.gamma.dims()[0];
        for (part, tensor) in [
            ("weight", norm.gamma.val()),
            ("bias", norm.beta.val()),
            ("running_mean", norm.running_mean.value()),
            ("running_var", norm.running_var.value()),
        ] {
            tensors.push(float(
                format!("{}.{part}", names.norm),
                vec![channels],
                readback::to_f32_vec(tensor).await?,
            ));
        }
        tensors.push(StateTensor {
            name: format!("{}.num_batches_tracked", names.norm),
            shape: Vec::new(),
            data: StateData::I64(0),
        });
    }
    // Burn's `[features, classes]` becomes PyTorch's `[classes, features]`.
    let linear = &model.classifier;
    let weight = linear.weight.val().transpose();
    let shape = weight.dims().to_vec();
    tensors.push(StateTensor {
        name: format!("{classifier}.weight"),
        shape,
        data: StateData::F32(readback::to_f32_vec(weight).await?),
    });
    if let Some(bias) = &linear.bias {
        tensors.push(StateTensor {
            name: format!("{classifier}.bias"),
            shape: bias.dims().to_vec(),
            data: StateData::F32(readback::to_f32_vec(bias.val()).await?),
        });
    }
    Ok(tensors)
}

/// The model as a safetensors file (labels and preprocessing also in its `__metadata__`).
pub async fn encode(header: &BundleHeader, model: &ImageClassifier) -> Result<Vec<u8>, ExportError> {
    let tensors = state_dict(header.model, model).await?;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| match &t.data {
            StateData::F32(values) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StateData::I64(value) => value.to_le_bytes().to_vec(),
        })
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for (tensor, data) in tensors.iter().zip(&bytes) {
        let dtype = match tensor.data {
            StateData::F32(_) => Dtype::F32,
            StateData::I64(_) => Dtype::I64,
        };
        let view = TensorView::new(dtype, tensor.shape.clone(), data)
            .map_err(|e| ExportError::Unsupported(format!("{}: {e}", tensor.name)))?;
        views.push((tensor.name.clone(), view));
    }
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("model".to_string(), header.model.card().name.to_string()),
        (
            "labels".to_string(),
            serde_json::to_string(&header.classes).expect("strings serialise"),
        ),
        (
            "preprocessing".to_string(),
            serde_json::to_string(&Preprocessing::of(header)).expect("serialises"),
        ),
    ]);
    safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| ExportError::Unsupported(e.to_string()))
}

/// `labels.json`: what a program loading the weights needs besides them.
pub fn labels_json(header: &BundleHeader) -> String {
    let (module, constructor) = match header.model {
        ModelKind::MobileNetV2 => ("torchvision.models", "mobilenet_v2"),
        ModelKind::EfficientNetLite0 => ("timm", "tf_efficientnet_lite0"),
    };
    let value = serde_json::json!({
        "labels": header.classes,
        "model": header.model.card().name,
        "pytorch": {
            "module": module,
            "constructor": constructor,
            "num_classes": header.classes.len(),
        },
        "preprocessing": Preprocessing::of(header),
    });
    serde_json::to_string_pretty(&value).expect("serialises")
}
