//! The conformance suite every [`Signer`] backend must pass. Signatures are
//! checked by verifying them with the public key alone (the p256 verifier);
//! they are never compared as bytes, because HSMs sign with random nonces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::thread;

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::pkcs8::DecodePublicKey;

use crate::{PublicKey, Signer, device_digest, domain_digest, key_id_of, verify_output};

fn digest(i: u32) -> [u8; 32] {
    domain_digest(b"bonopay/test\0", &[&i.to_be_bytes()])
}

/// Runs every check against `signer`.
pub fn run_all(signer: Arc<dyn Signer>) {
    identity(&*signer);
    signs_and_verifies(&*signer);
    rejects_wrong_data(&*signer);
    concurrent(Arc::clone(&signer));
    no_secrets_in_debug(&*signer);
}

/// Key id and public key forms agree.
pub fn identity(signer: &dyn Signer) {
    let pk = signer.public_key();
    assert_eq!(signer.key_id(), pk.key_id());
    assert_eq!(pk.key_id(), key_id_of(pk.spki_der()));
    let from_pem = PublicKey::from_pem(&pk.to_pem()).unwrap();
    assert_eq!(
        from_pem.spki_der(),
        pk.spki_der(),
        "PEM and DER describe the same key"
    );
    assert_eq!(
        PublicKey::from_spki_der(pk.spki_der()).unwrap().key_id(),
        signer.key_id()
    );
    assert_eq!(signer.algorithm().as_str(), "ES256-prehash-lowS");
}

/// Signatures verify with the public key alone, and are low-S.
pub fn signs_and_verifies(signer: &dyn Signer) {
    let vk =
        p256::ecdsa::VerifyingKey::from_public_key_der(signer.public_key().spki_der()).unwrap();
    for i in 0..20 {
        let d = digest(i);
        let out = signer.sign(&d).unwrap();
        verify_output(signer.public_key(), &d, &out).unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&out.signature.0).unwrap();
        assert!(sig.normalize_s().is_none(), "signature must be low-S");
        // Independently, with p256's own prehash verifier.
        let signed = match out.device_counter {
            Some(c) => device_digest(&d, c),
            None => d,
        };
        vk.verify_prehash(&signed, &sig).unwrap();
    }
}

/// A signature does not verify for other data, and a flipped bit breaks it.
pub fn rejects_wrong_data(signer: &dyn Signer) {
    let d = digest(1000);
    let out = signer.sign(&d).unwrap();
    assert!(verify_output(signer.public_key(), &digest(1001), &out).is_err());
    let mut bad = out;
    bad.signature.0[10] ^= 1;
    assert!(verify_output(signer.public_key(), &d, &bad).is_err());
    if let Some(c) = out.device_counter {
        let mut other = out;
        other.device_counter = Some(c + 1);
        assert!(
            verify_output(signer.public_key(), &d, &other).is_err(),
            "the device counter is bound"
        );
    }
}

/// Many threads sign at once; every signature verifies.
pub fn concurrent(signer: Arc<dyn Signer>) {
    let handles: Vec<_> = (0..4u32)
        .map(|t| {
            let s = Arc::clone(&signer);
            thread::spawn(move || {
                for i in 0..25u32 {
                    let d = digest(t * 1000 + i);
                    let out = s.sign(&d).unwrap();
                    verify_output(s.public_key(), &d, &out).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// `Debug` shows the key id, never key material.
pub fn no_secrets_in_debug(signer: &dyn Signer) {
    let dbg = format!("{signer:?}");
    assert!(dbg.contains(signer.key_id()), "{dbg}");
    for bad in ["PRIVATE", "secret", "SigningKey", "BEGIN"] {
        assert!(!dbg.contains(bad), "Debug output leaks `{bad}`: {dbg}");
    }
}
