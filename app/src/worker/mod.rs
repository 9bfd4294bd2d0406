//! The training worker: owns the compute device, the images, the pretrained and the trained models,
//! and answers [`WorkerRequest`]s with [`WorkerEvent`]s. Runs in a dedicated Web Worker, so that
//! decoding, measuring, training and predicting never block the page.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use graft_engine::data::Dataset;
use wasm_bindgen::JsCast;

use crate::device::{self};
use crate::protocol::{Work, WorkerEvent, WorkerRequest};
use crate::store::{self, Store, StoreError};

use self::images::frame_png;
use self::measure::run_recommend;
use self::models::recovered_from_gpu_loss;
use self::persist::{keep_model, restore, save_unsaved};
use self::project::{add_images, remove_image, save_classes};
#[cfg(feature = "test-hooks")]
use self::run::INJECTED;
use self::run::{continue_train, run_train};
use self::serve::{export, import, predict};
use self::state::{STATE, STOP, Writing};

mod images;
mod measure;
mod models;
mod persist;
mod project;
mod run;
mod serve;
mod state;
mod tab;

/// Side of the square JPEG thumbnails sent to the page.
pub(super) const THUMBNAIL: u32 = 96;

/// Sets up the worker: opens the device (reporting `Ready`) and handles every message after that.
pub fn start() {
    let scope: web_sys::EventTarget = js_sys::global().unchecked_into();
    // For the worker's whole life.
    gloo_events::EventListener::new(&scope, "message", |event| {
        let (json, payloads) = crate::bridge::unpack(event);
        match serde_json::from_str::<WorkerRequest>(&json) {
            // Stop must act while a training task is suspended between batches.
            Ok(WorkerRequest::Stop) => STOP.with(|stop| stop.set(true)),
            Ok(request) => receive(request, payloads),
            Err(error) => post(
                &WorkerEvent::Failed {
                    request: Work::Message,
                    message: format!("unreadable request: {error}"),
                },
                Vec::new(),
            ),
        }
    })
    .forget();
    receive(WorkerRequest::Init, Vec::new());
}

thread_local! {
    /// Requests received and not yet handled, in the order the page sent them.
    static INBOX: RefCell<std::collections::VecDeque<(WorkerRequest, Vec<Vec<u8>>)>> =
        const { RefCell::new(std::collections::VecDeque::new()) };
    /// Whether a task is handling the inbox.
    static HANDLING: Cell<bool> = const { Cell::new(false) };
}

/// Queues a request; one task handles the queue, a request at a time, in the order received. An
/// edit (a class made, pictures for it) is applied before the next request is looked at, even when
/// it waits for storage; long work (measuring, training, predicting, exporting) starts in order, on
/// the data as the requests before it left it, and runs beside the queue.
pub(super) fn receive(request: WorkerRequest, payloads: Vec<Vec<u8>>) {
    INBOX.with_borrow_mut(|inbox| inbox.push_back((request, payloads)));
    if !HANDLING.replace(true) {
        wasm_bindgen_futures::spawn_local(async {
            while let Some((request, payloads)) = INBOX.with_borrow_mut(|inbox| inbox.pop_front()) {
                handle(request, payloads).await;
            }
            HANDLING.set(false);
        });
    }
}

/// Sends an event with its payloads (their buffers transferred).
pub fn post(event: &WorkerEvent, payloads: Vec<Vec<u8>>) {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let (message, transfer) = crate::bridge::pack(&serde_json::to_string(event).expect("events serialise"), payloads);
    if let Err(error) = scope.post_message_with_transfer(&message, &transfer) {
        leptos::logging::error!("graft worker: postMessage failed: {error:?}");
    }
}

pub(super) fn fail(request: Work, message: impl ToString) {
    post(
        &WorkerEvent::Failed {
            request,
            message: message.to_string(),
        },
        Vec::new(),
    );
}

pub(super) async fn handle(request: WorkerRequest, payloads: Vec<Vec<u8>>) {
    match request {
        WorkerRequest::Init => {
            let device = device::acquire().await;
            let (label, gpu) = (device.label(), device.is_gpu());
            STATE.with_borrow_mut(|state| state.device = Some(device));
            if tab::acquire(false).await {
                restore().await;
            } else {
                post(&WorkerEvent::OpenElsewhere { taken: false }, Vec::new());
            }
            post(&WorkerEvent::Ready { device: label, gpu }, Vec::new());
        }
        WorkerRequest::TakeOver => {
            // Only a tab that never opened the project asks (one that lost it reloads first).
            if !tab::holds() && STATE.with_borrow(|state| state.class_ids.is_empty()) && tab::acquire(true).await {
                restore().await;
                notice("Graft is open in this tab now; the other tab stopped, with nothing lost.");
            }
        }
        // A view is saved at every change: not worth a message each.
        WorkerRequest::SaveView { .. } if !tab::holds() => {}
        request if !tab::holds() && request.edits_project() => {
            fail(
                request.work(),
                "Graft is open in another tab: this tab changes nothing.",
            );
        }
        WorkerRequest::AddClass { id, name } => {
            if STATE.with_borrow_mut(|state| state.add_class(id, name)) {
                save_classes(None).await;
            }
        }
        WorkerRequest::RenameClass { id, name } => {
            if STATE.with_borrow_mut(|state| state.rename_class(id, name)) {
                save_classes(None).await;
            }
        }
        WorkerRequest::RemoveClass { id } => {
            if STATE.with_borrow_mut(|state| state.remove_class(id)) {
                save_classes(Some(id)).await;
                save_unsaved().await;
            }
        }
        WorkerRequest::SaveView { view } => {
            let _writing = Writing::start();
            if let Some(store) = project_store() {
                let json = serde_json::to_string(&view).unwrap_or_default();
                match store.save_view(&json).await {
                    // A full storage is already said (message and banner) for what matters more; a
                    // view is small and saved again at the next change, not worth a message each.
                    Ok(()) | Err(StoreError::Full) => {}
                    Err(error) if tab::taken_over(&error) => {}
                    Err(error) => fail(Work::Store, store::describe(error)),
                }
            }
        }
        WorkerRequest::AddImages { class, names } => add_images(class, names, payloads).await,
        WorkerRequest::AddFrames { class, width, height } => {
            let count = payloads.len();
            let stamp = js_sys::Date::now() as u64;
            let names = (0..count).map(|i| format!("webcam-{stamp}-{i}.png")).collect();
            let frames = payloads
                .into_iter()
                .map(|rgba| frame_png(&rgba, width, height))
                .collect();
            add_images(class, names, frames).await
        }
        WorkerRequest::RemoveImage { id } => {
            let _writing = Writing::start();
            if let Some(store) = project_store()
                && let Err(error) = store.delete_image(id).await
                && !tab::taken_over(&error)
            {
                fail(Work::Store, store::describe(error));
            }
            remove_image(id);
            save_unsaved().await;
        }
        // Long work runs beside the inbox, on the data as the requests before it left it.
        WorkerRequest::Recommend { model } => {
            let data = snapshot();
            wasm_bindgen_futures::spawn_local(async move {
                let mut result = run_recommend(model, data.0.clone()).await;
                if result.is_err() && recovered_from_gpu_loss("Measuring your pictures").await {
                    result = run_recommend(model, data.0).await;
                }
                if let Err(message) = result {
                    fail(Work::Recommend, message);
                }
            });
        }
        WorkerRequest::Train { model, config } => {
            let busy = STATE.with_borrow_mut(|state| std::mem::replace(&mut state.busy, true));
            if busy {
                return fail(Work::Train, "training is already running");
            }
            let (dataset, ids) = snapshot();
            wasm_bindgen_futures::spawn_local(async move {
                let result = run_train(model, *config, dataset, ids).await;
                STATE.with_borrow_mut(|state| state.busy = false);
                if let Err(message) = result {
                    fail(Work::Train, message);
                }
            });
        }
        WorkerRequest::Continue => {
            let busy = STATE.with_borrow_mut(|state| std::mem::replace(&mut state.busy, true));
            if busy {
                return fail(Work::Train, "training is already running");
            }
            let (dataset, _) = snapshot();
            wasm_bindgen_futures::spawn_local(async move {
                let result = continue_train(dataset).await;
                STATE.with_borrow_mut(|state| state.busy = false);
                if let Err(message) = result {
                    fail(Work::Train, message);
                }
            });
        }
        WorkerRequest::Stop => STOP.with(|stop| stop.set(true)),
        WorkerRequest::Predict => wasm_bindgen_futures::spawn_local(async move {
            let bytes = payloads.first().map(Vec::as_slice).unwrap_or(&[]);
            let mut result = predict(bytes).await;
            if result.is_err() && recovered_from_gpu_loss("Classifying your picture").await {
                result = predict(bytes).await;
            }
            match result {
                Ok(top) => post(&WorkerEvent::Prediction { top }, Vec::new()),
                Err(message) => fail(Work::Predict, message),
            }
        }),
        WorkerRequest::PredictFrame { width, height } => wasm_bindgen_futures::spawn_local(async move {
            let png = frame_png(payloads.first().map(Vec::as_slice).unwrap_or(&[]), width, height);
            match predict(&png).await {
                Ok(top) => post(&WorkerEvent::Prediction { top }, Vec::new()),
                Err(message) => fail(Work::Predict, message),
            }
        }),
        WorkerRequest::Export { format } => wasm_bindgen_futures::spawn_local(async move {
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
        }),
        #[cfg(feature = "test-hooks")]
        WorkerRequest::InjectFault { fault } => INJECTED.set(Some(fault)),
        WorkerRequest::Import { name } => {
            let bytes = payloads.into_iter().next().unwrap_or_default();
            match import(&name, &bytes) {
                Ok((classes, model)) => {
                    post(&WorkerEvent::ModelReady { classes, model }, Vec::new());
                    keep_model(bytes).await;
                }
                Err(message) => fail(Work::Import, message),
            }
        }
    }
}

pub(super) fn project_store() -> Option<Rc<Store>> {
    STATE.with_borrow(|state| state.store.clone())
}

/// The pictures as they are now and their image ids, for work that runs beside later edits.
pub(super) fn snapshot() -> (Rc<Dataset>, Vec<u64>) {
    STATE.with_borrow(|state| (state.dataset.clone(), state.ids.clone()))
}

/// Tells the person something that is not an error.
pub(super) fn notice(message: impl ToString) {
    post(
        &WorkerEvent::Notice {
            message: message.to_string(),
        },
        Vec::new(),
    );
}

/// Gives the event loop a turn (a zero-delay timeout), so that messages such as `Stop` are handled
/// while a long computation is in progress.
pub async fn yield_now() {
    gloo_timers::future::TimeoutFuture::new(0).await;
}
