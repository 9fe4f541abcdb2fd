//! RFC 8785 vectors (cyberphone/json-canonicalization test data), replayed
//! as they are. A copy lives in `tests/vectors/jcs` so a clone is
//! self-contained; when the workplace's `../shared/vectors/jcs` is present
//! the copy is checked against it byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/jcs")
}

#[test]
fn every_jcs_vector_canonicalizes_exactly() {
    let mut n = 0;
    for entry in fs::read_dir(dir().join("input")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let input = fs::read_to_string(&path).unwrap();
        let expected = fs::read(dir().join("output").join(&name)).unwrap();
        let got = bonopay_core::jcs(&input).unwrap();
        assert_eq!(got.as_bytes(), &expected[..], "vector {name:?}");
        n += 1;
    }
    assert!(n >= 6, "expected the 6 upstream vectors, found {n}");
}

#[test]
fn copies_match_the_shared_originals() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/jcs");
    if !shared.exists() {
        eprintln!("../shared not present; skipping the copy check");
        return;
    }
    for sub in ["input", "output"] {
        for entry in fs::read_dir(shared.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let ours = dir().join(sub).join(path.file_name().unwrap());
            assert_eq!(
                fs::read(&path).unwrap(),
                fs::read(&ours).unwrap(),
                "{ours:?} differs from {path:?}"
            );
        }
    }
}

#[test]
fn jcs_refuses_duplicate_keys() {
    let err = bonopay_core::jcs(r#"{"a":1,"b":{"c":1,"c":2}}"#).unwrap_err();
    assert!(err.to_string().contains("b.c"), "{err}");
}
