//! Receipt deliveries: `POST /v1/invoices/{id}/deliveries` sends the PDF
//! receipt by e-mail (SMTP, with lettre) or through a [`MessagingChannel`]
//! (a WhatsApp-style HTTP API, [`WhatsAppHttpChannel`]); every attempt,
//! sent or failed, is recorded in a [`DeliveryStore`] (the `deliveries`
//! table of `auth.db` in `bonopay serve`) and listed by
//! `GET /v1/invoices/{id}/deliveries`.
//!
//! Owner, cashier and integration keys may deliver receipts of the outlets
//! they are bound to; auditors may only list deliveries. Another merchant's
//! invoice is a 404. A channel that fails (SMTP unreachable or refusing, a
//! non-2xx answer from the messaging API) gives a 502 `delivery_failed`,
//! and the attempt is recorded as `failed` with the reason.
//!
//! The SMTP transport is plain SMTP (no TLS backend is compiled in): point
//! it at a local relay (`smtp://127.0.0.1:25`) that forwards with TLS.

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
use lettre::{Message, SmtpTransport, Transport};
use rand_core::{OsRng, RngCore};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::invoices::{load_for, pdf_of};
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
}

impl Channel {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Whatsapp => "whatsapp",
        }
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

/// Durable record of delivery attempts. Synchronous and object-safe.
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
}

/// [`DeliveryStore`] in memory (tests, embedding examples).
#[derive(Debug, Default)]
pub struct MemoryDeliveryStore(Mutex<Vec<DeliveryRecord>>);

impl DeliveryStore for MemoryDeliveryStore {
    fn record(&self, delivery: &DeliveryRecord) -> Result<(), DeliveryStoreError> {
        self.0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?
            .push(delivery.clone());
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
            .filter(|d| d.merchant_nif == merchant_nif && d.invoice_id == invoice_id)
            .cloned()
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

fn storage(e: impl fmt::Display) -> DeliveryStoreError {
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
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(storage)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(storage)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(storage)?;
        conn.execute_batch(SCHEMA).map_err(storage)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }
}

impl DeliveryStore for SqliteDeliveryStore {
    fn record(&self, d: &DeliveryRecord) -> Result<(), DeliveryStoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        let status = match d.status {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
        };
        conn.execute(
            "INSERT INTO deliveries (id, invoice_id, merchant_nif, channel, recipient, status, error, created_at, completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                d.id,
                d.invoice_id,
                d.merchant_nif,
                d.channel.as_str(),
                d.recipient,
                status,
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
        let conn = self
            .conn
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        let mut st = conn
            .prepare(
                "SELECT id, invoice_id, merchant_nif, channel, recipient, status, error, created_at, completed_at
                 FROM deliveries WHERE merchant_nif = ?1 AND invoice_id = ?2 ORDER BY rowid",
            )
            .map_err(storage)?;
        let rows = st
            .query_map(params![merchant_nif, invoice_id], |r| {
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
        let mut out = Vec::new();
        for row in rows {
            let (mut d, channel, status) = row.map_err(storage)?;
            d.channel = match channel.as_str() {
                "email" => Channel::Email,
                "whatsapp" => Channel::Whatsapp,
                other => return Err(storage(format!("unknown channel `{other}`"))),
            };
            d.status = match status.as_str() {
                "sent" => DeliveryStatus::Sent,
                "failed" => DeliveryStatus::Failed,
                other => return Err(storage(format!("unknown status `{other}`"))),
            };
            out.push(d);
        }
        Ok(out)
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
#[derive(Debug, Clone)]
pub struct WhatsAppHttpChannel {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl WhatsAppHttpChannel {
    /// A channel posting to `url` with `token`, 10 s timeout.
    ///
    /// # Errors
    /// A message if the HTTP client cannot be built.
    pub fn new(url: &str, token: &str) -> Result<Self, String> {
        let client = reqwest::Client::builder()
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
                .map_err(|e| DeliveryError::Unreachable(e.to_string()))?;
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

/// Sends e-mail over plain SMTP (no TLS; use a local relay).
#[derive(Debug, Clone)]
pub struct SmtpMailer {
    host: String,
    port: u16,
    from: Mailbox,
    timeout: Duration,
}

impl SmtpMailer {
    /// A mailer for `smtp://host[:port]` (port 25 by default) sending as
    /// `from` (`name <addr>` or `addr`).
    ///
    /// # Errors
    /// A message if the URL is not `smtp://…` or `from` is not an address.
    pub fn from_url(url: &str, from: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("smtp://")
            .ok_or_else(|| {
                format!("SMTP URL `{url}`: only smtp://host:port is supported (no TLS)")
            })?
            .trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("SMTP URL `{url}`: bad port"))?,
            ),
            None => (rest, 25),
        };
        if host.is_empty() {
            return Err(format!("SMTP URL `{url}`: no host"));
        }
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| format!("SMTP from `{from}`: {e}"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
            from,
            timeout: Duration::from_secs(10),
        })
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
        let transport = SmtpTransport::builder_dangerous(self.host.clone())
            .port(self.port)
            .timeout(Some(self.timeout))
            .build();
        transport.send(&email).map(|_| ()).map_err(|e| {
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
    store: Arc<dyn DeliveryStore>,
    email: Option<SmtpMailer>,
    messaging: Option<Arc<dyn MessagingChannel>>,
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
        }
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

/// A delivery request.
#[derive(Debug, Deserialize, ToSchema)]
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

fn new_id() -> Result<String, ApiError> {
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
/// records the attempt.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/deliveries",
    tag = "receipts",
    params(("id" = String, Path, description = "`{outlet}:{seq}`")),
    request_body = DeliveryRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Sent (and recorded)", body = DeliveryRecord),
        (status = 403, description = "Auditor key, or key not bound to the outlet", body = ErrorBody),
        (status = 404, description = "No such invoice for this merchant", body = ErrorBody),
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
        _ => {}
    }
    let configured = match req.channel {
        Channel::Email => state.deliveries.email.is_some(),
        Channel::Whatsapp => state.deliveries.messaging.is_some(),
    };
    if !configured {
        return Err(ApiError::invalid(
            "channel",
            "channel_not_configured",
            format!(
                "this server has no {} channel configured",
                req.channel.as_str()
            ),
        ));
    }

    let el = sealed.invoice.elements.clone();
    let invoice_id = format!("{}:{}", sealed.invoice.tuple.outlet, sealed.seq);
    let st = Arc::clone(&state);
    let document = blocking(move || pdf_of(&st, &sealed, format)).await?;
    let message = OutgoingMessage {
        to: to.clone(),
        subject: format!(
            "Facture normalisee {} - CODE DEF/DGI {}",
            el.fiscal_number, el.authentication_code_display
        ),
        text: format!(
            "Bonjour,\n\nVeuillez trouver ci-joint votre facture normalisée {} \
             (CODE DEF/DGI {}).\n",
            el.fiscal_number, el.authentication_code_display
        ),
        filename: format!("facture-{}.pdf", invoice_id.replace(':', "-")),
        document,
    };
    let created_at = now();
    let outcome = match req.channel {
        Channel::Email => {
            let mailer = state.deliveries.email.clone();
            let m = message.clone();
            blocking(move || {
                Ok(match mailer {
                    Some(mailer) => mailer.send(&m),
                    None => Err(DeliveryError::Invalid("no e-mail channel".into())),
                })
            })
            .await?
        }
        Channel::Whatsapp => match &state.deliveries.messaging {
            Some(channel) => channel.send(&message).await,
            None => Err(DeliveryError::Invalid("no messaging channel".into())),
        },
    };
    let record = DeliveryRecord {
        id: new_id()?,
        invoice_id,
        merchant_nif: who.merchant_nif.clone(),
        channel: req.channel,
        recipient: to,
        status: if outcome.is_ok() {
            DeliveryStatus::Sent
        } else {
            DeliveryStatus::Failed
        },
        error: outcome.as_ref().err().map(ToString::to_string),
        created_at,
        completed_at: now(),
    };
    let store = Arc::clone(&state.deliveries.store);
    let r = record.clone();
    blocking(move || {
        store
            .record(&r)
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
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
        assert!(SmtpMailer::from_url("smtps://relay:465", "r@x.cd").is_err());
        assert!(SmtpMailer::from_url("smtp://relay:x", "r@x.cd").is_err());
        assert!(SmtpMailer::from_url("smtp://relay", "not an address").is_err());
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
