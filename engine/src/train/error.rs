//! Why a run could not start or go on.

use crate::data::DataError;
use crate::freeze::FreezeError;
use crate::readback::ReadbackError;
use crate::strategy::StrategyError;

use super::Checkpoint;

/// Why a run could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    #[error(transparent)]
    Freeze(#[from] FreezeError),
    #[error(transparent)]
    Readback(#[from] ReadbackError),
    #[error("the loss became {0} (not a number): the learning rate is too high for this data")]
    Diverged(f64),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The device failed mid-run (lost, or could not run the work). With host checkpoints on, the run
    /// can go on elsewhere from `checkpoint` (see [`resume`]).
    #[error("training stopped because the compute device failed ({error})")]
    Device {
        error: ReadbackError,
        checkpoint: Option<Box<Checkpoint>>,
    },
    /// The device ran out of memory with batches of `batch_size` images. With host checkpoints on,
    /// the run can go on from `checkpoint` in smaller batches ([`Checkpoint::with_batch_size`]).
    #[error("the device ran out of memory with batches of {batch_size} images ({message})")]
    OutOfMemory {
        message: String,
        batch_size: usize,
        checkpoint: Option<Box<Checkpoint>>,
    },
    #[error("this checkpoint belongs to a different dataset or settings: {0}")]
    CheckpointMismatch(String),
}
