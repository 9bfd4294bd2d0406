//! Freezing body blocks by name, by index (negative counts from the end) or "the first k".
//!
//! Frozen means all of: the block's parameters require no gradient (so they get none, the optimizer
//! holds no state for them and they never change), and its BatchNorms run in inference mode on their
//! running statistics, which are never updated (Burn 0.22's `Module::freeze`). A frozen *prefix* of the
//! body additionally runs without an autodiff graph: see [`ImageClassifier::forward_frozen_prefix`].

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;

use crate::model::ImageClassifier;

/// A block could not be addressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreezeError {
    #[error("no block named {name:?}; the blocks are {}", available.join(", "))]
    UnknownBlock { name: String, available: Vec<String> },
    #[error("block index {index} is out of range for {count} blocks (use 0..{count} or -{count}..-1)")]
    IndexOutOfRange { index: isize, count: usize },
    #[error("cannot freeze the first {k} of {count} blocks")]
    TooManyBlocks { k: usize, count: usize },
}

/// Resolves block names to indices, in the order given.
pub fn indices_of_names<S: AsRef<str>>(model: &ImageClassifier, names: &[S]) -> Result<Vec<usize>, FreezeError> {
    let available = model.block_names();
    names
        .iter()
        .map(|name| {
            available
                .iter()
                .position(|candidate| candidate == name.as_ref())
                .ok_or_else(|| FreezeError::UnknownBlock {
                    name: name.as_ref().to_string(),
                    available: available.clone(),
                })
        })
        .collect()
}

/// Resolves indices, negative ones counting from the end (-1 is the last block).
pub fn resolve_indices(count: usize, indices: &[isize]) -> Result<Vec<usize>, FreezeError> {
    indices
        .iter()
        .map(|&index| {
            let resolved = if index < 0 { count as isize + index } else { index };
            usize::try_from(resolved)
                .ok()
                .filter(|&resolved| resolved < count)
                .ok_or(FreezeError::IndexOutOfRange { index, count })
        })
        .collect()
}

/// Freezes the named blocks (`"stem"`, `"blocks.3"`, `"head_conv"`). Nothing changes on error.
pub fn freeze<S: AsRef<str>>(model: &mut ImageClassifier, names: &[S]) -> Result<(), FreezeError> {
    for index in indices_of_names(model, names)? {
        model.set_block_frozen(index, true);
    }
    Ok(())
}

/// Unfreezes the named blocks: they train again (gradients, optimizer state, BatchNorm statistics).
pub fn unfreeze<S: AsRef<str>>(model: &mut ImageClassifier, names: &[S]) -> Result<(), FreezeError> {
    for index in indices_of_names(model, names)? {
        model.set_block_frozen(index, false);
    }
    Ok(())
}

/// Freezes blocks by index; `-1` is the last block.
pub fn freeze_idx(model: &mut ImageClassifier, indices: &[isize]) -> Result<(), FreezeError> {
    for index in resolve_indices(model.block_names().len(), indices)? {
        model.set_block_frozen(index, true);
    }
    Ok(())
}

/// Unfreezes blocks by index; `-1` is the last block.
pub fn unfreeze_idx(model: &mut ImageClassifier, indices: &[isize]) -> Result<(), FreezeError> {
    for index in resolve_indices(model.block_names().len(), indices)? {
        model.set_block_frozen(index, false);
    }
    Ok(())
}

/// Freezes the first `k` blocks and unfreezes the rest (fastai's `freeze_to`). `k = 0` trains the whole
/// body; `k = count` freezes it all (head only).
pub fn freeze_to(model: &mut ImageClassifier, k: usize) -> Result<(), FreezeError> {
    let count = model.block_names().len();
    if k > count {
        return Err(FreezeError::TooManyBlocks { k, count });
    }
    for index in 0..count {
        model.set_block_frozen(index, index < k);
    }
    Ok(())
}

/// Whether each body block is frozen.
pub fn frozen_blocks(model: &ImageClassifier) -> Vec<bool> {
    (0..model.block_names().len())
        .map(|index| model.block_is_frozen(index))
        .collect()
}

/// Counts parameters that require a gradient.
struct TrainableCount(usize);

impl ModuleVisitor for TrainableCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.is_require_grad() {
            self.0 += param.val().shape().num_elements();
        }
    }
}

/// The number of scalar parameters that train (on a model on an autodiff device; on a plain device
/// nothing requires a gradient).
pub fn trainable_params(model: &ImageClassifier) -> usize {
    let mut count = TrainableCount(0);
    model.visit(&mut count);
    count.0
}
