//! Helpers: other threads of execution that take a share of a batch through a frozen network compiled
//! for the CPU kernels, while this thread runs the rest.
//!
//! In the browser these are helper workers, one per spare core: wasm threads would need shared memory,
//! which a page has only when it is cross-origin isolated, so each helper holds its own copy of the
//! network (sent once as a network file) and receives its share of each batch as a message. Natively
//! nobody installs helpers: the kernels share a batch over the machine's threads themselves.
//!
//! The training worker installs its helpers once for its thread ([`install`]), as rayon has a global
//! pool; from then on every [`FrozenClassifier`](crate::inference::FrozenClassifier) on the CPU
//! kernels shares its embeddings and frozen-prefix activations with them ([`run_shared`]). A share is
//! computed the same way wherever it runs, so the numbers do not depend on how a batch was shared;
//! a helper that fails has its share computed here and is not asked again.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use graft_kernels::{BodyOutput, Network, NetworkSpec};

pub use graft_kernels::Work;

/// A compiled network as helpers receive it: a key that names it for this thread's life, and its
/// network file (`graft_kernels::file`), which a helper that does not hold the key is sent first.
#[derive(Debug, Clone)]
pub struct SharedNetwork {
    pub key: u64,
    pub file: Arc<[u8]>,
}

impl SharedNetwork {
    /// `spec` as helpers receive it, under a key no other network of this process has.
    pub fn new(spec: &NetworkSpec) -> Result<Self, graft_kernels::NetworkFileError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            key: NEXT.fetch_add(1, Ordering::Relaxed),
            file: graft_kernels::file::to_bytes(spec, &Default::default())?.into(),
        })
    }
}

/// A helper could not compute its share (it failed to start, lost its network, or stopped).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("helper: {0}")]
pub struct HelperError(pub String);

/// A helper's answer to come: the values of its share, in the layout [`Work::run`] gives.
pub type Answer = Pin<Box<dyn Future<Output = Result<Vec<f32>, HelperError>>>>;

/// Somewhere shares of a batch can run.
pub trait Helpers {
    /// How many helpers can take a share now (0 while they start, or when all failed).
    fn ready(&self) -> usize;

    /// Starts `work` on `images` (NCHW, `dims`) on helper `index` (below [`ready`](Self::ready)) with
    /// `network`, sending it the network first when it does not hold it. Shares sent to one helper
    /// are answered in the order they were sent.
    fn run(&self, index: usize, network: &SharedNetwork, work: Work, images: Vec<f32>, dims: [usize; 4]) -> Answer;

    /// Starts `share` of a training step (`graft_kernels::step`) on its operands `a` and `b` on
    /// helper `index` (below [`ready`](Self::ready)), answered in order with the shares of batches.
    /// Helpers that take no such shares answer with an error (the default).
    fn run_step(&self, index: usize, share: Share, a: &[f32], b: &[f32]) -> Answer {
        let _ = (index, share, a, b);
        Box::pin(async { Err(HelperError("this helper takes no training step shares".into())) })
    }
}

pub use graft_kernels::step::{Product, Share};

thread_local! {
    static INSTALLED: RefCell<Option<Rc<dyn Helpers>>> = const { RefCell::new(None) };
}

/// Makes `helpers` take shares of every batch this thread runs on the CPU kernels from now on
/// (`None`: no helpers again).
pub fn install(helpers: Option<Rc<dyn Helpers>>) {
    INSTALLED.set(helpers);
}

/// The helpers installed on this thread, if any.
pub fn installed() -> Option<Rc<dyn Helpers>> {
    INSTALLED.with_borrow(Clone::clone)
}

/// `work` on `images` (NCHW, `dims`) by `net`, the batch shared with this thread's helpers when they
/// are installed and ready and `shared` names `net` for them: this thread takes the first share and
/// each ready helper one of the rest (a picture at least each), all running at once. A share whose
/// helper fails is computed here. Without helpers this is [`Work::run`].
pub async fn run_shared(
    net: &Network,
    shared: Option<&SharedNetwork>,
    work: Work,
    images: &[f32],
    dims: [usize; 4],
) -> BodyOutput {
    let (first, rest) = shares(net, shared, work, images, dims).await;
    let mut values = first.values;
    for (_, theirs) in rest {
        values.extend_from_slice(&theirs);
    }
    let [_, channels, height, width] = first.dims;
    BodyOutput {
        values,
        dims: [dims[0], channels, height, width],
    }
}

/// [`Network::probed`] on `images`, shared as [`run_shared`] shares: the embeddings in picture
/// order, and each probe the mean of the shares' means weighted by their pictures (the batch's
/// mean: every picture has as many pixels at a layer; it can differ from one thread's in the last
/// bits).
///
/// # Panics
/// As [`Network::probed`]: when `net` was compiled with its BatchNorms folded (a bug in the caller).
#[allow(clippy::type_complexity)] // the shape `probed` returns
pub async fn probed_shared(
    net: &Network,
    shared: Option<&SharedNetwork>,
    images: &[f32],
    dims: [usize; 4],
) -> (Vec<f32>, Vec<Vec<Vec<f32>>>) {
    let (first, rest) = shares(net, shared, Work::Probed, images, dims).await;
    let unflatten = |values: &[f32], pictures| {
        net.unflatten_probed(values, pictures)
            .expect("a share checked against this thread's")
    };
    let (mut embeddings, mut probes) = unflatten(&first.values, first.dims[0]);
    if rest.is_empty() {
        return (embeddings, probes);
    }
    let weigh = |probes: &[Vec<Vec<f32>>], pictures: usize| -> Vec<Vec<Vec<f64>>> {
        probes
            .iter()
            .map(|convs| {
                convs
                    .iter()
                    .map(|probe| probe.iter().map(|&v| f64::from(v) * pictures as f64).collect())
                    .collect()
            })
            .collect()
    };
    let mut sums = weigh(&probes, first.dims[0]);
    for (pictures, values) in rest {
        let (theirs, their_probes) = unflatten(&values, pictures);
        embeddings.extend_from_slice(&theirs);
        for (sum, add) in sums
            .iter_mut()
            .flatten()
            .flatten()
            .zip(weigh(&their_probes, pictures).iter().flatten().flatten())
        {
            *sum += add;
        }
    }
    let batch = dims[0] as f64;
    for (probe, sum) in probes
        .iter_mut()
        .flatten()
        .flatten()
        .zip(sums.iter().flatten().flatten())
    {
        *probe = (sum / batch) as f32;
    }
    (embeddings, probes)
}

/// `work` on a batch shared out: this thread's share (its output, the first pictures), then each
/// other share's number of pictures and values, in picture order. A helper's answer that fails or
/// is not as long as this thread's share says it must be is computed here instead.
async fn shares(
    net: &Network,
    shared: Option<&SharedNetwork>,
    work: Work,
    images: &[f32],
    dims: [usize; 4],
) -> (BodyOutput, Vec<(usize, Vec<f32>)>) {
    let batch = dims[0];
    let helpers = installed().filter(|_| shared.is_some());
    let parts = helpers.as_ref().map_or(1, |helpers| (helpers.ready() + 1).min(batch));
    let (Some(helpers), Some(shared), true) = (helpers, shared, parts > 1) else {
        return (work.run(net, images, dims), Vec::new());
    };
    let per_picture = images.len() / batch;
    let share = batch.div_ceil(parts);
    let ranges: Vec<std::ops::Range<usize>> = (0..batch)
        .step_by(share)
        .map(|start| start..(start + share).min(batch))
        .collect();
    let dims_of = |range: &std::ops::Range<usize>| [range.len(), dims[1], dims[2], dims[3]];
    let pictures = |range: &std::ops::Range<usize>| &images[range.start * per_picture..range.end * per_picture];
    // The helpers' shares go out first, so that they compute while this thread computes its own.
    let answers: Vec<Answer> = ranges[1..]
        .iter()
        .enumerate()
        .map(|(index, range)| helpers.run(index, shared, work, pictures(range).to_vec(), dims_of(range)))
        .collect();
    let mine = work.run(net, pictures(&ranges[0]), dims_of(&ranges[0]));
    // What a share gives: values per picture, plus a fixed part (the probes' means).
    let fixed = match work {
        Work::Probed => mine.values.len() - ranges[0].len() * net.embedding_width(),
        Work::Embeddings | Work::Prefix(_) => 0,
    };
    let per_output = (mine.values.len() - fixed) / ranges[0].len();
    let mut rest = Vec::with_capacity(answers.len());
    for (answer, range) in answers.into_iter().zip(&ranges[1..]) {
        let values = match answer.await {
            Ok(theirs) if theirs.len() == range.len() * per_output + fixed => theirs,
            _ => work.run(net, pictures(range), dims_of(range)).values,
        };
        rest.push((range.len(), values));
    }
    (mine, rest)
}
