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

#[test]
fn postgres_outbox_conforms() {
    let dbs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(&|| {
        let db = bonopay_ledger::TestDb::create().unwrap();
        let store: Arc<dyn OutboxStore> =
            Arc::new(bonopay_sync::pg_outbox::PgOutbox::connect(&db.url, "w1", 8).unwrap());
        dbs.lock().unwrap().push(db);
        store
    });
}

#[test]
fn postgres_claims_keep_two_workers_apart_until_a_lease_ends() {
    use bonopay_sync::pg_outbox::PgOutbox;
    let db = bonopay_ledger::TestDb::create().unwrap();
    let a = PgOutbox::connect(&db.url, "instance-a", 4).unwrap();
    let b = PgOutbox::connect(&db.url, "instance-b", 4).unwrap();
    let items: Vec<_> = (1..=6).map(|s| conformance::item("o1", s, 10)).collect();
    a.enqueue("o1", 6, &items).unwrap();
    // A claims four; B gets the other two, never A's.
    let mine = a.claim_due(1_000, 60_000, 4).unwrap();
    let theirs = b.claim_due(1_000, 60_000, 10).unwrap();
    assert_eq!(mine.len(), 4);
    assert_eq!(theirs.len(), 2);
    let overlap = mine
        .iter()
        .filter(|m| theirs.iter().any(|t| t.seq == m.seq))
        .count();
    assert_eq!(overlap, 0);
    // B cannot write A's item, nor claim it while A's lease runs.
    let mut x = mine[0].clone();
    x.state = bonopay_sync::outbox::ItemState::Submitting;
    x.updated_ms = 1_000;
    assert!(matches!(
        b.update(&x),
        Err(bonopay_sync::outbox::OutboxError::ClaimLost(_))
    ));
    assert!(b.claim("o1", x.seq, 2_000, 60_000).unwrap().is_none());
    a.update(&x).unwrap();
    // When A's lease has run out (A died), B takes over.
    let later = 1_000 + 5 * 60 * 1000 + 1;
    let took = b.claim("o1", x.seq, later, 60_000).unwrap().unwrap();
    assert_eq!(took.state, bonopay_sync::outbox::ItemState::Submitting);
    assert!(matches!(
        a.update(&x),
        Err(bonopay_sync::outbox::OutboxError::ClaimLost(_))
    ));
    // Two workers claiming concurrently never get the same item.
    let mut all: Vec<u64> = Vec::new();
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.claim_due(later + 10, 60_000, 100).unwrap());
        let hb = s.spawn(|| b.claim_due(later + 10, 60_000, 100).unwrap());
        (ha.join().unwrap(), hb.join().unwrap())
    });
    all.extend(ra.iter().map(|i| i.seq));
    all.extend(rb.iter().map(|i| i.seq));
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "an item claimed twice");
}
