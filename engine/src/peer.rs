//! A step in two parts, and a peer that computes the second: another thread of execution with Burn
//! of its own (in the browser, a replica of the training worker). Data parallelism over two workers,
//! without shared memory.
//!
//! Where steps are computed in parts ([`set_steps_in_parts`]: the browser's CPU backend), each step
//! of 16 images or more splits its batch in two (a smaller one is a single part). When a peer is
//! ready and the tuner measured that it pays, the training thread sends the peer the second part
//! (the activations entering the first block that trains, and their labels) with the state of
//! everything that trains (blocks `start..` and the classifier: parameters and BatchNorm
//! statistics), then computes the first part itself; the peer answers with
//! its part's loss, logits and gradients ([`compute_part`]), and the optimizer steps on the two
//! parts' gradients weighted by their images ([`add_part`]). Otherwise the training thread computes
//! the second part after the first, with the same function. A peer keeps nothing between steps but
//! the model's shape ([`Replica`]), so it cannot drift from the training thread's model, and a part
//! has the same numbers wherever it runs: a step's numbers do not depend on the peer, the tuner or a
//! peer that failed (its part is computed here).
//!
//! A step in parts is not the whole step: BatchNorm in blocks that train on batch statistics
//! normalises each part with its own (ghost batch normalisation over half batches), and dropout
//! masks come from each part's seed. The running statistics follow both parts: each moves them from
//! the same starting point, and [`merge_running`] keeps the mean of the two updates (by the whole
//! batch's mean and the variances the parts were normalised with).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::Gradients;
use serde::{Deserialize, Serialize};

use crate::model::{ConvBnAct, ImageClassifier, ModelKind};
use crate::readback::{self, ReadbackError};

/// What a part of a step is, beside its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartHeader {
    pub kind: ModelKind,
    pub classes: usize,
    /// The first body block that trains: the input enters it.
    pub start: usize,
    /// Whether the BatchNorms that train normalise with their running statistics.
    pub running_statistics: bool,
    /// The BatchNorms' momentum: how far the part's batch statistics move the running ones.
    pub momentum: f64,
    /// The loss's label smoothing.
    pub smoothing: Option<f32>,
    /// The seed of the part's dropout mask, so that a part's numbers do not depend on where it runs.
    pub seed: u64,
    /// The input's shape, `[images, channels, height, width]`.
    pub dims: [usize; 4],
    pub labels: Vec<usize>,
}

/// A part of a training step as a peer receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartRequest {
    pub header: PartHeader,
    /// Every float tensor of blocks `start..` and the classifier, in visiting order ([`state`]).
    pub state: Vec<f32>,
    /// The activations entering block `start`, NCHW.
    pub input: Vec<f32>,
}

/// A part's loss (its images' mean), logits (`[images, classes]`), the gradients of the mean loss
/// for every parameter that trains, in visiting order ([`gradients`]), and the running statistics of
/// the BatchNorms that train as the part's forward pass left them ([`running_len`] values; none when
/// they normalise with their running statistics, which then do not move).
#[derive(Debug, Clone, PartialEq)]
pub struct PartAnswer {
    pub loss: f32,
    pub logits: Vec<f32>,
    pub gradients: Vec<f32>,
    pub running: Vec<f32>,
}

/// A peer could not compute its part (it failed to start, trapped, or answered nonsense).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer: {0}")]
    Failed(String),
    #[error("peer: a state of {got} values for a model of {expected}")]
    State { got: usize, expected: usize },
    #[error("peer: an input of {got} values for dims {dims:?}")]
    Input { got: usize, dims: [usize; 4] },
    #[error("peer: block {start} is not a block of {kind}")]
    Start { start: usize, kind: ModelKind },
    #[error("peer: {0}")]
    Readback(#[from] ReadbackError),
}

/// A peer's answer to come.
pub type PartFuture = Pin<Box<dyn Future<Output = Result<PartAnswer, PeerError>>>>;

/// Somewhere a part of a training step can run.
pub trait Peer {
    /// Whether the peer takes parts now (not while it starts, nor once it failed).
    fn ready(&self) -> bool;

    /// Starts `part` on the peer; parts are answered in the order sent.
    fn run(&self, part: &PartRequest) -> PartFuture;
}

thread_local! {
    static INSTALLED: RefCell<Option<Rc<dyn Peer>>> = const { RefCell::new(None) };
    static TUNER: RefCell<Tuner> = RefCell::new(Tuner::default());
    static IN_PARTS: Cell<bool> = const { Cell::new(false) };
}

/// Makes training steps on this thread compute their batches in two parts from now on (`false`:
/// whole again), whether or not a peer takes one: a step's numbers then do not depend on whether a
/// second core was there, nor on what the tuner chose. The browser's CPU backend trains this way.
pub fn set_steps_in_parts(on: bool) {
    IN_PARTS.set(on);
}

/// Whether training steps on this thread are computed in two parts.
pub fn steps_in_parts() -> bool {
    IN_PARTS.get()
}

/// Makes training steps on this thread (in parts, see [`set_steps_in_parts`]) send their second part
/// to `peer` from now on, where measured to pay (`None`: no peer again).
pub fn install(peer: Option<Rc<dyn Peer>>) {
    INSTALLED.set(peer);
}

/// The peer installed on this thread, if any.
pub fn installed() -> Option<Rc<dyn Peer>> {
    INSTALLED.with_borrow(Clone::clone)
}

/// The peer installed on this thread and ready, if any.
pub fn ready() -> Option<Rc<dyn Peer>> {
    INSTALLED.with_borrow(Clone::clone).filter(|peer| peer.ready())
}

/// Whether a step's second part goes to the peer (the second way) or is computed here after the
/// first, chosen by measuring steps both ways in each phase ([`crate::tuner`]); `seconds` are per
/// image of a step, both parts here, and the second on the peer.
pub use crate::tuner::Tuner;

/// The measurements behind the choice to send parts to the peer on this thread.
pub fn tuner() -> Tuner {
    TUNER.with_borrow(Clone::clone)
}

/// Whether the next step's second part goes to the peer (with a peer ready).
pub(crate) fn peer_next() -> bool {
    TUNER.with_borrow(Tuner::second_next)
}

pub(crate) fn record(on_peer: bool, seconds_per_image: f64) {
    TUNER.with_borrow_mut(|tuner| tuner.record(on_peer, seconds_per_image));
}

/// Measures again from the next step (a phase trains other layers: other costs).
pub fn reset_tuner() {
    TUNER.set(Tuner::default());
}

/// The modules that train from block `start`: the body blocks `start..`, then the classifier.
fn visit_trained<V: ModuleVisitor>(model: &ImageClassifier, start: usize, visitor: &mut V) {
    for index in start..model.block_names().len() {
        model.visit_block(index, visitor);
    }
    model.classifier.visit(visitor);
}

/// The state a peer needs of `model` to compute a part from block `start`: every float tensor of
/// blocks `start..` and the classifier (parameters and BatchNorm statistics) in visiting order.
pub async fn state(model: &ImageClassifier, start: usize) -> Result<Vec<f32>, ReadbackError> {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val().without_autodiff();
            let len = value.shape().num_elements();
            self.0.push(value.reshape([len]));
        }
    }
    let mut collect = Collect(Vec::new());
    visit_trained(model, start, &mut collect);
    readback::to_f32_vec(Tensor::cat(collect.0, 0)).await
}

/// How many values [`state`] gives, and how many gradients a part has (the parameters that train),
/// for `model` from block `start`.
pub fn sizes(model: &ImageClassifier, start: usize) -> (usize, usize) {
    struct Count(usize, usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let len = param.val().shape().num_elements();
            self.0 += len;
            if param.is_require_grad() {
                self.1 += len;
            }
        }
    }
    let mut count = Count(0, 0);
    visit_trained(model, start, &mut count);
    (count.0, count.1)
}

/// `model` with blocks `start..` and the classifier set to `state` (as [`state`] gives it).
fn load_state(mut model: ImageClassifier, start: usize, state: &[f32]) -> ImageClassifier {
    struct Load<'a> {
        state: &'a [f32],
    }
    impl ModuleMapper for Load<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|old| {
                let shape = old.shape();
                let (values, rest) = self.state.split_at(shape.num_elements());
                self.state = rest;
                let require_grad = old.is_require_grad();
                Tensor::from_data(TensorData::new(values.to_vec(), shape), &old.device()).set_require_grad(require_grad)
            })
        }
    }
    let mut load = Load { state };
    for index in start..model.block_names().len() {
        model.map_block(index, &mut load);
    }
    model.classifier = model.classifier.map(&mut load);
    debug_assert!(load.state.is_empty(), "a state sized by `sizes`");
    model
}

/// The gradients of the parameters that train from block `start`, in visiting order, flat.
async fn gradients(model: &ImageClassifier, start: usize, grads: &Gradients) -> Result<Vec<f32>, ReadbackError> {
    struct Collect<'a>(&'a Gradients, Vec<Tensor<1>>);
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                let value = param.val();
                let len = value.shape().num_elements();
                let grad = value
                    .grad(self.0)
                    .unwrap_or_else(|| Tensor::zeros(value.shape(), &value.device().without_autodiff()));
                self.1.push(grad.reshape([len]));
            }
        }
    }
    let mut collect = Collect(grads, Vec::new());
    visit_trained(model, start, &mut collect);
    if collect.1.is_empty() {
        return Ok(Vec::new());
    }
    readback::to_f32_vec(Tensor::cat(collect.1, 0)).await
}

/// The loss and logits of a part: `model` (on the autodiff device, blocks `start..` training) from
/// block `start` on `input` (a constant on the autodiff device), against `labels`. Its dropout mask
/// is drawn from the part's seed (not the device's random numbers, which are one stream for the
/// process), so a part's numbers depend on nothing but the part.
pub fn part_loss(model: &ImageClassifier, header: &PartHeader, input: Tensor<4>) -> (Tensor<1>, Tensor<2>) {
    let device = input.device();
    let logits = model.forward_from_seeded(header.start, input, header.seed);
    let targets = Tensor::<1, Int>::from_data(
        TensorData::new(
            header.labels.iter().map(|&l| l as i64).collect::<Vec<_>>(),
            [header.labels.len()],
        ),
        &device,
    );
    let loss = CrossEntropyLossConfig::new()
        .with_smoothing(header.smoothing)
        .init(&device)
        .forward(logits.clone(), targets);
    (loss, logits)
}

/// A part computed by `model` (on the autodiff device, blocks `start..` training, the rest frozen):
/// forward from block `start` on `input` (host values), loss, backward, gradients read back.
pub async fn compute_part(
    model: &ImageClassifier,
    header: &PartHeader,
    input: &[f32],
) -> Result<PartAnswer, PeerError> {
    let device = model.classifier.weight.device();
    let input = Tensor::<4>::from_data(TensorData::new(input.to_vec(), header.dims), &device.without_autodiff());
    let (loss, logits) = part_loss(model, header, input.autodiff());
    let logits = logits.without_autodiff().flatten(0, 1);
    let logit_count = logits.dims()[0];
    // One read-back: the loss, the logits and the running statistics the forward pass moved.
    let mut values = vec![loss.clone().without_autodiff().reshape([1]), logits];
    if !header.running_statistics {
        values.extend(running(model, header.start));
    }
    let mut host = readback::to_f32_vec(Tensor::cat(values, 0)).await?;
    let running = host.split_off(1 + logit_count);
    let grads = loss.backward();
    Ok(PartAnswer {
        loss: host[0],
        logits: host[1..].to_vec(),
        gradients: gradients(model, header.start, &grads).await?,
        running,
    })
}

/// The BatchNorms of blocks `start..` (those that train from `start`), in block order.
fn trained_norms(model: &ImageClassifier, start: usize) -> Vec<&ConvBnAct> {
    (start..model.block_names().len())
        .flat_map(|index| model.block_convs(index))
        .collect()
}

/// The running mean and variance of each BatchNorm that trains from block `start`, as they are now
/// (an update pending on this thread applied), on the plain device.
fn running(model: &ImageClassifier, start: usize) -> Vec<Tensor<1>> {
    trained_norms(model, start)
        .into_iter()
        .flat_map(|conv| [conv.norm.running_mean.value_sync(), conv.norm.running_var.value_sync()])
        .map(|value| value.without_autodiff())
        .collect()
}

/// How many values a part's running statistics have ([`PartAnswer::running`]) for `model` from block
/// `start`, when its BatchNorms train on batch statistics.
pub fn running_len(model: &ImageClassifier, start: usize) -> usize {
    trained_norms(model, start)
        .iter()
        .map(|conv| 2 * conv.norm.running_mean.value().dims()[0])
        .sum()
}

/// Sets the running statistics of the BatchNorms that train from block `start` to the mean of the
/// two parts' updates weighted by their images: this thread's part (`my_images`, whose forward pass
/// moved them) and theirs (`theirs`, as [`PartAnswer::running`] gives them, of `their_images`), both
/// moved from the same statistics with the same momentum. As the running statistics are linear in a
/// batch's, that is one update by the parts' mean (`a·m₁ + b·m₂`, the whole batch's mean) and by the
/// mean of the parts' (biased) variances (`a·v₁ + b·v₂`), the variances the parts were normalised
/// with; the whole batch's variance would add the spread between the parts' means
/// (`a·b·(m₁ − m₂)²`), which no part's normalisation saw. That is what ghost batch normalisation
/// keeps, each ghost batch's statistics counted, not the first part's alone.
pub fn merge_running(model: &ImageClassifier, start: usize, my_images: usize, theirs: &[f32], their_images: usize) {
    let images = (my_images + their_images) as f32;
    let (a, b) = (my_images as f32 / images, their_images as f32 / images);
    let mut theirs = theirs;
    for conv in trained_norms(model, start) {
        for running in [&conv.norm.running_mean, &conv.norm.running_var] {
            let mine = running.value_sync();
            let channels = mine.dims()[0];
            let (values, rest) = theirs.split_at(channels);
            theirs = rest;
            let their = Tensor::<1>::from_data(TensorData::new(values.to_vec(), [channels]), &mine.device());
            running.update((mine.mul_scalar(a) + their.mul_scalar(b)).detach());
        }
    }
    assert!(theirs.is_empty(), "running statistics sized by `running_len`");
}

/// Adds a part's gradients (`theirs`, of `their_images`) to `grads`, the gradients of this thread's
/// part (of `my_images`) from block `start`: each becomes the mean over both parts' images.
pub fn add_part(
    model: &ImageClassifier,
    start: usize,
    grads: &mut Gradients,
    my_images: usize,
    theirs: &[f32],
    their_images: usize,
) {
    struct Add<'a> {
        grads: &'a mut Gradients,
        theirs: &'a [f32],
        mine: f32,
        their: f32,
    }
    impl ModuleVisitor for Add<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.is_require_grad() {
                return;
            }
            let value = param.val();
            let shape = value.shape();
            let (values, rest) = self.theirs.split_at(shape.num_elements());
            self.theirs = rest;
            let device = value.device().without_autodiff();
            let theirs = Tensor::<D>::from_data(TensorData::new(values.to_vec(), shape.clone()), &device);
            let sum = match value.grad(self.grads) {
                Some(mine) => mine.mul_scalar(self.mine) + theirs.mul_scalar(self.their),
                None => theirs.mul_scalar(self.their),
            };
            value.grad_replace(self.grads, sum);
        }
    }
    let images = (my_images + their_images) as f32;
    let mut add = Add {
        grads,
        theirs,
        mine: my_images as f32 / images,
        their: their_images as f32 / images,
    };
    visit_trained(model, start, &mut add);
    assert!(add.theirs.is_empty(), "gradients sized by `sizes`");
}

/// Computes `part` on this thread, with a [`Replica`] of its own kept between calls: what a peer
/// would answer, for a step whose second part stays here.
pub async fn run_here(device: &Device, part: &PartRequest) -> Result<PartAnswer, PeerError> {
    thread_local! {
        static HERE: RefCell<Option<Replica>> = const { RefCell::new(None) };
    }
    let mut replica = HERE
        .take()
        .filter(|replica| replica.device == *device)
        .unwrap_or_else(|| Replica::new(device.clone()));
    let answer = replica.run(part).await;
    HERE.set(Some(replica));
    answer
}

/// A peer's side: computes parts on its own device with a model of the part's shape, made once per
/// model kind and classes, loaded with each part's state.
pub struct Replica {
    device: Device,
    model: Option<(ModelKind, usize, ImageClassifier)>,
}

impl Replica {
    /// A replica computing on `device` (a plain device; training runs on its autodiff).
    pub fn new(device: Device) -> Self {
        Self { device, model: None }
    }

    /// Computes `part`.
    pub async fn run(&mut self, part: &PartRequest) -> Result<PartAnswer, PeerError> {
        let header = &part.header;
        let blocks = header.kind.architecture().num_body_blocks();
        if header.start >= blocks {
            return Err(PeerError::Start {
                start: header.start,
                kind: header.kind,
            });
        }
        let [n, c, h, w] = header.dims;
        if part.input.len() != n * c * h * w || header.labels.len() != n || n == 0 {
            return Err(PeerError::Input {
                got: part.input.len(),
                dims: header.dims,
            });
        }
        let model = match self.model.take() {
            Some((kind, classes, model)) if kind == header.kind && classes == header.classes => model,
            _ => header.kind.architecture().init(header.classes, &self.device).train(),
        };
        let mut model = model;
        crate::freeze::freeze_to(&mut model, header.start).expect("a start below the blocks");
        model.set_running_statistics(header.running_statistics);
        model.set_batch_norm_momentum(header.momentum);
        let (expected, _) = sizes(&model, header.start);
        if part.state.len() != expected {
            self.model = Some((header.kind, header.classes, model));
            return Err(PeerError::State {
                got: part.state.len(),
                expected,
            });
        }
        let model = load_state(model, header.start, &part.state);
        let answer = compute_part(&model, header, &part.input).await;
        self.model = Some((header.kind, header.classes, model));
        answer
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;
    use pollster::block_on;

    use super::*;

    const KIND: ModelKind = ModelKind::MobileNetV2;

    /// A randomly initialised MobileNetV2 training its last three body blocks and head, BatchNorm on
    /// batch statistics, and a part for it: four 64 px images' activations entering block `start`.
    fn model_and_part(seed: u64) -> (ImageClassifier, PartRequest) {
        let device = Device::flex();
        device.seed(seed);
        let start = KIND.architecture().num_body_blocks() - 3;
        let mut model = KIND.architecture().init(3, &device).train();
        crate::freeze::freeze_to(&mut model, start).unwrap();
        model.set_running_statistics(false);
        model.set_batch_norm_momentum(0.3);
        let images = Tensor::<4>::random([4, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let boundary = model.valid().forward_prefix(start, images);
        let header = PartHeader {
            kind: KIND,
            classes: 3,
            start,
            running_statistics: false,
            momentum: 0.3,
            smoothing: Some(0.1),
            seed: 7,
            dims: boundary.dims(),
            labels: vec![0, 1, 2, 1],
        };
        let part = PartRequest {
            header,
            state: block_on(state(&model, start)).unwrap(),
            input: block_on(readback::to_f32_vec(boundary)).unwrap(),
        };
        (model, part)
    }

    #[test]
    fn a_replica_computes_a_part_as_the_model_whose_state_it_was_sent() {
        let (model, part) = model_and_part(1);
        let (state_len, gradients_len) = sizes(&model, part.header.start);
        assert_eq!(part.state.len(), state_len);
        // The last three blocks of MobileNetV2 with their BatchNorms' statistics, and a 3-class head.
        assert!(
            gradients_len > 1_000_000 && gradients_len < state_len,
            "{gradients_len} of {state_len}"
        );
        let here = block_on(compute_part(&model, &part.header, &part.input)).unwrap();
        // A replica whose own model was initialised from other random numbers.
        let mut replica = Replica::new(Device::flex());
        let there = block_on(replica.run(&part)).unwrap();
        assert_eq!(there.gradients.len(), gradients_len);
        assert_eq!(there.logits.len(), 4 * 3);
        assert!(there.gradients.iter().any(|&g| g != 0.0));
        assert_eq!(here, there, "the replica's part differs from the model's");
        // Its model is kept for the next part, loaded with that part's state.
        let (other, next) = model_and_part(3);
        let here = block_on(compute_part(&other, &next.header, &next.input)).unwrap();
        assert_eq!(here, block_on(replica.run(&next)).unwrap());
    }

    /// A step of 7 images in parts of 4 and 3, the second computed by a replica, moves the running
    /// statistics of the first BatchNorm that trains (whose input does not depend on how the batch
    /// was split) by the whole batch's mean and by the parts' variances: the whole batch's variance
    /// less the spread between the parts' means.
    #[test]
    fn parts_move_the_running_statistics_by_both_parts() {
        let device = Device::flex();
        let start = KIND.architecture().num_body_blocks() - 3;
        let model = || {
            let mut model = KIND.architecture().init(3, &device).train();
            crate::freeze::freeze_to(&mut model, start).unwrap();
            model.set_running_statistics(false);
            model.set_batch_norm_momentum(0.3);
            model
        };
        // Two models alike in what trains, the second loaded from the first (not from the same seed:
        // the device's random numbers are one stream for the process, which other tests draw from).
        let whole = model();
        let split = load_state(model(), start, &block_on(state(&whole, start)).unwrap());
        // Random activations entering block `start`, spread between images (a random network's own
        // fade to almost nothing there).
        let [_, channels, height, width] = whole
            .valid()
            .forward_prefix(start, Tensor::zeros([1, 3, 64, 64], &device))
            .dims();
        let boundary = Tensor::<4>::random([7, channels, height, width], Distribution::Normal(0.5, 2.0), &device);
        let labels = [0, 1, 2, 1, 0, 2, 2];
        let header = |range: std::ops::Range<usize>| PartHeader {
            kind: KIND,
            classes: 3,
            start,
            running_statistics: false,
            momentum: 0.3,
            smoothing: None,
            seed: 3,
            dims: [range.len(), channels, height, width],
            labels: labels[range].to_vec(),
        };
        let first_norm = |model: &ImageClassifier| {
            let norm = &model.block_convs(start)[0].norm;
            let values = Tensor::cat(vec![norm.running_mean.value_sync(), norm.running_var.value_sync()], 0);
            block_on(readback::to_f32_vec(values)).unwrap()
        };
        let before = first_norm(&split);
        // The whole batch as one part.
        let _ = part_loss(&whole, &header(0..7), boundary.clone().autodiff());
        // The first four images here, the last three on a replica sent the state before them.
        let part = PartRequest {
            header: header(4..7),
            state: block_on(state(&split, start)).unwrap(),
            input: block_on(readback::to_f32_vec(boundary.clone().narrow(0, 4, 3))).unwrap(),
        };
        let _ = part_loss(&split, &header(0..4), boundary.narrow(0, 0, 4).autodiff());
        let answer = block_on(Replica::new(Device::flex()).run(&part)).unwrap();
        assert_eq!(answer.running.len(), running_len(&split, start));
        let first_part_only = first_norm(&split);
        merge_running(&split, start, 4, &answer.running, 3);
        let (merged, whole) = (first_norm(&split), first_norm(&whole));
        // The whole batch's update, its variance less what the spread between the parts' means adds
        // (`m·a·b·(μ₁ − μ₂)²`, the difference of the parts' means read from their running means).
        let (momentum, a, b) = (0.3f32, 4.0f32 / 7.0, 3.0f32 / 7.0);
        let channels = whole.len() / 2;
        let spread: Vec<f32> = (0..channels)
            .map(|c| a * b * (first_part_only[c] - answer.running[c]).powi(2) / momentum)
            .collect();
        let expected: Vec<f32> = (0..2 * channels)
            .map(|i| {
                if i < channels {
                    whole[i]
                } else {
                    whole[i] - spread[i - channels]
                }
            })
            .collect();
        // How far from that, relative to how far the whole batch moved them.
        let largest = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let moved = largest(&whole, &before);
        let off = |values: &[f32]| largest(values, &expected) / moved;
        let spread_share = spread.iter().fold(0.0f32, |m, &s| m.max(s)) / moved;
        println!(
            "the whole batch moved them by up to {moved:e} (the spread between the parts' means up to {spread_share:e} of that); \
             off the expected: merged parts {:e}, the first part alone {:e}, the whole batch {:e}",
            off(&merged),
            off(&first_part_only),
            off(&whole)
        );
        assert!(moved > 1e-4, "the whole batch moved the statistics");
        assert!(spread_share > 1e-2, "the parts' means differ");
        assert!(off(&first_part_only) > 0.05, "the first part alone is not both");
        assert!(
            off(&merged) < 1e-4,
            "merged parts are not the whole batch's mean and the parts' variances"
        );
    }

    #[test]
    fn a_replica_refuses_a_part_of_the_wrong_size() {
        let (_, mut part) = model_and_part(1);
        part.state.pop();
        let mut replica = Replica::new(Device::flex());
        assert!(matches!(block_on(replica.run(&part)), Err(PeerError::State { .. })));
        let (_, mut part) = model_and_part(1);
        part.input.truncate(10);
        assert!(matches!(block_on(replica.run(&part)), Err(PeerError::Input { .. })));
    }

    #[test]
    fn parts_add_up_to_their_mean_by_images() {
        let (model, part) = model_and_part(1);
        let start = part.header.start;
        // This thread's part: three images; theirs: a made-up gradient of one image.
        let (loss, _) = part_loss(&model, &part.header, {
            let device = Device::flex();
            Tensor::<4>::from_data(TensorData::new(part.input.clone(), part.header.dims), &device).autodiff()
        });
        let mut grads = loss.backward();
        let mine = block_on(gradients(&model, start, &grads)).unwrap();
        let theirs: Vec<f32> = (0..mine.len()).map(|i| (i % 7) as f32 - 3.0).collect();
        add_part(&model, start, &mut grads, 3, &theirs, 1);
        let sum = block_on(gradients(&model, start, &grads)).unwrap();
        for ((&sum, &mine), &theirs) in sum.iter().zip(&mine).zip(&theirs) {
            let expected = mine * 0.75 + theirs * 0.25;
            assert!(
                (sum - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "{sum} vs {expected}"
            );
        }
    }
}
