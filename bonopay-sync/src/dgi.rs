//! The DGI e-MCF API: wire types, the mapping from a sealed invoice, and
//! the [`DgiTransport`] trait.
//!
//! Field names follow the field dictionary of `../shared/spec/dgi-emcf.md`
//! (DRC e-MCF, "e-MCF API 1.0" as observed in integrations). Where the
//! dictionary is uncertain this module makes a documented choice:
//!
//! - **Amounts** travel as decimal strings (`"133080.00"`), never as JSON
//!   numbers, so no float ever touches money. The dictionary types them
//!   `dec`; whether the production e-MCF accepts strings is not confirmed
//!   (\[G\]). Replies are read as strings or numbers alike (numbers through
//!   their exact decimal text).
//! - **`rn`** (the SFE's invoice number) is our invoice id
//!   `{outlet}:{seq}`: unique per e-MCF account, so a pending invoice found
//!   by reconciliation can be matched to the outbox item that created it.
//! - **`GET /api/invoice/{uid}`** is documented for pending invoices only.
//!   The simulator also answers it for finalised ones (`status`
//!   `CONFIRMED` with the DGI elements, `CANCELLED`, `EXPIRED`); against an
//!   e-MCF that answers "unknown or finalised" (error 20) instead, the sync
//!   agent never guesses: the item is dead-lettered for a person to check,
//!   rather than risking a second confirm.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// An invoice as `POST /api/invoice` takes it (`InvoiceRequestDataDto`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DgiInvoiceRequest {
    /// Seller NIF.
    pub nif: String,
    /// SFE id from homologation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isf: Option<String>,
    /// The SFE's invoice number: `{outlet}:{seq}`.
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
    /// Credit notes: the original's Code DEF/DGI, or `RRR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Credit notes: COR, RAN, RAM, RRR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_type: Option<String>,
    /// Comment lines A–H (`cmta`…`cmth`).
    #[serde(flatten)]
    pub comments: std::collections::BTreeMap<String, String>,
    /// Foreign currency code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cur_code: Option<String>,
    /// Rate date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cur_date: Option<String>,
    /// CDF per unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cur_rate: Option<String>,
}

/// One line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DgiItem {
    /// Article code.
    pub code: String,
    /// BIE, SER, TAX.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name.
    pub name: String,
    /// Unit price (HT or TTC per `mode`), 2 places.
    pub price: String,
    /// Quantity, 3 places.
    pub quantity: String,
    /// Group A–N.
    pub tax_group: String,
    /// Specific tax for the whole quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_specific_amount: Option<String>,
    /// Specific tax rate, e.g. `"10.00%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_specific_value: Option<String>,
    /// Price before a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_price: Option<String>,
    /// Why the price changed (`remise 10%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_modification: Option<String>,
}

/// The client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgiClient {
    /// PP, PM, PC, PL, AO.
    #[serde(rename = "type")]
    pub client_type: String,
    /// Client NIF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nif: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
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
pub struct DgiPayment {
    /// ESPECES, VIREMENT, …
    pub name: String,
    /// Amount, 2 places.
    pub amount: String,
}

/// Reads a decimal from a JSON string or number, exactly.
fn de_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let v = Value::deserialize(d)?;
    let text = match &v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => return Err(serde::de::Error::custom(format!("not a decimal: {other}"))),
    };
    text.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(serde::de::Error::custom)
}

fn ser_decimal<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let mut v = *d;
    v.rescale(2);
    s.collect_str(&v)
}

/// What `POST /api/invoice` answers: the pending handle and the DGI's own
/// totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DgiSubmitted {
    /// Pending handle (GUID).
    pub uid: String,
    /// The DGI's total (CDF).
    #[serde(deserialize_with = "de_decimal", serialize_with = "ser_decimal")]
    pub total: Decimal,
    /// The DGI's VAT total (CDF).
    #[serde(deserialize_with = "de_decimal", serialize_with = "ser_decimal")]
    pub vtotal: Decimal,
}

/// The body of `PUT /api/invoice/{uid}/CONFIRM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgiTotals {
    /// Total (CDF).
    #[serde(deserialize_with = "de_decimal", serialize_with = "ser_decimal")]
    pub total: Decimal,
    /// VAT total (CDF).
    #[serde(deserialize_with = "de_decimal", serialize_with = "ser_decimal")]
    pub vtotal: Decimal,
}

/// The security elements the DGI returns on confirm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgiConfirmation {
    /// Code DEF/DGI (24 characters).
    #[serde(rename = "codeDEFDGI")]
    pub code_def_dgi: String,
    /// `FC/TC TYPE` on the e-MCF.
    pub counters: String,
    /// The e-MCF's NIM.
    pub nim: String,
    /// DGI certification time.
    #[serde(rename = "dateTime")]
    pub date_time: String,
    /// QR text.
    #[serde(rename = "qrCode")]
    pub qr_code: String,
}

/// One pending invoice in the status answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRef {
    /// When it was created.
    #[serde(default)]
    pub date: String,
    /// Its handle.
    pub uid: String,
}

/// `GET /api/invoice`: the e-MCF's status and its pending invoices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgiStatus {
    /// The e-MCF's NIM.
    #[serde(default)]
    pub nim: String,
    /// Pending count.
    #[serde(rename = "pendingRequestsCount", default)]
    pub pending_count: u32,
    /// Pending invoices.
    #[serde(rename = "pendingRequestsList", default)]
    pub pending: Vec<PendingRef>,
}

/// Where a submitted invoice stands at the DGI.
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

/// `GET /api/invoice/{uid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgiInvoiceDetails {
    /// Handle.
    pub uid: String,
    /// The SFE's invoice number it was created with.
    pub rn: String,
    /// State.
    pub status: DgiInvoiceState,
    /// The DGI's totals.
    #[serde(flatten)]
    pub totals: DgiTotals,
    /// For confirmed invoices: the elements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<DgiConfirmation>,
}

/// The e-MCF error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DgiErrorBody {
    /// Error code (a number in Benin; kept as text).
    #[serde(deserialize_with = "de_code")]
    pub error_code: String,
    /// Description.
    #[serde(default)]
    pub error_desc: String,
}

fn de_code<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

/// e-MCF error codes (the Benin table, which the DRC is assumed to share (\[G\])).
pub mod codes {
    /// Too many pending invoices.
    pub const TOO_MANY_PENDING: &str = "1";
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

/// The e-MCF API. Synchronous and object-safe: the sync agent runs on its
/// own thread, and tests layer fault injection over the real HTTP
/// implementation.
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
    /// `GET /api/invoice/{uid}`.
    ///
    /// # Errors
    /// [`TransportError`].
    fn details(&self, uid: &str) -> Result<DgiInvoiceDetails, TransportError>;
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
    fn details(&self, uid: &str) -> Result<DgiInvoiceDetails, TransportError> {
        (**self).details(uid)
    }
}

/// Why a sealed invoice could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot map sealed invoice to the e-MCF request: {0}")]
pub struct MappingError(pub String);

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Maps a sealed invoice's body (`bonopay/sealed-invoice/v1`: the canonical
/// request and our tax result) to the e-MCF request, and returns our own
/// DGI totals with it.
///
/// # Errors
/// [`MappingError`] when the body lacks a member the mapping needs.
pub fn map_sealed_body(body: &Value) -> Result<(DgiInvoiceRequest, DgiTotals), MappingError> {
    let missing = |what: &str| MappingError(format!("no {what}"));
    let outlet = s(body, "outlet").ok_or_else(|| missing("outlet"))?;
    let seq = body
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| missing("seq"))?;
    let req = body.get("request").ok_or_else(|| missing("request"))?;
    let tax = body.get("tax").ok_or_else(|| missing("tax"))?;
    let dec = |v: Option<&Value>, what: &str| -> Result<Decimal, MappingError> {
        v.and_then(Value::as_str)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| missing(what))
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
            price: s(it, "unit_price").ok_or_else(|| missing("items[].unit_price"))?,
            quantity: s(it, "quantity").ok_or_else(|| missing("items[].quantity"))?,
            tax_group: s(it, "tax_group").ok_or_else(|| missing("items[].tax_group"))?,
            tax_specific_amount: it
                .pointer("/specific_tax/amount")
                .and_then(Value::as_str)
                .map(str::to_owned),
            tax_specific_value: it
                .pointer("/specific_tax/rate")
                .and_then(Value::as_str)
                .map(|r| format!("{r}%")),
            original_price: s(it, "original_price"),
            price_modification: s(it, "price_modification"),
        });
    }
    let client = req.get("client").cloned().unwrap_or(Value::Null);
    let cashier = req.get("cashier").cloned().unwrap_or(Value::Null);
    let mut comments = std::collections::BTreeMap::new();
    if let Some(c) = req.get("comments").and_then(Value::as_object) {
        for (k, v) in c {
            if let Some(t) = v.as_str() {
                comments.insert(format!("cmt{}", k.to_lowercase()), t.to_owned());
            }
        }
    }
    let fx = req.get("exchange_rate");
    Ok((
        DgiInvoiceRequest {
            nif: s(req, "merchant_nif").ok_or_else(|| missing("merchant_nif"))?,
            isf: s(body, "isf"),
            rn: format!("{outlet}:{seq}"),
            mode: s(req, "price_mode").unwrap_or_default().to_lowercase(),
            invoice_type: s(req, "invoice_type").ok_or_else(|| missing("invoice_type"))?,
            items,
            client: DgiClient {
                client_type: s(&client, "type").unwrap_or_default(),
                nif: s(&client, "nif"),
                name: s(&client, "name"),
                contact: s(&client, "contact"),
                address: s(&client, "address"),
            },
            operator: DgiOperator {
                id: s(&cashier, "id").unwrap_or_default(),
                name: s(&cashier, "name").unwrap_or_default(),
            },
            payment: req
                .get("payments")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| DgiPayment {
                    name: s(p, "method").unwrap_or_default(),
                    amount: s(p, "amount").unwrap_or_default(),
                })
                .collect(),
            reference: req
                .pointer("/credit_note/reference")
                .and_then(Value::as_str)
                .map(str::to_owned),
            reference_type: req
                .pointer("/credit_note/nature")
                .and_then(Value::as_str)
                .map(str::to_owned),
            comments,
            cur_code: fx.and(s(req, "currency")),
            cur_date: fx.and_then(|f| s(f, "date")),
            cur_rate: fx.and_then(|f| s(f, "rate")),
        },
        totals,
    ))
}
