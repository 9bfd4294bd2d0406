//! Review the pictures in the built app (headless Chromium, the CPU backend): two classes of Tux
//! Paint photos with a deer filed among the birds on purpose; Review flags it as looking like a
//! mammal, one click moves it, the counts change and survive a reload, and a picture kept as it is
//! is not flagged again.
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use fantoccini::{Client, Locator};
use graft_tests::datasets;
use graft_tests::e2e::{self, ChromeDriver, StaticServer, by_id, text_of};

/// The flagged pictures shown: `(review-item test id, picture name, reason)`.
async fn flagged(client: &Client) -> Vec<(String, String, String)> {
    let script = "return [...document.querySelectorAll('[data-testid^=review-item-]')].map(item =>
        [item.dataset.testid, item.querySelector('img').alt, item.dataset.reason]);";
    serde_json::from_value(client.execute(script, vec![]).await.expect("script")).expect("rows")
}

async fn review(client: &Client) -> Vec<(String, String, String)> {
    by_id(client, "review-button").await.click().await.expect("review");
    text_of(client, "review-count", Duration::from_secs(300), |t| !t.is_empty()).await;
    // The button is enabled again once the review is shown.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while by_id(client, "review-button").await.is_enabled().await.ok() != Some(true) {
        assert!(std::time::Instant::now() < deadline, "the review never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    flagged(client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_moves_a_mislabelled_picture_and_keeps_another() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    e2e::open_on_cpu(&client, &server).await;
    let mut birds = datasets::tuxpaint_photos("birds", 10);
    let mammals = datasets::tuxpaint_photos("mammals", 10);
    // A deer (not among the first ten mammals) filed among the birds.
    let planted = datasets::path("tuxpaint-photos").join("mammals/deer-deer.png");
    let planted_name = "deer-deer.png".to_string();
    birds.push(planted);
    e2e::add_birds_and_mammals(&client, &birds, &mammals).await;

    let shown = review(&client).await;
    println!("flagged: {shown:?}");
    let (item, _, reason) = shown
        .iter()
        .find(|(_, name, _)| *name == planted_name)
        .unwrap_or_else(|| panic!("the mammal among the birds ({planted_name}) is not flagged: {shown:?}"));
    assert_eq!(reason, "label");
    let id = item.trim_start_matches("review-item-").to_string();
    let move_button = by_id(&client, &format!("review-move-{id}")).await;
    assert_eq!(move_button.text().await.expect("text"), "Move to “mammals”");
    client
        .execute(
            "document.querySelector('[data-testid=review]').scrollIntoView()",
            vec![],
        )
        .await
        .expect("scroll");
    let shot = e2e::screenshot(&client, "review").await;
    println!("screenshot: {}", shot.display());
    move_button.click().await.expect("move");
    text_of(&client, "class-count-0", Duration::from_secs(30), |t| t == "10").await;
    text_of(&client, "class-count-1", Duration::from_secs(30), |t| t == "11").await;
    let after = flagged(&client).await;
    assert!(
        after.iter().all(|(i, _, _)| *i != *item),
        "the moved picture is no longer flagged"
    );

    // Another flagged picture kept as it is, if there is one: not flagged again.
    let kept = after
        .first()
        .map(|(i, name, _)| (i.trim_start_matches("review-item-").to_string(), name.clone()));
    if let Some((kept_id, kept_name)) = &kept {
        by_id(&client, &format!("review-keep-{kept_id}"))
            .await
            .click()
            .await
            .expect("keep");
        println!("kept {kept_name}");
    }

    // After a reload: the picture is a mammal, the counts as they were left, the kept one not flagged.
    e2e::reload(&client).await;
    text_of(&client, "device", Duration::from_secs(120), |t| {
        t.starts_with("CPU fallback")
    })
    .await;
    text_of(&client, "class-count-0", Duration::from_secs(60), |t| t == "10").await;
    text_of(&client, "class-count-1", Duration::from_secs(60), |t| t == "11").await;
    let mammal_names: Vec<String> = serde_json::from_value(
        client
            .execute(
                "return [...document.querySelectorAll('.class-card')[1].querySelectorAll('img')].map(i => i.alt);",
                vec![],
            )
            .await
            .expect("script"),
    )
    .expect("names");
    assert!(
        mammal_names.contains(&planted_name),
        "{planted_name} is with the mammals after a reload: {mammal_names:?}"
    );
    let again = review(&client).await;
    println!("flagged after the reload: {again:?}");
    assert!(
        again.iter().all(|(_, name, _)| *name != planted_name),
        "moved, so no longer flagged"
    );
    if let Some((_, kept_name)) = &kept {
        assert!(
            again.iter().all(|(_, name, _)| name != kept_name),
            "kept, so not flagged again"
        );
    }
    let _ = client.find(Locator::Css("body")).await;
    client.close().await.expect("close");
}
