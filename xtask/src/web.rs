//! Serving the built app as a static host should: every file with its content type, and the gzip copy
//! made beside it ([`precompress`]) when the browser accepts gzip — the worker's wasm travels at a
//! sixth of its size. `cargo xtask serve` and the end-to-end tests serve through [`StaticServer`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Files of these kinds get a `.gz` copy: text and wasm shrink several times; the weights (`.bpk`,
/// fp32) by about a tenth. Pictures are compressed already.
const COMPRESSIBLE: [&str; 9] = ["html", "js", "css", "wasm", "json", "svg", "webmanifest", "bpk", "txt"];

/// Smaller files are sent as they are (a gzip header and a second request path cost more).
const SMALLEST_COMPRESSED: u64 = 1024;

/// What [`precompress`] found and made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Precompressed {
    /// Files with an up-to-date `.gz` beside them.
    pub files: usize,
    /// Their sizes, and their `.gz` copies' sizes.
    pub bytes: u64,
    pub gzip_bytes: u64,
    /// Copies written this time (the others were newer than their file already).
    pub written: usize,
}

/// Writes `NAME.gz` beside every compressible file of `dir` (recursively) that lacks an up-to-date one,
/// and removes copies whose file is gone.
pub fn precompress(dir: &Path) -> Result<Precompressed, String> {
    let mut totals = Precompressed::default();
    for path in files_under(dir)? {
        let name = path.to_string_lossy();
        if let Some(original) = name.strip_suffix(".gz") {
            if !Path::new(original).is_file() {
                std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            continue;
        }
        let compressible = path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| COMPRESSIBLE.contains(&x));
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if !compressible || size < SMALLEST_COMPRESSED {
            continue;
        }
        let gz = gzip_path(&path);
        if !is_fresh(&gz, &path) {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(&bytes).map_err(|e| e.to_string())?;
            let compressed = encoder.finish().map_err(|e| e.to_string())?;
            std::fs::write(&gz, compressed).map_err(|e| format!("{}: {e}", gz.display()))?;
            totals.written += 1;
        }
        totals.files += 1;
        totals.bytes += size;
        totals.gzip_bytes += std::fs::metadata(&gz)
            .map_err(|e| format!("{}: {e}", gz.display()))?
            .len();
    }
    Ok(totals)
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| format!("{}: {e}", folder.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn gzip_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

/// Whether `copy` exists and was written after `original` last changed.
fn is_fresh(copy: &Path, original: &Path) -> bool {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    match (modified(copy), modified(original)) {
        (Some(copy), Some(original)) => copy >= original,
        _ => false,
    }
}

/// The content type a static host sends for `path`.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// What a request for `url` gets from the folder `root`: the file (or `index.html` for `/`) with its
/// content type, as its up-to-date `.gz` copy with `Content-Encoding: gzip` when `accepts_gzip`; with
/// an `ETag` (size and time of the bytes sent), and `304 Not Modified` without a body when the
/// browser's copy (`if_none_match`) is that one.
pub fn respond(
    root: &Path,
    url: &str,
    accepts_gzip: bool,
    if_none_match: Option<&str>,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let path = url.split(['?', '#']).next().unwrap_or("/");
    let relative = path.trim_start_matches('/');
    let relative = if relative.is_empty() { "index.html" } else { relative };
    if relative.split('/').any(|part| part == "..") {
        return tiny_http::Response::from_string("bad path").with_status_code(400);
    }
    let file = root.join(relative);
    let header = |name: &str, value: &str| tiny_http::Header::from_bytes(name, value).expect("valid header");
    let gz = gzip_path(&file);
    let encoded = accepts_gzip && is_fresh(&gz, &file);
    let sent = if encoded { &gz } else { &file };
    let Ok(metadata) = std::fs::metadata(sent) else {
        return tiny_http::Response::from_string("not found").with_status_code(404);
    };
    let changed = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!(
        "\"{:x}-{changed:x}{}\"",
        metadata.len(),
        if encoded { "-gz" } else { "" }
    );
    let headers = [
        header("Content-Type", content_type(relative)),
        // Revalidated on every visit (the worker's files keep their names from build to build): a
        // browser that has the bytes gets a 304.
        header("Cache-Control", "no-cache"),
        header("Vary", "Accept-Encoding"),
        header("ETag", &etag),
    ];
    let mut response = if if_none_match.is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag)) {
        tiny_http::Response::from_data(Vec::new()).with_status_code(304)
    } else {
        match std::fs::read(sent) {
            Ok(bytes) => tiny_http::Response::from_data(bytes),
            Err(_) => return tiny_http::Response::from_string("not found").with_status_code(404),
        }
    };
    for h in headers {
        response.add_header(h);
    }
    if encoded {
        response.add_header(header("Content-Encoding", "gzip"));
    }
    response
}

/// A request header's value.
fn header_value<'a>(request: &'a tiny_http::Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// Whether a request's `Accept-Encoding` takes gzip.
fn accepts_gzip(request: &tiny_http::Request) -> bool {
    header_value(request, "Accept-Encoding").is_some_and(|codings| {
        codings
            .split(',')
            .any(|coding| coding.split(';').next().is_some_and(|c| c.trim() == "gzip"))
    })
}

/// A network link to emulate: every response waits `latency` before its first byte, and the bodies
/// share `bytes_per_second` (the server answers one request at a time, as one link carries them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub bytes_per_second: f64,
    pub latency: std::time::Duration,
}

impl Link {
    /// A typical home connection: 20 Mbit/s down, 20 ms.
    pub const HOME_20_MBIT: Self = Self {
        bytes_per_second: 20e6 / 8.0,
        latency: std::time::Duration::from_millis(20),
    };
}

/// A body sent no faster than a [`Link`], counted into `total` as it goes.
struct Paced<R> {
    inner: R,
    bytes_per_second: f64,
    started: std::time::Instant,
    sent: u64,
    total: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let chunk = buf.len().min(16 * 1024);
        let n = self.inner.read(&mut buf[..chunk])?;
        self.sent += n as u64;
        self.total.fetch_add(n as u64, Ordering::Relaxed);
        let due = std::time::Duration::from_secs_f64(self.sent as f64 / self.bytes_per_second);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
        Ok(n)
    }
}

/// A static file server for a built app on a loopback address, until dropped.
pub struct StaticServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    sent: Arc<AtomicU64>,
    log: Arc<std::sync::Mutex<Vec<Served>>>,
    pub addr: SocketAddr,
}

/// A request answered: its path, status and the body's bytes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub path: String,
    pub status: u16,
    pub bytes: u64,
}

impl StaticServer {
    /// Serves `root` on a free port of 127.0.0.1.
    pub fn start(root: PathBuf) -> Self {
        Self::with_headers(root, &[])
    }

    /// Cross-origin isolated (COOP + COEP): pages get `SharedArrayBuffer`, so wasm can run threads.
    pub fn cross_origin_isolated(root: PathBuf) -> Self {
        Self::with_headers(
            root,
            &[
                ("Cross-Origin-Opener-Policy", "same-origin"),
                ("Cross-Origin-Embedder-Policy", "require-corp"),
            ],
        )
    }

    /// Serves `root` on a free port, adding `headers` to every response.
    pub fn with_headers(root: PathBuf, headers: &[(&str, &str)]) -> Self {
        Self::bind("127.0.0.1:0", root, headers).expect("cannot bind 127.0.0.1")
    }

    /// Serves `root` on `address`, adding `headers` to every response.
    pub fn bind(address: &str, root: PathBuf, headers: &[(&str, &str)]) -> Result<Self, String> {
        Self::over(address, root, headers, None)
    }

    /// Serves `root` on a free port of 127.0.0.1 as if over `link`.
    pub fn over_link(root: PathBuf, link: Link) -> Self {
        Self::over("127.0.0.1:0", root, &[], Some(link)).expect("cannot bind 127.0.0.1")
    }

    fn over(address: &str, root: PathBuf, headers: &[(&str, &str)], link: Option<Link>) -> Result<Self, String> {
        let server =
            Arc::new(tiny_http::Server::http(address).map_err(|e| format!("cannot listen on {address}: {e}"))?);
        let addr = server.server_addr().to_ip().ok_or("not an IP address")?;
        let serving = Arc::clone(&server);
        let sent = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&sent);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let logged = Arc::clone(&log);
        let headers: Vec<tiny_http::Header> = headers
            .iter()
            .map(|(name, value)| tiny_http::Header::from_bytes(*name, *value).expect("valid header"))
            .collect();
        let thread = std::thread::spawn(move || {
            for request in serving.incoming_requests() {
                let mut response = respond(
                    &root,
                    request.url(),
                    accepts_gzip(&request),
                    header_value(&request, "If-None-Match"),
                );
                for header in &headers {
                    response.add_header(header.clone());
                }
                let bytes = response.data_length().unwrap_or(0) as u64;
                let served = Served {
                    path: request.url().to_string(),
                    status: response.status_code().0,
                    bytes,
                };
                let _ = match link {
                    None => {
                        counted.fetch_add(bytes, Ordering::Relaxed);
                        request.respond(response)
                    }
                    Some(link) => {
                        std::thread::sleep(link.latency);
                        let status = response.status_code();
                        let headers = response.headers().to_vec();
                        let paced = Paced {
                            inner: response.into_reader(),
                            bytes_per_second: link.bytes_per_second,
                            started: std::time::Instant::now(),
                            sent: 0,
                            total: Arc::clone(&counted),
                        };
                        request.respond(tiny_http::Response::new(
                            status,
                            headers,
                            paced,
                            Some(bytes as usize),
                            None,
                        ))
                    }
                };
                if let Ok(mut log) = logged.lock() {
                    log.push(served);
                }
            }
        });
        Ok(Self {
            server,
            thread: Some(thread),
            sent,
            log,
            addr,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The bytes of the response bodies sent so far (as they went on the wire: compressed when they were;
    /// over a [`Link`], counted as they go).
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The requests answered completely so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.log.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn modified(path: &Path) -> Option<std::time::SystemTime> {
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    fn body(response: tiny_http::Response<std::io::Cursor<Vec<u8>>>) -> (Vec<u8>, Vec<String>) {
        let headers = response
            .headers()
            .iter()
            .map(|h| format!("{}: {}", h.field, h.value))
            .collect();
        let mut bytes = Vec::new();
        response.into_reader().read_to_end(&mut bytes).expect("body");
        (bytes, headers)
    }

    #[test]
    fn files_go_compressed_to_browsers_that_take_gzip_and_as_they_are_otherwise() {
        let dir = std::env::temp_dir().join(format!("graft-web-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("models")).expect("folders");
        let wasm: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 7) as u8).collect();
        std::fs::write(dir.join("worker_bg.wasm"), &wasm).expect("wasm");
        std::fs::write(dir.join("index.html"), "<!DOCTYPE html>".repeat(100)).expect("html");
        std::fs::write(dir.join("small.js"), "let a = 1;").expect("small");
        std::fs::write(dir.join("models/photo.png"), vec![1u8; 4096]).expect("png");

        let made = precompress(&dir).expect("precompress");
        assert_eq!((made.files, made.written), (2, 2), "{made:?}");
        assert!(made.gzip_bytes * 10 < made.bytes, "{made:?}");
        assert!(!dir.join("small.js.gz").exists() && !dir.join("models/photo.png.gz").exists());
        assert_eq!(
            precompress(&dir).expect("again").written,
            0,
            "up-to-date copies are kept"
        );

        let (sent, headers) = body(respond(&dir, "/worker_bg.wasm?v=1", true, None));
        assert!(headers.contains(&"Content-Encoding: gzip".to_string()), "{headers:?}");
        assert!(
            headers.contains(&"Content-Type: application/wasm".to_string()),
            "{headers:?}"
        );
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&sent[..])
            .read_to_end(&mut unzipped)
            .expect("gzip");
        assert_eq!(unzipped, wasm);
        let (sent, headers) = body(respond(&dir, "/worker_bg.wasm", false, None));
        assert_eq!(sent, wasm);
        assert!(
            !headers.iter().any(|h| h.starts_with("Content-Encoding")),
            "{headers:?}"
        );
        // A browser that has these bytes gets a 304 without them; the gzip copy has its own tag.
        let etag = |headers: &[String]| {
            headers
                .iter()
                .find_map(|h| h.strip_prefix("ETag: "))
                .map(str::to_string)
        };
        let plain = etag(&headers).expect("an ETag");
        let again = respond(&dir, "/worker_bg.wasm", false, Some(&plain));
        assert_eq!(again.status_code().0, 304);
        assert!(body(again).0.is_empty());
        let gzip_tag = etag(&body(respond(&dir, "/worker_bg.wasm", true, None)).1).expect("an ETag");
        assert_ne!(gzip_tag, plain);
        assert_eq!(
            respond(&dir, "/worker_bg.wasm", true, Some(&plain)).status_code().0,
            200
        );
        let (sent, _) = body(respond(&dir, "/", true, None));
        assert!(sent.len() < 1500, "index.html compressed: {} bytes", sent.len());

        // A file rebuilt after its copy goes as it is until the copy is made again; a copy whose file is
        // gone is removed.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let rebuilt: Vec<u8> = wasm.iter().rev().copied().collect();
        std::fs::write(dir.join("worker_bg.wasm"), &rebuilt).expect("rebuilt");
        assert!(modified(&dir.join("worker_bg.wasm")) > modified(&dir.join("worker_bg.wasm.gz")));
        assert_eq!(body(respond(&dir, "/worker_bg.wasm", true, None)).0, rebuilt);
        std::fs::remove_file(dir.join("index.html")).expect("remove");
        let made = precompress(&dir).expect("after the rebuild");
        assert_eq!((made.files, made.written), (1, 1), "{made:?}");
        assert!(!dir.join("index.html.gz").exists());

        assert_eq!(body(respond(&dir, "/../secret", true, None)).0, b"bad path");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
