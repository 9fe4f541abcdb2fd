//! Fault injection over a real [`DgiTransport`], for tests of the agent's
//! crash and timeout handling: make the next calls of one operation fail
//! before they reach the DGI, or reach it and lose the answer (the "crash
//! after sending" and "response lost" cases).

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::dgi::{
    DgiConfirmation, DgiInvoiceRequest, DgiPendingEcho, DgiStatus, DgiSubmitted, DgiTotals,
    DgiTransport, TransportError,
};

/// Which call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `GET /api/invoice`.
    Status,
    /// `POST /api/invoice`.
    Submit,
    /// `PUT …/CONFIRM`.
    Confirm,
    /// `PUT …/CANCEL`.
    Cancel,
    /// `GET /api/invoice/{uid}`.
    Details,
    /// `GET /api/info/{table}`.
    Info,
}

/// What happens to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// It never reaches the DGI (connection refused).
    Unreachable,
    /// It reaches the DGI and takes effect, and the answer is lost.
    LoseAnswer,
}

/// A transport with armed faults.
#[derive(Debug)]
pub struct FaultyTransport<T> {
    inner: T,
    armed: Mutex<VecDeque<(Op, Fault)>>,
}

impl<T: DgiTransport> FaultyTransport<T> {
    /// No fault armed.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            armed: Mutex::new(VecDeque::new()),
        }
    }

    /// The next call of `op` suffers `fault` (faults are used in order).
    pub fn arm(&self, op: Op, fault: Fault) {
        if let Ok(mut a) = self.armed.lock() {
            a.push_back((op, fault));
        }
    }

    fn take(&self, op: Op) -> Option<Fault> {
        let mut a = self.armed.lock().ok()?;
        let i = a.iter().position(|(o, _)| *o == op)?;
        a.remove(i).map(|(_, f)| f)
    }

    fn run<R>(
        &self,
        op: Op,
        call: impl FnOnce() -> Result<R, TransportError>,
    ) -> Result<R, TransportError> {
        match self.take(op) {
            None => call(),
            Some(Fault::Unreachable) => Err(TransportError::Unreachable(format!(
                "injected: {op:?} never sent"
            ))),
            Some(Fault::LoseAnswer) => {
                let _ = call();
                Err(TransportError::Unknown(format!(
                    "injected: {op:?} sent, answer lost"
                )))
            }
        }
    }
}

impl<T: DgiTransport> DgiTransport for FaultyTransport<T> {
    fn status(&self) -> Result<DgiStatus, TransportError> {
        self.run(Op::Status, || self.inner.status())
    }
    fn submit(&self, invoice: &DgiInvoiceRequest) -> Result<DgiSubmitted, TransportError> {
        self.run(Op::Submit, || self.inner.submit(invoice))
    }
    fn confirm(&self, uid: &str, totals: &DgiTotals) -> Result<DgiConfirmation, TransportError> {
        self.run(Op::Confirm, || self.inner.confirm(uid, totals))
    }
    fn cancel(&self, uid: &str) -> Result<(), TransportError> {
        self.run(Op::Cancel, || self.inner.cancel(uid))
    }
    fn details(&self, uid: &str) -> Result<DgiPendingEcho, TransportError> {
        self.run(Op::Details, || self.inner.details(uid))
    }
    fn info(&self, table: &str) -> Result<serde_json::Value, TransportError> {
        self.run(Op::Info, || self.inner.info(table))
    }
}
