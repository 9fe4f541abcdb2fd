//! The DGI sync agent in the server: its background thread, sync health
//! for dashboards, each invoice's DGI status, and requeueing dead letters.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use bonopay_sync::agent::{SyncAgent, SyncClock, SystemSyncClock};
use bonopay_sync::health::{self, Health, HealthThresholds, OutletHealth};
use bonopay_sync::outbox::{ItemState, OutboxItem, OutboxStore};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::auth::ApiKey;
use super::error::{ApiError, ErrorBody};
use super::webhooks::Webhooks;
use super::{ApiPath, Principal, Shared, authorize_outlet, blocking};

/// The sync side of the server: the outbox (for reading) and the agent.
#[derive(Clone)]
pub struct SyncService {
    /// The outbox.
    pub outbox: Arc<dyn OutboxStore>,
    /// The agent (for requeueing).
    pub agent: Arc<SyncAgent>,
    /// Health thresholds.
    pub thresholds: HealthThresholds,
}

impl std::fmt::Debug for SyncService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncService")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

/// Turns outbox changes into `invoice.synced` and `invoice.sync_failed`
/// webhook events. It follows the outbox's change numbers from 0 at every
/// start: events are idempotent by id, so a restart re-enqueues nothing
/// that was enqueued, and nothing is lost to a crash between an item's
/// update and its event.
#[derive(Debug)]
pub struct EventPump {
    outbox: Arc<dyn OutboxStore>,
    webhooks: Webhooks,
    cursor: u64,
}

impl EventPump {
    /// Over an outbox and the webhook service.
    #[must_use]
    pub fn new(outbox: Arc<dyn OutboxStore>, webhooks: Webhooks) -> Self {
        Self {
            outbox,
            webhooks,
            cursor: 0,
        }
    }

    /// Enqueues the events of every change since the last call.
    ///
    /// # Errors
    /// A message; the cursor stays before the change that failed.
    pub fn pump(&mut self) -> Result<usize, String> {
        let mut n = 0;
        loop {
            let changes = self
                .outbox
                .changes_since(self.cursor, 1000)
                .map_err(|e| e.to_string())?;
            let Some(last) = changes.last().map(|i| i.change) else {
                return Ok(n);
            };
            for item in &changes {
                let (id, kind, data) = match item.state {
                    ItemState::Synced => (
                        format!("invoice.synced:{}", item.id()),
                        "invoice.synced",
                        json!({"id": item.id(), "outlet": item.outlet, "seq": item.seq,
                               "dgi": item.confirmation}),
                    ),
                    ItemState::Rejected | ItemState::Dead => (
                        format!("invoice.sync_failed:{}:{}", item.id(), item.change),
                        "invoice.sync_failed",
                        json!({"id": item.id(), "outlet": item.outlet, "seq": item.seq,
                               "state": item.state.as_str(), "error": item.error,
                               "attempts": item.attempts, "ours": item.ours,
                               "theirs": item.theirs}),
                    ),
                    _ => {
                        self.cursor = item.change;
                        continue;
                    }
                };
                if self
                    .webhooks
                    .enqueue_event(&id, &item.merchant_nif, kind, data)
                    .map_err(|e| e.to_string())?
                {
                    n += 1;
                }
                self.cursor = item.change;
            }
            self.cursor = self.cursor.max(last);
        }
    }
}

/// Runs the agent on its own thread until the process ends: reconcile at
/// start and every five minutes, otherwise a pass every `interval`, then
/// the webhook events of what changed.
pub fn spawn_agent(
    agent: Arc<SyncAgent>,
    interval: Duration,
    mut pump: EventPump,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let clock = SystemSyncClock;
        let mut last_reconcile = i64::MIN;
        loop {
            let now = clock.now_ms();
            if now.saturating_sub(last_reconcile) >= 5 * 60 * 1000 {
                match agent.reconcile() {
                    Ok(r) if !r.adopted.is_empty() || !r.cancelled.is_empty() => eprintln!(
                        "bonopay: DGI reconcile: adopted {:?}, cancelled orphans {:?}",
                        r.adopted, r.cancelled
                    ),
                    Ok(_) => {}
                    Err(e) => eprintln!("bonopay: DGI reconcile: {e}"),
                }
                last_reconcile = now;
            }
            match agent.run_once() {
                Ok(r) if r.synced + r.rejected + r.dead > 0 => eprintln!(
                    "bonopay: DGI sync: {} synced, {} rejected, {} dead, {} waiting",
                    r.synced, r.rejected, r.dead, r.deferred
                ),
                Ok(_) => {}
                Err(e) => eprintln!("bonopay: DGI sync: {e}"),
            }
            if let Err(e) = pump.pump() {
                eprintln!("bonopay: sync webhooks: {e}");
            }
            std::thread::sleep(interval);
        }
    })
}

/// An invoice's state at the DGI, as the API shows it.
#[must_use]
pub fn item_json(item: &OutboxItem) -> Value {
    json!({
        "id": item.id(),
        "state": item.state.as_str(),
        "uid": item.uid,
        "attempts": item.attempts,
        "error": item.error,
        "ours": item.ours,
        "theirs": item.theirs,
        "dgi": item.confirmation,
        "next_attempt_ms": item.next_attempt_ms,
        "updated_ms": item.updated_ms,
    })
}

/// Sync health of an outlet or of a merchant's outlets.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// The worst colour: `green`, `yellow` or `red`.
    #[schema(value_type = String)]
    pub health: Health,
    /// Per outlet.
    #[schema(value_type = Vec<Object>)]
    pub outlets: Vec<OutletHealth>,
}

fn service(state: &Shared) -> Result<SyncService, ApiError> {
    state.sync.clone().ok_or_else(|| ApiError::Unavailable {
        code: "sync_not_configured",
        message: "DGI sync is not configured on this server (config.json `dgi`)".into(),
    })
}

async fn health_for(
    state: &Shared,
    who: &ApiKey,
    only: Option<String>,
) -> Result<HealthReport, ApiError> {
    let svc = service(state)?;
    let keys = Arc::clone(&state.keys);
    let merchant = who.merchant_nif.clone();
    let who = who.clone();
    let thresholds = svc.thresholds;
    blocking(move || {
        let now = SystemSyncClock.now_ms();
        let mut outlets = Vec::new();
        for s in svc
            .outbox
            .summary()
            .map_err(|e| ApiError::Internal(e.to_string()))?
        {
            if only.as_ref().is_some_and(|o| *o != s.outlet) {
                continue;
            }
            // Only this merchant's outlets that the key may see.
            let mine = keys
                .outlet(&s.outlet)
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .is_some_and(|o| o.merchant_nif == merchant);
            if mine && who.covers(&s.outlet) {
                outlets.push(health::judge(&s, now, &thresholds));
            }
        }
        Ok(HealthReport {
            health: health::overall(&outlets),
            outlets,
        })
    })
    .await
}

/// Sync health of every outlet the key can see, and the worst of them.
#[utoipa::path(
    get,
    path = "/v1/sync/health",
    tag = "sync",
    security(("api_key" = [])),
    responses(
        (status = 200, body = HealthReport),
        (status = 503, description = "Sync not configured", body = ErrorBody),
    )
)]
pub async fn sync_health(
    State(state): State<Shared>,
    Principal(who): Principal,
) -> Result<Json<HealthReport>, ApiError> {
    Ok(Json(health_for(&state, &who, None).await?))
}

/// Sync health of one outlet.
#[utoipa::path(
    get,
    path = "/v1/outlets/{outlet}/sync",
    tag = "sync",
    params(("outlet" = String, Path, description = "Outlet id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = HealthReport),
        (status = 404, body = ErrorBody),
        (status = 503, description = "Sync not configured", body = ErrorBody),
    )
)]
pub async fn outlet_sync(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(outlet): ApiPath<String>,
) -> Result<Json<HealthReport>, ApiError> {
    authorize_outlet(&state, &who, &outlet).await?;
    Ok(Json(health_for(&state, &who, Some(outlet)).await?))
}

fn parse_id(id: &str) -> Result<(String, u64), ApiError> {
    id.rsplit_once(':')
        .and_then(|(o, s)| s.parse().ok().map(|s| (o.to_owned(), s)))
        .ok_or(ApiError::NotFound)
}

/// An invoice's upload to the DGI: state, attempts, last error, our and
/// the DGI's totals, and the DGI's elements once synced.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/dgi",
    tag = "sync",
    params(("id" = String, Path, description = "`{outlet}:{seq}`")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The outbox item", body = Object),
        (status = 404, body = ErrorBody),
        (status = 503, description = "Sync not configured", body = ErrorBody),
    )
)]
pub async fn invoice_dgi(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (outlet, seq) = parse_id(&id)?;
    authorize_outlet(&state, &who, &outlet).await?;
    let svc = service(&state)?;
    let item = blocking(move || {
        svc.outbox
            .get(&outlet, seq)
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(Json(item_json(&item)))
}

/// Puts a dead-lettered invoice back in the upload queue, after a person
/// checked on the DGI portal that it was not confirmed. Owner keys only.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/dgi/requeue",
    tag = "sync",
    params(("id" = String, Path, description = "`{outlet}:{seq}`")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The outbox item, queued", body = Object),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not dead-lettered", body = ErrorBody),
    )
)]
pub async fn requeue(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if !who.role.can_manage() {
        return Err(ApiError::Forbidden("only owner keys requeue".into()));
    }
    let (outlet, seq) = parse_id(&id)?;
    authorize_outlet(&state, &who, &outlet).await?;
    let svc = service(&state)?;
    let item = blocking(move || {
        svc.agent.requeue(&outlet, seq).map_err(|e| match e {
            bonopay_sync::agent::AgentError::Outbox(
                bonopay_sync::outbox::OutboxError::NotFound(_),
            ) => ApiError::NotFound,
            bonopay_sync::agent::AgentError::Outbox(
                bonopay_sync::outbox::OutboxError::WrongState { id, state, .. },
            ) => ApiError::Conflict {
                code: "not_dead",
                message: format!("{id} is {state}; only dead-lettered invoices are requeued"),
            },
            other => ApiError::Internal(other.to_string()),
        })
    })
    .await?;
    Ok(Json(item_json(&item)))
}
