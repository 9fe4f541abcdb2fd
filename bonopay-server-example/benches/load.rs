//! Load benchmark of `POST /v1/invoices` over loopback.
//!
//! Starts the reference server (the same `router` `bonopay serve` runs, on
//! a fresh data directory: SQLite ledger with `synchronous=FULL`, software
//! P-256 key) on 127.0.0.1 with its own multi-threaded runtime, then drives
//! it from a separate runtime with `concurrency` HTTP clients, each sending
//! new invoices (a fresh `Idempotency-Key` each) round-robin over `outlets`
//! outlets, until `requests` answers have come back. Every answer must be
//! 201. Prints throughput and p50/p90/p99/max latency per scenario.
//!
//! ```sh
//! cargo bench -p bonopay-server-example --bench load
//! BONOPAY_LOAD_REQUESTS=5000 BONOPAY_LOAD_CONCURRENCY=32 cargo bench -p bonopay-server-example --bench load
//! ```
//!
//! Bounded: each scenario stops after `requests` answers or 60 seconds,
//! whichever comes first, and talks to loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
// Rates and milliseconds for the report only; no money here.
#![allow(clippy::float_arithmetic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bonopay_server_example::cli::serve::bootstrap;
use bonopay_server_example::datadir::{DataDir, MerchantConfig, OutletConfig};
use bonopay_server_example::server::auth::SqliteKeyStore;
use bonopay_server_example::server::{AppState, router};
use serde_json::Value;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Report {
    ok: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted[i.min(sorted.len() - 1)]
}

fn scenario(outlets: usize, concurrency: usize, requests: usize) -> Report {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open_or_init(&tmp.path().join("data")).unwrap();
    let merchant = MerchantConfig {
        nif: "A1309334L".into(),
        name: None,
        address: None,
        contact: None,
        outlets: (0..outlets)
            .map(|i| OutletConfig {
                id: format!("load-{i:02}"),
                time_zone: None,
                certification: None,
                mcf: None,
            })
            .collect(),
    };
    let keys = SqliteKeyStore::open(&dir.path.join("auth.db")).unwrap();
    let token = bootstrap(&keys, std::slice::from_ref(&merchant)).unwrap()[0]
        .1
        .clone();
    let state = AppState::new(Arc::new(dir.fiscalizer().unwrap()), Arc::new(keys));

    // The server: its own runtime, as in `bonopay serve`.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    server_rt.spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });

    let invoice: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/invoice.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..outlets)
            .map(|i| {
                let mut v = invoice.clone();
                v["outlet_id"] = format!("load-{i:02}").into();
                serde_json::to_vec(&v).unwrap()
            })
            .collect(),
    );

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let report = client_rt.block_on(async move {
        let client = reqwest::Client::new();
        let next = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(60);
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let client = client.clone();
                let next = Arc::clone(&next);
                let bodies = Arc::clone(&bodies);
                let url = format!("{base}/v1/invoices");
                let token = token.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= requests || Instant::now() > deadline {
                            break;
                        }
                        let t = Instant::now();
                        let r = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("Idempotency-Key", format!("load-{n}"))
                            .header("Content-Type", "application/json")
                            .body(bodies[n % bodies.len()].clone())
                            .send()
                            .await
                            .unwrap();
                        let status = r.status();
                        let _ = r.bytes().await.unwrap();
                        assert_eq!(status, reqwest::StatusCode::CREATED);
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
        Report {
            ok: latencies.len(),
            elapsed: start.elapsed(),
            latencies,
        }
    });
    drop(server_rt);
    report
}

fn main() {
    // `cargo test --benches` runs this with no `--bench`: keep it tiny then.
    let benching = std::env::args().any(|a| a == "--bench");
    let requests = env_usize("BONOPAY_LOAD_REQUESTS", if benching { 2000 } else { 20 });
    let concurrency = env_usize("BONOPAY_LOAD_CONCURRENCY", 16);
    println!(
        "POST /v1/invoices over loopback: {requests} requests, {concurrency} clients, \
         SQLite synchronous=FULL, software P-256 (p256)"
    );
    println!("| outlets | requests | throughput | p50 | p90 | p99 | max |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for outlets in [1, 8] {
        let mut r = scenario(outlets, concurrency, requests);
        r.latencies.sort_unstable();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {outlets} | {} | {:.0} req/s | {} | {} | {} | {} |",
            r.ok,
            r.ok as f64 / r.elapsed.as_secs_f64(),
            ms(percentile(&r.latencies, 50)),
            ms(percentile(&r.latencies, 90)),
            ms(percentile(&r.latencies, 99)),
            ms(r.latencies.last().copied().unwrap_or_default()),
        );
    }
}
