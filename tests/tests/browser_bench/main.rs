//! Browser benchmarks (not part of `cargo xtask test`; run by `cargo xtask bench`): embedding
//! throughput of the pretrained models at 224 px, batch 1 and 16, on WebGPU and on the CPU backend, in
//! headless Chrome. Each figure is printed as a `bench:` line.
#![cfg(target_arch = "wasm32")]

use burn::prelude::*;
use burn::tensor::Distribution;
use graft_app::device::{self, ComputeDevice};
use graft_engine::model::ModelKind;
use graft_engine::readback;
use graft_tests::pretrained;
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// Milliseconds from `performance.now()`.
fn now_ms() -> f64 {
    let global: wasm_bindgen::JsValue = js_sys::global().into();
    let performance = js_sys::Reflect::get(&global, &"performance".into()).expect("performance");
    let now: js_sys::Function = js_sys::Reflect::get(&performance, &"now".into()).expect("now").into();
    now.call0(&performance).expect("performance.now()").as_f64().expect("a number")
}

/// Images per second of `features()` + read-back, after one warm-up call (shader compilation), over
/// at least `min_iterations` calls and `min_ms` milliseconds.
async fn throughput(kind: ModelKind, device: &Device, backend: &str, batch: usize, min_iterations: usize, min_ms: f64) {
    let model = pretrained::load(kind, device).expect("weights load");
    let images = Tensor::<4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), device);
    let warm_start = now_ms();
    readback::to_f32_vec(model.features(images.clone())).await.expect("read-back");
    let warm_ms = now_ms() - warm_start;
    let start = now_ms();
    let mut iterations = 0;
    while iterations < min_iterations || now_ms() - start < min_ms {
        readback::to_f32_vec(model.features(images.clone())).await.expect("read-back");
        iterations += 1;
    }
    let elapsed_s = (now_ms() - start) / 1000.0;
    let images_per_s = (iterations * batch) as f64 / elapsed_s;
    console_log!(
        "bench: burn {backend} {} batch {batch}: {images_per_s:.2} img/s ({iterations} iterations in {elapsed_s:.1} s; first call {:.1} s)",
        kind.card().name,
        warm_ms / 1000.0
    );
}

#[wasm_bindgen_test]
async fn embedding_throughput_on_webgpu() {
    let ComputeDevice::WebGpu { device, adapter } = device::acquire().await else {
        panic!("no WebGPU adapter");
    };
    console_log!("bench: adapter {adapter}");
    for kind in ModelKind::ALL {
        for batch in [1, 16] {
            throughput(kind, &device, "webgpu", batch, 3, 3000.0).await;
        }
    }
}

#[wasm_bindgen_test]
async fn embedding_throughput_on_cpu_backend() {
    let device = Device::flex();
    for kind in ModelKind::ALL {
        for batch in [1, 16] {
            throughput(kind, &device, "cpu", batch, 2, 2000.0).await;
        }
    }
}
