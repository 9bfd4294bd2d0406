//! Files grouped into classes by their folders, for a chosen folder and for folders dropped onto the
//! page. Pure, so it is tested without a browser's file picker or a drag.
//!
//! Choosing a folder: each subfolder of the chosen folder is a class (its name the class name), deeper
//! folders belong to their top subfolder, files directly in the chosen folder belong to no class.
//! Dropping: a dropped folder with subfolders is taken as if it had been chosen; a dropped folder of
//! pictures alone is one class named after it; files dropped outside any folder belong to no class.
//! Hidden files and folders (a leading `.`) are skipped everywhere.

/// The classes found in `paths` (`chosen/class/.../file`, as `webkitRelativePath` gives them), sorted by
/// name, each with the indices of its files; and the paths that are in no class.
pub fn group_by_class(paths: &[String]) -> (Vec<(String, Vec<usize>)>, Vec<String>) {
    let mut classes: Vec<(String, Vec<usize>)> = Vec::new();
    let mut loose = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let parts = parts(path);
        match parts.as_slice() {
            _ if is_hidden(&parts) => {}
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

/// The classes in what was dropped onto the page: `paths` are relative to the drop (`folder/.../file`
/// for a dropped folder, `file` for a file dropped by itself). Same result shape as [`group_by_class`];
/// classes of the same name from different dropped folders are one class.
pub fn group_dropped(paths: &[String]) -> (Vec<(String, Vec<usize>)>, Vec<String>) {
    // The dropped folders that have a subfolder (with a visible file in it): those are chosen folders.
    let mut containers: Vec<&str> = Vec::new();
    for path in paths {
        let parts = parts(path);
        if let [top, _, _, ..] = parts.as_slice()
            && !is_hidden(&parts)
            && !containers.contains(top)
        {
            containers.push(top);
        }
    }
    // A folder of pictures alone is as if its parent had been chosen; a lone file stays loose.
    let as_chosen: Vec<String> = paths
        .iter()
        .map(|path| {
            let parts = parts(path);
            match parts.as_slice() {
                [top, _, ..] if !containers.contains(top) => format!("dropped/{path}"),
                _ => path.clone(),
            }
        })
        .collect();
    // (A prefixed path has three parts or more: it is in a class or hidden, never loose.)
    group_by_class(&as_chosen)
}

/// The files of `paths` that are not hidden, in order: what joins a class a folder is dropped onto.
pub fn visible(paths: &[String]) -> Vec<usize> {
    (0..paths.len()).filter(|&i| !is_hidden(&parts(&paths[i]))).collect()
}

fn parts(path: &str) -> Vec<&str> {
    path.split('/').filter(|p| !p.is_empty()).collect()
}

fn is_hidden(parts: &[&str]) -> bool {
    parts.iter().any(|p| p.starts_with('.'))
}
