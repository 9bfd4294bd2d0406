//! The app on one core and on every core (its helper workers), side by side: the same 200 animal
//! silhouettes (two classes), headless Chromium without WebGPU (the CPU backend), a fresh profile
//! each; `?helpers=0` against the default (one helper per spare core). Printed per configuration:
//! measuring the data (and the embedding speed the app measured and shows on the model card),
//! head-only (embeddings of every picture, then the head) and partial freezing, train -> done, two
//! epochs each. Run by `cargo xtask bench`; needs the tests' build.

use std::time::{Duration, Instant};

use fantoccini::Client;
use graft_tests::datasets;
use graft_tests::e2e::{self, ChromeDriver, StaticServer, text_of};

/// Seconds from clicking `button` until `[data-testid=done_id]` satisfies `done`, and its text.
async fn timed(client: &Client, button: &str, done_id: &str, done: impl Fn(&str) -> bool) -> (f64, String) {
    let started = Instant::now();
    e2e::click(client, button).await;
    // A previous result goes when the work starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = text_of(client, done_id, Duration::from_secs(1800), done).await;
    (started.elapsed().as_secs_f64(), text)
}

async fn run(server: &StaticServer, driver: &ChromeDriver, query: &str) -> Vec<String> {
    let client = driver.session_without_webgpu().await;
    e2e::open_on_cpu_with(&client, server, query).await;
    for (index, class) in ["cat", "dog"].into_iter().enumerate() {
        e2e::click(&client, "add-class").await;
        e2e::by_id(&client, &format!("class-files-{index}"))
            .await
            .send_keys(&datasets::distinct_silhouettes(class, 100).join("\n"))
            .await
            .expect("choose files");
        text_of(
            &client,
            &format!("class-count-{index}"),
            Duration::from_secs(300),
            |t| t == "100",
        )
        .await;
    }
    let cores = client
        .execute(
            "const badge = document.querySelector('[data-testid=cores]'); return badge ? badge.textContent : '1 core (no helpers)';",
            Vec::new(),
        )
        .await
        .expect("cores");
    let mut lines = Vec::new();
    let (seconds, _) = timed(&client, "analyse-button", "recommendation", |t| !t.is_empty()).await;
    let speed = client
        .execute("return [...document.querySelectorAll('.model-card')].map(card => card.querySelector('strong').textContent + ': ' + card.querySelector('.speed').textContent).join('; ');", Vec::new())
        .await
        .expect("speed");
    lines.push(format!(
        "measure the data {seconds:.1} s (the model card: {})",
        speed.as_str().unwrap_or("?")
    ));
    e2e::set_epochs(&client, "2").await;
    for strategy in ["head-only", "partial-freeze"] {
        e2e::click(&client, &format!("strategy-{strategy}")).await;
        let (seconds, accuracy) = timed(&client, "train-button", "val-accuracy", |t| t.ends_with('%')).await;
        lines.push(format!("{strategy} {seconds:.1} s (validation accuracy {accuracy})"));
    }
    client.close().await.expect("close");
    lines
        .into_iter()
        .map(|line| format!("bench: app on {}, 200 images: {line}", cores.as_str().unwrap_or("?")))
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let server = StaticServer::start(e2e::dist_dir());
            let driver = ChromeDriver::start();
            for query in ["?helpers=0", ""] {
                for line in run(&server, &driver, query).await {
                    println!("{line}");
                }
            }
        });
}
