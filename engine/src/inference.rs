//! Inference of a frozen classifier, the fastest way its device allows.
//!
//! On the CPU backend the classifier is compiled for the hand-written kernels ([`CompiledClassifier`]):
//! in wasm (a browser without WebGPU, or after the GPU was lost) they are several times faster than
//! Burn's single-threaded CPU backend; natively (the CLI, the native tests) they share each batch out
//! over every core and run MobileNetV2 at about twice the pace of Burn's backend on the same cores
//! (`benches/embedding.rs`). On WebGPU Burn runs it, with its BatchNorms folded. Both give the same
//! numbers to float rounding (tested against each other and against PyTorch's logits).
//!
//! On the kernels, embeddings, frozen-prefix activations and probes are shared with this thread's
//! helpers when the browser's worker installed them (`crate::helpers`: one helper worker per spare
//! core).

use burn::prelude::*;

use crate::helpers::Work;
use crate::model::{CompiledClassifier, ImageClassifier, Probes};
use crate::readback::{self, ReadbackError};

/// A frozen classifier ready to run on its device.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one at a time, held for a run or a trained model
pub enum FrozenClassifier {
    /// Burn on the model's own device (BatchNorm folded, or not when probing).
    Burn(ImageClassifier),
    /// The CPU kernels; outputs that stay tensors go to `device`.
    Compiled { net: CompiledClassifier, device: Device },
}

/// Whether [`FrozenClassifier::new`] compiles for the CPU kernels on `device`: the CPU backend.
pub fn compiles_for(device: &Device) -> bool {
    device.clone().without_autodiff() == Device::flex()
}

impl FrozenClassifier {
    /// `model` frozen for inference on the device its weights are on (see the module's
    /// documentation for which form that is).
    pub async fn new(model: &ImageClassifier, probes: Probes) -> Result<Self, ReadbackError> {
        if compiles_for(&model.classifier.weight.device()) {
            Self::compiled(model, probes).await
        } else {
            Ok(Self::burn(model, probes))
        }
    }

    /// `model` compiled for the CPU kernels, whatever its device.
    pub async fn compiled(model: &ImageClassifier, probes: Probes) -> Result<Self, ReadbackError> {
        let device = model.classifier.weight.device().without_autodiff();
        Ok(Self::Compiled {
            net: CompiledClassifier::compile(&model.valid(), probes).await?,
            device,
        })
    }

    /// `model` on Burn.
    pub fn burn(model: &ImageClassifier, probes: Probes) -> Self {
        Self::Burn(match probes {
            Probes::Off => model.valid().folded_for_inference(),
            Probes::On => model.valid(),
        })
    }

    /// Whether this runs on the CPU kernels.
    pub fn is_compiled(&self) -> bool {
        matches!(self, Self::Compiled { .. })
    }

    pub fn embedding_width(&self) -> usize {
        match self {
            Self::Burn(model) => model.embedding_width(),
            Self::Compiled { net, .. } => net.embedding_width(),
        }
    }

    /// Pooled embeddings `[batch, width]`, read back.
    ///
    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]`
    pub async fn embeddings(&self, images: Tensor<4>) -> Result<Vec<f32>, ReadbackError> {
        match self {
            Self::Burn(model) => readback::to_f32_vec(model.features(images)).await,
            Self::Compiled { net, .. } => {
                let dims = images.dims();
                let images = readback::to_f32_vec(images).await?;
                Ok(net.run(Work::Embeddings, &images, dims).await.values)
            }
        }
    }

    /// Logits `[batch, classes]`, read back.
    ///
    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]`
    pub async fn logits(&self, images: Tensor<4>) -> Result<Vec<f32>, ReadbackError> {
        match self {
            Self::Burn(model) => readback::to_f32_vec(model.forward(images)).await,
            Self::Compiled { net, .. } => Ok(net.classify(&self.embeddings(images).await?)),
        }
    }

    /// Logits `[batch, classes]`, embeddings `[batch, width]` and, per body block and convolution,
    /// `[2 * channels]`: the mean over the batch's pixels of what the BatchNorm receives, then the mean
    /// of its squares (see [`ImageClassifier::forward_probed`]); everything read back. Needs
    /// [`Probes::On`].
    ///
    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]`
    pub async fn probed(&self, images: Tensor<4>) -> Result<(Vec<f32>, Vec<f32>, Vec<Vec<Vec<f32>>>), ReadbackError> {
        match self {
            Self::Burn(model) => {
                let (logits, embeddings, probes) = model.forward_probed(images);
                let mut host = Vec::with_capacity(probes.len());
                for block in probes {
                    let mut convs = Vec::with_capacity(block.len());
                    for probe in block {
                        convs.push(readback::to_f32_vec(probe).await?);
                    }
                    host.push(convs);
                }
                Ok((
                    readback::to_f32_vec(logits).await?,
                    readback::to_f32_vec(embeddings).await?,
                    host,
                ))
            }
            Self::Compiled { net, .. } => {
                let dims = images.dims();
                let images = readback::to_f32_vec(images).await?;
                let (embeddings, probes) = net.run_probed(&images, dims).await;
                Ok((net.classify(&embeddings), embeddings, probes))
            }
        }
    }

    /// The activation entering body block `count`, as a tensor on the plain device.
    ///
    /// # Shapes
    /// - `images`: normalised `[batch, 3, height, width]` -> the activation after block `count - 1`
    pub async fn prefix(&self, count: usize, images: Tensor<4>) -> Result<Tensor<4>, ReadbackError> {
        match self {
            Self::Burn(model) => Ok(model.forward_prefix(count, images)),
            Self::Compiled { net, device } => {
                let dims = images.dims();
                let images = readback::to_f32_vec(images).await?;
                let out = net.run(Work::Prefix(count), &images, dims).await;
                Ok(Tensor::from_data(TensorData::new(out.values, out.dims), device))
            }
        }
    }
}
