//! Reviewing the data before training: pictures that are probably in the wrong class, the same
//! picture twice (within a class, or across classes, where a split would put one copy in training and
//! the other in validation), and pictures unlike any class — found from the frozen body's embeddings,
//! which the recommender and head-only training already compute.
//!
//! - **Label**: a softmax head on the (L2-normalised) embeddings is trained on all folds but one and
//!   predicts the pictures of that one (stratified k-fold, so every picture gets an out-of-fold
//!   probability). A picture whose own class gets a low probability while another class gets more is
//!   suspect, with that class suggested.
//! - **Duplicate**: two pictures whose embeddings' cosine similarity is at least
//!   [`ReviewConfig::duplicate_similarity`] (the same photo re-encoded, resized or cropped a little).
//! - **Outlier**: a picture whose similarity to the nearest class centroid (its own class's computed
//!   without it) is far below what is usual in this dataset (a robust z-score).
//!
//! Plain Rust on the host: the embeddings are a few hundred kilobytes and the heads tiny.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use crate::cache::EmbeddingCache;
use crate::data::{Dataset, Rng};
use crate::model::{ImageClassifier, ModelKind};
use crate::readback::ReadbackError;

/// The frozen pretrained body's embedding of every picture of `dataset`, in order: from `cache` where
/// it has them (the recommender's, head-only training's), computed and cached where not.
pub async fn embeddings(
    pretrained: &ImageClassifier,
    kind: ModelKind,
    dataset: &Dataset,
    cache: &mut EmbeddingCache,
) -> Result<Vec<Vec<f32>>, ReadbackError> {
    // Never stopped: the closure always goes on.
    let _ = cache
        .fill(pretrained, kind, dataset, async |_, _| ControlFlow::Continue(()))
        .await?;
    Ok(dataset
        .examples
        .iter()
        .map(|example| cache.get(&example.image).cloned().unwrap_or_default())
        .collect())
}

/// How a review decides.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewConfig {
    /// Folds of the cross-validated head (fewer when a class has fewer pictures).
    pub folds: usize,
    /// Full-batch gradient steps per head.
    pub steps: usize,
    /// L2 penalty of the head's weights.
    pub weight_decay: f32,
    /// A picture is a label suspect when its own class's out-of-fold probability is below this and
    /// another class's is above it.
    pub label_probability: f32,
    /// Nearest neighbours (by the embeddings' cosine similarity) a label suspect is judged among.
    pub neighbours: usize,
    /// The share of them in the suggested class for a picture to be a label suspect.
    pub neighbours_agreeing: f32,
    /// Cosine similarity of embeddings from which two pictures count as duplicates.
    pub duplicate_similarity: f32,
    /// Robust z-score (of the similarity to the nearest class) below which a picture is an outlier.
    pub outlier_z: f32,
    pub seed: u64,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        Self {
            folds: 5,
            steps: 400,
            weight_decay: 1e-4,
            label_probability: 0.5,
            neighbours: 7,
            neighbours_agreeing: 0.7,
            duplicate_similarity: 0.9,
            outlier_z: -4.0,
            seed: 0,
        }
    }
}

/// Why a picture is suspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Label,
    Duplicate,
    Outlier,
}

/// A picture worth a look, by its index in the dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suspect {
    pub image: usize,
    pub class: usize,
    /// The class it looks like (label suspects; a duplicate's other copy's class).
    pub suggested_class: Option<usize>,
    /// The out-of-fold probability of its own class.
    pub label_probability: f32,
    pub reason: Reason,
    /// How strong the case is, for ranking within a reason: the other class's probability minus its
    /// own plus the share of its nearest neighbours in the other class (label), the cosine similarity (duplicate), minus the z-score (outlier).
    pub score: f32,
    /// The other copy (duplicates).
    pub duplicate_of: Option<usize>,
}

/// What a review found.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// Ranked: duplicates across classes first (they leak between training and validation), then
    /// label suspects, duplicates within a class, outliers; each by its score.
    pub suspects: Vec<Suspect>,
    /// Each picture's out-of-fold class probabilities.
    pub out_of_fold: Vec<Vec<f32>>,
}

/// Reviews pictures from their embeddings (`embeddings[i]` of the picture with label `labels[i]`).
pub fn review(embeddings: &[Vec<f32>], labels: &[usize], classes: usize, config: &ReviewConfig) -> Review {
    let features = centred(embeddings);
    // Duplicates on the embeddings as they are: a copy stays close in every direction.
    let raw: Vec<Vec<f32>> = embeddings.iter().map(|e| normalised(e)).collect();
    let out_of_fold = out_of_fold(&features, labels, classes, config);
    let mut suspects = Vec::new();

    let neighbours = nearest_neighbours(&features, config.neighbours);
    for (i, probabilities) in out_of_fold.iter().enumerate() {
        let own = probabilities[labels[i]];
        let (other, p_other) = probabilities.iter().enumerate().filter(|&(c, _)| c != labels[i]).fold(
            (labels[i], f32::MIN),
            |best, (c, &p)| if p > best.1 { (c, p) } else { best },
        );
        // A picture filed in the wrong class sits among the other class's pictures; one merely hard
        // to tell apart sits between the two.
        let among_other =
            neighbours[i].iter().filter(|&&n| labels[n] == other).count() as f32 / neighbours[i].len().max(1) as f32;
        if own < config.label_probability && p_other > own && among_other >= config.neighbours_agreeing {
            suspects.push(Suspect {
                image: i,
                class: labels[i],
                suggested_class: Some(other),
                label_probability: own,
                reason: Reason::Label,
                score: p_other - own + among_other,
                duplicate_of: None,
            });
        }
    }

    for j in 0..features.len() {
        for i in 0..j {
            let similarity = dot(&raw[i], &raw[j]);
            if similarity >= config.duplicate_similarity {
                suspects.push(Suspect {
                    image: j,
                    class: labels[j],
                    suggested_class: (labels[i] != labels[j]).then_some(labels[i]),
                    label_probability: out_of_fold[j][labels[j]],
                    reason: Reason::Duplicate,
                    score: similarity,
                    duplicate_of: Some(i),
                });
            }
        }
    }

    for (i, z) in outlier_scores(&features, labels, classes).into_iter().enumerate() {
        if z < config.outlier_z {
            suspects.push(Suspect {
                image: i,
                class: labels[i],
                suggested_class: None,
                label_probability: out_of_fold[i][labels[i]],
                reason: Reason::Outlier,
                score: -z,
                duplicate_of: None,
            });
        }
    }

    let rank = |s: &Suspect| match s.reason {
        Reason::Duplicate if s.suggested_class.is_some() => 0,
        Reason::Label => 1,
        Reason::Duplicate => 2,
        Reason::Outlier => 3,
    };
    suspects.sort_by(|a, b| rank(a).cmp(&rank(b)).then(b.score.total_cmp(&a.score)));
    Review { suspects, out_of_fold }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The embeddings less their mean, each to unit length. Pooled ReLU6 activations are all
/// non-negative, so raw embeddings point into one corner and every pair looks alike; centred, an
/// unrelated pair is near 0 and the same picture near 1, and the head's steps are well conditioned.
fn centred(embeddings: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let width = embeddings.first().map_or(0, Vec::len);
    let mut mean = vec![0.0f32; width];
    for e in embeddings {
        for (m, v) in mean.iter_mut().zip(e) {
            *m += v / embeddings.len() as f32;
        }
    }
    embeddings
        .iter()
        .map(|e| normalised(&e.iter().zip(&mean).map(|(v, m)| v - m).collect::<Vec<_>>()))
        .collect()
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = dot(v, v).sqrt().max(1e-12);
    v.iter().map(|x| x / norm).collect()
}

/// Each picture's `k` most similar others (unit vectors: by dot product).
fn nearest_neighbours(features: &[Vec<f32>], k: usize) -> Vec<Vec<usize>> {
    (0..features.len())
        .map(|i| {
            let mut others: Vec<(f32, usize)> = (0..features.len())
                .filter(|&j| j != i)
                .map(|j| (dot(&features[i], &features[j]), j))
                .collect();
            others.sort_by(|a, b| b.0.total_cmp(&a.0));
            others.into_iter().take(k).map(|(_, j)| j).collect()
        })
        .collect()
}

/// Stratified folds: each class's pictures, shuffled, dealt round-robin.
fn folds(labels: &[usize], classes: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut fold = vec![0; labels.len()];
    let mut rng = Rng::new(seed);
    for class in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        rng.shuffle(&mut members);
        for (k, i) in members.into_iter().enumerate() {
            fold[i] = k % folds;
        }
    }
    fold
}

/// Each picture's class probabilities from a head that never saw it.
fn out_of_fold(features: &[Vec<f32>], labels: &[usize], classes: usize, config: &ReviewConfig) -> Vec<Vec<f32>> {
    let smallest = (0..classes)
        .map(|c| labels.iter().filter(|&&l| l == c).count())
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0);
    let k = config.folds.min(smallest).max(2);
    let fold = folds(labels, classes, k, config.seed);
    let mut probabilities = vec![vec![1.0 / classes as f32; classes]; features.len()];
    for held_out in 0..k {
        let train: Vec<usize> = (0..features.len()).filter(|&i| fold[i] != held_out).collect();
        let head = Head::fit(features, labels, &train, classes, config);
        for i in (0..features.len()).filter(|&i| fold[i] == held_out) {
            probabilities[i] = head.probabilities(&features[i]);
        }
    }
    probabilities
}

/// A softmax classifier on the normalised embeddings.
struct Head {
    weights: Vec<Vec<f32>>,
    bias: Vec<f32>,
}

impl Head {
    /// Full-batch gradient descent with Nesterov momentum on the cross-entropy plus an L2 penalty.
    fn fit(features: &[Vec<f32>], labels: &[usize], train: &[usize], classes: usize, config: &ReviewConfig) -> Self {
        let width = features.first().map_or(0, Vec::len);
        // Unit-norm inputs: the loss's curvature is at most 1/2 (plus the penalty's), so steps of 2
        // are stable.
        let (rate, momentum) = (2.0f32, 0.9f32);
        let mut head = Self {
            weights: vec![vec![0.0; width]; classes],
            bias: vec![0.0; classes],
        };
        let mut velocity = Self {
            weights: vec![vec![0.0; width]; classes],
            bias: vec![0.0; classes],
        };
        let n = train.len().max(1) as f32;
        for _ in 0..config.steps {
            // The gradient at the look-ahead point.
            let ahead = head.plus(&velocity, momentum);
            let mut grad_w = vec![vec![0.0f32; width]; classes];
            let mut grad_b = vec![0.0f32; classes];
            for &i in train {
                let p = ahead.probabilities(&features[i]);
                for c in 0..classes {
                    let g = (p[c] - f32::from(u8::from(labels[i] == c))) / n;
                    grad_b[c] += g;
                    for (w, x) in grad_w[c].iter_mut().zip(&features[i]) {
                        *w += g * x;
                    }
                }
            }
            for c in 0..classes {
                for ((v, g), w) in velocity.weights[c].iter_mut().zip(&grad_w[c]).zip(&ahead.weights[c]) {
                    *v = momentum * *v - rate * (g + config.weight_decay * w);
                }
                velocity.bias[c] = momentum * velocity.bias[c] - rate * grad_b[c];
            }
            head = head.plus(&velocity, 1.0);
        }
        head
    }

    fn plus(&self, other: &Self, factor: f32) -> Self {
        Self {
            weights: self
                .weights
                .iter()
                .zip(&other.weights)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + factor * y).collect())
                .collect(),
            bias: self.bias.iter().zip(&other.bias).map(|(x, y)| x + factor * y).collect(),
        }
    }

    fn probabilities(&self, x: &[f32]) -> Vec<f32> {
        let logits: Vec<f32> = self
            .weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| dot(w, x) + b)
            .collect();
        crate::metrics::softmax(&logits)
    }
}

/// Per picture, the robust z-score (median and MAD over all pictures) of its cosine similarity to the
/// nearest class centroid, its own class's centroid computed without it.
fn outlier_scores(features: &[Vec<f32>], labels: &[usize], classes: usize) -> Vec<f32> {
    let width = features.first().map_or(0, Vec::len);
    let mut sums = vec![vec![0.0f32; width]; classes];
    let mut counts = vec![0usize; classes];
    for (x, &l) in features.iter().zip(labels) {
        counts[l] += 1;
        for (s, v) in sums[l].iter_mut().zip(x) {
            *s += v;
        }
    }
    let nearest: Vec<f32> = features
        .iter()
        .zip(labels)
        .map(|(x, &own)| {
            (0..classes)
                .filter_map(|c| {
                    let (sum, count): (Vec<f32>, usize) = if c == own {
                        (sums[c].iter().zip(x).map(|(s, v)| s - v).collect(), counts[c] - 1)
                    } else {
                        (sums[c].clone(), counts[c])
                    };
                    (count > 0).then(|| dot(&normalised(&sum), x))
                })
                .fold(f32::MIN, f32::max)
        })
        .collect();
    let median = |values: &mut Vec<f32>| {
        values.sort_by(f32::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    let centre = median(&mut nearest.clone());
    let spread = median(&mut nearest.iter().map(|v| (v - centre).abs()).collect()) * 1.4826;
    nearest.iter().map(|v| (v - centre) / spread.max(1e-6)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three well-separated clusters of 12 points in 16 dimensions, with noise.
    fn clusters() -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = Rng::new(9);
        let mut embeddings = Vec::new();
        let mut labels = Vec::new();
        for class in 0..3 {
            for _ in 0..12 {
                let mut v: Vec<f32> = (0..16).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
                v[class] += 3.0;
                embeddings.push(v);
                labels.push(class);
            }
        }
        (embeddings, labels)
    }

    #[test]
    fn a_flipped_label_a_copy_across_classes_and_an_odd_one_out_are_found() {
        let (mut embeddings, mut labels) = clusters();
        labels[3] = 2; // a class-0 point labelled 2
        let copy = embeddings[20].clone(); // a class-1 point, copied into class 0
        embeddings.push(copy);
        labels.push(0);
        let mut odd = vec![0.0; 16];
        odd[10] = 6.0; // like no class
        embeddings.push(odd);
        labels.push(1);
        let review = review(&embeddings, &labels, 3, &ReviewConfig::default());
        let find = |reason, image| review.suspects.iter().find(|s| s.reason == reason && s.image == image);
        let flipped = find(Reason::Label, 3).expect("the flipped label");
        assert_eq!(flipped.suggested_class, Some(0));
        let copied = find(Reason::Duplicate, 36).expect("the copy");
        assert_eq!((copied.duplicate_of, copied.suggested_class), (Some(20), Some(1)));
        assert_eq!(
            review.suspects[0].reason,
            Reason::Duplicate,
            "a copy across classes comes first"
        );
        assert!(find(Reason::Outlier, 37).is_some(), "{:?}", review.suspects);
        // Nothing else: the clean points are not suspects.
        let flagged: std::collections::BTreeSet<usize> = review.suspects.iter().map(|s| s.image).collect();
        assert!(flagged.iter().all(|i| [3, 20, 36, 37].contains(i)), "{flagged:?}");
    }
}
