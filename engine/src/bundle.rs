//! A fine-tuned model as one file — weights, class names and preprocessing — that the app exports and
//! imports and `graft predict` reads.
//!
//! Layout: the 8 magic bytes `GRAFTv1\n`, a little-endian `u32` header length, the JSON
//! [`BundleHeader`], then the model in Burn's burnpack format. The header records the weights' size and
//! sha256, so a damaged or truncated file is refused rather than used.

use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::model::{ImageClassifier, ModelKind, Normalisation};
use crate::preprocess;
use crate::strategy::Strategy;
use crate::weights::{self, WeightsError};

/// The first bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"GRAFTv1\n";
/// File extension of bundles.
pub const EXTENSION: &str = "graft";

/// What a bundle says about its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleHeader {
    pub model: ModelKind,
    /// Class names, in the order of the head's outputs.
    pub classes: Vec<String>,
    /// Preprocessing: short side resized to this, then the centre `input_size` square, normalised.
    pub resize_short_side: u32,
    pub input_size: usize,
    pub normalisation: Normalisation,
    /// How it was trained, when known.
    pub strategy: Option<Strategy>,
    pub val_accuracy: Option<f64>,
    pub weights_bytes: u64,
    pub weights_sha256: String,
}

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{file} is not a Graft model file (it does not start with the Graft signature)")]
    NotABundle { file: String },
    #[error("{file} is truncated: {reason}")]
    Truncated { file: String, reason: String },
    #[error("{file} has an unreadable header: {reason}")]
    BadHeader { file: String, reason: String },
    #[error("{file}: the header names {header} classes but the head has {head} outputs")]
    ClassMismatch { file: String, header: usize, head: usize },
    #[error("could not save the model: {0}")]
    Save(String),
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// Serialises `model` (on a CPU device: saving reads tensors synchronously; see
/// [`crate::readback::module_to_device`]) with its metadata. `weights_bytes`/`weights_sha256` in
/// `header` are filled in here.
pub fn encode(mut header: BundleHeader, model: &ImageClassifier) -> Result<Vec<u8>, BundleError> {
    let head = model.num_classes();
    if header.classes.len() != head {
        return Err(BundleError::ClassMismatch {
            file: "the model".into(),
            header: header.classes.len(),
            head,
        });
    }
    let mut store = BurnpackStore::from_bytes(None);
    model
        .save_into(&mut store)
        .map_err(|error| BundleError::Save(error.to_string()))?;
    let weights = store
        .get_bytes()
        .map_err(|error| BundleError::Save(error.to_string()))?;
    let weights: &[u8] = &weights;
    header.weights_bytes = weights.len() as u64;
    header.weights_sha256 = weights::sha256_hex(weights);
    let json = serde_json::to_vec(&header).map_err(|error| BundleError::Save(error.to_string()))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + json.len() + weights.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(weights);
    Ok(out)
}

/// Reads a bundle's header without loading the weights.
pub fn read_header(file: &str, bytes: &[u8]) -> Result<(BundleHeader, usize), BundleError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BundleError::NotABundle { file: file.into() });
    }
    let truncated = |reason: String| BundleError::Truncated {
        file: file.into(),
        reason,
    };
    let length_end = MAGIC.len() + 4;
    let length = bytes
        .get(MAGIC.len()..length_end)
        .ok_or_else(|| truncated("it ends inside the header length".into()))?;
    let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
    let json = bytes
        .get(length_end..length_end + length)
        .ok_or_else(|| truncated(format!("the header needs {length} bytes")))?;
    let header: BundleHeader = serde_json::from_slice(json).map_err(|error| BundleError::BadHeader {
        file: file.into(),
        reason: error.to_string(),
    })?;
    Ok((header, length_end + length))
}

/// Loads a bundle onto `device`, checking the weights' size and sha256 and every tensor's shape.
pub fn decode(file: &str, bytes: &[u8], device: &Device) -> Result<(BundleHeader, ImageClassifier), BundleError> {
    let (header, offset) = read_header(file, bytes)?;
    let entry_file = file.to_string();
    let weights = &bytes[offset..];
    if weights.len() as u64 != header.weights_bytes {
        return Err(WeightsError::SizeMismatch {
            file: entry_file,
            expected: header.weights_bytes,
            actual: weights.len() as u64,
        }
        .into());
    }
    let actual = weights::sha256_hex(weights);
    if actual != header.weights_sha256 {
        return Err(WeightsError::Sha256Mismatch {
            file: entry_file,
            expected: header.weights_sha256.clone(),
            actual,
        }
        .into());
    }
    let mut model = header.model.architecture().init(header.classes.len(), device);
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(weights.to_vec())))
        .validate(false)
        .allow_partial(true);
    let result = model.load_from(&mut store).map_err(|error| WeightsError::Unreadable {
        file: file.into(),
        reason: error.to_string(),
    })?;
    weights::check_applied(
        file,
        result.missing.into_iter().map(|(path, _)| path).collect(),
        result.errors,
    )?;
    Ok((header, model))
}

impl BundleHeader {
    /// A header for a model of `kind` trained on `classes`.
    pub fn new(kind: ModelKind, classes: Vec<String>, input_size: usize) -> Self {
        Self {
            model: kind,
            classes,
            resize_short_side: crate::data::stored_short_side(input_size as u32),
            input_size,
            normalisation: kind.card().normalisation,
            strategy: None,
            val_accuracy: None,
            weights_bytes: 0,
            weights_sha256: String::new(),
        }
    }

    /// The model input for an upright image, as this bundle's preprocessing says.
    pub fn input(&self, image: &image::RgbImage, device: &Device) -> Tensor<4> {
        let resized = preprocess::resize_short_side(image, self.resize_short_side.max(self.input_size as u32));
        let view = preprocess::centre_crop(&resized, self.input_size as u32);
        preprocess::batch_tensor(&[view], &self.normalisation, device)
    }
}
