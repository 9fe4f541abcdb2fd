//! The e-MCF API as a synchronous, object-safe trait, and why a call
//! failed. The agent runs on its own thread over a [`DgiTransport`]; the
//! HTTP client ([`crate::dgi::http`]) implements it and the test decorator
//! (`crate::dgi::faulty`, feature `testing`) layers faults over it.

use std::fmt;

use serde_json::Value;

#[allow(unused_imports)] // for the docs
use super::wire::codes;
use super::wire::{
    DgiConfirmation, DgiInvoiceRequest, DgiPendingEcho, DgiStatus, DgiSubmitted, DgiTotals,
};

/// Why a DGI call failed. The distinction that matters is whether the
/// call may have taken effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The call may or may not have taken effect: a timeout, a connection
    /// lost after sending, a 5xx. Reconcile before acting again.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The call certainly did not reach the DGI (connection refused, DNS).
    #[error("DGI unreachable: {0}")]
    Unreachable(String),
    /// The token was refused (401/403).
    #[error("DGI refused the token: {0}")]
    Unauthorized(String),
    /// The DGI answered with an error body: it did not act.
    #[error("DGI error {code}: {desc}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// `errorCode`.
        code: String,
        /// `errorDesc`.
        desc: String,
    },
}

/// The e-MCF API of one taxpayer account (one NIF, one e-MCF, one token).
/// Synchronous and object-safe: the sync agent runs on its own thread, and
/// tests layer fault injection over the real HTTP implementation.
///
/// Every method reports a reply carrying `errorCode` as
/// [`TransportError::Rejected`], 2xx or not.
pub trait DgiTransport: fmt::Debug + Send + Sync {
    /// `GET /api/invoice`.
    ///
    /// # Errors
    /// [`TransportError`].
    fn status(&self) -> Result<DgiStatus, TransportError>;
    /// `POST /api/invoice`.
    ///
    /// # Errors
    /// [`TransportError`].
    fn submit(&self, invoice: &DgiInvoiceRequest) -> Result<DgiSubmitted, TransportError>;
    /// `PUT /api/invoice/{uid}/CONFIRM`.
    ///
    /// # Errors
    /// [`TransportError`].
    fn confirm(&self, uid: &str, totals: &DgiTotals) -> Result<DgiConfirmation, TransportError>;
    /// `PUT /api/invoice/{uid}/CANCEL`.
    ///
    /// # Errors
    /// [`TransportError`].
    fn cancel(&self, uid: &str) -> Result<(), TransportError>;
    /// `GET /api/invoice/{uid}`: the echo of a pending invoice; error 20
    /// ([`codes::UNKNOWN_OR_FINAL`]) for any other.
    ///
    /// # Errors
    /// [`TransportError`].
    fn details(&self, uid: &str) -> Result<DgiPendingEcho, TransportError>;
    /// `GET /api/info/{table}` (`taxGroups`, `invoiceTypes`, …), as sent.
    ///
    /// # Errors
    /// [`TransportError`].
    fn info(&self, table: &str) -> Result<Value, TransportError>;
}

impl<T: DgiTransport + ?Sized> DgiTransport for std::sync::Arc<T> {
    fn status(&self) -> Result<DgiStatus, TransportError> {
        (**self).status()
    }
    fn submit(&self, invoice: &DgiInvoiceRequest) -> Result<DgiSubmitted, TransportError> {
        (**self).submit(invoice)
    }
    fn confirm(&self, uid: &str, totals: &DgiTotals) -> Result<DgiConfirmation, TransportError> {
        (**self).confirm(uid, totals)
    }
    fn cancel(&self, uid: &str) -> Result<(), TransportError> {
        (**self).cancel(uid)
    }
    fn details(&self, uid: &str) -> Result<DgiPendingEcho, TransportError> {
        (**self).details(uid)
    }
    fn info(&self, table: &str) -> Result<Value, TransportError> {
        (**self).info(table)
    }
}
