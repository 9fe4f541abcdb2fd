//! Semantic rules that need more than one field.

use rust_decimal::Decimal;

use crate::error::{ErrorCode, ValidationError, ValidationErrors};
use crate::model::{
    ClientType, CommentLine, CreditNature, Currency, InvoiceRequest, Item, ItemKind, TaxGroup,
};

/// Checks a request built in Rust (not parsed from JSON) against exactly the
/// rules [`crate::parse_invoice`] applies, by sending it through the same
/// parser. An SDK user therefore cannot produce a request the server would
/// refuse.
///
/// # Errors
/// Every problem found.
pub fn validate(req: &InvoiceRequest) -> Result<(), ValidationErrors> {
    let text = crate::canonical::request_json(req, true);
    crate::parse_invoice(&text).map(|_| ())
}

pub(crate) fn check_item(item: &Item, path: &str, errors: &mut Vec<ValidationError>) {
    let levy_group = matches!(item.tax_group, TaxGroup::L | TaxGroup::N);
    if item.kind == ItemKind::Tax && !levy_group {
        errors.push(ValidationError::new(
            format!("{path}.tax_group"),
            ErrorCode::TaxItemOutsideLevyGroup,
            format!("TAX items belong in group L or N, not {}", item.tax_group),
        ));
    }
    if item.kind != ItemKind::Tax && levy_group {
        errors.push(ValidationError::new(
            format!("{path}.kind"),
            ErrorCode::LevyGroupRequiresTaxItem,
            format!("group {} holds only TAX items", item.tax_group),
        ));
    }
    if item.specific_tax.is_some() && (item.kind == ItemKind::Tax || levy_group) {
        errors.push(ValidationError::new(
            format!("{path}.specific_tax"),
            ErrorCode::SpecificTaxNotAllowed,
            "a TAX item is itself the tax: it cannot carry specific tax",
        ));
    }
    match crate::parse::rounded_line_amount(item) {
        Some(a) if a > crate::Money::max() => errors.push(ValidationError::new(
            path,
            ErrorCode::OutOfRange,
            format!(
                "the line amount (unit price × quantity) exceeds {}",
                crate::Money::max()
            ),
        )),
        Some(a) if a > Decimal::ZERO => {}
        Some(_) => errors.push(ValidationError::new(
            path,
            ErrorCode::NotPositive,
            "the line amount (unit price × quantity) rounds to 0.00",
        )),
        None => errors.push(ValidationError::new(
            path,
            ErrorCode::OutOfRange,
            "the line amount overflows",
        )),
    }
}

pub(crate) fn check_cross_fields(req: &InvoiceRequest, errors: &mut Vec<ValidationError>) {
    let c = &req.client;
    let mut need = |present: bool, field: &str| {
        if !present {
            errors.push(ValidationError::new(
                format!("client.{field}"),
                ErrorCode::RequiredForClientType,
                format!("client type {} requires `{field}`", c.client_type),
            ));
        }
    };
    match c.client_type {
        ClientType::Pp => {}
        ClientType::Pm | ClientType::Pc | ClientType::Pl => {
            need(c.name.is_some(), "name");
            need(c.nif.is_some(), "nif");
        }
        ClientType::Ao => {
            need(c.name.is_some(), "name");
            need(c.exemption_reference.is_some(), "exemption_reference");
            let line_a = req.comments.get(&CommentLine::A);
            let carries = match (&c.exemption_reference, line_a) {
                (Some(r), Some(a)) => a.contains(r.as_str()),
                _ => false,
            };
            if !carries {
                errors.push(ValidationError::new(
                    "comments.A",
                    ErrorCode::AoExemptionReferenceMissing,
                    "for an AO client, comment line A must carry the exemption reference, e.g. `Réf. Exo. : <number>`",
                ));
            }
        }
    }

    match (&req.credit_note, req.invoice_type.is_credit_note()) {
        (None, true) => errors.push(ValidationError::new(
            "credit_note",
            ErrorCode::CreditNoteReferenceRequired,
            format!(
                "a {} credit note needs `credit_note` with the original's reference and the nature",
                req.invoice_type
            ),
        )),
        (Some(_), false) => errors.push(ValidationError::new(
            "credit_note",
            ErrorCode::CreditNoteReferenceNotAllowed,
            format!(
                "only FA and EA carry a credit-note reference, not {}",
                req.invoice_type
            ),
        )),
        (Some(cn), true) => {
            let is_rrr_ref = cn.reference == "RRR";
            if is_rrr_ref != (cn.nature == CreditNature::Rrr) {
                errors.push(ValidationError::new(
                    "credit_note.reference",
                    ErrorCode::RrrReferenceMismatch,
                    "nature RRR takes the reference `RRR`, and only it does",
                ));
            }
        }
        (None, false) => {}
    }

    match (req.currency, &req.exchange_rate) {
        (Currency::Cdf, Some(_)) => errors.push(ValidationError::new(
            "exchange_rate",
            ErrorCode::ExchangeRateNotAllowed,
            "a CDF invoice has no exchange rate",
        )),
        (Currency::Usd, None) => errors.push(ValidationError::new(
            "exchange_rate",
            ErrorCode::ExchangeRateRequired,
            "a USD invoice must state the rate (CDF per USD) and its date",
        )),
        _ => {}
    }
}
