//! The durable outbox of the DGI sync agent: one item per sealed invoice or
//! credit note, with its upload state.
//!
//! The ledger is the source: items are enqueued from each outlet's chain
//! past a per-outlet cursor that advances in the same transaction as the
//! insert, so a crash can never lose an invoice between sealing and upload
//! (a re-scan re-inserts nothing: items are unique per ledger position).
//!
//! ```text
//!            POST ok                 totals equal         CONFIRM ok   recorded in
//! queued ───────────► submitted ───────────────────► confirming ──► confirmed ──► synced
//!   │  ▲  POST lost       │ totals differ: CANCEL        │ outcome lost:           (the ledger)
//!   │  │  (timeout, 5xx)  ▼                              │ GET details(uid)
//!   │  └─ submitting ◄─ rejected                         │  echo (pending) → CONFIRM again
//!   │      (reconcile: CANCEL the pending uid            │  error 20 (final) → dead: a person
//!   │       with our rn, then POST again)                │    reads the DGI portal, then
//!   └──► rejected (the DGI refused the content)          │    resolves (elements) or requeues
//! any state but confirmed ──► dead when the retry budget is spent (a person decides)
//! ```
//!
//! `confirmed` holds the DGI's elements, stored before anything else is
//! done with them: the e-MCF never reports them again. It becomes `synced`
//! once they are bound into the ledger (a `certification` entry); that
//! step is retried until it succeeds and never dead-lettered.
//!
//! The write-ahead rule: the state that says what is about to be sent
//! (`submitting`, `confirming`) is stored *before* the call, so after any
//! crash the agent knows what may have happened and reconciles instead of
//! repeating a non-idempotent call blindly.

//!
//! Backends sit side by side, as in `bonopay-ledger`: [`sqlite`] (feature
//! `sqlite`, in the ledger's own file) and [`postgres`] (feature
//! `postgres`, shared by several instances). Every backend runs the one
//! conformance suite, [`conformance`] (feature `testing`).

#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use serde::{Deserialize, Serialize};

use crate::dgi::{DgiConfirmation, DgiInvoiceRequest, DgiTotals};

/// Where an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ItemState {
    /// Waiting to be sent.
    Queued,
    /// A POST may be under way or may have been lost: reconcile first.
    Submitting,
    /// The DGI holds it pending under `uid`.
    Submitted,
    /// A CONFIRM may be under way or may have been lost: ask the DGI.
    Confirming,
    /// Confirmed by the DGI; its elements are stored here, not yet bound
    /// into the ledger.
    Confirmed,
    /// Confirmed by the DGI and its elements bound into the ledger. Final.
    Synced,
    /// The DGI refused it (an error, or totals that differ). Final.
    Rejected,
    /// The retry budget is spent, or the outcome cannot be established
    /// automatically. Needs a person; never retried by itself.
    Dead,
}

impl ItemState {
    /// Every state.
    pub const ALL: [ItemState; 8] = [
        ItemState::Queued,
        ItemState::Submitting,
        ItemState::Submitted,
        ItemState::Confirming,
        ItemState::Confirmed,
        ItemState::Synced,
        ItemState::Rejected,
        ItemState::Dead,
    ];

    /// The stable name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ItemState::Queued => "queued",
            ItemState::Submitting => "submitting",
            ItemState::Submitted => "submitted",
            ItemState::Confirming => "confirming",
            ItemState::Confirmed => "confirmed",
            ItemState::Synced => "synced",
            ItemState::Rejected => "rejected",
            ItemState::Dead => "dead",
        }
    }

    /// Parses the stable name.
    #[must_use]
    pub fn from_code(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// In flight: the DGI may hold a pending invoice for it.
    #[must_use]
    pub const fn in_flight(self) -> bool {
        matches!(
            self,
            ItemState::Submitting | ItemState::Submitted | ItemState::Confirming
        )
    }

    /// Final: the agent will not touch it again.
    #[must_use]
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            ItemState::Synced | ItemState::Rejected | ItemState::Dead
        )
    }
}

/// A new item, from a sealed invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    /// Outlet.
    pub outlet: String,
    /// Ledger position.
    pub seq: u64,
    /// Seller NIF.
    pub merchant_nif: String,
    /// When it was sealed (trusted time, ms).
    pub sealed_at_ms: i64,
    /// The e-MCF request.
    pub request: DgiInvoiceRequest,
    /// Our DGI totals.
    pub ours: DgiTotals,
}

/// An outbox item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Outlet.
    pub outlet: String,
    /// Ledger position.
    pub seq: u64,
    /// Seller NIF.
    pub merchant_nif: String,
    /// When it was sealed (ms).
    pub sealed_at_ms: i64,
    /// The e-MCF request (its `rn` is `{outlet}:{seq}`).
    pub request: DgiInvoiceRequest,
    /// Our totals.
    pub ours: DgiTotals,
    /// State.
    pub state: ItemState,
    /// The DGI's pending handle, once known.
    pub uid: Option<String>,
    /// The DGI's totals, once known.
    pub theirs: Option<DgiTotals>,
    /// The DGI's elements, once synced.
    pub confirmation: Option<DgiConfirmation>,
    /// The last error (DGI error, transport failure, totals that differ).
    pub error: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time (ms).
    pub next_attempt_ms: i64,
    /// Last change (ms).
    pub updated_ms: i64,
    /// Global, increasing change number of the last update (for webhooks
    /// and dashboards that follow the outbox).
    pub change: u64,
}

impl OutboxItem {
    /// The invoice id `{outlet}:{seq}` (also the e-MCF `rn`).
    #[must_use]
    pub fn id(&self) -> String {
        format!("{}:{}", self.outlet, self.seq)
    }
}

/// Per-outlet counts and ages, for sync health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutletSummary {
    /// Outlet.
    pub outlet: String,
    /// Items per state.
    pub counts: std::collections::BTreeMap<ItemState, u64>,
    /// Seal time of the oldest item not synced (queued or in flight).
    pub oldest_unsynced_ms: Option<i64>,
    /// Last time an item became synced.
    pub last_synced_ms: Option<i64>,
    /// Items not synced that have failed at least once.
    pub failing: u64,
}

/// The per-outlet, per-state aggregate every backend's
/// [`OutboxStore::summary`] runs (plain SQL that SQLite and PostgreSQL
/// both accept); rows go to [`SummaryRows::add`].
pub const SUMMARY_SQL: &str = "SELECT outlet, state, COUNT(*),
        MIN(CASE WHEN state NOT IN ('synced', 'rejected') THEN sealed_at_ms END),
        MAX(CASE WHEN state = 'synced' THEN updated_ms END),
        SUM(CASE WHEN state NOT IN ('synced', 'rejected') AND attempts > 0 THEN 1 ELSE 0 END)
     FROM sync_outbox GROUP BY outlet, state";

/// Folds the rows of [`SUMMARY_SQL`] into per-outlet summaries.
#[derive(Debug, Default)]
pub struct SummaryRows(std::collections::BTreeMap<String, OutletSummary>);

impl SummaryRows {
    /// One row: outlet, state, count, oldest unsynced seal time, last
    /// sync time, failing count.
    ///
    /// # Errors
    /// [`OutboxError::Corrupt`] for an unknown state or a negative count.
    pub fn add(
        &mut self,
        outlet: String,
        state: &str,
        n: i64,
        oldest: Option<i64>,
        synced: Option<i64>,
        failing: i64,
    ) -> Result<(), OutboxError> {
        let corrupt = |e: String| OutboxError::Corrupt(e);
        let state = ItemState::from_code(state)
            .ok_or_else(|| corrupt(format!("unknown state `{state}`")))?;
        let s = self
            .0
            .entry(outlet.clone())
            .or_insert_with(|| OutletSummary {
                outlet,
                ..OutletSummary::default()
            });
        s.counts
            .insert(state, u64::try_from(n).map_err(|e| corrupt(e.to_string()))?);
        if let Some(o) = oldest {
            s.oldest_unsynced_ms = Some(s.oldest_unsynced_ms.map_or(o, |x| x.min(o)));
        }
        if let Some(t) = synced {
            s.last_synced_ms = Some(s.last_synced_ms.map_or(t, |x| x.max(t)));
        }
        s.failing += u64::try_from(failing).map_err(|e| corrupt(e.to_string()))?;
        Ok(())
    }

    /// The summaries, by outlet.
    #[must_use]
    pub fn finish(self) -> Vec<OutletSummary> {
        self.0.into_values().collect()
    }
}

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The storage failed; retry later.
    #[error("outbox storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not read back.
    #[error("outbox data corrupt: {0}")]
    Corrupt(String),
    /// No such item.
    #[error("no outbox item {0}")]
    NotFound(String),
    /// Another worker (another server instance) holds the item's claim:
    /// this worker must leave it alone.
    #[error("outbox item {0} is claimed by another worker")]
    ClaimLost(String),
    /// The item is not in a state that allows this.
    #[error("outbox item {id} is {state}, not {wanted}")]
    WrongState {
        /// Item id.
        id: String,
        /// Its state.
        state: &'static str,
        /// What the operation needs.
        wanted: &'static str,
    },
}

/// Storage of the outbox. Synchronous and object-safe.
pub trait OutboxStore: std::fmt::Debug + Send + Sync {
    /// The last ledger seq of `outlet` already scanned into the outbox.
    ///
    /// # Errors
    /// [`OutboxError`].
    fn cursor(&self, outlet: &str) -> Result<u64, OutboxError>;

    /// Inserts `items` (ignoring positions already present) and moves the
    /// outlet's cursor to `scanned_to`, atomically.
    ///
    /// # Errors
    /// [`OutboxError`]; nothing is written on error.
    fn enqueue(&self, outlet: &str, scanned_to: u64, items: &[NewItem]) -> Result<(), OutboxError>;

    /// Items not final whose `next_attempt_ms` is due, oldest due first.
    ///
    /// # Errors
    /// [`OutboxError`].
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxItem>, OutboxError>;

    /// Claims the items this worker should work on now: those in flight
    /// whose retry time has come first (they hold the e-MCF's pending
    /// slots), then the due ones, at most `limit` of the latter. A claim
    /// lasts `lease_ms` and every [`OutboxStore::update`] by the claimant
    /// renews it, so agents of several server instances never work on one
    /// item at once, and an item whose claimant died is taken over when
    /// its lease ends. Stores used by a single agent need not claim.
    ///
    /// # Errors
    /// [`OutboxError`].
    fn claim_due(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, OutboxError> {
        let _ = lease_ms;
        let mut items: Vec<OutboxItem> = self
            .in_flight()?
            .into_iter()
            .filter(|i| i.next_attempt_ms <= now_ms)
            .collect();
        items.extend(
            self.due(now_ms, limit)?
                .into_iter()
                .filter(|i| !i.state.in_flight()),
        );
        Ok(items)
    }

    /// Claims one item (to adopt or requeue it): `None` when it does not
    /// exist or another worker holds a live claim on it.
    ///
    /// # Errors
    /// [`OutboxError`].
    fn claim(
        &self,
        outlet: &str,
        seq: u64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<OutboxItem>, OutboxError> {
        let _ = (now_ms, lease_ms);
        self.get(outlet, seq)
    }

    /// Items in flight (submitting, submitted, confirming).
    ///
    /// # Errors
    /// [`OutboxError`].
    fn in_flight(&self) -> Result<Vec<OutboxItem>, OutboxError>;

    /// One item.
    ///
    /// # Errors
    /// [`OutboxError`].
    fn get(&self, outlet: &str, seq: u64) -> Result<Option<OutboxItem>, OutboxError>;

    /// Stores the item's state (everything but its identity and request),
    /// durably, and gives it the next change number, which it returns.
    /// Stores that claim refuse it unless this worker holds the claim.
    ///
    /// # Errors
    /// [`OutboxError`]; [`OutboxError::NotFound`] for an unknown item;
    /// [`OutboxError::ClaimLost`] when another worker holds it.
    fn update(&self, item: &OutboxItem) -> Result<u64, OutboxError>;

    /// Items changed after change number `after`, in change order.
    ///
    /// # Errors
    /// [`OutboxError`].
    fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<OutboxItem>, OutboxError>;

    /// Per-outlet counts and ages.
    ///
    /// # Errors
    /// [`OutboxError`].
    fn summary(&self) -> Result<Vec<OutletSummary>, OutboxError>;
}
