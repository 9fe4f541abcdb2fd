//! The DGI sync agent against the e-MCF simulator over real loopback HTTP,
//! with a real SQLite ledger and outbox; faults are injected by the
//! simulator and by `FaultyTransport` layered over the real HTTP transport.
//!
//! One test binary, one module per concern: `flow`, `recovery` and
//! `scheduling`; the harness (simulator, rig, intercepting transport) is
//! here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod device;
mod flow;
mod recovery;
mod scheduling;

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

fn sale(n: usize) -> bonopay_core::ValidInvoice {
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

fn reduction() -> bonopay_core::ValidInvoice {
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
            self.fiscalizer
                .seal(&sale(i), &key.parse().unwrap())
                .unwrap();
        }
    }

    fn agent(&self, transport: Arc<dyn DgiTransport>) -> SyncAgent {
        SyncAgent::with(
            Arc::clone(&self.ledger),
            Arc::clone(&self.outbox),
            transport,
            self.clock.clone(),
            Box::new(SplitMix::new(7)),
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

/// The SFE number of the invoice at `seq` (as the e-MCF sees it).
fn rn(r: &Rig, seq: u64) -> String {
    let e = r.ledger.entry(OUTLET, seq).unwrap().unwrap();
    bonopay_signer::certification::sfe_number_of(&e).unwrap()
}

fn credit_of(reference: &str) -> bonopay_core::ValidInvoice {
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
    fn seal_one(&self, req: &bonopay_core::ValidInvoice) -> u64 {
        let key = format!("one-{}", self.ledger.head(OUTLET).unwrap().seq);
        self.fiscalizer
            .seal(req, &key.parse().unwrap())
            .unwrap()
            .seq
    }
}

fn chrono_year(r: &Rig) -> i32 {
    r.ledger.entry(OUTLET, 1).unwrap().unwrap().fiscal_year
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
