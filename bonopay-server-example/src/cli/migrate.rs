//! `bonopay migrate --to postgres://…`: moves a SQLite data directory (the
//! embedded default) into PostgreSQL, so a growing merchant can run
//! several instances over one database.
//!
//! What moves: every outlet's chain, entry by entry with its exact bytes
//! and its index keys (idempotency keys, authentication codes, credit-note
//! references, report numbers), appended through the PostgreSQL store's
//! compare-and-swap, so the target checks the chain as it receives it; the
//! DGI outbox with each invoice's upload state (nothing synced is sent
//! again); the API keys (hashes only, revoked ones revoked) and outlets
//! ([`copy_auth`]: one transaction, idempotent); the webhook subscribers
//! (with their secrets), events, deliveries with their states and due
//! times, attempt logs and per-outlet cursors, and the receipt delivery
//! log ([`copy_webhooks_and_deliveries`]: one transaction, idempotent).
//! Then the verifier walks every chain in PostgreSQL (hashes, counters,
//! every signature) and compares it with the source byte for byte:
//! headers, payloads and hashes. The source is only read.
//!
//! **Run again after a failure, or to catch up.** Every step is
//! idempotent: a chain resumes after the prefix the target already holds
//! (checked to be the source's own), and rows copied before are left as
//! they are. A target whose chain differs from the source's is refused
//! before anything is written; keys that differ fail their own step, which
//! then writes nothing.

use std::path::PathBuf;

use bonopay_ledger::{LedgerStore, PgStore, SqliteStore, verify_store};
use bonopay_signer::SignatureCheck;
use serde_json::json;

use super::Failure;
use crate::datadir::DataDir;
use crate::server::auth::Role;

/// Options of `bonopay migrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SQLite data directory. Defaults to `$BONOPAY_DATA_DIR` or
    /// `./bonopay-data`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The PostgreSQL URL to move into (or `$BONOPAY_MIGRATE_TO`, which
    /// keeps a password off the command line).
    #[arg(long, env = "BONOPAY_MIGRATE_TO", hide_env_values = true)]
    pub to: String,
}

fn msg(e: impl std::fmt::Display) -> Failure {
    Failure::Message(e.to_string())
}

/// Moves the data directory into PostgreSQL and verifies it.
///
/// # Errors
/// [`Failure::Message`] when a store fails or the target is not empty;
/// [`Failure::Broken`] when the moved chains do not verify or differ.
pub fn run(args: &Args) -> Result<String, Failure> {
    let path = DataDir::resolve(args.data_dir.as_deref());
    let ledger_path = path.join("ledger.db");
    if !ledger_path.exists() {
        return Err(Failure::Message(format!("no ledger in {}", path.display())));
    }
    let dir = DataDir::open_or_init(&path).map_err(Failure::Message)?;
    if dir.config.database.url.is_some() {
        return Err(Failure::Message(
            "this data directory already uses PostgreSQL (database.url)".into(),
        ));
    }
    let src = SqliteStore::open(dir.file(&dir.config.database.ledger)).map_err(msg)?;
    let dst = PgStore::connect(&args.to, 4).map_err(msg)?;
    let outlets = src.outlets().map_err(msg)?;
    // Where each chain resumes: a target that already holds a prefix of
    // the source's chain (an earlier run that stopped part way, or one
    // made before the source sealed more) continues after it. The prefix
    // is the source's exactly when the target's head hash is the source
    // entry's hash at that seq (each hash covers every entry before it;
    // the verification below walks it all again). Anything else is
    // refused before anything is written.
    let mut resume = Vec::with_capacity(outlets.len());
    let mut already = 0u64;
    for o in &outlets {
        let there = dst.head(o).map_err(msg)?;
        if there.seq > 0 {
            let same = src
                .entry(o, there.seq)
                .map_err(msg)?
                .is_some_and(|e| e.entry_hash == there.hash);
            if !same {
                return Err(Failure::Message(format!(
                    "outlet {o} holds other entries in the target database (its entry {} is not the source's): nothing was moved",
                    there.seq
                )));
            }
            already += there.seq;
        }
        resume.push(there.seq + 1);
    }

    // 1. The chains, with their index keys, in batches.
    let mut moved = 0u64;
    for (o, from) in outlets.iter().zip(resume) {
        let head = src.head(o).map_err(msg)?;
        let mut next = from;
        while next <= head.seq {
            let to = (next + 499).min(head.seq);
            let mut batch = src.range(o, next, to).map_err(msg)?;
            let mut keys = src
                .index_keys(o, next, to)
                .map_err(msg)?
                .into_iter()
                .peekable();
            for e in &mut batch {
                while let Some((seq, _)) = keys.peek() {
                    if *seq != e.seq {
                        break;
                    }
                    if let Some((_, k)) = keys.next() {
                        e.index.push(k);
                    }
                }
            }
            for (e, r) in batch.iter().zip(dst.append_batch(&batch)) {
                r.map_err(|err| Failure::Message(format!("outlet {o} entry {}: {err}", e.seq)))?;
            }
            moved += batch.len() as u64;
            next = to + 1;
        }
    }

    // 2. The outbox, state and all.
    let outbox = copy_outbox(&dir.file(&dir.config.database.ledger), &args.to)?;

    // 3. API keys and outlets; webhooks and receipt deliveries.
    let auth = copy_auth(&dir.file(&dir.config.database.auth), &args.to)?;
    let extras = copy_webhooks_and_deliveries(&dir.file(&dir.config.database.auth), &args.to)?;

    // 4. Verify in PostgreSQL, and compare with the source byte for byte.
    let check = SignatureCheck::new(dir.trusted_keys().map_err(Failure::Message)?);
    let mut reports = Vec::new();
    let mut ok = true;
    for o in &outlets {
        let r = verify_store(&dst, o, &check);
        let mut same = r.is_valid();
        let mut diff = None;
        if same {
            let mut a = src.iter_from(o, 1);
            let mut b = dst.iter_from(o, 1);
            loop {
                match (a.next(), b.next()) {
                    (None, None) => break,
                    (Some(Ok(x)), Some(Ok(y)))
                        if x.header == y.header
                            && x.payload == y.payload
                            && x.entry_hash == y.entry_hash
                            && x.prev_hash == y.prev_hash => {}
                    (x, _) => {
                        same = false;
                        diff = Some(x.map_or(0, |e| e.map_or(0, |e| e.seq)));
                        break;
                    }
                }
            }
        }
        ok &= same;
        reports.push(json!({
            "outlet": o,
            "entries": r.verified,
            "head_hash": hex::encode(r.head.hash),
            "verified": r.is_valid(),
            "identical_to_source": same,
            "first_difference_seq": diff,
            "error": r.error.map(|e| e.to_string()),
        }));
    }
    let text = serde_json::to_string_pretty(&json!({
        "valid": ok,
        "entries_moved": moved,
        "entries_already_there": already,
        "outbox_items_moved": outbox,
        "api_keys_moved": auth.0,
        "outlets_registered": auth.1,
        "webhooks_moved": extras.webhooks_json(),
        "receipt_deliveries_moved": extras.receipt_deliveries,
        "outlets": reports,
        "next": "set database.url (or BONOPAY_DATABASE_URL) to the target and restart bonopay serve",
    }))
    .map_err(msg)?
        + "\n";
    if ok {
        Ok(text)
    } else {
        Err(Failure::Broken(text))
    }
}

/// Copies the SQLite outbox rows (if the directory ever synced) as they
/// are, unclaimed, and the per-outlet cursors; rows an earlier run copied
/// are left as they are (not counted).
fn copy_outbox(ledger: &std::path::Path, url: &str) -> Result<u64, Failure> {
    let conn = rusqlite::Connection::open(ledger).map_err(msg)?;
    let has = has_table(&conn, "sync_outbox")?;
    // Creates the target tables.
    drop(bonopay_sync::dgi::outbox::postgres::PgOutbox::connect(url, "migrate", 1).map_err(msg)?);
    if !has {
        return Ok(0);
    }
    let mut pg = postgres::Client::connect(url, postgres::NoTls).map_err(msg)?;
    let mut tx = pg.transaction().map_err(msg)?;
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
            Ok(Some(vec![
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
            ]))
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
    tx.commit().map_err(msg)?;
    Ok(n)
}

/// Parameters of one PostgreSQL statement, made of one SQLite row.
type Params = Vec<Box<dyn postgres::types::ToSql + Sync>>;

/// Runs `insert` (prepared once, in `tx`) with the parameters `params`
/// makes of every row `select` reads from `conn` (`None` skips the row);
/// the number of rows the inserts wrote. SQLite's conversions check the
/// values (an integer too large for the target's `INTEGER` is an error,
/// not a wrap).
fn copy_rows(
    conn: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
    select: &str,
    insert: &str,
    mut params: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<Option<Params>>,
) -> Result<u64, Failure> {
    let insert = tx.prepare(insert).map_err(msg)?;
    let mut select = conn.prepare(select).map_err(msg)?;
    let mut rows = select.query([]).map_err(msg)?;
    let mut n = 0;
    while let Some(r) = rows.next().map_err(msg)? {
        let Some(values) = params(r).map_err(msg)? else {
            continue;
        };
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values.iter().map(|v| &**v).collect();
        n += tx.execute(&insert, &refs).map_err(msg)?;
    }
    Ok(n)
}

/// One API key row as both stores hold it.
#[derive(Debug, PartialEq, Eq)]
struct KeyRow {
    id: String,
    hash: Vec<u8>,
    merchant_nif: String,
    role: String,
    outlets: Option<Vec<String>>,
    label: Option<String>,
    created_at: String,
    revoked: bool,
}

/// Copies the API keys (hashes, roles, bindings, revocation) and the
/// registered outlets of `auth` into the PostgreSQL key store at `url`,
/// in one transaction: a failure copies nothing, and a revoked key is
/// written revoked (never active, not even for an instant). A row an
/// earlier run copied is left alone if it is the same, and refused if it
/// differs (the same id would stand for another key). Returns (keys,
/// outlets) inserted.
///
/// # Errors
/// [`Failure::Message`] when a store fails, a stored row is malformed, or
/// an id stands for something else in the target.
pub fn copy_auth(auth: &std::path::Path, url: &str) -> Result<(u64, u64), Failure> {
    if !auth.exists() {
        return Ok((0, 0));
    }
    let conn = rusqlite::Connection::open(auth).map_err(msg)?;
    // Creates the target tables (the store's migrations).
    drop(crate::server::auth::postgres::PgKeyStore::connect(url).map_err(msg)?);
    let mut pg = postgres::Client::connect(url, postgres::NoTls).map_err(msg)?;
    let mut tx = pg.transaction().map_err(msg)?;

    let mut outlets = 0;
    let mut stmt = conn
        .prepare("SELECT id, merchant_nif, created_at FROM outlets ORDER BY rowid")
        .map_err(msg)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(msg)?;
    for row in rows {
        let (id, nif, created) = row.map_err(msg)?;
        let n = tx
            .execute(
                "INSERT INTO auth_outlets (id, merchant_nif, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
                &[&id, &nif, &created],
            )
            .map_err(msg)?;
        if n == 0 {
            let there = tx
                .query_one(
                    "SELECT merchant_nif, created_at FROM auth_outlets WHERE id = $1",
                    &[&id],
                )
                .map_err(msg)?;
            let there: (String, String) = (
                there.try_get(0).map_err(msg)?,
                there.try_get(1).map_err(msg)?,
            );
            if there != (nif, created) {
                return Err(Failure::Message(format!(
                    "outlet {id} is registered differently in the target: nothing of the keys was copied"
                )));
            }
        }
        outlets += n;
    }

    let mut keys = 0;
    let mut stmt = conn
        .prepare(
            "SELECT id, token_hash, merchant_nif, role, outlets, label, created_at, revoked
             FROM api_keys ORDER BY rowid",
        )
        .map_err(msg)?;
    let mut rows = stmt.query([]).map_err(msg)?;
    while let Some(r) = rows.next().map_err(msg)? {
        let id: String = r.get(0).map_err(msg)?;
        let malformed = |why: String| {
            Failure::Message(format!(
                "API key {id} is malformed in the source ({why}): nothing of the keys was copied"
            ))
        };
        let hash: Vec<u8> = r.get(1).map_err(msg)?;
        if hash.len() != 32 {
            return Err(malformed(format!(
                "its hash is {} bytes, not 32",
                hash.len()
            )));
        }
        let role = r
            .get::<_, String>(3)
            .map_err(msg)?
            .parse::<Role>()
            .map_err(malformed)?;
        let bound = r
            .get::<_, Option<String>>(4)
            .map_err(msg)?
            .map(|b| serde_json::from_str::<Vec<String>>(&b))
            .transpose()
            .map_err(|e| malformed(format!("its outlet list: {e}")))?;
        let key = KeyRow {
            id: id.clone(),
            hash,
            merchant_nif: r.get(2).map_err(msg)?,
            role: role.as_str().to_owned(),
            outlets: bound,
            label: r.get(5).map_err(msg)?,
            created_at: r.get(6).map_err(msg)?,
            revoked: r.get::<_, i64>(7).map_err(msg)? != 0,
        };
        let n = tx
            .execute(
                "INSERT INTO auth_keys
                     (id, token_hash, merchant_nif, role, outlets, label, created_at, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                &[
                    &key.id,
                    &key.hash,
                    &key.merchant_nif,
                    &key.role,
                    &key.outlets,
                    &key.label,
                    &key.created_at,
                    &key.revoked,
                ],
            )
            .map_err(msg)?;
        if n == 0 {
            let t = tx
                .query_one(
                    "SELECT id, token_hash, merchant_nif, role, outlets, label, created_at, revoked
                     FROM auth_keys WHERE id = $1",
                    &[&key.id],
                )
                .map_err(msg)?;
            let there = KeyRow {
                id: t.try_get(0).map_err(msg)?,
                hash: t.try_get(1).map_err(msg)?,
                merchant_nif: t.try_get(2).map_err(msg)?,
                role: t.try_get(3).map_err(msg)?,
                outlets: t.try_get(4).map_err(msg)?,
                label: t.try_get(5).map_err(msg)?,
                created_at: t.try_get(6).map_err(msg)?,
                revoked: t.try_get(7).map_err(msg)?,
            };
            if there != key {
                return Err(Failure::Message(format!(
                    "API key {id} differs in the target (another key, or revoked on one side only): nothing of the keys was copied"
                )));
            }
        }
        keys += n;
    }
    drop(rows);
    tx.commit().map_err(msg)?;
    Ok((keys, outlets))
}

/// What [`copy_webhooks_and_deliveries`] inserted (rows already in the
/// target are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopiedExtras {
    /// Webhook subscribers (deleted ones too: their logs stay readable to
    /// no one, but their deliveries refer to them).
    pub subscribers: u64,
    /// Webhook events.
    pub events: u64,
    /// Webhook deliveries.
    pub deliveries: u64,
    /// Logged webhook attempts.
    pub attempts: u64,
    /// Per-outlet producer cursors (inserted or moved forward).
    pub cursors: u64,
    /// Receipt delivery records.
    pub receipt_deliveries: u64,
}

impl CopiedExtras {
    fn webhooks_json(&self) -> serde_json::Value {
        json!({
            "subscribers": self.subscribers,
            "events": self.events,
            "deliveries": self.deliveries,
            "attempts": self.attempts,
            "cursors": self.cursors,
        })
    }
}

fn has_table(conn: &rusqlite::Connection, name: &str) -> Result<bool, Failure> {
    conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )
    .map_err(msg)
}

/// Copies the webhook tables (subscribers, events, deliveries, attempts,
/// cursors) and the receipt deliveries of the SQLite `auth` database into
/// PostgreSQL at `url`, creating the target tables first.
///
/// **Atomic**: one PostgreSQL transaction; a failure copies nothing.
/// **Idempotent**: a row already in the target (same subscriber id, event
/// id, (event, subscriber) delivery, receipt delivery id) is left as it
/// is, so a second run copies nothing more. Deliveries get new ids in the
/// target (its identity column), and their attempts follow them; the
/// attempts of a delivery that was already there are not copied again. A
/// cursor only moves forward. The source is only read.
///
/// # Errors
/// [`Failure::Message`] when either database fails (nothing is copied).
pub fn copy_webhooks_and_deliveries(
    auth: &std::path::Path,
    url: &str,
) -> Result<CopiedExtras, Failure> {
    let mut n = CopiedExtras::default();
    if !auth.exists() {
        return Ok(n);
    }
    // Creates (migrates) the target tables.
    drop(
        crate::server::webhooks::postgres::PgWebhookStore::connect_with_pool_size(url, 1)
            .map_err(msg)?,
    );
    drop(
        crate::server::deliveries::postgres::PgDeliveryStore::connect_with_pool_size(url, 1)
            .map_err(msg)?,
    );
    let conn = rusqlite::Connection::open(auth).map_err(msg)?;
    let mut pg = postgres::Client::connect(url, postgres::NoTls).map_err(msg)?;
    let mut tx = pg.transaction().map_err(msg)?;
    let text = |r: &rusqlite::Row<'_>, i| r.get::<_, String>(i);

    if has_table(&conn, "webhook_subscribers")? {
        n.subscribers = copy_rows(
            &conn,
            &mut tx,
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
    if has_table(&conn, "webhook_events")? {
        n.events = copy_rows(
            &conn,
            &mut tx,
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
    if has_table(&conn, "webhook_deliveries")? && has_table(&conn, "webhook_attempts")? {
        // Deliveries get the target's ids: source id -> target id, for the
        // deliveries inserted now (the others' attempts are there already).
        let mut ids = std::collections::HashMap::new();
        let insert = tx
            .prepare(
                "INSERT INTO webhook_deliveries
                     (event_id, subscriber_id, state, attempts, next_attempt_ms, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (event_id, subscriber_id) DO NOTHING RETURNING id",
            )
            .map_err(msg)?;
        let mut st = conn
            .prepare(
                "SELECT id, event_id, subscriber_id, state, attempts, next_attempt_ms, created_at
                 FROM webhook_deliveries ORDER BY id",
            )
            .map_err(msg)?;
        let mut rows = st.query([]).map_err(msg)?;
        while let Some(r) = rows.next().map_err(msg)? {
            let inserted = tx
                .query_opt(
                    &insert,
                    &[
                        &text(r, 1).map_err(msg)?,
                        &text(r, 2).map_err(msg)?,
                        &text(r, 3).map_err(msg)?,
                        &r.get::<_, i32>(4).map_err(msg)?,
                        &r.get::<_, Option<i64>>(5).map_err(msg)?,
                        &text(r, 6).map_err(msg)?,
                    ],
                )
                .map_err(msg)?;
            if let Some(row) = inserted {
                let id: i64 = r.get(0).map_err(msg)?;
                ids.insert(id, row.try_get::<_, i64>(0).map_err(msg)?);
                n.deliveries += 1;
            }
        }
        n.attempts = copy_rows(
            &conn,
            &mut tx,
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
    if has_table(&conn, "webhook_cursors")? {
        n.cursors = copy_rows(
            &conn,
            &mut tx,
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
    if has_table(&conn, "deliveries")? {
        n.receipt_deliveries = copy_rows(
            &conn,
            &mut tx,
            "SELECT id, invoice_id, merchant_nif, channel, recipient, status, error,
                    created_at, completed_at
             FROM deliveries ORDER BY rowid",
            "INSERT INTO receipt_deliveries (id, invoice_id, merchant_nif, channel, recipient,
                 status, error, created_at, completed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            |r| {
                Ok(Some(vec![
                    Box::new(text(r, 0)?),
                    Box::new(text(r, 1)?),
                    Box::new(text(r, 2)?),
                    Box::new(text(r, 3)?),
                    Box::new(text(r, 4)?),
                    Box::new(text(r, 5)?),
                    Box::new(r.get::<_, Option<String>>(6)?),
                    Box::new(text(r, 7)?),
                    Box::new(text(r, 8)?),
                ]))
            },
        )?;
    }
    tx.commit().map_err(msg)?;
    Ok(n)
}
