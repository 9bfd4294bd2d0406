//! What the worker's events do to the page's state.

use graft_engine::compare::CompareEvent;
use graft_engine::strategy::Strategy;
use graft_engine::train::TrainEvent;
use leptos::prelude::*;

use graft_engine::recommend::Recommendation;

use crate::protocol::{ClassEntry, ClassId, EpochPoint, ImageInfo, Rejected, Work, WorkerEvent};

use crate::page::files::{blob_url, download};
use crate::page::state::{ClassView, CompareProgress, ObjectUrl, ProgressView, Studio, Thumb};

impl Studio {
    /// Applies a worker event (with its binary payloads) to the page's state.
    pub(crate) fn handle(&self, event: WorkerEvent, payloads: Vec<Vec<u8>>) {
        match event {
            WorkerEvent::Ready { device, gpu } => {
                self.device.set(Some((device, gpu)));
                // Helpers report once they are ready, after the device.
                self.cores.set(None);
                self.forget_speeds_of_another_device();
            }
            WorkerEvent::Cores { cores, training } => self.cores.set(Some((cores, training))),
            WorkerEvent::ProjectRestored { classes } => self.project_restored(classes),
            WorkerEvent::ImagesAdded { class, added, rejected } => self.images_added(class, added, rejected, payloads),
            WorkerEvent::Measuring { done, total } => self.measuring.set(Some((done, total))),
            WorkerEvent::Recommendation(recommendation) => self.recommended(*recommendation),
            WorkerEvent::ModelSpeed {
                model,
                images_per_second,
            } => {
                self.speeds.update(|speeds| {
                    speeds.retain(|(m, _)| *m != model);
                    speeds.push((model, images_per_second));
                });
                self.speeds_device
                    .set(self.device.get_untracked().map(|(device, _)| device));
            }
            WorkerEvent::Train(event) => self.on_train_event(*event),
            WorkerEvent::Comparing(event) => self.on_compare_event(*event),
            WorkerEvent::Reviewed { items } => {
                self.reviewing.set(false);
                self.review.set(Some(items));
            }
            WorkerEvent::ImageMoved { id, to } => self.image_moved(id, to),
            WorkerEvent::Compared(comparison) => {
                self.comparing.set(None);
                self.comparison.set(Some(*comparison));
            }
            WorkerEvent::Evaluated { samples } => self.samples.set(samples),
            WorkerEvent::ModelReady { classes, .. } => self.model_ready.set(Some(classes)),
            WorkerEvent::ViewRestored { view } => {
                if let Some(view) = view {
                    self.restore_view(*view);
                }
                self.restored.set(true);
            }
            WorkerEvent::Handled { edits } => self.edits.update(|(_, handled)| *handled = edits),
            WorkerEvent::Prediction { picture, top } => {
                self.trying.update(|trying| {
                    trying.answered(picture, top);
                });
            }
            WorkerEvent::Exported { files } => self.exported(files, payloads),
            WorkerEvent::Failed { request, message } => {
                if request == Work::Train {
                    self.training.set(false);
                }
                if request == Work::Recommend {
                    self.measuring.set(None);
                }
                if request == Work::Compare {
                    self.comparing.set(None);
                }
                if request == Work::Review {
                    self.reviewing.set(false);
                }
                if request == Work::Start {
                    self.engine_failed.set(true);
                }
                self.say(true, message);
            }
            WorkerEvent::Notice { message } => self.say(false, message),
            WorkerEvent::Crashed { message } => self.crashed(message),
            WorkerEvent::Unsaved { pictures, model } => self.unsaved.set((pictures, model)),
            WorkerEvent::Paused { at } => self.paused.set(at),
            WorkerEvent::OpenElsewhere { taken } => {
                // A run there stops: it could not keep what it trains.
                self.training.set(false);
                self.comparing.set(None);
                self.elsewhere.set(Some(taken));
            }
        }
    }

    /// The worker crashed and the bridge started a new one, which reads the project back from the
    /// browser's storage: what was under way stops, and the person hears what failed.
    fn crashed(&self, message: String) {
        let doing = if self.training.get_untracked() {
            "training"
        } else if self.measuring.get_untracked().is_some() {
            "measuring your pictures"
        } else if self.comparing.get_untracked().is_some() {
            "comparing strategies"
        } else if self.reviewing.get_untracked() {
            "reviewing your pictures"
        } else if self.trying.with_untracked(|trying| trying.waiting()) {
            "classifying your picture"
        } else {
            "working"
        };
        self.training.set(false);
        self.measuring.set(None);
        self.comparing.set(None);
        self.reviewing.set(false);
        self.trying.update(|trying| trying.abandon());
        self.device.set(None);
        self.cores.set(None);
        // The new worker counts the edits it handles from zero; the ones the old one had not stored
        // are not in the project it reads back.
        self.edits.set((0, 0));
        self.say(
            true,
            format!(
                "Graft's engine stopped on an internal error while {doing} ({message}). It was restarted with your project as it was last saved: nothing saved is lost. Please try again."
            ),
        );
    }

    fn project_restored(&self, classes: Vec<ClassEntry>) {
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

    /// Thumbnails for pictures the worker took in (one JPEG payload each), and what it refused.
    fn images_added(&self, class: ClassId, added: Vec<ImageInfo>, rejected: Vec<Rejected>, payloads: Vec<Vec<u8>>) {
        // A class deleted meanwhile: the worker removes these pictures with it.
        if self.has_class(class) {
            let thumbs: Vec<Thumb> = added
                .into_iter()
                .zip(payloads)
                .map(|(info, jpeg)| Thumb {
                    id: info.id,
                    name: info.name,
                    url: blob_url(&jpeg, Some("image/jpeg")),
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

    /// Picture `id` is in class `to` now: its thumbnail moves there.
    fn image_moved(&self, id: u64, to: ClassId) {
        self.classes.update(|classes| {
            let Some(thumb) = classes.iter_mut().find_map(|c| {
                let position = c.images.iter().position(|t| t.id == id)?;
                Some(c.images.remove(position))
            }) else {
                return;
            };
            if let Some(class) = classes.iter_mut().find(|c| c.id == to) {
                class.images.push(thumb);
            }
        });
        // Its case is settled: out of the review's list.
        self.review.update(|review| {
            if let Some(items) = review {
                items.retain(|item| item.image != id);
            }
        });
        self.data_changed();
    }

    /// A comparison's progress: its plan, then each fold as it finishes.
    fn on_compare_event(&self, event: CompareEvent) {
        match event {
            CompareEvent::Planned {
                budget_seconds,
                folds,
                candidates,
                ..
            } => self.comparing.update(|progress| {
                let progress = progress.get_or_insert_with(CompareProgress::default);
                progress.budget_seconds = Some(budget_seconds);
                progress.folds_total = folds * candidates.len();
                progress.plan = candidates;
            }),
            CompareEvent::Fold { .. } => self.comparing.update(|progress| {
                if let Some(progress) = progress {
                    progress.folds_done += 1;
                }
            }),
            CompareEvent::Step { strategy, fold } => {
                let now = format!("{}, fold {}", strategy.name(), fold + 1);
                if self
                    .comparing
                    .with_untracked(|p| p.as_ref().is_some_and(|p| p.current.as_ref() != Some(&now)))
                {
                    self.comparing.update(|progress| {
                        if let Some(progress) = progress {
                            progress.current = Some(now);
                        }
                    });
                }
            }
        }
    }

    /// The recommendation chooses its strategy (and its k); the person can still change both.
    fn recommended(&self, recommendation: Recommendation) {
        self.measuring.set(None);
        if let Strategy::PartialFreeze { trainable_blocks } = recommendation.strategy {
            self.trainable_blocks.set(trainable_blocks);
        }
        self.strategy.set(Some(recommendation.strategy.kind()));
        self.recommendation.set(Some(recommendation));
    }

    /// Downloads an export's files (one payload each) and keeps links to them.
    fn exported(&self, files: Vec<String>, payloads: Vec<Vec<u8>>) {
        let downloads: Vec<(ObjectUrl, String)> = files
            .into_iter()
            .zip(payloads)
            .map(|(name, bytes)| (blob_url(&bytes, Some("application/octet-stream")), name))
            .collect();
        for (url, name) in &downloads {
            download(url, name);
        }
        // The previous export's URLs are released as this one replaces them.
        self.exported.set(downloads);
    }

    pub(crate) fn on_train_event(&self, event: TrainEvent) {
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
}
