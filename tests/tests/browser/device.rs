//! Choosing and naming the compute device.

use burn::prelude::*;
use graft_engine::readback::{self, ReadbackError};
use graft_worker::device::{self, AdapterInfo, ComputeChoice, ComputeDevice};
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

#[wasm_bindgen_test]
async fn browser_reports_a_named_webgpu_adapter() {
    let info = device::browser_adapter_info().await.expect("no WebGPU adapter");
    console_log!("GPUAdapterInfo: {info:?}");
    assert!(
        !(info.vendor.is_empty() && info.architecture.is_empty() && info.description.is_empty()),
        "the adapter says nothing about itself: {info:?}"
    );
}

#[wasm_bindgen_test]
fn adapter_description_prefers_a_name_and_falls_back_to_vendor_and_architecture() {
    let swiftshader = AdapterInfo {
        vendor: "google".into(),
        architecture: "swiftshader".into(),
        ..Default::default()
    };
    assert_eq!(
        device::describe_adapter("", &swiftshader, true),
        "google swiftshader (software adapter)"
    );
    let named = AdapterInfo {
        description: "Intel Iris Xe".into(),
        ..swiftshader.clone()
    };
    assert_eq!(device::describe_adapter("", &named, false), "Intel Iris Xe (GPU)");
    assert_eq!(device::describe_adapter("RTX 3060", &named, false), "RTX 3060 (GPU)");
    assert_eq!(
        device::describe_adapter(" ", &AdapterInfo::default(), false),
        "unnamed GPU"
    );
}

/// A buffer the GPU refuses (1 GiB; SwiftShader has no room for it) is reported out of band, through
/// the app's uncaptured-error handler, and the next read-back fails with it instead of returning
/// numbers; the device itself stays usable.
#[wasm_bindgen_test]
async fn a_buffer_the_gpu_refuses_fails_the_next_read_back() {
    let compute = device::acquire(ComputeChoice::WebGpu).await;
    let ComputeDevice::WebGpu { device, wgpu: gpu, .. } = compute else {
        panic!("no WebGPU adapter in this browser: {}", compute.label());
    };
    use burn::tensor::wgpu::wgpu;
    let huge = gpu.create_buffer(&wgpu::BufferDescriptor {
        label: Some("graft-test-1GiB"),
        size: 1 << 30,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    // WebGPU delivers the error as an event: read back until it has arrived (a few turns at most).
    let mut failure = None;
    for attempt in 0..50 {
        match readback::to_f32_vec(Tensor::<1>::ones([4], &device)).await {
            Ok(values) => assert_eq!(values, [1.0; 4], "a read-back before the error arrived is still right"),
            Err(error) => {
                console_log!("read-back {attempt} after the 1 GiB allocation: {error}");
                failure = Some(error);
                break;
            }
        }
        graft_worker::yield_now().await;
    }
    huge.destroy();
    let failure = failure.expect("the refused allocation reached the handler and failed a read-back");
    assert!(
        matches!(failure, ReadbackError::OutOfMemory(_) | ReadbackError::Execution(_)),
        "{failure:?}"
    );
    let values = readback::to_f32_vec(Tensor::<1>::ones([4], &device) * 2.0)
        .await
        .expect("the device goes on after the refusal");
    assert_eq!(values, [2.0; 4]);
    graft_tests::settle(&device).await;
}
