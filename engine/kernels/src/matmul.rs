//! The general matrix product `c = a * b` (or `c += a * b`) of training's 1x1 convolutions, whose
//! operands are NCHW planes and their transposes: the forward pass `y = w * x`, the input's gradient
//! `dx = wᵀ * dy` and the weights' `dw += dy * xᵀ`. Both operands are strided views ([`Matrix`]),
//! copied block by block into panels (the packing of BLIS-style products) so that a register tile
//! reads both contiguously, whatever their layout: the portable `MR x NR` one of
//! [`pointwise`](crate::pointwise), or 6 x 16 with AVX2 + FMA on x86-64.
//!
//! Blocks: `KC` steps of the inner dimension at a time; of `b`, about `NC` columns packed at once (at
//! most `KC x NC` floats, 1 MiB, for the L2 cache); of `a`, about `MC` rows (64 KiB), whole panels of
//! the tile in both. The inner loops pass one `KC`-step panel of `b` (8 or 16 KiB, in L1) over every
//! row panel of the `a` block.

use crate::gemm::{MR, NR};
use crate::simd::F32x4;

const KC: usize = 256;
const MC: usize = 64;
const NC: usize = 1024;

/// A read-only strided matrix: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// `rows x cols`, stored row after row.
    ///
    /// # Panics
    /// When `data` is shorter than `rows * cols` (a bug in the caller).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= rows * cols,
            "{} floats are not [{rows}, {cols}]",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, without copying.
    pub fn transposed(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Packs rows `rows` and columns `cols` as `mr`-row panels, each `cols.len()` steps of `mr`
    /// contiguous floats; rows past the end are zeros.
    #[inline(always)]
    fn pack_rows(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, mr: usize, out: &mut Vec<f32>) {
        let depth = cols.len();
        let panels = rows.len().div_ceil(mr);
        out.clear();
        out.resize(panels * depth * mr, 0.0);
        for panel in 0..panels {
            let out = &mut out[panel * depth * mr..][..depth * mr];
            for r in 0..mr.min(rows.end - rows.start - panel * mr) {
                let row = rows.start + panel * mr + r;
                let base = row * self.row_stride + cols.start * self.col_stride;
                if self.col_stride == 1 {
                    for (p, &v) in self.data[base..base + depth].iter().enumerate() {
                        out[p * mr + r] = v;
                    }
                } else {
                    for p in 0..depth {
                        out[p * mr + r] = self.data[base + p * self.col_stride];
                    }
                }
            }
        }
    }

    /// Packs rows `rows` and columns `cols` as `nr`-column panels, each `rows.len()` steps of `nr`
    /// contiguous floats; columns past the end are zeros.
    #[inline(always)]
    fn pack_cols(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, nr: usize, out: &mut Vec<f32>) {
        let depth = rows.len();
        let panels = cols.len().div_ceil(nr);
        out.clear();
        out.resize(panels * depth * nr, 0.0);
        for panel in 0..panels {
            let out = &mut out[panel * depth * nr..][..depth * nr];
            let first = cols.start + panel * nr;
            let width = nr.min(cols.end - first);
            if self.col_stride == 1 {
                for p in 0..depth {
                    let base = (rows.start + p) * self.row_stride + first;
                    out[p * nr..p * nr + width].copy_from_slice(&self.data[base..base + width]);
                }
            } else {
                for c in 0..width {
                    let base = rows.start * self.row_stride + (first + c) * self.col_stride;
                    for p in 0..depth {
                        out[p * nr + c] = self.data[base + p * self.row_stride];
                    }
                }
            }
        }
    }
}

/// Reusable packing buffers (one per thread), so that repeated products do not allocate.
#[derive(Debug, Default)]
pub struct Workspace {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// `c = a * b`, or `c += a * b` when `accumulate`; `c` is row-major `[a.rows(), b.cols()]`.
///
/// On x86-64 processors with AVX2 and FMA (checked once, at run time) the tile is 6 x 16 on 256-bit
/// registers with fused multiply-adds; elsewhere (wasm, other processors) the portable
/// `MR x NR` tile on four-lane `F32x4`.
///
/// # Panics
/// When the inner dimensions differ or `c` is too short (a bug in the caller).
pub fn matmul(a: Matrix, b: Matrix, c: &mut [f32], accumulate: bool, workspace: &mut Workspace) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the processor has AVX2 and FMA, checked just above.
        unsafe { avx2::matmul(a, b, c, accumulate, workspace) };
        return;
    }
    blocked::<Portable>(a, b, c, accumulate, workspace);
}

/// One register tile of the product: `MR` rows of `a` against `NR` columns of `b`.
trait Tile {
    /// Rows of the tile (of a packed `a` panel).
    const MR: usize;
    /// Columns of the tile (of a packed `b` panel).
    const NR: usize;
    /// The `MR x NR` accumulators.
    type Acc;

    /// The product of an `a` panel (`depth` steps of `MR` floats) and a `b` panel (`depth` steps of
    /// `NR`).
    ///
    /// # Safety
    /// `a` and `b` hold that many floats, and the processor has the tile's instructions.
    unsafe fn tile(depth: usize, a: *const f32, b: *const f32) -> Self::Acc;

    /// Writes (or adds, when `add`) the first `rows x columns` of `acc` into `c` (row stride `n`).
    ///
    /// # Safety
    /// The processor has the tile's instructions.
    unsafe fn store(acc: &Self::Acc, c: &mut [f32], n: usize, rows: usize, columns: usize, add: bool);
}

/// The blocked product (`KC`, `MC`, `NC` blocks, both operands packed) around tile `T`.
#[inline(always)]
fn blocked<T: Tile>(a: Matrix, b: Matrix, c: &mut [f32], accumulate: bool, workspace: &mut Workspace) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "[{m}, {k}] * [{}, {n}]", b.rows);
    assert!(
        c.len() >= m * n,
        "the product is [{m}, {n}], the output {} floats",
        c.len()
    );
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // Whole panels in a block of `b`'s columns and of `a`'s rows.
    let nc_block = NC / T::NR * T::NR;
    let mc_block = MC / T::MR * T::MR;
    for jc in (0..n).step_by(nc_block) {
        let nc = nc_block.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            b.pack_cols(pc..pc + kc, jc..jc + nc, T::NR, &mut workspace.b);
            let add = accumulate || pc > 0;
            for ic in (0..m).step_by(mc_block) {
                let mc = mc_block.min(m - ic);
                a.pack_rows(ic..ic + mc, pc..pc + kc, T::MR, &mut workspace.a);
                for (jp, b_panel) in workspace.b.chunks_exact(kc * T::NR).enumerate() {
                    let column = jc + jp * T::NR;
                    let columns = T::NR.min(n - column);
                    for (ip, a_panel) in workspace.a.chunks_exact(kc * T::MR).enumerate() {
                        let row = ic + ip * T::MR;
                        // SAFETY: whole panels (`chunks_exact`) of `kc` steps; the instructions are
                        // the caller's to vouch for (`matmul` checks them before it picks a tile).
                        unsafe {
                            let tile = T::tile(kc, a_panel.as_ptr(), b_panel.as_ptr());
                            T::store(&tile, &mut c[row * n + column..], n, T::MR.min(m - row), columns, add);
                        }
                    }
                }
            }
        }
    }
}

/// The `MR x NR` tile on [`F32x4`] (wasm SIMD in the browser, SSE on x86-64 without AVX2).
struct Portable;

impl Tile for Portable {
    const MR: usize = MR;
    const NR: usize = NR;
    type Acc = [[F32x4; 2]; MR];

    #[inline(always)]
    unsafe fn tile(depth: usize, mut a: *const f32, mut b: *const f32) -> Self::Acc {
        let mut acc = [[F32x4::splat(0.0); 2]; MR];
        for _ in 0..depth {
            // SAFETY: `depth` steps of MR floats of `a` and NR of `b` (the caller's contract).
            unsafe {
                let b0 = F32x4::load(b);
                let b1 = F32x4::load(b.add(4));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = F32x4::load_splat(a.add(r));
                    acc[0] = acc[0].mul_add(x, b0);
                    acc[1] = acc[1].mul_add(x, b1);
                }
                a = a.add(MR);
                b = b.add(NR);
            }
        }
        acc
    }

    #[inline(always)]
    unsafe fn store(acc: &Self::Acc, c: &mut [f32], n: usize, rows: usize, columns: usize, add: bool) {
        for (r, acc) in acc.iter().enumerate().take(rows) {
            let out = &mut c[r * n..r * n + columns];
            if columns == NR {
                let mut v = *acc;
                // SAFETY: `out` has NR floats.
                unsafe {
                    if add {
                        v[0] = v[0].add(F32x4::load(out.as_ptr()));
                        v[1] = v[1].add(F32x4::load(out.as_ptr().add(4)));
                    }
                    v[0].store(out.as_mut_ptr());
                    v[1].store(out.as_mut_ptr().add(4));
                }
            } else {
                let values = [acc[0].to_array(), acc[1].to_array()];
                for (j, out) in out.iter_mut().enumerate() {
                    let v = values[j / 4][j % 4];
                    *out = if add { *out + v } else { v };
                }
            }
        }
    }
}

/// x86-64 with AVX2 and FMA: a 6 x 16 tile in twelve 256-bit accumulators (two per row), which keeps
/// both FMA units busy (twelve independent chains cover their latency) and, with the two `b` vectors
/// and the broadcast, fits the sixteen registers without spilling (a 4 x 24 tile spilled one).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Matrix, Tile, Workspace, blocked};
    use core::arch::x86_64::*;

    const MR: usize = 6;
    const NR: usize = 16;

    pub fn available() -> bool {
        // `is_x86_feature_detected!` caches what it finds: a load and a test after the first call.
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }

    /// [`super::matmul`] with the AVX2 tile.
    ///
    /// # Safety
    /// The processor has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matmul(a: Matrix, b: Matrix, c: &mut [f32], accumulate: bool, workspace: &mut Workspace) {
        blocked::<Avx2>(a, b, c, accumulate, workspace);
    }

    struct Avx2;

    impl Tile for Avx2 {
        const MR: usize = MR;
        const NR: usize = NR;
        type Acc = [[__m256; 2]; MR];

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn tile(depth: usize, mut a: *const f32, mut b: *const f32) -> Self::Acc {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for _ in 0..depth {
                // SAFETY: `depth` steps of MR floats of `a` and NR of `b` (the caller's contract).
                unsafe {
                    let b0 = _mm256_loadu_ps(b);
                    let b1 = _mm256_loadu_ps(b.add(8));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*a.add(r));
                        acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
                    }
                    a = a.add(MR);
                    b = b.add(NR);
                }
            }
            acc
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn store(acc: &Self::Acc, c: &mut [f32], n: usize, rows: usize, columns: usize, add: bool) {
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let out = &mut c[r * n..r * n + columns];
                if columns == NR {
                    for (i, &v) in acc.iter().enumerate() {
                        // SAFETY: `out` has NR = 2 x 8 floats.
                        unsafe {
                            let p = out.as_mut_ptr().add(8 * i);
                            let v = if add { _mm256_add_ps(v, _mm256_loadu_ps(p)) } else { v };
                            _mm256_storeu_ps(p, v);
                        }
                    }
                } else {
                    let mut values = [0.0f32; NR];
                    for (i, &v) in acc.iter().enumerate() {
                        // SAFETY: `values` has NR = 2 x 8 floats.
                        unsafe { _mm256_storeu_ps(values.as_mut_ptr().add(8 * i), v) };
                    }
                    for (out, &v) in out.iter_mut().zip(&values) {
                        *out = if add { *out + v } else { v };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    fn reference(a: Matrix, b: Matrix) -> Vec<f64> {
        let at = |m: &Matrix, i: usize, j: usize| f64::from(m.data[i * m.row_stride + j * m.col_stride]);
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols).map(|p| at(&a, i, p) * at(&b, p, j)).sum();
            }
        }
        out
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what} [{i}]: {g} vs {w}"
            );
        }
    }

    type Product = fn(Matrix, Matrix, &mut [f32], bool, &mut Workspace);

    /// The product this processor gets (`matmul`) and the portable tile, which wasm runs, whatever
    /// this processor has.
    fn products() -> [(&'static str, Product); 2] {
        [("matmul", matmul), ("portable", blocked::<Portable>)]
    }

    /// Every layout of both operands, shapes that leave partial tiles and cross every block edge
    /// (`KC`, `MC`, `NC`), set and accumulated.
    #[test]
    fn matmul_matches_the_definition_in_every_layout_and_remainder() {
        let mut workspace = Workspace::default();
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (4, 8, 8),
            (13, 33, 29),
            (MC + 5, KC + 3, 17),
            (9, 300, NC + 11),
            (6 * 3 + 1, 40, 16 * 3 + 5),
            (70, 600, 40),
        ] {
            let a_data = values(m * k, 1);
            let b_data = values(k * n, 2);
            for (a_transposed, b_transposed) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = if a_transposed {
                    Matrix::row_major(&a_data, k, m).transposed()
                } else {
                    Matrix::row_major(&a_data, m, k)
                };
                let b = if b_transposed {
                    Matrix::row_major(&b_data, n, k).transposed()
                } else {
                    Matrix::row_major(&b_data, k, n)
                };
                let want = reference(a, b);
                let start = values(m * n, 3);
                let accumulated: Vec<f64> = want.iter().zip(&start).map(|(w, &s)| w + f64::from(s)).collect();
                for (tile, product) in products() {
                    let what = format!("{tile}: {m}x{k}x{n} a^T {a_transposed} b^T {b_transposed}");
                    let mut c = vec![f32::NAN; m * n];
                    product(a, b, &mut c, false, &mut workspace);
                    assert_close(&c, &want, &what);
                    let mut c = start.clone();
                    product(a, b, &mut c, true, &mut workspace);
                    assert_close(&c, &accumulated, &format!("{what}, accumulated"));
                }
            }
        }
    }

    /// An empty inner dimension gives zeros (or leaves an accumulated `c` as it was).
    #[test]
    fn an_empty_inner_dimension_is_a_zero_product() {
        let mut workspace = Workspace::default();
        let (a, b) = (Matrix::row_major(&[], 2, 0), Matrix::row_major(&[], 0, 3));
        let mut c = vec![f32::NAN; 6];
        matmul(a, b, &mut c, false, &mut workspace);
        assert_eq!(c, [0.0; 6]);
        let mut c = vec![1.5; 6];
        matmul(a, b, &mut c, true, &mut workspace);
        assert_eq!(c, [1.5; 6]);
    }
}
