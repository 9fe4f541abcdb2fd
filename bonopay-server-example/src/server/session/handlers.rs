//! `POST`, `GET` and `DELETE /v1/session`: sign-in with an API key,
//! "who am I", sign-out. How a request is authenticated by the cookie (and
//! the CSRF check) is the principal extractor's, in [`crate::server`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{COOKIE_NAME, Session, new_session};
use crate::server::auth::{ApiKey, Role, hash_token};
use crate::server::error::{ApiError, ErrorBody};
use crate::server::{ApiJson, CurrentSession, Shared, blocking, unix_now};

/// The sign-in form: an API key, as `bonopay keys create` or
/// `POST /v1/keys` gave it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// The API key token (`bp_live_…`).
    pub api_key: String,
}

/// Who is signed in, and what the app may show them: the key's role and
/// outlets decide it, and the API refuses the rest anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// The key the session acts as.
    pub key_id: String,
    /// The key's label, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The key's role.
    pub role: Role,
    /// The key's merchant.
    pub merchant_nif: String,
    /// The outlets the key covers, resolved: for a key of every outlet, the
    /// merchant's registered outlets now.
    pub outlets: Vec<String>,
    /// Whether the key covers every outlet of the merchant (including ones
    /// registered later).
    pub all_outlets: bool,
    /// Send it as `X-CSRF-Token` on every POST, PUT, PATCH and DELETE made
    /// with the session cookie. Returned by `GET /v1/session` too, so an
    /// app reloaded in the browser (which cannot read the `HttpOnly`
    /// cookie) gets it back: only a page of this origin can read the
    /// answer.
    pub csrf_token: String,
    /// When the session ends unless a request comes first (RFC 3339 UTC):
    /// 12 h after the last request, never past 7 days after sign-in.
    pub expires_at: String,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The session's answer body, the key's outlets resolved.
async fn info(state: &Shared, key: ApiKey, session: &Session) -> Result<SessionInfo, ApiError> {
    let (outlets, all_outlets) = match key.outlets.clone() {
        Some(o) => (o, false),
        None => {
            let keys = Arc::clone(state.keys());
            let nif = key.merchant_nif.clone();
            let list = blocking(move || keys.list_outlets(&nif).map_err(internal)).await?;
            (list.into_iter().map(|o| o.id).collect(), true)
        }
    };
    Ok(SessionInfo {
        key_id: key.id,
        label: key.label,
        role: key.role,
        merchant_nif: key.merchant_nif,
        outlets,
        all_outlets,
        csrf_token: session.csrf_token.clone(),
        expires_at: rfc3339(session.ends_at()),
    })
}

/// The `Set-Cookie` value: the token for `max_age` seconds (0 clears it).
fn cookie(state: &Shared, token: &str, max_age: i64) -> Result<HeaderValue, ApiError> {
    let secure = if state.secure_cookie() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        max_age.max(0)
    ))
    .map_err(internal)
}

/// Signs in: exchanges an API key for a session.
///
/// The key is checked as bearer authentication checks it (unknown or
/// revoked: 401, the same body). The answer sets the `bp_session` cookie
/// (`HttpOnly; SameSite=Strict; Path=/; Max-Age` of the absolute lifetime,
/// `Secure` when the server is configured behind HTTPS). The body must be
/// sent as `application/json`: a cross-site form cannot, so no other site
/// can sign a browser into a key of its choosing.
#[utoipa::path(
    post,
    path = "/v1/session",
    tag = "session",
    request_body = SignInRequest,
    responses(
        (status = 201, description = "Signed in; the session cookie is set", body = SessionInfo,
         headers(("Set-Cookie" = String, description = "bp_session=…; HttpOnly; SameSite=Strict; Path=/; Max-Age=…"))),
        (status = 400, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 401, description = "Unknown or revoked API key", body = ErrorBody),
        (status = 503, description = "The key or session store is unavailable", body = ErrorBody),
    )
)]
pub async fn create_session(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignInRequest>,
) -> Result<Response, ApiError> {
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::bad_request(
            "unsupported_content_type",
            "send the sign-in as Content-Type: application/json",
        ));
    }
    let hash = hash_token(req.api_key.trim());
    let keys = Arc::clone(state.keys());
    let key = blocking(move || keys.key_by_hash(&hash).map_err(internal)).await?;
    let key = match key {
        Some(k) if !k.revoked => k,
        _ => return Err(ApiError::Unauthorized),
    };
    let now = unix_now();
    let made = new_session(&key, now).map_err(internal)?;
    let sessions = Arc::clone(state.sessions());
    let (hash, stored) = (made.hash, made.session.clone());
    blocking(move || {
        sessions.create(&hash, &stored).map_err(internal)?;
        // Housekeeping: ended sessions go at the next sign-in.
        if let Err(e) = sessions.purge_expired(now) {
            tracing::warn!(error = %e, "purging ended sessions");
        }
        Ok(())
    })
    .await?;
    let set = cookie(
        &state,
        &made.token,
        made.session.expires_at.saturating_sub(now),
    )?;
    let body = info(&state, key, &made.session).await?;
    Ok((
        StatusCode::CREATED,
        AppendHeaders([(SET_COOKIE, set)]),
        Json(body),
    )
        .into_response())
}

/// Who is signed in: the session of the `bp_session` cookie (a bearer key
/// has no session: 401).
#[utoipa::path(
    get,
    path = "/v1/session",
    tag = "session",
    security(("session" = [])),
    responses(
        (status = 200, description = "The session", body = SessionInfo),
        (status = 401, description = "No live session (signed out, ended, or the key revoked)", body = ErrorBody),
    )
)]
pub async fn get_session(
    State(state): State<Shared>,
    current: CurrentSession,
) -> Result<Json<SessionInfo>, ApiError> {
    Ok(Json(info(&state, current.key, &current.session).await?))
}

/// Signs out: ends the session and clears the cookie. Needs the
/// `X-CSRF-Token` header, as every unsafe request by cookie does.
#[utoipa::path(
    delete,
    path = "/v1/session",
    tag = "session",
    security(("session" = [])),
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses(
        (status = 204, description = "Signed out; the cookie is cleared (Max-Age=0)"),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "Missing or wrong X-CSRF-Token (code csrf_failed)", body = ErrorBody),
    )
)]
pub async fn delete_session(
    State(state): State<Shared>,
    current: CurrentSession,
) -> Result<Response, ApiError> {
    let sessions = Arc::clone(state.sessions());
    let hash = current.hash;
    blocking(move || sessions.delete(&hash).map_err(internal)).await?;
    let clear = cookie(&state, "", 0)?;
    Ok((StatusCode::NO_CONTENT, AppendHeaders([(SET_COOKIE, clear)])).into_response())
}
