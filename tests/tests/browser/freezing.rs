//! Freezing on WebGPU: the first four MobileNetV2 blocks frozen, three AdamW steps.

use graft_tests::freezing;
use graft_worker::device::{self, ComputeChoice, ComputeDevice};
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

#[wasm_bindgen_test]
async fn frozen_blocks_stay_bit_identical_on_webgpu() {
    let ComputeDevice::WebGpu { device, .. } = device::acquire(ComputeChoice::WebGpu).await else {
        panic!("no WebGPU adapter in this browser");
    };
    let report = freezing::run(&device.clone().autodiff(), 4, 3)
        .await
        .expect("read-back");
    console_log!("webgpu freezing: {report:?}");
    freezing::assert_freezing_behaviour(&report);
    graft_tests::settle(&device).await;
}
