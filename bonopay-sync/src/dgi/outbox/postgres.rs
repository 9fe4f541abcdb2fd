//! The outbox in PostgreSQL (feature `postgres`), shared by the sync agents
//! of several server instances.
//!
//! Work is claimed, never shared: [`OutboxStore::claim_due`] takes due
//! items with `FOR UPDATE SKIP LOCKED` (two agents never wait on, or take,
//! the same rows) and stamps them with this worker's id and a lease;
//! every [`OutboxStore::update`] must come from the claimant and renews
//! the lease. An agent that dies loses its items when the lease ends, and
//! whoever claims them next resumes from their stored, write-ahead state,
//! so no item is ever worked on by two agents at once (no double CONFIRM)
//! and none is abandoned.
//!
//! **A dead claimant's items do not wait for its lease.** Each agent holds
//! a session-level advisory lock on a connection of its own for as long as
//! it lives, and names itself in `sync_workers`. When its process dies (a
//! crash, a SIGKILL, a redeploy) PostgreSQL ends that session and drops
//! the lock, and the other agents take its items over once the item has
//! gone untouched for the takeover grace ([`DEFAULT_TAKEOVER_GRACE_MS`],
//! or [`PgOutbox::with_takeover_grace`]), which must be longer than the
//! e-MCF client's timeout. The grace is what keeps a live agent that only
//! lost its lock connection (a database restart) from being overtaken in
//! the middle of a call: the agent writes an item right before every call
//! that changes something at the DGI (POST, CONFIRM), so by the time the
//! item is taken that call has ended, and the agent's next write fails
//! with [`OutboxError::ClaimLost`]. Claims of agents that never registered
//! (an older build still running through an upgrade) keep the lease alone.

use bonopay_ledger::PgPool;
use std::sync::Mutex;

use postgres::{Client, Row};

#[cfg(feature = "sqlite")]
use bonopay_ledger::postgres::import::ImportError;

use crate::dgi::outbox::{
    ItemState, NewItem, OutboxError, OutboxItem, OutboxStore, OutletSummary, SUMMARY_SQL,
    SummaryRows,
};
use crate::dgi::{DgiConfirmation, DgiInvoiceRequest, DgiTotals};

/// Migrations of the outbox tables.
pub const PG_OUTBOX_MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE sync_outbox (
        outlet          TEXT NOT NULL,
        seq             BIGINT NOT NULL,
        merchant_nif    TEXT NOT NULL,
        sealed_at_ms    BIGINT NOT NULL,
        request         TEXT NOT NULL,
        ours            TEXT NOT NULL,
        state           TEXT NOT NULL,
        uid             TEXT,
        theirs          TEXT,
        confirmation    TEXT,
        error           TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms BIGINT NOT NULL DEFAULT 0,
        updated_ms      BIGINT NOT NULL,
        change          BIGINT NOT NULL,
        claimed_by      TEXT,
        claim_until     BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (outlet, seq)
    );
    CREATE INDEX sync_outbox_due ON sync_outbox (next_attempt_ms)
        WHERE state NOT IN ('synced', 'rejected', 'dead');
    CREATE INDEX sync_outbox_in_flight ON sync_outbox (state)
        WHERE state IN ('submitting', 'submitted', 'confirming');
    CREATE INDEX sync_outbox_change ON sync_outbox (change);
    CREATE SEQUENCE sync_change_seq;
    CREATE TABLE sync_cursor (outlet TEXT PRIMARY KEY, seq BIGINT NOT NULL);
",
    "
    -- When the claimant last claimed or wrote the item (its clock, ms):
    -- takeover of a dead claimant's item waits for the grace after it.
    -- Rows claimed before this migration count as touched at their lease
    -- end, so they keep the lease they were given.
    ALTER TABLE sync_outbox ADD COLUMN claim_touched_ms BIGINT NOT NULL DEFAULT 0;
    UPDATE sync_outbox SET claim_touched_ms = claim_until WHERE claimed_by IS NOT NULL;
    -- Agents that hold a liveness lock (see the module docs).
    CREATE TABLE sync_workers (worker TEXT PRIMARY KEY, since_ms BIGINT NOT NULL);
",
];

/// The first key of the agents' liveness locks (`pg_advisory_lock_shared(
/// LIVENESS_CLASS, hashtext(worker))`): "BPAY" in ASCII, so that it does
/// not meet other advisory locks of the database.
pub const LIVENESS_CLASS: i32 = 0x4250_4159;

/// The default takeover grace (ms): the e-MCF client's default timeout
/// ([`crate::dgi::DEFAULT_TIMEOUT`], 30 s) plus the shared
/// [`crate::retry::TAKEOVER_MARGIN`] (15 s), which also covers clock skew
/// between instances.
#[allow(clippy::cast_possible_wrap)] // 45 000 fits.
pub const DEFAULT_TAKEOVER_GRACE_MS: i64 =
    (crate::dgi::DEFAULT_TIMEOUT.as_millis() + crate::retry::TAKEOVER_MARGIN.as_millis()) as i64;

/// The outbox over PostgreSQL.
pub struct PgOutbox {
    pool: PgPool,
    worker: String,
    /// The session holding this agent's liveness lock.
    liveness: Mutex<Option<Client>>,
    takeover_grace_ms: i64,
}

fn unavailable(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Unavailable(e.to_string())
}

/// A database error with the server's message (its `Display` says only
/// "db error").
fn db(e: &postgres::Error) -> OutboxError {
    match e.as_db_error() {
        Some(d) => OutboxError::Unavailable(format!("{}: {}", d.code().code(), d.message())),
        None => OutboxError::Unavailable(e.to_string()),
    }
}

fn corrupt(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Corrupt(e.to_string())
}

fn i64_of(v: u64) -> Result<i64, OutboxError> {
    i64::try_from(v).map_err(corrupt)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, OutboxError> {
    serde_json::to_string(v).map_err(corrupt)
}

fn read_item(r: &Row) -> Result<OutboxItem, OutboxError> {
    let g = |e: postgres::Error| corrupt(e);
    let state: String = r.try_get(6).map_err(g)?;
    let theirs: Option<String> = r.try_get(8).map_err(g)?;
    let confirmation: Option<String> = r.try_get(9).map_err(g)?;
    let request: String = r.try_get(4).map_err(g)?;
    let ours: String = r.try_get(5).map_err(g)?;
    let attempts: i32 = r.try_get(11).map_err(g)?;
    Ok(OutboxItem {
        outlet: r.try_get(0).map_err(g)?,
        seq: u64::try_from(r.try_get::<_, i64>(1).map_err(g)?).map_err(corrupt)?,
        merchant_nif: r.try_get(2).map_err(g)?,
        sealed_at_ms: r.try_get(3).map_err(g)?,
        request: serde_json::from_str::<DgiInvoiceRequest>(&request).map_err(corrupt)?,
        ours: serde_json::from_str::<DgiTotals>(&ours).map_err(corrupt)?,
        state: ItemState::from_code(&state)
            .ok_or_else(|| corrupt(format!("unknown state `{state}`")))?,
        uid: r.try_get(7).map_err(g)?,
        theirs: theirs
            .map(|t| serde_json::from_str::<DgiTotals>(&t))
            .transpose()
            .map_err(corrupt)?,
        confirmation: confirmation
            .map(|c| serde_json::from_str::<DgiConfirmation>(&c))
            .transpose()
            .map_err(corrupt)?,
        error: r.try_get(10).map_err(g)?,
        attempts: u32::try_from(attempts).map_err(corrupt)?,
        next_attempt_ms: r.try_get(12).map_err(g)?,
        updated_ms: r.try_get(13).map_err(g)?,
        change: u64::try_from(r.try_get::<_, i64>(14).map_err(g)?).map_err(corrupt)?,
    })
}

impl PgOutbox {
    /// Connects and migrates. `worker` names this agent in claims (unique
    /// per server instance, e.g. host and process id).
    ///
    /// # Errors
    /// [`OutboxError::Unavailable`].
    pub fn connect(url: &str, worker: &str, max_connections: usize) -> Result<Self, OutboxError> {
        let me = Self {
            pool: PgPool::new(url, max_connections),
            worker: worker.to_owned(),
            liveness: Mutex::new(None),
            takeover_grace_ms: DEFAULT_TAKEOVER_GRACE_MS,
        };
        me.pool
            .with(|c| -> Result<(), OutboxError> {
                let mut tx = c.client.transaction().map_err(|e| db(&e))?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS sync_schema (version INTEGER NOT NULL);
                     LOCK TABLE sync_schema IN EXCLUSIVE MODE;",
                )
                .map_err(|e| db(&e))?;
                let v: i32 = tx
                    .query_one("SELECT COALESCE(MAX(version), 0) FROM sync_schema", &[])
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| db(&e))?;
                let have = usize::try_from(v).map_err(corrupt)?;
                if have > PG_OUTBOX_MIGRATIONS.len() {
                    return Err(unavailable(format!(
                        "outbox schema version {have} is newer than this build"
                    )));
                }
                for (i, m) in PG_OUTBOX_MIGRATIONS.iter().enumerate().skip(have) {
                    tx.batch_execute(m).map_err(|e| db(&e))?;
                    let n = i32::try_from(i + 1).map_err(corrupt)?;
                    tx.execute("INSERT INTO sync_schema (version) VALUES ($1)", &[&n])
                        .map_err(|e| db(&e))?;
                }
                tx.commit().map_err(|e| db(&e))
            })
            .map_err(unavailable)??;
        // Not registered yet: the liveness lock is taken with the first
        // claim, so a process that only migrates (`bonopay migrate`)
        // neither opens it nor lists itself as an agent.
        Ok(me)
    }

    /// The same outbox with another takeover grace (ms, at least 0): how
    /// long an item of a dead claimant must have gone untouched before
    /// another agent takes it. Make it longer than the e-MCF client's
    /// timeout.
    #[must_use]
    pub fn with_takeover_grace(mut self, grace_ms: i64) -> Self {
        self.takeover_grace_ms = grace_ms.max(0);
        self
    }

    /// Makes sure this agent's liveness lock is held: on first use, and
    /// again after its session ended (a database restart). Called before
    /// every claim, so an agent that cannot show it is alive claims
    /// nothing.
    fn ensure_alive(&self) -> Result<(), OutboxError> {
        let mut slot = self
            .liveness
            .lock()
            .map_err(|_| unavailable("liveness lock poisoned"))?;
        if let Some(c) = slot.as_mut() {
            // A session PostgreSQL ended is seen here, not only when the
            // client noticed the close.
            if !c.is_closed() && c.simple_query("SELECT 1").is_ok() {
                return Ok(());
            }
        }
        *slot = None;
        let mut c = self.pool.connect_dedicated().map_err(unavailable)?;
        c.execute(
            "INSERT INTO sync_workers (worker, since_ms)
             VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::int8)
             ON CONFLICT (worker) DO NOTHING",
            &[&self.worker],
        )
        .map_err(|e| db(&e))?;
        // Shared: a second process under the same name (a restart that
        // reuses it) must not block here; either one alive keeps the
        // claims alive.
        c.execute(
            "SELECT pg_advisory_lock_shared($1, hashtext($2))",
            &[&LIVENESS_CLASS, &self.worker],
        )
        .map_err(|e| db(&e))?;
        *slot = Some(c);
        Ok(())
    }

    fn rows(
        &self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<OutboxItem>, OutboxError> {
        self.pool
            .with(|c| -> Result<Vec<OutboxItem>, OutboxError> {
                let st = c.stmt(sql).map_err(|e| db(&e))?;
                c.client
                    .query(&st, params)
                    .map_err(|e| db(&e))?
                    .iter()
                    .map(read_item)
                    .collect()
            })
            .map_err(unavailable)?
    }
}

impl std::fmt::Debug for PgOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOutbox")
            .field("pool", &self.pool)
            .field("worker", &self.worker)
            .field("takeover_grace_ms", &self.takeover_grace_ms)
            .finish_non_exhaustive()
    }
}

impl Drop for PgOutbox {
    /// A `postgres` client may not be dropped on an async runtime thread
    /// (the server's state is dropped there at shutdown): the liveness
    /// session is closed on a thread of its own, like the pool's.
    fn drop(&mut self) {
        let client = self.liveness.get_mut().ok().and_then(Option::take);
        if let Some(c) = client {
            let _ = std::thread::Builder::new()
                .name("pg-liveness-close".into())
                .spawn(move || drop(c));
        }
    }
}

const SQL_DUE: &str =
    "SELECT outlet, seq, merchant_nif, sealed_at_ms, request, ours, state, uid, theirs,
     confirmation, error, attempts, next_attempt_ms, updated_ms, change FROM sync_outbox
     WHERE state NOT IN ('synced', 'rejected', 'dead') AND next_attempt_ms <= $1
     ORDER BY next_attempt_ms, sealed_at_ms, outlet, seq LIMIT $2";
const SQL_IN_FLIGHT: &str =
    "SELECT outlet, seq, merchant_nif, sealed_at_ms, request, ours, state, uid, theirs,
     confirmation, error, attempts, next_attempt_ms, updated_ms, change FROM sync_outbox
     WHERE state IN ('submitting', 'submitted', 'confirming')";
const SQL_GET: &str =
    "SELECT outlet, seq, merchant_nif, sealed_at_ms, request, ours, state, uid, theirs,
     confirmation, error, attempts, next_attempt_ms, updated_ms, change FROM sync_outbox
     WHERE outlet = $1 AND seq = $2";
const SQL_CHANGES: &str =
    "SELECT outlet, seq, merchant_nif, sealed_at_ms, request, ours, state, uid, theirs,
     confirmation, error, attempts, next_attempt_ms, updated_ms, change FROM sync_outbox
     WHERE change > $1 ORDER BY change LIMIT $2";
/// The condition under which this worker (`$1`, at time `$2`) may claim
/// an item, `s`: unclaimed, its own, its lease ended, or its claimant
/// registered but dead (no liveness lock) and the item untouched for the
/// grace (parameter `$grace`; lock class `$class`).
macro_rules! claimable {
    ($grace:literal, $class:literal) => {
        concat!(
            "(s.claimed_by IS NULL OR s.claimed_by = $1 OR s.claim_until < $2
              OR (s.claim_touched_ms <= $2 - $", $grace, "
                  AND s.claimed_by IN (SELECT worker FROM sync_workers)
                  AND NOT EXISTS (SELECT 1 FROM pg_locks l
                      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        AND l.classid = $", $class, "::int4::oid
                        AND l.objid = hashtext(s.claimed_by)::oid)))"
        )
    };
}

/// Claims in one statement: in-flight items first, then the due ones;
/// rows another agent is claiming right now are skipped, not waited for.
const SQL_CLAIM_DUE: &str = concat!(
    "UPDATE sync_outbox o SET claimed_by = $1, claim_until = $3, claim_touched_ms = $2
     FROM (SELECT outlet, seq FROM sync_outbox s
           WHERE state NOT IN ('synced', 'rejected', 'dead') AND next_attempt_ms <= $2
             AND ",
    claimable!("5", "6"),
    "
           ORDER BY (state IN ('submitting', 'submitted', 'confirming')) DESC, next_attempt_ms, sealed_at_ms
           LIMIT $4 FOR UPDATE SKIP LOCKED) c
     WHERE o.outlet = c.outlet AND o.seq = c.seq
     RETURNING o.outlet, o.seq, o.merchant_nif, o.sealed_at_ms, o.request, o.ours, o.state, o.uid,
       o.theirs, o.confirmation, o.error, o.attempts, o.next_attempt_ms, o.updated_ms, o.change"
);
const SQL_CLAIM_ONE: &str = concat!(
    "UPDATE sync_outbox s SET claimed_by = $1, claim_until = $3, claim_touched_ms = $2
     WHERE outlet = $4 AND seq = $5 AND (s.state = 'dead' OR ",
    claimable!("6", "7"),
    ")
     RETURNING outlet, seq, merchant_nif, sealed_at_ms, request, ours, state, uid, theirs,
       confirmation, error, attempts, next_attempt_ms, updated_ms, change"
);

/// How long a claim lasts past an update, when the update gives no lease.
const DEFAULT_LEASE_MS: i64 = 5 * 60 * 1000;

impl OutboxStore for PgOutbox {
    fn cursor(&self, outlet: &str) -> Result<u64, OutboxError> {
        let v: Option<i64> = self
            .pool
            .with(|c| {
                c.client
                    .query_opt("SELECT seq FROM sync_cursor WHERE outlet = $1", &[&outlet])
                    .map(|r| r.and_then(|r| r.try_get(0).ok()))
            })
            .map_err(unavailable)?
            .map_err(|e| db(&e))?;
        u64::try_from(v.unwrap_or(0)).map_err(corrupt)
    }

    fn enqueue(&self, outlet: &str, scanned_to: u64, items: &[NewItem]) -> Result<(), OutboxError> {
        self.pool
            .with(|c| -> Result<(), OutboxError> {
                let mut tx = c.client.transaction().map_err(|e| db(&e))?;
                for it in items {
                    tx.execute(
                        "INSERT INTO sync_outbox (outlet, seq, merchant_nif, sealed_at_ms, request, ours,
                           state, attempts, next_attempt_ms, updated_ms, change)
                         VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, 0, $4, nextval('sync_change_seq'))
                         ON CONFLICT (outlet, seq) DO NOTHING",
                        &[
                            &it.outlet,
                            &i64_of(it.seq)?,
                            &it.merchant_nif,
                            &it.sealed_at_ms,
                            &to_json(&it.request)?,
                            &to_json(&it.ours)?,
                        ],
                    )
                    .map_err(|e| db(&e))?;
                }
                tx.execute(
                    "INSERT INTO sync_cursor (outlet, seq) VALUES ($1, $2)
                     ON CONFLICT (outlet) DO UPDATE SET seq = GREATEST(sync_cursor.seq, excluded.seq)",
                    &[&outlet, &i64_of(scanned_to)?],
                )
                .map_err(|e| db(&e))?;
                tx.commit().map_err(|e| db(&e))
            })
            .map_err(unavailable)?
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxItem>, OutboxError> {
        let l = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(SQL_DUE, &[&now_ms, &l])
    }

    fn claim_due(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, OutboxError> {
        let l = i64::try_from(limit).unwrap_or(i64::MAX);
        let until = now_ms.saturating_add(lease_ms);
        self.ensure_alive()?;
        let mut items = self.rows(
            SQL_CLAIM_DUE,
            &[
                &self.worker,
                &now_ms,
                &until,
                &l,
                &self.takeover_grace_ms,
                &LIVENESS_CLASS,
            ],
        )?;
        // RETURNING does not keep the subquery's order.
        items.sort_by_key(|i| (!i.state.in_flight(), i.next_attempt_ms, i.sealed_at_ms));
        Ok(items)
    }

    fn claim(
        &self,
        outlet: &str,
        seq: u64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<OutboxItem>, OutboxError> {
        self.ensure_alive()?;
        Ok(self
            .rows(
                SQL_CLAIM_ONE,
                &[
                    &self.worker,
                    &now_ms,
                    &now_ms.saturating_add(lease_ms),
                    &outlet,
                    &i64_of(seq)?,
                    &self.takeover_grace_ms,
                    &LIVENESS_CLASS,
                ],
            )?
            .pop())
    }

    fn in_flight(&self) -> Result<Vec<OutboxItem>, OutboxError> {
        self.rows(SQL_IN_FLIGHT, &[])
    }

    fn get(&self, outlet: &str, seq: u64) -> Result<Option<OutboxItem>, OutboxError> {
        Ok(self.rows(SQL_GET, &[&outlet, &i64_of(seq)?])?.pop())
    }

    fn update(&self, item: &OutboxItem) -> Result<u64, OutboxError> {
        let theirs = item.theirs.as_ref().map(to_json).transpose()?;
        let confirmation = item.confirmation.as_ref().map(to_json).transpose()?;
        let attempts = i32::try_from(item.attempts).map_err(corrupt)?;
        let seq = i64_of(item.seq)?;
        let lease_until = item.updated_ms.saturating_add(DEFAULT_LEASE_MS);
        let changed: Option<i64> = self
            .pool
            .with(|c| -> Result<Option<i64>, OutboxError> {
                let st = c
                    .stmt(
                        "UPDATE sync_outbox SET state = $3, uid = $4, theirs = $5, confirmation = $6,
                           error = $7, attempts = $8, next_attempt_ms = $9, updated_ms = $10,
                           change = nextval('sync_change_seq'), claim_until = $12,
                           claim_touched_ms = $10
                         WHERE outlet = $1 AND seq = $2 AND claimed_by = $11
                         RETURNING change",
                    )
                    .map_err(|e| db(&e))?;
                c.client
                    .query_opt(
                        &st,
                        &[
                            &item.outlet,
                            &seq,
                            &item.state.as_str(),
                            &item.uid,
                            &theirs,
                            &confirmation,
                            &item.error,
                            &attempts,
                            &item.next_attempt_ms,
                            &item.updated_ms,
                            &self.worker,
                            &lease_until,
                        ],
                    )
                    .map_err(|e| db(&e))?
                    .map(|r| r.try_get(0))
                    .transpose()
                    .map_err(corrupt)
            })
            .map_err(unavailable)??;
        match changed {
            Some(c) => u64::try_from(c).map_err(corrupt),
            None => match self.get(&item.outlet, item.seq)? {
                None => Err(OutboxError::NotFound(item.id())),
                Some(_) => Err(OutboxError::ClaimLost(item.id())),
            },
        }
    }

    fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<OutboxItem>, OutboxError> {
        let l = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(SQL_CHANGES, &[&i64_of(after)?, &l])
    }

    fn summary(&self) -> Result<Vec<OutletSummary>, OutboxError> {
        let rows = self
            .pool
            .with(|c| c.client.query(SUMMARY_SQL, &[]))
            .map_err(unavailable)?
            .map_err(|e| db(&e))?;
        let mut out = SummaryRows::default();
        for r in rows {
            let g = |e: postgres::Error| corrupt(e);
            out.add(
                r.try_get(0).map_err(g)?,
                r.try_get(1).map_err(g)?,
                r.try_get(2).map_err(g)?,
                r.try_get(3).map_err(g)?,
                r.try_get(4).map_err(g)?,
                r.try_get(5).map_err(g)?,
            )?;
        }
        Ok(out.finish())
    }
}

/// Copies the outbox of a SQLite ledger file (if it ever synced) into the
/// PostgreSQL outbox at `url`, for `bonopay migrate`: every item as it is
/// (state, uid, attempts, due time), unclaimed, and the per-outlet cursors,
/// in one transaction. Rows an earlier run copied are left as they are and
/// not counted; a cursor only moves forward. Returns the items inserted.
///
/// # Errors
/// [`ImportError`]; nothing is copied.
#[cfg(feature = "sqlite")]
pub fn import_sqlite(ledger: &std::path::Path, url: &str) -> Result<u64, ImportError> {
    use bonopay_ledger::postgres::import::{Params, copy_rows, has_table};
    let conn = rusqlite::Connection::open(ledger)?;
    let has = has_table(&conn, "sync_outbox")?;
    // Creates the target tables.
    drop(PgOutbox::connect(url, "migrate", 1).map_err(|e| ImportError::Store(e.to_string()))?);
    if !has {
        return Ok(0);
    }
    let mut pg = Client::connect(url, postgres::NoTls)?;
    let mut tx = pg.transaction()?;
    let n = copy_rows(
        &conn,
        &mut tx,
        "SELECT outlet, seq, merchant_nif, sealed_at_ms, request, ours, state, uid, theirs,
                confirmation, error, attempts, next_attempt_ms, updated_ms FROM sync_outbox",
        "INSERT INTO sync_outbox (outlet, seq, merchant_nif, sealed_at_ms, request, ours, state,
           uid, theirs, confirmation, error, attempts, next_attempt_ms, updated_ms, change)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, nextval('sync_change_seq'))
         ON CONFLICT (outlet, seq) DO NOTHING",
        |r| {
            let row: Params = vec![
                Box::new(r.get::<_, String>(0)?),
                Box::new(r.get::<_, i64>(1)?),
                Box::new(r.get::<_, String>(2)?),
                Box::new(r.get::<_, i64>(3)?),
                Box::new(r.get::<_, String>(4)?),
                Box::new(r.get::<_, String>(5)?),
                Box::new(r.get::<_, String>(6)?),
                Box::new(r.get::<_, Option<String>>(7)?),
                Box::new(r.get::<_, Option<String>>(8)?),
                Box::new(r.get::<_, Option<String>>(9)?),
                Box::new(r.get::<_, Option<String>>(10)?),
                Box::new(r.get::<_, i32>(11)?),
                Box::new(r.get::<_, i64>(12)?),
                Box::new(r.get::<_, i64>(13)?),
            ];
            Ok(Some(row))
        },
    )?;
    copy_rows(
        &conn,
        &mut tx,
        "SELECT outlet, seq FROM sync_cursor",
        "INSERT INTO sync_cursor (outlet, seq) VALUES ($1, $2)
         ON CONFLICT (outlet) DO UPDATE SET seq = GREATEST(sync_cursor.seq, excluded.seq)",
        |r| {
            Ok(Some(vec![
                Box::new(r.get::<_, String>(0)?),
                Box::new(r.get::<_, i64>(1)?),
            ]))
        },
    )?;
    tx.commit()?;
    Ok(n)
}
