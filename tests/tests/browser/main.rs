//! Browser tests: run by `wasm-bindgen-test-runner` in headless Chrome (WebGPU through SwiftShader).
//!
//! One test binary for all browser suites keeps the wasm link (the slow part) to one per run.
//! Natively this file compiles to nothing.
#![cfg(target_arch = "wasm32")]

// In a dedicated worker, as the app trains: the page's own thread stays free to answer the test
// runner (ChromeDriver gives up on a renderer that does not answer for 30 s). WebGPU submissions
// wait for a software GPU process that a busy machine starves, and a run on the CPU backend never
// yields by itself; on the page's thread either stalled the suite.
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

mod device;
mod folders;
mod freezing;
mod frozen_prefix;
mod helpers;
mod pretrained;
mod project;
mod training;
