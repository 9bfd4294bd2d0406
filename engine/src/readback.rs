//! Reading tensors back to the host, asynchronously.
//!
//! WebGPU in a browser cannot block on a GPU read, so every read-back in the engine goes through these
//! async helpers. Natively they complete at once (block on them with any executor).

use burn::prelude::*;
use burn::tensor::ExecutionError;

/// A tensor could not be read back to the host as `f32`.
#[derive(Debug, thiserror::Error)]
pub enum ReadbackError {
    /// The device failed to run the work that produces the tensor, or to copy it back.
    #[error("the device failed to read back a tensor: {0}")]
    Execution(String),
    /// The device is gone (a GPU reset, a crashed GPU process, a destroyed device): nothing on it
    /// can be read any more.
    #[error("the device was lost: {0}")]
    DeviceLost(String),
    /// The tensor's data did not convert to `f32`.
    #[error("tensor data is not convertible to f32: {0}")]
    Conversion(String),
}

impl From<ExecutionError> for ReadbackError {
    fn from(error: ExecutionError) -> Self {
        match error {
            ExecutionError::DevicePoisoned { reason } => {
                // "The device is poisoned / Caused by: / Unknown: <what the driver said>": keep the last.
                let cause = first_line(&reason);
                let cause = cause.rsplit("Caused by:").next().unwrap_or(&cause).trim();
                Self::DeviceLost(cause.strip_prefix("Unknown:").unwrap_or(cause).trim().to_string())
            }
            ExecutionError::WithContext { reason } | ExecutionError::Generic { reason, .. } => {
                Self::Execution(first_line(&reason))
            }
        }
    }
}

impl ReadbackError {
    /// Whether the device itself failed (lost, or could not run the work), as opposed to data that did
    /// not convert: the cases where the same work may succeed on another device.
    pub fn is_device_failure(&self) -> bool {
        matches!(self, Self::Execution(_) | Self::DeviceLost(_))
    }
}

/// The message without the backtrace the runtime appends: the cause, on one line.
fn first_line(reason: &str) -> String {
    let cause = reason.split("Backtrace").next().unwrap_or(reason);
    cause.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// All values of a float tensor, in row-major order.
pub async fn to_f32_vec<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, ReadbackError> {
    let data = tensor.into_data_async().await?;
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|error| ReadbackError::Conversion(format!("{error:?}")))
}

/// The single value of a one-element float tensor (a loss, say).
pub async fn scalar_f32<const D: usize>(tensor: Tensor<D>) -> Result<f32, ReadbackError> {
    let values = to_f32_vec(tensor).await?;
    match values.as_slice() {
        [value] => Ok(*value),
        _ => Err(ReadbackError::Conversion(format!(
            "expected one value, got {}",
            values.len()
        ))),
    }
}

/// `module` with every float (parameters and statistics) copied to `device`, reading each tensor back
/// asynchronously: how a model trained on WebGPU reaches the CPU, whose synchronous APIs (saving a
/// file, say) a browser cannot run on GPU tensors.
pub async fn module_to_device<M: Module>(module: M, device: &Device) -> Result<M, ReadbackError> {
    use burn::module::{ModuleMapper, ModuleVisitor, Param};

    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().flatten(0, D - 1));
        }
    }
    struct Replace {
        values: std::vec::IntoIter<Vec<f32>>,
        device: Device,
    }
    impl ModuleMapper for Replace {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let values = self.values.next().expect("the visit and the map see the same tensors");
            let device = self.device.clone();
            param.map(move |tensor| Tensor::from_data(TensorData::new(values, tensor.shape()), &device))
        }
    }

    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    // One read-back for the whole module: a sync point per tensor would cost a round trip each.
    let sizes: Vec<usize> = collect.0.iter().map(|t| t.shape().num_elements()).collect();
    let mut flat = if collect.0.is_empty() {
        Vec::new()
    } else {
        to_f32_vec(Tensor::cat(collect.0, 0)).await?
    };
    let mut values = Vec::with_capacity(sizes.len());
    for size in sizes.iter().rev() {
        values.push(flat.split_off(flat.len() - size));
    }
    values.reverse();
    Ok(module.map(&mut Replace {
        values: values.into_iter(),
        device: device.clone(),
    }))
}
