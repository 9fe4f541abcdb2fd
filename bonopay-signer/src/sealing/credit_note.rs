//! The DGI's credit-note rules (§1.26), checked by the pipeline before a
//! credit note is signed: the original exists, belongs to the same
//! merchant and is an invoice; credited articles are on it at the same
//! unit price; quantities credited over all credit notes never exceed what
//! was sold.

use std::collections::BTreeMap;

use bonopay_core::{ErrorCode, InvoiceRequest, InvoiceType, ValidationError, ValidationErrors};
use rust_decimal::Decimal;

use super::{Fiscalizer, SealError, invalid};
use crate::index;

impl Fiscalizer {
    /// The Bono Pay authentication code of the original a credit note's
    /// `reference` names (its own code or its Code DEF/DGI), if it is an
    /// invoice of the same merchant.
    pub(super) fn original_code(
        &self,
        req: &InvoiceRequest,
        reference: &str,
    ) -> Result<String, SealError> {
        let original = self.find_original(reference)?.ok_or_else(|| {
            invalid(
                "credit_note.reference",
                ErrorCode::OriginalNotFound,
                format!(
                    "no sealed invoice of merchant {} has authentication code or Code DEF/DGI {reference}",
                    req.merchant_nif
                ),
            )
        })?;
        Ok(original.invoice.elements.authentication_code)
    }

    /// The DGI credit-note rules (§1.26): the original exists and belongs to
    /// the same merchant; credited items exist on it at the same unit price;
    /// quantities credited over all credit notes never exceed those sold.
    /// Returns how many credit notes were sealed against the original.
    pub(super) fn check_credit_note(
        &self,
        req: &InvoiceRequest,
        reference: &str,
    ) -> Result<u64, SealError> {
        let not_found = || {
            invalid(
                "credit_note.reference",
                ErrorCode::OriginalNotFound,
                format!(
                    "no sealed invoice of merchant {} has authentication code {reference}",
                    req.merchant_nif
                ),
            )
        };
        let original = self.find_by_auth_code(reference)?.ok_or_else(not_found)?;
        let orig_req = original.invoice.request().map_err(SealError::Corrupt)?;
        if orig_req["merchant_nif"].as_str() != Some(req.merchant_nif.as_str()) {
            // Another merchant's invoice: answer exactly as if it did not exist.
            return Err(not_found());
        }
        let orig_type = orig_req["invoice_type"]
            .as_str()
            .and_then(InvoiceType::from_code);
        if orig_type.is_none_or(InvoiceType::is_credit_note) {
            return Err(invalid(
                "credit_note.reference",
                ErrorCode::OriginalIsCreditNote,
                "a credit note must refer to an invoice, not to another credit note",
            ));
        }
        // Sold quantity and unit price per article code on the original.
        let mut sold: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
        for it in orig_req["items"].as_array().into_iter().flatten() {
            let code = it["code"].as_str().unwrap_or_default().to_owned();
            let price: Decimal = it["unit_price"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or_default();
            let qty: Decimal = it["quantity"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or_default();
            let e = sold.entry(code).or_insert((price, Decimal::ZERO));
            e.1 += qty;
        }
        // Already credited, over every earlier credit note against it.
        let mut credited: BTreeMap<String, Decimal> = BTreeMap::new();
        let earlier = self
            .store
            .find_index(index::CREDITS, reference)
            .map_err(SealError::Storage)?;
        let count = earlier.len() as u64;
        for (outlet, seq) in earlier {
            if let Some(prev) = self.load(&outlet, seq)? {
                let prev_req = prev.invoice.request().map_err(SealError::Corrupt)?;
                for it in prev_req["items"].as_array().into_iter().flatten() {
                    let qty: Decimal = it["quantity"]
                        .as_str()
                        .unwrap_or("0")
                        .parse()
                        .unwrap_or_default();
                    *credited
                        .entry(it["code"].as_str().unwrap_or_default().to_owned())
                        .or_default() += qty;
                }
            }
        }
        let mut errors = Vec::new();
        let mut this_note: BTreeMap<&str, Decimal> = BTreeMap::new();
        for (i, it) in req.items.iter().enumerate() {
            match sold.get(&it.code) {
                None => errors.push(ValidationError::new(
                    format!("items[{i}].code"),
                    ErrorCode::ItemNotOnOriginal,
                    format!("article {} is not on the original invoice", it.code),
                )),
                Some((price, qty)) => {
                    if *price != it.unit_price.value() {
                        errors.push(ValidationError::new(
                            format!("items[{i}].unit_price"),
                            ErrorCode::UnitPriceDiffers,
                            format!(
                                "the original sold {} at {}, not {}",
                                it.code, price, it.unit_price
                            ),
                        ));
                    }
                    let mine = this_note.entry(&it.code).or_default();
                    *mine += it.quantity.value();
                    let already = credited.get(&it.code).copied().unwrap_or_default();
                    if already + *mine > *qty {
                        errors.push(ValidationError::new(
                            format!("items[{i}].quantity"),
                            ErrorCode::CreditExceedsSold,
                            format!(
                                "{} sold {qty}, already credited {already}; this credit note would bring it to {}",
                                it.code,
                                already + *mine
                            ),
                        ));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(count)
        } else {
            Err(SealError::Invalid(ValidationErrors(errors)))
        }
    }
}
