//! The POS-side offline queue.
//!
//! Drafts live in a SQLite file on the device. The order of operations is
//! what makes it crash-safe:
//!
//! 1. [`OfflineQueue::enqueue`] validates the draft, draws a random
//!    idempotency key and stores both in one transaction (`queued`).
//! 2. [`OfflineQueue::flush`] marks the oldest draft of a terminal
//!    `in_flight` (committed), sends it with its key, and stores the answer
//!    (`fiscalized` or `rejected`) in one transaction.
//! 3. A draft found `in_flight` on the next flush (the process died, or the
//!    answer was lost) is simply sent again with the *same* key: the server
//!    returns the original seal instead of sealing twice.
//!
//! A retryable failure (network down, server 5xx, signer down) stops that
//! terminal's flush, so drafts are sealed in the order they were taken.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bonopay_core::ValidationErrors;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The draft is not a valid invoice; it was not queued.
    #[error("invalid draft: {0}")]
    Invalid(ValidationErrors),
    /// The queue file failed.
    #[error("queue storage: {0}")]
    Storage(String),
    /// No draft with that id.
    #[error("no draft {0}")]
    NotFound(i64),
}

fn storage(e: impl fmt::Display) -> QueueError {
    QueueError::Storage(e.to_string())
}

/// Where a draft stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DraftStatus {
    /// Waiting to be sent.
    Queued,
    /// Sent (or about to be); the outcome is not recorded yet.
    InFlight,
    /// Sealed by the server; `result` holds its answer (five elements).
    Fiscalized,
    /// Refused by the server; `result` holds its errors. Final.
    Rejected,
}

impl DraftStatus {
    fn as_str(self) -> &'static str {
        match self {
            DraftStatus::Queued => "queued",
            DraftStatus::InFlight => "in_flight",
            DraftStatus::Fiscalized => "fiscalized",
            DraftStatus::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Result<Self, QueueError> {
        Ok(match s {
            "queued" => DraftStatus::Queued,
            "in_flight" => DraftStatus::InFlight,
            "fiscalized" => DraftStatus::Fiscalized,
            "rejected" => DraftStatus::Rejected,
            other => {
                return Err(QueueError::Storage(format!(
                    "unknown draft status `{other}`"
                )));
            }
        })
    }
}

/// A queued draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Draft {
    /// Local id, increasing in the order drafts were taken.
    pub id: i64,
    /// The till that took it.
    pub terminal: String,
    /// Its idempotency key (random, fixed at enqueue).
    pub idempotency_key: String,
    /// The canonical invoice JSON that is sent.
    pub body: String,
    /// Status.
    pub status: DraftStatus,
    /// Send attempts so far.
    pub attempts: u32,
    /// The server's answer body for fiscalized or rejected drafts.
    pub result: Option<String>,
    /// The last retryable error, for display.
    pub last_error: Option<String>,
}

/// What the server said about one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Submitted {
    /// Sealed now (201) or earlier (200, replay): the response body.
    Sealed(String),
    /// Refused for good (422 validation, 409 key conflict, 4xx): the body.
    Rejected(String),
}

/// A failure that may pass: the draft stays queued and is retried later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Retryable(pub String);

/// How drafts reach the fiscal core. [`HttpTransport`] is the real one; a
/// test can layer fault injection over it.
pub trait Transport: fmt::Debug + Send + Sync {
    /// Submits `body` under `idempotency_key`.
    ///
    /// # Errors
    /// [`Retryable`] when the outcome is unknown or temporary.
    fn submit(&self, idempotency_key: &str, body: &str) -> Result<Submitted, Retryable>;
}

/// `POST {base}/v1/invoices` with a bearer API key.
pub struct HttpTransport {
    base: String,
    api_key: String,
    client: reqwest::blocking::Client,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport to `base` (e.g. `http://127.0.0.1:8080`), with a request timeout.
    ///
    /// # Errors
    /// [`Retryable`] if the HTTP client cannot be built.
    pub fn new(base: &str, api_key: &str, timeout: Duration) -> Result<Self, Retryable> {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Retryable(format!("http client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            client,
        })
    }
}

impl Transport for HttpTransport {
    fn submit(&self, idempotency_key: &str, body: &str) -> Result<Submitted, Retryable> {
        let resp = self
            .client
            .post(format!("{}/v1/invoices", self.base))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", idempotency_key)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .map_err(|e| Retryable(format!("send: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .map_err(|e| Retryable(format!("read answer: {e}")))?;
        match status.as_u16() {
            200 | 201 => Ok(Submitted::Sealed(text)),
            408 | 425 | 429 => Err(Retryable(format!("{status}: {text}"))),
            // 401/403: the key is wrong or revoked; 404: the server does not
            // know this merchant or outlet for this key (not yet registered).
            // The draft is not at fault: keep it queued for an operator to fix
            // the configuration, instead of rejecting a sale for good.
            401 | 403 | 404 => Err(Retryable(format!("{status}: {text}"))),
            400..=499 => Ok(Submitted::Rejected(text)),
            _ => Err(Retryable(format!("{status}: {text}"))),
        }
    }
}

/// Outcome of one flush.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    /// Drafts sealed during this flush.
    pub fiscalized: u32,
    /// Drafts refused during this flush.
    pub rejected: u32,
    /// Drafts still waiting (a terminal stopped on a retryable error).
    pub remaining: u32,
    /// The retryable errors met, one per stopped terminal.
    pub errors: Vec<String>,
}

/// The durable queue.
#[derive(Debug)]
pub struct OfflineQueue {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS drafts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    terminal        TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    result          TEXT,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS drafts_pending ON drafts (terminal, id) WHERE status IN ('queued', 'in_flight');";

fn random_key() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    format!("pos-{}", hex::encode(b))
}

impl OfflineQueue {
    /// Opens (creating) the queue file. WAL and `synchronous=FULL`: a draft
    /// the POS was told is queued survives a power cut.
    ///
    /// # Errors
    /// [`QueueError::Storage`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, QueueError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(storage)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(storage)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .map_err(storage)?;
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(storage)?;
        conn.execute_batch(SCHEMA).map_err(storage)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The queue file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, QueueError> {
        self.conn.lock().map_err(|_| storage("queue lock poisoned"))
    }

    /// Validates and queues a draft taken at `terminal`. Invalid drafts are
    /// refused here, with every error, rather than queued to fail later.
    ///
    /// # Errors
    /// [`QueueError::Invalid`] or [`QueueError::Storage`].
    pub fn enqueue(&self, terminal: &str, invoice_json: &str) -> Result<Draft, QueueError> {
        let req = bonopay_core::parse_invoice(invoice_json).map_err(QueueError::Invalid)?;
        let body = req.canonical_string();
        let key = random_key();
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO drafts (terminal, idempotency_key, body, status) VALUES (?1, ?2, ?3, 'queued')",
            params![terminal, key, body],
        )
        .map_err(storage)?;
        let id = conn.last_insert_rowid();
        drop(conn);
        self.get(id)
    }

    /// One draft.
    ///
    /// # Errors
    /// [`QueueError::NotFound`] or [`QueueError::Storage`].
    pub fn get(&self, id: i64) -> Result<Draft, QueueError> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT id, terminal, idempotency_key, body, status, attempts, result, last_error FROM drafts WHERE id = ?1",
            [id],
            row,
        )
        .optional()
        .map_err(storage)?
        .ok_or(QueueError::NotFound(id))?
    }

    /// Every draft, oldest first.
    ///
    /// # Errors
    /// [`QueueError::Storage`].
    pub fn drafts(&self) -> Result<Vec<Draft>, QueueError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT id, terminal, idempotency_key, body, status, attempts, result, last_error FROM drafts ORDER BY id")
            .map_err(storage)?;
        let rows = stmt.query_map([], row).map_err(storage)?;
        rows.map(|r| r.map_err(storage).and_then(|d| d)).collect()
    }

    fn next_pending(&self, terminal: &str) -> Result<Option<(i64, String, String)>, QueueError> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT id, idempotency_key, body FROM drafts
             WHERE terminal = ?1 AND status IN ('queued', 'in_flight') ORDER BY id LIMIT 1",
            [terminal],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(storage)
    }

    fn terminals_pending(&self) -> Result<Vec<String>, QueueError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT DISTINCT terminal FROM drafts WHERE status IN ('queued', 'in_flight') ORDER BY terminal")
            .map_err(storage)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(storage)?;
        rows.map(|r| r.map_err(storage)).collect()
    }

    fn set(
        &self,
        id: i64,
        status: DraftStatus,
        result: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), QueueError> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE drafts SET status = ?2,
                 result = COALESCE(?3, result), last_error = ?4,
                 attempts = attempts + (CASE WHEN ?2 = 'in_flight' THEN 1 ELSE 0 END)
             WHERE id = ?1",
            params![id, status.as_str(), result, error],
        )
        .map_err(storage)?;
        Ok(())
    }

    /// Sends every pending draft, in order per terminal. A terminal stops at
    /// its first retryable failure; other terminals go on.
    ///
    /// # Errors
    /// [`QueueError::Storage`] (network problems are not errors: they are
    /// reported in [`FlushReport::errors`] and the drafts stay queued).
    pub fn flush(&self, transport: &dyn Transport) -> Result<FlushReport, QueueError> {
        let mut report = FlushReport::default();
        for terminal in self.terminals_pending()? {
            while let Some((id, key, body)) = self.next_pending(&terminal)? {
                // Committed before sending: if we die now, the next flush
                // resends with the same key.
                self.set(id, DraftStatus::InFlight, None, None)?;
                match transport.submit(&key, &body) {
                    Ok(Submitted::Sealed(answer)) => {
                        self.set(id, DraftStatus::Fiscalized, Some(&answer), None)?;
                        report.fiscalized += 1;
                    }
                    Ok(Submitted::Rejected(answer)) => {
                        self.set(id, DraftStatus::Rejected, Some(&answer), None)?;
                        report.rejected += 1;
                    }
                    Err(Retryable(e)) => {
                        self.set(id, DraftStatus::Queued, None, Some(&e))?;
                        report.errors.push(format!("{terminal}: {e}"));
                        break;
                    }
                }
            }
        }
        report.remaining = u32::try_from(
            self.drafts()?
                .iter()
                .filter(|d| matches!(d.status, DraftStatus::Queued | DraftStatus::InFlight))
                .count(),
        )
        .unwrap_or(u32::MAX);
        Ok(report)
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Draft, QueueError>> {
    let status: String = r.get(4)?;
    let attempts: i64 = r.get(5)?;
    let (id, terminal, idempotency_key, body) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    let (result, last_error) = (r.get(6)?, r.get(7)?);
    Ok(DraftStatus::parse(&status).map(|status| Draft {
        id,
        terminal,
        idempotency_key,
        body,
        status,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        result,
        last_error,
    }))
}
