//! Writes the fuzz targets' seeds: into the first folder given, one small picture per format and
//! colour type the intake handles, so that the fuzzer starts from inputs that get deep into each
//! decoder; into the second (if given), `.graft` headers as Graft writes them, for the model file
//! target. `cargo xtask fuzz` runs it; nothing binary is committed.

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: fuzz_seeds <folder> [<folder>]"));
    if let Some(models) = std::env::args().nth(2) {
        model_file_seeds(std::path::Path::new(&models));
    }
    std::fs::create_dir_all(&dir).expect("seed folder");
    let rgb = RgbImage::from_fn(16, 12, |x, y| {
        Rgb([(x * 16) as u8, (y * 20) as u8, ((x + y) * 8) as u8])
    });
    let pictures = [
        ("rgb", DynamicImage::ImageRgb8(rgb.clone())),
        (
            "rgba",
            DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(rgb.clone()).to_rgba8()),
        ),
        (
            "grey16",
            DynamicImage::ImageLuma16(DynamicImage::ImageRgb8(rgb.clone()).to_luma16()),
        ),
        (
            "grey-alpha",
            DynamicImage::ImageLumaA8(DynamicImage::ImageRgb8(rgb).to_luma_alpha8()),
        ),
    ];
    for (name, picture) in &pictures {
        for (extension, format) in [
            ("png", ImageFormat::Png),
            ("jpg", ImageFormat::Jpeg),
            ("gif", ImageFormat::Gif),
            ("bmp", ImageFormat::Bmp),
            ("webp", ImageFormat::WebP),
        ] {
            let mut bytes = std::io::Cursor::new(Vec::new());
            // Not every format takes every colour type: convert to one it does.
            let written = picture.write_to(&mut bytes, format).is_ok()
                || {
                    bytes = std::io::Cursor::new(Vec::new());
                    DynamicImage::ImageRgba8(picture.to_rgba8())
                        .write_to(&mut bytes, format)
                        .is_ok()
                }
                || {
                    bytes = std::io::Cursor::new(Vec::new());
                    DynamicImage::ImageRgb8(picture.to_rgb8())
                        .write_to(&mut bytes, format)
                        .is_ok()
                };
            if written {
                std::fs::write(dir.join(format!("{name}.{extension}")), bytes.into_inner()).expect("write seed");
            }
        }
    }
}

/// `.graft` files' beginnings: the signature, the header length and a header for each model and a
/// few sizes and strategies, followed by a few bytes standing in for the weights.
fn model_file_seeds(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("seed folder");
    let headers = [
        (
            "mobile-net-v2",
            224,
            256,
            [0.485, 0.456, 0.406],
            [0.229, 0.224, 0.225],
            r#"{"kind":"head-only"}"#,
        ),
        (
            "efficient-net-lite0",
            96,
            256,
            [0.498, 0.498, 0.498],
            [0.502, 0.502, 0.502],
            r#"{"kind":"staged","head_epochs":1,"unfreeze_blocks":null,"lr_mult":100.0}"#,
        ),
        (
            "mobilenet-v2",
            320,
            320,
            [0.5, 0.5, 0.5],
            [0.25, 0.25, 0.25],
            r#"{"kind":"partial-freeze","trainable_blocks":5}"#,
        ),
    ];
    for (index, (model, size, side, mean, std, strategy)) in headers.into_iter().enumerate() {
        let json = format!(
            r#"{{"model":"{model}","classes":["birds","cats","fish & chips"],"resize_short_side":{side},"input_size":{size},"normalisation":{{"mean":{mean:?},"std":{std:?}}},"strategy":{strategy},"val_accuracy":0.9,"weights_bytes":20000,"weights_sha256":"{}"}}"#,
            "0f".repeat(32)
        );
        let mut bytes = graft_ingest::model_file::GRAFT_MAGIC.to_vec();
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(json.as_bytes());
        bytes.extend_from_slice(&[0; 16]);
        assert!(
            graft_ingest::model_file::read_graft_header(&bytes).is_ok(),
            "seed {index} is a header Graft reads"
        );
        std::fs::write(dir.join(format!("header-{index}.graft")), bytes).expect("write seed");
    }
}
