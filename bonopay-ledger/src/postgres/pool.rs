//! The connection pool every PostgreSQL store of the stack shares (the
//! ledger, the DGI outbox, the key store, webhooks and deliveries): one
//! place that connects, checks out with a deadline, replaces a broken
//! connection and caches prepared statements per connection.

use std::sync::{Condvar, Mutex};

use postgres::{Client, NoTls};

use super::unavailable;
use crate::error::LedgerError;

/// A small pool of connections: a client is checked out per operation and
/// returned, or dropped if its connection broke.
pub struct PgPool {
    /// The parsed URL, with [`DEFAULT_CONNECT_TIMEOUT`] when it sets none;
    /// a URL that does not parse fails every checkout with its reason.
    config: Result<postgres::Config, String>,
    max: usize,
    checkout_timeout: std::time::Duration,
    state: Mutex<(Vec<PgConn>, usize)>,
    freed: Condvar,
}

/// How long a call waits for a free connection, all being busy, before it
/// fails with [`LedgerError::Unavailable`]: a till must get an answer it
/// can act on (retry, queue offline), not hang behind a stuck database.
pub const CHECKOUT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The connect timeout when the URL sets none (`connect_timeout=…`):
/// without one, connecting to an unreachable host waits for the operating
/// system's TCP timeout, minutes.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A pooled connection and its prepared statements (prepared once per
/// connection: a statement costs one round trip instead of two).
pub struct PgConn {
    /// The client.
    pub client: Client,
    pub(super) stmts: std::collections::HashMap<&'static str, postgres::Statement>,
    /// The server said it is ending this session (see [`gone`]): the
    /// client may not have noticed the close yet, the pool must not keep it.
    pub(super) broken: bool,
    /// Whether it was idle in the pool before this checkout (it may have
    /// died there unnoticed), rather than connected for it.
    pub(super) reused: bool,
}

/// Whether `e` says the session is over: the connection closed, or the
/// server ending it (an administrator's terminate, a crash or shutdown of
/// the server: SQLSTATE class 57P). Nothing of a statement answered so ran.
pub(super) fn gone(e: &postgres::Error) -> bool {
    e.is_closed() || e.code().is_some_and(|c| c.code().starts_with("57P"))
}

impl PgConn {
    /// Whether the connection sat idle in the pool before this checkout
    /// (so a failure may be its silent death there, worth one retry on a
    /// fresh connection for an idempotent read).
    #[must_use]
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Tells the pool this connection failed as a connection: it is
    /// dropped on return, with every idle one (they most likely died with
    /// it).
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// The prepared statement for `sql`, preparing it on first use.
    ///
    /// # Errors
    /// The database's.
    pub fn stmt(&mut self, sql: &'static str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }
}

impl Drop for PgPool {
    /// A `postgres` client owns a small runtime and may not be dropped on
    /// an async runtime thread (the server's state is dropped there at
    /// shutdown): close the connections on a thread of their own.
    fn drop(&mut self) {
        let conns = self
            .state
            .get_mut()
            .map(|st| std::mem::take(&mut st.0))
            .unwrap_or_default();
        if !conns.is_empty() {
            let _ = std::thread::Builder::new()
                .name("pg-pool-close".into())
                .spawn(move || drop(conns));
        }
    }
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("PgPool")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl PgPool {
    /// A pool of at most `max` connections to `url`
    /// (`postgres://user@host:port/db` or `host=… user=… dbname=…`).
    #[must_use]
    pub fn new(url: &str, max: usize) -> Self {
        let config = url
            .parse::<postgres::Config>()
            .map(|mut c| {
                if c.get_connect_timeout().is_none() {
                    c.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
                }
                c
            })
            // Not the URL itself in the message: it may carry a password.
            .map_err(|e| format!("the PostgreSQL URL does not parse: {e}"));
        Self {
            config,
            max: max.max(1),
            checkout_timeout: CHECKOUT_TIMEOUT,
            state: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
        }
    }

    /// The same pool, its connections named `name` in `pg_stat_activity`
    /// unless the URL names them.
    #[must_use]
    pub fn with_application_name(mut self, name: &str) -> Self {
        if let Ok(c) = self.config.as_mut()
            && c.get_application_name().is_none()
        {
            c.application_name(name);
        }
        self
    }

    /// The most connections this pool opens at once.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    /// The same pool with another [`CHECKOUT_TIMEOUT`].
    #[must_use]
    pub fn with_checkout_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.checkout_timeout = timeout;
        self
    }

    /// Runs `f` with a client checked out of the pool (connecting a new
    /// one while under the limit, waiting for one otherwise), then returns
    /// the client, or drops it if its connection broke.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached.
    pub fn with<T>(&self, f: impl FnOnce(&mut PgConn) -> T) -> Result<T, LedgerError> {
        let mut client = self.checkout()?;
        let out = f(&mut client);
        let mut dead = Vec::new();
        if let Ok(mut st) = self.state.lock() {
            if client.broken || client.client.is_closed() {
                // The server dropped it (a restart, a failover, an idle
                // killer): the idle ones most likely died with it, and each
                // would fail one caller. Drop them all; new ones connect.
                dead = std::mem::take(&mut st.0);
                st.1 = st.1.saturating_sub(1 + dead.len());
                dead.push(client);
            } else {
                st.0.push(client);
            }
            self.freed.notify_all();
        }
        drop(dead);
        Ok(out)
    }

    /// A connection of its own, outside the pool and its limit, for a
    /// session that must stay open as long as its owner lives (a
    /// session-level advisory lock that tells other instances this process
    /// is alive: PostgreSQL releases it the moment the process dies and its
    /// connection closes).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached.
    pub fn connect_dedicated(&self) -> Result<Client, LedgerError> {
        let config = self.config.as_ref().map_err(unavailable)?;
        config
            .connect(NoTls)
            .map_err(|e| unavailable(format!("cannot connect to PostgreSQL: {e}")))
    }

    fn checkout(&self) -> Result<PgConn, LedgerError> {
        let config = self.config.as_ref().map_err(unavailable)?;
        let deadline = std::time::Instant::now() + self.checkout_timeout;
        let mut st = self
            .state
            .lock()
            .map_err(|_| unavailable("pool lock poisoned"))?;
        loop {
            if let Some(mut c) = st.0.pop() {
                if c.client.is_closed() {
                    // Died while idle: free its slot and look again.
                    st.1 = st.1.saturating_sub(1);
                    drop(c);
                    self.freed.notify_one();
                    continue;
                }
                c.reused = true;
                return Ok(c);
            }
            if st.1 < self.max {
                st.1 += 1;
                drop(st);
                return config
                    .connect(NoTls)
                    .map(|client| PgConn {
                        client,
                        stmts: std::collections::HashMap::new(),
                        broken: false,
                        reused: false,
                    })
                    .map_err(|e| {
                        if let Ok(mut st) = self.state.lock() {
                            st.1 = st.1.saturating_sub(1);
                        }
                        unavailable(format!("cannot connect to PostgreSQL: {e}"))
                    });
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(unavailable(format!(
                    "no PostgreSQL connection came free within {:?} (all {} busy)",
                    self.checkout_timeout, self.max
                )));
            }
            st = self
                .freed
                .wait_timeout(st, left)
                .map_err(|_| unavailable("pool lock poisoned"))?
                .0;
        }
    }
}
