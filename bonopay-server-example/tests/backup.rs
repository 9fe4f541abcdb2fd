//! `bonopay backup` while the server seals, and `bonopay restore`: the
//! copy verifies, restores into a new directory (never over a live one),
//! and a server on the restored directory keeps numbering with no gap.
//! A backup altered afterwards is refused. Real binary, real SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use serde_json::Value;

fn bonopay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .args(args)
        .env_remove("BONOPAY_DATA_DIR")
        .env_remove("BONOPAY_DATABASE_URL")
        .output()
        .unwrap()
}

fn seal(http: &reqwest::blocking::Client, base: &str, key: &str, idem: &str) -> Value {
    let r = http
        .post(format!("{base}/v1/invoices"))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(&example())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().unwrap()
}

fn seq_of(v: &Value) -> u64 {
    v["id"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_backup_taken_while_sealing_verifies_restores_and_numbering_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    let key = server.owner(NIF_A);
    let http = reqwest::blocking::Client::new();
    let base = server.base.clone();

    // A till sealing throughout the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let sealed = Arc::new(AtomicU64::new(0));
    let load = {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        let (stop, sealed) = (Arc::clone(&stop), Arc::clone(&sealed));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                seal(&http, &base, &key, &format!("load-{n}"));
                n += 1;
                sealed.store(n, Ordering::Relaxed);
            }
        })
    };
    while sealed.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let backup_dir = tmp.path().join("backup");
    let out = bonopay(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        backup_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let during = sealed.load(Ordering::Relaxed);
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let total = sealed.load(Ordering::Relaxed);
    assert_eq!(report["valid"], true, "{report}");
    let in_backup = report["outlets"][0]["entries"].as_u64().unwrap();
    assert!(in_backup >= 20, "{report}");
    assert!(
        total > in_backup,
        "the server kept sealing after the snapshot: {total} sealed, {in_backup} in the backup"
    );
    eprintln!(
        "backup of {in_backup} entries taken while sealing ({during} sealed by then, {total} at the end)"
    );
    assert!(!tmp.path().join("backup.partial").exists());

    // Restore never overwrites a data directory, live or not.
    let out = bonopay(&[
        "restore",
        "--from",
        backup_dir.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwrites"));

    // Into a new directory: verified, and a server there numbers on.
    drop(server);
    let restored = tmp.path().join("restored");
    let out = bonopay(&[
        "restore",
        "--from",
        backup_dir.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start(&restored, &[]);
    assert!(
        server.owner_keys.is_empty(),
        "the keys came back with auth.db"
    );
    let next = seal(&http, &server.base, &key, "after-restore");
    assert_eq!(seq_of(&next), in_backup + 1, "no gap after the restore");
    // A key sealed before the snapshot replays from the restored ledger.
    let again = seal(&http, &server.base, &key, "load-0");
    assert_eq!(seq_of(&again), 1);
    drop(server);
    let out = bonopay(&["ledger", "verify", "--data-dir", restored.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A backup altered afterwards is refused, and nothing is created.
    let ledger = backup_dir.join("ledger.db");
    let mut bytes = std::fs::read(&ledger).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&ledger, bytes).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    let out = bonopay(&[
        "restore",
        "--from",
        backup_dir.to_str().unwrap(),
        "--data-dir",
        elsewhere.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ledger.db: SHA-256 differs"));
    assert!(!elsewhere.exists());
}
