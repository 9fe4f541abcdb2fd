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
use bonopay_server_example::server::webhooks::{SqliteWebhookStore, WebhookStore};
use bonopay_server_example::server::webhooks_conformance;

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
