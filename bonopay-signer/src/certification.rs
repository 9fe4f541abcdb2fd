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
//! verifiers ([`crate::SignatureCheck`] over a store, [`crate::bundle`] over
//! an export) check both. Index keys make it exactly once: one
//! certification per invoice (`certification` = `{outlet}:{seq}`), and one
//! invoice per DGI code (`dgi_code`), which is also how an invoice is found
//! by the code the DGI printed on it.

use std::fmt;

use bonopay_ledger::{Entry, EntryKind, IndexKey, LedgerError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::VerifyError;
use crate::fiscalizer::{Fiscalizer, SealError, index};
use crate::sealed::KeyLookup;

/// `schema` of a certification entry's body.
pub const CERTIFICATION_SCHEMA: &str = "bonopay/certification/v1";

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
/// [`check_link`].
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

/// What a certification's link is checked against: the invoice entry it
/// names, reduced to what the link covers (verifiers keep these for the
/// invoices of a chain not yet certified, instead of whole entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRef {
    /// Outlet.
    pub outlet: String,
    /// Position.
    pub seq: u64,
    /// Hex of its entry hash.
    pub entry_hash: String,
    /// Its SFE number.
    pub rn: String,
    /// Its Bono Pay authentication code.
    pub auth_code: String,
}

impl InvoiceRef {
    /// The reference of a numbered entry (`None` for other kinds).
    #[must_use]
    pub fn of(invoice: &Entry) -> Option<Self> {
        let rn = sfe_number_of(invoice)?;
        let auth_code = serde_json::from_slice::<Value>(&invoice.payload)
            .ok()?
            .get("auth_code")?
            .as_str()?
            .to_owned();
        Some(Self {
            outlet: invoice.outlet.clone(),
            seq: invoice.seq,
            entry_hash: hex::encode(invoice.entry_hash),
            rn,
            auth_code,
        })
    }
}

/// Checks that `cert` certifies `invoice`: an earlier invoice or credit
/// note of the same chain, with the entry hash, SFE number and
/// authentication code the certification names.
///
/// # Errors
/// [`VerifyError::Mismatch`] saying which part of the link is broken.
pub fn check_link(cert: &Certification, invoice: Option<&InvoiceRef>) -> Result<(), VerifyError> {
    if cert.invoice_seq >= cert.seq {
        return Err(mismatch(format!(
            "certification at seq {} must follow the invoice it names (seq {})",
            cert.seq, cert.invoice_seq
        )));
    }
    let Some(invoice) = invoice.filter(|i| i.outlet == cert.outlet && i.seq == cert.invoice_seq)
    else {
        return Err(mismatch(format!(
            "certification at seq {} names seq {}, which is not an invoice of outlet {}",
            cert.seq, cert.invoice_seq, cert.outlet
        )));
    };
    if invoice.entry_hash != cert.invoice_entry_hash {
        return Err(mismatch(format!(
            "certification at seq {} names an invoice entry hash that is not seq {}'s",
            cert.seq, cert.invoice_seq
        )));
    }
    if invoice.rn != cert.rn {
        return Err(mismatch(format!(
            "certification at seq {} names SFE number {}, not seq {}'s {}",
            cert.seq, cert.rn, cert.invoice_seq, invoice.rn
        )));
    }
    if invoice.auth_code != cert.invoice_auth_code {
        return Err(mismatch(format!(
            "certification at seq {} names authentication code {}, not seq {}'s",
            cert.seq, cert.invoice_auth_code, cert.invoice_seq
        )));
    }
    Ok(())
}

/// Checks the certifications of a chain walked in order: each one must
/// name an earlier invoice of the walk, not yet certified, by its exact
/// entry hash, SFE number and code. Memory holds the invoices not yet
/// certified; an invoice before the walk's first entry (a bundle that
/// starts at a Z report) is vouched for by that start and not checked.
#[derive(Debug, Default)]
pub struct CertificationLinks {
    first_seq: Option<u64>,
    open: std::collections::HashMap<u64, InvoiceRef>,
    certified: u64,
}

impl CertificationLinks {
    /// Takes the next entry of the walk.
    ///
    /// # Errors
    /// Why a certification's link does not hold.
    pub fn see(&mut self, entry: &Entry) -> Result<(), String> {
        let first = *self.first_seq.get_or_insert(entry.seq);
        if entry.kind.is_numbered() {
            if let Some(r) = InvoiceRef::of(entry) {
                self.open.insert(entry.seq, r);
            }
            return Ok(());
        }
        if entry.kind != EntryKind::Certification {
            return Ok(());
        }
        let body = crate::event::event_body(&entry.payload).map_err(|e| e.to_string())?;
        let cert = certification_from_body(entry, &body).map_err(|e| e.to_string())?;
        if cert.invoice_seq < first {
            return Ok(());
        }
        let invoice = self.open.remove(&cert.invoice_seq);
        if invoice.is_none() && cert.invoice_seq < entry.seq {
            return Err(format!(
                "certification at seq {} names seq {}, which is not an invoice or is already certified",
                cert.seq, cert.invoice_seq
            ));
        }
        check_link(&cert, invoice.as_ref()).map_err(|e| e.to_string())?;
        self.certified += 1;
        Ok(())
    }

    /// Certifications checked so far.
    #[must_use]
    pub fn certified(&self) -> u64 {
        self.certified
    }
}

fn storage(e: LedgerError) -> SealError {
    SealError::Storage(e)
}

impl Fiscalizer {
    /// Appends the DGI's elements for the invoice at `outlet`/`seq` to the
    /// outlet's chain, signed and hash-linked to the invoice. Exactly once:
    /// recording the same elements again returns the first record; other
    /// elements for a certified invoice are refused.
    ///
    /// # Errors
    /// [`SealError::Invalid`] for elements that cannot be genuine or an
    /// entry that is not an invoice; [`SealError::AlreadyCertified`] when
    /// the invoice (or the DGI code) is certified with other elements;
    /// otherwise as sealing.
    pub fn record_certification(
        &self,
        outlet: &str,
        seq: u64,
        elements: &DgiElements,
        source: CertificationSource,
        uid: Option<&str>,
    ) -> Result<Certification, SealError> {
        use bonopay_core::{ErrorCode, ValidationError, ValidationErrors};
        let invalid = |path: &str, msg: String| {
            SealError::Invalid(ValidationErrors(vec![ValidationError::new(
                path,
                ErrorCode::InvalidValue,
                msg,
            )]))
        };
        elements.check().map_err(|m| invalid("dgi", m))?;
        if let Some(done) = self.certification_of(outlet, seq)? {
            return self.same_or_conflict(done, elements);
        }
        let invoice = self
            .store
            .entry(outlet, seq)
            .map_err(storage)?
            .filter(|e| e.kind.is_numbered())
            .ok_or_else(|| invalid("seq", format!("{outlet}:{seq} is not a sealed invoice")))?;
        let sealed = self
            .load(outlet, seq)?
            .ok_or_else(|| invalid("seq", format!("{outlet}:{seq} is not a sealed invoice")))?;
        let rn = sfe_number_of(&invoice).unwrap_or_default();
        let merchant = sealed.invoice.tuple.merchant_nif.clone();
        let auth_code = sealed.invoice.elements.authentication_code.clone();
        let dgi = serde_json::to_value(elements)
            .map_err(|e| SealError::Corrupt(mismatch(e.to_string())))?;
        let result = self.seal_event(outlet, EntryKind::Certification, |_, _, _| {
            let mut m = Map::new();
            m.insert("schema".into(), json!(CERTIFICATION_SCHEMA));
            m.insert("dgi".into(), dgi.clone());
            m.insert("invoice_auth_code".into(), json!(auth_code));
            m.insert(
                "invoice_entry_hash".into(),
                json!(hex::encode(invoice.entry_hash)),
            );
            m.insert("invoice_seq".into(), json!(seq));
            m.insert("merchant_nif".into(), json!(merchant));
            m.insert("rn".into(), json!(rn));
            m.insert("source".into(), json!(source.as_str()));
            if let Some(uid) = uid {
                m.insert("uid".into(), json!(uid));
            }
            Ok((
                m,
                vec![
                    IndexKey::unique(index::CERTIFICATION, format!("{outlet}:{seq}")),
                    IndexKey::unique(index::DGI_CODE, dgi_code_key(&elements.code_def_dgi)),
                ],
            ))
        });
        match result {
            Ok(report) => {
                let sealed_ref = report.sealed.ok_or_else(|| {
                    SealError::Corrupt(mismatch("a sealed event has no position"))
                })?;
                self.certification_at(outlet, sealed_ref.seq)?
                    .ok_or_else(|| SealError::Corrupt(mismatch("certification vanished")))
            }
            Err(SealError::Storage(LedgerError::Duplicate { name, .. }))
                if name == index::CERTIFICATION =>
            {
                // Recorded meanwhile (another instance, or a retry).
                let done = self.certification_of(outlet, seq)?.ok_or_else(|| {
                    SealError::Corrupt(mismatch("duplicate certification vanished"))
                })?;
                self.same_or_conflict(done, elements)
            }
            Err(SealError::Storage(LedgerError::Duplicate { name, .. }))
                if name == index::DGI_CODE =>
            {
                Err(SealError::AlreadyCertified {
                    id: format!("{outlet}:{seq}"),
                    why: format!(
                        "the DGI code {} already certifies another invoice",
                        elements.code_def_dgi
                    ),
                })
            }
            Err(e) => Err(e),
        }
    }

    fn same_or_conflict(
        &self,
        done: Certification,
        elements: &DgiElements,
    ) -> Result<Certification, SealError> {
        if done.elements == *elements {
            Ok(done)
        } else {
            Err(SealError::AlreadyCertified {
                id: format!("{}:{}", done.outlet, done.invoice_seq),
                why: format!(
                    "it is certified with DGI code {} (recorded at seq {})",
                    done.elements.code_def_dgi, done.seq
                ),
            })
        }
    }

    fn trusted(&self) -> Vec<crate::PublicKey> {
        let mut keys = Vec::with_capacity(self.config.trusted_keys.len() + 1);
        keys.push(self.signer.public_key().clone());
        keys.extend(self.config.trusted_keys.iter().cloned());
        keys
    }

    /// The certification entry at `outlet`/`seq` (the entry's own position).
    ///
    /// # Errors
    /// [`SealError::Storage`] or [`SealError::Corrupt`].
    pub fn certification_at(
        &self,
        outlet: &str,
        seq: u64,
    ) -> Result<Option<Certification>, SealError> {
        let Some(entry) = self.store.entry(outlet, seq).map_err(storage)? else {
            return Ok(None);
        };
        if entry.kind != EntryKind::Certification {
            return Ok(None);
        }
        verify_certification(&entry, &self.trusted())
            .map(Some)
            .map_err(SealError::Corrupt)
    }

    /// The certification of the invoice at `outlet`/`seq`, if it has one.
    ///
    /// # Errors
    /// [`SealError::Storage`] or [`SealError::Corrupt`].
    pub fn certification_of(
        &self,
        outlet: &str,
        seq: u64,
    ) -> Result<Option<Certification>, SealError> {
        let hits = self
            .store
            .find_index(index::CERTIFICATION, &format!("{outlet}:{seq}"))
            .map_err(storage)?;
        match hits.first() {
            Some((o, s)) => self.certification_at(o, *s),
            None => Ok(None),
        }
    }

    /// The invoice certified with the DGI code `code`: its outlet and seq.
    ///
    /// # Errors
    /// [`SealError::Storage`] or [`SealError::Corrupt`].
    pub fn find_by_dgi_code(&self, code: &str) -> Result<Option<(String, u64)>, SealError> {
        let hits = self
            .store
            .find_index(index::DGI_CODE, &dgi_code_key(code))
            .map_err(storage)?;
        match hits.first() {
            Some((o, s)) => Ok(self
                .certification_at(o, *s)?
                .map(|c| (c.outlet, c.invoice_seq))),
            None => Ok(None),
        }
    }

    /// The sealed invoice a credit note's `reference` names: the original's
    /// Bono Pay authentication code, or the Code DEF/DGI the DGI certified
    /// it with.
    ///
    /// # Errors
    /// [`SealError::Storage`] or [`SealError::Corrupt`].
    pub fn find_original(&self, reference: &str) -> Result<Option<crate::Sealed>, SealError> {
        if let Some(found) = self.find_by_auth_code(reference)? {
            return Ok(Some(found));
        }
        match self.find_by_dgi_code(reference)? {
            Some((outlet, seq)) => self.load(&outlet, seq),
            None => Ok(None),
        }
    }
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
