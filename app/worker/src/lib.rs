//! The training worker: owns the compute device, the images, the pretrained and the trained models,
//! and answers [`WorkerRequest`]s with [`WorkerEvent`]s. Runs in a dedicated Web Worker, so that
//! decoding, measuring, training and predicting never block the page.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use graft_engine::data::Dataset;
use wasm_bindgen::JsCast;

use graft_app::protocol::{Work, WorkerEvent, WorkerRequest};

use crate::store::Store;

use self::persist::restore;
use self::state::{STATE, STOP};

pub mod device;
pub mod helpers;
pub mod replica;
pub mod store;

mod compare;
mod images;
mod measure;
mod models;
mod persist;
mod project;
mod review;
mod run;
mod serve;
mod state;
mod tab;

/// Side of the square JPEG thumbnails sent to the page.
pub(crate) const THUMBNAIL: u32 = 96;

/// Sets up the worker: opens the device (reporting `Ready`) and handles every message after that; or,
/// with `role=replica` in its URL, serves as the training worker's replica ([`replica::serve`]).
pub fn start() {
    // A replica of this worker computes half of each training step and nothing else.
    let role = graft_app::device::query_in_url()
        .and_then(|query| graft_app::device::query_value(&query, "role").map(str::to_string));
    if role.as_deref() == Some("replica") {
        replica::serve();
        return;
    }
    report_panics();
    let scope: web_sys::EventTarget = js_sys::global().unchecked_into();
    // For the worker's whole life.
    gloo_events::EventListener::new(&scope, "message", |event| {
        let (json, payloads) = graft_app::bridge::unpack(event);
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

/// A panic is a bug, and after one this worker's wasm cannot go on (its state may be half changed):
/// the page hears what happened (`Crashed`) and starts a new worker, which reads the project back
/// from the browser's storage. Without this the page would wait for an answer that never comes.
fn report_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        let message = match info.location() {
            Some(at) => format!("{what} (at {}:{})", at.file(), at.line()),
            None => what,
        };
        post(&WorkerEvent::Crashed { message }, Vec::new());
    }));
}

thread_local! {
    /// Requests received and not yet handled, in the order the page sent them.
    static INBOX: RefCell<std::collections::VecDeque<(WorkerRequest, Vec<Vec<u8>>)>> =
        const { RefCell::new(std::collections::VecDeque::new()) };
    /// Whether a task is handling the inbox.
    static HANDLING: Cell<bool> = const { Cell::new(false) };
    /// Requests that edit the project handled so far (see `WorkerEvent::Handled`).
    static EDITS_HANDLED: Cell<u64> = const { Cell::new(0) };
}

/// Queues a request; one task handles the queue, a request at a time, in the order received. An
/// edit (a class made, pictures for it) is applied before the next request is looked at, even when
/// it waits for storage; long work (measuring, training, predicting, exporting) starts in order, on
/// the data as the requests before it left it, and runs beside the queue.
pub(crate) fn receive(request: WorkerRequest, payloads: Vec<Vec<u8>>) {
    INBOX.with_borrow_mut(|inbox| inbox.push_back((request, payloads)));
    if !HANDLING.replace(true) {
        wasm_bindgen_futures::spawn_local(async {
            while let Some((request, payloads)) = INBOX.with_borrow_mut(|inbox| inbox.pop_front()) {
                let edit = request.edits_project();
                handle(request, payloads).await;
                if edit {
                    let edits = EDITS_HANDLED.with(|n| {
                        n.set(n.get() + 1);
                        n.get()
                    });
                    post(&WorkerEvent::Handled { edits }, Vec::new());
                }
            }
            HANDLING.set(false);
        });
    }
}

/// Sends an event with its payloads (their buffers transferred).
pub fn post(event: &WorkerEvent, payloads: Vec<Vec<u8>>) {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let (message, transfer) =
        graft_app::bridge::pack(&serde_json::to_string(event).expect("events serialise"), payloads);
    if let Err(error) = scope.post_message_with_transfer(&message, &transfer) {
        leptos::logging::error!("graft worker: postMessage failed: {error:?}");
    }
}

pub(crate) fn fail(request: Work, message: impl ToString) {
    post(
        &WorkerEvent::Failed {
            request,
            message: message.to_string(),
        },
        Vec::new(),
    );
}

/// Handles one request: an edit is applied (storage included) before the next request is looked at;
/// long work starts beside the inbox, on the data as the requests before it left it.
pub(crate) async fn handle(request: WorkerRequest, payloads: Vec<Vec<u8>>) {
    let payload = || payloads.first().cloned().unwrap_or_default();
    match request {
        WorkerRequest::Init => open().await,
        WorkerRequest::TakeOver => take_over().await,
        // A view is saved at every change: not worth a message each.
        WorkerRequest::SaveView { .. } if !tab::holds() => {}
        request if !tab::holds() && request.edits_project() => {
            fail(
                request.work(),
                "Graft is open in another tab: this tab changes nothing.",
            );
        }
        WorkerRequest::AddClass { id, name } => project::add_class(id, name).await,
        WorkerRequest::RenameClass { id, name } => project::rename_class(id, name).await,
        WorkerRequest::RemoveClass { id } => project::remove_class(id).await,
        WorkerRequest::SaveView { view } => persist::save_view(&view).await,
        WorkerRequest::AddImages { class, names } => project::add_images(class, names, payloads).await,
        WorkerRequest::AddFrames { class, width, height } => project::add_frames(class, width, height, payloads).await,
        WorkerRequest::RemoveImage { id } => project::delete_image(id).await,
        WorkerRequest::MoveImage { id, to } => project::move_image(id, to).await,
        WorkerRequest::Review { model } => {
            let class_ids = STATE.with_borrow(|state| state.class_ids.clone());
            review::start(model, snapshot(), class_ids)
        }
        WorkerRequest::Import { name } => serve::import_and_keep(&name, payload()).await,
        WorkerRequest::Recommend { model } => measure::start(model, snapshot().0),
        WorkerRequest::Train { model, config } => run::start(model, *config, snapshot()),
        WorkerRequest::Continue => run::start_continue(snapshot().0),
        WorkerRequest::Compare {
            model,
            recommended,
            budget_seconds,
        } => compare::start(model, recommended, budget_seconds, snapshot().0),
        WorkerRequest::Stop => STOP.with(|stop| stop.set(true)),
        WorkerRequest::Predict { picture } => serve::start_predict(picture, payload()),
        WorkerRequest::PredictFrame { width, height, picture } => {
            serve::start_predict_frame(picture, payload(), width, height)
        }
        WorkerRequest::Export { format } => serve::start_export(format),
        #[cfg(feature = "test-hooks")]
        WorkerRequest::InjectFault { fault } => run::INJECTED.set(Some(fault)),
    }
}

/// Opens the device, then the project if no other tab holds it (else says so), then `Ready`.
async fn open() {
    // The page names the person's choice in this worker's URL.
    let device = device::acquire(device::choice_in_url().unwrap_or_default()).await;
    let (label, gpu) = (device.label(), device.is_gpu());
    STATE.with_borrow_mut(|state| state.device = Some(device));
    // A worker the page started again after this tab's last one crashed takes the project's lock
    // over from it (the lock may not be released yet); otherwise only a free lock is taken.
    let restarted = graft_app::device::query_in_url()
        .is_some_and(|query| graft_app::device::query_value(&query, "restarted") == Some("1"));
    if tab::acquire(restarted).await {
        restore().await;
    } else {
        post(&WorkerEvent::OpenElsewhere { taken: false }, Vec::new());
    }
    post(&WorkerEvent::Ready { device: label, gpu }, Vec::new());
    if !gpu {
        helpers::start_on_cpu();
    }
}

/// Takes the project over from the tab that holds it and reads it as that tab left it. Only a tab
/// that never opened the project asks (one that lost it reloads first).
async fn take_over() {
    if !tab::holds() && STATE.with_borrow(|state| state.class_ids.is_empty()) && tab::acquire(true).await {
        restore().await;
        notice("Graft is open in this tab now; the other tab stopped, with nothing lost.");
    }
}

pub(crate) fn project_store() -> Option<Rc<Store>> {
    STATE.with_borrow(|state| state.store.clone())
}

/// The pictures as they are now and their image ids, for work that runs beside later edits.
pub(crate) fn snapshot() -> (Rc<Dataset>, Vec<u64>) {
    STATE.with_borrow(|state| (state.dataset.clone(), state.ids.clone()))
}

/// Tells the person something that is not an error.
pub(crate) fn notice(message: impl ToString) {
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
