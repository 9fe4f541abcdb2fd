//! The simulator's HTTP face: thin axum handlers over [`Simulator`]'s
//! synchronous operations, plus the fault wrapper every `/api` call goes
//! through.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ApiError, Faults, Simulator, jwt};
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
        .route("/_sim/confirms", get(confirms))
        .route("/_sim/stats", get(stats))
        .route("/_sim/faults", get(faults).post(set_faults))
        .route("/_sim/expire", post(expire))
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

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(400, codes::PROCESSING, e.body_text()))?;
    if bytes.is_empty() {
        return Err(ApiError::new(400, codes::PROCESSING, "the body is empty"));
    }
    serde_json::from_slice(&bytes)
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

async fn submit(
    State(sim): Sim,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = match enter(&sim, &headers).await {
        Ok(claims) => parse::<DgiInvoiceRequest>(body)
            .inspect_err(|_| sim.count_rejected())
            .and_then(|req| sim.submit(&claims.nif, &req)),
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
            .and_then(|Path(uid)| sim.details_for(&claims.nif, &uid)),
        Err(e) => Err(e),
    };
    answer(result)
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
        let result = parse::<DgiTotals>(body)
            .map_err(|e| ApiError {
                desc: format!("CONFIRM needs {{\"total\", \"vtotal\"}}: {}", e.desc),
                ..e
            })
            .and_then(|totals| sim.confirm(&claims.nif, &uid, &totals));
        committed(&sim, result)
    } else if action.eq_ignore_ascii_case("cancel") {
        committed(&sim, sim.cancel(&claims.nif, &uid))
    } else {
        ApiError::new(
            404,
            codes::PROCESSING,
            format!("unknown action {action:?}: CONFIRM or CANCEL"),
        )
        .into_response()
    }
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
    answer(parse::<Faults>(body).map(|f| {
        sim.set_faults(f);
        sim.faults()
    }))
}

async fn expire(State(sim): Sim) -> Response {
    axum::Json(serde_json::json!({"expired": sim.expire_all()})).into_response()
}
