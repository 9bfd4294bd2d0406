//! Scale: a 10 000-picture project in the app, end to end in headless Chromium — ingestion, the
//! recommendation, head-only training — with the browser's memory watched the whole time (printed
//! `bench:` lines; run by `cargo xtask bench`, needs `dist/`).
//!
//! The pictures are photo-sized JPEGs generated from the Tux Paint photos (6 classes,
//! `datasets::scale_photos`). The CPU backend computes (SwiftShader's WebGPU is ~20x slower here), so
//! head-only's one pass of 10 000 pictures through the frozen body dominates the run.
//! `GRAFT_SCALE_IMAGES` changes the number of pictures (default 10 000).

use std::time::{Duration, Instant};

use graft_tests::datasets;
use graft_tests::e2e::{self, ChromeDriver, MemoryWatch, StaticServer};

/// The tab may not exceed this.
const TAB_LIMIT: u64 = 2 << 30;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total: usize = std::env::var("GRAFT_SCALE_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let root = datasets::scale_photos(total);
    let mut classes: Vec<(String, Vec<String>)> = std::fs::read_dir(&root)
        .expect("scale photos")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .map(|dir| {
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .expect("class")
                .map(|e| e.expect("entry").path().display().to_string())
                .collect();
            files.sort();
            (dir.file_name().expect("named").to_string_lossy().into_owned(), files)
        })
        .collect();
    classes.sort();
    let bytes: u64 = classes
        .iter()
        .flat_map(|(_, files)| files)
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    println!(
        "bench: scale project: {total} JPEGs in {} classes, {:.0} MiB on disk",
        classes.len(),
        mib(bytes)
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let server = StaticServer::start(e2e::dist_dir());
            let driver = ChromeDriver::start();
            let client = driver.session_without_webgpu().await;
            let watch = MemoryWatch::start(driver.pid());
            client.goto(&server.url("/")).await.expect("open the app");
            e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(120), |t| {
                t.starts_with("CPU fallback")
            })
            .await
            .expect("device");

            let started = Instant::now();
            for (index, (name, files)) in classes.iter().enumerate() {
                e2e::by_id(&client, "add-class").await.click().await.expect("add class");
                e2e::by_id(&client, &format!("class-name-{index}")).await;
                client
                    .execute(
                        "const e = document.querySelector(`[data-testid=class-name-${arguments[0]}]`); \
                         e.value = arguments[1]; e.dispatchEvent(new Event('change', {bubbles: true}));",
                        vec![index.into(), name.as_str().into()],
                    )
                    .await
                    .expect("name the class");
                e2e::by_id(&client, &format!("class-files-{index}"))
                    .await
                    .send_keys(&files.join("\n"))
                    .await
                    .expect("choose files");
            }
            for (index, (_, files)) in classes.iter().enumerate() {
                let expected = files.len().to_string();
                e2e::wait_for_text(
                    &client,
                    &format!("[data-testid=class-count-{index}]"),
                    Duration::from_secs(3600),
                    |t| t == expected,
                )
                .await
                .expect("every picture in");
            }
            let ingest = started.elapsed().as_secs_f64();
            println!(
                "bench: scale ingest {total} pictures: {ingest:.0} s ({:.1} images/s: read, decode, downscale, thumbnail, IndexedDB)",
                total as f64 / ingest
            );
            e2e::screenshot(&client, "scale-ingested").await;

            e2e::by_id(&client, "analyse-button").await.click().await.expect("analyse");
            let started = Instant::now();
            let recommendation =
                e2e::wait_for_text(&client, "[data-testid=recommendation]", Duration::from_secs(3600), |t| {
                    !t.is_empty()
                })
                .await
                .expect("a recommendation");
            println!(
                "bench: scale recommend: {:.0} s: {}",
                started.elapsed().as_secs_f64(),
                recommendation.lines().find(|l| l.contains('→')).unwrap_or_default()
            );

            e2e::by_id(&client, "strategy-head-only").await.click().await.expect("head-only");
            e2e::by_id(&client, "train-button").await.click().await.expect("train");
            let started = Instant::now();
            let accuracy = e2e::wait_for_text(&client, "[data-testid=val-accuracy]", Duration::from_secs(4 * 3600), |t| {
                t.ends_with('%')
            })
            .await
            .expect("training finished");
            println!(
                "bench: scale head-only on {total} pictures: train -> done {:.0} s, validation accuracy {accuracy}",
                started.elapsed().as_secs_f64()
            );
            e2e::screenshot(&client, "scale-trained").await;
            let peaks = watch.finish();
            client.close().await.expect("close");
            println!(
                "bench: scale peak memory: tab (renderer: page + worker) {:.0} MiB, GPU process {:.0} MiB, all browser processes {:.0} MiB",
                mib(peaks.renderer),
                mib(peaks.gpu_process),
                mib(peaks.all_processes)
            );
            assert!(
                peaks.renderer < TAB_LIMIT,
                "the tab took {:.0} MiB, over the {:.0} MiB limit",
                mib(peaks.renderer),
                mib(TAB_LIMIT)
            );
        });
}
