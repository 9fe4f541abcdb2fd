#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod compute;
mod rates;

pub use compute::{
    Converted, DgiTotals, FixedReferenceRates, GroupLine, NoReferenceRates, PaymentTotal,
    RATE_TOLERANCE_PERCENT, ReferenceRates, TaxResult, Totals, compute,
};
pub use rates::{GroupRate, RateTable, RateTableError, Treatment};

use bonopay_core::{ValidInvoice, ValidationErrors};

/// Parses, validates and computes in one call: the full check an invoice
/// must pass before it can be sealed.
///
/// # Errors
/// Every problem found; validation errors first. When the request itself is
/// malformed the tax checks do not run, since they need a complete request.
pub fn check_invoice(
    json: &str,
    table: &RateTable,
    reference: &dyn ReferenceRates,
) -> Result<(ValidInvoice, TaxResult), ValidationErrors> {
    let req = bonopay_core::parse_invoice(json)?;
    let result = compute(&req, table, reference)?;
    Ok((req, result))
}
