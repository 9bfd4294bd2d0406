//! The page's side of the worker: spawns it (the build the device needs), sends requests (queued
//! until the worker is ready) and hands its events to a callback.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::device::{ComputeChoice, WorkerBuild};
use crate::protocol::{Work, WorkerEvent, WorkerRequest};

/// A message as the protocol lays it out: `[json, payload...]`, and the buffers to transfer.
pub fn pack(json: &str, payloads: Vec<Vec<u8>>) -> (Array, Array) {
    let message = Array::new();
    let transfer = Array::new();
    message.push(&JsValue::from_str(json));
    for payload in payloads {
        let bytes = Uint8Array::from(payload.as_slice());
        transfer.push(&bytes.buffer());
        message.push(&bytes);
    }
    (message, transfer)
}

/// A message event's JSON and payloads (the other side of [`pack`]).
pub fn unpack(event: &web_sys::Event) -> (String, Vec<Vec<u8>>) {
    let message: Array = event.unchecked_ref::<web_sys::MessageEvent>().data().unchecked_into();
    let json = message.get(0).as_string().unwrap_or_default();
    let payloads = (1..message.length())
        .map(|i| message.get(i).unchecked_into::<Uint8Array>().to_vec())
        .collect();
    (json, payloads)
}

/// Requests waiting for the worker: JSON and payloads.
type Queue = Vec<(String, Vec<Vec<u8>>)>;

/// What the page does with each of the worker's events.
type OnEvent = Rc<dyn Fn(WorkerEvent, Vec<Vec<u8>>)>;

/// The training worker, seen from the page.
#[derive(Clone)]
pub struct Bridge {
    /// The worker and its build, once chosen and started (requests wait in `pending` till then).
    worker: Rc<RefCell<Option<(web_sys::Worker, WorkerBuild)>>>,
    /// The device the person chose (the worker's URL names it).
    compute: ComputeChoice,
    /// Which worker is the current one: events from one the page replaced are ignored.
    generation: Rc<Cell<u64>>,
    /// The last worker (by generation) that said it is ready: only a worker that got that far is
    /// replaced when it crashes (one that crashes while starting would crash again, for ever).
    ready: Rc<Cell<Option<u64>>>,
    /// Requests sent before the worker said it is ready.
    pending: Rc<RefCell<Option<Queue>>>,
    on_event: OnEvent,
    /// Called for each request that edits the project, as it is sent (the worker answers each with
    /// `WorkerEvent::Handled`).
    on_edit: Rc<dyn Fn()>,
}

impl Bridge {
    /// Starts the worker on the device `compute` asks for (named in its URL: the worker opens its
    /// device before any message), in the build that device needs ([`WorkerBuild`]: the page asks the
    /// browser for its WebGPU adapter first, unless the CPU is chosen), calls `on_event` with each
    /// event and its payloads, and `on_edit` as each request that edits the project is sent.
    /// Requests sent meanwhile wait for the worker's `Ready`; a worker that cannot be started is
    /// reported as a `Failed` event. A worker that crashes (`Crashed`: a panic) is replaced by a new
    /// one of the same build, which reads the project back from storage.
    pub fn spawn(
        compute: ComputeChoice,
        on_event: impl Fn(WorkerEvent, Vec<Vec<u8>>) + 'static,
        on_edit: impl Fn() + 'static,
    ) -> Self {
        let bridge = Self {
            worker: Rc::new(RefCell::new(None)),
            compute,
            generation: Rc::new(Cell::new(0)),
            ready: Rc::new(Cell::new(None)),
            pending: Rc::new(RefCell::new(Some(Vec::new()))),
            on_event: Rc::new(on_event),
            on_edit: Rc::new(on_edit),
        };
        let starting = bridge.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let build = WorkerBuild::for_this_browser(compute).await;
            starting.run(build, false);
        });
        bridge
    }

    /// Starts a worker of `build` and listens to it (`restarted`: after this tab's last one crashed).
    fn run(&self, build: WorkerBuild, restarted: bool) {
        match self.start(build, restarted) {
            Ok(worker) => {
                self.worker.replace(Some((worker.clone(), build)));
                self.listen(&worker);
            }
            Err(message) => (self.on_event)(
                WorkerEvent::Failed {
                    request: Work::Start,
                    message,
                },
                Vec::new(),
            ),
        }
    }

    /// A new worker of `build` on the chosen device.
    fn start(&self, build: WorkerBuild, restarted: bool) -> Result<web_sys::Worker, String> {
        // `?helpers=N` in the page's address is passed on (the worker's helper workers; see
        // `graft_worker::helpers`), and in the tests' build `?fault=…` (which the helpers read).
        let passed_on: &[&str] = if cfg!(feature = "test-hooks") {
            &["helpers", "fault"]
        } else {
            &["helpers"]
        };
        let query = crate::device::query_in_url().unwrap_or_default();
        let passed_on: String = passed_on
            .iter()
            .filter_map(|name| Some(format!("&{name}={}", crate::device::query_value(&query, name)?)))
            .collect();
        let restarted = if restarted { "&restarted=1" } else { "" };
        let url = format!(
            "{}&compute={}{passed_on}{restarted}",
            build.loader(),
            self.compute.name()
        );
        web_sys::Worker::new(&url).map_err(|e| format!("could not start the worker: {e:?}"))
    }

    /// Hands `worker`'s events to the page, first sending the queued requests when it is ready; a
    /// crash replaces it.
    fn listen(&self, worker: &web_sys::Worker) {
        let generation = self.generation.get();
        let bridge = self.clone();
        let to = worker.clone();
        // For the worker's whole life (events after it was replaced are ignored).
        gloo_events::EventListener::new(worker, "message", move |event| {
            if bridge.generation.get() != generation {
                return;
            }
            let (json, payloads) = unpack(event);
            match serde_json::from_str::<WorkerEvent>(&json) {
                Ok(WorkerEvent::Crashed { message }) => bridge.crashed(message),
                Ok(event) => {
                    if matches!(event, WorkerEvent::Ready { .. }) {
                        bridge.ready.set(Some(generation));
                        let queued = bridge.pending.borrow_mut().take().unwrap_or_default();
                        for (json, payloads) in queued {
                            post(&to, &json, payloads);
                        }
                    }
                    (bridge.on_event)(event, payloads);
                }
                Err(error) => (bridge.on_event)(
                    WorkerEvent::Failed {
                        request: Work::Message,
                        message: format!("unreadable event from the worker: {error}"),
                    },
                    Vec::new(),
                ),
            }
        })
        .forget();
    }

    /// The worker crashed: it is stopped and a new one of the same build started (requests wait for
    /// it as they did at first), then the page hears of it (`Crashed`). A worker that crashed before it
    /// was ready is not started again: the page hears that the engine could not start.
    fn crashed(&self, message: String) {
        let generation = self.generation.get();
        self.generation.set(generation + 1);
        let old = self.worker.borrow_mut().take();
        self.pending.borrow_mut().get_or_insert_with(Vec::new);
        let Some((worker, build)) = old else { return };
        worker.terminate();
        if self.ready.get() != Some(generation) {
            (self.on_event)(
                WorkerEvent::Failed {
                    request: Work::Start,
                    message: format!(
                        "Graft's engine stopped on an internal error while starting ({message}). Reload the page to try again; what is saved in this browser is kept."
                    ),
                },
                Vec::new(),
            );
            return;
        }
        self.run(build, true);
        (self.on_event)(WorkerEvent::Crashed { message }, Vec::new());
    }

    /// Sends a request with its payloads (queued until the worker is ready).
    pub fn send(&self, request: &WorkerRequest, payloads: Vec<Vec<u8>>) {
        if request.edits_project() {
            (self.on_edit)();
        }
        let json = serde_json::to_string(request).expect("requests serialise");
        if let Some(queue) = self.pending.borrow_mut().as_mut() {
            queue.push((json, payloads));
            return;
        }
        // Not queued: the worker said it is ready, so it was started.
        if let Some((worker, _)) = self.worker.borrow().as_ref() {
            post(worker, &json, payloads);
        }
    }

    /// The build of the worker started, once it is.
    pub fn build(&self) -> Option<WorkerBuild> {
        self.worker.borrow().as_ref().map(|(_, build)| *build)
    }
}

fn post(worker: &web_sys::Worker, json: &str, payloads: Vec<Vec<u8>>) {
    let (message, transfer) = pack(json, payloads);
    if let Err(error) = worker.post_message_with_transfer(&message, &transfer) {
        leptos::logging::error!("graft: postMessage to the worker failed: {error:?}");
    }
}
