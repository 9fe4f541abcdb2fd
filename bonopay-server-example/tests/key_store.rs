//! The ApiKeyStore conformance suite on the memory and SQLite backends,
//! and SQLite's durability across a reopen. (PostgreSQL: key_store_pg.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bonopay_server_example::server::auth::concurrent as auth_conformance;
use bonopay_server_example::server::auth::{
    ApiKey, ApiKeyStore, MemoryKeyStore, Outlet, Role, SqliteKeyStore, hash_token,
};

#[test]
fn memory_store_conforms() {
    auth_conformance::run_all(&|| Arc::new(MemoryKeyStore::new()));
}

#[test]
fn sqlite_in_memory_conforms() {
    auth_conformance::run_all(&|| Arc::new(SqliteKeyStore::in_memory().unwrap()));
}

#[test]
fn sqlite_file_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    auth_conformance::run_all(&|| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Arc::new(SqliteKeyStore::open(&dir.path().join(format!("auth-{i}.db"))).unwrap())
    });
}

#[test]
fn sqlite_file_shared_by_several_handles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    auth_conformance::shared_database(&|| Arc::new(SqliteKeyStore::open(&path).unwrap()));
}

#[test]
fn sqlite_keeps_keys_revocations_and_outlets_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let key = ApiKey {
        id: "key_1".into(),
        merchant_nif: "A1".into(),
        role: Role::Integration,
        outlets: Some(vec!["o1".into()]),
        label: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        revoked: false,
    };
    {
        let s = SqliteKeyStore::open(&path).unwrap();
        s.insert_key(&key, &hash_token("t")).unwrap();
        s.insert_outlet(&Outlet {
            id: "o1".into(),
            merchant_nif: "A1".into(),
            created_at: "t".into(),
        })
        .unwrap();
        assert!(s.revoke_key("A1", "key_1").unwrap());
    }
    let s = SqliteKeyStore::open(&path).unwrap();
    let back = s.key_by_hash(&hash_token("t")).unwrap().unwrap();
    assert!(back.revoked);
    assert_eq!(back.outlets, key.outlets);
    assert_eq!(s.outlet("o1").unwrap().unwrap().merchant_nif, "A1");
}
