//! What a run tells its observer: [`TrainEvent`]s, the [`TrainSummary`] it ends with, and the
//! [`TrainObserver`] that receives them (and may cancel between batches).

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use crate::strategy::{Phase, Strategy};

/// What a phase trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheKind {
    /// Pooled embeddings of the frozen body, computed once per image.
    Embeddings,
    /// Activations at the frozen prefix's boundary, computed once per image.
    Boundary,
    /// Images through the network every epoch.
    None,
    /// Images through the network every epoch, the frozen blocks on the CPU kernels (the CPU backend
    /// when there is no cache: augmentation, or over the memory budget).
    Kernels,
}

/// A phase as announced to the observer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseInfo {
    pub name: String,
    pub epochs: usize,
    pub frozen_blocks: usize,
    pub trainable_blocks: usize,
    pub head_lr: f64,
}

impl From<&Phase> for PhaseInfo {
    fn from(phase: &Phase) -> Self {
        Self {
            name: phase.name.to_string(),
            epochs: phase.epochs,
            frozen_blocks: phase.frozen_blocks,
            trainable_blocks: phase.block_lrs.len(),
            head_lr: phase.head_lr,
        }
    }
}

/// The result of a run, also its last event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The strategy's name (`head-only`, `partial-freeze`, `staged`, `full`, `scratch`).
    pub strategy: String,
    /// The strategy with its parameters.
    pub strategy_config: Strategy,
    /// Epochs run (fewer than planned after early stopping or a cancel).
    pub epochs: usize,
    /// The epoch (1-based) whose model was kept: the best on validation.
    pub best_epoch: Option<usize>,
    /// Validation accuracy of the kept model (`None` without a validation split).
    pub val_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    /// Validation accuracy per class name (`None` for a class without validation images).
    pub per_class_accuracy: BTreeMap<String, Option<f64>>,
    /// `confusion[true][predicted]` validation counts, in `classes` order.
    pub confusion: Vec<Vec<usize>>,
    pub classes: Vec<String>,
    /// Validation image indices (into the dataset) and what the kept model predicted for each, so that
    /// a confusion cell can show its images.
    pub val_images: Vec<usize>,
    pub val_predictions: Vec<usize>,
    pub train_images: usize,
    /// Wall time of the whole run.
    pub seconds: f64,
    pub cancelled: bool,
}

/// Progress of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum TrainEvent {
    Started {
        strategy: Strategy,
        classes: Vec<String>,
        train_images: usize,
        val_images: usize,
        phases: Vec<PhaseInfo>,
    },
    /// Something the person should know (an adaptation, a cache turned off).
    Notice {
        message: String,
    },
    PhaseStart {
        phase: String,
        /// 0-based phase number.
        index: usize,
        epochs: usize,
        frozen_blocks: usize,
        /// Scalar parameters the optimizer updates.
        trainable_params: usize,
        cache: CacheKind,
    },
    /// Images through the frozen part for the cache.
    Caching {
        phase: String,
        done: usize,
        total: usize,
    },
    Batch {
        phase: String,
        /// 1-based epoch over the whole run.
        epoch: usize,
        /// 1-based batch within the epoch.
        batch: usize,
        batches: usize,
        loss: f64,
    },
    Epoch {
        phase: String,
        epoch: usize,
        epochs: usize,
        train_loss: f64,
        train_accuracy: f64,
        val_loss: Option<f64>,
        val_accuracy: Option<f64>,
        /// The head's learning rate at the end of the epoch.
        lr: f64,
        seconds: f64,
        eta_seconds: f64,
    },
    /// A phase ended: all its epochs ran, or early stopping ended it (not when the run was cancelled
    /// within it).
    PhaseEnd {
        phase: String,
        index: usize,
        /// What its optimizer held at the end, when the configuration asks
        /// ([`TrainConfig::record_optimizer_state`]).
        optimizer_state: Option<Vec<crate::optim::GroupState>>,
    },
    EarlyStop {
        phase: String,
        epoch: usize,
        best_epoch: usize,
    },
    Done(TrainSummary),
}

/// Receives a run's events; may cancel it between batches.
pub trait TrainObserver {
    /// Handles one event; `Break` cancels the run at the next batch boundary (the best model so far
    /// is kept).
    fn event(&mut self, event: TrainEvent) -> ControlFlow<()>;

    /// Awaited between batches. A browser worker yields to its event loop here, so that a stop request
    /// can arrive while the CPU backend trains synchronously.
    fn between_batches(&mut self) -> impl Future<Output = ()> {
        async {}
    }
}

impl<F: FnMut(TrainEvent) -> ControlFlow<()>> TrainObserver for F {
    fn event(&mut self, event: TrainEvent) -> ControlFlow<()> {
        self(event)
    }
}
