//! Property tests of the invariants in docs/format.md §3.3.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bonopay_core::parse_invoice;
use bonopay_tax::{FixedReferenceRates, NoReferenceRates, RateTable, TaxResult, Totals, compute};
use proptest::prelude::*;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

const GROUPS: &[&str] = &[
    "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N",
];

fn cents(c: u64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

fn invoice(mode: &str, items: &[(u64, u64, usize, Option<u64>)], usd: bool) -> Value {
    let items: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, (price, qty, g, spec))| {
            let group = GROUPS[*g];
            let mut it = json!({
                "code": format!("I{i}"),
                "kind": if group == "L" || group == "N" { "TAX" } else { "BIE" },
                "name": "article",
                "unit_price": cents(*price),
                "quantity": format!("{}.{:03}", qty / 1000, qty % 1000),
                "tax_group": group,
            });
            if let Some(s) = spec.filter(|_| group != "L" && group != "N") {
                it["specific_tax"] = json!({"amount": cents(s)});
            }
            it
        })
        .collect();
    let mut v = json!({
        "merchant_nif": "A1309334L", "outlet_id": "o1", "pos_terminal_id": "t1",
        "cashier": {"id": "c", "name": "n"}, "invoice_type": "FV", "price_mode": mode,
        "client": {"type": "PP"}, "items": items,
        "payments": [{"method": "ESPECES", "amount": "0.01"}]
    });
    if usd {
        v["currency"] = json!("USD");
        v["exchange_rate"] = json!({"rate": "2851.125", "date": "2026-11-27"});
    }
    v
}

/// Computes, then fixes the payment to the total and computes again, so the
/// result is the one a valid invoice gets.
fn run(mut v: Value) -> Option<TaxResult> {
    let table = RateTable::dgi_2025();
    let rates = FixedReferenceRates([(bonopay_core::Currency::Usd, Decimal::new(2850, 0))].into());
    let req = parse_invoice(&v.to_string()).ok()?;
    let ttc = match compute(&req, &table, &rates) {
        Ok(r) => r.totals.ttc,
        Err(e) => {
            // Only the payment may be wrong in a generated invoice, or a
            // specific tax larger than its base.
            assert!(
                e.errors().iter().all(|x| matches!(
                    x.code.as_str(),
                    "payments_mismatch" | "specific_tax_exceeds_base"
                )),
                "{e}"
            );
            if e.has(bonopay_core::ErrorCode::SpecificTaxExceedsBase) {
                return None;
            }
            let msg = e.errors()[0].message.clone();
            msg.rsplit(' ').next().unwrap().parse().unwrap()
        }
    };
    v["payments"] = json!([{"method": "ESPECES", "amount": ttc.to_string()}]);
    let req = parse_invoice(&v.to_string()).unwrap();
    Some(compute(&req, &table, &rates).unwrap())
}

fn check_sums(groups: &[bonopay_tax::GroupLine], t: &Totals) {
    let mut ttc = Decimal::ZERO;
    let mut vat = Decimal::ZERO;
    for g in groups {
        assert_eq!(g.base + g.tax, g.total, "{g:?}");
        assert!(g.base >= Decimal::ZERO && g.tax >= Decimal::ZERO, "{g:?}");
        assert!(g.total.scale() <= 2 && g.base.scale() <= 2 && g.tax.scale() <= 2);
        ttc += g.total;
        vat += g.tax;
    }
    assert_eq!(ttc, t.ttc);
    assert_eq!(vat, t.vat);
    assert_eq!(t.ht + t.vat + t.specific_tax + t.levies, t.ttc);
    assert!(t.ht >= Decimal::ZERO);
}

fn item_strategy() -> impl Strategy<Value = (u64, u64, usize, Option<u64>)> {
    (
        1u64..10_000_000,
        1u64..100_000,
        0usize..14,
        prop::option::weighted(0.2, 1u64..50_000),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn groups_sum_to_totals_and_each_group_balances(
        items in prop::collection::vec(item_strategy(), 1..12),
        ttc_mode in any::<bool>(),
        usd in any::<bool>(),
    ) {
        let v = invoice(if ttc_mode { "TTC" } else { "HT" }, &items, usd);
        if let Some(r) = run(v) {
            check_sums(&r.groups, &r.totals);
            let paid: Decimal = r.payments.iter().map(|p| p.amount).sum();
            prop_assert_eq!(paid, r.totals.ttc);
            match &r.cdf {
                Some(c) => {
                    check_sums(&c.groups, &c.totals);
                    prop_assert_eq!(r.dgi.total, c.totals.ttc);
                    prop_assert_eq!(r.dgi.vtotal, c.totals.vat);
                }
                None => {
                    prop_assert_eq!(r.dgi.total, r.totals.ttc);
                    prop_assert_eq!(r.dgi.vtotal, r.totals.vat);
                }
            }
        }
    }

    /// One unit per line; each TTC price is the HT price with VAT, rounded
    /// half-up. Per group of n lines: totals agree within 0.005 × n, bases
    /// within 0.005 × n + 0.01 (docs/format.md §3.3).
    #[test]
    fn ht_and_ttc_forms_of_the_same_goods_agree(
        prices in prop::collection::vec((1u64..5_000_000, prop::sample::select(vec![1usize, 2, 4, 5, 6, 0])), 1..10)
    ) {
        let table = RateTable::dgi_2025();
        let ht_items: Vec<_> = prices.iter().map(|(p, g)| (*p, 1000, *g, None)).collect();
        let ttc_items: Vec<_> = prices.iter().map(|(p, g)| {
            let rate = table.get(bonopay_core::TaxGroup::from_code(GROUPS[*g]).unwrap()).unwrap().rate_percent;
            let ht = Decimal::new(*p as i64, 2);
            let ttc = (ht * (Decimal::ONE + rate / Decimal::ONE_HUNDRED))
                .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
            ((ttc * Decimal::ONE_HUNDRED).try_into().unwrap(), 1000u64, *g, None)
        }).collect();
        let ht = run(invoice("HT", &ht_items, false)).unwrap();
        let ttc = run(invoice("TTC", &ttc_items, false)).unwrap();
        prop_assert_eq!(ht.groups.len(), ttc.groups.len());
        for (a, b) in ht.groups.iter().zip(&ttc.groups) {
            let n = Decimal::from(prices.iter().filter(|(_, g)| GROUPS[*g] == a.group.as_str()).count());
            let half_cent = Decimal::new(5, 3);
            prop_assert!((a.total - b.total).abs() <= half_cent * n, "{:?} {:?}", a, b);
            prop_assert!((a.base - b.base).abs() <= half_cent * n + Decimal::new(1, 2), "{:?} {:?}", a, b);
        }
    }
}

#[test]
fn usd_without_reference_rate_is_refused() {
    let v = invoice("TTC", &[(10000, 1000, 1, None)], true);
    let req = parse_invoice(&v.to_string()).unwrap();
    let e = compute(&req, &RateTable::dgi_2025(), &NoReferenceRates).unwrap_err();
    assert!(
        e.has_at(
            "exchange_rate.rate",
            bonopay_core::ErrorCode::ReferenceRateUnavailable
        ),
        "{e}"
    );
}

#[test]
fn a_replaced_rate_table_is_used_and_named() {
    let json = r#"{"version": "test-2027", "groups": [
        {"group": "B", "label": "Taxable 18%", "rate_percent": "18", "treatment": "vat"}]}"#;
    let table = RateTable::from_json(json).unwrap();
    let mut v = invoice("HT", &[(100000, 1000, 1, None)], false);
    v["payments"] = json!([{"method": "ESPECES", "amount": "1180.00"}]);
    let req = parse_invoice(&v.to_string()).unwrap();
    let r = compute(&req, &table, &NoReferenceRates).unwrap();
    assert_eq!(r.rate_table, "test-2027");
    assert_eq!(r.totals.vat, Decimal::new(18000, 2));
    // A group missing from the table is refused, not silently zero-rated.
    let v = invoice("HT", &[(100000, 1000, 2, None)], false);
    let req = parse_invoice(&v.to_string()).unwrap();
    let e = compute(&req, &table, &NoReferenceRates).unwrap_err();
    assert!(
        e.has_at(
            "items[0].tax_group",
            bonopay_core::ErrorCode::UnknownTaxRate
        ),
        "{e}"
    );
}

#[test]
fn bad_rate_tables_are_refused() {
    assert!(RateTable::from_json("{").is_err());
    let dup = r#"{"version":"x","groups":[{"group":"B","label":"","rate_percent":"16","treatment":"vat"},{"group":"B","label":"","rate_percent":"16","treatment":"vat"}]}"#;
    assert!(matches!(
        RateTable::from_json(dup),
        Err(bonopay_tax::RateTableError::DuplicateGroup(_))
    ));
    let neg = r#"{"version":"x","groups":[{"group":"B","label":"","rate_percent":"-1","treatment":"vat"}]}"#;
    assert!(matches!(
        RateTable::from_json(neg),
        Err(bonopay_tax::RateTableError::InvalidRate(..))
    ));
}

/// Money code must never see a float. The workspace lint
/// `clippy::float_arithmetic` forbids float arithmetic; this also refuses
/// float types in the sources of the money crates.
#[test]
fn no_float_types_in_money_code() {
    for dir in ["src", "../bonopay-core/src"] {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            // The JSON tree receives serde's f64 only to refuse it as
            // `inexact_number`; it never computes with it.
            if path.ends_with("json.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap();
                for bad in ["f32", "f64"] {
                    let hit = code.match_indices(bad).any(|(i, _)| {
                        let before = code[..i].chars().last();
                        let after = code[i + 3..].chars().next();
                        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    });
                    assert!(!hit, "{}:{}: {line}", path.display(), n + 1);
                }
            }
        }
    }
}

#[test]
fn serialized_results_are_already_canonical() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/tax.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut n = 0;
    for case in cases {
        let mut rates = std::collections::BTreeMap::new();
        rates.insert(bonopay_core::Currency::Usd, Decimal::new(2850, 0));
        let req = parse_invoice(&case["invoice"].to_string()).unwrap();
        if let Ok(r) = compute(&req, &RateTable::dgi_2025(), &FixedReferenceRates(rates)) {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(text, bonopay_core::jcs(&text).unwrap());
            n += 1;
        }
    }
    assert!(n > 10);
}
