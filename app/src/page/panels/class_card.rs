//! One class: its name, pictures (thumbnails), files in by picker or drop, record from the webcam.

use leptos::prelude::*;

use crate::protocol::WorkerRequest;

use crate::page::files::{drag_over, file_list, on_drop, send_files};
use crate::page::state::{CameraTarget, ClassView};
use crate::page::{bridge, studio};

/// Thumbnails shown per class card: a class of thousands shows these and a count of the rest, so
/// the page stays light.
pub(crate) const SHOWN_THUMBNAILS: usize = 48;

#[component]
pub(crate) fn ClassCard(index: usize, class: ClassView) -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let id = class.id;
    let rename = {
        let bridge = bridge.clone();
        move |ev: leptos::ev::Event| {
            let name = event_target_value(&ev).trim().to_string();
            if !name.is_empty() {
                studio.rename_class(id, name, &bridge);
            }
        }
    };
    let delete = {
        let bridge = bridge.clone();
        move |_| studio.remove_class(id, &bridge)
    };
    let files = {
        let bridge = bridge.clone();
        move |ev: leptos::ev::Event| {
            let input: web_sys::HtmlInputElement = event_target(&ev);
            let bridge = bridge.clone();
            leptos::task::spawn_local(async move {
                let files = input.files().map(|list| file_list(&list)).unwrap_or_default();
                input.set_value("");
                send_files(studio, &bridge, id, files).await;
            });
        }
    };
    // Files dropped onto the card, and everything in dropped folders, join this class.
    let dragging = RwSignal::new(false);
    let drop = {
        let bridge = bridge.clone();
        on_drop(studio, dragging, move |files| {
            let bridge = bridge.clone();
            async move { send_files(studio, &bridge, id, files).await }
        })
    };
    let count = class.images.len();
    view! {
        <div
            class="class-card"
            class:dragging=move || dragging.get()
            data-testid=format!("class-drop-{index}")
            on:dragover=drag_over(dragging)
            on:dragleave=move |_| dragging.set(false)
            on:drop=drop
        >
            <div class="class-head">
                <input
                    class="class-name"
                    data-testid=format!("class-name-{index}")
                    prop:value=class.name.clone()
                    on:change=rename
                />
                <span class="count" data-testid=format!("class-count-{index}")>
                    {count}
                </span>
                <button
                    class="delete"
                    title="Delete this class"
                    data-testid=format!("class-delete-{index}")
                    on:click=delete
                >
                    "✕"
                </button>
            </div>
            <button
                class="button small"
                data-testid=format!("class-webcam-{index}")
                on:click=move |_| studio.camera.set(Some(CameraTarget::Class(id)))
            >
                "Webcam…"
            </button>
            <label class="button small">
                "Add images…"
                <input
                    type="file"
                    accept="image/*"
                    multiple=true
                    data-testid=format!("class-files-{index}")
                    on:change=files
                />
            </label>
            <div class="thumbs">
                {let hidden = class.images.len().saturating_sub(SHOWN_THUMBNAILS);
                let shown = class
                    .images
                    .into_iter()
                    .take(SHOWN_THUMBNAILS)
                    .enumerate()
                    .map(|(position, thumb)| {
                        let bridge = bridge.clone();
                        let id = thumb.id;
                        let remove = move || {
                            studio.classes.update(|classes| {
                                for c in classes.iter_mut() {
                                    c.images.retain(|t| {
                                        if t.id == id {
                                            t.release();
                                        }
                                        t.id != id
                                    });
                                }
                            });
                            bridge.send(&WorkerRequest::RemoveImage { id }, Vec::new());
                            studio.data_changed();
                        };
                        let label = format!("Remove {}", thumb.name);
                        view! {
                            <span class="thumb">
                                <img src=thumb.url title=thumb.name.clone() alt=thumb.name.clone()/>
                                <button
                                    class="thumb-remove"
                                    title=label.clone()
                                    aria-label=label
                                    data-testid=format!("image-remove-{index}-{position}")
                                    on:click=move |_| remove()
                                >
                                    "×"
                                </button>
                            </span>
                        }
                    })
                    .collect_view();
                let more = (hidden > 0).then(|| {
                    view! {
                        <span class="more" data-testid=format!("class-more-{index}")>{format!("+ {hidden} more")}</span>
                    }
                });
                (shown, more)}
            </div>
        </div>
    }
}
