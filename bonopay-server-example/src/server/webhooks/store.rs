//! The storage seam of webhooks: [`WebhookStore`], and the rules every backend applies when it records an attempt.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The storage of the webhook service: subscribers, events, one delivery
/// per (event, subscriber) with its state and due time, the attempt log,
/// and a per-outlet cursor into the ledger. Synchronous and object-safe;
/// the service ([`Webhooks`]) holds it as `Arc<dyn WebhookStore>` and calls
/// it from blocking threads. [`SqliteWebhookStore`] (`auth.db`) and
/// [`PgWebhookStore`](super::postgres::PgWebhookStore) (shared by
/// several server instances) implement it and pass one conformance suite
/// ([`webhooks_conformance`](super::conformance), feature
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
