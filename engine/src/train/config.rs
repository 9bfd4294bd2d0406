//! What shapes a run: [`TrainConfig`] and each strategy's defaults, and what trainable BatchNorms
//! normalise with.

use serde::{Deserialize, Serialize};

use crate::data::Augmentation;
use crate::optim::OptimizerKind;
use crate::strategy::Strategy;

/// Everything that shapes a training run. [`TrainConfig::new`] gives each strategy's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub strategy: Strategy,
    /// Epochs over all phases.
    pub epochs: usize,
    /// The head's learning rate (the top of the discriminative range); `None`: the strategy's default.
    pub lr: Option<f64>,
    /// Images per batch when images go through trainable blocks.
    pub batch_size: usize,
    /// Embeddings per batch when only the head trains on cached embeddings; `None`: a tenth of the
    /// training images, between 32 and 256. A linear layer on 1280 numbers is launch-bound, not
    /// compute-bound, so large datasets get large batches (10k embeddings x 50 epochs in well under a
    /// second), while small ones still get several steps per epoch.
    pub head_batch_size: Option<usize>,
    /// Input side in pixels; `None`: the model's (224).
    pub image_size: Option<usize>,
    pub optimizer: OptimizerKind,
    /// Label smoothing of the cross-entropy (0 = off).
    pub label_smoothing: f32,
    /// Random resized crops, flips and colour jitter for training images (turns caching off).
    pub augment: bool,
    pub augmentation: Augmentation,
    pub seed: u64,
    /// Fraction of each class held out for validation (0 = no validation, no early stopping).
    pub val_fraction: f64,
    /// Stop a phase after this many epochs without a better validation result; `None`: never.
    pub patience: Option<usize>,
    /// Most memory the boundary-activation cache may take.
    pub cache_budget_bytes: u64,
    /// The largest buffer the device can allocate (a WebGPU device's `maxStorageBufferBindingSize`),
    /// if it has such a limit: batches whose activations would not fit are made smaller, and the run
    /// says so. `None`: no limit (the CPU).
    #[serde(default)]
    pub max_buffer_bytes: Option<u64>,
    /// What the BatchNorms of trainable blocks normalise with; `None`: the strategy's default (see
    /// [`BatchNormStatistics`]).
    #[serde(default)]
    pub batch_norm: Option<BatchNormStatistics>,
    /// Report what the optimizer holds at the end of each phase (`PhaseEnd`), as Burn records it. Reads
    /// every moment back synchronously: for tests on the CPU backend, never on a GPU in a browser.
    #[serde(default)]
    pub record_optimizer_state: bool,
}

/// BatchNorm momentum for `steps` batches per epoch: at least the usual 0.1, and enough that the
/// running statistics forget all but 1% of what they held at the start of an epoch by its end — so
/// that a small dataset's validation (which uses them) sees statistics of the weights as they are,
/// not of ImageNet or of epochs ago.
pub fn tracking_momentum(steps: usize) -> f64 {
    (1.0 - 0.01f64.powf(1.0 / steps.max(1) as f64)).max(0.1)
}

/// What the BatchNorm of a *trainable* block normalises with while it trains (a frozen block's
/// always uses its running statistics and never updates them).
///
/// The problem both answer: validation and inference normalise with the running statistics, which
/// with BatchNorm's usual momentum (0.1) lag many steps behind the batches' — on a small dataset,
/// behind by more than the run is long. The staged strategy trained on 200 silhouettes for 2 epochs
/// fitted its batches (train accuracy 81.9%) and validated at chance (55.0%).
///
/// Defaults, by strategy (measured with `graft train`, MobileNetV2, 224 px; validation accuracy for
/// running / batch with momentum 0.1 / batch with the tracking momentum): staged unfreezing gets
/// [`Running`](Self::Running), Keras's transfer-learning recipe for unfreezing a base after its head
/// has trained — 200 silhouettes, 2 epochs: 90.0 / 55.0 / 90.0%; 300 silhouettes (10 classes),
/// 10 epochs: 95.0 / 90.0 / 88.3%; Tux Paint photos 83.9% for all three. Partial freezing, full
/// fine-tuning and training from scratch get [`Batch`](Self::Batch) with [`tracking_momentum`]: a
/// dataset unlike ImageNet moves its activations' statistics, and normalising with the new ones
/// helps — partial freeze on 200 silhouettes, 2 epochs: 87.5 / 97.5 / 97.5%; full fine-tune 85.0 /
/// 92.5 / 85.0%; at 10 epochs on 300 silhouettes partial 93.3% for all three, full 91.7 / 93.3 /
/// 93.3%; Tux Paint equal. (Validation sets of 31-60 pictures: 1.7-3.2 points a picture.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchNormStatistics {
    /// The pretrained running statistics, left unchanged; the BatchNorm's scale and shift still learn.
    Running,
    /// Each batch's statistics, updating the running ones (BatchNorm's training mode) with a
    /// momentum that lets them catch up within an epoch ([`tracking_momentum`]).
    Batch,
}

impl TrainConfig {
    /// Defaults for `strategy`, and why:
    /// - epochs: a head on cached embeddings costs next to nothing per epoch, so head-only gets 30
    ///   (early stopping ends it sooner); fine-tuning pretrained layers converges in a few epochs (10);
    ///   random weights need many more (30).
    /// - batch 16: fits a 224 px MobileNetV2 / EfficientNet-Lite0 training step in a browser's GPU
    ///   memory budget; BatchNorm still sees enough samples.
    /// - label smoothing 0.1: keeps a small dataset from driving the head to over-confident logits.
    /// - patience 5 epochs, 20% validation, seed 0.
    pub fn new(strategy: Strategy) -> Self {
        let epochs = match strategy {
            Strategy::HeadOnly | Strategy::FromScratch => 30,
            _ => 10,
        };
        Self {
            strategy,
            epochs,
            lr: None,
            batch_size: 16,
            head_batch_size: None,
            image_size: None,
            optimizer: OptimizerKind::default(),
            label_smoothing: 0.1,
            augment: false,
            augmentation: Augmentation::default(),
            seed: 0,
            val_fraction: 0.2,
            patience: Some(5),
            cache_budget_bytes: 1 << 30,
            max_buffer_bytes: None,
            batch_norm: None,
            record_optimizer_state: false,
        }
    }

    /// The head's learning rate this run uses.
    pub fn base_lr(&self) -> f64 {
        self.lr.unwrap_or_else(|| self.strategy.default_base_lr())
    }

    /// What trainable BatchNorms normalise with in this run.
    pub fn batch_norm_statistics(&self) -> BatchNormStatistics {
        self.batch_norm.unwrap_or(match self.strategy {
            Strategy::Staged { .. } => BatchNormStatistics::Running,
            _ => BatchNormStatistics::Batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_statistics_catch_up_within_an_epoch() {
        for steps in [1, 2, 10, 44, 100, 1000] {
            let momentum = tracking_momentum(steps);
            let left = (1.0 - momentum).powi(steps as i32);
            assert!(momentum >= 0.1, "{steps}: {momentum}");
            assert!(left <= 0.01 + 1e-12, "{steps} steps leave {left} of the epoch's start");
        }
        // 160 training images in batches of 16.
        assert!(
            (tracking_momentum(10) - 0.369).abs() < 1e-3,
            "{}",
            tracking_momentum(10)
        );
        // Large epochs keep the usual momentum.
        assert_eq!(tracking_momentum(1000), 0.1);
    }
}
