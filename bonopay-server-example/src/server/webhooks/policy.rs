//! Retry policy of webhook deliveries: backoff with jitter, attempt timeout, claim lease.

#[allow(clippy::wildcard_imports)]
use super::*;

pub use bonopay_sync::retry::Jitter;

/// Jitter from the operating system's random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn jitter_ms(&self, max_ms: u64) -> u64 {
        let Some(span) = max_ms.checked_add(1) else {
            return OsRng.next_u64();
        };
        let mut b = [0u8; 8];
        if OsRng.try_fill_bytes(&mut b).is_err() {
            return max_ms / 2;
        }
        u64::from_le_bytes(b) % span
    }
}

/// When to retry a failed delivery.
///
/// The schedule is the one every queue shares ([`bonopay_sync::retry`]):
/// after failed attempt `n` (from 1) the next one is due after a delay
/// drawn uniformly in `[e/2, e]` where `e = min(cap, base · 2^(n−1))`.
/// After `max_attempts` failed attempts the delivery is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First step (default 5 s).
    pub base: Duration,
    /// Largest step (default 1 h).
    pub cap: Duration,
    /// Attempts in all, the first included (default 12).
    pub max_attempts: u32,
    /// How long an attempt may wait for the answer (default 10 s).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 s doubling to 1 h, 12 attempts, 10 s per attempt.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(3600),
            max_attempts: 12,
            timeout: Duration::from_secs(10),
        }
    }
}

pub(super) fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (from 1).
    #[must_use]
    pub fn delay(&self, attempt: u32, jitter: &dyn Jitter) -> Duration {
        bonopay_sync::retry::Backoff {
            base: self.base,
            cap: self.cap,
        }
        .delay(attempt, jitter)
    }

    /// How long a claimed delivery stays reserved for the dispatcher that
    /// claimed it: past this, a crash mid-send is assumed and it is due
    /// again. The attempt's timeout plus the margin every queue allows a
    /// dead claimant ([`bonopay_sync::retry::takeover_after`]): with the
    /// 10 s default a dead instance's deliveries move on after 25 s, within
    /// the DGI outbox's 45 s.
    #[must_use]
    pub fn lease(&self) -> Duration {
        bonopay_sync::retry::takeover_after(self.timeout)
    }
}
