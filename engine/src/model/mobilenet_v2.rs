//! MobileNetV2 1.0 (Sandler et al. 2018) in torchvision's layout: symmetric padding, BatchNorm eps 1e-5,
//! ReLU6, 17 inverted residual blocks and a 1280-wide embedding.

use super::blocks::Padding;
use super::classifier::{Architecture, Stage};

/// torchvision's `inverted_residual_setting`: expand ratio t, channels c, repeats n, stride s (k = 3).
const STAGES: [Stage; 7] = [
    //      t    c  n  s
    stage(1, 16, 1, 1),
    stage(6, 24, 2, 2),
    stage(6, 32, 3, 2),
    stage(6, 64, 4, 2),
    stage(6, 96, 3, 1),
    stage(6, 160, 3, 2),
    stage(6, 320, 1, 1),
];

const fn stage(expand_ratio: usize, channels: usize, repeats: usize, stride: usize) -> Stage {
    Stage {
        expand_ratio,
        kernel: 3,
        channels,
        repeats,
        stride,
    }
}

/// MobileNetV2 1.0 at 224 px.
pub const MOBILENET_V2: Architecture = Architecture {
    stem_channels: 32,
    stages: &STAGES,
    head_channels: 1280,
    padding: Padding::Symmetric,
    bn_eps: 1e-5,
    dropout: 0.2,
};

/// Checkpoint names (torchvision) -> Graft's module paths. torchvision counts the stem as `features.0`
/// and the head conv as `features.18`, so block `i` is `features.{i+1}`; inside a block the layers are
/// numbered in order, which differs for the first block (no expansion).
pub fn key_remaps() -> Vec<(String, String)> {
    let mut remaps = vec![
        (r"^features\.0\.0\.(.+)$".to_string(), "stem.conv.$1".to_string()),
        (r"^features\.0\.1\.(.+)$".to_string(), "stem.norm.$1".to_string()),
        // Block 0 (t = 1): depthwise conv-bn-relu, then the projection conv and its BatchNorm.
        (
            r"^features\.1\.conv\.0\.0\.(.+)$".to_string(),
            "blocks.0.depthwise.conv.$1".to_string(),
        ),
        (
            r"^features\.1\.conv\.0\.1\.(.+)$".to_string(),
            "blocks.0.depthwise.norm.$1".to_string(),
        ),
        (
            r"^features\.1\.conv\.1\.(.+)$".to_string(),
            "blocks.0.project.conv.$1".to_string(),
        ),
        (
            r"^features\.1\.conv\.2\.(.+)$".to_string(),
            "blocks.0.project.norm.$1".to_string(),
        ),
        (r"^features\.18\.0\.(.+)$".to_string(), "head_conv.conv.$1".to_string()),
        (r"^features\.18\.1\.(.+)$".to_string(), "head_conv.norm.$1".to_string()),
        (r"^classifier\.1\.(.+)$".to_string(), "classifier.$1".to_string()),
    ];
    // Blocks 1..=16: expand conv-bn-relu, depthwise conv-bn-relu, projection conv, its BatchNorm.
    for block in 1..=16 {
        let feature = block + 1;
        for (layer, target) in [
            ("0.0", "expand.conv"),
            ("0.1", "expand.norm"),
            ("1.0", "depthwise.conv"),
            ("1.1", "depthwise.norm"),
            ("2", "project.conv"),
            ("3", "project.norm"),
        ] {
            let layer = layer.replace('.', r"\.");
            remaps.push((
                format!(r"^features\.{feature}\.conv\.{layer}\.(.+)$"),
                format!("blocks.{block}.{target}.$1"),
            ));
        }
    }
    remaps
}
