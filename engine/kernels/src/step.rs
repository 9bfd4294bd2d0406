//! The products of a training step that can be shared out image by image: a 1x1 convolution's
//! forward product and its two gradients, on NCHW planes as they lie (`y = w x`, `dx = wᵀ dy`,
//! `dw = Σ dy xᵀ`). In the browser the training worker computes the first images of a batch and a
//! helper the rest ([`Share`] is what the helper is sent); natively the engine runs the same
//! [`Share::image`] over its threads. One definition, so a share gives the same numbers wherever it runs.

use crate::matmul::{Matrix, Workspace, matmul};

/// Which product of a 1x1 convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// `y[n] = w x[n]`: `a` the input `[images, inputs, plane]`, `b` the weights `[outputs, inputs]`;
    /// the output `[images, outputs, plane]`.
    Forward,
    /// `dx[n] = wᵀ dy[n]`: `a` the output's gradient `[images, outputs, plane]`, `b` the weights;
    /// the input's gradient `[images, inputs, plane]`.
    InputGradient,
    /// `dw = Σ_n dy[n] x[n]ᵀ`: `a` the input, `b` the output's gradient; the weights' gradient
    /// `[outputs, inputs]` summed over the images.
    WeightGradient,
}

/// The shape of a 1x1 convolution: channels in and out, and the pixels of a plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pointwise {
    pub inputs: usize,
    pub outputs: usize,
    pub plane: usize,
}

/// A product on some images of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub product: Product,
    pub shape: Pointwise,
    pub images: usize,
}

/// A share's operands are not as long as its shape says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {product:?} share of {images} images wants operands of {want:?} values, not {got:?}")]
pub struct ShareLengthError {
    pub product: Product,
    pub images: usize,
    pub want: (usize, usize),
    pub got: (usize, usize),
}

impl Share {
    /// Values of `a` per image.
    pub fn a_per_image(&self) -> usize {
        let Pointwise { inputs, outputs, plane } = self.shape;
        match self.product {
            Product::Forward | Product::WeightGradient => inputs * plane,
            Product::InputGradient => outputs * plane,
        }
    }

    /// Values of `b`: the weights, or (weight gradient) the output's gradient of these images.
    pub fn b_len(&self) -> usize {
        let Pointwise { inputs, outputs, plane } = self.shape;
        match self.product {
            Product::Forward | Product::InputGradient => outputs * inputs,
            Product::WeightGradient => self.images * outputs * plane,
        }
    }

    /// Values of the output per image (the whole sum for the weight gradient).
    pub fn output_per_image(&self) -> usize {
        let Pointwise { inputs, outputs, plane } = self.shape;
        match self.product {
            Product::Forward => outputs * plane,
            Product::InputGradient => inputs * plane,
            Product::WeightGradient => outputs * inputs,
        }
    }

    /// Values of the whole output.
    pub fn output_len(&self) -> usize {
        match self.product {
            Product::WeightGradient => self.output_per_image(),
            Product::Forward | Product::InputGradient => self.images * self.output_per_image(),
        }
    }

    /// Multiply-adds of the share.
    pub fn macs(&self) -> usize {
        let Pointwise { inputs, outputs, plane } = self.shape;
        self.images * inputs * outputs * plane
    }

    /// The same product on `images` images.
    pub fn with_images(self, images: usize) -> Self {
        Self { images, ..self }
    }

    /// Checks `a` and `b` against the shape.
    pub fn check(&self, a: &[f32], b: &[f32]) -> Result<(), ShareLengthError> {
        let want = (self.images * self.a_per_image(), self.b_len());
        let got = (a.len(), b.len());
        if want == got {
            Ok(())
        } else {
            Err(ShareLengthError {
                product: self.product,
                images: self.images,
                want,
                got,
            })
        }
    }

    /// Image `n`'s product: into its output `out` (`output_per_image` values), or added into the
    /// weight gradient's sum `out`. `a` and `b` are the whole share's operands.
    pub fn image(&self, n: usize, a: &[f32], b: &[f32], out: &mut [f32], workspace: &mut Workspace) {
        let Pointwise { inputs, outputs, plane } = self.shape;
        let a = &a[n * self.a_per_image()..][..self.a_per_image()];
        match self.product {
            Product::Forward => {
                let w = Matrix::row_major(b, outputs, inputs);
                matmul(w, Matrix::row_major(a, inputs, plane), out, false, workspace);
            }
            Product::InputGradient => {
                let wt = Matrix::row_major(b, outputs, inputs).transposed();
                matmul(wt, Matrix::row_major(a, outputs, plane), out, false, workspace);
            }
            Product::WeightGradient => {
                let dy = Matrix::row_major(&b[n * outputs * plane..][..outputs * plane], outputs, plane);
                let xt = Matrix::row_major(a, inputs, plane).transposed();
                matmul(dy, xt, out, true, workspace);
            }
        }
    }

    /// The whole share on this thread.
    pub fn run(&self, a: &[f32], b: &[f32]) -> Result<Vec<f32>, ShareLengthError> {
        self.check(a, b)?;
        let mut out = vec![0.0f32; self.output_len()];
        self.run_into(a, b, &mut out);
        Ok(out)
    }

    /// The whole share on this thread, into `out` (`output_len` values; the weight gradient is
    /// added to what `out` holds). The operands are checked by the caller.
    pub fn run_into(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        let mut workspace = Workspace::default();
        match self.product {
            Product::WeightGradient => {
                for n in 0..self.images {
                    self.image(n, a, b, out, &mut workspace);
                }
            }
            Product::Forward | Product::InputGradient => {
                for (n, image) in out.chunks_exact_mut(self.output_per_image()).enumerate() {
                    self.image(n, a, b, image, &mut workspace);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    /// Each product against its definition by loops; a share split in two gives the whole's
    /// numbers (the weight gradient as the sum of the halves').
    #[test]
    fn products_match_their_definitions() {
        let shape = Pointwise {
            inputs: 5,
            outputs: 7,
            plane: 6,
        };
        let images = 3;
        let x = values(images * 5 * 6, 1);
        let w = values(7 * 5, 2);
        let dy = values(images * 7 * 6, 3);
        let share = |product| Share { product, shape, images };
        let y = share(Product::Forward).run(&x, &w).unwrap();
        let dx = share(Product::InputGradient).run(&dy, &w).unwrap();
        let dw = share(Product::WeightGradient).run(&x, &dy).unwrap();
        for n in 0..images {
            for p in 0..6 {
                for o in 0..7 {
                    let want: f32 = (0..5).map(|i| w[o * 5 + i] * x[(n * 5 + i) * 6 + p]).sum();
                    assert!((y[(n * 7 + o) * 6 + p] - want).abs() < 1e-5);
                }
                for i in 0..5 {
                    let want: f32 = (0..7).map(|o| w[o * 5 + i] * dy[(n * 7 + o) * 6 + p]).sum();
                    assert!((dx[(n * 5 + i) * 6 + p] - want).abs() < 1e-5);
                }
            }
        }
        for o in 0..7 {
            for i in 0..5 {
                let want: f32 = (0..images)
                    .flat_map(|n| (0..6).map(move |p| (n, p)))
                    .map(|(n, p)| dy[(n * 7 + o) * 6 + p] * x[(n * 5 + i) * 6 + p])
                    .sum();
                assert!((dw[o * 5 + i] - want).abs() < 1e-4, "dw[{o}, {i}]");
            }
        }
        // Two shares: the first image, then the other two.
        let (first, rest) = (
            share(Product::Forward).with_images(1),
            share(Product::Forward).with_images(2),
        );
        let mut halves = first.run(&x[..30], &w).unwrap();
        halves.extend(rest.run(&x[30..], &w).unwrap());
        assert_eq!(halves, y);
        let wg = share(Product::WeightGradient);
        let mut sum = wg.with_images(1).run(&x[..30], &dy[..42]).unwrap();
        let theirs = wg.with_images(2).run(&x[30..], &dy[42..]).unwrap();
        sum.iter_mut().zip(&theirs).for_each(|(s, t)| *s += t);
        for (s, d) in sum.iter().zip(&dw) {
            assert!((s - d).abs() < 1e-5);
        }
        assert!(share(Product::Forward).run(&x[1..], &w).is_err(), "a short input");
        assert!(wg.run(&x, &dy[1..]).is_err(), "a short gradient");
    }
}
