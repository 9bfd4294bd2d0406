//! The 1x1 convolution in NHWC is a matrix product: `out[pixels, n] = act(x[pixels, k] * w[k, n] + b)`
//! (+ a residual). The weights are packed once into panels of [`NR`] columns; the activations are read
//! in place, [`MR`] rows at a time, each element broadcast against a panel row. `MR x NR` = 4 x 8 keeps
//! eight accumulators, two weight vectors and a broadcast in the 16 vector registers that browsers
//! compile wasm SIMD to on x86-64 (XNNPACK's wasm kernels use the same tile there).

use crate::simd::F32x4;

/// Rows of the activation matrix per kernel call.
pub const MR: usize = 4;
/// Output columns per weight panel.
pub const NR: usize = 8;

/// What follows the product, in this order: the bias (always), the activation, then the residual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    /// The clamp bounds that implement it (infinite for none).
    pub(crate) fn bounds(self) -> (f32, f32) {
        match self {
            Self::None => (f32::NEG_INFINITY, f32::INFINITY),
            Self::Relu6 => (0.0, 6.0),
        }
    }
}

/// A `[k, n]` weight matrix and its `n` biases, packed for [`pointwise`]: panel `j` holds columns
/// `j * NR .. j * NR + NR` as `k` rows of `NR` contiguous floats; the last panel and the bias are
/// zero-padded to a whole panel.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedWeights {
    /// From a convolution's weights laid out `[n, k]` (one row of `k` inputs per output channel, as
    /// PyTorch and Burn store a `[out, in, 1, 1]` kernel) and its bias (zeros when `None`).
    ///
    /// # Panics
    /// When the lengths do not match `n` and `k` (a bug in the caller).
    pub fn from_output_major(weights: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        assert_eq!(weights.len(), n * k, "weights are not [{n}, {k}]");
        Self::pack(n, k, bias, |p, j| weights[j * k + p])
    }

    /// From a `[k, n]` row-major matrix (a linear layer's `[in, out]` weight, as Burn stores it).
    ///
    /// # Panics
    /// When the lengths do not match `n` and `k` (a bug in the caller).
    pub fn from_input_major(weights: &[f32], bias: Option<&[f32]>, k: usize, n: usize) -> Self {
        assert_eq!(weights.len(), n * k, "weights are not [{k}, {n}]");
        Self::pack(n, k, bias, |p, j| weights[p * n + j])
    }

    fn pack(n: usize, k: usize, bias: Option<&[f32]>, at: impl Fn(usize, usize) -> f32) -> Self {
        let panels_count = n.div_ceil(NR);
        let mut panels = vec![0.0; panels_count * k * NR];
        for panel in 0..panels_count {
            for p in 0..k {
                for c in 0..NR {
                    let j = panel * NR + c;
                    if j < n {
                        panels[(panel * k + p) * NR + c] = at(p, j);
                    }
                }
            }
        }
        let mut padded_bias = vec![0.0; panels_count * NR];
        if let Some(bias) = bias {
            assert_eq!(bias.len(), n, "bias is not [{n}]");
            padded_bias[..n].copy_from_slice(bias);
        }
        Self {
            k,
            n,
            panels,
            bias: padded_bias,
        }
    }

    /// Input channels.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }
}

/// `out[r, j] = act(sum_p a[r, p] * w[p, j] + bias[j]) (+ residual[r, j])` for `rows` rows; `a` is
/// `[rows, k]`, `out` and `residual` `[rows, n]`, all row-major (NHWC pixels x channels).
///
/// # Panics
/// When a slice is shorter than its shape says (a bug in the caller).
pub fn pointwise(
    a: &[f32],
    rows: usize,
    weights: &PackedWeights,
    activation: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let (k, n) = (weights.k, weights.n);
    assert!(a.len() >= rows * k, "input is shorter than [{rows}, {k}]");
    assert!(out.len() >= rows * n, "output is shorter than [{rows}, {n}]");
    if let Some(residual) = residual {
        assert!(residual.len() >= rows * n, "residual is shorter than [{rows}, {n}]");
    }
    if rows == 0 || n == 0 {
        return;
    }
    let (lo, hi) = activation.bounds();
    // Rows per block: the block's activations (rows x k floats) stay in the L2 cache while every
    // panel passes over them; each panel (k x NR floats, at most 40 KB here) stays in L1 meanwhile.
    let block_rows = ((32 * 1024 / k.max(1)) / MR).max(1) * MR;
    let panels = n.div_ceil(NR);
    let mut start = 0;
    while start < rows {
        let end = (start + block_rows).min(rows);
        for panel in 0..panels {
            let column = panel * NR;
            let columns = NR.min(n - column);
            let panel_data = &weights.panels[panel * k * NR..(panel + 1) * k * NR];
            let bias = &weights.bias[column..column + NR];
            let mut row = start;
            while row < end {
                let tile_rows = MR.min(end - row);
                let tile = Tile {
                    k,
                    a: &a[row * k..],
                    panel: panel_data,
                    bias,
                    lo,
                    hi,
                    n,
                    column,
                    columns,
                };
                let residual = residual.map(|r| &r[row * n..]);
                let out = &mut out[row * n..];
                match tile_rows {
                    4 => tile.run::<4>(residual, out),
                    3 => tile.run::<3>(residual, out),
                    2 => tile.run::<2>(residual, out),
                    _ => tile.run::<1>(residual, out),
                }
                row += tile_rows;
            }
        }
        start = end;
    }
}

/// One `M x NR` output tile's inputs.
struct Tile<'a> {
    k: usize,
    /// From the tile's first row; row stride `k`.
    a: &'a [f32],
    /// The panel, `k x NR`.
    panel: &'a [f32],
    /// `NR` biases.
    bias: &'a [f32],
    lo: f32,
    hi: f32,
    /// Row stride of the output and the residual.
    n: usize,
    /// The panel's first output column.
    column: usize,
    /// Valid columns in this panel (`NR` but in a last, partial one).
    columns: usize,
}

impl Tile<'_> {
    #[inline(always)]
    fn run<const M: usize>(&self, residual: Option<&[f32]>, out: &mut [f32]) {
        let k = self.k;
        debug_assert!(self.a.len() >= (M - 1) * k + k && self.panel.len() >= k * NR && self.bias.len() >= NR);
        // SAFETY: every pointer below stays inside the slices checked above (and in `pointwise`):
        // row `r < M` of `a` spans `r * k .. r * k + k`, panel row `p < k` spans `p * NR .. p * NR + NR`.
        let mut acc = unsafe {
            let b0 = F32x4::load(self.bias.as_ptr());
            let b1 = F32x4::load(self.bias.as_ptr().add(4));
            [[b0, b1]; M]
        };
        let a = self.a.as_ptr();
        let mut w = self.panel.as_ptr();
        for p in 0..k {
            unsafe {
                let w0 = F32x4::load(w);
                let w1 = F32x4::load(w.add(4));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = F32x4::load_splat(a.add(r * k + p));
                    acc[0] = acc[0].mul_add(x, w0);
                    acc[1] = acc[1].mul_add(x, w1);
                }
                w = w.add(NR);
            }
        }
        let (lo, hi) = (F32x4::splat(self.lo), F32x4::splat(self.hi));
        for (r, acc) in acc.iter().enumerate() {
            let offset = r * self.n + self.column;
            let mut v = [acc[0].clamp(lo, hi), acc[1].clamp(lo, hi)];
            if self.columns == NR {
                if let Some(residual) = residual {
                    let residual = &residual[offset..offset + NR];
                    // SAFETY: `residual` has NR elements from `offset`.
                    unsafe {
                        v[0] = v[0].add(F32x4::load(residual.as_ptr()));
                        v[1] = v[1].add(F32x4::load(residual.as_ptr().add(4)));
                    }
                }
                let out = &mut out[offset..offset + NR];
                // SAFETY: `out` has NR elements from `offset`.
                unsafe {
                    v[0].store(out.as_mut_ptr());
                    v[1].store(out.as_mut_ptr().add(4));
                }
            } else {
                let values = [v[0].to_array(), v[1].to_array()];
                for c in 0..self.columns {
                    let extra = residual.map_or(0.0, |residual| residual[offset + c]);
                    out[offset + c] = values[c / 4][c % 4] + extra;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    fn reference(a: &[f32], rows: usize, k: usize, w: &[f32], bias: &[f32], n: usize, act: Activation) -> Vec<f32> {
        let (lo, hi) = act.bounds();
        let mut out = vec![0.0; rows * n];
        for r in 0..rows {
            for j in 0..n {
                let sum: f64 = (0..k).map(|p| f64::from(a[r * k + p]) * f64::from(w[j * k + p])).sum();
                out[r * n + j] = ((sum + f64::from(bias[j])) as f32).clamp(lo, hi);
            }
        }
        out
    }

    #[test]
    fn pointwise_matches_the_definition_for_every_tile_remainder() {
        for (rows, k, n) in [
            (1, 1, 1),
            (5, 3, 8),
            (7, 16, 13),
            (13, 33, 24),
            (64, 96, 40),
            (9, 160, 7),
        ] {
            for act in [Activation::None, Activation::Relu6] {
                let a = values(rows * k, 1);
                let w: Vec<f32> = values(n * k, 2).iter().map(|v| v * 4.0).collect();
                let bias = values(n, 3);
                let packed = PackedWeights::from_output_major(&w, Some(&bias), n, k);
                let mut out = vec![f32::NAN; rows * n];
                pointwise(&a, rows, &packed, act, None, &mut out);
                let expected = reference(&a, rows, k, &w, &bias, n, act);
                for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{rows}x{k}x{n} {act:?} [{i}]: {got} vs {want}"
                    );
                }
                let residual = values(rows * n, 4);
                let mut with_residual = vec![0.0; rows * n];
                pointwise(&a, rows, &packed, act, Some(&residual), &mut with_residual);
                for i in 0..rows * n {
                    assert!((with_residual[i] - (out[i] + residual[i])).abs() <= 1e-6);
                }
            }
        }
    }

    #[test]
    fn both_layouts_pack_the_same_matrix() {
        let (k, n) = (5, 11);
        let w = values(n * k, 7);
        let transposed: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        assert_eq!(
            PackedWeights::from_output_major(&w, None, n, k),
            PackedWeights::from_input_major(&transposed, None, k, n)
        );
    }
}
