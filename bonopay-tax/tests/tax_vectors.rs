//! Replays `tests/vectors/tax.json`, whose expected values the independent
//! Python implementation (`tools/vectors/reference.py`) computed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};

use bonopay_core::{Currency, parse_invoice};
use bonopay_tax::{FixedReferenceRates, RateTable, compute};
use rust_decimal::Decimal;
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/tax.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rates(case: &Value) -> FixedReferenceRates {
    let mut m = BTreeMap::new();
    if let Some(obj) = case.get("reference_rates").and_then(Value::as_object) {
        for (k, v) in obj {
            let cur = Currency::from_code(k).unwrap();
            m.insert(cur, v.as_str().unwrap().parse::<Decimal>().unwrap());
        }
    }
    FixedReferenceRates(m)
}

#[test]
fn every_tax_vector_matches() {
    let v = vectors();
    assert!(v.len() >= 20);
    let table = RateTable::dgi_2025();
    for case in &v {
        let name = case["name"].as_str().unwrap();
        let req =
            parse_invoice(&case["invoice"].to_string()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = &case["expected"];
        match compute(&req, &table, &rates(case)) {
            Ok(result) => {
                assert!(
                    expected.get("errors").is_none(),
                    "{name}: expected errors, computed {result:?}"
                );
                let got = serde_json::to_value(&result).unwrap();
                assert_eq!(&got, expected, "{name}");
            }
            Err(errs) => {
                let want = expected["errors"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{name}: unexpected {errs}"));
                let got: BTreeSet<(String, String)> = errs
                    .errors()
                    .iter()
                    .map(|e| (e.path.clone(), e.code.to_string()))
                    .collect();
                for w in want {
                    let key = (
                        w["path"].as_str().unwrap().to_owned(),
                        w["code"].as_str().unwrap().to_owned(),
                    );
                    assert!(got.contains(&key), "{name}: missing {key:?} in {errs}");
                }
                assert_eq!(got.len(), want.len(), "{name}: {errs}");
            }
        }
    }
}

#[test]
fn vectors_cover_every_group_mode_and_edge() {
    let v = vectors();
    let mut groups = BTreeSet::new();
    let mut modes = BTreeSet::new();
    let (mut adjusted, mut usd, mut credit, mut specific) = (false, false, false, false);
    for case in &v {
        let inv = &case["invoice"];
        modes.insert(inv["price_mode"].as_str().unwrap().to_owned());
        for it in inv["items"].as_array().unwrap() {
            groups.insert(it["tax_group"].as_str().unwrap().to_owned());
            specific |= it.get("specific_tax").is_some();
        }
        usd |= inv["currency"] == "USD";
        credit |= inv.get("credit_note").is_some();
        if let Some(gs) = case["expected"]["groups"].as_array() {
            adjusted |= gs.iter().any(|g| g["rounding_adjusted"] == true);
        }
    }
    assert_eq!(groups.len(), 14, "{groups:?}");
    assert_eq!(modes.len(), 2);
    assert!(adjusted && usd && credit && specific);
}
