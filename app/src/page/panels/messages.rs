//! The messages: what went wrong or what the person should know, newest last.

use leptos::prelude::*;

use crate::page::studio;

#[component]
pub(crate) fn Messages() -> impl IntoView {
    let studio = studio();
    // What a reload would lose stays in sight until it is saved, not only in a message that scrolls.
    let unsaved = move || {
        let (pictures, model) = studio.unsaved.get();
        let mut parts = Vec::new();
        if pictures > 0 {
            parts.push(if pictures == 1 {
                "1 picture".to_string()
            } else {
                format!("{pictures} pictures")
            });
        }
        if model {
            parts.push("the trained model".to_string());
        }
        let advice = match (pictures > 0, model) {
            (true, false) => "A reload would lose them: remove pictures you do not need to make room.",
            (false, true) => "A reload would lose it: export it to keep it, or remove pictures to make room.",
            _ => "A reload would lose them: export the model, or remove pictures to make room.",
        };
        (!parts.is_empty()).then(|| {
            view! {
                <p class="unsaved" data-testid="unsaved" role="status">
                    "Not saved in this browser (its storage is full): " {parts.join(" and ")} ". " {advice}
                </p>
            }
        })
    };
    view! {
        {unsaved}
        <ul class="messages" data-testid="messages">
            {move || {
                studio
                    .messages
                    .get()
                    .into_iter()
                    .map(|(error, text)| view! { <li class:error=error>{text}</li> })
                    .collect_view()
            }}
        </ul>
    }
}
