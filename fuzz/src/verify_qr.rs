//! The `verify_qr` property: the `BPV1:` verification payload that anyone
//! can send to the public `GET /v1/verify` (`bonopay_signer::verify_qr`).
//!
//! For any input bytes (read as UTF-8, lossily, as the server's query
//! string decoder would hand them over):
//!
//! 1. `verify_qr` does not panic;
//! 2. when it accepts (under the seed corpus key,
//!    `fuzz/keys/seed-signer.pub.pem`), the code it returns is the one
//!    derived from the signature, and the payload written back in
//!    canonical form (`BPV1:` + base64url of the JCS of
//!    `{device_counter?, signature, tuple}`) verifies to the same tuple
//!    and code;
//! 3. no single-character change (at about 48 sampled positions) of the
//!    canonical payload verifies to a
//!    *different* tuple or code (it may still verify to the same one, e.g.
//!    trailing whitespace, which the reader trims): one byte cannot forge.
//!
//! Compiled twice, like every property here (fuzz crate and stable replay).

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bonopay_signer::{PublicKey, VERIFY_QR_PREFIX, VerifiedQr, verify_qr};

/// The public key of the seed corpus's signer.
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
    /// Refused with an error.
    Refused,
    /// Verified under the seed key.
    Verified,
}

/// The canonical `BPV1:` text for what a payload proved: the JCS of the
/// members, base64url without padding. Built here, not by the signer.
#[must_use]
pub fn canonical_text(text: &str, q: &VerifiedQr) -> Option<String> {
    // The signature and device counter are read back from the payload
    // itself (the verified result does not carry them).
    let b64 = text.strip_prefix(VERIFY_QR_PREFIX)?.trim();
    let raw = URL_SAFE_NO_PAD.decode(b64).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let mut json = format!(
        "{{\"signature\":{},\"tuple\":{}",
        v.get("signature")?,
        serde_json::to_string(&q.tuple).ok()?
    );
    if let Some(c) = v.get("device_counter").filter(|c| !c.is_null()) {
        json.push_str(&format!(",\"device_counter\":{c}"));
    }
    json.push('}');
    let jcs = bonopay_core::jcs(&json).ok()?;
    Some(format!(
        "{VERIFY_QR_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(jcs.as_bytes())
    ))
}

/// Checks the property on `data`, panicking on a violation.
#[allow(clippy::panic)]
#[must_use]
pub fn check(data: &[u8]) -> Outcome {
    let key = seed_key();
    let text = String::from_utf8_lossy(data);
    let Ok(q) = verify_qr(&text, key) else {
        return Outcome::Refused;
    };
    assert_eq!(q.tuple.key_id, key.key_id(), "verified under another key");
    let Some(canon) = canonical_text(&text, &q) else {
        panic!("an accepted QR payload does not re-encode: {text}");
    };
    match verify_qr(&canon, key) {
        Ok(q2) => assert_eq!(q2, q, "the canonical form proves something else"),
        Err(e) => panic!("the canonical form of an accepted QR is refused: {e}\n{canon}"),
    }
    let bytes = canon.as_bytes();
    let mut m = bytes.to_vec();
    // About 48 positions, so an accepted input (rare, but libFuzzer finds
    // trimmed-whitespace variants) stays cheap to check.
    for pos in (0..m.len()).step_by((m.len() / 48).max(1)) {
        for mask in [0x01u8, 0x20] {
            m[pos] ^= mask;
            if let Ok(other) = verify_qr(&String::from_utf8_lossy(&m), key) {
                assert_eq!(other, q, "byte {pos} ^ {mask:#04x} forged another tuple");
            }
            m[pos] ^= mask;
        }
    }
    Outcome::Verified
}
