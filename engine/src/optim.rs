//! AdamW with one learning rate per body block and one for the head: discriminative fine-tuning, where
//! early (generic) blocks move less than late (task-specific) ones and the new head moves most.
//!
//! Each group has its own optimizer, so its state covers exactly its own parameters; frozen blocks have
//! no group and so no state.

use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Gradients;

use crate::model::ImageClassifier;
use crate::strategy::Phase;

/// One optimizer per trainable block plus one for the head, each with its phase learning rate.
pub struct BlockwiseAdamW {
    head: (f64, ModuleOptimizer),
    blocks: Vec<(usize, f64, ModuleOptimizer)>,
}

impl BlockwiseAdamW {
    /// Optimizers for the blocks `phase` trains, at its rates.
    pub fn for_phase(phase: &Phase, config: &AdamWConfig) -> Self {
        Self {
            head: (phase.head_lr, config.init()),
            blocks: phase
                .block_lrs
                .iter()
                .enumerate()
                .map(|(offset, &lr)| (phase.frozen_blocks + offset, lr, config.init()))
                .collect(),
        }
    }

    /// The learning rate of each group, head last: `(block index or None for the head, rate)`.
    pub fn learning_rates(&self) -> Vec<(Option<usize>, f64)> {
        let mut rates: Vec<_> = self.blocks.iter().map(|(index, lr, _)| (Some(*index), *lr)).collect();
        rates.push((None, self.head.0));
        rates
    }

    /// One step: every group's rate times `factor` (the schedule's value for this step).
    pub fn step(&mut self, mut model: ImageClassifier, mut grads: Gradients, factor: f64) -> ImageClassifier {
        for (index, lr, optimizer) in &mut self.blocks {
            let block_grads = model.block_gradients(*index, &mut grads);
            model = optimizer.step(*lr * factor, model, block_grads);
        }
        let head_grads = GradientsParams::from_module(&mut grads, &model.classifier);
        let (lr, optimizer) = &mut self.head;
        optimizer.step(*lr * factor, model, head_grads)
    }
}
