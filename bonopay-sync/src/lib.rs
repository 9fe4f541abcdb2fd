#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

// ---- components: one module each (see the README) --------------------------
pub mod dgi;
pub mod mcf;
#[cfg(feature = "client")]
pub mod pos_queue;
pub mod retry;
#[cfg(feature = "simulator")]
pub mod sim;
pub mod webhook;
