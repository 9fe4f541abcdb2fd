//! Certification through the outlet's physical MCF: an invoice the sync
//! agent holds (the same [`DgiInvoiceRequest`] it would post to the
//! e-MCF) becomes the device's commands, and the 38h result becomes the
//! five security elements, bound into the ledger like the e-MCF's.
//!
//! **Exactly once.** A device finalizes what it is sent; there is no uid
//! to reconcile by. Three things make a sale finalized once and never
//! lost, whatever breaks:
//!
//! 1. *A journal* beside the data (a small JSON file, replaced atomically)
//!    names the invoice in progress **before** any byte of it is sent,
//!    and keeps the elements of the invoices finalized recently.
//! 2. *One invoice at a time* per device (a mutex), so the device's "last
//!    invoice" (C1h `lastNo`) is the one in progress whenever the journal
//!    says one is.
//! 3. *Status before a retry.* When a run breaks (timeout, line dropped,
//!    device power-cycled after 38h, our own crash), the next call asks
//!    the device's status first: if its last invoice is the one in
//!    progress, the elements are rebuilt from the status and nothing is
//!    sent again; otherwise any invoice left open is cancelled (38h `C`)
//!    and the invoice is sent whole.
//!
//! The SFE invoice number sent in C0h is the invoice's `rn`, unique per
//! sale, which is what the status compares.
//!
//! **Assumed mappings** (the spec's table gives the fields, not these
//! values; marked so in `dgi-emcf.md` terms \[assumed\]): the payment code
//! is the first letter of the e-MCF payment name (`ESPECES` → `E`); text
//! fields lose the characters that separate fields (`,`, tab, line feed);
//! a line's tax is computed from its group's rate (TTC: `a·r/(100+r)`, HT:
//! `a·r/100`), rounded half away from zero; the device checks the totals
//! at 38h against the SFE's `total` and `vtotal`.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::command::{ClientInfo, Command, FinalizeResult, Item, Limits, OpenInvoice};
use super::link::{McfClient, McfError, McfLink};
use crate::dgi::{DgiConfirmation, DgiInvoiceRequest, DgiTotals};

/// How many finalized invoices the journal remembers (their elements are
/// in the ledger by then; the journal only bridges a crash between the
/// device's answer and the ledger's write).
const JOURNAL_KEEP: usize = 512;

/// Opens the line to the device (a serial port, a pseudo-terminal).
pub type Opener = Box<dyn Fn() -> io::Result<Box<dyn McfLink>> + Send + Sync>;

/// Certifies an invoice through a DGI fiscal device. Object-safe and
/// synchronous, like the other seams of the agent.
pub trait DeviceCertifier: fmt::Debug + Send + Sync {
    /// The elements this device already gave `req` (finalized before a
    /// crash or a broken line), without starting anything new.
    ///
    /// # Errors
    /// [`CertifyError`] when the device cannot be asked.
    fn recall(&self, req: &DgiInvoiceRequest) -> Result<Option<DgiConfirmation>, CertifyError>;

    /// Certifies `req`, exactly once: a second call for the same invoice
    /// returns the first call's elements.
    ///
    /// # Errors
    /// [`CertifyError`]; see [`CertifyError::is_retryable`].
    fn certify(
        &self,
        req: &DgiInvoiceRequest,
        totals: &DgiTotals,
    ) -> Result<DgiConfirmation, CertifyError>;

    /// The device's id (NIM), once known, for logs and health.
    fn device_id(&self) -> Option<String>;
}

/// Why the device did not certify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertifyError {
    /// The line or the device failed; the invoice is not finalized (the
    /// status said so) or will be found by the next call.
    #[error("{0}")]
    Device(#[from] McfError),
    /// The invoice cannot be said in the device's protocol (an unknown
    /// tax group, a group the rate table does not list).
    #[error("the invoice cannot be sent to the MCF: {0}")]
    Unmappable(String),
    /// The device finalized an invoice whose elements cannot be rebuilt
    /// from its status: a person must read them from the device.
    #[error("the MCF finalized invoice {number} but its elements cannot be rebuilt: {why}")]
    Unrecoverable {
        /// The SFE invoice number.
        number: String,
        /// What is missing.
        why: String,
    },
    /// The journal could not be read or written: nothing was sent.
    #[error("the MCF journal: {0}")]
    Journal(String),
}

impl CertifyError {
    /// Whether a later call may succeed by itself.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Device(e) => e.is_retryable(),
            Self::Journal(_) => true,
            Self::Unmappable(_) | Self::Unrecoverable { .. } => false,
        }
    }
}

/// The journal's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Journal {
    /// The invoice (`rn`) whose commands may have reached the device.
    in_progress: Option<String>,
    /// Recently finalized invoices, oldest first.
    done: Vec<(String, DgiConfirmation)>,
}

impl Journal {
    fn load(path: &Path) -> Result<Self, CertifyError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| CertifyError::Journal(e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(CertifyError::Journal(e.to_string())),
        }
    }

    fn store(&self, path: &Path) -> Result<(), CertifyError> {
        let bytes = serde_json::to_vec(self).map_err(|e| CertifyError::Journal(e.to_string()))?;
        super::write_atomic(path, &bytes).map_err(|e| CertifyError::Journal(e.to_string()))
    }

    fn find(&self, rn: &str) -> Option<&DgiConfirmation> {
        self.done
            .iter()
            .rev()
            .find(|(n, _)| n == rn)
            .map(|(_, e)| e)
    }

    fn finish(&mut self, rn: &str, elements: DgiConfirmation) {
        self.in_progress = None;
        self.done.push((rn.to_owned(), elements));
        let extra = self.done.len().saturating_sub(JOURNAL_KEEP);
        self.done.drain(..extra);
    }
}

struct Inner {
    client: Option<McfClient<Box<dyn McfLink>>>,
    journal: Journal,
    nim: Option<String>,
}

/// [`DeviceCertifier`] over a line [`Opener`] gives, with its journal in a
/// file.
pub struct McfCertifier {
    open: Opener,
    journal_path: PathBuf,
    rates: BTreeMap<String, Decimal>,
    limits: Limits,
    read_timeout: Duration,
    inner: Mutex<Inner>,
}

impl fmt::Debug for McfCertifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McfCertifier")
            .field("journal", &self.journal_path)
            .finish_non_exhaustive()
    }
}

impl McfCertifier {
    /// A certifier that opens its line with `open` (at first use, and
    /// again after the line drops), keeps its journal at `journal_path`,
    /// and computes line taxes with `rates` (group code → percent, as
    /// `bonopay_tax::RateTable::invoiced_rates` gives them).
    ///
    /// # Errors
    /// [`CertifyError::Journal`] when the journal exists but is unreadable.
    pub fn new(
        open: Opener,
        journal_path: PathBuf,
        rates: BTreeMap<String, Decimal>,
    ) -> Result<Self, CertifyError> {
        let journal = Journal::load(&journal_path)?;
        Ok(Self {
            open,
            journal_path,
            rates,
            limits: Limits::default(),
            read_timeout: Duration::from_secs(5),
            inner: Mutex::new(Inner {
                client: None,
                journal,
                nim: None,
            }),
        })
    }

    /// How long to wait for each reply byte (default 5 s; SYN bytes restart
    /// the wait up to the busy limit).
    #[must_use]
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Resend and busy limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    fn client<'a>(
        &self,
        inner: &'a mut Inner,
    ) -> Result<&'a mut McfClient<Box<dyn McfLink>>, CertifyError> {
        if inner.client.is_none() {
            let link = (self.open)().map_err(|e| {
                CertifyError::Device(McfError::LineDropped {
                    kind: e.kind(),
                    message: e.to_string(),
                })
            })?;
            inner.client = Some(
                McfClient::new(link)
                    .with_limits(self.limits)
                    .with_read_timeout(self.read_timeout),
            );
        }
        inner
            .client
            .as_mut()
            .ok_or_else(|| CertifyError::Journal("no line".into()))
    }

    /// Settles an invoice left in progress: found finalized (its elements
    /// go to the journal), or cancelled on the device. After this, nothing
    /// is in progress.
    fn settle(&self, inner: &mut Inner) -> Result<(), CertifyError> {
        let Some(rn) = inner.journal.in_progress.clone() else {
            return Ok(());
        };
        let status = match self.client(inner)?.status() {
            Ok(s) => s,
            Err(e) => {
                inner.client = None;
                return Err(e.into());
            }
        };
        if let Some(nim) = status.first() {
            inner.nim = Some(nim.clone());
        }
        if status.get(9).is_some_and(|n| *n == rn) {
            let elements = rebuild(&status, &rn)?;
            inner.journal.finish(&rn, elements);
        } else {
            // Not finalized: whatever is open on the device is ours (one
            // invoice at a time); cancel it. A device with nothing open
            // refuses the cancel, which is the same outcome.
            if let Err(e) = self.client(inner)?.run(vec![Command::Cancel])
                && !matches!(e, McfError::DeviceError { .. })
            {
                inner.client = None;
                return Err(e.into());
            }
            inner.journal.in_progress = None;
        }
        inner.journal.store(&self.journal_path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The elements of the device's last invoice, from its C1h status
/// (`NIM,NIF,DT,TC,FVcount,FAcount,lastDT,lastType,lastCode,lastNo,…`).
fn rebuild(status: &[String], rn: &str) -> Result<DgiConfirmation, CertifyError> {
    let field = |i: usize| status.get(i).cloned().unwrap_or_default();
    let ft = field(7);
    let fc = match ft.as_str() {
        "FV" => field(4),
        "FA" => field(5),
        other => {
            return Err(CertifyError::Unrecoverable {
                number: rn.to_owned(),
                why: format!("the status gives no counter for type {other}"),
            });
        }
    };
    let result = FinalizeResult {
        fc,
        tc: field(3),
        ft,
        dt: field(6),
        mid: field(0),
        nif: field(1),
        fn_: rn.to_owned(),
        sig: field(8),
    };
    let elements = result.dgi_elements();
    elements
        .check()
        .map_err(|why| CertifyError::Unrecoverable {
            number: rn.to_owned(),
            why,
        })?;
    Ok(elements)
}

impl DeviceCertifier for McfCertifier {
    fn recall(&self, req: &DgiInvoiceRequest) -> Result<Option<DgiConfirmation>, CertifyError> {
        let mut inner = self.lock();
        if inner.journal.in_progress.as_deref() == Some(req.rn.as_str()) {
            self.settle(&mut inner)?;
        }
        Ok(inner.journal.find(&req.rn).cloned())
    }

    fn certify(
        &self,
        req: &DgiInvoiceRequest,
        totals: &DgiTotals,
    ) -> Result<DgiConfirmation, CertifyError> {
        let commands = invoice_commands(req, totals, &self.rates)?;
        let mut inner = self.lock();
        self.settle(&mut inner)?;
        if let Some(done) = inner.journal.find(&req.rn) {
            return Ok(done.clone());
        }
        // Write-ahead: the journal names the invoice before the device
        // sees a byte of it.
        inner.journal.in_progress = Some(req.rn.clone());
        inner.journal.store(&self.journal_path)?;
        let run = self.client(&mut inner)?.certify(commands);
        match run {
            Ok(result) => {
                inner.nim = Some(result.mid.clone());
                let elements = result.dgi_elements();
                elements
                    .check()
                    .map_err(|why| CertifyError::Unrecoverable {
                        number: req.rn.clone(),
                        why,
                    })?;
                inner.journal.finish(&req.rn, elements.clone());
                inner.journal.store(&self.journal_path)?;
                Ok(elements)
            }
            Err(e) => {
                // Broken mid-invoice: find out now whether the device
                // finalized it, so a refusal (E:) never leaves it open
                // and a lost 38h answer is picked up at once.
                if matches!(e, McfError::LineDropped { .. } | McfError::Timeout { .. }) {
                    inner.client = None;
                }
                match self.settle(&mut inner) {
                    Ok(()) => match inner.journal.find(&req.rn) {
                        Some(done) => Ok(done.clone()),
                        None => Err(e.into()),
                    },
                    // The device is still unreachable: the journal keeps
                    // the invoice in progress for the next call.
                    Err(_) => Err(e.into()),
                }
            }
        }
    }

    fn device_id(&self) -> Option<String> {
        self.lock().nim.clone()
    }
}

/// Text as a device field: no field or line separators.
fn field_text(s: &str) -> String {
    s.chars()
        .map(|c| if c == ',' || c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn round2(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// The device's commands for one invoice: C0h, C3h (a client with a NIF
/// or a name), one 31h per line, 33h, one 35h per payment, 38h with the
/// SFE's totals.
///
/// # Errors
/// [`CertifyError::Unmappable`] for a tax group that is not one letter
/// A–P or that `rates` does not list.
pub fn invoice_commands(
    req: &DgiInvoiceRequest,
    totals: &DgiTotals,
    rates: &BTreeMap<String, Decimal>,
) -> Result<Vec<Command>, CertifyError> {
    let credit = matches!(req.invoice_type.as_str(), "FA" | "EA");
    let currency = (!req.cur_code.is_empty() && req.cur_code != "CDF")
        .then(|| (req.cur_code.clone(), req.cur_rate));
    let mut out = vec![Command::OpenInvoice(OpenInvoice {
        operator_id: field_text(&req.operator.id),
        operator_name: field_text(&req.operator.name),
        nif: field_text(&req.nif),
        invoice_type: req.invoice_type.clone(),
        credit_note: credit.then(|| (field_text(&req.reference_type), field_text(&req.reference))),
        price_mode: req.mode.clone(),
        isf: field_text(&req.isf),
        number: field_text(&req.rn),
        currency,
    })];
    let c = &req.client;
    if !c.nif.is_empty() || !c.name.is_empty() {
        out.push(Command::Client(ClientInfo {
            kind: field_text(&c.client_type),
            nif: field_text(&c.nif),
            name: field_text(&c.name),
            contact: field_text(&c.contact),
            ..ClientInfo::default()
        }));
    }
    let ht = req.mode == "HT";
    for (i, it) in req.items.iter().enumerate() {
        let mut letters = it.tax_group.chars();
        let group = match (letters.next(), letters.next()) {
            (Some(g @ 'A'..='P'), None) => g,
            _ => {
                return Err(CertifyError::Unmappable(format!(
                    "item {i}: tax group `{}`",
                    it.tax_group
                )));
            }
        };
        let rate = *rates.get(&it.tax_group).ok_or_else(|| {
            CertifyError::Unmappable(format!("item {i}: no rate for group {group}"))
        })?;
        let line = it.price * it.quantity;
        let tax = if ht {
            round2(line * rate / Decimal::ONE_HUNDRED)
        } else {
            round2(line * rate / (Decimal::ONE_HUNDRED + rate))
        };
        out.push(Command::Item(Item {
            name: field_text(&it.name),
            code: (!it.code.is_empty()).then(|| field_text(&it.code)),
            item_type: it.kind.clone(),
            group,
            rate,
            tax,
            price: it.price,
            quantity: Some(it.quantity),
            specific_tax: (it.tax_specific_amount > Decimal::ZERO).then(|| {
                (
                    it.tax_specific_value.parse().unwrap_or(Decimal::ZERO),
                    it.tax_specific_amount,
                )
            }),
            original_price: it
                .original_price
                .map(|p| (p, field_text(&it.price_modification))),
        }));
    }
    out.push(Command::Subtotal);
    for p in &req.payment {
        let code = p.name.chars().next().map(String::from).unwrap_or_default();
        out.push(Command::Payment {
            code,
            amount: p.amount,
        });
    }
    out.push(Command::Finalize {
        ttc: totals.total,
        vat: totals.vtotal,
    });
    Ok(out)
}
