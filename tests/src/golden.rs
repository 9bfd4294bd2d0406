//! The golden ImageNet fixture: PyTorch's logits for the same checkpoints on four real photos
//! (`fixtures/imagenet/`, made by `make_golden.py`), and the comparison of Graft's models against them.

use std::collections::BTreeMap;

use burn::prelude::*;
use graft_engine::inference::FrozenClassifier;
use graft_engine::metrics;
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::preprocess;
use graft_engine::readback::{self, ReadbackError};
use serde::Deserialize;

/// Largest |logit difference| to PyTorch that passes, for the checkpoint's own f32 values.
pub const MAX_LOGIT_DIFFERENCE: f32 = 1e-3;

/// Largest |logit difference| to PyTorch that passes for the weights the app serves, whose
/// convolutions and classifier are rounded to half precision. Measured on these crops
/// (`native_pretrained`, on Burn and on the CPU kernels alike): 0.008-0.024 for EfficientNet-Lite0
/// and 0.020-0.035 for MobileNetV2 (whose logits reach 21), top-5 PyTorch's; rounding a weight to
/// f16 moves it by up to 2^-11 of itself, and 50-odd layers add that up. Above this, something other
/// than the rounding is wrong.
pub const MAX_LOGIT_DIFFERENCE_HALF_PRECISION: f32 = 0.06;

const GOLDEN_JSON: &str = include_str!("../fixtures/imagenet/golden.json");

/// The 224x224 crops the reference saw, PNG-encoded (decoding is exact).
pub const CROPS: [(&str, &[u8]); 4] = [
    ("chelsea", include_bytes!("../fixtures/imagenet/chelsea-224.png")),
    ("coffee", include_bytes!("../fixtures/imagenet/coffee-224.png")),
    ("astronaut", include_bytes!("../fixtures/imagenet/astronaut-224.png")),
    ("rocket", include_bytes!("../fixtures/imagenet/rocket-224.png")),
];

#[derive(Debug, Deserialize)]
struct Golden {
    models: BTreeMap<String, GoldenModel>,
}

#[derive(Debug, Deserialize)]
struct GoldenModel {
    images: BTreeMap<String, GoldenImage>,
}

#[derive(Debug, Deserialize)]
struct GoldenImage {
    top5: Vec<GoldenClass>,
    logits: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct GoldenClass {
    class: usize,
}

/// How one image's logits compare with the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub image: &'static str,
    pub max_abs_difference: f32,
    pub top5: Vec<usize>,
    pub reference_top5: Vec<usize>,
    /// Our top-1 probability.
    pub top1_prob: f32,
}

/// Runs `model` on the four crops in one batch and compares each image's logits with PyTorch's.
pub async fn compare(
    kind: ModelKind,
    model: &ImageClassifier,
    device: &Device,
) -> Result<Vec<Comparison>, ReadbackError> {
    let logits = readback::to_f32_vec(model.forward(input(kind, device))).await?;
    Ok(comparisons(kind, &logits))
}

/// [`compare`] for a frozen classifier (Burn or the CPU kernels).
pub async fn compare_frozen(
    kind: ModelKind,
    frozen: &FrozenClassifier,
    device: &Device,
) -> Result<Vec<Comparison>, ReadbackError> {
    Ok(comparisons(kind, &frozen.logits(input(kind, device)).await?))
}

/// The four crops as one normalised batch.
fn input(kind: ModelKind, device: &Device) -> Tensor<4> {
    let crops: Vec<_> = CROPS
        .iter()
        .map(|(_, png)| preprocess::decode(png).expect("fixture crops decode"))
        .collect();
    preprocess::batch_tensor(&crops, &kind.card().normalisation, device)
}

/// Each crop's logits (`[4, 1000]`, in [`CROPS`] order) against PyTorch's.
fn comparisons(kind: ModelKind, logits: &[f32]) -> Vec<Comparison> {
    let golden: Golden = serde_json::from_str(GOLDEN_JSON).expect("golden.json is valid");
    let reference = &golden.models[kind.card().name];
    assert_eq!(logits.len(), CROPS.len() * 1000, "1000 logits for each of the crops");
    CROPS
        .iter()
        .zip(logits.chunks(1000))
        .map(|((image, _), ours)| {
            let theirs = &reference.images[*image];
            assert_eq!(ours.len(), theirs.logits.len(), "{image}: as many logits as PyTorch's");
            let max_abs_difference = ours
                .iter()
                .zip(&theirs.logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            let top5_with_probs = metrics::top_k(&metrics::softmax(ours), 5);
            Comparison {
                image,
                max_abs_difference,
                top5: top5_with_probs.iter().map(|(class, _)| *class).collect(),
                reference_top5: theirs.top5.iter().map(|c| c.class).collect(),
                top1_prob: top5_with_probs[0].1,
            }
        })
        .collect()
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9}: max |logit diff| {:.2e}, top-5 {:?}, p(top-1) {:.3}",
            self.image, self.max_abs_difference, self.top5, self.top1_prob
        )
    }
}

/// Identical top-5, logits within [`MAX_LOGIT_DIFFERENCE`], the cat a cat and the coffee an espresso.
pub fn assert_matches_reference(kind: ModelKind, comparisons: &[Comparison]) {
    assert_matches_reference_within(kind, comparisons, MAX_LOGIT_DIFFERENCE);
}

/// Identical top-5, logits within `max_logit_difference`, the cat a cat and the coffee an espresso.
pub fn assert_matches_reference_within(kind: ModelKind, comparisons: &[Comparison], max_logit_difference: f32) {
    assert_eq!(comparisons.len(), CROPS.len());
    for comparison in comparisons {
        assert_eq!(
            comparison.top5, comparison.reference_top5,
            "{kind}: top-5 differs: {comparison:?}"
        );
        assert!(
            comparison.max_abs_difference <= max_logit_difference,
            "{kind}: logits differ from PyTorch by {} (> {max_logit_difference}): {comparison:?}",
            comparison.max_abs_difference
        );
    }
    let top1 = |image: &str| comparisons.iter().find(|c| c.image == image).map(|c| c.top5[0]);
    // 281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat.
    assert!(
        matches!(top1("chelsea"), Some(281..=285)),
        "{kind}: the cat is not a cat: {comparisons:?}"
    );
    assert_eq!(
        top1("coffee"),
        Some(967),
        "{kind}: the coffee is not an espresso: {comparisons:?}"
    );
}
