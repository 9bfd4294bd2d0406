//! The image classifier both architectures share: stem -> inverted residual blocks -> 1x1 head conv ->
//! global average pooling -> dropout -> linear classifier, built from an architecture table.

use burn::module::{Flag, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Gradients;

use super::blocks::{ConvBnAct, ConvBnActConfig, InvertedResidual, InvertedResidualConfig, Padding};

/// One stage of inverted residual blocks: `repeats` blocks, the first with `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Expansion ratio `t`.
    pub expand_ratio: usize,
    /// Depthwise kernel size `k`.
    pub kernel: usize,
    /// Output channels `c`.
    pub channels: usize,
    /// Number of blocks `n`.
    pub repeats: usize,
    /// Stride `s` of the first block.
    pub stride: usize,
}

/// Everything that tells one architecture from the other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Architecture {
    pub stem_channels: usize,
    pub stages: &'static [Stage],
    pub head_channels: usize,
    pub padding: Padding,
    pub bn_eps: f64,
    /// Dropout before the classifier.
    pub dropout: f64,
}

impl Architecture {
    /// The number of inverted residual blocks.
    pub fn num_blocks(&self) -> usize {
        self.stages.iter().map(|stage| stage.repeats).sum()
    }

    /// The number of body blocks, the units of freezing: the stem, the inverted residual blocks and
    /// the head convolution.
    pub fn num_body_blocks(&self) -> usize {
        self.num_blocks() + 2
    }

    /// Floats in the largest activation one image makes at `input_size` px: the widest tensor any layer
    /// writes (an inverted residual's expansion at its input resolution, usually). A GPU buffer holds
    /// a whole batch of it, so a batch larger than `buffer limit / (4 x this)` cannot run there.
    pub fn largest_activation(&self, input_size: usize) -> usize {
        let mut side = input_size.div_ceil(2);
        let mut largest = self.stem_channels * side * side;
        let mut input = self.stem_channels;
        for stage in self.stages {
            for repeat in 0..stage.repeats {
                let expanded = input * stage.expand_ratio;
                largest = largest.max(expanded * side * side);
                if repeat == 0 && stage.stride > 1 {
                    side = side.div_ceil(stage.stride);
                }
                largest = largest.max(expanded * side * side).max(stage.channels * side * side);
                input = stage.channels;
            }
        }
        largest.max(self.head_channels * side * side)
    }

    /// Scalar parameters of the body (convolution weights, BatchNorm scales and shifts; no running
    /// statistics, no classifier): what a fine-tune can train besides the head. From the table
    /// alone, so the page can show it without building a model.
    pub fn body_parameters(&self) -> usize {
        let conv = |input: usize, output: usize, taps: usize| input * output * taps + 2 * output;
        let mut total = conv(3, self.stem_channels, 9);
        let mut input = self.stem_channels;
        for stage in self.stages {
            for _ in 0..stage.repeats {
                let hidden = input * stage.expand_ratio;
                if stage.expand_ratio != 1 {
                    total += conv(input, hidden, 1);
                }
                // Depthwise: one k x k filter per channel.
                total += conv(1, hidden, stage.kernel * stage.kernel);
                total += conv(hidden, stage.channels, 1);
                input = stage.channels;
            }
        }
        total + conv(input, self.head_channels, 1)
    }

    /// A randomly initialised classifier with `classes` outputs.
    pub fn init(&self, classes: usize, device: &Device) -> ImageClassifier {
        let conv = |channels, kernel| {
            ConvBnActConfig::new(channels, kernel)
                .with_padding(self.padding)
                .with_bn_eps(self.bn_eps)
        };
        let mut blocks = Vec::with_capacity(self.num_blocks());
        let mut input = self.stem_channels;
        for stage in self.stages {
            for repeat in 0..stage.repeats {
                let stride = if repeat == 0 { stage.stride } else { 1 };
                blocks.push(
                    InvertedResidualConfig::new(
                        [input, stage.channels],
                        stage.expand_ratio,
                        stage.kernel,
                        stride,
                        self.padding,
                        self.bn_eps,
                    )
                    .init(device),
                );
                input = stage.channels;
            }
        }
        ImageClassifier {
            stem: conv([3, self.stem_channels], 3).with_stride(2).init(device),
            blocks,
            head_conv: conv([input, self.head_channels], 1).init(device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(self.head_channels, classes).init(device),
        }
    }
}

/// One optimizer step on `module` with the gradients of `params` (ids within it) from `grads`.
pub(crate) fn step_module<M: Module>(
    module: &mut M,
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    grads: &mut Gradients,
    params: &[ParamId],
) {
    let params = GradientsParams::from_params(grads, module, params);
    if !params.is_empty() {
        *module = optimizer.step(lr, module.clone(), params);
    }
}

/// A body block by reference: the stem and head conv are conv-BN-ReLU6, the rest inverted residuals.
enum BodyBlock<'a> {
    Conv(&'a ConvBnAct),
    Residual(&'a InvertedResidual),
}

/// A pretrained-style CNN classifier. Its body is an ordered list of named blocks — `stem`,
/// `blocks.0` .. `blocks.N-1`, `head_conv` — the unit of freezing; `classifier` is the replaceable head.
#[derive(Module, Debug)]
pub struct ImageClassifier {
    pub stem: ConvBnAct,
    pub blocks: Vec<InvertedResidual>,
    pub head_conv: ConvBnAct,
    pool: AdaptiveAvgPool2d,
    dropout: Dropout,
    pub classifier: Linear,
}

impl ImageClassifier {
    /// Names of the body's blocks in order: `stem`, `blocks.0`, ..., `head_conv`.
    pub fn block_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.blocks.len() + 2);
        names.push("stem".to_string());
        names.extend((0..self.blocks.len()).map(|i| format!("blocks.{i}")));
        names.push("head_conv".to_string());
        names
    }

    /// The number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// The width of the pooled embedding.
    pub fn embedding_width(&self) -> usize {
        self.classifier.weight.dims()[0]
    }

    /// Body block `index` (0 = stem, last = head_conv). Panics when out of range (a bug: callers resolve
    /// indices through [`crate::freeze`]).
    fn body_block(&self, index: usize) -> BodyBlock<'_> {
        match index {
            0 => BodyBlock::Conv(&self.stem),
            i if i <= self.blocks.len() => BodyBlock::Residual(&self.blocks[i - 1]),
            i if i == self.blocks.len() + 1 => BodyBlock::Conv(&self.head_conv),
            i => panic!("block index {i} out of range for {} blocks", self.blocks.len() + 2),
        }
    }

    /// Runs body block `index` (0 = stem, last = head_conv).
    ///
    /// # Shapes
    /// - `x`: the previous block's output `[batch, channels, height, width]`
    pub fn forward_block(&self, index: usize, x: Tensor<4>) -> Tensor<4> {
        match self.body_block(index) {
            BodyBlock::Conv(block) => block.forward(x),
            BodyBlock::Residual(block) => block.forward(x),
        }
    }

    /// The convolutions of body block `index`, in order.
    pub fn block_convs(&self, index: usize) -> Vec<&ConvBnAct> {
        match self.body_block(index) {
            BodyBlock::Conv(block) => vec![block],
            BodyBlock::Residual(block) => block.convs(),
        }
    }

    /// The whole forward pass, also returning the pooled embeddings and, per body block, the probes of
    /// its BatchNorms' inputs (see [`ConvBnAct::forward_probed`]), in [`Self::block_convs`] order.
    ///
    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]` -> (logits `[batch, classes]`, embeddings
    ///   `[batch, head_channels]`, probes)
    pub fn forward_probed(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<2>, Vec<Vec<Tensor<2>>>) {
        let mut probes = Vec::with_capacity(self.blocks.len() + 2);
        let mut x = images;
        for index in 0..self.blocks.len() + 2 {
            let mut block_probes = Vec::new();
            x = match self.body_block(index) {
                BodyBlock::Conv(block) => block.forward_probed(x, &mut block_probes),
                BodyBlock::Residual(block) => block.forward_probed(x, &mut block_probes),
            };
            probes.push(block_probes);
        }
        let embeddings = self.pool.forward(x).flatten(1, 3);
        (self.classify(embeddings.clone()), embeddings, probes)
    }

    /// Freezes (`true`) or unfreezes body block `index` (0 = stem, last = head_conv). See
    /// [`crate::freeze`] for what frozen means.
    pub fn set_block_frozen(&mut self, index: usize, frozen: bool) {
        fn set<M: Module>(module: &mut M, frozen: bool) {
            let current = module.clone();
            *module = if frozen { current.freeze() } else { current.unfreeze() };
        }
        match index {
            0 => set(&mut self.stem, frozen),
            i if i <= self.blocks.len() => set(&mut self.blocks[i - 1], frozen),
            i if i == self.blocks.len() + 1 => set(&mut self.head_conv, frozen),
            i => panic!("block index {i} out of range for {} blocks", self.blocks.len() + 2),
        }
    }

    /// Whether body block `index` is frozen. Read from its BatchNorms' training flags, which
    /// `freeze`/`unfreeze` set together with the gradient requirement and which, unlike that
    /// requirement, are visible on a device without autodiff too.
    pub fn block_is_frozen(&self, index: usize) -> bool {
        fn frozen<M: Module>(module: &M) -> bool {
            struct Flags {
                enabled: usize,
                total: usize,
            }
            impl ModuleVisitor for Flags {
                fn visit_flag(&mut self, flag: &Param<Flag>) {
                    self.total += 1;
                    self.enabled += usize::from(flag.is_enabled());
                }
            }
            let mut flags = Flags { enabled: 0, total: 0 };
            module.visit(&mut flags);
            flags.total > 0 && flags.enabled == 0
        }
        match self.body_block(index) {
            BodyBlock::Conv(block) => frozen(block),
            BodyBlock::Residual(block) => frozen(block),
        }
    }

    /// Visits body block `index`'s parameters and statistics.
    pub fn visit_block<V: ModuleVisitor>(&self, index: usize, visitor: &mut V) {
        match self.body_block(index) {
            BodyBlock::Conv(block) => block.visit(visitor),
            BodyBlock::Residual(block) => block.visit(visitor),
        }
    }

    /// Maps body block `index`'s parameters and statistics with `mapper`.
    pub fn map_block<M: ModuleMapper>(&mut self, index: usize, mapper: &mut M) {
        fn map<T: Module, M: ModuleMapper>(module: &mut T, mapper: &mut M) {
            *module = module.clone().map(mapper);
        }
        match index {
            0 => map(&mut self.stem, mapper),
            i if i <= self.blocks.len() => map(&mut self.blocks[i - 1], mapper),
            i if i == self.blocks.len() + 1 => map(&mut self.head_conv, mapper),
            i => panic!("block index {i} out of range for {} blocks", self.blocks.len() + 2),
        }
    }

    /// One optimizer step on body block `index` alone: takes the gradients of `params` (ids within the
    /// block) out of `grads` and updates only that block, so that a step costs what the block costs,
    /// not a pass over the whole model.
    pub fn step_block(
        &mut self,
        index: usize,
        optimizer: &mut ModuleOptimizer,
        lr: f64,
        grads: &mut Gradients,
        params: &[ParamId],
    ) {
        match index {
            0 => step_module(&mut self.stem, optimizer, lr, grads, params),
            i if i <= self.blocks.len() => step_module(&mut self.blocks[i - 1], optimizer, lr, grads, params),
            i if i == self.blocks.len() + 1 => step_module(&mut self.head_conv, optimizer, lr, grads, params),
            i => panic!("block index {i} out of range for {} blocks", self.blocks.len() + 2),
        }
    }

    /// Takes the gradients of body block `index`'s parameters out of `grads`.
    pub fn block_gradients(&self, index: usize, grads: &mut Gradients) -> GradientsParams {
        match self.body_block(index) {
            BodyBlock::Conv(block) => GradientsParams::from_module(grads, block),
            BodyBlock::Residual(block) => GradientsParams::from_module(grads, block),
        }
    }

    /// How many leading body blocks are frozen.
    pub fn frozen_prefix_len(&self) -> usize {
        (0..self.blocks.len() + 2)
            .take_while(|&index| self.block_is_frozen(index))
            .count()
    }

    /// Runs the leading frozen blocks without autodiff — on the plain device, BatchNorm on its running
    /// statistics — and returns the activation at the boundary with the input's autodiff context, as a
    /// constant: no graph is recorded through the frozen prefix, so its memory does not grow with it.
    /// Also returns the number of blocks run.
    ///
    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]` -> the boundary activation
    pub fn forward_frozen_prefix(&self, images: Tensor<4>) -> (Tensor<4>, usize) {
        let prefix = self.frozen_prefix_len();
        if prefix == 0 {
            return (images, 0);
        }
        let autodiff = images.is_autodiff();
        let mut x = images.without_autodiff();
        for index in 0..prefix {
            x = match self.body_block(index) {
                BodyBlock::Conv(block) => block.valid().forward(x),
                BodyBlock::Residual(block) => block.valid().forward(x),
            };
        }
        (if autodiff { x.autodiff() } else { x }, prefix)
    }

    /// Logits from the activation after block `start - 1` (i.e. runs blocks `start..` and the head).
    ///
    /// # Shapes
    /// - `x`: the activation entering block `start` -> `[batch, classes]`
    pub fn forward_from(&self, start: usize, x: Tensor<4>) -> Tensor<2> {
        self.classify(self.embeddings_from(start, x))
    }

    /// [`Self::forward_from`] for a training step, with its dropout mask drawn from `seed` rather
    /// than the device's random numbers (one stream for the whole process, which other threads and
    /// a resumed run would draw from differently): the step's numbers depend on the step alone.
    ///
    /// # Shapes
    /// - `x`: the activation entering block `start` -> `[batch, classes]`
    pub fn forward_from_seeded(&self, start: usize, x: Tensor<4>, seed: u64) -> Tensor<2> {
        let embeddings = self.embeddings_from(start, x);
        let [images, width] = embeddings.dims();
        let p = self.dropout_probability();
        let mut rng = crate::data::Rng::new(seed);
        let keep = (1.0 / (1.0 - p)) as f32;
        let mask: Vec<f32> = (0..images * width)
            .map(|_| if rng.unit() < p { 0.0 } else { keep })
            .collect();
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [images, width]), &embeddings.device());
        self.classifier.forward(embeddings * mask)
    }

    /// Pooled embeddings from the activation after block `start - 1` (blocks `start..`, pooling).
    ///
    /// # Shapes
    /// - `x`: the activation entering block `start` -> `[batch, embedding width]`
    pub fn embeddings_from(&self, start: usize, x: Tensor<4>) -> Tensor<2> {
        let x = (start..self.blocks.len() + 2).fold(x, |x, index| self.forward_block(index, x));
        self.pool.forward(x).flatten(1, 3)
    }

    /// The probability with which dropout zeroes an embedding's value before the classifier.
    pub fn dropout_probability(&self) -> f64 {
        self.dropout.prob
    }

    /// Runs the first `count` body blocks as they are (for a frozen prefix on a plain device: inference
    /// mode), returning the activation entering block `count`.
    ///
    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]` -> the activation after block `count - 1`
    pub fn forward_prefix(&self, count: usize, images: Tensor<4>) -> Tensor<4> {
        (0..count).fold(images, |x, index| self.forward_block(index, x))
    }

    /// The training forward pass: the frozen prefix without a graph, the rest with one.
    ///
    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]` -> logits `[batch, classes]`
    pub fn forward_train(&self, images: Tensor<4>) -> Tensor<2> {
        let (boundary, start) = self.forward_frozen_prefix(images);
        self.forward_from(start, boundary)
    }

    /// The body's output feature map.
    ///
    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]` -> `[batch, head_channels, height / 32, width / 32]`
    pub fn feature_map(&self, images: Tensor<4>) -> Tensor<4> {
        (0..self.blocks.len() + 2).fold(images, |x, index| self.forward_block(index, x))
    }

    /// The pooled embedding the classifier sees.
    ///
    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]` -> `[batch, head_channels]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.pool.forward(self.feature_map(images)).flatten(1, 3)
    }

    /// Logits from pooled embeddings (dropout applies when training).
    ///
    /// # Shapes
    /// - `embeddings`: `[batch, head_channels]` -> `[batch, classes]`
    pub fn classify(&self, embeddings: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(self.dropout.forward(embeddings))
    }

    /// Logits from pooled embeddings without dropout, in training too.
    ///
    /// # Shapes
    /// - `embeddings`: `[batch, head_channels]` -> `[batch, classes]`
    pub fn classify_without_dropout(&self, embeddings: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(embeddings)
    }

    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]` -> logits `[batch, classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.classify(self.features(images))
    }

    /// An inference copy with every BatchNorm folded into its conv: the same outputs (to float
    /// rounding) with fewer passes over the activations. Use it to compute embeddings of a frozen base.
    pub fn folded_for_inference(&self) -> Self {
        Self {
            stem: self.stem.fold_batch_norm(),
            blocks: self.blocks.iter().map(InvertedResidual::fold_batch_norm).collect(),
            head_conv: self.head_conv.fold_batch_norm(),
            pool: self.pool.clone(),
            dropout: self.dropout.clone(),
            classifier: self.classifier.clone(),
        }
    }

    /// Whether every BatchNorm, while its block trains, normalises with its running statistics
    /// (leaving them as they are) rather than each batch's; see
    /// [`BatchNormStatistics`](crate::train::BatchNormStatistics). Frozen blocks always use them.
    pub fn set_running_statistics(&mut self, running: bool) {
        self.stem.set_running_statistics(running);
        for block in &mut self.blocks {
            block.set_running_statistics(running);
        }
        self.head_conv.set_running_statistics(running);
    }

    /// The BatchNorms' momentum (all have the one [`Self::set_batch_norm_momentum`] set).
    pub fn batch_norm_momentum(&self) -> f64 {
        self.stem.norm.momentum
    }

    /// Sets every BatchNorm's momentum: how far one training batch moves its running statistics.
    pub fn set_batch_norm_momentum(&mut self, momentum: f64) {
        let mut convs: Vec<&mut ConvBnAct> = vec![&mut self.stem, &mut self.head_conv];
        for block in &mut self.blocks {
            convs.extend(block.convs_mut());
        }
        for conv in convs {
            conv.norm.momentum = momentum;
        }
    }

    /// The same body with a new, randomly initialised head for `classes` classes.
    pub fn with_classes(mut self, classes: usize) -> Self {
        let device = self.classifier.weight.device();
        self.classifier = LinearConfig::new(self.embedding_width(), classes).init(&device);
        self
    }
}
