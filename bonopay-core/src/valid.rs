//! Types that only checking can make: a [`ValidInvoice`] and an
//! [`IdempotencyKey`].
//!
//! The sealing pipeline accepts these and nothing looser, so a request is
//! parsed and validated exactly once, wherever it came from (JSON on the
//! wire, or a struct an SDK user built), and the signer never sees a
//! request the rules refuse.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::Serialize;

use crate::error::{ErrorCode, ValidationError, ValidationErrors};
use crate::model::InvoiceRequest;

/// An invoice request that passed every rule of [`crate::validate`].
///
/// Made only by [`crate::parse_invoice`], [`crate::parse_invoice_json`] or
/// [`ValidInvoice::new`]; read through `Deref`. To change a field, take the
/// request out ([`ValidInvoice::into_request`]) and check it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidInvoice(InvoiceRequest);

impl ValidInvoice {
    /// Checks a request built in Rust.
    ///
    /// # Errors
    /// Every rule it breaks, with paths and codes as the parser gives them.
    pub fn new(req: InvoiceRequest) -> Result<Self, ValidationErrors> {
        crate::validate::validate(&req)?;
        Ok(Self(req))
    }

    /// Wraps a request the parser has just checked.
    pub(crate) const fn checked(req: InvoiceRequest) -> Self {
        Self(req)
    }

    /// The request.
    #[must_use]
    pub const fn request(&self) -> &InvoiceRequest {
        &self.0
    }

    /// Gives the request back, to change it (and check it again).
    #[must_use]
    pub fn into_request(self) -> InvoiceRequest {
        self.0
    }
}

impl Deref for ValidInvoice {
    type Target = InvoiceRequest;

    fn deref(&self) -> &InvoiceRequest {
        &self.0
    }
}

impl AsRef<InvoiceRequest> for ValidInvoice {
    fn as_ref(&self) -> &InvoiceRequest {
        &self.0
    }
}

impl TryFrom<InvoiceRequest> for ValidInvoice {
    type Error = ValidationErrors;

    fn try_from(req: InvoiceRequest) -> Result<Self, ValidationErrors> {
        Self::new(req)
    }
}

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// A client's idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] bytes, no
/// control characters. Keys are the client's retry handle, stored with the
/// sealed invoice and echoed in logs and errors, so nothing in them may
/// break a line or hide text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks a key.
    ///
    /// # Errors
    /// An [`ErrorCode::InvalidValue`] error when the key is empty, too long,
    /// or holds a control character.
    pub fn new(key: impl Into<String>) -> Result<Self, ValidationError> {
        let key = key.into();
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY_LEN
            || key.chars().any(char::is_control)
        {
            return Err(ValidationError::new(
                "",
                ErrorCode::InvalidValue,
                "idempotency key must be 1 to 200 printable characters",
            ));
        }
        Ok(Self(key))
    }

    /// The key as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IdempotencyKey {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, ValidationError> {
        Self::new(s)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_one_to_200_bytes_without_control_characters() {
        assert_eq!(IdempotencyKey::new("pos-42").unwrap().as_str(), "pos-42");
        assert!(IdempotencyKey::new("x".repeat(200)).is_ok());
        assert!(IdempotencyKey::new("é".repeat(100)).is_ok());
        for bad in [
            String::new(),
            "x".repeat(201),
            "é".repeat(101),
            "a\nb".into(),
            "\u{7f}".into(),
            "tab\there".into(),
        ] {
            let e = IdempotencyKey::new(bad.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidValue, "{bad:?}");
        }
        assert!("".parse::<IdempotencyKey>().is_err());
    }
}
