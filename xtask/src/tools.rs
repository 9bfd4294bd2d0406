//! Finding the workspace and installing the tools the build and tests need, each only when missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Trunk 0.22 needs a newer Rust than this project's 1.95.
const TRUNK_VERSION: &str = "0.21.14";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The checkout and the shared target directory every build here uses.
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
}

impl Workspace {
    /// The workspace root (where `Cargo.lock` is) and the target directory: `$CARGO_TARGET_DIR` if set,
    /// else `~/.cache/graft-target`, outside the clone so that a fresh clone reuses earlier builds.
    pub fn locate() -> Result<Self, String> {
        // As cargo sets it for `cargo xtask` now: a build of xtask reused from a clone elsewhere (one
        // target directory serves every clone) must work on this clone, not on the one it was built in.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        let root = manifest_dir
            .parent()
            .ok_or("xtask has no parent directory")?
            .to_path_buf();
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
                PathBuf::from(home).join(".cache").join("graft-target")
            }
        };
        Ok(Self { root, target_dir })
    }

    /// Downloads kept between runs (wheels): `~/.cache/graft`.
    pub fn cache_dir(&self) -> PathBuf {
        std::env::var_os("HOME").map_or_else(
            || self.target_dir.join("graft-cache"),
            |home| PathBuf::from(home).join(".cache").join("graft"),
        )
    }

    /// A command run in the workspace root with the shared target directory, and the datasets'
    /// location in `GRAFT_DATASETS` for the tests that train.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .env("GRAFT_DATASETS", self.cache_dir().join("datasets"));
        command
    }

    /// The exact version of `wasm-bindgen` in `Cargo.lock`; wasm-bindgen-cli must match it.
    fn locked_version(&self, package: &str) -> Result<String, String> {
        let lock = std::fs::read_to_string(self.root.join("Cargo.lock"))
            .map_err(|e| format!("cannot read Cargo.lock: {e}"))?;
        let mut lines = lock.lines();
        while let Some(line) = lines.next() {
            if line == format!("name = \"{package}\"") {
                let version = lines.next().and_then(|l| l.strip_prefix("version = \""));
                if let Some(version) = version.and_then(|v| v.strip_suffix('"')) {
                    return Ok(version.to_string());
                }
            }
        }
        Err(format!("{package} is not in Cargo.lock"))
    }
}

/// Runs a command to completion; a non-zero exit is an error naming it.
pub fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let status = command.status().map_err(|e| format!("cannot start {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} exited with {status}"))
    }
}

/// `cargo <args>` in the workspace.
pub fn cargo(workspace: &Workspace, args: &[&str]) -> Result<(), String> {
    run(workspace.command("cargo").args(args))
}

/// The first line a program prints for `--version`, or `None` if it does not run.
fn version_of(program: &str) -> Option<String> {
    let output = Command::new(program)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()?
            .trim()
            .to_string(),
    )
}

/// Installs every missing tool.
pub fn ensure_all(workspace: &Workspace) -> Result<(), String> {
    ensure_wasm_target()?;
    ensure_lint_components()?;
    ensure_wasm_bindgen(workspace)?;
    ensure_trunk()?;
    ensure_cargo_fuzz()?;
    ensure_chromium()?;
    Ok(())
}

/// cargo-fuzz, for the image intake's fuzz target (`cargo xtask fuzz`, and a bounded run in `test`).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn ensure_cargo_fuzz() -> Result<(), String> {
    let wanted = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    if version_of("cargo-fuzz").as_deref() == Some(wanted.as_str()) {
        println!("xtask: {wanted}: present");
        return Ok(());
    }
    println!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install --locked)");
    cargo_install(
        &["cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--locked", "--force"],
        &[],
    )
}

fn ensure_wasm_target() -> Result<(), String> {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        println!("xtask: wasm32-unknown-unknown target: present");
        return Ok(());
    }
    println!("xtask: installing the wasm32-unknown-unknown target (rustup)");
    run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// clippy and rustfmt, which `cargo xtask test` runs (rustup's default profile has them; a minimal
/// one does not).
fn ensure_lint_components() -> Result<(), String> {
    let output = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    let installed = String::from_utf8_lossy(&output.stdout).to_string();
    for component in ["clippy", "rustfmt"] {
        if installed
            .lines()
            .any(|l| l.trim().starts_with(&format!("{component}-")))
        {
            println!("xtask: {component}: present");
            continue;
        }
        println!("xtask: installing {component} (rustup)");
        run(Command::new("rustup").args(["component", "add", component]))?;
    }
    Ok(())
}

/// `cargo install` builds in its own temporary directory, not the workspace's target dir.
fn cargo_install(args: &[&str], extra_env: &[(&str, &str)]) -> Result<(), String> {
    let mut command = Command::new("cargo");
    command.arg("install").args(args).env_remove("CARGO_TARGET_DIR");
    for (key, value) in extra_env {
        command.env(key, value);
    }
    run(&mut command)
}

fn ensure_wasm_bindgen(workspace: &Workspace) -> Result<(), String> {
    let version = workspace.locked_version("wasm-bindgen")?;
    let wanted = format!("wasm-bindgen {version}");
    let runner_ok = version_of("wasm-bindgen-test-runner").is_some_and(|v| v.ends_with(&version));
    if version_of("wasm-bindgen").as_deref() == Some(wanted.as_str()) && runner_ok {
        println!("xtask: {wanted}: present");
        return Ok(());
    }
    // Not `--locked`: its lock file names a crate version the registry no longer serves.
    println!("xtask: installing wasm-bindgen-cli {version} (cargo install, ~4 min)");
    cargo_install(&["wasm-bindgen-cli", "--version", &version, "--force"], &[])
}

fn ensure_trunk() -> Result<(), String> {
    let wanted = format!("trunk {TRUNK_VERSION}");
    if version_of("trunk").as_deref() == Some(wanted.as_str()) {
        println!("xtask: {wanted}: present");
        return Ok(());
    }
    // Trunk's release profile uses fat LTO (~17 min here); without it the install takes a few minutes.
    println!("xtask: installing trunk {TRUNK_VERSION} (cargo install --locked, LTO off)");
    cargo_install(
        &["trunk", "--version", TRUNK_VERSION, "--locked", "--force"],
        &[
            ("CARGO_PROFILE_RELEASE_LTO", "false"),
            ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
        ],
    )
}

fn ensure_chromium() -> Result<(), String> {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        println!(
            "xtask: chromium + chromedriver: present ({})",
            version_of(CHROMIUM).unwrap_or_default()
        );
        return Ok(());
    }
    println!("xtask: installing Debian's chromium and chromium-driver (apt-get)");
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let apt = |args: &[&str]| {
        let mut command = if as_root {
            Command::new("apt-get")
        } else {
            Command::new("sudo")
        };
        if !as_root {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut command)
    };
    apt(&["update"])?;
    apt(&["install", "-y", "chromium", "chromium-driver"])
}
