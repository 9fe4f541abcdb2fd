//! The chain verifier: walks an outlet's chain (live or exported) and says
//! exactly where it breaks.

use std::fmt;

use crate::entry::{Entry, FiscalNumber, Hash, Head};
use crate::error::LedgerError;
use crate::store::LedgerStore;

/// Extra per-entry checks the verifier runs (the signer crate plugs the
/// signature check in here).
pub trait EntryCheck {
    /// `Err(reason)` when the entry fails the check.
    ///
    /// # Errors
    /// A human-readable reason.
    fn check(&self, entry: &Entry) -> Result<(), String>;
}

/// No extra checks: chain, hashes and counters only.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainOnly;

impl EntryCheck for ChainOnly {
    fn check(&self, _: &Entry) -> Result<(), String> {
        Ok(())
    }
}

/// How a chain is broken. Positions are 1-based positions in the walk (the
/// n-th entry read), which differ from `seq` exactly when entries were
/// removed, inserted or reordered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainError {
    /// An entry could not be read at all.
    Unreadable {
        /// Position in the walk.
        position: u64,
        /// Why.
        error: LedgerError,
    },
    /// The entry belongs to another outlet.
    WrongOutlet {
        /// Position in the walk.
        position: u64,
        /// Outlet named by the entry.
        found: String,
    },
    /// The sequence number is not the next one: an entry was removed,
    /// inserted or moved.
    SequenceBreak {
        /// Position in the walk.
        position: u64,
        /// The seq that should be here.
        expected_seq: u64,
        /// The seq found.
        found_seq: u64,
    },
    /// `prev_hash` is not the previous entry's hash.
    BrokenLink {
        /// Position in the walk.
        position: u64,
        /// The entry's seq.
        seq: u64,
        /// Hash of the previous entry (or genesis).
        expected_prev: Hash,
        /// `prev_hash` stored in the entry.
        found_prev: Hash,
    },
    /// The header does not match the entry's fields or payload (a changed
    /// payload byte, counter or time).
    HeaderMismatch {
        /// Position in the walk.
        position: u64,
        /// The entry's seq.
        seq: u64,
        /// Detail.
        detail: String,
    },
    /// The stored entry hash is not the hash of its header.
    HashMismatch {
        /// Position in the walk.
        position: u64,
        /// The entry's seq.
        seq: u64,
        /// Stored hash.
        stored: Hash,
        /// Recomputed hash.
        computed: Hash,
    },
    /// A fiscal number that jumps, repeats or goes backwards, or a numbered
    /// entry without one.
    CounterBreak {
        /// Position in the walk.
        position: u64,
        /// The entry's seq.
        seq: u64,
        /// The number the series requires.
        expected: Option<FiscalNumber>,
        /// The number found.
        found: Option<FiscalNumber>,
    },
    /// A Z number out of sequence.
    ZNumberBreak {
        /// Position in the walk.
        position: u64,
        /// The entry's seq.
        seq: u64,
        /// Expected.
        expected: Option<u64>,
        /// Found.
        found: Option<u64>,
    },
    /// Time or fiscal year going backwards, or an inconsistent kind/type.
    InvalidOrder {
        /// Position in the walk.
        position: u64,
        /// The entry's seq.
        seq: u64,
        /// Detail.
        detail: String,
    },
    /// An extra check (e.g. the signature) failed.
    CheckFailed {
        /// Position in the walk.
        position: u64,
        /// The entry's seq.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// The store's recorded head is not the chain's last entry.
    HeadMismatch {
        /// Seq and hash the store reports.
        stored: (u64, Hash),
        /// Seq and hash of the last entry walked.
        computed: (u64, Hash),
    },
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = |x: &Hash| hex::encode(x);
        match self {
            ChainError::Unreadable { position, error } => {
                write!(f, "entry #{position}: unreadable: {error}")
            }
            ChainError::WrongOutlet { position, found } => {
                write!(f, "entry #{position}: belongs to outlet {found}")
            }
            ChainError::SequenceBreak {
                position,
                expected_seq,
                found_seq,
            } => write!(
                f,
                "entry #{position}: seq {found_seq} where {expected_seq} was expected (entry removed, inserted or moved)"
            ),
            ChainError::BrokenLink {
                position,
                seq,
                expected_prev,
                found_prev,
            } => write!(
                f,
                "entry #{position} (seq {seq}): broken link: prev_hash {} but the previous entry hashes to {}",
                h(found_prev),
                h(expected_prev)
            ),
            ChainError::HeaderMismatch {
                position,
                seq,
                detail,
            } => {
                write!(f, "entry #{position} (seq {seq}): altered: {detail}")
            }
            ChainError::HashMismatch {
                position,
                seq,
                stored,
                computed,
            } => write!(
                f,
                "entry #{position} (seq {seq}): stored hash {} but the header hashes to {}",
                h(stored),
                h(computed)
            ),
            ChainError::CounterBreak {
                position,
                seq,
                expected,
                found,
            } => write!(
                f,
                "entry #{position} (seq {seq}): fiscal number {} where {} was expected",
                found.map_or("none".to_owned(), |n| n.to_string()),
                expected.map_or("none".to_owned(), |n| n.to_string())
            ),
            ChainError::ZNumberBreak {
                position,
                seq,
                expected,
                found,
            } => {
                write!(
                    f,
                    "entry #{position} (seq {seq}): Z number {found:?} where {expected:?} was expected"
                )
            }
            ChainError::InvalidOrder {
                position,
                seq,
                detail,
            } => write!(f, "entry #{position} (seq {seq}): {detail}"),
            ChainError::CheckFailed {
                position,
                seq,
                reason,
            } => write!(f, "entry #{position} (seq {seq}): {reason}"),
            ChainError::HeadMismatch { stored, computed } => write!(
                f,
                "store head is seq {} / {} but the chain ends at seq {} / {}",
                stored.0,
                h(&stored.1),
                computed.0,
                h(&computed.1)
            ),
        }
    }
}

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ChainReport {
    /// Outlet.
    pub outlet: String,
    /// Entries walked and found valid.
    pub verified: u64,
    /// The head after the last valid entry.
    pub head: Head,
    /// The first problem, if any (the walk stops there).
    pub error: Option<ChainError>,
}

impl ChainReport {
    /// Whether the chain verified completely.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.error.is_none()
    }
}

/// Walks `entries` (in the order storage or an export gives them) as the
/// chain of `outlet`, from genesis.
pub fn verify_chain<I>(outlet: &str, entries: I, extra: &dyn EntryCheck) -> ChainReport
where
    I: IntoIterator<Item = Result<Entry, LedgerError>>,
{
    verify_chain_from(Head::genesis(outlet), entries, extra)
}

/// [`verify_chain`] from a known starting point instead of the genesis: the
/// head as it stood before the first entry given (an audit bundle that
/// starts mid-chain states it, and must authenticate it some other way).
pub fn verify_chain_from<I>(start: Head, entries: I, extra: &dyn EntryCheck) -> ChainReport
where
    I: IntoIterator<Item = Result<Entry, LedgerError>>,
{
    let outlet = start.outlet.clone();
    let mut head = start;
    let mut position = 0u64;
    let mut error = None;
    for item in entries {
        position += 1;
        match check_one(&head, position, item, extra) {
            Ok(next) => head = next,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    ChainReport {
        outlet,
        verified: head.seq,
        head,
        error,
    }
}

/// One step of the walk: checks `item` as the entry after `head` (the n-th
/// read, `position`) and returns the head after it. Public so a verifier
/// can show its work entry by entry (`bonopay verify --explain`).
///
/// # Errors
/// The first thing about the entry that does not hold.
pub fn check_one(
    head: &Head,
    position: u64,
    item: Result<Entry, LedgerError>,
    extra: &dyn EntryCheck,
) -> Result<Head, ChainError> {
    let e = item.map_err(|error| ChainError::Unreadable { position, error })?;
    let seq = e.seq;
    if e.outlet != head.outlet {
        return Err(ChainError::WrongOutlet {
            position,
            found: e.outlet,
        });
    }
    if seq != head.seq + 1 {
        return Err(ChainError::SequenceBreak {
            position,
            expected_seq: head.seq + 1,
            found_seq: seq,
        });
    }
    if e.prev_hash != head.hash {
        return Err(ChainError::BrokenLink {
            position,
            seq,
            expected_prev: head.hash,
            found_prev: e.prev_hash,
        });
    }
    let computed = crate::entry::entry_hash(&e.prev_hash, &e.header);
    if computed != e.entry_hash {
        return Err(ChainError::HashMismatch {
            position,
            seq,
            stored: e.entry_hash,
            computed,
        });
    }
    if let Err(err) = e.check_integrity() {
        return Err(ChainError::HeaderMismatch {
            position,
            seq,
            detail: err.to_string(),
        });
    }
    let expected = head
        .prepare(&e.meta())
        .map_err(|err| ChainError::InvalidOrder {
            position,
            seq,
            detail: err.to_string(),
        })?;
    if expected.fiscal_number != e.fiscal_number {
        return Err(ChainError::CounterBreak {
            position,
            seq,
            expected: expected.fiscal_number,
            found: e.fiscal_number,
        });
    }
    if expected.z_number != e.z_number {
        return Err(ChainError::ZNumberBreak {
            position,
            seq,
            expected: expected.z_number,
            found: e.z_number,
        });
    }
    extra.check(&e).map_err(|reason| ChainError::CheckFailed {
        position,
        seq,
        reason,
    })?;
    Ok(head.advance(&e))
}

/// Verifies an outlet's chain in a live store, streaming, and checks that
/// the store's recorded head is the chain's last entry.
pub fn verify_store(store: &dyn LedgerStore, outlet: &str, extra: &dyn EntryCheck) -> ChainReport {
    let mut report = verify_chain(outlet, store.iter_from(outlet, 1), extra);
    if report.error.is_none() {
        match store.head(outlet) {
            Ok(stored) if stored.seq != report.head.seq || stored.hash != report.head.hash => {
                report.error = Some(ChainError::HeadMismatch {
                    stored: (stored.seq, stored.hash),
                    computed: (report.head.seq, report.head.hash),
                });
            }
            Ok(_) => {}
            Err(error) => report.error = Some(ChainError::Unreadable { position: 0, error }),
        }
    }
    report
}
