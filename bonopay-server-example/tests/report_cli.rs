//! `bonopay report`, `bonopay export` and `bonopay verify` through the real
//! binary, on a data directory sealed with `bonopay seal`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;
use common::assert_exit_ok;

fn bonopay(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .args(args)
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

fn ok(out: &Output) -> String {
    assert_exit_ok(out);
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/invoice.json"
    ))
    .unwrap()
}

fn d(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn reports_export_and_offline_verify_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for key in ["k1", "k2"] {
        ok(&bonopay(
            &["seal", "--data-dir", d(&data), "--idempotency-key", key],
            &example(),
        ));
    }
    let outlet = "kin-gombe-01";
    let x = ok(&bonopay(
        &[
            "report",
            "x",
            "--data-dir",
            d(&data),
            "--outlet",
            outlet,
            "--json",
        ],
        "",
    ));
    let x: Value = serde_json::from_str(&x).unwrap();
    assert_eq!(x["report"]["stats"]["invoices"], 2);
    assert_eq!(
        x["report"]["stats"]["by_type"]["FV"]["amounts"]["ttc"],
        "140560.00"
    );
    let z = ok(&bonopay(
        &[
            "report",
            "z",
            "--data-dir",
            d(&data),
            "--outlet",
            outlet,
            "--paper",
            "58",
        ],
        "",
    ));
    assert!(z.contains("RAPPORT Z no 1"), "{z}");
    assert!(z.lines().all(|l| l.chars().count() <= 32), "{z}");
    let a = ok(&bonopay(
        &[
            "report",
            "a",
            "--seal",
            "--data-dir",
            d(&data),
            "--outlet",
            outlet,
            "--json",
        ],
        "",
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&a).unwrap()["report"]["a_number"],
        1
    );
    // An unconfigured outlet is refused with exit 2.
    let out = bonopay(
        &["report", "x", "--data-dir", d(&data), "--outlet", "nowhere"],
        "",
    );
    assert_eq!(out.status.code(), Some(2));

    let bundle = dir.path().join("bundle.jsonl");
    let msg = ok(&bonopay(
        &[
            "export",
            "--data-dir",
            d(&data),
            "--outlet",
            outlet,
            "--out",
            d(&bundle),
        ],
        "",
    ));
    assert!(msg.contains("4 entries"), "{msg}");
    let summary = ok(&bonopay(&["verify", d(&bundle)], ""));
    assert!(summary.contains("VALID"), "{summary}");
    let json: Value =
        serde_json::from_str(&ok(&bonopay(&["verify", d(&bundle), "--json"], ""))).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["checked"]["z_reports"], 1);
    assert_eq!(json["checked"]["a_reports"], 1);

    // A changed amount: exit 1, naming the entry.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, text.replacen("70280.00", "70000.00", 1)).unwrap();
    let out = bonopay(&["verify", d(&tampered), "--json", "--explain"], "");
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(json["error"]["seq"], 1);
    let steps = json["explain"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "the walk stops at the first bad entry");
    assert_ne!(steps[0]["verdict"], "ok");
    let out = bonopay(&["verify", d(&tampered), "--explain"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("computed hash") && text.contains("FIRST PROBLEM at line 2 (seq 1)"),
        "{text}"
    );

    // Unreadable input: exit 2.
    let out = bonopay(&["verify", d(&dir.path().join("missing.jsonl"))], "");
    assert_eq!(out.status.code(), Some(2));
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "hello\n").unwrap();
    assert_eq!(bonopay(&["verify", d(&junk)], "").status.code(), Some(2));
    // Stdin works too.
    let out = bonopay(&["verify", "-"], &text_of(&bundle));
    assert_eq!(out.status.code(), Some(0));
}

fn text_of(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}
