//! The replica: a second copy of the training worker's CPU build (`engine_loader.js?build=worker-cpu
//! &role=replica`) that computes half of each training step on the CPU backend, so that training
//! uses a second core (`graft_engine::peer`: data parallelism without shared memory). Started on the
//! CPU backend when the browser has a core to spare ([`start_on_cpu`]) and installed as the engine's
//! peer, which sends it the second part of a step where it measured that this pays. On the CPU
//! backend every step is computed in two parts anyway, so the numbers do not depend on the replica.
//!
//! Messages are arrays: to the replica `[header JSON, state, input]` (two `Float32Array`s,
//! transferred), from it `[reply JSON, logits, gradients, running statistics]` (a `Reply`). A
//! replica that fails (its wasm did not load, it trapped, it answered nonsense) is not asked again;
//! the engine computes its part itself.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use graft_engine::peer::{PartAnswer, PartFuture, PartHeader, PartRequest, Peer, PeerError, Replica};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

/// What the replica says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
enum Reply {
    /// Its wasm is loaded and it takes parts.
    Ready,
    /// A part computed: its loss; the logits, gradients and running statistics follow in the message.
    Done {
        loss: f32,
    },
    Failed {
        message: String,
    },
}

/// The replica's side: computes each part it receives, in order, and answers it. Called by the
/// worker's entry when its URL says `role=replica`.
pub fn serve() {
    thread_local! {
        static QUEUE: RefCell<VecDeque<JsValue>> = const { RefCell::new(VecDeque::new()) };
        static BUSY: Cell<bool> = const { Cell::new(false) };
    }
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    // Taken out while it computes a part (one at a time: the queue), put back after.
    let replica: Rc<RefCell<Option<Replica>>> = Rc::default();
    // For the replica's whole life.
    gloo_events::EventListener::new(&scope, "message", move |event| {
        let data = event.unchecked_ref::<web_sys::MessageEvent>().data();
        QUEUE.with_borrow_mut(|queue| queue.push_back(data));
        if BUSY.replace(true) {
            return;
        }
        let replica = replica.clone();
        wasm_bindgen_futures::spawn_local(async move {
            while let Some(data) = QUEUE.with_borrow_mut(VecDeque::pop_front) {
                let answer = match unpack_part(&data) {
                    Ok(_) if panic_injected() => panic!("graft replica: the panic the test asked for"),
                    Ok(part) => {
                        let mut held = replica
                            .take()
                            .unwrap_or_else(|| Replica::new(burn::prelude::Device::flex()));
                        let answer = held.run(&part).await;
                        replica.replace(Some(held));
                        answer
                    }
                    Err(error) => Err(error),
                };
                reply(answer);
            }
            BUSY.set(false);
        });
    })
    .forget();
    post(&scope, &Reply::Ready, &[]);
}

/// Whether this replica's URL asks it to panic at its first part (the tests' build only).
fn panic_injected() -> bool {
    cfg!(feature = "test-hooks")
        && graft_app::device::query_in_url()
            .is_some_and(|query| graft_app::device::query_value(&query, "fault") == Some("helper-panic"))
}

fn post(scope: &web_sys::DedicatedWorkerGlobalScope, reply: &Reply, values: &[&[f32]]) {
    let message = js_sys::Array::of1(&serde_json::to_string(reply).expect("replies serialise").into());
    let transfer = js_sys::Array::new();
    for values in values {
        let array = js_sys::Float32Array::from(*values);
        transfer.push(&array.buffer());
        message.push(&array);
    }
    if let Err(error) = scope.post_message_with_transfer(&message, &transfer) {
        leptos::logging::error!("graft replica: postMessage failed: {error:?}");
    }
}

fn reply(answer: Result<PartAnswer, PeerError>) {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    match answer {
        Ok(answer) => post(
            &scope,
            &Reply::Done { loss: answer.loss },
            &[&answer.logits, &answer.gradients, &answer.running],
        ),
        Err(error) => post(
            &scope,
            &Reply::Failed {
                message: error.to_string(),
            },
            &[],
        ),
    }
}

/// The `Float32Array` at `index` of a message, copied out.
fn values_at(message: &js_sys::Array, index: u32) -> Option<Vec<f32>> {
    message
        .get(index)
        .dyn_ref::<js_sys::Float32Array>()
        .map(js_sys::Float32Array::to_vec)
}

fn unpack_part(data: &JsValue) -> Result<PartRequest, PeerError> {
    let malformed = || PeerError::Failed("a part that is not [header, state, input]".into());
    let message = data.dyn_ref::<js_sys::Array>().ok_or_else(malformed)?;
    let header: PartHeader = message
        .get(0)
        .as_string()
        .and_then(|json| serde_json::from_str(&json).ok())
        .ok_or_else(malformed)?;
    Ok(PartRequest {
        header,
        state: values_at(message, 1).ok_or_else(malformed)?,
        input: values_at(message, 2).ok_or_else(malformed)?,
    })
}

/// A reply's JSON and values, or why it is not one.
fn unpack_reply(data: &JsValue) -> Result<PartAnswer, PeerError> {
    let message = data
        .dyn_ref::<js_sys::Array>()
        .ok_or_else(|| PeerError::Failed("a reply that is not an array".into()))?;
    let reply: Option<Reply> = message
        .get(0)
        .as_string()
        .and_then(|json| serde_json::from_str(&json).ok());
    match reply {
        Some(Reply::Done { loss }) => match (values_at(message, 1), values_at(message, 2), values_at(message, 3)) {
            (Some(logits), Some(gradients), Some(running)) => Ok(PartAnswer {
                loss,
                logits,
                gradients,
                running,
            }),
            _ => Err(PeerError::Failed("a reply without its values".into())),
        },
        Some(Reply::Failed { message }) => Err(PeerError::Failed(message)),
        Some(Reply::Ready) => Err(PeerError::Failed("an answer out of turn".into())),
        // The engine loader's own message when the wasm could not be loaded, or anything else.
        None => Err(PeerError::Failed(format!(
            "the replica said {}",
            message.get(0).as_string().unwrap_or_default()
        ))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Health {
    #[default]
    Starting,
    Ready,
    Failed,
}

/// Told `true` when a replica becomes ready, `false` when it fails.
type OnChange = Box<dyn Fn(bool)>;

/// A replica's health, and who is told when it becomes ready or fails.
#[derive(Default)]
struct Watched {
    health: Cell<Health>,
    on_change: RefCell<Option<OnChange>>,
}

impl Watched {
    fn get(&self) -> Health {
        self.health.get()
    }

    fn set(&self, health: Health) {
        if self.health.replace(health) != health
            && let Some(on_change) = &*self.on_change.borrow()
        {
            on_change(health == Health::Ready);
        }
    }
}

/// The training worker's side: a replica worker, as the engine's [`Peer`].
pub struct ReplicaPeer {
    worker: web_sys::Worker,
    health: Rc<Watched>,
    /// The parts sent and not yet answered (their promises' `resolve`).
    waiting: Rc<RefCell<VecDeque<js_sys::Function>>>,
    /// Parts it answered so far.
    answered: Rc<Cell<usize>>,
}

impl ReplicaPeer {
    /// Starts a replica from the script at `url` (of `kind`, classic when `None`; the browser
    /// benchmarks start theirs from the test runner's wasm, as a module worker). It counts once ready.
    pub fn start_at(url: &str, kind: Option<web_sys::WorkerType>) -> Option<Self> {
        let options = web_sys::WorkerOptions::new();
        if let Some(kind) = kind {
            options.set_type(kind);
        }
        let worker = web_sys::Worker::new_with_options(url, &options).ok()?;
        let health: Rc<Watched> = Rc::default();
        let waiting: Rc<RefCell<VecDeque<js_sys::Function>>> = Rc::default();
        let fail = {
            let (health, waiting, worker) = (health.clone(), waiting.clone(), worker.clone());
            move || fail(&health, &waiting, &worker)
        };
        {
            let (health, waiting, fail) = (health.clone(), waiting.clone(), fail.clone());
            // For the replica's whole life.
            gloo_events::EventListener::new(&worker, "message", move |event| {
                let data = event.unchecked_ref::<web_sys::MessageEvent>().data();
                let ready = data
                    .dyn_ref::<js_sys::Array>()
                    .and_then(|message| message.get(0).as_string())
                    .and_then(|json| serde_json::from_str::<Reply>(&json).ok())
                    == Some(Reply::Ready);
                match health.get() {
                    Health::Starting if ready => health.set(Health::Ready),
                    // The loader's failure, or anything else before it is ready.
                    Health::Starting => fail(),
                    Health::Ready => {
                        if let Some(resolve) = waiting.borrow_mut().pop_front() {
                            let _ = resolve.call1(&JsValue::NULL, &data);
                        }
                    }
                    Health::Failed => {}
                }
            })
            .forget();
        }
        // Handled here (cancelled: not the page's to see as this worker's uncaught error).
        gloo_events::EventListener::new(&worker, "error", move |event| {
            event.prevent_default();
            fail();
        })
        .forget();
        Some(Self {
            worker,
            health,
            waiting,
            answered: Rc::new(Cell::new(0)),
        })
    }

    /// The app's replica: the CPU build of this worker in the replica role (the tests' build passes
    /// the page's faults on, `?fault=helper-panic`).
    pub fn start() -> Option<Self> {
        let url = "./engine_loader.js?build=worker-cpu&role=replica";
        let fault = if cfg!(feature = "test-hooks") {
            graft_app::device::query_in_url()
                .and_then(|query| {
                    graft_app::device::query_value(&query, "fault").map(|fault| format!("&fault={fault}"))
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Self::start_at(&format!("{url}{fault}"), None)
    }

    /// Tells `on_change` each time the replica becomes ready (`true`) or fails (`false`).
    pub fn on_change(&self, on_change: impl Fn(bool) + 'static) {
        self.health.on_change.replace(Some(Box::new(on_change)));
    }

    /// Parts it answered so far.
    pub fn answered(&self) -> usize {
        self.answered.get()
    }
}

/// A replica that failed: stopped, and every part waiting for it answered with nothing.
fn fail(health: &Watched, waiting: &RefCell<VecDeque<js_sys::Function>>, worker: &web_sys::Worker) {
    health.set(Health::Failed);
    worker.terminate();
    for resolve in waiting.borrow_mut().drain(..) {
        let _ = resolve.call1(&JsValue::NULL, &JsValue::NULL);
    }
}

impl Drop for ReplicaPeer {
    fn drop(&mut self) {
        fail(&self.health, &self.waiting, &self.worker);
    }
}

impl Peer for ReplicaPeer {
    fn ready(&self) -> bool {
        self.health.get() == Health::Ready
    }

    fn run(&self, part: &PartRequest) -> PartFuture {
        if !self.ready() {
            return Box::pin(async { Err(PeerError::Failed("the replica is not ready".into())) });
        }
        let message = js_sys::Array::of1(&serde_json::to_string(&part.header).expect("headers serialise").into());
        let transfer = js_sys::Array::new();
        for values in [&part.state, &part.input] {
            let array = js_sys::Float32Array::from(values.as_slice());
            transfer.push(&array.buffer());
            message.push(&array);
        }
        if self.worker.post_message_with_transfer(&message, &transfer).is_err() {
            fail(&self.health, &self.waiting, &self.worker);
            return Box::pin(async { Err(PeerError::Failed("the part could not be sent".into())) });
        }
        let promise = js_sys::Promise::new(&mut |resolve, _reject| self.waiting.borrow_mut().push_back(resolve));
        let (health, waiting, answered) = (self.health.clone(), self.waiting.clone(), self.answered.clone());
        let worker = self.worker.clone();
        Box::pin(async move {
            let data = wasm_bindgen_futures::JsFuture::from(promise)
                .await
                .unwrap_or(JsValue::NULL);
            let answer = unpack_reply(&data);
            match &answer {
                Ok(_) => answered.set(answered.get() + 1),
                // Not asked again: what failed once would fail again.
                Err(_) => fail(&health, &waiting, &worker),
            }
            answer
        })
    }
}

/// The replica the app starts on the CPU backend, once, installed as the engine's peer when the
/// browser has a core beyond this worker's (`helpers::wanted()` counts them); the page is told the
/// cores training runs on each time it becomes ready or fails.
pub fn start_on_cpu() {
    if graft_engine::peer::installed().is_none()
        && crate::helpers::wanted() > 0
        && let Some(replica) = ReplicaPeer::start()
    {
        replica.on_change(crate::helpers::report_replica);
        graft_engine::peer::install(Some(Rc::new(replica)));
    }
}
