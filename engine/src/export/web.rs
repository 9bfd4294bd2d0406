//! The offline web page: one folder that classifies pictures (file, drop, webcam) from any static
//! host or from `file://`, with no network request and no Burn — `index.html`, `graft.js` (twenty
//! lines of glue and the runtime, `graft-runtime`'s wasm module, as base64 since `file://` cannot
//! fetch), `model.js` (the network file of `graft_kernels::file` as base64, with the labels and the
//! preprocessing in its metadata) and a `README.md` with the lines to call it from another page. The
//! app offers it as a `.zip`; the CLI writes the folder and the zip beside it.

use std::collections::HashMap;
use std::io::Write;

use base64::Engine as _;
use burn::module::Module;

use crate::bundle::BundleHeader;
use crate::model::{ImageClassifier, Probes, network_spec};

use super::{ExportError, ExportedFile, Preprocessing};

/// The runtime's file name where the app serves it (`public/runtime/`) and the CLI finds it.
pub const RUNTIME_FILE: &str = "graft-runtime.wasm";

const INDEX_HTML: &str = include_str!("web/index.html");
const GRAFT_JS: &str = include_str!("web/graft.js");
const README_MD: &str = include_str!("web/README.md");
/// Where `graft.js` takes the runtime's base64.
const RUNTIME_SLOT: &str = "__GRAFT_RUNTIME_BASE64__";

/// The model as the runtime reads it: the network with its BatchNorms folded, and in the file's
/// metadata the labels, the model's name and the preprocessing.
pub async fn model_file(header: &BundleHeader, model: &ImageClassifier) -> Result<Vec<u8>, ExportError> {
    let spec = network_spec(&model.valid(), Probes::Off).await?;
    let json = |value: serde_json::Value| value.to_string();
    let metadata = HashMap::from([
        ("labels".to_string(), json(serde_json::json!(header.classes))),
        ("model".to_string(), header.model.card().name.to_string()),
        (
            "preprocessing".to_string(),
            json(serde_json::json!(Preprocessing::of(header))),
        ),
    ]);
    graft_kernels::file::to_bytes(&spec, &metadata).map_err(|e| ExportError::Unsupported(e.to_string()))
}

/// The page's files (names relative to its folder), for the runtime module `runtime` (the bytes of
/// [`RUNTIME_FILE`]).
pub async fn page(
    header: &BundleHeader,
    model: &ImageClassifier,
    runtime: &[u8],
) -> Result<Vec<ExportedFile>, ExportError> {
    if !runtime.starts_with(b"\0asm") {
        return Err(ExportError::Runtime(
            "the web page runtime is not a WebAssembly module".into(),
        ));
    }
    let base64 = base64::engine::general_purpose::STANDARD;
    let model_js = format!(
        "// The model for graft.js: {} classes ({}), as base64 of Graft's network file.\nvar GRAFT_MODEL = \"{}\";\n",
        header.classes.len(),
        header.model.card().name,
        base64.encode(model_file(header, model).await?)
    );
    let title = html_escape(&format!("{} — {}", header.classes.join(", "), header.model.card().name));
    let file = |name: &str, text: String| ExportedFile {
        name: name.into(),
        bytes: text.into_bytes(),
    };
    Ok(vec![
        file("index.html", INDEX_HTML.replace("__GRAFT_TITLE__", &title)),
        file("graft.js", GRAFT_JS.replace(RUNTIME_SLOT, &base64.encode(runtime))),
        file("model.js", model_js),
        file("README.md", README_MD.to_string()),
    ])
}

/// `files` as a zip archive, inside a folder named `folder`.
pub fn zip(folder: &str, files: &[ExportedFile]) -> Result<Vec<u8>, ExportError> {
    let failed = |e: zip::result::ZipError| ExportError::Unsupported(format!("zip: {e}"));
    let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    for file in files {
        archive
            .start_file(format!("{folder}/{}", file.name), options)
            .map_err(failed)?;
        archive
            .write_all(&file.bytes)
            .map_err(|e| ExportError::Unsupported(format!("zip: {e}")))?;
    }
    Ok(archive.finish().map_err(failed)?.into_inner())
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
