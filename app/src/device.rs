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
        /// The largest buffer a shader can use on this device (`maxStorageBufferBindingSize`, at most
        /// `maxBufferSize`): training batches are sized to fit it.
        max_buffer_bytes: u64,
        /// The wgpu device behind `device`, for what Burn does not reach (its error handler; the
        /// tests' raw allocations).
        #[cfg(target_arch = "wasm32")]
        wgpu: burn::tensor::wgpu::wgpu::Device,
    },
    /// No usable WebGPU adapter: Burn's CPU backend (Flex) runs everything.
    Cpu {
        /// The Burn device (without autodiff).
        device: Device,
        /// Why WebGPU could not be used.
        reason: String,
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
            Self::Cpu { reason, .. } => format!("CPU fallback: no WebGPU ({reason})"),
            Self::CpuAfterGpuLoss { reason, .. } => format!("CPU fallback: the GPU was lost ({reason})"),
        }
    }
}

thread_local! {
    /// The wgpu runtime can be initialised once per page (or worker): the first answer is kept.
    static ACQUIRED: std::cell::RefCell<Option<ComputeDevice>> = const { std::cell::RefCell::new(None) };
}

/// Opens a WebGPU device, or falls back to the CPU backend and says why. The first call decides; later
/// calls on the same thread get the same device.
pub async fn acquire() -> ComputeDevice {
    if let Some(acquired) = ACQUIRED.with_borrow(Clone::clone) {
        return acquired;
    }
    let acquired = acquire_uncached().await;
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

async fn acquire_uncached() -> ComputeDevice {
    let cpu = |reason: String| ComputeDevice::Cpu {
        device: Device::flex(),
        reason,
    };
    // Ask the browser first: its answer says plainly why there is no WebGPU, where wgpu's error lists
    // every graphics API it did not try.
    let described = match browser_adapter_info().await {
        Ok(info) => info,
        Err(missing) => return cpu(missing.to_string()),
    };
    open_webgpu(described, cpu).await
}

/// The page's code also builds natively, for its unit tests, where there is no browser and no WebGPU.
#[cfg(not(target_arch = "wasm32"))]
async fn open_webgpu(_: AdapterInfo, cpu: impl FnOnce(String) -> ComputeDevice) -> ComputeDevice {
    cpu("not in a browser".into())
}

/// Opens a WebGPU device on the adapter the browser described.
#[cfg(target_arch = "wasm32")]
async fn open_webgpu(described: AdapterInfo, cpu: impl FnOnce(String) -> ComputeDevice) -> ComputeDevice {
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            watch_uncaptured_errors(&setup.device);
            let info = setup.adapter.get_info();
            let software = info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
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
#[cfg(target_arch = "wasm32")]
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

/// Why the browser offers no WebGPU adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoWebGpu {
    /// `navigator.gpu` does not exist: the browser lacks WebGPU or has it switched off.
    #[error("this browser does not offer WebGPU")]
    NotInBrowser,
    /// `requestAdapter()` found no adapter (blocklisted GPU, no driver, or WebGPU disabled).
    #[error("the browser found no WebGPU adapter")]
    NoAdapter,
}

/// What the browser's `GPUAdapterInfo` says: vendor, architecture, device, description.
///
/// wgpu keeps only the description, which browsers usually leave empty; the vendor and architecture
/// ("google", "swiftshader") are what tells a person which adapter they got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdapterInfo {
    pub vendor: String,
    pub architecture: String,
    pub device: String,
    pub description: String,
}

/// Asks `navigator.gpu` (on the page or in a worker) for an adapter and returns its info.
pub async fn browser_adapter_info() -> Result<AdapterInfo, NoWebGpu> {
    use js_sys::{Function, Promise, Reflect};
    use wasm_bindgen::{JsCast, JsValue};

    let get = |object: &JsValue, key: &str| {
        Reflect::get(object, &JsValue::from_str(key))
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())
    };
    let navigator = get(&js_sys::global().into(), "navigator").ok_or(NoWebGpu::NotInBrowser)?;
    let gpu = get(&navigator, "gpu").ok_or(NoWebGpu::NotInBrowser)?;
    let request: Function = get(&gpu, "requestAdapter")
        .and_then(|f| f.dyn_into().ok())
        .ok_or(NoWebGpu::NotInBrowser)?;
    let promise: Promise = request
        .call0(&gpu)
        .ok()
        .and_then(|p| p.dyn_into().ok())
        .ok_or(NoWebGpu::NoAdapter)?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok();
    let adapter = adapter
        .filter(|a| !a.is_null() && !a.is_undefined())
        .ok_or(NoWebGpu::NoAdapter)?;
    let Some(info) = get(&adapter, "info") else {
        return Ok(AdapterInfo::default());
    };
    let text = |key: &str| get(&info, key).and_then(|v| v.as_string()).unwrap_or_default();
    Ok(AdapterInfo {
        vendor: text("vendor"),
        architecture: text("architecture"),
        device: text("device"),
        description: text("description"),
    })
}

/// One line naming the adapter from whatever the browser reveals, e.g.
/// `google swiftshader (software adapter)` or `NVIDIA GeForce RTX 3060 (GPU)`.
pub fn describe_adapter(wgpu_name: &str, info: &AdapterInfo, software: bool) -> String {
    let kind = if software { "software adapter" } else { "GPU" };
    let mut words: Vec<&str> = Vec::new();
    for word in [info.vendor.as_str(), info.architecture.as_str(), info.device.as_str()] {
        if !word.trim().is_empty() {
            words.push(word.trim());
        }
    }
    let name = [wgpu_name.trim(), info.description.trim()]
        .into_iter()
        .find(|name| !name.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| words.join(" "));
    match name.as_str() {
        "" => format!("unnamed {kind}"),
        name => format!("{name} ({kind})"),
    }
}
