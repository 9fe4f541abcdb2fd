//! Public keys, signatures and verification (p256, pure Rust, wasm-capable).

use std::fmt;

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature as P256Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

use crate::error::VerifyError;

/// The one algorithm: ECDSA over P-256 with SHA-256, signing the 32-byte
/// digest as a prehash (PKCS#11 `CKM_ECDSA` semantics), signatures as raw
/// `r ‖ s` (64 bytes, big-endian) with `s` in the lower half of the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA P-256 / SHA-256, prehash, raw r‖s, low-S.
    EcdsaP256Sha256,
}

impl Algorithm {
    /// The name used in sealed payloads.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ES256-prehash-lowS",
        }
    }
}

/// A 64-byte raw `r ‖ s` signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// Parses raw `r ‖ s` and normalizes `s` to the lower half of the order
    /// (what every backend returns, whatever its device produced).
    ///
    /// # Errors
    /// [`VerifyError::MalformedSignature`] for a wrong length or a zero or
    /// out-of-range scalar.
    pub fn from_raw_normalized(bytes: &[u8]) -> Result<Self, VerifyError> {
        let sig = P256Signature::from_slice(bytes)
            .map_err(|e| VerifyError::MalformedSignature(e.to_string()))?;
        let sig = sig.normalize_s().unwrap_or(sig);
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig.to_bytes());
        Ok(Self(out))
    }

    /// Lowercase hex.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

/// A P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    spki_der: Vec<u8>,
    key_id: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// `p256:` followed by the first 16 hex digits of SHA-256(SPKI DER): short,
/// stable, and derived from the key itself so it cannot be mislabelled.
#[must_use]
pub fn key_id_of(spki_der: &[u8]) -> String {
    format!("p256:{}", hex::encode(&Sha256::digest(spki_der)[..8]))
}

impl PublicKey {
    /// From a verifying key.
    ///
    /// # Errors
    /// [`VerifyError::MalformedKey`] if it cannot be encoded.
    pub fn from_verifying_key(key: VerifyingKey) -> Result<Self, VerifyError> {
        let spki_der = key
            .to_public_key_der()
            .map_err(|e| VerifyError::MalformedKey(e.to_string()))?
            .into_vec();
        let key_id = key_id_of(&spki_der);
        Ok(Self {
            key,
            spki_der,
            key_id,
        })
    }

    /// From SubjectPublicKeyInfo DER.
    ///
    /// # Errors
    /// [`VerifyError::MalformedKey`].
    pub fn from_spki_der(der: &[u8]) -> Result<Self, VerifyError> {
        let key = VerifyingKey::from_public_key_der(der)
            .map_err(|e| VerifyError::MalformedKey(e.to_string()))?;
        Self::from_verifying_key(key)
    }

    /// From PEM (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    /// [`VerifyError::MalformedKey`].
    pub fn from_pem(pem: &str) -> Result<Self, VerifyError> {
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| VerifyError::MalformedKey(e.to_string()))?;
        Self::from_verifying_key(key)
    }

    /// From an uncompressed or compressed SEC1 point.
    ///
    /// # Errors
    /// [`VerifyError::MalformedKey`].
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, VerifyError> {
        let key = VerifyingKey::from_sec1_bytes(bytes)
            .map_err(|e| VerifyError::MalformedKey(e.to_string()))?;
        Self::from_verifying_key(key)
    }

    /// SubjectPublicKeyInfo DER.
    #[must_use]
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// SubjectPublicKeyInfo PEM.
    #[must_use]
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// The key id (see [`key_id_of`]).
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Standard ECDSA verification of a digest (accepts high-S, as the
    /// standard does; used for external vectors).
    ///
    /// # Errors
    /// [`VerifyError::BadSignature`].
    pub fn verify_digest_standard(
        &self,
        digest: &[u8; 32],
        sig: &P256Signature,
    ) -> Result<(), VerifyError> {
        self.key
            .verify_prehash(digest, sig)
            .map_err(|_| VerifyError::BadSignature(self.key_id.clone()))
    }

    /// Strict verification of one of our signatures: raw `r ‖ s`, low-S
    /// required (so a signature, and the authentication code derived from
    /// it, is unique per sealed content), over a 32-byte digest.
    ///
    /// # Errors
    /// [`VerifyError`] saying why.
    pub fn verify_digest(&self, digest: &[u8; 32], sig: &Signature) -> Result<(), VerifyError> {
        let parsed = P256Signature::from_slice(&sig.0)
            .map_err(|e| VerifyError::MalformedSignature(e.to_string()))?;
        if parsed.normalize_s().is_some() {
            return Err(VerifyError::HighS);
        }
        self.verify_digest_standard(digest, &parsed)
    }
}

/// SHA-256 with a domain tag, the form of every digest we sign.
#[must_use]
pub fn domain_digest(domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}
