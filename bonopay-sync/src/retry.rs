//! The retry schedule shared by every ledger-tail work queue: the DGI
//! outbox ([`crate::dgi::agent`]), the server's webhooks and its receipt
//! deliveries.
//!
//! Each queue keeps its own rows (an e-MCF upload, a signed notification
//! and an e-mail have different states), but they all decide *when to try
//! again* and *when a silent claimant is presumed dead* the same way, here:
//!
//! - **Backoff** ([`Backoff`]): after failed attempt `n` (from 1) the next
//!   one waits a delay drawn uniformly in `[e/2, e]`, where
//!   `e = min(cap, base · 2^(n−1))`. This is "equal jitter": retries of many
//!   items after one outage spread out, and none comes back sooner than half
//!   the exponential step.
//! - **Jitter** ([`Jitter`]): injected so tests and simulations are
//!   reproducible ([`SplitMix`], seeded); production uses the operating
//!   system's randomness.
//! - **Takeover** ([`takeover_after`]): a claim is held for the attempt's
//!   timeout plus [`TAKEOVER_MARGIN`]; past that, the claimant is presumed
//!   dead and another instance may take the item. The DGI outbox uses the
//!   same margin over the e-MCF timeout, so no queue waits longer for a dead
//!   instance than the DGI outbox does.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A source of jitter for retry delays. Object-safe and shared between
/// threads, so one source serves a whole dispatcher.
pub trait Jitter: fmt::Debug + Send + Sync {
    /// A uniformly random number in `0..=max_ms`.
    fn jitter_ms(&self, max_ms: u64) -> u64;
}

/// SplitMix64: small and seedable, good enough for jitter and simulated
/// faults (never for secrets). Its state only ever advances by a constant,
/// so one atomic add makes it safe to share without a lock.
#[derive(Debug)]
pub struct SplitMix(AtomicU64);

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix {
    /// A generator starting from `seed`: the same seed gives the same
    /// sequence.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// The next number of the sequence.
    pub fn next_u64(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Clone for SplitMix {
    fn clone(&self) -> Self {
        Self::new(self.0.load(Ordering::Relaxed))
    }
}

impl Jitter for SplitMix {
    fn jitter_ms(&self, max_ms: u64) -> u64 {
        match max_ms.checked_add(1) {
            Some(span) => self.next_u64() % span,
            None => self.next_u64(),
        }
    }
}

/// Exponential backoff with equal jitter (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first step.
    pub base: Duration,
    /// The largest step.
    pub cap: Duration,
}

impl Backoff {
    /// The delay after failed attempt `attempt` (from 1; 0 counts as 1).
    #[must_use]
    pub fn delay(&self, attempt: u32, jitter: &dyn Jitter) -> Duration {
        Duration::from_millis(self.delay_ms(attempt, jitter))
    }

    /// [`Backoff::delay`] in milliseconds, saturating.
    #[must_use]
    pub fn delay_ms(&self, attempt: u32, jitter: &dyn Jitter) -> u64 {
        let shift = attempt.saturating_sub(1).min(40);
        let step = millis(self.base)
            .saturating_mul(1u64 << shift)
            .min(millis(self.cap));
        let half = step / 2;
        step - half + jitter.jitter_ms(half).min(half)
    }
}

/// How long past an attempt's own timeout a claim is still honoured. A
/// claimant silent for longer is presumed dead and its item is taken over.
pub const TAKEOVER_MARGIN: Duration = Duration::from_secs(15);

/// How long a claim on an item lasts when one attempt may take `timeout`:
/// the timeout plus [`TAKEOVER_MARGIN`].
#[must_use]
pub const fn takeover_after(timeout: Duration) -> Duration {
    timeout.saturating_add(TAKEOVER_MARGIN)
}

/// `d` in whole milliseconds, saturating at `u64::MAX`.
#[must_use]
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug)]
    struct Fixed(u64);
    impl Jitter for Fixed {
        fn jitter_ms(&self, max_ms: u64) -> u64 {
            self.0.min(max_ms)
        }
    }

    #[test]
    fn delays_double_between_half_and_full_step_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        assert_eq!(b.delay_ms(0, &Fixed(0)), 500);
        assert_eq!(b.delay_ms(1, &Fixed(0)), 500);
        assert_eq!(b.delay_ms(1, &Fixed(u64::MAX)), 1_000);
        assert_eq!(b.delay_ms(3, &Fixed(u64::MAX)), 4_000);
        assert_eq!(b.delay_ms(7, &Fixed(u64::MAX)), 60_000);
        assert_eq!(b.delay_ms(7, &Fixed(0)), 30_000);
        assert_eq!(b.delay_ms(u32::MAX, &Fixed(u64::MAX)), 60_000);
        let rng = SplitMix::new(9);
        for n in 1..20 {
            let d = b.delay_ms(n, &rng);
            assert!(d >= b.delay_ms(n, &Fixed(0)) && d <= b.delay_ms(n, &Fixed(u64::MAX)));
        }
    }

    #[test]
    fn splitmix_is_the_reference_sequence_and_shared_clones_diverge_not() {
        // SplitMix64 reference output for seed 0 (Steele, Lea, Flood 2014;
        // the first value is the well-known 0xE220A8397B1DCDAF).
        let r = SplitMix::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        let c = r.clone();
        assert_eq!(r.next_u64(), c.next_u64());
        assert!(r.jitter_ms(10) <= 10);
        assert_eq!(Fixed(5).jitter_ms(3), 3);
    }

    #[test]
    fn takeover_is_the_timeout_plus_the_margin() {
        assert_eq!(
            takeover_after(Duration::from_secs(30)),
            Duration::from_secs(45)
        );
        assert_eq!(takeover_after(Duration::MAX), Duration::MAX);
    }
}
