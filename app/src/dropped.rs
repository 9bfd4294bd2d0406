//! What a drop carries: files, and whole folders with everything in them. A drop lists a folder as one
//! unreadable "file"; its contents come only through the File System entries API
//! (`webkitGetAsEntry`), which is callback-based: each call is wrapped in a `Promise` here. Through
//! `Reflect`, like the service worker: web-sys's entry types would add features, and with them a
//! rebuild of wgpu.

use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// A drop's contents, taken while its event runs (the browser empties the transfer once it returns).
pub struct Dropped {
    /// One File System entry per dropped item, when the browser gives them.
    entries: Vec<JsValue>,
    /// The dropped files, for a browser without entries.
    files: Vec<web_sys::File>,
}

/// The files of a drop, each with its path relative to the drop (`folder/sub/file`, or `file`),
/// sorted by path; and how many the browser could not read.
pub struct DroppedFiles {
    pub files: Vec<(String, web_sys::File)>,
    pub unreadable: usize,
}

impl Dropped {
    pub fn take(transfer: &web_sys::DataTransfer) -> Self {
        let mut entries = Vec::new();
        if let Ok(items) = Reflect::get(transfer, &"items".into()) {
            let length = Reflect::get(&items, &"length".into())
                .ok()
                .and_then(|l| l.as_f64())
                .unwrap_or(0.0) as u32;
            for index in 0..length {
                let Ok(item) = Reflect::get(&items, &index.into()) else {
                    continue;
                };
                if let Some(entry) = call(&item, "webkitGetAsEntry", &[]).filter(|e| e.is_object()) {
                    entries.push(entry);
                }
            }
        }
        let files = transfer
            .files()
            .map(|list| (0..list.length()).filter_map(|i| list.get(i)).collect())
            .unwrap_or_default();
        Self { entries, files }
    }

    /// Reads the folders' listings (files are handles: no bytes are read here).
    pub async fn files(self) -> DroppedFiles {
        if self.entries.is_empty() {
            let files = self.files.into_iter().map(|f| (f.name(), f)).collect();
            return DroppedFiles { files, unreadable: 0 };
        }
        let mut files = Vec::new();
        let mut unreadable = 0;
        let mut pending = self.entries;
        while let Some(entry) = pending.pop() {
            if flag(&entry, "isDirectory") {
                let Some(reader) = call(&entry, "createReader", &[]) else {
                    unreadable += 1;
                    continue;
                };
                // `readEntries` gives a folder's entries a batch at a time, then an empty batch.
                loop {
                    match callback(&reader, "readEntries").await {
                        Ok(batch) => {
                            let batch: Array = batch.unchecked_into();
                            if batch.length() == 0 {
                                break;
                            }
                            pending.extend(batch.iter());
                        }
                        Err(_) => {
                            unreadable += 1;
                            break;
                        }
                    }
                }
            } else if flag(&entry, "isFile") {
                let path = Reflect::get(&entry, &"fullPath".into())
                    .ok()
                    .and_then(|p| p.as_string())
                    .unwrap_or_default();
                match callback(&entry, "file").await.map(JsCast::dyn_into::<web_sys::File>) {
                    Ok(Ok(file)) => {
                        let path = path.trim_start_matches('/');
                        let path = if path.is_empty() { file.name() } else { path.to_string() };
                        files.push((path, file));
                    }
                    _ => unreadable += 1,
                }
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        DroppedFiles { files, unreadable }
    }
}

fn flag(target: &JsValue, name: &str) -> bool {
    Reflect::get(target, &name.into()).is_ok_and(|v| v.is_truthy())
}

/// `target.method(...args)`, if `target` has such a method and it does not throw.
fn call(target: &JsValue, method: &str, args: &[JsValue]) -> Option<JsValue> {
    let function: Function = Reflect::get(target, &method.into()).ok()?.dyn_into().ok()?;
    function.apply(target, &args.iter().collect::<Array>()).ok()
}

/// `target.method(onSuccess, onError)` as a future.
async fn callback(target: &JsValue, method: &str) -> Result<JsValue, JsValue> {
    let function: Function = Reflect::get(target, &method.into())?.dyn_into()?;
    let promise = Promise::new(&mut |resolve, reject| {
        if let Err(error) = function.call2(target, &resolve, &reject) {
            let _ = reject.call1(&JsValue::UNDEFINED, &error);
        }
    });
    JsFuture::from(promise).await
}
