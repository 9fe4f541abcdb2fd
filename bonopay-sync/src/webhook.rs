//! Webhook signatures: the pure signing and verification functions shared
//! by the sender (the reference server) and receivers. No I/O, no clock:
//! the caller passes the time.
//!
//! Every delivery carries three headers:
//!
//! ```text
//! Bonopay-Signature:  t=<unix seconds>,v1=<lowercase hex of HMAC-SHA256(secret, "<t>.<body>")>
//! Bonopay-Event-Id:   invoice.sealed:kin-gombe-01:42
//! Bonopay-Event-Type: invoice.sealed
//! ```
//!
//! The HMAC key is the subscriber's secret exactly as it was shown at
//! creation (its UTF-8 bytes, `whsec_` prefix included); the message is the
//! decimal timestamp, one `.`, then the raw request body, byte for byte
//! (verify before parsing the JSON).
//!
//! **Replay window.** A receiver must reject a delivery whose `t` is more
//! than [`REPLAY_WINDOW_SECS`] (300 s) away from its own clock, in either
//! direction, and should de-duplicate on `Bonopay-Event-Id`: deliveries are
//! at least once, and a retry is signed again with a fresh `t`.
//!
//! The header may carry several `v1=` signatures (for a secret rotation);
//! [`verify`] accepts the delivery if any of them matches. Unknown schemes
//! (`v2=…`) are ignored, so the header can evolve.
//!
//! ```
//! use bonopay_sync::webhook::{REPLAY_WINDOW_SECS, WebhookSignatureError, sign, verify};
//!
//! let secret = b"whsec_example";
//! let body = br#"{"id":"invoice.sealed:kin-gombe-01:1"}"#;
//! let header = sign(secret, 1_767_225_600, body);
//! assert!(header.starts_with("t=1767225600,v1="));
//! assert_eq!(verify(secret, &header, body, 1_767_225_630, REPLAY_WINDOW_SECS), Ok(()));
//! assert_eq!(
//!     verify(secret, &header, b"{}", 1_767_225_630, REPLAY_WINDOW_SECS),
//!     Err(WebhookSignatureError::BadSignature)
//! );
//! ```

use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Bonopay-Signature";
/// The header naming the event (unique; de-duplicate on it).
pub const EVENT_ID_HEADER: &str = "Bonopay-Event-Id";
/// The header naming the event type (`invoice.sealed`, …).
pub const EVENT_TYPE_HEADER: &str = "Bonopay-Event-Type";
/// How far, in seconds, a signature's timestamp may be from the receiver's
/// clock: 5 minutes.
pub const REPLAY_WINDOW_SECS: u64 = 300;

/// Why a delivery's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookSignatureError {
    /// The header is not `t=<seconds>,v1=<64 hex>[,…]`.
    #[error("malformed signature header: {0}")]
    MalformedHeader(&'static str),
    /// The signature is authentic but its timestamp is outside the replay
    /// window (a replay, or a clock far off).
    #[error("signature timestamp is {age_secs} s from now, outside the replay window")]
    OutsideWindow {
        /// `now - t`, in seconds (negative: from the future).
        age_secs: i64,
    },
    /// No signature matches the secret and the body.
    #[error("signature does not match")]
    BadSignature,
}

/// HMAC-SHA256 keyed with `secret`. The key block is built as RFC 2104 §2
/// says (a key longer than the 64-byte block is hashed first, then zero
/// padded), so the constructor cannot fail.
fn mac(secret: &[u8]) -> Hmac<Sha256> {
    let mut block = Key::<Hmac<Sha256>>::default();
    if secret.len() > block.len() {
        let h = Sha256::digest(secret);
        for (b, s) in block.iter_mut().zip(h.iter()) {
            *b = *s;
        }
    } else {
        for (b, s) in block.iter_mut().zip(secret) {
            *b = *s;
        }
    }
    <Hmac<Sha256> as KeyInit>::new(&block)
}

fn signed(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut m = mac(secret);
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex_32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [hi, lo] => (hex_nibble(*hi)?, hex_nibble(*lo)?),
            _ => return None,
        };
        *o = (hi << 4) | lo;
    }
    Some(out)
}

/// The `Bonopay-Signature` header value for `body` sent at `timestamp`
/// (Unix seconds): `t=<timestamp>,v1=<lowercase hex HMAC-SHA256(secret,
/// "<timestamp>.<body>")>`.
#[must_use]
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = signed(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex_lower(&tag))
}

/// Checks a `Bonopay-Signature` header against `secret` and the raw `body`,
/// at `now_secs` (the receiver's clock, Unix seconds), with a replay window
/// of `window_secs` (use [`REPLAY_WINDOW_SECS`]). The comparison is in
/// constant time (`hmac::Mac::verify_slice`).
///
/// # Errors
/// [`WebhookSignatureError::MalformedHeader`] if the header does not parse,
/// [`WebhookSignatureError::BadSignature`] if no `v1` signature matches,
/// [`WebhookSignatureError::OutsideWindow`] if it matches but `t` is more
/// than `window_secs` from `now_secs`.
pub fn verify(
    secret: &[u8],
    header_value: &str,
    body: &[u8],
    now_secs: i64,
    window_secs: u64,
) -> Result<(), WebhookSignatureError> {
    use WebhookSignatureError::MalformedHeader;
    let mut timestamp: Option<i64> = None;
    let mut candidates: Vec<[u8; 32]> = Vec::new();
    for part in header_value.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(MalformedHeader("an element is not key=value"))?;
        match k {
            "t" => {
                if timestamp.is_some() {
                    return Err(MalformedHeader("more than one t"));
                }
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(MalformedHeader("t is not a number of seconds"));
                }
                timestamp = Some(
                    v.parse()
                        .map_err(|_| MalformedHeader("t is out of range"))?,
                );
            }
            "v1" => candidates.push(hex_32(v).ok_or(MalformedHeader("v1 is not 64 hex digits"))?),
            _ => {}
        }
    }
    let t = timestamp.ok_or(MalformedHeader("no t"))?;
    if candidates.is_empty() {
        return Err(MalformedHeader("no v1 signature"));
    }
    let expected = signed(secret, t, body);
    if !candidates
        .iter()
        .any(|c| expected.clone().verify_slice(c).is_ok())
    {
        return Err(WebhookSignatureError::BadSignature);
    }
    if now_secs.abs_diff(t) > window_secs {
        return Err(WebhookSignatureError::OutsideWindow {
            age_secs: now_secs.saturating_sub(t),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const T: i64 = 1_767_225_600;
    const BODY: &[u8] = br#"{"id":"invoice.sealed:kin-gombe-01:1","type":"invoice.sealed"}"#;
    const SECRET: &[u8] = b"whsec_test_secret";

    // Expected HMACs computed independently with Python's standard library:
    //   python3 -c 'import hmac,hashlib; print(hmac.new(KEY, MSG, hashlib.sha256).hexdigest())'
    // with, for each vector, the KEY and MSG given in its comment.
    #[test]
    fn vectors() {
        // KEY = b"whsec_test_secret"
        // MSG = b'1767225600.{"id":"invoice.sealed:kin-gombe-01:1","type":"invoice.sealed"}'
        assert_eq!(
            sign(SECRET, T, BODY),
            "t=1767225600,v1=8020fef7fca030be09aa765a5167ae480d1ce92a59514466c697fb60d09f23a0"
        );
        // A key longer than the block (hashed first): KEY = b"k"*100, MSG = b"1700000000.hello"
        assert_eq!(
            sign(&[b'k'; 100], 1_700_000_000, b"hello"),
            "t=1700000000,v1=0e8d224aefc4953ac5f6c791d5ebec57dfbc0cde3ffbdbab5ee3cad02a696eba"
        );
        // Exactly one block: KEY = b"k"*64, MSG = b"1700000000.hello"
        assert_eq!(
            sign(&[b'k'; 64], 1_700_000_000, b"hello"),
            "t=1700000000,v1=6d140be49b17332e46ef2bd8075b6f9f63267b8dfb97848fe192714593109ffc"
        );
        // Empty key and body: KEY = b"", MSG = b"0."
        assert_eq!(
            sign(b"", 0, b""),
            "t=0,v1=b849d5a581847b281957065739df36df2463d1977ea8d6e1e4e6cf33fadc68c3"
        );
    }

    #[test]
    fn good_signature_verifies_inside_the_window() {
        let h = sign(SECRET, T, BODY);
        for now in [T, T + 1, T + 300, T - 300] {
            assert_eq!(verify(SECRET, &h, BODY, now, REPLAY_WINDOW_SECS), Ok(()));
        }
        // Spaces after commas and upper-case hex are tolerated.
        let (t, sig) = h.split_once(",v1=").unwrap();
        let spaced = format!("{t}, v1={}", sig.to_ascii_uppercase());
        assert_eq!(verify(SECRET, &spaced, BODY, T, 300), Ok(()));
    }

    #[test]
    fn wrong_secret_or_tampered_body_is_refused() {
        let h = sign(SECRET, T, BODY);
        assert_eq!(
            verify(b"whsec_other", &h, BODY, T, 300),
            Err(WebhookSignatureError::BadSignature)
        );
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verify(SECRET, &h, &tampered, T, 300),
            Err(WebhookSignatureError::BadSignature)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = h.replacen("t=1767225600", "t=1767225601", 1);
        assert_eq!(
            verify(SECRET, &moved, BODY, T, 300),
            Err(WebhookSignatureError::BadSignature)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let h = sign(SECRET, T, BODY);
        assert_eq!(
            verify(SECRET, &h, BODY, T + 301, REPLAY_WINDOW_SECS),
            Err(WebhookSignatureError::OutsideWindow { age_secs: 301 })
        );
        assert_eq!(
            verify(SECRET, &h, BODY, T - 301, REPLAY_WINDOW_SECS),
            Err(WebhookSignatureError::OutsideWindow { age_secs: -301 })
        );
        // Extreme clocks do not overflow.
        assert!(matches!(
            verify(SECRET, &h, BODY, i64::MIN, 300),
            Err(WebhookSignatureError::OutsideWindow { .. })
        ));
    }

    #[test]
    fn several_signatures_and_unknown_schemes() {
        let good = sign(SECRET, T, BODY);
        let sig = good.split_once(",v1=").unwrap().1;
        let other = sign(b"whsec_old", T, BODY);
        let old_sig = other.split_once(",v1=").unwrap().1;
        let h = format!("t={T},v1={old_sig},v2=whatever,v1={sig}");
        assert_eq!(verify(SECRET, &h, BODY, T, 300), Ok(()));
        let h = format!("t={T},v1={old_sig}");
        assert_eq!(
            verify(SECRET, &h, BODY, T, 300),
            Err(WebhookSignatureError::BadSignature)
        );
    }

    #[test]
    fn malformed_headers() {
        let sig = "0".repeat(64);
        for h in [
            String::new(),
            "garbage".to_owned(),
            format!("v1={sig}"),
            format!("t={T}"),
            format!("t={T},v2={sig}"),
            format!("t=-5,v1={sig}"),
            format!("t=12x,v1={sig}"),
            format!("t=,v1={sig}"),
            format!("t=99999999999999999999,v1={sig}"),
            format!("t={T},t={T},v1={sig}"),
            format!("t={T},v1={}", &sig[..63]),
            format!("t={T},v1={}g", &sig[..63]),
            format!("t={T},v1={sig},junk"),
        ] {
            assert!(
                matches!(
                    verify(SECRET, &h, BODY, T, 300),
                    Err(WebhookSignatureError::MalformedHeader(_))
                ),
                "{h:?}"
            );
        }
    }
}
