//! The 1000 ImageNet-1k class names, in class-index order (torchvision's list).

use std::sync::OnceLock;

const CLASSES: &str = include_str!("imagenet_classes.txt");

/// All 1000 class names; index = class id.
pub fn class_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| CLASSES.lines().collect())
}

/// The name of ImageNet class `class`, if it exists.
pub fn class_name(class: usize) -> Option<&'static str> {
    class_names().get(class).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_1000_classes_in_the_usual_order() {
        assert_eq!(class_names().len(), 1000);
        assert_eq!(class_name(0), Some("tench"));
        assert_eq!(class_name(285), Some("Egyptian cat"));
        assert_eq!(class_name(967), Some("espresso"));
        assert_eq!(class_name(999), Some("toilet tissue"));
        assert_eq!(class_name(1000), None);
    }
}
