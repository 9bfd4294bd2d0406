//! Each strategy runs real training steps through the engine's loop — natively and on WebGPU in the
//! browser — on a tiny dataset made from the four real photos of the golden fixture, at 64 px so that
//! SwiftShader gets through it in seconds.

use std::ops::ControlFlow;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use graft_engine::data::{Dataset, Example};
use graft_engine::freeze;
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::optim::GroupState;
use graft_engine::preprocess;
use graft_engine::strategy::Strategy;
use graft_engine::train::{self, CacheKind, TrainConfig, TrainError, TrainEvent, TrainSummary};

use crate::golden::CROPS;

/// Two classes from the fixture photos — living things (the cat, the astronaut) and objects (the
/// espresso, the rocket) — each photo with its mirror image and its top-left quarter enlarged: 6 per
/// class.
pub fn photo_dataset() -> Dataset {
    let mut dataset = Dataset {
        classes: vec!["living".into(), "object".into()],
        examples: Vec::new(),
    };
    for (name, png) in CROPS {
        let label = usize::from(matches!(name, "coffee" | "rocket"));
        let image = preprocess::decode(png).expect("fixture photos decode");
        let mirrored = image::imageops::flip_horizontal(&image);
        let quarter = image::imageops::resize(
            &image::imageops::crop_imm(&image, 0, 0, 112, 112).to_image(),
            224,
            224,
            image::imageops::FilterType::Triangle,
        );
        for view in [image, mirrored, quarter] {
            dataset.examples.push(Example {
                image: view.into(),
                label,
            });
        }
    }
    dataset
}

/// One of each strategy, as the benchmarks time them (partial freeze with its CLI default of 5 blocks).
pub const BENCH_STRATEGIES: [Strategy; 5] = [
    Strategy::HeadOnly,
    Strategy::PartialFreeze { trainable_blocks: 5 },
    Strategy::STAGED_DEFAULT,
    Strategy::FullFineTune,
    Strategy::FromScratch,
];

/// The configuration of the few-steps runs: 64 px, batches of 4, two images per class held out.
pub fn few_steps_config(strategy: Strategy) -> TrainConfig {
    let mut config = TrainConfig::new(strategy);
    config.epochs = match strategy {
        Strategy::Staged { .. } => 2,
        _ => 1,
    };
    config.batch_size = 4;
    config.image_size = Some(64);
    config.val_fraction = 0.34;
    config.patience = None;
    config.seed = 5;
    config
}

/// What a few-steps run did.
#[derive(Debug, Clone)]
pub struct StepsReport {
    pub summary: TrainSummary,
    /// Losses of every batch, in order.
    pub losses: Vec<f64>,
    /// Per phase: name, cache used, parameters the optimizer updated.
    pub phases: Vec<(String, CacheKind, usize)>,
    /// Scalar parameters that require a gradient in each phase (body blocks from `frozen_blocks` on
    /// plus the head), counted independently of the optimizer.
    pub expected_trainable: Vec<usize>,
    /// Largest change of any float (parameters and BatchNorm statistics) in the blocks every phase kept
    /// frozen (`None` when no block stayed frozen throughout, or training started from scratch).
    pub frozen_max_change: Option<f32>,
    /// Largest change of any float in the last body block (`head_conv`).
    pub last_block_max_change: f32,
    /// Per phase, the state Graft's optimizer held at its end (Burn's own record of it); recorded on
    /// the CPU backend only (empty elsewhere, and then so is `expected_state`).
    pub optimizer_state: Vec<Vec<GroupState>>,
    /// Per phase, the state it must hold: two AdamW moments for every parameter tensor of the blocks
    /// the phase trains and of the head, counted on a fresh model (where nothing is frozen).
    pub expected_state: Vec<Vec<GroupState>>,
}

/// Records batch losses and phase starts; in the browser, gives the event loop a turn between batches
/// (as the app's worker does), so that the page stays responsive to the test runner.
#[derive(Default)]
struct Recorder {
    losses: Vec<f64>,
    phases: Vec<(String, CacheKind, usize)>,
    optimizer_state: Vec<Vec<GroupState>>,
}

impl train::TrainObserver for Recorder {
    fn event(&mut self, event: TrainEvent) -> ControlFlow<()> {
        match event {
            TrainEvent::Batch { loss, .. } => self.losses.push(loss),
            TrainEvent::PhaseStart {
                phase,
                cache,
                trainable_params,
                ..
            } => self.phases.push((phase, cache, trainable_params)),
            TrainEvent::PhaseEnd {
                optimizer_state: Some(state),
                ..
            } => self.optimizer_state.push(state),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    async fn between_batches(&mut self) {
        #[cfg(target_arch = "wasm32")]
        graft_worker::yield_now().await;
    }
}

/// Trains `strategy` for a few steps on `device` from `pretrained` (a MobileNetV2).
pub async fn run_strategy(
    pretrained: &ImageClassifier,
    strategy: Strategy,
    device: &Device,
) -> Result<StepsReport, TrainError> {
    run_strategy_with(pretrained, strategy, device, false).await
}

/// [`run_strategy`], with augmentation on or off.
pub async fn run_strategy_with(
    pretrained: &ImageClassifier,
    strategy: Strategy,
    device: &Device,
    augment: bool,
) -> Result<StepsReport, TrainError> {
    let dataset = photo_dataset();
    let mut config = few_steps_config(strategy);
    config.augment = augment;
    // Burn records an optimizer's state by reading it back synchronously: the CPU backend only.
    let on_cpu = device.clone().without_autodiff() == Device::flex();
    config.record_optimizer_state = on_cpu;
    let num_blocks = pretrained.block_names().len();
    let phases = strategy.phases(num_blocks, config.epochs, config.base_lr())?;
    let always_frozen = phases.iter().map(|p| p.frozen_blocks).min().unwrap_or(0);
    // Counted from the parameters' gradient requirement, independently of the optimizer's groups.
    let mut expected_trainable = Vec::new();
    for phase in &phases {
        let mut model = pretrained.clone().with_classes(dataset.classes.len()).train();
        freeze::freeze_to(&mut model, phase.frozen_blocks).expect("phase within the body");
        expected_trainable.push(freeze::trainable_params(&model));
    }

    let mut observer = Recorder::default();
    let trained = train::Training::new(pretrained, ModelKind::MobileNetV2, &dataset, &config)
        .run(device, &mut observer)
        .await?;
    let Recorder {
        losses,
        phases: phase_log,
        optimizer_state,
    } = observer;
    // Parameter tensors per body block and of the head, on a fresh model: nothing frozen there.
    let fresh = pretrained.clone().with_classes(dataset.classes.len()).train();
    let tensors_of_block: Vec<usize> = (0..num_blocks)
        .map(|index| param_tensors(&fresh, Some(index)))
        .collect();
    let head_tensors = param_tensors(&fresh, None);
    let expected_state = phases
        .iter()
        .filter(|_| on_cpu)
        .map(|phase| {
            (phase.frozen_blocks..num_blocks)
                .map(|block| GroupState {
                    block: Some(block),
                    tensors: 2 * tensors_of_block[block],
                })
                .chain([GroupState {
                    block: None,
                    tensors: 2 * head_tensors,
                }])
                .collect()
        })
        .collect();

    let frozen_max_change = if always_frozen > 0 && strategy.uses_pretrained_weights() {
        let mut max = 0.0f32;
        for index in 0..always_frozen {
            max = max.max(max_change(
                &block_floats(pretrained, index).await?,
                &block_floats(&trained.model, index).await?,
            ));
        }
        Some(max)
    } else {
        None
    };
    let last = num_blocks - 1;
    let last_block_max_change = max_change(
        &block_floats(pretrained, last).await?,
        &block_floats(&trained.model, last).await?,
    );
    Ok(StepsReport {
        summary: trained.summary,
        losses,
        phases: phase_log,
        expected_trainable,
        frozen_max_change,
        last_block_max_change,
        optimizer_state,
        expected_state,
    })
}

/// The parameter tensors of body block `index` (or of the head, `None`) that take a gradient.
fn param_tensors(model: &ImageClassifier, index: Option<usize>) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 += usize::from(param.is_require_grad());
        }
    }
    let mut count = Count(0);
    match index {
        Some(index) => model.visit_block(index, &mut count),
        None => model.classifier.visit(&mut count),
    }
    count.0
}

/// Every float of body block `index`, read back.
async fn block_floats(
    model: &ImageClassifier,
    index: usize,
) -> Result<Vec<f32>, graft_engine::readback::ReadbackError> {
    block_tensors(model, index, false).await
}

/// The floats of body block `index`, read back: all of them, or only the convolution kernels
/// (`kernels_only`: the 4-D tensors).
async fn block_tensors(
    model: &ImageClassifier,
    index: usize,
    kernels_only: bool,
) -> Result<Vec<f32>, graft_engine::readback::ReadbackError> {
    struct Collect {
        kernels_only: bool,
        tensors: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !self.kernels_only || D == 4 {
                self.tensors.push(param.val().flatten(0, D - 1));
            }
        }
    }
    let mut collect = Collect {
        kernels_only,
        tensors: Vec::new(),
    };
    model.visit_block(index, &mut collect);
    let mut all = Vec::new();
    for tensor in collect.tensors {
        all.extend(graft_engine::readback::to_f32_vec(tensor).await?);
    }
    Ok(all)
}

fn max_change(before: &[f32], after: &[f32]) -> f32 {
    assert_eq!(before.len(), after.len(), "the same block has the same size");
    before.iter().zip(after).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// What every few-steps run must show, whatever the device.
pub fn assert_few_steps(report: &StepsReport, strategy: Strategy) {
    let config = few_steps_config(strategy);
    assert_eq!(report.summary.epochs, config.epochs, "every planned epoch ran");
    assert!(!report.losses.is_empty() && report.losses.iter().all(|l| l.is_finite()));
    assert_eq!(
        report.phases.iter().map(|p| p.2).collect::<Vec<_>>(),
        report.expected_trainable,
        "the optimizer updates exactly the parameters that require a gradient"
    );
    assert!(report.summary.val_accuracy.is_some());
    assert_eq!(
        report.summary.confusion.iter().flatten().sum::<usize>(),
        4,
        "4 validation images"
    );
    if let Some(change) = report.frozen_max_change {
        assert_eq!(change, 0.0, "frozen blocks are bit-identical after training");
    }
    assert_eq!(
        report.optimizer_state, report.expected_state,
        "the optimizer holds two moments for every trainable tensor and nothing for frozen blocks"
    );
    let body_trains = !matches!(strategy, Strategy::HeadOnly);
    assert_eq!(
        report.last_block_max_change > 0.0,
        body_trains,
        "head_conv trains exactly when the strategy trains body blocks"
    );
}

/// Wall time of each epoch of a run, by phase, as the loop reports it (`Epoch` events), plus the time
/// spent filling caches: what the training benchmarks print.
#[derive(Debug, Clone, Default)]
pub struct EpochTimes {
    /// `(phase, seconds)` per epoch.
    pub epochs: Vec<(String, f64)>,
    /// Seconds from the first `Caching` event to the phase start it belongs to, summed.
    pub caching_seconds: f64,
    pub summary: Option<TrainSummary>,
}

/// Runs `config` on `dataset` from `pretrained` (MobileNetV2) and collects the epoch times.
pub async fn epoch_times(
    pretrained: &ImageClassifier,
    dataset: &Dataset,
    config: &TrainConfig,
    device: &Device,
    now_seconds: impl Fn() -> f64,
) -> Result<EpochTimes, TrainError> {
    let mut times = EpochTimes::default();
    let mut caching_since: Option<f64> = None;
    let observe = |event: TrainEvent| {
        match event {
            TrainEvent::Caching { .. } if caching_since.is_none() => caching_since = Some(now_seconds()),
            TrainEvent::PhaseStart { .. } => {
                if let Some(since) = caching_since.take() {
                    times.caching_seconds += now_seconds() - since;
                }
            }
            TrainEvent::Epoch { phase, seconds, .. } => times.epochs.push((phase, seconds)),
            TrainEvent::Done(summary) => times.summary = Some(summary),
            _ => {}
        }
        ControlFlow::Continue(())
    };
    train::Training::new(pretrained, ModelKind::MobileNetV2, dataset, config)
        .run(device, &mut Yielding(observe))
        .await?;
    Ok(times)
}

/// An observer closure that, in the browser, gives the page's event loop a turn between batches:
/// on the CPU backend nothing else in a run yields, and a page silent for 30 s is given up on.
struct Yielding<F>(F);

impl<F: FnMut(TrainEvent) -> ControlFlow<()>> train::TrainObserver for Yielding<F> {
    fn event(&mut self, event: TrainEvent) -> ControlFlow<()> {
        (self.0)(event)
    }

    async fn between_batches(&mut self) {
        #[cfg(target_arch = "wasm32")]
        graft_worker::yield_now().await;
    }
}

/// A run watched from outside: stopped after its first batch and after every epoch, and each time
/// resumed from its checkpoint, so that the model at each of those moments can be compared with the
/// next. (A resumed run starts its optimizer's moments afresh; the run is still one run: the same
/// split, order and schedule.)
pub struct Snapshots {
    /// The model after the first optimizer step.
    pub after_first_batch: ImageClassifier,
    /// Per completed epoch, in order: the phase it belonged to and the model at its end.
    pub epochs: Vec<(usize, ImageClassifier)>,
    pub first_batch_loss: f64,
    /// Per completed epoch: training loss and validation loss.
    pub epoch_losses: Vec<(f64, Option<f64>)>,
    /// `(epoch, best_epoch)` of every early stop.
    pub early_stops: Vec<(usize, usize)>,
    /// The phases the run announced.
    pub phases: Vec<train::PhaseInfo>,
    /// The finished run (its model is the kept one).
    pub trained: train::Trained,
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    FirstBatch,
    Epoch,
}

#[derive(Default)]
struct Watcher {
    phase: usize,
    first_batch_loss: Option<f64>,
    epoch_losses: Vec<(f64, Option<f64>)>,
    epoch_phases: Vec<usize>,
    early_stops: Vec<(usize, usize)>,
    phases: Vec<train::PhaseInfo>,
    stopped_at: Option<Stop>,
}

impl train::TrainObserver for Watcher {
    fn event(&mut self, event: TrainEvent) -> ControlFlow<()> {
        match event {
            TrainEvent::Started { phases, .. } => self.phases = phases,
            TrainEvent::PhaseStart { index, .. } => self.phase = index,
            TrainEvent::Batch { loss, .. } if self.first_batch_loss.is_none() => {
                self.first_batch_loss = Some(loss);
                self.stopped_at = Some(Stop::FirstBatch);
                return ControlFlow::Break(());
            }
            TrainEvent::Epoch {
                train_loss, val_loss, ..
            } => {
                self.epoch_losses.push((train_loss, val_loss));
                self.epoch_phases.push(self.phase);
                // A stop at the first batch of a one-batch epoch is also this epoch's end.
                if self.stopped_at.is_none() {
                    self.stopped_at = Some(Stop::Epoch);
                }
                return ControlFlow::Break(());
            }
            TrainEvent::EarlyStop { epoch, best_epoch, .. } => self.early_stops.push((epoch, best_epoch)),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Runs `config` on `dataset` from `pretrained` (a MobileNetV2) on the CPU backend, stopping and
/// resuming it as [`Snapshots`] describes.
pub async fn snapshots(
    pretrained: &ImageClassifier,
    dataset: &Dataset,
    config: &TrainConfig,
) -> Result<Snapshots, TrainError> {
    let device = Device::flex();
    let mut watcher = Watcher::default();
    let mut cache = graft_engine::cache::EmbeddingCache::new();
    let mut after_first_batch = None;
    let mut epochs = Vec::new();
    let mut result = train::Training::new(pretrained, ModelKind::MobileNetV2, dataset, config)
        .embeddings(&mut cache)
        .checkpoints_on(&device)
        .run(&device, &mut watcher)
        .await?;
    while result.summary.cancelled {
        let checkpoint = result
            .checkpoint
            .take()
            .expect("a cancelled checkpointed run keeps a checkpoint");
        match watcher.stopped_at.take().expect("only the watcher cancels") {
            Stop::FirstBatch => {
                after_first_batch = Some(checkpoint.model().clone());
                // The first batch was also the end of the first epoch.
                if watcher.epoch_phases.len() > epochs.len() {
                    epochs.push((watcher.phase, checkpoint.model().clone()));
                }
            }
            Stop::Epoch => epochs.push((watcher.phase, checkpoint.model().clone())),
        }
        result = train::Training::resume(checkpoint, ModelKind::MobileNetV2, dataset)
            .embeddings(&mut cache)
            .checkpoints_on(&device)
            .run(&device, &mut watcher)
            .await?;
    }
    assert_eq!(epochs.len(), watcher.epoch_losses.len(), "a snapshot for every epoch");
    Ok(Snapshots {
        after_first_batch: after_first_batch.expect("the run trained at least one batch"),
        epochs,
        first_batch_loss: watcher.first_batch_loss.expect("a first batch"),
        epoch_losses: watcher.epoch_losses,
        early_stops: watcher.early_stops,
        phases: watcher.phases,
        trained: result,
    })
}

/// The largest change of any float (parameters and BatchNorm statistics) of body block `index`, or of
/// the head (`None`), from `before` to `after`.
pub async fn block_change(
    before: &ImageClassifier,
    after: &ImageClassifier,
    index: Option<usize>,
) -> Result<f32, graft_engine::readback::ReadbackError> {
    Ok(match index {
        Some(index) => max_change(&block_floats(before, index).await?, &block_floats(after, index).await?),
        None => max_change(&head_floats(before).await?, &head_floats(after).await?),
    })
}

/// The largest change of body block `index`'s convolution kernels from `before` to `after`: what only
/// an optimizer step moves (a BatchNorm's running statistics move in any forward pass in training
/// mode).
pub async fn kernel_change(
    before: &ImageClassifier,
    after: &ImageClassifier,
    index: usize,
) -> Result<f32, graft_engine::readback::ReadbackError> {
    let kernels = block_tensors(before, index, true).await?;
    assert!(!kernels.is_empty(), "block {index} has convolutions");
    Ok(max_change(&kernels, &block_tensors(after, index, true).await?))
}

async fn head_floats(model: &ImageClassifier) -> Result<Vec<f32>, graft_engine::readback::ReadbackError> {
    let mut all = graft_engine::readback::to_f32_vec::<1>(model.classifier.weight.val().flatten(0, 1)).await?;
    if let Some(bias) = &model.classifier.bias {
        all.extend(graft_engine::readback::to_f32_vec(bias.val()).await?);
    }
    Ok(all)
}
