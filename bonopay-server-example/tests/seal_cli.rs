//! `bonopay seal` and `bonopay ledger verify` on a fresh data directory,
//! through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn bonopay(args: &[&str], data: &Path, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/invoice.json"
    ))
    .unwrap()
}

#[test]
fn seal_on_a_fresh_data_directory_then_replay_then_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = bonopay(&["seal"], &data, &example());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("created data directory"));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    let el = &first["security_elements"];
    assert_eq!(el["fiscal_number"], "1/1 FV");
    assert_eq!(el["fiscal_authority_id"], "BONOPAY-DEV-0001");
    assert_eq!(el["authentication_code"].as_str().unwrap().len(), 24);
    // No e-MCF here: Bono Pay's own elements, said to be so, never a DGI QR.
    assert_eq!(el["issuer"], "bonopay");
    assert!(el["qr"].as_str().unwrap().starts_with("BPV1:"), "{el}");
    assert_eq!(first["certification"]["state"], "not_certified");
    assert!(
        first["certification"]["rn"]
            .as_str()
            .unwrap()
            .ends_with("/1")
    );
    assert_eq!(first["dgi"]["total"], "70280.00");
    assert!(data.join("ledger.db").exists() && data.join("keys/seal-p256.pem").exists());

    // The same invoice again: idempotent by default.
    let again: Value =
        serde_json::from_slice(&bonopay(&["seal"], &data, &example()).stdout).unwrap();
    assert_eq!(again["replayed"], true);
    assert_eq!(again["security_elements"], first["security_elements"]);
    // Another key: a new invoice, the next number.
    let next = bonopay(
        &["seal", "--idempotency-key", "till-1/0002"],
        &data,
        &example(),
    );
    let next: Value = serde_json::from_slice(&next.stdout).unwrap();
    assert_eq!(next["security_elements"]["fiscal_number"], "2/2 FV");

    let v = bonopay(&["ledger", "verify"], &data, "");
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    let report: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["outlets"][0]["entries_verified"], 2);

    // Tamper with an amount behind the library's back: verify exits 1 and says where.
    let conn = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    conn.execute_batch(
        "UPDATE entries SET payload = CAST(REPLACE(CAST(payload AS TEXT), '\"3.000\"', '\"2.000\"') AS BLOB) WHERE seq = 1",
    )
    .unwrap();
    drop(conn);
    let v = bonopay(&["ledger", "verify"], &data, "");
    assert_eq!(v.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert!(
        report["outlets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("seq 1"),
        "{report}"
    );
}

#[test]
fn seal_refuses_invalid_invoices_with_exit_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bad = example().replace("\"quantity\": \"3\"", "\"quantity\": \"3.0001\"");
    let out = bonopay(&["seal"], &data, &bad);
    assert_eq!(out.status.code(), Some(2));
    let errors: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(errors[0]["code"], "too_many_decimals");
    assert!(
        !data.join("ledger.db").exists(),
        "nothing is created for a refused invoice"
    );
}
