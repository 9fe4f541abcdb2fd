//! The seam between the agent and the ledger: [`CertificationRecorder`]
//! binds the DGI's elements into the tamper-evident record (the
//! [`Fiscalizer`] implements it), so the agent is testable without one.

use bonopay_signer::certification::{Certification, CertificationSource};
use bonopay_signer::{Fiscalizer, SealError};

/// Binds the DGI's elements into the tamper-evident record, and answers
/// what credit notes need about their originals. The [`Fiscalizer`] is the
/// implementation; the trait keeps the agent testable without one.
pub trait CertificationRecorder: std::fmt::Debug + Send + Sync {
    /// Records the elements of the invoice at `outlet`/`seq` (exactly
    /// once: recording the same elements again is not an error).
    ///
    /// # Errors
    /// A message; the agent retries later.
    fn record(
        &self,
        outlet: &str,
        seq: u64,
        elements: &crate::dgi::DgiConfirmation,
        source: CertificationSource,
        uid: Option<&str>,
    ) -> Result<(), RecordError>;

    /// The invoice a credit note's reference names (its Bono Pay code or
    /// its Code DEF/DGI): outlet and seq.
    ///
    /// # Errors
    /// A message.
    fn original(&self, reference: &str) -> Result<Option<(String, u64)>, RecordError>;

    /// The Code DEF/DGI the invoice at `outlet`/`seq` was certified with.
    ///
    /// # Errors
    /// A message.
    fn dgi_code(&self, outlet: &str, seq: u64) -> Result<Option<String>, RecordError>;
}

/// Why recording failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Worth retrying (signer or storage down).
    #[error("cannot record now: {0}")]
    Unavailable(String),
    /// Never going to work for these elements (the invoice is certified
    /// with others, or the elements cannot be genuine).
    #[error("refused: {0}")]
    Refused(String),
}

fn record_error(e: SealError) -> RecordError {
    if e.is_retryable() {
        RecordError::Unavailable(e.to_string())
    } else {
        RecordError::Refused(e.to_string())
    }
}

impl CertificationRecorder for Fiscalizer {
    fn record(
        &self,
        outlet: &str,
        seq: u64,
        elements: &crate::dgi::DgiConfirmation,
        source: CertificationSource,
        uid: Option<&str>,
    ) -> Result<(), RecordError> {
        self.record_certification(outlet, seq, elements, source, uid)
            .map(|_| ())
            .map_err(record_error)
    }

    fn original(&self, reference: &str) -> Result<Option<(String, u64)>, RecordError> {
        self.find_original(reference)
            .map(|o| o.map(|s| (s.invoice.tuple.outlet.clone(), s.seq)))
            .map_err(record_error)
    }

    fn dgi_code(&self, outlet: &str, seq: u64) -> Result<Option<String>, RecordError> {
        self.certification_of(outlet, seq)
            .map(|c| c.map(|c: Certification| c.elements.code_def_dgi))
            .map_err(record_error)
    }
}
