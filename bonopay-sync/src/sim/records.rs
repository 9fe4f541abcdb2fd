//! What the simulator lets a test and a person see: every confirm it
//! performed ([`ConfirmRecord`], [`Simulator::double_confirms`]), its
//! counts ([`SimStats`]) and the DGI portal's view of an invoice
//! ([`PortalInvoice`]).

use super::*;

/// One confirm the simulator performed, recorded when it is committed
/// (so also when its response is then dropped): what a test compares with
/// what the client stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmRecord {
    /// Pending handle.
    pub uid: String,
    /// The SFE's invoice number.
    pub rn: String,
    /// Seller NIF.
    pub nif: String,
    /// `FC/TC TYPE`.
    pub counters: String,
    /// Code DEF/DGI.
    pub code: String,
    /// The e-MCF's NIM.
    pub nim: String,
    /// `dateTime`, as answered.
    pub date_time: String,
    /// `qrCode`, as answered.
    pub qr_code: String,
    /// Clock time of the confirm.
    pub at_ms: i64,
}

impl ConfirmRecord {
    /// The elements the CONFIRM answered (or would have, when dropped).
    #[must_use]
    pub fn elements(&self) -> DgiConfirmation {
        DgiConfirmation {
            code_def_dgi: self.code.clone(),
            counters: self.counters.clone(),
            nim: self.nim.clone(),
            date_time: self.date_time.clone(),
            qr_code: self.qr_code.clone(),
        }
    }
}

/// One invoice as the DGI's taxpayer portal shows it (`GET /_sim/portal`,
/// [`Simulator::portal`]): where a person looks up an invoice whose
/// CONFIRM answer was lost, since the e-MCF API reports finalised invoices
/// to nobody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortalInvoice {
    /// The e-MCF's handle.
    pub uid: String,
    /// Seller NIF.
    pub nif: String,
    /// The SFE's invoice number.
    pub rn: String,
    /// FV, FT, FA, EV, ET, EA.
    #[serde(rename = "type")]
    pub invoice_type: String,
    /// PENDING, CONFIRMED, CANCELLED or EXPIRED.
    pub status: DgiInvoiceState,
    /// When it was created (RFC 3339, Africa/Kinshasa).
    pub created_at: String,
    /// The total the e-MCF answered (CDF).
    #[serde(with = "crate::dgi::number")]
    pub total: Decimal,
    /// The VAT total the e-MCF answered (CDF).
    #[serde(with = "crate::dgi::number")]
    pub vtotal: Decimal,
    /// Once confirmed: the elements (`codeDEFDGI`, `counters`, `nim`,
    /// `dateTime`, `qrCode`); `null` otherwise.
    pub elements: Option<DgiConfirmation>,
}

/// What the simulator did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Invoices created (`POST` accepted).
    pub posted: u64,
    /// `POST`s refused (validation, NIF, pending limit, references).
    pub rejected: u64,
    /// Invoices confirmed.
    pub confirmed: u64,
    /// Invoices cancelled.
    pub cancelled: u64,
    /// Invoices expired unconfirmed.
    pub expired: u64,
    /// Invoices pending now.
    pub pending: u64,
    /// Calls answered with an injected error (nothing done).
    pub errors_injected: u64,
    /// Calls committed whose response was dropped.
    pub drops_injected: u64,
    /// `POST`s answered with wrong totals.
    pub wrong_totals_injected: u64,
    /// All of the above three.
    pub faults_injected: u64,
}

impl Simulator {
    /// Every confirm performed, in order, including those whose response
    /// was dropped.
    #[must_use]
    pub fn confirms(&self) -> Vec<ConfirmRecord> {
        lock(&self.state).confirms.clone()
    }

    /// The invoice numbers (`nif` + `rn`, shown as `rn`) confirmed more
    /// than once. Empty when the client confirms exactly once.
    #[must_use]
    pub fn double_confirms(&self) -> Vec<String> {
        let st = lock(&self.state);
        let mut seen: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for c in &st.confirms {
            *seen.entry((c.nif.as_str(), c.rn.as_str())).or_default() += 1;
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|((_, rn), _)| rn.to_owned())
            .collect()
    }

    /// Counts so far (expiring what is due first).
    #[must_use]
    pub fn stats(&self) -> SimStats {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let mut s = st.stats;
        s.pending = st.pending.len() as u64;
        s
    }

    /// The DGI portal's view of a NIF's invoices (all of them, or those
    /// with SFE number `rn`), oldest first, expiring what is due first.
    #[must_use]
    pub fn portal(&self, nif: &str, rn: Option<&str>) -> Vec<PortalInvoice> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let mut out: Vec<(i64, PortalInvoice)> = st
            .invoices
            .iter()
            .filter(|(_, r)| r.nif == nif && rn.is_none_or(|rn| r.rn == rn))
            .map(|(uid, r)| (r.created_ms, r.portal(uid)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.uid.cmp(&b.1.uid)));
        out.into_iter().map(|(_, p)| p).collect()
    }

    /// The portal's view of one invoice by uid, whatever its NIF (for
    /// tests; the e-MCF's own `GET /api/invoice/{uid}` answers pending
    /// invoices only).
    #[must_use]
    pub fn details(&self, uid: &str) -> Option<PortalInvoice> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        st.invoices.get(uid).map(|r| r.portal(uid))
    }
}
