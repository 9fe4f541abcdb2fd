//! Certification links: every DGI certification in a chain names an
//! earlier invoice of the same chain, not yet certified, by its exact entry
//! hash, SFE number and authentication code. Checked by both verifiers
//! (a store walk through [`super::SignatureCheck`], a bundle through
//! [`super::Verifier`]).

use bonopay_ledger::{Entry, EntryKind};
use serde_json::Value;

use crate::certification::{Certification, certification_from_body, sfe_number_of};
use crate::error::VerifyError;

fn mismatch(why: impl Into<String>) -> VerifyError {
    VerifyError::Mismatch(why.into())
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
