//! The sealing pipeline: one entry point that turns a validated invoice
//! request into a sealed invoice with its five security elements.
//!
//! Steps, in order: validate and compute taxes → idempotency lookup (see
//! [`ReplayCheck`]) →
//! credit-note checks → (per outlet, serialized) read the chain head →
//! trusted timestamp → prepare the next numbers → build the sealed payload
//! (it embeds `prev_hash`) → sign → append to the ledger with the
//! idempotency key, atomically with the counters → return.
//!
//! Nothing is reserved before the append, so a failure anywhere (invalid
//! data, signer down, storage error, crash) consumes no number and writes
//! nothing: there is never an unsigned sealed invoice.
//!
//! The module is the sealing component: the pipeline ([`Fiscalizer::seal`]),
//! the credit-note rules it checks (`credit_note`), the reports it seals
//! over its store (`reports`: X, Z, A, closings, incomplete sales) and the
//! DGI certifications it records (`certification`). They share the
//! outlet lock, the head cache and the trusted [`Clock`], which is why they
//! live together. Behind the `sealing` feature: the verifier build has none
//! of it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use bonopay_core::{
    ErrorCode, IdempotencyKey, InvoiceRequest, ValidInvoice, ValidationError, ValidationErrors,
};
use bonopay_ledger::{Entry, EntryKind, EntryMeta, IndexKey, LedgerError, LedgerStore};
use bonopay_tax::{NoReferenceRates, RateTable, ReferenceRates, TaxResult};
use chrono::{Datelike, TimeZone, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use crate::error::{SignerError, VerifyError};
use crate::index;
use crate::sealed::{
    SEALED_SCHEMA, SealTuple, SealedInvoice, auth_code_of, body_hash, payload_bytes,
};
use crate::signer::Signer;

mod certification;
mod clock;
mod credit_note;
mod reports;

pub use clock::{Clock, ManualClock, SystemClock};

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The request is invalid (every problem, with paths and codes).
    #[error("invalid invoice: {0}")]
    Invalid(ValidationErrors),
    /// The idempotency key was already used for a different invoice.
    #[error("idempotency key `{key}` was already used for a different invoice")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },
    /// The signer failed; nothing was appended and no number consumed.
    #[error("signer unavailable: {0}")]
    SignerUnavailable(SignerError),
    /// The trusted clock is behind the outlet's last entry by more than the
    /// tolerance; sealing would break the time order. Fix the clock.
    #[error(
        "trusted clock is {behind_ms} ms behind the outlet's last entry (tolerance {tolerance_ms} ms)"
    )]
    ClockBehind {
        /// How far behind.
        behind_ms: i64,
        /// The configured tolerance.
        tolerance_ms: i64,
    },
    /// The ledger failed.
    #[error("ledger: {0}")]
    Storage(LedgerError),
    /// Other writers kept moving the outlet's chain (several instances
    /// sealing on one hot outlet, or an identical invoice racing this one
    /// to the same position) for every one of the allowed attempts.
    /// Nothing was appended and no number consumed: retry the same request
    /// with the same idempotency key.
    #[error("outlet {outlet}: the chain kept moving during {attempts} attempts; retry")]
    Contention {
        /// The outlet.
        outlet: String,
        /// The attempts made.
        attempts: u32,
    },
    /// A stored sealed invoice did not read back (corruption).
    #[error("stored sealed invoice unreadable: {0}")]
    Corrupt(VerifyError),
    /// The invoice is already certified by the DGI with other elements (or
    /// the DGI code certifies another invoice): the first record stands.
    #[error("invoice {id} is already certified: {why}")]
    AlreadyCertified {
        /// `{outlet}:{seq}`.
        id: String,
        /// What conflicts.
        why: String,
    },
}

impl SealError {
    /// Whether retrying the same request later can succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            SealError::SignerUnavailable(e) => e.is_retryable(),
            SealError::ClockBehind { .. } | SealError::Contention { .. } => true,
            SealError::Storage(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Configuration of a [`Fiscalizer`].
#[derive(Clone)]
pub struct FiscalizerConfig {
    /// NID of the signing device (the fiscal authority id printed on receipts).
    pub nid: String,
    /// ISF of the billing system, if homologated.
    pub isf: Option<String>,
    /// Time zone of outlets without an entry in `outlet_time_zones`.
    pub default_time_zone: Tz,
    /// Per-outlet time zones (Africa/Kinshasa or Africa/Lubumbashi).
    pub outlet_time_zones: HashMap<String, Tz>,
    /// How far the clock may be behind the outlet's last entry before sealing
    /// is refused; within it, the last entry's time is held (see
    /// [`Fiscalizer::seal`]).
    pub clock_tolerance_ms: i64,
    /// Tax rate table.
    pub rate_table: RateTable,
    /// Reference exchange rates.
    pub reference_rates: Arc<dyn ReferenceRates + Send + Sync>,
    /// Appends retried after a head conflict (another process appended).
    pub max_conflict_retries: u32,
    /// Public keys of earlier signing keys (after a rotation), trusted when
    /// stored invoices are read back (idempotent replays, credit-note
    /// originals). The current signer's key is always trusted.
    pub trusted_keys: Vec<crate::PublicKey>,
    /// When a seal looks its idempotency key up before signing.
    pub replay_check: ReplayCheck,
}

/// When [`Fiscalizer::seal`] looks its idempotency key up in the ledger
/// before signing.
///
/// Either way a key is sealed once: the ledger's unique index on the key
/// settles it at append, and a request whose key is already taken gets the
/// original seal back (`replayed`). The lookup before signing only decides
/// what a retry *costs*. A client retries because a seal was slow, and
/// nearly always because signing was (a busy or remote HSM): answering the
/// retry from the ledger then saves a signature that would take as long as
/// the original. With a fast signer and no retries the lookup is the dearer
/// part: on PostgreSQL it is a round trip per invoice, about a quarter of
/// the CPU a seal costs there (BENCHMARKS.md, issue 8), while a retry found
/// at append costs one signature of tens of microseconds. But a retry found
/// at append also fails the invoices queued behind it on its outlet (they
/// were placed on it and are placed again), so while retries are arriving
/// (a till replaying its offline queue after a lost connection) looking up
/// first is the cheaper way again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayCheck {
    /// Before every signature.
    Always,
    /// Only while it pays: while a recent signature (a moving average of
    /// the last few) took longer than `slow_signing`, and for
    /// `after_retry` after a retried request was last found at append.
    Adaptive {
        /// Signing time above which every seal looks up first.
        slow_signing: std::time::Duration,
        /// How long seals look up first after a retry was found at append.
        after_retry: std::time::Duration,
    },
}

impl Default for ReplayCheck {
    /// Adaptive: signing over 1 ms (far above a software key or a local
    /// token, below any HSM slow enough to make a client time out), and
    /// for 10 s after a retry.
    fn default() -> Self {
        Self::Adaptive {
            slow_signing: std::time::Duration::from_millis(1),
            after_retry: std::time::Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for FiscalizerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FiscalizerConfig")
            .field("nid", &self.nid)
            .field("isf", &self.isf)
            .field("default_time_zone", &self.default_time_zone)
            .field("clock_tolerance_ms", &self.clock_tolerance_ms)
            .field("rate_table", &self.rate_table.version)
            .finish_non_exhaustive()
    }
}

impl FiscalizerConfig {
    /// Defaults: Africa/Kinshasa, 5 minutes of clock tolerance, the DGI 2025
    /// rate table, no reference rates (USD invoices refused until set).
    #[must_use]
    pub fn new(nid: &str) -> Self {
        Self {
            nid: nid.to_owned(),
            isf: None,
            default_time_zone: chrono_tz::Africa::Kinshasa,
            outlet_time_zones: HashMap::new(),
            clock_tolerance_ms: 5 * 60 * 1000,
            rate_table: RateTable::dgi_2025(),
            reference_rates: Arc::new(NoReferenceRates),
            max_conflict_retries: 16,
            trusted_keys: Vec::new(),
            replay_check: ReplayCheck::default(),
        }
    }
}

/// A sealing result.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The sealed invoice (verified as it was built).
    pub invoice: SealedInvoice,
    /// The ledger entry it was stored in (seq, hashes).
    pub seq: u64,
    /// Hex of the ledger entry hash.
    pub entry_hash: String,
    /// Hex of the previous entry hash.
    pub prev_hash: String,
    /// True when this is the original answer to an earlier request with the
    /// same idempotency key and content (nothing new was sealed).
    pub replayed: bool,
}

pub(crate) type Locks = Mutex<HashMap<String, Arc<Mutex<()>>>>;

pub(crate) fn lock_for(locks: &Locks, key: &str) -> Arc<Mutex<()>> {
    let mut map = locks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(map.entry(key.to_owned()).or_default())
}

/// The sealing pipeline over a ledger store and a signer.
pub struct Fiscalizer {
    pub(crate) store: Arc<dyn LedgerStore>,
    pub(crate) signer: Arc<dyn Signer>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: FiscalizerConfig,
    pub(crate) outlet_locks: Locks,
    heads: Mutex<HashMap<String, bonopay_ledger::Head>>,
    credit_locks: Locks,
    /// Moving average of the signer's latency, in µs (see [`ReplayCheck`]).
    sign_micros: std::sync::atomic::AtomicU64,
    /// When a retried request was last found at append (see
    /// [`ReplayCheck`]): 1 + milliseconds since `created`, 0 before the
    /// first. An atomic, so that the check costs no lock on every seal.
    last_retry: std::sync::atomic::AtomicU64,
    created: std::time::Instant,
}

impl fmt::Debug for Fiscalizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fiscalizer")
            .field("signer", &self.signer)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn invalid(path: &str, code: ErrorCode, msg: impl Into<String>) -> SealError {
    SealError::Invalid(ValidationErrors(vec![ValidationError::new(
        path, code, msg,
    )]))
}

/// Lowercase hex SHA-256 (plain, for request fingerprints).
#[must_use]
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl Fiscalizer {
    /// Builds a fiscalizer with the system clock.
    pub fn new(
        store: Arc<dyn LedgerStore>,
        signer: Arc<dyn Signer>,
        config: FiscalizerConfig,
    ) -> Self {
        Self::with_clock(store, signer, Arc::new(SystemClock), config)
    }

    /// Builds a fiscalizer with an explicit clock.
    pub fn with_clock(
        store: Arc<dyn LedgerStore>,
        signer: Arc<dyn Signer>,
        clock: Arc<dyn Clock>,
        config: FiscalizerConfig,
    ) -> Self {
        Self {
            store,
            signer,
            clock,
            config,
            outlet_locks: Mutex::default(),
            credit_locks: Mutex::default(),
            heads: Mutex::default(),
            sign_micros: std::sync::atomic::AtomicU64::new(0),
            last_retry: std::sync::atomic::AtomicU64::new(0),
            created: std::time::Instant::now(),
        }
    }

    /// Whether this seal looks its key up before signing.
    fn check_replay_first(&self) -> bool {
        match self.config.replay_check {
            ReplayCheck::Always => true,
            ReplayCheck::Adaptive {
                slow_signing,
                after_retry,
            } => {
                let avg = self.sign_micros.load(std::sync::atomic::Ordering::Relaxed);
                let last = self.last_retry.load(std::sync::atomic::Ordering::Relaxed);
                let recent_retry = last != 0
                    && self
                        .created
                        .elapsed()
                        .as_millis()
                        .saturating_sub(u128::from(last - 1))
                        < after_retry.as_millis();
                u128::from(avg) > slow_signing.as_micros() || recent_retry
            }
        }
    }

    /// Folds one signature's latency into the moving average (weight 1/4,
    /// so one slow signature is enough to turn the lookup on, and a few
    /// fast ones turn it off again).
    fn record_sign_latency(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let _ = self.sign_micros.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |avg| Some(avg - avg / 4 + us / 4),
        );
    }

    /// The ledger store.
    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    /// The signer.
    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    /// The configuration.
    pub fn config(&self) -> &FiscalizerConfig {
        &self.config
    }

    /// The outlet's time zone (its business days and fiscal year).
    #[must_use]
    pub fn outlet_time_zone(&self, outlet: &str) -> Tz {
        self.time_zone(outlet)
    }

    pub(crate) fn time_zone(&self, outlet: &str) -> Tz {
        self.config
            .outlet_time_zones
            .get(outlet)
            .copied()
            .unwrap_or(self.config.default_time_zone)
    }

    /// Loads and verifies the sealed invoice stored at `outlet`/`seq`.
    ///
    /// # Errors
    /// [`SealError::Storage`] or [`SealError::Corrupt`].
    pub fn load(&self, outlet: &str, seq: u64) -> Result<Option<Sealed>, SealError> {
        let Some(entry) = self.store.entry(outlet, seq).map_err(SealError::Storage)? else {
            return Ok(None);
        };
        self.sealed_from_entry(&entry, false).map(Some)
    }

    fn sealed_from_entry(&self, entry: &Entry, replayed: bool) -> Result<Sealed, SealError> {
        let mut keys = Vec::with_capacity(self.config.trusted_keys.len() + 1);
        keys.push(self.signer.public_key().clone());
        keys.extend(self.config.trusted_keys.iter().cloned());
        let invoice = SealedInvoice::verify(&entry.payload, &keys).map_err(SealError::Corrupt)?;
        Ok(Sealed {
            invoice,
            seq: entry.seq,
            entry_hash: hex::encode(entry.entry_hash),
            prev_hash: hex::encode(entry.prev_hash),
            replayed,
        })
    }

    /// Finds a sealed invoice by authentication code (any outlet).
    ///
    /// # Errors
    /// [`SealError::Storage`] or [`SealError::Corrupt`].
    pub fn find_by_auth_code(&self, code: &str) -> Result<Option<Sealed>, SealError> {
        let hits = self
            .store
            .find_index(index::AUTH_CODE, code)
            .map_err(SealError::Storage)?;
        match hits.first() {
            Some((outlet, seq)) => self.load(outlet, *seq),
            None => Ok(None),
        }
    }

    /// Seals `req` under `idempotency_key`, scoped to the request's merchant.
    ///
    /// Both arguments are types only checking can make
    /// ([`bonopay_core::parse_invoice`] or [`ValidInvoice::new`], and
    /// [`IdempotencyKey::new`]), so nothing is validated twice here; what
    /// is left to refuse needs the totals ([`SealError::Invalid`] from the
    /// tax computation) or the ledger.
    ///
    /// **Idempotency.** The same key with the same canonical content returns
    /// the original sealed invoice (`replayed = true`) and consumes nothing;
    /// with different content it is [`SealError::IdempotencyConflict`]. Keys
    /// are stored in the ledger with the entry, so this holds across restarts
    /// and concurrent duplicate submissions.
    ///
    /// **Time.** The timestamp comes from the trusted clock, never the client,
    /// and is monotonic per outlet: if the clock reads earlier than the
    /// outlet's last entry by at most `clock_tolerance_ms`, the last entry's
    /// time is *held* (reused); further behind, sealing is refused with
    /// [`SealError::ClockBehind`] until the clock is fixed.
    ///
    /// # Errors
    /// [`SealError`]; see [`SealError::is_retryable`].
    pub fn seal(
        &self,
        req: &ValidInvoice,
        idempotency_key: &IdempotencyKey,
    ) -> Result<Sealed, SealError> {
        let idempotency_key = idempotency_key.as_str();
        let req = req.request();
        let tax = bonopay_tax::compute(
            req,
            &self.config.rate_table,
            self.config.reference_rates.as_ref(),
        )
        .map_err(SealError::Invalid)?;
        let request_jcs = req.canonical_string();
        let request_sha = sha256_hex(request_jcs.as_bytes());
        let scoped_key = format!("{}/{}", req.merchant_nif, idempotency_key);

        // While signing is slow, a retried request is answered from the
        // ledger before anything is signed (see `ReplayCheck`). The store's
        // unique key at append settles every other case.
        if self.check_replay_first()
            && let Some(done) = self.replay(&scoped_key, &request_sha, idempotency_key)?
        {
            return Ok(done);
        }

        // Credit notes against one original are serialized so two partial
        // credit notes cannot together exceed what was sold.
        // The reference may quote the original's Bono Pay code or the Code
        // DEF/DGI it was certified with; both name the same original, and
        // the checks, locks and index keys below use the original's Bono
        // Pay code, so quoting one form or the other credits the same sale.
        let credit_ref = match req.credit_note.as_ref().filter(|c| c.reference != "RRR") {
            Some(c) => Some(self.original_code(req, &c.reference)?),
            None => None,
        };
        let credit_lock = credit_ref.as_ref().map(|r| lock_for(&self.credit_locks, r));
        let _credit_guard = credit_lock
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut credit_seq = match &credit_ref {
            Some(reference) => Some(self.check_credit_note(req, reference)? + 1),
            None => None,
        };

        let outlet_lock = lock_for(&self.outlet_locks, &req.outlet_id);
        let mut attempts = 0;
        loop {
            attempts += 1;
            // Under the outlet lock: place the entry on the outlet's head
            // (the cached, predicted one), sign it, queue it, and record the
            // head it will leave. The lock is released before waiting for
            // durability, so the next invoice of the same outlet can be
            // placed on top of this one and share its commit (pipelining).
            // If this entry then fails, the ones placed on it conflict and
            // are placed again: the store's compare-and-swap keeps the
            // chain exact either way.
            let guard = outlet_lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let built = self.build_entry(
                req,
                &tax,
                &request_jcs,
                &request_sha,
                &scoped_key,
                credit_ref.as_deref().zip(credit_seq),
            );
            let (entry, invoice, predicted) = match built {
                Ok(b) => b,
                Err(e) => {
                    // The signer or clock may be down while the client
                    // retries a request that was sealed before: answer it.
                    self.forget_head(&req.outlet_id);
                    drop(guard);
                    return match self.replay(&scoped_key, &request_sha, idempotency_key)? {
                        Some(done) => Ok(done),
                        None => Err(e),
                    };
                }
            };
            let pending = self.store.submit(&entry);
            self.remember_head(predicted);
            drop(guard);
            match pending() {
                Ok(_) => {
                    return Ok(Sealed {
                        invoice,
                        seq: entry.seq,
                        entry_hash: hex::encode(entry.entry_hash),
                        prev_hash: hex::encode(entry.prev_hash),
                        replayed: false,
                    });
                }
                Err(LedgerError::Duplicate { name, .. }) if name == index::IDEMPOTENCY => {
                    self.forget_head(&req.outlet_id);
                    let ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.last_retry
                        .store(ms.saturating_add(1), std::sync::atomic::Ordering::Relaxed);
                    // An earlier or concurrent request with the same key.
                    return self
                        .replay(&scoped_key, &request_sha, idempotency_key)?
                        .ok_or(SealError::Storage(LedgerError::Unavailable(
                            "duplicate key vanished".into(),
                        )));
                }
                Err(LedgerError::Conflict { .. })
                    if attempts <= self.config.max_conflict_retries =>
                {
                    // Another writer moved the head, or an entry this one
                    // was placed on failed.
                    self.forget_head(&req.outlet_id);
                    continue;
                }
                Err(LedgerError::Duplicate { name, .. })
                    if name == index::CREDIT_SEQ
                        && attempts <= self.config.max_conflict_retries =>
                {
                    // Another instance sealed a credit note against the
                    // same original meanwhile: check the quantities again
                    // against it (this may now refuse the note).
                    self.forget_head(&req.outlet_id);
                    if let Some(reference) = &credit_ref {
                        credit_seq = Some(self.check_credit_note(req, reference)? + 1);
                    }
                    continue;
                }
                Err(LedgerError::Duplicate { name, .. })
                    if name == index::AUTH_CODE && attempts <= self.config.max_conflict_retries =>
                {
                    // An identical invoice (same content, same millisecond)
                    // was placed at the same position from a stale head and
                    // committed first: the signatures, hence the codes, are
                    // equal. A conflict like any other; place it again.
                    self.forget_head(&req.outlet_id);
                    continue;
                }
                // Out of attempts on a conflict, or on a racing write at
                // this position (an identical invoice: equal signature,
                // hence equal code; a credit note on the same original):
                // contention, retryable, never a storage failure.
                Err(LedgerError::Conflict { .. }) => {
                    self.forget_head(&req.outlet_id);
                    return Err(SealError::Contention {
                        outlet: req.outlet_id.clone(),
                        attempts,
                    });
                }
                Err(LedgerError::Duplicate { name, .. })
                    if name == index::AUTH_CODE || name == index::CREDIT_SEQ =>
                {
                    self.forget_head(&req.outlet_id);
                    return Err(SealError::Contention {
                        outlet: req.outlet_id.clone(),
                        attempts,
                    });
                }
                Err(e) => {
                    self.forget_head(&req.outlet_id);
                    return Err(SealError::Storage(e));
                }
            }
        }
    }

    /// The outlet's head: cached after our own appends (we hold the outlet
    /// lock, and append is a compare-and-swap, so a stale cache can only
    /// cause a `Conflict`, which clears it), read from the store otherwise.
    pub(crate) fn head(&self, outlet: &str) -> Result<bonopay_ledger::Head, SealError> {
        if let Some(h) = self.heads.lock().ok().and_then(|m| m.get(outlet).cloned()) {
            return Ok(h);
        }
        self.store.head(outlet).map_err(SealError::Storage)
    }

    pub(crate) fn remember_head(&self, head: bonopay_ledger::Head) {
        if let Ok(mut m) = self.heads.lock() {
            m.insert(head.outlet.clone(), head);
        }
    }

    pub(crate) fn forget_head(&self, outlet: &str) {
        if let Ok(mut m) = self.heads.lock() {
            m.remove(outlet);
        }
    }

    /// The trusted, per-outlet monotonic time for the next entry after
    /// `head`, in ms and in the outlet's time zone: the clock, or the last
    /// entry's time held when the clock is behind it within the tolerance.
    ///
    /// # Errors
    /// [`SealError::ClockBehind`] beyond the tolerance.
    pub(crate) fn trusted_time(
        &self,
        head: &bonopay_ledger::Head,
    ) -> Result<(i64, chrono::DateTime<Tz>), SealError> {
        let now = self.clock.now_ms();
        let time_ms = if now >= head.time_ms {
            now
        } else if head.time_ms - now <= self.config.clock_tolerance_ms {
            head.time_ms
        } else {
            return Err(SealError::ClockBehind {
                behind_ms: head.time_ms - now,
                tolerance_ms: self.config.clock_tolerance_ms,
            });
        };
        let tz = self.time_zone(&head.outlet);
        let local = Utc
            .timestamp_millis_opt(time_ms)
            .single()
            .ok_or(SealError::ClockBehind {
                behind_ms: 0,
                tolerance_ms: 0,
            })?
            .with_timezone(&tz);

        Ok((time_ms, local))
    }

    fn replay(
        &self,
        scoped_key: &str,
        request_sha: &str,
        key: &str,
    ) -> Result<Option<Sealed>, SealError> {
        let hits = self
            .store
            .find_index(index::IDEMPOTENCY, scoped_key)
            .map_err(SealError::Storage)?;
        let Some((outlet, seq)) = hits.first() else {
            return Ok(None);
        };
        let entry = self
            .store
            .entry(outlet, *seq)
            .map_err(SealError::Storage)?
            .ok_or_else(|| {
                SealError::Storage(LedgerError::Corrupt(format!(
                    "index points at missing {outlet}/{seq}"
                )))
            })?;
        let sealed = self.sealed_from_entry(&entry, true)?;
        let body = sealed.invoice.body_value().map_err(SealError::Corrupt)?;
        if body["request_sha256"].as_str() == Some(request_sha) {
            Ok(Some(sealed))
        } else {
            Err(SealError::IdempotencyConflict {
                key: key.to_owned(),
            })
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_entry(
        &self,
        req: &InvoiceRequest,
        tax: &TaxResult,
        request_jcs: &str,
        request_sha: &str,
        scoped_key: &str,
        credit_ref: Option<(&str, u64)>,
    ) -> Result<(Entry, SealedInvoice, bonopay_ledger::Head), SealError> {
        let outlet = &req.outlet_id;
        let head = self.head(outlet)?;
        let (time_ms, local) = self.trusted_time(&head)?;
        let timestamp = local.format("%Y-%m-%dT%H:%M:%S%:z").to_string();

        let meta = EntryMeta {
            kind: if req.invoice_type.is_credit_note() {
                EntryKind::CreditNote
            } else {
                EntryKind::Invoice
            },
            invoice_type: Some(req.invoice_type),
            fiscal_year: local.year(),
            time_ms,
        };
        let prepared = head.prepare(&meta).map_err(SealError::Storage)?;
        let number =
            prepared
                .fiscal_number
                .ok_or(SealError::Storage(LedgerError::InvalidEntry(
                    "an invoice entry got no fiscal number".into(),
                )))?;
        let counters = number.to_string();
        let prev_hash = hex::encode(prepared.prev_hash);
        // TaxResult serializes straight to its JCS form (sorted fields, no numbers).
        let tax_jcs = serde_json::to_string(tax).unwrap_or_default();
        let number_jcs = serde_json::to_string(&number).unwrap_or_default();

        // The body, assembled in JCS key order from parts that are JCS.
        let mut members: Vec<(&str, String)> = vec![
            ("algorithm", json_str(self.signer.algorithm().as_str())),
            ("counters", json_str(&counters)),
            ("fiscal_number", number_jcs),
            ("fiscal_year", meta.fiscal_year.to_string()),
            ("key_id", json_str(self.signer.key_id())),
            ("merchant_nif", json_str(&req.merchant_nif)),
            ("nid", json_str(&self.config.nid)),
            ("outlet", json_str(outlet)),
            ("prev_hash", json_str(&prev_hash)),
            ("request", request_jcs.to_owned()),
            ("request_sha256", json_str(request_sha)),
            ("schema", json_str(SEALED_SCHEMA)),
            ("seq", prepared.seq.to_string()),
            ("tax", tax_jcs),
            ("time_ms", time_ms.to_string()),
            ("time_zone", json_str(local.timezone().name())),
            ("timestamp", json_str(&timestamp)),
        ];
        if let Some(isf) = &self.config.isf {
            members.push(("isf", json_str(isf)));
            members.sort_by(|a, b| a.0.cmp(b.0));
        }
        let mut body = String::with_capacity(request_jcs.len() + tax_jcs_len_hint(tax) + 600);
        body.push('{');
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push('"');
            body.push_str(k);
            body.push_str("\":");
            body.push_str(v);
        }
        body.push('}');

        let tuple = SealTuple {
            body_sha256: body_hash(body.as_bytes()),
            counters,
            key_id: self.signer.key_id().to_owned(),
            merchant_nif: req.merchant_nif.clone(),
            nid: self.config.nid.clone(),
            outlet: outlet.clone(),
            prev_hash,
            seq: prepared.seq,
            timestamp,
            total: tax.dgi.total.to_string(),
            v: 1,
            vtotal: tax.dgi.vtotal.to_string(),
        };
        let started = std::time::Instant::now();
        let signed = self.signer.sign(&tuple.digest());
        self.record_sign_latency(started.elapsed());
        let out = signed.map_err(SealError::SignerUnavailable)?;
        let auth_code = auth_code_of(&out.signature);
        let payload = payload_bytes(&auth_code, body.as_bytes(), &out, &tuple);
        let mut keys = vec![
            IndexKey::unique(index::IDEMPOTENCY, scoped_key),
            IndexKey::unique(index::AUTH_CODE, auth_code.clone()),
        ];
        if let Some((r, n)) = credit_ref {
            keys.push(IndexKey::multi(index::CREDITS, r));
            keys.push(IndexKey::unique(index::CREDIT_SEQ, format!("{r}/{n}")));
        }
        let entry = prepared.seal(payload.clone()).with_index(keys);
        let predicted = head.advance(&entry);
        Ok((
            entry,
            SealedInvoice::from_parts(tuple, body, out, auth_code, payload),
            predicted,
        ))
    }
}

fn tax_jcs_len_hint(tax: &TaxResult) -> usize {
    200 * (tax.groups.len() + 2)
}
