//! The frozen-prefix scenario natively, on the CPU backend (Flex) with autodiff.
#![cfg(not(target_arch = "wasm32"))]

use burn::prelude::*;
use graft_tests::frozen_prefix;

#[test]
fn frozen_first_block_trains_five_steps_on_cpu() {
    let device = Device::flex().autodiff();
    let report = pollster::block_on(frozen_prefix::run(&device, 5)).expect("read-back failed");
    println!("cpu (flex): {report:?}");
    frozen_prefix::assert_frozen_prefix_behaviour(&report);
}

#[test]
fn training_is_deterministic_for_a_seed_on_cpu() {
    let device = Device::flex().autodiff();
    let first = pollster::block_on(frozen_prefix::run(&device, 2)).expect("read-back failed");
    let second = pollster::block_on(frozen_prefix::run(&device, 2)).expect("read-back failed");
    assert_eq!(first.losses, second.losses);
}
