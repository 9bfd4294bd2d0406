//! Whether training steps in two parts (as the browser's CPU backend trains: ghost BatchNorm over
//! half batches, a dropout mask per part) lose accuracy against whole steps: partial freezing of
//! MobileNetV2's last 6 blocks with the CLI's defaults (224 px, batch 16, 10 epochs, a fifth held out),
//! natively, on the Tux Paint photos (209 in 6 classes) and on 720 photo-sized crops of them, three
//! seeds each. Prints each run's validation accuracy and loss, then the means. By hand (about 25
//! minutes on 2 cores): `cargo bench -p graft-tests --bench parts_accuracy`.

use std::ops::ControlFlow;

use burn::prelude::*;
use graft_engine::model::ModelKind;
use graft_engine::peer;
use graft_engine::strategy::Strategy;
use graft_engine::train::{self, TrainConfig, TrainEvent};
use graft_tests::{datasets, pretrained};

fn main() {
    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights");
    let strategy = Strategy::PartialFreeze { trainable_blocks: 6 };
    for folder in [datasets::path("tuxpaint-photos"), datasets::scale_photos(720)] {
        let (dataset, _) = graft_engine::data::read_folder(&folder, 224, None).expect("photos");
        let name = folder.file_name().expect("named").to_string_lossy().to_string();
        // Per way (whole, in parts): accuracy and loss of each seed.
        let mut seen: [Vec<(f64, f64)>; 2] = Default::default();
        for seed in 1..=3u64 {
            for in_parts in [false, true] {
                let mut config = TrainConfig::new(strategy);
                config.seed = seed;
                peer::set_steps_in_parts(in_parts);
                let mut observer = |_: TrainEvent| ControlFlow::Continue(());
                let trained = pollster::block_on(
                    train::Training::new(&model, ModelKind::MobileNetV2, &dataset, &config).run(&device, &mut observer),
                )
                .expect("training runs");
                let summary = trained.summary;
                let (accuracy, loss) = (
                    summary.val_accuracy.expect("a validation split"),
                    summary.val_loss.expect("a validation split"),
                );
                println!(
                    "bench: steps in parts, {name} ({} pictures), partial freeze 6 blocks, seed {seed}, {}: validation accuracy {:.1}%, loss {loss:.3} ({} of {} epochs best, {:.0} s)",
                    dataset.examples.len(),
                    if in_parts { "in two parts" } else { "whole" },
                    100.0 * accuracy,
                    summary.best_epoch.unwrap_or(0),
                    summary.epochs,
                    summary.seconds,
                );
                seen[usize::from(in_parts)].push((accuracy, loss));
            }
        }
        peer::set_steps_in_parts(false);
        let mean = |runs: &[(f64, f64)]| {
            let n = runs.len() as f64;
            (
                runs.iter().map(|r| r.0).sum::<f64>() / n,
                runs.iter().map(|r| r.1).sum::<f64>() / n,
            )
        };
        let (whole, parts) = (mean(&seen[0]), mean(&seen[1]));
        println!(
            "bench: steps in parts, {name}, mean of 3 seeds: whole {:.1}% (loss {:.3}), in two parts {:.1}% (loss {:.3})",
            100.0 * whole.0,
            whole.1,
            100.0 * parts.0,
            parts.1
        );
    }
}
