//! The PostgreSQL backend (feature `postgres`): many server instances over
//! one database, with the same guarantees as SQLite.
//!
//! **Why no gap and no fork can happen.** Every append runs in one READ
//! COMMITTED transaction that first takes the row lock of each outlet head
//! it touches (`SELECT … FOR UPDATE`, in outlet order so two batches never
//! wait on each other in a cycle). While the lock is held no other
//! transaction can read-for-update or change that head, so the check
//! "the entry's `prev_hash` and `seq` are the head's" and the write of the
//! entry and of the new head happen against a head nobody else can move:
//! a writer holding a stale head gets [`LedgerError::Conflict`], never a
//! second entry at the same `seq` (which the primary key `(outlet, seq)`
//! refuses anyway). The counters are in the same row and commit with the
//! entry, so a number is used exactly when its entry commits: a rollback
//! or a crash before commit uses none. Unique index keys (idempotency
//! keys, authentication codes) are unique in the database, so two
//! instances given the same key concurrently cannot both seal: the second
//! waits on the first's uncommitted key and then fails, is retried, and
//! finds the key taken ([`LedgerError::Duplicate`]).
//!
//! SERIALIZABLE is not used: on a hot outlet it fails most attempts with
//! 40001 (`perf-limits.md`), while the row lock simply queues the writers.
//! A retry loop for 40001/40P01 and unique violations remains, for
//! whatever the database reports all the same.

use std::sync::{Condvar, Mutex};

use postgres::error::SqlState;
use postgres::{Client, NoTls, Row, Transaction};

use crate::entry::{Counters, Entry, EntryKind, FiscalNumber, Head, INVOICE_TYPES, genesis_hash};
use crate::error::LedgerError;
use crate::store::{EntryIter, LedgerStore, check_append, paged_iter};

/// Migrations, in order; `ledger_schema` records how many ran. Never edit
/// a shipped migration: add a new one.
pub const PG_MIGRATIONS: &[&str] = &["
    CREATE TABLE ledger_heads (
        outlet      TEXT PRIMARY KEY,
        seq         BIGINT NOT NULL,
        hash        BYTEA NOT NULL,
        fiscal_year INTEGER NOT NULL,
        total       BIGINT NOT NULL,
        per_type    BIGINT[] NOT NULL,
        z_number    BIGINT NOT NULL,
        time_ms     BIGINT NOT NULL
    );
    CREATE TABLE ledger_entries (
        outlet        TEXT NOT NULL,
        seq           BIGINT NOT NULL,
        kind          TEXT NOT NULL,
        fiscal_year   INTEGER NOT NULL,
        time_ms       BIGINT NOT NULL,
        invoice_type  TEXT,
        total_counter BIGINT,
        type_counter  BIGINT,
        z_number      BIGINT,
        prev_hash     BYTEA NOT NULL,
        entry_hash    BYTEA NOT NULL,
        header        BYTEA NOT NULL,
        payload       BYTEA NOT NULL,
        PRIMARY KEY (outlet, seq)
    );
    CREATE UNIQUE INDEX ledger_entries_by_number
        ON ledger_entries (outlet, fiscal_year, total_counter) WHERE total_counter IS NOT NULL;
    CREATE TABLE ledger_index (
        id        BIGSERIAL PRIMARY KEY,
        name      TEXT NOT NULL,
        value     TEXT NOT NULL,
        outlet    TEXT NOT NULL,
        seq       BIGINT NOT NULL,
        is_unique BOOLEAN NOT NULL
    );
    CREATE UNIQUE INDEX ledger_index_unique ON ledger_index (name, value) WHERE is_unique;
    CREATE INDEX ledger_index_lookup ON ledger_index (name, value);
"];

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt(e.to_string())
}

/// A small pool of connections: a client is checked out per operation and
/// returned, or dropped if its connection broke.
pub struct PgPool {
    url: String,
    max: usize,
    state: Mutex<(Vec<Client>, usize)>,
    freed: Condvar,
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
        Self {
            url: url.to_owned(),
            max: max.max(1),
            state: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
        }
    }

    /// Runs `f` with a client checked out of the pool (connecting a new
    /// one while under the limit, waiting for one otherwise), then returns
    /// the client, or drops it if its connection broke.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached.
    pub fn with<T>(&self, f: impl FnOnce(&mut Client) -> T) -> Result<T, LedgerError> {
        let mut client = self.checkout()?;
        let out = f(&mut client);
        if let Ok(mut st) = self.state.lock() {
            if client.is_closed() {
                st.1 = st.1.saturating_sub(1);
            } else {
                st.0.push(client);
            }
            self.freed.notify_one();
        }
        Ok(out)
    }

    fn checkout(&self) -> Result<Client, LedgerError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| unavailable("pool lock poisoned"))?;
        loop {
            if let Some(c) = st.0.pop() {
                return Ok(c);
            }
            if st.1 < self.max {
                st.1 += 1;
                drop(st);
                return Client::connect(&self.url, NoTls).map_err(|e| {
                    if let Ok(mut st) = self.state.lock() {
                        st.1 = st.1.saturating_sub(1);
                    }
                    unavailable(format!("cannot connect to PostgreSQL: {e}"))
                });
            }
            st = self
                .freed
                .wait(st)
                .map_err(|_| unavailable("pool lock poisoned"))?;
        }
    }
}

/// The ledger in PostgreSQL.
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
}

fn to_i64(v: u64) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| LedgerError::InvalidEntry(format!("{v} does not fit in BIGINT")))
}

fn to_u64(v: i64) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(corrupt)
}

fn hash_from(b: Vec<u8>) -> Result<[u8; 32], LedgerError> {
    b.try_into()
        .map_err(|b: Vec<u8>| corrupt(format!("hash of {} bytes", b.len())))
}

fn head_from(outlet: &str, r: &Row) -> Result<Head, LedgerError> {
    let per: Vec<i64> = r.try_get(4).map_err(corrupt)?;
    let mut per_type = [0u64; 6];
    for (slot, v) in per_type.iter_mut().zip(per) {
        *slot = to_u64(v)?;
    }
    Ok(Head {
        outlet: outlet.to_owned(),
        seq: to_u64(r.try_get(0).map_err(corrupt)?)?,
        hash: hash_from(r.try_get(1).map_err(corrupt)?)?,
        fiscal_year: r.try_get(2).map_err(corrupt)?,
        counters: Counters {
            total: to_u64(r.try_get(3).map_err(corrupt)?)?,
            per_type,
        },
        z_number: to_u64(r.try_get(5).map_err(corrupt)?)?,
        time_ms: r.try_get(6).map_err(corrupt)?,
    })
}

const HEAD_COLUMNS: &str = "seq, hash, fiscal_year, total, per_type, z_number, time_ms";
const ENTRY_COLUMNS: &str = "outlet, seq, kind, fiscal_year, time_ms, invoice_type, total_counter,
     type_counter, z_number, prev_hash, entry_hash, header, payload";

/// Reads a row without judging it (the verifier says what is wrong).
fn entry_from(r: &Row) -> Result<Entry, LedgerError> {
    let g = |e: postgres::Error| corrupt(e);
    let outlet: String = r.try_get(0).map_err(g)?;
    let seq = to_u64(r.try_get(1).map_err(g)?)?;
    let kind: String = r.try_get(2).map_err(g)?;
    let kind = EntryKind::from_code(&kind)
        .ok_or_else(|| corrupt(format!("unknown entry kind `{kind}`")))?;
    let itype: Option<String> = r.try_get(5).map_err(g)?;
    let total: Option<i64> = r.try_get(6).map_err(g)?;
    let tcount: Option<i64> = r.try_get(7).map_err(g)?;
    let fiscal_number = match (itype, total, tcount) {
        (Some(t), Some(total), Some(tc)) => Some(FiscalNumber {
            total: to_u64(total)?,
            invoice_type: INVOICE_TYPES
                .iter()
                .copied()
                .find(|x| x.as_str() == t)
                .ok_or_else(|| corrupt(format!("unknown invoice type `{t}`")))?,
            type_counter: to_u64(tc)?,
        }),
        (None, None, None) => None,
        _ => {
            return Err(corrupt(format!(
                "entry {seq} of {outlet}: partial counters"
            )));
        }
    };
    let z: Option<i64> = r.try_get(8).map_err(g)?;
    Ok(Entry {
        outlet,
        seq,
        kind,
        fiscal_year: r.try_get(3).map_err(g)?,
        time_ms: r.try_get(4).map_err(g)?,
        fiscal_number,
        z_number: z.map(to_u64).transpose()?,
        prev_hash: hash_from(r.try_get(9).map_err(g)?)?,
        entry_hash: hash_from(r.try_get(10).map_err(g)?)?,
        header: r.try_get(11).map_err(g)?,
        payload: r.try_get(12).map_err(g)?,
        index: Vec::new(),
    })
}

/// Whether a database error is worth retrying the whole transaction for.
fn retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::UNIQUE_VIOLATION
    )
}

enum BatchError {
    Retry(postgres::Error),
    Fatal(LedgerError),
}

impl From<postgres::Error> for BatchError {
    fn from(e: postgres::Error) -> Self {
        if retryable(&e) {
            BatchError::Retry(e)
        } else {
            BatchError::Fatal(unavailable(e))
        }
    }
}

impl From<LedgerError> for BatchError {
    fn from(e: LedgerError) -> Self {
        BatchError::Fatal(e)
    }
}

const PAGE: i64 = 512;
const MAX_RETRIES: u32 = 20;

impl PgStore {
    /// Connects (pool of `max_connections`) and applies the migrations.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached or
    /// its schema is newer than this build.
    pub fn connect(url: &str, max_connections: usize) -> Result<Self, LedgerError> {
        let store = Self {
            pool: PgPool::new(url, max_connections),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), LedgerError> {
        self.pool.with(Self::migrate_on)?
    }

    fn migrate_on(c: &mut Client) -> Result<(), LedgerError> {
        let mut tx = c.transaction().map_err(unavailable)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS ledger_schema (version INTEGER NOT NULL);
             LOCK TABLE ledger_schema IN EXCLUSIVE MODE;",
        )
        .map_err(unavailable)?;
        let version: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM ledger_schema", &[])
            .and_then(|r| r.try_get(0))
            .map_err(unavailable)?;
        let have = usize::try_from(version).map_err(corrupt)?;
        if have > PG_MIGRATIONS.len() {
            return Err(unavailable(format!(
                "ledger schema version {have} is newer than this build ({})",
                PG_MIGRATIONS.len()
            )));
        }
        for (i, m) in PG_MIGRATIONS.iter().enumerate().skip(have) {
            tx.batch_execute(m).map_err(unavailable)?;
            let v = i32::try_from(i + 1).map_err(corrupt)?;
            tx.execute("INSERT INTO ledger_schema (version) VALUES ($1)", &[&v])
                .map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)
    }

    /// The schema version (number of migrations applied).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`].
    pub fn schema_version(&self) -> Result<u32, LedgerError> {
        let v: i32 = self
            .pool
            .with(|c| {
                c.query_one("SELECT COALESCE(MAX(version), 0) FROM ledger_schema", &[])
                    .and_then(|r| r.try_get(0))
            })?
            .map_err(unavailable)?;
        u32::try_from(v).map_err(corrupt)
    }

    fn append_on(client: &mut Client, entries: &[Entry]) -> Vec<Result<Head, LedgerError>> {
        let fail_all = |e: LedgerError| entries.iter().map(|_| Err(e.clone())).collect();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let mut tx = match client.transaction() {
                Ok(tx) => tx,
                Err(e) => return fail_all(unavailable(e)),
            };
            match Self::try_batch(&mut tx, entries) {
                Ok(results) => {
                    // One commit for the batch; nothing is reported
                    // appended before it returns.
                    return match tx.commit() {
                        Ok(()) => results,
                        Err(e) if retryable(&e) => {
                            last = Some(e.to_string());
                            continue;
                        }
                        Err(e) => {
                            let e = unavailable(format!("commit failed, batch not written: {e}"));
                            results.into_iter().map(|r| r.and(Err(e.clone()))).collect()
                        }
                    };
                }
                Err(BatchError::Retry(e)) => {
                    // Rolled back on drop; another writer got there first.
                    last = Some(e.to_string());
                }
                Err(BatchError::Fatal(e)) => return fail_all(e),
            }
        }
        fail_all(unavailable(format!(
            "gave up after {MAX_RETRIES} retries: {}",
            last.unwrap_or_default()
        )))
    }

    /// The connection pool (other stores of the server share the database).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn try_batch(
        tx: &mut Transaction<'_>,
        entries: &[Entry],
    ) -> Result<Vec<Result<Head, LedgerError>>, BatchError> {
        // Lock every head the batch touches, in outlet order.
        let mut outlets: Vec<&str> = entries.iter().map(|e| e.outlet.as_str()).collect();
        outlets.sort_unstable();
        outlets.dedup();
        for o in &outlets {
            let genesis = genesis_hash(o).to_vec();
            tx.execute(
                "INSERT INTO ledger_heads (outlet, seq, hash, fiscal_year, total, per_type, z_number, time_ms)
                 VALUES ($1, 0, $2, $3, 0, '{0,0,0,0,0,0}', 0, $4) ON CONFLICT (outlet) DO NOTHING",
                &[o, &genesis, &i32::MIN, &i64::MIN],
            )?;
        }
        let owned: Vec<String> = outlets.iter().map(|s| (*s).to_owned()).collect();
        let rows = tx.query(
            &format!(
                "SELECT {HEAD_COLUMNS}, outlet FROM ledger_heads WHERE outlet = ANY($1) ORDER BY outlet FOR UPDATE"
            ),
            &[&owned],
        )?;
        let mut heads: Vec<(Head, bool)> = Vec::with_capacity(rows.len());
        for r in &rows {
            let outlet: String = r.try_get(7).map_err(corrupt)?;
            heads.push((head_from(&outlet, r)?, false));
        }
        // Unique keys already taken (committed), in one query.
        let mut names = Vec::new();
        let mut values = Vec::new();
        for e in entries {
            for k in e.index.iter().filter(|k| k.unique) {
                names.push(k.name.clone());
                values.push(k.value.clone());
            }
        }
        let mut taken: Vec<(String, String, String, u64)> = Vec::new();
        if !names.is_empty() {
            for r in tx.query(
                "SELECT i.name, i.value, i.outlet, i.seq FROM ledger_index i
                 JOIN unnest($1::text[], $2::text[]) AS k(name, value)
                   ON i.name = k.name AND i.value = k.value
                 WHERE i.is_unique",
                &[&names, &values],
            )? {
                taken.push((
                    r.try_get(0).map_err(corrupt)?,
                    r.try_get(1).map_err(corrupt)?,
                    r.try_get(2).map_err(corrupt)?,
                    to_u64(r.try_get(3).map_err(corrupt)?)?,
                ));
            }
        }
        let mut results = Vec::with_capacity(entries.len());
        let mut accepted: Vec<&Entry> = Vec::new();
        for e in entries {
            let checked = (|| {
                let slot = heads
                    .iter()
                    .position(|(h, _)| h.outlet == e.outlet)
                    .ok_or_else(|| unavailable("head not locked"))?;
                for k in e.index.iter().filter(|k| k.unique) {
                    let dup = taken
                        .iter()
                        .find(|(n, v, _, _)| *n == k.name && *v == k.value)
                        .map(|(_, _, o, s)| (o.clone(), *s))
                        .or_else(|| {
                            // Or earlier in this same batch.
                            accepted.iter().find_map(|a| {
                                a.index
                                    .iter()
                                    .any(|x| x.unique && x.name == k.name && x.value == k.value)
                                    .then(|| (a.outlet.clone(), a.seq))
                            })
                        });
                    if let Some((outlet, seq)) = dup {
                        return Err(LedgerError::Duplicate {
                            name: k.name.clone(),
                            value: k.value.clone(),
                            outlet,
                            seq,
                        });
                    }
                }
                Ok((slot, check_append(&heads[slot].0, e)?))
            })();
            match checked {
                Ok((slot, next)) => {
                    heads[slot] = (next.clone(), true);
                    accepted.push(e);
                    results.push(Ok(next));
                }
                Err(err) => results.push(Err(err)),
            }
        }
        for e in &accepted {
            tx.execute(
                "INSERT INTO ledger_entries (outlet, seq, kind, fiscal_year, time_ms, invoice_type,
                    total_counter, type_counter, z_number, prev_hash, entry_hash, header, payload)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    &e.outlet,
                    &to_i64(e.seq)?,
                    &e.kind.as_str(),
                    &e.fiscal_year,
                    &e.time_ms,
                    &e.fiscal_number.map(|n| n.invoice_type.as_str()),
                    &e.fiscal_number.map(|n| to_i64(n.total)).transpose()?,
                    &e.fiscal_number
                        .map(|n| to_i64(n.type_counter))
                        .transpose()?,
                    &e.z_number.map(to_i64).transpose()?,
                    &e.prev_hash.as_slice(),
                    &e.entry_hash.as_slice(),
                    &e.header,
                    &e.payload,
                ],
            )?;
            for k in &e.index {
                tx.execute(
                    "INSERT INTO ledger_index (name, value, outlet, seq, is_unique) VALUES ($1, $2, $3, $4, $5)",
                    &[&k.name, &k.value, &e.outlet, &to_i64(e.seq)?, &k.unique],
                )?;
            }
        }
        for (h, changed) in &heads {
            if !changed {
                continue;
            }
            let per: Vec<i64> = h
                .counters
                .per_type
                .iter()
                .map(|v| to_i64(*v))
                .collect::<Result<_, _>>()?;
            tx.execute(
                "UPDATE ledger_heads SET seq = $2, hash = $3, fiscal_year = $4, total = $5,
                    per_type = $6, z_number = $7, time_ms = $8 WHERE outlet = $1",
                &[
                    &h.outlet,
                    &to_i64(h.seq)?,
                    &h.hash.as_slice(),
                    &h.fiscal_year,
                    &to_i64(h.counters.total)?,
                    &per,
                    &to_i64(h.z_number)?,
                    &h.time_ms,
                ],
            )?;
        }
        Ok(results)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, LedgerError> {
        self.pool.with(f)?.map_err(unavailable)
    }
}

impl LedgerStore for PgStore {
    fn head(&self, outlet: &str) -> Result<Head, LedgerError> {
        let row = self.read(|c| {
            c.query_opt(
                &format!("SELECT {HEAD_COLUMNS} FROM ledger_heads WHERE outlet = $1"),
                &[&outlet],
            )
        })?;
        match row {
            Some(r) => head_from(outlet, &r),
            None => Ok(Head::genesis(outlet)),
        }
    }

    fn append_batch(&self, entries: &[Entry]) -> Vec<Result<Head, LedgerError>> {
        let fail_all = |e: LedgerError| entries.iter().map(|_| Err(e.clone())).collect();
        if entries.is_empty() {
            return Vec::new();
        }
        match self.pool.with(|client| Self::append_on(client, entries)) {
            Ok(r) => r,
            Err(e) => fail_all(e),
        }
    }

    fn entry(&self, outlet: &str, seq: u64) -> Result<Option<Entry>, LedgerError> {
        let s = to_i64(seq)?;
        self.read(|c| {
            c.query_opt(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE outlet = $1 AND seq = $2"
                ),
                &[&outlet, &s],
            )
        })?
        .map(|r| entry_from(&r))
        .transpose()
    }

    fn entry_by_fiscal_number(
        &self,
        outlet: &str,
        fiscal_year: i32,
        total: u64,
    ) -> Result<Option<Entry>, LedgerError> {
        let t = to_i64(total)?;
        self.read(|c| {
            c.query_opt(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM ledger_entries
                     WHERE outlet = $1 AND fiscal_year = $2 AND total_counter = $3"
                ),
                &[&outlet, &fiscal_year, &t],
            )
        })?
        .map(|r| entry_from(&r))
        .transpose()
    }

    fn range(&self, outlet: &str, from: u64, to: u64) -> Result<Vec<Entry>, LedgerError> {
        let (f, t) = (to_i64(from)?, to_i64(to.min(i64::MAX as u64))?);
        self.read(|c| {
            c.query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM ledger_entries
                     WHERE outlet = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq"
                ),
                &[&outlet, &f, &t],
            )
        })?
        .iter()
        .map(entry_from)
        .collect()
    }

    fn iter_from<'a>(&'a self, outlet: &str, from_seq: u64) -> EntryIter<'a> {
        let outlet = outlet.to_owned();
        paged_iter(from_seq, PAGE as usize, move |next| {
            let n = to_i64(next)?;
            self.read(|c| {
                c.query(
                    &format!(
                        "SELECT {ENTRY_COLUMNS} FROM ledger_entries
                         WHERE outlet = $1 AND seq >= $2 ORDER BY seq LIMIT $3"
                    ),
                    &[&outlet, &n, &PAGE],
                )
            })?
            .iter()
            .map(entry_from)
            .collect()
        })
    }

    fn find_index(&self, name: &str, value: &str) -> Result<Vec<(String, u64)>, LedgerError> {
        self.read(|c| {
            c.query(
                "SELECT outlet, seq FROM ledger_index WHERE name = $1 AND value = $2 ORDER BY id",
                &[&name, &value],
            )
        })?
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(corrupt)?,
                to_u64(r.try_get(1).map_err(corrupt)?)?,
            ))
        })
        .collect()
    }

    fn outlets(&self) -> Result<Vec<String>, LedgerError> {
        self.read(|c| {
            c.query(
                "SELECT outlet FROM ledger_heads WHERE seq > 0 ORDER BY outlet",
                &[],
            )
        })?
        .iter()
        .map(|r| r.try_get(0).map_err(corrupt))
        .collect()
    }
}

/// A throwaway database for tests and benches: created on
/// [`TestDb::create`], dropped (`WITH (FORCE)`) on drop.
#[derive(Debug)]
pub struct TestDb {
    admin: String,
    name: String,
    /// The database's URL.
    pub url: String,
}

impl TestDb {
    /// Creates `bonopay_t_<pid>_<n>` on the server of `admin_url` (default
    /// `$BONOPAY_TEST_PG`, else `postgres://postgres@127.0.0.1:5432/postgres`).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] with the reason when PostgreSQL is not
    /// reachable.
    pub fn create() -> Result<Self, LedgerError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let admin = std::env::var("BONOPAY_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "bonopay_t_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let mut c = Client::connect(&admin, NoTls).map_err(|e| {
            unavailable(format!(
                "PostgreSQL at {admin} is not reachable ({e}); the tests need it (set BONOPAY_TEST_PG)"
            ))
        })?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(unavailable)?;
        let url = match admin.rsplit_once('/') {
            Some((base, _)) if admin.starts_with("postgres") => format!("{base}/{name}"),
            _ => format!("{admin} dbname={name}"),
        };
        Ok(Self { admin, name, url })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.admin, NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
