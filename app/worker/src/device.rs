//! Choosing the compute device: WebGPU when the browser offers a GPU, the CPU backend otherwise —
//! also when the only WebGPU adapter is a software one (SwiftShader, llvmpipe, WARP), which trains many
//! times slower than the CPU backend. A person can override that choice ([`ComputeChoice`]). The
//! page has already started the build of the worker that choice needs (`WorkerBuild`); this one
//! decides the same way, and says why on the badge.

use burn::prelude::*;
pub use graft_app::device::{AdapterInfo, ComputeChoice, NoWebGpu, adapter_name, browser_adapter_info, choice_in_url};

/// The device Graft computes on, and why.
#[derive(Debug, Clone)]
pub enum ComputeDevice {
    /// A WebGPU adapter was found and a device opened on it.
    WebGpu {
        /// The Burn device (without autodiff; call `.autodiff()` to train).
        device: Device,
        /// The adapter's description as the browser reports it.
        adapter: String,
        /// The largest buffer a shader can use on this device (`maxStorageBufferBindingSize`, at most
        /// `maxBufferSize`): training batches are sized to fit it.
        max_buffer_bytes: u64,
        /// The wgpu device behind `device`, for what Burn does not reach (its error handler; the
        /// tests' raw allocations).
        #[cfg(all(target_arch = "wasm32", feature = "webgpu"))]
        wgpu: burn::tensor::wgpu::wgpu::Device,
    },
    /// Burn's CPU backend (Flex) runs everything, from the start.
    Cpu {
        /// The Burn device (without autodiff).
        device: Device,
        /// Why not WebGPU.
        why: CpuWhy,
    },
    /// WebGPU was in use and failed (the device was lost): the CPU backend took over.
    CpuAfterGpuLoss {
        device: Device,
        /// What failed.
        reason: String,
    },
}

impl ComputeDevice {
    /// The Burn device to compute on.
    pub fn device(&self) -> &Device {
        match self {
            Self::WebGpu { device, .. } | Self::Cpu { device, .. } | Self::CpuAfterGpuLoss { device, .. } => device,
        }
    }

    /// The largest buffer the device allows, when it has such a limit (GPUs).
    pub fn max_buffer_bytes(&self) -> Option<u64> {
        match self {
            Self::WebGpu { max_buffer_bytes, .. } => Some(*max_buffer_bytes),
            _ => None,
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
            Self::Cpu { why, .. } => why.to_string(),
            Self::CpuAfterGpuLoss { reason, .. } => format!("CPU fallback: the GPU was lost ({reason})"),
        }
    }
}

/// Why Graft computes on the CPU from the start; the badge's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuWhy {
    /// The browser offers no WebGPU (or it could not be opened): the reason.
    #[error("CPU fallback: no WebGPU ({0})")]
    NoWebGpu(String),
    /// The only WebGPU adapter is a software one (named here), slower than the CPU backend.
    #[error("CPU fallback: WebGPU here is a software adapter ({0}), slower than the CPU")]
    SoftwareAdapter(String),
    /// The person chose the CPU in the settings.
    #[error("CPU: chosen in the settings")]
    Chosen,
}

thread_local! {
    /// The wgpu runtime can be initialised once per page (or worker): the first answer is kept.
    static ACQUIRED: std::cell::RefCell<Option<ComputeDevice>> = const { std::cell::RefCell::new(None) };
}

/// Opens the device `choice` asks for (a WebGPU device, or the CPU backend, saying why). The first
/// call decides; later calls on the same thread get the same device, whatever they ask.
pub async fn acquire(choice: ComputeChoice) -> ComputeDevice {
    if let Some(acquired) = ACQUIRED.with_borrow(Clone::clone) {
        return acquired;
    }
    let acquired = acquire_uncached(choice).await;
    ACQUIRED.set(Some(acquired.clone()));
    acquired
}

/// Gives up on the GPU after it failed (`reason`): from now on this thread computes on the CPU
/// backend, and [`acquire`] says so.
pub fn fall_back_to_cpu(reason: &str) -> ComputeDevice {
    let cpu = ComputeDevice::CpuAfterGpuLoss {
        device: Device::flex(),
        reason: reason.to_string(),
    };
    ACQUIRED.set(Some(cpu.clone()));
    cpu
}

async fn acquire_uncached(choice: ComputeChoice) -> ComputeDevice {
    let cpu = |why: CpuWhy| ComputeDevice::Cpu {
        device: Device::flex(),
        why,
    };
    if choice == ComputeChoice::Cpu {
        return cpu(CpuWhy::Chosen);
    }
    // Ask the browser first: its answer says plainly why there is no WebGPU, where wgpu's error lists
    // every graphics API it did not try.
    let described = match browser_adapter_info().await {
        Ok(info) => info,
        Err(missing) => return cpu(CpuWhy::NoWebGpu(missing.to_string())),
    };
    if choice == ComputeChoice::Auto && described.is_software() {
        let name = adapter_name("", &described).unwrap_or_else(|| "unnamed".into());
        return cpu(CpuWhy::SoftwareAdapter(name));
    }
    open_webgpu(described, |reason| cpu(CpuWhy::NoWebGpu(reason))).await
}

/// Natively (the unit tests) there is no browser and no WebGPU; the CPU build of the worker
/// (`graft-worker-cpu`, which the page starts only where WebGPU is not to be used) has no WebGPU
/// backend.
#[cfg(not(all(target_arch = "wasm32", feature = "webgpu")))]
async fn open_webgpu(_: AdapterInfo, cpu: impl FnOnce(String) -> ComputeDevice) -> ComputeDevice {
    cpu(if cfg!(target_arch = "wasm32") {
        "this build of the worker has none".into()
    } else {
        "not in a browser".into()
    })
}

/// Opens a WebGPU device on the adapter the browser described.
#[cfg(all(target_arch = "wasm32", feature = "webgpu"))]
async fn open_webgpu(described: AdapterInfo, cpu: impl FnOnce(String) -> ComputeDevice) -> ComputeDevice {
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            watch_uncaptured_errors(&setup.device);
            let info = setup.adapter.get_info();
            let software = described.is_software() || info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
            let limits = setup.device.limits();
            ComputeDevice::WebGpu {
                device,
                adapter: describe_adapter(&info.name, &described, software),
                max_buffer_bytes: limits.max_storage_buffer_binding_size.min(limits.max_buffer_size),
                wgpu: setup.device.clone(),
            }
        }
        Err(error) => cpu(format!("the WebGPU device could not be opened: {error}")),
    }
}

/// Hands the errors WebGPU reports out of band (an allocation that failed for want of memory, above
/// all) to the engine, whose next read-back then fails with them: training goes on in smaller
/// batches after an out-of-memory instead of reading back meaningless numbers. Replaces the runtime's
/// handler, which panics (in a browser: a worker that stops answering).
#[cfg(all(target_arch = "wasm32", feature = "webgpu"))]
fn watch_uncaptured_errors(device: &burn::tensor::wgpu::wgpu::Device) {
    use burn::tensor::wgpu::wgpu::Error;
    use graft_engine::readback::{self, DeviceFault};
    device.on_uncaptured_error(std::sync::Arc::new(|error: Error| {
        leptos::logging::warn!("graft: WebGPU error: {error}");
        readback::report_fault(match error {
            Error::OutOfMemory { source } => DeviceFault::OutOfMemory(source.to_string()),
            other => DeviceFault::Error(other.to_string().lines().next().unwrap_or_default().to_string()),
        });
    }));
}

/// One line naming the adapter from whatever the browser reveals, e.g.
/// `google swiftshader (software adapter)` or `NVIDIA GeForce RTX 3060 (GPU)`.
pub fn describe_adapter(wgpu_name: &str, info: &AdapterInfo, software: bool) -> String {
    let kind = if software { "software adapter" } else { "GPU" };
    match adapter_name(wgpu_name, info) {
        Some(name) => format!("{name} ({kind})"),
        None => format!("unnamed {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_badge_says_why_the_cpu() {
        let software = CpuWhy::SoftwareAdapter(
            adapter_name(
                "",
                &AdapterInfo {
                    vendor: "google".into(),
                    architecture: "swiftshader".into(),
                    ..AdapterInfo::default()
                },
            )
            .expect("named"),
        );
        assert_eq!(
            software.to_string(),
            "CPU fallback: WebGPU here is a software adapter (google swiftshader), slower than the CPU"
        );
        assert_eq!(CpuWhy::Chosen.to_string(), "CPU: chosen in the settings");
        assert_eq!(
            CpuWhy::NoWebGpu(NoWebGpu::NoAdapter.to_string()).to_string(),
            "CPU fallback: no WebGPU (the browser found no WebGPU adapter)"
        );
    }
}
