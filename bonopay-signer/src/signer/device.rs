//! The slot for the Phase 3 USB fiscal memory device (DEF).
//!
//! A DEF signs with a key that never leaves it and keeps its own monotonic
//! counter, which it binds into every signature ([`crate::device_digest`]).
//! The cloud ledger mirrors each DEF output (signature and device counter)
//! in the sealed entry, so the cloud's record and the device's memory can be
//! checked against each other. [`SimulatedDef`] is a software stand-in with
//! the same behaviour, persisted to a file so its counter survives restarts.

use std::fmt;
#[cfg(feature = "os-rng")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Mutex;

use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::DecodePrivateKey;

use crate::error::SignerError;
use crate::signer::SoftwareSigner;
use crate::signer::{PublicKey, Signature};
use crate::signer::{SignOutput, Signer, device_digest};

/// A simulated DEF: a P-256 key plus a counter that only goes up, stored in
/// a state file (`<key file>.counter`) that is rewritten atomically before a
/// signature is released, so a crash can skip a counter value but never
/// reuse one.
pub struct SimulatedDef {
    key: SigningKey,
    public: PublicKey,
    nid: String,
    counter_file: Option<PathBuf>,
    counter: Mutex<u64>,
}

impl fmt::Debug for SimulatedDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedDef")
            .field("nid", &self.nid)
            .field("key_id", &self.public.key_id())
            .finish_non_exhaustive()
    }
}

impl SimulatedDef {
    /// An in-memory device with a given key (counter starts at 0, lost on
    /// drop). Needs no RNG, so it is available everywhere.
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`].
    pub fn from_pkcs8_pem(nid: &str, pem: &str) -> Result<Self, SignerError> {
        let sw = SoftwareSigner::from_pkcs8_pem(pem)?;
        let key =
            SigningKey::from_pkcs8_pem(pem).map_err(|e| SignerError::InvalidKey(e.to_string()))?;
        Ok(Self {
            public: sw.public_key().clone(),
            key,
            nid: nid.to_owned(),
            counter_file: None,
            counter: Mutex::new(0),
        })
    }

    /// An in-memory device (counter starts at 0, lost on drop).
    #[cfg(feature = "os-rng")]
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`].
    pub fn ephemeral(nid: &str) -> Result<Self, SignerError> {
        let sw = SoftwareSigner::generate()?;
        let key = SigningKey::from_pkcs8_der(&sw.to_pkcs8_der()?)
            .map_err(|e| SignerError::InvalidKey(e.to_string()))?;
        Ok(Self {
            public: sw.public_key().clone(),
            key,
            nid: nid.to_owned(),
            counter_file: None,
            counter: Mutex::new(0),
        })
    }

    /// A device whose key lives in `key_file` (PKCS#8 PEM, created if
    /// missing) and whose counter lives next to it.
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`] on I/O or format problems.
    #[cfg(feature = "os-rng")]
    pub fn open(nid: &str, key_file: &Path) -> Result<Self, SignerError> {
        if !key_file.exists() {
            SoftwareSigner::generate()?.save(key_file)?;
        }
        let sw = SoftwareSigner::load(key_file)?;
        let key = SigningKey::from_pkcs8_der(&sw.to_pkcs8_der()?)
            .map_err(|e| SignerError::InvalidKey(e.to_string()))?;
        let counter_file = key_file.with_extension("counter");
        let counter = match std::fs::read_to_string(&counter_file) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|_| SignerError::InvalidKey("device counter file is corrupt".into()))?,
            Err(_) => 0,
        };
        Ok(Self {
            public: sw.public_key().clone(),
            key,
            nid: nid.to_owned(),
            counter_file: Some(counter_file),
            counter: Mutex::new(counter),
        })
    }

    /// The device id (NID) printed on receipts.
    #[must_use]
    pub fn nid(&self) -> &str {
        &self.nid
    }

    /// The last counter value issued.
    #[must_use]
    pub fn counter(&self) -> u64 {
        self.counter.lock().map(|c| *c).unwrap_or(0)
    }

    fn persist(&self, value: u64) -> Result<(), SignerError> {
        let Some(path) = &self.counter_file else {
            return Ok(());
        };
        let io = |e: std::io::Error| {
            SignerError::DeviceFailure(format!("device memory write failed: {e}"))
        };
        let tmp = path.with_extension("counter.tmp");
        std::fs::write(&tmp, value.to_string()).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

impl Signer for SimulatedDef {
    fn key_id(&self) -> &str {
        self.public.key_id()
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, digest: &[u8; 32]) -> Result<SignOutput, SignerError> {
        let mut counter = self
            .counter
            .lock()
            .map_err(|_| SignerError::DeviceFailure("device lock poisoned".into()))?;
        let next = *counter + 1;
        // Persist first: the device never releases a signature for a counter
        // value it could issue again after a power cut.
        self.persist(next)?;
        *counter = next;
        let sig: p256::ecdsa::Signature = self
            .key
            .sign_prehash(&device_digest(digest, next))
            .map_err(|_| SignerError::DeviceFailure("device signing failed".into()))?;
        let signature = Signature::from_raw_normalized(&sig.to_bytes())
            .map_err(|e| SignerError::DeviceFailure(e.to_string()))?;
        Ok(SignOutput {
            signature,
            device_counter: Some(next),
        })
    }
}
