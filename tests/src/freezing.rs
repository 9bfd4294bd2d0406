//! Freezing on MobileNetV2 (random init, 64 px) through the engine's API, as an async scenario so that it
//! runs on WebGPU in the browser: the first blocks frozen, a few AdamW steps with `forward_train`.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use graft_engine::freeze;
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::readback::{self, ReadbackError};

/// What [`run`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct FreezingReport {
    pub losses: Vec<f32>,
    /// Blocks 0..frozen of the body were frozen.
    pub frozen: usize,
    /// Every float of the frozen blocks (parameters and BatchNorm statistics) is bit-identical.
    pub frozen_bit_identical: bool,
    /// Largest change of any float in the first trainable block.
    pub trainable_max_change: f32,
    pub frozen_block_got_gradient: bool,
    /// The activation at the freeze boundary carries no autodiff graph.
    pub boundary_untracked: bool,
}

/// Every float of the stem and the next `frozen - 1` blocks (the frozen prefix), flattened.
async fn prefix_floats(model: &ImageClassifier, frozen: usize) -> Result<Vec<f32>, ReadbackError> {
    let mut all: Vec<f32> = crate::module_floats(&model.stem).await?.concat();
    for block in &model.blocks[..frozen - 1] {
        all.extend(crate::module_floats(block).await?.concat());
    }
    Ok(all)
}

/// Freezes the first `frozen` blocks and trains `steps` steps on `device` (an autodiff device).
pub async fn run(device: &Device, frozen: usize, steps: usize) -> Result<FreezingReport, ReadbackError> {
    device.seed(11);
    let mut model = ModelKind::MobileNetV2.architecture().init(1000, device).with_classes(3);
    freeze::freeze_to(&mut model, frozen).expect("frozen <= block count");
    let images = Tensor::<4>::random([4, 3, 64, 64], Distribution::Normal(0.0, 1.0), device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 1], [4]), device);
    let loss_fn = CrossEntropyLossConfig::new().init(device);

    let frozen_before = prefix_floats(&model, frozen).await?;
    let trainable_before = crate::module_floats(&model.blocks[frozen - 1]).await?.concat();
    let (boundary, _) = model.forward_frozen_prefix(images.clone());
    let boundary_untracked = !boundary.is_tracked();

    let mut optimizer = AdamWConfig::new().init();
    let mut losses = Vec::new();
    let mut frozen_block_got_gradient = false;
    for _ in 0..steps {
        let loss = loss_fn.forward(model.forward_train(images.clone()), labels.clone());
        losses.push(readback::scalar_f32(loss.clone()).await?);
        let mut grads = loss.backward();
        frozen_block_got_gradient |= model.stem.conv.weight.grad(&grads).is_some();
        let grads = GradientsParams::from_module(&mut grads, &model);
        model = optimizer.step(1e-3, model, grads);
    }
    let frozen_after = prefix_floats(&model, frozen).await?;
    let trainable_after = crate::module_floats(&model.blocks[frozen - 1]).await?.concat();
    Ok(FreezingReport {
        losses,
        frozen,
        frozen_bit_identical: frozen_before.len() == frozen_after.len()
            && frozen_before
                .iter()
                .zip(&frozen_after)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
        trainable_max_change: trainable_before
            .iter()
            .zip(&trainable_after)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max),
        frozen_block_got_gradient,
        boundary_untracked,
    })
}

pub fn assert_freezing_behaviour(report: &FreezingReport) {
    assert!(report.losses.iter().all(|l| l.is_finite()), "{report:?}");
    assert!(report.frozen_bit_identical, "frozen blocks changed: {report:?}");
    assert!(
        !report.frozen_block_got_gradient,
        "a frozen block got a gradient: {report:?}"
    );
    assert!(
        report.trainable_max_change > 1e-6,
        "the first trainable block did not train: {report:?}"
    );
    assert!(
        report.boundary_untracked,
        "a graph was recorded through the frozen prefix: {report:?}"
    );
}
