//! DGI sync: everything that takes a sealed invoice to the DGI's e-MCF
//! exactly once. One component, one module:
//!
//! | Module | Holds |
//! |---|---|
//! | `wire` (re-exported here) | the e-MCF request and reply types, exact decimals, error codes |
//! | `reply` (re-exported here) | reading replies: errors in 2xx bodies, decoding, the details echo, the tax table check |
//! | `request` (re-exported here) | the e-MCF request of a sealed invoice ([`map_sealed`]), read with the signer's typed reader |
//! | `transport` (re-exported here) | the [`DgiTransport`] trait and [`TransportError`] |
//! | [`http`] (feature `http`) | the e-MCF over HTTPS (reqwest, rustls) and token sources |
//! | [`outbox`] | the durable outbox ([`outbox::OutboxStore`]), backends `outbox::sqlite` and `outbox::postgres` side by side, and its conformance suite (feature `testing`) |
//! | [`agent`] | the sync agent: the state machine over outbox and transport |
//! | [`health`] | green / yellow / red per outlet |
//! | `faulty` (feature `testing`) | fault injection over any transport, for tests |
//!
//! # The e-MCF API
//!
//! Field names follow the field dictionary of `../shared/spec/dgi-emcf.md`
//! (DRC e-MCF, "e-MCF API 1.0" as public integrations use it against the
//! DGI test platform, §4 and §8). Where the spec leaves the wire open this
//! module makes a documented choice, marked as the spec marks it:
//!
//! - **Numbers** (\[I\]/\[G\], §8 "Numbers"): amounts, prices, quantities
//!   and rates travel as JSON numbers written exactly from the decimal
//!   (`1250.00`, `2.500`), never through a float and never as strings.
//!   Replies are read as numbers or strings alike, exactly.
//! - **Members always present** (\[G\], §8): every member the platform is
//!   seen to expect is sent, with `""` for absent text, `0` for an absent
//!   specific tax and `null` for an absent original price. A CDF invoice
//!   sends `curCode: "CDF"` and `curRate: 1`. Payments of a foreign-currency
//!   invoice carry `currencyCode`/`currencyRate` (\[I\]).
//! - **Errors in 2xx** (\[I\], three DRC clients): a reply carrying a
//!   non-empty `errorCode` is a refusal whatever its HTTP status, and is
//!   reported as [`TransportError::Rejected`]. `errorCode` `0`, `""` or
//!   `null` is no error (\[G\]).
//! - **`rn`** (SFE §1.15): the SFE invoice number,
//!   [`bonopay_signer::certification::sfe_number`], one uninterrupted
//!   series of invoices and credit notes per outlet and fiscal year.
//! - **`GET /api/invoice/{uid}`** (\[C\] Benin, §8 "Details"): answers a
//!   *pending* invoice by echoing its request (plus `errorCode`), and a
//!   finalised or unknown one with error 20. It carries no state and no
//!   totals, so recovery reads only `rn` from it ([`DgiPendingEcho`]).

pub mod agent;
#[cfg(feature = "testing")]
pub mod faulty;
pub mod health;
#[cfg(feature = "http")]
pub mod http;
pub mod outbox;
mod reply;
mod request;
mod transport;
mod wire;

/// How long one e-MCF call may take before it counts as lost (the
/// `dgi.timeout_secs` default of `config.json`). The DGI outbox's takeover
/// grace, and through [`crate::retry::takeover_after`] every other queue's
/// claim, derive from it.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub use reply::{decode_reply, error_in, pending_echo, read_reply, tax_group_differences};
pub use request::{MappingError, map_sealed};
pub use transport::{DgiTransport, TransportError};
pub use wire::{
    DgiClient, DgiConfirmation, DgiErrorBody, DgiInvoiceRequest, DgiInvoiceState, DgiItem,
    DgiOperator, DgiPayment, DgiPendingEcho, DgiStatus, DgiSubmitted, DgiTotals, PendingRef, codes,
    number, parse_dgi_time,
};
