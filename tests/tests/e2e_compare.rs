//! Compare strategies in the built app (headless Chromium, the CPU backend): two classes of Tux Paint
//! photos, a recommendation, then Compare — the budget shown before anything trains, the chart with
//! every candidate, the recommended one and the measured winner marked, the result still there after
//! a reload, and one click that trains the winner.
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use fantoccini::{Client, Locator};
use graft_tests::datasets;
use graft_tests::e2e::{self, ChromeDriver, StaticServer, by_id, text_of};

/// The chart's rows as the page shows them: strategy, mean accuracy, best, recommended.
async fn chart(client: &Client) -> Vec<(String, f64, bool, bool)> {
    let script = "return [...document.querySelectorAll('[data-testid^=compare-row-]')].map(row =>
        [row.dataset.strategy, Number(row.dataset.accuracy), row.dataset.best === 'true',
         row.dataset.recommended === 'true']);";
    serde_json::from_value(client.execute(script, vec![]).await.expect("script")).expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_compares_strategies_and_trains_the_winner() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    e2e::open_on_cpu(&client, &server).await;
    e2e::add_birds_and_mammals(
        &client,
        &datasets::tuxpaint_photos("birds", 8),
        &datasets::tuxpaint_photos("mammals", 8),
    )
    .await;
    by_id(&client, "analyse-button").await.click().await.expect("analyse");
    text_of(&client, "recommendation", Duration::from_secs(240), |t| !t.is_empty()).await;

    // The budget is on the page before the candidates train.
    by_id(&client, "compare-button").await.click().await.expect("compare");
    let planned = text_of(&client, "compare-progress", Duration::from_secs(600), |t| {
        t.starts_with("Budget")
    })
    .await;
    println!("planned: {planned}");
    let started = std::time::Instant::now();
    by_id(&client, "compare-chart").await;
    let shown = chart(&client).await;
    let verdict = text_of(&client, "compare-verdict", Duration::from_secs(5), |t| !t.is_empty()).await;
    println!(
        "compared in {:.0} s: {shown:?}\n{verdict}",
        started.elapsed().as_secs_f64()
    );
    client
        .execute(
            "document.querySelector('[data-testid=compare]').scrollIntoView()",
            vec![],
        )
        .await
        .expect("scroll");
    let shot = e2e::screenshot(&client, "compare-chart").await;
    println!("screenshot: {}", shot.display());
    let strategies: Vec<&str> = shown.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(shown.len(), 5, "{strategies:?}");
    for kind in ["head-only", "partial-freeze", "staged", "full"] {
        assert!(strategies.contains(&kind), "{kind} measured: {strategies:?}");
    }
    assert_eq!(shown.iter().filter(|r| r.2).count(), 1, "one winner");
    assert_eq!(shown.iter().filter(|r| r.3).count(), 1, "one recommended");
    assert!(shown.iter().all(|r| (0.0..=1.0).contains(&r.1)));
    assert!(shown.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
    assert!(shown[0].2, "the winner is the first row");
    let recommended = shown.iter().find(|r| r.3).expect("marked");
    assert_eq!(
        recommended.0, "head-only",
        "the recommendation (small, similar) is marked"
    );
    let winner_label = if shown[0].0 == "partial-freeze" {
        "partial-freeze (".to_string()
    } else {
        format!("{} is best", shown[0].0)
    };
    assert!(
        verdict.starts_with(&winner_label),
        "the verdict names the winner: {verdict}"
    );

    // Kept with the project: after a reload the same chart.
    e2e::reload(&client).await;
    by_id(&client, "compare-chart").await;
    let again = chart(&client).await;
    assert_eq!(again, shown, "the comparison survives a reload");

    // One click trains the winner on all the pictures.
    let winner = shown[0].0.clone();
    text_of(&client, "device", Duration::from_secs(120), |t| {
        t.starts_with("CPU fallback")
    })
    .await;
    by_id(&client, "compare-train-winner")
        .await
        .click()
        .await
        .expect("train the winner");
    let checked = client
        .find(Locator::Css(&format!("[data-testid=strategy-{winner}]")))
        .await
        .expect("the strategy's radio")
        .prop("checked")
        .await
        .expect("checked");
    assert_eq!(
        checked.as_deref(),
        Some("true"),
        "the winner ({winner}) is the chosen strategy"
    );
    let accuracy = text_of(&client, "val-accuracy", Duration::from_secs(900), |t| t.contains('%')).await;
    println!("the winner ({winner}) trained on all pictures: {accuracy}");
    client.close().await.expect("close");
}
