//! CPU kernels for running a frozen MobileNet-style network in NHWC f32, written for wasm's 128-bit
//! SIMD (single-threaded), where Burn's CPU backend reaches about a fifth of what these do on 1x1
//! convolutions. Each kernel fuses its bias, ReLU6 and residual into the pass that writes the output.

pub mod conv;
pub mod gemm;
mod simd;

pub use conv::{DenseWeights, DepthwiseWeights, Geometry, channel_sums, dense, depthwise, mean_pool, scale_shift};
pub use gemm::{Activation, PackedWeights, pointwise};
