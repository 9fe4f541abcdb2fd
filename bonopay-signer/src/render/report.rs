//! Reports as plain text for thermal printers: [`Report::text`].

use std::fmt::Write as _;

use rust_decimal::Decimal;
use serde_json::Value;

use super::Paper;
use super::layout::Block;
use crate::reports::{ArticleLine, GroupAmounts, Report, ReportKind, Stats, dec2};

/// Builds a report as layout blocks ([`super::layout`], shared with
/// receipts) and lays it out at the paper's width.
#[derive(Debug)]
pub(crate) struct Text {
    width: usize,
    blocks: Vec<Block>,
}

impl Text {
    pub(crate) fn new(paper: Paper) -> Self {
        Self {
            width: paper.columns(),
            blocks: Vec::new(),
        }
    }

    pub(crate) fn rule(&mut self, c: char) {
        self.blocks.push(Block::Rule(c));
    }

    pub(crate) fn center(&mut self, s: &str) {
        self.blocks.push(Block::Center(s.to_owned()));
    }

    pub(crate) fn line(&mut self, s: &str) {
        self.blocks.push(Block::Line(s.to_owned()));
    }

    /// `left` and `right`, right-aligned (on two lines if they do not fit).
    pub(crate) fn pair(&mut self, left: &str, right: &str) {
        self.blocks
            .push(Block::Pair(left.to_owned(), right.to_owned()));
    }

    pub(crate) fn finish(self) -> String {
        super::layout::to_text(&self.blocks, self.width)
    }
}

fn money(d: &Decimal) -> String {
    dec2::fmt(d)
}

/// Renders the statistics part of an X or Z report.
pub(crate) fn render_stats(t: &mut Text, s: &Stats) {
    t.rule('-');
    t.line("PAR TYPE DE FACTURE (CDF)");
    if s.by_type.is_empty() {
        t.line("  aucune facture");
    }
    for (ty, c) in &s.by_type {
        t.pair(&format!("{ty} x{}", c.count), &money(&c.amounts.ttc));
        t.pair("  HT (base taxable)", &money(&c.amounts.ht));
        t.pair("  TVA", &money(&c.amounts.vat));
        if !c.amounts.specific_tax.is_zero() {
            t.pair("  Taxe specifique", &money(&c.amounts.specific_tax));
        }
        if !c.amounts.levies.is_zero() {
            t.pair("  Prelevements", &money(&c.amounts.levies));
        }
    }
    t.rule('-');
    t.line("PAR GROUPE DE TAXE (CDF)");
    for (g, v) in &s.by_group {
        t.pair(&format!("{g} ventes base"), &money(&v.sales.base));
        t.pair(&format!("{g} ventes taxe"), &money(&v.sales.tax));
        t.pair(&format!("{g} ventes total"), &money(&v.sales.total));
        if v.credits != GroupAmounts::default() {
            t.pair(&format!("{g} avoirs base"), &money(&v.credits.base));
            t.pair(&format!("{g} avoirs taxe"), &money(&v.credits.tax));
            t.pair(&format!("{g} avoirs total"), &money(&v.credits.total));
        }
    }
    t.rule('-');
    t.line("PAIEMENTS");
    for (m, per) in &s.payments {
        for (cur, p) in per {
            t.pair(&format!("{m} {cur}"), &money(&p.paid));
            if !p.refunded.is_zero() {
                t.pair(&format!("  rembourse {cur}"), &money(&p.refunded));
            }
        }
    }
    t.rule('-');
    t.line("AVOIRS ET REDUCTIONS");
    if s.credit_notes.is_empty() {
        t.line("  aucun");
    }
    for (n, c) in &s.credit_notes {
        let label = if n == "RRR" {
            "RRR (reductions commerciales)".to_owned()
        } else {
            n.clone()
        };
        t.pair(&format!("{label} x{}", c.count), &money(&c.amounts.ttc));
    }
    t.pair(
        &format!("Ventes incompletes x{}", s.incomplete_sales.count),
        &money(&s.incomplete_sales.amount),
    );
    if s.by_currency.keys().any(|c| c != "CDF") {
        t.rule('-');
        t.line("PAR DEVISE (net)");
        for (cur, c) in &s.by_currency {
            t.pair(&format!("{cur} x{}", c.count), &money(&c.net));
            t.pair("  en CDF", &money(&c.cdf));
        }
    }
    t.rule('-');
    t.pair("Factures", &s.invoices.to_string());
    t.pair(
        "Premiere",
        s.first.as_ref().map_or("-", |n| n.counters.as_str()),
    );
    t.pair(
        "Derniere",
        s.last.as_ref().map_or("-", |n| n.counters.as_str()),
    );
    t.pair("NET HT", &money(&s.net.ht));
    t.pair("NET TVA", &money(&s.net.vat));
    t.pair("NET TTC", &money(&s.net.ttc));
}

/// Renders A-report lines.
pub(crate) fn render_articles(t: &mut Text, lines: &[ArticleLine]) {
    if lines.is_empty() {
        t.line("aucun article");
    }
    for l in lines {
        t.line(&format!("{} {}", l.code, l.name));
        let mut detail = String::new();
        let _ = write!(
            detail,
            "  {} {} {}% ({})",
            money(&l.unit_price),
            l.currency,
            l.rate,
            l.tax_group
        );
        t.line(&detail);
        let mut sold = l.sold;
        sold.rescale(3);
        let mut ret = l.returned;
        ret.rescale(3);
        t.pair("  vendu", &sold.to_string());
        t.pair("  retourne", &ret.to_string());
    }
}

impl Report {
    /// The report as plain text for a thermal printer.
    #[must_use]
    pub fn text(&self, paper: Paper) -> String {
        let b = &self.body;
        let s = |p: &str| {
            b.pointer(p)
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => "-".to_owned(),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| "-".to_owned())
        };
        let mut t = Text::new(paper);
        t.center(&s("/trade_name"));
        t.center(&format!("NIF {}", s("/merchant_nif")));
        if b.get("isf").is_some() {
            t.center(&format!("ISF {}", s("/isf")));
        }
        t.center(&format!("NID {}", s("/nid")));
        t.center(&format!("Point de vente {}", s("/outlet")));
        t.rule('=');
        let title = match self.kind {
            ReportKind::X => format!("RAPPORT X (Z suivant no {})", s("/next_z_number")),
            ReportKind::Z => format!("RAPPORT Z no {}", s("/z_number")),
            ReportKind::A if b.get("preview").is_some() => {
                format!("A-RAPPORT no {} (apercu)", s("/a_number"))
            }
            ReportKind::A => format!("A-RAPPORT no {}", s("/a_number")),
            ReportKind::Closing => format!(
                "CLOTURE {} {}",
                match s("/period/kind").as_str() {
                    "daily" => "JOURNALIERE",
                    "monthly" => "MENSUELLE",
                    _ => "ANNUELLE",
                },
                s("/period/label")
            ),
            ReportKind::IncompleteSale => "VENTE INCOMPLETE".to_owned(),
        };
        t.center(&title);
        t.line(&format!("Date {}", s("/timestamp")));
        if b.get("period").is_some() {
            t.pair("Periode depuis", &s("/period/since"));
            t.pair(
                "Ecritures",
                &format!("{}..{}", s("/period/from_seq"), s("/period/to_seq")),
            );
        }
        match self.kind {
            ReportKind::A => {
                t.rule('-');
                let lines: Vec<ArticleLine> =
                    serde_json::from_value(b["articles"].clone()).unwrap_or_default();
                render_articles(&mut t, &lines);
            }
            ReportKind::IncompleteSale => {
                t.pair("Caisse", &s("/pos_terminal_id"));
                t.pair("Caissier", &s("/cashier_id"));
                t.pair("Montant CDF", &s("/amount"));
                t.line(&format!("Motif: {}", s("/reason")));
            }
            _ => {
                let stats: Stats = serde_json::from_value(b["stats"].clone()).unwrap_or_default();
                render_stats(&mut t, &stats);
            }
        }
        t.rule('=');
        if let Some(sealed) = &self.sealed {
            t.pair("Ecriture no", &sealed.seq.to_string());
            if self.kind == ReportKind::Z {
                t.line(&format!("Tete a la cloture {}", s("/closing_head/hash")));
            }
            t.line(&format!("Empreinte {}", sealed.entry_hash));
        } else {
            t.center("NON SCELLE - NE CLOT PAS LA SESSION");
        }
        t.finish()
    }
}
