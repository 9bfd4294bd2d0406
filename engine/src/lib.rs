//! Graft's engine: fine-tuning an ImageNet-pretrained CNN on a person's own images, on any Burn device.
//!
//! Pure Rust on Burn 0.22, with no browser code: the app, the CLI and the tests choose the device and pass
//! it in. Everything that reads a tensor back to the host does so through the async API, so the same
//! code runs on WebGPU in a browser and on the CPU natively.

pub mod bundle;
pub mod cache;
pub mod compare;
#[cfg(not(target_arch = "wasm32"))]
pub mod convert;
pub mod data;
pub mod export;
pub mod freeze;
pub mod helpers;
pub mod imagenet;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod peer;
pub mod preprocess;
pub mod readback;
pub mod recommend;
pub mod review;
pub mod schedule;
pub mod strategy;
pub mod train;
pub mod tuner;
pub mod weights;
