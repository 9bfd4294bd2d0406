//! A chosen folder's files grouped into classes: each subfolder of the chosen folder is a class (its
//! name the class name), deeper folders belong to their top subfolder, files directly in the chosen
//! folder belong to no class. Pure, so it is tested without a browser's file picker.

/// The classes found in `paths` (`chosen/class/.../file`, as `webkitRelativePath` gives them), sorted by
/// name, each with the indices of its files; and the paths that are in no class.
pub fn group_by_class(paths: &[String]) -> (Vec<(String, Vec<usize>)>, Vec<String>) {
    let mut classes: Vec<(String, Vec<usize>)> = Vec::new();
    let mut loose = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let hidden = parts.iter().any(|p| p.starts_with('.'));
        match parts.as_slice() {
            _ if hidden => {}
            [_, class, _, ..] => match classes.iter_mut().find(|(c, _)| c == class) {
                Some((_, files)) => files.push(index),
                None => classes.push((class.to_string(), vec![index])),
            },
            _ => loose.push(path.clone()),
        }
    }
    classes.sort_by(|a, b| a.0.cmp(&b.0));
    (classes, loose)
}
