//! From the e-MCF request to the DGI's own totals, and the e-MCF's tables.
//!
//! The simulator does not reimplement the tax rules: it maps the request
//! back into the `bonopay/invoice/v1` shape (`docs/format.md` §1) and runs
//! `bonopay-tax`, the same engine the fiscal core seals with. What it adds
//! are the e-MCF's own first checks, answered with the e-MECeF error codes
//! (`dgi-emcf.md` §4), so a client sees the code a real e-MCF would send,
//! the check that amounts are JSON numbers (when the simulator is told to
//! refuse strings), and the `GET /api/info/*` tables.

use std::collections::BTreeMap;

use bonopay_core::{
    ClientType, CreditNature, Currency, InvoiceType, ItemKind, PaymentMethod, TaxGroup,
};
use bonopay_tax::{FixedReferenceRates, RateTable};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::dgi::{DgiInvoiceRequest, DgiTotals, codes};

/// Placeholder for the identifiers the e-MCF does not have (outlet, till)
/// or does not constrain (operator id, article code).
const PLACEHOLDER: &str = "dgi-sim";

/// Why a request was refused: an e-MECeF code and a text for `errorDesc`.
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

/// One tax group as the e-MCF computed it, in CDF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupOut {
    pub group: TaxGroup,
    pub base: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
}

/// What the e-MCF computed for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Computed {
    /// `total` and `vtotal`, in CDF.
    pub totals: DgiTotals,
    /// `curTotal`: the total in the invoice's currency (the CDF total for
    /// a CDF invoice).
    pub cur_total: Decimal,
    /// `ts`: the specific tax, in CDF.
    pub specific_tax: Decimal,
    /// The groups present, in CDF.
    pub groups: Vec<GroupOut>,
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

/// True for the credit-note types (FA, EA).
pub(crate) fn is_credit_note(invoice_type: &str) -> bool {
    InvoiceType::from_code(invoice_type).is_some_and(InvoiceType::is_credit_note)
}

/// The reference of a credit note in its stored form (a Code DEF/DGI
/// without dashes, or `RRR`), if it has that form.
pub(crate) fn normalized_reference(reference: &str) -> Option<String> {
    bonopay_core::normalize_reference(reference.trim())
}

/// Which article a line is, for the over-credit check: its `code`, or its
/// name when it has no code.
pub(crate) fn article_key(code: &str, name: &str) -> String {
    if code.trim().is_empty() {
        format!("name:{}", name.trim())
    } else {
        format!("code:{}", code.trim())
    }
}

/// The e-MCF's first checks, each with its e-MECeF code.
fn precheck(req: &DgiInvoiceRequest) -> Result<(), Refusal> {
    if InvoiceType::from_code(&req.invoice_type).is_none() {
        return Err(refuse(
            codes::BAD_TYPE,
            format!(
                "invoice type {:?} is not one of {}",
                req.invoice_type,
                InvoiceType::codes()
            ),
        ));
    }
    if req.items.is_empty() {
        return Err(refuse(codes::NO_ITEMS, "the invoice has no items"));
    }
    for (i, item) in req.items.iter().enumerate() {
        if TaxGroup::from_code(&item.tax_group).is_none() {
            return Err(refuse(
                codes::BAD_GROUP,
                format!(
                    "items[{i}].taxGroup {:?} is not a group A to N",
                    item.tax_group
                ),
            ));
        }
    }
    for (i, p) in req.payment.iter().enumerate() {
        if PaymentMethod::from_code(&p.name).is_none() {
            return Err(refuse(
                codes::BAD_PAYMENT,
                format!(
                    "payment[{i}].name {:?} is not one of {}",
                    p.name,
                    PaymentMethod::codes()
                ),
            ));
        }
    }
    if is_credit_note(&req.invoice_type) {
        if req.reference.trim().is_empty() {
            return Err(refuse(
                codes::REFERENCE_MISSING,
                "a credit note needs the reference of the original invoice",
            ));
        }
        if req.reference_type.trim().is_empty() {
            return Err(refuse(
                codes::REFERENCE_MISSING,
                "a credit note needs its referenceType (COR, RAN, RAM, RRR)",
            ));
        }
        if normalized_reference(&req.reference).is_none() {
            return Err(refuse(
                codes::REFERENCE_FORMAT,
                format!(
                    "reference {:?} is neither a 24-character code nor RRR",
                    req.reference
                ),
            ));
        }
    }
    if !matches!(req.mode.as_str(), "ht" | "ttc" | "HT" | "TTC") {
        return Err(refuse(
            codes::PROCESSING,
            format!("mode {:?} is neither ht nor ttc", req.mode),
        ));
    }
    if req.rn.trim().is_empty() {
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
            o.insert("unit_price".into(), it.price.to_string().into());
            o.insert("quantity".into(), it.quantity.to_string().into());
            o.insert("tax_group".into(), it.tax_group.clone().into());
            // 0 means "none" on the wire; the core wants it absent.
            if !it.tax_specific_amount.is_zero() {
                let mut st = Map::new();
                st.insert("amount".into(), it.tax_specific_amount.to_string().into());
                let rate = it.tax_specific_value.trim().trim_end_matches('%').trim();
                if !rate.is_empty() && rate.parse::<Decimal>().map_or(true, |d| !d.is_zero()) {
                    st.insert("rate".into(), rate.into());
                }
                o.insert("specific_tax".into(), Value::Object(st));
            }
            if let Some(p) = it.original_price {
                o.insert("original_price".into(), p.to_string().into());
            }
            if !it.price_modification.is_empty() {
                o.insert(
                    "price_modification".into(),
                    it.price_modification.clone().into(),
                );
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
        if !v.is_empty() {
            client.insert(key.into(), v.clone().into());
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
        "payments": req
            .payment
            .iter()
            .map(|p| json!({"method": p.name, "amount": p.amount.to_string()}))
            .collect::<Vec<_>>(),
    });
    let Value::Object(o) = &mut out else {
        return out;
    };
    match req.cur_code.trim() {
        "" | "CDF" => {}
        code => {
            o.insert("currency".into(), code.into());
            let date = if req.cur_date.trim().is_empty() {
                today.to_owned()
            } else {
                fx_date(req.cur_date.trim())
            };
            o.insert(
                "exchange_rate".into(),
                json!({"rate": req.cur_rate.to_string(), "date": date}),
            );
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
    if is_credit_note(&req.invoice_type) {
        o.insert(
            "credit_note".into(),
            json!({
                "reference": req.reference.trim(),
                "nature": req.reference_type.trim(),
            }),
        );
    }
    out
}

/// Checks a request and computes its totals, as the e-MCF does on `POST`,
/// with the e-MCF's own rate table and its USD rate (the BCC reference:
/// the invoice's `curRate` must be within 1 % of it). `today`
/// (`YYYY-MM-DD`, the e-MCF's date) stands in for a missing `curDate`.
pub(crate) fn compute(
    req: &DgiInvoiceRequest,
    today: &str,
    table: &RateTable,
    usd_rate: Decimal,
) -> Result<Computed, Refusal> {
    precheck(req)?;
    let text = to_bonopay(req, today).to_string();
    let invoice = bonopay_core::parse_invoice(&text)
        .map_err(|e| refuse(codes::PROCESSING, format!("invalid invoice: {e}")))?;
    let rates = FixedReferenceRates(BTreeMap::from([(Currency::Usd, usd_rate)]));
    let tax = bonopay_tax::compute(&invoice, table, &rates)
        .map_err(|e| refuse(codes::PROCESSING, format!("invalid invoice: {e}")))?;
    let (lines, cdf_totals) = tax
        .cdf
        .as_ref()
        .map_or((&tax.groups, &tax.totals), |c| (&c.groups, &c.totals));
    let groups = lines
        .iter()
        .map(|g| GroupOut {
            group: g.group,
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
        cur_total: tax.totals.ttc,
        specific_tax: cdf_totals.specific_tax,
        groups,
    })
}

/// The e-MCF's rate table: `dgi_2025` with `overrides` (group letter →
/// percent) applied. Overrides are validated before they get here
/// ([`check_rate_override`]); one the table still refuses leaves the
/// table as it was.
pub(crate) fn rate_table(overrides: &BTreeMap<String, Decimal>) -> RateTable {
    let base = RateTable::dgi_2025();
    if overrides.is_empty() {
        return base;
    }
    let Ok(mut v) = serde_json::to_value(&base) else {
        return base;
    };
    if let Some(groups) = v.get_mut("groups").and_then(Value::as_array_mut) {
        for g in groups {
            let rate = g
                .get("group")
                .and_then(Value::as_str)
                .and_then(|code| overrides.get(code));
            if let (Some(rate), Some(o)) = (rate, g.as_object_mut()) {
                o.insert("rate_percent".into(), rate.to_string().into());
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("version".into(), "dgi-sim-overridden".into());
    }
    RateTable::from_json(&v.to_string()).unwrap_or(base)
}

/// Checks one rate override: a group A–N (any case) and a rate from 0 to
/// 100 with at most 4 decimal places. Returns the group in upper case.
pub(crate) fn check_rate_override(group: &str, rate: Decimal) -> Result<String, String> {
    let g = group.trim().to_ascii_uppercase();
    if TaxGroup::from_code(&g).is_none() {
        return Err(format!("tax group {group:?} is not a group A to N"));
    }
    if rate < Decimal::ZERO || rate > Decimal::ONE_HUNDRED || rate.normalize().scale() > 4 {
        return Err(format!(
            "rate {rate} for group {g} is not a percentage from 0 to 100 with at most 4 decimal places"
        ));
    }
    Ok(g)
}

/// The members of a `POST` body that hold amounts, quantities or rates,
/// which must be JSON numbers when the simulator refuses strings: each
/// one that is a JSON string, as `(path, text)`.
pub(crate) fn string_decimals_in_invoice(body: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut check = |path: String, v: Option<&Value>| {
        if let Some(Value::String(s)) = v {
            out.push((path, s.clone()));
        }
    };
    if let Some(items) = body.get("items").and_then(Value::as_array) {
        for (i, it) in items.iter().enumerate() {
            for key in ["price", "quantity", "taxSpecificAmount", "originalPrice"] {
                check(format!("items[{i}].{key}"), it.get(key));
            }
        }
    }
    if let Some(payments) = body.get("payment").and_then(Value::as_array) {
        for (i, p) in payments.iter().enumerate() {
            for key in ["amount", "currencyRate"] {
                check(format!("payment[{i}].{key}"), p.get(key));
            }
        }
    }
    check("curRate".into(), body.get("curRate"));
    out
}

/// As [`string_decimals_in_invoice`], for a CONFIRM body.
pub(crate) fn string_decimals_in_totals(body: &Value) -> Vec<(String, String)> {
    ["total", "vtotal"]
        .into_iter()
        .filter_map(|k| match body.get(k) {
            Some(Value::String(s)) => Some((k.to_owned(), s.clone())),
            _ => None,
        })
        .collect()
}

/// The refusal for amounts sent as strings (error 99, naming them).
pub(crate) fn strings_refusal(found: &[(String, String)]) -> Option<Refusal> {
    if found.is_empty() {
        return None;
    }
    let list: Vec<String> = found
        .iter()
        .map(|(path, text)| format!("{path} ({text:?})"))
        .collect();
    Some(refuse(
        codes::PROCESSING,
        format!(
            "amounts must be JSON numbers, not strings: {}",
            list.join(", ")
        ),
    ))
}

/// One row of a code table (`GET /api/info/invoiceTypes` and the like).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CodeRow {
    pub code: &'static str,
    pub description: &'static str,
}

/// `GET /api/info/invoiceTypes` (SFE spec §1.7).
pub(crate) fn invoice_types() -> Vec<CodeRow> {
    let describe = |t: InvoiceType| match t {
        InvoiceType::Fv => "Facture de vente",
        InvoiceType::Ft => "Facture d'acompte ou d'avance",
        InvoiceType::Fa => "Facture d'avoir",
        InvoiceType::Ev => "Facture de vente à l'exportation",
        InvoiceType::Et => "Facture d'acompte à l'exportation",
        InvoiceType::Ea => "Facture d'avoir à l'exportation",
    };
    InvoiceType::ALL
        .iter()
        .map(|&t| CodeRow {
            code: t.as_str(),
            description: describe(t),
        })
        .collect()
}

/// `GET /api/info/paymentTypes` (the e-MCF JSON names).
pub(crate) fn payment_types() -> Vec<CodeRow> {
    let describe = |m: PaymentMethod| match m {
        PaymentMethod::Especes => "Espèces",
        PaymentMethod::Virement => "Virement",
        PaymentMethod::CarteBancaire => "Carte bancaire",
        PaymentMethod::MobileMoney => "Mobile money",
        PaymentMethod::Cheques => "Chèques",
        PaymentMethod::Credit => "Crédit",
        PaymentMethod::Autre => "Autre",
    };
    PaymentMethod::ALL
        .iter()
        .map(|&m| CodeRow {
            code: m.as_str(),
            description: describe(m),
        })
        .collect()
}

/// `GET /api/info/clientTypes` (annex I).
pub(crate) fn client_types() -> Vec<CodeRow> {
    let describe = |c: ClientType| match c {
        ClientType::Pp => "Personne physique",
        ClientType::Pm => "Personne morale",
        ClientType::Pc => "Personne physique commerçante",
        ClientType::Pl => "Profession libérale",
        ClientType::Ao => "Ambassades et organisations internationales",
    };
    ClientType::ALL
        .iter()
        .map(|&c| CodeRow {
            code: c.as_str(),
            description: describe(c),
        })
        .collect()
}

/// `GET /api/info/referenceTypes` (annex III).
pub(crate) fn reference_types() -> Vec<CodeRow> {
    let describe = |n: CreditNature| match n {
        CreditNature::Cor => "Correction",
        CreditNature::Ran => "Annulation",
        CreditNature::Ram => "Avoir après retour ou paiement",
        CreditNature::Rrr => "Rabais, remise, ristourne",
    };
    CreditNature::ALL
        .iter()
        .map(|&n| CodeRow {
            code: n.as_str(),
            description: describe(n),
        })
        .collect()
}

/// `GET /api/info/itemTypes`.
pub(crate) fn item_types() -> Vec<CodeRow> {
    let describe = |k: ItemKind| match k {
        ItemKind::Bie => "Bien",
        ItemKind::Ser => "Service",
        ItemKind::Tax => "Taxe (groupes L et N)",
    };
    ItemKind::ALL
        .iter()
        .map(|&k| CodeRow {
            code: k.as_str(),
            description: describe(k),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dgi::{DgiClient, DgiItem, DgiOperator, DgiPayment};

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn item(price: &str, qty: &str, group: &str) -> DgiItem {
        DgiItem {
            code: String::new(),
            kind: "BIE".into(),
            name: "Article".into(),
            price: d(price),
            quantity: d(qty),
            tax_group: group.into(),
            tax_specific_value: "0.00%".into(),
            tax_specific_amount: Decimal::ZERO,
            original_price: None,
            price_modification: String::new(),
        }
    }

    fn request() -> DgiInvoiceRequest {
        DgiInvoiceRequest {
            nif: "A1309334L".into(),
            isf: String::new(),
            rn: "outlet-1/2026/1".into(),
            mode: "ttc".into(),
            invoice_type: "FV".into(),
            items: vec![item("1160", "3", "B"), item("64800", "2", "C")],
            client: DgiClient {
                client_type: "PP".into(),
                type_desc: String::new(),
                nif: String::new(),
                name: String::new(),
                contact: String::new(),
                address: String::new(),
            },
            operator: DgiOperator {
                id: "c 1".into(),
                name: "Mado".into(),
            },
            payment: vec![DgiPayment {
                name: "ESPECES".into(),
                amount: d("133080.00"),
                currency_code: None,
                currency_rate: None,
            }],
            reference: String::new(),
            reference_type: String::new(),
            reference_desc: String::new(),
            comments: BTreeMap::new(),
            cur_code: "CDF".into(),
            cur_date: String::new(),
            cur_rate: Decimal::ONE,
        }
    }

    fn run(r: &DgiInvoiceRequest) -> Result<Computed, Refusal> {
        compute(r, "2026-11-28", &RateTable::dgi_2025(), d("2850"))
    }

    #[test]
    fn known_totals() {
        let c = run(&request()).unwrap();
        assert_eq!(c.totals.total, d("133080.00"));
        assert_eq!(c.totals.vtotal, d("10080.00"));
        assert_eq!(c.cur_total, d("133080.00"));
        assert_eq!(c.groups.len(), 2);
    }

    #[test]
    fn codes() {
        let mut r = request();
        r.invoice_type = "XX".into();
        assert_eq!(run(&r).unwrap_err().code, "3");
        let mut r = request();
        r.items.clear();
        assert_eq!(run(&r).unwrap_err().code, "8");
        let mut r = request();
        r.items[0].tax_group = "O".into();
        assert_eq!(run(&r).unwrap_err().code, "9");
        let mut r = request();
        r.payment[0].name = "BITCOIN".into();
        assert_eq!(run(&r).unwrap_err().code, "7");
        let mut r = request();
        r.invoice_type = "FA".into();
        assert_eq!(run(&r).unwrap_err().code, "4");
        r.reference = "SHORT".into();
        r.reference_type = "COR".into();
        assert_eq!(run(&r).unwrap_err().code, "5");
        let mut r = request();
        r.payment[0].amount = d("1.00");
        assert_eq!(run(&r).unwrap_err().code, "99");
        assert_eq!(fx_date("20261128"), "2026-11-28");
        assert_eq!(fx_date("2026-11-28T08:00:00Z"), "2026-11-28");
    }

    #[test]
    fn overrides_change_the_table_and_bad_ones_are_refused() {
        let t = rate_table(&BTreeMap::from([("B".to_owned(), d("18"))]));
        assert_eq!(t.get(TaxGroup::B).unwrap().rate_percent, d("18"));
        assert_eq!(t.get(TaxGroup::C).unwrap().rate_percent, d("8"));
        let c = compute(&request(), "2026-11-28", &t, d("2850")).unwrap();
        assert_ne!(c.totals.vtotal, d("10080.00"));
        assert_eq!(check_rate_override("b", d("18")).unwrap(), "B");
        assert!(check_rate_override("Z", d("18")).is_err());
        assert!(check_rate_override("B", d("101")).is_err());
        assert!(check_rate_override("B", d("-1")).is_err());
    }

    #[test]
    fn string_amounts_are_found_by_path() {
        let body = json!({
            "items": [{"price": "1.00", "quantity": 1, "taxSpecificAmount": 0, "originalPrice": null}],
            "payment": [{"amount": 1, "currencyRate": "2850"}],
            "curRate": 1
        });
        let found = string_decimals_in_invoice(&body);
        assert_eq!(
            found,
            vec![
                ("items[0].price".to_owned(), "1.00".to_owned()),
                ("payment[0].currencyRate".to_owned(), "2850".to_owned())
            ]
        );
        assert!(
            strings_refusal(&found)
                .unwrap()
                .desc
                .contains("items[0].price")
        );
        assert!(string_decimals_in_totals(&json!({"total": 1, "vtotal": 0})).is_empty());
        assert_eq!(
            string_decimals_in_totals(&json!({"total": 1, "vtotal": "0"})).len(),
            1
        );
    }
}
