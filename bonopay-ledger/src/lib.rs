#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[cfg(feature = "testing")]
pub mod conformance;
mod entry;
mod error;
#[cfg(feature = "testing")]
mod faulty;
mod group;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
#[cfg(all(feature = "postgres", feature = "testing"))]
mod test_db;
mod verify;

pub use entry::{
    Counters, ENTRY_DOMAIN, Entry, EntryKind, EntryMeta, FiscalNumber, GENESIS_DOMAIN, Hash, Head,
    INVOICE_TYPES, IndexKey, PAYLOAD_DOMAIN, Prepared, entry_hash, genesis_hash, payload_hash,
};
pub use error::LedgerError;
#[cfg(feature = "testing")]
pub use faulty::{Fault, FaultyStore};
pub use group::GroupCommit;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{CHECKOUT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, PgConn, PgPool, PgStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, MIGRATIONS, SqliteOptions, SqliteStore};
pub use store::{EntryIter, LedgerStore, LedgerStoreExt, check_append};
#[cfg(all(feature = "postgres", feature = "testing"))]
pub use test_db::TestDb;
pub use verify::{
    ChainError, ChainOnly, ChainReport, EntryCheck, check_one, verify_chain, verify_chain_from,
    verify_store,
};
