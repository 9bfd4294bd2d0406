//! A fine-tuned model as one file — weights, class names and preprocessing — that the app exports and
//! imports and `graft predict` reads.
//!
//! Layout: the 8 magic bytes `GRAFTv1\n`, a little-endian `u32` header length, the JSON
//! [`BundleHeader`], then the model in Burn's burnpack format. The header records the weights' size and
//! sha256, so a damaged or truncated file is refused rather than used.
//!
//! A file a person was sent is untrusted, hash and all (whoever changes it can recompute the hash):
//! [`read_header`] believes nothing in the header before `graft_ingest::model_file` has checked it
//! (known model, input size and resize side that model trains at, a finite normalisation, named and
//! distinct classes that fit the weights), and the strategy is checked against the model's blocks.
//! Every reader (the CLI, the app's worker, the exports) prepares pictures from the checked header
//! with [`BundleHeader::view`].

use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot, ModuleStore};
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use graft_ingest::model_file::{self, DeclarationError, GraftHeaderError};

use crate::model::{ImageClassifier, ModelKind, Normalisation};
use crate::preprocess;
use crate::strategy::{Strategy, StrategyError};
use crate::weights::{self, WeightsError};

/// The first bytes of every bundle.
pub const MAGIC: &[u8; 8] = model_file::GRAFT_MAGIC;
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
    #[error("{file} cannot be used: {source}")]
    Declaration { file: String, source: DeclarationError },
    #[error("{file} cannot be used: it says the model was trained with {strategy}, which {model} cannot be ({source})")]
    Strategy {
        file: String,
        strategy: String,
        model: &'static str,
        source: StrategyError,
    },
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
    // Never write a file that reading would refuse (two classes named alike, say).
    read_header("the model", &out)?;
    Ok(out)
}

/// Reads a bundle's header without loading the weights, checked field by field (see the module's
/// doc): the header and where the weights start.
pub fn read_header(file: &str, bytes: &[u8]) -> Result<(BundleHeader, usize), BundleError> {
    let (raw, offset) = model_file::read_graft_header(bytes).map_err(|error| match error {
        GraftHeaderError::NotGraft => BundleError::NotABundle { file: file.into() },
        GraftHeaderError::Truncated(reason) => BundleError::Truncated {
            file: file.into(),
            reason,
        },
        GraftHeaderError::Unreadable(reason) => BundleError::BadHeader {
            file: file.into(),
            reason,
        },
        GraftHeaderError::Declaration(source) => BundleError::Declaration {
            file: file.into(),
            source,
        },
    })?;
    // Known by either of its names (checked above); `KNOWN_MODELS` is `ModelKind::ALL` by name.
    let model = model_file::known_model(&raw.model)
        .and_then(|known| ModelKind::from_name(known.name))
        .ok_or_else(|| BundleError::Declaration {
            file: file.into(),
            source: DeclarationError::UnknownModel {
                name: raw.model.clone(),
            },
        })?;
    let strategy: Option<Strategy> =
        raw.strategy
            .map(serde_json::from_value)
            .transpose()
            .map_err(|error| BundleError::BadHeader {
                file: file.into(),
                reason: format!("its strategy is unreadable: {error}"),
            })?;
    if let Some(strategy) = strategy {
        check_strategy(file, model, &strategy)?;
    }
    let header = BundleHeader {
        model,
        classes: raw.classes,
        resize_short_side: raw.resize_short_side,
        input_size: raw.input_size,
        normalisation: Normalisation {
            mean: raw.normalisation.mean,
            std: raw.normalisation.std,
        },
        strategy,
        val_accuracy: raw.val_accuracy,
        weights_bytes: raw.weights_bytes,
        weights_sha256: raw.weights_sha256,
    };
    Ok((header, offset))
}

/// A strategy the model's blocks allow (its parameters in range; the epochs are not recorded).
fn check_strategy(file: &str, model: ModelKind, strategy: &Strategy) -> Result<(), BundleError> {
    let refused = |source| BundleError::Strategy {
        file: file.into(),
        strategy: serde_json::to_string(strategy).unwrap_or_default(),
        model: model.card().display_name,
        source,
    };
    if let Strategy::Staged { lr_mult, .. } = *strategy
        && !lr_mult.is_finite()
    {
        return Err(refused(StrategyError::BadLrMult(lr_mult)));
    }
    let epochs = match *strategy {
        Strategy::Staged { head_epochs, .. } => head_epochs.saturating_add(1),
        _ => 1,
    };
    strategy
        .phases(
            model.architecture().num_body_blocks(),
            epochs,
            crate::strategy::SCRATCH_LR,
        )
        .map(drop)
        .map_err(refused)
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
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(weights.to_vec())))
        .validate(false)
        .allow_partial(true);
    weights::check_finite(file, &mut store)?;
    // The head's outputs (`classifier.weight` is `[embedding, classes]`) against the classes named,
    // before a model is made for them.
    let outputs = store
        .get_tensor("classifier.weight")
        .ok()
        .flatten()
        .and_then(|tensor| tensor.shape.get(1).copied());
    if let Some(outputs) = outputs {
        model_file::check_class_count(header.classes.len(), outputs).map_err(|source| BundleError::Declaration {
            file: file.into(),
            source,
        })?;
    }
    let mut model = header.model.architecture().init(header.classes.len(), device);
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
            resize_short_side: model_file::resize_side_for(input_size as u32),
            input_size,
            normalisation: kind.card().normalisation,
            strategy: None,
            val_accuracy: None,
            weights_bytes: 0,
            weights_sha256: String::new(),
        }
    }

    /// The view the model takes of an upright image, as this (checked) header says: the centre part
    /// within the aspect cap, short side resized, the centre `input_size` square. The one way every
    /// reader of a model file prepares a picture.
    pub fn view(&self, image: &image::RgbImage) -> image::RgbImage {
        preprocess::evaluation_view_at(image, self.resize_short_side, self.input_size as u32)
    }

    /// The model input for an upright image, as this bundle's preprocessing says.
    ///
    /// # Shapes
    /// - output: `[1, 3, input_size, input_size]`
    pub fn input(&self, image: &image::RgbImage, device: &Device) -> Tensor<4> {
        preprocess::batch_tensor(&[self.view(image)], &self.normalisation, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(classes: usize) -> ImageClassifier {
        ModelKind::MobileNetV2.architecture().init(classes, &Device::flex())
    }

    #[test]
    fn a_file_round_trips_and_one_that_reading_would_refuse_is_never_written() {
        let classes: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let bytes = encode(
            BundleHeader::new(ModelKind::MobileNetV2, classes.clone(), 224),
            &model(2),
        )
        .unwrap();
        let (header, _) = decode("m.graft", &bytes, &Device::flex()).unwrap();
        assert_eq!(header.classes, classes);
        assert_eq!(header.resize_short_side, 256);

        let twice = ["a", "a"].map(String::from).to_vec();
        let refused = encode(BundleHeader::new(ModelKind::MobileNetV2, twice, 224), &model(2)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the model cannot be used: this file names the class \"a\" twice"
        );
    }

    #[test]
    fn a_model_trained_at_another_size_is_read_with_the_view_it_was_validated_on() {
        // Training's evaluation view at 96 px is the centre 96 of the picture at 256 on its short side.
        let header = BundleHeader::new(ModelKind::MobileNetV2, vec!["a".into(), "b".into()], 96);
        assert_eq!(header.resize_short_side, 256);
        let picture = image::RgbImage::from_fn(400, 300, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
        assert_eq!(header.view(&picture), preprocess::evaluation_view(&picture, 96));
        // A file written before, which says 110 (256/224 of 96), is read as it says.
        let older = BundleHeader {
            resize_short_side: 110,
            ..header
        };
        assert_eq!(older.view(&picture).dimensions(), (96, 96));
        assert_ne!(older.view(&picture), preprocess::evaluation_view(&picture, 96));
    }
}

#[cfg(test)]
mod crafted_weights {
    use super::*;

    /// A file whose weights section was changed and its checksum recomputed (what someone who edits
    /// a file they send would do): the burnpack's own table of tensors is then untrusted too.
    #[test]
    fn changed_weights_with_a_recomputed_checksum_are_refused_without_a_panic() {
        let model = ModelKind::MobileNetV2.architecture().init(2, &Device::flex());
        let good = encode(
            BundleHeader::new(ModelKind::MobileNetV2, vec!["a".into(), "b".into()], 224),
            &model,
        )
        .unwrap();
        let (header, start) = read_header("m.graft", &good).unwrap();
        let mut refused = 0;
        // Bytes of the burnpack's header and tensor table (its first kilobytes), each set to values
        // that make lengths, offsets and shapes lie.
        for (step, at) in (0..2048).step_by(37).enumerate() {
            let mut weights = good[start..].to_vec();
            weights[at] = [0xff, 0x00, 0x7f, 0x80][step % 4];
            let mut header = header.clone();
            header.weights_sha256 = weights::sha256_hex(&weights);
            let json = serde_json::to_vec(&header).unwrap();
            let mut file = MAGIC.to_vec();
            file.extend_from_slice(&(json.len() as u32).to_le_bytes());
            file.extend_from_slice(&json);
            file.extend_from_slice(&weights);
            let result = std::panic::catch_unwind(|| decode("m.graft", &file, &Device::flex()).map(drop));
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    assert!(error.to_string().starts_with("m.graft"), "{error}");
                    refused += 1;
                }
                Err(_) => panic!("a changed byte at {at} of the weights made decoding panic"),
            }
        }
        assert!(refused > 0, "some changes must be refused");
    }
}
