//! Validation errors: every problem at once, each with a JSON path and a
//! stable machine code.

use std::fmt;

/// Stable machine codes. They are part of the API contract: clients switch
/// on them, so a code is never renamed or reused for another meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not JSON.
    InvalidJson,
    /// The input nests deeper than the parser allows.
    TooDeep,
    /// A field has the wrong JSON type.
    WrongType,
    /// A required field is absent or null.
    MissingField,
    /// A field the schema does not know.
    UnknownField,
    /// The client tried to supply a security element (fiscal number, device
    /// id, authentication code, timestamp, QR, signature or hash).
    SecurityElementForbidden,
    /// The `schema` field names a version this build does not know.
    UnsupportedSchema,
    /// A text field is empty.
    Empty,
    /// A text field is longer than allowed.
    TooLong,
    /// A text field contains a control character.
    ControlCharacter,
    /// A value is not one of the allowed codes.
    InvalidValue,
    /// A decimal string is malformed.
    InvalidDecimal,
    /// A fractional JSON number where a decimal string is required.
    InexactNumber,
    /// More decimal places than the field allows.
    TooManyDecimals,
    /// A number outside the field's range.
    OutOfRange,
    /// A line, price, quantity, payment or total that is zero or negative.
    NotPositive,
    /// A date that is not a real `YYYY-MM-DD` date.
    InvalidDate,
    /// The invoice has no items.
    NoItems,
    /// Too many items or payments.
    TooManyEntries,
    /// The invoice has no payments.
    NoPayments,
    /// A TAX item outside groups L and N.
    TaxItemOutsideLevyGroup,
    /// A non-TAX item in group L or N.
    LevyGroupRequiresTaxItem,
    /// Specific tax on an item that cannot carry it.
    SpecificTaxNotAllowed,
    /// A field the client's type requires is absent.
    RequiredForClientType,
    /// An AO client without its exemption reference in comment line A.
    AoExemptionReferenceMissing,
    /// A credit note (FA/EA) without reference and nature.
    CreditNoteReferenceRequired,
    /// A reference on an invoice that is not a credit note.
    CreditNoteReferenceNotAllowed,
    /// A reference that is neither a 24-character code nor `RRR`.
    InvalidCreditReference,
    /// Nature RRR without reference `RRR`, or reference `RRR` with another nature.
    RrrReferenceMismatch,
    /// A foreign-currency invoice without an exchange rate.
    ExchangeRateRequired,
    /// An exchange rate on a CDF invoice.
    ExchangeRateNotAllowed,
    /// The exchange rate is more than 1 % away from the reference rate.
    ExchangeRateOutOfTolerance,
    /// No reference rate is known for the currency and date.
    ReferenceRateUnavailable,
    /// Payments do not sum to the invoice total.
    PaymentsMismatch,
    /// A client-computed group or total differs from the computed one.
    ClientTotalMismatch,
    /// A group appears twice in the client-computed groups.
    DuplicateGroup,
    /// The tax group has no rate in the rate table in use.
    UnknownTaxRate,
    /// Specific tax larger than the taxable base it belongs to.
    SpecificTaxExceedsBase,
    /// A credit note's reference names no sealed invoice of this merchant.
    OriginalNotFound,
    /// A credit note refers to another credit note.
    OriginalIsCreditNote,
    /// A credited item is not on the original invoice.
    ItemNotOnOriginal,
    /// A credited item's unit price differs from the original's.
    UnitPriceDiffers,
    /// Credited quantities, summed over all credit notes, exceed the quantity sold.
    CreditExceedsSold,
}

impl ErrorCode {
    /// The snake_case code as it appears in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::TooDeep => "too_deep",
            ErrorCode::WrongType => "wrong_type",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::SecurityElementForbidden => "security_element_forbidden",
            ErrorCode::UnsupportedSchema => "unsupported_schema",
            ErrorCode::Empty => "empty",
            ErrorCode::TooLong => "too_long",
            ErrorCode::ControlCharacter => "control_character",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::InvalidDecimal => "invalid_decimal",
            ErrorCode::InexactNumber => "inexact_number",
            ErrorCode::TooManyDecimals => "too_many_decimals",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::NotPositive => "not_positive",
            ErrorCode::InvalidDate => "invalid_date",
            ErrorCode::NoItems => "no_items",
            ErrorCode::TooManyEntries => "too_many_entries",
            ErrorCode::NoPayments => "no_payments",
            ErrorCode::TaxItemOutsideLevyGroup => "tax_item_outside_levy_group",
            ErrorCode::LevyGroupRequiresTaxItem => "levy_group_requires_tax_item",
            ErrorCode::SpecificTaxNotAllowed => "specific_tax_not_allowed",
            ErrorCode::RequiredForClientType => "required_for_client_type",
            ErrorCode::AoExemptionReferenceMissing => "ao_exemption_reference_missing",
            ErrorCode::CreditNoteReferenceRequired => "credit_note_reference_required",
            ErrorCode::CreditNoteReferenceNotAllowed => "credit_note_reference_not_allowed",
            ErrorCode::InvalidCreditReference => "invalid_credit_reference",
            ErrorCode::RrrReferenceMismatch => "rrr_reference_mismatch",
            ErrorCode::ExchangeRateRequired => "exchange_rate_required",
            ErrorCode::ExchangeRateNotAllowed => "exchange_rate_not_allowed",
            ErrorCode::ExchangeRateOutOfTolerance => "exchange_rate_out_of_tolerance",
            ErrorCode::ReferenceRateUnavailable => "reference_rate_unavailable",
            ErrorCode::PaymentsMismatch => "payments_mismatch",
            ErrorCode::ClientTotalMismatch => "client_total_mismatch",
            ErrorCode::DuplicateGroup => "duplicate_group",
            ErrorCode::UnknownTaxRate => "unknown_tax_rate",
            ErrorCode::SpecificTaxExceedsBase => "specific_tax_exceeds_base",
            ErrorCode::OriginalNotFound => "original_not_found",
            ErrorCode::OriginalIsCreditNote => "original_is_credit_note",
            ErrorCode::ItemNotOnOriginal => "item_not_on_original",
            ErrorCode::UnitPriceDiffers => "unit_price_differs",
            ErrorCode::CreditExceedsSold => "credit_exceeds_sold",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in an invoice request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ValidationError {
    /// JSON path of the offending value, e.g. `items[2].quantity`; empty for
    /// the document itself.
    pub path: String,
    /// Stable machine code.
    pub code: ErrorCode,
    /// Human explanation (English); may change between versions.
    pub message: String,
}

impl ValidationError {
    /// Builds an error.
    #[must_use]
    pub fn new(path: impl Into<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "$"
        } else {
            &self.path
        };
        write!(f, "{path}: {} ({})", self.message, self.code)
    }
}

/// Every problem found, in document order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    /// Whether any error has this code.
    #[must_use]
    pub fn has(&self, code: ErrorCode) -> bool {
        self.0.iter().any(|e| e.code == code)
    }

    /// Whether an error with this code sits at this path.
    #[must_use]
    pub fn has_at(&self, path: &str, code: ErrorCode) -> bool {
        self.0.iter().any(|e| e.code == code && e.path == path)
    }

    /// The errors.
    #[must_use]
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }

    /// JSON array of `{path, code, message}` objects.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".to_owned())
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} validation error(s)", self.0.len())?;
        for e in &self.0 {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}
