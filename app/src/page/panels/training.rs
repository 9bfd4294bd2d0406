//! Training: train, stop, continue; progress and the curves.

use leptos::prelude::*;

use crate::protocol::{EpochPoint, WorkerRequest};

use crate::bridge::Bridge;
use crate::page::state::{ProgressView, Studio};
use crate::page::{bridge, studio};

/// A train and a validation value of one epoch.
pub(crate) type CurvePoint = (Option<f64>, Option<f64>);

/// Starts a run with the chosen strategy and settings (or says what is missing).
pub(crate) fn start_training(studio: Studio, bridge: &Bridge) {
    let Some(config) = studio.config() else {
        studio.say(
            true,
            "Choose a strategy first (or measure your data for a recommendation).",
        );
        return;
    };
    studio.training.set(true);
    studio.paused.set(None);
    studio.history.set(Vec::new());
    studio.summary.set(None);
    studio.samples.set(Vec::new());
    studio.selected_cell.set(None);
    studio.progress.set(Some(ProgressView::default()));
    bridge.send(
        &WorkerRequest::Train {
            model: studio.model.get_untracked(),
            config: Box::new(config),
        },
        Vec::new(),
    );
}

#[component]
pub(crate) fn TrainingPanel() -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let train = {
        let bridge = bridge.clone();
        move |_| start_training(studio, &bridge)
    };
    let go_on = {
        let bridge = bridge.clone();
        move |_| {
            studio.training.set(true);
            studio.paused.set(None);
            studio.summary.set(None);
            studio.samples.set(Vec::new());
            studio.selected_cell.set(None);
            studio.progress.update(|p| {
                if let Some(p) = p {
                    p.done = None;
                }
            });
            bridge.send(&WorkerRequest::Continue, Vec::new());
        }
    };
    let stop = move |_| bridge.send(&WorkerRequest::Stop, Vec::new());
    view! {
        <section class="panel training">
            <h2>"4. Train"</h2>
            <div class="toolbar">
                <button data-testid="train-button" on:click=train disabled=move || studio.training.get()>
                    "Train"
                </button>
                <button data-testid="stop-button" on:click=stop disabled=move || !studio.training.get()>
                    "Stop"
                </button>
                <button
                    data-testid="continue-button"
                    hidden=move || studio.paused.get().is_none() || studio.training.get()
                    title=move || {
                        studio.paused.get().map(|at| format!("Go on with the stopped run, {at}")).unwrap_or_default()
                    }
                    on:click=go_on
                >
                    "Continue"
                </button>
            </div>
            {move || studio.progress.get().map(|p| view! { <ProgressBar progress=p/> })}
            <Curves/>
        </section>
    }
}

#[component]
pub(crate) fn ProgressBar(progress: ProgressView) -> impl IntoView {
    let text = match (&progress.done, progress.caching) {
        (Some(done), _) => format!(
            "Training {done} after {} epochs ({} phase last)",
            progress.epochs, progress.phase
        ),
        (None, caching) => match caching {
            Some((done, total)) => format!(
                "{}: computing the frozen layers once, {done}/{total} images",
                progress.phase
            ),
            None if progress.epochs == 0 => "Starting…".to_string(),
            None => format!(
                "{} · epoch {}/{} · batch {}/{}{}",
                progress.phase,
                progress.epoch,
                progress.epochs,
                progress.batch,
                progress.batches,
                progress
                    .eta_seconds
                    .map(|eta| format!(" · {eta:.0} s left"))
                    .unwrap_or_default()
            ),
        },
    };
    view! {
        <div class="progress" data-testid="progress">
            <progress max="1" value=progress.fraction></progress>
            <span>{text}</span>
        </div>
    }
}

/// Loss and accuracy per epoch, train and validation, as SVG polylines.
#[component]
pub(crate) fn Curves() -> impl IntoView {
    let studio = studio();
    let chart = move |title: &'static str, pick: fn(&EpochPoint) -> (Option<f64>, Option<f64>)| {
        let history = studio.history.get();
        if history.is_empty() {
            return None;
        }
        let values: Vec<(Option<f64>, Option<f64>)> = history.iter().map(pick).collect();
        let max = values
            .iter()
            .flat_map(|(a, b)| [*a, *b])
            .flatten()
            .fold(f64::MIN_POSITIVE, f64::max);
        let n = history.len().max(2) - 1;
        let line = |select: fn(&CurvePoint) -> Option<f64>| {
            values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    select(v).map(|y| {
                        format!(
                            "{:.1},{:.1}",
                            10.0 + 280.0 * i as f64 / n as f64,
                            110.0 - 100.0 * y / max
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        Some(view! {
            <figure class="chart">
                <svg viewBox="0 0 300 120" width="300" height="120">
                    <line x1="10" y1="110" x2="290" y2="110" class="axis"/>
                    <polyline points=line(|v| v.0) class="train"/>
                    <polyline points=line(|v| v.1) class="val"/>
                </svg>
                <figcaption>
                    {format!("{title} (max {max:.2}) — ")}
                    <span class="train">"train"</span>
                    ", "
                    <span class="val">"validation"</span>
                </figcaption>
            </figure>
        })
    };
    view! {
        <div class="curves">
            {move || chart("Loss", |p| (Some(p.train_loss), p.val_loss))}
            {move || chart("Accuracy", |p| (Some(p.train_accuracy), p.val_accuracy))}
        </div>
    }
}
