//! `bonopay seal`: fiscalize one invoice on the embedded defaults.

use std::path::PathBuf;

use bonopay_signer::{SealError, Signer};
use serde_json::json;

use super::Failure;
use crate::datadir::DataDir;

/// Options of `bonopay seal`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory (created on first use). Defaults to `$BONOPAY_DATA_DIR`
    /// or `./bonopay-data`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The PostgreSQL ledger of a scale-out deployment (default:
    /// `BONOPAY_DATABASE_URL`, else `database.url` in `config.json`, else
    /// the data directory's SQLite ledger).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Idempotency key. Defaults to the SHA-256 of the canonical invoice, so
    /// sealing the same invoice twice returns the first seal.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// Seals the invoice in `stdin` and returns the result as JSON.
///
/// # Errors
/// [`Failure::Invalid`] for a refused invoice; [`Failure::Message`] for
/// anything else (storage, signer, data directory).
pub fn run(args: &Args, stdin: &str) -> Result<String, Failure> {
    let req = bonopay_core::parse_invoice(stdin)?;
    let dir = DataDir::open_or_init_with(
        &DataDir::resolve(args.data_dir.as_deref()),
        args.database_url.as_deref(),
    )
    .map_err(Failure::Message)?;
    if dir.created {
        eprintln!(
            "bonopay: created data directory {} (ledger, signing key {}, config)",
            dir.path.display(),
            dir.signer.public_key().key_id()
        );
    }
    let key = bonopay_core::IdempotencyKey::new(
        args.idempotency_key
            .clone()
            .unwrap_or_else(|| req.canonical_sha256()),
    )
    .map_err(|e| Failure::Invalid(bonopay_core::ValidationErrors(vec![e])))?;
    let fiscalizer = dir.fiscalizer().map_err(Failure::Message)?;
    let sealed = fiscalizer.seal(&req, &key).map_err(|e| match e {
        SealError::Invalid(v) => Failure::Invalid(v),
        other => Failure::Message(format!(
            "{other}{}",
            if other.is_retryable() {
                " (retryable)"
            } else {
                ""
            }
        )),
    })?;
    let body = sealed
        .invoice
        .body_value()
        .map_err(|e| Failure::Message(e.to_string()))?;
    // Sealed here, with no e-MCF: not a facture normalisée. The elements
    // printed are Bono Pay's own, and say so (docs/format.md §6, §10).
    let el = &sealed.invoice.elements;
    let rn = bonopay_signer::certification::sfe_number_of_sealed(&sealed.invoice);
    let out = json!({
        "replayed": sealed.replayed,
        "outlet": sealed.invoice.tuple.outlet,
        "seq": sealed.seq,
        "certification": {"mode": "none", "state": "not_certified", "rn": rn},
        "security_elements": {
            "issuer": "bonopay",
            "fiscal_number": el.fiscal_number,
            "fiscal_authority_id": el.fiscal_authority_id,
            "authentication_code": el.authentication_code,
            "authentication_code_display": el.authentication_code_display,
            "timestamp": el.timestamp,
            "qr": el.verification_qr,
        },
        "totals": body["tax"]["totals"],
        "dgi": body["tax"]["dgi"],
        "key_id": sealed.invoice.tuple.key_id,
        "prev_hash": sealed.prev_hash,
        "entry_hash": sealed.entry_hash,
    });
    serde_json::to_string_pretty(&out)
        .map(|s| s + "\n")
        .map_err(|e| Failure::Message(e.to_string()))
}
