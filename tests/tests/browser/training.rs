//! Every strategy runs real training steps through the engine's loop on WebGPU (and head-only on the
//! CPU backend): pretrained MobileNetV2, the fixture photos at 64 px.

use burn::prelude::*;
use graft_app::device::{self, ComputeDevice};
use graft_engine::model::ModelKind;
use graft_engine::strategy::Strategy;
use graft_engine::train::CacheKind;
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
    drop((model, report));
    graft_tests::settle(&device).await;
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

/// On the CPU backend, a phase that cannot cache its frozen prefix (augmentation makes every epoch's
/// inputs new) runs that prefix on the CPU kernels every batch, Burn only from the boundary on; the
/// frozen blocks stay bit-identical and the run is otherwise what the few-steps checks expect.
#[wasm_bindgen_test]
async fn an_augmented_partial_freeze_runs_its_frozen_blocks_on_the_cpu_kernels() {
    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights load");
    let strategy = Strategy::PartialFreeze { trainable_blocks: 3 };
    let report = training::run_strategy_with(&model, strategy, &device, true)
        .await
        .expect("training runs");
    console_log!(
        "cpu augmented {}: {:.1} s, losses {:?}, phases {:?}, frozen change {:?}",
        strategy.name(),
        report.summary.seconds,
        report.losses,
        report.phases,
        report.frozen_max_change
    );
    assert_eq!(
        report.phases.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![CacheKind::Kernels],
        "the frozen prefix runs on the kernels"
    );
    training::assert_few_steps(&report, strategy);
}
