//! Stable replay of the `parse_canonicalize` fuzz corpus.
//!
//! `cargo fuzz` needs nightly; this test runs on stable in CI. It compiles
//! the fuzz target's property (`fuzz/src/parse_canonicalize.rs`, the very
//! file the fuzz target calls) and runs every committed corpus file through
//! it: parse → canonicalize → parse → canonicalize is a fixed point, and the
//! tax computation does not panic.
//!
//! Naming convention in the corpus: `valid_*` files must be accepted by both
//! the parser and the tax computation (so the corpus keeps a seed of each
//! kind of invoice); `invalid_*` files must be refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../fuzz/src/parse_canonicalize.rs"]
mod parse_canonicalize;

use std::collections::BTreeSet;
use std::path::PathBuf;

use parse_canonicalize::{Outcome, check};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/parse_canonicalize")
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus at {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_without_violating_the_property() {
    let files = corpus();
    assert!(
        files.len() >= 10,
        "the corpus has only {} files",
        files.len()
    );
    let mut accepted = 0;
    for (name, data) in &files {
        // A property violation panics inside `check`; name the file first.
        eprintln!("replaying {name}");
        let outcome = check(data);
        if name.starts_with("valid_") {
            assert_eq!(
                outcome,
                Outcome::Accepted { computes: true },
                "{name} should parse and compute"
            );
            accepted += 1;
        } else if name.starts_with("invalid_") {
            assert!(
                matches!(outcome, Outcome::Refused | Outcome::NotUtf8),
                "{name} should be refused, got {outcome:?}"
            );
        }
    }
    assert!(accepted >= 6, "only {accepted} valid seeds");
}

#[test]
fn corpus_covers_every_invoice_type_and_mode() {
    let mut seen = BTreeSet::new();
    for (name, data) in corpus() {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let Ok(req) = bonopay_core::parse_invoice(text) else {
            continue;
        };
        seen.insert(req.invoice_type.as_str().to_owned());
        seen.insert(req.price_mode.as_str().to_owned());
        seen.insert(req.currency.as_str().to_owned());
        assert!(name.starts_with("valid_"), "{name} parses: name it valid_*");
    }
    for want in [
        "FV", "FT", "FA", "EV", "ET", "EA", "HT", "TTC", "CDF", "USD",
    ] {
        assert!(
            seen.contains(want),
            "no valid seed with {want}; seen {seen:?}"
        );
    }
}

#[test]
fn mutated_seeds_keep_the_property() {
    // A tiny deterministic stand-in for the fuzzer, so the stable test also
    // exercises inputs near the seeds: truncate each valid seed at several
    // points and flip single bytes.
    for (_, data) in corpus()
        .into_iter()
        .filter(|(n, _)| n.starts_with("valid_"))
    {
        let len = data.len();
        for cut in [1, len / 3, len / 2, len.saturating_sub(1)] {
            let _ = check(&data[..cut]);
        }
        for (i, pos) in (0..len).step_by(7).enumerate() {
            let mut m = data.clone();
            m[pos] ^= [0x01, 0x20, 0x0f, 0x40][i % 4];
            let _ = check(&m);
        }
    }
}
