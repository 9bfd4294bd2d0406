//! A helper worker computes the training step shares it is sent exactly as this worker would:
//! through the real messages (`graft_helper::pack_step`, the answer in the message's own buffer)
//! and the buffers that come back to carry the next ones.

use graft_engine::helpers::{Helpers, Product, Share};
use graft_kernels::step::Pointwise;
use wasm_bindgen_test::wasm_bindgen_test;

#[path = "../common/helper_workers.rs"]
mod helper_workers;

/// `n` values in [-1, 1) that differ from share to share.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

#[wasm_bindgen_test]
async fn a_helper_computes_step_shares_bit_for_bit() {
    let pool = helper_workers::start(1).await;
    let shape = Pointwise {
        inputs: 24,
        outputs: 40,
        plane: 49,
    };
    let shares = [Product::WeightGradient, Product::Forward, Product::InputGradient].map(|product| Share {
        product,
        shape,
        images: 4,
    });
    // Rounds after the first travel in the buffers the helper sent back.
    for round in 0..3 {
        for (index, share) in shares.iter().enumerate() {
            let a = values(share.images * share.a_per_image(), round * 3 + index);
            let b = values(share.b_len(), round * 3 + index + 100);
            let want = share.run(&a, &b).expect("operands of the share's shape");
            let got = pool.run_step(0, *share, &a, &b).await.expect("the helper's answer");
            assert!(
                got == want,
                "round {round}, {:?}: the helper's values differ",
                share.product
            );
        }
        assert!(pool.spare_buffers() > 0, "round {round}: no buffer came back");
    }
    // An answer larger than its message (one pixel, one image): in a buffer of its own.
    let share = Share {
        product: Product::WeightGradient,
        shape: Pointwise {
            inputs: 40,
            outputs: 40,
            plane: 1,
        },
        images: 1,
    };
    let (a, b) = (values(40, 7), values(40, 8));
    let got = pool.run_step(0, share, &a, &b).await.expect("the helper's answer");
    assert!(got == share.run(&a, &b).unwrap(), "a large answer differs");
    assert_eq!(pool.steps_shared(), 10, "every step share answered by the helper");
}

/// The training worker's replica computes a part of a training step (`graft_engine::peer`) exactly as
/// this worker would, through the real messages; a part it cannot compute fails it for good.
#[wasm_bindgen_test]
async fn a_replica_computes_a_training_step_part_bit_for_bit() {
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use graft_engine::model::ModelKind;
    use graft_engine::peer::{self, PartHeader, PartRequest, Peer};

    let replica = helper_workers::start_replica().await;
    let device = Device::flex();
    let kind = ModelKind::MobileNetV2;
    let start = kind.architecture().num_body_blocks() - 2;
    for round in 0..2u64 {
        device.seed(round);
        let mut model = kind.architecture().init(4, &device).train();
        graft_engine::freeze::freeze_to(&mut model, start).unwrap();
        model.set_running_statistics(false);
        model.set_batch_norm_momentum(0.25);
        let images = Tensor::<4>::random([3, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let boundary = model.valid().forward_prefix(start, images);
        let part = PartRequest {
            header: PartHeader {
                kind,
                classes: 4,
                start,
                running_statistics: false,
                momentum: 0.25,
                smoothing: Some(0.1),
                seed: 11 + round,
                dims: boundary.dims(),
                labels: vec![3, 0, 1],
            },
            state: peer::state(&model, start).await.unwrap(),
            input: graft_engine::readback::to_f32_vec(boundary).await.unwrap(),
        };
        let want = peer::compute_part(&model, &part.header, &part.input).await.unwrap();
        let got = replica.run(&part).await.expect("the replica's answer");
        assert_eq!(got.gradients.len(), peer::sizes(&model, start).1);
        assert_eq!(got.running.len(), peer::running_len(&model, start));
        assert!(got == want, "round {round}: the replica's part differs");
    }
    assert_eq!(replica.answered(), 2);
    // A state one value short: refused, and the replica is not asked again.
    let mut model = kind.architecture().init(4, &device).train();
    graft_engine::freeze::freeze_to(&mut model, start).unwrap();
    let mut state = peer::state(&model, start).await.unwrap();
    state.pop();
    let part = PartRequest {
        header: PartHeader {
            kind,
            classes: 4,
            start,
            running_statistics: true,
            momentum: 0.1,
            smoothing: None,
            seed: 0,
            dims: [1, 320, 2, 2],
            labels: vec![0],
        },
        state,
        input: vec![0.0; 320 * 4],
    };
    let error = replica.run(&part).await.expect_err("a part of the wrong size");
    assert!(error.to_string().contains("state"), "{error}");
    assert!(!replica.ready(), "a replica that failed is asked again");
}
