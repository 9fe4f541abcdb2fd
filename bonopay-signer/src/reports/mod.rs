//! Reports as pure computation over ledger entries: the statistics of X
//! and Z reports, closings and A reports ([`Stats`], [`ArticleStats`]),
//! the report documents ([`Report`]) and the pieces of their bodies that a
//! verifier recomputes (the head a Z report closes, the business day of an
//! entry).
//!
//! Nothing here reads a store or signs: the sealing pipeline feeds these
//! accumulators from its store and seals the result
//! (`crate::sealing`, feature `sealing`), and the audit verifier feeds them
//! from a bundle and compares (`crate::audit`, feature `verifier`). Text
//! rendering is in `crate::render` (feature `render`).

#[cfg(feature = "verifier")]
use bonopay_ledger::EntryKind;
use bonopay_ledger::Head;
use chrono::NaiveDate;
#[cfg(feature = "verifier")]
use chrono::{DateTime, TimeZone, Utc};
#[cfg(feature = "verifier")]
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

mod stats;

pub use crate::event::{A_SCHEMA, CLOSING_SCHEMA, INCOMPLETE_SALE_SCHEMA, Z_SCHEMA};
#[cfg(any(feature = "render", feature = "sealing"))]
pub(crate) use stats::dec2;
pub use stats::{
    Amounts, ArticleLine, ArticleStats, Counted, CurrencyStats, GroupAmounts, GroupStats,
    IncompleteStats, NumberRef, PaymentStats, Stats, UnreadableEntry,
};

/// `schema` of an X report (never sealed).
pub const X_SCHEMA: &str = "bonopay/x-report/v1";

/// Who the report is for: printed in its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportIdentity {
    /// Seller NIF.
    pub merchant_nif: String,
    /// Trade name (nom commercial).
    pub trade_name: String,
}

/// Kinds of report documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportKind {
    /// X report (not sealed).
    X,
    /// Z report (sealed).
    Z,
    /// A report (sealed, or a preview).
    A,
    /// Daily, monthly or yearly closing (sealed).
    Closing,
    /// A recorded incomplete sale (sealed).
    IncompleteSale,
}

/// Where a sealed report sits in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRef {
    /// Position in the outlet's chain.
    pub seq: u64,
    /// Hex of the entry hash.
    pub entry_hash: String,
    /// Hex of the signature over the body.
    pub signature: String,
}

/// A report document: its body (for sealed reports, exactly the signed
/// body) and, when sealed, its chain position.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Kind.
    pub kind: ReportKind,
    /// The document.
    pub body: Value,
    /// Position and signature, for sealed reports.
    pub sealed: Option<SealedRef>,
}

/// Closing period kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PeriodKind {
    /// A business day (`YYYY-MM-DD`).
    Daily,
    /// A month (`YYYY-MM`).
    Monthly,
    /// A fiscal (calendar) year (`YYYY`).
    Yearly,
}

impl PeriodKind {
    /// The stable name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Daily => "daily",
            PeriodKind::Monthly => "monthly",
            PeriodKind::Yearly => "yearly",
        }
    }

    /// The label of the period containing `date`.
    #[must_use]
    pub fn label(self, date: NaiveDate) -> String {
        match self {
            PeriodKind::Daily => date.format("%Y-%m-%d").to_string(),
            PeriodKind::Monthly => date.format("%Y-%m").to_string(),
            PeriodKind::Yearly => date.format("%Y").to_string(),
        }
    }
}

/// An abandoned sale, as the till reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteSale {
    /// Seller NIF.
    pub merchant_nif: String,
    /// Till.
    pub pos_terminal_id: String,
    /// Cashier id.
    pub cashier_id: String,
    /// Value of the sale when it was abandoned, CDF.
    pub amount: Decimal,
    /// Why (free text, at most 200 characters).
    pub reason: String,
}

/// The local time of a trusted time in a zone.
#[cfg(feature = "verifier")]
pub(crate) fn local_time(time_ms: i64, tz: Tz) -> Option<DateTime<Tz>> {
    Utc.timestamp_millis_opt(time_ms)
        .single()
        .map(|t| t.with_timezone(&tz))
}

fn counters_json(head: &Head) -> Value {
    let mut per_type = Map::new();
    for (t, n) in bonopay_ledger::INVOICE_TYPES
        .iter()
        .zip(head.counters.per_type)
    {
        per_type.insert(t.as_str().to_owned(), json!(n));
    }
    json!({
        "fiscal_year": head.fiscal_year,
        "per_type": per_type,
        "total": head.counters.total,
    })
}

/// The head's state, as Z reports seal it (`closing_head`) and audit
/// bundles state their starting point.
#[must_use]
pub fn head_json(head: &Head) -> Value {
    // An empty chain has no time or year yet (and i64::MIN is no JCS number).
    let empty = head.seq == 0;
    json!({
        "counters": if empty { Value::Null } else { counters_json(head) },
        "hash": hex::encode(head.hash),
        "seq": head.seq,
        "time_ms": if empty { Value::Null } else { json!(head.time_ms) },
        "z_number": head.z_number,
    })
}

/// Whether an entry kind counts in X/Z statistics and daily closings.
#[cfg(feature = "verifier")]
pub(crate) fn counted(kind: EntryKind) -> bool {
    matches!(
        kind,
        EntryKind::Invoice | EntryKind::CreditNote | EntryKind::IncompleteSale
    )
}

impl Report {
    /// The JSON document: the body, and for sealed reports their position.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "report": self.body });
        if let Some(s) = &self.sealed {
            v["sealed"] = json!({
                "entry_hash": s.entry_hash,
                "seq": s.seq,
                "signature": s.signature,
            });
        }
        v
    }
}
