//! What the webhook queue holds and answers: subscribers, events, deliveries, attempts, claims.

#[allow(clippy::wildcard_imports)]
use super::*;

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
