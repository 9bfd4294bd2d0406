//! Freezing on a real architecture (MobileNetV2, randomly initialised, small inputs), natively on the
//! CPU backend: addressing, and what frozen means during training.

use burn::module::{ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use graft_engine::freeze::{self, FreezeError};
use graft_engine::model::{ImageClassifier, ModelKind};

fn model(device: &Device) -> ImageClassifier {
    ModelKind::MobileNetV2.architecture().init(1000, device).with_classes(3)
}

/// Every float of a module (parameters and BatchNorm running statistics), read back.
fn values<M: Module>(module: &M) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = pollster::block_on(param.val().into_data_async()).expect("read-back");
            self.0.push(data.convert::<f32>().try_into_vec::<f32>().expect("f32"));
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

fn identical(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()))
}

#[test]
fn blocks_are_addressed_by_name_index_and_prefix() {
    let device = Device::flex();
    let mut model = model(&device);
    assert_eq!(model.block_names().len(), 19);
    assert_eq!(freeze::frozen_blocks(&model), vec![false; 19]);

    freeze::freeze(&mut model, &["stem", "blocks.0"]).unwrap();
    assert_eq!(model.frozen_prefix_len(), 2);
    freeze::freeze_idx(&mut model, &[-1]).unwrap();
    let frozen = freeze::frozen_blocks(&model);
    assert!(frozen[0] && frozen[1] && frozen[18] && !frozen[2], "{frozen:?}");
    freeze::unfreeze_idx(&mut model, &[-1, 0]).unwrap();
    assert_eq!(freeze::frozen_blocks(&model).iter().filter(|f| **f).count(), 1);
    assert_eq!(model.frozen_prefix_len(), 0, "stem unfrozen: no frozen prefix");

    freeze::freeze_to(&mut model, 5).unwrap();
    let expected: Vec<bool> = (0..19).map(|i| i < 5).collect();
    assert_eq!(freeze::frozen_blocks(&model), expected);
    freeze::unfreeze(&mut model, &["blocks.2"]).unwrap();
    assert_eq!(model.frozen_prefix_len(), 3);
    freeze::freeze_to(&mut model, 19).unwrap();
    let mut training = self::model(&Device::flex().autodiff());
    freeze::freeze_to(&mut training, 19).unwrap();
    assert_eq!(
        freeze::trainable_params(&training),
        1280 * 3 + 3,
        "only the head trains"
    );
    freeze::freeze_to(&mut model, 0).unwrap();
    assert_eq!(freeze::frozen_blocks(&model), vec![false; 19]);
}

#[test]
fn bad_addresses_are_typed_errors_and_change_nothing() {
    let device = Device::flex();
    let mut model = model(&device);
    let error = freeze::freeze(&mut model, &["stem", "block.3"]).unwrap_err();
    assert!(
        matches!(&error, FreezeError::UnknownBlock { name, .. } if name == "block.3"),
        "{error}"
    );
    assert!(
        error.to_string().contains("blocks.3"),
        "the message lists the real names: {error}"
    );
    assert_eq!(
        freeze::frozen_blocks(&model),
        vec![false; 19],
        "the valid name before the bad one was not applied"
    );

    assert_eq!(
        freeze::freeze_idx(&mut model, &[19]).unwrap_err(),
        FreezeError::IndexOutOfRange { index: 19, count: 19 }
    );
    assert_eq!(
        freeze::unfreeze_idx(&mut model, &[-20]).unwrap_err(),
        FreezeError::IndexOutOfRange { index: -20, count: 19 }
    );
    assert_eq!(
        freeze::freeze_to(&mut model, 20).unwrap_err(),
        FreezeError::TooManyBlocks { k: 20, count: 19 }
    );
    assert_eq!(
        freeze::resolve_indices(19, &[0, -1, -19, 18]).unwrap(),
        vec![0, 18, 0, 18]
    );
}

#[test]
fn frozen_blocks_do_not_change_while_the_rest_trains() {
    let device = Device::flex().autodiff();
    device.seed(3);
    let mut model = model(&device);
    freeze::freeze_to(&mut model, 4).unwrap();
    let images = Tensor::<4>::random([4, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 1], [4]), &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);

    let frozen_before = values(&model.blocks[2]);
    let stem_before = values(&model.stem);
    let trainable_before = values(&model.blocks[10]);
    let mut optimizer = AdamWConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..3 {
        let loss = loss_fn.forward(model.forward_train(images.clone()), labels.clone());
        losses.push(
            pollster::block_on(loss.clone().into_data_async())
                .unwrap()
                .try_to_vec::<f32>()
                .unwrap()[0],
        );
        let mut grads = loss.backward();
        assert!(
            model.stem.conv.weight.grad(&grads).is_none(),
            "a frozen block got a gradient"
        );
        assert!(
            model.blocks[10].depthwise.conv.weight.grad(&grads).is_some(),
            "a trainable block got none"
        );
        let grads = GradientsParams::from_module(&mut grads, &model);
        model = optimizer.step(1e-3, model, grads);
    }
    assert!(identical(&stem_before, &values(&model.stem)), "the frozen stem changed");
    assert!(
        identical(&frozen_before, &values(&model.blocks[2])),
        "frozen block 2 (incl. BatchNorm stats) changed"
    );
    assert!(
        !identical(&trainable_before, &values(&model.blocks[10])),
        "trainable block 10 did not change"
    );
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");

    // AdamW keeps two moments per parameter tensor it holds: only the trainable ones.
    let trainable_tensors = {
        struct Count(usize);
        impl ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0 += usize::from(param.is_require_grad());
            }
        }
        let mut count = Count(0);
        model.visit(&mut count);
        count.0
    };
    assert_eq!(optimizer.to_record().len(), 2 * trainable_tensors);
}

#[test]
fn the_frozen_prefix_runs_without_an_autodiff_graph_and_gives_the_same_values() {
    let device = Device::flex().autodiff();
    device.seed(5);
    let mut model = model(&device);
    let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);

    let (boundary, start) = model.forward_frozen_prefix(images.clone());
    assert_eq!(start, 0, "nothing frozen: nothing skipped");
    assert!(boundary.is_autodiff());

    freeze::freeze_to(&mut model, 6).unwrap();
    let (boundary, start) = model.forward_frozen_prefix(images.clone());
    assert_eq!(start, 6);
    assert!(boundary.is_autodiff(), "the boundary keeps the training context");
    assert!(
        !boundary.is_tracked(),
        "no graph was recorded through the frozen prefix"
    );
    // Even from a tracked input — through which running the frozen blocks on the training device would
    // record a graph — the prefix records none.
    let tracked = images.clone().require_grad();
    assert!(
        model.stem.forward(tracked.clone()).is_tracked(),
        "the naive path records a graph"
    );
    let (boundary, _) = model.forward_frozen_prefix(tracked);
    assert!(
        !boundary.is_tracked(),
        "the frozen prefix recorded a graph from a tracked input"
    );

    // With the whole body frozen, the training forward equals inference (BatchNorm on running stats);
    // only the dropout before the head differs, so compare the features.
    freeze::freeze_to(&mut model, 19).unwrap();
    let (boundary, start) = model.forward_frozen_prefix(images.clone());
    assert_eq!(start, 19);
    let train_features: Tensor<2> = boundary.mean_dim(2).mean_dim(3).flatten(1, 3);
    let valid_features = model.valid().features(images.without_autodiff());
    let a = pollster::block_on(train_features.into_data_async())
        .unwrap()
        .try_to_vec::<f32>()
        .unwrap();
    let b = pollster::block_on(valid_features.into_data_async())
        .unwrap()
        .try_to_vec::<f32>()
        .unwrap();
    let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-5, "frozen-prefix features differ from inference by {max}");
}

#[test]
fn unfreezing_resumes_training() {
    let device = Device::flex().autodiff();
    device.seed(9);
    let mut model = model(&device);
    freeze::freeze_to(&mut model, 19).unwrap();
    freeze::unfreeze(&mut model, &["head_conv"]).unwrap();
    let before = values(&model.head_conv);
    let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device);
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(model.forward_train(images), labels);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = AdamWConfig::new().init().step(1e-3, model, grads);
    assert!(
        !identical(&before, &values(&model.head_conv)),
        "the unfrozen head_conv did not train"
    );
}

#[test]
fn each_block_moves_by_its_own_learning_rate() {
    use graft_engine::optim::{BlockwiseOptimizer, OptimizerKind};
    use graft_engine::strategy::Phase;

    let device = Device::flex().autodiff();
    device.seed(13);
    let mut model = model(&device);
    // The last four blocks train at 1e-5 .. 1e-2; the head at 1e-2.
    let phase = Phase {
        name: "joint",
        epochs: 1,
        frozen_blocks: 15,
        head_lr: 1e-2,
        block_lrs: vec![1e-5, 1e-4, 1e-3, 1e-2],
        cache_embeddings: false,
    };
    freeze::freeze_to(&mut model, phase.frozen_blocks).unwrap();
    // A conv weight of body block `index` (15..=17 are inverted residuals, 18 is head_conv).
    let conv_weight = |model: &ImageClassifier, index: usize| {
        let weight = match index {
            18 => model.head_conv.conv.weight.val(),
            i => model.blocks[i - 1].depthwise.conv.weight.val(),
        };
        pollster::block_on(weight.into_data_async())
            .unwrap()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let before: Vec<Vec<f32>> = (15..19).map(|i| conv_weight(&model, i)).collect();
    let images = Tensor::<4>::random([4, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 1], [4]), &device);
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(model.forward_train(images), labels);
    let mut optimizer = BlockwiseOptimizer::for_phase(&phase, &OptimizerKind::AdamW { weight_decay: 0.0 }, &model);
    let model = optimizer.step(model, loss.backward(), 1.0);

    // AdamW's first step moves each element by about its rate (m / sqrt(v) = sign of the gradient).
    for (offset, lr) in phase.block_lrs.iter().enumerate() {
        let after = conv_weight(&model, 15 + offset);
        let max = before[offset]
            .iter()
            .zip(&after)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max) as f64;
        assert!(
            max > 0.5 * lr && max < 1.5 * lr,
            "block {}: moved {max}, rate {lr}",
            15 + offset
        );
    }
    assert_eq!(optimizer.learning_rates().last(), Some(&(None, 1e-2)));
}

#[test]
fn weight_decay_shrinks_weights_but_not_biases_or_norms() {
    use graft_engine::optim::{BlockwiseOptimizer, OptimizerKind};
    use graft_engine::strategy::Phase;

    let device = Device::flex().autodiff();
    device.seed(17);
    let mut model = model(&device);
    let phase = Phase {
        name: "train",
        epochs: 1,
        frozen_blocks: 18,
        head_lr: 0.1,
        block_lrs: vec![0.1],
        cache_embeddings: false,
    };
    freeze::freeze_to(&mut model, phase.frozen_blocks).unwrap();
    let read = |t: Tensor<1>| {
        pollster::block_on(t.into_data_async())
            .unwrap()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let head_conv = |m: &ImageClassifier| {
        (
            read(m.head_conv.conv.weight.val().flatten(0, 3)),
            read(m.head_conv.norm.gamma.val()),
            read(m.classifier.bias.as_ref().unwrap().val()),
        )
    };
    let (weight, gamma, bias) = head_conv(&model);
    // A loss with zero gradient: only weight decay moves anything.
    let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let loss = model.forward_train(images).sum().mul_scalar(0.0);
    let mut optimizer = BlockwiseOptimizer::for_phase(&phase, &OptimizerKind::AdamW { weight_decay: 0.5 }, &model);
    let model = optimizer.step(model, loss.backward(), 1.0);
    let (weight_after, gamma_after, bias_after) = head_conv(&model);
    // AdamW's decoupled decay: w <- w * (1 - lr * decay) = w * 0.95.
    let ratio = weight_after[0] / weight[0];
    assert!((ratio - 0.95).abs() < 1e-4, "weights decay: ratio {ratio}");
    assert_eq!(gamma, gamma_after, "BatchNorm scales are not decayed");
    assert_eq!(bias, bias_after, "biases are not decayed");
}
