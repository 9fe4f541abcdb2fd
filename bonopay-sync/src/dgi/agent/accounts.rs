//! One e-MCF account (token) per merchant: its health, pausing a
//! merchant's uploads when the token is expired, refused or missing
//! (without spending the items' retries), and probing a paused account.

use super::*;

/// The state of one merchant's e-MCF account, for health.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AccountHealth {
    /// Seller NIF.
    pub nif: String,
    /// Why uploads are paused (an expired, refused or missing token);
    /// `None` while they run.
    pub paused: Option<String>,
    /// Since when (ms).
    pub paused_since_ms: Option<i64>,
    /// When the token expires, as the e-MCF last said (`tokenValid`).
    pub token_valid: Option<String>,
    /// Where the e-MCF's tax group table differs from ours.
    pub rate_differences: Vec<String>,
    /// The last time the account was checked (ms).
    pub checked_ms: Option<i64>,
}

/// How often a paused account is probed (a new token may be in place).
pub const PAUSED_PROBE_MS: i64 = 15_000;

impl SyncAgent {
    /// The state of each merchant's e-MCF account.
    #[must_use]
    pub fn account_health(&self) -> Vec<AccountHealth> {
        lock(&self.health).values().cloned().collect()
    }

    /// Whether `nif`'s uploads are paused, and why.
    #[must_use]
    pub fn paused(&self, nif: &str) -> Option<String> {
        let h = lock(&self.health);
        h.get(nif)
            .or_else(|| h.get("*"))
            .and_then(|a| a.paused.clone())
    }

    pub(super) fn pause(&self, nif: &str, why: String) {
        let now = self.clock.now_ms();
        let mut h = lock(&self.health);
        let key = if self.accounts.contains_key(nif) {
            nif
        } else {
            "*"
        };
        let a = h.entry(key.to_owned()).or_insert_with(|| AccountHealth {
            nif: key.to_owned(),
            ..AccountHealth::default()
        });
        if a.paused.is_none() {
            a.paused_since_ms = Some(now);
        }
        a.paused = Some(why);
        a.checked_ms = Some(now);
    }

    /// Whether items of `nif` may be worked on now: not paused, or paused
    /// and due for a probe that finds the token good again.
    pub(super) fn may_work(&self, nif: &str) -> bool {
        let key = if self.accounts.contains_key(nif) {
            nif
        } else {
            "*"
        };
        let (paused, checked) = {
            let h = lock(&self.health);
            match h.get(key) {
                Some(a) => (a.paused.is_some(), a.checked_ms.unwrap_or(i64::MIN)),
                None => (false, i64::MIN),
            }
        };
        if !paused {
            return true;
        }
        if self.clock.now_ms().saturating_sub(checked) < PAUSED_PROBE_MS {
            return false;
        }
        match self.transport_for(nif) {
            Some(t) => self.check_account(key, t.as_ref()),
            None => false,
        }
    }

    /// Asks the e-MCF for the account's status (token validity) and, when
    /// rates are given, its tax group table. Pauses the account when its
    /// token is expired or refused, resumes it when the token is good.
    /// Returns whether uploads may go on.
    pub(super) fn check_account(&self, key: &str, t: &dyn DgiTransport) -> bool {
        let now = self.clock.now_ms();
        let status = t.status();
        let mut h = lock(&self.health);
        let a = h.entry(key.to_owned()).or_insert_with(|| AccountHealth {
            nif: key.to_owned(),
            ..AccountHealth::default()
        });
        a.checked_ms = Some(now);
        let trouble = match &status {
            Ok(s) => {
                a.token_valid = (!s.token_valid.is_empty()).then(|| s.token_valid.clone());
                // Against the e-MCF's own clock when it gives it (ours may
                // be off), else ours.
                let their_now = crate::dgi::parse_dgi_time(&s.server_date_time).unwrap_or(now);
                match crate::dgi::parse_dgi_time(&s.token_valid) {
                    Some(until) if until <= their_now => Some(format!(
                        "the e-MCF token expired at {}; put a new one in place",
                        s.token_valid
                    )),
                    _ => None,
                }
            }
            Err(TransportError::Unauthorized(why)) => Some(format!(
                "the e-MCF refused the token ({why}); put a new one in place"
            )),
            // The e-MCF is down or slow: not the token's fault, uploads
            // retry per item as usual.
            Err(_) => None,
        };
        match trouble {
            Some(why) => {
                if a.paused.is_none() {
                    a.paused_since_ms = Some(now);
                }
                a.paused = Some(why);
                false
            }
            None => {
                a.paused = None;
                a.paused_since_ms = None;
                true
            }
        }
    }

    /// Checks every account: token validity from `GET /api/invoice`, and
    /// the e-MCF's tax groups (`GET /api/info/taxGroups`) against ours. A
    /// difference is kept for health and returned (the caller logs it);
    /// it is never silently ignored. Run at start and now and then.
    pub fn check_accounts(&self) -> Vec<AccountHealth> {
        for (key, t) in self.all_accounts() {
            self.check_account(&key, t.as_ref());
            if let Some(ours) = &self.our_rates {
                let diffs = match t.info("taxGroups") {
                    Ok(v) => crate::dgi::tax_group_differences(&v, ours),
                    Err(TransportError::Unauthorized(_)) => continue,
                    Err(e) => vec![format!("cannot read the e-MCF's tax groups: {e}")],
                };
                let mut h = lock(&self.health);
                if let Some(a) = h.get_mut(&key) {
                    a.rate_differences = diffs;
                }
            }
        }
        self.account_health()
    }

    /// The token was refused: pause the merchant's uploads (health shows
    /// why) and leave the item as it is, its budget intact.
    pub(super) fn unauthorized(
        &self,
        item: &mut OutboxItem,
        why: &str,
    ) -> Result<Next, AgentError> {
        self.pause(
            &item.merchant_nif,
            format!("the e-MCF refused the token ({why}); put a new one in place"),
        );
        item.error = Some(format!("paused: the e-MCF refused the token ({why})"));
        self.save(item)?;
        Ok(Next::Stop)
    }
}
