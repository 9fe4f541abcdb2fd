//! Fault injection as a decorator, layered over a real store.

use std::sync::Mutex;

use crate::entry::{Entry, Head};
use crate::error::LedgerError;
use crate::store::{EntryIter, LedgerStore};

/// Which write to fail, counting `append`/`append_batch` calls from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Fail the n-th write before anything reaches storage (a write error).
    FailWrite(u64),
    /// Let the n-th write commit, then report failure (a sync whose result
    /// was lost: the caller cannot tell whether the entry is durable, and
    /// must re-read the head).
    FailAfterCommit(u64),
}

/// Wraps a store and injects one [`Fault`] (or none). Reads pass through.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<(u64, Option<Fault>)>,
}

impl<S: LedgerStore> FaultyStore<S> {
    /// No fault armed.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: Mutex::new((0, None)),
        }
    }

    /// Arms a fault, counting writes from now.
    pub fn arm(&self, fault: Fault) {
        if let Ok(mut st) = self.state.lock() {
            *st = (0, Some(fault));
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: LedgerStore> LedgerStore for FaultyStore<S> {
    fn head(&self, outlet: &str) -> Result<Head, LedgerError> {
        self.inner.head(outlet)
    }

    fn append_batch(&self, entries: &[Entry]) -> Vec<Result<Head, LedgerError>> {
        let fault = match self.state.lock() {
            Ok(mut st) => {
                st.0 += 1;
                let n = st.0;
                match st.1 {
                    Some(Fault::FailWrite(k)) if k == n => Some(Fault::FailWrite(k)),
                    Some(Fault::FailAfterCommit(k)) if k == n => Some(Fault::FailAfterCommit(k)),
                    _ => None,
                }
            }
            Err(_) => None,
        };
        let injected = |what: &str| LedgerError::Unavailable(format!("injected fault: {what}"));
        match fault {
            Some(Fault::FailWrite(_)) => entries
                .iter()
                .map(|_| Err(injected("write failed")))
                .collect(),
            Some(Fault::FailAfterCommit(_)) => {
                let _ = self.inner.append_batch(entries);
                entries
                    .iter()
                    .map(|_| Err(injected("sync result lost")))
                    .collect()
            }
            None => self.inner.append_batch(entries),
        }
    }

    crate::store::forward_reads!();
}
