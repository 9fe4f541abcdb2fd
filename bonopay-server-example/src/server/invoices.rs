//! `/v1/invoices`: fiscalize, read, look up, list, receipts.
//!
//! An invoice's id is `{outlet}:{seq}`, its position in the outlet's ledger
//! chain (outlet ids never contain `:`), so it is stable and needs no
//! second index.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, extract::State};
use bonopay_ledger::{Entry, LedgerError, LedgerStore};
use bonopay_signer::{KeyLookup, SealError, Sealed, SealedInvoice, index};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::ApiKey;
use super::error::{ApiError, ErrorBody};
use super::{
    ApiPath, ApiQuery, Principal, RawBody, Shared, authorize_outlet, blocking, receipt, receipt_pdf,
};

/// Header naming the client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Response header set on an idempotent replay.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The five security elements of a facture normalisée. Under the DGI's
/// rules they come from a DGI fiscal device: once the e-MCF has certified
/// the invoice they are the DGI's (`issuer` `dgi`), exactly as it returned
/// them. On an outlet whose certification mode is `none` they are Bono
/// Pay's own (`issuer` `bonopay`), which are not DGI elements and are
/// never printed under the DGI's labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityElementsDto {
    /// `dgi` or `bonopay`.
    pub issuer: String,
    /// 1. Fiscal number `FC/TC TYPE` (DGI `counters`).
    pub fiscal_number: String,
    /// 2. Fiscal authority id (DGI `nim`; Bono Pay's NID for `bonopay`).
    pub fiscal_authority_id: String,
    /// 3. Authentication code (DGI `codeDEFDGI`, as returned).
    pub authentication_code: String,
    /// 4. Timestamp (DGI `dateTime`, as returned; RFC 3339 for `bonopay`).
    pub timestamp: String,
    /// 5. QR payload (DGI `qrCode`, as returned; Bono Pay's `BPV1:`
    ///    verification payload for `bonopay`).
    pub qr: String,
}

/// Bono Pay's own seal on the invoice: the merchant's verification seal,
/// present in every mode, printed under Bono Pay's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BonoPaySealDto {
    /// Bono Pay's authentication code, 24 characters.
    pub authentication_code: String,
    /// The same as printed, 6 groups of 4.
    pub authentication_code_display: String,
    /// Bono Pay's counters `FC/TC TYPE` for the outlet and fiscal year.
    pub fiscal_number: String,
    /// The NID configured for this Bono Pay instance.
    pub device_id: String,
    /// Bono Pay's trusted time, RFC 3339 with the outlet's offset.
    pub timestamp: String,
    /// Offline verification payload (`BPV1:`…): the signature and the
    /// signed statement.
    pub verification_qr: String,
}

/// Where the invoice sits in its outlet's hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerPosition {
    /// Position in the outlet's chain, from 1.
    pub seq: u64,
    /// Hex of the previous entry's hash (signed in the seal).
    pub prev_hash: String,
    /// Hex of this entry's hash.
    pub entry_hash: String,
}

/// A sealed invoice as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SealedInvoiceDto {
    /// Stable id, `{outlet}:{seq}`.
    pub id: String,
    /// Seller NIF.
    pub merchant_nif: String,
    /// Outlet id.
    pub outlet: String,
    /// Invoice type (FV FT FA EV ET EA).
    pub invoice_type: String,
    /// The five security elements: the DGI's once certified, Bono Pay's on
    /// an outlet that is not certified (mode `none`), `null` while the
    /// certification is pending or after the DGI refused it (print the
    /// provisional ticket; see `certification`).
    pub security_elements: Option<SecurityElementsDto>,
    /// Where the invoice stands with the DGI: mode, state, SFE number
    /// (`rn`), the DGI's elements.
    pub certification: super::sync::CertificationDto,
    /// Bono Pay's verification seal.
    pub seal: BonoPaySealDto,
    /// The tax result: `groups` (totals per DGI group), `totals`,
    /// `payments`, `cdf` (USD invoices) and `dgi` (`total`, `vtotal`), as in
    /// docs/format.md §3.
    #[schema(value_type = Object)]
    pub tax: Value,
    /// Ledger position and hashes.
    pub ledger: LedgerPosition,
    /// Id of the key that signed it.
    pub key_id: String,
}

/// One line of an outlet's invoice list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InvoiceSummary {
    /// `{outlet}:{seq}`.
    pub id: String,
    /// Position in the chain.
    pub seq: u64,
    /// Invoice type.
    pub invoice_type: String,
    /// Fiscal number.
    pub fiscal_number: String,
    /// Authentication code.
    pub authentication_code: String,
    /// Trusted timestamp.
    pub timestamp: String,
    /// DGI total (CDF).
    pub total: String,
}

/// A page of an outlet's invoices, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InvoicePage {
    /// The invoices.
    pub items: Vec<InvoiceSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The SFE invoice number of a sealed invoice, from its signed body.
pub(crate) fn rn_of(sealed: &Sealed) -> String {
    bonopay_signer::certification::sfe_number_of_sealed(&sealed.invoice).unwrap_or_default()
}

/// The certification of a loaded invoice (blocking: storage).
pub(crate) fn certification_for(
    state: &Shared,
    sealed: &Sealed,
) -> Result<super::sync::CertificationDto, ApiError> {
    super::sync::certification_of(
        &state.fiscalizer,
        state.sync.as_ref(),
        &sealed.invoice.tuple.outlet,
        sealed.seq,
        &rn_of(sealed),
    )
}

fn dto(
    sealed: &Sealed,
    certification: super::sync::CertificationDto,
) -> Result<SealedInvoiceDto, ApiError> {
    let inv = &sealed.invoice;
    let mut body = inv
        .body_value()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let invoice_type = body["request"]["invoice_type"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let e = &inv.elements;
    let security_elements = match (&certification.dgi, certification.state.as_str()) {
        (Some(d), _) => Some(SecurityElementsDto {
            issuer: "dgi".into(),
            fiscal_number: d.counters.clone(),
            fiscal_authority_id: d.nim.clone(),
            authentication_code: d.code_def_dgi.clone(),
            timestamp: d.date_time.clone(),
            qr: d.qr_code.clone(),
        }),
        (None, "not_certified") => Some(SecurityElementsDto {
            issuer: "bonopay".into(),
            fiscal_number: e.fiscal_number.clone(),
            fiscal_authority_id: e.fiscal_authority_id.clone(),
            authentication_code: e.authentication_code.clone(),
            timestamp: e.timestamp.clone(),
            qr: e.verification_qr.clone(),
        }),
        _ => None,
    };
    Ok(SealedInvoiceDto {
        id: format!("{}:{}", inv.tuple.outlet, sealed.seq),
        merchant_nif: inv.tuple.merchant_nif.clone(),
        outlet: inv.tuple.outlet.clone(),
        invoice_type,
        security_elements,
        certification,
        seal: BonoPaySealDto {
            authentication_code: e.authentication_code.clone(),
            authentication_code_display: e.authentication_code_display.clone(),
            fiscal_number: e.fiscal_number.clone(),
            device_id: e.fiscal_authority_id.clone(),
            timestamp: e.timestamp.clone(),
            verification_qr: e.verification_qr.clone(),
        },
        tax: body["tax"].take(),
        ledger: LedgerPosition {
            seq: sealed.seq,
            prev_hash: sealed.prev_hash.clone(),
            entry_hash: sealed.entry_hash.clone(),
        },
        key_id: inv.tuple.key_id.clone(),
    })
}

/// The API view of a loaded invoice, with its certification.
pub(crate) async fn view(state: &Shared, sealed: Sealed) -> Result<SealedInvoiceDto, ApiError> {
    let st = Arc::clone(state);
    blocking(move || {
        let c = certification_for(&st, &sealed)?;
        dto(&sealed, c)
    })
    .await
}

/// Certifies a sealed invoice now when its outlet is certified by the
/// e-MCF, waiting at most the configured deadline. Past it the work goes
/// on in the background (the agent finishes it); the caller answers with
/// whatever state the invoice has by then.
async fn certify_within_deadline(state: &Shared, outlet: &str, seq: u64) {
    let Some(svc) = state.sync.clone() else {
        return;
    };
    if !svc.policy.mode(outlet).certifies() {
        return;
    }
    let agent = Arc::clone(&svc.agent);
    let o = outlet.to_owned();
    let task = tokio::task::spawn_blocking(move || {
        if let Err(e) = agent.certify_now(&o, seq) {
            tracing::warn!(outlet = %o, seq, error = %e, "certifying failed");
        }
    });
    let _ = tokio::time::timeout(svc.policy.deadline, task).await;
}

fn storage(e: LedgerError) -> ApiError {
    if e.is_retryable() {
        ApiError::Unavailable {
            code: "storage_unavailable",
            message: "the ledger is unavailable; retry later".into(),
        }
    } else {
        ApiError::Internal(e.to_string())
    }
}

/// Reads and verifies (signature included, with every trusted key) the
/// sealed invoice in `entry`.
pub(crate) fn sealed_of(entry: &Entry, keys: &dyn KeyLookup) -> Result<Sealed, ApiError> {
    let invoice = SealedInvoice::verify(&entry.payload, keys).map_err(|e| {
        ApiError::Internal(format!(
            "stored invoice {}:{} does not verify: {e}",
            entry.outlet, entry.seq
        ))
    })?;
    Ok(Sealed {
        invoice,
        seq: entry.seq,
        entry_hash: hex::encode(entry.entry_hash),
        prev_hash: hex::encode(entry.prev_hash),
        replayed: false,
    })
}

/// Loads `outlet`/`seq` if it is a sealed invoice of `merchant`.
fn load(
    store: &dyn LedgerStore,
    keys: &dyn KeyLookup,
    merchant: &str,
    outlet: &str,
    seq: u64,
) -> Result<Option<Sealed>, ApiError> {
    let Some(entry) = store.entry(outlet, seq).map_err(storage)? else {
        return Ok(None);
    };
    if !entry.kind.is_numbered() {
        return Ok(None);
    }
    let sealed = sealed_of(&entry, keys)?;
    // Defence in depth: the outlet check already implies this.
    Ok((sealed.invoice.tuple.merchant_nif == merchant).then_some(sealed))
}

fn parse_id(id: &str) -> Result<(String, u64), ApiError> {
    let (outlet, seq) = id.rsplit_once(':').ok_or(ApiError::NotFound)?;
    let seq = seq.parse::<u64>().map_err(|_| ApiError::NotFound)?;
    Ok((outlet.to_owned(), seq))
}

/// Loads invoice `id` for `who` (404 unless it is theirs; 403 if their key
/// is not bound to its outlet).
pub(crate) async fn load_for(state: &Shared, who: &ApiKey, id: &str) -> Result<Sealed, ApiError> {
    let (outlet, seq) = parse_id(id)?;
    authorize_outlet(state, who, &outlet).await?;
    let st = Arc::clone(state);
    let merchant = who.merchant_nif.clone();
    blocking(move || {
        load(
            st.fiscalizer.store().as_ref(),
            &st.trusted_keys,
            &merchant,
            &outlet,
            seq,
        )?
        .ok_or(ApiError::NotFound)
    })
    .await
}

pub(crate) fn seal_error(state: &Shared, e: SealError) -> ApiError {
    match e {
        SealError::Invalid(v) => v.into(),
        SealError::IdempotencyConflict { key } => ApiError::Conflict {
            code: "idempotency_conflict",
            message: format!("Idempotency-Key `{key}` was already used for a different invoice"),
        },
        SealError::SignerUnavailable(err) => {
            state.metrics.signer_error();
            tracing::error!(error = %err, "signer unavailable");
            ApiError::Unavailable {
                code: "signer_unavailable",
                message: "the signing device is unavailable; nothing was sealed and no number \
                          was used; retry later with the same Idempotency-Key"
                    .into(),
            }
        }
        SealError::ClockBehind { .. } => ApiError::Unavailable {
            code: "clock_behind",
            message: "the trusted clock is behind this outlet's last invoice; retry later".into(),
        },
        SealError::Contention { outlet, attempts } => {
            state.metrics.contention();
            tracing::warn!(%outlet, attempts, "seal refused for contention");
            ApiError::Unavailable {
                code: "contention",
                message: "other sales on this outlet kept the chain moving; nothing was sealed \
                          and no number was used; retry with the same Idempotency-Key"
                    .into(),
            }
        }
        SealError::Storage(err) => storage(err),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Fiscalizes an invoice request (docs/format.md §1).
///
/// The caller's key must be allowed to fiscalize (owner, cashier,
/// integration) and be bound to the invoice's outlet (403 otherwise). An
/// invoice whose `merchant_nif` is not the key's merchant, or whose outlet
/// is not registered to it, is answered 404, exactly as for an outlet that
/// does not exist, so nothing about other merchants is revealed.
#[utoipa::path(
    post,
    path = "/v1/invoices",
    tag = "invoices",
    request_body(content = super::schema::InvoiceRequestBody, description = "An invoice request, `bonopay/invoice/v1` (docs/format.md §1)", content_type = "application/json"),
    params(("Idempotency-Key" = String, Header, description = "Client key, 1 to 200 printable characters, scoped to the merchant", min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]*[!-~])?$")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Sealed, and certified by the DGI (or certification is off for the outlet: `certification.state` `not_certified`)", body = SealedInvoiceDto),
        (status = 200, description = "Idempotent replay: the original seal, same body, with the certification as it stands now", body = SealedInvoiceDto),
        (status = 202, description = "Sealed, not certified yet (`certification.state` `pending`, or `rejected` by the DGI): no security elements; print the provisional ticket. The certification goes on in the background; fetch the invoice, or send the same request again, to see it", body = SealedInvoiceDto),
        (status = 400, description = "Missing or malformed Idempotency-Key", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Role may not fiscalize, or key not bound to the outlet", body = ErrorBody),
        (status = 404, description = "Merchant or outlet not this key's", body = ErrorBody),
        (status = 409, description = "Idempotency-Key already used for a different invoice", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Every validation error: path, code, message", body = ErrorBody),
        (status = 503, description = "Signer or storage unavailable: retry (Retry-After)", body = ErrorBody),
    )
)]
pub async fn create_invoice(
    State(state): State<Shared>,
    Principal(who): Principal,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    if !who.role.can_fiscalize() {
        return Err(ApiError::Forbidden(format!(
            "a {} key cannot fiscalize",
            who.role
        )));
    }
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_idempotency_key",
                "the Idempotency-Key header is required",
            )
        })?
        .to_str()
        .ok()
        .and_then(|k| bonopay_core::IdempotencyKey::new(k).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "the Idempotency-Key must be 1 to 200 printable ASCII characters",
            )
        })?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("", "invalid_json", "the body is not UTF-8"))?
        .to_owned();
    let req = blocking(move || bonopay_core::parse_invoice(&text).map_err(ApiError::from)).await?;
    if req.merchant_nif != who.merchant_nif {
        return Err(ApiError::NotFound);
    }
    authorize_outlet(&state, &who, &req.outlet_id).await?;
    let st = Arc::clone(&state);
    let (result, elapsed) = blocking(move || {
        let start = Instant::now();
        let r = st.fiscalizer.seal(&req, &key);
        Ok((r, start.elapsed()))
    })
    .await?;
    let sealed = result.map_err(|e| seal_error(&state, e))?;
    let outlet = sealed.invoice.tuple.outlet.clone();
    let replayed = sealed.replayed;
    let emcf = state
        .sync
        .as_ref()
        .is_some_and(|s| s.policy.mode(&outlet).certifies());
    let body = if emcf || replayed {
        certify_within_deadline(&state, &outlet, sealed.seq).await;
        view(&state, sealed).await?
    } else {
        // A sale just sealed on an outlet that is not certified has no
        // certification to look up: no storage read on the hot path.
        let c = super::sync::CertificationDto::not_certified(rn_of(&sealed));
        dto(&sealed, c)?
    };
    let settled = matches!(
        body.certification.state.as_str(),
        "certified" | "not_certified"
    );
    if replayed {
        state.metrics.replayed();
    } else {
        state.metrics.sealed(elapsed);
    }
    let status = match (settled, replayed) {
        (false, _) => StatusCode::ACCEPTED,
        (true, true) => StatusCode::OK,
        (true, false) => StatusCode::CREATED,
    };
    let location = HeaderValue::from_str(&format!("/v1/invoices/{}", body.id)).ok();
    let mut resp = (status, Json(body)).into_response();
    if replayed {
        resp.headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    } else if let Some(l) = location {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    Ok(resp)
}

/// One sealed invoice, by id `{outlet}:{seq}`.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}",
    tag = "invoices",
    params(("id" = String, Path, description = "`{outlet}:{seq}`")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = SealedInvoiceDto),
        (status = 403, description = "Key not bound to the outlet", body = ErrorBody),
        (status = 404, description = "No such invoice for this merchant", body = ErrorBody),
    )
)]
pub async fn get_invoice(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SealedInvoiceDto>, ApiError> {
    let sealed = load_for(&state, &who, &id).await?;
    Ok(Json(view(&state, sealed).await?))
}

/// Lookup parameters: `auth_code`, or `dgi_code`, or `outlet` +
/// `fiscal_year` + `fiscal_number`; exactly one set (documented as one
/// object parameter, [`super::schema::lookup_parameter`]). A parameter the
/// lookup does not know is refused, as the document says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupQuery {
    /// Bono Pay authentication code (24 characters, or 6 dash-separated
    /// groups of 4).
    pub auth_code: Option<String>,
    /// The Code DEF/DGI the DGI certified the invoice with, as printed.
    pub dgi_code: Option<String>,
    /// Outlet, with `fiscal_year` and `fiscal_number`.
    pub outlet: Option<String>,
    /// Fiscal year of the number.
    pub fiscal_year: Option<i32>,
    /// `FC/TC TYPE` (e.g. `3/5 FV`) or the total counter TC alone (`5`).
    pub fiscal_number: Option<String>,
}

/// The total counter (TC) of `FC/TC TYPE`, `FC/TC` or a bare `TC`:
/// counters of 1 to 19 digits, one space before the invoice type. Exactly
/// what the document's pattern says
/// ([`super::schema::fiscal_number_pattern`]).
pub(crate) fn total_counter(number: &str) -> Option<u64> {
    let counter = |s: &str| (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let (counters, invoice_type) = match number.split_once(' ') {
        Some((c, t)) => (c, Some(t)),
        None => (number, None),
    };
    if invoice_type.is_some_and(|t| bonopay_core::InvoiceType::from_code(t).is_none()) {
        return None;
    }
    let tc = match counters.split_once('/') {
        Some((fc, tc)) if counter(fc) => tc,
        Some(_) => return None,
        None => counters,
    };
    if counter(tc) { tc.parse().ok() } else { None }
}

/// Finds a sealed invoice by its Bono Pay authentication code, by the Code
/// DEF/DGI it was certified with, or by fiscal number within an outlet and
/// fiscal year.
#[utoipa::path(
    get,
    path = "/v1/invoices/lookup",
    tag = "invoices",
    params(super::schema::LookupParams),
    security(("api_key" = [])),
    responses(
        (status = 200, body = SealedInvoiceDto),
        (status = 400, description = "Not exactly one complete lookup, an unknown parameter, or a malformed fiscal number", body = ErrorBody),
        (status = 404, description = "No such invoice for this merchant", body = ErrorBody),
    )
)]
pub async fn lookup_invoice(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiQuery(q): ApiQuery<LookupQuery>,
) -> Result<Json<SealedInvoiceDto>, ApiError> {
    let by_number = [
        q.outlet.is_some(),
        q.fiscal_year.is_some(),
        q.fiscal_number.is_some(),
    ];
    let sets = usize::from(q.auth_code.is_some())
        + usize::from(q.dgi_code.is_some())
        + usize::from(by_number.contains(&true));
    if sets != 1 || (by_number.contains(&true) && by_number.contains(&false)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "give exactly one of: auth_code; dgi_code; outlet, fiscal_year and fiscal_number",
        ));
    }
    let st = Arc::clone(&state);
    let (outlet, seq) = if let Some(code) = &q.auth_code {
        let code = bonopay_core::normalize_reference(code).ok_or(ApiError::NotFound)?;
        let hit = blocking(move || {
            st.fiscalizer
                .store()
                .find_index(index::AUTH_CODE, &code)
                .map_err(storage)
        })
        .await?;
        hit.into_iter().next().ok_or(ApiError::NotFound)?
    } else if let Some(code) = &q.dgi_code {
        let code = code.trim().to_owned();
        blocking(move || {
            st.fiscalizer
                .find_by_dgi_code(&code)
                .map_err(|e| ApiError::Internal(e.to_string()))
        })
        .await?
        .ok_or(ApiError::NotFound)?
    } else if let (Some(outlet), Some(year), Some(number)) =
        (&q.outlet, q.fiscal_year, &q.fiscal_number)
    {
        let total = total_counter(number).ok_or_else(|| {
            ApiError::bad_request("invalid_query", "fiscal_number is `FC/TC TYPE` or `TC`")
        })?;
        authorize_outlet(&state, &who, outlet).await?;
        let o = outlet.clone();
        let entry = blocking(move || {
            st.fiscalizer
                .store()
                .entry_by_fiscal_number(&o, year, total)
                .map_err(storage)
        })
        .await?
        .ok_or(ApiError::NotFound)?;
        (entry.outlet, entry.seq)
    } else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "give auth_code, dgi_code, or outlet, fiscal_year and fiscal_number",
        ));
    };
    let sealed = load_for(&state, &who, &format!("{outlet}:{seq}")).await?;
    Ok(Json(view(&state, sealed).await?))
}

/// Pagination of an outlet's invoices.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page (absent for the first page):
    /// a decimal number.
    #[param(schema_with = super::schema::cursor_schema)]
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// Largest page.
pub const MAX_PAGE: u32 = 200;

/// An outlet's invoices, oldest first, with cursor pagination.
#[utoipa::path(
    get,
    path = "/v1/outlets/{outlet}/invoices",
    tag = "invoices",
    params(("outlet" = String, Path, description = "Outlet id"), PageQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = InvoicePage),
        (status = 400, description = "Bad cursor or limit", body = ErrorBody),
        (status = 403, description = "Key not bound to the outlet", body = ErrorBody),
        (status = 404, description = "Outlet not this merchant's", body = ErrorBody),
    )
)]
pub async fn list_outlet_invoices(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(outlet): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<InvoicePage>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    let after = match &q.cursor {
        None => 0,
        // Digits only, as the document's pattern says (`str::parse` would
        // also take a leading `+`).
        Some(c) => c
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| c.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| ApiError::bad_request("invalid_query", "malformed cursor"))?,
    };
    authorize_outlet(&state, &who, &outlet).await?;
    let st = Arc::clone(&state);
    let merchant = who.merchant_nif.clone();
    let page = blocking(move || {
        let store = st.fiscalizer.store();
        let head = store.head(&outlet).map_err(storage)?;
        let from = after.saturating_add(1);
        let to = head.seq.min(after.saturating_add(u64::from(limit)));
        let entries = if from > to {
            Vec::new()
        } else {
            store.range(&outlet, from, to).map_err(storage)?
        };
        let mut items = Vec::with_capacity(entries.len());
        for entry in entries.iter().filter(|e| e.kind.is_numbered()) {
            let s = sealed_of(entry, &st.trusted_keys)?;
            if s.invoice.tuple.merchant_nif != merchant {
                continue;
            }
            let body = s
                .invoice
                .body_value()
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let el = &s.invoice.elements;
            items.push(InvoiceSummary {
                id: format!("{outlet}:{}", s.seq),
                seq: s.seq,
                invoice_type: body["request"]["invoice_type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                fiscal_number: el.fiscal_number.clone(),
                authentication_code: el.authentication_code.clone(),
                timestamp: el.timestamp.clone(),
                total: s.invoice.tuple.total.clone(),
            });
        }
        let next_cursor = (to < head.seq && from <= to).then(|| to.to_string());
        Ok(InvoicePage { items, next_cursor })
    })
    .await?;
    Ok(Json(page))
}

/// Receipt options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReceiptQuery {
    /// Paper width in mm: 58 (32 columns) or 80 (48 columns, default).
    #[param(schema_with = super::paper_width_schema)]
    pub width: Option<u32>,
}

/// The receipt for a thermal printer, as UTF-8 text with every mandatory
/// mention (seller, operator, client, items, group totals, the five
/// security elements, and the mentions of credit notes, exports and
/// advances).
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/receipt.txt",
    tag = "receipts",
    params(("id" = String, Path, description = "`{outlet}:{seq}`"), ReceiptQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "text/plain receipt", content_type = "text/plain", body = String),
        (status = 400, description = "Width not 58 or 80", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn receipt_txt(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReceiptQuery>,
) -> Result<Response, ApiError> {
    let columns = match super::paper_width(q.width)? {
        bonopay_signer::render::Paper::Mm58 => receipt::COLUMNS_58MM,
        _ => receipt::COLUMNS_80MM,
    };
    let sealed = load_for(&state, &who, &id).await?;
    let st = Arc::clone(&state);
    let text = blocking(move || {
        let p = printing(&st, &sealed, "receipt.txt")?;
        let profile = profile_of(&st, &sealed);
        receipt::render_text(&sealed.invoice, &profile, &p.certificate(), columns)
            .map_err(ApiError::Internal)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// PDF receipt options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PdfQuery {
    /// `a4` (default) or `80mm`.
    #[param(pattern = "^(a4|80mm)$")]
    pub format: Option<String>,
}

/// The merchant profile printed on `sealed`'s receipts.
pub(crate) fn profile_of(state: &Shared, sealed: &Sealed) -> super::MerchantProfile {
    state
        .merchants
        .get(&sealed.invoice.tuple.merchant_nif)
        .cloned()
        .unwrap_or_default()
}

/// What a printed document says about the DGI: the certification of the
/// invoice, and whether this is a copy (DUPLICATA) of a certified
/// facture normalisée already produced.
pub(crate) struct Printing {
    /// The certification as it stands.
    pub certification: super::sync::CertificationDto,
    /// A certified document was produced for this invoice before.
    pub duplicata: bool,
}

impl Printing {
    /// The receipt's certificate.
    pub(crate) fn certificate(&self) -> receipt::Certificate<'_> {
        let c = &self.certification;
        match (&c.dgi, c.state.as_str()) {
            (Some(elements), _) => receipt::Certificate::Dgi {
                elements,
                source: match c.source.as_deref() {
                    Some("operator") => {
                        bonopay_signer::certification::CertificationSource::Operator
                    }
                    Some("mcf") => bonopay_signer::certification::CertificationSource::Mcf,
                    _ => bonopay_signer::certification::CertificationSource::Emcf,
                },
                rn: &c.rn,
                duplicata: self.duplicata,
            },
            (None, "not_certified") => receipt::Certificate::NotCertified { rn: &c.rn },
            // A customer's ticket says why only when the DGI refused the
            // invoice (its own words); a transport error or a queue state
            // is for the dashboard, not for the paper.
            (None, state) => receipt::Certificate::Provisional {
                rn: &c.rn,
                reason: (state == "rejected")
                    .then_some(c.error.as_deref())
                    .flatten(),
                rejected: state == "rejected",
            },
        }
    }
}

/// Prepares a document of `sealed` (blocking: storage). When the invoice
/// is certified, the document is a facture normalisée: it is recorded in
/// the print journal (`what` says which document), and every one after
/// the first is a DUPLICATA (SFE §1.8). Provisional tickets and
/// uncertified receipts are not journalled.
pub(crate) fn printing(state: &Shared, sealed: &Sealed, what: &str) -> Result<Printing, ApiError> {
    use super::deliveries::{Channel, DeliveryRecord, DeliveryStatus};
    let certification = certification_for(state, sealed)?;
    if certification.dgi.is_none() {
        return Ok(Printing {
            certification,
            duplicata: false,
        });
    }
    let invoice_id = format!("{}:{}", sealed.invoice.tuple.outlet, sealed.seq);
    let merchant = &sealed.invoice.tuple.merchant_nif;
    let store = &state.deliveries.store;
    let storage = |e: super::deliveries::DeliveryStoreError| ApiError::Internal(e.to_string());
    let duplicata = store
        .list(merchant, &invoice_id)
        .map_err(storage)?
        .iter()
        .any(|d| d.channel == Channel::Print);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    store
        .record(&DeliveryRecord {
            id: super::deliveries::new_id()?,
            invoice_id,
            merchant_nif: merchant.clone(),
            channel: Channel::Print,
            recipient: what.to_owned(),
            status: DeliveryStatus::Sent,
            error: None,
            created_at: now.clone(),
            completed_at: now,
        })
        .map_err(storage)?;
    Ok(Printing {
        certification,
        duplicata,
    })
}

/// Renders the PDF receipt of a loaded invoice (blocking).
pub(crate) fn pdf_of(
    state: &Shared,
    sealed: &Sealed,
    format: receipt_pdf::PageFormat,
    what: &str,
) -> Result<Vec<u8>, ApiError> {
    let p = printing(state, sealed, what)?;
    let model = receipt::build(
        &sealed.invoice,
        &profile_of(state, sealed),
        &p.certificate(),
    )
    .map_err(ApiError::Internal)?;
    receipt_pdf::render_pdf(&model, format).map_err(ApiError::Internal)
}

/// The receipt as a PDF, A4 or 80 mm, with every mandatory mention (the
/// same as `receipt.txt`) and the QR code drawn. Deterministic: the same
/// invoice always gives the same bytes. Characters outside WinAnsi
/// (e.g. Lingala ɛ ɔ) print as `?`.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/receipt.pdf",
    tag = "receipts",
    params(("id" = String, Path, description = "`{outlet}:{seq}`"), PdfQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "PDF receipt", content_type = "application/pdf", body = Vec<u8>),
        (status = 400, description = "format not a4 or 80mm", body = ErrorBody),
        (status = 403, description = "Key not bound to the outlet", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn receipt_pdf(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PdfQuery>,
) -> Result<Response, ApiError> {
    let format = receipt_pdf::PageFormat::parse(q.format.as_deref().unwrap_or("a4"))
        .ok_or_else(|| ApiError::bad_request("invalid_query", "format is a4 or 80mm"))?;
    let sealed = load_for(&state, &who, &id).await?;
    let st = Arc::clone(&state);
    let bytes = blocking(move || pdf_of(&st, &sealed, format, "receipt.pdf")).await?;
    Ok(([(header::CONTENT_TYPE, "application/pdf")], bytes).into_response())
}

/// The QR code of the invoice's receipt, as SVG (error-correction level
/// M): the DGI's `qrCode` once certified, exactly as the e-MCF returned
/// it; Bono Pay's `BPV1:` verification payload otherwise (never an
/// `RDCDEF01` payload the DGI did not issue).
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/receipt.svg",
    tag = "receipts",
    params(("id" = String, Path, description = "`{outlet}:{seq}`")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "SVG image", content_type = "image/svg+xml", body = String),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn receipt_svg(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let sealed = load_for(&state, &who, &id).await?;
    let st = Arc::clone(&state);
    let qr = blocking(move || {
        let c = certification_for(&st, &sealed)?;
        Ok(match c.dgi {
            Some(d) => d.qr_code,
            None => sealed.invoice.elements.verification_qr.clone(),
        })
    })
    .await?;
    let svg = bonopay_signer::qr_svg(&qr).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn total_counter_reads_both_forms() {
        assert_eq!(total_counter("3/5 FV"), Some(5));
        assert_eq!(total_counter("5"), Some(5));
        assert_eq!(total_counter("x"), None);
        assert_eq!(total_counter("3/ FV"), None);
        assert_eq!(total_counter("3/5"), Some(5));
        assert_eq!(total_counter(" 5"), None);
        assert_eq!(total_counter("3/5 XX"), None);
    }

    #[test]
    fn ids_split_at_the_last_colon() {
        assert_eq!(parse_id("kin-01:7").unwrap(), ("kin-01".to_owned(), 7));
        assert!(parse_id("kin-01").is_err());
        assert!(parse_id("kin-01:x").is_err());
    }
}
