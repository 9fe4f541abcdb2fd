//! Recomputes the worked example of `docs/format.md` ("Ledger chain") with
//! the library: every header byte and hash in the document must match.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;

use bonopay_core::InvoiceType;
use bonopay_ledger::{EntryKind, EntryMeta, Head, genesis_hash};
use serde_json::Value;

fn example() -> BTreeMap<String, String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/format.md")).unwrap();
    let start = doc
        .find("```chain-example\n")
        .expect("worked example block")
        + "```chain-example\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end]
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(" = ").unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn worked_example_in_format_md_recomputes() {
    let ex = example();
    let outlet = &ex["outlet"];
    assert_eq!(hex::encode(genesis_hash(outlet)), ex["genesis"]);
    let mut head = Head::genesis(outlet);
    let mut n = 0;
    while let Some(header) = ex.get(&format!("header[{}]", n + 1)) {
        n += 1;
        let h: Value = serde_json::from_str(header).unwrap();
        let meta = EntryMeta {
            kind: EntryKind::from_code(h["kind"].as_str().unwrap()).unwrap(),
            invoice_type: h["counters"]["type"]
                .as_str()
                .map(|t| InvoiceType::from_code(t).unwrap()),
            fiscal_year: h["fiscal_year"].as_i64().unwrap() as i32,
            time_ms: h["time_ms"].as_i64().unwrap(),
        };
        let payload = ex[&format!("payload[{n}]")].clone().into_bytes();
        let entry = head.prepare(&meta).unwrap().seal(payload);
        assert_eq!(
            String::from_utf8(entry.header.clone()).unwrap(),
            *header,
            "header[{n}]"
        );
        assert_eq!(
            hex::encode(entry.entry_hash),
            ex[&format!("entry_hash[{n}]")],
            "entry_hash[{n}]"
        );
        head = head.advance(&entry);
    }
    assert_eq!(n, 3);
}
