//! Any bytes a person drops into the app go through this: decode (or a typed refusal), the downscale
//! for storage and the evaluation view. Nothing may panic, and what comes out must be usable: upright
//! RGB within the size limits, a stored picture within the aspect cap, a view of exactly the input
//! size.
#![no_main]

use graft_ingest::{MAX_ASPECT, MAX_DIMENSION, decode, evaluation_view, prepare};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(image) = decode(bytes) else {
        return;
    };
    let (width, height) = image.dimensions();
    assert!(width >= 1 && height >= 1 && width <= MAX_DIMENSION && height <= MAX_DIMENSION);
    let stored = prepare(&image, 224);
    let (w, h) = stored.dimensions();
    assert!(w.min(h) <= 256 && f64::from(w.max(h)) <= f64::from(w.min(h)) * MAX_ASPECT);
    assert_eq!(evaluation_view(&stored, 224).dimensions(), (224, 224));
});
