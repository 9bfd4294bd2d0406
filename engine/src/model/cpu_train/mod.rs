//! Training on Burn's CPU backend (Flex) with three operations of its own, forward and backward: the
//! depthwise convolution, the 1x1 (pointwise) convolution and BatchNorm in training mode with its
//! ReLU6. Burn runs the depthwise weight gradient as one small convolution per channel (about 7,000
//! per MobileNetV2 step) and BatchNorm as some twenty passes over the activation, forward and
//! backward, each allocating; they were over a third of a full fine-tune's time natively. Here each is
//! a pass or two per `(image, channel)` plane ([`graft_kernels::train`]), split over the cores
//! natively. The 1x1 convolutions, most of the network's multiply-adds, are three matrix products per
//! image on NCHW planes as they lie (`y = w x`, `dx = wᵀ dy`, `dw = Σ dy xᵀ`,
//! [`graft_kernels::matmul`]); Burn's go through an unfolding copy, a transposed convolution and a
//! weight-gradient convolution, and its wasm matrix product reaches about a quarter of the kernels'.
//!
//! In the browser, where a worker is one thread, the 1x1 convolutions' weight gradients go to the
//! helper workers ([`crate::helpers`]) during the backward pass: nothing later in the pass needs
//! them, so the worker goes on with the input gradients while a helper computes them, and
//! [`backward`] collects them before the optimizer step. A helper computes one exactly as this
//! thread would (`graft_kernels::step`); one that fails has its gradient computed here.
//!
//! A Burn backend extension ([`CpuTraining`]) with a hand-written autodiff node for each operation.
//! The blocks use it only where it applies ([`applies`]): an f32 tensor on the CPU backend with
//! autodiff; WebGPU and inference keep Burn's own operations. The results agree with Burn's within
//! float rounding (`tests` below compare values and gradients).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, backend_extension};
use burn::module::{Param, ParamId};
use burn::prelude::*;

use crate::helpers::{self, Share};

mod shared;
use burn::tensor::DType;
use graft_kernels::matmul::Workspace;
use graft_kernels::train::{
    PlaneConv, batch_norm_backward_plane, batch_norm_backward_sums, depthwise_backward_plane, plane_moments,
    scale_shift_plane,
};
pub use shared::{HelperTimes, Tuner, backward, helper_times, reset_tuner, tuner};

/// The three operations, on the CPU backend with and without autodiff.
#[backend_extension(Flex, Autodiff)]
pub trait CpuTraining: Backend {
    /// A 1x1 convolution with stride 1 and no bias: weight `[out, in, 1, 1]`.
    fn pointwise_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// A depthwise convolution (one `kernel` x `kernel` filter per channel, weight
    /// `[channels, 1, kernel, kernel]`) with `padding` zeros on every side.
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;

    /// BatchNorm on the batch's statistics, then ReLU6 when `relu6`: `(output, mean, variance)`, the
    /// statistics per channel (biased variance, as Burn's `batch_norm_train`) and not differentiated.
    fn batch_norm_train_act(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu6: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

thread_local! {
    /// Whether these operations run where they apply on this thread (see [`set_enabled`]).
    static ENABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Turns these operations off on this thread (`false`: Burn's own run instead) or on again: for the
/// benchmarks, which time training on both.
pub fn set_enabled(on: bool) {
    ENABLED.set(on);
}

/// Whether these operations run `x`: an f32 tensor on the CPU backend that trains (autodiff), on a
/// thread where they are enabled.
pub fn applies(x: &Tensor<4>) -> bool {
    let device = x.device();
    ENABLED.get() && device.is_autodiff() && x.dtype() == DType::F32 && device.without_autodiff() == Device::flex()
}

/// [`CpuTraining::pointwise_conv2d`] on tensors.
pub fn pointwise_conv2d(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as CpuTraining>::pointwise_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
    ))
}

/// [`pointwise_conv2d`] of `x` with the parameter `weight`, whose gradient may then be computed on a
/// helper (see [`backward`]).
pub fn pointwise_conv2d_of(x: Tensor<4>, weight: &Param<Tensor<4>>) -> Tensor<4> {
    shared::set_weight_param(Some(weight.id));
    let y = pointwise_conv2d(x, weight.val());
    shared::set_weight_param(None);
    y
}

/// [`CpuTraining::depthwise_conv2d`] on tensors.
pub fn depthwise_conv2d(x: Tensor<4>, weight: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as CpuTraining>::depthwise_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        stride,
        padding,
    ))
}

/// [`CpuTraining::batch_norm_train_act`] on tensors.
pub fn batch_norm_train_act(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    relu6: bool,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let (output, mean, variance) = <burn::backend::Dispatch as CpuTraining>::batch_norm_train_act(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        relu6,
    );
    (
        Tensor::from_dispatch(output),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(variance),
    )
}

impl CpuTraining for Flex {
    fn pointwise_conv2d(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        let [batch, inputs, height, width] = dims4(&x);
        let outputs = weight.layout().shape()[0];
        let output = pointwise::forward(slice(&x), &values(&weight), batch, inputs, outputs, height * width);
        tensor(output, [batch, outputs, height, width])
    }

    fn depthwise_conv2d(x: FlexTensor, weight: FlexTensor, stride: usize, padding: usize) -> FlexTensor {
        let channels = weight.layout().shape()[0];
        let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], channels);
        <Flex as ModuleOps<Flex>>::conv2d(x, weight, None, options)
    }

    fn batch_norm_train_act(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        relu6: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let forward = BatchNormForward::run(&contiguous(x), &values(&gamma), &values(&beta), epsilon, relu6);
        (
            forward.output,
            vector(forward.saved.mean.clone()),
            vector(forward.variance),
        )
    }
}

impl<C: CheckpointStrategy> CpuTraining for Autodiff<Flex, C> {
    fn pointwise_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        match PointwiseBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let dims = dims4(x.primitive());
                let weights = values(weight.primitive());
                let output = Flex::pointwise_conv2d(x.into_primitive(), weight.into_primitive());
                prep.finish((x_state, weights, dims, shared::weight_param()), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::pointwise_conv2d(x.into_primitive(), weight.into_primitive()))
            }
        }
    }

    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        match DepthwiseBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let dims = dims4(x.primitive());
                let kernel = weight.primitive().layout().shape()[2];
                let geometry = PlaneConv::new([dims[2], dims[3]], kernel, stride, [padding; 2]);
                let weights = values(weight.primitive());
                let output = Flex::depthwise_conv2d(x.into_primitive(), weight.into_primitive(), stride, padding);
                prep.finish((x_state, weights, dims, geometry), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::depthwise_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                stride,
                padding,
            )),
        }
    }

    fn batch_norm_train_act(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu6: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let run = |x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor| {
            BatchNormForward::run(&contiguous(x.clone()), &values(gamma), &values(beta), epsilon, relu6)
        };
        match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let forward = run(x.primitive(), gamma.primitive(), beta.primitive());
                let mean = vector(forward.saved.mean.clone());
                let output = prep.finish((x_state, forward.saved), forward.output);
                (
                    output,
                    Self::from_inner(mean),
                    Self::from_inner(vector(forward.variance)),
                )
            }
            OpsKind::UnTracked(prep) => {
                let forward = run(x.primitive(), gamma.primitive(), beta.primitive());
                let mean = vector(forward.saved.mean);
                (
                    prep.finish(forward.output),
                    Self::from_inner(mean),
                    Self::from_inner(vector(forward.variance)),
                )
            }
        }
    }
}

/// The 1x1 convolution's backward pass; the state is the input's checkpoint, the weights `[out, in]`
/// as the forward pass used them, the input's `[batch, channels, height, width]` and the weights'
/// parameter when known (its gradient can then be computed on a helper, see [`backward`]).
#[derive(Debug)]
struct PointwiseBackward;

impl Backward<Flex, 2> for PointwiseBackward {
    type State = (NodeId, Vec<f32>, [usize; 4], Option<ParamId>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let output_grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (x_state, weights, [batch, inputs, height, width], param) = ops.state;
        let (dy, plane) = (slice(&output_grad), height * width);
        let outputs = weights.len() / inputs;
        if let Some(node) = node_weight {
            let x = contiguous(checkpointer.retrieve_node_output::<FlexTensor>(x_state));
            let share = Share {
                product: helpers::Product::WeightGradient,
                shape: graft_kernels::step::Pointwise { inputs, outputs, plane },
                images: batch,
            };
            // Sent when this thread has the input's gradient to compute meanwhile (not for the first
            // layer trained): `backward` puts it in the gradients once the helper answers.
            if !(node_x.is_some() && shared::send_weight_gradient(param, share, &x, &output_grad)) {
                let dw = pointwise::weight_gradient(slice(&x), dy, batch, inputs, outputs, plane);
                grads.register::<Flex>(node.id, tensor(dw, [outputs, inputs, 1, 1]));
            }
        }
        if let Some(node) = node_x {
            let dx = pointwise::input_gradient(dy, &weights, batch, inputs, outputs, plane);
            grads.register::<Flex>(node.id, tensor(dx, [batch, inputs, height, width]));
        }
    }
}

/// The 1x1 convolution's three products ([`graft_kernels::step`]), image by image (over the cores
/// natively). `x` is `[batch, inputs, plane]`, `y` and `dy` `[batch, outputs, plane]`, `w`
/// `[outputs, inputs]`.
mod pointwise {
    use super::parallel;
    use crate::helpers::{Product, Share};
    use graft_kernels::step::Pointwise;

    /// `y[n] = w x[n]`.
    pub fn forward(x: &[f32], w: &[f32], batch: usize, inputs: usize, outputs: usize, plane: usize) -> Vec<f32> {
        run(Product::Forward, x, w, batch, Pointwise { inputs, outputs, plane })
    }

    /// `dx[n] = wᵀ dy[n]`.
    pub fn input_gradient(
        dy: &[f32],
        w: &[f32],
        batch: usize,
        inputs: usize,
        outputs: usize,
        plane: usize,
    ) -> Vec<f32> {
        run(
            Product::InputGradient,
            dy,
            w,
            batch,
            Pointwise { inputs, outputs, plane },
        )
    }

    /// `dw = Σ_n dy[n] x[n]ᵀ`.
    pub fn weight_gradient(
        x: &[f32],
        dy: &[f32],
        batch: usize,
        inputs: usize,
        outputs: usize,
        plane: usize,
    ) -> Vec<f32> {
        run(
            Product::WeightGradient,
            x,
            dy,
            batch,
            Pointwise { inputs, outputs, plane },
        )
    }

    fn run(product: Product, a: &[f32], b: &[f32], images: usize, shape: Pointwise) -> Vec<f32> {
        let share = Share { product, shape, images };
        let mut out = vec![0.0f32; share.output_len()];
        local(share, a, b, &mut out);
        out
    }

    /// `share` here, into `out` (the weight gradient added to it).
    fn local(share: Share, a: &[f32], b: &[f32], out: &mut [f32]) {
        match share.product {
            Product::WeightGradient => {
                let sum = parallel::sum(share.images, out.len(), |workspace, n, sum| {
                    share.image(n, a, b, sum, workspace)
                });
                out.iter_mut().zip(&sum).for_each(|(o, s)| *o += s);
            }
            Product::Forward | Product::InputGradient => {
                parallel::images(out, share.output_per_image(), |workspace, n, image| {
                    share.image(n, a, b, image, workspace)
                });
            }
        }
    }
}

/// The depthwise convolution's backward pass; the state is the input's checkpoint, the weights as
/// the forward pass used them, the input's `[batch, channels, height, width]` and the plane geometry.
#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 2> for DepthwiseBackward {
    type State = (NodeId, Vec<f32>, [usize; 4], PlaneConv);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let output_grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (x_state, weights, [batch, channels, height, width], geometry) = ops.state;
        let x = contiguous(checkpointer.retrieve_node_output::<FlexTensor>(x_state));
        let (x, output_grad) = (slice(&x), slice(&output_grad));
        let taps = geometry.kernel * geometry.kernel;
        let (input_len, output_len) = (geometry.input_len(), geometry.output_len());
        let mut dx = vec![
            0.0f32;
            if node_x.is_some() {
                batch * channels * input_len
            } else {
                0
            }
        ];
        // One `taps` row per plane, summed over the batch afterwards (planes run in parallel).
        let mut dw = vec![
            0.0f32;
            if node_weight.is_some() {
                batch * channels * taps
            } else {
                0
            }
        ];
        let plane = |p: usize, dx: Option<&mut [f32]>, dw: Option<&mut [f32]>| {
            let c = p % channels;
            depthwise_backward_plane(
                &geometry,
                &x[p * input_len..][..input_len],
                &weights[c * taps..][..taps],
                &output_grad[p * output_len..][..output_len],
                dx,
                dw,
            );
        };
        parallel::planes2(&mut dx, input_len, &mut dw, taps, batch * channels, plane);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, tensor(dx, [batch, channels, height, width]));
        }
        if let Some(node) = node_weight {
            let mut sum = vec![0.0f32; channels * taps];
            for image in dw.chunks_exact(channels * taps) {
                for (s, &v) in sum.iter_mut().zip(image) {
                    *s += v;
                }
            }
            grads.register::<Flex>(node.id, tensor(sum, [channels, 1, geometry.kernel, geometry.kernel]));
        }
    }
}

/// What the BatchNorm's backward pass needs besides its input: per channel, the batch's mean, the
/// inverse standard deviation, gamma, and the map `x * scale + shift` the forward pass applied.
#[derive(Clone, Debug)]
struct SavedStatistics {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu6: bool,
}

/// The output and statistics of a training BatchNorm (+ ReLU6) forward pass.
struct BatchNormForward {
    output: FlexTensor,
    variance: Vec<f32>,
    saved: SavedStatistics,
}

impl BatchNormForward {
    /// Normalises the contiguous `[batch, channels, height, width]` tensor `x` by its own statistics.
    fn run(x: &FlexTensor, gamma: &[f32], beta: &[f32], epsilon: f64, relu6: bool) -> Self {
        let [batch, channels, height, width] = dims4(x);
        let (data, len) = (slice(x), height * width);
        let moments = parallel::map(batch * channels, |p| plane_moments(&data[p * len..][..len]));
        let count = (batch * len) as f64;
        let (mut mean, mut variance, mut inv_std) = (vec![0.0; channels], vec![0.0; channels], vec![0.0; channels]);
        for c in 0..channels {
            let (sum, squares) = (0..batch)
                .map(|n| moments[n * channels + c])
                .fold((0.0, 0.0), |a, m| (a.0 + m.0, a.1 + m.1));
            let m = sum / count;
            let v = (squares / count - m * m).max(0.0);
            mean[c] = m as f32;
            variance[c] = v as f32;
            inv_std[c] = (1.0 / (v + epsilon).sqrt()) as f32;
        }
        let scale: Vec<f32> = (0..channels).map(|c| gamma[c] * inv_std[c]).collect();
        let shift: Vec<f32> = (0..channels).map(|c| beta[c] - mean[c] * scale[c]).collect();
        let mut output = vec![0.0f32; data.len()];
        parallel::planes(&mut output, len, |p, out| {
            let c = p % channels;
            scale_shift_plane(&data[p * len..][..len], scale[c], shift[c], relu6, out);
        });
        Self {
            output: tensor(output, [batch, channels, height, width]),
            variance,
            saved: SavedStatistics {
                mean,
                inv_std,
                gamma: gamma.to_vec(),
                scale,
                shift,
                relu6,
            },
        }
    }
}

/// The training BatchNorm's (+ ReLU6) backward pass: gradients of the input, gamma and beta.
#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = (NodeId, SavedStatistics);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let output_grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (x_state, saved) = ops.state;
        let x = contiguous(checkpointer.retrieve_node_output::<FlexTensor>(x_state));
        let [batch, channels, height, width] = dims4(&x);
        let (x, dy, len) = (slice(&x), slice(&output_grad), height * width);
        let SavedStatistics {
            mean,
            inv_std,
            gamma,
            scale,
            shift,
            relu6,
        } = &saved;
        let sums = parallel::map(batch * channels, |p| {
            let c = p % channels;
            batch_norm_backward_sums(&x[p * len..][..len], &dy[p * len..][..len], scale[c], shift[c], *relu6)
        });
        let count = (batch * len) as f64;
        // Per channel: sum(g) (beta's gradient) and sum(g * x_hat) (gamma's).
        let (mut beta_grad, mut gamma_grad) = (vec![0.0f32; channels], vec![0.0f32; channels]);
        let mut coefficients = vec![[0.0f32; 3]; channels];
        for c in 0..channels {
            let (sum, weighted) = (0..batch)
                .map(|n| sums[n * channels + c])
                .fold((0.0, 0.0), |a, s| (a.0 + s.0, a.1 + s.1));
            let (m, s) = (mean[c] as f64, inv_std[c] as f64);
            let normalized = s * (weighted - m * sum);
            beta_grad[c] = sum as f32;
            gamma_grad[c] = normalized as f32;
            // dx = a (g - sum / count - x_hat normalized / count), x_hat = (x - mean) s
            let a = gamma[c] as f64 * s;
            let b = -a * s * normalized / count;
            coefficients[c] = [a as f32, b as f32, (-a * sum / count - b * m) as f32];
        }
        if let Some(node) = node_x {
            let mut dx = vec![0.0f32; x.len()];
            parallel::planes(&mut dx, len, |p, out| {
                let c = p % channels;
                let range = p * len..(p + 1) * len;
                batch_norm_backward_plane(
                    &x[range.clone()],
                    &dy[range],
                    scale[c],
                    shift[c],
                    *relu6,
                    coefficients[c],
                    out,
                );
            });
            grads.register::<Flex>(node.id, tensor(dx, [batch, channels, height, width]));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, vector(gamma_grad));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, vector(beta_grad));
        }
    }
}

fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous f32 tensor (checked by `applies`)")
}

fn values(t: &FlexTensor) -> Vec<f32> {
    slice(&contiguous(t.clone())).to_vec()
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let shape = t.layout().shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn vector(values: Vec<f32>) -> FlexTensor {
    let len = values.len();
    tensor(values, [len])
}

/// Work over planes: split over the cores natively (rayon, the pool Burn's CPU backend uses too), in
/// order in the browser (one thread per worker).
mod parallel {
    #[cfg(not(target_arch = "wasm32"))]
    use rayon::prelude::*;

    /// Below this many elements a task is not worth a thread.
    #[cfg(not(target_arch = "wasm32"))]
    const GRAIN: usize = 16 * 1024;

    /// `f(p)` for each plane `p` in `0..count`.
    pub fn map<T: Send>(count: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
        #[cfg(not(target_arch = "wasm32"))]
        return (0..count).into_par_iter().with_min_len(8).map(f).collect();
        #[cfg(target_arch = "wasm32")]
        return (0..count).map(f).collect();
    }

    /// `f(p, plane)` for each `len`-element plane of `out`.
    pub fn planes(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
        #[cfg(not(target_arch = "wasm32"))]
        out.par_chunks_mut(len)
            .with_min_len(GRAIN.div_ceil(len))
            .enumerate()
            .for_each(|(p, plane)| f(p, plane));
        #[cfg(target_arch = "wasm32")]
        out.chunks_mut(len).enumerate().for_each(|(p, plane)| f(p, plane));
    }

    /// `f(workspace, n, image)` for each `len`-element image of `out` (a thread's product buffers
    /// reused across its images).
    pub fn images(out: &mut [f32], len: usize, f: impl Fn(&mut super::Workspace, usize, &mut [f32]) + Sync + Send) {
        #[cfg(not(target_arch = "wasm32"))]
        out.par_chunks_mut(len)
            .enumerate()
            .for_each_init(super::Workspace::default, |workspace, (n, image)| {
                f(workspace, n, image)
            });
        #[cfg(target_arch = "wasm32")]
        {
            let mut workspace = super::Workspace::default();
            out.chunks_mut(len)
                .enumerate()
                .for_each(|(n, image)| f(&mut workspace, n, image));
        }
    }

    /// The sum over `n` in `0..count` of what `f(workspace, n, sum)` adds into a `len`-element sum
    /// (natively a partial sum per thread, added up at the end).
    pub fn sum(
        count: usize,
        len: usize,
        f: impl Fn(&mut super::Workspace, usize, &mut [f32]) + Sync + Send,
    ) -> Vec<f32> {
        #[cfg(not(target_arch = "wasm32"))]
        return (0..count)
            .into_par_iter()
            .fold(
                || (super::Workspace::default(), vec![0.0f32; len]),
                |(mut workspace, mut sum), n| {
                    f(&mut workspace, n, &mut sum);
                    (workspace, sum)
                },
            )
            .map(|(_, sum)| sum)
            .reduce(
                || vec![0.0f32; len],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        #[cfg(target_arch = "wasm32")]
        {
            let (mut workspace, mut sum) = (super::Workspace::default(), vec![0.0f32; len]);
            (0..count).for_each(|n| f(&mut workspace, n, &mut sum));
            sum
        }
    }

    /// `f(p, a_plane, b_plane)` for each of `count` planes, `a` and `b` in planes of `a_len` and
    /// `b_len` elements; an empty `a` or `b` gives `None` for its planes.
    pub fn planes2(
        a: &mut [f32],
        a_len: usize,
        b: &mut [f32],
        b_len: usize,
        count: usize,
        f: impl Fn(usize, Option<&mut [f32]>, Option<&mut [f32]>) + Sync + Send,
    ) {
        fn split(out: &mut [f32], len: usize, count: usize) -> Vec<Option<&mut [f32]>> {
            if out.is_empty() {
                (0..count).map(|_| None).collect()
            } else {
                out.chunks_mut(len).map(Some).collect()
            }
        }
        let pairs: Vec<_> = split(a, a_len, count).into_iter().zip(split(b, b_len, count)).collect();
        #[cfg(not(target_arch = "wasm32"))]
        pairs
            .into_par_iter()
            .with_min_len(GRAIN.div_ceil(a_len.max(1)))
            .enumerate()
            .for_each(|(p, (a, b))| f(p, a, b));
        #[cfg(target_arch = "wasm32")]
        pairs.into_iter().enumerate().for_each(|(p, (a, b))| f(p, a, b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu6;

    fn close(a: Tensor<4>, b: Tensor<4>, tolerance: f32, what: &str) {
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff < tolerance, "{what}: max difference {diff}");
    }

    fn close1(a: Tensor<1>, b: Tensor<1>, tolerance: f32, what: &str) {
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff < tolerance, "{what}: max difference {diff}");
    }

    /// The 1x1 convolution agrees with Burn's convolution, values and gradients of the input and the
    /// weights, on planes that leave partial product tiles and cross the products' blocks.
    #[test]
    fn pointwise_matches_burns_convolution_and_its_gradients() {
        let device = Device::flex().autodiff();
        for (batch, inputs, outputs, size) in [(3, 5, 7, 6), (2, 24, 144, 9), (1, 300, 70, 5), (2, 16, 8, 33)] {
            let x = Tensor::<4>::random([batch, inputs, size, size], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let w =
                Tensor::<4>::random([outputs, inputs, 1, 1], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let r = Tensor::<4>::random([batch, outputs, size, size], Distribution::Normal(0.0, 1.0), &device);
            let ours = pointwise_conv2d(x.clone(), w.clone());
            let options = burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
            let burns = burn::tensor::module::conv2d(x.clone(), w.clone(), None, options);
            let what = format!("{batch}x{inputs}->{outputs} at {size}x{size}");
            close(ours.clone(), burns.clone(), 1e-3, &format!("{what}: output"));
            let grads_ours = (ours * r.clone()).sum().backward();
            let grads_burns = (burns * r).sum().backward();
            close(
                x.grad(&grads_ours).unwrap(),
                x.grad(&grads_burns).unwrap(),
                1e-3,
                &format!("{what}: input gradient"),
            );
            close(
                w.grad(&grads_ours).unwrap(),
                w.grad(&grads_burns).unwrap(),
                1e-2,
                &format!("{what}: weight gradient"),
            );
        }
    }

    /// The depthwise convolution agrees with Burn's grouped convolution, values and gradients of the
    /// input and the weights, for the strides and kernels of both models.
    #[test]
    fn depthwise_matches_burns_convolution_and_its_gradients() {
        let device = Device::flex().autodiff();
        for (kernel, stride, size) in [(3, 1, 12), (3, 2, 13), (5, 2, 14), (5, 1, 9)] {
            let padding = (kernel - 1) / 2;
            let x = Tensor::<4>::random([3, 5, size, size], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let w = Tensor::<4>::random([5, 1, kernel, kernel], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let r = Tensor::<4>::random(
                [
                    3,
                    5,
                    (size + 2 * padding - kernel) / stride + 1,
                    (size + 2 * padding - kernel) / stride + 1,
                ],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let ours = depthwise_conv2d(x.clone(), w.clone(), stride, padding);
            let options = burn::tensor::ops::ConvOptions::new([stride; 2], [padding; 2], [1, 1], 5);
            let burns = burn::tensor::module::conv2d(x.clone(), w.clone(), None, options);
            close(ours.clone(), burns.clone(), 1e-4, "output");
            let grads_ours = (ours * r.clone()).sum().backward();
            let grads_burns = (burns * r).sum().backward();
            close(
                x.grad(&grads_ours).unwrap(),
                x.grad(&grads_burns).unwrap(),
                1e-4,
                "input gradient",
            );
            close(
                w.grad(&grads_ours).unwrap(),
                w.grad(&grads_burns).unwrap(),
                1e-3,
                "weight gradient",
            );
        }
    }

    /// BatchNorm (+ ReLU6) on the batch's statistics agrees with Burn's `batch_norm_train` (and
    /// `relu6`): output, statistics and the gradients of the input, gamma and beta.
    #[test]
    fn batch_norm_matches_burns_and_its_gradients() {
        let device = Device::flex().autodiff();
        for activation in [true, false] {
            // Shifted and scaled so that ReLU6 clips on both sides.
            let x =
                (Tensor::<4>::random([4, 6, 7, 5], Distribution::Normal(0.0, 1.0), &device) * 3.0 + 1.5).require_grad();
            let gamma = Tensor::<1>::random([6], Distribution::Uniform(0.5, 3.0), &device).require_grad();
            let beta = Tensor::<1>::random([6], Distribution::Uniform(-1.0, 4.0), &device).require_grad();
            let r = Tensor::<4>::random([4, 6, 7, 5], Distribution::Normal(0.0, 1.0), &device);
            let (ours, mean, variance) = batch_norm_train_act(x.clone(), gamma.clone(), beta.clone(), 1e-3, activation);
            let burns = burn::tensor::module::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-3);
            close1(mean, burns.mean, 1e-5, "mean");
            close1(variance, burns.variance, 1e-4, "variance");
            let burns_output = if activation { relu6(burns.output) } else { burns.output };
            close(ours.clone(), burns_output.clone(), 1e-4, "output");
            let grads_ours = (ours * r.clone()).sum().backward();
            let grads_burns = (burns_output * r).sum().backward();
            close(
                x.grad(&grads_ours).unwrap(),
                x.grad(&grads_burns).unwrap(),
                1e-4,
                "input gradient",
            );
            close1(
                gamma.grad(&grads_ours).unwrap(),
                gamma.grad(&grads_burns).unwrap(),
                1e-3,
                "gamma gradient",
            );
            close1(
                beta.grad(&grads_ours).unwrap(),
                beta.grad(&grads_burns).unwrap(),
                1e-3,
                "beta gradient",
            );
        }
    }

    /// Only what needs a gradient gets one: a frozen input (no gradient) still trains the weights.
    #[test]
    fn an_untracked_input_still_trains_the_weights() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random([3, 1, 3, 3], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let grads = depthwise_conv2d(x.clone(), w.clone(), 1, 1).sum().backward();
        assert!(x.grad(&grads).is_none());
        assert_eq!(w.grad(&grads).unwrap().dims(), [3, 1, 3, 3]);
    }

    #[test]
    fn applies_to_the_cpu_backend_with_autodiff_only() {
        let x = |device: &Device| Tensor::<4>::zeros([1, 1, 2, 2], device);
        assert!(applies(&x(&Device::flex().autodiff())));
        assert!(!applies(&x(&Device::flex())));
        set_enabled(false);
        assert!(!applies(&x(&Device::flex().autodiff())), "turned off");
        set_enabled(true);
    }
}
