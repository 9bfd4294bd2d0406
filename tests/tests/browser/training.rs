//! Every strategy runs real training steps through the engine's loop on WebGPU (and head-only on the
//! CPU backend): pretrained MobileNetV2, the fixture photos at 64 px.

use std::ops::ControlFlow;

use burn::prelude::*;
use graft_engine::cache::EmbeddingCache;
use graft_engine::model::ModelKind;
use graft_engine::strategy::Strategy;
use graft_engine::train::{self, CacheKind, TrainEvent};
use graft_tests::{pretrained, training};
use graft_worker::device::{self, ComputeChoice, ComputeDevice};
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

async fn few_steps(strategy: Strategy, device: Device, label: &str) {
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights load");
    let report = training::run_strategy(&model, strategy, &device)
        .await
        .expect("training runs");
    console_log!(
        "{label} {}: {:.1} s, losses {:?}, phases {:?}, val accuracy {:?}, frozen change {:?}, head_conv change {:.2e}",
        strategy.name(),
        report.summary.seconds,
        report.losses,
        report.phases,
        report.summary.val_accuracy,
        report.frozen_max_change,
        report.last_block_max_change
    );
    training::assert_few_steps(&report, strategy);
    drop((model, report));
    graft_tests::settle(&device).await;
}

async fn webgpu() -> Device {
    let ComputeDevice::WebGpu { device, .. } = device::acquire(ComputeChoice::WebGpu).await else {
        panic!("no WebGPU adapter in this browser");
    };
    device
}

#[wasm_bindgen_test]
async fn head_only_trains_on_webgpu() {
    few_steps(Strategy::HeadOnly, webgpu().await, "webgpu").await;
}

#[wasm_bindgen_test]
async fn partial_freeze_trains_on_webgpu() {
    few_steps(
        Strategy::PartialFreeze { trainable_blocks: 3 },
        webgpu().await,
        "webgpu",
    )
    .await;
}

#[wasm_bindgen_test]
async fn staged_trains_on_webgpu() {
    few_steps(Strategy::STAGED_DEFAULT, webgpu().await, "webgpu").await;
}

#[wasm_bindgen_test]
async fn full_fine_tune_trains_on_webgpu() {
    few_steps(Strategy::FullFineTune, webgpu().await, "webgpu").await;
}

#[wasm_bindgen_test]
async fn from_scratch_trains_on_webgpu() {
    few_steps(Strategy::FromScratch, webgpu().await, "webgpu").await;
}

#[wasm_bindgen_test]
async fn head_only_trains_on_the_cpu_backend_in_the_browser() {
    few_steps(Strategy::HeadOnly, Device::flex(), "cpu").await;
}

/// On the CPU backend, a phase that cannot cache its frozen prefix (augmentation makes every epoch's
/// inputs new) runs that prefix on the CPU kernels every batch, Burn only from the boundary on; the
/// frozen blocks stay bit-identical and the run is otherwise what the few-steps checks expect.
#[wasm_bindgen_test]
async fn an_augmented_partial_freeze_runs_its_frozen_blocks_on_the_cpu_kernels() {
    let device = Device::flex();
    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights load");
    let strategy = Strategy::PartialFreeze { trainable_blocks: 3 };
    let report = training::run_strategy_with(&model, strategy, &device, true)
        .await
        .expect("training runs");
    console_log!(
        "cpu augmented {}: {:.1} s, losses {:?}, phases {:?}, frozen change {:?}",
        strategy.name(),
        report.summary.seconds,
        report.losses,
        report.phases,
        report.frozen_max_change
    );
    assert_eq!(
        report.phases.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![CacheKind::Kernels],
        "the frozen prefix runs on the kernels"
    );
    training::assert_few_steps(&report, strategy);
}

/// A run on WebGPU with host checkpoints, stopped after its third batch (where a lost GPU would stop
/// it), goes on on the CPU backend from that checkpoint: the one batch left of epoch 2, every epoch
/// done, the frozen blocks bit-identical to the pretrained ones, the trained ones moved.
#[wasm_bindgen_test]
async fn a_run_stopped_on_webgpu_resumes_on_the_cpu_backend() {
    let gpu = webgpu().await;
    let cpu = Device::flex();
    let strategy = Strategy::PartialFreeze { trainable_blocks: 3 };
    let mut config = training::few_steps_config(strategy);
    config.epochs = 2;
    let dataset = training::photo_dataset();
    let mut embeddings = EmbeddingCache::new();
    let mut batches = Vec::new();
    let stopped = {
        let model = pretrained::load(ModelKind::MobileNetV2, &gpu).expect("weights load");
        let mut observer = |event: TrainEvent| {
            if let TrainEvent::Batch { epoch, batch, .. } = event {
                batches.push((epoch, batch));
                if batches.len() == 3 {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        };
        train::Training::new(&model, ModelKind::MobileNetV2, &dataset, &config)
            .embeddings(&mut embeddings)
            .checkpoints_on(&cpu)
            .run(&gpu, &mut observer)
            .await
            .expect("training runs on WebGPU")
    };
    assert!(stopped.summary.cancelled);
    assert_eq!(batches, [(1, 1), (1, 2), (2, 1)], "8 training pictures in batches of 4");
    let checkpoint = stopped.checkpoint.expect("a checkpoint on the host");
    assert_eq!((checkpoint.epoch(), checkpoint.batches_done()), (2, 1));
    drop(stopped.model);
    graft_tests::settle(&gpu).await;

    let mut resumed_batches = Vec::new();
    let mut observer = |event: TrainEvent| {
        if let TrainEvent::Batch { epoch, batch, .. } = event {
            resumed_batches.push((epoch, batch));
        }
        ControlFlow::Continue(())
    };
    let resumed = train::Training::resume(checkpoint, ModelKind::MobileNetV2, &dataset)
        .embeddings(&mut embeddings)
        .run(&cpu, &mut observer)
        .await
        .expect("the run goes on on the CPU backend");
    console_log!(
        "resumed on the CPU: batches {resumed_batches:?}, epochs {}, validation {:?}",
        resumed.summary.epochs,
        resumed.summary.val_accuracy
    );
    assert_eq!(resumed_batches, [(2, 2)], "only the batch left");
    assert!(!resumed.summary.cancelled);
    assert_eq!(resumed.summary.epochs, 2);
    let pretrained = pretrained::load(ModelKind::MobileNetV2, &cpu).expect("weights load");
    let blocks = pretrained.block_names().len();
    for block in 0..blocks {
        let moved = training::block_change(&pretrained, &resumed.model, Some(block))
            .await
            .expect("read-back");
        assert_eq!(moved > 0.0, block >= blocks - 3, "block {block} moved {moved}");
    }
}

/// The CPU backend's own training operations (wasm SIMD products, one thread) agree with Burn's
/// operations, values and every gradient, through a whole inverted residual block; shapes that leave
/// partial product tiles and cross the products' blocks.
#[wasm_bindgen_test]
fn the_cpu_training_operations_agree_with_burns_in_the_browser() {
    for (batch, inputs, expanded, size) in [(2, 8, 48, 12), (3, 24, 144, 9), (1, 300, 70, 5)] {
        let differences = graft_tests::cpu_ops::inverted_residual_against_burn(batch, inputs, expanded, size);
        console_log!("{batch}x{inputs}->{expanded} at {size}px: {differences:?}");
        differences.assert_within(1e-4);
    }
}
