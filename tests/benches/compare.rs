//! The comparison of strategies against its budget (run with `cargo xtask bench`): `graft_engine::
//! compare` natively on 200 and 2 000 MNIST digits (20 and 200 of each class), each with the budget
//! the engine picks by default (about one normal run of the recommended strategy, here partial
//! freezing), printing the wall time against the budget, the probes' share and what each candidate
//! got. Not a criterion bench: one run of each is minutes.

use std::ops::ControlFlow;

use burn::prelude::*;
use graft_engine::compare::{self, CompareConfig, CompareEvent, describe};
use graft_engine::data;
use graft_engine::model::ModelKind;
use graft_engine::strategy::Strategy;
use graft_tests::{datasets, pretrained};

fn main() {
    let device = Device::flex();
    let kind = ModelKind::MobileNetV2;
    let model = pretrained::load(kind, &device).expect("weights: run `cargo xtask weights`");
    for per_class in [20, 200] {
        let (dataset, _) = data::read_folder(
            &datasets::path("digits"),
            kind.card().input_size as u32,
            Some(per_class),
        )
        .expect("digits: run `cargo xtask datasets`");
        let mut plan = Vec::new();
        let mut observer = |event: &CompareEvent| {
            if let CompareEvent::Planned { candidates, .. } = event {
                plan = candidates.clone();
            }
            ControlFlow::Continue(())
        };
        let comparison = pollster::block_on(compare::compare(
            &model,
            kind,
            &dataset,
            Strategy::PartialFreeze { trainable_blocks: 6 },
            &CompareConfig::default(),
            &device,
            &mut observer,
        ))
        .expect("compares");
        println!(
            "bench: compare {} pictures: {:.0} s wall against a {:.0} s budget (probes and head-only's \
             embeddings {:.0} s); {} folds, {} candidates",
            dataset.examples.len(),
            comparison.seconds,
            comparison.budget_seconds,
            comparison.probe_seconds,
            comparison.folds,
            plan.len(),
        );
        for result in &comparison.results {
            let planned = plan.iter().find(|p| p.strategy == result.strategy).expect("planned");
            println!(
                "bench:   {:<28} {:>5.1}% ± {:>4.1}  {:>5.0} s  planned x{} on {:.1}% of each fold's training \
                 pictures; trained {} epoch(s) on up to {} pictures; folds {:?}; stopped {}",
                describe(&result.strategy),
                result.mean_accuracy * 100.0,
                result.std_accuracy * 100.0,
                result.seconds,
                planned.epochs,
                planned.train_fraction * 100.0,
                result.epochs,
                result.train_images,
                result
                    .folds
                    .iter()
                    .map(|a| (a * 1000.0).round() / 10.0)
                    .collect::<Vec<_>>(),
                result.stopped_folds,
            );
        }
        println!("bench:   {}", comparison.verdict);
    }
}
