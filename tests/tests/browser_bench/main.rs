//! Browser benchmarks (not part of `cargo xtask test`; run by `cargo xtask bench`): embedding
//! throughput of the pretrained models at 224 px, batch 1 and 16, on WebGPU and on the CPU backend, in
//! headless Chrome. Each figure is printed as a `bench:` line.
#![cfg(target_arch = "wasm32")]

use burn::prelude::*;
use burn::tensor::Distribution;
use graft_engine::inference::FrozenClassifier;
use graft_engine::model::{Architecture, ModelKind, Probes};
use graft_engine::readback;
use graft_tests::pretrained;
use graft_worker::device::{self, ComputeChoice, ComputeDevice};
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

// In a dedicated worker, as the app computes: the page's thread stays free to answer the test runner.
wasm_bindgen_test_configure!(run_in_dedicated_worker);

#[path = "../common/helper_workers.rs"]
mod helper_workers;
use helper_workers::cores;

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Milliseconds from `performance.now()`, imported directly: calling it through `js_sys::Function`
/// cost about 0.5 ms a call here (3 ms when `performance` was also looked up on the global object
/// each time), which had been counted into every batch-1 figure. Measured: 0.1 µs a call this way.
fn now_ms() -> f64 {
    performance_now()
}

/// Gives the page's event loop a turn. On the CPU backend every read-back completes at once, so a
/// measuring loop never yields by itself: without this, a loop of a minute keeps the page from
/// answering the test runner (ChromeDriver gives up on a renderer silent for 30 s).
async fn breathe() {
    graft_worker::yield_now().await;
}

/// Images per second of embeddings read back to the host, after one warm-up call (shader
/// compilation), over at least `min_iterations` calls and `min_ms` milliseconds. `compiled`: the frozen
/// model as the engine runs it on this device (`FrozenClassifier::new`: the CPU kernels on the CPU
/// backend); otherwise Burn itself, BatchNorm folded.
async fn throughput(
    kind: ModelKind,
    device: &Device,
    backend: &str,
    compiled: bool,
    batch: usize,
    min_iterations: usize,
    min_ms: f64,
) {
    let model = pretrained::load(kind, device).expect("weights load");
    let frozen = if compiled {
        FrozenClassifier::new(&model, Probes::Off).await.expect("read-back")
    } else {
        FrozenClassifier::burn(&model, Probes::Off)
    };
    let images = Tensor::<4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), device);
    let warm_start = now_ms();
    frozen.embeddings(images.clone()).await.expect("read-back");
    let warm_ms = now_ms() - warm_start;
    breathe().await;
    // The time between calls (the page's turn) is not counted.
    let mut elapsed_ms = 0.0;
    let mut iterations = 0;
    while iterations < min_iterations || elapsed_ms < min_ms {
        let start = now_ms();
        frozen.embeddings(images.clone()).await.expect("read-back");
        elapsed_ms += now_ms() - start;
        iterations += 1;
        breathe().await;
    }
    let elapsed_s = elapsed_ms / 1000.0;
    let images_per_s = (iterations * batch) as f64 / elapsed_s;
    // Who ran it: the engine's CPU kernels, or Burn.
    let engine = if frozen.is_compiled() { "graft-kernels" } else { "burn" };
    console_log!(
        "bench: {engine} {backend} {} batch {batch}: {images_per_s:.2} img/s ({iterations} iterations in {elapsed_s:.1} s; first call {:.1} s)",
        kind.card().name,
        warm_ms / 1000.0
    );
}

#[wasm_bindgen_test]
async fn embedding_throughput_on_webgpu() {
    let ComputeDevice::WebGpu { device, adapter, .. } = device::acquire(ComputeChoice::WebGpu).await else {
        panic!("no WebGPU adapter");
    };
    console_log!("bench: adapter {adapter}");
    for kind in ModelKind::ALL {
        for batch in [1, 16] {
            throughput(kind, &device, "webgpu", true, batch, 3, 3000.0).await;
        }
    }
}

/// Helper workers as the app starts them on this machine (one per core beyond this one, at most
/// `MAX_HELPERS`), installed once every one is ready (for frozen inference, and the training steps'
/// weight gradients); `None` on one core.
async fn start_helpers() -> Option<std::rc::Rc<graft_worker::helpers::Pool>> {
    let count = cores().saturating_sub(1).min(graft_worker::helpers::MAX_HELPERS);
    if count == 0 {
        return None;
    }
    let pool = helper_workers::start(count).await;
    graft_engine::helpers::install(Some(pool.clone()));
    Some(pool)
}

/// The CPU kernels on every core, as the app runs them (the worker and its helpers): batch 16
/// (a batch of one is never shared). Printed beside the one-core figures of
/// `embedding_throughput_on_cpu_backend` and TF.js's (`cargo xtask bench`).
#[wasm_bindgen_test]
async fn embedding_throughput_on_every_core() {
    let Some(pool) = start_helpers().await else {
        console_log!("bench: one core here: no helpers to start");
        return;
    };
    let backend = format!("cpu, {} cores", graft_engine::helpers::Helpers::ready(&*pool) + 1);
    let device = Device::flex();
    for kind in ModelKind::ALL {
        throughput(kind, &device, &backend, true, 16, 3, 2000.0).await;
    }
    graft_engine::helpers::install(None);
}

#[wasm_bindgen_test]
async fn embedding_throughput_on_cpu_backend() {
    let device = Device::flex();
    for kind in ModelKind::ALL {
        for batch in [1, 16] {
            throughput(kind, &device, "cpu", true, batch, 3, 2000.0).await;
            throughput(kind, &device, "cpu", false, batch, 2, 2000.0).await;
        }
    }
}

/// Where the CPU backend spends its time: milliseconds per layer kind of MobileNetV2 (BatchNorm folded),
/// batch 16, summed over the network, each layer timed to its read-back.
#[wasm_bindgen_test]
async fn layer_profile_on_cpu_backend() {
    let device = Device::flex();
    let kind = ModelKind::MobileNetV2;
    let model = pretrained::load(kind, &device)
        .expect("weights load")
        .folded_for_inference();
    let batch = 16;
    let mut x = Tensor::<4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    let mut totals = std::collections::BTreeMap::<&str, f64>::new();
    async fn timed(layer: impl FnOnce() -> Tensor<4>) -> (Tensor<4>, f64) {
        let start = now_ms();
        let out = layer();
        let _ = readback::to_f32_vec(out.clone().slice([0..1, 0..1, 0..1, 0..1]))
            .await
            .expect("read-back");
        let ms = now_ms() - start;
        breathe().await;
        (out, ms)
    }
    let (out, ms) = timed(|| model.stem.forward(x.clone())).await;
    *totals.entry("stem 3x3 conv").or_default() += ms;
    x = out;
    for block in &model.blocks {
        let input = x.clone();
        let mut h = x;
        if let Some(expand) = &block.expand {
            let (out, ms) = timed(|| expand.forward(h.clone())).await;
            *totals.entry("1x1 expand").or_default() += ms;
            h = out;
        }
        let (out, ms) = timed(|| block.depthwise.forward(h.clone())).await;
        *totals.entry("3x3 depthwise").or_default() += ms;
        let (out, ms) = timed(|| block.project.forward(out.clone())).await;
        *totals.entry("1x1 project").or_default() += ms;
        x = if out.dims() == input.dims() { out + input } else { out };
    }
    let (_, ms) = timed(|| model.head_conv.forward(x.clone())).await;
    *totals.entry("1x1 head conv").or_default() += ms;
    let total: f64 = totals.values().sum();
    for (layer, ms) in &totals {
        console_log!(
            "bench: burn cpu profile mobilenet-v2 batch {batch}: {layer}: {ms:.0} ms ({:.0}%)",
            100.0 * ms / total
        );
    }
}

/// Seconds per epoch of each strategy at 224 px: MobileNetV2 on the fixture photos (8 training, 4
/// validation images), one epoch each (staged: its head epoch and one joint epoch).
async fn epoch_seconds(device: Device, backend: &str) {
    use graft_engine::strategy::Strategy;
    use graft_engine::train::TrainConfig;
    use graft_tests::training;

    let model = pretrained::load(ModelKind::MobileNetV2, &device).expect("weights load");
    let dataset = training::photo_dataset();
    for strategy in training::BENCH_STRATEGIES {
        let mut config = TrainConfig::new(strategy);
        config.epochs = if matches!(strategy, Strategy::Staged { .. }) {
            2
        } else {
            1
        };
        config.batch_size = 4;
        config.val_fraction = 0.34;
        config.patience = None;
        let start = now_ms();
        let times = training::epoch_times(&model, &dataset, &config, &device, move || (now_ms() - start) / 1000.0)
            .await
            .expect("training");
        let epochs: Vec<String> = times
            .epochs
            .iter()
            .map(|(phase, s)| format!("{phase} {s:.1} s"))
            .collect();
        console_log!(
            "bench: burn {backend} {} at 224 px, 8 training + 4 validation images: epochs [{}], cache {:.1} s, run {:.1} s (first run includes shader compilation)",
            strategy.name(),
            epochs.join(", "),
            times.caching_seconds,
            (now_ms() - start) / 1000.0
        );
    }
}

#[wasm_bindgen_test]
async fn training_epoch_seconds_on_webgpu() {
    let ComputeDevice::WebGpu { device, .. } = device::acquire(ComputeChoice::WebGpu).await else {
        panic!("no WebGPU adapter");
    };
    epoch_seconds(device, "webgpu").await;
}

#[wasm_bindgen_test]
async fn training_epoch_seconds_on_cpu_backend() {
    epoch_seconds(Device::flex(), "cpu").await;
}

/// The CPU kernels alone (no tensors, no read-back): milliseconds per image of MobileNetV2's
/// embeddings at batch 1 and 16 on the compiled classifier.
#[wasm_bindgen_test]
async fn kernels_alone_on_cpu() {
    use graft_engine::model::CompiledClassifier;
    let device = Device::flex();
    for kind in ModelKind::ALL {
        let model = pretrained::load(kind, &device).expect("weights load");
        let start = now_ms();
        let net = CompiledClassifier::compile(&model, Probes::Off)
            .await
            .expect("read-back");
        let compile_ms = now_ms() - start;
        for batch in [1, 16] {
            let images: Vec<f32> = (0..batch * 3 * 224 * 224)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            net.embeddings(&images, [batch, 3, 224, 224]);
            breathe().await;
            let mut elapsed_ms = 0.0;
            let mut calls = 0;
            while calls < 3 || elapsed_ms < 2000.0 {
                let start = now_ms();
                net.embeddings(&images, [batch, 3, 224, 224]);
                elapsed_ms += now_ms() - start;
                calls += 1;
                breathe().await;
            }
            let per_image = elapsed_ms / (calls * batch) as f64;
            console_log!(
                "bench: graft kernels alone {} batch {batch}: {per_image:.2} ms per image ({:.1} img/s; compiled in {compile_ms:.0} ms)",
                kind.card().name,
                1000.0 / per_image
            );
        }
    }
}

/// `(pixels, in, out)` of an architecture's 1x1 convolutions for one image of `size` px, read off its
/// stage table: each block's expansion at its input resolution, its projection after the stride, then
/// the head conv.
fn pointwise_shapes(architecture: &Architecture, size: usize) -> Vec<(usize, usize, usize)> {
    let mut side = size.div_ceil(2);
    let mut input = architecture.stem_channels;
    let mut shapes = Vec::new();
    for stage in architecture.stages {
        for repeat in 0..stage.repeats {
            let hidden = input * stage.expand_ratio;
            if stage.expand_ratio != 1 {
                shapes.push((side * side, input, hidden));
            }
            if repeat == 0 {
                side = side.div_ceil(stage.stride);
            }
            shapes.push((side * side, hidden, stage.channels));
            input = stage.channels;
        }
    }
    shapes.push((side * side, input, architecture.head_channels));
    shapes
}

/// MobileNetV2's 1x1 convolutions for one image as matrix products, in GMAC/s: the CPU kernels'
/// packed product (bias and ReLU6 fused) against Burn's CPU backend (`matmul`, the `gemm` crate) on
/// the same shapes. This is where the kernels' speed comes from.
#[wasm_bindgen_test]
async fn pointwise_products_on_cpu() {
    let shapes = pointwise_shapes(&ModelKind::MobileNetV2.architecture(), 224);
    let macs: f64 = shapes.iter().map(|&(p, k, n)| (p * k * n) as f64).sum();
    let kernels = kernels_gmacs(&shapes).await;
    let device = Device::flex();
    let tensors: Vec<_> = shapes
        .iter()
        .map(|&(p, k, n)| {
            (
                Tensor::<2>::from_data(TensorData::new(values(p * k), [p, k]), &device),
                Tensor::<2>::from_data(TensorData::new(values(k * n), [k, n]), &device),
            )
        })
        .collect();
    let mut elapsed_ms = 0.0;
    let mut rounds = 0;
    while rounds < 2 || elapsed_ms < 2000.0 {
        let start = now_ms();
        for (input, weights) in &tensors {
            let out = input.clone().matmul(weights.clone());
            readback::to_f32_vec(out.slice([0..1, 0..1])).await.expect("read-back");
        }
        elapsed_ms += now_ms() - start;
        rounds += 1;
        breathe().await;
    }
    let burn = macs * rounds as f64 / (elapsed_ms / 1000.0) / 1e9;
    console_log!(
        "bench: mobilenet-v2 1x1 convolutions ({:.0} M MACs per image): graft-kernels {kernels:.1} GMAC/s, burn cpu matmul {burn:.1} GMAC/s",
        macs / 1e6
    );
}

/// `n` values in [-0.5, 0.5) for the products' operands (their values do not change the time).
fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect()
}

/// GMAC/s of the CPU kernels' packed product (bias and ReLU6 fused) on `(pixels, in, out)` 1x1
/// convolutions, on this thread: the fastest multiply-adds this machine's wasm reaches here, the
/// bound the training figures are measured against.
async fn kernels_gmacs(shapes: &[(usize, usize, usize)]) -> f64 {
    use graft_kernels::{Activation, PackedWeights, pointwise};
    let macs: f64 = shapes.iter().map(|&(p, k, n)| (p * k * n) as f64).sum();
    let mut layers: Vec<_> = shapes
        .iter()
        .map(|&(p, k, n)| {
            let weights = PackedWeights::from_output_major(&values(n * k), Some(&values(n)), n, k);
            (p, weights, values(p * k), vec![0.0f32; p * n])
        })
        .collect();
    let mut run_kernels = || {
        for (p, weights, input, out) in &mut layers {
            pointwise(input, *p, weights, Activation::Relu6, None, out);
        }
    };
    run_kernels();
    breathe().await;
    let mut elapsed_ms = 0.0;
    let mut rounds = 0;
    while rounds < 3 || elapsed_ms < 2000.0 {
        let start = now_ms();
        run_kernels();
        elapsed_ms += now_ms() - start;
        rounds += 1;
        breathe().await;
    }
    macs * rounds as f64 / (elapsed_ms / 1000.0) / 1e9
}

/// Multiply-adds per image of each convolution and linear layer of `model` at `size` px, in order,
/// with the body block each belongs to as the engine numbers them for freezing (`block_names`: 0 the
/// stem, then the inverted residuals, then the head conv; the classifier after them all). Read off
/// the layers' weights and the shapes of one image going through them.
fn layer_macs(model: &graft_engine::model::ImageClassifier, size: usize) -> Vec<(usize, f64)> {
    use graft_engine::model::ConvBnAct;
    let device = Device::flex();
    let conv_macs = |conv: &ConvBnAct, x: &Tensor<4>| -> (Tensor<4>, f64) {
        let out = conv.forward(x.clone());
        let [kernel_out, per_group, kh, kw] = conv.conv.weight.dims();
        let [_, _, h, w] = out.dims();
        (out, (kernel_out * per_group * kh * kw * h * w) as f64)
    };
    let mut macs = Vec::new();
    let x = Tensor::<4>::zeros([1, 3, size, size], &device);
    let (mut x, stem) = conv_macs(&model.stem, &x);
    macs.push((0, stem));
    for (index, block) in model.blocks.iter().enumerate() {
        let body_block = index + 1;
        let mut h = x.clone();
        if let Some(expand) = &block.expand {
            let (out, m) = conv_macs(expand, &h);
            macs.push((body_block, m));
            h = out;
        }
        let (out, m) = conv_macs(&block.depthwise, &h);
        macs.push((body_block, m));
        let (out, m) = conv_macs(&block.project, &out);
        macs.push((body_block, m));
        x = block.forward(x);
        assert_eq!(x.dims(), out.dims(), "block {index}: its layers give its output");
    }
    let head_conv = model.blocks.len() + 1;
    let (_, head) = conv_macs(&model.head_conv, &x);
    macs.push((head_conv, head));
    let [inputs, outputs] = model.classifier.weight.dims();
    macs.push((head_conv + 1, (inputs * outputs) as f64));
    macs
}

/// Training images per second on the CPU backend at the shapes (MobileNetV2, 224 px, batches
/// of 16; the last 6 body blocks trained with the head, and a full fine-tune), each beside the bound
/// of this machine: the multiply-adds of a training step per image (forward, then the gradients of
/// the weights and of the inputs, 3x the forward's multiply-adds of every layer trained, less the
/// first trained layer's input gradient, which nothing needs) at the CPU kernels' measured rate
/// (`kernels_gmacs`), on one core and on every core. Frozen layers run once, for the cache, and are
/// not in the step. 64 pictures of 2 classes (their content does not change the time: random
/// pixels), no validation; the figure is the second epoch's (the first allocates once).
#[wasm_bindgen_test]
async fn training_rate_against_the_bound_on_cpu() {
    use graft_engine::data::{Dataset, Example};
    use graft_engine::strategy::Strategy;
    use graft_engine::train::TrainConfig;
    use graft_tests::training;

    let device = Device::flex();
    let kind = ModelKind::MobileNetV2;
    let model = pretrained::load(kind, &device).expect("weights load");
    let gmacs = kernels_gmacs(&pointwise_shapes(&kind.architecture(), 224)).await;
    let cores = cores();
    let layers = layer_macs(&model, 224);
    let forward: f64 = layers.iter().map(|(_, m)| m).sum();
    // MobileNetV2 (width 1.0, 224 px) is 300 M multiply-adds in its paper (Sandler et al. 2018).
    assert!(
        (0.29e9..0.31e9).contains(&forward),
        "MobileNetV2 counted at {:.3} G MACs per image",
        forward / 1e9
    );
    let pictures = 64;
    let mut seed = 12345u32;
    let examples = (0..pictures)
        .map(|i| {
            let image = image::RgbImage::from_fn(224, 224, |_, _| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let [r, g, b, _] = seed.to_le_bytes();
                image::Rgb([r, g, b])
            });
            Example {
                image: image.into(),
                label: i % 2,
            }
        })
        .collect();
    let dataset = Dataset {
        classes: vec!["a".into(), "b".into()],
        examples,
    };
    // Each strategy on this worker alone on Burn's own operations (where training on the CPU started)
    // and on Graft's, steps whole (as on WebGPU and natively) and in two parts (as the app trains on
    // the CPU backend); with the app's helpers, which compute the 1x1 convolutions' weight gradients
    // when the engine measures that it pays here (its tuner); and with the helpers and the worker's
    // replica, which takes the second part of each step when that pays.
    // (strategy, helper workers: 1 the helpers, 2 and the replica; steps in parts; Graft's operations)
    let runs = [
        (Strategy::PartialFreeze { trainable_blocks: 6 }, 0, false, false),
        (Strategy::PartialFreeze { trainable_blocks: 6 }, 0, false, true),
        (Strategy::PartialFreeze { trainable_blocks: 6 }, 0, true, true),
        (Strategy::PartialFreeze { trainable_blocks: 6 }, 1, true, true),
        (Strategy::PartialFreeze { trainable_blocks: 6 }, 2, true, true),
        (Strategy::FullFineTune, 0, false, false),
        (Strategy::FullFineTune, 0, false, true),
        (Strategy::FullFineTune, 0, true, true),
        (Strategy::FullFineTune, 1, true, true),
        (Strategy::FullFineTune, 2, true, true),
    ];
    // The rate on Burn's own operations, per strategy.
    let mut burn_rate = std::collections::HashMap::new();
    for (strategy, others, in_parts, own) in runs {
        let pool = if others > 0 {
            match start_helpers().await {
                Some(pool) => Some(pool),
                None => {
                    console_log!("bench: one core here: no helpers or replica to train with");
                    continue;
                }
            }
        } else {
            None
        };
        let replica = if others > 1 {
            let replica = helper_workers::start_replica().await;
            graft_engine::peer::install(Some(replica.clone()));
            Some(replica)
        } else {
            None
        };
        graft_engine::peer::set_steps_in_parts(in_parts);
        graft_engine::model::cpu_train::set_enabled(own);
        let on = pool.as_ref().map_or("this worker alone".to_string(), |pool| {
            format!(
                "this worker, {} helper(s){}",
                graft_engine::helpers::Helpers::ready(&**pool),
                if replica.is_some() { " and its replica" } else { "" }
            )
        });
        let steps = match (in_parts, own) {
            (true, _) => ", steps in two parts",
            (false, true) => ", whole steps",
            (false, false) => ", whole steps, Burn's own operations",
        };
        let on = on + steps;
        // The blocks the strategy freezes, as the engine plans them (one phase for these two).
        let frozen = strategy
            .phases(model.block_names().len(), 1, strategy.default_base_lr())
            .expect("a plan")[0]
            .frozen_blocks;
        // What a step multiplies per image: the trained layers' forward, 3 times, less the first
        // trained layer's input gradient.
        let trained: Vec<f64> = layers
            .iter()
            .filter(|(block, _)| *block >= frozen)
            .map(|&(_, m)| m)
            .collect();
        let step_macs = 3.0 * trained.iter().sum::<f64>() - trained[0];
        let mut config = TrainConfig::new(strategy);
        config.epochs = 2;
        config.batch_size = 16;
        config.val_fraction = 0.0;
        config.patience = None;
        let before = graft_engine::model::cpu_train::helper_times();
        let start = now_ms();
        let times = training::epoch_times(&model, &dataset, &config, &device, move || (now_ms() - start) / 1000.0)
            .await
            .expect("training");
        graft_engine::helpers::install(None);
        graft_engine::peer::install(None);
        graft_engine::peer::set_steps_in_parts(false);
        graft_engine::model::cpu_train::set_enabled(true);
        let (_, seconds) = times.epochs.last().cloned().expect("an epoch");
        let on = match (&pool, &replica) {
            (Some(_), Some(replica)) => {
                // The tuner tried splitting steps with the replica.
                assert!(replica.answered() > 0, "no step part computed by the replica");
                let tuner = graft_engine::peer::tuner();
                let ms = |seconds: Option<f64>| seconds.map_or("-".into(), |s| format!("{:.1} ms", s * 1000.0));
                format!(
                    "{on}, {} second parts on the replica; per image: both parts here {}, the second on the replica {}",
                    replica.answered(),
                    ms(tuner.seconds[0]),
                    ms(tuner.seconds[1]),
                )
            }
            (Some(pool), None) => {
                // Training with helpers computes the weight gradients there.
                assert!(pool.steps_shared() > 0, "no weight gradient computed on a helper");
                let tuner = graft_engine::model::cpu_train::tuner();
                let ms = |seconds: Option<f64>| seconds.map_or("-".into(), |s| format!("{:.0} ms", s * 1000.0));
                format!(
                    "{on}, {} weight gradients on a helper, {:.2} s sending them, {:.2} s waiting for them, in {:.1} s; backward pass here {}, sharing {}",
                    pool.steps_shared(),
                    graft_engine::model::cpu_train::helper_times().sending - before.sending,
                    graft_engine::model::cpu_train::helper_times().waiting - before.waiting,
                    times.epochs.iter().map(|(_, s)| s).sum::<f64>(),
                    ms(tuner.seconds[0]),
                    ms(tuner.seconds[1]),
                )
            }
            _ => on,
        };
        let rate = pictures as f64 / seconds;
        let bound = gmacs * 1e9 / step_macs;
        if !own {
            burn_rate.insert(strategy.name(), rate);
        }
        let against_burn = burn_rate
            .get(strategy.name())
            .filter(|_| own)
            .map_or(String::new(), |burn| {
                format!(", {:.2}x Burn's own operations", rate / burn)
            });
        console_log!(
            "bench: training on the cpu backend, mobilenet-v2 224 px batch 16, {}, {on}: {rate:.2} img/s{against_burn}; bound {bound:.1} img/s on one core, {:.1} on {cores} ({:.2} G MACs per image per step, of {:.2} G forward; graft-kernels {gmacs:.1} GMAC/s here): {:.0}% of one core's bound",
            strategy.name(),
            bound * cores as f64,
            step_macs / 1e9,
            forward / 1e9,
            100.0 * rate / bound
        );
    }
}
