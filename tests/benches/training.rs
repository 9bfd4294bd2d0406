//! Training speed natively on the CPU backend (run with `cargo xtask bench`):
//! - criterion: head-only on 10 000 cached embeddings (the animal silhouettes), 50 epochs — the time of
//!   the 50 epochs, not of computing the cache;
//! - seconds per epoch of each strategy at 224 px on 32 Tux Paint photos (printed `bench:` lines).

use std::time::{Duration, Instant};

use burn::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use graft_engine::data;
use graft_engine::model::ModelKind;
use graft_engine::strategy::Strategy;
use graft_engine::train::TrainConfig;
use graft_tests::{datasets, pretrained, training};

fn seconds_since(start: Instant) -> impl Fn() -> f64 {
    move || start.elapsed().as_secs_f64()
}

fn head_only_on_10k_cached_embeddings(c: &mut Criterion) {
    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights: run `cargo xtask weights`");
    // 32 px keeps computing the cache quick; the head trains on 1280-wide embeddings either way.
    let (dataset, _) = data::read_folder(&datasets::path("animal-silhouettes"), 32, None).expect("dataset");
    assert_eq!(dataset.examples.len(), 10_000);
    let mut config = TrainConfig::new(Strategy::HeadOnly);
    config.epochs = 50;
    config.image_size = Some(32);
    config.val_fraction = 0.0;
    config.patience = None;
    config.batch_size = 256;
    let mut group = c.benchmark_group("train-cpu");
    group.sample_size(10);
    group.bench_function("head-only 10k cached embeddings x 50 epochs", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let start = Instant::now();
                let times = pollster::block_on(training::epoch_times(
                    &model,
                    &dataset,
                    &config,
                    &device,
                    seconds_since(start),
                ))
                .expect("training");
                assert_eq!(times.epochs.len(), 50);
                total += Duration::from_secs_f64(times.epochs.iter().map(|(_, s)| s).sum());
            }
            total
        })
    });
    group.finish();
}

fn seconds_per_epoch_per_strategy(_: &mut Criterion) {
    // Not a criterion benchmark (each figure is a whole run): honour a filter the way criterion does.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"seconds per epoch".contains(&f)) {
        return;
    }
    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    let (dataset, _) = data::read_folder(&datasets::path("tuxpaint-photos"), 224, Some(8)).expect("dataset");
    for strategy in training::BENCH_STRATEGIES {
        let mut config = TrainConfig::new(strategy);
        config.epochs = 2;
        config.patience = None;
        let start = Instant::now();
        let times = pollster::block_on(training::epoch_times(
            &model,
            &dataset,
            &config,
            &device,
            seconds_since(start),
        ))
        .expect("training");
        let summary = times.summary.expect("done");
        let epochs: Vec<String> = times
            .epochs
            .iter()
            .map(|(phase, s)| format!("{phase} {s:.2} s"))
            .collect();
        println!(
            "bench: native cpu {} at 224 px, {} training + {} validation images: epochs [{}], cache {:.2} s",
            strategy.name(),
            summary.train_images,
            summary.val_images.len(),
            epochs.join(", "),
            times.caching_seconds
        );
    }
}

criterion_group!(
    benches,
    head_only_on_10k_cached_embeddings,
    seconds_per_epoch_per_strategy
);
criterion_main!(benches);
