//! Webhooks and receipt deliveries on PostgreSQL: both storage suites,
//! migrations, and several server instances over one database — two
//! webhook services producing and dispatching at once against a real
//! loopback receiver (every event delivered exactly once per subscriber,
//! none lost), a crashed instance's claim taken over after the lease, and
//! the API answering the same subscribers, webhook logs and receipt
//! deliveries whichever instance serves the request.
//!
//! Needs a PostgreSQL server: `postgres://postgres@127.0.0.1:5432/postgres`
//! by default, or the admin URL in `BONOPAY_TEST_PG`. Every test creates
//! databases of its own (`bonopay_ledger::TestDb`), dropped afterwards. An
//! unreachable server fails the tests: they never skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode};
use bonopay_ledger::{LedgerStore, PgStore, TestDb};
use bonopay_server_example::cli::serve::bootstrap;
use bonopay_server_example::datadir::{MerchantConfig, OutletConfig};
use bonopay_server_example::server::auth::postgres::PgKeyStore;
use bonopay_server_example::server::auth::{ApiKeyStore, Outlet};
use bonopay_server_example::server::deliveries::postgres::{
    self as deliveries_pg, PgDeliveryStore,
};
use bonopay_server_example::server::deliveries::{
    BoxFuture, Deliveries, DeliveryError, MessagingChannel, OutgoingMessage,
    conformance as delivery_conformance,
};
use bonopay_server_example::server::webhooks::conformance as webhooks_conformance;
use bonopay_server_example::server::webhooks::postgres::{self as webhooks_pg, PgWebhookStore};
use bonopay_server_example::server::webhooks::{
    EventType, RetryPolicy, RunSummary, WebhookError, WebhookStore, Webhooks,
};
use bonopay_server_example::server::{AppState, router};
use bonopay_signer::{
    Clock, Fiscalizer, FiscalizerConfig, ManualClock, SoftwareSigner, SystemClock,
};
use common::*;
use postgres::{Client, NoTls};
use receiver::{FailFirst, Receiver};
use serde_json::{Value, json};

const OUTLETS: [&str; 2] = [OUTLET_A, OUTLET_A2];

// ----- the storage suites ------------------------------------------------------

#[test]
fn postgres_webhook_store_conforms() {
    let dbs = Mutex::new(Vec::new());
    webhooks_conformance::run_all(&|| {
        let db = TestDb::create().unwrap();
        let store = Arc::new(PgWebhookStore::connect(&db.url).unwrap());
        dbs.lock().unwrap().push(db);
        store
    });
}

#[test]
fn postgres_webhook_store_shared_by_several_handles() {
    let db = TestDb::create().unwrap();
    webhooks_conformance::shared_database(&|| {
        Arc::new(PgWebhookStore::connect(&db.url).unwrap()) as Arc<dyn WebhookStore>
    });
}

#[test]
fn postgres_delivery_store_conforms() {
    let dbs = Mutex::new(Vec::new());
    delivery_conformance::run_all(&|| {
        let db = TestDb::create().unwrap();
        let store = Arc::new(PgDeliveryStore::connect(&db.url).unwrap());
        dbs.lock().unwrap().push(db);
        store
    });
}

#[test]
fn postgres_delivery_store_shared_by_several_handles() {
    let db = TestDb::create().unwrap();
    delivery_conformance::shared_database(&|| Arc::new(PgDeliveryStore::connect(&db.url).unwrap()));
}

#[test]
fn instances_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let db = TestDb::create().unwrap();
    let start = Arc::new(Barrier::new(8));
    let connects: Vec<_> = (0..8)
        .map(|i| {
            let (url, start) = (db.url.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                if i % 2 == 0 {
                    PgWebhookStore::connect(&url)
                        .unwrap()
                        .schema_version()
                        .unwrap()
                } else {
                    PgDeliveryStore::connect(&url)
                        .unwrap()
                        .schema_version()
                        .unwrap()
                }
            })
        })
        .collect();
    for (i, c) in connects.into_iter().enumerate() {
        let expected = if i % 2 == 0 {
            webhooks_pg::SCHEMA_VERSION
        } else {
            deliveries_pg::SCHEMA_VERSION
        };
        assert_eq!(c.join().unwrap(), expected);
    }
    let mut c = Client::connect(&db.url, NoTls).unwrap();
    for (table, version) in [
        ("webhook_schema_version", webhooks_pg::SCHEMA_VERSION),
        (
            "receipt_delivery_schema_version",
            deliveries_pg::SCHEMA_VERSION,
        ),
    ] {
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(n, i64::from(version), "{table}: one row per version");
    }
    c.execute(
        "INSERT INTO webhook_schema_version (version) VALUES ($1)",
        &[&(webhooks_pg::SCHEMA_VERSION + 1)],
    )
    .unwrap();
    match PgWebhookStore::connect(&db.url) {
        Err(WebhookError::Storage(m)) => assert!(m.contains("newer"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn register_outlets(keys: &dyn ApiKeyStore) {
    for o in OUTLETS {
        keys.insert_outlet(&Outlet {
            id: o.into(),
            merchant_nif: NIF_A.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        })
        .unwrap();
    }
}

fn fiscalizer(url: &str, signer: &Arc<SoftwareSigner>) -> Fiscalizer {
    Fiscalizer::new(
        Arc::new(PgStore::connect(url, 2).unwrap()),
        Arc::clone(signer) as Arc<_>,
        FiscalizerConfig::new("NID-TEST-01"),
    )
}

/// One server instance's view: its own webhook service, ledger and key
/// store handles on the shared database.
struct Instance {
    hooks: Webhooks,
    ledger: Arc<dyn LedgerStore>,
    keys: Arc<dyn ApiKeyStore>,
}

impl Instance {
    fn new(url: &str, policy: RetryPolicy) -> Self {
        Self {
            hooks: Webhooks::postgres(url)
                .unwrap()
                .with_egress(loopback_egress())
                .unwrap()
                .with_policy(policy),
            ledger: Arc::new(PgStore::connect(url, 2).unwrap()),
            keys: Arc::new(PgKeyStore::connect_with_pool_size(url, 2).unwrap()),
        }
    }

    /// Runs the producer and dispatcher until `stop`, as `bonopay serve`
    /// does (every 10 ms here); the sum of what the runs did.
    async fn drive(&self, stop: Arc<AtomicBool>) -> RunSummary {
        let mut total = RunSummary::default();
        while !stop.load(Ordering::SeqCst) {
            let s = self
                .hooks
                .run_once(Arc::clone(&self.ledger), Arc::clone(&self.keys))
                .await
                .unwrap();
            total.events += s.events;
            total.sent += s.sent;
            total.failed += s.failed;
            total.dead += s.dead;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        total
    }
}

// ----- several instances ------------------------------------------------------------

/// Two instances produce and dispatch at once while invoices are sealed
/// and both enqueue the same `invoice.synced` events (as both instances'
/// sync pumps would): every event is enqueued once, each subscriber gets
/// each of its events exactly once answered 2xx, a first attempt refused
/// with 500 is retried exactly once, and the logs (read through the other
/// instance) hold exactly the attempts the receiver saw.
#[test]
fn two_instances_produce_and_dispatch_each_event_exactly_once() {
    const INVOICES: u64 = 24;
    let db = TestDb::create().unwrap();
    let rt = runtime();
    // Every fourth invoice's events are refused once, per subscriber.
    let fail_first: FailFirst = Arc::new(|event_id: &str| {
        event_id
            .rsplit(':')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|seq| seq % 4 == 0)
    });
    let rx = rt.block_on(Receiver::start_failing_first(
        Arc::new(SystemClock),
        fail_first.clone(),
    ));
    let policy = RetryPolicy {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        max_attempts: 12,
        timeout: Duration::from_secs(5),
    };
    let a = Arc::new(Instance::new(&db.url, policy));
    let b = Arc::new(Instance::new(&db.url, policy));
    register_outlets(&*a.keys);
    let all = a
        .hooks
        .create_subscriber(NIF_A, &rx.url("all"), &EventType::ALL)
        .unwrap()
        .unwrap();
    rx.set_secret("all", &all.secret);
    let sealed_only = b
        .hooks
        .create_subscriber(NIF_A, &rx.url("sealed"), &[EventType::InvoiceSealed])
        .unwrap()
        .unwrap();
    rx.set_secret("sealed", &sealed_only.secret);

    let stop = Arc::new(AtomicBool::new(false));
    let drivers: Vec<_> = [&a, &b]
        .into_iter()
        .map(|i| {
            let (i, stop) = (Arc::clone(i), Arc::clone(&stop));
            rt.spawn(async move { i.drive(stop).await })
        })
        .collect();

    // Seal while both instances run; then both enqueue every invoice's
    // `invoice.synced` at once.
    let signer = Arc::new(SoftwareSigner::generate().unwrap());
    let f = fiscalizer(&db.url, &signer);
    let mut sealed = Vec::new();
    for n in 0..INVOICES {
        let outlet = OUTLETS[usize::try_from(n % 2).unwrap()];
        let req = bonopay_core::parse_invoice(&invoice_for(NIF_A, outlet).to_string()).unwrap();
        let s = f.seal(&req, &format!("w-{n}").parse().unwrap()).unwrap();
        sealed.push(format!("{outlet}:{}", s.seq));
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = Arc::new(Barrier::new(2));
    let enqueued: usize = [&a, &b]
        .into_iter()
        .map(|i| {
            let (i, start, sealed) = (Arc::clone(i), Arc::clone(&start), sealed.clone());
            std::thread::spawn(move || {
                start.wait();
                sealed
                    .iter()
                    .filter(|id| {
                        i.hooks
                            .enqueue_event(
                                &format!("invoice.synced:{id}"),
                                NIF_A,
                                "invoice.synced",
                                json!({ "id": id }),
                            )
                            .unwrap()
                    })
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    assert_eq!(
        enqueued,
        sealed.len(),
        "each invoice.synced enqueued once by the two instances"
    );

    // Expected: "all" gets sealed + synced, "sealed" gets sealed only.
    let mut expected: BTreeMap<(String, String), Vec<u16>> = BTreeMap::new();
    for id in &sealed {
        for (path, kind) in [
            ("all", "invoice.sealed"),
            ("all", "invoice.synced"),
            ("sealed", "invoice.sealed"),
        ] {
            let event_id = format!("{kind}:{id}");
            let answers = if fail_first(&event_id) {
                vec![500, 200]
            } else {
                vec![200]
            };
            expected.insert((path.to_owned(), event_id), answers);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while rx.ok_count() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} deliveries arrived",
            rx.ok_count(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let both go on a while: nothing more may arrive.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let summaries: Vec<RunSummary> = drivers
        .into_iter()
        .map(|d| rt.block_on(d).unwrap())
        .collect();

    let got = rx.got();
    assert!(
        got.iter().all(|g| g.verified.is_ok()),
        "every request signed"
    );
    let mut seen: BTreeMap<(String, String), Vec<u16>> = BTreeMap::new();
    for g in &got {
        seen.entry((g.path.clone(), g.event_id.clone()))
            .or_default()
            .push(g.answered);
    }
    assert_eq!(
        seen, expected,
        "each event exactly once per subscriber, a refused first attempt retried once, nothing else"
    );
    let refused = expected.values().filter(|a| a.len() == 2).count();
    let total = |f: fn(&RunSummary) -> usize| summaries.iter().map(f).sum::<usize>();
    assert_eq!(
        total(|s| s.events),
        sealed.len(),
        "each ledger entry produced once: {summaries:?}"
    );
    assert_eq!(total(|s| s.sent), expected.len(), "{summaries:?}");
    assert_eq!(total(|s| s.failed), refused, "{summaries:?}");
    assert_eq!(total(|s| s.dead), 0);
    eprintln!("per instance: {summaries:?}");

    // The logs, read through the instance that did not create the subscriber.
    for (sub, path, reader) in [(&all, "all", &b), (&sealed_only, "sealed", &a)] {
        let log = reader
            .hooks
            .delivery_log(NIF_A, &sub.webhook.id, 1000)
            .unwrap()
            .unwrap();
        let requests = got.iter().filter(|g| g.path == path).count();
        assert_eq!(log.len(), requests, "{path}: one log row per request");
        assert!(log.iter().all(|r| r.delivery_state
            == bonopay_server_example::server::webhooks::DeliveryState::Delivered));
    }
    drop(rt);
}

/// A claimant that dies mid-send never records: the delivery stays with
/// it for the lease, then another instance sends it, once.
#[test]
fn a_crashed_instance_claim_is_taken_over_after_the_lease() {
    let db = TestDb::create().unwrap();
    let rt = runtime();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now().timestamp_millis()));
    let rx = rt.block_on(Receiver::start(Arc::clone(&clock) as Arc<dyn Clock>));
    let open = || {
        Webhooks::postgres(&db.url)
            .unwrap()
            .with_egress(loopback_egress())
            .unwrap()
            .with_clock(Arc::clone(&clock) as Arc<dyn Clock>)
    };
    let crashed = open();
    let survivor = open();
    let sub = crashed
        .create_subscriber(NIF_A, &rx.url("h"), &EventType::ALL)
        .unwrap()
        .unwrap();
    rx.set_secret("h", &sub.secret);
    assert!(
        crashed
            .enqueue_event("invoice.synced:o:1", NIF_A, "invoice.synced", json!({}))
            .unwrap()
    );
    // The crashed instance claims (as dispatch_due does, for the default
    // policy's lease) and dies before sending or recording anything. The
    // lease is within the DGI outbox's takeover bound, so every queue of
    // the server hands a dead instance's work on within the same time.
    let lease = i64::try_from(
        bonopay_server_example::server::webhooks::RetryPolicy::default()
            .lease()
            .as_millis(),
    )
    .unwrap();
    assert!(lease <= bonopay_sync::dgi::outbox::postgres::DEFAULT_TAKEOVER_GRACE_MS);
    let now = clock.now_ms();
    assert_eq!(
        crashed
            .store()
            .claim_due(now, now + lease, 32)
            .unwrap()
            .len(),
        1
    );
    drop(crashed);

    let run = |w: &Webhooks| rt.block_on(w.dispatch_due()).unwrap();
    assert_eq!(
        run(&survivor),
        RunSummary::default(),
        "claimed by the dead one"
    );
    clock.advance(lease - 1);
    assert_eq!(
        run(&survivor),
        RunSummary::default(),
        "still within its lease"
    );
    clock.advance(1);
    assert_eq!(run(&survivor).sent, 1, "taken over when the lease ends");
    assert_eq!(run(&survivor), RunSummary::default());
    let got = rx.got();
    assert_eq!(got.len(), 1, "sent once");
    assert!(got[0].verified.is_ok());
    let log = survivor
        .delivery_log(NIF_A, &sub.webhook.id, 10)
        .unwrap()
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].attempt, 1);
    drop(survivor);
    drop(rt);
}

/// Accepts every message (the receipt channel is not under test here).
#[derive(Debug)]
struct Accept;

impl MessagingChannel for Accept {
    fn send<'a>(&'a self, _: &'a OutgoingMessage) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Two routers, as two instances behind a load balancer, over one
/// database: a subscriber created through one is listed, logged and
/// deleted through the other; a receipt sent through one is listed by the
/// other.
#[test]
fn every_instance_answers_the_same_subscribers_logs_and_receipts() {
    let db = TestDb::create().unwrap();
    let rt = runtime();
    let rx = rt.block_on(Receiver::start(Arc::new(SystemClock)));
    let signer = Arc::new(SoftwareSigner::generate().unwrap());
    let keys = PgKeyStore::connect(&db.url).unwrap();
    let merchant = MerchantConfig {
        nif: NIF_A.into(),
        name: Some("Merchant A".into()),
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
    drop(keys);
    let instance = || {
        let hooks = Webhooks::postgres(&db.url)
            .unwrap()
            .with_egress(loopback_egress())
            .unwrap();
        let keys: Arc<dyn ApiKeyStore> = Arc::new(PgKeyStore::connect(&db.url).unwrap());
        let deliveries = Deliveries::new(Arc::new(PgDeliveryStore::connect(&db.url).unwrap()))
            .with_messaging(Arc::new(Accept));
        let state = AppState::new(Arc::new(fiscalizer(&db.url, &signer)), keys)
            .with_webhooks(hooks.clone())
            .with_deliveries(deliveries);
        (router(state), hooks)
    };
    let (one, hooks_one) = instance();
    let (two, _hooks_two) = instance();
    let req = bonopay_core::parse_invoice(&example().to_string()).unwrap();
    let seq = fiscalizer(&db.url, &signer)
        .seal(&req, &"r-1".parse().unwrap())
        .unwrap()
        .seq;
    let invoice = format!("{OUTLET_A}:{seq}");

    rt.block_on(async {
        let call = |r: &Router, m: Method, uri: String, body: Option<Value>| {
            let (r, owner) = (r.clone(), owner.clone());
            async move { call_router(&r, m, &uri, &owner, body).await }
        };
        let (status, created) = call(
            &one,
            Method::POST,
            "/v1/webhooks".into(),
            Some(json!({"url": rx.url("h")})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["webhook"]["id"].as_str().unwrap().to_owned();
        rx.set_secret("h", created["secret"].as_str().unwrap());
        let (status, listed) = call(&two, Method::GET, "/v1/webhooks".into(), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listed, json!([created["webhook"]]), "the same subscriber");

        let keys: Arc<dyn ApiKeyStore> = Arc::new(
            tokio::task::spawn_blocking({
                let url = db.url.clone();
                move || PgKeyStore::connect(&url).unwrap()
            })
            .await
            .unwrap(),
        );
        let ledger: Arc<dyn LedgerStore> = Arc::new(
            tokio::task::spawn_blocking({
                let url = db.url.clone();
                move || PgStore::connect(&url, 2).unwrap()
            })
            .await
            .unwrap(),
        );
        let s = hooks_one.run_once(ledger, keys).await.unwrap();
        assert_eq!((s.events, s.sent), (1, 1), "{s:?}");
        let (status, log) = call(
            &two,
            Method::GET,
            format!("/v1/webhooks/{id}/deliveries"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
        assert_eq!(log[0]["event_id"], format!("invoice.sealed:{invoice}"));
        assert_eq!(log[0]["status"], "sent");

        let (status, sent) = call(
            &one,
            Method::POST,
            format!("/v1/invoices/{invoice}/deliveries"),
            Some(json!({"channel": "whatsapp", "to": "+243812345678"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{sent}");
        let (status, receipts) = call(
            &two,
            Method::GET,
            format!("/v1/invoices/{invoice}/deliveries"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            receipts,
            json!([sent]),
            "the receipt sent through the other"
        );

        let (status, _) = call(&two, Method::DELETE, format!("/v1/webhooks/{id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, listed) = call(&one, Method::GET, "/v1/webhooks".into(), None).await;
        assert_eq!((status, listed), (StatusCode::OK, json!([])));
        let (status, _) = call(
            &one,
            Method::GET,
            format!("/v1/webhooks/{id}/deliveries"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "deleted for every instance");
    });
    assert_eq!(rx.got().len(), 1);
    drop((one, two, hooks_one));
    drop(rt);
}
