//! The pretrained models on WebGPU in the browser against PyTorch's logits.

use burn::prelude::*;
use graft_engine::inference::FrozenClassifier;
use graft_engine::model::{ModelKind, Probes};
use graft_tests::{golden, pretrained};
use graft_worker::device::{self, ComputeChoice, ComputeDevice};
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

async fn check_on_webgpu(kind: ModelKind) {
    let ComputeDevice::WebGpu { device, adapter, .. } = device::acquire(ComputeChoice::WebGpu).await else {
        panic!("no WebGPU adapter in this browser");
    };
    console_log!("{kind} on WebGPU ({adapter})");
    let model = pretrained::load(kind, &device).expect("weights load");
    for (variant, model) in [
        ("as trained", model.clone()),
        ("BatchNorm folded", model.folded_for_inference()),
    ] {
        let comparisons = golden::compare(kind, &model, &device).await.expect("read-back");
        for c in &comparisons {
            console_log!("{kind} ({variant}) {c}");
        }
        golden::assert_matches_reference(kind, &comparisons);
    }
    drop(model);
    graft_tests::settle(&device).await;
}

#[wasm_bindgen_test]
async fn efficientnet_lite0_matches_pytorch_on_webgpu() {
    check_on_webgpu(ModelKind::EfficientNetLite0).await;
}

#[wasm_bindgen_test]
async fn mobilenet_v2_matches_pytorch_on_webgpu() {
    check_on_webgpu(ModelKind::MobileNetV2).await;
}

/// On the CPU backend the browser runs the pretrained models on the hand-written kernels (wasm SIMD).
async fn check_on_cpu_backend(kind: ModelKind) {
    let device = Device::flex();
    let model = pretrained::load(kind, &device).expect("weights load");
    let frozen = FrozenClassifier::new(&model, Probes::Off).await.expect("read-back");
    assert!(
        frozen.is_compiled(),
        "the CPU backend in wasm runs frozen models on the kernels"
    );
    let comparisons = golden::compare_frozen(kind, &frozen, &device).await.expect("read-back");
    for c in &comparisons {
        console_log!("{kind} (CPU kernels, wasm SIMD) {c}");
    }
    golden::assert_matches_reference(kind, &comparisons);
}

#[wasm_bindgen_test]
async fn efficientnet_lite0_matches_pytorch_on_the_cpu_kernels() {
    check_on_cpu_backend(ModelKind::EfficientNetLite0).await;
}

#[wasm_bindgen_test]
async fn mobilenet_v2_matches_pytorch_on_the_cpu_kernels() {
    check_on_cpu_backend(ModelKind::MobileNetV2).await;
}
