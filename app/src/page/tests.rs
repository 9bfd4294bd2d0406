//! The page's state transitions, natively: what worker and training events do to what the page
//! shows, and what the person's choices make of the training configuration and the stored view.

use std::collections::BTreeMap;

use graft_engine::recommend::{self, Quadrant, Signals};
use graft_engine::strategy::{Strategy, StrategyKind};
use graft_engine::train::{PhaseInfo, TrainEvent, TrainSummary};
use leptos::prelude::*;

use super::state::Studio;
use crate::protocol::{ClassEntry, ClassId, Rejected, Work, WorkerEvent};

fn phase(name: &str, epochs: usize) -> PhaseInfo {
    PhaseInfo {
        name: name.into(),
        epochs,
        frozen_blocks: 19,
        trainable_blocks: 0,
        head_lr: 1e-3,
    }
}

fn summary(epochs: usize, cancelled: bool) -> TrainSummary {
    TrainSummary {
        strategy: "head-only".into(),
        strategy_config: Strategy::HeadOnly,
        epochs,
        best_epoch: Some(epochs),
        val_accuracy: Some(0.75),
        val_loss: Some(0.5),
        per_class_accuracy: BTreeMap::new(),
        confusion: vec![vec![1, 0], vec![1, 2]],
        classes: vec!["birds".into(), "mammals".into()],
        val_images: vec![0, 1, 2, 3],
        val_predictions: vec![0, 1, 1, 1],
        train_images: 12,
        seconds: 3.0,
        cancelled,
    }
}

fn train(studio: &Studio, event: TrainEvent) {
    studio.handle(WorkerEvent::Train(Box::new(event)), Vec::new());
}

fn batch(epoch: usize, batch: usize, batches: usize) -> TrainEvent {
    TrainEvent::Batch {
        phase: "head".into(),
        epoch,
        batch,
        batches,
        loss: 0.7,
    }
}

fn epoch(epoch: usize, epochs: usize) -> TrainEvent {
    TrainEvent::Epoch {
        phase: "head".into(),
        epoch,
        epochs,
        train_loss: 0.6,
        train_accuracy: 0.7,
        val_loss: Some(0.65),
        val_accuracy: Some(0.75),
        lr: 1e-3,
        seconds: 1.0,
        eta_seconds: 2.0,
    }
}

#[test]
fn a_run_moves_the_progress_bar_fills_the_curves_and_ends_done() {
    let studio = Studio::new();
    studio.training.set(true);
    train(
        &studio,
        TrainEvent::Started {
            strategy: Strategy::STAGED_DEFAULT,
            classes: vec!["birds".into(), "mammals".into()],
            train_images: 12,
            val_images: 4,
            phases: vec![phase("head", 1), phase("joint", 3)],
        },
    );
    let progress = studio.progress.get_untracked().expect("a run in progress");
    assert_eq!((progress.epochs, progress.fraction), (4, 0.0), "epochs over all phases");

    train(&studio, batch(1, 1, 2));
    let progress = studio.progress.get_untracked().unwrap();
    assert_eq!((progress.epoch, progress.batch, progress.batches), (1, 1, 2));
    assert!((progress.fraction - 0.125).abs() < 1e-12, "half of one of four epochs");

    train(&studio, epoch(1, 4));
    train(&studio, batch(2, 1, 2));
    let progress = studio.progress.get_untracked().unwrap();
    assert!((progress.fraction - 0.375).abs() < 1e-12, "{}", progress.fraction);
    assert_eq!(progress.eta_seconds, Some(2.0));
    assert_eq!(studio.history.with_untracked(Vec::len), 1, "one point per epoch");

    // Early stopping leaves epochs out: the bar still ends full, over the epochs that ran.
    train(
        &studio,
        TrainEvent::EarlyStop {
            phase: "joint".into(),
            epoch: 3,
            best_epoch: 1,
        },
    );
    train(&studio, TrainEvent::Done(summary(3, false)));
    let progress = studio.progress.get_untracked().unwrap();
    assert_eq!(progress.done.as_deref(), Some("done"));
    assert_eq!((progress.epoch, progress.epochs, progress.fraction), (3, 3, 1.0));
    assert_eq!(progress.eta_seconds, None);
    assert!(!studio.training.get_untracked(), "the train button is back");
    assert_eq!(studio.summary.get_untracked(), Some(summary(3, false)));
    let messages = studio.messages.get_untracked();
    assert!(
        messages
            .iter()
            .any(|(error, m)| !error && m.contains("Stopped early after epoch 3") && m.contains("since epoch 1")),
        "{messages:?}"
    );
}

#[test]
fn a_stopped_run_keeps_how_far_it_got_and_says_so() {
    let studio = Studio::new();
    studio.training.set(true);
    train(
        &studio,
        TrainEvent::Started {
            strategy: Strategy::HeadOnly,
            classes: vec!["birds".into(), "mammals".into()],
            train_images: 12,
            val_images: 4,
            phases: vec![phase("head", 10)],
        },
    );
    train(&studio, batch(3, 1, 1));
    train(&studio, TrainEvent::Done(summary(2, true)));
    let progress = studio.progress.get_untracked().unwrap();
    assert_eq!(progress.done.as_deref(), Some("stopped"));
    assert!(
        progress.fraction < 1.0,
        "the bar shows how far it got: {}",
        progress.fraction
    );
    assert!(!studio.training.get_untracked());
    assert!(
        studio
            .messages
            .get_untracked()
            .iter()
            .any(|(_, m)| m == "Training stopped; the best model so far is kept.")
    );
}

#[test]
fn a_failure_undoes_what_it_showed_as_going_on_and_is_said() {
    let studio = Studio::new();
    studio.training.set(true);
    studio.measuring.set(Some((0, 16)));
    studio.handle(
        WorkerEvent::Failed {
            request: Work::Recommend,
            message: "no images".into(),
        },
        Vec::new(),
    );
    assert_eq!(studio.measuring.get_untracked(), None);
    assert!(
        studio.training.get_untracked(),
        "a failed measurement does not stop a run"
    );
    studio.handle(
        WorkerEvent::Failed {
            request: Work::Train,
            message: "the GPU ran out of memory".into(),
        },
        Vec::new(),
    );
    assert!(!studio.training.get_untracked());
    assert_eq!(
        studio.messages.get_untracked(),
        [
            (true, "no images".to_string()),
            (true, "the GPU ran out of memory".to_string())
        ]
    );
    // The page keeps the last eight messages.
    for i in 0..10 {
        studio.handle(
            WorkerEvent::Notice {
                message: format!("notice {i}"),
            },
            Vec::new(),
        );
    }
    let messages = studio.messages.get_untracked();
    assert_eq!(messages.len(), 8);
    assert_eq!(messages[0].1, "notice 2");
    assert_eq!(messages[7].1, "notice 9");
}

#[test]
fn pictures_for_a_class_deleted_meanwhile_are_not_shown_and_refusals_are_said() {
    let studio = Studio::new();
    let kept = ClassId(1 << 40);
    studio.handle(
        WorkerEvent::ProjectRestored {
            classes: vec![ClassEntry {
                id: kept,
                name: "birds".into(),
            }],
        },
        Vec::new(),
    );
    assert_eq!(studio.classes.with_untracked(|c| c[0].name.clone()), "birds");
    // Pictures the worker took for a class the page has deleted since: none shown anywhere.
    let refused = |n: usize| {
        (0..n)
            .map(|i| Rejected {
                name: format!("file{i}.txt"),
                reason: "not an image".into(),
            })
            .collect::<Vec<_>>()
    };
    studio.handle(
        WorkerEvent::ImagesAdded {
            class: ClassId(2 << 40),
            added: Vec::new(),
            rejected: refused(2),
        },
        Vec::new(),
    );
    assert_eq!(studio.classes.with_untracked(|c| c[0].images.len()), 0);
    let messages = studio.messages.get_untracked();
    assert_eq!(messages[1], (true, "file0.txt was not added: not an image".to_string()));
    assert_eq!(messages[2], (true, "file1.txt was not added: not an image".to_string()));
    // Three are still said one by one; a fourth makes one message.
    studio.handle(
        WorkerEvent::ImagesAdded {
            class: kept,
            added: Vec::new(),
            rejected: refused(3),
        },
        Vec::new(),
    );
    assert_eq!(
        studio.messages.get_untracked().last().unwrap().1,
        "file2.txt was not added: not an image"
    );
    // Many refusals in one message.
    studio.handle(
        WorkerEvent::ImagesAdded {
            class: kept,
            added: Vec::new(),
            rejected: refused(40),
        },
        Vec::new(),
    );
    assert_eq!(
        studio.messages.get_untracked().last().unwrap().1,
        "40 files were not added: file0.txt (not an image); file1.txt (not an image); file2.txt (not an image), and 37 more."
    );
}

#[test]
fn a_recommendation_chooses_its_strategy_and_the_choices_make_the_configuration() {
    let studio = Studio::new();
    assert_eq!(studio.config(), None, "nothing to train before a strategy is chosen");
    let dissimilar = Signals {
        sampled_images: 20,
        block_shift: vec![0.6; 19],
        mean_shift: 0.6,
        shift_score: 0.1,
        imagenet_confidence: 0.1,
        imagenet_entropy: 0.9,
        separability: 0.5,
        chance: 0.5,
        separability_score: 0.0,
    };
    let recommendation = recommend::decide(&["a".into(), "b".into()], &[10, 10], dissimilar, 890);
    assert_eq!(recommendation.quadrant, Quadrant::SmallDissimilar);
    let Strategy::PartialFreeze { trainable_blocks } = recommendation.strategy else {
        panic!(
            "small and dissimilar: partial freeze, got {:?}",
            recommendation.strategy
        );
    };
    studio.measuring.set(Some((16, 20)));
    studio.handle(
        WorkerEvent::Recommendation(Box::new(recommendation.clone())),
        Vec::new(),
    );
    assert_eq!(studio.measuring.get_untracked(), None);
    assert_eq!(studio.strategy.get_untracked(), Some(StrategyKind::PartialFreeze));
    assert_eq!(studio.trainable_blocks.get_untracked(), trainable_blocks);
    let config = studio.config().expect("a configuration");
    assert_eq!(config.strategy, recommendation.strategy);

    // The person overrides: full fine-tune, 3 epochs, their learning rate, batches of 8.
    studio.strategy.set(Some(StrategyKind::Full));
    studio.epochs.set(Some(3));
    studio.lr.set(Some(5e-4));
    studio.batch.set(8);
    let config = studio.config().unwrap();
    assert_eq!(
        (config.strategy, config.epochs, config.lr, config.batch_size),
        (Strategy::FullFineTune, 3, Some(5e-4), 8)
    );
    // Every kind the page offers makes a configuration of that kind.
    for kind in StrategyKind::ALL {
        studio.strategy.set(Some(kind));
        assert_eq!(studio.config().unwrap().strategy.kind(), kind);
    }

    // What a reload brings back is what was chosen.
    studio.strategy.set(Some(StrategyKind::Staged));
    let view = studio.view();
    assert_eq!(view.strategy, Some(StrategyKind::Staged));
    let restored = Studio::new();
    restored.restore_view(view.clone());
    assert_eq!(restored.view(), view);
    assert_eq!(restored.config(), studio.config());
}

#[test]
fn another_tab_taking_the_project_over_stops_a_run_here_and_says_so() {
    let studio = Studio::new();
    studio.training.set(true);
    studio.handle(WorkerEvent::OpenElsewhere { taken: true }, Vec::new());
    assert_eq!(studio.elsewhere.get_untracked(), Some(true));
    assert!(!studio.training.get_untracked(), "a run there could keep nothing");
    // The requests that change the project are exactly the ones a tab without it refuses.
    use crate::protocol::WorkerRequest;
    assert!(WorkerRequest::RemoveClass { id: ClassId(7) }.edits_project());
    assert!(WorkerRequest::Continue.edits_project());
    assert!(!WorkerRequest::TakeOver.edits_project());
    assert!(!WorkerRequest::Predict { picture: 1 }.edits_project());
    assert_eq!(WorkerRequest::Continue.work(), Work::Train);
}

#[test]
fn speeds_measured_on_another_device_are_forgotten() {
    use graft_engine::model::ModelKind;
    let ready = |device: &str, gpu: bool| WorkerEvent::Ready {
        device: device.into(),
        gpu,
    };
    let speed = |images_per_second: f64| WorkerEvent::ModelSpeed {
        model: ModelKind::MobileNetV2,
        images_per_second,
    };
    let cpu = "CPU fallback: WebGPU here is a software adapter (google swiftshader), slower than the CPU";
    let gpu = "WebGPU: google swiftshader (software adapter)";

    let studio = Studio::new();
    studio.handle(ready(cpu, false), Vec::new());
    studio.handle(speed(70.0), Vec::new());
    let view = studio.view();
    assert_eq!(view.speeds, vec![(ModelKind::MobileNetV2, 70.0)]);
    assert_eq!(view.speeds_device.as_deref(), Some(cpu));

    // Reloaded on the same device, the view first: the speed stays.
    let same = Studio::new();
    same.restore_view(view.clone());
    same.handle(ready(cpu, false), Vec::new());
    assert_eq!(same.speeds.get_untracked(), vec![(ModelKind::MobileNetV2, 70.0)]);

    // Reloaded after WebGPU was chosen, in either order of the events: the CPU's speed is not WebGPU's.
    let device_first = Studio::new();
    device_first.handle(ready(gpu, true), Vec::new());
    device_first.restore_view(view.clone());
    assert!(device_first.speeds.get_untracked().is_empty());
    let view_first = Studio::new();
    view_first.restore_view(view);
    assert_eq!(
        view_first.speeds.get_untracked().len(),
        1,
        "the device is not known yet"
    );
    view_first.handle(ready(gpu, true), Vec::new());
    assert!(view_first.speeds.get_untracked().is_empty());
    assert_eq!(view_first.view().speeds_device, None);

    // The GPU lost mid-session: its speed goes too; measured again, it is the CPU's.
    studio.handle(ready("CPU fallback: the GPU was lost (device lost)", false), Vec::new());
    assert!(studio.speeds.get_untracked().is_empty());
    studio.handle(speed(65.0), Vec::new());
    assert_eq!(
        studio.view().speeds_device.as_deref(),
        Some("CPU fallback: the GPU was lost (device lost)")
    );
}

/// Predictions run beside the worker's inbox, so their answers can come back in any order: the
/// try-it panel shows the answer for the picture asked about last, never a late one beside it.
#[test]
fn a_late_answer_is_never_shown_beside_a_newer_picture() {
    let studio = Studio::new();
    let answer = |picture: u64, class: &str| {
        studio.handle(
            WorkerEvent::Prediction {
                picture,
                top: vec![(class.to_string(), 0.9)],
            },
            Vec::new(),
        )
    };
    let shown = || {
        studio
            .trying
            .with_untracked(|t| t.answer.clone().map(|(n, top)| (n, top[0].0.clone())))
    };
    let ask = |name: &str| studio.trying.try_update(|t| t.ask_file(name.into())).unwrap();

    let cat = ask("cat.png");
    let espresso = ask("espresso.png");
    assert!(espresso > cat);
    answer(cat, "cats");
    assert_eq!(shown(), None, "the cat's answer came after the espresso was chosen");
    answer(espresso, "coffee");
    assert_eq!(shown(), Some((espresso, "coffee".into())));
    assert_eq!(
        studio.trying.with_untracked(|t| t.name.clone()).as_deref(),
        Some("espresso.png")
    );

    // The webcam: each frame's answer replaces an older one's, and a late one is dropped; what the
    // file showed goes when the webcam starts.
    studio.trying.update(|t| t.start_live());
    assert_eq!(shown(), None);
    assert_eq!(studio.trying.with_untracked(|t| t.name.clone()), None);
    let frames: Vec<u64> = (0..3)
        .map(|_| studio.trying.try_update(|t| t.ask_frame()).unwrap())
        .collect();
    answer(frames[1], "second");
    answer(frames[0], "first");
    assert_eq!(shown(), Some((frames[1], "second".into())));
    answer(frames[2], "third");
    assert_eq!(shown(), Some((frames[2], "third".into())));
    // A file chosen while frames are still out: their answers no longer show.
    let bird = ask("bird.png");
    answer(frames[2], "third again");
    assert_eq!(shown(), None);
    answer(bird, "birds");
    assert_eq!(shown(), Some((bird, "birds".into())));
}

/// Edits the page sent and the worker has not handled yet are counted, so that the page can say it is
/// still saving (and the tests reload only once everything is stored).
#[test]
fn edits_are_pending_until_the_worker_has_handled_them() {
    let studio = Studio::new();
    assert_eq!(studio.edits_pending(), 0);
    for _ in 0..3 {
        studio.edits.update(|(sent, _)| *sent += 1);
    }
    assert_eq!(studio.edits_pending(), 3);
    studio.handle(WorkerEvent::Handled { edits: 2 }, Vec::new());
    assert_eq!(studio.edits_pending(), 1);
    studio.handle(WorkerEvent::Handled { edits: 3 }, Vec::new());
    assert_eq!(studio.edits_pending(), 0);
}

/// A crash of the worker (the bridge has started a new one by then): what was under way stops, the
/// person hears what failed, and the edit count starts again with the new worker's.
#[test]
fn a_worker_crash_while_classifying_is_said_and_nothing_waits_for_it() {
    let studio = Studio::new();
    studio.device.set(Some(("CPU".into(), false)));
    studio.edits.set((5, 4));
    let picture = studio.trying.try_update(|t| t.ask_file("cat.png".into())).unwrap();
    assert!(studio.trying.with_untracked(|t| t.waiting()));
    studio.handle(
        WorkerEvent::Crashed {
            message: "index out of bounds (at app/worker/src/serve.rs:80)".into(),
        },
        Vec::new(),
    );
    let (error, said) = studio.messages.with_untracked(|m| m.last().cloned()).unwrap();
    assert!(error);
    assert!(said.contains("while classifying your picture"), "{said}");
    assert!(
        said.contains("index out of bounds (at app/worker/src/serve.rs:80)"),
        "{said}"
    );
    assert!(
        said.contains("restarted with your project as it was last saved"),
        "{said}"
    );
    assert!(!studio.trying.with_untracked(|t| t.waiting()));
    // The lost answer, should it come, is never shown; the next picture's is.
    studio.handle(
        WorkerEvent::Prediction {
            picture,
            top: vec![("cats".into(), 0.9)],
        },
        Vec::new(),
    );
    assert_eq!(studio.trying.with_untracked(|t| t.answer.clone()), None);
    let next = studio.trying.try_update(|t| t.ask_file("dog.png".into())).unwrap();
    studio.handle(
        WorkerEvent::Prediction {
            picture: next,
            top: vec![("dogs".into(), 0.8)],
        },
        Vec::new(),
    );
    assert_eq!(
        studio.trying.with_untracked(|t| t.answer.clone()),
        Some((next, vec![("dogs".into(), 0.8)]))
    );
    assert_eq!(studio.edits_pending(), 0);
    assert_eq!(
        studio.device.get_untracked(),
        None,
        "the badge waits for the new worker"
    );

    // During training, it says so and the run is over.
    studio.training.set(true);
    studio.handle(WorkerEvent::Crashed { message: "boom".into() }, Vec::new());
    let said = studio.messages.with_untracked(|m| m.last().cloned()).unwrap().1;
    assert!(said.contains("while training (boom)"), "{said}");
    assert!(!studio.training.get_untracked());
}

#[test]
fn a_class_name_is_taken_once() {
    let studio = Studio::new();
    studio.handle(
        WorkerEvent::ProjectRestored {
            classes: vec![
                ClassEntry {
                    id: ClassId(1),
                    name: "Class 1".into(),
                },
                ClassEntry {
                    id: ClassId(2),
                    name: "Class 3".into(),
                },
            ],
        },
        Vec::new(),
    );
    assert!(studio.class_named("Class 3", None));
    assert!(studio.class_named("Class 3", Some(ClassId(1))));
    assert!(!studio.class_named("Class 3", Some(ClassId(2))), "its own name");
    assert!(!studio.class_named("Class 2", None));
    // Two classes, one of them "Class 3" (after a deletion): a new class is "Class 4", not a second
    // "Class 3".
    assert_eq!(studio.free_class_name(), "Class 4");
}
