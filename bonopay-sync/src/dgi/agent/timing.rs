//! The agent's injected time and randomness: a clock tests step by hand,
//! and the jitter source of the retry backoff, seedable so runs are
//! reproducible. Both are shared with the rest of the stack.
//!
//! The clock is the sealing pipeline's own [`Clock`] (one trait for "now"
//! in the whole stack; `bonopay-sync` depends on `bonopay-signer`, so the
//! direction allows it).

pub use bonopay_signer::{Clock, ManualClock, SystemClock};

/// The jitter source of the retry backoff, shared with every other queue
/// ([`crate::retry`]). The simulator draws its faults and uids from the
/// same generator ([`SplitMix`]).
pub use crate::retry::{Jitter, SplitMix};
