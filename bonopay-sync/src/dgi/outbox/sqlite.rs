//! The outbox in the ledger's SQLite file (feature `sqlite`): its own tables
//! next to the ledger's, WAL, `synchronous=FULL`, every state change a
//! durable transaction. The schema version lives in its own table, because
//! the ledger owns the file's `user_version`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::dgi::outbox::{
    ItemState, NewItem, OutboxError, OutboxItem, OutboxStore, OutletSummary, SUMMARY_SQL,
    SummaryRows,
};
use crate::dgi::{DgiConfirmation, DgiInvoiceRequest, DgiTotals};

/// Migrations of the outbox tables, in order.
pub const OUTBOX_MIGRATIONS: &[&str] = &["
    CREATE TABLE sync_outbox (
        outlet         TEXT NOT NULL,
        seq            INTEGER NOT NULL,
        merchant_nif   TEXT NOT NULL,
        sealed_at_ms   INTEGER NOT NULL,
        request        TEXT NOT NULL,
        ours           TEXT NOT NULL,
        state          TEXT NOT NULL,
        uid            TEXT,
        theirs         TEXT,
        confirmation   TEXT,
        error          TEXT,
        attempts       INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        updated_ms     INTEGER NOT NULL,
        change         INTEGER NOT NULL,
        PRIMARY KEY (outlet, seq)
    ) WITHOUT ROWID;
    CREATE INDEX sync_outbox_due ON sync_outbox (next_attempt_ms) WHERE state NOT IN ('synced', 'rejected', 'dead');
    CREATE UNIQUE INDEX sync_outbox_change ON sync_outbox (change);
    CREATE TABLE sync_cursor (outlet TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE sync_change (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
    INSERT INTO sync_change (id, last) VALUES (1, 0);
", "
    CREATE INDEX sync_outbox_in_flight ON sync_outbox (state)
        WHERE state IN ('submitting', 'submitted', 'confirming');
"];

/// The outbox over SQLite.
#[derive(Debug)]
pub struct SqliteOutbox {
    conn: Mutex<Connection>,
}

fn unavailable(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Corrupt(e.to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, OutboxError> {
    serde_json::to_string(v).map_err(corrupt)
}

fn i64_of(v: u64) -> Result<i64, OutboxError> {
    i64::try_from(v).map_err(corrupt)
}

const COLUMNS: &str = "outlet, seq, merchant_nif, sealed_at_ms, request, ours, state, uid, theirs,
     confirmation, error, attempts, next_attempt_ms, updated_ms, change";

fn read_item(r: &Row<'_>) -> rusqlite::Result<Result<OutboxItem, OutboxError>> {
    let outlet: String = r.get(0)?;
    let seq: i64 = r.get(1)?;
    let merchant_nif: String = r.get(2)?;
    let sealed_at_ms: i64 = r.get(3)?;
    let request: String = r.get(4)?;
    let ours: String = r.get(5)?;
    let state: String = r.get(6)?;
    let uid: Option<String> = r.get(7)?;
    let theirs: Option<String> = r.get(8)?;
    let confirmation: Option<String> = r.get(9)?;
    let error: Option<String> = r.get(10)?;
    let attempts: i64 = r.get(11)?;
    let next_attempt_ms: i64 = r.get(12)?;
    let updated_ms: i64 = r.get(13)?;
    let change: i64 = r.get(14)?;
    Ok((|| {
        Ok(OutboxItem {
            seq: u64::try_from(seq).map_err(corrupt)?,
            merchant_nif,
            sealed_at_ms,
            request: serde_json::from_str::<DgiInvoiceRequest>(&request).map_err(corrupt)?,
            ours: serde_json::from_str::<DgiTotals>(&ours).map_err(corrupt)?,
            state: ItemState::from_code(&state)
                .ok_or_else(|| corrupt(format!("unknown state `{state}`")))?,
            uid,
            theirs: theirs
                .map(|t| serde_json::from_str::<DgiTotals>(&t))
                .transpose()
                .map_err(corrupt)?,
            confirmation: confirmation
                .map(|c| serde_json::from_str::<DgiConfirmation>(&c))
                .transpose()
                .map_err(corrupt)?,
            error,
            attempts: u32::try_from(attempts).map_err(corrupt)?,
            next_attempt_ms,
            updated_ms,
            change: u64::try_from(change).map_err(corrupt)?,
            outlet,
        })
    })())
}

impl SqliteOutbox {
    /// Opens the outbox in `path` (normally the ledger's file), creating
    /// or migrating its tables.
    ///
    /// # Errors
    /// [`OutboxError::Unavailable`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OutboxError> {
        let mut conn = Connection::open(path).map_err(unavailable)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS sync_schema (version INTEGER NOT NULL)")
            .map_err(unavailable)?;
        let version: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM sync_schema",
                [],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        let have = usize::try_from(version).map_err(corrupt)?;
        if have > OUTBOX_MIGRATIONS.len() {
            return Err(unavailable(format!(
                "outbox schema version {have} is newer than this build ({})",
                OUTBOX_MIGRATIONS.len()
            )));
        }
        for (i, m) in OUTBOX_MIGRATIONS.iter().enumerate().skip(have) {
            tx.execute_batch(m).map_err(unavailable)?;
            tx.execute(
                "INSERT INTO sync_schema (version) VALUES (?1)",
                [i64::try_from(i + 1).map_err(corrupt)?],
            )
            .map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, OutboxError> {
        self.conn
            .lock()
            .map_err(|_| unavailable("outbox lock poisoned"))
    }

    fn query(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<OutboxItem>, OutboxError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
        let rows = stmt.query_map(p, read_item).map_err(unavailable)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(unavailable)??);
        }
        Ok(out)
    }
}

impl OutboxStore for SqliteOutbox {
    fn cursor(&self, outlet: &str) -> Result<u64, OutboxError> {
        let conn = self.conn()?;
        let seq: Option<i64> = conn
            .query_row(
                "SELECT seq FROM sync_cursor WHERE outlet = ?1",
                [outlet],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        u64::try_from(seq.unwrap_or(0)).map_err(corrupt)
    }

    fn enqueue(&self, outlet: &str, scanned_to: u64, items: &[NewItem]) -> Result<(), OutboxError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        {
            let mut last: i64 = tx
                .query_row("SELECT last FROM sync_change WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .map_err(unavailable)?;
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO sync_outbox (outlet, seq, merchant_nif, sealed_at_ms, request, ours,
                       state, attempts, next_attempt_ms, updated_ms, change)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', 0, 0, ?4, ?7)
                     ON CONFLICT (outlet, seq) DO NOTHING",
                )
                .map_err(unavailable)?;
            for it in items {
                last += 1;
                ins.execute(params![
                    it.outlet,
                    i64_of(it.seq)?,
                    it.merchant_nif,
                    it.sealed_at_ms,
                    to_json(&it.request)?,
                    to_json(&it.ours)?,
                    last
                ])
                .map_err(unavailable)?;
            }
            tx.execute("UPDATE sync_change SET last = ?1 WHERE id = 1", [last])
                .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO sync_cursor (outlet, seq) VALUES (?1, ?2)
                 ON CONFLICT (outlet) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                params![outlet, i64_of(scanned_to)?],
            )
            .map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxItem>, OutboxError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM sync_outbox
                 WHERE state NOT IN ('synced', 'rejected', 'dead') AND next_attempt_ms <= ?1
                 ORDER BY next_attempt_ms, sealed_at_ms, outlet, seq LIMIT ?2"
            ),
            params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    fn in_flight(&self) -> Result<Vec<OutboxItem>, OutboxError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM sync_outbox
                 WHERE state IN ('submitting', 'submitted', 'confirming')"
            ),
            [],
        )
    }

    fn get(&self, outlet: &str, seq: u64) -> Result<Option<OutboxItem>, OutboxError> {
        Ok(self
            .query(
                &format!("SELECT {COLUMNS} FROM sync_outbox WHERE outlet = ?1 AND seq = ?2"),
                params![outlet, i64_of(seq)?],
            )?
            .pop())
    }

    fn update(&self, item: &OutboxItem) -> Result<u64, OutboxError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let last: i64 = tx
            .query_row("SELECT last FROM sync_change WHERE id = 1", [], |r| {
                r.get(0)
            })
            .map_err(unavailable)?;
        let change = last + 1;
        let n = tx
            .execute(
                "UPDATE sync_outbox SET state = ?3, uid = ?4, theirs = ?5, confirmation = ?6,
                   error = ?7, attempts = ?8, next_attempt_ms = ?9, updated_ms = ?10, change = ?11
                 WHERE outlet = ?1 AND seq = ?2",
                params![
                    item.outlet,
                    i64_of(item.seq)?,
                    item.state.as_str(),
                    item.uid,
                    item.theirs.as_ref().map(to_json).transpose()?,
                    item.confirmation.as_ref().map(to_json).transpose()?,
                    item.error,
                    i64::from(item.attempts),
                    item.next_attempt_ms,
                    item.updated_ms,
                    change
                ],
            )
            .map_err(unavailable)?;
        if n == 0 {
            return Err(OutboxError::NotFound(item.id()));
        }
        tx.execute("UPDATE sync_change SET last = ?1 WHERE id = 1", [change])
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        u64::try_from(change).map_err(corrupt)
    }

    fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<OutboxItem>, OutboxError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM sync_outbox WHERE change > ?1 ORDER BY change LIMIT ?2"
            ),
            params![i64_of(after)?, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    fn summary(&self) -> Result<Vec<OutletSummary>, OutboxError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(SUMMARY_SQL).map_err(unavailable)?;
        let mut rows = stmt.query([]).map_err(unavailable)?;
        let mut out = SummaryRows::default();
        while let Some(r) = rows.next().map_err(unavailable)? {
            let g = |e: rusqlite::Error| corrupt(e);
            out.add(
                r.get(0).map_err(g)?,
                &r.get::<_, String>(1).map_err(g)?,
                r.get(2).map_err(g)?,
                r.get(3).map_err(g)?,
                r.get(4).map_err(g)?,
                r.get(5).map_err(g)?,
            )?;
        }
        Ok(out.finish())
    }
}
