//! A run from start to summary: the split, the phases in order, the model kept, and what a device
//! failure leaves to resume from.

use burn::prelude::*;
use web_time::Instant;

use crate::cache::EmbeddingCache;
use crate::data::{self, Dataset, Rng};
use crate::metrics::Evaluation;
use crate::model::{ImageClassifier, ModelKind, Normalisation};
use crate::readback::ReadbackError;
use crate::strategy::Phase;

use super::checkpoint::Position;
use super::{
    BatchNormStatistics, Checkpoint, PhaseInfo, TrainConfig, TrainError, TrainEvent, TrainObserver, TrainSummary,
    Trained, imbalance_notice, tracking_momentum,
};

/// How a run begins.
pub(super) enum Start<'a> {
    Fresh {
        pretrained: &'a ImageClassifier,
        config: &'a TrainConfig,
    },
    From(Box<Checkpoint>),
}

/// What a run needs besides its state.
pub(super) struct Session<'a> {
    pub(super) kind: ModelKind,
    pub(super) dataset: &'a Dataset,
    pub(super) config: &'a TrainConfig,
    pub(super) device: &'a Device,
    pub(super) embeddings: &'a mut EmbeddingCache,
    pub(super) host: Option<Device>,
    /// The split to use instead of the config's seeded stratified one (a fold of a comparison).
    pub(super) split: Option<data::Split>,
}

impl<'a> Session<'a> {
    pub(super) fn new(
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
            split: None,
        }
    }

    pub(super) async fn run<O: TrainObserver>(self, start: Start<'_>, observer: &mut O) -> Result<Trained, TrainError> {
        let started = Instant::now();
        let Self {
            kind,
            dataset,
            config,
            device,
            embeddings,
            host,
            split,
        } = self;
        dataset.validate()?;
        if config.batch_size == 0 || config.head_batch_size == Some(0) {
            return Err(TrainError::Zero("the batch size"));
        }
        let classes = dataset.classes.len();
        let split = match split {
            Some(split) => {
                let mut seen = vec![false; dataset.examples.len()];
                for &i in split.train.iter().chain(&split.val) {
                    if i >= seen.len() || std::mem::replace(&mut seen[i], true) {
                        return Err(TrainError::Zero("a split with each image at most once"));
                    }
                }
                if split.train.is_empty() {
                    return Err(TrainError::Zero("the number of training images"));
                }
                split
            }
            None => data::stratified_split(&dataset.labels(), classes, config.val_fraction, config.seed),
        };
        let mut split = split;
        let copies_moved = data::keep_copies_together(&mut split, dataset);
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
            copies_moved,
        };
        let (model, position) = match start {
            Start::Fresh { pretrained, .. } => {
                (run.start_fresh(pretrained, &phases, observer), Position::phase_start(0))
            }
            Start::From(checkpoint) => run.start_from(*checkpoint),
        };
        let model = run.prepare(model, observer);
        let model = run.phases(model, &phases, position, observer).await?;
        let (model, summary) = run.summary(model);
        let _ = observer.event(TrainEvent::Done(summary.clone()));
        let checkpoint = if run.cancelled { run.last.take() } else { None };
        Ok(Trained {
            model,
            summary,
            checkpoint,
        })
    }
}

impl Run<'_> {
    /// The model a new run starts from (the pretrained one with a new head, or a new network from
    /// scratch), announced with the phases and anything the person should know first.
    fn start_fresh<O: TrainObserver>(
        &mut self,
        pretrained: &ImageClassifier,
        phases: &[Phase],
        observer: &mut O,
    ) -> ImageClassifier {
        let (config, dataset) = (self.config, self.dataset);
        let classes = dataset.classes.len();
        self.device.seed(config.seed);
        let model = if config.strategy.uses_pretrained_weights() {
            pretrained.clone().with_classes(classes)
        } else {
            self.kind.architecture().init(classes, &self.device)
        };
        self.cancelled = observer
            .event(TrainEvent::Started {
                strategy: config.strategy,
                classes: dataset.classes.clone(),
                train_images: self.split.train.len(),
                val_images: self.split.val.len(),
                phases: phases.iter().map(PhaseInfo::from).collect(),
            })
            .is_break();
        if let Some(message) = imbalance_notice(dataset) {
            self.cancelled |= observer.event(TrainEvent::Notice { message }).is_break();
        }
        if self.copies_moved > 0 {
            let message = format!(
                "{} {} a near-copy of another picture on the other side of the split; {} kept on the \
                 original's side (validating a picture against its own copy in training would inflate \
                 the accuracy).",
                self.copies_moved,
                if self.copies_moved == 1 {
                    "picture was"
                } else {
                    "pictures were"
                },
                if self.copies_moved == 1 { "it is" } else { "they are" },
            );
            self.cancelled |= observer.event(TrainEvent::Notice { message }).is_break();
        }
        if config.augment && phases.iter().any(|p| p.frozen_blocks > 0) {
            self.cancelled |= observer
                .event(TrainEvent::Notice {
                    message: "Augmentation is on, so every epoch sees new crops of each image: the frozen \
                              layers' outputs are recomputed each epoch instead of cached (slower)."
                        .into(),
                })
                .is_break();
        }
        model
    }

    /// The model and position a resumed run goes on from, and the run's state as `checkpoint` kept it.
    fn start_from(&mut self, checkpoint: Checkpoint) -> (ImageClassifier, Position) {
        // Dropout draws differ from the lost device's anyway; seed from the position.
        self.device
            .seed(self.config.seed ^ ((checkpoint.epochs_done as u64) << 32 | checkpoint.batches_done() as u64));
        self.rng = checkpoint.rng.clone();
        self.epochs_done = checkpoint.epochs_done;
        self.epochs_total = checkpoint.epochs_total;
        self.seconds_before = checkpoint.seconds;
        self.best = checkpoint.best.as_ref().map(|best| Best {
            model: best.model.clone().to_device(&self.device),
            ..best.clone()
        });
        let model = checkpoint.model.clone().to_device(&self.device);
        let position = checkpoint.at.clone();
        self.last = Some(checkpoint);
        (model, position)
    }

    /// The model in training mode, the batch size the device fits, the BatchNorms set as configured.
    fn prepare<O: TrainObserver>(&mut self, model: ImageClassifier, observer: &mut O) -> ImageClassifier {
        let mut model = model.train();
        self.batch_size = self.fitting_batch(observer);
        match self.config.batch_norm_statistics() {
            BatchNormStatistics::Running => model.set_running_statistics(true),
            BatchNormStatistics::Batch => {
                model.set_running_statistics(false);
                let steps = self.split.train.len().div_ceil(self.batch_size).max(1);
                model.set_batch_norm_momentum(tracking_momentum(steps));
            }
        }
        model
    }

    /// The phases from `position` on, in order. A device failure with checkpoints on becomes an
    /// error that carries the last checkpoint.
    async fn phases<O: TrainObserver>(
        &mut self,
        mut model: ImageClassifier,
        phases: &[Phase],
        position: Position,
        observer: &mut O,
    ) -> Result<ImageClassifier, TrainError> {
        let first = position.phase;
        let mut position = Some(position);
        for (index, phase) in phases.iter().enumerate().skip(first) {
            if self.cancelled {
                break;
            }
            let at = position.take().unwrap_or_else(|| Position::phase_start(index));
            model = match self.phase(model, phase, at, observer).await {
                Ok(model) => model,
                Err(TrainError::Readback(ReadbackError::OutOfMemory(message))) if self.host.is_some() => {
                    // The largest batch the run put through the network (none is larger than a split).
                    let largest = self.split.train.len().max(self.split.val.len());
                    return Err(TrainError::OutOfMemory {
                        message,
                        batch_size: self.batch_size.min(largest).max(1),
                        checkpoint: self.last.take().map(Box::new),
                    });
                }
                Err(TrainError::Readback(error)) if error.is_device_failure() && self.host.is_some() => {
                    return Err(TrainError::Device {
                        error,
                        checkpoint: self.last.take().map(Box::new),
                    });
                }
                Err(error) => return Err(error),
            };
        }
        Ok(model)
    }

    /// The model kept (the best on validation, else the last) and the run's summary.
    fn summary(&mut self, last: ImageClassifier) -> (ImageClassifier, TrainSummary) {
        let (config, dataset) = (self.config, self.dataset);
        let classes = dataset.classes.len();
        let (model, eval, best_epoch) = match self.best.take() {
            Some(best) => (best.model, Some(best.eval), Some(best.epoch)),
            None => (last.valid(), None, None),
        };
        let summary = TrainSummary {
            strategy: config.strategy.name().to_string(),
            strategy_config: config.strategy,
            epochs: self.epochs_done,
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
            val_images: self.split.val.clone(),
            val_predictions: eval.map(|e| e.predictions).unwrap_or_default(),
            train_images: self.split.train.len(),
            seconds: self.seconds_before + self.started.elapsed().as_secs_f64(),
            cancelled: self.cancelled,
        };
        (model, summary)
    }
}

/// How images become model inputs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Input {
    pub(super) size: u32,
    pub(super) normalisation: Normalisation,
}

/// The best model so far.
#[derive(Clone)]
pub(super) struct Best {
    pub(super) epoch: usize,
    pub(super) eval: Evaluation,
    pub(super) model: ImageClassifier,
}

pub(super) struct Run<'a> {
    pub(super) kind: ModelKind,
    /// Images per batch through the network: the configured size, or what fits the device.
    pub(super) batch_size: usize,
    pub(super) dataset: &'a Dataset,
    pub(super) config: &'a TrainConfig,
    pub(super) input: Input,
    pub(super) device: Device,
    pub(super) autodiff: Device,
    pub(super) split: data::Split,
    pub(super) rng: Rng,
    pub(super) epochs_total: usize,
    pub(super) epochs_done: usize,
    pub(super) best: Option<Best>,
    pub(super) cancelled: bool,
    pub(super) embeddings: &'a mut EmbeddingCache,
    /// Where checkpoints go (`None`: no checkpoints).
    pub(super) host: Option<Device>,
    /// The last checkpoint taken.
    pub(super) last: Option<Checkpoint>,
    /// Seconds the run took before it was resumed here.
    pub(super) seconds_before: f64,
    pub(super) started: Instant,
    /// Near-copies moved to their original's side of the split ([`data::keep_copies_together`]).
    pub(super) copies_moved: usize,
}
