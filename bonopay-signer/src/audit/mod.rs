//! The audit bundle: one self-contained, versioned export of an outlet's
//! ledger over a period, and its offline verifier.
//!
//! A bundle is UTF-8 JSON Lines (format `bonopay/audit-bundle/v1`,
//! specified in `docs/format.md`, "Audit bundle"):
//!
//! ```text
//! {"bundle": {format, outlet, time_zone, created, period, start, keys}}
//! {"entry": {seq, kind, prev_hash, entry_hash, header, payload}}     × n
//! {"end": {entries, head, sha256}}
//! ```
//!
//! - `start` is the chain head before the first entry. A bundle starts at
//!   the genesis or *at a Z report*, whose signed `closing_head` vouches for
//!   `start` (hash, counters, Z number): nothing about the start is taken
//!   on trust.
//! - `keys` are the public keys (SPKI PEM) that signed the entries, each
//!   with its key id.
//! - `end.sha256` is the SHA-256 of every byte before the `end` line, so
//!   truncation is caught even where the chain would not show it.
//!
//! Both halves are pure: `Exporter` (feature `sealing`, it reads a
//! [`bonopay_ledger::LedgerStore`]) yields the bytes, and [`Verifier`]
//! takes lines; the CLI and the server do the file and network I/O.
//!
//! The component is the offline verifier: it also holds [`SignatureCheck`]
//! (every seal and signed event of a store walk) and the certification
//! links both verifiers check. It reads the byte formats
//! (`crate::sealed`, [`crate::event`], [`crate::certification`]) and
//! recomputes reports with [`crate::reports`], and never imports the
//! sealing pipeline: `--no-default-features --features verifier` builds it
//! for wasm without the pipeline, the ledger backends or QR rendering.

use bonopay_ledger::{Hash, Head};
use serde_json::Value;

mod check;
#[cfg(feature = "sealing")]
mod export;
mod links;
mod verify;

pub use check::SignatureCheck;
#[cfg(feature = "sealing")]
pub use export::{ExportError, ExportRequest, Exporter};
pub use links::{CertificationLinks, InvoiceRef, check_link};
pub use verify::{BundleReport, Checked, Finding, Step, UnreadableBundle, Verifier};

/// The format name and version on the first line.
pub const BUNDLE_FORMAT: &str = "bonopay/audit-bundle/v1";

/// The head before a Z report, from its signed `closing_head`.
pub(crate) fn head_from_json(outlet: &str, v: &Value) -> Option<Head> {
    let hash: Hash = hex::decode(v["hash"].as_str()?).ok()?.try_into().ok()?;
    let seq = v["seq"].as_u64()?;
    if seq == 0 {
        let mut h = Head::genesis(outlet);
        h.z_number = v["z_number"].as_u64()?;
        return (h.hash == hash).then_some(h);
    }
    let c = &v["counters"];
    let mut per_type = [0u64; 6];
    for (i, t) in bonopay_ledger::INVOICE_TYPES.iter().enumerate() {
        per_type[i] = c["per_type"][t.as_str()].as_u64()?;
    }
    Some(Head {
        outlet: outlet.to_owned(),
        seq,
        hash,
        fiscal_year: i32::try_from(c["fiscal_year"].as_i64()?).ok()?,
        counters: bonopay_ledger::Counters {
            total: c["total"].as_u64()?,
            per_type,
        },
        z_number: v["z_number"].as_u64()?,
        time_ms: v["time_ms"].as_i64()?,
    })
}
