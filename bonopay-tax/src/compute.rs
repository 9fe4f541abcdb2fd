//! The SFE computation (DGI spec §1.5, summarised in `dgi-emcf.md` §6).
//!
//! Every amount is a [`Decimal`]; every rounding names its strategy. The
//! exact algorithm, with the reason for each step, is in `docs/format.md`
//! ("Tax computation"); this file follows it line by line.

use std::collections::BTreeMap;

use bonopay_core::{
    Currency, ErrorCode, InvoiceRequest, Money, PaymentMethod, PriceMode, TaxGroup,
    ValidationError, ValidationErrors,
};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::rates::{RateTable, Treatment};

/// Source of the reference exchange rate (the BCC average rate) that an
/// invoice's own rate must be within ±1 % of. A trait, because where the
/// rate comes from (the DGI `/info/currencyRates`, a BCC feed, a config
/// file) is I/O, and this crate does none.
pub trait ReferenceRates {
    /// CDF per unit of `currency` on `date` (`YYYY-MM-DD`), if known.
    fn reference_rate(&self, currency: Currency, date: &str) -> Option<Decimal>;
}

/// No reference rates at all: every foreign-currency invoice is refused
/// with `reference_rate_unavailable`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReferenceRates;

impl ReferenceRates for NoReferenceRates {
    fn reference_rate(&self, _: Currency, _: &str) -> Option<Decimal> {
        None
    }
}

/// One rate per currency, whatever the date (for tests, the CLI, or a
/// server that refreshes it daily).
#[derive(Debug, Clone, Default)]
pub struct FixedReferenceRates(pub BTreeMap<Currency, Decimal>);

impl ReferenceRates for FixedReferenceRates {
    fn reference_rate(&self, currency: Currency, _: &str) -> Option<Decimal> {
        self.0.get(&currency).copied()
    }
}

/// How far an invoice's rate may stray from the reference: 1 %.
pub const RATE_TOLERANCE_PERCENT: Decimal = Decimal::ONE;

fn ser_money<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let mut v = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    v.rescale(2);
    s.collect_str(&v)
}

fn ser_rate<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let mut v = d.normalize();
    if v.scale() < 2 {
        v.rescale(2);
    }
    s.collect_str(&v)
}

/// One tax group's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupLine {
    /// Taxable base (includes specific tax, which raises the VAT base).
    #[serde(serialize_with = "ser_money")]
    pub base: Decimal,
    /// The group.
    pub group: TaxGroup,
    /// Rate in percent (0 for groups without invoiced VAT).
    #[serde(serialize_with = "ser_rate")]
    pub rate: Decimal,
    /// True when base + nearest-rounded tax missed the total by a cent and
    /// the tax took the remainder (the DGI "round the tax up" rule).
    pub rounding_adjusted: bool,
    /// Specific tax recorded on the group's items.
    #[serde(serialize_with = "ser_money")]
    pub specific_tax: Decimal,
    /// VAT.
    #[serde(serialize_with = "ser_money")]
    pub tax: Decimal,
    /// Group total; always `base + tax`.
    #[serde(serialize_with = "ser_money")]
    pub total: Decimal,
    /// How the group relates to VAT.
    pub treatment: Treatment,
}

/// Invoice totals. `ttc = ht + vat + specific_tax + levies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Excluding VAT, specific tax and levies.
    #[serde(serialize_with = "ser_money")]
    pub ht: Decimal,
    /// Group L levies.
    #[serde(serialize_with = "ser_money")]
    pub levies: Decimal,
    /// Specific tax.
    #[serde(serialize_with = "ser_money")]
    pub specific_tax: Decimal,
    /// Including everything.
    #[serde(serialize_with = "ser_money")]
    pub ttc: Decimal,
    /// VAT, group N included.
    #[serde(serialize_with = "ser_money")]
    pub vat: Decimal,
}

/// Amount paid per method, in the invoice currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PaymentTotal {
    /// Sum of the payments with that method.
    #[serde(serialize_with = "ser_money")]
    pub amount: Decimal,
    /// Method.
    pub method: PaymentMethod,
}

/// The two totals the DGI e-MCF computes and compares, in CDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DgiTotals {
    /// `total`: the invoice total in CDF.
    #[serde(serialize_with = "ser_money")]
    pub total: Decimal,
    /// `vtotal`: the VAT total in CDF.
    #[serde(serialize_with = "ser_money")]
    pub vtotal: Decimal,
}

/// Groups and totals converted to CDF, for foreign-currency invoices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Converted {
    /// Always CDF.
    pub currency: Currency,
    /// The invoice's exchange rate (CDF per unit).
    #[serde(serialize_with = "ser_rate")]
    pub exchange_rate: Decimal,
    /// Group lines in CDF.
    pub groups: Vec<GroupLine>,
    /// Totals in CDF.
    pub totals: Totals,
}

/// Everything the tax engine computes for an invoice.
///
/// Every result struct declares its fields in alphabetical order and holds
/// only strings, booleans, arrays and objects, so `serde_json` output is
/// already the RFC 8785 form that sealed invoices embed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[must_use]
pub struct TaxResult {
    /// For foreign-currency invoices: the same in CDF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdf: Option<Converted>,
    /// The invoice currency; `groups` and `totals` are in it.
    pub currency: Currency,
    /// The DGI `total` and `vtotal`, in CDF.
    pub dgi: DgiTotals,
    /// One line per group present, in group order A–N.
    pub groups: Vec<GroupLine>,
    /// Totals per payment method, in method order.
    pub payments: Vec<PaymentTotal>,
    /// Price mode of the invoice.
    pub price_mode: PriceMode,
    /// The rate table version used.
    pub rate_table: String,
    /// Invoice totals.
    pub totals: Totals,
}

/// Rounds half away from zero to 2 places and always carries scale 2, so
/// results print as `16.00`, never `16`.
fn rhu(d: Decimal) -> Decimal {
    let mut v = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    v.rescale(2);
    v
}

struct Errs(Vec<ValidationError>);

impl Errs {
    fn push(&mut self, path: impl Into<String>, code: ErrorCode, msg: impl Into<String>) {
        self.0.push(ValidationError::new(path, code, msg));
    }
    fn overflow(&mut self, what: &str) {
        self.push(
            "items",
            ErrorCode::OutOfRange,
            format!("{what} exceeds {}", Money::max()),
        );
    }
}

/// Accumulated exact amounts for one group.
#[derive(Default, Clone, Copy)]
struct Acc {
    sum: Decimal,
    specific: Decimal,
}

/// Computes groups and totals and checks every rule that needs them:
/// payments summing to the total, client-computed groups and totals, and
/// the exchange rate against the reference rate.
///
/// The request must come from [`bonopay_core::parse_invoice`] (or pass
/// [`bonopay_core::validate`]).
///
/// # Errors
/// Every problem found, with paths and codes in the same form as the core's
/// validation errors.
pub fn compute(
    req: &InvoiceRequest,
    table: &RateTable,
    reference: &dyn ReferenceRates,
) -> Result<TaxResult, ValidationErrors> {
    let mut errs = Errs(Vec::new());

    // 1. Exact sums per group, straight from unit prices.
    let mut acc: BTreeMap<TaxGroup, Acc> = BTreeMap::new();
    for (i, item) in req.items.iter().enumerate() {
        let Some(line) = item.unit_price.value().checked_mul(item.quantity.value()) else {
            errs.push(
                format!("items[{i}]"),
                ErrorCode::OutOfRange,
                "the line amount overflows",
            );
            continue;
        };
        if table.get(item.tax_group).is_none() {
            errs.push(
                format!("items[{i}].tax_group"),
                ErrorCode::UnknownTaxRate,
                format!(
                    "rate table {} has no entry for group {}",
                    table.version, item.tax_group
                ),
            );
            continue;
        }
        let a = acc.entry(item.tax_group).or_default();
        a.sum += line;
        if let Some(st) = item.specific_tax {
            a.specific += st.amount.value();
        }
    }
    if !errs.0.is_empty() {
        return Err(ValidationErrors(errs.0));
    }

    // 2. Round per group.
    let mut groups = Vec::with_capacity(acc.len());
    for (group, a) in &acc {
        let Some(spec) = table.get(*group) else {
            continue;
        };
        let line = group_line(
            *group,
            spec.treatment,
            spec.rate_percent,
            req.price_mode,
            *a,
        );
        match line {
            Some(l) if l.total > Money::max() => errs.overflow(&format!("group {group} total")),
            Some(l) => {
                if l.specific_tax > l.base {
                    errs.push(
                        "items",
                        ErrorCode::SpecificTaxExceedsBase,
                        format!(
                            "group {group}: specific tax {} exceeds the taxable base {}",
                            l.specific_tax, l.base
                        ),
                    );
                }
                groups.push(l);
            }
            None => errs.overflow(&format!("group {group}")),
        }
    }
    let totals = totals_of(&groups);
    if totals.ttc > Money::max() {
        errs.overflow("the invoice total");
    }
    if totals.ttc <= Decimal::ZERO && errs.0.is_empty() {
        errs.push(
            "items",
            ErrorCode::NotPositive,
            "the invoice total rounds to zero",
        );
    }

    // 3. Payments must sum to the total (in the invoice currency).
    let mut per_method: BTreeMap<PaymentMethod, Decimal> = BTreeMap::new();
    let mut paid = Decimal::ZERO;
    for p in &req.payments {
        *per_method.entry(p.method).or_default() += p.amount.value();
        paid += p.amount.value();
    }
    if paid != totals.ttc {
        errs.push(
            "payments",
            ErrorCode::PaymentsMismatch,
            format!(
                "payments sum to {} but the invoice total is {}",
                money(paid),
                money(totals.ttc)
            ),
        );
    }
    let payments = per_method
        .into_iter()
        .map(|(method, amount)| PaymentTotal {
            method,
            amount: rhu(amount),
        })
        .collect();

    // 4. Client-computed groups and totals.
    check_client_values(req, &groups, &totals, &mut errs);

    // 5. Foreign currency: rate check and conversion.
    let cdf = match (&req.exchange_rate, req.currency) {
        (Some(fx), cur) if cur != Currency::Cdf => {
            let rate = fx.rate.value();
            match reference.reference_rate(cur, &fx.date) {
                None => errs.push(
                    "exchange_rate.rate",
                    ErrorCode::ReferenceRateUnavailable,
                    format!("no reference rate known for {cur} on {}", fx.date),
                ),
                Some(r) if r <= Decimal::ZERO => errs.push(
                    "exchange_rate.rate",
                    ErrorCode::ReferenceRateUnavailable,
                    format!(
                        "the reference rate for {cur} on {} is not positive ({r})",
                        fx.date
                    ),
                ),
                Some(r) => {
                    let limit = r
                        .checked_mul(RATE_TOLERANCE_PERCENT)
                        .and_then(|x| x.checked_div(Decimal::ONE_HUNDRED));
                    let off = rate.checked_sub(r).map(|d| d.abs());
                    if !matches!((off, limit), (Some(o), Some(l)) if o <= l) {
                        errs.push(
                            "exchange_rate.rate",
                            ErrorCode::ExchangeRateOutOfTolerance,
                            format!("rate {rate} is more than {RATE_TOLERANCE_PERCENT}% away from the reference rate {r}"),
                        );
                    }
                }
            }
            match convert(&groups, rate) {
                Some(c) if c.totals.ttc <= Money::max() => Some(c),
                _ => {
                    errs.overflow("the invoice total in CDF");
                    None
                }
            }
        }
        _ => None,
    };

    if !errs.0.is_empty() {
        return Err(ValidationErrors(errs.0));
    }
    let dgi_src = cdf.as_ref().map_or(&totals, |c| &c.totals);
    let dgi = DgiTotals {
        total: dgi_src.ttc,
        vtotal: dgi_src.vat,
    };
    Ok(TaxResult {
        rate_table: table.version.clone(),
        price_mode: req.price_mode,
        currency: req.currency,
        groups,
        totals,
        payments,
        cdf,
        dgi,
    })
}

fn money(d: Decimal) -> String {
    let mut v = rhu(d);
    v.rescale(2);
    v.to_string()
}

/// Rounds one group. See `docs/format.md`, "Tax computation", step 2.
fn group_line(
    group: TaxGroup,
    treatment: Treatment,
    rate_percent: Decimal,
    mode: PriceMode,
    a: Acc,
) -> Option<GroupLine> {
    let r = rate_percent.checked_div(Decimal::ONE_HUNDRED)?;
    let specific = a.specific;
    let (base, tax, total, adjusted, rate) = match treatment {
        Treatment::Vat => match mode {
            PriceMode::Ttc => {
                // TTC: group total first, then the taxable base; the tax is
                // what remains, which is the nearest-rounded tax except when
                // the two roundings leave a cent, which the tax absorbs.
                let total = rhu(a.sum);
                let base = rhu(total.checked_div(Decimal::ONE + r)?);
                let tax = total - base;
                let nominal = rhu(base.checked_mul(r)?);
                (base, tax, total, tax != nominal, rate_percent)
            }
            PriceMode::Ht => {
                // HT: taxable base first (prices exclude specific tax, which
                // raises the base), then the total.
                let base = rhu(a.sum.checked_add(specific)?);
                let tax = rhu(base.checked_mul(r)?);
                (base, tax, base.checked_add(tax)?, false, rate_percent)
            }
        },
        Treatment::NoInvoicedVat => {
            let base = match mode {
                PriceMode::Ttc => rhu(a.sum),
                PriceMode::Ht => rhu(a.sum.checked_add(specific)?),
            };
            (base, Decimal::ZERO, base, false, Decimal::ZERO)
        }
        Treatment::Levy => {
            let total = rhu(a.sum);
            (total, Decimal::ZERO, total, false, Decimal::ZERO)
        }
        Treatment::SpecificVat => {
            let total = rhu(a.sum);
            (Decimal::ZERO, total, total, false, Decimal::ZERO)
        }
    };
    Some(GroupLine {
        group,
        rate,
        treatment,
        base: rhu(base),
        tax: rhu(tax),
        total: rhu(total),
        specific_tax: rhu(specific),
        rounding_adjusted: adjusted,
    })
}

fn totals_of(groups: &[GroupLine]) -> Totals {
    let mut t = Totals {
        ht: Decimal::ZERO,
        vat: Decimal::ZERO,
        specific_tax: Decimal::ZERO,
        levies: Decimal::ZERO,
        ttc: Decimal::ZERO,
    };
    for g in groups {
        t.ttc += g.total;
        t.vat += g.tax;
        t.specific_tax += g.specific_tax;
        if g.treatment == Treatment::Levy {
            t.levies += g.total;
        }
    }
    t.ht = t.ttc - t.vat - t.specific_tax - t.levies;
    Totals {
        ht: rhu(t.ht),
        vat: rhu(t.vat),
        specific_tax: rhu(t.specific_tax),
        levies: rhu(t.levies),
        ttc: rhu(t.ttc),
    }
}

/// Converts group lines to CDF: total and base are each converted and
/// rounded half-up, the tax is their difference, so `base + tax = total`
/// still holds in CDF.
fn convert(groups: &[GroupLine], rate: Decimal) -> Option<Converted> {
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let total = rhu(g.total.checked_mul(rate)?);
        let base = rhu(g.base.checked_mul(rate)?);
        let specific = rhu(g.specific_tax.checked_mul(rate)?);
        out.push(GroupLine {
            total,
            base,
            tax: rhu(total - base),
            specific_tax: specific,
            ..g.clone()
        });
    }
    let totals = totals_of(&out);
    Some(Converted {
        currency: Currency::Cdf,
        exchange_rate: rate,
        groups: out,
        totals,
    })
}

fn check_client_values(
    req: &InvoiceRequest,
    groups: &[GroupLine],
    totals: &Totals,
    errs: &mut Errs,
) {
    let mismatch = |errs: &mut Errs, path: String, sent: Decimal, computed: Decimal| {
        if sent != computed {
            errs.push(
                path,
                ErrorCode::ClientTotalMismatch,
                format!("client sent {}, computed {}", money(sent), money(computed)),
            );
        }
    };
    if let Some(client_groups) = &req.client_tax_groups {
        for (i, cg) in client_groups.iter().enumerate() {
            let path = format!("tax_groups[{i}]");
            match groups.iter().find(|g| g.group == cg.group) {
                None => errs.push(
                    format!("{path}.group"),
                    ErrorCode::ClientTotalMismatch,
                    format!("client sent group {} but no item is in it", cg.group),
                ),
                Some(g) => {
                    mismatch(errs, format!("{path}.base"), cg.base.value(), g.base);
                    mismatch(errs, format!("{path}.tax"), cg.tax.value(), g.tax);
                    mismatch(errs, format!("{path}.total"), cg.total.value(), g.total);
                }
            }
        }
        for g in groups {
            if !client_groups.iter().any(|cg| cg.group == g.group) {
                errs.push(
                    "tax_groups",
                    ErrorCode::ClientTotalMismatch,
                    format!(
                        "client left out group {} (computed total {})",
                        g.group,
                        money(g.total)
                    ),
                );
            }
        }
    }
    if let Some(ct) = &req.client_totals {
        let pairs = [
            ("totals.ht", ct.ht, totals.ht),
            ("totals.vat", ct.vat, totals.vat),
            ("totals.specific_tax", ct.specific_tax, totals.specific_tax),
            ("totals.ttc", ct.ttc, totals.ttc),
        ];
        for (path, sent, computed) in pairs {
            if let Some(sent) = sent {
                mismatch(errs, path.to_owned(), sent.value(), computed);
            }
        }
    }
}
