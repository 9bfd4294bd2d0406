//! A small conv net whose first block is frozen trains a few steps with AdamW; the report says what
//! changed. This is the foundation's end-to-end check that Burn trains on a device at all and that
//! `Module::freeze` means what Graft needs it to mean (no gradient, no optimizer state, BatchNorm on its
//! running statistics).

use burn::module::{ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d,
    conv::{Conv2d, Conv2dConfig},
};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use graft_engine::readback::{self, ReadbackError};

/// Conv -> BatchNorm -> ReLU.
#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    norm: BatchNorm,
}

impl ConvBlock {
    fn new(channels_in: usize, channels_out: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([channels_in, channels_out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            norm: BatchNormConfig::new(channels_out).init(device),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, channels_in, height, width]` -> `[batch, channels_out, height, width]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.norm.forward(self.conv.forward(x)))
    }
}

/// Two conv blocks, global average pooling and a linear head.
#[derive(Module, Debug)]
pub struct SmallConvNet {
    stem: ConvBlock,
    body: ConvBlock,
    pool: AdaptiveAvgPool2d,
    head: Linear,
}

impl SmallConvNet {
    /// A freshly initialised net for `classes` classes on `device`.
    pub fn new(classes: usize, device: &Device) -> Self {
        Self {
            stem: ConvBlock::new(3, 8, device),
            body: ConvBlock::new(8, 16, device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(16, classes).init(device),
        }
    }

    /// # Shapes
    /// - `images`: `[batch, 3, height, width]` -> logits `[batch, classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.body.forward(self.stem.forward(images));
        let pooled: Tensor<2> = self.pool.forward(x).flatten(1, 3);
        self.head.forward(pooled)
    }
}

/// What [`run`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct FrozenPrefixReport {
    /// Loss before each step, then after the last one (`steps + 1` values).
    pub losses: Vec<f32>,
    /// The frozen stem's conv weights, bias and BatchNorm affine parameters are identical bit for bit.
    pub frozen_params_bit_identical: bool,
    /// The frozen stem's BatchNorm running mean and variance are identical bit for bit.
    pub frozen_running_stats_unchanged: bool,
    /// Largest absolute change of any head parameter.
    pub head_max_change: f32,
    /// Largest absolute change of any parameter of the trainable body block.
    pub body_max_change: f32,
    /// The body's BatchNorm running statistics moved (it trains, so it takes the training path).
    pub body_running_stats_changed: bool,
    /// Parameter tensors that require a gradient with the stem frozen.
    pub trainable_param_tensors: usize,
    /// Parameter tensors that require a gradient in the same net with nothing frozen.
    pub trainable_param_tensors_unfrozen: usize,
    /// Whether the gradients held an entry for any frozen parameter.
    pub frozen_params_got_gradients: bool,
}

/// How many tensors AdamW keeps after training the net with the stem frozen, and with nothing frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptimizerStateSizes {
    pub frozen_stem: usize,
    pub unfrozen: usize,
}

/// Deterministic two-class images: class 0 has vertical stripes, class 1 horizontal ones, with a
/// per-image phase and contrast so that the batch is not trivially constant.
///
/// # Shapes
/// - images: `[batch, 3, size, size]`, labels: `[batch]`
pub fn striped_batch(batch: usize, size: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let mut pixels = Vec::with_capacity(batch * 3 * size * size);
    let mut labels = Vec::with_capacity(batch);
    for image in 0..batch {
        let class = image % 2;
        let phase = image / 2;
        let contrast = 0.5 + 0.1 * (image % 5) as f32;
        for channel in 0..3 {
            for row in 0..size {
                for col in 0..size {
                    let along = if class == 0 { col } else { row };
                    let on = (along + phase) % 4 < 2;
                    let value = if on { contrast } else { -contrast };
                    pixels.push(value + 0.05 * channel as f32);
                }
            }
        }
        labels.push(class as i64);
    }
    let images = Tensor::from_data(TensorData::new(pixels, [batch, 3, size, size]), device);
    let labels = Tensor::from_data(TensorData::new(labels, [batch]), device);
    (images, labels)
}

/// Collects the gradient-requiring state of every float parameter.
/// Counts the float parameters that require a gradient (BatchNorm running statistics never do).
fn trainable_param_tensors<M: Module>(module: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 += usize::from(param.is_require_grad());
        }
    }
    let mut count = Count(0);
    module.visit(&mut count);
    count.0
}

async fn running_stats(norm: &BatchNorm) -> Result<Vec<f32>, ReadbackError> {
    let mut stats = readback::to_f32_vec(norm.running_mean.value()).await?;
    stats.extend(readback::to_f32_vec(norm.running_var.value()).await?);
    Ok(stats)
}

fn bit_identical(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()))
}

fn max_change(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max)
}

/// Trains `steps` AdamW steps on `device` (an autodiff device) with the stem frozen and reports what
/// changed. Seeded: the same device kind gives the same numbers.
pub async fn run(device: &Device, steps: usize) -> Result<FrozenPrefixReport, ReadbackError> {
    assert!(device.is_autodiff(), "frozen_prefix::run needs an autodiff device");
    device.seed(7);
    let (images, labels) = striped_batch(8, 16, device);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let learning_rate = 2e-2;

    let trainable_param_tensors_unfrozen = trainable_param_tensors(&SmallConvNet::new(2, device));
    let mut model = SmallConvNet::new(2, device);
    model.stem = model.stem.freeze();
    let trainable_param_tensors = trainable_param_tensors(&model);

    let stem_before = crate::module_floats(&model.stem).await?;
    let stem_stats_before = running_stats(&model.stem.norm).await?;
    let body_before = crate::module_floats(&model.body).await?;
    let body_stats_before = running_stats(&model.body.norm).await?;
    let head_before = crate::module_floats(&model.head).await?;

    let mut optimizer = AdamWConfig::new().init();
    let mut losses = Vec::with_capacity(steps + 1);
    let mut frozen_params_got_gradients = false;
    for _ in 0..steps {
        let loss = loss_fn.forward(model.forward(images.clone()), labels.clone());
        losses.push(readback::scalar_f32(loss.clone()).await?);
        let mut grads = loss.backward();
        frozen_params_got_gradients |=
            model.stem.conv.weight.grad(&grads).is_some() || model.stem.norm.gamma.grad(&grads).is_some();
        let grads = GradientsParams::from_module(&mut grads, &model);
        model = optimizer.step(learning_rate, model, grads);
    }
    let loss = loss_fn.forward(model.forward(images), labels);
    losses.push(readback::scalar_f32(loss).await?);

    Ok(FrozenPrefixReport {
        losses,
        frozen_params_bit_identical: bit_identical(&stem_before, &crate::module_floats(&model.stem).await?),
        frozen_running_stats_unchanged: stem_stats_before == running_stats(&model.stem.norm).await?,
        head_max_change: max_change(&head_before, &crate::module_floats(&model.head).await?),
        body_max_change: max_change(&body_before, &crate::module_floats(&model.body).await?),
        body_running_stats_changed: body_stats_before != running_stats(&model.body.norm).await?,
        trainable_param_tensors,
        trainable_param_tensors_unfrozen,
        frozen_params_got_gradients,
    })
}

/// Trains one step with the stem frozen and one with nothing frozen and counts the optimizer's state
/// tensors. Reads the state back synchronously (Burn's `ModuleOptimizer::to_record`), so it runs on the
/// CPU backend only; the bookkeeping it checks does not depend on the device.
pub fn optimizer_state_sizes(device: &Device) -> OptimizerStateSizes {
    assert!(device.is_autodiff(), "optimizer_state_sizes needs an autodiff device");
    let (images, labels) = striped_batch(4, 8, device);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let state_after_one_step = |model: SmallConvNet| {
        let mut optimizer = AdamWConfig::new().init();
        let loss = loss_fn.forward(model.forward(images.clone()), labels.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let _model = optimizer.step(1e-2, model, grads);
        optimizer.to_record().len()
    };
    let mut frozen = SmallConvNet::new(2, device);
    frozen.stem = frozen.stem.freeze();
    OptimizerStateSizes {
        frozen_stem: state_after_one_step(frozen),
        unfrozen: state_after_one_step(SmallConvNet::new(2, device)),
    }
}

/// The assertions every device must pass; shared by the native and browser tests so that they cannot
/// drift apart. Panics with the report on failure.
pub fn assert_frozen_prefix_behaviour(report: &FrozenPrefixReport) {
    let first = report.losses[0];
    let last = *report.losses.last().expect("losses are never empty");
    assert!(
        report.losses.iter().all(|l| l.is_finite()),
        "non-finite loss: {report:#?}"
    );
    assert!(last < first * 0.9, "loss did not go down by 10%: {report:#?}");
    assert!(
        report.frozen_params_bit_identical,
        "frozen parameters changed: {report:#?}"
    );
    assert!(
        report.frozen_running_stats_unchanged,
        "frozen BatchNorm running stats changed: {report:#?}"
    );
    assert!(
        !report.frozen_params_got_gradients,
        "a frozen parameter got a gradient: {report:#?}"
    );
    assert!(report.head_max_change > 1e-4, "the head did not train: {report:#?}");
    assert!(
        report.body_max_change > 1e-4,
        "the trainable body did not train: {report:#?}"
    );
    assert!(
        report.body_running_stats_changed,
        "the trainable BatchNorm kept its stats: {report:#?}"
    );
    // The stem's conv weight + bias and BatchNorm gamma + beta are frozen; body (4) and head (2) train.
    assert_eq!(
        (report.trainable_param_tensors, report.trainable_param_tensors_unfrozen),
        (6, 10),
        "{report:#?}"
    );
}

/// AdamW keeps the same number of state tensors for every parameter it holds, so with 6 of 10 parameter
/// tensors trainable its state must be exactly 6/10 of the unfrozen net's.
pub fn assert_optimizer_holds_only_trainable(sizes: OptimizerStateSizes) {
    assert!(sizes.unfrozen > 0, "{sizes:?}");
    assert_eq!(
        sizes.frozen_stem * 10,
        sizes.unfrozen * 6,
        "optimizer holds state for frozen parameters: {sizes:?}"
    );
}
