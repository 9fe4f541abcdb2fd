//! Request schemas that utoipa's derive macros cannot state: the invoice
//! body (built by `bonopay_core::schema` beside the parser), and bodies and
//! query parameter sets whose members constrain each other (`oneOf`).
//!
//! Each is written as JSON Schema (2020-12, OpenAPI 3.1's dialect) and
//! turned into utoipa's model by [`from_json`]; a test checks that nothing
//! is lost on the way, since utoipa's model keeps only the keywords it
//! knows. What no schema can say is listed in the README ("What the schema
//! cannot say").

use std::borrow::Cow;

use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::Schema;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use bonopay_core::schema::CONTROL_CLASS;

/// A JSON Schema node as utoipa's model. The node must have the shape
/// `bonopay_core::schema` documents (a typed node, an array, or a bare
/// composition); anything else is a programming error that the tests
/// catch, and is served as an unconstrained schema rather than not at all.
#[must_use]
pub fn from_json(v: Value) -> RefOr<Schema> {
    serde_json::from_value::<Schema>(v)
        .map(RefOr::T)
        .unwrap_or_else(|_| RefOr::T(Schema::default()))
}

/// Text of 1 to `max` characters, none of them a control character.
fn printable(min: usize, max: usize) -> Value {
    json!({
        "type": "string",
        "minLength": min,
        "maxLength": max,
        "pattern": format!("^[^{CONTROL_CLASS}]*$"),
    })
}

/// The body of `POST /v1/invoices`: [`bonopay_core::schema::invoice_request`].
#[derive(Debug)]
pub struct InvoiceRequestBody;

impl PartialSchema for InvoiceRequestBody {
    fn schema() -> RefOr<Schema> {
        from_json(bonopay_core::schema::invoice_request())
    }
}

impl ToSchema for InvoiceRequestBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("InvoiceRequest")
    }
}

/// The body of `POST /v1/keys`: which roles take `outlets` is part of the
/// schema.
#[derive(Debug)]
pub struct CreateKeyBody;

impl PartialSchema for CreateKeyBody {
    fn schema() -> RefOr<Schema> {
        from_json(create_key_json())
    }
}

fn create_key_json() -> Value {
    {
        let role = |names: &[&str]| json!({"type": "string", "enum": names});
        let outlets = json!({
            "type": "array",
            "minItems": 1,
            "items": {"type": "string"},
            "description": "Outlets of the merchant to bind the key to",
        });
        let mut nullable_outlets = outlets.clone();
        nullable_outlets["type"] = json!(["array", "null"]);
        let mut label = printable(0, 100);
        label["type"] = json!(["string", "null"]);
        json!({
            "description": "A key to create. `outlets` is required (non-empty) for cashier and \
                integration keys, optional for auditors (absent = every outlet), refused for owners",
            "allOf": [
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["role"],
                    "properties": {
                        "role": role(&["owner", "cashier", "auditor", "integration"]),
                        "outlets": nullable_outlets,
                        "label": label,
                    },
                },
                {"oneOf": [
                    {"type": "object", "properties": {"role": role(&["owner"]), "outlets": {"type": "null"}}},
                    {"type": "object", "required": ["outlets"], "properties": {"role": role(&["cashier", "integration"]), "outlets": outlets}},
                    {"type": "object", "properties": {"role": role(&["auditor"])}},
                ]},
            ],
        })
    }
}

impl ToSchema for CreateKeyBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CreateKeyRequest")
    }
}

/// The body of `POST /v1/invoices/{id}/deliveries`: the recipient's form
/// depends on the channel.
#[derive(Debug)]
pub struct DeliveryBody;

impl PartialSchema for DeliveryBody {
    fn schema() -> RefOr<Schema> {
        from_json(delivery_json())
    }
}

fn delivery_json() -> Value {
    {
        let channel = |name: &str| json!({"type": "string", "enum": [name]});
        json!({
            "description": "A receipt to send: by e-mail to an address, or through the messaging \
                channel to a phone number in E.164 form (`+243…`)",
            "allOf": [
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["channel", "to"],
                    "properties": {
                        "channel": {"type": "string", "enum": ["email", "whatsapp"]},
                        "to": {"type": "string", "minLength": 1, "maxLength": 320},
                        "format": {"type": ["string", "null"], "enum": ["a4", "80mm", null]},
                    },
                },
                {"oneOf": [
                    {"type": "object", "properties": {
                        "channel": channel("email"),
                        "to": {"type": "string", "pattern": r"^\s*[^\s@<>()\[\],;:]+@[^\s@<>()\[\],;:]+\s*$"},
                    }},
                    {"type": "object", "properties": {
                        "channel": channel("whatsapp"),
                        "to": {"type": "string", "pattern": r"^\s*\+[0-9]{8,15}\s*$"},
                    }},
                ]},
            ],
        })
    }
}

impl ToSchema for DeliveryBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DeliveryRequest")
    }
}

/// Characters `str::trim` removes that are not control characters (the
/// Unicode `White_Space` property less category Cc).
const BLANK_CLASS: &str = r"\u0020\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// The body of `POST /v1/invoices/{id}/dgi/resolve`: the DGI's five
/// elements as the portal shows them (`DgiElements::check`).
#[derive(Debug)]
pub struct DgiElementsBody;

impl PartialSchema for DgiElementsBody {
    fn schema() -> RefOr<Schema> {
        from_json(dgi_elements_json())
    }
}

fn dgi_elements_json() -> Value {
    {
        let element = json!({
            "type": "string",
            "maxLength": 512,
            "pattern": format!("^[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}{BLANK_CLASS}][^{CONTROL_CLASS}]*$"),
        });
        let names = ["codeDEFDGI", "counters", "nim", "dateTime", "qrCode"];
        let props: serde_json::Map<String, Value> = names
            .iter()
            .map(|n| ((*n).to_owned(), element.clone()))
            .collect();
        json!({
            "type": "object",
            "description": "The DGI's five elements as the portal shows them: each 1 to 512 \
                characters, not blank, no control character",
            "required": names,
            "properties": props,
        })
    }
}

impl ToSchema for DgiElementsBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DgiElements")
    }
}

/// The pattern of the decimal numbers from 0 to `max`, leading zeros
/// allowed (what `str::parse::<u64>` reads, less a `+` sign).
#[must_use]
pub fn at_most_pattern(max: u64) -> String {
    let digits: Vec<u32> = max
        .to_string()
        .bytes()
        .map(|b| u32::from(b - b'0'))
        .collect();
    let len = digits.len();
    let mut alts = Vec::new();
    if len > 1 {
        alts.push(format!("[0-9]{{1,{}}}", len - 1));
    }
    for (i, d) in digits.iter().enumerate() {
        if *d == 0 {
            continue;
        }
        let prefix: String = digits[..i].iter().map(u32::to_string).collect();
        let first = if i == 0 { 1 } else { 0 };
        if *d == first {
            continue;
        }
        let rest = len - i - 1;
        let class = if d - 1 == first {
            first.to_string()
        } else {
            format!("[{first}-{}]", d - 1)
        };
        alts.push(if rest == 0 {
            format!("{prefix}{class}")
        } else {
            format!("{prefix}{class}[0-9]{{{rest}}}")
        });
    }
    alts.push(max.to_string());
    format!("^0*(?:{})$", alts.join("|"))
}

/// A page cursor: the `next_cursor` a page returned, a decimal number.
#[must_use]
pub fn cursor_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(at_most_pattern(u64::MAX)))
        .description(Some(
            "The `next_cursor` of the previous page: a decimal number below 2^64",
        ))
        .build()
}

/// The fiscal number of a lookup: `FC/TC TYPE` (e.g. `3/5 FV`), `FC/TC`,
/// or the total counter TC alone.
#[must_use]
pub fn fiscal_number_pattern() -> String {
    let types: Vec<&str> = bonopay_core::InvoiceType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    format!(
        "^(?:[0-9]{{1,19}}/)?[0-9]{{1,19}}(?: (?:{}))?$",
        types.join("|")
    )
}

/// The lookup parameter sets as one object, serialized `form` and
/// exploded: `?auth_code=…`, `?dgi_code=…` or
/// `?outlet=…&fiscal_year=…&fiscal_number=…`, exactly one of them.
#[must_use]
pub fn lookup_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("lookup")
        .parameter_in(ParameterIn::Query)
        .required(utoipa::openapi::Required::True)
        .style(Some(ParameterStyle::Form))
        .explode(Some(true))
        .description(Some(
            "Exactly one of: `auth_code`; `dgi_code`; `outlet`, `fiscal_year` and \
             `fiscal_number` together. Each is its own query parameter (form style, exploded)",
        ))
        .schema(Some(from_json(lookup_json())))
        .build()
}

fn lookup_json() -> Value {
    let closed = |props: Value, required: &[&str]| {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": required,
            "properties": props,
        })
    };
    json!({"oneOf": [
        closed(json!({"auth_code": {
            "type": "string",
            "pattern": "^(?:[A-Z0-9]{24}|[A-Z0-9]{4}(?:-[A-Z0-9]{4}){5})$",
            "description": "Bono Pay authentication code (24 characters, or 6 dash-separated groups of 4)",
        }}), &["auth_code"]),
        closed(json!({"dgi_code": {
            "type": "string",
            "minLength": 1,
            "maxLength": 512,
            "description": "The Code DEF/DGI the DGI certified the invoice with, as printed",
        }}), &["dgi_code"]),
        closed(json!({
            "outlet": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$", "description": "Outlet id"},
            "fiscal_year": {"type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX, "description": "Fiscal year of the number"},
            "fiscal_number": {"type": "string", "pattern": fiscal_number_pattern(), "description": "`FC/TC TYPE` (e.g. `3/5 FV`) or the total counter TC alone (`5`)"},
        }), &["outlet", "fiscal_year", "fiscal_number"]),
    ]})
}

/// [`lookup_parameter`] for `params(...)`.
#[derive(Debug)]
pub struct LookupParams;

impl IntoParams for LookupParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![lookup_parameter()]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// utoipa keeps only the keywords its model knows: each schema must
    /// come out of it exactly as written.
    #[test]
    fn every_schema_survives_utoipas_model() {
        for (name, written) in [
            ("invoice", bonopay_core::schema::invoice_request()),
            ("keys", create_key_json()),
            ("delivery", delivery_json()),
            ("dgi", dgi_elements_json()),
            ("lookup", lookup_json()),
        ] {
            let served = serde_json::to_value(from_json(written.clone())).unwrap();
            assert_eq!(served, written, "{name} changed in utoipa's model");
        }
    }

    fn matches(pattern: &str, s: &str) -> bool {
        jsonschema::draft202012::new(&json!({"type": "string", "pattern": pattern}))
            .unwrap()
            .is_valid(&json!(s))
    }

    #[test]
    fn the_cursor_pattern_is_what_u64_parsing_accepts() {
        let p = at_most_pattern(u64::MAX);
        let mut probes: Vec<String> = [
            "0",
            "5",
            "0005",
            "18446744073709551615",
            "18446744073709551616",
            "18446744073709551625",
            "18446744073709551705",
            "19000000000000000000",
            "28446744073709551615",
            "99999999999999999999",
            "9999999999999999999",
            "000000000000000000000000000018446744073709551615",
            "",
            "+5",
            "-1",
            "1 ",
            "a",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for n in [u64::MAX, u64::MAX / 3, 1 << 63, 10_000_000_000_000_000_000] {
            for d in 0..30u64 {
                probes.push(n.saturating_sub(d).to_string());
                probes.push(n.saturating_add(d).to_string());
            }
        }
        for s in &probes {
            let parses = s.parse::<u64>().is_ok() && !s.starts_with('+');
            assert_eq!(matches(&p, s), parses, "{s} against {p}");
        }
        assert_eq!(at_most_pattern(100), "^0*(?:[0-9]{1,2}|100)$");
        assert_eq!(
            at_most_pattern(250),
            "^0*(?:[0-9]{1,2}|1[0-9]{2}|2[0-4][0-9]{1}|250)$"
        );
    }

    #[test]
    fn the_fiscal_number_pattern_is_the_lookups_reader() {
        let p = fiscal_number_pattern();
        for (s, ok) in [
            ("5", true),
            ("3/5 FV", true),
            ("3/5", true),
            ("3/5 EA", true),
            ("3/5 XX", false),
            ("3/ FV", false),
            ("x", false),
            (" 5", false),
            ("3/5  FV", false),
        ] {
            assert_eq!(matches(&p, s), ok, "{s}");
            assert_eq!(
                crate::server::invoices::total_counter(s).is_some(),
                ok,
                "{s}"
            );
        }
    }
}
