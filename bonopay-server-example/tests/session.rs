//! Browser sessions (issue 18), through the router in process: sign-in
//! with an API key, the `bp_session` cookie and its attributes, requests
//! authenticated by it, the CSRF header on unsafe methods, roles applying
//! as for the key, sign-out, revocation, expiry; bearer keys unaffected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bonopay_ledger::{LedgerStore, SqliteStore};
use bonopay_server_example::cli::serve::bootstrap;
use bonopay_server_example::datadir::{MerchantConfig, OutletConfig};
use bonopay_server_example::server::auth::SqliteKeyStore;
use bonopay_server_example::server::session::{
    ABSOLUTE_TIMEOUT_SECS, IDLE_TIMEOUT_SECS, Session, SessionStore, SqliteSessionStore,
    hash_session_token,
};
use bonopay_server_example::server::{AppState, router};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, SoftwareSigner};
use common::*;
use serde_json::{Value, json};
use tower::ServiceExt;

struct App {
    router: Router,
    sessions: Arc<dyn SessionStore>,
    owner: String,
    _dir: tempfile::TempDir,
}

fn app(secure: bool) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn LedgerStore> =
        Arc::new(SqliteStore::open(dir.path().join("ledger.db")).unwrap());
    let fiscalizer = Fiscalizer::new(
        store,
        Arc::new(SoftwareSigner::generate().unwrap()),
        FiscalizerConfig::new("NID-TEST-01"),
    );
    let auth = dir.path().join("auth.db");
    let keys = SqliteKeyStore::open(&auth).unwrap();
    let merchants = vec![MerchantConfig {
        nif: NIF_A.into(),
        name: Some("Merchant A".into()),
        address: None,
        contact: None,
        outlets: [OUTLET_A, OUTLET_A2]
            .iter()
            .map(|o| OutletConfig {
                id: (*o).into(),
                time_zone: None,
                certification: None,
                mcf: None,
            })
            .collect(),
    }];
    let tokens = bootstrap(&keys, &merchants).unwrap();
    // The sessions in auth.db, next to the keys, as `bonopay serve` keeps them.
    let sessions: Arc<dyn SessionStore> = Arc::new(SqliteSessionStore::open(&auth).unwrap());
    let state = AppState::new(Arc::new(fiscalizer), Arc::new(keys))
        .with_sessions(Arc::clone(&sessions))
        .with_secure_cookie(secure);
    App {
        router: router(state),
        sessions,
        owner: tokens[0].1.clone(),
        _dir: dir,
    }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

impl Resp {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or_default()
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// The cookie, and the CSRF header if any.
    Cookie(&'a str, Option<&'a str>),
}

async fn call(app: &App, method: Method, uri: &str, auth: Auth<'_>, body: Option<Value>) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    match auth {
        Auth::None => {}
        Auth::Bearer(k) => req = req.header("authorization", format!("Bearer {k}")),
        Auth::Cookie(c, csrf) => {
            req = req.header("cookie", format!("theme=dark; bp_session={c}"));
            if let Some(t) = csrf {
                req = req.header("x-csrf-token", t);
            }
        }
    }
    if body.is_some() {
        req = req
            .header("content-type", "application/json")
            .header("idempotency-key", format!("idem-{}", rand_suffix()));
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(serde_json::to_vec(&b).unwrap())))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Resp {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Signs in with `key`: (cookie value, CSRF token, answer).
async fn sign_in(app: &App, key: &str) -> (String, String, Resp) {
    let r = call(
        app,
        Method::POST,
        "/v1/session",
        Auth::None,
        Some(json!({"api_key": key})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let set = r.headers["set-cookie"].to_str().unwrap().to_owned();
    let token = set
        .strip_prefix("bp_session=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = r.json["csrf_token"].as_str().unwrap().to_owned();
    (token, csrf, r)
}

async fn create_key(app: &App, body: Value) -> String {
    let r = call(
        app,
        Method::POST,
        "/v1/keys",
        Auth::Bearer(&app.owner),
        Some(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    r.json["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_and_says_who() {
    let app = app(false);
    let (token, csrf, r) = sign_in(&app, &app.owner).await;
    let set = r.headers["set-cookie"].to_str().unwrap();
    assert_eq!(
        set,
        format!(
            "bp_session={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={ABSOLUTE_TIMEOUT_SECS}"
        )
    );
    assert_eq!(token.len(), 43);
    assert_eq!(r.json["role"], "owner");
    assert_eq!(r.json["merchant_nif"], NIF_A);
    assert_eq!(r.json["all_outlets"], true);
    assert_eq!(r.json["outlets"], json!([OUTLET_A, OUTLET_A2]));
    assert!(r.json["expires_at"].as_str().unwrap().ends_with('Z'));
    // Only the hash is stored.
    let stored = app
        .sessions
        .get(&hash_session_token(&token), rand_now())
        .unwrap()
        .unwrap();
    assert_eq!(stored.csrf_token, csrf);

    // Who am I, by cookie (the CSRF token comes back for a reloaded app).
    let me = call(
        &app,
        Method::GET,
        "/v1/session",
        Auth::Cookie(&token, None),
        None,
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.json);
    assert_eq!(me.json["csrf_token"], csrf);
    assert_eq!(me.json["key_id"], r.json["key_id"]);
    assert!(me.headers.get("set-cookie").is_none());

    // Secure when configured behind HTTPS.
    let secure = app_secure_cookie().await;
    assert!(secure.ends_with("; Secure"), "{secure}");
}

fn rand_now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn app_secure_cookie() -> String {
    let app = app(true);
    let (_, _, r) = sign_in(&app, &app.owner).await;
    r.headers["set-cookie"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_refuses_bad_keys_like_bearer_auth() {
    let app = app(false);
    let bearer = call(
        &app,
        Method::GET,
        "/v1/keys",
        Auth::Bearer("bp_live_nope"),
        None,
    )
    .await;
    for key in ["bp_live_nope", "", "garbage"] {
        let r = call(
            &app,
            Method::POST,
            "/v1/session",
            Auth::None,
            Some(json!({"api_key": key})),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json, bearer.json, "the same body as a bearer failure");
        assert!(r.headers.get("set-cookie").is_none());
    }
    // A revoked key cannot sign in.
    let cashier = create_key(&app, json!({"role": "cashier", "outlets": [OUTLET_A]})).await;
    let id = call(
        &app,
        Method::GET,
        "/v1/keys",
        Auth::Bearer(&app.owner),
        None,
    )
    .await
    .json[1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/keys/{id}"),
        Auth::Bearer(&app.owner),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &app,
        Method::POST,
        "/v1/session",
        Auth::None,
        Some(json!({"api_key": cashier})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Not JSON (what a cross-site form sends): refused.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/session")
        .header("content-type", "text/plain")
        .body(Body::from(
            serde_json::to_vec(&json!({"api_key": app.owner})).unwrap(),
        ))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn unsafe_requests_by_cookie_need_the_csrf_token() {
    let app = app(false);
    let (token, csrf, _) = sign_in(&app, &app.owner).await;
    let invoice = example();
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Auth::Cookie(&token, None),
        Some(invoice.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "csrf_failed");
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Auth::Cookie(&token, Some("not-the-token")),
        Some(invoice.clone()),
    )
    .await;
    assert_eq!(r.code(), "csrf_failed");
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Auth::Cookie(&token, Some(&csrf)),
        Some(invoice),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    // A read by cookie needs no CSRF token.
    let id = r.json["invoice_id"]
        .as_str()
        .or_else(|| r.json["id"].as_str())
        .unwrap()
        .to_owned();
    let got = call(
        &app,
        Method::GET,
        &format!("/v1/invoices/{id}"),
        Auth::Cookie(&token, None),
        None,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.json);
    // Sign-out is unsafe too.
    let r = call(
        &app,
        Method::DELETE,
        "/v1/session",
        Auth::Cookie(&token, None),
        None,
    )
    .await;
    assert_eq!(r.code(), "csrf_failed");
}

#[tokio::test]
async fn roles_apply_to_sessions_as_to_keys() {
    let app = app(false);
    let auditor = create_key(&app, json!({"role": "auditor"})).await;
    let (token, csrf, r) = sign_in(&app, &auditor).await;
    assert_eq!(r.json["role"], "auditor");
    let bearer = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Auth::Bearer(&auditor),
        Some(example()),
    )
    .await;
    assert_eq!(bearer.status, StatusCode::FORBIDDEN);
    let by_cookie = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Auth::Cookie(&token, Some(&csrf)),
        Some(example()),
    )
    .await;
    assert_eq!(by_cookie.status, StatusCode::FORBIDDEN);
    assert_eq!(by_cookie.json, bearer.json);
    // Nor manage keys.
    let r = call(
        &app,
        Method::GET,
        "/v1/keys",
        Auth::Cookie(&token, None),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A cashier's session shows its outlets only, and is refused the others.
    let cashier = create_key(&app, json!({"role": "cashier", "outlets": [OUTLET_A2]})).await;
    let (ct, cc, r) = sign_in(&app, &cashier).await;
    assert_eq!(r.json["outlets"], json!([OUTLET_A2]));
    assert_eq!(r.json["all_outlets"], false);
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Auth::Cookie(&ct, Some(&cc)),
        Some(example()),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
}

#[tokio::test]
async fn sign_out_ends_the_session_and_clears_the_cookie() {
    let app = app(false);
    let (token, csrf, _) = sign_in(&app, &app.owner).await;
    let (other, _, _) = sign_in(&app, &app.owner).await;
    let r = call(
        &app,
        Method::DELETE,
        "/v1/session",
        Auth::Cookie(&token, Some(&csrf)),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers["set-cookie"].to_str().unwrap(),
        "bp_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    );
    for uri in ["/v1/session", "/v1/keys"] {
        let r = call(&app, Method::GET, uri, Auth::Cookie(&token, None), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    // Another session of the same key lives on.
    let r = call(
        &app,
        Method::GET,
        "/v1/keys",
        Auth::Cookie(&other, None),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn revoking_the_key_ends_its_sessions_at_once() {
    let app = app(false);
    let cashier = create_key(&app, json!({"role": "cashier", "outlets": [OUTLET_A]})).await;
    let (token, _, r) = sign_in(&app, &cashier).await;
    let id = r.json["key_id"].as_str().unwrap().to_owned();
    let ok = call(
        &app,
        Method::GET,
        "/v1/session",
        Auth::Cookie(&token, None),
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/keys/{id}"),
        Auth::Bearer(&app.owner),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &app,
        Method::GET,
        "/v1/session",
        Auth::Cookie(&token, None),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.sessions.delete_for_key(&id).unwrap(),
        0,
        "the revocation deleted its sessions"
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_even_if_its_session_row_remains() {
    // A revocation by a path that did not delete the sessions (another
    // tool writing the key store): the key is re-read on every request.
    let app = app(false);
    let cashier = create_key(&app, json!({"role": "cashier", "outlets": [OUTLET_A]})).await;
    let (token, _, r) = sign_in(&app, &cashier).await;
    let id = r.json["key_id"].as_str().unwrap().to_owned();
    let dir = app._dir.path().join("auth.db");
    let keys = SqliteKeyStore::open(&dir).unwrap();
    use bonopay_server_example::server::auth::ApiKeyStore;
    assert!(keys.revoke_key(NIF_A, &id).unwrap());
    let r = call(
        &app,
        Method::GET,
        "/v1/session",
        Auth::Cookie(&token, None),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ended_and_unknown_sessions_are_refused() {
    let app = app(false);
    let (_, _, r) = sign_in(&app, &app.owner).await;
    let key_id = r.json["key_id"].as_str().unwrap().to_owned();
    let now = rand_now();
    let old = |created: i64, seen: i64| Session {
        key_id: key_id.clone(),
        merchant_nif: NIF_A.into(),
        csrf_token: "c".into(),
        created_at: created,
        last_seen_at: seen,
        expires_at: created + ABSOLUTE_TIMEOUT_SECS,
    };
    // Idle for longer than the idle timeout.
    let idle = "idle-session-token";
    app.sessions
        .create(
            &hash_session_token(idle),
            &old(now - IDLE_TIMEOUT_SECS - 5, now - IDLE_TIMEOUT_SECS - 5),
        )
        .unwrap();
    // Busy, but past the absolute end.
    let stale = "stale-session-token";
    app.sessions
        .create(
            &hash_session_token(stale),
            &old(now - ABSOLUTE_TIMEOUT_SECS - 5, now - 10),
        )
        .unwrap();
    // Alive, for contrast.
    let live = "live-session-token";
    app.sessions
        .create(&hash_session_token(live), &old(now - 100, now - 100))
        .unwrap();
    for (cookie, want) in [
        (idle, StatusCode::UNAUTHORIZED),
        (stale, StatusCode::UNAUTHORIZED),
        ("unknown", StatusCode::UNAUTHORIZED),
        ("", StatusCode::UNAUTHORIZED),
        (live, StatusCode::OK),
    ] {
        let r = call(
            &app,
            Method::GET,
            "/v1/keys",
            Auth::Cookie(cookie, None),
            None,
        )
        .await;
        assert_eq!(r.status, want, "cookie {cookie:?}: {}", r.json);
    }
    // The live one was touched (last seen more than a minute ago).
    let s = app
        .sessions
        .get(&hash_session_token(live), rand_now())
        .unwrap()
        .unwrap();
    assert!(s.last_seen_at >= now);
    // No credentials at all.
    let r = call(&app, Method::GET, "/v1/keys", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bearer_requests_are_unaffected() {
    let app = app(false);
    let (token, _, _) = sign_in(&app, &app.owner).await;
    // No CSRF token for bearer keys.
    let r = call(
        &app,
        Method::POST,
        "/v1/invoices",
        Auth::Bearer(&app.owner),
        Some(example()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    // A bad bearer key is refused even with a good cookie: the header decides.
    let req = Request::builder()
        .uri("/v1/keys")
        .header("authorization", "Bearer bp_live_nope")
        .header("cookie", format!("bp_session={token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A bearer key has no session to show.
    let r = call(
        &app,
        Method::GET,
        "/v1/session",
        Auth::Bearer(&app.owner),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn the_openapi_document_has_the_session_endpoints() {
    let doc = serde_json::to_value(bonopay_server_example::server::openapi()).unwrap();
    let p = &doc["paths"]["/v1/session"];
    for m in ["post", "get", "delete"] {
        assert!(p[m].is_object(), "{m} /v1/session");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["in"],
        "cookie"
    );
    assert!(doc["components"]["schemas"]["SessionInfo"].is_object());
}
