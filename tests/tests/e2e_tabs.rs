//! End-to-end: two tabs of one browser profile on one project. One tab edits it at a time; the other
//! says so and can take it over; nothing the person did not delete is lost, and nothing deleted comes
//! back, whatever the order of edits, reloads and training in the two tabs.
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use fantoccini::Client;
use fantoccini::wd::WindowHandle;
use graft_tests::e2e::{self, ChromeDriver, StaticServer, by_id, click, text_of};
use graft_tests::picture_folders::{Scratch, sources, take, write_classes};

const WAIT: Duration = Duration::from_secs(180);

/// Brings tab `tab` to the front (WebDriver commands go to it from now on).
async fn to(client: &Client, tab: &WindowHandle) {
    client.switch_to_window(tab.clone()).await.expect("switch tab");
}

/// Waits until the tab has opened the device (and with it, the project or the notice that another
/// tab has it).
async fn opened(client: &Client) {
    text_of(client, "device", WAIT, |t| t.starts_with("CPU fallback")).await;
}

/// The notice that another tab holds the project, as this tab shows it.
async fn elsewhere(client: &Client) -> String {
    text_of(client, "open-elsewhere", WAIT, |t| t.contains("another tab")).await
}

/// Whether the studio can be used (it is inert while another tab holds the project).
async fn usable(client: &Client) -> bool {
    let inert = client
        .execute("return document.querySelector('.studio').inert;", Vec::new())
        .await
        .expect("studio");
    !inert.as_bool().expect("inert is a bool")
}

fn owned(classes: &[(&str, usize)]) -> Vec<(String, usize)> {
    classes.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

/// The sequence and its reverse, then training in one tab while the other edits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_on_one_project_never_lose_or_resurrect_anything() {
    let sources = sources();
    let scratch = Scratch::new("two-tabs");
    let chosen = scratch.0.join("five");
    let five = write_classes(
        &chosen,
        &[
            ("animal", take(&sources, 0, 0, 6)),
            ("fish", take(&sources, 1, 0, 6)),
            ("monument", take(&sources, 2, 0, 6)),
            ("renewable", take(&sources, 3, 0, 6)),
            ("tool", take(&sources, 4, 0, 6)),
        ],
    );
    let more_animals = take(&sources, 0, 6, 2);

    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;

    // Tab A: a folder of five classes.
    let a = client.window().await.expect("tab A");
    client.goto(&server.url("/")).await.expect("open A");
    opened(&client).await;
    assert!(usable(&client).await, "the first tab holds the project");
    e2e::upload(&client, "folder-input", std::slice::from_ref(&chosen)).await;
    e2e::wait_for_classes(&client, &five, WAIT).await;

    // Tab B: the project is A's; B shows none of it and says so, until "Use Graft in this tab".
    let b = client.new_window(true).await.expect("tab B").handle;
    to(&client, &b).await;
    client.goto(&server.url("/")).await.expect("open B");
    opened(&client).await;
    let notice = elsewhere(&client).await;
    println!("B on opening: {notice}");
    assert!(!usable(&client).await, "B must not edit what A holds");
    assert!(e2e::classes_shown(&client).await.is_empty());
    click(&client, "use-here").await;
    e2e::wait_for_classes(&client, &five, WAIT).await;
    assert!(usable(&client).await);

    // A stopped: it says so and can change nothing.
    to(&client, &a).await;
    let notice = elsewhere(&client).await;
    println!("A after B took over: {notice}");
    assert!(!usable(&client).await);
    let shot = e2e::screenshot(&client, "tabs-a-taken-over").await;
    println!("screenshot {}", shot.display());

    // In B, delete `tool`; in A, "+ Add class" does nothing (the studio is inert: the click is refused
    // or lands nowhere).
    to(&client, &b).await;
    click(&client, "class-delete-4").await;
    let four = owned(&[("animal", 6), ("fish", 6), ("monument", 6), ("renewable", 6)]);
    e2e::wait_for_classes(&client, &four, WAIT).await;
    to(&client, &a).await;
    let _ = by_id(&client, "add-class").await.click().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        e2e::classes_shown(&client).await,
        five,
        "A still shows what it had, unchanged"
    );

    // Reload both: B (the holder) comes back as it was; A finds B holding it.
    to(&client, &b).await;
    client.refresh().await.expect("reload B");
    opened(&client).await;
    e2e::wait_for_classes(&client, &four, WAIT).await;
    to(&client, &a).await;
    client.refresh().await.expect("reload A");
    opened(&client).await;
    elsewhere(&client).await;
    assert!(e2e::classes_shown(&client).await.is_empty());

    // The reverse: A takes the project back (at once, from the notice), adds pictures to `animal`;
    // B, taken over, takes it back with a reload and deletes `animal`. Nothing of it comes back.
    click(&client, "use-here").await;
    e2e::wait_for_classes(&client, &four, WAIT).await;
    e2e::upload(&client, "class-files-0", &more_animals).await;
    let four_more = owned(&[("animal", 8), ("fish", 6), ("monument", 6), ("renewable", 6)]);
    e2e::wait_for_classes(&client, &four_more, WAIT).await;
    to(&client, &b).await;
    elsewhere(&client).await;
    // A tab that was taken over reloads to take the project back: one click, and no second notice.
    click(&client, "use-here").await;
    opened(&client).await;
    e2e::wait_for_classes(&client, &four_more, WAIT).await;
    assert!(usable(&client).await);
    click(&client, "class-delete-0").await;
    let three = owned(&[("fish", 6), ("monument", 6), ("renewable", 6)]);
    e2e::wait_for_classes(&client, &three, WAIT).await;
    to(&client, &a).await;
    elsewhere(&client).await;
    client.refresh().await.expect("reload A");
    opened(&client).await;
    elsewhere(&client).await;
    click(&client, "use-here").await;
    e2e::wait_for_classes(&client, &three, WAIT).await;

    // Train in A; B takes over meanwhile and adds a class. A's run stops and keeps nothing in the
    // project; B's class is there after a reload, and A's model is not.
    click(&client, "strategy-full").await;
    click(&client, "train-button").await;
    text_of(&client, "progress", WAIT, |t| t.contains("batch 1/")).await;
    to(&client, &b).await;
    client.refresh().await.expect("reload B");
    opened(&client).await;
    elsewhere(&client).await;
    click(&client, "use-here").await;
    e2e::wait_for_classes(&client, &three, WAIT).await;
    click(&client, "add-class").await;
    let with_new = owned(&[("fish", 6), ("monument", 6), ("renewable", 6), ("Class 4", 0)]);
    e2e::wait_for_classes(&client, &with_new, WAIT).await;
    to(&client, &a).await;
    elsewhere(&client).await;
    let progress = by_id(&client, "progress").await.text().await.unwrap_or_default();
    println!("A's run after B took over: {progress}");
    to(&client, &b).await;
    // Long enough for A's run to have ended and tried to keep its model.
    tokio::time::sleep(Duration::from_secs(5)).await;
    client.refresh().await.expect("reload B");
    opened(&client).await;
    e2e::wait_for_classes(&client, &with_new, WAIT).await;
    let ready = client
        .find(fantoccini::Locator::Css("[data-testid=export-button]"))
        .await
        .expect("export button")
        .attr("disabled")
        .await
        .expect("disabled");
    assert!(
        ready.is_some(),
        "A's model, trained on a project it no longer held, was kept"
    );
    let shot = e2e::screenshot(&client, "tabs-b-after-all").await;
    println!("B at the end: screenshot {}", shot.display());
    client.close().await.expect("close");
}
