//! Ledger errors.

/// What went wrong in a ledger operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The chain head moved since the entry was prepared (another writer
    /// appended first). Nothing was written; prepare again from the new head.
    #[error("conflict: outlet {outlet} head is at {actual_seq}, entry expected {expected_seq}")]
    Conflict {
        /// Outlet.
        outlet: String,
        /// The seq the entry was prepared after.
        expected_seq: u64,
        /// The store's current seq.
        actual_seq: u64,
    },
    /// A unique index key is already taken (e.g. an idempotency key used
    /// before). Nothing was written; the existing entry is named.
    #[error("duplicate {name} `{value}`: already recorded by entry {seq} of outlet {outlet}")]
    Duplicate {
        /// Index name.
        name: String,
        /// Key value.
        value: String,
        /// Outlet of the existing entry.
        outlet: String,
        /// Seq of the existing entry.
        seq: u64,
    },
    /// The entry is inconsistent with itself or with the head (bad counters,
    /// hash, time going backwards, …). A bug in the caller, never retried.
    #[error("invalid entry: {0}")]
    InvalidEntry(String),
    /// The backend failed (I/O, SQLite, connection). The write may or may
    /// not have happened; re-read the head before retrying.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not read back as a valid entry (corruption or
    /// tampering).
    #[error("corrupt ledger data: {0}")]
    Corrupt(String),
}

impl LedgerError {
    /// Whether retrying (after re-reading the head) can succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LedgerError::Conflict { .. } | LedgerError::Unavailable(_)
        )
    }
}
