//! Where a dataset falls in the size x similarity quadrant, measured with the pretrained model itself,
//! and the strategy that follows.
//!
//! - **Size**: the smallest class's image count against the images per class that fine-tuning the
//!   whole body needs, which grows with the body's parameter count ([`large_threshold`]).
//! - **Similarity to ImageNet**, from three signals on a sample of the images:
//!   1. *statistics shift*: how far what each BatchNorm receives is from the running statistics it
//!      stored over ImageNet — the mean over channels of the KL divergence between the two Gaussians,
//!      per body block;
//!   2. *confidence*: how sure the ImageNet classifier is of its top class (natural photos of things
//!      ImageNet knows get confident answers; digits and silhouettes do not);
//!   3. *separability*: leave-one-out nearest-centroid accuracy of the frozen embeddings on the
//!      user's own classes — whether the pretrained features already tell them apart.
//!
//!   Each maps to [0, 1]; the similarity is their weighted mean ([`SIGNAL_WEIGHTS`]).
//! - For small + dissimilar data, the number of frozen blocks k is where the statistics shift starts to
//!   grow (the early blocks whose inputs still look like ImageNet's stay frozen), bounded so that what
//!   trains fits the data.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cache::EmbeddingCache;
use crate::data::{Dataset, Rng};
use crate::inference::FrozenClassifier;
use crate::metrics;
use crate::model::{ImageClassifier, ModelKind, Probes};
use crate::preprocess;
use crate::readback::{self, ReadbackError};
use crate::strategy::Strategy;

/// Images per class the measurement looks at (the first after a seeded shuffle). Enough for stable
/// statistics and centroids; the measurement stays a few seconds on a CPU.
pub const DEFAULT_SAMPLE_PER_CLASS: usize = 24;

/// Body parameters per image of the smallest class that make a dataset "large": one image per class
/// for every 2 500 body parameters — 890 per class for MobileNetV2 (2.22 M body parameters), 1 348 for
/// EfficientNet-Lite0 (3.37 M). Below it, retraining the whole body from these images overfits
/// (cs231n's "small dataset" regime); at or above it, there is enough to move every layer.
pub const BODY_PARAMS_PER_IMAGE: f64 = 2_500.0;

/// Weights of the shift, confidence and separability scores in the similarity. The statistics shift
/// is the most direct measure of "unlike ImageNet"; separability weighs least because ImageNet
/// features separate many unlike-ImageNet sets too (digits: 78% leave-one-out), which is what a
/// frozen head benefits from but not what similarity means.
pub const SIGNAL_WEIGHTS: [f64; 3] = [0.6, 0.3, 0.1];

/// The similarity at and above which data counts as similar to ImageNet.
pub const SIMILAR_AT: f64 = 0.5;

/// A mean statistics shift (KL, nats) of this much maps to a shift score of 0.5. Calibrated on the
/// package datasets with MobileNetV2: Tux Paint photo cut-outs 0.10, animal silhouettes 0.35, MNIST
/// digits 0.55.
pub const SHIFT_HALF_SCORE: f64 = 0.2;

/// What the pretrained model measured on the dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Images the measurement looked at.
    pub sampled_images: usize,
    /// Per body block (stem, blocks.0.., head_conv): mean KL divergence of its BatchNorms' input
    /// statistics from their running statistics, in nats.
    pub block_shift: Vec<f64>,
    /// Mean of `block_shift`.
    pub mean_shift: f64,
    /// `1 / (1 + mean_shift / SHIFT_HALF_SCORE)`: 1 for no shift.
    pub shift_score: f64,
    /// Mean probability of the ImageNet top class.
    pub imagenet_confidence: f64,
    /// Mean entropy of the ImageNet prediction, divided by ln 1000 (1 = uniform).
    pub imagenet_entropy: f64,
    /// Leave-one-out nearest-centroid accuracy of the frozen embeddings (cosine) on the user's classes.
    pub separability: f64,
    /// Accuracy of guessing: 1 / classes.
    pub chance: f64,
    /// `(separability - chance) / (1 - chance)`, clamped to [0, 1].
    pub separability_score: f64,
}

/// Small or large, for the body's parameter count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Size {
    Small,
    Large,
}

/// The four regimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quadrant {
    SmallSimilar,
    SmallDissimilar,
    LargeSimilar,
    LargeDissimilar,
}

impl Quadrant {
    pub fn name(self) -> &'static str {
        match self {
            Self::SmallSimilar => "small-similar",
            Self::SmallDissimilar => "small-dissimilar",
            Self::LargeSimilar => "large-similar",
            Self::LargeDissimilar => "large-dissimilar",
        }
    }
}

/// What Graft recommends, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub images: usize,
    /// Number of classes.
    pub classes: usize,
    pub class_names: Vec<String>,
    pub per_class: Vec<usize>,
    pub min_per_class: usize,
    /// Images per class from which the dataset counts as large for this model.
    pub large_threshold: usize,
    pub size: Size,
    /// In [0, 1]; similar at and above [`SIMILAR_AT`].
    pub similarity: f64,
    pub signals: Signals,
    pub quadrant: Quadrant,
    pub strategy: Strategy,
    /// Plain language, quoting the measured numbers.
    pub explanation: String,
}

/// Why a dataset could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    #[error("there are no images to measure: add images to at least two classes")]
    NoImages,
    #[error(transparent)]
    Readback(#[from] ReadbackError),
}

/// Progress of a measurement: images done out of the sample.
pub trait MeasureProgress {
    fn progress(&mut self, done: usize, total: usize) -> impl std::future::Future<Output = ()>;
}

impl<F: FnMut(usize, usize)> MeasureProgress for F {
    async fn progress(&mut self, done: usize, total: usize) {
        self(done, total)
    }
}

/// Images per class from which a dataset counts as large for `model` (see [`BODY_PARAMS_PER_IMAGE`]).
pub fn large_threshold(model: &ImageClassifier) -> usize {
    (body_params(model) as f64 / BODY_PARAMS_PER_IMAGE).round() as usize
}

/// Scalar parameters (no running statistics) of body block `index`.
fn block_params(model: &ImageClassifier, index: usize) -> usize {
    model
        .block_convs(index)
        .iter()
        .map(|conv| {
            conv.conv.weight.val().shape().num_elements()
                + conv.conv.bias.as_ref().map_or(0, |b| b.val().shape().num_elements())
                + 2 * conv.norm.gamma.val().shape().num_elements()
        })
        .sum()
}

fn body_params(model: &ImageClassifier) -> usize {
    (0..model.block_names().len()).map(|i| block_params(model, i)).sum()
}

/// Measures the signals on up to `sample_per_class` images per class, with `pretrained` (the ImageNet
/// classifier, on a plain device), reporting progress after each batch.
pub async fn measure<P: MeasureProgress>(
    pretrained: &ImageClassifier,
    kind: ModelKind,
    dataset: &Dataset,
    device: &Device,
    sample_per_class: usize,
    progress: &mut P,
) -> Result<Signals, RecommendError> {
    let mut embeddings = EmbeddingCache::new();
    measure_with_cache(
        pretrained,
        kind,
        dataset,
        device,
        sample_per_class,
        progress,
        &mut embeddings,
    )
    .await
}

/// [`measure`], keeping the sample's embeddings in `embeddings` for training to reuse.
pub async fn measure_with_cache<P: MeasureProgress>(
    pretrained: &ImageClassifier,
    kind: ModelKind,
    dataset: &Dataset,
    device: &Device,
    sample_per_class: usize,
    progress: &mut P,
    embeddings: &mut EmbeddingCache,
) -> Result<Signals, RecommendError> {
    embeddings.use_model(kind, kind.card().input_size as u32);
    let classes = dataset.classes.len();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (index, example) in dataset.examples.iter().enumerate() {
        if let Some(members) = by_class.get_mut(example.label) {
            members.push(index);
        }
    }
    let mut rng = Rng::new(0);
    let mut sample = Vec::new();
    for members in &mut by_class {
        rng.shuffle(members);
        sample.extend(members.iter().take(sample_per_class).copied());
    }
    if sample.is_empty() {
        return Err(RecommendError::NoImages);
    }
    let card = kind.card();
    let model = pretrained.valid();
    // Unfolded, so that what each BatchNorm receives can be measured; on the CPU backend, compiled.
    let frozen = FrozenClassifier::new(pretrained, Probes::On).await?;
    let num_blocks = model.block_names().len();

    // Per block, per conv: running sums of (mean, mean of squares) weighted by pixels.
    let mut sums: Vec<Vec<(Vec<f64>, Vec<f64>)>> = Vec::new();
    let mut pixels = 0f64;
    let mut sample_embeddings: Vec<Vec<f32>> = Vec::with_capacity(sample.len());
    let (mut confidence, mut entropy) = (0.0f64, 0.0f64);
    let mut done = 0;
    // The total first: the model is on the device and the measuring begins.
    progress.progress(0, sample.len()).await;
    for chunk in sample.chunks(16) {
        let views: Vec<_> = chunk
            .iter()
            .map(|&i| preprocess::evaluation_view(&dataset.examples[i].image.pixels(), card.input_size as u32))
            .collect();
        let input = preprocess::batch_tensor(&views, &card.normalisation, device);
        let (logits, values, probes) = frozen.probed(input).await?;
        // Every probe is a mean over the batch's pixels at that layer; weighting by batch size is enough.
        let weight = chunk.len() as f64;
        pixels += weight;
        for (block, block_probes) in probes.into_iter().enumerate() {
            if sums.len() <= block {
                sums.push(Vec::new());
            }
            for (conv, values) in block_probes.into_iter().enumerate() {
                let channels = values.len() / 2;
                if sums[block].len() <= conv {
                    sums[block].push((vec![0.0; channels], vec![0.0; channels]));
                }
                let (mean, mean_sq) = &mut sums[block][conv];
                for c in 0..channels {
                    mean[c] += weight * f64::from(values[c]);
                    mean_sq[c] += weight * f64::from(values[channels + c]);
                }
            }
        }
        let width = model.embedding_width();
        for (&i, row) in chunk.iter().zip(values.chunks(width)) {
            embeddings.insert(&dataset.examples[i].image, row.to_vec());
            sample_embeddings.push(row.to_vec());
        }
        for row in logits.chunks(logits.len() / chunk.len()) {
            let probs = metrics::softmax(row);
            confidence += f64::from(probs.iter().copied().fold(0.0, f32::max));
            entropy -= probs
                .iter()
                .filter(|&&p| p > 0.0)
                .map(|&p| f64::from(p) * f64::from(p).ln())
                .sum::<f64>()
                / (row.len() as f64).ln();
        }
        done += chunk.len();
        progress.progress(done, sample.len()).await;
    }

    let mut block_shift = Vec::with_capacity(num_blocks);
    for (block, convs) in sums.iter().enumerate() {
        let mut shifts = Vec::new();
        for ((mean, mean_sq), conv) in convs.iter().zip(model.block_convs(block)) {
            let (running_mean, running_var) = conv.running_statistics();
            let running_mean = readback::to_f32_vec(running_mean).await?;
            let running_var = readback::to_f32_vec(running_var).await?;
            shifts.push(mean_gaussian_kl(
                mean.iter().map(|m| m / pixels),
                mean_sq.iter().map(|m| m / pixels),
                &running_mean,
                &running_var,
                conv.norm.epsilon,
            ));
        }
        block_shift.push(shifts.iter().sum::<f64>() / shifts.len().max(1) as f64);
    }
    let mean_shift = block_shift.iter().sum::<f64>() / block_shift.len().max(1) as f64;
    let labels: Vec<usize> = sample.iter().map(|&i| dataset.examples[i].label).collect();
    let separability = loo_nearest_centroid(&sample_embeddings, &labels, classes);
    let chance = 1.0 / classes.max(1) as f64;
    let n = sample.len() as f64;
    Ok(Signals {
        sampled_images: sample.len(),
        block_shift,
        mean_shift,
        shift_score: 1.0 / (1.0 + mean_shift / SHIFT_HALF_SCORE),
        imagenet_confidence: confidence / n,
        imagenet_entropy: entropy / n,
        separability,
        chance,
        separability_score: ((separability - chance) / (1.0 - chance).max(f64::EPSILON)).clamp(0.0, 1.0),
    })
}

/// Mean over channels of KL(N(m, v) || N(rm, rv)) with `v = mean_sq - m^2 + eps`; `running_var`
/// already includes eps. Channels whose running variance is ~0 (dead in training) are skipped.
fn mean_gaussian_kl(
    mean: impl Iterator<Item = f64>,
    mean_sq: impl Iterator<Item = f64>,
    running_mean: &[f32],
    running_var: &[f32],
    eps: f64,
) -> f64 {
    let mut total = 0.0;
    let mut count = 0usize;
    for (((m, m2), &rm), &rv) in mean.zip(mean_sq).zip(running_mean).zip(running_var) {
        let rv = f64::from(rv);
        if rv <= 2.0 * eps {
            continue;
        }
        let v = (m2 - m * m).max(0.0) + eps;
        let ratio = v / rv;
        total += 0.5 * (ratio + (m - f64::from(rm)).powi(2) / rv - 1.0 - ratio.ln());
        count += 1;
    }
    total / count.max(1) as f64
}

/// Leave-one-out nearest-centroid accuracy with cosine similarity: each embedding against the class
/// centroids of all the others.
pub fn loo_nearest_centroid(embeddings: &[Vec<f32>], labels: &[usize], classes: usize) -> f64 {
    let normalised: Vec<Vec<f64>> = embeddings
        .iter()
        .map(|e| {
            let norm = e.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt().max(1e-12);
            e.iter().map(|&x| f64::from(x) / norm).collect()
        })
        .collect();
    let width = normalised.first().map_or(0, Vec::len);
    let mut sums = vec![vec![0.0f64; width]; classes];
    let mut counts = vec![0usize; classes];
    for (e, &label) in normalised.iter().zip(labels) {
        counts[label] += 1;
        for (s, x) in sums[label].iter_mut().zip(e) {
            *s += x;
        }
    }
    let mut correct = 0usize;
    let mut evaluated = 0usize;
    for (e, &label) in normalised.iter().zip(labels) {
        let mut best = (f64::NEG_INFINITY, usize::MAX);
        for class in 0..classes {
            let count = counts[class] - usize::from(class == label);
            if count == 0 {
                continue;
            }
            // Cosine with the centroid (the mean of the others), without materialising it.
            let (mut dot, mut norm) = (0.0, 0.0);
            for (i, x) in e.iter().enumerate() {
                let c = sums[class][i] - if class == label { *x } else { 0.0 };
                dot += c * x;
                norm += c * c;
            }
            let cosine = dot / norm.sqrt().max(1e-12);
            if cosine > best.0 {
                best = (cosine, class);
            }
        }
        if best.1 != usize::MAX && counts[label] > 1 {
            evaluated += 1;
            correct += usize::from(best.1 == label);
        }
    }
    correct as f64 / evaluated.max(1) as f64
}

/// The recommendation for a dataset with `per_class` images (class order as `class_names`) and the
/// measured `signals`, for `model`.
pub fn recommend(
    model: &ImageClassifier,
    class_names: &[String],
    per_class: &[usize],
    signals: Signals,
) -> Recommendation {
    decide(class_names, per_class, signals, large_threshold(model))
}

/// The decision table, separate from the model for testing. `signals.block_shift` has one entry per
/// body block.
pub fn decide(class_names: &[String], per_class: &[usize], signals: Signals, large_threshold: usize) -> Recommendation {
    let images: usize = per_class.iter().sum();
    let min_per_class = per_class.iter().copied().min().unwrap_or(0);
    let size = if min_per_class >= large_threshold {
        Size::Large
    } else {
        Size::Small
    };
    let [w_shift, w_confidence, w_separability] = SIGNAL_WEIGHTS;
    let confidence_score = signals.imagenet_confidence.clamp(0.0, 1.0);
    let similarity =
        (w_shift * signals.shift_score + w_confidence * confidence_score + w_separability * signals.separability_score)
            / (w_shift + w_confidence + w_separability);
    let similar = similarity >= SIMILAR_AT;
    let quadrant = match (size, similar) {
        (Size::Small, true) => Quadrant::SmallSimilar,
        (Size::Small, false) => Quadrant::SmallDissimilar,
        (Size::Large, true) => Quadrant::LargeSimilar,
        (Size::Large, false) => Quadrant::LargeDissimilar,
    };
    let num_blocks = signals.block_shift.len();
    let frozen = frozen_blocks_for(&signals.block_shift);
    let strategy = match quadrant {
        Quadrant::SmallSimilar => Strategy::HeadOnly,
        Quadrant::SmallDissimilar => Strategy::PartialFreeze {
            trainable_blocks: num_blocks - frozen,
        },
        Quadrant::LargeSimilar => Strategy::FullFineTune,
        Quadrant::LargeDissimilar => Strategy::FromScratch,
    };

    let size_text = format!(
        "{images} images in {} classes, {min_per_class} in the smallest: {} (this model needs about {large_threshold} per class to retrain every layer).",
        per_class.len(),
        if size == Size::Large { "large" } else { "small" }
    );
    let similarity_text = format!(
        "Similarity {similarity:.2}: {} (statistics shift {:.2}, ImageNet confidence {:.2}, frozen features tell your classes apart {:.0}% of the time against {:.0}% by chance).",
        if similar {
            "your images look like the natural photos the model was trained on"
        } else {
            "your images look unlike the natural photos the model was trained on"
        },
        signals.mean_shift,
        signals.imagenet_confidence,
        signals.separability * 100.0,
        signals.chance * 100.0
    );
    let advice = match quadrant {
        Quadrant::SmallSimilar => {
            "So keep the pretrained body frozen and train only a new head: its features already fit, and there are too few images to change them safely.".to_string()
        }
        Quadrant::SmallDissimilar => format!(
            "So freeze the first {frozen} of {num_blocks} blocks, whose generic edges and textures still apply (the statistics shift grows after them), and retrain the last {} with the head: enough to adapt, few enough parameters for this many images.",
            num_blocks - frozen
        ),
        Quadrant::LargeSimilar => {
            "So fine-tune every layer from the pretrained weights, at a learning rate 10x below from-scratch: there are enough images to adjust all of them without losing what they know.".to_string()
        }
        Quadrant::LargeDissimilar => {
            "So training from scratch is justified: the pretrained features do not match and there are enough images to learn new ones. With only a few epochs, the pretrained start (full fine-tuning) usually still converges faster: try it if time is short.".to_string()
        }
    };
    Recommendation {
        images,
        classes: per_class.len(),
        class_names: class_names.to_vec(),
        per_class: per_class.to_vec(),
        min_per_class,
        large_threshold,
        size,
        similarity,
        signals,
        quadrant,
        strategy,
        explanation: match crate::data::imbalance(class_names, per_class) {
            Some(imbalance) => format!("{size_text} {similarity_text} {advice} {imbalance}"),
            None => format!("{size_text} {similarity_text} {advice}"),
        },
    }
}

/// How many leading blocks to keep frozen for small, dissimilar data: the blocks up to the lowest
/// point of the statistics shift within the body (the stem, which sees raw pixels, and the final 1x1
/// head conv aside). Up to there the inputs still look like ImageNet's, so the generic features apply;
/// from there on the shift grows, the features stop fitting, and those blocks retrain with the head.
/// At least one block trains.
pub fn frozen_blocks_for(block_shift: &[f64]) -> usize {
    let n = block_shift.len();
    if n < 3 {
        return n.saturating_sub(1);
    }
    let lowest = (1..n - 1)
        .min_by(|&a, &b| block_shift[a].total_cmp(&block_shift[b]))
        .expect("a non-empty range");
    (lowest + 1).min(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_architecture_table_counts_the_body_parameters_a_model_has() {
        let device = Device::flex();
        for kind in ModelKind::ALL {
            let architecture = kind.architecture();
            let model = architecture.init(3, &device);
            assert_eq!(architecture.body_parameters(), body_params(&model), "{kind:?}");
        }
        // The figures the recommender's thresholds are documented with.
        assert_eq!(ModelKind::MobileNetV2.architecture().body_parameters(), 2_223_872);
    }

    /// Signals whose three scores all equal `score` (so the similarity is `score`), over 19 blocks
    /// whose shift is lowest at block 12.
    fn signals(score: f64) -> Signals {
        let mut block_shift = vec![0.6; 19];
        for (i, shift) in block_shift.iter_mut().enumerate().skip(5).take(13) {
            *shift = 0.2 + 0.05 * (i as f64 - 12.0).abs();
        }
        Signals {
            sampled_images: 48,
            block_shift,
            mean_shift: 0.4,
            shift_score: score,
            imagenet_confidence: score,
            imagenet_entropy: 0.5,
            separability: 0.8,
            chance: 0.5,
            separability_score: score,
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class {i}")).collect()
    }

    #[test]
    fn size_is_large_from_the_threshold_on_for_the_smallest_class() {
        let below = decide(&names(2), &[5000, 889], signals(0.9), 890);
        assert_eq!(
            (below.size, below.min_per_class, below.images),
            (Size::Small, 889, 5889)
        );
        let at = decide(&names(2), &[890, 890], signals(0.9), 890);
        assert_eq!(at.size, Size::Large);
    }

    #[test]
    fn similarity_is_similar_from_the_cut_on() {
        assert_eq!(
            decide(&names(2), &[10, 10], signals(SIMILAR_AT), 890).quadrant,
            Quadrant::SmallSimilar
        );
        let just_below = decide(&names(2), &[10, 10], signals(SIMILAR_AT - 1e-6), 890);
        assert_eq!(just_below.quadrant, Quadrant::SmallDissimilar);
        assert!((just_below.similarity - (SIMILAR_AT - 1e-6)).abs() < 1e-12);
    }

    #[test]
    fn each_quadrant_has_its_strategy() {
        let pick = |per_class: usize, score: f64| {
            let r = decide(&names(3), &[per_class; 3], signals(score), 890);
            (r.quadrant, r.strategy)
        };
        assert_eq!(pick(50, 0.8), (Quadrant::SmallSimilar, Strategy::HeadOnly));
        assert_eq!(
            pick(50, 0.2),
            (
                Quadrant::SmallDissimilar,
                Strategy::PartialFreeze { trainable_blocks: 6 }
            )
        );
        assert_eq!(pick(2000, 0.8), (Quadrant::LargeSimilar, Strategy::FullFineTune));
        assert_eq!(pick(2000, 0.2), (Quadrant::LargeDissimilar, Strategy::FromScratch));
    }

    #[test]
    fn the_frozen_prefix_ends_where_the_shift_starts_to_grow() {
        // Lowest inside the body at block 12: blocks 0..=12 stay frozen.
        assert_eq!(frozen_blocks_for(&signals(0.2).block_shift), 13);
        // The stem and the head conv do not count, however low.
        assert_eq!(frozen_blocks_for(&[0.0, 0.5, 0.3, 0.4, 0.0]), 3);
        // Monotone growth from the first block: only the stem... and block 1 stay frozen.
        assert_eq!(frozen_blocks_for(&[0.9, 0.1, 0.2, 0.3, 0.4]), 2);
        assert_eq!(frozen_blocks_for(&[0.5, 0.5]), 1, "at least one block trains");
        assert_eq!(frozen_blocks_for(&[]), 0);
    }

    #[test]
    fn the_explanation_quotes_the_numbers() {
        let r = decide(&names(5), &[62, 70, 60, 60, 60], signals(0.81), 890);
        assert!(
            r.explanation
                .starts_with("312 images in 5 classes, 60 in the smallest: small"),
            "{}",
            r.explanation
        );
        assert!(r.explanation.contains("Similarity 0.81"), "{}", r.explanation);
        assert!(r.explanation.contains("train only a new head"), "{}", r.explanation);
        let scratch = decide(&names(2), &[5000, 5000], signals(0.1), 890);
        assert!(
            scratch.explanation.contains("pretrained start"),
            "says when pretrained is still the better bet"
        );
        assert!(!r.explanation.contains("unbalanced") && !scratch.explanation.contains("unbalanced"));
    }

    #[test]
    fn an_unbalanced_dataset_is_explained() {
        let r = decide(&names(3), &[300, 20, 59], signals(0.81), 890);
        assert!(
            r.explanation
                .starts_with("379 images in 3 classes, 20 in the smallest: small")
        );
        assert!(
            r.explanation.ends_with(
                "The classes are unbalanced: \"class 0\" has 300 images, \"class 1\" only 20. The model will lean towards \
                 the larger class; judge it by the per-class accuracy, and add images to \"class 1\" if you can."
            ),
            "{}",
            r.explanation
        );
        // 5x is the line: 99 against 20 is not called out.
        assert!(
            !decide(&names(2), &[99, 20], signals(0.81), 890)
                .explanation
                .contains("unbalanced")
        );
    }

    #[test]
    fn leave_one_out_nearest_centroid_separates_clusters_and_not_noise() {
        let clustered: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                let class = i % 2;
                vec![
                    if class == 0 { 1.0 } else { 0.0 },
                    if class == 1 { 1.0 } else { 0.0 },
                    (i as f32) * 0.01,
                ]
            })
            .collect();
        let labels: Vec<usize> = (0..20).map(|i| i % 2).collect();
        assert_eq!(loo_nearest_centroid(&clustered, &labels, 2), 1.0);
        // The same points with labels unrelated to them: no better than chance.
        let shuffled: Vec<usize> = (0..20).map(|i| (i / 2) % 2).collect();
        assert!(loo_nearest_centroid(&clustered, &shuffled, 2) <= 0.5);
    }

    #[test]
    fn recommendation_json_has_the_contract_fields() {
        let json = serde_json::to_value(decide(&names(2), &[10, 12], signals(0.3), 890)).unwrap();
        for field in [
            "images",
            "classes",
            "min_per_class",
            "size",
            "similarity",
            "signals",
            "quadrant",
            "strategy",
            "explanation",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["size"], "small");
        assert_eq!(json["quadrant"], "small-dissimilar");
        assert_eq!(json["strategy"]["kind"], "partial-freeze");
        assert_eq!(json["classes"], 2);
    }
}
