//! Measuring the pictures and recommending a strategy.

use std::rc::Rc;

use graft_engine::data::Dataset;
use graft_engine::model::ModelKind;
use graft_engine::recommend;

use graft_app::protocol::{Work, WorkerEvent};

use super::models::{compute_device, pretrained, recovered_from_gpu_loss};
use super::state::STATE;
use super::{fail, post, yield_now};

/// Measures `dataset` with `kind` and recommends, beside the inbox (again on the CPU if the GPU is
/// lost meanwhile).
pub(super) fn start(kind: ModelKind, dataset: Rc<Dataset>) {
    wasm_bindgen_futures::spawn_local(async move {
        let mut result = run_recommend(kind, dataset.clone()).await;
        if result.is_err() && recovered_from_gpu_loss("Measuring your pictures").await {
            result = run_recommend(kind, dataset).await;
        }
        if let Err(message) = result {
            fail(Work::Recommend, message);
        }
    });
}

async fn run_recommend(kind: ModelKind, dataset: Rc<Dataset>) -> Result<(), String> {
    dataset.validate().map_err(|e| e.to_string())?;
    let model = pretrained(kind).await?;
    let device = compute_device()?;
    let mut progress = Progress;
    let started = js_sys::Date::now();
    let mut embeddings = STATE.with_borrow_mut(|state| std::mem::take(&mut state.embeddings));
    let signals = recommend::measure_with_cache(
        &model,
        kind,
        &dataset,
        &device,
        recommend::DEFAULT_SAMPLE_PER_CLASS,
        &mut progress,
        &mut embeddings,
    )
    .await;
    STATE.with_borrow_mut(|state| state.embeddings = embeddings);
    let signals = signals.map_err(|e| e.to_string())?;
    let seconds = (js_sys::Date::now() - started) / 1000.0;
    post(
        &WorkerEvent::ModelSpeed {
            model: kind,
            images_per_second: signals.sampled_images as f64 / seconds.max(1e-3),
        },
        Vec::new(),
    );
    let recommendation = recommend::recommend(&model, &dataset.classes, &dataset.class_counts(), signals);
    post(&WorkerEvent::Recommendation(Box::new(recommendation)), Vec::new());
    Ok(())
}

/// Reports the measurement's progress and lets the worker breathe between batches.
pub(super) struct Progress;

impl recommend::MeasureProgress for Progress {
    async fn progress(&mut self, done: usize, total: usize) {
        post(&WorkerEvent::Measuring { done, total }, Vec::new());
        yield_now().await;
    }
}
