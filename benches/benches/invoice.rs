//! Canonicalization and tax computation of a realistic 20-line invoice.
//!
//! Run with `cargo bench -p bonopay-benches --bench invoice`; add
//! `-- --quick` for a fast smoke run. Results go in `BENCHMARKS.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::str::FromStr;

use bonopay_core::{TaxGroup, ValidInvoice, parse_invoice};
use bonopay_tax::{NoReferenceRates, RateTable, check_invoice, compute};
use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::{Decimal, RoundingStrategy};

/// One line: code, kind, name, unit price (TTC), quantity, group, specific tax.
type Line = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

/// A supermarket-style basket in Kinshasa, prices in CDF, TTC: groups B
/// (16 %), C (8 %), A (exempt) and E (export, 0 %), one line with specific
/// tax, quantities with up to 3 places.
const LINES: [Line; 20] = [
    (
        "6001234500011",
        "BIE",
        "Savon de Marseille 400g",
        "3480.00",
        "2",
        "B",
        None,
    ),
    (
        "6001234500028",
        "BIE",
        "Bière Primus 72cl",
        "2900.00",
        "12",
        "B",
        Some("1740.00"),
    ),
    (
        "6001234500035",
        "BIE",
        "Farine de maïs (kg)",
        "1620.00",
        "5.250",
        "C",
        None,
    ),
    (
        "6001234500042",
        "BIE",
        "Riz parfumé 5kg",
        "21600.00",
        "1",
        "C",
        None,
    ),
    (
        "6001234500059",
        "BIE",
        "Manioc frais (kg)",
        "850.00",
        "3.5",
        "A",
        None,
    ),
    (
        "6001234500066",
        "BIE",
        "Médicament: paracétamol",
        "1500.00",
        "2",
        "A",
        None,
    ),
    (
        "6001234500073",
        "BIE",
        "Café du Kivu export 1kg",
        "18000.00",
        "4",
        "E",
        None,
    ),
    (
        "6001234500080",
        "BIE",
        "Huile de palme 1L",
        "5568.00",
        "3",
        "B",
        None,
    ),
    (
        "6001234500097",
        "BIE",
        "Sucre 1kg",
        "3240.00",
        "2",
        "C",
        None,
    ),
    (
        "6001234500103",
        "BIE",
        "Poisson chinchard (kg)",
        "7000.00",
        "1.755",
        "A",
        None,
    ),
    (
        "6001234500110",
        "SER",
        "Livraison Gombe",
        "5800.00",
        "1",
        "B",
        None,
    ),
    (
        "6001234500127",
        "BIE",
        "Lait en poudre 400g",
        "9180.00",
        "1",
        "C",
        None,
    ),
    (
        "6001234500134",
        "BIE",
        "Cacao export (kg)",
        "12500.00",
        "2.5",
        "E",
        None,
    ),
    (
        "6001234500141",
        "BIE",
        "Pain (baguette)",
        "500.00",
        "6",
        "A",
        None,
    ),
    (
        "6001234500158",
        "BIE",
        "Eau minérale 1.5L",
        "1160.00",
        "6",
        "B",
        None,
    ),
    (
        "6001234500165",
        "BIE",
        "Tomates (kg)",
        "2160.00",
        "0.750",
        "C",
        None,
    ),
    (
        "6001234500172",
        "BIE",
        "Haricots (kg)",
        "2500.00",
        "2",
        "A",
        None,
    ),
    (
        "6001234500189",
        "SER",
        "Emballage cadeau",
        "1160.00",
        "1",
        "B",
        None,
    ),
    (
        "6001234500196",
        "BIE",
        "Thé export 500g",
        "7500.00",
        "3",
        "E",
        None,
    ),
    (
        "6001234500202",
        "BIE",
        "Spaghetti 500g",
        "1080.00",
        "4",
        "C",
        None,
    ),
];

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// The TTC total, by hand: per group, the lines' exact sum rounded half-up
/// to 2 places (SFE rule), then summed.
fn ttc_by_hand() -> Decimal {
    let mut groups: BTreeMap<&str, Decimal> = BTreeMap::new();
    for (_, _, _, price, qty, group, _) in LINES {
        *groups.entry(group).or_default() += dec(price) * dec(qty);
    }
    groups
        .values()
        .map(|s| s.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero))
        .sum()
}

fn invoice_json() -> String {
    let mut items = String::new();
    for (i, (code, kind, name, price, qty, group, specific)) in LINES.iter().enumerate() {
        if i > 0 {
            items.push_str(",\n    ");
        }
        write!(
            items,
            r#"{{"code": "{code}", "kind": "{kind}", "name": "{name}", "unit_price": "{price}", "quantity": "{qty}", "tax_group": "{group}""#
        )
        .unwrap();
        if let Some(amount) = specific {
            write!(
                items,
                r#", "specific_tax": {{"amount": "{amount}", "rate": "5"}}"#
            )
            .unwrap();
        }
        items.push('}');
    }
    let ttc = ttc_by_hand();
    let mobile = dec("50000.00");
    let cash = ttc - mobile;
    format!(
        r#"{{
  "schema": "bonopay/invoice/v1",
  "merchant_nif": "A1309334L",
  "outlet_id": "kin-gombe-01",
  "pos_terminal_id": "till-3",
  "cashier": {{"id": "c-017", "name": "Mbuyi Kalala"}},
  "invoice_type": "FV",
  "price_mode": "TTC",
  "client": {{"type": "PM", "nif": "A0700012B", "name": "Hôtel du Fleuve SARL", "address": "Av. du Commerce 12, Gombe, Kinshasa"}},
  "items": [
    {items}
  ],
  "payments": [
    {{"method": "MOBILEMONEY", "amount": "{mobile}"}},
    {{"method": "ESPECES", "amount": "{cash}"}}
  ],
  "comments": {{"A": "Merci pour votre achat", "B": "Livraison le 12/06"}}
}}"#
    )
}

/// Builds the invoice and checks, once, that the library accepts it and
/// agrees with the total computed by hand.
fn setup() -> (String, ValidInvoice, RateTable) {
    let json = invoice_json();
    let table = RateTable::dgi_2025();
    let (req, result) = check_invoice(&json, &table, &NoReferenceRates)
        .unwrap_or_else(|e| panic!("the bench invoice is refused: {e}\n{json}"));
    assert_eq!(req.items.len(), 20);
    assert_eq!(result.totals.ttc, ttc_by_hand());
    let groups: Vec<TaxGroup> = result.groups.iter().map(|g| g.group).collect();
    assert_eq!(groups, [TaxGroup::A, TaxGroup::B, TaxGroup::C, TaxGroup::E]);
    assert!(result.totals.specific_tax > Decimal::ZERO);
    (json, req, table)
}

fn benches(c: &mut Criterion) {
    let (json, req, table) = setup();

    c.benchmark_group("canonicalize")
        .bench_function("20_lines", |b| {
            b.iter(|| parse_invoice(black_box(&json)).map(|r| r.canonical_bytes()))
        });

    c.benchmark_group("canonical_bytes")
        .bench_function("20_lines", |b| b.iter(|| black_box(&req).canonical_bytes()));

    c.benchmark_group("totals").bench_function("20_lines", |b| {
        b.iter(|| compute(black_box(&req), &table, &NoReferenceRates))
    });

    c.benchmark_group("check_invoice")
        .bench_function("20_lines", |b| {
            b.iter(|| check_invoice(black_box(&json), &table, &NoReferenceRates))
        });
}

criterion_group!(invoice, benches);
criterion_main!(invoice);
