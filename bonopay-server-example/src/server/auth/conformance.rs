//! The conformance suite every [`ApiKeyStore`] backend must pass.
//!
//! ```
//! use bonopay_server_example::server::auth::{MemoryKeyStore, conformance};
//! conformance::run_all(&|| Box::new(MemoryKeyStore::new()));
//! ```
//!
//! Failures panic with a message naming the broken promise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use super::*;

/// Builds a fresh, empty store.
pub type Factory<'a> = &'a dyn Fn() -> Box<dyn ApiKeyStore>;

fn key(id: &str, merchant: &str, role: Role, outlets: Option<&[&str]>) -> ApiKey {
    ApiKey {
        id: id.into(),
        merchant_nif: merchant.into(),
        role,
        outlets: outlets.map(|o| o.iter().map(|s| (*s).to_owned()).collect()),
        label: Some(format!("label of {id}")),
        created_at: "2026-01-01T00:00:00Z".into(),
        revoked: false,
    }
}

fn outlet(id: &str, merchant: &str) -> Outlet {
    Outlet {
        id: id.into(),
        merchant_nif: merchant.into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

/// Runs every check, each on a fresh store.
pub fn run_all(factory: Factory<'_>) {
    keys_round_trip(factory);
    keys_are_scoped_to_their_merchant(factory);
    revocation(factory);
    duplicates_are_refused(factory);
    outlets(factory);
    one_outlet_id_one_merchant_under_concurrency(factory);
}

/// A key reads back exactly as stored, under its token's hash only.
pub fn keys_round_trip(factory: Factory<'_>) {
    let s = factory();
    let all = key("k1", "A1", Role::Auditor, None);
    let bound = key("k2", "A1", Role::Cashier, Some(&["o2", "o1"]));
    s.insert_key(&all, &hash_token("t1")).unwrap();
    s.insert_key(&bound, &hash_token("t2")).unwrap();
    assert_eq!(s.key_by_hash(&hash_token("t1")).unwrap(), Some(all.clone()));
    assert_eq!(
        s.key_by_hash(&hash_token("t2")).unwrap(),
        Some(bound.clone()),
        "outlets keep their order"
    );
    assert_eq!(s.key_by_hash(&hash_token("t3")).unwrap(), None);
    assert_eq!(s.list_keys("A1").unwrap(), vec![all, bound], "oldest first");
}

/// Listing and revoking never cross merchants.
pub fn keys_are_scoped_to_their_merchant(factory: Factory<'_>) {
    let s = factory();
    s.insert_key(&key("ka", "A1", Role::Owner, None), &hash_token("ta"))
        .unwrap();
    s.insert_key(&key("kb", "B2", Role::Owner, None), &hash_token("tb"))
        .unwrap();
    assert_eq!(s.list_keys("A1").unwrap().len(), 1);
    assert_eq!(s.list_keys("B2").unwrap()[0].id, "kb");
    assert!(s.list_keys("C3").unwrap().is_empty());
    assert!(
        !s.revoke_key("B2", "ka").unwrap(),
        "B2 cannot revoke A1's key"
    );
    assert!(!s.key_by_hash(&hash_token("ta")).unwrap().unwrap().revoked);
}

/// A revocation shows on the very next lookup, and stays.
pub fn revocation(factory: Factory<'_>) {
    let s = factory();
    s.insert_key(
        &key("k1", "A1", Role::Cashier, Some(&["o1"])),
        &hash_token("t1"),
    )
    .unwrap();
    assert!(s.revoke_key("A1", "k1").unwrap());
    assert!(s.key_by_hash(&hash_token("t1")).unwrap().unwrap().revoked);
    assert!(
        s.revoke_key("A1", "k1").unwrap(),
        "revoking a revoked key still finds it"
    );
    assert!(!s.revoke_key("A1", "nope").unwrap());
    assert!(s.list_keys("A1").unwrap()[0].revoked);
}

/// Two keys never share an id or a token hash.
pub fn duplicates_are_refused(factory: Factory<'_>) {
    let s = factory();
    s.insert_key(&key("k1", "A1", Role::Owner, None), &hash_token("t1"))
        .unwrap();
    assert!(
        s.insert_key(&key("k1", "A1", Role::Owner, None), &hash_token("t2"))
            .is_err()
    );
    assert!(
        s.insert_key(&key("k2", "B2", Role::Owner, None), &hash_token("t1"))
            .is_err()
    );
    assert_eq!(s.list_keys("A1").unwrap().len(), 1);
    assert!(s.list_keys("B2").unwrap().is_empty());
}

/// Outlets: registered once, listed per merchant in order.
pub fn outlets(factory: Factory<'_>) {
    let s = factory();
    s.insert_outlet(&outlet("o2", "A1")).unwrap();
    s.insert_outlet(&outlet("o1", "A1")).unwrap();
    s.insert_outlet(&outlet("b1", "B2")).unwrap();
    assert!(matches!(
        s.insert_outlet(&outlet("o1", "A1")),
        Err(AuthError::OutletTaken(id)) if id == "o1"
    ));
    assert!(matches!(
        s.insert_outlet(&outlet("o1", "B2")),
        Err(AuthError::OutletTaken(_))
    ));
    assert_eq!(s.outlet("o1").unwrap(), Some(outlet("o1", "A1")));
    assert_eq!(s.outlet("zz").unwrap(), None);
    let ids: Vec<String> = s
        .list_outlets("A1")
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, ["o2", "o1"], "oldest first");
    assert_eq!(s.list_outlets("B2").unwrap().len(), 1);
}

/// Racing registrations of one outlet id: exactly one wins.
pub fn one_outlet_id_one_merchant_under_concurrency(factory: Factory<'_>) {
    let s: Arc<dyn ApiKeyStore> = Arc::from(factory());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.insert_outlet(&outlet("race", &format!("M{i}"))).is_ok())
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|w| *w)
        .count();
    assert_eq!(wins, 1);
    let owner = s.outlet("race").unwrap().unwrap().merchant_nif;
    assert_eq!(s.list_outlets(&owner).unwrap().len(), 1);
}
