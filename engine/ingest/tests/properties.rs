//! Properties of the image intake that must hold for every input, not just the fixtures: arbitrary or
//! damaged bytes never panic and are refused with a reason; lossless pictures come back pixel for
//! pixel; storage never upscales and keeps the aspect; every picture, whatever its shape, gives a view
//! of exactly the model's input size.

use graft_ingest::{ImageInputError, MAX_DIMENSION, decode, evaluation_view, prepare};
use image::{ImageFormat, RgbImage};
use proptest::prelude::*;

/// A `width` x `height` picture with pixels drawn from `seed`.
fn picture(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut state = seed | 1;
    RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    })
}

fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    match format {
        // The WebP encoder takes RGBA or RGB; GIF needs RGBA.
        ImageFormat::Gif => image::DynamicImage::ImageRgb8(image.clone())
            .to_rgba8()
            .write_to(&mut bytes, format)
            .expect("encode"),
        _ => image.write_to(&mut bytes, format).expect("encode"),
    }
    bytes.into_inner()
}

const FORMATS: [ImageFormat; 5] = [
    ImageFormat::Png,
    ImageFormat::Jpeg,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::WebP,
];

/// What every refusal must be: one of the typed reasons, with a message a person can read.
fn check_refusal(error: &ImageInputError) {
    let message = error.to_string();
    assert!(message.len() > 10, "a reason, not a code: {message:?}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        match decode(&bytes) {
            Ok(image) => prop_assert!(image.width() >= 1 && image.height() >= 1),
            Err(error) => check_refusal(&error),
        }
    }

    #[test]
    fn damaged_pictures_are_refused_or_decoded_never_panic(
        format in 0..FORMATS.len(),
        width in 1u32..48,
        height in 1u32..48,
        seed in any::<u64>(),
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut bytes = encode(&picture(width, height, seed), FORMATS[format]);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        bytes.truncate(((bytes.len() as f64) * cut) as usize);
        match decode(&bytes) {
            Ok(image) => prop_assert!(image.width() <= MAX_DIMENSION && image.height() <= MAX_DIMENSION),
            Err(error) => check_refusal(&error),
        }
    }

    #[test]
    fn lossless_pictures_come_back_pixel_for_pixel(
        format in prop::sample::select(vec![ImageFormat::Png, ImageFormat::Bmp]),
        width in 1u32..120,
        height in 1u32..120,
        seed in any::<u64>(),
    ) {
        let original = picture(width, height, seed);
        let decoded = decode(&encode(&original, format)).expect("a valid picture decodes");
        prop_assert_eq!(decoded, original);
    }

    #[test]
    fn storage_never_upscales_and_keeps_the_aspect(width in 1u32..1200, height in 1u32..1200) {
        let stored = prepare(&RgbImage::new(width, height), 224);
        let (w, h) = stored.dimensions();
        let short = width.min(height);
        prop_assert_eq!(w.min(h), short.min(256), "short side: {}x{} -> {}x{}", width, height, w, h);
        prop_assert!(w <= width && h <= height, "never larger: {}x{} -> {}x{}", width, height, w, h);
        // The aspect, to the pixel (and within the cap on very long pictures).
        let kept = f64::from(w.max(h)) / f64::from(w.min(h));
        let original = (f64::from(width.max(height)) / f64::from(short)).min(graft_ingest::MAX_ASPECT);
        prop_assert!(
            (kept - original).abs() <= original / f64::from(w.min(h)) + 1e-9,
            "aspect {} -> {}", original, kept
        );
    }

    #[test]
    fn every_shape_gives_a_view_of_the_input_size(
        short in 1u32..=2048,
        // Log-uniform aspect ratios from square to one pixel by the largest side allowed.
        log_aspect in 0.0f64..(f64::from(MAX_DIMENSION)).ln(),
        tall in any::<bool>(),
        input in prop::sample::select(vec![64u32, 224, 300]),
    ) {
        // At most 4 Mpx, so that a case stays fast.
        let long = ((f64::from(short) * log_aspect.exp()) as u32).clamp(short, MAX_DIMENSION).min((4 << 20) / short).max(short);
        let (width, height) = if tall { (short, long) } else { (long, short) };
        let stored = prepare(&RgbImage::new(width, height), input);
        let (w, h) = stored.dimensions();
        prop_assert!(
            f64::from(w.max(h)) <= f64::from(w.min(h)) * graft_ingest::MAX_ASPECT,
            "stored {}x{} from {}x{}", w, h, width, height
        );
        prop_assert_eq!(evaluation_view(&stored, input).dimensions(), (input, input));
        // Straight from the decoder too (a picture to classify is not stored first).
        if u64::from(width) * u64::from(height) <= 1 << 20 {
            prop_assert_eq!(evaluation_view(&RgbImage::new(width, height), input).dimensions(), (input, input));
        }
    }
}
