//! The outbox conformance suite against every backend: SQLite (in a real file,
//! next to a real ledger, as the server uses it) and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use bonopay_ledger::SqliteStore;
use bonopay_sync::dgi::outbox::OutboxStore;
use bonopay_sync::dgi::outbox::conformance;
use bonopay_sync::dgi::outbox::sqlite::SqliteOutbox;

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
        let store: Arc<dyn OutboxStore> = Arc::new(
            bonopay_sync::dgi::outbox::postgres::PgOutbox::connect(&db.url, "w1", 8).unwrap(),
        );
        dbs.lock().unwrap().push(db);
        store
    });
}

#[test]
fn postgres_claims_keep_two_workers_apart_until_a_lease_ends() {
    use bonopay_sync::dgi::outbox::postgres::PgOutbox;
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
    x.state = bonopay_sync::dgi::outbox::ItemState::Submitting;
    x.updated_ms = 1_000;
    assert!(matches!(
        b.update(&x),
        Err(bonopay_sync::dgi::outbox::OutboxError::ClaimLost(_))
    ));
    assert!(b.claim("o1", x.seq, 2_000, 60_000).unwrap().is_none());
    a.update(&x).unwrap();
    // When A's lease has run out (A died), B takes over.
    let later = 1_000 + 5 * 60 * 1000 + 1;
    let took = b.claim("o1", x.seq, later, 60_000).unwrap().unwrap();
    assert_eq!(took.state, bonopay_sync::dgi::outbox::ItemState::Submitting);
    assert!(matches!(
        a.update(&x),
        Err(bonopay_sync::dgi::outbox::OutboxError::ClaimLost(_))
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

/// Whether a session of `db` holds `worker`'s liveness lock.
fn liveness_held(url: &str, worker: &str) -> bool {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND objsubid = 2 AND classid = $1::int4::oid AND objid = hashtext($2)::oid
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[
                &bonopay_sync::dgi::outbox::postgres::LIVENESS_CLASS,
                &worker,
            ],
        )
        .unwrap()
        .get(0);
    n > 0
}

#[test]
fn postgres_a_dead_claimants_items_are_taken_over_after_the_grace_not_its_lease() {
    use bonopay_sync::dgi::outbox::ItemState;
    use bonopay_sync::dgi::outbox::postgres::PgOutbox;
    const GRACE: i64 = 10_000;
    const LEASE: i64 = 5 * 60 * 1000;
    let db = bonopay_ledger::TestDb::create().unwrap();
    let a = PgOutbox::connect(&db.url, "instance-a", 2)
        .unwrap()
        .with_takeover_grace(GRACE);
    let b = PgOutbox::connect(&db.url, "instance-b", 2)
        .unwrap()
        .with_takeover_grace(GRACE);
    let items: Vec<_> = (1..=4).map(|s| conformance::item("o1", s, 10)).collect();
    a.enqueue("o1", 4, &items).unwrap();
    assert!(
        !liveness_held(&db.url, "instance-a"),
        "taken by the first claim"
    );
    assert_eq!(a.claim_due(1_000, LEASE, 10).unwrap().len(), 4);
    assert!(liveness_held(&db.url, "instance-a"));
    // A lives: its items stay its own past the grace, until its lease ends.
    assert!(
        b.claim_due(1_000 + GRACE + 1, LEASE, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        b.claim("o1", 1, 1_000 + GRACE + 1, LEASE)
            .unwrap()
            .is_none()
    );
    // A writes item 1 at 5 000, then dies: its session ends and with it
    // the lock (dropping the outbox closes it, as a killed process would).
    let mut one = a.get("o1", 1).unwrap().unwrap();
    one.state = ItemState::Submitting;
    one.updated_ms = 5_000;
    a.update(&one).unwrap();
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while liveness_held(&db.url, "instance-a") {
        assert!(std::time::Instant::now() < deadline, "the lock outlived A");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Not within the grace of the last touch...
    assert!(
        b.claim_due(1_000 + GRACE - 1, LEASE, 10)
            .unwrap()
            .is_empty()
    );
    // ...but after it, long before the lease ends: items 2-4 (claimed at
    // 1 000), not item 1 (written at 5 000).
    let mut took: Vec<u64> = b
        .claim_due(1_000 + GRACE, LEASE, 10)
        .unwrap()
        .iter()
        .map(|i| i.seq)
        .collect();
    took.sort_unstable();
    assert_eq!(took, vec![2, 3, 4]);
    assert!(
        b.claim("o1", 1, 5_000 + GRACE - 1, LEASE)
            .unwrap()
            .is_none()
    );
    let it = b.claim("o1", 1, 5_000 + GRACE, LEASE).unwrap().unwrap();
    assert_eq!(
        it.state,
        ItemState::Submitting,
        "resumed from its stored state"
    );
    // B now holds them all: its own writes go through.
    let mut it = it;
    it.updated_ms = 5_000 + GRACE;
    b.update(&it).unwrap();
}

#[test]
fn postgres_claims_of_an_agent_that_never_registered_keep_their_lease() {
    // An agent of an older build (no liveness lock, not in sync_workers)
    // still running through an upgrade: its claims are not taken over
    // before their lease ends, even though no lock shows it alive.
    use bonopay_sync::dgi::outbox::postgres::PgOutbox;
    let db = bonopay_ledger::TestDb::create().unwrap();
    let b = PgOutbox::connect(&db.url, "instance-b", 2)
        .unwrap()
        .with_takeover_grace(0);
    b.enqueue("o1", 1, &[conformance::item("o1", 1, 10)])
        .unwrap();
    let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    c.execute(
        "UPDATE sync_outbox SET claimed_by = 'old-build', claim_until = 60000, claim_touched_ms = 0",
        &[],
    )
    .unwrap();
    assert!(b.claim_due(59_999, 60_000, 10).unwrap().is_empty());
    assert_eq!(b.claim_due(60_001, 60_000, 10).unwrap().len(), 1);
}
