//! The physical MCF (DGI fiscal device, "DEF") on a serial line.
//!
//! The protocol is `../shared/spec/dgi-emcf.md` §4 "DRC physical MCF,
//! serial protocol"; each module states what it follows and what it
//! assumes. Layers, each testable without the one below:
//!
//! | Module | Holds |
//! |---|---|
//! | [`frame`] | the byte frame (SOH … ETX, BCC), an incremental decoder; pure |
//! | [`command`] | typed commands and replies, the 38h result as DGI elements, and the sans-I/O [`command::Session`] (NAK, SYN, errors) |
//! | [`link`] | the [`link::McfLink`] byte pipe and the [`link::McfClient`] driver: read timeouts, typed [`link::McfError`]s |
//! | `sim` (feature `mcf-sim`) | a simulated device: fiscal memory on disk, fault injection, a pseudo-terminal |

pub mod command;
pub mod frame;
pub mod link;
#[cfg(feature = "mcf-sim")]
pub mod sim;
