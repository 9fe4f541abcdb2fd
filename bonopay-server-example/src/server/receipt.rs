//! The thermal-printer receipt (58 mm = 32 columns, 80 mm = 48 columns),
//! as UTF-8 text.
//!
//! It carries the mandatory mentions of the DGI specification (see
//! `shared/spec/dgi-emcf.md` §2–3 and the SFE spec §1.2): the seller (NIF,
//! name, address and contact when configured), the ISF when set, the
//! operator (cashier) name, the client (type, name, NIF), every item, the
//! totals per tax group, the invoice total, the payments, and the five
//! security elements under the labels printed on DRC receipts: "CODE
//! DEF/DGI", "DEF NID", "DEF Compteurs", "DEF Heure" and the QR payload.
//! Credit notes print "FACTURE D'AVOIR" with their nature and the original's
//! code, export types print "EXPORTATION", advances "FACTURE D'ACOMPTE".
//!
//! Text only: the printer driver (ESC/POS code page, QR command) is the
//! POS's job; `receipt.svg` gives the QR image.

use bonopay_core::{CreditNature, InvoiceRequest, InvoiceType};
use bonopay_signer::SealedInvoice;
pub use bonopay_signer::layout::Block;
use serde_json::Value;

use super::MerchantProfile;

/// Columns of a 58 mm roll.
pub const COLUMNS_58MM: usize = 32;
/// Columns of an 80 mm roll.
pub const COLUMNS_80MM: usize = 48;

/// The receipt of a sealed invoice as a width-independent list of
/// [`Block`]s: the one model behind `receipt.txt` (laid out at 32 or 48
/// columns) and `receipt.pdf` (laid out in a monospaced base-14 font, with
/// the QR code drawn).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Receipt {
    /// The blocks, top to bottom.
    pub blocks: Vec<Block>,
    /// The DGI QR payload (drawn as a QR code by graphic renderers).
    pub qr: String,
    /// The fiscal number (`FC/TC TYPE`), for titles and file names.
    pub fiscal_number: String,
    /// The authentication code as printed.
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
        bonopay_signer::layout::lay_out(&self.blocks, width.max(20))
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

/// Renders the receipt of a sealed invoice at `width` columns.
///
/// # Errors
/// A message if the stored request does not read back (never for a
/// verified sealed invoice).
pub fn render_text(
    sealed: &SealedInvoice,
    merchant: &MerchantProfile,
    width: usize,
) -> Result<String, String> {
    let mut text = String::new();
    for l in build(sealed, merchant)?.lines(width) {
        text.push_str(&l);
        text.push('\n');
    }
    Ok(text)
}

/// The receipt model of a sealed invoice: every mandatory mention.
///
/// # Errors
/// A message if the stored request does not read back (never for a
/// verified sealed invoice).
pub fn build(sealed: &SealedInvoice, merchant: &MerchantProfile) -> Result<Receipt, String> {
    let body = sealed.body_value().map_err(|e| e.to_string())?;
    let request_text = serde_json::to_string(&body["request"]).map_err(|e| e.to_string())?;
    let req: InvoiceRequest =
        bonopay_core::parse_invoice(&request_text).map_err(|e| e.to_string())?;
    let tax = &body["tax"];
    let el = &sealed.elements;
    let mut out = Receipt {
        blocks: Vec::new(),
        qr: el.qr.clone(),
        fiscal_number: el.fiscal_number.clone(),
        authentication_code_display: el.authentication_code_display.clone(),
    };

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
    out.center("FACTURE NORMALISEE");
    out.center(type_label(req.invoice_type));
    if req.invoice_type.is_export() {
        out.center("EXPORTATION");
    }
    if let Some(cn) = &req.credit_note {
        out.line(&format!("Nature : {}", nature_label(cn.nature)));
        let reference = if cn.reference == "RRR" {
            cn.reference.clone()
        } else {
            bonopay_signer::format_auth_code(&cn.reference)
        };
        out.line(&format!("Réf. facture d'origine : {reference}"));
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

    // The five security elements.
    out.rule('=');
    out.center("ELEMENTS DE SECURITE");
    out.line("CODE DEF/DGI :");
    out.line(&el.authentication_code_display);
    out.lr("DEF NID :", &el.fiscal_authority_id);
    out.lr("DEF Compteurs :", &el.fiscal_number);
    out.line(&format!("DEF Heure : {}", display_time(&el.timestamp)));
    out.line("QR :");
    out.line(&el.qr);
    out.rule('=');
    Ok(out)
}
