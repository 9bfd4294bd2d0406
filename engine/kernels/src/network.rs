//! A frozen MobileNet-style classifier described without any framework ([`NetworkSpec`]: plain
//! weights in PyTorch's layouts and the shape of each layer) and compiled for the kernels
//! ([`Network`]: 1x1 convolutions as packed matrix products, depthwise filters tap-major, the stem for
//! im2col). The engine builds the description from a Burn model; the offline web page's runtime reads
//! it from a file ([`crate::file`]). The network runs one image at a time through the whole body, so
//! that an image's activations stay in the caches.

use crate::conv::{self, DenseWeights, DepthwiseWeights, Geometry};
use crate::gemm::{self, Activation, PackedWeights};

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `(size - 1) / 2` on every side (PyTorch's usual padding).
    Symmetric,
    /// TensorFlow's "SAME": the output is `ceil(input / stride)`, the odd pixel of padding after.
    TfSame,
}

/// `(before, after)` padding of one spatial dimension under TensorFlow's "SAME" rule.
pub fn tf_same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// A per-channel `x * scale + shift`: a BatchNorm with its running statistics, kept apart from its
/// convolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

/// One convolution, its BatchNorm (folded into `weights`/`bias`, or apart as `norm`) and ReLU6.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    pub out_channels: usize,
    /// Input channels each output sees: all of them, or 1 for a depthwise convolution.
    pub in_per_group: usize,
    pub groups: usize,
    /// The square kernel's side.
    pub size: usize,
    pub stride: usize,
    pub padding: Padding,
    pub relu6: bool,
    /// `[out_channels, in_per_group, size, size]`, PyTorch's layout.
    pub weights: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    /// The BatchNorm when it is not folded into the weights (to measure what it receives).
    pub norm: Option<Affine>,
}

/// One block of the body.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a few dozen, built once per model
pub enum LayerSpec {
    /// A single convolution (the stem and the head convolution).
    Conv(ConvSpec),
    /// An inverted residual: optional 1x1 expansion, depthwise, 1x1 projection, and the input added
    /// back when `skip`.
    Residual {
        expand: Option<ConvSpec>,
        depthwise: ConvSpec,
        project: ConvSpec,
        skip: bool,
    },
}

impl LayerSpec {
    /// Its convolutions in the order they run.
    pub fn convs(&self) -> Vec<&ConvSpec> {
        match self {
            Self::Conv(conv) => vec![conv],
            Self::Residual {
                expand,
                depthwise,
                project,
                ..
            } => expand.iter().chain([depthwise, project]).collect(),
        }
    }
}

/// The linear classifier on the pooled embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSpec {
    pub inputs: usize,
    pub outputs: usize,
    /// `[inputs, outputs]` row-major (Burn's layout of a linear layer).
    pub weights: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// A whole classifier: the body's blocks, global average pooling, the linear head.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
    pub body: Vec<LayerSpec>,
    pub classifier: LinearSpec,
}

/// Why a network description cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    Shape(String),
}

impl ConvSpec {
    fn check(&self, what: &str, channels_in: usize) -> Result<(), NetworkError> {
        let fail = |message: String| Err(NetworkError::Shape(format!("{what}: {message}")));
        let n = self.out_channels;
        if n == 0 || self.size == 0 || self.stride == 0 || self.groups == 0 {
            return fail("a zero size".into());
        }
        if self.in_per_group * self.groups != channels_in {
            return fail(format!(
                "takes {} x {} channels, receives {channels_in}",
                self.groups, self.in_per_group
            ));
        }
        let depthwise = self.in_per_group == 1 && self.groups == n && self.groups > 1;
        if self.groups != 1 && !depthwise {
            return fail("grouped convolutions other than depthwise are not supported".into());
        }
        if self.weights.len() != n * self.in_per_group * self.size * self.size {
            return fail(format!("{} weights", self.weights.len()));
        }
        if self.bias.as_ref().is_some_and(|b| b.len() != n) {
            return fail("bias length".into());
        }
        if let Some(norm) = &self.norm
            && (norm.scale.len() != n || norm.shift.len() != n)
        {
            return fail("BatchNorm length".into());
        }
        Ok(())
    }
}

impl NetworkSpec {
    /// Checks that every layer's weights have the lengths its shape says and that the layers chain.
    pub fn check(&self) -> Result<(), NetworkError> {
        let mut channels = 3;
        for (index, layer) in self.body.iter().enumerate() {
            let block_in = channels;
            for conv in layer.convs() {
                conv.check(&format!("body block {index}"), channels)?;
                channels = conv.out_channels;
            }
            if let LayerSpec::Residual {
                skip: true, project, ..
            } = layer
                && (project.out_channels != block_in || layer.convs().iter().any(|c| c.stride != 1))
            {
                return Err(NetworkError::Shape(format!(
                    "body block {index}: a residual that changes the shape"
                )));
            }
        }
        let linear = &self.classifier;
        if linear.inputs != channels
            || linear.outputs == 0
            || linear.weights.len() != linear.inputs * linear.outputs
            || linear.bias.as_ref().is_some_and(|b| b.len() != linear.outputs)
        {
            return Err(NetworkError::Shape(format!(
                "classifier [{}, {}] on {channels} channels",
                linear.inputs, linear.outputs
            )));
        }
        Ok(())
    }
}

/// How a compiled convolution combines its input.
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
    padding: Padding,
    channels: usize,
    activation: Activation,
    /// The BatchNorm, applied after the statistics of its input are taken.
    norm: Option<Affine>,
}

impl Conv {
    fn compile(spec: &ConvSpec) -> Self {
        let ConvSpec {
            out_channels: channels,
            in_per_group,
            groups,
            size,
            ..
        } = *spec;
        let bias = spec.bias.as_deref();
        let kernel = if size == 1 && groups == 1 {
            Kernel::Pointwise(PackedWeights::from_output_major(
                &spec.weights,
                bias,
                channels,
                in_per_group,
            ))
        } else if in_per_group == 1 && groups == channels && groups > 1 {
            Kernel::Depthwise(DepthwiseWeights::from_channel_major(
                &spec.weights,
                bias,
                channels,
                size,
            ))
        } else {
            Kernel::Dense(DenseWeights::from_output_major(
                &spec.weights,
                bias,
                channels,
                in_per_group,
                size,
            ))
        };
        Self {
            kernel,
            size,
            stride: spec.stride,
            padding: spec.padding,
            channels,
            activation: if spec.relu6 {
                Activation::Relu6
            } else {
                Activation::None
            },
            norm: spec.norm.clone(),
        }
    }

    fn geometry(&self, input: [usize; 2]) -> Geometry {
        let (before, after) = match self.padding {
            Padding::TfSame => {
                let rows = tf_same_padding(input[0], self.size, self.stride);
                let cols = tf_same_padding(input[1], self.size, self.stride);
                ([rows.0, cols.0], [rows.1, cols.1])
            }
            Padding::Symmetric => {
                let symmetric = (self.size - 1) / 2;
                ([symmetric; 2], [symmetric; 2])
            }
        };
        Geometry::new(input, self.size, self.stride, before, after)
    }

    /// Runs on one image `[height, width, in]` (a prefix of `input`) into the first `[out_height,
    /// out_width, channels]` of `out` (grown if needed), adding `residual` (the same shape, also a
    /// prefix) last; with a separate BatchNorm and `stats`, adds the BatchNorm input's per-channel sums
    /// into `stats`. Returns the output size.
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
                gemm::pointwise(input, size[0] * size[1], weights, activation, fused_residual, out)
            }
            Kernel::Depthwise(weights) => {
                debug_assert!(fused_residual.is_none());
                conv::depthwise(input, weights, &geometry, activation, out)
            }
            Kernel::Dense(weights) => {
                debug_assert!(fused_residual.is_none());
                conv::dense(input, weights, &geometry, activation, scratch, out)
            }
        }
        if let Some(norm) = &self.norm {
            if let Some(stats) = stats {
                conv::channel_sums(out, self.channels, &mut stats.sums, &mut stats.squares);
                stats.pixels += (oh * ow) as u64;
            }
            conv::scale_shift(out, &norm.scale, &norm.shift, self.activation, residual);
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

    /// `[2 * channels]`: the means, then the means of squares.
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
    fn convs(&self) -> impl Iterator<Item = &Conv> {
        self.expand.iter().chain([&self.depthwise, &self.project])
    }
}

/// A compiled body block.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a few dozen, built once per model
enum BodyBlock {
    Conv(Conv),
    Residual(Block),
}

impl BodyBlock {
    fn compile(spec: &LayerSpec) -> Self {
        match spec {
            LayerSpec::Conv(conv) => Self::Conv(Conv::compile(conv)),
            LayerSpec::Residual {
                expand,
                depthwise,
                project,
                skip,
            } => Self::Residual(Block {
                expand: expand.as_ref().map(Conv::compile),
                depthwise: Conv::compile(depthwise),
                project: Conv::compile(project),
                residual: *skip,
            }),
        }
    }

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

/// [`Buffers`] a network reuses from call to call; a clone starts with its own.
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

/// Threads a batch of `pictures` is shared out over: `threads`, or natively one per core, in wasm one
/// (threads there need shared memory); at most one per picture.
fn worker_threads(threads: Option<usize>, pictures: usize) -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    let cores = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    #[cfg(target_arch = "wasm32")]
    let cores = threads.map_or(1, |_| 1);
    cores.clamp(1, pictures.max(1))
}

/// What a run of the body returns for a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyOutput {
    /// The activation after the last block run, NCHW `[batch, channels, height, width]` flattened.
    pub values: Vec<f32>,
    pub dims: [usize; 4],
}

/// What a frozen network computes for a batch: what a caller asks of a [`Network`] in one word (the
/// engine's helpers receive it with their share of a batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Pooled embeddings `[pictures, width]`.
    Embeddings,
    /// The activation entering body block `count`, NCHW `[pictures, channels, height, width]`.
    Prefix(usize),
    /// [`Network::probed`] as one list: the embeddings `[pictures, width]`, then the probes, block by
    /// block and convolution by convolution (means over the pictures given; [`Network::unflatten_probed`]
    /// splits them again).
    Probed,
}

impl Work {
    /// `work` run by `net` on `images` (NCHW, `dims`): the values, and their dims for a prefix.
    pub fn run(self, net: &Network, images: &[f32], dims: [usize; 4]) -> BodyOutput {
        match self {
            Self::Embeddings => {
                let values = net.embeddings(images, dims);
                BodyOutput {
                    dims: [dims[0], net.embedding_width(), 1, 1],
                    values,
                }
            }
            Self::Prefix(count) => net.prefix(count, images, dims),
            Self::Probed => {
                let (mut values, probes) = net.probed(images, dims);
                values.extend(probes.iter().flatten().flatten());
                BodyOutput {
                    dims: [dims[0], net.embedding_width(), 1, 1],
                    values,
                }
            }
        }
    }
}

/// A [`NetworkSpec`] compiled for the kernels.
#[derive(Debug, Clone)]
pub struct Network {
    body: Vec<BodyBlock>,
    /// The linear head, `[width, classes]` packed, with its bias.
    classifier: PackedWeights,
    /// Every BatchNorm kept apart from its convolution (so [`Network::probed`] can measure them).
    probes: bool,
    buffers: Scratch,
    /// Threads a batch is shared out over (`None`: one per core natively, one in wasm).
    threads: Option<usize>,
}

impl Network {
    /// Lays `spec` out for the kernels, after checking its shapes.
    pub fn new(spec: &NetworkSpec) -> Result<Self, NetworkError> {
        spec.check()?;
        let linear = &spec.classifier;
        Ok(Self {
            body: spec.body.iter().map(BodyBlock::compile).collect(),
            classifier: PackedWeights::from_input_major(
                &linear.weights,
                linear.bias.as_deref(),
                linear.inputs,
                linear.outputs,
            ),
            probes: spec
                .body
                .iter()
                .flat_map(LayerSpec::convs)
                .all(|conv| conv.norm.is_some()),
            buffers: Scratch::default(),
            threads: None,
        })
    }

    /// Shares each batch out over `threads` threads (natively; `None`: one per core). Every picture is
    /// computed the same way on any thread: the results do not depend on it.
    pub fn set_threads(&mut self, threads: Option<usize>) {
        self.threads = threads;
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
    ///
    /// # Panics
    /// When `count` exceeds the body or `images` is not `dims` (bugs in the caller).
    pub fn prefix(&self, count: usize, images: &[f32], dims: [usize; 4]) -> BodyOutput {
        let [batch, channels, height, width] = dims;
        assert!(count <= self.body.len(), "{count} blocks of {}", self.body.len());
        assert_eq!(
            images.len(),
            batch * channels * height * width,
            "images are not {dims:?}"
        );
        if batch == 0 {
            return BodyOutput {
                values: Vec::new(),
                dims,
            };
        }
        // Picture `i` through the blocks, its activation left NHWC in `buffers.x`.
        let run = |i: usize, buffers: &mut Buffers| {
            Self::load_image(images, i, [channels, height, width], &mut buffers.x);
            self.body(count, [height, width], channels, buffers, None)
        };
        // ... and copied out NCHW.
        let nchw = |x: &[f32], plane: usize, c: usize, values: &mut [f32]| {
            for (p, pixel) in x[..plane * c].chunks_exact(c).enumerate() {
                for (channel, &value) in pixel.iter().enumerate() {
                    values[channel * plane + p] = value;
                }
            }
        };
        // The first picture gives the output's shape; the others follow it.
        let mut buffers = self.buffers.lock();
        let ([h, w], c) = run(0, &mut buffers);
        let size = c * h * w;
        let mut values = vec![0.0; batch * size];
        nchw(&buffers.x, h * w, c, &mut values[..size]);
        drop(buffers);
        self.per_picture(1, &mut values[size..], size, |i, buffers, out| {
            run(i, buffers);
            nchw(&buffers.x, h * w, c, out);
        });
        let out_dims = [batch, c, h, w];
        BodyOutput { values, dims: out_dims }
    }

    /// Pooled embeddings `[batch, width]` of an NCHW batch `images` of `dims`.
    ///
    /// # Panics
    /// When `images` is not `dims` (a bug in the caller).
    pub fn embeddings(&self, images: &[f32], dims: [usize; 4]) -> Vec<f32> {
        self.embed(images, dims, None)
    }

    fn embed(&self, images: &[f32], dims: [usize; 4], stats: Option<&mut Vec<Vec<ChannelSums>>>) -> Vec<f32> {
        let [batch, channels, height, width] = dims;
        assert_eq!(
            images.len(),
            batch * channels * height * width,
            "images are not {dims:?}"
        );
        let embedding = self.embedding_width();
        let mut out = vec![0.0; batch * embedding];
        let one = |i: usize, buffers: &mut Buffers, row: &mut [f32], stats: Option<&mut Vec<Vec<ChannelSums>>>| {
            Self::load_image(images, i, [channels, height, width], &mut buffers.x);
            let ([h, w], c) = self.body(self.body.len(), [height, width], channels, buffers, stats);
            debug_assert_eq!(c, embedding);
            conv::mean_pool(&buffers.x, h * w, c, row);
        };
        match stats {
            // The BatchNorms' sums add up in picture order: one thread.
            Some(stats) => {
                let mut buffers = self.buffers.lock();
                for (i, row) in out.chunks_exact_mut(embedding).enumerate() {
                    one(i, &mut buffers, row, Some(&mut *stats));
                }
            }
            None => self.per_picture(0, &mut out, embedding, |i, buffers, row| one(i, buffers, row, None)),
        }
        out
    }

    /// Runs `one(i, buffers, out_i)` for pictures `first..` of a batch, whose outputs are `out`, `size`
    /// values each. Natively the pictures are shared out over the machine's cores (each thread with its
    /// own buffers; the calling thread takes the first share); in wasm, one thread.
    fn per_picture(
        &self,
        first: usize,
        out: &mut [f32],
        size: usize,
        one: impl Fn(usize, &mut Buffers, &mut [f32]) + Sync,
    ) {
        let batch = out.len() / size.max(1);
        let threads = worker_threads(self.threads, batch);
        let share = batch.div_ceil(threads).max(1);
        let run = |start: usize, outs: &mut [f32], buffers: &mut Buffers| {
            for (j, picture) in outs.chunks_exact_mut(size).enumerate() {
                one(first + start + j, buffers, picture);
            }
        };
        if threads <= 1 {
            run(0, out, &mut self.buffers.lock());
            return;
        }
        std::thread::scope(|scope| {
            let mut shares = out.chunks_mut(share * size).enumerate();
            let mine = shares.next();
            for (index, outs) in shares {
                let run = &run;
                scope.spawn(move || run(index * share, outs, &mut Buffers::default()));
            }
            if let Some((_, outs)) = mine {
                run(0, outs, &mut self.buffers.lock());
            }
        });
    }

    /// Logits `[batch, classes]` from embeddings `[batch, width]`.
    pub fn classify(&self, embeddings: &[f32]) -> Vec<f32> {
        let rows = embeddings.len() / self.embedding_width();
        let mut logits = vec![0.0; rows * self.num_classes()];
        gemm::pointwise(embeddings, rows, &self.classifier, Activation::None, None, &mut logits);
        logits
    }

    /// What [`Work::Probed`] gives for `pictures` pictures, as [`Network::probed`] gives it (`None`
    /// when `values` is not that long).
    #[allow(clippy::type_complexity)] // the shape `probed` returns
    pub fn unflatten_probed(&self, values: &[f32], pictures: usize) -> Option<(Vec<f32>, Vec<Vec<Vec<f32>>>)> {
        let (embeddings, mut rest) = values.split_at_checked(pictures * self.embedding_width())?;
        let mut probes = Vec::with_capacity(self.body.len());
        for block in &self.body {
            let mut convs = Vec::new();
            for conv in block.convs() {
                let (probe, after) = rest.split_at_checked(2 * conv.channels)?;
                convs.push(probe.to_vec());
                rest = after;
            }
            probes.push(convs);
        }
        rest.is_empty().then(|| (embeddings.to_vec(), probes))
    }

    /// Embeddings `[batch, width]` and, per body block and per convolution in it, `[2 * channels]`:
    /// the mean over the batch's pixels of what the BatchNorm receives, then the mean of its squares.
    ///
    /// # Panics
    /// When a BatchNorm is folded into its convolution (a bug in the caller: compile the network
    /// from a description with every `norm` kept apart).
    pub fn probed(&self, images: &[f32], dims: [usize; 4]) -> (Vec<f32>, Vec<Vec<Vec<f32>>>) {
        assert!(self.probes, "compiled without probes");
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

/// Softmax of each row of `logits` (`classes` wide), computed stably.
pub fn softmax(logits: &[f32], classes: usize) -> Vec<f32> {
    let mut out = logits.to_vec();
    for row in out.chunks_exact_mut(classes.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for value in row.iter_mut() {
            *value = (*value - max).exp();
            sum += *value;
        }
        for value in row.iter_mut() {
            *value /= sum;
        }
    }
    out
}
