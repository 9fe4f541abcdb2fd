//! Fixed-scale decimal newtypes.
//!
//! Money is never a float. Values arrive as decimal strings (or JSON
//! integers), are held as [`Decimal`] and leave as strings with a fixed number
//! of places, so `"2.5"` and `"2.50"` become the same canonical bytes.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// Why a decimal string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecimalError {
    /// Not of the form `-?digits(.digits)?`.
    Syntax,
    /// More significant decimal places than the field allows.
    TooManyDecimals,
    /// Larger in magnitude than the field allows.
    OutOfRange,
}

/// Parses a plain decimal string: optional `-`, digits, optional `.` and
/// digits. No exponent, no `+`, no spaces, no thousands separators: a POS
/// that sends `"1,5"` or `"1e3"` gets an error instead of a silent guess.
///
/// Trailing zeros are not significant, so `"2.500"` passes a scale of 2.
///
/// # Errors
/// [`DecimalError`] saying what is wrong with the text.
pub fn parse_decimal(
    text: &str,
    max_scale: u32,
    max_abs: Decimal,
) -> Result<Decimal, DecimalError> {
    let body = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(int) || frac.is_some_and(|f| !digits_ok(f)) {
        return Err(DecimalError::Syntax);
    }
    // Trailing fractional zeros are not significant; drop them before the
    // parser, whose scale stops at 28 places.
    let trimmed = match frac {
        Some(f) if f.ends_with('0') => {
            let keep = text.len() - (f.len() - f.trim_end_matches('0').len());
            text[..keep].trim_end_matches('.')
        }
        _ => text,
    };
    // Very long inputs are refused before they reach the parser.
    if trimmed.len() > crate::parse::MAX_DECIMAL_TEXT_LEN {
        return Err(DecimalError::OutOfRange);
    }
    let value = Decimal::from_str_exact(trimmed).map_err(|_| {
        if frac.is_some_and(|f| f.trim_end_matches('0').len() > 28) {
            DecimalError::TooManyDecimals
        } else {
            DecimalError::OutOfRange
        }
    })?;
    let value = value.normalize();
    if value.scale() > max_scale {
        return Err(DecimalError::TooManyDecimals);
    }
    if value.abs() > max_abs {
        return Err(DecimalError::OutOfRange);
    }
    Ok(value)
}

/// Renders `value` with exactly `scale` places. Callers guarantee the value
/// has no more places than that, so nothing is rounded here.
pub(crate) fn fixed(value: Decimal, scale: u32) -> String {
    let mut v = value;
    v.rescale(scale);
    // Rescale keeps the sign of negative zero; canonical text never shows "-0".
    if v.is_zero() {
        v.set_sign_positive(true);
    }
    v.to_string()
}

macro_rules! fixed_scale {
    ($(#[$meta:meta])* $name:ident, $scale:expr, $max:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(Decimal);

        impl $name {
            /// Number of decimal places in the canonical text.
            pub const SCALE: u32 = $scale;

            /// Largest magnitude accepted.
            #[must_use]
            pub fn max() -> Decimal {
                Decimal::from_str_exact($max).unwrap_or(Decimal::MAX)
            }

            /// Wraps a value, refusing one with too many places or out of range.
            ///
            /// # Errors
            /// [`DecimalError::TooManyDecimals`] or [`DecimalError::OutOfRange`].
            pub fn new(value: Decimal) -> Result<Self, DecimalError> {
                let v = value.normalize();
                if v.scale() > Self::SCALE {
                    return Err(DecimalError::TooManyDecimals);
                }
                if v.abs() > Self::max() {
                    return Err(DecimalError::OutOfRange);
                }
                Ok(Self(v))
            }

            /// Parses the text form (see [`parse_decimal`]).
            ///
            /// # Errors
            /// [`DecimalError`] saying what is wrong with the text.
            pub fn parse(text: &str) -> Result<Self, DecimalError> {
                parse_decimal(text, Self::SCALE, Self::max()).map(Self)
            }

            /// The value.
            #[must_use]
            pub fn value(self) -> Decimal {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&fixed(self.0, Self::SCALE))
            }
        }

        impl FromStr for $name {
            type Err = DecimalError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

fixed_scale!(
    /// An amount of money with at most 2 decimal places, in the invoice's
    /// currency. Canonical text always has exactly 2 places.
    Money,
    2,
    "999999999999999.99"
);

fixed_scale!(
    /// A quantity with at most 3 decimal places (DGI rule). Canonical text
    /// always has exactly 3 places.
    Quantity,
    3,
    "999999999.999"
);

fixed_scale!(
    /// An exchange rate: CDF per unit of the foreign currency, at most 6
    /// places. Canonical text always has exactly 6 places.
    ExchangeRate,
    6,
    "999999999.999999"
);

fixed_scale!(
    /// A percentage with at most 2 places (for example a specific-tax rate
    /// of `5.00` meaning 5 %).
    Percent,
    2,
    "100"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_does_not_matter() {
        assert_eq!(Money::parse("2.5").unwrap(), Money::parse("2.50").unwrap());
        assert_eq!(Money::parse("2.500").unwrap().to_string(), "2.50");
        assert_eq!(Money::parse("002.5").unwrap().to_string(), "2.50");
        assert_eq!(Quantity::parse("1").unwrap().to_string(), "1.000");
        assert_eq!(Money::parse("-0.00").unwrap().to_string(), "0.00");
        let many_zeros = format!("1.{}", "0".repeat(40));
        assert_eq!(Quantity::parse(&many_zeros).unwrap().to_string(), "1.000");
        assert_eq!(Quantity::parse("7.").unwrap_err(), DecimalError::Syntax);
    }

    #[test]
    fn bad_text_is_refused() {
        for bad in [
            "", "-", ".5", "5.", "1e3", "+1", " 1", "1,5", "0x10", "1.2.3", "١",
        ] {
            assert_eq!(Money::parse(bad), Err(DecimalError::Syntax), "{bad:?}");
        }
        assert_eq!(Money::parse("1.005"), Err(DecimalError::TooManyDecimals));
        assert_eq!(
            Quantity::parse("1.0005"),
            Err(DecimalError::TooManyDecimals)
        );
        assert_eq!(
            Money::parse("1000000000000000"),
            Err(DecimalError::OutOfRange)
        );
        assert_eq!(Money::parse(&"9".repeat(80)), Err(DecimalError::OutOfRange));
    }
}
