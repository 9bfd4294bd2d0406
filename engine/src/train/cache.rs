//! What a phase trains on: cached embeddings, cached boundary activations, or images through the
//! network (the frozen prefix on the CPU kernels where it can), and validation on the same.

use burn::prelude::*;
use image::RgbImage;

use crate::data::{self};
use crate::helpers::Work;
use crate::inference::{self, FrozenClassifier};
use crate::metrics::Evaluation;
use crate::model::{CompiledClassifier, ImageClassifier, Probes};
use crate::preprocess;
use crate::readback::{self};
use crate::strategy::Phase;

use super::session::Run;
use super::{CacheKind, TrainError, TrainEvent, TrainObserver};

/// Cached frozen outputs of the training and validation images.
pub(super) enum Cache {
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
    /// Nothing cached, but the frozen blocks `..start` compiled for the CPU kernels (the CPU backend):
    /// every batch goes through them there, then through Burn from block `start`.
    Compiled {
        start: usize,
        net: CompiledClassifier,
    },
}

impl Cache {
    pub(super) fn kind(&self) -> CacheKind {
        match self {
            Self::None => CacheKind::None,
            Self::Compiled { .. } => CacheKind::Kernels,
            Self::Embeddings { .. } => CacheKind::Embeddings,
            Self::Boundary { .. } => CacheKind::Boundary,
        }
    }
}

/// What a training batch enters the layers that train as.
pub(super) enum TrainInput {
    /// Pooled embeddings, for the head alone.
    Embeddings(Tensor<2>),
    /// The activations entering body block `start` (a constant on the autodiff device).
    From { start: usize, x: Tensor<4> },
}

impl TrainInput {
    /// The logits `model` gives on this input (with the graph of what trains); a dropout mask,
    /// where there is one, drawn from `seed`.
    pub(super) fn logits(self, model: &ImageClassifier, seed: u64) -> Tensor<2> {
        match self {
            // Without dropout: with the features fixed, its noise costs more (a random mask for every
            // embedding of every epoch, the bulk of a CPU step) than it regularises a linear layer
            // that label smoothing and weight decay already regularise.
            Self::Embeddings(embeddings) => model.classify_without_dropout(embeddings),
            Self::From { start, x } => model.forward_from_seeded(start, x, seed),
        }
    }
}

impl Run<'_> {
    /// The training examples at `positions` as they enter the layers that train.
    pub(super) async fn train_input(
        &mut self,
        model: &ImageClassifier,
        cache: &Cache,
        positions: &[usize],
    ) -> TrainInput {
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
            Cache::Embeddings { train, .. } => TrainInput::Embeddings(train.clone().select(0, rows()).autodiff()),
            Cache::Boundary { start, train, .. } => TrainInput::From {
                start: *start,
                x: train.clone().select(0, rows()).autodiff(),
            },
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
                    Cache::Compiled { start, net } => TrainInput::From {
                        start: *start,
                        x: self.compiled_boundary(net, *start, &views).await.autodiff(),
                    },
                    _ => {
                        let (x, start) = model.forward_frozen_prefix(preprocess::batch_tensor(
                            &views,
                            &self.input.normalisation,
                            &self.autodiff,
                        ));
                        TrainInput::From { start, x }
                    }
                }
            }
        }
    }

    /// The activations entering block `start` for `views`, computed by `net` on the host (no graph;
    /// shared with the helpers when there are), as a tensor on the plain device.
    async fn compiled_boundary(&self, net: &CompiledClassifier, start: usize, views: &[RgbImage]) -> Tensor<4> {
        let (width, height) = views.first().map_or((0, 0), |view| view.dimensions());
        let input: Vec<f32> = views
            .iter()
            .flat_map(|view| preprocess::normalise(view, &self.input.normalisation))
            .collect();
        let out = net
            .run(
                Work::Prefix(start),
                &input,
                [views.len(), 3, height as usize, width as usize],
            )
            .await;
        Tensor::from_data(TensorData::new(out.values, out.dims), &self.device)
    }

    /// No cache for a phase whose blocks `..start` are frozen: on the CPU backend, those blocks
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
    pub(super) async fn evaluate(
        &self,
        model: &ImageClassifier,
        cache: &Cache,
    ) -> Result<Option<Evaluation>, TrainError> {
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
                    model.forward_from(*start, self.compiled_boundary(net, *start, &views).await)
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
    pub(super) async fn build_cache<O: TrainObserver>(
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
        // BatchNorm folded into the convolutions; on the CPU backend, compiled for the CPU kernels.
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
    fn sizes_are_said_in_the_unit_that_reads_best() {
        assert_eq!(human_bytes(30_720), "30 KiB");
        assert_eq!(human_bytes(1), "1 KiB");
        assert_eq!(human_bytes(300 << 20), "300 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
