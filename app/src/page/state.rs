//! The page's state: one `Studio` of Leptos signals (it is `Copy`), the views it holds, and the
//! edits that go to the worker.

use graft_engine::compare::{Comparison, Planned};
use graft_engine::export::ExportFormat;
use graft_engine::model::ModelKind;
use graft_engine::recommend::Recommendation;
use graft_engine::strategy::StrategyKind;
use graft_engine::train::{BatchNormStatistics, TrainConfig, TrainSummary};
use leptos::prelude::*;

use crate::bridge::Bridge;
use crate::protocol::{ClassId, EpochPoint, ProjectView, ReviewItem, RunResults, WorkerRequest};

/// An object URL (a thumbnail, the picture being classified, an export): revoked once the last copy
/// is dropped, i.e. once the page no longer holds what it shows.
pub(crate) type ObjectUrl = gloo_file::ObjectUrl;

/// A thumbnail the page shows for an image the worker holds.
#[derive(Clone)]
pub(crate) struct Thumb {
    pub(crate) id: u64,
    pub(crate) name: String,
    /// The JPEG, released when the picture (or its class) goes.
    pub(crate) url: ObjectUrl,
}

impl Thumb {
    /// What a `<For>` child shows of it (`Send`, as Leptos wants; the URL stays valid while the
    /// thumbnail is in the studio).
    pub(crate) fn shown(&self) -> ShownThumb {
        ShownThumb {
            id: self.id,
            name: self.name.clone(),
            url: self.url.to_string(),
        }
    }
}

/// A thumbnail as a view draws it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ShownThumb {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) url: String,
}

impl PartialEq for Thumb {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.name == other.name && *self.url == *other.url
    }
}

impl std::fmt::Debug for Thumb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thumb")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClassView {
    /// The class's identity for the worker and the storage; stable across renames and deletes.
    pub(crate) id: ClassId,
    pub(crate) name: String,
    pub(crate) images: Vec<Thumb>,
}

/// Where training is.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ProgressView {
    pub(crate) phase: String,
    pub(crate) epoch: usize,
    pub(crate) epochs: usize,
    pub(crate) batch: usize,
    pub(crate) batches: usize,
    pub(crate) eta_seconds: Option<f64>,
    pub(crate) caching: Option<(usize, usize)>,
    /// 0..=1 over the whole run.
    pub(crate) fraction: f64,
    /// `done` or `stopped` once training ended.
    pub(crate) done: Option<String>,
}

/// A comparison of strategies as it goes: the budget and what will run once planned, folds done.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CompareProgress {
    pub(crate) budget_seconds: Option<f64>,
    pub(crate) plan: Vec<Planned>,
    pub(crate) folds_done: usize,
    pub(crate) folds_total: usize,
    /// The candidate training now.
    pub(crate) current: Option<String>,
}

/// All the page's state: signals are `Copy`, so the whole struct is.
#[derive(Clone, Copy)]
pub(crate) struct Studio {
    pub(crate) device: RwSignal<Option<(String, bool)>>,
    /// On the CPU backend, the cores frozen inference runs on and those training runs on (once the
    /// worker has helpers or its replica).
    pub(crate) cores: RwSignal<Option<(usize, usize)>>,
    /// The worker could not be started (its engine could not be loaded): it will never be ready.
    pub(crate) engine_failed: RwSignal<bool>,
    /// Local: the thumbnails' object URLs belong to this thread.
    pub(crate) classes: RwSignal<Vec<ClassView>, LocalStorage>,
    pub(crate) messages: RwSignal<Vec<(bool, String)>>,
    pub(crate) model: RwSignal<ModelKind>,
    /// Embedding speed measured here, per model.
    pub(crate) speeds: RwSignal<Vec<(ModelKind, f64)>>,
    /// The device (its badge) the speeds were measured on.
    pub(crate) speeds_device: RwSignal<Option<String>>,
    pub(crate) measuring: RwSignal<Option<(usize, usize)>>,
    pub(crate) recommendation: RwSignal<Option<Recommendation>>,
    /// A comparison of strategies under way (see [`CompareProgress`]).
    pub(crate) comparing: RwSignal<Option<CompareProgress>>,
    /// The last comparison of strategies on the pictures as they are.
    pub(crate) comparison: RwSignal<Option<Comparison>>,
    /// A review under way.
    pub(crate) reviewing: RwSignal<bool>,
    /// The last review's flagged pictures (those moved, removed or kept since drop out of view).
    pub(crate) review: RwSignal<Option<Vec<ReviewItem>>>,
    /// Flagged pictures the person kept as they are: not flagged again.
    pub(crate) review_kept: RwSignal<Vec<u64>>,
    pub(crate) strategy: RwSignal<Option<StrategyKind>>,
    pub(crate) epochs: RwSignal<Option<usize>>,
    pub(crate) lr: RwSignal<Option<f64>>,
    pub(crate) batch: RwSignal<usize>,
    pub(crate) trainable_blocks: RwSignal<usize>,
    pub(crate) augment: RwSignal<bool>,
    pub(crate) batch_norm: RwSignal<Option<BatchNormStatistics>>,
    /// The stored project is back (or there was none): changes to the view are saved from now on.
    pub(crate) restored: RwSignal<bool>,
    pub(crate) training: RwSignal<bool>,
    pub(crate) progress: RwSignal<Option<ProgressView>>,
    pub(crate) history: RwSignal<Vec<EpochPoint>>,
    pub(crate) summary: RwSignal<Option<TrainSummary>>,
    pub(crate) samples: RwSignal<Vec<(u64, usize, usize)>>,
    pub(crate) selected_cell: RwSignal<Option<(usize, usize)>>,
    pub(crate) model_ready: RwSignal<Option<Vec<String>>>,
    /// The try-it panel's pictures and the answer shown.
    pub(crate) trying: RwSignal<Trying>,
    pub(crate) predicted_image: RwSignal<Option<ObjectUrl>, LocalStorage>,
    /// The last export's files, as download links with their names (the model file first).
    pub(crate) exported: RwSignal<Vec<(ObjectUrl, String)>, LocalStorage>,
    /// What Export makes.
    pub(crate) export_format: RwSignal<ExportFormat>,
    /// What the webcam feeds: a class (hold to record) or the try-it predictions.
    pub(crate) camera: RwSignal<Option<CameraTarget>>,
    /// Pictures (count) and whether the trained model are in this session only: the storage was full.
    pub(crate) unsaved: RwSignal<(usize, bool)>,
    /// Where the last run stopped, if it can go on from there.
    pub(crate) paused: RwSignal<Option<String>>,
    /// Another tab holds the project (`Some(taken)`: see `WorkerEvent::OpenElsewhere`).
    pub(crate) elsewhere: RwSignal<Option<bool>>,
    /// Requests that edit the project: sent to the worker, and handled by it (storage included).
    pub(crate) edits: RwSignal<(u64, u64)>,
}

/// The try-it panel: the pictures asked about and the answer shown. Answers come back from the worker
/// in any order (each prediction runs beside the worker's inbox, a webcam frame every 700 ms): each
/// names the picture it is for, and one for a picture older than what the panel shows is dropped.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Trying {
    /// Pictures (files and webcam frames) asked about so far: the number of the last one.
    asked: u64,
    /// Answers for pictures before this one are late: never shown.
    floor: u64,
    /// The file being classified, by name (none for the webcam).
    pub(crate) name: Option<String>,
    /// The answer shown and the number of the picture it is for.
    pub(crate) answer: Option<(u64, Vec<(String, f32)>)>,
}

impl Trying {
    /// A file to classify: nothing asked before it is shown any more. Its number, for the worker.
    pub(crate) fn ask_file(&mut self, name: String) -> u64 {
        self.asked += 1;
        self.floor = self.asked;
        self.name = Some(name);
        self.answer = None;
        self.asked
    }

    /// The webcam starts feeding predictions: what was shown goes.
    pub(crate) fn start_live(&mut self) {
        self.floor = self.asked + 1;
        self.name = None;
        self.answer = None;
    }

    /// A webcam frame to classify: its number. Its answer replaces an older frame's.
    pub(crate) fn ask_frame(&mut self) -> u64 {
        self.asked += 1;
        self.asked
    }

    /// Whether a file asked about has no answer yet.
    pub(crate) fn waiting(&self) -> bool {
        self.name.is_some() && self.answer.is_none()
    }

    /// What was asked will not be answered (the worker that had it crashed): nothing is waited for.
    pub(crate) fn abandon(&mut self) {
        self.floor = self.asked + 1;
        self.name = None;
    }

    /// The worker's answer for picture `picture`: shown unless it is older than what is shown.
    pub(crate) fn answered(&mut self, picture: u64, top: Vec<(String, f32)>) -> bool {
        let late = picture < self.floor || self.answer.as_ref().is_some_and(|(shown, _)| *shown >= picture);
        if !late {
            self.answer = Some((picture, top));
        }
        !late
    }
}

/// Where webcam frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CameraTarget {
    Class(ClassId),
    Predict,
}

impl Studio {
    pub(crate) fn new() -> Self {
        Self {
            device: RwSignal::new(None),
            cores: RwSignal::new(None),
            engine_failed: RwSignal::new(false),
            classes: RwSignal::new_local(Vec::new()),
            messages: RwSignal::new(Vec::new()),
            model: RwSignal::new(ModelKind::MobileNetV2),
            speeds: RwSignal::new(Vec::new()),
            speeds_device: RwSignal::new(None),
            measuring: RwSignal::new(None),
            recommendation: RwSignal::new(None),
            comparing: RwSignal::new(None),
            comparison: RwSignal::new(None),
            reviewing: RwSignal::new(false),
            review: RwSignal::new(None),
            review_kept: RwSignal::new(Vec::new()),
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
            trying: RwSignal::new(Trying::default()),
            predicted_image: RwSignal::new_local(None),
            exported: RwSignal::new_local(Vec::new()),
            export_format: RwSignal::new(ExportFormat::Graft),
            camera: RwSignal::new(None),
            unsaved: RwSignal::new((0, false)),
            paused: RwSignal::new(None),
            elsewhere: RwSignal::new(None),
            edits: RwSignal::new((0, 0)),
        }
    }

    /// Edits sent that the worker has not handled (and stored) yet: a reload now would lose them.
    pub(crate) fn edits_pending(&self) -> u64 {
        self.edits.with(|(sent, handled)| sent.saturating_sub(*handled))
    }

    pub(crate) fn say(&self, error: bool, message: impl Into<String>) {
        let message = message.into();
        self.messages.update(|messages| {
            messages.push((error, message));
            let excess = messages.len().saturating_sub(8);
            messages.drain(..excess);
        });
    }

    /// The thumbnail of image `id`, wherever it is.
    pub(crate) fn thumb(&self, id: u64) -> Option<Thumb> {
        self.classes
            .with(|classes| classes.iter().flat_map(|c| &c.images).find(|t| t.id == id).cloned())
    }

    /// The data changed: an earlier recommendation or comparison no longer describes it.
    pub(crate) fn data_changed(&self) {
        self.recommendation.set(None);
        self.comparison.set(None);
        // A stopped run goes on only on the pictures it trained on.
        if !self.training.get_untracked() {
            self.paused.set(None);
        }
    }

    /// Shows `url` as the picture being classified (the one shown before is released).
    pub(crate) fn show_predicted(&self, url: Option<ObjectUrl>) {
        self.predicted_image.set(url);
    }

    /// Whether class `id` is still there.
    pub(crate) fn has_class(&self, id: ClassId) -> bool {
        self.classes
            .with_untracked(|classes| classes.iter().any(|c| c.id == id))
    }

    /// Adds a class named `name` (or "Class N"), returning its id; pictures for it can be sent at
    /// once (the worker handles requests in the order they were sent).
    pub(crate) fn add_class(&self, name: Option<String>, bridge: &Bridge) -> ClassId {
        let id = ClassId::fresh();
        let name = name.unwrap_or_else(|| self.free_class_name());
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

    /// "Class N" for the N-th class, or the next N no class has (after a deletion, the count may
    /// name one).
    pub(crate) fn free_class_name(&self) -> String {
        let count = self.classes.with_untracked(Vec::len);
        (count + 1..)
            .map(|n| format!("Class {n}"))
            .find(|name| !self.class_named(name, None))
            .expect("a free number")
    }

    /// Whether a class other than `except` is called `name` (a model names each class once).
    pub(crate) fn class_named(&self, name: &str, except: Option<ClassId>) -> bool {
        self.classes
            .with_untracked(|classes| classes.iter().any(|c| c.name == name && Some(c.id) != except))
    }

    /// Renames class `id`, unless another class has that name: then the person is told, and `false`
    /// returned (the name stays as it was).
    pub(crate) fn rename_class(&self, id: ClassId, name: String, bridge: &Bridge) -> bool {
        if self.class_named(&name, Some(id)) {
            self.say(
                true,
                format!("There is a class called \"{name}\" already: each class needs a name of its own."),
            );
            return false;
        }
        self.classes.update(|classes| {
            if let Some(class) = classes.iter_mut().find(|c| c.id == id) {
                class.name = name.clone();
            }
        });
        bridge.send(&WorkerRequest::RenameClass { id, name }, Vec::new());
        true
    }

    /// Deletes class `id` with its pictures (their thumbnails' object URLs are released).
    pub(crate) fn remove_class(&self, id: ClassId, bridge: &Bridge) {
        self.classes.update(|classes| classes.retain(|c| c.id != id));
        if self.camera.get_untracked() == Some(CameraTarget::Class(id)) {
            self.camera.set(None);
        }
        bridge.send(&WorkerRequest::RemoveClass { id }, Vec::new());
        self.data_changed();
    }

    /// The training configuration from the chosen strategy and the advanced settings.
    pub(crate) fn config(&self) -> Option<TrainConfig> {
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
    pub(crate) fn defaults(&self) -> Option<TrainConfig> {
        let strategy = self.strategy.get()?.with_defaults(self.trainable_blocks.get().max(1));
        Some(TrainConfig::new(strategy))
    }

    /// Speeds measured on another device than the one in use now (the person chose another, or the
    /// GPU was lost) say nothing about this one: they are dropped until measured again.
    pub(crate) fn forget_speeds_of_another_device(&self) {
        let Some((device, _)) = self.device.get_untracked() else {
            return;
        };
        if !self.speeds.get_untracked().is_empty() && self.speeds_device.get_untracked().as_ref() != Some(&device) {
            self.speeds.set(Vec::new());
            self.speeds_device.set(None);
        }
    }

    /// What a reload should show again (tracked: read inside an effect, it reruns on any change).
    pub(crate) fn view(&self) -> ProjectView {
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
            speeds_device: self.speeds_device.get(),
            recommendation: self.recommendation.get(),
            comparison: self.comparison.get(),
            review_kept: self.review_kept.get(),
            results: self.summary.get().map(|summary| RunResults {
                history: self.history.get(),
                summary,
                samples: self.samples.get(),
            }),
        }
    }

    pub(crate) fn restore_view(&self, view: ProjectView) {
        self.model.set(view.model);
        self.strategy.set(view.strategy);
        self.epochs.set(view.epochs);
        self.lr.set(view.lr);
        self.batch.set(view.batch);
        self.trainable_blocks.set(view.trainable_blocks);
        self.augment.set(view.augment);
        self.batch_norm.set(view.batch_norm);
        self.speeds.set(view.speeds);
        self.speeds_device.set(view.speeds_device);
        self.forget_speeds_of_another_device();
        self.recommendation.set(view.recommendation);
        self.comparison.set(view.comparison);
        self.review_kept.set(view.review_kept);
        if let Some(results) = view.results {
            self.history.set(results.history);
            self.samples.set(results.samples);
            self.summary.set(Some(results.summary));
        }
    }
}
