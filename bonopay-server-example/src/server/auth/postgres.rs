//! [`ApiKeyStore`] on PostgreSQL, for several server processes sharing one
//! database.
//!
//! [`PgKeyStore`] keeps the semantics of [`SqliteKeyStore`] exactly: a
//! duplicate key id or token hash is an [`AuthError::Storage`], an outlet
//! id already registered (to any merchant) is an [`AuthError::OutletTaken`],
//! lists are oldest first, and a revocation shows on the next lookup from
//! any process, since nothing is cached. Every write is one statement whose
//! outcome the database's constraints decide (never check-then-insert), so
//! racing processes cannot register one outlet twice nor share a key.
//!
//! **Schema.** [`PgKeyStore::connect`] migrates the database to
//! [`SCHEMA_VERSION`]: the versions applied are rows of
//! `auth_schema_version`, and each pending migration runs with its row in
//! one transaction, under a transaction-scoped advisory lock, so processes
//! starting together migrate once. A database migrated by a newer build is
//! refused rather than guessed at. The tables are `auth_keys` and
//! `auth_outlets` (prefixed, since the database may be shared with other
//! components).
//!
//! **Pool and threads.** At most `pool_size` connections (default
//! [`DEFAULT_POOL_SIZE`]), from the pool the crate's PostgreSQL stores
//! share (`server::pg`): a connection that died is replaced, reads and
//! revocations, being idempotent, are retried once on a new connection,
//! and inserts check a reused connection before writing, so that a
//! database restart costs no failed request. The synchronous `postgres`
//! client runs its own small tokio runtime: call this store from plain
//! threads or tokio's blocking pool (`spawn_blocking`, as the server does),
//! never from an async task. Connections are made without TLS; use a local
//! socket, a loopback address or a private network.
//!
//! [`SqliteKeyStore`]: super::SqliteKeyStore

use std::fmt;

use ::postgres::Row;
use ::postgres::types::{ToSql, Type};

use super::{ApiKey, ApiKeyStore, AuthError, Outlet, Role};
pub use crate::server::pg::{CHECKOUT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT};
use crate::server::pg::{PgError, Pool, Schema};
use bonopay_ledger::postgres::import::ImportError;

/// Connections a store opens at most, unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// The schema version this build migrates to (the highest row of
/// `auth_schema_version`).
pub const SCHEMA_VERSION: i32 = 1;

/// The key store's tables, migrated under the advisory lock "bpauthmg".
const SCHEMA: Schema = Schema {
    name: "key store",
    version_table: "auth_schema_version",
    lock: 0x6270_6175_7468_6d67,
    migrations: MIGRATIONS,
};

/// The migrations, in order: `(version, SQL)`. Never edit one that has
/// shipped; append a new one.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE auth_keys (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    id           TEXT PRIMARY KEY,
    token_hash   BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    merchant_nif TEXT NOT NULL,
    role         TEXT NOT NULL,
    outlets      TEXT[],          -- NULL = every outlet of the merchant
    label        TEXT,
    created_at   TEXT NOT NULL,   -- RFC 3339, kept as given
    revoked      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX auth_keys_merchant ON auth_keys (merchant_nif, seq);
CREATE TABLE auth_outlets (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    id           TEXT PRIMARY KEY,
    merchant_nif TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX auth_outlets_merchant ON auth_outlets (merchant_nif, seq);
",
)];

const KEY_COLUMNS: &str = "id, merchant_nif, role, outlets, label, created_at, revoked";
const OUTLET_COLUMNS: &str = "id, merchant_nif, created_at";

fn storage(e: impl Into<PgError>) -> AuthError {
    AuthError::Storage(e.into().0)
}

/// [`ApiKeyStore`] on PostgreSQL, with a small connection pool (see the
/// [module docs](self)).
pub struct PgKeyStore {
    pool: Pool,
}

impl fmt::Debug for PgKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's configuration holds the password: never print it.
        f.debug_struct("PgKeyStore")
            .field("pool_size", &self.pool.max())
            .finish_non_exhaustive()
    }
}

impl PgKeyStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`
    /// or libpq's `key=value` form), migrating it to [`SCHEMA_VERSION`],
    /// with a pool of [`DEFAULT_POOL_SIZE`] connections.
    ///
    /// # Errors
    /// [`AuthError::Storage`] if the URL is malformed, the database cannot
    /// be reached, the migration fails or the database's schema is newer
    /// than this build's.
    pub fn connect(url: &str) -> Result<Self, AuthError> {
        Self::connect_with_pool_size(url, DEFAULT_POOL_SIZE)
    }

    /// Like [`PgKeyStore::connect`], with at most `pool_size` connections
    /// (at least one).
    ///
    /// # Errors
    /// As [`PgKeyStore::connect`].
    pub fn connect_with_pool_size(url: &str, pool_size: usize) -> Result<Self, AuthError> {
        Ok(Self {
            pool: Pool::connect(url, pool_size, "bonopay-auth", &SCHEMA).map_err(storage)?,
        })
    }

    /// The most connections this store opens at once.
    #[must_use]
    pub fn pool_size(&self) -> usize {
        self.pool.max()
    }

    /// The schema version the database is at (the highest applied
    /// migration).
    ///
    /// # Errors
    /// [`AuthError::Storage`].
    pub fn schema_version(&self) -> Result<i32, AuthError> {
        self.pool.schema_version(&SCHEMA).map_err(storage)
    }

    fn read<T>(
        &self,
        op: impl Fn(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, AuthError> {
        self.pool.read(op).map_err(storage)
    }

    fn write<T>(
        &self,
        op: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, AuthError> {
        self.pool.write(op).map_err(storage)
    }
}

fn key_from_row(row: &Row) -> Result<ApiKey, AuthError> {
    let role: String = row.try_get(2).map_err(storage)?;
    Ok(ApiKey {
        id: row.try_get(0).map_err(storage)?,
        merchant_nif: row.try_get(1).map_err(storage)?,
        role: role.parse().map_err(AuthError::Storage)?,
        outlets: row.try_get(3).map_err(storage)?,
        label: row.try_get(4).map_err(storage)?,
        created_at: row.try_get(5).map_err(storage)?,
        revoked: row.try_get(6).map_err(storage)?,
    })
}

fn outlet_from_row(row: &Row) -> Result<Outlet, AuthError> {
    Ok(Outlet {
        id: row.try_get(0).map_err(storage)?,
        merchant_nif: row.try_get(1).map_err(storage)?,
        created_at: row.try_get(2).map_err(storage)?,
    })
}

impl ApiKeyStore for PgKeyStore {
    fn insert_key(&self, key: &ApiKey, hash: &[u8; 32]) -> Result<(), AuthError> {
        let hash: &[u8] = hash;
        let outlets: Option<&[String]> = key.outlets.as_deref();
        let params: [(&(dyn ToSql + Sync), Type); 8] = [
            (&key.id, Type::TEXT),
            (&hash, Type::BYTEA),
            (&key.merchant_nif, Type::TEXT),
            (&key.role.as_str(), Type::TEXT),
            (&outlets, Type::TEXT_ARRAY),
            (&key.label, Type::TEXT),
            (&key.created_at, Type::TEXT),
            (&key.revoked, Type::BOOL),
        ];
        self.write(|c| {
            c.execute_typed(
                "INSERT INTO auth_keys
                     (id, token_hash, merchant_nif, role, outlets, label, created_at, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &params,
            )
        })
        .map(|_| ())
    }

    fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKey>, AuthError> {
        let hash: &[u8] = hash;
        let sql = format!("SELECT {KEY_COLUMNS} FROM auth_keys WHERE token_hash = $1");
        self.read(|c| c.query_typed_opt(&sql, &[(&hash, Type::BYTEA)]))?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    fn list_keys(&self, merchant_nif: &str) -> Result<Vec<ApiKey>, AuthError> {
        let sql =
            format!("SELECT {KEY_COLUMNS} FROM auth_keys WHERE merchant_nif = $1 ORDER BY seq");
        self.read(|c| c.query_typed(&sql, &[(&merchant_nif, Type::TEXT)]))?
            .iter()
            .map(key_from_row)
            .collect()
    }

    fn revoke_key(&self, merchant_nif: &str, id: &str) -> Result<bool, AuthError> {
        enum Outcome {
            Missing,
            LastOwner,
            Revoked,
        }
        // The merchant's live owner keys are locked (FOR UPDATE) before the
        // check: a second revoker waits, then sees this one's revocation,
        // so two owners revoking each other cannot both succeed.
        let outcome = self.write(|c| {
            let mut tx = c.transaction()?;
            let owners: Vec<String> = tx
                .query(
                    "SELECT id FROM auth_keys WHERE merchant_nif = $1 AND role = 'owner'
                       AND revoked = FALSE ORDER BY id FOR UPDATE",
                    &[&merchant_nif],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM auth_keys WHERE id = $1 AND merchant_nif = $2",
                    &[&id, &merchant_nif],
                )?
                .is_some();
            if !exists {
                return Ok(Outcome::Missing);
            }
            if owners.len() == 1 && owners[0] == id {
                return Ok(Outcome::LastOwner);
            }
            // Idempotent: setting the flag twice is setting it once.
            tx.execute(
                "UPDATE auth_keys SET revoked = TRUE WHERE id = $1 AND merchant_nif = $2",
                &[&id, &merchant_nif],
            )?;
            tx.commit()?;
            Ok(Outcome::Revoked)
        })?;
        match outcome {
            Outcome::Missing => Ok(false),
            Outcome::LastOwner => Err(AuthError::LastOwnerKey(id.to_owned())),
            Outcome::Revoked => Ok(true),
        }
    }

    fn insert_outlet(&self, outlet: &Outlet) -> Result<(), AuthError> {
        let inserted = self.write(|c| {
            c.execute_typed(
                "INSERT INTO auth_outlets (id, merchant_nif, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    (&outlet.id, Type::TEXT),
                    (&outlet.merchant_nif, Type::TEXT),
                    (&outlet.created_at, Type::TEXT),
                ],
            )
        })?;
        if inserted == 0 {
            return Err(AuthError::OutletTaken(outlet.id.clone()));
        }
        Ok(())
    }

    fn outlet(&self, id: &str) -> Result<Option<Outlet>, AuthError> {
        let sql = format!("SELECT {OUTLET_COLUMNS} FROM auth_outlets WHERE id = $1");
        self.read(|c| c.query_typed_opt(&sql, &[(&id, Type::TEXT)]))?
            .as_ref()
            .map(outlet_from_row)
            .transpose()
    }

    fn list_outlets(&self, merchant_nif: &str) -> Result<Vec<Outlet>, AuthError> {
        let sql = format!(
            "SELECT {OUTLET_COLUMNS} FROM auth_outlets WHERE merchant_nif = $1 ORDER BY seq"
        );
        self.read(|c| c.query_typed(&sql, &[(&merchant_nif, Type::TEXT)]))?
            .iter()
            .map(outlet_from_row)
            .collect()
    }
}

/// One API key row as both stores hold it.
#[derive(Debug, PartialEq, Eq)]
struct KeyRow {
    id: String,
    hash: Vec<u8>,
    merchant_nif: String,
    role: String,
    outlets: Option<Vec<String>>,
    label: Option<String>,
    created_at: String,
    revoked: bool,
}

/// For `bonopay migrate`: copies the API keys (hashes, roles, bindings, revocation) and the
/// registered outlets of `auth` into the PostgreSQL key store at `url`,
/// in one transaction: a failure copies nothing, and a revoked key is
/// written revoked (never active, not even for an instant). A row an
/// earlier run copied is left alone if it is the same, and refused if it
/// differs (the same id would stand for another key). Returns (keys,
/// outlets) inserted.
///
/// # Errors
/// [`ImportError`] when a store fails, a stored row is malformed, or an
/// id stands for something else in the target; nothing is copied.
pub fn import_sqlite(auth: &std::path::Path, url: &str) -> Result<(u64, u64), ImportError> {
    if !auth.exists() {
        return Ok((0, 0));
    }
    let conn = rusqlite::Connection::open(auth)?;
    // Creates the target tables (the store's migrations).
    drop(PgKeyStore::connect(url).map_err(|e| ImportError::Store(e.to_string()))?);
    let mut pg = postgres::Client::connect(url, postgres::NoTls)?;
    let mut tx = pg.transaction()?;

    let mut outlets = 0;
    let mut stmt =
        conn.prepare("SELECT id, merchant_nif, created_at FROM outlets ORDER BY rowid")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (id, nif, created) = row?;
        let n = tx.execute(
            "INSERT INTO auth_outlets (id, merchant_nif, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
            &[&id, &nif, &created],
        )?;
        if n == 0 {
            let there = tx.query_one(
                "SELECT merchant_nif, created_at FROM auth_outlets WHERE id = $1",
                &[&id],
            )?;
            let there: (String, String) = (there.try_get(0)?, there.try_get(1)?);
            if there != (nif, created) {
                return Err(ImportError::Refused(format!(
                    "outlet {id} is registered differently in the target: nothing of the keys was copied"
                )));
            }
        }
        outlets += n;
    }

    let mut keys = 0;
    let mut stmt = conn.prepare(
        "SELECT id, token_hash, merchant_nif, role, outlets, label, created_at, revoked
             FROM api_keys ORDER BY rowid",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let malformed = |why: String| {
            ImportError::Refused(format!(
                "API key {id} is malformed in the source ({why}): nothing of the keys was copied"
            ))
        };
        let hash: Vec<u8> = r.get(1)?;
        if hash.len() != 32 {
            return Err(malformed(format!(
                "its hash is {} bytes, not 32",
                hash.len()
            )));
        }
        let role = r.get::<_, String>(3)?.parse::<Role>().map_err(malformed)?;
        let bound = r
            .get::<_, Option<String>>(4)?
            .map(|b| serde_json::from_str::<Vec<String>>(&b))
            .transpose()
            .map_err(|e| malformed(format!("its outlet list: {e}")))?;
        let key = KeyRow {
            id: id.clone(),
            hash,
            merchant_nif: r.get(2)?,
            role: role.as_str().to_owned(),
            outlets: bound,
            label: r.get(5)?,
            created_at: r.get(6)?,
            revoked: r.get::<_, i64>(7)? != 0,
        };
        let n = tx.execute(
            "INSERT INTO auth_keys
                     (id, token_hash, merchant_nif, role, outlets, label, created_at, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            &[
                &key.id,
                &key.hash,
                &key.merchant_nif,
                &key.role,
                &key.outlets,
                &key.label,
                &key.created_at,
                &key.revoked,
            ],
        )?;
        if n == 0 {
            let t = tx.query_one(
                "SELECT id, token_hash, merchant_nif, role, outlets, label, created_at, revoked
                     FROM auth_keys WHERE id = $1",
                &[&key.id],
            )?;
            let there = KeyRow {
                id: t.try_get(0)?,
                hash: t.try_get(1)?,
                merchant_nif: t.try_get(2)?,
                role: t.try_get(3)?,
                outlets: t.try_get(4)?,
                label: t.try_get(5)?,
                created_at: t.try_get(6)?,
                revoked: t.try_get(7)?,
            };
            if there != key {
                return Err(ImportError::Refused(format!(
                    "API key {id} differs in the target (another key, or revoked on one side only): nothing of the keys was copied"
                )));
            }
        }
        keys += n;
    }
    drop(rows);
    tx.commit()?;
    Ok((keys, outlets))
}
