//! Any bytes a person opens as a model file go through this first: the `.graft` header read and
//! checked (or a typed refusal). Nothing may panic, and what is accepted must be safe to act on: a
//! known model, an input size and resize side a view can be cut with, a normalisation that cannot
//! make NaN, distinct named classes the weights can hold, weights that start inside the file.
#![no_main]

use graft_ingest::model_file::{
    MAX_INPUT_SIZE, MIN_INPUT_SIZE, MIN_STD, known_model, read_graft_header, resize_side_for,
};
use graft_ingest::{evaluation_view_at, stored_short_side};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok((header, weights_start)) = read_graft_header(bytes) else {
        return;
    };
    assert!(weights_start <= bytes.len());
    let model = known_model(&header.model).expect("a known model");
    let size = header.input_size as u64;
    assert!((MIN_INPUT_SIZE..=MAX_INPUT_SIZE).contains(&size));
    let size = size as u32;
    assert!(header.resize_short_side == resize_side_for(size) || header.resize_short_side == stored_short_side(size));
    for channel in 0..3 {
        let (mean, std) = (header.normalisation.mean[channel], header.normalisation.std[channel]);
        assert!((0.0..=1.0).contains(&mean) && (MIN_STD..=1.0).contains(&std));
        // Every normalised pixel is a number of modest size.
        for pixel in [0.0f32, 1.0] {
            assert!(((pixel - mean) / std).abs() <= 1.0 / MIN_STD);
        }
    }
    assert!(!header.classes.is_empty());
    let mut names: Vec<&String> = header.classes.iter().collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), header.classes.len());
    assert!(header.classes.iter().all(|c| !c.trim().is_empty()));
    let head_bytes = (model.embedding_width as u64 + 1) * 2 * header.classes.len() as u64;
    assert!(head_bytes <= header.weights_bytes);
    // The view the header asks for can be cut from any picture.
    let picture = image::RgbImage::new(7, 5);
    let view = evaluation_view_at(&picture, header.resize_short_side, size);
    assert_eq!(view.dimensions(), (size, size));
});
