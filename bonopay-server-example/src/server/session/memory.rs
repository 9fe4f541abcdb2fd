//! [`SessionStore`] in memory: the reference implementation the
//! conformance suite is written against.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{Session, SessionError, SessionStore};

/// [`SessionStore`] in memory: the reference, and the default of an
/// embedded server. Nothing survives the process, and several server
/// instances do not share it.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    inner: Mutex<HashMap<[u8; 32], Session>>,
}

impl MemorySessionStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<[u8; 32], Session>>, SessionError> {
        self.inner
            .lock()
            .map_err(|_| SessionError::Storage("lock poisoned".into()))
    }
}

impl SessionStore for MemorySessionStore {
    fn create(&self, hash: &[u8; 32], session: &Session) -> Result<(), SessionError> {
        let mut g = self.lock()?;
        if g.contains_key(hash) {
            return Err(SessionError::Duplicate);
        }
        g.insert(*hash, session.clone());
        Ok(())
    }

    fn get(&self, hash: &[u8; 32], now: i64) -> Result<Option<Session>, SessionError> {
        Ok(self.lock()?.get(hash).filter(|s| s.is_live(now)).cloned())
    }

    fn touch(&self, hash: &[u8; 32], now: i64) -> Result<bool, SessionError> {
        let mut g = self.lock()?;
        match g.get_mut(hash) {
            Some(s) if s.is_live(now) => {
                s.last_seen_at = s.last_seen_at.max(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn delete(&self, hash: &[u8; 32]) -> Result<bool, SessionError> {
        Ok(self.lock()?.remove(hash).is_some())
    }

    fn delete_for_key(&self, key_id: &str) -> Result<u64, SessionError> {
        let mut g = self.lock()?;
        let before = g.len();
        g.retain(|_, s| s.key_id != key_id);
        Ok((before - g.len()) as u64)
    }

    fn purge_expired(&self, now: i64) -> Result<u64, SessionError> {
        let mut g = self.lock()?;
        let before = g.len();
        g.retain(|_, s| s.is_live(now));
        Ok((before - g.len()) as u64)
    }
}
