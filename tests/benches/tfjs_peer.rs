//! The peer: TensorFlow.js (npm `@tensorflow/tfjs` 4.22.0 with its WebGPU and wasm backends) running
//! MobileNetV2 in the same headless Chromium with the same flags as Graft's browser tests. Serves
//! `tests/bench/tfjs-peer.html` on loopback, cross-origin isolated (so TF.js's wasm backend runs its
//! multi-threaded SIMD build, one thread per core), waits for it and prints one `bench:` line per
//! figure.
//!
//! `GRAFT_TFJS_BACKENDS=wasm` (comma-separated) runs only those backends.
//!
//! Needs the npm packages: `cargo xtask bench` installs them and passes their folder in `GRAFT_TFJS_DIR`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use graft_tests::e2e::{self, ChromeDriver, StaticServer};

const FILES: [(&str, &str); 6] = [
    ("@tensorflow/tfjs/dist/tf.min.js", "tf.min.js"),
    (
        "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
        "tf-backend-wasm.min.js",
    ),
    (
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
        "tfjs-backend-wasm.wasm",
    ),
    (
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
        "tfjs-backend-wasm-simd.wasm",
    ),
    (
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
        "tfjs-backend-wasm-threaded-simd.wasm",
    ),
    (
        "@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js",
        "tf-backend-webgpu.min.js",
    ),
];

fn stage_page(node_modules: &Path) -> PathBuf {
    let root = std::env::temp_dir().join(format!("graft-tfjs-peer-{}", std::process::id()));
    let tfjs = root.join("tfjs");
    std::fs::create_dir_all(&tfjs).expect("temp dir");
    let bench = graft_tests::e2e::workspace_root().join("tests/bench");
    for page in ["tfjs-peer.html", "tfjs-peer.js"] {
        std::fs::copy(bench.join(page), root.join(page)).expect("copy the page");
    }
    for (from, to) in FILES {
        let from = node_modules.join(from);
        std::fs::copy(&from, tfjs.join(to)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    root
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(node_modules) = std::env::var_os("GRAFT_TFJS_DIR").map(PathBuf::from) else {
        panic!("set GRAFT_TFJS_DIR to a node_modules folder with @tensorflow/tfjs (cargo xtask bench does)");
    };
    let root = stage_page(&node_modules);
    // Cross-origin isolated, so that TF.js's wasm backend can run its multi-threaded build.
    let server = StaticServer::cross_origin_isolated(root.clone());
    let driver = ChromeDriver::start();
    let client = driver.session().await;
    client
        .goto(&server.url(&format!(
            "/tfjs-peer.html?backends={}",
            std::env::var("GRAFT_TFJS_BACKENDS").unwrap_or_else(|_| "webgpu,wasm,webgl,cpu".to_string())
        )))
        .await
        .expect("open the peer page");
    let status = e2e::wait_for_text(&client, "#status", Duration::from_secs(1200), |text| {
        text == "done" || text.starts_with("failed")
    })
    .await;
    let results = client
        .find(fantoccini::Locator::Css("#results"))
        .await
        .expect("results element")
        .text()
        .await
        .expect("results text");
    client.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&root);
    let status = status.expect("the peer page did not finish");
    assert_eq!(status, "done", "the peer page failed");
    let results: Vec<serde_json::Value> = serde_json::from_str(&results).expect("results are JSON");
    for result in &results {
        let backend = result["backend"].as_str().unwrap_or("?");
        match result.get("imagesPerSecond").and_then(|v| v.as_f64()) {
            Some(images_per_s) => println!(
                "bench: tfjs {backend}{} mobilenet-v2 batch {}: {images_per_s:.2} img/s ({} iterations in {:.1} s; first call {:.1} s)",
                result["threads"]
                    .as_u64()
                    .map(|n| format!(" ({n} threads)"))
                    .unwrap_or_default(),
                result["batch"],
                result["iterations"],
                result["seconds"].as_f64().unwrap_or(0.0),
                result["firstCallS"].as_f64().unwrap_or(0.0)
            ),
            None if result.get("info").is_some() => println!("bench: tfjs {backend}: {}", result["info"]),
            None => println!("bench: tfjs {backend}: {}", result["error"]),
        }
    }
}
