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

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use web_time::Instant;

use crate::cache::EmbeddingCache;
use crate::data::{self, Augmentation, DataError, Dataset, Rng};
use crate::freeze::{self, FreezeError};
use crate::inference::{self, FrozenClassifier};
use crate::metrics::Evaluation;
use crate::model::{CompiledClassifier, ImageClassifier, ModelKind, Normalisation, Probes};
use crate::optim::{BlockwiseOptimizer, OptimizerKind};
use crate::preprocess;
use crate::readback::{self, ReadbackError};
use crate::schedule::WarmupCosine;
use crate::strategy::{Phase, Strategy, StrategyError};

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
    /// in wasm, when there is no cache: augmentation, or over the memory budget).
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

/// Why a run could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    #[error(transparent)]
    Freeze(#[from] FreezeError),
    #[error(transparent)]
    Readback(#[from] ReadbackError),
    #[error("the loss became {0} (not a number): the learning rate is too high for this data")]
    Diverged(f64),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The device failed mid-run (lost, or could not run the work). With host checkpoints on, the run
    /// can go on elsewhere from `checkpoint` (see [`resume`]).
    #[error("training stopped because the compute device failed ({error})")]
    Device {
        error: ReadbackError,
        checkpoint: Option<Box<Checkpoint>>,
    },
    /// The device ran out of memory with batches of `batch_size` images. With host checkpoints on,
    /// the run can go on from `checkpoint` in smaller batches ([`Checkpoint::with_batch_size`]).
    #[error("the device ran out of memory with batches of {batch_size} images ({message})")]
    OutOfMemory {
        message: String,
        batch_size: usize,
        checkpoint: Option<Box<Checkpoint>>,
    },
    #[error("this checkpoint belongs to a different dataset or settings: {0}")]
    CheckpointMismatch(String),
}

/// A finished run: the kept model (on the plain device, inference mode) and its summary.
pub struct Trained {
    pub model: ImageClassifier,
    pub summary: TrainSummary,
    /// Where a cancelled run with host checkpoints stopped: [`resume`] continues it.
    pub checkpoint: Option<Checkpoint>,
}

/// A run's state on the host after its last completed batch: the weights (frozen blocks included),
/// the best model so far, where in which epoch of which phase it was, the shuffled order of that
/// epoch, the random state and the running sums. [`resume`] continues from it on any device, so a
/// lost GPU costs at most the batch that was running.
///
/// The optimizer's moments are not in it (a browser cannot read them back asynchronously): a resumed
/// run starts them afresh, which AdamW's bias correction makes a gentle restart. Plain SGD without
/// momentum resumes exactly.
#[derive(Clone)]
pub struct Checkpoint {
    model: ImageClassifier,
    best: Option<Best>,
    at: Position,
    rng: Rng,
    epochs_done: usize,
    epochs_total: usize,
    seconds: f64,
    examples: usize,
    config: TrainConfig,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("phase", &self.at.phase)
            .field("epoch", &self.epoch())
            .field("batches_done", &self.batches_done())
            .field("best_epoch", &self.best.as_ref().map(|b| b.epoch))
            .finish_non_exhaustive()
    }
}

impl Checkpoint {
    /// The 1-based epoch (over the whole run) the run goes on in.
    pub fn epoch(&self) -> usize {
        self.epochs_done + 1
    }

    /// Batches of that epoch already done.
    pub fn batches_done(&self) -> usize {
        self.at.epoch.as_ref().map_or(0, |e| e.batches_done)
    }

    /// The 0-based phase the run goes on in.
    pub fn phase(&self) -> usize {
        self.at.phase
    }

    /// The weights after the last completed batch (on the host device).
    pub fn model(&self) -> &ImageClassifier {
        &self.model
    }

    /// Where the run goes on, for messages: "after batch 5 of epoch 3" or "the start of epoch 4".
    pub fn describe(&self) -> String {
        match self.batches_done() {
            0 => format!("the start of epoch {}", self.epoch()),
            done => format!("after batch {done} of epoch {}", self.epoch()),
        }
    }

    /// The run's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The batch size of the run's settings (a device's buffer limit may have made the batches used
    /// smaller).
    pub fn batch_size(&self) -> usize {
        self.config.batch_size
    }

    /// The same checkpoint, to go on in batches of at most `batch_size` images (at least 1): after an
    /// out-of-memory, say. The epoch in progress goes on from the image it reached, in the same
    /// order; the learning-rate schedule counts images, so it goes on where it was.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        let batch_size = batch_size.max(1);
        self.config.batch_size = batch_size;
        // The head's batches (on cached embeddings) are no larger either.
        self.config.head_batch_size = Some(self.config.head_batch_size.map_or(batch_size, |h| h.min(batch_size)));
        self
    }
}

/// Where a run is: a phase, an epoch within it, and how far through that epoch.
#[derive(Debug, Clone)]
struct Position {
    phase: usize,
    /// 0-based epoch within the phase.
    phase_epoch: usize,
    /// Training images the phase's optimizer steps have taken in (the schedule's clock: a clock in
    /// images, not steps, keeps its place when the batch size changes mid-run).
    images: usize,
    /// Epochs since the best validation result (early stopping).
    since_best: usize,
    /// Seconds of this phase's completed epochs (for the ETA).
    phase_seconds: f64,
    /// The epoch in progress, if one is.
    epoch: Option<EpochProgress>,
}

impl Position {
    fn phase_start(phase: usize) -> Self {
        Self {
            phase,
            phase_epoch: 0,
            images: 0,
            since_best: 0,
            phase_seconds: 0.0,
            epoch: None,
        }
    }
}

/// An epoch partly done.
#[derive(Debug, Clone)]
struct EpochProgress {
    /// This epoch's order of positions into the training split.
    order: std::sync::Arc<[usize]>,
    batches_done: usize,
    /// Images of `order` done (batches may change size mid-epoch).
    images_done: usize,
    loss_sum: f64,
    correct: usize,
    seen: usize,
    seconds: f64,
}

/// Fine-tunes `pretrained` (any head; ignored by from-scratch except for its architecture, which
/// `kind` names) on `dataset` with `config`, on `device` (a plain device; training uses its autodiff
/// counterpart).
pub async fn train<O: TrainObserver>(
    pretrained: &ImageClassifier,
    kind: ModelKind,
    dataset: &Dataset,
    config: &TrainConfig,
    device: &Device,
    observer: &mut O,
) -> Result<Trained, TrainError> {
    let mut embeddings = EmbeddingCache::new();
    train_with_cache(pretrained, kind, dataset, config, device, observer, &mut embeddings).await
}

/// [`train`], taking the frozen body's embeddings from `embeddings` where it has them (the
/// recommender's, an earlier run's) and adding the ones it computes.
pub async fn train_with_cache<O: TrainObserver>(
    pretrained: &ImageClassifier,
    kind: ModelKind,
    dataset: &Dataset,
    config: &TrainConfig,
    device: &Device,
    observer: &mut O,
    embeddings: &mut EmbeddingCache,
) -> Result<Trained, TrainError> {
    Session::new(kind, dataset, config, device, embeddings)
        .run(Start::Fresh(pretrained), observer)
        .await
}

/// [`train_with_cache`], keeping a [`Checkpoint`] on `host` after every batch: when the device fails
/// mid-run the error carries it ([`TrainError::Device`]) and [`resume`] goes on from there. Each
/// checkpoint reads back only what the batch changed (the trainable blocks and the head). For GPU
/// devices; a CPU device cannot be lost.
#[allow(clippy::too_many_arguments)] // train_with_cache's arguments and the host
pub async fn train_checkpointed<O: TrainObserver>(
    pretrained: &ImageClassifier,
    kind: ModelKind,
    dataset: &Dataset,
    config: &TrainConfig,
    device: &Device,
    host: &Device,
    observer: &mut O,
    embeddings: &mut EmbeddingCache,
) -> Result<Trained, TrainError> {
    let mut session = Session::new(kind, dataset, config, device, embeddings);
    session.host = Some(host.clone());
    session.run(Start::Fresh(pretrained), observer).await
}

/// Continues the run `checkpoint` was taken from, on `device`, from its last completed batch: the
/// same dataset and settings, the same split, the rest of the epoch in the same order. No `Started`
/// event (the run started before); its phase starts again (`PhaseStart`, the cache rebuilt on the new
/// device). With `host`, it keeps checkpoints again.
#[allow(clippy::too_many_arguments)]
pub async fn resume<O: TrainObserver>(
    checkpoint: Checkpoint,
    kind: ModelKind,
    dataset: &Dataset,
    device: &Device,
    host: Option<&Device>,
    observer: &mut O,
    embeddings: &mut EmbeddingCache,
) -> Result<Trained, TrainError> {
    if checkpoint.examples != dataset.examples.len() {
        return Err(TrainError::CheckpointMismatch(format!(
            "it was taken with {} images, the dataset has {}",
            checkpoint.examples,
            dataset.examples.len()
        )));
    }
    let config = checkpoint.config.clone();
    let mut session = Session::new(kind, dataset, &config, device, embeddings);
    session.host = host.cloned();
    session.run(Start::From(Box::new(checkpoint)), observer).await
}

/// How a run begins.
enum Start<'a> {
    Fresh(&'a ImageClassifier),
    From(Box<Checkpoint>),
}

/// What a run needs besides its state.
struct Session<'a> {
    kind: ModelKind,
    dataset: &'a Dataset,
    config: &'a TrainConfig,
    device: &'a Device,
    embeddings: &'a mut EmbeddingCache,
    host: Option<Device>,
}

impl<'a> Session<'a> {
    fn new(
        kind: ModelKind,
        dataset: &'a Dataset,
        config: &'a TrainConfig,
        device: &'a Device,
        embeddings: &'a mut EmbeddingCache,
    ) -> Self {
        Self {
            kind,
            dataset,
            config,
            device,
            embeddings,
            host: None,
        }
    }

    async fn run<O: TrainObserver>(self, start: Start<'_>, observer: &mut O) -> Result<Trained, TrainError> {
        let started = Instant::now();
        let Self {
            kind,
            dataset,
            config,
            device,
            embeddings,
            host,
        } = self;
        dataset.validate()?;
        if config.batch_size == 0 || config.head_batch_size == Some(0) {
            return Err(TrainError::Zero("the batch size"));
        }
        let classes = dataset.classes.len();
        let split = data::stratified_split(&dataset.labels(), classes, config.val_fraction, config.seed);
        let architecture = kind.architecture();
        let phases = config
            .strategy
            .phases(architecture.num_body_blocks(), config.epochs, config.base_lr())?;
        let card = kind.card();
        let input = Input {
            size: config.image_size.unwrap_or(card.input_size) as u32,
            normalisation: card.normalisation,
        };
        embeddings.use_model(kind, input.size);

        let mut run = Run {
            kind,
            batch_size: config.batch_size,
            dataset,
            config,
            input,
            device: device.clone(),
            autodiff: device.clone().autodiff(),
            split,
            rng: Rng::new(config.seed.wrapping_add(1)),
            epochs_total: phases.iter().map(|p| p.epochs).sum(),
            epochs_done: 0,
            best: None,
            cancelled: false,
            embeddings,
            host,
            last: None,
            seconds_before: 0.0,
            started,
        };
        let (mut model, position) = match start {
            Start::Fresh(pretrained) => {
                device.seed(config.seed);
                let model = if config.strategy.uses_pretrained_weights() {
                    pretrained.clone().with_classes(classes)
                } else {
                    architecture.init(classes, device)
                };
                run.cancelled = observer
                    .event(TrainEvent::Started {
                        strategy: config.strategy,
                        classes: dataset.classes.clone(),
                        train_images: run.split.train.len(),
                        val_images: run.split.val.len(),
                        phases: phases.iter().map(PhaseInfo::from).collect(),
                    })
                    .is_break();
                if let Some(message) = imbalance_notice(dataset) {
                    run.cancelled |= observer.event(TrainEvent::Notice { message }).is_break();
                }
                if config.augment && phases.iter().any(|p| p.frozen_blocks > 0) {
                    run.cancelled |= observer
                        .event(TrainEvent::Notice {
                            message: "Augmentation is on, so every epoch sees new crops of each image: the frozen \
                                      layers' outputs are recomputed each epoch instead of cached (slower)."
                                .into(),
                        })
                        .is_break();
                }
                (model, Position::phase_start(0))
            }
            Start::From(checkpoint) => {
                // Dropout draws differ from the lost device's anyway; seed from the position.
                device.seed(config.seed ^ ((checkpoint.epochs_done as u64) << 32 | checkpoint.batches_done() as u64));
                run.rng = checkpoint.rng.clone();
                run.epochs_done = checkpoint.epochs_done;
                run.epochs_total = checkpoint.epochs_total;
                run.seconds_before = checkpoint.seconds;
                run.best = checkpoint.best.as_ref().map(|best| Best {
                    model: best.model.clone().to_device(device),
                    ..best.clone()
                });
                let model = checkpoint.model.clone().to_device(device);
                let position = checkpoint.at.clone();
                run.last = Some(*checkpoint);
                (model, position)
            }
        };
        model = model.train();
        run.batch_size = run.fitting_batch(observer);
        match run.config.batch_norm_statistics() {
            BatchNormStatistics::Running => model.set_running_statistics(true),
            BatchNormStatistics::Batch => {
                model.set_running_statistics(false);
                let steps = run.split.train.len().div_ceil(run.batch_size).max(1);
                model.set_batch_norm_momentum(tracking_momentum(steps));
            }
        }

        let first = position.phase;
        let mut position = Some(position);
        for (index, phase) in phases.iter().enumerate().skip(first) {
            if run.cancelled {
                break;
            }
            let at = position.take().unwrap_or_else(|| Position::phase_start(index));
            model = match run.phase(model, phase, at, observer).await {
                Ok(model) => model,
                Err(TrainError::Readback(ReadbackError::OutOfMemory(message))) if run.host.is_some() => {
                    // The largest batch the run put through the network (none is larger than a split).
                    let largest = run.split.train.len().max(run.split.val.len());
                    return Err(TrainError::OutOfMemory {
                        message,
                        batch_size: run.batch_size.min(largest).max(1),
                        checkpoint: run.last.take().map(Box::new),
                    });
                }
                Err(TrainError::Readback(error)) if error.is_device_failure() && run.host.is_some() => {
                    return Err(TrainError::Device {
                        error,
                        checkpoint: run.last.take().map(Box::new),
                    });
                }
                Err(error) => return Err(error),
            };
        }

        let kept = run.best.take();
        let (model, eval, best_epoch) = match kept {
            Some(best) => (best.model, Some(best.eval), Some(best.epoch)),
            None => (model.valid(), None, None),
        };
        let summary = TrainSummary {
            strategy: config.strategy.name().to_string(),
            strategy_config: config.strategy,
            epochs: run.epochs_done,
            best_epoch,
            val_accuracy: eval.as_ref().map(|e| e.accuracy),
            val_loss: eval.as_ref().map(|e| e.loss),
            per_class_accuracy: dataset
                .classes
                .iter()
                .enumerate()
                .map(|(c, name)| (name.clone(), eval.as_ref().and_then(|e| e.per_class_accuracy[c])))
                .collect(),
            confusion: eval
                .as_ref()
                .map_or_else(|| vec![vec![0; classes]; classes], |e| e.confusion.clone()),
            classes: dataset.classes.clone(),
            val_images: run.split.val.clone(),
            val_predictions: eval.map(|e| e.predictions).unwrap_or_default(),
            train_images: run.split.train.len(),
            seconds: run.seconds_before + started.elapsed().as_secs_f64(),
            cancelled: run.cancelled,
        };
        let _ = observer.event(TrainEvent::Done(summary.clone()));
        let checkpoint = if run.cancelled { run.last.take() } else { None };
        Ok(Trained {
            model,
            summary,
            checkpoint,
        })
    }
}

pub use crate::data::IMBALANCE_RATIO;

/// A notice when the largest class has at least [`IMBALANCE_RATIO`] times the images of the smallest
/// ([`data::imbalance`]).
pub fn imbalance_notice(dataset: &Dataset) -> Option<String> {
    data::imbalance(&dataset.classes, &dataset.class_counts())
}

/// How images become model inputs.
#[derive(Debug, Clone, Copy)]
struct Input {
    size: u32,
    normalisation: Normalisation,
}

/// The best model so far.
#[derive(Clone)]
struct Best {
    epoch: usize,
    eval: Evaluation,
    model: ImageClassifier,
}

/// Cached frozen outputs of the training and validation images.
enum Cache {
    None,
    /// `[n, width]` pooled embeddings (`val`: `None` without validation images).
    Embeddings {
        train: Tensor<2>,
        val: Option<Tensor<2>>,
    },
    /// `[n, c, h, w]` activations entering block `start`.
    Boundary {
        start: usize,
        train: Tensor<4>,
        val: Option<Tensor<4>>,
    },
    /// Nothing cached, but the frozen blocks `..start` compiled for the CPU kernels (the CPU backend in
    /// wasm): every batch goes through them there, then through Burn from block `start`.
    Compiled {
        start: usize,
        net: CompiledClassifier,
    },
}

impl Cache {
    fn kind(&self) -> CacheKind {
        match self {
            Self::None => CacheKind::None,
            Self::Compiled { .. } => CacheKind::Kernels,
            Self::Embeddings { .. } => CacheKind::Embeddings,
            Self::Boundary { .. } => CacheKind::Boundary,
        }
    }
}

struct Run<'a> {
    kind: ModelKind,
    /// Images per batch through the network: the configured size, or what fits the device.
    batch_size: usize,
    dataset: &'a Dataset,
    config: &'a TrainConfig,
    input: Input,
    device: Device,
    autodiff: Device,
    split: data::Split,
    rng: Rng,
    epochs_total: usize,
    epochs_done: usize,
    best: Option<Best>,
    cancelled: bool,
    embeddings: &'a mut EmbeddingCache,
    /// Where checkpoints go (`None`: no checkpoints).
    host: Option<Device>,
    /// The last checkpoint taken.
    last: Option<Checkpoint>,
    /// Seconds the run took before it was resumed here.
    seconds_before: f64,
    started: Instant,
}

impl Run<'_> {
    /// Takes a checkpoint at `at`. `changed`: the model and the first body block that changed since
    /// the last checkpoint (0: all; the head always), whose weights are read back into a copy of the
    /// last checkpoint's host model, so that a batch costs only what it changed; `None`: the weights
    /// are the last checkpoint's. `best_changed` copies the best model too.
    async fn checkpoint(
        &mut self,
        changed: Option<(&ImageClassifier, usize)>,
        at: &Position,
        best_changed: bool,
    ) -> Result<(), TrainError> {
        let Some(host) = self.host.clone() else {
            return Ok(());
        };
        let copy = match (changed, self.last.as_ref()) {
            (None, Some(last)) => last.model.clone(),
            (Some((model, first)), Some(last)) if first > 0 => {
                let mut copy = last.model.clone();
                copy_blocks(&model.valid(), first, &mut copy, &host).await?;
                copy
            }
            (Some((model, _)), _) => readback::module_to_device(model.valid(), &host).await?,
            (None, None) => unreachable!("the first checkpoint of a run copies the whole model"),
        };
        let best = match &self.best {
            Some(best) if best_changed => Some(Best {
                model: readback::module_to_device(best.model.clone(), &host).await?,
                ..best.clone()
            }),
            _ => self.last.as_ref().and_then(|last| last.best.clone()),
        };
        self.last = Some(Checkpoint {
            model: copy,
            best,
            at: at.clone(),
            rng: self.rng.clone(),
            epochs_done: self.epochs_done,
            epochs_total: self.epochs_total,
            seconds: self.seconds_before + self.started.elapsed().as_secs_f64(),
            examples: self.dataset.examples.len(),
            config: self.config.clone(),
        });
        Ok(())
    }

    async fn phase<O: TrainObserver>(
        &mut self,
        mut model: ImageClassifier,
        phase: &Phase,
        mut at: Position,
        observer: &mut O,
    ) -> Result<ImageClassifier, TrainError> {
        freeze::freeze_to(&mut model, phase.frozen_blocks)?;
        let mut optimizer = BlockwiseOptimizer::for_phase(phase, &self.config.optimizer, &model);
        if self.last.is_none() || (at.phase_epoch == 0 && at.epoch.is_none()) {
            self.checkpoint(Some((&model, 0)), &at, false).await?;
        }
        let cache = self.build_cache(&model, phase, observer).await?;
        if self.cancelled {
            return Ok(model);
        }
        self.cancelled |= observer
            .event(TrainEvent::PhaseStart {
                phase: phase.name.to_string(),
                index: at.phase,
                epochs: phase.epochs,
                frozen_blocks: phase.frozen_blocks,
                trainable_params: optimizer.num_params(&model),
                cache: cache.kind(),
            })
            .is_break();

        let batch_size = match cache {
            Cache::Embeddings { .. } => self
                .config
                .head_batch_size
                .unwrap_or_else(|| (self.split.train.len() / 10).clamp(32, 256)),
            _ => self.batch_size,
        }
        .min(self.split.train.len());
        let train_images = self.split.train.len();
        let schedule = WarmupCosine::for_steps(phase.epochs * train_images);
        let loss_fn = CrossEntropyLossConfig::new()
            .with_smoothing((self.config.label_smoothing > 0.0).then_some(self.config.label_smoothing))
            .init(&self.autodiff);
        // Ended by early stopping (`at` then counts fewer epochs than planned).
        let mut completed = false;
        while at.phase_epoch < phase.epochs {
            if self.cancelled {
                break;
            }
            let epoch = self.epochs_done + 1;
            let epoch_started = Instant::now();
            let mut progress = match at.epoch.take() {
                Some(progress) => progress,
                None => {
                    // Positions into `split.train` (which also index the cache rows).
                    let mut order: Vec<usize> = (0..self.split.train.len()).collect();
                    self.rng.shuffle(&mut order);
                    EpochProgress {
                        order: order.into(),
                        batches_done: 0,
                        images_done: 0,
                        loss_sum: 0.0,
                        correct: 0,
                        seen: 0,
                        seconds: 0.0,
                    }
                }
            };
            let seconds_before = progress.seconds;
            // Counted from where the epoch is: a run resumed in smaller batches has more of them.
            let batches = progress.batches_done + (train_images - progress.images_done).div_ceil(batch_size);
            while progress.images_done < train_images {
                let first = progress.images_done;
                let positions = &progress.order[first..(first + batch_size).min(progress.order.len())];
                let labels: Vec<usize> = positions
                    .iter()
                    .map(|&p| self.dataset.examples[self.split.train[p]].label)
                    .collect();
                let logits = self.train_logits(&model, &cache, positions);
                let targets = Tensor::<1, Int>::from_data(
                    TensorData::new(labels.iter().map(|&l| l as i64).collect::<Vec<_>>(), [labels.len()]),
                    &self.autodiff,
                );
                let loss = loss_fn.forward(logits.clone(), targets);
                // One read-back per batch: the loss and the logits together.
                let host = readback::to_f32_vec(Tensor::cat(
                    vec![
                        loss.clone().without_autodiff().reshape([1]),
                        logits.without_autodiff().flatten(0, 1),
                    ],
                    0,
                ))
                .await?;
                let batch_loss = f64::from(host[0]);
                if !batch_loss.is_finite() {
                    return Err(TrainError::Diverged(batch_loss));
                }
                let classes = self.dataset.classes.len();
                progress.correct += host[1..]
                    .chunks(classes)
                    .zip(&labels)
                    .filter(|(row, label)| crate::metrics::argmax(row) == **label)
                    .count();
                progress.loss_sum += batch_loss * labels.len() as f64;
                progress.seen += labels.len();

                // The rate at the batch's last image: a batch of B images at step k gets the rate a
                // step-counted schedule would give step k.
                let factor = schedule.factor(at.images + labels.len() - 1);
                model = optimizer.step(model, loss.backward(), factor);
                at.images += labels.len();
                progress.batches_done += 1;
                progress.images_done += labels.len();
                progress.seconds = seconds_before + epoch_started.elapsed().as_secs_f64();
                let batch = progress.batches_done;
                at.epoch = Some(progress);
                self.checkpoint(Some((&model, phase.frozen_blocks)), &at, false).await?;
                progress = at.epoch.take().expect("just put");
                self.cancelled |= observer
                    .event(TrainEvent::Batch {
                        phase: phase.name.to_string(),
                        epoch,
                        batch,
                        batches,
                        loss: batch_loss,
                    })
                    .is_break();
                observer.between_batches().await;
                if self.cancelled {
                    break;
                }
            }
            if self.cancelled && progress.seen < self.split.train.len() {
                // A partial epoch is not evaluated or counted; the checkpoint keeps it.
                break;
            }
            self.epochs_done += 1;

            let val = self.evaluate(&model, &cache).await?;
            let seconds = seconds_before + epoch_started.elapsed().as_secs_f64();
            at.phase_seconds += seconds;
            let per_epoch = at.phase_seconds / (at.phase_epoch + 1) as f64;
            let remaining = self.epochs_total.saturating_sub(self.epochs_done);
            self.cancelled |= observer
                .event(TrainEvent::Epoch {
                    phase: phase.name.to_string(),
                    epoch,
                    epochs: self.epochs_total,
                    train_loss: progress.loss_sum / progress.seen.max(1) as f64,
                    train_accuracy: progress.correct as f64 / progress.seen.max(1) as f64,
                    val_loss: val.as_ref().map(|v| v.loss),
                    val_accuracy: val.as_ref().map(|v| v.accuracy),
                    lr: phase.head_lr * schedule.factor(at.images.saturating_sub(1)),
                    seconds,
                    eta_seconds: per_epoch * remaining as f64,
                })
                .is_break();
            at.phase_epoch += 1;
            let mut best_changed = false;
            let mut stop = false;
            if let Some(val) = val {
                let better = self.best.as_ref().is_none_or(|best| {
                    val.accuracy > best.eval.accuracy + 1e-9
                        || (val.accuracy > best.eval.accuracy - 1e-9 && val.loss < best.eval.loss)
                });
                if better {
                    self.best = Some(Best {
                        epoch,
                        eval: val,
                        model: model.valid(),
                    });
                    at.since_best = 0;
                    best_changed = true;
                } else {
                    at.since_best += 1;
                    if self.config.patience.is_some_and(|p| at.since_best >= p) && at.phase_epoch < phase.epochs {
                        let best_epoch = self.best.as_ref().map_or(epoch, |b| b.epoch);
                        self.cancelled |= observer
                            .event(TrainEvent::EarlyStop {
                                phase: phase.name.to_string(),
                                epoch,
                                best_epoch,
                            })
                            .is_break();
                        // The epochs this phase skips no longer count towards the ETA.
                        self.epochs_total -= phase.epochs - at.phase_epoch;
                        stop = true;
                    }
                }
            }
            // The epoch is done: a resumed run starts the next one (or the next phase).
            let next = if stop || at.phase_epoch == phase.epochs {
                Position::phase_start(at.phase + 1)
            } else {
                at.clone()
            };
            self.checkpoint(None, &next, best_changed).await?;
            if stop {
                completed = true;
                break;
            }
        }
        // A run cancelled mid-phase has not ended it: the resumed run will.
        if completed || at.phase_epoch == phase.epochs {
            self.cancelled |= observer
                .event(TrainEvent::PhaseEnd {
                    phase: phase.name.to_string(),
                    index: at.phase,
                    optimizer_state: self.config.record_optimizer_state.then(|| optimizer.state()),
                })
                .is_break();
        }
        Ok(model)
    }

    /// The configured batch size, made smaller when a batch of images through the network would need a
    /// larger buffer than the device allows (said as a notice).
    fn fitting_batch<O: TrainObserver>(&mut self, observer: &mut O) -> usize {
        let wanted = self.config.batch_size;
        let Some(limit) = self.config.max_buffer_bytes else {
            return wanted;
        };
        let per_image = 4 * self.kind.architecture().largest_activation(self.input.size as usize) as u64;
        let fits = (limit / per_image.max(1)).max(1) as usize;
        if wanted <= fits {
            return wanted;
        }
        self.cancelled |= observer
            .event(TrainEvent::Notice {
                message: format!(
                    "A batch of {wanted} images would need {:.1} MiB buffers, more than this GPU allows ({:.1} MiB): \
                     images go through the network in batches of {fits} instead.",
                    (per_image * wanted as u64) as f64 / f64::from(1 << 20),
                    limit as f64 / f64::from(1 << 20),
                ),
            })
            .is_break();
        fits
    }

    /// Logits of the training examples at `positions` (into `split.train`), with a graph through
    /// what trains.
    fn train_logits(&mut self, model: &ImageClassifier, cache: &Cache, positions: &[usize]) -> Tensor<2> {
        let rows = || {
            Tensor::<1, Int>::from_data(
                TensorData::new(
                    positions.iter().map(|&p| p as i64).collect::<Vec<_>>(),
                    [positions.len()],
                ),
                &self.device,
            )
        };
        match cache {
            // Without dropout: with the features fixed, its noise costs more (a random mask for every
            // embedding of every epoch, the bulk of a CPU step) than it regularises a linear layer
            // that label smoothing and weight decay already regularise.
            Cache::Embeddings { train, .. } => {
                model.classify_without_dropout(train.clone().select(0, rows()).autodiff())
            }
            Cache::Boundary { start, train, .. } => {
                model.forward_from(*start, train.clone().select(0, rows()).autodiff())
            }
            Cache::None | Cache::Compiled { .. } => {
                let views: Vec<RgbImage> = positions
                    .iter()
                    .map(|&p| {
                        let image = &self.dataset.examples[self.split.train[p]].image.pixels();
                        if self.config.augment {
                            data::augmented_view(image, self.input.size, &self.config.augmentation, &mut self.rng)
                        } else {
                            preprocess::evaluation_view(image, self.input.size)
                        }
                    })
                    .collect();
                match cache {
                    Cache::Compiled { start, net } => {
                        model.forward_from(*start, self.compiled_boundary(net, *start, &views).autodiff())
                    }
                    _ => model.forward_train(preprocess::batch_tensor(
                        &views,
                        &self.input.normalisation,
                        &self.autodiff,
                    )),
                }
            }
        }
    }

    /// The activations entering block `start` for `views`, computed by `net` on the host (no graph),
    /// as a tensor on the plain device.
    fn compiled_boundary(&self, net: &CompiledClassifier, start: usize, views: &[RgbImage]) -> Tensor<4> {
        let (width, height) = views.first().map_or((0, 0), |view| view.dimensions());
        let input: Vec<f32> = views
            .iter()
            .flat_map(|view| preprocess::normalise(view, &self.input.normalisation))
            .collect();
        let out = net.prefix(start, &input, [views.len(), 3, height as usize, width as usize]);
        Tensor::from_data(TensorData::new(out.values, out.dims), &self.device)
    }

    /// No cache for a phase whose blocks `..start` are frozen: on the CPU in wasm, those blocks
    /// compiled for the CPU kernels; elsewhere Burn runs them each batch.
    async fn uncached(&self, model: &ImageClassifier, start: usize) -> Result<Cache, TrainError> {
        if start > 0 && inference::compiles_for(&self.device) {
            Ok(Cache::Compiled {
                start,
                net: CompiledClassifier::compile(&model.valid(), Probes::Off).await?,
            })
        } else {
            Ok(Cache::None)
        }
    }

    /// Validation metrics of the model as it is now (`None` without validation images).
    async fn evaluate(&self, model: &ImageClassifier, cache: &Cache) -> Result<Option<Evaluation>, TrainError> {
        if self.split.val.is_empty() {
            return Ok(None);
        }
        let model = model.valid();
        let batch = self.batch_size.max(1);
        let mut logits = Vec::new();
        let positions: Vec<usize> = (0..self.split.val.len()).collect();
        for chunk in positions.chunks(batch) {
            let rows = || {
                Tensor::<1, Int>::from_data(
                    TensorData::new(chunk.iter().map(|&p| p as i64).collect::<Vec<_>>(), [chunk.len()]),
                    &self.device,
                )
            };
            let out = match cache {
                Cache::Embeddings { val: Some(val), .. } => model.classify(val.clone().select(0, rows())),
                Cache::Boundary {
                    start, val: Some(val), ..
                } => model.forward_from(*start, val.clone().select(0, rows())),
                Cache::Compiled { start, net } => {
                    let views = self.views(chunk.iter().map(|&p| self.split.val[p]));
                    model.forward_from(*start, self.compiled_boundary(net, *start, &views))
                }
                _ => model.forward(self.view_batch(chunk.iter().map(|&p| self.split.val[p]))),
            };
            logits.extend(readback::to_f32_vec(out).await?);
        }
        let labels: Vec<usize> = self.split.val.iter().map(|&i| self.dataset.examples[i].label).collect();
        Ok(Some(Evaluation::from_logits(
            &logits,
            &labels,
            self.dataset.classes.len(),
        )))
    }

    /// Evaluation views of the given examples as an input batch on the plain device.
    fn view_batch(&self, examples: impl Iterator<Item = usize>) -> Tensor<4> {
        preprocess::batch_tensor(&self.views(examples), &self.input.normalisation, &self.device)
    }

    /// Evaluation views of the given examples.
    fn views(&self, examples: impl Iterator<Item = usize>) -> Vec<RgbImage> {
        examples
            .map(|i| preprocess::evaluation_view(&self.dataset.examples[i].image.pixels(), self.input.size))
            .collect()
    }

    /// The cache for `phase`, when nothing before its trainable blocks changes between epochs.
    async fn build_cache<O: TrainObserver>(
        &mut self,
        model: &ImageClassifier,
        phase: &Phase,
        observer: &mut O,
    ) -> Result<Cache, TrainError> {
        let start = phase.frozen_blocks;
        if start == 0 || self.config.augment {
            return self.uncached(model, start).await;
        }
        let whole_body = start == model.block_names().len();
        if !whole_body {
            // Budget check from one image's boundary activation.
            let probe = model
                .valid()
                .forward_prefix(start, self.view_batch(self.split.train[..1].iter().copied()));
            let per_image = probe.shape().num_elements() as u64 * 4;
            let needed = per_image * (self.split.train.len() + self.split.val.len()) as u64;
            if needed > self.config.cache_budget_bytes {
                self.cancelled |= observer
                    .event(TrainEvent::Notice {
                        message: format!(
                            "Caching the frozen layers' outputs would take {} (more than the {} budget): \
                             they are recomputed every epoch instead.",
                            human_bytes(needed),
                            human_bytes(self.config.cache_budget_bytes)
                        ),
                    })
                    .is_break();
                return self.uncached(model, start).await;
            }
        }
        // BatchNorm folded into the convolutions; on the CPU in wasm, compiled for the CPU kernels.
        let frozen = FrozenClassifier::new(model, Probes::Off).await?;
        let total = self.split.train.len() + self.split.val.len();
        let mut progress = Progress {
            phase: phase.name,
            done: 0,
            total,
        };
        let train_examples = self.split.train.clone();
        let val_examples = self.split.val.clone();
        if whole_body {
            let reused = train_examples
                .iter()
                .chain(&val_examples)
                .filter(|&&i| self.embeddings.get(&self.dataset.examples[i].image).is_some())
                .count();
            if reused > 0 {
                self.cancelled |= observer
                    .event(TrainEvent::Notice {
                        message: format!(
                            "Reusing {reused} of {total} embeddings computed earlier (while measuring your data): only the rest go through the network."
                        ),
                    })
                    .is_break();
            }
            let train = self.embedded(&frozen, &train_examples, &mut progress, observer).await?;
            let val = self.embedded(&frozen, &val_examples, &mut progress, observer).await?;
            Ok(match (train, val) {
                (Some(train), val) if !self.cancelled => Cache::Embeddings { train, val },
                _ => Cache::None,
            })
        } else {
            let train = self
                .boundaries(&frozen, start, &train_examples, &mut progress, observer)
                .await?;
            let val = self
                .boundaries(&frozen, start, &val_examples, &mut progress, observer)
                .await?;
            Ok(match (train, val) {
                (Some(train), val) if !self.cancelled => Cache::Boundary { start, train, val },
                _ => Cache::None,
            })
        }
    }

    /// The pooled embeddings of `examples` as `[n, width]`: from the embedding cache where it has them,
    /// computed by `frozen` (and cached) where not (`None` when there are no examples or the run was
    /// cancelled).
    async fn embedded<O: TrainObserver>(
        &mut self,
        frozen: &FrozenClassifier,
        examples: &[usize],
        progress: &mut Progress,
        observer: &mut O,
    ) -> Result<Option<Tensor<2>>, TrainError> {
        if examples.is_empty() {
            return Ok(None);
        }
        let width = frozen.embedding_width();
        let mut rows: Vec<Option<Vec<f32>>> = examples
            .iter()
            .map(|&i| self.embeddings.get(&self.dataset.examples[i].image).cloned())
            .collect();
        let missing: Vec<usize> = (0..examples.len()).filter(|&p| rows[p].is_none()).collect();
        progress.done += examples.len() - missing.len();
        for chunk in missing.chunks(self.batch_size.max(1)) {
            let values = frozen
                .embeddings(self.view_batch(chunk.iter().map(|&p| examples[p])))
                .await?;
            for (k, &p) in chunk.iter().enumerate() {
                let row = values[k * width..(k + 1) * width].to_vec();
                self.embeddings
                    .insert(&self.dataset.examples[examples[p]].image, row.clone());
                rows[p] = Some(row);
            }
            if self.cached_batch(chunk.len(), progress, observer).await {
                return Ok(None);
            }
        }
        let flat: Vec<f32> = rows.into_iter().flatten().flatten().collect();
        Ok(Some(Tensor::from_data(
            TensorData::new(flat, [examples.len(), width]),
            &self.device,
        )))
    }

    /// Counts `images` more as cached, reports it and gives the event loop a turn; true when the run
    /// was cancelled.
    async fn cached_batch<O: TrainObserver>(
        &mut self,
        images: usize,
        progress: &mut Progress,
        observer: &mut O,
    ) -> bool {
        progress.done += images;
        self.cancelled |= observer
            .event(TrainEvent::Caching {
                phase: progress.phase.to_string(),
                done: progress.done,
                total: progress.total,
            })
            .is_break();
        observer.between_batches().await;
        self.cancelled
    }

    /// The activations entering body block `start` for the evaluation views of `examples`, batch by
    /// batch, concatenated (`None` when there are no examples or the run was cancelled).
    async fn boundaries<O: TrainObserver>(
        &mut self,
        frozen: &FrozenClassifier,
        start: usize,
        examples: &[usize],
        progress: &mut Progress,
        observer: &mut O,
    ) -> Result<Option<Tensor<4>>, TrainError> {
        let mut parts = Vec::new();
        for chunk in examples.chunks(self.batch_size.max(1)) {
            let out = frozen.prefix(start, self.view_batch(chunk.iter().copied())).await?;
            // Reading one value back waits for the batch: the progress is real, and the browser
            // gets a turn.
            readback::to_f32_vec(out.clone().flatten::<1>(0, 3).slice(0..1)).await?;
            parts.push(out);
            if self.cached_batch(chunk.len(), progress, observer).await {
                return Ok(None);
            }
        }
        Ok((!parts.is_empty()).then(|| Tensor::cat(parts, 0)))
    }
}

/// Copies body blocks `first..` (0 = stem, last = head_conv) and the head of `from` into `into` (the
/// same architecture), on `host`.
async fn copy_blocks(
    from: &ImageClassifier,
    first: usize,
    into: &mut ImageClassifier,
    host: &Device,
) -> Result<(), ReadbackError> {
    let residual = from.blocks.len();
    if first == 0 {
        into.stem = readback::module_to_device(from.stem.clone(), host).await?;
    }
    // The trainable residual blocks in one read-back (a `Vec` of modules is a module): a round trip
    // per block would cost a sync point each, every batch.
    let start = first.max(1) - 1;
    if start < residual {
        let copied = readback::module_to_device(from.blocks[start..].to_vec(), host).await?;
        for (slot, block) in into.blocks[start..].iter_mut().zip(copied) {
            *slot = block;
        }
    }
    if first <= residual + 1 {
        into.head_conv = readback::module_to_device(from.head_conv.clone(), host).await?;
    }
    into.classifier = readback::module_to_device(from.classifier.clone(), host).await?;
    Ok(())
}

/// Progress through the images of a cache.
struct Progress {
    phase: &'static str,
    done: usize,
    total: usize,
}

/// `bytes` for people: KiB below a MiB, MiB below a GiB, GiB above.
fn human_bytes(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        0..MIB => format!("{} KiB", bytes.div_ceil(KIB)),
        MIB..GIB => format!("{:.0} MiB", bytes as f64 / MIB as f64),
        _ => format!("{:.1} GiB", bytes as f64 / GIB as f64),
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

    #[test]
    fn sizes_are_said_in_the_unit_that_reads_best() {
        assert_eq!(human_bytes(30_720), "30 KiB");
        assert_eq!(human_bytes(1), "1 KiB");
        assert_eq!(human_bytes(300 << 20), "300 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
