//! Try it: a picture chosen or dropped, the webcam live; export and import.

use leptos::prelude::*;

use crate::protocol::WorkerRequest;
use graft_engine::export::ExportFormat;

use crate::bridge::Bridge;
use crate::page::files::{blob_url, drag_over, on_drop, read_file, read_first_file};
use crate::page::state::{CameraTarget, Studio};
use crate::page::{bridge, studio};

/// Asks the worker to classify the picture file `name`: it is shown with the answer once that comes
/// (the live webcam, if it was feeding predictions, stops).
fn classify(studio: Studio, bridge: &Bridge, name: String, bytes: Vec<u8>) {
    if studio.camera.get_untracked() == Some(CameraTarget::Predict) {
        studio.camera.set(None);
    }
    studio.show_predicted(Some(blob_url(&bytes, None)));
    let picture = studio
        .trying
        .try_update(|trying| trying.ask_file(name))
        .unwrap_or_default();
    bridge.send(&WorkerRequest::Predict { picture }, vec![bytes]);
}

#[component]
pub(crate) fn TryPanel() -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let predict = {
        let bridge = bridge.clone();
        move |ev: leptos::ev::Event| {
            let input: web_sys::HtmlInputElement = event_target(&ev);
            let bridge = bridge.clone();
            leptos::task::spawn_local(async move {
                if let Some((name, bytes)) = read_first_file(&input).await {
                    classify(studio, &bridge, name, bytes);
                }
            });
        }
    };
    let export = {
        let bridge = bridge.clone();
        move |_| {
            bridge.send(
                &WorkerRequest::Export {
                    format: studio.export_format.get_untracked(),
                },
                Vec::new(),
            )
        }
    };
    let import = {
        let bridge = bridge.clone();
        move |ev: leptos::ev::Event| {
            let input: web_sys::HtmlInputElement = event_target(&ev);
            let bridge = bridge.clone();
            leptos::task::spawn_local(async move {
                if let Some((name, bytes)) = read_first_file(&input).await {
                    bridge.send(&WorkerRequest::Import { name }, vec![bytes]);
                }
            });
        }
    };
    let ready = move || studio.model_ready.get().is_some();
    // A picture dropped here is classified; a model file dropped here is imported.
    let dragging = RwSignal::new(false);
    let drop = {
        let bridge = bridge.clone();
        on_drop(studio, dragging, move |files| {
            let bridge = bridge.clone();
            async move {
                let Some((path, file)) = files.first() else {
                    return;
                };
                let Some(bytes) = read_file(file).await else {
                    studio.say(true, format!("{path} could not be read by the browser."));
                    return;
                };
                let name = path.rsplit('/').next().unwrap_or(path).to_string();
                if name.ends_with(".graft") {
                    bridge.send(&WorkerRequest::Import { name }, vec![bytes]);
                } else if studio.model_ready.get_untracked().is_none() {
                    studio.say(true, "Train a model (or import one) before classifying a picture.");
                } else {
                    classify(studio, &bridge, name, bytes);
                }
            }
        })
    };
    view! {
        <section
            class="panel try"
            class:dragging=move || dragging.get()
            data-testid="predict-drop"
            on:dragover=drag_over(dragging)
            on:dragleave=move |_| dragging.set(false)
            on:drop=drop
        >
            <h2>"6. Try it, export it"</h2>
            <p class="hint">
                {move || match studio.model_ready.get() {
                    Some(classes) => format!("The model knows: {}. Drop a picture here to classify it.", classes.join(", ")),
                    None => "Train a model (or import one) to try it.".to_string(),
                }}
            </p>
            <div class="toolbar">
                <label class="button" class:disabled=move || !ready()>
                    "Classify an image…"
                    <input type="file" accept="image/*" data-testid="predict-input" on:change=predict/>
                </label>
                <button
                    data-testid="predict-webcam"
                    on:click=move |_| studio.camera.set(Some(CameraTarget::Predict))
                    disabled=move || !ready()
                >
                    "Live from the webcam"
                </button>
                <select
                    data-testid="export-format"
                    title="What Export makes"
                    on:change=move |ev| {
                        if let Some(format) = ExportFormat::from_name(&event_target_value(&ev)) {
                            studio.export_format.set(format);
                        }
                    }
                    prop:value=move || studio.export_format.get().name()
                >
                    {ExportFormat::ALL
                        .into_iter()
                        .map(|format| view! { <option value=format.name()>{format.label()}</option> })
                        .collect_view()}
                </select>
                <button data-testid="export-button" on:click=export disabled=move || !ready()>
                    "Export model"
                </button>
                <label class="button">
                    "Import a model…"
                    <input type="file" accept=".graft" data-testid="import-input" on:change=import/>
                </label>
            </div>
            {move || {
                let files = studio.exported.get();
                (!files.is_empty()).then(|| {
                    view! {
                        <p class="export-links">
                            {files
                                .into_iter()
                                .enumerate()
                                .map(|(i, (url, name))| {
                                    // The model file is `export-link`; what goes with it `export-link-1`, ….
                                    let id = if i == 0 { "export-link".to_string() } else { format!("export-link-{i}") };
                                    view! {
                                        <a href=url.to_string() download=name.clone() data-testid=id>
                                            {format!("Download {name} again")}
                                        </a>
                                    }
                                })
                                .collect_view()}
                        </p>
                    }
                })
            }}
            <div class="prediction-row">
                {move || studio.predicted_image.get().map(|url| view! { <img class="predicted" src=url.to_string() alt=""/> })}
                <div class="answer">
                    {move || {
                        studio
                            .trying
                            .with(|trying| trying.name.clone())
                            .map(|name| view! { <p class="predicted-name" data-testid="predicted-name">{name}</p> })
                    }}
                    {move || {
                        studio
                            .trying
                            .with(|trying| trying.answer.clone())
                            .map(|(picture, top)| {
                                view! {
                                    <ol class="prediction" data-testid="prediction" data-picture=picture.to_string()>
                                        {top
                                            .into_iter()
                                            .map(|(label, prob)| {
                                                view! {
                                                    <li>
                                                        <span class="label">{label}</span>
                                                        <meter min="0" max="1" value=prob></meter>
                                                        <span>{format!("{:.1}%", prob * 100.0)}</span>
                                                    </li>
                                                }
                                            })
                                            .collect_view()}
                                    </ol>
                                }
                            })
                    }}
                </div>
            </div>
        </section>
    }
}
