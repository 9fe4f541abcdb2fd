//! The in-memory reference backend.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::entry::{Entry, Head};
use crate::error::LedgerError;
use crate::store::{EntryIter, LedgerStore, check_append};

#[derive(Debug, Default)]
struct Outlet {
    head: Option<Head>,
    entries: Vec<Entry>,
}

/// Keeps everything in memory. The reference implementation of the
/// [`LedgerStore`] contract, and the fastest backend for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    outlets: Mutex<BTreeMap<String, Outlet>>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, BTreeMap<String, Outlet>>, LedgerError> {
        self.outlets
            .lock()
            .map_err(|_| LedgerError::Unavailable("memory store lock poisoned".into()))
    }
}

/// Pages of this many entries are copied out per lock, so iteration never
/// holds the lock long and never copies a whole chain.
const PAGE: usize = 1024;

impl LedgerStore for MemoryStore {
    fn head(&self, outlet: &str) -> Result<Head, LedgerError> {
        let map = self.lock()?;
        Ok(map
            .get(outlet)
            .and_then(|o| o.head.clone())
            .unwrap_or_else(|| Head::genesis(outlet)))
    }

    fn append_batch(&self, entries: &[Entry]) -> Vec<Result<Head, LedgerError>> {
        let mut map = match self.lock() {
            Ok(m) => m,
            Err(e) => return entries.iter().map(|_| Err(e.clone())).collect(),
        };
        entries
            .iter()
            .map(|entry| {
                let o = map.entry(entry.outlet.clone()).or_default();
                let head = o
                    .head
                    .clone()
                    .unwrap_or_else(|| Head::genesis(&entry.outlet));
                let next = check_append(&head, entry)?;
                o.entries.push(entry.clone());
                o.head = Some(next.clone());
                Ok(next)
            })
            .collect()
    }

    fn entry(&self, outlet: &str, seq: u64) -> Result<Option<Entry>, LedgerError> {
        let map = self.lock()?;
        let idx = usize::try_from(seq).ok().and_then(|s| s.checked_sub(1));
        Ok(map
            .get(outlet)
            .and_then(|o| idx.and_then(|i| o.entries.get(i)).cloned()))
    }

    fn entry_by_fiscal_number(
        &self,
        outlet: &str,
        fiscal_year: i32,
        total: u64,
    ) -> Result<Option<Entry>, LedgerError> {
        let map = self.lock()?;
        Ok(map.get(outlet).and_then(|o| {
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
        let map = self.lock()?;
        // Entries are stored in seq order from 1, so seq n sits at index n - 1.
        Ok(map
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
        let mut next = from_seq.max(1);
        let mut page: std::vec::IntoIter<Entry> = Vec::new().into_iter();
        let mut done = false;
        Box::new(std::iter::from_fn(move || {
            loop {
                if let Some(e) = page.next() {
                    return Some(Ok(e));
                }
                if done {
                    return None;
                }
                let end = next.saturating_add(PAGE as u64 - 1);
                match self.range(&outlet, next, end) {
                    Ok(v) => {
                        done = v.len() < PAGE;
                        next = end.saturating_add(1);
                        page = v.into_iter();
                    }
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                }
            }
        }))
    }

    fn outlets(&self) -> Result<Vec<String>, LedgerError> {
        let map = self.lock()?;
        Ok(map
            .iter()
            .filter(|(_, o)| !o.entries.is_empty())
            .map(|(k, _)| k.clone())
            .collect())
    }
}
