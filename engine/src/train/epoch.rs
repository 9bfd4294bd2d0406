//! One phase of a run, epoch by epoch: batches through what trains with an optimizer step and a
//! checkpoint each, then the validation that keeps the best model and stops a phase early.

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::prelude::*;
use web_time::Instant;

use crate::freeze;
use crate::model::ImageClassifier;
use crate::optim::BlockwiseOptimizer;
use crate::readback;
use crate::schedule::WarmupCosine;
use crate::strategy::Phase;

use super::cache::{Cache, TrainInput};
use super::checkpoint::{EpochProgress, Position};
use super::session::{Best, Run};
use super::{TrainError, TrainEvent, TrainObserver};

/// Where steps are in parts, batches smaller than this are one part, not split: each part has at
/// least 8 images, as BatchNorm's batch statistics get noisy below that (with splits from 8 images,
/// the e2e studio's full fine-tune of 16 pictures, its batch under 16 split in parts under 8, lost a
/// prediction it makes on whole steps), and a part's fixed costs (the state sent, a message each
/// way) would outweigh a smaller part's work.
const MIN_SPLIT_BATCH: usize = 16;

/// Seconds an epoch has taken: before it was resumed, plus since.
struct EpochClock {
    started: Instant,
    before: f64,
}

impl EpochClock {
    fn seconds(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }
}

/// What stays the same through a phase's epochs.
struct PhasePlan<'p> {
    phase: &'p Phase,
    cache: Cache,
    /// Images (or embeddings) per optimizer step.
    batch_size: usize,
    schedule: WarmupCosine,
    loss_fn: CrossEntropyLoss,
}

impl Run<'_> {
    /// Trains `phase` from `at` (its start, or where a checkpoint left it) and returns the model as the
    /// phase leaves it (the best one is kept aside, in `best`).
    pub(super) async fn phase<O: TrainObserver>(
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
        let plan = self.plan(phase, cache);
        // Whether the helpers compute the weight gradients is measured again for what this phase trains.
        crate::model::cpu_train::reset_tuner();
        crate::peer::reset_tuner();
        // Ended by early stopping (`at` then counts fewer epochs than planned).
        let mut stopped_early = false;
        while at.phase_epoch < phase.epochs && !self.cancelled {
            let started = Instant::now();
            let mut progress = at.epoch.take().unwrap_or_else(|| self.new_epoch());
            let clock = EpochClock {
                started,
                before: progress.seconds,
            };
            model = self
                .train_epoch(model, &mut optimizer, &plan, &mut at, &mut progress, &clock, observer)
                .await?;
            if self.cancelled && progress.seen < self.split.train.len() {
                // A partial epoch is not evaluated or counted; the checkpoint keeps it.
                break;
            }
            if self
                .end_epoch(&model, &plan, &mut at, &progress, &clock, observer)
                .await?
            {
                stopped_early = true;
                break;
            }
        }
        // A run cancelled mid-phase has not ended it: the resumed run will.
        if stopped_early || at.phase_epoch == phase.epochs {
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

    /// The batch size, schedule and loss of a phase that trains on `cache`.
    fn plan<'p>(&self, phase: &'p Phase, cache: Cache) -> PhasePlan<'p> {
        let train_images = self.split.train.len();
        let batch_size = match cache {
            Cache::Embeddings { .. } => self
                .config
                .head_batch_size
                .unwrap_or_else(|| (train_images / 10).clamp(32, 256)),
            _ => self.batch_size,
        }
        .min(train_images);
        PhasePlan {
            phase,
            cache,
            batch_size,
            schedule: WarmupCosine::for_steps(phase.epochs * train_images),
            loss_fn: CrossEntropyLossConfig::new()
                .with_smoothing((self.config.label_smoothing > 0.0).then_some(self.config.label_smoothing))
                .init(&self.autodiff),
        }
    }

    /// A new epoch: the training split in a new random order.
    fn new_epoch(&mut self) -> EpochProgress {
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

    /// The rest of the epoch `progress` is in, a batch at a time, each followed by a checkpoint and a
    /// `Batch` event; stops after the batch that a cancel arrived in.
    #[allow(clippy::too_many_arguments)] // the phase's state, carried through its epochs
    async fn train_epoch<O: TrainObserver>(
        &mut self,
        mut model: ImageClassifier,
        optimizer: &mut BlockwiseOptimizer,
        plan: &PhasePlan<'_>,
        at: &mut Position,
        progress: &mut EpochProgress,
        clock: &EpochClock,
        observer: &mut O,
    ) -> Result<ImageClassifier, TrainError> {
        let epoch = self.epochs_done + 1;
        let train_images = self.split.train.len();
        // Counted from where the epoch is: a run resumed in smaller batches has more of them.
        let batches = progress.batches_done + (train_images - progress.images_done).div_ceil(plan.batch_size);
        while progress.images_done < train_images {
            let first = progress.images_done;
            let order = progress.order.clone();
            let positions = &order[first..(first + plan.batch_size).min(order.len())];
            let loss;
            (model, loss) = self
                .train_batch(model, optimizer, plan, at, positions, progress)
                .await?;
            progress.seconds = clock.seconds();
            at.epoch = Some(progress.clone());
            self.checkpoint(Some((&model, plan.phase.frozen_blocks)), at, false)
                .await?;
            at.epoch = None;
            self.cancelled |= observer
                .event(TrainEvent::Batch {
                    phase: plan.phase.name.to_string(),
                    epoch,
                    batch: progress.batches_done,
                    batches,
                    loss,
                })
                .is_break();
            observer.between_batches().await;
            if self.cancelled {
                break;
            }
        }
        Ok(model)
    }

    /// One optimizer step on the training examples at `positions`: returns the model after it and
    /// the batch's loss, counted into `progress`.
    async fn train_batch(
        &mut self,
        model: ImageClassifier,
        optimizer: &mut BlockwiseOptimizer,
        plan: &PhasePlan<'_>,
        at: &mut Position,
        positions: &[usize],
        progress: &mut EpochProgress,
    ) -> Result<(ImageClassifier, f64), TrainError> {
        let labels: Vec<usize> = positions
            .iter()
            .map(|&p| self.dataset.examples[self.split.train[p]].label)
            .collect();
        let started = Instant::now();
        let input = self.train_input(&model, &plan.cache, positions).await;
        // In the browser on the CPU backend a step is computed in parts where only blocks from the
        // input's on train: two when the batch is worth splitting (the second on the replica of the
        // worker when one is ready and that was measured to pay), else one; each part's dropout mask
        // from its seed. (Elsewhere, as natively, nothing else is looked at: no pass over the model
        // per step, and the whole step's mask from a seed too.)
        let in_parts = crate::peer::steps_in_parts()
            && match &input {
                TrainInput::From { start, .. } => {
                    crate::peer::sizes(&model, *start).1 == freeze::trainable_params(&model)
                }
                TrainInput::Embeddings(_) => false,
            };
        let split = in_parts && labels.len() >= MIN_SPLIT_BATCH;
        let peer = crate::peer::ready().filter(|_| split);
        let on_peer = peer.is_some() && crate::peer::peer_next();
        let (batch_loss, logits, grads) = match input {
            TrainInput::From { start, x } if in_parts => {
                self.step_in_parts(&model, split, peer.as_deref().filter(|_| on_peer), start, x, &labels)
                    .await?
            }
            input => {
                // The dropout mask from the run's own random numbers (checkpointed with it), as in
                // parts: a resumed run draws what the uninterrupted one would have.
                let seed = match &input {
                    TrainInput::From { .. } => self.rng.next_u64(),
                    TrainInput::Embeddings(_) => 0,
                };
                let logits = input.logits(&model, seed);
                let targets = Tensor::<1, Int>::from_data(
                    TensorData::new(labels.iter().map(|&l| l as i64).collect::<Vec<_>>(), [labels.len()]),
                    &self.autodiff,
                );
                let loss = plan.loss_fn.forward(logits.clone(), targets);
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
                // The 1x1 convolutions' weight gradients on the helpers, where there are (the browser's CPU).
                let grads = crate::model::cpu_train::backward(&model, loss).await;
                (batch_loss, host[1..].to_vec(), grads)
            }
        };
        if !batch_loss.is_finite() {
            return Err(TrainError::Diverged(batch_loss));
        }
        let classes = self.dataset.classes.len();
        progress.correct += logits
            .chunks(classes)
            .zip(&labels)
            .filter(|(row, label)| crate::metrics::argmax(row) == **label)
            .count();
        progress.loss_sum += batch_loss * labels.len() as f64;
        progress.seen += labels.len();
        // The rate at the batch's last image: a batch of B images at step k gets the rate a
        // step-counted schedule would give step k.
        let factor = plan.schedule.factor(at.images + labels.len() - 1);
        let model = optimizer.step(model, grads, factor);
        if peer.is_some() {
            crate::peer::record(on_peer, started.elapsed().as_secs_f64() / labels.len() as f64);
        }
        at.images += labels.len();
        progress.batches_done += 1;
        progress.images_done += labels.len();
        Ok((model, batch_loss))
    }

    /// A step in parts: with `split`, the first half of the batch computed here, the second by `peer`
    /// meanwhile (the activations entering block `start` and the state of what trains go over) or
    /// here after the first; without, the whole batch as one part. The loss, logits and gradients of
    /// the whole batch (each part's weighted by its images). The second part is the same request,
    /// computed by the same function, wherever it runs: a part the peer fails to answer is computed
    /// here, to the same numbers.
    async fn step_in_parts(
        &mut self,
        model: &ImageClassifier,
        split: bool,
        peer: Option<&dyn crate::peer::Peer>,
        start: usize,
        x: Tensor<4>,
        labels: &[usize],
    ) -> Result<(f64, Vec<f32>, burn::tensor::Gradients), TrainError> {
        use crate::peer::{PartHeader, PartRequest};
        let images = labels.len();
        let mine = if split { images.div_ceil(2) } else { images };
        let [_, channels, height, width] = x.dims();
        let seeds = [self.rng.next_u64(), self.rng.next_u64()];
        let header = |range: std::ops::Range<usize>, seed| PartHeader {
            kind: self.kind,
            classes: self.dataset.classes.len(),
            start,
            running_statistics: self.config.batch_norm_statistics() == super::BatchNormStatistics::Running,
            momentum: model.batch_norm_momentum(),
            smoothing: (self.config.label_smoothing > 0.0).then_some(self.config.label_smoothing),
            seed,
            dims: [range.len(), channels, height, width],
            labels: labels[range].to_vec(),
        };
        // The state before the first part's forward pass moves the BatchNorm running statistics.
        let theirs = if split {
            Some(PartRequest {
                header: header(mine..images, seeds[1]),
                state: crate::peer::state(model, start).await?,
                input: readback::to_f32_vec(x.clone().narrow(0, mine, images - mine).without_autodiff()).await?,
            })
        } else {
            None
        };
        let answer = peer.zip(theirs.as_ref()).map(|(peer, theirs)| peer.run(theirs));
        let (loss, logits) = crate::peer::part_loss(model, &header(0..mine, seeds[0]), x.narrow(0, 0, mine));
        let host = readback::to_f32_vec(Tensor::cat(
            vec![
                loss.clone().without_autodiff().reshape([1]),
                logits.without_autodiff().flatten(0, 1),
            ],
            0,
        ))
        .await?;
        let mut grads = crate::model::cpu_train::backward(model, loss).await;
        let mut logits = host[1..].to_vec();
        let Some(theirs) = theirs else {
            return Ok((f64::from(host[0]), logits, grads));
        };
        let (_, gradients) = crate::peer::sizes(model, start);
        let classes = self.dataset.classes.len();
        let running = if theirs.header.running_statistics {
            0
        } else {
            crate::peer::running_len(model, start)
        };
        let answered = match answer {
            Some(answer) => answer.await.ok().filter(|answer| {
                answer.gradients.len() == gradients
                    && answer.logits.len() == (images - mine) * classes
                    && answer.running.len() == running
            }),
            None => None,
        };
        let answer = match answered {
            Some(answer) => answer,
            None => crate::peer::run_here(&self.device, &theirs)
                .await
                .map_err(|error| match error {
                    crate::peer::PeerError::Readback(error) => TrainError::from(error),
                    other => panic!("a part this thread made is well formed: {other}"),
                })?,
        };
        crate::peer::add_part(model, start, &mut grads, mine, &answer.gradients, images - mine);
        if !theirs.header.running_statistics {
            crate::peer::merge_running(model, start, mine, &answer.running, images - mine);
        }
        let batch_loss =
            (f64::from(host[0]) * mine as f64 + f64::from(answer.loss) * (images - mine) as f64) / images as f64;
        logits.extend_from_slice(&answer.logits);
        Ok((batch_loss, logits, grads))
    }

    /// A completed epoch: validation, the `Epoch` event, the best model kept, early stopping, the
    /// checkpoint. True when the phase stops early.
    async fn end_epoch<O: TrainObserver>(
        &mut self,
        model: &ImageClassifier,
        plan: &PhasePlan<'_>,
        at: &mut Position,
        progress: &EpochProgress,
        clock: &EpochClock,
        observer: &mut O,
    ) -> Result<bool, TrainError> {
        let phase = plan.phase;
        self.epochs_done += 1;
        let epoch = self.epochs_done;
        let val = self.evaluate(model, &plan.cache).await?;
        let seconds = clock.seconds();
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
                lr: phase.head_lr * plan.schedule.factor(at.images.saturating_sub(1)),
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
        Ok(stop)
    }

    /// The configured batch size, made smaller when a batch of images through the network would need a
    /// larger buffer than the device allows (said as a notice).
    pub(super) fn fitting_batch<O: TrainObserver>(&mut self, observer: &mut O) -> usize {
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
}
