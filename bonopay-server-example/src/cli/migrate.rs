//! `bonopay migrate --to postgres://…`: moves a SQLite data directory (the
//! embedded default) into PostgreSQL, so a growing merchant can run
//! several instances over one database.
//!
//! What moves: every outlet's chain, entry by entry with its exact bytes
//! and its index keys (idempotency keys, authentication codes, credit-note
//! references, report numbers), appended through the PostgreSQL store's
//! compare-and-swap, so the target checks the chain as it receives it; the
//! DGI outbox with each invoice's upload state (nothing synced is sent
//! again); the API keys (hashes only) and outlets. Then the verifier walks
//! every chain in PostgreSQL (hashes, counters, every signature) and
//! compares it with the source byte for byte: headers, payloads and
//! hashes. The target must hold none of the outlets already; the source is
//! only read. Webhook subscriptions and delivery logs stay in `auth.db`.

use std::path::PathBuf;
use std::sync::Arc;

use bonopay_ledger::{LedgerStore, PgStore, SqliteStore, verify_store};
use bonopay_signer::SignatureCheck;
use serde_json::json;

use super::Failure;
use crate::datadir::DataDir;
use crate::server::auth::{ApiKey, ApiKeyStore};

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
    for o in &outlets {
        if dst.head(o).map_err(msg)?.seq > 0 {
            return Err(Failure::Message(format!(
                "outlet {o} already has entries in the target database: nothing was moved"
            )));
        }
    }

    // 1. The chains, with their index keys, in batches.
    let mut moved = 0u64;
    for o in &outlets {
        let head = src.head(o).map_err(msg)?;
        let mut next = 1;
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

    // 3. API keys and outlets.
    let auth = copy_auth(&dir.file(&dir.config.database.auth), &args.to)?;

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
        "outbox_items_moved": outbox,
        "api_keys_moved": auth.0,
        "outlets_registered": auth.1,
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
/// are, unclaimed, and the per-outlet cursors.
fn copy_outbox(ledger: &std::path::Path, url: &str) -> Result<u64, Failure> {
    let conn = rusqlite::Connection::open(ledger).map_err(msg)?;
    let has: bool = conn
        .query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'sync_outbox'",
            [],
            |r| r.get(0),
        )
        .map_err(msg)?;
    // Creates the target tables.
    drop(bonopay_sync::pg_outbox::PgOutbox::connect(url, "migrate", 1).map_err(msg)?);
    if !has {
        return Ok(0);
    }
    let mut pg = postgres::Client::connect(url, postgres::NoTls).map_err(msg)?;
    let mut tx = pg.transaction().map_err(msg)?;
    let mut stmt = conn
        .prepare(
            "SELECT outlet, seq, merchant_nif, sealed_at_ms, request, ours, state, uid, theirs,
                    confirmation, error, attempts, next_attempt_ms, updated_ms FROM sync_outbox",
        )
        .map_err(msg)?;
    let mut rows = stmt.query([]).map_err(msg)?;
    let mut n = 0u64;
    while let Some(r) = rows.next().map_err(msg)? {
        let get_s = |i| r.get::<_, String>(i).map_err(msg);
        let get_o = |i| r.get::<_, Option<String>>(i).map_err(msg);
        let get_i = |i| r.get::<_, i64>(i).map_err(msg);
        let attempts = i32::try_from(get_i(11)?).map_err(msg)?;
        tx.execute(
            "INSERT INTO sync_outbox (outlet, seq, merchant_nif, sealed_at_ms, request, ours, state,
               uid, theirs, confirmation, error, attempts, next_attempt_ms, updated_ms, change)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, nextval('sync_change_seq'))",
            &[
                &get_s(0)?,
                &get_i(1)?,
                &get_s(2)?,
                &get_i(3)?,
                &get_s(4)?,
                &get_s(5)?,
                &get_s(6)?,
                &get_o(7)?,
                &get_o(8)?,
                &get_o(9)?,
                &get_o(10)?,
                &attempts,
                &get_i(12)?,
                &get_i(13)?,
            ],
        )
        .map_err(msg)?;
        n += 1;
    }
    let mut cur = conn
        .prepare("SELECT outlet, seq FROM sync_cursor")
        .map_err(msg)?;
    let mut cursors = cur.query([]).map_err(msg)?;
    while let Some(r) = cursors.next().map_err(msg)? {
        let outlet: String = r.get(0).map_err(msg)?;
        let seq: i64 = r.get(1).map_err(msg)?;
        tx.execute(
            "INSERT INTO sync_cursor (outlet, seq) VALUES ($1, $2)
             ON CONFLICT (outlet) DO UPDATE SET seq = GREATEST(sync_cursor.seq, excluded.seq)",
            &[&outlet, &seq],
        )
        .map_err(msg)?;
    }
    tx.commit().map_err(msg)?;
    Ok(n)
}

/// Copies API keys (hashes, roles, bindings, revocation) and outlets.
fn copy_auth(auth: &std::path::Path, url: &str) -> Result<(u64, u64), Failure> {
    if !auth.exists() {
        return Ok((0, 0));
    }
    let conn = rusqlite::Connection::open(auth).map_err(msg)?;
    let dst: Arc<dyn ApiKeyStore> =
        Arc::new(crate::server::auth_pg::PgKeyStore::connect(url).map_err(msg)?);
    let mut outlets = 0;
    {
        let mut stmt = conn
            .prepare("SELECT id, merchant_nif, created_at FROM outlets ORDER BY rowid")
            .map_err(msg)?;
        let mut rows = stmt.query([]).map_err(msg)?;
        while let Some(r) = rows.next().map_err(msg)? {
            let o = crate::server::auth::Outlet {
                id: r.get(0).map_err(msg)?,
                merchant_nif: r.get(1).map_err(msg)?,
                created_at: r.get(2).map_err(msg)?,
            };
            dst.insert_outlet(&o).map_err(msg)?;
            outlets += 1;
        }
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
        let hash: Vec<u8> = r.get(1).map_err(msg)?;
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| Failure::Message("a stored key hash is not 32 bytes".into()))?;
        let role: String = r.get(3).map_err(msg)?;
        let bound: Option<String> = r.get(4).map_err(msg)?;
        let key = ApiKey {
            id: r.get(0).map_err(msg)?,
            merchant_nif: r.get(2).map_err(msg)?,
            role: role.parse().map_err(Failure::Message)?,
            outlets: bound
                .map(|b| serde_json::from_str::<Vec<String>>(&b))
                .transpose()
                .map_err(msg)?,
            label: r.get(5).map_err(msg)?,
            created_at: r.get(6).map_err(msg)?,
            revoked: false,
        };
        dst.insert_key(&key, &hash).map_err(msg)?;
        if r.get::<_, i64>(7).map_err(msg)? != 0 {
            dst.revoke_key(&key.merchant_nif, &key.id).map_err(msg)?;
        }
        keys += 1;
    }
    Ok((keys, outlets))
}
