//! `bonopay totals`: invoice JSON on stdin, computed taxes and totals on
//! stdout.

use std::path::PathBuf;
use std::str::FromStr;

use bonopay_core::{Currency, DecimalError, ExchangeRate};
use bonopay_tax::{FixedReferenceRates, RateTable};
use rust_decimal::Decimal;

use super::Failure;

/// Options of `bonopay totals`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// Rate table to use instead of the built-in DGI 2025 table (JSON, see
    /// `RateTable::from_json`).
    #[arg(long, value_name = "FILE")]
    pub rate_table: Option<PathBuf>,
    /// Reference exchange rate (CDF per unit) that a foreign-currency
    /// invoice's own rate must be within 1 % of, e.g. `USD=2850.50`.
    /// Repeatable, one per currency. Without it, foreign-currency invoices
    /// are refused with `reference_rate_unavailable`.
    #[arg(long = "reference-rate", value_name = "CUR=RATE")]
    pub reference_rates: Vec<ReferenceRate>,
}

/// One `--reference-rate CUR=RATE` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceRate {
    /// The foreign currency.
    pub currency: Currency,
    /// CDF per unit of it, exact decimal.
    pub rate: Decimal,
}

impl FromStr for ReferenceRate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (cur, rate) = s
            .split_once('=')
            .ok_or_else(|| format!("expected CUR=RATE, e.g. USD=2850.50, got `{s}`"))?;
        let currency = match Currency::from_code(cur) {
            Some(Currency::Cdf) => {
                return Err("CDF is the base currency: it has no reference rate".to_owned());
            }
            Some(c) => c,
            None => {
                return Err(format!(
                    "unknown currency `{cur}`; expected one of {}",
                    Currency::codes()
                ));
            }
        };
        // Same grammar and limits as an invoice's own exchange rate: a plain
        // decimal, at most 6 places, no exponent, never a float.
        let rate = ExchangeRate::parse(rate)
            .map_err(|e| {
                let why = match e {
                    DecimalError::TooManyDecimals => "more than 6 decimal places",
                    DecimalError::OutOfRange => "out of range",
                    _ => "not a plain decimal",
                };
                format!("invalid rate `{rate}`: {why}; expected a decimal like 2850.50")
            })?
            .value();
        if rate <= Decimal::ZERO {
            return Err(format!("the rate must be greater than zero, got `{s}`"));
        }
        Ok(ReferenceRate { currency, rate })
    }
}

/// Builds the reference-rate source from the options, refusing a currency
/// given twice.
fn reference_rates(args: &Args) -> Result<FixedReferenceRates, Failure> {
    let mut rates = FixedReferenceRates::default();
    for r in &args.reference_rates {
        if rates.0.insert(r.currency, r.rate).is_some() {
            return Err(Failure::Message(format!(
                "--reference-rate given twice for {}",
                r.currency
            )));
        }
    }
    Ok(rates)
}

/// Loads the rate table named by `--rate-table`, or the built-in one.
fn rate_table(args: &Args) -> Result<RateTable, Failure> {
    let Some(path) = &args.rate_table else {
        return Ok(RateTable::dgi_2025());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Message(format!("cannot read rate table {}: {e}", path.display())))?;
    RateTable::from_json(&text).map_err(|e| Failure::Message(format!("{}: {e}", path.display())))
}

/// Runs the full check on `input` and returns the [`bonopay_tax::TaxResult`]
/// as pretty JSON followed by a newline.
///
/// # Errors
/// [`Failure::Invalid`] with every problem in the invoice;
/// [`Failure::Message`] when the rate table cannot be loaded or an option
/// is inconsistent.
pub fn run(args: &Args, input: &str) -> Result<String, Failure> {
    let table = rate_table(args)?;
    let reference = reference_rates(args)?;
    let (_, result) = bonopay_tax::check_invoice(input, &table, &reference)?;
    let mut text = serde_json::to_string_pretty(&result)
        .map_err(|e| Failure::Message(format!("cannot serialize the result: {e}")))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn reference_rate_parses_exactly() {
        let r: ReferenceRate = "USD=2850.50".parse().unwrap();
        assert_eq!(r.currency, Currency::Usd);
        assert_eq!(r.rate, Decimal::new(285_050, 2));
    }

    #[test]
    fn bad_reference_rates_are_refused() {
        for bad in [
            "USD",
            "USD=",
            "USD=abc",
            "USD=1e3",
            "USD=-5",
            "USD=0",
            "USD=1.1234567",
            "EUR=1",
            "CDF=1",
            "=5",
        ] {
            assert!(bad.parse::<ReferenceRate>().is_err(), "{bad}");
        }
    }
}
