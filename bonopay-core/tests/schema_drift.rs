//! The published JSON Schema and the parser must agree: every request one
//! accepts the other accepts, apart from the rules listed in
//! `schema::INEXPRESSIBLE`. Several valid invoices are mutated member by
//! member (removed, nulled, replaced by each probe value, unknown members
//! added) and every result goes through both; any disagreement fails with
//! the request and the parser's answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bonopay_core::{ErrorCode, ValidationErrors, parse_invoice};
use proptest::prelude::*;
use serde_json::{Value, json};

fn validator() -> &'static jsonschema::Validator {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        jsonschema::draft202012::new(&bonopay_core::schema::invoice_request())
            .expect("the invoice schema is a valid JSON Schema")
    })
}

/// Valid invoices that between them use every member.
fn bases() -> Vec<Value> {
    let full = json!({
        "schema": "bonopay/invoice/v1",
        "merchant_nif": "A1309334L",
        "outlet_id": "kin-gombe-01",
        "pos_terminal_id": "till-1",
        "cashier": {"id": "c-07", "name": "Mbuyi Kalala"},
        "invoice_type": "FV",
        "price_mode": "TTC",
        "client": {"type": "PM", "nif": "B2200334K", "name": "Société X", "contact": "+243810000000",
                   "address": "Av. du Commerce 1", "email": "a@b.cd"},
        "items": [
            {"code": "SAV-1", "kind": "BIE", "name": "Savon", "unit_price": "1000", "quantity": 1,
             "tax_group": "B", "specific_tax": {"amount": "10.00", "rate": "1.5"},
             "original_price": "1100.00", "price_modification": "remise"},
            {"code": "LEVY", "kind": "TAX", "name": "Taxe", "unit_price": "5", "quantity": "1", "tax_group": "L"}
        ],
        "payments": [{"method": "ESPECES", "amount": "1015.00"}],
        "currency": "CDF",
        "comments": {"A": "merci", "H": "à bientôt"},
        "tax_groups": [{"group": "B", "base": "862.07", "tax": "137.93", "total": "1000.00", "rate": "16"}],
        "totals": {"ht": "862.07", "vat": "137.93", "specific_tax": "10.00", "ttc": "1015.00"}
    });
    let mut credit = full.clone();
    credit["invoice_type"] = json!("FA");
    credit["credit_note"] = json!({"reference": "ABCD-1234-EFGH-5678-IJKL-9012", "nature": "COR"});
    let mut rrr = full.clone();
    rrr["invoice_type"] = json!("EA");
    rrr["credit_note"] = json!({"reference": "RRR", "nature": "RRR"});
    let mut usd = full.clone();
    usd["currency"] = json!("USD");
    usd["exchange_rate"] = json!({"rate": "2850.5", "date": "2024-02-29"});
    let mut ao = full.clone();
    ao["client"] = json!({"type": "AO", "name": "Ambassade", "exemption_reference": "EXO-42"});
    ao["comments"] = json!({"A": "Réf. Exo. : EXO-42"});
    let minimal = json!({
        "merchant_nif": "A1309334L", "outlet_id": "o", "pos_terminal_id": "t",
        "cashier": {"id": "c", "name": "n"}, "invoice_type": "FT", "price_mode": "HT",
        "client": {"type": "PP"},
        "items": [{"code": "c", "kind": "SER", "name": "n", "unit_price": 1000, "quantity": 1, "tax_group": "A"}],
        "payments": [{"method": "CREDIT", "amount": 1}]
    });
    vec![full, credit, rrr, usd, ao, minimal]
}

/// Values each member is replaced by, one at a time.
fn probes() -> Vec<Value> {
    let mut p: Vec<Value> = vec![
        Value::Null,
        json!(true),
        json!([]),
        json!([1]),
        json!({}),
        json!({"a": 1}),
        json!(1.5),
        json!(-0.5),
    ];
    for s in [
        "",
        " ",
        "x",
        "X1",
        "a.b_c-d",
        "a b",
        "a/b",
        "é",
        "A1309334L",
        "a\u{0}b",
        "a\u{1f}b",
        "a\u{7f}b",
        "a\u{9f}b",
        "a\u{a0}b",
        "tab\t",
        "emoji 🙂",
        "bonopay/invoice/v1",
        "bonopay/invoice/v2",
        "RRR",
        "rrr",
        "ABCD1234EFGH5678IJKL9012",
        "ABCD-1234-EFGH-5678-IJKL-9012",
        "abcd1234efgh5678ijkl9012",
        "ABCD1234EFGH5678IJKL901",
        "ABCD-1234-EFGH-5678-IJKL9012",
        "2024-02-29",
        "2023-02-29",
        "2000-02-29",
        "2100-02-29",
        "2400-02-29",
        "1999-12-31",
        "2024-13-01",
        "2024-04-31",
        "2024-04-30",
        "2024-4-1",
        "2024-01-01T00:00:00Z",
        "0",
        "1",
        "-1",
        "0.5",
        "0.01",
        "0.001",
        "0.005",
        "1.005",
        "2.50",
        "2.500",
        "1.",
        ".5",
        "+1",
        "1e3",
        "1,5",
        "00012.5",
        "-0",
        "-0.00",
        "0.00",
        "100",
        "100.00",
        "100.01",
        "99.99",
        "-100",
        "-100.0001",
        "100.0000",
        "99.9999",
        "99.99999",
        "999999999",
        "999999999.999",
        "999999999.9999",
        "1000000000",
        "999999999999999.99",
        "999999999999999.999",
        "1000000000000000",
        "999999999.999999",
        "0.000001",
        "0.0000001",
        "0.0000010",
        "0000000000000000000000000000001.5",
    ] {
        p.push(json!(s));
    }
    for n in [
        0i64,
        1,
        -1,
        2,
        100,
        101,
        -100,
        -101,
        999_999_999,
        1_000_000_000,
        999_999_999_999_999,
        1_000_000_000_000_000,
        -999_999_999_999_999,
        i64::MAX,
        i64::MIN,
    ] {
        p.push(json!(n));
    }
    p.push(json!(u64::MAX));
    for len in [31usize, 32, 33, 63, 64, 65, 255, 256, 257] {
        p.push(json!("x".repeat(len)));
        p.push(json!("é".repeat(len)));
    }
    // Every code the model knows, and near misses.
    for code in [
        "FV",
        "FT",
        "FA",
        "EV",
        "ET",
        "EA",
        "HT",
        "TTC",
        "PP",
        "PM",
        "PC",
        "PL",
        "AO",
        "BIE",
        "SER",
        "TAX",
        "A",
        "B",
        "C",
        "D",
        "E",
        "F",
        "G",
        "H",
        "I",
        "J",
        "K",
        "L",
        "M",
        "N",
        "O",
        "ESPECES",
        "VIREMENT",
        "CARTEBANCAIRE",
        "MOBILEMONEY",
        "CHEQUES",
        "CREDIT",
        "AUTRE",
        "COR",
        "RAN",
        "RAM",
        "CDF",
        "USD",
        "EUR",
        "fv",
        "b",
    ] {
        p.push(json!(code));
    }
    p
}

/// Every member of `v`, as a JSON pointer, objects and arrays included.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn objects(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            out.push(at.clone());
            for (k, child) in m {
                objects(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                objects(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match v.pointer_mut(parent).unwrap() {
        Value::Object(m) => {
            m.remove(key);
        }
        Value::Array(a) => {
            a.remove(key.parse::<usize>().unwrap());
        }
        _ => unreachable!(),
    }
}

/// Refusals for rules the schema is documented not to express
/// (`schema::INEXPRESSIBLE`): the only way the parser may refuse what the
/// schema accepts.
fn only_inexpressible(v: &Value, e: &ValidationErrors) -> bool {
    e.errors().iter().all(|e| match e.code {
        // An item's amount (unit price × quantity) out of range.
        ErrorCode::NotPositive | ErrorCode::OutOfRange => {
            e.path.starts_with("items[") && e.path.ends_with(']')
        }
        // Comment line A is there but does not carry the reference.
        ErrorCode::AoExemptionReferenceMissing => v["comments"]["A"].is_string(),
        ErrorCode::DuplicateGroup | ErrorCode::ClientTotalMismatch => true,
        _ => false,
    })
}

fn disagreement(schema: &jsonschema::Validator, v: &Value) -> Option<String> {
    let by_schema = schema.is_valid(v);
    match (by_schema, parse_invoice(&v.to_string())) {
        (true, Ok(_)) | (false, Err(_)) => None,
        (true, Err(e)) if only_inexpressible(v, &e) => None,
        (true, Err(e)) => Some(format!("schema accepts, parser refuses ({e}):\n{v}")),
        (false, Ok(_)) => {
            let why: Vec<String> = schema
                .iter_errors(v)
                .take(3)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            Some(format!(
                "parser accepts, schema refuses ({}):\n{v}",
                why.join("; ")
            ))
        }
    }
}

fn check_all(cases: impl IntoIterator<Item = Value>) -> usize {
    let schema = validator();
    let mut n = 0;
    let mut bad = Vec::new();
    for v in cases {
        n += 1;
        if let Some(d) = disagreement(schema, &v) {
            bad.push(d);
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {n} requests judged differently by the schema and the parser; first ones:\n{}",
        bad.len(),
        bad.iter().take(8).cloned().collect::<Vec<_>>().join("\n\n")
    );
    n
}

#[test]
fn the_bases_are_valid_for_both() {
    let schema = validator();
    for b in bases() {
        parse_invoice(&b.to_string()).unwrap();
        assert!(schema.is_valid(&b), "{b}");
    }
}

#[test]
fn every_member_removed_nulled_or_replaced_is_judged_alike() {
    let probes = probes();
    let mut cases = Vec::new();
    for base in bases() {
        let mut ptrs = Vec::new();
        pointers(&base, String::new(), &mut ptrs);
        for p in &ptrs {
            let mut removed = base.clone();
            remove(&mut removed, p);
            cases.push(removed);
            for probe in &probes {
                let mut v = base.clone();
                *v.pointer_mut(p).unwrap() = probe.clone();
                cases.push(v);
            }
        }
        let mut objs = Vec::new();
        objects(&base, String::new(), &mut objs);
        for o in &objs {
            for key in ["zzz", "hash", "fiscal_number", "I"] {
                let mut v = base.clone();
                v.pointer_mut(o).unwrap()[key] = json!("x");
                cases.push(v);
            }
        }
    }
    let n = check_all(cases);
    assert!(n > 10_000, "only {n} cases");
}

#[test]
fn the_cross_field_rules_are_judged_alike() {
    let mut cases = Vec::new();
    for base in bases() {
        for t in ["FV", "FT", "FA", "EV", "ET", "EA"] {
            for cn in [
                Value::Null,
                json!({"reference": "RRR", "nature": "RRR"}),
                json!({"reference": "RRR", "nature": "COR"}),
                json!({"reference": "ABCD1234EFGH5678IJKL9012", "nature": "RRR"}),
                json!({"reference": "ABCD1234EFGH5678IJKL9012", "nature": "RAM"}),
            ] {
                let mut v = base.clone();
                v["invoice_type"] = json!(t);
                v["credit_note"] = cn.clone();
                cases.push(v.clone());
                v.as_object_mut().unwrap().remove("credit_note");
                cases.push(v);
            }
        }
        for cur in [None, Some("CDF"), Some("USD"), Some("EUR")] {
            for fx in [
                None,
                Some(json!({"rate": "2850", "date": "2024-01-31"})),
                Some(Value::Null),
            ] {
                let mut v = base.clone();
                let m = v.as_object_mut().unwrap();
                m.remove("currency");
                m.remove("exchange_rate");
                if let Some(c) = cur {
                    m.insert("currency".into(), json!(c));
                }
                if let Some(fx) = &fx {
                    m.insert("exchange_rate".into(), fx.clone());
                }
                cases.push(v);
            }
        }
        for ty in ["PP", "PM", "PC", "PL", "AO", "XX"] {
            for fields in [
                vec![],
                vec!["name"],
                vec!["nif"],
                vec!["name", "nif"],
                vec!["name", "exemption_reference"],
                vec!["name", "nif", "exemption_reference"],
            ] {
                for line_a in [None, Some("Réf. Exo. : EXO-42"), Some("autre")] {
                    let mut v = base.clone();
                    let mut c = json!({"type": ty});
                    for f in &fields {
                        c[*f] = match *f {
                            "nif" => json!("B2200334K"),
                            "exemption_reference" => json!("EXO-42"),
                            _ => json!("Nom"),
                        };
                    }
                    v["client"] = c;
                    match line_a {
                        Some(a) => v["comments"] = json!({"A": a}),
                        None => {
                            v.as_object_mut().unwrap().remove("comments");
                        }
                    }
                    cases.push(v);
                }
            }
        }
        for kind in ["BIE", "SER", "TAX"] {
            for group in [
                "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N",
            ] {
                for st in [None, Some(json!({"amount": "1"})), Some(Value::Null)] {
                    let mut v = base.clone();
                    let mut it = json!({"code": "x", "kind": kind, "name": "n",
                        "unit_price": "10", "quantity": "1", "tax_group": group});
                    if let Some(st) = &st {
                        it["specific_tax"] = st.clone();
                    }
                    v["items"] = json!([it]);
                    cases.push(v);
                }
            }
        }
    }
    check_all(cases);
}

#[test]
fn every_code_the_parser_accepts_is_in_the_schema_and_no_other() {
    use bonopay_core::{
        ClientType, CreditNature, Currency, InvoiceType, ItemKind, PaymentMethod, PriceMode,
        TaxGroup,
    };
    let s = bonopay_core::schema::invoice_request();
    let base = &s["allOf"][0]["properties"];
    let item = &base["items"]["items"]["allOf"][0]["properties"];
    let names = |v: &Value| -> Vec<String> {
        v["enum"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect()
    };
    let all = |codes: &[&str]| codes.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    let of = |v: Vec<&'static str>| all(&v);
    assert_eq!(
        names(&base["invoice_type"]),
        of(InvoiceType::ALL.iter().map(|c| c.as_str()).collect())
    );
    assert_eq!(
        names(&base["price_mode"]),
        of(PriceMode::ALL.iter().map(|c| c.as_str()).collect())
    );
    assert_eq!(
        names(&base["currency"]),
        of(Currency::ALL.iter().map(|c| c.as_str()).collect())
    );
    assert_eq!(
        names(&base["client"]["allOf"][0]["properties"]["type"]),
        of(ClientType::ALL.iter().map(|c| c.as_str()).collect())
    );
    assert_eq!(
        names(&item["kind"]),
        of(ItemKind::ALL.iter().map(|c| c.as_str()).collect())
    );
    assert_eq!(
        names(&item["tax_group"]),
        of(TaxGroup::ALL.iter().map(|c| c.as_str()).collect())
    );
    assert_eq!(
        names(&base["payments"]["items"]["properties"]["method"]),
        of(PaymentMethod::ALL.iter().map(|c| c.as_str()).collect())
    );
    let natures: Vec<String> = base["credit_note"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "object")
        .flat_map(|c| names(&c["properties"]["nature"]))
        .collect();
    let mut natures = natures;
    natures.sort();
    let mut expected = of(CreditNature::ALL.iter().map(|c| c.as_str()).collect());
    expected.sort();
    assert_eq!(natures, expected);
}

/// Decimal strings of every shape: sign, leading zeros, integer digits,
/// point, places, trailing zeros.
fn decimal_text() -> impl Strategy<Value = String> {
    (
        prop::option::of(Just("-")),
        0usize..4,
        prop::collection::vec(0u8..10, 0..18),
        prop::option::of((prop::collection::vec(0u8..10, 0..8), 0usize..3)),
    )
        .prop_map(|(sign, zeros, int, frac)| {
            let digits = |d: &[u8]| d.iter().map(|d| char::from(b'0' + d)).collect::<String>();
            let mut s = format!(
                "{}{}{}",
                sign.unwrap_or(""),
                "0".repeat(zeros),
                digits(&int)
            );
            if let Some((f, trailing)) = frac {
                s.push('.');
                s.push_str(&digits(&f));
                s.push_str(&"0".repeat(trailing));
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn decimal_members_are_judged_alike(text in decimal_text(), int in any::<i64>(), small in -2000i64..2000) {
        let schema = validator();
        let usd = bases()[3].clone();
        // unit_price × quantity stays within the line-amount rule: the
        // other factor is 1000 for a quantity, 1 for a price.
        for (pointer, other) in [
            ("/items/0/unit_price", Some(("/items/0/quantity", json!(1)))),
            ("/items/0/quantity", Some(("/items/0/unit_price", json!(1000)))),
            ("/items/0/specific_tax/rate", None),
            ("/payments/0/amount", None),
            ("/exchange_rate/rate", None),
            ("/tax_groups/0/rate", None),
            ("/totals/ht", None),
        ] {
            for value in [json!(text), json!(int), json!(small)] {
                let mut v = usd.clone();
                if let Some((p, x)) = &other {
                    *v.pointer_mut(p).unwrap() = x.clone();
                }
                *v.pointer_mut(pointer).unwrap() = value;
                let d = disagreement(schema, &v);
                prop_assert!(d.is_none(), "{}", d.unwrap_or_default());
            }
        }
    }
}
