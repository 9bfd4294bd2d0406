//! Fine-tuning strategies as data, each expanded into training phases: which blocks train, at what
//! learning rate, for how many epochs.
//!
//! Defaults and why:
//! - From scratch, AdamW at 1e-3 is the usual starting point for these small CNNs.
//! - Fine-tuning pretrained layers uses a rate ~10x smaller (1e-4): large steps would wreck features
//!   learned on 1.2 M images.
//! - A new head starts random; it gets the full 1e-3 so that it catches up quickly.
//! - Staged (fastai's `fine_tune`): head alone first (1 epoch), then everything jointly with
//!   discriminative rates from `base_lr / lr_mult` on the earliest trainable block up to `base_lr` on the
//!   head, `lr_mult = 100`, and the joint phase at half the head phase's rate.

use serde::{Deserialize, Serialize};

/// Learning rate for training from random initialisation, and for a new head.
pub const SCRATCH_LR: f64 = 1e-3;
/// Learning rate for pretrained layers: ~10x below from-scratch.
pub const FINE_TUNE_LR: f64 = 1e-4;

/// How to fine-tune.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Strategy {
    /// Freeze the whole body; train a new head on its embeddings (computed once per image and cached).
    HeadOnly,
    /// Freeze the first blocks; train the last `trainable_blocks` body blocks and the head.
    #[serde(rename_all = "snake_case")]
    PartialFreeze { trainable_blocks: usize },
    /// Head on the frozen body for `head_epochs`, then unfreeze the top `unfreeze_blocks` (all when
    /// `None`) and train them with the head at discriminative rates (`base_lr / lr_mult` ... `base_lr`).
    #[serde(rename_all = "snake_case")]
    Staged {
        head_epochs: usize,
        unfreeze_blocks: Option<usize>,
        lr_mult: f64,
    },
    /// Everything trains from the pretrained weights at the fine-tuning rate.
    FullFineTune,
    /// The same architecture from random initialisation; everything trains.
    FromScratch,
}

/// The five kinds of strategy, without their parameters: what the command line's `--strategy`, the
/// page's `strategy-<name>` choices and a stored project name. The one list of them
/// ([`StrategyKind::ALL`]); a sixth strategy starts here and the compiler finds the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum StrategyKind {
    #[serde(rename = "head-only")]
    #[cfg_attr(feature = "cli", value(name = "head-only"))]
    HeadOnly,
    #[serde(rename = "partial-freeze")]
    #[cfg_attr(feature = "cli", value(name = "partial-freeze"))]
    PartialFreeze,
    #[serde(rename = "staged")]
    #[cfg_attr(feature = "cli", value(name = "staged"))]
    Staged,
    #[serde(rename = "full")]
    #[cfg_attr(feature = "cli", value(name = "full"))]
    Full,
    #[serde(rename = "scratch")]
    #[cfg_attr(feature = "cli", value(name = "scratch"))]
    Scratch,
}

impl StrategyKind {
    /// Every kind, in the order the page offers them.
    pub const ALL: [StrategyKind; 5] = [
        StrategyKind::HeadOnly,
        StrategyKind::PartialFreeze,
        StrategyKind::Staged,
        StrategyKind::Full,
        StrategyKind::Scratch,
    ];

    /// The identifier on the command line, in the page's hooks and in stored projects.
    pub fn name(self) -> &'static str {
        match self {
            Self::HeadOnly => "head-only",
            Self::PartialFreeze => "partial-freeze",
            Self::Staged => "staged",
            Self::Full => "full",
            Self::Scratch => "scratch",
        }
    }

    /// What people read.
    pub fn label(self) -> &'static str {
        match self {
            Self::HeadOnly => "Head only",
            Self::PartialFreeze => "Partial freeze",
            Self::Staged => "Staged unfreezing",
            Self::Full => "Full fine-tune",
            Self::Scratch => "From scratch",
        }
    }

    /// The kind named `name` ([`StrategyKind::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The strategy of this kind with its default parameters (`trainable_blocks` for partial
    /// freezing).
    pub fn with_defaults(self, trainable_blocks: usize) -> Strategy {
        match self {
            Self::HeadOnly => Strategy::HeadOnly,
            Self::PartialFreeze => Strategy::PartialFreeze { trainable_blocks },
            Self::Staged => Strategy::STAGED_DEFAULT,
            Self::Full => Strategy::FullFineTune,
            Self::Scratch => Strategy::FromScratch,
        }
    }
}

/// One stretch of training with fixed trainable blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// `head`, `joint` or `train`.
    pub name: &'static str,
    pub epochs: usize,
    /// The first `frozen_blocks` body blocks are frozen; the rest train.
    pub frozen_blocks: usize,
    /// Learning rate of the new head.
    pub head_lr: f64,
    /// Learning rate of each trainable body block, in order (`block_lrs[i]` is block `frozen_blocks + i`).
    pub block_lrs: Vec<f64>,
    /// The frozen body's embeddings can be computed once per image (the whole body is frozen).
    pub cache_embeddings: bool,
}

/// A strategy that cannot be expanded for this model or budget.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StrategyError {
    #[error("{requested} trainable blocks requested, but the model has {available}")]
    TooManyBlocks { requested: usize, available: usize },
    #[error("partial freezing needs at least one trainable block")]
    NoTrainableBlocks,
    #[error("{epochs} epochs leave none for the joint phase after {head_epochs} head epochs")]
    NoJointEpochs { epochs: usize, head_epochs: usize },
    #[error("training needs at least one epoch")]
    NoEpochs,
    #[error("lr_mult must be >= 1, got {0}")]
    BadLrMult(f64),
}

impl Strategy {
    /// The staged recipe with fastai's defaults.
    pub const STAGED_DEFAULT: Strategy = Strategy::Staged {
        head_epochs: 1,
        unfreeze_blocks: None,
        lr_mult: 100.0,
    };

    /// Its kind, without the parameters.
    pub fn kind(&self) -> StrategyKind {
        match self {
            Self::HeadOnly => StrategyKind::HeadOnly,
            Self::PartialFreeze { .. } => StrategyKind::PartialFreeze,
            Self::Staged { .. } => StrategyKind::Staged,
            Self::FullFineTune => StrategyKind::Full,
            Self::FromScratch => StrategyKind::Scratch,
        }
    }

    /// The identifier used on the command line and in the app (`strategy-<name>`).
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Whether training starts from the pretrained weights.
    pub fn uses_pretrained_weights(&self) -> bool {
        !matches!(self, Self::FromScratch)
    }

    /// The default base learning rate: the head's rate, and the top of the discriminative range.
    pub fn default_base_lr(&self) -> f64 {
        match self {
            Self::FullFineTune => FINE_TUNE_LR,
            _ => SCRATCH_LR,
        }
    }

    /// Expands the strategy for a body of `num_blocks` blocks and an `epochs` budget.
    pub fn phases(&self, num_blocks: usize, epochs: usize, base_lr: f64) -> Result<Vec<Phase>, StrategyError> {
        if epochs == 0 {
            return Err(StrategyError::NoEpochs);
        }
        let fine_tune_lr = base_lr * FINE_TUNE_LR / SCRATCH_LR;
        Ok(match *self {
            Self::HeadOnly => vec![head_phase(epochs, num_blocks, base_lr)],
            Self::PartialFreeze { trainable_blocks } => {
                if trainable_blocks == 0 {
                    return Err(StrategyError::NoTrainableBlocks);
                }
                if trainable_blocks > num_blocks {
                    return Err(StrategyError::TooManyBlocks {
                        requested: trainable_blocks,
                        available: num_blocks,
                    });
                }
                vec![Phase {
                    name: "train",
                    epochs,
                    frozen_blocks: num_blocks - trainable_blocks,
                    head_lr: base_lr,
                    block_lrs: vec![fine_tune_lr; trainable_blocks],
                    cache_embeddings: false,
                }]
            }
            Self::Staged {
                head_epochs,
                unfreeze_blocks,
                lr_mult,
            } => {
                if lr_mult < 1.0 || lr_mult.is_nan() {
                    return Err(StrategyError::BadLrMult(lr_mult));
                }
                if head_epochs >= epochs {
                    return Err(StrategyError::NoJointEpochs { epochs, head_epochs });
                }
                let trainable = unfreeze_blocks.unwrap_or(num_blocks);
                if trainable > num_blocks {
                    return Err(StrategyError::TooManyBlocks {
                        requested: trainable,
                        available: num_blocks,
                    });
                }
                let joint_lr = base_lr / 2.0;
                let mut phases = Vec::new();
                if head_epochs > 0 {
                    phases.push(head_phase(head_epochs, num_blocks, base_lr));
                }
                phases.push(Phase {
                    name: "joint",
                    epochs: epochs - head_epochs,
                    frozen_blocks: num_blocks - trainable,
                    head_lr: joint_lr,
                    block_lrs: discriminative_lrs(trainable, joint_lr / lr_mult, joint_lr),
                    cache_embeddings: false,
                });
                phases
            }
            // The two differ in the starting weights, not in what trains.
            Self::FullFineTune | Self::FromScratch => vec![Phase {
                name: "train",
                epochs,
                frozen_blocks: 0,
                head_lr: base_lr,
                block_lrs: vec![base_lr; num_blocks],
                cache_embeddings: false,
            }],
        })
    }
}

fn head_phase(epochs: usize, num_blocks: usize, head_lr: f64) -> Phase {
    Phase {
        name: "head",
        epochs,
        frozen_blocks: num_blocks,
        head_lr,
        block_lrs: Vec::new(),
        cache_embeddings: true,
    }
}

/// `count` rates growing geometrically from `low` (earliest block) towards `high`; the head, after the
/// last block, gets `high` itself.
pub fn discriminative_lrs(count: usize, low: f64, high: f64) -> Vec<f64> {
    (0..count)
        .map(|i| low * (high / low).powf(i as f64 / count as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCKS: usize = 19; // MobileNetV2: stem, 17 blocks, head_conv

    #[test]
    fn every_kind_has_one_name_kept_by_serde_and_its_strategies() {
        for kind in StrategyKind::ALL {
            assert_eq!(StrategyKind::from_name(kind.name()), Some(kind));
            // Stored projects name the kind as the command line does.
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.name()));
            let strategy = kind.with_defaults(3);
            assert_eq!(strategy.kind(), kind);
            assert_eq!(strategy.name(), kind.name());
        }
        let names: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["head-only", "partial-freeze", "staged", "full", "scratch"]);
        assert_eq!(StrategyKind::from_name("resnet"), None);
        assert_eq!(
            StrategyKind::PartialFreeze.with_defaults(3),
            Strategy::PartialFreeze { trainable_blocks: 3 }
        );
    }

    #[test]
    fn head_only_freezes_everything_and_caches() {
        let phases = Strategy::HeadOnly.phases(BLOCKS, 10, 1e-3).unwrap();
        assert_eq!(phases.len(), 1);
        assert_eq!((phases[0].frozen_blocks, phases[0].cache_embeddings), (BLOCKS, true));
        assert!(phases[0].block_lrs.is_empty());
    }

    #[test]
    fn partial_freeze_trains_the_last_blocks_at_a_tenth_of_the_head_rate() {
        let phases = Strategy::PartialFreeze { trainable_blocks: 3 }
            .phases(BLOCKS, 5, 1e-3)
            .unwrap();
        assert_eq!(phases[0].frozen_blocks, 16);
        assert_eq!(phases[0].block_lrs.len(), 3);
        assert!((phases[0].block_lrs[0] - 1e-4).abs() < 1e-12);
        assert_eq!(phases[0].head_lr, 1e-3);
        assert_eq!(
            Strategy::PartialFreeze { trainable_blocks: 20 }
                .phases(BLOCKS, 5, 1e-3)
                .unwrap_err(),
            StrategyError::TooManyBlocks {
                requested: 20,
                available: BLOCKS
            }
        );
        assert_eq!(
            Strategy::PartialFreeze { trainable_blocks: 0 }
                .phases(BLOCKS, 5, 1e-3)
                .unwrap_err(),
            StrategyError::NoTrainableBlocks
        );
    }

    #[test]
    fn staged_is_head_first_then_joint_with_discriminative_rates() {
        let phases = Strategy::STAGED_DEFAULT.phases(BLOCKS, 6, 2e-3).unwrap();
        assert_eq!(
            phases.iter().map(|p| (p.name, p.epochs)).collect::<Vec<_>>(),
            vec![("head", 1), ("joint", 5)]
        );
        let joint = &phases[1];
        assert_eq!(joint.frozen_blocks, 0);
        assert_eq!(
            joint.head_lr, 1e-3,
            "the joint phase runs at half the head phase's rate"
        );
        assert!(
            (joint.block_lrs[0] - 1e-5).abs() < 1e-15,
            "earliest block at base / lr_mult: {:?}",
            joint.block_lrs
        );
        assert!(
            joint.block_lrs.windows(2).all(|w| w[0] < w[1]),
            "rates grow towards the head"
        );
        assert!(*joint.block_lrs.last().unwrap() < joint.head_lr);

        let top = Strategy::Staged {
            head_epochs: 2,
            unfreeze_blocks: Some(4),
            lr_mult: 10.0,
        };
        let phases = top.phases(BLOCKS, 3, 1e-3).unwrap();
        assert_eq!(
            (phases[1].frozen_blocks, phases[1].block_lrs.len(), phases[1].epochs),
            (15, 4, 1)
        );
        assert_eq!(
            top.phases(BLOCKS, 2, 1e-3).unwrap_err(),
            StrategyError::NoJointEpochs {
                epochs: 2,
                head_epochs: 2
            }
        );
        let bad = Strategy::Staged {
            head_epochs: 1,
            unfreeze_blocks: None,
            lr_mult: 0.5,
        };
        assert_eq!(bad.phases(BLOCKS, 3, 1e-3).unwrap_err(), StrategyError::BadLrMult(0.5));
    }

    #[test]
    fn full_fine_tune_defaults_to_a_tenth_of_scratch() {
        assert_eq!(
            Strategy::FullFineTune.default_base_lr() * 10.0,
            Strategy::FromScratch.default_base_lr()
        );
        let phases = Strategy::FullFineTune.phases(BLOCKS, 4, FINE_TUNE_LR).unwrap();
        assert_eq!((phases[0].frozen_blocks, phases[0].block_lrs.len()), (0, BLOCKS));
        assert!(!Strategy::FromScratch.uses_pretrained_weights());
        assert!(Strategy::FullFineTune.uses_pretrained_weights());
        assert_eq!(
            Strategy::HeadOnly.phases(BLOCKS, 0, 1e-3).unwrap_err(),
            StrategyError::NoEpochs
        );
    }

    #[test]
    fn strategies_serialise_as_tagged_json() {
        let json = serde_json::to_string(&Strategy::PartialFreeze { trainable_blocks: 4 }).unwrap();
        assert_eq!(json, r#"{"kind":"partial-freeze","trainable_blocks":4}"#);
        let back: Strategy =
            serde_json::from_str(r#"{"kind":"staged","head_epochs":1,"unfreeze_blocks":null,"lr_mult":100.0}"#)
                .unwrap();
        assert_eq!(back, Strategy::STAGED_DEFAULT);
        assert_eq!(
            serde_json::to_string(&Strategy::HeadOnly).unwrap(),
            r#"{"kind":"head-only"}"#
        );
    }
}
