//! The training loop: a [`Strategy`] expanded into phases, each trained with its own optimizer and
//! warm-up + cosine schedule, evaluated every epoch on a stratified validation split, with early
//! stopping that keeps the best model. Progress goes out as [`TrainEvent`]s; the observer can cancel
//! between batches.
//!
//! What stays frozen is computed once where it can be: with the whole body frozen (head-only, or the
//! head phase of staged) the pooled embeddings of every image are cached and the head trains on them;
//! with a frozen prefix the activations at its boundary are cached (within a memory budget). Random
//! augmentation changes the input every epoch, so it turns caching off, and says so.
//!
//! Runs on any device: readbacks are async, the clock works in wasm. Deterministic for a seed on the
//! CPU backend.

use burn::prelude::Device;

use crate::cache::EmbeddingCache;
use crate::data::{self, Dataset};
use crate::model::{ImageClassifier, ModelKind};

use session::{Session, Start};

mod cache;
mod checkpoint;
mod config;
mod epoch;
mod error;
mod event;
mod session;

pub use checkpoint::Checkpoint;
pub use config::{BatchNormStatistics, TrainConfig, tracking_momentum};
pub use error::TrainError;
pub use event::{CacheKind, PhaseInfo, TrainEvent, TrainObserver, TrainSummary};

/// A finished run: the kept model (on the plain device, inference mode) and its summary.
pub struct Trained {
    pub model: ImageClassifier,
    pub summary: TrainSummary,
    /// Where a cancelled run with host checkpoints stopped: [`Training::resume`] continues it.
    pub checkpoint: Option<Checkpoint>,
}

/// A training run: set up, then started on a device. [`Training::new`] starts a run,
/// [`Training::resume`] continues one from its [`Checkpoint`]; [`embeddings`](Training::embeddings)
/// shares an embedding cache, [`checkpoints_on`](Training::checkpoints_on) keeps checkpoints on a
/// host device; [`run`](Training::run) trains.
///
/// ```no_run
/// # use graft_engine::{cache::EmbeddingCache, data::Dataset, model::{ImageClassifier, ModelKind}};
/// # use graft_engine::train::{Training, TrainConfig, TrainEvent};
/// # async fn example(pretrained: &ImageClassifier, dataset: &Dataset, config: &TrainConfig,
/// #     device: &burn::prelude::Device, host: &burn::prelude::Device) -> Result<(), graft_engine::train::TrainError> {
/// let mut cache = EmbeddingCache::new();
/// let trained = Training::new(pretrained, ModelKind::MobileNetV2, dataset, config)
///     .embeddings(&mut cache)
///     .checkpoints_on(host)
///     .run(device, &mut |event: TrainEvent| std::ops::ControlFlow::Continue(()))
///     .await?;
/// # Ok(()) }
/// ```
pub struct Training<'a> {
    start: Start<'a>,
    kind: ModelKind,
    dataset: &'a Dataset,
    embeddings: Option<&'a mut EmbeddingCache>,
    host: Option<Device>,
    split: Option<data::Split>,
}

impl<'a> Training<'a> {
    /// Fine-tunes `pretrained` (any head; ignored by from-scratch except for its architecture, which
    /// `kind` names) on `dataset` with `config`.
    pub fn new(
        pretrained: &'a ImageClassifier,
        kind: ModelKind,
        dataset: &'a Dataset,
        config: &'a TrainConfig,
    ) -> Self {
        Self {
            start: Start::Fresh { pretrained, config },
            kind,
            dataset,
            embeddings: None,
            host: None,
            split: None,
        }
    }

    /// Continues the run `checkpoint` was taken from, from its last completed batch: the same dataset
    /// (refused otherwise) and settings, the same split, the rest of the epoch in the same order. No
    /// `Started` event (the run started before); its phase starts again (`PhaseStart`, the cache
    /// rebuilt on the new device).
    pub fn resume(checkpoint: Checkpoint, kind: ModelKind, dataset: &'a Dataset) -> Self {
        Self {
            start: Start::From(Box::new(checkpoint)),
            kind,
            dataset,
            embeddings: None,
            host: None,
            split: None,
        }
    }

    /// Takes the frozen body's embeddings from `embeddings` where it has them (the recommender's, an
    /// earlier run's) and adds the ones it computes.
    pub fn embeddings(mut self, embeddings: &'a mut EmbeddingCache) -> Self {
        self.embeddings = Some(embeddings);
        self
    }

    /// Keeps a [`Checkpoint`] on `host` after every batch: when the device fails mid-run the error
    /// carries it ([`TrainError::Device`], [`TrainError::OutOfMemory`]) and [`Training::resume`] goes
    /// on from there; a cancelled run returns it ([`Trained::checkpoint`]). Each checkpoint reads back
    /// only what the batch changed (the trainable blocks and the head).
    pub fn checkpoints_on(mut self, host: &Device) -> Self {
        self.host = Some(host.clone());
        self
    }

    /// Trains and validates on `split` (indices into the dataset, each at most once; images in
    /// neither are left out) instead of the config's seeded stratified split: one fold of a
    /// comparison ([`crate::compare`]). Such a run keeps no checkpoints (they re-make the config's
    /// split when resumed).
    pub fn split(mut self, split: data::Split) -> Self {
        self.split = Some(split);
        self
    }

    /// Trains on `device` (a plain device; training uses its autodiff counterpart), telling
    /// `observer` how it goes.
    pub async fn run<O: TrainObserver>(self, device: &Device, observer: &mut O) -> Result<Trained, TrainError> {
        let Self {
            start,
            kind,
            dataset,
            embeddings,
            host,
            split,
        } = self;
        let resumed;
        let config = match &start {
            Start::Fresh { config, .. } => *config,
            Start::From(checkpoint) => {
                checkpoint.check_dataset(dataset)?;
                resumed = checkpoint.config().clone();
                &resumed
            }
        };
        let mut own = EmbeddingCache::new();
        let embeddings = embeddings.unwrap_or(&mut own);
        let mut session = Session::new(kind, dataset, config, device, embeddings);
        session.host = if split.is_some() { None } else { host };
        session.split = split;
        session.run(start, observer).await
    }
}

pub use crate::data::IMBALANCE_RATIO;

/// A notice when the largest class has at least [`IMBALANCE_RATIO`] times the images of the smallest
/// ([`data::imbalance`]).
pub fn imbalance_notice(dataset: &Dataset) -> Option<String> {
    data::imbalance(&dataset.classes, &dataset.class_counts())
}
