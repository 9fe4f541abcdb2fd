//! The invoice request as a JSON Schema (2020-12, the dialect of OpenAPI
//! 3.1), built from the same constants, code lists and rules the parser
//! applies.
//!
//! The server publishes it in its OpenAPI document, so a client generated
//! from that document can check a request before sending it. It lives here,
//! beside [`crate::parse_invoice`], so that a rule changed in one place is
//! changed in both: lengths come from [`MAX_ID_LEN`] and friends, code
//! lists from each code's `ALL`, the decimal ranges from the newtypes'
//! `SCALE` and `max()`, and the cross-field rules from the same model
//! methods the validator calls ([`ClientType::required_fields`],
//! [`TaxGroup::is_levy`], [`InvoiceType::is_credit_note`],
//! [`Currency::needs_exchange_rate`]). A test (`tests/schema_drift.rs`)
//! runs hundreds of requests through both and fails on any disagreement.
//!
//! # What a schema cannot say
//! [`INEXPRESSIBLE`] lists the parser's rules that JSON Schema has no
//! keyword for; a request that the schema accepts can still be refused for
//! one of those (and, once parsed, for the tax engine's checks: payments
//! summing to the total, client-computed totals, the exchange-rate
//! tolerance).
//!
//! # Shape
//! Every node is one of: a typed node (`type` plus its keywords), an array
//! node (`type` `array` plus `items`), or a composition (`oneOf` / `allOf`
//! and nothing but a description). Constraints between members are `allOf`
//! of the object and a `oneOf` over its cases. This keeps the schema within
//! what OpenAPI tooling (utoipa's model among them) represents without
//! loss, and lets generators (Hypothesis, schemathesis) build examples
//! without filtering on look-arounds.

use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use crate::decimal::{ExchangeRate, Money, Percent, Quantity};
use crate::model::{
    ClientType, CommentLine, CreditNature, Currency, InvoiceType, ItemKind, PaymentMethod,
    PriceMode, TaxGroup,
};
use crate::parse::{
    ECHOED_RATE_SCALE, MAX_DECIMAL_TEXT_LEN, MAX_ID_LEN, MAX_ITEMS, MAX_NIF_LEN, MAX_PAYMENTS,
    MAX_TEXT_LEN, SCHEMA_V1,
};

/// The parser's rules that JSON Schema cannot express, as published in the
/// README: a schema-valid request may still be refused (422) for these.
pub const INEXPRESSIBLE: &[&str] = &[
    "duplicate member names in one JSON object (a schema sees the parsed object, with one of them)",
    "a JSON number with a fraction or exponent where an integer is allowed (`1.0`, `1e2`): the schema's `integer` accepts it, the parser asks for a decimal string",
    "an item's amount, unit price × quantity rounded to 2 places, must be above zero and at most the largest amount",
    "for an AO client, comment line A must contain the exemption reference",
    "a tax group may appear only once in `tax_groups`",
    "`totals.total` and `totals.ttc` (and `vtotal` and `vat`) must agree when both are given",
    "decimal strings: the parser accepts leading zeros as long as the text, less trailing fractional zeros, is at most 64 characters; the schema allows a fixed number of them (it is the stricter of the two)",
];

/// Control characters (Unicode category Cc, what `char::is_control`
/// matches), as an ECMA-262 character class body.
pub const CONTROL_CLASS: &str = r"\u0000-\u001F\u007F-\u009F";

/// The JSON Schema of an invoice request, `bonopay/invoice/v1`
/// (docs/format.md §1).
#[must_use]
pub fn invoice_request() -> Value {
    let mut base = object(
        &[
            ("schema", nullable(code_list(&[SCHEMA_V1]))),
            ("merchant_nif", nif()),
            ("outlet_id", identifier()),
            ("pos_terminal_id", identifier()),
            ("cashier", cashier()),
            ("invoice_type", codes(InvoiceType::ALL, InvoiceType::as_str)),
            ("price_mode", codes(PriceMode::ALL, PriceMode::as_str)),
            ("client", client()),
            ("items", array(item(), 1, MAX_ITEMS, "The lines, in order")),
            (
                "payments",
                array(payment(), 1, MAX_PAYMENTS, "Payments summing to the total"),
            ),
            ("currency", nullable(codes(Currency::ALL, Currency::as_str))),
            ("exchange_rate", nullable(exchange_rate())),
            ("comments", nullable(comments())),
            ("credit_note", credit_note()),
            ("tax_groups", nullable(client_tax_groups())),
            ("totals", nullable(client_totals())),
        ],
        &[
            "merchant_nif",
            "outlet_id",
            "pos_terminal_id",
            "cashier",
            "invoice_type",
            "price_mode",
            "client",
            "items",
            "payments",
        ],
    );
    describe(
        &mut base,
        "The invoice's members. Members that are absent and members that are null mean the same.",
    );
    json!({
        "description": "An invoice request, `bonopay/invoice/v1` (docs/format.md §1). \
            The server also refuses, with 422, what a schema cannot say: see the README \
            (\"What the schema cannot say\").",
        "allOf": [base, credit_note_rule(), exchange_rate_rule(), exemption_line_rule()],
    })
}

// ----- cross-field rules ----------------------------------------------------

/// FA and EA carry `credit_note`; no other type does.
fn credit_note_rule() -> Value {
    let (credit, other): (Vec<InvoiceType>, Vec<InvoiceType>) =
        InvoiceType::ALL.iter().partition(|t| t.is_credit_note());
    one_of(vec![
        case(
            &[
                ("invoice_type", codes(&credit, InvoiceType::as_str)),
                ("credit_note", type_only("object")),
            ],
            &["credit_note"],
        ),
        case(
            &[
                ("invoice_type", codes(&other, InvoiceType::as_str)),
                ("credit_note", type_only("null")),
            ],
            &[],
        ),
    ])
}

/// A foreign-currency invoice states its exchange rate; a CDF invoice (the
/// default) has none.
fn exchange_rate_rule() -> Value {
    let (foreign, base): (Vec<Currency>, Vec<Currency>) =
        Currency::ALL.iter().partition(|c| c.needs_exchange_rate());
    one_of(vec![
        case(
            &[
                ("currency", codes(&foreign, Currency::as_str)),
                ("exchange_rate", type_only("object")),
            ],
            &["currency", "exchange_rate"],
        ),
        case(
            &[
                ("currency", nullable(codes(&base, Currency::as_str))),
                ("exchange_rate", type_only("null")),
            ],
            &[],
        ),
    ])
}

/// An AO client's invoice has comment line A (which must carry the
/// exemption reference: that part is in [`INEXPRESSIBLE`]).
fn exemption_line_rule() -> Value {
    let (with_line, without): (Vec<ClientType>, Vec<ClientType>) = ClientType::ALL
        .iter()
        .partition(|t| t.requires_exemption_line());
    let mut comments = case(
        &[(CommentLine::A.as_str(), type_only("string"))],
        &[CommentLine::A.as_str()],
    );
    describe(
        &mut comments,
        "Comment line A carries the exemption reference",
    );
    one_of(vec![
        case(
            &[
                (
                    "client",
                    case(
                        &[("type", codes(&with_line, ClientType::as_str))],
                        &["type"],
                    ),
                ),
                ("comments", comments),
            ],
            &["comments"],
        ),
        case(
            &[(
                "client",
                case(&[("type", codes(&without, ClientType::as_str))], &[]),
            )],
            &[],
        ),
    ])
}

// ----- members --------------------------------------------------------------

fn cashier() -> Value {
    object(
        &[("id", identifier()), ("name", text(MAX_TEXT_LEN))],
        &["id", "name"],
    )
}

fn client() -> Value {
    let base = object(
        &[
            ("type", codes(ClientType::ALL, ClientType::as_str)),
            ("nif", nullable(nif())),
            ("name", nullable(text(MAX_TEXT_LEN))),
            ("contact", nullable(text(MAX_TEXT_LEN))),
            ("address", nullable(text(MAX_TEXT_LEN))),
            ("email", nullable(text(MAX_TEXT_LEN))),
            ("exemption_reference", nullable(text(MAX_TEXT_LEN))),
        ],
        &["type"],
    );
    // One case per client type: the fields it requires are present and
    // not null.
    let cases = ClientType::ALL
        .iter()
        .map(|t| {
            let required = t.required_fields();
            let mut props = vec![("type", codes(&[*t], ClientType::as_str))];
            props.extend(required.iter().map(|f| (*f, type_only("string"))));
            case(&props, required)
        })
        .collect();
    json!({
        "description": "The buyer; its type decides which fields are required \
            (PM, PC, PL: name and nif; AO: name and exemption_reference)",
        "allOf": [base, one_of(cases)],
    })
}

fn item() -> Value {
    let base = object(
        &[
            ("code", identifier()),
            ("kind", codes(ItemKind::ALL, ItemKind::as_str)),
            ("name", text(MAX_TEXT_LEN)),
            ("unit_price", positive_decimal::<Money>()),
            ("quantity", positive_decimal::<Quantity>()),
            ("tax_group", codes(TaxGroup::ALL, TaxGroup::as_str)),
            (
                "specific_tax",
                nullable(object(
                    &[
                        ("amount", positive_decimal::<Money>()),
                        ("rate", nullable(positive_decimal::<Percent>())),
                    ],
                    &["amount"],
                )),
            ),
            ("original_price", nullable(positive_decimal::<Money>())),
            ("price_modification", nullable(text(MAX_TEXT_LEN))),
        ],
        &[
            "code",
            "kind",
            "name",
            "unit_price",
            "quantity",
            "tax_group",
        ],
    );
    let (levy, other): (Vec<TaxGroup>, Vec<TaxGroup>) =
        TaxGroup::ALL.iter().partition(|g| g.is_levy());
    let (tax, goods): (Vec<ItemKind>, Vec<ItemKind>) =
        ItemKind::ALL.iter().partition(|k| **k == ItemKind::Tax);
    json!({
        "description": "One line. TAX items belong in the levy groups (L, N) and carry no \
            specific tax; other items in the other groups",
        "allOf": [
            base,
            one_of(vec![
                case(
                    &[
                        ("kind", codes(&tax, ItemKind::as_str)),
                        ("tax_group", codes(&levy, TaxGroup::as_str)),
                        ("specific_tax", type_only("null")),
                    ],
                    &[],
                ),
                case(
                    &[
                        ("kind", codes(&goods, ItemKind::as_str)),
                        ("tax_group", codes(&other, TaxGroup::as_str)),
                    ],
                    &[],
                ),
            ]),
        ],
    })
}

fn payment() -> Value {
    object(
        &[
            ("method", codes(PaymentMethod::ALL, PaymentMethod::as_str)),
            ("amount", positive_decimal::<Money>()),
        ],
        &["method", "amount"],
    )
}

fn exchange_rate() -> Value {
    object(
        &[
            ("rate", positive_decimal::<ExchangeRate>()),
            ("date", date()),
        ],
        &["rate", "date"],
    )
}

fn comments() -> Value {
    let props: Vec<(&str, Value)> = CommentLine::ALL
        .iter()
        .map(|l| (l.as_str(), nullable(text(MAX_TEXT_LEN))))
        .collect();
    object(&props, &[])
}

/// Either nature RRR with the literal reference `RRR`, or another nature
/// with the original's 24-character code (dashed in groups of 4 or not).
fn credit_note() -> Value {
    let (rrr, others): (Vec<CreditNature>, Vec<CreditNature>) = CreditNature::ALL
        .iter()
        .partition(|n| **n == CreditNature::Rrr);
    let code = json!({
        "type": "string",
        "pattern": "^(?:[A-Z0-9]{24}|[A-Z0-9]{4}(?:-[A-Z0-9]{4}){5})$",
        "description": "The original's 24-character authentication code, or the same in 6 groups of 4 joined by `-`",
    });
    one_of(vec![
        type_only("null"),
        object(
            &[
                ("reference", code_list(&["RRR"])),
                ("nature", codes(&rrr, CreditNature::as_str)),
            ],
            &["reference", "nature"],
        ),
        object(
            &[
                ("reference", code),
                ("nature", codes(&others, CreditNature::as_str)),
            ],
            &["reference", "nature"],
        ),
    ])
}

fn client_tax_groups() -> Value {
    array(
        object(
            &[
                ("group", codes(TaxGroup::ALL, TaxGroup::as_str)),
                ("base", decimal::<Money>()),
                ("tax", decimal::<Money>()),
                ("total", decimal::<Money>()),
                (
                    "rate",
                    nullable(decimal_of(ECHOED_RATE_SCALE, Decimal::ONE_HUNDRED, false)),
                ),
            ],
            &["group", "base", "tax", "total"],
        ),
        0,
        TaxGroup::ALL.len(),
        "Per-group lines the client computed; each is checked against the server's",
    )
}

fn client_totals() -> Value {
    let props: Vec<(&str, Value)> = ["ht", "vat", "specific_tax", "ttc", "total", "vtotal"]
        .into_iter()
        .map(|k| (k, nullable(decimal::<Money>())))
        .collect();
    object(&props, &[])
}

// ----- leaves ---------------------------------------------------------------

/// Free text: 1 to `max` characters, no control character.
fn text(max: usize) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": max,
        "pattern": format!("^[^{CONTROL_CLASS}]*$"),
    })
}

/// An identifier: it ends up in storage keys and URLs.
fn identifier() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_LEN,
        "pattern": "^[A-Za-z0-9._-]+$",
    })
}

fn nif() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NIF_LEN,
        "pattern": "^[A-Za-z0-9]+$",
    })
}

/// `YYYY-MM-DD`, a real Gregorian date from 2000 on (leap years included),
/// as [`crate::is_valid_date`] reads it.
fn date() -> Value {
    let year = "[2-9][0-9]{3}";
    let leap_year = "(?:[2-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[3579][26])00)";
    json!({
        "type": "string",
        "pattern": format!(
            "^(?:{year}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])\
             |(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)\
             |02-(?:0[1-9]|1[0-9]|2[0-8]))\
             |{leap_year}-02-29)$"
        ),
        "description": "A calendar date, `YYYY-MM-DD`, from 2000 on",
    })
}

/// A fixed-scale decimal newtype, for the schema.
trait Scaled {
    const SCALE: u32;
    fn max() -> Decimal;
}

macro_rules! scaled {
    ($($t:ty),+) => {$(
        impl Scaled for $t {
            const SCALE: u32 = <$t>::SCALE;
            fn max() -> Decimal {
                <$t>::max()
            }
        }
    )+};
}
scaled!(Money, Quantity, ExchangeRate, Percent);

fn decimal<T: Scaled>() -> Value {
    decimal_of(T::SCALE, T::max(), false)
}

fn positive_decimal<T: Scaled>() -> Value {
    decimal_of(T::SCALE, T::max(), true)
}

/// A decimal as the parser reads it: a decimal string (optional `-`,
/// digits, optional `.` and digits; no exponent, `+` or separators) with at
/// most `scale` significant places and a magnitude of at most `max`, or a
/// JSON integer in range. `positive`: above zero as well.
fn decimal_of(scale: u32, max: Decimal, positive: bool) -> Value {
    let whole = max.trunc();
    let hi = i64::try_from(whole).unwrap_or(i64::MAX);
    let lo = if positive { 1 } else { -hi };
    let sign = if positive { "above 0" } else { "in magnitude" };
    one_of(vec![
        json!({
            "type": "string",
            "pattern": decimal_pattern(scale, max, positive),
        }),
        json!({"type": "integer", "minimum": lo, "maximum": hi}),
    ])
    .with_description(format!(
        "A decimal string such as \"12.50\" (at most {scale} places), or a JSON integer; \
         {sign} at most {max}"
    ))
}

/// The largest magnitude of a decimal field, as a regular expression can
/// bound it: `Nines(k)` is `k` nines then `scale` nines after the point
/// (every number of at most `k` integer digits fits); `PowerOfTen(m)` is
/// exactly 10^m.
enum Bound {
    Nines(usize),
    PowerOfTen(usize),
}

fn bound(scale: u32, max: Decimal) -> Bound {
    let whole = max.trunc().to_string();
    let frac = (max - max.trunc()).normalize();
    let all_nines_frac = Decimal::try_new(1, scale).is_ok_and(|unit| frac == Decimal::ONE - unit);
    if frac.is_zero() && whole.starts_with('1') && whole[1..].bytes().all(|b| b == b'0') {
        Bound::PowerOfTen(whole.len() - 1)
    } else if whole.bytes().all(|b| b == b'9') && (scale == 0 || all_nines_frac) {
        Bound::Nines(whole.len())
    } else {
        // Any other bound: allow one integer digit fewer, which stays under
        // it (stricter than the parser, never looser).
        Bound::Nines(whole.len().saturating_sub(1).max(1))
    }
}

/// The decimal-string pattern of [`decimal_of`]. Leading zeros are bounded
/// so that every string it matches is at most [`MAX_DECIMAL_TEXT_LEN`]
/// characters once trailing fractional zeros are dropped.
pub(crate) fn decimal_pattern(scale: u32, max: Decimal, positive: bool) -> String {
    let s = scale as usize;
    let (int_digits, b) = match bound(scale, max) {
        Bound::Nines(k) => (k, Bound::Nines(k)),
        Bound::PowerOfTen(m) => (m + 1, Bound::PowerOfTen(m)),
    };
    let sign_len = usize::from(!positive);
    let zeros = MAX_DECIMAL_TEXT_LEN.saturating_sub(sign_len + int_digits + 1 + s);
    let z = format!("0{{0,{zeros}}}");
    let frac = if s == 0 {
        r"(?:\.0+)?".to_owned()
    } else {
        format!(r"(?:\.[0-9]{{1,{s}}}0*)?")
    };
    let mut alts: Vec<String> = Vec::new();
    if positive {
        let top_free_digits = match b {
            Bound::Nines(k) => k,
            Bound::PowerOfTen(m) => m,
        };
        if top_free_digits > 0 {
            alts.push(format!("{z}[1-9][0-9]{{0,{}}}{frac}", top_free_digits - 1));
        }
        if let Bound::PowerOfTen(m) = b {
            alts.push(format!(r"{z}1{}(?:\.0+)?", "0".repeat(m)));
        }
        if s > 0 {
            // Below 1: a non-zero digit within the first `scale` places.
            let nz: Vec<String> = (0..s)
                .map(|j| {
                    let rest = s - 1 - j;
                    let lead = "0".repeat(j);
                    if rest == 0 {
                        format!("{lead}[1-9]")
                    } else {
                        format!("{lead}[1-9][0-9]{{0,{rest}}}")
                    }
                })
                .collect();
            alts.push(format!(r"0{{1,{}}}\.(?:{})0*", zeros.max(1), nz.join("|")));
        }
        format!("^(?:{})$", alts.join("|"))
    } else {
        match b {
            Bound::Nines(k) => format!("^-?{z}[0-9]{{1,{k}}}{frac}$"),
            Bound::PowerOfTen(m) => {
                if m > 0 {
                    alts.push(format!("{z}[0-9]{{1,{m}}}{frac}"));
                } else {
                    alts.push(format!(r"{z}0(?:\.0+)?"));
                }
                alts.push(format!(r"{z}1{}(?:\.0+)?", "0".repeat(m)));
                format!("^-?(?:{})$", alts.join("|"))
            }
        }
    }
}

// ----- building blocks ------------------------------------------------------

trait Describe {
    fn with_description(self, text: String) -> Value;
}

impl Describe for Value {
    fn with_description(mut self, text: String) -> Value {
        describe(&mut self, &text);
        self
    }
}

fn describe(v: &mut Value, text: &str) {
    if let Value::Object(m) = v {
        m.insert("description".into(), Value::String(text.to_owned()));
    }
}

fn type_only(t: &str) -> Value {
    json!({ "type": t })
}

/// A closed object: the parser refuses members it does not know.
fn object(props: &[(&str, Value)], required: &[&str]) -> Value {
    let mut v = case(props, required);
    if let Value::Object(m) = &mut v {
        m.insert("additionalProperties".into(), Value::Bool(false));
    }
    v
}

/// An open object constraining some members: one case of a `oneOf`.
fn case(props: &[(&str, Value)], required: &[&str]) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), "object".into());
    if !required.is_empty() {
        m.insert("required".into(), json!(required));
    }
    let properties: Map<String, Value> = props
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    m.insert("properties".into(), Value::Object(properties));
    Value::Object(m)
}

fn array(items: Value, min: usize, max: usize, description: &str) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), "array".into());
    m.insert("description".into(), description.into());
    m.insert("items".into(), items);
    if min > 0 {
        m.insert("minItems".into(), min.into());
    }
    m.insert("maxItems".into(), max.into());
    Value::Object(m)
}

fn one_of(cases: Vec<Value>) -> Value {
    json!({ "oneOf": cases })
}

fn codes<T: Copy>(all: &[T], code: fn(T) -> &'static str) -> Value {
    let names: Vec<&str> = all.iter().map(|c| code(*c)).collect();
    code_list(&names)
}

fn code_list(names: &[&str]) -> Value {
    json!({ "type": "string", "enum": names })
}

/// Absent and `null` mean the same to the parser, so an optional member
/// may be `null`.
fn nullable(v: Value) -> Value {
    let Value::Object(mut m) = v else {
        return v;
    };
    if let Some(Value::Array(cases)) = m.get_mut("oneOf") {
        if !cases.contains(&type_only("null")) {
            cases.insert(0, type_only("null"));
        }
        return Value::Object(m);
    }
    if m.contains_key("allOf") {
        return one_of(vec![type_only("null"), Value::Object(m)]);
    }
    if let Some(Value::String(t)) = m.get("type").cloned() {
        m.insert("type".into(), json!([t, "null"]));
    }
    if let Some(Value::Array(values)) = m.get_mut("enum") {
        values.push(Value::Null);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn bounds_are_read_off_the_newtypes() {
        assert!(matches!(
            bound(Money::SCALE, Money::max()),
            Bound::Nines(15)
        ));
        assert!(matches!(
            bound(Quantity::SCALE, Quantity::max()),
            Bound::Nines(9)
        ));
        assert!(matches!(
            bound(ExchangeRate::SCALE, ExchangeRate::max()),
            Bound::Nines(9)
        ));
        assert!(matches!(
            bound(Percent::SCALE, Percent::max()),
            Bound::PowerOfTen(2)
        ));
        assert!(matches!(
            bound(ECHOED_RATE_SCALE, Decimal::ONE_HUNDRED),
            Bound::PowerOfTen(2)
        ));
    }

    #[test]
    fn the_schema_is_json_schema_shaped() {
        let s = invoice_request();
        assert!(s["allOf"][0]["required"].as_array().unwrap().len() > 5);
        assert_eq!(s["allOf"][0]["additionalProperties"], false);
    }
}
