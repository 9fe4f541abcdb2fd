//! The DGI e-MCF simulator: a real HTTP server that behaves like the DGI's
//! e-MCF (`dgi-emcf.md` §4 and §8), for tests and for developing against
//! without the DGI.
//!
//! Why it exists: the sync agent must confirm every invoice **exactly
//! once** across crashes, 5xx answers and lost responses. That can only be
//! shown against a server that (a) keeps the two-phase create → confirm /
//! cancel state with its 10-pending limit and 2-minute expiry, (b) injects
//! the failures that matter, including "committed, then the response was
//! lost", (c) records every confirm it performed, so a test can assert
//! that no invoice number was confirmed twice ([`Simulator::double_confirms`]),
//! and (d) answers the way the platform does, not the way a client would
//! like it to: refusals inside HTTP 200 bodies, details for pending
//! invoices only, credit notes checked against the originals it
//! confirmed, tokens that expire or are revoked.
//!
//! The totals are not reimplemented: the request is mapped back into the
//! `bonopay/invoice/v1` shape and computed by `bonopay-tax` with the
//! `dgi-sfe-2025-05` rate table (or the simulator's overrides of it, see
//! [`SimSettings::tax_rate_overrides`]).
//!
//! # Endpoints
//!
//! Under `/api` (bearer JWT required on every call):
//!
//! | Call | Answer (HTTP 200) |
//! |---|---|
//! | `GET /api/invoice` | [`DgiStatus`] (`nim`, `pendingRequestsCount`, `pendingRequestsList[{date, uid}]`, `tokenValid` = the token's expiry and `serverDateTime`, both RFC 3339 in Africa/Kinshasa) plus Benin's `status`, `version`, `nif`, and the token's `emcfId` |
//! | `POST /api/invoice` | `uid`; per group A–N the rate `ta`…`tn`, total `taa`…`tan`, base `haa`…`han` and VAT `vaa`…`van` (CDF); `ts` (specific tax, CDF), `total`, `vtotal` (CDF) and `curTotal` (in the invoice's currency); every amount a JSON number |
//! | `PUT /api/invoice/{uid}/CONFIRM` (or `confirm`), body [`DgiTotals`] | [`DgiConfirmation`]: `codeDEFDGI`, `counters`, `nim`, `dateTime`, `qrCode` |
//! | `PUT /api/invoice/{uid}/CANCEL` (or `cancel`) | `{"dateTime": …, "codeDEFDGI": null, "counters": null, "nim": null, "qrCode": null}` (Benin's security-elements shape, empty) |
//! | `GET /api/invoice/{uid}` | a **pending** invoice only: the `POST` body exactly as it was received, byte for byte, and nothing else (no state, no totals); any other uid is error 20 |
//! | `GET /api/info/status` | the same as `GET /api/invoice` |
//! | `GET /api/info/taxGroups` | `{"a": 0, "b": 16, "c": 8, …, "n": 0}`: every group A–N keyed by its lowercase letter, the rate in percent as a JSON number (0 for groups without one), overrides applied |
//! | `GET /api/info/invoiceTypes`, `/paymentTypes`, `/clientTypes`, `/referenceTypes`, `/itemTypes` | `[{"code", "description"}]` |
//! | `GET /api/info/currencyRates` | `[{"curCode": "USD", "curRate": <the simulator's USD rate>, "curDate": <today>}]` |
//!
//! Under `/_sim` (no auth; test control, never faulted):
//!
//! | Call | Does |
//! |---|---|
//! | `GET /_sim/confirms` | every [`ConfirmRecord`], in order |
//! | `GET /_sim/stats` | [`SimStats`] |
//! | `GET /_sim/faults`, `POST /_sim/faults` | read or replace the [`Faults`] (unknown members refused) |
//! | `POST /_sim/expire` | expires every pending invoice now; `{"expired": n}` |
//! | `GET /_sim/settings`, `POST /_sim/settings` | read or change the [`SimSettings`]; the `POST` body is a [`SettingsPatch`] (members left out keep their value) |
//! | `POST /_sim/tokens` | issues a token: body `{"nif", "emcf_id", "ttl_secs"}` (each optional: the configured NIF and e-MCF id, 3600 s); `{"token": …}` |
//! | `POST /_sim/tokens/revoke` | revokes every token issued before now (body `{"nif": …}` to revoke only that NIF's); `{"revoked_before": <RFC 3339>}` |
//! | `GET /_sim/portal?nif=…[&rn=…]` | the DGI portal's view: every [`PortalInvoice`] of that NIF (and `rn`), with its state and, once confirmed, its elements |
//!
//! A control body that is not JSON, has an unknown member or a value out
//! of range (a group not A–N, a rate outside 0–100), and a portal query
//! without `nif`, are answered 400 with an error body; nothing changes.
//!
//! # Errors
//!
//! Every error body is `{"errorCode": "…", "errorDesc": "…"}` and nothing
//! else, with the e-MECeF codes (`dgi-emcf.md` §4). As on the platform
//! (§8, "Errors inside successful replies"), **business refusals come in
//! HTTP 200 bodies**; a client must look for `errorCode` before reading
//! `uid` or `codeDEFDGI`.
//!
//! | HTTP | `errorCode` | When |
//! |---|---|---|
//! | 200 | `1` | `POST` while the NIF has `max_pending` invoices pending (confirm or cancel first) |
//! | 200 | `3` `4` `5` `7` `8` `9` | `POST`: bad type; credit note without `reference` or `referenceType`; reference neither 24 characters nor `RRR`; bad payment name; no items; group not A–N |
//! | 200 | `10` | `POST` of a credit note (FA, EA) whose original was confirmed less than [`SimSettings::reference_delay_ms`] ago (not verifiable yet) |
//! | 200 | `11` | `POST` of a credit note whose `reference` is no invoice this simulator confirmed for the same NIF (unknown code, another NIF's, or a credit note's) |
//! | 200 | `12` | `POST` of a credit note over its original: an article (its `code`, or its `name` when it has no code) not on the original, or a quantity that, added to every *confirmed* credit note against the same original, exceeds the quantity sold |
//! | 200 | `20` | CONFIRM or CANCEL of a uid unknown, another NIF's, expired, or already confirmed or cancelled; `GET /api/invoice/{uid}` of any uid that is not pending |
//! | 200 | `99` | any other invalid invoice (the core's validation text, a USD rate more than 1 % from the simulator's), JSON of the wrong shape, CONFIRM totals differing from the answered ones (the invoice stays pending), and, when [`SimSettings::refuse_string_decimals`] is on, amounts sent as JSON strings (naming each) |
//! | 400 | `99` | the body is absent or not JSON at all (Benin: a `POST` without a body is 400) |
//! | 401 | `99` | missing, malformed, badly signed, expired or revoked token, wrong `iss`/`aud`/`role`/`unique_name` |
//! | 403 | `99` | the invoice's `nif` is not the token's NIF |
//! | 404 / 405 | `99` | no such route (unknown action, unknown info table) / method |
//! | 500 | `99` | an injected fault (error or dropped response); the body is the same for both, so a client cannot tell them apart |
//!
//! Refused `POST`s create nothing and are counted in [`SimStats::rejected`].
//!
//! # Amounts
//!
//! Amounts, quantities and rates are read from JSON numbers or strings
//! alike, unless [`SimSettings::refuse_string_decimals`] is on: then a
//! `POST` whose `items[].price`, `quantity`, `taxSpecificAmount`,
//! `originalPrice`, `payment[].amount`, `currencyRate` or `curRate`, or a
//! CONFIRM whose `total` or `vtotal`, is a JSON string is refused with 99
//! (checked on the raw JSON, before the request is read; only the token
//! and the `nif` are checked first). Answers always carry JSON numbers.
//!
//! A USD invoice's `curRate` must be within 1 % of the simulator's USD
//! rate ([`SimSettings::usd_rate`], the BCC reference of the real
//! platform), which `GET /api/info/currencyRates` reports.
//!
//! # Tokens
//!
//! HS256 JWTs with the DGI's claims: `unique_name` = `NIF|e-MCF-id`,
//! `role` = `Taxpayer`, `iss` = `aud` = [`SimConfig::issuer`], `exp`. Each
//! token speaks for one NIF (one taxpayer's e-MCF): it sees and finalises
//! only that NIF's invoices. [`Simulator::revoke_tokens`] (or
//! `POST /_sim/tokens/revoke`) refuses every token issued so far, before
//! its expiry, as when the DGI portal renews a taxpayer's token.
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
//!   response had been lost. `GET`s and refusals are never dropped.
//! - `wrong_totals_rate`: `POST` answers a `total` 1.00 above the computed
//!   one (`vtotal` unchanged). CONFIRM compares with what was answered, so
//!   a client that checks the totals cancels, and one that blindly echoes
//!   them confirms.
//! - `POST /_sim/expire` ([`Simulator::expire_all`]) expires every pending
//!   invoice at once.
//!
//! # Counters and time
//!
//! Each NIF is its own e-MCF account: the counters `FC/TC TYPE` count the
//! NIF's confirmed invoices per type (`FC`) and in total (`TC`), and the
//! pending limit is per NIF. All accounts share the simulator's one NIM
//! ([`SimConfig::nim`]). Time comes from a [`Clock`], so tests move it (a
//! [`ManualClock`]) instead of sleeping; dates are shown in
//! Africa/Kinshasa.
//!
//! # Layout
//!
//! This module holds the [`Simulator`], its state and its server; the rest
//! is split by concern: `config` (setup and live settings), `emcf` (the
//! API's behaviour), `http` (the routes), `tokens` (JWTs and revocation),
//! `faults` (fault injection), `records` (confirms, stats, the portal) and
//! `convert` (the request mapped back for the tax computation).

mod config;
mod convert;
mod emcf;
mod faults;
mod http;
mod jwt;
mod records;
mod tokens;

/// Time comes from the sealing pipeline's own clock: one trait for "now"
/// in the whole stack, so a test steps the simulator, the agent and the
/// Fiscalizer with one [`ManualClock`].
pub use bonopay_signer::{Clock, ManualClock, SystemClock};
pub use config::{SettingsPatch, SimConfig, SimError, SimSettings};
pub use faults::Faults;
pub use records::{ConfirmRecord, PortalInvoice, SimStats};

// The API's behaviour, shared with the routes (`http`) and the siblings.
use crate::retry::SplitMix;
use config::default_usd_rate;
use emcf::{ApiError, Num, rfc3339};
use tokens::Revocation;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bonopay_tax::RateTable;
use chrono::{DateTime, SecondsFormat};
use chrono_tz::Tz;
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, Serializer};
use sha2::Sha256;

use crate::dgi::{
    DgiConfirmation, DgiInvoiceRequest, DgiInvoiceState, DgiStatus, DgiTotals, PendingRef, codes,
};

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
    confirmed_ms: Option<i64>,
    /// The `POST` body exactly as received (the details echo).
    raw: Arc<str>,
    /// Quantity per article ([`convert::article_key`]).
    articles: BTreeMap<String, Decimal>,
    /// Credit notes against a code: the original's Code DEF/DGI (stored
    /// form). `None` for invoices and `RRR` notes.
    reference: Option<String>,
}

impl Record {
    fn portal(&self, uid: &str) -> PortalInvoice {
        PortalInvoice {
            uid: uid.to_owned(),
            nif: self.nif.clone(),
            rn: self.rn.clone(),
            invoice_type: self.invoice_type.clone(),
            status: self.status,
            created_at: rfc3339(self.created_ms),
            total: self.answered.total,
            vtotal: self.answered.vtotal,
            elements: self.confirmation.clone(),
        }
    }
}

/// One taxpayer account's counters.
#[derive(Debug, Default)]
struct Counters {
    /// Confirmed count per invoice type (`FC`).
    per_type: BTreeMap<String, u64>,
    /// Confirmed count (`TC`).
    total: u64,
}

#[derive(Debug)]
struct State {
    invoices: HashMap<String, Record>,
    /// Pending uids, oldest first.
    pending: Vec<String>,
    /// Confirmed invoices by Code DEF/DGI.
    by_code: HashMap<String, String>,
    /// Per NIF.
    counters: HashMap<String, Counters>,
    confirms: Vec<ConfirmRecord>,
    stats: SimStats,
    faults: Faults,
    fault_rng: SplitMix,
    uid_rng: SplitMix,
    settings: SimSettings,
    /// `dgi_2025` with `settings.tax_rate_overrides` applied.
    table: RateTable,
    /// Revocation of every token.
    revoked_all: Option<Revocation>,
    /// Revocations of one NIF's tokens.
    revoked_nif: HashMap<String, Revocation>,
}

/// The simulated e-MCF. Cheap to share: every method takes `&self` and the
/// state sits behind one mutex, so any number of requests may run at once.
pub struct Simulator {
    config: SimConfig,
    clock: Arc<dyn Clock>,
    /// The next token's sequence number (`jti`); starts at 1, so a token
    /// without one falls to any revocation.
    token_seq: AtomicU64,
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
    /// kept from an earlier run never matches a new invoice). Settings
    /// that [`SimConfig::check`] refuses are dropped (a bad rate override
    /// is ignored).
    #[must_use]
    pub fn new(config: SimConfig, clock: Arc<dyn Clock>) -> Arc<Self> {
        let seed = os_seed(clock.now_ms());
        let mut settings = config.settings();
        settings.tax_rate_overrides = settings
            .tax_rate_overrides
            .iter()
            .filter_map(|(g, r)| convert::check_rate_override(g, *r).ok().map(|g| (g, *r)))
            .collect();
        if settings.usd_rate <= Decimal::ZERO {
            settings.usd_rate = default_usd_rate();
        }
        let table = convert::rate_table(&settings.tax_rate_overrides);
        Arc::new(Self {
            config,
            clock,
            token_seq: AtomicU64::new(1),
            state: Mutex::new(State {
                invoices: HashMap::new(),
                pending: Vec::new(),
                by_code: HashMap::new(),
                counters: HashMap::new(),
                confirms: Vec::new(),
                stats: SimStats::default(),
                faults: Faults::default(),
                fault_rng: SplitMix::new(0),
                uid_rng: SplitMix::new(seed),
                settings,
                table,
                revoked_all: None,
                revoked_nif: HashMap::new(),
            }),
        })
    }

    /// The configuration, with the settings in force now.
    #[must_use]
    pub fn config(&self) -> SimConfig {
        let s = self.settings();
        SimConfig {
            reference_delay_ms: s.reference_delay_ms,
            tax_rate_overrides: s.tax_rate_overrides,
            refuse_string_decimals: s.refuse_string_decimals,
            usd_rate: s.usd_rate,
            ..self.config.clone()
        }
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn settings_are_checked_and_patched() {
        let sim = Simulator::new(SimConfig::default(), Arc::new(ManualClock::new(0)));
        assert!(sim.set_tax_rate("Z", Some(Decimal::ONE)).is_err());
        assert!(sim.set_tax_rate("b", Some(Decimal::from(101))).is_err());
        sim.set_tax_rate("b", Some(Decimal::from(18))).unwrap();
        assert_eq!(sim.tax_groups()["B"], Decimal::from(18));
        sim.set_tax_rate("B", None).unwrap();
        assert_eq!(sim.tax_groups()["B"], Decimal::from(16));
        let patch: SettingsPatch = serde_json::from_str(
            r#"{"reference_delay_ms": 5, "tax_rate_overrides": {"C": "9.5"}}"#,
        )
        .unwrap();
        let s = sim.update_settings(&patch).unwrap();
        assert_eq!(s.reference_delay_ms, 5);
        assert_eq!(s.tax_rate_overrides["C"], Decimal::new(95, 1));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"reference_delay_ms":5,"refuse_string_decimals":false,"tax_rate_overrides":{"C":9.5},"usd_rate":2850.00}"#
        );
        assert!(serde_json::from_str::<SettingsPatch>(r#"{"delay": 1}"#).is_err());
    }
}
