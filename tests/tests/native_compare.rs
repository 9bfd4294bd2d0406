//! Strategies compared by measurement (`graft_engine::compare`) on data unlike ImageNet: MNIST digits
//! (30 of each of 10 classes), where training body blocks must beat a head on the frozen body by more
//! than the noise — measured here, not assumed. (`graft compare` on the Tux Paint photos, where
//! head-only is within the noise of the best, is in the engine's CLI tests.)
#![cfg(not(target_arch = "wasm32"))]

use std::ops::ControlFlow;

use burn::prelude::*;
use graft_engine::compare::{self, CompareConfig, CompareEvent};
use graft_engine::data;
use graft_engine::model::ModelKind;
use graft_engine::strategy::Strategy;
use graft_tests::{datasets, pretrained};

const KIND: ModelKind = ModelKind::MobileNetV2;
/// Enough for the body-training candidates to train a few epochs each on a slow machine: with 600 s,
/// on this 2-core machine at a slow hour (its multiply-add rate half of other days'), the planner gave
/// partial freezing 2 epochs on 200 pictures and it lost to head-only (81% against 86%).
const BUDGET_SECONDS: f64 = 900.0;

#[test]
fn on_digits_a_strategy_that_trains_body_blocks_beats_head_only_by_more_than_the_noise() {
    let device = Device::flex();
    let model = pretrained::load(KIND, &device).expect("run `cargo xtask weights`");
    let (dataset, _) =
        data::read_folder(&datasets::path("digits"), KIND.card().input_size as u32, Some(30)).expect("digits");
    assert_eq!(dataset.examples.len(), 300);
    let config = CompareConfig {
        budget_seconds: Some(BUDGET_SECONDS),
        ..CompareConfig::default()
    };
    let mut planned = None;
    let mut observer = |event: &CompareEvent| {
        match event {
            CompareEvent::Planned { candidates, .. } => {
                println!("plan: {candidates:?}");
                planned = Some(candidates.clone());
            }
            CompareEvent::Fold {
                strategy,
                fold,
                accuracy,
                seconds,
            } => println!("{} fold {fold}: {accuracy:.3} in {seconds:.1} s", strategy.name()),
            CompareEvent::Step { .. } => {}
        }
        ControlFlow::Continue(())
    };
    let recommended = Strategy::PartialFreeze { trainable_blocks: 6 };
    let comparison = pollster::block_on(compare::compare(
        &model,
        KIND,
        &dataset,
        recommended,
        &config,
        &device,
        &mut observer,
    ))
    .expect("compares");
    for result in &comparison.results {
        println!(
            "{:<55} {:.3} ± {:.3} {:?} epochs {} on {} images, {:.0} s",
            format!("{:?}", result.strategy),
            result.mean_accuracy,
            result.std_accuracy,
            result.folds,
            result.epochs,
            result.train_images,
            result.seconds
        );
    }
    println!("{}", comparison.verdict);
    println!(
        "{:.0} s of a {:.0} s budget (probes {:.0} s)",
        comparison.seconds, comparison.budget_seconds, comparison.probe_seconds
    );
    assert_eq!(planned.expect("planned first").len(), 5);
    let head_only = comparison
        .results
        .iter()
        .find(|r| r.strategy == Strategy::HeadOnly)
        .expect("head-only measured");
    // Its embeddings are made once before the folds: none of its folds overran its share.
    assert_eq!(
        head_only.stopped_folds, 0,
        "head-only paid for its embeddings in a fold"
    );
    let body = &comparison.results[0];
    assert!(
        body.strategy != Strategy::HeadOnly && !comparison.within_noise.contains(&Strategy::HeadOnly),
        "{}",
        comparison.verdict
    );
    assert!(!compare::within_noise(&body.folds, &head_only.folds, 0.0));
    assert!(comparison.seconds <= BUDGET_SECONDS * 1.25, "the budget was not kept");
}
