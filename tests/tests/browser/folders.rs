//! How a chosen or dropped folder becomes classes (the app's folder input and drops).

use graft_app::folders::{group_by_class, group_dropped, visible};
use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen_test]
fn subfolders_of_the_chosen_folder_are_the_classes() {
    let paths: Vec<String> = [
        "pets/dogs/a.jpg",
        "pets/cats/b.jpg",
        "pets/cats/kittens/c.jpg",
        "pets/readme.txt",
        "pets/.thumbs/d.jpg",
        "pets/dogs/e.png",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    let (classes, loose) = group_by_class(&paths);
    assert_eq!(
        classes,
        vec![("cats".to_string(), vec![1, 2]), ("dogs".to_string(), vec![0, 5])],
        "sorted by name; nested folders belong to their top subfolder; hidden ones are skipped"
    );
    assert_eq!(loose, vec!["pets/readme.txt".to_string()]);
}

fn owned(paths: &[&str]) -> Vec<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

#[wasm_bindgen_test]
fn a_dropped_folder_of_pictures_is_a_class_and_a_folder_of_folders_is_chosen() {
    let paths = owned(&[
        "cats/a.jpg",          // a folder of pictures: class "cats"
        "cats/.DS_Store",      // hidden
        "pets/dogs/b.jpg",     // a folder of folders: class "dogs"
        "pets/dogs/old/c.jpg", // deeper: still "dogs"
        "pets/notes.txt",      // loose in a chosen folder
        "stray.jpg",           // dropped by itself
        "more/cats/d.jpg",     // another dropped folder's "cats": the same class
        "empty/.hidden/e.jpg", // only hidden below: neither a class nor loose
    ]);
    let (classes, loose) = group_dropped(&paths);
    assert_eq!(
        classes,
        vec![("cats".to_string(), vec![0, 6]), ("dogs".to_string(), vec![2, 3])]
    );
    assert_eq!(loose, owned(&["pets/notes.txt", "stray.jpg"]));
}

#[wasm_bindgen_test]
fn everything_visible_in_a_drop_onto_a_class_joins_it() {
    let paths = owned(&[
        "a.jpg",
        "trip/b.jpg",
        "trip/.thumbs/c.jpg",
        "trip/day 2/d.jpg",
        ".e.jpg",
    ]);
    assert_eq!(visible(&paths), vec![0, 1, 3]);
}
