//! The SessionStore conformance suite on the memory and SQLite backends
//! (PostgreSQL: `tests/session_store_pg.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use bonopay_server_example::server::session::{
    MemorySessionStore, SqliteSessionStore, conformance,
};

#[test]
fn memory_session_store_conforms() {
    conformance::run_all(&|| Arc::new(MemorySessionStore::new()));
}

#[test]
fn sqlite_session_store_conforms() {
    conformance::run_all(&|| Arc::new(SqliteSessionStore::in_memory().unwrap()));
}

#[test]
fn sqlite_sessions_live_in_auth_db_beside_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let _keys = bonopay_server_example::server::auth::SqliteKeyStore::open(&path).unwrap();
    conformance::run_all(&|| {
        let p = dir.path().join(format!("auth-{}.db", rand()));
        Arc::new(SqliteSessionStore::open(&p).unwrap())
    });
    // Two handles on one file see each other's sessions.
    let a = SqliteSessionStore::open(&path).unwrap();
    let b = SqliteSessionStore::open(&path).unwrap();
    use bonopay_server_example::server::session::{SessionStore, hash_session_token};
    let h = hash_session_token("t");
    a.create(&h, &conformance::session("key_a", conformance::T0))
        .unwrap();
    assert!(b.get(&h, conformance::T0).unwrap().is_some());
    assert_eq!(b.delete_for_key("key_a").unwrap(), 1);
    assert_eq!(a.get(&h, conformance::T0).unwrap(), None);
}

fn rand() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
