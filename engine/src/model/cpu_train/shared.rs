//! The weight gradients of the 1x1 convolutions on the helper workers (in the browser, on the CPU
//! backend): sent during the backward pass ([`send_weight_gradient`], from `PointwiseBackward`),
//! collected before the optimizer step ([`backward`]), and whether sending them pays on this machine,
//! measured ([`Tuner`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use burn::backend::flex::FlexTensor;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::Gradients as TensorGradients;

use super::slice;
use crate::helpers::{self, Share};

/// Records the parameter of the 1x1 convolution about to run (`None` after it).
pub(super) fn set_weight_param(param: Option<ParamId>) {
    WEIGHT_PARAM.set(param);
}

/// The parameter of the 1x1 convolution running, when [`super::pointwise_conv2d_of`] runs it.
pub(super) fn weight_param() -> Option<ParamId> {
    WEIGHT_PARAM.get()
}

thread_local! {
    /// The parameter of the 1x1 convolution being recorded (set by [`super::pointwise_conv2d_of`]).
    static WEIGHT_PARAM: Cell<Option<ParamId>> = const { Cell::new(None) };
    /// Whether the backward pass running now may send weight gradients to helpers (in [`backward`]).
    static SHARING: Cell<bool> = const { Cell::new(false) };
    /// The weight gradients a helper computes, sent during the backward pass running now.
    static PENDING: RefCell<Vec<PendingGradient>> = const { RefCell::new(Vec::new()) };
    /// Where the time of sharing the weight gradients went on this thread.
    static TIMES: Cell<HelperTimes> = const { Cell::new(HelperTimes { sending: 0.0, waiting: 0.0 }) };
    /// Whether sharing the weight gradients pays here (see [`Tuner`]).
    static TUNER: RefCell<Tuner> = RefCell::new(Tuner::default());
    /// The helper the next weight gradient goes to (round robin).
    static NEXT_HELPER: Cell<usize> = const { Cell::new(0) };
}

/// A weight gradient a helper computes: its parameter, its share, its operands (kept to compute it
/// here should the helper fail) and the helper's answer to come.
struct PendingGradient {
    param: ParamId,
    share: Share,
    x: FlexTensor,
    dy: FlexTensor,
    answer: helpers::Answer,
}

/// Seconds this thread spent sharing weight gradients with helpers, summed over its passes:
/// `sending` them (copying their operands into messages), and `waiting` for the last ones after its
/// backward pass was done (what the helpers did not hide).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HelperTimes {
    pub sending: f64,
    pub waiting: f64,
}

/// [`HelperTimes`] so far on this thread.
pub fn helper_times() -> HelperTimes {
    TIMES.get()
}

/// Below this many multiply-adds a weight gradient is computed here: sending it costs more.
const MIN_SHARED_MACS: usize = 1_000_000;

/// Below this many multiply-adds per value sent (its operands) a weight gradient is computed here:
/// copying a value into a message and out again costs about as much as a few dozen multiply-adds
/// (the early layers of few channels, whose planes are large, stay here).
const MIN_MACS_PER_VALUE_SENT: usize = 64;

/// Whether the weight gradients go to the helpers (the second way), chosen by measuring backward
/// passes both ways on this machine ([`crate::tuner`]); `seconds` are of a whole backward pass,
/// computing the weight gradients here, and on the helpers.
pub use crate::tuner::Tuner;

/// The measurements behind the choice to share the weight gradients on this thread.
pub fn tuner() -> Tuner {
    TUNER.with_borrow(Clone::clone)
}

/// Measures again from the next pass (a training phase trains other layers: other costs).
pub fn reset_tuner() {
    TUNER.set(Tuner::default());
}

/// `loss.backward()`, with the 1x1 convolutions' weight gradients computed on this thread's helpers
/// when there are (in the browser, on the CPU backend) and it pays ([`Tuner`]), then put in the
/// gradients: the same gradients either way. Without helpers this is `loss.backward()`.
pub async fn backward<M: Module>(model: &M, loss: Tensor<1>) -> TensorGradients {
    if helpers::installed().is_none_or(|helpers| helpers.ready() == 0) {
        return loss.backward();
    }
    let shares = TUNER.with_borrow(Tuner::second_next);
    let started = web_time::Instant::now();
    let grads = backward_sharing(model, loss, shares).await;
    TUNER.with_borrow_mut(|tuner| tuner.record(shares, started.elapsed().as_secs_f64()));
    grads
}

/// `loss.backward()`, the weight gradients sent to the helpers when `shares`, then put in the
/// gradients.
async fn backward_sharing<M: Module>(model: &M, loss: Tensor<1>, shares: bool) -> TensorGradients {
    SHARING.set(shares);
    let mut grads = loss.backward();
    SHARING.set(false);
    let pending = PENDING.take();
    if pending.is_empty() {
        return grads;
    }
    let waiting = web_time::Instant::now();
    let mut values = HashMap::with_capacity(pending.len());
    for gradient in pending {
        let PendingGradient {
            param,
            share,
            x,
            dy,
            answer,
        } = gradient;
        let dw = match answer.await {
            Ok(dw) if dw.len() == share.output_len() => dw,
            _ => share
                .run(slice(&x), slice(&dy))
                .expect("operands of the share's own shape"),
        };
        values.insert(param, dw);
    }
    TIMES.set(HelperTimes {
        waiting: TIMES.get().waiting + waiting.elapsed().as_secs_f64(),
        ..TIMES.get()
    });
    struct Put<'a> {
        values: HashMap<ParamId, Vec<f32>>,
        grads: &'a mut TensorGradients,
    }
    impl ModuleVisitor for Put<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(dw) = self.values.remove(&param.id) {
                let value = param.val();
                let gradient =
                    Tensor::from_data(TensorData::new(dw, value.shape()), &value.device().without_autodiff());
                value.grad_replace(self.grads, gradient);
            }
        }
    }
    let mut put = Put {
        values,
        grads: &mut grads,
    };
    model.visit(&mut put);
    assert!(
        put.values.is_empty(),
        "a weight gradient for a parameter the model does not have"
    );
    grads
}

/// Sends the weight gradient `dw = Σ dy xᵀ` of the parameter `param` to a helper when the backward
/// pass running now may and the share is worth it: true when sent (then [`backward`] collects it).
pub(super) fn send_weight_gradient(param: Option<ParamId>, share: Share, x: &FlexTensor, dy: &FlexTensor) -> bool {
    let sent = share.images * share.a_per_image() + share.b_len();
    let worth = share.macs() >= MIN_SHARED_MACS.max(MIN_MACS_PER_VALUE_SENT * sent);
    let Some(param) = param.filter(|_| SHARING.get() && worth) else {
        return false;
    };
    let Some(helpers) = helpers::installed().filter(|helpers| helpers.ready() > 0) else {
        return false;
    };
    let index = NEXT_HELPER.get() % helpers.ready();
    NEXT_HELPER.set(index + 1);
    let sending = web_time::Instant::now();
    let answer = helpers.run_step(index, share, slice(x), slice(dy));
    TIMES.set(HelperTimes {
        sending: TIMES.get().sending + sending.elapsed().as_secs_f64(),
        ..TIMES.get()
    });
    PENDING.with_borrow_mut(|pending| {
        pending.push(PendingGradient {
            param,
            share,
            x: x.clone(),
            dy: dy.clone(),
            answer,
        })
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu_train::pointwise_conv2d_of;
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu6;

    fn close(a: Tensor<4>, b: Tensor<4>, tolerance: f32, what: &str) {
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff < tolerance, "{what}: max difference {diff}");
    }

    /// Helpers in this process that take training step shares: each computes what it is sent (its
    /// answer fails, or is short, as told) and counts them.
    struct StepHelpers {
        answer: Result<(), &'static str>,
        sent: std::cell::RefCell<Vec<helpers::Share>>,
    }

    impl helpers::Helpers for StepHelpers {
        fn ready(&self) -> usize {
            2
        }

        fn run(
            &self,
            _: usize,
            _: &helpers::SharedNetwork,
            _: helpers::Work,
            _: Vec<f32>,
            _: [usize; 4],
        ) -> helpers::Answer {
            unreachable!("no frozen network here")
        }

        fn run_step(&self, _: usize, share: helpers::Share, a: &[f32], b: &[f32]) -> helpers::Answer {
            self.sent.borrow_mut().push(share);
            let values = share.run(a, b).expect("operands of the share's shape");
            let answer = match self.answer {
                Ok(()) => Ok(values),
                Err("short") => Ok(values[1..].to_vec()),
                Err(why) => Err(helpers::HelperError(why.into())),
            };
            Box::pin(async move { answer })
        }
    }

    #[derive(Module, Debug)]
    struct TwoConvs {
        first: Param<Tensor<4>>,
        second: Param<Tensor<4>>,
    }

    /// With helpers taking the 1x1 convolutions' weight gradients, [`backward`] gives the gradients
    /// computed here alone (to the rounding of the threads' partial sums natively; a helper sums in
    /// this thread's order); a helper that fails or answers short has its gradient computed here; a
    /// plain `backward()` sends nothing, helpers or not.
    #[test]
    fn weight_gradients_on_helpers_change_no_number() {
        let device = Device::flex().autodiff();
        let random = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let model = TwoConvs {
            first: Param::from_tensor(random([256, 64, 1, 1])),
            second: Param::from_tensor(random([256, 256, 1, 1])),
        };
        let x = random([4, 64, 8, 8]);
        let r = random([4, 256, 8, 8]);
        let loss = || {
            let h = relu6(pointwise_conv2d_of(x.clone(), &model.first));
            (pointwise_conv2d_of(h, &model.second) * r.clone()).sum()
        };
        let gradients = |grads: &TensorGradients| {
            (
                model.first.val().grad(grads).expect("the first weights' gradient"),
                model.second.val().grad(grads).expect("the second weights' gradient"),
            )
        };
        let alone = gradients(&pollster::block_on(backward(&model, loss())));
        let alone_shared = gradients(&pollster::block_on(backward_sharing(&model, loss(), true)));
        assert!(
            (alone_shared.0 - alone.0.clone()).abs().max().into_scalar::<f32>() == 0.0,
            "without helpers nothing is sent"
        );
        for answer in [Ok(()), Err("stopped"), Err("short")] {
            let pool = std::rc::Rc::new(StepHelpers {
                answer,
                sent: Default::default(),
            });
            helpers::install(Some(pool.clone()));
            let plain = gradients(&loss().backward());
            assert!(
                pool.sent.borrow().is_empty(),
                "{answer:?}: a plain backward() sent a share"
            );
            let shared = gradients(&pollster::block_on(backward_sharing(&model, loss(), true)));
            helpers::install(None);
            let sent: Vec<_> = pool
                .sent
                .borrow()
                .iter()
                .map(|share| (share.shape.inputs, share.shape.outputs, share.images))
                .collect();
            assert_eq!(
                sent,
                vec![(256, 256, 4)],
                "{answer:?}: the second layer's weight gradient sent; the first's computed here (nothing else to do meanwhile: its input needs no gradient)"
            );
            for (what, (first, second)) in [("plain", plain), ("shared", shared)] {
                close(
                    first,
                    alone.0.clone(),
                    1e-3,
                    &format!("{answer:?}, {what}: first weights"),
                );
                close(
                    second,
                    alone.1.clone(),
                    1e-3,
                    &format!("{answer:?}, {what}: second weights"),
                );
            }
        }
    }
}
