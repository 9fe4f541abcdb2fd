//! The ledger stores the Fiscalizer's tests run over: memory, SQLite and
//! PostgreSQL (a throwaway database per test, `bonopay_ledger::TestDb`, on
//! `$BONOPAY_TEST_PG` or 127.0.0.1:5432). One matrix: a test body takes a
//! [`Db`] and runs once per backend.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use bonopay_ledger::{LedgerStore, MemoryStore, PgStore, SqliteStore, TestDb};

/// A ledger backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

/// Every backend, in the order the matrix runs them.
pub const BACKENDS: [Backend; 3] = [Backend::Memory, Backend::Sqlite, Backend::Postgres];

/// One database of a backend, alive as long as the test holds it.
/// [`Db::open`] gives another handle on the same data: another server
/// instance, or the same one after a restart (for memory, the same store).
pub struct Db {
    pub backend: Backend,
    memory: Arc<MemoryStore>,
    _dir: Option<tempfile::TempDir>,
    path: Option<PathBuf>,
    pg: Option<TestDb>,
}

impl Db {
    pub fn new(backend: Backend) -> Self {
        let mut db = Self {
            backend,
            memory: Arc::new(MemoryStore::new()),
            _dir: None,
            path: None,
            pg: None,
        };
        match backend {
            Backend::Memory => {}
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                db.path = Some(dir.path().join("ledger.db"));
                db._dir = Some(dir);
            }
            Backend::Postgres => db.pg = Some(TestDb::create().unwrap()),
        }
        db
    }

    /// A new handle on this database.
    pub fn open(&self) -> Arc<dyn LedgerStore> {
        match self.backend {
            Backend::Memory => self.memory.clone(),
            Backend::Sqlite => Arc::new(SqliteStore::open(self.path.as_ref().unwrap()).unwrap()),
            Backend::Postgres => {
                Arc::new(PgStore::connect(&self.pg.as_ref().unwrap().url, 8).unwrap())
            }
        }
    }
}

/// Runs `test` once on a fresh database of every backend. The backend is
/// printed first, so a failure's captured output names it.
pub fn on_every_store(test: impl Fn(&Db)) {
    for backend in BACKENDS {
        eprintln!("--- over the {backend:?} store");
        test(&Db::new(backend));
    }
}
