//! `bonopay migrate`: a SQLite data directory moves into PostgreSQL with
//! its chains byte for byte (verified), its idempotency keys (a replay
//! still answers the original seal), its DGI upload states, its API keys,
//! its webhooks (subscribers, events, deliveries and their states, attempt
//! logs, cursors) and its receipt deliveries; a tampered source is
//! refused, and a non-empty target too. The webhook and receipt copy is
//! atomic and idempotent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use bonopay_ledger::{LedgerStore, PgStore, SqliteStore, TestDb};
use bonopay_server_example::cli::migrate::{CopiedExtras, copy_auth, copy_webhooks_and_deliveries};
use bonopay_server_example::cli::serve::bootstrap;
use bonopay_server_example::datadir::DataDir;
use bonopay_server_example::server::auth::postgres::PgKeyStore;
use bonopay_server_example::server::auth::{
    ApiKey, ApiKeyStore, Outlet, Role, SqliteKeyStore, hash_token,
};
use bonopay_server_example::server::deliveries::postgres::PgDeliveryStore;
use bonopay_server_example::server::deliveries::{
    DeliveryStore, SqliteDeliveryStore, conformance::record as receipt,
};
use bonopay_server_example::server::webhooks::conformance::{LEASE, T0, failure, success};
use bonopay_server_example::server::webhooks::postgres::PgWebhookStore;
use bonopay_server_example::server::webhooks::{
    EventType, NewEvent, SqliteWebhookStore, Subscriber, WebhookStore,
};
use bonopay_signer::{Fiscalizer, FiscalizerConfig};
use bonopay_sync::dgi::outbox::{ItemState, OutboxStore};
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

/// Seals the example invoice once per idempotency key with `bonopay seal`
/// into the data directory `d`, and returns the invoice's text.
/// Runs `bonopay migrate` on `d`, which must succeed with a valid report;
/// returns the report.
fn migrate_ok(d: &str, env: &[(&str, &str)]) -> Value {
    let out = bonopay(&["migrate", "--data-dir", d], env, "");
    assert_exit_ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true, "{report}");
    report
}

fn seal_with_keys(d: &str, keys: &[&str]) -> String {
    let invoice = example().to_string();
    for k in keys {
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
    invoice
}

/// Webhook and receipt history as `bonopay serve` leaves it in `auth`: a
/// live and a deleted subscriber, three events (two produced from the
/// ledger with the cursor moved past the Z report, one from the sync
/// agent), one delivery delivered, one waiting for its retry, one dead, the
/// deleted subscriber's cancelled, and two receipts.
fn webhook_history(auth: &Path) {
    let s = SqliteWebhookStore::open(auth).unwrap();
    for (id, events) in [
        ("whk_live", EventType::ALL.to_vec()),
        ("whk_gone", vec![EventType::InvoiceSealed]),
    ] {
        let sub = Subscriber {
            id: id.into(),
            merchant_nif: NIF_A.into(),
            url: format!("https://erp.example.cd/{id}"),
            events,
            created_at: "2026-02-25T06:13:20.000Z".into(),
        };
        assert!(
            s.insert_subscriber(&sub, &format!("whsec_{id}"), 16)
                .unwrap()
        );
    }
    let sealed = |seq: u64| NewEvent {
        id: format!("invoice.sealed:{OUTLET_A}:{seq}"),
        merchant_nif: NIF_A.into(),
        kind: EventType::InvoiceSealed,
        payload: format!(r#"{{"seq":{seq}}}"#),
    };
    assert_eq!(
        s.commit_events(OUTLET_A, 1, &[sealed(1), sealed(2)], 5, T0)
            .unwrap(),
        Some(2)
    );
    let synced = NewEvent {
        id: format!("invoice.synced:{OUTLET_A}:1"),
        kind: EventType::InvoiceSynced,
        ..sealed(1)
    };
    assert!(s.enqueue(&synced, T0 + 1).unwrap());
    assert!(s.delete_subscriber(NIF_A, "whk_gone").unwrap());
    let claims = s.claim_due(T0 + 1, T0 + LEASE, 10).unwrap();
    assert_eq!(claims.len(), 3);
    let none = |_: u32| None;
    let later = |_: u32| Some(T0 + 5_000);
    s.record(&claims[0], &success(T0 + 2), &none).unwrap();
    s.record(&claims[1], &failure(T0 + 2), &later).unwrap();
    s.record(&claims[2], &failure(T0 + 2), &none).unwrap();
    let receipts = SqliteDeliveryStore::open(auth).unwrap();
    receipts
        .record(&receipt("dlv_1", NIF_A, &format!("{OUTLET_A}:1")))
        .unwrap();
    receipts
        .record(&receipt("dlv_2", NIF_A, &format!("{OUTLET_A}:1")))
        .unwrap();
}

/// What [`webhook_history`] leaves, counted as the copy counts it.
const HISTORY: CopiedExtras = CopiedExtras {
    subscribers: 2,
    events: 3,
    deliveries: 5,
    attempts: 3,
    cursors: 1,
    receipt_deliveries: 2,
};

/// The target answers exactly what the source does: subscribers, logs
/// with their delivery states, cursor, receipts, and the delivery waiting
/// for its retry is due then, signed with the same secret and body.
fn assert_same_webhooks_and_receipts(auth: &Path, url: &str) {
    let src = SqliteWebhookStore::open(auth).unwrap();
    let dst = PgWebhookStore::connect(url).unwrap();
    assert_eq!(
        dst.list_subscribers(NIF_A).unwrap(),
        src.list_subscribers(NIF_A).unwrap()
    );
    assert_eq!(dst.list_subscribers(NIF_A).unwrap().len(), 1);
    let log = dst.delivery_log(NIF_A, "whk_live", 100).unwrap().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(
        log,
        src.delivery_log(NIF_A, "whk_live", 100).unwrap().unwrap()
    );
    assert_eq!(dst.delivery_log(NIF_A, "whk_gone", 100).unwrap(), None);
    assert_eq!(dst.cursor(OUTLET_A).unwrap(), 5);
    assert_eq!(
        PgDeliveryStore::connect(url)
            .unwrap()
            .list(NIF_A, &format!("{OUTLET_A}:1"))
            .unwrap(),
        SqliteDeliveryStore::open(auth)
            .unwrap()
            .list(NIF_A, &format!("{OUTLET_A}:1"))
            .unwrap()
    );
    assert!(
        dst.claim_due(T0 + 4_999, T0 + LEASE, 10)
            .unwrap()
            .is_empty()
    );
    let due = dst.claim_due(T0 + 5_000, T0 + LEASE, 10).unwrap();
    let was = src.claim_due(T0 + 5_000, T0 + LEASE, 10).unwrap();
    assert_eq!(
        due.len(),
        1,
        "the delivery waiting for its retry, and only it"
    );
    assert_eq!(
        (&due[0].event_id, &due[0].url, &due[0].secret, &due[0].body),
        (&was[0].event_id, &was[0].url, &was[0].secret, &was[0].body)
    );
}

#[test]
fn the_webhook_and_receipt_copy_is_atomic_and_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = tmp.path().join("auth.db");
    webhook_history(&auth);
    // A row the target cannot hold (an attempt number beyond INTEGER),
    // read after the subscribers, events and deliveries were inserted.
    let conn = rusqlite::Connection::open(&auth).unwrap();
    conn.execute(
        "INSERT INTO webhook_attempts (delivery_id, attempt, status, started_at, completed_at)
         SELECT id, 3000000000, 'failed', 't', 't' FROM webhook_deliveries ORDER BY id LIMIT 1",
        [],
    )
    .unwrap();
    let db = TestDb::create().unwrap();
    assert!(copy_webhooks_and_deliveries(&auth, &db.url).is_err());
    let mut pg = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    for table in [
        "webhook_subscribers",
        "webhook_events",
        "webhook_deliveries",
        "webhook_attempts",
        "webhook_cursors",
        "receipt_deliveries",
    ] {
        let n: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}: a failed copy copies nothing");
    }
    conn.execute(
        "DELETE FROM webhook_attempts WHERE attempt = 3000000000",
        [],
    )
    .unwrap();
    drop(conn);
    assert_eq!(
        copy_webhooks_and_deliveries(&auth, &db.url).unwrap(),
        HISTORY
    );
    assert_eq!(
        copy_webhooks_and_deliveries(&auth, &db.url).unwrap(),
        CopiedExtras::default(),
        "a second copy copies nothing more"
    );
    assert_same_webhooks_and_receipts(&auth, &db.url);
}

#[test]
fn the_api_key_copy_is_atomic_and_keeps_revocations() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = tmp.path().join("auth.db");
    let keys = SqliteKeyStore::open(&auth).unwrap();
    let created_at = "2026-02-25T06:13:20.000Z".to_owned();
    keys.insert_outlet(&Outlet {
        id: OUTLET_A.into(),
        merchant_nif: NIF_A.into(),
        created_at: created_at.clone(),
    })
    .unwrap();
    let key = |id: &str, role| ApiKey {
        id: id.into(),
        merchant_nif: NIF_A.into(),
        role,
        outlets: Some(vec![OUTLET_A.into()]),
        label: Some(format!("{id} label")),
        created_at: created_at.clone(),
        revoked: false,
    };
    keys.insert_key(&key("key_live", Role::Cashier), &hash_token("tok_live"))
        .unwrap();
    // Not an owner key: a merchant's last owner key cannot be revoked.
    keys.insert_key(&key("key_gone", Role::Auditor), &hash_token("tok_gone"))
        .unwrap();
    assert!(keys.revoke_key(NIF_A, "key_gone").unwrap());
    drop(keys);
    // A malformed row after the good ones: the copy must write nothing
    // (before, the keys ahead of it were left in the target, and a key
    // was briefly active there before its revocation was copied).
    let conn = rusqlite::Connection::open(&auth).unwrap();
    conn.execute(
        "INSERT INTO api_keys (id, token_hash, merchant_nif, role, created_at)
         VALUES ('key_bad', x'00', ?1, 'cashier', ?2)",
        [NIF_A, created_at.as_str()],
    )
    .unwrap();
    let db = TestDb::create().unwrap();
    let err = format!("{:?}", copy_auth(&auth, &db.url).unwrap_err());
    assert!(err.contains("key_bad") && err.contains("1 bytes"), "{err}");
    let mut pg = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    for table in ["auth_keys", "auth_outlets"] {
        let n: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}: a failed copy copies nothing");
    }
    conn.execute("DELETE FROM api_keys WHERE id = 'key_bad'", [])
        .unwrap();
    assert_eq!(copy_auth(&auth, &db.url).unwrap(), (2, 1));
    let store = PgKeyStore::connect(&db.url).unwrap();
    let live = store.key_by_hash(&hash_token("tok_live")).unwrap().unwrap();
    assert_eq!(live, key("key_live", Role::Cashier));
    let gone = store.key_by_hash(&hash_token("tok_gone")).unwrap().unwrap();
    assert!(gone.revoked, "a revoked key stays revoked");
    assert_eq!(gone.role, Role::Auditor);
    assert!(store.outlet(OUTLET_A).unwrap().is_some());
    // A second copy finds the same rows and copies nothing more.
    assert_eq!(copy_auth(&auth, &db.url).unwrap(), (0, 0));
    // A key that differs on the two sides (revoked in the source only) is
    // refused, and nothing changes in the target.
    let keys = SqliteKeyStore::open(&auth).unwrap();
    assert!(keys.revoke_key(NIF_A, "key_live").unwrap());
    let err = format!("{:?}", copy_auth(&auth, &db.url).unwrap_err());
    assert!(err.contains("key_live") && err.contains("differs"), "{err}");
    assert_eq!(
        store.key_by_hash(&hash_token("tok_live")).unwrap().unwrap(),
        key("key_live", Role::Cashier)
    );
    assert_eq!(store.list_keys(NIF_A).unwrap().len(), 2);
}

#[test]
fn a_migration_that_failed_part_way_completes_when_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    seal_with_keys(d, &["r1", "r2", "r3"]);
    let keys = SqliteKeyStore::open(&data.join("auth.db")).unwrap();
    let dir = DataDir::open_or_init(&data).unwrap();
    let tokens = bootstrap(&keys, &dir.config.merchants).unwrap();
    drop((keys, dir));
    // A key row the copy refuses: the run stops after moving the chains.
    let auth = rusqlite::Connection::open(data.join("auth.db")).unwrap();
    auth.execute(
        "INSERT INTO api_keys (id, token_hash, merchant_nif, role, created_at)
         VALUES ('key_bad', x'00', ?1, 'cashier', '2026-02-25T06:13:20.000Z')",
        [NIF_A],
    )
    .unwrap();
    let db = TestDb::create().unwrap();
    let env = [("BONOPAY_MIGRATE_TO", db.url.as_str())];
    let out = bonopay(&["migrate", "--data-dir", d], &env, "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key_bad"));
    let dst = PgStore::connect(&db.url, 1).unwrap();
    assert_eq!(dst.head(OUTLET_A).unwrap().seq, 3, "the chain had moved");
    let pg_keys = PgKeyStore::connect(&db.url).unwrap();
    assert!(
        pg_keys
            .key_by_hash(&hash_token(&tokens[0].1))
            .unwrap()
            .is_none()
    );

    // Mended, the same command completes the move.
    auth.execute("DELETE FROM api_keys WHERE id = 'key_bad'", [])
        .unwrap();
    let report = migrate_ok(d, &env);
    assert_eq!(report["entries_moved"], 0);
    assert_eq!(report["entries_already_there"], 3);
    assert_eq!(report["api_keys_moved"], 1);
    assert_eq!(report["outlets"][0]["identical_to_source"], true);
    assert!(
        pg_keys
            .key_by_hash(&hash_token(&tokens[0].1))
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_sqlite_directory_moves_into_postgres_verified_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let invoice = seal_with_keys(d, &["m1", "m2", "m3"]);
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
    webhook_history(&data.join("auth.db"));
    let outbox =
        bonopay_sync::dgi::outbox::sqlite::SqliteOutbox::open(data.join("ledger.db")).unwrap();
    {
        let item = bonopay_sync::dgi::outbox::conformance::item(OUTLET_A, 1, 10);
        outbox.enqueue(OUTLET_A, 1, &[item]).unwrap();
        let mut it = outbox.get(OUTLET_A, 1).unwrap().unwrap();
        it.state = ItemState::Synced;
        outbox.update(&it).unwrap();
    }
    drop(dir);

    let db = TestDb::create().unwrap();
    let env = [("BONOPAY_MIGRATE_TO", db.url.as_str())];
    let report = migrate_ok(d, &env);
    assert_eq!(report["entries_moved"], 4);
    assert_eq!(report["outlets"][0]["identical_to_source"], true);
    assert_eq!(report["outlets"][0]["verified"], true);
    assert_eq!(report["outbox_items_moved"], 1);
    assert_eq!(report["api_keys_moved"], 1);
    assert_eq!(
        report["webhooks_moved"],
        serde_json::json!({
            "subscribers": HISTORY.subscribers,
            "events": HISTORY.events,
            "deliveries": HISTORY.deliveries,
            "attempts": HISTORY.attempts,
            "cursors": HISTORY.cursors,
        })
    );
    assert_eq!(
        report["receipt_deliveries_moved"],
        HISTORY.receipt_deliveries
    );

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
    let replay = f.seal(&req, &"m2".parse().unwrap()).unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.invoice.elements.fiscal_number, "2/2 FV");
    // The upload state and the API key moved.
    let pg_outbox =
        bonopay_sync::dgi::outbox::postgres::PgOutbox::connect(&db.url, "t", 1).unwrap();
    assert_eq!(
        pg_outbox.get(OUTLET_A, 1).unwrap().unwrap().state,
        ItemState::Synced
    );
    let pg_keys =
        bonopay_server_example::server::auth::postgres::PgKeyStore::connect(&db.url).unwrap();
    let found = pg_keys.key_by_hash(&hash_token(&tokens[0].1)).unwrap();
    assert_eq!(found.unwrap().merchant_nif, NIF_A);
    assert!(pg_keys.outlet(OUTLET_A).unwrap().is_some());
    // The webhooks and receipts moved.
    assert_same_webhooks_and_receipts(&data.join("auth.db"), &db.url);

    // A second run finds everything there and moves nothing more; after
    // one more seal in the source, a third run moves just that one.
    let report = migrate_ok(d, &env);
    assert_eq!(
        (&report["entries_moved"], &report["entries_already_there"]),
        (&Value::from(0), &Value::from(4))
    );
    assert_eq!(report["outbox_items_moved"], 0);
    assert_eq!(report["api_keys_moved"], 0);
    seal_with_keys(d, &["m4"]);
    let report = migrate_ok(d, &env);
    assert_eq!(report["entries_moved"], 1);
    assert_eq!(report["outlets"][0]["identical_to_source"], true);
    assert_eq!(src.head(OUTLET_A).unwrap(), dst.head(OUTLET_A).unwrap());

    // A target whose chain is not the source's (sealed there on its own)
    // is refused before anything is written.
    let db3 = TestDb::create().unwrap();
    let other = Fiscalizer::new(
        Arc::new(PgStore::connect(&db3.url, 2).unwrap()),
        Arc::clone(&dir.signer),
        FiscalizerConfig::new(&dir.config.nid),
    );
    other.seal(&req, &"elsewhere".parse().unwrap()).unwrap();
    let out = bonopay(
        &["migrate", "--data-dir", d],
        &[("BONOPAY_MIGRATE_TO", db3.url.as_str())],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds other entries"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        PgStore::connect(&db3.url, 1)
            .unwrap()
            .head(OUTLET_A)
            .unwrap()
            .seq,
        1
    );

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
