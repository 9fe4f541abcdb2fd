//! Management endpoints (owner keys only): API keys and outlets of the
//! caller's merchant.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{ApiKey, AuthError, Outlet, Role, hash_token, new_key_id, new_token};
use super::error::{ApiError, ErrorBody, FieldError};
use super::{ApiJson, ApiPath, Principal, Shared, blocking};

/// An API key as listed (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyDto {
    /// Public id, for revocation.
    pub id: String,
    /// Its merchant.
    pub merchant_nif: String,
    /// Its role.
    pub role: Role,
    /// The outlets it is bound to; absent = every outlet of the merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlets: Option<Vec<String>>,
    /// Free label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl From<ApiKey> for ApiKeyDto {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            merchant_nif: k.merchant_nif,
            role: k.role,
            outlets: k.outlets,
            label: k.label,
            created_at: k.created_at,
            revoked: k.revoked,
        }
    }
}

/// A key to create (documented by [`super::schema::CreateKeyBody`], which
/// states which roles take `outlets`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Its role.
    pub role: Role,
    /// Outlets to bind it to: required (non-empty) for cashier and
    /// integration keys, optional for auditors (absent = all), refused for
    /// owners (an owner covers every outlet).
    #[serde(default)]
    pub outlets: Option<Vec<String>>,
    /// Free label, at most 100 characters.
    #[serde(default)]
    pub label: Option<String>,
}

/// A created key with its token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The key.
    pub key: ApiKeyDto,
    /// The secret token (`bp_live_…`): send it as `Authorization: Bearer`.
    /// Only its hash is stored; it cannot be shown again.
    pub token: String,
}

/// An outlet as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutletDto {
    /// Outlet id.
    pub id: String,
    /// Its merchant.
    pub merchant_nif: String,
    /// Registration time.
    pub created_at: String,
}

impl From<Outlet> for OutletDto {
    fn from(o: Outlet) -> Self {
        Self {
            id: o.id,
            merchant_nif: o.merchant_nif,
            created_at: o.created_at,
        }
    }
}

/// An outlet to register.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOutletRequest {
    /// Outlet id, as invoices will carry it in `outlet_id`: 1 to 64
    /// characters of `A-Z a-z 0-9 . _ -`, unique across merchants.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
}

fn require_owner(who: &ApiKey) -> Result<(), ApiError> {
    if who.role.can_manage() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only an owner key manages keys and outlets".into(),
        ))
    }
}

fn internal(e: AuthError) -> ApiError {
    match e {
        AuthError::Storage(_) => ApiError::store_unavailable("key store", &e),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Now, RFC 3339 UTC.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Whether `s` is a valid outlet id (the invoice schema's identifier rule).
#[must_use]
pub fn is_outlet_id(s: &str) -> bool {
    bonopay_core::is_valid_identifier(s)
}

/// Creates a key for the caller's merchant and returns its token once.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "management",
    request_body = super::schema::CreateKeyBody,
    security(("api_key" = [])),
    responses(
        (status = 201, body = CreatedKey),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 422, description = "Invalid request (unknown outlet, outlets missing or not allowed)", body = ErrorBody),
    )
)]
pub async fn create_key(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    require_owner(&who)?;
    let mut errors = Vec::new();
    let mut problem = |path: String, code: &str, message: &str| {
        errors.push(FieldError {
            path,
            code: code.to_owned(),
            message: message.to_owned(),
        });
    };
    match (req.role, &req.outlets) {
        (Role::Owner, Some(_)) => problem(
            "outlets".into(),
            "not_allowed",
            "an owner key covers every outlet",
        ),
        (Role::Cashier | Role::Integration, None) => problem(
            "outlets".into(),
            "missing_field",
            "cashier and integration keys are bound to outlets",
        ),
        (_, Some(o)) if o.is_empty() => problem(
            "outlets".into(),
            "empty",
            "give at least one outlet (or leave it out for an auditor of every outlet)",
        ),
        _ => {}
    }
    if req
        .label
        .as_ref()
        .is_some_and(|l| l.chars().count() > 100 || l.chars().any(char::is_control))
    {
        problem(
            "label".into(),
            "invalid_value",
            "at most 100 printable characters",
        );
    }
    let outlets = req.outlets.clone().unwrap_or_default();
    let keys = Arc::clone(&state.keys);
    let merchant = who.merchant_nif.clone();
    let owned = blocking(move || {
        outlets
            .iter()
            .map(|o| {
                keys.outlet(o)
                    .map(|f| f.is_some_and(|f| f.merchant_nif == merchant))
            })
            .collect::<Result<Vec<bool>, _>>()
            .map_err(internal)
    })
    .await?;
    for (i, ok) in owned.iter().enumerate() {
        if !ok {
            problem(
                format!("outlets[{i}]"),
                "unknown_outlet",
                "no outlet of this merchant has this id",
            );
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let token = new_token().map_err(internal)?;
    let key = ApiKey {
        id: new_key_id().map_err(internal)?,
        merchant_nif: who.merchant_nif.clone(),
        role: req.role,
        outlets: req.outlets,
        label: req.label,
        created_at: now_rfc3339(),
        revoked: false,
    };
    let keys = Arc::clone(&state.keys);
    let stored = key.clone();
    let hash = hash_token(&token);
    blocking(move || keys.insert_key(&stored, &hash).map_err(internal)).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: key.into(),
            token,
        }),
    ))
}

/// Lists the keys of the caller's merchant.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "management",
    security(("api_key" = [])),
    responses(
        (status = 200, body = Vec<ApiKeyDto>),
        (status = 403, description = "Not an owner key", body = ErrorBody),
    )
)]
pub async fn list_keys(
    State(state): State<Shared>,
    Principal(who): Principal,
) -> Result<Json<Vec<ApiKeyDto>>, ApiError> {
    require_owner(&who)?;
    let keys = Arc::clone(&state.keys);
    let list = blocking(move || keys.list_keys(&who.merchant_nif).map_err(internal)).await?;
    Ok(Json(list.into_iter().map(ApiKeyDto::from).collect()))
}

/// Revokes a key of the caller's merchant, at once.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "management",
    params(("id" = String, Path, description = "Key id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Revoked", body = ApiKeyDto),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 404, description = "No such key for this merchant", body = ErrorBody),
        (status = 409, description = "The merchant's last owner key cannot be revoked", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApiKeyDto>, ApiError> {
    require_owner(&who)?;
    let keys = Arc::clone(&state.keys);
    let sessions = Arc::clone(state.sessions());
    let revoked = blocking(move || {
        match keys.revoke_key(&who.merchant_nif, &id) {
            Ok(true) => {
                // Its browser sessions end now. Were this to fail, they
                // would still be refused: every request re-reads the key.
                if let Err(e) = sessions.delete_for_key(&id) {
                    tracing::warn!(error = %e, key = %id, "deleting a revoked key's sessions");
                }
            }
            Ok(false) => return Err(ApiError::NotFound),
            Err(AuthError::LastOwnerKey(_)) => {
                return Err(ApiError::Conflict {
                    code: "last_owner_key",
                    message: "this is the merchant's last owner key: create another owner key \
                              first (POST /v1/keys), then revoke this one"
                        .into(),
                });
            }
            Err(e) => return Err(internal(e)),
        }
        keys.list_keys(&who.merchant_nif)
            .map_err(internal)?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or(ApiError::NotFound)
    })
    .await?;
    Ok(Json(revoked.into()))
}

/// Registers an outlet for the caller's merchant.
#[utoipa::path(
    post,
    path = "/v1/outlets",
    tag = "management",
    request_body = CreateOutletRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, body = OutletDto),
        (status = 403, description = "Not an owner key", body = ErrorBody),
        (status = 409, description = "The id is registered already (outlet ids are global)", body = ErrorBody),
        (status = 422, description = "Invalid id", body = ErrorBody),
    )
)]
pub async fn create_outlet(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiJson(req): ApiJson<CreateOutletRequest>,
) -> Result<(StatusCode, Json<OutletDto>), ApiError> {
    require_owner(&who)?;
    if !is_outlet_id(&req.id) {
        return Err(ApiError::invalid(
            "id",
            "invalid_value",
            "1 to 64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    let outlet = Outlet {
        id: req.id,
        merchant_nif: who.merchant_nif,
        created_at: now_rfc3339(),
    };
    let keys = Arc::clone(&state.keys);
    let stored = outlet.clone();
    blocking(move || match keys.insert_outlet(&stored) {
        Ok(()) => Ok(()),
        Err(AuthError::OutletTaken(id)) => Err(ApiError::Conflict {
            code: "outlet_taken",
            message: format!("outlet id `{id}` is already registered"),
        }),
        Err(e) => Err(internal(e)),
    })
    .await?;
    Ok((StatusCode::CREATED, Json(outlet.into())))
}

/// Lists the outlets of the caller's merchant.
#[utoipa::path(
    get,
    path = "/v1/outlets",
    tag = "management",
    security(("api_key" = [])),
    responses(
        (status = 200, body = Vec<OutletDto>),
        (status = 403, description = "Not an owner key", body = ErrorBody),
    )
)]
pub async fn list_outlets(
    State(state): State<Shared>,
    Principal(who): Principal,
) -> Result<Json<Vec<OutletDto>>, ApiError> {
    require_owner(&who)?;
    let keys = Arc::clone(&state.keys);
    let list = blocking(move || keys.list_outlets(&who.merchant_nif).map_err(internal)).await?;
    Ok(Json(list.into_iter().map(OutletDto::from).collect()))
}
