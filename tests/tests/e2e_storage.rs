//! End-to-end: what the app does when the browser's storage fails it: damaged records are dropped on
//! reload with a message and the rest of the project comes back. (A full storage could not be made
//! here: through ChromeDriver, Chromium 156 reports DevTools' `Storage.overrideQuotaForOrigin` as
//! active — `Storage.getUsageAndQuota` says quota 1000 — yet the page's `navigator.storage.estimate()`
//! still reports the disk-based quota and IndexedDB writes past the override succeed.)
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use fantoccini::{Client, Locator};
use graft_tests::e2e::{self, ChromeDriver, StaticServer};

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
    client.refresh().await.expect("reload");
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
