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
fn optimizer_holds_state_only_for_trainable_parameters_on_cpu() {
    let sizes = frozen_prefix::optimizer_state_sizes(&Device::flex().autodiff());
    println!("optimizer state tensors: {sizes:?}");
    frozen_prefix::assert_optimizer_holds_only_trainable(sizes);
}
