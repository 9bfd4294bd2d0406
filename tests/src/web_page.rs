//! The offline web page export, as the tests open it: its runtime module where `cargo xtask runtime`
//! builds it, the downloaded `.zip` unpacked, and its model read natively by the page's own runtime.

use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The web page's runtime module (`public/runtime/graft-runtime.wasm`), or a panic saying how to
/// build it.
pub fn runtime() -> Vec<u8> {
    let path = crate::e2e::workspace_root().join("public/runtime/graft-runtime.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask runtime`)", path.display()))
}

/// The files of a zip archive: `(path inside it, bytes)`, in the archive's order.
pub fn unzip(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).expect("a zip archive");
    (0..zip.len())
        .map(|i| {
            let mut file = zip.by_index(i).expect("an entry");
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).expect("inflates");
            (file.name().expect("a name").to_string(), bytes)
        })
        .collect()
}

/// Unpacks `archive` under `into` (which must not hold anything of its own), returning the folder
/// the archive holds (its one top-level folder).
pub fn unpack(archive: &[u8], into: &Path) -> PathBuf {
    let files = unzip(archive);
    let top: std::collections::BTreeSet<&str> = files
        .iter()
        .map(|(name, _)| name.split('/').next().expect("a name"))
        .collect();
    assert_eq!(top.len(), 1, "one folder in the zip: {top:?}");
    for (name, bytes) in &files {
        assert!(!name.contains(".."), "{name} leaves the folder");
        let path = into.join(name);
        std::fs::create_dir_all(path.parent().expect("in a folder")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write");
    }
    into.join(top.into_iter().next().expect("one"))
}

/// The classifier that the page's `model.js` holds, loaded by the page's runtime (natively).
pub fn classifier(model_js: &str) -> graft_runtime::Classifier {
    let base64 = model_js
        .split('"')
        .nth(1)
        .expect("model.js holds the model as one base64 string");
    let file = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .expect("base64");
    graft_runtime::Classifier::load(&file).expect("the runtime reads the model")
}
