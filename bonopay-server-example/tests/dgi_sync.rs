//! End to end: the real `bonopay serve` pointed at the e-MCF simulator
//! (`BONOPAY_DGI_URL`, `BONOPAY_DGI_TOKEN`) uploads what it seals, shows
//! each invoice's DGI elements and the sync health, and tells a webhook
//! receiver, with a verified signature, that each invoice was synced.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use common::*;
use serde_json::{Value, json};

type Got = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

#[test]
fn the_server_uploads_to_the_dgi_and_reports_it() {
    let rt = runtime();
    let (sim, sim_url) = sim_on_loopback(&rt);

    // A webhook receiver that records what it gets.
    let got: Got = Arc::default();
    let recv = {
        let got = Arc::clone(&got);
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let got = Arc::clone(&got);
                async move {
                    got.lock().unwrap().push((headers, body.to_vec()));
                    "ok"
                }
            }),
        )
    };
    let hook_listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let hook_url = format!("http://{}/hook", hook_listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(hook_listener, recv).await });

    let dir = tempfile::tempdir().unwrap();
    let token = sim.issue_token(3600);
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("BONOPAY_DGI_URL", sim_url.as_str()),
            ("BONOPAY_DGI_TOKEN", token.as_str()),
            // The webhook receiver listens on loopback.
            ("BONOPAY_EGRESS_ALLOW", "127.0.0.1"),
        ],
    );
    let key = server.owner(NIF_A);
    let http = reqwest::blocking::Client::new();
    let hook: Value = http
        .post(format!("{}/v1/webhooks", server.base))
        .bearer_auth(&key)
        .json(&json!({"url": hook_url, "events": ["invoice.synced"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let secret = hook["secret"].as_str().unwrap().to_owned();

    let mut ids = Vec::new();
    for i in 0..3 {
        let r: Value = http
            .post(format!("{}/v1/invoices", server.base))
            .bearer_auth(&key)
            .header("idempotency-key", format!("sync-{i}"))
            .json(&example())
            .send()
            .unwrap()
            .json()
            .unwrap();
        ids.push(r["id"].as_str().unwrap().to_owned());
    }

    // Wait (not a performance assertion: a liveness bound) for the agent.
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let v: Value = http
                .get(format!("{}/v1/invoices/{id}/dgi", server.base))
                .bearer_auth(&key)
                .send()
                .unwrap()
                .json()
                .unwrap();
            if v["state"] == "synced" {
                assert_eq!(v["dgi"]["codeDEFDGI"].as_str().unwrap().len(), 24);
                assert_eq!(v["ours"], v["theirs"]);
                break;
            }
            assert!(Instant::now() < deadline, "{id} never synced: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(sim.confirms().len(), 3);
    assert!(sim.double_confirms().is_empty());
    let health: Value = http
        .get(format!("{}/v1/sync/health", server.base))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["health"], "green", "{health}");
    assert_eq!(health["outlets"][0]["counts"]["synced"], 3);
    let other: Value = http
        .get(format!("{}/v1/outlets/{OUTLET_A}/sync", server.base))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(other["outlets"][0]["outlet"], OUTLET_A);
    // Requeue is for dead letters only.
    let r = http
        .post(format!(
            "{}/v1/invoices/{}/dgi/requeue",
            server.base, ids[0]
        ))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);

    // The webhook: one signed invoice.synced per invoice.
    loop {
        if got.lock().unwrap().len() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "webhooks never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut seen = Vec::new();
    for (headers, body) in got.lock().unwrap().iter() {
        let sig = headers["bonopay-signature"].to_str().unwrap();
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        bonopay_sync::webhook::verify(secret.as_bytes(), sig, body, now, 300).unwrap();
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["type"], "invoice.synced");
        seen.push(v["data"]["id"].as_str().unwrap().to_owned());
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);
    drop(server);
}
