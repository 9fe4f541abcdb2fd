//! Signer errors. They name *which* thing is unavailable (so an operator can
//! fix it) but never carry key material or token internals.

/// What went wrong while loading or using a signer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The PKCS#11 module (shared library) could not be loaded or initialized.
    #[error("PKCS#11 library unavailable: {0}")]
    LibraryUnavailable(String),
    /// No token with the configured label is present (never initialized, or removed).
    #[error("PKCS#11 token `{0}` not present")]
    TokenNotFound(String),
    /// The token refused the PIN.
    #[error("PKCS#11 PIN rejected by token `{0}`")]
    PinIncorrect(String),
    /// The PIN could not be read from its environment variable or file.
    #[error("PIN unavailable: {0}")]
    PinUnavailable(String),
    /// The key was not found on the token, or is not a P-256 key.
    #[error("signing key `{0}` not found")]
    KeyNotFound(String),
    /// A key file or key bytes could not be read.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The device failed to sign (transient: retry later).
    #[error("signing device failed: {0}")]
    DeviceFailure(String),
}

impl SignerError {
    /// Whether the same request may succeed later without operator action.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SignerError::DeviceFailure(_) | SignerError::TokenNotFound(_)
        )
    }
}

/// Why a signature or sealed invoice did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature bytes are malformed (length, encoding, zero, ≥ n).
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// `s` is in the upper half of the group order; our signatures are low-S only.
    #[error("signature is not low-S (malleated)")]
    HighS,
    /// The signature does not verify under the public key.
    #[error("signature does not verify under key {0}")]
    BadSignature(String),
    /// The public key is malformed or not P-256.
    #[error("malformed public key: {0}")]
    MalformedKey(String),
    /// The sealed data is inconsistent (hash, code, QR or field mismatch).
    #[error("{0}")]
    Mismatch(String),
    /// The key id is not one we know.
    #[error("unknown key id {0}")]
    UnknownKey(String),
}
