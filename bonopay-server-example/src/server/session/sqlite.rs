//! [`SessionStore`] on SQLite: table `browser_sessions` of `auth.db`, next
//! to the API keys whose revocation ends them.

use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{IDLE_TIMEOUT_SECS, Session, SessionError, SessionStore};
use crate::server::auth::prepare_auth_db;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS browser_sessions (
    token_hash   BLOB PRIMARY KEY,
    key_id       TEXT NOT NULL,
    merchant_nif TEXT NOT NULL,
    csrf_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,  -- Unix seconds
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL   -- absolute end
);
CREATE INDEX IF NOT EXISTS browser_sessions_key ON browser_sessions(key_id);
";

/// Whether the row is live at `?2` (the SQL of [`Session::is_live`]).
const LIVE: &str = "?2 < expires_at AND ?2 < last_seen_at + ?3";

/// [`SessionStore`] on SQLite (`auth.db`).
pub struct SqliteSessionStore {
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSessionStore").finish_non_exhaustive()
    }
}

fn storage(e: impl fmt::Display) -> SessionError {
    SessionError::Storage(e.to_string())
}

impl SqliteSessionStore {
    /// Opens (creating) the database at `path`, normally `auth.db`.
    ///
    /// # Errors
    /// [`SessionError::Storage`].
    pub fn open(path: &Path) -> Result<Self, SessionError> {
        Self::init(Connection::open(path).map_err(storage)?)
    }

    /// An in-memory database (tests, examples).
    ///
    /// # Errors
    /// [`SessionError::Storage`].
    pub fn in_memory() -> Result<Self, SessionError> {
        Self::init(Connection::open_in_memory().map_err(storage)?)
    }

    fn init(conn: Connection) -> Result<Self, SessionError> {
        prepare_auth_db(&conn, SCHEMA).map_err(storage)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SessionError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| SessionError::Storage("connection lock poisoned".into()))?;
        f(&conn).map_err(storage)
    }
}

impl SessionStore for SqliteSessionStore {
    fn create(&self, hash: &[u8; 32], s: &Session) -> Result<(), SessionError> {
        let inserted = self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO browser_sessions
                     (token_hash, key_id, merchant_nif, csrf_token, created_at, last_seen_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    &hash[..],
                    s.key_id,
                    s.merchant_nif,
                    s.csrf_token,
                    s.created_at,
                    s.last_seen_at,
                    s.expires_at
                ],
            )
        })?;
        if inserted == 0 {
            return Err(SessionError::Duplicate);
        }
        Ok(())
    }

    fn get(&self, hash: &[u8; 32], now: i64) -> Result<Option<Session>, SessionError> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT key_id, merchant_nif, csrf_token, created_at, last_seen_at, expires_at
                       FROM browser_sessions WHERE token_hash = ?1 AND {LIVE}"
                ),
                params![&hash[..], now, IDLE_TIMEOUT_SECS],
                |r| {
                    Ok(Session {
                        key_id: r.get(0)?,
                        merchant_nif: r.get(1)?,
                        csrf_token: r.get(2)?,
                        created_at: r.get(3)?,
                        last_seen_at: r.get(4)?,
                        expires_at: r.get(5)?,
                    })
                },
            )
            .optional()
        })
    }

    fn touch(&self, hash: &[u8; 32], now: i64) -> Result<bool, SessionError> {
        let n = self.with(|c| {
            c.execute(
                &format!(
                    "UPDATE browser_sessions SET last_seen_at = MAX(last_seen_at, ?2)
                      WHERE token_hash = ?1 AND {LIVE}"
                ),
                params![&hash[..], now, IDLE_TIMEOUT_SECS],
            )
        })?;
        Ok(n > 0)
    }

    fn delete(&self, hash: &[u8; 32]) -> Result<bool, SessionError> {
        let n = self.with(|c| {
            c.execute(
                "DELETE FROM browser_sessions WHERE token_hash = ?1",
                params![&hash[..]],
            )
        })?;
        Ok(n > 0)
    }

    fn delete_for_key(&self, key_id: &str) -> Result<u64, SessionError> {
        let n = self.with(|c| {
            c.execute(
                "DELETE FROM browser_sessions WHERE key_id = ?1",
                params![key_id],
            )
        })?;
        Ok(n as u64)
    }

    fn purge_expired(&self, now: i64) -> Result<u64, SessionError> {
        let n = self.with(|c| {
            c.execute(
                "DELETE FROM browser_sessions
                  WHERE NOT (?1 < expires_at AND ?1 < last_seen_at + ?2)",
                params![now, IDLE_TIMEOUT_SECS],
            )
        })?;
        Ok(n as u64)
    }
}
