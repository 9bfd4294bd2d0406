//! Training is deterministic for a seed on the CPU backend.
//!
//! In their own test binary, one at a time: Flex's seed is process-global, so a test drawing random
//! numbers on another thread at the same time would interleave with these.
#![cfg(not(target_arch = "wasm32"))]

use burn::prelude::*;
use graft_tests::frozen_prefix;

/// Held by each test: they draw from the one process-wide generator.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn training_is_deterministic_for_a_seed_on_cpu() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = Device::flex().autodiff();
    let first = pollster::block_on(frozen_prefix::run(&device, 3)).expect("read-back failed");
    let second = pollster::block_on(frozen_prefix::run(&device, 3)).expect("read-back failed");
    assert_eq!(first.losses, second.losses);
    assert_eq!(first, second, "every measured figure repeats bit for bit");
}

#[test]
fn the_training_loop_is_deterministic_for_a_seed_on_cpu() {
    use graft_engine::model::ModelKind;
    use graft_engine::strategy::Strategy;
    use graft_tests::{pretrained, training};

    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    // Staged: cached head phase, then a joint phase with BatchNorm training, dropout and shuffling.
    let run = || pollster::block_on(training::run_strategy(&model, Strategy::STAGED_DEFAULT, &device)).unwrap();
    let (first, second) = (run(), run());
    assert_eq!(first.losses, second.losses, "every batch loss repeats bit for bit");
    let strip = |mut s: graft_engine::train::TrainSummary| {
        s.seconds = 0.0;
        s
    };
    assert_eq!(strip(first.summary), strip(second.summary));
    assert_eq!(first.last_block_max_change, second.last_block_max_change);
}

/// Trains `config` on the fixture photos with host checkpoints, cancelling after batch `cancel_at`
/// (counted over the whole run); returns the batch losses seen and the result.
fn checkpointed(
    model: &graft_engine::model::ImageClassifier,
    config: &graft_engine::train::TrainConfig,
    cancel_at: Option<usize>,
) -> (Vec<f64>, graft_engine::train::Trained) {
    use graft_engine::model::ModelKind;
    use graft_engine::train::{self, TrainEvent};
    use graft_tests::training;
    use std::ops::ControlFlow;

    let device = Device::flex();
    let mut losses = Vec::new();
    let mut observer = |event: TrainEvent| match event {
        TrainEvent::Batch { loss, .. } => {
            losses.push(loss);
            if Some(losses.len()) == cancel_at {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        _ => ControlFlow::Continue(()),
    };
    let trained = pollster::block_on(
        train::Training::new(model, ModelKind::MobileNetV2, &training::photo_dataset(), config)
            .checkpoints_on(&device)
            .run(&device, &mut observer),
    )
    .expect("training runs");
    (losses, trained)
}

#[test]
fn a_stopped_run_resumes_from_its_checkpoint_exactly() {
    use graft_engine::model::ModelKind;
    use graft_engine::optim::OptimizerKind;
    use graft_engine::readback;
    use graft_engine::strategy::Strategy;
    use graft_engine::train::{self, TrainEvent};
    use graft_tests::{pretrained, training};
    use std::ops::ControlFlow;

    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    // Head-only on cached embeddings has no dropout, and plain SGD keeps no state beyond the
    // weights: the checkpoint is all there is, so the resumed run must repeat the uninterrupted one
    // bit for bit.
    let mut config = training::few_steps_config(Strategy::HeadOnly);
    config.epochs = 4;
    config.head_batch_size = Some(4);
    config.optimizer = OptimizerKind::Sgd {
        momentum: 0.0,
        weight_decay: 0.01,
    };
    let (all_losses, whole) = checkpointed(&model, &config, None);
    assert_eq!(all_losses.len(), 8, "4 epochs of 2 batches");
    assert!(whole.checkpoint.is_none(), "a finished run leaves no checkpoint");

    let (first_losses, stopped) = checkpointed(&model, &config, Some(3));
    assert!(stopped.summary.cancelled);
    assert_eq!(first_losses, all_losses[..3]);
    let checkpoint = stopped
        .checkpoint
        .expect("a cancelled checkpointed run keeps its checkpoint");
    assert_eq!(
        (checkpoint.epoch(), checkpoint.batches_done()),
        (2, 1),
        "{checkpoint:?}"
    );

    let mut rest = Vec::new();
    let mut started = 0;
    let mut observer = |event: TrainEvent| {
        match event {
            TrainEvent::Batch { loss, epoch, batch, .. } => rest.push((epoch, batch, loss)),
            TrainEvent::Started { .. } => started += 1,
            _ => {}
        }
        ControlFlow::Continue(())
    };
    let resumed = pollster::block_on(
        train::Training::resume(checkpoint, ModelKind::MobileNetV2, &training::photo_dataset())
            .run(&device, &mut observer),
    )
    .expect("resumes");
    assert_eq!(started, 0, "a resumed run does not start again");
    assert_eq!(
        rest.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        vec![(2, 2), (3, 1), (3, 2), (4, 1), (4, 2)],
        "it goes on with the batch after the checkpoint"
    );
    assert_eq!(
        rest.iter().map(|r| r.2).collect::<Vec<_>>(),
        all_losses[3..],
        "the same losses bit for bit"
    );
    let strip = |mut s: graft_engine::train::TrainSummary| {
        s.seconds = 0.0;
        s
    };
    assert_eq!(strip(resumed.summary), strip(whole.summary));
    let head = |m: &graft_engine::model::ImageClassifier| {
        pollster::block_on(readback::to_f32_vec(m.classifier.weight.val())).unwrap()
    };
    assert_eq!(head(&resumed.model), head(&whole.model), "the same head bit for bit");
}

#[test]
fn a_stopped_run_resumes_in_the_right_phase_with_frozen_blocks_untouched() {
    use graft_engine::model::ModelKind;
    use graft_engine::readback;
    use graft_engine::strategy::Strategy;
    use graft_engine::train::{self, TrainEvent};
    use graft_tests::{pretrained, training};
    use std::ops::ControlFlow;

    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    let floats = |m: &graft_engine::model::ImageClassifier, blocks: std::ops::Range<usize>| {
        let m = m.clone();
        blocks
            .flat_map(|i| {
                m.block_convs(i)
                    .into_iter()
                    .map(|c| pollster::block_on(readback::to_f32_vec(c.conv.weight.val().flatten::<1>(0, 3))).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    // (strategy, epochs, batch to stop after, the (phase, epoch, next batch) the run goes on at)
    let cases = [
        (Strategy::PartialFreeze { trainable_blocks: 3 }, 3, 3, (0, 2, 2)),
        // Staged, 3 epochs: one head epoch (cached, batches of 8: 1 batch), then two joint epochs of
        // 2 batches; stopping after the 2nd batch overall leaves the joint phase at epoch 2, batch 2.
        (Strategy::STAGED_DEFAULT, 3, 2, (1, 2, 2)),
    ];
    for (strategy, epochs, stop_after, (phase, epoch, next)) in cases {
        let mut config = training::few_steps_config(strategy);
        config.epochs = epochs;
        let (_, stopped) = checkpointed(&model, &config, Some(stop_after));
        let checkpoint = stopped.checkpoint.expect("kept");
        assert_eq!(
            (checkpoint.phase(), checkpoint.epoch(), checkpoint.batches_done() + 1),
            (phase, epoch, next),
            "{}: {checkpoint:?}",
            strategy.name()
        );
        let mut events = Vec::new();
        let mut observer = |event: TrainEvent| {
            events.push(event);
            ControlFlow::Continue(())
        };
        let resumed = pollster::block_on(
            train::Training::resume(checkpoint, ModelKind::MobileNetV2, &training::photo_dataset())
                .checkpoints_on(&device)
                .run(&device, &mut observer),
        )
        .expect("resumes");
        assert!(!events.iter().any(|e| matches!(e, TrainEvent::Started { .. })));
        let phase_starts: Vec<usize> = events
            .iter()
            .filter_map(|e| match e {
                TrainEvent::PhaseStart { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(phase_starts[0], phase, "{}: resumed in its phase", strategy.name());
        let first_batch = events.iter().find_map(|e| match e {
            TrainEvent::Batch { epoch, batch, .. } => Some((*epoch, *batch)),
            _ => None,
        });
        assert_eq!(first_batch, Some((epoch, next)), "{}", strategy.name());
        assert_eq!(resumed.summary.epochs, epochs, "{}: every epoch ran", strategy.name());
        assert!(!resumed.summary.cancelled);
        assert!(resumed.summary.val_accuracy.is_some());
        let frozen = model.block_names().len() - 3;
        if let Strategy::PartialFreeze { .. } = strategy {
            assert_eq!(
                floats(&resumed.model, 0..frozen),
                floats(&model, 0..frozen),
                "frozen blocks are the pretrained ones bit for bit"
            );
            assert_ne!(
                floats(&resumed.model, frozen..frozen + 3),
                floats(&model, frozen..frozen + 3)
            );
        }
    }
}

/// A partial-freeze run stopped after its third batch and resumed from the checkpoint trains what
/// the uninterrupted run trains, bit for bit: the same batch losses and every float of the blocks
/// that train (weights, BatchNorm statistics, head). Its steps draw dropout masks, shuffle the
/// pictures and move BatchNorm statistics; the masks come from the run's own random numbers, which
/// the checkpoint keeps (not from the device's, which a resumed run seeds anew). Plain SGD keeps no
/// optimizer state, so the checkpoint is all there is.
#[test]
fn a_stopped_run_with_dropout_resumes_bit_for_bit() {
    use graft_engine::model::ModelKind;
    use graft_engine::optim::OptimizerKind;
    use graft_engine::strategy::Strategy;
    use graft_engine::train::{self, TrainEvent};
    use graft_tests::{pretrained, training};
    use std::ops::ControlFlow;

    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    let mut config = training::few_steps_config(Strategy::PartialFreeze { trainable_blocks: 3 });
    config.epochs = 3;
    config.optimizer = OptimizerKind::Sgd {
        momentum: 0.0,
        weight_decay: 0.01,
    };
    assert!(model.dropout_probability() > 0.0);
    let (all_losses, whole) = checkpointed(&model, &config, None);
    assert_eq!(all_losses.len(), 6, "3 epochs of 2 batches");
    let (first_losses, stopped) = checkpointed(&model, &config, Some(3));
    assert_eq!(first_losses, all_losses[..3]);
    let checkpoint = stopped.checkpoint.expect("kept");

    let mut rest = Vec::new();
    let mut observer = |event: TrainEvent| {
        if let TrainEvent::Batch { loss, .. } = event {
            rest.push(loss);
        }
        ControlFlow::Continue(())
    };
    let resumed = pollster::block_on(
        train::Training::resume(checkpoint, ModelKind::MobileNetV2, &training::photo_dataset())
            .run(&device, &mut observer),
    )
    .expect("resumes");
    assert_eq!(rest, all_losses[3..], "the same losses bit for bit");
    let trained = |m: &graft_engine::model::ImageClassifier| {
        let start = m.block_names().len() - 3;
        pollster::block_on(graft_engine::peer::state(m, start)).expect("read-back")
    };
    let (resumed, whole) = (trained(&resumed.model), trained(&whole.model));
    let differing = resumed.iter().zip(&whole).filter(|(a, b)| a != b).count();
    assert_eq!(
        differing,
        0,
        "{differing} of {} floats of the trained blocks differ",
        whole.len()
    );
}

/// An out-of-memory mid-run (WebGPU reports it out of band; here it is reported the same way, as
/// no device on this machine runs out) stops the run with its checkpoint and the batch size that
/// did not fit; the run goes on from there in smaller batches, through every image of every epoch.
#[test]
fn an_out_of_memory_stops_at_a_checkpoint_and_the_run_goes_on_in_smaller_batches() {
    use graft_engine::model::ModelKind;
    use graft_engine::readback::{self, DeviceFault};
    use graft_engine::strategy::Strategy;
    use graft_engine::train::{self, TrainError, TrainEvent};
    use graft_tests::{pretrained, training};
    use std::ops::ControlFlow;

    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    let mut config = training::few_steps_config(Strategy::FullFineTune);
    config.epochs = 2;
    config.batch_size = 4;
    let dataset = training::photo_dataset();

    let mut batches = Vec::new();
    let mut observer = |event: TrainEvent| {
        if let TrainEvent::Batch {
            epoch,
            batch,
            batches: of,
            ..
        } = event
        {
            batches.push((epoch, batch, of));
            if batches.len() == 1 {
                // What the app's WebGPU error handler does when a buffer cannot be allocated.
                readback::report_fault(DeviceFault::OutOfMemory("Out of Memory (test)".into()));
            }
        }
        ControlFlow::Continue(())
    };
    let error = pollster::block_on(
        train::Training::new(&model, ModelKind::MobileNetV2, &dataset, &config)
            .checkpoints_on(&device)
            .run(&device, &mut observer),
    )
    .err()
    .expect("the run stops");
    assert_eq!(batches, [(1, 1, 2)], "it stops at the read-back after the fault");
    let TrainError::OutOfMemory {
        message,
        batch_size,
        checkpoint,
    } = error
    else {
        panic!("an out-of-memory error, not {error}");
    };
    assert_eq!((message.as_str(), batch_size), ("Out of Memory (test)", 4));
    let checkpoint = checkpoint.expect("the last completed batch's checkpoint");
    assert_eq!(
        (checkpoint.epoch(), checkpoint.batches_done()),
        (1, 1),
        "{checkpoint:?}"
    );

    let mut rest = Vec::new();
    let mut epochs = Vec::new();
    let mut observer = |event: TrainEvent| {
        match event {
            TrainEvent::Batch {
                epoch, batch, batches, ..
            } => rest.push((epoch, batch, batches)),
            TrainEvent::Epoch { epoch, .. } => epochs.push(epoch),
            _ => {}
        }
        ControlFlow::Continue(())
    };
    let resumed = pollster::block_on(
        train::Training::resume(
            checkpoint.with_batch_size(batch_size / 2),
            ModelKind::MobileNetV2,
            &dataset,
        )
        .checkpoints_on(&device)
        .run(&device, &mut observer),
    )
    .expect("goes on in smaller batches");
    assert_eq!(
        rest,
        [(1, 2, 3), (1, 3, 3), (2, 1, 4), (2, 2, 4), (2, 3, 4), (2, 4, 4)],
        "the 4 images left of epoch 1 in 2 batches of 2, then epoch 2 in 4"
    );
    assert_eq!(epochs, [1, 2]);
    assert_eq!(resumed.summary.epochs, 2);
    assert!(!resumed.summary.cancelled);
    assert!(resumed.summary.val_accuracy.is_some());
}
