//! Property tests for the canonical form:
//! - parse → canonicalize → parse → canonicalize is a fixed point;
//! - the canonical form is its own RFC 8785 canonicalization;
//! - the same logical invoice gives the same bytes whatever the key order,
//!   whitespace and decimal spelling of the input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bonopay_core::{jcs, parse_invoice};
use proptest::prelude::*;

/// A tiny JSON tree whose rendering we control (key order, spacing).
#[derive(Debug, Clone)]
enum J {
    S(String),
    Raw(String),
    A(Vec<J>),
    O(Vec<(String, J)>),
}

fn render(j: &J, order_seed: u64, spaced: bool, out: &mut String) {
    let sp = if spaced { " " } else { "" };
    match j {
        J::S(s) => out.push_str(&serde_json::to_string(s).unwrap()),
        J::Raw(r) => out.push_str(r),
        J::A(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    out.push_str(sp);
                }
                render(it, order_seed, spaced, out);
            }
            out.push(']');
        }
        J::O(members) => {
            let mut m: Vec<&(String, J)> = members.iter().collect();
            // Deterministic shuffle driven by the seed.
            let mut s = order_seed | 1;
            for i in (1..m.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                m.swap(i, (s % (i as u64 + 1)) as usize);
            }
            out.push('{');
            out.push_str(if spaced { "\n  " } else { "" });
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    out.push_str(sp);
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push(':');
                out.push_str(sp);
                render(v, order_seed.rotate_left(7), spaced, out);
            }
            out.push('}');
        }
    }
}

/// A decimal value in hundredths (or thousandths) rendered in one of several
/// equivalent spellings.
fn spell(units: u64, scale: u32, style: u8) -> J {
    let div = 10u64.pow(scale);
    let (int, frac) = (units / div, units % div);
    let mut frac_s = format!("{frac:0width$}", width = scale as usize);
    match style % 4 {
        0 => J::S(format!("{int}.{frac_s}")),
        1 => {
            while frac_s.ends_with('0') {
                frac_s.pop();
            }
            if frac_s.is_empty() {
                J::S(int.to_string())
            } else {
                J::S(format!("{int}.{frac_s}"))
            }
        }
        2 => J::S(format!("00{int}.{frac_s}00")),
        _ if frac == 0 => J::Raw(int.to_string()),
        _ => J::S(format!("{int}.{frac_s}0")),
    }
}

#[derive(Debug, Clone)]
struct Logical {
    invoice_type: &'static str,
    mode: &'static str,
    usd: bool,
    client: u8,
    items: Vec<(u64, u64, &'static str, String)>,
    payment_cents: u64,
    comment: Option<String>,
}

fn logical() -> impl Strategy<Value = Logical> {
    let item = (
        1u64..5_000_000,
        1u64..50_000,
        prop::sample::select(vec!["A", "B", "C", "E", "F", "G", "H", "K", "M"]),
        "[a-zA-Zéèàçô ]{1,20}",
    );
    (
        prop::sample::select(vec!["FV", "FT", "FA", "EV", "ET", "EA"]),
        prop::sample::select(vec!["HT", "TTC"]),
        any::<bool>(),
        0u8..3,
        prop::collection::vec(item, 1..8),
        1u64..100_000_000,
        prop::option::of("[a-zA-Z0-9éàŋɔɛ :.-]{1,40}"),
    )
        .prop_map(
            |(invoice_type, mode, usd, client, items, payment_cents, comment)| Logical {
                invoice_type,
                mode,
                usd,
                client,
                items,
                payment_cents,
                comment,
            },
        )
}

fn build(l: &Logical, style: u8, dashed_ref: bool) -> J {
    let s = |x: &str| J::S(x.to_owned());
    let mut top = vec![
        ("merchant_nif".to_owned(), s("A1309334L")),
        ("outlet_id".to_owned(), s("kin-01")),
        ("pos_terminal_id".to_owned(), s("till-2")),
        (
            "cashier".to_owned(),
            J::O(vec![("id".into(), s("c1")), ("name".into(), s("Ngalula"))]),
        ),
        ("invoice_type".to_owned(), s(l.invoice_type)),
        ("price_mode".to_owned(), s(l.mode)),
    ];
    let client = match l.client {
        0 => J::O(vec![("type".into(), s("PP"))]),
        1 => J::O(vec![
            ("type".into(), s("PM")),
            ("name".into(), s("Société Ndeko")),
            ("nif".into(), s("B0012345X")),
        ]),
        _ => J::O(vec![
            ("type".into(), s("PC")),
            ("name".into(), s("Mama Wivine")),
            ("nif".into(), s("C7654321Y")),
            ("contact".into(), s("+243 81 000 0000")),
        ]),
    };
    top.push(("client".into(), client));
    let items = l
        .items
        .iter()
        .enumerate()
        .map(|(i, (price, qty, group, name))| {
            J::O(vec![
                ("code".into(), J::S(format!("ART-{i}"))),
                ("kind".into(), s(if i % 2 == 0 { "BIE" } else { "SER" })),
                ("name".into(), J::S(name.clone())),
                (
                    "unit_price".into(),
                    spell(*price, 2, style.wrapping_add(i as u8)),
                ),
                (
                    "quantity".into(),
                    spell(*qty, 3, style.wrapping_add(i as u8 + 1)),
                ),
                ("tax_group".into(), s(group)),
            ])
        })
        .collect();
    top.push(("items".into(), J::A(items)));
    top.push((
        "payments".into(),
        J::A(vec![J::O(vec![
            ("method".into(), s("ESPECES")),
            ("amount".into(), spell(l.payment_cents, 2, style)),
        ])]),
    ));
    if l.usd {
        top.push(("currency".into(), s("USD")));
        top.push((
            "exchange_rate".into(),
            J::O(vec![
                ("rate".into(), spell(2_850_500_000, 6, style)),
                ("date".into(), s("2026-11-27")),
            ]),
        ));
    } else if style.is_multiple_of(2) {
        // CDF is the default: stating it or not is the same invoice.
        top.push(("currency".into(), s("CDF")));
    }
    if ["FA", "EA"].contains(&l.invoice_type) {
        let r = if dashed_ref {
            "TEST-E64H-2J6I-LT3E-B5TH-DUMA"
        } else {
            "TESTE64H2J6ILT3EB5THDUMA"
        };
        top.push((
            "credit_note".into(),
            J::O(vec![
                ("reference".into(), s(r)),
                ("nature".into(), s("RAM")),
            ]),
        ));
    }
    if let Some(c) = &l.comment {
        top.push(("comments".into(), J::O(vec![("B".into(), J::S(c.clone()))])));
    }
    if style.is_multiple_of(3) {
        top.push(("schema".into(), s("bonopay/invoice/v1")));
    }
    J::O(top)
}

fn text(j: &J, seed: u64, spaced: bool) -> String {
    let mut out = String::new();
    render(j, seed, spaced, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonicalization_is_a_fixed_point(l in logical(), style in any::<u8>(), seed in any::<u64>(), spaced in any::<bool>()) {
        let input = text(&build(&l, style, seed % 2 == 0), seed, spaced);
        let first = parse_invoice(&input).map_err(|e| TestCaseError::fail(format!("{e}\n{input}")))?;
        let c1 = first.canonical_string();
        let second = parse_invoice(&c1).map_err(|e| TestCaseError::fail(format!("{e}\n{c1}")))?;
        prop_assert_eq!(&first, &second);
        prop_assert_eq!(&c1, &second.canonical_string());
        // The canonical form is already RFC 8785 canonical.
        prop_assert_eq!(&c1, &jcs(&c1).unwrap());
    }

    #[test]
    fn spelling_key_order_and_whitespace_do_not_change_the_bytes(
        l in logical(), s1 in any::<u8>(), s2 in any::<u8>(), seed1 in any::<u64>(), seed2 in any::<u64>()
    ) {
        let a = text(&build(&l, s1, true), seed1, true);
        let b = text(&build(&l, s2, false), seed2, false);
        let ca = parse_invoice(&a).unwrap().canonical_bytes();
        let cb = parse_invoice(&b).unwrap().canonical_bytes();
        prop_assert_eq!(ca, cb, "\n{}\n{}", a, b);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = parse_invoice(&s);
        let _ = jcs(&s);
    }
}

#[test]
fn different_invoices_give_different_bytes() {
    let l = Logical {
        invoice_type: "FV",
        mode: "TTC",
        usd: false,
        client: 0,
        items: vec![(1000, 1000, "B", "Pain".into())],
        payment_cents: 1000,
        comment: None,
    };
    let mut l2 = l.clone();
    l2.items[0].1 = 2000;
    let a = parse_invoice(&text(&build(&l, 0, false), 1, false)).unwrap();
    let b = parse_invoice(&text(&build(&l2, 0, false), 1, false)).unwrap();
    assert_ne!(a.canonical_bytes(), b.canonical_bytes());
    assert_ne!(a.canonical_sha256(), b.canonical_sha256());
}
