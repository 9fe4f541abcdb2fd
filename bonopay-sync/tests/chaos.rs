//! The chaos run: 1 000 sealed invoices uploaded through the e-MCF
//! simulator over loopback HTTP while it injects faults into 20 % of the
//! calls (10 % answered 500 before acting, 10 % acted on and then answered
//! 500, as if the response was lost), and the agent process is killed
//! (SIGKILL) and restarted mid-run, several times. At the end every invoice
//! is synced exactly once, the simulator's own record shows no double
//! confirm, nothing is left pending at the DGI, and the ledger holds one
//! certification per invoice, linked to it.
//!
//! A CONFIRM whose answer is lost cannot be settled by the agent: the
//! e-MCF reports a finalised invoice to nobody (`dgi-emcf.md` §8). Those
//! items are dead-lettered, and the test then does what a person does:
//! it looks each one up on the DGI's portal (the simulator's portal view)
//! and resolves it with the elements shown there, or requeues it when the
//! portal shows it was not certified.
//!
//! The agent is this test binary re-run as a child with `BONOPAY_CHAOS_CHILD`
//! set; the simulator lives in the parent, so its record outlives the kills.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bonopay_core::parse_invoice;
use bonopay_ledger::{LedgerStore, SqliteStore};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, SoftwareSigner};
use bonopay_sync::dgi::DgiInvoiceState;
use bonopay_sync::dgi::agent::{
    AgentConfig, CertificationRecorder, LOST_CONFIRM, SplitMix, SyncAgent, SystemClock,
};
use bonopay_sync::dgi::http::HttpDgiTransport;
use bonopay_sync::dgi::outbox::sqlite::SqliteOutbox;
use bonopay_sync::dgi::outbox::{ItemState, OutboxStore};
use bonopay_sync::sim::{Faults, SimConfig, Simulator};
use serde_json::json;

const CHILD: &str = "BONOPAY_CHAOS_CHILD";
const TEST: &str = "a_thousand_invoices_under_faults_and_kills_are_synced_exactly_once";
const N: usize = 1000;

fn open_open(path: &std::path::Path) -> (Arc<dyn LedgerStore>, Arc<dyn OutboxStore>) {
    (
        Arc::new(SqliteStore::open(path).unwrap()),
        Arc::new(SqliteOutbox::open(path).unwrap()),
    )
}

fn open_items(outbox: &dyn OutboxStore) -> u64 {
    outbox
        .summary()
        .unwrap()
        .iter()
        .flat_map(|s| s.counts.iter())
        .filter(|(k, _)| !k.is_final())
        .map(|(_, v)| *v)
        .sum()
}

fn agent(path: &std::path::Path, base: &str, token: &str) -> (SyncAgent, Arc<dyn OutboxStore>) {
    let (ledger, outbox) = open_open(path);
    let signer = SoftwareSigner::load(&path.with_file_name("seal.pem")).unwrap();
    let f = Arc::new(Fiscalizer::new(
        Arc::clone(&ledger),
        Arc::new(signer),
        FiscalizerConfig::new("NID-CHAOS"),
    ));
    let transport = HttpDgiTransport::new(base, token, Duration::from_secs(5)).unwrap();
    let agent = SyncAgent::with(
        ledger,
        Arc::clone(&outbox),
        Arc::new(transport),
        Arc::new(SystemClock),
        Box::new(SplitMix::new(std::process::id().into())),
        AgentConfig {
            backoff_base_ms: 5,
            backoff_cap_ms: 200,
            max_attempts: 10_000,
            ..AgentConfig::default()
        },
    )
    .recording_with(f as Arc<dyn CertificationRecorder>);
    (agent, outbox)
}

/// In the child: reconcile, then sync until nothing is open.
fn child() {
    let path = std::path::PathBuf::from(std::env::var("BONOPAY_CHAOS_DB").unwrap());
    let (agent, outbox) = agent(
        &path,
        &std::env::var("BONOPAY_CHAOS_BASE").unwrap(),
        &std::env::var("BONOPAY_CHAOS_TOKEN").unwrap(),
    );
    agent.reconcile().unwrap();
    loop {
        agent.run_once().unwrap();
        if open_items(&*outbox) == 0 && outbox.cursor("kin-01").unwrap() as usize >= N {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_thousand_invoices_under_faults_and_kills_are_synced_exactly_once() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let (ledger, outbox) = open_open(&path);
    let signer = SoftwareSigner::generate().unwrap();
    signer.save(&dir.path().join("seal.pem")).unwrap();
    let public = bonopay_signer::Signer::public_key(&signer).clone();
    let f = Fiscalizer::new(
        Arc::clone(&ledger),
        Arc::new(signer),
        FiscalizerConfig::new("NID-CHAOS"),
    );
    for i in 0..N {
        let q = 1 + i % 5;
        let req = json!({
            "merchant_nif": "A1309334L", "outlet_id": "kin-01", "pos_terminal_id": "t",
            "cashier": {"id": "c", "name": "C"}, "invoice_type": "FV", "price_mode": "TTC",
            "client": {"type": "PP"},
            "items": [{"code": "A", "kind": "BIE", "name": "A", "unit_price": "1160", "quantity": q.to_string(), "tax_group": "B"}],
            "payments": [{"method": "ESPECES", "amount": (1160 * q).to_string()}]
        });
        f.seal(
            &parse_invoice(&req.to_string()).unwrap(),
            &format!("k{i}").parse().unwrap(),
        )
        .unwrap();
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = Simulator::new(SimConfig::default(), Arc::new(SystemClock));
    sim.set_faults(Faults {
        latency_ms: 0,
        error_rate: 100,
        drop_rate: 100,
        wrong_totals_rate: 0,
        seed: 2026,
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(Arc::clone(&sim).serve(listener));
    let token = sim.issue_token(3600);

    let started = Instant::now();
    let mut kills = 0;
    let mut round = 0u64;
    let run_child = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--test-threads", "1", "--nocapture"])
            .env(CHILD, "1")
            .env("BONOPAY_CHAOS_DB", &path)
            .env("BONOPAY_CHAOS_BASE", &base)
            .env("BONOPAY_CHAOS_TOKEN", &token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap()
    };
    loop {
        round += 1;
        assert!(round < 100, "never finished");
        let mut child = run_child();
        if kills < 4 {
            // Kill it somewhere mid-run: after 150, 250, 350, 450 ms.
            std::thread::sleep(Duration::from_millis(150 + 100 * kills));
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success());
                break;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        } else {
            let status = child.wait().unwrap();
            assert!(status.success());
            break;
        }
    }
    // The person at the DGI portal: every dead letter is a lost CONFIRM
    // answer; resolve it with the portal's elements, or requeue it if the
    // portal shows it was not certified; then let an agent finish.
    let (operator, _) = agent(&path, &base, &token);
    let (mut resolved, mut requeued) = (0, 0);
    for _ in 0..10 {
        let mut dead = Vec::new();
        for seq in 1..=N as u64 {
            let item = outbox.get("kin-01", seq).unwrap().unwrap();
            if item.state == ItemState::Dead {
                dead.push(item);
            }
        }
        if dead.is_empty() {
            break;
        }
        for item in dead {
            let error = item.error.clone().unwrap_or_default();
            assert!(error.starts_with(LOST_CONFIRM), "{item:?}");
            let portal = sim.portal("A1309334L", Some(&item.request.rn));
            match portal
                .iter()
                .find(|p| p.status == DgiInvoiceState::Confirmed)
                .and_then(|p| p.elements.clone())
            {
                Some(elements) => {
                    operator.resolve("kin-01", item.seq, &elements).unwrap();
                    resolved += 1;
                }
                None => {
                    operator.requeue("kin-01", item.seq).unwrap();
                    requeued += 1;
                }
            }
        }
        if requeued > 0 {
            let status = run_child().wait().unwrap();
            assert!(status.success());
        }
    }
    let elapsed = started.elapsed();

    // Every invoice synced, once, with the DGI's elements.
    let mut synced = 0;
    let confirms = sim.confirms();
    let by_rn: BTreeMap<String, Vec<_>> = confirms.iter().fold(BTreeMap::new(), |mut m, c| {
        m.entry(c.rn.clone())
            .or_insert_with(Vec::new)
            .push(c.clone());
        m
    });
    for seq in 1..=N as u64 {
        let item = outbox.get("kin-01", seq).unwrap().unwrap();
        assert_eq!(item.state, ItemState::Synced, "{item:?}");
        let rec = &by_rn[&item.request.rn];
        assert_eq!(rec.len(), 1, "{} confirmed {} times", item.id(), rec.len());
        assert_eq!(item.confirmation.clone().unwrap().code_def_dgi, rec[0].code);
        // Bound into the ledger: the same code, linked to the sale.
        let cert = f.certification_of("kin-01", seq).unwrap().unwrap();
        assert_eq!(cert.elements.code_def_dgi, rec[0].code);
        synced += 1;
    }
    let report = bonopay_ledger::verify_store(
        &*ledger,
        "kin-01",
        &bonopay_signer::SignatureCheck::new(vec![public]),
    );
    assert!(report.is_valid(), "{:?}", report.error);
    assert_eq!(
        report.verified,
        2 * N as u64,
        "one sale and one certification each"
    );
    assert_eq!(synced, N);
    assert_eq!(confirms.len(), N, "no confirm beyond one per invoice");
    assert!(sim.double_confirms().is_empty());
    let stats = sim.stats();
    assert_eq!(stats.pending, 0, "no orphan left pending");
    assert!(kills >= 2, "only {kills} kills landed mid-run");
    assert!(
        stats.errors_injected + stats.drops_injected > 200,
        "faults injected: {stats:?}"
    );
    eprintln!(
        "chaos: {N} invoices certified exactly once in {:.1} s with {kills} agent kills; \
         {resolved} lost CONFIRM answers resolved from the portal, {requeued} requeued; simulator: {stats:?}",
        elapsed.as_secs_f64()
    );
}
