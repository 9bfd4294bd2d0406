//! Plain functions over predictions: softmax, top-k, and the classification metrics of an evaluation
//! (loss, accuracy, per-class accuracy, confusion matrix).

use serde::{Deserialize, Serialize};

/// Softmax of one row of logits (numerically stable).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&logit| (logit - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` largest values as `(index, value)`, largest first; ties keep the lower index first.
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut indexed: Vec<(usize, f32)> = values.iter().copied().enumerate().collect();
    indexed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    indexed.truncate(k);
    indexed
}

/// The index of the largest value (the first of equals); 0 for an empty slice.
pub fn argmax(values: &[f32]) -> usize {
    top_k(values, 1).first().map_or(0, |&(index, _)| index)
}

/// How a classifier did on a set of labelled images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy (without label smoothing).
    pub loss: f64,
    /// Fraction of images classified correctly.
    pub accuracy: f64,
    /// Accuracy within each class (`None` for a class with no images here).
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `confusion[true][predicted]` image counts.
    pub confusion: Vec<Vec<usize>>,
    /// The predicted class of each image, in order.
    pub predictions: Vec<usize>,
}

impl Evaluation {
    /// Evaluates row-major `logits` (`labels.len()` rows of `classes`) against `labels`.
    pub fn from_logits(logits: &[f32], labels: &[usize], classes: usize) -> Self {
        assert_eq!(
            logits.len(),
            labels.len() * classes,
            "logits do not match labels x classes"
        );
        let mut confusion = vec![vec![0usize; classes]; classes];
        let mut loss = 0.0f64;
        let mut predictions = Vec::with_capacity(labels.len());
        for (row, &label) in logits.chunks(classes.max(1)).zip(labels) {
            let predicted = argmax(row);
            predictions.push(predicted);
            confusion[label][predicted] += 1;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let log_sum = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            loss += log_sum - row[label] as f64;
        }
        let n = labels.len();
        let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
        let per_class_accuracy = confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let total: usize = row.iter().sum();
                (total > 0).then(|| row[c] as f64 / total as f64)
            })
            .collect();
        Self {
            loss: if n == 0 { 0.0 } else { loss / n as f64 },
            accuracy: if n == 0 { 0.0 } else { correct as f64 / n as f64 },
            per_class_accuracy,
            confusion,
            predictions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_counts_confusions_per_class() {
        // Three classes; rows predict 0, 1, 1, 2.
        let logits = [
            2.0, 0.0, 0.0, //
            0.0, 3.0, 0.0, //
            0.0, 1.0, 0.0, //
            0.0, 0.0, 5.0,
        ];
        let eval = Evaluation::from_logits(&logits, &[0, 1, 0, 2], 3);
        assert_eq!(eval.predictions, vec![0, 1, 1, 2]);
        assert_eq!(eval.confusion, vec![vec![1, 1, 0], vec![0, 1, 0], vec![0, 0, 1]]);
        assert_eq!(eval.accuracy, 0.75);
        assert_eq!(eval.per_class_accuracy, vec![Some(0.5), Some(1.0), Some(1.0)]);
        // The mean cross-entropy of the four rows: log(sum of exps) minus the true class's logit.
        let cross_entropy =
            |logits: [f64; 3], label: usize| logits.iter().map(|l| l.exp()).sum::<f64>().ln() - logits[label];
        let expected = (cross_entropy([2.0, 0.0, 0.0], 0)
            + cross_entropy([0.0, 3.0, 0.0], 1)
            + cross_entropy([0.0, 1.0, 0.0], 0)
            + cross_entropy([0.0, 0.0, 5.0], 2))
            / 4.0;
        assert!((eval.loss - expected).abs() < 1e-6, "{} vs {expected}", eval.loss);
        let empty = Evaluation::from_logits(&[1.0, 0.0], &[0], 2);
        assert_eq!(empty.per_class_accuracy, vec![Some(1.0), None]);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let probs = softmax(&[1.0, 2.0, 3.0]);
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(probs[0] < probs[1] && probs[1] < probs[2]);
        // Large logits must not overflow.
        let probs = softmax(&[1000.0, 1001.0]);
        assert!((probs[1] - 0.731_058_6).abs() < 1e-6, "{probs:?}");
    }

    #[test]
    fn top_k_is_sorted_and_stable() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, 0.2], 3), vec![(1, 0.5), (2, 0.5), (3, 0.2)]);
        assert_eq!(top_k(&[0.3], 5), vec![(0, 0.3)]);
    }
}
