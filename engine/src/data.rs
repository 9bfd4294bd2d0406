//! A labelled image dataset in memory, its stratified split, and the training views of its images
//! (augmented or not).
//!
//! Images are kept as upright 8-bit RGB, downscaled once on the way in ([`prepare`]) so that a project
//! of thousands of pictures fits in memory; every epoch crops its views from them.

use std::borrow::Cow;
use std::sync::Arc;

use image::RgbImage;
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

use crate::preprocess;

/// A seeded pseudo-random generator (SplitMix64). Ours rather than `rand`'s so that a seed gives the same
/// split, order and augmentations on every platform and in every version (rand promises neither for its
/// small generators).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// An image as a dataset keeps it: upright RGB pixels, or a compressed copy of them decoded each time
/// they are used. Compressed, a 256 px photo takes ~25 KB instead of ~200 KB, so that a project of
/// 10 000 pictures fits a browser tab; decoding it again costs a few milliseconds, little beside a
/// network pass. Cheap to clone (shared).
#[derive(Clone)]
pub struct Picture(Arc<Kept>);

struct Kept {
    /// A hash of the content (the pixels, or the compressed bytes): the embedding cache's key.
    key: u64,
    width: u32,
    height: u32,
    pixels: Option<RgbImage>,
    compressed: Vec<u8>,
}

impl Picture {
    /// Keeps `image` as pixels.
    pub fn from_pixels(image: RgbImage) -> Self {
        let mut hash = Fnv::new();
        hash.mix(u64::from(image.width()) << 32 | u64::from(image.height()));
        hash.bytes(image.as_raw());
        Self(Arc::new(Kept {
            key: hash.0,
            width: image.width(),
            height: image.height(),
            pixels: Some(image),
            compressed: Vec::new(),
        }))
    }

    /// Keeps `bytes` (a JPEG or PNG of an upright, prepared image) compressed, to be decoded when used.
    /// `decoded` is what the caller got decoding them (which checked them and gives the size).
    pub fn compressed(bytes: Vec<u8>, decoded: &RgbImage) -> Self {
        let mut hash = Fnv::new();
        hash.bytes(&bytes);
        Self(Arc::new(Kept {
            key: hash.0,
            width: decoded.width(),
            height: decoded.height(),
            pixels: None,
            compressed: bytes,
        }))
    }

    /// The pixels (decoded now when kept compressed).
    pub fn pixels(&self) -> Cow<'_, RgbImage> {
        match &self.0.pixels {
            Some(pixels) => Cow::Borrowed(pixels),
            None => Cow::Owned(
                preprocess::decode(&self.0.compressed).expect("compressed pictures were decoded once when kept"),
            ),
        }
    }

    /// A 64-bit hash of the content: pictures with the same key have the same pixels.
    pub fn key(&self) -> u64 {
        self.0.key
    }

    pub fn dimensions(&self) -> (u32, u32) {
        (self.0.width, self.0.height)
    }

    /// Memory the picture holds.
    pub fn heap_bytes(&self) -> usize {
        self.0.pixels.as_ref().map_or(0, |p| p.as_raw().len()) + self.0.compressed.len()
    }
}

impl From<RgbImage> for Picture {
    fn from(image: RgbImage) -> Self {
        Self::from_pixels(image)
    }
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let form = if self.0.pixels.is_some() {
            "pixels"
        } else {
            "compressed"
        };
        write!(
            f,
            "Picture({}x{}, {form}, {} bytes)",
            self.0.width,
            self.0.height,
            self.heap_bytes()
        )
    }
}

/// FNV-1a over 8-byte words: fast enough for thousands of images, and any changed byte changes it.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn mix(&mut self, word: u64) {
        self.0 ^= word;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.mix(bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.mix(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        self.mix(u64::from_le_bytes(tail));
    }
}

/// One labelled image.
#[derive(Debug, Clone)]
pub struct Example {
    /// Upright RGB, prepared with [`prepare`].
    pub image: Picture,
    pub label: usize,
}

/// Images with class labels `0..classes.len()`.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub classes: Vec<String>,
    pub examples: Vec<Example>,
}

/// A dataset training cannot use, with the reason in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("there are no classes: add at least two classes of images")]
    NoClasses,
    #[error("there is only one class ({0:?}): a classifier needs at least two classes to tell apart")]
    OneClass(String),
    #[error("class {0:?} has no images: add some or remove the class")]
    EmptyClass(String),
    #[error("two classes are named {0:?}: class names must differ")]
    DuplicateClass(String),
    #[error("an image is labelled {label}, but there are only {classes} classes")]
    BadLabel { label: usize, classes: usize },
}

/// Classes this many times larger than the smallest are called out.
pub const IMBALANCE_RATIO: usize = 5;

/// When the largest class has at least [`IMBALANCE_RATIO`] times the images of the smallest, what that
/// means and what to do: the model will favour the large class, and overall accuracy hides it. Said
/// by the recommender and again when training starts.
pub fn imbalance(class_names: &[String], per_class: &[usize]) -> Option<String> {
    let (small, &fewest) = per_class.iter().enumerate().min_by_key(|(_, c)| **c)?;
    let (large, &most) = per_class.iter().enumerate().max_by_key(|(_, c)| **c)?;
    let name = |i: usize| {
        class_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {}", i + 1))
    };
    (fewest > 0 && most >= IMBALANCE_RATIO * fewest).then(|| {
        format!(
            "The classes are unbalanced: {:?} has {most} images, {:?} only {fewest}. The model will lean \
             towards the larger class; judge it by the per-class accuracy, and add images to {:?} if you can.",
            name(large),
            name(small),
            name(small)
        )
    })
}

impl Dataset {
    /// Images per class, in class order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for example in &self.examples {
            if let Some(count) = counts.get_mut(example.label) {
                *count += 1;
            }
        }
        counts
    }

    pub fn labels(&self) -> Vec<usize> {
        self.examples.iter().map(|example| example.label).collect()
    }

    /// Checks that the dataset can be trained on: two or more classes, none empty, labels in range.
    pub fn validate(&self) -> Result<(), DataError> {
        match self.classes.len() {
            0 => return Err(DataError::NoClasses),
            1 => return Err(DataError::OneClass(self.classes[0].clone())),
            _ => {}
        }
        for (i, name) in self.classes.iter().enumerate() {
            if self.classes[..i].contains(name) {
                return Err(DataError::DuplicateClass(name.clone()));
            }
        }
        if let Some(example) = self.examples.iter().find(|e| e.label >= self.classes.len()) {
            return Err(DataError::BadLabel {
                label: example.label,
                classes: self.classes.len(),
            });
        }
        match self.class_counts().iter().position(|&count| count == 0) {
            Some(empty) => Err(DataError::EmptyClass(self.classes[empty].clone())),
            None => Ok(()),
        }
    }
}

pub use graft_ingest::{prepare, stored_short_side};

/// Indices of the training and validation examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// A seeded split that keeps each class's proportion: `round(n * val_fraction)` of each class's `n`
/// images validate, but at least one when the class has two or more and `val_fraction > 0`, and never
/// all of them (every class keeps a training image).
pub fn stratified_split(labels: &[usize], classes: usize, val_fraction: f64, seed: u64) -> Split {
    let mut rng = Rng::new(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (index, &label) in labels.iter().enumerate() {
        by_class[label].push(index);
    }
    let mut split = Split {
        train: Vec::new(),
        val: Vec::new(),
    };
    for mut members in by_class {
        rng.shuffle(&mut members);
        let n = members.len();
        let mut n_val = (n as f64 * val_fraction.clamp(0.0, 1.0)).round() as usize;
        if val_fraction > 0.0 && n >= 2 {
            n_val = n_val.max(1);
        }
        n_val = n_val.min(n.saturating_sub(1));
        split.val.extend_from_slice(&members[..n_val]);
        split.train.extend_from_slice(&members[n_val..]);
    }
    split.train.sort_unstable();
    split.val.sort_unstable();
    split
}

/// Training-time augmentation: random resized crop, horizontal flip, light colour jitter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Range of the crop's area as a fraction of the image's.
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio (width / height).
    pub ratio: (f64, f64),
    /// Probability of a horizontal flip.
    pub flip: f64,
    /// Brightness, contrast and saturation each vary by a factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
}

impl Default for Augmentation {
    /// Milder than ImageNet training's (scale from 0.08): a small fine-tuning set has few images to
    /// spare, and a crop of 8% of a photo often loses the object.
    fn default() -> Self {
        Self {
            scale: (0.35, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: 0.5,
            jitter: 0.2,
        }
    }
}

/// A random training view of `image`: `input_size` square.
pub fn augmented_view(image: &RgbImage, input_size: u32, augmentation: &Augmentation, rng: &mut Rng) -> RgbImage {
    let (width, height) = image.dimensions();
    let area = f64::from(width) * f64::from(height);
    let (mut x, mut y, mut w, mut h) = {
        // Fallback: the centre square.
        let side = width.min(height);
        ((width - side) / 2, (height - side) / 2, side, side)
    };
    for _ in 0..10 {
        let target = area * rng.uniform(augmentation.scale.0, augmentation.scale.1);
        let ratio = rng.uniform(augmentation.ratio.0.ln(), augmentation.ratio.1.ln()).exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw >= 1 && ch >= 1 && cw <= width && ch <= height {
            x = rng.below((width - cw + 1) as usize) as u32;
            y = rng.below((height - ch + 1) as usize) as u32;
            (w, h) = (cw, ch);
            break;
        }
    }
    let crop = image::imageops::crop_imm(image, x, y, w, h).to_image();
    let mut view = image::imageops::resize(&crop, input_size, input_size, FilterType::Triangle);
    if rng.unit() < augmentation.flip {
        image::imageops::flip_horizontal_in_place(&mut view);
    }
    if augmentation.jitter > 0.0 {
        let j = augmentation.jitter;
        let brightness = rng.uniform(1.0 - j, 1.0 + j) as f32;
        let contrast = rng.uniform(1.0 - j, 1.0 + j) as f32;
        let saturation = rng.uniform(1.0 - j, 1.0 + j) as f32;
        colour_jitter(&mut view, brightness, contrast, saturation);
    }
    view
}

/// Scales brightness, then contrast about the mean grey, then saturation about each pixel's grey.
fn colour_jitter(image: &mut RgbImage, brightness: f32, contrast: f32, saturation: f32) {
    let grey = |p: [f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let pixels = f32::max(1.0, (image.width() * image.height()) as f32);
    let mean = image
        .pixels()
        .map(|p| grey([p[0] as f32, p[1] as f32, p[2] as f32]))
        .sum::<f32>()
        / pixels
        * brightness;
    for pixel in image.pixels_mut() {
        let mut p = [0.0f32; 3];
        for c in 0..3 {
            p[c] = pixel[c] as f32 * brightness;
            p[c] = mean + (p[c] - mean) * contrast;
        }
        let g = grey(p);
        for c in 0..3 {
            pixel[c] = (g + (p[c] - g) * saturation).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// A file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// Reads a folder with one subfolder per class (classes sorted by name, files by name), decoding,
/// orienting and [`prepare`]-ing each image; at most `max_per_class` per class. Files that are not
/// usable images are skipped and reported; hidden files and folders are ignored.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_folder(
    dir: &std::path::Path,
    input_size: u32,
    max_per_class: Option<usize>,
) -> std::io::Result<(Dataset, Vec<Skipped>)> {
    read_folder_with_paths(dir, input_size, max_per_class).map(|(dataset, _, skipped)| (dataset, skipped))
}

/// [`read_folder`], with the path of each example.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_folder_with_paths(
    dir: &std::path::Path,
    input_size: u32,
    max_per_class: Option<usize>,
) -> std::io::Result<(Dataset, Vec<std::path::PathBuf>, Vec<Skipped>)> {
    let sorted_entries = |dir: &std::path::Path| -> std::io::Result<Vec<std::path::PathBuf>> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()?;
        paths.retain(|path| {
            !path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'))
        });
        paths.sort();
        Ok(paths)
    };
    let mut dataset = Dataset::default();
    let mut paths = Vec::new();
    let mut skipped = Vec::new();
    for class_dir in sorted_entries(dir)?.into_iter().filter(|path| path.is_dir()) {
        let label = dataset.classes.len();
        dataset.classes.push(
            class_dir
                .file_name()
                .expect("a named entry")
                .to_string_lossy()
                .into_owned(),
        );
        let mut taken = 0;
        for file in sorted_entries(&class_dir)?.into_iter().filter(|path| path.is_file()) {
            if max_per_class.is_some_and(|max| taken >= max) {
                break;
            }
            let decoded = std::fs::read(&file)
                .map_err(|error| error.to_string())
                .and_then(|bytes| preprocess::decode(&bytes).map_err(|error| error.to_string()));
            match decoded {
                Ok(image) => {
                    dataset.examples.push(Example {
                        image: prepare(&image, input_size).into(),
                        label,
                    });
                    paths.push(file);
                    taken += 1;
                }
                Err(reason) => skipped.push(Skipped {
                    path: file.display().to_string(),
                    reason,
                }),
            }
        }
    }
    Ok((dataset, paths, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_seeded_and_keeps_a_training_image_per_class() {
        // 10 of class 0, 5 of class 1, 2 of class 2, 1 of class 3.
        let labels: Vec<usize> = [vec![0; 10], vec![1; 5], vec![2; 2], vec![3; 1]].concat();
        let split = stratified_split(&labels, 4, 0.2, 7);
        let count = |indices: &[usize], class| indices.iter().filter(|&&i| labels[i] == class).count();
        assert_eq!(
            (0..4).map(|c| count(&split.val, c)).collect::<Vec<_>>(),
            vec![2, 1, 1, 0],
            "20% rounded, at least one for classes of two or more, none from a class of one"
        );
        assert_eq!(split.train.len() + split.val.len(), labels.len());
        assert!(split.train.iter().all(|i| !split.val.contains(i)));
        assert_eq!(split, stratified_split(&labels, 4, 0.2, 7), "same seed, same split");
        assert_ne!(
            split,
            stratified_split(&labels, 4, 0.2, 8),
            "another seed, another split"
        );
        assert!(stratified_split(&labels, 4, 0.0, 7).val.is_empty());
    }

    #[test]
    fn degenerate_datasets_are_refused_with_the_reason() {
        let image = RgbImage::new(4, 4);
        let mut dataset = Dataset::default();
        assert_eq!(dataset.validate(), Err(DataError::NoClasses));
        dataset.classes = vec!["cats".into()];
        assert_eq!(dataset.validate(), Err(DataError::OneClass("cats".into())));
        dataset.classes.push("dogs".into());
        dataset.examples.push(Example {
            image: image.clone().into(),
            label: 0,
        });
        assert_eq!(dataset.validate(), Err(DataError::EmptyClass("dogs".into())));
        dataset.examples.push(Example {
            image: image.into(),
            label: 1,
        });
        assert_eq!(dataset.validate(), Ok(()));
    }

    #[test]
    fn augmented_views_have_the_input_size_and_vary_with_the_seed() {
        let image = RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
        let augmentation = Augmentation::default();
        let a = augmented_view(&image, 64, &augmentation, &mut Rng::new(1));
        assert_eq!(a.dimensions(), (64, 64));
        assert_eq!(a, augmented_view(&image, 64, &augmentation, &mut Rng::new(1)));
        assert_ne!(a, augmented_view(&image, 64, &augmentation, &mut Rng::new(2)));
    }

    #[test]
    fn prepare_downscales_to_the_stored_size_and_never_upscales() {
        let big = RgbImage::new(1000, 600);
        assert_eq!(prepare(&big, 224).dimensions(), (427, 256));
        let small = RgbImage::new(28, 28);
        assert_eq!(prepare(&small, 224).dimensions(), (28, 28));
        assert_eq!(stored_short_side(224), 256);
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut rng = Rng::new(3);
        let mut buckets = [0usize; 10];
        for _ in 0..10_000 {
            buckets[rng.below(10)] += 1;
        }
        assert!(buckets.iter().all(|&b| (900..1100).contains(&b)), "{buckets:?}");
    }
}
