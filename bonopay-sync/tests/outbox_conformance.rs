//! The outbox conformance suite against the SQLite backend (in a real file,
//! next to a real ledger, as the server uses it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use bonopay_ledger::SqliteStore;
use bonopay_sync::conformance;
use bonopay_sync::outbox::OutboxStore;
use bonopay_sync::sqlite_outbox::SqliteOutbox;

#[test]
fn sqlite_outbox_conforms() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(&|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        // The ledger owns the file; the outbox adds its tables beside it.
        let _ledger = SqliteStore::open(&path).unwrap();
        let store: Arc<dyn OutboxStore> = Arc::new(SqliteOutbox::open(&path).unwrap());
        dirs.lock().unwrap().push(dir);
        store
    });
}

#[test]
fn the_outbox_survives_reopening_and_its_schema_is_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        let o = SqliteOutbox::open(&path).unwrap();
        o.enqueue("o1", 1, &[conformance::item("o1", 1, 10)])
            .unwrap();
    }
    let o = SqliteOutbox::open(&path).unwrap();
    assert_eq!(o.cursor("o1").unwrap(), 1);
    assert!(o.get("o1", 1).unwrap().is_some());
    // The ledger's own migrations still apply to the shared file.
    let ledger = SqliteStore::open(&path).unwrap();
    assert!(ledger.schema_version().unwrap() >= 1);
}
