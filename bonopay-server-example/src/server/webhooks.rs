//! Webhooks: signed HTTP notifications of fiscal events to the merchant's
//! own systems, delivered durably with retries.
//!
//! **Events.** `invoice.sealed` (invoices and credit notes), `report.z_closed`
//! (Z reports), and `invoice.synced` / `invoice.sync_failed` (enqueued by the
//! DGI sync agent through [`Webhooks::enqueue_event`]). Each event has a
//! unique id (`invoice.sealed:{outlet}:{seq}`, `report.z_closed:{outlet}:{seq}`)
//! and is enqueued once; enqueuing it again is a no-op.
//!
//! **Subscribers.** An owner key registers an `http(s)` URL and the event
//! types it wants (`POST /v1/webhooks`); the server generates the
//! subscriber's secret (`whsec_…`) and shows it once. The secret is stored as
//! is in `auth.db` (the server must compute HMACs with it), never returned
//! again and never logged.
//!
//! **Requests.** `POST {url}` with the JSON body
//! `{"id", "type", "merchant_nif", "created_at", "data"}` and the headers
//! `Bonopay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! `Bonopay-Event-Id` and `Bonopay-Event-Type` (see
//! [`bonopay_sync::webhook`], which also verifies them). Receivers must
//! refuse a signature more than 300 s from their clock
//! ([`bonopay_sync::webhook::REPLAY_WINDOW_SECS`]) and de-duplicate on the
//! event id: delivery is at least once.
//!
//! **Retries.** A 2xx answer is success; anything else (another status, a
//! redirect, no answer within 10 s, no connection) is a failed attempt,
//! retried with exponential backoff and jitter ([`RetryPolicy`]: 5 s
//! doubling to at most 1 h, 12 attempts, then the delivery is `dead`).
//! Every attempt is logged and listed by `GET /v1/webhooks/{id}/deliveries`.
//!
//! **Destinations.** Public internet addresses only, unless the operator
//! allows more (`egress.allow` in `config.json`): see [`super::egress`]. A
//! URL on a loopback, private, link-local, metadata… address, in any
//! spelling, is refused at registration (422), and every connection
//! resolves its host through the policy, so a name that answers such an
//! address later is refused too. Such an attempt is logged as failed with
//! the error `destination not allowed` and no status: nothing was sent.
//!
//! **Durability.** Everything lives behind a [`WebhookStore`]: in SQLite
//! (the `webhook_*` tables of `auth.db`, [`SqliteWebhookStore`]) or, for
//! several instances over one database, in PostgreSQL
//! ([`PgWebhookStore`](super::webhooks_pg::PgWebhookStore)): subscribers,
//! events, one delivery per (event, subscriber) with its state and next due
//! time, the attempt log, and a per-outlet cursor into the ledger. The
//! producer ([`Webhooks::produce`]) turns new ledger entries into events
//! and advances the outlet's cursor in the same transaction, after checking
//! that the cursor has not moved, so no entry is skipped or enqueued twice
//! across crashes or by two instances at once. The dispatcher
//! ([`Webhooks::dispatch_due`]) claims due deliveries with a lease, sends
//! them, and records each outcome; a crash mid-send re-sends after the
//! lease. `bonopay serve` runs both every two seconds ([`Webhooks::spawn`]);
//! on start it resumes whatever is due.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, USER_AGENT};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bonopay_ledger::{Entry, EntryKind, LedgerStore};
use bonopay_signer::{Clock, SealedInvoice, SystemClock};
use bonopay_sync::webhook::{EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, sign};
use rand_core::{OsRng, RngCore};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::auth::{ApiKey, ApiKeyStore, prepare_auth_db};
use super::egress::{Egress, EgressError, NOT_ALLOWED};
use super::error::{ApiError, ErrorBody, FieldError};
use super::{ApiJson, ApiPath, ApiQuery, Principal, Shared, blocking};

/// Most subscribers a merchant may have.
pub const MAX_SUBSCRIBERS_PER_MERCHANT: usize = 16;
/// Longest accepted subscriber URL.
pub const MAX_URL_LEN: usize = 2048;
/// Longest accepted event id.
pub const MAX_EVENT_ID_LEN: usize = 200;
/// Ledger entries turned into events per SQLite transaction.
const PRODUCE_BATCH: usize = 256;
/// Deliveries claimed (and sent concurrently) per round.
const DISPATCH_BATCH: usize = 32;
/// Rounds per [`Webhooks::dispatch_due`] call, so one call always ends.
const DISPATCH_ROUNDS: usize = 64;
/// Longest error text kept in the attempt log.
const MAX_ERROR_LEN: usize = 300;

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    /// An invoice or a credit note was sealed into the ledger.
    #[serde(rename = "invoice.sealed")]
    InvoiceSealed,
    /// The DGI accepted an invoice.
    #[serde(rename = "invoice.synced")]
    InvoiceSynced,
    /// The DGI certified an invoice: its elements (`codeDEFDGI`, `nim`,
    /// `counters`, `dateTime`, `qrCode`) are bound into the ledger, and
    /// receipts now print them as a facture normalisée.
    #[serde(rename = "invoice.certified")]
    InvoiceCertified,
    /// The DGI refused an invoice, or sending it failed for good.
    #[serde(rename = "invoice.sync_failed")]
    InvoiceSyncFailed,
    /// A Z report closed a session.
    #[serde(rename = "report.z_closed")]
    ReportZClosed,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 5] = [
        EventType::InvoiceSealed,
        EventType::InvoiceSynced,
        EventType::InvoiceCertified,
        EventType::InvoiceSyncFailed,
        EventType::ReportZClosed,
    ];

    /// The wire name, e.g. `invoice.sealed`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::InvoiceSealed => "invoice.sealed",
            EventType::InvoiceSynced => "invoice.synced",
            EventType::InvoiceCertified => "invoice.certified",
            EventType::InvoiceSyncFailed => "invoice.sync_failed",
            EventType::ReportZClosed => "report.z_closed",
        }
    }

    /// The event type named `s`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Webhook failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The webhook tables could not be read or written.
    #[error("webhook store: {0}")]
    Storage(String),
    /// The ledger or the key store could not be read, or a ledger entry
    /// could not be turned into an event.
    #[error("webhook source: {0}")]
    Source(String),
    /// An event type that does not exist.
    #[error("unknown event type `{0}`")]
    UnknownEventType(String),
    /// An event id that is empty, too long or not printable ASCII.
    #[error("invalid event id: {0}")]
    InvalidEventId(String),
}

impl WebhookError {
    /// Whether trying again later may succeed (storage and sources), as
    /// opposed to a bad argument.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, WebhookError::Storage(_) | WebhookError::Source(_))
    }
}

pub(crate) fn storage(e: impl fmt::Display) -> WebhookError {
    WebhookError::Storage(e.to_string())
}

fn source(e: impl fmt::Display) -> WebhookError {
    WebhookError::Source(e.to_string())
}

/// A source of jitter for retry delays. A trait so tests can fix it.
pub trait Jitter: fmt::Debug + Send + Sync {
    /// A uniformly random number in `0..=max_ms`.
    fn jitter_ms(&self, max_ms: u64) -> u64;
}

/// Jitter from the operating system's random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn jitter_ms(&self, max_ms: u64) -> u64 {
        let Some(span) = max_ms.checked_add(1) else {
            return OsRng.next_u64();
        };
        let mut b = [0u8; 8];
        if OsRng.try_fill_bytes(&mut b).is_err() {
            return max_ms / 2;
        }
        u64::from_le_bytes(b) % span
    }
}

/// When to retry a failed delivery.
///
/// After failed attempt `n` (from 1) the next one is due after a delay
/// drawn uniformly in `[e/2, e]` where `e = min(cap, base · 2^(n−1))`
/// ("equal jitter": retries of many deliveries spread out, and never come
/// sooner than half the exponential step). After `max_attempts` failed
/// attempts the delivery is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First step (default 5 s).
    pub base: Duration,
    /// Largest step (default 1 h).
    pub cap: Duration,
    /// Attempts in all, the first included (default 12).
    pub max_attempts: u32,
    /// How long an attempt may wait for the answer (default 10 s).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 s doubling to 1 h, 12 attempts, 10 s per attempt.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(3600),
            max_attempts: 12,
            timeout: Duration::from_secs(10),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (from 1).
    #[must_use]
    pub fn delay(&self, attempt: u32, jitter: &dyn Jitter) -> Duration {
        let shift = attempt.saturating_sub(1).min(40);
        let step = millis(self.base)
            .saturating_mul(1u64 << shift)
            .min(millis(self.cap));
        let half = step / 2;
        Duration::from_millis(step - half + jitter.jitter_ms(half).min(half))
    }

    /// How long a claimed delivery stays reserved for the dispatcher that
    /// claimed it: past this, a crash mid-send is assumed and it is due
    /// again. The attempt's timeout plus 15 s, the margin the DGI outbox
    /// allows a dead claimant (its takeover grace is the e-MCF timeout plus
    /// 15 s): with the 10 s default a dead instance's deliveries move on
    /// after 25 s, within the outbox's 45 s.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(15)
    }
}

/// A subscriber, as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subscriber {
    /// `whk_` + 16 hex characters.
    pub id: String,
    /// Its merchant.
    pub merchant_nif: String,
    /// Where events are posted.
    pub url: String,
    /// The event types it receives.
    pub events: Vec<EventType>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A created subscriber with its signing secret, shown this once.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    /// The subscriber.
    pub webhook: Subscriber,
    /// The signing secret (`whsec_…`): the HMAC-SHA256 key of the
    /// `Bonopay-Signature` header, as these UTF-8 bytes. It cannot be shown
    /// again.
    pub secret: String,
}

impl fmt::Debug for CreatedWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedWebhook")
            .field("webhook", &self.webhook)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// The receiver answered 2xx.
    Sent,
    /// Anything else; see `http_status` and `error`.
    Failed,
}

/// Where a delivery (an event for one subscriber) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; an attempt is due at `next_attempt_at`.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every attempt failed; no more will be made.
    Dead,
    /// The subscriber was deleted before it was delivered.
    Cancelled,
}

impl DeliveryState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Dead,
            DeliveryState::Cancelled,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// One logged attempt to deliver an event to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttempt {
    /// The event.
    pub event_id: String,
    /// Its type.
    pub event_type: EventType,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// Sent or failed.
    pub status: AttemptStatus,
    /// The receiver's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 time the attempt started.
    pub started_at: String,
    /// RFC 3339 time it ended.
    pub completed_at: String,
    /// When this failure scheduled the next attempt (absent after a
    /// success or the last attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// Where the delivery stands now.
    pub delivery_state: DeliveryState,
}

/// What one run of the producer and dispatcher did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// New events enqueued from the ledger.
    pub events: usize,
    /// Attempts answered 2xx.
    pub sent: usize,
    /// Attempts that failed (retried later or given up).
    pub failed: usize,
    /// Deliveries that failed their last attempt (now dead).
    pub dead: usize,
}

// ----- storage ---------------------------------------------------------------

/// An event to enqueue ([`WebhookStore::enqueue`],
/// [`WebhookStore::commit_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id (`invoice.sealed:{outlet}:{seq}`, …): an event is stored
    /// once, whoever enqueues it again.
    pub id: String,
    /// Its merchant: only this merchant's subscribers receive it.
    pub merchant_nif: String,
    /// Its type: only subscribers that want it receive it.
    pub kind: EventType,
    /// The request body's `data`, as JSON text.
    pub payload: String,
}

/// A delivery claimed for one attempt ([`WebhookStore::claim_due`]): the
/// signed request to send and where.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// The delivery (one event for one subscriber).
    pub delivery_id: i64,
    /// The event's id (`Bonopay-Event-Id`).
    pub event_id: String,
    /// The event's type (`Bonopay-Event-Type`).
    pub event_type: String,
    /// The request body: `{"id", "type", "merchant_nif", "created_at", "data"}`.
    pub body: Vec<u8>,
    /// The subscriber's URL.
    pub url: String,
    /// The subscriber's signing secret.
    pub secret: String,
    /// The delivery's due time while claimed: the end of the lease. It is
    /// also the claim's identity: once a lease has ended and another
    /// dispatcher has claimed the delivery, its due time is that
    /// dispatcher's lease, and [`WebhookStore::record`] lets the late one
    /// log its attempt but not reschedule the delivery.
    pub lease_until_ms: i64,
}

impl fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("delivery_id", &self.delivery_id)
            .field("event_id", &self.event_id)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("lease_until_ms", &self.lease_until_ms)
            .finish_non_exhaustive()
    }
}

/// The request body of a stored event, as every backend builds it.
pub(crate) fn event_body(
    event_id: &str,
    event_type: &str,
    merchant_nif: &str,
    payload: &str,
    created_at: &str,
) -> Vec<u8> {
    let data: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    let body = json!({
        "id": event_id,
        "type": event_type,
        "merchant_nif": merchant_nif,
        "created_at": created_at,
        "data": data,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// The receiver's HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// Why it failed; `None` for a 2xx answer.
    pub error: Option<String>,
    /// When it started (Unix ms).
    pub started_ms: i64,
    /// When it ended (Unix ms).
    pub completed_ms: i64,
}

/// What recording an attempt did to its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The attempt succeeded.
    Sent,
    /// The attempt failed; another one will be made.
    Retry,
    /// The attempt failed and was the last one: the delivery is dead.
    Dead,
}

/// When the next attempt after failed attempt `n` (from 1) is due (Unix
/// ms), or `None` if attempt `n` was the last. The service's retry policy,
/// handed to [`WebhookStore::record`] so the store applies it to the
/// attempt count it holds locked.
pub type Schedule<'a> = &'a dyn Fn(u32) -> Option<i64>;

/// The storage of the webhook service: subscribers, events, one delivery
/// per (event, subscriber) with its state and due time, the attempt log,
/// and a per-outlet cursor into the ledger. Synchronous and object-safe;
/// the service ([`Webhooks`]) holds it as `Arc<dyn WebhookStore>` and calls
/// it from blocking threads. [`SqliteWebhookStore`] (`auth.db`) and
/// [`PgWebhookStore`](super::webhooks_pg::PgWebhookStore) (shared by
/// several server instances) implement it and pass one conformance suite
/// ([`webhooks_conformance`](super::webhooks_conformance), feature
/// `conformance`).
///
/// Times are given by the caller (the service's clock), never read from
/// the database's, so tests drive them and every instance agrees with its
/// own signatures.
pub trait WebhookStore: fmt::Debug + Send + Sync {
    /// Stores `subscriber` with its signing `secret`, unless its merchant
    /// has `max_per_merchant` subscribers already (`Ok(false)`). The count
    /// and the insert are one atomic step: racing creations never exceed
    /// the limit.
    ///
    /// # Errors
    /// [`WebhookError::Storage`], also for a duplicate id.
    fn insert_subscriber(
        &self,
        subscriber: &Subscriber,
        secret: &str,
        max_per_merchant: usize,
    ) -> Result<bool, WebhookError>;

    /// The merchant's subscribers (not deleted ones), oldest first.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    fn list_subscribers(&self, merchant_nif: &str) -> Result<Vec<Subscriber>, WebhookError>;

    /// Deletes subscriber `id` of `merchant_nif` and cancels its pending
    /// deliveries (its log is kept); `false` if the merchant has no such
    /// subscriber.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    fn delete_subscriber(&self, merchant_nif: &str, id: &str) -> Result<bool, WebhookError>;

    /// The attempt log of subscriber `id` of `merchant_nif`, newest first,
    /// at most `limit` attempts; `None` if the merchant has no such
    /// subscriber.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    fn delivery_log(
        &self,
        merchant_nif: &str,
        id: &str,
        limit: u32,
    ) -> Result<Option<Vec<DeliveryAttempt>>, WebhookError>;

    /// Stores `event` if its id is new, with a pending delivery due at
    /// `now_ms` for every current subscriber of its merchant that wants
    /// its type; `false` (and nothing changed) if the id was stored before.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    fn enqueue(&self, event: &NewEvent, now_ms: i64) -> Result<bool, WebhookError>;

    /// The first ledger seq of `outlet` not turned into events yet (1 for
    /// an outlet never seen).
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    fn cursor(&self, outlet: &str) -> Result<u64, WebhookError>;

    /// Enqueues `events` (the events of `outlet`'s entries `from_seq ..
    /// next_seq`) and moves the cursor from `from_seq` to `next_seq`, in
    /// one transaction — if the cursor is still at `from_seq`. Otherwise
    /// another producer got there first: nothing is written and the answer
    /// is `None`. `Some(n)`: `n` events were new (an event stored before,
    /// say after a lost cursor, is not enqueued again). The cursor never
    /// moves backwards.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    fn commit_events(
        &self,
        outlet: &str,
        from_seq: u64,
        events: &[NewEvent],
        next_seq: u64,
        now_ms: i64,
    ) -> Result<Option<usize>, WebhookError>;

    /// Claims up to `limit` pending deliveries due at `now_ms` (of
    /// subscribers not deleted), soonest due first, by moving their due
    /// time to `lease_until_ms`: no other claim takes them before then,
    /// from this handle or any other on the same storage. A claim that is
    /// never recorded (a crash mid-send) lapses at `lease_until_ms`.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, WebhookError>;

    /// Logs an attempt at `claim` as attempt `n` (one more than the
    /// delivery's stored count) and moves the delivery on: delivered after
    /// a success; after a failure, pending again at `schedule(n)`, or dead
    /// if that is `None`. A delivery cancelled meanwhile stays cancelled;
    /// one claimed by someone else since (its lease had ended) keeps that
    /// claim, unless this attempt succeeded (then it is delivered).
    ///
    /// # Errors
    /// [`WebhookError::Storage`], also for an unknown delivery.
    fn record(
        &self,
        claim: &ClaimedDelivery,
        outcome: &AttemptOutcome,
        schedule: Schedule<'_>,
    ) -> Result<Recorded, WebhookError>;
}

/// What recording an attempt writes, decided from the delivery's row as it
/// stands (locked) at that moment: one rule for every backend.
pub(crate) struct RecordPlan {
    pub(crate) attempt: u32,
    pub(crate) state: DeliveryState,
    pub(crate) next_attempt_ms: Option<i64>,
    /// The retry this attempt scheduled, for the log.
    pub(crate) logged_next_ms: Option<i64>,
    pub(crate) recorded: Recorded,
}

impl RecordPlan {
    pub(crate) fn new(
        attempts: u32,
        state: &str,
        next_attempt_ms: Option<i64>,
        claim: &ClaimedDelivery,
        outcome: &AttemptOutcome,
        schedule: Schedule<'_>,
    ) -> Result<Self, WebhookError> {
        let state = DeliveryState::parse(state)
            .ok_or_else(|| WebhookError::Storage(format!("unknown delivery state `{state}`")))?;
        let attempt = attempts.saturating_add(1);
        let pending = state == DeliveryState::Pending;
        let plan = |state, next, logged, recorded| Self {
            attempt,
            state,
            next_attempt_ms: next,
            logged_next_ms: logged,
            recorded,
        };
        if outcome.error.is_none() {
            // Delivered is delivered, whoever holds the lease now; a
            // cancelled (or already finished) delivery keeps its state.
            let state = if pending {
                DeliveryState::Delivered
            } else {
                state
            };
            return Ok(plan(state, None, None, Recorded::Sent));
        }
        let ours = pending && next_attempt_ms == Some(claim.lease_until_ms);
        if pending && !ours {
            // Taken over after the lease: the current claimant schedules.
            return Ok(plan(state, next_attempt_ms, None, Recorded::Retry));
        }
        let next = schedule(attempt);
        let recorded = if next.is_some() {
            Recorded::Retry
        } else {
            Recorded::Dead
        };
        Ok(match (pending, next) {
            (true, Some(at)) => plan(DeliveryState::Pending, Some(at), Some(at), recorded),
            (true, None) => plan(DeliveryState::Dead, None, None, recorded),
            (false, _) => plan(state, None, None, recorded),
        })
    }

    pub(crate) fn status(outcome: &AttemptOutcome) -> &'static str {
        if outcome.error.is_none() {
            "sent"
        } else {
            "failed"
        }
    }
}

/// A row of the attempt log as stored, before its names are checked.
pub(crate) struct StoredAttempt {
    pub(crate) event_id: String,
    pub(crate) event_type: String,
    pub(crate) attempt: u32,
    pub(crate) status: String,
    pub(crate) http_status: Option<u16>,
    pub(crate) error: Option<String>,
    pub(crate) started_at: String,
    pub(crate) completed_at: String,
    pub(crate) next_attempt_at: Option<String>,
    pub(crate) state: String,
}

impl StoredAttempt {
    pub(crate) fn parse(self) -> Result<DeliveryAttempt, WebhookError> {
        Ok(DeliveryAttempt {
            event_type: EventType::parse(&self.event_type).ok_or_else(|| {
                WebhookError::Storage(format!("unknown event type `{}`", self.event_type))
            })?,
            event_id: self.event_id,
            attempt: self.attempt,
            status: match self.status.as_str() {
                "sent" => AttemptStatus::Sent,
                "failed" => AttemptStatus::Failed,
                other => {
                    return Err(WebhookError::Storage(format!(
                        "unknown attempt status `{other}`"
                    )));
                }
            },
            http_status: self.http_status,
            error: self.error,
            started_at: self.started_at,
            completed_at: self.completed_at,
            next_attempt_at: self.next_attempt_at,
            delivery_state: DeliveryState::parse(&self.state).ok_or_else(|| {
                WebhookError::Storage(format!("unknown delivery state `{}`", self.state))
            })?,
        })
    }
}

pub(crate) fn to_i64(n: u64) -> Result<i64, WebhookError> {
    i64::try_from(n).map_err(storage)
}

pub(crate) fn to_u64_cursor(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(1).max(1)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhook_subscribers (
    id           TEXT PRIMARY KEY,
    merchant_nif TEXT NOT NULL,
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,            -- as shown once: the HMAC key
    events       TEXT NOT NULL,            -- comma-separated event types
    created_at   TEXT NOT NULL,
    disabled     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhook_subscribers_merchant ON webhook_subscribers(merchant_nif);
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id     TEXT PRIMARY KEY,
    merchant_nif TEXT NOT NULL,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,            -- JSON
    created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL,
    subscriber_id   TEXT NOT NULL,
    state           TEXT NOT NULL,         -- pending | delivered | dead | cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER,               -- due time (Unix ms) while pending
    created_at      TEXT NOT NULL,
    UNIQUE (event_id, subscriber_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(state, next_attempt_ms);
CREATE INDEX IF NOT EXISTS webhook_deliveries_subscriber ON webhook_deliveries(subscriber_id);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id     INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,      -- 1, 2, …
    status          TEXT NOT NULL,         -- sent | failed
    http_status     INTEGER,
    error           TEXT,
    started_at      TEXT NOT NULL,
    completed_at    TEXT NOT NULL,
    next_attempt_at TEXT,                  -- the retry this failure scheduled
    PRIMARY KEY (delivery_id, attempt)
);
CREATE TABLE IF NOT EXISTS webhook_cursors (
    outlet   TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL              -- first ledger seq not turned into events yet
);
";

/// [`WebhookStore`] on SQLite: the `webhook_*` tables of `auth.db` in
/// `bonopay serve` (one connection; every write an `IMMEDIATE`
/// transaction, so several handles on one file serialize).
pub struct SqliteWebhookStore {
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteWebhookStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteWebhookStore").finish_non_exhaustive()
    }
}

impl SqliteWebhookStore {
    /// Opens (creating its tables in) the database at `path`.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn open(path: &Path) -> Result<Self, WebhookError> {
        Self::init(Connection::open(path).map_err(storage)?)
    }

    /// An in-memory database: nothing survives the store.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn in_memory() -> Result<Self, WebhookError> {
        Self::init(Connection::open_in_memory().map_err(storage)?)
    }

    fn init(conn: Connection) -> Result<Self, WebhookError> {
        prepare_auth_db(&conn, SCHEMA).map_err(storage)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, WebhookError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| WebhookError::Storage("connection lock poisoned".into()))?;
        f(&mut conn).map_err(storage)
    }
}

/// Inserts the event (if new) and a pending delivery, due now, for each
/// current subscriber of its merchant that wants its type.
fn enqueue_tx(tx: &Transaction<'_>, ev: &NewEvent, now_ms: i64) -> rusqlite::Result<bool> {
    let created_at = rfc3339(now_ms);
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO webhook_events (event_id, merchant_nif, type, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            ev.id,
            ev.merchant_nif,
            ev.kind.as_str(),
            ev.payload,
            created_at
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    let subscribers = {
        let mut st = tx.prepare_cached(
            "SELECT id, events FROM webhook_subscribers WHERE merchant_nif = ?1 AND disabled = 0",
        )?;
        st.query_map(params![ev.merchant_nif], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    for (id, events) in subscribers {
        if events_of(&events).contains(&ev.kind) {
            tx.execute(
                "INSERT OR IGNORE INTO webhook_deliveries
                     (event_id, subscriber_id, state, attempts, next_attempt_ms, created_at)
                 VALUES (?1, ?2, 'pending', 0, ?3, ?4)",
                params![ev.id, id, now_ms, created_at],
            )?;
        }
    }
    Ok(true)
}

impl WebhookStore for SqliteWebhookStore {
    fn insert_subscriber(
        &self,
        s: &Subscriber,
        secret: &str,
        max_per_merchant: usize,
    ) -> Result<bool, WebhookError> {
        let max = i64::try_from(max_per_merchant).unwrap_or(i64::MAX);
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n: i64 = tx.query_row(
                "SELECT COUNT(*) FROM webhook_subscribers WHERE merchant_nif = ?1 AND disabled = 0",
                params![s.merchant_nif],
                |r| r.get(0),
            )?;
            if n >= max {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO webhook_subscribers (id, merchant_nif, url, secret, events, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.id,
                    s.merchant_nif,
                    s.url,
                    secret,
                    events_text(&s.events),
                    s.created_at
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn list_subscribers(&self, merchant_nif: &str) -> Result<Vec<Subscriber>, WebhookError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, merchant_nif, url, events, created_at FROM webhook_subscribers
                 WHERE merchant_nif = ?1 AND disabled = 0 ORDER BY rowid",
            )?;
            st.query_map(params![merchant_nif], |r| {
                Ok(Subscriber {
                    id: r.get(0)?,
                    merchant_nif: r.get(1)?,
                    url: r.get(2)?,
                    events: events_of(&r.get::<_, String>(3)?),
                    created_at: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    fn delete_subscriber(&self, merchant_nif: &str, id: &str) -> Result<bool, WebhookError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE webhook_subscribers SET disabled = 1
                 WHERE id = ?1 AND merchant_nif = ?2 AND disabled = 0",
                params![id, merchant_nif],
            )?;
            if n > 0 {
                tx.execute(
                    "UPDATE webhook_deliveries SET state = 'cancelled', next_attempt_ms = NULL
                     WHERE subscriber_id = ?1 AND state = 'pending'",
                    params![id],
                )?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn delivery_log(
        &self,
        merchant_nif: &str,
        id: &str,
        limit: u32,
    ) -> Result<Option<Vec<DeliveryAttempt>>, WebhookError> {
        let rows = self.with(|c| {
            let exists = c
                .query_row(
                    "SELECT 1 FROM webhook_subscribers WHERE id = ?1 AND merchant_nif = ?2 AND disabled = 0",
                    params![id, merchant_nif],
                    |_| Ok(()),
                )
                .optional()?;
            if exists.is_none() {
                return Ok(None);
            }
            let mut st = c.prepare_cached(
                "SELECT d.event_id, e.type, a.attempt, a.status, a.http_status, a.error,
                        a.started_at, a.completed_at, a.next_attempt_at, d.state
                 FROM webhook_attempts a
                 JOIN webhook_deliveries d ON d.id = a.delivery_id
                 JOIN webhook_events e ON e.event_id = d.event_id
                 WHERE d.subscriber_id = ?1
                 ORDER BY a.rowid DESC LIMIT ?2",
            )?;
            st.query_map(params![id, limit], |r| {
                Ok(StoredAttempt {
                    event_id: r.get(0)?,
                    event_type: r.get(1)?,
                    attempt: r.get(2)?,
                    status: r.get(3)?,
                    http_status: r.get(4)?,
                    error: r.get(5)?,
                    started_at: r.get(6)?,
                    completed_at: r.get(7)?,
                    next_attempt_at: r.get(8)?,
                    state: r.get(9)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map(Some)
        })?;
        rows.map(|rows| rows.into_iter().map(StoredAttempt::parse).collect())
            .transpose()
    }

    fn enqueue(&self, ev: &NewEvent, now_ms: i64) -> Result<bool, WebhookError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let new = enqueue_tx(&tx, ev, now_ms)?;
            tx.commit()?;
            Ok(new)
        })
    }

    fn cursor(&self, outlet: &str) -> Result<u64, WebhookError> {
        let next: Option<i64> = self.with(|c| {
            c.query_row(
                "SELECT next_seq FROM webhook_cursors WHERE outlet = ?1",
                params![outlet],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(to_u64_cursor(next))
    }

    fn commit_events(
        &self,
        outlet: &str,
        from_seq: u64,
        events: &[NewEvent],
        next_seq: u64,
        now_ms: i64,
    ) -> Result<Option<usize>, WebhookError> {
        let next = to_i64(next_seq)?;
        self.with(|c| {
            // IMMEDIATE: the write lock is taken before the cursor is read,
            // so the check and the move are one step for every connection.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored: Option<i64> = tx
                .query_row(
                    "SELECT next_seq FROM webhook_cursors WHERE outlet = ?1",
                    params![outlet],
                    |r| r.get(0),
                )
                .optional()?;
            if to_u64_cursor(stored) != from_seq {
                return Ok(None);
            }
            let mut n = 0;
            for ev in events {
                if enqueue_tx(&tx, ev, now_ms)? {
                    n += 1;
                }
            }
            tx.execute(
                "INSERT INTO webhook_cursors (outlet, next_seq) VALUES (?1, ?2)
                 ON CONFLICT(outlet) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)",
                params![outlet, next],
            )?;
            tx.commit()?;
            Ok(Some(n))
        })
    }

    fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, WebhookError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let due = {
                let mut st = tx.prepare_cached(
                    "SELECT d.id, e.event_id, e.type, e.merchant_nif, e.payload, e.created_at, s.url, s.secret
                     FROM webhook_deliveries d
                     JOIN webhook_events e ON e.event_id = d.event_id
                     JOIN webhook_subscribers s ON s.id = d.subscriber_id
                     WHERE d.state = 'pending' AND d.next_attempt_ms <= ?1 AND s.disabled = 0
                     ORDER BY d.next_attempt_ms, d.id LIMIT ?2",
                )?;
                st.query_map(params![now_ms, limit], |r| {
                    let event_id: String = r.get(1)?;
                    let event_type: String = r.get(2)?;
                    let body = event_body(
                        &event_id,
                        &event_type,
                        &r.get::<_, String>(3)?,
                        &r.get::<_, String>(4)?,
                        &r.get::<_, String>(5)?,
                    );
                    Ok(ClaimedDelivery {
                        delivery_id: r.get(0)?,
                        event_id,
                        event_type,
                        body,
                        url: r.get(6)?,
                        secret: r.get(7)?,
                        lease_until_ms,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
            };
            for d in &due {
                tx.execute(
                    "UPDATE webhook_deliveries SET next_attempt_ms = ?2 WHERE id = ?1",
                    params![d.delivery_id, lease_until_ms],
                )?;
            }
            tx.commit()?;
            Ok(due)
        })
    }

    fn record(
        &self,
        claim: &ClaimedDelivery,
        o: &AttemptOutcome,
        schedule: Schedule<'_>,
    ) -> Result<Recorded, WebhookError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (attempts, state, next): (u32, String, Option<i64>) = tx.query_row(
                "SELECT attempts, state, next_attempt_ms FROM webhook_deliveries WHERE id = ?1",
                params![claim.delivery_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let plan = match RecordPlan::new(attempts, &state, next, claim, o, schedule) {
                Ok(plan) => plan,
                Err(e) => return Ok(Err(e)),
            };
            tx.execute(
                "UPDATE webhook_deliveries SET attempts = ?2, state = ?3, next_attempt_ms = ?4
                 WHERE id = ?1",
                params![
                    claim.delivery_id,
                    plan.attempt,
                    plan.state.as_str(),
                    plan.next_attempt_ms
                ],
            )?;
            tx.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, status, http_status, error,
                     started_at, completed_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    claim.delivery_id,
                    plan.attempt,
                    RecordPlan::status(o),
                    o.http_status,
                    o.error,
                    rfc3339(o.started_ms),
                    rfc3339(o.completed_ms),
                    plan.logged_next_ms.map(rfc3339),
                ],
            )?;
            tx.commit()?;
            Ok(Ok(plan.recorded))
        })?
    }
}

// ----- the service -------------------------------------------------------------

/// The webhook service: subscribers, the event queue, the producer that
/// derives events from the ledger, and the dispatcher, over a
/// [`WebhookStore`]. It keeps what is not storage: HTTP sending, the retry
/// policy, the clock and the jitter. Cheap to clone (the clones share one
/// store). Its methods that touch the store are blocking; async code calls
/// them on the blocking pool.
#[derive(Clone)]
pub struct Webhooks {
    store: Arc<dyn WebhookStore>,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn Jitter>,
    policy: RetryPolicy,
    egress: Egress,
    client: reqwest::Client,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("egress", &self.egress)
            .finish_non_exhaustive()
    }
}

pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], WebhookError> {
    let mut b = [0u8; N];
    OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| WebhookError::Storage(format!("random source: {e}")))?;
    Ok(b)
}

fn events_text(events: &[EventType]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn events_of(text: &str) -> Vec<EventType> {
    text.split(',').filter_map(EventType::parse).collect()
}

/// The delivery client: resolves through `egress` and follows no
/// redirect (a receiver must not send the server elsewhere).
fn client_for(egress: &Egress) -> Result<reqwest::Client, WebhookError> {
    egress
        .client_builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| WebhookError::Storage(format!("HTTP client: {e}")))
}

fn join_error(e: tokio::task::JoinError) -> WebhookError {
    WebhookError::Storage(format!("blocking task failed: {e}"))
}

impl Webhooks {
    /// The service over SQLite at `path` (creating its tables) — `auth.db`
    /// in `bonopay serve`.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn open(path: &Path) -> Result<Self, WebhookError> {
        Self::with_store(Arc::new(SqliteWebhookStore::open(path)?))
    }

    /// The service over an in-memory database (tests, examples): nothing
    /// survives the process.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn in_memory() -> Result<Self, WebhookError> {
        Self::with_store(Arc::new(SqliteWebhookStore::in_memory()?))
    }

    /// The service over the PostgreSQL database at `url` (migrating it),
    /// shared with every other instance connected to it: see
    /// [`PgWebhookStore`](super::webhooks_pg::PgWebhookStore).
    ///
    /// # Errors
    /// [`WebhookError::Storage`] if the database cannot be reached or
    /// migrated.
    pub fn postgres(url: &str) -> Result<Self, WebhookError> {
        Self::with_store(Arc::new(super::webhooks_pg::PgWebhookStore::connect(url)?))
    }

    /// The service over `store`, with the system clock, random jitter,
    /// the default [`RetryPolicy`], and deliveries to public addresses only
    /// ([`Egress::default`]).
    ///
    /// # Errors
    /// [`WebhookError::Storage`] if the HTTP client cannot be built.
    pub fn with_store(store: Arc<dyn WebhookStore>) -> Result<Self, WebhookError> {
        let egress = Egress::default();
        Ok(Self {
            store,
            clock: Arc::new(SystemClock),
            jitter: Arc::new(RandomJitter),
            policy: RetryPolicy::default(),
            client: client_for(&egress)?,
            egress,
        })
    }

    /// Registers and delivers to the destinations `egress` allows (the
    /// operator's allow-list; tests allow their loopback receivers), and
    /// resolves names through it.
    ///
    /// # Errors
    /// [`WebhookError::Storage`] if the HTTP client cannot be built.
    pub fn with_egress(mut self, egress: impl Into<Egress>) -> Result<Self, WebhookError> {
        let egress = egress.into();
        self.client = client_for(&egress)?;
        self.egress = egress;
        Ok(self)
    }

    /// The destinations this service registers and delivers to.
    #[must_use]
    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// Uses `clock` for due times, signature timestamps and logged times
    /// (tests advance a `ManualClock` instead of sleeping).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `jitter` for retry delays.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The retry policy.
    #[must_use]
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The store the service works on.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn WebhookStore> {
        &self.store
    }

    // ----- subscribers -------------------------------------------------

    /// Registers a subscriber of `merchant_nif` for `events` at `url`
    /// (both already validated) and returns it with its new secret.
    /// `Ok(None)` if the merchant has [`MAX_SUBSCRIBERS_PER_MERCHANT`]
    /// already.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn create_subscriber(
        &self,
        merchant_nif: &str,
        url: &str,
        events: &[EventType],
    ) -> Result<Option<CreatedWebhook>, WebhookError> {
        let webhook = Subscriber {
            id: format!("whk_{}", hex::encode(random_bytes::<8>()?)),
            merchant_nif: merchant_nif.to_owned(),
            url: url.to_owned(),
            events: events.to_vec(),
            created_at: rfc3339(self.clock.now_ms()),
        };
        let secret = format!("whsec_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()?));
        let inserted =
            self.store
                .insert_subscriber(&webhook, &secret, MAX_SUBSCRIBERS_PER_MERCHANT)?;
        Ok(inserted.then_some(CreatedWebhook { webhook, secret }))
    }

    /// The merchant's subscribers (not deleted ones), oldest first.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn list_subscribers(&self, merchant_nif: &str) -> Result<Vec<Subscriber>, WebhookError> {
        self.store.list_subscribers(merchant_nif)
    }

    /// Deletes subscriber `id` of `merchant_nif` and cancels its pending
    /// deliveries (its log is kept). `false` if the merchant has no such
    /// subscriber.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn delete_subscriber(&self, merchant_nif: &str, id: &str) -> Result<bool, WebhookError> {
        self.store.delete_subscriber(merchant_nif, id)
    }

    /// The attempt log of subscriber `id` of `merchant_nif`, newest first,
    /// at most `limit` attempts; `None` if the merchant has no such
    /// subscriber.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn delivery_log(
        &self,
        merchant_nif: &str,
        id: &str,
        limit: u32,
    ) -> Result<Option<Vec<DeliveryAttempt>>, WebhookError> {
        self.store.delivery_log(merchant_nif, id, limit)
    }

    // ----- events ------------------------------------------------------

    /// Enqueues event `event_id` of `merchant_nif`, with one delivery for
    /// every current subscriber of the merchant that wants `event_type`.
    /// Idempotent on `event_id`: returns `true` if the event is new,
    /// `false` if it was enqueued before (nothing is changed then).
    /// Blocking (storage): call it from the blocking pool in async code.
    ///
    /// The DGI sync agent calls this for `invoice.synced` and
    /// `invoice.sync_failed` (event id e.g. `invoice.synced:{outlet}:{seq}`).
    ///
    /// # Errors
    /// [`WebhookError::UnknownEventType`], [`WebhookError::InvalidEventId`]
    /// (empty, longer than [`MAX_EVENT_ID_LEN`], or not printable ASCII
    /// without spaces), [`WebhookError::Storage`].
    pub fn enqueue_event(
        &self,
        event_id: &str,
        merchant_nif: &str,
        event_type: &str,
        payload: Value,
    ) -> Result<bool, WebhookError> {
        let kind = EventType::parse(event_type)
            .ok_or_else(|| WebhookError::UnknownEventType(event_type.to_owned()))?;
        if event_id.is_empty()
            || event_id.len() > MAX_EVENT_ID_LEN
            || !event_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(WebhookError::InvalidEventId(format!(
                "`{event_id}`: 1 to {MAX_EVENT_ID_LEN} printable ASCII characters, no spaces"
            )));
        }
        let ev = NewEvent {
            id: event_id.to_owned(),
            merchant_nif: merchant_nif.to_owned(),
            kind,
            payload: payload.to_string(),
        };
        self.store.enqueue(&ev, self.clock.now_ms())
    }

    /// Turns the ledger entries of every outlet registered in `keys` into
    /// events, from each outlet's stored cursor on: `invoice.sealed` for
    /// invoices and credit notes, `report.z_closed` for Z reports. Events
    /// and the advanced cursor commit in one transaction that first checks
    /// the cursor has not moved ([`WebhookStore::commit_events`]), so an
    /// entry is never skipped nor enqueued twice, also with several
    /// instances producing at once: the one that commits first wins, the
    /// others write nothing and leave the outlet to it. Outlets not
    /// registered in `keys` wait (their cursor does not move). Returns the
    /// number of new events. Blocking.
    ///
    /// # Errors
    /// [`WebhookError::Source`] if the ledger or key store fails or an
    /// entry cannot be read (that outlet stops at the entry; the others go
    /// on, and the first error is returned), [`WebhookError::Storage`].
    pub fn produce(
        &self,
        ledger: &dyn LedgerStore,
        keys: &dyn ApiKeyStore,
    ) -> Result<usize, WebhookError> {
        let mut total = 0;
        let mut first_error = None;
        for outlet in ledger.outlets().map_err(source)? {
            let merchant = match keys.outlet(&outlet) {
                Ok(Some(o)) => o.merchant_nif,
                Ok(None) => continue,
                Err(e) => {
                    first_error.get_or_insert(source(e));
                    continue;
                }
            };
            match self.produce_outlet(ledger, &outlet, &merchant) {
                Ok(n) => total += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    fn produce_outlet(
        &self,
        ledger: &dyn LedgerStore,
        outlet: &str,
        merchant: &str,
    ) -> Result<usize, WebhookError> {
        let mut from = self.store.cursor(outlet)?;
        let head = ledger.head(outlet).map_err(source)?.seq;
        if head < from {
            return Ok(0);
        }
        let mut total = 0;
        let mut batch = Vec::new();
        let mut scanned = 0;
        let mut next = from;
        for entry in ledger.iter_from(outlet, from) {
            let entry = entry.map_err(source)?;
            if entry.seq > head {
                break;
            }
            if let Some(ev) = event_of(&entry, merchant)? {
                batch.push(ev);
            }
            next = entry.seq.saturating_add(1);
            scanned += 1;
            if scanned >= PRODUCE_BATCH {
                match self.commit(outlet, from, &batch, next)? {
                    Some(n) => total += n,
                    // Another producer moved the cursor: it has this outlet.
                    None => return Ok(total),
                }
                from = next;
                batch.clear();
                scanned = 0;
            }
        }
        if scanned > 0 {
            total += self.commit(outlet, from, &batch, next)?.unwrap_or(0);
        }
        Ok(total)
    }

    fn commit(
        &self,
        outlet: &str,
        from: u64,
        events: &[NewEvent],
        next: u64,
    ) -> Result<Option<usize>, WebhookError> {
        self.store
            .commit_events(outlet, from, events, next, self.clock.now_ms())
    }

    // ----- dispatch ----------------------------------------------------

    /// Sends one claimed delivery, signed at the clock's current second.
    /// A destination the egress policy refuses (a literal address here,
    /// the resolved addresses in the client's resolver) is not contacted
    /// and is logged as [`NOT_ALLOWED`], with no status.
    async fn attempt(&self, d: &ClaimedDelivery) -> AttemptOutcome {
        let started_ms = self.clock.now_ms();
        if self.egress.check_url(&d.url).is_err() {
            return AttemptOutcome {
                http_status: None,
                error: Some(NOT_ALLOWED.to_owned()),
                started_ms,
                completed_ms: self.clock.now_ms(),
            };
        }
        let signature = sign(d.secret.as_bytes(), started_ms.div_euclid(1000), &d.body);
        let sent = self
            .client
            .post(&d.url)
            .timeout(self.policy.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("bonopay-webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, &d.event_id)
            .header(EVENT_TYPE_HEADER, &d.event_type)
            .body(d.body.clone())
            .send()
            .await;
        let (http_status, error) = match sent {
            Ok(resp) if resp.status().is_success() => (Some(resp.status().as_u16()), None),
            Ok(resp) => (
                Some(resp.status().as_u16()),
                Some(format!("the receiver answered {}", resp.status())),
            ),
            Err(e) if EgressError::is_refusal(&e) => (None, Some(NOT_ALLOWED.to_owned())),
            Err(e) if e.is_timeout() => (
                None,
                Some(format!(
                    "no answer within {} ms",
                    self.policy.timeout.as_millis()
                )),
            ),
            Err(e) => (None, Some(describe(&e))),
        };
        AttemptOutcome {
            http_status,
            error,
            started_ms,
            completed_ms: self.clock.now_ms(),
        }
    }

    /// Logs an attempt and moves its delivery on: delivered, retried after
    /// the policy's delay, or dead.
    fn record(&self, d: &ClaimedDelivery, o: &AttemptOutcome) -> Result<Recorded, WebhookError> {
        let policy = self.policy;
        let jitter = self.jitter.as_ref();
        let schedule = |n: u32| {
            (n < policy.max_attempts).then(|| {
                o.completed_ms
                    .saturating_add(millis_i64(policy.delay(n, jitter)))
            })
        };
        self.store.record(d, o, &schedule)
    }

    /// Sends every delivery that is due now (by the service's clock), in
    /// rounds of up to 32 sent concurrently, and records each attempt.
    /// Each round claims its deliveries for one lease (see
    /// [`RetryPolicy`]), so instances dispatching from one shared store
    /// never send a delivery at the same time, unless one stalls past the
    /// lease.
    ///
    /// # Errors
    /// [`WebhookError::Storage`] (attempts already made stay recorded).
    pub async fn dispatch_due(&self) -> Result<RunSummary, WebhookError> {
        let mut summary = RunSummary::default();
        for _ in 0..DISPATCH_ROUNDS {
            let now = self.clock.now_ms();
            let lease_until = now.saturating_add(millis_i64(self.policy.lease()));
            let store = Arc::clone(&self.store);
            let due = tokio::task::spawn_blocking(move || {
                store.claim_due(now, lease_until, DISPATCH_BATCH)
            })
            .await
            .map_err(join_error)??;
            if due.is_empty() {
                break;
            }
            let claimed = due.len();
            let outcomes =
                futures_util::future::join_all(due.iter().map(|d| self.attempt(d))).await;
            let me = self.clone();
            let results = tokio::task::spawn_blocking(move || {
                due.iter()
                    .zip(&outcomes)
                    .map(|(d, o)| me.record(d, o))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(join_error)??;
            for r in results {
                match r {
                    Recorded::Sent => summary.sent += 1,
                    Recorded::Retry => summary.failed += 1,
                    Recorded::Dead => {
                        summary.failed += 1;
                        summary.dead += 1;
                    }
                }
            }
            if claimed < DISPATCH_BATCH {
                break;
            }
        }
        Ok(summary)
    }

    /// One run: [`produce`](Self::produce) events from the ledger, then
    /// [`dispatch_due`](Self::dispatch_due). The dispatch runs even if
    /// producing failed; that error is returned afterwards.
    ///
    /// # Errors
    /// As [`produce`](Self::produce) and [`dispatch_due`](Self::dispatch_due).
    pub async fn run_once(
        &self,
        ledger: Arc<dyn LedgerStore>,
        keys: Arc<dyn ApiKeyStore>,
    ) -> Result<RunSummary, WebhookError> {
        let me = self.clone();
        let produced =
            tokio::task::spawn_blocking(move || me.produce(ledger.as_ref(), keys.as_ref()))
                .await
                .map_err(join_error)?;
        let mut summary = self.dispatch_due().await?;
        summary.events = produced?;
        Ok(summary)
    }

    /// Runs [`run_once`](Self::run_once) every `every`, forever, on the
    /// current tokio runtime, logging failures on stderr (once per distinct
    /// failure). What was due when the server stopped is sent on the first
    /// run.
    pub fn spawn(
        self,
        ledger: Arc<dyn LedgerStore>,
        keys: Arc<dyn ApiKeyStore>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_error: Option<String> = None;
            loop {
                tick.tick().await;
                match self.run_once(Arc::clone(&ledger), Arc::clone(&keys)).await {
                    Ok(_) => last_error = None,
                    Err(e) => {
                        let msg = e.to_string();
                        if last_error.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(error = %msg, "webhooks");
                            last_error = Some(msg);
                        }
                    }
                }
            }
        })
    }
}

/// The event a ledger entry gives rise to, if any.
fn event_of(entry: &Entry, merchant: &str) -> Result<Option<NewEvent>, WebhookError> {
    let at = format!("{}:{}", entry.outlet, entry.seq);
    let (kind, payload) = match entry.kind {
        EntryKind::Invoice | EntryKind::CreditNote => {
            let s = SealedInvoice::read_own(&entry.payload)
                .map_err(|e| WebhookError::Source(format!("entry {at}: {e}")))?;
            (
                EventType::InvoiceSealed,
                json!({
                    "id": at,
                    "outlet": entry.outlet,
                    "seq": entry.seq,
                    "fiscal_number": s.elements.fiscal_number,
                    "authentication_code": s.elements.authentication_code,
                    "timestamp": s.elements.timestamp,
                    "total": s.tuple.total,
                    "vtotal": s.tuple.vtotal,
                }),
            )
        }
        EntryKind::ZReport => {
            let body = bonopay_signer::event::event_body(&entry.payload)
                .map_err(|e| WebhookError::Source(format!("entry {at}: {e}")))?;
            (
                EventType::ReportZClosed,
                json!({
                    "outlet": entry.outlet,
                    "seq": entry.seq,
                    "z_number": body.get("z_number").and_then(Value::as_u64).or(entry.z_number),
                    "timestamp": body.get("timestamp").cloned().unwrap_or(Value::Null),
                }),
            )
        }
        _ => return Ok(None),
    };
    Ok(Some(NewEvent {
        id: format!("{kind}:{at}"),
        merchant_nif: merchant.to_owned(),
        kind,
        payload: payload.to_string(),
    }))
}

/// A transport error with its causes, shortened.
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    if msg.chars().count() > MAX_ERROR_LEN {
        msg = msg.chars().take(MAX_ERROR_LEN).collect::<String>() + "…";
    }
    msg
}

// ----- HTTP API ------------------------------------------------------------

/// A subscriber to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// An `http://` or `https://` URL with a host and no credentials, at
    /// most 2048 characters.
    #[schema(format = "uri", min_length = 1, max_length = 2048)]
    pub url: String,
    /// The event types to receive (`invoice.sealed`, `invoice.certified`,
    /// `invoice.synced`, `invoice.sync_failed`, `report.z_closed`), at
    /// least one; absent = all of them.
    #[serde(default)]
    #[schema(value_type = Option<Vec<EventType>>, min_items = 1)]
    pub events: Option<Vec<String>>,
}

/// Query of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryLogQuery {
    /// Most attempts to return, newest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

fn require_owner(who: &ApiKey) -> Result<(), ApiError> {
    if who.role.can_manage() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only an owner key manages webhooks".into(),
        ))
    }
}

fn service(state: &Shared) -> Result<Webhooks, ApiError> {
    state.webhooks.clone().ok_or_else(|| ApiError::Unavailable {
        code: "webhooks_unavailable",
        message: "this server has no webhook service configured".into(),
    })
}

fn internal(e: WebhookError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Checks a subscriber URL: `http(s)`, a host, no credentials.
fn validate_url(url: &str) -> Result<(), &'static str> {
    if url.len() > MAX_URL_LEN {
        return Err("at most 2048 characters");
    }
    let u = reqwest::Url::parse(url).map_err(|_| "not a URL")?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("only http:// and https:// URLs are accepted");
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the URL must not carry credentials (the signature authenticates)");
    }
    Ok(())
}

/// Registers a webhook subscriber for the caller's merchant and returns
/// its signing secret, once.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    request_body = CreateWebhookRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = CreatedWebhook),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 409, description = "The merchant has 16 subscribers already", body = ErrorBody),
        (status = 422, description = "Bad URL (not http/https) or unknown event type", body = ErrorBody),
        (status = 503, description = "No webhook service on this server", body = ErrorBody),
    )
)]
pub async fn create_webhook(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiJson(req): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    require_owner(&who)?;
    let hooks = service(&state)?;
    let mut errors = Vec::new();
    let url = req.url.trim().to_owned();
    if let Err(why) = validate_url(&url) {
        errors.push(FieldError {
            path: "url".into(),
            code: "invalid_url".into(),
            message: why.into(),
        });
    } else if let Err(e) = hooks.egress().check_url(&url) {
        errors.push(FieldError {
            path: "url".into(),
            code: "destination_not_allowed".into(),
            message: format!(
                "{e}; webhooks go to public internet addresses only \
                 (an operator can allow on-premise receivers in config.json `egress.allow`)"
            ),
        });
    }
    let events = match &req.events {
        None => EventType::ALL.to_vec(),
        Some(list) => {
            if list.is_empty() {
                errors.push(FieldError {
                    path: "events".into(),
                    code: "empty".into(),
                    message: "give at least one event type (or leave it out for all)".into(),
                });
            }
            let mut events = Vec::new();
            for (i, name) in list.iter().enumerate() {
                match EventType::parse(name) {
                    Some(t) if !events.contains(&t) => events.push(t),
                    Some(_) => {}
                    None => errors.push(FieldError {
                        path: format!("events[{i}]"),
                        code: "unknown_event".into(),
                        message: format!(
                            "unknown event type; one of {}",
                            events_text(&EventType::ALL)
                        ),
                    }),
                }
            }
            events
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let created = blocking(move || {
        hooks
            .create_subscriber(&who.merchant_nif, &url, &events)
            .map_err(internal)
    })
    .await?;
    match created {
        Some(c) => Ok((StatusCode::CREATED, Json(c))),
        None => Err(ApiError::Conflict {
            code: "too_many_webhooks",
            message: format!(
                "a merchant has at most {MAX_SUBSCRIBERS_PER_MERCHANT} webhook subscribers; delete one first"
            ),
        }),
    }
}

/// The caller's merchant's webhook subscribers, oldest first (never their
/// secrets).
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    security(("api_key" = [])),
    responses(
        (status = 200, body = Vec<Subscriber>),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 503, description = "No webhook service on this server", body = ErrorBody),
    )
)]
pub async fn list_webhooks(
    State(state): State<Shared>,
    Principal(who): Principal,
) -> Result<Json<Vec<Subscriber>>, ApiError> {
    require_owner(&who)?;
    let hooks = service(&state)?;
    let list =
        blocking(move || hooks.list_subscribers(&who.merchant_nif).map_err(internal)).await?;
    Ok(Json(list))
}

/// Deletes a webhook subscriber; its pending deliveries are cancelled.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Subscriber id (`whk_…`)")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 404, description = "No such subscriber for this merchant", body = ErrorBody),
        (status = 503, description = "No webhook service on this server", body = ErrorBody),
    )
)]
pub async fn delete_webhook(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_owner(&who)?;
    let hooks = service(&state)?;
    let deleted = blocking(move || {
        hooks
            .delete_subscriber(&who.merchant_nif, &id)
            .map_err(internal)
    })
    .await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// The delivery log of a webhook subscriber: every attempt, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "Subscriber id (`whk_…`)"), DeliveryLogQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Vec<DeliveryAttempt>),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 404, description = "No such subscriber for this merchant", body = ErrorBody),
        (status = 503, description = "No webhook service on this server", body = ErrorBody),
    )
)]
pub async fn list_webhook_deliveries(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryLogQuery>,
) -> Result<Json<Vec<DeliveryAttempt>>, ApiError> {
    require_owner(&who)?;
    let hooks = service(&state)?;
    let limit = match q.limit.unwrap_or(100) {
        n @ 1..=1000 => n,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "limit must be 1 to 1000",
            ));
        }
    };
    let log = blocking(move || {
        hooks
            .delivery_log(&who.merchant_nif, &id, limit)
            .map_err(internal)
    })
    .await?;
    log.map(Json).ok_or(ApiError::NotFound)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[derive(Debug)]
    struct Fixed(u64);
    impl Jitter for Fixed {
        fn jitter_ms(&self, max_ms: u64) -> u64 {
            self.0.min(max_ms)
        }
    }

    #[test]
    fn backoff_doubles_within_half_and_full_step_and_caps() {
        let p = RetryPolicy::default();
        let low = Fixed(0);
        let high = Fixed(u64::MAX);
        let secs = |d: Duration| d.as_millis();
        assert_eq!(secs(p.delay(1, &low)), 2_500);
        assert_eq!(secs(p.delay(1, &high)), 5_000);
        assert_eq!(secs(p.delay(2, &high)), 10_000);
        assert_eq!(secs(p.delay(10, &high)), 2_560_000);
        assert_eq!(secs(p.delay(11, &high)), 3_600_000);
        assert_eq!(secs(p.delay(11, &low)), 1_800_000);
        assert_eq!(secs(p.delay(500, &high)), 3_600_000);
        for n in 1..=p.max_attempts {
            let d = p.delay(n, &RandomJitter);
            assert!(d >= p.delay(n, &low) && d <= p.delay(n, &high));
        }
    }

    #[test]
    fn urls() {
        assert!(validate_url("https://erp.example.cd/hooks/bonopay?x=1").is_ok());
        assert!(validate_url("http://127.0.0.1:8080/h").is_ok());
        for bad in [
            "ftp://example.cd/",
            "example.cd/hook",
            "https://",
            "https://user:pw@example.cd/",
            "javascript:alert(1)",
            "file:///etc/passwd",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        assert!(validate_url(&format!("https://x.cd/{}", "a".repeat(2100))).is_err());
    }

    #[test]
    fn the_secret_is_never_in_debug_output() {
        let w = Webhooks::in_memory().unwrap();
        let c = w
            .create_subscriber("A1", "https://x.cd/h", &EventType::ALL)
            .unwrap()
            .unwrap();
        assert!(c.secret.starts_with("whsec_"));
        assert!(!format!("{c:?}").contains(&c.secret));
        assert!(!format!("{w:?}").contains(&c.secret));
        let listed = serde_json::to_string(&w.list_subscribers("A1").unwrap()).unwrap();
        assert!(!listed.contains(&c.secret));
    }

    #[test]
    fn a_rescan_after_losing_the_cursor_enqueues_nothing_twice() {
        let w = SqliteWebhookStore::in_memory().unwrap();
        let ev = |seq: u64| NewEvent {
            id: format!("report.z_closed:o1:{seq}"),
            merchant_nif: "A1".into(),
            kind: EventType::ReportZClosed,
            payload: "{}".into(),
        };
        assert_eq!(
            w.commit_events("o1", 1, &[ev(1), ev(2)], 3, 0).unwrap(),
            Some(2)
        );
        assert_eq!(w.cursor("o1").unwrap(), 3);
        // As if the cursor update were lost in a crash: the re-scan is harmless.
        w.with(|c| c.execute("DELETE FROM webhook_cursors", []))
            .unwrap();
        assert_eq!(w.cursor("o1").unwrap(), 1);
        assert_eq!(
            w.commit_events("o1", 1, &[ev(1), ev(2)], 3, 0).unwrap(),
            Some(0)
        );
        // A cursor never moves backwards.
        assert_eq!(w.commit_events("o1", 3, &[], 2, 0).unwrap(), Some(0));
        assert_eq!(w.cursor("o1").unwrap(), 3);
    }

    #[test]
    fn enqueue_validates_type_and_id() {
        let w = Webhooks::in_memory().unwrap();
        assert!(matches!(
            w.enqueue_event("x:1", "A1", "invoice.paid", json!({})),
            Err(WebhookError::UnknownEventType(_))
        ));
        for bad in ["", "has space", "é"] {
            assert!(matches!(
                w.enqueue_event(bad, "A1", "invoice.synced", json!({})),
                Err(WebhookError::InvalidEventId(_))
            ));
        }
        assert!(
            w.enqueue_event("invoice.synced:o:1", "A1", "invoice.synced", json!({}))
                .unwrap()
        );
        assert!(
            !w.enqueue_event("invoice.synced:o:1", "A1", "invoice.synced", json!({}))
                .unwrap()
        );
    }
}
