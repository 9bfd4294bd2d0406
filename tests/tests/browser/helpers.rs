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
