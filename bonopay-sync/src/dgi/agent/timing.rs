//! The agent's injected time and randomness: a clock tests step by hand,
//! and the jitter source of the retry backoff, seedable so runs are
//! reproducible.
//!
//! The clock is the sealing pipeline's own [`Clock`] (one trait for "now"
//! in the whole stack; `bonopay-sync` depends on `bonopay-signer`, so the
//! direction allows it).

pub use bonopay_signer::{Clock, ManualClock, SystemClock};

/// The jitter source. Injected so runs are reproducible. The simulator
/// draws its faults and uids from the same generator ([`SplitMix`]).
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
