//! What the PostgreSQL stores of this crate share: a small connection pool
//! and a versioned, lock-serialized schema migrator. [`PgKeyStore`], the
//! webhook store and the receipt-delivery store each own one [`Pool`] and
//! one [`Schema`]; this module keeps one implementation of both, so a fix to
//! connection handling reaches all three at once.
//!
//! **Pool.** [`Pool`] is a thin layer over [`bonopay_ledger::PgPool`], the
//! one connection pool of the workspace (the ledger and the outbox use it
//! too): at most `max` connections, a call waits up to [`CHECKOUT_TIMEOUT`]
//! when all are busy, and a connection that failed as a connection (I/O,
//! closed, server shutting it down) is dropped with every idle one, since
//! they most likely died together. On top of it [`Pool::read`] runs an
//! idempotent operation and retries it once on a new connection when a
//! reused one turns out dead; [`Pool::write`] never retries (the write may
//! have been applied) but checks a reused connection first, so that a
//! database restart costs no failed request.
//!
//! **Schema.** [`Pool::connect`] migrates the database: the versions
//! applied are rows of the schema's version table, and every pending
//! migration runs with its row in one transaction, under a
//! transaction-scoped advisory lock, so processes starting together migrate
//! once. A database migrated by a newer build is refused rather than
//! guessed at.
//!
//! **Threads.** The synchronous `postgres` client runs its own small tokio
//! runtime: call the pool from plain threads or tokio's blocking pool
//! (`spawn_blocking`), never from an async task. Dropping the pool from an
//! async task is handled (its connections are closed on a helper thread).
//!
//! Connections are made without TLS; use a local socket, a loopback
//! address or a private network.
//!
//! [`PgKeyStore`]: super::auth_pg::PgKeyStore

use postgres::Client;
use postgres::types::Type;

use bonopay_ledger::PgPool;
pub use bonopay_ledger::{CHECKOUT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT};

/// How long checking a reused connection before a write may take.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A failed pooled call, described on one line (each store wraps it in its
/// own typed error: they all call it a storage failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError(pub String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> Self {
        PgError(describe(&e))
    }
}

/// `e` with its causes on one line: the bare error says only "db error".
#[must_use]
pub fn describe(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string().replace('\n', "; "));
        cause = c.source();
    }
    text
}

/// A component's versioned schema.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// What the schema belongs to, for messages ("key store").
    pub name: &'static str,
    /// The table of applied versions (prefixed like the component's tables).
    pub version_table: &'static str,
    /// Key of the transaction-scoped advisory lock that serializes this
    /// component's migrations across processes.
    pub lock: i64,
    /// The migrations, in order: `(version, SQL)`. Never edit one that has
    /// shipped; append a new one.
    pub migrations: &'static [(i32, &'static str)],
}

impl Schema {
    /// The version this build migrates to: the last migration's.
    #[must_use]
    pub fn version(&self) -> i32 {
        self.migrations.last().map_or(0, |(v, _)| *v)
    }

    /// Brings the database to [`Schema::version`], one transaction for all
    /// pending migrations, serialized across processes.
    fn migrate(&self, client: &mut Client) -> Result<(), PgError> {
        let mut tx = client.transaction()?;
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({lock});
             CREATE TABLE IF NOT EXISTS {table} (
                 version    INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );",
            lock = self.lock,
            table = self.version_table,
        ))?;
        let current: i32 = tx
            .query_one(
                &format!(
                    "SELECT COALESCE(MAX(version), 0) FROM {}",
                    self.version_table
                ),
                &[],
            )
            .and_then(|r| r.try_get(0))?;
        let target = self.version();
        if current > target {
            return Err(PgError(format!(
                "the {}'s schema is at version {current}, newer than this build's {target}",
                self.name
            )));
        }
        for (version, sql) in self.migrations.iter().filter(|(v, _)| *v > current) {
            tx.batch_execute(sql)
                .map_err(|e| PgError(format!("migration {version}: {}", describe(&e))))?;
            tx.execute_typed(
                &format!("INSERT INTO {} (version) VALUES ($1)", self.version_table),
                &[(version, Type::INT4)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// A small pool of connections to one database (see the [module
/// docs](self)).
#[derive(Debug)]
pub struct Pool {
    inner: PgPool,
}

impl Pool {
    /// Connects to the database at `url` (`postgres://user@host:port/db`
    /// or libpq's `key=value` form) as `application_name` (unless the URL
    /// names one), migrates it to `schema`, and keeps that first connection
    /// as the pool's first idle one. At most `max` connections (at least
    /// one).
    ///
    /// # Errors
    /// [`PgError`] if the URL is malformed, the database cannot be reached,
    /// the migration fails or the database's schema is newer than this
    /// build's.
    pub fn connect(
        url: &str,
        max: usize,
        application_name: &str,
        schema: &Schema,
    ) -> Result<Self, PgError> {
        url.parse::<postgres::Config>()
            .map_err(|e| PgError(format!("PostgreSQL URL: {}", describe(&e))))?;
        let me = Self {
            inner: PgPool::new(url, max).with_application_name(application_name),
        };
        me.inner
            .with(|c| schema.migrate(&mut c.client))
            .map_err(|e| PgError(format!("connecting to PostgreSQL: {e}")))??;
        Ok(me)
    }

    /// The most connections this pool opens at once.
    #[must_use]
    pub fn max(&self) -> usize {
        self.inner.max()
    }

    /// The version `schema` is at in the database (its highest applied
    /// migration).
    ///
    /// # Errors
    /// [`PgError`].
    pub fn schema_version(&self, schema: &Schema) -> Result<i32, PgError> {
        let sql = format!(
            "SELECT COALESCE(MAX(version), 0) FROM {}",
            schema.version_table
        );
        Ok(self.read(|c| c.query_typed_one(&sql, &[]))?.try_get(0)?)
    }

    /// Runs `op` on a pooled connection. Gives its result, and whether it
    /// failed as a connection on one that had sat idle (worth one retry).
    fn run<T>(
        &self,
        op: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<(Result<T, PgError>, bool), PgError> {
        self.inner
            .with(|c| {
                let reused = c.reused();
                match op(&mut c.client) {
                    Ok(v) => (Ok(v), false),
                    Err(e) if is_connection_error(&e, &c.client) => {
                        c.mark_broken();
                        let e = PgError(format!("PostgreSQL connection: {}", describe(&e)));
                        (Err(e), reused)
                    }
                    Err(e) => (Err(e.into()), false),
                }
            })
            .map_err(|e| PgError(e.to_string()))
    }

    /// Runs an idempotent operation: retried once on a new connection if a
    /// reused one turns out dead.
    ///
    /// # Errors
    /// [`PgError`]: no connection, or the operation failed.
    pub fn read<T>(
        &self,
        op: impl Fn(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, PgError> {
        match self.run(&op)? {
            (Err(_), true) => self.run(&op)?.0,
            (r, _) => r,
        }
    }

    /// Runs a write, which is never retried (it may have been applied):
    /// a reused connection is checked first instead.
    ///
    /// # Errors
    /// [`PgError`]: no connection, or the operation failed.
    pub fn write<T>(
        &self,
        op: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, PgError> {
        let mut op = Some(op);
        // Twice at most: a reused connection that fails the check is
        // dropped with the idle ones, so the second is a new one.
        for _ in 0..2 {
            let done = self
                .inner
                .with(|c| {
                    if c.reused() && c.client.is_valid(PING_TIMEOUT).is_err() {
                        c.mark_broken();
                        return None;
                    }
                    let op = op.take()?;
                    Some(match op(&mut c.client) {
                        Ok(v) => Ok(v),
                        Err(e) if is_connection_error(&e, &c.client) => {
                            c.mark_broken();
                            Err(PgError(format!("PostgreSQL connection: {}", describe(&e))))
                        }
                        Err(e) => Err(e.into()),
                    })
                })
                .map_err(|e| PgError(e.to_string()))?;
            if let Some(r) = done {
                return r;
            }
        }
        Err(PgError("PostgreSQL connection lost".into()))
    }
}

/// Whether `e` (on `client`) means the connection is unusable.
fn is_connection_error(e: &postgres::Error, client: &Client) -> bool {
    if e.is_closed() || client.is_closed() {
        return true;
    }
    match e.code() {
        // Connection exceptions (class 08) and operator intervention
        // (57: admin or crash shutdown, backend terminated).
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P")
        }
        // Not reported by the server: I/O fails the connection; a value
        // that does not convert does not.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}
