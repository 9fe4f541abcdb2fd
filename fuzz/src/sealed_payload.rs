//! The `sealed_payload` property: the sealed-invoice reader
//! (`SealedInvoice::read_own` and `SealedInvoice::verify`), which reads
//! payloads from ledgers, exports and auditors' files.
//!
//! For any input bytes:
//!
//! 1. neither reader panics, and `verify` never accepts what `read_own`
//!    refuses (it checks strictly more);
//! 2. whatever `read_own` accepts can be written back from its parts (an
//!    independent JCS serialization, through `bonopay_core::jcs`) and reads
//!    back to the same parts, with the authentication code derived from
//!    the signature;
//! 3. whatever `verify` accepts (under the seed corpus key,
//!    `fuzz/keys/seed-signer.pub.pem`) is byte for byte that independent
//!    serialization: a seal has one spelling only. Its verification QR
//!    verifies to the same tuple and code, and no single-byte change of
//!    it (sampled positions, and every character of the signature)
//!    verifies.
//!
//! A violation panics. This file is compiled twice: by the fuzz crate and,
//! via `#[path]`, by the stable corpus replay test in
//! `bonopay-server-example`. It needs only `bonopay-core`,
//! `bonopay-signer`, `serde_json` and std.

use std::sync::OnceLock;

use bonopay_signer::{PublicKey, SealedInvoice, auth_code_of, format_auth_code, verify_qr};

/// The public key of the seed corpus's signer (a throwaway test key whose
/// private half is `fuzz/keys/seed-signer.pem`).
pub const SEED_KEY_PEM: &str = include_str!("../keys/seed-signer.pub.pem");

/// The seed corpus key, parsed once.
///
/// # Panics
/// If the committed PEM does not parse (a broken checkout).
#[must_use]
#[allow(clippy::expect_used)]
pub fn seed_key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| PublicKey::from_pem(SEED_KEY_PEM).expect("fuzz/keys/seed-signer.pub.pem"))
}

/// What one input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused by both readers.
    Refused,
    /// Read by `read_own` (well formed) but refused by `verify`.
    ReadOnly,
    /// Verified under the seed key.
    Verified,
}

/// The payload an auditor's tool would write from the parts, serialized
/// independently of `bonopay-signer` (JSON text, then RFC 8785 by
/// `bonopay_core::jcs`). `None` when the parts do not make JSON.
#[must_use]
pub fn reserialize(s: &SealedInvoice) -> Option<Vec<u8>> {
    let tuple = serde_json::to_string(&s.tuple).ok()?;
    let mut text = format!(
        "{{\"auth_code\":{},\"body\":{},\"signature\":\"{}\",\"tuple\":{tuple}",
        serde_json::to_string(&s.elements.authentication_code).ok()?,
        s.body,
        s.signature.to_hex(),
    );
    if let Some(c) = s.device_counter {
        text.push_str(&format!(",\"device_counter\":{c}"));
    }
    text.push('}');
    bonopay_core::jcs(&text).ok().map(String::into_bytes)
}

/// Positions whose single-byte changes are tried on a verified payload:
/// about 24 spread over it, plus every character of the signature.
fn mutation_positions(data: &[u8]) -> Vec<usize> {
    let mut at: Vec<usize> = (0..data.len()).step_by((data.len() / 24).max(1)).collect();
    let marker = b"\"signature\":\"";
    if let Some(start) = data.windows(marker.len()).position(|w| w == marker) {
        let from = start + marker.len();
        at.extend((from..from + 128).filter(|&i| i < data.len()));
    }
    at
}

/// Checks the property on `data`, panicking on a violation.
#[allow(clippy::panic)]
#[must_use]
pub fn check(data: &[u8]) -> Outcome {
    let key = seed_key();
    let own = SealedInvoice::read_own(data);
    let verified = SealedInvoice::verify(data, key);

    let own = match (own, &verified) {
        (Err(e), Ok(_)) => panic!("verify accepted a payload read_own refuses: {e}"),
        (Err(_), Err(_)) => return Outcome::Refused,
        (Ok(own), _) => own,
    };

    // 2. Written back from its parts, it reads back to the same parts.
    assert_eq!(
        own.elements.authentication_code,
        auth_code_of(&own.signature),
        "auth code not derived from the signature"
    );
    assert_eq!(
        own.elements.authentication_code_display,
        format_auth_code(&own.elements.authentication_code)
    );
    assert_eq!(own.payload, data, "payload is not the bytes read");
    let Some(again) = reserialize(&own) else {
        panic!("the parts of an accepted payload do not make JSON: {own:?}");
    };
    let own2 = match SealedInvoice::read_own(&again) {
        Ok(s) => s,
        Err(e) => panic!(
            "the re-serialized payload is refused: {e}\n{}",
            String::from_utf8_lossy(&again)
        ),
    };
    assert_eq!(own2.tuple, own.tuple);
    assert_eq!(own2.body, own.body, "body is not a JCS fixed point");
    assert_eq!(own2.signature, own.signature);
    assert_eq!(own2.device_counter, own.device_counter);
    assert_eq!(own2.elements, own.elements);

    let Ok(v) = verified else {
        return Outcome::ReadOnly;
    };
    // 3. One spelling, a QR that agrees, no forgery by one byte.
    if again != data {
        panic!(
            "a verified seal has a second spelling:\n read: {}\n  JCS: {}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&again)
        );
    }
    match verify_qr(&v.elements.verification_qr, key) {
        Ok(q) => {
            assert_eq!(q.tuple, v.tuple, "the QR's tuple differs");
            assert_eq!(q.authentication_code, v.elements.authentication_code);
        }
        Err(e) => panic!("the QR of a verified seal does not verify: {e}"),
    }
    let mut m = data.to_vec();
    for pos in mutation_positions(data) {
        for mask in [0x01u8, 0x20, 0x80] {
            m[pos] ^= mask;
            if SealedInvoice::verify(&m, key).is_ok() {
                panic!(
                    "byte {pos} ^ {mask:#04x} still verifies: {}",
                    String::from_utf8_lossy(&m)
                );
            }
            m[pos] ^= mask;
        }
    }
    Outcome::Verified
}
