//! Embedding throughput of the pretrained models natively on the CPU backend (criterion):
//! `features()` at 224 px, batch 1 and 16, including the read-back that waits for the result; and the
//! same on the CPU kernels, which the engine uses on the CPU backend (natively each batch shared out
//! over every core, the four-lane type as plain arrays, where Burn's backend uses every core and AVX).
//! Run with `cargo xtask bench` (or `cargo bench -p graft-tests --bench embedding`).

use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use graft_engine::model::{CompiledClassifier, ModelKind, Probes};
use graft_engine::readback;
use graft_tests::pretrained;

fn embedding_throughput(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("embedding-cpu");
    group.sample_size(10);
    for kind in ModelKind::ALL {
        // The embedding path: the frozen base with its BatchNorms folded into the convs.
        let model = pretrained::load(kind, &device)
            .expect("weights: run `cargo xtask weights`")
            .folded_for_inference();
        for batch in [1, 16] {
            let images = Tensor::<4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(kind.card().name, batch), &images, |b, images| {
                b.iter(|| pollster::block_on(readback::to_f32_vec(model.features(images.clone()))).expect("read-back"))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("embedding-cpu-kernels");
    group.sample_size(10);
    for kind in ModelKind::ALL {
        let model = pretrained::load(kind, &device).expect("weights: run `cargo xtask weights`");
        let net = pollster::block_on(CompiledClassifier::compile(&model, Probes::Off)).expect("read-back");
        for batch in [1, 16] {
            let images: Vec<f32> = (0..batch * 3 * 224 * 224)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(kind.card().name, batch), &images, |b, images| {
                b.iter(|| net.embeddings(images, [batch, 3, 224, 224]))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, embedding_throughput);
criterion_main!(benches);
