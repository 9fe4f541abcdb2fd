//! API keys and outlets: who may do what.
//!
//! A key is a random 32-byte token, shown once as `bp_live_<base64url>` and
//! stored only as `SHA-256("bonopay/v1/api-key\0" ‖ token)`. Each key is
//! scoped to one merchant (NIF), has one [`Role`] and a set of outlets
//! (`None` means every outlet of the merchant). Keys are looked up on every
//! request, with no cache, so a revocation takes effect at once.
//!
//! Storage sits behind the synchronous, object-safe [`ApiKeyStore`] trait:
//! [`SqliteKeyStore`] (`auth.db` in the data directory) and
//! [`MemoryKeyStore`] (the reference implementation) pass the same
//! conformance suite (module `conformance`, feature `conformance`), which a
//! PostgreSQL backend would run too.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// Prefix of every API key token.
pub const TOKEN_PREFIX: &str = "bp_live_";
/// Domain tag of the stored key hash.
pub const KEY_HASH_DOMAIN: &[u8] = b"bonopay/v1/api-key\0";

/// What a key may do (see the README's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages keys and outlets; reads and fiscalizes on every outlet of
    /// its merchant.
    Owner,
    /// Fiscalizes (and reads) on the outlets it is bound to.
    Cashier,
    /// Reads invoices of its outlets; nothing more.
    Auditor,
    /// A system integration: fiscalizes (and reads) on the outlets chosen for it.
    Integration,
}

impl Role {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Cashier => "cashier",
            Role::Auditor => "auditor",
            Role::Integration => "integration",
        }
    }

    /// Whether the role may seal invoices.
    #[must_use]
    pub fn can_fiscalize(self) -> bool {
        matches!(self, Role::Owner | Role::Cashier | Role::Integration)
    }

    /// Whether the role may close a session (Z report), seal A reports and
    /// closings: the people at the till and the owner, not machines or
    /// auditors.
    #[must_use]
    pub fn can_close(self) -> bool {
        matches!(self, Role::Owner | Role::Cashier)
    }

    /// Whether the role may export audit bundles.
    #[must_use]
    pub fn can_audit(self) -> bool {
        matches!(self, Role::Owner | Role::Auditor)
    }

    /// Whether the role may manage keys and outlets.
    #[must_use]
    pub fn can_manage(self) -> bool {
        self == Role::Owner
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Role::Owner),
            "cashier" => Ok(Role::Cashier),
            "auditor" => Ok(Role::Auditor),
            "integration" => Ok(Role::Integration),
            other => Err(format!("unknown role `{other}`")),
        }
    }
}

/// A stored key (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Public id, e.g. `key_3f2a…`, used to list and revoke.
    pub id: String,
    /// The merchant it acts for.
    pub merchant_nif: String,
    /// Its role.
    pub role: Role,
    /// The outlets it is bound to; `None` = every outlet of the merchant.
    pub outlets: Option<Vec<String>>,
    /// A free label ("till 3", "ERP").
    pub label: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl ApiKey {
    /// Whether the key covers `outlet`.
    #[must_use]
    pub fn covers(&self, outlet: &str) -> bool {
        self.outlets
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == outlet))
    }
}

/// A registered outlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlet {
    /// Outlet id (as in invoices' `outlet_id`); unique across merchants,
    /// since the ledger numbers invoices per outlet id.
    pub id: String,
    /// Owner merchant.
    pub merchant_nif: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Key-store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The outlet id is already registered (to this or another merchant).
    #[error("outlet `{0}` is already registered")]
    OutletTaken(String),
    /// Revoking this key would leave its merchant without an owner key, and
    /// so with no way to manage keys through the API.
    #[error("key `{0}` is the merchant's last owner key")]
    LastOwnerKey(String),
    /// The backend failed.
    #[error("key store: {0}")]
    Storage(String),
}

/// Storage of API keys and outlets. Synchronous and object-safe; servers
/// call it from a blocking pool.
pub trait ApiKeyStore: fmt::Debug + Send + Sync {
    /// Records a new key under `hash` (the hash of its token, see [`hash_token`]).
    ///
    /// # Errors
    /// [`AuthError::Storage`].
    fn insert_key(&self, key: &ApiKey, hash: &[u8; 32]) -> Result<(), AuthError>;

    /// The key whose token hashes to `hash` (revoked keys included, with
    /// `revoked = true`).
    ///
    /// # Errors
    /// [`AuthError::Storage`].
    fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKey>, AuthError>;

    /// Every key of a merchant, oldest first.
    ///
    /// # Errors
    /// [`AuthError::Storage`].
    fn list_keys(&self, merchant_nif: &str) -> Result<Vec<ApiKey>, AuthError>;

    /// Revokes key `id` of `merchant_nif`: `true` if the merchant has that
    /// key (revoked now or before), `false` if not. Takes effect for the
    /// next lookup.
    ///
    /// A merchant always keeps one owner key: the check and the revocation
    /// are one atomic step, so two owners revoking each other at the same
    /// moment cannot both succeed.
    ///
    /// # Errors
    /// [`AuthError::LastOwnerKey`] when `id` is the merchant's only
    /// unrevoked owner key; [`AuthError::Storage`].
    fn revoke_key(&self, merchant_nif: &str, id: &str) -> Result<bool, AuthError>;

    /// Registers an outlet.
    ///
    /// # Errors
    /// [`AuthError::OutletTaken`] if the id is registered already.
    fn insert_outlet(&self, outlet: &Outlet) -> Result<(), AuthError>;

    /// The outlet with this id, whatever its merchant.
    ///
    /// # Errors
    /// [`AuthError::Storage`].
    fn outlet(&self, id: &str) -> Result<Option<Outlet>, AuthError>;

    /// Every outlet of a merchant, oldest first.
    ///
    /// # Errors
    /// [`AuthError::Storage`].
    fn list_outlets(&self, merchant_nif: &str) -> Result<Vec<Outlet>, AuthError>;
}

/// A new random token, `bp_live_` + 43 base64url characters (32 bytes).
///
/// # Errors
/// If the operating system's random source fails.
pub fn new_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| AuthError::Storage(format!("random source: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// A new public key id, `key_` + 16 hex characters.
///
/// # Errors
/// If the operating system's random source fails.
pub fn new_key_id() -> Result<String, AuthError> {
    let mut bytes = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| AuthError::Storage(format!("random source: {e}")))?;
    Ok(format!("key_{}", hex::encode(bytes)))
}

/// The stored form of a token.
#[must_use]
pub fn hash_token(token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(KEY_HASH_DOMAIN);
    h.update(token.as_bytes());
    h.finalize().into()
}

pub mod concurrent;
mod memory;
pub mod postgres;
mod sqlite;
pub use memory::MemoryKeyStore;
pub use sqlite::SqliteKeyStore;
pub(crate) use sqlite::prepare_auth_db;

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_differ() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(hash_token(&a), hash_token(&a));
    }

    #[test]
    fn sqlite_store_round_trips_and_revokes() {
        let s = SqliteKeyStore::in_memory().unwrap();
        let key = ApiKey {
            id: new_key_id().unwrap(),
            merchant_nif: "A1".into(),
            role: Role::Cashier,
            outlets: Some(vec!["o1".into()]),
            label: Some("till".into()),
            created_at: "2026-01-01T00:00:00Z".into(),
            revoked: false,
        };
        let token = new_token().unwrap();
        s.insert_key(&key, &hash_token(&token)).unwrap();
        assert_eq!(
            s.key_by_hash(&hash_token(&token)).unwrap(),
            Some(key.clone())
        );
        assert_eq!(s.key_by_hash(&hash_token("bp_live_other")).unwrap(), None);
        // Another merchant cannot revoke it.
        assert!(!s.revoke_key("B2", &key.id).unwrap());
        assert!(s.revoke_key("A1", &key.id).unwrap());
        assert!(s.key_by_hash(&hash_token(&token)).unwrap().unwrap().revoked);
        assert_eq!(s.list_keys("A1").unwrap().len(), 1);
        assert!(s.list_keys("B2").unwrap().is_empty());
    }

    #[test]
    fn an_outlet_id_belongs_to_one_merchant() {
        let s = SqliteKeyStore::in_memory().unwrap();
        let o = Outlet {
            id: "kin-01".into(),
            merchant_nif: "A1".into(),
            created_at: "t".into(),
        };
        s.insert_outlet(&o).unwrap();
        let other = Outlet {
            merchant_nif: "B2".into(),
            ..o.clone()
        };
        assert!(matches!(
            s.insert_outlet(&other),
            Err(AuthError::OutletTaken(_))
        ));
        assert_eq!(s.outlet("kin-01").unwrap(), Some(o));
        assert!(s.list_outlets("B2").unwrap().is_empty());
    }
}
