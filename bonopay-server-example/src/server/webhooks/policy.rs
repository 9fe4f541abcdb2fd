//! Retry policy of webhook deliveries: backoff with jitter, attempt timeout, claim lease.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A source of jitter for retry delays. A trait so tests can fix it.
pub trait Jitter: fmt::Debug + Send + Sync {
    /// A uniformly random number in `0..=max_ms`.
    fn jitter_ms(&self, max_ms: u64) -> u64;
}

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
/// After failed attempt `n` (from 1) the next one is due after a delay
/// drawn uniformly in `[e/2, e]` where `e = min(cap, base · 2^(n−1))`
/// ("equal jitter": retries of many deliveries spread out, and never come
/// sooner than half the exponential step). After `max_attempts` failed
/// attempts the delivery is dead.
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

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (from 1).
    #[must_use]
    pub fn delay(&self, attempt: u32, jitter: &dyn Jitter) -> Duration {
        let shift = attempt.saturating_sub(1).min(40);
        let step = millis(self.base)
            .saturating_mul(1u64 << shift)
            .min(millis(self.cap));
        let half = step / 2;
        Duration::from_millis(step - half + jitter.jitter_ms(half).min(half))
    }

    /// How long a claimed delivery stays reserved for the dispatcher that
    /// claimed it: past this, a crash mid-send is assumed and it is due
    /// again. The attempt's timeout plus 15 s, the margin the DGI outbox
    /// allows a dead claimant (its takeover grace is the e-MCF timeout plus
    /// 15 s): with the 10 s default a dead instance's deliveries move on
    /// after 25 s, within the outbox's 45 s.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(15)
    }
}
