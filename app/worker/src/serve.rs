//! What the trained model serves: predictions, export, import.

use std::rc::Rc;

use burn::prelude::*;
use graft_engine::bundle::{self, BundleHeader};
use graft_engine::export::{self, ExportFormat, ExportedFile};
use graft_engine::inference::{self, FrozenClassifier};
use graft_engine::model::{ImageClassifier, ModelKind, Probes};
use graft_engine::{metrics, preprocess, readback};

use graft_app::protocol::{Work, WorkerEvent};

use super::images::frame_png;
use super::models::{compute_device, recovered_from_gpu_loss};
use super::persist::keep_model;
use super::state::{STATE, TrainedModel};
use super::{fail, post};

/// Classifies a picture beside the inbox (again on the CPU if the GPU is lost meanwhile).
pub(super) fn start_predict(picture: u64, bytes: Vec<u8>) {
    wasm_bindgen_futures::spawn_local(async move {
        let mut result = predict(&bytes).await;
        if result.is_err() && recovered_from_gpu_loss("Classifying your picture").await {
            result = predict(&bytes).await;
        }
        answer(picture, result);
    });
}

/// Classifies a webcam frame (`width x height` RGBA) beside the inbox.
pub(super) fn start_predict_frame(picture: u64, rgba: Vec<u8>, width: u32, height: u32) {
    wasm_bindgen_futures::spawn_local(async move {
        answer(picture, predict(&frame_png(&rgba, width, height)).await);
    });
}

fn answer(picture: u64, result: Result<Vec<(String, f32)>, String>) {
    match result {
        Ok(top) => post(&WorkerEvent::Prediction { picture, top }, Vec::new()),
        Err(message) => fail(Work::Predict, message),
    }
}

/// Exports the trained model as `format` beside the inbox: its files go to the page.
pub(super) fn start_export(format: ExportFormat) {
    wasm_bindgen_futures::spawn_local(async move {
        let mut result = export(format).await;
        if result.is_err() && recovered_from_gpu_loss("Exporting the model").await {
            result = export(format).await;
        }
        match result {
            Ok(files) => {
                let (files, payloads) = files.into_iter().map(|f| (f.name, f.bytes)).unzip();
                post(&WorkerEvent::Exported { files }, payloads)
            }
            Err(message) => fail(Work::Export, message),
        }
    });
}

/// Loads a model file exported earlier and keeps it with the project.
pub(super) async fn import_and_keep(name: &str, bytes: Vec<u8>) {
    match import(name, &bytes) {
        Ok((classes, model)) => {
            post(&WorkerEvent::ModelReady { classes, model }, Vec::new());
            keep_model(bytes).await;
        }
        Err(message) => fail(Work::Import, message),
    }
}

async fn predict(bytes: &[u8]) -> Result<Vec<(String, f32)>, String> {
    #[cfg(feature = "test-hooks")]
    if super::run::INJECTED.get() == Some(graft_app::protocol::InjectedFault::PredictPanic) {
        super::run::INJECTED.set(None);
        panic!("the panic a test asked for, while classifying a picture");
    }
    let image = preprocess::decode(bytes).map_err(|e| e.to_string())?;
    let (model, frozen, serial, header) = STATE
        .with_borrow(|state| {
            state
                .trained
                .as_ref()
                .map(|t| (t.model.clone(), t.frozen.clone(), t.serial, t.header.clone()))
        })
        .ok_or("train or import a model first")?;
    let frozen = match frozen {
        Some(frozen) => frozen,
        None => {
            // On the CPU, compiled for the kernels. On a GPU, the model as it trained: its shaders are
            // compiled already, and a folded copy would need new ones (a minute on a software GPU).
            let frozen = Rc::new(if inference::compiles_for(&model.classifier.weight.device()) {
                FrozenClassifier::new(&model, Probes::Off)
                    .await
                    .map_err(|e| e.to_string())?
            } else {
                FrozenClassifier::Burn(model.valid())
            });
            STATE.with_borrow_mut(|state| {
                if let Some(trained) = state.trained.as_mut().filter(|t| t.serial == serial) {
                    trained.frozen = Some(frozen.clone());
                }
            });
            frozen
        }
    };
    let device = model.classifier.weight.device();
    // As `graft predict` prepares it: the view and normalisation the model's header says.
    let input = header.input(&image, &device);
    let logits = frozen.logits(input).await.map_err(|e| e.to_string())?;
    let probs = metrics::softmax(&logits);
    let classes = &header.classes;
    Ok(metrics::top_k(&probs, classes.len().min(5))
        .into_iter()
        .map(|(class, prob)| (classes[class].clone(), prob))
        .collect())
}

/// The trained model on the CPU (saving reads tensors synchronously: copied with async read-backs)
/// with its header, and the name its files take.
async fn trained_on_cpu() -> Result<(BundleHeader, ImageClassifier, String), String> {
    let (model, header) = STATE
        .with_borrow(|state| state.trained.as_ref().map(|t| (t.model.clone(), t.header.clone())))
        .ok_or("train or import a model first")?;
    // Saving reads tensors synchronously: copy the model to the CPU with async read-backs first.
    let cpu = readback::module_to_device(model, &Device::flex())
        .await
        .map_err(|e| e.to_string())?;
    let stem = format!("graft-{}", header.model.card().name);
    Ok((header, cpu, stem))
}

/// The trained model's `.graft` file: its name and bytes.
pub(super) async fn model_file() -> Result<(String, Vec<u8>), String> {
    let (header, cpu, stem) = trained_on_cpu().await?;
    let bytes = bundle::encode(header, &cpu).map_err(|e| e.to_string())?;
    Ok((format!("{stem}.{}", bundle::EXTENSION), bytes))
}

/// The trained model as `format` (as `graft export` makes it from the model's file; the web page
/// as one `.zip`, with the runtime module the app serves beside its models).
async fn export(format: ExportFormat) -> Result<Vec<ExportedFile>, String> {
    let runtime = match format {
        ExportFormat::Web => Some(
            super::models::fetch(&format!("runtime/{}", export::web::RUNTIME_FILE))
                .await
                .map_err(|e| format!("the web page's runtime is not available: {e}"))?,
        ),
        _ => None,
    };
    let (header, cpu, stem) = trained_on_cpu().await?;
    export::encode(&header, &cpu, format, &stem, runtime.as_deref())
        .await
        .map_err(|e| e.to_string())
}

pub(super) fn import(name: &str, bytes: &[u8]) -> Result<(Vec<String>, ModelKind), String> {
    let (header, model) = bundle::decode(name, bytes, &Device::flex()).map_err(|e| e.to_string())?;
    let device = compute_device()?;
    let model = model.to_device(&device);
    STATE.with_borrow_mut(|state| state.trained = Some(TrainedModel::new(header.clone(), model)));
    Ok((header.classes, header.model))
}
