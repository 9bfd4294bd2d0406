//! Reading tensors back to the host, asynchronously.
//!
//! WebGPU in a browser cannot block on a GPU read, so every read-back in the engine goes through these
//! async helpers. Natively they complete at once (block on them with any executor).
//!
//! WebGPU reports some failures out of band, as "uncaptured errors" on the device rather than on the
//! operation that failed: above all running out of memory, after which the work reads back whatever
//! the failed buffers held. The code that owns the device hands them to [`report_fault`]; the next
//! read-back fails with them instead of returning meaningless numbers.

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
    /// The device ran out of memory for the work that produces the tensor (reported out of band,
    /// see [`report_fault`]). The device itself is fine: smaller work may fit.
    #[error("the device ran out of memory: {0}")]
    OutOfMemory(String),
    /// The tensor's data did not convert to `f32`.
    #[error("tensor data is not convertible to f32: {0}")]
    Conversion(String),
}

/// A failure a device reported out of band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceFault {
    /// A buffer could not be allocated.
    OutOfMemory(String),
    /// Anything else the device refused (it makes the work's results meaningless).
    Error(String),
}

/// The first fault of each kind since the last read-back took them.
static FAULTS: std::sync::Mutex<(Option<String>, Option<String>)> = std::sync::Mutex::new((None, None));

/// Records a failure the device reported out of band; the next read-back fails with it. Follow-on
/// errors (every use of a buffer that could not be allocated is invalid too) add nothing: the first
/// out-of-memory wins over them.
pub fn report_fault(fault: DeviceFault) {
    let mut faults = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
    match fault {
        DeviceFault::OutOfMemory(message) => {
            faults.0.get_or_insert(message);
        }
        DeviceFault::Error(message) => {
            faults.1.get_or_insert(message);
        }
    }
}

/// Takes the faults reported since the last read-back, as the error that read-back must return.
fn take_fault() -> Option<ReadbackError> {
    let mut faults = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
    let (out_of_memory, error) = std::mem::take(&mut *faults);
    match (out_of_memory, error) {
        (Some(message), _) => Some(ReadbackError::OutOfMemory(message)),
        (None, Some(message)) => Some(ReadbackError::Execution(message)),
        (None, None) => None,
    }
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
    let data = tensor.into_data_async().await.map_err(ReadbackError::from);
    // A fault reported while the work ran is its cause, whatever the read itself says, unless the
    // device is gone (everything fails then, and the loss is what to report).
    let fault = take_fault();
    let data = match (data, fault) {
        (Err(lost @ ReadbackError::DeviceLost(_)), _) => return Err(lost),
        (_, Some(fault)) => return Err(fault),
        (data, None) => data?,
    };
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
    // One read-back per device the module's tensors are on (one, nearly always): a sync point per
    // tensor would cost a round trip each, and tensors on two devices cannot be concatenated.
    let mut groups: Vec<(Device, Vec<usize>, Vec<Tensor<1>>)> = Vec::new();
    for (index, tensor) in collect.0.into_iter().enumerate() {
        let on = tensor.device();
        match groups.iter_mut().find(|(device, ..)| *device == on) {
            Some((_, indices, tensors)) => {
                indices.push(index);
                tensors.push(tensor);
            }
            None => groups.push((on, vec![index], vec![tensor])),
        }
    }
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); groups.iter().map(|(_, indices, _)| indices.len()).sum()];
    for (_, indices, tensors) in groups {
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape().num_elements()).collect();
        let mut flat = to_f32_vec(Tensor::cat(tensors, 0)).await?;
        for (&index, &size) in indices.iter().zip(&sizes).rev() {
            values[index] = flat.split_off(flat.len() - size);
        }
    }
    Ok(module.map(&mut Replace {
        values: values.into_iter(),
        device: device.clone(),
    }))
}
