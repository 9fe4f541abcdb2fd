//! Receipt deliveries: `POST /v1/invoices/{id}/deliveries` sends the PDF
//! receipt by e-mail (SMTP, with lettre) or through a [`MessagingChannel`]
//! (a WhatsApp-style HTTP API, [`WhatsAppHttpChannel`]); every attempt,
//! sent or failed, is recorded in a [`DeliveryStore`] and listed by
//! `GET /v1/invoices/{id}/deliveries`. `bonopay serve` records in the
//! `deliveries` table of `auth.db` ([`SqliteDeliveryStore`]), or, when its
//! data lives in PostgreSQL, in `receipt_deliveries` there
//! ([`PgDeliveryStore`](super::deliveries_pg::PgDeliveryStore)), so every
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
pub const CLAIM_LEASE: Duration = Duration::from_millis(45_000);

/// [`DeliveryStore`] in memory (tests, embedding examples): the records,
/// and the claim of each record taken for sending.
#[derive(Debug, Default)]
pub struct MemoryDeliveryStore(Mutex<Vec<(DeliveryRecord, Option<i64>)>>);

impl DeliveryStore for MemoryDeliveryStore {
    fn record(&self, delivery: &DeliveryRecord) -> Result<(), DeliveryStoreError> {
        let mut all = self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        // As the databases' primary key: an id is recorded once.
        if all.iter().any(|(d, _)| d.id == delivery.id) {
            return Err(DeliveryStoreError::Storage(format!(
                "delivery {} is recorded already",
                delivery.id
            )));
        }
        all.push((delivery.clone(), None));
        Ok(())
    }

    fn list(
        &self,
        merchant_nif: &str,
        invoice_id: &str,
    ) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        Ok(self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?
            .iter()
            .filter(|(d, _)| d.merchant_nif == merchant_nif && d.invoice_id == invoice_id)
            .map(|(d, _)| d.clone())
            .collect())
    }

    fn waiting(&self) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        Ok(self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?
            .iter()
            .filter(|(d, _)| d.status == DeliveryStatus::Waiting)
            .map(|(d, _)| d.clone())
            .collect())
    }

    fn transition(
        &self,
        from: DeliveryStatus,
        to: &DeliveryRecord,
    ) -> Result<bool, DeliveryStoreError> {
        let mut all = self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        match all
            .iter_mut()
            .find(|(d, _)| d.id == to.id && d.status == from)
        {
            Some((d, _)) => {
                d.status = to.status;
                d.error.clone_from(&to.error);
                d.completed_at.clone_from(&to.completed_at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn claim(
        &self,
        id: &str,
        from: DeliveryStatus,
        held: Option<i64>,
        until_ms: i64,
    ) -> Result<bool, DeliveryStoreError> {
        let mut all = self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        match all
            .iter_mut()
            .find(|(d, claim)| d.id == id && d.status == from && *claim == held)
        {
            Some((d, claim)) => {
                d.status = DeliveryStatus::Sending;
                *claim = Some(until_ms);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn stalled(&self, now_ms: i64) -> Result<Vec<StalledDelivery>, DeliveryStoreError> {
        Ok(self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?
            .iter()
            .filter(|(d, claim)| {
                d.status == DeliveryStatus::Sending && claim.is_none_or(|until| until < now_ms)
            })
            .map(|(d, claim)| StalledDelivery {
                record: d.clone(),
                held: *claim,
            })
            .collect())
    }
}

/// [`DeliveryStore`] on SQLite: the `deliveries` table (of `auth.db` in
/// `bonopay serve`).
pub struct SqliteDeliveryStore {
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteDeliveryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDeliveryStore")
            .finish_non_exhaustive()
    }
}

pub(crate) fn storage(e: impl fmt::Display) -> DeliveryStoreError {
    DeliveryStoreError::Storage(e.to_string())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    id           TEXT PRIMARY KEY,
    invoice_id   TEXT NOT NULL,
    merchant_nif TEXT NOT NULL,
    channel      TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    status       TEXT NOT NULL,
    error        TEXT,
    created_at   TEXT NOT NULL,
    completed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_invoice ON deliveries(merchant_nif, invoice_id);
";

impl SqliteDeliveryStore {
    /// Opens (creating the table in) the database at `path`.
    ///
    /// # Errors
    /// [`DeliveryStoreError::Storage`].
    pub fn open(path: &Path) -> Result<Self, DeliveryStoreError> {
        let conn = Connection::open(path).map_err(storage)?;
        prepare_auth_db(&conn, SCHEMA).map_err(storage)?;
        // Added after the table shipped: the claim of a record taken for
        // sending (ms since the epoch), NULL otherwise.
        let has_claim: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('deliveries') WHERE name = 'claimed_until_ms'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(storage)?
            > 0;
        if !has_claim {
            conn.execute_batch("ALTER TABLE deliveries ADD COLUMN claimed_until_ms INTEGER")
                .map_err(storage)?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }
}

/// A stored record's channel and status, checked: a name this build does
/// not know is a storage error, not a guess.
pub(crate) fn checked(
    mut d: DeliveryRecord,
    channel: &str,
    status: &str,
) -> Result<DeliveryRecord, DeliveryStoreError> {
    d.channel =
        Channel::parse(channel).ok_or_else(|| storage(format!("unknown channel `{channel}`")))?;
    d.status = DeliveryStatus::parse(status)
        .ok_or_else(|| storage(format!("unknown status `{status}`")))?;
    Ok(d)
}

impl DeliveryStore for SqliteDeliveryStore {
    fn record(&self, d: &DeliveryRecord) -> Result<(), DeliveryStoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        conn.execute(
            "INSERT INTO deliveries (id, invoice_id, merchant_nif, channel, recipient, status, error, created_at, completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                d.id,
                d.invoice_id,
                d.merchant_nif,
                d.channel.as_str(),
                d.recipient,
                d.status.as_str(),
                d.error,
                d.created_at,
                d.completed_at
            ],
        )
        .map_err(storage)?;
        Ok(())
    }

    fn list(
        &self,
        merchant_nif: &str,
        invoice_id: &str,
    ) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        self.select(
            "WHERE merchant_nif = ?1 AND invoice_id = ?2",
            params![merchant_nif, invoice_id],
        )
    }

    fn waiting(&self) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        self.select("WHERE status = 'waiting'", params![])
    }

    fn transition(
        &self,
        from: DeliveryStatus,
        to: &DeliveryRecord,
    ) -> Result<bool, DeliveryStoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        let n = conn
            .execute(
                "UPDATE deliveries SET status = ?1, error = ?2, completed_at = ?3
                 WHERE id = ?4 AND status = ?5",
                params![
                    to.status.as_str(),
                    to.error,
                    to.completed_at,
                    to.id,
                    from.as_str()
                ],
            )
            .map_err(storage)?;
        Ok(n == 1)
    }

    fn claim(
        &self,
        id: &str,
        from: DeliveryStatus,
        held: Option<i64>,
        until_ms: i64,
    ) -> Result<bool, DeliveryStoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        let n = conn
            .execute(
                "UPDATE deliveries SET status = 'sending', claimed_until_ms = ?1
                 WHERE id = ?2 AND status = ?3 AND claimed_until_ms IS ?4",
                params![until_ms, id, from.as_str(), held],
            )
            .map_err(storage)?;
        Ok(n == 1)
    }

    fn stalled(&self, now_ms: i64) -> Result<Vec<StalledDelivery>, DeliveryStoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        let mut st = conn
            .prepare(
                "SELECT id, invoice_id, merchant_nif, channel, recipient, status, error, created_at, completed_at, claimed_until_ms
                 FROM deliveries
                 WHERE status = 'sending' AND (claimed_until_ms IS NULL OR claimed_until_ms < ?1)
                 ORDER BY rowid",
            )
            .map_err(storage)?;
        let rows = st
            .query_map(params![now_ms], |r| {
                Ok((
                    DeliveryRecord {
                        id: r.get(0)?,
                        invoice_id: r.get(1)?,
                        merchant_nif: r.get(2)?,
                        channel: Channel::Email,
                        recipient: r.get(4)?,
                        status: DeliveryStatus::Sending,
                        error: r.get(6)?,
                        created_at: r.get(7)?,
                        completed_at: r.get(8)?,
                    },
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<i64>>(9)?,
                ))
            })
            .map_err(storage)?;
        let mut out = Vec::new();
        for row in rows {
            let (d, channel, status, held) = row.map_err(storage)?;
            out.push(StalledDelivery {
                record: checked(d, &channel, &status)?,
                held,
            });
        }
        Ok(out)
    }
}

impl SqliteDeliveryStore {
    fn select(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        let mut st = conn
            .prepare(&format!(
                "SELECT id, invoice_id, merchant_nif, channel, recipient, status, error, created_at, completed_at
                 FROM deliveries {filter} ORDER BY rowid"
            ))
            .map_err(storage)?;
        let rows = st
            .query_map(args, |r| {
                let channel: String = r.get(3)?;
                let status: String = r.get(5)?;
                Ok((
                    DeliveryRecord {
                        id: r.get(0)?,
                        invoice_id: r.get(1)?,
                        merchant_nif: r.get(2)?,
                        channel: Channel::Email,
                        recipient: r.get(4)?,
                        status: DeliveryStatus::Failed,
                        error: r.get(6)?,
                        created_at: r.get(7)?,
                        completed_at: r.get(8)?,
                    },
                    channel,
                    status,
                ))
            })
            .map_err(storage)?;
        rows.map(|row| {
            let (d, channel, status) = row.map_err(storage)?;
            checked(d, &channel, &status)
        })
        .collect()
    }
}

/// Why a channel could not deliver.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The channel could not be reached (connection refused, timeout).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The channel answered with a refusal (SMTP error reply, non-2xx).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The message could not be built (bad address).
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// A receipt to send.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Recipient (address or phone number).
    pub to: String,
    /// Subject (e-mail) — ASCII.
    pub subject: String,
    /// Message text.
    pub text: String,
    /// File name of the attached document.
    pub filename: String,
    /// The document (the PDF receipt).
    pub document: Vec<u8>,
}

/// A boxed future, so that [`MessagingChannel`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A messaging channel (WhatsApp, SMS gateway, …). Async, since it sits at
/// the network edge; object-safe, used as `Arc<dyn MessagingChannel>`.
pub trait MessagingChannel: fmt::Debug + Send + Sync {
    /// Sends `message`; `Ok` once the channel accepted it.
    fn send<'a>(&'a self, message: &'a OutgoingMessage)
    -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// A WhatsApp-style HTTP API: `POST {url}` with `Authorization: Bearer
/// {token}` and the JSON body
/// `{"to", "text", "document_base64", "filename", "mime_type"}`; any 2xx
/// answer means accepted.
///
/// The URL is the operator's (`deliveries.whatsapp_url`); a tenant only
/// chooses the phone number. It still obeys the egress policy, as webhooks
/// do ([`super::egress`]): a URL on a loopback, private… address needs
/// the operator's allow-list, the host is resolved through the policy at
/// every connection, and no redirect is followed, so neither the API's DNS
/// nor its answers can send the receipt (and the bearer token) elsewhere.
#[derive(Debug, Clone)]
pub struct WhatsAppHttpChannel {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl WhatsAppHttpChannel {
    /// A channel posting to `url` with `token`, 10 s timeout, to the
    /// destinations `egress` allows.
    ///
    /// # Errors
    /// A message if `url` is a destination `egress` refuses (so that
    /// `bonopay serve` says so at start) or the HTTP client cannot be
    /// built.
    pub fn new(url: &str, token: &str, egress: &Egress) -> Result<Self, String> {
        egress.check_url(url).map_err(|e| {
            format!(
                "the WhatsApp URL {url}: {e}; allow it in config.json `egress.allow` \
                 (or BONOPAY_EGRESS_ALLOW) if it is on your network"
            )
        })?;
        let client = egress
            .client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            token: token.to_owned(),
            client,
        })
    }
}

#[derive(Serialize)]
struct WhatsAppBody<'a> {
    to: &'a str,
    text: &'a str,
    document_base64: String,
    filename: &'a str,
    mime_type: &'static str,
}

impl MessagingChannel for WhatsAppHttpChannel {
    fn send<'a>(&'a self, m: &'a OutgoingMessage) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let body = WhatsAppBody {
                to: &m.to,
                text: &m.text,
                document_base64: STANDARD.encode(&m.document),
                filename: &m.filename,
                mime_type: "application/pdf",
            };
            let resp = self
                .client
                .post(&self.url)
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await
                .map_err(|e| {
                    DeliveryError::Unreachable(if EgressError::is_refusal(&e) {
                        NOT_ALLOWED.to_owned()
                    } else {
                        e.to_string()
                    })
                })?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(DeliveryError::Rejected(format!(
                    "the messaging API answered {status}"
                )))
            }
        })
    }
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SmtpSecurity {
    /// Plain text: only for a relay on this host or a private network.
    Plain,
    /// STARTTLS, required: the mail is not sent if the server lacks it.
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// Sends e-mail over SMTP: plain to a local relay, or over TLS (see the
/// [module docs](self)).
#[derive(Clone)]
pub struct SmtpMailer {
    transport: SmtpTransport,
    /// The URL as given (with its password, if any: never printed).
    url: String,
    host: String,
    port: u16,
    security: SmtpSecurity,
    from: Mailbox,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL nor the transport: they hold the password.
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

const SMTP_URL_FORMS: &str = "smtp://host[:port] (plain, to a local relay), \
smtp://[user:password@]host[:port]?tls=required (STARTTLS) or \
smtps://[user:password@]host[:port] (TLS)";

/// How a PEM certificate starts.
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----";

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

impl SmtpMailer {
    /// A mailer for `url` sending as `from` (`name <addr>` or `addr`).
    /// `smtp://host[:port]` (port 25) is plain text;
    /// `smtp://host[:port]?tls=required` (port 587) requires STARTTLS;
    /// `smtps://host[:port]` (port 465) is TLS throughout. `user:password@`
    /// before the host logs in (percent-encode reserved characters); it is
    /// refused on a plain connection.
    ///
    /// # Errors
    /// A message (never holding the password) if the URL has another form
    /// or `from` is not an address.
    pub fn from_url(url: &str, from: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("SMTP URL: {e}"))?;
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let security = match (parsed.scheme(), tls.as_deref()) {
            ("smtp", None) => SmtpSecurity::Plain,
            ("smtp", Some("required")) => SmtpSecurity::StartTls,
            ("smtps", None) => SmtpSecurity::Implicit,
            _ => return Err(format!("SMTP URL: use {SMTP_URL_FORMS}")),
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "SMTP URL: no host".to_owned())?
            .to_owned();
        if security == SmtpSecurity::Plain && parsed.password().is_some() {
            return Err(
                "SMTP URL: a password is only sent over TLS (add ?tls=required, or use smtps://)"
                    .into(),
            );
        }
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| format!("SMTP from `{from}`: {e}"))?;
        let port = parsed.port().unwrap_or(match security {
            SmtpSecurity::Plain => 25,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Implicit => 465,
        });
        let transport = SmtpTransport::from_url(url)
            .map_err(|e| format!("SMTP URL: {e}"))?
            .port(port)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Self {
            transport,
            url: url.to_owned(),
            host,
            port,
            security,
            from,
        })
    }

    /// The same mailer trusting the CA certificates in `pem` besides the
    /// Mozilla roots: for a relay with a private CA.
    ///
    /// # Errors
    /// A message if the mailer sends in plain text or `pem` holds no
    /// certificate.
    pub fn with_root_certificate(mut self, pem: &[u8]) -> Result<Self, String> {
        let tls = |params| match self.security {
            SmtpSecurity::Plain => None,
            SmtpSecurity::StartTls => Some(Tls::Required(params)),
            SmtpSecurity::Implicit => Some(Tls::Wrapper(params)),
        };
        // lettre takes a PEM without any certificate in it as an empty
        // list; say so now rather than fail every handshake later.
        if !pem
            .windows(CERT_PEM.len())
            .any(|w| w == CERT_PEM.as_bytes())
        {
            return Err("SMTP CA certificate: no PEM certificate in it".into());
        }
        let cert = Certificate::from_pem(pem).map_err(|e| format!("SMTP CA certificate: {e}"))?;
        let params = TlsParameters::builder(self.host.clone())
            .add_root_certificate(cert)
            .build_rustls()
            .map_err(|e| format!("SMTP TLS: {e}"))?;
        let tls = tls(params)
            .ok_or_else(|| "SMTP CA certificate: the SMTP URL sends in plain text".to_owned())?;
        self.transport = SmtpTransport::from_url(&self.url)
            .map_err(|e| format!("SMTP URL: {e}"))?
            .port(self.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(self)
    }

    /// Sends `m`, the document attached as `application/pdf`. Blocking.
    ///
    /// # Errors
    /// [`DeliveryError`].
    pub fn send(&self, m: &OutgoingMessage) -> Result<(), DeliveryError> {
        let to =
            m.to.parse::<Mailbox>()
                .map_err(|e| DeliveryError::Invalid(e.to_string()))?;
        let pdf = ContentType::parse("application/pdf")
            .map_err(|e| DeliveryError::Invalid(e.to_string()))?;
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .multipart(
                MultiPart::mixed()
                    .singlepart(SinglePart::plain(m.text.clone()))
                    .singlepart(Attachment::new(m.filename.clone()).body(m.document.clone(), pdf)),
            )
            .map_err(|e| DeliveryError::Invalid(e.to_string()))?;
        self.transport.send(&email).map(|_| ()).map_err(|e| {
            if e.is_permanent() || e.is_transient() {
                DeliveryError::Rejected(e.to_string())
            } else {
                DeliveryError::Unreachable(e.to_string())
            }
        })
    }
}

/// The delivery setup of a server: the record store and the channels.
#[derive(Debug, Clone)]
pub struct Deliveries {
    pub(crate) store: Arc<dyn DeliveryStore>,
    email: Option<SmtpMailer>,
    messaging: Option<Arc<dyn MessagingChannel>>,
    claim_lease: Duration,
}

impl Default for Deliveries {
    /// In memory, no channel configured.
    fn default() -> Self {
        Self::new(Arc::new(MemoryDeliveryStore::default()))
    }
}

impl Deliveries {
    /// Records in `store`, no channel yet.
    #[must_use]
    pub fn new(store: Arc<dyn DeliveryStore>) -> Self {
        Self {
            store,
            email: None,
            messaging: None,
            claim_lease: CLAIM_LEASE,
        }
    }

    /// Another claim lease than [`CLAIM_LEASE`] (tests; a deployment whose
    /// channels are slower than their 10 s timeouts allow for).
    #[must_use]
    pub fn with_claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = lease;
        self
    }

    /// Enables e-mail.
    #[must_use]
    pub fn with_email(mut self, mailer: SmtpMailer) -> Self {
        self.email = Some(mailer);
        self
    }

    /// Enables the messaging channel.
    #[must_use]
    pub fn with_messaging(mut self, channel: Arc<dyn MessagingChannel>) -> Self {
        self.messaging = Some(channel);
        self
    }
}

/// A delivery request (documented by [`super::schema::DeliveryBody`],
/// which ties the recipient's form to the channel).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRequest {
    /// `email` or `whatsapp`.
    pub channel: Channel,
    /// An e-mail address, or a phone number in E.164 (`+243…`).
    pub to: String,
    /// PDF format, `a4` (default) or `80mm`.
    #[serde(default)]
    pub format: Option<String>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("random source: {e}")))?;
    Ok(format!("dlv_{}", hex::encode(bytes)))
}

fn valid_phone(to: &str) -> bool {
    to.strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Sends the invoice's PDF receipt by e-mail or the messaging channel, and
/// records the attempt. On an outlet certified by the e-MCF, an invoice
/// not certified yet is not sent as a provisional ticket: the delivery is
/// recorded `waiting` (202) and the certified facture normalisée is sent
/// once the DGI's elements arrive ([`send_waiting`]).
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/deliveries",
    tag = "receipts",
    params(("id" = String, Path, description = "`{outlet}:{seq}`")),
    request_body = super::schema::DeliveryBody,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Sent (and recorded)", body = DeliveryRecord),
        (status = 202, description = "Recorded `waiting`: sent once the DGI certifies the invoice", body = DeliveryRecord),
        (status = 403, description = "Auditor key, or key not bound to the outlet", body = ErrorBody),
        (status = 404, description = "No such invoice for this merchant", body = ErrorBody),
        (status = 409, description = "The DGI refused the invoice: it is not a facture normalisée", body = ErrorBody),
        (status = 422, description = "Bad recipient, unknown or unconfigured channel", body = ErrorBody),
        (status = 502, description = "The channel failed (recorded as failed)", body = ErrorBody),
    )
)]
pub async fn create_delivery(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<DeliveryRequest>,
) -> Result<Response, ApiError> {
    let sealed = load_for(&state, &who, &id).await?;
    if !who.role.can_fiscalize() {
        return Err(ApiError::Forbidden(format!(
            "a {} key cannot send receipts",
            who.role
        )));
    }
    let format = PageFormat::parse(req.format.as_deref().unwrap_or("a4"))
        .ok_or_else(|| ApiError::invalid("format", "invalid_format", "format is a4 or 80mm"))?;
    let to = req.to.trim().to_owned();
    match req.channel {
        Channel::Email if to.parse::<Mailbox>().is_err() || !to.contains('@') => {
            return Err(ApiError::invalid(
                "to",
                "invalid_recipient",
                "not an e-mail address",
            ));
        }
        Channel::Whatsapp if !valid_phone(&to) => {
            return Err(ApiError::invalid(
                "to",
                "invalid_recipient",
                "not a phone number in E.164 form (+243…)",
            ));
        }
        Channel::Print => {
            return Err(ApiError::invalid(
                "channel",
                "invalid_channel",
                "print is the server's journal of printed documents, not a delivery channel",
            ));
        }
        _ => {}
    }
    if !state.deliveries.configured(req.channel) {
        return Err(ApiError::invalid(
            "channel",
            "channel_not_configured",
            format!(
                "this server has no {} channel configured",
                req.channel.as_str()
            ),
        ));
    }
    let invoice_id = format!("{}:{}", sealed.invoice.tuple.outlet, sealed.seq);
    let st = Arc::clone(&state);
    let s2 = sealed.clone();
    let certification = blocking(move || super::invoices::certification_for(&st, &s2)).await?;
    match certification.state.as_str() {
        "rejected" => {
            return Err(ApiError::Conflict {
                code: "not_certified",
                message: format!(
                    "the DGI refused invoice {invoice_id}; it is not a facture normalisée and is not sent"
                ),
            });
        }
        "pending" => {
            let now = now();
            let record = DeliveryRecord {
                id: new_id()?,
                invoice_id,
                merchant_nif: who.merchant_nif.clone(),
                channel: req.channel,
                recipient: to,
                status: DeliveryStatus::Waiting,
                error: Some(format!("{WAITING_NOTE} ({})", format_name(format))),
                created_at: now.clone(),
                completed_at: now,
            };
            keep(&state, &record).await?;
            return Ok((StatusCode::ACCEPTED, Json(record)).into_response());
        }
        _ => {}
    }
    let created_at = now();
    let outcome = send_document(&state, sealed, req.channel, &to, format).await?;
    let record = DeliveryRecord {
        id: new_id()?,
        invoice_id,
        merchant_nif: who.merchant_nif.clone(),
        channel: req.channel,
        recipient: to,
        status: DeliveryStatus::of(&outcome),
        error: outcome.as_ref().err().map(ToString::to_string),
        created_at,
        completed_at: now(),
    };
    keep(&state, &record).await?;
    match outcome {
        Ok(()) => Ok((StatusCode::CREATED, Json(record)).into_response()),
        Err(e) => Err(ApiError::BadGateway {
            code: "delivery_failed",
            message: format!(
                "the {} channel failed ({e}); the attempt {} is recorded as failed",
                record.channel.as_str(),
                record.id
            ),
        }),
    }
}

/// Records a delivery attempt in the server's store.
async fn keep(state: &Shared, record: &DeliveryRecord) -> Result<(), ApiError> {
    let store = Arc::clone(&state.deliveries.store);
    let r = record.clone();
    blocking(move || {
        store
            .record(&r)
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await
}

/// How a waiting delivery's note starts; the PDF format follows in
/// parentheses, so the deferred send uses the one asked for.
const WAITING_NOTE: &str = "waiting for the DGI's certification";

fn format_name(format: PageFormat) -> &'static str {
    match format {
        PageFormat::A4 => "a4",
        PageFormat::Roll80mm => "80mm",
    }
}

impl Deliveries {
    fn configured(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email.is_some(),
            Channel::Whatsapp => self.messaging.is_some(),
            Channel::Print => false,
        }
    }
}

/// Builds the invoice's PDF (journalled as a copy when it is a certified
/// facture normalisée) and sends it. `Err` only for server faults; the
/// channel's own failure is the inner result.
async fn send_document(
    state: &Shared,
    sealed: bonopay_signer::Sealed,
    channel: Channel,
    to: &str,
    format: PageFormat,
) -> Result<Result<(), DeliveryError>, ApiError> {
    let invoice_id = format!("{}:{}", sealed.invoice.tuple.outlet, sealed.seq);
    let st = Arc::clone(state);
    let what = format!("{}:{to}", channel.as_str());
    let (document, printing) = blocking(move || {
        let p = super::invoices::printing(&st, &sealed, &what)?;
        let model = super::receipt::build(
            &sealed.invoice,
            &super::invoices::profile_of(&st, &sealed),
            &p.certificate(),
        )
        .map_err(ApiError::Internal)?;
        let pdf = super::receipt_pdf::render_pdf(&model, format).map_err(ApiError::Internal)?;
        Ok((
            pdf,
            (
                p.certification,
                model.fiscal_number,
                model.authentication_code_display,
            ),
        ))
    })
    .await?;
    let (certification, number, code) = printing;
    let (subject, text) = match &certification.dgi {
        Some(_) => (
            format!(
                "Facture normalisee {} - CODE DEF/DGI {code}",
                certification.rn
            ),
            format!(
                "Bonjour,\n\nVeuillez trouver ci-joint votre facture normalisée {} \
                 (DEF Compteurs {number}, CODE DEF/DGI {code}).\n",
                certification.rn
            ),
        ),
        None => (
            format!("Recu {} - non certifie DGI", certification.rn),
            format!(
                "Bonjour,\n\nVeuillez trouver ci-joint votre reçu {} \
                 (non certifié par la DGI ; sceau Bono Pay {code}, compteurs {number}).\n",
                certification.rn
            ),
        ),
    };
    let message = OutgoingMessage {
        to: to.to_owned(),
        subject,
        text,
        filename: format!("facture-{}.pdf", invoice_id.replace(':', "-")),
        document,
    };
    Ok(match channel {
        Channel::Email => {
            let mailer = state.deliveries.email.clone();
            blocking(move || {
                Ok(match mailer {
                    Some(mailer) => mailer.send(&message),
                    None => Err(DeliveryError::Invalid("no e-mail channel".into())),
                })
            })
            .await?
        }
        Channel::Whatsapp => match &state.deliveries.messaging {
            Some(channel) => channel.send(&message).await,
            None => Err(DeliveryError::Invalid("no messaging channel".into())),
        },
        Channel::Print => Err(DeliveryError::Invalid("print is not a channel".into())),
    })
}

/// Sends every waiting delivery whose invoice is now certified, each
/// exactly once across instances (taken `waiting → sending` by a
/// compare-and-swap first), and records how it went. Returns how many
/// were sent or failed.
///
/// # Errors
/// [`ApiError`] when storage fails; a channel's failure is recorded.
pub async fn send_waiting(state: &Shared) -> Result<usize, ApiError> {
    let store = Arc::clone(&state.deliveries.store);
    let now_ms = chrono::Utc::now().timestamp_millis();
    // Waiting ones, and those another instance took and stopped sending
    // (it died mid-send): taken over once their claim has ended.
    let queue = blocking(move || {
        let internal = |e: DeliveryStoreError| ApiError::Internal(e.to_string());
        let mut queue: Vec<(DeliveryRecord, DeliveryStatus, Option<i64>)> = store
            .waiting()
            .map_err(internal)?
            .into_iter()
            .map(|w| (w, DeliveryStatus::Waiting, None))
            .collect();
        queue.extend(
            store
                .stalled(now_ms)
                .map_err(internal)?
                .into_iter()
                .map(|s| (s.record, DeliveryStatus::Sending, s.held)),
        );
        Ok(queue)
    })
    .await?;
    let lease = i64::try_from(state.deliveries.claim_lease.as_millis()).unwrap_or(i64::MAX);
    let mut done = 0;
    for (w, from, held) in queue {
        let Some((outlet, seq)) = w
            .invoice_id
            .rsplit_once(':')
            .and_then(|(o, s)| s.parse::<u64>().ok().map(|s| (o.to_owned(), s)))
        else {
            continue;
        };
        let st = Arc::clone(state);
        let w2 = w.clone();
        let taken = blocking(move || {
            let Some(entry) = st
                .fiscalizer
                .store()
                .entry(&outlet, seq)
                .map_err(|e| ApiError::Internal(e.to_string()))?
            else {
                return Ok(None);
            };
            let sealed = super::invoices::sealed_of(&entry, &st.trusted_keys)?;
            if st
                .fiscalizer
                .certification_of(&outlet, seq)
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .is_none()
            {
                return Ok(None);
            }
            let took = st
                .deliveries
                .store
                .claim(&w2.id, from, held, now_ms.saturating_add(lease))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(took.then_some(sealed))
        })
        .await?;
        let Some(sealed) = taken else { continue };
        let format = if w.error.as_deref().is_some_and(|e| e.contains("(80mm)")) {
            PageFormat::Roll80mm
        } else {
            PageFormat::A4
        };
        let outcome = send_document(state, sealed, w.channel, &w.recipient, format).await?;
        let settled = DeliveryRecord {
            status: DeliveryStatus::of(&outcome),
            error: outcome.as_ref().err().map(ToString::to_string),
            completed_at: now(),
            ..w
        };
        let store = Arc::clone(&state.deliveries.store);
        blocking(move || {
            store
                .transition(DeliveryStatus::Sending, &settled)
                .map_err(|e| ApiError::Internal(e.to_string()))
        })
        .await?;
        done += 1;
    }
    Ok(done)
}

/// Every delivery attempt of an invoice, oldest first.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/deliveries",
    tag = "receipts",
    params(("id" = String, Path, description = "`{outlet}:{seq}`")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Vec<DeliveryRecord>),
        (status = 403, description = "Key not bound to the outlet", body = ErrorBody),
        (status = 404, description = "No such invoice for this merchant", body = ErrorBody),
    )
)]
pub async fn list_deliveries(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<DeliveryRecord>>, ApiError> {
    let sealed = load_for(&state, &who, &id).await?;
    let invoice_id = format!("{}:{}", sealed.invoice.tuple.outlet, sealed.seq);
    let store = Arc::clone(&state.deliveries.store);
    let merchant = who.merchant_nif.clone();
    let list = blocking(move || {
        store
            .list(&merchant, &invoice_id)
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    Ok(Json(list))
}

/// The conformance suite every [`DeliveryStore`] backend runs (feature
/// `conformance`): memory, SQLite and PostgreSQL. Each check panics with a
/// message naming the broken promise.
///
/// ```
/// use std::sync::Arc;
/// use bonopay_server_example::server::deliveries::{MemoryDeliveryStore, conformance};
///
/// conformance::run_all(&|| Arc::new(MemoryDeliveryStore::default()));
/// ```
#[cfg(feature = "conformance")]
pub mod conformance {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Arc;

    use super::{Channel, DeliveryRecord, DeliveryStatus, DeliveryStore, DeliveryStoreError};
    pub use crate::server::auth_conformance::THREADS;
    use crate::server::auth_conformance::race;

    /// Opens a store: a fresh, empty one for [`run_all`]; one more handle
    /// on the same database for [`shared_database`].
    pub type Open<'a> = &'a dyn Fn() -> Arc<dyn DeliveryStore>;

    /// A failed WhatsApp attempt `id` for `invoice_id` of `merchant`.
    #[must_use]
    pub fn record(id: &str, merchant: &str, invoice_id: &str) -> DeliveryRecord {
        DeliveryRecord {
            id: id.into(),
            invoice_id: invoice_id.into(),
            merchant_nif: merchant.into(),
            channel: Channel::Whatsapp,
            recipient: "+243812345678".into(),
            status: DeliveryStatus::Failed,
            error: Some("the messaging API answered 503".into()),
            created_at: "2026-03-01T08:00:00.000Z".into(),
            completed_at: "2026-03-01T08:00:01.250Z".into(),
        }
    }

    /// Runs every check, each on a fresh store (except
    /// [`shared_database`]).
    pub fn run_all(fresh: Open<'_>) {
        round_trips_oldest_first_per_merchant_and_invoice(fresh);
        an_id_is_recorded_once(fresh);
        concurrent_records(fresh);
        waiting_deliveries_are_taken_once(fresh);
        stalled_sends_are_taken_over_once(fresh);
    }

    /// A record claimed for sending is not stalled while its claim lasts;
    /// once the claim ends (the sender died mid-send) it is reported with
    /// that claim, and of several instances exactly one takes it over. A
    /// claim under a stale `held` takes nothing, and the settle still
    /// works.
    pub fn stalled_sends_are_taken_over_once(fresh: Open<'_>) {
        const T0: i64 = 1_780_000_000_000;
        const LEASE: i64 = 45_000;
        let s = fresh();
        let w = DeliveryRecord {
            status: DeliveryStatus::Waiting,
            error: None,
            ..record("dlv_s", "A1", "o1:7")
        };
        s.record(&w).unwrap();
        assert!(s.stalled(T0).unwrap().is_empty(), "waiting is not stalled");
        assert!(
            !s.claim("dlv_s", DeliveryStatus::Sending, None, T0 + LEASE)
                .unwrap(),
            "not sending yet"
        );
        assert!(
            s.claim("dlv_s", DeliveryStatus::Waiting, None, T0 + LEASE)
                .unwrap()
        );
        assert!(
            !s.claim("dlv_s", DeliveryStatus::Waiting, None, T0 + LEASE)
                .unwrap(),
            "taken once"
        );
        assert!(s.waiting().unwrap().is_empty());
        assert_eq!(
            s.list("A1", "o1:7").unwrap()[0].status,
            DeliveryStatus::Sending
        );
        assert!(
            s.stalled(T0 + LEASE - 1).unwrap().is_empty(),
            "within its claim"
        );
        let stalled = s.stalled(T0 + LEASE + 1).unwrap();
        assert_eq!(stalled.len(), 1, "{stalled:?}");
        assert_eq!(stalled[0].held, Some(T0 + LEASE));
        assert_eq!(stalled[0].record.id, "dlv_s");
        assert_eq!(stalled[0].record.status, DeliveryStatus::Sending);
        assert!(
            !s.claim("dlv_s", DeliveryStatus::Sending, Some(T0), T0 + 3 * LEASE)
                .unwrap(),
            "a stale claim takes nothing"
        );

        let theirs = Arc::clone(&s);
        let taken = race(move |i| {
            let until = T0 + 2 * LEASE + i64::try_from(i).unwrap();
            theirs
                .claim("dlv_s", DeliveryStatus::Sending, Some(T0 + LEASE), until)
                .unwrap()
        });
        assert_eq!(
            taken.iter().filter(|t| **t).count(),
            1,
            "exactly one instance takes a stalled send over"
        );
        assert!(
            s.stalled(T0 + LEASE + 1).unwrap().is_empty(),
            "the new claim holds"
        );
        let sent = DeliveryRecord {
            status: DeliveryStatus::Sent,
            completed_at: "2026-03-01T09:00:00.000Z".into(),
            ..w.clone()
        };
        assert!(s.transition(DeliveryStatus::Sending, &sent).unwrap());
        assert!(
            s.stalled(T0 + 10 * LEASE).unwrap().is_empty(),
            "settled is never stalled"
        );
        assert_eq!(s.list("A1", "o1:7").unwrap(), vec![sent]);
    }

    /// A waiting record is listed by `waiting`; of several takers exactly
    /// one moves it (to sending), and only the taker settles it.
    pub fn waiting_deliveries_are_taken_once(fresh: Open<'_>) {
        let s = fresh();
        let w = DeliveryRecord {
            status: DeliveryStatus::Waiting,
            error: None,
            ..record("dlv_w", "A1", "o1:1")
        };
        s.record(&record("dlv_f", "A1", "o1:1")).unwrap();
        s.record(&w).unwrap();
        assert_eq!(
            s.waiting().unwrap(),
            vec![w.clone()],
            "only waiting records"
        );
        let sending = DeliveryRecord {
            status: DeliveryStatus::Sending,
            ..w.clone()
        };
        let theirs = Arc::clone(&s);
        let sending2 = sending.clone();
        let taken = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..THREADS {
                sc.spawn(|| {
                    if theirs
                        .transition(DeliveryStatus::Waiting, &sending2)
                        .unwrap()
                    {
                        taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(taken.into_inner(), 1, "exactly one taker");
        assert!(s.waiting().unwrap().is_empty());
        let sent = DeliveryRecord {
            status: DeliveryStatus::Sent,
            completed_at: "2026-03-01T09:00:00.000Z".into(),
            ..w.clone()
        };
        assert!(
            !s.transition(DeliveryStatus::Waiting, &sent).unwrap(),
            "no longer waiting"
        );
        assert!(s.transition(DeliveryStatus::Sending, &sent).unwrap());
        assert_eq!(s.list("A1", "o1:1").unwrap()[1], sent, "settled as written");
    }

    /// Every field reads back as written; a list holds one merchant's
    /// attempts at one invoice, oldest first.
    pub fn round_trips_oldest_first_per_merchant_and_invoice(fresh: Open<'_>) {
        let s = fresh();
        let first = record("dlv_1", "A1", "o1:1");
        let second = DeliveryRecord {
            id: "dlv_2".into(),
            channel: Channel::Email,
            recipient: "caissier+reçus@exemple.cd".into(),
            status: DeliveryStatus::Sent,
            error: None,
            ..record("dlv_2", "A1", "o1:1")
        };
        let other_invoice = record("dlv_3", "A1", "o1:2");
        let other_merchant = record("dlv_4", "B2", "o1:1");
        for d in [&first, &other_invoice, &second, &other_merchant] {
            s.record(d).unwrap();
        }
        assert_eq!(
            s.list("A1", "o1:1").unwrap(),
            vec![first, second],
            "oldest first, fields as written"
        );
        assert_eq!(s.list("A1", "o1:2").unwrap(), vec![other_invoice]);
        assert_eq!(s.list("B2", "o1:1").unwrap(), vec![other_merchant]);
        assert!(s.list("B2", "o1:2").unwrap().is_empty());
        assert!(s.list("a1", "o1:1").unwrap().is_empty(), "case-sensitive");
    }

    /// A second record with a taken id fails and changes nothing.
    pub fn an_id_is_recorded_once(fresh: Open<'_>) {
        let s = fresh();
        let d = record("dlv_dup", "A1", "o1:1");
        s.record(&d).unwrap();
        let again = DeliveryRecord {
            status: DeliveryStatus::Sent,
            error: None,
            ..d.clone()
        };
        assert!(matches!(
            s.record(&again),
            Err(DeliveryStoreError::Storage(_))
        ));
        assert_eq!(s.list("A1", "o1:1").unwrap(), vec![d]);
    }

    /// [`THREADS`] threads record at once: nothing is lost, and each
    /// thread's records list in the order it made them.
    pub fn concurrent_records(fresh: Open<'_>) {
        const PER_THREAD: usize = 10;
        let s = fresh();
        let theirs = Arc::clone(&s);
        race(move |t| {
            for i in 0..PER_THREAD {
                theirs
                    .record(&record(&format!("dlv_{t}_{i}"), "A1", "o1:1"))
                    .unwrap_or_else(|e| panic!("record {t}/{i} refused: {e}"));
            }
        });
        let all = s.list("A1", "o1:1").unwrap();
        assert_eq!(all.len(), THREADS * PER_THREAD, "no record lost");
        for t in 0..THREADS {
            let mine: Vec<String> = all
                .iter()
                .map(|d| d.id.clone())
                .filter(|id| id.starts_with(&format!("dlv_{t}_")))
                .collect();
            let expected: Vec<String> = (0..PER_THREAD).map(|i| format!("dlv_{t}_{i}")).collect();
            assert_eq!(mine, expected, "thread {t}'s records, oldest first");
        }
    }

    /// Several handles on one database (as several server instances):
    /// what one records, the others list at once, in order. `open` returns
    /// a new handle on the same, initially empty, database on every call.
    pub fn shared_database(open: Open<'_>) {
        let a = open();
        let b = open();
        let first = record("dlv_a", "A1", "o1:1");
        let second = record("dlv_b", "A1", "o1:1");
        a.record(&first).unwrap();
        b.record(&second).unwrap();
        for s in [&a, &b] {
            assert_eq!(
                s.list("A1", "o1:1").unwrap(),
                vec![first.clone(), second.clone()],
                "every handle lists every attempt, oldest first"
            );
        }
        assert!(
            b.record(&first).is_err(),
            "an id taken through a is taken for b"
        );
    }
}

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
