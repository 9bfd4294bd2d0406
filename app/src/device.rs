//! Where a person wants Graft to compute: the choice the page keeps and hands to the worker, which
//! opens the device (`graft_worker::device`).

/// Where a person wants Graft to compute ("Compute on" beside the device badge): kept by the page,
/// handed to the worker in its URL (`worker_loader.js?compute=webgpu`), since the device is chosen
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
}
