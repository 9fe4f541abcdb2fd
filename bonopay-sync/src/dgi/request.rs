//! The e-MCF request of a sealed invoice (`POST /api/invoice`), and our own
//! DGI totals, mapped from the sealed payload.
//!
//! The payload is read by `bonopay-signer`'s typed reader,
//! [`SealedInvoice`], which owns the format: the envelope, the signed
//! tuple (outlet, time and DGI totals, each checked against the body) and
//! the body as canonical text. What the tuple does not carry (the fiscal
//! year and total counter that make the SFE number, the ISF and the
//! canonical request) is read from that text into the typed view below,
//! with serde, never through JSON pointers. Amounts are read from their
//! text exactly ([`number`]), so the request sent keeps every digit the
//! seal has.

use std::collections::BTreeMap;

use bonopay_signer::SealedInvoice;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::wire::{
    DgiClient, DgiInvoiceRequest, DgiItem, DgiOperator, DgiPayment, DgiTotals, cdf, number,
};

/// Why a sealed invoice could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot map sealed invoice to the e-MCF request: {0}")]
#[non_exhaustive]
pub struct MappingError(pub String);

/// The members of a sealed body (`bonopay/sealed-invoice/v1`) the mapping
/// needs beyond the signed tuple. Unknown members are ignored.
#[derive(Deserialize)]
struct Body {
    fiscal_year: i32,
    fiscal_number: Number,
    #[serde(default)]
    isf: Option<String>,
    request: Request,
}

/// The invoice's fiscal number (`FC/TC TYPE`): its total counter.
#[derive(Deserialize)]
struct Number {
    total: u64,
}

/// The canonical request (`bonopay/invoice/v1`), as sealed.
#[derive(Deserialize)]
struct Request {
    merchant_nif: String,
    #[serde(default)]
    price_mode: Option<String>,
    invoice_type: String,
    items: Vec<Item>,
    #[serde(default)]
    client: Option<Client>,
    #[serde(default)]
    cashier: Option<Cashier>,
    #[serde(default)]
    comments: Option<BTreeMap<String, String>>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    exchange_rate: Option<ExchangeRate>,
    #[serde(default)]
    payments: Vec<Payment>,
    #[serde(default)]
    credit_note: Option<CreditNote>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(with = "number")]
    unit_price: Decimal,
    #[serde(with = "number")]
    quantity: Decimal,
    tax_group: String,
    #[serde(default)]
    specific_tax: Option<SpecificTax>,
    #[serde(default, with = "number::option")]
    original_price: Option<Decimal>,
    #[serde(default)]
    price_modification: Option<String>,
}

#[derive(Deserialize)]
struct SpecificTax {
    #[serde(default, with = "number::option")]
    amount: Option<Decimal>,
    #[serde(default)]
    rate: Option<String>,
}

#[derive(Default, Deserialize)]
struct Client {
    #[serde(default, rename = "type")]
    client_type: Option<String>,
    #[serde(default)]
    nif: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    contact: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

#[derive(Default, Deserialize)]
struct Cashier {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct ExchangeRate {
    #[serde(with = "number")]
    rate: Decimal,
    #[serde(default)]
    date: Option<String>,
}

#[derive(Deserialize)]
struct Payment {
    #[serde(default)]
    method: Option<String>,
    #[serde(with = "number")]
    amount: Decimal,
}

#[derive(Deserialize)]
struct CreditNote {
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    nature: Option<String>,
}

fn client_type_desc(t: &str) -> &'static str {
    match t {
        "PP" => "Personne physique",
        "PM" => "Personne morale",
        "PC" => "Personne physique commerçante",
        "PL" => "Profession libérale",
        "AO" => "Ambassades et organisations internationales",
        _ => "",
    }
}

fn nature_desc(n: &str) -> &'static str {
    match n {
        "COR" => "Correction",
        "RAN" => "Annulation",
        "RAM" => "Avoir après retour ou paiement",
        "RRR" => "Rabais, remise, ristourne",
        _ => "",
    }
}

/// Our DGI total as the signed tuple states it (`tax.dgi.total` of the
/// body, which the reader has checked it equals).
fn tuple_amount(text: &str, what: &str) -> Result<Decimal, MappingError> {
    let t = text.trim();
    t.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(t))
        .map_err(|_| MappingError(format!("{what} is not a decimal: {t}")))
}

/// Maps a sealed invoice to the e-MCF request, and returns our own DGI
/// totals with it. A credit note's `reference` is the one the client gave
/// (the original's Bono Pay code or its DGI code); the agent replaces it
/// with the original's DGI code when it sends the note.
///
/// # Errors
/// [`MappingError`] when the body lacks a member the mapping needs, or
/// one of the wrong type.
pub fn map_sealed(invoice: &SealedInvoice) -> Result<(DgiInvoiceRequest, DgiTotals), MappingError> {
    let tuple = &invoice.tuple;
    let body: Body = serde_json::from_str(&invoice.body)
        .map_err(|e| MappingError(format!("sealed body: {e}")))?;
    let totals = DgiTotals {
        total: tuple_amount(&tuple.total, "tax.dgi.total")?,
        vtotal: tuple_amount(&tuple.vtotal, "tax.dgi.vtotal")?,
    };
    let req = body.request;
    let items = req
        .items
        .into_iter()
        .map(|it| {
            let specific = it.specific_tax;
            DgiItem {
                code: it.code.unwrap_or_default(),
                kind: it.kind.unwrap_or_default(),
                name: it.name.unwrap_or_default(),
                price: it.unit_price,
                quantity: it.quantity,
                tax_group: it.tax_group,
                tax_specific_value: specific
                    .as_ref()
                    .and_then(|t| t.rate.as_deref())
                    .map(|r| format!("{r}%"))
                    .unwrap_or_default(),
                tax_specific_amount: specific.and_then(|t| t.amount).unwrap_or_default(),
                original_price: it.original_price,
                price_modification: it.price_modification.unwrap_or_default(),
            }
        })
        .collect();
    let client = req.client.unwrap_or_default();
    let cashier = req.cashier.unwrap_or_default();
    let mut comments: BTreeMap<String, String> = ('a'..='h')
        .map(|l| (format!("cmt{l}"), String::new()))
        .collect();
    for (k, v) in req.comments.unwrap_or_default() {
        comments.insert(format!("cmt{}", k.to_lowercase()), v);
    }
    let currency = req.currency.unwrap_or_else(cdf);
    let fx = req.exchange_rate;
    let (cur_rate, cur_date) = match &fx {
        Some(f) => (f.rate, f.date.clone().unwrap_or_default()),
        // The invoice's local date: the signed timestamp is RFC 3339 with
        // the outlet's offset.
        None => (Decimal::ONE, tuple.timestamp.chars().take(10).collect()),
    };
    let payment = req
        .payments
        .into_iter()
        .map(|p| DgiPayment {
            name: p.method.unwrap_or_default(),
            amount: p.amount,
            currency_code: fx.as_ref().map(|_| currency.clone()),
            currency_rate: fx.as_ref().map(|_| cur_rate),
        })
        .collect();
    let client_type = client.client_type.unwrap_or_default();
    let (reference, nature) = match req.credit_note {
        Some(c) => (
            c.reference.unwrap_or_default(),
            c.nature.unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    Ok((
        DgiInvoiceRequest {
            nif: req.merchant_nif,
            isf: body.isf.unwrap_or_default(),
            rn: bonopay_signer::certification::sfe_number(
                &tuple.outlet,
                body.fiscal_year,
                body.fiscal_number.total,
            ),
            mode: req.price_mode.unwrap_or_default().to_lowercase(),
            invoice_type: req.invoice_type,
            items,
            client: DgiClient {
                type_desc: client_type_desc(&client_type).to_owned(),
                client_type,
                nif: client.nif.unwrap_or_default(),
                name: client.name.unwrap_or_default(),
                contact: client.contact.unwrap_or_default(),
                address: client.address.unwrap_or_default(),
            },
            operator: DgiOperator {
                id: cashier.id.unwrap_or_default(),
                name: cashier.name.unwrap_or_default(),
            },
            payment,
            reference,
            reference_desc: nature_desc(&nature).to_owned(),
            reference_type: nature,
            comments,
            cur_code: currency,
            cur_date,
            cur_rate,
        },
        totals,
    ))
}
