//! The app, end to end, on 200 images: the wall time from clicking Train to the validation accuracy
//! appearing, per strategy (printed `bench:` lines; run by `cargo xtask bench`, needs `dist/`).
//!
//! Two classes of 100 animal silhouettes (cats, dogs), headless Chromium, the browser's CPU backend
//! (SwiftShader's WebGPU is ~20x slower here). Each strategy runs `GRAFT_BENCH_EPOCHS` epochs (default 2,
//! so that the whole bench stays within minutes; head-only uses its cached embeddings either way).

use std::time::{Duration, Instant};

use graft_tests::datasets;
use graft_tests::e2e::{self, ChromeDriver, StaticServer};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let epochs = std::env::var("GRAFT_BENCH_EPOCHS").unwrap_or_else(|_| "2".into());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let server = StaticServer::start(e2e::dist_dir());
            let driver = ChromeDriver::start();
            let client = driver.session_without_webgpu().await;
            client.goto(&server.url("/")).await.expect("open the app");
            e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(120), |t| {
                t.starts_with("CPU fallback")
            })
            .await
            .expect("device");
            for (index, class) in ["cat", "dog"].into_iter().enumerate() {
                e2e::by_id(&client, "add-class").await.click().await.expect("add class");
                let files = datasets::distinct_silhouettes(class, 100);
                let started = Instant::now();
                e2e::by_id(&client, &format!("class-files-{index}"))
                    .await
                    .send_keys(&files.join("\n"))
                    .await
                    .expect("choose files");
                e2e::wait_for_text(
                    &client,
                    &format!("[data-testid=class-count-{index}]"),
                    Duration::from_secs(300),
                    |t| t == "100",
                )
                .await
                .expect("images in");
                println!(
                    "bench: app ingest 100 images: {:.1} s ({:.0} images/s)",
                    started.elapsed().as_secs_f64(),
                    100.0 / started.elapsed().as_secs_f64()
                );
            }
            e2e::set_epochs(&client, &epochs).await;
            for strategy in ["head-only", "partial-freeze", "staged", "full", "scratch"] {
                e2e::by_id(&client, &format!("strategy-{strategy}")).await.click().await.expect("strategy");
                let started = Instant::now();
                e2e::by_id(&client, "train-button").await.click().await.expect("train");
                // The previous result disappears when training starts; wait for the new one.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let accuracy = e2e::wait_for_text(&client, "[data-testid=val-accuracy]", Duration::from_secs(3600), |t| {
                    t.ends_with('%')
                })
                .await
                .expect("training finished");
                println!(
                    "bench: app {strategy} on 200 images ({epochs} epochs): train -> done {:.1} s, validation accuracy {accuracy}",
                    started.elapsed().as_secs_f64()
                );
            }
            client.close().await.expect("close");
        });
}
