//! The helper workers: one per spare core (`navigator.hardwareConcurrency - 1`, at most
//! [`MAX_HELPERS`]; `?helpers=N` in the worker's URL, which the page passes on from its own, sets the
//! number), started once the device is the CPU backend and installed as the engine's helpers
//! (`graft_engine::helpers`), so that embeddings and frozen-prefix activations on the CPU kernels
//! use every core. Each is `graft-helper` in its own Web Worker (`helper_loader.js`), holding its own
//! copy of the network.
//!
//! A helper counts only once it said it is ready; one that fails (its wasm did not load, it
//! trapped) is not asked again, and its shares waiting for an answer are computed here instead.
//!
//! The helpers also compute the 1x1 convolutions' weight gradients of each training step on the CPU
//! backend (`Helpers::run_step`, sent during the backward pass, collected before the optimizer
//! step), so training uses the other cores too.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use graft_engine::helpers::{Answer, HelperError, Helpers, Share, SharedNetwork, Work};
use graft_helper::{FromHelper, ToHelper};
use wasm_bindgen::prelude::*;

/// Helpers at most: each holds a copy of the network (~30 MB for MobileNetV2 with its file), and
/// a batch of 16 pictures is shared out in 4 or more shares of 4 at most.
pub const MAX_HELPERS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Starting,
    Ready,
    Failed,
}

/// One helper worker, and the shares sent to it that wait for an answer (their promises' `resolve`).
struct Helper {
    worker: web_sys::Worker,
    health: Cell<Health>,
    /// The key of the network it holds.
    holds: Cell<Option<u64>>,
    waiting: RefCell<VecDeque<js_sys::Function>>,
    /// Its pool's count of helpers ready, and who is told when it changes.
    ready: Rc<Cell<usize>>,
    on_ready: Rc<dyn Fn(usize)>,
}

thread_local! {
    /// Helpers ready, and whether the replica is.
    static READY: Cell<(usize, bool)> = const { Cell::new((0, false)) };
}

/// Tells the page how many cores frozen inference runs on now (`ready` helpers and this worker).
fn report_cores(ready: usize) {
    READY.set((ready, READY.get().1));
    post_cores();
}

/// Tells the page how many cores training runs on now (the replica, when `ready`, and this worker).
pub(crate) fn report_replica(ready: bool) {
    READY.set((READY.get().0, ready));
    post_cores();
}

fn post_cores() {
    let (helpers, replica) = READY.get();
    crate::post(
        &graft_app::protocol::WorkerEvent::Cores {
            cores: helpers + 1,
            training: usize::from(replica) + 1,
        },
        Vec::new(),
    );
}

impl Helper {
    fn set_ready(&self) {
        if self.health.replace(Health::Ready) == Health::Starting {
            self.ready.set(self.ready.get() + 1);
            (self.on_ready)(self.ready.get());
        }
    }

    /// Resolves every share waiting with a failure, and stops the helper.
    fn fail(&self) {
        if self.health.replace(Health::Failed) == Health::Ready {
            self.ready.set(self.ready.get() - 1);
            (self.on_ready)(self.ready.get());
        }
        self.worker.terminate();
        let (failed, _) = FromHelper::Failed("the helper stopped".into()).pack();
        for resolve in self.waiting.borrow_mut().drain(..) {
            let _ = resolve.call1(&JsValue::NULL, &failed);
        }
    }
}

/// The helper workers of this worker.
pub struct Pool {
    helpers: Vec<Rc<Helper>>,
    /// Training step shares a helper has answered so far.
    steps_shared: Rc<Cell<usize>>,
    /// Buffers the helpers sent back, to carry the next steps' operands (see
    /// `graft_helper::pack_step`).
    spare: Rc<RefCell<Vec<js_sys::ArrayBuffer>>>,
}

/// Bytes of spare buffers kept at most (a step sends one per 1x1 convolution whose weight gradient
/// a helper computes; beyond these a new buffer is made, and dropped after).
const MAX_SPARE_BYTES: usize = 128 << 20;

/// How many helpers to start: the worker's URL's `helpers=N`, else one per core beyond this one.
pub fn wanted() -> usize {
    use graft_app::device::{query_in_url, query_value};
    let from_url = query_in_url().and_then(|query| query_value(&query, "helpers")?.parse::<usize>().ok());
    let cores = || {
        use wasm_bindgen::JsCast;
        let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        scope.navigator().hardware_concurrency() as usize
    };
    from_url.unwrap_or_else(|| cores().saturating_sub(1)).min(MAX_HELPERS)
}

/// On the CPU backend (on WebGPU the GPU runs frozen inference and training): starts the helpers
/// and installs them as the engine's, once, and the replica that takes part of each training step
/// (`crate::replica`); training steps are computed in two parts from now on, so that their numbers
/// do not depend on whether the replica is there. The person's pictures never wait for them: until a
/// helper is ready, the worker computes every share itself, and every part until the replica is.
pub fn start_on_cpu() {
    graft_engine::peer::set_steps_in_parts(true);
    if graft_engine::helpers::installed().is_none() {
        let count = wanted();
        if count > 0 {
            graft_engine::helpers::install(Some(Rc::new(Pool::start(count))));
        }
    }
    crate::replica::start_on_cpu();
}

impl Pool {
    /// Starts `count` helper workers (they count once ready), telling the page how many cores are
    /// in use each time that changes.
    pub fn start(count: usize) -> Self {
        // The tests' build passes its faults on (`?fault=helper-panic`).
        let url = if cfg!(feature = "test-hooks") {
            format!(
                "./helper_loader.js{}",
                graft_app::device::query_in_url().unwrap_or_default()
            )
        } else {
            "./helper_loader.js".to_string()
        };
        Self::start_at(&url, None, count, report_cores)
    }

    /// Starts `count` helper workers from the script at `url` (of `kind`, classic when `None`), each
    /// a `graft_helper::serve`; `on_ready` is told the number of helpers ready each time it changes.
    /// (The browser benchmarks start theirs from the test runner's own wasm, as module workers.)
    pub fn start_at(
        url: &str,
        kind: Option<web_sys::WorkerType>,
        count: usize,
        on_ready: impl Fn(usize) + 'static,
    ) -> Self {
        let ready = Rc::new(Cell::new(0));
        let spare: Rc<RefCell<Vec<js_sys::ArrayBuffer>>> = Rc::default();
        let on_ready: Rc<dyn Fn(usize)> = Rc::new(on_ready);
        let options = web_sys::WorkerOptions::new();
        if let Some(kind) = kind {
            options.set_type(kind);
        }
        let helpers = (0..count)
            .filter_map(|_| web_sys::Worker::new_with_options(url, &options).ok())
            .map(|worker| {
                let helper = Rc::new(Helper {
                    worker: worker.clone(),
                    health: Cell::new(Health::Starting),
                    holds: Cell::new(None),
                    waiting: RefCell::new(VecDeque::new()),
                    ready: ready.clone(),
                    on_ready: on_ready.clone(),
                });
                let on_message = Rc::downgrade(&helper);
                // For the helper's whole life.
                gloo_events::EventListener::new(&worker, "message", move |event| {
                    let Some(helper) = on_message.upgrade() else { return };
                    let data = wasm_bindgen::JsCast::unchecked_ref::<web_sys::MessageEvent>(event).data();
                    if FromHelper::unpack(&data) == FromHelper::Ready {
                        helper.set_ready();
                    } else if let Some(resolve) = helper.waiting.borrow_mut().pop_front() {
                        let _ = resolve.call1(&JsValue::NULL, &data);
                    }
                })
                .forget();
                let on_error = Rc::downgrade(&helper);
                // Handled here: cancelled, so that it does not go on to the page as this worker's
                // own uncaught error (which the page answers by restarting this worker).
                gloo_events::EventListener::new(&worker, "error", move |event| {
                    event.prevent_default();
                    if let Some(helper) = on_error.upgrade() {
                        helper.fail();
                    }
                })
                .forget();
                helper
            })
            .collect();
        Self {
            helpers,
            steps_shared: Rc::new(Cell::new(0)),
            spare,
        }
    }

    /// Buffers kept to carry the next training step shares.
    pub fn spare_buffers(&self) -> usize {
        self.spare.borrow().len()
    }

    /// Training step shares a helper has answered so far.
    pub fn steps_shared(&self) -> usize {
        self.steps_shared.get()
    }

    fn ready_ones(&self) -> impl Iterator<Item = &Rc<Helper>> {
        self.helpers
            .iter()
            .filter(|helper| helper.health.get() == Health::Ready)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for helper in &self.helpers {
            helper.fail();
        }
    }
}

impl Helpers for Pool {
    fn ready(&self) -> usize {
        self.ready_ones().count()
    }

    fn run(&self, index: usize, network: &SharedNetwork, work: Work, images: Vec<f32>, dims: [usize; 4]) -> Answer {
        let Some(helper) = self.ready_ones().nth(index).cloned() else {
            return Box::pin(async { Err(HelperError("no such helper".into())) });
        };
        let mut messages = Vec::with_capacity(2);
        if helper.holds.get() != Some(network.key) {
            messages.push(
                ToHelper::Load {
                    key: network.key,
                    file: network.file.to_vec(),
                }
                .pack(),
            );
            helper.holds.set(Some(network.key));
        }
        messages.push(
            ToHelper::Run {
                key: network.key,
                work,
                dims,
                images,
            }
            .pack(),
        );
        let messages = messages
            .into_iter()
            .map(|(message, transfer)| (message.into(), transfer))
            .collect();
        ask(helper, messages, None)
    }

    fn run_step(&self, index: usize, share: Share, a: &[f32], b: &[f32]) -> Answer {
        let Some(helper) = self.ready_ones().nth(index).cloned() else {
            return Box::pin(async { Err(HelperError("no such helper".into())) });
        };
        let (message, transfer) = graft_helper::pack_step(share, a, b, &mut self.spare.borrow_mut());
        let step = StepReturn {
            count: self.steps_shared.clone(),
            spare: self.spare.clone(),
        };
        ask(helper, vec![(message.into(), transfer)], Some(step))
    }
}

/// What a step's answer gives back besides its values: the count of step answers, and the spare
/// buffers its buffer joins.
struct StepReturn {
    count: Rc<Cell<usize>>,
    spare: Rc<RefCell<Vec<js_sys::ArrayBuffer>>>,
}

/// Sends `messages` (each a message and the buffers it transfers) to `helper` and returns its answer
/// to the last one (each answered in order).
fn ask(helper: Rc<Helper>, messages: Vec<(JsValue, js_sys::Array)>, step: Option<StepReturn>) -> Answer {
    let sent = messages
        .iter()
        .try_for_each(|(message, transfer)| helper.worker.post_message_with_transfer(message, transfer));
    if sent.is_err() {
        helper.fail();
        return Box::pin(async { Err(HelperError("the share could not be sent".into())) });
    }
    let promise = js_sys::Promise::new(&mut |resolve, _reject| helper.waiting.borrow_mut().push_back(resolve));
    Box::pin(async move {
        let data = wasm_bindgen_futures::JsFuture::from(promise).await;
        let answer = match &data {
            Ok(data) => FromHelper::unpack(data),
            Err(_) => FromHelper::Failed("no answer".into()),
        };
        match answer {
            FromHelper::Done(values) => {
                if let (Some(step), Ok(data)) = (step, data) {
                    step.count.set(step.count.get() + 1);
                    // Its values are copied out: the buffer carries the next step's operands.
                    if let Some(answer) = data.dyn_ref::<js_sys::Float32Array>() {
                        let mut spare = step.spare.borrow_mut();
                        let kept: usize = spare.iter().map(|buffer| buffer.byte_length() as usize).sum();
                        let buffer = answer.buffer();
                        if kept + buffer.byte_length() as usize <= MAX_SPARE_BYTES {
                            spare.push(buffer);
                        }
                    }
                }
                Ok(values)
            }
            // Not asked again: what failed once would fail again.
            FromHelper::Failed(why) => {
                helper.fail();
                Err(HelperError(why))
            }
            FromHelper::Ready => {
                helper.fail();
                Err(HelperError("an answer out of turn".into()))
            }
        }
    })
}
