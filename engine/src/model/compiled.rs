//! A frozen classifier compiled for the hand-written CPU kernels of `graft-kernels`: its weights read
//! once to the host as the kernels' framework-free [`NetworkSpec`] (BatchNorm folded into each
//! convolution, or kept apart for the probes), which `graft_kernels::Network` lays out for NHWC and
//! runs one image at a time.
//!
//! Why: in wasm, Burn's CPU backend is single-threaded and its matrix products (the `gemm` crate)
//! reach about 5 GMAC/s on MobileNetV2's 1x1 convolutions; these kernels reach about 21 on the same
//! shapes (the browser bench's `pointwise_products_on_cpu`). Only inference of a frozen network goes through here — embeddings, predictions, the frozen
//! prefix of a partly frozen one, the recommender's measurements; training (autodiff) stays on Burn.

use graft_kernels::{Affine, ConvSpec, LayerSpec, LinearSpec, Network, NetworkSpec, Padding};

use super::blocks::{ConvBnAct, InvertedResidual};
use super::classifier::ImageClassifier;
use crate::helpers::{self, SharedNetwork, Work};
use crate::readback::{self, ReadbackError};

pub use graft_kernels::BodyOutput;

/// With or without the statistics of what each BatchNorm receives (the recommender's probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probes {
    /// BatchNorm folded into the weights: the fastest form.
    Off,
    /// Each convolution with its own weights, then its BatchNorm as a per-channel scale and shift, so
    /// that the statistics of the BatchNorm's input can be taken in between.
    On,
}

/// One conv -> BatchNorm -> (ReLU6), read back.
async fn conv_spec(block: &ConvBnAct, probes: Probes) -> Result<ConvSpec, ReadbackError> {
    let [channels, in_per_group, size, _] = block.conv.weight.dims();
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
            (weights, None, Some(Affine { scale, shift }))
        }
    };
    Ok(ConvSpec {
        out_channels: channels,
        in_per_group,
        groups: block.conv.groups,
        size,
        stride: block.conv.stride[0],
        padding: if block.uses_tf_same() {
            Padding::TfSame
        } else {
            Padding::Symmetric
        },
        relu6: block.has_activation(),
        weights,
        bias,
        norm,
    })
}

async fn residual_spec(block: &InvertedResidual, probes: Probes) -> Result<LayerSpec, ReadbackError> {
    Ok(LayerSpec::Residual {
        expand: match &block.expand {
            Some(expand) => Some(conv_spec(expand, probes).await?),
            None => None,
        },
        depthwise: conv_spec(&block.depthwise, probes).await?,
        project: conv_spec(&block.project, probes).await?,
        skip: block.has_residual(),
    })
}

/// `model` described for the kernels (its weights read back from any device through the async
/// read-back): what [`CompiledClassifier`] runs and what the offline web page export stores. With
/// [`Probes::On`] the model must not be folded already.
pub async fn network_spec(model: &ImageClassifier, probes: Probes) -> Result<NetworkSpec, ReadbackError> {
    let mut body = Vec::with_capacity(model.blocks.len() + 2);
    body.push(LayerSpec::Conv(conv_spec(&model.stem, probes).await?));
    for block in &model.blocks {
        body.push(residual_spec(block, probes).await?);
    }
    body.push(LayerSpec::Conv(conv_spec(&model.head_conv, probes).await?));
    let weights = readback::to_f32_vec(model.classifier.weight.val()).await?;
    let bias = match &model.classifier.bias {
        Some(bias) => Some(readback::to_f32_vec(bias.val()).await?),
        None => None,
    };
    let [inputs, outputs] = model.classifier.weight.dims();
    Ok(NetworkSpec {
        body,
        classifier: LinearSpec {
            inputs,
            outputs,
            weights,
            bias,
        },
    })
}

/// A frozen [`ImageClassifier`] compiled for the CPU kernels (see the module's documentation); it
/// derefs to the kernels' [`Network`] (`prefix`, `embeddings`, `classify`, `probed`), and [`run`]
/// shares a batch with this thread's helpers (`crate::helpers`) when they are installed.
///
/// [`run`]: CompiledClassifier::run
#[derive(Debug, Clone)]
pub struct CompiledClassifier {
    net: Network,
    /// The network as helpers receive it: made when it was compiled with helpers installed.
    shared: Option<SharedNetwork>,
}

impl CompiledClassifier {
    /// Reads `model`'s weights (from any device, through the async read-back) and lays them out for
    /// the kernels. With [`Probes::On`] the model must not be folded already.
    pub async fn compile(model: &ImageClassifier, probes: Probes) -> Result<Self, ReadbackError> {
        let spec = network_spec(model, probes).await?;
        // The spec comes from a model whose shapes Burn has already checked: a mismatch is a bug.
        let net = Network::new(&spec).expect("a model's own layers chain");
        // Likewise its file: the layers' JSON and the weights' safetensors from checked shapes.
        let shared = helpers::installed().map(|_| SharedNetwork::new(&spec).expect("a checked network's file"));
        Ok(Self { net, shared })
    }

    /// See [`Network::set_threads`].
    pub fn set_threads(&mut self, threads: Option<usize>) {
        self.net.set_threads(threads);
    }

    /// `work` on a batch `images` (NCHW, `dims`), shared with this thread's helpers when they are
    /// installed (see `crate::helpers::run_shared`): the same numbers either way.
    pub async fn run(&self, work: Work, images: &[f32], dims: [usize; 4]) -> BodyOutput {
        helpers::run_shared(&self.net, self.shared.as_ref(), work, images, dims).await
    }

    /// [`Network::probed`] on a batch, shared with this thread's helpers when they are installed (see
    /// `crate::helpers::probed_shared`).
    #[allow(clippy::type_complexity)] // the shape `probed` returns
    pub async fn run_probed(&self, images: &[f32], dims: [usize; 4]) -> (Vec<f32>, Vec<Vec<Vec<f32>>>) {
        helpers::probed_shared(&self.net, self.shared.as_ref(), images, dims).await
    }
}

impl std::ops::Deref for CompiledClassifier {
    type Target = Network;

    fn deref(&self) -> &Network {
        &self.net
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

    /// A batch shared out over threads gives the numbers one thread gives, bit for bit: every picture
    /// is computed the same way wherever it runs (and whatever batch it is in).
    #[test]
    fn threads_change_no_number() {
        let device = Device::flex();
        let model = perturbed(ModelKind::MobileNetV2, &device);
        let images = Tensor::<4>::random([5, 3, 45, 51], Distribution::Normal(0.0, 1.0), &device);
        let dims = images.dims();
        let input = host(images);
        let compile = |threads| {
            let mut net = pollster::block_on(CompiledClassifier::compile(&model, Probes::Off)).unwrap();
            net.set_threads(Some(threads));
            net
        };
        let (one, three) = (compile(1), compile(3));
        let embeddings = one.embeddings(&input, dims);
        assert!(
            three.embeddings(&input, dims) == embeddings,
            "embeddings differ on 3 threads"
        );
        for count in [0, 1, 5, one.num_body_blocks()] {
            assert!(
                three.prefix(count, &input, dims) == one.prefix(count, &input, dims),
                "the activation after {count} blocks differs on 3 threads"
            );
        }
        let width = one.embedding_width();
        let last = &input[4 * 3 * 45 * 51..];
        assert!(
            three.embeddings(last, [1, 3, 45, 51]) == embeddings[4 * width..],
            "a picture alone differs from the same picture in a batch"
        );
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

    /// Helpers as the browser's behave: each builds its own network from the file it is sent (once per
    /// network) and answers what it computed, or fails, or answers a share of the wrong size.
    struct FileHelpers {
        nets: std::cell::RefCell<Vec<Option<(u64, Network)>>>,
        answers: Vec<Result<(), &'static str>>,
        files_sent: std::cell::Cell<usize>,
        shares: std::cell::Cell<usize>,
    }

    impl helpers::Helpers for FileHelpers {
        fn ready(&self) -> usize {
            self.answers.len()
        }

        fn run(
            &self,
            index: usize,
            network: &SharedNetwork,
            work: Work,
            images: Vec<f32>,
            dims: [usize; 4],
        ) -> helpers::Answer {
            self.shares.set(self.shares.get() + 1);
            let mut nets = self.nets.borrow_mut();
            if nets[index].as_ref().map(|(key, _)| *key) != Some(network.key) {
                let (spec, _) = graft_kernels::file::from_bytes(&network.file).unwrap();
                nets[index] = Some((network.key, Network::new(&spec).unwrap()));
                self.files_sent.set(self.files_sent.get() + 1);
            }
            let values = work.run(&nets[index].as_ref().unwrap().1, &images, dims).values;
            let answer = match self.answers[index] {
                Ok(()) => Ok(values),
                Err("short") => Ok(values[1..].to_vec()),
                Err(why) => Err(helpers::HelperError(why.to_string())),
            };
            Box::pin(async move { answer })
        }
    }

    /// A batch shared with helpers (each with the network rebuilt from its file) gives the numbers
    /// this thread alone gives, bit for bit, in picture order; a helper that fails or answers the
    /// wrong amount has its share computed here; a network is sent to a helper once.
    #[test]
    fn helpers_change_no_number() {
        let device = Device::flex();
        let model = perturbed(ModelKind::MobileNetV2, &device);
        let images = Tensor::<4>::random([7, 3, 45, 51], Distribution::Normal(0.0, 1.0), &device);
        let dims = images.dims();
        let input = host(images);
        let mut alone = pollster::block_on(CompiledClassifier::compile(&model, Probes::Off)).unwrap();
        alone.set_threads(Some(1));
        assert!(alone.shared.is_none(), "compiled without helpers: nothing to share");
        for answers in [
            vec![Ok(())],
            vec![Ok(()), Ok(()), Ok(())],
            vec![Err("short"), Ok(()), Err("stopped")],
        ] {
            let pool = std::rc::Rc::new(FileHelpers {
                nets: std::cell::RefCell::new(vec![None; answers.len()]),
                answers: answers.clone(),
                files_sent: std::cell::Cell::new(0),
                shares: std::cell::Cell::new(0),
            });
            helpers::install(Some(pool.clone()));
            let mut shared = pollster::block_on(CompiledClassifier::compile(&model, Probes::Off)).unwrap();
            shared.set_threads(Some(1));
            let embeddings = pollster::block_on(shared.run(Work::Embeddings, &input, dims));
            assert!(
                embeddings.values == alone.embeddings(&input, dims),
                "{answers:?}: embeddings differ"
            );
            assert_eq!(
                pool.shares.get(),
                answers.len(),
                "{answers:?}: a share for every helper"
            );
            for count in [0, 1, 5, alone.num_body_blocks()] {
                assert!(
                    pollster::block_on(shared.run(Work::Prefix(count), &input, dims))
                        == alone.prefix(count, &input, dims),
                    "{answers:?}: the activations entering block {count} differ"
                );
            }
            assert_eq!(
                pool.files_sent.get(),
                answers.len(),
                "{answers:?}: the network sent once to each helper"
            );
            // The probes: embeddings bit for bit, each probe the batch's mean (to rounding).
            let probed = pollster::block_on(CompiledClassifier::compile(&model, Probes::On)).unwrap();
            let (embeddings, probes) = pollster::block_on(probed.run_probed(&input, dims));
            let (want_embeddings, want_probes) = probed.probed(&input, dims);
            assert!(embeddings == want_embeddings, "{answers:?}: probed embeddings differ");
            let (got, want) = (probes.concat().concat(), want_probes.concat().concat());
            assert_eq!(got.len(), want.len(), "{answers:?}: probes");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{answers:?}: a probe {g} where one thread gives {w}"
                );
            }
            assert_eq!(
                pool.files_sent.get(),
                2 * answers.len(),
                "{answers:?}: the probed network sent too"
            );
            // One picture stays here.
            let shares = pool.shares.get();
            let one = &input[..input.len() / 7];
            let got = pollster::block_on(shared.run(Work::Embeddings, one, [1, 3, 45, 51]));
            assert_eq!(got.values, alone.embeddings(one, [1, 3, 45, 51]));
            assert_eq!(pool.shares.get(), shares, "one picture is not shared");
            helpers::install(None);
        }
    }
}
