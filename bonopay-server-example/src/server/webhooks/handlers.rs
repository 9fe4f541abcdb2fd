//! The HTTP API of webhooks (owner keys): register, list, delete, delivery log.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A subscriber to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// An `http://` or `https://` URL with a host and no credentials, at
    /// most 2048 characters.
    #[schema(format = "uri", min_length = 1, max_length = 2048)]
    pub url: String,
    /// The event types to receive (`invoice.sealed`, `invoice.certified`,
    /// `invoice.synced`, `invoice.sync_failed`, `report.z_closed`), at
    /// least one; absent = all of them.
    #[serde(default)]
    #[schema(value_type = Option<Vec<EventType>>, min_items = 1)]
    pub events: Option<Vec<String>>,
}

/// Query of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryLogQuery {
    /// Most attempts to return, newest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

pub(super) fn require_owner(who: &ApiKey) -> Result<(), ApiError> {
    if who.role.can_manage() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only an owner key manages webhooks".into(),
        ))
    }
}

pub(super) fn service(state: &Shared) -> Result<Webhooks, ApiError> {
    state.webhooks.clone().ok_or_else(|| ApiError::Unavailable {
        code: "webhooks_unavailable",
        message: "this server has no webhook service configured".into(),
    })
}

pub(super) fn internal(e: WebhookError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Checks a subscriber URL: `http(s)`, a host, no credentials.
pub(super) fn validate_url(url: &str) -> Result<(), &'static str> {
    if url.len() > MAX_URL_LEN {
        return Err("at most 2048 characters");
    }
    let u = reqwest::Url::parse(url).map_err(|_| "not a URL")?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("only http:// and https:// URLs are accepted");
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the URL must not carry credentials (the signature authenticates)");
    }
    Ok(())
}

/// Registers a webhook subscriber for the caller's merchant and returns
/// its signing secret, once.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    request_body = CreateWebhookRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = CreatedWebhook),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 409, description = "The merchant has 16 subscribers already", body = ErrorBody),
        (status = 422, description = "Bad URL (not http/https) or unknown event type", body = ErrorBody),
        (status = 503, description = "No webhook service on this server", body = ErrorBody),
    )
)]
pub async fn create_webhook(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiJson(req): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    require_owner(&who)?;
    let hooks = service(&state)?;
    let mut errors = Vec::new();
    let url = req.url.trim().to_owned();
    if let Err(why) = validate_url(&url) {
        errors.push(FieldError {
            path: "url".into(),
            code: "invalid_url".into(),
            message: why.into(),
        });
    } else if let Err(e) = hooks.egress().check_url(&url) {
        errors.push(FieldError {
            path: "url".into(),
            code: "destination_not_allowed".into(),
            message: format!(
                "{e}; webhooks go to public internet addresses only \
                 (an operator can allow on-premise receivers in config.json `egress.allow`)"
            ),
        });
    }
    let events = match &req.events {
        None => EventType::ALL.to_vec(),
        Some(list) => {
            if list.is_empty() {
                errors.push(FieldError {
                    path: "events".into(),
                    code: "empty".into(),
                    message: "give at least one event type (or leave it out for all)".into(),
                });
            }
            let mut events = Vec::new();
            for (i, name) in list.iter().enumerate() {
                match EventType::parse(name) {
                    Some(t) if !events.contains(&t) => events.push(t),
                    Some(_) => {}
                    None => errors.push(FieldError {
                        path: format!("events[{i}]"),
                        code: "unknown_event".into(),
                        message: format!(
                            "unknown event type; one of {}",
                            events_text(&EventType::ALL)
                        ),
                    }),
                }
            }
            events
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let created = blocking(move || {
        hooks
            .create_subscriber(&who.merchant_nif, &url, &events)
            .map_err(internal)
    })
    .await?;
    match created {
        Some(c) => Ok((StatusCode::CREATED, Json(c))),
        None => Err(ApiError::Conflict {
            code: "too_many_webhooks",
            message: format!(
                "a merchant has at most {MAX_SUBSCRIBERS_PER_MERCHANT} webhook subscribers; delete one first"
            ),
        }),
    }
}

/// The caller's merchant's webhook subscribers, oldest first (never their
/// secrets).
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    security(("api_key" = [])),
    responses(
        (status = 200, body = Vec<Subscriber>),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 503, description = "No webhook service on this server", body = ErrorBody),
    )
)]
pub async fn list_webhooks(
    State(state): State<Shared>,
    Principal(who): Principal,
) -> Result<Json<Vec<Subscriber>>, ApiError> {
    require_owner(&who)?;
    let hooks = service(&state)?;
    let list =
        blocking(move || hooks.list_subscribers(&who.merchant_nif).map_err(internal)).await?;
    Ok(Json(list))
}

/// Deletes a webhook subscriber; its pending deliveries are cancelled.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Subscriber id (`whk_…`)")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 404, description = "No such subscriber for this merchant", body = ErrorBody),
        (status = 503, description = "No webhook service on this server", body = ErrorBody),
    )
)]
pub async fn delete_webhook(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_owner(&who)?;
    let hooks = service(&state)?;
    let deleted = blocking(move || {
        hooks
            .delete_subscriber(&who.merchant_nif, &id)
            .map_err(internal)
    })
    .await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// The delivery log of a webhook subscriber: every attempt, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "Subscriber id (`whk_…`)"), DeliveryLogQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Vec<DeliveryAttempt>),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 404, description = "No such subscriber for this merchant", body = ErrorBody),
        (status = 503, description = "No webhook service on this server", body = ErrorBody),
    )
)]
pub async fn list_webhook_deliveries(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryLogQuery>,
) -> Result<Json<Vec<DeliveryAttempt>>, ApiError> {
    require_owner(&who)?;
    let hooks = service(&state)?;
    let limit = match q.limit.unwrap_or(100) {
        n @ 1..=1000 => n,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "limit must be 1 to 1000",
            ));
        }
    };
    let log = blocking(move || {
        hooks
            .delivery_log(&who.merchant_nif, &id, limit)
            .map_err(internal)
    })
    .await?;
    log.map(Json).ok_or(ApiError::NotFound)
}
