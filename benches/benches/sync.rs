//! Load run: invoices synced per second through the e-MCF simulator over
//! loopback HTTP (issue 7), with no faults and with the chaos mix (10 %
//! of calls failing before acting, 10 % acting and losing the answer).
//!
//! Each run seals `BONOPAY_SYNC_N` invoices (default 5000) into a fresh
//! SQLite ledger in `/var/tmp` (not measured), then times one agent
//! draining the outbox: POST, totals check, CONFIRM, and four durable
//! outbox updates per invoice. Run: `cargo bench -p bonopay-benches --bench sync`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bonopay_core::parse_invoice;
use bonopay_ledger::{Durability, LedgerStore, SqliteOptions, SqliteStore};
use bonopay_signer::{AwsLcSigner, Fiscalizer, FiscalizerConfig, SoftwareSigner};
use bonopay_sync::dgi::agent::{AgentConfig, SplitMix, SyncAgent};
use bonopay_sync::dgi::http::HttpDgiTransport;
use bonopay_sync::dgi::outbox::sqlite::SqliteOutbox;
use bonopay_sync::dgi::outbox::{ItemState, OutboxStore};
use bonopay_sync::sim::{Faults, SimConfig, Simulator, SystemClock};

fn run(n: usize, faults: Faults, label: &str) {
    let tmp = tempfile::tempdir_in(
        std::env::var("BONOPAY_BENCH_TMP").unwrap_or_else(|_| "/var/tmp".into()),
    )
    .unwrap();
    let path = tmp.path().join("ledger.db");
    {
        let store = SqliteStore::open_with(
            &path,
            SqliteOptions {
                durability: Durability::Normal,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        let pem = SoftwareSigner::generate().unwrap().to_pkcs8_pem().unwrap();
        let f = Fiscalizer::new(
            Arc::new(store) as Arc<dyn LedgerStore>,
            Arc::new(AwsLcSigner::from_pkcs8_pem(&pem).unwrap()),
            FiscalizerConfig::new("NID-BENCH"),
        );
        for i in 0..n {
            let q = 1 + i % 5;
            let req = format!(
                r#"{{"merchant_nif":"A1309334L","outlet_id":"kin-01","pos_terminal_id":"t","cashier":{{"id":"c","name":"C"}},
                "invoice_type":"FV","price_mode":"TTC","client":{{"type":"PP"}},
                "items":[{{"code":"A","kind":"BIE","name":"A","unit_price":"1160","quantity":"{q}","tax_group":"B"}},
                         {{"code":"R","kind":"BIE","name":"R","unit_price":"64800","quantity":"1","tax_group":"C"}}],
                "payments":[{{"method":"ESPECES","amount":"{}"}}]}}"#,
                1160 * q + 64800
            );
            f.seal(
                &parse_invoice(&req).unwrap(),
                &format!("k{i}").parse().unwrap(),
            )
            .unwrap();
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim = Simulator::new(SimConfig::default(), Arc::new(SystemClock));
    sim.set_faults(faults);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(Arc::clone(&sim).serve(listener));
    let ledger: Arc<dyn LedgerStore> = Arc::new(SqliteStore::open(&path).unwrap());
    let outbox: Arc<dyn OutboxStore> = Arc::new(SqliteOutbox::open(&path).unwrap());
    let agent = SyncAgent::with(
        ledger,
        Arc::clone(&outbox),
        Arc::new(
            HttpDgiTransport::new(&base, &sim.issue_token(3600), Duration::from_secs(5)).unwrap(),
        ),
        Arc::new(SystemClock),
        Box::new(SplitMix::new(1)),
        AgentConfig {
            backoff_base_ms: 5,
            backoff_cap_ms: 100,
            max_attempts: 10_000,
            batch: 500,
            ..AgentConfig::default()
        },
    );
    let t = Instant::now();
    let debug = std::env::var_os("BONOPAY_SYNC_DEBUG").is_some();
    loop {
        let r = agent.run_once().unwrap();
        if debug {
            eprintln!("{r:?} {:?}", sim.stats());
        }
        // Nothing left that is not final (the due index, not a full scan).
        let open = outbox.due(i64::MAX, 1).unwrap().len();
        if open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = t.elapsed();
    let secs = elapsed.as_secs_f64();
    let per_sec = (n as u128 * 1000) / elapsed.as_millis().max(1);
    let synced = outbox.summary().unwrap()[0]
        .counts
        .get(&ItemState::Synced)
        .copied()
        .unwrap_or(0);
    let stats = sim.stats();
    assert_eq!(synced as usize, n);
    assert!(sim.double_confirms().is_empty());
    println!(
        "{label}: {n} invoices synced in {secs:.2} s = {per_sec}/s; confirms {}, double confirms 0, pending {}, faults injected {}",
        stats.confirmed, stats.pending, stats.faults_injected
    );
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("BONOPAY_SYNC_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 5000 } else { 200 });
    run(n, Faults::default(), "no faults");
    run(
        n,
        Faults {
            error_rate: 100,
            drop_rate: 100,
            seed: 7,
            ..Faults::default()
        },
        "20% faults",
    );
}
