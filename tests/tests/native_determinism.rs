//! Training is deterministic for a seed on the CPU backend.
//!
//! Alone in its own test binary: Flex's seed is process-global, so a test drawing random numbers on
//! another thread at the same time would interleave with this one.
#![cfg(not(target_arch = "wasm32"))]

use burn::prelude::*;
use graft_tests::frozen_prefix;

#[test]
fn training_is_deterministic_for_a_seed_on_cpu() {
    let device = Device::flex().autodiff();
    let first = pollster::block_on(frozen_prefix::run(&device, 3)).expect("read-back failed");
    let second = pollster::block_on(frozen_prefix::run(&device, 3)).expect("read-back failed");
    assert_eq!(first.losses, second.losses);
    assert_eq!(first, second, "every measured figure repeats bit for bit");
}
