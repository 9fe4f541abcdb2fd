//! [`ApiKeyStore`] on SQLite: `auth.db` in the data directory, a file the
//! key, webhook and receipt-delivery stores share.

#[allow(clippy::wildcard_imports)]
use super::*;

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
