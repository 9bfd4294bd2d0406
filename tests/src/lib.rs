//! Shared scenarios for Graft's test suites.
//!
//! Each scenario is an `async fn` taking a device, so the same code runs natively (blocked on with
//! `pollster`) and in headless Chrome (awaited by `wasm-bindgen-test`) on WebGPU and on the CPU
//! backend. Scenarios return a report of what they measured; the test files assert on it.

pub mod frozen_prefix;
#[cfg(not(target_arch = "wasm32"))]
pub mod e2e;
pub mod golden;
pub mod pretrained;
pub mod freezing;
