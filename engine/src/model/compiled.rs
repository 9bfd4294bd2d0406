//! A frozen classifier compiled for the hand-written CPU kernels of `graft-kernels`: its weights read
//! once to the host, laid out for NHWC (1x1 convolutions as packed matrix products, depthwise filters
//! tap-major, the stem for im2col), BatchNorm folded into each convolution. It runs one image at a
//! time through the whole body, so that an image's activations stay in the caches.
//!
//! Why: in wasm, Burn's CPU backend is single-threaded and its matrix products (the `gemm` crate)
//! reach about 5 GMAC/s on MobileNetV2's 1x1 convolutions; these kernels reach about 21 on the same
//! shapes (the browser bench's `pointwise_products_on_cpu`). Only inference of a frozen network goes through here — embeddings, predictions, the frozen
//! prefix of a partly frozen one, the recommender's measurements; training (autodiff) stays on Burn.

use graft_kernels::{self as kernels, Activation, DenseWeights, DepthwiseWeights, Geometry, PackedWeights};

use super::blocks::{ConvBnAct, InvertedResidual, tf_same_padding};
use super::classifier::ImageClassifier;
use crate::readback::{self, ReadbackError};

/// With or without the statistics of what each BatchNorm receives (the recommender's probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probes {
    /// BatchNorm folded into the weights: the fastest form.
    Off,
    /// Each convolution with its own weights, then its BatchNorm as a per-channel scale and shift, so
    /// that the statistics of the BatchNorm's input can be taken in between.
    On,
}

/// How a convolution combines its input.
#[derive(Debug, Clone)]
enum Kernel {
    Pointwise(PackedWeights),
    Depthwise(DepthwiseWeights),
    Dense(DenseWeights),
}

/// One conv -> BatchNorm -> (ReLU6), compiled.
#[derive(Debug, Clone)]
struct Conv {
    kernel: Kernel,
    size: usize,
    stride: usize,
    /// TensorFlow "SAME" padding (strided convolutions of TensorFlow ports); else `(size - 1) / 2`.
    tf_same: bool,
    channels: usize,
    activation: Activation,
    /// [`Probes::On`]: the BatchNorm as `(scale, shift)`, applied after the statistics are taken.
    norm: Option<(Vec<f32>, Vec<f32>)>,
}

impl Conv {
    async fn compile(block: &ConvBnAct, probes: Probes) -> Result<Self, ReadbackError> {
        let [channels, in_per_group, size, _] = block.conv.weight.dims();
        let groups = block.conv.groups;
        let (weights, bias, norm) = match probes {
            Probes::Off => {
                let folded = block.fold_batch_norm();
                let weights = readback::to_f32_vec(folded.conv.weight.val()).await?;
                let bias = match &folded.conv.bias {
                    Some(bias) => Some(readback::to_f32_vec(bias.val()).await?),
                    None => None,
                };
                (weights, bias, None)
            }
            Probes::On => {
                assert!(!block.is_folded(), "probes need the BatchNorms unfolded");
                let weights = readback::to_f32_vec(block.conv.weight.val()).await?;
                let norm = &block.norm;
                let gamma = readback::to_f32_vec(norm.gamma.val()).await?;
                let beta = readback::to_f32_vec(norm.beta.val()).await?;
                let mean = readback::to_f32_vec(norm.running_mean.value()).await?;
                let var = readback::to_f32_vec(norm.running_var.value()).await?;
                let eps = norm.epsilon as f32;
                let scale: Vec<f32> = gamma.iter().zip(&var).map(|(g, v)| g / (v + eps).sqrt()).collect();
                let shift = beta
                    .iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((b, m), s)| b - m * s)
                    .collect();
                (weights, None, Some((scale, shift)))
            }
        };
        let kernel = if size == 1 && groups == 1 {
            Kernel::Pointwise(PackedWeights::from_output_major(
                &weights,
                bias.as_deref(),
                channels,
                in_per_group,
            ))
        } else if in_per_group == 1 && groups == channels {
            Kernel::Depthwise(DepthwiseWeights::from_channel_major(
                &weights,
                bias.as_deref(),
                channels,
                size,
            ))
        } else {
            assert_eq!(
                groups, 1,
                "grouped convolutions other than depthwise are not in the zoo"
            );
            Kernel::Dense(DenseWeights::from_output_major(
                &weights,
                bias.as_deref(),
                channels,
                in_per_group,
                size,
            ))
        };
        Ok(Self {
            kernel,
            size,
            stride: block.conv.stride[0],
            tf_same: block.uses_tf_same(),
            channels,
            activation: if block.has_activation() {
                Activation::Relu6
            } else {
                Activation::None
            },
            norm,
        })
    }

    fn geometry(&self, input: [usize; 2]) -> Geometry {
        let (before, after) = if self.tf_same {
            let rows = tf_same_padding(input[0], self.size, self.stride);
            let cols = tf_same_padding(input[1], self.size, self.stride);
            ([rows.0, cols.0], [rows.1, cols.1])
        } else {
            let symmetric = (self.size - 1) / 2;
            ([symmetric; 2], [symmetric; 2])
        };
        Geometry::new(input, self.size, self.stride, before, after)
    }

    /// Runs on one image `[height, width, in]` (a prefix of `input`) into the first `[out_height,
    /// out_width, channels]` of `out` (grown if needed), adding `residual` (the same shape, also a
    /// prefix) last; with probes, adds the BatchNorm input's per-channel sums into `stats`. Returns the
    /// output size.
    fn run(
        &self,
        input: &[f32],
        size: [usize; 2],
        residual: Option<&[f32]>,
        scratch: &mut Vec<f32>,
        out: &mut Vec<f32>,
        stats: Option<&mut ChannelSums>,
    ) -> [usize; 2] {
        let geometry = self.geometry(size);
        let [oh, ow] = geometry.output;
        let out = grown(out, oh * ow * self.channels);
        // Without a separate BatchNorm the kernel's epilogue does everything.
        let (activation, fused_residual) = match self.norm {
            None => (self.activation, residual),
            Some(_) => (Activation::None, None),
        };
        match &self.kernel {
            Kernel::Pointwise(weights) => {
                kernels::pointwise(input, size[0] * size[1], weights, activation, fused_residual, out)
            }
            Kernel::Depthwise(weights) => {
                debug_assert!(fused_residual.is_none());
                kernels::depthwise(input, weights, &geometry, activation, out)
            }
            Kernel::Dense(weights) => {
                debug_assert!(fused_residual.is_none());
                kernels::dense(input, weights, &geometry, activation, scratch, out)
            }
        }
        if let Some((scale, shift)) = &self.norm {
            if let Some(stats) = stats {
                kernels::channel_sums(out, self.channels, &mut stats.sums, &mut stats.squares);
                stats.pixels += (oh * ow) as u64;
            }
            kernels::scale_shift(out, scale, shift, self.activation, residual);
        }
        [oh, ow]
    }
}

/// The first `len` elements of `buffer`, growing it if it is shorter. Buffers only grow, so that after
/// the first image no layer pays for allocating or zeroing its output again.
fn grown(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Per-channel sums of one BatchNorm's input over the pixels seen.
#[derive(Debug, Clone)]
struct ChannelSums {
    sums: Vec<f64>,
    squares: Vec<f64>,
    pixels: u64,
}

impl ChannelSums {
    fn new(channels: usize) -> Self {
        Self {
            sums: vec![0.0; channels],
            squares: vec![0.0; channels],
            pixels: 0,
        }
    }

    /// `[2 * channels]`: the means, then the means of squares (the layout of Burn's probes).
    fn means(&self) -> Vec<f32> {
        let n = self.pixels.max(1) as f64;
        self.sums.iter().chain(&self.squares).map(|s| (s / n) as f32).collect()
    }
}

/// A compiled inverted residual block.
#[derive(Debug, Clone)]
struct Block {
    expand: Option<Conv>,
    depthwise: Conv,
    project: Conv,
    residual: bool,
}

impl Block {
    async fn compile(block: &InvertedResidual, probes: Probes) -> Result<Self, ReadbackError> {
        Ok(Self {
            expand: match &block.expand {
                Some(expand) => Some(Conv::compile(expand, probes).await?),
                None => None,
            },
            depthwise: Conv::compile(&block.depthwise, probes).await?,
            project: Conv::compile(&block.project, probes).await?,
            residual: block.has_residual(),
        })
    }

    fn convs(&self) -> impl Iterator<Item = &Conv> {
        self.expand.iter().chain([&self.depthwise, &self.project])
    }
}

/// A body block: the stem and head conv are single convolutions, the rest inverted residuals.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a few dozen, built once per model
enum BodyBlock {
    Conv(Conv),
    Residual(Block),
}

impl BodyBlock {
    fn convs(&self) -> Vec<&Conv> {
        match self {
            Self::Conv(conv) => vec![conv],
            Self::Residual(block) => block.convs().collect(),
        }
    }
}

/// One image's activations on their way through the body (kept between calls: see [`grown`]).
#[derive(Debug, Default)]
struct Buffers {
    x: Vec<f32>,
    out: Vec<f32>,
    hidden: Vec<f32>,
    hidden2: Vec<f32>,
    scratch: Vec<f32>,
}

/// What a run of the body returns for a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyOutput {
    /// The activation after the last block run, NCHW `[batch, channels, height, width]` flattened.
    pub values: Vec<f32>,
    pub dims: [usize; 4],
}

/// A frozen [`ImageClassifier`] compiled for the CPU kernels (see the module's documentation).
#[derive(Debug, Clone)]
pub struct CompiledClassifier {
    body: Vec<BodyBlock>,
    /// The linear head, `[width, classes]` packed, with its bias.
    classifier: PackedWeights,
    probes: Probes,
    buffers: Scratch,
}

/// [`Buffers`] a compiled classifier reuses from call to call; a clone starts with its own.
#[derive(Debug, Default)]
struct Scratch(std::sync::Mutex<Buffers>);

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Scratch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffers> {
        // A panic while the buffers were held leaves nothing to repair: they are overwritten before use.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl CompiledClassifier {
    /// Reads `model`'s weights (from any device, through the async read-back) and lays them out for
    /// the kernels. With [`Probes::On`] the model must not be folded already.
    pub async fn compile(model: &ImageClassifier, probes: Probes) -> Result<Self, ReadbackError> {
        let mut body = Vec::with_capacity(model.blocks.len() + 2);
        body.push(BodyBlock::Conv(Conv::compile(&model.stem, probes).await?));
        for block in &model.blocks {
            body.push(BodyBlock::Residual(Block::compile(block, probes).await?));
        }
        body.push(BodyBlock::Conv(Conv::compile(&model.head_conv, probes).await?));
        let weights = readback::to_f32_vec(model.classifier.weight.val()).await?;
        let bias = match &model.classifier.bias {
            Some(bias) => Some(readback::to_f32_vec(bias.val()).await?),
            None => None,
        };
        let [width, classes] = model.classifier.weight.dims();
        Ok(Self {
            body,
            classifier: PackedWeights::from_input_major(&weights, bias.as_deref(), width, classes),
            probes,
            buffers: Scratch::default(),
        })
    }

    /// Body blocks (stem, inverted residuals, head conv).
    pub fn num_body_blocks(&self) -> usize {
        self.body.len()
    }

    /// The width of the pooled embedding.
    pub fn embedding_width(&self) -> usize {
        self.classifier.k()
    }

    pub fn num_classes(&self) -> usize {
        self.classifier.n()
    }

    /// Runs the first `count` body blocks on one NHWC image in `buffers.x`, leaving the result there.
    /// Returns its `[height, width]` and channels.
    fn body(
        &self,
        count: usize,
        mut size: [usize; 2],
        mut channels: usize,
        buffers: &mut Buffers,
        mut stats: Option<&mut Vec<Vec<ChannelSums>>>,
    ) -> ([usize; 2], usize) {
        for (index, block) in self.body[..count].iter().enumerate() {
            let mut sums = stats.as_deref_mut().map(|stats| stats[index].iter_mut());
            let mut next = || sums.as_mut().and_then(Iterator::next);
            let Buffers {
                x,
                out,
                hidden,
                hidden2,
                scratch,
            } = buffers;
            size = match block {
                BodyBlock::Conv(conv) => {
                    channels = conv.channels;
                    let size = conv.run(x, size, None, scratch, out, next());
                    std::mem::swap(x, out);
                    size
                }
                BodyBlock::Residual(block) => {
                    let input: &[f32] = match &block.expand {
                        Some(expand) => {
                            expand.run(x, size, None, scratch, hidden, next());
                            hidden
                        }
                        None => x,
                    };
                    let inner = block.depthwise.run(input, size, None, scratch, hidden2, next());
                    let residual = block.residual.then_some(x.as_slice());
                    block.project.run(hidden2, inner, residual, scratch, out, next());
                    channels = block.project.channels;
                    std::mem::swap(x, out);
                    inner
                }
            };
        }
        (size, channels)
    }

    /// Image `i` of an NCHW batch into `x` as NHWC.
    fn load_image(images: &[f32], i: usize, [channels, height, width]: [usize; 3], x: &mut Vec<f32>) {
        let plane = height * width;
        let image = &images[i * channels * plane..(i + 1) * channels * plane];
        let x = grown(x, plane * channels);
        for c in 0..channels {
            for (p, &value) in image[c * plane..(c + 1) * plane].iter().enumerate() {
                x[p * channels + c] = value;
            }
        }
    }

    /// The activation entering body block `count` (after blocks `0..count`) for an NCHW batch
    /// `images` of `dims`.
    pub fn prefix(&self, count: usize, images: &[f32], dims: [usize; 4]) -> BodyOutput {
        let [batch, channels, height, width] = dims;
        assert!(count <= self.body.len(), "{count} blocks of {}", self.body.len());
        assert_eq!(
            images.len(),
            batch * channels * height * width,
            "images are not {dims:?}"
        );
        let mut buffers = self.buffers.lock();
        let mut values = Vec::new();
        let mut out_dims = [batch, channels, height, width];
        for i in 0..batch {
            Self::load_image(images, i, [channels, height, width], &mut buffers.x);
            let ([h, w], c) = self.body(count, [height, width], channels, &mut buffers, None);
            out_dims = [batch, c, h, w];
            let start = values.len();
            values.resize(start + c * h * w, 0.0);
            let plane = h * w;
            for (p, pixel) in buffers.x[..plane * c].chunks_exact(c).enumerate() {
                for (channel, &value) in pixel.iter().enumerate() {
                    values[start + channel * plane + p] = value;
                }
            }
        }
        BodyOutput { values, dims: out_dims }
    }

    /// Pooled embeddings `[batch, width]` of an NCHW batch `images` of `dims`.
    pub fn embeddings(&self, images: &[f32], dims: [usize; 4]) -> Vec<f32> {
        self.embed(images, dims, None)
    }

    fn embed(&self, images: &[f32], dims: [usize; 4], mut stats: Option<&mut Vec<Vec<ChannelSums>>>) -> Vec<f32> {
        let [batch, channels, height, width] = dims;
        assert_eq!(
            images.len(),
            batch * channels * height * width,
            "images are not {dims:?}"
        );
        let embedding = self.embedding_width();
        let mut out = vec![0.0; batch * embedding];
        let mut buffers = self.buffers.lock();
        for (i, row) in out.chunks_exact_mut(embedding).enumerate() {
            Self::load_image(images, i, [channels, height, width], &mut buffers.x);
            let ([h, w], c) = self.body(
                self.body.len(),
                [height, width],
                channels,
                &mut buffers,
                stats.as_deref_mut(),
            );
            debug_assert_eq!(c, embedding);
            kernels::mean_pool(&buffers.x, h * w, c, row);
        }
        out
    }

    /// Logits `[batch, classes]` from embeddings `[batch, width]`.
    pub fn classify(&self, embeddings: &[f32]) -> Vec<f32> {
        let rows = embeddings.len() / self.embedding_width();
        let mut logits = vec![0.0; rows * self.num_classes()];
        kernels::pointwise(embeddings, rows, &self.classifier, Activation::None, None, &mut logits);
        logits
    }

    /// Embeddings `[batch, width]` and, per body block and per convolution in it (in
    /// [`ImageClassifier::block_convs`] order), `[2 * channels]`: the mean over the batch's pixels of
    /// what the BatchNorm receives, then the mean of its squares. Needs [`Probes::On`].
    pub fn probed(&self, images: &[f32], dims: [usize; 4]) -> (Vec<f32>, Vec<Vec<Vec<f32>>>) {
        assert_eq!(self.probes, Probes::On, "compiled without probes");
        let mut stats: Vec<Vec<ChannelSums>> = self
            .body
            .iter()
            .map(|block| {
                block
                    .convs()
                    .iter()
                    .map(|conv| ChannelSums::new(conv.channels))
                    .collect()
            })
            .collect();
        let embeddings = self.embed(images, dims, Some(&mut stats));
        let probes = stats
            .iter()
            .map(|convs| convs.iter().map(ChannelSums::means).collect())
            .collect();
        (embeddings, probes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelKind;
    use burn::prelude::*;
    use burn::tensor::Distribution;

    /// Randomly initialised BatchNorm statistics, so that folding is not the identity.
    fn perturbed(kind: ModelKind, device: &Device) -> ImageClassifier {
        use burn::module::{Param, RunningState};
        let mut model = kind.architecture().init(10, device).freeze();
        let perturb = |conv: &mut ConvBnAct| {
            let [channels] = conv.norm.gamma.dims();
            let random = |lo: f64, hi: f64| Tensor::<1>::random([channels], Distribution::Uniform(lo, hi), device);
            conv.norm.gamma = Param::from_tensor(random(0.5, 1.5));
            conv.norm.beta = Param::from_tensor(random(-0.5, 0.5));
            conv.norm.running_mean = RunningState::new(random(-0.2, 0.2));
            conv.norm.running_var = RunningState::new(random(0.5, 2.0));
        };
        perturb(&mut model.stem);
        for block in &mut model.blocks {
            if let Some(expand) = &mut block.expand {
                perturb(expand);
            }
            perturb(&mut block.depthwise);
            perturb(&mut block.project);
        }
        perturb(&mut model.head_conv);
        model
    }

    fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        pollster::block_on(readback::to_f32_vec(tensor)).unwrap()
    }

    fn close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
        assert!(worst <= tolerance, "{what}: max |difference| {worst}");
    }

    /// The compiled network computes what Burn computes, for both architectures (symmetric and
    /// TensorFlow "SAME" padding), at an input size that is not a multiple of 32: prefixes, embeddings,
    /// logits and the probes.
    #[test]
    fn compiled_classifiers_match_burn() {
        let device = Device::flex();
        for kind in ModelKind::ALL {
            let model = perturbed(kind, &device);
            let images = Tensor::<4>::random([2, 3, 45, 51], Distribution::Normal(0.0, 1.0), &device);
            let dims = images.dims();
            let input = host(images.clone());
            let compiled = pollster::block_on(CompiledClassifier::compile(&model, Probes::Off)).unwrap();
            let probed = pollster::block_on(CompiledClassifier::compile(&model, Probes::On)).unwrap();

            let (logits, embeddings, probes) = model.forward_probed(images.clone());
            let embeddings = host(embeddings);
            for (name, net) in [("folded", &compiled), ("probed", &probed)] {
                let got = net.embeddings(&input, dims);
                close(&got, &embeddings, 1e-4, &format!("{kind} {name} embeddings"));
                close(
                    &net.classify(&got),
                    &host(logits.clone()),
                    1e-4,
                    &format!("{kind} {name} logits"),
                );
            }
            for count in [0, 1, 3, model.blocks.len() + 2] {
                let want = model.forward_prefix(count, images.clone());
                let got = compiled.prefix(count, &input, dims);
                assert_eq!(got.dims, want.dims(), "{kind} prefix {count}");
                close(&got.values, &host(want), 1e-4, &format!("{kind} prefix {count}"));
            }
            let (_, got) = probed.probed(&input, dims);
            assert_eq!(got.len(), probes.len(), "{kind} probe blocks");
            for (block, (got, want)) in got.iter().zip(&probes).enumerate() {
                assert_eq!(got.len(), want.len(), "{kind} block {block} convs");
                for (conv, (got, want)) in got.iter().zip(want).enumerate() {
                    let want = host(want.clone());
                    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                    close(got, &want, 1e-4 * scale, &format!("{kind} probe {block}.{conv}"));
                }
            }
        }
    }
}
