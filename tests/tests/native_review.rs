//! Reviewing data before training, on real photos (the 209 Tux Paint photos of 6 classes) with the
//! pretrained MobileNetV2: mistakes made on purpose are found, a clean set yields few suspects.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeSet;

use burn::prelude::*;
use graft_engine::cache::EmbeddingCache;
use graft_engine::data::{self, Dataset, Example, Picture};
use graft_engine::model::ModelKind;
use graft_engine::review::{self, Reason, ReviewConfig};
use graft_tests::{datasets, pretrained};

const KIND: ModelKind = ModelKind::MobileNetV2;

fn photos() -> Dataset {
    let (dataset, skipped) =
        data::read_folder(&datasets::path("tuxpaint-photos"), KIND.card().input_size as u32, None).expect("photos");
    assert!(skipped.is_empty(), "{skipped:?}");
    dataset
}

fn embeddings(dataset: &Dataset, cache: &mut EmbeddingCache) -> Vec<Vec<f32>> {
    let device = Device::flex();
    let model = pretrained::load(KIND, &device).expect("run `cargo xtask weights`");
    pollster::block_on(review::embeddings(&model, KIND, dataset, cache)).expect("embeddings")
}

/// The pictures of `class`, in order.
fn members(dataset: &Dataset, class: usize) -> Vec<usize> {
    (0..dataset.examples.len())
        .filter(|&i| dataset.examples[i].label == class)
        .collect()
}

/// A copy of a picture as it happens on disk: saved again as a JPEG, a little smaller.
fn resaved(picture: &Picture) -> Picture {
    let pixels = picture.pixels();
    let (w, h) = pixels.dimensions();
    let smaller = image::imageops::resize(&*pixels, w * 9 / 10, h * 9 / 10, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&smaller)
        .expect("encodes");
    image::load_from_memory(&jpeg).expect("decodes").to_rgb8().into()
}

#[test]
fn mistakes_made_on_purpose_are_found_and_a_clean_set_has_few_suspects() {
    let mut dataset = photos();
    let classes = dataset.classes.len();
    let mut cache = EmbeddingCache::new();
    let clean = embeddings(&dataset, &mut cache);
    let labels = dataset.labels();
    let config = ReviewConfig::default();

    // The clean set, as it is.
    let found = review::review(&clean, &labels, classes, &config);
    let by_reason = |reason| found.suspects.iter().filter(|s| s.reason == reason).count();
    println!(
        "clean ({} photos): {} label suspects, {} duplicates, {} outliers",
        labels.len(),
        by_reason(Reason::Label),
        by_reason(Reason::Duplicate),
        by_reason(Reason::Outlier)
    );
    for s in found.suspects.iter().take(8) {
        println!(
            "  {:?} #{} {} -> {:?} ({:.2})",
            s.reason,
            s.image,
            dataset.classes[s.class],
            s.suggested_class.map(|c| &dataset.classes[c]),
            s.label_probability
        );
    }
    let clean_suspects = found.suspects.len();

    // Ten labels flipped between two classes: five birds called mammals, five mammals called birds.
    let (birds, mammals) = (
        dataset.classes.iter().position(|c| c == "birds").unwrap(),
        dataset.classes.iter().position(|c| c == "mammals").unwrap(),
    );
    let mut flipped_labels = labels.clone();
    let mut flipped = Vec::new();
    for (from, to) in [(birds, mammals), (mammals, birds)] {
        for &i in members(&dataset, from).iter().step_by(4).take(5) {
            flipped_labels[i] = to;
            flipped.push((i, from));
        }
    }
    let found = review::review(&clean, &flipped_labels, classes, &config);
    let top: Vec<_> = found.suspects.iter().take(20).collect();
    let caught = flipped
        .iter()
        .filter(|(i, _)| top.iter().any(|s| s.image == *i))
        .count();
    let suggested = flipped
        .iter()
        .filter(|(i, truth)| top.iter().any(|s| s.image == *i && s.suggested_class == Some(*truth)))
        .count();
    let label_suspects: BTreeSet<usize> = found
        .suspects
        .iter()
        .filter(|s| s.reason == Reason::Label)
        .map(|s| s.image)
        .collect();
    let true_positives = flipped.iter().filter(|(i, _)| label_suspects.contains(i)).count();
    println!(
        "10 flipped labels: {caught} in the top 20, {suggested} with the right class; label suspects' precision {:.2}, recall {:.2}",
        true_positives as f64 / label_suspects.len().max(1) as f64,
        true_positives as f64 / 10.0
    );
    assert!(caught >= 8, "{caught} of 10 flipped labels among the top 20 suspects");
    assert!(suggested >= 8, "{suggested} of 10 with the right class suggested");

    // Five photos copied (saved again, a little smaller) into another class.
    let originals: Vec<usize> = (0..classes).map(|c| members(&dataset, c)[3]).take(5).collect();
    let mut copies = Vec::new();
    for &i in &originals {
        let other = (dataset.examples[i].label + 1) % classes;
        copies.push(dataset.examples.len());
        dataset.examples.push(Example {
            image: resaved(&dataset.examples[i].image),
            label: other,
        });
    }
    let with_copies = embeddings(&dataset, &mut cache);
    let found = review::review(&with_copies, &dataset.labels(), classes, &config);
    for (&copy, &original) in copies.iter().zip(&originals) {
        let pair = found
            .suspects
            .iter()
            .find(|s| s.reason == Reason::Duplicate && s.image == copy && s.duplicate_of == Some(original));
        let similarity = pair.map(|s| s.score);
        let best = found
            .suspects
            .iter()
            .filter(|s| s.reason == Reason::Duplicate && s.image == copy)
            .map(|s| (s.duplicate_of, s.score))
            .collect::<Vec<_>>();
        println!("copy of #{original}: {similarity:?} (pairs of the copy: {best:?})");
        assert!(pair.is_some(), "the copy of #{original} was not paired with it");
        assert_eq!(pair.unwrap().suggested_class, Some(dataset.examples[original].label));
    }
    let duplicates = found.suspects.iter().filter(|s| s.reason == Reason::Duplicate).count();
    println!("5 copies across classes: {duplicates} duplicate pairs reported");
    assert!(duplicates <= 5 + 2, "{duplicates} duplicate pairs for 5 copies");

    // A clean set: few suspects (at most one photo in ten).
    assert!(
        clean_suspects * 10 <= labels.len(),
        "{clean_suspects} suspects among {} clean photos",
        labels.len()
    );
}

/// Training keeps a picture and its copy on the same side of the split: the 209 photos plus 5 re-saved
/// copies (smaller, JPEG) filed in other classes; over 10 seeds every pair stays together, and no two
/// different photos of the set are taken for copies.
#[test]
fn copies_stay_on_one_side_of_the_split() {
    let mut dataset = photos();
    let originals = dataset.examples.len();
    let classes = dataset.classes.len();
    let sources: Vec<usize> = (0..5).map(|i| i * 40 + 3).collect();
    for &source in &sources {
        let label = (dataset.examples[source].label + 1) % classes;
        let image = resaved(&dataset.examples[source].image);
        dataset.examples.push(Example { image, label });
    }
    let prints: Vec<&data::Fingerprint> = dataset.examples.iter().map(|e| e.image.fingerprint()).collect();
    let mut false_copies = Vec::new();
    let mut closest_grey = f64::INFINITY;
    for i in 0..originals {
        for j in 0..i {
            if prints[i].is_copy_of(prints[j]) {
                false_copies.push((i, j));
            }
            closest_grey = closest_grey.min(prints[i].grey_distance(prints[j]));
        }
    }
    let copies: Vec<(u32, f64, f64)> = sources
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let (a, b) = (prints[s], prints[originals + k]);
            (a.shape_distance(b), a.grey_distance(b), a.colour_distance(b))
        })
        .collect();
    println!(
        "re-saved copies (shape bits, grey levels, colour levels): {copies:?}; the closest different \
         photos: {closest_grey:.1} grey levels; pairs of different photos taken for copies: {false_copies:?}"
    );
    assert!(copies.iter().all(|&(bits, grey, colour)| bits <= data::COPY_SHAPE_BITS
        && grey <= data::COPY_GREY_LEVELS
        && colour <= data::COPY_COLOUR_LEVELS));
    assert!(false_copies.is_empty());
    let mut moved_total = 0;
    for seed in 0..10 {
        let mut split = data::stratified_split(&dataset.labels(), classes, 0.3, seed);
        moved_total += data::keep_copies_together(&mut split, &dataset);
        for (k, &source) in sources.iter().enumerate() {
            assert_eq!(
                split.val.contains(&source),
                split.val.contains(&(originals + k)),
                "seed {seed}: photo {source} and its copy on different sides"
            );
        }
    }
    println!("copies moved to their original's side over 10 splits: {moved_total}");
    assert!(moved_total > 0, "a random split separates some pairs");
}
