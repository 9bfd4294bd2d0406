//! ONNX: the whole fine-tuned classifier as one graph that ONNX Runtime, OpenVINO, TensorRT, tract and
//! the converters to Core ML or TFLite read.
//!
//! Opset 13. Input `input`: float32 `[N, 3, S, S]` (S the model's input size, N dynamic), already
//! preprocessed; outputs `logits` `[N, classes]` and `probabilities` (their softmax). Every BatchNorm
//! is folded into its convolution, ReLU6 is `Clip(0, 6)`, and a strided convolution of EfficientNet-Lite0
//! pads by TensorFlow's "SAME" rule exactly (asymmetric `pads`, from the fixed input size). The class
//! labels and the preprocessing are in `metadata_props` (`labels`, `preprocessing`, both JSON), so a
//! reader needs nothing else.

use prost::Message;

use crate::bundle::BundleHeader;
use crate::model::{ConvBnAct, ImageClassifier, tf_same_padding};
use crate::readback;

use super::proto::{Attribute, Graph, Model, Node, OperatorSetId, StringStringEntry, Tensor, ValueInfo};
use super::{ExportError, Preprocessing};

/// The operator set the graph is written for.
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13.
const IR_VERSION: i64 = 7;

/// The model as an ONNX file.
pub async fn encode(header: &BundleHeader, model: &ImageClassifier) -> Result<Vec<u8>, ExportError> {
    let folded = model.folded_for_inference();
    let mut graph = Builder::new(header.input_size);
    let mut x = graph.conv(&folded.stem, "input".into(), "stem").await?;
    for (i, block) in folded.blocks.iter().enumerate() {
        let input = x.clone();
        if let Some(expand) = &block.expand {
            x = graph.conv(expand, x, &format!("blocks.{i}.expand")).await?;
        }
        x = graph
            .conv(&block.depthwise, x, &format!("blocks.{i}.depthwise"))
            .await?;
        x = graph.conv(&block.project, x, &format!("blocks.{i}.project")).await?;
        if block.has_residual() {
            x = graph.node("Add", &[&input, &x], &format!("blocks.{i}.residual"), Vec::new());
        }
    }
    x = graph.conv(&folded.head_conv, x, "head_conv").await?;
    let pooled = graph.node("GlobalAveragePool", &[&x], "pool", Vec::new());
    let embedding = graph.node("Flatten", &[&pooled], "embedding", vec![Attribute::int("axis", 1)]);
    // Burn's linear weight is `[features, classes]`: `logits = embedding x W + b` as Gemm has it.
    let weight = readback::to_f32_vec(folded.classifier.weight.val()).await?;
    let [features, classes] = folded.classifier.weight.dims();
    graph.initializer(Tensor::float("classifier.weight", &[features, classes], &weight));
    let mut inputs = vec![embedding, "classifier.weight".to_string()];
    if let Some(bias) = &folded.classifier.bias {
        graph.initializer(Tensor::float(
            "classifier.bias",
            &[classes],
            &readback::to_f32_vec(bias.val()).await?,
        ));
        inputs.push("classifier.bias".into());
    }
    let refs: Vec<&String> = inputs.iter().collect();
    graph.named_node("Gemm", &refs, "logits", "classifier", Vec::new());
    graph.named_node(
        "Softmax",
        &[&"logits".to_string()],
        "probabilities",
        "softmax",
        vec![Attribute::int("axis", 1)],
    );

    let size = header.input_size;
    let batch = Err("batch");
    let graph = Graph {
        node: graph.nodes,
        name: format!("graft-{}", header.model),
        initializer: graph.initializers,
        doc_string: format!(
            "{} fine-tuned in Graft on {} classes",
            header.model.card().display_name,
            header.classes.len()
        ),
        input: vec![ValueInfo::float("input", &[batch, Ok(3), Ok(size), Ok(size)])],
        output: vec![
            ValueInfo::float("logits", &[batch, Ok(classes)]),
            ValueInfo::float("probabilities", &[batch, Ok(classes)]),
        ],
    };
    let model = Model {
        ir_version: IR_VERSION,
        producer_name: "graft".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: String::new(),
        graph: Some(graph),
        opset_import: vec![OperatorSetId {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: vec![
            StringStringEntry {
                key: "labels".into(),
                value: serde_json::to_string(&header.classes).expect("strings serialise"),
            },
            StringStringEntry {
                key: "preprocessing".into(),
                value: serde_json::to_string(&Preprocessing::of(header)).expect("serialises"),
            },
            StringStringEntry {
                key: "model".into(),
                value: header.model.card().name.into(),
            },
        ],
    };
    Ok(model.encode_to_vec())
}

/// The graph as it is written: nodes in order, their weights, and the feature map's side (for
/// "SAME" padding, which depends on it).
struct Builder {
    nodes: Vec<Node>,
    initializers: Vec<Tensor>,
    side: usize,
    /// The feature map's channels.
    channels: usize,
}

impl Builder {
    fn new(input_size: usize) -> Self {
        let mut builder = Self {
            nodes: Vec::new(),
            initializers: Vec::new(),
            side: input_size,
            channels: 3,
        };
        builder.initializer(Tensor::float("relu6.min", &[], &[0.0]));
        builder.initializer(Tensor::float("relu6.max", &[], &[6.0]));
        builder
    }

    fn initializer(&mut self, tensor: Tensor) {
        self.initializers.push(tensor);
    }

    /// Adds `op` on `inputs`; its output is named after the node.
    fn node(&mut self, op: &str, inputs: &[&String], name: &str, attributes: Vec<Attribute>) -> String {
        self.named_node(op, inputs, name, name, attributes)
    }

    fn named_node(
        &mut self,
        op: &str,
        inputs: &[&String],
        output: &str,
        name: &str,
        attribute: Vec<Attribute>,
    ) -> String {
        self.nodes.push(Node {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: name.to_string(),
            op_type: op.to_string(),
            attribute,
        });
        output.to_string()
    }

    /// A folded conv (bias = the BatchNorm's shift) and its ReLU6.
    async fn conv(&mut self, layer: &ConvBnAct, input: String, name: &str) -> Result<String, ExportError> {
        debug_assert!(layer.is_folded(), "{name}: BatchNorm not folded");
        let conv = &layer.conv;
        let [out, per_group, kernel, _] = conv.weight.dims();
        let groups = self.channels / per_group;
        let stride = conv.stride[0];
        let (before, after) = if layer.uses_tf_same() {
            tf_same_padding(self.side, kernel, stride)
        } else {
            ((kernel - 1) / 2, (kernel - 1) / 2)
        };
        let weight_name = format!("{name}.weight");
        self.initializer(Tensor::float(
            &weight_name,
            &[out, per_group, kernel, kernel],
            &readback::to_f32_vec(conv.weight.val()).await?,
        ));
        let mut inputs = vec![input, weight_name];
        if let Some(bias) = &conv.bias {
            let bias_name = format!("{name}.bias");
            self.initializer(Tensor::float(
                &bias_name,
                &[out],
                &readback::to_f32_vec(bias.val()).await?,
            ));
            inputs.push(bias_name);
        }
        let refs: Vec<&String> = inputs.iter().collect();
        let pads = [before, before, after, after].map(|p| p as i64);
        let output = self.node(
            "Conv",
            &refs,
            &format!("{name}.conv"),
            vec![
                Attribute::ints("kernel_shape", &[kernel as i64, kernel as i64]),
                Attribute::ints("strides", &[stride as i64, stride as i64]),
                Attribute::ints("pads", &pads),
                Attribute::ints("dilations", &[1, 1]),
                Attribute::int("group", groups as i64),
            ],
        );
        self.side = (self.side + before + after - kernel) / stride + 1;
        self.channels = out;
        if !layer.has_activation() {
            return Ok(output);
        }
        let (min, max) = ("relu6.min".to_string(), "relu6.max".to_string());
        Ok(self.node("Clip", &[&output, &min, &max], &format!("{name}.relu6"), Vec::new()))
    }
}
