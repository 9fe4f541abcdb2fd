//! How the simulated e-MCF is set up ([`SimConfig`]), what may change
//! while it runs ([`SimSettings`], [`SettingsPatch`]) and why a setting is
//! refused ([`SimError`]): the platform's behaviour, as opposed to the
//! failures of [`super::Faults`].

use super::*;

/// The default USD rate (CDF per USD) the simulator takes as the BCC's.
pub(super) fn default_usd_rate() -> Decimal {
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
    pub(super) fn check(mut self) -> Result<Self, SimError> {
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
pub(super) mod rate_map {
    use std::collections::BTreeMap;

    use rust_decimal::Decimal;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    use crate::sim::Num;

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
pub(super) mod rate_patch {
    use std::collections::BTreeMap;

    use rust_decimal::Decimal;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    use crate::sim::Num;

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

impl Simulator {
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

    /// Whether amounts sent as strings are refused now.
    pub(crate) fn refuses_string_decimals(&self) -> bool {
        lock(&self.state).settings.refuse_string_decimals
    }
}
