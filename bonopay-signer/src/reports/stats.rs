//! Report statistics computed from ledger entries: the content of X and Z
//! reports, closings and A reports (DGI spec §5).
//!
//! Everything here is pure and streaming: an [`Stats`] or [`ArticleStats`]
//! accumulator is fed one entry at a time, in chain order, and holds only
//! totals (per type, per group, per payment method …), never the invoices.
//! A Z report over a million invoices therefore needs the memory of one.
//!
//! Accumulators are *additive*: [`Stats::merge`] of the statistics of two
//! adjacent ranges is the statistics of their union. The Fiscalizer uses
//! that to compute most of a Z report outside the outlet lock, and monthly
//! and yearly closings are the merge of the closings below them.
//!
//! Amounts are in CDF (the invoice's `tax.cdf` conversion for foreign
//! currencies), except payments and `by_currency`, which keep each
//! invoice's own currency next to its CDF value.

use std::collections::BTreeMap;

use bonopay_ledger::{Entry, EntryKind};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Money with exactly two decimals, as a JSON string (`"0.00"`).
pub(crate) mod dec2 {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn fmt(d: &Decimal) -> String {
        let mut v = *d;
        v.rescale(2);
        v.to_string()
    }

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&fmt(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Quantities with exactly three decimals, as a JSON string.
mod dec3 {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        let mut v = *d;
        v.rescale(3);
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A stored entry whose payload the report code cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {outlet}/{seq} ({kind}): {why}")]
pub struct UnreadableEntry {
    /// Outlet.
    pub outlet: String,
    /// Position.
    pub seq: u64,
    /// Entry kind.
    pub kind: String,
    /// What is wrong with it.
    pub why: String,
}

/// Invoice totals (the tax engine's `Totals`), summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amounts {
    /// Excluding VAT, specific tax and levies: the taxable base.
    #[serde(with = "dec2")]
    pub ht: Decimal,
    /// Group L levies.
    #[serde(with = "dec2")]
    pub levies: Decimal,
    /// Specific tax.
    #[serde(with = "dec2")]
    pub specific_tax: Decimal,
    /// Total including everything.
    #[serde(with = "dec2")]
    pub ttc: Decimal,
    /// VAT (group N included).
    #[serde(with = "dec2")]
    pub vat: Decimal,
}

impl Amounts {
    fn add(&mut self, o: &Amounts) {
        self.ht += o.ht;
        self.levies += o.levies;
        self.specific_tax += o.specific_tax;
        self.ttc += o.ttc;
        self.vat += o.vat;
    }

    fn sub(&mut self, o: &Amounts) {
        self.ht -= o.ht;
        self.levies -= o.levies;
        self.specific_tax -= o.specific_tax;
        self.ttc -= o.ttc;
        self.vat -= o.vat;
    }
}

/// A count and the amounts of what it counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counted {
    /// Totals.
    pub amounts: Amounts,
    /// How many.
    pub count: u64,
}

impl Counted {
    fn add(&mut self, o: &Counted) {
        self.amounts.add(&o.amounts);
        self.count += o.count;
    }
}

/// One tax group's base, tax and total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupAmounts {
    /// Taxable base.
    #[serde(with = "dec2")]
    pub base: Decimal,
    /// Specific tax on the group's items.
    #[serde(with = "dec2")]
    pub specific_tax: Decimal,
    /// Tax.
    #[serde(with = "dec2")]
    pub tax: Decimal,
    /// Total.
    #[serde(with = "dec2")]
    pub total: Decimal,
}

impl GroupAmounts {
    fn add(&mut self, o: &GroupAmounts) {
        self.base += o.base;
        self.specific_tax += o.specific_tax;
        self.tax += o.tax;
        self.total += o.total;
    }
}

/// A tax group's sales and credit notes, kept apart (the net is their
/// difference).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupStats {
    /// Credit notes (FA, EA), as positive amounts.
    pub credits: GroupAmounts,
    /// Sales (FV, FT, EV, ET).
    pub sales: GroupAmounts,
}

/// Paid (sales) and refunded (credit notes) through one payment method in
/// one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentStats {
    /// Received on sales.
    #[serde(with = "dec2")]
    pub paid: Decimal,
    /// Paid back on credit notes.
    #[serde(with = "dec2")]
    pub refunded: Decimal,
}

/// The invoices of one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencyStats {
    /// Net total (sales minus credit notes) converted to CDF.
    #[serde(with = "dec2")]
    pub cdf: Decimal,
    /// Invoices and credit notes in that currency.
    pub count: u64,
    /// Net total in that currency.
    #[serde(with = "dec2")]
    pub net: Decimal,
}

/// Abandoned sales.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncompleteStats {
    /// Declared value of the abandoned sales, in CDF.
    #[serde(with = "dec2")]
    pub amount: Decimal,
    /// How many.
    pub count: u64,
}

/// An invoice's place in the series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberRef {
    /// `FC/TC TYPE`.
    pub counters: String,
    /// Ledger position.
    pub seq: u64,
    /// Trusted time, RFC 3339.
    pub timestamp: String,
}

/// The statistics of X and Z reports and closings (DGI spec §5): totals
/// per invoice type and per tax group, counts, payments, credit notes by
/// nature (RRR is the commercial reductions), incomplete sales, the first
/// and last fiscal number, and totals per currency.
///
/// Fields are declared in alphabetical order and hold no JSON numbers
/// other than small integers, so `serde_json` output is the JCS form that
/// sealed reports embed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Per currency (`CDF`, `USD`).
    pub by_currency: BTreeMap<String, CurrencyStats>,
    /// Per tax group `A`–`N`, in CDF.
    pub by_group: BTreeMap<String, GroupStats>,
    /// Per invoice type `FV` … `EA`, in CDF (credit notes positive).
    pub by_type: BTreeMap<String, Counted>,
    /// Credit notes per nature (`COR`, `RAN`, `RAM`, `RRR`); `RRR`
    /// (rabais, remise, ristourne) are the commercial reductions.
    pub credit_notes: BTreeMap<String, Counted>,
    /// First invoice of the range.
    pub first: Option<NumberRef>,
    /// Abandoned sales recorded at the tills.
    pub incomplete_sales: IncompleteStats,
    /// Invoices and credit notes.
    pub invoices: u64,
    /// Last invoice of the range.
    pub last: Option<NumberRef>,
    /// Sales minus credit notes, in CDF.
    pub net: Amounts,
    /// Per payment method, then per currency.
    pub payments: BTreeMap<String, BTreeMap<String, PaymentStats>>,
}

// ---- what the report code reads from a sealed invoice ----------------------

#[derive(Deserialize)]
struct PayloadView {
    body: BodyView,
}

#[derive(Deserialize)]
struct BodyView {
    counters: String,
    timestamp: String,
    request: RequestView,
    tax: TaxView,
}

#[derive(Deserialize)]
struct RequestView {
    invoice_type: String,
    currency: String,
    #[serde(default)]
    credit_note: Option<CreditView>,
    items: Vec<ItemView>,
}

#[derive(Deserialize)]
struct CreditView {
    nature: String,
}

#[derive(Deserialize)]
struct ItemView {
    code: String,
    name: String,
    unit_price: Decimal,
    quantity: Decimal,
    tax_group: String,
}

#[derive(Deserialize)]
struct TaxView {
    #[serde(default)]
    cdf: Option<ConvertedView>,
    groups: Vec<GroupView>,
    payments: Vec<PaymentView>,
    totals: AmountsView,
}

#[derive(Deserialize)]
struct ConvertedView {
    groups: Vec<GroupView>,
    totals: AmountsView,
}

#[derive(Deserialize)]
struct GroupView {
    group: String,
    rate: String,
    base: Decimal,
    specific_tax: Decimal,
    tax: Decimal,
    total: Decimal,
}

#[derive(Deserialize)]
struct AmountsView {
    ht: Decimal,
    levies: Decimal,
    specific_tax: Decimal,
    ttc: Decimal,
    vat: Decimal,
}

impl AmountsView {
    fn amounts(&self) -> Amounts {
        Amounts {
            ht: self.ht,
            levies: self.levies,
            specific_tax: self.specific_tax,
            ttc: self.ttc,
            vat: self.vat,
        }
    }
}

#[derive(Deserialize)]
struct PaymentView {
    method: String,
    amount: Decimal,
}

#[derive(Deserialize)]
struct IncompleteView {
    body: IncompleteBody,
}

#[derive(Deserialize)]
struct IncompleteBody {
    #[serde(with = "dec2")]
    amount: Decimal,
}

fn unreadable(e: &Entry, why: impl std::fmt::Display) -> UnreadableEntry {
    UnreadableEntry {
        outlet: e.outlet.clone(),
        seq: e.seq,
        kind: e.kind.to_string(),
        why: why.to_string(),
    }
}

fn read_invoice(e: &Entry) -> Result<BodyView, UnreadableEntry> {
    serde_json::from_slice::<PayloadView>(&e.payload)
        .map(|p| p.body)
        .map_err(|err| unreadable(e, format!("sealed invoice: {err}")))
}

impl Stats {
    /// Adds one entry. Invoices, credit notes and incomplete sales count;
    /// reports, closings and markers are skipped.
    ///
    /// # Errors
    /// [`UnreadableEntry`] when a sealed invoice's payload does not parse.
    pub fn add(&mut self, e: &Entry) -> Result<(), UnreadableEntry> {
        match e.kind {
            EntryKind::Invoice | EntryKind::CreditNote => self.add_invoice(e),
            EntryKind::IncompleteSale => {
                let v: IncompleteView = serde_json::from_slice(&e.payload)
                    .map_err(|err| unreadable(e, format!("incomplete sale: {err}")))?;
                self.incomplete_sales.count += 1;
                self.incomplete_sales.amount += v.body.amount;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn add_invoice(&mut self, e: &Entry) -> Result<(), UnreadableEntry> {
        let b = read_invoice(e)?;
        let credit = e.kind == EntryKind::CreditNote;
        let (groups, totals) = match &b.tax.cdf {
            Some(c) => (&c.groups, c.totals.amounts()),
            None => (&b.tax.groups, b.tax.totals.amounts()),
        };
        let one = Counted {
            amounts: totals,
            count: 1,
        };
        self.by_type
            .entry(b.request.invoice_type.clone())
            .or_default()
            .add(&one);
        for g in groups {
            let line = GroupAmounts {
                base: g.base,
                specific_tax: g.specific_tax,
                tax: g.tax,
                total: g.total,
            };
            let s = self.by_group.entry(g.group.clone()).or_default();
            if credit {
                s.credits.add(&line);
            } else {
                s.sales.add(&line);
            }
        }
        for p in &b.tax.payments {
            let s = self
                .payments
                .entry(p.method.clone())
                .or_default()
                .entry(b.request.currency.clone())
                .or_default();
            if credit {
                s.refunded += p.amount;
            } else {
                s.paid += p.amount;
            }
        }
        let c = self
            .by_currency
            .entry(b.request.currency.clone())
            .or_default();
        c.count += 1;
        if credit {
            let nature = b
                .request
                .credit_note
                .as_ref()
                .map_or_else(|| "?".to_owned(), |n| n.nature.clone());
            self.credit_notes.entry(nature).or_default().add(&one);
            self.net.sub(&totals);
            c.net -= b.tax.totals.ttc;
            c.cdf -= totals.ttc;
        } else {
            self.net.add(&totals);
            c.net += b.tax.totals.ttc;
            c.cdf += totals.ttc;
        }
        self.invoices += 1;
        let r = NumberRef {
            counters: b.counters,
            seq: e.seq,
            timestamp: b.timestamp,
        };
        if self.first.is_none() {
            self.first = Some(r.clone());
        }
        self.last = Some(r);
        Ok(())
    }

    /// Adds the statistics of the range right after this one.
    pub fn merge(&mut self, later: &Stats) {
        for (k, v) in &later.by_currency {
            let c = self.by_currency.entry(k.clone()).or_default();
            c.cdf += v.cdf;
            c.count += v.count;
            c.net += v.net;
        }
        for (k, v) in &later.by_group {
            let g = self.by_group.entry(k.clone()).or_default();
            g.credits.add(&v.credits);
            g.sales.add(&v.sales);
        }
        for (k, v) in &later.by_type {
            self.by_type.entry(k.clone()).or_default().add(v);
        }
        for (k, v) in &later.credit_notes {
            self.credit_notes.entry(k.clone()).or_default().add(v);
        }
        if self.first.is_none() {
            self.first.clone_from(&later.first);
        }
        if later.last.is_some() {
            self.last.clone_from(&later.last);
        }
        self.incomplete_sales.count += later.incomplete_sales.count;
        self.incomplete_sales.amount += later.incomplete_sales.amount;
        self.invoices += later.invoices;
        self.net.add(&later.net);
        for (m, per) in &later.payments {
            let mine = self.payments.entry(m.clone()).or_default();
            for (cur, v) in per {
                let p = mine.entry(cur.clone()).or_default();
                p.paid += v.paid;
                p.refunded += v.refunded;
            }
        }
    }

    /// The JCS form (what sealed reports embed and verifiers compare).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// One article line of an A report: an article is a code sold at a unit
/// price in a tax group (the same code at two prices is two lines, so no
/// quantity is ever valued at the wrong price).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArticleLine {
    /// Article code.
    pub code: String,
    /// Name, as on the latest invoice in the range.
    pub name: String,
    /// Tax rate of the group, percent.
    pub rate: String,
    /// Quantity returned (credit notes).
    #[serde(with = "dec3")]
    pub returned: Decimal,
    /// Quantity sold.
    #[serde(with = "dec3")]
    pub sold: Decimal,
    /// Tax group.
    pub tax_group: String,
    /// Unit price, in the invoice currency.
    #[serde(with = "dec2")]
    pub unit_price: Decimal,
    /// Invoice currency.
    pub currency: String,
}

/// The A report accumulator: per article, quantity sold and returned.
/// Memory grows with the number of distinct articles, not of invoices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArticleStats {
    lines: BTreeMap<(String, String, String, String), ArticleLine>,
}

impl ArticleStats {
    /// Adds one entry (invoices and credit notes count; the rest is skipped).
    ///
    /// # Errors
    /// [`UnreadableEntry`] when a sealed invoice's payload does not parse.
    pub fn add(&mut self, e: &Entry) -> Result<(), UnreadableEntry> {
        if !e.kind.is_numbered() {
            return Ok(());
        }
        let b = read_invoice(e)?;
        let credit = e.kind == EntryKind::CreditNote;
        for it in b.request.items {
            let rate = b
                .tax
                .groups
                .iter()
                .find(|g| g.group == it.tax_group)
                .map(|g| g.rate.clone())
                .unwrap_or_default();
            let key = (
                it.code.clone(),
                dec2::fmt(&it.unit_price),
                it.tax_group.clone(),
                b.request.currency.clone(),
            );
            let line = self.lines.entry(key).or_insert_with(|| ArticleLine {
                code: it.code.clone(),
                name: it.name.clone(),
                rate: rate.clone(),
                returned: Decimal::ZERO,
                sold: Decimal::ZERO,
                tax_group: it.tax_group.clone(),
                unit_price: it.unit_price,
                currency: b.request.currency.clone(),
            });
            line.name = it.name;
            line.rate = rate;
            if credit {
                line.returned += it.quantity;
            } else {
                line.sold += it.quantity;
            }
        }
        Ok(())
    }

    /// The lines, ordered by code, price, group and currency.
    #[must_use]
    pub fn lines(&self) -> Vec<ArticleLine> {
        self.lines.values().cloned().collect()
    }
}
