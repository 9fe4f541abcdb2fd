//! Public endpoints: QR verification, health, metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bonopay_signer::{VERIFY_QR_PREFIX, index, verify_qr};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::invoices::sealed_of;
use super::{ApiQuery, Shared, blocking};

/// The QR text to verify.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// A `BPV1:` verification payload or a DGI `RDCDEF01;…` payload.
    pub qr: String,
}

/// What the verification found. Only what the printed receipt already
/// shows is returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    /// Whether the QR is genuine.
    pub valid: bool,
    /// `bpv1` or `dgi`, when recognized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Why it is not valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Authentication code (from the signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_code: Option<String>,
    /// Fiscal number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fiscal_number: Option<String>,
    /// Device id (NID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fiscal_authority_id: Option<String>,
    /// Seller NIF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_nif: Option<String>,
    /// Trusted timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// DGI total (CDF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    /// DGI VAT total (CDF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtotal: Option<String>,
    /// Whether this server's ledger holds the invoice.
    pub registered: bool,
}

impl VerifyResponse {
    fn invalid(format: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            valid: false,
            format: format.map(str::to_owned),
            reason: Some(reason.into()),
            authentication_code: None,
            fiscal_number: None,
            fiscal_authority_id: None,
            merchant_nif: None,
            timestamp: None,
            total: None,
            vtotal: None,
            registered: false,
        }
    }
}

/// Verifies a receipt's QR code, without an API key.
///
/// A `BPV1:` payload is checked offline against the server's public keys
/// (signature over the signed tuple) and then looked up in the ledger. A
/// DGI `RDCDEF01;NID;CODE;NIF;YYYYMMDDHHMMSS` payload carries no signature,
/// so it is valid only if this server sealed an invoice with that
/// authentication code and exactly that QR.
#[utoipa::path(
    get,
    path = "/v1/verify",
    tag = "public",
    params(VerifyQuery),
    responses(
        (status = 200, description = "Verdict (valid or not, with the reason)", body = VerifyResponse),
        (status = 400, description = "No `qr` parameter", body = ErrorBody),
    )
)]
pub async fn verify(
    State(state): State<Shared>,
    ApiQuery(q): ApiQuery<VerifyQuery>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let st = Arc::clone(&state);
    let verdict = blocking(move || {
        let text = q.qr.trim();
        let store = st.fiscalizer.store();
        let lookup = |code: &str| -> Result<Option<bonopay_signer::Sealed>, ApiError> {
            let hits = store
                .find_index(index::AUTH_CODE, code)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let Some((outlet, seq)) = hits.into_iter().next() else {
                return Ok(None);
            };
            match store
                .entry(&outlet, seq)
                .map_err(|e| ApiError::Internal(e.to_string()))?
            {
                Some(entry) => sealed_of(&entry, &st.trusted_keys).map(Some),
                None => Ok(None),
            }
        };
        if text.starts_with(VERIFY_QR_PREFIX) {
            return match verify_qr(text, &st.trusted_keys) {
                Ok(v) => {
                    let registered = lookup(&v.authentication_code)?.is_some();
                    Ok(VerifyResponse {
                        valid: true,
                        format: Some("bpv1".into()),
                        reason: None,
                        authentication_code: Some(v.authentication_code),
                        fiscal_number: Some(v.tuple.counters),
                        fiscal_authority_id: Some(v.tuple.nid),
                        merchant_nif: Some(v.tuple.merchant_nif),
                        timestamp: Some(v.tuple.timestamp),
                        total: Some(v.tuple.total),
                        vtotal: Some(v.tuple.vtotal),
                        registered,
                    })
                }
                Err(e) => Ok(VerifyResponse::invalid(Some("bpv1"), e.to_string())),
            };
        }
        if text.starts_with("RDCDEF01;") {
            let fields: Vec<&str> = text.split(';').collect();
            if fields.len() != 5 {
                return Ok(VerifyResponse::invalid(
                    Some("dgi"),
                    "a DGI QR has 5 fields: RDCDEF01;NID;CODE;NIF;YYYYMMDDHHMMSS",
                ));
            }
            let Some(sealed) = lookup(fields[2])? else {
                return Ok(VerifyResponse::invalid(
                    Some("dgi"),
                    "no invoice sealed by this server has this authentication code",
                ));
            };
            let inv = sealed.invoice;
            if inv.elements.qr != text {
                return Ok(VerifyResponse::invalid(
                    Some("dgi"),
                    "the QR's fields differ from the invoice sealed with this code",
                ));
            }
            return Ok(VerifyResponse {
                valid: true,
                format: Some("dgi".into()),
                reason: None,
                authentication_code: Some(inv.elements.authentication_code),
                fiscal_number: Some(inv.tuple.counters),
                fiscal_authority_id: Some(inv.tuple.nid),
                merchant_nif: Some(inv.tuple.merchant_nif),
                timestamp: Some(inv.tuple.timestamp),
                total: Some(inv.tuple.total),
                vtotal: Some(inv.tuple.vtotal),
                registered: true,
            });
        }
        Ok(VerifyResponse::invalid(
            None,
            "not a Bono Pay (BPV1:) or DGI (RDCDEF01;) QR payload",
        ))
    })
    .await?;
    Ok(Json(verdict))
}

/// Liveness.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Id of the signing key in use.
    pub key_id: String,
}

/// Liveness: the process answers (it does not call the signer).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz(State(state): State<Shared>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        key_id: state.fiscalizer.signer().key_id().to_owned(),
    })
}

/// Prometheus text exposition: `bonopay_invoices_sealed_total`,
/// `bonopay_invoices_replayed_total`, `bonopay_signer_errors_total` and the
/// histogram `bonopay_seal_duration_seconds`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
