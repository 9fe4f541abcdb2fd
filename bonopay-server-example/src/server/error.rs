//! One error body for every error the API returns:
//!
//! ```json
//! {"error": {"code": "validation_failed", "message": "…", "details": [{"path", "code", "message"}]}}
//! ```
//!
//! `details` is present only for validation errors (422). Internal errors are
//! logged on stderr and answered with a generic 500 that carries no detail.
//! Responses produced outside the handlers (the timeout layer, the panic
//! catcher, axum's 405) are rewritten into the same shape by
//! [`normalize_errors`].

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bonopay_core::ValidationErrors;
use serde::Serialize;
use utoipa::ToSchema;

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// One validation problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the offending value, e.g. `items[2].quantity` (empty for
    /// the document itself).
    pub path: String,
    /// Stable machine code (see `bonopay_core::ErrorCode`).
    pub code: String,
    /// Human explanation; may change between versions.
    pub message: String,
}

/// The inside of every error body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine code, e.g. `not_found`, `validation_failed`.
    pub code: String,
    /// Human explanation.
    pub message: String,
    /// Every problem, for `validation_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
}

/// Every error response body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Why a request failed. Each variant has one status and one code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request is malformed (query, path, header).
    #[error("{code}: {message}")]
    BadRequest {
        /// Machine code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 401: no key, an unknown key or a revoked key.
    #[error("unauthorized")]
    Unauthorized,
    /// 403: the key belongs to this merchant but its role or outlets do not
    /// allow the operation.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 403: an unsafe request authenticated by the session cookie without
    /// the session's `X-CSRF-Token`.
    #[error("csrf_failed")]
    CsrfFailed,
    /// 404: nothing here — also the answer for another merchant's data.
    #[error("not found")]
    NotFound,
    /// 409: a conflict (idempotency key reused, outlet id taken).
    #[error("{code}: {message}")]
    Conflict {
        /// Machine code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 413: the body is larger than the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 422: every validation problem.
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// 503: a dependency is down; retry later with the same request.
    #[error("{code}: {message}")]
    Unavailable {
        /// Machine code (`signer_unavailable`, `storage_unavailable`, `clock_behind`).
        code: &'static str,
        /// Explanation (never secret).
        message: String,
    },
    /// 502: an upstream service (SMTP server, messaging API) failed.
    #[error("{code}: {message}")]
    BadGateway {
        /// Machine code (`delivery_failed`).
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 500: anything else. The message is logged, never sent.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<ValidationErrors> for ApiError {
    fn from(e: ValidationErrors) -> Self {
        ApiError::Validation(
            e.0.into_iter()
                .map(|v| FieldError {
                    path: v.path,
                    code: v.code.as_str().to_owned(),
                    message: v.message,
                })
                .collect(),
        )
    }
}

impl ApiError {
    /// A store the request needs could not be reached (a database
    /// restarting, every pooled connection busy): 503 with `Retry-After`,
    /// never 500, since the same request will succeed once it is back.
    /// The detail is logged, not answered.
    pub fn store_unavailable(what: &'static str, e: &dyn std::fmt::Display) -> Self {
        tracing::warn!(store = what, error = %e, "store unavailable");
        ApiError::Unavailable {
            code: "storage_unavailable",
            message: format!("the {what} is unavailable; retry later"),
        }
    }

    /// A 422 with one problem.
    #[must_use]
    pub fn invalid(path: &str, code: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError {
            path: path.to_owned(),
            code: code.to_owned(),
            message: message.into(),
        }])
    }

    /// A 400.
    #[must_use]
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::CsrfFailed => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(&self) -> ErrorBody {
        let (code, message, details) = match self {
            ApiError::BadRequest { code, message } => ((*code).to_owned(), message.clone(), None),
            ApiError::Unauthorized => (
                "unauthorized".to_owned(),
                "a valid API key is required: Authorization: Bearer <key>".to_owned(),
                None,
            ),
            ApiError::Forbidden(m) => ("forbidden".to_owned(), m.clone(), None),
            ApiError::CsrfFailed => (
                "csrf_failed".to_owned(),
                "a request by session cookie that changes something needs the X-CSRF-Token \
                 header the sign-in returned"
                    .to_owned(),
                None,
            ),
            ApiError::NotFound => ("not_found".to_owned(), "not found".to_owned(), None),
            ApiError::Conflict { code, message } => ((*code).to_owned(), message.clone(), None),
            ApiError::PayloadTooLarge => (
                "payload_too_large".to_owned(),
                "the request body is larger than the limit".to_owned(),
                None,
            ),
            ApiError::Validation(d) => (
                "validation_failed".to_owned(),
                format!("{} validation error(s)", d.len()),
                Some(d.clone()),
            ),
            ApiError::Unavailable { code, message } | ApiError::BadGateway { code, message } => {
                ((*code).to_owned(), message.clone(), None)
            }
            ApiError::Internal(_) => ("internal".to_owned(), "internal error".to_owned(), None),
        };
        ErrorBody {
            error: ErrorDetail {
                code,
                message,
                details,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(msg) = &self {
            tracing::error!(error = %msg, "internal error");
        }
        let status = self.status();
        let mut resp = (status, Json(self.body())).into_response();
        match self {
            ApiError::Unavailable { .. } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            ApiError::Unauthorized => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

/// Rewrites any error response that is not already our JSON error body (a
/// 405 from the router, a 408 from the timeout layer, a 500 from the panic
/// catcher) into the one error body, keeping its status.
pub async fn normalize_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
        StatusCode::REQUEST_TIMEOUT => (
            "timeout",
            "the request took too long; retry it (with the same Idempotency-Key)",
        ),
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than the limit",
        ),
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("bad_request", "bad request"),
    };
    let (mut parts, _) = resp.into_parts();
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            details: None,
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::REQUEST_TIMEOUT {
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    Response::from_parts(parts, Body::from(bytes))
}
