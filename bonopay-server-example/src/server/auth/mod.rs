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

/// Sets a connection to `auth.db` (or an in-memory database) up as every
/// store kept there wants it — WAL, `synchronous=FULL`, a 5 s busy timeout
/// (the key, webhook and receipt stores each hold a connection to the same
/// file) — and creates `schema`.
pub(crate) fn prepare_auth_db(conn: &Connection, schema: &str) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(schema)
}

/// [`ApiKeyStore`] on SQLite (`auth.db`).
pub struct SqliteKeyStore {
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteKeyStore").finish_non_exhaustive()
    }
}

fn storage(e: impl fmt::Display) -> AuthError {
    AuthError::Storage(e.to_string())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT PRIMARY KEY,
    token_hash   BLOB NOT NULL UNIQUE,
    merchant_nif TEXT NOT NULL,
    role         TEXT NOT NULL,
    outlets      TEXT,            -- JSON array, NULL = every outlet
    label        TEXT,
    created_at   TEXT NOT NULL,
    revoked      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS api_keys_merchant ON api_keys(merchant_nif);
CREATE TABLE IF NOT EXISTS outlets (
    id           TEXT PRIMARY KEY,
    merchant_nif TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outlets_merchant ON outlets(merchant_nif);
";

impl SqliteKeyStore {
    /// Opens (creating) the database at `path`.
    ///
    /// # Errors
    /// [`AuthError::Storage`].
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let conn = Connection::open(path).map_err(storage)?;
        Self::init(conn)
    }

    /// An in-memory database (tests, examples).
    ///
    /// # Errors
    /// [`AuthError::Storage`].
    pub fn in_memory() -> Result<Self, AuthError> {
        Self::init(Connection::open_in_memory().map_err(storage)?)
    }

    fn init(conn: Connection) -> Result<Self, AuthError> {
        prepare_auth_db(&conn, SCHEMA).map_err(storage)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, AuthError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| AuthError::Storage("connection lock poisoned".into()))?;
        f(&conn).map_err(storage)
    }
}

fn key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    let role: String = row.get(2)?;
    let outlets: Option<String> = row.get(3)?;
    let outlets = match outlets {
        None => None,
        Some(text) => Some(serde_json::from_str::<Vec<String>>(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?),
    };
    Ok(ApiKey {
        id: row.get(0)?,
        merchant_nif: row.get(1)?,
        role: role.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                Box::<dyn std::error::Error + Send + Sync>::from(e),
            )
        })?,
        outlets,
        label: row.get(4)?,
        created_at: row.get(5)?,
        revoked: row.get::<_, i64>(6)? != 0,
    })
}

const KEY_COLUMNS: &str = "id, merchant_nif, role, outlets, label, created_at, revoked";

impl ApiKeyStore for SqliteKeyStore {
    fn insert_key(&self, key: &ApiKey, hash: &[u8; 32]) -> Result<(), AuthError> {
        let outlets = match &key.outlets {
            None => None,
            Some(o) => Some(serde_json::to_string(o).map_err(storage)?),
        };
        self.with(|c| {
            c.execute(
                "INSERT INTO api_keys (id, token_hash, merchant_nif, role, outlets, label, created_at, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    key.id,
                    &hash[..],
                    key.merchant_nif,
                    key.role.as_str(),
                    outlets,
                    key.label,
                    key.created_at,
                    i64::from(key.revoked)
                ],
            )
            .map(|_| ())
        })
    }

    fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKey>, AuthError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE token_hash = ?1"),
                params![&hash[..]],
                key_from_row,
            )
            .optional()
        })
    }

    fn list_keys(&self, merchant_nif: &str) -> Result<Vec<ApiKey>, AuthError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE merchant_nif = ?1 ORDER BY rowid"
            ))?;
            st.query_map(params![merchant_nif], key_from_row)?.collect()
        })
    }

    fn revoke_key(&self, merchant_nif: &str, id: &str) -> Result<bool, AuthError> {
        // One statement, so SQLite's single writer makes the check and the
        // update atomic across connections and processes.
        let updated = self.with(|c| {
            c.execute(
                "UPDATE api_keys SET revoked = 1 WHERE id = ?1 AND merchant_nif = ?2
                   AND (role <> 'owner' OR revoked = 1 OR EXISTS (
                        SELECT 1 FROM api_keys o WHERE o.merchant_nif = ?2
                          AND o.role = 'owner' AND o.revoked = 0 AND o.id <> ?1))",
                params![id, merchant_nif],
            )
        })?;
        if updated > 0 {
            return Ok(true);
        }
        let exists = self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM api_keys WHERE id = ?1 AND merchant_nif = ?2",
                params![id, merchant_nif],
                |r| r.get::<_, i64>(0),
            )
        })? > 0;
        if exists {
            Err(AuthError::LastOwnerKey(id.to_owned()))
        } else {
            Ok(false)
        }
    }

    fn insert_outlet(&self, outlet: &Outlet) -> Result<(), AuthError> {
        let inserted = self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO outlets (id, merchant_nif, created_at) VALUES (?1, ?2, ?3)",
                params![outlet.id, outlet.merchant_nif, outlet.created_at],
            )
        })?;
        if inserted == 0 {
            return Err(AuthError::OutletTaken(outlet.id.clone()));
        }
        Ok(())
    }

    fn outlet(&self, id: &str) -> Result<Option<Outlet>, AuthError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, merchant_nif, created_at FROM outlets WHERE id = ?1",
                params![id],
                |r| {
                    Ok(Outlet {
                        id: r.get(0)?,
                        merchant_nif: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    fn list_outlets(&self, merchant_nif: &str) -> Result<Vec<Outlet>, AuthError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, merchant_nif, created_at FROM outlets WHERE merchant_nif = ?1 ORDER BY rowid",
            )?;
            st.query_map(params![merchant_nif], |r| {
                Ok(Outlet {
                    id: r.get(0)?,
                    merchant_nif: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })?
            .collect()
        })
    }
}

/// [`ApiKeyStore`] in memory: the reference implementation (tests,
/// embedding examples). Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    keys: Vec<(ApiKey, [u8; 32])>,
    outlets: BTreeMap<String, (usize, Outlet)>,
}

impl MemoryKeyStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryInner>, AuthError> {
        self.inner
            .lock()
            .map_err(|_| AuthError::Storage("lock poisoned".into()))
    }
}

impl ApiKeyStore for MemoryKeyStore {
    fn insert_key(&self, key: &ApiKey, hash: &[u8; 32]) -> Result<(), AuthError> {
        let mut g = self.lock()?;
        if g.keys.iter().any(|(k, h)| k.id == key.id || h == hash) {
            return Err(AuthError::Storage("duplicate key id or token".into()));
        }
        g.keys.push((key.clone(), *hash));
        Ok(())
    }

    fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKey>, AuthError> {
        Ok(self
            .lock()?
            .keys
            .iter()
            .find(|(_, h)| h == hash)
            .map(|(k, _)| k.clone()))
    }

    fn list_keys(&self, merchant_nif: &str) -> Result<Vec<ApiKey>, AuthError> {
        Ok(self
            .lock()?
            .keys
            .iter()
            .filter(|(k, _)| k.merchant_nif == merchant_nif)
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn revoke_key(&self, merchant_nif: &str, id: &str) -> Result<bool, AuthError> {
        let mut g = self.lock()?;
        let other_owner = g.keys.iter().any(|(k, _)| {
            k.merchant_nif == merchant_nif && k.role == Role::Owner && !k.revoked && k.id != id
        });
        match g
            .keys
            .iter_mut()
            .find(|(k, _)| k.id == id && k.merchant_nif == merchant_nif)
        {
            Some((k, _)) if k.role == Role::Owner && !k.revoked && !other_owner => {
                Err(AuthError::LastOwnerKey(id.to_owned()))
            }
            Some((k, _)) => {
                k.revoked = true;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn insert_outlet(&self, outlet: &Outlet) -> Result<(), AuthError> {
        let mut g = self.lock()?;
        if g.outlets.contains_key(&outlet.id) {
            return Err(AuthError::OutletTaken(outlet.id.clone()));
        }
        let n = g.outlets.len();
        g.outlets.insert(outlet.id.clone(), (n, outlet.clone()));
        Ok(())
    }

    fn outlet(&self, id: &str) -> Result<Option<Outlet>, AuthError> {
        Ok(self.lock()?.outlets.get(id).map(|(_, o)| o.clone()))
    }

    fn list_outlets(&self, merchant_nif: &str) -> Result<Vec<Outlet>, AuthError> {
        let g = self.lock()?;
        let mut list: Vec<&(usize, Outlet)> = g
            .outlets
            .values()
            .filter(|(_, o)| o.merchant_nif == merchant_nif)
            .collect();
        list.sort_by_key(|(n, _)| *n);
        Ok(list.into_iter().map(|(_, o)| o.clone()).collect())
    }
}

pub mod concurrent;
pub mod postgres;

/// The conformance suite every [`ApiKeyStore`] backend must pass.
///
/// ```
/// use bonopay_server_example::server::auth::{MemoryKeyStore, conformance};
/// conformance::run_all(&|| Box::new(MemoryKeyStore::new()));
/// ```
///
/// Failures panic with a message naming the broken promise.
#[cfg(feature = "conformance")]
pub mod conformance {
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
                std::thread::spawn(move || {
                    s.insert_outlet(&outlet("race", &format!("M{i}"))).is_ok()
                })
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
}

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
