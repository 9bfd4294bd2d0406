//! End-to-end: the trunk-built app in headless Chromium shows the compute device it found.
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use graft_tests::e2e::{self, ChromeDriver, StaticServer};

/// The app open in a WebGPU session (the badge must name an adapter), two classes of two fixture
/// photos added, and "measure and recommend" clicked.
async fn webgpu_app_analysing_two_classes(server: &StaticServer, driver: &ChromeDriver) -> fantoccini::Client {
    webgpu_app_at_analysing_two_classes(server, driver, e2e::WEBGPU).await
}

/// [`webgpu_app_analysing_two_classes`] with the app opened at `path` (a query, say).
async fn webgpu_app_at_analysing_two_classes(
    server: &StaticServer,
    driver: &ChromeDriver,
    path: &str,
) -> fantoccini::Client {
    let client = driver.session().await;
    open_on_webgpu_analysing_two_classes(&client, server, path).await;
    client
}

/// Opens the app at `path` in `client` (WebGPU chosen in it; the badge must name an adapter), adds two classes of two
/// fixture photos and clicks "measure and recommend".
async fn open_on_webgpu_analysing_two_classes(client: &fantoccini::Client, server: &StaticServer, path: &str) {
    client.goto(&server.url(path)).await.expect("cannot open the app");
    let device = e2e::wait_for_text(client, "[data-testid=device]", Duration::from_secs(120), |t| {
        t.starts_with("WebGPU: ") || t.starts_with("CPU fallback")
    })
    .await
    .expect("device");
    assert!(device.starts_with("WebGPU: "), "{device}");
    e2e::add_two_fixture_classes(client).await;
    e2e::click(client, "analyse-button").await;
}

/// The badge once it names a device that `done` accepts.
async fn badge(client: &fantoccini::Client, done: impl Fn(&str) -> bool) -> String {
    e2e::text_of(client, "device", Duration::from_secs(180), done).await
}

/// The embedding speed the MobileNetV2 card shows once measured, in images per second.
async fn measured_speed(client: &fantoccini::Client, timeout: Duration) -> f64 {
    let text = e2e::wait_for_text(client, "[data-testid=model-mobilenet-v2] .speed", timeout, |t| {
        t.contains("images/s")
    })
    .await
    .expect("the speed was measured");
    text.split_whitespace()
        .next()
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("a speed in {text:?}"))
}

/// In this headless Chromium the only WebGPU adapter is SwiftShader, a software one: the app computes
/// on the CPU and says why on its badge. "Compute on: WebGPU" opens WebGPU on it anyway (kept in the
/// browser, over a reload), "CPU" says it was chosen, "Automatic" goes back. The pictures stay through
/// every switch, and the embedding speed measured on each device shows why the CPU is the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_software_adapter_is_passed_over_for_the_cpu_unless_webgpu_is_chosen() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session().await;
    client.goto(&server.url("/")).await.expect("cannot open the app");
    let title = client.title().await.expect("no title");
    assert!(title.starts_with("Graft"), "unexpected title {title:?}");

    let automatic = badge(&client, |t| t.starts_with("WebGPU: ") || t.starts_with("CPU")).await;
    let shot = e2e::screenshot(&client, "device").await;
    println!("automatic: {automatic:?}; screenshot: {}", shot.display());
    assert!(
        automatic.starts_with("CPU fallback: WebGPU here is a software adapter (")
            && automatic.to_lowercase().contains("swiftshader"),
        "{automatic}"
    );
    // Only the CPU build was downloaded, once: the replica the worker starts loads the same file from
    // the browser's copy (waited for, so that its request is in the log whenever this runs).
    e2e::wait_for_the_replica(&client, Duration::from_secs(60)).await;
    assert_eq!(
        e2e::worker_builds_downloaded(&server),
        ["worker-cpu_bg.wasm"],
        "{:?}",
        e2e::worker_build_requests(&server)
    );
    e2e::add_two_fixture_classes(&client).await;
    e2e::click(&client, "analyse-button").await;
    let on_cpu = measured_speed(&client, Duration::from_secs(120)).await;

    // WebGPU chosen: the page reloads onto it, with the pictures, and the CPU's speed is not shown as
    // WebGPU's.
    e2e::select(&client, "compute-choice", "webgpu").await;
    let chosen = badge(&client, |t| t.starts_with("WebGPU: ")).await;
    assert!(chosen.ends_with("(software adapter)"), "{chosen}");
    for index in 0..2 {
        e2e::text_of(&client, &format!("class-count-{index}"), Duration::from_secs(60), |t| {
            t == "2"
        })
        .await;
    }
    let speed = e2e::wait_for_text(
        &client,
        "[data-testid=model-mobilenet-v2] .speed",
        Duration::from_secs(5),
        |_| true,
    )
    .await
    .expect("speed");
    assert_eq!(speed, "speed here: not measured yet", "a speed from another device");
    e2e::click(&client, "analyse-button").await;
    let on_webgpu = measured_speed(&client, Duration::from_secs(400)).await;
    println!("MobileNetV2 embedding: {on_cpu:.1} images/s on the CPU backend, {on_webgpu:.1} images/s on {chosen}");
    assert!(
        on_cpu > 2.0 * on_webgpu,
        "the software adapter is not slower than the CPU here: {on_cpu:.1} vs {on_webgpu:.1} images/s"
    );
    client.refresh().await.expect("reload");
    let kept = badge(&client, |t| t.starts_with("WebGPU: ") || t.starts_with("CPU")).await;
    assert!(kept.starts_with("WebGPU: "), "the choice is kept over a reload: {kept}");

    e2e::select(&client, "compute-choice", "cpu").await;
    let cpu = badge(&client, |t| t.starts_with("CPU")).await;
    assert_eq!(cpu, "CPU: chosen in the settings");
    e2e::select(&client, "compute-choice", "auto").await;
    let back = badge(&client, |t| t.starts_with("CPU fallback")).await;
    assert_eq!(back, automatic);
    for index in 0..2 {
        e2e::text_of(&client, &format!("class-count-{index}"), Duration::from_secs(60), |t| {
            t == "2"
        })
        .await;
    }
    client.close().await.expect("cannot close the session");
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
    e2e::wait_for_the_replica(&client, Duration::from_secs(60)).await;
    client.close().await.expect("cannot close the session");

    let device = device.expect("the app never reported a compute device");
    assert_eq!(device, "CPU fallback: no WebGPU (the browser found no WebGPU adapter)");
    // The page started the worker's CPU build: the WebGPU one (over three times the bytes) was not
    // downloaded for a browser that cannot use it, and the CPU one once (its replica reuses it).
    let requests = e2e::worker_build_requests(&server);
    println!("worker builds asked for: {requests:?}");
    assert_eq!(
        e2e::worker_builds_downloaded(&server),
        ["worker-cpu_bg.wasm"],
        "{requests:?}"
    );
}

/// A training engine that cannot be loaded (here its wasm is missing from the host; offline, a build
/// not yet stored for offline use) is said so on the page, not left as a page waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_engine_that_cannot_load_is_said_so() {
    // The tests' build without the CPU engine's wasm (every other file linked as it is).
    let root = std::env::temp_dir().join(format!("graft-no-engine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("a temporary root");
    for entry in std::fs::read_dir(e2e::dist_dir()).expect("the tests' build") {
        let entry = entry.expect("an entry");
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("worker-cpu_bg.wasm") {
            std::os::unix::fs::symlink(entry.path(), root.join(&name)).expect("a link");
        }
    }
    let server = StaticServer::start(root.clone());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    client.goto(&server.url("/")).await.expect("cannot open the app");
    let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(60), |t| {
        t.contains("The training engine could not be loaded")
    })
    .await;
    let badge = e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(5), |t| {
        t.starts_with("No training engine")
    })
    .await;
    // Another device can be chosen (the select waits only for a worker that may still start).
    let choice_enabled = client
        .execute(
            "return !document.querySelector('[data-testid=compute-choice]').disabled;",
            Vec::new(),
        )
        .await
        .expect("the compute choice");
    let shot = e2e::screenshot(&client, "engine-missing").await;
    println!(
        "messages: {messages:?}; badge: {badge:?}; screenshot: {}",
        shot.display()
    );
    client.close().await.expect("close");
    assert!(badge.is_ok(), "the badge: {badge:?}");
    assert_eq!(choice_enabled.as_bool(), Some(true), "\"Compute on\" cannot be changed");
    let _ = std::fs::remove_dir_all(&root);
    let messages = messages.expect("no message about the engine that could not be loaded");
    assert!(messages.contains("worker-cpu_bg.wasm"), "{messages}");
    assert!(messages.contains("Compute on"), "what a person can do: {messages}");
}

/// Once loaded, the app works without the server: its service worker answers from the cache, including
/// the training worker and the pretrained weights (a recommendation is computed offline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_works_offline_once_loaded() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    client.goto(&server.url("/")).await.expect("cannot open the app");
    e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(120), |t| {
        t.starts_with("CPU fallback")
    })
    .await
    .expect("device");
    // Wait until the service worker has installed (precached everything) and controls the page.
    let mut controlled = false;
    for _ in 0..240 {
        let state = client
            .execute(
                "return navigator.serviceWorker.controller ? navigator.serviceWorker.controller.state : null;",
                Vec::new(),
            )
            .await
            .expect("service worker state");
        if state.as_str() == Some("activated") {
            controlled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(controlled, "the service worker never took control");
    drop(server);

    client.refresh().await.expect("reload without the server");
    let device = e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(120), |t| {
        t.starts_with("CPU fallback")
    })
    .await;
    if device.is_err() {
        let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(1), |_| true).await;
        panic!("the page and its worker did not load offline: {device:?}; the page says {messages:?}");
    }
    // Two classes from the fixture photos, then a recommendation: the weights come from the cache.
    e2e::add_two_fixture_classes(&client).await;
    e2e::click(&client, "analyse-button").await;
    let recommendation = e2e::wait_for_text(&client, "[data-testid=recommendation]", Duration::from_secs(120), |t| {
        !t.is_empty()
    })
    .await;
    let shot = e2e::screenshot(&client, "offline").await;
    println!(
        "offline recommendation: {recommendation:?}; screenshot {}",
        shot.display()
    );
    assert!(recommendation.expect("a recommendation offline").contains("small-"));
    client.close().await.expect("close");
}

/// The app trains on WebGPU (SwiftShader here): two classes of two fixture photos, a recommendation,
/// head-only training to the end and a prediction, all on the GPU device the badge names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_trains_on_webgpu() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    // Whatever tries to leave the machine goes to this proxy, which refuses it and tells the test.
    let outbound = e2e::OutboundWatch::start();
    let client = driver.session_watched_with_webgpu(&outbound).await;
    open_on_webgpu_analysing_two_classes(&client, &server, e2e::WEBGPU).await;
    let started = std::time::Instant::now();
    let recommendation = e2e::wait_for_text(&client, "[data-testid=recommendation]", Duration::from_secs(300), |t| {
        !t.is_empty()
    })
    .await
    .expect("a recommendation on WebGPU");
    println!("webgpu recommendation after {:?}: {recommendation}", started.elapsed());
    e2e::click(&client, "strategy-head-only").await;
    e2e::click(&client, "train-button").await;
    let started = std::time::Instant::now();
    let accuracy = e2e::wait_for_text(&client, "[data-testid=val-accuracy]", Duration::from_secs(300), |t| {
        t.ends_with('%')
    })
    .await
    .expect("head-only training finished on WebGPU");
    println!(
        "webgpu head-only: validation accuracy {accuracy} after {:?}",
        started.elapsed()
    );
    // The cat and the espresso each in their own class, still on the GPU.
    let cat = e2e::classify(&client, &e2e::fixture_photo("chelsea-224.png")).await;
    let espresso = e2e::classify(&client, &e2e::fixture_photo("coffee-224.png")).await;
    println!("webgpu predictions: the cat {cat:?}, the espresso {espresso:?}");
    assert_eq!(cat[0].0, "Class 1", "{cat:?}");
    assert_eq!(espresso[0].0, "Class 2", "{espresso:?}");
    let device = e2e::text_of(&client, "device", Duration::from_secs(5), |_| true).await;
    assert!(
        device.starts_with("WebGPU: "),
        "training and predicting stayed on WebGPU: {device}"
    );
    assert_eq!(
        e2e::worker_builds_downloaded(&server),
        ["worker_bg.wasm"],
        "{:?}",
        e2e::worker_build_requests(&server)
    );
    let shot = e2e::screenshot(&client, "webgpu-trained").await;
    println!("screenshot {}", shot.display());
    // Nothing of the WebGPU session (measuring, training, predicting) tried to leave the machine.
    outbound.assert_nothing_left(&client).await;
    // The model trained on WebGPU is kept for the next visit (its tensors are read back to the CPU
    // to be saved: the copy once panicked on a model with tensors of two backends, and nothing was
    // kept): in the browser's storage, and back after a reload.
    let script = r#"
        const done = arguments[0];
        const deadline = Date.now() + 60000;
        const look = () => {
            const open = indexedDB.open("graft-project");
            open.onsuccess = () => {
                const db = open.result;
                const request = db.transaction("meta").objectStore("meta").get("model");
                request.onsuccess = () => {
                    db.close();
                    const bytes = request.result ? request.result.length : 0;
                    if (bytes > 0 || Date.now() > deadline) done(bytes);
                    else setTimeout(look, 200);
                };
            };
        };
        look();
    "#;
    let stored = client
        .execute_async(script, vec![])
        .await
        .expect("look for the stored model");
    assert!(
        stored.as_u64().unwrap_or(0) > 1_000_000,
        "the trained model is stored: {stored}"
    );
    e2e::reload(&client).await;
    e2e::wait_for_text(&client, ".panel.try .hint", Duration::from_secs(180), |t| {
        t.contains("The model knows: Class 1, Class 2.")
    })
    .await
    .expect("the model trained on WebGPU is back after a reload");
    let espresso = e2e::classify(&client, &e2e::fixture_photo("coffee-224.png")).await;
    assert_eq!(espresso[0].0, "Class 2", "after the reload: {espresso:?}");
    client.close().await.expect("close");
}

/// The app open on WebGPU in a session watched by `outbound`, with a model made by the engine
/// natively (MobileNetV2 with a new head for "cats" and "espresso") imported; returns the model file.
async fn webgpu_with_an_imported_model(client: &fantoccini::Client, server: &StaticServer, name: &str) -> Vec<u8> {
    client
        .goto(&server.url(e2e::WEBGPU))
        .await
        .expect("cannot open the app");
    let device = e2e::text_of(client, "device", Duration::from_secs(120), |t| {
        t.starts_with("WebGPU: ") || t.starts_with("CPU fallback")
    })
    .await;
    assert!(device.starts_with("WebGPU: "), "{device}");
    let model_file = e2e::engine_model_file(&["cats", "espresso"]);
    let file = std::env::temp_dir().join(format!("graft-{name}-{}.graft", std::process::id()));
    std::fs::write(&file, &model_file).expect("write model file");
    e2e::upload(client, "import-input", std::slice::from_ref(&file)).await;
    let knows = client
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(fantoccini::Locator::XPath(
            "//*[contains(text(), 'The model knows: cats, espresso')]",
        ))
        .await;
    assert!(knows.is_ok(), "the imported model's classes are shown");
    let _ = std::fs::remove_file(&file);
    model_file
}

/// The page shows what the engine, natively, answers for `picture` with `model_file`: every class.
fn assert_engine_answer(shown: &[(String, f64)], model_file: &[u8], picture: &str) {
    let native = e2e::engine_predictions(model_file, &e2e::fixture_photo(picture));
    assert_eq!(shown.len(), native.len(), "{shown:?} vs {native:?}");
    e2e::assert_same_prediction(shown, &native);
}

/// The GPU goes away before a prediction, and (in a second session) before an export: each time the
/// worker moves to the CPU and says so, the answers stay the engine's (natively, from the same file),
/// the exported file holds the imported model, and nothing of either session tries to leave the
/// machine (the watch does see a request that leaves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_lost_while_predicting_or_exporting_is_survived_on_the_cpu() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let outbound = e2e::OutboundWatch::start();

    // Predicting.
    let client = driver.session_watched_with_webgpu(&outbound).await;
    let model_file = webgpu_with_an_imported_model(&client, &server, "gpu-lost-predicting").await;
    let cat = e2e::classify(&client, &e2e::fixture_photo("chelsea-224.png")).await;
    println!("on WebGPU, the cat: {cat:?}");
    assert_engine_answer(&cat, &model_file, "chelsea-224.png");
    e2e::crash_gpu_process(&client).await;
    let espresso = e2e::classify(&client, &e2e::fixture_photo("coffee-224.png")).await;
    println!("after the GPU was lost, the espresso: {espresso:?}");
    assert_engine_answer(&espresso, &model_file, "coffee-224.png");
    let device = e2e::text_of(&client, "device", Duration::from_secs(30), |t| {
        t.starts_with("CPU fallback")
    })
    .await;
    let messages = e2e::text_of(&client, "messages", Duration::from_secs(30), |t| {
        t.contains("Classifying your picture again on the CPU")
    })
    .await;
    println!("badge: {device}; messages: {messages}");
    client.close().await.expect("close");

    // Exporting.
    let client = driver.session_watched_with_webgpu(&outbound).await;
    let model_file = webgpu_with_an_imported_model(&client, &server, "gpu-lost-exporting").await;
    let downloads = e2e::downloads_to_folder(&client, "gpu-lost").await;
    e2e::crash_gpu_process(&client).await;
    e2e::click(&client, "export-button").await;
    let exported = e2e::downloaded(&downloads, "graft-mobilenet-v2.graft").await;
    let messages = e2e::text_of(&client, "messages", Duration::from_secs(30), |t| {
        t.contains("Exporting the model again on the CPU")
    })
    .await;
    println!("messages: {messages}");
    for picture in ["chelsea-224.png", "coffee-224.png"] {
        assert_eq!(
            e2e::engine_predictions(&exported, &e2e::fixture_photo(picture)),
            e2e::engine_predictions(&model_file, &e2e::fixture_photo(picture)),
            "the exported model is the imported one"
        );
    }
    let espresso = e2e::classify(&client, &e2e::fixture_photo("coffee-224.png")).await;
    assert_engine_answer(&espresso, &model_file, "coffee-224.png");

    outbound.assert_nothing_left(&client).await;
    client.close().await.expect("close");
}

/// The GPU goes away mid-training — Chromium's GPU process is crashed (DevTools `Browser.crashGpuProcess`),
/// as a driver reset would take it — and training goes on on the CPU from the last completed batch:
/// the badge says so, a message says from where, the run ends with a model that predicts, and the
/// images are all still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_goes_on_on_the_cpu_when_the_gpu_is_lost() {
    use fantoccini::Locator;

    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = webgpu_app_analysing_two_classes(&server, &driver).await;
    e2e::wait_for_text(&client, "[data-testid=recommendation]", Duration::from_secs(300), |t| {
        !t.is_empty()
    })
    .await
    .expect("a recommendation on WebGPU");
    // Full fine-tuning: every batch runs the whole network on the GPU, so the loss lands mid-batch.
    e2e::click(&client, "strategy-full").await;
    set_epochs(&client, 3).await;
    e2e::click(&client, "train-button").await;
    let started = std::time::Instant::now();
    // After the first batch, so that there is a checkpoint to go on from.
    e2e::wait_for_text(&client, "[data-testid=progress]", Duration::from_secs(300), |t| {
        t.contains("batch 1/")
    })
    .await
    .expect("a first batch on the GPU");

    e2e::crash_gpu_process(&client).await;
    println!("GPU process crashed {:?} after Train", started.elapsed());
    let device = e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(120), |t| {
        t.starts_with("CPU fallback")
    })
    .await
    .expect("the badge says the CPU took over");
    println!("badge: {device}");
    assert!(device.contains("GPU was lost"), "{device}");
    let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(60), |t| {
        t.contains("Training goes on on the CPU, after batch")
            || t.contains("Training goes on on the CPU, the start of epoch")
    })
    .await
    .expect("the person is told");
    println!("messages: {messages}");
    let progress = e2e::wait_for_text(&client, "[data-testid=progress]", Duration::from_secs(600), |t| {
        t.starts_with("Training done")
    })
    .await
    .expect("training finished on the CPU");
    println!("progress: {progress} ({:?} after Train)", started.elapsed());
    assert!(progress.contains("after 3 epochs"), "every epoch ran: {progress}");
    let accuracy = e2e::wait_for_text(&client, "[data-testid=val-accuracy]", Duration::from_secs(30), |t| {
        t.ends_with('%')
    })
    .await
    .expect("an accuracy");
    println!("validation accuracy {accuracy}");
    for index in 0..2 {
        let count = client
            .find(Locator::Css(&format!("[data-testid=class-count-{index}]")))
            .await
            .expect("count")
            .text()
            .await
            .expect("text");
        assert_eq!(count, "2", "class {index} keeps its images");
    }
    let prediction = e2e::predict_fixture(&client, "chelsea-224.png")
        .await
        .expect("the model trained across the loss predicts");
    println!("prediction after the loss: {prediction:?}");
    // The top of the page: the badge and the messages.
    client.execute("window.scrollTo(0, 0)", vec![]).await.expect("scroll");
    let shot = e2e::screenshot(&client, "gpu-lost").await;
    println!("screenshot {}", shot.display());
    client.close().await.expect("close");
}

/// The GPU goes away while the recommender measures the pictures: the worker notices, moves to the
/// CPU and measures again there; the person gets the recommendation and is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_lost_while_recommending_is_survived_on_the_cpu() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = webgpu_app_analysing_two_classes(&server, &driver).await;
    // Once the pretrained weights are on the GPU and the worker has begun measuring there (it says
    // how many pictures; SwiftShader takes seconds for the first batch).
    let measuring = e2e::text_of(&client, "measuring", Duration::from_secs(180), |t| {
        let counts: Vec<usize> = t
            .trim_start_matches("Measuring… ")
            .trim_end_matches(" images")
            .split('/')
            .filter_map(|n| n.parse().ok())
            .collect();
        matches!(counts[..], [done, total] if total > 0 && done < total)
    })
    .await;
    println!("the GPU crashes at: {measuring}");
    e2e::crash_gpu_process(&client).await;
    let recommendation = e2e::wait_for_text(&client, "[data-testid=recommendation]", Duration::from_secs(300), |t| {
        !t.is_empty()
    })
    .await
    .expect("a recommendation after the loss");
    let device = e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(30), |t| {
        t.starts_with("CPU fallback")
    })
    .await
    .expect("the badge says the CPU took over");
    let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(30), |t| {
        t.contains("again on the CPU")
    })
    .await
    .expect("the person is told");
    println!("badge: {device}\nmessages: {messages}\nrecommendation: {recommendation}");
    client.close().await.expect("close");
}

/// The GPU runs out of memory mid-training (WebGPU reports it out of band, as an uncaptured
/// `GPUOutOfMemoryError`; no device here runs out by itself, so the page's `?fault=gpu-out-of-memory`
/// has the worker report one after the first batch, where its error handler would): training goes on
/// on the same GPU from the last completed batch in batches half the size, the person is told, and
/// the run ends with every epoch done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_goes_on_in_smaller_batches_when_the_gpu_runs_out_of_memory() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client =
        webgpu_app_at_analysing_two_classes(&server, &driver, "/?fault=gpu-out-of-memory&compute=webgpu").await;
    e2e::wait_for_text(&client, "[data-testid=recommendation]", Duration::from_secs(300), |t| {
        !t.is_empty()
    })
    .await
    .expect("a recommendation on WebGPU");
    e2e::click(&client, "strategy-full").await;
    set_epochs(&client, 2).await;
    e2e::click(&client, "train-button").await;
    let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(300), |t| {
        t.contains("ran out of memory")
    })
    .await
    .expect("the person is told");
    println!("messages: {messages}");
    assert!(
        messages.contains(
            "The GPU ran out of memory with batches of 2 images (Out of Memory (injected for a test)). \
             Training goes on on the GPU in batches of 1, after batch 1 of epoch 1: nothing learnt so far is lost."
        ),
        "{messages}"
    );
    let progress = e2e::wait_for_text(&client, "[data-testid=progress]", Duration::from_secs(600), |t| {
        t.starts_with("Training done")
    })
    .await
    .expect("training finished");
    println!("progress: {progress}");
    assert!(progress.contains("after 2 epochs"), "every epoch ran: {progress}");
    let device = e2e::by_id(&client, "device").await.text().await.expect("badge");
    assert!(device.starts_with("WebGPU: "), "still on the GPU: {device}");
    e2e::predict_fixture(&client, "coffee-224.png")
        .await
        .expect("the model predicts");
    client.execute("window.scrollTo(0, 0)", vec![]).await.expect("scroll");
    let shot = e2e::screenshot(&client, "gpu-out-of-memory").await;
    println!("screenshot {}", shot.display());
    client.close().await.expect("close");
}

/// Opens the advanced settings and sets the number of epochs.
async fn set_epochs(client: &fantoccini::Client, epochs: usize) {
    client
        .find(fantoccini::Locator::Css("details.advanced summary"))
        .await
        .expect("advanced settings")
        .click()
        .await
        .expect("open advanced settings");
    e2e::by_id(client, "epochs-input")
        .await
        .send_keys(&epochs.to_string())
        .await
        .expect("type epochs");
}
