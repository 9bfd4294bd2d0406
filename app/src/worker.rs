//! The training worker: owns the compute device, the images, the pretrained and the trained models,
//! and answers [`WorkerRequest`]s with [`WorkerEvent`]s. Runs in a dedicated Web Worker, so that
//! decoding, measuring, training and predicting never block the page.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;

use burn::prelude::*;
use graft_engine::bundle::{self, BundleHeader};
use graft_engine::cache::EmbeddingCache;
use graft_engine::data::{self, Dataset, Example};
use graft_engine::inference::{self, FrozenClassifier};
use graft_engine::model::{ImageClassifier, ModelKind, Probes};
use graft_engine::train::{self, TrainConfig, TrainError, TrainEvent, TrainObserver};
use graft_engine::weights::{self, Manifest};
use graft_engine::{metrics, preprocess, readback, recommend};
use image::RgbImage;
use js_sys::{Array, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::device::{self, ComputeDevice};
use crate::protocol::{
    ClassEntry, ClassId, ImageInfo, InjectedFault, ProjectView, Rejected, Work, WorkerEvent, WorkerRequest,
};
use crate::store::{self, Store, StoreError, StoredImage};

/// Side of the square JPEG thumbnails sent to the page.
const THUMBNAIL: u32 = 96;

#[derive(Default)]
struct State {
    device: Option<ComputeDevice>,
    /// Shared with a running measurement or training; edits copy on write. Its labels are positions
    /// in `class_ids`, which only this worker sees: requests and storage name classes by id.
    dataset: Rc<Dataset>,
    /// `class_ids[i]` is the id of `dataset.classes[i]`.
    class_ids: Vec<ClassId>,
    /// `ids[i]` names `dataset.examples[i]`.
    ids: Vec<u64>,
    next_id: u64,
    pretrained: HashMap<ModelKind, ImageClassifier>,
    trained: Option<Trained>,
    busy: bool,
    /// The project in IndexedDB (`None` when the browser refuses storage).
    store: Option<Rc<Store>>,
    /// sha256 of each image file taken in -> (image id, file name): the same picture twice is refused.
    by_hash: HashMap<String, (u64, String)>,
    hash_of: HashMap<u64, String>,
    /// The frozen body's embeddings by image: the recommender fills it, head-only training reuses it.
    embeddings: EmbeddingCache,
    /// Pictures taken in that the store refused (a full storage): they are in this session and are
    /// stored with the next write that succeeds.
    unsaved: Vec<StoredImage>,
    /// The trained model's file when the store refused it; stored again when there is room.
    unsaved_model: Option<Vec<u8>>,
    /// The last run, if it was stopped: Continue goes on from there.
    paused: Option<Paused>,
}

impl State {
    /// Where class `id` is in the dataset's class list, if it exists.
    fn class_position(&self, id: ClassId) -> Option<usize> {
        self.class_ids.iter().position(|&c| c == id)
    }

    /// The classes with their ids, as stored.
    fn class_entries(&self) -> Vec<ClassEntry> {
        self.class_ids
            .iter()
            .zip(&self.dataset.classes)
            .map(|(&id, name)| ClassEntry { id, name: name.clone() })
            .collect()
    }

    /// Adds class `id` (if new), returning whether it was.
    fn add_class(&mut self, id: ClassId, name: String) -> bool {
        if self.class_position(id).is_some() {
            return false;
        }
        self.class_ids.push(id);
        Rc::make_mut(&mut self.dataset).classes.push(name);
        true
    }

    fn rename_class(&mut self, id: ClassId, name: String) -> bool {
        let Some(position) = self.class_position(id) else {
            return false;
        };
        Rc::make_mut(&mut self.dataset).classes[position] = name;
        true
    }

    /// Removes class `id` and its pictures (stored or waiting for room); the classes after it move up
    /// one place in the dataset, which only this worker sees.
    fn remove_class(&mut self, id: ClassId) -> bool {
        let Some(gone) = self.class_position(id) else {
            return false;
        };
        self.class_ids.remove(gone);
        let dataset = Rc::make_mut(&mut self.dataset);
        dataset.classes.remove(gone);
        let mut dropped = Vec::new();
        let mut kept_ids = Vec::with_capacity(self.ids.len());
        let mut kept_examples = Vec::with_capacity(dataset.examples.len());
        for (id, mut example) in self.ids.drain(..).zip(dataset.examples.drain(..)) {
            match example.label.cmp(&gone) {
                std::cmp::Ordering::Equal => {
                    dropped.push(id);
                    continue;
                }
                std::cmp::Ordering::Greater => example.label -= 1,
                std::cmp::Ordering::Less => {}
            }
            kept_ids.push(id);
            kept_examples.push(example);
        }
        self.ids = kept_ids;
        dataset.examples = kept_examples;
        self.unsaved.retain(|image| image.class != id);
        for image in dropped {
            self.forget_hash(image);
        }
        true
    }

    fn forget_hash(&mut self, id: u64) {
        if let Some(hash) = self.hash_of.remove(&id) {
            self.by_hash.remove(&hash);
        }
    }

    fn remember_hash(&mut self, id: u64, hash: String, name: String) {
        self.hash_of.insert(id, hash.clone());
        self.by_hash.insert(hash, (id, name));
    }

    fn unsaved_event(&self) -> WorkerEvent {
        WorkerEvent::Unsaved {
            pictures: self.unsaved.len(),
            model: self.unsaved_model.is_some(),
        }
    }
}

struct Trained {
    kind: ModelKind,
    classes: Vec<String>,
    input_size: usize,
    model: ImageClassifier,
    /// Tells this model from the one before it (a prediction may outlive it).
    serial: u64,
    /// The model frozen for predictions (on the CPU: compiled for the kernels), made at the first one.
    frozen: Option<Rc<FrozenClassifier>>,
}

impl Trained {
    fn new(kind: ModelKind, classes: Vec<String>, input_size: usize, model: ImageClassifier) -> Self {
        thread_local! {
            static SERIAL: Cell<u64> = const { Cell::new(0) };
        }
        Self {
            kind,
            classes,
            input_size,
            model,
            serial: SERIAL.with(|serial| {
                serial.set(serial.get() + 1);
                serial.get()
            }),
            frozen: None,
        }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
    static STOP: Rc<Cell<bool>> = Rc::new(Cell::new(false));
    /// Store writes in flight. Training waits for them between batches: IndexedDB's callbacks only run
    /// when the worker's event loop gets a turn, and a reload must not lose what the person did.
    static STORE_WRITES: Cell<usize> = const { Cell::new(0) };
}

/// Counts a store write in flight for as long as it lives.
struct Writing;

impl Writing {
    fn start() -> Self {
        STORE_WRITES.with(|n| n.set(n.get() + 1));
        Writing
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        STORE_WRITES.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Sets up the worker: opens the device (reporting `Ready`) and handles every message after that.
pub fn start() {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(|event: web_sys::MessageEvent| {
        let message: Array = event.data().unchecked_into();
        let json = message.get(0).as_string().unwrap_or_default();
        let payloads: Vec<Vec<u8>> = (1..message.length())
            .map(|i| message.get(i).unchecked_into::<Uint8Array>().to_vec())
            .collect();
        match serde_json::from_str::<WorkerRequest>(&json) {
            // Stop must act while a training task is suspended between batches.
            Ok(WorkerRequest::Stop) => STOP.with(|stop| stop.set(true)),
            Ok(request) => receive(request, payloads),
            Err(error) => post(
                &WorkerEvent::Failed {
                    request: Work::Message,
                    message: format!("unreadable request: {error}"),
                },
                Vec::new(),
            ),
        }
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    receive(WorkerRequest::Init, Vec::new());
}

thread_local! {
    /// Requests received and not yet handled, in the order the page sent them.
    static INBOX: RefCell<std::collections::VecDeque<(WorkerRequest, Vec<Vec<u8>>)>> =
        RefCell::new(std::collections::VecDeque::new());
    /// Whether a task is handling the inbox.
    static HANDLING: Cell<bool> = const { Cell::new(false) };
}

/// Queues a request; one task handles the queue, a request at a time, in the order received. An
/// edit (a class made, pictures for it) is applied before the next request is looked at, even when
/// it waits for storage; long work (measuring, training, predicting, exporting) starts in order, on
/// the data as the requests before it left it, and runs beside the queue.
fn receive(request: WorkerRequest, payloads: Vec<Vec<u8>>) {
    INBOX.with_borrow_mut(|inbox| inbox.push_back((request, payloads)));
    if !HANDLING.replace(true) {
        wasm_bindgen_futures::spawn_local(async {
            while let Some((request, payloads)) = INBOX.with_borrow_mut(|inbox| inbox.pop_front()) {
                handle(request, payloads).await;
            }
            HANDLING.set(false);
        });
    }
}

/// Sends an event with its payloads (their buffers transferred).
pub fn post(event: &WorkerEvent, payloads: Vec<Vec<u8>>) {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let (message, transfer) = crate::bridge::pack(&serde_json::to_string(event).expect("events serialise"), payloads);
    if let Err(error) = scope.post_message_with_transfer(&message, &transfer) {
        leptos::logging::error!("graft worker: postMessage failed: {error:?}");
    }
}

fn fail(request: Work, message: impl ToString) {
    post(
        &WorkerEvent::Failed {
            request,
            message: message.to_string(),
        },
        Vec::new(),
    );
}

async fn handle(request: WorkerRequest, payloads: Vec<Vec<u8>>) {
    match request {
        WorkerRequest::Init => {
            let device = device::acquire().await;
            let (label, gpu) = (device.label(), device.is_gpu());
            STATE.with_borrow_mut(|state| state.device = Some(device));
            restore().await;
            post(&WorkerEvent::Ready { device: label, gpu }, Vec::new());
        }
        WorkerRequest::AddClass { id, name } => {
            if STATE.with_borrow_mut(|state| state.add_class(id, name)) {
                save_classes(None).await;
            }
        }
        WorkerRequest::RenameClass { id, name } => {
            if STATE.with_borrow_mut(|state| state.rename_class(id, name)) {
                save_classes(None).await;
            }
        }
        WorkerRequest::RemoveClass { id } => {
            if STATE.with_borrow_mut(|state| state.remove_class(id)) {
                save_classes(Some(id)).await;
                save_unsaved().await;
            }
        }
        WorkerRequest::SaveView { view } => {
            let _writing = Writing::start();
            if let Some(store) = store() {
                let json = serde_json::to_string(&view).unwrap_or_default();
                match store.save_view(&json).await {
                    // A full storage is already said (message and banner) for what matters more; a
                    // view is small and saved again at the next change, not worth a message each.
                    Ok(()) | Err(StoreError::Full) => {}
                    Err(error) => fail(Work::Store, store::describe(error)),
                }
            }
        }
        WorkerRequest::AddImages { class, names } => add_images(class, names, payloads).await,
        WorkerRequest::AddFrames { class, width, height } => {
            let count = payloads.len();
            let stamp = js_sys::Date::now() as u64;
            let names = (0..count).map(|i| format!("webcam-{stamp}-{i}.png")).collect();
            let frames = payloads
                .into_iter()
                .map(|rgba| frame_png(&rgba, width, height))
                .collect();
            add_images(class, names, frames).await
        }
        WorkerRequest::RemoveImage { id } => {
            let _writing = Writing::start();
            if let Some(store) = store()
                && let Err(error) = store.delete_image(id).await
            {
                fail(Work::Store, store::describe(error));
            }
            remove_image(id);
            save_unsaved().await;
        }
        // Long work runs beside the inbox, on the data as the requests before it left it.
        WorkerRequest::Recommend { model } => {
            let data = snapshot();
            wasm_bindgen_futures::spawn_local(async move {
                let mut result = run_recommend(model, data.0.clone()).await;
                if result.is_err() && recovered_from_gpu_loss("Measuring your pictures").await {
                    result = run_recommend(model, data.0).await;
                }
                if let Err(message) = result {
                    fail(Work::Recommend, message);
                }
            });
        }
        WorkerRequest::Train { model, config } => {
            let busy = STATE.with_borrow_mut(|state| std::mem::replace(&mut state.busy, true));
            if busy {
                return fail(Work::Train, "training is already running");
            }
            let (dataset, ids) = snapshot();
            wasm_bindgen_futures::spawn_local(async move {
                let result = run_train(model, config, dataset, ids).await;
                STATE.with_borrow_mut(|state| state.busy = false);
                if let Err(message) = result {
                    fail(Work::Train, message);
                }
            });
        }
        WorkerRequest::Continue => {
            let busy = STATE.with_borrow_mut(|state| std::mem::replace(&mut state.busy, true));
            if busy {
                return fail(Work::Train, "training is already running");
            }
            let (dataset, _) = snapshot();
            wasm_bindgen_futures::spawn_local(async move {
                let result = continue_train(dataset).await;
                STATE.with_borrow_mut(|state| state.busy = false);
                if let Err(message) = result {
                    fail(Work::Train, message);
                }
            });
        }
        WorkerRequest::Stop => STOP.with(|stop| stop.set(true)),
        WorkerRequest::Predict => wasm_bindgen_futures::spawn_local(async move {
            let bytes = payloads.first().map(Vec::as_slice).unwrap_or(&[]);
            let mut result = predict(bytes).await;
            if result.is_err() && recovered_from_gpu_loss("Classifying your picture").await {
                result = predict(bytes).await;
            }
            match result {
                Ok(top) => post(&WorkerEvent::Prediction { top }, Vec::new()),
                Err(message) => fail(Work::Predict, message),
            }
        }),
        WorkerRequest::PredictFrame { width, height } => wasm_bindgen_futures::spawn_local(async move {
            let png = frame_png(payloads.first().map(Vec::as_slice).unwrap_or(&[]), width, height);
            match predict(&png).await {
                Ok(top) => post(&WorkerEvent::Prediction { top }, Vec::new()),
                Err(message) => fail(Work::Predict, message),
            }
        }),
        WorkerRequest::Export => wasm_bindgen_futures::spawn_local(async {
            let mut result = export().await;
            if result.is_err() && recovered_from_gpu_loss("Exporting the model").await {
                result = export().await;
            }
            match result {
                Ok((file_name, bytes)) => post(&WorkerEvent::Exported { file_name }, vec![bytes]),
                Err(message) => fail(Work::Export, message),
            }
        }),
        WorkerRequest::InjectFault { fault } => INJECTED.set(Some(fault)),
        WorkerRequest::Import { name } => {
            let bytes = payloads.into_iter().next().unwrap_or_default();
            match import(&name, &bytes) {
                Ok((classes, model)) => {
                    post(&WorkerEvent::ModelReady { classes, model }, Vec::new());
                    keep_model(bytes).await;
                }
                Err(message) => fail(Work::Import, message),
            }
        }
    }
}

fn store() -> Option<Rc<Store>> {
    STATE.with_borrow(|state| state.store.clone())
}

/// The pictures as they are now and their image ids, for work that runs beside later edits.
fn snapshot() -> (Rc<Dataset>, Vec<u64>) {
    STATE.with_borrow(|state| (state.dataset.clone(), state.ids.clone()))
}

/// Stores the class list as it is now (after the change just applied), and when class `removed`
/// went, its pictures' removal from storage.
async fn save_classes(removed: Option<ClassId>) {
    let _writing = Writing::start();
    let Some(store) = store() else { return };
    let classes = STATE.with_borrow(State::class_entries);
    let result = async {
        if let Some(gone) = removed {
            store.remove_class(gone).await?;
        }
        store.save_classes(&classes).await
    }
    .await;
    if let Err(error) = result {
        fail(Work::Store, store::describe(error));
    }
}

fn remove_image(id: u64) {
    STATE.with_borrow_mut(|state| {
        if let Some(position) = state.ids.iter().position(|&i| i == id) {
            state.ids.remove(position);
            Rc::make_mut(&mut state.dataset).examples.remove(position);
        }
        state.forget_hash(id);
        state.unsaved.retain(|image| image.id != id);
    });
}

/// Opens the project store and brings back what it holds: classes, images, the trained model.
async fn restore() {
    let store = match Store::open().await {
        Ok(store) => Rc::new(store),
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

/// Decodes, orients and downscales each file once; stores it; answers with thumbnails and per-file
/// reasons.
async fn add_images(class: ClassId, names: Vec<String>, payloads: Vec<Vec<u8>>) {
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
fn pictures(count: usize) -> String {
    if count == 1 {
        "1 picture".into()
    } else {
        format!("{count} pictures")
    }
}

/// Stores `new` pictures together with any the store refused before. What the store refuses again
/// stays in this session (and is said so); nothing stored before is touched, as a refused
/// transaction writes nothing.
async fn keep_images(new: Vec<StoredImage>) {
    let Some(store) = store() else { return };
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
async fn keep_model(bytes: Vec<u8>) {
    let Some(store) = store() else { return };
    match store.save_model(&bytes).await {
        Ok(()) => STATE.with_borrow_mut(|state| state.unsaved_model = None),
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
async fn save_unsaved() {
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

fn post_unsaved() {
    post(&STATE.with_borrow(State::unsaved_event), Vec::new());
}

fn notice(message: impl ToString) {
    post(
        &WorkerEvent::Notice {
            message: message.to_string(),
        },
        Vec::new(),
    );
}

/// A webcam frame (RGBA pixels) as a PNG file, so that it goes through the same intake as a dropped
/// file; empty (and so refused with a reason) when the pixels do not match the size.
fn frame_png(rgba: &[u8], width: u32, height: u32) -> Vec<u8> {
    let Some(frame) = image::RgbaImage::from_raw(width, height, rgba.to_vec()) else {
        return Vec::new();
    };
    let mut png = Vec::new();
    let _ =
        image::DynamicImage::ImageRgba8(frame).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png);
    png
}

fn jpeg(image: &RgbImage, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .map_err(|e| format!("could not encode the image: {e}"))?;
    Ok(out)
}

/// A centre-square JPEG thumbnail.
fn thumbnail(image: &RgbImage) -> Result<Vec<u8>, String> {
    let side = image.width().min(image.height());
    let square = image::imageops::crop_imm(
        image,
        (image.width() - side) / 2,
        (image.height() - side) / 2,
        side,
        side,
    )
    .to_image();
    let small = image::imageops::resize(&square, THUMBNAIL, THUMBNAIL, image::imageops::FilterType::Triangle);
    jpeg(&small, 80)
}

fn device() -> Result<Device, String> {
    STATE
        .with_borrow(|state| state.device.as_ref().map(|d| d.device().clone()))
        .ok_or_else(|| "the compute device is not ready yet".to_string())
}

/// Fetches a file the app serves (the worker's URL is the app's root).
async fn fetch(path: &str) -> Result<Vec<u8>, String> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let response = wasm_bindgen_futures::JsFuture::from(scope.fetch_with_str(path))
        .await
        .map_err(|e| format!("{path}: could not be fetched ({e:?})"))?;
    let response: web_sys::Response = response.unchecked_into();
    if !response.ok() {
        return Err(format!("{path}: HTTP {}", response.status()));
    }
    let buffer = response.array_buffer().map_err(|e| format!("{path}: {e:?}"))?;
    let buffer = wasm_bindgen_futures::JsFuture::from(buffer)
        .await
        .map_err(|e| format!("{path}: the download broke off ({e:?})"))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// The pretrained ImageNet model of `kind`, fetched and verified once.
async fn pretrained(kind: ModelKind) -> Result<ImageClassifier, String> {
    if let Some(model) = STATE.with_borrow(|state| state.pretrained.get(&kind).cloned()) {
        return Ok(model);
    }
    let manifest: Manifest = serde_json::from_slice(&fetch("models/manifest.json").await?)
        .map_err(|e| format!("models/manifest.json: {e}"))?;
    let entry = manifest
        .entry(kind)
        .ok_or_else(|| format!("{kind} is not among the served models"))?
        .clone();
    post(
        &WorkerEvent::Notice {
            message: format!(
                "Loading the pretrained {} weights ({:.1} MB)…",
                kind.card().display_name,
                entry.bytes as f64 / 1e6
            ),
        },
        Vec::new(),
    );
    let bytes = fetch(&format!("models/{}", entry.file)).await?;
    let model = weights::load_pretrained(kind, &entry, bytes, &device()?).map_err(|e| e.to_string())?;
    STATE.with_borrow_mut(|state| state.pretrained.insert(kind, model.clone()));
    Ok(model)
}

/// Switches this worker to the CPU backend after the GPU failed (`reason`): the badge says so, and
/// what lived on the GPU (the pretrained models, a trained model) is dropped, to be loaded again on
/// the CPU when needed (a trained model from the project's storage).
fn fall_back_to_cpu(reason: &str) -> ComputeDevice {
    let cpu = device::fall_back_to_cpu(reason);
    STATE.with_borrow_mut(|state| {
        state.device = Some(cpu.clone());
        state.pretrained.clear();
        state.trained = None;
    });
    post(
        &WorkerEvent::Ready {
            device: cpu.label(),
            gpu: false,
        },
        Vec::new(),
    );
    cpu
}

/// After work on the GPU failed: whether the GPU is gone (a one-value read-back says so), and if it is,
/// the switch to the CPU — the trained model reloaded there from the project's storage, the person
/// told that `what` runs again on the CPU. True when the work should be tried again.
async fn recovered_from_gpu_loss(what: &str) -> bool {
    let device = STATE.with_borrow(|state| state.device.clone());
    let Some(ComputeDevice::WebGpu { device, .. }) = device else {
        return false;
    };
    let cause = match readback::to_f32_vec(Tensor::<1>::zeros([1], &device)).await {
        Ok(_) | Err(readback::ReadbackError::Conversion(_)) => return false,
        Err(readback::ReadbackError::DeviceLost(cause)) => cause,
        Err(other) => other.to_string(),
    };
    fall_back_to_cpu(&cause);
    post(
        &WorkerEvent::Notice {
            message: format!("The GPU was lost ({cause}). {what} again on the CPU (slower)."),
        },
        Vec::new(),
    );
    if let Some(store) = store()
        && let Ok(Some(bytes)) = store.load_model().await
        && let Err(message) = import("the stored model", &bytes)
    {
        fail(
            Work::Restore,
            format!("the trained model could not be moved to the CPU: {message}"),
        );
    }
    true
}

async fn run_recommend(kind: ModelKind, dataset: Rc<Dataset>) -> Result<(), String> {
    dataset.validate().map_err(|e| e.to_string())?;
    let model = pretrained(kind).await?;
    let device = device()?;
    let mut progress = Progress;
    let started = js_sys::Date::now();
    let mut embeddings = STATE.with_borrow_mut(|state| std::mem::take(&mut state.embeddings));
    let signals = recommend::measure_with_cache(
        &model,
        kind,
        &dataset,
        &device,
        recommend::DEFAULT_SAMPLE_PER_CLASS,
        &mut progress,
        &mut embeddings,
    )
    .await;
    STATE.with_borrow_mut(|state| state.embeddings = embeddings);
    let signals = signals.map_err(|e| e.to_string())?;
    let seconds = (js_sys::Date::now() - started) / 1000.0;
    post(
        &WorkerEvent::ModelSpeed {
            model: kind,
            images_per_second: signals.sampled_images as f64 / seconds.max(1e-3),
        },
        Vec::new(),
    );
    let recommendation = recommend::recommend(&model, &dataset.classes, &dataset.class_counts(), signals);
    post(&WorkerEvent::Recommendation(Box::new(recommendation)), Vec::new());
    Ok(())
}

/// Reports the measurement's progress and lets the worker breathe between batches.
struct Progress;

impl recommend::MeasureProgress for Progress {
    async fn progress(&mut self, done: usize, total: usize) {
        post(&WorkerEvent::Measuring { done, total }, Vec::new());
        yield_now().await;
    }
}

/// Relays training events to the page; cancels when a `Stop` arrived.
struct Relay {
    stop: Rc<Cell<bool>>,
}

thread_local! {
    /// A fault the tests asked for, made to happen after the next training batch.
    static INJECTED: Cell<Option<InjectedFault>> = const { Cell::new(None) };
}

impl TrainObserver for Relay {
    fn event(&mut self, event: TrainEvent) -> ControlFlow<()> {
        if matches!(event, TrainEvent::Batch { .. })
            && let Some(InjectedFault::GpuOutOfMemory) = INJECTED.take()
        {
            // Exactly what the device's uncaptured-error handler reports (see `device.rs`).
            readback::report_fault(readback::DeviceFault::OutOfMemory(
                "Out of Memory (injected for a test)".into(),
            ));
        }
        post(&WorkerEvent::Train(Box::new(event)), Vec::new());
        if self.stop.get() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    async fn between_batches(&mut self) {
        yield_now().await;
        // Let the person's edits reach storage before the next batch.
        while STORE_WRITES.with(Cell::get) > 0 {
            yield_now().await;
        }
    }
}

/// A stopped run that can go on where it stopped.
struct Paused {
    checkpoint: train::Checkpoint,
    kind: ModelKind,
    /// The data it was trained on: going on needs the same.
    dataset: Rc<Dataset>,
    ids: Vec<u64>,
}

/// What a run needs besides its start: the device, the host for checkpoints, the observer and the
/// embeddings cache (taken from the state for the run, given back after).
struct RunContext {
    kind: ModelKind,
    dataset: Rc<Dataset>,
    ids: Vec<u64>,
    device: Device,
    gpu: bool,
    host: Device,
    relay: Relay,
    embeddings: EmbeddingCache,
}

impl RunContext {
    fn new(kind: ModelKind, dataset: Rc<Dataset>, ids: Vec<u64>) -> Result<Self, String> {
        let device = device()?;
        let gpu = STATE.with_borrow(|state| state.device.as_ref().is_some_and(ComputeDevice::is_gpu));
        let stop = STOP.with(Rc::clone);
        stop.set(false);
        Ok(Self {
            kind,
            dataset,
            ids,
            device,
            gpu,
            // A checkpoint on the CPU after every batch: a lost GPU costs one batch, not the run, and a
            // stopped run can go on.
            host: Device::flex(),
            relay: Relay { stop },
            embeddings: STATE.with_borrow_mut(|state| std::mem::take(&mut state.embeddings)),
        })
    }

    async fn fresh(&mut self, model: &ImageClassifier, config: &TrainConfig) -> Result<train::Trained, TrainError> {
        train::Training::new(model, self.kind, &self.dataset, config)
            .embeddings(&mut self.embeddings)
            .checkpoints_on(&self.host)
            .run(&self.device, &mut self.relay)
            .await
    }

    async fn resume(&mut self, checkpoint: train::Checkpoint) -> Result<train::Trained, TrainError> {
        train::Training::resume(checkpoint, self.kind, &self.dataset)
            .embeddings(&mut self.embeddings)
            .checkpoints_on(&self.host)
            .run(&self.device, &mut self.relay)
            .await
    }

    /// Carries a run through what the device does to it: out of GPU memory, it goes on on the same
    /// GPU from the last completed batch in batches half the size, until they fit; when the GPU is
    /// lost (or not even one image fits), the CPU takes over from there. `config` starts it afresh
    /// when it failed before its first checkpoint.
    async fn recover(
        &mut self,
        mut trained: Result<train::Trained, TrainError>,
        config: &TrainConfig,
    ) -> Result<train::Trained, String> {
        let mut config = config.clone();
        loop {
            trained = match trained {
                Err(TrainError::OutOfMemory {
                    message,
                    batch_size,
                    checkpoint,
                }) if batch_size > 1 && self.gpu => {
                    let smaller = batch_size / 2;
                    let message = match &checkpoint {
                        Some(checkpoint) => format!(
                            "The GPU ran out of memory with batches of {batch_size} images ({message}). Training goes on \
                             on the GPU in batches of {smaller}, {}: nothing learnt so far is lost.",
                            checkpoint.describe()
                        ),
                        None => format!(
                            "The GPU ran out of memory with batches of {batch_size} images ({message}). Training starts \
                             again in batches of {smaller}."
                        ),
                    };
                    notice(message);
                    match checkpoint {
                        Some(checkpoint) => self.resume(checkpoint.with_batch_size(smaller)).await,
                        None => {
                            config.batch_size = smaller;
                            let model = pretrained(self.kind).await?;
                            self.fresh(&model, &config).await
                        }
                    }
                }
                Err(TrainError::OutOfMemory {
                    message,
                    batch_size,
                    checkpoint,
                }) if self.gpu => Err(TrainError::Device {
                    error: readback::ReadbackError::Execution(format!(
                        "out of memory with batches of {batch_size} image: {message}"
                    )),
                    checkpoint,
                }),
                Err(TrainError::Device { error, checkpoint }) if self.gpu => {
                    let reason = match error {
                        readback::ReadbackError::DeviceLost(cause) => cause,
                        other => other.to_string(),
                    };
                    self.device = fall_back_to_cpu(&reason).device().clone();
                    self.gpu = false;
                    notice(match &checkpoint {
                        Some(checkpoint) => format!(
                            "The GPU failed during training ({reason}). Training goes on on the CPU, {}: what it \
                             learnt so far is kept, but the rest will be slower.",
                            checkpoint.describe()
                        ),
                        None => format!(
                            "The GPU failed before training got going ({reason}). Training starts again on the CPU \
                             (slower)."
                        ),
                    });
                    match checkpoint {
                        Some(checkpoint) => self.resume(*checkpoint).await,
                        None => {
                            let model = pretrained(self.kind).await?;
                            self.fresh(&model, &config).await
                        }
                    }
                }
                done => return done.map_err(|e| e.to_string()),
            };
        }
    }

    /// Hands the embeddings back and makes the trained model the one to predict and export with,
    /// kept for the next visit; a stopped run is kept to go on from.
    async fn finish(self, trained: Result<train::Trained, String>, input_size: usize) -> Result<(), String> {
        let Self {
            kind,
            dataset,
            ids,
            embeddings,
            ..
        } = self;
        STATE.with_borrow_mut(|state| state.embeddings = embeddings);
        let trained = trained?;
        let samples = trained
            .summary
            .val_images
            .iter()
            .zip(&trained.summary.val_predictions)
            .map(|(&i, &predicted)| (ids[i], dataset.examples[i].label, predicted))
            .collect();
        post(&WorkerEvent::Evaluated { samples }, Vec::new());
        let paused = trained.checkpoint.map(|checkpoint| Paused {
            checkpoint,
            kind,
            dataset: dataset.clone(),
            ids: ids.clone(),
        });
        post(
            &WorkerEvent::Paused {
                at: paused.as_ref().map(|p| p.checkpoint.describe()),
            },
            Vec::new(),
        );
        STATE.with_borrow_mut(|state| {
            state.paused = paused;
            state.trained = Some(Trained::new(kind, dataset.classes.clone(), input_size, trained.model))
        });
        post(
            &WorkerEvent::ModelReady {
                classes: dataset.classes.clone(),
                model: kind,
            },
            Vec::new(),
        );
        // Keep the model for the next visit.
        if store().is_some() {
            match export().await {
                Ok((_, bytes)) => keep_model(bytes).await,
                Err(message) => fail(
                    Work::Store,
                    format!("the model could not be kept for the next visit: {message}"),
                ),
            }
        }
        Ok(())
    }
}

async fn run_train(
    kind: ModelKind,
    mut config: TrainConfig,
    dataset: Rc<Dataset>,
    ids: Vec<u64>,
) -> Result<(), String> {
    dataset.validate().map_err(|e| e.to_string())?;
    let model = pretrained(kind).await?;
    config.max_buffer_bytes =
        STATE.with_borrow(|state| state.device.as_ref().and_then(ComputeDevice::max_buffer_bytes));
    STATE.with_borrow_mut(|state| state.paused = None);
    let mut run = RunContext::new(kind, dataset, ids)?;
    let first = run.fresh(&model, &config).await;
    let trained = run.recover(first, &config).await;
    run.finish(trained, config.image_size.unwrap_or(kind.card().input_size))
        .await
}

/// Whether two datasets hold the same classes and pictures, in the same order.
fn same_data(a: &Dataset, b: &Dataset) -> bool {
    a.classes == b.classes
        && a.examples.len() == b.examples.len()
        && a.examples
            .iter()
            .zip(&b.examples)
            .all(|(x, y)| x.label == y.label && x.image.key() == y.image.key())
}

/// Goes on with the stopped run from where it stopped, if the pictures are still the ones it trained on.
async fn continue_train(dataset: Rc<Dataset>) -> Result<(), String> {
    let Some(paused) = STATE.with_borrow_mut(|state| state.paused.take()) else {
        return Err("there is no stopped run to go on with: start one with Train".into());
    };
    if !same_data(&paused.dataset, &dataset) {
        post(&WorkerEvent::Paused { at: None }, Vec::new());
        return Err(
            "the classes or pictures changed since training stopped, so it cannot go on where it was: start again with Train"
                .into(),
        );
    }
    let config = paused.checkpoint.config().clone();
    let from = if paused.checkpoint.batches_done() == 0 {
        "from "
    } else {
        ""
    };
    notice(format!("Training goes on {from}{}.", paused.checkpoint.describe()));
    let mut run = RunContext::new(paused.kind, paused.dataset, paused.ids)?;
    let resumed = run.resume(paused.checkpoint).await;
    let trained = run.recover(resumed, &config).await;
    run.finish(trained, config.image_size.unwrap_or(paused.kind.card().input_size))
        .await
}

async fn predict(bytes: &[u8]) -> Result<Vec<(String, f32)>, String> {
    let image = preprocess::decode(bytes).map_err(|e| e.to_string())?;
    let (model, frozen, serial, classes, input_size, normalisation) = STATE
        .with_borrow(|state| {
            state.trained.as_ref().map(|t| {
                (
                    t.model.clone(),
                    t.frozen.clone(),
                    t.serial,
                    t.classes.clone(),
                    t.input_size,
                    t.kind.card().normalisation,
                )
            })
        })
        .ok_or("train or import a model first")?;
    let frozen = match frozen {
        Some(frozen) => frozen,
        None => {
            // On the CPU, compiled for the kernels. On a GPU, the model as it trained: its shaders are
            // compiled already, and a folded copy would need new ones (a minute on a software GPU).
            let frozen = Rc::new(if inference::compiles_for(&model.classifier.weight.device()) {
                FrozenClassifier::new(&model, Probes::Off)
                    .await
                    .map_err(|e| e.to_string())?
            } else {
                FrozenClassifier::Burn(model.valid())
            });
            STATE.with_borrow_mut(|state| {
                if let Some(trained) = state.trained.as_mut().filter(|t| t.serial == serial) {
                    trained.frozen = Some(frozen.clone());
                }
            });
            frozen
        }
    };
    let device = model.classifier.weight.device();
    let view = preprocess::evaluation_view(&image, input_size as u32);
    let input = preprocess::batch_tensor(&[view], &normalisation, &device);
    let logits = frozen.logits(input).await.map_err(|e| e.to_string())?;
    let probs = metrics::softmax(&logits);
    Ok(metrics::top_k(&probs, classes.len().min(5))
        .into_iter()
        .map(|(class, prob)| (classes[class].clone(), prob))
        .collect())
}

async fn export() -> Result<(String, Vec<u8>), String> {
    let (model, kind, classes, input_size) = STATE
        .with_borrow(|state| {
            state
                .trained
                .as_ref()
                .map(|t| (t.model.clone(), t.kind, t.classes.clone(), t.input_size))
        })
        .ok_or("train or import a model first")?;
    // Saving reads tensors synchronously: copy the model to the CPU with async read-backs first.
    let cpu = readback::module_to_device(model, &Device::flex())
        .await
        .map_err(|e| e.to_string())?;
    let header = BundleHeader::new(kind, classes, input_size);
    let bytes = bundle::encode(header, &cpu).map_err(|e| e.to_string())?;
    Ok((format!("graft-{}.{}", kind.card().name, bundle::EXTENSION), bytes))
}

fn import(name: &str, bytes: &[u8]) -> Result<(Vec<String>, ModelKind), String> {
    let (header, model) = bundle::decode(name, bytes, &Device::flex()).map_err(|e| e.to_string())?;
    let device = device()?;
    let model = model.to_device(&device);
    STATE.with_borrow_mut(|state| {
        state.trained = Some(Trained::new(
            header.model,
            header.classes.clone(),
            header.input_size,
            model,
        ))
    });
    Ok((header.classes, header.model))
}

/// Gives the event loop a turn (a zero-delay timeout), so that messages such as `Stop` are handled
/// while a long computation is in progress.
pub async fn yield_now() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        if let Ok(set_timeout) =
            js_sys::Reflect::get(&global, &"setTimeout".into()).and_then(|f| f.dyn_into::<js_sys::Function>())
        {
            let _ = set_timeout.call2(&global, &resolve, &JsValue::from(0));
        } else {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
