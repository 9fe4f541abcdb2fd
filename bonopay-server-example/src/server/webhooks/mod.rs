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
//! ([`PgWebhookStore`](postgres::PgWebhookStore)): subscribers,
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

pub mod conformance;
mod handlers;
mod model;
mod policy;
pub mod postgres;
mod service;
mod sqlite;
mod store;

pub use handlers::*;
pub use model::*;
pub use policy::*;
pub use service::*;
pub use sqlite::*;
pub use store::*;

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
