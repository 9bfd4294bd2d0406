//! End-to-end: the trunk-built app in headless Chromium shows the compute device it found.
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use graft_tests::e2e::{self, ChromeDriver, StaticServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_shows_the_webgpu_adapter() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session().await;
    client.goto(&server.url("/")).await.expect("cannot open the app");

    let title = client.title().await.expect("no title");
    assert!(title.starts_with("Graft"), "unexpected title {title:?}");

    let device = e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(120), |text| {
        text.starts_with("WebGPU: ") || text.starts_with("CPU fallback")
    })
    .await;
    let shot = e2e::screenshot(&client, "device").await;
    println!("device badge: {device:?}; screenshot: {}", shot.display());
    client.close().await.expect("cannot close the session");

    let device = device.expect("the app never reported a compute device");
    assert!(
        device.starts_with("WebGPU: "),
        "expected a WebGPU adapter, got {device:?}"
    );
    assert!(device.len() > "WebGPU: ".len(), "empty adapter description: {device:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_falls_back_to_the_cpu_without_webgpu() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    client.goto(&server.url("/")).await.expect("cannot open the app");

    let device = e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(120), |text| {
        text.starts_with("WebGPU: ") || text.starts_with("CPU fallback")
    })
    .await;
    let shot = e2e::screenshot(&client, "device-cpu-fallback").await;
    println!("device badge: {device:?}; screenshot: {}", shot.display());
    client.close().await.expect("cannot close the session");

    let device = device.expect("the app never reported a compute device");
    assert_eq!(device, "CPU fallback: no WebGPU (the browser found no WebGPU adapter)");
}
