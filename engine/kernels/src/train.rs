//! Training kernels on Burn's CPU layout (NCHW f32), one `(image, channel)` plane at a time, for the
//! two operations whose backward Burn's CPU backend runs slowest on these networks: the depthwise
//! convolution (Burn's weight gradient runs one small convolution per channel, thousands per step)
//! and BatchNorm in training mode with the ReLU6 after it (about ten passes over the activation
//! forward and as many backward, each allocating). Here each is one or two passes per plane. The
//! caller splits the planes over threads; nothing here allocates.

use crate::simd::F32x4;

/// The geometry of a depthwise convolution on one plane (square kernel and stride, the same padding
/// before and after: `(kernel - 1) / 2`, or 0 when the input was padded beforehand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaneConv {
    /// `[height, width]` of the input plane.
    pub input: [usize; 2],
    /// `[height, width]` of the output plane.
    pub output: [usize; 2],
    pub kernel: usize,
    pub stride: usize,
    /// `[rows, columns]` of zeros on each side.
    pub padding: [usize; 2],
}

impl PlaneConv {
    /// The geometry of a `kernel` x `kernel` convolution of an `input` plane.
    pub fn new(input: [usize; 2], kernel: usize, stride: usize, padding: [usize; 2]) -> Self {
        let out = |size: usize, pad: usize| (size + 2 * pad - kernel) / stride + 1;
        Self {
            input,
            output: [out(input[0], padding[0]), out(input[1], padding[1])],
            kernel,
            stride,
            padding,
        }
    }

    /// Elements of an input plane.
    pub fn input_len(&self) -> usize {
        self.input[0] * self.input[1]
    }

    /// Elements of an output plane.
    pub fn output_len(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// The output columns `ow` whose input column `ow * stride + tap - padding` lies inside the
    /// plane, for the kernel column `tap`.
    fn valid_columns(&self, tap: usize) -> core::ops::Range<usize> {
        let [pad, width, stride] = [self.padding[1], self.input[1], self.stride];
        let low = pad.saturating_sub(tap).div_ceil(stride);
        // ow * stride + tap < width + pad
        let high = (width + pad).saturating_sub(tap).div_ceil(stride).min(self.output[1]);
        low..high.max(low)
    }
}

/// The gradients of a depthwise convolution on one plane: adds `d loss / d input` into `dx` (when
/// given; an input plane) and `d loss / d weight` into `dw` (when given; `kernel * kernel`), from the
/// input plane `x`, the channel's weights `w` (`kernel * kernel`, row-major) and the output's
/// gradient `dy` (an output plane).
pub fn depthwise_backward_plane(
    geometry: &PlaneConv,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    mut dw: Option<&mut [f32]>,
) {
    let PlaneConv {
        input: [height, width],
        output: [out_height, out_width],
        kernel,
        stride,
        padding: [pad_rows, pad_cols],
    } = *geometry;
    assert_eq!(x.len(), height * width, "input plane");
    assert_eq!(dy.len(), out_height * out_width, "output gradient plane");
    assert_eq!(w.len(), kernel * kernel, "weights");
    for tap_row in 0..kernel {
        for tap_col in 0..kernel {
            let tap = tap_row * kernel + tap_col;
            let weight = w[tap];
            let columns = geometry.valid_columns(tap_col);
            if columns.is_empty() {
                continue;
            }
            let mut sum = Sum::default();
            for oh in 0..out_height {
                let Some(ih) = (oh * stride + tap_row).checked_sub(pad_rows).filter(|&ih| ih < height) else {
                    continue;
                };
                let dy_row = &dy[oh * out_width..][columns.clone()];
                // The input column of the first valid output column.
                let first = columns.start * stride + tap_col - pad_cols;
                let row = ih * width;
                if dw.is_some() {
                    let x_row = &x[row + first..][..(dy_row.len() - 1) * stride + 1];
                    sum.add_dot(dy_row, x_row, stride);
                }
                if let Some(dx) = dx.as_deref_mut() {
                    if stride == 1 {
                        for (d, &g) in dx[row + first..][..dy_row.len()].iter_mut().zip(dy_row) {
                            *d += g * weight;
                        }
                    } else {
                        for (i, &g) in dy_row.iter().enumerate() {
                            dx[row + first + i * stride] += g * weight;
                        }
                    }
                }
            }
            if let Some(dw) = dw.as_deref_mut() {
                dw[tap] += sum.total() as f32;
            }
        }
    }
}

/// A dot product built up row by row: eight lanes (independent sums, so that no add waits on the one
/// before) and a scalar for the rows' remainders, all in f32, added up in f64 once at the end (per
/// tap: reducing after every row cost more than the products on short rows).
struct Sum {
    lanes: [F32x4; 2],
    tail: f32,
}

impl Default for Sum {
    fn default() -> Self {
        Self {
            lanes: [F32x4::splat(0.0); 2],
            tail: 0.0,
        }
    }
}

impl Sum {
    /// Adds `sum(a[i] * b[i * stride])`.
    #[inline(always)]
    fn add_dot(&mut self, a: &[f32], b: &[f32], stride: usize) {
        assert!(
            a.is_empty() || b.len() > (a.len() - 1) * stride,
            "strided operand too short"
        );
        let whole = a.len() / 8 * 8;
        if stride == 1 {
            for i in (0..whole).step_by(8) {
                for h in 0..2 {
                    // SAFETY: `i + 4 * h + 4 <= whole <= a.len() <= b.len()`.
                    unsafe {
                        let (av, bv) = (
                            F32x4::load(a.as_ptr().add(i + 4 * h)),
                            F32x4::load(b.as_ptr().add(i + 4 * h)),
                        );
                        self.lanes[h] = self.lanes[h].mul_add(av, bv);
                    }
                }
            }
        } else {
            let mut lanes = [0.0f32; 8];
            for (c, a) in a[..whole].chunks_exact(8).enumerate() {
                let b = &b[c * 8 * stride..][..7 * stride + 1];
                for lane in 0..8 {
                    lanes[lane] += a[lane] * b[lane * stride];
                }
            }
            // SAFETY: `lanes` has eight floats.
            unsafe {
                self.lanes[0] = self.lanes[0].add(F32x4::load(lanes.as_ptr()));
                self.lanes[1] = self.lanes[1].add(F32x4::load(lanes.as_ptr().add(4)));
            }
        }
        for (i, &x) in a.iter().enumerate().skip(whole) {
            self.tail += x * b[i * stride];
        }
    }

    fn total(&self) -> f64 {
        self.lanes.iter().flat_map(|v| v.to_array()).map(f64::from).sum::<f64>() + f64::from(self.tail)
    }
}

/// `(sum(x), sum(x * x))` of a plane, the partial sums in f32 over at most 1024 elements.
pub fn plane_moments(x: &[f32]) -> (f64, f64) {
    let (mut sum, mut squares) = (0.0f64, 0.0f64);
    for block in x.chunks(1024) {
        let mut s = [0.0f32; 8];
        let mut q = [0.0f32; 8];
        let chunks = block.chunks_exact(8);
        for &v in chunks.remainder() {
            sum += v as f64;
            squares += (v * v) as f64;
        }
        for c in chunks {
            for lane in 0..8 {
                s[lane] += c[lane];
                q[lane] += c[lane] * c[lane];
            }
        }
        sum += s.iter().map(|&v| v as f64).sum::<f64>();
        squares += q.iter().map(|&v| v as f64).sum::<f64>();
    }
    (sum, squares)
}

/// `y = x * scale + shift`, clamped to `[0, 6]` when `relu6` (a normalised plane of one channel).
pub fn scale_shift_plane(x: &[f32], scale: f32, shift: f32, relu6: bool, y: &mut [f32]) {
    if relu6 {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = (x * scale + shift).clamp(0.0, 6.0);
        }
    } else {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * scale + shift;
        }
    }
}

/// The gradient that reaches the BatchNorm's output: `dy`, or with ReLU6 after it, `dy` where the
/// pre-activation `x * scale + shift` is inside `(0, 6)` and 0 elsewhere. One element: the planes'
/// remainders after the four-lane loops ([`F32x4::where_inside`] there; an `if` per lane left to LLVM
/// became a branch per lane).
#[inline(always)]
fn masked<const RELU6: bool>(x: f32, dy: f32, scale: f32, shift: f32) -> f32 {
    let pre = x * scale + shift;
    if !RELU6 || (pre > 0.0 && pre < 6.0) { dy } else { 0.0 }
}

/// `(sum(g), sum(g * x))` over a plane, where `g` is the gradient reaching the BatchNorm's output
/// (see [`scale_shift_plane`] for `scale`, `shift` and `relu6`): what the backward pass needs of
/// each channel before it can write the input's gradient.
pub fn batch_norm_backward_sums(x: &[f32], dy: &[f32], scale: f32, shift: f32, relu6: bool) -> (f64, f64) {
    if relu6 {
        backward_sums::<true>(x, dy, scale, shift)
    } else {
        backward_sums::<false>(x, dy, scale, shift)
    }
}

fn backward_sums<const RELU6: bool>(x: &[f32], dy: &[f32], scale: f32, shift: f32) -> (f64, f64) {
    let [scale_v, shift_v, zero, six] = [scale, shift, 0.0, 6.0].map(F32x4::splat);
    let (mut sum, mut weighted) = (0.0f64, 0.0f64);
    for (xb, gb) in x.chunks(1024).zip(dy.chunks(1024)) {
        let len = xb.len().min(gb.len());
        let whole = len / 8 * 8;
        let mut s = [zero; 2];
        let mut w = [zero; 2];
        for i in (0..whole).step_by(8) {
            for h in 0..2 {
                // SAFETY: `i + 4 * h + 4 <= whole`, within both blocks.
                let (xv, gv) = unsafe {
                    (
                        F32x4::load(xb.as_ptr().add(i + 4 * h)),
                        F32x4::load(gb.as_ptr().add(i + 4 * h)),
                    )
                };
                let g = if RELU6 {
                    gv.where_inside(shift_v.mul_add(xv, scale_v), zero, six)
                } else {
                    gv
                };
                s[h] = s[h].add(g);
                w[h] = w[h].mul_add(g, xv);
            }
        }
        for (&x, &g) in xb[whole..len].iter().zip(&gb[whole..len]) {
            let g = masked::<RELU6>(x, g, scale, shift);
            sum += g as f64;
            weighted += (g * x) as f64;
        }
        let lanes = |v: [F32x4; 2]| v.iter().flat_map(|v| v.to_array()).map(f64::from).sum::<f64>();
        sum += lanes(s);
        weighted += lanes(w);
    }
    (sum, weighted)
}

/// The input's gradient on one plane: `dx = a * g + b * x + c`, `g` the masked output gradient (as
/// in [`batch_norm_backward_sums`]) and `[a, b, c]` the channel's coefficients, which fold the batch
/// statistics' own gradients into one affine map.
pub fn batch_norm_backward_plane(
    x: &[f32],
    dy: &[f32],
    scale: f32,
    shift: f32,
    relu6: bool,
    [a, b, c]: [f32; 3],
    dx: &mut [f32],
) {
    if relu6 {
        backward_plane::<true>(x, dy, scale, shift, [a, b, c], dx);
    } else {
        backward_plane::<false>(x, dy, scale, shift, [a, b, c], dx);
    }
}

fn backward_plane<const RELU6: bool>(
    x: &[f32],
    dy: &[f32],
    scale: f32,
    shift: f32,
    [a, b, c]: [f32; 3],
    dx: &mut [f32],
) {
    let len = dx.len().min(x.len()).min(dy.len());
    let whole = len / 4 * 4;
    let [scale_v, shift_v, zero, six] = [scale, shift, 0.0, 6.0].map(F32x4::splat);
    let [a_v, b_v, c_v] = [a, b, c].map(F32x4::splat);
    for i in (0..whole).step_by(4) {
        // SAFETY: `i + 4 <= whole`, within all three planes.
        unsafe {
            let (xv, gv) = (F32x4::load(x.as_ptr().add(i)), F32x4::load(dy.as_ptr().add(i)));
            let g = if RELU6 {
                gv.where_inside(shift_v.mul_add(xv, scale_v), zero, six)
            } else {
                gv
            };
            c_v.mul_add(a_v, g).mul_add(b_v, xv).store(dx.as_mut_ptr().add(i));
        }
    }
    for ((d, &x), &g) in dx[whole..len].iter_mut().zip(&x[whole..len]).zip(&dy[whole..len]) {
        *d = c + a * masked::<RELU6>(x, g, scale, shift) + b * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    /// The depthwise convolution of one plane by its definition.
    fn forward(g: &PlaneConv, x: &[f32], w: &[f32]) -> Vec<f32> {
        let [h, wd] = g.input;
        let [ho, wo] = g.output;
        let mut y = vec![0.0; ho * wo];
        for oh in 0..ho {
            for ow in 0..wo {
                for i in 0..g.kernel {
                    for j in 0..g.kernel {
                        let ih = (oh * g.stride + i) as isize - g.padding[0] as isize;
                        let iw = (ow * g.stride + j) as isize - g.padding[1] as isize;
                        if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < wd {
                            y[oh * wo + ow] += x[ih as usize * wd + iw as usize] * w[i * g.kernel + j];
                        }
                    }
                }
            }
        }
        y
    }

    /// `loss = sum(forward * r)`: its gradient by central differences agrees with the kernel's.
    #[test]
    fn depthwise_gradients_match_finite_differences() {
        for (input, kernel, stride, padding) in [
            ([7, 9], 3, 1, [1, 1]),
            ([8, 8], 3, 2, [1, 1]),
            ([9, 7], 5, 2, [2, 2]),
            ([6, 6], 5, 1, [2, 2]),
            ([7, 8], 3, 2, [0, 0]),
            // Rows of more than eight output columns, at both strides.
            ([20, 35], 3, 2, [1, 1]),
            ([5, 21], 3, 1, [1, 1]),
        ] {
            let g = PlaneConv::new(input, kernel, stride, padding);
            let x = values(g.input_len(), 1);
            let w = values(kernel * kernel, 2);
            let r = values(g.output_len(), 3);
            let loss =
                |x: &[f32], w: &[f32]| -> f64 { forward(&g, x, w).iter().zip(&r).map(|(a, b)| (a * b) as f64).sum() };
            let mut dx = vec![0.0; x.len()];
            let mut dw = vec![0.0; w.len()];
            depthwise_backward_plane(&g, &x, &w, &r, Some(&mut dx), Some(&mut dw));
            let eps = 1e-2;
            for i in 0..x.len() {
                let (mut up, mut down) = (x.clone(), x.clone());
                up[i] += eps;
                down[i] -= eps;
                let numeric = (loss(&up, &w) - loss(&down, &w)) / (2.0 * eps as f64);
                assert!(
                    (numeric - dx[i] as f64).abs() < 1e-3,
                    "{g:?} dx[{i}]: {numeric} vs {}",
                    dx[i]
                );
            }
            for i in 0..w.len() {
                let (mut up, mut down) = (w.clone(), w.clone());
                up[i] += eps;
                down[i] -= eps;
                let numeric = (loss(&x, &up) - loss(&x, &down)) / (2.0 * eps as f64);
                assert!(
                    (numeric - dw[i] as f64).abs() < 1e-3,
                    "{g:?} dw[{i}]: {numeric} vs {}",
                    dw[i]
                );
            }
        }
    }

    #[test]
    fn valid_columns_stay_inside_the_plane() {
        let g = PlaneConv::new([5, 5], 3, 2, [1, 1]);
        assert_eq!(g.output, [3, 3]);
        assert_eq!(g.valid_columns(0), 1..3);
        assert_eq!(g.valid_columns(1), 0..3);
        assert_eq!(g.valid_columns(2), 0..2);
    }

    #[test]
    fn moments_are_sums_of_values_and_squares() {
        let x = values(3001, 7);
        let (s, q) = plane_moments(&x);
        let s0: f64 = x.iter().map(|&v| v as f64).sum();
        let q0: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
        assert!((s - s0).abs() < 1e-3 && (q - q0).abs() < 1e-3, "{s} {s0} {q} {q0}");
    }

    #[test]
    fn relu6_blocks_the_gradient_outside_its_linear_range() {
        // pre-activations -1, 3, 7: only the middle one passes.
        let x = [-1.0, 3.0, 7.0];
        let dy = [1.0, 2.0, 4.0];
        assert_eq!(batch_norm_backward_sums(&x, &dy, 1.0, 0.0, true), (2.0, 6.0));
        assert_eq!(batch_norm_backward_sums(&x, &dy, 1.0, 0.0, false), (7.0, 33.0));
        let mut dx = [0.0; 3];
        batch_norm_backward_plane(&x, &dy, 1.0, 0.0, true, [1.0, 0.0, 0.5], &mut dx);
        assert_eq!(dx, [0.5, 2.5, 0.5]);

        // The same, repeated over a plane long enough for the vector loops (and a tail), with the
        // edges 0 and 6 themselves blocked.
        let x: Vec<f32> = [-1.0, 3.0, 7.0, 0.0, 6.0].repeat(7);
        let dy: Vec<f32> = [1.0, 2.0, 4.0, 8.0, 16.0].repeat(7);
        assert_eq!(batch_norm_backward_sums(&x, &dy, 1.0, 0.0, true), (14.0, 42.0));
        let mut dx = vec![0.0; x.len()];
        batch_norm_backward_plane(&x, &dy, 1.0, 0.0, true, [1.0, 0.0, 0.5], &mut dx);
        assert_eq!(dx, [0.5, 2.5, 0.5, 0.5, 0.5].repeat(7));
    }
}
