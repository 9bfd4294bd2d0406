//! Measure and recommend: the size x similarity chart, the strategy (yours to override) and the advanced settings.

use graft_engine::recommend::{Quadrant, Recommendation};
use graft_engine::strategy::StrategyKind;
use graft_engine::train::BatchNormStatistics;
use leptos::prelude::*;

use crate::protocol::WorkerRequest;

use crate::page::{bridge, studio};

use super::ComparePanel;

#[component]
pub(crate) fn RecommendationPanel() -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let defaults = move || studio.defaults();
    let analyse = move |_| {
        studio.measuring.set(Some((0, 0)));
        bridge.send(
            &WorkerRequest::Recommend {
                model: studio.model.get_untracked(),
            },
            Vec::new(),
        );
    };
    view! {
        <section class="panel recommend">
            <h2>"3. Strategy"</h2>
            <button data-testid="analyse-button" on:click=analyse disabled=move || studio.measuring.get().is_some()>
                "Measure my data and recommend"
            </button>
            {move || {
                studio
                    .measuring
                    .get()
                    .map(|(done, total)| view! { <p class="hint" data-testid="measuring">{format!("Measuring… {done}/{total} images")}</p> })
            }}
            {move || studio.recommendation.get().map(|r| view! { <RecommendationView recommendation=r/> })}
            <ComparePanel/>
            <fieldset class="strategies">
                <legend>"Strategy (yours to override)"</legend>
                {StrategyKind::ALL
                    .into_iter()
                    .map(|kind| {
                        let recommended = move || {
                            studio.recommendation.get().is_some_and(|r| r.strategy.kind() == kind)
                        };
                        view! {
                            <label class="strategy">
                                <input
                                    type="radio"
                                    name="strategy"
                                    data-testid=format!("strategy-{}", kind.name())
                                    prop:checked=move || studio.strategy.get() == Some(kind)
                                    on:change=move |_| studio.strategy.set(Some(kind))
                                />
                                {kind.label()}
                                {move || recommended().then(|| view! { <em>" (recommended)"</em> })}
                            </label>
                        }
                    })
                    .collect_view()}
            </fieldset>
            <details class="advanced">
                <summary>"Advanced settings"</summary>
                <label>
                    "Epochs "
                    <input
                        type="number"
                        min="1"
                        data-testid="epochs-input"
                        placeholder=move || defaults().map(|c| c.epochs.to_string())
                        prop:value=move || studio.epochs.get().map(|e| e.to_string()).unwrap_or_default()
                        on:change=move |ev| studio.epochs.set(event_target_value(&ev).parse().ok())
                    />
                </label>
                <label>
                    "Learning rate "
                    <input
                        type="number"
                        step="any"
                        data-testid="lr-input"
                        placeholder=move || defaults().map(|c| c.base_lr().to_string())
                        prop:value=move || studio.lr.get().map(|lr| lr.to_string()).unwrap_or_default()
                        on:change=move |ev| studio.lr.set(event_target_value(&ev).parse().ok())
                    />
                </label>
                <label>
                    "Batch "
                    <input
                        type="number"
                        min="1"
                        prop:value=move || studio.batch.get().to_string()
                        on:change=move |ev| {
                            if let Ok(batch) = event_target_value(&ev).parse() {
                                studio.batch.set(batch)
                            }
                        }
                    />
                </label>
                <label>
                    "Trainable blocks (partial freeze) "
                    <input
                        type="number"
                        min="1"
                        prop:value=move || studio.trainable_blocks.get().to_string()
                        on:change=move |ev| {
                            if let Ok(k) = event_target_value(&ev).parse() {
                                studio.trainable_blocks.set(k)
                            }
                        }
                    />
                </label>
                <label>
                    <input
                        type="checkbox"
                        prop:checked=move || studio.augment.get()
                        on:change=move |ev| studio.augment.set(event_target_checked(&ev))
                    />
                    " Augmentation (random crops, flips, colour jitter)"
                </label>
                <label title="What the BatchNorm layers of the blocks that train normalise with. The pretrained statistics suit unfreezing a base once its new head has trained (staged); each batch's suit pictures unlike ImageNet's and training from scratch.">
                    "BatchNorm while training "
                    <select
                        data-testid="batch-norm-select"
                        prop:value=move || match studio.batch_norm.get() {
                            None => "default",
                            Some(BatchNormStatistics::Running) => "running",
                            Some(BatchNormStatistics::Batch) => "batch",
                        }
                        on:change=move |ev| {
                            studio
                                .batch_norm
                                .set(match event_target_value(&ev).as_str() {
                                    "running" => Some(BatchNormStatistics::Running),
                                    "batch" => Some(BatchNormStatistics::Batch),
                                    _ => None,
                                })
                        }
                    >
                        <option value="default">
                            {move || match defaults().map(|c| c.batch_norm_statistics()) {
                                Some(BatchNormStatistics::Batch) => "strategy default (each batch's statistics)",
                                _ => "strategy default (the pretrained statistics)",
                            }}
                        </option>
                        <option value="running">"the pretrained statistics, kept"</option>
                        <option value="batch">"each batch's statistics"</option>
                    </select>
                </label>
            </details>
        </section>
    }
}

#[component]
pub(crate) fn RecommendationView(recommendation: Recommendation) -> impl IntoView {
    // The quadrant chart: x = images in the smallest class against the "large" threshold (log scale,
    // the threshold in the middle), y = similarity.
    let threshold = recommendation.large_threshold.max(1) as f64;
    let ratio = (recommendation.min_per_class.max(1) as f64 / threshold).log10();
    let x = (100.0 + ratio * 60.0).clamp(8.0, 192.0);
    let y = (200.0 - recommendation.similarity * 200.0).clamp(8.0, 192.0);
    let label = |q: Quadrant, text: &'static str| {
        let active = recommendation.quadrant == q;
        (text, active)
    };
    let quadrants = [
        (5.0, 18.0, label(Quadrant::SmallSimilar, "small · similar")),
        (105.0, 18.0, label(Quadrant::LargeSimilar, "large · similar")),
        (5.0, 190.0, label(Quadrant::SmallDissimilar, "small · dissimilar")),
        (105.0, 190.0, label(Quadrant::LargeDissimilar, "large · dissimilar")),
    ];
    view! {
        <div class="recommendation" data-testid="recommendation">
            <svg class="quadrant" data-testid="quadrant" viewBox="0 0 200 200" width="220" height="220">
                <rect x="0" y="0" width="200" height="200" class="frame"/>
                <line x1="100" y1="0" x2="100" y2="200" class="axis"/>
                <line x1="0" y1="100" x2="200" y2="100" class="axis"/>
                {quadrants
                    .into_iter()
                    .map(|(x, y, (text, active))| {
                        view! {
                            <text x=x y=y class:active=active class="quadrant-label">
                                {text}
                            </text>
                        }
                    })
                    .collect_view()}
                <circle cx=x cy=y r="6" class="point"/>
                <text x="100" y="112" class="axis-label" text-anchor="middle">
                    {format!("{} images per class →", recommendation.large_threshold)}
                </text>
                <text x="196" y="96" class="axis-label" text-anchor="end">"similarity ↑"</text>
            </svg>
            <div class="verdict">
                <p class="quadrant-name">
                    <strong>{recommendation.quadrant.name()}</strong>
                    {format!(" → {}", recommendation.strategy.name())}
                </p>
                <p class="explanation">{recommendation.explanation.clone()}</p>
            </div>
        </div>
    }
}
