//! Webhooks against a real HTTP receiver on loopback (an axum server in the
//! test process that checks every signature with
//! `bonopay_sync::webhook::verify`). The API is driven in process through
//! the router; the producer and dispatcher run by explicit `run_once` calls
//! on an injected `ManualClock`, so retries are reached by advancing the
//! clock, never by sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bonopay_ledger::{LedgerStore, SqliteStore};
use bonopay_server_example::cli::serve::bootstrap;
use bonopay_server_example::datadir::{MerchantConfig, OutletConfig};
use bonopay_server_example::server::auth::{ApiKeyStore, SqliteKeyStore};
use bonopay_server_example::server::webhooks::{
    Jitter, RetryPolicy, RunSummary, WebhookError, Webhooks,
};
use bonopay_server_example::server::{AppState, router};
use bonopay_signer::{Clock, Fiscalizer, FiscalizerConfig, ManualClock, SoftwareSigner};
use bonopay_sync::webhook::{REPLAY_WINDOW_SECS, WebhookSignatureError, verify};
use common::*;
use receiver::Receiver;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Always the largest jitter: each retry waits the full exponential step
/// (5 s, 10 s, 20 s, …), so the test knows when it is due.
#[derive(Debug)]
struct FullStep;

impl Jitter for FullStep {
    fn jitter_ms(&self, max_ms: u64) -> u64 {
        max_ms
    }
}

struct App {
    router: Router,
    hooks: Webhooks,
    fiscalizer: Arc<Fiscalizer>,
    ledger: Arc<dyn LedgerStore>,
    keys: Arc<dyn ApiKeyStore>,
    clock: Arc<ManualClock>,
    owner_a: String,
    owner_b: String,
    dir: tempfile::TempDir,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn open_hooks(dir: &std::path::Path, clock: &Arc<ManualClock>, policy: RetryPolicy) -> Webhooks {
    Webhooks::open(&dir.join("auth.db"))
        .unwrap()
        .with_egress(loopback_egress())
        .unwrap()
        .with_clock(Arc::clone(clock) as Arc<dyn Clock>)
        .with_jitter(Arc::new(FullStep))
        .with_policy(policy)
}

fn app_with(policy: RetryPolicy) -> App {
    let dir = tempfile::tempdir().unwrap();
    let ledger: Arc<dyn LedgerStore> =
        Arc::new(SqliteStore::open(dir.path().join("ledger.db")).unwrap());
    let signer = Arc::new(SoftwareSigner::generate().unwrap());
    let fiscalizer = Arc::new(Fiscalizer::new(
        Arc::clone(&ledger),
        signer,
        FiscalizerConfig::new("NID-TEST-01"),
    ));
    let keys = SqliteKeyStore::open(&dir.path().join("auth.db")).unwrap();
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
    let keys: Arc<dyn ApiKeyStore> = Arc::new(keys);
    let clock = Arc::new(ManualClock::new(now_ms()));
    let hooks = open_hooks(dir.path(), &clock, policy);
    let state =
        AppState::new(Arc::clone(&fiscalizer), Arc::clone(&keys)).with_webhooks(hooks.clone());
    App {
        router: router(state),
        hooks,
        fiscalizer,
        ledger,
        keys,
        clock,
        owner_a: tokens[0].1.clone(),
        owner_b: tokens[1].1.clone(),
        dir,
    }
}

fn app() -> App {
    app_with(RetryPolicy::default())
}

impl App {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call_router(&self.router, method, uri, key, body).await
    }

    async fn run(&self) -> RunSummary {
        self.run_with(&self.hooks).await
    }

    async fn run_with(&self, hooks: &Webhooks) -> RunSummary {
        hooks
            .run_once(Arc::clone(&self.ledger), Arc::clone(&self.keys))
            .await
            .unwrap()
    }

    fn advance(&self, d: Duration) {
        self.clock.advance(i64::try_from(d.as_millis()).unwrap());
    }

    /// Seals the example invoice for merchant A; returns the API's answer.
    async fn seal(&self, idem: &str) -> Value {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/invoices")
            .header("authorization", format!("Bearer {}", self.owner_a))
            .header("idempotency-key", idem)
            .body(Body::from(serde_json::to_vec(&example()).unwrap()))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Registers a subscriber at `url`; returns (id, secret).
    async fn subscribe(&self, url: &str, events: Option<&[&str]>) -> (String, String) {
        let mut body = json!({ "url": url });
        if let Some(e) = events {
            body["events"] = json!(e);
        }
        let (status, v) = self
            .call(Method::POST, "/v1/webhooks", &self.owner_a, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        (
            v["webhook"]["id"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        )
    }

    async fn log(&self, id: &str) -> Vec<Value> {
        let (status, v) = self
            .call(
                Method::GET,
                &format!("/v1/webhooks/{id}/deliveries"),
                &self.owner_a,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v.as_array().unwrap().clone()
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

fn ms_of(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

// ----- tests ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_invoices_and_z_reports_are_delivered_signed_and_once() {
    let app = app();
    let rx = Receiver::start(app.clock.clone()).await;
    let (all_id, all_secret) = app.subscribe(&rx.url("all"), None).await;
    rx.set_secret("all", &all_secret);
    let (z_id, z_secret) = app
        .subscribe(&rx.url("z-only"), Some(&["report.z_closed"]))
        .await;
    rx.set_secret("z-only", &z_secret);
    assert!(all_secret.starts_with("whsec_"));
    assert_ne!(all_secret, z_secret);

    // Listed without secrets.
    let (status, list) = app
        .call(Method::GET, "/v1/webhooks", &app.owner_a, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(
        !text.contains(&all_secret) && !text.contains("secret"),
        "{text}"
    );
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["id"], all_id.as_str());
    assert_eq!(
        list[0]["events"],
        json!([
            "invoice.sealed",
            "invoice.synced",
            "invoice.certified",
            "invoice.sync_failed",
            "report.z_closed"
        ])
    );
    assert_eq!(list[1]["events"], json!(["report.z_closed"]));

    let invoice = app.seal("w-1").await;
    assert_eq!(invoice["id"], "kin-gombe-01:1");
    let s = app.run().await;
    assert_eq!((s.events, s.sent, s.failed), (1, 1, 0), "{s:?}");

    let got = rx.got();
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.path, "all");
    assert_eq!(g.verified, Ok(()));
    assert_eq!(g.timestamp, app.clock.now_ms().div_euclid(1000));
    assert_eq!(g.event_id, "invoice.sealed:kin-gombe-01:1");
    assert_eq!(g.event_type, "invoice.sealed");
    assert_eq!(g.body["id"], "invoice.sealed:kin-gombe-01:1");
    assert_eq!(g.body["type"], "invoice.sealed");
    assert_eq!(g.body["merchant_nif"], NIF_A);
    let se = &invoice["security_elements"];
    assert_eq!(
        g.body["data"],
        json!({
            "id": "kin-gombe-01:1",
            "outlet": OUTLET_A,
            "seq": 1,
            "fiscal_number": se["fiscal_number"],
            "authentication_code": se["authentication_code"],
            "timestamp": se["timestamp"],
            "total": invoice["tax"]["dgi"]["total"],
            "vtotal": invoice["tax"]["dgi"]["vtotal"],
        })
    );
    assert_eq!(g.body["data"]["fiscal_number"], "1/1 FV");
    assert!(
        g.body["data"]["total"].is_string(),
        "money as a decimal string"
    );
    // The same signature with another secret, or a tampered body, fails.
    let header = bonopay_sync::webhook::sign(all_secret.as_bytes(), g.timestamp, &g.raw);
    assert_eq!(
        verify(
            b"whsec_wrong",
            &header,
            &g.raw,
            g.timestamp,
            REPLAY_WINDOW_SECS
        ),
        Err(WebhookSignatureError::BadSignature)
    );

    // Nothing new: nothing sent, however often it runs.
    for _ in 0..3 {
        assert_eq!(app.run().await, RunSummary::default());
    }
    assert_eq!(rx.got().len(), 1);

    // A Z report reaches both subscribers.
    let (status, z) = app
        .call(
            Method::POST,
            &format!("/v1/outlets/{OUTLET_A}/reports/z"),
            &app.owner_a,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{z}");
    let z_seq = z["sealed"]["seq"].as_u64().unwrap();
    let s = app.run().await;
    assert_eq!((s.events, s.sent), (1, 2), "{s:?}");
    for path in ["all", "z-only"] {
        let got = rx.got_at(path);
        let g = got.last().unwrap();
        assert_eq!(g.verified, Ok(()), "{path}");
        assert_eq!(g.event_type, "report.z_closed");
        assert_eq!(g.event_id, format!("report.z_closed:{OUTLET_A}:{z_seq}"));
        assert_eq!(g.body["data"]["outlet"], OUTLET_A);
        assert_eq!(g.body["data"]["seq"], z_seq);
        assert_eq!(g.body["data"]["z_number"], 1);
        assert_eq!(g.body["data"]["timestamp"], z["report"]["timestamp"]);
    }
    assert_eq!(
        rx.got_at("z-only").len(),
        1,
        "no invoice for a Z-only subscriber"
    );
    assert_eq!(rx.got().len(), 3);

    // The logs, newest first.
    let log = app.log(&all_id).await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["event_type"], "report.z_closed");
    assert_eq!(log[1]["event_id"], "invoice.sealed:kin-gombe-01:1");
    for row in &log {
        assert_eq!(row["attempt"], 1);
        assert_eq!(row["status"], "sent");
        assert_eq!(row["http_status"], 200);
        assert_eq!(row["delivery_state"], "delivered");
        assert!(row.get("error").is_none() && row.get("next_attempt_at").is_none());
    }
    assert_eq!(app.log(&z_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_retries_with_backoff_then_succeeds() {
    let app = app();
    let rx = Receiver::start(app.clock.clone()).await;
    let (id, secret) = app.subscribe(&rx.url("h"), None).await;
    rx.set_secret("h", &secret);
    rx.fail_next.store(3, Ordering::SeqCst);
    app.seal("r-1").await;

    // Attempt 1 fails; the retry is due 5 s later (full step, FullStep jitter).
    let s = app.run().await;
    assert_eq!((s.events, s.sent, s.failed), (1, 0, 1), "{s:?}");
    let log = app.log(&id).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "failed");
    assert_eq!(log[0]["http_status"], 500);
    assert!(log[0]["error"].as_str().unwrap().contains("500"));
    assert_eq!(log[0]["delivery_state"], "pending");
    let next = ms_of(log[0]["next_attempt_at"].as_str().unwrap());
    assert_eq!(
        next - ms_of(log[0]["completed_at"].as_str().unwrap()),
        5_000
    );

    // Not due yet: nothing is sent, however often it runs.
    assert_eq!(app.run().await, RunSummary::default());
    app.advance(Duration::from_millis(4_999));
    assert_eq!(app.run().await, RunSummary::default());
    assert_eq!(rx.got().len(), 1);

    // Due: attempt 2 fails, then 10 s; attempt 3 fails, then 20 s.
    let expected_steps = [10_000, 20_000];
    app.advance(Duration::from_millis(1));
    for (i, step) in expected_steps.iter().enumerate() {
        let s = app.run().await;
        assert_eq!((s.sent, s.failed), (0, 1), "attempt {}", i + 2);
        let last = &app.log(&id).await[0];
        assert_eq!(last["attempt"], i + 2);
        let next = ms_of(last["next_attempt_at"].as_str().unwrap());
        assert_eq!(next - ms_of(last["completed_at"].as_str().unwrap()), *step);
        app.advance(Duration::from_millis(u64::try_from(*step).unwrap() - 1));
        assert_eq!(app.run().await, RunSummary::default(), "early");
        app.advance(Duration::from_millis(1));
    }
    // Attempt 4 succeeds.
    let s = app.run().await;
    assert_eq!((s.sent, s.failed), (1, 0));
    assert_eq!(app.run().await, RunSummary::default());

    let log = app.log(&id).await;
    let attempts: Vec<_> = log.iter().map(|r| r["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [4, 3, 2, 1], "every attempt, newest first");
    let statuses: Vec<_> = log.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["sent", "failed", "failed", "failed"]);
    let http: Vec<_> = log
        .iter()
        .map(|r| r["http_status"].as_u64().unwrap())
        .collect();
    assert_eq!(http, [200, 500, 500, 500]);
    assert!(log.iter().all(|r| r["delivery_state"] == "delivered"));
    assert!(
        log.iter()
            .all(|r| r["event_id"] == "invoice.sealed:kin-gombe-01:1")
    );

    // The receiver saw the same event and body four times, each signed anew.
    let got = rx.got();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|g| g.verified.is_ok()));
    assert!(
        got.iter()
            .all(|g| g.raw == got[0].raw && g.event_id == got[0].event_id)
    );
    let answered: Vec<_> = got.iter().map(|g| g.answered).collect();
    assert_eq!(answered, [500, 500, 500, 200]);
    assert!(got.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_die_after_the_attempt_budget_and_timeouts_count_as_failures() {
    let app = app_with(RetryPolicy {
        max_attempts: 3,
        timeout: Duration::from_millis(300),
        ..RetryPolicy::default()
    });
    let rx = Receiver::start(app.clock.clone()).await;
    let (down, _) = app
        .subscribe(&format!("http://127.0.0.1:{}/h", closed_port()), None)
        .await;
    let (slow, _) = app.subscribe(&rx.url("slow"), None).await;
    app.seal("d-1").await;

    let mut dead = 0;
    for _ in 0..10 {
        let s = app.run().await;
        dead += s.dead;
        assert_eq!(s.sent, 0);
        app.advance(Duration::from_secs(3600));
    }
    assert_eq!(dead, 2);
    for id in [&down, &slow] {
        let log = app.log(id).await;
        assert_eq!(log.len(), 3, "three attempts, no more: {log:?}");
        assert!(log.iter().all(|r| r["status"] == "failed"));
        assert!(log.iter().all(|r| r["delivery_state"] == "dead"));
        assert!(log.iter().all(|r| r.get("http_status").is_none()));
        assert!(
            log[0].get("next_attempt_at").is_none(),
            "the last one schedules nothing"
        );
        assert!(log[1]["next_attempt_at"].is_string());
    }
    let timeout = app.log(&slow).await[0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(timeout.contains("no answer within 300 ms"), "{timeout}");
    let refused = app.log(&down).await[0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!refused.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_pending_deliveries_and_never_resends_delivered_ones() {
    let app = app();
    let rx = Receiver::start(app.clock.clone()).await;
    let (id, secret) = app.subscribe(&rx.url("h"), None).await;
    rx.set_secret("h", &secret);

    app.seal("s-1").await;
    assert_eq!(app.run().await.sent, 1);
    rx.fail_next.store(1, Ordering::SeqCst);
    app.seal("s-2").await;
    assert_eq!(app.run().await.failed, 1);
    // Sealed, but the server stops before the producer sees it.
    app.seal("s-3").await;

    // Restart: a new service over the same auth.db, and the ledger reopened.
    let ledger: Arc<dyn LedgerStore> =
        Arc::new(SqliteStore::open(app.dir.path().join("ledger.db")).unwrap());
    let restarted = open_hooks(app.dir.path(), &app.clock, RetryPolicy::default());
    app.advance(Duration::from_secs(3600));
    let s = restarted
        .run_once(Arc::clone(&ledger), Arc::clone(&app.keys))
        .await
        .unwrap();
    assert_eq!((s.events, s.sent, s.failed), (1, 2, 0), "{s:?}");
    let s = restarted
        .run_once(Arc::clone(&ledger), Arc::clone(&app.keys))
        .await
        .unwrap();
    assert_eq!(s, RunSummary::default());

    let mut per_event: HashMap<String, Vec<u16>> = HashMap::new();
    for g in rx.got() {
        assert_eq!(g.verified, Ok(()));
        per_event.entry(g.event_id).or_default().push(g.answered);
    }
    assert_eq!(per_event.len(), 3);
    assert_eq!(per_event["invoice.sealed:kin-gombe-01:1"], [200]);
    assert_eq!(per_event["invoice.sealed:kin-gombe-01:2"], [500, 200]);
    assert_eq!(per_event["invoice.sealed:kin-gombe-01:3"], [200]);

    // The log, read through a server built on the restarted service.
    let router2 = router(
        AppState::new(Arc::clone(&app.fiscalizer), Arc::clone(&app.keys))
            .with_webhooks(restarted.clone()),
    );
    let (status, log) = call_router(
        &router2,
        Method::GET,
        &format!("/v1/webhooks/{id}/deliveries"),
        &app.owner_a,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 4);
    let second: Vec<_> = log
        .iter()
        .filter(|r| r["event_id"] == "invoice.sealed:kin-gombe-01:2")
        .map(|r| {
            (
                r["attempt"].as_u64().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(second, [(2, "sent"), (1, "failed")]);

    // The old service, still around, finds nothing to do either.
    assert_eq!(app.run().await, RunSummary::default());
    assert_eq!(rx.got().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_only_merchant_isolation_and_validation() {
    let app = app();
    let (status, v) = app
        .call(
            Method::POST,
            "/v1/keys",
            &app.owner_a,
            Some(json!({"role": "cashier", "outlets": [OUTLET_A]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let cashier = v["token"].as_str().unwrap().to_owned();
    let (_, v) = app
        .call(
            Method::POST,
            "/v1/keys",
            &app.owner_a,
            Some(json!({"role": "auditor"})),
        )
        .await;
    let auditor = v["token"].as_str().unwrap().to_owned();

    let (id, _) = app.subscribe("https://erp.example.cd/hooks", None).await;
    let deliveries = format!("/v1/webhooks/{id}/deliveries");
    let one = format!("/v1/webhooks/{id}");

    // Cashier and auditor keys: 403 everywhere.
    for key in [&cashier, &auditor] {
        for (method, uri, body) in [
            (
                Method::POST,
                "/v1/webhooks",
                Some(json!({"url": "https://x.cd/h"})),
            ),
            (Method::GET, "/v1/webhooks", None),
            (Method::DELETE, one.as_str(), None),
            (Method::GET, deliveries.as_str(), None),
        ] {
            let (status, v) = app.call(method.clone(), uri, key, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {v}");
        }
    }
    // Another merchant: sees none, and 404 on A's subscriber.
    let (status, list) = app
        .call(Method::GET, "/v1/webhooks", &app.owner_b, None)
        .await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));
    for (method, uri) in [(Method::DELETE, &one), (Method::GET, &deliveries)] {
        let (status, v) = app.call(method, uri, &app.owner_b, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["error"]["code"], "not_found");
    }

    // A delivery-log page outside 1..=1000: 400, as documented.
    for limit in ["0", "1001", "many"] {
        let (status, v) = app
            .call(
                Method::GET,
                &format!("{deliveries}?limit={limit}"),
                &app.owner_a,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={limit}: {v}");
        assert_eq!(v["error"]["code"], "invalid_query");
    }
    let (status, _) = app
        .call(
            Method::GET,
            &format!("{deliveries}?limit=1000"),
            &app.owner_a,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Bad URLs and event types: 422 naming the field.
    for (body, path, code) in [
        (
            json!({"url": "ftp://erp.example.cd/h"}),
            "url",
            "invalid_url",
        ),
        (json!({"url": "erp.example.cd/h"}), "url", "invalid_url"),
        (
            json!({"url": "https://user:pw@erp.example.cd/h"}),
            "url",
            "invalid_url",
        ),
        (json!({"url": "javascript:alert(1)"}), "url", "invalid_url"),
        (
            json!({"url": "https://erp.example.cd/h", "events": ["invoice.paid"]}),
            "events[0]",
            "unknown_event",
        ),
        (
            json!({"url": "https://erp.example.cd/h", "events": []}),
            "events",
            "empty",
        ),
    ] {
        let (status, v) = app
            .call(
                Method::POST,
                "/v1/webhooks",
                &app.owner_a,
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["details"][0]["path"], path, "{v}");
        assert_eq!(v["error"]["details"][0]["code"], code, "{v}");
    }
    let (status, v) = app
        .call(
            Method::POST,
            "/v1/webhooks",
            &app.owner_a,
            Some(json!({"url": "https://erp.example.cd/h", "secret": "mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // Delete: 204, then gone (404), and it receives nothing more.
    let (status, _) = app.call(Method::DELETE, &one, &app.owner_a, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (method, uri) in [(Method::DELETE, &one), (Method::GET, &deliveries)] {
        let (status, _) = app.call(method, uri, &app.owner_a, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    app.seal("v-1").await;
    let s = app.run().await;
    assert_eq!((s.events, s.sent, s.failed), (1, 0, 0));

    // At most 16 subscribers per merchant.
    for i in 0..16 {
        app.subscribe(&format!("https://erp.example.cd/h{i}"), None)
            .await;
    }
    let (status, v) = app
        .call(
            Method::POST,
            "/v1/webhooks",
            &app.owner_a,
            Some(json!({"url": "https://erp.example.cd/one-too-many"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "too_many_webhooks");

    // A server without the webhook service: 503.
    let bare = router(AppState::new(
        Arc::clone(&app.fiscalizer),
        Arc::clone(&app.keys),
    ));
    let (status, v) = call_router(&bare, Method::GET, "/v1/webhooks", &app.owner_a, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");

    // The endpoints are in the OpenAPI document.
    let doc = serde_json::to_value(bonopay_server_example::server::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths["/v1/webhooks"]["post"].is_object());
    assert!(paths["/v1/webhooks"]["get"].is_object());
    assert!(paths["/v1/webhooks/{id}"]["delete"].is_object());
    assert!(paths["/v1/webhooks/{id}/deliveries"]["get"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_event_is_idempotent_and_reaches_matching_subscribers_only() {
    let app = app();
    let rx = Receiver::start(app.clock.clone()).await;
    let (_, all) = app.subscribe(&rx.url("all"), None).await;
    rx.set_secret("all", &all);
    let (_, sealed_only) = app
        .subscribe(&rx.url("sealed-only"), Some(&["invoice.sealed"]))
        .await;
    rx.set_secret("sealed-only", &sealed_only);

    let data = json!({"id": "kin-gombe-01:1", "dgi_reference": "DGI-123"});
    let id = "invoice.synced:kin-gombe-01:1";
    assert!(
        app.hooks
            .enqueue_event(id, NIF_A, "invoice.synced", data.clone())
            .unwrap()
    );
    for again in [data.clone(), json!({"other": true})] {
        assert!(
            !app.hooks
                .enqueue_event(id, NIF_A, "invoice.synced", again)
                .unwrap(),
            "the same event id is enqueued once"
        );
    }
    // Another merchant's event reaches none of A's subscribers.
    assert!(
        app.hooks
            .enqueue_event(
                "invoice.sync_failed:lub-01:1",
                NIF_B,
                "invoice.sync_failed",
                json!({})
            )
            .unwrap()
    );
    assert!(matches!(
        app.hooks
            .enqueue_event("x:1", NIF_A, "invoice.paid", json!({})),
        Err(WebhookError::UnknownEventType(_))
    ));

    let s = app.run().await;
    assert_eq!((s.sent, s.failed), (1, 0), "{s:?}");
    let got = rx.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "all");
    assert_eq!(got[0].verified, Ok(()));
    assert_eq!(got[0].event_type, "invoice.synced");
    assert_eq!(got[0].event_id, id);
    assert_eq!(got[0].body["data"], data);
    assert_eq!(got[0].body["merchant_nif"], NIF_A);

    // Enqueued again after delivery: still nothing new.
    assert!(
        !app.hooks
            .enqueue_event(id, NIF_A, "invoice.synced", data)
            .unwrap()
    );
    assert_eq!(app.run().await, RunSummary::default());
    assert_eq!(rx.got().len(), 1);
}
