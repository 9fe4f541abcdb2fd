//! The thermal-printer receipt (58 mm = 32 columns, 80 mm = 48 columns),
//! as UTF-8 text, and the model the PDF receipt lays out.
//!
//! Every variant carries the mandatory mentions of the DGI specification
//! (`shared/spec/dgi-emcf.md` §2–3 and the SFE spec §1.2): the seller (NIF,
//! name, address and contact when configured), the ISF when set, the SFE
//! invoice number (`rn`, "Facture N°", kept by a duplicata, §1.15), the
//! operator (cashier) name, the client (type, name, NIF), every item, the
//! totals per tax group, the invoice total and the payments. Credit notes
//! print "FACTURE D'AVOIR" with their nature and the original's reference,
//! export types print "EXPORTATION", advances "FACTURE D'ACOMPTE".
//!
//! What the receipt says about security elements depends on the DGI's
//! certification of the sale ([`Certificate`]), because under the DGI's
//! rules the five security elements of a *facture normalisée* come from a
//! DGI fiscal device (the e-MCF or an MCF), never from the billing system:
//!
//! - [`Certificate::Dgi`]: a facture normalisée. Title "FACTURE
//!   NORMALISEE"; the DGI's elements exactly as returned, under the labels
//!   printed on DRC receipts ("CODE DEF/DGI", "DEF NID", "DEF Compteurs",
//!   "DEF Heure", and the QR text); "DUPLICATA" at the top and over the
//!   elements on a reprint (SFE §1.8). Bono Pay's own seal follows in a
//!   separate section under Bono Pay's name.
//! - [`Certificate::Provisional`]: certification requested but not
//!   obtained yet, or refused. A "TICKET PROVISOIRE" that says plainly it
//!   is not (yet) a facture normalisée, with Bono Pay's seal and its `BPV1:`
//!   QR under Bono Pay's labels only.
//! - [`Certificate::NotCertified`]: certification is off for the outlet. The
//!   plain mention "NON CERTIFIÉ DGI - sceau Bono Pay uniquement", with Bono
//!   Pay's seal and its `BPV1:` QR under Bono Pay's labels only.
//!
//! Bono Pay's seal (its signature's authentication code, its counters, its
//! NID and its `BPV1:` verification QR) is never printed under the DGI's
//! labels nor as an `RDCDEF01` QR: the strings of [`DGI_ONLY_MARKS`] appear
//! only in the [`Certificate::Dgi`] variant.
//!
//! Text only: the printer driver (ESC/POS code page, QR command) is the
//! POS's job; it draws [`Receipt::qr`], whose text the receipt prints.

use crate::SealedInvoice;
use crate::certification::{CertificationSource, DgiElements};
pub use crate::render::layout::Block;
use bonopay_core::{CreditNature, InvoiceRequest, InvoiceType};
use serde_json::Value;

/// What a receipt prints about a merchant besides its NIF.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantProfile {
    /// Company name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address of sale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Contact (phone, e-mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
}

/// Columns of a 58 mm roll.
pub const COLUMNS_58MM: usize = 32;
/// Columns of an 80 mm roll.
pub const COLUMNS_80MM: usize = 48;

/// Labels and the QR prefix that belong to the DGI's security elements.
/// They are printed only on a facture normalisée ([`Certificate::Dgi`]),
/// over the DGI's own elements: printing anything else under them would
/// pass a Bono Pay seal off as DGI elements.
pub const DGI_ONLY_MARKS: [&str; 5] = [
    "CODE DEF/DGI",
    "DEF NID",
    "DEF Compteurs",
    "DEF Heure",
    "RDCDEF01",
];

/// The reprint mention of a facture normalisée (SFE §1.8).
const DUPLICATA: &str = "*** DUPLICATA ***";
/// The heading of a ticket that is not a facture normalisée yet.
const PROVISIONAL: &str = "*** TICKET PROVISOIRE ***";
/// The mention of a sale on an outlet without DGI certification.
const NOT_CERTIFIED: &str = "NON CERTIFIÉ DGI - sceau Bono Pay uniquement";

/// What the receipt can say about the DGI's certification of the sale. The
/// caller reads it from the chain (a `certification` entry) and the outlet's
/// certification mode; the receipt only prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certificate<'a> {
    /// Certified by a DGI device: a facture normalisée. Its elements are
    /// printed under the DGI's labels, exactly as returned; `duplicata`
    /// after the first print (SFE §1.8).
    Dgi {
        /// The DGI's five elements.
        elements: &'a DgiElements,
        /// Who produced them (an operator copying them from the DGI portal
        /// is mentioned discreetly).
        source: CertificationSource,
        /// The SFE invoice number sent to the DGI.
        rn: &'a str,
        /// A reprint: prints "DUPLICATA" (the number stays the same).
        duplicata: bool,
    },
    /// Certification requested but not obtained yet (e-MCF unreachable or
    /// slow) or refused: a provisional ticket that says plainly it is NOT a
    /// facture normalisée yet (or, with `rejected`, that the DGI refused
    /// it, with the reason).
    Provisional {
        /// The SFE invoice number.
        rn: &'a str,
        /// Why it is not certified (the DGI's refusal message, or what the
        /// e-MCF link reported), when known.
        reason: Option<&'a str>,
        /// The DGI refused the invoice.
        rejected: bool,
    },
    /// Certification is off for this outlet (development/evaluation): Bono
    /// Pay's own seal with a plain "non certifié DGI" mention.
    NotCertified {
        /// The SFE invoice number.
        rn: &'a str,
    },
}

impl Certificate<'_> {
    /// The SFE invoice number, printed on every variant.
    #[must_use]
    pub fn rn(&self) -> &str {
        match self {
            Certificate::Dgi { rn, .. }
            | Certificate::Provisional { rn, .. }
            | Certificate::NotCertified { rn } => rn,
        }
    }

    /// What kind of document this certificate makes of the receipt.
    #[must_use]
    pub fn kind(&self) -> ReceiptKind {
        match self {
            Certificate::Dgi {
                duplicata: false, ..
            } => ReceiptKind::FactureNormalisee,
            Certificate::Dgi {
                duplicata: true, ..
            } => ReceiptKind::Duplicata,
            Certificate::Provisional {
                rejected: false, ..
            } => ReceiptKind::Provisional,
            Certificate::Provisional { rejected: true, .. } => ReceiptKind::Rejected,
            Certificate::NotCertified { .. } => ReceiptKind::NotCertified,
        }
    }
}

/// What document a receipt is, so renderers can title it, mark it and
/// name its file without reading its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    /// A facture normalisée, first print.
    FactureNormalisee,
    /// A reprint of a facture normalisée.
    Duplicata,
    /// A provisional ticket awaiting the DGI's certification.
    Provisional,
    /// A provisional ticket the DGI refused to certify.
    Rejected,
    /// A ticket of an outlet without DGI certification.
    NotCertified,
}

impl ReceiptKind {
    /// A short title for the document (window titles, e-mail subjects).
    #[must_use]
    pub const fn title(self) -> &'static str {
        match self {
            ReceiptKind::FactureNormalisee => "FACTURE NORMALISEE",
            ReceiptKind::Duplicata => "FACTURE NORMALISEE - DUPLICATA",
            ReceiptKind::Provisional => "TICKET PROVISOIRE",
            ReceiptKind::Rejected => "TICKET PROVISOIRE - REFUSÉ PAR LA DGI",
            ReceiptKind::NotCertified => "TICKET NON CERTIFIÉ DGI",
        }
    }

    /// An ASCII slug for file names.
    #[must_use]
    pub const fn slug(self) -> &'static str {
        match self {
            ReceiptKind::FactureNormalisee => "facture-normalisee",
            ReceiptKind::Duplicata => "facture-normalisee-duplicata",
            ReceiptKind::Provisional => "ticket-provisoire",
            ReceiptKind::Rejected => "ticket-refuse-dgi",
            ReceiptKind::NotCertified => "ticket-non-certifie",
        }
    }

    /// Whether the document is a facture normalisée (DGI elements printed).
    #[must_use]
    pub const fn is_facture_normalisee(self) -> bool {
        matches!(
            self,
            ReceiptKind::FactureNormalisee | ReceiptKind::Duplicata
        )
    }
}

/// The receipt of a sealed invoice as a width-independent list of
/// [`Block`]s: the one model behind `receipt.txt` (laid out at 32 or 48
/// columns) and `receipt.pdf` (laid out in a monospaced base-14 font, with
/// the QR code drawn after block [`Receipt::qr_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Receipt {
    /// The blocks, top to bottom.
    pub blocks: Vec<Block>,
    /// The QR payload graphic renderers draw: the DGI's `qrCode` as
    /// returned on a facture normalisée, Bono Pay's `BPV1:` verification
    /// payload otherwise. Its text is printed just before [`Receipt::qr_at`].
    pub qr: String,
    /// How many blocks come before the QR code: renderers draw it right
    /// under the section it belongs to (the DGI's elements, or Bono Pay's
    /// seal).
    pub qr_at: usize,
    /// What document this is (facture normalisée, duplicata, provisional,
    /// refused, not certified).
    pub kind: ReceiptKind,
    /// The SFE invoice number (`rn`), printed as "Facture N°".
    pub rn: String,
    /// The counters `FC/TC TYPE` for titles and file names: the DGI's
    /// `counters` on a facture normalisée, Bono Pay's otherwise.
    pub fiscal_number: String,
    /// The authentication code as printed, for titles and file names: the
    /// DGI's Code DEF/DGI exactly as returned on a facture normalisée, Bono
    /// Pay's code in groups of 4 otherwise.
    pub authentication_code_display: String,
}

impl Receipt {
    /// Lays the receipt out at `width` columns (at least 20): one string
    /// per line, without its newline.
    #[must_use]
    pub fn lines(&self, width: usize) -> Vec<String> {
        self.styled_lines(width).into_iter().map(|l| l.0).collect()
    }

    /// [`Receipt::lines`], each with whether it is a heading (a centred
    /// block), which graphic renderers print in bold.
    #[must_use]
    pub fn styled_lines(&self, width: usize) -> Vec<(String, bool)> {
        crate::render::layout::lay_out(&self.blocks, width.max(20))
    }

    /// [`Receipt::styled_lines`] in three parts, for graphic renderers that
    /// draw the QR code after block [`Receipt::qr_at`] and keep it on one
    /// page with the section it belongs to: the lines before that section
    /// (which starts after the last rule above the QR), the section's lines
    /// above the QR, and the lines below the QR.
    #[must_use]
    pub fn styled_parts(&self, width: usize) -> [Vec<(String, bool)>; 3] {
        let width = width.max(20);
        let at = self.qr_at.min(self.blocks.len());
        let section = self.blocks[..at]
            .iter()
            .rposition(|b| matches!(b, Block::Rule(_)))
            .map_or(0, |i| i + 1);
        [
            crate::render::layout::lay_out(&self.blocks[..section], width),
            crate::render::layout::lay_out(&self.blocks[section..at], width),
            crate::render::layout::lay_out(&self.blocks[at..], width),
        ]
    }

    fn line(&mut self, s: &str) {
        self.blocks.push(Block::Line(s.to_owned()));
    }

    fn center(&mut self, s: &str) {
        self.blocks.push(Block::Center(s.to_owned()));
    }

    fn lr(&mut self, left: &str, right: &str) {
        self.blocks
            .push(Block::Pair(left.to_owned(), right.to_owned()));
    }

    /// A label and a value: on one line, right-aligned, when the value is
    /// short enough for the narrowest roll; otherwise the value on its own
    /// (wrapped) line, so an element as long as the device made it never
    /// overflows the paper.
    fn labelled(&mut self, label: &str, value: &str) {
        let room = COLUMNS_58MM.saturating_sub(label.chars().count() + 1);
        if value.chars().count() <= room {
            self.lr(label, value);
        } else {
            self.line(label);
            self.line(value);
        }
    }

    fn rule(&mut self, c: char) {
        self.blocks.push(Block::Rule(c));
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn nature_label(n: CreditNature) -> &'static str {
    match n {
        CreditNature::Cor => "COR - Correction",
        CreditNature::Ran => "RAN - Annulation",
        CreditNature::Ram => "RAM - Retour de marchandises / après paiement",
        CreditNature::Rrr => "RRR - Rabais, remise, ristourne",
    }
}

fn type_label(t: InvoiceType) -> &'static str {
    match t {
        InvoiceType::Fv => "FACTURE DE VENTE",
        InvoiceType::Ft => "FACTURE D'ACOMPTE",
        InvoiceType::Fa => "FACTURE D'AVOIR",
        InvoiceType::Ev => "FACTURE DE VENTE - EXPORTATION",
        InvoiceType::Et => "FACTURE D'ACOMPTE - EXPORTATION",
        InvoiceType::Ea => "FACTURE D'AVOIR - EXPORTATION",
    }
}

/// A credit note's reference as printed: a bare 24-character code (Bono
/// Pay's, or a Code DEF/DGI given without separators) in groups of 4 for
/// reading aloud; anything else (`RRR`, a code that already has dashes)
/// exactly as given.
fn reference_display(reference: &str) -> String {
    if reference.len() == 24 && reference.bytes().all(|b| b.is_ascii_alphanumeric()) {
        crate::format_auth_code(reference)
    } else {
        reference.to_owned()
    }
}

/// `2026-11-28T04:06:44+01:00` → `28/11/2026 04:06:44 (UTC+01:00)`.
fn display_time(ts: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => format!("{} (UTC{})", t.format("%d/%m/%Y %H:%M:%S"), t.format("%:z")),
        Err(_) => ts.to_owned(),
    }
}

fn group_lines(out: &mut Receipt, groups: &Value, currency: &str) {
    out.line(&format!("TAXES PAR GROUPE ({currency})"));
    for g in groups.as_array().into_iter().flatten() {
        out.lr(
            &format!("{} {}%  base", s(g, "group"), s(g, "rate")),
            s(g, "base"),
        );
        out.lr("   TVA", s(g, "tax"));
        out.lr("   total", s(g, "total"));
    }
}

/// Bono Pay's own seal, under Bono Pay's name and labels only. With
/// `full` (no DGI elements on the receipt) it also prints the NID and the
/// `BPV1:` QR text, and the QR code is drawn right after it.
fn bono_pay_seal(out: &mut Receipt, sealed: &SealedInvoice, full: bool) {
    let el = &sealed.elements;
    out.center("SCEAU DE VÉRIFICATION BONO PAY");
    if full {
        out.line("Sceau de vérification de Bono Pay : il ne remplace pas les éléments de sécurité de la DGI.");
    } else {
        out.line("Sceau de vérification de Bono Pay, distinct des éléments de sécurité de la DGI ci-dessus.");
    }
    out.line("Code Bono Pay :");
    out.line(&el.authentication_code_display);
    if full {
        out.labelled("Appareil Bono Pay :", &el.fiscal_authority_id);
    }
    out.labelled("Compteurs Bono Pay :", &el.fiscal_number);
    out.line(&format!("Heure Bono Pay : {}", display_time(&el.timestamp)));
    if full {
        out.line("QR Bono Pay (vérification) :");
        out.line(&el.verification_qr);
        out.qr_at = out.blocks.len();
    }
}

/// Renders the receipt of a sealed invoice at `width` columns.
///
/// # Errors
/// As [`build`].
pub fn render_text(
    sealed: &SealedInvoice,
    merchant: &MerchantProfile,
    cert: &Certificate<'_>,
    width: usize,
) -> Result<String, String> {
    let mut text = String::new();
    for l in build(sealed, merchant, cert)?.lines(width) {
        text.push_str(&l);
        text.push('\n');
    }
    Ok(text)
}

/// The receipt model of a sealed invoice in the certification state
/// `cert`: every mandatory mention, and the security elements the state
/// allows (see the module docs).
///
/// # Errors
/// A message if the stored request does not read back (never for a
/// verified sealed invoice), or if DGI elements cannot be genuine (empty,
/// over-long, or with control characters; never for recorded ones).
pub fn build(
    sealed: &SealedInvoice,
    merchant: &MerchantProfile,
    cert: &Certificate<'_>,
) -> Result<Receipt, String> {
    if let Certificate::Dgi { elements, .. } = cert {
        elements.check()?;
    }
    let body = sealed.body_value().map_err(|e| e.to_string())?;
    let request_text = serde_json::to_string(&body["request"]).map_err(|e| e.to_string())?;
    let req: InvoiceRequest = bonopay_core::parse_invoice(&request_text)
        .map_err(|e| e.to_string())?
        .into_request();
    let tax = &body["tax"];
    let el = &sealed.elements;
    let kind = cert.kind();
    let (qr, fiscal_number, authentication_code_display) = match cert {
        Certificate::Dgi { elements, .. } => (
            elements.qr_code.clone(),
            elements.counters.clone(),
            elements.code_def_dgi.clone(),
        ),
        Certificate::Provisional { .. } | Certificate::NotCertified { .. } => (
            el.verification_qr.clone(),
            el.fiscal_number.clone(),
            el.authentication_code_display.clone(),
        ),
    };
    let mut out = Receipt {
        blocks: Vec::new(),
        qr,
        qr_at: 0,
        kind,
        rn: cert.rn().to_owned(),
        fiscal_number,
        authentication_code_display,
    };

    if kind == ReceiptKind::Duplicata {
        out.center(DUPLICATA);
    }

    // Seller.
    if let Some(name) = &merchant.name {
        out.center(name);
    }
    if let Some(address) = &merchant.address {
        out.center(address);
    }
    if let Some(contact) = &merchant.contact {
        out.center(contact);
    }
    out.center(&format!("NIF : {}", req.merchant_nif));
    if let Some(isf) = body["isf"].as_str() {
        out.center(&format!("ISF : {isf}"));
    }
    out.rule('=');

    // Title: what the document is.
    match cert {
        Certificate::Dgi { .. } => out.center("FACTURE NORMALISEE"),
        Certificate::Provisional {
            reason, rejected, ..
        } => {
            out.center(PROVISIONAL);
            if *rejected {
                out.center("REFUSÉE PAR LA DGI");
                out.center("CE N'EST PAS UNE FACTURE NORMALISEE");
            } else {
                out.center("CE N'EST PAS ENCORE UNE FACTURE NORMALISEE");
                out.center("En attente de certification par la DGI");
            }
            if let Some(reason) = reason {
                let label = if *rejected { "Motif du refus" } else { "Motif" };
                out.line(&format!("{label} : {reason}"));
            }
        }
        Certificate::NotCertified { .. } => {}
    }
    out.center(type_label(req.invoice_type));
    if req.invoice_type.is_export() {
        out.center("EXPORTATION");
    }
    if kind == ReceiptKind::NotCertified {
        out.center(NOT_CERTIFIED);
    }
    out.line(&format!("Facture N° : {}", cert.rn()));
    if let Some(cn) = &req.credit_note {
        out.line(&format!("Nature : {}", nature_label(cn.nature)));
        out.line(&format!(
            "Réf. facture d'origine : {}",
            reference_display(&cn.reference)
        ));
    }
    out.rule('=');
    out.line(&format!("Point de vente : {}", req.outlet_id));
    out.line(&format!("Caisse : {}", req.pos_terminal_id));
    out.line(&format!(
        "Opérateur : {} ({})",
        req.cashier.name, req.cashier.id
    ));
    let client = req.client.name.as_deref().unwrap_or("");
    out.line(&format!("Client ({}) : {client}", req.client.client_type));
    if let Some(nif) = &req.client.nif {
        out.line(&format!("NIF client : {nif}"));
    }
    if let Some(address) = &req.client.address {
        out.line(&format!("Adresse client : {address}"));
    }
    if let Some(contact) = &req.client.contact {
        out.line(&format!("Contact client : {contact}"));
    }
    if let Some(reference) = &req.client.exemption_reference {
        out.line(&format!("Réf. Exo. : {reference}"));
    }
    out.rule('-');

    // Items.
    let currency = req.currency.as_str();
    out.line(&format!("Prix {} en {currency}", req.price_mode));
    for it in &req.items {
        out.line(&it.name);
        let amount = bonopay_core::rounded_line_amount(it)
            .map(|d| format!("{d:.2}"))
            .unwrap_or_default();
        out.lr(
            &format!("  {} x {}", it.quantity, it.unit_price),
            &format!("{amount} {}", it.tax_group),
        );
        if let Some(st) = &it.specific_tax {
            out.lr("  taxe spécifique", &st.amount.to_string());
        }
        if let Some(m) = &it.price_modification {
            match &it.original_price {
                Some(p) => out.line(&format!("  {m} (prix initial {p})")),
                None => out.line(&format!("  {m}")),
            }
        }
    }
    out.rule('-');

    // Totals.
    group_lines(&mut out, &tax["groups"], currency);
    out.rule('-');
    let totals = &tax["totals"];
    out.lr(&format!("TOTAL HT ({currency})"), s(totals, "ht"));
    out.lr("TOTAL TVA", s(totals, "vat"));
    if s(totals, "specific_tax") != "0.00" {
        out.lr("TAXE SPECIFIQUE", s(totals, "specific_tax"));
    }
    if s(totals, "levies") != "0.00" {
        out.lr("PRELEVEMENTS", s(totals, "levies"));
    }
    out.lr(&format!("TOTAL TTC ({currency})"), s(totals, "ttc"));
    if let Some(rate) = &req.exchange_rate {
        out.line(&format!(
            "Taux : 1 {currency} = {} CDF ({})",
            rate.rate, rate.date
        ));
        group_lines(&mut out, &tax["cdf"]["groups"], "CDF");
        out.lr("TOTAL TTC (CDF)", s(&tax["cdf"]["totals"], "ttc"));
    }
    for p in tax["payments"].as_array().into_iter().flatten() {
        out.lr(&format!("  {}", s(p, "method")), s(p, "amount"));
    }
    for (line, text) in &req.comments {
        out.line(&format!("{line}: {text}"));
    }

    // Security elements.
    out.rule('=');
    match cert {
        Certificate::Dgi {
            elements,
            source,
            duplicata,
            ..
        } => {
            if *duplicata {
                out.center(DUPLICATA);
            }
            // The DGI's five elements, exactly as the device returned them.
            out.center("ELEMENTS DE SECURITE DE LA FACTURE NORMALISEE");
            out.line("CODE DEF/DGI :");
            out.line(&elements.code_def_dgi);
            out.labelled("DEF NID :", &elements.nim);
            out.labelled("DEF Compteurs :", &elements.counters);
            out.labelled("DEF Heure :", &elements.date_time);
            if *source == CertificationSource::Operator {
                out.line("Éléments saisis depuis le portail DGI");
            }
            out.line("QR :");
            out.line(&elements.qr_code);
            out.qr_at = out.blocks.len();
            out.rule('-');
            bono_pay_seal(&mut out, sealed, false);
        }
        Certificate::Provisional { rejected, .. } => {
            out.center(PROVISIONAL);
            out.center(if *rejected {
                "REFUSÉE PAR LA DGI"
            } else {
                "En attente de certification par la DGI"
            });
            bono_pay_seal(&mut out, sealed, true);
        }
        Certificate::NotCertified { .. } => {
            out.center(NOT_CERTIFIED);
            bono_pay_seal(&mut out, sealed, true);
        }
    }
    out.rule('=');
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::sync::Arc;

    use crate::{Fiscalizer, FiscalizerConfig, SoftwareSigner};
    use bonopay_ledger::MemoryStore;

    use super::super::receipt_pdf::{PageFormat, render_pdf};
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/invoice.json");

    /// A fresh fiscalizer over memory, with NID `BONOPAY-DEV-0001`.
    fn fiscalizer() -> Fiscalizer {
        Fiscalizer::new(
            Arc::new(MemoryStore::new()),
            Arc::new(SoftwareSigner::generate().unwrap()),
            FiscalizerConfig::new("BONOPAY-DEV-0001"),
        )
    }

    fn seal(f: &Fiscalizer, request: &str, key: &str) -> crate::Sealed {
        f.seal(
            &bonopay_core::parse_invoice(request).unwrap(),
            &key.parse().unwrap(),
        )
        .unwrap()
    }

    fn merchant() -> MerchantProfile {
        MerchantProfile {
            name: Some("Kin Trading SARL".into()),
            address: Some("12, av. du Commerce, Gombe, Kinshasa".into()),
            contact: Some("+243 81 234 5678".into()),
        }
    }

    fn dgi() -> DgiElements {
        DgiElements {
            code_def_dgi: "Q7TX-4KLM-9WPR-2ZHD-8NBC-5VYS".into(),
            counters: "64/117 FV".into(),
            nim: "CD01003075".into(),
            date_time: "05/12/2026 10:04:31".into(),
            qr_code: "RDCDEF01;CD01003075;Q7TX4KLM9WPR2ZHD8NBC5VYS;A1309334L;20261205100431".into(),
        }
    }

    const RN: &str = "kin-gombe-01/2026/42";

    fn flat(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Every text form of a receipt: laid out at 32 and 48 columns, and
    /// the model's own block texts.
    fn renderings(sealed: &SealedInvoice, cert: &Certificate<'_>) -> (Receipt, Vec<String>) {
        let model = build(sealed, &merchant(), cert).unwrap();
        let mut texts = Vec::new();
        for width in [COLUMNS_58MM, COLUMNS_80MM] {
            let text = render_text(sealed, &merchant(), cert, width).unwrap();
            for line in text.lines() {
                assert!(line.chars().count() <= width, "{width}: `{line}`");
            }
            assert_eq!(text, model.lines(width).join("\n") + "\n");
            texts.push(text);
        }
        let blocks: Vec<String> = model
            .blocks
            .iter()
            .map(|b| match b {
                Block::Line(t) | Block::Center(t) => t.clone(),
                Block::Pair(l, r) => format!("{l} {r}"),
                Block::Rule(c) => c.to_string(),
            })
            .collect();
        texts.push(blocks.join("\n"));
        (model, texts)
    }

    #[test]
    fn dgi_labels_only_on_a_facture_normalisee() {
        let sealed = &seal(&fiscalizer(), EXAMPLE, "k-1").invoice;
        let el = &sealed.elements;
        assert!(el.verification_qr.starts_with("BPV1:"));
        let d = dgi();
        for (cert, name) in [
            (
                Certificate::Dgi {
                    elements: &d,
                    source: CertificationSource::Emcf,
                    rn: RN,
                    duplicata: false,
                },
                "dgi",
            ),
            (
                Certificate::Dgi {
                    elements: &d,
                    source: CertificationSource::Operator,
                    rn: RN,
                    duplicata: true,
                },
                "dgi duplicata",
            ),
            (
                Certificate::Provisional {
                    rn: RN,
                    reason: None,
                    rejected: false,
                },
                "provisional",
            ),
            (
                Certificate::Provisional {
                    rn: RN,
                    reason: Some("e-MCF injoignable"),
                    rejected: false,
                },
                "provisional with reason",
            ),
            (
                Certificate::Provisional {
                    rn: RN,
                    reason: Some("Erreur 12 : l'avoir dépasse la facture d'origine"),
                    rejected: true,
                },
                "rejected",
            ),
            (Certificate::NotCertified { rn: RN }, "not certified"),
        ] {
            let (model, texts) = renderings(sealed, &cert);
            let is_dgi = matches!(cert, Certificate::Dgi { .. });
            let duplicata = matches!(
                cert,
                Certificate::Dgi {
                    duplicata: true,
                    ..
                }
            );
            let operator = matches!(
                cert,
                Certificate::Dgi {
                    source: CertificationSource::Operator,
                    ..
                }
            );
            assert_eq!(model.rn, RN);
            assert_eq!(model.kind, cert.kind());
            assert_eq!(model.kind.is_facture_normalisee(), is_dgi, "{name}");
            assert!(
                model.qr_at > 0 && model.qr_at < model.blocks.len(),
                "{name}"
            );
            if is_dgi {
                assert_eq!(model.qr, d.qr_code, "{name}");
                assert_eq!(model.fiscal_number, d.counters);
                assert_eq!(model.authentication_code_display, d.code_def_dgi);
            } else {
                assert_eq!(model.qr, el.verification_qr, "{name}");
                assert_eq!(model.fiscal_number, el.fiscal_number);
                assert_eq!(
                    model.authentication_code_display,
                    el.authentication_code_display
                );
            }
            for text in &texts {
                let flat = flat(text);
                let joined = text.replace('\n', "");
                for mark in DGI_ONLY_MARKS {
                    if is_dgi {
                        assert!(flat.contains(mark), "{name} lacks `{mark}`:\n{text}");
                    } else {
                        assert!(
                            !flat.contains(mark) && !joined.contains(mark),
                            "{name} prints `{mark}`:\n{text}"
                        );
                    }
                }
                assert_eq!(flat.contains("DUPLICATA"), duplicata, "{name}:\n{text}");
                assert!(flat.contains(&format!("Facture N° : {RN}")), "{name}");
                assert!(flat.contains("Kin Trading SARL") && flat.contains("Riz 25 kg"));
                assert!(flat.contains("TOTAL TTC (CDF) 70280.00"), "{name}:\n{text}");
                // Bono Pay's seal is always there, under its own name.
                assert!(flat.contains("SCEAU DE VÉRIFICATION BONO PAY"), "{name}");
                assert!(flat.contains(&el.authentication_code_display), "{name}");
                assert!(
                    flat.contains(&format!("Compteurs Bono Pay : {}", el.fiscal_number)),
                    "{name}:\n{text}"
                );
                assert!(flat.contains("Heure Bono Pay :"), "{name}");
                assert_eq!(
                    text.lines().any(|l| l.trim() == "FACTURE NORMALISEE"),
                    is_dgi,
                    "{name}: title"
                );
                if is_dgi {
                    // The DGI's elements, exactly as returned.
                    assert!(flat.contains("ELEMENTS DE SECURITE DE LA FACTURE NORMALISEE"));
                    assert!(flat.contains(&format!("CODE DEF/DGI : {}", d.code_def_dgi)));
                    assert!(flat.contains(&format!("DEF NID : {}", d.nim)), "{text}");
                    assert!(flat.contains(&format!("DEF Compteurs : {}", d.counters)));
                    assert!(flat.contains(&format!("DEF Heure : {}", d.date_time)));
                    assert!(joined.contains(&d.qr_code), "{text}");
                    // Bono Pay's BPV1 payload is not printed as text.
                    assert!(!joined.contains("BPV1:"), "{name}");
                    assert_eq!(
                        flat.contains("Éléments saisis depuis le portail DGI"),
                        operator,
                        "{name}: operator mention"
                    );
                } else {
                    assert!(joined.contains(&el.verification_qr), "{name}: BPV1 QR text");
                    assert!(
                        flat.contains(&format!("Appareil Bono Pay : {}", el.fiscal_authority_id)),
                        "{name}:\n{text}"
                    );
                    assert!(!flat.contains(&d.code_def_dgi) && !flat.contains(&d.nim));
                }
            }
            let flat0 = flat(&texts[0]);
            match cert {
                Certificate::Provisional {
                    rejected, reason, ..
                } => {
                    assert!(flat0.contains("TICKET PROVISOIRE"));
                    if rejected {
                        assert!(flat0.contains("REFUSÉE PAR LA DGI"));
                        assert!(flat0.contains("CE N'EST PAS UNE FACTURE NORMALISEE"));
                        assert!(flat0.contains(&format!("Motif du refus : {}", reason.unwrap())));
                    } else {
                        assert!(flat0.contains("CE N'EST PAS ENCORE UNE FACTURE NORMALISEE"));
                        assert!(flat0.contains("En attente de certification par la DGI"));
                        assert_eq!(
                            reason.is_some(),
                            flat0.contains("Motif : e-MCF injoignable")
                        );
                    }
                    assert!(!flat0.contains("NON CERTIFIÉ DGI"));
                }
                Certificate::NotCertified { .. } => {
                    assert_eq!(
                        flat0
                            .matches("NON CERTIFIÉ DGI - sceau Bono Pay uniquement")
                            .count(),
                        2,
                        "near the title and near the elements:\n{}",
                        texts[0]
                    );
                    assert!(flat0.contains("FACTURE DE VENTE"));
                    assert!(!flat0.contains("TICKET PROVISOIRE"));
                }
                Certificate::Dgi { .. } => {
                    assert!(!flat0.contains("TICKET PROVISOIRE"));
                    assert!(!flat0.contains("NON CERTIFIÉ"));
                    if duplicata {
                        assert_eq!(flat0.matches("DUPLICATA").count(), 2);
                        // The first line of the receipt.
                        assert_eq!(texts[0].lines().next().unwrap().trim(), DUPLICATA);
                    }
                }
            }

            // The PDF model: the QR drawn is the one the variant allows,
            // and the PDF text carries the same (non-)marks.
            for format in [PageFormat::A4, PageFormat::Roll80mm] {
                let pdf = render_pdf(&model, format).unwrap();
                assert_eq!(pdf, render_pdf(&model, format).unwrap(), "deterministic");
                let bytes = String::from_utf8_lossy(&pdf);
                for mark in DGI_ONLY_MARKS {
                    assert_eq!(bytes.contains(mark), is_dgi, "{name} PDF `{mark}`");
                }
                assert_eq!(bytes.contains("DUPLICATA"), duplicata, "{name} PDF");
                assert_eq!(
                    bytes.contains("TICKET PROVISOIRE"),
                    matches!(cert, Certificate::Provisional { .. }),
                    "{name} PDF"
                );
            }
        }
    }

    #[test]
    fn credit_note_references_keep_their_form() {
        assert_eq!(
            reference_display("ABCDEFGHIJKLMNOPQRSTUVWX"),
            "ABCD-EFGH-IJKL-MNOP-QRST-UVWX"
        );
        assert_eq!(
            reference_display("Q7TX-4KLM-9WPR-2ZHD-8NBC-5VYS"),
            "Q7TX-4KLM-9WPR-2ZHD-8NBC-5VYS"
        );
        assert_eq!(reference_display("RRR"), "RRR");

        // A credit note naming its original by Code DEF/DGI: the core
        // stores the reference without dashes, the receipt prints it in
        // groups of 4.
        let f = fiscalizer();
        let original = seal(&f, EXAMPLE, "k-1");
        let mut d = dgi();
        d.code_def_dgi = "Q7TX4KLM9WPR2ZHD8NBC5VYS".into();
        f.record_certification(
            "kin-gombe-01",
            original.seq,
            &d,
            CertificationSource::Emcf,
            None,
        )
        .unwrap();
        let mut credit: Value = serde_json::from_str(EXAMPLE).unwrap();
        credit["invoice_type"] = "FA".into();
        credit["credit_note"] =
            serde_json::json!({"reference": "Q7TX-4KLM-9WPR-2ZHD-8NBC-5VYS", "nature": "COR"});
        credit["items"] = serde_json::json!([{"code": "PAIN", "kind": "BIE", "name": "Pain", "unit_price": "500", "quantity": "2", "tax_group": "A"}]);
        credit["payments"] = serde_json::json!([{"method": "ESPECES", "amount": "1000"}]);
        let sealed = seal(&f, &credit.to_string(), "k-2").invoice;
        let text = render_text(
            &sealed,
            &merchant(),
            &Certificate::NotCertified { rn: RN },
            COLUMNS_80MM,
        )
        .unwrap();
        let flat = flat(&text);
        assert!(flat.contains("FACTURE D'AVOIR"), "{text}");
        assert!(flat.contains("Nature : COR - Correction"), "{text}");
        assert!(
            flat.contains("Réf. facture d'origine : Q7TX-4KLM-9WPR-2ZHD-8NBC-5VYS"),
            "{text}"
        );
    }

    #[test]
    fn long_elements_wrap_within_the_roll() {
        let sealed = &seal(&fiscalizer(), EXAMPLE, "k-1").invoice;
        let mut d = dgi();
        d.nim = "N".repeat(40);
        d.date_time = "2026-12-05T10:04:31.123456789+01:00 (heure du serveur)".into();
        let cert = Certificate::Dgi {
            elements: &d,
            source: CertificationSource::Emcf,
            rn: RN,
            duplicata: false,
        };
        let (_, texts) = renderings(sealed, &cert);
        assert!(texts[0].replace('\n', "").contains(&d.nim));
        // Elements that cannot be genuine are refused, not printed.
        d.qr_code = "a\nb".into();
        let cert = Certificate::Dgi {
            elements: &d,
            source: CertificationSource::Emcf,
            rn: RN,
            duplicata: false,
        };
        assert!(
            build(sealed, &merchant(), &cert)
                .unwrap_err()
                .contains("qrCode")
        );
    }
}
