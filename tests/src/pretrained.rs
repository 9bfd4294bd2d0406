//! The converted pretrained weights, made by `cargo xtask weights` in two forms:
//! - `tests/weights/`: the checkpoints' own f32 values. The tests load these ([`load`]): they hold
//!   the models to PyTorch's logits within 1e-3, and every figure the tests assert was measured on them.
//! - `public/models/`: what the app serves, its convolutions and classifier in half precision
//!   ([`load_shipped`], natively).
//!
//! Natively they are read from disk; in the browser tests the f32 files are compiled into the test
//! module, since the test runner serves nothing but the test itself.

use burn::prelude::*;
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::weights::{self, Manifest, WeightsError};

/// Where `cargo xtask weights` writes the checkpoints' f32 conversion, relative to the workspace.
pub const EXACT_DIR: &str = "tests/weights";
/// Where it writes the half-precision files the app serves.
pub const SHIPPED_DIR: &str = "public/models";

#[cfg(not(target_arch = "wasm32"))]
fn read_from(dir: &str, file: &str) -> Vec<u8> {
    let path = crate::e2e::workspace_root().join(dir).join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask weights` first", path.display()))
}

#[cfg(not(target_arch = "wasm32"))]
fn read(file: &str) -> Vec<u8> {
    read_from(EXACT_DIR, file)
}

#[cfg(target_arch = "wasm32")]
fn read(file: &str) -> Vec<u8> {
    match file {
        "manifest.json" => include_bytes!("../weights/manifest.json").to_vec(),
        "efficientnet-lite0.bpk" => include_bytes!("../weights/efficientnet-lite0.bpk").to_vec(),
        "mobilenet-v2.bpk" => include_bytes!("../weights/mobilenet-v2.bpk").to_vec(),
        other => panic!("no such weights file: {other}"),
    }
}

fn parse(bytes: &[u8], dir: &str) -> Manifest {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{dir}/manifest.json: {e}"))
}

fn load_with(
    kind: ModelKind,
    manifest: &Manifest,
    read: impl Fn(&str) -> Vec<u8>,
    device: &Device,
) -> Result<ImageClassifier, WeightsError> {
    let entry = manifest.entry(kind).ok_or_else(|| WeightsError::NotInManifest {
        model: kind.to_string(),
    })?;
    weights::load_pretrained(kind, entry, read(&entry.file), device)
}

/// The manifest of the f32 conversion.
pub fn manifest() -> Manifest {
    parse(&read("manifest.json"), EXACT_DIR)
}

/// The pretrained ImageNet classifier of `kind` on `device` with the checkpoint's f32 values,
/// verified against the manifest.
pub fn load(kind: ModelKind, device: &Device) -> Result<ImageClassifier, WeightsError> {
    load_with(kind, &manifest(), read, device)
}

/// The raw bytes of an f32 weights file, for tests that damage them.
pub fn weights_bytes(kind: ModelKind) -> Vec<u8> {
    read(kind.card().weights_file)
}

/// The manifest of the files the app serves.
#[cfg(not(target_arch = "wasm32"))]
pub fn shipped_manifest() -> Manifest {
    parse(&read_from(SHIPPED_DIR, "manifest.json"), SHIPPED_DIR)
}

/// The pretrained classifier of `kind` from the file the app serves (half precision on disk, f32 once
/// loaded), verified against its manifest.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_shipped(kind: ModelKind, device: &Device) -> Result<ImageClassifier, WeightsError> {
    load_with(kind, &shipped_manifest(), |file| read_from(SHIPPED_DIR, file), device)
}
