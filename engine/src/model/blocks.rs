//! The two building blocks both architectures are made of: conv -> BatchNorm -> ReLU6, and the
//! inverted residual (expand 1x1 -> depthwise kxk -> project 1x1, with a skip when shapes allow).

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu6;
use burn::tensor::module::batch_norm;
use burn::tensor::ops::PadMode;

use super::cpu_train;

/// How a convolution pads its input.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `(k - 1) / 2` on every side (PyTorch / torchvision).
    Symmetric,
    /// TensorFlow's "SAME": the output is `ceil(input / stride)`; when the total padding is odd the
    /// extra row/column goes at the bottom/right. Computed from the input size at each call.
    TfSame,
}

/// Conv -> BatchNorm -> (optional) ReLU6.
#[derive(Config, Debug)]
pub struct ConvBnActConfig {
    /// `[in, out]` channels.
    pub channels: [usize; 2],
    /// Square kernel size.
    pub kernel: usize,
    /// Square stride.
    #[config(default = 1)]
    pub stride: usize,
    /// 1 for a full convolution, `channels[0]` for a depthwise one.
    #[config(default = 1)]
    pub groups: usize,
    /// Whether ReLU6 follows the BatchNorm (the projection of an inverted residual has none).
    #[config(default = true)]
    pub activation: bool,
    /// Padding convention of the checkpoint.
    #[config(default = "Padding::Symmetric")]
    pub padding: Padding,
    /// BatchNorm epsilon of the checkpoint (TensorFlow ports use 1e-3, torchvision 1e-5).
    #[config(default = 1e-5)]
    pub bn_eps: f64,
}

/// Conv -> BatchNorm -> (optional) ReLU6. Convolutions have no bias (the BatchNorm has one).
#[derive(Module, Debug)]
pub struct ConvBnAct {
    pub conv: Conv2d,
    pub norm: BatchNorm,
    activation: bool,
    /// Present for TensorFlow "SAME" padding: the kernel size and stride to compute it from.
    tf_same: Option<[usize; 2]>,
    /// The BatchNorm has been folded into the conv's weights and bias (inference only).
    folded: bool,
    /// While the block trains, the BatchNorm normalises with its running statistics (and leaves
    /// them as they are) instead of each batch's; its scale and shift still learn. See
    /// [`BatchNormStatistics`](crate::train::BatchNormStatistics).
    running_statistics: bool,
}

impl ConvBnActConfig {
    pub fn init(&self, device: &Device) -> ConvBnAct {
        let symmetric = (self.kernel - 1) / 2;
        // Stride-1 "SAME" with an odd kernel is symmetric; only strided convs need the dynamic form.
        let tf_same = self.padding == Padding::TfSame && self.stride > 1;
        let padding = if tf_same {
            PaddingConfig2d::Valid
        } else {
            PaddingConfig2d::Explicit(symmetric, symmetric, symmetric, symmetric)
        };
        ConvBnAct {
            conv: Conv2dConfig::new(self.channels, [self.kernel, self.kernel])
                .with_stride([self.stride, self.stride])
                .with_groups(self.groups)
                .with_padding(padding)
                .with_bias(false)
                .init(device),
            norm: BatchNormConfig::new(self.channels[1])
                .with_epsilon(self.bn_eps)
                .init(device),
            activation: self.activation,
            tf_same: tf_same.then_some([self.kernel, self.stride]),
            folded: false,
            running_statistics: false,
        }
    }
}

/// `(before, after)` padding of one spatial dimension under TensorFlow's "SAME" rule (one rule for
/// Burn's layers, the kernels and the ONNX export).
pub use graft_kernels::tf_same_padding;

impl ConvBnAct {
    /// # Shapes
    /// - `x`: `[batch, channels_in, height, width]` -> `[batch, channels_out, height / stride, width / stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv_forward(x);
        if !self.folded && !self.running_statistics && self.norm.training.is_enabled() && cpu_train::applies(&x) {
            return self.batch_norm_train_cpu(x);
        }
        let x = if self.folded {
            x
        } else if self.running_statistics {
            let norm = &self.norm;
            batch_norm(
                x,
                norm.gamma.val(),
                norm.beta.val(),
                norm.running_mean.value(),
                norm.running_var.value(),
                norm.epsilon,
            )
        } else {
            self.norm.forward(x)
        };
        if self.activation { relu6(x) } else { x }
    }

    /// Whether a training BatchNorm normalises with its running statistics (see the field).
    pub fn set_running_statistics(&mut self, running: bool) {
        self.running_statistics = running;
    }

    /// Whether ReLU6 follows the BatchNorm.
    pub fn has_activation(&self) -> bool {
        self.activation
    }

    /// Whether the BatchNorm has been folded into the convolution.
    pub fn is_folded(&self) -> bool {
        self.folded
    }

    /// Whether the convolution pads by TensorFlow's "SAME" rule (strided ones of TensorFlow ports);
    /// otherwise it pads `(kernel - 1) / 2` on every side.
    pub fn uses_tf_same(&self) -> bool {
        self.tf_same.is_some()
    }

    /// The padded convolution alone: the input the BatchNorm normalises.
    fn conv_forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match self.tf_same {
            Some([kernel, stride]) => {
                let [_, _, height, width] = x.dims();
                let rows = tf_same_padding(height, kernel, stride);
                let cols = tf_same_padding(width, kernel, stride);
                x.pad([rows, cols], PadMode::Constant(0.0))
            }
            None => x,
        };
        let [channels_out, channels_per_group, kernel, _] = self.conv.weight.dims();
        let depthwise = channels_per_group == 1 && self.conv.groups == channels_out && channels_out > 1;
        let pointwise = kernel == 1 && self.conv.groups == 1 && self.conv.stride == [1, 1];
        if pointwise && self.conv.bias.is_none() && cpu_train::applies(&x) {
            return cpu_train::pointwise_conv2d_of(x, &self.conv.weight);
        }
        if depthwise && self.conv.bias.is_none() && cpu_train::applies(&x) {
            let padding = if self.tf_same.is_some() { 0 } else { (kernel - 1) / 2 };
            return cpu_train::depthwise_conv2d(x, self.conv.weight.val(), self.conv.stride[0], padding);
        }
        self.conv.forward(x)
    }

    /// BatchNorm on the batch's statistics (+ ReLU6) on the CPU backend (see [`cpu_train`]), the
    /// running statistics updated as Burn's `BatchNorm` does.
    fn batch_norm_train_cpu(&self, x: Tensor<4>) -> Tensor<4> {
        let norm = &self.norm;
        let (output, mean, variance) =
            cpu_train::batch_norm_train_act(x, norm.gamma.val(), norm.beta.val(), norm.epsilon, self.activation);
        let momentum = norm.momentum;
        let update = |running: Tensor<1>, batch: Tensor<1>| {
            running
                .to_device(&batch.device())
                .mul_scalar(1.0 - momentum)
                .add(batch.mul_scalar(momentum))
                .detach()
        };
        norm.running_mean.update(update(norm.running_mean.value_sync(), mean));
        norm.running_var.update(update(norm.running_var.value_sync(), variance));
        output
    }

    /// [`forward`](Self::forward), also pushing onto `probes` the per-channel statistics of what the
    /// BatchNorm receives: `[2, channels]` = (mean, mean of squares) over batch, height and width.
    /// Compared with the BatchNorm's running statistics, they show how far these inputs are from what
    /// the network saw in training.
    pub fn forward_probed(&self, x: Tensor<4>, probes: &mut Vec<Tensor<2>>) -> Tensor<4> {
        let x = self.conv_forward(x);
        let [batch, channels, height, width] = x.dims();
        let flat = x.clone().swap_dims(0, 1).reshape([channels, batch * height * width]);
        let mean = flat.clone().mean_dim(1).reshape([1, channels]);
        let mean_sq = flat.powi_scalar(2).mean_dim(1).reshape([1, channels]);
        probes.push(Tensor::cat(vec![mean, mean_sq], 0));
        let x = if self.folded { x } else { self.norm.forward(x) };
        if self.activation { relu6(x) } else { x }
    }

    /// The BatchNorm's running mean and variance (plus epsilon): the statistics of its input over the
    /// training data.
    pub fn running_statistics(&self) -> (Tensor<1>, Tensor<1>) {
        (
            self.norm.running_mean.value(),
            self.norm.running_var.value() + self.norm.epsilon,
        )
    }

    /// The same block with its BatchNorm (running statistics, inference mode) folded into the conv:
    /// `w' = w * gamma / sqrt(var + eps)`, `b' = beta - mean * gamma / sqrt(var + eps)`. One pass over
    /// the activations instead of several; for frozen, inference-only use (the result does not train
    /// the BatchNorm any more).
    pub fn fold_batch_norm(&self) -> Self {
        if self.folded {
            return self.clone();
        }
        let norm = &self.norm;
        let scale = norm.gamma.val() / (norm.running_var.value() + norm.epsilon).sqrt();
        let [channels_out, ..] = self.conv.weight.dims();
        let weight = self.conv.weight.val() * scale.clone().reshape([channels_out, 1, 1, 1]);
        let bias = norm.beta.val() - norm.running_mean.value() * scale;
        let mut conv = self.conv.clone();
        conv.weight = Param::from_tensor(weight).set_require_grad(false);
        conv.bias = Some(Param::from_tensor(bias).set_require_grad(false));
        Self {
            conv,
            norm: self.norm.clone(),
            activation: self.activation,
            tf_same: self.tf_same,
            folded: true,
            running_statistics: false,
        }
    }
}

/// An inverted residual block (MobileNetV2; EfficientNet's MBConv without squeeze-excitation).
#[derive(Config, Debug)]
pub struct InvertedResidualConfig {
    /// `[in, out]` channels.
    pub channels: [usize; 2],
    /// Expansion ratio of the hidden width; 1 means no expansion conv.
    pub expand_ratio: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
    /// Padding convention of the checkpoint.
    pub padding: Padding,
    /// BatchNorm epsilon of the checkpoint.
    pub bn_eps: f64,
}

/// Expand (1x1, ReLU6) -> depthwise (kxk, ReLU6) -> project (1x1, linear), plus the input when the
/// block keeps the shape.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    pub expand: Option<ConvBnAct>,
    pub depthwise: ConvBnAct,
    pub project: ConvBnAct,
    residual: bool,
}

impl InvertedResidualConfig {
    pub fn init(&self, device: &Device) -> InvertedResidual {
        let [input, output] = self.channels;
        let hidden = input * self.expand_ratio;
        let conv = |channels: [usize; 2], kernel: usize| {
            ConvBnActConfig::new(channels, kernel)
                .with_padding(self.padding)
                .with_bn_eps(self.bn_eps)
        };
        InvertedResidual {
            expand: (self.expand_ratio != 1).then(|| conv([input, hidden], 1).init(device)),
            depthwise: conv([hidden, hidden], self.kernel)
                .with_stride(self.stride)
                .with_groups(hidden)
                .init(device),
            project: conv([hidden, output], 1).with_activation(false).init(device),
            residual: self.stride == 1 && input == output,
        }
    }
}

impl InvertedResidual {
    /// The same block with every BatchNorm folded into its conv (see [`ConvBnAct::fold_batch_norm`]).
    pub fn fold_batch_norm(&self) -> Self {
        Self {
            expand: self.expand.as_ref().map(ConvBnAct::fold_batch_norm),
            depthwise: self.depthwise.fold_batch_norm(),
            project: self.project.fold_batch_norm(),
            residual: self.residual,
        }
    }

    /// Sets [`ConvBnAct::set_running_statistics`] on each of its BatchNorms.
    pub fn set_running_statistics(&mut self, running: bool) {
        for conv in self.convs_mut() {
            conv.set_running_statistics(running);
        }
    }

    /// Its convolutions in order (expand, depthwise, project).
    pub fn convs_mut(&mut self) -> Vec<&mut ConvBnAct> {
        self.expand
            .iter_mut()
            .chain([&mut self.depthwise, &mut self.project])
            .collect()
    }

    /// Whether the block adds its input to its output (stride 1, same width).
    pub fn has_residual(&self) -> bool {
        self.residual
    }

    /// Its convolutions in order (expand, depthwise, project).
    pub fn convs(&self) -> Vec<&ConvBnAct> {
        self.expand.iter().chain([&self.depthwise, &self.project]).collect()
    }

    /// [`forward`](Self::forward), probing each BatchNorm's input (see [`ConvBnAct::forward_probed`]).
    pub fn forward_probed(&self, x: Tensor<4>, probes: &mut Vec<Tensor<2>>) -> Tensor<4> {
        let hidden = match &self.expand {
            Some(expand) => expand.forward_probed(x.clone(), probes),
            None => x.clone(),
        };
        let out = self
            .project
            .forward_probed(self.depthwise.forward_probed(hidden, probes), probes);
        if self.residual { out + x } else { out }
    }

    /// # Shapes
    /// - `x`: `[batch, channels_in, height, width]` -> `[batch, channels_out, height / stride, width / stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let hidden = match &self.expand {
            Some(expand) => expand.forward(x.clone()),
            None => x.clone(),
        };
        let out = self.project.forward(self.depthwise.forward(hidden));
        if self.residual { out + x } else { out }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_puts_the_extra_padding_at_the_end() {
        assert_eq!(tf_same_padding(224, 3, 2), (0, 1));
        assert_eq!(tf_same_padding(56, 5, 2), (1, 2));
        assert_eq!(tf_same_padding(225, 3, 2), (1, 1));
        assert_eq!(tf_same_padding(7, 3, 1), (1, 1));
        assert_eq!(tf_same_padding(1, 5, 2), (2, 2));
    }

    #[test]
    fn strided_same_conv_halves_the_size_rounding_up() {
        let device = Device::flex();
        let block = ConvBnActConfig::new([3, 4], 3)
            .with_stride(2)
            .with_padding(Padding::TfSame)
            .init(&device);
        let out = block.forward(Tensor::zeros([1, 3, 15, 16], &device));
        assert_eq!(out.dims(), [1, 4, 8, 8]);
    }

    #[test]
    fn residual_only_when_the_shape_is_kept() {
        let device = Device::flex();
        let config = |channels, stride| {
            InvertedResidualConfig::new(channels, 6, 3, stride, Padding::Symmetric, 1e-5).init(&device)
        };
        assert!(config([16, 16], 1).residual);
        assert!(!config([16, 24], 1).residual);
        assert!(!config([16, 16], 2).residual);
        assert!(
            InvertedResidualConfig::new([32, 16], 1, 3, 1, Padding::Symmetric, 1e-5)
                .init(&device)
                .expand
                .is_none()
        );
    }
}
