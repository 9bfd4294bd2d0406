//! Every core in the browser (headless Chromium, the CPU backend): the worker starts a helper worker
//! per spare core and a replica of itself that takes part of each training step, the page says how
//! many cores it uses, and with them the app measures, trains and predicts exactly as on one core
//! (`?helpers=0`): the same recommendation, validation accuracy and prediction, to the digit the
//! page shows. So does a session whose helpers and replica all panic at their first share or part
//! (`?fault=helper-panic`, the tests' build): their work is done by the worker, and the page says it
//! is down to one core.
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use fantoccini::Client;
use graft_tests::datasets;
use graft_tests::e2e::{self, ChromeDriver, StaticServer, text_of};

/// What a person sees of one session: the cores badge (`None` when there is none) and the cores the
/// machine has (at most 4: the worker and 3 helpers), the recommendation, the validation accuracy of
/// head-only and of partial freezing (each followed by a prediction of the fixture's cat).
#[derive(Debug, PartialEq)]
struct Seen {
    /// Once the helpers had time to start, and at the end; for training too.
    cores: Option<usize>,
    cores_at_the_end: Option<usize>,
    training_cores: Option<usize>,
    training_cores_at_the_end: Option<usize>,
    cores_expected: usize,
    recommendation: String,
    head_only: (String, Vec<(String, f64)>),
    partial_freeze: (String, Vec<(String, f64)>),
}

/// The cores the badge says frozen inference and training run on.
async fn cores_shown(client: &Client) -> (Option<usize>, Option<usize>) {
    let script = "const badge = document.querySelector('[data-testid=cores]');
        return badge ? [Number(badge.dataset.cores), Number(badge.dataset.trainingCores)] : [null, null];";
    let shown = client.execute(script, Vec::new()).await.expect("cores");
    let at = |index: usize| shown[index].as_u64().map(|n| n as usize);
    (at(0), at(1))
}

async fn train(client: &Client, strategy: &str) -> (String, Vec<(String, f64)>) {
    e2e::click(client, &format!("strategy-{strategy}")).await;
    e2e::click(client, "train-button").await;
    // The previous result goes when training starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accuracy = text_of(client, "val-accuracy", Duration::from_secs(900), |t| t.ends_with('%')).await;
    let prediction = e2e::classify(client, &e2e::fixture_photo("chelsea-224.png")).await;
    (accuracy, prediction)
}

/// One session: the app opened with `query`, twenty Tux Paint photos in two classes, measured, then
/// trained head-only and with partial freezing (two epochs each).
async fn session(server: &StaticServer, driver: &ChromeDriver, query: &str) -> Seen {
    let client = driver.session_without_webgpu().await;
    e2e::open_on_cpu_with(&client, server, query).await;
    let cores_expected = client
        .execute("return Math.min(navigator.hardwareConcurrency, 4);", Vec::new())
        .await
        .expect("cores")
        .as_u64()
        .expect("a number") as usize;
    let birds = datasets::tuxpaint_photos("birds", 10);
    let mammals = datasets::tuxpaint_photos("mammals", 10);
    e2e::add_birds_and_mammals(&client, &birds, &mammals).await;
    // Helpers start once the device is open; they have had the pictures' time to get ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (cores, training_cores) = loop {
        let cores = cores_shown(&client).await;
        if query.contains("helpers=0")
            || cores == (Some(cores_expected), Some(2))
            || std::time::Instant::now() > deadline
        {
            break cores;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    e2e::click(&client, "analyse-button").await;
    let recommendation = text_of(&client, "recommendation", Duration::from_secs(300), |t| !t.is_empty()).await;
    e2e::set_epochs(&client, "2").await;
    let head_only = train(&client, "head-only").await;
    let partial_freeze = train(&client, "partial-freeze").await;
    let (cores_at_the_end, training_cores_at_the_end) = cores_shown(&client).await;
    let shot = e2e::screenshot(&client, &format!("cores{}", query.replace(['?', '='], "-"))).await;
    println!("screenshot: {}", shot.display());
    client.close().await.expect("close");
    Seen {
        cores,
        cores_at_the_end,
        training_cores,
        training_cores_at_the_end,
        cores_expected,
        recommendation,
        head_only,
        partial_freeze,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_core_gives_the_numbers_one_core_gives() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let shared = session(&server, &driver, "").await;
    let helpers_fetched = server
        .served()
        .iter()
        .any(|served| served.path.starts_with("/helper_bg.wasm"));
    let alone = session(&server, &driver, "?helpers=0").await;
    let failing = session(&server, &driver, "?fault=helper-panic").await;
    println!("every core: {shared:?}\none core: {alone:?}\nhelpers that panic: {failing:?}");
    assert!(helpers_fetched, "the helper workers' wasm was never fetched");
    assert!(
        shared.cores_expected >= 2,
        "this test needs a machine with 2 cores or more"
    );
    assert_eq!(
        (shared.cores, shared.cores_at_the_end),
        (Some(shared.cores_expected), Some(shared.cores_expected)),
        "the cores the page says it uses"
    );
    assert_eq!(
        (shared.training_cores, shared.training_cores_at_the_end),
        (Some(2), Some(2)),
        "the cores the page says training runs on"
    );
    assert_eq!(
        (failing.cores, failing.cores_at_the_end),
        (Some(failing.cores_expected), Some(1)),
        "helpers that panicked: down to one core"
    );
    // The replica was sent a part of a step, panicked, and training went on here.
    assert_eq!(
        (failing.training_cores, failing.training_cores_at_the_end),
        (Some(2), Some(1)),
        "a replica that panicked: training down to one core"
    );
    assert_eq!(alone.cores, None, "?helpers=0: no helpers, no cores shown");
    for (what, seen) in [("every core", &shared), ("helpers that panicked", &failing)] {
        assert_eq!(
            (&seen.recommendation, &seen.head_only, &seen.partial_freeze),
            (&alone.recommendation, &alone.head_only, &alone.partial_freeze),
            "{what}: what the page shows differs from one core's"
        );
    }
}
