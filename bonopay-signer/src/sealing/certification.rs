//! Certification recording: the pipeline appends the DGI's elements for a
//! sealed invoice to the outlet's chain as a signed event, exactly once per
//! invoice and per DGI code (the format is [`crate::certification`]).

use bonopay_ledger::{EntryKind, IndexKey, LedgerError};
use serde_json::{Map, json};

use super::{Fiscalizer, SealError, Sealed};
use crate::certification::{
    CERTIFICATION_SCHEMA, Certification, CertificationSource, DgiElements, dgi_code_key,
    sfe_number_of, verify_certification,
};
use crate::error::VerifyError;
use crate::index;

fn mismatch(why: impl Into<String>) -> VerifyError {
    VerifyError::Mismatch(why.into())
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
    pub fn find_original(&self, reference: &str) -> Result<Option<Sealed>, SealError> {
        if let Some(found) = self.find_by_auth_code(reference)? {
            return Ok(Some(found));
        }
        match self.find_by_dgi_code(reference)? {
            Some((outlet, seq)) => self.load(&outlet, seq),
            None => Ok(None),
        }
    }
}
