//! What the page and the training worker say to each other: two serde enums.
//!
//! The tag is `type` (the engine's `TrainEvent`, carried inside, uses `event`). A message is a JS array: the JSON of the enum first, then any binary payloads (image files,
//! thumbnails, model files) as `Uint8Array`s, whose buffers are transferred rather than copied.

use graft_engine::compare::{CompareEvent, Comparison};
use graft_engine::export::ExportFormat;
use graft_engine::model::ModelKind;
use graft_engine::recommend::Recommendation;
use graft_engine::review::Reason;
use graft_engine::strategy::{Strategy, StrategyKind};
use graft_engine::train::{BatchNormStatistics, TrainConfig, TrainEvent, TrainSummary};
use serde::{Deserialize, Serialize};

/// A class's identity from its creation to its storage: given once (by the page, when the person
/// makes the class), never reused, never renumbered when another class goes. Requests and events name
/// classes by it, never by their position in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClassId(pub u64);

impl ClassId {
    /// A new id, random in `[2^32, 2^53)`: exact as a JavaScript number (IndexedDB stores it as one),
    /// and distinct from the positions that serve as ids of older projects.
    pub fn fresh() -> Self {
        let high = 1 + (js_sys::Math::random() * ((1u64 << 21) - 1) as f64) as u64;
        let low = (js_sys::Math::random() * (1u64 << 32) as f64) as u64;
        Self((high << 32) | low)
    }
}

impl std::fmt::Display for ClassId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "class {}", self.0)
    }
}

/// A class as stored and restored: its id and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassEntry {
    pub id: ClassId,
    pub name: String,
}

/// From the page to the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum WorkerRequest {
    /// Open the compute device; answered by `Ready`.
    Init,
    /// A new class, with the id the page gave it (pictures for it may follow at once).
    AddClass {
        id: ClassId,
        name: String,
    },
    RenameClass {
        id: ClassId,
        name: String,
    },
    /// The class and its pictures go; pictures for it that arrive later are refused.
    RemoveClass {
        id: ClassId,
    },
    /// Image files for class `class`, one payload per name, in order.
    AddImages {
        class: ClassId,
        names: Vec<String>,
    },
    RemoveImage {
        id: u64,
    },
    /// Webcam frames for class `class`: one payload of `width x height` RGBA pixels per frame.
    AddFrames {
        class: ClassId,
        width: u32,
        height: u32,
    },
    /// What the page shows changed (a choice, a measurement, a result): keep it with the project.
    SaveView {
        view: Box<ProjectView>,
    },
    /// Measure the dataset with `model` and recommend a strategy.
    Recommend {
        model: ModelKind,
    },
    Train {
        model: ModelKind,
        /// Boxed: the largest request by far (serialised the same).
        config: Box<TrainConfig>,
    },
    /// Go on with the stopped run from where it stopped (same data, same settings).
    Continue,
    /// Compare `recommended` with its alternatives on the pictures (`graft_engine::compare`), within
    /// `budget_seconds` (`None`: the engine's default); `Stop` stops it.
    Compare {
        model: ModelKind,
        recommended: Strategy,
        budget_seconds: Option<f64>,
    },
    /// Stop training at the next batch; the best model so far is kept.
    Stop,
    /// Review the pictures with `model`'s frozen body: pictures likely in the wrong class, copies,
    /// outliers; answered by `Reviewed`.
    Review {
        model: ModelKind,
    },
    /// Picture `id` goes to class `to` (a review's suggestion taken); answered by `ImageMoved`.
    MoveImage {
        id: u64,
        to: ClassId,
    },
    /// Classify one image (payload) with the trained model; the answer names `picture` (the page's
    /// count of pictures asked about, so that a late answer is never shown beside a newer picture).
    Predict {
        picture: u64,
    },
    /// Classify one webcam frame (payload: `width x height` RGBA pixels), as `Predict`.
    PredictFrame {
        width: u32,
        height: u32,
        picture: u64,
    },
    /// The trained model as `format`; answered by `Exported` with its files as payloads.
    Export {
        format: ExportFormat,
    },
    /// Load a model file (payload) exported earlier.
    Import {
        name: String,
    },
    /// Use the project in this tab although another tab has it open (after `OpenElsewhere`): that
    /// tab stops writing, and this one reads the project as it was left.
    TakeOver,
    /// Fault injection, for the tests of what no device here does by itself: once the next training
    /// batch is done, the GPU reports `fault` as WebGPU would (out of band); the page sends it when
    /// its address asks (`?fault=gpu-out-of-memory`). Only in builds with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    InjectFault {
        fault: InjectedFault,
    },
}

impl WorkerRequest {
    /// Whether it changes the project: refused in a tab that does not hold it.
    pub fn edits_project(&self) -> bool {
        match self {
            Self::AddClass { .. }
            | Self::RenameClass { .. }
            | Self::RemoveClass { .. }
            | Self::AddImages { .. }
            | Self::RemoveImage { .. }
            | Self::MoveImage { .. }
            | Self::AddFrames { .. }
            | Self::SaveView { .. }
            | Self::Train { .. }
            | Self::Continue
            | Self::Import { .. } => true,
            Self::Init
            | Self::Recommend { .. }
            | Self::Compare { .. }
            | Self::Review { .. }
            | Self::Stop
            | Self::Predict { .. }
            | Self::PredictFrame { .. }
            | Self::Export { .. }
            | Self::TakeOver => false,
            #[cfg(feature = "test-hooks")]
            Self::InjectFault { .. } => false,
        }
    }

    /// The work a failure of this request is reported as.
    pub fn work(&self) -> Work {
        match self {
            Self::Train { .. } | Self::Continue | Self::Stop => Work::Train,
            Self::Recommend { .. } => Work::Recommend,
            Self::Compare { .. } => Work::Compare,
            Self::Review { .. } => Work::Review,
            Self::Predict { .. } | Self::PredictFrame { .. } => Work::Predict,
            Self::Export { .. } => Work::Export,
            Self::Import { .. } => Work::Import,
            Self::Init | Self::TakeOver => Work::Restore,
            Self::AddClass { .. }
            | Self::RenameClass { .. }
            | Self::RemoveClass { .. }
            | Self::AddImages { .. }
            | Self::RemoveImage { .. }
            | Self::MoveImage { .. }
            | Self::AddFrames { .. }
            | Self::SaveView { .. } => Work::Store,
            #[cfg(feature = "test-hooks")]
            Self::InjectFault { .. } => Work::Train,
        }
    }
}

/// What the page shows besides the classes and pictures — the person's choices and what the app
/// measured and trained for them — kept with the project so that a reload shows it again. Settings
/// left `None` take the engine's default for the strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectView {
    pub model: ModelKind,
    /// The chosen strategy's kind (stored by its name: `head-only`, `partial-freeze`, `staged`, `full`,
    /// `scratch`, as the previous version stored it); `None`: not chosen yet.
    pub strategy: Option<StrategyKind>,
    pub epochs: Option<usize>,
    pub lr: Option<f64>,
    pub batch: usize,
    pub trainable_blocks: usize,
    pub augment: bool,
    #[serde(default)]
    pub batch_norm: Option<BatchNormStatistics>,
    /// Embedding speed measured here, per model.
    #[serde(default)]
    pub speeds: Vec<(ModelKind, f64)>,
    /// The device (its badge) `speeds` were measured on: on another device they are forgotten.
    #[serde(default)]
    pub speeds_device: Option<String>,
    /// The recommendation for the pictures as they are (dropped when they change).
    #[serde(default)]
    pub recommendation: Option<Recommendation>,
    /// The last finished run.
    #[serde(default)]
    pub results: Option<RunResults>,
    /// The last comparison of strategies on the pictures as they are (dropped when they change).
    #[serde(default)]
    pub comparison: Option<Comparison>,
    /// Pictures a review flagged that the person chose to keep as they are: not flagged again.
    #[serde(default)]
    pub review_kept: Vec<u64>,
}

/// A picture a review flagged, as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    pub image: u64,
    pub class: ClassId,
    /// The class it looks like (wrong class), or its copy's class (duplicates).
    pub suggested: Option<ClassId>,
    /// The out-of-fold probability of its own class.
    pub label_probability: f32,
    pub reason: Reason,
    pub score: f32,
    /// Its other copy (duplicates).
    pub duplicate_of: Option<u64>,
}

/// A finished run as the page shows it: its curves, its summary and each validation picture's
/// outcome (`(image id, true class, predicted class)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub history: Vec<EpochPoint>,
    pub summary: TrainSummary,
    pub samples: Vec<(u64, usize, usize)>,
}

/// One point of the training curves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
}

/// What a failure was doing, for the page to undo what it showed as going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Work {
    /// Keeping the project in the browser's storage.
    Store,
    /// Bringing the stored project back.
    Restore,
    Recommend,
    Compare,
    Review,
    Train,
    Predict,
    Export,
    Import,
    /// A message that could not be read (page and worker from different builds).
    #[serde(rename = "?")]
    Message,
    /// Starting the worker: its script or its wasm could not be loaded (`public/engine_loader.js`
    /// says so), so it will never be ready.
    Start,
}

/// A device failure the tests make happen (builds with the `test-hooks` feature).
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InjectedFault {
    /// A buffer allocation fails for want of GPU memory (`GPUOutOfMemoryError`).
    GpuOutOfMemory,
    /// The next prediction panics (a bug in the worker, as the page sees one: `?fault=predict-panic`).
    PredictPanic,
}

/// An image the worker took in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub id: u64,
    pub name: String,
}

/// A file the worker could not use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub name: String,
    pub reason: String,
}

/// From the worker to the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum WorkerEvent {
    /// The compute device is open: its one-line description.
    Ready {
        device: String,
        gpu: bool,
    },
    /// The CPU cores frozen inference (embeddings, frozen prefixes, measuring) runs on now, on the CPU
    /// backend: the worker's own and one per helper worker that is ready (`graft_worker::helpers`);
    /// and those training runs on: the worker's own and its replica when ready (`graft_worker::replica`).
    Cores {
        cores: usize,
        training: usize,
    },
    /// The project found in the browser's storage: its classes (their images follow as `ImagesAdded`).
    ProjectRestored {
        classes: Vec<ClassEntry>,
    },
    /// The project is restored (or there was none): what the page showed last, after the pictures
    /// and the model. From then on the page's own changes are saved.
    ViewRestored {
        view: Option<Box<ProjectView>>,
    },
    /// Images of `class` decoded, oriented and downscaled; one JPEG thumbnail payload per added image.
    ImagesAdded {
        class: ClassId,
        added: Vec<ImageInfo>,
        rejected: Vec<Rejected>,
    },
    /// Progress of the recommender's measurement.
    Measuring {
        done: usize,
        total: usize,
    },
    Recommendation(Box<Recommendation>),
    /// How fast `model` computed embeddings on this device, measured while recommending.
    ModelSpeed {
        model: ModelKind,
        images_per_second: f64,
    },
    /// Progress of training (the engine's events as they are).
    Train(Box<TrainEvent>),
    /// Progress of a comparison (the engine's events, but for its per-batch steps).
    Comparing(Box<CompareEvent>),
    /// A comparison finished.
    Compared(Box<Comparison>),
    /// A review of the pictures: the flagged ones, most likely first.
    Reviewed {
        items: Vec<ReviewItem>,
    },
    /// Picture `id` is now in class `to`.
    ImageMoved {
        id: u64,
        to: ClassId,
    },
    /// Each validation image of the kept model: `(image id, true class, predicted class)`, for the
    /// confusion matrix's cells.
    Evaluated {
        samples: Vec<(u64, usize, usize)>,
    },
    /// Training has a model to predict and export with.
    ModelReady {
        classes: Vec<String>,
        model: ModelKind,
    },
    /// The worker has handled `edits` requests that edit the project (`WorkerRequest::edits_project`)
    /// since it started, their storage included: with the page's count of those it sent, whether
    /// something the person did is still on its way to storage.
    Handled {
        edits: u64,
    },
    /// The classes most likely for the picture the page numbered `picture`, best first.
    Prediction {
        picture: u64,
        top: Vec<(String, f32)>,
    },
    /// An export (`Export`).
    Exported {
        /// The files' names, one payload each (the model file first).
        files: Vec<String>,
    },
    /// Something went wrong with the work named; nothing the page had is lost.
    Failed {
        request: Work,
        message: String,
    },
    /// Something the person should know that is not a failure.
    Notice {
        message: String,
    },
    /// The worker hit a bug (a Rust panic: `message` says where and what) and stops: the page
    /// restarts it, which reads the project back from the browser's storage.
    Crashed {
        message: String,
    },
    /// Whether the last run stopped where it can go on (`Continue`): where, in words.
    Paused {
        at: Option<String>,
    },
    /// What is in this session but not in the browser's storage (it was full): a reload would lose it.
    Unsaved {
        pictures: usize,
        model: bool,
    },
    /// Another tab holds the project: this one shows and changes nothing of it. `taken`: this tab
    /// had it and another took it over (this tab stopped writing); else it was held when this tab
    /// opened (answer with `TakeOver` to use it here).
    OpenElsewhere {
        taken: bool,
    },
}
