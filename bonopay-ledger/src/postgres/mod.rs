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

use std::sync::Mutex;

use postgres::error::SqlState;
use postgres::{Client, Row, Transaction};

use crate::entry::{Counters, Entry, EntryKind, FiscalNumber, Head, INVOICE_TYPES, genesis_hash};
use crate::error::LedgerError;
use crate::store::{EntryIter, LedgerStore, check_append, paged_iter};

#[cfg(feature = "sqlite")]
pub mod import;
mod pool;
use pool::gone;
pub use pool::{CHECKOUT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, PgConn, PgPool};

/// Migrations, in order; `ledger_schema` records how many ran. Never edit
/// a shipped migration: add a new one.
pub const PG_MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE ledger_heads (
        outlet      TEXT PRIMARY KEY,
        seq         BIGINT NOT NULL,
        hash        BYTEA NOT NULL,
        fiscal_year INTEGER NOT NULL,
        total       BIGINT NOT NULL,
        c_fv BIGINT NOT NULL, c_ft BIGINT NOT NULL, c_fa BIGINT NOT NULL,
        c_ev BIGINT NOT NULL, c_et BIGINT NOT NULL, c_ea BIGINT NOT NULL,
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
",
    "
    -- A sealed payload (about 4.4 KB of JSON for 20 lines) went through
    -- pglz and out of line into TOAST: pglz was the largest single cost of
    -- an insert. lz4 compresses it to about 2 KB several times faster, and
    -- a tuple target of 4080 bytes keeps the compressed row inline (no
    -- TOAST rows, no TOAST index). Existing rows stay as they are. A server
    -- built without lz4 (or older than PostgreSQL 14) keeps pglz.
    ALTER TABLE ledger_entries SET (toast_tuple_target = 4080);
    DO $$
    BEGIN
        ALTER TABLE ledger_entries ALTER COLUMN payload SET COMPRESSION lz4;
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END $$;
",
    "
    -- Every index row (two per invoice: its idempotency key and its
    -- authentication code) went into three B-trees: the id primary key
    -- (nothing refers to it), the unique index and a lookup index that
    -- repeated the unique one for unique names. Now each row goes into one:
    -- the unique index, or the lookup index for names that may repeat.
    -- Lookups query both (`SQL_FIND`). The id still orders a name's rows.
    ALTER TABLE ledger_index DROP CONSTRAINT ledger_index_pkey;
    DROP INDEX ledger_index_lookup;
    CREATE INDEX ledger_index_multi ON ledger_index (name, value) WHERE NOT is_unique;
",
];

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt(e.to_string())
}

/// The ledger in PostgreSQL.
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    /// Heads as this process last committed them: the fast path's
    /// expectation. Never trusted: the database compares it (seq and hash)
    /// with the stored head in the same statement that writes.
    heads: Mutex<std::collections::HashMap<String, Head>>,
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
    let mut per_type = [0u64; 6];
    for (i, slot) in per_type.iter_mut().enumerate() {
        *slot = to_u64(r.try_get(4 + i).map_err(corrupt)?)?;
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
        z_number: to_u64(r.try_get(10).map_err(corrupt)?)?,
        time_ms: r.try_get(11).map_err(corrupt)?,
    })
}

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
    /// The session is over (see [`gone`]); the connection must go.
    Gone(LedgerError),
}

impl From<postgres::Error> for BatchError {
    fn from(e: postgres::Error) -> Self {
        if retryable(&e) {
            BatchError::Retry(e)
        } else if gone(&e) {
            BatchError::Gone(unavailable(e))
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

/// The batch's statements, prepared once per connection.
struct Stmts {
    lock_heads: postgres::Statement,
    insert_heads: postgres::Statement,
    taken: postgres::Statement,
    insert_entries: postgres::Statement,
    insert_index: postgres::Statement,
    update_heads: postgres::Statement,
}

impl Stmts {
    fn prepare(c: &mut PgConn) -> Result<Self, postgres::Error> {
        Ok(Self {
            lock_heads: c.stmt(
                "SELECT seq, hash, fiscal_year, total, c_fv, c_ft, c_fa, c_ev, c_et, c_ea, z_number, time_ms, outlet
                 FROM ledger_heads WHERE outlet = ANY($1) ORDER BY outlet FOR UPDATE",
            )?,
            insert_heads: c.stmt(
                "INSERT INTO ledger_heads (outlet, seq, hash, fiscal_year, total, c_fv, c_ft, c_fa, c_ev, c_et, c_ea, z_number, time_ms)
                 SELECT o, 0, g, $3, 0, 0, 0, 0, 0, 0, 0, 0, $4 FROM unnest($1::text[], $2::bytea[]) AS t(o, g)
                 ON CONFLICT (outlet) DO NOTHING",
            )?,
            taken: c.stmt(
                "SELECT i.name, i.value, i.outlet, i.seq FROM ledger_index i
                 JOIN unnest($1::text[], $2::text[]) AS k(name, value)
                   ON i.name = k.name AND i.value = k.value
                 WHERE i.is_unique",
            )?,
            insert_entries: c.stmt(
                "INSERT INTO ledger_entries (outlet, seq, kind, fiscal_year, time_ms, invoice_type,
                    total_counter, type_counter, z_number, prev_hash, entry_hash, header, payload)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int4[], $5::int8[], $6::text[],
                    $7::int8[], $8::int8[], $9::int8[], $10::bytea[], $11::bytea[], $12::bytea[], $13::bytea[])",
            )?,
            insert_index: c.stmt(
                "INSERT INTO ledger_index (name, value, outlet, seq, is_unique)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[])",
            )?,
            update_heads: c.stmt(
                "UPDATE ledger_heads h SET seq = u.seq, hash = u.hash, fiscal_year = u.y, total = u.t,
                    c_fv = u.a, c_ft = u.b, c_fa = u.c, c_ev = u.d, c_et = u.e, c_ea = u.f,
                    z_number = u.z, time_ms = u.tm
                 FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::int4[], $5::int8[], $6::int8[],
                    $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[])
                    AS u(outlet, seq, hash, y, t, a, b, c, d, e, f, z, tm)
                 WHERE h.outlet = u.outlet",
            )?,
        })
    }
}

#[derive(Default)]
struct EntryColumns {
    outlet: Vec<String>,
    seq: Vec<i64>,
    kind: Vec<&'static str>,
    year: Vec<i32>,
    time: Vec<i64>,
    itype: Vec<Option<&'static str>>,
    total: Vec<Option<i64>>,
    tcount: Vec<Option<i64>>,
    z: Vec<Option<i64>>,
    prev: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    header: Vec<Vec<u8>>,
    payload: Vec<Vec<u8>>,
}

impl EntryColumns {
    fn push(&mut self, e: &Entry) -> Result<(), LedgerError> {
        self.outlet.push(e.outlet.clone());
        self.seq.push(to_i64(e.seq)?);
        self.kind.push(e.kind.as_str());
        self.year.push(e.fiscal_year);
        self.time.push(e.time_ms);
        self.itype
            .push(e.fiscal_number.map(|n| n.invoice_type.as_str()));
        self.total
            .push(e.fiscal_number.map(|n| to_i64(n.total)).transpose()?);
        self.tcount.push(
            e.fiscal_number
                .map(|n| to_i64(n.type_counter))
                .transpose()?,
        );
        self.z.push(e.z_number.map(to_i64).transpose()?);
        self.prev.push(e.prev_hash.to_vec());
        self.hash.push(e.entry_hash.to_vec());
        self.header.push(e.header.clone());
        self.payload.push(e.payload.clone());
        Ok(())
    }
}

#[derive(Default)]
struct IndexColumns {
    name: Vec<String>,
    value: Vec<String>,
    outlet: Vec<String>,
    seq: Vec<i64>,
    unique: Vec<bool>,
}

impl IndexColumns {
    fn push(&mut self, e: &Entry) -> Result<(), LedgerError> {
        for k in &e.index {
            self.name.push(k.name.clone());
            self.value.push(k.value.clone());
            self.outlet.push(e.outlet.clone());
            self.seq.push(to_i64(e.seq)?);
            self.unique.push(k.unique);
        }
        Ok(())
    }
}

/// The entries and their index keys as the columns the inserts unnest.
fn columns<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<(EntryColumns, IndexColumns), LedgerError> {
    let mut c = EntryColumns::default();
    let mut ix = IndexColumns::default();
    for e in entries {
        c.push(e)?;
        ix.push(e)?;
    }
    Ok((c, ix))
}

/// The entry among `earlier` (of the same batch) that already holds one of
/// `e`'s unique keys, with that key: a batch must not take a key twice.
fn clash<'a, 'b>(
    earlier: impl IntoIterator<Item = &'a Entry>,
    e: &'b Entry,
) -> Option<(&'a Entry, &'b crate::entry::IndexKey)> {
    earlier.into_iter().find_map(|a| {
        e.index.iter().filter(|k| k.unique).find_map(|k| {
            a.index
                .iter()
                .any(|x| x.unique && x.name == k.name && x.value == k.value)
                .then_some((a, k))
        })
    })
}

#[derive(Default)]
struct HeadColumns {
    outlet: Vec<String>,
    seq: Vec<i64>,
    hash: Vec<Vec<u8>>,
    year: Vec<i32>,
    total: Vec<i64>,
    c: [Vec<i64>; 6],
    z: Vec<i64>,
    time: Vec<i64>,
}

impl HeadColumns {
    fn push(&mut self, h: &Head) -> Result<(), LedgerError> {
        self.outlet.push(h.outlet.clone());
        self.seq.push(to_i64(h.seq)?);
        self.hash.push(h.hash.to_vec());
        self.year.push(h.fiscal_year);
        self.total.push(to_i64(h.counters.total)?);
        for (col, v) in self.c.iter_mut().zip(h.counters.per_type) {
            col.push(to_i64(v)?);
        }
        self.z.push(to_i64(h.z_number)?);
        self.time.push(h.time_ms);
        Ok(())
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
            heads: Mutex::new(std::collections::HashMap::new()),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), LedgerError> {
        self.pool.with(|c| Self::migrate_on(&mut c.client))?
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
                c.client
                    .query_one("SELECT COALESCE(MAX(version), 0) FROM ledger_schema", &[])
                    .and_then(|r| r.try_get(0))
            })?
            .map_err(unavailable)?;
        u32::try_from(v).map_err(corrupt)
    }

    /// The single-statement path. Returns the settled results (indexed
    /// like `entries`) and the indices left for the locking path, or
    /// `None` when it does not apply.
    #[allow(clippy::type_complexity)]
    fn fast_path(
        &self,
        conn: &mut PgConn,
        entries: &[Entry],
    ) -> Option<(Vec<Option<Result<Head, LedgerError>>>, Vec<usize>)> {
        let start: Vec<Head> = {
            let cache = self.heads.lock().ok()?;
            let mut outlets: Vec<&str> = entries.iter().map(|e| e.outlet.as_str()).collect();
            outlets.sort_unstable();
            outlets.dedup();
            outlets
                .iter()
                .map(|o| cache.get(*o).cloned())
                .collect::<Option<Vec<_>>>()?
        };
        // Every entry must continue the expected heads, with no key twice.
        let mut heads = start.clone();
        for (i, e) in entries.iter().enumerate() {
            let slot = heads.iter().position(|h| h.outlet == e.outlet)?;
            if clash(&entries[..i], e).is_some() {
                return None;
            }
            heads[slot] = check_append(&heads[slot], e).ok()?;
        }
        let build = || -> Result<(HeadColumns, Vec<i64>, Vec<Vec<u8>>, EntryColumns, IndexColumns), LedgerError> {
            let mut h = HeadColumns::default();
            let mut exp_seq = Vec::new();
            let mut exp_hash = Vec::new();
            for (old, new) in start.iter().zip(&heads) {
                h.push(new)?;
                exp_seq.push(to_i64(old.seq)?);
                exp_hash.push(old.hash.to_vec());
            }
            let (c, ix) = columns(entries)?;
            Ok((h, exp_seq, exp_hash, c, ix))
        };
        let (h, exp_seq, exp_hash, c, ix) = build().ok()?;
        let st = conn.stmt(SQL_FAST_BATCH).ok()?;
        // One statement in autocommit: atomic on its own, one round trip.
        let rows = conn
            .client
            .query(
                &st,
                &[
                    &h.outlet, &exp_seq, &exp_hash, &h.seq, &h.hash, &h.year, &h.total, &h.c[0],
                    &h.c[1], &h.c[2], &h.c[3], &h.c[4], &h.c[5], &h.z, &h.time, &c.outlet, &c.seq,
                    &c.kind, &c.year, &c.time, &c.itype, &c.total, &c.tcount, &c.z, &c.prev,
                    &c.hash, &c.header, &c.payload, &ix.name, &ix.value, &ix.outlet, &ix.seq,
                    &ix.unique,
                ],
            )
            .ok()?;
        let written: Vec<String> = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
        // Results for the outlets whose expected head held; the others
        // (another instance moved them) go to the locking path.
        let mut results = vec![None; entries.len()];
        let mut rest = Vec::new();
        let mut running = start;
        for (i, e) in entries.iter().enumerate() {
            if written.contains(&e.outlet) {
                let slot = running.iter().position(|h| h.outlet == e.outlet)?;
                running[slot] = running[slot].advance(e);
                results[i] = Some(Ok(running[slot].clone()));
            } else {
                rest.push(i);
            }
        }
        Some((results, rest))
    }

    /// The connection pool (other stores of the server share the database).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn try_batch(
        tx: &mut Transaction<'_>,
        st: &Stmts,
        entries: &[Entry],
        precheck: bool,
    ) -> Result<Vec<Result<Head, LedgerError>>, BatchError> {
        // Lock every head the batch touches, in outlet order (no cycles
        // between concurrent batches). An outlet without a head row gets
        // its genesis row first.
        let mut outlets: Vec<String> = entries.iter().map(|e| e.outlet.clone()).collect();
        outlets.sort_unstable();
        outlets.dedup();
        let mut rows = tx.query(&st.lock_heads, &[&outlets])?;
        if rows.len() < outlets.len() {
            let genesis: Vec<Vec<u8>> = outlets.iter().map(|o| genesis_hash(o).to_vec()).collect();
            tx.execute(
                &st.insert_heads,
                &[&outlets, &genesis, &i32::MIN, &i64::MIN],
            )?;
            rows = tx.query(&st.lock_heads, &[&outlets])?;
        }
        let mut heads: Vec<(Head, bool)> = Vec::with_capacity(rows.len());
        for r in &rows {
            let outlet: String = r.try_get(12).map_err(corrupt)?;
            heads.push((head_from(&outlet, r)?, false));
        }
        // Unique keys already taken. Optimistic: only on a retry after a
        // unique violation (the first attempt lets the index refuse).
        let mut taken: Vec<(String, String, String, u64)> = Vec::new();
        if precheck {
            let mut names = Vec::new();
            let mut values = Vec::new();
            for e in entries {
                for k in e.index.iter().filter(|k| k.unique) {
                    names.push(k.name.clone());
                    values.push(k.value.clone());
                }
            }
            for r in tx.query(&st.taken, &[&names, &values])? {
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
                let duplicate = |k: &crate::entry::IndexKey, outlet: &str, seq: u64| {
                    Err(LedgerError::Duplicate {
                        name: k.name.clone(),
                        value: k.value.clone(),
                        outlet: outlet.to_owned(),
                        seq,
                    })
                };
                for k in e.index.iter().filter(|k| k.unique) {
                    if let Some((_, _, o, s)) = taken
                        .iter()
                        .find(|(n, v, _, _)| *n == k.name && *v == k.value)
                    {
                        return duplicate(k, o, *s);
                    }
                }
                // Or taken earlier in this same batch.
                if let Some((a, k)) = clash(accepted.iter().copied(), e) {
                    return duplicate(k, &a.outlet, a.seq);
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
        if !accepted.is_empty() {
            // One statement for all the entries, one for all index keys.
            let (c, ix) = columns(accepted.iter().copied())?;
            tx.execute(
                &st.insert_entries,
                &[
                    &c.outlet, &c.seq, &c.kind, &c.year, &c.time, &c.itype, &c.total, &c.tcount,
                    &c.z, &c.prev, &c.hash, &c.header, &c.payload,
                ],
            )?;
            if !ix.name.is_empty() {
                tx.execute(
                    &st.insert_index,
                    &[&ix.name, &ix.value, &ix.outlet, &ix.seq, &ix.unique],
                )?;
            }
            let mut h = HeadColumns::default();
            for (head, changed) in &heads {
                if *changed {
                    h.push(head)?;
                }
            }
            tx.execute(
                &st.update_heads,
                &[
                    &h.outlet, &h.seq, &h.hash, &h.year, &h.total, &h.c[0], &h.c[1], &h.c[2],
                    &h.c[3], &h.c[4], &h.c[5], &h.z, &h.time,
                ],
            )?;
        }
        Ok(results)
    }

    fn append_on(conn: &mut PgConn, entries: &[Entry]) -> Vec<Result<Head, LedgerError>> {
        let fail_all = |e: LedgerError| entries.iter().map(|_| Err(e.clone())).collect();
        let st = match Stmts::prepare(conn) {
            Ok(s) => s,
            Err(e) => return fail_all(unavailable(e)),
        };
        let mut last = None;
        let mut precheck = false;
        for _ in 0..MAX_RETRIES {
            let mut tx = match conn.client.transaction() {
                Ok(tx) => tx,
                Err(e) => {
                    conn.broken |= gone(&e);
                    return fail_all(unavailable(e));
                }
            };
            match Self::try_batch(&mut tx, &st, entries, precheck) {
                Ok(results)
                    if !precheck
                        && results.iter().zip(entries).any(|(r, e)| {
                            matches!(r, Err(LedgerError::Conflict { .. }))
                                && e.index.iter().any(|k| k.unique)
                        }) =>
                {
                    // A refused entry's keys may be taken too, and a
                    // duplicate must be reported as such even when it also
                    // lost the race: check the keys this time.
                    precheck = true;
                    drop(tx);
                }
                Ok(results) => {
                    // One commit for the batch; nothing is reported
                    // appended before it returns.
                    return match tx.commit() {
                        Ok(()) => results,
                        Err(e) if retryable(&e) => {
                            precheck |= e.code() == Some(&SqlState::UNIQUE_VIOLATION);
                            last = Some(e.to_string());
                            continue;
                        }
                        Err(e) => {
                            // A refused COMMIT rolled back; a connection
                            // lost during it leaves the outcome unknown
                            // (the caller's next compare-and-swap or key
                            // check against the chain settles it).
                            let e = if gone(&e) {
                                conn.broken = true;
                                unavailable(format!(
                                    "connection lost during commit, the batch may or may not be written: {e}"
                                ))
                            } else {
                                unavailable(format!("commit failed, batch not written: {e}"))
                            };
                            results.into_iter().map(|r| r.and(Err(e.clone()))).collect()
                        }
                    };
                }
                Err(BatchError::Retry(e)) => {
                    // Rolled back on drop. A unique violation means a key
                    // is taken (perhaps by another instance just now): the
                    // next attempt checks keys first, to say which.
                    precheck |= e.code() == Some(&SqlState::UNIQUE_VIOLATION);
                    last = Some(e.to_string());
                }
                Err(BatchError::Fatal(e)) => return fail_all(e),
                Err(BatchError::Gone(e)) => {
                    conn.broken = true;
                    return fail_all(e);
                }
            }
        }
        fail_all(unavailable(format!(
            "gave up after {MAX_RETRIES} retries: {}",
            last.unwrap_or_default()
        )))
    }

    /// Runs a read. A read that failed because its connection was gone
    /// (dropped by the server while idle in the pool) runs once more on a
    /// new connection: reads change nothing, so this is always safe, and a
    /// database restart then costs no failed request. (Writes are not
    /// retried here: an error after the statement was sent leaves unknown
    /// whether it committed, which the caller settles through the chain's
    /// compare-and-swap and the unique keys.)
    fn read<T>(
        &self,
        sql: &'static str,
        f: impl Fn(&mut Client, &postgres::Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, LedgerError> {
        let attempt = || {
            self.pool.with(|c| {
                c.stmt(sql)
                    .and_then(|st| f(&mut c.client, &st))
                    .map_err(|e| {
                        c.broken |= gone(&e);
                        let dead = c.broken || c.client.is_closed();
                        (e, dead)
                    })
            })
        };
        match attempt()? {
            Ok(v) => Ok(v),
            Err((_, true)) => attempt()?.map_err(|(e, _)| unavailable(e)),
            Err((e, false)) => Err(unavailable(e)),
        }
    }
}

const SQL_HEAD: &str = "SELECT seq, hash, fiscal_year, total, c_fv, c_ft, c_fa, c_ev, c_et, c_ea, \
     z_number, time_ms FROM ledger_heads WHERE outlet = $1";
const SQL_ENTRY: &str = "SELECT outlet, seq, kind, fiscal_year, time_ms, invoice_type, total_counter, \
     type_counter, z_number, prev_hash, entry_hash, header, payload FROM ledger_entries \
     WHERE outlet = $1 AND seq = $2";
const SQL_BY_NUMBER: &str = "SELECT outlet, seq, kind, fiscal_year, time_ms, invoice_type, \
     total_counter, type_counter, z_number, prev_hash, entry_hash, header, payload \
     FROM ledger_entries WHERE outlet = $1 AND fiscal_year = $2 AND total_counter = $3";
const SQL_RANGE: &str = "SELECT outlet, seq, kind, fiscal_year, time_ms, invoice_type, total_counter, \
     type_counter, z_number, prev_hash, entry_hash, header, payload FROM ledger_entries \
     WHERE outlet = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq";
const SQL_PAGE: &str = "SELECT outlet, seq, kind, fiscal_year, time_ms, invoice_type, total_counter, \
     type_counter, z_number, prev_hash, entry_hash, header, payload FROM ledger_entries \
     WHERE outlet = $1 AND seq >= $2 ORDER BY seq LIMIT $3";
/// One branch per partial index (a unique key's row is in one, a
/// repeatable key's rows in the other), each an index probe on both columns.
const SQL_FIND: &str = "SELECT outlet, seq, id FROM ledger_index \
     WHERE name = $1 AND value = $2 AND is_unique \
     UNION ALL SELECT outlet, seq, id FROM ledger_index \
     WHERE name = $1 AND value = $2 AND NOT is_unique ORDER BY id";
/// The fast path: compare-and-swap every head (seq and hash as this
/// process expects them) and insert the entries and index keys of the
/// outlets whose head held, in one statement. Under READ COMMITTED an
/// UPDATE that meets a row another transaction is changing waits for it
/// and re-checks its WHERE on the new version, so a head moved meanwhile
/// simply does not match, and nothing of that outlet is written.
const SQL_FAST_BATCH: &str = "WITH h AS (
    UPDATE ledger_heads t SET seq = u.seq, hash = u.hash, fiscal_year = u.y, total = u.t,
        c_fv = u.a, c_ft = u.b, c_fa = u.c, c_ev = u.d, c_et = u.e, c_ea = u.f,
        z_number = u.z, time_ms = u.tm
    FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::int8[], $5::bytea[], $6::int4[], $7::int8[],
        $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[])
        AS u(outlet, exp_seq, exp_hash, seq, hash, y, t, a, b, c, d, e, f, z, tm)
    WHERE t.outlet = u.outlet AND t.seq = u.exp_seq AND t.hash = u.exp_hash
    RETURNING t.outlet
), ins AS (
    INSERT INTO ledger_entries (outlet, seq, kind, fiscal_year, time_ms, invoice_type,
        total_counter, type_counter, z_number, prev_hash, entry_hash, header, payload)
    SELECT x.* FROM unnest($16::text[], $17::int8[], $18::text[], $19::int4[], $20::int8[], $21::text[],
        $22::int8[], $23::int8[], $24::int8[], $25::bytea[], $26::bytea[], $27::bytea[], $28::bytea[])
        AS x(outlet, seq, kind, y, tm, it, tc, ty, z, prev, hash, header, payload)
    WHERE x.outlet IN (SELECT outlet FROM h)
    RETURNING 1
), ix AS (
    INSERT INTO ledger_index (name, value, outlet, seq, is_unique)
    SELECT k.* FROM unnest($29::text[], $30::text[], $31::text[], $32::int8[], $33::bool[])
        AS k(name, value, outlet, seq, u)
    WHERE k.outlet IN (SELECT outlet FROM h)
    RETURNING 1
)
SELECT outlet FROM h";
const SQL_OUTLETS: &str = "SELECT outlet FROM ledger_heads WHERE seq > 0 ORDER BY outlet";

impl LedgerStore for PgStore {
    fn head(&self, outlet: &str) -> Result<Head, LedgerError> {
        let row = self.read(SQL_HEAD, |c, st| c.query_opt(st, &[&outlet]))?;
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
        let out = self.pool.with(|conn| {
            // Fast path: one statement, no lock round trip, when this
            // process knows the heads; whatever it cannot settle (a head
            // moved by another instance, a taken key, a refused entry)
            // goes through the locking path.
            let (mut results, rest) = match self.fast_path(conn, entries) {
                Some(done) => done,
                None => (vec![None; entries.len()], (0..entries.len()).collect()),
            };
            if !rest.is_empty() {
                let subset: Vec<Entry> = rest.iter().map(|&i| entries[i].clone()).collect();
                for (i, r) in rest.into_iter().zip(Self::append_on(conn, &subset)) {
                    results[i] = Some(r);
                }
            }
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(unavailable("entry not settled"))))
                .collect::<Vec<_>>()
        });
        match out {
            Ok(r) => {
                if let Ok(mut cache) = self.heads.lock() {
                    for (e, r) in entries.iter().zip(&r) {
                        match r {
                            Ok(h) if h.seq == e.seq => {
                                cache.insert(h.outlet.clone(), h.clone());
                            }
                            _ => {
                                cache.remove(&e.outlet);
                            }
                        }
                    }
                }
                r
            }
            Err(e) => fail_all(e),
        }
    }

    fn entry(&self, outlet: &str, seq: u64) -> Result<Option<Entry>, LedgerError> {
        let s = to_i64(seq)?;
        self.read(SQL_ENTRY, |c, st| c.query_opt(st, &[&outlet, &s]))?
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
        self.read(SQL_BY_NUMBER, |c, st| {
            c.query_opt(st, &[&outlet, &fiscal_year, &t])
        })?
        .map(|r| entry_from(&r))
        .transpose()
    }

    fn range(&self, outlet: &str, from: u64, to: u64) -> Result<Vec<Entry>, LedgerError> {
        let (f, t) = (to_i64(from)?, to_i64(to.min(i64::MAX as u64))?);
        self.read(SQL_RANGE, |c, st| c.query(st, &[&outlet, &f, &t]))?
            .iter()
            .map(entry_from)
            .collect()
    }

    fn iter_from<'a>(&'a self, outlet: &str, from_seq: u64) -> EntryIter<'a> {
        let outlet = outlet.to_owned();
        paged_iter(from_seq, PAGE as usize, move |next| {
            let n = to_i64(next)?;
            self.read(SQL_PAGE, |c, st| c.query(st, &[&outlet, &n, &PAGE]))?
                .iter()
                .map(entry_from)
                .collect()
        })
    }

    fn find_index(&self, name: &str, value: &str) -> Result<Vec<(String, u64)>, LedgerError> {
        self.read(SQL_FIND, |c, st| c.query(st, &[&name, &value]))?
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
        self.read(SQL_OUTLETS, |c, st| c.query(st, &[]))?
            .iter()
            .map(|r| r.try_get(0).map_err(corrupt))
            .collect()
    }
}
