//! The in-memory reference backend.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::entry::{Entry, Head};
use crate::error::LedgerError;
use crate::store::{EntryIter, LedgerStore, check_append, paged_iter};

#[derive(Debug, Default)]
struct Outlet {
    head: Option<Head>,
    entries: Vec<Entry>,
}

#[derive(Debug, Default)]
struct State {
    outlets: BTreeMap<String, Outlet>,
    /// (name, value) → entries holding the key.
    index: BTreeMap<(String, String), Vec<(String, u64)>>,
}

/// Keeps everything in memory. The reference implementation of the
/// [`LedgerStore`] contract, and the fastest backend for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, LedgerError> {
        self.state
            .lock()
            .map_err(|_| LedgerError::Unavailable("memory store lock poisoned".into()))
    }
}

/// Pages of this many entries are copied out per lock, so iteration never
/// holds the lock long and never copies a whole chain.
const PAGE: usize = 1024;

impl LedgerStore for MemoryStore {
    fn head(&self, outlet: &str) -> Result<Head, LedgerError> {
        let st = self.lock()?;
        Ok(st
            .outlets
            .get(outlet)
            .and_then(|o| o.head.clone())
            .unwrap_or_else(|| Head::genesis(outlet)))
    }

    fn append_batch(&self, entries: &[Entry]) -> Vec<Result<Head, LedgerError>> {
        let mut st = match self.lock() {
            Ok(m) => m,
            Err(e) => return entries.iter().map(|_| Err(e.clone())).collect(),
        };
        entries
            .iter()
            .map(|entry| {
                for k in entry.index.iter().filter(|k| k.unique) {
                    if let Some((outlet, seq)) = st
                        .index
                        .get(&(k.name.clone(), k.value.clone()))
                        .and_then(|v| v.first())
                    {
                        return Err(LedgerError::Duplicate {
                            name: k.name.clone(),
                            value: k.value.clone(),
                            outlet: outlet.clone(),
                            seq: *seq,
                        });
                    }
                }
                let o = st.outlets.entry(entry.outlet.clone()).or_default();
                let head = o
                    .head
                    .clone()
                    .unwrap_or_else(|| Head::genesis(&entry.outlet));
                let next = check_append(&head, entry)?;
                // Like every backend, reads return entries without index keys.
                let mut stored = entry.clone();
                stored.index.clear();
                o.entries.push(stored);
                o.head = Some(next.clone());
                for k in &entry.index {
                    st.index
                        .entry((k.name.clone(), k.value.clone()))
                        .or_default()
                        .push((entry.outlet.clone(), entry.seq));
                }
                Ok(next)
            })
            .collect()
    }

    fn entry(&self, outlet: &str, seq: u64) -> Result<Option<Entry>, LedgerError> {
        let st = self.lock()?;
        let idx = usize::try_from(seq).ok().and_then(|s| s.checked_sub(1));
        Ok(st
            .outlets
            .get(outlet)
            .and_then(|o| idx.and_then(|i| o.entries.get(i)).cloned()))
    }

    fn entry_by_fiscal_number(
        &self,
        outlet: &str,
        fiscal_year: i32,
        total: u64,
    ) -> Result<Option<Entry>, LedgerError> {
        let st = self.lock()?;
        Ok(st.outlets.get(outlet).and_then(|o| {
            o.entries
                .iter()
                .find(|e| {
                    e.fiscal_year == fiscal_year
                        && e.fiscal_number.is_some_and(|n| n.total == total)
                })
                .cloned()
        }))
    }

    fn range(&self, outlet: &str, from: u64, to: u64) -> Result<Vec<Entry>, LedgerError> {
        let st = self.lock()?;
        // Entries are stored in seq order from 1, so seq n sits at index n - 1.
        Ok(st
            .outlets
            .get(outlet)
            .map(|o| {
                let len = o.entries.len();
                let lo = usize::try_from(from.max(1) - 1)
                    .unwrap_or(usize::MAX)
                    .min(len);
                let hi = usize::try_from(to).unwrap_or(usize::MAX).min(len);
                if lo < hi {
                    o.entries[lo..hi].to_vec()
                } else {
                    Vec::new()
                }
            })
            .unwrap_or_default())
    }

    fn iter_from<'a>(&'a self, outlet: &str, from_seq: u64) -> EntryIter<'a> {
        let outlet = outlet.to_owned();
        paged_iter(from_seq, PAGE, move |next| {
            self.range(&outlet, next, next.saturating_add(PAGE as u64 - 1))
        })
    }

    fn find_index(&self, name: &str, value: &str) -> Result<Vec<(String, u64)>, LedgerError> {
        let st = self.lock()?;
        Ok(st
            .index
            .get(&(name.to_owned(), value.to_owned()))
            .cloned()
            .unwrap_or_default())
    }

    fn outlets(&self) -> Result<Vec<String>, LedgerError> {
        let st = self.lock()?;
        Ok(st
            .outlets
            .iter()
            .filter(|(_, o)| !o.entries.is_empty())
            .map(|(k, _)| k.clone())
            .collect())
    }
}
