//! [`WebhookStore`] on PostgreSQL, for several server instances sharing one
//! database: every instance sees the same subscribers and delivery logs,
//! each ledger entry becomes one event however many instances produce, and
//! each delivery is sent by one instance at a time.
//!
//! [`PgWebhookStore`] keeps the semantics of [`SqliteWebhookStore`]
//! (both pass [`webhooks_conformance`](super::conformance)). The
//! tables are those of `auth.db` with the same names (`webhook_subscribers`,
//! `webhook_events`, `webhook_deliveries`, `webhook_attempts`,
//! `webhook_cursors`), migrated by versions recorded in
//! `webhook_schema_version` under an advisory lock, on the pool the crate's
//! PostgreSQL stores share (`server::pg`). Call it from blocking threads
//! only, as the service does.
//!
//! **Why each event is produced once.** [`commit_events`] runs in one READ
//! COMMITTED transaction whose first statements make sure the outlet's row
//! in `webhook_cursors` exists (`INSERT … ON CONFLICT DO NOTHING`) and lock
//! it (`SELECT … FOR UPDATE`). Two instances producing the same outlet at
//! once queue on that lock: the second reads the cursor only after the
//! first has committed (READ COMMITTED re-reads the locked row's newest
//! version), finds it moved past the position its batch starts at, and
//! writes nothing (`None`): a cursor is never advanced twice over the same
//! entries. Independently of the lock, events are inserted with `ON
//! CONFLICT (event_id) DO NOTHING`, and deliveries only by the transaction
//! whose event insert took effect (the unique index makes a concurrent
//! insert of the same id wait for the first one's outcome), with a unique
//! `(event_id, subscriber_id)`: even a producer that had lost its cursor,
//! or the DGI sync agents of two instances enqueuing one `invoice.synced`,
//! cannot enqueue an event or a delivery twice.
//!
//! **Why a delivery is sent by one instance at a time.** [`claim_due`] is
//! one statement: it selects due deliveries `FOR UPDATE OF d SKIP LOCKED`
//! and moves their due time to the end of the claimant's lease. Rows
//! another claim is holding are skipped rather than waited for; a row that
//! another claim updated and committed meanwhile is re-checked against the
//! `WHERE` (its due time is now in the future) and dropped. So until the
//! lease ends, no other instance's claim matches the delivery. A claimant
//! that crashes never records: its deliveries are due again when the lease
//! ends, and another instance takes them over. [`record`] locks the
//! delivery's row (`FOR UPDATE`), so two records of one delivery (a late
//! claimant after a takeover, and the new one) are serialized, and the
//! late one only logs (see [`WebhookStore::record`]).
//!
//! **The subscriber limit** is checked and applied under a transaction
//! advisory lock per merchant, so racing creations on several instances
//! never exceed it.
//!
//! [`commit_events`]: WebhookStore::commit_events
//! [`claim_due`]: WebhookStore::claim_due
//! [`record`]: WebhookStore::record
//! [`SqliteWebhookStore`]: super::SqliteWebhookStore

use std::fmt;

use ::postgres::Transaction;
use ::postgres::types::{ToSql, Type};

use super::{
    AttemptOutcome, ClaimedDelivery, DeliveryAttempt, EventType, NewEvent, RecordPlan, Recorded,
    Schedule, StoredAttempt, Subscriber, WebhookError, WebhookStore, event_body, rfc3339, to_i64,
    to_u64_cursor,
};
use crate::server::pg::{PgError, Pool, Schema};
use bonopay_ledger::postgres::import::ImportError;

/// Connections a store opens at most, unless told otherwise: the
/// dispatcher, the producer and a few API calls.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// The schema version this build migrates to (the highest row of
/// `webhook_schema_version`).
pub const SCHEMA_VERSION: i32 = 1;

/// The webhook tables, migrated under the advisory lock "bpwhkmig".
const SCHEMA: Schema = Schema {
    name: "webhook store",
    version_table: "webhook_schema_version",
    lock: 0x6270_7768_6b6d_6967,
    migrations: MIGRATIONS,
};

/// The migrations, in order: `(version, SQL)`. Never edit one that has
/// shipped; append a new one.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE webhook_subscribers (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    id           TEXT PRIMARY KEY,
    merchant_nif TEXT NOT NULL,
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,          -- as shown once: the HMAC key
    events       TEXT[] NOT NULL,
    created_at   TEXT NOT NULL,          -- RFC 3339, kept as given
    disabled     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX webhook_subscribers_merchant ON webhook_subscribers (merchant_nif, seq);
CREATE TABLE webhook_events (
    event_id     TEXT PRIMARY KEY,
    merchant_nif TEXT NOT NULL,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,          -- JSON, as sent
    created_at   TEXT NOT NULL
);
CREATE TABLE webhook_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL,
    subscriber_id   TEXT NOT NULL,
    state           TEXT NOT NULL
        CHECK (state IN ('pending', 'delivered', 'dead', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT,              -- due time (Unix ms) while pending
    created_at      TEXT NOT NULL,
    UNIQUE (event_id, subscriber_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms, id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_subscriber ON webhook_deliveries (subscriber_id);
CREATE TABLE webhook_attempts (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    delivery_id     BIGINT NOT NULL,
    attempt         INTEGER NOT NULL,    -- 1, 2, …
    status          TEXT NOT NULL,       -- sent | failed
    http_status     INTEGER,
    error           TEXT,
    started_at      TEXT NOT NULL,
    completed_at    TEXT NOT NULL,
    next_attempt_at TEXT,                -- the retry this failure scheduled
    PRIMARY KEY (delivery_id, attempt)
);
CREATE INDEX webhook_attempts_order ON webhook_attempts (delivery_id, seq);
CREATE TABLE webhook_cursors (
    outlet   TEXT PRIMARY KEY,
    next_seq BIGINT NOT NULL             -- first ledger seq not turned into events yet
);
",
)];

/// First key of the per-merchant advisory lock of subscriber creation
/// ("bpwh"); the second is the hash of the merchant's NIF.
const SUBSCRIBER_LOCK: i32 = 0x6270_7768;

fn storage(e: impl Into<PgError>) -> WebhookError {
    WebhookError::Storage(e.into().0)
}

/// [`WebhookStore`] on PostgreSQL (see the [module docs](self)).
pub struct PgWebhookStore {
    pool: Pool,
}

impl fmt::Debug for PgWebhookStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's configuration holds the password: never print it.
        f.debug_struct("PgWebhookStore")
            .field("pool_size", &self.pool.max())
            .finish_non_exhaustive()
    }
}

impl PgWebhookStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`
    /// or libpq's `key=value` form), migrating it to [`SCHEMA_VERSION`],
    /// with a pool of [`DEFAULT_POOL_SIZE`] connections.
    ///
    /// # Errors
    /// [`WebhookError::Storage`] if the URL is malformed, the database
    /// cannot be reached, the migration fails or the database's schema is
    /// newer than this build's.
    pub fn connect(url: &str) -> Result<Self, WebhookError> {
        Self::connect_with_pool_size(url, DEFAULT_POOL_SIZE)
    }

    /// Like [`PgWebhookStore::connect`], with at most `pool_size`
    /// connections (at least one).
    ///
    /// # Errors
    /// As [`PgWebhookStore::connect`].
    pub fn connect_with_pool_size(url: &str, pool_size: usize) -> Result<Self, WebhookError> {
        Ok(Self {
            pool: Pool::connect(url, pool_size, "bonopay-webhooks", &SCHEMA).map_err(storage)?,
        })
    }

    /// The schema version the database is at.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn schema_version(&self) -> Result<i32, WebhookError> {
        self.pool.schema_version(&SCHEMA).map_err(storage)
    }
}

/// Inserts the event if its id is new and, only then, a pending delivery
/// due at `now_ms` for each current subscriber of its merchant that wants
/// its type. `true` if the event was new.
fn enqueue_tx(
    tx: &mut Transaction<'_>,
    ev: &NewEvent,
    now_ms: i64,
) -> Result<bool, postgres::Error> {
    let created_at = rfc3339(now_ms);
    let inserted = tx.execute_typed(
        "INSERT INTO webhook_events (event_id, merchant_nif, type, payload, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        &[
            (&ev.id, Type::TEXT),
            (&ev.merchant_nif, Type::TEXT),
            (&ev.kind.as_str(), Type::TEXT),
            (&ev.payload, Type::TEXT),
            (&created_at, Type::TEXT),
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    tx.execute_typed(
        "INSERT INTO webhook_deliveries
             (event_id, subscriber_id, state, attempts, next_attempt_ms, created_at)
         SELECT $1, id, 'pending', 0, $2, $3 FROM webhook_subscribers
         WHERE merchant_nif = $4 AND NOT disabled AND $5 = ANY (events)
         ORDER BY seq
         ON CONFLICT (event_id, subscriber_id) DO NOTHING",
        &[
            (&ev.id, Type::TEXT),
            (&now_ms, Type::INT8),
            (&created_at, Type::TEXT),
            (&ev.merchant_nif, Type::TEXT),
            (&ev.kind.as_str(), Type::TEXT),
        ],
    )?;
    Ok(true)
}

impl WebhookStore for PgWebhookStore {
    fn insert_subscriber(
        &self,
        s: &Subscriber,
        secret: &str,
        max_per_merchant: usize,
    ) -> Result<bool, WebhookError> {
        let max = i64::try_from(max_per_merchant).unwrap_or(i64::MAX);
        let events: Vec<&str> = s.events.iter().map(|e| e.as_str()).collect();
        self.pool
            .write(|c| {
                let mut tx = c.transaction()?;
                // Creations for one merchant queue here until commit, so the
                // count below is the count the insert lands on.
                tx.execute_typed(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    &[
                        (&SUBSCRIBER_LOCK, Type::INT4),
                        (&s.merchant_nif, Type::TEXT),
                    ],
                )?;
                let n: i64 = tx
                    .query_typed_one(
                        "SELECT COUNT(*) FROM webhook_subscribers
                         WHERE merchant_nif = $1 AND NOT disabled",
                        &[(&s.merchant_nif, Type::TEXT)],
                    )?
                    .try_get(0)?;
                if n >= max {
                    return Ok(false);
                }
                let params: [(&(dyn ToSql + Sync), Type); 6] = [
                    (&s.id, Type::TEXT),
                    (&s.merchant_nif, Type::TEXT),
                    (&s.url, Type::TEXT),
                    (&secret, Type::TEXT),
                    (&events, Type::TEXT_ARRAY),
                    (&s.created_at, Type::TEXT),
                ];
                tx.execute_typed(
                    "INSERT INTO webhook_subscribers (id, merchant_nif, url, secret, events, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &params,
                )?;
                tx.commit()?;
                Ok(true)
            })
            .map_err(storage)
    }

    fn list_subscribers(&self, merchant_nif: &str) -> Result<Vec<Subscriber>, WebhookError> {
        let rows = self
            .pool
            .read(|c| {
                c.query_typed(
                    "SELECT id, merchant_nif, url, events, created_at FROM webhook_subscribers
                     WHERE merchant_nif = $1 AND NOT disabled ORDER BY seq",
                    &[(&merchant_nif, Type::TEXT)],
                )
            })
            .map_err(storage)?;
        rows.iter()
            .map(|r| {
                let events: Vec<String> = r.try_get(3)?;
                Ok(Subscriber {
                    id: r.try_get(0)?,
                    merchant_nif: r.try_get(1)?,
                    url: r.try_get(2)?,
                    events: events.iter().filter_map(|e| EventType::parse(e)).collect(),
                    created_at: r.try_get(4)?,
                })
            })
            .collect::<Result<_, postgres::Error>>()
            .map_err(storage)
    }

    fn delete_subscriber(&self, merchant_nif: &str, id: &str) -> Result<bool, WebhookError> {
        self.pool
            .write(|c| {
                let mut tx = c.transaction()?;
                let n = tx.execute_typed(
                    "UPDATE webhook_subscribers SET disabled = TRUE
                     WHERE id = $1 AND merchant_nif = $2 AND NOT disabled",
                    &[(&id, Type::TEXT), (&merchant_nif, Type::TEXT)],
                )?;
                if n > 0 {
                    tx.execute_typed(
                        "UPDATE webhook_deliveries SET state = 'cancelled', next_attempt_ms = NULL
                         WHERE subscriber_id = $1 AND state = 'pending'",
                        &[(&id, Type::TEXT)],
                    )?;
                }
                tx.commit()?;
                Ok(n > 0)
            })
            .map_err(storage)
    }

    fn delivery_log(
        &self,
        merchant_nif: &str,
        id: &str,
        limit: u32,
    ) -> Result<Option<Vec<DeliveryAttempt>>, WebhookError> {
        let limit = i64::from(limit);
        let rows = self
            .pool
            .read(|c| {
                let exists = c.query_typed_opt(
                    "SELECT 1 FROM webhook_subscribers
                     WHERE id = $1 AND merchant_nif = $2 AND NOT disabled",
                    &[(&id, Type::TEXT), (&merchant_nif, Type::TEXT)],
                )?;
                if exists.is_none() {
                    return Ok(None);
                }
                c.query_typed(
                    "SELECT d.event_id, e.type, a.attempt, a.status, a.http_status, a.error,
                            a.started_at, a.completed_at, a.next_attempt_at, d.state
                     FROM webhook_attempts a
                     JOIN webhook_deliveries d ON d.id = a.delivery_id
                     JOIN webhook_events e ON e.event_id = d.event_id
                     WHERE d.subscriber_id = $1
                     ORDER BY a.seq DESC LIMIT $2",
                    &[(&id, Type::TEXT), (&limit, Type::INT8)],
                )
                .map(Some)
            })
            .map_err(storage)?;
        let Some(rows) = rows else {
            return Ok(None);
        };
        rows.iter()
            .map(|r| {
                let attempt: i32 = r.try_get(2).map_err(storage)?;
                let http_status: Option<i32> = r.try_get(4).map_err(storage)?;
                StoredAttempt {
                    event_id: r.try_get(0).map_err(storage)?,
                    event_type: r.try_get(1).map_err(storage)?,
                    attempt: u32::try_from(attempt).map_err(super::storage)?,
                    status: r.try_get(3).map_err(storage)?,
                    http_status: http_status
                        .map(u16::try_from)
                        .transpose()
                        .map_err(super::storage)?,
                    error: r.try_get(5).map_err(storage)?,
                    started_at: r.try_get(6).map_err(storage)?,
                    completed_at: r.try_get(7).map_err(storage)?,
                    next_attempt_at: r.try_get(8).map_err(storage)?,
                    state: r.try_get(9).map_err(storage)?,
                }
                .parse()
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn enqueue(&self, ev: &NewEvent, now_ms: i64) -> Result<bool, WebhookError> {
        self.pool
            .write(|c| {
                let mut tx = c.transaction()?;
                let new = enqueue_tx(&mut tx, ev, now_ms)?;
                tx.commit()?;
                Ok(new)
            })
            .map_err(storage)
    }

    fn cursor(&self, outlet: &str) -> Result<u64, WebhookError> {
        let row = self
            .pool
            .read(|c| {
                c.query_typed_opt(
                    "SELECT next_seq FROM webhook_cursors WHERE outlet = $1",
                    &[(&outlet, Type::TEXT)],
                )
            })
            .map_err(storage)?;
        let next: Option<i64> = row.map(|r| r.try_get(0)).transpose().map_err(storage)?;
        Ok(to_u64_cursor(next))
    }

    fn commit_events(
        &self,
        outlet: &str,
        from_seq: u64,
        events: &[NewEvent],
        next_seq: u64,
        now_ms: i64,
    ) -> Result<Option<usize>, WebhookError> {
        let next = to_i64(next_seq)?;
        self.pool
            .write(|c| {
                let mut tx = c.transaction()?;
                // The cursor row, created if missing, then locked until
                // commit: producers of this outlet queue here (see the
                // module docs).
                tx.execute_typed(
                    "INSERT INTO webhook_cursors (outlet, next_seq) VALUES ($1, 1)
                     ON CONFLICT (outlet) DO NOTHING",
                    &[(&outlet, Type::TEXT)],
                )?;
                let stored: i64 = tx
                    .query_typed_one(
                        "SELECT next_seq FROM webhook_cursors WHERE outlet = $1 FOR UPDATE",
                        &[(&outlet, Type::TEXT)],
                    )?
                    .try_get(0)?;
                if to_u64_cursor(Some(stored)) != from_seq {
                    return Ok(None);
                }
                let mut n = 0;
                for ev in events {
                    if enqueue_tx(&mut tx, ev, now_ms)? {
                        n += 1;
                    }
                }
                tx.execute_typed(
                    "UPDATE webhook_cursors SET next_seq = GREATEST(next_seq, $2) WHERE outlet = $1",
                    &[(&outlet, Type::TEXT), (&next, Type::INT8)],
                )?;
                tx.commit()?;
                Ok(Some(n))
            })
            .map_err(storage)
    }

    fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, WebhookError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One statement, so one transaction: lock the due rows nobody else
        // holds, push their due time to the lease's end, return them.
        let rows = self
            .pool
            .write(|c| {
                c.query_typed(
                    "WITH due AS (
                         SELECT d.id FROM webhook_deliveries d
                         JOIN webhook_subscribers s ON s.id = d.subscriber_id
                         WHERE d.state = 'pending' AND d.next_attempt_ms <= $1 AND NOT s.disabled
                         ORDER BY d.next_attempt_ms, d.id
                         LIMIT $2
                         FOR UPDATE OF d SKIP LOCKED
                     )
                     UPDATE webhook_deliveries d SET next_attempt_ms = $3
                     FROM due, webhook_events e, webhook_subscribers s
                     WHERE d.id = due.id AND e.event_id = d.event_id AND s.id = d.subscriber_id
                     RETURNING d.id, e.event_id, e.type, e.merchant_nif, e.payload, e.created_at,
                               s.url, s.secret",
                    &[
                        (&now_ms, Type::INT8),
                        (&limit, Type::INT8),
                        (&lease_until_ms, Type::INT8),
                    ],
                )
            })
            .map_err(storage)?;
        let mut due = rows
            .iter()
            .map(|r| {
                let event_id: String = r.try_get(1)?;
                let event_type: String = r.try_get(2)?;
                let body = event_body(
                    &event_id,
                    &event_type,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                );
                Ok(ClaimedDelivery {
                    delivery_id: r.try_get(0)?,
                    event_id,
                    event_type,
                    body,
                    url: r.try_get(6)?,
                    secret: r.try_get(7)?,
                    lease_until_ms,
                })
            })
            .collect::<Result<Vec<_>, postgres::Error>>()
            .map_err(storage)?;
        // RETURNING has no order; oldest delivery first, as on SQLite.
        due.sort_by_key(|d| d.delivery_id);
        Ok(due)
    }

    fn record(
        &self,
        claim: &ClaimedDelivery,
        o: &AttemptOutcome,
        schedule: Schedule<'_>,
    ) -> Result<Recorded, WebhookError> {
        let http_status = o.http_status.map(i32::from);
        let started_at = rfc3339(o.started_ms);
        let completed_at = rfc3339(o.completed_ms);
        self.pool
            .write(|c| {
                let mut tx = c.transaction()?;
                let row = tx.query_typed_one(
                    "SELECT attempts, state, next_attempt_ms FROM webhook_deliveries
                     WHERE id = $1 FOR UPDATE",
                    &[(&claim.delivery_id, Type::INT8)],
                )?;
                let attempts: i32 = row.try_get(0)?;
                let state: String = row.try_get(1)?;
                let next: Option<i64> = row.try_get(2)?;
                let attempts = u32::try_from(attempts).unwrap_or(0);
                let plan = match RecordPlan::new(attempts, &state, next, claim, o, schedule) {
                    Ok(plan) => plan,
                    Err(e) => return Ok(Err(e)),
                };
                let attempt = i32::try_from(plan.attempt).unwrap_or(i32::MAX);
                tx.execute_typed(
                    "UPDATE webhook_deliveries SET attempts = $2, state = $3, next_attempt_ms = $4
                     WHERE id = $1",
                    &[
                        (&claim.delivery_id, Type::INT8),
                        (&attempt, Type::INT4),
                        (&plan.state.as_str(), Type::TEXT),
                        (&plan.next_attempt_ms, Type::INT8),
                    ],
                )?;
                let logged_next = plan.logged_next_ms.map(rfc3339);
                let params: [(&(dyn ToSql + Sync), Type); 8] = [
                    (&claim.delivery_id, Type::INT8),
                    (&attempt, Type::INT4),
                    (&RecordPlan::status(o), Type::TEXT),
                    (&http_status, Type::INT4),
                    (&o.error, Type::TEXT),
                    (&started_at, Type::TEXT),
                    (&completed_at, Type::TEXT),
                    (&logged_next, Type::TEXT),
                ];
                tx.execute_typed(
                    "INSERT INTO webhook_attempts (delivery_id, attempt, status, http_status, error,
                         started_at, completed_at, next_attempt_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &params,
                )?;
                tx.commit()?;
                Ok(Ok(plan.recorded))
            })
            .map_err(storage)?
    }
}

/// What [`import_sqlite`] inserted (rows already in the target are not
/// counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportedWebhooks {
    /// Subscribers (deleted ones too: their deliveries refer to them).
    pub subscribers: u64,
    /// Events.
    pub events: u64,
    /// Deliveries.
    pub deliveries: u64,
    /// Logged attempts.
    pub attempts: u64,
    /// Per-outlet producer cursors (inserted or moved forward).
    pub cursors: u64,
}

/// For `bonopay migrate`: copies the webhook tables of a SQLite `auth.db`
/// (subscribers with their secrets, events, deliveries with their states
/// and due times, attempts, cursors) into PostgreSQL, inside the caller's
/// transaction `tx` (whose tables [`PgWebhookStore`] created).
///
/// **Idempotent**: a row already in the target (same subscriber id, event
/// id, (event, subscriber) delivery) is left as it is, so a second run
/// copies nothing more. Deliveries get new ids in the target (its identity
/// column), and their attempts follow them; the attempts of a delivery
/// that was already there are not copied again. A cursor only moves
/// forward. The source is only read.
///
/// # Errors
/// [`ImportError`]; the caller drops `tx`, so nothing is copied.
pub fn import_sqlite(
    conn: &rusqlite::Connection,
    tx: &mut Transaction<'_>,
) -> Result<ImportedWebhooks, ImportError> {
    use bonopay_ledger::postgres::import::{Params, copy_rows, has_table};
    let mut n = ImportedWebhooks::default();
    let text = |r: &rusqlite::Row<'_>, i| r.get::<_, String>(i);

    if has_table(conn, "webhook_subscribers")? {
        n.subscribers = copy_rows(
            conn,
            tx,
            "SELECT id, merchant_nif, url, secret, events, created_at, disabled
             FROM webhook_subscribers ORDER BY rowid",
            "INSERT INTO webhook_subscribers (id, merchant_nif, url, secret, events, created_at, disabled)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            |r| {
                let events: Vec<String> = text(r, 4)?
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect();
                Ok(Some(vec![
                    Box::new(text(r, 0)?),
                    Box::new(text(r, 1)?),
                    Box::new(text(r, 2)?),
                    Box::new(text(r, 3)?),
                    Box::new(events),
                    Box::new(text(r, 5)?),
                    Box::new(r.get::<_, bool>(6)?),
                ]))
            },
        )?;
    }
    if has_table(conn, "webhook_events")? {
        n.events = copy_rows(
            conn,
            tx,
            "SELECT event_id, merchant_nif, type, payload, created_at
             FROM webhook_events ORDER BY rowid",
            "INSERT INTO webhook_events (event_id, merchant_nif, type, payload, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
            |r| {
                let mut values: Params = Vec::new();
                for i in 0..5 {
                    values.push(Box::new(text(r, i)?));
                }
                Ok(Some(values))
            },
        )?;
    }
    if has_table(conn, "webhook_deliveries")? && has_table(conn, "webhook_attempts")? {
        // Deliveries get the target's ids: source id -> target id, for the
        // deliveries inserted now (the others' attempts are there already).
        let mut ids = std::collections::HashMap::new();
        let insert = tx.prepare(
            "INSERT INTO webhook_deliveries
                     (event_id, subscriber_id, state, attempts, next_attempt_ms, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (event_id, subscriber_id) DO NOTHING RETURNING id",
        )?;
        let mut st = conn.prepare(
            "SELECT id, event_id, subscriber_id, state, attempts, next_attempt_ms, created_at
                 FROM webhook_deliveries ORDER BY id",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let inserted = tx.query_opt(
                &insert,
                &[
                    &text(r, 1)?,
                    &text(r, 2)?,
                    &text(r, 3)?,
                    &r.get::<_, i32>(4)?,
                    &r.get::<_, Option<i64>>(5)?,
                    &text(r, 6)?,
                ],
            )?;
            if let Some(row) = inserted {
                let id: i64 = r.get(0)?;
                ids.insert(id, row.try_get::<_, i64>(0)?);
                n.deliveries += 1;
            }
        }
        n.attempts = copy_rows(
            conn,
            tx,
            "SELECT delivery_id, attempt, status, http_status, error, started_at,
                    completed_at, next_attempt_at
             FROM webhook_attempts ORDER BY rowid",
            "INSERT INTO webhook_attempts (delivery_id, attempt, status, http_status, error,
                 started_at, completed_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (delivery_id, attempt) DO NOTHING",
            |r| {
                let Some(delivery) = ids.get(&r.get::<_, i64>(0)?) else {
                    return Ok(None);
                };
                Ok(Some(vec![
                    Box::new(*delivery),
                    Box::new(r.get::<_, i32>(1)?),
                    Box::new(text(r, 2)?),
                    Box::new(r.get::<_, Option<i32>>(3)?),
                    Box::new(r.get::<_, Option<String>>(4)?),
                    Box::new(text(r, 5)?),
                    Box::new(text(r, 6)?),
                    Box::new(r.get::<_, Option<String>>(7)?),
                ]))
            },
        )?;
    }
    if has_table(conn, "webhook_cursors")? {
        n.cursors = copy_rows(
            conn,
            tx,
            "SELECT outlet, next_seq FROM webhook_cursors",
            "INSERT INTO webhook_cursors (outlet, next_seq) VALUES ($1, $2)
             ON CONFLICT (outlet) DO UPDATE SET next_seq = excluded.next_seq
             WHERE webhook_cursors.next_seq < excluded.next_seq",
            |r| {
                Ok(Some(vec![
                    Box::new(text(r, 0)?),
                    Box::new(r.get::<_, i64>(1)?),
                ]))
            },
        )?;
    }
    Ok(n)
}
