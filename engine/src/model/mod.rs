//! The model zoo: small ImageNet-pretrained CNNs, each described by a card and built from its table.

mod blocks;
mod classifier;
pub mod compiled;
pub mod cpu_train;
pub mod efficientnet_lite;
pub mod mobilenet_v2;

pub use blocks::{ConvBnAct, InvertedResidual, Padding, tf_same_padding};
pub(crate) use classifier::step_module;
pub use classifier::{Architecture, ImageClassifier, Stage};
pub use compiled::{BodyOutput, CompiledClassifier, Probes, network_spec};

use serde::{Deserialize, Serialize};

/// How pixels (0..=255) become model inputs: `(pixel / 255 - mean) / std` per RGB channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalisation {
    /// torchvision's ImageNet statistics.
    pub const IMAGENET: Self = Self {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// TensorFlow EfficientNet-Lite: `(pixel - 127) / 128`.
    pub const TF_LITE: Self = Self {
        mean: [127.0 / 255.0; 3],
        std: [128.0 / 255.0; 3],
    };
}

/// A pretrained model Graft offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// EfficientNet-Lite0, ImageNet top-1 75.1% (TensorFlow's published figure).
    EfficientNetLite0,
    /// MobileNetV2 1.0, torchvision `IMAGENET1K_V1`, ImageNet top-1 71.878%.
    MobileNetV2,
}

/// What a person (and the app) needs to know about a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelCard {
    /// Stable identifier, used on the command line and in file names.
    pub name: &'static str,
    /// Name for people.
    pub display_name: &'static str,
    /// Square input size in pixels.
    pub input_size: usize,
    pub normalisation: Normalisation,
    /// Top-1 accuracy on ImageNet as published for these weights, in percent.
    pub imagenet_top1_percent: f32,
    /// Licence of the weights.
    pub licence: &'static str,
    /// The converted weights' file name in `public/models/`.
    pub weights_file: &'static str,
}

impl ModelKind {
    pub const ALL: [ModelKind; 2] = [ModelKind::EfficientNetLite0, ModelKind::MobileNetV2];

    pub fn card(self) -> ModelCard {
        match self {
            Self::EfficientNetLite0 => ModelCard {
                name: "efficientnet-lite0",
                display_name: "EfficientNet-Lite0",
                input_size: 224,
                normalisation: Normalisation::TF_LITE,
                imagenet_top1_percent: 75.1,
                licence: "Apache-2.0",
                weights_file: "efficientnet-lite0.bpk",
            },
            Self::MobileNetV2 => ModelCard {
                name: "mobilenet-v2",
                display_name: "MobileNetV2",
                input_size: 224,
                normalisation: Normalisation::IMAGENET,
                imagenet_top1_percent: 71.878,
                licence: "BSD-3-Clause",
                weights_file: "mobilenet-v2.bpk",
            },
        }
    }

    pub fn architecture(self) -> Architecture {
        match self {
            Self::EfficientNetLite0 => efficientnet_lite::EFFICIENTNET_LITE0,
            Self::MobileNetV2 => mobilenet_v2::MOBILENET_V2,
        }
    }

    /// Checkpoint key -> module path remaps for the PyTorch checkpoint.
    pub fn key_remaps(self) -> Vec<(String, String)> {
        match self {
            Self::EfficientNetLite0 => efficientnet_lite::KEY_REMAPS
                .iter()
                .map(|(from, to)| (from.to_string(), to.to_string()))
                .collect(),
            Self::MobileNetV2 => mobilenet_v2::key_remaps(),
        }
    }

    /// Looks a model up by its card name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.card().name == name)
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.card().name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;

    #[test]
    fn architectures_have_the_published_sizes() {
        let device = Device::flex();
        // Parameters as PyTorch counts them, plus BatchNorm running means and variances (which Burn's
        // `num_params` includes): 4,652,008 + 42,016 and 3,504,872 + 34,112.
        for (kind, blocks, params, running_stats) in [
            (ModelKind::EfficientNetLite0, 16, 4_652_008, 42_016),
            (ModelKind::MobileNetV2, 17, 3_504_872, 34_112),
        ] {
            let model = kind.architecture().init(1000, &device);
            assert_eq!(model.blocks.len(), blocks, "{kind}");
            assert_eq!(model.block_names().len(), blocks + 2, "{kind}");
            assert_eq!(model.num_params(), params + running_stats, "{kind}");
            let logits = model.forward(Tensor::zeros([1, 3, 224, 224], &device));
            assert_eq!(logits.dims(), [1, 1000], "{kind}");
        }
    }

    #[test]
    fn with_classes_replaces_only_the_head() {
        let device = Device::flex();
        let model = ModelKind::MobileNetV2
            .architecture()
            .init(1000, &device)
            .with_classes(3);
        assert_eq!(model.num_classes(), 3);
        assert_eq!(model.embedding_width(), 1280);
        assert_eq!(model.block_names().first().map(String::as_str), Some("stem"));
        assert_eq!(model.block_names().last().map(String::as_str), Some("head_conv"));
    }

    #[test]
    fn the_models_a_file_may_name_are_these() {
        // What `graft_ingest::model_file` checks a model file's header against.
        let known = graft_ingest::model_file::KNOWN_MODELS;
        assert_eq!(known.len(), ModelKind::ALL.len());
        for kind in ModelKind::ALL {
            let card = kind.card();
            let model = graft_ingest::model_file::known_model(card.name).expect("known by name");
            assert_eq!(model.display_name, card.display_name);
            // The name a `.graft` header gives it is serde's.
            assert_eq!(serde_json::to_value(kind).unwrap(), model.header_name, "{kind}");
            assert_eq!(graft_ingest::model_file::known_model(model.header_name), Some(model));
            assert_eq!(model.pretrained_input_size as usize, card.input_size);
            let head = kind.architecture().init(2, &Device::flex());
            assert_eq!(model.embedding_width, head.embedding_width(), "{kind}");
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in ModelKind::ALL {
            assert_eq!(ModelKind::from_name(kind.card().name), Some(kind));
        }
        assert_eq!(ModelKind::from_name("resnet50"), None);
    }
}
