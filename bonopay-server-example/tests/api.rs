//! The HTTP API, driven in process through the router (`oneshot`, no
//! socket), over real components: a SQLite ledger, a SQLite key store and
//! a software P-256 key wrapped in the fault-injecting `FaultySigner`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bonopay_ledger::{LedgerStore, SqliteStore};
use bonopay_server_example::cli::serve::bootstrap;
use bonopay_server_example::datadir::{MerchantConfig, OutletConfig};
use bonopay_server_example::server::auth::SqliteKeyStore;
use bonopay_server_example::server::{AppState, Limits, MerchantProfile, router};
use bonopay_signer::{
    FaultySigner, Fiscalizer, FiscalizerConfig, PublicKey, SignOutput, Signer, SignerError,
    SoftwareSigner,
};
use common::*;
use serde_json::{Value, json};
use tower::ServiceExt;

struct App {
    router: Router,
    signer: Arc<FaultySigner<SoftwareSigner>>,
    owner_a: String,
    owner_b: String,
    _dir: tempfile::TempDir,
}

fn merchants() -> Vec<MerchantConfig> {
    let m = |nif: &str, outlets: &[&str]| MerchantConfig {
        nif: nif.into(),
        name: Some(format!("Merchant {nif}")),
        address: Some("Avenue du Commerce 1, Kinshasa".into()),
        contact: None,
        outlets: outlets
            .iter()
            .map(|o| OutletConfig {
                id: (*o).into(),
                time_zone: None,
                certification: None,
                mcf: None,
            })
            .collect(),
    };
    vec![m(NIF_A, &[OUTLET_A, OUTLET_A2]), m(NIF_B, &[OUTLET_B])]
}

fn app_with(
    limits: Limits,
    isf: Option<&str>,
    wrap: fn(Arc<dyn Signer>) -> Arc<dyn Signer>,
) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn LedgerStore> =
        Arc::new(SqliteStore::open(dir.path().join("ledger.db")).unwrap());
    let signer = Arc::new(FaultySigner::new(SoftwareSigner::generate().unwrap()));
    let mut config = FiscalizerConfig::new("NID-TEST-01");
    config.isf = isf.map(str::to_owned);
    let usd = bonopay_core::ExchangeRate::parse("2850").unwrap().value();
    config.reference_rates = Arc::new(bonopay_tax::FixedReferenceRates(
        [(bonopay_core::Currency::Usd, usd)].into_iter().collect(),
    ));
    let fiscalizer = Fiscalizer::new(store, wrap(Arc::clone(&signer) as Arc<dyn Signer>), config);
    let keys = SqliteKeyStore::open(&dir.path().join("auth.db")).unwrap();
    let tokens = bootstrap(&keys, &merchants()).unwrap();
    assert_eq!(tokens.len(), 2);
    // A second bootstrap creates no new key.
    assert!(bootstrap(&keys, &merchants()).unwrap().is_empty());
    let mut state = AppState::new(Arc::new(fiscalizer), Arc::new(keys)).with_limits(limits);
    for m in merchants() {
        state = state.with_merchant(
            &m.nif,
            MerchantProfile {
                name: m.name,
                address: m.address,
                contact: None,
            },
        );
    }
    App {
        router: router(state),
        signer,
        owner_a: tokens[0].1.clone(),
        owner_b: tokens[1].1.clone(),
        _dir: dir,
    }
}

fn app() -> App {
    app_with(Limits::default(), None, |s| s)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn call(
    app: &App,
    method: Method,
    uri: &str,
    key: Option<&str>,
    idem: Option<&str>,
    body: Option<Vec<u8>>,
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some(i) = idem {
        req = req.header("idempotency-key", i);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

async fn get(app: &App, uri: &str, key: &str) -> Resp {
    call(app, Method::GET, uri, Some(key), None, None).await
}

async fn post_invoice(app: &App, key: &str, idem: &str, invoice: &Value) -> Resp {
    call(
        app,
        Method::POST,
        "/v1/invoices",
        Some(key),
        Some(idem),
        Some(serde_json::to_vec(invoice).unwrap()),
    )
    .await
}

async fn post_json(app: &App, uri: &str, key: &str, body: Value) -> Resp {
    call(
        app,
        Method::POST,
        uri,
        Some(key),
        None,
        Some(serde_json::to_vec(&body).unwrap()),
    )
    .await
}

/// Creates a key and returns (id, token).
async fn create_key(app: &App, owner: &str, body: Value) -> (String, String) {
    let r = post_json(app, "/v1/keys", owner, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v = r.json();
    (
        v["key"]["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

fn public_key(app: &App) -> PublicKey {
    app.signer.public_key().clone()
}

#[tokio::test]
async fn fiscalize_replay_and_conflict() {
    let app = app();
    let inv = example();
    let first = post_invoice(&app, &app.owner_a, "order-1", &inv).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let v = first.json();
    assert_eq!(v["id"], "kin-gombe-01:1");
    assert_eq!(first.headers["location"], "/v1/invoices/kin-gombe-01:1");
    // No DGI certification on this server (mode `none`): the security
    // elements are Bono Pay's own, said to be so, and never a DGI QR.
    let c = &v["certification"];
    assert_eq!(c["mode"], "none");
    assert_eq!(c["state"], "not_certified");
    assert!(
        c["rn"].as_str().unwrap().starts_with("kin-gombe-01/20"),
        "{c}"
    );
    assert!(c["rn"].as_str().unwrap().ends_with("/1"), "{c}");
    let el = &v["security_elements"];
    assert_eq!(el["issuer"], "bonopay");
    assert_eq!(el["fiscal_number"], "1/1 FV");
    assert_eq!(el["fiscal_authority_id"], "NID-TEST-01");
    let code = el["authentication_code"].as_str().unwrap();
    assert_eq!(code.len(), 24);
    assert!(el["timestamp"].as_str().unwrap().ends_with("+01:00"));
    let qr = el["qr"].as_str().unwrap();
    assert!(qr.starts_with("BPV1:") && !qr.contains("RDCDEF01"), "{qr}");
    let seal = &v["seal"];
    assert_eq!(seal["authentication_code"], code);
    assert_eq!(seal["device_id"], "NID-TEST-01");
    assert_eq!(seal["verification_qr"], qr);
    // The verification payload verifies under the server's key, and names
    // the same code and totals.
    let verified =
        bonopay_signer::verify_qr(seal["verification_qr"].as_str().unwrap(), &public_key(&app))
            .unwrap();
    assert_eq!(verified.authentication_code, code);
    assert_eq!(verified.tuple.total, "70280.00");
    // Totals per group and ledger hashes.
    let groups: Vec<&str> = v["tax"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["A", "B", "C"]);
    assert_eq!(v["tax"]["dgi"]["total"], "70280.00");
    assert_eq!(v["ledger"]["seq"], 1);
    assert_eq!(v["ledger"]["entry_hash"].as_str().unwrap().len(), 64);
    assert_eq!(v["ledger"]["prev_hash"], verified.tuple.prev_hash);

    // Replay: 200, byte-identical body, flagged.
    let again = post_invoice(&app, &app.owner_a, "order-1", &inv).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    // Same key, other content: 409, nothing sealed.
    let mut other = inv.clone();
    other["cashier"]["name"] = "Someone Else".into();
    let conflict = post_invoice(&app, &app.owner_a, "order-1", &other).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.code(), "idempotency_conflict");

    // A new key seals the next number.
    let second = post_invoice(&app, &app.owner_a, "order-2", &other).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(
        second.json()["security_elements"]["fiscal_number"],
        "2/2 FV"
    );
    assert_eq!(
        second.json()["ledger"]["prev_hash"],
        v["ledger"]["entry_hash"]
    );
}

#[tokio::test]
async fn missing_key_or_header_and_bad_bodies() {
    let app = app();
    let inv = serde_json::to_vec(&example()).unwrap();
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        None,
        Some("k"),
        Some(inv.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthorized");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Some("bp_live_nope"),
        Some("k"),
        Some(inv.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Some(&app.owner_a),
        None,
        Some(inv.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "missing_idempotency_key");
    let long = "x".repeat(201);
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Some(&app.owner_a),
        Some(&long),
        Some(inv),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_idempotency_key");

    // Every validation error, with path and code.
    let mut bad = example();
    bad["items"][1]["quantity"] = "1.2345".into();
    bad["items"][2]["tax_group"] = "Z".into();
    bad["cashier"].as_object_mut().unwrap().remove("name");
    let r = post_invoice(&app, &app.owner_a, "bad-1", &bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], "validation_failed");
    let details: Vec<(String, String)> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert!(!d["message"].as_str().unwrap().is_empty());
            (
                d["path"].as_str().unwrap().to_owned(),
                d["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("items[1].quantity", "too_many_decimals"),
        ("items[2].tax_group", "invalid_value"),
        ("cashier.name", "missing_field"),
    ] {
        assert!(
            details.iter().any(|(p, c)| p == want.0 && c == want.1),
            "{want:?} not in {details:?}"
        );
    }

    // Payments that do not add up: a computation error, also 422.
    let mut unpaid = example();
    unpaid["payments"][0]["amount"] = "1".into();
    let r = post_invoice(&app, &app.owner_a, "bad-2", &unpaid).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["details"][0]["code"], "payments_mismatch");

    // Not JSON; nested deeper than the parser allows; not UTF-8.
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Some(&app.owner_a),
        Some("bad-3"),
        Some(b"{nope".to_vec()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["details"][0]["code"], "invalid_json");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Some(&app.owner_a),
        Some("bad-4"),
        Some(deep.into_bytes()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["details"][0]["code"], "too_deep");
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Some(&app.owner_a),
        Some("bad-5"),
        Some(vec![0xff, 0xfe]),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Deep JSON on a management endpoint: refused, not a crash.
    let deep_key = format!(
        "{{\"role\": {}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = call(
        &app,
        Method::POST,
        "/v1/keys",
        Some(&app.owner_a),
        None,
        Some(deep_key.into_bytes()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["details"][0]["code"], "invalid_json");

    // Nothing was sealed by any of these.
    let r = get(&app, "/v1/outlets/kin-gombe-01/invoices", &app.owner_a).await;
    assert_eq!(r.json()["items"], json!([]));
}

#[tokio::test]
async fn another_merchants_data_is_not_found() {
    let app = app();
    let sealed = post_invoice(&app, &app.owner_a, "a-1", &example())
        .await
        .json();
    let id = sealed["id"].as_str().unwrap();
    let code = sealed["security_elements"]["authentication_code"]
        .as_str()
        .unwrap();
    let b = &app.owner_b;

    // What "does not exist" looks like, for comparison.
    let missing = get(&app, "/v1/invoices/kin-gombe-01:999", &app.owner_a).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    for uri in [
        format!("/v1/invoices/{id}"),
        format!("/v1/invoices/{id}/receipt.txt"),
        format!("/v1/invoices/{id}/receipt.svg"),
        format!("/v1/invoices/{id}/receipt.pdf"),
        format!("/v1/invoices/{id}/receipt.pdf?format=80mm"),
        format!("/v1/invoices/{id}/deliveries"),
        format!("/v1/invoices/lookup?auth_code={code}"),
        "/v1/invoices/lookup?outlet=kin-gombe-01&fiscal_year=2026&fiscal_number=1".to_owned(),
        "/v1/outlets/kin-gombe-01/invoices".to_owned(),
    ] {
        let r = get(&app, &uri, b).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}: {}", r.text());
        assert_eq!(r.body, missing.body, "{uri}: same answer as for nothing");
    }

    // Writes: B sealing for A's NIF, or on A's outlet under its own NIF.
    let r = post_invoice(&app, b, "b-1", &example()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = post_invoice(&app, b, "b-2", &invoice_for(NIF_B, OUTLET_A)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // An outlet nobody registered is answered the same way.
    let r = post_invoice(&app, b, "b-3", &invoice_for(NIF_B, "nowhere-9")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // B's own outlet works, and numbering is B's own.
    let r = post_invoice(&app, b, "b-4", &invoice_for(NIF_B, OUTLET_B)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["security_elements"]["fiscal_number"], "1/1 FV");

    // B cannot revoke A's keys (not even see them), nor bind A's outlets.
    let keys_a = get(&app, "/v1/keys", &app.owner_a).await.json();
    let key_a = keys_a[0]["id"].as_str().unwrap();
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/keys/{key_a}"),
        Some(b),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let keys_b = get(&app, "/v1/keys", b).await.json();
    assert!(
        keys_b
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["merchant_nif"] == NIF_B)
    );
    let r = post_json(
        &app,
        "/v1/keys",
        b,
        json!({"role": "cashier", "outlets": [OUTLET_A]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["details"][0]["path"], "outlets[0]");
    assert_eq!(r.json()["error"]["details"][0]["code"], "unknown_outlet");
    // A's key still works.
    assert_eq!(
        get(&app, &format!("/v1/invoices/{id}"), &app.owner_a)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn roles_and_outlet_bindings() {
    let app = app();
    let (_, cashier) = create_key(
        &app,
        &app.owner_a,
        json!({"role": "cashier", "outlets": [OUTLET_A], "label": "till 1"}),
    )
    .await;
    let (_, auditor) = create_key(&app, &app.owner_a, json!({"role": "auditor"})).await;
    let (_, integration) = create_key(
        &app,
        &app.owner_a,
        json!({"role": "integration", "outlets": [OUTLET_A2]}),
    )
    .await;

    // Cashier: its outlet yes, the merchant's other outlet no (403).
    let r = post_invoice(&app, &cashier, "c-1", &example()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = post_invoice(&app, &cashier, "c-2", &invoice_for(NIF_A, OUTLET_A2)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "forbidden");
    // Integration: only its outlet.
    let r = post_invoice(&app, &integration, "i-1", &invoice_for(NIF_A, OUTLET_A2)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = post_invoice(&app, &integration, "i-2", &example()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // and it cannot read the other outlet's invoices either.
    assert_eq!(
        get(&app, &format!("/v1/invoices/{id}"), &integration)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // Auditor: reads everything of the merchant, fiscalizes nothing.
    let r = post_invoice(&app, &auditor, "a-1", &example()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&app, &format!("/v1/invoices/{id}"), &auditor)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/v1/outlets/kin-limete-02/invoices", &auditor)
            .await
            .status,
        StatusCode::OK
    );

    // Only the owner manages.
    for k in [&cashier, &auditor, &integration] {
        assert_eq!(get(&app, "/v1/keys", k).await.status, StatusCode::FORBIDDEN);
        let r = post_json(&app, "/v1/outlets", k, json!({"id": "new-1"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = post_json(&app, "/v1/keys", k, json!({"role": "owner"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }

    // Key requests are validated.
    let r = post_json(&app, "/v1/keys", &app.owner_a, json!({"role": "cashier"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["details"][0]["code"], "missing_field");
    let r = post_json(
        &app,
        "/v1/keys",
        &app.owner_a,
        json!({"role": "owner", "outlets": [OUTLET_A]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = post_json(&app, "/v1/keys", &app.owner_a, json!({"role": "root"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["details"][0]["code"], "invalid_json");
    // Listing never shows a token.
    let list = get(&app, "/v1/keys", &app.owner_a).await;
    assert_eq!(list.json().as_array().unwrap().len(), 4);
    assert!(!list.text().contains(&cashier));
    assert!(!list.text().contains("bp_live_"));
}

#[tokio::test]
async fn outlets_are_managed_by_the_owner() {
    let app = app();
    let r = post_json(
        &app,
        "/v1/outlets",
        &app.owner_a,
        json!({"id": "kin-ngaliema-03"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["merchant_nif"], NIF_A);
    let r = post_json(
        &app,
        "/v1/outlets",
        &app.owner_a,
        json!({"id": "kin-ngaliema-03"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "outlet_taken");
    // Outlet ids are global (the ledger numbers per outlet id).
    let r = post_json(
        &app,
        "/v1/outlets",
        &app.owner_b,
        json!({"id": "kin-ngaliema-03"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = post_json(&app, "/v1/outlets", &app.owner_a, json!({"id": "bad id:1"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["details"][0]["path"], "id");
    let ids: Vec<String> = get(&app, "/v1/outlets", &app.owner_a)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [OUTLET_A, OUTLET_A2, "kin-ngaliema-03"]);
    // The new outlet takes invoices at once, numbered from 1.
    let r = post_invoice(
        &app,
        &app.owner_a,
        "n-1",
        &invoice_for(NIF_A, "kin-ngaliema-03"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["security_elements"]["fiscal_number"], "1/1 FV");
    let b_outlets = get(&app, "/v1/outlets", &app.owner_b).await.json();
    assert_eq!(b_outlets.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn revocation_takes_effect_at_once() {
    let app = app();
    let (id, cashier) = create_key(
        &app,
        &app.owner_a,
        json!({"role": "cashier", "outlets": [OUTLET_A]}),
    )
    .await;
    assert_eq!(
        post_invoice(&app, &cashier, "r-1", &example()).await.status,
        StatusCode::CREATED
    );
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/keys/{id}"),
        Some(&app.owner_a),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["revoked"], true);
    let r = post_invoice(&app, &cashier, "r-2", &example()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&app, "/v1/invoices/kin-gombe-01:1", &cashier)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Revoking an unknown key is a 404.
    let r = call(
        &app,
        Method::DELETE,
        "/v1/keys/key_0000",
        Some(&app.owner_a),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reading_looking_up_and_paginating() {
    let app = app();
    let mut codes = Vec::new();
    for i in 0..5 {
        let r = post_invoice(&app, &app.owner_a, &format!("p-{i}"), &example()).await;
        assert_eq!(r.status, StatusCode::CREATED);
        codes.push(
            r.json()["security_elements"]["authentication_code"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // By id, by code (both printed forms), by fiscal number.
    let by_id = get(&app, "/v1/invoices/kin-gombe-01:3", &app.owner_a).await;
    assert_eq!(by_id.status, StatusCode::OK);
    assert_eq!(
        by_id.json()["security_elements"]["authentication_code"],
        codes[2].as_str()
    );
    let display = bonopay_signer::format_auth_code(&codes[2]);
    for q in [codes[2].clone(), display] {
        let r = get(
            &app,
            &format!("/v1/invoices/lookup?auth_code={q}"),
            &app.owner_a,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, by_id.body);
    }
    let year = by_id.json()["security_elements"]["timestamp"]
        .as_str()
        .unwrap()[..4]
        .to_owned();
    for n in ["3", "3/3%20FV"] {
        let r = get(
            &app,
            &format!(
                "/v1/invoices/lookup?outlet=kin-gombe-01&fiscal_year={year}&fiscal_number={n}"
            ),
            &app.owner_a,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.body, by_id.body);
    }
    assert_eq!(
        get(&app, "/v1/invoices/lookup", &app.owner_a).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(
            &app,
            "/v1/invoices/lookup?auth_code=AAAAAAAAAAAAAAAAAAAAAAAA",
            &app.owner_a
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/v1/invoices/kin-gombe-01:6", &app.owner_a)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/v1/invoices/garbage", &app.owner_a).await.status,
        StatusCode::NOT_FOUND
    );

    // Pages of 2: 1-2, 3-4, 5, in order, each with its cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/outlets/kin-gombe-01/invoices?limit=2&cursor={c}"),
            None => "/v1/outlets/kin-gombe-01/invoices?limit=2".to_owned(),
        };
        let page = get(&app, &uri, &app.owner_a).await.json();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push((
                item["seq"].as_u64().unwrap(),
                item["authentication_code"].as_str().unwrap().to_owned(),
            ));
            assert_eq!(item["total"], "70280.00");
        }
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<(u64, String)> = (1..=5).zip(codes.iter().cloned()).collect();
    assert_eq!(seen, expected);
    for bad in ["limit=0", "limit=201", "cursor=x"] {
        let r = get(
            &app,
            &format!("/v1/outlets/kin-gombe-01/invoices?{bad}"),
            &app.owner_a,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.code(), "invalid_query");
    }
}

fn credit_note_of(code: &str) -> Value {
    let mut v = example();
    v["invoice_type"] = "FA".into();
    v["credit_note"] = json!({"reference": code, "nature": "COR"});
    v["items"] = json!([{"code": "PAIN", "kind": "BIE", "name": "Pain", "unit_price": "500", "quantity": "2", "tax_group": "A"}]);
    v["payments"] = json!([{"method": "ESPECES", "amount": "1000"}]);
    v
}

#[tokio::test]
async fn text_receipts_carry_the_mandatory_mentions() {
    let app = app_with(Limits::default(), Some("ISF-TEST-7"), |s| s);
    let sale = post_invoice(&app, &app.owner_a, "s-1", &example())
        .await
        .json();
    // Not certified by the DGI here (mode `none`): Bono Pay's seal under
    // its own labels, and never a DGI label or QR.
    let el = &sale["seal"];
    for (width, columns) in [(58, 32), (80, 48)] {
        let r = get(
            &app,
            &format!("/v1/invoices/kin-gombe-01:1/receipt.txt?width={width}"),
            &app.owner_a,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = r.text();
        for line in text.lines() {
            assert!(line.chars().count() <= columns, "{width} mm: `{line}`");
        }
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let wants = [
            "NIF : A1309334L".to_owned(),
            "ISF : ISF-TEST-7".to_owned(),
            "Merchant A1309334L".to_owned(),
            "Mbuyi Kalala".to_owned(),
            "Kin Trading SARL".to_owned(),
            "NIF client : A0901234B".to_owned(),
            "Savon de Marseille".to_owned(),
            "Riz 25 kg".to_owned(),
            "3.000 x 1160.00 3480.00 B".to_owned(),
            "B 16.00% base 3000.00 TVA 480.00 total 3480.00".to_owned(),
            "TOTAL TTC (CDF) 70280.00".to_owned(),
            "TOTAL TVA 5280.00".to_owned(),
            "NON CERTIFIÉ DGI".to_owned(),
            "Code Bono Pay :".to_owned(),
            el["authentication_code_display"]
                .as_str()
                .unwrap()
                .to_owned(),
            format!("Appareil Bono Pay : {}", el["device_id"].as_str().unwrap()),
            "Compteurs Bono Pay : 1/1 FV".to_owned(),
            "Heure Bono Pay :".to_owned(),
            "FACTURE DE VENTE".to_owned(),
            format!(
                "Facture N° : {}",
                sale["certification"]["rn"].as_str().unwrap()
            ),
        ];
        for want in &wants {
            assert!(
                flat.contains(want.as_str()),
                "{width} mm receipt lacks `{want}`:\n{text}"
            );
        }
        for mark in bonopay_server_example::server::receipt::DGI_ONLY_MARKS {
            assert!(
                !flat.contains(mark),
                "{width} mm receipt shows `{mark}`:\n{text}"
            );
        }
        // The QR payload is printed whole (possibly wrapped).
        assert!(
            text.replace('\n', "")
                .contains(el["verification_qr"].as_str().unwrap())
        );
        assert!(!flat.contains("FACTURE D'AVOIR") && !flat.contains("EXPORTATION"));
    }
    let r = get(
        &app,
        "/v1/invoices/kin-gombe-01:1/receipt.txt?width=72",
        &app.owner_a,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A credit note: FACTURE D'AVOIR, its nature and the original's code.
    let code = el["authentication_code"].as_str().unwrap();
    let r = post_invoice(&app, &app.owner_a, "s-2", &credit_note_of(code)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let credit = get(
        &app,
        &format!(
            "/v1/invoices/{}/receipt.txt",
            r.json()["id"].as_str().unwrap()
        ),
        &app.owner_a,
    )
    .await
    .text();
    assert!(credit.contains("FACTURE D'AVOIR"), "{credit}");
    assert!(credit.contains("COR - Correction"), "{credit}");
    assert!(
        credit.contains(el["authentication_code_display"].as_str().unwrap()),
        "{credit}"
    );
    assert!(
        credit.contains("Compteurs Bono Pay :") && credit.contains("1/2 FA"),
        "{credit}"
    );

    // An export sale and an advance.
    let mut export = example();
    export["invoice_type"] = "EV".into();
    let r = post_invoice(&app, &app.owner_a, "s-3", &export).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let text = get(
        &app,
        &format!(
            "/v1/invoices/{}/receipt.txt",
            r.json()["id"].as_str().unwrap()
        ),
        &app.owner_a,
    )
    .await
    .text();
    assert!(text.contains("EXPORTATION"), "{text}");
    let mut advance = example();
    advance["invoice_type"] = "FT".into();
    let r = post_invoice(&app, &app.owner_a, "s-4", &advance).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let text = get(
        &app,
        &format!(
            "/v1/invoices/{}/receipt.txt",
            r.json()["id"].as_str().unwrap()
        ),
        &app.owner_a,
    )
    .await
    .text();
    assert!(text.contains("FACTURE D'ACOMPTE"), "{text}");

    // A USD invoice: the rate and the CDF totals are printed too.
    let mut usd = example();
    usd["currency"] = "USD".into();
    usd["exchange_rate"] = json!({"rate": "2850.00", "date": "2026-11-27"});
    usd["items"] = json!([{"code": "PC-1", "kind": "BIE", "name": "Ordinateur", "unit_price": "500", "quantity": "1", "tax_group": "B"}]);
    usd["payments"] = json!([{"method": "VIREMENT", "amount": "500"}]);
    let r = post_invoice(&app, &app.owner_a, "s-5", &usd).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["tax"]["dgi"]["total"], "1425000.00");
    let text = get(
        &app,
        &format!(
            "/v1/invoices/{}/receipt.txt",
            r.json()["id"].as_str().unwrap()
        ),
        &app.owner_a,
    )
    .await
    .text();
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "TOTAL TTC (USD) 500.00",
        "1 USD = 2850.000000 CDF (2026-11-27)",
        "TOTAL TTC (CDF) 1425000.00",
    ] {
        assert!(flat.contains(want), "lacks `{want}`:\n{text}");
    }

    // The QR as SVG.
    let r = get(
        &app,
        "/v1/invoices/kin-gombe-01:1/receipt.svg",
        &app.owner_a,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "image/svg+xml");
    assert!(r.text().contains("<svg"));
}

/// A small reader of the PDFs the server writes (uncompressed content
/// streams): the text shown (`(…) Tj` and `<…> Tj`, decoded from
/// WinAnsi), the page sizes and the filled rectangles.
mod pdf {
    /// WinAnsi (Windows-1252) byte to char, for the bytes the renderer uses.
    fn win_ansi(b: u8) -> char {
        match b {
            0x80 => '€',
            0x85 => '…',
            0x8C => 'Œ',
            0x92 => '’',
            0x96 => '–',
            0x97 => '—',
            0x9C => 'œ',
            _ => char::from(b),
        }
    }

    /// Every string operand of `Tj`, decoded, in order.
    pub fn shown_text(pdf: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < pdf.len() {
            let (bytes, end) = match pdf[i] {
                b'(' => {
                    let mut depth = 1;
                    let mut bytes = Vec::new();
                    let mut j = i + 1;
                    while j < pdf.len() && depth > 0 {
                        match pdf[j] {
                            b'\\' => {
                                j += 1;
                                match pdf[j] {
                                    b'n' => bytes.push(b'\n'),
                                    b'r' => bytes.push(b'\r'),
                                    b't' => bytes.push(b'\t'),
                                    b'0'..=b'7' => {
                                        let mut v = 0u32;
                                        let mut k = 0;
                                        while k < 3 && (b'0'..=b'7').contains(&pdf[j]) {
                                            v = v * 8 + u32::from(pdf[j] - b'0');
                                            j += 1;
                                            k += 1;
                                        }
                                        j -= 1;
                                        bytes.push(v as u8);
                                    }
                                    c => bytes.push(c),
                                }
                            }
                            b'(' => {
                                depth += 1;
                                bytes.push(b'(');
                            }
                            b')' => {
                                depth -= 1;
                                if depth > 0 {
                                    bytes.push(b')');
                                }
                            }
                            c => bytes.push(c),
                        }
                        j += 1;
                    }
                    (bytes, j)
                }
                b'<' if pdf.get(i + 1) != Some(&b'<') && i > 0 && pdf[i - 1] != b'<' => {
                    let mut j = i + 1;
                    let mut hex = Vec::new();
                    while j < pdf.len() && pdf[j] != b'>' {
                        if pdf[j].is_ascii_hexdigit() {
                            hex.push(pdf[j]);
                        }
                        j += 1;
                    }
                    let bytes = hex
                        .chunks(2)
                        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
                        .collect();
                    (bytes, j + 1)
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            let rest = &pdf[end.min(pdf.len())..];
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if rest.starts_with(b"Tj") {
                out.push(bytes.into_iter().map(win_ansi).collect());
            }
            i = end;
        }
        out
    }

    /// The `/MediaBox` of every page, as written.
    pub fn media_boxes(pdf: &[u8]) -> Vec<Vec<f64>> {
        let text = String::from_utf8_lossy(pdf);
        text.split("/MediaBox [")
            .skip(1)
            .map(|rest| {
                rest.split(']')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .map(|n| n.parse::<f64>().unwrap())
                    .collect()
            })
            .collect()
    }

    /// Every `x y w h re` of the file.
    pub fn rects(pdf: &[u8]) -> Vec<[f64; 4]> {
        let text = String::from_utf8_lossy(pdf);
        let tokens: Vec<&str> = text.split_whitespace().collect();
        tokens
            .windows(5)
            .filter(|w| w[4] == "re")
            .filter_map(|w| {
                let n: Vec<f64> = w[..4].iter().filter_map(|t| t.parse().ok()).collect();
                (n.len() == 4).then(|| [n[0], n[1], n[2], n[3]])
            })
            .collect()
    }

    /// Structural checks: header, cross-reference table, trailer, `%%EOF`,
    /// and the xref offsets pointing at `N 0 obj`.
    pub fn check_structure(pdf: &[u8]) {
        assert!(pdf.starts_with(b"%PDF-"), "header");
        let text = String::from_utf8_lossy(pdf);
        assert!(text.trim_end().ends_with("%%EOF"), "%%EOF at the end");
        let startxref: usize = text
            .rsplit("startxref")
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            pdf[startxref..].starts_with(b"xref"),
            "startxref points at xref"
        );
        let xref = std::str::from_utf8(&pdf[startxref..]).unwrap();
        let mut lines = xref.lines().skip(1);
        let header: Vec<usize> = lines
            .next()
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(header[0], 0);
        for obj in 1..header[1] {
            let entry = lines.nth(if obj == 1 { 1 } else { 0 }).unwrap();
            let offset: usize = entry[..10].parse().unwrap();
            assert!(
                pdf[offset..].starts_with(format!("{obj} 0 obj").as_bytes()),
                "xref entry of object {obj}"
            );
        }
        assert!(text.contains("trailer") && text.contains("/Root 1 0 R"));
    }
}

#[tokio::test]
async fn pdf_receipts_carry_the_mentions_and_the_qr_code() {
    let app = app_with(Limits::default(), Some("ISF-TEST-7"), |s| s);
    let sale = post_invoice(&app, &app.owner_a, "p-1", &example())
        .await
        .json();
    let el = &sale["seal"];
    let txt = get(
        &app,
        "/v1/invoices/kin-gombe-01:1/receipt.txt",
        &app.owner_a,
    )
    .await
    .text();
    for (query, width, columns) in [
        ("", 595.0, 80),
        ("?format=a4", 595.0, 80),
        ("?format=80mm", 226.77, 48),
    ] {
        let uri = format!("/v1/invoices/kin-gombe-01:1/receipt.pdf{query}");
        let r = get(&app, &uri, &app.owner_a).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
        assert_eq!(r.headers["content-type"], "application/pdf");
        let bytes = r.body.to_vec();
        pdf::check_structure(&bytes);

        // Page size.
        let boxes = pdf::media_boxes(&bytes);
        assert!(!boxes.is_empty());
        for b in &boxes {
            assert_eq!(b[..3], [0.0, 0.0, width], "{uri}: {b:?}");
            if width == 595.0 {
                assert_eq!(b[3], 842.0, "A4 height");
            } else {
                assert!(b[3] > 200.0, "the roll is as long as the receipt");
            }
        }

        // The mentions: the same lines as the text receipt at that width.
        let shown = pdf::shown_text(&bytes);
        let flat = shown.join("\n");
        assert!(shown.iter().all(|l| l.chars().count() <= columns));
        for want in [
            "NIF : A1309334L",
            "ISF : ISF-TEST-7",
            "Merchant A1309334L",
            "Opérateur : Mbuyi Kalala",
            "Kin Trading SARL",
            "NIF client : A0901234B",
            "Savon de Marseille",
            "Riz 25 kg",
            "TOTAL TVA",
            "5280.00",
            "70280.00",
            "FACTURE DE VENTE",
            "NON CERTIFIÉ DGI",
            "SCEAU DE VÉRIFICATION BONO PAY",
            "Code Bono Pay :",
            el["authentication_code_display"].as_str().unwrap(),
            "Appareil Bono Pay :",
            el["device_id"].as_str().unwrap(),
            "Compteurs Bono Pay :",
            "1/1 FV",
            "Heure Bono Pay :",
        ] {
            assert!(flat.contains(want), "{uri} lacks `{want}`:\n{flat}");
        }
        for mark in bonopay_server_example::server::receipt::DGI_ONLY_MARKS {
            assert!(!flat.contains(mark), "{uri} shows `{mark}`");
        }
        assert!(
            !flat.contains("FACTURE NORMALISEE"),
            "{uri}: not a facture normalisée"
        );
        assert!(
            flat.replace('\n', "")
                .contains(el["verification_qr"].as_str().unwrap())
        );
        if columns == 48 {
            // At 48 columns the PDF prints exactly the 80 mm text receipt.
            let txt_lines: Vec<&str> = txt.lines().filter(|l| !l.is_empty()).collect();
            let pdf_lines: Vec<&str> = shown.iter().map(String::as_str).collect();
            assert_eq!(pdf_lines, txt_lines);
        }

        // The QR code: the filled modules are exactly those of the payload
        // at level M.
        let rects = pdf::rects(&bytes);
        assert!(!rects.is_empty(), "{uri}: no QR drawn");
        let module = rects.iter().map(|r| r[3]).fold(f64::MAX, f64::min);
        let left = rects.iter().map(|r| r[0]).fold(f64::MAX, f64::min);
        let top = rects.iter().map(|r| r[1] + r[3]).fold(f64::MIN, f64::max);
        let code = qrcode::QrCode::with_error_correction_level(
            el["verification_qr"].as_str().unwrap(),
            qrcode::EcLevel::M,
        )
        .unwrap();
        let n = code.width();
        let mut drawn = vec![false; n * n];
        for r in &rects {
            assert_eq!(r[3], module);
            let row = ((top - (r[1] + r[3])) / module).round() as usize;
            let col = ((r[0] - left) / module).round() as usize;
            let cells = (r[2] / module).round() as usize;
            for c in col..col + cells {
                assert!(!drawn[row * n + c], "overlap");
                drawn[row * n + c] = true;
            }
        }
        let want: Vec<bool> = code
            .to_colors()
            .into_iter()
            .map(|c| c == qrcode::Color::Dark)
            .collect();
        assert_eq!(drawn, want, "{uri}: QR modules");

        // Deterministic: the same invoice gives the same bytes.
        let again = get(&app, &uri, &app.owner_a).await;
        assert_eq!(again.body, r.body, "{uri}: not deterministic");
    }
    let a4 = get(
        &app,
        "/v1/invoices/kin-gombe-01:1/receipt.pdf",
        &app.owner_a,
    )
    .await;
    let roll = get(
        &app,
        "/v1/invoices/kin-gombe-01:1/receipt.pdf?format=80mm",
        &app.owner_a,
    )
    .await;
    assert_ne!(a4.body, roll.body);

    // A bad format; a missing invoice.
    let r = get(
        &app,
        "/v1/invoices/kin-gombe-01:1/receipt.pdf?format=letter",
        &app.owner_a,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_query");
    let r = get(
        &app,
        "/v1/invoices/kin-gombe-01:99/receipt.pdf",
        &app.owner_a,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");

    // A credit note prints its mentions too.
    let code = el["authentication_code"].as_str().unwrap();
    let r = post_invoice(&app, &app.owner_a, "p-2", &credit_note_of(code)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let pdf_bytes = get(
        &app,
        &format!("/v1/invoices/{id}/receipt.pdf"),
        &app.owner_a,
    )
    .await
    .body;
    let flat = pdf::shown_text(&pdf_bytes).join("\n");
    for want in [
        "FACTURE D'AVOIR",
        "COR - Correction",
        "Réf. facture d'origine",
        "1/2 FA",
    ] {
        assert!(flat.contains(want), "credit note lacks `{want}`:\n{flat}");
    }

    // Characters outside WinAnsi print as `?`; nothing fails.
    let mut lingala = example();
    lingala["client"]["name"] = "Mamá Ngɔ́mbɛ « Bɔlɔ́ngɔ »".into();
    let r = post_invoice(&app, &app.owner_a, "p-3", &lingala).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    for f in ["a4", "80mm"] {
        let r = get(
            &app,
            &format!("/v1/invoices/{id}/receipt.pdf?format={f}"),
            &app.owner_a,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        pdf::check_structure(&r.body);
        let flat = pdf::shown_text(&r.body).join("\n");
        assert!(flat.contains("Mamá Ng??mb? « B?l??ng? »"), "{flat}");
    }

    // Optional: poppler renders it, when installed.
    if std::process::Command::new("pdftoppm")
        .arg("-v")
        .output()
        .is_ok()
    {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [("a4", &a4.body), ("roll", &roll.body)] {
            let path = dir.path().join(format!("{name}.pdf"));
            std::fs::write(&path, bytes).unwrap();
            let out = std::process::Command::new("pdftoppm")
                .args(["-r", "50", "-png"])
                .arg(&path)
                .arg(dir.path().join(name))
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "pdftoppm {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[tokio::test]
async fn public_qr_verification() {
    let app = app();
    let sealed = post_invoice(&app, &app.owner_a, "v-1", &example())
        .await
        .json();
    let el = &sealed["seal"];
    let verify = |qr: String| {
        let app = &app;
        async move {
            let uri = format!("/v1/verify?qr={}", encode(&qr));
            // No API key: the endpoint is public.
            call(app, Method::GET, &uri, None, None, None).await
        }
    };
    let bpv1 = el["verification_qr"].as_str().unwrap().to_owned();
    let r = verify(bpv1.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["format"], "bpv1");
    assert_eq!(v["registered"], true);
    assert_eq!(v["authentication_code"], el["authentication_code"]);
    assert_eq!(v["fiscal_number"], "1/1 FV");
    assert_eq!(v["total"], "70280.00");

    // A forged tuple (total changed) no longer verifies.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let json_text = String::from_utf8(b64.decode(&bpv1[5..]).unwrap()).unwrap();
    let forged = format!(
        "BPV1:{}",
        b64.encode(json_text.replace("70280.00", "70.00"))
    );
    let v = verify(forged).await.json();
    assert_eq!(v["valid"], false);
    assert!(!v["reason"].as_str().unwrap().is_empty());

    // A DGI QR is valid only for a certification the DGI made: the
    // payload older versions derived from Bono Pay's own seal is not one.
    let code = el["authentication_code"].as_str().unwrap();
    let made_up = format!("RDCDEF01;NID-TEST-01;{code};A1309334L;20261128090000");
    let v = verify(made_up).await.json();
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["format"], "dgi");
    let v = verify("RDCDEF01;NID;AAAAAAAAAAAAAAAAAAAAAAAA;A1309334L;20260101120000".into())
        .await
        .json();
    assert_eq!(v["valid"], false);
    let v = verify("hello".into()).await.json();
    assert_eq!(v["valid"], false);
    let r = call(&app, Method::GET, "/v1/verify", None, None, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_query");
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_signer_that_is_down_is_a_retryable_503_and_costs_no_number() {
    let app = app();
    app.signer.set_down(true);
    let r = post_invoice(&app, &app.owner_a, "d-1", &example()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "signer_unavailable");
    assert_eq!(r.headers["retry-after"], "5");
    assert!(
        !r.text().contains("injected"),
        "no internals leak: {}",
        r.text()
    );
    app.signer.set_down(false);
    let r = post_invoice(&app, &app.owner_a, "d-1", &example()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["security_elements"]["fiscal_number"], "1/1 FV");
    assert_eq!(r.json()["ledger"]["seq"], 1);
}

#[tokio::test]
async fn metrics_count_seals_replays_and_signer_errors() {
    let app = app();
    let text = |r: Resp| r.text();
    let before = text(call(&app, Method::GET, "/metrics", None, None, None).await);
    assert!(
        before.contains("bonopay_invoices_sealed_total 0"),
        "{before}"
    );
    post_invoice(&app, &app.owner_a, "m-1", &example()).await;
    post_invoice(&app, &app.owner_a, "m-1", &example()).await;
    post_invoice(&app, &app.owner_a, "m-2", &example()).await;
    app.signer.set_down(true);
    post_invoice(&app, &app.owner_a, "m-3", &example()).await;
    let r = call(&app, Method::GET, "/metrics", None, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = r.text();
    assert!(
        m.contains("# TYPE bonopay_invoices_sealed_total counter"),
        "{m}"
    );
    assert!(m.contains("bonopay_invoices_sealed_total 2"), "{m}");
    assert!(m.contains("bonopay_invoices_replayed_total 1"), "{m}");
    assert!(m.contains("bonopay_signer_errors_total 1"), "{m}");
    assert!(
        m.contains("# TYPE bonopay_seal_duration_seconds histogram"),
        "{m}"
    );
    assert!(m.contains("bonopay_seal_duration_seconds_count 2"), "{m}");
    assert!(
        m.contains("bonopay_seal_duration_seconds_bucket{le=\"+Inf\"} 2"),
        "{m}"
    );
}

#[tokio::test]
async fn openapi_health_and_unknown_routes() {
    let app = app();
    let r = call(&app, Method::GET, "/openapi.json", None, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths["/v1/invoices"]["post"].is_object());
    let responses = paths["/v1/invoices"]["post"]["responses"]
        .as_object()
        .unwrap();
    for status in ["200", "201", "409", "422", "503"] {
        assert!(responses.contains_key(status), "{status}");
    }
    for p in [
        "/v1/invoices/{id}",
        "/v1/invoices/lookup",
        "/v1/outlets/{outlet}/invoices",
        "/v1/invoices/{id}/receipt.txt",
        "/v1/verify",
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/outlets",
        "/healthz",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} missing from /openapi.json");
    }
    assert!(doc["components"]["schemas"]["SealedInvoiceDto"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // The document is the one the library builds.
    assert_eq!(
        doc,
        serde_json::to_value(bonopay_server_example::server::openapi()).unwrap()
    );

    let r = call(&app, Method::GET, "/healthz", None, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    let r = call(&app, Method::GET, "/nope", None, None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
    let r = call(&app, Method::PUT, "/healthz", None, None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "method_not_allowed");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = app();
    let mut big = example();
    big["comments"]["C"] = "x".repeat(1024 * 1024).into();
    let r = post_invoice(&app, &app.owner_a, "big-1", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "payload_too_large");
    let r = post_json(
        &app,
        "/v1/outlets",
        &app.owner_a,
        json!({"id": "x".repeat(2 << 20)}),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    let small = app_with(
        Limits {
            body_bytes: 512,
            ..Limits::default()
        },
        None,
        |s| s,
    );
    let r = post_invoice(&small, &small.owner_a, "big-2", &example()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// A signer that takes its time (fault injection over the real signer).
#[derive(Debug)]
struct SlowSigner(Arc<dyn Signer>);

impl Signer for SlowSigner {
    fn key_id(&self) -> &str {
        self.0.key_id()
    }
    fn public_key(&self) -> &PublicKey {
        self.0.public_key()
    }
    fn sign(&self, digest: &[u8; 32]) -> Result<SignOutput, SignerError> {
        std::thread::sleep(Duration::from_millis(1000));
        self.0.sign(digest)
    }
}

#[tokio::test]
async fn a_request_over_the_timeout_is_408_and_a_retry_replays() {
    let app = app_with(
        Limits {
            request_timeout: Duration::from_millis(250),
            ..Limits::default()
        },
        None,
        |s| Arc::new(SlowSigner(s)),
    );
    let r = post_invoice(&app, &app.owner_a, "t-1", &example()).await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(r.code(), "timeout");
    assert!(r.headers.contains_key("retry-after"));
    // The seal itself finished on the blocking pool; the retry with the
    // same key gets it, and nothing was sealed twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = post_invoice(&app, &app.owner_a, "t-1", &example()).await;
    // (A replay does not sign, so it answers within the timeout.)
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["security_elements"]["fiscal_number"], "1/1 FV");
}

async fn post_on(router: Router, key: String, idem: String, body: Vec<u8>) -> (StatusCode, Bytes) {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/invoices")
        .header("authorization", format!("Bearer {key}"))
        .header("idempotency-key", idem)
        .body(Body::from(body))
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_seal_once_per_key_and_number_without_gaps() {
    let app = app();
    let body = serde_json::to_vec(&example()).unwrap();
    // Eight concurrent submissions of one key: one seal, seven replays.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(post_on(
                app.router.clone(),
                app.owner_a.clone(),
                "same".into(),
                body.clone(),
            ))
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let replayed = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(
        (created, replayed),
        (1, 7),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(
        results.iter().all(|(_, b)| *b == results[0].1),
        "every answer is the one seal"
    );

    // Eight concurrent different keys: eight seals numbered 2..=9.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(post_on(
                app.router.clone(),
                app.owner_a.clone(),
                format!("k-{i}"),
                body.clone(),
            ))
        })
        .collect();
    let mut totals = Vec::new();
    for t in tasks {
        let (status, b) = t.await.unwrap();
        assert_eq!(status, StatusCode::CREATED);
        let v: Value = serde_json::from_slice(&b).unwrap();
        totals.push(v["ledger"]["seq"].as_u64().unwrap());
    }
    totals.sort_unstable();
    assert_eq!(totals, (2..=9).collect::<Vec<u64>>());
}

#[tokio::test]
async fn reports_by_role_and_an_exported_bundle_that_verifies() {
    let app = app();
    let (_, cashier) = create_key(
        &app,
        &app.owner_a,
        json!({"role": "cashier", "outlets": [OUTLET_A]}),
    )
    .await;
    let (_, auditor) = create_key(&app, &app.owner_a, json!({"role": "auditor"})).await;
    let (_, integration) = create_key(
        &app,
        &app.owner_a,
        json!({"role": "integration", "outlets": [OUTLET_A]}),
    )
    .await;
    for i in 0..2 {
        let r = post_invoice(&app, &cashier, &format!("r-{i}"), &example()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    let base = format!("/v1/outlets/{OUTLET_A}");

    // Anyone bound to the outlet reads X; it closes nothing.
    let r = get(&app, &format!("{base}/reports/x"), &auditor).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["report"]["stats"]["invoices"], 2);
    assert_eq!(
        r.json()["report"]["trade_name"],
        format!("Merchant {NIF_A}")
    );
    let r = get(
        &app,
        &format!("{base}/reports/x?format=text&width=58"),
        &cashier,
    )
    .await;
    assert!(r.text().contains("RAPPORT X"), "{}", r.text());

    // Only owner and cashier close a session.
    for key in [&auditor, &integration] {
        let r = post_json(&app, &format!("{base}/reports/z"), key, json!({})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    }
    let r = post_json(&app, &format!("{base}/reports/z"), &cashier, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["report"]["z_number"], 1);
    let z_seq = r.json()["sealed"]["seq"].as_u64().unwrap();
    let r = get(&app, &format!("{base}/reports/z"), &auditor).await;
    assert_eq!(r.json(), json!([{"z_number": 1, "seq": z_seq}]));
    let r = get(&app, &format!("{base}/reports/z/1?format=text"), &auditor).await;
    assert!(r.text().contains("RAPPORT Z no 1"), "{}", r.text());
    assert_eq!(
        get(&app, &format!("{base}/reports/z/2"), &auditor)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Another merchant sees nothing.
    assert_eq!(
        get(&app, &format!("{base}/reports/x"), &app.owner_b)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Incomplete sales and A reports.
    let r = post_json(
        &app,
        &format!("{base}/incomplete-sales"),
        &cashier,
        json!({"pos_terminal_id": "till-1", "cashier_id": "c-07", "amount": "1500", "reason": "client parti"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = post_json(
        &app,
        &format!("{base}/incomplete-sales"),
        &cashier,
        json!({"pos_terminal_id": "till-1", "cashier_id": "c-07", "amount": "-1"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let r = get(&app, &format!("{base}/reports/x"), &auditor).await;
    assert_eq!(r.json()["report"]["stats"]["incomplete_sales"]["count"], 1);
    let r = get(&app, &format!("{base}/reports/a"), &auditor).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["sealed"].is_null());
    let r = post_json(&app, &format!("{base}/reports/a"), &auditor, json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post_json(&app, &format!("{base}/reports/a"), &app.owner_a, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = post_json(&app, &format!("{base}/closings"), &app.owner_a, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"reports": []}),
        "nothing is due the same day"
    );

    // The audit bundle: owner and auditor only; it verifies offline.
    let r = get(&app, &format!("{base}/export"), &cashier).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = get(&app, &format!("{base}/export?from=2026-13-01"), &auditor).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&app, &format!("{base}/export"), &auditor).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let lines: Vec<&[u8]> = r.body.split_inclusive(|b| *b == b'\n').collect();
    let mut v = bonopay_signer::audit::Verifier::new(lines[0]).unwrap();
    for l in &lines[1..] {
        v.feed(l, false);
    }
    let report = v.finish();
    assert!(report.is_valid(), "{:?}", report.error);
    assert_eq!(report.checked.entries, 5);
    assert_eq!(report.checked.z_reports, 1);
    assert_eq!(report.keys, vec![public_key(&app).key_id().to_owned()]);
}

/// `path` with its parameters filled: ids that exist (`real`) or that name
/// nothing. Key ids never name a real key: a probe must not revoke the
/// owner's.
fn fill_path(path: &str, invoice_id: &str, real: bool) -> String {
    path.replace(
        "{outlet}",
        if real {
            "kin-gombe-01"
        } else {
            "no-such-outlet"
        },
    )
    .replace(
        "{id}",
        if real && path.starts_with("/v1/invoices") {
            invoice_id
        } else {
            "no-such-id"
        },
    )
    .replace("{number}", if real { "1" } else { "999999" })
}

/// Values that break a query parameter's schema, whatever it is: not a
/// number, out of every range, not a date, not in an enum, against a
/// pattern.
const BAD_QUERY_VALUES: [&str; 4] = ["zz~", "0", "99999", ""];

/// One probe: the URI, the key to send (if any) and the body (if any).
type Probe<'a> = (String, Option<&'a str>, Option<Vec<u8>>);

#[tokio::test]
async fn every_status_the_server_answers_is_in_the_openapi_document() {
    // What a client generated from /openapi.json can expect: every probe
    // below (no key, a path naming nothing, each query parameter broken,
    // a missing or malformed body) must get a status the operation
    // documents.
    let app = app();
    let doc = serde_json::to_value(bonopay_server_example::server::openapi()).unwrap();
    let sealed = post_invoice(&app, &app.owner_a, "openapi-1", &example()).await;
    assert_eq!(sealed.status, StatusCode::CREATED);
    let invoice_id = sealed.json()["id"].as_str().unwrap().to_owned();
    let mut probes = 0;
    let mut undocumented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let documented: Vec<String> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            let query: Vec<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "query")
                        .map(|p| p["name"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let has_body = op.get("requestBody").is_some();
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut tries: Vec<Probe<'_>> = Vec::new();
            for real in [true, false] {
                let p = fill_path(path, &invoice_id, real);
                tries.push((p.clone(), None, None));
                if m == Method::DELETE {
                    continue;
                }
                tries.push((p.clone(), Some(app.owner_a.as_str()), None));
                for q in &query {
                    for v in BAD_QUERY_VALUES {
                        tries.push((format!("{p}?{q}={v}"), Some(app.owner_a.as_str()), None));
                    }
                }
                if has_body {
                    for body in [&b"{"[..], b"[]", b"{\"unknown\": 1}"] {
                        tries.push((p.clone(), Some(app.owner_a.as_str()), Some(body.to_vec())));
                    }
                }
            }
            for (uri, key, body) in tries {
                let r = call(&app, m.clone(), &uri, key, Some("openapi-probe"), body).await;
                probes += 1;
                if !documented.contains(&r.status.as_u16().to_string()) {
                    undocumented.push(format!(
                        "{m} {uri} (key: {}) answered {} {}; documented: {documented:?}",
                        key.is_some(),
                        r.status,
                        String::from_utf8_lossy(&r.body)
                            .chars()
                            .take(120)
                            .collect::<String>()
                    ));
                }
            }
        }
    }
    assert!(
        probes > 300,
        "only {probes} probes: did the document lose paths?"
    );
    assert!(
        undocumented.is_empty(),
        "{} of {probes} answers not in /openapi.json:\n{}",
        undocumented.len(),
        undocumented.join("\n")
    );
}

#[tokio::test]
async fn a_report_request_refused_for_its_query_seals_nothing() {
    // The query is read before the report is made: a Z or A report sealed
    // and then answered 400 would make the client close the period again.
    let app = app();
    let r = post_invoice(&app, &app.owner_a, "refused-1", &example()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["ledger"]["seq"], 1, "{}", r.text());
    let base = "/v1/outlets/kin-gombe-01";
    for q in [
        "reports/z?format=xml",
        "reports/z?width=7",
        "reports/z?format=text&width=100",
        "reports/a?format=pdf",
        "reports/a?width=0",
        "closings?format=csv",
        "closings?width=59",
    ] {
        let r = post_json(&app, &format!("{base}/{q}"), &app.owner_a, json!({})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text());
        assert_eq!(r.code(), "invalid_query", "{q}");
    }
    // Nothing was sealed: the first Z report is number 1, right after the
    // invoice.
    let r = post_json(&app, &format!("{base}/reports/z"), &app.owner_a, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["report"]["z_number"], 1);
    assert_eq!(r.json()["sealed"]["seq"], 2);
}
