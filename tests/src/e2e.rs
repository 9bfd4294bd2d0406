//! End-to-end harness: serve the trunk-built app (`dist/`) on loopback and drive it in headless
//! Chromium through chromedriver (WebDriver, via `fantoccini`).
//!
//! Native only. `cargo xtask test` builds `dist/` before running the tests that use this.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// The app's path with WebGPU chosen ("Compute on: WebGPU"): the only adapter of this headless
/// Chromium is SwiftShader, a software one, which the app otherwise passes over for the CPU.
pub const WEBGPU: &str = "/?compute=webgpu";

/// Chromium's flags: WebGPU on (SwiftShader when there is no GPU), and nothing that reaches the network.
pub const CHROME_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
    // A synthetic camera (a moving test pattern) and no permission prompt, for the webcam features.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
];

/// [`CHROME_ARGS`] with WebGPU switched off.
fn args_without_webgpu() -> Vec<String> {
    let mut args: Vec<String> = CHROME_ARGS
        .iter()
        .filter(|arg| **arg != "--enable-unsafe-webgpu")
        .map(|s| s.to_string())
        .collect();
    args.push("--disable-features=WebGPU".into());
    args
}

/// The workspace root.
/// The workspace root: from `CARGO_MANIFEST_DIR` as cargo sets it when it runs the tests (a build
/// reused from a clone elsewhere must still find this clone's files), else as it was at build time.
pub fn workspace_root() -> PathBuf {
    let tests =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    tests.parent().expect("tests/ has a parent").to_path_buf()
}

/// The app as the tests build it (with the `test-hooks` feature: `?fault=...`), or a panic saying how
/// to build it: `$GRAFT_DIST`, else `dist-test/` in the target directory (`$CARGO_TARGET_DIR`, else
/// `~/.cache/graft-target`, as `cargo xtask` has it).
pub fn dist_dir() -> PathBuf {
    let dist = std::env::var_os("GRAFT_DIST").map_or_else(
        || {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || {
                    let home = std::env::var_os("HOME").expect("HOME is set");
                    PathBuf::from(home).join(".cache/graft-target")
                },
                PathBuf::from,
            );
            target.join("dist-test")
        },
        PathBuf::from,
    );
    assert!(
        dist.join("index.html").is_file(),
        "no built app at {}: run `cargo xtask test` (it builds the app with its test hooks there first)",
        dist.display()
    );
    dist
}

/// Where the end-to-end tests write their screenshots (git-ignored).
pub fn screenshot_dir() -> PathBuf {
    let dir = workspace_root().join("screenshots");
    std::fs::create_dir_all(&dir).expect("cannot create screenshots/");
    dir
}

/// A static file server for `dist/` on 127.0.0.1, on a free port, until dropped: what `cargo xtask
/// serve` runs (gzip copies to a browser that takes them, as a static host should).
pub use xtask::web::StaticServer;

/// A chromedriver process on a free loopback port, killed when dropped.
pub struct ChromeDriver {
    child: Child,
    pub port: u16,
    /// The sessions' profile folders, removed with the driver.
    profiles: std::sync::Mutex<Vec<PathBuf>>,
}

impl ChromeDriver {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e} (cargo xtask setup installs it)"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            port,
            profiles: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A new headless Chromium session with a fresh profile and WebGPU on.
    pub async fn session(&self) -> Client {
        self.session_with_args(CHROME_ARGS.iter().map(|s| s.to_string()).collect())
            .await
    }

    /// A session without WebGPU whose every request off the loopback interface goes to `watch`, a
    /// proxy that answers nothing and records what was asked: a test can then assert that nothing left
    /// the machine (page, worker, service worker, the browser itself).
    pub async fn session_watched(&self, watch: &OutboundWatch) -> Client {
        let mut args = args_without_webgpu();
        args.push(format!("--proxy-server=http://127.0.0.1:{}", watch.port));
        self.session_with_args(args).await
    }

    /// [`session_watched`](Self::session_watched) with WebGPU on.
    pub async fn session_watched_with_webgpu(&self, watch: &OutboundWatch) -> Client {
        let mut args: Vec<String> = CHROME_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--proxy-server=http://127.0.0.1:{}", watch.port));
        self.session_with_args(args).await
    }

    /// A session with WebGPU switched off, as in a browser that lacks it.
    pub async fn session_without_webgpu(&self) -> Client {
        self.session_with_args(args_without_webgpu()).await
    }

    async fn session_with_args(&self, args: Vec<String>) -> Client {
        static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut attempt = 0;
        loop {
            // A fresh profile for each attempt: a browser left from a failed one may still hold its own.
            let session = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let profile =
                std::env::temp_dir().join(format!("graft-chrome-{}-{}-{session}", std::process::id(), self.port));
            let _ = std::fs::remove_dir_all(&profile);
            let mut args = args.clone();
            args.push(format!("--user-data-dir={}", profile.display()));
            self.profiles.lock().unwrap_or_else(|p| p.into_inner()).push(profile);
            let mut capabilities = serde_json::Map::new();
            capabilities.insert(
                "goog:chromeOptions".into(),
                serde_json::json!({ "args": args, "binary": "/usr/bin/chromium" }),
            );
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await
            {
                Ok(client) => return client,
                // On a loaded machine chromedriver now and then drops the connection that asks for a
                // session (seen once in a full run: "connection reset by peer"); asked again, it opens one.
                Err(error) if attempt < 2 => {
                    attempt += 1;
                    eprintln!("chromedriver did not open a session ({error}); asking again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(error) => panic!("cannot open a Chromium session through chromedriver: {error}"),
            }
        }
    }
}

impl ChromeDriver {
    /// The chromedriver process id: the browsers of its sessions are its descendants.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A proxy that refuses every request and remembers its first line (`CONNECT host:443 HTTP/1.1`,
/// `GET http://host/path HTTP/1.1`): Chromium sends through it whatever is not for the loopback
/// interface, which it never proxies.
pub struct OutboundWatch {
    pub port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl OutboundWatch {
    pub fn start() -> Self {
        use std::io::{BufRead, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("address").port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // One thread per connection: Chromium opens idle connections to its proxy ahead of
                // need (preconnect) and may close them unused; one of those must not hold up the
                // requests behind it. A connection closed before it sent a byte carried nothing off
                // the machine, so it is not a request.
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = std::io::BufReader::new(&stream).read_line(&mut line);
                    let line = line.trim();
                    if line.is_empty() {
                        return;
                    }
                    record.lock().unwrap_or_else(|p| p.into_inner()).push(line.to_string());
                    let _ = (&stream).write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
                });
            }
        });
        Self { port, seen }
    }

    /// The requests that tried to leave, so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asserts that nothing but Chromium's own services tried to leave the machine, then that the
    /// watch does see a request that leaves: a page elsewhere, opened in another tab of `client`.
    pub async fn assert_nothing_left(&self, client: &Client) {
        let left = self.requests_not_from_the_browser();
        assert!(left.is_empty(), "the app's requests left the origin: {left:?}");
        let app = client.window().await.expect("window");
        let other = client.new_window(true).await.expect("a tab").handle;
        client.switch_to_window(other).await.expect("switch");
        let _ = client.goto("http://graft-privacy-check.example/").await;
        client.close_window().await.expect("close the tab");
        client.switch_to_window(app).await.expect("back");
        let caught = self.requests_not_from_the_browser();
        assert!(
            caught.iter().any(|r| r.contains("graft-privacy-check.example")),
            "the watch missed a request that left: {caught:?}"
        );
    }

    /// The requests that tried to leave, but for Chromium's own background services (time, updates,
    /// accounts, autofill, optimisation hints, the default search engine's preconnect), which no page
    /// can cause or stop: what is left came from a page, a worker or a service worker.
    pub fn requests_not_from_the_browser(&self) -> Vec<String> {
        const BROWSER_SERVICES: &[&str] = &[
            "clients2.google.com",
            "accounts.google.com",
            "update.googleapis.com",
            "content-autofill.googleapis.com",
            "optimizationguide-pa.googleapis.com",
            "safebrowsingohttpgateway.googleapis.com",
            "start.duckduckgo.com",
        ];
        self.requests()
            .into_iter()
            .filter(|request| {
                let target = request.split_whitespace().nth(1).unwrap_or_default();
                let host = target
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .split(['/', ':'])
                    .next()
                    .unwrap_or_default();
                !BROWSER_SERVICES.contains(&host)
            })
            .collect()
    }
}

/// Peak resident memory of a browser's processes, sampled from `/proc` twice a second while it lives,
/// and the kernel's own high-water marks (`VmHWM`) at the end.
pub struct MemoryWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<MemoryPeaks>>,
}

/// Peak resident bytes, by kind of browser process.
#[derive(Debug, Clone, Default)]
pub struct MemoryPeaks {
    /// The largest renderer (a tab: its page and its workers).
    pub renderer: u64,
    pub gpu_process: u64,
    /// The largest sum over all the browser's processes at one sample.
    pub all_processes: u64,
}

impl MemoryWatch {
    /// Watches every process descended from `root`.
    pub fn start(root: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = MemoryPeaks::default();
            let mut seen = std::collections::BTreeSet::new();
            loop {
                let done = stopping.load(std::sync::atomic::Ordering::Relaxed);
                let mut total = 0;
                for pid in descendants(root) {
                    seen.insert(pid);
                    let (rss, hwm) = (status_kib(pid, "VmRSS:") * 1024, status_kib(pid, "VmHWM:") * 1024);
                    total += rss;
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let cmdline = String::from_utf8_lossy(&cmdline);
                    let peak = rss.max(hwm);
                    if cmdline.contains("--type=renderer") {
                        peaks.renderer = peaks.renderer.max(peak);
                    } else if cmdline.contains("--type=gpu-process") {
                        peaks.gpu_process = peaks.gpu_process.max(peak);
                    }
                }
                peaks.all_processes = peaks.all_processes.max(total);
                if done {
                    return peaks;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching (while the browser still runs) and returns the peaks.
    pub fn finish(mut self) -> MemoryPeaks {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().expect("once").join().expect("the watcher")
    }
}

/// `key` of `/proc/<pid>/status` in KiB (0 when gone).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Every live process whose parent chain reaches `root`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    // `pid (name) state ppid ...`: the name may hold spaces, so split after ')'.
                    let ppid = stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()?;
                    Some((pid, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    found.remove(0);
    found
}

impl Drop for ChromeDriver {
    /// Kills the browsers chromedriver started too: a test that fails before closing its session
    /// would otherwise leave a headless Chromium running (and its GPU process holding a gigabyte).
    fn drop(&mut self) {
        for pid in descendants(self.child.id()) {
            // SIGKILL through kill(1): std has no portable way to signal another process.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The profiles hold the app's offline cache and IndexedDB: hundreds of MB each.
        for profile in self.profiles.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// Waits until the element's text satisfies `done`, returning the last text seen.
pub async fn wait_for_text(
    client: &Client,
    css: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if done(&text) {
                return Ok(text);
            }
            last = text;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting on {css}; last text: {last:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the text of the element `data-testid=id` satisfies `done` and returns it; on a timeout,
/// panics with the last text, the page's messages and a screenshot.
pub async fn text_of(client: &Client, id: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    match wait_for_text(client, &format!("[data-testid='{id}']"), timeout, done).await {
        Ok(text) => text,
        Err(error) => {
            let shot = screenshot(client, &format!("failed-{id}")).await;
            let messages = messages(client).await;
            panic!("{error}; messages: {messages:?}; screenshot {}", shot.display());
        }
    }
}

/// Waits (up to two minutes) until the worker has handled, storage included, every edit the page sent
/// (`data-edits-pending` on the page's `<main>` is 0): what a reload now brings back is all of it.
pub async fn stored(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = client
            .execute(
                "const main = document.querySelector('main.graft'); return main ? main.dataset.editsPending : null;",
                Vec::new(),
            )
            .await
            .expect("edits pending");
        if pending.as_str() == Some("0") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "edits still pending after two minutes: {pending}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reloads the page once everything the person did is stored (see [`stored`]), as a person who sees
/// no "Saving your changes…" would.
pub async fn reload(client: &Client) {
    stored(client).await;
    client.refresh().await.expect("reload");
}

/// The page's messages as they are now (empty when there are none).
pub async fn messages(client: &Client) -> String {
    match client.find(Locator::Css("[data-testid=messages]")).await {
        Ok(messages) => messages.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The class cards as the page shows them now: each name with its picture count, in order.
pub async fn classes_shown(client: &Client) -> Vec<(String, usize)> {
    let script = "return [...document.querySelectorAll('.class-card')].map(card => [
        card.querySelector('[data-testid^=class-name-]').value,
        Number(card.querySelector('[data-testid^=class-count-]').textContent)]);";
    let shown = client.execute(script, Vec::new()).await.expect("class cards");
    serde_json::from_value(shown).expect("names and counts")
}

/// Waits (up to `timeout`) until the class cards show exactly `expected` (names and counts, in order)
/// and stay so for a second; panics with what they show otherwise.
pub async fn wait_for_classes(client: &Client, expected: &[(String, usize)], timeout: Duration) {
    wait_for_steady_classes(client, expected, timeout, |shown| shown).await;
}

/// [`wait_for_classes`] for classes whose order does not matter (`expected` sorted by name).
pub async fn wait_for_classes_in_any_order(client: &Client, expected: &[(String, usize)], timeout: Duration) {
    wait_for_steady_classes(client, expected, timeout, |mut shown| {
        shown.sort();
        shown
    })
    .await;
}

async fn wait_for_steady_classes(
    client: &Client,
    expected: &[(String, usize)],
    timeout: Duration,
    arrange: impl Fn(Vec<(String, usize)>) -> Vec<(String, usize)>,
) {
    let deadline = Instant::now() + timeout;
    let mut steady_since: Option<Instant> = None;
    loop {
        let shown = arrange(classes_shown(client).await);
        if shown == expected {
            let since = *steady_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                return;
            }
        } else {
            steady_since = None;
            if Instant::now() > deadline {
                let shot = screenshot(client, "failed-classes").await;
                panic!(
                    "the classes shown are {shown:?}, not {expected:?}; messages: {:?}; screenshot {}",
                    messages(client).await,
                    shot.display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Renames a class by typing into its name field (`data-testid=id`); Enter commits the change.
pub async fn rename(client: &Client, id: &str, name: &str) {
    let input = by_id(client, id).await;
    input.clear().await.expect("clear");
    input.send_keys(&format!("{name}\u{E007}")).await.expect("type");
}

/// The builds of the training worker (`worker_bg.wasm`: WebGPU, `worker-cpu_bg.wasm`: CPU) whose
/// bytes the browser downloaded so far: each file `server` sent in full (`200`), in order. A file the
/// browser already has is revalidated (`304`, no body), and not counted: the CPU worker's replica (a
/// second copy of the CPU build, `graft_worker::replica`) and the service worker's precache (of the
/// build the page started, `sw.js?worker=…`) ask for it again that way.
pub fn worker_builds_downloaded(server: &xtask::web::StaticServer) -> Vec<String> {
    server
        .served()
        .iter()
        .filter(|served| served.status == 200)
        .map(|served| {
            served
                .path
                .trim_start_matches('/')
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|path| path == "worker_bg.wasm" || path == "worker-cpu_bg.wasm")
        .collect()
}

/// Every request for a worker build `server` answered, with its status (`worker-cpu_bg.wasm 304`),
/// to say what was loaded when a check of [`worker_builds_downloaded`] fails.
pub fn worker_build_requests(server: &xtask::web::StaticServer) -> Vec<String> {
    server
        .served()
        .iter()
        .filter(|served| served.path.contains("worker_bg.wasm") || served.path.contains("worker-cpu_bg.wasm"))
        .map(|served| format!("{} {}", served.path, served.status))
        .collect()
}

/// Waits until the CPU worker's replica is ready (the page shows training over two cores), when the
/// browser has a core beyond the worker's (else there is no replica); panics after `timeout`.
pub async fn wait_for_the_replica(client: &Client, timeout: Duration) {
    let cores = client
        .execute("return navigator.hardwareConcurrency;", Vec::new())
        .await
        .expect("cores")
        .as_u64()
        .unwrap_or(1);
    if cores < 2 {
        return;
    }
    let script = "const badge = document.querySelector('[data-testid=cores]');
        return badge ? Number(badge.dataset.trainingCores) : 0;";
    let deadline = Instant::now() + timeout;
    loop {
        let training = client
            .execute(script, Vec::new())
            .await
            .expect("cores")
            .as_u64()
            .unwrap_or(0);
        if training == 2 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica was not ready after {timeout:?} ({cores} cores; the page shows training on {training})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Saves a PNG screenshot of the page as `screenshots/<name>.png` and returns its path.
pub async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("screenshot failed");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("cannot write the screenshot");
    path
}

/// The element with `data-testid` = `id`, once it exists (within 2 minutes).
pub async fn by_id(client: &Client, id: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(Duration::from_secs(120))
        .for_element(Locator::Css(&format!("[data-testid='{id}']")))
        .await
        .unwrap_or_else(|e| panic!("no element {id}: {e}"))
}

/// Clicks the element with `data-testid` = `id`.
/// Opens the app's start page in `client` (a session without WebGPU) and waits until its worker is
/// ready on the CPU backend.
pub async fn open_on_cpu(client: &Client, server: &StaticServer) {
    open_on_cpu_with(client, server, "").await;
}

/// [`open_on_cpu`] with `query` in the address (`?helpers=0`, a test fault, ...; empty for none).
pub async fn open_on_cpu_with(client: &Client, server: &StaticServer, query: &str) {
    client
        .goto(&server.url(&format!("/{query}")))
        .await
        .expect("cannot open the app");
    text_of(client, "device", Duration::from_secs(120), |t| {
        t.starts_with("CPU fallback")
    })
    .await;
}

/// Chooses `value` in the `<select>` with the test id `id`.
pub async fn select(client: &Client, id: &str, value: &str) {
    by_id(client, id)
        .await
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("choose {value} in {id}: {e}"));
}

pub async fn click(client: &Client, id: &str) {
    by_id(client, id)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {id}: {e}"));
}

/// Sets the training's epochs in the advanced settings (opened) to `epochs`, as a person types it.
pub async fn set_epochs(client: &Client, epochs: &str) {
    client
        .execute("document.querySelector('details.advanced').open = true;", Vec::new())
        .await
        .expect("open the settings");
    let input = by_id(client, "epochs-input").await;
    input.clear().await.expect("clear the epochs");
    input.send_keys(epochs).await.expect("type the epochs");
    client
        .execute(
            "document.querySelector('[data-testid=epochs-input]').dispatchEvent(new Event('change', {bubbles: true}));",
            Vec::new(),
        )
        .await
        .expect("commit the epochs");
}

/// A photo of the golden fixture (`tests/fixtures/imagenet/`).
pub fn fixture_photo(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/imagenet").join(name)
}

/// Two predictions agree: the same classes in the same order, each probability within 0.1 points
/// (the page shows one decimal).
pub fn assert_same_prediction(shown: &[(String, f64)], expected: &[(String, f64)]) {
    let shown_classes: Vec<&String> = shown.iter().map(|p| &p.0).collect();
    let expected_classes: Vec<&String> = expected.iter().take(shown.len()).map(|p| &p.0).collect();
    assert_eq!(shown_classes, expected_classes, "{shown:?} vs {expected:?}");
    for ((class, a), (_, b)) in shown.iter().zip(expected) {
        assert!((a - b).abs() <= 0.1, "{class}: {a}% vs {b:.2}%");
    }
}

/// In the app: two classes from the fixture photos — the cat and the astronaut, the espresso and the
/// rocket — waiting until both counts show 2.
pub async fn add_two_fixture_classes(client: &Client) {
    let fixture = |name: &str| fixture_photo(name).display().to_string();
    click(client, "add-class").await;
    click(client, "add-class").await;
    for (index, files) in [
        (0, ["chelsea-224.png", "astronaut-224.png"]),
        (1, ["coffee-224.png", "rocket-224.png"]),
    ] {
        let paths: Vec<String> = files.iter().map(|f| fixture(f)).collect();
        client
            .wait()
            .for_element(Locator::Css(&format!("[data-testid=class-files-{index}]")))
            .await
            .expect("file input")
            .send_keys(&paths.join("\n"))
            .await
            .expect("choose files");
    }
    for index in 0..2 {
        wait_for_text(
            client,
            &format!("[data-testid=class-count-{index}]"),
            Duration::from_secs(60),
            |t| t == "2",
        )
        .await
        .expect("images added");
    }
}

/// Two classes, `birds` and `mammals`, with `birds` and `mammals` chosen in their file inputs as a
/// person picks them; returns once the page counts them all.
pub async fn add_birds_and_mammals(client: &Client, birds: &[PathBuf], mammals: &[PathBuf]) {
    click(client, "add-class").await;
    click(client, "add-class").await;
    rename(client, "class-name-0", "birds").await;
    rename(client, "class-name-1", "mammals").await;
    upload(client, "class-files-0", birds).await;
    upload(client, "class-files-1", mammals).await;
    for (index, count) in [(0, birds.len()), (1, mammals.len())] {
        let count = count.to_string();
        text_of(client, &format!("class-count-{index}"), Duration::from_secs(60), |t| {
            t == count
        })
        .await;
    }
}

/// A Chrome DevTools Protocol command sent through ChromeDriver (`goog/cdp/execute`).
#[derive(Debug)]
struct DevTools {
    method: &'static str,
    params: serde_json::Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for DevTools {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/goog/cdp/execute", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = serde_json::json!({ "cmd": self.method, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Sends a Chrome DevTools Protocol command to the current page's target and returns its result.
pub async fn devtools(client: &Client, method: &'static str, params: serde_json::Value) -> serde_json::Value {
    client
        .issue_cmd(DevTools { method, params })
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// Drags `paths` (files or folders, from this machine's disk) from outside the browser and drops them
/// on the middle of the element `data-testid=id`, as a person dragging them from a file manager would:
/// the page gets real File System entries, folders included (DevTools' `Input.dispatchDragEvent`).
pub async fn drop_paths(client: &Client, id: &str, paths: &[PathBuf]) {
    let script = format!(
        "const e = document.querySelector(\"[data-testid='{id}']\");
         const tall = e.getBoundingClientRect().height > window.innerHeight;
         e.scrollIntoView({{block: tall ? 'start' : 'center'}});
         const r = e.getBoundingClientRect();
         return [r.x + r.width / 2, r.y + Math.min(r.height / 2, 40)];"
    );
    let point = client
        .execute(&script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("find {id}: {e}"));
    let (x, y) = (point[0].as_f64().expect("x"), point[1].as_f64().expect("y"));
    let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let data = serde_json::json!({ "items": [], "files": files, "dragOperationsMask": 1 });
    for kind in ["dragEnter", "dragOver", "drop"] {
        devtools(
            client,
            "Input.dispatchDragEvent",
            serde_json::json!({ "type": kind, "x": x, "y": y, "data": data }),
        )
        .await;
    }
}

/// Crashes the browser's GPU process (`Browser.crashGpuProcess`), as a driver reset or a GPU that
/// went away would: every WebGPU device of every page is lost.
pub async fn crash_gpu_process(client: &Client) {
    client
        .issue_cmd(DevTools {
            method: "Browser.crashGpuProcess",
            params: serde_json::json!({}),
        })
        .await
        .expect("Browser.crashGpuProcess");
}

/// Classifies the fixture photo `name` (in `tests/fixtures/imagenet/`) through the try-it input and
/// returns the prediction's text once the page shows the answer for it.
pub async fn predict_fixture(client: &Client, name: &str) -> Result<String, String> {
    let before = answered_picture(client).await;
    by_id(client, "predict-input")
        .await
        .send_keys(&fixture_photo(name).display().to_string())
        .await
        .map_err(|e| format!("choose the picture: {e}"))?;
    next_answer(client, before, Duration::from_secs(120)).await?;
    wait_for_text(client, "[data-testid=prediction]", Duration::from_secs(5), |t| {
        t.contains('%')
    })
    .await
}

/// The prediction the page shows: each class with its probability in percent, most likely first.
pub async fn prediction_shown(client: &Client) -> Vec<(String, f64)> {
    let script = "return [...document.querySelectorAll('[data-testid=prediction] li')].map(li => [
        li.querySelector('.label').textContent,
        parseFloat(li.querySelector('span:last-child').textContent)]);";
    let shown = client.execute(script, Vec::new()).await.expect("prediction");
    serde_json::from_value(shown).expect("labels and percentages")
}

/// The number of the picture (file or webcam frame) whose answer the try-it panel shows: 0 before
/// any. The page counts the pictures it asks about, so an answer shown for a later number is the
/// answer for a later picture, never the previous one still on screen.
pub async fn answered_picture(client: &Client) -> u64 {
    let script = "const answer = document.querySelector('[data-testid=prediction]');
        return answer ? Number(answer.dataset.picture) : 0;";
    let shown = client.execute(script, Vec::new()).await.expect("the answer's picture");
    shown.as_u64().expect("a picture number")
}

/// Waits (up to `timeout`) until the try-it panel shows the answer for a picture asked about after the
/// one answered at `before` (see [`answered_picture`]), and returns it (see [`prediction_shown`]).
pub async fn next_answer(client: &Client, before: u64, timeout: Duration) -> Result<Vec<(String, f64)>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if answered_picture(client).await > before {
            let shown = prediction_shown(client).await;
            if !shown.is_empty() {
                return Ok(shown);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no answer after picture {before} within {timeout:?}; messages: {:?}",
                messages(client).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Classifies `picture` through the try-it input and returns what the page shows for it (see
/// [`prediction_shown`]), once it shows the answer for it.
pub async fn classify(client: &Client, picture: &Path) -> Vec<(String, f64)> {
    let before = answered_picture(client).await;
    upload(client, "predict-input", &[picture.to_path_buf()]).await;
    match next_answer(client, before, Duration::from_secs(120)).await {
        Ok(shown) => shown,
        Err(error) => {
            let shot = screenshot(client, "failed-classify").await;
            panic!("{error}; screenshot {}", shot.display());
        }
    }
}

/// Lets the page's downloads go to a fresh folder (DevTools `Browser.setDownloadBehavior`), returned.
pub async fn downloads_to_folder(client: &Client, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("graft-downloads-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("downloads folder");
    devtools(
        client,
        "Browser.setDownloadBehavior",
        serde_json::json!({ "behavior": "allow", "downloadPath": dir.display().to_string() }),
    )
    .await;
    dir
}

/// The bytes of the file `name` once the browser has finished downloading it into `dir` (within a
/// minute).
pub async fn downloaded(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let in_progress = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "crdownload"))
            })
            .unwrap_or(false);
        if path.is_file() && !in_progress {
            return std::fs::read(&path).expect("the downloaded file");
        }
        assert!(Instant::now() < deadline, "{} was not downloaded", path.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Chooses `files` in the file input `data-testid=id`, as a person picking them would.
pub async fn upload(client: &Client, id: &str, files: &[PathBuf]) {
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    by_id(client, id)
        .await
        .send_keys(&paths.join("\n"))
        .await
        .unwrap_or_else(|e| panic!("cannot choose files in {id}: {e}"));
}

/// What the engine, natively on the CPU, predicts for the picture at `path` with the model file
/// `bytes`: each class with its probability in percent, most likely first.
pub fn engine_predictions(bytes: &[u8], path: &Path) -> Vec<(String, f64)> {
    use burn::prelude::*;
    use graft_engine::{bundle, metrics, preprocess, readback};

    let device = Device::flex();
    let (header, model) = bundle::decode("the exported file", bytes, &device).expect("a Graft model file");
    let image = preprocess::decode(&std::fs::read(path).expect("picture")).expect("decodes");
    let logits =
        pollster::block_on(readback::to_f32_vec(model.forward(header.input(&image, &device)))).expect("read-back");
    metrics::top_k(&metrics::softmax(&logits), header.classes.len())
        .into_iter()
        .map(|(class, prob)| (header.classes[class].clone(), f64::from(prob) * 100.0))
        .collect()
}

/// What the ONNX file `onnx` (exported from the model file `graft`, whose preprocessing it records)
/// predicts in tract for the picture at `path`: as [`engine_predictions`].
pub fn onnx_predictions(onnx: &[u8], graft: &[u8], path: &Path) -> Vec<(String, f64)> {
    use burn::prelude::*;
    use graft_engine::{bundle, metrics, preprocess, readback};

    let device = Device::flex();
    let (header, _) = bundle::decode("the exported file", graft, &device).expect("a Graft model file");
    let labels: Vec<String> =
        serde_json::from_str(&crate::onnx::metadata(onnx, "labels").expect("labels in the ONNX file")).expect("labels");
    assert_eq!(labels, header.classes, "the ONNX file names the model file's classes");
    let image = preprocess::decode(&std::fs::read(path).expect("picture")).expect("decodes");
    let input = pollster::block_on(readback::to_f32_vec(header.input(&image, &device))).expect("read-back");
    let (_, probabilities) = crate::onnx::run(onnx, &input, 1, header.input_size);
    metrics::top_k(&probabilities[0], labels.len())
        .into_iter()
        .map(|(class, prob)| (labels[class].clone(), f64::from(prob) * 100.0))
        .collect()
}

/// A MobileNetV2 with a new head for `classes`, as a Graft model file (what `graft train --out` and
/// the app's export write).
pub fn engine_model_file(classes: &[&str]) -> Vec<u8> {
    use burn::prelude::*;
    use graft_engine::bundle::{self, BundleHeader};
    use graft_engine::model::ModelKind;

    let device = Device::flex();
    let model = crate::pretrained::load(ModelKind::MobileNetV2, &device)
        .expect("weights")
        .with_classes(classes.len());
    let header = BundleHeader::new(
        ModelKind::MobileNetV2,
        classes.iter().map(|c| c.to_string()).collect(),
        224,
    );
    bundle::encode(header, &model).expect("encode")
}
