//! The DGI sync agent: uploads every sealed invoice to the e-MCF exactly
//! once, across crashes, lost responses and timeouts.
//!
//! The agent is synchronous and runs on its own thread; the store, the
//! transport, the clock and the random source are injected, so tests drive
//! it step by step and layer faults over the real components. The state
//! machine is documented on [`crate::dgi::outbox`]; the invariants:
//!
//! - **Never a second CONFIRM.** A CONFIRM is only ever sent for a uid the
//!   DGI reports as pending (or right after the POST that created it), and
//!   the `confirming` state is stored before it is sent. When the DGI can
//!   no longer say whether a uid was confirmed, the item is dead-lettered
//!   for a person, never re-posted.
//! - **Never an orphan.** A POST whose answer was lost leaves the item in
//!   `submitting`; reconciliation finds the pending uid by its `rn` and
//!   adopts it, and [`SyncAgent::reconcile`] cancels any pending uid of
//!   ours that no item owns.
//! - **No head-of-line blocking.** Each item has its own retry time; a
//!   failing invoice backs off while the others go on.
//!
//! This module holds the agent, its configuration and its driver
//! ([`SyncAgent::run_once`], [`SyncAgent::process`]); the rest is split by
//! concern: `steps` (the state machine's steps), `recovery` (reconcile,
//! requeue, resolve), `accounts` (one e-MCF account per merchant, paused
//! on a bad token), `recorder` (the seam to the ledger) and `timing` (the
//! injected clock and jitter).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bonopay_ledger::{EntryKind, LedgerStore};
#[allow(unused_imports)] // for the docs
use bonopay_signer::Fiscalizer;
use bonopay_signer::SealedInvoice;
use bonopay_signer::certification::CertificationSource;
use rust_decimal::Decimal;

use crate::dgi::outbox::{ItemState, NewItem, OutboxError, OutboxItem, OutboxStore};
use crate::dgi::{DgiTransport, MappingError, TransportError, codes, map_sealed};

mod accounts;
mod device;
mod recorder;
mod recovery;
mod steps;
mod timing;

pub use accounts::{AccountHealth, PAUSED_PROBE_MS};
pub use device::{DEVICE_UID_PREFIX, DevicePolicy};
pub use recorder::{CertificationRecorder, RecordError};
pub use timing::{Clock, Jitter, ManualClock, SplitMix, SystemClock};

/// The start of the error of an item dead-lettered because the answer to
/// its CONFIRM was lost.
pub const LOST_CONFIRM: &str = "CONFIRM outcome unknown";

/// Retry and limit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentConfig {
    /// The e-MCF's cap on pending invoices (10).
    pub max_pending: usize,
    /// Failed attempts after which an item is dead-lettered.
    pub max_attempts: u32,
    /// First backoff (ms); doubles per failed attempt.
    pub backoff_base_ms: i64,
    /// Longest backoff (ms).
    pub backoff_cap_ms: i64,
    /// Items handled per [`SyncAgent::run_once`].
    pub batch: usize,
    /// How long a claim on an item lasts without renewal (ms); longer
    /// than any one step (a few HTTP calls with their timeouts).
    pub lease_ms: i64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_pending: 10,
            max_attempts: 16,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 15 * 60 * 1000,
            // Claimed at once: small, so the items an instance that dies
            // was holding wait for its lease only in small numbers.
            batch: 32,
            lease_ms: 5 * 60 * 1000,
        }
    }
}

/// Why the agent stopped a step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The ledger failed.
    #[error("ledger: {0}")]
    Ledger(#[from] bonopay_ledger::LedgerError),
    /// The ledger refused to record the DGI's elements.
    #[error("recording the DGI's elements: {0}")]
    Record(RecordError),
    /// A sealed invoice could not be mapped (a bug or corruption).
    #[error("entry {id}: {error}")]
    Mapping {
        /// Invoice id.
        id: String,
        /// Why.
        error: MappingError,
    },
}

/// What one [`SyncAgent::run_once`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Items enqueued from the ledger.
    pub enqueued: usize,
    /// Items that became synced.
    pub synced: usize,
    /// Items that became rejected.
    pub rejected: usize,
    /// Items that became dead.
    pub dead: usize,
    /// Items deferred to a later attempt.
    pub deferred: usize,
}

/// What [`SyncAgent::reconcile`] did with the DGI's pending list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Pending uids of ours that no item owns, cancelled (the item that
    /// lost its POST answer posts again).
    pub cancelled: Vec<String>,
    /// Pending uids that are not ours (left alone).
    pub foreign: Vec<String>,
}

/// Something the agent reports as it happens (for webhooks, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncEvent {
    /// Confirmed by the DGI.
    Synced(OutboxItem),
    /// Refused by the DGI, or dead-lettered.
    Failed(OutboxItem),
}

/// The sync agent over a ledger, an outbox and the e-MCF.
pub struct SyncAgent {
    ledger: Arc<dyn LedgerStore>,
    outbox: Arc<dyn OutboxStore>,
    /// The account of any merchant without one of its own in `accounts`.
    transport: Option<Arc<dyn DgiTransport>>,
    /// One e-MCF account (token) per merchant NIF.
    accounts: BTreeMap<String, Arc<dyn DgiTransport>>,
    recorder: Option<Arc<dyn CertificationRecorder>>,
    clock: Arc<dyn Clock>,
    jitter: Box<dyn Jitter>,
    config: AgentConfig,
    /// Which outlets are uploaded (default: every outlet of the ledger).
    outlets: Option<OutletFilter>,
    /// Our tax rates by group letter, compared with the e-MCF's.
    our_rates: Option<BTreeMap<String, Decimal>>,
    health: Mutex<BTreeMap<String, AccountHealth>>,
    /// Outlets with a physical MCF, and how it is used.
    devices: BTreeMap<
        String,
        (
            Arc<dyn crate::mcf::certifier::DeviceCertifier>,
            DevicePolicy,
        ),
    >,
    /// Items this process is working on (the SQLite outbox does not
    /// claim: this keeps the background pass and an inline certification
    /// off the same item).
    busy: Mutex<HashSet<(String, u64)>>,
}

/// Decides which outlets an agent uploads.
type OutletFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Holds an item in [`SyncAgent::busy`] until dropped.
struct Busy<'a> {
    set: &'a Mutex<HashSet<(String, u64)>>,
    key: (String, u64),
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for SyncAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncAgent")
            .field("transport", &self.transport)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

enum Next {
    /// Go on with the item's new state now.
    Continue,
    /// Stop here for this item (final, or waiting).
    Stop,
}
impl SyncAgent {
    /// An agent with the system clock, a time-seeded jitter source and the
    /// default configuration.
    pub fn new(
        ledger: Arc<dyn LedgerStore>,
        outbox: Arc<dyn OutboxStore>,
        transport: Arc<dyn DgiTransport>,
    ) -> Self {
        let seed = SystemClock.now_ms().unsigned_abs();
        Self::with(
            ledger,
            outbox,
            transport,
            Arc::new(SystemClock),
            Box::new(SplitMix::new(seed)),
            AgentConfig::default(),
        )
    }

    /// An agent with everything explicit.
    pub fn with(
        ledger: Arc<dyn LedgerStore>,
        outbox: Arc<dyn OutboxStore>,
        transport: Arc<dyn DgiTransport>,
        clock: Arc<dyn Clock>,
        jitter: Box<dyn Jitter>,
        config: AgentConfig,
    ) -> Self {
        let mut agent = Self::without_emcf(ledger, outbox, clock, jitter, config);
        agent.transport = Some(transport);
        agent
    }

    /// An agent with no e-MCF account at all: every outlet it uploads
    /// certifies through its physical MCF ([`Self::with_device`]); an
    /// outlet without one waits, as an e-MCF outlet without a token does.
    pub fn without_emcf(
        ledger: Arc<dyn LedgerStore>,
        outbox: Arc<dyn OutboxStore>,
        clock: Arc<dyn Clock>,
        jitter: Box<dyn Jitter>,
        config: AgentConfig,
    ) -> Self {
        Self {
            ledger,
            outbox,
            transport: None,
            accounts: BTreeMap::new(),
            recorder: None,
            clock,
            jitter,
            config,
            outlets: None,
            our_rates: None,
            health: Mutex::new(BTreeMap::new()),
            devices: BTreeMap::new(),
            busy: Mutex::new(HashSet::new()),
        }
    }

    /// One e-MCF account per merchant: a token belongs to one NIF and one
    /// e-MCF, so each merchant's invoices go through its own. Merchants
    /// not listed use the transport given at construction, unless
    /// [`Self::only_accounts`] is set.
    #[must_use]
    pub fn with_accounts(
        mut self,
        accounts: impl IntoIterator<Item = (String, Arc<dyn DgiTransport>)>,
    ) -> Self {
        self.accounts.extend(accounts);
        self
    }

    /// Merchants without an account of their own are not uploaded (their
    /// items wait, and health says why) instead of using the default
    /// transport.
    #[must_use]
    pub fn only_accounts(mut self) -> Self {
        self.transport = None;
        self
    }

    /// Binds each confirmation into the ledger through `recorder`, and
    /// resolves credit-note references with it. Without one, confirmed
    /// items are synced as soon as their elements are stored.
    #[must_use]
    pub fn recording_with(mut self, recorder: Arc<dyn CertificationRecorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Our tax rates by group letter (`B` → 16, as
    /// `bonopay_tax::RateTable::invoiced_rates` gives them), compared with
    /// the e-MCF's table by [`Self::check_accounts`].
    #[must_use]
    pub fn comparing_rates(mut self, rates: BTreeMap<String, Decimal>) -> Self {
        self.our_rates = Some(rates);
        self
    }

    fn transport_for(&self, nif: &str) -> Option<Arc<dyn DgiTransport>> {
        self.accounts
            .get(nif)
            .cloned()
            .or_else(|| self.transport.clone())
    }

    /// Every account: the merchants with one of their own, or the default
    /// one under the name `*`.
    fn all_accounts(&self) -> Vec<(String, Arc<dyn DgiTransport>)> {
        let mut out: Vec<_> = self
            .accounts
            .iter()
            .map(|(n, t)| (n.clone(), Arc::clone(t)))
            .collect();
        if let Some(t) = &self.transport {
            out.push(("*".into(), Arc::clone(t)));
        }
        out
    }

    /// Holds `outlet`/`seq` for this process, or `None` if it is busy.
    fn hold(&self, outlet: &str, seq: u64) -> Option<Busy<'_>> {
        let key = (outlet.to_owned(), seq);
        let mut set = lock(&self.busy);
        if set.contains(&key) {
            return None;
        }
        set.insert(key.clone());
        Some(Busy {
            set: &self.busy,
            key,
        })
    }

    /// Only these outlets are uploaded (default: every outlet of the
    /// ledger).
    #[must_use]
    pub fn only_outlets(self, outlets: impl IntoIterator<Item = String>) -> Self {
        let set: BTreeSet<String> = outlets.into_iter().collect();
        self.uploading_only(move |o| set.contains(o))
    }

    /// Only the outlets `keep` says yes to are uploaded (an outlet whose
    /// invoices are not to be certified, say); it is asked again at every
    /// pass, so outlets registered later are covered.
    #[must_use]
    pub fn uploading_only(mut self, keep: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.outlets = Some(Arc::new(keep));
        self
    }

    fn uploads(&self, outlet: &str) -> bool {
        self.outlets.as_ref().is_none_or(|keep| keep(outlet))
    }

    /// The outbox.
    pub fn outbox(&self) -> &Arc<dyn OutboxStore> {
        &self.outbox
    }

    /// Scans every outlet's ledger past its cursor and enqueues the sealed
    /// invoices and credit notes found.
    ///
    /// # Errors
    /// [`AgentError`]; what was enqueued before stays enqueued.
    pub fn enqueue_new(&self) -> Result<usize, AgentError> {
        let mut total = 0;
        for outlet in self.ledger.outlets()? {
            total += self.enqueue_outlet(&outlet)?;
        }
        Ok(total)
    }

    /// [`Self::enqueue_new`] for one outlet.
    ///
    /// # Errors
    /// [`AgentError`]; what was enqueued before stays enqueued.
    pub fn enqueue_outlet(&self, outlet: &str) -> Result<usize, AgentError> {
        if !self.uploads(outlet) {
            return Ok(0);
        }
        let mut total = 0;
        let head = self.ledger.head(outlet)?;
        let mut cursor = self.outbox.cursor(outlet)?;
        while cursor < head.seq {
            let mut batch = Vec::new();
            let mut scanned = cursor;
            for e in self.ledger.iter_from(outlet, cursor + 1) {
                let e = e?;
                if e.seq > head.seq {
                    break;
                }
                scanned = e.seq;
                if matches!(e.kind, EntryKind::Invoice | EntryKind::CreditNote) {
                    let id = format!("{outlet}:{}", e.seq);
                    // The ledger's own payload, typed by the signer's reader
                    // (envelope, signed tuple, body). Not verified against
                    // the key here: the agent uploads what the ledger
                    // holds; the chain and signatures are the verifier's.
                    let (request, ours) = SealedInvoice::read_own(&e.payload)
                        .map_err(|e| MappingError(format!("not a sealed invoice: {e}")))
                        .and_then(|invoice| map_sealed(&invoice))
                        .map_err(|error| AgentError::Mapping { id, error })?;
                    batch.push(NewItem {
                        outlet: outlet.to_owned(),
                        seq: e.seq,
                        merchant_nif: request.nif.clone(),
                        sealed_at_ms: e.time_ms,
                        request,
                        ours,
                    });
                }
                if batch.len() >= 500 {
                    break;
                }
            }
            self.outbox.enqueue(outlet, scanned, &batch)?;
            total += batch.len();
            cursor = scanned;
        }
        Ok(total)
    }

    fn backoff(&self, attempts: u32) -> i64 {
        let ms = |v: i64| Duration::from_millis(u64::try_from(v.max(1)).unwrap_or(1));
        let backoff = crate::retry::Backoff {
            base: ms(self.config.backoff_base_ms),
            cap: ms(self.config.backoff_cap_ms),
        };
        i64::try_from(backoff.delay_ms(attempts, self.jitter.as_ref())).unwrap_or(i64::MAX)
    }

    fn save(&self, item: &mut OutboxItem) -> Result<(), AgentError> {
        item.updated_ms = self.clock.now_ms();
        item.change = self.outbox.update(item)?;
        Ok(())
    }

    /// A failed attempt: back off, or dead-letter when the budget is spent.
    /// A confirmed item is never dead-lettered: the DGI certified it, and
    /// only binding its elements into the ledger is left.
    fn fail(&self, item: &mut OutboxItem, why: String) -> Result<Next, AgentError> {
        item.attempts += 1;
        item.error = Some(why);
        if item.attempts >= self.config.max_attempts && item.state != ItemState::Confirmed {
            item.state = ItemState::Dead;
        } else {
            item.next_attempt_ms = self.clock.now_ms() + self.backoff(item.attempts);
        }
        self.save(item)?;
        Ok(Next::Stop)
    }

    /// The e-MCF could not be reached: back off as after a failure, but
    /// never dead-letter for it (an outage ends; a person has nothing to
    /// decide).
    fn outage(&self, item: &mut OutboxItem, why: String) -> Result<Next, AgentError> {
        self.back_off(item, format!("the e-MCF is unreachable: {why}"))
    }

    /// A certifying device (the e-MCF, an outlet's MCF) cannot be reached:
    /// the next attempt after the backoff, outside the retry budget.
    fn back_off(&self, item: &mut OutboxItem, error: String) -> Result<Next, AgentError> {
        item.attempts = item.attempts.saturating_add(1);
        item.error = Some(error);
        item.next_attempt_ms = self.clock.now_ms() + self.backoff(item.attempts);
        self.save(item)?;
        Ok(Next::Stop)
    }

    /// Waits without spending the retry budget (an original not certified
    /// yet, a paused account): the item is looked at again after `ms`.
    fn wait(&self, item: &mut OutboxItem, why: String, ms: i64) -> Result<Next, AgentError> {
        if item.error.as_deref() != Some(why.as_str())
            || item.next_attempt_ms <= self.clock.now_ms()
        {
            item.error = Some(why);
            item.next_attempt_ms = self.clock.now_ms() + ms.max(1);
            self.save(item)?;
        }
        Ok(Next::Stop)
    }

    /// Enqueues new invoices, then works through the due items.
    ///
    /// # Errors
    /// [`AgentError`] from storage; DGI failures are per item.
    pub fn run_once(&self) -> Result<RunReport, AgentError> {
        self.run_once_with(&mut |_| {})
    }

    /// [`Self::run_once`], reporting each item that becomes synced or fails.
    ///
    /// # Errors
    /// As [`Self::run_once`].
    pub fn run_once_with(&self, on: &mut dyn FnMut(SyncEvent)) -> Result<RunReport, AgentError> {
        let mut report = RunReport {
            enqueued: self.enqueue_new()?,
            ..RunReport::default()
        };
        // Claimed, in-flight items first: they hold the e-MCF's pending
        // slots, and settling them is what lets queued items go (no
        // starvation behind a batch of queued items waiting for a slot).
        let items =
            self.outbox
                .claim_due(self.clock.now_ms(), self.config.lease_ms, self.config.batch)?;
        let mut workable: HashMap<String, bool> = HashMap::new();
        for mut item in items {
            let Some(_held) = self.hold(&item.outlet, item.seq) else {
                // An inline certification is on it right now.
                continue;
            };
            // The batch was read before this item was held: an inline
            // certification may have moved it since (and let it go). Work
            // from what is stored now, never from the stale copy (which
            // would post a sale the DGI already has).
            match self.outbox.get(&item.outlet, item.seq)? {
                Some(fresh) if fresh.change == item.change => {}
                Some(fresh) => {
                    if fresh.state.is_final() || fresh.next_attempt_ms > self.clock.now_ms() {
                        continue;
                    }
                    item = fresh;
                }
                None => continue,
            }
            if !*workable
                .entry(item.merchant_nif.clone())
                .or_insert_with(|| self.may_work(&item.merchant_nif))
                && item.state != ItemState::Confirmed
            {
                // The account is paused (its token): the item waits,
                // untouched, with its retry budget intact.
                report.deferred += 1;
                continue;
            }
            if item.state == ItemState::Queued
                && self.outbox.in_flight()?.len() >= self.config.max_pending
            {
                // Every slot is taken: the rest waits for the next pass.
                report.deferred += 1;
                break;
            }
            match self.process(&mut item) {
                Ok(()) => {}
                // Another instance took it over (our lease ran out): it is
                // theirs now, and its stored state tells them where it is.
                Err(AgentError::Outbox(OutboxError::ClaimLost(_))) => continue,
                Err(e) => return Err(e),
            }
            if self.paused(&item.merchant_nif).is_some() {
                workable.insert(item.merchant_nif.clone(), false);
            }
            match item.state {
                ItemState::Synced => {
                    report.synced += 1;
                    on(SyncEvent::Synced(item));
                }
                ItemState::Rejected => {
                    report.rejected += 1;
                    on(SyncEvent::Failed(item));
                }
                ItemState::Dead => {
                    report.dead += 1;
                    on(SyncEvent::Failed(item));
                }
                _ => report.deferred += 1,
            }
        }
        Ok(report)
    }

    /// Certifies one sealed invoice now, on the caller's thread: enqueues it
    /// (with whatever precedes it on its outlet) and drives it as far as it
    /// goes. The caller bounds the wait; an invoice not certified by then
    /// stays in the outbox and the background pass finishes it. Returns
    /// the item as it stands (`None` when another instance holds it).
    ///
    /// # Errors
    /// [`AgentError`] from storage; DGI failures are on the item.
    pub fn certify_now(&self, outlet: &str, seq: u64) -> Result<Option<OutboxItem>, AgentError> {
        self.enqueue_outlet(outlet)?;
        let Some(_held) = self.hold(outlet, seq) else {
            return Ok(self.outbox.get(outlet, seq)?);
        };
        let now = self.clock.now_ms();
        let Some(mut item) = self.outbox.claim(outlet, seq, now, self.config.lease_ms)? else {
            return Ok(self.outbox.get(outlet, seq)?);
        };
        if item.state.is_final() || !self.may_work(&item.merchant_nif) {
            return Ok(Some(item));
        }
        if item.state == ItemState::Queued
            && self.outbox.in_flight()?.len() >= self.config.max_pending
        {
            return Ok(Some(item));
        }
        match self.process(&mut item) {
            Ok(()) | Err(AgentError::Outbox(OutboxError::ClaimLost(_))) => Ok(Some(item)),
            Err(e) => Err(e),
        }
    }

    /// Drives one item as far as it can go now.
    ///
    /// # Errors
    /// [`AgentError`] from storage.
    pub fn process(&self, item: &mut OutboxItem) -> Result<(), AgentError> {
        // Bounded: every path either stops or moves forward.
        for _ in 0..8 {
            let device = self.devices.get(&item.outlet).cloned();
            let next = match (item.state, device) {
                (ItemState::Confirmed, _) => self.record(item)?,
                (
                    ItemState::Queued | ItemState::Submitting | ItemState::Submitted,
                    Some((dev, DevicePolicy::Only)),
                ) => self.by_device(dev.as_ref(), item)?,
                (_, device) => 'emcf: {
                    if let (Some((dev, DevicePolicy::Fallback)), ItemState::Queued) =
                        (&device, item.state)
                        && let Some(next) = self.recalled(dev.as_ref(), item)?
                    {
                        // Certified by the device before a crash or a
                        // broken line: never posted to the e-MCF again.
                        break 'emcf next;
                    }
                    let Some(t) = self.transport_for(&item.merchant_nif) else {
                        if let Some(next) = self.fallback(item)? {
                            break 'emcf next;
                        }
                        let why = format!(
                            "no e-MCF account (token) is configured for merchant {}",
                            item.merchant_nif
                        );
                        return self.wait(item, why, PAUSED_PROBE_MS).map(|_| ());
                    };
                    match item.state {
                        ItemState::Queued => self.submit(t.as_ref(), item)?,
                        ItemState::Submitting => self.find_lost_post(t.as_ref(), item)?,
                        ItemState::Submitted => self.confirm(t.as_ref(), item)?,
                        ItemState::Confirming => self.find_lost_confirm(t.as_ref(), item)?,
                        _ => Next::Stop,
                    }
                }
            };
            if matches!(next, Next::Stop) {
                break;
            }
        }
        Ok(())
    }
}
