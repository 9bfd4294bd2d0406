//! How a chosen folder becomes classes (the app's folder input).

use graft_app::folders::group_by_class;
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
