//! Sync health per outlet: green, yellow or red, from the age of what is
//! not yet at the DGI and from failures.
//!
//! The defaults follow the DGI rules (`dgi-emcf.md` §6, Arrêté 033 art. 7):
//! sales must be regularised within **48 hours**, and the SFE must warn
//! when it has not reached the DGI for **more than 7 days**.

use serde::Serialize;

use crate::dgi::outbox::{ItemState, OutletSummary};

/// The colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Health {
    /// Everything is at the DGI or on its way within the yellow threshold.
    Green,
    /// Something is late or failing; no deadline missed yet.
    Yellow,
    /// A deadline is missed or a person must act (dead or rejected items).
    Red,
}

/// Thresholds (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// An unsynced item older than this makes the outlet yellow.
    pub yellow_after_ms: i64,
    /// An unsynced item older than this makes it red (DGI: 48 h).
    pub red_after_ms: i64,
    /// No successful sync for this long while items wait: red (DGI: 7 days).
    pub silent_red_after_ms: i64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self {
            yellow_after_ms: 15 * 60 * 1000,
            red_after_ms: 48 * 3600 * 1000,
            silent_red_after_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// One outlet's health and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutletHealth {
    /// Outlet.
    pub outlet: String,
    /// The colour.
    pub health: Health,
    /// Why it is not green.
    pub reasons: Vec<String>,
    /// Items per state.
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Age of the oldest item not synced (ms).
    pub oldest_unsynced_age_ms: Option<i64>,
    /// Last successful sync (ms since the epoch).
    pub last_synced_ms: Option<i64>,
}

/// Judges one outlet.
#[must_use]
pub fn judge(s: &OutletSummary, now_ms: i64, t: &HealthThresholds) -> OutletHealth {
    let n = |st: ItemState| s.counts.get(&st).copied().unwrap_or(0);
    let mut health = Health::Green;
    let mut reasons = Vec::new();
    let mut raise = |h: Health, why: String| {
        health = health.max(h);
        reasons.push(why);
    };
    let age = s.oldest_unsynced_ms.map(|t0| now_ms.saturating_sub(t0));
    if n(ItemState::Dead) > 0 {
        raise(
            Health::Red,
            format!(
                "{} invoice(s) dead-lettered: a person must check them",
                n(ItemState::Dead)
            ),
        );
    }
    if n(ItemState::Rejected) > 0 {
        raise(
            Health::Red,
            format!("{} invoice(s) rejected by the DGI", n(ItemState::Rejected)),
        );
    }
    if let Some(a) = age {
        if a >= t.red_after_ms {
            raise(
                Health::Red,
                format!(
                    "an invoice has waited {} h (the DGI allows 48 h)",
                    a / 3_600_000
                ),
            );
        } else if a >= t.yellow_after_ms {
            raise(
                Health::Yellow,
                format!("an invoice has waited {} min", a / 60_000),
            );
        }
        let silent = s.last_synced_ms.map_or(a, |l| now_ms.saturating_sub(l));
        if silent >= t.silent_red_after_ms {
            raise(
                Health::Red,
                format!(
                    "no invoice reached the DGI for {} days",
                    silent / 86_400_000
                ),
            );
        }
    }
    if s.failing > 0 {
        raise(
            Health::Yellow,
            format!("{} invoice(s) failing and retrying", s.failing),
        );
    }
    OutletHealth {
        outlet: s.outlet.clone(),
        health,
        reasons,
        counts: s
            .counts
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), *v))
            .collect(),
        oldest_unsynced_age_ms: age,
        last_synced_ms: s.last_synced_ms,
    }
}

/// The worst of several outlets (green when there are none).
#[must_use]
pub fn overall(outlets: &[OutletHealth]) -> Health {
    outlets
        .iter()
        .map(|o| o.health)
        .max()
        .unwrap_or(Health::Green)
}
