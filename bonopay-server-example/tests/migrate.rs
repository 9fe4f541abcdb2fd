//! `bonopay migrate`: a SQLite data directory moves into PostgreSQL with
//! its chains byte for byte (verified), its idempotency keys (a replay
//! still answers the original seal), its DGI upload states and its API
//! keys; a tampered source is refused, and a non-empty target too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use bonopay_ledger::{LedgerStore, PgStore, SqliteStore, TestDb};
use bonopay_server_example::cli::serve::bootstrap;
use bonopay_server_example::datadir::DataDir;
use bonopay_server_example::server::auth::{ApiKeyStore, SqliteKeyStore, hash_token};
use bonopay_signer::{Fiscalizer, FiscalizerConfig};
use bonopay_sync::outbox::{ItemState, OutboxStore};
use common::*;
use serde_json::Value;

fn bonopay(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bonopay"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_sqlite_directory_moves_into_postgres_verified_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let invoice = example().to_string();
    for k in ["m1", "m2", "m3"] {
        let out = bonopay(
            &["seal", "--data-dir", d, "--idempotency-key", k],
            &[],
            &invoice,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = bonopay(
        &["report", "z", "--data-dir", d, "--outlet", OUTLET_A],
        &[],
        "",
    );
    assert!(out.status.success());
    // API keys as `bonopay serve` creates them, and an outbox with one
    // invoice already synced.
    let keys = SqliteKeyStore::open(&data.join("auth.db")).unwrap();
    let dir = DataDir::open_or_init(&data).unwrap();
    let tokens = bootstrap(&keys, &dir.config.merchants).unwrap();
    let outbox = bonopay_sync::sqlite_outbox::SqliteOutbox::open(data.join("ledger.db")).unwrap();
    {
        let item = bonopay_sync::conformance::item(OUTLET_A, 1, 10);
        outbox.enqueue(OUTLET_A, 1, &[item]).unwrap();
        let mut it = outbox.get(OUTLET_A, 1).unwrap().unwrap();
        it.state = ItemState::Synced;
        outbox.update(&it).unwrap();
    }
    drop(dir);

    let db = TestDb::create().unwrap();
    let env = [("BONOPAY_MIGRATE_TO", db.url.as_str())];
    let out = bonopay(&["migrate", "--data-dir", d], &env, "");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["entries_moved"], 4);
    assert_eq!(report["outlets"][0]["identical_to_source"], true);
    assert_eq!(report["outlets"][0]["verified"], true);
    assert_eq!(report["outbox_items_moved"], 1);
    assert_eq!(report["api_keys_moved"], 1);

    // The same heads, byte for byte.
    let src = SqliteStore::open(data.join("ledger.db")).unwrap();
    let dst = PgStore::connect(&db.url, 2).unwrap();
    assert_eq!(src.head(OUTLET_A).unwrap(), dst.head(OUTLET_A).unwrap());
    // Idempotency survives: the same key on PostgreSQL replays the seal.
    let dir = DataDir::open_or_init(&data).unwrap();
    let f = Fiscalizer::new(
        Arc::new(PgStore::connect(&db.url, 2).unwrap()),
        Arc::clone(&dir.signer),
        FiscalizerConfig::new(&dir.config.nid),
    );
    let req = bonopay_core::parse_invoice(&invoice).unwrap();
    let replay = f.seal(&req, "m2").unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.invoice.elements.fiscal_number, "2/2 FV");
    // The upload state and the API key moved.
    let pg_outbox = bonopay_sync::pg_outbox::PgOutbox::connect(&db.url, "t", 1).unwrap();
    assert_eq!(
        pg_outbox.get(OUTLET_A, 1).unwrap().unwrap().state,
        ItemState::Synced
    );
    let pg_keys = bonopay_server_example::server::auth_pg::PgKeyStore::connect(&db.url).unwrap();
    let found = pg_keys.key_by_hash(&hash_token(&tokens[0].1)).unwrap();
    assert_eq!(found.unwrap().merchant_nif, NIF_A);
    assert!(pg_keys.outlet(OUTLET_A).unwrap().is_some());

    // A second run refuses: the target already holds the outlet.
    let out = bonopay(&["migrate", "--data-dir", d], &env, "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has entries"));

    // A tampered source is refused by the target's checks, not copied.
    let conn = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    conn.execute(
        "UPDATE entries SET payload = CAST(replace(CAST(payload AS TEXT), 'Savon', 'Savom') AS BLOB) WHERE seq = 2",
        [],
    )
    .unwrap();
    let db2 = TestDb::create().unwrap();
    let out = bonopay(
        &["migrate", "--data-dir", d],
        &[("BONOPAY_MIGRATE_TO", db2.url.as_str())],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entry 2"), "{err}");
}
