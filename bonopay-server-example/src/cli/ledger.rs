//! `bonopay ledger verify`: walk every outlet's chain in a data directory,
//! checking hashes, counters and every signature.

use std::path::PathBuf;

use bonopay_ledger::{LedgerStore, verify_store};
use bonopay_signer::SignatureCheck;
use serde_json::json;

use super::Failure;
use crate::datadir::DataDir;

/// Options of `bonopay ledger verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory. Defaults to `$BONOPAY_DATA_DIR` or `./bonopay-data`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The PostgreSQL ledger of a scale-out deployment (default:
    /// `BONOPAY_DATABASE_URL`, else `database.url` in `config.json`, else
    /// the data directory's SQLite ledger).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Only this outlet (default: all).
    #[arg(long)]
    pub outlet: Option<String>,
}

/// Verifies and returns a JSON report; a broken chain is a
/// [`Failure::Broken`] carrying the same report.
///
/// # Errors
/// [`Failure::Message`] when the data directory cannot be opened;
/// [`Failure::Broken`] when a chain does not verify.
pub fn run(args: &Args) -> Result<String, Failure> {
    let path = DataDir::resolve(args.data_dir.as_deref());
    let dir =
        DataDir::open_existing(&path, args.database_url.as_deref()).map_err(Failure::Message)?;
    let check = SignatureCheck::new(dir.trusted_keys().map_err(Failure::Message)?);
    let outlets = match &args.outlet {
        Some(o) => vec![o.clone()],
        None => dir
            .store
            .outlets()
            .map_err(|e| Failure::Message(e.to_string()))?,
    };
    let mut reports = Vec::new();
    let mut ok = true;
    for outlet in outlets {
        let r = verify_store(&*dir.store, &outlet, &check);
        ok &= r.is_valid();
        reports.push(json!({
            "outlet": outlet,
            "valid": r.is_valid(),
            "entries_verified": r.verified,
            "head_hash": hex::encode(r.head.hash),
            "error": r.error.map(|e| e.to_string()),
        }));
    }
    let text = serde_json::to_string_pretty(&json!({ "valid": ok, "outlets": reports }))
        .map_err(|e| Failure::Message(e.to_string()))?
        + "\n";
    if ok {
        Ok(text)
    } else {
        Err(Failure::Broken(text))
    }
}
