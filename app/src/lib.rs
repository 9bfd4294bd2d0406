//! Graft's client-side app: what a person sees in the browser.
//!
//! The page never runs Burn: every decode, measurement, training step and prediction happens in the
//! training worker (the `graft-worker` package, a second wasm entry), driven through [`bridge`] with
//! the two enums of [`protocol`]. The page keeps the view state in Leptos signals and draws it.

pub mod bridge;
pub mod device;
pub mod dropped;
pub mod folders;
mod page;
pub mod protocol;

use leptos::prelude::*;

pub use page::App;

/// Shows which compute device training runs on, once the worker has opened it (or that it could
/// not be started, when `failed`).
#[component]
pub fn DeviceBadge(label: ReadSignal<Option<(String, bool)>>, failed: ReadSignal<bool>) -> impl IntoView {
    view! {
        <p
            class="device"
            class:gpu=move || label.get().is_some_and(|(_, gpu)| gpu)
            class:cpu=move || label.get().is_some_and(|(_, gpu)| !gpu)
            class:failed=move || failed.get()
            data-testid="device"
        >
            {move || match label.get() {
                Some((text, _)) => text,
                None if failed.get() => "No training engine: it could not be loaded".to_string(),
                None => "Looking for a compute device…".to_string(),
            }}
        </p>
    }
}
