//! Certification: the DGI's security elements for a sealed invoice, bound
//! into the outlet's hash chain.
//!
//! Under the DGI regime (`dgi-emcf.md` §2 and §6) the five security
//! elements of a *facture normalisée* come from a DGI fiscal device: the
//! e-MCF online, or a physical MCF. Bono Pay seals every sale first (its
//! own signature is the merchant's verification seal, printed under Bono
//! Pay's name); when the device answers, its elements are appended to the
//! same chain as a `certification` entry:
//!
//! ```text
//! payload = JCS({"body": BODY, "signature": SIG})        (a signed event, format.md §8)
//! BODY    = {"schema": "bonopay/certification/v1",
//!            "invoice_seq", "invoice_entry_hash", "invoice_auth_code", "rn",
//!            "merchant_nif", "source": "emcf"|"mcf"|"operator", "uid"?,
//!            "dgi": {"codeDEFDGI", "counters", "dateTime", "nim", "qrCode"},
//!            + the event's position fields (outlet, seq, prev_hash, time_ms, …)}
//! ```
//!
//! The entry names its invoice by position *and* by entry hash, so altering
//! either the sale or its DGI elements breaks the chain or the link; the
//! verifiers (`SignatureCheck` over a store, the audit bundle `Verifier`
//! over an export, both in `crate::audit`) check both. Index keys make it exactly once: one
//! certification per invoice (`certification` = `{outlet}:{seq}`), and one
//! invoice per DGI code (`dgi_code`), which is also how an invoice is found
//! by the code the DGI printed on it.

use std::fmt;

use bonopay_ledger::Entry;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::VerifyError;
use crate::sealed::KeyLookup;

pub use crate::event::CERTIFICATION_SCHEMA;

/// Longest element the ledger accepts (the DGI's are far shorter; this only
/// keeps a broken device or a typing slip from filling the chain).
const MAX_ELEMENT_CHARS: usize = 512;

/// The security elements a DGI fiscal device returns, under the e-MCF's
/// JSON names (`PUT …/CONFIRM`, field dictionary of `dgi-emcf.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgiElements {
    /// Code DEF/DGI, the authentication code (24 characters on the e-MCF).
    #[serde(rename = "codeDEFDGI")]
    pub code_def_dgi: String,
    /// `FC/TC TYPE`: the fiscal number on the device.
    pub counters: String,
    /// The device's NIM (NID/MID): the fiscal authority id.
    pub nim: String,
    /// The device's certification time, as the device wrote it.
    #[serde(rename = "dateTime")]
    pub date_time: String,
    /// The QR text, printed exactly as returned.
    #[serde(rename = "qrCode")]
    pub qr_code: String,
}

impl DgiElements {
    /// Refuses elements that cannot be genuine: empty, over-long, or with
    /// control characters (what is printed must be what was returned).
    ///
    /// # Errors
    /// A message naming the element.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("codeDEFDGI", &self.code_def_dgi),
            ("counters", &self.counters),
            ("nim", &self.nim),
            ("dateTime", &self.date_time),
            ("qrCode", &self.qr_code),
        ] {
            if v.trim().is_empty() {
                return Err(format!("the DGI element {name} is empty"));
            }
            if v.chars().count() > MAX_ELEMENT_CHARS || v.chars().any(char::is_control) {
                return Err(format!(
                    "the DGI element {name} is over {MAX_ELEMENT_CHARS} characters or has control characters"
                ));
            }
        }
        Ok(())
    }
}

/// Who produced the elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CertificationSource {
    /// The DGI's online e-MCF, as it answered CONFIRM.
    Emcf,
    /// A physical MCF on a serial line.
    Mcf,
    /// A person, who read them off the DGI portal after the e-MCF's answer
    /// to CONFIRM was lost (the e-MCF reports finalised invoices to nobody).
    Operator,
}

impl CertificationSource {
    /// The stable name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            CertificationSource::Emcf => "emcf",
            CertificationSource::Mcf => "mcf",
            CertificationSource::Operator => "operator",
        }
    }
}

impl fmt::Display for CertificationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certification read back from the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certification {
    /// Outlet.
    pub outlet: String,
    /// The certified invoice's position.
    pub invoice_seq: u64,
    /// Hex of the certified invoice's entry hash.
    pub invoice_entry_hash: String,
    /// The certified invoice's Bono Pay authentication code.
    pub invoice_auth_code: String,
    /// The SFE invoice number sent to the DGI ([`sfe_number`]).
    pub rn: String,
    /// The DGI's elements.
    pub elements: DgiElements,
    /// Who produced them.
    pub source: CertificationSource,
    /// The e-MCF's handle, when it came from the e-MCF.
    pub uid: Option<String>,
    /// Position of the certification entry itself.
    pub seq: u64,
    /// Hex of the certification entry's hash.
    pub entry_hash: String,
    /// When it was recorded (trusted time, RFC 3339 in the outlet's zone).
    pub recorded_at: String,
}

/// The key a Code DEF/DGI is indexed and looked up under: the 24
/// characters without the dashes of the printed `XXXX-XXXX-…` form (as a
/// credit note's reference is stored, `bonopay_core::normalize_reference`),
/// or the code as returned when it has another shape. So a code found on
/// a receipt, dashed or not, finds its invoice.
#[must_use]
pub fn dgi_code_key(code: &str) -> String {
    let code = code.trim();
    bonopay_core::normalize_reference(code).unwrap_or_else(|| code.to_owned())
}

/// The SFE invoice number (`rn`) of an invoice: `{outlet}/{fiscal year}/{n}`
/// with `n` the outlet's total counter (TC) for that year. Invoices and
/// credit notes of an outlet form one uninterrupted series per fiscal
/// year (SFE spec §1.15); reports, closings, incomplete sales and
/// certifications never take a number. Outlet ids contain no `/`.
#[must_use]
pub fn sfe_number(outlet: &str, fiscal_year: i32, total: u64) -> String {
    format!("{outlet}/{fiscal_year}/{total}")
}

/// The SFE number of a sealed invoice, from its signed body (`outlet`,
/// `fiscal_year`, `fiscal_number.total`).
#[must_use]
pub fn sfe_number_of_sealed(sealed: &crate::SealedInvoice) -> Option<String> {
    let body = sealed.body_value().ok()?;
    let year = i32::try_from(body.get("fiscal_year")?.as_i64()?).ok()?;
    let total = body.pointer("/fiscal_number/total")?.as_u64()?;
    Some(sfe_number(&sealed.tuple.outlet, year, total))
}

/// Splits an SFE number back into outlet, fiscal year and total counter.
#[must_use]
pub fn parse_sfe_number(rn: &str) -> Option<(&str, i32, u64)> {
    let mut parts = rn.rsplitn(3, '/');
    let total = parts.next()?.parse().ok()?;
    let year = parts.next()?.parse().ok()?;
    let outlet = parts.next()?;
    (!outlet.is_empty()).then_some((outlet, year, total))
}

/// The SFE number of a numbered ledger entry (`None` for other kinds).
#[must_use]
pub fn sfe_number_of(entry: &Entry) -> Option<String> {
    entry
        .fiscal_number
        .map(|n| sfe_number(&entry.outlet, entry.fiscal_year, n.total))
}

fn mismatch(why: impl Into<String>) -> VerifyError {
    VerifyError::Mismatch(why.into())
}

/// Reads a certification from its verified event body.
///
/// # Errors
/// [`VerifyError::Mismatch`] when a member is missing or malformed.
pub fn certification_from_body(entry: &Entry, body: &Value) -> Result<Certification, VerifyError> {
    let s = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| mismatch(format!("certification has no `{name}`")))
    };
    let elements: DgiElements = serde_json::from_value(
        body.get("dgi")
            .cloned()
            .ok_or_else(|| mismatch("certification has no `dgi`"))?,
    )
    .map_err(|e| mismatch(format!("certification `dgi`: {e}")))?;
    let source: CertificationSource = serde_json::from_value(
        body.get("source")
            .cloned()
            .ok_or_else(|| mismatch("certification has no `source`"))?,
    )
    .map_err(|e| mismatch(format!("certification `source`: {e}")))?;
    Ok(Certification {
        outlet: entry.outlet.clone(),
        invoice_seq: body
            .get("invoice_seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| mismatch("certification has no `invoice_seq`"))?,
        invoice_entry_hash: s("invoice_entry_hash")?,
        invoice_auth_code: s("invoice_auth_code")?,
        rn: s("rn")?,
        elements,
        source,
        uid: body.get("uid").and_then(Value::as_str).map(str::to_owned),
        seq: entry.seq,
        entry_hash: hex::encode(entry.entry_hash),
        recorded_at: s("timestamp")?,
    })
}

/// Verifies a certification entry on its own (canonical bytes, schema,
/// position, signature) and reads it. The link to its invoice is checked by
/// `audit::check_link` (feature `verifier`).
///
/// # Errors
/// [`VerifyError`] saying what does not hold.
pub fn verify_certification(
    entry: &Entry,
    keys: &dyn KeyLookup,
) -> Result<Certification, VerifyError> {
    let body = crate::event::verify_event(entry, keys)?;
    let c = certification_from_body(entry, &body)?;
    c.elements.check().map_err(mismatch)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sfe_numbers_round_trip() {
        let rn = sfe_number("kin-gombe-01", 2026, 42);
        assert_eq!(rn, "kin-gombe-01/2026/42");
        assert_eq!(parse_sfe_number(&rn), Some(("kin-gombe-01", 2026, 42)));
        assert_eq!(parse_sfe_number("kin:7"), None);
        assert_eq!(parse_sfe_number("/2026/1"), None);
        assert_eq!(parse_sfe_number("a/x/1"), None);
    }

    #[test]
    fn elements_that_cannot_be_genuine_are_refused() {
        let ok = DgiElements {
            code_def_dgi: "ABCD".into(),
            counters: "1/1 FV".into(),
            nim: "NIM1".into(),
            date_time: "2026-12-05 10:00:00".into(),
            qr_code: "RDCDEF01;NIM1;ABCD;A1;20261205100000".into(),
        };
        assert!(ok.check().is_ok());
        let mut bad = ok.clone();
        bad.nim = " ".into();
        assert!(bad.check().unwrap_err().contains("nim"));
        let mut bad = ok;
        bad.qr_code = "a\nb".into();
        assert!(bad.check().unwrap_err().contains("qrCode"));
    }
}
