//! Embeddings of the frozen pretrained body, kept per image across runs: the recommender computes them
//! for its sample, head-only training (and staged's head phase) reuses them instead of running the
//! body again.

use std::collections::HashMap;
use std::ops::ControlFlow;

use crate::data::{Dataset, Picture};
use crate::inference::FrozenClassifier;
use crate::model::{ImageClassifier, ModelKind, Probes};
use crate::preprocess;
use crate::readback::ReadbackError;

/// Pictures embedded at a time by [`EmbeddingCache::fill`].
const FILL_BATCH: usize = 16;

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

    pub fn get(&self, image: &Picture) -> Option<&Vec<f32>> {
        self.entries.get(&image.key())
    }

    pub fn insert(&mut self, image: &Picture, embedding: Vec<f32>) {
        self.entries.insert(image.key(), embedding);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Embeds the pictures of `dataset` the cache lacks (their evaluation views, as training and the
    /// recommender see them) with `pretrained`'s frozen body, 16 at a time, awaiting `between(done,
    /// missing)` after each batch: `Break` there stops, and `fill` returns `Break` (what was embedded
    /// so far is kept).
    pub async fn fill(
        &mut self,
        pretrained: &ImageClassifier,
        kind: ModelKind,
        dataset: &Dataset,
        mut between: impl AsyncFnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, ReadbackError> {
        let card = kind.card();
        self.use_model(kind, card.input_size as u32);
        let missing: Vec<usize> = (0..dataset.examples.len())
            .filter(|&i| self.get(&dataset.examples[i].image).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        let device = pretrained.classifier.weight.device();
        let frozen = FrozenClassifier::new(pretrained, Probes::Off).await?;
        let width = frozen.embedding_width();
        let mut done = 0;
        for chunk in missing.chunks(FILL_BATCH) {
            let views: Vec<_> = chunk
                .iter()
                .map(|&i| preprocess::evaluation_view(&dataset.examples[i].image.pixels(), card.input_size as u32))
                .collect();
            let values = frozen
                .embeddings(preprocess::batch_tensor(&views, &card.normalisation, &device))
                .await?;
            for (k, &i) in chunk.iter().enumerate() {
                self.insert(&dataset.examples[i].image, values[k * width..(k + 1) * width].to_vec());
            }
            done += chunk.len();
            if between(done, missing.len()).await.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_the_pixels_and_the_model() {
        let mut cache = EmbeddingCache::new();
        cache.use_model(ModelKind::MobileNetV2, 224);
        let pixels = image::RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8, y as u8, 3]));
        let mut changed = pixels.clone();
        changed.put_pixel(8, 6, image::Rgb([0, 0, 0]));
        let (a, b) = (Picture::from(pixels), Picture::from(changed));
        cache.insert(&a, vec![1.0]);
        assert_eq!(cache.get(&a), Some(&vec![1.0]));
        assert_eq!(cache.get(&b), None, "one pixel differs");
        cache.use_model(ModelKind::MobileNetV2, 224);
        assert_eq!(cache.len(), 1, "same model: kept");
        cache.use_model(ModelKind::EfficientNetLite0, 224);
        assert!(cache.is_empty(), "another model: emptied");
    }
}
