#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[cfg(feature = "conformance")]
pub mod conformance;
mod entry;
mod error;
mod faulty;
mod group;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod verify;

pub use entry::{
    Counters, ENTRY_DOMAIN, Entry, EntryKind, EntryMeta, FiscalNumber, GENESIS_DOMAIN, Hash, Head,
    INVOICE_TYPES, IndexKey, PAYLOAD_DOMAIN, Prepared, entry_hash, genesis_hash, payload_hash,
};
pub use error::LedgerError;
pub use faulty::{Fault, FaultyStore};
pub use group::GroupCommit;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{CHECKOUT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, PgConn, PgPool, PgStore, TestDb};
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, MIGRATIONS, SqliteOptions, SqliteStore};
pub use store::{EntryIter, LedgerStore, LedgerStoreExt, check_append};
pub use verify::{
    ChainError, ChainOnly, ChainReport, EntryCheck, check_one, verify_chain, verify_chain_from,
    verify_store,
};
