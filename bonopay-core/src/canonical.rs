//! Canonical serialization: RFC 8785 (JCS) bytes over dedicated wire structs.
//!
//! The wire structs declare their fields in sorted order and hold only
//! strings, objects and arrays (amounts are fixed-scale strings), so plain
//! compact serde_json output already *is* the JCS form; a test re-runs an
//! independent JCS implementation over the output to keep that true.
//! See `docs/format.md` for the byte-level contract.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, ValidationError, ValidationErrors};
use crate::json::Json;
use crate::model::{CommentLine, InvoiceRequest, ItemKind, PaymentMethod, TaxGroup};
use crate::parse::SCHEMA_V1;

#[derive(Serialize)]
struct WireInvoice<'a> {
    cashier: WireCashier<'a>,
    client: WireClient<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    comments: &'a BTreeMap<CommentLine, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credit_note: Option<WireCredit<'a>>,
    currency: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange_rate: Option<WireRate<'a>>,
    invoice_type: &'static str,
    items: Vec<WireItem<'a>>,
    merchant_nif: &'a str,
    outlet_id: &'a str,
    payments: Vec<WirePayment>,
    pos_terminal_id: &'a str,
    price_mode: &'static str,
    schema: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tax_groups: Option<Vec<WireClientGroup>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    totals: Option<WireClientTotals>,
}

#[derive(Serialize)]
struct WireCashier<'a> {
    id: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct WireClient<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exemption_reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nif: Option<&'a str>,
    #[serde(rename = "type")]
    client_type: &'static str,
}

#[derive(Serialize)]
struct WireCredit<'a> {
    nature: &'static str,
    reference: &'a str,
}

#[derive(Serialize)]
struct WireRate<'a> {
    date: &'a str,
    rate: String,
}

#[derive(Serialize)]
struct WireItem<'a> {
    code: &'a str,
    kind: ItemKind,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_price: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price_modification: Option<&'a str>,
    quantity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    specific_tax: Option<WireSpecific>,
    tax_group: TaxGroup,
    unit_price: String,
}

#[derive(Serialize)]
struct WireSpecific {
    amount: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<String>,
}

#[derive(Serialize)]
struct WirePayment {
    amount: String,
    method: PaymentMethod,
}

#[derive(Serialize)]
struct WireClientGroup {
    base: String,
    group: TaxGroup,
    tax: String,
    total: String,
}

#[derive(Serialize)]
struct WireClientTotals {
    #[serde(skip_serializing_if = "Option::is_none")]
    ht: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    specific_tax: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vat: Option<String>,
}

fn wire(req: &InvoiceRequest, with_client_computed: bool) -> WireInvoice<'_> {
    let c = &req.client;
    WireInvoice {
        cashier: WireCashier {
            id: &req.cashier.id,
            name: &req.cashier.name,
        },
        client: WireClient {
            address: c.address.as_deref(),
            contact: c.contact.as_deref(),
            email: c.email.as_deref(),
            exemption_reference: c.exemption_reference.as_deref(),
            name: c.name.as_deref(),
            nif: c.nif.as_deref(),
            client_type: c.client_type.as_str(),
        },
        comments: &req.comments,
        credit_note: req.credit_note.as_ref().map(|cn| WireCredit {
            nature: cn.nature.as_str(),
            reference: &cn.reference,
        }),
        currency: req.currency.as_str(),
        exchange_rate: req.exchange_rate.as_ref().map(|r| WireRate {
            date: &r.date,
            rate: r.rate.to_string(),
        }),
        invoice_type: req.invoice_type.as_str(),
        items: req
            .items
            .iter()
            .map(|i| WireItem {
                code: &i.code,
                kind: i.kind,
                name: &i.name,
                original_price: i.original_price.map(|p| p.to_string()),
                price_modification: i.price_modification.as_deref(),
                quantity: i.quantity.to_string(),
                specific_tax: i.specific_tax.map(|s| WireSpecific {
                    amount: s.amount.to_string(),
                    rate: s.rate.map(|r| r.to_string()),
                }),
                tax_group: i.tax_group,
                unit_price: i.unit_price.to_string(),
            })
            .collect(),
        merchant_nif: &req.merchant_nif,
        outlet_id: &req.outlet_id,
        payments: req
            .payments
            .iter()
            .map(|p| WirePayment {
                amount: p.amount.to_string(),
                method: p.method,
            })
            .collect(),
        pos_terminal_id: &req.pos_terminal_id,
        price_mode: req.price_mode.as_str(),
        schema: SCHEMA_V1,
        tax_groups: with_client_computed
            .then_some(())
            .and(req.client_tax_groups.as_ref())
            .map(|gs| {
                gs.iter()
                    .map(|g| WireClientGroup {
                        base: g.base.to_string(),
                        group: g.group,
                        tax: g.tax.to_string(),
                        total: g.total.to_string(),
                    })
                    .collect()
            }),
        totals: with_client_computed
            .then_some(())
            .and(req.client_totals.as_ref())
            .map(|t| WireClientTotals {
                ht: t.ht.map(|m| m.to_string()),
                specific_tax: t.specific_tax.map(|m| m.to_string()),
                ttc: t.ttc.map(|m| m.to_string()),
                vat: t.vat.map(|m| m.to_string()),
            }),
    }
}

/// Serializes the request as JSON; with `with_client_computed` the
/// client-computed groups and totals are kept (for re-validation), without
/// them this is the canonical form.
pub(crate) fn request_json(req: &InvoiceRequest, with_client_computed: bool) -> String {
    // Serializing these structs cannot fail: every field is a string, a
    // map with string keys or a sequence of those.
    serde_json::to_string(&wire(req, with_client_computed)).unwrap_or_default()
}

impl InvoiceRequest {
    /// The canonical bytes (RFC 8785 JCS, UTF-8) of this request.
    ///
    /// Client-computed `tax_groups` and `totals` are not part of them: they
    /// are redundant (the core recomputes and checks them), so an invoice
    /// sent with or without them is the same invoice.
    #[must_use]
    pub fn canonical_bytes(&self) -> Vec<u8> {
        request_json(self, false).into_bytes()
    }

    /// The canonical form as a string.
    #[must_use]
    pub fn canonical_string(&self) -> String {
        request_json(self, false)
    }

    /// Lowercase hex SHA-256 of [`Self::canonical_bytes`].
    #[must_use]
    pub fn canonical_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }
}

/// Parses, validates and canonicalizes in one step.
///
/// # Errors
/// Every validation problem.
pub fn canonicalize(text: &str) -> Result<String, ValidationErrors> {
    crate::parse_invoice(text).map(|r| r.canonical_string())
}

/// RFC 8785 canonicalization of arbitrary JSON text (numbers included).
/// Used for the external JCS vectors and for any JSON we hash that is not an
/// invoice. Duplicate object keys are refused, as RFC 8785 §3.1 requires
/// I-JSON input.
///
/// # Errors
/// A [`ValidationErrors`] with [`ErrorCode::InvalidJson`].
pub fn jcs(text: &str) -> Result<String, ValidationErrors> {
    let invalid =
        |msg: String| ValidationErrors(vec![ValidationError::new("", ErrorCode::InvalidJson, msg)]);
    let tree = Json::parse(text).map_err(|e| invalid(e.to_string()))?;
    if let Some(path) = first_duplicate(&tree, String::new()) {
        return Err(invalid(format!("duplicate key at `{path}`")));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    serde_json_canonicalizer::to_string(&value).map_err(|e| invalid(e.to_string()))
}

fn first_duplicate(v: &Json, path: String) -> Option<String> {
    match v {
        Json::Object(m) => {
            for (i, (k, child)) in m.iter().enumerate() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if m[..i].iter().any(|(k2, _)| k2 == k) {
                    return Some(p);
                }
                if let Some(d) = first_duplicate(child, p) {
                    return Some(d);
                }
            }
            None
        }
        Json::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, c)| first_duplicate(c, format!("{path}[{i}]"))),
        _ => None,
    }
}
