//! The trusted clock of the sealing pipeline: the time sealed into every
//! entry comes from here, never from the client.

use std::fmt;

use chrono::Utc;

/// The trusted clock. A trait so tests can step it backwards.
pub trait Clock: fmt::Debug + Send + Sync {
    /// Milliseconds since the Unix epoch (UTC).
    fn now_ms(&self) -> i64;
}

/// The system clock (keep it NTP-disciplined).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis()
    }
}

/// A clock the caller sets (tests, replays).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// Starting at `ms`.
    #[must_use]
    pub fn new(ms: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(ms))
    }
    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    /// Moves the time by `delta` ms (negative steps backwards).
    pub fn advance(&self, delta: i64) {
        self.0.fetch_add(delta, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
