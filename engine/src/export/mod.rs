//! Models that leave Graft, in the formats the rest of the ecosystem runs: [`onnx`] (one graph for
//! every ONNX runtime), [`pytorch`] (safetensors with torchvision's or timm's tensor names, and a
//! `labels.json`) and [`web`] (an offline web page that classifies with Graft's own kernels). The `.graft` file ([`crate::bundle`]) stays what Graft itself re-imports; every
//! export starts from one, checked whole first, so a damaged file never yields a partial export.

pub mod onnx;
mod proto;
pub mod pytorch;
pub mod web;

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::bundle::{self, BundleError, BundleHeader};
use crate::model::ImageClassifier;
use crate::readback::ReadbackError;

/// What a trained model can be exported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ExportFormat {
    /// The `.graft` file Graft re-imports.
    Graft,
    /// ONNX (opset 13).
    Onnx,
    /// PyTorch weights as safetensors, with `labels.json`.
    Safetensors,
    /// An offline web page (a folder, or a `.zip` of it).
    Web,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 4] = [Self::Graft, Self::Onnx, Self::Safetensors, Self::Web];

    /// Its name on the command line and in the app's menu.
    pub fn name(self) -> &'static str {
        match self {
            Self::Graft => "graft",
            Self::Onnx => "onnx",
            Self::Safetensors => "safetensors",
            Self::Web => "web",
        }
    }

    /// What a person reads in the menu.
    pub fn label(self) -> &'static str {
        match self {
            Self::Graft => "Graft model (.graft, to import here again)",
            Self::Onnx => "ONNX (.onnx + labels.json: ONNX Runtime, OpenVINO, TensorRT, Core ML tools)",
            Self::Safetensors => "PyTorch weights (.safetensors + labels.json: torchvision / timm)",
            Self::Web => "Offline web page (.zip: open index.html anywhere, no server needed)",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|format| format.name() == name)
    }

    /// The extension of the export's main file (the one a single download carries).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Graft => bundle::EXTENSION,
            Self::Onnx => "onnx",
            Self::Safetensors => "safetensors",
            Self::Web => "zip",
        }
    }
}

/// Why a model could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The `.graft` file is damaged, truncated or not one.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("could not read the model's weights: {0}")]
    Readback(#[from] ReadbackError),
    /// The model does not have the shape the format's readers expect (a bug, or a model file made
    /// by a later version).
    #[error("this model cannot be exported so: {0}")]
    Unsupported(String),
    /// The web page's runtime module is missing or is not one.
    #[error("{0}")]
    Runtime(String),
}

/// The preprocessing a reader must apply, as the exports record it (ONNX metadata, `labels.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preprocessing {
    /// The picture turned upright (EXIF orientation) and to RGB, its short side resized to this.
    pub resize_short_side: u32,
    /// Then the centre square of this side.
    pub center_crop: usize,
    /// Then each channel as `(pixel / 255 - mean) / std`, in this order of channels, as NCHW float32.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub channels: &'static str,
    pub layout: &'static str,
    /// The same rule in words (for EfficientNet-Lite0 it is TensorFlow's `(pixel - 127) / 128`).
    pub rule: String,
}

impl Preprocessing {
    pub fn of(header: &BundleHeader) -> Self {
        let n = &header.normalisation;
        let rule = if n.mean.iter().all(|&m| (m - 127.0 / 255.0).abs() < 1e-6)
            && n.std.iter().all(|&s| (s - 128.0 / 255.0).abs() < 1e-6)
        {
            "(pixel - 127) / 128".to_string()
        } else {
            "(pixel / 255 - mean) / std".to_string()
        };
        Self {
            resize_short_side: header.resize_short_side.max(header.input_size as u32),
            center_crop: header.input_size,
            mean: n.mean,
            std: n.std,
            channels: "RGB",
            layout: "NCHW",
            rule,
        }
    }
}

/// One file of an export: its name (from the model file's name) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Exports the `.graft` file `bytes` (named `file`, for messages) as `format`: the files to write,
/// named after `stem`. The model file is checked whole (size, sha256, every tensor) before anything
/// is made; the model runs on `device` only to be read back. `runtime` is the web page's runtime
/// module ([`web::RUNTIME_FILE`]), needed for [`ExportFormat::Web`] only.
pub async fn export(
    file: &str,
    bytes: &[u8],
    format: ExportFormat,
    stem: &str,
    runtime: Option<&[u8]>,
    device: &Device,
) -> Result<Vec<ExportedFile>, ExportError> {
    let (header, model) = bundle::decode(file, bytes, device)?;
    if format == ExportFormat::Graft {
        return Ok(vec![ExportedFile {
            name: format!("{stem}.{}", bundle::EXTENSION),
            bytes: bytes.to_vec(),
        }]);
    }
    encode(&header, &model, format, stem, runtime).await
}

/// The labels, the preprocessing and the PyTorch constructor as `labels.json`.
fn labels_json(header: &BundleHeader) -> ExportedFile {
    ExportedFile {
        name: "labels.json".into(),
        bytes: pytorch::labels_json(header).into_bytes(),
    }
}

/// Exports `model` (described by `header`) as `format`: the files to write, named after `stem` (the
/// web page as one `{stem}.zip` holding the folder `{stem}/`; [`web::page`] gives its files). A
/// `.graft` file is written from a model on a CPU device (see [`bundle::encode`]); the other formats
/// read the model back from any device. `runtime`: see [`export`].
pub async fn encode(
    header: &BundleHeader,
    model: &ImageClassifier,
    format: ExportFormat,
    stem: &str,
    runtime: Option<&[u8]>,
) -> Result<Vec<ExportedFile>, ExportError> {
    let named = |extension: &str, bytes: Vec<u8>| ExportedFile {
        name: format!("{stem}.{extension}"),
        bytes,
    };
    Ok(match format {
        ExportFormat::Graft => vec![named(bundle::EXTENSION, bundle::encode(header.clone(), model)?)],
        // labels.json beside the ONNX file too: onnxruntime-web cannot read a model's metadata.
        ExportFormat::Onnx => vec![named("onnx", onnx::encode(header, model).await?), labels_json(header)],
        ExportFormat::Safetensors => vec![
            named("safetensors", pytorch::encode(header, model).await?),
            labels_json(header),
        ],
        ExportFormat::Web => {
            let runtime = runtime.ok_or_else(|| {
                ExportError::Runtime(format!(
                    "the web page runtime ({}) is not available here",
                    web::RUNTIME_FILE
                ))
            })?;
            let files = web::page(header, model, runtime).await?;
            vec![named("zip", web::zip(stem, &files)?)]
        }
    })
}
