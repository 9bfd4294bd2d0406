//! Loading the converted pretrained weights from `public/models/` (made by `cargo xtask weights`).
//!
//! Natively they are read from disk; in the browser tests they are compiled into the test module,
//! since the test runner serves nothing but the test itself.

use burn::prelude::*;
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::weights::{self, Manifest, WeightsError};

#[cfg(not(target_arch = "wasm32"))]
fn read(file: &str) -> Vec<u8> {
    let path = crate::e2e::workspace_root().join("public/models").join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask weights` first", path.display()))
}

#[cfg(target_arch = "wasm32")]
fn read(file: &str) -> Vec<u8> {
    match file {
        "manifest.json" => include_bytes!("../../public/models/manifest.json").to_vec(),
        "efficientnet-lite0.bpk" => include_bytes!("../../public/models/efficientnet-lite0.bpk").to_vec(),
        "mobilenet-v2.bpk" => include_bytes!("../../public/models/mobilenet-v2.bpk").to_vec(),
        other => panic!("no such weights file: {other}"),
    }
}

/// The manifest written by the converter.
pub fn manifest() -> Manifest {
    serde_json::from_slice(&read("manifest.json")).expect("public/models/manifest.json is valid")
}

/// The pretrained ImageNet classifier of `kind` on `device`, verified against the manifest.
pub fn load(kind: ModelKind, device: &Device) -> Result<ImageClassifier, WeightsError> {
    let manifest = manifest();
    let entry = manifest.entry(kind).ok_or_else(|| WeightsError::NotInManifest {
        model: kind.to_string(),
    })?;
    weights::load_pretrained(kind, entry, read(&entry.file), device)
}

/// The raw bytes of a weights file, for tests that damage them.
pub fn weights_bytes(kind: ModelKind) -> Vec<u8> {
    read(kind.card().weights_file)
}
