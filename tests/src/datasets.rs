//! The datasets `cargo xtask datasets` builds from package data (natively only).

use std::path::PathBuf;

/// `$GRAFT_DATASETS/<name>` (set by `cargo xtask test`), or `~/.cache/graft/datasets/<name>`; panics
/// with the command to run when it is missing.
pub fn path(name: &str) -> PathBuf {
    let root = std::env::var_os("GRAFT_DATASETS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/graft/datasets"),
        PathBuf::from,
    );
    let path = root.join(name);
    assert!(
        path.is_dir(),
        "{} is missing: run `cargo xtask datasets` first",
        path.display()
    );
    path
}

/// `total` photo-sized JPEGs made from the Tux Paint photos, for scale runs: each a random crop (40 to
/// 100% of the short side) of a photo of its class, mirrored half the time, its long side scaled to
/// 320 px, at JPEG quality 85; spread evenly over the six classes. Generated once (seeded, so the same
/// files every time) into `<datasets>/scale-photos-<total>/<class>/`.
pub fn scale_photos(total: usize) -> PathBuf {
    use graft_engine::data::Rng;
    use image::imageops::{self, FilterType};

    let source = path("tuxpaint-photos");
    let out = source.with_file_name(format!("scale-photos-{total}"));
    let done = out.join(".complete-v2");
    if done.exists() {
        return out;
    }
    let _ = std::fs::remove_dir_all(&out);
    let mut classes: Vec<PathBuf> = std::fs::read_dir(&source)
        .expect("tuxpaint-photos")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let mut rng = Rng::new(10_000);
    for (index, class) in classes.iter().enumerate() {
        let mut photos: Vec<PathBuf> = std::fs::read_dir(class)
            .expect("class")
            .map(|e| e.expect("entry").path())
            .collect();
        photos.sort();
        let photos: Vec<image::RgbImage> = photos
            .iter()
            .filter_map(|p| image::open(p).ok())
            .map(|i| i.to_rgb8())
            .collect();
        let dir = out.join(class.file_name().expect("named"));
        std::fs::create_dir_all(&dir).expect("output folder");
        let count = total / classes.len() + usize::from(index < total % classes.len());
        for n in 0..count {
            let photo = &photos[n % photos.len()];
            let (w, h) = photo.dimensions();
            let side = (f64::from(w.min(h)) * rng.uniform(0.4, 1.0)) as u32;
            let (cw, ch) = if w >= h {
                ((side * 4 / 3).min(w), side)
            } else {
                (side, (side * 4 / 3).min(h))
            };
            let x = rng.below((w - cw + 1) as usize) as u32;
            let y = rng.below((h - ch + 1) as usize) as u32;
            let mut crop = imageops::crop_imm(photo, x, y, cw, ch).to_image();
            if rng.unit() < 0.5 {
                imageops::flip_horizontal_in_place(&mut crop);
            }
            let scale = 320.0 / f64::from(cw.max(ch));
            let view = imageops::resize(
                &crop,
                ((f64::from(cw) * scale) as u32).max(1),
                ((f64::from(ch) * scale) as u32).max(1),
                FilterType::Triangle,
            );
            // Crops of a small photo can coincide: nudge one pixel by the picture's number so that no
            // two files are the same picture (the app refuses duplicates).
            let mut view = view;
            let pixel = view.get_pixel_mut(0, 0);
            pixel.0 = [(n % 256) as u8, (n / 256 % 256) as u8, index as u8 * 40];
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
                .encode_image(&view)
                .expect("encode");
            std::fs::write(dir.join(format!("{n:05}.jpg")), bytes).expect("write");
        }
    }
    std::fs::write(&done, "").expect("marker");
    out
}

/// The first `n` pictures (by file name) of a Tux Paint photo class (`birds`, `mammals`, …), as absolute
/// paths.
pub fn tuxpaint_photos(class: &str, n: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path("tuxpaint-photos").join(class))
        .unwrap_or_else(|e| panic!("the {class} photos (cargo xtask datasets): {e}"))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files.truncate(n);
    files
}

/// The first `n` distinct pictures (by file name) of an animal silhouette class (`cat`, `dog`, …), as
/// absolute paths: the dataset repeats some silhouettes, and the app refuses a picture it already has.
pub fn distinct_silhouettes(class: &str, n: usize) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path("animal-silhouettes").join(class))
        .unwrap_or_else(|e| panic!("the {class} silhouettes (cargo xtask datasets): {e}"))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut seen = std::collections::HashSet::new();
    files
        .into_iter()
        .filter(|path| seen.insert(std::fs::read(path).expect("read a picture")))
        .take(n)
        .map(|p| p.display().to_string())
        .collect()
}
