//! The e-MCF bearer token: an HS256 JWT, through `jsonwebtoken`.
//!
//! The crate does what is easy to get wrong: the token's shape, base64url,
//! the algorithm check (only HS256 is accepted whatever the header says:
//! no `alg: none`, no algorithm confusion) and the constant-time signature
//! check. The claims are checked here, against the simulator's own
//! [`super::Clock`] rather than the system time the crate would use, so
//! tests move time without sleeping; and in the order the refusals are
//! reported (expiry, issuer, audience, role, subject).
//!
//! Besides the DGI's claims (`unique_name` = `NIF|e-MCF-id`, `role`,
//! `iss`, `aud`, `iat`, `nbf`, `exp`), the simulator's tokens carry a `jti`:
//! the issue sequence number, so that a revocation ("every token issued
//! before now") also catches tokens issued in the same second.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

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

/// Issues a token. HMAC accepts keys of any length, so signing cannot fail
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
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
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

/// What `jsonwebtoken` checks: HS256 only and the signature. Time and the
/// other claims are checked by [`verify`] (the crate would read the
/// system clock).
fn signature_only() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v
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
    let claims =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret), &signature_only())
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            })?
            .claims;
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

    #[test]
    fn only_hs256_is_accepted() {
        // `alg: none` with the claims of a valid token, no signature.
        let t = issue(b"k", "iss", "A1309334L", "CD01-1", 1000, 2000, 7);
        let claims = t.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
        assert_eq!(
            verify(b"k", "iss", Some(&format!("Bearer {none}")), 1500),
            Err(TokenError::Malformed)
        );
        // HS512 under the same secret: refused too.
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &json!({"exp": 2000, "iss": "iss", "aud": "iss", "role": ROLE,
                    "unique_name": "A1309334L|CD01-1"}),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(
            verify(b"k", "iss", Some(&format!("Bearer {hs512}")), 1500),
            Err(TokenError::Malformed)
        );
    }
}
