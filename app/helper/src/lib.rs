//! A helper worker: one per spare core, started by the training worker (`graft-worker`'s `helpers`),
//! so that frozen inference on the CPU kernels runs on every core of a browser without shared memory.
//! It holds one network at a time, compiled from the network file it is sent ([`ToHelper::Load`]),
//! and answers each share of a batch ([`ToHelper::Run`]) with its values, in the order received.
//!
//! It also computes training step shares (`graft_kernels::step`): the weight gradients of the 1x1
//! convolutions, which the training worker sends during its backward pass and collects before the
//! optimizer step, answered in order with the batches' shares. A step share travels as one
//! `Float32Array` ([`pack_step`]) and its answer comes back in the same buffer, which the training
//! worker uses again: a new buffer costs a page fault per 4 KiB, and every JS value a wasm module
//! makes costs a table slot, both far more than copying the numbers.
//!
//! Both sides of the conversation are here: the messages and how they travel as JS arrays (their big
//! buffers transferred, not copied), the channel, and [`serve`], the helper's side.

use std::cell::RefCell;

use graft_kernels::step::{Pointwise, Product, Share};
use graft_kernels::{Network, Work};
use js_sys::{Array, ArrayBuffer, Float32Array, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// What the training worker asks of a helper.
#[derive(Debug, Clone, PartialEq)]
pub enum ToHelper {
    /// Hold this network (a `graft_kernels::file` network file) under `key`, in place of any other.
    Load { key: u64, file: Vec<u8> },
    /// `work` for `images` (NCHW, `dims`) with the network held under `key`.
    Run {
        key: u64,
        work: Work,
        dims: [usize; 4],
        images: Vec<f32>,
    },
}

/// What a helper says.
#[derive(Debug, Clone, PartialEq)]
pub enum FromHelper {
    /// Started: it takes shares from now on.
    Ready,
    /// A share's values (answers come in the order of the `Run`s).
    Done(Vec<f32>),
    /// A share it could not compute, and why.
    Failed(String),
}

/// A message and the buffers to transfer with it.
pub type Packed = (Array, Array);

fn number(message: &Array, index: u32) -> Result<f64, String> {
    message
        .get(index)
        .as_f64()
        .ok_or_else(|| format!("helper message: item {index} is not a number"))
}

impl ToHelper {
    pub fn pack(&self) -> Packed {
        let (message, transfer) = (Array::new(), Array::new());
        match self {
            Self::Load { key, file } => {
                let bytes = Uint8Array::from(file.as_slice());
                transfer.push(&bytes.buffer());
                for item in [JsValue::from_str("load"), JsValue::from(*key as f64), bytes.into()] {
                    message.push(&item);
                }
            }
            Self::Run {
                key,
                work,
                dims,
                images,
            } => {
                let values = Float32Array::from(images.as_slice());
                transfer.push(&values.buffer());
                let (kind, count) = match work {
                    Work::Embeddings => ("embeddings", 0),
                    Work::Prefix(count) => ("prefix", *count),
                    Work::Probed => ("probed", 0),
                };
                for item in [
                    JsValue::from_str(kind),
                    JsValue::from(*key as f64),
                    JsValue::from(count as f64),
                ] {
                    message.push(&item);
                }
                for dim in dims {
                    message.push(&JsValue::from(*dim as f64));
                }
                message.push(&values);
            }
        }
        (message, transfer)
    }

    pub fn unpack(data: &JsValue) -> Result<Self, String> {
        let message: &Array = data.dyn_ref().ok_or("helper message: not an array")?;
        let kind = message.get(0).as_string().unwrap_or_default();
        let key = number(message, 1)? as u64;
        match kind.as_str() {
            "load" => Ok(Self::Load {
                key,
                file: message
                    .get(2)
                    .dyn_into::<Uint8Array>()
                    .map_err(|_| "helper message: no network file")?
                    .to_vec(),
            }),
            "embeddings" | "prefix" | "probed" => {
                let count = number(message, 2)? as usize;
                let mut dims = [0; 4];
                for (i, dim) in dims.iter_mut().enumerate() {
                    *dim = number(message, 3 + i as u32)? as usize;
                }
                Ok(Self::Run {
                    key,
                    work: match kind.as_str() {
                        "prefix" => Work::Prefix(count),
                        "probed" => Work::Probed,
                        _ => Work::Embeddings,
                    },
                    dims,
                    images: message
                        .get(7)
                        .dyn_into::<Float32Array>()
                        .map_err(|_| "helper message: no pictures")?
                        .to_vec(),
                })
            }
            other => Err(format!("helper message: unknown kind {other:?}")),
        }
    }
}

/// Values before a step share's operands: its product, inputs, outputs, plane and images.
const STEP_HEADER: usize = 5;

/// A training step share as the message a helper receives: one `Float32Array`, the share's header
/// ([`STEP_HEADER`] values) then `a` and `b`, in the smallest `spare` buffer that holds it (taken
/// from it), else a new one; with the list of buffers to transfer (that one).
pub fn pack_step(share: Share, a: &[f32], b: &[f32], spare: &mut Vec<ArrayBuffer>) -> (Float32Array, Array) {
    let total = STEP_HEADER + a.len() + b.len();
    let bytes = (total * 4) as u32;
    let fitting = spare
        .iter()
        .enumerate()
        .filter(|(_, buffer)| buffer.byte_length() >= bytes)
        .min_by_key(|(_, buffer)| buffer.byte_length())
        .map(|(index, _)| index);
    let buffer = fitting.map_or_else(|| ArrayBuffer::new(bytes), |index| spare.swap_remove(index));
    let message = Float32Array::new_with_byte_offset_and_length(&buffer, 0, total as u32);
    let product = match share.product {
        Product::Forward => 0,
        Product::InputGradient => 1,
        Product::WeightGradient => 2,
    };
    let Pointwise { inputs, outputs, plane } = share.shape;
    for (index, value) in [product, inputs, outputs, plane, share.images].into_iter().enumerate() {
        message.set_index(index as u32, value as f32);
    }
    let at = (STEP_HEADER + a.len()) as u32;
    message.subarray(STEP_HEADER as u32, at).copy_from(a);
    message.subarray(at, total as u32).copy_from(b);
    (message, Array::of1(&buffer))
}

/// The share a step message holds, and its operands.
fn unpack_step(message: &Float32Array) -> Result<(Share, Vec<f32>, Vec<f32>), String> {
    let header: Vec<usize> = (0..STEP_HEADER as u32)
        .map(|index| message.get_index(index) as usize)
        .collect();
    let product = match header[0] {
        0 => Product::Forward,
        1 => Product::InputGradient,
        2 => Product::WeightGradient,
        other => return Err(format!("step message: unknown product {other}")),
    };
    let share = Share {
        product,
        shape: Pointwise {
            inputs: header[1],
            outputs: header[2],
            plane: header[3],
        },
        images: header[4],
    };
    let (a_len, b_len) = (share.images * share.a_per_image(), share.b_len());
    if message.length() as usize != STEP_HEADER + a_len + b_len {
        return Err(format!("step message: {} values for {share:?}", message.length()));
    }
    let at = (STEP_HEADER + a_len) as u32;
    let a = message.subarray(STEP_HEADER as u32, at).to_vec();
    let b = message.subarray(at, message.length()).to_vec();
    Ok((share, a, b))
}

/// The helper's answer to a step message: its values, in the message's own buffer when they fit
/// (sent back to carry the next one), with the buffers to transfer.
fn answer_step(message: &Float32Array) -> Result<(Float32Array, Array), String> {
    let (share, a, b) = unpack_step(message)?;
    let values = share.run(&a, &b).map_err(|e| e.to_string())?;
    let buffer = message.buffer();
    let answer = if values.len() * 4 <= buffer.byte_length() as usize {
        let answer = Float32Array::new_with_byte_offset_and_length(&buffer, 0, values.len() as u32);
        answer.copy_from(&values);
        answer
    } else {
        Float32Array::from(values.as_slice())
    };
    let transfer = Array::of1(&answer.buffer());
    Ok((answer, transfer))
}

impl FromHelper {
    pub fn pack(&self) -> Packed {
        let (message, transfer) = (Array::new(), Array::new());
        match self {
            Self::Ready => {
                message.push(&"ready".into());
            }
            Self::Done(values) => {
                let values = Float32Array::from(values.as_slice());
                transfer.push(&values.buffer());
                message.push(&"done".into());
                message.push(&values);
            }
            Self::Failed(why) => {
                message.push(&"failed".into());
                message.push(&JsValue::from_str(why));
            }
        }
        (message, transfer)
    }

    pub fn unpack(data: &JsValue) -> Self {
        // A step's answer: its values alone.
        if let Some(values) = data.dyn_ref::<Float32Array>() {
            return Self::Done(values.to_vec());
        }
        let Some(message) = data.dyn_ref::<Array>() else {
            return Self::Failed("the helper's answer is not an array".into());
        };
        match message.get(0).as_string().as_deref() {
            Some("ready") => Self::Ready,
            Some("done") => match message.get(1).dyn_into::<Float32Array>() {
                Ok(values) => Self::Done(values.to_vec()),
                Err(_) => Self::Failed("the helper's answer has no values".into()),
            },
            Some("failed") => Self::Failed(message.get(1).as_string().unwrap_or_default()),
            _ => Self::Failed("the helper's answer is unreadable".into()),
        }
    }
}

thread_local! {
    /// The network this helper holds under its key, or why the last one sent could not be read.
    static HELD: RefCell<Option<(u64, Result<Network, String>)>> = const { RefCell::new(None) };
}

/// Whether this helper's URL asks it to panic at its first share (the tests' build only).
fn panic_injected() -> bool {
    cfg!(feature = "test-hooks")
        && js_sys::Reflect::get(&js_sys::global(), &"location".into())
            .ok()
            .and_then(|location| js_sys::Reflect::get(&location, &"search".into()).ok())
            .and_then(|search| search.as_string())
            .is_some_and(|search| search.contains("fault=helper-panic"))
}

/// Answers one request: a `Run` with its values or why not; a `Load` is not answered (a network
/// that could not be read fails the `Run`s that need it, so every `Run` has exactly one answer).
fn answer(request: ToHelper) -> Option<FromHelper> {
    match request {
        ToHelper::Load { key, file } => {
            let net = graft_kernels::file::from_bytes(&file)
                .map_err(|e| e.to_string())
                .and_then(|(spec, _)| Network::new(&spec).map_err(|e| e.to_string()));
            HELD.set(Some((key, net)));
            None
        }
        ToHelper::Run { .. } if panic_injected() => panic!("graft helper: the panic the test asked for"),
        ToHelper::Run {
            key,
            work,
            dims,
            images,
        } => Some(HELD.with_borrow(|held| match held {
            Some((held, Ok(net))) if *held == key && images.len() == dims.iter().product::<usize>() => {
                FromHelper::Done(work.run(net, &images, dims).values)
            }
            Some((held, Ok(_))) if *held == key => {
                FromHelper::Failed(format!("{} values are not {dims:?}", images.len()))
            }
            Some((held, Err(why))) if *held == key => {
                FromHelper::Failed(format!("the network could not be read: {why}"))
            }
            _ => FromHelper::Failed(format!("no network {key} here")),
        })),
    }
}

/// The helper's side: answers every message, after saying it is ready.
pub fn serve() {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let post = {
        let scope = scope.clone();
        move |answer: FromHelper| {
            let (message, transfer) = answer.pack();
            if scope.post_message_with_transfer(&message, &transfer).is_err() {
                // Every share must be answered, or the training worker would wait for it.
                let (message, _) = FromHelper::Failed("the answer could not be sent".into()).pack();
                let _ = scope.post_message(&message);
            }
        }
    };
    let reply = post.clone();
    let step_scope = scope.clone();
    // For the helper's whole life.
    gloo_events::EventListener::new(&scope, "message", move |event| {
        let data = event.unchecked_ref::<web_sys::MessageEvent>().data();
        if let Some(step) = data.dyn_ref::<Float32Array>() {
            match answer_step(step) {
                Ok((answer, transfer)) => {
                    if step_scope.post_message_with_transfer(&answer, &transfer).is_err() {
                        reply(FromHelper::Failed("the answer could not be sent".into()));
                    }
                }
                Err(why) => reply(FromHelper::Failed(why)),
            }
            return;
        }
        match ToHelper::unpack(&data) {
            Ok(request) => {
                if let Some(answer) = answer(request) {
                    reply(answer);
                }
            }
            Err(why) => reply(FromHelper::Failed(why)),
        }
    })
    .forget();
    post(FromHelper::Ready);
}
