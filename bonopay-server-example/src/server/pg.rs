//! What the PostgreSQL stores of this crate share: a small connection pool
//! and a versioned, lock-serialized schema migrator. [`PgKeyStore`], the
//! webhook store and the receipt-delivery store each own one [`Pool`] and
//! one [`Schema`]; this module keeps one implementation of both, so a fix to
//! connection handling reaches all three at once.
//!
//! **Pool.** At most `max` connections; a call checks one out, waiting up
//! to [`CHECKOUT_TIMEOUT`] when all are busy, and returns it afterwards. A
//! connection that failed as a connection (I/O, closed, server shutting it
//! down) is dropped, with every idle one, since they most likely died
//! together. [`Pool::read`] runs an idempotent operation and retries it
//! once on a new connection when a reused one turns out dead;
//! [`Pool::write`] never retries (the write may have been applied) but
//! checks a reused connection first, so that a database restart costs no
//! failed request.
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

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::types::Type;
use postgres::{Client, Config, NoTls};

/// How long a call waits for a connection when all are busy before it
/// fails.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect timeout used when the URL sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long checking a reused connection before a write may take.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed pooled call, described on one line (each store wraps it in its
/// own typed error: they all call it a storage failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError(pub String);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
pub struct Pool {
    config: Config,
    max: usize,
    slots: Mutex<Slots>,
    /// Signalled when a connection goes back idle or a slot frees up.
    freed: Condvar,
}

/// The pool's state: idle connections, and how many are open in all
/// (idle + checked out + being opened).
struct Slots {
    idle: Vec<Client>,
    open: usize,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The configuration holds the password: never print it.
        f.debug_struct("Pool")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
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
        let mut config: Config = url
            .parse()
            .map_err(|e| PgError(format!("PostgreSQL URL: {}", describe(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        let mut client = config
            .connect(NoTls)
            .map_err(|e| PgError(format!("connecting to PostgreSQL: {}", describe(&e))))?;
        schema.migrate(&mut client)?;
        Ok(Self {
            config,
            max: max.max(1),
            slots: Mutex::new(Slots {
                idle: vec![client],
                open: 1,
            }),
            freed: Condvar::new(),
        })
    }

    /// The most connections this pool opens at once.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
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

    fn lock(&self) -> Result<MutexGuard<'_, Slots>, PgError> {
        self.slots
            .lock()
            .map_err(|_| PgError("connection pool lock poisoned".into()))
    }

    /// Checks a connection out: an idle one, else a new one if the pool is
    /// not full, else waits for one.
    fn checkout(&self) -> Result<Lease<'_>, PgError> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut slots = self.lock()?;
        loop {
            if let Some(client) = slots.idle.pop() {
                if client.is_closed() {
                    slots.open = slots.open.saturating_sub(1);
                    drop(slots);
                    drop(client);
                    self.freed.notify_one();
                    slots = self.lock()?;
                    continue;
                }
                return Ok(Lease {
                    pool: self,
                    client: Some(client),
                    reused: true,
                });
            }
            if slots.open < self.max {
                slots.open += 1;
                drop(slots);
                return match self.config.connect(NoTls) {
                    Ok(client) => Ok(Lease {
                        pool: self,
                        client: Some(client),
                        reused: false,
                    }),
                    Err(e) => {
                        self.release_slots(1);
                        Err(PgError(format!(
                            "connecting to PostgreSQL: {}",
                            describe(&e)
                        )))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PgError(format!(
                    "all {} PostgreSQL connections busy for {} s",
                    self.max,
                    CHECKOUT_TIMEOUT.as_secs()
                )));
            }
            slots = self
                .freed
                .wait_timeout(slots, deadline - now)
                .map_err(|_| PgError("connection pool lock poisoned".into()))?
                .0;
        }
    }

    /// Frees `n` slots of connections that were closed or never opened.
    fn release_slots(&self, n: usize) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.open = slots.open.saturating_sub(n);
        }
        self.freed.notify_all();
    }

    /// Drops every idle connection (after one failed as a connection: the
    /// others most likely died with it).
    fn discard_idle(&self) {
        let idle = match self.slots.lock() {
            Ok(mut slots) => std::mem::take(&mut slots.idle),
            Err(_) => Vec::new(),
        };
        let n = idle.len();
        drop(idle);
        self.release_slots(n);
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
        let mut lease = self.checkout()?;
        let reused = lease.reused;
        match lease.run(&op) {
            Err(Failure::Connection(_)) if reused => {
                drop(lease);
                self.checkout()?.run(&op).map_err(Failure::into_error)
            }
            other => other.map_err(Failure::into_error),
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
        let mut lease = self.checkout()?;
        if lease.reused && !lease.ping() {
            drop(lease);
            lease = self.checkout()?;
        }
        lease.run(op).map_err(Failure::into_error)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = match self.slots.get_mut() {
            Ok(slots) => std::mem::take(&mut slots.idle),
            Err(poisoned) => std::mem::take(&mut poisoned.into_inner().idle),
        };
        if idle.is_empty() {
            return;
        }
        // Closing a client blocks on its own runtime, which panics inside
        // an async task: close them on a plain thread then.
        if tokio::runtime::Handle::try_current().is_err() {
            drop(idle);
            return;
        }
        let handoff = Arc::new(Mutex::new(Some(idle)));
        let theirs = Arc::clone(&handoff);
        let spawned = std::thread::Builder::new()
            .name("bonopay-pg-close".into())
            .spawn(move || {
                if let Ok(mut idle) = theirs.lock() {
                    drop(idle.take());
                }
            });
        if spawned.is_err() {
            // No thread: leak the connections rather than panic here; the
            // server closes them when this process exits.
            if let Ok(mut idle) = handoff.lock() {
                std::mem::forget(idle.take());
            }
        }
    }
}

/// How a pooled call failed.
enum Failure {
    /// The connection broke; it was dropped, with the idle ones.
    Connection(postgres::Error),
    /// The database refused the statement (the connection is fine).
    Statement(postgres::Error),
    /// The lease had already lost its connection.
    Gone,
}

impl Failure {
    fn into_error(self) -> PgError {
        match self {
            Failure::Connection(e) => PgError(format!("PostgreSQL connection: {}", describe(&e))),
            Failure::Statement(e) => e.into(),
            Failure::Gone => PgError("PostgreSQL connection lost".into()),
        }
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

/// A checked-out connection; goes back to the pool when dropped.
struct Lease<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    reused: bool,
}

impl Lease<'_> {
    fn run<T>(
        &mut self,
        op: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, Failure> {
        let Some(client) = self.client.as_mut() else {
            return Err(Failure::Gone);
        };
        match op(client) {
            Ok(v) => Ok(v),
            Err(e) if is_connection_error(&e, client) => {
                self.discard();
                self.pool.discard_idle();
                Err(Failure::Connection(e))
            }
            Err(e) => Err(Failure::Statement(e)),
        }
    }

    /// Whether the connection still answers; if not, it and the idle ones
    /// are dropped.
    fn ping(&mut self) -> bool {
        let alive = self
            .client
            .as_mut()
            .is_some_and(|c| c.is_valid(PING_TIMEOUT).is_ok());
        if !alive {
            self.discard();
            self.pool.discard_idle();
        }
        alive
    }

    /// Drops the connection instead of returning it.
    fn discard(&mut self) {
        if let Some(client) = self.client.take() {
            drop(client);
            self.pool.release_slots(1);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if client.is_closed() {
            self.pool.release_slots(1);
            return;
        }
        match self.pool.slots.lock() {
            Ok(mut slots) => {
                slots.idle.push(client);
                drop(slots);
                self.pool.freed.notify_one();
            }
            Err(_) => self.pool.release_slots(1),
        }
    }
}
