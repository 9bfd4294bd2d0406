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
        let planned: Vec<String> = plan
            .iter()
            .map(|p| {
                format!(
                    "{} x{} ({:.0}% of the training images)",
                    describe(&p.strategy),
                    p.epochs,
                    p.train_fraction * 100.0
                )
            })
            .collect();
        println!(
            "bench: compare {} pictures: {:.0} s wall against a {:.0} s budget (probes {:.0} s); {}",
            dataset.examples.len(),
            comparison.seconds,
            comparison.budget_seconds,
            comparison.probe_seconds,
            planned.join(", ")
        );
        for result in &comparison.results {
            println!(
                "bench:   {:<28} {:>5.1}% ± {:>4.1}  {:>5.0} s",
                describe(&result.strategy),
                result.mean_accuracy * 100.0,
                result.std_accuracy * 100.0,
                result.seconds
            );
        }
        println!("bench:   {}", comparison.verdict);
    }
}
