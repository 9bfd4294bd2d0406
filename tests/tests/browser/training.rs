//! Every strategy runs real training steps through the engine's loop on WebGPU (and head-only on the
//! CPU backend): pretrained MobileNetV2, the fixture photos at 64 px.

use burn::prelude::*;
use graft_app::device::{self, ComputeDevice};
use graft_engine::model::ModelKind;
use graft_engine::strategy::Strategy;
use graft_tests::{pretrained, training};
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

async fn few_steps(strategy: Strategy, device: Device, label: &str) {
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights load");
    let report = training::run_strategy(&model, strategy, &device)
        .await
        .expect("training runs");
    console_log!(
        "{label} {}: {:.1} s, losses {:?}, phases {:?}, val accuracy {:?}, frozen change {:?}, head_conv change {:.2e}",
        strategy.name(),
        report.summary.seconds,
        report.losses,
        report.phases,
        report.summary.val_accuracy,
        report.frozen_max_change,
        report.last_block_max_change
    );
    training::assert_few_steps(&report, strategy);
}

async fn webgpu() -> Device {
    let ComputeDevice::WebGpu { device, .. } = device::acquire().await else {
        panic!("no WebGPU adapter in this browser");
    };
    device
}

#[wasm_bindgen_test]
async fn head_only_trains_on_webgpu() {
    few_steps(Strategy::HeadOnly, webgpu().await, "webgpu").await;
}

#[wasm_bindgen_test]
async fn partial_freeze_trains_on_webgpu() {
    few_steps(
        Strategy::PartialFreeze { trainable_blocks: 3 },
        webgpu().await,
        "webgpu",
    )
    .await;
}

#[wasm_bindgen_test]
async fn staged_trains_on_webgpu() {
    few_steps(Strategy::STAGED_DEFAULT, webgpu().await, "webgpu").await;
}

#[wasm_bindgen_test]
async fn full_fine_tune_trains_on_webgpu() {
    few_steps(Strategy::FullFineTune, webgpu().await, "webgpu").await;
}

#[wasm_bindgen_test]
async fn from_scratch_trains_on_webgpu() {
    few_steps(Strategy::FromScratch, webgpu().await, "webgpu").await;
}

#[wasm_bindgen_test]
async fn head_only_trains_on_the_cpu_backend_in_the_browser() {
    few_steps(Strategy::HeadOnly, Device::flex(), "cpu").await;
}
