//! The frozen-prefix scenario in the browser, on WebGPU and on the CPU backend.

use burn::prelude::*;
use graft_tests::frozen_prefix;
use graft_worker::device::{self, ComputeChoice, ComputeDevice};
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

/// Fails (never skips) when the browser offers no WebGPU adapter.
#[wasm_bindgen_test]
async fn frozen_first_block_trains_five_steps_on_webgpu() {
    let compute = device::acquire(ComputeChoice::WebGpu).await;
    console_log!("compute device: {}", compute.label());
    let ComputeDevice::WebGpu {
        device,
        adapter,
        max_buffer_bytes,
        ..
    } = compute
    else {
        panic!("no WebGPU adapter in this browser: {}", compute.label());
    };
    console_log!("WebGPU adapter: {adapter}; largest buffer {max_buffer_bytes} bytes");
    assert!(
        max_buffer_bytes >= 128 << 20,
        "WebGPU guarantees 128 MiB bindings: {max_buffer_bytes}"
    );
    assert!(!adapter.starts_with("unnamed"), "the adapter has no name: {adapter}");
    let report = frozen_prefix::run(&device.clone().autodiff(), 5)
        .await
        .expect("read-back failed");
    console_log!("webgpu: {report:?}");
    frozen_prefix::assert_frozen_prefix_behaviour(&report);
    graft_tests::settle(&device).await;
}

#[wasm_bindgen_test]
async fn frozen_first_block_trains_five_steps_on_cpu_backend() {
    let device = Device::flex().autodiff();
    let report = frozen_prefix::run(&device, 5).await.expect("read-back failed");
    console_log!("cpu (flex): {report:?}");
    frozen_prefix::assert_frozen_prefix_behaviour(&report);
}

/// Reads the optimizer state back synchronously, which only the CPU backend can do in a browser.
#[wasm_bindgen_test]
fn optimizer_holds_state_only_for_trainable_parameters_on_cpu_backend() {
    let sizes = frozen_prefix::optimizer_state_sizes(&Device::flex().autodiff());
    console_log!("optimizer state tensors: {sizes:?}");
    frozen_prefix::assert_optimizer_holds_only_trainable(sizes);
}
