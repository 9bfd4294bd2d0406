//! Folders of pictures as people have them on disk (odd names, classes of different sizes), written
//! for a test from the generated photo-sized pictures, in a scratch folder removed afterwards.

use std::path::{Path, PathBuf};

use crate::datasets;

/// A fresh folder under the system's temporary directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("graft-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch folder");
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The generated photo-sized pictures (distinct files, six source classes), by source class.
pub fn sources() -> Vec<Vec<PathBuf>> {
    let root = datasets::scale_photos(720);
    let mut classes: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("scale photos")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    classes
        .iter()
        .map(|class| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(class)
                .expect("class")
                .map(|e| e.expect("entry").path())
                .collect();
            files.sort();
            files
        })
        .collect()
}

/// File names as people's folders have them: spaces, accents, capitals, brackets, several dots.
fn odd_name(n: usize) -> String {
    match n % 4 {
        0 => format!("IMG {n:04}.JPG"),
        1 => format!("été #{n} (copy).jpeg"),
        2 => format!("photo.{n}.final.jpg"),
        _ => format!("{n}_Ünïcode ✓.jpg"),
    }
}

/// Writes `folder/<class>/<odd name>` for each `(class, pictures)`, returning what the page must show
/// for them: each class with its count, sorted by name as a chosen folder's classes are.
pub fn write_classes(folder: &Path, classes: &[(&str, Vec<PathBuf>)]) -> Vec<(String, usize)> {
    let mut expected = Vec::new();
    for (class, pictures) in classes {
        let dir = folder.join(class);
        std::fs::create_dir_all(&dir).expect("class folder");
        for (n, picture) in pictures.iter().enumerate() {
            std::fs::copy(picture, dir.join(odd_name(n))).expect("copy");
        }
        expected.push((class.to_string(), pictures.len()));
    }
    expected.sort();
    expected
}

/// The pictures `from..from + n` of source class `source`.
pub fn take(sources: &[Vec<PathBuf>], source: usize, from: usize, n: usize) -> Vec<PathBuf> {
    let files = &sources[source % sources.len()];
    assert!(
        from + n <= files.len(),
        "source class {source} has {} pictures",
        files.len()
    );
    files[from..from + n].to_vec()
}
