//! The training loop natively on the CPU backend: every strategy for a few steps, then the loop's
//! behaviours (caching, early stopping, cancelling, validation, the model file) and head-only on real
//! photos.
#![cfg(not(target_arch = "wasm32"))]

use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard, PoisonError};

use burn::prelude::*;
use graft_engine::bundle::{self, BundleError, BundleHeader};
use graft_engine::data;
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::peer;
use graft_engine::readback;
use graft_engine::strategy::Strategy;
use graft_engine::train::{self, CacheKind, TrainConfig, TrainEvent};
use graft_engine::weights::WeightsError;
use graft_tests::{datasets, pretrained, training};

fn cpu() -> Device {
    Device::flex()
}

/// Burn's CPU backend draws its random numbers (a new network's weights; not the training steps'
/// dropout masks, which come from the run's own seed) from one process-wide generator that each run
/// seeds: tests training side by side interleave their draws,
/// so a run's initial weights depended on what the other test thread did (a network from scratch
/// then started anywhere between loss 0.60 and 0.86 and sometimes did not learn in 16 steps). Each
/// test here holds this while it runs, so every run is the one its seed says.
static RANDOM: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    RANDOM.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_strategy(strategy: Strategy) {
    let device = cpu();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    let report = pollster::block_on(training::run_strategy(&model, strategy, &device)).expect("training runs");
    println!(
        "{}: losses {:?}, phases {:?}, val accuracy {:?}, frozen change {:?}, head_conv change {:.2e}",
        strategy.name(),
        report.losses,
        report.phases,
        report.summary.val_accuracy,
        report.frozen_max_change,
        report.last_block_max_change
    );
    training::assert_few_steps(&report, strategy);
}

#[test]
fn head_only_trains_the_head_on_cached_embeddings() {
    let _serial = serial();
    check_strategy(Strategy::HeadOnly);
}

#[test]
fn partial_freeze_trains_the_top_blocks_on_cached_boundary_activations() {
    let _serial = serial();
    check_strategy(Strategy::PartialFreeze { trainable_blocks: 3 });
}

#[test]
fn staged_trains_the_head_then_everything() {
    let _serial = serial();
    check_strategy(Strategy::STAGED_DEFAULT);
}

#[test]
fn full_fine_tune_trains_every_block() {
    let _serial = serial();
    check_strategy(Strategy::FullFineTune);
}

#[test]
fn from_scratch_trains_a_random_network() {
    let _serial = serial();
    check_strategy(Strategy::FromScratch);
}

#[test]
fn caches_are_used_where_nothing_before_them_trains() {
    let _serial = serial();
    let device = cpu();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).unwrap();
    let caches = |strategy| {
        let report = pollster::block_on(training::run_strategy(&model, strategy, &device)).unwrap();
        (
            report.phases.iter().map(|p| p.1).collect::<Vec<_>>(),
            report.last_block_max_change,
        )
    };
    let (head_only, head_conv_change) = caches(Strategy::HeadOnly);
    assert_eq!(head_only, vec![CacheKind::Embeddings]);
    assert_eq!(head_conv_change, 0.0, "head-only leaves the whole body untouched");
    let (partial, head_conv_change) = caches(Strategy::PartialFreeze { trainable_blocks: 3 });
    assert_eq!(partial, vec![CacheKind::Boundary]);
    assert!(head_conv_change > 0.0, "the top blocks train");
    let (staged, _) = caches(Strategy::STAGED_DEFAULT);
    assert_eq!(staged, vec![CacheKind::Embeddings, CacheKind::None]);
}

#[test]
fn augmentation_turns_caching_off_and_says_so() {
    let _serial = serial();
    let device = cpu();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).unwrap();
    let mut config = training::few_steps_config(Strategy::HeadOnly);
    config.augment = true;
    let mut events = Vec::new();
    let mut observer = |event: TrainEvent| {
        events.push(event);
        ControlFlow::Continue(())
    };
    pollster::block_on(
        train::Training::new(&model, ModelKind::MobileNetV2, &training::photo_dataset(), &config)
            .run(&device, &mut observer),
    )
    .unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TrainEvent::Notice { message } if message.contains("Augmentation is on")))
    );
    // No cache: the frozen body runs every batch, on the CPU kernels (the CPU backend's frozen path).
    assert!(events.iter().any(|e| matches!(
        e,
        TrainEvent::PhaseStart {
            cache: CacheKind::Kernels,
            ..
        }
    )));
}

#[test]
fn a_cancel_stops_between_batches_and_keeps_what_was_trained() {
    let _serial = serial();
    let device = cpu();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).unwrap();
    let mut config = training::few_steps_config(Strategy::FullFineTune);
    config.epochs = 5;
    let mut batches = 0;
    let mut done = None;
    let mut observer = |event: TrainEvent| match event {
        TrainEvent::Batch { .. } => {
            batches += 1;
            // Epoch 1 has 2 batches (8 training images, batches of 4): cancel inside epoch 2.
            if batches == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        TrainEvent::Done(summary) => {
            done = Some(summary);
            ControlFlow::Continue(())
        }
        _ => ControlFlow::Continue(()),
    };
    let trained = pollster::block_on(
        train::Training::new(&model, ModelKind::MobileNetV2, &training::photo_dataset(), &config)
            .run(&device, &mut observer),
    )
    .unwrap();
    assert_eq!(batches, 3, "no batch runs after the cancel");
    assert!(trained.summary.cancelled);
    assert_eq!(trained.summary.epochs, 1, "the interrupted epoch does not count");
    assert_eq!(
        trained.summary.best_epoch,
        Some(1),
        "the model of the completed epoch is kept"
    );
    assert_eq!(done.as_ref(), Some(&trained.summary), "the last event is the summary");
}

#[test]
fn degenerate_datasets_and_settings_are_refused_with_reasons() {
    let _serial = serial();
    let device = cpu();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).unwrap();
    let run = |dataset: &data::Dataset, config: &TrainConfig| {
        let mut observer = |_: TrainEvent| ControlFlow::Continue(());
        pollster::block_on(
            train::Training::new(&model, ModelKind::MobileNetV2, dataset, config).run(&device, &mut observer),
        )
        .err()
        .map(|e| e.to_string())
    };
    let config = training::few_steps_config(Strategy::HeadOnly);
    let mut one_class = training::photo_dataset();
    one_class.examples.retain(|e| e.label == 0);
    one_class.classes.truncate(1);
    assert_eq!(
        run(&one_class, &config).unwrap(),
        "there is only one class (\"living\"): a classifier needs at least two classes to tell apart"
    );
    let mut empty_class = training::photo_dataset();
    empty_class.classes.push("plants".into());
    assert_eq!(
        run(&empty_class, &config).unwrap(),
        "class \"plants\" has no images: add some or remove the class"
    );
    let too_many = training::few_steps_config(Strategy::PartialFreeze { trainable_blocks: 40 });
    assert_eq!(
        run(&training::photo_dataset(), &too_many).unwrap(),
        "40 trainable blocks requested, but the model has 19"
    );
    let mut zero_batch = training::few_steps_config(Strategy::HeadOnly);
    zero_batch.batch_size = 0;
    assert_eq!(
        run(&training::photo_dataset(), &zero_batch).unwrap(),
        "the batch size must be at least 1"
    );
}

#[test]
fn a_model_file_round_trips_and_damage_is_refused() {
    let _serial = serial();
    let device = cpu();
    let model = pretrained::load(ModelKind::MobileNetV2, &device)
        .unwrap()
        .with_classes(3);
    let classes = vec!["a".to_string(), "b".into(), "c".into()];
    let bytes = bundle::encode(BundleHeader::new(ModelKind::MobileNetV2, classes.clone(), 224), &model).unwrap();
    let (header, loaded) = bundle::decode("model.graft", &bytes, &device).unwrap();
    assert_eq!(header.classes, classes);
    assert_eq!(header.resize_short_side, 256);
    let image = preprocess_photo();
    let logits = |m: &graft_engine::model::ImageClassifier| {
        pollster::block_on(readback::to_f32_vec(m.forward(header.input(&image, &device)))).unwrap()
    };
    assert_eq!(logits(&model), logits(&loaded), "the same weights give the same logits");

    let truncated = &bytes[..bytes.len() - 100];
    assert!(matches!(
        bundle::decode("model.graft", truncated, &device),
        Err(BundleError::Weights(WeightsError::SizeMismatch { .. }))
    ));
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(
        bundle::decode("model.graft", &flipped, &device),
        Err(BundleError::Weights(WeightsError::Sha256Mismatch { .. }))
    ));
    assert!(matches!(
        bundle::decode("notes.txt", b"hello", &device),
        Err(BundleError::NotABundle { .. })
    ));
    assert!(matches!(
        bundle::decode("model.graft", &bytes[..20], &device),
        Err(BundleError::Truncated { .. })
    ));
}

fn preprocess_photo() -> image::RgbImage {
    graft_engine::preprocess::decode(graft_tests::golden::CROPS[0].1).unwrap()
}

#[test]
fn head_only_on_real_photos_reaches_high_validation_accuracy() {
    let _serial = serial();
    // 209 Tux Paint photo cut-outs in 6 classes (birds, flowers, fruit, insects, mammals, vegetables).
    let device = cpu();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).unwrap();
    let (dataset, skipped) = data::read_folder(&datasets::path("tuxpaint-photos"), 224, None).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    let config = TrainConfig::new(Strategy::HeadOnly);
    let mut observer = |_: TrainEvent| ControlFlow::Continue(());
    let trained = pollster::block_on(
        train::Training::new(&model, ModelKind::MobileNetV2, &dataset, &config).run(&device, &mut observer),
    )
    .unwrap();
    let summary = &trained.summary;
    println!(
        "head-only on tuxpaint-photos: val accuracy {:.3} after {} epochs (best {:?}), {:.1} s; per class {:?}",
        summary.val_accuracy.unwrap(),
        summary.epochs,
        summary.best_epoch,
        summary.seconds,
        summary.per_class_accuracy
    );
    assert!(summary.val_accuracy.unwrap() >= 0.75, "{summary:?}");
    assert_eq!(summary.val_images.len(), summary.val_predictions.len());
}

#[test]
fn an_unbalanced_dataset_is_called_out() {
    let _serial = serial();
    use graft_engine::train::imbalance_notice;
    let mut dataset = training::photo_dataset();
    assert_eq!(imbalance_notice(&dataset), None, "6 and 6 are balanced");
    let extra: Vec<_> = dataset.examples.iter().filter(|e| e.label == 0).cloned().collect();
    for _ in 0..4 {
        dataset.examples.extend(extra.iter().cloned());
    }
    dataset.examples.retain({
        let mut kept_objects = 0;
        move |e| {
            if e.label == 1 {
                kept_objects += 1;
                kept_objects <= 5
            } else {
                true
            }
        }
    });
    // 30 living things, 5 objects.
    let notice = imbalance_notice(&dataset).expect("30 vs 5 is called out");
    assert!(
        notice.contains("\"living\" has 30 images, \"object\" only 5"),
        "{notice}"
    );
}

#[test]
fn batches_too_large_for_the_device_are_made_smaller_and_said() {
    let _serial = serial();
    let device = cpu();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).unwrap();
    let architecture = ModelKind::MobileNetV2.architecture();
    // The widest tensor of MobileNetV2: block 1's expansion, 16 x 6 = 96 channels at 112 x 112.
    assert_eq!(architecture.largest_activation(224), 96 * 112 * 112);
    assert_eq!(architecture.largest_activation(64), 96 * 32 * 32);
    let mut config = training::few_steps_config(Strategy::FullFineTune);
    // A device whose buffers hold 3 images' activations at 64 px; 4 were asked for.
    config.max_buffer_bytes = Some(3 * 4 * 96 * 32 * 32 + 100);
    let mut notices = Vec::new();
    let mut batches = Vec::new();
    let mut observer = |event: TrainEvent| {
        match event {
            TrainEvent::Notice { message } => notices.push(message),
            TrainEvent::Batch { batches: n, .. } => batches.push(n),
            _ => {}
        }
        ControlFlow::Continue(())
    };
    pollster::block_on(
        train::Training::new(&model, ModelKind::MobileNetV2, &training::photo_dataset(), &config)
            .run(&device, &mut observer),
    )
    .unwrap();
    println!("notices: {notices:?}");
    assert!(
        notices
            .iter()
            .any(|m| m.contains("A batch of 4 images") && m.contains("batches of 3 instead")),
        "{notices:?}"
    );
    assert_eq!(batches, vec![3, 3, 3], "8 training images in batches of 3");
}

/// The BatchNorms of trained blocks either keep the pretrained statistics (their scale and shift
/// still learn) or train on each batch's, updating the running ones; staged unfreezing keeps them by
/// default, the other strategies use each batch's.
#[test]
fn trained_batch_norms_keep_the_pretrained_statistics_or_follow_the_batches() {
    let _serial = serial();
    use graft_engine::train::BatchNormStatistics;

    let device = cpu();
    let pretrained = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    let dataset = training::photo_dataset();
    let floats = |tensor: Tensor<1>| tensor.into_data().try_to_vec::<f32>().expect("f32");
    let largest_change = |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let run = |batch_norm: Option<BatchNormStatistics>| {
        let mut config = training::few_steps_config(Strategy::FullFineTune);
        config.batch_norm = batch_norm;
        let trained = pollster::block_on(
            train::Training::new(&pretrained, ModelKind::MobileNetV2, &dataset, &config)
                .run(&device, &mut |_: TrainEvent| ControlFlow::Continue(())),
        )
        .expect("training runs");
        let (before, after) = (&pretrained.head_conv.norm, &trained.model.head_conv.norm);
        let statistics = largest_change(floats(before.running_mean.value()), floats(after.running_mean.value())).max(
            largest_change(floats(before.running_var.value()), floats(after.running_var.value())),
        );
        let scale = largest_change(floats(before.gamma.val()), floats(after.gamma.val()));
        (statistics, scale)
    };

    let default = |strategy| TrainConfig::new(strategy).batch_norm_statistics();
    assert_eq!(default(Strategy::STAGED_DEFAULT), BatchNormStatistics::Running);
    for strategy in [
        Strategy::PartialFreeze { trainable_blocks: 3 },
        Strategy::FullFineTune,
        Strategy::FromScratch,
    ] {
        assert_eq!(default(strategy), BatchNormStatistics::Batch, "{strategy:?}");
    }
    let (statistics, scale) = run(Some(BatchNormStatistics::Running));
    println!("running: statistics moved {statistics:e}, scale moved {scale:e}");
    assert_eq!(statistics, 0.0, "the pretrained statistics are kept");
    assert!(scale > 1e-6, "the BatchNorm's scale still learns: {scale}");
    let (statistics, scale) = run(Some(BatchNormStatistics::Batch));
    println!("batch: statistics moved {statistics:e}, scale moved {scale:e}");
    assert!(
        statistics > 1e-4,
        "each batch's statistics update the running ones: {statistics}"
    );
    assert!(scale > 1e-6, "{scale}");
}

/// Every strategy learns on the photo set and moves exactly what it trains, phase by phase: the
/// blocks a phase keeps frozen stay bit-identical through it (BatchNorm statistics included), the
/// convolution kernels of every block it trains and the head change, and the training loss ends well
/// below the first batch's.
///
/// `frozen` is what each phase must keep frozen, from the strategy's definition (MobileNetV2's 19
/// body blocks).
fn check_learning(strategy: Strategy, epochs: usize, frozen: &[usize]) {
    let device = cpu();
    let pretrained = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    let mut config = training::few_steps_config(strategy);
    config.epochs = epochs;
    let dataset = training::photo_dataset();
    // Learning, judged on a run as the app makes it.
    let (mut first_batch_loss, mut last_train_loss) = (None, 0.0);
    let mut observer = |event: TrainEvent| {
        match event {
            TrainEvent::Batch { loss, .. } => {
                first_batch_loss.get_or_insert(loss);
            }
            TrainEvent::Epoch { train_loss, .. } => last_train_loss = train_loss,
            _ => {}
        }
        ControlFlow::Continue(())
    };
    pollster::block_on(
        train::Training::new(&pretrained, ModelKind::MobileNetV2, &dataset, &config).run(&device, &mut observer),
    )
    .expect("training runs");
    let first_batch_loss = first_batch_loss.expect("a batch ran");
    println!(
        "{}: first batch loss {first_batch_loss:.3}, last epoch's training loss {last_train_loss:.3}",
        strategy.name()
    );
    assert!(
        last_train_loss < 0.75 * first_batch_loss,
        "{}: the last epoch's training loss {last_train_loss:.3} is not clearly below the first batch's {first_batch_loss:.3}",
        strategy.name()
    );
    // What moved in which phase, judged on the same run stopped after its first batch and after
    // every epoch to look at the model.
    let run = pollster::block_on(training::snapshots(&pretrained, &dataset, &config)).expect("training runs");
    let blocks = pretrained.block_names().len();
    let change = |before: &ImageClassifier, after: &ImageClassifier, index: Option<usize>| {
        pollster::block_on(training::block_change(before, after, index)).unwrap()
    };
    assert_eq!(run.epochs.len(), epochs, "every epoch ran");
    assert_eq!(
        run.phases.iter().map(|p| p.frozen_blocks).collect::<Vec<_>>(),
        frozen,
        "{}: the phases freeze what the strategy says",
        strategy.name()
    );
    for (index, phase) in run.phases.iter().enumerate() {
        // The model where the phase starts: after the first step for the first phase (a new head is
        // random; from scratch, so is the body), the previous phase's last epoch otherwise.
        let start = run
            .epochs
            .iter()
            .rev()
            .find(|(p, _)| *p < index)
            .map_or(&run.after_first_batch, |(_, model)| model);
        let (_, end) = run
            .epochs
            .iter()
            .rev()
            .find(|(p, _)| *p == index)
            .expect("the phase ran");
        for block in 0..blocks {
            let moved = change(start, end, Some(block));
            if block < phase.frozen_blocks {
                assert_eq!(
                    moved,
                    0.0,
                    "{} phase {}: frozen block {block} changed",
                    strategy.name(),
                    phase.name
                );
                if index == 0 && strategy.uses_pretrained_weights() {
                    assert_eq!(
                        change(&pretrained, end, Some(block)),
                        0.0,
                        "{}: frozen block {block} is not the pretrained one",
                        strategy.name()
                    );
                }
            } else {
                let moved = pollster::block_on(training::kernel_change(start, end, block)).unwrap();
                assert!(
                    moved > 0.0,
                    "{} phase {}: trained block {block}'s kernels did not move",
                    strategy.name(),
                    phase.name
                );
            }
        }
        assert!(
            change(start, end, None) > 0.0,
            "{} phase {}: the head did not move",
            strategy.name(),
            phase.name
        );
    }
}

#[test]
fn head_only_learns_and_moves_only_the_head() {
    let _serial = serial();
    check_learning(Strategy::HeadOnly, 4, &[19]);
}

#[test]
fn partial_freeze_learns_and_moves_only_its_top_blocks() {
    let _serial = serial();
    check_learning(Strategy::PartialFreeze { trainable_blocks: 3 }, 4, &[16]);
}

#[test]
fn staged_trains_the_head_alone_then_the_unfrozen_blocks() {
    let _serial = serial();
    check_learning(
        Strategy::Staged {
            head_epochs: 2,
            unfreeze_blocks: Some(4),
            lr_mult: 10.0,
        },
        5,
        &[19, 15],
    );
}

#[test]
fn full_fine_tune_learns_and_moves_every_block() {
    let _serial = serial();
    check_learning(Strategy::FullFineTune, 8, &[0]);
}

#[test]
fn from_scratch_learns_and_moves_every_block() {
    let _serial = serial();
    check_learning(Strategy::FromScratch, 8, &[0]);
}

/// The model kept after early stopping is the best epoch's, bit for bit, not the last one's.
#[test]
fn early_stopping_keeps_the_best_epochs_model() {
    let _serial = serial();
    let device = cpu();
    let pretrained = pretrained::load(ModelKind::MobileNetV2, &device).unwrap();
    let mut config = training::few_steps_config(Strategy::FullFineTune);
    config.epochs = 12;
    config.patience = Some(2);
    config.lr = Some(EARLY_STOP_LR);
    let run = pollster::block_on(training::snapshots(&pretrained, &training::photo_dataset(), &config)).unwrap();
    println!(
        "early stopping: epochs {:?}, stops {:?}, kept {:?}",
        run.epoch_losses, run.early_stops, run.trained.summary.best_epoch
    );
    let [(stopped, best)] = run.early_stops[..] else {
        panic!("the run stopped early once: {:?}", run.early_stops);
    };
    assert_eq!(run.trained.summary.best_epoch, Some(best));
    assert_eq!(run.trained.summary.epochs, stopped);
    assert!(best < stopped);
    let kept = &run.trained.model;
    let differs = |other: &ImageClassifier| {
        (0..pretrained.block_names().len())
            .map(Some)
            .chain([None])
            .map(|block| pollster::block_on(training::block_change(kept, other, block)).unwrap())
            .fold(0.0f32, f32::max)
    };
    assert_eq!(
        differs(&run.epochs[best - 1].1),
        0.0,
        "the kept model is epoch {best}'s"
    );
    assert!(
        differs(&run.epochs[stopped - 1].1) > 0.0,
        "the last epoch's model differs from the best one's"
    );
    assert_eq!(
        run.trained.summary.val_loss,
        run.epoch_losses[best - 1].1,
        "the summary reports the kept epoch's validation"
    );
}

/// A learning rate at which the photo set's validation stops improving within a few epochs
/// (measured: `early_stopping_keeps_the_best_epochs_model` prints the epochs).
const EARLY_STOP_LR: f64 = 1e-2;

/// A boundary cache that would not fit the memory budget is not built: the run says so, recomputes
/// the frozen prefix every epoch instead, and trains as the cached run does (the same batches, the
/// loss falling).
#[test]
fn a_boundary_cache_over_the_memory_budget_is_recomputed_instead_and_the_run_trains() {
    let _serial = serial();
    let device = cpu();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).unwrap();
    let run = |budget: u64| {
        let mut config = training::few_steps_config(Strategy::PartialFreeze { trainable_blocks: 3 });
        config.epochs = 2;
        config.cache_budget_bytes = budget;
        let (mut notices, mut caches, mut losses) = (Vec::new(), Vec::new(), Vec::new());
        let mut observer = |event: TrainEvent| {
            match event {
                TrainEvent::Notice { message } => notices.push(message),
                TrainEvent::PhaseStart { cache, .. } => caches.push(cache),
                TrainEvent::Batch { loss, .. } => losses.push(loss),
                _ => {}
            }
            ControlFlow::Continue(())
        };
        let trained = pollster::block_on(
            train::Training::new(&model, ModelKind::MobileNetV2, &training::photo_dataset(), &config)
                .run(&device, &mut observer),
        )
        .unwrap();
        (notices, caches, losses, trained.summary)
    };
    let (notices, caches, cached_losses, cached) = run(1 << 30);
    assert_eq!(caches, [CacheKind::Boundary]);
    assert!(!notices.iter().any(|m| m.contains("budget")), "{notices:?}");
    // 12 pictures' boundary activations at 64 px take some KiB: a budget of 1 KiB is too small.
    let (notices, caches, losses, summary) = run(1024);
    println!("over the budget: {notices:?}; losses {losses:?} vs cached {cached_losses:?}");
    // Recomputed: the frozen blocks run every batch, on the CPU kernels on this backend.
    assert_eq!(caches, [CacheKind::Kernels]);
    assert!(
        notices
            .iter()
            .any(|m| m.contains("budget") && m.contains("recomputed every epoch instead")),
        "{notices:?}"
    );
    // The same batches, and the run learns as the cached one does. (The losses themselves are not
    // compared: the new head's initial weights come from the process-wide generator, which the other
    // tests of this binary draw from at the same time.)
    assert_eq!(losses.len(), cached_losses.len(), "the same batches");
    assert_eq!(summary.epochs, cached.epochs);
    assert!(summary.val_accuracy.is_some());
    for run in [&losses, &cached_losses] {
        assert!(run[run.len() - 1] < 0.8 * run[0], "the loss falls: {run:?}");
    }
}

/// The CPU backend's own training operations agree with Burn's, values and every gradient, through a
/// whole inverted residual block (the same check runs in the browser on wasm's products).
#[test]
fn the_cpu_training_operations_agree_with_burns_through_a_block() {
    for (batch, inputs, expanded, size) in [(2, 8, 48, 12), (3, 24, 144, 9), (1, 300, 70, 5)] {
        let differences = graft_tests::cpu_ops::inverted_residual_against_burn(batch, inputs, expanded, size);
        println!("{batch}x{inputs}->{expanded} at {size}px: {differences:?}");
        differences.assert_within(1e-4);
    }
}

/// A peer on this thread: a [`peer::Replica`] that answers its first `answers` parts (each part
/// cloned into its future), fails the next and is not ready after that.
struct ThreadPeer {
    replica: std::rc::Rc<std::cell::RefCell<Option<peer::Replica>>>,
    asked: std::cell::Cell<usize>,
    answers: usize,
}

impl ThreadPeer {
    fn new(answers: usize) -> Self {
        Self {
            replica: std::rc::Rc::new(std::cell::RefCell::new(Some(peer::Replica::new(cpu())))),
            asked: std::cell::Cell::new(0),
            answers,
        }
    }
}

impl peer::Peer for ThreadPeer {
    fn ready(&self) -> bool {
        self.asked.get() <= self.answers
    }

    fn run(&self, part: &peer::PartRequest) -> peer::PartFuture {
        let asked = self.asked.replace(self.asked.get() + 1);
        let (part, replica, answers) = (part.clone(), self.replica.clone(), self.answers);
        Box::pin(async move {
            if asked >= answers {
                return Err(peer::PeerError::Failed("the failure the test asked for".into()));
            }
            let mut held = replica.take().expect("one part at a time");
            let answer = held.run(&part).await;
            replica.replace(Some(held));
            answer
        })
    }
}

/// Partial freezing of 3 blocks for 4 epochs (the photo fixture twice over: 24 pictures, a third held
/// out; batches of 16, so each epoch a step split in two parts and the rest of the epoch's pictures as
/// one part), with steps in parts or whole and `peer` installed: the batch losses and the trained
/// model's full state.
fn run_in_parts(in_parts: bool, peer: Option<std::rc::Rc<ThreadPeer>>) -> (Vec<f64>, Vec<f32>) {
    let device = cpu();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).unwrap();
    let mut config = training::few_steps_config(Strategy::PartialFreeze { trainable_blocks: 3 });
    config.epochs = 4;
    config.batch_size = 16;
    let mut dataset = training::photo_dataset();
    dataset.examples.extend(dataset.examples.clone());
    peer::set_steps_in_parts(in_parts);
    peer::install(peer.map(|peer| peer as std::rc::Rc<dyn peer::Peer>));
    let mut losses = Vec::new();
    let mut observer = |event: TrainEvent| {
        if let TrainEvent::Batch { loss, .. } = event {
            losses.push(loss);
        }
        ControlFlow::Continue(())
    };
    let trained = pollster::block_on(
        train::Training::new(&model, ModelKind::MobileNetV2, &dataset, &config).run(&device, &mut observer),
    )
    .unwrap();
    peer::install(None);
    peer::set_steps_in_parts(false);
    (losses, pollster::block_on(peer::state(&trained.model, 0)).unwrap())
}

/// The browser's CPU backend computes each step in two parts, the second on its replica when that
/// pays: the model trained is the same, bit for bit, whether the second part ran here, on a peer, or
/// on a peer that failed midway (its part then computed here); and it is not the model whole steps
/// train (ghost BatchNorm over half batches, a dropout mask per part).
#[test]
fn steps_in_parts_train_the_same_model_wherever_the_second_part_runs() {
    let _serial = serial();
    let here = run_in_parts(true, None);
    let helper = std::rc::Rc::new(ThreadPeer::new(usize::MAX));
    let on_peer = run_in_parts(true, Some(helper.clone()));
    let failing = std::rc::Rc::new(ThreadPeer::new(1));
    let on_failing_peer = run_in_parts(true, Some(failing.clone()));
    let whole = run_in_parts(false, None);
    println!(
        "losses: here {:?}, on a peer {:?} ({} parts), failing {:?} ({} asked), whole {:?}",
        here.0,
        on_peer.0,
        helper.asked.get(),
        on_failing_peer.0,
        failing.asked.get(),
        whole.0
    );
    assert_eq!(here.0.len(), 8, "two steps an epoch");
    // The tuner measures both ways: the second and fourth split steps' parts went to the peer.
    assert_eq!(helper.asked.get(), 2, "parts sent to the peer");
    assert_eq!(failing.asked.get(), 2, "parts sent to the peer that fails its second");
    assert!(here == on_peer, "a peer's parts changed the training");
    assert!(here == on_failing_peer, "a failed peer's parts changed the training");
    assert_ne!(here.0, whole.0, "steps in parts trained as whole steps");
}
