//! The e-MCF wire format: the request and reply types with the choices
//! the spec leaves open (see [`crate::dgi`]), the exact decimal writing and
//! reading ([`number`]), the e-MCF's times and its error codes. Pure data:
//! no I/O, so the HTTP transport, the simulator and the fuzz targets share
//! one definition.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The security elements the DGI returns on CONFIRM. The type is the
/// signer crate's, which binds them into the ledger.
pub use bonopay_signer::certification::DgiElements as DgiConfirmation;

/// Writes a decimal as a JSON number with exactly its digits (no float).
pub mod number {
    use super::{Decimal, Deserialize, Deserializer, Serializer, Value};

    /// Serializes `d` as a JSON number literal.
    ///
    /// # Errors
    /// The serializer's error.
    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        use serde::Serialize as _;
        // The decimal's own text (`12.50` stays `12.50`), `-0` as `0`.
        let text = if d.is_zero() {
            let mut z = Decimal::ZERO;
            z.rescale(d.scale());
            z.to_string()
        } else {
            d.to_string()
        };
        let raw =
            serde_json::value::RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }

    /// Reads a decimal from a JSON number or string, exactly: the number's
    /// own text is parsed, never a float (so `1160.00` keeps its scale
    /// and a 20-digit amount its digits). Deserialize from JSON text
    /// (`from_str`, `from_slice`), not from a `Value`, which has already
    /// turned numbers into floats.
    ///
    /// # Errors
    /// When the value is neither, or not a decimal.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        decimal_of_raw(raw.get())
            .ok_or_else(|| serde::de::Error::custom(format!("not a decimal: {}", raw.get())))
    }

    /// The decimal a JSON number or string literal holds, exactly.
    #[must_use]
    pub fn decimal_of_raw(text: &str) -> Option<Decimal> {
        let t = text.trim();
        let inner = if t.starts_with('"') {
            serde_json::from_str::<String>(t).ok()?
        } else {
            t.to_owned()
        };
        let inner = inner.trim();
        inner
            .parse::<Decimal>()
            .ok()
            .or_else(|| Decimal::from_scientific(inner).ok())
    }

    /// The decimal a JSON string holds, exactly; or a number already read
    /// into a `Value`, which is exact only to 15 significant digits (it
    /// went through a float): use [`deserialize`] on text for amounts.
    #[must_use]
    pub fn decimal_of(v: &Value) -> Option<Decimal> {
        let text = match v {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        text.parse::<Decimal>()
            .ok()
            .or_else(|| Decimal::from_scientific(&text).ok())
    }

    /// For `Option<Decimal>` members: `null` when absent.
    pub mod option {
        use super::{Decimal, Deserialize, Deserializer, Serializer};

        /// Serializes `Some(d)` as a number, `None` as `null`.
        ///
        /// # Errors
        /// The serializer's error.
        pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Reads `null`, a number or a string.
        ///
        /// # Errors
        /// When the value is not a decimal.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
            let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
            let t = raw.get().trim();
            if t == "null" || t == "\"\"" {
                return Ok(None);
            }
            super::decimal_of_raw(t)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("not a decimal: {t}")))
        }
    }
}

/// An invoice as `POST /api/invoice` takes it (`InvoiceRequestDataDto`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DgiInvoiceRequest {
    /// Seller NIF.
    pub nif: String,
    /// SFE id from homologation (`""` when none).
    #[serde(default, deserialize_with = "text")]
    pub isf: String,
    /// The SFE invoice number ([`bonopay_signer::certification::sfe_number`]).
    pub rn: String,
    /// `ht` or `ttc`.
    pub mode: String,
    /// FV, FT, FA, EV, ET, EA.
    #[serde(rename = "type")]
    pub invoice_type: String,
    /// Lines.
    pub items: Vec<DgiItem>,
    /// Client.
    pub client: DgiClient,
    /// Cashier.
    pub operator: DgiOperator,
    /// Payments.
    pub payment: Vec<DgiPayment>,
    /// Credit notes: the original's Code DEF/DGI, or `RRR` (`""` for
    /// invoices). The sync agent puts the original's DGI code here when it
    /// sends the credit note (see `agent`).
    #[serde(default, deserialize_with = "text")]
    pub reference: String,
    /// Credit notes: COR, RAN, RAM, RRR (`""` for invoices).
    #[serde(default, deserialize_with = "text")]
    pub reference_type: String,
    /// The nature in words (`""` for invoices).
    #[serde(default, deserialize_with = "text")]
    pub reference_desc: String,
    /// Comment lines A–H, `cmta`…`cmth`, all eight always present.
    #[serde(flatten)]
    pub comments: std::collections::BTreeMap<String, String>,
    /// Currency code (`CDF` or the foreign currency).
    #[serde(default = "cdf", deserialize_with = "text")]
    pub cur_code: String,
    /// Rate date (`YYYY-MM-DD`).
    #[serde(default, deserialize_with = "text")]
    pub cur_date: String,
    /// CDF per unit of `cur_code` (1 for CDF, \[G\]).
    #[serde(default = "one", with = "number")]
    pub cur_rate: Decimal,
}

pub(super) fn cdf() -> String {
    "CDF".into()
}

fn one() -> Decimal {
    Decimal::ONE
}

/// Text that may come back as `null` (older outbox rows wrote it absent).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// One line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DgiItem {
    /// Article code.
    #[serde(default, deserialize_with = "text")]
    pub code: String,
    /// BIE, SER, TAX.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name.
    pub name: String,
    /// Unit price (HT or TTC per `mode`), up to 2 places.
    #[serde(with = "number")]
    pub price: Decimal,
    /// Quantity, up to 3 places.
    #[serde(with = "number")]
    pub quantity: Decimal,
    /// Group A–N.
    pub tax_group: String,
    /// Specific tax rate, e.g. `"10.00%"` (`""` when none).
    #[serde(default, deserialize_with = "text")]
    pub tax_specific_value: String,
    /// Specific tax for the whole quantity (0 when none).
    #[serde(default, with = "number")]
    pub tax_specific_amount: Decimal,
    /// Price before a change (`null` when unchanged).
    #[serde(default, with = "number::option")]
    pub original_price: Option<Decimal>,
    /// Why the price changed (`remise 10%`; `""` when unchanged).
    #[serde(default, deserialize_with = "text")]
    pub price_modification: String,
}

/// The client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DgiClient {
    /// PP, PM, PC, PL, AO.
    #[serde(rename = "type")]
    pub client_type: String,
    /// The type in words (\[I\], §8).
    #[serde(default, deserialize_with = "text")]
    pub type_desc: String,
    /// Client NIF (`""` when none).
    #[serde(default, deserialize_with = "text")]
    pub nif: String,
    /// Name.
    #[serde(default, deserialize_with = "text")]
    pub name: String,
    /// Contact.
    #[serde(default, deserialize_with = "text")]
    pub contact: String,
    /// Address.
    #[serde(default, deserialize_with = "text")]
    pub address: String,
}

/// The cashier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgiOperator {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// One payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DgiPayment {
    /// ESPECES, VIREMENT, …
    pub name: String,
    /// Amount, in the invoice's currency, up to 2 places.
    #[serde(with = "number")]
    pub amount: Decimal,
    /// Foreign-currency invoices: the currency (\[I\], §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_code: Option<String>,
    /// Foreign-currency invoices: CDF per unit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "number::option"
    )]
    pub currency_rate: Option<Decimal>,
}

/// What `POST /api/invoice` answers: the pending handle and the DGI's own
/// totals (the per-group members are not needed for the two-phase check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DgiSubmitted {
    /// Pending handle (GUID).
    pub uid: String,
    /// The DGI's total (CDF).
    #[serde(with = "number")]
    pub total: Decimal,
    /// The DGI's VAT total (CDF).
    #[serde(with = "number")]
    pub vtotal: Decimal,
}

/// The body of `PUT /api/invoice/{uid}/CONFIRM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgiTotals {
    /// Total (CDF).
    #[serde(with = "number")]
    pub total: Decimal,
    /// VAT total (CDF).
    #[serde(with = "number")]
    pub vtotal: Decimal,
}

/// One pending invoice in the status answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRef {
    /// When it was created.
    #[serde(default, deserialize_with = "text")]
    pub date: String,
    /// Its handle.
    pub uid: String,
}

/// `GET /api/invoice`: the e-MCF's status and its pending invoices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgiStatus {
    /// The e-MCF's NIM.
    #[serde(default, deserialize_with = "text")]
    pub nim: String,
    /// Pending count.
    #[serde(rename = "pendingRequestsCount", default)]
    pub pending_count: u32,
    /// Pending invoices.
    #[serde(rename = "pendingRequestsList", default)]
    pub pending: Vec<PendingRef>,
    /// When the token expires, as the e-MCF writes it (RFC 3339, or
    /// `dd/MM/yyyy HH:mm:ss` as in Benin; see [`parse_dgi_time`]).
    #[serde(rename = "tokenValid", default, deserialize_with = "text")]
    pub token_valid: String,
    /// The e-MCF's clock.
    #[serde(rename = "serverDateTime", default, deserialize_with = "text")]
    pub server_date_time: String,
}

/// Reads a time the e-MCF wrote: RFC 3339, `YYYY-MM-DDTHH:MM:SS` or
/// `YYYY-MM-DD HH:MM:SS` (taken as Africa/Kinshasa, UTC+1, when it has no
/// offset), or Benin's `dd/MM/yyyy HH:mm:ss`. Milliseconds since the epoch.
#[must_use]
pub fn parse_dgi_time(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_millis());
    }
    let kinshasa = chrono::FixedOffset::east_opt(3600)?;
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%d/%m/%Y %H:%M:%S",
    ] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return n
                .and_local_timezone(kinshasa)
                .single()
                .map(|d| d.timestamp_millis());
        }
    }
    None
}

/// Where an invoice stands at the DGI, as the DGI's portal (and the
/// simulator's control API) shows it. The e-MCF API itself does not
/// report it: see [`DgiPendingEcho`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum DgiInvoiceState {
    /// Created, waiting for CONFIRM or CANCEL.
    Pending,
    /// Confirmed: final.
    Confirmed,
    /// Cancelled: final.
    Cancelled,
    /// Expired unconfirmed: final.
    Expired,
}

/// `GET /api/invoice/{uid}` for a pending invoice: the request echoed back.
/// Only `rn` is read; a finalised or unknown uid is error 20 instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DgiPendingEcho {
    /// The SFE number the invoice was created with.
    pub rn: String,
    /// The whole echo, as received.
    pub raw: Value,
}

/// The e-MCF error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DgiErrorBody {
    /// Error code (a number in Benin; kept as text).
    #[serde(deserialize_with = "de_code")]
    pub error_code: String,
    /// Description.
    #[serde(default, deserialize_with = "text")]
    pub error_desc: String,
}

fn de_code<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// e-MCF error codes (the e-MECeF table, which the DRC is assumed to share,
/// \[G\]; `dgi-emcf.md` §4).
pub mod codes {
    /// Too many pending invoices.
    pub const TOO_MANY_PENDING: &str = "1";
    /// Bad invoice type.
    pub const BAD_TYPE: &str = "3";
    /// Credit note without its reference.
    pub const REFERENCE_MISSING: &str = "4";
    /// Reference not 24 characters (nor `RRR`).
    pub const REFERENCE_FORMAT: &str = "5";
    /// Bad payment type.
    pub const BAD_PAYMENT: &str = "7";
    /// No items.
    pub const NO_ITEMS: &str = "8";
    /// Bad tax group.
    pub const BAD_GROUP: &str = "9";
    /// The original invoice cannot be verified yet (not certified).
    pub const ORIGINAL_NOT_CERTIFIED: &str = "10";
    /// The original invoice is unknown.
    pub const ORIGINAL_UNKNOWN: &str = "11";
    /// The credit note exceeds the original.
    pub const OVER_CREDIT: &str = "12";
    /// Unknown or already finalised uid.
    pub const UNKNOWN_OR_FINAL: &str = "20";
    /// Processing error.
    pub const PROCESSING: &str = "99";
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decimals_are_json_numbers_with_their_own_digits() {
        let t = DgiTotals {
            total: "133080.00".parse().unwrap(),
            vtotal: "0.50".parse().unwrap(),
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"total":133080.00,"vtotal":0.50}"#
        );
        let back: DgiTotals =
            serde_json::from_str(r#"{"total":"133080.00","vtotal":0.5}"#).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn dgi_times_are_read_in_their_several_spellings() {
        let a = parse_dgi_time("2026-12-05T10:00:00+01:00").unwrap();
        assert_eq!(parse_dgi_time("2026-12-05 10:00:00"), Some(a));
        assert_eq!(parse_dgi_time("05/12/2026 10:00:00"), Some(a));
        assert_eq!(parse_dgi_time("demain"), None);
    }
}
