//! Fault injection over a real signer, for tests of what the pipeline does
//! when signing fails (feature `testing`: never in a production build).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{PublicKey, SignOutput, Signer, SignerError};

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
