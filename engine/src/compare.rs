//! Measure, don't guess: the recommended strategy and its real alternatives trained on the same
//! stratified folds of the person's own pictures, each within an even share of a time budget, with
//! the spread across folds and a plain verdict on whether the differences are more than noise.
//!
//! How the budget is kept: each candidate is first timed on a probe (a batch of training and one of
//! validation images, three epochs: a real run, so that caching, the trainable depth and the device
//! all count), which gives its set-up seconds per run and its seconds per picture and epoch; then,
//! for head-only, every picture is embedded once into the cache its folds share. The budget (by
//! default what one normal run of the recommended strategy takes, at least [`MIN_BUDGET_SECONDS`];
//! the probes and that embedding count in it) is split evenly between the candidates and
//! their folds; each candidate gets the epochs that fit its share (at most its normal number). When
//! one epoch does not fit, the candidate trains one epoch on a stratified part of each fold's
//! training images; every candidate validates on the same whole folds. A run that overruns its share
//! by half is stopped after its first epoch (its best epoch counts).
//!
//! Accuracy is each fold's validation accuracy of the kept (best) epoch, as a normal run reports it.
//! The noise is judged per pair with the best, across the same folds: a difference counts when it is
//! more than twice its standard error and more than one validation picture's worth.

use std::ops::ControlFlow;

use burn::prelude::Device;
use serde::{Deserialize, Serialize};
use web_time::Instant;

use crate::cache::EmbeddingCache;
use crate::data::{self, Dataset, Split};
use crate::model::{ImageClassifier, ModelKind};
use crate::strategy::Strategy;
use crate::train::{TrainConfig, TrainError, TrainEvent, TrainObserver, Training};

/// The smallest default budget: below it the costly candidates get no useful epoch.
pub const MIN_BUDGET_SECONDS: f64 = 120.0;
/// Folds when none are asked for.
pub const DEFAULT_FOLDS: usize = 3;
/// Images a subsample keeps of each class at least.
const MIN_PER_CLASS: usize = 6;

/// What shapes a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareConfig {
    /// Wall-time budget in seconds; `None`: about one normal run of the recommended strategy.
    pub budget_seconds: Option<f64>,
    pub folds: usize,
    pub seed: u64,
    /// Images per batch through trainable blocks (as [`TrainConfig::batch_size`]).
    pub batch_size: usize,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            budget_seconds: None,
            folds: DEFAULT_FOLDS,
            seed: 0,
            batch_size: 16,
        }
    }
}

/// One strategy's measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyResult {
    pub strategy: Strategy,
    /// Epochs each fold trained for (fewer after early stopping).
    pub epochs: usize,
    /// Training images per fold (fewer than the fold has when the share did not fit them all).
    pub train_images: usize,
    pub mean_accuracy: f64,
    /// Standard deviation of the folds' accuracies.
    pub std_accuracy: f64,
    /// Validation accuracy per fold.
    pub folds: Vec<f64>,
    /// Wall time of its folds.
    pub seconds: f64,
    /// Folds stopped for overrunning their share.
    pub stopped_folds: usize,
}

/// What a comparison found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Best mean accuracy first.
    pub results: Vec<StrategyResult>,
    pub best: Strategy,
    pub recommended: Strategy,
    /// The strategies whose difference from the best is within the noise.
    pub within_noise: Vec<Strategy>,
    /// What to train, and why, in words.
    pub verdict: String,
    pub budget_seconds: f64,
    pub seconds: f64,
    pub folds: usize,
    pub images: usize,
    /// Seconds spent before the plan (part of the budget): timing the candidates, and embedding every
    /// picture once for head-only.
    pub probe_seconds: f64,
}

/// What a candidate will get: its epochs, and the part of each fold's training images it trains on
/// (below 1 when one epoch of all of them does not fit its share).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    pub strategy: Strategy,
    pub epochs: usize,
    pub train_fraction: f64,
}

/// Progress of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum CompareEvent {
    /// Before anything is trained: the budget, what will run, on how many images.
    Planned {
        budget_seconds: f64,
        folds: usize,
        images: usize,
        candidates: Vec<Planned>,
    },
    /// A batch of a candidate's fold trained (the observer can stop the comparison here).
    Step { strategy: Strategy, fold: usize },
    /// One candidate's fold finished.
    Fold {
        strategy: Strategy,
        fold: usize,
        accuracy: f64,
        seconds: f64,
    },
}

/// Follows a comparison: [`event`](Self::event) for each [`CompareEvent`] (`Break` stops it), and
/// [`between_batches`](Self::between_batches) awaited between training batches (a browser worker
/// yields to its event loop there, so that a stop request can arrive). Closures are observers.
pub trait CompareObserver {
    fn event(&mut self, event: &CompareEvent) -> ControlFlow<()>;

    fn between_batches(&mut self) -> impl Future<Output = ()> {
        async {}
    }
}

impl<F: FnMut(&CompareEvent) -> ControlFlow<()>> CompareObserver for F {
    fn event(&mut self, event: &CompareEvent) -> ControlFlow<()> {
        self(event)
    }
}

/// One fold run's observer: the person's stop and the time limit, over the comparison's observer.
struct FoldWatch<'a, O> {
    observer: &'a mut O,
    strategy: Strategy,
    fold: usize,
    clock: Instant,
    limit: f64,
    epochs_done: usize,
    stopped_by_person: bool,
}

impl<O: CompareObserver> TrainObserver for FoldWatch<'_, O> {
    fn event(&mut self, event: TrainEvent) -> ControlFlow<()> {
        match event {
            TrainEvent::Batch { .. } => {
                let step = CompareEvent::Step {
                    strategy: self.strategy,
                    fold: self.fold,
                };
                if self.observer.event(&step).is_break() {
                    self.stopped_by_person = true;
                    return ControlFlow::Break(());
                }
            }
            TrainEvent::Epoch { .. } => self.epochs_done += 1,
            _ => {}
        }
        // Over its share (with a margin) and with a validated epoch to show for it.
        if self.epochs_done > 0 && self.clock.elapsed().as_secs_f64() > self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    async fn between_batches(&mut self) {
        self.observer.between_batches().await;
    }
}

/// Why a comparison could not run.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("a comparison needs at least two pictures in each of two classes")]
    TooFew,
    #[error("the comparison was stopped")]
    Cancelled,
}

/// The candidates for `recommended` on a body of `num_blocks` blocks: head-only, partial freezing at
/// the recommender's depth and at another, staged, full fine-tuning, and the recommended one if it is
/// none of these (training from scratch). Recommended first.
pub fn candidates(recommended: Strategy, num_blocks: usize) -> Vec<Strategy> {
    let k = match recommended {
        Strategy::PartialFreeze { trainable_blocks } => trainable_blocks,
        _ => (num_blocks / 3).max(1),
    }
    .min(num_blocks);
    let other = if k * 2 <= num_blocks { k * 2 } else { (k / 2).max(1) };
    let mut all = vec![
        recommended,
        Strategy::HeadOnly,
        Strategy::PartialFreeze { trainable_blocks: k },
        Strategy::PartialFreeze {
            trainable_blocks: other,
        },
        Strategy::STAGED_DEFAULT,
        Strategy::FullFineTune,
    ];
    let mut seen = Vec::new();
    all.retain(|s| {
        let fresh = !seen.contains(s);
        seen.push(*s);
        fresh
    });
    all
}

/// The probe's observer: a fold watch without a limit that notes when each epoch ends.
struct Timing<'a, 'b, O> {
    watch: &'a mut FoldWatch<'b, O>,
    ends: &'a mut Vec<f64>,
}

impl<O: CompareObserver> TrainObserver for Timing<'_, '_, O> {
    fn event(&mut self, event: TrainEvent) -> ControlFlow<()> {
        if matches!(event, TrainEvent::Epoch { .. }) {
            self.ends.push(self.watch.clock.elapsed().as_secs_f64());
        }
        self.watch.event(event)
    }

    async fn between_batches(&mut self) {
        self.watch.between_batches().await;
    }
}

/// What a candidate's run costs: `setup` seconds once per run, and `epoch` seconds per picture of the
/// fold (training and validation) and epoch, plus half an epoch for its caches.
#[derive(Debug, Clone, Copy)]
struct Cost {
    setup: f64,
    epoch: f64,
}

impl Cost {
    fn run(&self, images: f64, epochs: f64) -> f64 {
        self.setup + images * self.epoch * (epochs + 0.5)
    }
}

/// The normal run's epochs for `strategy` ([`TrainConfig::new`]).
fn normal_epochs(strategy: Strategy) -> usize {
    TrainConfig::new(strategy).epochs
}

/// The config of one candidate's fold run: its defaults, `epochs` (staged's head phase scaled so
/// that a joint phase is left).
fn run_config(strategy: Strategy, epochs: usize, config: &CompareConfig) -> TrainConfig {
    let strategy = match strategy {
        Strategy::Staged {
            head_epochs,
            unfreeze_blocks,
            lr_mult,
        } => Strategy::Staged {
            head_epochs: head_epochs.min(epochs.saturating_sub(1)).max(1),
            unfreeze_blocks,
            lr_mult,
        },
        other => other,
    };
    let mut train = TrainConfig::new(strategy);
    train.epochs = match strategy {
        Strategy::Staged { head_epochs, .. } => epochs.max(head_epochs + 1),
        _ => epochs.max(1),
    };
    train.batch_size = config.batch_size;
    train.seed = config.seed;
    train
}

/// Mean and (sample) standard deviation.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Whether `other` is within the noise of `best`, fold by fold: the mean paired difference is at most
/// twice its standard error, or at most `one_picture` (the accuracy one validation picture is worth).
pub fn within_noise(best: &[f64], other: &[f64], one_picture: f64) -> bool {
    let differences: Vec<f64> = best.iter().zip(other).map(|(b, o)| b - o).collect();
    let (mean, std) = mean_std(&differences);
    let standard_error = std / (differences.len().max(1) as f64).sqrt();
    mean <= (2.0 * standard_error).max(one_picture) + 1e-12
}

/// Runs the comparison (see the module's documentation) on `device`, telling `observer` how it goes;
/// the observer can stop it at any event ([`CompareError::Cancelled`]).
pub async fn compare<O: CompareObserver>(
    pretrained: &ImageClassifier,
    kind: ModelKind,
    dataset: &Dataset,
    recommended: Strategy,
    config: &CompareConfig,
    device: &Device,
    observer: &mut O,
) -> Result<Comparison, CompareError> {
    let started = Instant::now();
    dataset.validate().map_err(TrainError::from)?;
    let classes = dataset.classes.len();
    if dataset.class_counts().iter().filter(|&&n| n >= 2).count() < 2 {
        return Err(CompareError::TooFew);
    }
    let folds = config.folds.max(2);
    let num_blocks = kind.architecture().num_body_blocks();
    let strategies = candidates(recommended, num_blocks);
    let mut embeddings = EmbeddingCache::new();
    let labels = dataset.labels();

    // Time each candidate on a probe: a batch of training images and one of validation images
    // (stratified, disjoint), three epochs (staged: its head epoch and two joint ones). The first epoch
    // pays for the set-up and the caches; the later ones are what each further epoch costs.
    let per_batch = config.batch_size.max(classes);
    let fraction = (per_batch as f64 / dataset.examples.len() as f64).min(0.5);
    let probe_train = data::stratified_subsample(&labels, classes, fraction, 1, config.seed);
    let rest: Vec<usize> = (0..labels.len()).filter(|i| !probe_train.contains(i)).collect();
    let rest_labels: Vec<usize> = rest.iter().map(|&i| labels[i]).collect();
    let probe_val: Vec<usize> = data::stratified_subsample(&rest_labels, classes, fraction, 0, config.seed + 1)
        .into_iter()
        .map(|i| rest[i])
        .collect();
    let probe_images = (probe_train.len() + probe_val.len()) as f64;
    let mut costs = Vec::with_capacity(strategies.len());
    for &strategy in &strategies {
        let mut train = run_config(strategy, 3, config);
        train.patience = None;
        let clock = Instant::now();
        let mut watch = FoldWatch {
            observer: &mut *observer,
            strategy,
            fold: 0,
            clock,
            limit: f64::INFINITY,
            epochs_done: 0,
            stopped_by_person: false,
        };
        let mut ends = Vec::new();
        let mut timing = Timing {
            watch: &mut watch,
            ends: &mut ends,
        };
        Training::new(pretrained, kind, dataset, &train)
            .embeddings(&mut embeddings)
            .split(Split {
                train: probe_train.clone(),
                val: probe_val.clone(),
            })
            .run(device, &mut timing)
            .await?;
        if watch.stopped_by_person {
            return Err(CompareError::Cancelled);
        }
        let total = clock.elapsed().as_secs_f64();
        let steady = match ends.as_slice() {
            [.., before, last] => last - before,
            _ => total,
        };
        // What the first epoch costs beyond the others is mostly per run (the model copied and
        // frozen, the optimizer built); its caches grow with the pictures, at about half an epoch's
        // cost per picture at most. Head-only's first epoch embeds the pictures into the cache every
        // run shares: done once for all of them below, before the folds.
        let setup = match strategy {
            Strategy::HeadOnly => 0.0,
            _ => (ends.first().copied().unwrap_or(total) - steady).max(0.0),
        };
        costs.push(Cost {
            setup,
            epoch: steady / probe_images,
        });
    }
    // Head-only trains on the cached embeddings: every picture is embedded once, here, before the
    // budget is shared out (it counts in the budget like the probes), so that no fold pays for it.
    if strategies.contains(&Strategy::HeadOnly) {
        let filled = embeddings
            .fill(pretrained, kind, dataset, async |_, _| {
                observer.between_batches().await;
                observer.event(&CompareEvent::Step {
                    strategy: Strategy::HeadOnly,
                    fold: 0,
                })
            })
            .await
            .map_err(TrainError::from)?;
        if filled.is_break() {
            return Err(CompareError::Cancelled);
        }
    }
    let probing = started.elapsed().as_secs_f64();

    // The folds, the same for every candidate (their validation parts always whole).
    let images = dataset.examples.len();
    let splits = data::stratified_folds(&labels, classes, folds, config.seed);
    let smallest_val = splits.iter().map(|s| s.val.len()).min().unwrap_or(1).max(1);
    let (train_size, val_size) = ((images - images / folds) as f64, (images / folds) as f64);
    let budget = config.budget_seconds.unwrap_or_else(|| {
        let normal = costs[0].run(train_size + val_size, normal_epochs(strategies[0]) as f64);
        (normal + probing).max(MIN_BUDGET_SECONDS)
    });
    let share = ((budget - probing) / (strategies.len() * folds) as f64).max(0.0);
    // Each candidate: the epochs that fit its share, at most its normal number; a candidate that
    // cannot fit one epoch trains one epoch on the part of each fold's training images that fits.
    let plan: Vec<Planned> = strategies
        .iter()
        .zip(&costs)
        .map(|(&strategy, cost)| {
            let fold = train_size + val_size;
            let epochs = ((share - cost.setup) / (cost.epoch * fold).max(1e-9) - 0.5).floor();
            if epochs >= 1.0 {
                Planned {
                    strategy,
                    epochs: (epochs as usize).min(normal_epochs(strategy)),
                    train_fraction: 1.0,
                }
            } else {
                let affordable = (share - cost.setup) / (1.5 * cost.epoch).max(1e-9) - val_size;
                Planned {
                    strategy,
                    epochs: 1,
                    train_fraction: (affordable / train_size.max(1.0)).clamp(0.0, 1.0),
                }
            }
        })
        .collect();
    if observer
        .event(&CompareEvent::Planned {
            budget_seconds: budget,
            folds,
            images,
            candidates: plan.clone(),
        })
        .is_break()
    {
        return Err(CompareError::Cancelled);
    }

    let mut results = Vec::with_capacity(plan.len());
    for planned in &plan {
        let strategy = planned.strategy;
        let train = run_config(strategy, planned.epochs, config);
        let mut accuracies = Vec::with_capacity(folds);
        let mut seconds = 0.0;
        let mut stopped = 0;
        let mut ran_epochs = 0;
        let mut trained_on = 0;
        for (fold, split) in splits.iter().enumerate() {
            let mut split = split.clone();
            if planned.train_fraction < 1.0 {
                let fold_labels: Vec<usize> = split.train.iter().map(|&i| labels[i]).collect();
                let kept = data::stratified_subsample(
                    &fold_labels,
                    classes,
                    planned.train_fraction,
                    MIN_PER_CLASS,
                    config.seed,
                );
                split.train = kept.into_iter().map(|i| split.train[i]).collect();
            }
            trained_on = trained_on.max(split.train.len());
            let mut watch = FoldWatch {
                observer: &mut *observer,
                strategy,
                fold,
                clock: Instant::now(),
                limit: share * 1.5,
                epochs_done: 0,
                stopped_by_person: false,
            };
            let trained = Training::new(pretrained, kind, dataset, &train)
                .embeddings(&mut embeddings)
                .split(split)
                .run(device, &mut watch)
                .await?;
            let (stopped_by_person, elapsed) = (watch.stopped_by_person, watch.clock.elapsed().as_secs_f64());
            if stopped_by_person {
                return Err(CompareError::Cancelled);
            }
            seconds += elapsed;
            stopped += usize::from(trained.summary.cancelled);
            ran_epochs = ran_epochs.max(trained.summary.epochs);
            let accuracy = trained.summary.val_accuracy.unwrap_or(0.0);
            accuracies.push(accuracy);
            if observer
                .event(&CompareEvent::Fold {
                    strategy,
                    fold,
                    accuracy,
                    seconds: elapsed,
                })
                .is_break()
            {
                return Err(CompareError::Cancelled);
            }
        }
        let (mean, std) = mean_std(&accuracies);
        results.push(StrategyResult {
            strategy,
            epochs: ran_epochs,
            train_images: trained_on,
            mean_accuracy: mean,
            std_accuracy: std,
            folds: accuracies,
            seconds,
            stopped_folds: stopped,
        });
    }

    let best = results
        .iter()
        .max_by(|a, b| {
            a.mean_accuracy
                .total_cmp(&b.mean_accuracy)
                .then(b.seconds.total_cmp(&a.seconds))
        })
        .expect("at least one candidate")
        .clone();
    let one_picture = 1.0 / smallest_val as f64;
    let within: Vec<Strategy> = results
        .iter()
        .filter(|r| r.strategy != best.strategy && within_noise(&best.folds, &r.folds, one_picture))
        .map(|r| r.strategy)
        .collect();
    let cheapest_close = results
        .iter()
        .filter(|r| r.strategy == best.strategy || within.contains(&r.strategy))
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .expect("the best is close to itself");
    // Beaten candidates that the budget cut short of a normal run (fewer epochs, part of the pictures):
    // the verdict says the budget, not only the strategy, may have ranked them.
    let cut_short = cut_short(&plan, best.strategy, &within);
    let mut verdict = verdict(&best, cheapest_close, &within, recommended);
    if !cut_short.is_empty() {
        let names: Vec<String> = cut_short.iter().map(describe).collect();
        verdict.push_str(&format!(
            " This budget gave {} less training than a normal run: a larger budget measures {} more fairly.",
            names.join(", "),
            if cut_short.len() == 1 { "it" } else { "them" }
        ));
    }
    results.sort_by(|a, b| b.mean_accuracy.total_cmp(&a.mean_accuracy));
    Ok(Comparison {
        results,
        best: best.strategy,
        recommended,
        within_noise: within,
        verdict,
        budget_seconds: budget,
        seconds: started.elapsed().as_secs_f64(),
        folds,
        images,
        probe_seconds: probing,
    })
}

/// The beaten candidates (neither the best nor within its noise) that the plan gave fewer epochs than
/// their normal run, or part of the pictures.
fn cut_short(plan: &[Planned], best: Strategy, within: &[Strategy]) -> Vec<Strategy> {
    plan.iter()
        .filter(|p| p.strategy != best && !within.contains(&p.strategy))
        .filter(|p| p.epochs < normal_epochs(p.strategy) || p.train_fraction < 1.0)
        .map(|p| p.strategy)
        .collect()
}

/// A strategy by name, with its depth for partial freezing (two of them are compared).
pub fn describe(strategy: &Strategy) -> String {
    match strategy {
        Strategy::PartialFreeze { trainable_blocks } => format!("partial-freeze ({trainable_blocks} blocks)"),
        other => other.name().to_string(),
    }
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The comparison in words: the best, whether the rest are within noise, and what to train.
fn verdict(
    best: &StrategyResult,
    cheapest_close: &StrategyResult,
    within: &[Strategy],
    recommended: Strategy,
) -> String {
    let best_text = format!(
        "{} is best at {} (± {} across folds)",
        describe(&best.strategy),
        percent(best.mean_accuracy),
        percent(best.std_accuracy)
    );
    if within.is_empty() {
        return format!(
            "{best_text}, by more than the noise: train {}.",
            describe(&best.strategy)
        );
    }
    let close: Vec<String> = within.iter().map(describe).collect();
    let mut text = format!(
        "{best_text}; {} within the noise of it, so the measurement cannot tell them apart",
        close.join(", ")
    );
    if cheapest_close.strategy != best.strategy {
        text.push_str(&format!(
            ": the cheaper {} ({:.0} s against {:.0} s) is the better choice",
            describe(&cheapest_close.strategy),
            cheapest_close.seconds,
            best.seconds
        ));
    }
    if cheapest_close.strategy == recommended || (within.contains(&recommended) || best.strategy == recommended) {
        text.push_str(&format!(
            " (the recommendation, {}, is among them)",
            describe(&recommended)
        ));
    }
    text.push('.');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beaten_candidates_trained_less_than_a_normal_run_are_named() {
        let planned = |strategy: Strategy, epochs: usize, train_fraction: f64| Planned {
            strategy,
            epochs,
            train_fraction,
        };
        let partial = Strategy::PartialFreeze { trainable_blocks: 6 };
        let plan = [
            planned(Strategy::HeadOnly, normal_epochs(Strategy::HeadOnly), 1.0),
            planned(partial, 1, 1.0),
            planned(Strategy::STAGED_DEFAULT, normal_epochs(Strategy::STAGED_DEFAULT), 1.0),
            planned(Strategy::FullFineTune, 1, 0.25),
            planned(Strategy::PartialFreeze { trainable_blocks: 12 }, 1, 0.5),
        ];
        let within = [Strategy::PartialFreeze { trainable_blocks: 12 }];
        // The best, a full run and one within the noise are not named; the two cut short are.
        assert_eq!(
            cut_short(&plan, Strategy::HeadOnly, &within),
            vec![partial, Strategy::FullFineTune]
        );
    }

    #[test]
    fn candidates_cover_the_alternatives_once_recommended_first() {
        let all = candidates(Strategy::PartialFreeze { trainable_blocks: 6 }, 19);
        assert_eq!(
            all,
            vec![
                Strategy::PartialFreeze { trainable_blocks: 6 },
                Strategy::HeadOnly,
                Strategy::PartialFreeze { trainable_blocks: 12 },
                Strategy::STAGED_DEFAULT,
                Strategy::FullFineTune,
            ]
        );
        let all = candidates(Strategy::FromScratch, 19);
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], Strategy::FromScratch);
        assert!(all.contains(&Strategy::PartialFreeze { trainable_blocks: 6 }));
        let all = candidates(Strategy::PartialFreeze { trainable_blocks: 15 }, 19);
        assert!(all.contains(&Strategy::PartialFreeze { trainable_blocks: 7 }));
    }

    #[test]
    fn noise_is_judged_on_paired_folds() {
        // The same small lead in every fold: real, though small.
        assert!(!within_noise(&[0.90, 0.92, 0.91], &[0.85, 0.87, 0.86], 0.01));
        // A lead that comes from one fold: noise.
        assert!(within_noise(&[0.95, 0.80, 0.82], &[0.80, 0.81, 0.82], 0.01));
        // Less than one validation picture: noise.
        assert!(within_noise(&[0.90, 0.90, 0.90], &[0.89, 0.89, 0.89], 1.0 / 30.0));
    }

    #[test]
    fn staged_keeps_a_joint_phase_at_any_epochs() {
        for epochs in 1..4 {
            let config = run_config(Strategy::STAGED_DEFAULT, epochs, &CompareConfig::default());
            let phases = config.strategy.phases(19, config.epochs, config.base_lr()).unwrap();
            assert!(phases.iter().any(|p| p.name == "joint"), "{epochs}: {phases:?}");
        }
    }
}
