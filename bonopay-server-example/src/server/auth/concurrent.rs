//! The [`ApiKeyStore`] conformance suite over shared handles (feature
//! `conformance`): every backend (memory, SQLite, PostgreSQL) runs it.
//!
//! [`run_all`] runs the single-store checks of
//! [`auth::conformance`](super::conformance) and the checks below,
//! which need the store behind an [`Arc`] to hammer it from several threads
//! at once. [`shared_database`] is for backends that several handles (or
//! processes) open at once: it takes a factory that opens the *same*
//! database on every call. Each check panics with a message naming the
//! broken promise.
//!
//! ```
//! use std::sync::Arc;
//! use bonopay_server_example::server::auth::MemoryKeyStore;
//! use bonopay_server_example::server::auth::concurrent as auth_conformance;
//!
//! auth_conformance::run_all(&|| Arc::new(MemoryKeyStore::new()));
//! ```
#![cfg(feature = "conformance")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Barrier};

use super::{ApiKey, ApiKeyStore, AuthError, Outlet, Role, conformance, hash_token};

/// Threads the concurrency checks race.
pub const THREADS: usize = 8;

/// Opens a store: a fresh, empty one for [`run_all`]; one more handle on
/// the same database for [`shared_database`].
pub type Open<'a> = &'a dyn Fn() -> Arc<dyn ApiKeyStore>;

/// Lets the `Box`-based single-store checks run on a shared handle.
#[derive(Debug)]
struct Handle(Arc<dyn ApiKeyStore>);

impl ApiKeyStore for Handle {
    fn insert_key(&self, key: &ApiKey, hash: &[u8; 32]) -> Result<(), AuthError> {
        self.0.insert_key(key, hash)
    }
    fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKey>, AuthError> {
        self.0.key_by_hash(hash)
    }
    fn list_keys(&self, merchant_nif: &str) -> Result<Vec<ApiKey>, AuthError> {
        self.0.list_keys(merchant_nif)
    }
    fn revoke_key(&self, merchant_nif: &str, id: &str) -> Result<bool, AuthError> {
        self.0.revoke_key(merchant_nif, id)
    }
    fn insert_outlet(&self, outlet: &Outlet) -> Result<(), AuthError> {
        self.0.insert_outlet(outlet)
    }
    fn outlet(&self, id: &str) -> Result<Option<Outlet>, AuthError> {
        self.0.outlet(id)
    }
    fn list_outlets(&self, merchant_nif: &str) -> Result<Vec<Outlet>, AuthError> {
        self.0.list_outlets(merchant_nif)
    }
}

fn key(id: &str, merchant: &str, role: Role, outlets: Option<&[&str]>) -> ApiKey {
    ApiKey {
        id: id.into(),
        merchant_nif: merchant.into(),
        role,
        outlets: outlets.map(|o| o.iter().map(|s| (*s).to_owned()).collect()),
        label: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        revoked: false,
    }
}

fn outlet(id: &str, merchant: &str) -> Outlet {
    Outlet {
        id: id.into(),
        merchant_nif: merchant.into(),
        created_at: "2026-01-01T00:00:00+01:00".into(),
    }
}

/// Runs `f(i)` on [`THREADS`] threads released together; the results in
/// thread order. (The other stores' suites race with it too.)
pub(crate) fn race<T: Send + 'static>(f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (f, start) = (Arc::clone(&f), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                f(i)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a racing thread panicked"))
        .collect()
}

/// Runs every check, each on a fresh store: the single-store suite of
/// [`auth::conformance`](super::conformance), then the checks of
/// this module (except [`shared_database`], which needs handles on one
/// database).
pub fn run_all(fresh: Open<'_>) {
    conformance::run_all(&|| Box::new(Handle(fresh())));
    fields_round_trip_exactly(fresh);
    concurrent_inserts(fresh);
    racing_duplicate_keys(fresh);
    last_owner_key_stays(fresh);
}

/// A merchant keeps one owner key: revoking the last one is refused with
/// [`AuthError::LastOwnerKey`], other roles and already-revoked keys are
/// not concerned, and owners revoking themselves all at once leave exactly
/// one.
pub fn last_owner_key_stays(fresh: Open<'_>) {
    let s = fresh();
    s.insert_key(&key("o1", "A1", Role::Owner, None), &hash_token("o1"))
        .unwrap();
    s.insert_key(&key("c1", "A1", Role::Cashier, None), &hash_token("c1"))
        .unwrap();
    s.insert_key(&key("b1", "B2", Role::Owner, None), &hash_token("b1"))
        .unwrap();
    assert!(
        matches!(s.revoke_key("A1", "o1"), Err(AuthError::LastOwnerKey(id)) if id == "o1"),
        "the only owner key of A1 cannot be revoked"
    );
    assert!(
        !s.key_by_hash(&hash_token("o1")).unwrap().unwrap().revoked,
        "a refused revocation changes nothing"
    );
    assert!(s.revoke_key("A1", "c1").unwrap(), "a cashier key can go");
    assert!(!s.revoke_key("A1", "b1").unwrap(), "B2's key is not A1's");
    s.insert_key(&key("o2", "A1", Role::Owner, None), &hash_token("o2"))
        .unwrap();
    assert!(
        s.revoke_key("A1", "o1").unwrap(),
        "with a second owner, yes"
    );
    assert!(
        s.revoke_key("A1", "o1").unwrap(),
        "revoking a revoked owner key is still idempotent"
    );
    assert!(matches!(
        s.revoke_key("A1", "o2"),
        Err(AuthError::LastOwnerKey(_))
    ));

    let s = fresh();
    for i in 0..THREADS {
        s.insert_key(
            &key(&format!("r{i}"), "R1", Role::Owner, None),
            &hash_token(&format!("r{i}")),
        )
        .unwrap();
    }
    let theirs = Arc::clone(&s);
    let outcomes = race(move |i| theirs.revoke_key("R1", &format!("r{i}")));
    assert_eq!(
        outcomes.iter().filter(|r| matches!(r, Ok(true))).count(),
        THREADS - 1,
        "all owners but one revoked: {outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|r| matches!(r, Err(AuthError::LastOwnerKey(_))))
            .count(),
        1,
        "exactly one refused: {outcomes:?}"
    );
    let live = s
        .list_keys("R1")
        .unwrap()
        .into_iter()
        .filter(|k| !k.revoked)
        .count();
    assert_eq!(live, 1, "one owner key is left");
}

/// Every field reads back as written: a key bound to no outlet stays bound
/// to none (it is not "every outlet"), revoked-at-insert stays revoked,
/// text is not normalized.
pub fn fields_round_trip_exactly(fresh: Open<'_>) {
    let s = fresh();
    let none = key("k-none", "A1", Role::Integration, Some(&[]));
    s.insert_key(&none, &hash_token("t-none")).unwrap();
    let back = s.key_by_hash(&hash_token("t-none")).unwrap().unwrap();
    assert_eq!(
        back.outlets,
        Some(Vec::new()),
        "no outlet is not every outlet"
    );
    assert!(!back.covers("o1"));

    let mut odd = key(
        "k-odd",
        "A1",
        Role::Auditor,
        Some(&["kin.gombe-01", "lub_02", "z"]),
    );
    odd.label = Some("Caisse n°3 — Gombe « ERP » 🇨🇩 'quoted' \"too\"".into());
    odd.created_at = "2026-03-01T08:00:00+02:00".into();
    odd.revoked = true;
    s.insert_key(&odd, &hash_token("t-odd")).unwrap();
    assert_eq!(
        s.key_by_hash(&hash_token("t-odd")).unwrap(),
        Some(odd.clone())
    );
    assert_eq!(s.list_keys("A1").unwrap(), vec![back, odd]);

    let o = Outlet {
        id: "lub-02".into(),
        merchant_nif: "A1309334L".into(),
        created_at: "2026-03-01T08:00:00+02:00".into(),
    };
    s.insert_outlet(&o).unwrap();
    assert_eq!(s.outlet("lub-02").unwrap(), Some(o.clone()));
    assert_eq!(s.outlet("LUB-02").unwrap(), None, "ids are case-sensitive");
    assert_eq!(s.list_outlets("A1309334L").unwrap(), vec![o]);
}

/// [`THREADS`] threads at once each insert keys, then all register the
/// same outlet id: exactly one registration wins, the others are
/// [`AuthError::OutletTaken`], and every key is found by its hash.
pub fn concurrent_inserts(fresh: Open<'_>) {
    const KEYS_PER_THREAD: usize = 4;
    let s = fresh();
    let store = Arc::clone(&s);
    let outcomes = race(move |i| {
        for j in 0..KEYS_PER_THREAD {
            let k = key(
                &format!("k{i}-{j}"),
                &format!("M{}", i % 2),
                Role::Cashier,
                None,
            );
            store
                .insert_key(&k, &hash_token(&format!("t{i}-{j}")))
                .unwrap_or_else(|e| panic!("key k{i}-{j} refused under concurrency: {e}"));
        }
        store.insert_outlet(&outlet("race", &format!("M{i}")))
    });
    let mut wins = 0;
    for outcome in outcomes {
        match outcome {
            Ok(()) => wins += 1,
            Err(AuthError::OutletTaken(id)) => assert_eq!(id, "race"),
            Err(e) => panic!("a losing outlet registration must be OutletTaken, not {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one registration of an outlet id wins");
    let owner = s.outlet("race").unwrap().unwrap().merchant_nif;
    assert_eq!(s.list_outlets(&owner).unwrap().len(), 1);
    for i in 0..THREADS {
        for j in 0..KEYS_PER_THREAD {
            let k = s
                .key_by_hash(&hash_token(&format!("t{i}-{j}")))
                .unwrap()
                .unwrap_or_else(|| panic!("key k{i}-{j} lost"));
            assert_eq!(k.id, format!("k{i}-{j}"));
        }
    }
    let per_merchant = THREADS / 2 * KEYS_PER_THREAD;
    assert_eq!(s.list_keys("M0").unwrap().len(), per_merchant);
    assert_eq!(s.list_keys("M1").unwrap().len(), per_merchant);
}

/// Racing inserts of one key id (or one token hash): exactly one wins, the
/// others fail, and the winner is what reads back.
pub fn racing_duplicate_keys(fresh: Open<'_>) {
    let s = fresh();

    let store = Arc::clone(&s);
    let same_id = race(move |i| {
        store.insert_key(
            &key("dup", &format!("M{i}"), Role::Owner, None),
            &hash_token(&format!("id-race-{i}")),
        )
    });
    let winners: Vec<usize> = (0..THREADS).filter(|i| same_id[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "one key id, one key");
    assert!(
        same_id
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(AuthError::Storage(_)))),
        "a duplicate key is a storage error, as on SQLite"
    );
    let w = winners[0];
    let k = s
        .key_by_hash(&hash_token(&format!("id-race-{w}")))
        .unwrap()
        .unwrap();
    assert_eq!(k.merchant_nif, format!("M{w}"));
    for i in (0..THREADS).filter(|i| *i != w) {
        assert_eq!(
            s.key_by_hash(&hash_token(&format!("id-race-{i}"))).unwrap(),
            None
        );
    }

    let store = Arc::clone(&s);
    let same_hash = race(move |i| {
        store.insert_key(
            &key(&format!("h{i}"), "H1", Role::Owner, None),
            &hash_token("hash-race"),
        )
    });
    assert_eq!(
        same_hash.iter().filter(|r| r.is_ok()).count(),
        1,
        "one token, one key"
    );
    let w = same_hash.iter().position(Result::is_ok).unwrap();
    assert_eq!(
        s.key_by_hash(&hash_token("hash-race")).unwrap().unwrap().id,
        format!("h{w}")
    );
    assert_eq!(s.list_keys("H1").unwrap().len(), 1);
}

/// Several handles on one database (as several server processes): what
/// one writes, the others read at once: keys, revocations, outlets; and
/// racing registrations of one outlet id through different handles have
/// one winner. `open` returns a new handle on the same, initially empty,
/// database on every call.
pub fn shared_database(open: Open<'_>) {
    let a = open();
    let b = open();
    a.insert_key(
        &key("k1", "A1", Role::Cashier, Some(&["o1"])),
        &hash_token("t1"),
    )
    .unwrap();
    let seen = b.key_by_hash(&hash_token("t1")).unwrap();
    assert!(seen.is_some_and(|k| !k.revoked), "b sees a's key");
    assert!(b.revoke_key("A1", "k1").unwrap());
    assert!(
        a.key_by_hash(&hash_token("t1")).unwrap().unwrap().revoked,
        "a revocation through b shows through a on the next lookup"
    );
    assert!(
        b.insert_key(&key("k1", "A1", Role::Owner, None), &hash_token("t2"))
            .is_err(),
        "a key id taken through a is taken for b"
    );

    a.insert_outlet(&outlet("o1", "A1")).unwrap();
    assert!(matches!(
        b.insert_outlet(&outlet("o1", "B2")),
        Err(AuthError::OutletTaken(_))
    ));
    b.insert_outlet(&outlet("o2", "A1")).unwrap();
    let ids: Vec<String> = a
        .list_outlets("A1")
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, ["o1", "o2"], "oldest first, across handles");

    let handles: Vec<Arc<dyn ApiKeyStore>> = (0..THREADS / 2).map(|_| open()).collect();
    let handles = Arc::new(handles);
    let theirs = Arc::clone(&handles);
    let outcomes = race(move |i| {
        theirs[i % theirs.len()].insert_outlet(&outlet("shared-race", &format!("M{i}")))
    });
    assert_eq!(
        outcomes.iter().filter(|r| r.is_ok()).count(),
        1,
        "one outlet id, one merchant, across handles"
    );
    assert!(
        outcomes
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(AuthError::OutletTaken(_))))
    );
    // Owners revoking each other through different handles (processes)
    // still leave one.
    for i in 0..THREADS {
        a.insert_key(
            &key(&format!("s{i}"), "S1", Role::Owner, None),
            &hash_token(&format!("s{i}")),
        )
        .unwrap();
    }
    let theirs = Arc::clone(&handles);
    let revoked = race(move |i| theirs[i % theirs.len()].revoke_key("S1", &format!("s{i}")));
    assert_eq!(
        revoked.iter().filter(|r| matches!(r, Ok(true))).count(),
        THREADS - 1,
        "across handles, all owners but one revoked: {revoked:?}"
    );
    assert_eq!(
        b.list_keys("S1")
            .unwrap()
            .iter()
            .filter(|k| !k.revoked)
            .count(),
        1
    );

    let owner = a.outlet("shared-race").unwrap().unwrap().merchant_nif;
    for h in handles.iter() {
        assert_eq!(
            h.outlet("shared-race").unwrap().unwrap().merchant_nif,
            owner
        );
    }
}
