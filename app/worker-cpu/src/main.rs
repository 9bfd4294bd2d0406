//! The training worker's CPU build (a wasm binary of its own, loaded with `new Worker(...)` where
//! WebGPU cannot be used): `graft-worker` without Burn's WebGPU backend.

fn main() {
    console_error_panic_hook::set_once();
    graft_worker::start();
}
