//! Signature checks over a ledger store: the [`bonopay_ledger::EntryCheck`]
//! that makes the ledger verifier check every seal and every signed event.

use std::sync::Mutex;

use bonopay_ledger::Entry;

use super::CertificationLinks;
use crate::sealed::SealedInvoice;

/// An [`bonopay_ledger::EntryCheck`] that verifies each sealed invoice's
/// signature and binds it to its ledger entry (seq, previous hash, fiscal
/// number), so the ledger verifier now checks every signature too.
///
/// Walked in chain order (as the ledger verifier does), it also checks that
/// every certification entry is linked to the invoice it names
/// ([`CertificationLinks`]).
#[derive(Debug)]
pub struct SignatureCheck {
    keys: Vec<crate::PublicKey>,
    links: Mutex<CertificationLinks>,
}

impl Clone for SignatureCheck {
    /// The keys; a clone starts a walk of its own.
    fn clone(&self) -> Self {
        Self::new(self.keys.clone())
    }
}

impl SignatureCheck {
    /// Trusting these public keys (every key the outlet ever signed with).
    #[must_use]
    pub fn new(keys: Vec<crate::PublicKey>) -> Self {
        Self {
            keys,
            links: Mutex::new(CertificationLinks::default()),
        }
    }

    /// The signature checks alone, which depend on no other entry (so a
    /// verifier may run them on several threads, out of order).
    ///
    /// # Errors
    /// Why the entry's signature or seal does not hold.
    pub fn check_signature(&self, entry: &Entry) -> Result<(), String> {
        if crate::event::schema_of(entry.kind).is_some() {
            return crate::event::verify_event(entry, &self.keys)
                .map(|_| ())
                .map_err(|e| format!("signed {}: {e}", entry.kind));
        }
        if !entry.kind.is_numbered() {
            return Ok(());
        }
        let sealed = SealedInvoice::verify(&entry.payload, &self.keys)
            .map_err(|e| format!("sealed invoice: {e}"))?;
        if sealed.tuple.seq != entry.seq || sealed.tuple.prev_hash != hex::encode(entry.prev_hash) {
            return Err("the signed position (seq, prev_hash) is not the entry's".into());
        }
        let number = entry
            .fiscal_number
            .map(|n| n.to_string())
            .unwrap_or_default();
        if sealed.tuple.counters != number || sealed.tuple.outlet != entry.outlet {
            return Err(format!(
                "the signed fiscal number {} is not the entry's {number}",
                sealed.tuple.counters
            ));
        }
        Ok(())
    }
}

impl bonopay_ledger::EntryCheck for SignatureCheck {
    fn check(&self, entry: &Entry) -> Result<(), String> {
        self.check_signature(entry)?;
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .see(entry)
    }
}
