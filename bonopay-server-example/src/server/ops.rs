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
/// so it is valid only if the DGI certified an invoice of this server with
/// that Code DEF/DGI and exactly that QR (docs/format.md §10).
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
        let lookup_at =
            |outlet: &str, seq: u64| -> Result<Option<bonopay_signer::Sealed>, ApiError> {
                match store
                    .entry(outlet, seq)
                    .map_err(|e| ApiError::Internal(e.to_string()))?
                {
                    Some(entry) => sealed_of(&entry, &st.trusted_keys).map(Some),
                    None => Ok(None),
                }
            };
        let lookup = |code: &str| -> Result<Option<bonopay_signer::Sealed>, ApiError> {
            let hits = store
                .find_index(index::AUTH_CODE, code)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            match hits.into_iter().next() {
                Some((outlet, seq)) => lookup_at(&outlet, seq),
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
            // The DGI's QR names the Code DEF/DGI it certified the invoice
            // with: valid if this server recorded that certification, with
            // exactly this QR text.
            let found = st
                .fiscalizer
                .find_by_dgi_code(fields[2])
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let certified = match found {
                Some((outlet, seq)) => st
                    .fiscalizer
                    .certification_of(&outlet, seq)
                    .map_err(|e| ApiError::Internal(e.to_string()))?
                    .zip(lookup_at(&outlet, seq)?),
                None => None,
            };
            let Some((cert, sealed)) = certified else {
                return Ok(VerifyResponse::invalid(
                    Some("dgi"),
                    "no invoice of this server was certified by the DGI with this code",
                ));
            };
            if cert.elements.qr_code != text {
                return Ok(VerifyResponse::invalid(
                    Some("dgi"),
                    "the QR differs from the one the DGI returned for this code",
                ));
            }
            let inv = sealed.invoice;
            return Ok(VerifyResponse {
                valid: true,
                format: Some("dgi".into()),
                reason: None,
                authentication_code: Some(cert.elements.code_def_dgi),
                fiscal_number: Some(cert.elements.counters),
                fiscal_authority_id: Some(cert.elements.nim),
                merchant_nif: Some(inv.tuple.merchant_nif),
                timestamp: Some(cert.elements.date_time),
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
    /// `ok`, or `degraded` when the configuration needs the operator
    /// (`config_conflicts`); the server serves in both.
    pub status: String,
    /// Id of the signing key in use.
    pub key_id: String,
    /// Outlets of `config.json` that were ignored because another merchant
    /// had registered them first (the first registration wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_conflicts: Vec<crate::cli::serve::OutletConflict>,
}

/// Liveness: the process answers (it does not call the signer).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz(State(state): State<Shared>) -> Json<Health> {
    Json(Health {
        status: if state.config_conflicts.is_empty() {
            "ok"
        } else {
            "degraded"
        }
        .into(),
        config_conflicts: state.config_conflicts.clone(),
        key_id: state.fiscalizer.signer().key_id().to_owned(),
    })
}

/// The listener's counters in the Prometheus text format.
fn connection_metrics(c: &crate::server::listen::ConnectionStats) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in [
        (
            "bonopay_connections_open",
            "gauge",
            "Connections open now",
            c.open(),
        ),
        (
            "bonopay_connections_accepted_total",
            "counter",
            "Connections accepted",
            c.accepted(),
        ),
        (
            "bonopay_connections_evicted_total",
            "counter",
            "Connections closed at the cap because they waited longest on their client",
            c.evicted(),
        ),
        (
            "bonopay_connections_refused_total",
            "counter",
            "New connections closed at the cap because every open one was busy",
            c.refused(),
        ),
        (
            "bonopay_connections_timed_out_total",
            "counter",
            "Connections closed by the header or idle timeout",
            c.timed_out(),
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
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
        state.metrics.render() + &connection_metrics(&state.connection_stats),
    )
        .into_response()
}
