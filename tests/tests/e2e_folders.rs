//! End-to-end: folders of classes in, as a person has them on disk, and nothing lost on the way.
//!
//! Every picture of a chosen or dropped folder lands in its own class, in one go, whatever the number
//! of classes (5 on WebGPU; 12 classes and several hundred pictures on the CPU backend), and is back
//! after a reload; classes deleted, renamed or added while pictures are still on their way to the
//! worker never send a picture into another class.
#![cfg(not(target_arch = "wasm32"))]

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::Client;
use graft_tests::e2e::{self, ChromeDriver, StaticServer, text_of};
use graft_tests::picture_folders::{Scratch, sources, take, write_classes};

async fn open(client: &Client, server: &StaticServer, device_prefix: &str) {
    let path = if device_prefix == "WebGPU" { e2e::WEBGPU } else { "/" };
    client.goto(&server.url(path)).await.expect("cannot open the app");
    text_of(client, "device", Duration::from_secs(180), |t| {
        t.starts_with(device_prefix)
    })
    .await;
}

/// No picture was refused: the messages say nothing was left out.
async fn assert_nothing_refused(client: &Client) {
    let messages = e2e::messages(client).await;
    assert!(
        !messages.contains("not added") && !messages.contains("left out"),
        "pictures were refused: {messages}"
    );
}

/// The issue's case: a fresh profile, WebGPU, "Choose a folder…" with five class folders — every
/// class gets all its pictures at once, and a reload brings back the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_folder_of_five_classes_keeps_every_picture_on_webgpu() {
    let sources = sources();
    let scratch = Scratch::new("five-classes");
    let chosen = scratch.0.join("my pictures");
    let expected = write_classes(
        &chosen,
        &[
            ("animal", take(&sources, 0, 0, 6)),
            ("fish", take(&sources, 1, 0, 7)),
            ("monument", take(&sources, 2, 0, 8)),
            ("renewable", take(&sources, 3, 0, 9)),
            ("tool", take(&sources, 4, 0, 10)),
        ],
    );

    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session().await;
    open(&client, &server, "WebGPU").await;
    e2e::upload(&client, "folder-input", &[chosen]).await;
    e2e::wait_for_classes(&client, &expected, Duration::from_secs(120)).await;
    assert_nothing_refused(&client).await;
    let shot = e2e::screenshot(&client, "folders-five-classes").await;
    println!("five classes chosen: {expected:?}; screenshot {}", shot.display());

    e2e::reload(&client).await;
    text_of(&client, "device", Duration::from_secs(180), |t| t.starts_with("WebGPU")).await;
    e2e::wait_for_classes(&client, &expected, Duration::from_secs(120)).await;
    assert_nothing_refused(&client).await;
    client.close().await.expect("close");
}

/// Twelve classes of 20 to 53 pictures (438 in all) with odd names, chosen as a folder on the CPU
/// backend; then a folder of five more classes dropped onto the panel. Every count exact, right
/// after and after a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_classes_of_several_hundred_pictures_chosen_and_five_dropped_on_the_cpu() {
    let sources = sources();
    let scratch = Scratch::new("twelve-classes");
    let names = [
        "Birds (wild)",
        "birds 2",
        "Café crème",
        "ünïcödé",
        "with  two spaces",
        "x#y&z",
        "UPPER",
        "lower",
        "1 digits first",
        "émoji 🐟",
        "a.b.c",
        "zz last",
    ];
    // Each class its own count, so that a picture in the wrong class changes two counts.
    let classes: Vec<(&str, Vec<PathBuf>)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, take(&sources, i, (i / 6) * 60, 20 + 3 * i)))
        .collect();
    let chosen = scratch.0.join("Meine Bilder");
    let mut expected = write_classes(&chosen, &classes);
    assert_eq!(expected.iter().map(|(_, n)| n).sum::<usize>(), 438);

    let dropped = scratch.0.join("more classes");
    let extra: Vec<(String, Vec<PathBuf>)> = (0..5)
        .map(|i| (format!("dropped {i}"), take(&sources, i, 115, 1 + i)))
        .collect();
    let extra_refs: Vec<(&str, Vec<PathBuf>)> = extra.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    let expected_dropped = write_classes(&dropped, &extra_refs);

    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    open(&client, &server, "CPU fallback").await;
    let started = std::time::Instant::now();
    e2e::upload(&client, "folder-input", &[chosen]).await;
    e2e::wait_for_classes(&client, &expected, Duration::from_secs(300)).await;
    println!(
        "438 pictures in 12 classes taken in: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_nothing_refused(&client).await;

    e2e::drop_paths(&client, "data-drop", &[dropped]).await;
    expected.extend(expected_dropped);
    e2e::wait_for_classes(&client, &expected, Duration::from_secs(120)).await;
    assert_nothing_refused(&client).await;
    let shot = e2e::screenshot(&client, "folders-twelve-classes").await;
    println!("17 classes: screenshot {}", shot.display());

    e2e::reload(&client).await;
    e2e::wait_for_classes(&client, &expected, Duration::from_secs(300)).await;
    assert_nothing_refused(&client).await;
    client.close().await.expect("close");
}

/// While a chosen folder's pictures are still on their way to the worker: the first class is
/// deleted as soon as its first pictures show, the second renamed as soon as its first show, and a
/// class added. None of the deleted class's pictures lands anywhere; the renamed class has exactly
/// its own; the same after a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classes_deleted_renamed_and_added_while_pictures_arrive_keep_their_own() {
    let sources = sources();
    let scratch = Scratch::new("edits-in-flight");
    let chosen = scratch.0.join("edits");
    write_classes(
        &chosen,
        &[
            ("a deleted", take(&sources, 0, 0, 120)),
            ("b renamed", take(&sources, 1, 0, 41)),
            ("c kept", take(&sources, 2, 0, 67)),
        ],
    );

    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    open(&client, &server, "CPU fallback").await;
    // Watches the cards from inside the page, so that each edit happens at the first change that
    // allows it, not a WebDriver round trip later; what it did is in `window.graftEdits`.
    // It also watches "+ Add class" while the pictures are being stored: nothing under a person's
    // pointer may move because an edit is on its way (the indicator of it once pushed the studio
    // down and back at every edit; a second click then landed on the text above the button).
    let watch = r#"
        const seen = { pending: 0, tops: {} };
        window.graftEdits = seen;
        const button = () => document.querySelector('[data-testid=add-class]');
        const watchLayout = () => {
            seen.pending = Math.max(seen.pending, Number(document.querySelector('main').dataset.editsPending));
            // Messages above the panel move it, and stay: one position per number of messages.
            const messages = document.querySelectorAll('[data-testid=messages] li').length;
            const top = Math.round(button().getBoundingClientRect().top + window.scrollY);
            (seen.tops[messages] ??= []).includes(top) || seen.tops[messages].push(top);
        };
        const card = (name) => [...document.querySelectorAll('.class-card')]
            .find(c => c.querySelector('[data-testid^=class-name-]').value === name);
        const count = (c) => Number(c.querySelector('[data-testid^=class-count-]').textContent);
        const step = () => {
            watchLayout();
            const a = card('a deleted');
            if (!('deleted_at' in seen) && a && count(a) > 0) {
                seen.deleted_at = count(a);
                a.querySelector('[data-testid^=class-delete-]').click();
            }
            const b = card('b renamed');
            if ('deleted_at' in seen && !('renamed_at' in seen) && b && count(b) > 0) {
                seen.renamed_at = count(b);
                const input = b.querySelector('[data-testid^=class-name-]');
                input.value = 'b (new name)';
                input.dispatchEvent(new Event('change', { bubbles: true }));
                // "+ Add class" names it after the number of classes there are.
                seen.added = 'Class ' + (document.querySelectorAll('.class-card').length + 1);
                button().click();
            }
        };
        const observer = new MutationObserver(step);
        observer.observe(document.body, { subtree: true, childList: true, characterData: true });
    "#;
    client.execute(watch, Vec::new()).await.expect("watch the cards");
    e2e::upload(&client, "folder-input", &[chosen]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let seen = loop {
        let seen = client
            .execute("return window.graftEdits;", Vec::new())
            .await
            .expect("edits");
        if seen.get("added").is_some() {
            break seen;
        }
        assert!(std::time::Instant::now() < deadline, "the edits were not made: {seen}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("edits while pictures arrived: {seen}");
    let deleted_at = seen["deleted_at"].as_u64().expect("deleted");
    let renamed_at = seen["renamed_at"].as_u64().expect("renamed");
    assert!(deleted_at < 120, "the class was deleted after all its pictures arrived");
    assert!(renamed_at < 41, "the class was renamed after all its pictures arrived");
    let added = seen["added"].as_str().expect("added").to_string();

    let mut expected = vec![("b (new name)".to_string(), 41), ("c kept".to_string(), 67), (added, 0)];
    expected.sort();
    e2e::wait_for_classes_in_any_order(&client, &expected, Duration::from_secs(120)).await;
    let layout = client
        .execute("return window.graftEdits;", Vec::new())
        .await
        .expect("edits");
    println!(
        "edits pending at most {}, \"+ Add class\" at {}",
        layout["pending"], layout["tops"]
    );
    assert!(
        layout["pending"].as_u64().is_some_and(|n| n > 1),
        "the page never had edits on their way: {layout}"
    );
    for (messages, tops) in layout["tops"].as_object().expect("tops") {
        let tops = tops.as_array().expect("tops");
        assert_eq!(
            tops.len(),
            1,
            "\"+ Add class\" moved while edits were being stored ({messages} messages shown): at {tops:?}"
        );
    }
    let shot = e2e::screenshot(&client, "folders-edits-in-flight").await;
    println!(
        "messages: {}; screenshot {}",
        e2e::messages(&client).await,
        shot.display()
    );

    e2e::reload(&client).await;
    e2e::wait_for_classes_in_any_order(&client, &expected, Duration::from_secs(120)).await;
    client.close().await.expect("close");
}
