//! Browser tests: run by `wasm-bindgen-test-runner` in headless Chrome (WebGPU through SwiftShader).
//!
//! One test binary for all browser suites keeps the wasm link (the slow part) to one per run.
//! Natively this file compiles to nothing.
#![cfg(target_arch = "wasm32")]

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod device;
mod folders;
mod freezing;
mod frozen_prefix;
mod pretrained;
mod training;
