//! The pretrained models natively (CPU backend) against PyTorch's logits on real photos.
#![cfg(not(target_arch = "wasm32"))]

use burn::prelude::*;
use graft_engine::inference::FrozenClassifier;
use graft_engine::model::{ModelKind, Probes};
use graft_engine::weights::{Precision, WeightsError};
use graft_tests::{golden, pretrained};

fn check(kind: ModelKind) {
    let device = Device::flex();
    let model = pretrained::load(kind, &device).expect("weights load");
    for (variant, model) in [
        ("as trained", model.clone()),
        ("BatchNorm folded", model.folded_for_inference()),
    ] {
        let comparisons = pollster::block_on(golden::compare(kind, &model, &device)).expect("read-back");
        for c in &comparisons {
            println!("{kind} ({variant}) {c}");
        }
        golden::assert_matches_reference(kind, &comparisons);
    }
    // The hand-written CPU kernels the browser uses on its CPU backend (here with plain arrays in
    // place of wasm SIMD: the same code).
    let compiled = pollster::block_on(FrozenClassifier::compiled(&model, Probes::Off)).expect("read-back");
    let comparisons = pollster::block_on(golden::compare_frozen(kind, &compiled, &device)).expect("read-back");
    for c in &comparisons {
        println!("{kind} (CPU kernels) {c}");
    }
    golden::assert_matches_reference(kind, &comparisons);
}

#[test]
fn efficientnet_lite0_matches_pytorch_on_cpu() {
    check(ModelKind::EfficientNetLite0);
}

#[test]
fn mobilenet_v2_matches_pytorch_on_cpu() {
    check(ModelKind::MobileNetV2);
}

/// What a first visit downloads: half precision for the convolutions and the classifier (two bytes a
/// parameter, plus BatchNorm's four f32 vectors a channel), widened to f32 as it loads, and still
/// PyTorch's top-5 with logits within the rounding's reach, on Burn and on the CPU kernels.
#[test]
fn the_weights_shipped_are_half_precision_and_give_pytorchs_answers() {
    let manifest = pretrained::shipped_manifest();
    let device = Device::flex();
    for kind in ModelKind::ALL {
        let entry = manifest.entry(kind).expect("in the manifest");
        assert_eq!(entry.precision, Precision::F16, "{kind}: {entry:?}");
        let model = pretrained::load_shipped(kind, &device).expect("weights load");
        let bytes_per_parameter = entry.bytes as f64 / model.num_params() as f64;
        println!("{kind}: {} bytes, {bytes_per_parameter:.2} a parameter", entry.bytes);
        assert!(
            (2.0..2.2).contains(&bytes_per_parameter),
            "{kind}: {bytes_per_parameter:.2} bytes a parameter"
        );
        assert_eq!(model.classifier.weight.val().dtype(), burn::tensor::DType::F32);
        assert_eq!(model.stem.conv.weight.val().dtype(), burn::tensor::DType::F32);

        let comparisons = pollster::block_on(golden::compare(kind, &model, &device)).expect("read-back");
        let compiled = pollster::block_on(FrozenClassifier::compiled(&model, Probes::Off)).expect("read-back");
        let on_kernels = pollster::block_on(golden::compare_frozen(kind, &compiled, &device)).expect("read-back");
        for (variant, comparisons) in [("f16 file", comparisons), ("f16 file, CPU kernels", on_kernels)] {
            for c in &comparisons {
                println!("{kind} ({variant}) {c}");
            }
            golden::assert_matches_reference_within(kind, &comparisons, golden::MAX_LOGIT_DIFFERENCE_HALF_PRECISION);
        }
    }
}

#[test]
fn a_damaged_weights_file_is_refused_naming_the_file() {
    let kind = ModelKind::MobileNetV2;
    let manifest = pretrained::manifest();
    let entry = manifest.entry(kind).expect("in the manifest");
    let device = Device::flex();

    let mut flipped = pretrained::weights_bytes(kind);
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let error = graft_engine::weights::load_pretrained(kind, entry, flipped, &device).unwrap_err();
    assert!(matches!(error, WeightsError::Sha256Mismatch { .. }), "{error}");
    assert!(error.to_string().contains("mobilenet-v2.bpk"), "{error}");

    let mut truncated = pretrained::weights_bytes(kind);
    truncated.truncate(truncated.len() - 1000);
    let error = graft_engine::weights::load_pretrained(kind, entry, truncated, &device).unwrap_err();
    assert!(matches!(error, WeightsError::SizeMismatch { .. }), "{error}");
}

#[test]
fn weights_of_the_other_model_are_refused_with_the_tensor_and_shapes() {
    // MobileNetV2's file loaded as EfficientNet-Lite0: names overlap, shapes do not.
    let bytes = pretrained::weights_bytes(ModelKind::MobileNetV2);
    let error = graft_engine::weights::load_unverified(
        ModelKind::EfficientNetLite0,
        "mobilenet-v2.bpk",
        bytes,
        &Device::flex(),
    )
    .unwrap_err();
    println!("{error}");
    let WeightsError::ShapeMismatch {
        tensor,
        expected,
        found,
        ..
    } = &error
    else {
        panic!("expected a shape mismatch, got {error}");
    };
    // Block 3 is where the two tables first differ (EfficientNet's first 5x5 depthwise conv).
    assert_eq!(tensor, "blocks.3.depthwise.conv.weight");
    assert_eq!(
        (expected.as_slice(), found.as_slice()),
        ([144, 1, 5, 5].as_slice(), [144, 1, 3, 3].as_slice())
    );
}
