//! Embeddings of the frozen pretrained body, kept per image across runs: the recommender computes them
//! for its sample, head-only training (and staged's head phase) reuses them instead of running the
//! body again.

use std::collections::HashMap;

use image::RgbImage;

use crate::model::ModelKind;

/// Pooled embeddings by image content, for one model and input size.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingCache {
    model: Option<(ModelKind, u32)>,
    entries: HashMap<u64, Vec<f32>>,
}

impl EmbeddingCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the cache serve `kind` at `input_size`, emptying it if it held another model's.
    pub fn use_model(&mut self, kind: ModelKind, input_size: u32) {
        if self.model != Some((kind, input_size)) {
            self.entries.clear();
            self.model = Some((kind, input_size));
        }
    }

    pub fn get(&self, image: &RgbImage) -> Option<&Vec<f32>> {
        self.entries.get(&key(image))
    }

    pub fn insert(&mut self, image: &RgbImage, embedding: Vec<f32>) {
        self.entries.insert(key(image), embedding);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A 64-bit hash of the image's size and every pixel (FNV-1a over 8-byte words: fast enough for
/// thousands of images, and any changed pixel changes it).
fn key(image: &RgbImage) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |word: u64| {
        hash ^= word;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    };
    mix((u64::from(image.width()) << 32) | u64::from(image.height()));
    let raw = image.as_raw();
    let mut words = raw.chunks_exact(8);
    for word in &mut words {
        mix(u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    mix(u64::from_le_bytes(tail));
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_the_pixels_and_the_model() {
        let mut cache = EmbeddingCache::new();
        cache.use_model(ModelKind::MobileNetV2, 224);
        let a = RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8, y as u8, 3]));
        let mut b = a.clone();
        b.put_pixel(8, 6, image::Rgb([0, 0, 0]));
        cache.insert(&a, vec![1.0]);
        assert_eq!(cache.get(&a), Some(&vec![1.0]));
        assert_eq!(cache.get(&b), None, "one pixel differs");
        cache.use_model(ModelKind::MobileNetV2, 224);
        assert_eq!(cache.len(), 1, "same model: kept");
        cache.use_model(ModelKind::EfficientNetLite0, 224);
        assert!(cache.is_empty(), "another model: emptied");
    }
}
