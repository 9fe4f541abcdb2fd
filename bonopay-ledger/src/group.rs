//! Group commit as a decorator over any store.
//!
//! Concurrent `append` calls are gathered into one `append_batch` (one
//! transaction, one fsync). The first caller to find no commit in progress
//! becomes the leader, takes up to `max_batch` queued entries and commits
//! them; the others wait. Nobody's call returns before the batch holding its
//! entry is durable, so group commit never acknowledges early.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};

use crate::entry::{Entry, Head};
use crate::error::LedgerError;
use crate::store::{EntryIter, LedgerStore};

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(u64, Entry)>,
    done: HashMap<u64, Result<Head, LedgerError>>,
    next_ticket: u64,
    committing: bool,
}

/// Wraps a store so that concurrent appends share commits.
#[derive(Debug)]
pub struct GroupCommit<S> {
    inner: S,
    max_batch: usize,
    state: Mutex<State>,
    wake: Condvar,
}

impl<S: LedgerStore> GroupCommit<S> {
    /// Batches of at most `max_batch` entries (at least 1).
    pub fn new(inner: S, max_batch: usize) -> Self {
        Self {
            inner,
            max_batch: max_batch.max(1),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: LedgerStore> GroupCommit<S> {
    /// Queues an entry; entries are committed in queue order.
    fn enqueue(&self, entry: &Entry) -> Result<u64, LedgerError> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push_back((ticket, entry.clone()));
        Ok(ticket)
    }

    /// Waits for a queued entry's outcome, committing a batch itself when
    /// no one else is (leader/follower group commit).
    fn wait(&self, ticket: u64) -> Result<Head, LedgerError> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        loop {
            if let Some(r) = st.done.remove(&ticket) {
                return r;
            }
            if st.committing {
                st = self.wake.wait(st).map_err(|_| poisoned())?;
                continue;
            }
            st.committing = true;
            let n = st.queue.len().min(self.max_batch);
            let (tickets, batch): (Vec<u64>, Vec<Entry>) = st.queue.drain(..n).unzip();
            drop(st);
            let results = self.inner.append_batch(&batch);
            st = self.state.lock().map_err(|_| poisoned())?;
            for (t, r) in tickets.into_iter().zip(results) {
                st.done.insert(t, r);
            }
            st.committing = false;
            self.wake.notify_all();
        }
    }
}

fn poisoned() -> LedgerError {
    LedgerError::Unavailable("group commit lock poisoned".into())
}

impl<S: LedgerStore> LedgerStore for GroupCommit<S> {
    fn head(&self, outlet: &str) -> Result<Head, LedgerError> {
        self.inner.head(outlet)
    }

    fn append(&self, entry: &Entry) -> Result<Head, LedgerError> {
        let ticket = self.enqueue(entry)?;
        self.wait(ticket)
    }

    fn submit<'a>(&'a self, entry: &Entry) -> crate::store::PendingAppend<'a> {
        match self.enqueue(entry) {
            Ok(ticket) => Box::new(move || self.wait(ticket)),
            Err(e) => Box::new(move || Err(e)),
        }
    }

    fn append_batch(&self, entries: &[Entry]) -> Vec<Result<Head, LedgerError>> {
        self.inner.append_batch(entries)
    }

    crate::store::forward_reads!();
}
