//! The SessionStore conformance suite on PostgreSQL, and two handles
//! (two server instances) sharing one database.
//!
//! Needs a PostgreSQL server: `postgres://postgres@127.0.0.1:5432/postgres`
//! by default, or the admin URL in `BONOPAY_TEST_PG`. Every store gets a
//! database of its own (`bonopay_ledger::TestDb`), dropped afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};

use bonopay_ledger::TestDb;
use bonopay_server_example::server::session::postgres::PgSessionStore;
use bonopay_server_example::server::session::{SessionStore, conformance, hash_session_token};

#[test]
fn postgres_session_store_conforms() {
    let dbs = Mutex::new(Vec::new());
    conformance::run_all(&|| {
        let db = TestDb::create().unwrap();
        let store = Arc::new(PgSessionStore::connect(&db.url).unwrap());
        dbs.lock().unwrap().push(db);
        store
    });
}

#[test]
fn postgres_sessions_are_shared_by_instances() {
    let db = TestDb::create().unwrap();
    let a = PgSessionStore::connect(&db.url).unwrap();
    let b = PgSessionStore::connect(&db.url).unwrap();
    let h = hash_session_token("t");
    a.create(&h, &conformance::session("key_a", conformance::T0))
        .unwrap();
    assert!(b.get(&h, conformance::T0).unwrap().is_some());
    assert!(b.touch(&h, conformance::T0 + 60).unwrap());
    assert_eq!(
        a.get(&h, conformance::T0 + 60)
            .unwrap()
            .unwrap()
            .last_seen_at,
        conformance::T0 + 60
    );
    assert_eq!(b.delete_for_key("key_a").unwrap(), 1);
    assert_eq!(a.get(&h, conformance::T0).unwrap(), None);
}
