//! Writes the fuzz target's seed pictures into the folder given: one small picture per format and
//! colour type the intake handles, so that the fuzzer starts from inputs that get deep into each
//! decoder. `cargo xtask fuzz` runs it; nothing binary is committed.

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: fuzz_seeds <folder>"));
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
