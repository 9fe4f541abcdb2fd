//! From the e-MCF request to the DGI's own totals.
//!
//! The simulator does not reimplement the tax rules: it maps the request
//! back into the `bonopay/invoice/v1` shape (`docs/format.md` §1) and runs
//! `bonopay-tax`, the same engine the fiscal core seals with. What it adds
//! are the e-MCF's own first checks, answered with the Benin error codes
//! (`dgi-emcf.md` §4), so a client sees the code a real e-MCF would send.

use std::collections::BTreeMap;

use bonopay_core::Currency;
use bonopay_tax::{FixedReferenceRates, RateTable};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::dgi::{DgiInvoiceRequest, DgiTotals, codes};

/// Invoice types the e-MCF knows.
const TYPES: [&str; 6] = ["FV", "FT", "FA", "EV", "ET", "EA"];
/// Payment names the e-MCF knows.
const PAYMENTS: [&str; 7] = [
    "ESPECES",
    "VIREMENT",
    "CARTEBANCAIRE",
    "MOBILEMONEY",
    "CHEQUES",
    "CREDIT",
    "AUTRE",
];
/// Placeholder for the identifiers the e-MCF does not have (outlet, till)
/// or does not constrain (operator id, article code).
const PLACEHOLDER: &str = "dgi-sim";

/// Benin e-MECeF codes the simulator uses on `POST` (`dgi-emcf.md` §4).
pub(crate) mod bj {
    /// Bad invoice type.
    pub const BAD_TYPE: &str = "3";
    /// Credit note without its reference.
    pub const REFERENCE_MISSING: &str = "4";
    /// Reference not 24 characters (nor `RRR`).
    pub const REFERENCE_FORMAT: &str = "5";
    /// Bad payment type.
    pub const BAD_PAYMENT: &str = "7";
    /// No items.
    pub const NO_ITEMS: &str = "8";
    /// Bad tax group.
    pub const BAD_GROUP: &str = "9";
}

/// Why a request was refused: a Benin code and a text for `errorDesc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: &'static str,
    pub desc: String,
}

fn refuse(code: &'static str, desc: impl Into<String>) -> Refusal {
    Refusal {
        code,
        desc: desc.into(),
    }
}

/// One tax group in the `POST` answer, in CDF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct GroupOut {
    pub group: String,
    #[serde(serialize_with = "money")]
    pub rate: Decimal,
    #[serde(serialize_with = "money")]
    pub base: Decimal,
    #[serde(serialize_with = "money")]
    pub tax: Decimal,
    #[serde(serialize_with = "money")]
    pub total: Decimal,
}

fn money<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let mut v = *d;
    v.rescale(2);
    s.collect_str(&v)
}

/// What the e-MCF computed for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Computed {
    /// `total` and `vtotal`, in CDF.
    pub totals: DgiTotals,
    /// For foreign-currency invoices: the total in that currency.
    pub cur_total: Option<Decimal>,
    /// Per-group lines, in CDF.
    pub groups: Vec<GroupOut>,
}

fn non_empty(v: Option<&String>) -> Option<&str> {
    v.map(String::as_str).filter(|s| !s.is_empty())
}

/// An identifier the core accepts (`A-Z a-z 0-9 . _ -`, at most 64).
fn identifier_or(text: &str, fallback: String) -> String {
    let ok = !text.is_empty()
        && text.len() <= bonopay_core::MAX_ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok { text.to_owned() } else { fallback }
}

/// `YYYY-MM-DD` from the forms a `curDate` takes (`YYYY-MM-DD`,
/// `yyyyMMdd`, or a date-time starting with the date).
fn fx_date(text: &str) -> String {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if text.len() == 8
        && digits(text)
        && let (Some(y), Some(m), Some(d)) = (text.get(0..4), text.get(4..6), text.get(6..8))
    {
        return format!("{y}-{m}-{d}");
    }
    match text.get(0..10) {
        Some(date) if bonopay_core::is_valid_date(date) => date.to_owned(),
        _ => text.to_owned(),
    }
}

/// The e-MCF's first checks, each with its Benin code.
fn precheck(req: &DgiInvoiceRequest) -> Result<(), Refusal> {
    if !TYPES.contains(&req.invoice_type.as_str()) {
        return Err(refuse(
            bj::BAD_TYPE,
            format!(
                "invoice type {:?} is not one of {}",
                req.invoice_type,
                TYPES.join(", ")
            ),
        ));
    }
    if req.items.is_empty() {
        return Err(refuse(bj::NO_ITEMS, "the invoice has no items"));
    }
    for (i, item) in req.items.iter().enumerate() {
        let g = item.tax_group.as_bytes();
        if !(g.len() == 1 && (b'A'..=b'N').contains(&g[0])) {
            return Err(refuse(
                bj::BAD_GROUP,
                format!(
                    "items[{i}].taxGroup {:?} is not a group A to N",
                    item.tax_group
                ),
            ));
        }
    }
    for (i, p) in req.payment.iter().enumerate() {
        if !PAYMENTS.contains(&p.name.as_str()) {
            return Err(refuse(
                bj::BAD_PAYMENT,
                format!(
                    "payment[{i}].name {:?} is not one of {}",
                    p.name,
                    PAYMENTS.join(", ")
                ),
            ));
        }
    }
    if matches!(req.invoice_type.as_str(), "FA" | "EA") {
        let Some(reference) = non_empty(req.reference.as_ref()) else {
            return Err(refuse(
                bj::REFERENCE_MISSING,
                "a credit note needs the reference of the original invoice",
            ));
        };
        if non_empty(req.reference_type.as_ref()).is_none() {
            return Err(refuse(
                bj::REFERENCE_MISSING,
                "a credit note needs its referenceType (COR, RAN, RAM, RRR)",
            ));
        }
        if bonopay_core::normalize_reference(reference).is_none() {
            return Err(refuse(
                bj::REFERENCE_FORMAT,
                format!("reference {reference:?} is neither a 24-character code nor RRR"),
            ));
        }
    }
    if !matches!(req.mode.as_str(), "ht" | "ttc" | "HT" | "TTC") {
        return Err(refuse(
            codes::PROCESSING,
            format!("mode {:?} is neither ht nor ttc", req.mode),
        ));
    }
    if req.rn.is_empty() {
        return Err(refuse(
            codes::PROCESSING,
            "rn (the invoice number) is empty",
        ));
    }
    Ok(())
}

/// The request in the `bonopay/invoice/v1` shape (`docs/format.md` §1).
/// `today` (`YYYY-MM-DD`) stands in for a missing `curDate`.
fn to_bonopay(req: &DgiInvoiceRequest, today: &str) -> Value {
    let items: Vec<Value> = req
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let mut o = Map::new();
            o.insert(
                "code".into(),
                identifier_or(&it.code, format!("item-{i}")).into(),
            );
            o.insert("kind".into(), it.kind.clone().into());
            o.insert("name".into(), it.name.clone().into());
            o.insert("unit_price".into(), it.price.clone().into());
            o.insert("quantity".into(), it.quantity.clone().into());
            o.insert("tax_group".into(), it.tax_group.clone().into());
            if let Some(amount) = non_empty(it.tax_specific_amount.as_ref()) {
                // "0.00" means "none" on the wire; the core wants it absent.
                if amount.parse::<Decimal>().map_or(true, |d| !d.is_zero()) {
                    let mut st = Map::new();
                    st.insert("amount".into(), amount.into());
                    let rate = non_empty(it.tax_specific_value.as_ref())
                        .map(|r| r.trim_end_matches('%').trim());
                    if let Some(rate) = rate
                        && rate.parse::<Decimal>().map_or(true, |d| !d.is_zero())
                    {
                        st.insert("rate".into(), rate.into());
                    }
                    o.insert("specific_tax".into(), Value::Object(st));
                }
            }
            if let Some(p) = non_empty(it.original_price.as_ref()) {
                o.insert("original_price".into(), p.into());
            }
            if let Some(p) = non_empty(it.price_modification.as_ref()) {
                o.insert("price_modification".into(), p.into());
            }
            Value::Object(o)
        })
        .collect();

    let mut client = Map::new();
    let client_type = if req.client.client_type.is_empty() {
        "PP"
    } else {
        req.client.client_type.as_str()
    };
    client.insert("type".into(), client_type.into());
    for (key, v) in [
        ("nif", &req.client.nif),
        ("name", &req.client.name),
        ("contact", &req.client.contact),
        ("address", &req.client.address),
    ] {
        if let Some(v) = non_empty(v.as_ref()) {
            client.insert(key.into(), v.into());
        }
    }

    let operator_name = if req.operator.name.is_empty() {
        PLACEHOLDER
    } else {
        req.operator.name.as_str()
    };
    let mut out = json!({
        "merchant_nif": req.nif,
        "outlet_id": PLACEHOLDER,
        "pos_terminal_id": PLACEHOLDER,
        "cashier": {
            "id": identifier_or(&req.operator.id, PLACEHOLDER.to_owned()),
            "name": operator_name,
        },
        "invoice_type": req.invoice_type,
        "price_mode": req.mode.to_uppercase(),
        "client": Value::Object(client),
        "items": items,
        "payments": req.payment.iter().map(|p| json!({"method": p.name, "amount": p.amount})).collect::<Vec<_>>(),
    });
    let Value::Object(o) = &mut out else {
        return out;
    };
    match non_empty(req.cur_code.as_ref()) {
        None | Some("CDF") => {}
        Some(code) => {
            o.insert("currency".into(), code.into());
            let mut fx = Map::new();
            if let Some(rate) = non_empty(req.cur_rate.as_ref()) {
                fx.insert("rate".into(), rate.into());
            }
            let date = non_empty(req.cur_date.as_ref()).map_or_else(|| today.to_owned(), fx_date);
            fx.insert("date".into(), date.into());
            o.insert("exchange_rate".into(), Value::Object(fx));
        }
    }
    let mut comments = Map::new();
    for (key, text) in &req.comments {
        let lower = key.to_ascii_lowercase();
        if let Some(line) = lower.strip_prefix("cmt")
            && line.len() == 1
            && ("a"..="h").contains(&line)
            && !text.is_empty()
        {
            comments.insert(line.to_ascii_uppercase(), text.clone().into());
        }
    }
    if !comments.is_empty() {
        o.insert("comments".into(), Value::Object(comments));
    }
    if matches!(req.invoice_type.as_str(), "FA" | "EA") {
        o.insert(
            "credit_note".into(),
            json!({
                "reference": req.reference.clone().unwrap_or_default(),
                "nature": req.reference_type.clone().unwrap_or_default(),
            }),
        );
    }
    out
}

/// Checks a request and computes its totals, as the e-MCF does on `POST`.
/// `today` (`YYYY-MM-DD`, the e-MCF's date) stands in for a missing
/// `curDate`.
pub(crate) fn compute(req: &DgiInvoiceRequest, today: &str) -> Result<Computed, Refusal> {
    precheck(req)?;
    let text = to_bonopay(req, today).to_string();
    let invoice = bonopay_core::parse_invoice(&text)
        .map_err(|e| refuse(codes::PROCESSING, format!("invalid invoice: {e}")))?;
    // The e-MCF checks the rate against the BCC's; the simulator has no
    // BCC feed, so it accepts the invoice's own rate as the reference.
    let mut rates = BTreeMap::new();
    if let Some(fx) = &invoice.exchange_rate {
        rates.insert(invoice.currency, fx.rate.value());
    }
    let tax = bonopay_tax::compute(
        &invoice,
        &RateTable::dgi_2025(),
        &FixedReferenceRates(rates),
    )
    .map_err(|e| refuse(codes::PROCESSING, format!("invalid invoice: {e}")))?;
    let lines = tax.cdf.as_ref().map_or(&tax.groups, |c| &c.groups);
    let groups = lines
        .iter()
        .map(|g| GroupOut {
            group: g.group.as_str().to_owned(),
            rate: g.rate,
            base: g.base,
            tax: g.tax,
            total: g.total,
        })
        .collect();
    Ok(Computed {
        totals: DgiTotals {
            total: tax.dgi.total,
            vtotal: tax.dgi.vtotal,
        },
        cur_total: (invoice.currency != Currency::Cdf).then_some(tax.totals.ttc),
        groups,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dgi::{DgiClient, DgiItem, DgiOperator, DgiPayment};

    fn item(price: &str, qty: &str, group: &str) -> DgiItem {
        DgiItem {
            code: String::new(),
            kind: "BIE".into(),
            name: "Article".into(),
            price: price.into(),
            quantity: qty.into(),
            tax_group: group.into(),
            tax_specific_amount: None,
            tax_specific_value: Some("0.00%".into()),
            original_price: None,
            price_modification: None,
        }
    }

    fn request() -> DgiInvoiceRequest {
        DgiInvoiceRequest {
            nif: "A1309334L".into(),
            isf: None,
            rn: "outlet-1:1".into(),
            mode: "ttc".into(),
            invoice_type: "FV".into(),
            items: vec![item("1160", "3", "B"), item("64800", "2", "C")],
            client: DgiClient {
                client_type: "PP".into(),
                nif: None,
                name: Some(String::new()),
                contact: None,
                address: None,
            },
            operator: DgiOperator {
                id: "c 1".into(),
                name: "Mado".into(),
            },
            payment: vec![DgiPayment {
                name: "ESPECES".into(),
                amount: "133080.00".into(),
            }],
            reference: None,
            reference_type: None,
            comments: BTreeMap::new(),
            cur_code: None,
            cur_date: None,
            cur_rate: None,
        }
    }

    #[test]
    fn known_totals() {
        let c = compute(&request(), "2026-11-28").unwrap();
        assert_eq!(c.totals.total, Decimal::new(13_308_000, 2));
        assert_eq!(c.totals.vtotal, Decimal::new(1_008_000, 2));
        assert_eq!(c.cur_total, None);
        assert_eq!(c.groups.len(), 2);
    }

    #[test]
    fn codes() {
        let mut r = request();
        r.invoice_type = "XX".into();
        assert_eq!(compute(&r, "2026-11-28").unwrap_err().code, "3");
        let mut r = request();
        r.items.clear();
        assert_eq!(compute(&r, "2026-11-28").unwrap_err().code, "8");
        let mut r = request();
        r.items[0].tax_group = "O".into();
        assert_eq!(compute(&r, "2026-11-28").unwrap_err().code, "9");
        let mut r = request();
        r.payment[0].name = "BITCOIN".into();
        assert_eq!(compute(&r, "2026-11-28").unwrap_err().code, "7");
        let mut r = request();
        r.invoice_type = "FA".into();
        assert_eq!(compute(&r, "2026-11-28").unwrap_err().code, "4");
        r.reference = Some("SHORT".into());
        r.reference_type = Some("COR".into());
        assert_eq!(compute(&r, "2026-11-28").unwrap_err().code, "5");
        let mut r = request();
        r.payment[0].amount = "1.00".into();
        assert_eq!(compute(&r, "2026-11-28").unwrap_err().code, "99");
        assert_eq!(fx_date("20261128"), "2026-11-28");
        assert_eq!(fx_date("2026-11-28T08:00:00Z"), "2026-11-28");
    }
}
