//! The compute device and the pretrained models: fetched from the origin, verified; the move to the
//! CPU when the GPU is lost.

use burn::prelude::*;
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::readback;
use graft_engine::weights::{self, Manifest};
use js_sys::Uint8Array;
use wasm_bindgen::JsCast;

use crate::device::{self, ComputeDevice};
use graft_app::protocol::{Work, WorkerEvent};

use super::serve::import;
use super::state::STATE;
use super::{fail, post, project_store};

pub(super) fn compute_device() -> Result<Device, String> {
    STATE
        .with_borrow(|state| state.device.as_ref().map(|d| d.device().clone()))
        .ok_or_else(|| "the compute device is not ready yet".to_string())
}

/// Fetches a file the app serves (the worker's URL is the app's root).
pub(super) async fn fetch(path: &str) -> Result<Vec<u8>, String> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let response = wasm_bindgen_futures::JsFuture::from(scope.fetch_with_str(path))
        .await
        .map_err(|e| format!("{path}: could not be fetched ({e:?})"))?;
    let response: web_sys::Response = response.unchecked_into();
    if !response.ok() {
        return Err(format!("{path}: HTTP {}", response.status()));
    }
    let buffer = response.array_buffer().map_err(|e| format!("{path}: {e:?}"))?;
    let buffer = wasm_bindgen_futures::JsFuture::from(buffer)
        .await
        .map_err(|e| format!("{path}: the download broke off ({e:?})"))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// The pretrained ImageNet model of `kind`, fetched and verified once.
pub(super) async fn pretrained(kind: ModelKind) -> Result<ImageClassifier, String> {
    if let Some(model) = STATE.with_borrow(|state| state.pretrained.get(&kind).cloned()) {
        return Ok(model);
    }
    let manifest: Manifest = serde_json::from_slice(&fetch("models/manifest.json").await?)
        .map_err(|e| format!("models/manifest.json: {e}"))?;
    let entry = manifest
        .entry(kind)
        .ok_or_else(|| format!("{kind} is not among the served models"))?
        .clone();
    post(
        &WorkerEvent::Notice {
            message: format!(
                "Loading the pretrained {} weights ({:.1} MB)…",
                kind.card().display_name,
                entry.bytes as f64 / 1e6
            ),
        },
        Vec::new(),
    );
    let bytes = fetch(&format!("models/{}", entry.file)).await?;
    let model = weights::load_pretrained(kind, &entry, bytes, &compute_device()?).map_err(|e| e.to_string())?;
    STATE.with_borrow_mut(|state| state.pretrained.insert(kind, model.clone()));
    Ok(model)
}

/// Switches this worker to the CPU backend after the GPU failed (`reason`): the badge says so, and
/// what lived on the GPU (the pretrained models, a trained model) is dropped, to be loaded again on
/// the CPU when needed (a trained model from the project's storage).
pub(super) fn fall_back_to_cpu(reason: &str) -> ComputeDevice {
    let cpu = device::fall_back_to_cpu(reason);
    STATE.with_borrow_mut(|state| {
        state.device = Some(cpu.clone());
        state.pretrained.clear();
        state.trained = None;
    });
    post(
        &WorkerEvent::Ready {
            device: cpu.label(),
            gpu: false,
        },
        Vec::new(),
    );
    super::helpers::start_on_cpu();
    cpu
}

/// After work on the GPU failed: whether the GPU is gone (a one-value read-back says so), and if it is,
/// the switch to the CPU — the trained model reloaded there from the project's storage, the person
/// told that `what` runs again on the CPU. True when the work should be tried again.
pub(super) async fn recovered_from_gpu_loss(what: &str) -> bool {
    let device = STATE.with_borrow(|state| state.device.clone());
    let Some(ComputeDevice::WebGpu { device, .. }) = device else {
        return false;
    };
    let cause = match readback::to_f32_vec(Tensor::<1>::zeros([1], &device)).await {
        Ok(_) | Err(readback::ReadbackError::Conversion(_)) => return false,
        Err(readback::ReadbackError::DeviceLost(cause)) => cause,
        Err(other) => other.to_string(),
    };
    fall_back_to_cpu(&cause);
    post(
        &WorkerEvent::Notice {
            message: format!("The GPU was lost ({cause}). {what} again on the CPU (slower)."),
        },
        Vec::new(),
    );
    if let Some(store) = project_store()
        && let Ok(Some(bytes)) = store.load_model().await
        && let Err(message) = import("the stored model", &bytes)
    {
        fail(
            Work::Restore,
            format!("the trained model could not be moved to the CPU: {message}"),
        );
    }
    true
}
