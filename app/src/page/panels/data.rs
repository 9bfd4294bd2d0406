//! The images panel: classes, a folder chosen or dropped, the webcam per class.

use leptos::prelude::*;

use crate::page::files::{add_grouped, drag_over, file_list, left_out, on_drop};
use crate::page::panels::ClassCard;
use crate::page::{bridge, studio};

#[component]
pub(crate) fn DataPanel() -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let add = {
        let bridge = bridge.clone();
        move |_| {
            studio.add_class(None, &bridge);
        }
    };
    let folder = {
        let bridge = bridge.clone();
        move |ev: leptos::ev::Event| {
            let input: web_sys::HtmlInputElement = event_target(&ev);
            let bridge = bridge.clone();
            leptos::task::spawn_local(async move {
                let files = input.files().map(|list| file_list(&list)).unwrap_or_default();
                input.set_value("");
                // `chosen/class/file`: the folder's subfolders are the classes.
                let paths: Vec<String> = files.iter().map(|(path, _)| path.clone()).collect();
                let (groups, loose) = crate::folders::group_by_class(&paths);
                if !loose.is_empty() {
                    studio.say(
                        false,
                        format!(
                            "{}: put each class's pictures in a subfolder named after it.",
                            left_out(loose.len(), "directly in the chosen folder")
                        ),
                    );
                }
                add_grouped(studio, &bridge, files, groups).await;
            });
        }
    };
    // Folders dropped onto the panel (not onto a class): classes from their names.
    let dragging = RwSignal::new(false);
    let drop = {
        let bridge = bridge.clone();
        on_drop(studio, dragging, move |files| {
            let bridge = bridge.clone();
            async move {
                let paths: Vec<String> = files.iter().map(|(path, _)| path.clone()).collect();
                let (groups, loose) = crate::folders::group_dropped(&paths);
                if !loose.is_empty() {
                    studio.say(
                        false,
                        format!(
                            "{}: drop pictures onto their class, or drop a folder per class (or a folder of such folders).",
                            left_out(loose.len(), "dropped outside any folder")
                        ),
                    );
                } else if groups.is_empty() {
                    studio.say(false, "Nothing was added: no pictures were found in what was dropped.");
                }
                add_grouped(studio, &bridge, files, groups).await;
            }
        })
    };
    // `webkitdirectory` (choose a folder) is not an attribute Leptos knows: set it once mounted.
    let folder_input = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if let Some(input) = folder_input.get() {
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });
    view! {
        <section
            class="panel data"
            class:dragging=move || dragging.get()
            data-testid="data-drop"
            on:dragover=drag_over(dragging)
            on:dragleave=move |_| dragging.set(false)
            on:drop=drop
        >
            <h2>"1. Your images"</h2>
            <p class="hint">
                "Make a class per kind of thing and add or drop its pictures, or choose or drop a folder whose subfolders are the classes (a folder dropped here becomes a class named after it). The × on a picture removes it."
            </p>
            <div class="toolbar">
                <button data-testid="add-class" on:click=add>"+ Add class"</button>
                <label class="button">
                    "Choose a folder…"
                    <input
                        type="file"
                        data-testid="folder-input"
                        node_ref=folder_input
                        multiple=true
                        on:change=folder
                    />
                </label>
            </div>
            <div class="classes">
                // Keyed by id: a batch of pictures for one class redraws only what changed in its card.
                <For
                    each=move || studio.classes.with(|classes| classes.iter().map(|c| c.id).collect::<Vec<_>>())
                    key=|id| *id
                    let:id
                >
                    <ClassCard id=id/>
                </For>
            </div>
        </section>
    }
}
