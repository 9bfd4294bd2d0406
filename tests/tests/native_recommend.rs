//! The recommender on real data that packages ship, natively: natural photos land "similar", digits
//! and animal silhouettes "dissimilar"; the same counts are "small" or "large" as the thresholds say.
#![cfg(not(target_arch = "wasm32"))]

use burn::prelude::*;
use graft_engine::data::{self, Dataset};
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::recommend::{self, Quadrant, Recommendation, Size};
use graft_engine::strategy::Strategy;
use graft_tests::{datasets, pretrained, training};

fn measure(kind: ModelKind, dataset: &Dataset) -> (ImageClassifier, Recommendation) {
    let device = Device::flex();
    let model = pretrained::load(kind, &device).expect("weights");
    let mut progress = |_, _| {};
    let signals = pollster::block_on(recommend::measure(
        &model,
        kind,
        dataset,
        &device,
        recommend::DEFAULT_SAMPLE_PER_CLASS,
        &mut progress,
    ))
    .expect("measurement");
    let recommendation = recommend::recommend(&model, &dataset.classes, &dataset.class_counts(), signals);
    let s = &recommendation.signals;
    println!(
        "{kind}: {} images, min {} per class -> {:?}; similarity {:.3} (shift {:.3}, confidence {:.3}, separability {:.3}) -> {} {:?}",
        recommendation.images,
        recommendation.min_per_class,
        recommendation.size,
        recommendation.similarity,
        s.mean_shift,
        s.imagenet_confidence,
        s.separability,
        recommendation.quadrant.name(),
        recommendation.strategy
    );
    (model, recommendation)
}

fn folder(name: &str) -> Dataset {
    let (dataset, skipped) = data::read_folder(&datasets::path(name), 224, None).expect("dataset");
    assert!(skipped.is_empty(), "{skipped:?}");
    dataset
}

#[test]
fn natural_photos_are_small_and_similar_so_head_only() {
    let (_, r) = measure(ModelKind::MobileNetV2, &folder("tuxpaint-photos"));
    assert_eq!((r.size, r.quadrant), (Size::Small, Quadrant::SmallSimilar));
    assert_eq!(r.strategy, Strategy::HeadOnly);
    assert!(
        r.similarity >= recommend::SIMILAR_AT + 0.05,
        "a clear margin: {}",
        r.similarity
    );
    assert!(
        r.explanation
            .contains("209 images in 6 classes, 18 in the smallest: small"),
        "{}",
        r.explanation
    );
}

#[test]
fn the_fixture_photos_are_similar() {
    let (_, r) = measure(ModelKind::EfficientNetLite0, &training::photo_dataset());
    assert_eq!(r.quadrant, Quadrant::SmallSimilar, "{}", r.explanation);
}

#[test]
fn digits_are_dissimilar_and_keep_the_early_blocks_frozen() {
    let (model, r) = measure(ModelKind::MobileNetV2, &folder("digits"));
    assert_eq!(
        r.quadrant,
        Quadrant::SmallDissimilar,
        "500 per class is small for MobileNetV2"
    );
    assert!(
        r.similarity <= recommend::SIMILAR_AT - 0.1,
        "a clear margin: {}",
        r.similarity
    );
    let Strategy::PartialFreeze { trainable_blocks } = r.strategy else {
        panic!("small + dissimilar -> partial freeze, got {:?}", r.strategy);
    };
    let blocks = model.block_names().len();
    assert!(
        (1..blocks / 2).contains(&trainable_blocks),
        "the early, generic half stays frozen: {trainable_blocks} of {blocks} train"
    );
    // The shift grows towards the top after its lowest point: the blocks that retrain shifted more.
    let shift = &r.signals.block_shift;
    let frozen = blocks - trainable_blocks;
    let top_mean = shift[frozen..blocks - 1].iter().sum::<f64>() / (blocks - 1 - frozen) as f64;
    assert!(top_mean > shift[frozen - 1], "{shift:?}");
}

#[test]
fn silhouettes_are_dissimilar_and_large_or_small_by_the_models_size() {
    let dataset = folder("animal-silhouettes");
    assert_eq!(dataset.class_counts(), vec![1000; 10]);
    let (mobilenet, r) = measure(ModelKind::MobileNetV2, &dataset);
    assert_eq!(r.large_threshold, 890, "2.22 M body parameters / 2 500");
    assert_eq!((r.size, r.quadrant), (Size::Large, Quadrant::LargeDissimilar));
    assert_eq!(r.strategy, Strategy::FromScratch);
    // The same measurement with 30 per class: small.
    let small = recommend::recommend(&mobilenet, &dataset.classes, &[30; 10], r.signals.clone());
    assert_eq!(small.quadrant, Quadrant::SmallDissimilar);
    // EfficientNet-Lite0 has a bigger body: 1000 per class is still small for it.
    let (_, lite) = measure(ModelKind::EfficientNetLite0, &dataset);
    assert_eq!(lite.large_threshold, 1348);
    assert_eq!((lite.size, lite.quadrant), (Size::Small, Quadrant::SmallDissimilar));
}

#[test]
fn head_only_training_reuses_the_recommenders_embeddings() {
    use graft_engine::cache::EmbeddingCache;
    use graft_engine::train::{self, TrainConfig, TrainEvent};
    use std::ops::ControlFlow;

    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    let dataset = training::photo_dataset();
    let mut cache = EmbeddingCache::new();
    let mut progress = |_, _| {};
    pollster::block_on(recommend::measure_with_cache(
        &model,
        ModelKind::MobileNetV2,
        &dataset,
        &device,
        recommend::DEFAULT_SAMPLE_PER_CLASS,
        &mut progress,
        &mut cache,
    ))
    .expect("measurement");
    assert_eq!(cache.len(), dataset.examples.len(), "12 images, all sampled");

    let config = TrainConfig::new(Strategy::HeadOnly);
    let run = |cache: &mut EmbeddingCache| {
        let mut notices = Vec::new();
        let mut computed = 0;
        let mut observer = |event: TrainEvent| {
            match event {
                TrainEvent::Notice { message } => notices.push(message),
                TrainEvent::Caching { .. } => computed += 1,
                _ => {}
            }
            ControlFlow::Continue(())
        };
        let trained = pollster::block_on(
            train::Training::new(&model, ModelKind::MobileNetV2, &dataset, &config)
                .embeddings(cache)
                .run(&device, &mut observer),
        )
        .expect("training");
        (trained.summary, notices, computed)
    };
    let (reused, notices, computed) = run(&mut cache);
    assert_eq!(computed, 0, "no batch went through the body");
    assert!(
        notices.iter().any(|n| n.starts_with("Reusing 12 of 12 embeddings")),
        "{notices:?}"
    );
    let (fresh, _, computed) = run(&mut EmbeddingCache::new());
    assert!(computed > 0);
    assert_eq!(
        reused.val_predictions, fresh.val_predictions,
        "the same predictions either way"
    );
}
