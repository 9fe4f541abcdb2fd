//! [`ApiKeyStore`] in memory: the reference implementation the
//! conformance suite is written against.

#[allow(clippy::wildcard_imports)]
use super::*;

/// [`ApiKeyStore`] in memory: the reference implementation (tests,
/// embedding examples). Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    keys: Vec<(ApiKey, [u8; 32])>,
    outlets: BTreeMap<String, (usize, Outlet)>,
}

impl MemoryKeyStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryInner>, AuthError> {
        self.inner
            .lock()
            .map_err(|_| AuthError::Storage("lock poisoned".into()))
    }
}

impl ApiKeyStore for MemoryKeyStore {
    fn insert_key(&self, key: &ApiKey, hash: &[u8; 32]) -> Result<(), AuthError> {
        let mut g = self.lock()?;
        if g.keys.iter().any(|(k, h)| k.id == key.id || h == hash) {
            return Err(AuthError::Storage("duplicate key id or token".into()));
        }
        g.keys.push((key.clone(), *hash));
        Ok(())
    }

    fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKey>, AuthError> {
        Ok(self
            .lock()?
            .keys
            .iter()
            .find(|(_, h)| h == hash)
            .map(|(k, _)| k.clone()))
    }

    fn list_keys(&self, merchant_nif: &str) -> Result<Vec<ApiKey>, AuthError> {
        Ok(self
            .lock()?
            .keys
            .iter()
            .filter(|(k, _)| k.merchant_nif == merchant_nif)
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn revoke_key(&self, merchant_nif: &str, id: &str) -> Result<bool, AuthError> {
        let mut g = self.lock()?;
        let other_owner = g.keys.iter().any(|(k, _)| {
            k.merchant_nif == merchant_nif && k.role == Role::Owner && !k.revoked && k.id != id
        });
        match g
            .keys
            .iter_mut()
            .find(|(k, _)| k.id == id && k.merchant_nif == merchant_nif)
        {
            Some((k, _)) if k.role == Role::Owner && !k.revoked && !other_owner => {
                Err(AuthError::LastOwnerKey(id.to_owned()))
            }
            Some((k, _)) => {
                k.revoked = true;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn insert_outlet(&self, outlet: &Outlet) -> Result<(), AuthError> {
        let mut g = self.lock()?;
        if g.outlets.contains_key(&outlet.id) {
            return Err(AuthError::OutletTaken(outlet.id.clone()));
        }
        let n = g.outlets.len();
        g.outlets.insert(outlet.id.clone(), (n, outlet.clone()));
        Ok(())
    }

    fn outlet(&self, id: &str) -> Result<Option<Outlet>, AuthError> {
        Ok(self.lock()?.outlets.get(id).map(|(_, o)| o.clone()))
    }

    fn list_outlets(&self, merchant_nif: &str) -> Result<Vec<Outlet>, AuthError> {
        let g = self.lock()?;
        let mut list: Vec<&(usize, Outlet)> = g
            .outlets
            .values()
            .filter(|(_, o)| o.merchant_nif == merchant_nif)
            .collect();
        list.sort_by_key(|(n, _)| *n);
        Ok(list.into_iter().map(|(_, o)| o.clone()).collect())
    }
}
