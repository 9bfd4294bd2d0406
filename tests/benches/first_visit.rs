//! A first visit, cold and warm, over a typical home link (20 Mbit/s, 20 ms; the server paces every
//! response, the worker's and the service worker's too): the time until the page is drawn, until it
//! can take pictures (the worker has loaded and opened its device: the badge names it), the bytes that
//! crossed the link by then, and what the service worker downloads after that to work offline; in a
//! browser without WebGPU (the worker's CPU build) and, cold, with WebGPU (its WebGPU build).
//! Printed as `bench:` lines; run by `cargo xtask bench` on the tests' build (`dist-test/`), or on the
//! deployed build with `GRAFT_DIST=dist` after `cargo xtask dist`.

use std::time::{Duration, Instant};

use fantoccini::Client;
use graft_tests::e2e::{self, ChromeDriver};
use xtask::web::{Link, Served, StaticServer};

const MB: f64 = 1e6;

/// Visits the app: (seconds until the page is drawn, seconds until it can take pictures).
async fn visit(client: &Client, url: &str) -> (f64, f64) {
    let started = Instant::now();
    client.goto(url).await.expect("open the app");
    e2e::wait_for_text(client, "[data-testid=add-class]", Duration::from_secs(300), |_| true)
        .await
        .expect("the page");
    let drawn = started.elapsed().as_secs_f64();
    e2e::wait_for_text(client, "[data-testid=device]", Duration::from_secs(300), |t| {
        t.starts_with("CPU") || t.starts_with("WebGPU")
    })
    .await
    .expect("the worker's device");
    (drawn, started.elapsed().as_secs_f64())
}

/// Waits until the server has sent nothing for 3 s (the service worker's precache done).
async fn quiet(server: &StaticServer) {
    let mut last = (server.bytes_sent(), server.served().len(), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(300);
    while last.2.elapsed() < Duration::from_secs(3) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = (server.bytes_sent(), server.served().len());
        if now != (last.0, last.1) {
            last = (now.0, now.1, Instant::now());
        }
    }
}

fn largest(served: &[Served]) -> String {
    let mut by_size: Vec<&Served> = served.iter().filter(|s| s.bytes > 100_000).collect();
    by_size.sort_by_key(|s| std::cmp::Reverse(s.bytes));
    by_size
        .iter()
        .map(|s| format!("{} {:.2} MB", s.path, s.bytes as f64 / MB))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dist = e2e::dist_dir();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let link = Link::HOME_20_MBIT;
            let server = StaticServer::over_link(dist.clone(), link);
            let driver = ChromeDriver::start();
            let client = driver.session_without_webgpu().await;
            println!(
                "bench: first visit of {} over {:.0} Mbit/s, {} ms",
                dist.display(),
                link.bytes_per_second * 8.0 / MB,
                link.latency.as_millis()
            );

            let (drawn, ready) = visit(&client, &server.url("/")).await;
            let cold = server.served();
            let cold_bytes = server.bytes_sent();
            println!(
                "bench: first visit cold: page drawn {drawn:.1} s, takes pictures {ready:.1} s, {:.2} MB transferred by then ({} requests done; largest: {})",
                cold_bytes as f64 / MB,
                cold.len(),
                largest(&cold)
            );
            quiet(&server).await;
            let precached = server.served();
            println!(
                "bench: first visit cold: then the service worker downloads {:.2} MB more to work offline ({} requests; largest: {})",
                (server.bytes_sent() - cold_bytes) as f64 / MB,
                precached.len() - cold.len(),
                largest(&precached[cold.len()..])
            );

            let before = (server.bytes_sent(), server.served().len());
            let (drawn, ready) = visit(&client, &server.url("/")).await;
            let warm = server.served();
            let not_modified = warm[before.1..].iter().filter(|s| s.status == 304).count();
            println!(
                "bench: first visit warm (service worker installed): page drawn {drawn:.1} s, takes pictures {ready:.1} s, {:.2} MB transferred ({} requests, {not_modified} answered 304; largest: {})",
                (server.bytes_sent() - before.0) as f64 / MB,
                warm.len() - before.1,
                largest(&warm[before.1..])
            );
            quiet(&server).await;
            println!(
                "bench: first visit warm: {:.2} MB transferred in all once quiet",
                (server.bytes_sent() - before.0) as f64 / MB
            );
            client.close().await.expect("close");

            // A browser with a GPU gets the worker's WebGPU build (here WebGPU chosen in the URL, on
            // SwiftShader): a fresh profile, over the same link.
            let server = StaticServer::over_link(dist.clone(), link);
            let client = driver.session().await;
            let (drawn, ready) = visit(&client, &server.url("/?compute=webgpu")).await;
            let served = server.served();
            println!(
                "bench: first visit cold, WebGPU: page drawn {drawn:.1} s, takes pictures {ready:.1} s, {:.2} MB transferred by then ({} requests done; largest: {})",
                server.bytes_sent() as f64 / MB,
                served.len(),
                largest(&served)
            );
            client.close().await.expect("close");
        });
}
