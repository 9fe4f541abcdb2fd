//! Replays the published canonical vectors. Their expected values were
//! computed by the independent Python implementation in
//! `tools/vectors/reference.py`, so this is an interop test, not a
//! self-comparison.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;

use bonopay_core::parse_invoice;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn vectors() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/canonical.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_canonical_vector_matches() {
    let v = vectors();
    assert!(v.len() >= 12, "at least 12 published cases");
    for case in &v {
        let name = case["name"].as_str().unwrap();
        let input = serde_json::to_string(&case["input"]).unwrap();
        let req = parse_invoice(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        let canonical = req.canonical_string();
        assert_eq!(canonical, case["canonical"].as_str().unwrap(), "{name}");
        let digest = hex::encode(Sha256::digest(canonical.as_bytes()));
        assert_eq!(digest, case["sha256"].as_str().unwrap(), "{name}");
        assert_eq!(req.canonical_sha256(), digest, "{name}");
    }
}

#[test]
fn vectors_cover_what_the_contract_promises() {
    let v = vectors();
    let inputs: Vec<&Value> = v.iter().map(|c| &c["input"]).collect();
    let types: BTreeSet<&str> = inputs
        .iter()
        .map(|i| i["invoice_type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 6, "every invoice type: {types:?}");
    let modes: BTreeSet<&str> = inputs
        .iter()
        .map(|i| i["price_mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes.len(), 2);
    assert!(inputs.iter().any(|i| i["currency"] == "USD"));
    assert!(inputs.iter().any(|i| i.get("credit_note").is_some()));
    let all = serde_json::to_string(&v).unwrap();
    assert!(
        all.contains("é") && all.contains("ɔ"),
        "French accents and Lingala letters"
    );
}

#[test]
fn the_two_spellings_of_the_same_invoice_share_bytes() {
    let v = vectors();
    let find = |n: &str| v.iter().find(|c| c["name"] == n).unwrap()["canonical"].clone();
    assert_eq!(
        find("fv-ttc-minimal"),
        find("fv-ttc-same-invoice-other-spelling")
    );
}
