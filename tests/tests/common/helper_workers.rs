//! Helper workers in the browser tests: the app's `graft-helper`, and the training worker's replica
//! (`graft_worker::replica`), served from the test runner's own wasm (the runner cannot serve the
//! app's loaders), started as the app starts them (`graft_worker::helpers::Pool`,
//! `graft_worker::replica::ReplicaPeer`). Included by the browser test binaries that need them.

use std::rc::Rc;

use graft_engine::helpers::Helpers;
use graft_worker::helpers::Pool;

/// A helper worker's side (`graft_helper::serve`), exported from the test binary's wasm for the
/// module workers [`loader_url`] starts.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn graft_test_helper() {
    graft_helper::serve();
}

/// A replica's side (`graft_worker::replica::serve`), exported as [`graft_test_helper`] is.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn graft_test_replica() {
    graft_worker::replica::serve();
}

/// A module worker script, as a blob URL, that loads the test runner's wasm from this worker's
/// origin and calls its export `entry`.
fn loader_url(entry: &str) -> String {
    // `self.location.href` (read by name: web-sys's `WorkerLocation` is not among the features built).
    let location = js_sys::Reflect::get(&js_sys::global(), &"location".into()).expect("a worker's location");
    let base = js_sys::Reflect::get(&location, &"href".into())
        .ok()
        .and_then(|href| href.as_string())
        .expect("a worker's URL");
    // The runner serves its wasm-bindgen glue as `wasm-bindgen-test` beside this worker's script.
    let script = format!(
        "const base = {base:?};\n\
         const glue = await import(new URL('wasm-bindgen-test', base).href);\n\
         await glue.default({{ module_or_path: new URL('wasm-bindgen-test_bg.wasm', base).href }});\n\
         glue.{entry}();\n"
    );
    let parts = js_sys::Array::of1(&script.into());
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("text/javascript");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options).expect("a blob");
    web_sys::Url::create_object_url_with_blob(&blob).expect("a blob URL")
}

/// The browser's cores (`navigator.hardwareConcurrency`, at least 1).
#[allow(dead_code)] // not every test binary asks
pub fn cores() -> usize {
    use wasm_bindgen::JsCast;
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    (scope.navigator().hardware_concurrency() as usize).max(1)
}

/// `count` helper workers, once every one is ready (not installed as the engine's).
pub async fn start(count: usize) -> Rc<Pool> {
    let pool = Rc::new(Pool::start_at(
        &loader_url("graft_test_helper"),
        Some(web_sys::WorkerType::Module),
        count,
        |_| {},
    ));
    let start = js_sys::Date::now();
    while pool.ready() < count {
        assert!(
            js_sys::Date::now() - start < 60_000.0,
            "{} of {count} helpers ready after a minute",
            pool.ready()
        );
        gloo_timers::future::TimeoutFuture::new(50).await;
    }
    pool
}

/// A replica of the training worker, once it is ready (not installed as the engine's peer).
#[allow(dead_code)] // not every test binary asks
pub async fn start_replica() -> Rc<graft_worker::replica::ReplicaPeer> {
    use graft_engine::peer::Peer;
    let replica = Rc::new(
        graft_worker::replica::ReplicaPeer::start_at(
            &loader_url("graft_test_replica"),
            Some(web_sys::WorkerType::Module),
        )
        .expect("a replica worker"),
    );
    let start = js_sys::Date::now();
    while !replica.ready() {
        assert!(
            js_sys::Date::now() - start < 60_000.0,
            "the replica is not ready after a minute"
        );
        gloo_timers::future::TimeoutFuture::new(50).await;
    }
    replica
}
