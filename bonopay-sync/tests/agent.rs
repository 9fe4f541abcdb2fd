//! The DGI sync agent against the e-MCF simulator over real loopback HTTP,
//! with a real SQLite ledger and outbox; faults are injected by the
//! simulator and by `FaultyTransport` layered over the real HTTP transport.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bonopay_core::parse_invoice;
use bonopay_ledger::{LedgerStore, SqliteStore};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, SoftwareSigner};
use bonopay_sync::agent::{AgentConfig, ManualSyncClock, SplitMix, SyncAgent, SyncClock};
use bonopay_sync::dgi::{DgiInvoiceState, DgiTransport};
use bonopay_sync::faulty::{Fault, FaultyTransport, Op};
use bonopay_sync::health::{self, Health, HealthThresholds};
use bonopay_sync::http::HttpDgiTransport;
use bonopay_sync::outbox::{ItemState, OutboxStore};
use bonopay_sync::sim::{Faults, SimConfig, Simulator};
use bonopay_sync::sqlite_outbox::SqliteOutbox;
use serde_json::json;

const OUTLET: &str = "kin-gombe-01";

/// The simulator on a loopback port, served from a background runtime.
pub struct Sim {
    pub sim: Arc<Simulator>,
    pub base: String,
    pub token: String,
    _rt: tokio::runtime::Runtime,
}

pub fn start_sim(config: SimConfig) -> Sim {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = Simulator::new(config, Arc::new(bonopay_sync::sim::SystemClock));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(Arc::clone(&sim).serve(listener));
    let token = sim.issue_token(3600);
    Sim {
        sim,
        base,
        token,
        _rt: rt,
    }
}

fn sale(n: usize) -> bonopay_core::InvoiceRequest {
    let q = 1 + n % 3;
    let total = 1160 * q + 64800;
    parse_invoice(
        &json!({
            "merchant_nif": "A1309334L", "outlet_id": OUTLET, "pos_terminal_id": "till-1",
            "cashier": {"id": "c-07", "name": "Mbuyi"}, "invoice_type": "FV", "price_mode": "TTC",
            "client": {"type": "PP"},
            "items": [
                {"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": q.to_string(), "tax_group": "B"},
                {"code": "RIZ", "kind": "BIE", "name": "Riz", "unit_price": "64800", "quantity": "1", "tax_group": "C"}
            ],
            "payments": [{"method": "ESPECES", "amount": total.to_string()}]
        })
        .to_string(),
    )
    .unwrap()
}

fn reduction() -> bonopay_core::InvoiceRequest {
    parse_invoice(
        &json!({
            "merchant_nif": "A1309334L", "outlet_id": OUTLET, "pos_terminal_id": "till-1",
            "cashier": {"id": "c-07", "name": "Mbuyi"}, "invoice_type": "FA", "price_mode": "TTC",
            "client": {"type": "PP"},
            "items": [{"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": "1", "tax_group": "B"}],
            "payments": [{"method": "ESPECES", "amount": "1160"}],
            "credit_note": {"reference": "RRR", "nature": "RRR"}
        })
        .to_string(),
    )
    .unwrap()
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub ledger: Arc<dyn LedgerStore>,
    pub outbox: Arc<dyn OutboxStore>,
    pub fiscalizer: Fiscalizer,
    pub clock: Arc<ManualSyncClock>,
}

pub fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger: Arc<dyn LedgerStore> = Arc::new(SqliteStore::open(&path).unwrap());
    let outbox: Arc<dyn OutboxStore> = Arc::new(SqliteOutbox::open(&path).unwrap());
    let fiscalizer = Fiscalizer::new(
        Arc::clone(&ledger),
        Arc::new(SoftwareSigner::generate().unwrap()),
        FiscalizerConfig::new("NID-TEST"),
    );
    Rig {
        dir,
        ledger,
        outbox,
        fiscalizer,
        clock: Arc::new(ManualSyncClock::new(1_800_000_000_000)),
    }
}

impl Rig {
    fn seal(&self, n: usize) {
        for i in 0..n {
            let key = format!("k{}-{i}", self.ledger.head(OUTLET).unwrap().seq);
            self.fiscalizer.seal(&sale(i), &key).unwrap();
        }
    }

    fn agent(&self, transport: Arc<dyn DgiTransport>) -> SyncAgent {
        SyncAgent::with(
            Arc::clone(&self.ledger),
            Arc::clone(&self.outbox),
            transport,
            self.clock.clone(),
            Box::new(SplitMix(7)),
            AgentConfig::default(),
        )
    }

    fn states(&self) -> BTreeMap<ItemState, usize> {
        let mut m = BTreeMap::new();
        for s in self.outbox.summary().unwrap() {
            for (k, v) in s.counts {
                *m.entry(k).or_default() += usize::try_from(v).unwrap();
            }
        }
        m
    }

    /// Runs the agent until nothing is due, moving the clock past backoffs.
    fn drain(&self, agent: &SyncAgent) {
        for _ in 0..200 {
            agent.run_once().unwrap();
            let open: usize = self
                .states()
                .iter()
                .filter(|(k, _)| !k.is_final())
                .map(|(_, v)| v)
                .sum();
            if open == 0 {
                return;
            }
            self.clock.advance(20 * 60 * 1000);
        }
        panic!("the outbox never drained: {:?}", self.states());
    }
}

fn http(sim: &Sim) -> HttpDgiTransport {
    HttpDgiTransport::new(&sim.base, &sim.token, Duration::from_secs(10)).unwrap()
}

fn confirms_per_rn(sim: &Sim) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in sim.sim.confirms() {
        *m.entry(c.rn).or_default() += 1;
    }
    m
}

#[test]
fn invoices_and_credit_notes_are_synced_with_the_dgi_elements() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(4);
    r.fiscalizer.seal(&reduction(), "rrr").unwrap();
    let agent = r.agent(Arc::new(http(&sim)));
    let report = agent.run_once().unwrap();
    assert_eq!(report.enqueued, 5);
    assert_eq!(report.synced, 5, "{report:?}");
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Synced);
    let c = item.confirmation.unwrap();
    assert_eq!(c.code_def_dgi.len(), 24);
    assert_eq!(c.counters, "1/1 FV");
    assert!(c.qr_code.starts_with("RDCDEF01;"), "{}", c.qr_code);
    let fa = r.outbox.get(OUTLET, 5).unwrap().unwrap();
    assert_eq!(fa.confirmation.unwrap().counters, "1/5 FA");
    // Our totals and the DGI's agreed.
    assert_eq!(fa.theirs, Some(fa.ours));
    assert_eq!(fa.ours.total.to_string(), "1160.00");
    assert_eq!(fa.ours.vtotal.to_string(), "160.00");
    assert!(sim.sim.double_confirms().is_empty());
    assert_eq!(sim.sim.stats().pending, 0);
    // Nothing new: nothing more is sent.
    let again = agent.run_once().unwrap();
    assert_eq!((again.enqueued, again.synced), (0, 0));
    assert_eq!(sim.sim.confirms().len(), 5);
    let h = health::judge(
        &r.outbox.summary().unwrap()[0],
        r.clock.now_ms(),
        &HealthThresholds::default(),
    );
    assert_eq!(h.health, Health::Green, "{h:?}");
}

#[test]
fn a_lost_post_answer_is_adopted_after_a_restart_not_posted_twice() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(1);
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    faulty.arm(Op::Submit, Fault::LoseAnswer);
    r.agent(faulty.clone()).run_once().unwrap();
    assert_eq!(
        r.outbox.get(OUTLET, 1).unwrap().unwrap().state,
        ItemState::Submitting
    );
    assert_eq!(sim.sim.stats().pending, 1, "the POST did arrive");
    // "Restart": a new agent over the same outbox.
    let agent = r.agent(Arc::new(http(&sim)));
    r.clock.advance(60_000);
    agent.run_once().unwrap();
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Synced, "{item:?}");
    assert_eq!(sim.sim.stats().posted, 1, "adopted, not posted again");
    assert_eq!(sim.sim.confirms().len(), 1);
    assert_eq!(sim.sim.stats().pending, 0);
}

#[test]
fn a_lost_confirm_answer_is_found_confirmed_and_never_confirmed_again() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(1);
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    faulty.arm(Op::Confirm, Fault::LoseAnswer);
    let agent = r.agent(faulty.clone());
    agent.run_once().unwrap();
    assert_eq!(
        r.outbox.get(OUTLET, 1).unwrap().unwrap().state,
        ItemState::Confirming
    );
    assert_eq!(sim.sim.confirms().len(), 1, "the confirm did happen");
    r.clock.advance(60_000);
    agent.run_once().unwrap();
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Synced);
    assert_eq!(
        item.confirmation.unwrap().code_def_dgi,
        sim.sim.confirms()[0].code
    );
    assert!(sim.sim.double_confirms().is_empty());
}

#[test]
fn a_crash_between_post_and_confirm_resumes_and_an_expired_uid_is_posted_again() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    // The CONFIRM never leaves (a crash right after storing `confirming`);
    // the uid is still pending on restart: it is confirmed then.
    r.seal(1);
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    faulty.arm(Op::Confirm, Fault::Unreachable);
    r.agent(faulty.clone()).run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Confirming), Some(&1));
    let agent = r.agent(Arc::new(http(&sim)));
    r.clock.advance(60_000);
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&1));
    assert_eq!(sim.sim.stats().posted, 1);

    // The same, but the uid expires before the restart: posted again.
    r.seal(1);
    faulty.arm(Op::Confirm, Fault::Unreachable);
    r.agent(faulty).run_once().unwrap();
    let uid2 = r.outbox.get(OUTLET, 2).unwrap().unwrap().uid.unwrap();
    assert_eq!(sim.sim.expire_all(), 1);
    r.clock.advance(60_000);
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&2));
    assert_eq!(
        sim.sim.details(&uid2).unwrap().status,
        DgiInvoiceState::Expired
    );
    assert_eq!(sim.sim.stats().posted, 3, "re-posted after expiry");
    assert_eq!(confirms_per_rn(&sim).values().copied().max(), Some(1));
    assert_eq!(sim.sim.confirms().len(), 2);
}

#[test]
fn totals_that_differ_are_cancelled_and_rejected_with_both_sets() {
    let sim = start_sim(SimConfig::default());
    sim.sim.set_faults(Faults {
        wrong_totals_rate: 1000,
        ..Faults::default()
    });
    let r = rig();
    r.seal(1);
    r.agent(Arc::new(http(&sim))).run_once().unwrap();
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Rejected);
    let err = item.error.unwrap();
    assert!(
        err.contains("ours total 65960.00 vtotal 4960.00") && err.contains("DGI total"),
        "{err}"
    );
    assert_eq!(sim.sim.stats().cancelled, 1);
    assert!(sim.sim.confirms().is_empty());
    let h = health::judge(
        &r.outbox.summary().unwrap()[0],
        r.clock.now_ms(),
        &HealthThresholds::default(),
    );
    assert_eq!(h.health, Health::Red);
}

#[test]
fn reconcile_cancels_orphans_and_the_pending_cap_is_respected() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(14);
    // Ten POSTs whose answers are lost: ten pending uids nobody knows.
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    for _ in 0..10 {
        faulty.arm(Op::Submit, Fault::LoseAnswer);
    }
    let agent = r.agent(faulty);
    agent.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Submitting), Some(&10));
    assert_eq!(
        r.states().get(&ItemState::Queued),
        Some(&4),
        "the cap of 10 in flight holds the rest back"
    );
    assert_eq!(sim.sim.stats().pending, 10);
    // On restart, reconciliation adopts all ten.
    let agent = r.agent(Arc::new(http(&sim)));
    let rec = agent.reconcile().unwrap();
    assert_eq!(rec.adopted.len(), 10);
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&14));
    assert_eq!(sim.sim.stats().posted, 14);
    // A POST that arrives late (its item already synced) is an orphan:
    // reconciliation cancels it.
    let late = r.outbox.get(OUTLET, 3).unwrap().unwrap();
    let orphan = http(&sim).submit(&late.request).unwrap();
    let rec = agent.reconcile().unwrap();
    assert_eq!(rec.cancelled, vec![orphan.uid.clone()]);
    assert_eq!(sim.sim.stats().pending, 0);
    assert!(sim.sim.double_confirms().is_empty());
}

/// Fails every POST of one invoice, before it reaches the DGI.
#[derive(Debug)]
struct Poison<T>(T, String);

impl<T: DgiTransport> DgiTransport for Poison<T> {
    fn status(&self) -> Result<bonopay_sync::dgi::DgiStatus, bonopay_sync::dgi::TransportError> {
        self.0.status()
    }
    fn submit(
        &self,
        i: &bonopay_sync::dgi::DgiInvoiceRequest,
    ) -> Result<bonopay_sync::dgi::DgiSubmitted, bonopay_sync::dgi::TransportError> {
        if i.rn == self.1 {
            return Err(bonopay_sync::dgi::TransportError::Unreachable(
                "poisoned".into(),
            ));
        }
        self.0.submit(i)
    }
    fn confirm(
        &self,
        u: &str,
        t: &bonopay_sync::dgi::DgiTotals,
    ) -> Result<bonopay_sync::dgi::DgiConfirmation, bonopay_sync::dgi::TransportError> {
        self.0.confirm(u, t)
    }
    fn cancel(&self, u: &str) -> Result<(), bonopay_sync::dgi::TransportError> {
        self.0.cancel(u)
    }
    fn details(
        &self,
        u: &str,
    ) -> Result<bonopay_sync::dgi::DgiInvoiceDetails, bonopay_sync::dgi::TransportError> {
        self.0.details(u)
    }
}

#[test]
fn one_poisoned_invoice_backs_off_alone_until_dead_lettered() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(6);
    let agent = r.agent(Arc::new(Poison(http(&sim), format!("{OUTLET}:2"))));
    agent.run_once().unwrap();
    assert_eq!(
        r.states().get(&ItemState::Synced),
        Some(&5),
        "the rest went on"
    );
    let p = r.outbox.get(OUTLET, 2).unwrap().unwrap();
    assert_eq!((p.state, p.attempts), (ItemState::Queued, 1));
    assert!(p.next_attempt_ms > r.clock.now_ms());
    // More invoices keep flowing while it backs off.
    r.seal(2);
    agent.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Synced), Some(&7));
    // Until its budget is spent.
    let mut last_next = 0;
    for _ in 0..40 {
        r.clock.advance(20 * 60 * 1000);
        agent.run_once().unwrap();
        let p = r.outbox.get(OUTLET, 2).unwrap().unwrap();
        if p.state == ItemState::Dead {
            break;
        }
        assert!(p.next_attempt_ms >= last_next);
        last_next = p.next_attempt_ms;
    }
    let p = r.outbox.get(OUTLET, 2).unwrap().unwrap();
    assert_eq!(p.state, ItemState::Dead);
    assert_eq!(p.attempts, AgentConfig::default().max_attempts);
    // A person requeues it; it goes through once the DGI takes it.
    let healthy = r.agent(Arc::new(http(&sim)));
    healthy.requeue(OUTLET, 2).unwrap();
    healthy.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Synced), Some(&8));
    assert!(sim.sim.double_confirms().is_empty());
}

#[test]
fn backoff_doubles_with_jitter_and_respects_the_cap() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(1);
    let agent = SyncAgent::with(
        Arc::clone(&r.ledger),
        Arc::clone(&r.outbox),
        Arc::new(Poison(http(&sim), format!("{OUTLET}:1"))),
        r.clock.clone(),
        Box::new(SplitMix(1)),
        AgentConfig {
            backoff_base_ms: 1_000,
            backoff_cap_ms: 16_000,
            max_attempts: 100,
            ..AgentConfig::default()
        },
    );
    let mut waits = Vec::new();
    for _ in 0..8 {
        let now = r.clock.now_ms();
        agent.run_once().unwrap();
        let p = r.outbox.get(OUTLET, 1).unwrap().unwrap();
        waits.push(p.next_attempt_ms - now);
        r.clock.advance(p.next_attempt_ms - now);
    }
    // Attempt n waits between half and all of min(cap, base·2^(n-1)).
    for (n, w) in waits.iter().enumerate() {
        let full = (1_000i64 << n).min(16_000);
        assert!(
            *w >= full / 2 && *w < full,
            "attempt {}: {w} of {full}",
            n + 1
        );
    }
}

#[test]
fn items_in_flight_are_settled_before_queued_ones_so_a_full_cap_never_starves() {
    // Ten lost POSTs fill the cap, and more queued items than one batch
    // wait behind them: each pass must settle the in-flight ones first.
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(40);
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    for _ in 0..10 {
        faulty.arm(Op::Submit, Fault::LoseAnswer);
    }
    let agent = SyncAgent::with(
        Arc::clone(&r.ledger),
        Arc::clone(&r.outbox),
        faulty,
        r.clock.clone(),
        Box::new(SplitMix(3)),
        AgentConfig {
            batch: 5,
            ..AgentConfig::default()
        },
    );
    agent.run_once().unwrap();
    agent.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Submitting), Some(&10));
    r.clock.advance(60_000);
    agent.run_once().unwrap();
    assert!(
        !r.states().contains_key(&ItemState::Submitting),
        "the ten in flight were settled first: {:?}",
        r.states()
    );
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&40));
    assert_eq!(sim.sim.stats().posted, 40);
    assert!(sim.sim.double_confirms().is_empty());
}
