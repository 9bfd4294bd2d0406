//! The helper worker's entry point (a third wasm binary, started by the training worker).

fn main() {
    console_error_panic_hook::set_once();
    graft_helper::serve();
}
