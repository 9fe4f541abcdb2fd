//! `bonopay serve`: the reference HTTP server on the embedded defaults.
//!
//! On start it opens (or creates) the data directory and prints its path,
//! registers the configured merchants' outlets, creates an owner API key for
//! every configured merchant that has no key yet and prints it (once: only
//! its hash is kept), then listens and prints `listening on http://ADDR`.
//! It stops on Ctrl-C or SIGTERM, finishing the requests in flight.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Failure;
use crate::datadir::{DataDir, DeliveriesConfig};
use crate::server::auth::{
    ApiKey, ApiKeyStore, AuthError, Outlet, Role, SqliteKeyStore, hash_token, new_token,
};
use crate::server::deliveries::{
    Deliveries, DeliveryStore, SmtpMailer, SqliteDeliveryStore, WhatsAppHttpChannel,
};
use crate::server::egress::Egress;
use crate::server::listen::ConnectionLimits;
use crate::server::webhooks::Webhooks;
use crate::server::{AppState, Limits, MerchantProfile};

/// Options of `bonopay serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory (created on first use). Defaults to `$BONOPAY_DATA_DIR`
    /// or `./bonopay-data`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the address is
    /// printed). Overrides `$BONOPAY_LISTEN` and `listen` in config.json;
    /// default 127.0.0.1:8080.
    #[arg(long)]
    pub listen: Option<String>,
}

/// Prints a line on stdout at once (tests and operators read it live).
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Registers the configured outlets and creates the bootstrap owner keys.
/// Returns `(merchant, token)` for each key created.
///
/// # Errors
/// A message if an outlet is registered to another merchant, or the store
/// fails. `bonopay serve` uses [`bootstrap_with_conflicts`] instead, which
/// starts anyway.
pub fn bootstrap(
    keys: &dyn ApiKeyStore,
    merchants: &[crate::datadir::MerchantConfig],
) -> Result<Vec<(String, String)>, String> {
    let (created, conflicts) = bootstrap_with_conflicts(keys, merchants)?;
    match conflicts.first() {
        Some(c) => Err(c.to_string()),
        None => Ok(created),
    }
}

/// An outlet that `config.json` names for one merchant while the key store
/// has it registered to another.
///
/// The registration wins: an outlet belongs to the merchant that registered
/// it first (through `config.json` or the API), because its ledger already
/// holds that merchant's invoices and its numbering. The `config.json`
/// entry is ignored, with all its settings, until the operator fixes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct OutletConflict {
    /// The outlet id.
    pub outlet: String,
    /// The merchant `config.json` names for it.
    pub config_merchant: String,
}

impl std::fmt::Display for OutletConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "outlet {} of merchant {} in config.json is registered to another merchant; \
             the config.json entry is ignored (the first registration wins)",
            self.outlet, self.config_merchant
        )
    }
}

/// A bootstrap owner key just created: `(merchant NIF, token)`.
pub type CreatedOwnerKey = (String, String);

/// [`bootstrap`] that does not stop at a conflicting outlet: the conflicts
/// are returned for the log and `/healthz`, and every other outlet and key
/// is set up. No tenant action can thus keep the server from starting.
///
/// # Errors
/// A message if the store fails.
pub fn bootstrap_with_conflicts(
    keys: &dyn ApiKeyStore,
    merchants: &[crate::datadir::MerchantConfig],
) -> Result<(Vec<CreatedOwnerKey>, Vec<OutletConflict>), String> {
    let mut created = Vec::new();
    let mut conflicts = Vec::new();
    for m in merchants {
        for o in &m.outlets {
            let conflict = || OutletConflict {
                outlet: o.id.clone(),
                config_merchant: m.nif.clone(),
            };
            match keys.outlet(&o.id).map_err(|e| e.to_string())? {
                Some(existing) if existing.merchant_nif != m.nif => conflicts.push(conflict()),
                Some(_) => {}
                None => match keys.insert_outlet(&Outlet {
                    id: o.id.clone(),
                    merchant_nif: m.nif.clone(),
                    created_at: now(),
                }) {
                    Ok(()) => {}
                    // Another instance (or a tenant through the API)
                    // registered it at the same moment: fine if for this
                    // merchant, a conflict otherwise.
                    Err(AuthError::OutletTaken(_)) => match keys.outlet(&o.id) {
                        Ok(Some(x)) if x.merchant_nif == m.nif => {}
                        Ok(_) => conflicts.push(conflict()),
                        Err(e) => return Err(e.to_string()),
                    },
                    Err(e) => return Err(e.to_string()),
                },
            }
        }
        if keys
            .list_keys(&m.nif)
            .map_err(|e| e.to_string())?
            .is_empty()
        {
            let token = new_token().map_err(|e| e.to_string())?;
            // One fixed id per merchant: instances starting together on an
            // empty shared database race on the primary key, and only one
            // bootstrap owner key is created (the others print none).
            let key = ApiKey {
                id: format!("key_bootstrap_{}", m.nif),
                merchant_nif: m.nif.clone(),
                role: Role::Owner,
                outlets: None,
                label: Some("bootstrap owner key".into()),
                created_at: now(),
                revoked: false,
            };
            match keys.insert_key(&key, &hash_token(&token)) {
                Ok(()) => created.push((m.nif.clone(), token)),
                Err(e) => {
                    // Lost the race if the key now exists; a real error
                    // otherwise.
                    let exists = keys
                        .list_keys(&m.nif)
                        .map_err(|e| e.to_string())?
                        .iter()
                        .any(|k| k.id == key.id);
                    if !exists {
                        return Err(e.to_string());
                    }
                }
            }
        }
    }
    Ok((created, conflicts))
}

/// The delivery channels of `config`, recording in the `deliveries` table
/// of `auth_db`; the messaging API must be a destination `egress` allows.
///
/// # Errors
/// A message naming a bad SMTP URL or sender, a refused messaging URL, or
/// an unopenable database.
pub fn deliveries(
    config: &DeliveriesConfig,
    auth_db: &Path,
    egress: &Egress,
) -> Result<Deliveries, String> {
    let store = SqliteDeliveryStore::open(auth_db).map_err(|e| e.to_string())?;
    deliveries_in(config, Arc::new(store), egress)
}

/// The delivery channels of `config`, recording in `store`; the messaging
/// API must be a destination `egress` allows.
///
/// # Errors
/// A message naming a bad SMTP URL or sender, or a refused messaging URL.
pub fn deliveries_in(
    config: &DeliveriesConfig,
    store: Arc<dyn DeliveryStore>,
    egress: &Egress,
) -> Result<Deliveries, String> {
    let mut d = Deliveries::new(store);
    if let Some(url) = &config.smtp_url {
        let from = config.smtp_from.as_deref().unwrap_or("bonopay@localhost");
        let mut mailer = SmtpMailer::from_url(url, from)?;
        if let Some(ca) = &config.smtp_ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read the SMTP CA file {}: {e}", ca.display()))?;
            mailer = mailer.with_root_certificate(&pem)?;
        }
        d = d.with_email(mailer);
    }
    if let Some(url) = &config.whatsapp_url {
        let token = config.whatsapp_token.as_deref().unwrap_or_default();
        d = d.with_messaging(Arc::new(WhatsAppHttpChannel::new(url, token, egress)?));
    }
    Ok(d)
}

/// Runs the server until it is stopped.
///
/// # Errors
/// [`Failure::Message`] when the data directory, key store or listen
/// address cannot be opened.
pub fn run(args: &Args) -> Result<String, Failure> {
    let path = DataDir::resolve(args.data_dir.as_deref());
    let mut dir = DataDir::open_or_init(&path).map_err(Failure::Message)?;
    say(&format!(
        "bonopay: data directory {} ({}), signing key {}",
        dir.path.display(),
        if dir.created { "created" } else { "existing" },
        dir.signer.key_id()
    ));
    let auth_db = dir.file(&dir.config.database.auth);
    // API keys and outlets, webhooks, receipt deliveries: shared in
    // PostgreSQL when the data lives there (several instances behind a load
    // balancer see the same ones), else auth.db.
    let msg = |e: &dyn std::fmt::Display| Failure::Message(e.to_string());
    let (keys, webhooks, delivery_store): (Arc<dyn ApiKeyStore>, Webhooks, Arc<dyn DeliveryStore>) =
        match &dir.config.database.url {
            Some(url) => (
                Arc::new(
                    crate::server::auth::postgres::PgKeyStore::connect(url).map_err(|e| msg(&e))?,
                ),
                Webhooks::postgres(url).map_err(|e| msg(&e))?,
                Arc::new(
                    crate::server::deliveries::postgres::PgDeliveryStore::connect(url)
                        .map_err(|e| msg(&e))?,
                ),
            ),
            None => (
                Arc::new(SqliteKeyStore::open(&auth_db).map_err(|e| msg(&e))?),
                Webhooks::open(&auth_db).map_err(|e| msg(&e))?,
                Arc::new(SqliteDeliveryStore::open(&auth_db).map_err(|e| msg(&e))?),
            ),
        };
    // Browser sessions of the dashboard, next to the keys they act as.
    let sessions =
        session_store(dir.config.database.url.as_deref(), &auth_db).map_err(Failure::Message)?;
    // Outbound destinations (issue 15): public internet plus the
    // operator's `egress.allow`, for webhooks and the messaging API.
    let egress = Egress::new(dir.config.egress.policy().map_err(|e| msg(&e))?);
    let webhooks = webhooks.with_egress(egress.clone()).map_err(|e| msg(&e))?;
    let mut delivery_config = dir.config.deliveries.clone();
    delivery_config.smtp_ca_file = delivery_config.smtp_ca_file.map(|f| dir.file(&f));
    let deliveries =
        deliveries_in(&delivery_config, delivery_store, &egress).map_err(Failure::Message)?;
    let (created, conflicts) =
        bootstrap_with_conflicts(&*keys, &dir.config.merchants).map_err(Failure::Message)?;
    for (merchant, token) in created {
        say(&format!(
            "bonopay: owner API key for merchant {merchant} (shown once, keep it): {token}"
        ));
    }
    for c in &conflicts {
        say(&format!("bonopay: warning: {c}"));
    }
    // The ignored entries take none of their settings (time zone,
    // certification) to the outlet of the merchant that owns it.
    for m in &mut dir.config.merchants {
        m.outlets.retain(|o| {
            !conflicts
                .iter()
                .any(|c| c.outlet == o.id && c.config_merchant == m.nif)
        });
    }
    let fiscalizer = Arc::new(dir.fiscalizer().map_err(Failure::Message)?);
    // --- webhooks (issue 7): producer sources ---
    let webhook_sources: (
        Arc<dyn bonopay_ledger::LedgerStore>,
        Arc<dyn crate::server::auth::ApiKeyStore>,
    ) = (Arc::clone(fiscalizer.store()), keys.clone());
    // --- end webhooks ---
    let closer = Closer {
        fiscalizer: Arc::clone(&fiscalizer),
        keys: Arc::clone(&keys),
        names: dir
            .config
            .merchants
            .iter()
            .map(|m| {
                (
                    m.nif.clone(),
                    m.name.clone().unwrap_or_else(|| m.nif.clone()),
                )
            })
            .collect(),
    };
    dir.config.limits.check().map_err(Failure::Message)?;
    let limits = Limits {
        body_bytes: dir.config.limits.body_bytes,
        request_timeout: Duration::from_secs(dir.config.limits.request_timeout_secs),
    };
    let (max_connections, fd_note) = connection_cap(dir.config.limits.max_connections);
    if let Some(note) = fd_note {
        say(&format!("bonopay: {note}"));
    }
    let connection_limits = ConnectionLimits {
        max_connections,
        header_timeout: Duration::from_secs(dir.config.limits.header_timeout_secs),
        idle_timeout: Duration::from_secs(dir.config.limits.idle_timeout_secs),
        ..ConnectionLimits::default()
    };
    // --- DGI sync (issue 7): the agent on its own thread when configured ---
    let sync = dgi_sync(&dir, &fiscalizer, &webhooks).map_err(Failure::Message)?;
    // --- end DGI sync ---
    let mut state = AppState::new(fiscalizer, keys)
        .with_limits(limits)
        .with_config_conflicts(conflicts)
        .with_deliveries(deliveries)
        .with_webhooks(webhooks.clone())
        .with_sessions(sessions)
        .with_secure_cookie(dir.config.session.secure_cookie);
    if let Some(sync) = sync {
        state = state.with_sync(sync);
    }
    for key in dir.trusted_keys().map_err(Failure::Message)? {
        state = state.trust_key(key);
    }
    for m in &dir.config.merchants {
        state = state.with_merchant(
            &m.nif,
            MerchantProfile {
                name: m.name.clone(),
                address: m.address.clone(),
                contact: m.contact.clone(),
            },
        );
    }
    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| dir.config.listen_addr().to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Message(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| Failure::Message(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::Message(e.to_string()))?;
        say(&format!("bonopay: listening on http://{addr}"));
        // Daily, monthly and yearly closings are sealed as soon as they
        // are due, whether or not anyone asks.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let c = closer.clone();
                let _ = tokio::task::spawn_blocking(move || c.close_all()).await;
            }
        });
        // --- webhooks (issue 7): events from the ledger, then due
        // deliveries, every 2 s; resumes whatever was pending at start. ---
        let (ledger, webhook_keys) = webhook_sources;
        webhooks.spawn(ledger, webhook_keys, Duration::from_secs(2));
        // --- end webhooks ---
        let state = std::sync::Arc::new(state);
        crate::server::spawn_background(&state, Duration::from_secs(1));
        let stats = state.connection_stats();
        crate::server::listen::serve(
            listener,
            crate::server::router_shared(state),
            connection_limits,
            stats,
            shutdown(),
        )
        .await
        .map_err(|e| Failure::Message(format!("server: {e}")))
    })?;
    Ok(String::new())
}

/// The browser-session store: in PostgreSQL at `url` when the data lives
/// there (every instance sees every session), else in `auth_db`.
///
/// # Errors
/// The store's, as text.
pub fn session_store(
    url: Option<&str>,
    auth_db: &Path,
) -> Result<Arc<dyn crate::server::session::SessionStore>, String> {
    Ok(match url {
        Some(url) => Arc::new(
            crate::server::session::postgres::PgSessionStore::connect(url)
                .map_err(|e| e.to_string())?,
        ),
        None => Arc::new(
            crate::server::session::SqliteSessionStore::open(auth_db).map_err(|e| e.to_string())?,
        ),
    })
}

/// Fewer file descriptors than connections would turn the cap into
/// "accept: too many open files" again: the soft limit is raised to the
/// hard one (as Go and nginx do), and the cap kept below it (by a quarter,
/// at most 128) for the ledger, key store and outgoing calls. The note says
/// when it was cut.
fn connection_cap(configured: usize) -> (usize, Option<String>) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum)
        && cur < max
    {
        let raised = rustix::process::Rlimit {
            current: Some(max.min(1 << 20)),
            maximum: Some(max),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    let Some(fds) = limit.current else {
        return (configured, None);
    };
    let room = usize::try_from(fds.saturating_sub((fds / 4).min(128)))
        .unwrap_or(usize::MAX)
        .max(1);
    if configured > room {
        (
            room,
            Some(format!(
                "limits.max_connections {configured} is over what {fds} file descriptors allow; using {room}"
            )),
        )
    } else {
        (configured, None)
    }
}

/// Starts the DGI sync agent when `dgi.url` is configured: the outbox in
/// the ledger's file, the e-MCF over HTTP(S) with one token per merchant,
/// the certifications bound into the ledger by the fiscalizer, and
/// `invoice.certified` / `invoice.synced` / `invoice.sync_failed` webhooks
/// from the outbox's changes. Which outlets are certified is the
/// certification mode (`dgi.certification`, per outlet `certification`).
fn dgi_sync(
    dir: &DataDir,
    fiscalizer: &Arc<bonopay_signer::Fiscalizer>,
    webhooks: &crate::server::webhooks::Webhooks,
) -> Result<Option<crate::server::sync::SyncService>, String> {
    use crate::datadir::CertificationMode;
    use bonopay_sync::dgi::DgiTransport;
    use bonopay_sync::dgi::outbox::OutboxStore;
    let default_mode = dir.config.dgi.default_mode()?;
    let mut per_outlet = std::collections::HashMap::new();
    let mut devices = Vec::new();
    for m in &dir.config.merchants {
        for o in &m.outlets {
            let mode = match &o.certification {
                Some(mode) => {
                    let mode = CertificationMode::parse(mode)
                        .map_err(|e| format!("outlet {} in config.json: {e}", o.id))?;
                    per_outlet.insert(o.id.clone(), mode);
                    mode
                }
                None => default_mode,
            };
            match (&o.mcf, mode.uses_mcf()) {
                (Some(mcf), true) => devices.push((o.id.clone(), mcf.clone(), mode)),
                (None, true) => {
                    return Err(format!(
                        "outlet {} is certified in mode `{}` but has no `mcf` (its device's serial port) in config.json",
                        o.id,
                        mode.as_str()
                    ));
                }
                (_, false) => {}
            }
        }
    }
    let rates = fiscalizer.config().rate_table.invoiced_rates();
    let url = dir.config.dgi.url.clone();
    if url.is_none() {
        if per_outlet.values().any(|m| m.uses_emcf()) {
            return Err("an outlet is certified by the e-MCF (`certification: emcf` or `emcf+mcf`) but dgi.url is not set".into());
        }
        if devices.is_empty() {
            return Ok(None);
        }
    }
    let timeout = dir
        .config
        .dgi
        .timeout_secs
        .map_or(bonopay_sync::dgi::DEFAULT_TIMEOUT, Duration::from_secs);
    let env = |name: &str| std::env::var(name).ok();
    let mut accounts: Vec<(String, Arc<dyn DgiTransport>)> = Vec::new();
    let mut default_transport = None;
    if let Some(url) = &url {
        for m in &dir.config.merchants {
            if let Some(source) = dir.config.dgi.token_source_for(&m.nif, &dir.path, &env) {
                let t = bonopay_sync::dgi::http::HttpDgiTransport::with_token_source(
                    url, source, timeout,
                )
                .map_err(|e| e.to_string())?;
                accounts.push((m.nif.clone(), Arc::new(t)));
            }
        }
        default_transport = match dir.config.dgi.default_token_source(&dir.path) {
            Some(source) => Some(Arc::new(
                bonopay_sync::dgi::http::HttpDgiTransport::with_token_source(url, source, timeout)
                    .map_err(|e| e.to_string())?,
            ) as Arc<dyn DgiTransport>),
            None if accounts.is_empty() => {
                return Err(
                    "DGI sync needs a token: BONOPAY_DGI_TOKEN, dgi.token_file, dgi.tokens.<NIF> or BONOPAY_DGI_TOKEN_<NIF>".into(),
                );
            }
            None => None,
        };
    }
    let outbox: Arc<dyn OutboxStore> = match &dir.config.database.url {
        // Shared by every instance; each claims its own work.
        Some(db) => {
            let worker = format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "bonopay".into()),
                std::process::id()
            );
            // An instance that dies leaves its claimed items to the others
            // once its longest call would have ended: the DGI timeout plus
            // the margin every queue allows (bonopay_sync::retry).
            let grace = i64::try_from(bonopay_sync::retry::takeover_after(timeout).as_millis())
                .unwrap_or(i64::MAX);
            Arc::new(
                bonopay_sync::dgi::outbox::postgres::PgOutbox::connect(db, &worker, 4)
                    .map_err(|e| e.to_string())?
                    .with_takeover_grace(grace),
            )
        }
        None => Arc::new(
            bonopay_sync::dgi::outbox::sqlite::SqliteOutbox::open(
                dir.file(&dir.config.database.ledger),
            )
            .map_err(|e| e.to_string())?,
        ),
    };
    let clock: Arc<dyn bonopay_sync::dgi::agent::Clock> = Arc::new(bonopay_signer::SystemClock);
    let seed = clock.now_ms().unsigned_abs();
    let jitter = Box::new(bonopay_sync::retry::SplitMix::new(seed));
    let mut agent = match (&default_transport, accounts.first()) {
        // The default transport answers for merchants without their own
        // token; with none, those merchants' invoices wait and health says
        // why.
        (Some(t), _) | (None, Some((_, t))) => bonopay_sync::dgi::agent::SyncAgent::with(
            Arc::clone(fiscalizer.store()),
            Arc::clone(&outbox),
            Arc::clone(t),
            clock,
            jitter,
            bonopay_sync::dgi::agent::AgentConfig::default(),
        ),
        (None, None) => bonopay_sync::dgi::agent::SyncAgent::without_emcf(
            Arc::clone(fiscalizer.store()),
            Arc::clone(&outbox),
            clock,
            jitter,
            bonopay_sync::dgi::agent::AgentConfig::default(),
        ),
    }
    .with_accounts(accounts)
    .recording_with(
        Arc::clone(fiscalizer) as Arc<dyn bonopay_sync::dgi::agent::CertificationRecorder>
    )
    .comparing_rates(rates.clone());
    if default_transport.is_none() {
        agent = agent.only_accounts();
    }
    for (outlet, mcf, mode) in devices {
        let certifier = mcf_certifier(dir, &outlet, &mcf, rates.clone())?;
        let policy = if mode == CertificationMode::Mcf {
            bonopay_sync::dgi::agent::DevicePolicy::Only
        } else {
            bonopay_sync::dgi::agent::DevicePolicy::Fallback
        };
        say(&format!(
            "bonopay: outlet {outlet}: physical MCF on {} ({})",
            mcf.path,
            mode.as_str()
        ));
        agent = agent.with_device(outlet, certifier, policy);
    }
    // Outlets in mode `none` are never uploaded: their receipts say "not
    // certified", and certifying them behind the merchant's back would
    // make those receipts wrong.
    let policy = crate::server::sync::CertificationPolicy {
        default: default_mode,
        per_outlet,
        deadline: Duration::from_millis(dir.config.dgi.deadline_ms.unwrap_or(3000)),
    };
    agent = agent.uploading_only(policy.uploads());
    let agent = Arc::new(agent);
    for a in agent.check_accounts() {
        if let Some(why) = &a.paused {
            say(&format!(
                "bonopay: e-MCF account {}: uploads paused: {why}",
                a.nif
            ));
        }
        for d in &a.rate_differences {
            say(&format!(
                "bonopay: e-MCF account {}: tax groups differ from ours: {d}",
                a.nif
            ));
        }
    }
    if let Some(url) = &url {
        say(&format!(
            "bonopay: DGI e-MCF at {url} (certification: {} by default)",
            default_mode.as_str()
        ));
    }
    let pump = crate::server::sync::EventPump::new(Arc::clone(&outbox), webhooks.clone());
    crate::server::sync::spawn_agent(
        Arc::clone(&agent),
        Duration::from_millis(dir.config.dgi.interval_ms.unwrap_or(1000)),
        pump,
    );
    Ok(Some(crate::server::sync::SyncService {
        outbox,
        agent,
        thresholds: bonopay_sync::dgi::health::HealthThresholds::default(),
        policy,
    }))
}

/// The certifier of an outlet's physical MCF: its serial port, opened at
/// first use and again after the line drops, and its journal
/// (`mcf-<outlet>.journal.json` in the data directory).
fn mcf_certifier(
    dir: &DataDir,
    outlet: &str,
    mcf: &crate::datadir::McfConfig,
    rates: std::collections::BTreeMap<String, rust_decimal::Decimal>,
) -> Result<Arc<dyn bonopay_sync::mcf::certifier::DeviceCertifier>, String> {
    let path = mcf.path.clone();
    let baud = mcf.baud.unwrap_or(bonopay_sync::mcf::serial::DEFAULT_BAUD);
    let certifier = bonopay_sync::mcf::certifier::McfCertifier::new(
        Box::new(move || {
            Ok(
                Box::new(bonopay_sync::mcf::serial::SerialLink::open(&path, baud)?)
                    as Box<dyn bonopay_sync::mcf::link::McfLink>,
            )
        }),
        dir.path.join(format!("mcf-{outlet}.journal.json")),
        rates,
    )
    .map_err(|e| format!("outlet {outlet}: {e}"))?
    .with_read_timeout(Duration::from_millis(mcf.read_timeout_ms.unwrap_or(5000)));
    Ok(Arc::new(certifier))
}

/// Seals due closings of every outlet in the ledger.
#[derive(Clone)]
struct Closer {
    fiscalizer: Arc<bonopay_signer::Fiscalizer>,
    keys: Arc<dyn ApiKeyStore>,
    names: std::collections::HashMap<String, String>,
}

impl Closer {
    fn close_all(&self) {
        let outlets = match self.fiscalizer.store().outlets() {
            Ok(o) => o,
            Err(e) => {
                say(&format!("bonopay: closings: cannot list outlets: {e}"));
                return;
            }
        };
        for outlet in outlets {
            let Ok(Some(o)) = self.keys.outlet(&outlet) else {
                continue;
            };
            let id = bonopay_signer::ReportIdentity {
                trade_name: self
                    .names
                    .get(&o.merchant_nif)
                    .cloned()
                    .unwrap_or_else(|| o.merchant_nif.clone()),
                merchant_nif: o.merchant_nif,
            };
            match self.fiscalizer.close_periods(&outlet, &id) {
                Ok(done) => {
                    for r in done {
                        say(&format!(
                            "bonopay: sealed {} closing {} of outlet {outlet}",
                            r.body["period"]["kind"].as_str().unwrap_or_default(),
                            r.body["period"]["label"].as_str().unwrap_or_default()
                        ));
                    }
                }
                Err(e) => say(&format!("bonopay: closings of outlet {outlet}: {e}")),
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM: graceful shutdown.
pub(crate) async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
