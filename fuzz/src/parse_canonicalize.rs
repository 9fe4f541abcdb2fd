//! The `parse_canonicalize` property.
//!
//! For any input bytes that are UTF-8 and that `parse_invoice` accepts:
//!
//! 1. the canonical string re-parses, and canonicalizing that again gives
//!    the same bytes (the canonical form is a fixed point);
//! 2. the canonical string is already RFC 8785 JCS (`jcs` leaves it alone);
//! 3. `validate` accepts the parsed request (parse and validate agree);
//! 4. the tax computation does not panic, with or without a reference rate,
//!    and when the original request computes, its canonical form computes
//!    to the same result (dropping client-computed totals only drops checks).
//!
//! A violation panics, which is what both libFuzzer and `cargo test` report.
//!
//! This file is compiled twice: by the fuzz crate (`bonopay_fuzz`) and, via
//! `#[path]`, by the stable corpus replay test in `bonopay-server-example`.
//! Keep it free of any dependency but `bonopay-core`, `bonopay-tax` and std.

use std::collections::BTreeMap;

use bonopay_core::{Currency, ExchangeRate, parse_invoice};
use bonopay_tax::{FixedReferenceRates, NoReferenceRates, RateTable, compute};

/// What one input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not UTF-8: never reaches the parser.
    NotUtf8,
    /// Refused by `parse_invoice`.
    Refused,
    /// Accepted by `parse_invoice`; `computes` tells whether `compute`
    /// (with a USD reference rate of 2850) accepted it too.
    Accepted {
        /// `compute` returned `Ok`.
        computes: bool,
    },
}

/// The reference rate the property uses for USD invoices.
pub const USD_REFERENCE_RATE: &str = "2850";

/// Checks the property on `data`, panicking on a violation.
#[allow(clippy::panic)]
#[must_use]
pub fn check(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::NotUtf8;
    };
    let Ok(req) = parse_invoice(text) else {
        return Outcome::Refused;
    };

    // 1. Fixed point.
    let canon = req.canonical_string();
    if canon.as_bytes() != req.canonical_bytes().as_slice() {
        panic!("canonical_string and canonical_bytes differ");
    }
    let again = match parse_invoice(&canon) {
        Ok(r) => r,
        Err(e) => panic!("the canonical form is refused: {e}\ncanonical: {canon}"),
    };
    let canon2 = again.canonical_string();
    if canon != canon2 {
        panic!("canonical form is not a fixed point:\nfirst:  {canon}\nsecond: {canon2}");
    }

    // 2. Already JCS.
    match bonopay_core::jcs(&canon) {
        Ok(j) if j == canon => {}
        Ok(j) => panic!("canonical form is not JCS:\nours: {canon}\njcs:  {j}"),
        Err(e) => panic!("jcs refuses the canonical form: {e}\ncanonical: {canon}"),
    }

    // 3. validate agrees with parse.
    if let Err(e) = bonopay_core::validate(&req) {
        panic!("validate refuses a parsed request: {e}\ncanonical: {canon}");
    }

    // 4. Tax computation.
    let table = RateTable::dgi_2025();
    let mut rates = BTreeMap::new();
    if let Ok(usd) = ExchangeRate::parse(USD_REFERENCE_RATE) {
        rates.insert(Currency::Usd, usd.value());
    }
    let rates = FixedReferenceRates(rates);
    let first = compute(&req, &table, &rates);
    let _ = compute(&req, &table, &NoReferenceRates);
    let second = compute(&again, &table, &rates);
    if let Ok(first) = &first {
        match &second {
            Ok(second) if second == first => {}
            other => panic!(
                "the canonical form computes differently: {first:?} vs {other:?}\ncanonical: {canon}"
            ),
        }
    }
    Outcome::Accepted {
        computes: first.is_ok(),
    }
}
