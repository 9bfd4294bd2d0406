//! Compare strategies: the recommended one and its alternatives measured on the same folds of the
//! pictures within a time budget, as a chart (accuracy with its spread across folds, seconds beside
//! it), the recommended one and the measured winner marked, and one click to train the winner.

use graft_engine::compare::{Comparison, StrategyResult};
use graft_engine::strategy::Strategy;
use leptos::prelude::*;

use crate::protocol::WorkerRequest;

use super::training::start_training;
use crate::page::state::{CompareProgress, Studio};
use crate::page::{bridge, studio};

/// A strategy with its parameter, as the chart labels it.
fn label(strategy: &Strategy) -> String {
    match strategy {
        Strategy::PartialFreeze { trainable_blocks } => format!("Partial freeze ({trainable_blocks} blocks)"),
        other => other.kind().label().to_string(),
    }
}

#[component]
pub(crate) fn ComparePanel() -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let busy = move || studio.comparing.get().is_some() || studio.training.get();
    let compare = {
        let bridge = bridge.clone();
        move |_| {
            let Some(recommendation) = studio.recommendation.get_untracked() else {
                return;
            };
            studio.comparing.set(Some(CompareProgress::default()));
            bridge.send(
                &WorkerRequest::Compare {
                    model: studio.model.get_untracked(),
                    recommended: recommendation.strategy,
                    budget_seconds: None,
                },
                Vec::new(),
            );
        }
    };
    let stop = {
        let bridge = bridge.clone();
        move |_| bridge.send(&WorkerRequest::Stop, Vec::new())
    };
    view! {
        <div class="compare" data-testid="compare">
            <div class="toolbar">
                <button
                    data-testid="compare-button"
                    on:click=compare
                    disabled=move || busy() || studio.recommendation.get().is_none()
                    title="Train the recommended strategy and its alternatives on the same folds of your pictures, within about the time of one training run, and measure which is best"
                >
                    "Compare strategies"
                </button>
                <button data-testid="compare-stop" on:click=stop hidden=move || studio.comparing.get().is_none()>
                    "Stop"
                </button>
            </div>
            {move || studio.comparing.get().map(|progress| view! { <CompareProgressView progress=progress/> })}
            {move || {
                studio
                    .comparison
                    .get()
                    .map(|comparison| view! { <CompareChart comparison=comparison studio=studio/> })
            }}
        </div>
    }
}

#[component]
fn CompareProgressView(progress: CompareProgress) -> impl IntoView {
    let text = match progress.budget_seconds {
        None => "Timing each strategy on a few of your pictures…".to_string(),
        Some(budget) => {
            let plan: Vec<String> = progress
                .plan
                .iter()
                .map(|p| {
                    let part = if p.train_fraction < 1.0 {
                        format!(" on {:.0}% of the training pictures", p.train_fraction * 100.0)
                    } else {
                        String::new()
                    };
                    format!("{} × {} epochs{part}", label(&p.strategy), p.epochs)
                })
                .collect();
            format!(
                "Budget {:.0} s: {}. {} of {} runs done{}.",
                budget,
                plan.join(", "),
                progress.folds_done,
                progress.folds_total,
                progress.current.map(|c| format!("; now {c}")).unwrap_or_default()
            )
        }
    };
    view! { <p class="hint" data-testid="compare-progress">{text}</p> }
}

#[component]
fn CompareChart(comparison: Comparison, studio: Studio) -> impl IntoView {
    const LEFT: f64 = 170.0;
    const WIDTH: f64 = 220.0;
    const ROW: f64 = 30.0;
    let rows = comparison.results.len();
    let height = ROW * rows as f64 + 24.0;
    let best = comparison.best;
    let recommended = comparison.recommended;
    let winner = comparison.results.iter().find(|r| r.strategy == best).cloned();
    let bar = |index: usize, result: &StrategyResult| {
        let y = 8.0 + ROW * index as f64;
        let x = |accuracy: f64| LEFT + WIDTH * accuracy.clamp(0.0, 1.0);
        let mean = result.mean_accuracy;
        let (low, high) = (mean - result.std_accuracy, mean + result.std_accuracy);
        let is_best = result.strategy == best;
        let is_recommended = result.strategy == recommended;
        let marks = match (is_best, is_recommended) {
            (true, true) => " ★ winner, recommended",
            (true, false) => " ★ winner",
            (false, true) => " recommended",
            _ => "",
        };
        view! {
            <g
                data-testid=format!("compare-row-{index}")
                data-strategy=result.strategy.name()
                data-accuracy=format!("{mean:.4}")
                data-best=is_best.to_string()
                data-recommended=is_recommended.to_string()
            >
                <text x="0" y=y + 15.0 class="compare-label" class:best=is_best>
                    {label(&result.strategy)}
                </text>
                <rect x=LEFT y=y + 3.0 width=WIDTH * mean.clamp(0.0, 1.0) height="14" class="compare-bar" class:best=is_best/>
                <line x1=x(low) x2=x(high) y1=y + 10.0 y2=y + 10.0 class="compare-spread"/>
                <line x1=x(low) x2=x(low) y1=y + 5.0 y2=y + 15.0 class="compare-spread"/>
                <line x1=x(high) x2=x(high) y1=y + 5.0 y2=y + 15.0 class="compare-spread"/>
                <text x=LEFT + WIDTH + 8.0 y=y + 15.0 class="compare-figures">
                    {format!(
                        "{:.1}% ± {:.1} · {:.0} s{marks}",
                        mean * 100.0,
                        result.std_accuracy * 100.0,
                        result.seconds
                    )}
                </text>
            </g>
        }
    };
    let train_winner = move |_| {
        let bridge = bridge();
        studio.strategy.set(Some(best.kind()));
        if let Strategy::PartialFreeze { trainable_blocks } = best {
            studio.trainable_blocks.set(trainable_blocks);
        }
        start_training(studio, &bridge);
    };
    view! {
        <div class="compare-result">
            <svg
                class="compare-chart"
                data-testid="compare-chart"
                viewBox=format!("0 0 720 {height}")
                width="720"
                height=height
            >
                {comparison.results.iter().enumerate().map(|(i, r)| bar(i, r)).collect_view()}
                <line x1=LEFT x2=LEFT y1="0" y2=height - 16.0 class="compare-axis"/>
                <line x1=LEFT + WIDTH x2=LEFT + WIDTH y1="0" y2=height - 16.0 class="compare-axis"/>
                <text x=LEFT y=height - 4.0 class="compare-tick" text-anchor="middle">"0%"</text>
                <text x=LEFT + WIDTH y=height - 4.0 class="compare-tick" text-anchor="middle">"100%"</text>
            </svg>
            <p class="hint">"Validation accuracy on the same folds: the bar is the mean, the whiskers its spread (± one standard deviation); then the seconds each took."</p>
            <p class="explanation" data-testid="compare-verdict">{comparison.verdict.clone()}</p>
            <p class="hint">
                {format!(
                    "{} folds of {} pictures; {:.0} s of a {:.0} s budget.",
                    comparison.folds, comparison.images, comparison.seconds, comparison.budget_seconds
                )}
            </p>
            {winner
                .map(|w| {
                    view! {
                        <button
                            data-testid="compare-train-winner"
                            on:click=train_winner
                            disabled=move || studio.training.get() || studio.comparing.get().is_some()
                        >
                            {format!("Train the winner ({}) on all pictures", label(&w.strategy))}
                        </button>
                    }
                })}
        </div>
    }
}
