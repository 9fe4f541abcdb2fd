//! The DGI sync agent in the server: its background thread, sync health
//! for dashboards, each invoice's DGI status, and requeueing dead letters.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use bonopay_signer::certification::DgiElements;
use bonopay_signer::{Clock, SystemClock};
use bonopay_sync::dgi::agent::SyncAgent;
use bonopay_sync::dgi::health::{self, Health, HealthThresholds, OutletHealth};
use bonopay_sync::dgi::outbox::{ItemState, OutboxItem, OutboxStore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::auth::ApiKey;
use super::error::{ApiError, ErrorBody};
use super::webhooks::Webhooks;
use super::{ApiPath, Principal, Shared, authorize_outlet, blocking};
use crate::datadir::CertificationMode;

/// The sync side of the server: the outbox (for reading) and the agent.
#[derive(Clone)]
pub struct SyncService {
    /// The outbox.
    pub outbox: Arc<dyn OutboxStore>,
    /// The agent (for requeueing).
    pub agent: Arc<SyncAgent>,
    /// Health thresholds.
    pub thresholds: HealthThresholds,
    /// Which outlets are certified, and how long a sale waits for it.
    pub policy: CertificationPolicy,
}

/// Which outlets' invoices are certified by the DGI's e-MCF, and how long
/// `POST /v1/invoices` waits for the e-MCF before answering "pending".
#[derive(Debug, Clone)]
pub struct CertificationPolicy {
    /// Outlets without their own mode (including those registered
    /// through the API).
    pub default: CertificationMode,
    /// Outlets of `config.json` with their own.
    pub per_outlet: std::collections::HashMap<String, CertificationMode>,
    /// How long a sale waits for its certification.
    pub deadline: Duration,
}

impl CertificationPolicy {
    /// The mode of `outlet`.
    #[must_use]
    pub fn mode(&self, outlet: &str) -> CertificationMode {
        self.per_outlet.get(outlet).copied().unwrap_or(self.default)
    }

    /// The agent's filter: the outlets a DGI device certifies (`emcf`,
    /// `mcf`, `emcf+mcf`).
    pub fn uploads(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let p = self.clone();
        move |outlet| p.mode(outlet).certifies()
    }
}

/// Where an invoice stands with the DGI, as every answer about it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificationDto {
    /// The outlet's mode: `emcf`, `mcf`, `emcf+mcf` or `none`.
    pub mode: String,
    /// `certified` (the DGI's elements are the security elements),
    /// `pending` (not yet: the sale is sealed and queued; print the
    /// provisional ticket), `rejected` (the DGI refused it; see `error`),
    /// or `not_certified` (mode `none`: Bono Pay's seal only).
    pub state: String,
    /// The SFE invoice number sent to the DGI as `rn`.
    pub rn: String,
    /// The DGI's elements once certified, under the e-MCF's names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub dgi: Option<DgiElements>,
    /// Who produced them: `emcf`, `mcf`, or `operator` (read off the DGI
    /// portal by a person after the e-MCF's answer was lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why it is not certified yet, or why the DGI refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when a person must act (a dead letter: see `error`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_attention: bool,
    /// Position of the certification entry in the outlet's chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_seq: Option<u64>,
}

impl CertificationDto {
    /// An invoice of an outlet in mode `none`, with no certification.
    #[must_use]
    pub fn not_certified(rn: String) -> Self {
        Self {
            mode: CertificationMode::None.as_str().to_owned(),
            state: "not_certified".into(),
            rn,
            dgi: None,
            source: None,
            error: None,
            needs_attention: false,
            ledger_seq: None,
        }
    }
}

/// The certification of a sealed invoice: its certification entry if it
/// has one (whatever the mode today), else what the outbox and the mode
/// say. Blocking (storage).
///
/// # Errors
/// [`ApiError::Internal`] when storage fails.
pub fn certification_of(
    fiscalizer: &bonopay_signer::Fiscalizer,
    sync: Option<&SyncService>,
    outlet: &str,
    seq: u64,
    rn: &str,
) -> Result<CertificationDto, ApiError> {
    let mode = sync.map_or(CertificationMode::None, |s| s.policy.mode(outlet));
    let mut dto = CertificationDto::not_certified(rn.to_owned());
    dto.mode = mode.as_str().to_owned();
    if let Some(c) = fiscalizer
        .certification_of(outlet, seq)
        .map_err(|e| ApiError::Internal(e.to_string()))?
    {
        dto.state = "certified".into();
        dto.source = Some(c.source.as_str().to_owned());
        dto.ledger_seq = Some(c.seq);
        dto.dgi = Some(c.elements);
        return Ok(dto);
    }
    if mode == CertificationMode::None {
        return Ok(dto);
    }
    dto.state = "pending".into();
    if let Some(svc) = sync {
        match svc
            .outbox
            .get(outlet, seq)
            .map_err(|e| ApiError::Internal(e.to_string()))?
        {
            Some(item) => {
                dto.error.clone_from(&item.error);
                match item.state {
                    ItemState::Rejected => dto.state = "rejected".into(),
                    ItemState::Dead => dto.needs_attention = true,
                    _ => {}
                }
                if let Some(why) = svc.agent.paused(&item.merchant_nif) {
                    dto.error = Some(why);
                }
            }
            None => dto.error = Some("queued for the DGI".into()),
        }
    }
    Ok(dto)
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
pub struct EventPump {
    outbox: Arc<dyn OutboxStore>,
    webhooks: Webhooks,
    cursor: u64,
}

impl std::fmt::Debug for EventPump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPump")
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
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
                if item.state == ItemState::Synced {
                    // The certified invoice: its DGI elements are now in
                    // the ledger, so receipts and reprints show them.
                    let data = json!({"id": item.id(), "outlet": item.outlet, "seq": item.seq,
                                      "rn": item.request.rn, "dgi": item.confirmation});
                    if self
                        .webhooks
                        .enqueue_event(
                            &format!("invoice.certified:{}", item.id()),
                            &item.merchant_nif,
                            "invoice.certified",
                            data,
                        )
                        .map_err(|e| e.to_string())?
                    {
                        n += 1;
                    }
                }
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
        let clock = SystemClock;
        let mut last_reconcile = i64::MIN;
        loop {
            let now = clock.now_ms();
            if now.saturating_sub(last_reconcile) >= 5 * 60 * 1000 {
                for a in agent.check_accounts() {
                    if let Some(why) = &a.paused {
                        tracing::warn!(nif = %a.nif, reason = %why, "e-MCF account: uploads paused");
                    }
                    for d in &a.rate_differences {
                        tracing::warn!(
                            nif = %a.nif,
                            difference = %d,
                            "e-MCF account: tax groups differ from ours"
                        );
                    }
                }
                match agent.reconcile() {
                    Ok(r) if !r.cancelled.is_empty() => {
                        tracing::info!(cancelled = ?r.cancelled, "DGI reconcile: cancelled orphans");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "DGI reconcile failed"),
                }
                last_reconcile = now;
            }
            match agent.run_once() {
                Ok(r) if r.synced + r.rejected + r.dead > 0 => tracing::info!(
                    synced = r.synced,
                    rejected = r.rejected,
                    dead = r.dead,
                    waiting = r.deferred,
                    "DGI sync"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "DGI sync failed"),
            }
            if let Err(e) = pump.pump() {
                tracing::warn!(error = %e, "sync webhooks failed");
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
    /// The merchant's e-MCF account: uploads paused (and why), the token's
    /// expiry, differences between the e-MCF's tax groups and ours.
    #[schema(value_type = Option<Object>)]
    pub account: Option<bonopay_sync::dgi::agent::AccountHealth>,
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
        let now = SystemClock.now_ms();
        let accounts = svc.agent.account_health();
        let account = accounts
            .iter()
            .find(|a| a.nif == merchant)
            .or_else(|| accounts.iter().find(|a| a.nif == "*"))
            .cloned();
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
                let mut h = health::judge(&s, now, &thresholds);
                if let Some(a) = &account {
                    if let Some(why) = &a.paused {
                        h.health = Health::Red;
                        h.reasons
                            .push(format!("uploads to the DGI are paused: {why}"));
                    }
                    if !a.rate_differences.is_empty() {
                        h.health = h.health.max(Health::Yellow);
                        h.reasons.push(format!(
                            "the e-MCF's tax groups differ from ours: {}",
                            a.rate_differences.join("; ")
                        ));
                    }
                }
                outlets.push(h);
            }
        }
        Ok(HealthReport {
            health: health::overall(&outlets),
            outlets,
            account,
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
        svc.agent
            .requeue(&outlet, seq)
            .map_err(|e| dead_letter_error(e, "requeued"))
    })
    .await?;
    Ok(Json(item_json(&item)))
}

/// The answer to a person's decision on a dead letter that failed.
fn dead_letter_error(e: bonopay_sync::dgi::agent::AgentError, verb: &str) -> ApiError {
    use bonopay_sync::dgi::agent::{AgentError, RecordError};
    use bonopay_sync::dgi::outbox::OutboxError;
    match e {
        AgentError::Outbox(OutboxError::NotFound(_)) => ApiError::NotFound,
        AgentError::Outbox(OutboxError::WrongState { id, state, .. }) => ApiError::Conflict {
            code: "not_dead",
            message: format!("{id} is {state}; only dead-lettered invoices are {verb}"),
        },
        AgentError::Outbox(OutboxError::ClaimLost(id)) => ApiError::Conflict {
            code: "busy",
            message: format!("{id} is being worked on right now; try again"),
        },
        AgentError::Record(RecordError::Refused(why)) => ApiError::Conflict {
            code: "elements_refused",
            message: why,
        },
        other => ApiError::Internal(other.to_string()),
    }
}

/// Settles an invoice whose CONFIRM answer was lost (a dead letter that
/// says "CONFIRM outcome unknown"): a person looked its SFE number up on
/// the DGI portal, found it certified, and enters the DGI's five elements
/// exactly as the portal shows them. They are bound into the ledger with
/// source `operator`. Owner keys only.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/dgi/resolve",
    tag = "sync",
    params(("id" = String, Path, description = "`{outlet}:{seq}`")),
    request_body(content = super::schema::DgiElementsBody, description = "`{codeDEFDGI, counters, nim, dateTime, qrCode}` as the DGI portal shows them"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The outbox item, synced", body = Object),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not dead-lettered, or certified with other elements", body = ErrorBody),
        (status = 422, description = "Elements that cannot be genuine", body = ErrorBody),
        (status = 503, description = "Sync not configured", body = ErrorBody),
    )
)]
pub async fn resolve(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
    super::ApiJson(elements): super::ApiJson<DgiElements>,
) -> Result<Json<Value>, ApiError> {
    if !who.role.can_manage() {
        return Err(ApiError::Forbidden("only owner keys resolve".into()));
    }
    let (outlet, seq) = parse_id(&id)?;
    authorize_outlet(&state, &who, &outlet).await?;
    let svc = service(&state)?;
    if let Err(why) = elements.check() {
        return Err(ApiError::invalid("", "invalid_elements", why));
    }
    let item = blocking(move || {
        svc.agent
            .resolve(&outlet, seq, &elements)
            .map_err(|e| dead_letter_error(e, "resolved"))
    })
    .await?;
    Ok(Json(item_json(&item)))
}
