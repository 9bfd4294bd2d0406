//! Review the pictures before training: those probably in the wrong class (with the class they look
//! like), copies of one another, pictures unlike every class — ranked, each with its thumbnail and
//! one click to move it, remove it or keep it (kept pictures are not flagged again).

use graft_engine::review::Reason;
use leptos::prelude::*;

use crate::protocol::{ReviewItem, WorkerRequest};

use crate::page::state::Studio;
use crate::page::{bridge, studio};

/// The name of class `id`, as the page shows it now.
fn class_name(studio: Studio, id: crate::protocol::ClassId) -> String {
    studio
        .classes
        .with(|classes| classes.iter().find(|c| c.id == id).map(|c| c.name.clone()))
        .unwrap_or_else(|| "a deleted class".into())
}

#[component]
pub(crate) fn ReviewPanel() -> impl IntoView {
    let studio = studio();
    let start = move |_| {
        studio.reviewing.set(true);
        bridge().send(
            &WorkerRequest::Review {
                model: studio.model.get_untracked(),
            },
            Vec::new(),
        );
    };
    // The flagged pictures still to look at: still in the project, not kept.
    let open = move || -> Vec<ReviewItem> {
        let kept = studio.review_kept.get();
        studio
            .review
            .get()
            .unwrap_or_default()
            .into_iter()
            .filter(|item| !kept.contains(&item.image) && studio.thumb(item.image).is_some())
            .collect()
    };
    view! {
        <section class="panel review" data-testid="review">
            <h2>"Review your pictures"</h2>
            <p class="hint">
                "Before training: pictures that look like another class, the same picture twice, pictures unlike the rest. Nothing is changed unless you choose."
            </p>
            <button data-testid="review-button" on:click=start disabled=move || studio.reviewing.get()>
                {move || if studio.reviewing.get() { "Reviewing…" } else { "Review my pictures" }}
            </button>
            {move || {
                studio
                    .review
                    .get()
                    .map(|_| {
                        let items = open();
                        let count = items.len();
                        view! {
                            <p data-testid="review-count">
                                {if count == 0 {
                                    "Nothing to look at: every picture fits its class.".to_string()
                                } else {
                                    format!("{count} picture{} worth a look:", if count == 1 { "" } else { "s" })
                                }}
                            </p>
                            <ul class="review-list">
                                {items.into_iter().map(|item| view! { <ReviewRow item=item studio=studio/> }).collect_view()}
                            </ul>
                        }
                    })
            }}
        </section>
    }
}

#[component]
fn ReviewRow(item: ReviewItem, studio: Studio) -> impl IntoView {
    let id = item.image;
    let thumb = studio.thumb(id);
    let (name, url) = thumb.map(|t| (t.name.clone(), t.url.to_string())).unwrap_or_default();
    let own = class_name(studio, item.class);
    let why = match (item.reason, item.suggested) {
        (Reason::Label, Some(other)) => format!(
            "In “{own}”, but looks like “{}” (its own class gets {:.0}%).",
            class_name(studio, other),
            item.label_probability * 100.0
        ),
        (Reason::Duplicate, _) => {
            let copy = item
                .duplicate_of
                .and_then(|c| studio.thumb(c))
                .map(|t| t.name.clone())
                .unwrap_or_else(|| "another picture".into());
            format!(
                "The same picture as {copy} (in “{}”).",
                item.suggested.map(|c| class_name(studio, c)).unwrap_or(own)
            )
        }
        _ => format!("Unlike the other pictures of “{own}” (and of every other class)."),
    };
    let move_to = (item.reason == Reason::Label).then_some(item.suggested).flatten();
    let remove = move |_| {
        studio.classes.update(|classes| {
            for class in classes.iter_mut() {
                class.images.retain(|t| t.id != id);
            }
        });
        bridge().send(&WorkerRequest::RemoveImage { id }, Vec::new());
        studio.data_changed();
    };
    let keep = move |_| studio.review_kept.update(|kept| kept.push(id));
    view! {
        <li class="review-item" data-testid=format!("review-item-{id}") data-reason=format!("{:?}", item.reason).to_lowercase()>
            <img src=url alt=name.clone() title=name.clone()/>
            <div class="review-text">
                <strong>{name}</strong>
                <span>{why}</span>
                <div class="toolbar">
                    {move_to
                        .map(|to| {
                            let target = class_name(studio, to);
                            view! {
                                <button
                                    data-testid=format!("review-move-{id}")
                                    on:click=move |_| bridge().send(&WorkerRequest::MoveImage { id, to }, Vec::new())
                                >
                                    {format!("Move to “{target}”")}
                                </button>
                            }
                        })}
                    <button data-testid=format!("review-remove-{id}") on:click=remove>"Remove"</button>
                    <button data-testid=format!("review-keep-{id}") on:click=keep>"Keep as it is"</button>
                </div>
            </div>
        </li>
    }
}
