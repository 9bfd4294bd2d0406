//! Where a run is, kept on the host after every batch, so that a lost device costs at most the
//! batch that was running: [`Checkpoint`], and how a batch's checkpoint copies only what it changed.

use burn::prelude::*;

use crate::data::{Dataset, Rng};
use crate::model::ImageClassifier;
use crate::readback::{self, ReadbackError};

use super::session::{Best, Run};
use super::{TrainConfig, TrainError};

/// A run's state on the host after its last completed batch: the weights (frozen blocks included),
/// the best model so far, where in which epoch of which phase it was, the shuffled order of that
/// epoch, the random state and the running sums. [`resume`] continues from it on any device, so a
/// lost GPU costs at most the batch that was running.
///
/// The optimizer's moments are not in it (a browser cannot read them back asynchronously): a resumed
/// run starts them afresh, which AdamW's bias correction makes a gentle restart. Plain SGD without
/// momentum resumes exactly: shuffles, crops and dropout masks come from the random state kept here.
#[derive(Clone)]
pub struct Checkpoint {
    pub(super) model: ImageClassifier,
    pub(super) best: Option<Best>,
    pub(super) at: Position,
    pub(super) rng: Rng,
    pub(super) epochs_done: usize,
    pub(super) epochs_total: usize,
    pub(super) seconds: f64,
    pub(super) examples: usize,
    pub(super) config: TrainConfig,
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

    /// Refuses a dataset other than the one the checkpoint was taken with (by its number of images).
    pub(super) fn check_dataset(&self, dataset: &Dataset) -> Result<(), TrainError> {
        if self.examples == dataset.examples.len() {
            return Ok(());
        }
        Err(TrainError::CheckpointMismatch(format!(
            "it was taken with {} images, the dataset has {}",
            self.examples,
            dataset.examples.len()
        )))
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
pub(super) struct Position {
    pub(super) phase: usize,
    /// 0-based epoch within the phase.
    pub(super) phase_epoch: usize,
    /// Training images the phase's optimizer steps have taken in (the schedule's clock: a clock in
    /// images, not steps, keeps its place when the batch size changes mid-run).
    pub(super) images: usize,
    /// Epochs since the best validation result (early stopping).
    pub(super) since_best: usize,
    /// Seconds of this phase's completed epochs (for the ETA).
    pub(super) phase_seconds: f64,
    /// The epoch in progress, if one is.
    pub(super) epoch: Option<EpochProgress>,
}

impl Position {
    pub(super) fn phase_start(phase: usize) -> Self {
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
pub(super) struct EpochProgress {
    /// This epoch's order of positions into the training split.
    pub(super) order: std::sync::Arc<[usize]>,
    pub(super) batches_done: usize,
    /// Images of `order` done (batches may change size mid-epoch).
    pub(super) images_done: usize,
    pub(super) loss_sum: f64,
    pub(super) correct: usize,
    pub(super) seen: usize,
    pub(super) seconds: f64,
}

impl Run<'_> {
    /// Takes a checkpoint at `at`. `changed`: the model and the first body block that changed since
    /// the last checkpoint (0: all; the head always), whose weights are read back into a copy of the
    /// last checkpoint's host model, so that a batch costs only what it changed; `None`: the weights
    /// are the last checkpoint's. `best_changed` copies the best model too.
    pub(super) async fn checkpoint(
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
