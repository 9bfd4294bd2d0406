//! Choosing and naming the compute device.

use graft_app::device::{self, AdapterInfo};
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
