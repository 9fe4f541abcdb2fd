//! Runs the real `bonopay` binary with stdin piped and checks stdout,
//! stderr and the exit code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

fn bonopay(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bonopay");
    {
        let mut input = child.stdin.take().expect("stdin");
        // The binary may exit before reading everything (e.g. on a usage
        // error); a broken pipe here is not the test's concern.
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().expect("wait for bonopay")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

/// The `(path, code)` pairs of the JSON error array on stderr.
fn error_pairs(o: &Output) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(stderr(o).trim_end()).unwrap_or_else(|e| {
        panic!("stderr is not a JSON array ({e}): {}", stderr(o));
    });
    let arr = v.as_array().expect("stderr holds a JSON array");
    assert!(!arr.is_empty(), "error array is empty");
    arr.iter()
        .map(|e| {
            assert!(e["message"].is_string(), "every error has a message: {e}");
            (
                e["path"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn has(pairs: &[(String, String)], path: &str, code: &str) -> bool {
    pairs.iter().any(|(p, c)| p == path && c == code)
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Half-up to 2 places, as the SFE rules round.
fn r2(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// A JSON money string as a Decimal.
fn money_at(v: &Value, pointer: &str) -> Decimal {
    let s = v
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in {v}"));
    dec(s
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} is not a string: {s}")))
}

/// TTC, three groups: B (16 %), C (8 %) and A (exempt).
const TTC_INVOICE: &str = r#"{
  "merchant_nif": "A1309334L",
  "outlet_id": "kin-01",
  "pos_terminal_id": "till-1",
  "cashier": {"id": "c1", "name": "Mbuyi"},
  "invoice_type": "FV",
  "price_mode": "TTC",
  "client": {"type": "PP"},
  "items": [
    {"code": "P1", "kind": "BIE", "name": "Savon", "unit_price": "116", "quantity": "1", "tax_group": "B"},
    {"code": "P2", "kind": "BIE", "name": "Farine", "unit_price": "27.00", "quantity": "4", "tax_group": "C"},
    {"code": "P3", "kind": "SER", "name": "Livraison", "unit_price": "12.5", "quantity": "2", "tax_group": "A"}
  ],
  "payments": [
    {"method": "ESPECES", "amount": "200"},
    {"method": "MOBILEMONEY", "amount": "49.00"}
  ]
}"#;

const USD_INVOICE: &str = r#"{
  "merchant_nif": "A1309334L",
  "outlet_id": "kin-01",
  "pos_terminal_id": "till-1",
  "cashier": {"id": "c1", "name": "Mbuyi"},
  "invoice_type": "FV",
  "price_mode": "TTC",
  "currency": "USD",
  "exchange_rate": {"rate": "2850.50", "date": "2025-06-02"},
  "client": {"type": "PM", "name": "Kivu Mining SARL", "nif": "A0700012B"},
  "items": [
    {"code": "S1", "kind": "SER", "name": "Audit", "unit_price": "116.00", "quantity": "1", "tax_group": "B"}
  ],
  "payments": [{"method": "VIREMENT", "amount": "116.00"}]
}"#;

#[test]
fn canonicalize_prints_the_library_bytes_without_newline() {
    let out = bonopay(&["canonicalize"], TTC_INVOICE.as_bytes());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stderr.is_empty(), "stderr: {}", stderr(&out));
    let expected = bonopay_core::parse_invoice(TTC_INVOICE)
        .unwrap()
        .canonical_string();
    assert_eq!(stdout(&out), expected);
    assert_eq!(out.stdout, expected.as_bytes());
    assert!(!out.stdout.ends_with(b"\n"));
    // Fixed-scale amounts, sorted keys, no whitespace.
    let s = stdout(&out);
    assert!(
        s.starts_with(
            r#"{"cashier":{"id":"c1","name":"Mbuyi"},"client":{"type":"PP"},"currency":"CDF","#
        ),
        "{s}"
    );
    assert!(
        s.contains(r#""quantity":"4.000","tax_group":"C","unit_price":"27.00""#),
        "{s}"
    );
    assert!(
        !s.contains(' ') && !s.contains('\n'),
        "no insignificant whitespace: {s}"
    );
}

#[test]
fn canonicalize_is_a_fixed_point() {
    let first = bonopay(&["canonicalize"], TTC_INVOICE.as_bytes());
    assert_eq!(first.status.code(), Some(0));
    let second = bonopay(&["canonicalize"], &first.stdout);
    assert_eq!(second.status.code(), Some(0), "stderr: {}", stderr(&second));
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn totals_of_a_ttc_invoice() {
    let out = bonopay(&["totals"], TTC_INVOICE.as_bytes());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stderr.is_empty(), "stderr: {}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON");

    // By hand, from the input: in TTC a group's total is its lines' sum, the
    // base is total / (1 + rate) rounded half-up, and the VAT is the rest.
    let b_total = dec("116") * dec("1");
    let c_total = dec("27.00") * dec("4");
    let a_total = dec("12.5") * dec("2");
    let b_base = r2(b_total / dec("1.16"));
    let c_base = r2(c_total / dec("1.08"));
    let (b_vat, c_vat) = (b_total - b_base, c_total - c_base);
    let ttc = b_total + c_total + a_total;
    let vat = b_vat + c_vat;
    assert_eq!((b_base, b_vat), (dec("100.00"), dec("16.00")));
    assert_eq!((c_base, c_vat), (dec("100.00"), dec("8.00")));
    assert_eq!(ttc, dec("249.00"));

    assert_eq!(v["rate_table"], "dgi-sfe-2025-05");
    assert_eq!(v["price_mode"], "TTC");
    assert_eq!(v["currency"], "CDF");
    assert_eq!(money_at(&v, "/totals/ttc"), ttc);
    assert_eq!(money_at(&v, "/totals/vat"), vat);
    assert_eq!(money_at(&v, "/totals/ht"), ttc - vat);
    assert_eq!(money_at(&v, "/totals/specific_tax"), Decimal::ZERO);
    assert_eq!(money_at(&v, "/dgi/total"), ttc);
    assert_eq!(money_at(&v, "/dgi/vtotal"), vat);
    // Amounts are strings with exactly two places.
    assert_eq!(v["totals"]["vat"], "24.00");
    assert_eq!(v["dgi"]["total"], "249.00");

    let groups = v["groups"].as_array().unwrap();
    let codes: Vec<&str> = groups
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["A", "B", "C"]);
    let b = &groups[1];
    assert_eq!(
        (b["base"].as_str(), b["tax"].as_str(), b["total"].as_str()),
        (Some("100.00"), Some("16.00"), Some("116.00"))
    );
    assert_eq!(b["treatment"], "vat");
    assert_eq!(groups[0]["tax"], "0.00");
    assert_eq!(groups[0]["base"], "25.00");

    let payments = v["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 2);
    assert!(v.get("cdf").is_none(), "a CDF invoice has no conversion");
    assert!(stdout(&out).ends_with("}\n"));
}

#[test]
fn invalid_invoice_gives_exit_2_and_errors_on_stderr() {
    let bad = TTC_INVOICE
        .replacen(r#""quantity": "1""#, r#""quantity": "1.2345""#, 1)
        .replacen(
            r#""merchant_nif""#,
            r#""fiscal_number": "FV-0001", "merchant_nif""#,
            1,
        );
    for cmd in ["canonicalize", "totals"] {
        let out = bonopay(&[cmd], bad.as_bytes());
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert!(out.stdout.is_empty(), "{cmd}: nothing on stdout");
        let pairs = error_pairs(&out);
        assert!(
            has(&pairs, "items[0].quantity", "too_many_decimals"),
            "{cmd}: {pairs:?}"
        );
        assert!(
            has(&pairs, "fiscal_number", "security_element_forbidden"),
            "{cmd}: {pairs:?}"
        );
    }
}

#[test]
fn payments_mismatch_is_a_totals_error_only() {
    let bad = TTC_INVOICE.replacen(r#""amount": "49.00""#, r#""amount": "48.99""#, 1);
    let out = bonopay(&["totals"], bad.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    assert!(has(&error_pairs(&out), "payments", "payments_mismatch"));
    // canonicalize checks the request, not the sums.
    assert_eq!(
        bonopay(&["canonicalize"], bad.as_bytes()).status.code(),
        Some(0)
    );
}

#[test]
fn usd_invoice_needs_a_reference_rate() {
    let out = bonopay(&["totals"], USD_INVOICE.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let pairs = error_pairs(&out);
    assert!(
        has(&pairs, "exchange_rate.rate", "reference_rate_unavailable"),
        "{pairs:?}"
    );
}

#[test]
fn usd_invoice_with_a_reference_rate() {
    let out = bonopay(
        &["totals", "--reference-rate", "USD=2850.50"],
        USD_INVOICE.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["currency"], "USD");
    assert_eq!(money_at(&v, "/totals/ttc"), dec("116.00"));
    assert_eq!(money_at(&v, "/totals/vat"), dec("16.00"));
    // In CDF: total and base are converted and rounded, the VAT is the rest.
    let rate = dec("2850.50");
    let total = r2(dec("116.00") * rate);
    let base = r2(dec("100.00") * rate);
    assert_eq!(total, dec("330658.00"));
    assert_eq!(money_at(&v, "/dgi/total"), total);
    assert_eq!(money_at(&v, "/dgi/vtotal"), total - base);
    assert_eq!(v["dgi"]["vtotal"], "45608.00");
    assert_eq!(v["cdf"]["currency"], "CDF");
    assert_eq!(v["cdf"]["exchange_rate"], "2850.50");
    assert_eq!(money_at(&v, "/cdf/totals/ttc"), total);
}

#[test]
fn usd_rate_far_from_the_reference_is_refused() {
    // 2850.50 is 5 % below 3000: outside the 1 % tolerance.
    let out = bonopay(
        &["totals", "--reference-rate", "USD=3000"],
        USD_INVOICE.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(has(
        &error_pairs(&out),
        "exchange_rate.rate",
        "exchange_rate_out_of_tolerance"
    ));
    // Within 1 %: accepted.
    let out = bonopay(
        &["totals", "--reference-rate=USD=2870"],
        USD_INVOICE.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

#[test]
fn invalid_json_gives_exit_2() {
    for cmd in ["canonicalize", "totals"] {
        for input in [&b"{\"merchant_nif\": "[..], b"", b"[1, 2", b"null"] {
            let out = bonopay(&[cmd], input);
            assert_eq!(out.status.code(), Some(2), "{cmd} {input:?}");
            assert!(out.stdout.is_empty());
            let pairs = error_pairs(&out);
            let codes: Vec<&str> = pairs.iter().map(|(_, c)| c.as_str()).collect();
            assert!(
                codes
                    .iter()
                    .any(|c| ["invalid_json", "wrong_type"].contains(c)),
                "{cmd} {input:?}: {pairs:?}"
            );
        }
    }
}

#[test]
fn stdin_that_is_not_utf8_gives_exit_2() {
    let out = bonopay(&["canonicalize"], b"{\"a\": \"\xff\xfe\"}");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("UTF-8"), "{}", stderr(&out));
}

#[test]
fn bad_options_give_exit_2() {
    for args in [
        &["totals", "--reference-rate", "USD=2850,50"][..],
        &["totals", "--reference-rate", "USD=2.85e3"],
        &["totals", "--reference-rate", "XAF=600"],
        &["totals", "--reference-rate", "2850.50"],
        &[
            "totals",
            "--reference-rate",
            "USD=2850.50",
            "--reference-rate",
            "USD=2851",
        ],
        &["totals", "--no-such-option"],
        &["no-such-command"],
        &[],
    ] {
        let out = bonopay(args, TTC_INVOICE.as_bytes());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn help_and_version_exit_0() {
    for args in [&["--help"][..], &["--version"], &["totals", "--help"]] {
        let out = bonopay(args, b"");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn rate_table_file() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("bonopay-cli-rate-table.json");
    std::fs::write(
        &path,
        r#"{"version": "test-10", "groups": [
            {"group": "A", "label": "Exonéré", "rate_percent": "0", "treatment": "no_invoiced_vat"},
            {"group": "B", "label": "Taxable 10%", "rate_percent": "10", "treatment": "vat"}
        ]}"#,
    )
    .unwrap();
    let invoice = TTC_INVOICE
        .replacen(r#""unit_price": "116""#, r#""unit_price": "110""#, 1)
        .replacen(r#""tax_group": "C""#, r#""tax_group": "A""#, 1)
        .replacen(r#""amount": "49.00""#, r#""amount": "43.00""#, 1);
    let p = path.to_str().unwrap();
    let out = bonopay(&["totals", "--rate-table", p], invoice.as_bytes());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["rate_table"], "test-10");
    // 110 TTC at 10 %: base 100, VAT 10; A lines 108 + 25 untaxed.
    assert_eq!(money_at(&v, "/totals/vat"), dec("10.00"));
    assert_eq!(money_at(&v, "/totals/ttc"), dec("243.00"));

    // The same invoice in group C, which this table lacks.
    let out = bonopay(&["totals", "--rate-table", p], TTC_INVOICE.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    assert!(has(
        &error_pairs(&out),
        "items[1].tax_group",
        "unknown_tax_rate"
    ));

    // Unreadable and malformed tables.
    let missing = dir.join("no-such-rate-table.json");
    let out = bonopay(
        &["totals", "--rate-table", missing.to_str().unwrap()],
        TTC_INVOICE.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("rate table"), "{}", stderr(&out));
    let broken = dir.join("bonopay-cli-broken-table.json");
    std::fs::write(&broken, "{\"version\": 1}").unwrap();
    let out = bonopay(
        &["totals", "--rate-table", broken.to_str().unwrap()],
        TTC_INVOICE.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}
