//! [`WebhookStore`] on SQLite (`auth.db` of `bonopay serve`).

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhook_subscribers (
    id           TEXT PRIMARY KEY,
    merchant_nif TEXT NOT NULL,
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,            -- as shown once: the HMAC key
    events       TEXT NOT NULL,            -- comma-separated event types
    created_at   TEXT NOT NULL,
    disabled     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhook_subscribers_merchant ON webhook_subscribers(merchant_nif);
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id     TEXT PRIMARY KEY,
    merchant_nif TEXT NOT NULL,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,            -- JSON
    created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL,
    subscriber_id   TEXT NOT NULL,
    state           TEXT NOT NULL,         -- pending | delivered | dead | cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER,               -- due time (Unix ms) while pending
    created_at      TEXT NOT NULL,
    UNIQUE (event_id, subscriber_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(state, next_attempt_ms);
CREATE INDEX IF NOT EXISTS webhook_deliveries_subscriber ON webhook_deliveries(subscriber_id);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id     INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,      -- 1, 2, …
    status          TEXT NOT NULL,         -- sent | failed
    http_status     INTEGER,
    error           TEXT,
    started_at      TEXT NOT NULL,
    completed_at    TEXT NOT NULL,
    next_attempt_at TEXT,                  -- the retry this failure scheduled
    PRIMARY KEY (delivery_id, attempt)
);
CREATE TABLE IF NOT EXISTS webhook_cursors (
    outlet   TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL              -- first ledger seq not turned into events yet
);
";

/// [`WebhookStore`] on SQLite: the `webhook_*` tables of `auth.db` in
/// `bonopay serve` (one connection; every write an `IMMEDIATE`
/// transaction, so several handles on one file serialize).
pub struct SqliteWebhookStore {
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteWebhookStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteWebhookStore").finish_non_exhaustive()
    }
}

impl SqliteWebhookStore {
    /// Opens (creating its tables in) the database at `path`.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn open(path: &Path) -> Result<Self, WebhookError> {
        Self::init(Connection::open(path).map_err(storage)?)
    }

    /// An in-memory database: nothing survives the store.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn in_memory() -> Result<Self, WebhookError> {
        Self::init(Connection::open_in_memory().map_err(storage)?)
    }

    fn init(conn: Connection) -> Result<Self, WebhookError> {
        prepare_auth_db(&conn, SCHEMA).map_err(storage)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, WebhookError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| WebhookError::Storage("connection lock poisoned".into()))?;
        f(&mut conn).map_err(storage)
    }
}

/// Inserts the event (if new) and a pending delivery, due now, for each
/// current subscriber of its merchant that wants its type.
pub(super) fn enqueue_tx(
    tx: &Transaction<'_>,
    ev: &NewEvent,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let created_at = rfc3339(now_ms);
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO webhook_events (event_id, merchant_nif, type, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            ev.id,
            ev.merchant_nif,
            ev.kind.as_str(),
            ev.payload,
            created_at
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    let subscribers = {
        let mut st = tx.prepare_cached(
            "SELECT id, events FROM webhook_subscribers WHERE merchant_nif = ?1 AND disabled = 0",
        )?;
        st.query_map(params![ev.merchant_nif], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    for (id, events) in subscribers {
        if events_of(&events).contains(&ev.kind) {
            tx.execute(
                "INSERT OR IGNORE INTO webhook_deliveries
                     (event_id, subscriber_id, state, attempts, next_attempt_ms, created_at)
                 VALUES (?1, ?2, 'pending', 0, ?3, ?4)",
                params![ev.id, id, now_ms, created_at],
            )?;
        }
    }
    Ok(true)
}

impl WebhookStore for SqliteWebhookStore {
    fn insert_subscriber(
        &self,
        s: &Subscriber,
        secret: &str,
        max_per_merchant: usize,
    ) -> Result<bool, WebhookError> {
        let max = i64::try_from(max_per_merchant).unwrap_or(i64::MAX);
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n: i64 = tx.query_row(
                "SELECT COUNT(*) FROM webhook_subscribers WHERE merchant_nif = ?1 AND disabled = 0",
                params![s.merchant_nif],
                |r| r.get(0),
            )?;
            if n >= max {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO webhook_subscribers (id, merchant_nif, url, secret, events, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.id,
                    s.merchant_nif,
                    s.url,
                    secret,
                    events_text(&s.events),
                    s.created_at
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn list_subscribers(&self, merchant_nif: &str) -> Result<Vec<Subscriber>, WebhookError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, merchant_nif, url, events, created_at FROM webhook_subscribers
                 WHERE merchant_nif = ?1 AND disabled = 0 ORDER BY rowid",
            )?;
            st.query_map(params![merchant_nif], |r| {
                Ok(Subscriber {
                    id: r.get(0)?,
                    merchant_nif: r.get(1)?,
                    url: r.get(2)?,
                    events: events_of(&r.get::<_, String>(3)?),
                    created_at: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    fn delete_subscriber(&self, merchant_nif: &str, id: &str) -> Result<bool, WebhookError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE webhook_subscribers SET disabled = 1
                 WHERE id = ?1 AND merchant_nif = ?2 AND disabled = 0",
                params![id, merchant_nif],
            )?;
            if n > 0 {
                tx.execute(
                    "UPDATE webhook_deliveries SET state = 'cancelled', next_attempt_ms = NULL
                     WHERE subscriber_id = ?1 AND state = 'pending'",
                    params![id],
                )?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn delivery_log(
        &self,
        merchant_nif: &str,
        id: &str,
        limit: u32,
    ) -> Result<Option<Vec<DeliveryAttempt>>, WebhookError> {
        let rows = self.with(|c| {
            let exists = c
                .query_row(
                    "SELECT 1 FROM webhook_subscribers WHERE id = ?1 AND merchant_nif = ?2 AND disabled = 0",
                    params![id, merchant_nif],
                    |_| Ok(()),
                )
                .optional()?;
            if exists.is_none() {
                return Ok(None);
            }
            let mut st = c.prepare_cached(
                "SELECT d.event_id, e.type, a.attempt, a.status, a.http_status, a.error,
                        a.started_at, a.completed_at, a.next_attempt_at, d.state
                 FROM webhook_attempts a
                 JOIN webhook_deliveries d ON d.id = a.delivery_id
                 JOIN webhook_events e ON e.event_id = d.event_id
                 WHERE d.subscriber_id = ?1
                 ORDER BY a.rowid DESC LIMIT ?2",
            )?;
            st.query_map(params![id, limit], |r| {
                Ok(StoredAttempt {
                    event_id: r.get(0)?,
                    event_type: r.get(1)?,
                    attempt: r.get(2)?,
                    status: r.get(3)?,
                    http_status: r.get(4)?,
                    error: r.get(5)?,
                    started_at: r.get(6)?,
                    completed_at: r.get(7)?,
                    next_attempt_at: r.get(8)?,
                    state: r.get(9)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map(Some)
        })?;
        rows.map(|rows| rows.into_iter().map(StoredAttempt::parse).collect())
            .transpose()
    }

    fn enqueue(&self, ev: &NewEvent, now_ms: i64) -> Result<bool, WebhookError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let new = enqueue_tx(&tx, ev, now_ms)?;
            tx.commit()?;
            Ok(new)
        })
    }

    fn cursor(&self, outlet: &str) -> Result<u64, WebhookError> {
        let next: Option<i64> = self.with(|c| {
            c.query_row(
                "SELECT next_seq FROM webhook_cursors WHERE outlet = ?1",
                params![outlet],
                |r| r.get(0),
            )
            .optional()
        })?;
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
        self.with(|c| {
            // IMMEDIATE: the write lock is taken before the cursor is read,
            // so the check and the move are one step for every connection.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored: Option<i64> = tx
                .query_row(
                    "SELECT next_seq FROM webhook_cursors WHERE outlet = ?1",
                    params![outlet],
                    |r| r.get(0),
                )
                .optional()?;
            if to_u64_cursor(stored) != from_seq {
                return Ok(None);
            }
            let mut n = 0;
            for ev in events {
                if enqueue_tx(&tx, ev, now_ms)? {
                    n += 1;
                }
            }
            tx.execute(
                "INSERT INTO webhook_cursors (outlet, next_seq) VALUES (?1, ?2)
                 ON CONFLICT(outlet) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)",
                params![outlet, next],
            )?;
            tx.commit()?;
            Ok(Some(n))
        })
    }

    fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, WebhookError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let due = {
                let mut st = tx.prepare_cached(
                    "SELECT d.id, e.event_id, e.type, e.merchant_nif, e.payload, e.created_at, s.url, s.secret
                     FROM webhook_deliveries d
                     JOIN webhook_events e ON e.event_id = d.event_id
                     JOIN webhook_subscribers s ON s.id = d.subscriber_id
                     WHERE d.state = 'pending' AND d.next_attempt_ms <= ?1 AND s.disabled = 0
                     ORDER BY d.next_attempt_ms, d.id LIMIT ?2",
                )?;
                st.query_map(params![now_ms, limit], |r| {
                    let event_id: String = r.get(1)?;
                    let event_type: String = r.get(2)?;
                    let body = event_body(
                        &event_id,
                        &event_type,
                        &r.get::<_, String>(3)?,
                        &r.get::<_, String>(4)?,
                        &r.get::<_, String>(5)?,
                    );
                    Ok(ClaimedDelivery {
                        delivery_id: r.get(0)?,
                        event_id,
                        event_type,
                        body,
                        url: r.get(6)?,
                        secret: r.get(7)?,
                        lease_until_ms,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
            };
            for d in &due {
                tx.execute(
                    "UPDATE webhook_deliveries SET next_attempt_ms = ?2 WHERE id = ?1",
                    params![d.delivery_id, lease_until_ms],
                )?;
            }
            tx.commit()?;
            Ok(due)
        })
    }

    fn record(
        &self,
        claim: &ClaimedDelivery,
        o: &AttemptOutcome,
        schedule: Schedule<'_>,
    ) -> Result<Recorded, WebhookError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (attempts, state, next): (u32, String, Option<i64>) = tx.query_row(
                "SELECT attempts, state, next_attempt_ms FROM webhook_deliveries WHERE id = ?1",
                params![claim.delivery_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let plan = match RecordPlan::new(attempts, &state, next, claim, o, schedule) {
                Ok(plan) => plan,
                Err(e) => return Ok(Err(e)),
            };
            tx.execute(
                "UPDATE webhook_deliveries SET attempts = ?2, state = ?3, next_attempt_ms = ?4
                 WHERE id = ?1",
                params![
                    claim.delivery_id,
                    plan.attempt,
                    plan.state.as_str(),
                    plan.next_attempt_ms
                ],
            )?;
            tx.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, status, http_status, error,
                     started_at, completed_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    claim.delivery_id,
                    plan.attempt,
                    RecordPlan::status(o),
                    o.http_status,
                    o.error,
                    rfc3339(o.started_ms),
                    rfc3339(o.completed_ms),
                    plan.logged_next_ms.map(rfc3339),
                ],
            )?;
            tx.commit()?;
            Ok(Ok(plan.recorded))
        })?
    }
}

// ----- the service -------------------------------------------------------------
