//! Edits of the project: pictures in (decoded, checked, stored), classes saved, a picture removed.

use std::rc::Rc;

use graft_engine::data::{self, Example};
use graft_engine::preprocess;
use graft_engine::weights::{self};

use crate::store::{self, StoredImage};
use graft_app::protocol::{ClassId, ImageInfo, Rejected, Work, WorkerEvent};

use super::images::{frame_png, jpeg, thumbnail};
use super::persist::{keep_images, save_unsaved};
use super::state::{STATE, State, Writing};
use super::tab;
use super::{fail, post, project_store};

/// Stores the class list as it is now (after the change just applied), and when class `removed`
/// went, its pictures' removal from storage.
pub(super) async fn save_classes(removed: Option<ClassId>) {
    let _writing = Writing::start();
    let Some(store) = project_store() else { return };
    let classes = STATE.with_borrow(State::class_entries);
    let result = async {
        if let Some(gone) = removed {
            store.remove_class(gone).await?;
        }
        store.save_classes(&classes).await
    }
    .await;
    if let Err(error) = result
        && !tab::taken_over(&error)
    {
        fail(Work::Store, store::describe(error));
    }
}

pub(super) async fn add_class(id: ClassId, name: String) {
    if STATE.with_borrow_mut(|state| state.add_class(id, name)) {
        save_classes(None).await;
    }
}

pub(super) async fn rename_class(id: ClassId, name: String) {
    if STATE.with_borrow_mut(|state| state.rename_class(id, name)) {
        save_classes(None).await;
    }
}

/// Class `id` and its pictures go (pictures for it that arrive later are refused); what a full
/// storage refused before may fit now.
pub(super) async fn remove_class(id: ClassId) {
    if STATE.with_borrow_mut(|state| state.remove_class(id)) {
        save_classes(Some(id)).await;
        save_unsaved().await;
    }
}

/// Webcam frames (`width x height` RGBA each) into class `class`, as PNG pictures.
pub(super) async fn add_frames(class: ClassId, width: u32, height: u32, payloads: Vec<Vec<u8>>) {
    let stamp = js_sys::Date::now() as u64;
    let names = (0..payloads.len()).map(|i| format!("webcam-{stamp}-{i}.png")).collect();
    let frames = payloads
        .into_iter()
        .map(|rgba| frame_png(&rgba, width, height))
        .collect();
    add_images(class, names, frames).await
}

/// Picture `id` goes, from the store and from the project.
pub(super) async fn delete_image(id: u64) {
    let _writing = Writing::start();
    if let Some(store) = project_store()
        && let Err(error) = store.delete_image(id).await
        && !tab::taken_over(&error)
    {
        fail(Work::Store, store::describe(error));
    }
    remove_image(id);
    save_unsaved().await;
}

pub(super) fn remove_image(id: u64) {
    STATE.with_borrow_mut(|state| {
        if let Some(position) = state.ids.iter().position(|&i| i == id) {
            state.ids.remove(position);
            Rc::make_mut(&mut state.dataset).examples.remove(position);
        }
        state.forget_hash(id);
        state.unsaved.retain(|image| image.id != id);
    });
}

/// Decodes, orients and downscales each file once; stores it; answers with thumbnails and per-file
/// reasons.
pub(super) async fn add_images(class: ClassId, names: Vec<String>, payloads: Vec<Vec<u8>>) {
    let _writing = Writing::start();
    let mut added = Vec::new();
    let mut rejected = Vec::new();
    let mut thumbnails = Vec::new();
    let mut stored = Vec::new();
    STATE.with_borrow_mut(|state| {
        let Some(label) = state.class_position(class) else {
            rejected.extend(names.iter().map(|name| Rejected {
                name: name.clone(),
                reason: "its class was deleted".into(),
            }));
            return;
        };
        for (name, bytes) in names.into_iter().zip(payloads) {
            let hash = weights::sha256_hex(&bytes);
            if let Some((existing, existing_name)) = state.by_hash.get(&hash) {
                let position = state.ids.iter().position(|i| i == existing);
                let class_name = position
                    .map(|p| state.dataset.classes[state.dataset.examples[p].label].clone())
                    .unwrap_or_default();
                rejected.push(Rejected {
                    name,
                    reason: format!("the same picture is already in {class_name:?} (as {existing_name})"),
                });
                continue;
            }
            let image = match preprocess::decode(&bytes) {
                Ok(image) => image,
                Err(error) => {
                    rejected.push(Rejected {
                        name,
                        reason: error.to_string(),
                    });
                    continue;
                }
            };
            let prepared = data::prepare(&image, 224);
            let encoded = thumbnail(&prepared).and_then(|thumb| jpeg(&prepared, 90).map(|full| (thumb, full)));
            let (thumb, full) = match encoded {
                Ok(pair) => pair,
                Err(reason) => {
                    rejected.push(Rejected { name, reason });
                    continue;
                }
            };
            thumbnails.push(thumb);
            let id = state.next_id;
            state.next_id += 1;
            state.ids.push(id);
            Rc::make_mut(&mut state.dataset).examples.push(Example {
                // Kept compressed, the same bytes as stored: training sees the same pixels after a
                // reload, and thousands of pictures fit the tab.
                image: data::Picture::compressed(full.clone(), &prepared),
                label,
            });
            state.remember_hash(id, hash.clone(), name.clone());
            stored.push(StoredImage {
                id,
                class,
                name: name.clone(),
                jpeg: full,
                hash,
            });
            added.push(ImageInfo { id, name });
        }
    });
    post(&WorkerEvent::ImagesAdded { class, added, rejected }, thumbnails);
    if !stored.is_empty() {
        keep_images(stored).await;
    }
}

/// "1 picture", "3 pictures".
pub(super) fn pictures(count: usize) -> String {
    if count == 1 {
        "1 picture".into()
    } else {
        format!("{count} pictures")
    }
}

/// Picture `id` goes to class `to` (a review's suggestion taken): relabelled here, stored again under
/// its new class, the page told. A picture already there, or gone, or a class that is gone: nothing.
pub(super) async fn move_image(id: u64, to: ClassId) {
    let _writing = Writing::start();
    let moved = STATE.with_borrow_mut(|state| {
        let position = state.ids.iter().position(|&i| i == id)?;
        let label = state.class_position(to)?;
        if state.dataset.examples[position].label == label {
            return None;
        }
        Rc::make_mut(&mut state.dataset).examples[position].label = label;
        let hash = state.hash_of.get(&id).cloned().unwrap_or_default();
        let name = state
            .by_hash
            .get(&hash)
            .map(|(_, name)| name.clone())
            .unwrap_or_default();
        let jpeg = state.dataset.examples[position].image.compressed_bytes()?.to_vec();
        Some(StoredImage {
            id,
            class: to,
            name,
            jpeg,
            hash,
        })
    });
    let Some(stored) = moved else {
        return;
    };
    post(&WorkerEvent::ImageMoved { id, to }, Vec::new());
    keep_images(vec![stored]).await;
}
