//! The reference HTTP server: a JSON API over the sealing pipeline.
//!
//! [`router`] builds the whole `axum::Router` from an [`AppState`], so an
//! embedding application (or a test, with `tower::ServiceExt::oneshot`)
//! drives it without a socket; `bonopay serve` ([`crate::cli::serve`]) binds
//! it to a TCP listener. The fiscal core is synchronous: every call into the
//! [`Fiscalizer`], the ledger or the key store runs on tokio's blocking pool
//! (`spawn_blocking`), never on the async workers.
//!
//! Layers, outermost first: error-body normalization, panic catcher (a
//! panic is a generic 500), an announced `Content-Length` over the limit
//! (413 before the body is read), request timeout (408), body-size limit
//! (413, enforced when a handler reads the body). Connection limits
//! (header and idle timeouts, a connection cap) are the listener's:
//! [`listen`].

pub mod auth;
pub mod deliveries;
pub mod egress;
pub mod error;
pub mod invoices;
pub mod listen;
pub mod manage;
pub mod metrics;
pub mod ops;
pub(crate) mod pg;
/// Receipts live with the library's presentation, so a POS vendor prints
/// them without the server; the former paths stay.
pub use bonopay_signer::render::{receipt, receipt_pdf};
pub mod reports;
pub mod schema;
pub mod session;
pub mod sync;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::Method;
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::middleware::map_response;
use bonopay_signer::{Fiscalizer, PublicKey};
use serde::de::DeserializeOwned;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{
    ApiKey as ApiKeyScheme, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::auth::{ApiKey, ApiKeyStore, hash_token};
use self::error::ApiError;
use self::metrics::Metrics;
use self::session::{MemorySessionStore, Session, SessionStore};

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted request body, in bytes (413 above).
    pub body_bytes: usize,
    /// Longest a request may take before it is answered 408.
    pub request_timeout: Duration,
}

impl Default for Limits {
    /// 1 MiB bodies, 30 s per request.
    fn default() -> Self {
        Self {
            body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

pub use bonopay_signer::render::receipt::MerchantProfile;

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    fiscalizer: Arc<Fiscalizer>,
    keys: Arc<dyn ApiKeyStore>,
    trusted_keys: Vec<PublicKey>,
    merchants: HashMap<String, MerchantProfile>,
    metrics: Metrics,
    limits: Limits,
    deliveries: deliveries::Deliveries,
    webhooks: Option<webhooks::Webhooks>,
    sync: Option<sync::SyncService>,
    connection_stats: Arc<listen::ConnectionStats>,
    config_conflicts: Vec<crate::cli::serve::OutletConflict>,
    sessions: Arc<dyn SessionStore>,
    secure_cookie: bool,
}

impl AppState {
    /// A state over a fiscalizer and a key store, with default limits and
    /// the fiscalizer's signing key as the only trusted key.
    #[must_use]
    pub fn new(fiscalizer: Arc<Fiscalizer>, keys: Arc<dyn ApiKeyStore>) -> Self {
        let trusted_keys = vec![fiscalizer.signer().public_key().clone()];
        Self {
            fiscalizer,
            keys,
            trusted_keys,
            merchants: HashMap::new(),
            metrics: Metrics::new(),
            limits: Limits::default(),
            deliveries: deliveries::Deliveries::default(),
            webhooks: None,
            sync: None,
            connection_stats: Arc::default(),
            config_conflicts: Vec::new(),
            sessions: Arc::new(MemorySessionStore::new()),
            secure_cookie: false,
        }
    }

    /// Sets the browser-session store (default: in memory, which several
    /// instances behind one load balancer do not share).
    #[must_use]
    pub fn with_sessions(mut self, sessions: Arc<dyn SessionStore>) -> Self {
        self.sessions = sessions;
        self
    }

    /// Marks the session cookie `Secure` (default: not). The server speaks
    /// plain HTTP itself; set this when browsers reach it through HTTPS (a
    /// TLS-terminating proxy), so the cookie never travels in clear text.
    #[must_use]
    pub fn with_secure_cookie(mut self, secure: bool) -> Self {
        self.secure_cookie = secure;
        self
    }

    /// The browser-session store.
    #[must_use]
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// Whether the session cookie is marked `Secure`.
    #[must_use]
    pub fn secure_cookie(&self) -> bool {
        self.secure_cookie
    }

    /// The counters [`listen::serve`] keeps for this server, shown by
    /// `/metrics`: pass them to it.
    #[must_use]
    pub fn connection_stats(&self) -> Arc<listen::ConnectionStats> {
        Arc::clone(&self.connection_stats)
    }

    /// Outlets of `config.json` that were ignored because another merchant
    /// registered them first; `/healthz` lists them.
    #[must_use]
    pub fn with_config_conflicts(
        mut self,
        conflicts: Vec<crate::cli::serve::OutletConflict>,
    ) -> Self {
        self.config_conflicts = conflicts;
        self
    }

    /// Sets the request limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Also trusts `key` when reading stored invoices and verifying QR
    /// codes (keys the outlets signed with before a rotation).
    #[must_use]
    pub fn trust_key(mut self, key: PublicKey) -> Self {
        if !self.trusted_keys.iter().any(|k| k.key_id() == key.key_id()) {
            self.trusted_keys.push(key);
        }
        self
    }

    /// Sets the receipt delivery channels and record store (default: in
    /// memory, no channel).
    #[must_use]
    pub fn with_deliveries(mut self, deliveries: deliveries::Deliveries) -> Self {
        self.deliveries = deliveries;
        self
    }

    /// Enables the webhook API (`/v1/webhooks`) over `webhooks` (default:
    /// none, the endpoints answer 503). The producer and dispatcher run
    /// separately ([`webhooks::Webhooks::spawn`]).
    #[must_use]
    pub fn with_webhooks(mut self, webhooks: webhooks::Webhooks) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    /// Enables the DGI sync endpoints (health, per-invoice status,
    /// requeue) over `sync` (default: none, they answer 503). The agent
    /// itself runs on its own thread ([`sync::spawn_agent`]).
    #[must_use]
    pub fn with_sync(mut self, sync: sync::SyncService) -> Self {
        self.sync = Some(sync);
        self
    }

    /// Sets what receipts print about a merchant.
    #[must_use]
    pub fn with_merchant(mut self, nif: &str, profile: MerchantProfile) -> Self {
        self.merchants.insert(nif.to_owned(), profile);
        self
    }

    /// The key store.
    #[must_use]
    pub fn keys(&self) -> &Arc<dyn ApiKeyStore> {
        &self.keys
    }

    /// The metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Shared state as the handlers see it.
pub type Shared = Arc<AppState>;

/// Starts the server's own background work on the current runtime: every
/// `interval`, the receipt deliveries that were waiting for their
/// invoice's DGI certification are sent once it has arrived.
pub fn spawn_background(state: &Shared, interval: std::time::Duration) {
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            if let Err(e) = deliveries::send_waiting(&state).await {
                tracing::warn!(error = ?e, "waiting receipt deliveries");
            }
        }
    });
}

/// Runs `f` on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}

/// Now, in Unix seconds (the sessions' clock).
pub(crate) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The authenticated caller: the API key named by `Authorization: Bearer`,
/// or, when there is no `Authorization` header, the key of the browser
/// session named by the `bp_session` cookie ([`session`]). Looked up on
/// every request (no cache), so revocation is immediate for both. An unsafe
/// request (anything but GET, HEAD, OPTIONS) authenticated by the cookie
/// also needs `X-CSRF-Token` equal to the session's token, else 403
/// `csrf_failed`: a browser attaches the cookie to requests other sites
/// make it send, never a header. Bearer requests need no CSRF token, since
/// no browser adds that header on its own.
#[derive(Debug, Clone)]
pub struct Principal(pub ApiKey);

impl FromRequestParts<Shared> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let (key, session) = authenticate(parts, state).await?;
        if let Some((_, session)) = &session {
            check_csrf(parts, session)?;
        }
        Ok(Principal(key))
    }
}

/// The caller's browser session (the `bp_session` cookie), with the key
/// it acts as; the CSRF token is checked as for [`Principal`]. A request
/// with a bearer key, or none, has no session: 401.
#[derive(Debug, Clone)]
pub struct CurrentSession {
    /// The key the session acts as, as just re-read.
    pub key: ApiKey,
    /// The session token's hash.
    pub hash: [u8; 32],
    /// The session.
    pub session: Session,
}

impl FromRequestParts<Shared> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        match authenticate(parts, state).await? {
            (key, Some((hash, session))) => {
                check_csrf(parts, &session)?;
                Ok(CurrentSession { key, hash, session })
            }
            (_, None) => Err(ApiError::Unauthorized),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

/// The caller's key, and its session when the cookie named it. An
/// `Authorization` header decides alone (a bad bearer key is a 401, even
/// with a cookie), so that API clients never depend on cookies.
async fn authenticate(
    parts: &Parts,
    state: &Shared,
) -> Result<(ApiKey, Option<([u8; 32], Session)>), ApiError> {
    if let Some(value) = parts.headers.get(AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let hash = hash_token(token);
        let keys = Arc::clone(&state.keys);
        let key = blocking(move || {
            keys.key_by_hash(&hash)
                .map_err(|e| ApiError::store_unavailable("key store", &e))
        })
        .await?;
        return match key {
            Some(k) if !k.revoked => Ok((k, None)),
            _ => Err(ApiError::Unauthorized),
        };
    }
    let token = cookie_value(parts, session::COOKIE_NAME)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let hash = session::hash_session_token(token);
    let keys = Arc::clone(&state.keys);
    let sessions = Arc::clone(&state.sessions);
    blocking(move || {
        // A store that cannot be reached (a database restart, a pool
        // exhausted) is 503 with Retry-After, never 500.
        let internal = |e: &dyn std::fmt::Display| ApiError::store_unavailable("key store", e);
        let now = unix_now();
        let session = sessions
            .get(&hash, now)
            .map_err(|e| internal(&e))?
            .ok_or(ApiError::Unauthorized)?;
        // The key, re-read: its role and outlets as they are now, and a
        // revocation (by any path, any instance) ends the session here.
        let key = keys
            .list_keys(&session.merchant_nif)
            .map_err(|e| internal(&e))?
            .into_iter()
            .find(|k| k.id == session.key_id);
        let key = match key {
            Some(k) if !k.revoked => k,
            _ => {
                if let Err(e) = sessions.delete_for_key(&session.key_id) {
                    tracing::warn!(error = %e, "deleting the sessions of a revoked key");
                }
                return Err(ApiError::Unauthorized);
            }
        };
        if now - session.last_seen_at >= session::TOUCH_INTERVAL_SECS
            && !sessions.touch(&hash, now).map_err(|e| internal(&e))?
        {
            return Err(ApiError::Unauthorized);
        }
        Ok((key, Some((hash, session))))
    })
    .await
}

/// For an unsafe method, `X-CSRF-Token` must be the session's token.
fn check_csrf(parts: &Parts, session: &Session) -> Result<(), ApiError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let sent = parts
        .headers
        .get(session::CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if session::constant_time_eq(sent, session.csrf_token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::CsrfFailed)
    }
}

/// `axum::extract::Path` whose rejection is our error body (400).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// `axum::extract::Query` whose rejection is our error body (400).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The raw body, within the size limit (413 above it).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::bad_request("unreadable_body", e.body_text())
                }
            })
    }
}

/// A JSON body (any content type), within the size limit; malformed JSON
/// is a 422 with code `invalid_json`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid("", "invalid_json", e.to_string()))
    }
}

/// Checks that `outlet` is registered to the caller's merchant (else 404,
/// whoever it belongs to) and that the key is bound to it (else 403).
async fn authorize_outlet(state: &Shared, who: &ApiKey, outlet: &str) -> Result<(), ApiError> {
    let keys = Arc::clone(&state.keys);
    let id = outlet.to_owned();
    let found = blocking(move || {
        keys.outlet(&id)
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    match found {
        Some(o) if o.merchant_nif == who.merchant_nif => {
            if who.covers(outlet) {
                Ok(())
            } else {
                Err(ApiError::Forbidden(format!(
                    "this key is not bound to outlet {outlet}"
                )))
            }
        }
        _ => Err(ApiError::NotFound),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bono Pay reference server",
        description = "Fiscalization API for the DR Congo facture normalisée. \
Every error has the body {\"error\": {\"code\", \"message\", \"details\"?}}.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "api_key",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
            components.add_security_scheme(
                "session",
                SecurityScheme::ApiKey(ApiKeyScheme::Cookie(ApiKeyValue::with_description(
                    session::COOKIE_NAME,
                    "The browser session of POST /v1/session; unsafe requests also \
                     need X-CSRF-Token",
                ))),
            );
        }
    }
}

fn api() -> (Router<Shared>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(invoices::create_invoice))
        .routes(routes!(invoices::lookup_invoice))
        .routes(routes!(invoices::get_invoice))
        .routes(routes!(invoices::receipt_txt))
        .routes(routes!(invoices::receipt_svg))
        .routes(routes!(invoices::receipt_pdf))
        .routes(routes!(
            deliveries::create_delivery,
            deliveries::list_deliveries
        ))
        .routes(routes!(invoices::list_outlet_invoices))
        .routes(routes!(reports::x_report))
        .routes(routes!(reports::z_report, reports::list_z_reports))
        .routes(routes!(reports::get_z_report))
        .routes(routes!(reports::a_report_preview, reports::a_report_seal))
        .routes(routes!(reports::close_periods))
        .routes(routes!(reports::incomplete_sale))
        .routes(routes!(reports::export))
        .routes(routes!(
            session::handlers::create_session,
            session::handlers::get_session,
            session::handlers::delete_session
        ))
        .routes(routes!(manage::create_key, manage::list_keys))
        .routes(routes!(manage::revoke_key))
        .routes(routes!(manage::create_outlet, manage::list_outlets))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::delete_webhook))
        .routes(routes!(webhooks::list_webhook_deliveries))
        .routes(routes!(sync::sync_health))
        .routes(routes!(sync::outlet_sync))
        .routes(routes!(sync::invoice_dgi))
        .routes(routes!(sync::requeue))
        .routes(routes!(sync::resolve))
        .routes(routes!(ops::verify))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::metrics))
        .split_for_parts();
    document_common_responses(&mut doc);
    (router, doc)
}

/// Adds to every operation the error answers any request may get, where
/// its own annotations do not already describe them: a client generated
/// from the document then knows every status it can see. Which apply is
/// read off the operation: parameters or a body can be malformed (400),
/// a body can be too large (413) or invalid (422), a key can be missing
/// (401), lack the role or the outlet (403) or meet a store that is down
/// (503), a path can name nothing (404); any request can time out (408)
/// or fail inside (500).
fn document_common_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::Operation;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let has_path_params = path.contains('{');
        let ops: [Option<&mut Operation>; 4] = [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
        ];
        for op in ops.into_iter().flatten() {
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let has_body = op.request_body.is_some();
            let mut add = |status: &str, applies: bool, what: &str| {
                if applies && !op.responses.responses.contains_key(status) {
                    op.responses
                        .responses
                        .insert(status.to_owned(), error(what).into());
                }
            };
            add(
                "400",
                has_params || has_body || has_path_params,
                "Malformed path, query, header or body",
            );
            add("401", secured, "No valid API key");
            add(
                "403",
                secured,
                "The key's role or outlets do not allow this",
            );
            add("404", has_path_params, "Nothing with that id for this key");
            add(
                "408",
                true,
                "The request took longer than the server's limit",
            );
            add("413", has_body, "The body is over the server's limit");
            add("422", has_body, "The body is well-formed but invalid");
            add("500", true, "Internal error (no detail is given)");
            add(
                "503",
                secured,
                "A store, the signer or the service this needs is unavailable",
            );
        }
    }
}

/// The OpenAPI document, generated from the handlers' annotations.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The whole application: the `/v1` API, `/healthz`, `/metrics`,
/// `/openapi.json`, with the request limits of `state`.
pub fn router(state: AppState) -> Router {
    router_shared(Arc::new(state))
}

/// [`router`] over a state the caller keeps a handle on (for the
/// background work that needs it, [`spawn_background`]).
pub fn router_shared(state: Shared) -> Router {
    let limits = state.limits;
    let (routes, doc) = api();
    let doc = Arc::new(doc);
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = Arc::clone(&doc);
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                refuse_announced_oversize(limits.body_bytes, req, next)
            },
        ))
        .layer(CatchPanicLayer::new())
        .layer(map_response(error::normalize_errors))
}

/// 413 at once for a body whose `Content-Length` is over the limit,
/// before a byte of it is read: otherwise the handler would wait for a body
/// the client may never send (until the request timeout). The connection
/// is closed after the answer, since the body was not read.
async fn refuse_announced_oversize(
    limit: usize,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        let mut resp = ApiError::PayloadTooLarge.into_response();
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return resp;
    }
    next.run(req).await
}

/// A thermal paper width from a query (`width`): 58 or 80 mm, 80 when
/// absent; anything else is refused as the document says.
pub(crate) fn paper_width(width: Option<u32>) -> Result<bonopay_signer::render::Paper, ApiError> {
    match width.unwrap_or(80) {
        58 => Ok(bonopay_signer::render::Paper::Mm58),
        80 => Ok(bonopay_signer::render::Paper::Mm80),
        _ => Err(ApiError::bad_request(
            "invalid_query",
            "width is 58 or 80 (mm)",
        )),
    }
}

/// The schema of a thermal paper width: 58 or 80 (mm).
pub(crate) fn paper_width_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .enum_values(Some([58, 80]))
        .build()
}
