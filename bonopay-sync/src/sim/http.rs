//! The simulator's HTTP face: thin axum handlers over [`Simulator`]'s
//! synchronous operations, plus the fault wrapper every `/api` call goes
//! through.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, Faults, SettingsPatch, Simulator, convert, jwt, rfc3339};
use crate::dgi::{DgiErrorBody, DgiInvoiceRequest, DgiTotals, codes};

type Sim = State<Arc<Simulator>>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = DgiErrorBody {
            error_code: self.code.to_owned(),
            error_desc: self.desc,
        };
        (status, axum::Json(body)).into_response()
    }
}

pub(super) fn router(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route("/api/invoice", get(status).post(submit))
        .route("/api/invoice/{uid}", get(details))
        .route("/api/invoice/{uid}/{action}", put(action))
        .route("/api/info/{table}", get(info))
        .route("/_sim/confirms", get(confirms))
        .route("/_sim/stats", get(stats))
        .route("/_sim/faults", get(faults).post(set_faults))
        .route("/_sim/expire", post(expire))
        .route("/_sim/settings", get(settings).post(set_settings))
        .route("/_sim/tokens", post(issue_token))
        .route("/_sim/tokens/revoke", post(revoke_tokens))
        .route("/_sim/portal", get(portal))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .with_state(sim)
}

async fn no_route() -> ApiError {
    ApiError::new(404, codes::PROCESSING, "no such route")
}

async fn no_method() -> ApiError {
    ApiError::new(405, codes::PROCESSING, "method not allowed on this route")
}

/// A body that must be JSON: absent or not JSON at all is 400 (Benin: a
/// `POST` without a body is 400). Returns the text as received and its
/// value.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<(Arc<str>, Value), ApiError> {
    let bytes = body.map_err(|e| ApiError::new(400, codes::PROCESSING, e.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(400, codes::PROCESSING, "the body is empty"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        ApiError::new(
            400,
            codes::PROCESSING,
            format!("the body is not UTF-8: {e}"),
        )
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::new(400, codes::PROCESSING, format!("malformed JSON: {e}")))?;
    Ok((Arc::from(text), value))
}

/// JSON of the shape `T`, or error 99 in a 200 (the platform read the
/// JSON, then refused what it says). Read from the text, not from a
/// `Value`, so amounts keep their exact digits (`dgi::number`).
fn typed<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::refusal(codes::PROCESSING, format!("{what}: {e}")))
}

/// A control body (`/_sim`): 400 when it does not parse.
fn control<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(400, codes::PROCESSING, e.body_text()))?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(400, codes::PROCESSING, format!("malformed JSON: {e}")))
}

/// What every `/api` call does first: the latency, the injected error
/// (before anything else, even auth), then the token.
async fn enter(sim: &Simulator, headers: &HeaderMap) -> Result<jwt::Claims, ApiError> {
    let latency = sim.faults().latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if sim.roll_error() {
        return Err(ApiError::internal());
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    sim.authenticate(auth)
}

/// The answer of a call that changes state: committed by now, so a drop
/// only loses the response.
fn committed<T: Serialize>(sim: &Simulator, result: Result<T, ApiError>) -> Response {
    match result {
        Ok(_) if sim.roll_drop() => ApiError::internal().into_response(),
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn answer<T: Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn status(State(sim): Sim, headers: HeaderMap) -> Response {
    answer(enter(&sim, &headers).await.map(|c| sim.status(&c)))
}

/// `POST /api/invoice`, up to [`Simulator::submit`]: the JSON, the NIF,
/// strings where numbers are due (checked on the raw JSON), the shape.
fn read_invoice(
    sim: &Simulator,
    claims: &jwt::Claims,
    body: Result<Bytes, BytesRejection>,
) -> Result<(DgiInvoiceRequest, Arc<str>), ApiError> {
    let (raw, value) = json_body(body)?;
    if let Some(nif) = value.get("nif").and_then(Value::as_str)
        && nif != claims.nif
    {
        return Err(Simulator::foreign_nif(nif, &claims.nif));
    }
    if sim.refuses_string_decimals()
        && let Some(r) = convert::strings_refusal(&convert::string_decimals_in_invoice(&value))
    {
        return Err(r.into());
    }
    let req = typed::<DgiInvoiceRequest>(&raw, "the invoice is not an InvoiceRequestDataDto")?;
    Ok((req, raw))
}

async fn submit(
    State(sim): Sim,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = match enter(&sim, &headers).await {
        Ok(claims) => read_invoice(&sim, &claims, body)
            .inspect_err(|_| sim.count_rejected())
            .and_then(|(req, raw)| sim.submit(&claims.nif, &req, raw)),
        Err(e) => Err(e),
    };
    committed(&sim, result)
}

async fn details(
    State(sim): Sim,
    headers: HeaderMap,
    uid: Result<Path<String>, PathRejection>,
) -> Response {
    let result = match enter(&sim, &headers).await {
        Ok(claims) => uid
            .map_err(|e| ApiError::new(400, codes::PROCESSING, e.body_text()))
            .and_then(|Path(uid)| sim.echo(&claims.nif, &uid)),
        Err(e) => Err(e),
    };
    match result {
        // The request as received, byte for byte.
        Ok(raw) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            raw.to_string(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The CONFIRM body: JSON, numbers where due, then `{total, vtotal}`.
fn read_totals(
    sim: &Simulator,
    body: Result<Bytes, BytesRejection>,
) -> Result<DgiTotals, ApiError> {
    let (raw, value) = json_body(body).map_err(|e| ApiError {
        desc: format!("CONFIRM needs {{\"total\", \"vtotal\"}}: {}", e.desc),
        ..e
    })?;
    if sim.refuses_string_decimals()
        && let Some(r) = convert::strings_refusal(&convert::string_decimals_in_totals(&value))
    {
        return Err(r.into());
    }
    typed(&raw, "CONFIRM needs {\"total\", \"vtotal\"}")
}

async fn action(
    State(sim): Sim,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let claims = match enter(&sim, &headers).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let (uid, action) = match path {
        Ok(Path(p)) => p,
        Err(e) => return ApiError::new(400, codes::PROCESSING, e.body_text()).into_response(),
    };
    if action.eq_ignore_ascii_case("confirm") {
        let result =
            read_totals(&sim, body).and_then(|totals| sim.confirm(&claims.nif, &uid, &totals));
        committed(&sim, result)
    } else if action.eq_ignore_ascii_case("cancel") {
        let result = sim.cancel(&claims.nif, &uid).map(|at| {
            serde_json::json!({
                "dateTime": at,
                "codeDEFDGI": null,
                "counters": null,
                "nim": null,
                "qrCode": null,
            })
        });
        committed(&sim, result)
    } else {
        ApiError::new(
            404,
            codes::PROCESSING,
            format!("unknown action {action:?}: CONFIRM or CANCEL"),
        )
        .into_response()
    }
}

async fn info(
    State(sim): Sim,
    headers: HeaderMap,
    table: Result<Path<String>, PathRejection>,
) -> Response {
    let result = match enter(&sim, &headers).await {
        Ok(claims) => table
            .map_err(|e| ApiError::new(400, codes::PROCESSING, e.body_text()))
            .and_then(|Path(table)| {
                sim.info(&claims, &table).ok_or_else(|| {
                    ApiError::new(404, codes::PROCESSING, format!("no info table {table:?}"))
                })
            }),
        Err(e) => Err(e),
    };
    answer(result)
}

async fn confirms(State(sim): Sim) -> Response {
    axum::Json(sim.confirms()).into_response()
}

async fn stats(State(sim): Sim) -> Response {
    axum::Json(sim.stats()).into_response()
}

async fn faults(State(sim): Sim) -> Response {
    axum::Json(sim.faults()).into_response()
}

async fn set_faults(State(sim): Sim, body: Result<Bytes, BytesRejection>) -> Response {
    answer(control::<Faults>(body).map(|f| {
        sim.set_faults(f);
        sim.faults()
    }))
}

async fn expire(State(sim): Sim) -> Response {
    axum::Json(serde_json::json!({"expired": sim.expire_all()})).into_response()
}

async fn settings(State(sim): Sim) -> Response {
    axum::Json(sim.settings()).into_response()
}

async fn set_settings(State(sim): Sim, body: Result<Bytes, BytesRejection>) -> Response {
    answer(control::<SettingsPatch>(body).and_then(|p| {
        sim.update_settings(&p)
            .map_err(|e| ApiError::new(400, codes::PROCESSING, e.to_string()))
    }))
}

/// `POST /_sim/tokens`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TokenRequest {
    nif: Option<String>,
    emcf_id: Option<String>,
    ttl_secs: Option<i64>,
}

async fn issue_token(State(sim): Sim, body: Result<Bytes, BytesRejection>) -> Response {
    answer(control::<TokenRequest>(body).map(|t| {
        let config = sim.config();
        let token = sim.issue_token_for(
            t.nif.as_deref().unwrap_or(&config.nif),
            t.emcf_id.as_deref().unwrap_or(&config.emcf_id),
            t.ttl_secs.unwrap_or(3600),
        );
        serde_json::json!({ "token": token })
    }))
}

/// `POST /_sim/tokens/revoke`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RevokeRequest {
    nif: Option<String>,
}

async fn revoke_tokens(State(sim): Sim, body: Result<Bytes, BytesRejection>) -> Response {
    answer(control::<RevokeRequest>(body).map(|r| {
        let at = match &r.nif {
            Some(nif) => sim.revoke_tokens_of(nif),
            None => sim.revoke_tokens(),
        };
        serde_json::json!({ "revoked_before": rfc3339(at), "nif": r.nif })
    }))
}

/// `GET /_sim/portal?nif=…&rn=…`.
#[derive(Debug, Deserialize)]
struct PortalQuery {
    nif: String,
    rn: Option<String>,
}

async fn portal(State(sim): Sim, query: Result<Query<PortalQuery>, QueryRejection>) -> Response {
    answer(
        query
            .map_err(|e| {
                ApiError::new(
                    400,
                    codes::PROCESSING,
                    format!("GET /_sim/portal?nif=…[&rn=…]: {}", e.body_text()),
                )
            })
            .map(|Query(q)| sim.portal(&q.nif, q.rn.as_deref())),
    )
}
