//! The signer component: the [`Signer`] trait every backend implements,
//! public keys and signatures ([`PublicKey`], [`Signature`]), and the
//! backends (software p256 and aws-lc-rs, PKCS#11, the simulated fiscal
//! memory device).
//!
//! It sits below everything else in the crate: the sealed formats, the
//! pipeline and the verifiers use it, it uses none of them. Verification
//! ([`PublicKey::verify_digest`], [`verify_output`]) is pure p256 and builds
//! for wasm; key generation needs the `os-rng` feature and the hardware
//! backend the `pkcs11` feature. Test helpers (`FaultySigner` and the
//! conformance suite every backend runs) are behind the `testing` feature.

use std::fmt::Debug;

#[cfg(feature = "testing")]
pub mod conformance;
mod device;
#[cfg(feature = "testing")]
mod faulty;
mod key;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
mod software;

pub use crate::error::SignerError;
pub use device::SimulatedDef;
#[cfg(feature = "testing")]
pub use faulty::FaultySigner;
pub use key::{Algorithm, PublicKey, Signature, domain_digest, key_id_of};
#[cfg(feature = "aws-lc")]
pub use software::AwsLcSigner;
pub use software::SoftwareSigner;

/// What a signer returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct SignOutput {
    /// Raw `r ‖ s`, low-S.
    pub signature: Signature,
    /// For a fiscal memory device (DEF) that keeps its own counter: the
    /// counter value it bound into this signature (see [`device_digest`]).
    pub device_counter: Option<u64>,
}

/// Signs 32-byte SHA-256 digests with an ECDSA P-256 key.
///
/// Synchronous, object-safe and fallible: an HSM or a USB device can be
/// slow, absent or broken, and the sealing pipeline must turn that into a
/// retryable error with nothing appended. Implementations never put key
/// material in `Debug` output or in errors.
pub trait Signer: Debug + Send + Sync {
    /// Stable key id (derived from the public key, see [`key_id_of`]).
    fn key_id(&self) -> &str;

    /// The algorithm; there is one today.
    fn algorithm(&self) -> Algorithm {
        Algorithm::EcdsaP256Sha256
    }

    /// The public key (SPKI DER and PEM through [`PublicKey`]).
    fn public_key(&self) -> &PublicKey;

    /// Signs `digest` as a prehash. A device-backed signer with its own
    /// counter signs [`device_digest`]`(digest, counter)` instead and reports
    /// the counter in [`SignOutput::device_counter`].
    ///
    /// # Errors
    /// [`SignerError`]; [`SignerError::is_retryable`] says whether to retry.
    fn sign(&self, digest: &[u8; 32]) -> Result<SignOutput, SignerError>;
}

/// Domain tag a fiscal memory device uses to bind its counter.
pub const DEVICE_DOMAIN: &[u8] = b"bonopay/v1/def-counter\0";

/// The digest a counter-keeping device actually signs:
/// `SHA-256("bonopay/v1/def-counter\0" ‖ digest ‖ counter as 8 bytes big-endian)`.
#[must_use]
pub fn device_digest(digest: &[u8; 32], counter: u64) -> [u8; 32] {
    domain_digest(DEVICE_DOMAIN, &[digest, &counter.to_be_bytes()])
}

/// Verifies a [`SignOutput`] for `digest` under `key`, device counter included.
///
/// # Errors
/// [`crate::VerifyError`] saying why.
pub fn verify_output(
    key: &PublicKey,
    digest: &[u8; 32],
    out: &SignOutput,
) -> Result<(), crate::VerifyError> {
    match out.device_counter {
        None => key.verify_digest(digest, &out.signature),
        Some(c) => key.verify_digest(&device_digest(digest, c), &out.signature),
    }
}

macro_rules! forward_signer {
    ($($ty:ty),*) => {$(
        impl<S: Signer + ?Sized> Signer for $ty {
            fn key_id(&self) -> &str { (**self).key_id() }
            fn algorithm(&self) -> Algorithm { (**self).algorithm() }
            fn public_key(&self) -> &PublicKey { (**self).public_key() }
            fn sign(&self, digest: &[u8; 32]) -> Result<SignOutput, SignerError> { (**self).sign(digest) }
        }
    )*};
}

forward_signer!(std::sync::Arc<S>, Box<S>, &S);
