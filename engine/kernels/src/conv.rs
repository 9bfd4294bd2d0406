//! Spatial convolutions in NHWC: depthwise (one `k x k` filter per channel, vectorised across
//! channels, which NHWC keeps contiguous) and dense (any `k x k` convolution, as an im2col into a
//! scratch buffer followed by the packed matrix product; used for the stem, whose 3 input channels
//! leave nothing to vectorise directly).

use crate::gemm::{Activation, PackedWeights, pointwise};
use crate::simd::F32x4;

/// The geometry of a convolution over one image: input size, square kernel, stride, the padding
/// before the first row and column, and the output size. Padding after the last row and column is
/// whatever the output size implies (TensorFlow's "SAME" puts an extra one there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// `[height, width]` of the input.
    pub input: [usize; 2],
    pub kernel: usize,
    pub stride: usize,
    /// `[top, left]` zero padding.
    pub padding: [usize; 2],
    /// `[height, width]` of the output.
    pub output: [usize; 2],
}

impl Geometry {
    /// The geometry for `before = [top, left]` and `after = [bottom, right]` zero padding.
    pub fn new(input: [usize; 2], kernel: usize, stride: usize, before: [usize; 2], after: [usize; 2]) -> Self {
        let out = |axis: usize| (input[axis] + before[axis] + after[axis]).saturating_sub(kernel) / stride + 1;
        Self {
            input,
            kernel,
            stride,
            padding: before,
            output: [out(0), out(1)],
        }
    }

    /// The kernel taps `lo..hi` along one axis that land inside the input for output index `o`.
    #[inline(always)]
    fn taps(&self, o: usize, axis: usize) -> (usize, usize, isize) {
        let origin = (o * self.stride) as isize - self.padding[axis] as isize;
        let lo = (-origin).max(0) as usize;
        let hi = (self.input[axis] as isize - origin).clamp(0, self.kernel as isize) as usize;
        (lo, hi.max(lo), origin)
    }
}

/// A depthwise convolution's weights: `[k * k, channels]` (tap-major, channels contiguous) and the bias.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseWeights {
    kernel: usize,
    channels: usize,
    taps: Vec<f32>,
    bias: Vec<f32>,
}

impl DepthwiseWeights {
    /// From weights laid out `[channels, 1, k, k]` (PyTorch's and Burn's grouped layout).
    ///
    /// # Panics
    /// When the lengths do not match (a bug in the caller).
    pub fn from_channel_major(weights: &[f32], bias: Option<&[f32]>, channels: usize, kernel: usize) -> Self {
        let taps_per_channel = kernel * kernel;
        assert_eq!(
            weights.len(),
            channels * taps_per_channel,
            "weights are not [{channels}, 1, {kernel}, {kernel}]"
        );
        let mut taps = vec![0.0; weights.len()];
        for c in 0..channels {
            for t in 0..taps_per_channel {
                taps[t * channels + c] = weights[c * taps_per_channel + t];
            }
        }
        let bias = match bias {
            Some(bias) => {
                assert_eq!(bias.len(), channels, "bias is not [{channels}]");
                bias.to_vec()
            }
            None => vec![0.0; channels],
        };
        Self {
            kernel,
            channels,
            taps,
            bias,
        }
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn kernel(&self) -> usize {
        self.kernel
    }
}

/// Channels per inner block of the border path: four vectors of four, accumulated side by side.
const BLOCK: usize = 16;
/// Output pixels along a row per step of the interior path.
const PIXELS: usize = 4;

/// `out = act(depthwise(input) + bias)` for one image: `input` is `[height, width, channels]`, `out`
/// `[out_height, out_width, channels]`.
///
/// Pixels whose whole window lies inside the input take the interior path (for the kernel sizes and
/// strides of the zoo: 3x3 and 5x5, strides 1 and 2): four output pixels by eight channels at a time,
/// each weight vector loaded once for the four pixels, the loops unrolled for the kernel size. The
/// border pixels clip their window tap by tap.
///
/// # Panics
/// When the slices or the geometry do not match the weights (a bug in the caller).
pub fn depthwise(
    input: &[f32],
    weights: &DepthwiseWeights,
    geometry: &Geometry,
    activation: Activation,
    out: &mut [f32],
) {
    let c = weights.channels;
    let [h, w] = geometry.input;
    let [oh, ow] = geometry.output;
    assert_eq!(geometry.kernel, weights.kernel, "kernel size");
    assert!(input.len() >= h * w * c, "input is shorter than [{h}, {w}, {c}]");
    assert!(out.len() >= oh * ow * c, "output is shorter than [{oh}, {ow}, {c}]");
    let run = Depthwise {
        input,
        weights,
        geometry,
        bounds: activation.bounds(),
    };
    match (weights.kernel, geometry.stride) {
        (3, 1) => run.image::<3, 1>(out),
        (3, 2) => run.image::<3, 2>(out),
        (5, 1) => run.image::<5, 1>(out),
        (5, 2) => run.image::<5, 2>(out),
        _ => {
            for oy in 0..oh {
                for ox in 0..ow {
                    run.pixel(oy, ox, 0, out);
                }
            }
        }
    }
}

/// One depthwise convolution over one image (see [`depthwise`]).
struct Depthwise<'a> {
    input: &'a [f32],
    weights: &'a DepthwiseWeights,
    geometry: &'a Geometry,
    bounds: (f32, f32),
}

impl Depthwise<'_> {
    /// Output indices `lo..hi` along `axis` whose window lies wholly inside the input.
    fn interior(&self, axis: usize) -> (usize, usize) {
        let g = self.geometry;
        let (pad, size, out) = (g.padding[axis], g.input[axis], g.output[axis]);
        let lo = pad.div_ceil(g.stride).min(out);
        let hi = if size + pad >= g.kernel {
            ((size + pad - g.kernel) / g.stride + 1).min(out)
        } else {
            0
        };
        (lo, hi.max(lo))
    }

    fn image<const K: usize, const S: usize>(&self, out: &mut [f32]) {
        let [oh, ow] = self.geometry.output;
        let (y_lo, y_hi) = self.interior(0);
        let (x_lo, x_hi) = self.interior(1);
        let vector_channels = self.weights.channels / 8 * 8;
        for oy in 0..oh {
            if oy < y_lo || oy >= y_hi {
                for ox in 0..ow {
                    self.pixel(oy, ox, 0, out);
                }
                continue;
            }
            for ox in (0..x_lo).chain(x_hi..ow) {
                self.pixel(oy, ox, 0, out);
            }
            let mut ox = x_lo;
            while ox + PIXELS <= x_hi {
                self.interior_pixels::<K, S>(oy, ox, out);
                for j in 0..PIXELS {
                    self.pixel(oy, ox + j, vector_channels, out);
                }
                ox += PIXELS;
            }
            for ox in ox..x_hi {
                self.pixel(oy, ox, 0, out);
            }
        }
    }

    /// Output pixels `(oy, ox .. ox + PIXELS)`, channels `0 .. channels / 8 * 8`, all inside the input.
    #[inline(always)]
    fn interior_pixels<const K: usize, const S: usize>(&self, oy: usize, ox: usize, out: &mut [f32]) {
        let g = self.geometry;
        let c = self.weights.channels;
        let w = g.input[1];
        let (lo, hi) = (F32x4::splat(self.bounds.0), F32x4::splat(self.bounds.1));
        // The window's top-left input pixel for the first output pixel.
        let top = oy * S - g.padding[0];
        let left = ox * S - g.padding[1];
        debug_assert!(top + K <= g.input[0] && left + (PIXELS - 1) * S + K <= w);
        let mut c0 = 0;
        while c0 + 8 <= c {
            // SAFETY: rows `top .. top + K` and columns `left .. left + (PIXELS - 1) * S + K` are inside
            // the input (`interior`), channels `c0 .. c0 + 8` inside `c`; `depthwise` checked the slices.
            unsafe {
                let b = self.weights.bias.as_ptr().add(c0);
                let bias = [F32x4::load(b), F32x4::load(b.add(4))];
                let mut acc = [bias; PIXELS];
                for ky in 0..K {
                    let row = self.input.as_ptr().add(((top + ky) * w + left) * c + c0);
                    let taps = self.weights.taps.as_ptr().add(ky * K * c + c0);
                    for kx in 0..K {
                        let t = taps.add(kx * c);
                        let (w0, w1) = (F32x4::load(t), F32x4::load(t.add(4)));
                        for (j, acc) in acc.iter_mut().enumerate() {
                            let x = row.add((j * S + kx) * c);
                            acc[0] = acc[0].mul_add(F32x4::load(x), w0);
                            acc[1] = acc[1].mul_add(F32x4::load(x.add(4)), w1);
                        }
                    }
                }
                let o = out.as_mut_ptr().add((oy * g.output[1] + ox) * c + c0);
                for (j, acc) in acc.iter().enumerate() {
                    acc[0].clamp(lo, hi).store(o.add(j * c));
                    acc[1].clamp(lo, hi).store(o.add(j * c + 4));
                }
            }
            c0 += 8;
        }
    }

    /// Output pixel `(oy, ox)`, channels `from..`, its window clipped to the input.
    fn pixel(&self, oy: usize, ox: usize, from: usize, out: &mut [f32]) {
        let g = self.geometry;
        let weights = self.weights;
        let (c, k, w) = (weights.channels, weights.kernel, g.input[1]);
        let (lo, hi) = self.bounds;
        let (vlo, vhi) = (F32x4::splat(lo), F32x4::splat(hi));
        let (ky0, ky1, iy) = g.taps(oy, 0);
        let (kx0, kx1, ix) = g.taps(ox, 1);
        let out_base = (oy * g.output[1] + ox) * c;
        // The input pixel under tap (ky, kx) starts at `at(ky, kx)`.
        let at = |ky: usize, kx: usize| ((iy + ky as isize) as usize * w + (ix + kx as isize) as usize) * c;
        let input = self.input;
        let mut c0 = from;
        while c0 + BLOCK <= c {
            // SAFETY: taps are within the input (`Geometry::taps`), channels `c0 .. c0 + BLOCK` within
            // `c`, and `depthwise` checked the slices.
            unsafe {
                let b = weights.bias.as_ptr().add(c0);
                let mut acc = [
                    F32x4::load(b),
                    F32x4::load(b.add(4)),
                    F32x4::load(b.add(8)),
                    F32x4::load(b.add(12)),
                ];
                for ky in ky0..ky1 {
                    for kx in kx0..kx1 {
                        let x = input.as_ptr().add(at(ky, kx) + c0);
                        let t = weights.taps.as_ptr().add((ky * k + kx) * c + c0);
                        for (v, acc) in acc.iter_mut().enumerate() {
                            *acc = acc.mul_add(F32x4::load(x.add(4 * v)), F32x4::load(t.add(4 * v)));
                        }
                    }
                }
                let o = out.as_mut_ptr().add(out_base + c0);
                for (v, acc) in acc.iter().enumerate() {
                    acc.clamp(vlo, vhi).store(o.add(4 * v));
                }
            }
            c0 += BLOCK;
        }
        while c0 + 4 <= c {
            // SAFETY: as above, for channels `c0 .. c0 + 4`.
            unsafe {
                let mut acc = F32x4::load(weights.bias.as_ptr().add(c0));
                for ky in ky0..ky1 {
                    for kx in kx0..kx1 {
                        let x = input.as_ptr().add(at(ky, kx) + c0);
                        let t = weights.taps.as_ptr().add((ky * k + kx) * c + c0);
                        acc = acc.mul_add(F32x4::load(x), F32x4::load(t));
                    }
                }
                acc.clamp(vlo, vhi).store(out.as_mut_ptr().add(out_base + c0));
            }
            c0 += 4;
        }
        for channel in c0..c {
            let mut acc = weights.bias[channel];
            for ky in ky0..ky1 {
                for kx in kx0..kx1 {
                    acc += input[at(ky, kx) + channel] * weights.taps[(ky * k + kx) * c + channel];
                }
            }
            out[out_base + channel] = acc.max(lo).min(hi);
        }
    }
}

/// A dense `k x k` convolution's weights, packed for the matrix product over im2col rows ordered
/// (ky, kx, input channel).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseWeights {
    kernel: usize,
    input_channels: usize,
    packed: PackedWeights,
}

impl DenseWeights {
    /// From weights laid out `[out, in, k, k]` (PyTorch's and Burn's layout).
    ///
    /// # Panics
    /// When the lengths do not match (a bug in the caller).
    pub fn from_output_major(
        weights: &[f32],
        bias: Option<&[f32]>,
        output_channels: usize,
        input_channels: usize,
        kernel: usize,
    ) -> Self {
        let taps = kernel * kernel;
        assert_eq!(
            weights.len(),
            output_channels * input_channels * taps,
            "weights are not [{output_channels}, {input_channels}, {kernel}, {kernel}]"
        );
        let depth = taps * input_channels;
        let mut reordered = vec![0.0; weights.len()];
        for o in 0..output_channels {
            for i in 0..input_channels {
                for t in 0..taps {
                    reordered[o * depth + t * input_channels + i] = weights[(o * input_channels + i) * taps + t];
                }
            }
        }
        Self {
            kernel,
            input_channels,
            packed: PackedWeights::from_output_major(&reordered, bias, output_channels, depth),
        }
    }

    pub fn output_channels(&self) -> usize {
        self.packed.n()
    }

    /// Floats of scratch space [`dense`] needs for this geometry.
    pub fn scratch_len(&self, geometry: &Geometry) -> usize {
        geometry.output[0] * geometry.output[1] * self.packed.k()
    }
}

/// `out = act(conv(input) + bias)` for one image: `input` is `[height, width, in]`, `out`
/// `[out_height, out_width, out]`; `scratch` holds the im2col rows (grown to
/// [`DenseWeights::scratch_len`] if shorter; reuse it from call to call).
///
/// # Panics
/// When the slices or the geometry do not match the weights (a bug in the caller).
pub fn dense(
    input: &[f32],
    weights: &DenseWeights,
    geometry: &Geometry,
    activation: Activation,
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    let ci = weights.input_channels;
    let [h, w] = geometry.input;
    let [oh, ow] = geometry.output;
    assert_eq!(geometry.kernel, weights.kernel, "kernel size");
    assert!(input.len() >= h * w * ci, "input is shorter than [{h}, {w}, {ci}]");
    let depth = weights.packed.k();
    // The scratch only grows: a row is written whole, its padding taps zeroed where it has any.
    if scratch.len() < oh * ow * depth {
        scratch.resize(oh * ow * depth, 0.0);
    }
    let k = weights.kernel;
    for oy in 0..oh {
        let (ky0, ky1, iy) = geometry.taps(oy, 0);
        for ox in 0..ow {
            let (kx0, kx1, ix) = geometry.taps(ox, 1);
            let row = &mut scratch[(oy * ow + ox) * depth..][..depth];
            if ky1 - ky0 < k || kx1 - kx0 < k {
                row.fill(0.0);
            }
            for ky in ky0..ky1 {
                let y = (iy + ky as isize) as usize;
                let x0 = (ix + kx0 as isize) as usize;
                let src = &input[(y * w + x0) * ci..][..(kx1 - kx0) * ci];
                row[(ky * k + kx0) * ci..][..src.len()].copy_from_slice(src);
            }
        }
    }
    pointwise(scratch, oh * ow, &weights.packed, activation, None, out);
}

/// The mean over pixels of `[pixels, channels]` into `out[channels]` (global average pooling).
pub fn mean_pool(input: &[f32], pixels: usize, channels: usize, out: &mut [f32]) {
    assert!(input.len() >= pixels * channels && out.len() >= channels);
    let mut sums = vec![0.0f32; channels];
    for pixel in input[..pixels * channels].chunks_exact(channels) {
        for (sum, &x) in sums.iter_mut().zip(pixel) {
            *sum += x;
        }
    }
    let scale = 1.0 / pixels as f32;
    for (out, sum) in out.iter_mut().zip(sums) {
        *out = sum * scale;
    }
}

/// Adds each channel's sum and sum of squares over `[pixels, channels]` into `sums` and `squares`
/// (in f64: a layer's statistics add up over hundreds of thousands of pixels).
pub fn channel_sums(input: &[f32], channels: usize, sums: &mut [f64], squares: &mut [f64]) {
    assert!(sums.len() >= channels && squares.len() >= channels);
    for pixel in input.chunks_exact(channels) {
        for ((sum, square), &x) in sums.iter_mut().zip(squares.iter_mut()).zip(pixel) {
            let x = f64::from(x);
            *sum += x;
            *square += x * x;
        }
    }
}

/// `x = act(x * scale + shift) (+ residual)` per channel over `[pixels, channels]`, in place: a
/// BatchNorm in inference mode with what follows it.
pub fn scale_shift(x: &mut [f32], scale: &[f32], shift: &[f32], activation: Activation, residual: Option<&[f32]>) {
    let channels = scale.len();
    assert_eq!(shift.len(), channels);
    let (lo, hi) = activation.bounds();
    for (p, pixel) in x.chunks_exact_mut(channels).enumerate() {
        for (c, value) in pixel.iter_mut().enumerate() {
            let y = (*value * scale[c] + shift[c]).max(lo).min(hi);
            *value = y + residual.map_or(0.0, |r| r[p * channels + c]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    /// A direct NCHW-free reference: grouped convolution by definition, in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        input: &[f32],
        [h, w]: [usize; 2],
        ci: usize,
        weights: &[f32], // [co, ci / groups, k, k]
        bias: &[f32],
        co: usize,
        groups: usize,
        g: &Geometry,
        act: Activation,
    ) -> Vec<f32> {
        let (lo, hi) = act.bounds();
        let k = g.kernel;
        let per_group_in = ci / groups;
        let per_group_out = co / groups;
        let [oh, ow] = g.output;
        let mut out = vec![0.0; oh * ow * co];
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..co {
                    let group = o / per_group_out;
                    let mut sum = f64::from(bias[o]);
                    for i in 0..per_group_in {
                        let channel = group * per_group_in + i;
                        for ky in 0..k {
                            for kx in 0..k {
                                let y = (oy * g.stride + ky) as isize - g.padding[0] as isize;
                                let x = (ox * g.stride + kx) as isize - g.padding[1] as isize;
                                if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                                    continue;
                                }
                                let v = input[(y as usize * w + x as usize) * ci + channel];
                                sum += f64::from(v) * f64::from(weights[((o * per_group_in + i) * k + ky) * k + kx]);
                            }
                        }
                    }
                    out[(oy * ow + ox) * co + o] = (sum as f32).clamp(lo, hi);
                }
            }
        }
        out
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what} [{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn geometry_follows_symmetric_and_tensorflow_same_padding() {
        assert_eq!(Geometry::new([224, 224], 3, 2, [1, 1], [1, 1]).output, [112, 112]);
        assert_eq!(Geometry::new([224, 224], 3, 2, [0, 0], [1, 1]).output, [112, 112]);
        assert_eq!(Geometry::new([56, 56], 5, 2, [1, 1], [2, 2]).output, [28, 28]);
        assert_eq!(Geometry::new([7, 7], 3, 1, [1, 1], [1, 1]).output, [7, 7]);
    }

    #[test]
    fn depthwise_matches_the_definition() {
        // Channels that exercise the 16-wide blocks, the 4-wide vectors and the scalar tail; kernels
        // 3 and 5, strides 1 and 2, symmetric and bottom/right-heavy padding, tiny inputs.
        for (size, c, k, stride, before, after) in [
            ([12, 19], 24, 3, 1, 1, 1),
            ([9, 30], 13, 3, 1, 1, 1),
            ([14, 17], 12, 3, 2, 0, 1),
            ([16, 23], 44, 5, 2, 1, 2),
            ([11, 20], 8, 5, 1, 2, 2),
            ([13, 13], 20, 3, 2, 1, 1),
            ([7, 9], 16, 3, 1, 1, 1),
            ([8, 8], 21, 3, 2, 0, 1),
            ([9, 6], 40, 5, 2, 1, 2),
            ([5, 5], 36, 5, 1, 2, 2),
            ([1, 1], 8, 5, 2, 2, 2),
            ([2, 3], 3, 3, 2, 1, 1),
        ] {
            let g = Geometry::new(size, k, stride, [before; 2], [after; 2]);
            let input = values(size[0] * size[1] * c, 1);
            let w = values(c * k * k, 2);
            let bias = values(c, 3);
            for act in [Activation::None, Activation::Relu6] {
                let weights = DepthwiseWeights::from_channel_major(&w, Some(&bias), c, k);
                let mut out = vec![f32::NAN; g.output[0] * g.output[1] * c];
                depthwise(&input, &weights, &g, act, &mut out);
                let want = reference(&input, size, c, &w, &bias, c, c, &g, act);
                close(&out, &want, &format!("depthwise {size:?} c{c} k{k} s{stride} {act:?}"));
            }
        }
    }

    #[test]
    fn dense_matches_the_definition() {
        for (size, ci, co, k, stride, before, after) in [
            ([9, 10], 3, 32, 3, 2, 0, 1),
            ([8, 8], 3, 16, 3, 2, 1, 1),
            ([5, 7], 4, 9, 3, 1, 1, 1),
            ([6, 6], 2, 8, 1, 1, 0, 0),
        ] {
            let g = Geometry::new(size, k, stride, [before; 2], [after; 2]);
            let input = values(size[0] * size[1] * ci, 4);
            let w = values(co * ci * k * k, 5);
            let bias = values(co, 6);
            let weights = DenseWeights::from_output_major(&w, Some(&bias), co, ci, k);
            let mut out = vec![f32::NAN; g.output[0] * g.output[1] * co];
            // A scratch left dirty by a larger call must not leak into the padding.
            let mut scratch = vec![f32::NAN; weights.scratch_len(&g) + 7];
            dense(&input, &weights, &g, Activation::Relu6, &mut scratch, &mut out);
            let want = reference(&input, size, ci, &w, &bias, co, 1, &g, Activation::Relu6);
            close(&out, &want, &format!("dense {size:?} {ci}->{co} k{k} s{stride}"));
        }
    }

    #[test]
    fn mean_pool_averages_each_channel() {
        let input = [1.0, 10.0, 3.0, 20.0, 5.0, 30.0];
        let mut out = [0.0; 2];
        mean_pool(&input, 3, 2, &mut out);
        assert_eq!(out, [3.0, 20.0]);
    }
}
