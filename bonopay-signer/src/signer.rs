//! The signer trait every backend implements.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::SignerError;
use crate::key::{Algorithm, PublicKey, Signature, domain_digest};

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
    /// Stable key id (derived from the public key, see [`crate::key_id_of`]).
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

/// Fault injection over a real signer: switch it "down" and "up" at will,
/// or fail the n-th call. For tests of what the pipeline does when the
/// signer fails; the signatures it does produce are the real signer's.
#[derive(Debug)]
pub struct FaultySigner<S> {
    inner: S,
    down: AtomicBool,
    fail_nth: AtomicU64,
    calls: AtomicU64,
}

impl<S: Signer> FaultySigner<S> {
    /// Up, with no fault armed.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
            fail_nth: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        }
    }

    /// While down, every `sign` fails with [`SignerError::DeviceFailure`].
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Fails the n-th call from now (1 = the next one).
    pub fn fail_nth(&self, n: u64) {
        self.calls.store(0, Ordering::SeqCst);
        self.fail_nth.store(n, Ordering::SeqCst);
    }
}

impl<S: Signer> Signer for FaultySigner<S> {
    fn key_id(&self) -> &str {
        self.inner.key_id()
    }

    fn public_key(&self) -> &PublicKey {
        self.inner.public_key()
    }

    fn sign(&self, digest: &[u8; 32]) -> Result<SignOutput, SignerError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.down.load(Ordering::SeqCst) || n == self.fail_nth.load(Ordering::SeqCst) {
            return Err(SignerError::DeviceFailure(
                "injected fault: signer down".into(),
            ));
        }
        self.inner.sign(digest)
    }
}
