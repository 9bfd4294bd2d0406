//! The project in IndexedDB: restored on start, pictures and the model kept, what a full storage
//! refused kept in the session and written once there is room.

use std::rc::Rc;

use graft_engine::data::{self, Example};
use graft_engine::preprocess;

use crate::store::{Store, StoreError, StoredImage};
use graft_app::protocol::{ImageInfo, ProjectView, Work, WorkerEvent};

use super::images::thumbnail;
use super::project::pictures;
use super::serve::import;
use super::state::{STATE, State, Writing};
use super::tab;
use super::{fail, notice, post, project_store};

/// Opens the project store and brings back what it holds: classes, images, the trained model.
pub(super) async fn restore() {
    // Claimed before it is read: from now on another tab's writes write nothing (see `store`).
    let opened = async {
        let store = Store::open().await?;
        store.claim().await?;
        Ok::<_, StoreError>(Rc::new(store))
    };
    let store = match opened.await {
        Ok(store) => store,
        Err(error) => {
            post(
                &WorkerEvent::Notice {
                    message: format!(
                        "This browser does not let Graft keep the project ({error}): it works, but a reload starts afresh."
                    ),
                },
                Vec::new(),
            );
            return;
        }
    };
    STATE.with_borrow_mut(|state| state.store = Some(store.clone()));
    let (project, unreadable) = match store.load().await {
        Ok(loaded) => loaded,
        Err(error) => return fail(Work::Restore, format!("the stored project could not be read: {error}")),
    };
    // A view that no longer reads (an older or damaged record) leaves the page's defaults.
    let mut view: Option<Box<ProjectView>> = project.view.as_deref().and_then(|json| serde_json::from_str(json).ok());
    if project.classes.is_empty() {
        post(&WorkerEvent::ViewRestored { view }, Vec::new());
        return;
    }
    post(
        &WorkerEvent::ProjectRestored {
            classes: project.classes.clone(),
        },
        Vec::new(),
    );
    STATE.with_borrow_mut(|state| {
        for class in &project.classes {
            state.add_class(class.id, class.name.clone());
        }
    });
    let mut damaged = unreadable;
    let mut by_class: Vec<(Vec<ImageInfo>, Vec<Vec<u8>>)> = vec![(Vec::new(), Vec::new()); project.classes.len()];
    for stored in project.images {
        let Some(position) = STATE.with_borrow(|state| state.class_position(stored.class)) else {
            damaged += 1;
            continue;
        };
        let decoded = preprocess::decode(&stored.jpeg).map_err(|e| e.to_string());
        let Ok(image) = decoded.and_then(|image| thumbnail(&image).map(|thumb| (image, thumb))) else {
            damaged += 1;
            continue;
        };
        STATE.with_borrow_mut(|state| {
            state.next_id = state.next_id.max(stored.id + 1);
            if !stored.hash.is_empty() {
                state.remember_hash(stored.id, stored.hash.clone(), stored.name.clone());
            }
            state.ids.push(stored.id);
            Rc::make_mut(&mut state.dataset).examples.push(Example {
                // Kept compressed, as stored: a project of thousands of pictures fits the tab.
                image: data::Picture::compressed(stored.jpeg, &image.0),
                label: position,
            });
        });
        by_class[position].0.push(ImageInfo {
            id: stored.id,
            name: stored.name,
        });
        by_class[position].1.push(image.1);
    }
    for (class, (added, thumbnails)) in project.classes.iter().zip(by_class) {
        if !added.is_empty() {
            post(
                &WorkerEvent::ImagesAdded {
                    class: class.id,
                    added,
                    rejected: Vec::new(),
                },
                thumbnails,
            );
        }
    }
    if damaged > 0 {
        fail(
            Work::Restore,
            format!("{damaged} stored images were damaged and have been dropped; the rest of the project is back."),
        );
        // It measured pictures that are gone.
        if let Some(view) = &mut view {
            view.recommendation = None;
        }
    }
    if let Some(bytes) = project.model {
        match import("the stored model", &bytes) {
            Ok((classes, model)) => post(&WorkerEvent::ModelReady { classes, model }, Vec::new()),
            Err(message) => fail(Work::Restore, format!("the stored model was dropped: {message}")),
        }
    }
    post(&WorkerEvent::ViewRestored { view }, Vec::new());
}

/// Keeps what the page shows besides the pictures (`SaveView`).
pub(super) async fn save_view(view: &ProjectView) {
    let _writing = Writing::start();
    let Some(store) = project_store() else { return };
    let json = serde_json::to_string(view).unwrap_or_default();
    match store.save_view(&json).await {
        // A full storage is already said (message and banner) for what matters more; a view is
        // small and saved again at the next change, not worth a message each.
        Ok(()) | Err(StoreError::Full) => {}
        Err(error) if tab::taken_over(&error) => {}
        Err(error) => fail(Work::Store, crate::store::describe(error)),
    }
}

/// Stores `new` pictures together with any the store refused before. What the store refuses again
/// stays in this session (and is said so); nothing stored before is touched, as a refused
/// transaction writes nothing.
pub(super) async fn keep_images(new: Vec<StoredImage>) {
    let Some(store) = project_store() else { return };
    let mut pending = STATE.with_borrow_mut(|state| std::mem::take(&mut state.unsaved));
    let earlier = pending.len();
    pending.extend(new);
    if pending.is_empty() {
        return;
    }
    match store.put_images(&pending).await {
        Ok(()) if earlier > 0 => notice(format!(
            "There is room in the browser's storage again: the {} that did not fit {} saved now.",
            pictures(earlier),
            if earlier == 1 { "is" } else { "are" }
        )),
        Ok(()) => {}
        Err(error) if tab::taken_over(&error) => return,
        Err(error) => {
            // Kept to write later, but not what was removed meanwhile (a picture, or its class).
            let count = STATE.with_borrow_mut(|state| {
                let present: std::collections::HashSet<u64> = state.ids.iter().copied().collect();
                state.unsaved = pending
                    .into_iter()
                    .filter(|image| present.contains(&image.id))
                    .collect();
                state.unsaved.len()
            });
            let cause = match error {
                StoreError::Full => "The browser's storage for this site is full".to_string(),
                other => format!("The pictures could not be saved: {other}"),
            };
            if count > 0 {
                fail(
                    Work::Store,
                    format!(
                        "{cause}: {} {} in this session but would be gone after a reload; everything saved before is kept. \
                     Remove pictures you do not need (what did not fit is saved as soon as there is room), or free space in the browser's settings for this site.",
                        pictures(count),
                        if count == 1 { "is" } else { "are" },
                    ),
                );
            }
        }
    }
    post_unsaved();
}

/// Stores the trained model's file for the next visit; when the store refuses it, the model stays
/// usable in this session, can be exported, and is stored again when there is room.
pub(super) async fn keep_model(bytes: Vec<u8>) {
    let Some(store) = project_store() else { return };
    match store.save_model(&bytes).await {
        Ok(()) => STATE.with_borrow_mut(|state| state.unsaved_model = None),
        Err(error) if tab::taken_over(&error) => return,
        Err(error) => {
            let cause = error.to_string();
            STATE.with_borrow_mut(|state| state.unsaved_model = Some(bytes));
            fail(
                Work::Store,
                format!(
                    "The trained model could not be saved for the next visit ({cause}). It works until the page is reloaded: Export keeps it as a file. It is saved as soon as there is room."
                ),
            );
        }
    }
    post_unsaved();
}

/// After a removal made room: stores what did not fit before.
pub(super) async fn save_unsaved() {
    let (pictures, model) = STATE.with_borrow(|state| (!state.unsaved.is_empty(), state.unsaved_model.clone()));
    if pictures {
        keep_images(Vec::new()).await;
    }
    if let Some(bytes) = model {
        keep_model(bytes).await;
        if STATE.with_borrow(|state| state.unsaved_model.is_none()) {
            notice("There is room in the browser's storage again: the trained model is saved now.");
        }
    }
}

pub(super) fn post_unsaved() {
    post(&STATE.with_borrow(State::unsaved_event), Vec::new());
}
