#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod agent;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod dgi;
pub mod faulty;
pub mod health;
#[cfg(feature = "http")]
pub mod http;
pub mod outbox;
#[cfg(feature = "postgres")]
pub mod pg_outbox;
#[cfg(feature = "simulator")]
pub mod sim;
#[cfg(feature = "sqlite")]
pub mod sqlite_outbox;
pub mod webhook;
