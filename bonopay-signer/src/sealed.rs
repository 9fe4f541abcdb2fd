//! The sealed invoice: its byte format, the five security elements, QR
//! payloads, and verification with nothing but the public key.
//!
//! A sealed invoice is stored in the ledger as the JCS object
//!
//! ```text
//! {"auth_code": "...", "body": {...}, "device_counter"?: n, "signature": "<hex r‖s>", "tuple": {...}}
//! ```
//!
//! - `body` holds everything about the invoice (the canonical request, the
//!   tax result, outlet, chain position, fiscal number, time, device id);
//! - `tuple` is the short signed statement: the body's hash plus the fields a
//!   printed receipt shows, small enough for a QR code;
//! - the signature covers `SHA-256("bonopay/v1/seal\0" ‖ JCS(tuple))`;
//! - `auth_code` is derived from the signature (see [`auth_code_of`]).
//!
//! See `docs/format.md`, "Sealed invoice".

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::VerifyError;
use crate::signer::{PublicKey, Signature, domain_digest};
use crate::signer::{SignOutput, verify_output};

/// Domain tag of the signed digest.
pub const SEAL_DOMAIN: &[u8] = b"bonopay/v1/seal\0";
/// Domain tag of the authentication code.
pub const AUTH_CODE_DOMAIN: &[u8] = b"bonopay/v1/auth-code\0";
/// Domain tag of the body hash.
pub const BODY_DOMAIN: &[u8] = b"bonopay/v1/sealed-body\0";
/// `schema` of the body.
pub const SEALED_SCHEMA: &str = "bonopay/sealed-invoice/v1";
/// Prefix of the Bono Pay verification QR payload.
pub const VERIFY_QR_PREFIX: &str = "BPV1:";

/// The authentication code (Code DEF/DGI): the first 24 characters of the
/// RFC 4648 base32 encoding of `SHA-256("bonopay/v1/auth-code\0" ‖ r‖s)`.
/// 24 characters of `[A-Z2-7]` carry 120 bits, and since our signatures
/// are low-S, one sealed content has exactly one code.
#[must_use]
pub fn auth_code_of(signature: &Signature) -> String {
    let h = domain_digest(AUTH_CODE_DOMAIN, &[&signature.0]);
    // 15 bytes are exactly 24 base32 characters (120 bits, no padding):
    // the first 24 characters of the whole digest's encoding.
    data_encoding::BASE32_NOPAD.encode(&h[..15])
}

/// The printed form: six groups of four, dash-separated.
#[must_use]
pub fn format_auth_code(code: &str) -> String {
    code.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// The signed statement. Field order is alphabetical: the struct serializes
/// directly to its JCS form (strings and integers only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealTuple {
    /// Lowercase hex of `SHA-256("bonopay/v1/sealed-body\0" ‖ JCS(body))`.
    pub body_sha256: String,
    /// `FC/TC TYPE`.
    pub counters: String,
    /// Signing key id.
    pub key_id: String,
    /// Seller NIF.
    pub merchant_nif: String,
    /// Device id (NID) of the signing authority.
    pub nid: String,
    /// Outlet.
    pub outlet: String,
    /// Hex of the previous ledger entry's hash.
    pub prev_hash: String,
    /// Position in the outlet's chain.
    pub seq: u64,
    /// Trusted time, RFC 3339 with the outlet's UTC offset.
    pub timestamp: String,
    /// DGI `total` (CDF, 2 places).
    pub total: String,
    /// Format version, 1.
    pub v: u32,
    /// DGI `vtotal` (CDF, 2 places).
    pub vtotal: String,
}

impl SealTuple {
    /// JCS bytes.
    #[must_use]
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The digest the signer signs.
    #[must_use]
    pub fn digest(&self) -> [u8; 32] {
        domain_digest(SEAL_DOMAIN, &[&self.canonical()])
    }
}

/// Body hash over JCS bytes.
#[must_use]
pub fn body_hash(body_jcs: &[u8]) -> String {
    hex::encode(domain_digest(BODY_DOMAIN, &[body_jcs]))
}

/// Builds the stored payload from its parts (all already JCS).
#[cfg(feature = "sealing")]
#[must_use]
pub fn payload_bytes(
    auth_code: &str,
    body_jcs: &[u8],
    out: &SignOutput,
    tuple: &SealTuple,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(body_jcs.len() + 700);
    p.extend_from_slice(b"{\"auth_code\":\"");
    p.extend_from_slice(auth_code.as_bytes());
    p.extend_from_slice(b"\",\"body\":");
    p.extend_from_slice(body_jcs);
    if let Some(c) = out.device_counter {
        p.extend_from_slice(format!(",\"device_counter\":{c}").as_bytes());
    }
    p.extend_from_slice(b",\"signature\":\"");
    p.extend_from_slice(out.signature.to_hex().as_bytes());
    p.extend_from_slice(b"\",\"tuple\":");
    p.extend_from_slice(&tuple.canonical());
    p.push(b'}');
    p
}

/// The five security elements, as returned to the client and printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityElements {
    /// 1. Fiscal number, `FC/TC TYPE` (e.g. `64/64 FV`).
    pub fiscal_number: String,
    /// 2. Fiscal authority id: the NID of the signing device.
    pub fiscal_authority_id: String,
    /// 3. Authentication code, 24 characters `[A-Z2-7]`.
    pub authentication_code: String,
    /// The same, printed as 6 groups of 4.
    pub authentication_code_display: String,
    /// 4. Trusted timestamp, RFC 3339 with offset.
    pub timestamp: String,
    /// 5. QR payload, Bono Pay's own verification payload (the same as
    ///    `verification_qr`), never a DGI `RDCDEF01` payload: only a DGI
    ///    fiscal device issues those (see `certification`).
    pub qr: String,
    /// Bono Pay verification payload (`BPV1:` + base64url), which carries
    /// the signature and the signed tuple for offline verification.
    pub verification_qr: String,
}

/// A sealed invoice read back from its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedInvoice {
    /// The five elements.
    pub elements: SecurityElements,
    /// The signed tuple.
    pub tuple: SealTuple,
    /// The body, as its canonical (JCS) JSON text.
    pub body: String,
    /// The signature.
    pub signature: Signature,
    /// For device-backed signers.
    pub device_counter: Option<u64>,
    /// The exact stored payload bytes.
    pub payload: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyQr {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    device_counter: Option<u64>,
    signature: String,
    tuple: SealTuple,
}

/// The `BPV1:` verification payload for a tuple and signature.
#[must_use]
pub fn verification_qr(tuple: &SealTuple, out: &SignOutput) -> String {
    let v = VerifyQr {
        device_counter: out.device_counter,
        signature: out.signature.to_hex(),
        tuple: tuple.clone(),
    };
    format!(
        "{VERIFY_QR_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap_or_default())
    )
}

fn compact_local(timestamp: &str) -> Result<String, VerifyError> {
    // RFC 3339 "YYYY-MM-DDTHH:MM:SS+hh:mm" → "YYYYMMDDHHMMSS" (local time).
    let digits: String = timestamp
        .chars()
        .take(19)
        .filter(char::is_ascii_digit)
        .collect();
    if digits.len() == 14 {
        Ok(digits)
    } else {
        Err(VerifyError::Mismatch(format!(
            "timestamp `{timestamp}` is not RFC 3339"
        )))
    }
}

fn parse_sig(hex_sig: &str) -> Result<Signature, VerifyError> {
    // Lowercase only, as written: `hex::decode` also reads upper case,
    // which gave a verified seal a second spelling (found by the
    // `sealed_payload` fuzz property).
    if hex_sig.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(VerifyError::MalformedSignature("not lowercase hex".into()));
    }
    let bytes = hex::decode(hex_sig).map_err(|e| VerifyError::MalformedSignature(e.to_string()))?;
    let arr: [u8; 64] = bytes
        .try_into()
        .map_err(|_| VerifyError::MalformedSignature("not 64 bytes".into()))?;
    Ok(Signature(arr))
}

/// Looks up a public key by key id.
pub trait KeyLookup {
    /// The key with this id, if known.
    fn key(&self, key_id: &str) -> Option<&PublicKey>;
}

impl KeyLookup for PublicKey {
    fn key(&self, key_id: &str) -> Option<&PublicKey> {
        (self.key_id() == key_id).then_some(self)
    }
}

impl KeyLookup for [PublicKey] {
    fn key(&self, key_id: &str) -> Option<&PublicKey> {
        self.iter().find(|k| k.key_id() == key_id)
    }
}

impl KeyLookup for Vec<PublicKey> {
    fn key(&self, key_id: &str) -> Option<&PublicKey> {
        self.as_slice().key(key_id)
    }
}

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a Value, VerifyError> {
    body.get(name)
        .ok_or_else(|| VerifyError::Mismatch(format!("body has no `{name}`")))
}

fn str_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, VerifyError> {
    field(body, name)?
        .as_str()
        .ok_or_else(|| VerifyError::Mismatch(format!("body `{name}` is not a string")))
}

impl SealedInvoice {
    /// Parses and fully verifies a stored payload: body hash, tuple/body
    /// agreement, signature (with `keys`), authentication code and QR.
    ///
    /// # Errors
    /// [`VerifyError`] saying what does not hold.
    pub fn verify(payload: &[u8], keys: &dyn KeyLookup) -> Result<Self, VerifyError> {
        Self::read(payload, Some(keys))
    }

    /// Reads a payload this process has just built and signed, without
    /// verifying the signature again (or re-canonicalizing). Never use it on
    /// data read from storage or received from elsewhere: use [`Self::verify`].
    ///
    /// # Errors
    /// [`VerifyError`] if the payload is malformed.
    pub fn read_own(payload: &[u8]) -> Result<Self, VerifyError> {
        Self::read(payload, None)
    }

    fn read(payload: &[u8], keys: Option<&dyn KeyLookup>) -> Result<Self, VerifyError> {
        let v: Value = serde_json::from_slice(payload)
            .map_err(|e| VerifyError::Mismatch(format!("payload: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| VerifyError::Mismatch("payload is not an object".into()))?;
        for k in obj.keys() {
            if !["auth_code", "body", "device_counter", "signature", "tuple"].contains(&k.as_str())
            {
                return Err(VerifyError::Mismatch(format!(
                    "payload has unknown member `{k}`"
                )));
            }
        }
        // The stored bytes must be exactly the canonical form: no second
        // spelling of the same seal can exist.
        if keys.is_some() {
            let canonical = serde_json_canonicalizer::to_vec(&v)
                .map_err(|e| VerifyError::Mismatch(e.to_string()))?;
            if canonical != payload {
                return Err(VerifyError::Mismatch(
                    "payload is not in canonical (JCS) form".into(),
                ));
            }
        }
        let body_value = field(&v, "body")?;
        let tuple: SealTuple = serde_json::from_value(field(&v, "tuple")?.clone())
            .map_err(|e| VerifyError::Mismatch(format!("tuple: {e}")))?;
        let signature = parse_sig(str_field(&v, "signature")?)?;
        let device_counter = match v.get("device_counter") {
            None => None,
            Some(c) => Some(
                c.as_u64()
                    .ok_or_else(|| VerifyError::Mismatch("device_counter".into()))?,
            ),
        };
        let auth_code = str_field(&v, "auth_code")?.to_owned();

        // 1. The body is what the tuple says.
        let body_jcs = serde_json_canonicalizer::to_string(body_value)
            .map_err(|e| VerifyError::Mismatch(e.to_string()))?;
        if keys.is_some() && body_hash(body_jcs.as_bytes()) != tuple.body_sha256 {
            return Err(VerifyError::Mismatch(
                "body hash does not match the signed tuple".into(),
            ));
        }
        let body = body_value;
        let seq = tuple.seq.to_string();
        let signed: [(&str, &str); 11] = [
            ("/schema", SEALED_SCHEMA),
            ("/counters", &tuple.counters),
            ("/key_id", &tuple.key_id),
            ("/merchant_nif", &tuple.merchant_nif),
            ("/nid", &tuple.nid),
            ("/outlet", &tuple.outlet),
            ("/prev_hash", &tuple.prev_hash),
            ("/seq", &seq),
            ("/timestamp", &tuple.timestamp),
            ("/tax/dgi/total", &tuple.total),
            ("/tax/dgi/vtotal", &tuple.vtotal),
        ];
        for (pointer, want) in signed {
            let got = match body.pointer(pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => return Err(VerifyError::Mismatch(format!("body has no `{pointer}`"))),
            };
            if got != want {
                return Err(VerifyError::Mismatch(format!(
                    "body `{pointer}` is {got} but the signed tuple says {want}"
                )));
            }
        }

        // 2. The signature, under the key the tuple names.
        let out = SignOutput {
            signature,
            device_counter,
        };
        if let Some(keys) = keys {
            let key = keys
                .key(&tuple.key_id)
                .ok_or_else(|| VerifyError::UnknownKey(tuple.key_id.clone()))?;
            verify_output(key, &tuple.digest(), &out)?;
        }

        // 3. The elements derived from the signature.
        if auth_code_of(&signature) != auth_code {
            return Err(VerifyError::Mismatch(
                "authentication code is not derived from the signature".into(),
            ));
        }
        // The timestamp must be RFC 3339 for the QR's local date and time.
        compact_local(&tuple.timestamp)?;
        Ok(Self::from_parts(
            tuple,
            body_jcs,
            out,
            auth_code,
            payload.to_vec(),
        ))
    }

    /// Assembles a sealed invoice from the parts the sealing pipeline has
    /// just built (nothing is parsed or verified again).
    #[must_use]
    pub fn from_parts(
        tuple: SealTuple,
        body: String,
        out: SignOutput,
        auth_code: String,
        payload: Vec<u8>,
    ) -> Self {
        let verification_qr = verification_qr(&tuple, &out);
        let elements = SecurityElements {
            fiscal_number: tuple.counters.clone(),
            fiscal_authority_id: tuple.nid.clone(),
            authentication_code_display: format_auth_code(&auth_code),
            authentication_code: auth_code,
            timestamp: tuple.timestamp.clone(),
            qr: verification_qr.clone(),
            verification_qr,
        };
        Self {
            elements,
            tuple,
            body,
            signature: out.signature,
            device_counter: out.device_counter,
            payload,
        }
    }

    /// The body as a JSON value.
    ///
    /// # Errors
    /// [`VerifyError::Mismatch`] if the body is not JSON (never for a
    /// verified invoice).
    pub fn body_value(&self) -> Result<Value, VerifyError> {
        serde_json::from_str(&self.body).map_err(|e| VerifyError::Mismatch(e.to_string()))
    }

    /// The request as the client sent it (canonical object).
    ///
    /// # Errors
    /// As [`Self::body_value`].
    pub fn request(&self) -> Result<Value, VerifyError> {
        Ok(self.body_value()?["request"].take())
    }
}

/// What a verification QR proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQr {
    /// The signed statement (compare with the printed receipt).
    pub tuple: SealTuple,
    /// The authentication code derived from the signature.
    pub authentication_code: String,
}

/// Verifies a `BPV1:` verification payload offline.
///
/// # Errors
/// [`VerifyError`] saying what does not hold.
pub fn verify_qr(text: &str, keys: &dyn KeyLookup) -> Result<VerifiedQr, VerifyError> {
    let b64 = text
        .strip_prefix(VERIFY_QR_PREFIX)
        .ok_or_else(|| VerifyError::Mismatch(format!("not a {VERIFY_QR_PREFIX} payload")))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(b64.trim())
        .map_err(|e| VerifyError::Mismatch(format!("base64: {e}")))?;
    let q: VerifyQr = serde_json::from_slice(&bytes)
        .map_err(|e| VerifyError::Mismatch(format!("payload: {e}")))?;
    let signature = parse_sig(&q.signature)?;
    let key = keys
        .key(&q.tuple.key_id)
        .ok_or_else(|| VerifyError::UnknownKey(q.tuple.key_id.clone()))?;
    verify_output(
        key,
        &q.tuple.digest(),
        &SignOutput {
            signature,
            device_counter: q.device_counter,
        },
    )?;
    Ok(VerifiedQr {
        authentication_code: auth_code_of(&signature),
        tuple: q.tuple,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The code is, as `docs/format.md` defines it, a prefix of the
    /// RFC 4648 base32 encoding of the *whole* digest (padding included),
    /// for signatures of every shape.
    #[test]
    fn auth_code_is_the_prefix_of_the_whole_digests_base32() {
        for seed in 0u8..=255 {
            let mut raw = [0u8; 64];
            for (i, b) in raw.iter_mut().enumerate() {
                *b = seed.wrapping_mul(31).wrapping_add(u8::try_from(i).unwrap());
            }
            let sig = Signature(raw);
            let whole = data_encoding::BASE32.encode(&domain_digest(AUTH_CODE_DOMAIN, &[&raw]));
            assert_eq!(auth_code_of(&sig), whole[..24]);
            assert_eq!(auth_code_of(&sig).len(), 24);
        }
    }
}
