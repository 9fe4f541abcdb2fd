//! The webhook service: subscribers, the producer that turns ledger entries into events, and the dispatcher that signs and sends them.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The webhook service: subscribers, the event queue, the producer that
/// derives events from the ledger, and the dispatcher, over a
/// [`WebhookStore`]. It keeps what is not storage: HTTP sending, the retry
/// policy, the clock and the jitter. Cheap to clone (the clones share one
/// store). Its methods that touch the store are blocking; async code calls
/// them on the blocking pool.
#[derive(Clone)]
pub struct Webhooks {
    store: Arc<dyn WebhookStore>,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn Jitter>,
    policy: RetryPolicy,
    egress: Egress,
    client: reqwest::Client,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("egress", &self.egress)
            .finish_non_exhaustive()
    }
}

pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], WebhookError> {
    let mut b = [0u8; N];
    OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| WebhookError::Storage(format!("random source: {e}")))?;
    Ok(b)
}

pub(super) fn events_text(events: &[EventType]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn events_of(text: &str) -> Vec<EventType> {
    text.split(',').filter_map(EventType::parse).collect()
}

/// The delivery client: resolves through `egress` and follows no
/// redirect (a receiver must not send the server elsewhere).
pub(super) fn client_for(egress: &Egress) -> Result<reqwest::Client, WebhookError> {
    egress
        .client_builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| WebhookError::Storage(format!("HTTP client: {e}")))
}

pub(super) fn join_error(e: tokio::task::JoinError) -> WebhookError {
    WebhookError::Storage(format!("blocking task failed: {e}"))
}

impl Webhooks {
    /// The service over SQLite at `path` (creating its tables) — `auth.db`
    /// in `bonopay serve`.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn open(path: &Path) -> Result<Self, WebhookError> {
        Self::with_store(Arc::new(SqliteWebhookStore::open(path)?))
    }

    /// The service over an in-memory database (tests, examples): nothing
    /// survives the process.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn in_memory() -> Result<Self, WebhookError> {
        Self::with_store(Arc::new(SqliteWebhookStore::in_memory()?))
    }

    /// The service over the PostgreSQL database at `url` (migrating it),
    /// shared with every other instance connected to it: see
    /// [`PgWebhookStore`](super::postgres::PgWebhookStore).
    ///
    /// # Errors
    /// [`WebhookError::Storage`] if the database cannot be reached or
    /// migrated.
    pub fn postgres(url: &str) -> Result<Self, WebhookError> {
        Self::with_store(Arc::new(super::postgres::PgWebhookStore::connect(url)?))
    }

    /// The service over `store`, with the system clock, random jitter,
    /// the default [`RetryPolicy`], and deliveries to public addresses only
    /// ([`Egress::default`]).
    ///
    /// # Errors
    /// [`WebhookError::Storage`] if the HTTP client cannot be built.
    pub fn with_store(store: Arc<dyn WebhookStore>) -> Result<Self, WebhookError> {
        let egress = Egress::default();
        Ok(Self {
            store,
            clock: Arc::new(SystemClock),
            jitter: Arc::new(RandomJitter),
            policy: RetryPolicy::default(),
            client: client_for(&egress)?,
            egress,
        })
    }

    /// Registers and delivers to the destinations `egress` allows (the
    /// operator's allow-list; tests allow their loopback receivers), and
    /// resolves names through it.
    ///
    /// # Errors
    /// [`WebhookError::Storage`] if the HTTP client cannot be built.
    pub fn with_egress(mut self, egress: impl Into<Egress>) -> Result<Self, WebhookError> {
        let egress = egress.into();
        self.client = client_for(&egress)?;
        self.egress = egress;
        Ok(self)
    }

    /// The destinations this service registers and delivers to.
    #[must_use]
    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// Uses `clock` for due times, signature timestamps and logged times
    /// (tests advance a `ManualClock` instead of sleeping).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `jitter` for retry delays.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The retry policy.
    #[must_use]
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The store the service works on.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn WebhookStore> {
        &self.store
    }

    // ----- subscribers -------------------------------------------------

    /// Registers a subscriber of `merchant_nif` for `events` at `url`
    /// (both already validated) and returns it with its new secret.
    /// `Ok(None)` if the merchant has [`MAX_SUBSCRIBERS_PER_MERCHANT`]
    /// already.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn create_subscriber(
        &self,
        merchant_nif: &str,
        url: &str,
        events: &[EventType],
    ) -> Result<Option<CreatedWebhook>, WebhookError> {
        let webhook = Subscriber {
            id: format!("whk_{}", hex::encode(random_bytes::<8>()?)),
            merchant_nif: merchant_nif.to_owned(),
            url: url.to_owned(),
            events: events.to_vec(),
            created_at: rfc3339(self.clock.now_ms()),
        };
        let secret = format!("whsec_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()?));
        let inserted =
            self.store
                .insert_subscriber(&webhook, &secret, MAX_SUBSCRIBERS_PER_MERCHANT)?;
        Ok(inserted.then_some(CreatedWebhook { webhook, secret }))
    }

    /// The merchant's subscribers (not deleted ones), oldest first.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn list_subscribers(&self, merchant_nif: &str) -> Result<Vec<Subscriber>, WebhookError> {
        self.store.list_subscribers(merchant_nif)
    }

    /// Deletes subscriber `id` of `merchant_nif` and cancels its pending
    /// deliveries (its log is kept). `false` if the merchant has no such
    /// subscriber.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn delete_subscriber(&self, merchant_nif: &str, id: &str) -> Result<bool, WebhookError> {
        self.store.delete_subscriber(merchant_nif, id)
    }

    /// The attempt log of subscriber `id` of `merchant_nif`, newest first,
    /// at most `limit` attempts; `None` if the merchant has no such
    /// subscriber.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn delivery_log(
        &self,
        merchant_nif: &str,
        id: &str,
        limit: u32,
    ) -> Result<Option<Vec<DeliveryAttempt>>, WebhookError> {
        self.store.delivery_log(merchant_nif, id, limit)
    }

    // ----- events ------------------------------------------------------

    /// Enqueues event `event_id` of `merchant_nif`, with one delivery for
    /// every current subscriber of the merchant that wants `event_type`.
    /// Idempotent on `event_id`: returns `true` if the event is new,
    /// `false` if it was enqueued before (nothing is changed then).
    /// Blocking (storage): call it from the blocking pool in async code.
    ///
    /// The DGI sync agent calls this for `invoice.synced` and
    /// `invoice.sync_failed` (event id e.g. `invoice.synced:{outlet}:{seq}`).
    ///
    /// # Errors
    /// [`WebhookError::UnknownEventType`], [`WebhookError::InvalidEventId`]
    /// (empty, longer than [`MAX_EVENT_ID_LEN`], or not printable ASCII
    /// without spaces), [`WebhookError::Storage`].
    pub fn enqueue_event(
        &self,
        event_id: &str,
        merchant_nif: &str,
        event_type: &str,
        payload: Value,
    ) -> Result<bool, WebhookError> {
        let kind = EventType::parse(event_type)
            .ok_or_else(|| WebhookError::UnknownEventType(event_type.to_owned()))?;
        if event_id.is_empty()
            || event_id.len() > MAX_EVENT_ID_LEN
            || !event_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(WebhookError::InvalidEventId(format!(
                "`{event_id}`: 1 to {MAX_EVENT_ID_LEN} printable ASCII characters, no spaces"
            )));
        }
        let ev = NewEvent {
            id: event_id.to_owned(),
            merchant_nif: merchant_nif.to_owned(),
            kind,
            payload: payload.to_string(),
        };
        self.store.enqueue(&ev, self.clock.now_ms())
    }

    /// Turns the ledger entries of every outlet registered in `keys` into
    /// events, from each outlet's stored cursor on: `invoice.sealed` for
    /// invoices and credit notes, `report.z_closed` for Z reports. Events
    /// and the advanced cursor commit in one transaction that first checks
    /// the cursor has not moved ([`WebhookStore::commit_events`]), so an
    /// entry is never skipped nor enqueued twice, also with several
    /// instances producing at once: the one that commits first wins, the
    /// others write nothing and leave the outlet to it. Outlets not
    /// registered in `keys` wait (their cursor does not move). Returns the
    /// number of new events. Blocking.
    ///
    /// # Errors
    /// [`WebhookError::Source`] if the ledger or key store fails or an
    /// entry cannot be read (that outlet stops at the entry; the others go
    /// on, and the first error is returned), [`WebhookError::Storage`].
    pub fn produce(
        &self,
        ledger: &dyn LedgerStore,
        keys: &dyn ApiKeyStore,
    ) -> Result<usize, WebhookError> {
        let mut total = 0;
        let mut first_error = None;
        for outlet in ledger.outlets().map_err(source)? {
            let merchant = match keys.outlet(&outlet) {
                Ok(Some(o)) => o.merchant_nif,
                Ok(None) => continue,
                Err(e) => {
                    first_error.get_or_insert(source(e));
                    continue;
                }
            };
            match self.produce_outlet(ledger, &outlet, &merchant) {
                Ok(n) => total += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    fn produce_outlet(
        &self,
        ledger: &dyn LedgerStore,
        outlet: &str,
        merchant: &str,
    ) -> Result<usize, WebhookError> {
        let mut from = self.store.cursor(outlet)?;
        let head = ledger.head(outlet).map_err(source)?.seq;
        if head < from {
            return Ok(0);
        }
        let mut total = 0;
        let mut batch = Vec::new();
        let mut scanned = 0;
        let mut next = from;
        for entry in ledger.iter_from(outlet, from) {
            let entry = entry.map_err(source)?;
            if entry.seq > head {
                break;
            }
            if let Some(ev) = event_of(&entry, merchant)? {
                batch.push(ev);
            }
            next = entry.seq.saturating_add(1);
            scanned += 1;
            if scanned >= PRODUCE_BATCH {
                match self.commit(outlet, from, &batch, next)? {
                    Some(n) => total += n,
                    // Another producer moved the cursor: it has this outlet.
                    None => return Ok(total),
                }
                from = next;
                batch.clear();
                scanned = 0;
            }
        }
        if scanned > 0 {
            total += self.commit(outlet, from, &batch, next)?.unwrap_or(0);
        }
        Ok(total)
    }

    fn commit(
        &self,
        outlet: &str,
        from: u64,
        events: &[NewEvent],
        next: u64,
    ) -> Result<Option<usize>, WebhookError> {
        self.store
            .commit_events(outlet, from, events, next, self.clock.now_ms())
    }

    // ----- dispatch ----------------------------------------------------

    /// Sends one claimed delivery, signed at the clock's current second.
    /// A destination the egress policy refuses (a literal address here,
    /// the resolved addresses in the client's resolver) is not contacted
    /// and is logged as [`NOT_ALLOWED`], with no status.
    async fn attempt(&self, d: &ClaimedDelivery) -> AttemptOutcome {
        let started_ms = self.clock.now_ms();
        if self.egress.check_url(&d.url).is_err() {
            return AttemptOutcome {
                http_status: None,
                error: Some(NOT_ALLOWED.to_owned()),
                started_ms,
                completed_ms: self.clock.now_ms(),
            };
        }
        let signature = sign(d.secret.as_bytes(), started_ms.div_euclid(1000), &d.body);
        let sent = self
            .client
            .post(&d.url)
            .timeout(self.policy.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("bonopay-webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, &d.event_id)
            .header(EVENT_TYPE_HEADER, &d.event_type)
            .body(d.body.clone())
            .send()
            .await;
        let (http_status, error) = match sent {
            Ok(resp) if resp.status().is_success() => (Some(resp.status().as_u16()), None),
            Ok(resp) => (
                Some(resp.status().as_u16()),
                Some(format!("the receiver answered {}", resp.status())),
            ),
            Err(e) if EgressError::is_refusal(&e) => (None, Some(NOT_ALLOWED.to_owned())),
            Err(e) if e.is_timeout() => (
                None,
                Some(format!(
                    "no answer within {} ms",
                    self.policy.timeout.as_millis()
                )),
            ),
            Err(e) => (None, Some(describe(&e))),
        };
        AttemptOutcome {
            http_status,
            error,
            started_ms,
            completed_ms: self.clock.now_ms(),
        }
    }

    /// Logs an attempt and moves its delivery on: delivered, retried after
    /// the policy's delay, or dead.
    fn record(&self, d: &ClaimedDelivery, o: &AttemptOutcome) -> Result<Recorded, WebhookError> {
        let policy = self.policy;
        let jitter = self.jitter.as_ref();
        let schedule = |n: u32| {
            (n < policy.max_attempts).then(|| {
                o.completed_ms
                    .saturating_add(millis_i64(policy.delay(n, jitter)))
            })
        };
        self.store.record(d, o, &schedule)
    }

    /// Sends every delivery that is due now (by the service's clock), in
    /// rounds of up to 32 sent concurrently, and records each attempt.
    /// Each round claims its deliveries for one lease (see
    /// [`RetryPolicy`]), so instances dispatching from one shared store
    /// never send a delivery at the same time, unless one stalls past the
    /// lease.
    ///
    /// # Errors
    /// [`WebhookError::Storage`] (attempts already made stay recorded).
    pub async fn dispatch_due(&self) -> Result<RunSummary, WebhookError> {
        let mut summary = RunSummary::default();
        for _ in 0..DISPATCH_ROUNDS {
            let now = self.clock.now_ms();
            let lease_until = now.saturating_add(millis_i64(self.policy.lease()));
            let store = Arc::clone(&self.store);
            let due = tokio::task::spawn_blocking(move || {
                store.claim_due(now, lease_until, DISPATCH_BATCH)
            })
            .await
            .map_err(join_error)??;
            if due.is_empty() {
                break;
            }
            let claimed = due.len();
            let outcomes =
                futures_util::future::join_all(due.iter().map(|d| self.attempt(d))).await;
            let me = self.clone();
            let results = tokio::task::spawn_blocking(move || {
                due.iter()
                    .zip(&outcomes)
                    .map(|(d, o)| me.record(d, o))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(join_error)??;
            for r in results {
                match r {
                    Recorded::Sent => summary.sent += 1,
                    Recorded::Retry => summary.failed += 1,
                    Recorded::Dead => {
                        summary.failed += 1;
                        summary.dead += 1;
                    }
                }
            }
            if claimed < DISPATCH_BATCH {
                break;
            }
        }
        Ok(summary)
    }

    /// One run: [`produce`](Self::produce) events from the ledger, then
    /// [`dispatch_due`](Self::dispatch_due). The dispatch runs even if
    /// producing failed; that error is returned afterwards.
    ///
    /// # Errors
    /// As [`produce`](Self::produce) and [`dispatch_due`](Self::dispatch_due).
    pub async fn run_once(
        &self,
        ledger: Arc<dyn LedgerStore>,
        keys: Arc<dyn ApiKeyStore>,
    ) -> Result<RunSummary, WebhookError> {
        let me = self.clone();
        let produced =
            tokio::task::spawn_blocking(move || me.produce(ledger.as_ref(), keys.as_ref()))
                .await
                .map_err(join_error)?;
        let mut summary = self.dispatch_due().await?;
        summary.events = produced?;
        Ok(summary)
    }

    /// Runs [`run_once`](Self::run_once) every `every`, forever, on the
    /// current tokio runtime, logging failures on stderr (once per distinct
    /// failure). What was due when the server stopped is sent on the first
    /// run.
    pub fn spawn(
        self,
        ledger: Arc<dyn LedgerStore>,
        keys: Arc<dyn ApiKeyStore>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_error: Option<String> = None;
            loop {
                tick.tick().await;
                match self.run_once(Arc::clone(&ledger), Arc::clone(&keys)).await {
                    Ok(_) => last_error = None,
                    Err(e) => {
                        let msg = e.to_string();
                        if last_error.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(error = %msg, "webhooks");
                            last_error = Some(msg);
                        }
                    }
                }
            }
        })
    }
}

/// The event a ledger entry gives rise to, if any.
pub(super) fn event_of(entry: &Entry, merchant: &str) -> Result<Option<NewEvent>, WebhookError> {
    let at = format!("{}:{}", entry.outlet, entry.seq);
    let (kind, payload) = match entry.kind {
        EntryKind::Invoice | EntryKind::CreditNote => {
            let s = SealedInvoice::read_own(&entry.payload)
                .map_err(|e| WebhookError::Source(format!("entry {at}: {e}")))?;
            (
                EventType::InvoiceSealed,
                json!({
                    "id": at,
                    "outlet": entry.outlet,
                    "seq": entry.seq,
                    "fiscal_number": s.elements.fiscal_number,
                    "authentication_code": s.elements.authentication_code,
                    "timestamp": s.elements.timestamp,
                    "total": s.tuple.total,
                    "vtotal": s.tuple.vtotal,
                }),
            )
        }
        EntryKind::ZReport => {
            let body = bonopay_signer::event::event_body(&entry.payload)
                .map_err(|e| WebhookError::Source(format!("entry {at}: {e}")))?;
            (
                EventType::ReportZClosed,
                json!({
                    "outlet": entry.outlet,
                    "seq": entry.seq,
                    "z_number": body.get("z_number").and_then(Value::as_u64).or(entry.z_number),
                    "timestamp": body.get("timestamp").cloned().unwrap_or(Value::Null),
                }),
            )
        }
        _ => return Ok(None),
    };
    Ok(Some(NewEvent {
        id: format!("{kind}:{at}"),
        merchant_nif: merchant.to_owned(),
        kind,
        payload: payload.to_string(),
    }))
}

/// A transport error with its causes, shortened.
pub(super) fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    if msg.chars().count() > MAX_ERROR_LEN {
        msg = msg.chars().take(MAX_ERROR_LEN).collect::<String>() + "…";
    }
    msg
}
