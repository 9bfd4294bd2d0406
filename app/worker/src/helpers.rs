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
//! On a cross-origin isolated page the first ready helper also takes half of each training step's
//! 1x1-convolution products (`graft_engine::helpers::StepHelper`): the worker waits for its answer
//! inside the operation, on shared memory (`graft_helper::Channel`), so training on the CPU backend
//! uses the second core too.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use graft_engine::helpers::{Answer, HelperError, Helpers, Share, SharedNetwork, StepHelper, Work};
use graft_helper::{Channel, FromHelper, ToHelper, Waited};
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

/// Tells the page how many cores frozen inference runs on now (`ready` helpers and this worker).
fn report_cores(ready: usize) {
    crate::post(
        &graft_app::protocol::WorkerEvent::Cores { cores: ready + 1 },
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

/// How long the worker waits for a helper's share of a training step (a few milliseconds when all is
/// well) before computing it itself and asking that helper nothing more.
const STEP_TIMEOUT_MS: f64 = 20_000.0;

/// The helper that takes the training steps' shares, and the channel it answers them through.
struct StepChannel {
    helper: Rc<Helper>,
    channel: Channel,
}

/// The helper workers of this worker.
pub struct Pool {
    helpers: Vec<Rc<Helper>>,
    step: RefCell<Option<StepChannel>>,
    /// Training steps' shares answered by a helper so far.
    steps_shared: Cell<usize>,
}

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

/// Starts the helpers and installs them as the engine's, once (on the CPU backend: on WebGPU the GPU
/// runs frozen inference). The person's pictures never wait for them: until a helper is ready, the
/// worker computes every share itself.
pub fn start_on_cpu() {
    if graft_engine::helpers::installed().is_none() {
        let count = wanted();
        if count > 0 {
            Rc::new(Pool::start(count)).install();
        }
    }
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
                gloo_events::EventListener::new(&worker, "error", move |_| {
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
            step: RefCell::new(None),
            steps_shared: Cell::new(0),
        }
    }

    /// Training steps' shares a helper has answered so far.
    pub fn steps_shared(&self) -> usize {
        self.steps_shared.get()
    }

    /// Installs the pool as the engine's helpers for frozen inference, and as its step helper when
    /// this worker can share memory with them.
    pub fn install(self: Rc<Self>) {
        if Channel::available() {
            graft_engine::helpers::install_step(Some(self.clone()));
        }
        graft_engine::helpers::install(Some(self));
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
        let send = |message: ToHelper| {
            let (message, transfer) = message.pack();
            helper.worker.post_message_with_transfer(&message, &transfer)
        };
        let mut sent = Ok(());
        if helper.holds.get() != Some(network.key) {
            sent = send(ToHelper::Load {
                key: network.key,
                file: network.file.to_vec(),
            });
            helper.holds.set(Some(network.key));
        }
        let sent = sent.and_then(|()| {
            send(ToHelper::Run {
                key: network.key,
                work,
                dims,
                images,
            })
        });
        if sent.is_err() {
            helper.fail();
            return Box::pin(async { Err(HelperError("the share could not be sent".into())) });
        }
        let promise = js_sys::Promise::new(&mut |resolve, _reject| helper.waiting.borrow_mut().push_back(resolve));
        Box::pin(async move {
            let answer = match wasm_bindgen_futures::JsFuture::from(promise).await {
                Ok(data) => FromHelper::unpack(&data),
                Err(_) => FromHelper::Failed("no answer".into()),
            };
            match answer {
                FromHelper::Done(values) => Ok(values),
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
}

impl StepHelper for Pool {
    fn start(&self, share: Share, a: &[f32], b: &[f32]) -> bool {
        let Some(helper) = self.ready_ones().next().cloned() else {
            return false;
        };
        let send = |(message, transfer): graft_helper::Packed| {
            helper.worker.post_message_with_transfer(&message, &transfer).is_ok()
        };
        let mut step = self.step.borrow_mut();
        let wanted = share.output_len();
        let fits = step
            .as_ref()
            .is_some_and(|step| Rc::ptr_eq(&step.helper, &helper) && step.channel.capacity() >= wanted);
        if !fits {
            // Room for the largest answer so far, doubled, so that a step's shares seldom grow it.
            let capacity = wanted.max(step.as_ref().map_or(0, |step| 2 * step.channel.capacity()));
            let Some(channel) = Channel::new(capacity) else {
                return false;
            };
            if !send(ToHelper::Channel(channel.buffer().clone()).pack()) {
                helper.fail();
                return false;
            }
            *step = Some(StepChannel {
                helper: helper.clone(),
                channel,
            });
        }
        let Some(step) = step.as_ref() else { return false };
        step.channel.set_pending();
        if !send(graft_helper::pack_step(share, a, b)) {
            helper.fail();
            return false;
        }
        true
    }

    fn finish(&self, out: &mut [f32]) -> Result<(), HelperError> {
        let step = self.step.borrow();
        let Some(step) = step.as_ref() else {
            return Err(HelperError("no step started".into()));
        };
        match step.channel.wait(STEP_TIMEOUT_MS) {
            Waited::Done(len) if len == out.len() => {
                step.channel.read(out);
                self.steps_shared.set(self.steps_shared.get() + 1);
                Ok(())
            }
            waited => {
                // Not asked again: what failed once would fail again.
                step.helper.fail();
                Err(HelperError(format!("a training step's share: {waited:?}")))
            }
        }
    }
}
