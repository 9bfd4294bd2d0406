//! End-to-end: what the app does when the browser's storage fails it: damaged records are dropped on
//! reload with a message and the rest of the project comes back; a full storage is reported, loses
//! nothing already stored (pictures and a model), and what did not fit is saved once there is room. (The full storage is made
//! with DevTools' `Storage.overrideQuotaForOrigin`: `navigator.storage.estimate()` keeps reporting the
//! disk-based quota under it, but IndexedDB writes past the override fail with `QuotaExceededError`,
//! exactly as on a full disk.)
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use fantoccini::{Client, Locator};
use graft_tests::datasets;
use graft_tests::e2e::{self, ChromeDriver, StaticServer, by_id};

/// Records in the project's `images` store (once `expected` are there, or after 30 s).
async fn stored_images(client: &Client, expected: u64) -> u64 {
    let script = r#"
        const [expected, done] = arguments;
        const deadline = Date.now() + 30000;
        const count = () => {
            const open = indexedDB.open("graft-project");
            open.onsuccess = () => {
                const db = open.result;
                const request = db.transaction("images").objectStore("images").count();
                request.onsuccess = () => {
                    db.close();
                    if (request.result >= expected || Date.now() > deadline) done(request.result);
                    else setTimeout(count, 200);
                };
            };
        };
        count();
    "#;
    client
        .execute_async(script, vec![expected.into()])
        .await
        .expect("count stored images")
        .as_u64()
        .expect("a count")
}

/// Waits (up to a minute) until the class cards show `expected` picture counts, and returns what they
/// show then: a restored project's pictures arrive after its classes.
async fn counts_become(client: &Client, expected: &[&str]) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shown = counts(client, expected.len()).await;
        if shown == expected || std::time::Instant::now() >= deadline {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn counts(client: &Client, classes: usize) -> Vec<String> {
    let mut counts = Vec::new();
    for index in 0..classes {
        counts.push(
            client
                .find(Locator::Css(&format!("[data-testid=class-count-{index}]")))
                .await
                .expect("count")
                .text()
                .await
                .expect("text"),
        );
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_stored_pictures_are_dropped_with_a_message_and_the_rest_comes_back() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    client.goto(&server.url("/")).await.expect("open the app");
    e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(180), |t| {
        t.starts_with("CPU fallback")
    })
    .await
    .expect("the worker is ready");
    e2e::add_two_fixture_classes(&client).await;
    assert_eq!(stored_images(&client, 4).await, 4, "all four pictures stored");

    // Damage two records the way a broken disk or a foreign write would: one picture's bytes become
    // garbage, another record loses its name.
    let script = r#"
        const done = arguments[0];
        const open = indexedDB.open("graft-project");
        open.onsuccess = () => {
            const db = open.result;
            const tx = db.transaction("images", "readwrite");
            const store = tx.objectStore("images");
            const all = store.getAll();
            all.onsuccess = () => {
                const [first, second] = all.result;
                first.jpeg = new Uint8Array([0xff, 0xd8, 0xff, 0x00, 1, 2, 3, 4, 5]);
                delete second.name;
                store.put(first);
                store.put(second);
            };
            tx.oncomplete = () => { db.close(); done("damaged"); };
        };
    "#;
    client.execute_async(script, vec![]).await.expect("damage two records");
    e2e::reload(&client).await;
    let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(120), |t| {
        t.contains("damaged")
    })
    .await
    .expect("a message about the damaged pictures");
    println!("messages after the reload: {messages}");
    assert!(
        messages.contains("2 stored images were damaged and have been dropped"),
        "{messages}"
    );
    let counts = counts(&client, 2).await;
    let total: usize = counts.iter().map(|c| c.parse::<usize>().expect("a number")).sum();
    assert_eq!(total, 2, "the two sound pictures are back: {counts:?}");
    let shot = e2e::screenshot(&client, "storage-damaged").await;
    println!("screenshot {}", shot.display());
    client.close().await.expect("close");
}

/// Bytes this origin uses in the browser's storage, as the quota manager counts them.
async fn usage(client: &Client, origin: &str) -> u64 {
    let reply = e2e::devtools(
        client,
        "Storage.getUsageAndQuota",
        serde_json::json!({ "origin": origin }),
    )
    .await;
    reply["usage"].as_u64().expect("usage")
}

/// Makes the origin's storage full: its quota becomes what it uses now (`false` lifts the limit).
async fn storage_full(client: &Client, origin: &str, full: bool) {
    let params = if full {
        serde_json::json!({ "origin": origin, "quotaSize": usage(client, origin).await })
    } else {
        serde_json::json!({ "origin": origin })
    };
    e2e::devtools(client, "Storage.overrideQuotaForOrigin", params).await;
}

/// Waits (at most a minute) until this origin's storage refuses a write of 64 KiB, tried once a
/// second in a scratch database that is deleted afterwards: Chromium grants writes from what the
/// quota manager last said was free for up to 30 s after the quota changed.
async fn until_writes_are_refused(client: &Client) {
    const PROBE: &str = r#"
        const done = arguments[arguments.length - 1];
        const open = indexedDB.open('graft-quota-probe', 1);
        open.onupgradeneeded = () => open.result.createObjectStore('probe');
        open.onerror = () => done(String(open.error && open.error.name));
        open.onsuccess = () => {
            const db = open.result;
            const tx = db.transaction('probe', 'readwrite');
            tx.objectStore('probe').put(new Uint8Array(65536).fill(7), 'bytes');
            tx.oncomplete = () => { db.close(); done('stored'); };
            tx.onabort = () => { db.close(); done(String(tx.error && tx.error.name)); };
        };"#;
    const DELETE: &str = r#"
        const done = arguments[arguments.length - 1];
        const request = indexedDB.deleteDatabase('graft-quota-probe');
        request.onsuccess = request.onerror = request.onblocked = () => done(null);"#;
    let started = std::time::Instant::now();
    loop {
        let answer = client.execute_async(PROBE, Vec::new()).await.expect("the probe runs");
        if answer == "QuotaExceededError" {
            println!(
                "writes refused {:.1} s after the quota changed",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert_eq!(answer, "stored", "the probe write");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the storage still takes writes a minute after it was made full"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    client
        .execute_async(DELETE, Vec::new())
        .await
        .expect("the probe is deleted");
}

async fn unsaved_banner(client: &Client) -> Option<String> {
    match client.find(Locator::Css("[data-testid=unsaved]")).await {
        Ok(element) => Some(element.text().await.expect("text")),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_storage_is_reported_loses_nothing_stored_and_saves_what_did_not_fit_once_there_is_room() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    let url = server.url("/");
    let origin = url.trim_end_matches('/').to_string();
    client.goto(&url).await.expect("open the app");
    e2e::wait_for_text(&client, "[data-testid=device]", Duration::from_secs(180), |t| {
        t.starts_with("CPU fallback")
    })
    .await
    .expect("the worker is ready");
    e2e::add_two_fixture_classes(&client).await;
    assert_eq!(stored_images(&client, 4).await, 4, "all four pictures stored");

    // The storage fills up. Chromium's IndexedDB grants writes from what the quota manager last said
    // was free, an allowance that decays to nothing over 30 s (`kBucketSpaceCacheTimeLimit`): past
    // that, every write asks the quota manager and the full storage shows: wait until a write is refused.
    storage_full(&client, &origin, true).await;
    until_writes_are_refused(&client).await;
    let photos = datasets::tuxpaint_photos("birds", 2);
    e2e::upload(&client, "class-files-0", &photos).await;
    let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(60), |t| {
        t.contains("storage for this site is full")
    })
    .await
    .expect("a message about the full storage");
    println!("messages with the storage full: {messages}");
    assert!(
        messages.contains(
            "2 pictures are in this session but would be gone after a reload; everything saved before is kept"
        ),
        "{messages}"
    );
    let banner = e2e::wait_for_text(&client, "[data-testid=unsaved]", Duration::from_secs(10), |t| {
        t.contains("2 pictures")
    })
    .await
    .expect("the unsaved banner");
    println!("banner: {banner}");
    // The pictures are in the session (they can be trained on) and the class shows them.
    assert_eq!(counts(&client, 2).await, ["4", "2"]);
    let shot = e2e::screenshot(&client, "storage-full").await;
    println!("screenshot {}", shot.display());
    // Nothing stored before was touched.
    assert_eq!(
        stored_images(&client, 4).await,
        4,
        "the stored pictures are all still there"
    );

    // A model imported now works, but cannot be saved either; the banner says so too.
    let file = std::env::temp_dir().join(format!("graft-e2e-storage-{}.graft", std::process::id()));
    std::fs::write(&file, e2e::engine_model_file(&["cats", "espresso"])).expect("write model file");
    e2e::upload(&client, "import-input", std::slice::from_ref(&file)).await;
    let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(60), |t| {
        t.contains("model could not be saved")
    })
    .await
    .expect("a message about the model");
    assert!(
        messages.contains("The trained model could not be saved for the next visit (the browser's storage for this site is full). It works until the page is reloaded: Export keeps it as a file."),
        "{messages}"
    );
    let banner = e2e::wait_for_text(&client, "[data-testid=unsaved]", Duration::from_secs(10), |t| {
        t.contains("2 pictures and the trained model")
    })
    .await
    .expect("the banner names the model too");
    println!("banner: {banner}");
    let prediction = e2e::predict_fixture(&client, "coffee-224.png")
        .await
        .expect("a prediction");
    println!("prediction with the unsaved model: {prediction:?}");
    let _ = std::fs::remove_file(&file);

    // Room again (space freed elsewhere) and a picture removed here: what did not fit is saved now.
    storage_full(&client, &origin, false).await;
    client
        .execute(
            "document.querySelector('[data-testid=image-remove-1-0]').scrollIntoView({block: 'center'})",
            vec![],
        )
        .await
        .expect("scroll");
    by_id(&client, "image-remove-1-0")
        .await
        .click()
        .await
        .expect("remove a picture");
    let messages = e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(60), |t| {
        t.contains("saved now")
    })
    .await
    .expect("a message that the pictures are saved");
    assert!(
        messages.contains("the 2 pictures that did not fit are saved now"),
        "{messages}"
    );
    e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(30), |t| {
        t.contains("the trained model is saved now")
    })
    .await
    .expect("the model saved too");
    assert_eq!(stored_images(&client, 5).await, 5, "4 - 1 removed + 2 saved late");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while unsaved_banner(&client).await.is_some() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(unsaved_banner(&client).await, None, "nothing left unsaved");

    // A reload brings back every picture, the ones saved late included, and not the removed one.
    e2e::reload(&client).await;
    e2e::wait_for_text(&client, "[data-testid=messages]", Duration::from_secs(120), |t| {
        t.contains("back as you left it")
    })
    .await
    .expect("the project restored");
    assert_eq!(counts_become(&client, &["4", "1"]).await, ["4", "1"]);
    // And the model saved late came back with it.
    let prediction = e2e::predict_fixture(&client, "coffee-224.png")
        .await
        .expect("a prediction after the reload");
    assert!(
        prediction.contains("espresso") && prediction.contains("cats"),
        "{prediction}"
    );
    client.close().await.expect("close");
}
