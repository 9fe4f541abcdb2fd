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
            certification: None,
            mcf: None,
        }],
    };
    let tokens = bootstrap(&keys, &[m(NIF_A, OUTLET_A), m(NIF_B, OUTLET_B)]).unwrap();
    let state = AppState::new(Arc::new(fiscalizer), Arc::new(keys))
        .with_deliveries(deliveries(config, &auth, &loopback_egress()).unwrap());
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
#[derive(Debug, Default)]
struct Mail {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
    /// Whether the message came over TLS.
    tls: bool,
    /// The `AUTH PLAIN` credentials, decoded (`user:password`).
    auth: Option<String>,
}

/// How the test SMTP server protects the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Plain,
    /// Offers STARTTLS, then AUTH once TLS is up.
    StartTls,
    /// TLS from the first byte, AUTH offered.
    Implicit,
}

/// A minimal SMTP server on 127.0.0.1 in plain text: accepts one
/// connection, speaks 220/EHLO/MAIL/RCPT/DATA/QUIT, and returns what it
/// received.
fn smtp_server() -> (u16, std::thread::JoinHandle<Mail>) {
    smtp_server_with(Wire::Plain, None)
}

/// A certificate for 127.0.0.1 (PEM, for the client to trust) and the
/// server's TLS configuration with it.
fn tls_identity() -> (String, Arc<rustls::ServerConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    (ck.cert.pem(), Arc::new(config))
}

/// The SMTP server of `wire`; `tls` is the TLS configuration it needs for
/// STARTTLS or implicit TLS.
fn smtp_server_with(
    wire: Wire,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (u16, std::thread::JoinHandle<Mail>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut mail = Mail::default();
        let over_tls = |tcp: std::net::TcpStream| {
            let conn = rustls::ServerConnection::new(tls.clone().unwrap()).unwrap();
            rustls::StreamOwned::new(conn, tcp)
        };
        match wire {
            Wire::Plain => {
                converse(stream, &mut mail, true, false, false);
            }
            Wire::Implicit => {
                mail.tls = true;
                converse(over_tls(stream), &mut mail, true, false, true);
            }
            Wire::StartTls => {
                if let Some(tcp) = converse(stream, &mut mail, true, true, false) {
                    mail.tls = true;
                    converse(over_tls(tcp), &mut mail, false, false, true);
                }
            }
        }
        mail
    });
    (port, handle)
}

/// One SMTP dialogue over `stream`, greeting first when it opens the
/// connection (after STARTTLS the client speaks first). Gives the stream
/// back when the client asks for STARTTLS.
fn converse<S: std::io::Read + Write>(
    stream: S,
    mail: &mut Mail,
    greet: bool,
    offer_starttls: bool,
    offer_auth: bool,
) -> Option<S> {
    let mut lines = BufReader::new(stream);
    // A failed TLS handshake shows up here as an I/O error: the dialogue
    // simply ends, and the test reads what arrived.
    let say = |lines: &mut BufReader<S>, text: &[u8]| {
        let s = lines.get_mut();
        let _ = s.write_all(text).and_then(|()| s.flush());
    };
    if greet {
        say(&mut lines, b"220 test.local ESMTP\r\n");
    }
    loop {
        let mut line = String::new();
        if !matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
            return None;
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            let mut reply = String::from("250-test.local\r\n");
            if offer_starttls {
                reply.push_str("250-STARTTLS\r\n");
            }
            if offer_auth {
                reply.push_str("250-AUTH PLAIN\r\n");
            }
            reply.push_str("250 8BITMIME\r\n");
            say(&mut lines, reply.as_bytes());
        } else if upper.starts_with("STARTTLS") && offer_starttls {
            say(&mut lines, b"220 go ahead\r\n");
            return Some(lines.into_inner());
        } else if upper.starts_with("AUTH PLAIN ") && offer_auth {
            let raw = STANDARD.decode(line[11..].trim()).unwrap();
            let parts: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            mail.auth = Some(format!("{}:{}", parts[1], parts[2]));
            say(&mut lines, b"235 2.7.0 accepted\r\n");
        } else if upper.starts_with("MAIL FROM:") {
            mail.mail_from = line[10..].trim().to_owned();
            say(&mut lines, b"250 OK\r\n");
        } else if upper.starts_with("RCPT TO:") {
            mail.rcpt_to.push(line[8..].trim().to_owned());
            say(&mut lines, b"250 OK\r\n");
        } else if upper.starts_with("DATA") {
            say(&mut lines, b"354 go ahead\r\n");
            loop {
                let mut l = String::new();
                assert!(lines.read_line(&mut l).unwrap() > 0, "DATA cut short");
                if l == ".\r\n" {
                    break;
                }
                mail.data.push_str(l.strip_prefix('.').unwrap_or(&l));
            }
            say(&mut lines, b"250 OK queued\r\n");
        } else if upper.starts_with("QUIT") {
            say(&mut lines, b"221 bye\r\n");
            return None;
        } else {
            say(&mut lines, b"250 OK\r\n");
        }
    }
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
        // Not certified by the DGI on this server: said plainly, and no
        // DGI label in the subject.
        mail.data.contains("Subject: Recu kin-gombe-01/")
            && mail.data.contains(" - non certifie DGI")
            && !mail.data.contains("CODE DEF/DGI"),
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

/// Sends one receipt by e-mail through `config` and returns the answer.
async fn deliver_by_email(config: &DeliveriesConfig) -> (App, StatusCode, Value) {
    let app = app_with(config);
    let id = seal(&app).await;
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("/v1/invoices/{id}/deliveries"),
        &app.owner_a,
        Some(json!({"channel": "email", "to": "client@example.cd"})),
    )
    .await;
    (app, status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_or_implicit_tls_logs_in_and_checks_the_certificate() {
    let (pem, tls) = tls_identity();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("relay-ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    for (wire, url) in [
        (
            Wire::StartTls,
            "smtp://bono%40pay.cd:p%40ss%3Aword@127.0.0.1:{port}?tls=required",
        ),
        (
            Wire::Implicit,
            "smtps://bono%40pay.cd:p%40ss%3Aword@127.0.0.1:{port}",
        ),
    ] {
        let (port, server) = smtp_server_with(wire, Some(Arc::clone(&tls)));
        let (_app, status, body) = deliver_by_email(&DeliveriesConfig {
            smtp_url: Some(url.replace("{port}", &port.to_string())),
            smtp_ca_file: Some(ca.clone()),
            smtp_from: Some("recus@bonopay.cd".into()),
            ..DeliveriesConfig::default()
        })
        .await;
        assert_eq!(status, StatusCode::CREATED, "{wire:?}: {body}");
        assert_eq!(body["status"], "sent");
        let mail = server.join().unwrap();
        assert!(mail.tls, "{wire:?}");
        assert_eq!(
            mail.auth.as_deref(),
            Some("bono@pay.cd:p@ss:word"),
            "{wire:?}"
        );
        assert_eq!(mail.rcpt_to, ["<client@example.cd>"]);
        assert!(pdf_attachment(&mail.data.replace("\r\n ", " ")).starts_with(b"%PDF-"));
    }
    // A certificate nothing vouches for (no CA file): nothing is sent, the
    // attempt is a 502 recorded as failed, and the server never saw the
    // password or the message.
    for (wire, url) in [
        (
            Wire::StartTls,
            "smtp://u:secret@127.0.0.1:{port}?tls=required",
        ),
        (Wire::Implicit, "smtps://u:secret@127.0.0.1:{port}"),
    ] {
        let (port, server) = smtp_server_with(wire, Some(Arc::clone(&tls)));
        let (_app, status, body) = deliver_by_email(&DeliveriesConfig {
            smtp_url: Some(url.replace("{port}", &port.to_string())),
            ..DeliveriesConfig::default()
        })
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{wire:?}: {body}");
        assert_eq!(body["error"]["code"], "delivery_failed");
        let mail = server.join().unwrap();
        assert_eq!(mail.auth, None, "{wire:?}");
        assert!(
            mail.mail_from.is_empty() && mail.data.is_empty(),
            "{wire:?}"
        );
    }
    // STARTTLS required but not offered: refused, nothing sent in clear.
    let (port, server) = smtp_server_with(Wire::Plain, None);
    let (_app, status, body) = deliver_by_email(&DeliveriesConfig {
        smtp_url: Some(format!("smtp://u:secret@127.0.0.1:{port}?tls=required")),
        smtp_ca_file: Some(ca.clone()),
        ..DeliveriesConfig::default()
    })
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let mail = server.join().unwrap();
    assert!(!mail.tls && mail.auth.is_none() && mail.mail_from.is_empty());
}
