//! Receipt delivery: the handlers, the sending of a receipt document, and the queue of deliveries waiting for their invoice's certification.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The delivery setup of a server: the record store and the channels.
#[derive(Debug, Clone)]
pub struct Deliveries {
    pub(crate) store: Arc<dyn DeliveryStore>,
    email: Option<SmtpMailer>,
    messaging: Option<Arc<dyn MessagingChannel>>,
    claim_lease: Duration,
}

impl Default for Deliveries {
    /// In memory, no channel configured.
    fn default() -> Self {
        Self::new(Arc::new(MemoryDeliveryStore::default()))
    }
}

impl Deliveries {
    /// Records in `store`, no channel yet.
    #[must_use]
    pub fn new(store: Arc<dyn DeliveryStore>) -> Self {
        Self {
            store,
            email: None,
            messaging: None,
            claim_lease: CLAIM_LEASE,
        }
    }

    /// Another claim lease than [`CLAIM_LEASE`] (tests; a deployment whose
    /// channels are slower than their 10 s timeouts allow for).
    #[must_use]
    pub fn with_claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = lease;
        self
    }

    /// Enables e-mail.
    #[must_use]
    pub fn with_email(mut self, mailer: SmtpMailer) -> Self {
        self.email = Some(mailer);
        self
    }

    /// Enables the messaging channel.
    #[must_use]
    pub fn with_messaging(mut self, channel: Arc<dyn MessagingChannel>) -> Self {
        self.messaging = Some(channel);
        self
    }
}

/// A delivery request (documented by [`crate::server::schema::DeliveryBody`],
/// which ties the recipient's form to the channel).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRequest {
    /// `email` or `whatsapp`.
    pub channel: Channel,
    /// An e-mail address, or a phone number in E.164 (`+243…`).
    pub to: String,
    /// PDF format, `a4` (default) or `80mm`.
    #[serde(default)]
    pub format: Option<String>,
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("random source: {e}")))?;
    Ok(format!("dlv_{}", hex::encode(bytes)))
}

pub(super) fn valid_phone(to: &str) -> bool {
    to.strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Sends the invoice's PDF receipt by e-mail or the messaging channel, and
/// records the attempt. On an outlet certified by the e-MCF, an invoice
/// not certified yet is not sent as a provisional ticket: the delivery is
/// recorded `waiting` (202) and the certified facture normalisée is sent
/// once the DGI's elements arrive ([`send_waiting`]).
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/deliveries",
    tag = "receipts",
    params(("id" = String, Path, description = "`{outlet}:{seq}`")),
    request_body = crate::server::schema::DeliveryBody,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Sent (and recorded)", body = DeliveryRecord),
        (status = 202, description = "Recorded `waiting`: sent once the DGI certifies the invoice", body = DeliveryRecord),
        (status = 403, description = "Auditor key, or key not bound to the outlet", body = ErrorBody),
        (status = 404, description = "No such invoice for this merchant", body = ErrorBody),
        (status = 409, description = "The DGI refused the invoice: it is not a facture normalisée", body = ErrorBody),
        (status = 422, description = "Bad recipient, unknown or unconfigured channel", body = ErrorBody),
        (status = 502, description = "The channel failed (recorded as failed)", body = ErrorBody),
    )
)]
pub async fn create_delivery(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<DeliveryRequest>,
) -> Result<Response, ApiError> {
    let sealed = load_for(&state, &who, &id).await?;
    if !who.role.can_fiscalize() {
        return Err(ApiError::Forbidden(format!(
            "a {} key cannot send receipts",
            who.role
        )));
    }
    let format = PageFormat::parse(req.format.as_deref().unwrap_or("a4"))
        .ok_or_else(|| ApiError::invalid("format", "invalid_format", "format is a4 or 80mm"))?;
    let to = req.to.trim().to_owned();
    match req.channel {
        Channel::Email if to.parse::<Mailbox>().is_err() || !to.contains('@') => {
            return Err(ApiError::invalid(
                "to",
                "invalid_recipient",
                "not an e-mail address",
            ));
        }
        Channel::Whatsapp if !valid_phone(&to) => {
            return Err(ApiError::invalid(
                "to",
                "invalid_recipient",
                "not a phone number in E.164 form (+243…)",
            ));
        }
        Channel::Print => {
            return Err(ApiError::invalid(
                "channel",
                "invalid_channel",
                "print is the server's journal of printed documents, not a delivery channel",
            ));
        }
        _ => {}
    }
    if !state.deliveries.configured(req.channel) {
        return Err(ApiError::invalid(
            "channel",
            "channel_not_configured",
            format!(
                "this server has no {} channel configured",
                req.channel.as_str()
            ),
        ));
    }
    let invoice_id = format!("{}:{}", sealed.invoice.tuple.outlet, sealed.seq);
    let st = Arc::clone(&state);
    let s2 = sealed.clone();
    let certification =
        blocking(move || crate::server::invoices::certification_for(&st, &s2)).await?;
    match certification.state.as_str() {
        "rejected" => {
            return Err(ApiError::Conflict {
                code: "not_certified",
                message: format!(
                    "the DGI refused invoice {invoice_id}; it is not a facture normalisée and is not sent"
                ),
            });
        }
        "pending" => {
            let now = now();
            let record = DeliveryRecord {
                id: new_id()?,
                invoice_id,
                merchant_nif: who.merchant_nif.clone(),
                channel: req.channel,
                recipient: to,
                status: DeliveryStatus::Waiting,
                error: Some(format!("{WAITING_NOTE} ({})", format_name(format))),
                created_at: now.clone(),
                completed_at: now,
            };
            keep(&state, &record).await?;
            return Ok((StatusCode::ACCEPTED, Json(record)).into_response());
        }
        _ => {}
    }
    let created_at = now();
    let outcome = send_document(&state, sealed, req.channel, &to, format).await?;
    let record = DeliveryRecord {
        id: new_id()?,
        invoice_id,
        merchant_nif: who.merchant_nif.clone(),
        channel: req.channel,
        recipient: to,
        status: DeliveryStatus::of(&outcome),
        error: outcome.as_ref().err().map(ToString::to_string),
        created_at,
        completed_at: now(),
    };
    keep(&state, &record).await?;
    match outcome {
        Ok(()) => Ok((StatusCode::CREATED, Json(record)).into_response()),
        Err(e) => Err(ApiError::BadGateway {
            code: "delivery_failed",
            message: format!(
                "the {} channel failed ({e}); the attempt {} is recorded as failed",
                record.channel.as_str(),
                record.id
            ),
        }),
    }
}

/// Records a delivery attempt in the server's store.
pub(super) async fn keep(state: &Shared, record: &DeliveryRecord) -> Result<(), ApiError> {
    let store = Arc::clone(&state.deliveries.store);
    let r = record.clone();
    blocking(move || {
        store
            .record(&r)
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await
}

/// How a waiting delivery's note starts; the PDF format follows in
/// parentheses, so the deferred send uses the one asked for.
pub(super) const WAITING_NOTE: &str = "waiting for the DGI's certification";

pub(super) fn format_name(format: PageFormat) -> &'static str {
    match format {
        PageFormat::A4 => "a4",
        PageFormat::Roll80mm => "80mm",
    }
}

impl Deliveries {
    fn configured(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email.is_some(),
            Channel::Whatsapp => self.messaging.is_some(),
            Channel::Print => false,
        }
    }
}

/// Builds the invoice's PDF (journalled as a copy when it is a certified
/// facture normalisée) and sends it. `Err` only for server faults; the
/// channel's own failure is the inner result.
pub(super) async fn send_document(
    state: &Shared,
    sealed: bonopay_signer::Sealed,
    channel: Channel,
    to: &str,
    format: PageFormat,
) -> Result<Result<(), DeliveryError>, ApiError> {
    let invoice_id = format!("{}:{}", sealed.invoice.tuple.outlet, sealed.seq);
    let st = Arc::clone(state);
    let what = format!("{}:{to}", channel.as_str());
    let (document, printing) = blocking(move || {
        let p = crate::server::invoices::printing(&st, &sealed, &what)?;
        let model = crate::server::receipt::build(
            &sealed.invoice,
            &crate::server::invoices::profile_of(&st, &sealed),
            &p.certificate(),
        )
        .map_err(ApiError::Internal)?;
        let pdf =
            crate::server::receipt_pdf::render_pdf(&model, format).map_err(ApiError::Internal)?;
        Ok((
            pdf,
            (
                p.certification,
                model.fiscal_number,
                model.authentication_code_display,
            ),
        ))
    })
    .await?;
    let (certification, number, code) = printing;
    let (subject, text) = match &certification.dgi {
        Some(_) => (
            format!(
                "Facture normalisee {} - CODE DEF/DGI {code}",
                certification.rn
            ),
            format!(
                "Bonjour,\n\nVeuillez trouver ci-joint votre facture normalisée {} \
                 (DEF Compteurs {number}, CODE DEF/DGI {code}).\n",
                certification.rn
            ),
        ),
        None => (
            format!("Recu {} - non certifie DGI", certification.rn),
            format!(
                "Bonjour,\n\nVeuillez trouver ci-joint votre reçu {} \
                 (non certifié par la DGI ; sceau Bono Pay {code}, compteurs {number}).\n",
                certification.rn
            ),
        ),
    };
    let message = OutgoingMessage {
        to: to.to_owned(),
        subject,
        text,
        filename: format!("facture-{}.pdf", invoice_id.replace(':', "-")),
        document,
    };
    Ok(match channel {
        Channel::Email => {
            let mailer = state.deliveries.email.clone();
            blocking(move || {
                Ok(match mailer {
                    Some(mailer) => mailer.send(&message),
                    None => Err(DeliveryError::Invalid("no e-mail channel".into())),
                })
            })
            .await?
        }
        Channel::Whatsapp => match &state.deliveries.messaging {
            Some(channel) => channel.send(&message).await,
            None => Err(DeliveryError::Invalid("no messaging channel".into())),
        },
        Channel::Print => Err(DeliveryError::Invalid("print is not a channel".into())),
    })
}

/// Sends every waiting delivery whose invoice is now certified, each
/// exactly once across instances (taken `waiting → sending` by a
/// compare-and-swap first), and records how it went. Returns how many
/// were sent or failed.
///
/// # Errors
/// [`ApiError`] when storage fails; a channel's failure is recorded.
pub async fn send_waiting(state: &Shared) -> Result<usize, ApiError> {
    let store = Arc::clone(&state.deliveries.store);
    let now_ms = chrono::Utc::now().timestamp_millis();
    // Waiting ones, and those another instance took and stopped sending
    // (it died mid-send): taken over once their claim has ended.
    let queue = blocking(move || {
        let internal = |e: DeliveryStoreError| ApiError::Internal(e.to_string());
        let mut queue: Vec<(DeliveryRecord, DeliveryStatus, Option<i64>)> = store
            .waiting()
            .map_err(internal)?
            .into_iter()
            .map(|w| (w, DeliveryStatus::Waiting, None))
            .collect();
        queue.extend(
            store
                .stalled(now_ms)
                .map_err(internal)?
                .into_iter()
                .map(|s| (s.record, DeliveryStatus::Sending, s.held)),
        );
        Ok(queue)
    })
    .await?;
    let lease = i64::try_from(state.deliveries.claim_lease.as_millis()).unwrap_or(i64::MAX);
    let mut done = 0;
    for (w, from, held) in queue {
        let Some((outlet, seq)) = w
            .invoice_id
            .rsplit_once(':')
            .and_then(|(o, s)| s.parse::<u64>().ok().map(|s| (o.to_owned(), s)))
        else {
            continue;
        };
        let st = Arc::clone(state);
        let w2 = w.clone();
        let taken = blocking(move || {
            let Some(entry) = st
                .fiscalizer
                .store()
                .entry(&outlet, seq)
                .map_err(|e| ApiError::Internal(e.to_string()))?
            else {
                return Ok(None);
            };
            let sealed = crate::server::invoices::sealed_of(&entry, &st.trusted_keys)?;
            if st
                .fiscalizer
                .certification_of(&outlet, seq)
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .is_none()
            {
                return Ok(None);
            }
            let took = st
                .deliveries
                .store
                .claim(&w2.id, from, held, now_ms.saturating_add(lease))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(took.then_some(sealed))
        })
        .await?;
        let Some(sealed) = taken else { continue };
        let format = if w.error.as_deref().is_some_and(|e| e.contains("(80mm)")) {
            PageFormat::Roll80mm
        } else {
            PageFormat::A4
        };
        let outcome = send_document(state, sealed, w.channel, &w.recipient, format).await?;
        let settled = DeliveryRecord {
            status: DeliveryStatus::of(&outcome),
            error: outcome.as_ref().err().map(ToString::to_string),
            completed_at: now(),
            ..w
        };
        let store = Arc::clone(&state.deliveries.store);
        blocking(move || {
            store
                .transition(DeliveryStatus::Sending, &settled)
                .map_err(|e| ApiError::Internal(e.to_string()))
        })
        .await?;
        done += 1;
    }
    Ok(done)
}

/// Every delivery attempt of an invoice, oldest first.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/deliveries",
    tag = "receipts",
    params(("id" = String, Path, description = "`{outlet}:{seq}`")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Vec<DeliveryRecord>),
        (status = 403, description = "Key not bound to the outlet", body = ErrorBody),
        (status = 404, description = "No such invoice for this merchant", body = ErrorBody),
    )
)]
pub async fn list_deliveries(
    State(state): State<Shared>,
    Principal(who): Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<DeliveryRecord>>, ApiError> {
    let sealed = load_for(&state, &who, &id).await?;
    let invoice_id = format!("{}:{}", sealed.invoice.tuple.outlet, sealed.seq);
    let store = Arc::clone(&state.deliveries.store);
    let merchant = who.merchant_nif.clone();
    let list = blocking(move || {
        store
            .list(&merchant, &invoice_id)
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    Ok(Json(list))
}
