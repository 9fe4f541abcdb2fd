//! The e-MCF bearer token: an HS256 JWT, hand-rolled.
//!
//! Hand-rolled because the simulator needs exactly one algorithm and a
//! handful of claims, and `hmac` + `sha2` + `base64` are already in the
//! tree; a JWT crate would bring its own crypto stack for nothing. Only
//! HS256 is accepted, whatever the header says otherwise (no `alg: none`,
//! no algorithm confusion).
//!
//! Besides the DGI's claims (`unique_name` = `NIF|e-MCF-id`, `role`,
//! `iss`, `aud`, `iat`, `nbf`, `exp`), the simulator's tokens carry a `jti`:
//! the issue sequence number, so that a revocation ("every token issued
//! before now") also catches tokens issued in the same second.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The role the DGI puts in taxpayer tokens.
pub(crate) const ROLE: &str = "Taxpayer";

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    /// The seller NIF (`unique_name` before the `|`).
    pub nif: String,
    /// The e-MCF id (`unique_name` after the `|`).
    pub emcf_id: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issue time, unix seconds (0 when the token has none).
    pub iat: i64,
    /// The simulator's issue sequence number (`jti`; 0 when absent or not
    /// a number, so such a token falls to any revocation).
    pub seq: u64,
}

fn sign(secret: &[u8], signing_input: &str) -> Option<Vec<u8>> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(signing_input.as_bytes());
    Some(mac.finalize().into_bytes().to_vec())
}

/// Issues a token. HMAC accepts keys of any length, so `sign` cannot fail
/// in practice; an empty string (which never verifies) covers the
/// impossible case without a panic.
pub(crate) fn issue(
    secret: &[u8],
    issuer: &str,
    nif: &str,
    emcf_id: &str,
    now_secs: i64,
    exp: i64,
    seq: u64,
) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({
        "unique_name": format!("{nif}|{emcf_id}"),
        "role": ROLE,
        "iss": issuer,
        "aud": issuer,
        "iat": now_secs,
        "nbf": now_secs,
        "exp": exp,
        "jti": seq.to_string(),
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    match sign(secret, &input) {
        Some(sig) => format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)),
        None => String::new(),
    }
}

/// Why a token was refused. The text goes into the 401 body: it names the
/// check that failed, never the secret or the expected signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    WrongIssuer,
    WrongRole,
    BadSubject,
}

impl TokenError {
    pub(crate) fn desc(self) -> &'static str {
        match self {
            TokenError::Missing => "missing bearer token",
            TokenError::Malformed => "malformed token",
            TokenError::BadSignature => "invalid token signature",
            TokenError::Expired => "token expired",
            TokenError::WrongIssuer => "token issuer or audience not accepted",
            TokenError::WrongRole => "token role is not Taxpayer",
            TokenError::BadSubject => "token unique_name is not NIF|e-MCF-id",
        }
    }
}

fn decode_json(part: &str) -> Result<Value, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Checks the `Authorization` header value and returns the claims.
pub(crate) fn verify(
    secret: &[u8],
    issuer: &str,
    authorization: Option<&str>,
    now_secs: i64,
) -> Result<Claims, TokenError> {
    let header = authorization.ok_or(TokenError::Missing)?.trim();
    let token = match header.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => return Err(TokenError::Missing),
    };
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let head = decode_json(h)?;
    if head.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(TokenError::Malformed);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| TokenError::BadSignature)?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    let claims = decode_json(p)?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(TokenError::Malformed)?;
    if exp <= now_secs {
        return Err(TokenError::Expired);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(TokenError::WrongIssuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == issuer,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(issuer)),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::WrongIssuer);
    }
    if claims.get("role").and_then(Value::as_str) != Some(ROLE) {
        return Err(TokenError::WrongRole);
    }
    let subject = claims
        .get("unique_name")
        .and_then(Value::as_str)
        .ok_or(TokenError::BadSubject)?;
    match subject.split_once('|') {
        Some((nif, id)) if !nif.is_empty() && !id.is_empty() => Ok(Claims {
            nif: nif.to_owned(),
            emcf_id: id.to_owned(),
            exp,
            iat: claims.get("iat").and_then(Value::as_i64).unwrap_or(0),
            seq: claims
                .get("jti")
                .and_then(Value::as_str)
                .and_then(|j| j.parse().ok())
                .unwrap_or(0),
        }),
        _ => Err(TokenError::BadSubject),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let t = issue(b"k", "iss", "A1309334L", "CD01-1", 1000, 2000, 7);
        let c = verify(b"k", "iss", Some(&format!("Bearer {t}")), 1500).unwrap();
        assert_eq!(c.nif, "A1309334L");
        assert_eq!(c.emcf_id, "CD01-1");
        assert_eq!((c.iat, c.exp, c.seq), (1000, 2000, 7));
        assert_eq!(
            verify(b"k", "iss", Some(&format!("Bearer {t}")), 2000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(b"x", "iss", Some(&format!("Bearer {t}")), 1500),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"k", "other", Some(&format!("Bearer {t}")), 1500),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(verify(b"k", "iss", None, 1500), Err(TokenError::Missing));
        assert_eq!(
            verify(b"k", "iss", Some("Bearer a.b"), 1500),
            Err(TokenError::Malformed)
        );
    }
}
