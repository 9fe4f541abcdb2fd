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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bonopay_ledger::{EntryKind, LedgerStore};
use bonopay_signer::certification::{Certification, CertificationSource};
use bonopay_signer::{Fiscalizer, SealError};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::dgi::outbox::{ItemState, NewItem, OutboxError, OutboxItem, OutboxStore};
use crate::dgi::{DgiTransport, MappingError, TransportError, codes, map_sealed_body};

/// The start of the error of an item dead-lettered because the answer to
/// its CONFIRM was lost.
pub const LOST_CONFIRM: &str = "CONFIRM outcome unknown";

/// Binds the DGI's elements into the tamper-evident record, and answers
/// what credit notes need about their originals. The [`Fiscalizer`] is the
/// implementation; the trait keeps the agent testable without one.
pub trait CertificationRecorder: std::fmt::Debug + Send + Sync {
    /// Records the elements of the invoice at `outlet`/`seq` (exactly
    /// once: recording the same elements again is not an error).
    ///
    /// # Errors
    /// A message; the agent retries later.
    fn record(
        &self,
        outlet: &str,
        seq: u64,
        elements: &crate::dgi::DgiConfirmation,
        source: CertificationSource,
        uid: Option<&str>,
    ) -> Result<(), RecordError>;

    /// The invoice a credit note's reference names (its Bono Pay code or
    /// its Code DEF/DGI): outlet and seq.
    ///
    /// # Errors
    /// A message.
    fn original(&self, reference: &str) -> Result<Option<(String, u64)>, RecordError>;

    /// The Code DEF/DGI the invoice at `outlet`/`seq` was certified with.
    ///
    /// # Errors
    /// A message.
    fn dgi_code(&self, outlet: &str, seq: u64) -> Result<Option<String>, RecordError>;
}

/// Why recording failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Worth retrying (signer or storage down).
    #[error("cannot record now: {0}")]
    Unavailable(String),
    /// Never going to work for these elements (the invoice is certified
    /// with others, or the elements cannot be genuine).
    #[error("refused: {0}")]
    Refused(String),
}

fn record_error(e: SealError) -> RecordError {
    if e.is_retryable() {
        RecordError::Unavailable(e.to_string())
    } else {
        RecordError::Refused(e.to_string())
    }
}

impl CertificationRecorder for Fiscalizer {
    fn record(
        &self,
        outlet: &str,
        seq: u64,
        elements: &crate::dgi::DgiConfirmation,
        source: CertificationSource,
        uid: Option<&str>,
    ) -> Result<(), RecordError> {
        self.record_certification(outlet, seq, elements, source, uid)
            .map(|_| ())
            .map_err(record_error)
    }

    fn original(&self, reference: &str) -> Result<Option<(String, u64)>, RecordError> {
        self.find_original(reference)
            .map(|o| o.map(|s| (s.invoice.tuple.outlet.clone(), s.seq)))
            .map_err(record_error)
    }

    fn dgi_code(&self, outlet: &str, seq: u64) -> Result<Option<String>, RecordError> {
        self.certification_of(outlet, seq)
            .map(|c| c.map(|c: Certification| c.elements.code_def_dgi))
            .map_err(record_error)
    }
}

/// The state of one merchant's e-MCF account, for health.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AccountHealth {
    /// Seller NIF.
    pub nif: String,
    /// Why uploads are paused (an expired, refused or missing token);
    /// `None` while they run.
    pub paused: Option<String>,
    /// Since when (ms).
    pub paused_since_ms: Option<i64>,
    /// When the token expires, as the e-MCF last said (`tokenValid`).
    pub token_valid: Option<String>,
    /// Where the e-MCF's tax group table differs from ours.
    pub rate_differences: Vec<String>,
    /// The last time the account was checked (ms).
    pub checked_ms: Option<i64>,
}

/// How often a paused account is probed (a new token may be in place).
pub const PAUSED_PROBE_MS: i64 = 15_000;

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
    clock: Arc<dyn SyncClock>,
    jitter: Mutex<Box<dyn Jitter>>,
    config: AgentConfig,
    /// Which outlets are uploaded (default: every outlet of the ledger).
    outlets: Option<OutletFilter>,
    /// Our tax rates by group letter, compared with the e-MCF's.
    our_rates: Option<BTreeMap<String, Decimal>>,
    health: Mutex<BTreeMap<String, AccountHealth>>,
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
            transport: Some(transport),
            accounts: BTreeMap::new(),
            recorder: None,
            clock,
            jitter: Mutex::new(jitter),
            config,
            outlets: None,
            our_rates: None,
            health: Mutex::new(BTreeMap::new()),
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

    /// The state of each merchant's e-MCF account.
    #[must_use]
    pub fn account_health(&self) -> Vec<AccountHealth> {
        lock(&self.health).values().cloned().collect()
    }

    /// Whether `nif`'s uploads are paused, and why.
    #[must_use]
    pub fn paused(&self, nif: &str) -> Option<String> {
        let h = lock(&self.health);
        h.get(nif)
            .or_else(|| h.get("*"))
            .and_then(|a| a.paused.clone())
    }

    fn pause(&self, nif: &str, why: String) {
        let now = self.clock.now_ms();
        let mut h = lock(&self.health);
        let key = if self.accounts.contains_key(nif) {
            nif
        } else {
            "*"
        };
        let a = h.entry(key.to_owned()).or_insert_with(|| AccountHealth {
            nif: key.to_owned(),
            ..AccountHealth::default()
        });
        if a.paused.is_none() {
            a.paused_since_ms = Some(now);
        }
        a.paused = Some(why);
        a.checked_ms = Some(now);
    }

    /// Whether items of `nif` may be worked on now: not paused, or paused
    /// and due for a probe that finds the token good again.
    fn may_work(&self, nif: &str) -> bool {
        let key = if self.accounts.contains_key(nif) {
            nif
        } else {
            "*"
        };
        let (paused, checked) = {
            let h = lock(&self.health);
            match h.get(key) {
                Some(a) => (a.paused.is_some(), a.checked_ms.unwrap_or(i64::MIN)),
                None => (false, i64::MIN),
            }
        };
        if !paused {
            return true;
        }
        if self.clock.now_ms().saturating_sub(checked) < PAUSED_PROBE_MS {
            return false;
        }
        match self.transport_for(nif) {
            Some(t) => self.check_account(key, t.as_ref()),
            None => false,
        }
    }

    /// Asks the e-MCF for the account's status (token validity) and, when
    /// rates are given, its tax group table. Pauses the account when its
    /// token is expired or refused, resumes it when the token is good.
    /// Returns whether uploads may go on.
    fn check_account(&self, key: &str, t: &dyn DgiTransport) -> bool {
        let now = self.clock.now_ms();
        let status = t.status();
        let mut h = lock(&self.health);
        let a = h.entry(key.to_owned()).or_insert_with(|| AccountHealth {
            nif: key.to_owned(),
            ..AccountHealth::default()
        });
        a.checked_ms = Some(now);
        let trouble = match &status {
            Ok(s) => {
                a.token_valid = (!s.token_valid.is_empty()).then(|| s.token_valid.clone());
                // Against the e-MCF's own clock when it gives it (ours may
                // be off), else ours.
                let their_now = crate::dgi::parse_dgi_time(&s.server_date_time).unwrap_or(now);
                match crate::dgi::parse_dgi_time(&s.token_valid) {
                    Some(until) if until <= their_now => Some(format!(
                        "the e-MCF token expired at {}; put a new one in place",
                        s.token_valid
                    )),
                    _ => None,
                }
            }
            Err(TransportError::Unauthorized(why)) => Some(format!(
                "the e-MCF refused the token ({why}); put a new one in place"
            )),
            // The e-MCF is down or slow: not the token's fault, uploads
            // retry per item as usual.
            Err(_) => None,
        };
        match trouble {
            Some(why) => {
                if a.paused.is_none() {
                    a.paused_since_ms = Some(now);
                }
                a.paused = Some(why);
                false
            }
            None => {
                a.paused = None;
                a.paused_since_ms = None;
                true
            }
        }
    }

    /// Checks every account: token validity from `GET /api/invoice`, and
    /// the e-MCF's tax groups (`GET /api/info/taxGroups`) against ours. A
    /// difference is kept for health and returned (the caller logs it);
    /// it is never silently ignored. Run at start and now and then.
    pub fn check_accounts(&self) -> Vec<AccountHealth> {
        for (key, t) in self.all_accounts() {
            self.check_account(&key, t.as_ref());
            if let Some(ours) = &self.our_rates {
                let diffs = match t.info("taxGroups") {
                    Ok(v) => crate::dgi::tax_group_differences(&v, ours),
                    Err(TransportError::Unauthorized(_)) => continue,
                    Err(e) => vec![format!("cannot read the e-MCF's tax groups: {e}")],
                };
                let mut h = lock(&self.health);
                if let Some(a) = h.get_mut(&key) {
                    a.rate_differences = diffs;
                }
            }
        }
        self.account_health()
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
        item.attempts = item.attempts.saturating_add(1);
        item.error = Some(format!("the e-MCF is unreachable: {why}"));
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

    /// Whether an `rn` is one of ours: an SFE number of an outlet this agent
    /// uploads, or the `{outlet}:{seq}` of older outbox rows.
    fn is_ours(&self, rn: &str) -> Result<bool, AgentError> {
        let outlet = match bonopay_signer::certification::parse_sfe_number(rn) {
            Some((outlet, _, _)) => outlet,
            None => match rn.rsplit_once(':') {
                Some((outlet, seq)) if seq.parse::<u64>().is_ok() => outlet,
                _ => return Ok(false),
            },
        };
        if !self.uploads(outlet) {
            return Ok(false);
        }
        Ok(self.ledger.outlets()?.iter().any(|o| o == outlet))
    }

    /// Handles each account's pending list: cancels pending uids of ours
    /// that no item holds (a POST whose answer was lost; its item posts
    /// again). Run at start and now and then.
    ///
    /// # Errors
    /// [`AgentError`]; transport failures are reported, not raised, and
    /// leave things for the next run.
    pub fn reconcile(&self) -> Result<ReconcileReport, AgentError> {
        let mut report = ReconcileReport::default();
        for (_, t) in self.all_accounts() {
            self.reconcile_account(t.as_ref(), &mut report)?;
        }
        Ok(report)
    }

    fn reconcile_account(
        &self,
        transport: &dyn DgiTransport,
        report: &mut ReconcileReport,
    ) -> Result<(), AgentError> {
        let Ok(status) = transport.status() else {
            return Ok(());
        };
        let in_flight = self.outbox.in_flight()?;
        let owned: BTreeSet<String> = in_flight.iter().filter_map(|i| i.uid.clone()).collect();
        // Items whose POST answer was lost, by the `rn` they were sent with.
        let lost: HashMap<String, OutboxItem> = in_flight
            .into_iter()
            .filter(|i| i.state == ItemState::Submitting)
            .map(|i| (i.request.rn.clone(), i))
            .collect();
        for p in status.pending {
            if owned.contains(&p.uid) {
                continue;
            }
            // The details echo the request of a pending invoice; only its
            // `rn` is read (the e-MCF reports nothing else, `dgi-emcf.md` §8).
            let Ok(d) = transport.details(&p.uid) else {
                continue;
            };
            if !self.is_ours(&d.rn)? {
                report.foreign.push(p.uid);
                continue;
            }
            // Ours, and no item holds this uid: an orphan of a POST whose
            // answer was lost (or that arrived late). Never confirmed, so
            // cancelling it is safe; the item posts again, and only the
            // answer it then reads is ever confirmed.
            if transport.cancel(&p.uid).is_ok() {
                if let Some(it) = lost.get(&d.rn) {
                    self.repost_after_cancel(it)?;
                }
                report.cancelled.push(p.uid);
            }
        }
        Ok(())
    }

    fn repost_after_cancel(&self, it: &OutboxItem) -> Result<(), AgentError> {
        let Some(_held) = self.hold(&it.outlet, it.seq) else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        if let Some(mut it) = self
            .outbox
            .claim(&it.outlet, it.seq, now, self.config.lease_ms)?
            && it.state == ItemState::Submitting
        {
            it.state = ItemState::Queued;
            it.uid = None;
            it.theirs = None;
            match self.save(&mut it) {
                Ok(()) | Err(AgentError::Outbox(OutboxError::ClaimLost(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
            let next = match item.state {
                ItemState::Confirmed => self.record(item)?,
                _ => {
                    let Some(t) = self.transport_for(&item.merchant_nif) else {
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

    /// The token was refused: pause the merchant's uploads (health shows
    /// why) and leave the item as it is, its budget intact.
    fn unauthorized(&self, item: &mut OutboxItem, why: &str) -> Result<Next, AgentError> {
        self.pause(
            &item.merchant_nif,
            format!("the e-MCF refused the token ({why}); put a new one in place"),
        );
        item.error = Some(format!("paused: the e-MCF refused the token ({why})"));
        self.save(item)?;
        Ok(Next::Stop)
    }

    /// The request to send: a credit note's reference becomes its
    /// original's Code DEF/DGI, which the e-MCF checks (errors 10, 11). A
    /// credit note whose original is not certified yet waits behind it.
    fn request_to_send(
        &self,
        item: &mut OutboxItem,
    ) -> Result<Result<crate::dgi::DgiInvoiceRequest, Next>, AgentError> {
        let mut req = item.request.clone();
        let is_credit = matches!(req.invoice_type.as_str(), "FA" | "EA");
        if !is_credit || req.reference.is_empty() || req.reference == "RRR" {
            return Ok(Ok(req));
        }
        let Some(recorder) = &self.recorder else {
            return Ok(Ok(req));
        };
        let original = match recorder.original(&req.reference) {
            Ok(Some(o)) => o,
            Ok(None) => {
                item.state = ItemState::Rejected;
                item.error = Some(format!(
                    "the original invoice {} of this credit note is not in the ledger",
                    req.reference
                ));
                self.save(item)?;
                return Ok(Err(Next::Stop));
            }
            Err(e) => return self.fail(item, e.to_string()).map(Err),
        };
        match recorder.dgi_code(&original.0, original.1) {
            Ok(Some(code)) => {
                req.reference = code;
                Ok(Ok(req))
            }
            Ok(None) => {
                let why = format!(
                    "waiting for the original invoice {}:{} to be certified by the DGI",
                    original.0, original.1
                );
                let ms = self.config.backoff_base_ms.saturating_mul(2);
                self.wait(item, why, ms).map(Err)
            }
            Err(e) => self.fail(item, e.to_string()).map(Err),
        }
    }

    fn submit(&self, t: &dyn DgiTransport, item: &mut OutboxItem) -> Result<Next, AgentError> {
        let in_flight = self.outbox.in_flight()?.len();
        if in_flight >= self.config.max_pending {
            // The e-MCF's cap: wait, untouched (no write), until an
            // in-flight item settles; it stays due for the next pass.
            return Ok(Next::Stop);
        }
        let request = match self.request_to_send(item)? {
            Ok(r) => r,
            Err(next) => return Ok(next),
        };
        item.state = ItemState::Submitting;
        item.uid = None;
        item.theirs = None;
        self.save(item)?;
        match t.submit(&request) {
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
            Err(TransportError::Rejected { code, desc, .. })
                if code == codes::TOO_MANY_PENDING || code == codes::ORIGINAL_NOT_CERTIFIED =>
            {
                // Not created; worth trying again later (a slot frees up,
                // the original becomes verifiable).
                item.state = ItemState::Queued;
                self.fail(item, format!("DGI error {code}: {desc}"))
            }
            Err(TransportError::Rejected { status, code, desc }) if status < 500 => {
                item.state = ItemState::Rejected;
                item.error = Some(format!("DGI refused the invoice: error {code}: {desc}"));
                self.save(item)?;
                Ok(Next::Stop)
            }
            Err(TransportError::Unauthorized(why)) => {
                // Refused at the door: certainly not created.
                item.state = ItemState::Queued;
                self.unauthorized(item, &why)
            }
            Err(e @ TransportError::Unreachable(_)) => {
                // Certainly not created: the e-MCF cannot be reached. An
                // outage is no reason to give up on a sale (the DGI allows
                // 48 h, and health turns red then): back off, never dead.
                item.state = ItemState::Queued;
                self.outage(item, e.to_string())
            }
            Err(e) => {
                // Maybe created: stay `submitting` and reconcile next time.
                self.fail(item, e.to_string())
            }
        }
    }

    /// The POST's answer was lost: look for a pending uid with our `rn`. The
    /// e-MCF's details echo the request without the DGI's totals, so a uid
    /// found is cancelled (it was never confirmed) and the invoice posted
    /// again, whose answer carries the totals the two-phase check needs.
    fn find_lost_post(
        &self,
        t: &dyn DgiTransport,
        item: &mut OutboxItem,
    ) -> Result<Next, AgentError> {
        let status = match t.status() {
            Ok(s) => s,
            Err(TransportError::Unauthorized(why)) => return self.unauthorized(item, &why),
            Err(e) => return self.fail(item, e.to_string()),
        };
        let owned: BTreeSet<String> = self
            .outbox
            .in_flight()?
            .into_iter()
            .filter_map(|i| i.uid)
            .collect();
        for p in status.pending {
            if owned.contains(&p.uid) {
                continue;
            }
            match t.details(&p.uid) {
                Ok(d) if d.rn == item.request.rn => match t.cancel(&p.uid) {
                    Ok(()) => {}
                    Err(TransportError::Rejected { code, .. })
                        if code == codes::UNKNOWN_OR_FINAL => {}
                    Err(e) => return self.fail(item, format!("cancelling {}: {e}", p.uid)),
                },
                Ok(_) => {}
                // Finalised since the status call: a uid of ours is only
                // ever confirmed by the item holding it, so not ours.
                Err(TransportError::Rejected { code, .. }) if code == codes::UNKNOWN_OR_FINAL => {}
                Err(TransportError::Unauthorized(why)) => return self.unauthorized(item, &why),
                Err(e) => return self.fail(item, e.to_string()),
            }
        }
        // Nothing of ours is pending now: the POST never arrived, expired,
        // or was just cancelled. Nothing was confirmed: post again.
        item.state = ItemState::Queued;
        item.uid = None;
        item.theirs = None;
        self.save(item)?;
        Ok(Next::Continue)
    }

    fn confirm(&self, t: &dyn DgiTransport, item: &mut OutboxItem) -> Result<Next, AgentError> {
        let (Some(uid), Some(theirs)) = (item.uid.clone(), item.theirs) else {
            item.state = ItemState::Queued;
            self.save(item)?;
            return Ok(Next::Continue);
        };
        if theirs != item.ours {
            match t.cancel(&uid) {
                Ok(()) => {}
                Err(TransportError::Rejected { code, .. }) if code == codes::UNKNOWN_OR_FINAL => {}
                Err(TransportError::Unauthorized(why)) => return self.unauthorized(item, &why),
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
        self.send_confirm(t, item, &uid, false)
    }

    /// The CONFIRM's answer was lost: ask the DGI whether the uid is still
    /// pending. If it is, the CONFIRM never took effect: confirm it now. If
    /// the e-MCF no longer knows it (error 20), it was confirmed by that
    /// CONFIRM or expired before it arrived, and the e-MCF reports the
    /// elements of a finalised invoice to nobody: a person reads the DGI
    /// portal and either enters the elements ([`SyncAgent::resolve`]) or
    /// requeues the invoice ([`SyncAgent::requeue`]). Posting it again
    /// could certify one sale twice, so the agent never does.
    fn find_lost_confirm(
        &self,
        t: &dyn DgiTransport,
        item: &mut OutboxItem,
    ) -> Result<Next, AgentError> {
        let Some(uid) = item.uid.clone() else {
            item.state = ItemState::Queued;
            self.save(item)?;
            return Ok(Next::Continue);
        };
        match t.details(&uid) {
            Ok(d) if d.rn == item.request.rn => {
                // Still pending: confirm it now, staying `confirming`. An
                // earlier CONFIRM of ours may still land (a timeout does
                // not stop the DGI), so if this one finds the uid final,
                // it is the lost-answer case, never an expiry.
                self.send_confirm(t, item, &uid, true)
            }
            Ok(d) => {
                item.state = ItemState::Dead;
                item.error = Some(format!(
                    "the e-MCF reports uid {uid} for SFE number {}, not {}: check on the DGI portal",
                    d.rn, item.request.rn
                ));
                self.save(item)?;
                Ok(Next::Stop)
            }
            Err(TransportError::Rejected { code, desc, .. }) if code == codes::UNKNOWN_OR_FINAL => {
                self.lost_confirm(item, &uid, &desc)
            }
            Err(TransportError::Unauthorized(why)) => self.unauthorized(item, &why),
            Err(e) => self.fail(item, e.to_string()),
        }
    }

    /// Dead-letters an item whose uid is final while a CONFIRM of ours may
    /// have reached it: confirmed or expired, nobody can tell through the
    /// API, so a person decides from the DGI portal.
    fn lost_confirm(
        &self,
        item: &mut OutboxItem,
        uid: &str,
        desc: &str,
    ) -> Result<Next, AgentError> {
        item.state = ItemState::Dead;
        item.error = Some(format!(
            "{LOST_CONFIRM}: the answer to a CONFIRM of uid {uid} was lost and the e-MCF no longer reports it ({desc}); it was confirmed or it expired. Look up SFE number {} on the DGI portal: if it is certified, enter its elements (resolve); if not, requeue it",
            item.request.rn
        ));
        self.save(item)?;
        Ok(Next::Stop)
    }

    /// Sends CONFIRM for an item stored `confirming`. `earlier` says
    /// whether an earlier CONFIRM of this uid may have reached the DGI (its
    /// outcome was unknown; the uid was seen pending since, but a timeout
    /// does not stop the DGI, so it may still land). Without one, error 20
    /// means the uid expired or was cancelled and the sale is posted again;
    /// with one, it is the lost-answer case, for a person.
    fn send_confirm(
        &self,
        t: &dyn DgiTransport,
        item: &mut OutboxItem,
        uid: &str,
        earlier: bool,
    ) -> Result<Next, AgentError> {
        match t.confirm(uid, &item.ours) {
            Ok(c) => {
                // Stored before anything else: the e-MCF never tells them
                // again.
                item.state = ItemState::Confirmed;
                item.confirmation = Some(c);
                item.error = None;
                self.save(item)?;
                Ok(Next::Continue)
            }
            Err(TransportError::Rejected { code, desc, .. }) if code == codes::UNKNOWN_OR_FINAL => {
                if earlier {
                    return self.lost_confirm(item, uid, &desc);
                }
                // Final, and not by a CONFIRM of ours: it expired (or was
                // cancelled), nothing was certified: post again.
                item.state = ItemState::Queued;
                item.uid = None;
                item.theirs = None;
                item.error = Some(format!("uid {uid} expired before its CONFIRM ({desc})"));
                self.save(item)?;
                Ok(Next::Continue)
            }
            Err(TransportError::Rejected { status, code, desc }) if status < 500 => {
                // The DGI refused the confirm itself (its totals check):
                // nothing was confirmed (an earlier one neither: the uid
                // was pending after it). Cancel the uid so it does not
                // linger, and report.
                let _ = t.cancel(uid);
                item.state = ItemState::Rejected;
                item.error = Some(format!(
                    "DGI refused CONFIRM of {uid}: error {code}: {desc}"
                ));
                self.save(item)?;
                Ok(Next::Stop)
            }
            // Refused at the door, or never sent: this CONFIRM did not take
            // effect. Without an earlier one the item is `submitted` again,
            // so a later error 20 can only mean an expiry.
            Err(TransportError::Unauthorized(why)) => {
                if !earlier {
                    item.state = ItemState::Submitted;
                }
                self.unauthorized(item, &why)
            }
            Err(e @ TransportError::Unreachable(_)) => {
                if !earlier {
                    item.state = ItemState::Submitted;
                }
                self.outage(item, e.to_string())
            }
            // Otherwise ask the DGI where the uid stands (on the next
            // attempt) rather than guess.
            Err(e) => self.fail(item, e.to_string()),
        }
    }

    /// Binds a confirmed item's elements into the ledger, then marks it
    /// synced. Retried until it succeeds.
    fn record(&self, item: &mut OutboxItem) -> Result<Next, AgentError> {
        let Some(elements) = item.confirmation.clone() else {
            // Cannot happen (confirmed is stored with its elements); never
            // lose the item over it.
            return self.fail(item, "confirmed without elements".into());
        };
        if let Some(recorder) = &self.recorder {
            match recorder.record(
                &item.outlet,
                item.seq,
                &elements,
                CertificationSource::Emcf,
                item.uid.as_deref(),
            ) {
                Ok(()) => {}
                Err(e) => {
                    return self.fail(item, format!("recording the DGI's elements: {e}"));
                }
            }
        }
        item.state = ItemState::Synced;
        item.error = None;
        self.save(item)?;
        Ok(Next::Stop)
    }

    /// Holds and claims a dead item for a person's decision.
    fn take_dead(&self, outlet: &str, seq: u64) -> Result<(Busy<'_>, OutboxItem), AgentError> {
        let held = self
            .hold(outlet, seq)
            .ok_or_else(|| OutboxError::ClaimLost(format!("{outlet}:{seq}")))?;
        let item = self
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
        Ok((held, item))
    }

    /// Puts a dead item back in the queue (after a person checked it was
    /// not confirmed), with a fresh retry budget.
    ///
    /// # Errors
    /// [`OutboxError::WrongState`] unless the item is dead.
    pub fn requeue(&self, outlet: &str, seq: u64) -> Result<OutboxItem, AgentError> {
        let (_held, mut item) = self.take_dead(outlet, seq)?;
        item.state = ItemState::Queued;
        item.uid = None;
        item.theirs = None;
        item.attempts = 0;
        item.next_attempt_ms = 0;
        self.save(&mut item)?;
        Ok(item)
    }

    /// Settles a dead item whose CONFIRM answer was lost, with the elements
    /// a person read on the DGI portal for its SFE number: they are bound
    /// into the ledger (source `operator`, so a verifier sees they were
    /// typed in) and the item is synced.
    ///
    /// # Errors
    /// [`OutboxError::WrongState`] unless the item is dead;
    /// [`AgentError::Record`] when the ledger refuses the elements.
    pub fn resolve(
        &self,
        outlet: &str,
        seq: u64,
        elements: &crate::dgi::DgiConfirmation,
    ) -> Result<OutboxItem, AgentError> {
        let (_held, mut item) = self.take_dead(outlet, seq)?;
        elements
            .check()
            .map_err(|e| AgentError::Record(RecordError::Refused(e)))?;
        if let Some(recorder) = &self.recorder {
            recorder
                .record(
                    outlet,
                    seq,
                    elements,
                    CertificationSource::Operator,
                    item.uid.as_deref(),
                )
                .map_err(AgentError::Record)?;
        }
        item.state = ItemState::Synced;
        item.confirmation = Some(elements.clone());
        item.error = Some("resolved by a person from the DGI portal".into());
        self.save(&mut item)?;
        Ok(item)
    }
}
