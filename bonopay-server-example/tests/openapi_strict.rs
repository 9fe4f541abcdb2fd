//! The request schemas of the served `/openapi.json` are as strict as the
//! server: each request the hostile run of issue 15 found the document
//! allowing and the server refusing (`{}` as an invoice, a cursor of any
//! form, a partial lookup, `events: []`, an empty `to`, `pos_terminal_id`
//! or `cashier_id`) is now refused by the schema, the server refuses it as
//! before, and what the schema accepts the server accepts. Run against the
//! real binary, with the document it serves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use reqwest::blocking::Client;
use serde_json::{Value, json};

/// A validator for the schema at `pointer` in the served document, its
/// `$ref`s resolved against the document's components.
fn validator(doc: &Value, pointer: &str) -> jsonschema::Validator {
    let schema = doc
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer}"));
    let mut root = schema.clone();
    root.as_object_mut()
        .unwrap_or_else(|| panic!("{pointer}: {schema}"))
        .insert("components".into(), doc["components"].clone());
    jsonschema::draft202012::new(&root).unwrap()
}

fn body(path: &str, method: &str) -> String {
    format!(
        "/paths/{}/{method}/requestBody/content/application~1json/schema",
        path.replace('~', "~0").replace('/', "~1")
    )
}

/// The schema of query parameter `name` of an operation.
fn query_param(doc: &Value, path: &str, method: &str, name: &str) -> String {
    let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
    let i = params
        .iter()
        .position(|p| p["name"] == name && p["in"] == "query")
        .unwrap_or_else(|| panic!("{path} has no query parameter {name}"));
    format!(
        "/paths/{}/{method}/parameters/{i}/schema",
        path.replace('~', "~0").replace('/', "~1")
    )
}

struct Api {
    http: Client,
    base: String,
    key: String,
    sent: std::cell::Cell<u32>,
}

impl Api {
    /// One request with the owner key (and a fresh idempotency key).
    fn send(&self, method: reqwest::Method, uri: &str, body: Option<&Value>) -> (u16, Value) {
        self.sent.set(self.sent.get() + 1);
        let mut req = self
            .http
            .request(method, format!("{}{uri}", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", format!("strict-{}", self.sent.get()));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }
}

#[test]
fn the_served_schemas_refuse_what_the_server_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api {
        http: Client::new(),
        base: server.base.clone(),
        key: server.owner(NIF_A),
        sent: std::cell::Cell::new(0),
    };
    let doc: Value = api
        .http
        .get(format!("{}/openapi.json", server.base))
        .send()
        .unwrap()
        .json()
        .unwrap();

    // The invoice: `{}` is not one, the example is.
    let invoice = validator(&doc, &body("/v1/invoices", "post"));
    assert!(!invoice.is_valid(&json!({})), "{{}} is not an invoice");
    assert!(invoice.is_valid(&example()));
    let mut no_items = example();
    no_items["items"] = json!([]);
    let mut credit_without_reference = example();
    credit_without_reference["invoice_type"] = json!("FA");
    for bad in [json!({}), no_items, credit_without_reference] {
        assert!(!invoice.is_valid(&bad), "{bad}");
        let (status, _) = api.send(reqwest::Method::POST, "/v1/invoices", Some(&bad));
        assert_eq!(status, 422, "{bad}");
    }
    let (status, sealed) = api.send(reqwest::Method::POST, "/v1/invoices", Some(&example()));
    assert_eq!(status, 201, "{sealed}");

    // The cursor has a pattern, and the server reads exactly it.
    let cursor = validator(
        &doc,
        &query_param(&doc, "/v1/outlets/{outlet}/invoices", "get", "cursor"),
    );
    for (c, ok) in [
        ("0", true),
        ("17", true),
        ("+1", false),
        ("x", false),
        ("", false),
        ("18446744073709551616", false),
    ] {
        assert_eq!(cursor.is_valid(&json!(c)), ok, "cursor {c:?}");
        let (status, _) = api.send(
            reqwest::Method::GET,
            &format!(
                "/v1/outlets/{OUTLET_A}/invoices?cursor={}",
                c.replace('+', "%2B")
            ),
            None,
        );
        assert_eq!(status == 200, ok, "cursor {c:?}: {status}");
    }

    // A lookup takes exactly one complete set of parameters.
    let lookup = validator(
        &doc,
        &query_param(&doc, "/v1/invoices/lookup", "get", "lookup"),
    );
    let code = sealed["seal"]["authentication_code"].as_str().unwrap();
    for (q, ok) in [
        (json!({"auth_code": code}), true),
        (json!({"dgi_code": "X"}), true),
        (
            json!({"outlet": OUTLET_A, "fiscal_year": 2026, "fiscal_number": "1"}),
            true,
        ),
        (json!({"outlet": OUTLET_A}), false),
        (json!({"outlet": OUTLET_A, "fiscal_year": 2026}), false),
        (json!({"auth_code": code, "dgi_code": "X"}), false),
        (json!({"auth_code": code, "outlet": OUTLET_A}), false),
        (json!({"auth_code": code, "other": "1"}), false),
        (
            json!({"outlet": OUTLET_A, "fiscal_year": 2026, "fiscal_number": "one"}),
            false,
        ),
        (json!({}), false),
    ] {
        assert_eq!(lookup.is_valid(&q), ok, "lookup {q}");
        let query: Vec<String> = q
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect();
        let (status, _) = api.send(
            reqwest::Method::GET,
            &format!("/v1/invoices/lookup?{}", query.join("&")),
            None,
        );
        // A complete lookup finds the invoice or nothing; anything else is 400.
        assert_eq!(status != 400, ok, "lookup {q}: {status}");
    }

    // Webhook event lists have at least one member.
    let webhook = validator(&doc, &body("/v1/webhooks", "post"));
    assert!(!webhook.is_valid(&json!({"url": "https://example.com/h", "events": []})));
    assert!(!webhook.is_valid(&json!({"url": "https://example.com/h", "events": ["nope"]})));
    assert!(
        webhook.is_valid(&json!({"url": "https://example.com/h", "events": ["invoice.sealed"]}))
    );
    let (status, _) = api.send(
        reqwest::Method::POST,
        "/v1/webhooks",
        Some(&json!({"url": "https://example.com/h", "events": []})),
    );
    assert_eq!(status, 422);

    // A delivery has a recipient of its channel's form.
    let id = sealed["id"].as_str().unwrap();
    let delivery = validator(&doc, &body("/v1/invoices/{id}/deliveries", "post"));
    for (d, ok) in [
        (json!({"channel": "email", "to": ""}), false),
        (json!({"channel": "whatsapp", "to": ""}), false),
        (json!({"channel": "whatsapp", "to": "a@b.cd"}), false),
        (json!({"channel": "email", "to": "+243810000000"}), false),
        (json!({"channel": "print", "to": "x"}), false),
        (json!({"channel": "email", "to": "a@b.cd"}), true),
        (
            json!({"channel": "whatsapp", "to": "+243810000000", "format": "80mm"}),
            true,
        ),
    ] {
        assert_eq!(delivery.is_valid(&d), ok, "delivery {d}");
        let (status, _) = api.send(
            reqwest::Method::POST,
            &format!("/v1/invoices/{id}/deliveries"),
            Some(&d),
        );
        // No channel is configured here, so even a good one is refused
        // (`channel_not_configured`, a rule of the deployment).
        assert_eq!(status, 422, "delivery {d}");
    }

    // An abandoned sale names its till and cashier.
    let sale = validator(&doc, &body("/v1/outlets/{outlet}/incomplete-sales", "post"));
    let good = json!({"pos_terminal_id": "till-1", "cashier_id": "c-07", "amount": "12.50", "reason": "left"});
    assert!(sale.is_valid(&good));
    let uri = format!("/v1/outlets/{OUTLET_A}/incomplete-sales");
    let (status, _) = api.send(reqwest::Method::POST, &uri, Some(&good));
    assert_eq!(status, 201);
    for (field, value) in [
        ("pos_terminal_id", json!("")),
        ("cashier_id", json!("")),
        ("pos_terminal_id", json!("é".repeat(65))),
        ("amount", json!("1_0")),
        ("amount", json!("+1")),
        ("amount", json!("1.005")),
        ("amount", json!("-1")),
        ("reason", json!("a\u{7}b")),
    ] {
        let mut bad = good.clone();
        bad[field] = value;
        assert!(!sale.is_valid(&bad), "{bad}");
        let (status, _) = api.send(reqwest::Method::POST, &uri, Some(&bad));
        assert_eq!(status, 422, "{bad}");
    }
    // 64 two-byte characters are 64 characters: the schema's count and the
    // server's.
    let mut wide = good.clone();
    wide["cashier_id"] = json!("é".repeat(64));
    assert!(sale.is_valid(&wide));
    let (status, _) = api.send(reqwest::Method::POST, &uri, Some(&wide));
    assert_eq!(status, 201);

    // A key's outlets follow its role.
    let keys = validator(&doc, &body("/v1/keys", "post"));
    for (k, ok) in [
        (json!({"role": "owner"}), true),
        (json!({"role": "owner", "outlets": [OUTLET_A]}), false),
        (json!({"role": "cashier"}), false),
        (json!({"role": "cashier", "outlets": []}), false),
        (json!({"role": "cashier", "outlets": [OUTLET_A]}), true),
        (json!({"role": "auditor"}), true),
        (json!({"role": "auditor", "outlets": []}), false),
    ] {
        assert_eq!(keys.is_valid(&k), ok, "key {k}");
        let (status, _) = api.send(reqwest::Method::POST, "/v1/keys", Some(&k));
        assert_eq!(status == 201, ok, "key {k}: {status}");
    }
}
