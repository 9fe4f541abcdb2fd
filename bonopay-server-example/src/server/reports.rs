//! X, Z and A reports, closings, incomplete sales and audit-bundle export.
//!
//! Every report is computed from the ledger by the Fiscalizer (see
//! `bonopay_signer::reports`). Any key bound to the outlet may read X, A
//! previews and sealed Z reports; only owner and cashier keys may close a
//! session (Z), seal an A report or closings; owner and auditor keys may
//! export the audit bundle.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bonopay_signer::audit::{ExportRequest, Exporter};
use bonopay_signer::render::Paper;
use bonopay_signer::{Fiscalizer, IncompleteSale, Report, ReportIdentity, SealError};
use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::ApiKey;
use super::error::{ApiError, ErrorBody};
use super::invoices::seal_error;
use super::{ApiJson, ApiPath, ApiQuery, Principal, Shared, authorize_outlet, blocking};

/// How to render a report.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` (default) or `text` (thermal printer).
    #[param(pattern = "^(json|text)$")]
    pub format: Option<String>,
    /// For text: paper width in mm, 58 or 80 (default).
    #[param(schema_with = super::paper_width_schema)]
    pub width: Option<u32>,
}

/// How the reports of a request are rendered.
#[derive(Debug, Clone, Copy)]
enum Render {
    Json,
    Text(Paper),
}

impl ReportQuery {
    /// The rendering the query asks for. Read before any work is done: a
    /// request refused for its query must not have sealed a Z or A report
    /// first (the client, told 400, would close the period again).
    fn render(&self) -> Result<Render, ApiError> {
        let paper = super::paper_width(self.width)?;
        match self.format.as_deref().unwrap_or("json") {
            "json" => Ok(Render::Json),
            "text" => Ok(Render::Text(paper)),
            _ => Err(ApiError::bad_request(
                "invalid_query",
                "format is json or text",
            )),
        }
    }
}

fn respond(reports: Vec<Report>, render: Render, status: StatusCode) -> Response {
    match render {
        Render::Json => {
            let docs: Vec<_> = reports.iter().map(Report::to_json).collect();
            let body = match docs.as_slice() {
                [one] => one.clone(),
                _ => serde_json::json!({ "reports": docs }),
            };
            (status, Json(body)).into_response()
        }
        Render::Text(paper) => {
            let text = reports
                .iter()
                .map(|r| r.text(paper))
                .collect::<Vec<_>>()
                .join("\n");
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                text,
            )
                .into_response()
        }
    }
}

fn identity(state: &Shared, who: &ApiKey) -> ReportIdentity {
    let name = state
        .merchants
        .get(&who.merchant_nif)
        .and_then(|p| p.name.clone())
        .unwrap_or_else(|| who.merchant_nif.clone());
    ReportIdentity {
        merchant_nif: who.merchant_nif.clone(),
        trade_name: name,
    }
}

fn must_close(who: &ApiKey) -> Result<(), ApiError> {
    if who.role.can_close() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "a {} key may read reports but not close or seal them (owner and cashier keys may)",
            who.role
        )))
    }
}

/// Runs a Fiscalizer call for `outlet` on the blocking pool, after
/// checking that `who` may see the outlet.
async fn on_outlet<T: Send + 'static>(
    state: &Shared,
    who: &ApiKey,
    outlet: String,
    f: impl FnOnce(&Fiscalizer, &str, &ReportIdentity) -> Result<T, SealError> + Send + 'static,
) -> Result<T, ApiError> {
    authorize_outlet(state, who, &outlet).await?;
    let id = identity(state, who);
    let st = Arc::clone(state);
    blocking(move || f(&st.fiscalizer, &outlet, &id).map_err(|e| seal_error(&st, e))).await
}

/// The X report: the current session's statistics (since the last Z),
/// without closing it.
#[utoipa::path(
    get,
    path = "/v1/outlets/{outlet}/reports/x",
    tag = "reports",
    params(("outlet" = String, Path, description = "Outlet id"), ReportQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "`{report}` as JSON, or text/plain", content((Object = "application/json"), (String = "text/plain"))),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn x_report(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(outlet): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let render = q.render()?;
    let r = on_outlet(&state, &who, outlet, |f, o, id| f.x_report(o, id)).await?;
    Ok(respond(vec![r], render, StatusCode::OK))
}

/// Closes the session with a Z report: its statistics, sealed (signed,
/// timestamped, chained) with the next Z number and the ledger head at
/// closing. Owner and cashier keys only.
#[utoipa::path(
    post,
    path = "/v1/outlets/{outlet}/reports/z",
    tag = "reports",
    params(("outlet" = String, Path, description = "Outlet id"), ReportQuery),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "`{report, sealed}` as JSON, or text/plain", content((Object = "application/json"), (String = "text/plain"))),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "Signer down: nothing sealed", body = ErrorBody),
    )
)]
pub async fn z_report(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(outlet): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let render = q.render()?;
    must_close(&who)?;
    let r = on_outlet(&state, &who, outlet, |f, o, id| f.z_report(o, id)).await?;
    Ok(respond(vec![r], render, StatusCode::CREATED))
}

/// A sealed Z report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ZListItem {
    /// Z number.
    pub z_number: u64,
    /// Ledger position.
    pub seq: u64,
}

/// The outlet's Z reports, newest first.
#[utoipa::path(
    get,
    path = "/v1/outlets/{outlet}/reports/z",
    tag = "reports",
    params(("outlet" = String, Path, description = "Outlet id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = [ZListItem]),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn list_z_reports(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(outlet): ApiPath<String>,
) -> Result<Json<Vec<ZListItem>>, ApiError> {
    let list = on_outlet(&state, &who, outlet, |f, o, _| f.z_reports(o)).await?;
    Ok(Json(
        list.into_iter()
            .map(|(z_number, seq)| ZListItem { z_number, seq })
            .collect(),
    ))
}

/// One sealed Z report, read back from the chain and verified.
#[utoipa::path(
    get,
    path = "/v1/outlets/{outlet}/reports/z/{number}",
    tag = "reports",
    params(
        ("outlet" = String, Path, description = "Outlet id"),
        ("number" = u64, Path, description = "Z number"),
        ReportQuery
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "`{report, sealed}` as JSON, or text/plain", content((Object = "application/json"), (String = "text/plain"))),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get_z_report(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath((outlet, number)): ApiPath<(String, u64)>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let render = q.render()?;
    let r = on_outlet(&state, &who, outlet, move |f, o, _| {
        match f.z_reports(o)?.into_iter().find(|(z, _)| *z == number) {
            Some((_, seq)) => f.load_report(o, seq),
            None => Ok(None),
        }
    })
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(respond(vec![r], render, StatusCode::OK))
}

/// A preview of the A report: per article, quantities sold and returned
/// since the last sealed A report.
#[utoipa::path(
    get,
    path = "/v1/outlets/{outlet}/reports/a",
    tag = "reports",
    params(("outlet" = String, Path, description = "Outlet id"), ReportQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "`{report}` as JSON, or text/plain", content((Object = "application/json"), (String = "text/plain"))),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn a_report_preview(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(outlet): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let render = q.render()?;
    let r = on_outlet(&state, &who, outlet, |f, o, id| f.a_report(o, id, false)).await?;
    Ok(respond(vec![r], render, StatusCode::OK))
}

/// Seals the A report; the next one starts after it. Owner and cashier
/// keys only.
#[utoipa::path(
    post,
    path = "/v1/outlets/{outlet}/reports/a",
    tag = "reports",
    params(("outlet" = String, Path, description = "Outlet id"), ReportQuery),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "`{report, sealed}` as JSON, or text/plain", content((Object = "application/json"), (String = "text/plain"))),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn a_report_seal(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(outlet): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let render = q.render()?;
    must_close(&who)?;
    let r = on_outlet(&state, &who, outlet, |f, o, id| f.a_report(o, id, true)).await?;
    Ok(respond(vec![r], render, StatusCode::CREATED))
}

/// Seals every daily, monthly and yearly closing that is due (the server
/// also does this by itself every minute). Owner and cashier keys only.
#[utoipa::path(
    post,
    path = "/v1/outlets/{outlet}/closings",
    tag = "reports",
    params(("outlet" = String, Path, description = "Outlet id"), ReportQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "`{reports: [...]}` (possibly empty), or text/plain", content((Object = "application/json"), (String = "text/plain"))),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn close_periods(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(outlet): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let render = q.render()?;
    must_close(&who)?;
    let done = on_outlet(&state, &who, outlet, |f, o, id| f.close_periods(o, id)).await?;
    if matches!(render, Render::Json) {
        // Always a list for closings, even of one or none.
        let docs: Vec<_> = done.iter().map(Report::to_json).collect();
        return Ok(Json(serde_json::json!({ "reports": docs })).into_response());
    }
    Ok(respond(done, render, StatusCode::OK))
}

/// An abandoned sale.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncompleteSaleRequest {
    /// Till: 1 to 64 characters, no control character.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub pos_terminal_id: String,
    /// Cashier id: 1 to 64 characters, no control character.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub cashier_id: String,
    /// Value of the sale when abandoned, CDF, as a decimal string: zero or
    /// more, at most 2 places.
    #[schema(pattern = "^[0-9]{1,20}(\\.[0-9]{1,2})?$")]
    pub amount: String,
    /// Why: at most 200 characters, no control character.
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub reason: String,
}

/// The amount of an abandoned sale: 1 to 20 digits, then optionally `.`
/// and 1 or 2 digits, exactly the document's pattern (`Decimal`'s own
/// parser would also take `_`, `+` and more places).
fn sale_amount(text: &str) -> Option<Decimal> {
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = match text.split_once('.') {
        Some((int, frac)) => digits(int, 20) && digits(frac, 2),
        None => digits(text, 20),
    };
    if well_formed { text.parse().ok() } else { None }
}

/// Records an abandoned sale (counted as an incomplete sale in X and Z).
#[utoipa::path(
    post,
    path = "/v1/outlets/{outlet}/incomplete-sales",
    tag = "reports",
    params(("outlet" = String, Path, description = "Outlet id")),
    request_body = IncompleteSaleRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "`{report, sealed}`", body = Object),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn incomplete_sale(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(outlet): ApiPath<String>,
    ApiJson(req): ApiJson<IncompleteSaleRequest>,
) -> Result<Response, ApiError> {
    if !who.role.can_fiscalize() {
        return Err(ApiError::Forbidden(format!(
            "a {} key cannot record sales",
            who.role
        )));
    }
    let amount = sale_amount(&req.amount).ok_or_else(|| {
        ApiError::invalid(
            "amount",
            "invalid_decimal",
            "amount is a decimal string: digits, and at most 2 places after a `.`",
        )
    })?;
    let sale = IncompleteSale {
        merchant_nif: who.merchant_nif.clone(),
        pos_terminal_id: req.pos_terminal_id,
        cashier_id: req.cashier_id,
        amount,
        reason: req.reason,
    };
    let r = on_outlet(&state, &who, outlet, move |f, o, _| {
        f.record_incomplete_sale(o, &sale)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(r.to_json())).into_response())
}

/// Export period.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// First business day, `YYYY-MM-DD` in the outlet's time zone (the
    /// bundle starts at the last Z report at or before it). Default: the
    /// whole chain.
    #[param(format = Date)]
    pub from: Option<String>,
    /// Last business day, `YYYY-MM-DD`. Default: up to now.
    #[param(format = Date)]
    pub to: Option<String>,
}

/// The outlet's audit bundle (docs/format.md §8), streamed as JSON Lines;
/// check it offline with `bonopay verify`. Owner and auditor keys only.
#[utoipa::path(
    get,
    path = "/v1/outlets/{outlet}/export",
    tag = "reports",
    params(("outlet" = String, Path, description = "Outlet id"), ExportQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "application/x-ndjson audit bundle", content_type = "application/x-ndjson", body = String),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn export(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(outlet): ApiPath<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    if !who.role.can_audit() {
        return Err(ApiError::Forbidden(format!(
            "a {} key cannot export audit bundles (owner and auditor keys may)",
            who.role
        )));
    }
    authorize_outlet(&state, &who, &outlet).await?;
    let date = |v: &Option<String>, name: &str| -> Result<Option<NaiveDate>, ApiError> {
        v.as_deref()
            .map(|d| {
                NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                    ApiError::bad_request("invalid_query", format!("{name} is YYYY-MM-DD"))
                })
            })
            .transpose()
    };
    let (from, to) = (date(&q.from, "from")?, date(&q.to, "to")?);
    let tz = state.fiscalizer.outlet_time_zone(&outlet);
    let (from_ms, to_ms) = day_bounds(tz, from, to);
    let req = ExportRequest {
        outlet: outlet.clone(),
        time_zone: tz,
        from_ms,
        to_ms,
        keys: state.trusted_keys.clone(),
        created: chrono::Utc::now().with_timezone(&tz).to_rfc3339(),
    };
    // Plan on the blocking pool (fails early, before any byte is sent),
    // then stream from a blocking thread through a bounded channel.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    let st = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        let store = st.fiscalizer.store();
        let exporter = match Exporter::new(&**store, &req) {
            Ok(e) => {
                let _ = ready_tx.send(Ok(()));
                e
            }
            Err(e) => {
                let _ = ready_tx.send(Err(ApiError::Internal(e.to_string())));
                return;
            }
        };
        for chunk in exporter {
            let item = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            let stop = item.is_err();
            if tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });
    ready_rx
        .await
        .map_err(|_| ApiError::Internal("export task ended".into()))??;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let file = format!("attachment; filename=\"{outlet}-bundle.jsonl\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (header::CONTENT_DISPOSITION, file),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The trusted-time bounds (ms) of business days in a zone: from the
/// start of `from` to the last millisecond of `to`, outlet time (the
/// export endpoint and `bonopay export` read the same days).
pub fn day_bounds(
    tz: Tz,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> (Option<i64>, Option<i64>) {
    let start = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| tz.from_local_datetime(&t).earliest())
            .map(|t| t.timestamp_millis())
    };
    (
        from.and_then(start),
        to.and_then(|d| d.succ_opt()).and_then(start).map(|t| t - 1),
    )
}
