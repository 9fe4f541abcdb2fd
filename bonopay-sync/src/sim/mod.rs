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

mod convert;
mod http;
mod jwt;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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

/// The default USD rate (CDF per USD) the simulator takes as the BCC's.
fn default_usd_rate() -> Decimal {
    Decimal::new(285_000, 2)
}

/// How the simulated e-MCF is set up. The last four members are its
/// initial [`SimSettings`], which may be changed while it runs.
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
    /// See [`SimSettings::reference_delay_ms`] (default 0).
    pub reference_delay_ms: u64,
    /// See [`SimSettings::tax_rate_overrides`] (default none). Entries
    /// that [`SimConfig::check`] refuses are ignored by
    /// [`Simulator::new`].
    pub tax_rate_overrides: BTreeMap<String, Decimal>,
    /// See [`SimSettings::refuse_string_decimals`] (default off).
    pub refuse_string_decimals: bool,
    /// See [`SimSettings::usd_rate`] (default 2850.00).
    pub usd_rate: Decimal,
}

impl Default for SimConfig {
    /// A test e-MCF: NIF `A1309334L`, the DGI's test issuer, a fixed
    /// (public, so never for anything real) secret, 120 s and 10 pending,
    /// credit notes referencable at once, the official rates, strings
    /// accepted, 2850 CDF per USD.
    fn default() -> Self {
        Self {
            nim: "EMCFSIM0001".into(),
            nif: "A1309334L".into(),
            emcf_id: "CD01003075-1".into(),
            issuer: "developper.dgirdc.cd".into(),
            secret: b"bonopay-dgi-simulator-test-secret".to_vec(),
            pending_ttl_ms: 120_000,
            max_pending: 10,
            reference_delay_ms: 0,
            tax_rate_overrides: BTreeMap::new(),
            refuse_string_decimals: false,
            usd_rate: default_usd_rate(),
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
            .field("reference_delay_ms", &self.reference_delay_ms)
            .field("tax_rate_overrides", &self.tax_rate_overrides)
            .field("refuse_string_decimals", &self.refuse_string_decimals)
            .field("usd_rate", &self.usd_rate)
            .finish()
    }
}

impl SimConfig {
    /// The initial settings this configuration describes.
    #[must_use]
    pub fn settings(&self) -> SimSettings {
        SimSettings {
            reference_delay_ms: self.reference_delay_ms,
            refuse_string_decimals: self.refuse_string_decimals,
            tax_rate_overrides: self.tax_rate_overrides.clone(),
            usd_rate: self.usd_rate,
        }
    }

    /// Checks the settings part (groups A–N, rates 0–100, a positive USD
    /// rate), so that a command line can refuse a typing slip instead of
    /// running with it ignored.
    ///
    /// # Errors
    /// [`SimError::InvalidSetting`] naming the first bad value.
    pub fn check(&self) -> Result<(), SimError> {
        self.settings().check().map(|_| ())
    }
}

/// What may change while the simulator runs ([`Simulator::set_settings`],
/// `POST /_sim/settings`). Separate from [`Faults`] because these are the
/// platform's behaviour, not failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSettings {
    /// How long after its CONFIRM an invoice's Code DEF/DGI may be used as
    /// a credit note's `reference`; before that, error 10 (the e-MECeF's
    /// "original not verifiable yet"). 0: at once.
    pub reference_delay_ms: u64,
    /// When on, amounts sent as JSON strings are refused with error 99
    /// (the platform's clients differ on numbers, `dgi-emcf.md` §8; this
    /// shows what a strict platform does to a client that sends strings).
    pub refuse_string_decimals: bool,
    /// Rates (percent) replacing the official ones, by group letter: what
    /// `GET /api/info/taxGroups` reports and what the VAT groups (B, C, E,
    /// F, G) are computed with, so a test can make the e-MCF's table differ
    /// from the client's.
    #[serde(with = "rate_map")]
    pub tax_rate_overrides: BTreeMap<String, Decimal>,
    /// CDF per USD: the BCC reference a USD invoice's `curRate` must be
    /// within 1 % of, reported by `GET /api/info/currencyRates`.
    #[serde(with = "crate::dgi::number")]
    pub usd_rate: Decimal,
}

impl SimSettings {
    /// Validates and normalises (group letters upper-cased).
    fn check(mut self) -> Result<Self, SimError> {
        let mut groups = BTreeMap::new();
        for (g, rate) in &self.tax_rate_overrides {
            let g = convert::check_rate_override(g, *rate).map_err(SimError::InvalidSetting)?;
            groups.insert(g, *rate);
        }
        self.tax_rate_overrides = groups;
        if self.usd_rate <= Decimal::ZERO {
            return Err(SimError::InvalidSetting(format!(
                "usd_rate {} is not positive",
                self.usd_rate
            )));
        }
        Ok(self)
    }
}

/// A change to the [`SimSettings`]: members left out (`None`) keep their
/// value. In `tax_rate_overrides`, a `null` rate removes that group's
/// override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsPatch {
    /// New [`SimSettings::reference_delay_ms`].
    pub reference_delay_ms: Option<u64>,
    /// New [`SimSettings::refuse_string_decimals`].
    pub refuse_string_decimals: Option<bool>,
    /// Overrides to set (`Some`) or remove (`None`), by group letter.
    #[serde(with = "rate_patch")]
    pub tax_rate_overrides: BTreeMap<String, Option<Decimal>>,
    /// New [`SimSettings::usd_rate`].
    #[serde(with = "crate::dgi::number::option")]
    pub usd_rate: Option<Decimal>,
}

/// `{"B": 18}`: rates as JSON numbers (strings read too).
mod rate_map {
    use std::collections::BTreeMap;

    use rust_decimal::Decimal;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    use super::Num;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Decimal>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            map.serialize_entry(k, &Num(*v))?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Decimal>, D::Error> {
        let raw = BTreeMap::<String, Value>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                crate::dgi::number::decimal_of(&v)
                    .map(|r| (k, r))
                    .ok_or_else(|| serde::de::Error::custom(format!("not a rate: {v}")))
            })
            .collect()
    }
}

/// `{"B": 18, "C": null}`: set or remove.
mod rate_patch {
    use std::collections::BTreeMap;

    use rust_decimal::Decimal;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    use super::Num;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Option<Decimal>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            map.serialize_entry(k, &v.map(Num))?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Option<Decimal>>, D::Error> {
        let raw = BTreeMap::<String, Value>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| match v {
                Value::Null => Ok((k, None)),
                v => crate::dgi::number::decimal_of(&v)
                    .map(|r| (k, Some(r)))
                    .ok_or_else(|| serde::de::Error::custom(format!("not a rate: {v}"))),
            })
            .collect()
    }
}

/// Why a simulator setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A setting is out of range (an unknown tax group, a rate outside
    /// 0–100, a USD rate that is not positive).
    #[error("invalid simulator setting: {0}")]
    InvalidSetting(String),
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
/// (so also when its response is then dropped): what a test compares with
/// what the client stored.
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
    /// The e-MCF's NIM.
    pub nim: String,
    /// `dateTime`, as answered.
    pub date_time: String,
    /// `qrCode`, as answered.
    pub qr_code: String,
    /// Clock time of the confirm.
    pub at_ms: i64,
}

impl ConfirmRecord {
    /// The elements the CONFIRM answered (or would have, when dropped).
    #[must_use]
    pub fn elements(&self) -> DgiConfirmation {
        DgiConfirmation {
            code_def_dgi: self.code.clone(),
            counters: self.counters.clone(),
            nim: self.nim.clone(),
            date_time: self.date_time.clone(),
            qr_code: self.qr_code.clone(),
        }
    }
}

/// One invoice as the DGI's taxpayer portal shows it (`GET /_sim/portal`,
/// [`Simulator::portal`]): where a person looks up an invoice whose
/// CONFIRM answer was lost, since the e-MCF API reports finalised invoices
/// to nobody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortalInvoice {
    /// The e-MCF's handle.
    pub uid: String,
    /// Seller NIF.
    pub nif: String,
    /// The SFE's invoice number.
    pub rn: String,
    /// FV, FT, FA, EV, ET, EA.
    #[serde(rename = "type")]
    pub invoice_type: String,
    /// PENDING, CONFIRMED, CANCELLED or EXPIRED.
    pub status: DgiInvoiceState,
    /// When it was created (RFC 3339, Africa/Kinshasa).
    pub created_at: String,
    /// The total the e-MCF answered (CDF).
    #[serde(with = "crate::dgi::number")]
    pub total: Decimal,
    /// The VAT total the e-MCF answered (CDF).
    #[serde(with = "crate::dgi::number")]
    pub vtotal: Decimal,
    /// Once confirmed: the elements (`codeDEFDGI`, `counters`, `nim`,
    /// `dateTime`, `qrCode`); `null` otherwise.
    pub elements: Option<DgiConfirmation>,
}

/// What the simulator did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Invoices created (`POST` accepted).
    pub posted: u64,
    /// `POST`s refused (validation, NIF, pending limit, references).
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

    /// A business refusal: HTTP 200 with the error body, as the platform
    /// answers them.
    pub(crate) fn refusal(code: &'static str, desc: impl Into<String>) -> Self {
        Self::new(200, code, desc)
    }

    /// The answer to injected faults, errors and drops alike.
    pub(crate) fn internal() -> Self {
        Self::new(500, codes::PROCESSING, "internal server error")
    }

    fn unknown(uid: &str) -> Self {
        Self::refusal(
            codes::UNKNOWN_OR_FINAL,
            format!("invoice {uid} is unknown, expired or already finalised"),
        )
    }
}

impl From<convert::Refusal> for ApiError {
    fn from(r: convert::Refusal) -> Self {
        Self::refusal(r.code, r.desc)
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

/// A revocation: tokens issued before it (by sequence number, or by time
/// for tokens of an earlier run signed with the same key) are refused.
#[derive(Debug, Clone, Copy)]
struct Revocation {
    seq: u64,
    secs: i64,
}

impl Revocation {
    fn refuses(self, claims: &jwt::Claims) -> bool {
        claims.seq < self.seq || claims.iat < self.secs
    }
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
    fault_rng: SplitMix64,
    uid_rng: SplitMix64,
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

/// A decimal written as a JSON number with its own digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Num(pub Decimal);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::dgi::number::serialize(&self.0, s)
    }
}

/// Money as the e-MCF writes it: 2 places.
fn money(d: Decimal) -> Num {
    let mut v = d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    v.rescale(2);
    Num(v)
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
}

/// The `POST` answer.
#[derive(Debug, Serialize)]
pub(crate) struct SubmitBody {
    uid: String,
    /// `ta`…`tn`, `taa`…`tan`, `haa`…`han`, `vaa`…`van`.
    #[serde(flatten)]
    groups: BTreeMap<String, Num>,
    ts: Num,
    total: Num,
    vtotal: Num,
    #[serde(rename = "curTotal")]
    cur_total: Num,
}

/// One row of `GET /api/info/currencyRates`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RateRow {
    cur_code: &'static str,
    cur_rate: Num,
    cur_date: String,
}

/// What `GET /api/info/{table}` answers.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum InfoBody {
    Status(StatusBody),
    TaxGroups(BTreeMap<String, Num>),
    Codes(Vec<convert::CodeRow>),
    Rates(Vec<RateRow>),
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

/// Quantity per article of a request.
fn articles_of(req: &DgiInvoiceRequest) -> BTreeMap<String, Decimal> {
    let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
    for it in &req.items {
        *out.entry(convert::article_key(&it.code, &it.name))
            .or_default() += it.quantity;
    }
    out
}

/// An article key as a person reads it.
fn article_name(key: &str) -> &str {
    key.split_once(':').map_or(key, |(_, k)| k)
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
                fault_rng: SplitMix64(0),
                uid_rng: SplitMix64(seed),
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

    /// A bearer token for the configured NIF and e-MCF id, valid for
    /// `ttl_secs` from the clock's now.
    #[must_use]
    pub fn issue_token(&self, ttl_secs: i64) -> String {
        self.issue_token_for(&self.config.nif, &self.config.emcf_id, ttl_secs)
    }

    /// A bearer token for any NIF and e-MCF id (one taxpayer's e-MCF),
    /// valid for `ttl_secs` from the clock's now (negative for an already
    /// expired one).
    #[must_use]
    pub fn issue_token_for(&self, nif: &str, emcf_id: &str, ttl_secs: i64) -> String {
        let now = self.clock.now_ms().div_euclid(1000);
        let seq = self.token_seq.fetch_add(1, Ordering::SeqCst);
        jwt::issue(
            &self.config.secret,
            &self.config.issuer,
            nif,
            emcf_id,
            now,
            now.saturating_add(ttl_secs),
            seq,
        )
    }

    /// Refuses (401) every token issued before now, for every NIF, however
    /// long it still had to run: a token the DGI refuses before its
    /// expiry. Tokens issued afterwards are accepted. Returns the
    /// revocation time (clock milliseconds).
    pub fn revoke_tokens(&self) -> i64 {
        let r = self.revocation();
        lock(&self.state).revoked_all = Some(r);
        r.secs.saturating_mul(1000)
    }

    /// As [`Simulator::revoke_tokens`], for one NIF's tokens only.
    pub fn revoke_tokens_of(&self, nif: &str) -> i64 {
        let r = self.revocation();
        lock(&self.state).revoked_nif.insert(nif.to_owned(), r);
        r.secs.saturating_mul(1000)
    }

    fn revocation(&self) -> Revocation {
        Revocation {
            seq: self.token_seq.load(Ordering::SeqCst),
            secs: self.clock.now_ms().div_euclid(1000),
        }
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

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> SimSettings {
        lock(&self.state).settings.clone()
    }

    /// Replaces the settings.
    ///
    /// # Errors
    /// [`SimError::InvalidSetting`]; nothing changes then.
    pub fn set_settings(&self, settings: SimSettings) -> Result<(), SimError> {
        let settings = settings.check()?;
        let table = convert::rate_table(&settings.tax_rate_overrides);
        let mut st = lock(&self.state);
        st.settings = settings;
        st.table = table;
        Ok(())
    }

    /// Applies a change to the settings and returns them.
    ///
    /// # Errors
    /// [`SimError::InvalidSetting`]; nothing changes then.
    pub fn update_settings(&self, patch: &SettingsPatch) -> Result<SimSettings, SimError> {
        let mut st = lock(&self.state);
        let mut s = st.settings.clone();
        if let Some(d) = patch.reference_delay_ms {
            s.reference_delay_ms = d;
        }
        if let Some(r) = patch.refuse_string_decimals {
            s.refuse_string_decimals = r;
        }
        if let Some(r) = patch.usd_rate {
            s.usd_rate = r;
        }
        for (g, rate) in &patch.tax_rate_overrides {
            let key = g.trim().to_ascii_uppercase();
            match rate {
                Some(r) => {
                    s.tax_rate_overrides.insert(key, *r);
                }
                None => {
                    s.tax_rate_overrides.remove(&key);
                }
            }
        }
        let s = s.check()?;
        st.table = convert::rate_table(&s.tax_rate_overrides);
        st.settings = s.clone();
        Ok(s)
    }

    /// Sets [`SimSettings::reference_delay_ms`].
    pub fn set_reference_delay_ms(&self, ms: u64) {
        lock(&self.state).settings.reference_delay_ms = ms;
    }

    /// Sets [`SimSettings::refuse_string_decimals`].
    pub fn set_refuse_string_decimals(&self, on: bool) {
        lock(&self.state).settings.refuse_string_decimals = on;
    }

    /// Overrides one group's rate (percent), or restores the official one
    /// (`None`).
    ///
    /// # Errors
    /// [`SimError::InvalidSetting`] for a group not A–N or a rate outside
    /// 0–100.
    pub fn set_tax_rate(&self, group: &str, rate: Option<Decimal>) -> Result<(), SimError> {
        self.update_settings(&SettingsPatch {
            tax_rate_overrides: BTreeMap::from([(group.to_owned(), rate)]),
            ..SettingsPatch::default()
        })
        .map(|_| ())
    }

    /// The e-MCF's tax group table as `GET /api/info/taxGroups` reports
    /// it: every group A–N (upper case here) and its rate in percent.
    #[must_use]
    pub fn tax_groups(&self) -> BTreeMap<String, Decimal> {
        let st = lock(&self.state);
        bonopay_core::TaxGroup::ALL
            .iter()
            .map(|&g| {
                let rate = st.table.get(g).map_or(Decimal::ZERO, |r| r.rate_percent);
                (g.as_str().to_owned(), rate)
            })
            .collect()
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

    /// The DGI portal's view of a NIF's invoices (all of them, or those
    /// with SFE number `rn`), oldest first, expiring what is due first.
    #[must_use]
    pub fn portal(&self, nif: &str, rn: Option<&str>) -> Vec<PortalInvoice> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let mut out: Vec<(i64, PortalInvoice)> = st
            .invoices
            .iter()
            .filter(|(_, r)| r.nif == nif && rn.is_none_or(|rn| r.rn == rn))
            .map(|(uid, r)| (r.created_ms, r.portal(uid)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.uid.cmp(&b.1.uid)));
        out.into_iter().map(|(_, p)| p).collect()
    }

    /// The portal's view of one invoice by uid, whatever its NIF (for
    /// tests; the e-MCF's own `GET /api/invoice/{uid}` answers pending
    /// invoices only).
    #[must_use]
    pub fn details(&self, uid: &str) -> Option<PortalInvoice> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        st.invoices.get(uid).map(|r| r.portal(uid))
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

    /// Whether amounts sent as strings are refused now.
    pub(crate) fn refuses_string_decimals(&self) -> bool {
        lock(&self.state).settings.refuse_string_decimals
    }

    /// Checks the `Authorization` header.
    pub(crate) fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<jwt::Claims, ApiError> {
        let now = self.clock.now_ms().div_euclid(1000);
        let claims = jwt::verify(&self.config.secret, &self.config.issuer, authorization, now)
            .map_err(|e| ApiError::new(401, codes::PROCESSING, e.desc()))?;
        let st = lock(&self.state);
        let revoked = st.revoked_all.is_some_and(|r| r.refuses(&claims))
            || st
                .revoked_nif
                .get(&claims.nif)
                .is_some_and(|r| r.refuses(&claims));
        if revoked {
            return Err(ApiError::new(
                401,
                codes::PROCESSING,
                "token revoked: request a new one from the DGI portal",
            ));
        }
        Ok(claims)
    }

    /// `GET /api/invoice` and `GET /api/info/status`.
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
                token_valid: rfc3339(claims.exp.saturating_mul(1000)),
                server_date_time: rfc3339(self.clock.now_ms()),
            },
        }
    }

    /// `GET /api/info/{table}`; `None` for a table the e-MCF does not
    /// have.
    pub(crate) fn info(&self, claims: &jwt::Claims, table: &str) -> Option<InfoBody> {
        Some(match table {
            "status" => InfoBody::Status(self.status(claims)),
            "taxGroups" => InfoBody::TaxGroups(
                self.tax_groups()
                    .into_iter()
                    .map(|(g, r)| (g.to_ascii_lowercase(), Num(r)))
                    .collect(),
            ),
            "invoiceTypes" => InfoBody::Codes(convert::invoice_types()),
            "paymentTypes" => InfoBody::Codes(convert::payment_types()),
            "clientTypes" => InfoBody::Codes(convert::client_types()),
            "referenceTypes" => InfoBody::Codes(convert::reference_types()),
            "itemTypes" => InfoBody::Codes(convert::item_types()),
            "currencyRates" => InfoBody::Rates(vec![RateRow {
                cur_code: "USD",
                cur_rate: Num(self.settings().usd_rate),
                cur_date: kinshasa(self.clock.now_ms()).format("%Y-%m-%d").to_string(),
            }]),
            _ => return None,
        })
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

    /// `POST /api/invoice`. `raw` is the body as received (echoed by the
    /// details of the pending invoice).
    pub(crate) fn submit(
        &self,
        nif: &str,
        req: &DgiInvoiceRequest,
        raw: Arc<str>,
    ) -> Result<SubmitBody, ApiError> {
        let result = self.submit_inner(nif, req, raw);
        if result.is_err() {
            self.count_rejected();
        }
        result
    }

    fn submit_inner(
        &self,
        nif: &str,
        req: &DgiInvoiceRequest,
        raw: Arc<str>,
    ) -> Result<SubmitBody, ApiError> {
        if req.nif != nif {
            return Err(Self::foreign_nif(&req.nif, nif));
        }
        let now = self.clock.now_ms();
        let today = kinshasa(now).format("%Y-%m-%d").to_string();
        let (table, usd_rate, delay) = {
            let st = lock(&self.state);
            (
                st.table.clone(),
                st.settings.usd_rate,
                st.settings.reference_delay_ms,
            )
        };
        let computed = convert::compute(req, &today, &table, usd_rate)?;
        let articles = articles_of(req);

        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let reference = Self::check_reference(&st, nif, req, &articles, now, delay)?;
        let pending_here = st
            .pending
            .iter()
            .filter(|uid| st.invoices.get(*uid).is_some_and(|r| r.nif == nif))
            .count();
        if pending_here >= self.config.max_pending {
            return Err(ApiError::refusal(
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
                confirmed_ms: None,
                raw,
                articles,
                reference,
            },
        );
        st.pending.push(uid.clone());
        st.stats.posted += 1;
        let mut groups = BTreeMap::new();
        for g in bonopay_core::TaxGroup::ALL {
            let l = g.as_str().to_ascii_lowercase();
            let rate = table.get(*g).map_or(Decimal::ZERO, |r| r.rate_percent);
            let line = computed.groups.iter().find(|c| c.group == *g);
            let (base, tax, total) = line
                .map_or((Decimal::ZERO, Decimal::ZERO, Decimal::ZERO), |c| {
                    (c.base, c.tax, c.total)
                });
            groups.insert(format!("t{l}"), Num(rate));
            groups.insert(format!("ta{l}"), money(total));
            groups.insert(format!("ha{l}"), money(base));
            groups.insert(format!("va{l}"), money(tax));
        }
        Ok(SubmitBody {
            uid,
            groups,
            ts: money(computed.specific_tax),
            total: money(answered.total),
            vtotal: money(answered.vtotal),
            cur_total: money(computed.cur_total),
        })
    }

    /// The refusal of an invoice whose `nif` is not the token's.
    pub(crate) fn foreign_nif(invoice_nif: &str, token_nif: &str) -> ApiError {
        ApiError::new(
            403,
            codes::PROCESSING,
            format!("the invoice's nif {invoice_nif:?} is not the token's NIF {token_nif:?}"),
        )
    }

    /// A credit note's reference (errors 10, 11, 12). Returns the
    /// original's code for a credit note against a code, `None` for an
    /// invoice or an `RRR` note.
    fn check_reference(
        st: &State,
        nif: &str,
        req: &DgiInvoiceRequest,
        articles: &BTreeMap<String, Decimal>,
        now: i64,
        delay_ms: u64,
    ) -> Result<Option<String>, ApiError> {
        if !convert::is_credit_note(&req.invoice_type) {
            return Ok(None);
        }
        let Some(code) = convert::normalized_reference(&req.reference) else {
            return Err(ApiError::refusal(
                codes::REFERENCE_FORMAT,
                format!(
                    "reference {:?} is neither a 24-character code nor RRR",
                    req.reference
                ),
            ));
        };
        if code == "RRR" {
            return Ok(None);
        }
        let original = st
            .by_code
            .get(&code)
            .and_then(|uid| st.invoices.get(uid))
            .filter(|r| r.nif == nif && !convert::is_credit_note(&r.invoice_type));
        let Some(original) = original else {
            return Err(ApiError::refusal(
                codes::ORIGINAL_UNKNOWN,
                format!("no invoice of NIF {nif} has the Code DEF/DGI {code}"),
            ));
        };
        let delay = i64::try_from(delay_ms).unwrap_or(i64::MAX);
        let confirmed = original.confirmed_ms.unwrap_or(now);
        if now.saturating_sub(confirmed) < delay {
            return Err(ApiError::refusal(
                codes::ORIGINAL_NOT_CERTIFIED,
                format!("the invoice {code} cannot be verified yet: try again later"),
            ));
        }
        let mut credited: BTreeMap<&str, Decimal> = BTreeMap::new();
        for r in st.invoices.values() {
            if r.nif == nif
                && r.status == DgiInvoiceState::Confirmed
                && r.reference.as_deref() == Some(code.as_str())
            {
                for (k, q) in &r.articles {
                    *credited.entry(k.as_str()).or_default() += *q;
                }
            }
        }
        for (key, qty) in articles {
            let Some(sold) = original.articles.get(key) else {
                return Err(ApiError::refusal(
                    codes::OVER_CREDIT,
                    format!(
                        "article {:?} is not on the original invoice {code}",
                        article_name(key)
                    ),
                ));
            };
            let before = credited.get(key.as_str()).copied().unwrap_or_default();
            if before + *qty > *sold {
                return Err(ApiError::refusal(
                    codes::OVER_CREDIT,
                    format!(
                        "article {:?}: {} credited before and {qty} now exceed the {sold} sold on {code}",
                        article_name(key),
                        before
                    ),
                ));
            }
        }
        Ok(Some(code))
    }

    /// The pending invoice `uid` of `nif`, or error 20.
    fn pending_of<'a>(st: &'a mut State, nif: &str, uid: &str) -> Result<&'a mut Record, ApiError> {
        match st.invoices.get_mut(uid) {
            Some(r) if r.nif == nif && r.status == DgiInvoiceState::Pending => Ok(r),
            _ => Err(ApiError::unknown(uid)),
        }
    }

    fn code_def_dgi(&self, uid: &str) -> String {
        // Deterministic per uid, unpredictable without the secret.
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
            return Err(ApiError::refusal(
                codes::PROCESSING,
                format!(
                    "totals differ: received total {} vtotal {}, computed total {} vtotal {}",
                    totals.total, totals.vtotal, record.answered.total, record.answered.vtotal
                ),
            ));
        }
        let invoice_type = record.invoice_type.clone();
        let rn = record.rn.clone();
        let counters = {
            let c = st.counters.entry(nif.to_owned()).or_default();
            let fc = {
                let n = c.per_type.entry(invoice_type.clone()).or_default();
                *n += 1;
                *n
            };
            c.total += 1;
            format!("{fc}/{} {invoice_type}", c.total)
        };
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
            r.confirmed_ms = Some(now);
        }
        st.by_code.insert(code.clone(), uid.to_owned());
        st.pending.retain(|u| u != uid);
        st.confirms.push(ConfirmRecord {
            uid: uid.to_owned(),
            rn,
            nif: nif.to_owned(),
            counters,
            code,
            nim: confirmation.nim.clone(),
            date_time: confirmation.date_time.clone(),
            qr_code: confirmation.qr_code.clone(),
            at_ms: now,
        });
        st.stats.confirmed += 1;
        Ok(confirmation)
    }

    /// `PUT /api/invoice/{uid}/CANCEL`: the cancellation time.
    pub(crate) fn cancel(&self, nif: &str, uid: &str) -> Result<String, ApiError> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let record = Self::pending_of(&mut st, nif, uid)?;
        record.status = DgiInvoiceState::Cancelled;
        st.pending.retain(|u| u != uid);
        st.stats.cancelled += 1;
        Ok(kinshasa(self.clock.now_ms())
            .format("%Y-%m-%d %H:%M:%S")
            .to_string())
    }

    /// `GET /api/invoice/{uid}`: the `POST` body of a pending invoice of
    /// `nif`, as received; error 20 for any other.
    pub(crate) fn echo(&self, nif: &str, uid: &str) -> Result<Arc<str>, ApiError> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        Self::pending_of(&mut st, nif, uid).map(|r| Arc::clone(&r.raw))
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
