//! The runtime of the offline web page that `graft export --format web` writes: a wasm module with a
//! handful of C-ABI exports and no imports, so the page's own twenty lines of JavaScript instantiate
//! it from bytes (no `fetch`, which `file://` refuses; no wasm-bindgen glue). It reads the network
//! file the export writes (`graft_kernels::file`), decodes a picture with `graft-ingest` (upright,
//! RGB, the same refusals as the app), resizes and crops it as the model's preprocessing says, and
//! runs the network on the kernels: the numbers Graft itself gives, to float rounding.
//!
//! The exports: `graft_alloc`/`graft_free` (buffers the page fills), `graft_load` (the model file),
//! `graft_info` (labels, model and preprocessing as JSON), `graft_classify_file` (encoded picture
//! bytes), `graft_classify_rgba` (a canvas's pixels), then `graft_output_ptr`/`_len` (the
//! probabilities, in the labels' order) and `graft_text_ptr`/`_len` (the JSON, or why a call failed).
//! Each returns 0 on success.

use std::cell::RefCell;

use graft_ingest::model_file;
use graft_kernels::{Network, file};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// The model file's metadata keys the export writes and the runtime reads.
pub const LABELS_KEY: &str = "labels";
pub const MODEL_KEY: &str = "model";
pub const PREPROCESSING_KEY: &str = "preprocessing";

/// How a picture becomes the network's input (the part of the export's preprocessing record the
/// runtime needs; the record has more fields for people).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub resize_short_side: u32,
    pub center_crop: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Why the runtime could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Model(#[from] graft_kernels::NetworkFileError),
    #[error("the model file's {0} is missing or unreadable")]
    Metadata(&'static str),
    #[error("the model cannot be used: {0}")]
    Declaration(#[from] graft_ingest::model_file::DeclarationError),
    #[error("no model is loaded")]
    NoModel,
    #[error(transparent)]
    Image(#[from] graft_ingest::ImageInputError),
    #[error("{width} x {height} pixels need {expected} bytes of RGBA, got {got}")]
    Pixels {
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
}

/// A loaded model.
pub struct Classifier {
    net: Network,
    labels: Vec<String>,
    model: String,
    preprocessing: Preprocessing,
}

impl Classifier {
    /// Reads a model file written by the web page export.
    pub fn load(bytes: &[u8]) -> Result<Self, RuntimeError> {
        let (spec, metadata) = file::from_bytes(bytes)?;
        let json = |key: &'static str| metadata.get(key).ok_or(RuntimeError::Metadata(key));
        let labels: Vec<String> =
            serde_json::from_str(json(LABELS_KEY)?).map_err(|_| RuntimeError::Metadata(LABELS_KEY))?;
        let preprocessing: Preprocessing =
            serde_json::from_str(json(PREPROCESSING_KEY)?).map_err(|_| RuntimeError::Metadata(PREPROCESSING_KEY))?;
        let model = json(MODEL_KEY)?.clone();
        // The same checks the CLI and the app make of a `.graft` file's header.
        model_file::check_declared(&model_file::Declared {
            model: &model,
            input_size: preprocessing.center_crop as u64,
            resize_short_side: u64::from(preprocessing.resize_short_side),
            mean: preprocessing.mean,
            std: preprocessing.std,
            classes: &labels,
        })?;
        let net = Network::new(&spec).map_err(graft_kernels::NetworkFileError::from)?;
        model_file::check_class_count(labels.len(), net.num_classes())?;
        Ok(Self {
            net,
            labels,
            model,
            preprocessing,
        })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Labels, model name and preprocessing, as the page reads them.
    pub fn info_json(&self) -> String {
        serde_json::json!({
            "labels": self.labels,
            "model": self.model,
            "preprocessing": self.preprocessing,
        })
        .to_string()
    }

    /// The probabilities of each label for an upright RGB picture of any size.
    pub fn classify(&self, image: &RgbImage) -> Vec<f32> {
        let p = &self.preprocessing;
        let size = p.center_crop as u32;
        // The view Graft's own readers cut (`BundleHeader::view`).
        let view = graft_ingest::evaluation_view_at(image, p.resize_short_side, size);
        let input = graft_ingest::normalise(&view, p.mean, p.std);
        let side = size as usize;
        let embedding = self.net.embeddings(&input, [1, 3, side, side]);
        graft_kernels::softmax(&self.net.classify(&embedding), self.net.num_classes())
    }

    /// The probabilities for a picture file's bytes (JPEG, PNG, GIF, WebP, BMP).
    pub fn classify_file(&self, bytes: &[u8]) -> Result<Vec<f32>, RuntimeError> {
        Ok(self.classify(&graft_ingest::decode(bytes)?))
    }

    /// The probabilities for `width x height` RGBA pixels (a canvas's `ImageData`), alpha ignored.
    pub fn classify_rgba(&self, rgba: &[u8], width: u32, height: u32) -> Result<Vec<f32>, RuntimeError> {
        let expected = width as usize * height as usize * 4;
        if rgba.len() != expected || width == 0 || height == 0 {
            return Err(RuntimeError::Pixels {
                width,
                height,
                expected,
                got: rgba.len(),
            });
        }
        let rgb = rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        let image = RgbImage::from_raw(width, height, rgb).expect("length checked above");
        Ok(self.classify(&image))
    }
}

/// The module's state between calls (wasm here is single-threaded).
#[derive(Default)]
struct State {
    classifier: Option<Classifier>,
    output: Vec<f32>,
    text: String,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Runs `work` on the state; an error's message goes to the text buffer and the call returns 1.
fn call(work: impl FnOnce(&mut State) -> Result<(), RuntimeError>) -> i32 {
    STATE.with_borrow_mut(|state| match work(state) {
        Ok(()) => 0,
        Err(error) => {
            state.text = error.to_string();
            1
        }
    })
}

/// # Safety
/// `ptr..ptr + len` must be a buffer this module handed out and the page filled.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// A buffer of `len` bytes for the page to fill; give it back with [`graft_free`].
#[unsafe(no_mangle)]
pub extern "C" fn graft_alloc(len: usize) -> *mut u8 {
    let mut buffer = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(len.max(1)));
    buffer.as_mut_ptr()
}

/// # Safety
/// `ptr` and `len` must be what [`graft_alloc`] was given and returned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn graft_free(ptr: *mut u8, len: usize) {
    // SAFETY: the caller's contract; the capacity is what graft_alloc asked for.
    drop(unsafe { Vec::from_raw_parts(ptr, 0, len.max(1)) });
}

/// Loads the model file in `ptr..ptr + len`.
///
/// # Safety
/// See [`bytes`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn graft_load(ptr: *const u8, len: usize) -> i32 {
    // SAFETY: the caller's contract.
    let file = unsafe { bytes(ptr, len) };
    call(|state| {
        state.classifier = Some(Classifier::load(file)?);
        Ok(())
    })
}

/// Puts the loaded model's labels, name and preprocessing in the text buffer, as JSON.
#[unsafe(no_mangle)]
pub extern "C" fn graft_info() -> i32 {
    call(|state| {
        state.text = state.classifier.as_ref().ok_or(RuntimeError::NoModel)?.info_json();
        Ok(())
    })
}

/// Classifies the picture file in `ptr..ptr + len` into the output buffer.
///
/// # Safety
/// See [`bytes`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn graft_classify_file(ptr: *const u8, len: usize) -> i32 {
    // SAFETY: the caller's contract.
    let file = unsafe { bytes(ptr, len) };
    call(|state| {
        state.output = state
            .classifier
            .as_ref()
            .ok_or(RuntimeError::NoModel)?
            .classify_file(file)?;
        Ok(())
    })
}

/// Classifies `width x height` RGBA pixels at `ptr` into the output buffer.
///
/// # Safety
/// `ptr` must hold `width * height * 4` bytes the page filled (see [`bytes`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn graft_classify_rgba(ptr: *const u8, width: u32, height: u32) -> i32 {
    // SAFETY: the caller's contract.
    let rgba = unsafe { bytes(ptr, width as usize * height as usize * 4) };
    call(|state| {
        let classifier = state.classifier.as_ref().ok_or(RuntimeError::NoModel)?;
        state.output = classifier.classify_rgba(rgba, width, height)?;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn graft_output_ptr() -> *const f32 {
    STATE.with_borrow(|state| state.output.as_ptr())
}

#[unsafe(no_mangle)]
pub extern "C" fn graft_output_len() -> usize {
    STATE.with_borrow(|state| state.output.len())
}

#[unsafe(no_mangle)]
pub extern "C" fn graft_text_ptr() -> *const u8 {
    STATE.with_borrow(|state| state.text.as_ptr())
}

#[unsafe(no_mangle)]
pub extern "C" fn graft_text_len() -> usize {
    STATE.with_borrow(|state| state.text.len())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use graft_kernels::{ConvSpec, LayerSpec, LinearSpec, NetworkSpec, Padding};

    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn conv(out: usize, inp: usize, size: usize, stride: usize, seed: usize) -> ConvSpec {
        ConvSpec {
            out_channels: out,
            in_per_group: inp,
            groups: 1,
            size,
            stride,
            padding: Padding::TfSame,
            relu6: true,
            weights: values(out * inp * size * size, seed),
            bias: Some(values(out, seed + 1)),
            norm: None,
        }
    }

    /// A two-output network file with `metadata` (labels, and preprocessing unless `None`).
    fn model(labels: &str, preprocessing: Option<&str>) -> Vec<u8> {
        model_with(|metadata| {
            metadata.insert(LABELS_KEY.to_string(), labels.to_string());
            metadata.insert(MODEL_KEY.to_string(), "mobilenet-v2".to_string());
            if let Some(preprocessing) = preprocessing {
                metadata.insert(PREPROCESSING_KEY.to_string(), preprocessing.to_string());
            }
        })
    }

    /// The same, for a model called `name`.
    fn model_named(name: &str, labels: &str, preprocessing: &str) -> Vec<u8> {
        model_with(|metadata| {
            metadata.insert(LABELS_KEY.to_string(), labels.to_string());
            metadata.insert(MODEL_KEY.to_string(), name.to_string());
            metadata.insert(PREPROCESSING_KEY.to_string(), preprocessing.to_string());
        })
    }

    fn model_with(fill: impl FnOnce(&mut HashMap<String, String>)) -> Vec<u8> {
        let spec = NetworkSpec {
            body: vec![
                LayerSpec::Conv(conv(4, 3, 3, 2, 1)),
                LayerSpec::Conv(conv(6, 4, 1, 1, 2)),
            ],
            classifier: LinearSpec {
                inputs: 6,
                outputs: 2,
                weights: values(12, 3),
                bias: Some(values(2, 4)),
            },
        };
        let mut metadata = HashMap::new();
        fill(&mut metadata);
        graft_kernels::file::to_bytes(&spec, &metadata).unwrap()
    }

    const PREPROCESSING: &str =
        r#"{"resize_short_side":256,"center_crop":32,"mean":[0.5,0.5,0.5],"std":[0.25,0.25,0.25],"rule":"x"}"#;

    fn picture() -> RgbImage {
        RgbImage::from_fn(30, 22, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 11) as u8, ((x + y) * 5) as u8])
        })
    }

    #[test]
    fn a_picture_file_and_its_pixels_get_the_same_probabilities() {
        let classifier = Classifier::load(&model(r#"["cat","dog"]"#, Some(PREPROCESSING))).unwrap();
        assert_eq!(classifier.labels(), ["cat", "dog"]);
        let info: serde_json::Value = serde_json::from_str(&classifier.info_json()).unwrap();
        assert_eq!(info["preprocessing"]["center_crop"], 32);
        let image = picture();
        let mut png = Vec::new();
        image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let from_file = classifier.classify_file(&png).unwrap();
        let rgba: Vec<u8> = image.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        let from_pixels = classifier.classify_rgba(&rgba, 30, 22).unwrap();
        assert_eq!(from_file, from_pixels);
        assert!((from_file.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{from_file:?}");
        // Not the same answer for every picture: the input reaches the output.
        let other = classifier.classify(&RgbImage::from_pixel(30, 22, image::Rgb([250, 10, 10])));
        assert_ne!(other, from_file);
    }

    #[test]
    fn bad_models_and_bad_pictures_get_their_reasons() {
        let three_labels = Classifier::load(&model(r#"["a","b","c"]"#, Some(PREPROCESSING)));
        assert_eq!(
            three_labels.err().map(|e| e.to_string()).as_deref(),
            Some("the model cannot be used: this file names 3 classes, but its model answers with 2")
        );
        // A crafted file gets the header checks the app makes: a size no model takes, std 0,
        // labels twice, a model Graft does not know.
        for (model_name, labels, preprocessing, says) in [
            (
                "mobilenet-v2",
                r#"["a","b"]"#,
                PREPROCESSING.replace(r#""center_crop":32"#, r#""center_crop":100000"#),
                "the pictures are 100000 px wide; MobileNetV2 takes 224",
            ),
            (
                "mobilenet-v2",
                r#"["a","b"]"#,
                PREPROCESSING.replace("[0.25,0.25,0.25]", "[0,0,0]"),
                "a standard deviation of 0 for red",
            ),
            ("mobilenet-v2", r#"["a","a"]"#, PREPROCESSING.to_string(), "\"a\" twice"),
            (
                "tiny",
                r#"["a","b"]"#,
                PREPROCESSING.to_string(),
                "\"tiny\", which Graft does not know",
            ),
        ] {
            let mut file = model(labels, Some(&preprocessing));
            if model_name != "mobilenet-v2" {
                file = model_named(model_name, labels, &preprocessing);
            }
            let message = Classifier::load(&file).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(says), "{message:?} does not say {says:?}");
        }
        let no_preprocessing = Classifier::load(&model(r#"["a","b"]"#, None));
        assert!(matches!(
            no_preprocessing,
            Err(RuntimeError::Metadata(PREPROCESSING_KEY))
        ));
        let file = model(r#"["a","b"]"#, Some(PREPROCESSING));
        assert!(matches!(
            Classifier::load(&file[..file.len() - 3]),
            Err(RuntimeError::Model(_))
        ));
        let classifier = Classifier::load(&file).unwrap();
        assert!(matches!(
            classifier.classify_file(b"not a picture"),
            Err(RuntimeError::Image(_))
        ));
        assert!(matches!(
            classifier.classify_rgba(&[0; 11], 2, 2),
            Err(RuntimeError::Pixels {
                expected: 16,
                got: 11,
                ..
            })
        ));
    }

    #[test]
    fn the_exports_report_failures_through_the_text_buffer() {
        let file = model(r#"["a","b"]"#, Some(PREPROCESSING));
        // SAFETY: a buffer of this module, filled here.
        unsafe {
            let ptr = graft_alloc(file.len());
            std::ptr::copy_nonoverlapping(file.as_ptr(), ptr, file.len());
            assert_eq!(graft_load(ptr, file.len()), 0);
            graft_free(ptr, file.len());
            let garbage = b"garbage";
            assert_eq!(graft_classify_file(garbage.as_ptr(), garbage.len()), 1);
        }
        let text = std::str::from_utf8(
            // SAFETY: the text buffer as the module holds it.
            unsafe { std::slice::from_raw_parts(graft_text_ptr(), graft_text_len()) },
        )
        .unwrap()
        .to_string();
        assert!(text.contains("image") || text.contains("format"), "{text}");
        assert_eq!(graft_info(), 0);
        assert_eq!(graft_output_len(), 0);
    }
}
