//! CPU kernels for running a frozen MobileNet-style network in NHWC f32, written for wasm's 128-bit
//! SIMD (single-threaded), where Burn's CPU backend reaches about a fifth of what these do on 1x1
//! convolutions. Each kernel fuses its bias, ReLU6 and residual into the pass that writes the output.

pub mod conv;
pub mod gemm;
mod simd;

pub use conv::{DenseWeights, DepthwiseWeights, Geometry, channel_sums, dense, depthwise, mean_pool, scale_shift};
pub use gemm::{Activation, PackedWeights, pointwise};

/// Test inputs shared by the kernels' tests.
#[cfg(test)]
mod testing {
    /// `len` pseudo-random values in [-1, 1], the same for the same seed (xorshift).
    pub fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }
}
