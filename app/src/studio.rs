//! The fine-tuning studio: data in, model, recommendation, training, results, try it, export.

use graft_engine::model::ModelKind;
use graft_engine::recommend::{Quadrant, Recommendation};
use graft_engine::strategy::Strategy;
use graft_engine::train::{BatchNormStatistics, TrainConfig, TrainEvent, TrainSummary};
use js_sys::{Array, Uint8Array};
use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::DeviceBadge;
use crate::bridge::Bridge;
use crate::protocol::{ClassId, EpochPoint, InjectedFault, ProjectView, RunResults, Work, WorkerEvent, WorkerRequest};

/// Thumbnails shown per class card: a class of thousands shows these and a count of the rest, so
/// the page stays light.
const SHOWN_THUMBNAILS: usize = 48;

/// A thumbnail the page shows for an image the worker holds.
#[derive(Debug, Clone, PartialEq)]
struct Thumb {
    id: u64,
    name: String,
    /// An object URL of the JPEG: released with [`Thumb::release`] when the picture goes.
    url: String,
}

impl Thumb {
    fn release(&self) {
        let _ = web_sys::Url::revoke_object_url(&self.url);
    }
}

#[derive(Debug, Clone, PartialEq)]
struct ClassView {
    /// The class's identity for the worker and the storage; stable across renames and deletes.
    id: ClassId,
    name: String,
    images: Vec<Thumb>,
}

/// Where training is.
#[derive(Debug, Clone, PartialEq, Default)]
struct ProgressView {
    phase: String,
    epoch: usize,
    epochs: usize,
    batch: usize,
    batches: usize,
    eta_seconds: Option<f64>,
    caching: Option<(usize, usize)>,
    /// 0..=1 over the whole run.
    fraction: f64,
    /// `done` or `stopped` once training ended.
    done: Option<String>,
}

/// The strategy choices the page offers, by their `strategy-<name>` hook.
const STRATEGIES: [(&str, &str); 5] = [
    ("head-only", "Head only"),
    ("partial-freeze", "Partial freeze"),
    ("staged", "Staged unfreezing"),
    ("full", "Full fine-tune"),
    ("scratch", "From scratch"),
];

/// All the page's state: signals are `Copy`, so the whole struct is.
#[derive(Clone, Copy)]
struct Studio {
    device: RwSignal<Option<(String, bool)>>,
    classes: RwSignal<Vec<ClassView>>,
    messages: RwSignal<Vec<(bool, String)>>,
    model: RwSignal<ModelKind>,
    /// Embedding speed measured here, per model.
    speeds: RwSignal<Vec<(ModelKind, f64)>>,
    measuring: RwSignal<Option<(usize, usize)>>,
    recommendation: RwSignal<Option<Recommendation>>,
    strategy: RwSignal<Option<String>>,
    epochs: RwSignal<Option<usize>>,
    lr: RwSignal<Option<f64>>,
    batch: RwSignal<usize>,
    trainable_blocks: RwSignal<usize>,
    augment: RwSignal<bool>,
    batch_norm: RwSignal<Option<BatchNormStatistics>>,
    /// The stored project is back (or there was none): changes to the view are saved from now on.
    restored: RwSignal<bool>,
    training: RwSignal<bool>,
    progress: RwSignal<Option<ProgressView>>,
    history: RwSignal<Vec<EpochPoint>>,
    summary: RwSignal<Option<TrainSummary>>,
    samples: RwSignal<Vec<(u64, usize, usize)>>,
    selected_cell: RwSignal<Option<(usize, usize)>>,
    model_ready: RwSignal<Option<Vec<String>>>,
    prediction: RwSignal<Option<Vec<(String, f32)>>>,
    predicted_image: RwSignal<Option<String>>,
    export_url: RwSignal<Option<(String, String)>>,
    /// What the webcam feeds: a class (hold to record) or the try-it predictions.
    camera: RwSignal<Option<CameraTarget>>,
    /// Pictures (count) and whether the trained model are in this session only: the storage was full.
    unsaved: RwSignal<(usize, bool)>,
    /// Where the last run stopped, if it can go on from there.
    paused: RwSignal<Option<String>>,
}

/// Where webcam frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CameraTarget {
    Class(ClassId),
    Predict,
}

impl Studio {
    fn new() -> Self {
        Self {
            device: RwSignal::new(None),
            classes: RwSignal::new(Vec::new()),
            messages: RwSignal::new(Vec::new()),
            model: RwSignal::new(ModelKind::MobileNetV2),
            speeds: RwSignal::new(Vec::new()),
            measuring: RwSignal::new(None),
            recommendation: RwSignal::new(None),
            strategy: RwSignal::new(None),
            epochs: RwSignal::new(None),
            lr: RwSignal::new(None),
            batch: RwSignal::new(16),
            trainable_blocks: RwSignal::new(5),
            augment: RwSignal::new(false),
            batch_norm: RwSignal::new(None),
            restored: RwSignal::new(false),
            training: RwSignal::new(false),
            progress: RwSignal::new(None),
            history: RwSignal::new(Vec::new()),
            summary: RwSignal::new(None),
            samples: RwSignal::new(Vec::new()),
            selected_cell: RwSignal::new(None),
            model_ready: RwSignal::new(None),
            prediction: RwSignal::new(None),
            predicted_image: RwSignal::new(None),
            export_url: RwSignal::new(None),
            camera: RwSignal::new(None),
            unsaved: RwSignal::new((0, false)),
            paused: RwSignal::new(None),
        }
    }

    fn say(&self, error: bool, message: impl Into<String>) {
        let message = message.into();
        self.messages.update(|messages| {
            messages.push((error, message));
            let excess = messages.len().saturating_sub(8);
            messages.drain(..excess);
        });
    }

    /// The thumbnail of image `id`, wherever it is.
    fn thumb(&self, id: u64) -> Option<Thumb> {
        self.classes
            .with(|classes| classes.iter().flat_map(|c| &c.images).find(|t| t.id == id).cloned())
    }

    /// The data changed: an earlier recommendation no longer describes it.
    fn data_changed(&self) {
        self.recommendation.set(None);
        // A stopped run goes on only on the pictures it trained on.
        if !self.training.get_untracked() {
            self.paused.set(None);
        }
    }

    /// Shows `url` (an object URL) as the picture being classified, releasing the one shown before.
    fn show_predicted(&self, url: Option<String>) {
        if let Some(old) = self.predicted_image.get_untracked() {
            let _ = web_sys::Url::revoke_object_url(&old);
        }
        self.predicted_image.set(url);
    }

    /// Whether class `id` is still there.
    fn has_class(&self, id: ClassId) -> bool {
        self.classes
            .with_untracked(|classes| classes.iter().any(|c| c.id == id))
    }

    /// Adds a class named `name` (or "Class N"), returning its id; pictures for it can be sent at
    /// once (the worker handles requests in the order they were sent).
    fn add_class(&self, name: Option<String>, bridge: &Bridge) -> ClassId {
        let id = ClassId::fresh();
        let count = self.classes.with_untracked(Vec::len);
        let name = name.unwrap_or_else(|| format!("Class {}", count + 1));
        self.classes.update(|classes| {
            classes.push(ClassView {
                id,
                name: name.clone(),
                images: Vec::new(),
            })
        });
        bridge.send(&WorkerRequest::AddClass { id, name }, Vec::new());
        self.data_changed();
        id
    }

    fn rename_class(&self, id: ClassId, name: String, bridge: &Bridge) {
        self.classes.update(|classes| {
            if let Some(class) = classes.iter_mut().find(|c| c.id == id) {
                class.name = name.clone();
            }
        });
        bridge.send(&WorkerRequest::RenameClass { id, name }, Vec::new());
    }

    /// Deletes class `id` with its pictures (their thumbnails' object URLs are released).
    fn remove_class(&self, id: ClassId, bridge: &Bridge) {
        let mut gone = None;
        self.classes.update(|classes| {
            if let Some(position) = classes.iter().position(|c| c.id == id) {
                gone = Some(classes.remove(position));
            }
        });
        if let Some(class) = gone {
            class.images.iter().for_each(Thumb::release);
        }
        if self.camera.get_untracked() == Some(CameraTarget::Class(id)) {
            self.camera.set(None);
        }
        bridge.send(&WorkerRequest::RemoveClass { id }, Vec::new());
        self.data_changed();
    }

    fn handle(&self, event: WorkerEvent, payloads: Vec<Vec<u8>>) {
        match event {
            WorkerEvent::Ready { device, gpu } => self.device.set(Some((device, gpu))),
            WorkerEvent::ProjectRestored { classes } => {
                self.classes.set(
                    classes
                        .into_iter()
                        .map(|class| ClassView {
                            id: class.id,
                            name: class.name,
                            images: Vec::new(),
                        })
                        .collect(),
                );
                self.say(false, "Your project is back as you left it.");
            }
            WorkerEvent::ImagesAdded { class, added, rejected } => {
                // A class deleted meanwhile: the worker removes these pictures with it.
                if self.has_class(class) {
                    let thumbs: Vec<Thumb> = added
                        .into_iter()
                        .zip(payloads)
                        .map(|(info, jpeg)| Thumb {
                            id: info.id,
                            name: info.name,
                            url: blob_url(&jpeg, "image/jpeg"),
                        })
                        .collect();
                    self.classes.update(|classes| {
                        if let Some(view) = classes.iter_mut().find(|c| c.id == class) {
                            view.images.extend(thumbs);
                        }
                    });
                }
                // A few refusals one by one; many (a folder of thousands) in one message.
                if rejected.len() <= 3 {
                    for file in rejected {
                        self.say(true, format!("{} was not added: {}", file.name, file.reason));
                    }
                } else {
                    let listed: Vec<String> = rejected
                        .iter()
                        .take(3)
                        .map(|file| format!("{} ({})", file.name, file.reason))
                        .collect();
                    self.say(
                        true,
                        format!(
                            "{} files were not added: {}, and {} more.",
                            rejected.len(),
                            listed.join("; "),
                            rejected.len() - 3
                        ),
                    );
                }
                self.data_changed();
            }
            WorkerEvent::Measuring { done, total } => self.measuring.set(Some((done, total))),
            WorkerEvent::Recommendation(recommendation) => {
                self.measuring.set(None);
                let name = recommendation.strategy.name().to_string();
                if let Strategy::PartialFreeze { trainable_blocks } = recommendation.strategy {
                    self.trainable_blocks.set(trainable_blocks);
                }
                self.strategy.set(Some(name));
                self.recommendation.set(Some(*recommendation));
            }
            WorkerEvent::ModelSpeed {
                model,
                images_per_second,
            } => self.speeds.update(|speeds| {
                speeds.retain(|(m, _)| *m != model);
                speeds.push((model, images_per_second));
            }),
            WorkerEvent::Train(event) => self.on_train_event(*event),
            WorkerEvent::Evaluated { samples } => self.samples.set(samples),
            WorkerEvent::ModelReady { classes, .. } => self.model_ready.set(Some(classes)),
            WorkerEvent::ViewRestored { view } => {
                if let Some(view) = view {
                    self.restore_view(*view);
                }
                self.restored.set(true);
            }
            WorkerEvent::Prediction { top } => self.prediction.set(Some(top)),
            WorkerEvent::Exported { file_name } => {
                if let Some(bytes) = payloads.into_iter().next() {
                    let url = blob_url(&bytes, "application/octet-stream");
                    download(&url, &file_name);
                    if let Some((old, _)) = self.export_url.get_untracked() {
                        let _ = web_sys::Url::revoke_object_url(&old);
                    }
                    self.export_url.set(Some((url, file_name)));
                }
            }
            WorkerEvent::Failed { request, message } => {
                if request == Work::Train {
                    self.training.set(false);
                }
                if request == Work::Recommend {
                    self.measuring.set(None);
                }
                self.say(true, message);
            }
            WorkerEvent::Notice { message } => self.say(false, message),
            WorkerEvent::Unsaved { pictures, model } => self.unsaved.set((pictures, model)),
            WorkerEvent::Paused { at } => self.paused.set(at),
        }
    }

    fn on_train_event(&self, event: TrainEvent) {
        match event {
            TrainEvent::Started { phases, .. } => {
                self.progress.set(Some(ProgressView {
                    epochs: phases.iter().map(|p| p.epochs).sum(),
                    ..ProgressView::default()
                }));
            }
            TrainEvent::Notice { message } => self.say(false, message),
            TrainEvent::PhaseStart { phase, .. } => self.progress.update(|p| {
                if let Some(p) = p {
                    p.phase = phase;
                    p.caching = None;
                }
            }),
            TrainEvent::Caching { phase, done, total } => self.progress.update(|p| {
                if let Some(p) = p {
                    // The cache is built before its phase starts: name the phase here already.
                    p.phase = phase;
                    p.caching = Some((done, total));
                }
            }),
            TrainEvent::Batch {
                phase,
                epoch,
                batch,
                batches,
                ..
            } => self.progress.update(|p| {
                if let Some(p) = p {
                    p.phase = phase;
                    p.caching = None;
                    p.epoch = epoch;
                    p.batch = batch;
                    p.batches = batches;
                    let done = (epoch - 1) as f64 + batch as f64 / batches.max(1) as f64;
                    p.fraction = (done / p.epochs.max(1) as f64).min(1.0);
                }
            }),
            TrainEvent::Epoch {
                epoch,
                epochs,
                train_loss,
                train_accuracy,
                val_loss,
                val_accuracy,
                eta_seconds,
                ..
            } => {
                self.progress.update(|p| {
                    if let Some(p) = p {
                        p.epochs = epochs;
                        p.eta_seconds = Some(eta_seconds);
                        p.fraction = (epoch as f64 / epochs.max(1) as f64).min(1.0);
                    }
                });
                self.history.update(|h| {
                    h.push(EpochPoint {
                        epoch,
                        train_loss,
                        train_accuracy,
                        val_loss,
                        val_accuracy,
                    })
                });
            }
            TrainEvent::EarlyStop { epoch, best_epoch, .. } => self.say(
                false,
                format!("Stopped early after epoch {epoch}: no better validation result since epoch {best_epoch}."),
            ),
            // What the optimizer held is for the tests and the CLI's JSON; the page shows the epochs.
            TrainEvent::PhaseEnd { .. } => {}
            TrainEvent::Done(summary) => {
                self.training.set(false);
                self.progress.update(|p| {
                    if let Some(p) = p {
                        // A stopped run's bar shows how far it got (Continue goes on from there).
                        if !summary.cancelled {
                            p.fraction = 1.0;
                        }
                        p.eta_seconds = None;
                        p.done = Some(if summary.cancelled { "stopped" } else { "done" }.to_string());
                        p.epoch = summary.epochs;
                        p.epochs = summary.epochs;
                    }
                });
                if summary.cancelled {
                    self.say(false, "Training stopped; the best model so far is kept.");
                }
                self.summary.set(Some(summary));
            }
        }
    }

    /// The training configuration from the chosen strategy and the advanced settings.
    fn config(&self) -> Option<TrainConfig> {
        let mut config = untrack(|| self.defaults())?;
        if let Some(epochs) = self.epochs.get_untracked() {
            config.epochs = epochs.max(1);
        }
        config.lr = self.lr.get_untracked();
        config.batch_size = self.batch.get_untracked().max(1);
        config.augment = self.augment.get_untracked();
        config.batch_norm = self.batch_norm.get_untracked();
        Some(config)
    }

    /// The engine's defaults for the chosen strategy (tracked).
    fn defaults(&self) -> Option<TrainConfig> {
        let strategy = match self.strategy.get()?.as_str() {
            "head-only" => Strategy::HeadOnly,
            "partial-freeze" => Strategy::PartialFreeze {
                trainable_blocks: self.trainable_blocks.get().max(1),
            },
            "staged" => Strategy::STAGED_DEFAULT,
            "full" => Strategy::FullFineTune,
            "scratch" => Strategy::FromScratch,
            _ => return None,
        };
        Some(TrainConfig::new(strategy))
    }

    /// What a reload should show again (tracked: read inside an effect, it reruns on any change).
    fn view(&self) -> ProjectView {
        ProjectView {
            model: self.model.get(),
            strategy: self.strategy.get(),
            epochs: self.epochs.get(),
            lr: self.lr.get(),
            batch: self.batch.get(),
            trainable_blocks: self.trainable_blocks.get(),
            augment: self.augment.get(),
            batch_norm: self.batch_norm.get(),
            speeds: self.speeds.get(),
            recommendation: self.recommendation.get(),
            results: self.summary.get().map(|summary| RunResults {
                history: self.history.get(),
                summary,
                samples: self.samples.get(),
            }),
        }
    }

    fn restore_view(&self, view: ProjectView) {
        self.model.set(view.model);
        self.strategy.set(view.strategy);
        self.epochs.set(view.epochs);
        self.lr.set(view.lr);
        self.batch.set(view.batch);
        self.trainable_blocks.set(view.trainable_blocks);
        self.augment.set(view.augment);
        self.batch_norm.set(view.batch_norm);
        self.speeds.set(view.speeds);
        self.recommendation.set(view.recommendation);
        if let Some(results) = view.results {
            self.history.set(results.history);
            self.samples.set(results.samples);
            self.summary.set(Some(results.summary));
        }
    }
}

/// A train and a validation value of one epoch.
type CurvePoint = (Option<f64>, Option<f64>);

/// An object URL for bytes (thumbnails, the exported model).
fn blob_url(bytes: &[u8], mime: &str) -> String {
    let parts = Array::of1(&Uint8Array::from(bytes));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
        .and_then(|blob| web_sys::Url::create_object_url_with_blob(&blob))
        .unwrap_or_default()
}

/// Starts a download of `url` as `file_name`.
fn download(url: &str, file_name: &str) {
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
const FILES_PER_MESSAGE: usize = 32;

/// The files of a list (from an input or a drop), each with its path (for a folder:
/// `folder/class/file`). `File`s are handles: nothing is read yet.
fn file_list(files: &web_sys::FileList) -> Vec<(String, web_sys::File)> {
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
async fn read_first_file(input: &web_sys::HtmlInputElement) -> Option<(String, Vec<u8>)> {
    let (path, file) = input.files().map(|list| file_list(&list))?.into_iter().next()?;
    input.set_value("");
    Some((path, read_file(&file).await?))
}

/// A file's bytes, if the browser can read it.
async fn read_file(file: &web_sys::File) -> Option<Vec<u8>> {
    let buffer = wasm_bindgen_futures::JsFuture::from(file.array_buffer()).await.ok()?;
    Some(Uint8Array::new(&buffer).to_vec())
}

/// Reads `files` and sends them to the worker for class `class`, [`FILES_PER_MESSAGE`] at a time. A
/// file the browser cannot read is reported by name; when the class is deleted meanwhile, the files
/// not sent yet are left out, and said so.
async fn send_files(studio: Studio, bridge: &Bridge, class: ClassId, files: Vec<(String, web_sys::File)>) {
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
            match wasm_bindgen_futures::JsFuture::from(file.array_buffer()).await {
                Ok(buffer) => {
                    names.push(name);
                    payloads.push(Uint8Array::new(&buffer).to_vec());
                }
                Err(_) => studio.say(
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
fn on_drop<F, Work>(studio: Studio, dragging: RwSignal<bool>, then: F) -> impl Fn(leptos::ev::DragEvent) + 'static
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
fn drag_over(dragging: RwSignal<bool>) -> impl Fn(leptos::ev::DragEvent) + 'static {
    move |ev| {
        ev.prevent_default();
        ev.stop_propagation();
        dragging.set(true);
    }
}

/// Makes a class of each of `groups` (or adds to the class of that name) and sends it its `files`
/// (`groups` index into `files`).
async fn add_grouped(
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
fn left_out(files: usize, place: &str) -> String {
    if files == 1 {
        format!("1 file {place} is in no class and was left out")
    } else {
        format!("{files} files {place} are in no class and were left out")
    }
}

/// Registers the service worker (`sw.js`) that keeps the app usable offline once loaded. Through
/// `Reflect`: web-sys's service worker types would add features, and with them a rebuild of wgpu.
fn register_service_worker(studio: Studio) {
    use js_sys::{Function, Promise, Reflect};
    let Some(navigator) = web_sys::window().map(|w| w.navigator()) else {
        return;
    };
    let Ok(container) = Reflect::get(&navigator, &"serviceWorker".into()) else {
        return;
    };
    if container.is_undefined() {
        return;
    }
    let Ok(register) = Reflect::get(&container, &"register".into()).and_then(|f| f.dyn_into::<Function>()) else {
        return;
    };
    if let Ok(promise) = register.call1(&container, &"./sw.js".into()) {
        let promise: Promise = promise.unchecked_into();
        leptos::task::spawn_local(async move {
            if let Err(error) = wasm_bindgen_futures::JsFuture::from(promise).await {
                studio.say(false, format!("Offline use is not available here: {error:?}"));
            }
        });
    }
}

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let studio = Studio::new();
    register_service_worker(studio);
    let bridge = Bridge::spawn(move |event, payloads| studio.handle(event, payloads));
    let bridge = match bridge {
        Ok(bridge) => bridge,
        Err(message) => {
            return view! {
                <main class="graft">
                    <h1>"Graft"</h1>
                    <p class="error">{message}</p>
                </main>
            }
            .into_any();
        }
    };
    // Fault injection for the tests (see `WorkerRequest::InjectFault`).
    let query = window().location().search().unwrap_or_default();
    if query.contains("fault=gpu-out-of-memory") {
        bridge.send(
            &WorkerRequest::InjectFault {
                fault: InjectedFault::GpuOutOfMemory,
            },
            Vec::new(),
        );
    }
    provide_context(studio);
    BRIDGE.with(|cell| {
        let _ = cell.set(bridge);
    });
    // What the page shows is kept with the project, once the stored one is back (so that the
    // page's defaults never overwrite it).
    Effect::new(move |_| {
        let view = Box::new(studio.view());
        if studio.restored.get() {
            self::bridge().send(&WorkerRequest::SaveView { view }, Vec::new());
        }
    });
    let device = studio.device;
    view! {
        <main class="graft">
            <header>
                <h1>"Graft"</h1>
                <p class="tagline">
                    "Fine-tune an ImageNet-pretrained CNN on your own pictures. Nothing leaves this device."
                </p>
                <DeviceBadge label=device.read_only()/>
            </header>
            <Messages/>
            <DataPanel/>
            <ModelPicker/>
            <RecommendationPanel/>
            <TrainingPanel/>
            <ResultsPanel/>
            <TryPanel/>
            <Webcam/>
        </main>
    }
    .into_any()
}

fn studio() -> Studio {
    expect_context::<Studio>()
}

thread_local! {
    /// The page's one worker (not `Send`, so not in Leptos' context).
    static BRIDGE: std::cell::OnceCell<Bridge> = const { std::cell::OnceCell::new() };
}

fn bridge() -> Bridge {
    BRIDGE.with(|cell| {
        cell.get()
            .cloned()
            .expect("the worker is spawned before the page renders")
    })
}

#[component]
fn Messages() -> impl IntoView {
    let studio = studio();
    // What a reload would lose stays in sight until it is saved, not only in a message that scrolls.
    let unsaved = move || {
        let (pictures, model) = studio.unsaved.get();
        let mut parts = Vec::new();
        if pictures > 0 {
            parts.push(if pictures == 1 {
                "1 picture".to_string()
            } else {
                format!("{pictures} pictures")
            });
        }
        if model {
            parts.push("the trained model".to_string());
        }
        let advice = match (pictures > 0, model) {
            (true, false) => "A reload would lose them: remove pictures you do not need to make room.",
            (false, true) => "A reload would lose it: export it to keep it, or remove pictures to make room.",
            _ => "A reload would lose them: export the model, or remove pictures to make room.",
        };
        (!parts.is_empty()).then(|| {
            view! {
                <p class="unsaved" data-testid="unsaved" role="status">
                    "Not saved in this browser (its storage is full): " {parts.join(" and ")} ". " {advice}
                </p>
            }
        })
    };
    view! {
        {unsaved}
        <ul class="messages" data-testid="messages">
            {move || {
                studio
                    .messages
                    .get()
                    .into_iter()
                    .map(|(error, text)| view! { <li class:error=error>{text}</li> })
                    .collect_view()
            }}
        </ul>
    }
}

#[component]
fn DataPanel() -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let add = {
        let bridge = bridge.clone();
        move |_| {
            studio.add_class(None, &bridge);
        }
    };
    let folder = {
        let bridge = bridge.clone();
        move |ev: leptos::ev::Event| {
            let input: web_sys::HtmlInputElement = event_target(&ev);
            let bridge = bridge.clone();
            leptos::task::spawn_local(async move {
                let files = input.files().map(|list| file_list(&list)).unwrap_or_default();
                input.set_value("");
                // `chosen/class/file`: the folder's subfolders are the classes.
                let paths: Vec<String> = files.iter().map(|(path, _)| path.clone()).collect();
                let (groups, loose) = crate::folders::group_by_class(&paths);
                if !loose.is_empty() {
                    studio.say(
                        false,
                        format!(
                            "{}: put each class's pictures in a subfolder named after it.",
                            left_out(loose.len(), "directly in the chosen folder")
                        ),
                    );
                }
                add_grouped(studio, &bridge, files, groups).await;
            });
        }
    };
    // Folders dropped onto the panel (not onto a class): classes from their names.
    let dragging = RwSignal::new(false);
    let drop = {
        let bridge = bridge.clone();
        on_drop(studio, dragging, move |files| {
            let bridge = bridge.clone();
            async move {
                let paths: Vec<String> = files.iter().map(|(path, _)| path.clone()).collect();
                let (groups, loose) = crate::folders::group_dropped(&paths);
                if !loose.is_empty() {
                    studio.say(
                        false,
                        format!(
                            "{}: drop pictures onto their class, or drop a folder per class (or a folder of such folders).",
                            left_out(loose.len(), "dropped outside any folder")
                        ),
                    );
                } else if groups.is_empty() {
                    studio.say(false, "Nothing was added: no pictures were found in what was dropped.");
                }
                add_grouped(studio, &bridge, files, groups).await;
            }
        })
    };
    // `webkitdirectory` (choose a folder) is not an attribute Leptos knows: set it once mounted.
    let folder_input = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if let Some(input) = folder_input.get() {
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });
    view! {
        <section
            class="panel data"
            class:dragging=move || dragging.get()
            data-testid="data-drop"
            on:dragover=drag_over(dragging)
            on:dragleave=move |_| dragging.set(false)
            on:drop=drop
        >
            <h2>"1. Your images"</h2>
            <p class="hint">
                "Make a class per kind of thing and add or drop its pictures, or choose or drop a folder whose subfolders are the classes (a folder dropped here becomes a class named after it). The × on a picture removes it."
            </p>
            <div class="toolbar">
                <button data-testid="add-class" on:click=add>"+ Add class"</button>
                <label class="button">
                    "Choose a folder…"
                    <input
                        type="file"
                        data-testid="folder-input"
                        node_ref=folder_input
                        multiple=true
                        on:change=folder
                    />
                </label>
            </div>
            <div class="classes">
                {move || {
                    studio
                        .classes
                        .get()
                        .into_iter()
                        .enumerate()
                        .map(|(index, class)| view! { <ClassCard index=index class=class/> })
                        .collect_view()
                }}
            </div>
        </section>
    }
}

#[component]
fn ClassCard(index: usize, class: ClassView) -> impl IntoView {
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

#[component]
fn ModelPicker() -> impl IntoView {
    let studio = studio();
    view! {
        <section class="panel models">
            <h2>"2. Pretrained model"</h2>
            <div class="cards">
                {ModelKind::ALL
                    .into_iter()
                    .map(|kind| {
                        let card = kind.card();
                        let choose = move |_| {
                            studio.model.set(kind);
                            studio.data_changed();
                        };
                        view! {
                            <button
                                class="model-card"
                                class:chosen=move || studio.model.get() == kind
                                data-testid=format!("model-{}", card.name)
                                on:click=choose
                            >
                                <strong>{card.display_name}</strong>
                                <span>{format!("ImageNet top-1 {:.1}%", card.imagenet_top1_percent)}</span>
                                <span>{format!("{} px input · {}", card.input_size, card.licence)}</span>
                                <span>
                                    {
                                        let parameters = kind.architecture().body_parameters();
                                        format!(
                                            "{:.1} M parameters to fine-tune · {:.1} MB",
                                            parameters as f64 / 1e6,
                                            parameters as f64 * 4.0 / 1e6,
                                        )
                                    }
                                </span>
                                <span class="speed">
                                    {move || {
                                        studio
                                            .speeds
                                            .get()
                                            .iter()
                                            .find(|(m, _)| *m == kind)
                                            .map_or(
                                                "speed here: not measured yet".to_string(),
                                                |(_, speed)| format!("{speed:.1} images/s here (measured)"),
                                            )
                                    }}
                                </span>
                            </button>
                        }
                    })
                    .collect_view()}
            </div>
        </section>
    }
}

#[component]
fn RecommendationPanel() -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let defaults = move || studio.defaults();
    let analyse = move |_| {
        studio.measuring.set(Some((0, 0)));
        bridge.send(
            &WorkerRequest::Recommend {
                model: studio.model.get_untracked(),
            },
            Vec::new(),
        );
    };
    view! {
        <section class="panel recommend">
            <h2>"3. Strategy"</h2>
            <button data-testid="analyse-button" on:click=analyse disabled=move || studio.measuring.get().is_some()>
                "Measure my data and recommend"
            </button>
            {move || {
                studio
                    .measuring
                    .get()
                    .map(|(done, total)| view! { <p class="hint" data-testid="measuring">{format!("Measuring… {done}/{total} images")}</p> })
            }}
            {move || studio.recommendation.get().map(|r| view! { <RecommendationView recommendation=r/> })}
            <fieldset class="strategies">
                <legend>"Strategy (yours to override)"</legend>
                {STRATEGIES
                    .into_iter()
                    .map(|(name, label)| {
                        let recommended = move || {
                            studio.recommendation.get().is_some_and(|r| r.strategy.name() == name)
                        };
                        view! {
                            <label class="strategy">
                                <input
                                    type="radio"
                                    name="strategy"
                                    data-testid=format!("strategy-{name}")
                                    prop:checked=move || studio.strategy.get().as_deref() == Some(name)
                                    on:change=move |_| studio.strategy.set(Some(name.to_string()))
                                />
                                {label}
                                {move || recommended().then(|| view! { <em>" (recommended)"</em> })}
                            </label>
                        }
                    })
                    .collect_view()}
            </fieldset>
            <details class="advanced">
                <summary>"Advanced settings"</summary>
                <label>
                    "Epochs "
                    <input
                        type="number"
                        min="1"
                        data-testid="epochs-input"
                        placeholder=move || defaults().map(|c| c.epochs.to_string())
                        prop:value=move || studio.epochs.get().map(|e| e.to_string()).unwrap_or_default()
                        on:change=move |ev| studio.epochs.set(event_target_value(&ev).parse().ok())
                    />
                </label>
                <label>
                    "Learning rate "
                    <input
                        type="number"
                        step="any"
                        data-testid="lr-input"
                        placeholder=move || defaults().map(|c| c.base_lr().to_string())
                        prop:value=move || studio.lr.get().map(|lr| lr.to_string()).unwrap_or_default()
                        on:change=move |ev| studio.lr.set(event_target_value(&ev).parse().ok())
                    />
                </label>
                <label>
                    "Batch "
                    <input
                        type="number"
                        min="1"
                        prop:value=move || studio.batch.get().to_string()
                        on:change=move |ev| {
                            if let Ok(batch) = event_target_value(&ev).parse() {
                                studio.batch.set(batch)
                            }
                        }
                    />
                </label>
                <label>
                    "Trainable blocks (partial freeze) "
                    <input
                        type="number"
                        min="1"
                        prop:value=move || studio.trainable_blocks.get().to_string()
                        on:change=move |ev| {
                            if let Ok(k) = event_target_value(&ev).parse() {
                                studio.trainable_blocks.set(k)
                            }
                        }
                    />
                </label>
                <label>
                    <input
                        type="checkbox"
                        prop:checked=move || studio.augment.get()
                        on:change=move |ev| studio.augment.set(event_target_checked(&ev))
                    />
                    " Augmentation (random crops, flips, colour jitter)"
                </label>
                <label title="What the BatchNorm layers of the blocks that train normalise with. The pretrained statistics suit unfreezing a base once its new head has trained (staged); each batch's suit pictures unlike ImageNet's and training from scratch.">
                    "BatchNorm while training "
                    <select
                        data-testid="batch-norm-select"
                        prop:value=move || match studio.batch_norm.get() {
                            None => "default",
                            Some(BatchNormStatistics::Running) => "running",
                            Some(BatchNormStatistics::Batch) => "batch",
                        }
                        on:change=move |ev| {
                            studio
                                .batch_norm
                                .set(match event_target_value(&ev).as_str() {
                                    "running" => Some(BatchNormStatistics::Running),
                                    "batch" => Some(BatchNormStatistics::Batch),
                                    _ => None,
                                })
                        }
                    >
                        <option value="default">
                            {move || match defaults().map(|c| c.batch_norm_statistics()) {
                                Some(BatchNormStatistics::Batch) => "strategy default (each batch's statistics)",
                                _ => "strategy default (the pretrained statistics)",
                            }}
                        </option>
                        <option value="running">"the pretrained statistics, kept"</option>
                        <option value="batch">"each batch's statistics"</option>
                    </select>
                </label>
            </details>
        </section>
    }
}

#[component]
fn RecommendationView(recommendation: Recommendation) -> impl IntoView {
    // The quadrant chart: x = images in the smallest class against the "large" threshold (log scale,
    // the threshold in the middle), y = similarity.
    let threshold = recommendation.large_threshold.max(1) as f64;
    let ratio = (recommendation.min_per_class.max(1) as f64 / threshold).log10();
    let x = (100.0 + ratio * 60.0).clamp(8.0, 192.0);
    let y = (200.0 - recommendation.similarity * 200.0).clamp(8.0, 192.0);
    let label = |q: Quadrant, text: &'static str| {
        let active = recommendation.quadrant == q;
        (text, active)
    };
    let quadrants = [
        (5.0, 18.0, label(Quadrant::SmallSimilar, "small · similar")),
        (105.0, 18.0, label(Quadrant::LargeSimilar, "large · similar")),
        (5.0, 190.0, label(Quadrant::SmallDissimilar, "small · dissimilar")),
        (105.0, 190.0, label(Quadrant::LargeDissimilar, "large · dissimilar")),
    ];
    view! {
        <div class="recommendation" data-testid="recommendation">
            <svg class="quadrant" data-testid="quadrant" viewBox="0 0 200 200" width="220" height="220">
                <rect x="0" y="0" width="200" height="200" class="frame"/>
                <line x1="100" y1="0" x2="100" y2="200" class="axis"/>
                <line x1="0" y1="100" x2="200" y2="100" class="axis"/>
                {quadrants
                    .into_iter()
                    .map(|(x, y, (text, active))| {
                        view! {
                            <text x=x y=y class:active=active class="quadrant-label">
                                {text}
                            </text>
                        }
                    })
                    .collect_view()}
                <circle cx=x cy=y r="6" class="point"/>
                <text x="100" y="112" class="axis-label" text-anchor="middle">
                    {format!("{} images per class →", recommendation.large_threshold)}
                </text>
                <text x="196" y="96" class="axis-label" text-anchor="end">"similarity ↑"</text>
            </svg>
            <div class="verdict">
                <p class="quadrant-name">
                    <strong>{recommendation.quadrant.name()}</strong>
                    {format!(" → {}", recommendation.strategy.name())}
                </p>
                <p class="explanation">{recommendation.explanation.clone()}</p>
            </div>
        </div>
    }
}

#[component]
fn TrainingPanel() -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let train = {
        let bridge = bridge.clone();
        move |_| {
            let Some(config) = studio.config() else {
                studio.say(
                    true,
                    "Choose a strategy first (or measure your data for a recommendation).",
                );
                return;
            };
            studio.training.set(true);
            studio.paused.set(None);
            studio.history.set(Vec::new());
            studio.summary.set(None);
            studio.samples.set(Vec::new());
            studio.selected_cell.set(None);
            studio.progress.set(Some(ProgressView::default()));
            bridge.send(
                &WorkerRequest::Train {
                    model: studio.model.get_untracked(),
                    config,
                },
                Vec::new(),
            );
        }
    };
    let go_on = {
        let bridge = bridge.clone();
        move |_| {
            studio.training.set(true);
            studio.paused.set(None);
            studio.summary.set(None);
            studio.samples.set(Vec::new());
            studio.selected_cell.set(None);
            studio.progress.update(|p| {
                if let Some(p) = p {
                    p.done = None;
                }
            });
            bridge.send(&WorkerRequest::Continue, Vec::new());
        }
    };
    let stop = move |_| bridge.send(&WorkerRequest::Stop, Vec::new());
    view! {
        <section class="panel training">
            <h2>"4. Train"</h2>
            <div class="toolbar">
                <button data-testid="train-button" on:click=train disabled=move || studio.training.get()>
                    "Train"
                </button>
                <button data-testid="stop-button" on:click=stop disabled=move || !studio.training.get()>
                    "Stop"
                </button>
                <button
                    data-testid="continue-button"
                    hidden=move || studio.paused.get().is_none() || studio.training.get()
                    title=move || {
                        studio.paused.get().map(|at| format!("Go on with the stopped run, {at}")).unwrap_or_default()
                    }
                    on:click=go_on
                >
                    "Continue"
                </button>
            </div>
            {move || studio.progress.get().map(|p| view! { <ProgressBar progress=p/> })}
            <Curves/>
        </section>
    }
}

#[component]
fn ProgressBar(progress: ProgressView) -> impl IntoView {
    let text = match (&progress.done, progress.caching) {
        (Some(done), _) => format!(
            "Training {done} after {} epochs ({} phase last)",
            progress.epochs, progress.phase
        ),
        (None, caching) => match caching {
            Some((done, total)) => format!(
                "{}: computing the frozen layers once, {done}/{total} images",
                progress.phase
            ),
            None if progress.epochs == 0 => "Starting…".to_string(),
            None => format!(
                "{} · epoch {}/{} · batch {}/{}{}",
                progress.phase,
                progress.epoch,
                progress.epochs,
                progress.batch,
                progress.batches,
                progress
                    .eta_seconds
                    .map(|eta| format!(" · {eta:.0} s left"))
                    .unwrap_or_default()
            ),
        },
    };
    view! {
        <div class="progress" data-testid="progress">
            <progress max="1" value=progress.fraction></progress>
            <span>{text}</span>
        </div>
    }
}

/// Loss and accuracy per epoch, train and validation, as SVG polylines.
#[component]
fn Curves() -> impl IntoView {
    let studio = studio();
    let chart = move |title: &'static str, pick: fn(&EpochPoint) -> (Option<f64>, Option<f64>)| {
        let history = studio.history.get();
        if history.is_empty() {
            return None;
        }
        let values: Vec<(Option<f64>, Option<f64>)> = history.iter().map(pick).collect();
        let max = values
            .iter()
            .flat_map(|(a, b)| [*a, *b])
            .flatten()
            .fold(f64::MIN_POSITIVE, f64::max);
        let n = history.len().max(2) - 1;
        let line = |select: fn(&CurvePoint) -> Option<f64>| {
            values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    select(v).map(|y| {
                        format!(
                            "{:.1},{:.1}",
                            10.0 + 280.0 * i as f64 / n as f64,
                            110.0 - 100.0 * y / max
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        Some(view! {
            <figure class="chart">
                <svg viewBox="0 0 300 120" width="300" height="120">
                    <line x1="10" y1="110" x2="290" y2="110" class="axis"/>
                    <polyline points=line(|v| v.0) class="train"/>
                    <polyline points=line(|v| v.1) class="val"/>
                </svg>
                <figcaption>
                    {format!("{title} (max {max:.2}) — ")}
                    <span class="train">"train"</span>
                    ", "
                    <span class="val">"validation"</span>
                </figcaption>
            </figure>
        })
    };
    view! {
        <div class="curves">
            {move || chart("Loss", |p| (Some(p.train_loss), p.val_loss))}
            {move || chart("Accuracy", |p| (Some(p.train_accuracy), p.val_accuracy))}
        </div>
    }
}

#[component]
fn ResultsPanel() -> impl IntoView {
    let studio = studio();
    view! {
        {move || {
            studio
                .summary
                .get()
                .map(|summary| {
                    let accuracy = summary
                        .val_accuracy
                        .map_or("no validation images".to_string(), |a| format!("{:.1}%", a * 100.0));
                    let classes = summary.classes.clone();
                    let per_class: Vec<String> = classes
                        .iter()
                        .map(|c| {
                            let a = summary.per_class_accuracy.get(c).copied().flatten();
                            format!("{c}: {}", a.map_or("–".into(), |a| format!("{:.0}%", a * 100.0)))
                        })
                        .collect();
                    view! {
                        <section class="panel results">
                            <h2>"5. Results"</h2>
                            <p>
                                "Validation accuracy "
                                <strong data-testid="val-accuracy">{accuracy}</strong>
                                {format!(
                                    " after {} epochs (kept epoch {}), {:.1} s",
                                    summary.epochs,
                                    summary.best_epoch.map_or("–".into(), |e| e.to_string()),
                                    summary.seconds
                                )}
                            </p>
                            <p class="per-class">{per_class.join(" · ")}</p>
                            <ConfusionMatrix classes=classes confusion=summary.confusion.clone()/>
                            <CellImages/>
                        </section>
                    }
                })
        }}
    }
}

#[component]
fn ConfusionMatrix(classes: Vec<String>, confusion: Vec<Vec<usize>>) -> impl IntoView {
    let studio = studio();
    let header = classes.clone();
    view! {
        <table class="confusion" data-testid="confusion-matrix">
            <caption>"Rows: true class · columns: predicted · click a cell to see its images"</caption>
            <thead>
                <tr>
                    <th></th>
                    {header.into_iter().map(|c| view! { <th>{c}</th> }).collect_view()}
                </tr>
            </thead>
            <tbody>
                {confusion
                    .into_iter()
                    .enumerate()
                    .map(|(t, row)| {
                        let name = classes.get(t).cloned().unwrap_or_default();
                        view! {
                            <tr>
                                <th>{name}</th>
                                {row
                                    .into_iter()
                                    .enumerate()
                                    .map(|(p, count)| {
                                        view! {
                                            <td
                                                class:diagonal={t == p}
                                                class:miss={t != p && count > 0}
                                                class:selected=move || studio.selected_cell.get() == Some((t, p))
                                                data-testid=format!("confusion-cell-{t}-{p}")
                                                on:click=move |_| studio.selected_cell.set(Some((t, p)))
                                            >
                                                {count}
                                            </td>
                                        }
                                    })
                                    .collect_view()}
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}

#[component]
fn CellImages() -> impl IntoView {
    let studio = studio();
    view! {
        {move || {
            studio
                .selected_cell
                .get()
                .map(|(t, p)| {
                    let thumbs: Vec<Thumb> = studio
                        .samples
                        .get()
                        .into_iter()
                        .filter(|&(_, truth, predicted)| truth == t && predicted == p)
                        .filter_map(|(id, _, _)| studio.thumb(id))
                        .collect();
                    // Positions in the run's classes (the page's may have changed since).
                    let names = studio.summary.get().map(|s| s.classes).unwrap_or_default();
                    let title = format!(
                        "{} validation images of {} predicted as {}",
                        thumbs.len(),
                        names.get(t).cloned().unwrap_or_default(),
                        names.get(p).cloned().unwrap_or_default()
                    );
                    view! {
                        <div class="cell-images" data-testid="cell-images">
                            <p>{title}</p>
                            {thumbs
                                .into_iter()
                                .map(|thumb| view! { <img src=thumb.url title=thumb.name alt=""/> })
                                .collect_view()}
                        </div>
                    }
                })
        }}
    }
}

#[component]
fn TryPanel() -> impl IntoView {
    let studio = studio();
    let bridge = bridge();
    let predict = {
        let bridge = bridge.clone();
        move |ev: leptos::ev::Event| {
            let input: web_sys::HtmlInputElement = event_target(&ev);
            let bridge = bridge.clone();
            leptos::task::spawn_local(async move {
                if let Some((_, bytes)) = read_first_file(&input).await {
                    studio.show_predicted(Some(blob_url(&bytes, "")));
                    studio.prediction.set(None);
                    bridge.send(&WorkerRequest::Predict, vec![bytes]);
                }
            });
        }
    };
    let export = {
        let bridge = bridge.clone();
        move |_| bridge.send(&WorkerRequest::Export, Vec::new())
    };
    let import = {
        let bridge = bridge.clone();
        move |ev: leptos::ev::Event| {
            let input: web_sys::HtmlInputElement = event_target(&ev);
            let bridge = bridge.clone();
            leptos::task::spawn_local(async move {
                if let Some((name, bytes)) = read_first_file(&input).await {
                    bridge.send(&WorkerRequest::Import { name }, vec![bytes]);
                }
            });
        }
    };
    let ready = move || studio.model_ready.get().is_some();
    // A picture dropped here is classified; a model file dropped here is imported.
    let dragging = RwSignal::new(false);
    let drop = {
        let bridge = bridge.clone();
        on_drop(studio, dragging, move |files| {
            let bridge = bridge.clone();
            async move {
                let Some((path, file)) = files.first() else {
                    return;
                };
                let Some(bytes) = read_file(file).await else {
                    studio.say(true, format!("{path} could not be read by the browser."));
                    return;
                };
                let name = path.rsplit('/').next().unwrap_or(path).to_string();
                if name.ends_with(".graft") {
                    bridge.send(&WorkerRequest::Import { name }, vec![bytes]);
                } else if studio.model_ready.get_untracked().is_none() {
                    studio.say(true, "Train a model (or import one) before classifying a picture.");
                } else {
                    studio.show_predicted(Some(blob_url(&bytes, "")));
                    studio.prediction.set(None);
                    bridge.send(&WorkerRequest::Predict, vec![bytes]);
                }
            }
        })
    };
    view! {
        <section
            class="panel try"
            class:dragging=move || dragging.get()
            data-testid="predict-drop"
            on:dragover=drag_over(dragging)
            on:dragleave=move |_| dragging.set(false)
            on:drop=drop
        >
            <h2>"6. Try it, export it"</h2>
            <p class="hint">
                {move || match studio.model_ready.get() {
                    Some(classes) => format!("The model knows: {}. Drop a picture here to classify it.", classes.join(", ")),
                    None => "Train a model (or import one) to try it.".to_string(),
                }}
            </p>
            <div class="toolbar">
                <label class="button" class:disabled=move || !ready()>
                    "Classify an image…"
                    <input type="file" accept="image/*" data-testid="predict-input" on:change=predict/>
                </label>
                <button
                    data-testid="predict-webcam"
                    on:click=move |_| studio.camera.set(Some(CameraTarget::Predict))
                    disabled=move || !ready()
                >
                    "Live from the webcam"
                </button>
                <button data-testid="export-button" on:click=export disabled=move || !ready()>
                    "Export model"
                </button>
                <label class="button">
                    "Import a model…"
                    <input type="file" accept=".graft" data-testid="import-input" on:change=import/>
                </label>
            </div>
            {move || {
                studio
                    .export_url
                    .get()
                    .map(|(url, name)| {
                        view! {
                            <p>
                                <a href=url download=name.clone() data-testid="export-link">
                                    {format!("Download {name} again")}
                                </a>
                            </p>
                        }
                    })
            }}
            <div class="prediction-row">
                {move || studio.predicted_image.get().map(|url| view! { <img class="predicted" src=url alt=""/> })}
                {move || {
                    studio
                        .prediction
                        .get()
                        .map(|top| {
                            view! {
                                <ol class="prediction" data-testid="prediction">
                                    {top
                                        .into_iter()
                                        .map(|(label, prob)| {
                                            view! {
                                                <li>
                                                    <span class="label">{label}</span>
                                                    <meter min="0" max="1" value=prob></meter>
                                                    <span>{format!("{:.1}%", prob * 100.0)}</span>
                                                </li>
                                            }
                                        })
                                        .collect_view()}
                                </ol>
                            }
                        })
                }}
            </div>
        </section>
    }
}

/// The largest side webcam frames are sent at (the worker downscales to 256 anyway).
const FRAME_SIDE: u32 = 320;

/// One webcam frame as RGBA pixels, scaled to at most `FRAME_SIDE`.
fn grab_frame(video: &web_sys::HtmlVideoElement) -> Option<(u32, u32, Vec<u8>)> {
    let (w, h) = (video.video_width(), video.video_height());
    if w == 0 || h == 0 {
        return None;
    }
    let scale = (FRAME_SIDE as f64 / w.max(h) as f64).min(1.0);
    let (width, height) = (((w as f64) * scale).round() as u32, ((h as f64) * scale).round() as u32);
    let document = web_sys::window()?.document()?;
    let canvas: web_sys::HtmlCanvasElement = document.create_element("canvas").ok()?.unchecked_into();
    canvas.set_width(width);
    canvas.set_height(height);
    let context: web_sys::CanvasRenderingContext2d = canvas.get_context("2d").ok()??.unchecked_into();
    context
        .draw_image_with_html_video_element_and_dw_and_dh(video, 0.0, 0.0, width as f64, height as f64)
        .ok()?;
    let data = context.get_image_data(0.0, 0.0, width as f64, height as f64).ok()?;
    Some((width, height, data.data().0))
}

/// Calls `tick` every `ms` milliseconds until the returned handle is dropped.
struct Interval {
    id: i32,
    _closure: wasm_bindgen::closure::Closure<dyn FnMut()>,
}

impl Interval {
    fn start(ms: i32, tick: impl FnMut() + 'static) -> Option<Self> {
        let closure = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(tick);
        let id = web_sys::window()?
            .set_interval_with_callback_and_timeout_and_arguments_0(closure.as_ref().unchecked_ref(), ms)
            .ok()?;
        Some(Self { id, _closure: closure })
    }
}

impl Drop for Interval {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            window.clear_interval_with_handle(self.id);
        }
    }
}

/// The webcam panel: a live preview; for a class, hold the button to record frames into it; for
/// try-it, a prediction every 700 ms.
#[component]
fn Webcam() -> impl IntoView {
    let studio = studio();
    let video = NodeRef::<leptos::html::Video>::new();
    let stream = StoredValue::new_local(None::<web_sys::MediaStream>);
    let recording = StoredValue::new_local(None::<Interval>);
    let live = StoredValue::new_local(None::<Interval>);
    let frames = StoredValue::new_local(Vec::<(u32, u32, Vec<u8>)>::new());
    let recorded = RwSignal::new(0usize);
    let stop_camera = move || {
        recording.set_value(None);
        live.set_value(None);
        if let Some(stream) = stream.get_value() {
            for track in stream.get_tracks().iter() {
                track.unchecked_into::<web_sys::MediaStreamTrack>().stop();
            }
        }
        stream.set_value(None);
    };
    // Open the camera when a target is chosen, close it when none is.
    Effect::new(move |_| {
        let target = studio.camera.get();
        let Some(target) = target else {
            stop_camera();
            return;
        };
        let Some(element) = video.get() else { return };
        if stream.with_value(Option::is_none) {
            let element = element.clone();
            leptos::task::spawn_local(async move {
                let devices = web_sys::window().and_then(|w| w.navigator().media_devices().ok());
                let Some(devices) = devices else {
                    studio.say(true, "This browser offers no camera access.");
                    studio.camera.set(None);
                    return;
                };
                let constraints = web_sys::MediaStreamConstraints::new();
                constraints.set_video(&wasm_bindgen::JsValue::TRUE);
                let opened = match devices.get_user_media_with_constraints(&constraints) {
                    Ok(promise) => wasm_bindgen_futures::JsFuture::from(promise).await,
                    Err(error) => Err(error),
                };
                match opened {
                    Ok(media) => {
                        let media: web_sys::MediaStream = media.unchecked_into();
                        element.set_src_object(Some(&media));
                        let _ = element.play();
                        stream.set_value(Some(media));
                    }
                    Err(error) => {
                        studio.say(true, format!("The camera could not be opened: {error:?}"));
                        studio.camera.set(None);
                    }
                }
            });
        }
        if target == CameraTarget::Predict {
            studio.prediction.set(None);
            studio.show_predicted(None);
            let element = element.clone();
            let bridge = bridge();
            live.set_value(Interval::start(700, move || {
                if let Some((width, height, rgba)) = grab_frame(&element) {
                    bridge.send(&WorkerRequest::PredictFrame { width, height }, vec![rgba]);
                }
            }));
        } else {
            live.set_value(None);
        }
    });
    let start_recording = move |_| {
        let Some(element) = video.get_untracked() else { return };
        frames.set_value(Vec::new());
        recorded.set(0);
        recording.set_value(Interval::start(150, move || {
            if let Some(frame) = grab_frame(&element) {
                frames.update_value(|f| f.push(frame));
                recorded.update(|n| *n += 1);
            }
        }));
    };
    let stop_recording = move |_| {
        if recording.with_value(Option::is_none) {
            return;
        }
        recording.set_value(None);
        let captured = std::mem::take(&mut *frames.write_value());
        let Some(CameraTarget::Class(class)) = studio.camera.get_untracked() else {
            return;
        };
        let Some(&(width, height, _)) = captured.first() else {
            return;
        };
        let payloads: Vec<Vec<u8>> = captured
            .into_iter()
            .filter(|(w, h, _)| (*w, *h) == (width, height))
            .map(|(_, _, rgba)| rgba)
            .collect();
        bridge().send(&WorkerRequest::AddFrames { class, width, height }, payloads);
    };
    let title = move || match studio.camera.get() {
        Some(CameraTarget::Class(id)) => {
            let name = studio
                .classes
                .with(|classes| classes.iter().find(|c| c.id == id).map(|c| c.name.clone()));
            format!("Webcam → {}", name.unwrap_or_default())
        }
        Some(CameraTarget::Predict) => "Webcam → live predictions".to_string(),
        None => String::new(),
    };
    view! {
        <div class="webcam" class:open=move || studio.camera.get().is_some() data-testid="webcam">
            <div class="webcam-head">
                <strong>{title}</strong>
                <button on:click=move |_| studio.camera.set(None) data-testid="webcam-close">"Close"</button>
            </div>
            <video node_ref=video autoplay=true muted=true playsinline=true></video>
            {move || {
                matches!(studio.camera.get(), Some(CameraTarget::Class(_)))
                    .then(|| {
                        view! {
                            <button
                                class="record"
                                data-testid="webcam-record"
                                on:pointerdown=start_recording
                                on:pointerup=stop_recording
                                on:pointerleave=stop_recording
                            >
                                {move || match recorded.get() {
                                    0 => "Hold to record".to_string(),
                                    n => format!("Hold to record ({n} frames)"),
                                }}
                            </button>
                        }
                    })
            }}
        </div>
    }
}
