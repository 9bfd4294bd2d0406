//! The tests' build of the app (`dist-test/`, made by `cargo xtask test`), as files: the page's wasm
//! links no Burn and no WebGPU compiler — it only draws and talks to the worker, and with them it
//! weighed 9.9 MB instead of 2.1 — and every file worth compressing has its gzip copy, which the server
//! sends. Prints the sizes a first visit downloads.

#![cfg(not(target_arch = "wasm32"))]

use std::io::Read;
use std::path::{Path, PathBuf};

use graft_tests::e2e;

/// Reads an unsigned LEB128 number at `*at`.
fn leb(bytes: &[u8], at: &mut usize) -> usize {
    let (mut value, mut shift) = (0usize, 0);
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte < 0x80 {
            return value;
        }
    }
}

/// The function names in a wasm module's `name` section.
fn function_names(wasm: &[u8]) -> Vec<String> {
    assert_eq!(&wasm[..4], b"\0asm", "not a wasm module");
    let mut names = Vec::new();
    let mut at = 8;
    while at < wasm.len() {
        let id = wasm[at];
        at += 1;
        let size = leb(wasm, &mut at);
        let end = at + size;
        if id == 0 {
            let mut p = at;
            let len = leb(wasm, &mut p);
            let section = &wasm[p..p + len];
            p += len;
            if section == b"name" {
                while p < end {
                    let kind = wasm[p];
                    p += 1;
                    let size = leb(wasm, &mut p);
                    let next = p + size;
                    if kind == 1 {
                        let count = leb(wasm, &mut p);
                        for _ in 0..count {
                            let _index = leb(wasm, &mut p);
                            let len = leb(wasm, &mut p);
                            names.push(String::from_utf8_lossy(&wasm[p..p + len]).into_owned());
                            p += len;
                        }
                    }
                    p = next;
                }
            }
        }
        at = end;
    }
    names
}

fn the_one(dist: &Path, matches: impl Fn(&str) -> bool) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dist)
        .unwrap_or_else(|e| panic!("{}: {e} (cargo xtask test builds it)", dist.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(&matches))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().expect("one")
}

fn gzip_copy(path: &Path) -> Vec<u8> {
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap_or_else(|e| panic!("{}: {e}", gz.display())))
        .read_to_end(&mut unzipped)
        .expect("a gzip file");
    unzipped
}

#[test]
fn the_page_links_no_burn_and_every_big_file_has_its_gzip_copy() {
    let dist = e2e::dist_dir();
    let page = the_one(&dist, |n| n.starts_with("graft-app-") && n.ends_with("_bg.wasm"));
    let worker = dist.join("worker_bg.wasm");
    for (what, path) in [("page", &page), ("worker", &worker)] {
        let bytes = std::fs::read(path).expect("the wasm");
        let gz = std::fs::metadata(format!("{}.gz", path.display()))
            .expect("its gzip copy")
            .len();
        println!("{what}: {} bytes, {gz} as gzip", bytes.len());
        assert!(gzip_copy(path) == bytes, "the gzip copy of {} is stale", path.display());
    }

    let page_names = function_names(&std::fs::read(&page).expect("page wasm"));
    let worker_names = function_names(&std::fs::read(&worker).expect("worker wasm"));
    // The tests' build keeps the names; without them this test could not tell.
    assert!(page_names.len() > 1000, "{} names", page_names.len());
    let heavy = |name: &&String| {
        ["cubecl", "burn_", "wgpu"]
            .iter()
            .any(|crate_name| name.contains(crate_name))
    };
    let in_page: Vec<&String> = page_names.iter().filter(heavy).take(5).collect();
    assert!(
        in_page.is_empty(),
        "the page links Burn or its WebGPU backend: {in_page:?}…"
    );
    // And the check sees them where they are.
    assert!(worker_names.iter().filter(heavy).count() > 1000);

    for name in ["index.html", "worker.js", "models/mobilenet-v2.bpk"] {
        let path = dist.join(name);
        assert!(
            gzip_copy(&path) == std::fs::read(&path).expect(name),
            "the gzip copy of {name} is stale"
        );
    }
}

/// The worker's CPU build, which a browser without a usable GPU downloads instead of the WebGPU one,
/// links Burn (it trains) but none of its WebGPU backend — no wgpu, no cubecl compiler, runtime or
/// kernels (Burn's shapes and settings come from small cubecl crates every backend uses) — which the
/// WebGPU build is full of.
#[test]
fn the_cpu_worker_links_no_webgpu_backend() {
    let dist = e2e::dist_dir();
    let names = |file: &str| {
        let path = dist.join(file);
        let bytes = std::fs::read(&path).expect("the worker's wasm");
        assert!(gzip_copy(&path) == bytes, "the gzip copy of {file} is stale");
        let gz = std::fs::metadata(format!("{}.gz", path.display()))
            .expect("gzip copy")
            .len();
        println!("{file}: {} bytes, {gz} as gzip", bytes.len());
        function_names(&bytes)
    };
    let cpu = names("worker-cpu_bg.wasm");
    let webgpu = names("worker_bg.wasm");
    let webgpu_backend = |name: &&String| {
        [
            "wgpu",
            "cubecl_core",
            "cubecl_runtime",
            "cubecl_ir",
            "cubecl_opt",
            "cubek",
        ]
        .iter()
        .any(|c| name.contains(c))
    };
    let linked: Vec<&String> = cpu.iter().filter(webgpu_backend).take(5).collect();
    assert!(linked.is_empty(), "the CPU build links the WebGPU backend: {linked:?}…");
    assert!(
        cpu.iter().filter(|n| n.contains("burn_")).count() > 1000,
        "the CPU build trains with Burn"
    );
    assert!(webgpu.iter().filter(webgpu_backend).count() > 1000);
}
