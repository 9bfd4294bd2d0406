//! Plain functions over predictions: softmax and top-k.

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

#[cfg(test)]
mod tests {
    use super::*;

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
