//! [`DeliveryStore`] on SQLite (`auth.db` of `bonopay serve`).

#[allow(clippy::wildcard_imports)]
use super::*;

/// [`DeliveryStore`] on SQLite: the `deliveries` table (of `auth.db` in
/// `bonopay serve`).
pub struct SqliteDeliveryStore {
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteDeliveryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDeliveryStore")
            .finish_non_exhaustive()
    }
}

pub(crate) fn storage(e: impl fmt::Display) -> DeliveryStoreError {
    DeliveryStoreError::Storage(e.to_string())
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    id           TEXT PRIMARY KEY,
    invoice_id   TEXT NOT NULL,
    merchant_nif TEXT NOT NULL,
    channel      TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    status       TEXT NOT NULL,
    error        TEXT,
    created_at   TEXT NOT NULL,
    completed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_invoice ON deliveries(merchant_nif, invoice_id);
";

impl SqliteDeliveryStore {
    /// Opens (creating the table in) the database at `path`.
    ///
    /// # Errors
    /// [`DeliveryStoreError::Storage`].
    pub fn open(path: &Path) -> Result<Self, DeliveryStoreError> {
        let conn = Connection::open(path).map_err(storage)?;
        prepare_auth_db(&conn, SCHEMA).map_err(storage)?;
        // Added after the table shipped: the claim of a record taken for
        // sending (ms since the epoch), NULL otherwise.
        let has_claim: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('deliveries') WHERE name = 'claimed_until_ms'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(storage)?
            > 0;
        if !has_claim {
            conn.execute_batch("ALTER TABLE deliveries ADD COLUMN claimed_until_ms INTEGER")
                .map_err(storage)?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }
}

/// A stored record's channel and status, checked: a name this build does
/// not know is a storage error, not a guess.
pub(crate) fn checked(
    mut d: DeliveryRecord,
    channel: &str,
    status: &str,
) -> Result<DeliveryRecord, DeliveryStoreError> {
    d.channel =
        Channel::parse(channel).ok_or_else(|| storage(format!("unknown channel `{channel}`")))?;
    d.status = DeliveryStatus::parse(status)
        .ok_or_else(|| storage(format!("unknown status `{status}`")))?;
    Ok(d)
}

impl DeliveryStore for SqliteDeliveryStore {
    fn record(&self, d: &DeliveryRecord) -> Result<(), DeliveryStoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        conn.execute(
            "INSERT INTO deliveries (id, invoice_id, merchant_nif, channel, recipient, status, error, created_at, completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                d.id,
                d.invoice_id,
                d.merchant_nif,
                d.channel.as_str(),
                d.recipient,
                d.status.as_str(),
                d.error,
                d.created_at,
                d.completed_at
            ],
        )
        .map_err(storage)?;
        Ok(())
    }

    fn list(
        &self,
        merchant_nif: &str,
        invoice_id: &str,
    ) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        self.select(
            "WHERE merchant_nif = ?1 AND invoice_id = ?2",
            params![merchant_nif, invoice_id],
        )
    }

    fn waiting(&self) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        self.select("WHERE status = 'waiting'", params![])
    }

    fn transition(
        &self,
        from: DeliveryStatus,
        to: &DeliveryRecord,
    ) -> Result<bool, DeliveryStoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        let n = conn
            .execute(
                "UPDATE deliveries SET status = ?1, error = ?2, completed_at = ?3
                 WHERE id = ?4 AND status = ?5",
                params![
                    to.status.as_str(),
                    to.error,
                    to.completed_at,
                    to.id,
                    from.as_str()
                ],
            )
            .map_err(storage)?;
        Ok(n == 1)
    }

    fn claim(
        &self,
        id: &str,
        from: DeliveryStatus,
        held: Option<i64>,
        until_ms: i64,
    ) -> Result<bool, DeliveryStoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        let n = conn
            .execute(
                "UPDATE deliveries SET status = 'sending', claimed_until_ms = ?1
                 WHERE id = ?2 AND status = ?3 AND claimed_until_ms IS ?4",
                params![until_ms, id, from.as_str(), held],
            )
            .map_err(storage)?;
        Ok(n == 1)
    }

    fn stalled(&self, now_ms: i64) -> Result<Vec<StalledDelivery>, DeliveryStoreError> {
        let claims: Vec<(String, Option<i64>)> = {
            let conn = self
                .conn
                .lock()
                .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
            let mut st = conn
                .prepare(
                    "SELECT id, claimed_until_ms FROM deliveries
                     WHERE status = 'sending' AND (claimed_until_ms IS NULL OR claimed_until_ms < ?1)
                     ORDER BY rowid",
                )
                .map_err(storage)?;
            st.query_map(params![now_ms], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(storage)?
                .collect::<rusqlite::Result<_>>()
                .map_err(storage)?
        };
        let mut out = Vec::new();
        for (id, held) in claims {
            // Settled meanwhile: no longer stalled.
            if let Some(record) = self
                .select("WHERE id = ?1 AND status = 'sending'", params![id])?
                .pop()
            {
                out.push(StalledDelivery { record, held });
            }
        }
        Ok(out)
    }
}

impl SqliteDeliveryStore {
    fn select(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        let mut st = conn
            .prepare(&format!(
                "SELECT id, invoice_id, merchant_nif, channel, recipient, status, error, created_at, completed_at
                 FROM deliveries {filter} ORDER BY rowid"
            ))
            .map_err(storage)?;
        let rows = st
            .query_map(args, |r| {
                let channel: String = r.get(3)?;
                let status: String = r.get(5)?;
                Ok((
                    DeliveryRecord {
                        id: r.get(0)?,
                        invoice_id: r.get(1)?,
                        merchant_nif: r.get(2)?,
                        channel: Channel::Email,
                        recipient: r.get(4)?,
                        status: DeliveryStatus::Failed,
                        error: r.get(6)?,
                        created_at: r.get(7)?,
                        completed_at: r.get(8)?,
                    },
                    channel,
                    status,
                ))
            })
            .map_err(storage)?;
        rows.map(|row| {
            let (d, channel, status) = row.map_err(storage)?;
            checked(d, &channel, &status)
        })
        .collect()
    }
}
