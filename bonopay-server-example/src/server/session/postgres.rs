//! [`SessionStore`] on PostgreSQL, for several server instances sharing
//! one database: a person signed in through one instance stays signed in
//! whichever serves the next request, and a sign-out or a revocation seen
//! by one ends the session for all.
//!
//! The table is `browser_sessions`, migrated like the key store's (versions
//! in `browser_sessions_schema_version`, under the advisory lock
//! "bpsessmg"), through the pool every PostgreSQL store of this crate shares
//! (`server::pg`). Each operation is one statement, so racing instances
//! never see half of one. As with the other stores, call it from plain
//! threads or the blocking pool, never from an async task.

use std::fmt;

use ::postgres::Row;
use ::postgres::types::Type;

use super::{IDLE_TIMEOUT_SECS, Session, SessionError, SessionStore};
use crate::server::pg::{PgError, Pool, Schema};

/// Connections a store opens at most, unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// The schema version this build migrates to.
pub const SCHEMA_VERSION: i32 = 1;

const SCHEMA: Schema = Schema {
    name: "session store",
    version_table: "browser_sessions_schema_version",
    lock: 0x6270_7365_7373_6d67,
    migrations: MIGRATIONS,
};

/// The migrations, in order. Never edit one that has shipped; append.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE browser_sessions (
    token_hash   BYTEA PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    key_id       TEXT NOT NULL,
    merchant_nif TEXT NOT NULL,
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,  -- Unix seconds
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL   -- absolute end
);
CREATE INDEX browser_sessions_key ON browser_sessions (key_id);
",
)];

/// Whether the row is live at `$2` (the SQL of [`Session::is_live`]).
const LIVE: &str = "$2 < expires_at AND $2 < last_seen_at + $3";

fn storage(e: impl Into<PgError>) -> SessionError {
    SessionError::Storage(e.into().0)
}

/// [`SessionStore`] on PostgreSQL (see the [module docs](self)).
pub struct PgSessionStore {
    pool: Pool,
}

impl fmt::Debug for PgSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's configuration holds the password: never print it.
        f.debug_struct("PgSessionStore")
            .field("pool_size", &self.pool.max())
            .finish_non_exhaustive()
    }
}

impl PgSessionStore {
    /// Connects to the database at `url`, migrating it to
    /// [`SCHEMA_VERSION`], with a pool of [`DEFAULT_POOL_SIZE`] connections.
    ///
    /// # Errors
    /// [`SessionError::Storage`] if the URL is malformed, the database
    /// cannot be reached, the migration fails or the schema is newer than
    /// this build's.
    pub fn connect(url: &str) -> Result<Self, SessionError> {
        Ok(Self {
            pool: Pool::connect(url, DEFAULT_POOL_SIZE, "bonopay-sessions", &SCHEMA)
                .map_err(storage)?,
        })
    }
}

fn session_from_row(row: &Row) -> Result<Session, SessionError> {
    Ok(Session {
        key_id: row.try_get(0).map_err(storage)?,
        merchant_nif: row.try_get(1).map_err(storage)?,
        csrf_token: row.try_get(2).map_err(storage)?,
        created_at: row.try_get(3).map_err(storage)?,
        last_seen_at: row.try_get(4).map_err(storage)?,
        expires_at: row.try_get(5).map_err(storage)?,
    })
}

impl SessionStore for PgSessionStore {
    fn create(&self, hash: &[u8; 32], s: &Session) -> Result<(), SessionError> {
        let hash: &[u8] = hash;
        let n = self
            .pool
            .write(|c| {
                c.execute_typed(
                    "INSERT INTO browser_sessions
                         (token_hash, key_id, merchant_nif, csrf_token, created_at, last_seen_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (token_hash) DO NOTHING",
                    &[
                        (&hash, Type::BYTEA),
                        (&s.key_id, Type::TEXT),
                        (&s.merchant_nif, Type::TEXT),
                        (&s.csrf_token, Type::TEXT),
                        (&s.created_at, Type::INT8),
                        (&s.last_seen_at, Type::INT8),
                        (&s.expires_at, Type::INT8),
                    ],
                )
            })
            .map_err(storage)?;
        if n == 0 {
            return Err(SessionError::Duplicate);
        }
        Ok(())
    }

    fn get(&self, hash: &[u8; 32], now: i64) -> Result<Option<Session>, SessionError> {
        let hash: &[u8] = hash;
        let sql = format!(
            "SELECT key_id, merchant_nif, csrf_token, created_at, last_seen_at, expires_at
               FROM browser_sessions WHERE token_hash = $1 AND {LIVE}"
        );
        self.pool
            .read(|c| {
                c.query_typed_opt(
                    &sql,
                    &[
                        (&hash, Type::BYTEA),
                        (&now, Type::INT8),
                        (&IDLE_TIMEOUT_SECS, Type::INT8),
                    ],
                )
            })
            .map_err(storage)?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    fn touch(&self, hash: &[u8; 32], now: i64) -> Result<bool, SessionError> {
        let hash: &[u8] = hash;
        let sql = format!(
            "UPDATE browser_sessions SET last_seen_at = GREATEST(last_seen_at, $2)
              WHERE token_hash = $1 AND {LIVE}"
        );
        // Idempotent (the last-seen time only moves forward), so a read's
        // retry on a dead connection is safe.
        let n = self
            .pool
            .read(|c| {
                c.execute_typed(
                    &sql,
                    &[
                        (&hash, Type::BYTEA),
                        (&now, Type::INT8),
                        (&IDLE_TIMEOUT_SECS, Type::INT8),
                    ],
                )
            })
            .map_err(storage)?;
        Ok(n > 0)
    }

    fn delete(&self, hash: &[u8; 32]) -> Result<bool, SessionError> {
        let hash: &[u8] = hash;
        let n = self
            .pool
            .read(|c| {
                c.execute_typed(
                    "DELETE FROM browser_sessions WHERE token_hash = $1",
                    &[(&hash, Type::BYTEA)],
                )
            })
            .map_err(storage)?;
        Ok(n > 0)
    }

    fn delete_for_key(&self, key_id: &str) -> Result<u64, SessionError> {
        self.pool
            .read(|c| {
                c.execute_typed(
                    "DELETE FROM browser_sessions WHERE key_id = $1",
                    &[(&key_id, Type::TEXT)],
                )
            })
            .map_err(storage)
    }

    fn purge_expired(&self, now: i64) -> Result<u64, SessionError> {
        self.pool
            .read(|c| {
                c.execute_typed(
                    "DELETE FROM browser_sessions
                      WHERE NOT ($1 < expires_at AND $1 < last_seen_at + $2)",
                    &[(&now, Type::INT8), (&IDLE_TIMEOUT_SECS, Type::INT8)],
                )
            })
            .map_err(storage)
    }
}
