//! Model files in: what a model file says about itself is untrusted, checked here before anything
//! believes it. A `.graft` file's header (which the CLI and the app's worker read with
//! [`read_graft_header`]) and the exported web page's model file (whose runtime checks what it
//! declares with [`check_declared`]) go through the same rules, each refusal a typed reason in words:
//!
//! - the model is one Graft knows ([`KNOWN_MODELS`]);
//! - the input size is one the model trains at: from [`MIN_INPUT_SIZE`] (five halvings leave one
//!   pixel) to [`MAX_INPUT_SIZE`] (twice the pretrained 224 and more: past it the pretrained filters
//!   see objects at a scale they never saw, and a training batch needs over five times the memory);
//! - the short side before the centre crop is the one Graft resizes to for that input size
//!   ([`resize_side_for`]; files written before it have [`crate::stored_short_side`], which is the
//!   same at 224);
//! - the normalisation is finite, its mean a pixel value (0..=1) and its standard deviation within
//!   [`MIN_STD`]..=1 (a smaller one multiplies every pixel into numbers no pretrained filter saw, and
//!   0 divides by zero);
//! - the classes are named (not blank), each once, and fit the weights (a header cannot make the
//!   reader allocate a head larger than the file holds);
//! - the integrity fields are of their types (a sha256 is 64 hex digits).
//!
//! The file's own integrity hash does not make its header trustworthy: whoever changes the file can
//! recompute it.

use serde::Deserialize;

use crate::RESIZE_SHORT_SIDE;

/// The first bytes of every `.graft` file.
pub const GRAFT_MAGIC: &[u8; 8] = b"GRAFTv1\n";
/// Largest `.graft` header read (a header holds class names and a few numbers: a few kilobytes).
pub const MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;
/// Smallest input side a model file may declare.
pub const MIN_INPUT_SIZE: u64 = 32;
/// Largest input side a model file may declare.
pub const MAX_INPUT_SIZE: u64 = 512;
/// Smallest standard deviation a normalisation may declare.
pub const MIN_STD: f32 = 0.01;
/// Longest class name, in characters.
pub const MAX_CLASS_NAME: usize = 256;

/// What every reader needs to know of a model Graft offers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownModel {
    /// The name the command line, the exports and their files use.
    pub name: &'static str,
    /// The name a `.graft` header gives it (the engine's `ModelKind` as serde writes it).
    pub header_name: &'static str,
    /// The name people read.
    pub display_name: &'static str,
    /// The side its pretrained weights were trained at.
    pub pretrained_input_size: u32,
    /// Width of its embedding (the head's input): each class costs this many weights and a bias.
    pub embedding_width: usize,
}

/// The models Graft offers (the engine's `ModelKind::ALL`, by name; a test there keeps them equal).
pub const KNOWN_MODELS: [KnownModel; 2] = [
    KnownModel {
        name: "efficientnet-lite0",
        header_name: "efficient-net-lite0",
        display_name: "EfficientNet-Lite0",
        pretrained_input_size: 224,
        embedding_width: 1280,
    },
    KnownModel {
        name: "mobilenet-v2",
        header_name: "mobile-net-v2",
        display_name: "MobileNetV2",
        pretrained_input_size: 224,
        embedding_width: 1280,
    },
];

/// The model named `name` (either of its names), if Graft knows it.
pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS
        .iter()
        .find(|model| model.name == name || model.header_name == name)
}

/// The short side a picture is resized to before the centre `input_size` square is cut: 256 (the
/// ImageNet convention) up to 224, the input size itself above 256. Training's evaluation view and
/// every reader of a model file use it.
pub fn resize_side_for(input_size: u32) -> u32 {
    RESIZE_SHORT_SIDE.max(input_size)
}

/// Why a model file's own account of itself is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeclarationError {
    #[error(
        "this file is for a model called \"{name}\", which Graft does not know (it knows {})",
        known_names()
    )]
    UnknownModel { name: String },
    #[error(
        "this file says the pictures are {declared} px wide; {model} takes {pretrained} (Graft trains it at {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE})"
    )]
    InputSize {
        declared: u64,
        model: &'static str,
        pretrained: u32,
    },
    #[error(
        "this file says pictures are resized to {declared} px on their short side before the centre {input_size} px square is cut; Graft resizes them to {expected}"
    )]
    ResizeSide {
        declared: u64,
        input_size: u32,
        expected: u32,
    },
    #[error("this file's normalisation has a {statistic} of {value} for {channel}; it must be {rule}")]
    Normalisation {
        statistic: &'static str,
        channel: &'static str,
        value: f32,
        rule: &'static str,
    },
    #[error("this file names no classes")]
    NoClasses,
    #[error("this file's class {position} has no name")]
    BlankClassName { position: usize },
    #[error("this file's class {position} has a name {length} characters long (at most {MAX_CLASS_NAME})")]
    LongClassName { position: usize, length: usize },
    #[error("this file names the class \"{name}\" twice")]
    DuplicateClass { name: String },
    #[error("this file names {declared} classes, but its weights hold only {bytes} bytes: too few for that many")]
    TooManyClasses { declared: usize, bytes: u64 },
    #[error("this file names {declared} classes, but its model answers with {outputs}")]
    ClassCount { declared: usize, outputs: usize },
    #[error("this file's validation accuracy is {0}; it must be a fraction from 0 to 1")]
    Accuracy(f64),
    #[error("this file's weights checksum \"{0}\" is not a sha256 (64 hexadecimal digits)")]
    Checksum(String),
}

fn known_names() -> String {
    let names: Vec<_> = KNOWN_MODELS.iter().map(|m| m.display_name).collect();
    names.join(" and ")
}

/// What a model file declares, as read (before anything believes it).
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a> {
    pub model: &'a str,
    pub input_size: u64,
    pub resize_short_side: u64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub classes: &'a [String],
}

/// The checks every reader makes of what a model file declares (see the module's list). Returns the
/// model.
pub fn check_declared(declared: &Declared<'_>) -> Result<&'static KnownModel, DeclarationError> {
    let model = known_model(declared.model).ok_or_else(|| DeclarationError::UnknownModel {
        name: declared.model.chars().take(64).collect(),
    })?;
    if !(MIN_INPUT_SIZE..=MAX_INPUT_SIZE).contains(&declared.input_size) {
        return Err(DeclarationError::InputSize {
            declared: declared.input_size,
            model: model.display_name,
            pretrained: model.pretrained_input_size,
        });
    }
    let input_size = declared.input_size as u32;
    let expected = resize_side_for(input_size);
    let resize = declared.resize_short_side;
    if resize != u64::from(expected) && resize != u64::from(crate::stored_short_side(input_size)) {
        return Err(DeclarationError::ResizeSide {
            declared: resize,
            input_size,
            expected,
        });
    }
    check_normalisation(declared.mean, declared.std)?;
    check_class_names(declared.classes)?;
    Ok(model)
}

const CHANNELS: [&str; 3] = ["red", "green", "blue"];

fn check_normalisation(mean: [f32; 3], std: [f32; 3]) -> Result<(), DeclarationError> {
    for (channel, (&mean, &std)) in CHANNELS.iter().zip(mean.iter().zip(&std)) {
        if !(0.0..=1.0).contains(&mean) {
            return Err(DeclarationError::Normalisation {
                statistic: "mean",
                channel,
                value: mean,
                rule: "a pixel value from 0 to 1",
            });
        }
        if !(MIN_STD..=1.0).contains(&std) {
            return Err(DeclarationError::Normalisation {
                statistic: "standard deviation",
                channel,
                value: std,
                rule: "from 0.01 to 1",
            });
        }
    }
    Ok(())
}

fn check_class_names(classes: &[String]) -> Result<(), DeclarationError> {
    if classes.is_empty() {
        return Err(DeclarationError::NoClasses);
    }
    let mut seen = std::collections::HashSet::with_capacity(classes.len());
    for (index, name) in classes.iter().enumerate() {
        let position = index + 1;
        if name.trim().is_empty() {
            return Err(DeclarationError::BlankClassName { position });
        }
        let length = name.chars().count();
        if length > MAX_CLASS_NAME {
            return Err(DeclarationError::LongClassName { position, length });
        }
        if !seen.insert(name.as_str()) {
            return Err(DeclarationError::DuplicateClass { name: name.clone() });
        }
    }
    Ok(())
}

/// `declared` classes against the `outputs` a model's head has.
pub fn check_class_count(declared: usize, outputs: usize) -> Result<(), DeclarationError> {
    if declared == outputs {
        Ok(())
    } else {
        Err(DeclarationError::ClassCount { declared, outputs })
    }
}

/// Normalisation as a `.graft` header writes it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct GraftNormalisation {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// A `.graft` file's header, read and checked: every field as the file writes it, the model by name
/// and the strategy as JSON (the engine turns both into its own types).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GraftHeader {
    pub model: String,
    pub classes: Vec<String>,
    pub resize_short_side: u32,
    pub input_size: usize,
    pub normalisation: GraftNormalisation,
    pub strategy: Option<serde_json::Value>,
    pub val_accuracy: Option<f64>,
    pub weights_bytes: u64,
    pub weights_sha256: String,
}

/// Why a `.graft` file's header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GraftHeaderError {
    #[error("it does not start with the Graft signature")]
    NotGraft,
    #[error("it is truncated: {0}")]
    Truncated(String),
    #[error("its header is unreadable: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Declaration(#[from] DeclarationError),
}

/// Reads and checks a `.graft` file's header: the header and where the weights start. Nothing in it is
/// believed unchecked; the weights themselves are the engine's to check (size, sha256, shapes).
pub fn read_graft_header(bytes: &[u8]) -> Result<(GraftHeader, usize), GraftHeaderError> {
    let Some(rest) = bytes.strip_prefix(GRAFT_MAGIC.as_slice()) else {
        return Err(GraftHeaderError::NotGraft);
    };
    let Some((length, rest)) = rest.split_first_chunk::<4>() else {
        return Err(GraftHeaderError::Truncated("it ends inside the header length".into()));
    };
    let length = u32::from_le_bytes(*length) as usize;
    if length > MAX_HEADER_BYTES {
        return Err(GraftHeaderError::Unreadable(format!(
            "it says the header is {length} bytes long (at most {MAX_HEADER_BYTES})"
        )));
    }
    let json = rest
        .get(..length)
        .ok_or_else(|| GraftHeaderError::Truncated(format!("the header needs {length} bytes")))?;
    let header: GraftHeader =
        serde_json::from_slice(json).map_err(|error| GraftHeaderError::Unreadable(error.to_string()))?;
    let weights_start = GRAFT_MAGIC.len() + 4 + length;
    header.check()?;
    Ok((header, weights_start))
}

impl GraftHeader {
    /// Every check of what the header declares that needs no model (the module's list); the model
    /// it names.
    pub fn check(&self) -> Result<&'static KnownModel, DeclarationError> {
        let model = check_declared(&Declared {
            model: &self.model,
            input_size: self.input_size as u64,
            resize_short_side: u64::from(self.resize_short_side),
            mean: self.normalisation.mean,
            std: self.normalisation.std,
            classes: &self.classes,
        })?;
        // The head alone needs (width + 1) weights per class, at least 2 bytes each (half precision).
        let head_bytes = (model.embedding_width as u64 + 1) * 2;
        if (self.classes.len() as u64).saturating_mul(head_bytes) > self.weights_bytes {
            return Err(DeclarationError::TooManyClasses {
                declared: self.classes.len(),
                bytes: self.weights_bytes,
            });
        }
        if let Some(accuracy) = self.val_accuracy
            && !(0.0..=1.0).contains(&accuracy)
        {
            return Err(DeclarationError::Accuracy(accuracy));
        }
        if self.weights_sha256.len() != 64 || !self.weights_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DeclarationError::Checksum(
                self.weights_sha256.chars().take(80).collect(),
            ));
        }
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> serde_json::Value {
        serde_json::json!({
            "model": "mobile-net-v2",
            "classes": ["cat", "dog"],
            "resize_short_side": 256,
            "input_size": 224,
            "normalisation": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "strategy": {"kind": "head-only"},
            "val_accuracy": 0.9,
            "weights_bytes": 1_000_000,
            "weights_sha256": "ab".repeat(32),
        })
    }

    fn file(header: &serde_json::Value) -> Vec<u8> {
        let json = serde_json::to_vec(header).unwrap();
        let mut bytes = GRAFT_MAGIC.to_vec();
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&json);
        bytes
    }

    fn refusal(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut header = header();
        edit(&mut header);
        match read_graft_header(&file(&header)) {
            Ok(_) => panic!("accepted {header}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_header_as_graft_writes_it_is_read() {
        let bytes = file(&header());
        let (read, start) = read_graft_header(&bytes).unwrap();
        assert_eq!(start, bytes.len());
        assert_eq!(read.classes, ["cat", "dog"]);
        assert_eq!(read.check().unwrap().display_name, "MobileNetV2");
        // Other sizes Graft trains at, with the resize side written now and the one written before.
        for (size, side) in [(96, 256), (96, 110), (320, 320), (32, 256), (512, 512)] {
            let mut header = header();
            header["input_size"] = size.into();
            header["resize_short_side"] = side.into();
            assert!(read_graft_header(&file(&header)).is_ok(), "{size} {side}");
        }
    }

    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

    #[test]
    fn each_field_is_refused_in_words() {
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|h| h["model"] = "resnet-50".into()),
                "a model called \"resnet-50\", which Graft does not know (it knows EfficientNet-Lite0 and MobileNetV2)",
            ),
            (
                Box::new(|h| {
                    h["input_size"] = 100_000.into();
                    h["resize_short_side"] = 100_000.into();
                }),
                "the pictures are 100000 px wide; MobileNetV2 takes 224",
            ),
            (Box::new(|h| h["input_size"] = 16.into()), "16 px wide"),
            (
                Box::new(|h| h["resize_short_side"] = 300.into()),
                "resized to 300 px on their short side before the centre 224 px square is cut; Graft resizes them to 256",
            ),
            (
                Box::new(|h| h["normalisation"]["std"] = serde_json::json!([0, 0, 0])),
                "a standard deviation of 0 for red; it must be from 0.01 to 1",
            ),
            (
                Box::new(|h| h["normalisation"]["std"][2] = 1e-9.into()),
                "standard deviation of 0.000000001 for blue",
            ),
            (
                Box::new(|h| h["normalisation"]["mean"][1] = 300.into()),
                "a mean of 300 for green; it must be a pixel value from 0 to 1",
            ),
            (Box::new(|h| h["classes"] = serde_json::json!([])), "names no classes"),
            (
                Box::new(|h| h["classes"] = serde_json::json!(["cat", " "])),
                "class 2 has no name",
            ),
            (
                Box::new(|h| h["classes"] = serde_json::json!(["cat", "cat"])),
                "names the class \"cat\" twice",
            ),
            (
                Box::new(|h| h["classes"] = serde_json::json!(["x".repeat(300), "y"])),
                "class 1 has a name 300 characters long",
            ),
            (
                Box::new(|h| h["weights_bytes"] = 5000.into()),
                "names 2 classes, but its weights hold only 5000 bytes",
            ),
            (
                Box::new(|h| h["val_accuracy"] = 1.5.into()),
                "validation accuracy is 1.5",
            ),
            (
                Box::new(|h| h["weights_sha256"] = "abc".into()),
                "\"abc\" is not a sha256",
            ),
            (Box::new(|h| h["input_size"] = (-3).into()), "header is unreadable"),
            (
                Box::new(|h| h["normalisation"]["std"] = serde_json::json!([1, 1])),
                "header is unreadable",
            ),
        ];
        for (edit, expected) in cases {
            let message = refusal(edit);
            assert!(message.contains(expected), "{message:?} does not say {expected:?}");
        }
    }

    #[test]
    fn a_million_classes_are_refused_before_anything_is_allocated_for_them() {
        let message = refusal(|h| {
            h["classes"] = (0..1_000_000).map(|i| i.to_string()).collect::<Vec<_>>().into();
        });
        assert!(message.contains("names 1000000 classes"), "{message}");
    }

    #[test]
    fn truncated_and_foreign_bytes_are_refused() {
        let bytes = file(&header());
        for cut in [0, 4, 8, 10, 12, bytes.len() - 1] {
            assert!(read_graft_header(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = GRAFT_MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let message = read_graft_header(&huge).unwrap_err().to_string();
        assert!(message.contains("at most"), "{message}");
        assert!(matches!(
            read_graft_header(b"PK\x03\x04"),
            Err(GraftHeaderError::NotGraft)
        ));
    }

    #[test]
    fn the_class_count_must_match_the_head() {
        assert!(check_class_count(3, 3).is_ok());
        assert_eq!(
            check_class_count(3, 2).unwrap_err().to_string(),
            "this file names 3 classes, but its model answers with 2"
        );
    }
}
