//! The DGI e-MCF API: wire types, the mapping from a sealed invoice, and
//! the [`DgiTransport`] trait.
//!
//! Field names follow the field dictionary of `../shared/spec/dgi-emcf.md`
//! (DRC e-MCF, "e-MCF API 1.0" as public integrations use it against the
//! DGI test platform, §4 and §8). Where the spec leaves the wire open this
//! module makes a documented choice, marked as the spec marks it:
//!
//! - **Numbers** (\[I\]/\[G\], §8 "Numbers"): amounts, prices, quantities
//!   and rates travel as JSON numbers written exactly from the decimal
//!   (`1250.00`, `2.500`), never through a float and never as strings.
//!   Replies are read as numbers or strings alike, exactly.
//! - **Members always present** (\[G\], §8): every member the platform is
//!   seen to expect is sent, with `""` for absent text, `0` for an absent
//!   specific tax and `null` for an absent original price. A CDF invoice
//!   sends `curCode: "CDF"` and `curRate: 1`. Payments of a foreign-currency
//!   invoice carry `currencyCode`/`currencyRate` (\[I\]).
//! - **Errors in 2xx** (\[I\], three DRC clients): a reply carrying a
//!   non-empty `errorCode` is a refusal whatever its HTTP status, and is
//!   reported as [`TransportError::Rejected`]. `errorCode` `0`, `""` or
//!   `null` is no error (\[G\]).
//! - **`rn`** (SFE §1.15): the SFE invoice number,
//!   [`bonopay_signer::certification::sfe_number`], one uninterrupted
//!   series of invoices and credit notes per outlet and fiscal year.
//! - **`GET /api/invoice/{uid}`** (\[C\] Benin, §8 "Details"): answers a
//!   *pending* invoice by echoing its request (plus `errorCode`), and a
//!   finalised or unknown one with error 20. It carries no state and no
//!   totals, so recovery reads only `rn` from it ([`DgiPendingEcho`]).

use std::fmt;

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

fn cdf() -> String {
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

/// The error a reply carries, if any: a non-empty `errorCode` other than
/// `0` (\[G\]), in a 2xx reply as in any other.
#[must_use]
pub fn error_in(reply: &Value) -> Option<DgiErrorBody> {
    let code = match reply.get("errorCode")? {
        Value::Null => return None,
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    };
    if code.is_empty() || code == "0" {
        return None;
    }
    Some(DgiErrorBody {
        error_code: code,
        error_desc: reply
            .get("errorDesc")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// Reads an e-MCF reply from its HTTP status and raw body: the JSON (and
/// the text it was read from), or the error it carries. An `errorCode` in
/// a 2xx reply is a refusal like any other (\[I\], `dgi-emcf.md` §8); an
/// empty 2xx body is `null`. Pure (no I/O), so the HTTP transport and the
/// fuzz target `dgi_reply` run the very same code on the bytes received.
///
/// # Errors
/// [`TransportError::Unauthorized`] for 401 and 403,
/// [`TransportError::Unknown`] for a 5xx or an unreadable 2xx body (the
/// call may have taken effect), [`TransportError::Rejected`] otherwise.
pub fn read_reply(status: u16, body: &[u8]) -> Result<(Value, Vec<u8>), TransportError> {
    if (200..300).contains(&status) {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok((Value::Null, b"null".to_vec()));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| TransportError::Unknown(format!("unreadable answer: {e}")))?;
        return match error_in(&v) {
            Some(b) => Err(TransportError::Rejected {
                status,
                code: b.error_code,
                desc: b.error_desc,
            }),
            None => Ok((v, body.to_vec())),
        };
    }
    if status == 401 || status == 403 {
        return Err(TransportError::Unauthorized(format!("HTTP {status}")));
    }
    let parsed = serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .and_then(error_in);
    if (500..600).contains(&status) {
        return Err(TransportError::Unknown(match parsed {
            Some(b) => format!("HTTP {status}: error {}: {}", b.error_code, b.error_desc),
            None => format!("HTTP {status}"),
        }));
    }
    Err(match parsed {
        Some(DgiErrorBody {
            error_code,
            error_desc,
        }) => TransportError::Rejected {
            status,
            code: error_code,
            desc: error_desc,
        },
        None => TransportError::Rejected {
            status,
            code: status.to_string(),
            desc: String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    })
}

/// A reply decoded as `T` ([`DgiStatus`], [`DgiSubmitted`],
/// [`DgiConfirmation`]): [`read_reply`], then `T` from the text, so amounts
/// are read exactly ([`number`]).
///
/// # Errors
/// As [`read_reply`]; [`TransportError::Unknown`] when the JSON is not a `T`.
pub fn decode_reply<T: serde::de::DeserializeOwned>(
    status: u16,
    body: &[u8],
) -> Result<T, TransportError> {
    let (_, text) = read_reply(status, body)?;
    serde_json::from_slice(&text)
        .map_err(|e| TransportError::Unknown(format!("unreadable answer: {e}")))
}

/// The `GET /api/invoice/{uid}` reply as a [`DgiPendingEcho`]: only `rn`
/// is read.
///
/// # Errors
/// [`TransportError::Unknown`] when the reply has no string `rn`.
pub fn pending_echo(v: Value) -> Result<DgiPendingEcho, TransportError> {
    let rn = v
        .get("rn")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| TransportError::Unknown("the details reply has no rn".into()))?;
    Ok(DgiPendingEcho { rn, raw: v })
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

/// Why a DGI call failed. The distinction that matters is whether the
/// call may have taken effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The call may or may not have taken effect: a timeout, a connection
    /// lost after sending, a 5xx. Reconcile before acting again.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The call certainly did not reach the DGI (connection refused, DNS).
    #[error("DGI unreachable: {0}")]
    Unreachable(String),
    /// The token was refused (401/403).
    #[error("DGI refused the token: {0}")]
    Unauthorized(String),
    /// The DGI answered with an error body: it did not act.
    #[error("DGI error {code}: {desc}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// `errorCode`.
        code: String,
        /// `errorDesc`.
        desc: String,
    },
}

/// The e-MCF API of one taxpayer account (one NIF, one e-MCF, one token).
/// Synchronous and object-safe: the sync agent runs on its own thread, and
/// tests layer fault injection over the real HTTP implementation.
///
/// Every method reports a reply carrying `errorCode` as
/// [`TransportError::Rejected`], 2xx or not.
pub trait DgiTransport: fmt::Debug + Send + Sync {
    /// `GET /api/invoice`.
    ///
    /// # Errors
    /// [`TransportError`].
    fn status(&self) -> Result<DgiStatus, TransportError>;
    /// `POST /api/invoice`.
    ///
    /// # Errors
    /// [`TransportError`].
    fn submit(&self, invoice: &DgiInvoiceRequest) -> Result<DgiSubmitted, TransportError>;
    /// `PUT /api/invoice/{uid}/CONFIRM`.
    ///
    /// # Errors
    /// [`TransportError`].
    fn confirm(&self, uid: &str, totals: &DgiTotals) -> Result<DgiConfirmation, TransportError>;
    /// `PUT /api/invoice/{uid}/CANCEL`.
    ///
    /// # Errors
    /// [`TransportError`].
    fn cancel(&self, uid: &str) -> Result<(), TransportError>;
    /// `GET /api/invoice/{uid}`: the echo of a pending invoice; error 20
    /// ([`codes::UNKNOWN_OR_FINAL`]) for any other.
    ///
    /// # Errors
    /// [`TransportError`].
    fn details(&self, uid: &str) -> Result<DgiPendingEcho, TransportError>;
    /// `GET /api/info/{table}` (`taxGroups`, `invoiceTypes`, …), as sent.
    ///
    /// # Errors
    /// [`TransportError`].
    fn info(&self, table: &str) -> Result<Value, TransportError>;
}

impl<T: DgiTransport + ?Sized> DgiTransport for std::sync::Arc<T> {
    fn status(&self) -> Result<DgiStatus, TransportError> {
        (**self).status()
    }
    fn submit(&self, invoice: &DgiInvoiceRequest) -> Result<DgiSubmitted, TransportError> {
        (**self).submit(invoice)
    }
    fn confirm(&self, uid: &str, totals: &DgiTotals) -> Result<DgiConfirmation, TransportError> {
        (**self).confirm(uid, totals)
    }
    fn cancel(&self, uid: &str) -> Result<(), TransportError> {
        (**self).cancel(uid)
    }
    fn details(&self, uid: &str) -> Result<DgiPendingEcho, TransportError> {
        (**self).details(uid)
    }
    fn info(&self, table: &str) -> Result<Value, TransportError> {
        (**self).info(table)
    }
}

/// Compares the e-MCF's tax group table (`GET /api/info/taxGroups`) with
/// ours. The reply's shape is not public (\[G\]): an object keyed by group
/// letter (`{"a": 0, "b": 16, …}` as in Benin), or a list of objects with
/// a group (`code`, `group`, `taxGroup` or `name`) and a rate (`rate`,
/// `value` or `taux`), are both read. Returns one line per difference;
/// empty when they agree.
#[must_use]
pub fn tax_group_differences(
    reply: &Value,
    ours: &std::collections::BTreeMap<String, Decimal>,
) -> Vec<String> {
    let mut theirs: std::collections::BTreeMap<String, Option<Decimal>> =
        std::collections::BTreeMap::new();
    let group_of = |k: &str| {
        let k = k.trim();
        (k.len() == 1 && k.chars().all(|c| c.is_ascii_alphabetic())).then(|| k.to_uppercase())
    };
    match reply {
        Value::Object(m) => {
            for (k, v) in m {
                if let Some(g) = group_of(k) {
                    theirs.insert(g, number::decimal_of(v));
                }
            }
        }
        Value::Array(list) => {
            for item in list {
                let g = ["code", "group", "taxGroup", "name"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(Value::as_str).and_then(group_of));
                let r = ["rate", "value", "taux"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(number::decimal_of));
                if let Some(g) = g {
                    theirs.insert(g, r);
                }
            }
        }
        _ => return vec!["the e-MCF's taxGroups reply is neither an object nor a list".into()],
    }
    if theirs.is_empty() {
        return vec!["the e-MCF's taxGroups reply names no group".into()];
    }
    let mut out = Vec::new();
    for (g, rate) in ours {
        match theirs.get(g) {
            None => out.push(format!("group {g}: not in the e-MCF's table")),
            Some(t) => {
                let (a, b) = (*rate, t.unwrap_or_default());
                if a != b {
                    out.push(format!("group {g}: our rate {a}%, the e-MCF's {b}%"));
                }
            }
        }
    }
    for g in theirs.keys() {
        // O and P are reserved slots of the MCF protocol (§1).
        if !ours.contains_key(g) && g != "O" && g != "P" {
            out.push(format!("group {g}: in the e-MCF's table, not in ours"));
        }
    }
    out
}

/// Why a sealed invoice could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot map sealed invoice to the e-MCF request: {0}")]
pub struct MappingError(pub String);

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn client_type_desc(t: &str) -> &'static str {
    match t {
        "PP" => "Personne physique",
        "PM" => "Personne morale",
        "PC" => "Personne physique commerçante",
        "PL" => "Profession libérale",
        "AO" => "Ambassades et organisations internationales",
        _ => "",
    }
}

fn nature_desc(n: &str) -> &'static str {
    match n {
        "COR" => "Correction",
        "RAN" => "Annulation",
        "RAM" => "Avoir après retour ou paiement",
        "RRR" => "Rabais, remise, ristourne",
        _ => "",
    }
}

/// Maps a sealed invoice's body (`bonopay/sealed-invoice/v1`: the canonical
/// request and our tax result) to the e-MCF request, and returns our own
/// DGI totals with it. A credit note's `reference` is the one the client
/// gave (the original's Bono Pay code or its DGI code); the agent replaces
/// it with the original's DGI code when it sends the note.
///
/// # Errors
/// [`MappingError`] when the body lacks a member the mapping needs.
pub fn map_sealed_body(body: &Value) -> Result<(DgiInvoiceRequest, DgiTotals), MappingError> {
    let missing = |what: &str| MappingError(format!("no {what}"));
    let outlet = s(body, "outlet").ok_or_else(|| missing("outlet"))?;
    let year = body
        .get("fiscal_year")
        .and_then(Value::as_i64)
        .and_then(|y| i32::try_from(y).ok())
        .ok_or_else(|| missing("fiscal_year"))?;
    let total_counter = body
        .pointer("/fiscal_number/total")
        .and_then(Value::as_u64)
        .ok_or_else(|| missing("fiscal_number.total"))?;
    let req = body.get("request").ok_or_else(|| missing("request"))?;
    let tax = body.get("tax").ok_or_else(|| missing("tax"))?;
    let dec = |v: Option<&Value>, what: &str| -> Result<Decimal, MappingError> {
        v.and_then(number::decimal_of).ok_or_else(|| missing(what))
    };
    let totals = DgiTotals {
        total: dec(tax.pointer("/dgi/total"), "tax.dgi.total")?,
        vtotal: dec(tax.pointer("/dgi/vtotal"), "tax.dgi.vtotal")?,
    };
    let mut items = Vec::new();
    for it in req
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("items"))?
    {
        items.push(DgiItem {
            code: s(it, "code").unwrap_or_default(),
            kind: s(it, "kind").unwrap_or_default(),
            name: s(it, "name").unwrap_or_default(),
            price: dec(it.get("unit_price"), "items[].unit_price")?,
            quantity: dec(it.get("quantity"), "items[].quantity")?,
            tax_group: s(it, "tax_group").ok_or_else(|| missing("items[].tax_group"))?,
            tax_specific_value: it
                .pointer("/specific_tax/rate")
                .and_then(Value::as_str)
                .map(|r| format!("{r}%"))
                .unwrap_or_default(),
            tax_specific_amount: it
                .pointer("/specific_tax/amount")
                .and_then(number::decimal_of)
                .unwrap_or_default(),
            original_price: it.get("original_price").and_then(number::decimal_of),
            price_modification: s(it, "price_modification").unwrap_or_default(),
        });
    }
    let client = req.get("client").cloned().unwrap_or(Value::Null);
    let cashier = req.get("cashier").cloned().unwrap_or(Value::Null);
    let mut comments = std::collections::BTreeMap::new();
    for line in 'a'..='h' {
        comments.insert(format!("cmt{line}"), String::new());
    }
    if let Some(c) = req.get("comments").and_then(Value::as_object) {
        for (k, v) in c {
            if let Some(t) = v.as_str() {
                comments.insert(format!("cmt{}", k.to_lowercase()), t.to_owned());
            }
        }
    }
    let currency = s(req, "currency").unwrap_or_else(cdf);
    let fx = req.get("exchange_rate").filter(|v| v.is_object());
    let (cur_rate, cur_date) = match fx {
        Some(f) => (
            dec(f.get("rate"), "exchange_rate.rate")?,
            s(f, "date").unwrap_or_default(),
        ),
        None => (
            Decimal::ONE,
            s(body, "timestamp")
                .map(|t| t.chars().take(10).collect())
                .unwrap_or_default(),
        ),
    };
    let payment = req
        .get("payments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            Ok(DgiPayment {
                name: s(p, "method").unwrap_or_default(),
                amount: dec(p.get("amount"), "payments[].amount")?,
                currency_code: fx.map(|_| currency.clone()),
                currency_rate: fx.map(|_| cur_rate),
            })
        })
        .collect::<Result<Vec<_>, MappingError>>()?;
    let client_type = s(&client, "type").unwrap_or_default();
    let nature = req
        .pointer("/credit_note/nature")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok((
        DgiInvoiceRequest {
            nif: s(req, "merchant_nif").ok_or_else(|| missing("merchant_nif"))?,
            isf: s(body, "isf").unwrap_or_default(),
            rn: bonopay_signer::certification::sfe_number(&outlet, year, total_counter),
            mode: s(req, "price_mode").unwrap_or_default().to_lowercase(),
            invoice_type: s(req, "invoice_type").ok_or_else(|| missing("invoice_type"))?,
            items,
            client: DgiClient {
                type_desc: client_type_desc(&client_type).to_owned(),
                client_type,
                nif: s(&client, "nif").unwrap_or_default(),
                name: s(&client, "name").unwrap_or_default(),
                contact: s(&client, "contact").unwrap_or_default(),
                address: s(&client, "address").unwrap_or_default(),
            },
            operator: DgiOperator {
                id: s(&cashier, "id").unwrap_or_default(),
                name: s(&cashier, "name").unwrap_or_default(),
            },
            payment,
            reference: req
                .pointer("/credit_note/reference")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            reference_desc: nature_desc(&nature).to_owned(),
            reference_type: nature,
            comments,
            cur_code: currency,
            cur_date,
            cur_rate,
        },
        totals,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

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
    fn an_error_code_is_found_in_any_reply() {
        assert_eq!(error_in(&json!({"uid": "x"})), None);
        assert_eq!(error_in(&json!({"uid": "x", "errorCode": null})), None);
        assert_eq!(error_in(&json!({"errorCode": ""})), None);
        assert_eq!(error_in(&json!({"errorCode": "0"})), None);
        let e = error_in(&json!({"errorCode": 10, "errorDesc": "pas encore"})).unwrap();
        assert_eq!(
            (e.error_code.as_str(), e.error_desc.as_str()),
            ("10", "pas encore")
        );
    }

    #[test]
    fn dgi_times_are_read_in_their_several_spellings() {
        let a = parse_dgi_time("2026-12-05T10:00:00+01:00").unwrap();
        assert_eq!(parse_dgi_time("2026-12-05 10:00:00"), Some(a));
        assert_eq!(parse_dgi_time("05/12/2026 10:00:00"), Some(a));
        assert_eq!(parse_dgi_time("demain"), None);
    }

    #[test]
    fn tax_tables_are_compared_in_both_shapes() {
        let ours: std::collections::BTreeMap<String, Decimal> = [
            ("A".to_owned(), Decimal::ZERO),
            ("B".to_owned(), Decimal::from(16)),
        ]
        .into_iter()
        .collect();
        assert!(tax_group_differences(&json!({"a": 0, "b": 16, "o": 0}), &ours).is_empty());
        let d = tax_group_differences(
            &json!([{"code": "A", "rate": 0}, {"code": "B", "rate": "18"}]),
            &ours,
        );
        assert_eq!(d, vec!["group B: our rate 16%, the e-MCF's 18%"]);
        let d = tax_group_differences(&json!({"a": 0}), &ours);
        assert_eq!(d, vec!["group B: not in the e-MCF's table"]);
    }
}
