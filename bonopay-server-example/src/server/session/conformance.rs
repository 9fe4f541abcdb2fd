//! The conformance suite every [`SessionStore`] backend runs (feature
//! `conformance`): memory, SQLite and PostgreSQL. Each check panics with a
//! message naming the broken promise.
//!
//! ```
//! use std::sync::Arc;
//! use bonopay_server_example::server::session::{MemorySessionStore, conformance};
//!
//! conformance::run_all(&|| Arc::new(MemorySessionStore::new()));
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::{
    ABSOLUTE_TIMEOUT_SECS, IDLE_TIMEOUT_SECS, Session, SessionError, SessionStore,
    hash_session_token,
};

/// Opens a fresh, empty store.
pub type Open<'a> = &'a dyn Fn() -> Arc<dyn SessionStore>;

/// Sign-in time of the sessions the checks make (Unix seconds).
pub const T0: i64 = 1_780_000_000;

/// A session of `key_id` (merchant `A1`) made at `t`.
#[must_use]
pub fn session(key_id: &str, t: i64) -> Session {
    Session {
        key_id: key_id.into(),
        merchant_nif: "A1".into(),
        csrf_token: format!("csrf-of-{key_id}-{t}"),
        created_at: t,
        last_seen_at: t,
        expires_at: t + ABSOLUTE_TIMEOUT_SECS,
    }
}

/// Runs every check, each on a fresh store.
pub fn run_all(fresh: Open<'_>) {
    round_trips_by_hash_only(fresh);
    a_hash_is_taken_once(fresh);
    idle_sessions_end(fresh);
    touching_extends_up_to_the_absolute_end(fresh);
    sign_out_deletes_one(fresh);
    revocation_deletes_every_session_of_the_key(fresh);
    purge_removes_only_ended_sessions(fresh);
}

/// A session reads back exactly as stored, under its hash only.
pub fn round_trips_by_hash_only(fresh: Open<'_>) {
    let s = fresh();
    let a = session("key_a", T0);
    s.create(&hash_session_token("ta"), &a).unwrap();
    assert_eq!(s.get(&hash_session_token("ta"), T0).unwrap(), Some(a));
    assert_eq!(s.get(&hash_session_token("tb"), T0).unwrap(), None);
}

/// A second session under the same hash is refused, and the first stays.
pub fn a_hash_is_taken_once(fresh: Open<'_>) {
    let s = fresh();
    let h = hash_session_token("t");
    s.create(&h, &session("key_a", T0)).unwrap();
    assert!(matches!(
        s.create(&h, &session("key_b", T0)),
        Err(SessionError::Duplicate)
    ));
    assert_eq!(s.get(&h, T0).unwrap().unwrap().key_id, "key_a");
}

/// With no request for the idle timeout, a session is refused, and a
/// touch does not revive it.
pub fn idle_sessions_end(fresh: Open<'_>) {
    let s = fresh();
    let h = hash_session_token("t");
    s.create(&h, &session("key_a", T0)).unwrap();
    assert!(s.get(&h, T0 + IDLE_TIMEOUT_SECS - 1).unwrap().is_some());
    assert_eq!(s.get(&h, T0 + IDLE_TIMEOUT_SECS).unwrap(), None);
    assert!(
        !s.touch(&h, T0 + IDLE_TIMEOUT_SECS).unwrap(),
        "an ended session is not revived"
    );
    assert_eq!(s.get(&h, T0 + IDLE_TIMEOUT_SECS).unwrap(), None);
    assert!(!s.touch(&hash_session_token("nope"), T0).unwrap());
}

/// A touch moves the idle end forward (never back), but never past the
/// absolute end.
pub fn touching_extends_up_to_the_absolute_end(fresh: Open<'_>) {
    let s = fresh();
    let h = hash_session_token("t");
    s.create(&h, &session("key_a", T0)).unwrap();
    let mut t = T0;
    while t + IDLE_TIMEOUT_SECS / 2 < T0 + ABSOLUTE_TIMEOUT_SECS {
        t += IDLE_TIMEOUT_SECS / 2;
        assert!(s.touch(&h, t).unwrap(), "live at {t}");
    }
    assert_eq!(s.get(&h, t).unwrap().unwrap().last_seen_at, t);
    assert!(s.touch(&h, t - 100).unwrap());
    assert_eq!(
        s.get(&h, t).unwrap().unwrap().last_seen_at,
        t,
        "the last-seen time never goes back"
    );
    assert!(s.get(&h, T0 + ABSOLUTE_TIMEOUT_SECS - 1).unwrap().is_some());
    assert_eq!(
        s.get(&h, T0 + ABSOLUTE_TIMEOUT_SECS).unwrap(),
        None,
        "refused at the absolute end, however recent the last request"
    );
    assert!(!s.touch(&h, T0 + ABSOLUTE_TIMEOUT_SECS).unwrap());
}

/// Sign-out deletes that session only.
pub fn sign_out_deletes_one(fresh: Open<'_>) {
    let s = fresh();
    let (h1, h2) = (hash_session_token("t1"), hash_session_token("t2"));
    s.create(&h1, &session("key_a", T0)).unwrap();
    s.create(&h2, &session("key_a", T0)).unwrap();
    assert!(s.delete(&h1).unwrap());
    assert!(!s.delete(&h1).unwrap(), "gone already");
    assert_eq!(s.get(&h1, T0).unwrap(), None);
    assert!(s.get(&h2, T0).unwrap().is_some());
}

/// Revoking a key ends every session made from it, and no other.
pub fn revocation_deletes_every_session_of_the_key(fresh: Open<'_>) {
    let s = fresh();
    for (t, k) in [("t1", "key_a"), ("t2", "key_a"), ("t3", "key_b")] {
        s.create(&hash_session_token(t), &session(k, T0)).unwrap();
    }
    assert_eq!(s.delete_for_key("key_a").unwrap(), 2);
    assert_eq!(s.delete_for_key("key_a").unwrap(), 0);
    assert_eq!(s.get(&hash_session_token("t1"), T0).unwrap(), None);
    assert_eq!(s.get(&hash_session_token("t2"), T0).unwrap(), None);
    assert!(s.get(&hash_session_token("t3"), T0).unwrap().is_some());
}

/// Housekeeping removes ended sessions and keeps live ones.
pub fn purge_removes_only_ended_sessions(fresh: Open<'_>) {
    let s = fresh();
    s.create(&hash_session_token("old"), &session("key_a", T0))
        .unwrap();
    let later = T0 + IDLE_TIMEOUT_SECS;
    s.create(&hash_session_token("new"), &session("key_a", later))
        .unwrap();
    assert_eq!(s.purge_expired(later).unwrap(), 1);
    assert_eq!(s.purge_expired(later).unwrap(), 0);
    assert!(s.get(&hash_session_token("new"), later).unwrap().is_some());
    assert!(!s.delete(&hash_session_token("old")).unwrap(), "purged");
}
