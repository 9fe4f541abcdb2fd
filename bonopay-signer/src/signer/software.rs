//! Software signers: p256 (portable, pure Rust, deterministic RFC 6979) and,
//! behind the `aws-lc` feature, aws-lc-rs (about 8x faster here).

use std::fmt;
use std::path::Path;

use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use zeroize::Zeroizing;

use crate::error::SignerError;
use crate::signer::{PublicKey, Signature};
use crate::signer::{SignOutput, Signer};

/// A P-256 key held in process memory, signing with the `p256` crate.
pub struct SoftwareSigner {
    key: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for SoftwareSigner {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareSigner")
            .field("key_id", &self.public.key_id())
            .finish_non_exhaustive()
    }
}

impl SoftwareSigner {
    /// A fresh random key from the OS RNG.
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`] if the public key cannot be derived.
    #[cfg(feature = "os-rng")]
    pub fn generate() -> Result<Self, SignerError> {
        Self::from_signing_key(SigningKey::random(&mut rand_core::OsRng))
    }

    fn from_signing_key(key: SigningKey) -> Result<Self, SignerError> {
        let public = PublicKey::from_verifying_key(*key.verifying_key())
            .map_err(|e| SignerError::InvalidKey(e.to_string()))?;
        Ok(Self { key, public })
    }

    /// Loads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`] (the message never echoes the key).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SignerError> {
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| SignerError::InvalidKey("not a PKCS#8 PEM P-256 private key".into()))?;
        Self::from_signing_key(key)
    }

    /// Loads a PKCS#8 DER private key.
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignerError> {
        let key = SigningKey::from_pkcs8_der(der)
            .map_err(|_| SignerError::InvalidKey("not a PKCS#8 DER P-256 private key".into()))?;
        Self::from_signing_key(key)
    }

    /// The PKCS#8 PEM form, zeroized on drop.
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`].
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, SignerError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|s| Zeroizing::new(s.to_string()))
            .map_err(|e| SignerError::InvalidKey(e.to_string()))
    }

    /// The PKCS#8 DER form, zeroized on drop.
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`].
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, SignerError> {
        self.key
            .to_pkcs8_der()
            .map(|d| Zeroizing::new(d.as_bytes().to_vec()))
            .map_err(|e| SignerError::InvalidKey(e.to_string()))
    }

    /// Loads a key file written by [`Self::save`].
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`] when the file is missing or malformed.
    pub fn load(path: &Path) -> Result<Self, SignerError> {
        let pem = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            SignerError::InvalidKey(format!("cannot read {}: {e}", path.display()))
        })?);
        Self::from_pkcs8_pem(&pem)
    }

    /// Writes the key as PKCS#8 PEM, readable by the owner only, atomically
    /// (temporary file, fsync, rename): a crash never leaves half a key.
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`] on I/O failure or if the file exists.
    pub fn save(&self, path: &Path) -> Result<(), SignerError> {
        use std::io::Write;
        let io = |e: std::io::Error| {
            SignerError::InvalidKey(format!("cannot write {}: {e}", path.display()))
        };
        if path.exists() {
            return Err(SignerError::InvalidKey(format!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            )));
        }
        let pem = self.to_pkcs8_pem()?;
        let tmp = path.with_extension("tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(pem.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

impl Signer for SoftwareSigner {
    fn key_id(&self) -> &str {
        self.public.key_id()
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, digest: &[u8; 32]) -> Result<SignOutput, SignerError> {
        let sig: p256::ecdsa::Signature = self
            .key
            .sign_prehash(digest)
            .map_err(|_| SignerError::DeviceFailure("p256 signing failed".into()))?;
        let signature = Signature::from_raw_normalized(&sig.to_bytes())
            .map_err(|e| SignerError::DeviceFailure(e.to_string()))?;
        Ok(SignOutput {
            signature,
            device_counter: None,
        })
    }
}

#[cfg(feature = "aws-lc")]
pub use aws::AwsLcSigner;

#[cfg(feature = "aws-lc")]
mod aws {
    use std::fmt;

    use aws_lc_rs::digest::{Digest, SHA256};
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    use crate::error::SignerError;
    use crate::signer::{PublicKey, Signature};
    use crate::signer::{SignOutput, Signer};

    /// A P-256 key in process memory, signing with aws-lc-rs `sign_digest`
    /// (a true prehash, like `CKM_ECDSA`). Loads the same PKCS#8 files as
    /// [`super::SoftwareSigner`].
    pub struct AwsLcSigner {
        pair: EcdsaKeyPair,
        public: PublicKey,
    }

    impl fmt::Debug for AwsLcSigner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("AwsLcSigner")
                .field("key_id", &self.public.key_id())
                .finish_non_exhaustive()
        }
    }

    impl AwsLcSigner {
        /// From PKCS#8 DER.
        ///
        /// # Errors
        /// [`SignerError::InvalidKey`].
        pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignerError> {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .map_err(|_| SignerError::InvalidKey("not a PKCS#8 P-256 private key".into()))?;
            let public = PublicKey::from_sec1(pair.public_key().as_ref())
                .map_err(|e| SignerError::InvalidKey(e.to_string()))?;
            Ok(Self { pair, public })
        }

        /// From PKCS#8 PEM.
        ///
        /// # Errors
        /// [`SignerError::InvalidKey`].
        pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SignerError> {
            let sw = super::SoftwareSigner::from_pkcs8_pem(pem)?;
            Self::from_pkcs8_der(&sw.to_pkcs8_der()?)
        }
    }

    impl Signer for AwsLcSigner {
        fn key_id(&self) -> &str {
            self.public.key_id()
        }

        fn public_key(&self) -> &PublicKey {
            &self.public
        }

        fn sign(&self, digest: &[u8; 32]) -> Result<SignOutput, SignerError> {
            let d = Digest::import_less_safe(digest, &SHA256)
                .map_err(|_| SignerError::DeviceFailure("digest import failed".into()))?;
            let sig = self
                .pair
                .sign_digest(&d)
                .map_err(|_| SignerError::DeviceFailure("aws-lc signing failed".into()))?;
            let signature = Signature::from_raw_normalized(sig.as_ref())
                .map_err(|e| SignerError::DeviceFailure(e.to_string()))?;
            Ok(SignOutput {
                signature,
                device_counter: None,
            })
        }
    }
}
