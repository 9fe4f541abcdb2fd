//! Entries, heads and counters: the pure part of the ledger.
//!
//! An outlet's ledger is a chain of entries. Each entry has a small header
//! (JCS canonical JSON) that commits to its payload by hash, and an entry
//! hash over the previous entry's hash and that header:
//!
//! ```text
//! payload_sha256 = SHA-256("bonopay/v1/ledger-payload\0" ‖ payload)
//! entry_hash     = SHA-256("bonopay/v1/ledger-entry\0" ‖ prev_hash ‖ header)
//! genesis        = SHA-256("bonopay/v1/ledger-genesis\0" ‖ outlet)
//! ```
//!
//! The exact bytes are specified in `docs/format.md` ("Ledger chain").

use std::fmt;

use bonopay_core::InvoiceType;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::LedgerError;

/// Domain tag of the payload hash.
pub const PAYLOAD_DOMAIN: &[u8] = b"bonopay/v1/ledger-payload\0";
/// Domain tag of the entry hash.
pub const ENTRY_DOMAIN: &[u8] = b"bonopay/v1/ledger-entry\0";
/// Domain tag of an outlet's genesis hash.
pub const GENESIS_DOMAIN: &[u8] = b"bonopay/v1/ledger-genesis\0";

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// What an entry records. The set is open-ended: later versions add kinds,
/// and the header names the kind as a string, so old verifiers can still
/// walk (and report) chains that contain new kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EntryKind {
    /// A sale, advance or export invoice (FV, FT, EV, ET). Consumes a number.
    Invoice,
    /// A credit note (FA, EA). Consumes a number.
    CreditNote,
    /// A Z report. Consumes a Z number.
    ZReport,
    /// A daily, monthly or yearly closing.
    Closing,
    /// The signer failed; recorded so the gap in time is explained.
    SignerFailure,
    /// The signing key changed.
    KeyRotation,
    /// An A report (per-article quantities since the previous one).
    AReport,
    /// A sale that was started at the till and abandoned before it was
    /// invoiced (the DGI "vente incomplète").
    IncompleteSale,
    /// The DGI's security elements for an invoice or credit note sealed
    /// earlier in the same chain (e-MCF or MCF certification), hash-linked
    /// to that entry.
    Certification,
}

impl EntryKind {
    /// All kinds.
    pub const ALL: &'static [EntryKind] = &[
        EntryKind::Invoice,
        EntryKind::CreditNote,
        EntryKind::ZReport,
        EntryKind::Closing,
        EntryKind::SignerFailure,
        EntryKind::KeyRotation,
        EntryKind::AReport,
        EntryKind::IncompleteSale,
        EntryKind::Certification,
    ];

    /// The stable string in headers and storage.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryKind::Invoice => "invoice",
            EntryKind::CreditNote => "credit_note",
            EntryKind::ZReport => "z_report",
            EntryKind::Closing => "closing",
            EntryKind::SignerFailure => "signer_failure",
            EntryKind::KeyRotation => "key_rotation",
            EntryKind::AReport => "a_report",
            EntryKind::IncompleteSale => "incomplete_sale",
            EntryKind::Certification => "certification",
        }
    }

    /// Parses the stable string.
    #[must_use]
    pub fn from_code(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// Whether the kind takes the outlet's next fiscal number.
    #[must_use]
    pub const fn is_numbered(self) -> bool {
        matches!(self, EntryKind::Invoice | EntryKind::CreditNote)
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The six invoice types in a fixed order, for per-type counters.
pub const INVOICE_TYPES: [InvoiceType; 6] = [
    InvoiceType::Fv,
    InvoiceType::Ft,
    InvoiceType::Fa,
    InvoiceType::Ev,
    InvoiceType::Et,
    InvoiceType::Ea,
];

fn type_index(t: InvoiceType) -> usize {
    INVOICE_TYPES.iter().position(|x| *x == t).unwrap_or(0)
}

/// An invoice's fiscal number: its place in the outlet's uninterrupted
/// series for the fiscal year, in total and within its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[must_use]
pub struct FiscalNumber {
    /// Total counter (TC): 1, 2, 3, … within the fiscal year.
    pub total: u64,
    /// Invoice type.
    #[serde(rename = "type")]
    pub invoice_type: InvoiceType,
    /// Counter within the type (FC).
    pub type_counter: u64,
}

impl fmt::Display for FiscalNumber {
    /// The DGI form `FC/TC TYPE`, e.g. `64/64 FV`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} {}",
            self.type_counter, self.total, self.invoice_type
        )
    }
}

/// The running counters of an outlet within one fiscal year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Invoices of every type so far this fiscal year.
    pub total: u64,
    /// Per type, in [`INVOICE_TYPES`] order.
    pub per_type: [u64; 6],
}

impl Counters {
    /// The counter of one type.
    #[must_use]
    pub fn of(&self, t: InvoiceType) -> u64 {
        self.per_type[type_index(t)]
    }
}

/// What the caller asks to append, before it knows its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Kind of entry.
    pub kind: EntryKind,
    /// For numbered kinds: the invoice type (FA/EA for credit notes).
    pub invoice_type: Option<InvoiceType>,
    /// Fiscal year the entry belongs to (from the trusted timestamp in the
    /// outlet's time zone).
    pub fiscal_year: i32,
    /// Trusted time, milliseconds since the Unix epoch.
    pub time_ms: i64,
}

/// An outlet's chain head: everything needed to place the next entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Outlet id.
    pub outlet: String,
    /// Number of entries so far (the last entry's `seq`); 0 for an empty chain.
    pub seq: u64,
    /// The last entry's hash, or the outlet's genesis hash.
    pub hash: Hash,
    /// Fiscal year of the last numbered entry's counters.
    pub fiscal_year: i32,
    /// Counters within `fiscal_year`.
    pub counters: Counters,
    /// Last Z number issued (0 before the first Z report).
    pub z_number: u64,
    /// Time of the last entry (ms since epoch); `i64::MIN` when empty.
    pub time_ms: i64,
}

/// The genesis hash of an outlet: binds the first entry to its outlet, so a
/// chain cannot be replayed under another outlet id.
#[must_use]
pub fn genesis_hash(outlet: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(GENESIS_DOMAIN);
    h.update(outlet.as_bytes());
    h.finalize().into()
}

/// Domain-separated payload hash.
#[must_use]
pub fn payload_hash(payload: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(PAYLOAD_DOMAIN);
    h.update(payload);
    h.finalize().into()
}

/// Domain-separated entry hash.
#[must_use]
pub fn entry_hash(prev_hash: &Hash, header: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(ENTRY_DOMAIN);
    h.update(prev_hash);
    h.update(header);
    h.finalize().into()
}

impl Head {
    /// The head of an empty chain.
    pub fn genesis(outlet: &str) -> Self {
        Head {
            outlet: outlet.to_owned(),
            seq: 0,
            hash: genesis_hash(outlet),
            fiscal_year: i32::MIN,
            counters: Counters::default(),
            z_number: 0,
            time_ms: i64::MIN,
        }
    }

    /// Places the next entry: its sequence, previous hash, fiscal number and
    /// Z number. Pure: nothing is reserved, so a seal that fails after this
    /// consumes no number.
    ///
    /// Fiscal-year rollover: numbered entries count from 1 again when
    /// `meta.fiscal_year` is later than the head's; the chain itself (seq and
    /// hashes) never restarts. A year earlier than the head's is refused.
    ///
    /// # Errors
    /// [`LedgerError::InvalidEntry`] when the meta is inconsistent (missing
    /// or wrong invoice type, time or year going backwards).
    pub fn prepare(&self, meta: &EntryMeta) -> Result<Prepared, LedgerError> {
        let invalid = |why: String| Err(LedgerError::InvalidEntry(why));
        if meta.time_ms < self.time_ms {
            return invalid(format!(
                "time {} ms is earlier than the outlet's last entry ({} ms)",
                meta.time_ms, self.time_ms
            ));
        }
        if self.seq > 0 && meta.fiscal_year < self.fiscal_year {
            return invalid(format!(
                "fiscal year {} is earlier than the outlet's current year {}",
                meta.fiscal_year, self.fiscal_year
            ));
        }
        let fiscal_number = match (meta.kind, meta.invoice_type) {
            (EntryKind::Invoice, Some(t)) if !t.is_credit_note() => Some(t),
            (EntryKind::CreditNote, Some(t)) if t.is_credit_note() => Some(t),
            (k, None) if !k.is_numbered() => None,
            (k, t) => {
                return invalid(format!(
                    "entry kind {k} does not go with invoice type {t:?}"
                ));
            }
        }
        .map(|t| {
            let base = if meta.fiscal_year == self.fiscal_year {
                self.counters
            } else {
                Counters::default()
            };
            FiscalNumber {
                total: base.total + 1,
                invoice_type: t,
                type_counter: base.of(t) + 1,
            }
        });
        let z_number = (meta.kind == EntryKind::ZReport).then_some(self.z_number + 1);
        Ok(Prepared {
            outlet: self.outlet.clone(),
            seq: self.seq + 1,
            prev_hash: self.hash,
            kind: meta.kind,
            fiscal_year: meta.fiscal_year,
            time_ms: meta.time_ms,
            fiscal_number,
            z_number,
        })
    }

    /// The head after `entry` (which must have been prepared from `self`).
    pub fn advance(&self, entry: &Entry) -> Head {
        let mut next = self.clone();
        next.seq = entry.seq;
        next.hash = entry.entry_hash;
        next.time_ms = entry.time_ms;
        if next.seq == 1 || entry.fiscal_year > next.fiscal_year {
            next.fiscal_year = entry.fiscal_year;
            next.counters = Counters::default();
        }
        if let Some(n) = entry.fiscal_number {
            next.counters.total = n.total;
            next.counters.per_type[type_index(n.invoice_type)] = n.type_counter;
        }
        if let Some(z) = entry.z_number {
            next.z_number = z;
        }
        next
    }
}

/// An entry's position, decided from the head, waiting for its payload.
/// The payload (a sealed invoice, a Z report, …) usually embeds
/// `prev_hash` and the fiscal number, and is signed, before [`Prepared::seal`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Prepared {
    /// Outlet.
    pub outlet: String,
    /// Position in the outlet's chain, from 1.
    pub seq: u64,
    /// Hash of the previous entry (or genesis).
    pub prev_hash: Hash,
    /// Kind.
    pub kind: EntryKind,
    /// Fiscal year.
    pub fiscal_year: i32,
    /// Trusted time (ms since epoch).
    pub time_ms: i64,
    /// For numbered kinds.
    pub fiscal_number: Option<FiscalNumber>,
    /// For Z reports.
    pub z_number: Option<u64>,
}

#[derive(Serialize)]
struct WireHeader<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<WireCounters>,
    fiscal_year: i32,
    kind: &'static str,
    outlet: &'a str,
    payload_sha256: String,
    seq: u64,
    time_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    z_number: Option<u64>,
}

#[derive(Serialize)]
struct WireCounters {
    total: u64,
    #[serde(rename = "type")]
    invoice_type: &'static str,
    type_counter: u64,
}

impl Prepared {
    /// Builds the header and hashes: the entry is then ready to append.
    pub fn seal(self, payload: Vec<u8>) -> Entry {
        let header = header_bytes(&self, &payload_hash(&payload));
        let entry_hash = entry_hash(&self.prev_hash, &header);
        Entry {
            outlet: self.outlet,
            seq: self.seq,
            kind: self.kind,
            fiscal_year: self.fiscal_year,
            time_ms: self.time_ms,
            fiscal_number: self.fiscal_number,
            z_number: self.z_number,
            prev_hash: self.prev_hash,
            entry_hash,
            header,
            payload,
            index: Vec::new(),
        }
    }
}

pub(crate) fn header_bytes(p: &Prepared, payload_sha: &Hash) -> Vec<u8> {
    let wire = WireHeader {
        counters: p.fiscal_number.map(|n| WireCounters {
            total: n.total,
            invoice_type: n.invoice_type.as_str(),
            type_counter: n.type_counter,
        }),
        fiscal_year: p.fiscal_year,
        kind: p.kind.as_str(),
        outlet: &p.outlet,
        payload_sha256: hex::encode(payload_sha),
        seq: p.seq,
        time_ms: p.time_ms,
        z_number: p.z_number,
    };
    // Integers below 2^53 print identically in serde_json and RFC 8785, and
    // the fields are declared in sorted order: this is the JCS form.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// A secondary index key recorded with an entry in the same transaction:
/// an idempotency key, an authentication code, a credit note's reference.
/// Index keys are lookup aids derived from the payload; they are not part
/// of the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexKey {
    /// Index name, e.g. `idempotency`, `auth_code`, `credits`.
    pub name: String,
    /// Key value.
    pub value: String,
    /// A unique key refuses a second entry with the same name and value
    /// ([`LedgerError::Duplicate`]), atomically with the append.
    pub unique: bool,
}

impl IndexKey {
    /// A unique key.
    #[must_use]
    pub fn unique(name: &str, value: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            value: value.into(),
            unique: true,
        }
    }

    /// A non-unique key.
    #[must_use]
    pub fn multi(name: &str, value: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            value: value.into(),
            unique: false,
        }
    }
}

/// A sealed ledger entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Outlet.
    pub outlet: String,
    /// Position in the outlet's chain, from 1.
    pub seq: u64,
    /// Kind.
    pub kind: EntryKind,
    /// Fiscal year.
    pub fiscal_year: i32,
    /// Trusted time (ms since epoch).
    pub time_ms: i64,
    /// For numbered kinds.
    pub fiscal_number: Option<FiscalNumber>,
    /// For Z reports.
    pub z_number: Option<u64>,
    /// Previous entry's hash (or the outlet's genesis hash).
    pub prev_hash: Hash,
    /// This entry's hash.
    pub entry_hash: Hash,
    /// Canonical header bytes (what `entry_hash` covers).
    pub header: Vec<u8>,
    /// The payload (opaque to the ledger; committed to by the header).
    pub payload: Vec<u8>,
    /// Secondary index keys written with the entry (not hashed).
    pub index: Vec<IndexKey>,
}

impl Entry {
    /// Adds index keys (builder style).
    pub fn with_index(mut self, keys: impl IntoIterator<Item = IndexKey>) -> Self {
        self.index.extend(keys);
        self
    }

    /// The metadata this entry was prepared from.
    #[must_use]
    pub fn meta(&self) -> EntryMeta {
        EntryMeta {
            kind: self.kind,
            invoice_type: self.fiscal_number.map(|n| n.invoice_type),
            fiscal_year: self.fiscal_year,
            time_ms: self.time_ms,
        }
    }

    /// Rebuilds an entry from its exported parts (an audit bundle): the
    /// fields come from the header, which is what the entry hash covers,
    /// so nothing but the hashed bytes is trusted. Call
    /// [`Entry::check_integrity`] (or the verifier) afterwards.
    ///
    /// # Errors
    /// [`LedgerError::Corrupt`] when the header is not a ledger header.
    pub fn from_parts(
        prev_hash: Hash,
        entry_hash: Hash,
        header: Vec<u8>,
        payload: Vec<u8>,
    ) -> Result<Entry, LedgerError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct H {
            #[serde(default)]
            counters: Option<C>,
            fiscal_year: i32,
            kind: String,
            outlet: String,
            #[allow(dead_code)]
            payload_sha256: String,
            seq: u64,
            time_ms: i64,
            #[serde(default)]
            z_number: Option<u64>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct C {
            total: u64,
            #[serde(rename = "type")]
            invoice_type: String,
            type_counter: u64,
        }
        let bad = |why: String| LedgerError::Corrupt(format!("entry header: {why}"));
        let h: H = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
        let kind = EntryKind::from_code(&h.kind)
            .ok_or_else(|| bad(format!("unknown kind `{}`", h.kind)))?;
        let fiscal_number = match h.counters {
            None => None,
            Some(c) => Some(FiscalNumber {
                total: c.total,
                invoice_type: InvoiceType::from_code(&c.invoice_type)
                    .ok_or_else(|| bad(format!("unknown invoice type `{}`", c.invoice_type)))?,
                type_counter: c.type_counter,
            }),
        };
        Ok(Entry {
            outlet: h.outlet,
            seq: h.seq,
            kind,
            fiscal_year: h.fiscal_year,
            time_ms: h.time_ms,
            fiscal_number,
            z_number: h.z_number,
            prev_hash,
            entry_hash,
            header,
            payload,
            index: Vec::new(),
        })
    }

    /// Checks that the header is exactly what the indexed fields and the
    /// payload say, and that `entry_hash` covers it. This is what catches a
    /// row edited behind the library's back.
    ///
    /// # Errors
    /// [`LedgerError::InvalidEntry`] saying what disagrees.
    pub fn check_integrity(&self) -> Result<(), LedgerError> {
        let prepared = Prepared {
            outlet: self.outlet.clone(),
            seq: self.seq,
            prev_hash: self.prev_hash,
            kind: self.kind,
            fiscal_year: self.fiscal_year,
            time_ms: self.time_ms,
            fiscal_number: self.fiscal_number,
            z_number: self.z_number,
        };
        let header = header_bytes(&prepared, &payload_hash(&self.payload));
        if header != self.header {
            return Err(LedgerError::InvalidEntry(format!(
                "entry {} of outlet {}: header does not match its fields or payload",
                self.seq, self.outlet
            )));
        }
        let h = entry_hash(&self.prev_hash, &self.header);
        if h != self.entry_hash {
            return Err(LedgerError::InvalidEntry(format!(
                "entry {} of outlet {}: entry hash {} should be {}",
                self.seq,
                self.outlet,
                hex::encode(self.entry_hash),
                hex::encode(h)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: EntryKind, t: Option<InvoiceType>, year: i32, time: i64) -> EntryMeta {
        EntryMeta {
            kind,
            invoice_type: t,
            fiscal_year: year,
            time_ms: time,
        }
    }

    #[test]
    fn counters_render_and_roll_over_by_year() {
        let mut head = Head::genesis("o1");
        let mut last = None;
        for (i, t) in [
            InvoiceType::Fv,
            InvoiceType::Fv,
            InvoiceType::Ft,
            InvoiceType::Fv,
        ]
        .iter()
        .enumerate()
        {
            let p = head
                .prepare(&meta(EntryKind::Invoice, Some(*t), 2026, i as i64))
                .unwrap();
            let e = p.seal(b"{}".to_vec());
            head = head.advance(&e);
            last = e.fiscal_number;
        }
        assert_eq!(last.unwrap().to_string(), "3/4 FV");
        let p = head
            .prepare(&meta(
                EntryKind::CreditNote,
                Some(InvoiceType::Fa),
                2027,
                10,
            ))
            .unwrap();
        assert_eq!(p.fiscal_number.unwrap().to_string(), "1/1 FA");
        assert_eq!(p.seq, 5, "the chain does not restart with the year");
        let e = p.seal(b"{}".to_vec());
        let head = head.advance(&e);
        assert!(
            head.prepare(&meta(EntryKind::Invoice, Some(InvoiceType::Fv), 2026, 11))
                .is_err()
        );
        assert!(
            head.prepare(&meta(EntryKind::Invoice, Some(InvoiceType::Fv), 2027, 9))
                .is_err()
        );
        assert!(
            head.prepare(&meta(EntryKind::Invoice, Some(InvoiceType::Fa), 2027, 11))
                .is_err()
        );
        assert!(
            head.prepare(&meta(EntryKind::ZReport, Some(InvoiceType::Fv), 2027, 11))
                .is_err()
        );
        let z = head
            .prepare(&meta(EntryKind::ZReport, None, 2027, 11))
            .unwrap();
        assert_eq!(z.z_number, Some(1));
        assert_eq!(z.fiscal_number, None);
    }

    #[test]
    fn integrity_catches_edits() {
        let head = Head::genesis("o1");
        let e = head
            .prepare(&meta(EntryKind::Invoice, Some(InvoiceType::Fv), 2026, 1))
            .unwrap()
            .seal(br#"{"a":1}"#.to_vec());
        e.check_integrity().unwrap();
        let mut bad = e.clone();
        bad.payload = br#"{"a":2}"#.to_vec();
        assert!(bad.check_integrity().is_err());
        let mut bad = e.clone();
        bad.fiscal_number.as_mut().unwrap().total = 7;
        assert!(bad.check_integrity().is_err());
        let mut bad = e;
        bad.entry_hash[0] ^= 1;
        assert!(bad.check_integrity().is_err());
    }
}
