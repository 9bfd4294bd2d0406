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
    /// What the pixels look like, coarsely ([`Fingerprint`]): near-copies have near-equal ones.
    fingerprint: Fingerprint,
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
            fingerprint: Fingerprint::of(&image),
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
            fingerprint: Fingerprint::of(decoded),
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

    /// The compressed bytes it is kept as (`None` when it is kept as pixels).
    pub fn compressed_bytes(&self) -> Option<&[u8]> {
        (!self.0.compressed.is_empty()).then_some(self.0.compressed.as_slice())
    }

    /// What its pixels look like, coarsely.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.0.fingerprint
    }

    /// Memory the picture holds.
    pub fn heap_bytes(&self) -> usize {
        self.0.pixels.as_ref().map_or(0, |p| p.as_raw().len()) + self.0.compressed.len()
    }
}

/// What a picture looks like, coarsely, to find its copies (re-saved, re-compressed, a little
/// resized): `shape`, a 64-bit difference hash (grey at 9 x 8, one bit per neighbouring pair: is the
/// left one brighter), used to rule most pairs out cheaply; `grey`, the picture's mean grey in each
/// cell of a 16 x 16 grid; `colour`, its mean RGB in each cell of a 4 x 4 grid.
///
/// Thresholds measured on the package datasets (mean absolute differences, in levels): re-saved
/// copies of the Tux Paint photos (JPEG, 90% size) differ by 0.4-2.7 in grey; different photos by
/// 8.9 or more (the
/// hash alone takes an apple and an orange centred on white for copies: their colours differ by
/// tens of levels); different handwritten digits by 2.9 or more. Tiny low-detail pictures resized
/// are beyond any threshold (a 28-pixel digit resized to 25 changes by 5-10): those copies are
/// missed, which costs only the inflation this guards against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub shape: u64,
    pub grey: [u8; 256],
    pub colour: [u8; 48],
}

/// Shapes at most this far apart (differing bits) are compared further.
pub const COPY_SHAPE_BITS: u32 = 12;
/// Greys at most this far apart (mean absolute difference, in levels) ...
pub const COPY_GREY_LEVELS: f64 = 3.0;
/// ... with colours at most this far apart are one picture.
pub const COPY_COLOUR_LEVELS: f64 = 6.0;

/// Mean of each cell of a `cells x cells` grid over `image` (channel `pick` of each pixel).
fn cell_means<const N: usize>(
    image: &RgbImage,
    cells: u32,
    pick: impl Fn(&image::Rgb<u8>) -> [u32; 3],
    channels: usize,
) -> [u8; N] {
    let (width, height) = image.dimensions();
    let mut out = [0u8; N];
    for cell in 0..cells * cells {
        let (cx, cy) = (cell % cells, cell / cells);
        let span = |c: u32, size: u32| {
            let start = c * size / cells;
            (start, ((c + 1) * size / cells).max(start + 1).min(size))
        };
        let ((x0, x1), (y0, y1)) = (span(cx, width), span(cy, height));
        let mut sums = [0u64; 3];
        for y in y0..y1 {
            for x in x0..x1 {
                let values = pick(image.get_pixel(x, y));
                for c in 0..channels {
                    sums[c] += u64::from(values[c]);
                }
            }
        }
        let count = (u64::from(x1 - x0) * u64::from(y1 - y0)).max(1);
        for c in 0..channels {
            out[cell as usize * channels + c] = (sums[c] / count) as u8;
        }
    }
    out
}

fn mean_distance(a: &[u8], b: &[u8]) -> f64 {
    let total: u32 = a.iter().zip(b).map(|(x, y)| u32::from(x.abs_diff(*y))).sum();
    f64::from(total) / a.len().max(1) as f64
}

impl Fingerprint {
    pub fn of(image: &RgbImage) -> Self {
        let grey_image = image::imageops::grayscale(image);
        let small = image::imageops::resize(&grey_image, 9, 8, image::imageops::FilterType::Triangle);
        let mut shape = 0u64;
        for y in 0..8 {
            for x in 0..8 {
                shape = shape << 1 | u64::from(small.get_pixel(x, y)[0] > small.get_pixel(x + 1, y)[0]);
            }
        }
        // ITU-R 601 luma, as `grayscale` computes it.
        let luma = |p: &image::Rgb<u8>| {
            let [r, g, b] = p.0.map(u32::from);
            [(r * 299 + g * 587 + b * 114) / 1000, 0, 0]
        };
        Self {
            shape,
            grey: cell_means::<256>(image, 16, luma, 1),
            colour: cell_means::<48>(image, 4, |p| p.0.map(u32::from), 3),
        }
    }

    /// Differing bits of the shapes.
    pub fn shape_distance(&self, other: &Self) -> u32 {
        (self.shape ^ other.shape).count_ones()
    }

    /// Mean absolute difference of the 16 x 16 greys, in levels.
    pub fn grey_distance(&self, other: &Self) -> f64 {
        mean_distance(&self.grey, &other.grey)
    }

    /// Mean absolute difference of the 4 x 4 colours, in levels.
    pub fn colour_distance(&self, other: &Self) -> f64 {
        mean_distance(&self.colour, &other.colour)
    }

    /// Whether the two are one picture's copies.
    pub fn is_copy_of(&self, other: &Self) -> bool {
        self.shape_distance(other) <= COPY_SHAPE_BITS
            && self.grey_distance(other) <= COPY_GREY_LEVELS
            && self.colour_distance(other) <= COPY_COLOUR_LEVELS
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

/// Keeps each near-copy ([`Fingerprint::is_copy_of`]) on the side of `split` its first picture (in dataset
/// order) is on, so that no picture is validated against its own copy in training (which inflates the
/// accuracy). Returns how many pictures moved.
pub fn keep_copies_together(split: &mut Split, dataset: &Dataset) -> usize {
    let n = dataset.examples.len();
    let prints: Vec<&Fingerprint> = dataset.examples.iter().map(|e| e.image.fingerprint()).collect();
    let mut in_val = vec![None; n];
    for &i in &split.train {
        in_val[i] = Some(false);
    }
    for &i in &split.val {
        in_val[i] = Some(true);
    }
    let mut moved = 0;
    let mut original: Vec<usize> = (0..n).collect();
    for i in 0..n {
        if let Some(first) = (0..i).find(|&j| original[j] == j && prints[i].is_copy_of(prints[j])) {
            original[i] = first;
            if let (Some(side), Some(mine)) = (in_val[first], in_val[i])
                && side != mine
            {
                in_val[i] = Some(side);
                moved += 1;
            }
        }
    }
    if moved > 0 {
        split.train = (0..n).filter(|&i| in_val[i] == Some(false)).collect();
        split.val = (0..n).filter(|&i| in_val[i] == Some(true)).collect();
    }
    moved
}

/// `k` seeded stratified folds: each class's images shuffled and dealt out in turn, so that every
/// fold validates on about `1 / k` of each class and trains on the rest. A class of one image always
/// trains (it cannot also be validated without leaving its class out of training).
pub fn stratified_folds(labels: &[usize], classes: usize, k: usize, seed: u64) -> Vec<Split> {
    let k = k.max(2);
    let mut rng = Rng::new(seed);
    let mut fold_of = vec![usize::MAX; labels.len()];
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (index, &label) in labels.iter().enumerate() {
        by_class[label].push(index);
    }
    // Each class starts where the last one ended, so that small classes do not all land in fold 0.
    let mut next = 0;
    for mut members in by_class {
        if members.len() < 2 {
            continue;
        }
        rng.shuffle(&mut members);
        for index in members {
            fold_of[index] = next % k;
            next += 1;
        }
    }
    (0..k)
        .map(|fold| Split {
            train: (0..labels.len()).filter(|&i| fold_of[i] != fold).collect(),
            val: (0..labels.len()).filter(|&i| fold_of[i] == fold).collect(),
        })
        .collect()
}

/// A seeded stratified subsample of about `fraction` of each class (at least `min_per_class`, or the
/// whole class), as sorted indices.
pub fn stratified_subsample(
    labels: &[usize],
    classes: usize,
    fraction: f64,
    min_per_class: usize,
    seed: u64,
) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (index, &label) in labels.iter().enumerate() {
        by_class[label].push(index);
    }
    let mut kept = Vec::new();
    for mut members in by_class {
        rng.shuffle(&mut members);
        let n = ((members.len() as f64 * fraction.clamp(0.0, 1.0)).round() as usize)
            .max(min_per_class)
            .min(members.len());
        kept.extend_from_slice(&members[..n]);
    }
    kept.sort_unstable();
    kept
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
    fn copies_stay_on_their_original_side_of_the_split() {
        let photo = |seed: u32| {
            RgbImage::from_fn(64, 48, |x, y| {
                let v = (x * 7 + y * 13 + seed * 31) ^ (x * y * seed);
                image::Rgb([(v % 251) as u8, (v * 3 % 241) as u8, (v * 5 % 239) as u8])
            })
        };
        let mut examples: Vec<Example> = (0..12)
            .map(|i| Example {
                image: photo(i + 1).into(),
                label: (i % 2) as usize,
            })
            .collect();
        // Copies as re-encoding makes them (every value off by up to 2 levels) of picture 0 (same
        // class) and of picture 1 (filed in the other class).
        let copy = |i: u32| {
            let mut image = photo(i);
            for (n, value) in image.iter_mut().enumerate() {
                *value = value
                    .saturating_add((n % 3) as u8)
                    .saturating_sub((n % 5 == 0) as u8 * 2);
            }
            image
        };
        examples.push(Example {
            image: copy(1).into(),
            label: 0,
        });
        examples.push(Example {
            image: copy(2).into(),
            label: 0,
        });
        let dataset = Dataset {
            classes: vec!["a".into(), "b".into()],
            examples,
        };
        let prints: Vec<&Fingerprint> = dataset.examples.iter().map(|e| e.image.fingerprint()).collect();
        assert!(prints[0].is_copy_of(prints[12]), "a re-encoded copy is a copy");
        let mut distinct = (0..12).flat_map(|i| (0..i).map(move |j| (i, j)));
        assert!(
            distinct.all(|(i, j)| !prints[i].is_copy_of(prints[j])),
            "different pictures are not copies"
        );
        for seed in 0..20 {
            let mut split = Split {
                train: (0..14).filter(|i| (i + seed) % 3 != 0).collect(),
                val: (0..14).filter(|i| (i + seed) % 3 == 0).collect(),
            };
            keep_copies_together(&mut split, &dataset);
            for (original, copy) in [(0, 12), (1, 13)] {
                assert_eq!(split.val.contains(&original), split.val.contains(&copy), "seed {seed}");
            }
            assert_eq!(split.train.len() + split.val.len(), 14);
        }
    }

    #[test]
    fn folds_cover_every_image_once_and_keep_each_class_in_training() {
        let labels: Vec<usize> = [vec![0; 10], vec![1; 5], vec![2; 2], vec![3; 1]].concat();
        let folds = stratified_folds(&labels, 4, 3, 11);
        assert_eq!(folds.len(), 3);
        let mut validated = vec![0; labels.len()];
        for fold in &folds {
            assert_eq!(fold.train.len() + fold.val.len(), labels.len());
            for &i in &fold.val {
                validated[i] += 1;
            }
            for class in 0..4 {
                assert!(
                    fold.train.iter().any(|&i| labels[i] == class),
                    "class {class} trains in every fold"
                );
            }
            let zeros = fold.val.iter().filter(|&&i| labels[i] == 0).count();
            assert!((3..=4).contains(&zeros), "a third of class 0 validates: {zeros}");
        }
        assert_eq!(&validated[..17], &[1; 17], "each image validates exactly once");
        assert_eq!(validated[17], 0, "the class of one image always trains");
        assert_eq!(stratified_folds(&labels, 4, 3, 11), folds, "seeded");
        let kept = stratified_subsample(&labels, 4, 0.5, 2, 5);
        let count = |class| kept.iter().filter(|&&i| labels[i] == class).count();
        assert_eq!((0..4).map(count).collect::<Vec<_>>(), vec![5, 3, 2, 1]);
    }

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
