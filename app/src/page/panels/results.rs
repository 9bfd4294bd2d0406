//! Results: validation accuracy, per class, the confusion matrix and the pictures of a cell.

use leptos::prelude::*;

use crate::page::state::Thumb;
use crate::page::studio;

#[component]
pub(crate) fn ResultsPanel() -> impl IntoView {
    let studio = studio();
    view! {
        <section class="panel results">
            <h2>"5. Results"</h2>
            {move || match studio.summary.get() {
                None => view! {
                    <p class="hint" data-testid="results-hint">
                        "Train a model to see how it does on the pictures kept aside from training: its accuracy, per class, and which pictures it takes for another class."
                    </p>
                }
                .into_any(),
                Some(summary) => {
                    let accuracy = summary
                        .val_accuracy
                        .map_or("no validation images".to_string(), |a| format!("{:.1}%", a * 100.0));
                    let classes = summary.classes.clone();
                    let per_class: Vec<String> = classes
                        .iter()
                        .map(|c| {
                            let a = summary.per_class_accuracy.get(c).copied().flatten();
                            format!("{c}: {}", a.map_or("–".into(), |a| format!("{:.0}%", a * 100.0)))
                        })
                        .collect();
                    view! {
                        <p>
                            "Validation accuracy "
                            <strong data-testid="val-accuracy">{accuracy}</strong>
                            {format!(
                                " after {} epochs (kept epoch {}), {:.1} s",
                                summary.epochs,
                                summary.best_epoch.map_or("–".into(), |e| e.to_string()),
                                summary.seconds
                            )}
                        </p>
                        <p class="per-class">{per_class.join(" · ")}</p>
                        <ConfusionMatrix classes=classes confusion=summary.confusion.clone()/>
                        <CellImages/>
                    }
                    .into_any()
                }
            }}
        </section>
    }
}

#[component]
pub(crate) fn ConfusionMatrix(classes: Vec<String>, confusion: Vec<Vec<usize>>) -> impl IntoView {
    let studio = studio();
    let header = classes.clone();
    view! {
        <table class="confusion" data-testid="confusion-matrix">
            <caption>"Rows: true class · columns: predicted · click a cell to see its images"</caption>
            <thead>
                <tr>
                    <th></th>
                    {header.into_iter().map(|c| view! { <th>{c}</th> }).collect_view()}
                </tr>
            </thead>
            <tbody>
                {confusion
                    .into_iter()
                    .enumerate()
                    .map(|(t, row)| {
                        let name = classes.get(t).cloned().unwrap_or_default();
                        view! {
                            <tr>
                                <th>{name}</th>
                                {row
                                    .into_iter()
                                    .enumerate()
                                    .map(|(p, count)| {
                                        view! {
                                            <td
                                                class:diagonal={t == p}
                                                class:miss={t != p && count > 0}
                                                class:selected=move || studio.selected_cell.get() == Some((t, p))
                                                data-testid=format!("confusion-cell-{t}-{p}")
                                                on:click=move |_| studio.selected_cell.set(Some((t, p)))
                                            >
                                                {count}
                                            </td>
                                        }
                                    })
                                    .collect_view()}
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}

#[component]
pub(crate) fn CellImages() -> impl IntoView {
    let studio = studio();
    view! {
        {move || {
            studio
                .selected_cell
                .get()
                .map(|(t, p)| {
                    let thumbs: Vec<Thumb> = studio
                        .samples
                        .get()
                        .into_iter()
                        .filter(|&(_, truth, predicted)| truth == t && predicted == p)
                        .filter_map(|(id, _, _)| studio.thumb(id))
                        .collect();
                    // Positions in the run's classes (the page's may have changed since).
                    let names = studio.summary.get().map(|s| s.classes).unwrap_or_default();
                    let title = format!(
                        "{} validation images of {} predicted as {}",
                        thumbs.len(),
                        names.get(t).cloned().unwrap_or_default(),
                        names.get(p).cloned().unwrap_or_default()
                    );
                    view! {
                        <div class="cell-images" data-testid="cell-images">
                            <p>{title}</p>
                            {thumbs
                                .into_iter()
                                .map(|thumb| view! { <img src=thumb.url.to_string() title=thumb.name alt=""/> })
                                .collect_view()}
                        </div>
                    }
                })
        }}
    }
}
