//! A throwaway PostgreSQL database for tests and benches (features
//! `postgres` and `testing`): the backends' conformance runs, the server's
//! multi-instance tests and the PostgreSQL benches each get a database of
//! their own, dropped afterwards. Test helper, not part of the embedder's
//! API, hence the feature.

use postgres::{Client, NoTls};

use crate::error::LedgerError;

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

/// A throwaway database for tests and benches: created on
/// [`TestDb::create`], dropped (`WITH (FORCE)`) on drop.
#[derive(Debug)]
pub struct TestDb {
    admin: String,
    name: String,
    /// The database's URL.
    pub url: String,
}

impl TestDb {
    /// Creates `bonopay_t_<pid>_<n>` on the server of `admin_url` (default
    /// `$BONOPAY_TEST_PG`, else `postgres://postgres@127.0.0.1:5432/postgres`).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] with the reason when PostgreSQL is not
    /// reachable.
    pub fn create() -> Result<Self, LedgerError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let admin = std::env::var("BONOPAY_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "bonopay_t_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let mut c = Client::connect(&admin, NoTls).map_err(|e| {
            unavailable(format!(
                "PostgreSQL at {admin} is not reachable ({e}); the tests need it (set BONOPAY_TEST_PG)"
            ))
        })?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(unavailable)?;
        let url = match admin.rsplit_once('/') {
            Some((base, _)) if admin.starts_with("postgres") => format!("{base}/{name}"),
            _ => format!("{admin} dbname={name}"),
        };
        Ok(Self { admin, name, url })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.admin, NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
