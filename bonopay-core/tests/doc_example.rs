//! The canonical-bytes example in `docs/format.md` must be what the code
//! produces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

fn block(doc: &str, tag: &str) -> String {
    let open = format!("```{tag}\n");
    let start = doc.find(&open).unwrap_or_else(|| panic!("no block {tag}")) + open.len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].trim_end_matches('\n').to_owned()
}

#[test]
fn format_md_canonical_example_holds() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/format.md")).unwrap();
    let input = block(&doc, "json canonical-example-input");
    let output = block(&doc, "canonical-example-output");
    assert_eq!(bonopay_core::canonicalize(&input).unwrap(), output);
}
