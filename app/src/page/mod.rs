//! The page: the Leptos app a person sees, its state, and its panels (one component per file).

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::DeviceBadge;
use crate::bridge::Bridge;
use crate::device::WorkerBuild;
#[cfg(feature = "test-hooks")]
use crate::protocol::InjectedFault;
use crate::protocol::WorkerRequest;

use crate::page::panels::{
    ComputeSetting, DataPanel, Elsewhere, Messages, ModelPicker, RecommendationPanel, ResultsPanel, ReviewPanel,
    TAKE_OVER, TrainingPanel, TryPanel, Webcam,
};
use crate::page::state::Studio;

mod events;
pub(crate) mod files;
pub(crate) mod panels;
pub(crate) mod state;
#[cfg(test)]
mod tests;

/// Registers the service worker (`sw.js`) that keeps the app usable offline once loaded. Through
/// `Reflect`: web-sys's service worker types would add features, and with them a rebuild of wgpu.
fn register_service_worker(studio: Studio, build: Option<WorkerBuild>) {
    use js_sys::{Function, Promise, Reflect};
    let Some(navigator) = web_sys::window().map(|w| w.navigator()) else {
        return;
    };
    let Ok(container) = Reflect::get(&navigator, &"serviceWorker".into()) else {
        return;
    };
    if container.is_undefined() {
        return;
    }
    let Ok(register) = Reflect::get(&container, &"register".into()).and_then(|f| f.dyn_into::<Function>()) else {
        return;
    };
    // It precaches the build of the worker this page started (both when not known).
    let script = match build {
        Some(build) => format!("./sw.js?worker={}", build.name()),
        None => "./sw.js".to_string(),
    };
    if let Ok(promise) = register.call1(&container, &script.into()) {
        let promise: Promise = promise.unchecked_into();
        leptos::task::spawn_local(async move {
            if let Err(error) = wasm_bindgen_futures::JsFuture::from(promise).await {
                studio.say(false, format!("Offline use is not available here: {error:?}"));
            }
        });
    }
}

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let studio = Studio::new();
    let bridge = Bridge::spawn(
        panels::current_choice(),
        move |event, payloads| studio.handle(event, payloads),
        move || studio.edits.update(|(sent, _)| *sent += 1),
    );
    // The service worker precaches everything, the weights too (16 MB): only once the worker is up, so
    // that on a first visit they never share the link with the worker's wasm the page waits for.
    let registered = StoredValue::new(false);
    let registering = bridge.clone();
    Effect::new(move |_| {
        if studio.device.get().is_some() && !registered.get_value() {
            registered.set_value(true);
            register_service_worker(studio, registering.build());
        }
    });
    // Fault injection for the tests (see `WorkerRequest::InjectFault`); not in the deployed build.
    #[cfg(feature = "test-hooks")]
    let query = window().location().search().unwrap_or_default();
    #[cfg(feature = "test-hooks")]
    for (asked, fault) in [
        ("fault=gpu-out-of-memory", InjectedFault::GpuOutOfMemory),
        ("fault=predict-panic", InjectedFault::PredictPanic),
    ] {
        if query.contains(asked) {
            bridge.send(&WorkerRequest::InjectFault { fault }, Vec::new());
        }
    }
    provide_context(studio);
    BRIDGE.with(|cell| {
        let _ = cell.set(bridge);
    });
    // What the page shows is kept with the project, once the stored one is back (so that the
    // page's defaults never overwrite it).
    Effect::new(move |_| {
        let view = Box::new(studio.view());
        if studio.restored.get() {
            self::bridge().send(&WorkerRequest::SaveView { view }, Vec::new());
        }
    });
    // Reloaded to take the project over from another tab ("Use Graft in this tab" there): done at
    // once, without asking again.
    let location = window().location();
    if location.hash().ok().as_deref() == Some(TAKE_OVER) {
        let _ = location.set_hash("");
        Effect::new(move |done: Option<bool>| {
            if done == Some(true) {
                return true;
            }
            if studio.elsewhere.get() == Some(false) {
                studio.elsewhere.set(None);
                self::bridge().send(&WorkerRequest::TakeOver, Vec::new());
                return true;
            }
            false
        });
    }
    let device = studio.device;
    view! {
        <main class="graft" data-edits-pending=move || studio.edits_pending().to_string()>
            <header>
                <h1>"Graft"</h1>
                <p class="tagline">
                    "Fine-tune an ImageNet-pretrained CNN on your own pictures. Nothing leaves this device."
                </p>
                <div class="device-row">
                    <DeviceBadge label=device.read_only() failed=studio.engine_failed.read_only()/>
                    {move || {
                        let cpu = matches!(device.get(), Some((_, false)));
                        studio.cores.get().filter(|_| cpu).map(|(cores, training)| {
                            let training_on = if training > 1 {
                                format!("training over {training} (a copy of the worker computes half of each step)")
                            } else {
                                "training on one".to_string()
                            };
                            let title = format!(
                                "Embeddings, frozen layers and measurements are shared out over {cores} CPU core{} (a helper worker each beyond the first); {training_on}.",
                                if cores == 1 { "" } else { "s" },
                            );
                            let shown = cores.max(training);
                            view! {
                                <span
                                    class="cores"
                                    data-testid="cores"
                                    data-cores=cores
                                    data-training-cores=training
                                    title=title
                                >
                                    {if shown == 1 { "1 core".to_string() } else { format!("{shown} cores") }}
                                </span>
                            }
                        })
                    }}
                    <ComputeSetting/>
                </div>
            </header>
            <Elsewhere/>
            // Nothing here can be used while another tab holds the project.
            <div class="studio" inert=move || studio.elsewhere.get().is_some()>
                {move || {
                    (studio.edits_pending() > 0)
                        .then(|| view! { <p class="saving" data-testid="saving" role="status">"Saving your changes…"</p> })
                }}
                <Messages/>
                <DataPanel/>
                <ModelPicker/>
                <ReviewPanel/>
                <RecommendationPanel/>
                <TrainingPanel/>
                <ResultsPanel/>
                <TryPanel/>
                <Webcam/>
            </div>
        </main>
    }
    .into_any()
}

pub(crate) fn studio() -> Studio {
    expect_context::<Studio>()
}

thread_local! {
    /// The page's one worker (not `Send`, so not in Leptos' context).
    static BRIDGE: std::cell::OnceCell<Bridge> = const { std::cell::OnceCell::new() };
}

pub(crate) fn bridge() -> Bridge {
    BRIDGE.with(|cell| {
        cell.get()
            .cloned()
            .expect("the worker is spawned before the page renders")
    })
}
