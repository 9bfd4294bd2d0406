//! What the worker holds: the project (classes, pictures, their ids), the trained model, the device,
//! and the store writes in flight.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use graft_engine::bundle::BundleHeader;
use graft_engine::cache::EmbeddingCache;
use graft_engine::data::Dataset;
use graft_engine::inference::FrozenClassifier;
use graft_engine::model::{ImageClassifier, ModelKind};

use crate::device::ComputeDevice;
use crate::store::{Store, StoredImage};
use graft_app::protocol::{ClassEntry, ClassId, WorkerEvent};

use super::run::Paused;

#[derive(Default)]
pub(super) struct State {
    pub(super) device: Option<ComputeDevice>,
    /// Shared with a running measurement or training; edits copy on write. Its labels are positions
    /// in `class_ids`, which only this worker sees: requests and storage name classes by id.
    pub(super) dataset: Rc<Dataset>,
    /// `class_ids[i]` is the id of `dataset.classes[i]`.
    pub(super) class_ids: Vec<ClassId>,
    /// `ids[i]` names `dataset.examples[i]`.
    pub(super) ids: Vec<u64>,
    pub(super) next_id: u64,
    pub(super) pretrained: HashMap<ModelKind, ImageClassifier>,
    pub(super) trained: Option<TrainedModel>,
    pub(super) busy: bool,
    /// The project in IndexedDB (`None` when the browser refuses storage).
    pub(super) store: Option<Rc<Store>>,
    /// sha256 of each image file taken in -> (image id, file name): the same picture twice is refused.
    pub(super) by_hash: HashMap<String, (u64, String)>,
    pub(super) hash_of: HashMap<u64, String>,
    /// The frozen body's embeddings by image: the recommender fills it, head-only training reuses it.
    pub(super) embeddings: EmbeddingCache,
    /// Pictures taken in that the store refused (a full storage): they are in this session and are
    /// stored with the next write that succeeds.
    pub(super) unsaved: Vec<StoredImage>,
    /// The trained model's file when the store refused it; stored again when there is room.
    pub(super) unsaved_model: Option<Vec<u8>>,
    /// The last run, if it was stopped: Continue goes on from there.
    pub(super) paused: Option<Paused>,
}

impl State {
    /// Where class `id` is in the dataset's class list, if it exists.
    pub(super) fn class_position(&self, id: ClassId) -> Option<usize> {
        self.class_ids.iter().position(|&c| c == id)
    }

    /// The classes with their ids, as stored.
    pub(super) fn class_entries(&self) -> Vec<ClassEntry> {
        self.class_ids
            .iter()
            .zip(&self.dataset.classes)
            .map(|(&id, name)| ClassEntry { id, name: name.clone() })
            .collect()
    }

    /// Adds class `id` (if new), returning whether it was.
    pub(super) fn add_class(&mut self, id: ClassId, name: String) -> bool {
        if self.class_position(id).is_some() {
            return false;
        }
        self.class_ids.push(id);
        Rc::make_mut(&mut self.dataset).classes.push(name);
        true
    }

    pub(super) fn rename_class(&mut self, id: ClassId, name: String) -> bool {
        let Some(position) = self.class_position(id) else {
            return false;
        };
        Rc::make_mut(&mut self.dataset).classes[position] = name;
        true
    }

    /// Removes class `id` and its pictures (stored or waiting for room); the classes after it move up
    /// one place in the dataset, which only this worker sees.
    pub(super) fn remove_class(&mut self, id: ClassId) -> bool {
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

    pub(super) fn forget_hash(&mut self, id: u64) {
        if let Some(hash) = self.hash_of.remove(&id) {
            self.by_hash.remove(&hash);
        }
    }

    pub(super) fn remember_hash(&mut self, id: u64, hash: String, name: String) {
        self.hash_of.insert(id, hash.clone());
        self.by_hash.insert(hash, (id, name));
    }

    pub(super) fn unsaved_event(&self) -> WorkerEvent {
        WorkerEvent::Unsaved {
            pictures: self.unsaved.len(),
            model: self.unsaved_model.is_some(),
        }
    }
}

pub(super) struct TrainedModel {
    /// What its `.graft` file says (or will say) of it: model, classes and how pictures are
    /// prepared for it (checked, when it came from a file). Predictions prepare pictures from this,
    /// as `graft predict` does.
    pub(super) header: BundleHeader,
    pub(super) model: ImageClassifier,
    /// Tells this model from the one before it (a prediction may outlive it).
    pub(super) serial: u64,
    /// The model frozen for predictions (on the CPU: compiled for the kernels), made at the first one.
    pub(super) frozen: Option<Rc<FrozenClassifier>>,
}

impl TrainedModel {
    pub(super) fn new(header: BundleHeader, model: ImageClassifier) -> Self {
        thread_local! {
            static SERIAL: Cell<u64> = const { Cell::new(0) };
        }
        Self {
            header,
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
    pub(super) static STATE: RefCell<State> = RefCell::new(State::default());
    pub(super) static STOP: Rc<Cell<bool>> = Rc::new(Cell::new(false));
    /// Store writes in flight. Training waits for them between batches: IndexedDB's callbacks only run
    /// when the worker's event loop gets a turn, and a reload must not lose what the person did.
    pub(super) static STORE_WRITES: Cell<usize> = const { Cell::new(0) };
}

/// Counts a store write in flight for as long as it lives.
pub(super) struct Writing;

impl Writing {
    pub(super) fn start() -> Self {
        STORE_WRITES.with(|n| n.set(n.get() + 1));
        Writing
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        STORE_WRITES.with(|n| n.set(n.get().saturating_sub(1)));
    }
}
