//! Files in: chosen, dropped, read and sent to the worker in batches; downloads and object URLs out.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::bridge::Bridge;
use crate::protocol::{ClassId, WorkerRequest};

use crate::page::state::{ObjectUrl, Studio};

/// An object URL for bytes (thumbnails, the exported model), revoked when the last copy is dropped.
pub(crate) fn blob_url(bytes: &[u8], mime: Option<&str>) -> ObjectUrl {
    ObjectUrl::from(gloo_file::Blob::new_with_options(bytes, mime))
}

/// Starts a download of `url` as `file_name`.
pub(crate) fn download(url: &str, file_name: &str) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    if let Ok(anchor) = document.create_element("a") {
        let anchor: web_sys::HtmlAnchorElement = anchor.unchecked_into();
        anchor.set_href(url);
        anchor.set_download(file_name);
        anchor.click();
    }
}

/// Pictures per `AddImages` message: thousands of files go to the worker a few at a time, so that
/// neither the page nor one message holds them all, and the counts grow as they go in.
pub(crate) const FILES_PER_MESSAGE: usize = 32;

/// The files of a list (from an input or a drop), each with its path (for a folder:
/// `folder/class/file`). `File`s are handles: nothing is read yet.
pub(crate) fn file_list(files: &web_sys::FileList) -> Vec<(String, web_sys::File)> {
    (0..files.length())
        .filter_map(|index| files.get(index))
        .map(|file| {
            let relative = js_sys::Reflect::get(&file, &"webkitRelativePath".into())
                .ok()
                .and_then(|v| v.as_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| file.name());
            (relative, file)
        })
        .collect()
}

/// The name and bytes of the first file chosen in `input` (emptying it), if the browser can read it.
pub(crate) async fn read_first_file(input: &web_sys::HtmlInputElement) -> Option<(String, Vec<u8>)> {
    let (path, file) = input.files().map(|list| file_list(&list))?.into_iter().next()?;
    input.set_value("");
    Some((path, read_file(&file).await?))
}

/// A file's bytes, if the browser can read it (a file moved or deleted since it was chosen cannot be).
pub(crate) async fn read_file(file: &web_sys::File) -> Option<Vec<u8>> {
    gloo_file::futures::read_as_bytes(&gloo_file::Blob::from(file.clone()))
        .await
        .ok()
}

/// Reads `files` and sends them to the worker for class `class`, [`FILES_PER_MESSAGE`] at a time. A
/// file the browser cannot read is reported by name; when the class is deleted meanwhile, the files
/// not sent yet are left out, and said so.
pub(crate) async fn send_files(studio: Studio, bridge: &Bridge, class: ClassId, files: Vec<(String, web_sys::File)>) {
    for (sent, chunk) in files.chunks(FILES_PER_MESSAGE).enumerate() {
        if !studio.has_class(class) {
            let left = files.len() - sent * FILES_PER_MESSAGE;
            studio.say(
                true,
                format!(
                    "{} not added: {} class was deleted.",
                    if left == 1 {
                        "1 file was".to_string()
                    } else {
                        format!("{left} files were")
                    },
                    if left == 1 { "its" } else { "their" }
                ),
            );
            return;
        }
        let mut names = Vec::with_capacity(chunk.len());
        let mut payloads = Vec::with_capacity(chunk.len());
        for (path, file) in chunk {
            let name = path.rsplit('/').next().unwrap_or(path).to_string();
            match read_file(file).await {
                Some(bytes) => {
                    names.push(name);
                    payloads.push(bytes);
                }
                None => studio.say(
                    true,
                    format!("{name} was not added: the browser could not read the file"),
                ),
            }
        }
        if !names.is_empty() {
            bridge.send(&WorkerRequest::AddImages { class, names }, payloads);
        }
    }
}

/// A drop zone's `drop` handler: reads what was dropped (walking dropped folders), reports what the
/// browser could not read, and hands the visible files (hidden ones skipped), each with its path in
/// the drop, to `then`. The innermost zone takes a drop (a class card, not the images panel around
/// it).
pub(crate) fn on_drop<F, Work>(
    studio: Studio,
    dragging: RwSignal<bool>,
    then: F,
) -> impl Fn(leptos::ev::DragEvent) + 'static
where
    F: Fn(Vec<(String, web_sys::File)>) -> Work + Clone + 'static,
    Work: std::future::Future<Output = ()> + 'static,
{
    move |ev| {
        ev.prevent_default();
        ev.stop_propagation();
        dragging.set(false);
        let Some(transfer) = ev.data_transfer() else {
            return;
        };
        let dropped = crate::dropped::Dropped::take(&transfer);
        let then = then.clone();
        leptos::task::spawn_local(async move {
            let dropped = dropped.files().await;
            if dropped.unreadable > 0 {
                studio.say(
                    true,
                    format!(
                        "{} of the dropped files or folders could not be read by the browser and were left out.",
                        dropped.unreadable
                    ),
                );
            }
            let paths: Vec<String> = dropped.files.iter().map(|(path, _)| path.clone()).collect();
            let visible = crate::folders::visible(&paths);
            let mut files: Vec<Option<_>> = dropped.files.into_iter().map(Some).collect();
            then(visible.into_iter().filter_map(|i| files[i].take()).collect()).await;
        });
    }
}

/// A drop zone's `dragover` handler: accepts the drop and shows the zone as the target.
pub(crate) fn drag_over(dragging: RwSignal<bool>) -> impl Fn(leptos::ev::DragEvent) + 'static {
    move |ev| {
        ev.prevent_default();
        ev.stop_propagation();
        dragging.set(true);
    }
}

/// Makes a class of each of `groups` (or adds to the class of that name) and sends it its `files`
/// (`groups` index into `files`).
pub(crate) async fn add_grouped(
    studio: Studio,
    bridge: &Bridge,
    files: Vec<(String, web_sys::File)>,
    groups: Vec<(String, Vec<usize>)>,
) {
    let mut files: Vec<Option<(String, web_sys::File)>> = files.into_iter().map(Some).collect();
    for (class, indices) in groups {
        let members: Vec<_> = indices.into_iter().filter_map(|i| files[i].take()).collect();
        let existing = studio
            .classes
            .with_untracked(|c| c.iter().find(|v| v.name == class).map(|v| v.id));
        let id = existing.unwrap_or_else(|| studio.add_class(Some(class), bridge));
        send_files(studio, bridge, id, members).await;
    }
}

/// "1 file `place` is in no class and was left out" (or "3 files … are … were …").
pub(crate) fn left_out(files: usize, place: &str) -> String {
    if files == 1 {
        format!("1 file {place} is in no class and was left out")
    } else {
        format!("{files} files {place} are in no class and were left out")
    }
}
