//! Outbound destinations (issue 15, SSRF through webhooks): webhook URLs on
//! loopback, private, link-local, metadata… addresses are refused at
//! registration in every spelling, a name that resolves to such an
//! address is refused when the delivery connects (and the receiver sees no
//! connection), redirects are not followed, the operator's allow-list lets
//! on-premise receivers through, and the WhatsApp-style channel obeys the
//! same rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{Method, StatusCode};
use bonopay_ledger::SqliteStore;
use bonopay_server_example::cli::serve::{bootstrap, deliveries};
use bonopay_server_example::datadir::{Config, DeliveriesConfig, MerchantConfig, OutletConfig};
use bonopay_server_example::server::auth::SqliteKeyStore;
use bonopay_server_example::server::deliveries::{
    DeliveryError, MessagingChannel, OutgoingMessage, WhatsAppHttpChannel,
};
use bonopay_server_example::server::egress::{
    Egress, EgressPolicy, Lookup, LookupFuture, NOT_ALLOWED,
};
use bonopay_server_example::server::webhooks::Webhooks;
use bonopay_server_example::server::{AppState, router};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, SoftwareSigner};
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP listener that counts the connections it accepts and answers
/// each request with `answer` (a status line and headers).
struct Listener {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Listener {
    async fn start(ip: &str, answer: String) -> Listener {
        let l = tokio::net::TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    // Read the head and the body it announces, then answer.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let _ = s
                        .write_all(
                            format!("{answer}content-length: 0\r\nconnection: close\r\n\r\n")
                                .as_bytes(),
                        )
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Listener { addr, connections }
    }

    async fn ok(ip: &str) -> Listener {
        Self::start(ip, "HTTP/1.1 200 OK\r\n".into()).await
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A resolver answering every name with fixed addresses, as a rebinding
/// DNS server does once the URL is registered.
#[derive(Debug)]
struct Answer(Vec<IpAddr>);

impl Lookup for Answer {
    fn lookup<'a>(&'a self, _host: &'a str) -> LookupFuture<'a> {
        let addrs = self.0.clone();
        Box::pin(async move { Ok(addrs) })
    }
}

fn loopback_answer() -> Arc<dyn Lookup> {
    Arc::new(Answer(vec!["127.0.0.1".parse().unwrap()]))
}

struct App {
    base: String,
    hooks: Webhooks,
    owner: String,
    _dir: tempfile::TempDir,
}

/// The server with webhooks over `egress`, listening on a real socket.
async fn start(egress: Egress) -> App {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(SqliteStore::open(dir.path().join("ledger.db")).unwrap());
    let fiscalizer = Arc::new(Fiscalizer::new(
        ledger,
        Arc::new(SoftwareSigner::generate().unwrap()),
        FiscalizerConfig::new("NID-TEST-01"),
    ));
    let auth = dir.path().join("auth.db");
    let keys = SqliteKeyStore::open(&auth).unwrap();
    let merchant = MerchantConfig {
        nif: NIF_A.into(),
        name: None,
        address: None,
        contact: None,
        outlets: vec![OutletConfig {
            id: OUTLET_A.into(),
            time_zone: None,
            certification: None,
            mcf: None,
        }],
    };
    let owner = bootstrap(&keys, &[merchant]).unwrap()[0].1.clone();
    let hooks = Webhooks::open(&auth).unwrap().with_egress(egress).unwrap();
    let state = AppState::new(fiscalizer, Arc::new(keys)).with_webhooks(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router(state)).into_future());
    App {
        base,
        hooks,
        owner,
        _dir: dir,
    }
}

impl App {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.owner);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, url: &str) -> (StatusCode, Value) {
        self.call(Method::POST, "/v1/webhooks", Some(json!({ "url": url })))
            .await
    }

    /// Registers `url` through the API, expecting 201; its id.
    async fn subscribe(&self, url: &str) -> String {
        let (status, v) = self.register(url).await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {v}");
        v["webhook"]["id"].as_str().unwrap().to_owned()
    }

    /// One event for every subscriber, then one dispatch round.
    async fn deliver(&self, event: &str) {
        assert!(
            self.hooks
                .enqueue_event(event, NIF_A, "invoice.synced", json!({"n": 1}))
                .unwrap()
        );
        self.hooks.dispatch_due().await.unwrap();
    }

    async fn log(&self, id: &str) -> Vec<Value> {
        let (status, v) = self
            .call(Method::GET, &format!("/v1/webhooks/{id}/deliveries"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v.as_array().unwrap().clone()
    }
}

/// Every form an attacker tried (issue 15) and the other spellings the
/// URL parser or the resolver accept for the same kinds of address.
const FORBIDDEN: &[&str] = &[
    // loopback
    "http://127.0.0.1/v1/keys",
    "http://127.0.0.1.:8080/healthz",
    "http://127.1/",
    "http://127.0.1.3/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7F.0.0.1/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://%31%32%37.0.0.1/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]:8080/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::1]/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://api.localhost/",
    // cloud metadata
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://2852039166/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./",
    // private, shared, link-local
    "http://10.0.0.1/",
    "http://0xa000001/",
    "http://172.16.0.1/",
    "http://192.168.0.1/",
    "http://[::ffff:192.168.0.1]/",
    "http://100.64.0.1/",
    "http://169.254.10.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456:789a::1]/",
    "http://erp.local/",
    "http://nas.home.arpa/",
    // unspecified, broadcast, multicast
    "http://0.0.0.0:8080/",
    "http://0/",
    "http://[::]/",
    "http://255.255.255.255/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    // documentation, benchmarking, reserved
    "http://192.0.2.1/",
    "http://198.51.100.1/",
    "http://203.0.113.1/",
    "http://198.18.0.1/",
    "http://240.0.0.1/",
    "http://[2001:db8::1]/",
    "https://[2001::1]/",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forbidden_address_form_gets_422_at_registration() {
    let app = start(Egress::default()).await;
    for url in FORBIDDEN {
        let (status, v) = app.register(url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {v}");
        let detail = &v["error"]["details"][0];
        assert_eq!(detail["path"], "url", "{url}: {v}");
        assert_eq!(detail["code"], "destination_not_allowed", "{url}: {v}");
        let message = detail["message"].as_str().unwrap();
        assert!(
            message.starts_with("destination not allowed: "),
            "{message}"
        );
        assert!(message.contains("egress.allow"), "{message}");
    }
    let (_, listed) = app.call(Method::GET, "/v1/webhooks", None).await;
    assert_eq!(listed, json!([]), "nothing was registered");
    // Public destinations still register, in any spelling.
    for url in [
        "https://erp.example.cd/hooks/bonopay",
        "http://93.184.216.34/h",
        "http://1572395042/h",
        "http://[2606:4700:4700::1111]/h",
        "http://[::ffff:93.184.216.34]/h",
        "https://localhost.example.cd/h",
    ] {
        app.subscribe(url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_admits_only_what_it_names() {
    let app = start(
        EgressPolicy::allowing(["127.0.0.1", "10.0.0.0/8", "erp.local"])
            .unwrap()
            .into(),
    )
    .await;
    for url in [
        "http://127.0.0.1:9000/h",
        "http://2130706433:9000/h",
        "http://[::ffff:127.0.0.1]/h",
        "http://10.20.30.40/h",
        "http://ERP.local./h",
    ] {
        app.subscribe(url).await;
    }
    for url in [
        "http://127.0.0.2/h",
        "http://[::1]/h",
        "http://localhost/h",
        "http://192.168.0.1/h",
        "http://169.254.169.254/",
        "http://other.local/h",
    ] {
        let (status, v) = app.register(url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_allow_list_the_loopback_receiver_gets_the_delivery() {
    let rx = Listener::ok("127.0.0.1").await;
    let app = start(loopback_egress()).await;
    let id = app
        .subscribe(&format!("http://127.0.0.1:{}/h", rx.port()))
        .await;
    app.deliver("invoice.synced:o:1").await;
    assert_eq!(rx.connections(), 1);
    let log = app.log(&id).await;
    assert_eq!(log[0]["status"], "sent", "{log:?}");
    assert_eq!(log[0]["http_status"], 200, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_loopback_is_refused_at_delivery() {
    let rx = Listener::ok("127.0.0.1").await;
    // The name is public-looking, so registration accepts it; at delivery
    // it answers 127.0.0.1 (DNS rebinding).
    let url = format!("http://hooks.rebind.example.cd:{}/h", rx.port());
    let app = start(Egress::default().with_lookup(loopback_answer())).await;
    let id = app.subscribe(&url).await;
    app.deliver("invoice.synced:o:1").await;
    assert_eq!(rx.connections(), 0, "the receiver was contacted");
    let log = app.log(&id).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["status"], "failed");
    assert_eq!(log[0]["error"], NOT_ALLOWED);
    assert!(log[0].get("http_status").is_none(), "{log:?}");

    // The same name and receiver, once the operator allows 127.0.0.1: the
    // delivery goes through this resolver and arrives, so the refusal above
    // was the policy's, not a name that never resolved.
    let allowed = start(loopback_egress().with_lookup(loopback_answer())).await;
    let id = allowed.subscribe(&url).await;
    allowed.deliver("invoice.synced:o:2").await;
    assert_eq!(rx.connections(), 1);
    assert_eq!(allowed.log(&id).await[0]["status"], "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_stored_before_the_rule_are_refused_at_delivery() {
    // URLs registered before this check existed stay in the store; the
    // dispatcher refuses them itself, with the system resolver.
    let rx = Listener::ok("127.0.0.1").await;
    let app = start(Egress::default()).await;
    let mut ids = Vec::new();
    for url in [
        format!("http://localhost:{}/h", rx.port()),
        format!("http://127.0.0.1:{}/h", rx.port()),
        format!("http://2130706433:{}/h", rx.port()),
        format!("http://[::ffff:127.0.0.1]:{}/h", rx.port()),
    ] {
        let created = app
            .hooks
            .create_subscriber(
                NIF_A,
                &url,
                &[bonopay_server_example::server::webhooks::EventType::InvoiceSynced],
            )
            .unwrap()
            .unwrap();
        ids.push(created.webhook.id);
    }
    app.deliver("invoice.synced:o:1").await;
    assert_eq!(rx.connections(), 0, "the receiver was contacted");
    for id in ids {
        let log = app.log(&id).await;
        assert_eq!(log[0]["error"], NOT_ALLOWED, "{log:?}");
        assert!(log[0].get("http_status").is_none(), "{log:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_destination_says_the_same_whether_a_port_is_open_or_closed() {
    // What made the delivery log a port scanner: "the receiver answered
    // 401" for an open port, "Connection refused" for a closed one.
    let open = Listener::start("127.0.0.1", "HTTP/1.1 401 Unauthorized\r\n".into()).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = start(Egress::default()).await;
    let mut logs = Vec::new();
    for port in [open.port(), closed] {
        let id = app
            .hooks
            .create_subscriber(
                NIF_A,
                &format!("http://127.0.0.1:{port}/v1/keys"),
                &[bonopay_server_example::server::webhooks::EventType::InvoiceSynced],
            )
            .unwrap()
            .unwrap()
            .webhook
            .id;
        logs.push(id);
    }
    app.deliver("invoice.synced:o:1").await;
    assert_eq!(open.connections(), 0);
    let mut seen = Vec::new();
    for id in &logs {
        let a = app.log(id).await[0].clone();
        seen.push((a["error"].clone(), a.get("http_status").cloned()));
    }
    assert_eq!(seen[0], (json!(NOT_ALLOWED), None));
    assert_eq!(seen[0], seen[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_forbidden_destination_is_not_followed() {
    // 127.0.0.2 is loopback too, and not on the allow-list.
    let target = Listener::ok("127.0.0.2").await;
    let redirect = Listener::start(
        "127.0.0.1",
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.2:{}/h\r\n",
            target.port()
        ),
    )
    .await;
    let app = start(loopback_egress()).await;
    let id = app
        .subscribe(&format!("http://127.0.0.1:{}/h", redirect.port()))
        .await;
    app.deliver("invoice.synced:o:1").await;
    assert_eq!(redirect.connections(), 1);
    assert_eq!(target.connections(), 0, "the redirect was followed");
    let log = app.log(&id).await;
    assert_eq!(log[0]["status"], "failed");
    assert_eq!(log[0]["http_status"], 307);
}

// ----- the WhatsApp-style channel ----------------------------------------------

fn message() -> OutgoingMessage {
    OutgoingMessage {
        to: "+243812345678".into(),
        subject: "Reçu".into(),
        text: "Votre reçu".into(),
        filename: "recu.pdf".into(),
        document: b"%PDF-1.7".to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whatsapp_url_obeys_the_same_rules() {
    let rx = Listener::ok("127.0.0.1").await;
    let url = format!("http://127.0.0.1:{}/v1/messages", rx.port());

    // The operator's URL on loopback needs the allow-list: `bonopay serve`
    // refuses to start without it, saying where to allow it.
    let e = WhatsAppHttpChannel::new(&url, "t", &Egress::default()).unwrap_err();
    assert!(e.contains("egress.allow"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let config = DeliveriesConfig {
        whatsapp_url: Some(url.clone()),
        ..DeliveriesConfig::default()
    };
    assert!(deliveries(&config, &dir.path().join("auth.db"), &Egress::default()).is_err());

    // Allowed, it is used.
    let channel = WhatsAppHttpChannel::new(&url, "t", &loopback_egress()).unwrap();
    channel.send(&message()).await.unwrap();
    assert_eq!(rx.connections(), 1);

    // A name that resolves to loopback at send time is refused, unsent.
    let rebind = format!("http://wa.rebind.example.cd:{}/v1/messages", rx.port());
    let channel = WhatsAppHttpChannel::new(
        &rebind,
        "t",
        &Egress::default().with_lookup(loopback_answer()),
    )
    .unwrap();
    match channel.send(&message()).await {
        Err(DeliveryError::Unreachable(e)) => assert_eq!(e, NOT_ALLOWED),
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.connections(), 1, "the receiver was contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whatsapp_channel_follows_no_redirect() {
    let target = Listener::ok("127.0.0.2").await;
    let redirect = Listener::start(
        "127.0.0.1",
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.2:{}/v1/messages\r\n",
            target.port()
        ),
    )
    .await;
    let url = format!("http://127.0.0.1:{}/v1/messages", redirect.port());
    let channel = WhatsAppHttpChannel::new(&url, "t", &loopback_egress()).unwrap();
    match channel.send(&message()).await {
        Err(DeliveryError::Rejected(e)) => assert!(e.contains("307"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(redirect.connections(), 1);
    assert_eq!(target.connections(), 0, "the redirect was followed");
}

// ----- configuration -----------------------------------------------------------

#[test]
fn the_allow_list_is_read_from_config_json_and_the_environment() {
    let config: Config = serde_json::from_value(json!({
        "nid": "N", "time_zone": "Africa/Kinshasa",
        "egress": {"allow": ["127.0.0.1", "10.0.0.0/8", "erp.local"]}
    }))
    .unwrap();
    let policy = config.egress.policy().unwrap();
    assert!(policy.check_url("http://10.1.2.3/h").is_ok());
    assert!(policy.check_url("http://erp.local/h").is_ok());
    assert!(policy.check_url("http://192.168.1.1/h").is_err());

    // Unknown members and bad entries are refused, not ignored.
    assert!(
        serde_json::from_value::<Config>(json!({
            "nid": "N", "time_zone": "Africa/Kinshasa", "egress": {"alow": []}
        }))
        .is_err()
    );
    let bad: Config = serde_json::from_value(json!({
        "nid": "N", "time_zone": "Africa/Kinshasa", "egress": {"allow": ["10.0.0.0/40"]}
    }))
    .unwrap();
    assert!(bad.egress.policy().is_err());

    // The environment replaces the list.
    let mut c = config.clone();
    c.apply_env(|k| (k == "BONOPAY_EGRESS_ALLOW").then(|| "192.168.0.0/16".to_owned()))
        .unwrap();
    let policy = c.egress.policy().unwrap();
    assert!(policy.check_url("http://192.168.1.1/h").is_ok());
    assert!(policy.check_url("http://10.1.2.3/h").is_err());

    // Without the member: public internet only, and a default config
    // file does not gain one.
    let default = Config::default();
    assert!(
        default
            .egress
            .policy()
            .unwrap()
            .check_url("http://10.1.2.3/")
            .is_err()
    );
    assert!(
        serde_json::to_value(&default)
            .unwrap()
            .get("egress")
            .is_none()
    );
}
