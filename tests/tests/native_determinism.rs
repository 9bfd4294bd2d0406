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
