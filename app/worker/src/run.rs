//! A training run in the worker: started, relayed to the page, carried through what the device does
//! to it (out of memory, lost), stopped and continued, finished and kept.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::rc::Rc;

use burn::prelude::*;
use graft_engine::bundle::BundleHeader;
use graft_engine::cache::EmbeddingCache;
use graft_engine::data::Dataset;
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::readback;
use graft_engine::train::{self, TrainConfig, TrainError, TrainEvent, TrainObserver};

use crate::device::ComputeDevice;
#[cfg(feature = "test-hooks")]
use graft_app::protocol::InjectedFault;
use graft_app::protocol::{Work, WorkerEvent};

use super::models::{compute_device, fall_back_to_cpu, pretrained};
use super::persist::keep_model;
use super::serve::model_file;
use super::state::{STATE, STOP, STORE_WRITES, TrainedModel};
use super::{fail, notice, post, project_store, yield_now};

/// Relays training events to the page; cancels when a `Stop` arrived.
pub(super) struct Relay {
    pub(super) stop: Rc<Cell<bool>>,
}

#[cfg(feature = "test-hooks")]
thread_local! {
    /// A fault the tests asked for: out of GPU memory after the next training batch, or a panic in
    /// the next prediction (each only where it belongs).
    pub(super) static INJECTED: Cell<Option<InjectedFault>> = const { Cell::new(None) };
}

impl TrainObserver for Relay {
    fn event(&mut self, event: TrainEvent) -> ControlFlow<()> {
        #[cfg(feature = "test-hooks")]
        if matches!(event, TrainEvent::Batch { .. }) && INJECTED.get() == Some(InjectedFault::GpuOutOfMemory) {
            INJECTED.set(None);
            // Exactly what the device's uncaptured-error handler reports (see `device.rs`).
            readback::report_fault(readback::DeviceFault::OutOfMemory(
                "Out of Memory (injected for a test)".into(),
            ));
        }
        post(&WorkerEvent::Train(Box::new(event)), Vec::new());
        if self.stop.get() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    async fn between_batches(&mut self) {
        yield_now().await;
        // Let the person's edits reach storage before the next batch.
        while STORE_WRITES.with(Cell::get) > 0 {
            yield_now().await;
        }
    }
}

/// A stopped run that can go on where it stopped.
pub(super) struct Paused {
    pub(super) checkpoint: train::Checkpoint,
    pub(super) kind: ModelKind,
    /// The data it was trained on: going on needs the same.
    pub(super) dataset: Rc<Dataset>,
    pub(super) ids: Vec<u64>,
}

/// What a run needs besides its start: the device, the host for checkpoints, the observer and the
/// embeddings cache (taken from the state for the run, given back after).
pub(super) struct RunContext {
    pub(super) kind: ModelKind,
    pub(super) dataset: Rc<Dataset>,
    pub(super) ids: Vec<u64>,
    pub(super) device: Device,
    pub(super) gpu: bool,
    pub(super) host: Device,
    pub(super) relay: Relay,
    pub(super) embeddings: EmbeddingCache,
}

impl RunContext {
    pub(super) fn new(kind: ModelKind, dataset: Rc<Dataset>, ids: Vec<u64>) -> Result<Self, String> {
        let device = compute_device()?;
        let gpu = STATE.with_borrow(|state| state.device.as_ref().is_some_and(ComputeDevice::is_gpu));
        let stop = STOP.with(Rc::clone);
        stop.set(false);
        Ok(Self {
            kind,
            dataset,
            ids,
            device,
            gpu,
            // A checkpoint on the CPU after every batch: a lost GPU costs one batch, not the run, and a
            // stopped run can go on.
            host: Device::flex(),
            relay: Relay { stop },
            embeddings: STATE.with_borrow_mut(|state| std::mem::take(&mut state.embeddings)),
        })
    }

    pub(super) async fn fresh(
        &mut self,
        model: &ImageClassifier,
        config: &TrainConfig,
    ) -> Result<train::Trained, TrainError> {
        train::Training::new(model, self.kind, &self.dataset, config)
            .embeddings(&mut self.embeddings)
            .checkpoints_on(&self.host)
            .run(&self.device, &mut self.relay)
            .await
    }

    pub(super) async fn resume(&mut self, checkpoint: train::Checkpoint) -> Result<train::Trained, TrainError> {
        train::Training::resume(checkpoint, self.kind, &self.dataset)
            .embeddings(&mut self.embeddings)
            .checkpoints_on(&self.host)
            .run(&self.device, &mut self.relay)
            .await
    }

    /// Carries a run through what the device does to it: out of GPU memory, it goes on on the same
    /// GPU from the last completed batch in batches half the size, until they fit; when the GPU is
    /// lost (or not even one image fits), the CPU takes over from there. `config` starts it afresh
    /// when it failed before its first checkpoint.
    pub(super) async fn recover(
        &mut self,
        mut trained: Result<train::Trained, TrainError>,
        config: &TrainConfig,
    ) -> Result<train::Trained, String> {
        let mut config = config.clone();
        loop {
            trained = match trained {
                Err(TrainError::OutOfMemory {
                    message,
                    batch_size,
                    checkpoint,
                }) if batch_size > 1 && self.gpu => {
                    let smaller = batch_size / 2;
                    let message = match &checkpoint {
                        Some(checkpoint) => format!(
                            "The GPU ran out of memory with batches of {batch_size} images ({message}). Training goes on \
                             on the GPU in batches of {smaller}, {}: nothing learnt so far is lost.",
                            checkpoint.describe()
                        ),
                        None => format!(
                            "The GPU ran out of memory with batches of {batch_size} images ({message}). Training starts \
                             again in batches of {smaller}."
                        ),
                    };
                    notice(message);
                    match checkpoint {
                        Some(checkpoint) => self.resume(checkpoint.with_batch_size(smaller)).await,
                        None => {
                            config.batch_size = smaller;
                            let model = pretrained(self.kind).await?;
                            self.fresh(&model, &config).await
                        }
                    }
                }
                Err(TrainError::OutOfMemory {
                    message,
                    batch_size,
                    checkpoint,
                }) if self.gpu => Err(TrainError::Device {
                    error: readback::ReadbackError::Execution(format!(
                        "out of memory with batches of {batch_size} image: {message}"
                    )),
                    checkpoint,
                }),
                Err(TrainError::Device { error, checkpoint }) if self.gpu => {
                    let reason = match error {
                        readback::ReadbackError::DeviceLost(cause) => cause,
                        other => other.to_string(),
                    };
                    self.device = fall_back_to_cpu(&reason).device().clone();
                    self.gpu = false;
                    notice(match &checkpoint {
                        Some(checkpoint) => format!(
                            "The GPU failed during training ({reason}). Training goes on on the CPU, {}: what it \
                             learnt so far is kept, but the rest will be slower.",
                            checkpoint.describe()
                        ),
                        None => format!(
                            "The GPU failed before training got going ({reason}). Training starts again on the CPU \
                             (slower)."
                        ),
                    });
                    match checkpoint {
                        Some(checkpoint) => self.resume(*checkpoint).await,
                        None => {
                            let model = pretrained(self.kind).await?;
                            self.fresh(&model, &config).await
                        }
                    }
                }
                done => return done.map_err(|e| e.to_string()),
            };
        }
    }

    /// Hands the embeddings back and makes the trained model the one to predict and export with,
    /// kept for the next visit; a stopped run is kept to go on from.
    pub(super) async fn finish(self, trained: Result<train::Trained, String>, input_size: usize) -> Result<(), String> {
        let Self {
            kind,
            dataset,
            ids,
            embeddings,
            ..
        } = self;
        STATE.with_borrow_mut(|state| state.embeddings = embeddings);
        let trained = trained?;
        let samples = trained
            .summary
            .val_images
            .iter()
            .zip(&trained.summary.val_predictions)
            .map(|(&i, &predicted)| (ids[i], dataset.examples[i].label, predicted))
            .collect();
        post(&WorkerEvent::Evaluated { samples }, Vec::new());
        let paused = trained.checkpoint.map(|checkpoint| Paused {
            checkpoint,
            kind,
            dataset: dataset.clone(),
            ids: ids.clone(),
        });
        post(
            &WorkerEvent::Paused {
                at: paused.as_ref().map(|p| p.checkpoint.describe()),
            },
            Vec::new(),
        );
        STATE.with_borrow_mut(|state| {
            state.paused = paused;
            state.trained = Some(TrainedModel::new(
                BundleHeader::new(kind, dataset.classes.clone(), input_size),
                trained.model,
            ))
        });
        post(
            &WorkerEvent::ModelReady {
                classes: dataset.classes.clone(),
                model: kind,
            },
            Vec::new(),
        );
        // Keep the model for the next visit.
        if project_store().is_some() {
            match model_file().await {
                Ok((_, bytes)) => keep_model(bytes).await,
                Err(message) => fail(
                    Work::Store,
                    format!("the model could not be kept for the next visit: {message}"),
                ),
            }
        }
        Ok(())
    }
}

/// Starts a training run beside the inbox, unless one is running.
pub(super) fn start(kind: ModelKind, config: TrainConfig, (dataset, ids): (Rc<Dataset>, Vec<u64>)) {
    beside_the_inbox(run_train(kind, config, dataset, ids));
}

/// Goes on with the stopped run beside the inbox, unless one is running.
pub(super) fn start_continue(dataset: Rc<Dataset>) {
    beside_the_inbox(continue_train(dataset));
}

/// Runs `training` unless a run is going on (said so then), marking the worker busy meanwhile.
fn beside_the_inbox(training: impl std::future::Future<Output = Result<(), String>> + 'static) {
    if STATE.with_borrow_mut(|state| std::mem::replace(&mut state.busy, true)) {
        return fail(Work::Train, "training is already running");
    }
    wasm_bindgen_futures::spawn_local(async move {
        let result = training.await;
        STATE.with_borrow_mut(|state| state.busy = false);
        if let Err(message) = result {
            fail(Work::Train, message);
        }
    });
}

async fn run_train(
    kind: ModelKind,
    mut config: TrainConfig,
    dataset: Rc<Dataset>,
    ids: Vec<u64>,
) -> Result<(), String> {
    dataset.validate().map_err(|e| e.to_string())?;
    let model = pretrained(kind).await?;
    config.max_buffer_bytes =
        STATE.with_borrow(|state| state.device.as_ref().and_then(ComputeDevice::max_buffer_bytes));
    STATE.with_borrow_mut(|state| state.paused = None);
    let mut run = RunContext::new(kind, dataset, ids)?;
    let first = run.fresh(&model, &config).await;
    let trained = run.recover(first, &config).await;
    run.finish(trained, config.image_size.unwrap_or(kind.card().input_size))
        .await
}

/// Whether two datasets hold the same classes and pictures, in the same order.
pub(super) fn same_data(a: &Dataset, b: &Dataset) -> bool {
    a.classes == b.classes
        && a.examples.len() == b.examples.len()
        && a.examples
            .iter()
            .zip(&b.examples)
            .all(|(x, y)| x.label == y.label && x.image.key() == y.image.key())
}

/// Goes on with the stopped run from where it stopped, if the pictures are still the ones it trained on.
async fn continue_train(dataset: Rc<Dataset>) -> Result<(), String> {
    let Some(paused) = STATE.with_borrow_mut(|state| state.paused.take()) else {
        return Err("there is no stopped run to go on with: start one with Train".into());
    };
    if !same_data(&paused.dataset, &dataset) {
        post(&WorkerEvent::Paused { at: None }, Vec::new());
        return Err(
            "the classes or pictures changed since training stopped, so it cannot go on where it was: start again with Train"
                .into(),
        );
    }
    let config = paused.checkpoint.config().clone();
    let from = if paused.checkpoint.batches_done() == 0 {
        "from "
    } else {
        ""
    };
    notice(format!("Training goes on {from}{}.", paused.checkpoint.describe()));
    let mut run = RunContext::new(paused.kind, paused.dataset, paused.ids)?;
    let resumed = run.resume(paused.checkpoint).await;
    let trained = run.recover(resumed, &config).await;
    run.finish(trained, config.image_size.unwrap_or(paused.kind.card().input_size))
        .await
}
