//! A webhook receiver on loopback for the webhook tests (included with
//! `#[path]` by the files that need it): an axum server in the test process
//! that checks every signature with `bonopay_sync::webhook::verify`
//! against a clock, records every request, and refuses those it is told
//! to.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use bonopay_signer::Clock;
use bonopay_sync::webhook::{REPLAY_WINDOW_SECS, WebhookSignatureError, verify};
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub path: String,
    pub event_id: String,
    pub event_type: String,
    pub timestamp: i64,
    pub raw: Vec<u8>,
    pub body: Value,
    pub verified: Result<(), WebhookSignatureError>,
    pub answered: u16,
}

/// Which event ids to refuse (500) the first time each path gets them.
pub type FailFirst = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    /// Answer 500 to this many requests, then 200.
    pub fail_next: Arc<AtomicU32>,
    fail_first: FailFirst,
    /// Secret per path (as set after each subscription).
    secrets: Arc<Mutex<HashMap<String, String>>>,
    clock: Arc<dyn Clock>,
    base: String,
}

impl Receiver {
    /// A receiver listening on 127.0.0.1, verifying against `clock`;
    /// `POST /slow` answers after 5 s.
    pub async fn start(clock: Arc<dyn Clock>) -> Receiver {
        Self::start_failing_first(clock, Arc::new(|_: &str| false)).await
    }

    /// Like [`Receiver::start`], refusing the first request of each path
    /// for the event ids `fail_first` picks.
    pub async fn start_failing_first(clock: Arc<dyn Clock>, fail_first: FailFirst) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r = Receiver {
            got: Arc::default(),
            fail_next: Arc::default(),
            fail_first,
            secrets: Arc::default(),
            clock,
            base: format!("http://{addr}"),
        };
        let app = Router::new()
            .route("/slow", axum::routing::post(slow))
            .route("/{path}", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(axum::serve(listener, app).into_future());
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    pub fn set_secret(&self, path: &str, secret: &str) {
        self.secrets
            .lock()
            .unwrap()
            .insert(path.to_owned(), secret.to_owned());
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    pub fn got_at(&self, path: &str) -> Vec<Got> {
        self.got().into_iter().filter(|g| g.path == path).collect()
    }

    /// Requests answered 200.
    pub fn ok_count(&self) -> usize {
        self.got().iter().filter(|g| g.answered == 200).count()
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> StatusCode {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signature = h("bonopay-signature");
    let secret = r
        .secrets
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_default();
    let now_secs = r.clock.now_ms().div_euclid(1000);
    let verified = verify(
        secret.as_bytes(),
        &signature,
        &raw,
        now_secs,
        REPLAY_WINDOW_SECS,
    );
    let timestamp = signature
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(-1);
    let event_id = h("bonopay-event-id");
    assert_eq!(h("content-type"), "application/json");
    let mut got = r.got.lock().unwrap();
    let seen = got.iter().any(|g| g.path == path && g.event_id == event_id);
    let answered = if verified.is_err() {
        401
    } else if r
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
        || (!seen && (r.fail_first)(&event_id))
    {
        500
    } else {
        200
    };
    got.push(Got {
        path,
        event_id,
        event_type: h("bonopay-event-type"),
        timestamp,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw: raw.to_vec(),
        verified,
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

async fn slow() -> StatusCode {
    tokio::time::sleep(Duration::from_secs(5)).await;
    StatusCode::OK
}
