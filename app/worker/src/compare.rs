//! Comparing strategies on the pictures (`graft_engine::compare`), beside the inbox: progress to the
//! page, `Stop` honoured between batches, the result kept with the project by the page's view.

use std::ops::ControlFlow;
use std::rc::Rc;

use graft_engine::compare::{self, CompareConfig, CompareError, CompareEvent, CompareObserver};
use graft_engine::data::Dataset;
use graft_engine::model::ModelKind;
use graft_engine::strategy::Strategy;

use graft_app::protocol::{Work, WorkerEvent};

use super::models::{compute_device, pretrained};
use super::state::{STATE, STOP};
use super::{fail, post, yield_now};

/// Relays a comparison's events to the page (all but its per-batch steps, of which it sends one
/// when the candidate or fold changes); stops when a `Stop` arrived.
struct Relay {
    last_step: Option<(Strategy, usize)>,
}

impl CompareObserver for Relay {
    fn event(&mut self, event: &CompareEvent) -> ControlFlow<()> {
        let send = match event {
            CompareEvent::Step { strategy, fold } => {
                let now = Some((*strategy, *fold));
                std::mem::replace(&mut self.last_step, now) != now
            }
            _ => true,
        };
        if send {
            post(&WorkerEvent::Comparing(Box::new(event.clone())), Vec::new());
        }
        if STOP.with(|stop| stop.get()) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    async fn between_batches(&mut self) {
        yield_now().await;
    }
}

/// Compares `recommended` and its alternatives on `dataset` with `kind`, unless a run is going on.
pub(super) fn start(kind: ModelKind, recommended: Strategy, budget_seconds: Option<f64>, dataset: Rc<Dataset>) {
    if STATE.with_borrow_mut(|state| std::mem::replace(&mut state.busy, true)) {
        return fail(Work::Compare, "a training run or comparison is already going on");
    }
    STOP.with(|stop| stop.set(false));
    wasm_bindgen_futures::spawn_local(async move {
        let result = run(kind, recommended, budget_seconds, &dataset).await;
        STATE.with_borrow_mut(|state| state.busy = false);
        match result {
            Ok(comparison) => post(&WorkerEvent::Compared(Box::new(comparison)), Vec::new()),
            Err(message) => fail(Work::Compare, message),
        }
    });
}

async fn run(
    kind: ModelKind,
    recommended: Strategy,
    budget_seconds: Option<f64>,
    dataset: &Dataset,
) -> Result<compare::Comparison, String> {
    dataset.validate().map_err(|e| e.to_string())?;
    let model = pretrained(kind).await?;
    let device = compute_device()?;
    let config = CompareConfig {
        budget_seconds,
        ..CompareConfig::default()
    };
    let mut relay = Relay { last_step: None };
    compare::compare(&model, kind, dataset, recommended, &config, &device, &mut relay)
        .await
        .map_err(|e| match e {
            CompareError::Cancelled => "The comparison was stopped; nothing was kept from it.".to_string(),
            other => other.to_string(),
        })
}
