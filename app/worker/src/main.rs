//! The training worker's entry point (a second wasm binary, loaded with `new Worker(...)`).

fn main() {
    console_error_panic_hook::set_once();
    graft_worker::start();
}
