//! One class: its name, pictures (thumbnails), files in by picker or drop, record from the webcam.

use leptos::prelude::*;

use crate::protocol::WorkerRequest;

use crate::page::files::{drag_over, file_list, on_drop, send_files};
use crate::page::state::{CameraTarget, ClassView, ShownThumb, Studio, Thumb};
use crate::page::{bridge, studio};
use crate::protocol::ClassId;

/// Thumbnails shown per class card: a class of thousands shows these and a count of the rest, so
/// the page stays light.
pub(crate) const SHOWN_THUMBNAILS: usize = 48;

/// One class's card, found by its id: it stays the same element while other classes come and go
/// (`<For>` keyed by id) and only what changed in it is redrawn; its `data-testid`s carry its position
/// as it is now.
#[component]
pub(crate) fn ClassCard(id: ClassId) -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let index = move || {
        studio
            .classes
            .with(|classes| classes.iter().position(|c| c.id == id))
            .unwrap_or(usize::MAX)
    };
    let name = move || with_class(studio, id, |c| c.name.clone());
    let count = move || with_class(studio, id, |c| c.images.len());
    let rename = {
        let bridge = bridge.clone();
        move |ev: leptos::ev::Event| {
            let name = event_target_value(&ev).trim().to_string();
            // A blank name is ignored (the field is being cleared to type another); one another class
            // has is refused, and the field shows the name the class keeps.
            if !name.is_empty() && !studio.rename_class(id, name, &bridge) {
                let input: web_sys::HtmlInputElement = event_target(&ev);
                input.set_value(&with_class(studio, id, |c| c.name.clone()));
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
    // The first thumbnails, each with its position; the rest counted.
    let shown = move || {
        with_class(studio, id, |c| {
            c.images
                .iter()
                .take(SHOWN_THUMBNAILS)
                .map(Thumb::shown)
                .enumerate()
                .collect::<Vec<_>>()
        })
    };
    let hidden = move || with_class(studio, id, |c| c.images.len().saturating_sub(SHOWN_THUMBNAILS));
    // Children of a `<For>` must be `Send`: the worker's bridge is fetched where a click needs it.
    let thumb = move |position: usize, thumb: ShownThumb| {
        let image = thumb.id;
        let remove = move || {
            studio.classes.update(|classes| {
                for c in classes.iter_mut() {
                    c.images.retain(|t| t.id != image);
                }
            });
            crate::page::bridge().send(&WorkerRequest::RemoveImage { id: image }, Vec::new());
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
                    data-testid=move || format!("image-remove-{}-{position}", index())
                    on:click=move |_| remove()
                >
                    "×"
                </button>
            </span>
        }
    };
    view! {
        <div
            class="class-card"
            class:dragging=move || dragging.get()
            data-testid=move || format!("class-drop-{}", index())
            on:dragover=drag_over(dragging)
            on:dragleave=move |_| dragging.set(false)
            on:drop=drop
        >
            <div class="class-head">
                <input
                    class="class-name"
                    data-testid=move || format!("class-name-{}", index())
                    prop:value=name
                    on:change=rename
                />
                <span class="count" data-testid=move || format!("class-count-{}", index())>
                    {count}
                </span>
                <button
                    class="delete"
                    title="Delete this class"
                    data-testid=move || format!("class-delete-{}", index())
                    on:click=delete
                >
                    "✕"
                </button>
            </div>
            <button
                class="button small"
                data-testid=move || format!("class-webcam-{}", index())
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
                    data-testid=move || format!("class-files-{}", index())
                    on:change=files
                />
            </label>
            <div class="thumbs">
                // Keyed by picture and position: a picture removed takes its own element away, and
                // the ones after it get their new positions.
                <For each=shown key=|(position, thumb)| (thumb.id, *position) let:((position, t))>
                    {thumb(position, t)}
                </For>
                {move || {
                    let hidden = hidden();
                    (hidden > 0)
                        .then(|| {
                            view! {
                                <span class="more" data-testid=move || format!("class-more-{}", index())>
                                    {format!("+ {hidden} more")}
                                </span>
                            }
                        })
                }}
            </div>
        </div>
    }
}

/// What `read` makes of class `id` as it is now (tracked), or the default once the class is gone.
fn with_class<T: Default>(studio: Studio, id: ClassId, read: impl FnOnce(&ClassView) -> T) -> T {
    studio
        .classes
        .with(|classes| classes.iter().find(|c| c.id == id).map(read))
        .unwrap_or_default()
}
