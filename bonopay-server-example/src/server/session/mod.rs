//! Browser sessions: the server side of the merchant dashboard's sign-in
//! (issue 18).
//!
//! A person signs in with an API key (`POST /v1/session`); the server
//! answers with a session token in the `bp_session` cookie (`HttpOnly`, so
//! no script reads it, and `SameSite=Strict`, so no other site's page sends
//! it) and a CSRF token the app sends back in `X-CSRF-Token` on every
//! unsafe request, since a cookie, unlike a bearer header, is attached by
//! the browser on its own. The session acts as the key it was made from:
//! the key is re-read on every request, so its role and outlets apply
//! unchanged and a revoked key ends its sessions at once.
//!
//! The session token is 32 random bytes; only
//! `SHA-256("bonopay/v1/session\0" ‖ token)` is stored, so a copy of the
//! store signs nobody in. A session ends [`IDLE_TIMEOUT_SECS`] after its
//! last request, and [`ABSOLUTE_TIMEOUT_SECS`] after it was made whatever
//! happens: a till left signed in does not stay so for ever.
//!
//! Storage sits behind the synchronous, object-safe [`SessionStore`]:
//! [`MemorySessionStore`] (the reference), [`SqliteSessionStore`] (table
//! `browser_sessions` of `auth.db`) and
//! [`PgSessionStore`](postgres::PgSessionStore), which pass one
//! conformance suite ([`conformance`], feature `conformance`). Times are
//! Unix seconds given by the caller, so the stores hold no clock and the
//! suite checks expiry without waiting.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::auth::ApiKey;

pub mod handlers;
mod memory;
pub mod postgres;
mod sqlite;
pub use memory::MemorySessionStore;
pub use sqlite::SqliteSessionStore;

#[cfg(feature = "conformance")]
pub mod conformance;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "bp_session";
/// Header that carries the CSRF token on unsafe cookie-authenticated
/// requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Domain tag of the stored session-token hash (distinct from the API
/// key's, so a session token can never be taken for a key or back).
pub const SESSION_HASH_DOMAIN: &[u8] = b"bonopay/v1/session\0";
/// A session ends this long after its last request: 12 hours, a working
/// day at the till.
pub const IDLE_TIMEOUT_SECS: i64 = 12 * 3600;
/// A session ends this long after sign-in, however busy: 7 days, after
/// which the person signs in again with the key.
pub const ABSOLUTE_TIMEOUT_SECS: i64 = 7 * 86_400;
/// A session's last-seen time is written at most this often (a request
/// within a minute of the last write does not write again), so that a
/// dashboard polling every few seconds costs reads, not writes. The idle
/// timeout is therefore exact to this much.
pub const TOUCH_INTERVAL_SECS: i64 = 60;

/// A stored session (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The API key it acts as.
    pub key_id: String,
    /// That key's merchant (the key is re-read by merchant and id).
    pub merchant_nif: String,
    /// The token the app must echo in `X-CSRF-Token` on unsafe requests.
    pub csrf_token: String,
    /// When it was made, Unix seconds.
    pub created_at: i64,
    /// Its last recorded request, Unix seconds.
    pub last_seen_at: i64,
    /// Its absolute end (`created_at + ABSOLUTE_TIMEOUT_SECS`), Unix seconds.
    pub expires_at: i64,
}

impl Session {
    /// When it ends unless a request comes first: the idle end, never past
    /// the absolute one.
    #[must_use]
    pub fn ends_at(&self) -> i64 {
        self.last_seen_at
            .saturating_add(IDLE_TIMEOUT_SECS)
            .min(self.expires_at)
    }

    /// Whether it is still valid at `now`.
    #[must_use]
    pub fn is_live(&self, now: i64) -> bool {
        now < self.ends_at()
    }
}

/// A session just made: its token (for the cookie, shown once), the
/// token's stored hash, and the session.
#[derive(Debug)]
#[must_use]
pub struct NewSession {
    /// The cookie value.
    pub token: String,
    /// [`hash_session_token`] of it, the store's key.
    pub hash: [u8; 32],
    /// What is stored.
    pub session: Session,
}

/// Makes a session for `key` at `now` (Unix seconds), with fresh random
/// session and CSRF tokens. Nothing is stored.
///
/// # Errors
/// [`SessionError::Storage`] if the operating system's random source fails.
pub fn new_session(key: &ApiKey, now: i64) -> Result<NewSession, SessionError> {
    let token = random_token()?;
    let csrf_token = random_token()?;
    Ok(NewSession {
        hash: hash_session_token(&token),
        token,
        session: Session {
            key_id: key.id.clone(),
            merchant_nif: key.merchant_nif.clone(),
            csrf_token,
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(ABSOLUTE_TIMEOUT_SECS),
        },
    })
}

/// 32 random bytes, base64url without padding (43 characters).
fn random_token() -> Result<String, SessionError> {
    let mut bytes = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| SessionError::Storage(format!("random source: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a session token.
#[must_use]
pub fn hash_session_token(token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SESSION_HASH_DOMAIN);
    h.update(token.as_bytes());
    h.finalize().into()
}

/// Whether `a` and `b` are equal, in time that depends on their lengths
/// only, not on where they first differ: a CSRF token must not be guessable
/// byte by byte from response times.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Session-store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A session with this token hash exists already (a random 32-byte
    /// token repeating means the random source is broken).
    #[error("a session with this token exists already")]
    Duplicate,
    /// The backend failed.
    #[error("session store: {0}")]
    Storage(String),
}

impl SessionError {
    /// Whether the same call may succeed later (a storage failure may be
    /// a lost connection; a duplicate never heals).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, SessionError::Storage(_))
    }
}

/// Storage of browser sessions, keyed by the token's hash. Synchronous and
/// object-safe; the server calls it from the blocking pool. Every time is
/// Unix seconds, given by the caller.
pub trait SessionStore: fmt::Debug + Send + Sync {
    /// Records a new session under `hash`.
    ///
    /// # Errors
    /// [`SessionError::Duplicate`] if `hash` is taken; [`SessionError::Storage`].
    fn create(&self, hash: &[u8; 32], session: &Session) -> Result<(), SessionError>;

    /// The session under `hash` if it is live at `now` ([`Session::is_live`]);
    /// `None` if there is none or it has ended.
    ///
    /// # Errors
    /// [`SessionError::Storage`].
    fn get(&self, hash: &[u8; 32], now: i64) -> Result<Option<Session>, SessionError>;

    /// Records a request at `now` (the last-seen time never goes back):
    /// `true` if the session was live and now is, `false` if it had ended
    /// or is unknown (an ended session is not revived).
    ///
    /// # Errors
    /// [`SessionError::Storage`].
    fn touch(&self, hash: &[u8; 32], now: i64) -> Result<bool, SessionError>;

    /// Ends the session under `hash` (sign-out): `true` if there was one.
    ///
    /// # Errors
    /// [`SessionError::Storage`].
    fn delete(&self, hash: &[u8; 32]) -> Result<bool, SessionError>;

    /// Ends every session of API key `key_id` (the key was revoked):
    /// how many there were.
    ///
    /// # Errors
    /// [`SessionError::Storage`].
    fn delete_for_key(&self, key_id: &str) -> Result<u64, SessionError>;

    /// Removes the sessions that have ended by `now` (housekeeping; they
    /// are refused anyway): how many.
    ///
    /// # Errors
    /// [`SessionError::Storage`].
    fn purge_expired(&self, now: i64) -> Result<u64, SessionError>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::server::auth::{Role, hash_token};

    fn key() -> ApiKey {
        ApiKey {
            id: "key_1".into(),
            merchant_nif: "A1".into(),
            role: Role::Cashier,
            outlets: Some(vec!["o1".into()]),
            label: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            revoked: false,
        }
    }

    #[test]
    fn sessions_are_random_and_hashed_apart_from_keys() {
        let a = new_session(&key(), 1000).unwrap();
        let b = new_session(&key(), 1000).unwrap();
        assert_ne!(a.token, b.token);
        assert_ne!(a.session.csrf_token, b.session.csrf_token);
        assert_ne!(a.token, a.session.csrf_token);
        assert_eq!(a.token.len(), 43);
        assert_eq!(a.hash, hash_session_token(&a.token));
        assert_ne!(
            a.hash,
            hash_token(&a.token),
            "domain-separated from API keys"
        );
        assert_eq!(a.session.expires_at, 1000 + ABSOLUTE_TIMEOUT_SECS);
    }

    #[test]
    fn a_session_ends_idle_or_absolute() {
        let mut s = new_session(&key(), 0).unwrap().session;
        assert!(s.is_live(IDLE_TIMEOUT_SECS - 1));
        assert!(!s.is_live(IDLE_TIMEOUT_SECS));
        s.last_seen_at = ABSOLUTE_TIMEOUT_SECS - 10;
        assert_eq!(s.ends_at(), ABSOLUTE_TIMEOUT_SECS);
        assert!(!s.is_live(ABSOLUTE_TIMEOUT_SECS));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
