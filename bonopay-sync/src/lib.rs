#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

// ---- components: one module each (see the README) --------------------------
pub mod dgi;
#[cfg(feature = "client")]
pub mod pos_queue;
#[cfg(feature = "simulator")]
pub mod sim;
pub mod webhook;

// ---- former module paths ------------------------------------------------------
// Kept so that dependents (the reference server, benches, fuzz) compile
// unchanged while they move to the component paths above.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use dgi::faulty;
#[cfg(feature = "http")]
#[doc(hidden)]
pub use dgi::http;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use dgi::outbox::conformance;
#[cfg(feature = "postgres")]
#[doc(hidden)]
pub use dgi::outbox::postgres as pg_outbox;
#[cfg(feature = "sqlite")]
#[doc(hidden)]
pub use dgi::outbox::sqlite as sqlite_outbox;
#[doc(hidden)]
pub use dgi::{agent, health, outbox};
#[cfg(feature = "client")]
#[doc(hidden)]
pub use pos_queue as client;
