//! [`ApiKeyStore`] on PostgreSQL, for several server processes sharing one
//! database.
//!
//! [`PgKeyStore`] keeps the semantics of [`SqliteKeyStore`] exactly: a
//! duplicate key id or token hash is an [`AuthError::Storage`], an outlet
//! id already registered (to any merchant) is an [`AuthError::OutletTaken`],
//! lists are oldest first, and a revocation shows on the next lookup from
//! any process, since nothing is cached. Every write is one statement whose
//! outcome the database's constraints decide (never check-then-insert), so
//! racing processes cannot register one outlet twice nor share a key.
//!
//! **Schema.** [`PgKeyStore::connect`] migrates the database to
//! [`SCHEMA_VERSION`]: the versions applied are rows of
//! `auth_schema_version`, and each pending migration runs with its row in
//! one transaction, under a transaction-scoped advisory lock, so processes
//! starting together migrate once. A database migrated by a newer build is
//! refused rather than guessed at. The tables are `auth_keys` and
//! `auth_outlets` (prefixed, since the database may be shared with other
//! components).
//!
//! **Pool.** At most `pool_size` connections (default
//! [`DEFAULT_POOL_SIZE`]); a call checks one out, waiting up to
//! [`CHECKOUT_TIMEOUT`] when all are busy, and returns it afterwards. A
//! connection that failed as a connection (I/O, closed, server shutting it
//! down) is dropped, with every idle one, since they most likely died
//! together; reads and revocations, being idempotent, are then retried once
//! on a new connection, and inserts check a reused connection before
//! writing, so that a database restart costs no failed request.
//!
//! **Threads.** The synchronous `postgres` client runs its own small tokio
//! runtime: call this store from plain threads or tokio's blocking pool
//! (`spawn_blocking`, as the server does), never from an async task.
//! Dropping the store from an async task is handled (its connections are
//! closed on a helper thread).
//!
//! Connections are made without TLS; use a local socket, a loopback
//! address or a private network.
//!
//! [`SqliteKeyStore`]: super::auth::SqliteKeyStore

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::types::{ToSql, Type};
use postgres::{Client, Config, NoTls, Row};

use super::auth::{ApiKey, ApiKeyStore, AuthError, Outlet};

/// Connections a store opens at most, unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// How long a call waits for a connection when all are busy before it
/// fails with [`AuthError::Storage`].
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect timeout used when the URL sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema version this build migrates to (the highest row of
/// `auth_schema_version`).
pub const SCHEMA_VERSION: i32 = 1;

/// How long checking a reused connection before an insert may take.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Key of the transaction-scoped advisory lock that serializes migrations
/// (ASCII "bpauthmg").
const MIGRATION_LOCK: i64 = 0x6270_6175_7468_6d67;

/// The migrations, in order: `(version, SQL)`. Never edit one that has
/// shipped; append a new one.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE auth_keys (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    id           TEXT PRIMARY KEY,
    token_hash   BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    merchant_nif TEXT NOT NULL,
    role         TEXT NOT NULL,
    outlets      TEXT[],          -- NULL = every outlet of the merchant
    label        TEXT,
    created_at   TEXT NOT NULL,   -- RFC 3339, kept as given
    revoked      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX auth_keys_merchant ON auth_keys (merchant_nif, seq);
CREATE TABLE auth_outlets (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    id           TEXT PRIMARY KEY,
    merchant_nif TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX auth_outlets_merchant ON auth_outlets (merchant_nif, seq);
",
)];

const KEY_COLUMNS: &str = "id, merchant_nif, role, outlets, label, created_at, revoked";
const OUTLET_COLUMNS: &str = "id, merchant_nif, created_at";

fn storage(e: postgres::Error) -> AuthError {
    AuthError::Storage(describe(&e))
}

/// `e` with its causes on one line: the bare error says only "db error".
fn describe(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string().replace('\n', "; "));
        cause = c.source();
    }
    text
}

/// [`ApiKeyStore`] on PostgreSQL, with a small connection pool (see the
/// [module docs](self)).
pub struct PgKeyStore {
    config: Config,
    max: usize,
    pool: Mutex<Pool>,
    /// Signalled when a connection goes back idle or a slot frees up.
    freed: Condvar,
}

/// The pool's state: idle connections, and how many are open in all
/// (idle + checked out + being opened).
struct Pool {
    idle: Vec<Client>,
    open: usize,
}

impl fmt::Debug for PgKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The configuration holds the password: never print it.
        f.debug_struct("PgKeyStore")
            .field("pool_size", &self.max)
            .finish_non_exhaustive()
    }
}

impl PgKeyStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`
    /// or libpq's `key=value` form), migrating it to [`SCHEMA_VERSION`],
    /// with a pool of [`DEFAULT_POOL_SIZE`] connections.
    ///
    /// # Errors
    /// [`AuthError::Storage`] if the URL is malformed, the database cannot
    /// be reached, the migration fails or the database's schema is newer
    /// than this build's.
    pub fn connect(url: &str) -> Result<Self, AuthError> {
        Self::connect_with_pool_size(url, DEFAULT_POOL_SIZE)
    }

    /// Like [`PgKeyStore::connect`], with at most `pool_size` connections
    /// (at least one).
    ///
    /// # Errors
    /// As [`PgKeyStore::connect`].
    pub fn connect_with_pool_size(url: &str, pool_size: usize) -> Result<Self, AuthError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| AuthError::Storage(format!("PostgreSQL URL: {}", describe(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("bonopay-auth");
        }
        let mut client = config.connect(NoTls).map_err(|e| {
            AuthError::Storage(format!("connecting to PostgreSQL: {}", describe(&e)))
        })?;
        migrate(&mut client)?;
        Ok(Self {
            config,
            max: pool_size.max(1),
            pool: Mutex::new(Pool {
                idle: vec![client],
                open: 1,
            }),
            freed: Condvar::new(),
        })
    }

    /// The most connections this store opens at once.
    #[must_use]
    pub fn pool_size(&self) -> usize {
        self.max
    }

    /// The schema version the database is at (the highest applied
    /// migration).
    ///
    /// # Errors
    /// [`AuthError::Storage`].
    pub fn schema_version(&self) -> Result<i32, AuthError> {
        self.read(|c| {
            c.query_typed_one(
                "SELECT COALESCE(MAX(version), 0) FROM auth_schema_version",
                &[],
            )
        })?
        .try_get(0)
        .map_err(storage)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Pool>, AuthError> {
        self.pool
            .lock()
            .map_err(|_| AuthError::Storage("connection pool lock poisoned".into()))
    }

    /// Checks a connection out: an idle one, else a new one if the pool is
    /// not full, else waits for one.
    fn checkout(&self) -> Result<Lease<'_>, AuthError> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut pool = self.lock()?;
        loop {
            if let Some(client) = pool.idle.pop() {
                if client.is_closed() {
                    pool.open = pool.open.saturating_sub(1);
                    drop(pool);
                    drop(client);
                    self.freed.notify_one();
                    pool = self.lock()?;
                    continue;
                }
                return Ok(Lease {
                    store: self,
                    client: Some(client),
                    reused: true,
                });
            }
            if pool.open < self.max {
                pool.open += 1;
                drop(pool);
                return match self.config.connect(NoTls) {
                    Ok(client) => Ok(Lease {
                        store: self,
                        client: Some(client),
                        reused: false,
                    }),
                    Err(e) => {
                        self.release_slots(1);
                        Err(AuthError::Storage(format!(
                            "connecting to PostgreSQL: {}",
                            describe(&e)
                        )))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(AuthError::Storage(format!(
                    "all {} PostgreSQL connections busy for {} s",
                    self.max,
                    CHECKOUT_TIMEOUT.as_secs()
                )));
            }
            pool = self
                .freed
                .wait_timeout(pool, deadline - now)
                .map_err(|_| AuthError::Storage("connection pool lock poisoned".into()))?
                .0;
        }
    }

    /// Frees `n` slots of connections that were closed or never opened.
    fn release_slots(&self, n: usize) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.open = pool.open.saturating_sub(n);
        }
        self.freed.notify_all();
    }

    /// Drops every idle connection (after one failed as a connection: the
    /// others most likely died with it).
    fn discard_idle(&self) {
        let idle = match self.pool.lock() {
            Ok(mut pool) => std::mem::take(&mut pool.idle),
            Err(_) => Vec::new(),
        };
        let n = idle.len();
        drop(idle);
        self.release_slots(n);
    }

    /// Runs an idempotent operation: retried once on a new connection if a
    /// reused one turns out dead.
    fn read<T>(
        &self,
        op: impl Fn(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, AuthError> {
        let mut lease = self.checkout()?;
        let reused = lease.reused;
        match lease.run(&op) {
            Err(Failure::Connection(_)) if reused => {
                drop(lease);
                self.checkout()?.run(&op).map_err(Failure::into_auth)
            }
            other => other.map_err(Failure::into_auth),
        }
    }

    /// Runs a write, which is never retried (it may have been applied):
    /// a reused connection is checked first instead.
    fn write<T>(
        &self,
        op: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, AuthError> {
        let mut lease = self.checkout()?;
        if lease.reused && !lease.ping() {
            drop(lease);
            lease = self.checkout()?;
        }
        lease.run(op).map_err(Failure::into_auth)
    }
}

impl Drop for PgKeyStore {
    fn drop(&mut self) {
        let idle = match self.pool.get_mut() {
            Ok(pool) => std::mem::take(&mut pool.idle),
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
        let handoff = std::sync::Arc::new(Mutex::new(Some(idle)));
        let theirs = std::sync::Arc::clone(&handoff);
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
    fn into_auth(self) -> AuthError {
        match self {
            Failure::Connection(e) => {
                AuthError::Storage(format!("PostgreSQL connection: {}", describe(&e)))
            }
            Failure::Statement(e) => storage(e),
            Failure::Gone => AuthError::Storage("PostgreSQL connection lost".into()),
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
    store: &'a PgKeyStore,
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
                self.store.discard_idle();
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
            self.store.discard_idle();
        }
        alive
    }

    /// Drops the connection instead of returning it.
    fn discard(&mut self) {
        if let Some(client) = self.client.take() {
            drop(client);
            self.store.release_slots(1);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if client.is_closed() {
            self.store.release_slots(1);
            return;
        }
        match self.store.pool.lock() {
            Ok(mut pool) => {
                pool.idle.push(client);
                drop(pool);
                self.store.freed.notify_one();
            }
            Err(_) => self.store.release_slots(1),
        }
    }
}

/// Brings the database to [`SCHEMA_VERSION`], one transaction for all
/// pending migrations, serialized across processes.
fn migrate(client: &mut Client) -> Result<(), AuthError> {
    let mut tx = client.transaction().map_err(storage)?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE TABLE IF NOT EXISTS auth_schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .map_err(storage)?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM auth_schema_version",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(storage)?;
    if current > SCHEMA_VERSION {
        return Err(AuthError::Storage(format!(
            "the key store's schema is at version {current}, newer than this build's {SCHEMA_VERSION}"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)
            .map_err(|e| AuthError::Storage(format!("migration {version}: {}", describe(&e))))?;
        tx.execute_typed(
            "INSERT INTO auth_schema_version (version) VALUES ($1)",
            &[(version, Type::INT4)],
        )
        .map_err(storage)?;
    }
    tx.commit().map_err(storage)
}

fn key_from_row(row: &Row) -> Result<ApiKey, AuthError> {
    let role: String = row.try_get(2).map_err(storage)?;
    Ok(ApiKey {
        id: row.try_get(0).map_err(storage)?,
        merchant_nif: row.try_get(1).map_err(storage)?,
        role: role.parse().map_err(AuthError::Storage)?,
        outlets: row.try_get(3).map_err(storage)?,
        label: row.try_get(4).map_err(storage)?,
        created_at: row.try_get(5).map_err(storage)?,
        revoked: row.try_get(6).map_err(storage)?,
    })
}

fn outlet_from_row(row: &Row) -> Result<Outlet, AuthError> {
    Ok(Outlet {
        id: row.try_get(0).map_err(storage)?,
        merchant_nif: row.try_get(1).map_err(storage)?,
        created_at: row.try_get(2).map_err(storage)?,
    })
}

impl ApiKeyStore for PgKeyStore {
    fn insert_key(&self, key: &ApiKey, hash: &[u8; 32]) -> Result<(), AuthError> {
        let hash: &[u8] = hash;
        let outlets: Option<&[String]> = key.outlets.as_deref();
        let params: [(&(dyn ToSql + Sync), Type); 8] = [
            (&key.id, Type::TEXT),
            (&hash, Type::BYTEA),
            (&key.merchant_nif, Type::TEXT),
            (&key.role.as_str(), Type::TEXT),
            (&outlets, Type::TEXT_ARRAY),
            (&key.label, Type::TEXT),
            (&key.created_at, Type::TEXT),
            (&key.revoked, Type::BOOL),
        ];
        self.write(|c| {
            c.execute_typed(
                "INSERT INTO auth_keys
                     (id, token_hash, merchant_nif, role, outlets, label, created_at, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &params,
            )
        })
        .map(|_| ())
    }

    fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKey>, AuthError> {
        let hash: &[u8] = hash;
        let sql = format!("SELECT {KEY_COLUMNS} FROM auth_keys WHERE token_hash = $1");
        self.read(|c| c.query_typed_opt(&sql, &[(&hash, Type::BYTEA)]))?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    fn list_keys(&self, merchant_nif: &str) -> Result<Vec<ApiKey>, AuthError> {
        let sql =
            format!("SELECT {KEY_COLUMNS} FROM auth_keys WHERE merchant_nif = $1 ORDER BY seq");
        self.read(|c| c.query_typed(&sql, &[(&merchant_nif, Type::TEXT)]))?
            .iter()
            .map(key_from_row)
            .collect()
    }

    fn revoke_key(&self, merchant_nif: &str, id: &str) -> Result<bool, AuthError> {
        // Idempotent: setting the flag twice is setting it once.
        self.read(|c| {
            c.execute_typed(
                "UPDATE auth_keys SET revoked = TRUE WHERE id = $1 AND merchant_nif = $2",
                &[(&id, Type::TEXT), (&merchant_nif, Type::TEXT)],
            )
        })
        .map(|n| n > 0)
    }

    fn insert_outlet(&self, outlet: &Outlet) -> Result<(), AuthError> {
        let inserted = self.write(|c| {
            c.execute_typed(
                "INSERT INTO auth_outlets (id, merchant_nif, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    (&outlet.id, Type::TEXT),
                    (&outlet.merchant_nif, Type::TEXT),
                    (&outlet.created_at, Type::TEXT),
                ],
            )
        })?;
        if inserted == 0 {
            return Err(AuthError::OutletTaken(outlet.id.clone()));
        }
        Ok(())
    }

    fn outlet(&self, id: &str) -> Result<Option<Outlet>, AuthError> {
        let sql = format!("SELECT {OUTLET_COLUMNS} FROM auth_outlets WHERE id = $1");
        self.read(|c| c.query_typed_opt(&sql, &[(&id, Type::TEXT)]))?
            .as_ref()
            .map(outlet_from_row)
            .transpose()
    }

    fn list_outlets(&self, merchant_nif: &str) -> Result<Vec<Outlet>, AuthError> {
        let sql = format!(
            "SELECT {OUTLET_COLUMNS} FROM auth_outlets WHERE merchant_nif = $1 ORDER BY seq"
        );
        self.read(|c| c.query_typed(&sql, &[(&merchant_nif, Type::TEXT)]))?
            .iter()
            .map(outlet_from_row)
            .collect()
    }
}
