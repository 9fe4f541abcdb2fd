//! Every validation rule, each shown failing with its path and code, and the
//! "all errors at once" promise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bonopay_core::{ErrorCode, ValidationErrors, parse_invoice};
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "merchant_nif": "A1309334L",
        "outlet_id": "kin-gombe-01",
        "pos_terminal_id": "till-1",
        "cashier": {"id": "c-07", "name": "Mbuyi Kalala"},
        "invoice_type": "FV",
        "price_mode": "TTC",
        "client": {"type": "PP"},
        "items": [
            {"code": "SAV-1", "kind": "BIE", "name": "Savon", "unit_price": "1160.00", "quantity": "2", "tax_group": "B"}
        ],
        "payments": [{"method": "ESPECES", "amount": "2320.00"}]
    })
}

fn errors(v: &Value) -> ValidationErrors {
    parse_invoice(&v.to_string()).expect_err("expected validation errors")
}

fn assert_error(v: &Value, path: &str, code: ErrorCode) {
    let e = errors(v);
    assert!(e.has_at(path, code), "expected {path} / {code}, got {e}");
}

#[test]
fn base_invoice_is_valid() {
    let req = parse_invoice(&base().to_string()).unwrap();
    assert_eq!(req.items.len(), 1);
    bonopay_core::validate(&req).unwrap();
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut v = base();
    v["items"][0]["quantity"] = json!("1.0005");
    v["items"][0]["tax_group"] = json!("Z");
    v["payments"][0]["method"] = json!("BITCOIN");
    v["cashier"]["name"] = json!("");
    v["extra"] = json!(1);
    v["fiscal_number"] = json!("42");
    let e = errors(&v);
    assert!(
        e.has_at("items[0].quantity", ErrorCode::TooManyDecimals),
        "{e}"
    );
    assert!(
        e.has_at("items[0].tax_group", ErrorCode::InvalidValue),
        "{e}"
    );
    assert!(
        e.has_at("payments[0].method", ErrorCode::InvalidValue),
        "{e}"
    );
    assert!(e.has_at("cashier.name", ErrorCode::Empty), "{e}");
    assert!(e.has_at("extra", ErrorCode::UnknownField), "{e}");
    assert!(
        e.has_at("fiscal_number", ErrorCode::SecurityElementForbidden),
        "{e}"
    );
    assert_eq!(e.errors().len(), 6, "{e}");
}

#[test]
fn errors_serialize_with_path_code_message() {
    let mut v = base();
    v["items"][0]["unit_price"] = json!("1.234");
    let json: Value = serde_json::from_str(&errors(&v).to_json()).unwrap();
    assert_eq!(json[0]["path"], "items[0].unit_price");
    assert_eq!(json[0]["code"], "too_many_decimals");
    assert!(json[0]["message"].as_str().unwrap().contains('2'));
}

#[test]
fn security_elements_are_refused_with_their_own_code_at_any_depth() {
    for key in [
        "fiscal_number",
        "nim",
        "authentication_code",
        "codeDEFDGI",
        "timestamp",
        "qr_code",
        "signature",
        "prev_hash",
        "entry_hash",
        "counters",
    ] {
        let mut v = base();
        v[key] = json!("forged");
        assert_error(&v, key, ErrorCode::SecurityElementForbidden);
    }
    let mut v = base();
    v["items"][0]["signature"] = json!("AAAA");
    assert_error(
        &v,
        "items[0].signature",
        ErrorCode::SecurityElementForbidden,
    );
    let mut v = base();
    v["client"]["qr"] = json!("RDCDEF01;x");
    assert_error(&v, "client.qr", ErrorCode::SecurityElementForbidden);
}

#[test]
fn unknown_fields_are_refused_everywhere() {
    let mut v = base();
    v["items"][0]["discount"] = json!("1");
    v["client"]["vip"] = json!(true);
    let e = errors(&v);
    assert!(
        e.has_at("items[0].discount", ErrorCode::UnknownField),
        "{e}"
    );
    assert!(e.has_at("client.vip", ErrorCode::UnknownField), "{e}");
}

#[test]
fn duplicate_keys_are_refused() {
    let text = base().to_string().replacen(
        "\"invoice_type\":\"FV\"",
        "\"invoice_type\":\"FV\",\"invoice_type\":\"FA\"",
        1,
    );
    let e = parse_invoice(&text).unwrap_err();
    assert!(e.has_at("invoice_type", ErrorCode::InvalidJson), "{e}");
}

#[test]
fn missing_required_fields() {
    for key in [
        "merchant_nif",
        "outlet_id",
        "pos_terminal_id",
        "cashier",
        "invoice_type",
        "price_mode",
        "client",
        "items",
        "payments",
    ] {
        let mut v = base();
        v.as_object_mut().unwrap().remove(key);
        assert_error(&v, key, ErrorCode::MissingField);
    }
    let mut v = base();
    v["items"][0].as_object_mut().unwrap().remove("tax_group");
    assert_error(&v, "items[0].tax_group", ErrorCode::MissingField);
}

#[test]
fn no_items_and_no_payments() {
    let mut v = base();
    v["items"] = json!([]);
    v["payments"] = json!([]);
    let e = errors(&v);
    assert!(e.has_at("items", ErrorCode::NoItems), "{e}");
    assert!(e.has_at("payments", ErrorCode::NoPayments), "{e}");
}

#[test]
fn zero_or_negative_amounts() {
    let mut v = base();
    v["items"][0]["unit_price"] = json!("0");
    assert_error(&v, "items[0].unit_price", ErrorCode::NotPositive);
    let mut v = base();
    v["items"][0]["quantity"] = json!("-1");
    assert_error(&v, "items[0].quantity", ErrorCode::NotPositive);
    let mut v = base();
    v["payments"][0]["amount"] = json!("-5.00");
    assert_error(&v, "payments[0].amount", ErrorCode::NotPositive);
    // 0.01 × 0.001 is positive but rounds to a zero line.
    let mut v = base();
    v["items"][0]["unit_price"] = json!("0.01");
    v["items"][0]["quantity"] = json!("0.001");
    assert_error(&v, "items[0]", ErrorCode::NotPositive);
}

#[test]
fn decimal_spelling_rules() {
    let cases = [
        (json!("1e3"), ErrorCode::InvalidDecimal),
        (json!("1,50"), ErrorCode::InvalidDecimal),
        (json!(" 1.50"), ErrorCode::InvalidDecimal),
        (json!(1.5), ErrorCode::InexactNumber),
        (json!(1e2), ErrorCode::InexactNumber),
        (json!(1e300), ErrorCode::OutOfRange),
        (json!("1.505"), ErrorCode::TooManyDecimals),
        (json!("1000000000000000000"), ErrorCode::OutOfRange),
        (json!(true), ErrorCode::WrongType),
    ];
    for (value, code) in cases {
        let mut v = base();
        v["items"][0]["unit_price"] = value.clone();
        assert_error(&v, "items[0].unit_price", code);
    }
    let mut v = base();
    v["items"][0]["unit_price"] = json!(1);
    let text = v
        .to_string()
        .replace("\"unit_price\":1", "\"unit_price\":18446744073709551616");
    let e = parse_invoice(&text).unwrap_err();
    assert!(
        e.has_at("items[0].unit_price", ErrorCode::OutOfRange),
        "{e}"
    );
    // Integers and trailing zeros are fine.
    let mut v = base();
    v["items"][0]["unit_price"] = json!(1160);
    v["items"][0]["quantity"] = json!("2.000");
    parse_invoice(&v.to_string()).unwrap();
}

#[test]
fn tax_items_only_in_l_and_n() {
    let mut v = base();
    v["items"][0]["kind"] = json!("TAX");
    assert_error(&v, "items[0].tax_group", ErrorCode::TaxItemOutsideLevyGroup);
    let mut v = base();
    v["items"][0]["tax_group"] = json!("L");
    assert_error(&v, "items[0].kind", ErrorCode::LevyGroupRequiresTaxItem);
    let mut v = base();
    v["items"][0]["kind"] = json!("TAX");
    v["items"][0]["tax_group"] = json!("N");
    parse_invoice(&v.to_string()).unwrap();
    v["items"][0]["specific_tax"] = json!({"amount": "1.00"});
    assert_error(
        &v,
        "items[0].specific_tax",
        ErrorCode::SpecificTaxNotAllowed,
    );
}

#[test]
fn client_type_requirements() {
    for t in ["PM", "PC", "PL"] {
        let mut v = base();
        v["client"] = json!({"type": t});
        let e = errors(&v);
        assert!(
            e.has_at("client.name", ErrorCode::RequiredForClientType),
            "{t}: {e}"
        );
        assert!(
            e.has_at("client.nif", ErrorCode::RequiredForClientType),
            "{t}: {e}"
        );
        v["client"] = json!({"type": t, "name": "Kin Trading SARL", "nif": "A0901234B"});
        parse_invoice(&v.to_string()).unwrap();
    }
    let mut v = base();
    v["client"] = json!({"type": "XX"});
    assert_error(&v, "client.type", ErrorCode::InvalidValue);
}

#[test]
fn ao_needs_exemption_reference_in_comment_a() {
    let mut v = base();
    v["client"] = json!({"type": "AO", "name": "Ambassade de Belgique"});
    let e = errors(&v);
    assert!(
        e.has_at(
            "client.exemption_reference",
            ErrorCode::RequiredForClientType
        ),
        "{e}"
    );
    assert!(
        e.has_at("comments.A", ErrorCode::AoExemptionReferenceMissing),
        "{e}"
    );

    v["client"]["exemption_reference"] = json!("EXO-2026-0042");
    assert_error(&v, "comments.A", ErrorCode::AoExemptionReferenceMissing);
    v["comments"] = json!({"A": "Réf. Exo. : EXO-2026-9999"});
    assert_error(&v, "comments.A", ErrorCode::AoExemptionReferenceMissing);
    v["comments"] = json!({"A": "Réf. Exo. : EXO-2026-0042"});
    parse_invoice(&v.to_string()).unwrap();
}

#[test]
fn credit_notes_need_reference_and_nature() {
    let mut v = base();
    v["invoice_type"] = json!("FA");
    assert_error(&v, "credit_note", ErrorCode::CreditNoteReferenceRequired);
    v["invoice_type"] = json!("EA");
    assert_error(&v, "credit_note", ErrorCode::CreditNoteReferenceRequired);

    v["credit_note"] = json!({"reference": "TEST-E64H-2J6I-LT3E-B5TH-DUMA", "nature": "COR"});
    let req = parse_invoice(&v.to_string()).unwrap();
    assert_eq!(
        req.credit_note.as_ref().unwrap().reference,
        "TESTE64H2J6ILT3EB5THDUMA"
    );

    v["credit_note"] = json!({"reference": "short", "nature": "COR"});
    assert_error(
        &v,
        "credit_note.reference",
        ErrorCode::InvalidCreditReference,
    );
    v["credit_note"] = json!({"reference": "teste64h2j6ilt3eb5thduma", "nature": "COR"});
    assert_error(
        &v,
        "credit_note.reference",
        ErrorCode::InvalidCreditReference,
    );
    v["credit_note"] = json!({"reference": "RRR", "nature": "COR"});
    assert_error(&v, "credit_note.reference", ErrorCode::RrrReferenceMismatch);
    v["credit_note"] = json!({"reference": "TESTE64H2J6ILT3EB5THDUMA", "nature": "RRR"});
    assert_error(&v, "credit_note.reference", ErrorCode::RrrReferenceMismatch);
    v["credit_note"] = json!({"reference": "RRR", "nature": "RRR"});
    parse_invoice(&v.to_string()).unwrap();
    v["credit_note"] = json!({"reference": "RRR"});
    assert_error(&v, "credit_note.nature", ErrorCode::MissingField);

    let mut v = base();
    v["credit_note"] = json!({"reference": "RRR", "nature": "RRR"});
    assert_error(&v, "credit_note", ErrorCode::CreditNoteReferenceNotAllowed);
}

#[test]
fn currency_and_exchange_rate() {
    let mut v = base();
    v["currency"] = json!("USD");
    assert_error(&v, "exchange_rate", ErrorCode::ExchangeRateRequired);
    v["exchange_rate"] = json!({"rate": "2850.50", "date": "2026-02-30"});
    assert_error(&v, "exchange_rate.date", ErrorCode::InvalidDate);
    v["exchange_rate"] = json!({"rate": "2850.50", "date": "2026-11-27"});
    parse_invoice(&v.to_string()).unwrap();
    v["currency"] = json!("CDF");
    assert_error(&v, "exchange_rate", ErrorCode::ExchangeRateNotAllowed);
    v["currency"] = json!("EUR");
    assert_error(&v, "currency", ErrorCode::InvalidValue);
}

#[test]
fn text_field_rules() {
    let mut v = base();
    v["items"][0]["name"] = json!("Sa\u{0}von");
    assert_error(&v, "items[0].name", ErrorCode::ControlCharacter);
    let mut v = base();
    v["items"][0]["name"] = json!("x".repeat(257));
    assert_error(&v, "items[0].name", ErrorCode::TooLong);
    let mut v = base();
    v["outlet_id"] = json!("kin/../01");
    assert_error(&v, "outlet_id", ErrorCode::InvalidValue);
    let mut v = base();
    v["merchant_nif"] = json!("A 1309");
    assert_error(&v, "merchant_nif", ErrorCode::InvalidValue);
}

#[test]
fn schema_field() {
    let mut v = base();
    v["schema"] = json!("bonopay/invoice/v1");
    parse_invoice(&v.to_string()).unwrap();
    v["schema"] = json!("bonopay/invoice/v9");
    assert_error(&v, "schema", ErrorCode::UnsupportedSchema);
}

#[test]
fn malformed_documents() {
    for text in ["", "{", "[]", "null", "{\"a\":}", "{} {}"] {
        let e = parse_invoice(text).unwrap_err();
        assert!(!e.errors().is_empty(), "{text:?}");
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let e = parse_invoice(&deep).unwrap_err();
    assert!(e.has(ErrorCode::TooDeep), "{e}");
    let e = parse_invoice("[]").unwrap_err();
    assert!(e.has_at("", ErrorCode::WrongType), "{e}");
}

#[test]
fn client_computed_groups_are_type_checked() {
    let mut v = base();
    v["tax_groups"] = json!([{"group": "B", "base": "2000.00", "tax": "320.00", "total": "2320.00"},
                             {"group": "B", "base": "1", "tax": "1", "total": "2"}]);
    assert_error(&v, "tax_groups[1].group", ErrorCode::DuplicateGroup);
    let mut v = base();
    v["totals"] = json!({"ttc": "2320.00", "total": "2321.00"});
    assert_error(&v, "totals.total", ErrorCode::ClientTotalMismatch);
}

#[test]
fn validate_applies_the_same_rules_to_rust_built_requests() {
    let mut req = parse_invoice(&base().to_string()).unwrap().into_request();
    req.cashier.name = String::new();
    req.items[0].tax_group = bonopay_core::TaxGroup::L;
    let e = bonopay_core::validate(&req).unwrap_err();
    // The only way to the sealing pipeline refuses it the same way.
    assert_eq!(
        bonopay_core::ValidInvoice::new(req.clone())
            .unwrap_err()
            .to_string(),
        e.to_string()
    );
    assert!(e.has_at("cashier.name", ErrorCode::Empty), "{e}");
    assert!(
        e.has_at("items[0].kind", ErrorCode::LevyGroupRequiresTaxItem),
        "{e}"
    );
}

/// `validate` (typed, for Rust-built requests) and the JSON parser must
/// agree on every rule, path and code.
#[test]
fn validate_and_parse_agree_on_paths_and_codes() {
    use bonopay_core::{Money, Quantity, TaxGroup};
    type Mutation = Box<dyn Fn(&mut bonopay_core::InvoiceRequest)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        ("empty cashier", Box::new(|r| r.cashier.name.clear())),
        (
            "control char",
            Box::new(|r| r.items[0].name = "a\u{7}b".into()),
        ),
        ("bad outlet", Box::new(|r| r.outlet_id = "a b".into())),
        ("bad nif", Box::new(|r| r.merchant_nif = "A-1".into())),
        (
            "long name",
            Box::new(|r| r.client.name = Some("é".repeat(300))),
        ),
        (
            "zero qty",
            Box::new(|r| r.items[0].quantity = Quantity::new(rust_decimal::Decimal::ZERO).unwrap()),
        ),
        (
            "negative price",
            Box::new(|r| r.items[0].unit_price = Money::parse("-1").unwrap()),
        ),
        (
            "levy group",
            Box::new(|r| r.items[0].tax_group = TaxGroup::N),
        ),
        ("no items", Box::new(|r| r.items.clear())),
        ("no payments", Box::new(|r| r.payments.clear())),
        (
            "client type",
            Box::new(|r| r.client.client_type = bonopay_core::ClientType::Pm),
        ),
        (
            "usd",
            Box::new(|r| r.currency = bonopay_core::Currency::Usd),
        ),
        (
            "credit",
            Box::new(|r| r.invoice_type = bonopay_core::InvoiceType::Fa),
        ),
        (
            "bad date",
            Box::new(|r| {
                r.currency = bonopay_core::Currency::Usd;
                r.exchange_rate = Some(bonopay_core::ExchangeRateInfo {
                    rate: bonopay_core::ExchangeRate::parse("2850").unwrap(),
                    date: "2026-13-01".into(),
                });
            }),
        ),
    ];
    for (name, m) in mutations {
        let mut req = parse_invoice(&base().to_string()).unwrap().into_request();
        m(&mut req);
        let key = |e: ValidationErrors| {
            let mut v: Vec<(String, String)> = e
                .errors()
                .iter()
                .map(|x| (x.path.clone(), x.code.to_string()))
                .collect();
            v.sort();
            v
        };
        let typed = bonopay_core::validate(&req).map_err(key);
        let parsed = parse_invoice(&req.canonical_string())
            .map(|_| ())
            .map_err(key);
        assert!(typed.is_err(), "{name}: validate accepted it");
        assert_eq!(typed, parsed, "{name}");
    }
}
