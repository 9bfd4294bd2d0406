//! The project store: the class names, every image (as taken in: upright, downscaled, JPEG) and the
//! trained model, in the browser's IndexedDB, written by the worker so that a reload finds the project
//! as it was. Nothing here leaves the device.
//!
//! Every write waits for its transaction to commit and reports an abort as an error with the
//! browser's reason: a write refused because the site's storage is full aborts the transaction at
//! commit (each `put` itself succeeded), and must not pass for a saved change.
//!
//! One tab edits the project at a time: the worker that holds it marks the store with its own random
//! mark ([`Store::claim`]), and every write checks that mark inside its own transaction before it
//! writes. A tab that took the project over wrote its mark before it read the project, so a write of
//! the tab it took it from either committed before (and was read) or finds the new mark and writes
//! nothing ([`StoreError::TakenOver`]): no stale copy ever replaces the project.

use idb::builder::{DatabaseBuilder, ObjectStoreBuilder};
use idb::{Database, KeyPath, ObjectStore, Transaction, TransactionMode, TransactionResult};
use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

use graft_app::protocol::{ClassEntry, ClassId};

const DATABASE: &str = "graft-project";
const IMAGES: &str = "images";
const META: &str = "meta";
/// The key in `META` of the mark of the worker that holds the project.
const HOLDER: &str = "holder";

/// An image as stored.
pub struct StoredImage {
    pub id: u64,
    pub class: ClassId,
    pub name: String,
    pub jpeg: Vec<u8>,
    /// sha256 of the file as it was added (to refuse the same picture twice after a reload too).
    pub hash: String,
}

/// What a reload restores.
#[derive(Default)]
pub struct Project {
    pub classes: Vec<ClassEntry>,
    pub images: Vec<StoredImage>,
    /// The trained model as a Graft model file.
    pub model: Option<Vec<u8>>,
    /// What the page showed, as JSON (the protocol's `ProjectView`).
    pub view: Option<String>,
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The site's storage quota is used up (`QuotaExceededError`): the write was undone whole.
    #[error("the browser's storage for this site is full")]
    Full,
    /// The transaction was aborted for another reason (the browser's own words).
    #[error("the browser's storage gave up on the change ({0})")]
    Aborted(String),
    #[error("the browser's storage failed ({0})")]
    Failed(String),
    /// Another tab holds the project now: nothing was written.
    #[error("the project is open in another tab now")]
    TakenOver,
}

impl StoreError {
    fn from_exception(name: &str, message: &str) -> Self {
        if name == "QuotaExceededError" {
            Self::Full
        } else {
            Self::Aborted(format!("{name}: {message}"))
        }
    }
}

impl From<idb::Error> for StoreError {
    fn from(error: idb::Error) -> Self {
        let text = error.to_string();
        if text.contains("QuotaExceeded") {
            Self::Full
        } else {
            Self::Failed(text)
        }
    }
}

/// Why the store could not do something, in words for the person.
pub fn describe(error: StoreError) -> String {
    match error {
        StoreError::Full => "the browser's storage for this site is full: what is already stored is kept, but this change will not survive a reload (free space or remove images)".to_string(),
        other => format!("the project could not be saved: {other}"),
    }
}

/// Waits for `tx` to commit; an abort is an error carrying the transaction's reason.
async fn committed(tx: Transaction) -> Result<(), StoreError> {
    let raw: web_sys::IdbTransaction = tx.into();
    match Transaction::from(raw.clone()).await? {
        TransactionResult::Committed => Ok(()),
        TransactionResult::Aborted => Err(match raw.error() {
            Some(exception) => StoreError::from_exception(&exception.name(), &exception.message()),
            None => StoreError::Aborted("no reason given".into()),
        }),
    }
}

/// The open project database.
pub struct Store {
    db: Database,
    /// This worker's mark (see [`Store::claim`]).
    mark: f64,
}

impl Store {
    pub async fn open() -> Result<Self, StoreError> {
        let db = DatabaseBuilder::new(DATABASE)
            .version(1)
            .add_object_store(ObjectStoreBuilder::new(IMAGES).key_path(Some(KeyPath::new_single("id"))))
            .add_object_store(ObjectStoreBuilder::new(META))
            .build()
            .await?;
        // Random, so that two tabs' workers never share one; whole, as IndexedDB keeps it exactly.
        let mark = (js_sys::Math::random() * 9_007_199_254_740_991.0).floor();
        Ok(Self { db, mark })
    }

    /// Makes this worker the project's holder: from the moment this commits, writes of any other
    /// tab's worker write nothing. Called on opening the project, before reading it.
    pub async fn claim(&self) -> Result<(), StoreError> {
        let tx = self.db.transaction(&[META], TransactionMode::ReadWrite)?;
        tx.object_store(META)?
            .put(&JsValue::from_f64(self.mark), Some(&JsValue::from_str(HOLDER)))?
            .await?;
        committed(tx).await
    }

    /// A write transaction on `store` that goes ahead only while this worker holds the project (its
    /// mark is checked in the same transaction, so no other tab can claim the project in between).
    async fn write(&self, store: &str) -> Result<(Transaction, ObjectStore), StoreError> {
        let scope: &[&str] = if store == META { &[META] } else { &[store, META] };
        let tx = self.db.transaction(scope, TransactionMode::ReadWrite)?;
        let holder = tx
            .object_store(META)?
            .get(JsValue::from_str(HOLDER))?
            .await?
            .and_then(|v| v.as_f64());
        if holder != Some(self.mark) {
            let _ = tx.abort();
            return Err(StoreError::TakenOver);
        }
        let object_store = tx.object_store(store)?;
        Ok((tx, object_store))
    }

    async fn put_meta(&self, key: &str, value: &JsValue) -> Result<(), StoreError> {
        let (tx, store) = self.write(META).await?;
        store.put(value, Some(&JsValue::from_str(key)))?.await?;
        committed(tx).await
    }

    pub async fn save_classes(&self, classes: &[ClassEntry]) -> Result<(), StoreError> {
        let json = serde_json::to_string(classes).unwrap_or_default();
        self.put_meta("classes", &JsValue::from_str(&json)).await
    }

    /// What the page shows besides classes and pictures, as JSON (the protocol's `ProjectView`).
    pub async fn save_view(&self, json: &str) -> Result<(), StoreError> {
        self.put_meta("view", &JsValue::from_str(json)).await
    }

    pub async fn save_model(&self, bundle: &[u8]) -> Result<(), StoreError> {
        self.put_meta("model", &Uint8Array::from(bundle).into()).await
    }

    pub async fn put_images(&self, images: &[StoredImage]) -> Result<(), StoreError> {
        let (tx, store) = self.write(IMAGES).await?;
        for image in images {
            let object = Object::new();
            let set = |key: &str, value: JsValue| {
                let _ = Reflect::set(&object, &JsValue::from_str(key), &value);
            };
            set("id", JsValue::from_f64(image.id as f64));
            set("class", JsValue::from_f64(image.class.0 as f64));
            set("name", JsValue::from_str(&image.name));
            set("jpeg", Uint8Array::from(image.jpeg.as_slice()).into());
            set("hash", JsValue::from_str(&image.hash));
            store.put(&object, None)?.await?;
        }
        committed(tx).await
    }

    pub async fn delete_image(&self, id: u64) -> Result<(), StoreError> {
        let (tx, store) = self.write(IMAGES).await?;
        store.delete(JsValue::from_f64(id as f64))?.await?;
        committed(tx).await
    }

    /// Removes class `removed`'s images (the class list is saved apart, with [`Self::save_classes`]).
    pub async fn remove_class(&self, removed: ClassId) -> Result<(), StoreError> {
        let (tx, store) = self.write(IMAGES).await?;
        for value in store.get_all(None, None)?.await? {
            let class = Reflect::get(&value, &"class".into()).ok().and_then(|v| v.as_f64());
            if class == Some(removed.0 as f64) {
                store
                    .delete(Reflect::get(&value, &"id".into()).unwrap_or(JsValue::NULL))?
                    .await?;
            }
        }
        committed(tx).await
    }

    /// The stored trained model (a Graft model file), if there is one.
    pub async fn load_model(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.transaction(&[META], TransactionMode::ReadOnly)?;
        let model = tx
            .object_store(META)?
            .get(JsValue::from_str("model"))?
            .await?
            .filter(|v| v.is_instance_of::<Uint8Array>())
            .map(|v| Uint8Array::from(v).to_vec());
        tx.await?;
        Ok(model)
    }

    /// Everything stored; records that do not read back are skipped and counted.
    pub async fn load(&self) -> Result<(Project, usize), StoreError> {
        let tx = self.db.transaction(&[IMAGES, META], TransactionMode::ReadOnly)?;
        let meta = tx.object_store(META)?;
        let classes = meta
            .get(JsValue::from_str("classes"))?
            .await?
            .and_then(|v| v.as_string())
            .map(|json| read_classes(&json))
            .unwrap_or_default();
        let model = meta
            .get(JsValue::from_str("model"))?
            .await?
            .filter(|v| v.is_instance_of::<Uint8Array>())
            .map(|v| Uint8Array::from(v).to_vec());
        let view = meta.get(JsValue::from_str("view"))?.await?.and_then(|v| v.as_string());
        let mut images = Vec::new();
        let mut unreadable = 0;
        for value in tx.object_store(IMAGES)?.get_all(None, None)?.await? {
            let number = |key: &str| Reflect::get(&value, &key.into()).ok().and_then(|v| v.as_f64());
            let name = Reflect::get(&value, &"name".into()).ok().and_then(|v| v.as_string());
            let jpeg = Reflect::get(&value, &"jpeg".into())
                .ok()
                .filter(|v| v.is_instance_of::<Uint8Array>())
                .map(|v| Uint8Array::from(v).to_vec());
            let hash = Reflect::get(&value, &"hash".into())
                .ok()
                .and_then(|v| v.as_string())
                .unwrap_or_default();
            let class = number("class")
                .map(|class| ClassId(class as u64))
                .filter(|class| classes.iter().any(|c| c.id == *class));
            match (number("id"), class, name, jpeg) {
                (Some(id), Some(class), Some(name), Some(jpeg)) => images.push(StoredImage {
                    id: id as u64,
                    class,
                    name,
                    jpeg,
                    hash,
                }),
                _ => unreadable += 1,
            }
        }
        tx.await?;
        images.sort_by_key(|image| image.id);
        Ok((
            Project {
                classes,
                images,
                model,
                view,
            },
            unreadable,
        ))
    }
}

/// The stored class list: `[{"id":…,"name":…}]`; a project stored before classes had ids holds
/// `["name", …]` and its images name their class by position, so positions serve as its ids (new
/// ids are far above them: [`ClassId::fresh`]).
fn read_classes(json: &str) -> Vec<ClassEntry> {
    if let Ok(classes) = serde_json::from_str::<Vec<ClassEntry>>(json) {
        return classes;
    }
    serde_json::from_str::<Vec<String>>(json)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(position, name)| ClassEntry {
            id: ClassId(position as u64),
            name,
        })
        .collect()
}
