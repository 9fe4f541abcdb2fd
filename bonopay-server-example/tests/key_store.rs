//! The ApiKeyStore conformance suite on every backend, and SQLite's
//! durability across a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bonopay_server_example::server::auth::{
    ApiKey, ApiKeyStore, MemoryKeyStore, Outlet, Role, SqliteKeyStore, conformance, hash_token,
};

#[test]
fn memory_store_conforms() {
    conformance::run_all(&|| Box::new(MemoryKeyStore::new()));
}

#[test]
fn sqlite_in_memory_conforms() {
    conformance::run_all(&|| Box::new(SqliteKeyStore::in_memory().unwrap()));
}

#[test]
fn sqlite_file_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(&|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::new(SqliteKeyStore::open(&dir.path().join(format!("auth-{i}.db"))).unwrap())
    });
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
