//! Where a person wants Graft to compute: the choice the page keeps and hands to the worker, which
//! opens the device (`graft_worker::device`); which build of the worker that needs
//! ([`WorkerBuild`]: the WebGPU one, or the CPU one a third its size); what the browser says of its
//! WebGPU adapter ([`browser_adapter_info`], asked by the page and by the worker).

/// Where a person wants Graft to compute ("Compute on" beside the device badge): kept by the page,
/// handed to the worker in its URL (`engine_loader.js?build=worker&compute=webgpu`), since the device is chosen
/// once, when the worker starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeChoice {
    /// A GPU when there is one; the CPU without WebGPU or when its only adapter is software.
    #[default]
    Auto,
    /// WebGPU whenever the browser offers an adapter, a software one too.
    WebGpu,
    /// The CPU backend.
    Cpu,
}

impl ComputeChoice {
    pub const ALL: [Self; 3] = [Self::Auto, Self::WebGpu, Self::Cpu];

    /// The name in a URL's query (`compute=`) and in the page's storage.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::WebGpu => "webgpu",
            Self::Cpu => "cpu",
        }
    }

    /// What a person reads in the settings.
    pub fn label(self) -> &'static str {
        match self {
            Self::Auto => "Automatic",
            Self::WebGpu => "WebGPU",
            Self::Cpu => "CPU",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|choice| choice.name() == name.trim())
    }

    /// The choice a URL's query names (`?compute=cpu&…`), if any.
    pub fn from_query(query: &str) -> Option<Self> {
        query_value(query, "compute").and_then(Self::from_name)
    }
}

/// The two builds of the training worker. Burn's WebGPU backend (its shader compiler and runtime) is
/// most of the worker's code, and a person whose browser has no GPU to offer never runs it: the page
/// starts the CPU build for them, which downloads a fraction of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerBuild {
    /// `graft-worker-webgpu` (bin `worker`): WebGPU, and the CPU backend it falls back to.
    WebGpu,
    /// `graft-worker-cpu` (bin `worker-cpu`): the same worker without the WebGPU backend.
    Cpu,
}

impl WorkerBuild {
    /// The build that can serve `choice` on a browser whose adapter is `adapter`: WebGPU when it
    /// may be used (any adapter when WebGPU is chosen; a GPU, not a software adapter, when the choice
    /// is automatic), the CPU build otherwise. The worker itself then decides the same way and says
    /// why on the badge.
    pub fn for_choice(choice: ComputeChoice, adapter: &Result<AdapterInfo, NoWebGpu>) -> Self {
        match (choice, adapter) {
            (ComputeChoice::Cpu, _) | (_, Err(_)) => Self::Cpu,
            (ComputeChoice::WebGpu, Ok(_)) => Self::WebGpu,
            (ComputeChoice::Auto, Ok(info)) if info.is_software() => Self::Cpu,
            (ComputeChoice::Auto, Ok(_)) => Self::WebGpu,
        }
    }

    /// The build `choice` needs in this browser (asks it for its adapter unless the CPU is chosen).
    pub async fn for_this_browser(choice: ComputeChoice) -> Self {
        if choice == ComputeChoice::Cpu {
            return Self::Cpu;
        }
        Self::for_choice(choice, &browser_adapter_info().await)
    }

    /// Its bin's name: trunk's files for it are `{name}.js` (the glue) and `{name}_bg.wasm`.
    pub fn name(self) -> &'static str {
        match self {
            Self::WebGpu => "worker",
            Self::Cpu => "worker-cpu",
        }
    }

    /// The script that starts it, with its query: `public/engine_loader.js`, which loads the build
    /// named in its URL and tells the page when it cannot.
    pub fn loader(self) -> String {
        format!("./engine_loader.js?build={}", self.name())
    }
}

/// The value of `name` in a URL's query (`?compute=cpu&helpers=1`), if it is there.
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .trim_start_matches('?')
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The choice named in this page's or worker's URL (`?compute=…`), if any.
pub fn choice_in_url() -> Option<ComputeChoice> {
    ComputeChoice::from_query(&query_in_url()?)
}

/// This page's or worker's URL query (`?compute=…`), if it has one.
pub fn query_in_url() -> Option<String> {
    use js_sys::Reflect;
    let location = Reflect::get(&js_sys::global(), &"location".into()).ok()?;
    Reflect::get(&location, &"search".into()).ok()?.as_string()
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
    fn a_choice_is_read_from_a_query_and_named_back() {
        assert_eq!(
            ComputeChoice::from_query("?compute=webgpu"),
            Some(ComputeChoice::WebGpu)
        );
        assert_eq!(
            ComputeChoice::from_query("?fault=gpu-out-of-memory&compute=cpu"),
            Some(ComputeChoice::Cpu)
        );
        assert_eq!(ComputeChoice::from_query("?compute=gpu"), None);
        assert_eq!(ComputeChoice::from_query(""), None);
        assert_eq!(query_value("?compute=cpu&helpers=0", "helpers"), Some("0"));
        assert_eq!(query_value("?helpers_off=1&helpers=2", "helpers"), Some("2"));
        assert_eq!(query_value("?helpersx=1", "helpers"), None);
        for choice in ComputeChoice::ALL {
            assert_eq!(ComputeChoice::from_name(choice.name()), Some(choice));
        }
    }

    #[test]
    fn the_cpu_build_serves_whoever_cannot_use_webgpu() {
        let gpu = Ok(AdapterInfo {
            vendor: "nvidia".into(),
            ..AdapterInfo::default()
        });
        let software = Ok(AdapterInfo {
            fallback: true,
            ..AdapterInfo::default()
        });
        let none = Err(NoWebGpu::NotInBrowser);
        let build = WorkerBuild::for_choice;
        assert_eq!(build(ComputeChoice::Auto, &gpu), WorkerBuild::WebGpu);
        assert_eq!(build(ComputeChoice::Auto, &software), WorkerBuild::Cpu);
        assert_eq!(build(ComputeChoice::Auto, &none), WorkerBuild::Cpu);
        // Chosen in the settings: WebGPU on a software adapter too, never without one.
        assert_eq!(build(ComputeChoice::WebGpu, &software), WorkerBuild::WebGpu);
        assert_eq!(
            build(ComputeChoice::WebGpu, &Err(NoWebGpu::NoAdapter)),
            WorkerBuild::Cpu
        );
        assert_eq!(build(ComputeChoice::Cpu, &gpu), WorkerBuild::Cpu);
        assert_ne!(WorkerBuild::WebGpu.loader(), WorkerBuild::Cpu.loader());
        // The names trunk gives the two bins' files (`app/index.html`), which the loader loads.
        assert_eq!(WorkerBuild::WebGpu.loader(), "./engine_loader.js?build=worker");
        assert_eq!(WorkerBuild::Cpu.loader(), "./engine_loader.js?build=worker-cpu");
    }

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
}
