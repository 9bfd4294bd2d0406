//! Pictures for the page and the store: webcam frames, JPEGs, thumbnails.

use image::RgbImage;

use super::THUMBNAIL;

/// A webcam frame (RGBA pixels) as a PNG file, so that it goes through the same intake as a dropped
/// file; empty (and so refused with a reason) when the pixels do not match the size.
pub(super) fn frame_png(rgba: &[u8], width: u32, height: u32) -> Vec<u8> {
    let Some(frame) = image::RgbaImage::from_raw(width, height, rgba.to_vec()) else {
        return Vec::new();
    };
    let mut png = Vec::new();
    let _ =
        image::DynamicImage::ImageRgba8(frame).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png);
    png
}

pub(super) fn jpeg(image: &RgbImage, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .map_err(|e| format!("could not encode the image: {e}"))?;
    Ok(out)
}

/// A centre-square JPEG thumbnail.
pub(super) fn thumbnail(image: &RgbImage) -> Result<Vec<u8>, String> {
    let side = image.width().min(image.height());
    let square = image::imageops::crop_imm(
        image,
        (image.width() - side) / 2,
        (image.height() - side) / 2,
        side,
        side,
    )
    .to_image();
    let small = image::imageops::resize(&square, THUMBNAIL, THUMBNAIL, image::imageops::FilterType::Triangle);
    jpeg(&small, 80)
}
