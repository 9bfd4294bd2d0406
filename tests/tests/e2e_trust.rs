//! End-to-end: a model file a person was sent is untrusted, and a bug in the worker is not the end of
//! the session. A `.graft` file whose header was changed (its checksum still right: it covers only the
//! weights) is refused on import with a message that names the field, the model the person had keeps
//! working, and the project is intact after a reload. A panic in the worker (injected with the tests'
//! `?fault=predict-panic`) is said in the page, the worker is started again with the project read back
//! from storage, and the next prediction works.
#![cfg(not(target_arch = "wasm32"))]

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::Client;
use graft_tests::datasets;
use graft_tests::e2e::{self, ChromeDriver, StaticServer, by_id};

/// `bytes` (a `.graft` file) with its JSON header changed by `edit`, the weights untouched.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let length = u32::from_le_bytes(bytes[8..12].try_into().expect("a header length")) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[12..12 + length]).expect("a JSON header");
    edit(&mut header);
    let json = serde_json::to_vec(&header).expect("JSON");
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[12 + length..]);
    out
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("graft-e2e-trust-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).expect("write the model file");
    path
}

/// The CPU app with two classes of two pictures and an imported model that knows `cats` and
/// `espresso`, stored.
async fn app_with_a_model(client: &Client, server: &StaticServer, query: &str, good: &[u8]) {
    client
        .goto(&server.url(&format!("/{query}")))
        .await
        .expect("open the app");
    e2e::wait_for_text(client, "[data-testid=device]", Duration::from_secs(180), |t| {
        t.starts_with("CPU fallback")
    })
    .await
    .expect("the worker is ready");
    e2e::add_two_fixture_classes(client).await;
    let file = temp_file("good.graft", good);
    e2e::upload(client, "import-input", std::slice::from_ref(&file)).await;
    knows_cats_and_espresso(client).await;
    e2e::stored(client).await;
    let _ = std::fs::remove_file(&file);
}

async fn knows_cats_and_espresso(client: &Client) {
    e2e::wait_for_text(client, ".panel.try .hint", Duration::from_secs(60), |t| {
        t.contains("The model knows: cats, espresso.")
    })
    .await
    .expect("the model is ready");
}

/// The labels of a prediction of the coffee photo (the model's two classes, both shown).
async fn prediction_labels(client: &Client) -> Vec<String> {
    e2e::predict_fixture(client, "coffee-224.png")
        .await
        .expect("a prediction");
    let mut labels: Vec<String> = e2e::prediction_shown(client)
        .await
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    labels.sort();
    labels
}

fn two_classes_of_two() -> Vec<(String, usize)> {
    vec![("Class 1".into(), 2), ("Class 2".into(), 2)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_model_file_is_refused_in_words_and_nothing_is_lost() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    let good = e2e::engine_model_file(&["cats", "espresso"]);
    app_with_a_model(&client, &server, "", &good).await;
    assert_eq!(prediction_labels(&client).await, ["cats", "espresso"]);

    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            // Before: the worker panicked (`Buffer length in ImageBuffer::new overflow`) at the next
            // prediction and the page showed nothing.
            "huge.graft",
            Box::new(|h| {
                h["input_size"] = 100_000.into();
                h["resize_short_side"] = 100_000.into();
            }),
            "huge.graft cannot be used: this file says the pictures are 100000 px wide; MobileNetV2 takes 224",
        ),
        (
            "std0.graft",
            Box::new(|h| h["normalisation"]["std"] = serde_json::json!([0, 0, 0])),
            "std0.graft cannot be used: this file's normalisation has a standard deviation of 0 for red",
        ),
        (
            "twice.graft",
            Box::new(|h| h["classes"] = serde_json::json!(["cats", "cats"])),
            "twice.graft cannot be used: this file names the class \"cats\" twice",
        ),
    ];
    for (name, edit, says) in cases {
        // The file's name in the page is the one chosen, so each is written under its own.
        let file = std::env::temp_dir()
            .join(format!("trust-{}", std::process::id()))
            .join(name);
        std::fs::create_dir_all(file.parent().unwrap()).expect("a folder");
        std::fs::write(&file, with_header(&good, edit)).expect("write");
        e2e::upload(&client, "import-input", std::slice::from_ref(&file)).await;
        let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(60), |t| {
            t.contains(name)
        })
        .await
        .expect("a message about the file");
        assert!(messages.contains(says), "{messages:?} does not say {says:?}");
        let _ = std::fs::remove_file(&file);
    }
    let shot = e2e::screenshot(&client, "trust-refused-model").await;
    println!("screenshot {}", shot.display());
    // The model the person had still answers; nothing of the project changed.
    knows_cats_and_espresso(&client).await;
    assert_eq!(prediction_labels(&client).await, ["cats", "espresso"]);
    e2e::wait_for_classes(&client, &two_classes_of_two(), Duration::from_secs(10)).await;

    // After a reload: the pictures and the good model (never replaced by a refused one).
    e2e::reload(&client).await;
    e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(120), |t| {
        t.contains("back as you left it")
    })
    .await
    .expect("the project restored");
    e2e::wait_for_classes(&client, &two_classes_of_two(), Duration::from_secs(60)).await;
    knows_cats_and_espresso(&client).await;
    assert_eq!(prediction_labels(&client).await, ["cats", "espresso"]);
    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_worker_is_said_and_the_next_prediction_works() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    let good = e2e::engine_model_file(&["cats", "espresso"]);
    app_with_a_model(&client, &server, "?fault=predict-panic", &good).await;

    // The prediction panics in the worker: the page says what failed and that the project is kept.
    by_id(&client, "predict-input")
        .await
        .send_keys(&e2e::fixture_photo("coffee-224.png").display().to_string())
        .await
        .expect("choose a picture");
    let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(60), |t| {
        t.contains("internal error")
    })
    .await
    .expect("the crash is said");
    println!("messages after the panic: {messages}");
    assert!(
        messages.contains(
            "Graft's engine stopped on an internal error while classifying your picture (the panic a test asked for, while classifying a picture (at app/worker/src/serve.rs:"
        ),
        "{messages}"
    );
    assert!(
        messages.contains("It was restarted with your project as it was last saved"),
        "{messages}"
    );
    // A new worker: ready again, with the project read back from storage.
    e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(180), |t| {
        t.contains("back as you left it")
    })
    .await
    .expect("the project read back by the new worker");
    e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(180), |t| {
        t.starts_with("CPU fallback")
    })
    .await
    .expect("the new worker is ready");
    let shot = e2e::screenshot(&client, "trust-worker-restarted").await;
    println!("screenshot {}", shot.display());
    e2e::wait_for_classes(&client, &two_classes_of_two(), Duration::from_secs(60)).await;
    knows_cats_and_espresso(&client).await;
    assert_eq!(prediction_labels(&client).await, ["cats", "espresso"]);

    // And the page goes on editing the project through the new worker, kept over a reload.
    e2e::click(&client, "add-class").await;
    // A photo of its own (the four fixtures are in the first two classes: a copy would be refused).
    e2e::upload(&client, "class-files-2", &datasets::tuxpaint_photos("birds", 1)).await;
    let three = vec![("Class 1".into(), 2), ("Class 2".into(), 2), ("Class 3".into(), 1)];
    e2e::wait_for_classes(&client, &three, Duration::from_secs(60)).await;
    e2e::reload(&client).await;
    e2e::wait_for_classes(&client, &three, Duration::from_secs(120)).await;
    knows_cats_and_espresso(&client).await;
    client.close().await.expect("close");
}
