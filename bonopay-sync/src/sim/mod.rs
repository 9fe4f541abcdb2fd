//! The DGI e-MCF simulator: a real HTTP server that behaves like the DGI's
//! e-MCF (`dgi-emcf.md` §4), for tests and for developing against without
//! the DGI.
//!
//! Why it exists: the sync agent must confirm every invoice **exactly
//! once** across crashes, 5xx answers and lost responses. That can only be
//! shown against a server that (a) keeps the two-phase create → confirm /
//! cancel state with its 10-pending limit and 2-minute expiry, (b) injects
//! the failures that matter, including "committed, then the response was
//! lost", and (c) records every confirm it performed, so a test can assert
//! that no invoice number was confirmed twice ([`Simulator::double_confirms`]).
//!
//! The totals are not reimplemented: the request is mapped back into the
//! `bonopay/invoice/v1` shape and computed by `bonopay-tax` with the
//! `dgi-sfe-2025-05` rate table.
//!
//! # Endpoints
//!
//! Under `/api` (bearer JWT required):
//!
//! | Call | Answer |
//! |---|---|
//! | `GET /api/invoice` | [`DgiStatus`] plus Benin's `status`, `version`, `nif`, `tokenValid`, `serverDateTime`, and the token's `emcfId` |
//! | `POST /api/invoice` | [`DgiSubmitted`] plus `curTotal` (foreign currency) and `groups[{group,rate,base,tax,total}]` (CDF) |
//! | `PUT /api/invoice/{uid}/CONFIRM` (or `confirm`), body [`DgiTotals`] | [`DgiConfirmation`] |
//! | `PUT /api/invoice/{uid}/CANCEL` (or `cancel`) | [`DgiInvoiceDetails`] with status `CANCELLED` |
//! | `GET /api/invoice/{uid}` | [`DgiInvoiceDetails`], for pending and finalised invoices |
//!
//! Under `/_sim` (no auth; test control): `GET /_sim/confirms` (every
//! [`ConfirmRecord`]), `GET /_sim/stats` ([`SimStats`]), `GET|POST
//! /_sim/faults` ([`Faults`]), `POST /_sim/expire` (expires every pending
//! invoice now; answers `{"expired": n}`).
//!
//! # Errors
//!
//! Every error body is `{"errorCode": "…", "errorDesc": "…"}`, with the
//! Benin codes where one fits:
//!
//! | HTTP | `errorCode` | When |
//! |---|---|---|
//! | 400 | `3` `4` `5` `7` `8` `9` | bad type; credit note without reference or referenceType; reference neither 24 characters nor `RRR`; bad payment name; no items; group not A–N |
//! | 400 | `99` | malformed JSON, any other invalid invoice (the core's validation text), CONFIRM totals differing from the answered ones (the invoice stays pending) |
//! | 400 | `1` | more than `max_pending` pending invoices for the NIF (400, not 429: the e-MCF refused the invoice and will not accept it on a plain retry; the client must confirm or cancel first) |
//! | 401 | `99` | missing, malformed, badly signed or expired token, wrong `iss`/`aud`/`role`/`unique_name` |
//! | 403 | `99` | the invoice's `nif` is not the token's NIF |
//! | 404 | `20` | uid unknown (or another NIF's), expired, or already confirmed or cancelled, on CONFIRM and CANCEL; uid unknown on `GET /api/invoice/{uid}` |
//! | 404 / 405 | `99` | no such route / method |
//! | 500 | `99` | an injected fault (error or dropped response); the body is the same for both, so a client cannot tell them apart |
//!
//! # Faults
//!
//! Set with [`Simulator::set_faults`] or `POST /_sim/faults`. Rates are in
//! per-mille (0–1000; above 1000 means always), drawn from a SplitMix64
//! generator seeded with [`Faults::seed`] each time the faults are set, so a
//! single-threaded run is reproducible.
//!
//! - `latency_ms`: every `/api` call first sleeps that long.
//! - `error_rate`: an `/api` call answers 500 **before doing anything**
//!   (before even checking the token): no state changes.
//! - `drop_rate`: a successful `POST` or `PUT` is **committed** (pending
//!   invoice created, confirm counted and recorded, cancel applied) and
//!   then answered with the same 500 as an injected error, as if the
//!   response had been lost. `GET`s are never dropped.
//! - `wrong_totals_rate`: `POST` answers a `total` 1.00 above the computed
//!   one (`vtotal` unchanged). CONFIRM compares with what was answered, so
//!   a client that checks the totals cancels, and one that blindly echoes
//!   them confirms.
//! - `POST /_sim/expire` ([`Simulator::expire_all`]) expires every pending
//!   invoice at once.
//!
//! # Counters and time
//!
//! One simulator is one e-MCF (one NIM): the counters `FC/TC TYPE` count
//! confirmed invoices per type (`FC`) and in total (`TC`) across every NIF
//! it serves. Time comes from a [`Clock`], so tests move it (a
//! [`ManualClock`]) instead of sleeping; dates are shown in
//! Africa/Kinshasa.

mod convert;
mod http;
mod jwt;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, SecondsFormat};
use chrono_tz::Tz;
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::dgi::{
    DgiConfirmation, DgiInvoiceDetails, DgiInvoiceRequest, DgiInvoiceState, DgiStatus,
    DgiSubmitted, DgiTotals, PendingRef, codes,
};

/// Milliseconds since the Unix epoch. A trait so that tests can move time
/// (the pending expiry, token expiry, the certification time) without
/// sleeping.
pub trait Clock: fmt::Debug + Send + Sync {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to: share it (in an `Arc`) between
/// the test and the simulator.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `start_ms`.
    #[must_use]
    pub fn new(start_ms: i64) -> Self {
        Self(AtomicI64::new(start_ms))
    }

    /// Moves the clock forward by `ms` (backward if negative).
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `ms`.
    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How the simulated e-MCF is set up.
#[derive(Clone)]
pub struct SimConfig {
    /// The e-MCF's NIM, returned on status and confirm and put in the QR.
    pub nim: String,
    /// The NIF [`Simulator::issue_token`] issues tokens for.
    pub nif: String,
    /// The e-MCF id [`Simulator::issue_token`] puts after the NIF in
    /// `unique_name`.
    pub emcf_id: String,
    /// `iss` and `aud` of the tokens, issued and accepted.
    pub issuer: String,
    /// The HS256 key of the tokens.
    pub secret: Vec<u8>,
    /// How long an invoice stays pending before it expires (Benin: 2
    /// minutes).
    pub pending_ttl_ms: u64,
    /// How many invoices a NIF may have pending (Benin: 10).
    pub max_pending: usize,
}

impl Default for SimConfig {
    /// A test e-MCF: NIF `A1309334L`, the DGI's test issuer, a fixed
    /// (public, so never for anything real) secret, 120 s and 10 pending.
    fn default() -> Self {
        Self {
            nim: "EMCFSIM0001".into(),
            nif: "A1309334L".into(),
            emcf_id: "CD01003075-1".into(),
            issuer: "developper.dgirdc.cd".into(),
            secret: b"bonopay-dgi-simulator-test-secret".to_vec(),
            pending_ttl_ms: 120_000,
            max_pending: 10,
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("nim", &self.nim)
            .field("nif", &self.nif)
            .field("emcf_id", &self.emcf_id)
            .field("issuer", &self.issuer)
            .field("secret", &"<redacted>")
            .field("pending_ttl_ms", &self.pending_ttl_ms)
            .field("max_pending", &self.max_pending)
            .finish()
    }
}

/// Faults to inject. Rates are per-mille (0 = never, 1000 = always), so no
/// float is involved. See the module documentation for what each does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every `/api` call.
    pub latency_ms: u64,
    /// Per-mille of `/api` calls answered 500 before doing anything.
    pub error_rate: u32,
    /// Per-mille of successful `POST`/`PUT` calls committed, then answered
    /// 500 as if the response was lost.
    pub drop_rate: u32,
    /// Per-mille of `POST`s answering a `total` 1.00 off.
    pub wrong_totals_rate: u32,
    /// Seed of the fault generator.
    pub seed: u64,
}

/// One confirm the simulator performed, recorded when it is committed
/// (so also when its response is then dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmRecord {
    /// Pending handle.
    pub uid: String,
    /// The SFE's invoice number.
    pub rn: String,
    /// Seller NIF.
    pub nif: String,
    /// `FC/TC TYPE`.
    pub counters: String,
    /// Code DEF/DGI.
    pub code: String,
    /// Clock time of the confirm.
    pub at_ms: i64,
}

/// What the simulator did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Invoices created (`POST` accepted).
    pub posted: u64,
    /// `POST`s refused (validation, NIF, pending limit).
    pub rejected: u64,
    /// Invoices confirmed.
    pub confirmed: u64,
    /// Invoices cancelled.
    pub cancelled: u64,
    /// Invoices expired unconfirmed.
    pub expired: u64,
    /// Invoices pending now.
    pub pending: u64,
    /// Calls answered with an injected error (nothing done).
    pub errors_injected: u64,
    /// Calls committed whose response was dropped.
    pub drops_injected: u64,
    /// `POST`s answered with wrong totals.
    pub wrong_totals_injected: u64,
    /// All of the above three.
    pub faults_injected: u64,
}

/// An error answer: HTTP status and the e-MCF error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub desc: String,
}

impl ApiError {
    fn new(status: u16, code: &'static str, desc: impl Into<String>) -> Self {
        Self {
            status,
            code,
            desc: desc.into(),
        }
    }

    /// The answer to injected faults, errors and drops alike.
    pub(crate) fn internal() -> Self {
        Self::new(500, codes::PROCESSING, "internal server error")
    }

    fn unknown(uid: &str) -> Self {
        Self::new(
            404,
            codes::UNKNOWN_OR_FINAL,
            format!("invoice {uid} is unknown, expired or already finalised"),
        )
    }
}

/// SplitMix64: tiny, seedable, good enough to decide faults.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `per_mille / 1000`. Draws nothing for 0 and
    /// for 1000 or more, so a fault that is off does not shift the others.
    fn hit(&mut self, per_mille: u32) -> bool {
        match per_mille {
            0 => false,
            1000.. => true,
            p => self.next() % 1000 < u64::from(p),
        }
    }
}

/// One invoice the simulator has seen.
#[derive(Debug, Clone)]
struct Record {
    rn: String,
    nif: String,
    invoice_type: String,
    created_ms: i64,
    /// The totals answered on `POST` (what CONFIRM must match).
    answered: DgiTotals,
    status: DgiInvoiceState,
    confirmation: Option<DgiConfirmation>,
}

#[derive(Debug)]
struct State {
    invoices: HashMap<String, Record>,
    /// Pending uids, oldest first.
    pending: Vec<String>,
    /// Confirmed count per invoice type (`FC`).
    per_type: BTreeMap<String, u64>,
    /// Confirmed count (`TC`).
    total: u64,
    confirms: Vec<ConfirmRecord>,
    stats: SimStats,
    faults: Faults,
    fault_rng: SplitMix64,
    uid_rng: SplitMix64,
}

/// The simulated e-MCF. Cheap to share: every method takes `&self` and the
/// state sits behind one mutex, so any number of requests may run at once.
pub struct Simulator {
    config: SimConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The status answer: the DRC fields plus Benin's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusBody {
    status: bool,
    version: &'static str,
    nif: String,
    emcf_id: String,
    #[serde(flatten)]
    emcf: DgiStatus,
    token_valid: String,
    server_date_time: String,
}

/// The `POST` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubmitBody {
    #[serde(flatten)]
    submitted: DgiSubmitted,
    #[serde(skip_serializing_if = "Option::is_none")]
    cur_total: Option<String>,
    groups: Vec<convert::GroupOut>,
}

fn kinshasa(ms: i64) -> DateTime<Tz> {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&chrono_tz::Africa::Kinshasa)
}

fn rfc3339(ms: i64) -> String {
    kinshasa(ms).to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// RFC 4648 base32 alphabet (`[A-Z2-7]`), the Code DEF/DGI's characters.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let i = usize::try_from((acc >> bits) & 31).unwrap_or(0);
            out.push(char::from(BASE32.get(i).copied().unwrap_or(b'A')));
        }
        acc &= (1 << bits) - 1;
    }
    out
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the state half-written in
    // a way later calls could not cope with, so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn os_seed(fallback: i64) -> u64 {
    use rand_core::RngCore;
    let mut buf = [0u8; 8];
    match rand_core::OsRng.try_fill_bytes(&mut buf) {
        Ok(()) => u64::from_le_bytes(buf),
        Err(_) => fallback.unsigned_abs() ^ 0x5EED_5EED_5EED_5EED,
    }
}

impl Simulator {
    /// A simulator with no invoices and no faults. The uid generator is
    /// seeded from the OS, so uids differ between runs (a uid a client
    /// kept from an earlier run never matches a new invoice).
    #[must_use]
    pub fn new(config: SimConfig, clock: Arc<dyn Clock>) -> Arc<Self> {
        let seed = os_seed(clock.now_ms());
        Arc::new(Self {
            config,
            clock,
            state: Mutex::new(State {
                invoices: HashMap::new(),
                pending: Vec::new(),
                per_type: BTreeMap::new(),
                total: 0,
                confirms: Vec::new(),
                stats: SimStats::default(),
                faults: Faults::default(),
                fault_rng: SplitMix64(0),
                uid_rng: SplitMix64(seed),
            }),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The simulator's clock time, in milliseconds.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The axum router (`/api` and `/_sim`). A tower `Service`, so tests
    /// may also drive it without a socket.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(Arc::clone(self))
    }

    /// Serves on `listener` until the process ends.
    ///
    /// # Errors
    /// An I/O error from the listener.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Serves on `listener` until `signal` completes, then finishes the
    /// requests in flight.
    ///
    /// # Errors
    /// An I/O error from the listener.
    pub async fn serve_with_shutdown<F>(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        signal: F,
    ) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(signal)
            .await
    }

    /// A bearer token for the configured NIF and e-MCF id, valid for
    /// `ttl_secs` from the clock's now.
    #[must_use]
    pub fn issue_token(&self, ttl_secs: i64) -> String {
        self.issue_token_for(&self.config.nif, &self.config.emcf_id, ttl_secs)
    }

    /// A bearer token for any NIF and e-MCF id, valid for `ttl_secs` from
    /// the clock's now (negative for an already expired one).
    #[must_use]
    pub fn issue_token_for(&self, nif: &str, emcf_id: &str, ttl_secs: i64) -> String {
        let now = self.clock.now_ms().div_euclid(1000);
        jwt::issue(
            &self.config.secret,
            &self.config.issuer,
            nif,
            emcf_id,
            now,
            now.saturating_add(ttl_secs),
        )
    }

    /// Replaces the faults and reseeds the fault generator with
    /// `faults.seed`.
    pub fn set_faults(&self, faults: Faults) {
        let mut st = lock(&self.state);
        st.faults = faults;
        st.fault_rng = SplitMix64(faults.seed);
    }

    /// The faults in force.
    #[must_use]
    pub fn faults(&self) -> Faults {
        lock(&self.state).faults
    }

    /// Expires every pending invoice now, whatever its age. Returns how
    /// many expired.
    pub fn expire_all(&self) -> usize {
        let mut st = lock(&self.state);
        let uids = std::mem::take(&mut st.pending);
        for uid in &uids {
            if let Some(r) = st.invoices.get_mut(uid) {
                r.status = DgiInvoiceState::Expired;
            }
        }
        st.stats.expired += uids.len() as u64;
        uids.len()
    }

    /// Every confirm performed, in order, including those whose response
    /// was dropped.
    #[must_use]
    pub fn confirms(&self) -> Vec<ConfirmRecord> {
        lock(&self.state).confirms.clone()
    }

    /// The invoice numbers (`nif` + `rn`, shown as `rn`) confirmed more
    /// than once. Empty when the client confirms exactly once.
    #[must_use]
    pub fn double_confirms(&self) -> Vec<String> {
        let st = lock(&self.state);
        let mut seen: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for c in &st.confirms {
            *seen.entry((c.nif.as_str(), c.rn.as_str())).or_default() += 1;
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|((_, rn), _)| rn.to_owned())
            .collect()
    }

    /// Counts so far (expiring what is due first).
    #[must_use]
    pub fn stats(&self) -> SimStats {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let mut s = st.stats;
        s.pending = st.pending.len() as u64;
        s
    }

    /// An invoice as `GET /api/invoice/{uid}` shows it, whatever its NIF.
    #[must_use]
    pub fn details(&self, uid: &str) -> Option<DgiInvoiceDetails> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        st.invoices.get(uid).map(|r| details_of(uid, r))
    }

    /// Expires the pending invoices whose time is up.
    fn sweep(&self, st: &mut State) {
        let now = self.clock.now_ms();
        let ttl = i64::try_from(self.config.pending_ttl_ms).unwrap_or(i64::MAX);
        let State {
            pending,
            invoices,
            stats,
            ..
        } = st;
        pending.retain(|uid| {
            let Some(r) = invoices.get_mut(uid) else {
                return false;
            };
            if now.saturating_sub(r.created_ms) >= ttl {
                r.status = DgiInvoiceState::Expired;
                stats.expired += 1;
                false
            } else {
                true
            }
        });
    }

    /// Decides whether this call fails before doing anything.
    pub(crate) fn roll_error(&self) -> bool {
        let mut st = lock(&self.state);
        let rate = st.faults.error_rate;
        let hit = st.fault_rng.hit(rate);
        if hit {
            st.stats.errors_injected += 1;
            st.stats.faults_injected += 1;
        }
        hit
    }

    /// Decides whether the response of this committed call is lost.
    pub(crate) fn roll_drop(&self) -> bool {
        let mut st = lock(&self.state);
        let rate = st.faults.drop_rate;
        let hit = st.fault_rng.hit(rate);
        if hit {
            st.stats.drops_injected += 1;
            st.stats.faults_injected += 1;
        }
        hit
    }

    /// Checks the `Authorization` header.
    pub(crate) fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<jwt::Claims, ApiError> {
        let now = self.clock.now_ms().div_euclid(1000);
        jwt::verify(&self.config.secret, &self.config.issuer, authorization, now)
            .map_err(|e| ApiError::new(401, codes::PROCESSING, e.desc()))
    }

    /// `GET /api/invoice`.
    pub(crate) fn status(&self, claims: &jwt::Claims) -> StatusBody {
        let nif = claims.nif.as_str();
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let pending: Vec<PendingRef> = st
            .pending
            .iter()
            .filter_map(|uid| {
                let r = st.invoices.get(uid)?;
                (r.nif == nif).then(|| PendingRef {
                    date: rfc3339(r.created_ms),
                    uid: uid.clone(),
                })
            })
            .collect();
        StatusBody {
            status: true,
            version: "1.0",
            nif: nif.to_owned(),
            emcf_id: claims.emcf_id.clone(),
            emcf: DgiStatus {
                nim: self.config.nim.clone(),
                pending_count: u32::try_from(pending.len()).unwrap_or(u32::MAX),
                pending,
            },
            token_valid: rfc3339(claims.exp.saturating_mul(1000)),
            server_date_time: rfc3339(self.clock.now_ms()),
        }
    }

    fn new_uid(st: &mut State) -> String {
        loop {
            let a = st.uid_rng.next();
            let b = st.uid_rng.next();
            let uid = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                (a & 0x0fff) | 0x4000,
                ((b >> 48) & 0x3fff) | 0x8000,
                b & 0xffff_ffff_ffff
            );
            if !st.invoices.contains_key(&uid) {
                return uid;
            }
        }
    }

    /// Counts a `POST` refused before it reached [`Simulator::submit`].
    pub(crate) fn count_rejected(&self) {
        lock(&self.state).stats.rejected += 1;
    }

    /// `POST /api/invoice`.
    pub(crate) fn submit(
        &self,
        nif: &str,
        req: &DgiInvoiceRequest,
    ) -> Result<SubmitBody, ApiError> {
        let result = self.submit_inner(nif, req);
        if result.is_err() {
            self.count_rejected();
        }
        result
    }

    fn submit_inner(&self, nif: &str, req: &DgiInvoiceRequest) -> Result<SubmitBody, ApiError> {
        if req.nif != nif {
            return Err(ApiError::new(
                403,
                codes::PROCESSING,
                format!(
                    "the invoice's nif {:?} is not the token's NIF {nif:?}",
                    req.nif
                ),
            ));
        }
        let now = self.clock.now_ms();
        let today = kinshasa(now).format("%Y-%m-%d").to_string();
        let computed =
            convert::compute(req, &today).map_err(|r| ApiError::new(400, r.code, r.desc))?;

        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let pending_here = st
            .pending
            .iter()
            .filter(|uid| st.invoices.get(*uid).is_some_and(|r| r.nif == nif))
            .count();
        if pending_here >= self.config.max_pending {
            return Err(ApiError::new(
                400,
                codes::TOO_MANY_PENDING,
                format!(
                    "too many pending invoices ({pending_here}, at most {}): confirm or cancel them first",
                    self.config.max_pending
                ),
            ));
        }
        let mut answered = computed.totals;
        let rate = st.faults.wrong_totals_rate;
        if st.fault_rng.hit(rate) {
            answered.total += Decimal::ONE;
            st.stats.wrong_totals_injected += 1;
            st.stats.faults_injected += 1;
        }
        let uid = Self::new_uid(&mut st);
        st.invoices.insert(
            uid.clone(),
            Record {
                rn: req.rn.clone(),
                nif: nif.to_owned(),
                invoice_type: req.invoice_type.clone(),
                created_ms: now,
                answered,
                status: DgiInvoiceState::Pending,
                confirmation: None,
            },
        );
        st.pending.push(uid.clone());
        st.stats.posted += 1;
        Ok(SubmitBody {
            submitted: DgiSubmitted {
                uid,
                total: answered.total,
                vtotal: answered.vtotal,
            },
            cur_total: computed.cur_total.map(|mut d| {
                d.rescale(2);
                d.to_string()
            }),
            groups: computed.groups,
        })
    }

    /// The pending invoice `uid` of `nif`, or error 20.
    fn pending_of<'a>(st: &'a mut State, nif: &str, uid: &str) -> Result<&'a mut Record, ApiError> {
        match st.invoices.get_mut(uid) {
            Some(r) if r.nif == nif && r.status == DgiInvoiceState::Pending => Ok(r),
            _ => Err(ApiError::unknown(uid)),
        }
    }

    fn code_def_dgi(&self, uid: &str) -> String {
        // Deterministic per uid (a dropped confirm's code can be shown
        // again on details), unpredictable without the secret.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.config.secret) else {
            return String::new();
        };
        mac.update(b"bonopay/dgi-sim/code-def-dgi\0");
        mac.update(uid.as_bytes());
        let digest = mac.finalize().into_bytes();
        // 15 bytes = 120 bits = 24 base32 characters.
        base32(digest.get(..15).unwrap_or_default())
    }

    /// `PUT /api/invoice/{uid}/CONFIRM`.
    pub(crate) fn confirm(
        &self,
        nif: &str,
        uid: &str,
        totals: &DgiTotals,
    ) -> Result<DgiConfirmation, ApiError> {
        let now = self.clock.now_ms();
        let code = self.code_def_dgi(uid);
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let record = Self::pending_of(&mut st, nif, uid)?;
        if record.answered.total != totals.total || record.answered.vtotal != totals.vtotal {
            return Err(ApiError::new(
                400,
                codes::PROCESSING,
                format!(
                    "totals differ: received total {} vtotal {}, computed total {} vtotal {}",
                    totals.total, totals.vtotal, record.answered.total, record.answered.vtotal
                ),
            ));
        }
        let invoice_type = record.invoice_type.clone();
        let rn = record.rn.clone();
        let fc = {
            let n = st.per_type.entry(invoice_type.clone()).or_default();
            *n += 1;
            *n
        };
        st.total += 1;
        let counters = format!("{fc}/{} {invoice_type}", st.total);
        let at = kinshasa(now);
        let confirmation = DgiConfirmation {
            code_def_dgi: code.clone(),
            counters: counters.clone(),
            nim: self.config.nim.clone(),
            date_time: at.format("%Y-%m-%d %H:%M:%S").to_string(),
            qr_code: format!(
                "RDCDEF01;{};{code};{nif};{}",
                self.config.nim,
                at.format("%Y%m%d%H%M%S")
            ),
        };
        if let Some(r) = st.invoices.get_mut(uid) {
            r.status = DgiInvoiceState::Confirmed;
            r.confirmation = Some(confirmation.clone());
        }
        st.pending.retain(|u| u != uid);
        st.confirms.push(ConfirmRecord {
            uid: uid.to_owned(),
            rn,
            nif: nif.to_owned(),
            counters,
            code,
            at_ms: now,
        });
        st.stats.confirmed += 1;
        Ok(confirmation)
    }

    /// `PUT /api/invoice/{uid}/CANCEL`.
    pub(crate) fn cancel(&self, nif: &str, uid: &str) -> Result<DgiInvoiceDetails, ApiError> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let record = Self::pending_of(&mut st, nif, uid)?;
        record.status = DgiInvoiceState::Cancelled;
        let details = details_of(uid, record);
        st.pending.retain(|u| u != uid);
        st.stats.cancelled += 1;
        Ok(details)
    }

    /// `GET /api/invoice/{uid}`.
    pub(crate) fn details_for(&self, nif: &str, uid: &str) -> Result<DgiInvoiceDetails, ApiError> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        match st.invoices.get(uid) {
            Some(r) if r.nif == nif => Ok(details_of(uid, r)),
            _ => Err(ApiError::new(
                404,
                codes::UNKNOWN_OR_FINAL,
                format!("invoice {uid} is unknown"),
            )),
        }
    }
}

fn details_of(uid: &str, r: &Record) -> DgiInvoiceDetails {
    DgiInvoiceDetails {
        uid: uid.to_owned(),
        rn: r.rn.clone(),
        status: r.status,
        totals: r.answered,
        confirmation: r.confirmation.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base32_of_15_bytes_is_24_chars() {
        let s = base32(&[0xff; 15]);
        assert_eq!(s, "777777777777777777777777");
        assert_eq!(base32(&[0; 15]).len(), 24);
    }

    #[test]
    fn rates_are_exact_at_the_ends() {
        let mut r = SplitMix64(7);
        assert!(!(0..100).any(|_| r.hit(0)));
        assert!((0..100).all(|_| r.hit(1000)));
        let hits = (0..10_000).filter(|_| r.hit(500)).count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
    }
}
