//! "Graft is open in another tab": shown instead of letting two tabs edit one project.

use leptos::prelude::*;

use crate::protocol::WorkerRequest;

use crate::page::{bridge, studio};

/// The address fragment a tab reloads with to take the project over at once.
pub(crate) const TAKE_OVER: &str = "#take-over";

/// Over the studio while another tab holds the project (the studio is inert meanwhile): why, and a
/// button to use Graft here.
#[component]
pub(crate) fn Elsewhere() -> impl IntoView {
    let studio = studio();
    let use_here = move |_| match studio.elsewhere.get_untracked() {
        // This tab never opened the project: it reads it as the other tab left it.
        Some(false) => {
            studio.elsewhere.set(None);
            bridge().send(&WorkerRequest::TakeOver, Vec::new());
        }
        // What this tab shows may be older than the project: it starts afresh, then takes it over.
        Some(true) => {
            let location = window().location();
            let _ = location.set_hash(&TAKE_OVER[1..]);
            let _ = location.reload();
        }
        None => {}
    };
    move || {
        studio.elsewhere.get().map(|taken| {
            let text = if taken {
                "Graft was opened in another tab, which has your project now. This tab stopped so that it \
                 overwrites nothing; what you see here may be out of date."
            } else {
                "Graft is open in another tab. One tab at a time edits your project, so that neither \
                 overwrites the other."
            };
            view! {
                <div class="elsewhere" role="alertdialog" aria-live="assertive" data-testid="open-elsewhere">
                    <p>{text}</p>
                    <button class="button" data-testid="use-here" on:click=use_here>
                        "Use Graft in this tab"
                    </button>
                </div>
            }
        })
    }
}
