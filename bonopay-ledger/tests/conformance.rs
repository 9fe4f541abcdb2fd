//! The conformance suite, run against every backend and decorator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};

use bonopay_ledger::conformance::run_all;
use bonopay_ledger::{FaultyStore, GroupCommit, LedgerStore, MemoryStore, SqliteStore};
use tempfile::TempDir;

/// Temp dirs live as long as the test binary, so stores built by the
/// factory keep their files.
static DIRS: Mutex<Vec<TempDir>> = Mutex::new(Vec::new());

fn sqlite() -> SqliteStore {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ledger.db")).unwrap();
    DIRS.lock().unwrap().push(dir);
    store
}

#[test]
fn memory() {
    run_all(&|| Box::new(MemoryStore::new()) as Box<dyn LedgerStore>);
}

#[test]
fn sqlite_store() {
    run_all(&|| Box::new(sqlite()) as Box<dyn LedgerStore>);
}

#[test]
fn group_commit_over_sqlite() {
    run_all(&|| Box::new(GroupCommit::new(sqlite(), 64)) as Box<dyn LedgerStore>);
}

#[test]
fn group_commit_over_memory() {
    run_all(&|| Box::new(GroupCommit::new(MemoryStore::new(), 8)) as Box<dyn LedgerStore>);
}

#[test]
fn faulty_store_without_fault_is_transparent() {
    run_all(&|| Box::new(FaultyStore::new(MemoryStore::new())) as Box<dyn LedgerStore>);
}

/// Each factory call gets a fresh database; they are dropped when the test
/// binary's statics are (at exit, by `DROP DATABASE … WITH (FORCE)` in
/// `TestDb::drop`, run here explicitly at the end of the test).
#[test]
fn postgres_store() {
    let dbs = Mutex::new(Vec::new());
    run_all(&|| {
        let db = bonopay_ledger::TestDb::create().unwrap();
        let store = bonopay_ledger::PgStore::connect(&db.url, 8).unwrap();
        dbs.lock().unwrap().push(db);
        Box::new(store) as Box<dyn LedgerStore>
    });
    drop(dbs);
}

#[test]
fn group_commit_over_postgres() {
    let dbs = Mutex::new(Vec::new());
    run_all(&|| {
        let db = bonopay_ledger::TestDb::create().unwrap();
        let store = bonopay_ledger::PgStore::connect(&db.url, 8).unwrap();
        dbs.lock().unwrap().push(db);
        Box::new(GroupCommit::new(store, 64)) as Box<dyn LedgerStore>
    });
    drop(dbs);
}

#[test]
fn several_handles_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let stores: Vec<Arc<dyn LedgerStore>> = (0..3)
        .map(|_| Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn LedgerStore>)
        .collect();
    bonopay_ledger::conformance::concurrent_handles(&stores);
}

#[test]
fn several_handles_on_one_postgres_database() {
    // Three "instances", each with its own pool and head cache.
    let db = bonopay_ledger::TestDb::create().unwrap();
    let stores: Vec<Arc<dyn LedgerStore>> = (0..3)
        .map(|_| {
            Arc::new(bonopay_ledger::PgStore::connect(&db.url, 4).unwrap()) as Arc<dyn LedgerStore>
        })
        .collect();
    bonopay_ledger::conformance::concurrent_handles(&stores);
    drop(stores);
}
