//! Semantic rules that need more than one field.

use rust_decimal::Decimal;

use crate::error::{ErrorCode, ValidationError, ValidationErrors};
use crate::model::{CommentLine, CreditNature, InvoiceRequest, Item, ItemKind};

/// Checks a request built in Rust (not parsed from JSON) against the rules
/// [`crate::parse_invoice`] applies, with the same paths and codes: the
/// parser and this function share every field check. An SDK user therefore
/// cannot produce a request the server would refuse.
///
/// # Errors
/// Every problem found.
pub fn validate(req: &InvoiceRequest) -> Result<(), ValidationErrors> {
    use crate::parse::{MAX_ITEMS, MAX_PAYMENTS, MAX_TEXT_LEN};
    let mut e: Vec<ValidationError> = Vec::new();

    check_nif(&mut e, || "merchant_nif".into(), &req.merchant_nif);
    check_id(&mut e, || "outlet_id".into(), &req.outlet_id);
    check_id(&mut e, || "pos_terminal_id".into(), &req.pos_terminal_id);
    check_id(&mut e, || "cashier.id".into(), &req.cashier.id);
    check_text(
        &mut e,
        || "cashier.name".into(),
        &req.cashier.name,
        MAX_TEXT_LEN,
    );
    let c = &req.client;
    if let Some(n) = &c.nif {
        check_nif(&mut e, || "client.nif".into(), n);
    }
    for (key, v) in [
        ("name", &c.name),
        ("contact", &c.contact),
        ("address", &c.address),
        ("email", &c.email),
        ("exemption_reference", &c.exemption_reference),
    ] {
        if let Some(v) = v {
            check_text(&mut e, || format!("client.{key}"), v, MAX_TEXT_LEN);
        }
    }
    if req.items.is_empty() {
        e.push(ValidationError::new(
            "items",
            ErrorCode::NoItems,
            "an invoice needs at least one item",
        ));
    } else if req.items.len() > MAX_ITEMS {
        e.push(ValidationError::new(
            "items",
            ErrorCode::TooManyEntries,
            format!("at most {MAX_ITEMS} entries"),
        ));
    }
    for (i, it) in req.items.iter().enumerate() {
        let before = e.len();
        check_id(&mut e, || format!("items[{i}].code"), &it.code);
        check_text(
            &mut e,
            || format!("items[{i}].name"),
            &it.name,
            MAX_TEXT_LEN,
        );
        check_positive(
            &mut e,
            || format!("items[{i}].unit_price"),
            it.unit_price.value(),
        );
        check_positive(
            &mut e,
            || format!("items[{i}].quantity"),
            it.quantity.value(),
        );
        if let Some(st) = &it.specific_tax {
            check_positive(
                &mut e,
                || format!("items[{i}].specific_tax.amount"),
                st.amount.value(),
            );
            if let Some(r) = st.rate {
                check_positive(
                    &mut e,
                    || format!("items[{i}].specific_tax.rate"),
                    r.value(),
                );
            }
        }
        if let Some(op) = it.original_price {
            check_positive(&mut e, || format!("items[{i}].original_price"), op.value());
        }
        if let Some(pm) = &it.price_modification {
            check_text(
                &mut e,
                || format!("items[{i}].price_modification"),
                pm,
                MAX_TEXT_LEN,
            );
        }
        if e.len() == before {
            check_item(it, &format!("items[{i}]"), &mut e);
        }
    }
    if req.payments.is_empty() {
        e.push(ValidationError::new(
            "payments",
            ErrorCode::NoPayments,
            "an invoice needs at least one payment summing to its total",
        ));
    } else if req.payments.len() > MAX_PAYMENTS {
        e.push(ValidationError::new(
            "payments",
            ErrorCode::TooManyEntries,
            format!("at most {MAX_PAYMENTS} entries"),
        ));
    }
    for (i, p) in req.payments.iter().enumerate() {
        check_positive(&mut e, || format!("payments[{i}].amount"), p.amount.value());
    }
    if let Some(fx) = &req.exchange_rate {
        check_positive(&mut e, || "exchange_rate.rate".into(), fx.rate.value());
        if !crate::parse::is_valid_date(&fx.date) {
            e.push(ValidationError::new(
                "exchange_rate.date",
                ErrorCode::InvalidDate,
                "expected a calendar date `YYYY-MM-DD`",
            ));
        }
    }
    for (line, v) in &req.comments {
        check_text(&mut e, || format!("comments.{line}"), v, MAX_TEXT_LEN);
    }
    if let Some(cn) = &req.credit_note
        && crate::parse::normalize_reference(&cn.reference).as_deref()
            != Some(cn.reference.as_str())
    {
        e.push(ValidationError::new(
            "credit_note.reference",
            ErrorCode::InvalidCreditReference,
            "expected the original's 24-character authentication code (A-Z, 0-9) or `RRR`",
        ));
    }
    if let Some(groups) = &req.client_tax_groups {
        for (i, g) in groups.iter().enumerate() {
            if groups[..i].iter().any(|o| o.group == g.group) {
                e.push(ValidationError::new(
                    format!("tax_groups[{i}].group"),
                    ErrorCode::DuplicateGroup,
                    format!("group {} appears twice", g.group),
                ));
            }
        }
    }
    if e.is_empty() {
        check_cross_fields(req, &mut e);
    }
    if e.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(e))
    }
}

fn check_text(
    e: &mut Vec<ValidationError>,
    path: impl FnOnce() -> String,
    s: &str,
    max: usize,
) -> bool {
    match crate::parse::text_problem(s, max) {
        Some((code, msg)) => {
            e.push(ValidationError::new(path(), code, msg));
            false
        }
        None => true,
    }
}

fn check_id(e: &mut Vec<ValidationError>, path: impl Fn() -> String, s: &str) {
    if check_text(e, &path, s, crate::parse::MAX_ID_LEN) && !crate::parse::is_identifier(s) {
        e.push(ValidationError::new(
            path(),
            ErrorCode::InvalidValue,
            "only ASCII letters, digits, `.`, `_` and `-` are allowed",
        ));
    }
}

fn check_nif(e: &mut Vec<ValidationError>, path: impl Fn() -> String, s: &str) {
    if check_text(e, &path, s, crate::parse::MAX_NIF_LEN) && !crate::parse::is_nif(s) {
        e.push(ValidationError::new(
            path(),
            ErrorCode::InvalidValue,
            "a NIF holds only ASCII letters and digits",
        ));
    }
}

fn check_positive(e: &mut Vec<ValidationError>, path: impl FnOnce() -> String, d: Decimal) {
    if d <= Decimal::ZERO {
        e.push(ValidationError::new(
            path(),
            ErrorCode::NotPositive,
            "must be greater than zero",
        ));
    }
}

pub(crate) fn check_item(item: &Item, path: &str, errors: &mut Vec<ValidationError>) {
    let levy_group = item.tax_group.is_levy();
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
    for field in c.client_type.required_fields() {
        let present = match *field {
            "name" => c.name.is_some(),
            "nif" => c.nif.is_some(),
            "exemption_reference" => c.exemption_reference.is_some(),
            "contact" => c.contact.is_some(),
            "address" => c.address.is_some(),
            "email" => c.email.is_some(),
            // A field name this match does not know fails closed: every
            // such invoice is refused until it is taught here.
            _ => false,
        };
        if !present {
            errors.push(ValidationError::new(
                format!("client.{field}"),
                ErrorCode::RequiredForClientType,
                format!("client type {} requires `{field}`", c.client_type),
            ));
        }
    }
    if c.client_type.requires_exemption_line() {
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

    match (req.currency.needs_exchange_rate(), &req.exchange_rate) {
        (false, Some(_)) => errors.push(ValidationError::new(
            "exchange_rate",
            ErrorCode::ExchangeRateNotAllowed,
            format!("a {} invoice has no exchange rate", req.currency),
        )),
        (true, None) => errors.push(ValidationError::new(
            "exchange_rate",
            ErrorCode::ExchangeRateRequired,
            format!(
                "a {c} invoice must state the rate (CDF per {c}) and its date",
                c = req.currency
            ),
        )),
        _ => {}
    }
}
