//! The agent's injected time and randomness: a clock tests step by hand,
//! and the jitter source of the retry backoff, seedable so runs are
//! reproducible.

/// The agent's clock (ms since the epoch). Injected so tests can step it.
pub trait SyncClock: std::fmt::Debug + Send + Sync {
    /// Now.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemSyncClock;

impl SyncClock for SystemSyncClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock tests set by hand.
#[derive(Debug, Default)]
pub struct ManualSyncClock(std::sync::atomic::AtomicI64);

impl ManualSyncClock {
    /// At `ms`.
    #[must_use]
    pub fn new(ms: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(ms))
    }

    /// Moves it forward.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl SyncClock for ManualSyncClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The jitter source. Injected so runs are reproducible.
pub trait Jitter: std::fmt::Debug + Send {
    /// A uniformly random `u64`.
    fn next_u64(&mut self) -> u64;
}

/// SplitMix64: small, seedable, good enough for jitter (not for secrets).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl Jitter for SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
