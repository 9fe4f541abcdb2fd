//! The DGI sync agent against the e-MCF simulator over real loopback HTTP,
//! with a real SQLite ledger and outbox; faults are injected by the
//! simulator and by `FaultyTransport` layered over the real HTTP transport.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bonopay_core::parse_invoice;
use bonopay_ledger::{LedgerStore, SqliteStore};
use bonopay_signer::certification::CertificationSource;
use bonopay_signer::{Fiscalizer, FiscalizerConfig, SoftwareSigner};
use bonopay_sync::dgi::agent::{
    AgentConfig, CertificationRecorder, Clock, LOST_CONFIRM, ManualClock, SplitMix, SyncAgent,
};
use bonopay_sync::dgi::faulty::{Fault, FaultyTransport, Op};
use bonopay_sync::dgi::health::{self, Health, HealthThresholds};
use bonopay_sync::dgi::http::HttpDgiTransport;
use bonopay_sync::dgi::outbox::sqlite::SqliteOutbox;
use bonopay_sync::dgi::outbox::{ItemState, OutboxStore};
use bonopay_sync::dgi::{DgiInvoiceState, DgiTransport};
use bonopay_sync::sim::{Faults, SimConfig, Simulator};
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
    pub fiscalizer: Arc<Fiscalizer>,
    pub clock: Arc<ManualClock>,
}

pub fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger: Arc<dyn LedgerStore> = Arc::new(SqliteStore::open(&path).unwrap());
    let outbox: Arc<dyn OutboxStore> = Arc::new(SqliteOutbox::open(&path).unwrap());
    let fiscalizer = Arc::new(Fiscalizer::new(
        Arc::clone(&ledger),
        Arc::new(SoftwareSigner::generate().unwrap()),
        FiscalizerConfig::new("NID-TEST"),
    ));
    Rig {
        dir,
        ledger,
        outbox,
        fiscalizer,
        clock: Arc::new(ManualClock::new(1_800_000_000_000)),
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
        .recording_with(Arc::clone(&self.fiscalizer) as Arc<dyn CertificationRecorder>)
    }

    /// The DGI code recorded in the ledger for the invoice at `seq`.
    fn certified(&self, seq: u64) -> Option<String> {
        self.fiscalizer
            .certification_of(OUTLET, seq)
            .unwrap()
            .map(|c| c.elements.code_def_dgi)
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
    let c = item.confirmation.clone().unwrap();
    assert_eq!(c.code_def_dgi.len(), 24);
    assert_eq!(c.counters, "1/1 FV");
    assert!(c.qr_code.starts_with("RDCDEF01;"), "{}", c.qr_code);
    // The elements are bound into the ledger, hash-linked to the sale, and
    // the whole chain still verifies with every link checked.
    assert_eq!(r.certified(1), Some(c.code_def_dgi.clone()));
    let cert = r.fiscalizer.certification_of(OUTLET, 1).unwrap().unwrap();
    assert_eq!(cert.source, CertificationSource::Emcf);
    assert_eq!(cert.rn, format!("{OUTLET}/2026/1"));
    assert_eq!(item.request.rn, cert.rn, "rn is the SFE number");
    let check =
        bonopay_signer::SignatureCheck::new(vec![r.fiscalizer.signer().public_key().clone()]);
    let report = bonopay_ledger::verify_store(&*r.ledger, OUTLET, &check);
    assert!(report.is_valid(), "{:?}", report.error);
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
fn a_lost_post_answer_is_found_by_rn_cancelled_and_posted_again_after_a_restart() {
    // The e-MCF's details echo the request (no totals, no state): the
    // pending uid with our rn is cancelled, and the invoice posted again.
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
    let s = sim.sim.stats();
    assert_eq!(
        (s.posted, s.cancelled, s.confirmed, s.pending),
        (2, 1, 1, 0)
    );
    assert_eq!(confirms_per_rn(&sim).get(&item.request.rn), Some(&1));
    assert!(r.certified(1).is_some());
}

#[test]
fn a_lost_confirm_answer_goes_to_a_person_who_resolves_it_from_the_dgi_portal() {
    // The e-MCF reports a confirmed invoice to nobody (details: error 20),
    // so the agent never guesses: a person reads the portal and enters the
    // elements, which are bound into the ledger as typed in (`operator`).
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
    assert_eq!(item.state, ItemState::Dead, "{item:?}");
    assert!(
        item.error.as_deref().unwrap().starts_with(LOST_CONFIRM),
        "{item:?}"
    );
    assert_eq!(r.certified(1), None);
    // More passes never confirm or post it again.
    for _ in 0..3 {
        r.clock.advance(20 * 60 * 1000);
        agent.run_once().unwrap();
    }
    assert_eq!(sim.sim.stats().posted, 1);
    // The portal shows it certified, with its elements.
    let portal = sim.sim.portal("A1309334L", Some(&item.request.rn));
    assert_eq!(portal.len(), 1);
    assert_eq!(portal[0].status, DgiInvoiceState::Confirmed);
    let elements = portal[0].elements.clone().unwrap();
    let done = agent.resolve(OUTLET, 1, &elements).unwrap();
    assert_eq!(done.state, ItemState::Synced);
    let cert = r.fiscalizer.certification_of(OUTLET, 1).unwrap().unwrap();
    assert_eq!(cert.elements, elements);
    assert_eq!(cert.source, CertificationSource::Operator);
    assert!(sim.sim.double_confirms().is_empty());
    // Resolving again is refused: it is no longer a dead letter.
    assert!(agent.resolve(OUTLET, 1, &elements).is_err());
}

#[test]
fn a_crash_between_post_and_confirm_resumes_and_an_expired_uid_is_posted_again() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    // The CONFIRM never leaves (connection refused): the item stays
    // `submitted`, and the uid, still pending on restart, is confirmed.
    r.seal(1);
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    faulty.arm(Op::Confirm, Fault::Unreachable);
    r.agent(faulty.clone()).run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Submitted), Some(&1));
    let agent = r.agent(Arc::new(http(&sim)));
    r.clock.advance(60_000);
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&1));
    assert_eq!(sim.sim.stats().posted, 1);

    // The same, but the uid expires before the restart: no CONFIRM of ours
    // ever reached it, so error 20 means expired, and it is posted again.
    r.seal(1);
    // The ledger holds the first sale and its certification: this is seq 3.
    let seq = r.ledger.head(OUTLET).unwrap().seq;
    faulty.arm(Op::Confirm, Fault::Unreachable);
    r.agent(faulty).run_once().unwrap();
    let uid2 = r.outbox.get(OUTLET, seq).unwrap().unwrap().uid.unwrap();
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
    // On restart, reconciliation finds all ten by rn (the details echo
    // carries no totals), cancels them, and their items post again.
    let agent = r.agent(Arc::new(http(&sim)));
    let rec = agent.reconcile().unwrap();
    assert_eq!(rec.cancelled.len(), 10);
    assert_eq!(r.states().get(&ItemState::Queued), Some(&14));
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&14));
    assert_eq!(sim.sim.stats().posted, 24);
    assert_eq!(sim.sim.stats().confirmed, 14);
    // A POST that arrives late (its item already synced) is an orphan:
    // reconciliation cancels it.
    let late = r.outbox.get(OUTLET, 3).unwrap().unwrap();
    let orphan = http(&sim).submit(&late.request).unwrap();
    let rec = agent.reconcile().unwrap();
    assert_eq!(rec.cancelled, vec![orphan.uid.clone()]);
    assert_eq!(sim.sim.stats().pending, 0);
    assert!(sim.sim.double_confirms().is_empty());
}

use bonopay_sync::dgi::{
    DgiConfirmation, DgiInvoiceRequest, DgiSubmitted, DgiTotals, TransportError,
};

/// What a test changes about the real transport: every call it does not
/// override goes straight to the simulator over HTTP.
trait Intercept: std::fmt::Debug + Send + Sync {
    fn submit(
        &self,
        inner: &HttpDgiTransport,
        i: &DgiInvoiceRequest,
    ) -> Result<DgiSubmitted, TransportError> {
        inner.submit(i)
    }
    fn confirm(
        &self,
        inner: &HttpDgiTransport,
        uid: &str,
        t: &DgiTotals,
    ) -> Result<DgiConfirmation, TransportError> {
        inner.confirm(uid, t)
    }
}

/// The real HTTP transport with an [`Intercept`] in front of it.
#[derive(Debug)]
struct Intercepted<I>(HttpDgiTransport, I);

impl<I: Intercept> DgiTransport for Intercepted<I> {
    fn status(&self) -> Result<bonopay_sync::dgi::DgiStatus, TransportError> {
        self.0.status()
    }
    fn submit(&self, i: &DgiInvoiceRequest) -> Result<DgiSubmitted, TransportError> {
        self.1.submit(&self.0, i)
    }
    fn confirm(&self, u: &str, t: &DgiTotals) -> Result<DgiConfirmation, TransportError> {
        self.1.confirm(&self.0, u, t)
    }
    fn cancel(&self, u: &str) -> Result<(), TransportError> {
        self.0.cancel(u)
    }
    fn details(&self, u: &str) -> Result<bonopay_sync::dgi::DgiPendingEcho, TransportError> {
        self.0.details(u)
    }
    fn info(&self, table: &str) -> Result<serde_json::Value, TransportError> {
        self.0.info(table)
    }
}

/// Fails every POST of one invoice (by `rn`) with a 5xx, before the DGI
/// acts on it.
#[derive(Debug)]
struct Poison(String);

impl Intercept for Poison {
    fn submit(
        &self,
        inner: &HttpDgiTransport,
        i: &DgiInvoiceRequest,
    ) -> Result<DgiSubmitted, TransportError> {
        if i.rn == self.0 {
            return Err(TransportError::Unknown("poisoned: HTTP 500".into()));
        }
        inner.submit(i)
    }
}

fn poisoned(sim: &Sim, rn: String) -> Arc<dyn DgiTransport> {
    Arc::new(Intercepted(http(sim), Poison(rn)))
}

/// The SFE number of the invoice at `seq` (as the e-MCF sees it).
fn rn(r: &Rig, seq: u64) -> String {
    let e = r.ledger.entry(OUTLET, seq).unwrap().unwrap();
    bonopay_signer::certification::sfe_number_of(&e).unwrap()
}

#[test]
fn one_poisoned_invoice_backs_off_alone_until_dead_lettered() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(6);
    let agent = r.agent(poisoned(&sim, rn(&r, 2)));
    agent.run_once().unwrap();
    assert_eq!(
        r.states().get(&ItemState::Synced),
        Some(&5),
        "the rest went on"
    );
    let p = r.outbox.get(OUTLET, 2).unwrap().unwrap();
    // A 5xx may have created it: `submitting`, reconciled by rn next time.
    assert_eq!((p.state, p.attempts), (ItemState::Submitting, 1));
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
        poisoned(&sim, rn(&r, 1)),
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
    // The ten lost POSTs were found pending, cancelled and posted again.
    assert_eq!(sim.sim.stats().posted, 50);
    assert_eq!(sim.sim.stats().confirmed, 40);
    assert!(sim.sim.double_confirms().is_empty());
}

fn credit_of(reference: &str) -> bonopay_core::InvoiceRequest {
    parse_invoice(
        &json!({
            "merchant_nif": "A1309334L", "outlet_id": OUTLET, "pos_terminal_id": "till-1",
            "cashier": {"id": "c-07", "name": "Mbuyi"}, "invoice_type": "FA", "price_mode": "TTC",
            "client": {"type": "PP"},
            "items": [{"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": "1", "tax_group": "B"}],
            "payments": [{"method": "ESPECES", "amount": "1160"}],
            "credit_note": {"reference": reference, "nature": "RAM"}
        })
        .to_string(),
    )
    .unwrap()
}

impl Rig {
    fn seal_one(&self, req: &bonopay_core::InvoiceRequest) -> u64 {
        let key = format!("one-{}", self.ledger.head(OUTLET).unwrap().seq);
        self.fiscalizer.seal(req, &key).unwrap().seq
    }
}

#[test]
fn a_credit_note_waits_for_its_original_and_quotes_its_dgi_code() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    // Two soaps sold: one credited now, one later.
    let sale_seq = r.seal_one(&sale(1));
    let ours = r
        .fiscalizer
        .load(OUTLET, sale_seq)
        .unwrap()
        .unwrap()
        .invoice
        .elements
        .authentication_code;
    // The credit note quotes Bono Pay's code (all the till knows yet).
    let note_seq = r.seal_one(&credit_of(&ours));
    // The original cannot get through for now: the credit note must not go
    // first (the e-MCF would refuse it: original unknown, error 11).
    let blocked = r.agent(poisoned(&sim, rn(&r, sale_seq)));
    blocked.run_once().unwrap();
    let note = r.outbox.get(OUTLET, note_seq).unwrap().unwrap();
    assert_eq!(note.state, ItemState::Queued, "{note:?}");
    assert_eq!(note.attempts, 0, "waiting spends no retry budget");
    assert!(
        note.error
            .as_deref()
            .unwrap()
            .contains("waiting for the original"),
        "{note:?}"
    );
    assert_eq!(
        sim.sim.stats().posted,
        0,
        "nothing sent before the original"
    );
    // The original goes through; then the credit note, quoting its Code
    // DEF/DGI, which the e-MCF knows (otherwise error 11).
    let agent = r.agent(Arc::new(http(&sim)));
    r.drain(&agent);
    let note = r.outbox.get(OUTLET, note_seq).unwrap().unwrap();
    assert_eq!(note.state, ItemState::Synced, "{note:?}");
    let fa = sim.sim.portal("A1309334L", Some(&note.request.rn));
    assert_eq!(fa[0].status, DgiInvoiceState::Confirmed);
    let original_code = r.certified(sale_seq).unwrap();
    assert_ne!(original_code, ours);

    // A credit note quoting the DGI's code while the e-MCF cannot verify
    // the original yet: error 10 inside a 200 answer. It retries, it is
    // never rejected, and it goes through once the e-MCF can verify.
    sim.sim.set_reference_delay_ms(3_600_000);
    let note2 = r.seal_one(&credit_of(&original_code));
    agent.run_once().unwrap();
    let item = r.outbox.get(OUTLET, note2).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Queued, "{item:?}");
    assert!(
        item.error.as_deref().unwrap().contains("DGI error 10"),
        "{item:?}"
    );
    sim.sim.set_reference_delay_ms(0);
    r.drain(&agent);
    assert_eq!(
        r.outbox.get(OUTLET, note2).unwrap().unwrap().state,
        ItemState::Synced
    );
    assert!(sim.sim.double_confirms().is_empty());
}

#[test]
fn an_error_code_in_a_2xx_answer_is_a_rejection_with_the_dgis_words() {
    // Our reference rate accepts 3000 CDF/USD; the e-MCF's (2850) does not
    // (more than 1 % off): it answers 200 with `errorCode` 99.
    let sim = start_sim(SimConfig::default());
    let r = rig();
    let mut config = FiscalizerConfig::new("NID-TEST");
    config.reference_rates = Arc::new(bonopay_tax::FixedReferenceRates(
        [(bonopay_core::Currency::Usd, "3000".parse().unwrap())]
            .into_iter()
            .collect(),
    ));
    let usd = Fiscalizer::new(
        Arc::clone(&r.ledger),
        Arc::clone(r.fiscalizer.signer()),
        config,
    );
    let req = parse_invoice(
        &json!({
            "merchant_nif": "A1309334L", "outlet_id": OUTLET, "pos_terminal_id": "till-1",
            "cashier": {"id": "c-07", "name": "Mbuyi"}, "invoice_type": "EV", "price_mode": "TTC",
            "client": {"type": "PM", "name": "Kivu Export", "nif": "A0700012B"},
            "currency": "USD", "exchange_rate": {"rate": "3000", "date": "2026-12-05"},
            "items": [{"code": "AC", "kind": "SER", "name": "Service", "unit_price": "100", "quantity": "1", "tax_group": "E"}],
            "payments": [{"method": "VIREMENT", "amount": "100"}]
        })
        .to_string(),
    )
    .unwrap();
    let seq = usd.seal(&req, "usd-1").unwrap().seq;
    r.agent(Arc::new(http(&sim))).run_once().unwrap();
    let item = r.outbox.get(OUTLET, seq).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Rejected, "{item:?}");
    let why = item.error.unwrap();
    assert!(why.contains("error 99"), "{why}");
    assert!(
        why.to_lowercase().contains("currate") || why.contains("1 %") || why.contains("1%"),
        "{why}"
    );
    assert_eq!(sim.sim.stats().posted, 0);
    // Payments of a foreign-currency invoice carry their currency.
    assert_eq!(
        item.request.payment[0].currency_code.as_deref(),
        Some("USD")
    );
    assert_eq!(item.request.cur_code, "USD");
    let h = health::judge(
        &r.outbox.summary().unwrap()[0],
        r.clock.now_ms(),
        &HealthThresholds::default(),
    );
    assert_eq!(h.health, Health::Red, "{h:?}");
}

#[test]
fn an_expired_or_refused_token_pauses_uploads_until_a_new_one_is_in_place() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(3);
    let token_file = r.dir.path().join("A1309334L.jwt");
    std::fs::write(&token_file, sim.sim.issue_token(-60)).unwrap();
    let transport = HttpDgiTransport::with_token_source(
        &sim.base,
        Arc::new(bonopay_sync::dgi::http::FileToken(token_file.clone())),
        Duration::from_secs(10),
    )
    .unwrap();
    let agent = r.agent(Arc::new(transport));
    // Expired: every call is refused; uploads pause, nothing is spent.
    for _ in 0..5 {
        agent.run_once().unwrap();
        r.clock.advance(60_000);
    }
    let why = agent.paused("A1309334L").expect("paused");
    assert!(why.contains("token"), "{why}");
    for seq in 1..=3 {
        let item = r.outbox.get(OUTLET, seq).unwrap().unwrap();
        assert_eq!(
            (item.state, item.attempts),
            (ItemState::Queued, 0),
            "{item:?}"
        );
    }
    assert_eq!(sim.sim.stats().posted, 0);
    assert!(agent.account_health()[0].paused.is_some());
    // A new token in the file: uploads resume, no restart.
    std::fs::write(&token_file, sim.sim.issue_token(3600)).unwrap();
    r.clock.advance(bonopay_sync::dgi::agent::PAUSED_PROBE_MS);
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&3));
    assert_eq!(agent.paused("A1309334L"), None);
    // A token refused before its expiry (revoked): the same.
    r.seal(2);
    sim.sim.revoke_tokens();
    agent.run_once().unwrap();
    assert!(agent.paused("A1309334L").is_some());
    assert_eq!(r.states().get(&ItemState::Synced), Some(&3));
    assert_eq!(
        r.states().get(&ItemState::Dead),
        None,
        "nothing dead-lettered"
    );
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&token_file, sim.sim.issue_token(3600)).unwrap();
    r.clock.advance(bonopay_sync::dgi::agent::PAUSED_PROBE_MS);
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&5));
    assert!(sim.sim.double_confirms().is_empty());
}

#[test]
fn the_sfe_number_is_gapless_across_z_reports_and_other_entries() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    let id = bonopay_signer::ReportIdentity {
        merchant_nif: "A1309334L".into(),
        trade_name: "Test".into(),
    };
    r.seal(2);
    r.fiscalizer.z_report(OUTLET, &id).unwrap();
    r.seal(1);
    r.fiscalizer
        .record_incomplete_sale(
            OUTLET,
            &bonopay_signer::IncompleteSale {
                merchant_nif: "A1309334L".into(),
                pos_terminal_id: "till-1".into(),
                cashier_id: "c-07".into(),
                amount: "10".parse().unwrap(),
                reason: "abandon".into(),
            },
        )
        .unwrap();
    r.fiscalizer.z_report(OUTLET, &id).unwrap();
    r.seal(2);
    let agent = r.agent(Arc::new(http(&sim)));
    r.drain(&agent);
    let year = chrono_year(&r);
    let mut rns = Vec::new();
    for seq in 1..=r.outbox.cursor(OUTLET).unwrap() {
        if let Some(item) = r.outbox.get(OUTLET, seq).unwrap() {
            rns.push((seq, item.request.rn));
        }
    }
    let seqs: Vec<u64> = rns.iter().map(|(s, _)| *s).collect();
    assert_ne!(
        seqs,
        (1..=5).collect::<Vec<_>>(),
        "the chain has other entries"
    );
    let sent: Vec<String> = rns.into_iter().map(|(_, rn)| rn).collect();
    let want: Vec<String> = (1..=5).map(|n| format!("{OUTLET}/{year}/{n}")).collect();
    assert_eq!(sent, want);
    // The e-MCF saw exactly that series.
    let mut confirmed: Vec<String> = sim.sim.confirms().into_iter().map(|c| c.rn).collect();
    confirmed.sort();
    let mut want_sorted = want;
    want_sorted.sort();
    assert_eq!(confirmed, want_sorted);
}

fn chrono_year(r: &Rig) -> i32 {
    r.ledger.entry(OUTLET, 1).unwrap().unwrap().fiscal_year
}

#[test]
fn decimals_go_as_json_numbers_so_a_platform_refusing_strings_takes_them() {
    let sim = start_sim(SimConfig::default());
    sim.sim.set_refuse_string_decimals(true);
    let r = rig();
    r.seal(3);
    let agent = r.agent(Arc::new(http(&sim)));
    agent.run_once().unwrap();
    assert_eq!(
        r.states().get(&ItemState::Synced),
        Some(&3),
        "{:?}",
        r.states()
    );
    // And with the switch off, the same.
    sim.sim.set_refuse_string_decimals(false);
    r.seal(3);
    agent.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Synced), Some(&6));
    // What went on the wire: numbers, never strings.
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    let wire = serde_json::to_string(&item.request).unwrap();
    assert!(
        wire.contains(r#""price":1160.00,"#),
        "exact, to the cent: {wire}"
    );
    assert!(wire.contains(r#""amount":65960.00"#), "{wire}");
    assert!(wire.contains(r#""quantity":1.000,"#), "{wire}");
}

#[test]
fn the_emcfs_tax_groups_are_compared_with_ours_and_a_difference_is_shown() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    let ours = r.fiscalizer.config().rate_table.invoiced_rates();
    let agent = r.agent(Arc::new(http(&sim))).comparing_rates(ours);
    let h = agent.check_accounts();
    assert!(h[0].rate_differences.is_empty(), "{h:?}");
    assert!(h[0].token_valid.is_some(), "tokenValid is read: {h:?}");
    sim.sim
        .set_tax_rate("B", Some("18".parse().unwrap()))
        .unwrap();
    let h = agent.check_accounts();
    assert_eq!(
        h[0].rate_differences,
        vec!["group B: our rate 16%, the e-MCF's 18%".to_owned()],
        "{h:?}"
    );
}

#[test]
fn an_unreachable_emcf_never_dead_letters_a_sale() {
    let r = rig();
    r.seal(1);
    // Nothing listens there: every call is refused at once.
    let down = HttpDgiTransport::new("http://127.0.0.1:9", "t", Duration::from_secs(2)).unwrap();
    let agent = r.agent(Arc::new(down));
    for _ in 0..(AgentConfig::default().max_attempts + 5) {
        agent.run_once().unwrap();
        r.clock.advance(20 * 60 * 1000);
    }
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Queued, "{item:?}");
    assert!(item.attempts > AgentConfig::default().max_attempts);
    assert!(item.error.unwrap().contains("unreachable"));
    // Health shows the wait (red after 48 h, the DGI's limit).
    r.clock.advance(48 * 3600 * 1000);
    let h = health::judge(
        &r.outbox.summary().unwrap()[0],
        r.clock.now_ms(),
        &HealthThresholds::default(),
    );
    assert_eq!(h.health, Health::Red, "{h:?}");
}

/// Holds the first CONFIRM back (its caller sees a timeout) and lets it
/// reach the DGI only when the next CONFIRM is sent: a CONFIRM that lands
/// late, after the agent saw the uid still pending.
#[derive(Debug)]
struct LateConfirm {
    held: std::sync::Mutex<Option<(String, DgiTotals)>>,
    armed: std::sync::atomic::AtomicBool,
}

impl Intercept for LateConfirm {
    fn confirm(
        &self,
        inner: &HttpDgiTransport,
        u: &str,
        t: &DgiTotals,
    ) -> Result<DgiConfirmation, TransportError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            *self.held.lock().unwrap() = Some((u.to_owned(), *t));
            return Err(TransportError::Unknown("timed out".into()));
        }
        if let Some((uid, totals)) = self.held.lock().unwrap().take() {
            let _ = inner.confirm(&uid, &totals);
        }
        inner.confirm(u, t)
    }
}

#[test]
fn a_confirm_that_lands_late_is_never_taken_for_an_expiry() {
    // CONFIRM #1 times out but reaches the DGI later; the uid still looks
    // pending, so the agent confirms again; #1 lands first and #2 finds the
    // uid final. Posting again would certify the sale twice.
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(1);
    let late = Arc::new(Intercepted(
        http(&sim),
        LateConfirm {
            held: std::sync::Mutex::new(None),
            armed: std::sync::atomic::AtomicBool::new(true),
        },
    ));
    let agent = r.agent(late);
    for _ in 0..5 {
        agent.run_once().unwrap();
        r.clock.advance(20 * 60 * 1000);
    }
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Dead, "{item:?}");
    assert!(item.error.unwrap().starts_with(LOST_CONFIRM));
    assert_eq!(sim.sim.stats().posted, 1, "never posted again");
    assert_eq!(sim.sim.confirms().len(), 1);
    assert!(sim.sim.double_confirms().is_empty());
}

/// Runs `certify_now` of another invoice from inside the first POST of a
/// pass: an inline certification finishing while the background pass
/// holds a batch it read before.
#[derive(Debug)]
struct InlineDuringPass {
    agent: std::sync::OnceLock<std::sync::Weak<SyncAgent>>,
    other: u64,
    fired: std::sync::atomic::AtomicBool,
}

impl Intercept for InlineDuringPass {
    fn submit(
        &self,
        inner: &HttpDgiTransport,
        i: &DgiInvoiceRequest,
    ) -> Result<DgiSubmitted, TransportError> {
        if !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Some(agent) = self.agent.get().and_then(std::sync::Weak::upgrade)
        {
            let item = agent.certify_now(OUTLET, self.other).unwrap().unwrap();
            assert_eq!(item.state, ItemState::Synced);
        }
        inner.submit(i)
    }
}

#[test]
fn a_pass_never_works_from_a_copy_an_inline_certification_has_moved_on() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(2);
    let transport = Arc::new(Intercepted(
        http(&sim),
        InlineDuringPass {
            agent: std::sync::OnceLock::new(),
            other: 2,
            fired: std::sync::atomic::AtomicBool::new(false),
        },
    ));
    let agent = Arc::new(r.agent(Arc::clone(&transport) as Arc<dyn DgiTransport>));
    transport.1.agent.set(Arc::downgrade(&agent)).unwrap();
    // The pass reads both items, then (posting the first) the second is
    // certified inline; the pass must not post the second again.
    agent.run_once().unwrap();
    assert_eq!(
        r.states().get(&ItemState::Synced),
        Some(&2),
        "{:?}",
        r.states()
    );
    assert_eq!(sim.sim.stats().posted, 2, "each sale posted once");
    assert!(sim.sim.double_confirms().is_empty());
}
