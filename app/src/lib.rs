//! Graft's client-side app: what a person sees in the browser.
//!
//! The app is thin over `graft-engine`. It picks the compute device (WebGPU when the browser has an
//! adapter, the CPU backend otherwise) and shows it; training and inference will move into a dedicated
//! Web Worker so that this thread stays responsive.

pub mod device;

use leptos::prelude::*;

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    view! {
        <main class="graft">
            <header>
                <h1>"Graft"</h1>
                <p class="tagline">
                    "Fine-tune an ImageNet-pretrained CNN on your own pictures. Nothing leaves this device."
                </p>
            </header>
            <DeviceBadge/>
        </main>
    }
}

/// Shows which compute device training will run on, once it is known.
#[component]
pub fn DeviceBadge() -> impl IntoView {
    let (label, set_label) = signal(None::<(String, bool)>);
    leptos::task::spawn_local(async move {
        let device = device::acquire().await;
        set_label.set(Some((device.label(), device.is_gpu())));
    });
    view! {
        <p
            class="device"
            class:gpu=move || label.get().is_some_and(|(_, gpu)| gpu)
            class:cpu=move || label.get().is_some_and(|(_, gpu)| !gpu)
            data-testid="device"
        >
            {move || match label.get() {
                Some((text, _)) => text,
                None => "Looking for a compute device…".to_string(),
            }}
        </p>
    }
}
