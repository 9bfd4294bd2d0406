//! Pictures in: decode any supported file into upright 8-bit RGB (EXIF orientation applied,
//! transparency on white, any bit depth), refuse what is not a picture or too large with a typed reason
//! before allocating for it, downscale once for storage, and cut the evaluation view; and read what a
//! model file says of itself ([`model_file`]) before anything believes it. No tensors, no Burn: this is
//! the part that takes untrusted bytes, so it is small, fuzzed (`fuzz/`) and property-tested on its own.

use std::io::Cursor;

pub mod model_file;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

/// Short side after resizing, before the centre crop (the ImageNet evaluation convention).
pub const RESIZE_SHORT_SIDE: u32 = 256;
/// Largest width or height accepted from a file; larger images are refused before decoding.
pub const MAX_DIMENSION: u32 = 16_384;
/// Longest side over shortest side kept: a longer picture (a 1 x 16 384 strip, a panorama) is cut to
/// its centre part of this shape before anything scales it. Without the cap, bringing a 1-pixel short
/// side up to 256 would scale the long side up 256 times too: 256 x 4 194 304 pixels, 3 GiB, for one
/// view. No view uses more than the centre anyway (augmentation's crops are at most 4:3).
pub const MAX_ASPECT: f64 = 4.0;
/// Most memory a single decode may allocate.
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageInputError {
    #[error("not an image in a supported format (PNG, JPEG, GIF, WebP, BMP): {0}")]
    UnknownFormat(String),
    #[error("the image is {width}x{height} pixels: too large to decode (at most {MAX_DIMENSION} per side and {} MiB of pixels)", MAX_DECODE_BYTES >> 20)]
    TooLarge { width: u32, height: u32 },
    #[error("the image is damaged or truncated: {0}")]
    Corrupt(String),
    #[error("the image is empty (0 pixels wide or high)")]
    Empty,
}

/// Decodes an encoded image into upright RGB: EXIF orientation applied, transparency composited onto white, any bit depth
/// or colour type converted to 8-bit RGB. Refuses oversized images before allocating for them.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, ImageInputError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageInputError::UnknownFormat(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ImageInputError::UnknownFormat("unrecognised file signature".into()));
    }
    // Our own limits go on after the size check, so that an oversized image is reported with its size.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(classify_error)?;
    let (width, height) = decoder.dimensions();
    if width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(ImageInputError::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(ImageInputError::Empty);
    }
    // The decoders do not all enforce `max_alloc` before allocating the pixel buffer: check it here.
    if decoder.total_bytes() > MAX_DECODE_BYTES {
        return Err(ImageInputError::TooLarge { width, height });
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    // From here on a limit error means this image, whose size is known, needs too much memory.
    let classify = |error| match error {
        image::ImageError::Limits(_) => ImageInputError::TooLarge { width, height },
        other => classify_error(other),
    };
    decoder.set_limits(limits).map_err(classify)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(classify)?;
    image.apply_orientation(orientation);
    if image.color().has_alpha() {
        return Ok(over_white(&image.into_rgba8()));
    }
    Ok(image.into_rgb8())
}

/// Composites a transparent image onto white, as image viewers show it (dropping alpha would expose
/// whatever colour the transparent pixels happen to store, often black).
fn over_white(image: &image::RgbaImage) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b, a] = image.get_pixel(x, y).0;
        let a = u16::from(a);
        let blend = |c: u8| ((u16::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

fn classify_error(error: image::ImageError) -> ImageInputError {
    match error {
        image::ImageError::Unsupported(e) => ImageInputError::UnknownFormat(e.to_string()),
        other => ImageInputError::Corrupt(other.to_string()),
    }
}

/// Scales the image so that its shorter side is `short_side` (triangle filter, aspect kept).
pub fn resize_short_side(image: &RgbImage, short_side: u32) -> RgbImage {
    let (width, height) = image.dimensions();
    if width.min(height) == short_side {
        return image.clone();
    }
    let scale = f64::from(short_side) / f64::from(width.min(height));
    let long = |side: u32| ((f64::from(side) * scale).round() as u32).max(short_side);
    let (new_width, new_height) = if width <= height {
        (short_side, long(height))
    } else {
        (long(width), short_side)
    };
    image::imageops::resize(image, new_width, new_height, FilterType::Triangle)
}

/// The centre `size` x `size` square (the image must be at least that large on both sides).
pub fn centre_crop(image: &RgbImage, size: u32) -> RgbImage {
    let (width, height) = image.dimensions();
    assert!(
        width >= size && height >= size,
        "centre_crop: {width}x{height} is smaller than {size}"
    );
    image::imageops::crop_imm(image, (width - size) / 2, (height - size) / 2, size, size).to_image()
}

/// The evaluation view of an upright image: short side to 256 (to `input_size` above that), then the
/// centre `input_size` square.
pub fn evaluation_view(image: &RgbImage, input_size: u32) -> RgbImage {
    evaluation_view_at(image, model_file::resize_side_for(input_size), input_size)
}

/// The evaluation view with the short side resized to `short_side` (what a model file declares; at
/// least `input_size`, which [`model_file`] checks): the centre part within [`MAX_ASPECT`], resized,
/// then the centre `input_size` square. Every reader of a model file cuts its views with this.
pub fn evaluation_view_at(image: &RgbImage, short_side: u32, input_size: u32) -> RgbImage {
    centre_crop(
        &resize_short_side(&within_aspect(image), short_side.max(input_size)),
        input_size,
    )
}

/// `image`, or its centre part at [`MAX_ASPECT`] when it is longer than that.
pub fn within_aspect(image: &RgbImage) -> std::borrow::Cow<'_, RgbImage> {
    let (width, height) = image.dimensions();
    let short = width.min(height);
    let most = (f64::from(short) * MAX_ASPECT).floor() as u32;
    if width.max(height) <= most {
        return std::borrow::Cow::Borrowed(image);
    }
    let (w, h) = if width > height { (most, height) } else { (width, most) };
    std::borrow::Cow::Owned(image::imageops::crop_imm(image, (width - w) / 2, (height - h) / 2, w, h).to_image())
}

/// Downscales an upright image once on its way into a dataset: the short side to what the evaluation
/// view of `input_size` needs (256 for 224), never upscaling; a picture longer than [`MAX_ASPECT`]
/// keeps its centre part.
pub fn prepare(image: &RgbImage, input_size: u32) -> RgbImage {
    let short_side = stored_short_side(input_size);
    let image = within_aspect(image);
    if image.width().min(image.height()) <= short_side {
        return image.into_owned();
    }
    resize_short_side(&image, short_side)
}

/// Normalised planar floats for one image, `[3, height, width]` flattened: `(pixel / 255 - mean) /
/// std` per channel.
pub fn normalise(image: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let (width, height) = image.dimensions();
    let plane = (width * height) as usize;
    let mut out = vec![0.0; 3 * plane];
    for (index, pixel) in image.pixels().enumerate() {
        for channel in 0..3 {
            let value = f32::from(pixel[channel]) / 255.0;
            out[channel * plane + index] = (value - mean[channel]) / std[channel];
        }
    }
    out
}

/// The short side images are kept at for `input_size` (the 256/224 ImageNet ratio).
pub fn stored_short_side(input_size: u32) -> u32 {
    (input_size * RESIZE_SHORT_SIDE).div_ceil(224)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_side_becomes_256_and_the_aspect_is_kept() {
        let image = RgbImage::new(640, 480);
        assert_eq!(resize_short_side(&image, 256).dimensions(), (341, 256));
        let image = RgbImage::new(300, 1000);
        assert_eq!(resize_short_side(&image, 256).dimensions(), (256, 853));
        let image = RgbImage::new(10, 10);
        assert_eq!(resize_short_side(&image, 256).dimensions(), (256, 256));
    }

    #[test]
    fn evaluation_view_is_the_centre_square() {
        let mut image = RgbImage::new(512, 256);
        // Mark the centre column red; it must stay in the middle of the crop.
        for y in 0..256 {
            image.put_pixel(255, y, image::Rgb([255, 0, 0]));
            image.put_pixel(256, y, image::Rgb([255, 0, 0]));
        }
        let view = evaluation_view(&image, 224);
        assert_eq!(view.dimensions(), (224, 224));
        assert!(view.get_pixel(111, 112)[0] > 100 && view.get_pixel(112, 112)[0] > 100);
        assert_eq!(view.get_pixel(10, 112)[0], 0);
    }

    #[test]
    fn non_images_and_truncated_files_are_typed_errors() {
        let error = decode(b"GIF89a\x01\x00\x01\x00 and then garbage").unwrap_err();
        assert!(matches!(error, ImageInputError::Corrupt(_)), "{error:?}");
        assert!(matches!(
            decode(b"hello, world"),
            Err(ImageInputError::UnknownFormat(_))
        ));
        assert!(matches!(decode(&[]), Err(ImageInputError::UnknownFormat(_))));
        let mut png = Vec::new();
        RgbImage::new(64, 64)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(decode(&png).unwrap().dimensions(), (64, 64));
        assert!(matches!(
            decode(&png[..png.len() / 2]),
            Err(ImageInputError::Corrupt(_))
        ));
    }

    /// A PNG whose header claims `width` x `height` pixels (`bit_depth`, `colour_type` as in IHDR), with
    /// a tiny IDAT and IEND: what a decompression bomb looks like before it is inflated.
    fn png_bomb(width: u32, height: u32, bit_depth: u8, colour_type: u8) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([bit_depth, colour_type, 0, 0, 0]);
        png.extend((ihdr.len() as u32 - 4).to_be_bytes());
        png.extend(&ihdr);
        png.extend(crc32(&ihdr).to_be_bytes());
        // An IDAT chunk (a tiny zlib stream) and IEND, as a real decompression bomb would have.
        for (kind, data) in [
            (
                &b"IDAT"[..],
                &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01][..],
            ),
            (b"IEND", &[]),
        ] {
            let mut chunk = kind.to_vec();
            chunk.extend(data);
            png.extend((data.len() as u32).to_be_bytes());
            png.extend(&chunk);
            png.extend(crc32(&chunk).to_be_bytes());
        }
        png
    }

    #[test]
    fn a_huge_declared_size_is_refused_before_decoding() {
        let png = png_bomb(50_000, 50_000, 8, 2);
        let error = decode(&png).unwrap_err();
        assert!(
            matches!(
                error,
                ImageInputError::TooLarge {
                    width: 50_000,
                    height: 50_000
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn an_allowed_size_that_needs_too_much_memory_is_refused_with_its_size() {
        // 16000 x 16000 RGBA at 16 bits per channel: within the side limit, 2 GB to decode.
        let error = decode(&png_bomb(16_000, 16_000, 16, 6)).unwrap_err();
        assert!(
            matches!(
                error,
                ImageInputError::TooLarge {
                    width: 16_000,
                    height: 16_000
                }
            ),
            "{error:?}"
        );
    }

    /// A JPEG whose pixels are stored sideways with EXIF orientation 6 ("rotate 90° clockwise to view"),
    /// as phone cameras write them.
    fn sideways_jpeg() -> Vec<u8> {
        // Stored: 32x16, left half red, right half blue.
        let stored = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&stored)
            .unwrap();
        // APP1 "Exif": big-endian TIFF header, one IFD entry: Orientation (0x0112), SHORT, 1, value 6.
        let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
        tiff.extend([
            0x00, 0x01, 0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00,
        ]);
        tiff.extend([0, 0, 0, 0]);
        let mut app1 = b"Exif\x00\x00".to_vec();
        app1.extend(tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend([0xff, 0xe1]);
        out.extend(((app1.len() + 2) as u16).to_be_bytes());
        out.extend(app1);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn a_one_pixel_strip_gives_a_view_without_scaling_its_length_up() {
        let strip = RgbImage::from_fn(1, MAX_DIMENSION, |_, y| image::Rgb([(y % 251) as u8, 0, 0]));
        let mut png = std::io::Cursor::new(Vec::new());
        strip.write_to(&mut png, image::ImageFormat::Png).expect("encode");
        let decoded = decode(png.get_ref()).expect("a valid picture");
        assert_eq!(decoded.dimensions(), (1, MAX_DIMENSION));
        assert_eq!(
            prepare(&decoded, 224).dimensions(),
            (1, 4),
            "the centre 1:4 part is kept"
        );
        assert_eq!(evaluation_view(&decoded, 224).dimensions(), (224, 224));
    }

    /// A 16 x 8 CMYK JPEG (as print workflows write them): left half red (C 0, M 100%, Y 100%,
    /// K 0), right half blue (C 100%, M 100%, Y 0, K 0), in the encoding `color` (plain CMYK or YCCK).
    fn cmyk_jpeg(color: jpeg_encoder::ColorType) -> Vec<u8> {
        let mut pixels = Vec::new();
        for _y in 0..8 {
            for x in 0..16 {
                pixels.extend_from_slice(if x < 8 { &[0, 255, 255, 0] } else { &[255, 255, 0, 0] });
            }
        }
        let mut bytes = Vec::new();
        jpeg_encoder::Encoder::new(&mut bytes, 95)
            .encode(&pixels, 16, 8, color)
            .expect("encode CMYK");
        bytes
    }

    #[test]
    fn cmyk_jpegs_decode_to_the_right_colours() {
        for color in [jpeg_encoder::ColorType::Cmyk, jpeg_encoder::ColorType::CmykAsYcck] {
            let image = decode(&cmyk_jpeg(color)).unwrap_or_else(|e| panic!("{color:?}: {e}"));
            assert_eq!(image.dimensions(), (16, 8));
            let [r, g, b] = image.get_pixel(2, 4).0;
            assert!(
                r > 180 && g < 90 && b < 90,
                "{color:?}: red came out as {:?}",
                [r, g, b]
            );
            let [r, g, b] = image.get_pixel(13, 4).0;
            assert!(
                b > 120 && r < 90 && g < 90,
                "{color:?}: blue came out as {:?}",
                [r, g, b]
            );
        }
    }

    #[test]
    fn exif_orientation_is_applied() {
        let upright = decode(&sideways_jpeg()).unwrap();
        // Rotated 90° clockwise: 16 wide, 32 high, the stored left (red) half now on top.
        assert_eq!(upright.dimensions(), (16, 32));
        let top = upright.get_pixel(8, 4);
        let bottom = upright.get_pixel(8, 28);
        assert!(top[0] > 200 && top[2] < 60, "top should be red: {top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "bottom should be blue: {bottom:?}");
    }

    #[test]
    fn transparency_is_composited_onto_white() {
        // Transparent black, opaque red, half-transparent blue.
        let rgba = image::RgbaImage::from_raw(3, 1, vec![0, 0, 0, 0, 255, 0, 0, 255, 0, 0, 255, 128]).unwrap();
        let mut png = Vec::new();
        DynamicImage::ImageRgba8(rgba)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let rgb = decode(&png).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 0, 0]);
        assert_eq!(rgb.get_pixel(2, 0).0, [127, 127, 255]);
    }

    #[test]
    fn assorted_inputs_decode_to_upright_rgb_or_are_refused_with_a_reason() {
        let encode = |image: DynamicImage, format: image::ImageFormat| {
            let mut bytes = Vec::new();
            image.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
            bytes
        };
        // 16-bit RGB PNG: scaled down to 8 bits.
        let deep = image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(5, 3, image::Rgb([65535u16, 32768, 0]));
        let rgb = decode(&encode(DynamicImage::ImageRgb16(deep), image::ImageFormat::Png)).unwrap();
        assert_eq!((rgb.dimensions(), rgb.get_pixel(0, 0).0), ((5, 3), [255, 128, 0]));
        // Grey with alpha: grey channels, transparency onto white.
        let grey = image::GrayAlphaImage::from_raw(2, 1, vec![10, 255, 10, 0]).unwrap();
        let rgb = decode(&encode(DynamicImage::ImageLumaA8(grey), image::ImageFormat::Png)).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [10, 10, 10]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 255, 255]);
        // BMP and WebP (lossless) go in.
        let small = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3])));
        assert_eq!(
            decode(&encode(small.clone(), image::ImageFormat::Bmp))
                .unwrap()
                .get_pixel(3, 3)
                .0,
            [1, 2, 3]
        );
        assert_eq!(
            decode(&encode(small, image::ImageFormat::WebP))
                .unwrap()
                .get_pixel(0, 0)
                .0,
            [1, 2, 3]
        );
        // An animated GIF: its first frame.
        let mut gif = Vec::new();
        {
            let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
            for colour in [[200u8, 0, 0, 255], [0, 0, 200, 255]] {
                let frame = image::RgbaImage::from_pixel(6, 6, image::Rgba(colour));
                encoder.encode_frame(image::Frame::new(frame)).unwrap();
            }
        }
        let first = decode(&gif).unwrap();
        assert!(
            first.get_pixel(2, 2)[0] > 150 && first.get_pixel(2, 2)[2] < 50,
            "{:?}",
            first.get_pixel(2, 2)
        );
        // SVG (text), a PDF header and a renamed text file: refused as unknown formats.
        for bytes in [
            &b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>"[..],
            b"%PDF-1.7\n",
            b"just some notes, saved as photo.jpg",
        ] {
            assert!(
                matches!(decode(bytes), Err(ImageInputError::UnknownFormat(_))),
                "{bytes:?}"
            );
        }
        // A JPEG cut short: damaged.
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9])))
            .unwrap();
        assert!(matches!(
            decode(&jpeg[..jpeg.len() / 3]),
            Err(ImageInputError::Corrupt(_))
        ));
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
