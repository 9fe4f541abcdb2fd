#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod canonical;
pub mod decimal;
mod error;
pub mod json;
pub mod model;
mod parse;
pub mod schema;
mod valid;
mod validate;

pub use canonical::{canonicalize, jcs};
pub use decimal::{DecimalError, ExchangeRate, Money, Percent, Quantity};
pub use error::{ErrorCode, ValidationError, ValidationErrors};
pub use model::*;
pub use parse::{
    MAX_DECIMAL_TEXT_LEN, MAX_ID_LEN, MAX_ITEMS, MAX_NIF_LEN, MAX_PAYMENTS, MAX_TEXT_LEN,
    SCHEMA_V1, SECURITY_ELEMENT_KEYS, is_valid_date, is_valid_identifier, is_valid_nif,
    normalize_reference, parse_invoice, parse_invoice_json, rounded_line_amount,
};
pub use valid::{IdempotencyKey, MAX_IDEMPOTENCY_KEY_LEN, ValidInvoice};
pub use validate::validate;
