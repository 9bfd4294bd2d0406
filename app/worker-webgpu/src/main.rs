//! The training worker's WebGPU build (a wasm binary of its own, loaded with `new Worker(...)` where
//! WebGPU may be used): `graft-worker` with Burn's WebGPU backend.

fn main() {
    console_error_panic_hook::set_once();
    graft_worker::start();
}
