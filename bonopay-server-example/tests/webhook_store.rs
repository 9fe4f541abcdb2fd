//! The storage suites of webhooks ([`WebhookStore`]) and receipt deliveries
//! ([`DeliveryStore`]) on the embedded backends: SQLite in memory, in a
//! file, and one file shared by several handles (as `auth.db` is by the
//! old and the restarted service), and the memory delivery store.
//! (PostgreSQL: webhooks_pg.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bonopay_server_example::server::deliveries::{
    MemoryDeliveryStore, SqliteDeliveryStore, conformance as delivery_conformance,
};
use bonopay_server_example::server::webhooks::conformance as webhooks_conformance;
use bonopay_server_example::server::webhooks::{SqliteWebhookStore, WebhookStore};

#[test]
fn sqlite_in_memory_webhook_store_conforms() {
    webhooks_conformance::run_all(&|| Arc::new(SqliteWebhookStore::in_memory().unwrap()));
}

#[test]
fn sqlite_file_webhook_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    webhooks_conformance::run_all(&|| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Arc::new(SqliteWebhookStore::open(&dir.path().join(format!("auth-{i}.db"))).unwrap())
    });
}

#[test]
fn sqlite_webhook_file_shared_by_several_handles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    webhooks_conformance::shared_database(&|| {
        Arc::new(SqliteWebhookStore::open(&path).unwrap()) as Arc<dyn WebhookStore>
    });
}

#[test]
fn memory_delivery_store_conforms() {
    delivery_conformance::run_all(&|| Arc::new(MemoryDeliveryStore::default()));
}

#[test]
fn sqlite_delivery_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    delivery_conformance::run_all(&|| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Arc::new(SqliteDeliveryStore::open(&dir.path().join(format!("auth-{i}.db"))).unwrap())
    });
}

#[test]
fn sqlite_delivery_file_shared_by_several_handles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    delivery_conformance::shared_database(&|| Arc::new(SqliteDeliveryStore::open(&path).unwrap()));
}

/// Every queue of the server hands a dead instance's work on within the
/// DGI outbox's takeover bound (the e-MCF timeout plus 15 s).
#[test]
fn receipt_delivery_claims_end_within_the_dgi_takeover_bound() {
    let lease =
        i64::try_from(bonopay_server_example::server::deliveries::CLAIM_LEASE.as_millis()).unwrap();
    assert!(lease <= bonopay_sync::dgi::outbox::postgres::DEFAULT_TAKEOVER_GRACE_MS);
    assert!(
        bonopay_server_example::server::webhooks::RetryPolicy::default().lease()
            <= bonopay_server_example::server::deliveries::CLAIM_LEASE
    );
}

/// A `deliveries` table from before claims gets its claim column when
/// opened, and a record a previous build left in `sending` (it died
/// mid-send) is stalled at once and can be taken over.
#[test]
fn an_old_delivery_table_is_migrated_and_its_stuck_sends_taken_over() {
    use bonopay_server_example::server::deliveries::{DeliveryStatus, DeliveryStore};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE deliveries (
                id TEXT PRIMARY KEY, invoice_id TEXT NOT NULL, merchant_nif TEXT NOT NULL,
                channel TEXT NOT NULL, recipient TEXT NOT NULL, status TEXT NOT NULL,
                error TEXT, created_at TEXT NOT NULL, completed_at TEXT NOT NULL);
             INSERT INTO deliveries VALUES ('dlv_old', 'o1:1', 'A1', 'email', 'a@b.cd',
                'sending', NULL, '2026-03-01T08:00:00.000Z', '2026-03-01T08:00:00.000Z');",
        )
        .unwrap();
    }
    let s = SqliteDeliveryStore::open(&path).unwrap();
    let stalled = s.stalled(0).unwrap();
    assert_eq!(stalled.len(), 1);
    assert_eq!(stalled[0].held, None);
    assert!(
        s.claim("dlv_old", DeliveryStatus::Sending, None, 45_000)
            .unwrap()
    );
    assert!(s.stalled(1).unwrap().is_empty());
    drop(s);
    // Opening again does not add the column twice.
    SqliteDeliveryStore::open(&path).unwrap();
}
