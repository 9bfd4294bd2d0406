//! Shared scenarios for Graft's test suites.
//!
//! Each scenario is an `async fn` taking a device, so the same code runs natively (blocked on with
//! `pollster`) and in headless Chrome (awaited by `wasm-bindgen-test`) on WebGPU and on the CPU
//! backend. Scenarios return a report of what they measured; the test files assert on it.

pub mod cpu_ops;
pub mod frozen_prefix;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::{Device, Tensor};
use graft_engine::readback::{self, ReadbackError};

/// Leaves `device` idle for the next test: waits until everything queued on it has run (a one-value
/// read-back comes after it in the device's queue) and hands the allocator's unused buffers back.
/// Each WebGPU test ends with it, so that no test starts while a software GPU still works for the
/// one before.
pub async fn settle(device: &Device) {
    let _ = readback::to_f32_vec(Tensor::<1>::zeros([1], device)).await;
    device.memory_cleanup();
}

/// Every float of a module — parameters and BatchNorm running statistics — read back (async), one
/// vector per tensor in visiting order.
pub async fn module_floats<M: Module>(module: &M) -> Result<Vec<Vec<f32>>, ReadbackError> {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().flatten(0, D - 1));
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    let mut out = Vec::with_capacity(collect.0.len());
    for tensor in collect.0 {
        out.push(readback::to_f32_vec(tensor).await?);
    }
    Ok(out)
}
#[cfg(not(target_arch = "wasm32"))]
pub mod datasets;
#[cfg(not(target_arch = "wasm32"))]
pub mod e2e;
pub mod freezing;
pub mod golden;
#[cfg(not(target_arch = "wasm32"))]
pub mod onnx;
#[cfg(not(target_arch = "wasm32"))]
pub mod picture_folders;
pub mod pretrained;
pub mod training;
#[cfg(not(target_arch = "wasm32"))]
pub mod web_page;
