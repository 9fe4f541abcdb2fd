//! Shared helpers of the server tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]

use serde_json::Value;

pub const NIF_A: &str = "A1309334L";
pub const NIF_B: &str = "B0000001X";
pub const OUTLET_A: &str = "kin-gombe-01";
pub const OUTLET_A2: &str = "kin-limete-02";
pub const OUTLET_B: &str = "lub-01";

/// `examples/invoice.json` (merchant A, outlet kin-gombe-01).
pub fn example() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/invoice.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

/// The example for another merchant and outlet.
pub fn invoice_for(nif: &str, outlet: &str) -> Value {
    let mut v = example();
    v["merchant_nif"] = nif.into();
    v["outlet_id"] = outlet.into();
    v
}
