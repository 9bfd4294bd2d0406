//! The optimizer of a training phase: one learning rate per trainable body block and one for the head
//! (discriminative fine-tuning, where early, generic blocks move less than late, task-specific ones and
//! the new head moves most), and weight decay only on weights — never on biases or normalisation
//! scales and shifts, whose decay only pulls them towards zero without regularising anything.
//!
//! Each (group, decay) pair has its own optimizer, so its state covers exactly its own parameters;
//! frozen blocks belong to no group and so have no state.

use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::Gradients;
use serde::{Deserialize, Serialize};

use crate::model::{ImageClassifier, step_module};
use crate::strategy::Phase;

/// Which optimizer trains, and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// AdamW (decoupled weight decay), the default: robust to the choice of learning rate.
    AdamW { weight_decay: f64 },
    /// SGD with (heavy-ball) momentum.
    Sgd { momentum: f64, weight_decay: f64 },
}

impl Default for OptimizerKind {
    /// AdamW with PyTorch's default decay of 0.01.
    fn default() -> Self {
        Self::AdamW { weight_decay: 0.01 }
    }
}

impl OptimizerKind {
    /// An optimizer with this kind's settings; `decay` false turns weight decay off.
    fn init(&self, decay: bool) -> ModuleOptimizer {
        match *self {
            Self::AdamW { weight_decay } => AdamWConfig::new()
                .with_weight_decay(if decay { weight_decay as f32 } else { 0.0 })
                .init(),
            Self::Sgd { momentum, weight_decay } => SgdConfig::new()
                .with_momentum(Some(MomentumConfig::new().with_momentum(momentum).with_dampening(0.0)))
                .with_weight_decay((decay && weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)))
                .init(),
        }
    }
}

/// Ids of a module's trainable parameters (those that require a gradient: not BatchNorm's running
/// statistics, not frozen ones), split into weights (decayed) and vectors (biases, norm scales and
/// shifts: not decayed).
#[derive(Debug, Default)]
struct ParamIds {
    decayed: Vec<ParamId>,
    not_decayed: Vec<ParamId>,
}

impl ModuleVisitor for ParamIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        if D >= 2 {
            self.decayed.push(param.id);
        } else {
            self.not_decayed.push(param.id);
        }
    }
}

/// The optimizer state of one group: its body block (`None` for the head) and the tensors it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub block: Option<usize>,
    pub tensors: usize,
}

struct Group {
    /// Body block index, or `None` for the head.
    block: Option<usize>,
    lr: f64,
    decayed: (Vec<ParamId>, ModuleOptimizer),
    not_decayed: (Vec<ParamId>, ModuleOptimizer),
}

/// The optimizer of one phase: a learning rate per trainable block and the head.
pub struct BlockwiseOptimizer {
    groups: Vec<Group>,
}

impl BlockwiseOptimizer {
    /// Optimizers for the blocks `phase` trains in `model` (on an autodiff device, with the phase's
    /// blocks frozen), at its rates.
    pub fn for_phase(phase: &Phase, kind: &OptimizerKind, model: &ImageClassifier) -> Self {
        let group = |block: Option<usize>, lr: f64| {
            let mut ids = ParamIds::default();
            match block {
                Some(index) => model.visit_block(index, &mut ids),
                None => model.classifier.visit(&mut ids),
            }
            Group {
                block,
                lr,
                decayed: (ids.decayed, kind.init(true)),
                not_decayed: (ids.not_decayed, kind.init(false)),
            }
        };
        let mut groups: Vec<Group> = phase
            .block_lrs
            .iter()
            .enumerate()
            .map(|(offset, &lr)| group(Some(phase.frozen_blocks + offset), lr))
            .collect();
        groups.push(group(None, phase.head_lr));
        Self { groups }
    }

    /// The learning rate of each group, head last: `(block index or None for the head, rate)`.
    pub fn learning_rates(&self) -> Vec<(Option<usize>, f64)> {
        self.groups.iter().map(|group| (group.block, group.lr)).collect()
    }

    /// The state each group holds, head last, as Burn's optimizers record it themselves: AdamW keeps
    /// two moments for each parameter tensor it has stepped, SGD with momentum one. A frozen block has
    /// no group, so no state.
    pub fn state(&self) -> Vec<GroupState> {
        self.groups
            .iter()
            .map(|group| GroupState {
                block: group.block,
                tensors: group.decayed.1.to_record().len() + group.not_decayed.1.to_record().len(),
            })
            .collect()
    }

    /// The number of scalar parameters the optimizer updates.
    pub fn num_params(&self, model: &ImageClassifier) -> usize {
        struct Count<'a>(&'a [ParamId], usize);
        impl ModuleVisitor for Count<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if self.0.contains(&param.id) {
                    self.1 += param.val().shape().num_elements();
                }
            }
        }
        let ids: Vec<ParamId> = self
            .groups
            .iter()
            .flat_map(|g| g.decayed.0.iter().chain(&g.not_decayed.0).copied())
            .collect();
        let mut count = Count(&ids, 0);
        model.visit(&mut count);
        count.1
    }

    /// One step: every group's rate times `factor` (the schedule's value for this step). Each group
    /// updates only its own block (or the head), so a head-only step does not pass over the body.
    pub fn step(&mut self, mut model: ImageClassifier, mut grads: Gradients, factor: f64) -> ImageClassifier {
        for group in &mut self.groups {
            let lr = group.lr * factor;
            for (ids, optimizer) in [&mut group.decayed, &mut group.not_decayed] {
                if ids.is_empty() {
                    continue;
                }
                match group.block {
                    Some(index) => model.step_block(index, optimizer, lr, &mut grads, ids),
                    None => step_module(&mut model.classifier, optimizer, lr, &mut grads, ids),
                }
            }
        }
        model
    }
}
