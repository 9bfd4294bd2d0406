//! Choosing the compute device: WebGPU when the browser offers a GPU, the CPU backend otherwise —
//! also when the only WebGPU adapter is a software one (SwiftShader, llvmpipe, WARP), which trains many
//! times slower than the CPU backend. A person can override that choice ([`ComputeChoice`]).

use burn::prelude::*;
pub use graft_app::device::{ComputeChoice, choice_in_url};

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

/// What the browser's `GPUAdapterInfo` says: vendor, architecture, device, description, and whether
/// it is a fallback (software) adapter.
///
/// wgpu keeps only the description, which browsers usually leave empty; the vendor and architecture
/// ("google", "swiftshader") are what tells a person which adapter they got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdapterInfo {
    pub vendor: String,
    pub architecture: String,
    pub device: String,
    pub description: String,
    /// `isFallbackAdapter`: the browser itself calls it a software adapter.
    pub fallback: bool,
}

/// Names of software rasterisers a browser may put behind WebGPU without calling them a fallback
/// adapter (Chromium's SwiftShader, Mesa's llvmpipe/lavapipe/softpipe, Windows' WARP).
const SOFTWARE_ADAPTERS: [&str; 6] = [
    "swiftshader",
    "llvmpipe",
    "lavapipe",
    "softpipe",
    "microsoft basic render driver",
    "warp",
];

impl AdapterInfo {
    /// Whether this adapter runs on the CPU: the browser says so, or its name is a known software
    /// rasteriser's.
    pub fn is_software(&self) -> bool {
        // The fields as words between spaces, so that "warp" is not found in "warpdrive".
        let words: String = [&self.vendor, &self.architecture, &self.device, &self.description]
            .iter()
            .flat_map(|field| field.chars().chain([' ']))
            .map(|c| {
                if c.is_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    ' '
                }
            })
            .collect();
        let words = format!(" {} ", words.split_whitespace().collect::<Vec<_>>().join(" "));
        self.fallback
            || SOFTWARE_ADAPTERS
                .iter()
                .any(|name| words.contains(&format!(" {name} ")))
    }
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
    // `isFallbackAdapter` moved from the adapter to its info (Chromium 136); either may be there.
    let flag = |object: &JsValue| get(object, "isFallbackAdapter").and_then(|v| v.as_bool());
    let adapter_flag = flag(&adapter);
    let Some(info) = get(&adapter, "info") else {
        return Ok(AdapterInfo {
            fallback: adapter_flag.unwrap_or(false),
            ..AdapterInfo::default()
        });
    };
    let text = |key: &str| get(&info, key).and_then(|v| v.as_string()).unwrap_or_default();
    Ok(AdapterInfo {
        vendor: text("vendor"),
        architecture: text("architecture"),
        device: text("device"),
        description: text("description"),
        fallback: flag(&info).or(adapter_flag).unwrap_or(false),
    })
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

/// The adapter's name: wgpu's, else the browser's description, else its vendor, architecture and
/// device; `None` when all are empty.
pub fn adapter_name(wgpu_name: &str, info: &AdapterInfo) -> Option<String> {
    let words: Vec<&str> = [info.vendor.as_str(), info.architecture.as_str(), info.device.as_str()]
        .into_iter()
        .map(str::trim)
        .filter(|word| !word.is_empty())
        .collect();
    [wgpu_name.trim(), info.description.trim()]
        .into_iter()
        .find(|name| !name.is_empty())
        .map(str::to_string)
        .or_else(|| (!words.is_empty()).then(|| words.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_adapters_are_told_from_gpus() {
        let info = |vendor: &str, architecture: &str, description: &str| AdapterInfo {
            vendor: vendor.into(),
            architecture: architecture.into(),
            description: description.into(),
            ..AdapterInfo::default()
        };
        assert!(info("google", "swiftshader", "").is_software());
        assert!(info("mesa", "", "llvmpipe (LLVM 19.1.7, 256 bits)").is_software());
        assert!(info("microsoft", "", "Microsoft Basic Render Driver").is_software());
        assert!(
            AdapterInfo {
                fallback: true,
                ..info("", "", "")
            }
            .is_software()
        );
        assert!(!info("nvidia", "ampere", "NVIDIA GeForce RTX 3060").is_software());
        assert!(!info("intel", "gen-12lp", "").is_software());
        // A word inside another is not the name.
        assert!(!info("warpdrive", "", "").is_software());
        assert!(!info("", "", "").is_software());
    }

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
