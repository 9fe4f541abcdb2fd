//! The storage trait every backend implements.

use std::fmt::Debug;

use crate::entry::{Entry, Head};
use crate::error::LedgerError;

/// A boxed, streaming iterator of entries.
/// The outcome of a [`LedgerStore::submit`], when it is known.
pub type PendingAppend<'a> = Box<dyn FnOnce() -> Result<Head, LedgerError> + Send + 'a>;

/// A streaming iterator over entries.
pub type EntryIter<'a> = Box<dyn Iterator<Item = Result<Entry, LedgerError>> + Send + 'a>;

/// Durable storage of per-outlet chains.
///
/// Synchronous and object-safe: the fiscal core is CPU- and fsync-bound and
/// holds no async runtime; servers call it from a blocking pool.
///
/// **Contract** (checked by the conformance suite, `conformance` feature):
/// - [`append`](Self::append) is a compare-and-swap on the chain head: it
///   succeeds only if `entry.seq == head.seq + 1` and `entry.prev_hash ==
///   head.hash`; otherwise it returns [`LedgerError::Conflict`] and writes
///   nothing. Two writers can never fork a chain.
/// - The store re-derives the entry's counters and Z number from its own head
///   ([`Head::prepare`]) and refuses a mismatch, so a buggy caller cannot
///   create a gap or a duplicate number.
/// - The counter update, the entry insert and its index keys commit
///   atomically, and `append` returns only once the entry is durable.
/// - A unique index key already recorded (in storage or earlier in the same
///   batch) fails the entry with [`LedgerError::Duplicate`], checked before
///   the head, so a concurrent duplicate learns which entry holds the key.
pub trait LedgerStore: Debug + Send + Sync {
    /// The outlet's head (the genesis head if it has no entries).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] or [`LedgerError::Corrupt`].
    fn head(&self, outlet: &str) -> Result<Head, LedgerError>;

    /// Appends one entry (see the trait docs for the CAS contract).
    ///
    /// # Errors
    /// [`LedgerError::Conflict`], [`LedgerError::InvalidEntry`] or
    /// [`LedgerError::Unavailable`].
    fn append(&self, entry: &Entry) -> Result<Head, LedgerError> {
        self.append_batch(std::slice::from_ref(entry))
            .pop()
            .unwrap_or_else(|| Err(LedgerError::Unavailable("empty batch result".into())))
    }

    /// Starts appending `entry` and returns a handle that waits for the
    /// outcome. A store that batches ([`crate::GroupCommit`]) queues the
    /// entry before returning, so the caller may prepare the next entry of
    /// the same outlet on top of it and queue that one too, before the
    /// first is durable (pipelining): both then share one commit, and if
    /// the first fails the second conflicts. The default appends at once.
    fn submit<'a>(&'a self, entry: &Entry) -> PendingAppend<'a> {
        let r = self.append(entry);
        Box::new(move || r)
    }

    /// Appends several entries in one durable commit (group commit). Each
    /// entry is checked against the head as left by the entries before it
    /// in the batch, so a batch may chain several entries of one outlet.
    /// Returns one result per entry, in order; an entry that fails does not
    /// stop the others (but later entries chained on it will conflict).
    fn append_batch(&self, entries: &[Entry]) -> Vec<Result<Head, LedgerError>>;

    /// The entry at `seq` (from 1).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] or [`LedgerError::Corrupt`].
    fn entry(&self, outlet: &str, seq: u64) -> Result<Option<Entry>, LedgerError>;

    /// The numbered entry with total counter `total` in `fiscal_year`.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] or [`LedgerError::Corrupt`].
    fn entry_by_fiscal_number(
        &self,
        outlet: &str,
        fiscal_year: i32,
        total: u64,
    ) -> Result<Option<Entry>, LedgerError>;

    /// Entries with `from <= seq <= to`, in order.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] or [`LedgerError::Corrupt`].
    fn range(&self, outlet: &str, from: u64, to: u64) -> Result<Vec<Entry>, LedgerError>;

    /// Streams entries from `from_seq` on, in constant memory (backends page
    /// through storage), for exports and verification of long chains.
    fn iter_from<'a>(&'a self, outlet: &str, from_seq: u64) -> EntryIter<'a>;

    /// Entries recorded under an index key, as (outlet, seq), oldest first.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`].
    fn find_index(&self, name: &str, value: &str) -> Result<Vec<(String, u64)>, LedgerError>;

    /// Every outlet with at least one entry.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`].
    fn outlets(&self) -> Result<Vec<String>, LedgerError>;
}

/// Streams entries page by page: `fetch(next_seq)` returns the next page
/// (entries with seq ≥ `next_seq`, in order, at most `page` of them). Memory
/// stays bounded by one page however long the chain is, and no borrow of the
/// backend is held between pages.
pub fn paged_iter<'a>(
    from_seq: u64,
    page: usize,
    mut fetch: impl FnMut(u64) -> Result<Vec<Entry>, LedgerError> + Send + 'a,
) -> EntryIter<'a> {
    let mut next = from_seq.max(1);
    let mut buf: std::vec::IntoIter<Entry> = Vec::new().into_iter();
    let mut done = false;
    Box::new(std::iter::from_fn(move || {
        loop {
            if let Some(e) = buf.next() {
                next = e.seq.saturating_add(1);
                return Some(Ok(e));
            }
            if done {
                return None;
            }
            match fetch(next) {
                Ok(v) => {
                    done = v.len() < page;
                    buf = v.into_iter();
                }
                Err(e) => {
                    done = true;
                    return Some(Err(e));
                }
            }
        }
    }))
}

/// Forwards the read methods of [`LedgerStore`] to `self.inner`, for
/// decorators that only change writes.
macro_rules! forward_reads {
    () => {
        fn entry(&self, outlet: &str, seq: u64) -> Result<Option<Entry>, LedgerError> {
            self.inner.entry(outlet, seq)
        }

        fn entry_by_fiscal_number(
            &self,
            outlet: &str,
            year: i32,
            total: u64,
        ) -> Result<Option<Entry>, LedgerError> {
            self.inner.entry_by_fiscal_number(outlet, year, total)
        }

        fn range(&self, outlet: &str, from: u64, to: u64) -> Result<Vec<Entry>, LedgerError> {
            self.inner.range(outlet, from, to)
        }

        fn iter_from<'a>(&'a self, outlet: &str, from_seq: u64) -> EntryIter<'a> {
            self.inner.iter_from(outlet, from_seq)
        }

        fn find_index(&self, name: &str, value: &str) -> Result<Vec<(String, u64)>, LedgerError> {
            self.inner.find_index(name, value)
        }

        fn outlets(&self) -> Result<Vec<String>, LedgerError> {
            self.inner.outlets()
        }
    };
}
pub(crate) use forward_reads;

/// Checks `entry` against `head` exactly as a store must before writing it,
/// and returns the new head. Backends call this inside their transaction.
///
/// # Errors
/// [`LedgerError::Conflict`] when the head moved, [`LedgerError::InvalidEntry`]
/// when the entry is not what the head would have prepared.
pub fn check_append(head: &Head, entry: &Entry) -> Result<Head, LedgerError> {
    if entry.outlet != head.outlet {
        return Err(LedgerError::InvalidEntry(format!(
            "entry for outlet {} checked against head of {}",
            entry.outlet, head.outlet
        )));
    }
    if entry.seq != head.seq + 1 || entry.prev_hash != head.hash {
        return Err(LedgerError::Conflict {
            outlet: head.outlet.clone(),
            expected_seq: entry.seq.saturating_sub(1),
            actual_seq: head.seq,
        });
    }
    let expected = head.prepare(&entry.meta())?;
    if expected.fiscal_number != entry.fiscal_number || expected.z_number != entry.z_number {
        return Err(LedgerError::InvalidEntry(format!(
            "entry {} of outlet {}: counters {:?}/z {:?} but the head gives {:?}/z {:?}",
            entry.seq,
            entry.outlet,
            entry.fiscal_number,
            entry.z_number,
            expected.fiscal_number,
            expected.z_number
        )));
    }
    entry.check_integrity()?;
    Ok(head.advance(entry))
}

macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        impl<S: LedgerStore + ?Sized> LedgerStore for $ty {
            fn head(&self, outlet: &str) -> Result<Head, LedgerError> {
                (**self).head(outlet)
            }
            fn append(&self, entry: &Entry) -> Result<Head, LedgerError> {
                (**self).append(entry)
            }
            fn submit<'a>(&'a self, entry: &Entry) -> PendingAppend<'a> {
                (**self).submit(entry)
            }
            fn append_batch(&self, entries: &[Entry]) -> Vec<Result<Head, LedgerError>> {
                (**self).append_batch(entries)
            }
            fn entry(&self, outlet: &str, seq: u64) -> Result<Option<Entry>, LedgerError> {
                (**self).entry(outlet, seq)
            }
            fn entry_by_fiscal_number(&self, outlet: &str, year: i32, total: u64) -> Result<Option<Entry>, LedgerError> {
                (**self).entry_by_fiscal_number(outlet, year, total)
            }
            fn range(&self, outlet: &str, from: u64, to: u64) -> Result<Vec<Entry>, LedgerError> {
                (**self).range(outlet, from, to)
            }
            fn iter_from<'a>(&'a self, outlet: &str, from_seq: u64) -> EntryIter<'a> {
                (**self).iter_from(outlet, from_seq)
            }
            fn find_index(&self, name: &str, value: &str) -> Result<Vec<(String, u64)>, LedgerError> {
                (**self).find_index(name, value)
            }
            fn outlets(&self) -> Result<Vec<String>, LedgerError> {
                (**self).outlets()
            }
        }
    )*};
}

forward_store!(std::sync::Arc<S>, Box<S>, &S);

/// Conveniences over any [`LedgerStore`].
pub trait LedgerStoreExt: LedgerStore {
    /// Prepares, seals and appends one entry, retrying on
    /// [`LedgerError::Conflict`] (another writer got there first) up to
    /// `max_attempts` times. `payload` is called with each attempt's
    /// [`crate::Prepared`], so it can embed the position, previous hash and
    /// fiscal number (and sign them).
    ///
    /// # Errors
    /// The last error when attempts run out, or the first non-conflict error.
    fn append_new(
        &self,
        outlet: &str,
        meta: &crate::EntryMeta,
        max_attempts: u32,
        payload: &mut dyn FnMut(&crate::Prepared) -> Vec<u8>,
    ) -> Result<Entry, LedgerError> {
        let mut last = None;
        for _ in 0..max_attempts.max(1) {
            let head = self.head(outlet)?;
            let prepared = head.prepare(meta)?;
            let body = payload(&prepared);
            let entry = prepared.seal(body);
            match self.append(&entry) {
                Ok(_) => return Ok(entry),
                Err(e @ LedgerError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| LedgerError::Unavailable("no attempt made".into())))
    }
}

impl<S: LedgerStore + ?Sized> LedgerStoreExt for S {}
