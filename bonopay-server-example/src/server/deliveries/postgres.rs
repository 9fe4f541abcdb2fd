//! [`DeliveryStore`] on PostgreSQL, for several server instances sharing one
//! database: a receipt sent through one instance is listed by all.
//!
//! [`PgDeliveryStore`] keeps the semantics of [`SqliteDeliveryStore`] (both
//! pass [`conformance`](super::conformance)): an id is recorded
//! once (the primary key decides, so two instances cannot both record
//! one), and lists are oldest first, by an identity column. The table is
//! `receipt_deliveries` (prefixed, since the database is shared with the
//! ledger, the outbox and the other stores), migrated by versions recorded
//! in `receipt_delivery_schema_version` under an advisory lock, on the pool
//! the crate's PostgreSQL stores share (`server::pg`). Call it from
//! blocking threads only, as the server does.
//!
//! [`SqliteDeliveryStore`]: super::SqliteDeliveryStore

use std::fmt;

use bonopay_ledger::postgres::import::ImportError;

use ::postgres::types::{ToSql, Type};

use super::{
    Channel, DeliveryRecord, DeliveryStatus, DeliveryStore, DeliveryStoreError, StalledDelivery,
    checked,
};
use crate::server::pg::{PgError, Pool, Schema};

/// Connections a store opens at most, unless told otherwise: recording
/// and listing receipts is rare next to sealing.
pub const DEFAULT_POOL_SIZE: usize = 2;

/// The schema version this build migrates to (the highest row of
/// `receipt_delivery_schema_version`).
pub const SCHEMA_VERSION: i32 = 2;

/// The receipt-delivery table, migrated under the advisory lock "bprcptmg".
const SCHEMA: Schema = Schema {
    name: "receipt delivery store",
    version_table: "receipt_delivery_schema_version",
    lock: 0x6270_7263_7074_6d67,
    migrations: MIGRATIONS,
};

/// The migrations, in order: `(version, SQL)`. Never edit one that has
/// shipped; append a new one.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
CREATE TABLE receipt_deliveries (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    id           TEXT PRIMARY KEY,
    invoice_id   TEXT NOT NULL,
    merchant_nif TEXT NOT NULL,
    channel      TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    status       TEXT NOT NULL,
    error        TEXT,
    created_at   TEXT NOT NULL,     -- RFC 3339, kept as given
    completed_at TEXT NOT NULL
);
CREATE INDEX receipt_deliveries_invoice ON receipt_deliveries (merchant_nif, invoice_id, seq);
",
    ),
    (
        2,
        "
-- The claim of a record taken for sending (ms since the epoch): past it,
-- another instance takes the send over.
ALTER TABLE receipt_deliveries ADD COLUMN claimed_until_ms BIGINT;
",
    ),
];

fn storage(e: impl Into<PgError>) -> DeliveryStoreError {
    DeliveryStoreError::Storage(e.into().0)
}

/// [`DeliveryStore`] on PostgreSQL (see the [module docs](self)).
pub struct PgDeliveryStore {
    pool: Pool,
}

impl fmt::Debug for PgDeliveryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's configuration holds the password: never print it.
        f.debug_struct("PgDeliveryStore")
            .field("pool_size", &self.pool.max())
            .finish_non_exhaustive()
    }
}

impl PgDeliveryStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`
    /// or libpq's `key=value` form), migrating it to [`SCHEMA_VERSION`],
    /// with a pool of [`DEFAULT_POOL_SIZE`] connections.
    ///
    /// # Errors
    /// [`DeliveryStoreError::Storage`] if the URL is malformed, the
    /// database cannot be reached, the migration fails or the database's
    /// schema is newer than this build's.
    pub fn connect(url: &str) -> Result<Self, DeliveryStoreError> {
        Self::connect_with_pool_size(url, DEFAULT_POOL_SIZE)
    }

    /// Like [`PgDeliveryStore::connect`], with at most `pool_size`
    /// connections (at least one).
    ///
    /// # Errors
    /// As [`PgDeliveryStore::connect`].
    pub fn connect_with_pool_size(url: &str, pool_size: usize) -> Result<Self, DeliveryStoreError> {
        Ok(Self {
            pool: Pool::connect(url, pool_size, "bonopay-deliveries", &SCHEMA).map_err(storage)?,
        })
    }

    /// The schema version the database is at.
    ///
    /// # Errors
    /// [`DeliveryStoreError::Storage`].
    pub fn schema_version(&self) -> Result<i32, DeliveryStoreError> {
        self.pool.schema_version(&SCHEMA).map_err(storage)
    }
}

impl DeliveryStore for PgDeliveryStore {
    fn record(&self, d: &DeliveryRecord) -> Result<(), DeliveryStoreError> {
        let params: [(&(dyn ToSql + Sync), Type); 9] = [
            (&d.id, Type::TEXT),
            (&d.invoice_id, Type::TEXT),
            (&d.merchant_nif, Type::TEXT),
            (&d.channel.as_str(), Type::TEXT),
            (&d.recipient, Type::TEXT),
            (&d.status.as_str(), Type::TEXT),
            (&d.error, Type::TEXT),
            (&d.created_at, Type::TEXT),
            (&d.completed_at, Type::TEXT),
        ];
        self.pool
            .write(|c| {
                c.execute_typed(
                    "INSERT INTO receipt_deliveries (id, invoice_id, merchant_nif, channel,
                         recipient, status, error, created_at, completed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &params,
                )
            })
            .map_err(storage)
            .map(|_| ())
    }

    fn list(
        &self,
        merchant_nif: &str,
        invoice_id: &str,
    ) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        self.select(
            "WHERE merchant_nif = $1 AND invoice_id = $2",
            &[(&merchant_nif, Type::TEXT), (&invoice_id, Type::TEXT)],
        )
    }

    fn waiting(&self) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        self.select("WHERE status = 'waiting'", &[])
    }

    fn transition(
        &self,
        from: DeliveryStatus,
        to: &DeliveryRecord,
    ) -> Result<bool, DeliveryStoreError> {
        let params: [(&(dyn ToSql + Sync), Type); 5] = [
            (&to.status.as_str(), Type::TEXT),
            (&to.error, Type::TEXT),
            (&to.completed_at, Type::TEXT),
            (&to.id, Type::TEXT),
            (&from.as_str(), Type::TEXT),
        ];
        self.pool
            .write(|c| {
                c.execute_typed(
                    "UPDATE receipt_deliveries SET status = $1, error = $2, completed_at = $3
                     WHERE id = $4 AND status = $5",
                    &params,
                )
            })
            .map_err(storage)
            .map(|n| n == 1)
    }

    fn claim(
        &self,
        id: &str,
        from: DeliveryStatus,
        held: Option<i64>,
        until_ms: i64,
    ) -> Result<bool, DeliveryStoreError> {
        let params: [(&(dyn ToSql + Sync), Type); 4] = [
            (&until_ms, Type::INT8),
            (&id, Type::TEXT),
            (&from.as_str(), Type::TEXT),
            (&held, Type::INT8),
        ];
        // One UPDATE: PostgreSQL re-checks the WHERE clause on the row a
        // concurrent claimer committed, so exactly one of them matches.
        self.pool
            .write(|c| {
                c.execute_typed(
                    "UPDATE receipt_deliveries SET status = 'sending', claimed_until_ms = $1
                     WHERE id = $2 AND status = $3 AND claimed_until_ms IS NOT DISTINCT FROM $4",
                    &params,
                )
            })
            .map_err(storage)
            .map(|n| n == 1)
    }

    fn stalled(&self, now_ms: i64) -> Result<Vec<StalledDelivery>, DeliveryStoreError> {
        let rows = self
            .pool
            .read(|c| {
                c.query_typed(
                    "SELECT id, claimed_until_ms FROM receipt_deliveries
                     WHERE status = 'sending' AND (claimed_until_ms IS NULL OR claimed_until_ms < $1)
                     ORDER BY seq",
                    &[(&now_ms, Type::INT8)],
                )
            })
            .map_err(storage)?;
        let mut out = Vec::new();
        for r in &rows {
            let id: String = r.try_get(0).map_err(storage)?;
            let held: Option<i64> = r.try_get(1).map_err(storage)?;
            let found = self.select("WHERE id = $1", &[(&id, Type::TEXT)])?;
            // Settled meanwhile: no longer stalled.
            if let Some(record) = found
                .into_iter()
                .find(|d| d.status == DeliveryStatus::Sending)
            {
                out.push(StalledDelivery { record, held });
            }
        }
        Ok(out)
    }
}

impl PgDeliveryStore {
    fn select(
        &self,
        filter: &str,
        args: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        let sql = format!(
            "SELECT id, invoice_id, merchant_nif, channel, recipient, status, error,
                    created_at, completed_at
             FROM receipt_deliveries {filter} ORDER BY seq"
        );
        let rows = self
            .pool
            .read(|c| c.query_typed(&sql, args))
            .map_err(storage)?;
        rows.iter()
            .map(|r| {
                let channel: &str = r.try_get(3).map_err(storage)?;
                let status: &str = r.try_get(5).map_err(storage)?;
                let d = DeliveryRecord {
                    id: r.try_get(0).map_err(storage)?,
                    invoice_id: r.try_get(1).map_err(storage)?,
                    merchant_nif: r.try_get(2).map_err(storage)?,
                    channel: Channel::Email,
                    recipient: r.try_get(4).map_err(storage)?,
                    status: DeliveryStatus::Failed,
                    error: r.try_get(6).map_err(storage)?,
                    created_at: r.try_get(7).map_err(storage)?,
                    completed_at: r.try_get(8).map_err(storage)?,
                };
                checked(d, channel, status)
            })
            .collect()
    }
}

/// For `bonopay migrate`: copies the receipt delivery log of a SQLite
/// `auth.db` into PostgreSQL, inside the caller's transaction `tx` (whose
/// table [`PgDeliveryStore`] created). A record already there (same id) is
/// left as it is. Returns the records inserted.
///
/// # Errors
/// [`ImportError`]; the caller drops `tx`, so nothing is copied.
pub fn import_sqlite(
    conn: &rusqlite::Connection,
    tx: &mut ::postgres::Transaction<'_>,
) -> Result<u64, ImportError> {
    use bonopay_ledger::postgres::import::{copy_rows, has_table};
    let text = |r: &rusqlite::Row<'_>, i| r.get::<_, String>(i);
    let mut n = 0;
    if has_table(conn, "deliveries")? {
        n = copy_rows(
            conn,
            tx,
            "SELECT id, invoice_id, merchant_nif, channel, recipient, status, error,
                    created_at, completed_at
             FROM deliveries ORDER BY rowid",
            "INSERT INTO receipt_deliveries (id, invoice_id, merchant_nif, channel, recipient,
                 status, error, created_at, completed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            |r| {
                Ok(Some(vec![
                    Box::new(text(r, 0)?),
                    Box::new(text(r, 1)?),
                    Box::new(text(r, 2)?),
                    Box::new(text(r, 3)?),
                    Box::new(text(r, 4)?),
                    Box::new(text(r, 5)?),
                    Box::new(r.get::<_, Option<String>>(6)?),
                    Box::new(text(r, 7)?),
                    Box::new(text(r, 8)?),
                ]))
            },
        )?;
    }
    Ok(n)
}
