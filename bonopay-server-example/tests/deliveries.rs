//! Receipt deliveries against real receivers on loopback: a minimal SMTP
//! server (a `TcpListener` in a thread) and a WhatsApp-style HTTP API (an
//! axum server), both in the test process; attempts recorded in `auth.db`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bonopay_ledger::{LedgerStore, SqliteStore};
use bonopay_server_example::cli::serve::{bootstrap, deliveries};
use bonopay_server_example::datadir::{DeliveriesConfig, MerchantConfig, OutletConfig};
use bonopay_server_example::server::auth::SqliteKeyStore;
use bonopay_server_example::server::deliveries::{DeliveryStore, SqliteDeliveryStore};
use bonopay_server_example::server::{AppState, router};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, SoftwareSigner};
use common::*;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "wa-secret-token";

struct App {
    router: Router,
    owner_a: String,
    owner_b: String,
    dir: tempfile::TempDir,
}

fn app_with(config: &DeliveriesConfig) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn LedgerStore> =
        Arc::new(SqliteStore::open(dir.path().join("ledger.db")).unwrap());
    let signer = Arc::new(SoftwareSigner::generate().unwrap());
    let fiscalizer = Fiscalizer::new(store, signer, FiscalizerConfig::new("NID-TEST-01"));
    let auth = dir.path().join("auth.db");
    let keys = SqliteKeyStore::open(&auth).unwrap();
    let m = |nif: &str, outlet: &str| MerchantConfig {
        nif: nif.into(),
        name: Some(format!("Merchant {nif}")),
        address: None,
        contact: None,
        outlets: vec![OutletConfig {
            id: outlet.into(),
            time_zone: None,
        }],
    };
    let tokens = bootstrap(&keys, &[m(NIF_A, OUTLET_A), m(NIF_B, OUTLET_B)]).unwrap();
    let state = AppState::new(Arc::new(fiscalizer), Arc::new(keys))
        .with_deliveries(deliveries(config, &auth).unwrap());
    App {
        router: router(state),
        owner_a: tokens[0].1.clone(),
        owner_b: tokens[1].1.clone(),
        dir,
    }
}

async fn call(
    app: &App,
    method: Method,
    uri: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_router(&app.router, method, uri, key, body).await
}

async fn seal(app: &App) -> String {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/invoices")
        .header("authorization", format!("Bearer {}", app.owner_a))
        .header("idempotency-key", "d-1")
        .body(Body::from(serde_json::to_vec(&example()).unwrap()))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What the SMTP server received.
#[derive(Debug)]
struct Mail {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

/// A minimal SMTP server on 127.0.0.1: accepts one connection, speaks
/// 220/EHLO/MAIL/RCPT/DATA/QUIT, and returns what it received.
fn smtp_server() -> (u16, std::thread::JoinHandle<Mail>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut lines = BufReader::new(stream);
        let mut mail = Mail {
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            data: String::new(),
        };
        out.write_all(b"220 test.local ESMTP\r\n").unwrap();
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).unwrap() == 0 {
                break;
            }
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                out.write_all(b"250-test.local\r\n250 8BITMIME\r\n")
                    .unwrap();
            } else if upper.starts_with("MAIL FROM:") {
                mail.mail_from = line[10..].trim().to_owned();
                out.write_all(b"250 OK\r\n").unwrap();
            } else if upper.starts_with("RCPT TO:") {
                mail.rcpt_to.push(line[8..].trim().to_owned());
                out.write_all(b"250 OK\r\n").unwrap();
            } else if upper.starts_with("DATA") {
                out.write_all(b"354 go ahead\r\n").unwrap();
                loop {
                    let mut l = String::new();
                    assert!(lines.read_line(&mut l).unwrap() > 0, "DATA cut short");
                    if l == ".\r\n" {
                        break;
                    }
                    mail.data.push_str(l.strip_prefix('.').unwrap_or(&l));
                }
                out.write_all(b"250 OK queued\r\n").unwrap();
            } else if upper.starts_with("QUIT") {
                out.write_all(b"221 bye\r\n").unwrap();
                break;
            } else {
                out.write_all(b"250 OK\r\n").unwrap();
            }
        }
        mail
    });
    (port, handle)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

/// Decodes the `application/pdf` part of a MIME message.
fn pdf_attachment(data: &str) -> Vec<u8> {
    let start = data
        .find("Content-Type: application/pdf")
        .expect("a PDF part");
    let part = &data[start..];
    let body_start = part.find("\r\n\r\n").unwrap() + 4;
    let b64: String = part[body_start..]
        .lines()
        .take_while(|l| !l.starts_with("--") && !l.is_empty())
        .collect();
    STANDARD.decode(b64).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_delivery_against_a_real_smtp_server() {
    let (port, server) = smtp_server();
    let app = app_with(&DeliveriesConfig {
        smtp_url: Some(format!("smtp://127.0.0.1:{port}")),
        smtp_from: Some("Bono Pay <recus@bonopay.cd>".into()),
        ..DeliveriesConfig::default()
    });
    let id = seal(&app).await;
    let uri = format!("/v1/invoices/{id}/deliveries");
    let (status, body) = call(
        &app,
        Method::POST,
        &uri,
        &app.owner_a,
        Some(json!({"channel": "email", "to": "client@example.cd"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "sent");
    assert_eq!(body["channel"], "email");
    assert_eq!(body["recipient"], "client@example.cd");
    assert!(body["id"].as_str().unwrap().starts_with("dlv_"));

    let mut mail = server.join().unwrap();
    // Unfold folded header lines (RFC 5322 §2.2.3).
    mail.data = mail.data.replace("\r\n ", " ");
    assert_eq!(mail.mail_from, "<recus@bonopay.cd>");
    assert_eq!(mail.rcpt_to, ["<client@example.cd>"]);
    assert!(mail.data.contains("To: client@example.cd"), "{}", mail.data);
    assert!(
        mail.data
            .contains("Subject: Facture normalisee 1/1 FV - CODE DEF/DGI "),
        "{}",
        mail.data
    );
    assert!(
        mail.data
            .contains("filename=\"facture-kin-gombe-01-1.pdf\"")
    );
    let pdf = pdf_attachment(&mail.data);
    assert!(pdf.starts_with(b"%PDF-"));
    // The attachment is the receipt.pdf of the invoice, byte for byte.
    let req = Request::builder()
        .uri(format!("/v1/invoices/{id}/receipt.pdf"))
        .header("authorization", format!("Bearer {}", app.owner_a))
        .body(Body::empty())
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let served = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(pdf, served.to_vec());

    // SMTP down: 502, the one error body, recorded as failed.
    let app_down = app_with(&DeliveriesConfig {
        smtp_url: Some(format!("smtp://127.0.0.1:{}", closed_port())),
        ..DeliveriesConfig::default()
    });
    let id = seal(&app_down).await;
    let uri = format!("/v1/invoices/{id}/deliveries");
    let (status, body) = call(
        &app_down,
        Method::POST,
        &uri,
        &app_down.owner_a,
        Some(json!({"channel": "email", "to": "client@example.cd"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "delivery_failed");
    let (status, list) = call(&app_down, Method::GET, &uri, &app_down.owner_a, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["status"], "failed");
    assert!(!list[0]["error"].as_str().unwrap().is_empty());
    // Durable: in auth.db.
    let store = SqliteDeliveryStore::open(&app_down.dir.path().join("auth.db")).unwrap();
    let rows = store.list(NIF_A, &id).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(serde_json::to_value(&rows[0]).unwrap(), list[0]);

    // The messaging channel is not configured here.
    let (status, body) = call(
        &app_down,
        Method::POST,
        &uri,
        &app_down.owner_a,
        Some(json!({"channel": "whatsapp", "to": "+243812345678"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"]["details"][0]["code"],
        "channel_not_configured"
    );
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
    answer: Arc<AtomicU16>,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return StatusCode::UNAUTHORIZED;
    }
    r.got.lock().unwrap().push(body);
    StatusCode::from_u16(r.answer.load(Ordering::SeqCst)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_delivery_roles_and_isolation() {
    let receiver = Receiver::default();
    receiver.answer.store(200, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(
            listener,
            Router::new()
                .route("/v1/messages", axum::routing::post(receive))
                .with_state(receiver.clone()),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .into_future(),
    );

    let app = app_with(&DeliveriesConfig {
        whatsapp_url: Some(format!("http://{addr}/v1/messages")),
        whatsapp_token: Some(TOKEN.into()),
        ..DeliveriesConfig::default()
    });
    let id = seal(&app).await;
    let uri = format!("/v1/invoices/{id}/deliveries");
    let send = json!({"channel": "whatsapp", "to": "+243812345678"});

    let (status, body) = call(&app, Method::POST, &uri, &app.owner_a, Some(send.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "sent");
    {
        let got = receiver.got.lock().unwrap();
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert_eq!(m["to"], "+243812345678");
        assert!(m["text"].as_str().unwrap().contains("1/1 FV"));
        assert_eq!(m["mime_type"], "application/pdf");
        let pdf = STANDARD
            .decode(m["document_base64"].as_str().unwrap())
            .unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
    }

    // Cashier and integration keys may deliver; an auditor may not.
    for role in ["cashier", "integration"] {
        let (_, key) = create_key(&app, json!({"role": role, "outlets": [OUTLET_A]})).await;
        let (status, body) = call(&app, Method::POST, &uri, &key, Some(send.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{role}: {body}");
    }
    let (_, auditor) = create_key(&app, json!({"role": "auditor"})).await;
    let (status, _) = call(&app, Method::POST, &uri, &auditor, Some(send.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, list) = call(&app, Method::GET, &uri, &auditor, None).await;
    assert_eq!(status, StatusCode::OK, "an auditor reads the record");
    assert_eq!(list.as_array().unwrap().len(), 3);

    // Another merchant: 404 on both, nothing sent.
    let before = receiver.got.lock().unwrap().len();
    let (status, body) = call(&app, Method::POST, &uri, &app.owner_b, Some(send.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = call(&app, Method::GET, &uri, &app.owner_b, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(receiver.got.lock().unwrap().len(), before);

    // Bad recipients and channels.
    for bad in [
        json!({"channel": "whatsapp", "to": "0812345678"}),
        json!({"channel": "email", "to": "nobody"}),
        json!({"channel": "pigeon", "to": "+243812345678"}),
    ] {
        let (status, body) = call(&app, Method::POST, &uri, &app.owner_a, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }

    // The channel fails (5xx): 502, recorded as failed.
    receiver.answer.store(503, Ordering::SeqCst);
    let (status, body) = call(&app, Method::POST, &uri, &app.owner_a, Some(send.clone())).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "delivery_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("503"));
    let (_, list) = call(&app, Method::GET, &uri, &app.owner_a, None).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[3]["status"], "failed");
    assert!(list[3]["error"].as_str().unwrap().contains("503"));
    assert!(list[..3].iter().all(|d| d["status"] == "sent"));

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();

    // The receiver is gone: unreachable, 502, recorded.
    let (status, _) = call(&app, Method::POST, &uri, &app.owner_a, Some(send)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let (_, list) = call(&app, Method::GET, &uri, &app.owner_a, None).await;
    assert_eq!(list.as_array().unwrap().len(), 5);
}

async fn create_key(app: &App, body: Value) -> (String, String) {
    let (status, v) = call(app, Method::POST, "/v1/keys", &app.owner_a, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    (
        v["key"]["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}
