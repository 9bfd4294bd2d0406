//! EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile accelerators): EfficientNet-B0's
//! blocks without squeeze-excitation, ReLU6 instead of swish, fixed stem and head, TensorFlow "SAME"
//! padding and BatchNorm eps 1e-3, exactly as the TensorFlow checkpoint was trained.

use super::blocks::Padding;
use super::classifier::{Architecture, Stage};

/// The seven stages of EfficientNet-B0/Lite0: expand ratio t, kernel k, channels c, repeats n, stride s.
const STAGES: [Stage; 7] = [
    //      t  k    c  n  s
    stage(1, 3, 16, 1, 1),
    stage(6, 3, 24, 2, 2),
    stage(6, 5, 40, 2, 2),
    stage(6, 3, 80, 3, 2),
    stage(6, 5, 112, 3, 1),
    stage(6, 5, 192, 4, 2),
    stage(6, 3, 320, 1, 1),
];

const fn stage(expand_ratio: usize, kernel: usize, channels: usize, repeats: usize, stride: usize) -> Stage {
    Stage {
        expand_ratio,
        kernel,
        channels,
        repeats,
        stride,
    }
}

/// EfficientNet-Lite0 at 224 px: 16 blocks, 1280-wide embedding.
pub const EFFICIENTNET_LITE0: Architecture = Architecture {
    stem_channels: 32,
    stages: &STAGES,
    head_channels: 1280,
    padding: Padding::TfSame,
    bn_eps: 1e-3,
    dropout: 0.2,
};

/// Checkpoint names (the `efficientnet_pytorch` layout) -> Graft's module paths, one remap a line.
/// BatchNorm `weight`/`bias` become `gamma`/`beta` and linear weights are transposed by the
/// PyTorch adapter; `num_batches_tracked` has no counterpart and is ignored.
pub const KEY_REMAPS: &[(&str, &str)] = &[
    (r"^_conv_stem\.(.+)$", "stem.conv.$1"),
    (r"^_bn0\.(.+)$", "stem.norm.$1"),
    (r"^_blocks\.(\d+)\._expand_conv\.(.+)$", "blocks.$1.expand.conv.$2"),
    (r"^_blocks\.(\d+)\._bn0\.(.+)$", "blocks.$1.expand.norm.$2"),
    (
        r"^_blocks\.(\d+)\._depthwise_conv\.(.+)$",
        "blocks.$1.depthwise.conv.$2",
    ),
    (r"^_blocks\.(\d+)\._bn1\.(.+)$", "blocks.$1.depthwise.norm.$2"),
    (r"^_blocks\.(\d+)\._project_conv\.(.+)$", "blocks.$1.project.conv.$2"),
    (r"^_blocks\.(\d+)\._bn2\.(.+)$", "blocks.$1.project.norm.$2"),
    (r"^_conv_head\.(.+)$", "head_conv.conv.$1"),
    (r"^_bn1\.(.+)$", "head_conv.norm.$1"),
    (r"^_fc\.(.+)$", "classifier.$1"),
];
