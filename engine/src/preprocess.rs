//! Image -> model input, shared by the CLI and the app: decode (honouring EXIF orientation), resize the
//! short side to 256, centre-crop 224 (all in `graft_ingest`), normalise per model.

use burn::prelude::*;
use image::RgbImage;

pub use graft_ingest::{
    ImageInputError, MAX_DECODE_BYTES, MAX_DIMENSION, RESIZE_SHORT_SIDE, centre_crop, decode, evaluation_view,
    evaluation_view_at, resize_short_side,
};

use crate::model::Normalisation;

/// Normalised CHW floats for one image: `(pixel / 255 - mean) / std` per channel.
pub fn normalise(image: &RgbImage, normalisation: &Normalisation) -> Vec<f32> {
    graft_ingest::normalise(image, normalisation.mean, normalisation.std)
}

/// A batch tensor from prepared images of equal size.
///
/// # Shapes
/// - output: `[images.len(), 3, size, size]`
pub fn batch_tensor(images: &[RgbImage], normalisation: &Normalisation, device: &Device) -> Tensor<4> {
    let (width, height) = images.first().map_or((0, 0), |image| image.dimensions());
    let mut data = Vec::with_capacity(images.len() * 3 * (width * height) as usize);
    for image in images {
        assert_eq!(
            image.dimensions(),
            (width, height),
            "batch_tensor: images differ in size"
        );
        data.extend(normalise(image, normalisation));
    }
    Tensor::from_data(
        TensorData::new(data, [images.len(), 3, height as usize, width as usize]),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_is_per_channel_and_planar() {
        let mut image = RgbImage::new(2, 1);
        image.put_pixel(0, 0, image::Rgb([255, 0, 127]));
        image.put_pixel(1, 0, image::Rgb([0, 255, 255]));
        let out = normalise(&image, &Normalisation::TF_LITE);
        let expected = [
            128.0 / 128.0,
            -127.0 / 128.0,
            -127.0 / 128.0,
            128.0 / 128.0,
            0.0,
            128.0 / 128.0,
        ];
        assert_eq!(out.len(), expected.len(), "three planes of two pixels: {out:?}");
        for (value, expected) in out.iter().zip(expected) {
            assert!((value - expected).abs() < 1e-6, "{out:?}");
        }
    }
}
