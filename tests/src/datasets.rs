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
