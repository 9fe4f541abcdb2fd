//! The e-MCF request of a sealed invoice (`POST /api/invoice`), and our own
//! DGI totals, mapped from the sealed payload.

use rust_decimal::Decimal;
use serde_json::Value;

use super::wire::{
    DgiClient, DgiInvoiceRequest, DgiItem, DgiOperator, DgiPayment, DgiTotals, cdf, number,
};

/// Why a sealed invoice could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot map sealed invoice to the e-MCF request: {0}")]
pub struct MappingError(pub String);

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
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

/// Maps a sealed invoice's body (`bonopay/sealed-invoice/v1`: the canonical
/// request and our tax result) to the e-MCF request, and returns our own
/// DGI totals with it. A credit note's `reference` is the one the client
/// gave (the original's Bono Pay code or its DGI code); the agent replaces
/// it with the original's DGI code when it sends the note.
///
/// # Errors
/// [`MappingError`] when the body lacks a member the mapping needs.
pub fn map_sealed_body(body: &Value) -> Result<(DgiInvoiceRequest, DgiTotals), MappingError> {
    let missing = |what: &str| MappingError(format!("no {what}"));
    let outlet = s(body, "outlet").ok_or_else(|| missing("outlet"))?;
    let year = body
        .get("fiscal_year")
        .and_then(Value::as_i64)
        .and_then(|y| i32::try_from(y).ok())
        .ok_or_else(|| missing("fiscal_year"))?;
    let total_counter = body
        .pointer("/fiscal_number/total")
        .and_then(Value::as_u64)
        .ok_or_else(|| missing("fiscal_number.total"))?;
    let req = body.get("request").ok_or_else(|| missing("request"))?;
    let tax = body.get("tax").ok_or_else(|| missing("tax"))?;
    let dec = |v: Option<&Value>, what: &str| -> Result<Decimal, MappingError> {
        v.and_then(number::decimal_of).ok_or_else(|| missing(what))
    };
    let totals = DgiTotals {
        total: dec(tax.pointer("/dgi/total"), "tax.dgi.total")?,
        vtotal: dec(tax.pointer("/dgi/vtotal"), "tax.dgi.vtotal")?,
    };
    let mut items = Vec::new();
    for it in req
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("items"))?
    {
        items.push(DgiItem {
            code: s(it, "code").unwrap_or_default(),
            kind: s(it, "kind").unwrap_or_default(),
            name: s(it, "name").unwrap_or_default(),
            price: dec(it.get("unit_price"), "items[].unit_price")?,
            quantity: dec(it.get("quantity"), "items[].quantity")?,
            tax_group: s(it, "tax_group").ok_or_else(|| missing("items[].tax_group"))?,
            tax_specific_value: it
                .pointer("/specific_tax/rate")
                .and_then(Value::as_str)
                .map(|r| format!("{r}%"))
                .unwrap_or_default(),
            tax_specific_amount: it
                .pointer("/specific_tax/amount")
                .and_then(number::decimal_of)
                .unwrap_or_default(),
            original_price: it.get("original_price").and_then(number::decimal_of),
            price_modification: s(it, "price_modification").unwrap_or_default(),
        });
    }
    let client = req.get("client").cloned().unwrap_or(Value::Null);
    let cashier = req.get("cashier").cloned().unwrap_or(Value::Null);
    let mut comments = std::collections::BTreeMap::new();
    for line in 'a'..='h' {
        comments.insert(format!("cmt{line}"), String::new());
    }
    if let Some(c) = req.get("comments").and_then(Value::as_object) {
        for (k, v) in c {
            if let Some(t) = v.as_str() {
                comments.insert(format!("cmt{}", k.to_lowercase()), t.to_owned());
            }
        }
    }
    let currency = s(req, "currency").unwrap_or_else(cdf);
    let fx = req.get("exchange_rate").filter(|v| v.is_object());
    let (cur_rate, cur_date) = match fx {
        Some(f) => (
            dec(f.get("rate"), "exchange_rate.rate")?,
            s(f, "date").unwrap_or_default(),
        ),
        None => (
            Decimal::ONE,
            s(body, "timestamp")
                .map(|t| t.chars().take(10).collect())
                .unwrap_or_default(),
        ),
    };
    let payment = req
        .get("payments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            Ok(DgiPayment {
                name: s(p, "method").unwrap_or_default(),
                amount: dec(p.get("amount"), "payments[].amount")?,
                currency_code: fx.map(|_| currency.clone()),
                currency_rate: fx.map(|_| cur_rate),
            })
        })
        .collect::<Result<Vec<_>, MappingError>>()?;
    let client_type = s(&client, "type").unwrap_or_default();
    let nature = req
        .pointer("/credit_note/nature")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok((
        DgiInvoiceRequest {
            nif: s(req, "merchant_nif").ok_or_else(|| missing("merchant_nif"))?,
            isf: s(body, "isf").unwrap_or_default(),
            rn: bonopay_signer::certification::sfe_number(&outlet, year, total_counter),
            mode: s(req, "price_mode").unwrap_or_default().to_lowercase(),
            invoice_type: s(req, "invoice_type").ok_or_else(|| missing("invoice_type"))?,
            items,
            client: DgiClient {
                type_desc: client_type_desc(&client_type).to_owned(),
                client_type,
                nif: s(&client, "nif").unwrap_or_default(),
                name: s(&client, "name").unwrap_or_default(),
                contact: s(&client, "contact").unwrap_or_default(),
                address: s(&client, "address").unwrap_or_default(),
            },
            operator: DgiOperator {
                id: s(&cashier, "id").unwrap_or_default(),
                name: s(&cashier, "name").unwrap_or_default(),
            },
            payment,
            reference: req
                .pointer("/credit_note/reference")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
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
