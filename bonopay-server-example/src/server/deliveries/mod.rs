//! Receipt deliveries: `POST /v1/invoices/{id}/deliveries` sends the PDF
//! receipt by e-mail (SMTP, with lettre) or through a [`MessagingChannel`]
//! (a WhatsApp-style HTTP API, [`WhatsAppHttpChannel`]); every attempt,
//! sent or failed, is recorded in a [`DeliveryStore`] and listed by
//! `GET /v1/invoices/{id}/deliveries`. `bonopay serve` records in the
//! `deliveries` table of `auth.db` ([`SqliteDeliveryStore`]), or, when its
//! data lives in PostgreSQL, in `receipt_deliveries` there
//! ([`PgDeliveryStore`](postgres::PgDeliveryStore)), so every
//! instance lists every attempt. The backends pass one conformance suite
//! ([`conformance`], feature `conformance`).
//!
//! Owner, cashier and integration keys may deliver receipts of the outlets
//! they are bound to; auditors may only list deliveries. Another merchant's
//! invoice is a 404. A channel that fails (SMTP unreachable or refusing, a
//! non-2xx answer from the messaging API) gives a 502 `delivery_failed`,
//! and the attempt is recorded as `failed` with the reason.
//!
//! SMTP goes to a local relay in plain text (`smtp://127.0.0.1:25`), or
//! straight to a provider over TLS: STARTTLS (`smtp://host:587?tls=required`)
//! or implicit TLS (`smtps://host:465`), with `user:password@` for AUTH.
//! TLS checks the server's certificate against the Mozilla roots, or a CA
//! of the operator's ([`SmtpMailer::with_root_certificate`]). There is no
//! opportunistic mode (it falls back to plain text when an attacker strips
//! STARTTLS), and a password is never sent without TLS.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use rand_core::{OsRng, RngCore};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::prepare_auth_db;
use super::egress::{Egress, EgressError, NOT_ALLOWED};
use super::error::{ApiError, ErrorBody};
use super::invoices::load_for;
use super::receipt_pdf::PageFormat;
use super::{ApiJson, ApiPath, Principal, Shared, blocking};

/// How a receipt is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// E-mail over SMTP, the PDF attached.
    Email,
    /// The configured messaging channel (WhatsApp-style HTTP API).
    Whatsapp,
    /// Not a channel a client asks for: the journal of the certified
    /// documents this server produced (receipt text, PDF, sent copies), so
    /// that every one after the first is marked DUPLICATA (SFE §1.8).
    Print,
}

impl Channel {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Whatsapp => "whatsapp",
            Channel::Print => "print",
        }
    }

    /// The channel named `s` (as [`Channel::as_str`] writes it).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [Channel::Email, Channel::Whatsapp, Channel::Print]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// Outcome of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// The channel accepted the message.
    Sent,
    /// The channel failed; see `error`.
    Failed,
    /// Asked for while the invoice was not certified yet: sent, as the
    /// certified facture normalisée, once the DGI's elements arrive.
    Waiting,
    /// Taken by a server instance that is sending it now (a crash here
    /// leaves it so: at most once, never twice).
    Sending,
}

impl DeliveryStatus {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Waiting => "waiting",
            DeliveryStatus::Sending => "sending",
        }
    }

    /// The status of an attempt that ended with `outcome`.
    #[must_use]
    pub fn of<E>(outcome: &Result<(), E>) -> Self {
        if outcome.is_ok() {
            DeliveryStatus::Sent
        } else {
            DeliveryStatus::Failed
        }
    }

    /// The status named `s` (as [`DeliveryStatus::as_str`] writes it).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [
            DeliveryStatus::Sent,
            DeliveryStatus::Failed,
            DeliveryStatus::Waiting,
            DeliveryStatus::Sending,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// One recorded delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryRecord {
    /// `dlv_` + 16 hex characters.
    pub id: String,
    /// The invoice, `{outlet}:{seq}`.
    pub invoice_id: String,
    /// Its merchant.
    pub merchant_nif: String,
    /// The channel.
    pub channel: Channel,
    /// E-mail address or phone number.
    pub recipient: String,
    /// Sent or failed.
    pub status: DeliveryStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 time the attempt started.
    pub created_at: String,
    /// RFC 3339 time it ended.
    pub completed_at: String,
}

/// Delivery-store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryStoreError {
    /// The backend failed.
    #[error("delivery store: {0}")]
    Storage(String),
}

/// Durable record of delivery attempts. Synchronous and object-safe. An id
/// is recorded once (a second record with it is a
/// [`DeliveryStoreError::Storage`]); lists are oldest first.
pub trait DeliveryStore: fmt::Debug + Send + Sync {
    /// Records an attempt.
    ///
    /// # Errors
    /// [`DeliveryStoreError::Storage`].
    fn record(&self, delivery: &DeliveryRecord) -> Result<(), DeliveryStoreError>;

    /// The attempts for an invoice of a merchant, oldest first.
    ///
    /// # Errors
    /// [`DeliveryStoreError::Storage`].
    fn list(
        &self,
        merchant_nif: &str,
        invoice_id: &str,
    ) -> Result<Vec<DeliveryRecord>, DeliveryStoreError>;

    /// Every record waiting for its invoice's certification, oldest first.
    ///
    /// # Errors
    /// [`DeliveryStoreError::Storage`].
    fn waiting(&self) -> Result<Vec<DeliveryRecord>, DeliveryStoreError>;

    /// Moves record `to.id` from status `from` to `to`'s status, error and
    /// completion time, if it is still in `from`: a compare-and-swap, so
    /// of several instances exactly one takes a waiting delivery. Returns
    /// whether it moved.
    ///
    /// # Errors
    /// [`DeliveryStoreError::Storage`].
    fn transition(
        &self,
        from: DeliveryStatus,
        to: &DeliveryRecord,
    ) -> Result<bool, DeliveryStoreError>;

    /// Takes record `id` for sending until `until_ms` (ms since the epoch):
    /// from `waiting` (`held` is `None`), or from `sending` under the claim
    /// `held` that [`DeliveryStore::stalled`] reported. A compare-and-swap
    /// on status and claim, so of several instances exactly one takes it.
    ///
    /// # Errors
    /// [`DeliveryStoreError::Storage`].
    fn claim(
        &self,
        id: &str,
        from: DeliveryStatus,
        held: Option<i64>,
        until_ms: i64,
    ) -> Result<bool, DeliveryStoreError>;

    /// Records in `sending` whose claim ended before `now_ms` (or that
    /// carry none, from a build without claims): their sender stopped
    /// mid-send, so another instance takes them over. Each with the claim
    /// it was taken under, oldest first.
    ///
    /// # Errors
    /// [`DeliveryStoreError::Storage`].
    fn stalled(&self, now_ms: i64) -> Result<Vec<StalledDelivery>, DeliveryStoreError>;
}

/// A record whose sender stopped mid-send ([`DeliveryStore::stalled`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalledDelivery {
    /// The record, in `sending`.
    pub record: DeliveryRecord,
    /// The claim it was taken under (`None`: taken by a build without
    /// claims); [`DeliveryStore::claim`] takes it over only under this one.
    pub held: Option<i64>,
}

/// How long a receipt delivery stays claimed by the instance sending it:
/// the DGI outbox's takeover bound (its e-MCF timeout, 30 s, plus 15 s), so
/// every queue of the server hands a dead instance's work on within the
/// same time. A send takes at most a channel timeout (10 s) plus the
/// document's rendering.
pub const CLAIM_LEASE: Duration =
    bonopay_sync::retry::takeover_after(bonopay_sync::dgi::DEFAULT_TIMEOUT);

mod channels;
#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;
pub mod postgres;
mod service;
mod sqlite;

pub use channels::*;
pub use memory::*;
pub use service::*;
pub use sqlite::*;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn smtp_urls() {
        let m = SmtpMailer::from_url("smtp://127.0.0.1:2525", "Bono Pay <r@example.cd>").unwrap();
        assert_eq!((m.host.as_str(), m.port), ("127.0.0.1", 2525));
        assert_eq!(
            SmtpMailer::from_url("smtp://relay", "r@x.cd").unwrap().port,
            25
        );
        assert!(SmtpMailer::from_url("smtp://relay:x", "r@x.cd").is_err());
        assert!(SmtpMailer::from_url("smtp://relay", "not an address").is_err());
        // TLS: the port defaults of each mode.
        let m = SmtpMailer::from_url("smtps://u:p@mail.example.cd", "r@x.cd").unwrap();
        assert_eq!((m.port, m.security), (465, SmtpSecurity::Implicit));
        let m = SmtpMailer::from_url("smtp://mail.example.cd?tls=required", "r@x.cd").unwrap();
        assert_eq!((m.port, m.security), (587, SmtpSecurity::StartTls));
        assert!(!format!("{m:?}").contains("u:p"));
        // No opportunistic TLS, no password in plain text, and the error
        // does not repeat the password.
        for bad in [
            "smtp://relay?tls=opportunistic",
            "smtp://relay?tls=yes",
            "smtps://relay?tls=required",
            "http://relay",
            "smtp://user:s3cret@relay:25",
        ] {
            let e = SmtpMailer::from_url(bad, "r@x.cd").unwrap_err();
            assert!(!e.contains("s3cret"), "{bad}: {e}");
        }
        // A private CA: only with TLS, and only a certificate.
        let plain = SmtpMailer::from_url("smtp://relay", "r@x.cd").unwrap();
        assert!(plain.with_root_certificate(b"").is_err());
        let tls = SmtpMailer::from_url("smtps://relay", "r@x.cd").unwrap();
        assert!(tls.with_root_certificate(b"not a certificate").is_err());
    }

    #[test]
    fn phones() {
        assert!(valid_phone("+243812345678"));
        assert!(!valid_phone("243812345678"));
        assert!(!valid_phone("+2438x2345678"));
        assert!(!valid_phone("+12"));
    }

    #[test]
    fn sqlite_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteDeliveryStore::open(&dir.path().join("auth.db")).unwrap();
        let d = DeliveryRecord {
            id: "dlv_1".into(),
            invoice_id: "o:1".into(),
            merchant_nif: "A1".into(),
            channel: Channel::Whatsapp,
            recipient: "+243812345678".into(),
            status: DeliveryStatus::Failed,
            error: Some("down".into()),
            created_at: "t0".into(),
            completed_at: "t1".into(),
        };
        s.record(&d).unwrap();
        drop(s);
        let s = SqliteDeliveryStore::open(&dir.path().join("auth.db")).unwrap();
        assert_eq!(s.list("A1", "o:1").unwrap(), vec![d]);
        assert!(s.list("B2", "o:1").unwrap().is_empty());
    }
}
