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
