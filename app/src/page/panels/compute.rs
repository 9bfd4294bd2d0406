//! "Compute on", beside the device badge: automatic (a GPU when there is one; the CPU without WebGPU
//! or when its only adapter is a software one), WebGPU or the CPU. The worker opens its device once,
//! when it starts, so a change is kept in this browser and the page reloads: the project is stored,
//! so nothing is lost — which is why the choice waits while work runs or something is not saved.

use leptos::prelude::*;
use wasm_bindgen::JsValue;

use crate::device::{self, ComputeChoice};
use crate::page::studio;

/// Where the choice is kept (the page's `localStorage`).
const STORAGE_KEY: &str = "graft-compute";

/// The person's choice: `?compute=` in the page's URL (a link; the tests), else the one kept in this
/// browser, else automatic.
pub(crate) fn current_choice() -> ComputeChoice {
    device::choice_in_url().or_else(stored_choice).unwrap_or_default()
}

/// `localStorage`, through `Reflect` (web-sys's `Storage` would add a feature, and with it a rebuild
/// of wgpu); absent where the browser refuses storage.
fn local_storage() -> Option<JsValue> {
    js_sys::Reflect::get(&js_sys::global(), &"localStorage".into())
        .ok()
        .filter(|storage| !storage.is_undefined() && !storage.is_null())
}

fn call(storage: &JsValue, method: &str, args: &[&str]) -> Result<JsValue, JsValue> {
    let function: js_sys::Function = js_sys::Reflect::get(storage, &method.into())?.into();
    let args: js_sys::Array = args.iter().map(|arg| JsValue::from_str(arg)).collect();
    function.apply(storage, &args)
}

fn stored_choice() -> Option<ComputeChoice> {
    let stored = call(&local_storage()?, "getItem", &[STORAGE_KEY]).ok()?.as_string()?;
    ComputeChoice::from_name(&stored)
}

fn keep_choice(choice: ComputeChoice) -> Result<(), String> {
    let storage = local_storage().ok_or("this browser keeps no settings for the page")?;
    call(&storage, "setItem", &[STORAGE_KEY, choice.name()])
        .map(|_| ())
        .map_err(|error| format!("{error:?}"))
}

/// Reloads the page for the worker to start on the new choice, without a `compute=` in the URL
/// (which would outrank the kept choice).
fn reload_with_kept_choice() {
    let location = window().location();
    let search = location.search().unwrap_or_default();
    let kept: Vec<&str> = search
        .trim_start_matches('?')
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("compute="))
        .collect();
    let kept = kept.join("&");
    if kept == search.trim_start_matches('?') {
        let _ = location.reload();
    } else {
        let _ = location.set_search(&kept);
    }
}

#[component]
pub(crate) fn ComputeSetting() -> impl IntoView {
    let studio = studio();
    let choice = current_choice();
    // A reload now would stop work in progress or lose what is not stored.
    let wait = move || {
        studio.training.get()
            || studio.comparing.get().is_some()
            || studio.measuring.get().is_some()
            || studio.reviewing.get()
            || studio.unsaved.get() != (0, false)
            || (studio.device.get().is_none() && !studio.engine_failed.get())
    };
    let on_change = move |event| {
        let Some(chosen) = ComputeChoice::from_name(&event_target_value(&event)) else {
            return;
        };
        if chosen == choice {
            return;
        }
        match keep_choice(chosen) {
            Ok(()) => reload_with_kept_choice(),
            Err(error) => studio.say(true, format!("The choice of device could not be kept: {error}")),
        }
    };
    view! {
        <label
            class="compute"
            title="Automatic: a GPU when the browser offers one; the CPU without WebGPU or when its only \
                   WebGPU adapter is a software one (which trains many times slower than the CPU). The \
                   page reloads to switch; your project is kept."
        >
            "Compute on "
            <select data-testid="compute-choice" on:change=on_change disabled=wait>
                {ComputeChoice::ALL
                    .map(|option| {
                        view! {
                            <option value=option.name() selected=option == choice>
                                {option.label()}
                            </option>
                        }
                    })}
            </select>
        </label>
    }
}
