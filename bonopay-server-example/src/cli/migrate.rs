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
    let outbox = bonopay_sync::dgi::outbox::postgres::import_sqlite(
        &dir.file(&dir.config.database.ledger),
        &args.to,
    )
    .map_err(msg)?;

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

/// Copies the webhook tables (subscribers, events, deliveries, attempts,
/// cursors) and the receipt deliveries of the SQLite `auth` database into
/// PostgreSQL at `url`, creating the target tables first. Each store
/// copies its own rows ([`crate::server::webhooks::postgres::import_sqlite`],
/// [`crate::server::deliveries::postgres::import_sqlite`]).
///
/// **Atomic**: one PostgreSQL transaction; a failure copies nothing.
/// **Idempotent**: rows already in the target are left as they are, so a
/// second run copies nothing more. The source is only read.
///
/// # Errors
/// [`Failure::Message`] when either database fails (nothing is copied).
pub fn copy_webhooks_and_deliveries(
    auth: &std::path::Path,
    url: &str,
) -> Result<CopiedExtras, Failure> {
    if !auth.exists() {
        return Ok(CopiedExtras::default());
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
    let w = crate::server::webhooks::postgres::import_sqlite(&conn, &mut tx).map_err(msg)?;
    let receipt_deliveries =
        crate::server::deliveries::postgres::import_sqlite(&conn, &mut tx).map_err(msg)?;
    tx.commit().map_err(msg)?;
    Ok(CopiedExtras {
        subscribers: w.subscribers,
        events: w.events,
        deliveries: w.deliveries,
        attempts: w.attempts,
        cursors: w.cursors,
        receipt_deliveries,
    })
}

/// For `bonopay migrate`: the API keys and registered outlets of `auth`
/// into the PostgreSQL key store at `url`
/// ([`crate::server::auth::postgres::import_sqlite`]: one transaction,
/// idempotent, a revoked key written revoked). Returns (keys, outlets)
/// inserted.
///
/// # Errors
/// [`Failure::Message`] naming what failed; nothing is copied.
pub fn copy_auth(auth: &std::path::Path, url: &str) -> Result<(u64, u64), Failure> {
    crate::server::auth::postgres::import_sqlite(auth, url).map_err(msg)
}
