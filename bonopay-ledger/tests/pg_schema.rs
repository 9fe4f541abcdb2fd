//! The PostgreSQL schema: migrations run forward from an older release and
//! sealed payloads are stored compressed and inline (not in TOAST), which
//! is what keeps an insert cheap (BENCHMARKS.md, issue 8).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bonopay_core::InvoiceType;
use bonopay_ledger::conformance::invoice;
use bonopay_ledger::postgres::PG_MIGRATIONS;
use bonopay_ledger::{ChainOnly, LedgerStore, LedgerStoreExt, PgStore, TestDb, verify_store};

const OUTLET: &str = "kin-gombe-01";

/// A payload of the size of a 20-line sealed invoice (4.4 KB) that
/// compresses, like the real one, to just over 2 KB: 2,048 hex digits
/// (which lz4 cannot shrink) and JSON-like text that shrinks to little.
/// Compressed it is too big for PostgreSQL's default inline limit (about
/// 2 KB per row) and fits the ledger's 4080-byte tuple target.
fn payload(seq: u64) -> Vec<u8> {
    use sha2::Digest as _;
    let mut digits = String::new();
    let mut h = sha2::Sha256::digest(seq.to_be_bytes());
    while digits.len() < 2048 {
        digits.push_str(&hex::encode(h));
        h = sha2::Sha256::digest(h);
    }
    let mut s = format!("{{\"seq\":{seq},\"sig\":\"{digits}\",\"items\":[");
    let mut i = 0u64;
    while s.len() < 4400 {
        s.push_str(&format!(
            "{{\"kind\":\"BIE\",\"name\":\"Article {i}\",\"tax_group\":\"B\"}},"
        ));
        i += 1;
    }
    s.push_str("{}]}");
    s.into_bytes()
}

fn seal_some(store: &PgStore, n: u64, from_ms: i64) {
    for i in 0..n {
        store
            .append_new(
                OUTLET,
                &invoice(InvoiceType::Fv, 2026, from_ms + i64::try_from(i).unwrap()),
                1,
                &mut |p| payload(p.seq),
            )
            .unwrap();
    }
}

fn toast_bytes(db: &TestDb) -> i64 {
    let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    c.query_one(
        "SELECT COALESCE(pg_relation_size(reltoastrelid), 0)::int8 FROM pg_class \
         WHERE relname = 'ledger_entries'",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn payloads_are_stored_compressed_and_inline() {
    let db = TestDb::create().unwrap();
    let store = PgStore::connect(&db.url, 2).unwrap();
    assert_eq!(
        store.schema_version().unwrap() as usize,
        PG_MIGRATIONS.len()
    );
    seal_some(&store, 20, 1_764_300_000_000);
    let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let row = c
        .query_one(
            "SELECT min(octet_length(payload))::int8, max(pg_column_size(payload))::int8 \
             FROM ledger_entries",
            &[],
        )
        .unwrap();
    let (raw, stored): (i64, i64) = (row.get(0), row.get(1));
    assert!(raw > 4000, "the test payload is {raw} bytes");
    assert!(
        stored < raw * 6 / 10,
        "stored {stored} of {raw} bytes: not compressed"
    );
    assert_eq!(toast_bytes(&db), 0, "payloads went out of line into TOAST");
    let r = verify_store(&store, OUTLET, &ChainOnly);
    assert!(r.is_valid(), "{:?}", r.error);
    assert_eq!(r.verified, 20);
}

#[test]
fn a_version_1_database_migrates_forward_and_keeps_its_chain() {
    let db = TestDb::create().unwrap();
    {
        // The schema as the first release created it, with entries in it.
        let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
        c.batch_execute(PG_MIGRATIONS[0]).unwrap();
        c.batch_execute(
            "CREATE TABLE ledger_schema (version INTEGER NOT NULL);
             INSERT INTO ledger_schema (version) VALUES (1);",
        )
        .unwrap();
    }
    let store = PgStore::connect(&db.url, 2).unwrap();
    assert_eq!(
        store.schema_version().unwrap() as usize,
        PG_MIGRATIONS.len()
    );
    seal_some(&store, 5, 1_764_300_000_000);
    drop(store);
    // Reopening runs nothing again and the chain continues.
    let store = PgStore::connect(&db.url, 2).unwrap();
    assert_eq!(
        store.schema_version().unwrap() as usize,
        PG_MIGRATIONS.len()
    );
    seal_some(&store, 5, 1_764_300_001_000);
    let r = verify_store(&store, OUTLET, &ChainOnly);
    assert!(r.is_valid(), "{:?}", r.error);
    assert_eq!(r.verified, 10);
    assert_eq!(store.head(OUTLET).unwrap().seq, 10);
}

/// Ends every server process of the test database but the caller's, as a
/// PostgreSQL restart (or a failover, or an idle-connection killer) does.
fn drop_connections(db: &TestDb) -> i64 {
    let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let n = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    // pg_terminate_backend only signals: wait until they are gone, as
    // after a restart (else a call may still reach a dying one in time).
    for _ in 0..200 {
        let left: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    n
}

/// Four threads sealing on four outlets at once, so the pool holds
/// several connections.
fn seal_on_four(store: &PgStore, round: i64) {
    std::thread::scope(|sc| {
        for t in 0..4 {
            sc.spawn(move || {
                store
                    .append_new(
                        &format!("o{t}"),
                        &invoice(InvoiceType::Fv, 2026, 1_764_300_000_000 + round * 1000),
                        1,
                        &mut |p| payload(p.seq),
                    )
                    .unwrap();
            });
        }
    });
}

#[test]
fn connections_dropped_by_the_server_are_replaced_without_a_failed_call() {
    let db = TestDb::create().unwrap();
    let store = PgStore::connect(&db.url, 4).unwrap();
    seal_on_four(&store, 0);
    seal_on_four(&store, 1);
    let dropped = drop_connections(&db);
    assert!(dropped >= 2, "only {dropped} connections were open");
    // The first read meets a dead connection and runs again on a new one;
    // the other dead ones are dropped with it, so the concurrent appends
    // that follow do not each meet one.
    assert_eq!(store.head("o0").unwrap().seq, 2);
    seal_on_four(&store, 2);
    // And again: a second restart is no different.
    assert!(drop_connections(&db) >= 1);
    assert_eq!(store.head("o1").unwrap().seq, 3);
    seal_on_four(&store, 3);
    for t in 0..4 {
        let r = verify_store(&store, &format!("o{t}"), &ChainOnly);
        assert!(r.is_valid(), "{:?}", r.error);
        assert_eq!(r.verified, 4, "outlet o{t}: nothing lost, nothing twice");
    }
}

#[test]
fn an_index_row_goes_into_one_btree_and_lookups_find_both_kinds() {
    let db = TestDb::create().unwrap();
    let store = PgStore::connect(&db.url, 2).unwrap();
    let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let mut defs: Vec<String> = c
        .query(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'ledger_index'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    defs.sort();
    assert_eq!(defs.len(), 2, "{defs:?}");
    assert!(
        defs[0].contains("ledger_index_multi") && defs[0].ends_with("WHERE (NOT is_unique)"),
        "{defs:?}"
    );
    assert!(
        defs[1].contains("UNIQUE") && defs[1].ends_with("WHERE is_unique"),
        "{defs:?}"
    );
    // A unique key and a repeatable one, through the store.
    let head = store.head(OUTLET).unwrap();
    let mut e = head
        .prepare(&invoice(InvoiceType::Fv, 2026, 1_764_300_000_000))
        .unwrap()
        .seal(payload(1));
    e.index
        .push(bonopay_ledger::IndexKey::unique("idempotency", "k1"));
    e.index
        .push(bonopay_ledger::IndexKey::multi("credits", "orig"));
    store.append(&e).unwrap();
    let head = store.head(OUTLET).unwrap();
    let mut e2 = head
        .prepare(&invoice(InvoiceType::Fv, 2026, 1_764_300_000_001))
        .unwrap()
        .seal(payload(2));
    e2.index
        .push(bonopay_ledger::IndexKey::multi("credits", "orig"));
    store.append(&e2).unwrap();
    assert_eq!(
        store.find_index("idempotency", "k1").unwrap(),
        vec![(OUTLET.to_owned(), 1)]
    );
    assert_eq!(
        store.find_index("credits", "orig").unwrap(),
        vec![(OUTLET.to_owned(), 1), (OUTLET.to_owned(), 2)]
    );
    assert!(store.find_index("idempotency", "orig").unwrap().is_empty());
}

#[test]
fn a_call_waiting_for_a_busy_pool_fails_after_the_checkout_timeout() {
    let db = TestDb::create().unwrap();
    let pool = std::sync::Arc::new(
        bonopay_ledger::PgPool::new(&db.url, 1)
            .with_checkout_timeout(std::time::Duration::from_millis(200)),
    );
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (taken, wait_taken) = std::sync::mpsc::channel::<()>();
    let holder = {
        let pool = std::sync::Arc::clone(&pool);
        std::thread::spawn(move || {
            pool.with(|_| {
                taken.send(()).unwrap();
                // Holds the only connection until the other call is over
                // (or for 5 s: a pool without the timeout then serves the
                // other call late, and the test fails rather than hangs).
                let _ = held.recv_timeout(std::time::Duration::from_secs(5));
            })
            .unwrap();
        })
    };
    wait_taken.recv().unwrap();
    let err = pool.with(|_| ()).unwrap_err();
    assert!(
        matches!(&err, bonopay_ledger::LedgerError::Unavailable(m) if m.contains("came free")),
        "{err:?}"
    );
    drop(release);
    holder.join().unwrap();
    // Once the connection is back, calls go through again.
    pool.with(|c| c.client.simple_query("SELECT 1").map(|_| ()))
        .unwrap()
        .unwrap();
}

#[test]
fn a_url_that_does_not_parse_is_an_error_not_a_panic() {
    let pool = bonopay_ledger::PgPool::new("postgres://[not a host", 1);
    let err = pool.with(|_| ()).unwrap_err();
    assert!(
        matches!(&err, bonopay_ledger::LedgerError::Unavailable(m) if m.contains("does not parse")),
        "{err:?}"
    );
}
