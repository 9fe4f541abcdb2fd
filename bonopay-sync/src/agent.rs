//! The DGI sync agent: uploads every sealed invoice to the e-MCF exactly
//! once, across crashes, lost responses and timeouts.
//!
//! The agent is synchronous and runs on its own thread; the store, the
//! transport, the clock and the random source are injected, so tests drive
//! it step by step and layer faults over the real components. The state
//! machine is documented on [`crate::outbox`]; the invariants:
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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bonopay_ledger::{EntryKind, LedgerStore};
use serde_json::Value;

use crate::dgi::{
    DgiInvoiceState, DgiTransport, MappingError, TransportError, codes, map_sealed_body,
};
use crate::outbox::{ItemState, NewItem, OutboxError, OutboxItem, OutboxStore};

/// The agent's clock (ms since the epoch). Injected so tests can step it.
pub trait SyncClock: std::fmt::Debug + Send + Sync {
    /// Now.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemSyncClock;

impl SyncClock for SystemSyncClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock tests set by hand.
#[derive(Debug, Default)]
pub struct ManualSyncClock(std::sync::atomic::AtomicI64);

impl ManualSyncClock {
    /// At `ms`.
    #[must_use]
    pub fn new(ms: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(ms))
    }

    /// Moves it forward.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl SyncClock for ManualSyncClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The jitter source. Injected so runs are reproducible.
pub trait Jitter: std::fmt::Debug + Send {
    /// A uniformly random `u64`.
    fn next_u64(&mut self) -> u64;
}

/// SplitMix64: small, seedable, good enough for jitter (not for secrets).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl Jitter for SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

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
    /// Pending uids adopted by the item that created them.
    pub adopted: Vec<String>,
    /// Pending uids of ours that no item owns, cancelled.
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
    transport: Arc<dyn DgiTransport>,
    clock: Arc<dyn SyncClock>,
    jitter: Mutex<Box<dyn Jitter>>,
    config: AgentConfig,
    outlets: Option<BTreeSet<String>>,
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
        let seed = SystemSyncClock.now_ms().unsigned_abs();
        Self::with(
            ledger,
            outbox,
            transport,
            Arc::new(SystemSyncClock),
            Box::new(SplitMix(seed)),
            AgentConfig::default(),
        )
    }

    /// An agent with everything explicit.
    pub fn with(
        ledger: Arc<dyn LedgerStore>,
        outbox: Arc<dyn OutboxStore>,
        transport: Arc<dyn DgiTransport>,
        clock: Arc<dyn SyncClock>,
        jitter: Box<dyn Jitter>,
        config: AgentConfig,
    ) -> Self {
        Self {
            ledger,
            outbox,
            transport,
            clock,
            jitter: Mutex::new(jitter),
            config,
            outlets: None,
        }
    }

    /// Only these outlets are uploaded (default: every outlet of the
    /// ledger).
    #[must_use]
    pub fn only_outlets(mut self, outlets: impl IntoIterator<Item = String>) -> Self {
        self.outlets = Some(outlets.into_iter().collect());
        self
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
            if self.outlets.as_ref().is_some_and(|o| !o.contains(&outlet)) {
                continue;
            }
            let head = self.ledger.head(&outlet)?;
            let mut cursor = self.outbox.cursor(&outlet)?;
            while cursor < head.seq {
                let mut batch = Vec::new();
                let mut scanned = cursor;
                for e in self.ledger.iter_from(&outlet, cursor + 1) {
                    let e = e?;
                    if e.seq > head.seq {
                        break;
                    }
                    scanned = e.seq;
                    if matches!(e.kind, EntryKind::Invoice | EntryKind::CreditNote) {
                        let id = format!("{outlet}:{}", e.seq);
                        let body = serde_json::from_slice::<Value>(&e.payload)
                            .ok()
                            .and_then(|mut v| v.get_mut("body").map(Value::take))
                            .ok_or_else(|| AgentError::Mapping {
                                id: id.clone(),
                                error: MappingError("payload is not a sealed invoice".into()),
                            })?;
                        let (request, ours) = map_sealed_body(&body)
                            .map_err(|error| AgentError::Mapping { id, error })?;
                        batch.push(NewItem {
                            outlet: outlet.clone(),
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
                self.outbox.enqueue(&outlet, scanned, &batch)?;
                total += batch.len();
                cursor = scanned;
            }
        }
        Ok(total)
    }

    fn backoff(&self, attempts: u32) -> i64 {
        let shift = attempts.saturating_sub(1).min(30);
        let exp = self
            .config
            .backoff_base_ms
            .saturating_mul(1i64 << shift)
            .min(self.config.backoff_cap_ms)
            .max(1);
        // "Equal jitter": half fixed, half random, so retries of many
        // items spread out but none comes back immediately.
        let r = self
            .jitter
            .lock()
            .map(|mut j| j.next_u64())
            .unwrap_or_default();
        let half = exp / 2;
        let spread = u64::try_from(half).unwrap_or(0).max(1);
        half + i64::try_from(r % spread).unwrap_or(0)
    }

    fn save(&self, item: &mut OutboxItem) -> Result<(), AgentError> {
        item.updated_ms = self.clock.now_ms();
        item.change = self.outbox.update(item)?;
        Ok(())
    }

    /// A failed attempt: back off, or dead-letter when the budget is spent.
    fn fail(&self, item: &mut OutboxItem, why: String) -> Result<Next, AgentError> {
        item.attempts += 1;
        item.error = Some(why);
        if item.attempts >= self.config.max_attempts {
            item.state = ItemState::Dead;
        } else {
            item.next_attempt_ms = self.clock.now_ms() + self.backoff(item.attempts);
        }
        self.save(item)?;
        Ok(Next::Stop)
    }

    /// Handles the DGI's pending list: adopts pending uids whose `rn`
    /// belongs to an item that lost its POST answer, cancels pending uids
    /// of ours that no item owns. Run at start and now and then.
    ///
    /// # Errors
    /// [`AgentError`]; transport failures are reported, not raised, and
    /// leave things for the next run.
    pub fn reconcile(&self) -> Result<ReconcileReport, AgentError> {
        let mut report = ReconcileReport::default();
        let Ok(status) = self.transport.status() else {
            return Ok(report);
        };
        let owned: HashMap<String, OutboxItem> = self
            .outbox
            .in_flight()?
            .into_iter()
            .filter_map(|i| i.uid.clone().map(|u| (u, i)))
            .collect();
        for p in status.pending {
            if owned.contains_key(&p.uid) {
                continue;
            }
            let Ok(d) = self.transport.details(&p.uid) else {
                continue;
            };
            if d.status != DgiInvoiceState::Pending {
                continue;
            }
            let now = self.clock.now_ms();
            let item = match d.rn.rsplit_once(':') {
                Some((outlet, seq)) => match seq.parse::<u64>() {
                    Ok(seq) => match self.outbox.get(outlet, seq)? {
                        // Ours; claimed (if no other worker holds it) before
                        // anything is done with it.
                        Some(_) => {
                            match self.outbox.claim(outlet, seq, now, self.config.lease_ms)? {
                                Some(it) => Some(it),
                                None => continue,
                            }
                        }
                        None => None,
                    },
                    Err(_) => None,
                },
                None => None,
            };
            match item {
                Some(mut it) if it.uid.is_none() && !it.state.is_final() => {
                    it.state = ItemState::Submitted;
                    it.uid = Some(p.uid.clone());
                    it.theirs = Some(d.totals);
                    match self.save(&mut it) {
                        Ok(()) => report.adopted.push(p.uid),
                        Err(AgentError::Outbox(OutboxError::ClaimLost(_))) => {}
                        Err(e) => return Err(e),
                    }
                }
                Some(_) => {
                    // Ours, but its item has another uid or is final: an
                    // orphan from a POST that arrived late. Never confirmed.
                    if self.transport.cancel(&p.uid).is_ok() {
                        report.cancelled.push(p.uid);
                    }
                }
                None => report.foreign.push(p.uid),
            }
        }
        Ok(report)
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
        for mut item in items {
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

    /// Drives one item as far as it can go now.
    ///
    /// # Errors
    /// [`AgentError`] from storage.
    pub fn process(&self, item: &mut OutboxItem) -> Result<(), AgentError> {
        // Bounded: every path either stops or moves forward.
        for _ in 0..8 {
            let next = match item.state {
                ItemState::Queued => self.submit(item)?,
                ItemState::Submitting => self.find_lost_post(item)?,
                ItemState::Submitted => self.confirm(item)?,
                ItemState::Confirming => self.find_lost_confirm(item)?,
                _ => Next::Stop,
            };
            if matches!(next, Next::Stop) {
                break;
            }
        }
        Ok(())
    }

    fn submit(&self, item: &mut OutboxItem) -> Result<Next, AgentError> {
        let in_flight = self.outbox.in_flight()?.len();
        if in_flight >= self.config.max_pending {
            // The e-MCF's cap: wait, untouched (no write), until an
            // in-flight item settles; it stays due for the next pass.
            return Ok(Next::Stop);
        }
        item.state = ItemState::Submitting;
        item.uid = None;
        item.theirs = None;
        self.save(item)?;
        match self.transport.submit(&item.request) {
            Ok(sub) => {
                item.state = ItemState::Submitted;
                item.uid = Some(sub.uid);
                item.theirs = Some(crate::dgi::DgiTotals {
                    total: sub.total,
                    vtotal: sub.vtotal,
                });
                item.error = None;
                // Not stored here: the next step stores `confirming` (or
                // `rejected`) with the uid before anything else is sent,
                // and a crash before that leaves `submitting`, which
                // reconciliation resolves by `rn`. One fsync fewer.
                Ok(Next::Continue)
            }
            Err(TransportError::Rejected { code, desc, .. }) if code == codes::TOO_MANY_PENDING => {
                item.state = ItemState::Queued;
                self.fail(item, format!("DGI error {code}: {desc}"))
            }
            Err(TransportError::Rejected { status, code, desc }) if status < 500 => {
                item.state = ItemState::Rejected;
                item.error = Some(format!("DGI refused the invoice: error {code}: {desc}"));
                self.save(item)?;
                Ok(Next::Stop)
            }
            Err(e @ (TransportError::Unreachable(_) | TransportError::Unauthorized(_))) => {
                // Certainly not created.
                item.state = ItemState::Queued;
                self.fail(item, e.to_string())
            }
            Err(e) => {
                // Maybe created: stay `submitting` and reconcile next time.
                self.fail(item, e.to_string())
            }
        }
    }

    /// The POST's answer was lost: look for a pending uid with our `rn`.
    fn find_lost_post(&self, item: &mut OutboxItem) -> Result<Next, AgentError> {
        let status = match self.transport.status() {
            Ok(s) => s,
            Err(e) => return self.fail(item, e.to_string()),
        };
        let owned: BTreeSet<String> = self
            .outbox
            .in_flight()?
            .into_iter()
            .filter_map(|i| i.uid)
            .collect();
        let rn = item.id();
        for p in status.pending {
            if owned.contains(&p.uid) {
                continue;
            }
            match self.transport.details(&p.uid) {
                Ok(d) if d.rn == rn && d.status == DgiInvoiceState::Pending => {
                    item.state = ItemState::Submitted;
                    item.uid = Some(p.uid);
                    item.theirs = Some(d.totals);
                    self.save(item)?;
                    return Ok(Next::Continue);
                }
                Ok(_) => {}
                Err(e) => return self.fail(item, e.to_string()),
            }
        }
        // Not pending: the POST never arrived, or its invoice expired
        // unconfirmed. Either way nothing was confirmed: post again.
        item.state = ItemState::Queued;
        self.save(item)?;
        Ok(Next::Continue)
    }

    fn confirm(&self, item: &mut OutboxItem) -> Result<Next, AgentError> {
        let (Some(uid), Some(theirs)) = (item.uid.clone(), item.theirs) else {
            item.state = ItemState::Queued;
            self.save(item)?;
            return Ok(Next::Continue);
        };
        if theirs != item.ours {
            match self.transport.cancel(&uid) {
                Ok(()) => {}
                Err(TransportError::Rejected { code, .. }) if code == codes::UNKNOWN_OR_FINAL => {}
                Err(e) => return self.fail(item, format!("cancelling {uid}: {e}")),
            }
            item.state = ItemState::Rejected;
            item.error = Some(format!(
                "totals differ: ours total {} vtotal {}, DGI total {} vtotal {}; uid {uid} cancelled",
                item.ours.total, item.ours.vtotal, theirs.total, theirs.vtotal
            ));
            self.save(item)?;
            return Ok(Next::Stop);
        }
        item.state = ItemState::Confirming;
        self.save(item)?;
        match self.transport.confirm(&uid, &item.ours) {
            Ok(c) => {
                item.state = ItemState::Synced;
                item.confirmation = Some(c);
                item.error = None;
                self.save(item)?;
                Ok(Next::Stop)
            }
            Err(TransportError::Rejected { status, code, desc })
                if status < 500 && code != codes::UNKNOWN_OR_FINAL =>
            {
                // The DGI refused the confirm itself (its totals check):
                // nothing was confirmed. Cancel the pending uid so it does
                // not linger, and report.
                let _ = self.transport.cancel(&uid);
                item.state = ItemState::Rejected;
                item.error = Some(format!(
                    "DGI refused CONFIRM of {uid}: error {code}: {desc}"
                ));
                self.save(item)?;
                Ok(Next::Stop)
            }
            Err(e) => {
                // Otherwise ask the DGI where the uid stands (on the next
                // attempt) rather than guess.
                self.fail(item, e.to_string())
            }
        }
    }

    /// The CONFIRM's answer was lost (or refused): ask the DGI.
    fn find_lost_confirm(&self, item: &mut OutboxItem) -> Result<Next, AgentError> {
        let Some(uid) = item.uid.clone() else {
            item.state = ItemState::Queued;
            self.save(item)?;
            return Ok(Next::Continue);
        };
        match self.transport.details(&uid) {
            Ok(d) => match (d.status, d.confirmation) {
                (DgiInvoiceState::Confirmed, Some(c)) => {
                    item.state = ItemState::Synced;
                    item.confirmation = Some(c);
                    item.error = None;
                    self.save(item)?;
                    Ok(Next::Stop)
                }
                (DgiInvoiceState::Pending, _) => {
                    // Still pending, so never confirmed: confirm it now.
                    item.state = ItemState::Submitted;
                    item.theirs = Some(d.totals);
                    self.save(item)?;
                    Ok(Next::Continue)
                }
                (DgiInvoiceState::Cancelled | DgiInvoiceState::Expired, _) => {
                    item.state = ItemState::Queued;
                    item.uid = None;
                    item.theirs = None;
                    self.save(item)?;
                    Ok(Next::Continue)
                }
                (state, _) => {
                    item.state = ItemState::Dead;
                    item.error = Some(format!(
                        "uid {uid} is {state:?} at the DGI without its elements; check on the DGI portal"
                    ));
                    self.save(item)?;
                    Ok(Next::Stop)
                }
            },
            Err(TransportError::Rejected { code, desc, .. }) if code == codes::UNKNOWN_OR_FINAL => {
                item.state = ItemState::Dead;
                item.error = Some(format!(
                    "the outcome of CONFIRM for uid {uid} is unknown and the e-MCF does not report finalised invoices ({desc}); check on the DGI portal, then requeue or resolve it"
                ));
                self.save(item)?;
                Ok(Next::Stop)
            }
            Err(e) => self.fail(item, e.to_string()),
        }
    }

    /// Puts a dead item back in the queue (after a person checked it was
    /// not confirmed), with a fresh retry budget.
    ///
    /// # Errors
    /// [`OutboxError::WrongState`] unless the item is dead.
    pub fn requeue(&self, outlet: &str, seq: u64) -> Result<OutboxItem, AgentError> {
        let mut item = self
            .outbox
            .claim(outlet, seq, self.clock.now_ms(), self.config.lease_ms)?
            .ok_or_else(|| OutboxError::NotFound(format!("{outlet}:{seq}")))?;
        if item.state != ItemState::Dead {
            return Err(OutboxError::WrongState {
                id: item.id(),
                state: item.state.as_str(),
                wanted: "dead",
            }
            .into());
        }
        item.state = ItemState::Queued;
        item.uid = None;
        item.theirs = None;
        item.attempts = 0;
        item.next_attempt_ms = 0;
        self.save(&mut item)?;
        Ok(item)
    }
}
