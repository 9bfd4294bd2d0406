//! The CPU backend's training operations ([`graft_engine::model::cpu_train`]) composed as an
//! inverted residual block is (1x1 expansion, BatchNorm + ReLU6, depthwise, BatchNorm + ReLU6, 1x1
//! projection, BatchNorm), against the same block built from Burn's own operations: the output and
//! the gradients of the input and of every weight. Natively and in the browser, where the operations
//! run on wasm's SIMD products in one thread.

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu6;
use burn::tensor::module::{batch_norm_train, conv2d};
use burn::tensor::ops::ConvOptions;
use graft_engine::model::cpu_train;

/// The largest absolute difference between the two blocks, per quantity, and the largest magnitude
/// of each quantity (for a relative reading).
#[derive(Debug, Clone, PartialEq)]
pub struct Differences {
    pub rows: Vec<(&'static str, f32, f32)>,
}

impl Differences {
    /// Panics naming the first quantity whose difference exceeds `relative` times its magnitude.
    pub fn assert_within(&self, relative: f32) {
        for &(what, difference, magnitude) in &self.rows {
            assert!(
                difference <= relative * magnitude.max(1.0),
                "{what}: differs by {difference} (largest value {magnitude})"
            );
        }
    }
}

/// Runs both blocks on a `[batch, inputs, size, size]` input, stride 2 in the depthwise step.
pub fn inverted_residual_against_burn(batch: usize, inputs: usize, expanded: usize, size: usize) -> Differences {
    let device = Device::flex().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([batch, inputs, size, size], normal, &device).require_grad();
    let expand = Tensor::<4>::random([expanded, inputs, 1, 1], normal, &device).require_grad();
    let depthwise = Tensor::<4>::random([expanded, 1, 3, 3], normal, &device).require_grad();
    let project = Tensor::<4>::random([inputs, expanded, 1, 1], normal, &device).require_grad();
    let gamma = Tensor::<1>::random([expanded], Distribution::Uniform(0.5, 2.0), &device).require_grad();
    let beta = Tensor::<1>::random([expanded], Distribution::Uniform(-1.0, 3.0), &device).require_grad();
    let out_size = (size + 2 - 3) / 2 + 1;
    let r = Tensor::<4>::random([batch, inputs, out_size, out_size], normal, &device);
    let epsilon = 1e-3;

    let ours = {
        let h = cpu_train::pointwise_conv2d(x.clone(), expand.clone());
        let (h, _, _) = cpu_train::batch_norm_train_act(h, gamma.clone(), beta.clone(), epsilon, true);
        let h = cpu_train::depthwise_conv2d(h, depthwise.clone(), 2, 1);
        let (h, _, _) = cpu_train::batch_norm_train_act(h, gamma.clone(), beta.clone(), epsilon, true);
        cpu_train::pointwise_conv2d(h, project.clone())
    };
    let burns = {
        let one = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let h = conv2d(x.clone(), expand.clone(), None, one.clone());
        let h = relu6(batch_norm_train(h, gamma.clone(), beta.clone(), epsilon).output);
        let h = conv2d(
            h,
            depthwise.clone(),
            None,
            ConvOptions::new([2, 2], [1, 1], [1, 1], expanded),
        );
        let h = relu6(batch_norm_train(h, gamma.clone(), beta.clone(), epsilon).output);
        conv2d(h, project.clone(), None, one)
    };
    let compare4 = |a: Tensor<4>, b: Tensor<4>| -> (f32, f32) {
        let difference = (a - b.clone()).abs().max().into_scalar();
        (difference, b.abs().max().into_scalar())
    };
    let compare1 = |a: Tensor<1>, b: Tensor<1>| -> (f32, f32) {
        let difference = (a - b.clone()).abs().max().into_scalar();
        (difference, b.abs().max().into_scalar())
    };
    let (output, output_magnitude) = compare4(ours.clone(), burns.clone());
    let g_ours = (ours * r.clone()).sum().backward();
    let g_burns = (burns * r).sum().backward();
    let grad4 = |t: &Tensor<4>| compare4(t.grad(&g_ours).expect("ours"), t.grad(&g_burns).expect("Burn's"));
    let grad1 = |t: &Tensor<1>| compare1(t.grad(&g_ours).expect("ours"), t.grad(&g_burns).expect("Burn's"));
    let mut rows = vec![("output", output, output_magnitude)];
    for (what, (d, m)) in [
        ("input gradient", grad4(&x)),
        ("expansion weight gradient", grad4(&expand)),
        ("depthwise weight gradient", grad4(&depthwise)),
        ("projection weight gradient", grad4(&project)),
        ("gamma gradient", grad1(&gamma)),
        ("beta gradient", grad1(&beta)),
    ] {
        rows.push((what, d, m));
    }
    Differences { rows }
}
