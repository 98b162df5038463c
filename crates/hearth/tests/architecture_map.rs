//! ARCHITECTURE.md must stay true: every path it names exists in the tree.

#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn every_path_in_the_code_map_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut checked = 0;
    for (i, part) in text.split('`').enumerate() {
        let looks_like_path = i % 2 == 1 && part.contains('/') && !part.contains(' ') && !part.starts_with('-');
        if looks_like_path {
            assert!(
                root.join(part).exists(),
                "ARCHITECTURE.md names {part}, which does not exist"
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} paths found: did the format change?");
}
