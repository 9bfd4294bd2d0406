//! Choosing the compute device: WebGPU when the browser offers an adapter, the CPU backend otherwise.

use burn::prelude::*;

/// The device Graft computes on, and why.
#[derive(Debug, Clone)]
pub enum ComputeDevice {
    /// A WebGPU adapter was found and a device opened on it.
    WebGpu {
        /// The Burn device (without autodiff; call `.autodiff()` to train).
        device: Device,
        /// The adapter's description as the browser reports it.
        adapter: String,
    },
    /// No usable WebGPU adapter: Burn's CPU backend (Flex) runs everything.
    Cpu {
        /// The Burn device (without autodiff).
        device: Device,
        /// Why WebGPU could not be used.
        reason: String,
    },
}

impl ComputeDevice {
    /// The Burn device to compute on.
    pub fn device(&self) -> &Device {
        match self {
            Self::WebGpu { device, .. } | Self::Cpu { device, .. } => device,
        }
    }

    /// Whether this is a GPU device.
    pub fn is_gpu(&self) -> bool {
        matches!(self, Self::WebGpu { .. })
    }

    /// One line for people: `WebGPU: <adapter>` or `CPU fallback: no WebGPU (<reason>)`.
    pub fn label(&self) -> String {
        match self {
            Self::WebGpu { adapter, .. } => format!("WebGPU: {adapter}"),
            Self::Cpu { reason, .. } => format!("CPU fallback: no WebGPU ({reason})"),
        }
    }
}

/// Opens a WebGPU device, or falls back to the CPU backend and says why.
///
/// The wgpu runtime can be initialised once per page; call this once and keep the result.
pub async fn acquire() -> ComputeDevice {
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => ComputeDevice::WebGpu {
            device,
            adapter: describe_adapter(&setup.adapter.get_info()),
        },
        Err(error) => ComputeDevice::Cpu {
            device: Device::flex(),
            reason: error.to_string(),
        },
    }
}

/// Browsers often withhold the adapter's name; say what is known instead of printing nothing.
fn describe_adapter(info: &burn::tensor::wgpu::wgpu::AdapterInfo) -> String {
    let kind = match info.device_type {
        burn::tensor::wgpu::wgpu::DeviceType::Cpu => "software (fallback) adapter",
        _ => "GPU adapter",
    };
    match info.name.trim() {
        "" => format!("unnamed {kind}"),
        name => format!("{name} ({kind})"),
    }
}
