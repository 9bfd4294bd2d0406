//! CPU kernels for running a frozen MobileNet-style network in NHWC f32, written for wasm's 128-bit
//! SIMD (single-threaded), where Burn's CPU backend reaches about a fifth of what these do on 1x1
//! convolutions. Each kernel fuses its bias, ReLU6 and residual into the pass that writes the output.
//!
//! [`network`] puts them together: a whole frozen classifier, described without any framework
//! ([`NetworkSpec`]) and compiled for the kernels ([`Network`]); [`file`] stores the description as
//! one safetensors file (what the offline web page export carries).

pub mod conv;
pub mod file;
pub mod gemm;
pub mod matmul;
pub mod network;
mod simd;
pub mod step;
pub mod train;

pub use conv::{DenseWeights, DepthwiseWeights, Geometry, channel_sums, dense, depthwise, mean_pool, scale_shift};
pub use file::NetworkFileError;
pub use gemm::{Activation, PackedWeights, pointwise};
pub use network::{
    Affine, BodyOutput, ConvSpec, LayerSpec, LinearSpec, Network, NetworkError, NetworkSpec, Padding, Work, softmax,
    tf_same_padding,
};
pub use train::PlaneConv;

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
