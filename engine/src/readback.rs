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
    /// The tensor's data did not convert to `f32`.
    #[error("tensor data is not convertible to f32: {0}")]
    Conversion(String),
}

impl From<ExecutionError> for ReadbackError {
    fn from(error: ExecutionError) -> Self {
        Self::Execution(format!("{error:?}"))
    }
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
