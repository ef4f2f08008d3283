//! Path resolution for files served beneath a root: no generated path escapes it.

use proptest::prelude::*;
use ringmaster::files::relative_path;
use std::path::{Component, Path};

/// Paths built from the pieces that escapes are made of.
fn hostile_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%2F".to_string()),
        Just("%00".to_string()),
        Just("%".to_string()),
        Just("%5c".to_string()),
        Just("\\".to_string()),
        Just("a".to_string()),
        Just("%41".to_string()),
        Just("\u{0}".to_string()),
        "[a-z%0-9./]{1,3}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn no_generated_path_escapes_the_root(path in hostile_path()) {
        if let Ok(rel) = relative_path(&path) {
            prop_assert!(!rel.starts_with('/'), "{path:?} gave {rel:?}");
            prop_assert!(!rel.contains('\0'));
            let root = Path::new("/srv/root");
            let joined = root.join(&rel);
            prop_assert!(joined.starts_with(root), "{path:?} gave {rel:?}");
            for c in Path::new(&rel).components() {
                prop_assert!(
                    matches!(c, Component::Normal(_)),
                    "{path:?} gave {rel:?} with {c:?}"
                );
            }
        }
    }
}
