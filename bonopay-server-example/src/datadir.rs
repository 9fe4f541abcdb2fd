//! The data directory: everything a Bono Pay instance keeps on disk, with
//! embedded defaults so that one command works on a fresh machine.
//!
//! ```text
//! <data dir>/
//!   config.json          NID, time zone, signer, merchants, … (created with defaults)
//!   ledger.db            the SQLite ledger (WAL, synchronous=FULL)
//!   auth.db              API keys (hashed) and outlets, webhooks, receipt deliveries,
//!                        for `bonopay serve` (all in PostgreSQL instead with `database.url`)
//!   keys/seal-p256.pem   the software signing key (PKCS#8, mode 0600)
//!   keys/seal-p256.pub.pem  its public key, for auditors
//! ```
//!
//! # `config.json`
//!
//! Every member but `nid` and `time_zone` is optional:
//!
//! ```json
//! {
//!   "nid": "BONOPAY-DEV-0001",
//!   "isf": "ISF-0001",
//!   "time_zone": "Africa/Kinshasa",
//!   "listen": "127.0.0.1:8080",
//!   "database": {"ledger": "ledger.db", "auth": "auth.db"},
//!   "signer": {"type": "software", "key_file": "keys/seal-p256.pem"},
//!   "limits": {"body_bytes": 1048576, "request_timeout_secs": 30,
//!              "max_connections": 512, "header_timeout_secs": 10,
//!              "idle_timeout_secs": 60},
//!   "reference_rates": {"USD": "2850.50"},
//!   "deliveries": {"smtp_url": "smtp://127.0.0.1:25", "smtp_from": "Bono Pay <recus@example.cd>",
//!                  "whatsapp_url": "https://…/messages", "whatsapp_token": "…"},
//!   "egress": {"allow": ["127.0.0.1", "10.0.0.0/8", "erp.local"]},
//!   "dgi": {"url": "https://developper.dgirdc.cd/edef", "certification": "emcf",
//!           "deadline_ms": 3000, "tokens": {"A1309334L": {"file": "tokens/A1309334L.jwt"}}},
//!   "merchants": [
//!     {"nif": "A1309334L", "name": "…", "address": "…", "contact": "…",
//!      "outlets": [{"id": "kin-gombe-01", "time_zone": "Africa/Kinshasa",
//!                   "certification": "emcf"}]}
//!   ]
//! }
//! ```
//!
//! A PKCS#11 signer instead: `{"type": "pkcs11", "module":
//! "/usr/lib/softhsm/libsofthsm2.so", "token_label": "bonopay", "key_label":
//! "seal", "pin_env": "BONOPAY_PKCS11_PIN"}` (or `"pin_file": PATH`).
//! Relative paths are relative to the data directory. Without `merchants`
//! the development merchant `A1309334L` with outlet `kin-gombe-01` (the
//! one in `examples/invoice.json`) is configured.
//!
//! # Environment
//!
//! Environment variables override the file: `BONOPAY_NID`, `BONOPAY_ISF`,
//! `BONOPAY_TIME_ZONE`, `BONOPAY_LISTEN`, `BONOPAY_LEDGER_DB`,
//! `BONOPAY_AUTH_DB`, `BONOPAY_SMTP_URL`, `BONOPAY_SMTP_CA_FILE`, `BONOPAY_SMTP_FROM`,
//! `BONOPAY_WHATSAPP_URL`, `BONOPAY_WHATSAPP_TOKEN`, `BONOPAY_EGRESS_ALLOW`
//! (comma-separated, replaces `egress.allow`), `BONOPAY_DGI_URL`,
//! `BONOPAY_DGI_TOKEN`, `BONOPAY_DGI_TOKEN_FILE`, `BONOPAY_DGI_TOKEN_<NIF>`,
//! `BONOPAY_DGI_TIMEOUT_SECS`, `BONOPAY_DGI_CERTIFICATION`, `BONOPAY_DGI_DEADLINE_MS`
//! (DGI certification: see [`DgiConfig`]), and for a PKCS#11 signer `BONOPAY_PKCS11_MODULE`,
//! `BONOPAY_PKCS11_TOKEN`, `BONOPAY_PKCS11_KEY` (setting the module selects
//! PKCS#11) with the PIN in `BONOPAY_PKCS11_PIN` (or the variable `pin_env`
//! names). `BONOPAY_DATA_DIR` chooses the directory itself.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bonopay_core::{Currency, ExchangeRate};
use bonopay_ledger::{LedgerStore, SqliteStore};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, PublicKey, Signer, SoftwareSigner};
use bonopay_tax::FixedReferenceRates;
use serde::{Deserialize, Serialize};

use crate::server::egress::EgressConfig;

/// Default location when neither `--data-dir` nor `BONOPAY_DATA_DIR` is set.
pub const DEFAULT_DIR: &str = "bonopay-data";
/// Default listen address of `bonopay serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The development merchant configured when `merchants` is absent.
pub const DEV_MERCHANT_NIF: &str = "A1309334L";
/// Its outlet.
pub const DEV_OUTLET: &str = "kin-gombe-01";

/// Database files (SQLite), relative to the data directory unless absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A PostgreSQL URL (`postgres://user@host:port/db`). When set, the
    /// ledger, the outbox, the API keys and outlets, the webhooks and the
    /// receipt-delivery log live there, shared by every `bonopay serve`
    /// instance pointed at it; better given as
    /// `BONOPAY_DATABASE_URL` when it carries a password. Unset: SQLite
    /// files in the data directory (the embedded default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The ledger.
    #[serde(default = "DatabaseConfig::default_ledger")]
    pub ledger: PathBuf,
    /// API keys and outlets, webhooks, receipt deliveries.
    #[serde(default = "DatabaseConfig::default_auth")]
    pub auth: PathBuf,
}

impl DatabaseConfig {
    fn default_ledger() -> PathBuf {
        PathBuf::from("ledger.db")
    }
    fn default_auth() -> PathBuf {
        PathBuf::from("auth.db")
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            ledger: Self::default_ledger(),
            auth: Self::default_auth(),
        }
    }
}

/// The signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SignerConfig {
    /// A software P-256 key file (created on first use).
    Software {
        /// PKCS#8 PEM file.
        #[serde(default = "SignerConfig::default_key_file")]
        key_file: PathBuf,
    },
    /// A key on a PKCS#11 token (HSM, smart card, SoftHSM2).
    Pkcs11 {
        /// The module (shared library).
        module: PathBuf,
        /// Token label.
        token_label: String,
        /// `CKA_LABEL` of the key pair.
        key_label: String,
        /// Environment variable holding the user PIN (default `BONOPAY_PKCS11_PIN`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_env: Option<String>,
        /// File whose first line is the PIN (instead of `pin_env`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_file: Option<PathBuf>,
    },
}

impl SignerConfig {
    fn default_key_file() -> PathBuf {
        PathBuf::from("keys/seal-p256.pem")
    }
}

impl Default for SignerConfig {
    fn default() -> Self {
        SignerConfig::Software {
            key_file: Self::default_key_file(),
        }
    }
}

/// An outlet of a configured merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutletConfig {
    /// Outlet id, as in invoices' `outlet_id`.
    pub id: String,
    /// Its IANA time zone (default: the top-level `time_zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Its certification mode, `emcf`, `mcf`, `emcf+mcf` or `none`
    /// (default: `dgi.certification`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certification: Option<String>,
    /// Its physical MCF (DGI fiscal device) on a serial line: needed by
    /// the modes `mcf` and `emcf+mcf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcf: Option<McfConfig>,
}

/// An outlet's physical MCF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McfConfig {
    /// The serial port, e.g. `/dev/ttyUSB0` (or the pseudo-terminal
    /// `bonopay mcf-sim` prints).
    pub path: String,
    /// Line speed (default 115200, the protocol's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baud: Option<u32>,
    /// How long to wait for each reply from the device, ms (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout_ms: Option<u64>,
}

/// A merchant served by this instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    /// NIF.
    pub nif: String,
    /// Company name, printed on receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address of sale, printed on receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Contact, printed on receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Its outlets (more can be registered through the API).
    #[serde(default)]
    pub outlets: Vec<OutletConfig>,
}

/// Request and connection limits of `bonopay serve`. The defaults suit a
/// public deployment as they are (README, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body, bytes.
    #[serde(default = "LimitsConfig::default_body")]
    pub body_bytes: usize,
    /// Longest request, seconds.
    #[serde(default = "LimitsConfig::default_timeout")]
    pub request_timeout_secs: u64,
    /// Most connections open at once (kept below the file-descriptor limit).
    #[serde(default = "LimitsConfig::default_max_connections")]
    pub max_connections: usize,
    /// Longest time from a request's first byte to the end of its headers,
    /// seconds.
    #[serde(default = "LimitsConfig::default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Longest a connection may stay open without a request, seconds.
    #[serde(default = "LimitsConfig::default_idle_timeout")]
    pub idle_timeout_secs: u64,
}

impl LimitsConfig {
    fn default_body() -> usize {
        1024 * 1024
    }
    fn default_timeout() -> u64 {
        30
    }
    fn default_max_connections() -> usize {
        512
    }
    fn default_header_timeout() -> u64 {
        10
    }
    fn default_idle_timeout() -> u64 {
        60
    }

    /// Every limit must let something through: a zero would refuse every
    /// request (or connection) while looking like a working server.
    ///
    /// # Errors
    /// A message naming the first limit that is zero.
    pub fn check(&self) -> Result<(), String> {
        for (name, zero) in [
            ("limits.body_bytes", self.body_bytes == 0),
            (
                "limits.request_timeout_secs",
                self.request_timeout_secs == 0,
            ),
            ("limits.max_connections", self.max_connections == 0),
            ("limits.header_timeout_secs", self.header_timeout_secs == 0),
            ("limits.idle_timeout_secs", self.idle_timeout_secs == 0),
        ] {
            if zero {
                return Err(format!("{name} must be at least 1 in config.json"));
            }
        }
        Ok(())
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            body_bytes: Self::default_body(),
            request_timeout_secs: Self::default_timeout(),
            max_connections: Self::default_max_connections(),
            header_timeout_secs: Self::default_header_timeout(),
            idle_timeout_secs: Self::default_idle_timeout(),
        }
    }
}

/// Receipt delivery channels of `bonopay serve` (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesConfig {
    /// SMTP server: `smtp://host[:port]` (plain, to a local relay),
    /// `smtp://[user:password@]host[:port]?tls=required` (STARTTLS) or
    /// `smtps://[user:password@]host[:port]` (TLS). A URL with a password
    /// is better given as `BONOPAY_SMTP_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<String>,
    /// PEM file of a CA the SMTP server's certificate may chain to, besides
    /// the Mozilla roots (relative to the data directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_ca_file: Option<PathBuf>,
    /// Sender, `Name <address>` or `address` (default `bonopay@localhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_from: Option<String>,
    /// URL the WhatsApp-style messaging API is posted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp_url: Option<String>,
    /// Its bearer token (better given as `BONOPAY_WHATSAPP_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp_token: Option<String>,
}

/// Upload to the DGI e-MCF (off unless `url` is set).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DgiConfig {
    /// Base URL the `/api/invoice` paths hang off: the simulator
    /// (`http://127.0.0.1:7070`, see `bonopay dgi-sim`) or the DGI test
    /// platform (`https://developper.dgirdc.cd/edef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// File holding the e-MCF bearer token (the token itself is better
    /// given as `BONOPAY_DGI_TOKEN`; it is never written to config.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The token, from `BONOPAY_DGI_TOKEN` only.
    #[serde(skip)]
    pub token: Option<String>,
    /// Pause between agent passes, ms (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// HTTP timeout, seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Certification mode of outlets that do not set their own: `emcf`
    /// (the default when `url` is set: each invoice is certified by the
    /// e-MCF, whose elements are printed) or `none` (Bono Pay's seal only,
    /// printed as not certified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certification: Option<String>,
    /// How long `POST /v1/invoices` waits for the e-MCF before answering
    /// the sale as pending, ms (default 3000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// One e-MCF token per merchant NIF: a token belongs to one taxpayer
    /// and one e-MCF. `{"A1309334L": {"file": "tokens/A1309334L.jwt"}}` or
    /// `{"env": "VAR"}`. Without an entry, a merchant's token is read from
    /// `BONOPAY_DGI_TOKEN_<NIF>` if set, else the default token
    /// (`BONOPAY_DGI_TOKEN` / `token_file`). Files are read at every call,
    /// so replacing one renews the token without a restart.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, TokenConfig>,
}

/// Where one merchant's e-MCF token is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A file holding the token (relative to the data directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// An environment variable holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// Whether an outlet's invoices are certified by the DGI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificationMode {
    /// Certified by the DGI's e-MCF.
    Emcf,
    /// Certified by the outlet's physical MCF only.
    Mcf,
    /// The e-MCF first; the outlet's physical MCF when the e-MCF cannot be
    /// reached, times out or has no account (Arrêté 033: an e-MCF outage
    /// is no excuse).
    EmcfMcf,
    /// Not certified: Bono Pay's seal only (development, evaluation).
    None,
}

impl CertificationMode {
    /// Parses `emcf`, `mcf`, `emcf+mcf` or `none`.
    ///
    /// # Errors
    /// A message naming what was given.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "emcf" => Ok(Self::Emcf),
            "mcf" => Ok(Self::Mcf),
            "emcf+mcf" => Ok(Self::EmcfMcf),
            "none" => Ok(Self::None),
            other => Err(format!(
                "certification mode `{other}` is none of `emcf`, `mcf`, `emcf+mcf`, `none`"
            )),
        }
    }

    /// The stable name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Emcf => "emcf",
            Self::Mcf => "mcf",
            Self::EmcfMcf => "emcf+mcf",
            Self::None => "none",
        }
    }

    /// Whether a DGI fiscal device certifies the outlet's invoices.
    #[must_use]
    pub const fn certifies(self) -> bool {
        !matches!(self, Self::None)
    }

    /// Whether the mode uses the e-MCF.
    #[must_use]
    pub const fn uses_emcf(self) -> bool {
        matches!(self, Self::Emcf | Self::EmcfMcf)
    }

    /// Whether the mode needs the outlet's physical MCF.
    #[must_use]
    pub const fn uses_mcf(self) -> bool {
        matches!(self, Self::Mcf | Self::EmcfMcf)
    }
}

impl std::fmt::Debug for DgiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DgiConfig")
            .field("url", &self.url)
            .field("token_file", &self.token_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl DgiConfig {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The mode of outlets without their own: `certification`, else `emcf`
    /// when the e-MCF is configured, else `none`.
    ///
    /// # Errors
    /// A message for a mode that is not `emcf` or `none`, or `emcf`
    /// without a URL.
    pub fn default_mode(&self) -> Result<CertificationMode, String> {
        let mode = match &self.certification {
            Some(m) => CertificationMode::parse(m)?,
            None if self.url.is_some() => CertificationMode::Emcf,
            None => CertificationMode::None,
        };
        if mode.uses_emcf() && self.url.is_none() {
            return Err(format!(
                "certification `{}` needs the e-MCF's URL (dgi.url or BONOPAY_DGI_URL)",
                mode.as_str()
            ));
        }
        Ok(mode)
    }

    /// Where `nif`'s token comes from: its `tokens` entry, else
    /// `BONOPAY_DGI_TOKEN_<NIF>` when `var` has it, else `None` (the
    /// default token).
    #[must_use]
    pub fn token_source_for(
        &self,
        nif: &str,
        dir: &Path,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Arc<dyn bonopay_sync::dgi::http::TokenSource>> {
        if let Some(t) = self.tokens.get(nif) {
            if let Some(f) = &t.file {
                let path = if f.is_absolute() {
                    f.clone()
                } else {
                    dir.join(f)
                };
                return Some(Arc::new(bonopay_sync::dgi::http::FileToken(path)));
            }
            if let Some(e) = &t.env {
                return Some(Arc::new(bonopay_sync::dgi::http::EnvToken(e.clone())));
            }
        }
        let var_name = format!("BONOPAY_DGI_TOKEN_{nif}");
        var(&var_name).map(|_| {
            Arc::new(bonopay_sync::dgi::http::EnvToken(var_name))
                as Arc<dyn bonopay_sync::dgi::http::TokenSource>
        })
    }

    /// The default token's source: `BONOPAY_DGI_TOKEN`, else `token_file`
    /// (read at every call), else `None`.
    #[must_use]
    pub fn default_token_source(
        &self,
        dir: &Path,
    ) -> Option<Arc<dyn bonopay_sync::dgi::http::TokenSource>> {
        if let Some(t) = &self.token {
            return Some(Arc::new(bonopay_sync::dgi::http::StaticToken(t.clone())));
        }
        self.token_file.as_ref().map(|f| {
            let path = if f.is_absolute() {
                f.clone()
            } else {
                dir.join(f)
            };
            Arc::new(bonopay_sync::dgi::http::FileToken(path))
                as Arc<dyn bonopay_sync::dgi::http::TokenSource>
        })
    }
}

/// `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Device id (NID) printed on receipts as the fiscal authority id.
    pub nid: String,
    /// ISF of the billing system, once homologated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isf: Option<String>,
    /// IANA time zone of outlets (Africa/Kinshasa or Africa/Lubumbashi).
    pub time_zone: String,
    /// Listen address of `bonopay serve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Database files.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// The signer.
    #[serde(default)]
    pub signer: SignerConfig,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Merchants and their outlets.
    #[serde(default = "Config::dev_merchants")]
    pub merchants: Vec<MerchantConfig>,
    /// Reference exchange rates (CDF per unit, e.g. `{"USD": "2850.50"}`)
    /// that a foreign-currency invoice's own rate must be within 1 % of.
    /// Without one, such invoices are refused (`reference_rate_unavailable`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reference_rates: BTreeMap<String, String>,
    /// Receipt delivery channels.
    #[serde(default, skip_serializing_if = "DeliveriesConfig::is_empty")]
    pub deliveries: DeliveriesConfig,
    /// Upload to the DGI e-MCF.
    #[serde(default, skip_serializing_if = "DgiConfig::is_empty")]
    pub dgi: DgiConfig,
    /// Outbound destinations allowed besides the public internet
    /// (webhooks, the messaging API): see [`crate::server::egress`].
    #[serde(default, skip_serializing_if = "EgressConfig::is_empty")]
    pub egress: EgressConfig,
    /// Browser sessions of the dashboard (`POST /v1/session`).
    #[serde(default, skip_serializing_if = "SessionConfig::is_default")]
    pub session: SessionConfig,
}

/// Browser sessions (`"session"` in `config.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Mark the session cookie `Secure`, so browsers send it over HTTPS
    /// only. `bonopay serve` speaks plain HTTP: set this when browsers
    /// reach it through a TLS-terminating proxy (which a dashboard on the
    /// internet needs). Default false, for `http://127.0.0.1` in
    /// development, where a `Secure` cookie would never be sent back.
    #[serde(default)]
    pub secure_cookie: bool,
}

impl SessionConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl DeliveriesConfig {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nid: "BONOPAY-DEV-0001".into(),
            isf: None,
            time_zone: "Africa/Kinshasa".into(),
            listen: None,
            database: DatabaseConfig::default(),
            signer: SignerConfig::default(),
            limits: LimitsConfig::default(),
            merchants: Self::dev_merchants(),
            reference_rates: BTreeMap::new(),
            deliveries: DeliveriesConfig::default(),
            dgi: DgiConfig::default(),
            egress: EgressConfig::default(),
            session: SessionConfig::default(),
        }
    }
}

impl Config {
    /// The development merchant of `examples/invoice.json`.
    #[must_use]
    pub fn dev_merchants() -> Vec<MerchantConfig> {
        vec![MerchantConfig {
            nif: DEV_MERCHANT_NIF.into(),
            name: Some("Marchand de démonstration (développement)".into()),
            address: Some("Kinshasa, Gombe".into()),
            contact: None,
            outlets: vec![OutletConfig {
                id: DEV_OUTLET.into(),
                time_zone: None,
                certification: None,
                mcf: None,
            }],
        }]
    }

    /// Applies the environment overrides (see the module docs); `var`
    /// reads one variable (`std::env::var` in the binary).
    ///
    /// # Errors
    /// A message naming the variable whose value does not parse.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(v) = var("BONOPAY_NID") {
            self.nid = v;
        }
        if let Some(v) = var("BONOPAY_ISF") {
            self.isf = Some(v);
        }
        if let Some(v) = var("BONOPAY_TIME_ZONE") {
            self.time_zone = v;
        }
        if let Some(v) = var("BONOPAY_LISTEN") {
            self.listen = Some(v);
        }
        if let Some(v) = var("BONOPAY_LEDGER_DB") {
            self.database.ledger = PathBuf::from(v);
        }
        if let Some(v) = var("BONOPAY_DATABASE_URL") {
            self.database.url = Some(v);
        }
        if let Some(v) = var("BONOPAY_AUTH_DB") {
            self.database.auth = PathBuf::from(v);
        }
        if let Some(v) = var("BONOPAY_SMTP_URL") {
            self.deliveries.smtp_url = Some(v);
        }
        if let Some(v) = var("BONOPAY_SMTP_CA_FILE") {
            self.deliveries.smtp_ca_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("BONOPAY_SMTP_FROM") {
            self.deliveries.smtp_from = Some(v);
        }
        if let Some(v) = var("BONOPAY_WHATSAPP_URL") {
            self.deliveries.whatsapp_url = Some(v);
        }
        if let Some(v) = var("BONOPAY_WHATSAPP_TOKEN") {
            self.deliveries.whatsapp_token = Some(v);
        }
        if let Some(v) = var("BONOPAY_EGRESS_ALLOW") {
            self.egress = EgressConfig::from_env_list(&v);
        }
        if let Some(v) = var("BONOPAY_DGI_URL") {
            self.dgi.url = Some(v);
        }
        if let Some(v) = var("BONOPAY_DGI_TOKEN") {
            self.dgi.token = Some(v);
        }
        if let Some(v) = var("BONOPAY_DGI_TOKEN_FILE") {
            self.dgi.token_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("BONOPAY_DGI_CERTIFICATION") {
            CertificationMode::parse(&v).map_err(|e| format!("BONOPAY_DGI_CERTIFICATION: {e}"))?;
            self.dgi.certification = Some(v.trim().to_owned());
        }
        if let Some(v) = var("BONOPAY_DGI_DEADLINE_MS") {
            match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => self.dgi.deadline_ms = Some(n),
                _ => {
                    return Err(format!(
                        "BONOPAY_DGI_DEADLINE_MS must be a whole number of milliseconds above 0, not `{v}`"
                    ));
                }
            }
        }
        if let Some(v) = var("BONOPAY_DGI_TIMEOUT_SECS") {
            match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => self.dgi.timeout_secs = Some(n),
                _ => {
                    return Err(format!(
                        "BONOPAY_DGI_TIMEOUT_SECS must be a whole number of seconds above 0, not `{v}`"
                    ));
                }
            }
        }
        if let Some(module) = var("BONOPAY_PKCS11_MODULE") {
            let (token, key, pin_env, pin_file) = match &self.signer {
                SignerConfig::Pkcs11 {
                    token_label,
                    key_label,
                    pin_env,
                    pin_file,
                    ..
                } => (
                    token_label.clone(),
                    key_label.clone(),
                    pin_env.clone(),
                    pin_file.clone(),
                ),
                SignerConfig::Software { .. } => {
                    ("bonopay".to_owned(), "seal".to_owned(), None, None)
                }
            };
            self.signer = SignerConfig::Pkcs11 {
                module: PathBuf::from(module),
                token_label: token,
                key_label: key,
                pin_env,
                pin_file,
            };
        }
        if let SignerConfig::Pkcs11 {
            token_label,
            key_label,
            ..
        } = &mut self.signer
        {
            if let Some(v) = var("BONOPAY_PKCS11_TOKEN") {
                *token_label = v;
            }
            if let Some(v) = var("BONOPAY_PKCS11_KEY") {
                *key_label = v;
            }
        }
        Ok(())
    }

    /// The listen address: the file's (or environment's), else the default.
    #[must_use]
    pub fn listen_addr(&self) -> &str {
        self.listen.as_deref().unwrap_or(DEFAULT_LISTEN)
    }
}

/// Reads `config.json` from its bytes (before the environment overrides).
/// The one reader of the file, kept pure so the fuzz target `config_json`
/// runs exactly what `bonopay serve` runs on an operator's file.
///
/// # Errors
/// What does not parse, with its line and column.
pub fn parse_config(bytes: &[u8]) -> Result<Config, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// An opened data directory.
#[derive(Debug)]
pub struct DataDir {
    /// Its path.
    pub path: PathBuf,
    /// The configuration (file, then environment).
    pub config: Config,
    /// The ledger.
    pub store: Arc<dyn LedgerStore>,
    /// The signer.
    pub signer: Arc<dyn Signer>,
    /// Whether this call created the directory.
    pub created: bool,
}

impl DataDir {
    /// The path from an explicit option, `BONOPAY_DATA_DIR`, or the default.
    #[must_use]
    pub fn resolve(explicit: Option<&Path>) -> PathBuf {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("BONOPAY_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
    }

    /// `p` relative to the data directory, unless absolute.
    #[must_use]
    pub fn file(&self, p: &Path) -> PathBuf {
        self.path.join(p)
    }

    /// Opens `path`, creating the directory, configuration, ledger and key
    /// on first use. The configuration is `config.json` with the
    /// environment overrides applied.
    ///
    /// # Errors
    /// A message naming what could not be read or created.
    pub fn open_or_init(path: &Path) -> Result<Self, String> {
        Self::open_with(path, None, true)
    }

    /// Opens an existing data directory for an offline command (`ledger
    /// verify`, `export`, `report`): nothing is created, so a typo in a
    /// path never makes an empty ledger. The ledger is PostgreSQL when
    /// `database_url` is given (`--database-url`), or when the
    /// configuration names one (`BONOPAY_DATABASE_URL`, `database.url` in
    /// `config.json`), exactly as `serve` chooses; SQLite otherwise.
    ///
    /// # Errors
    /// A message when there is no data directory (no `config.json`), no
    /// SQLite ledger in it, or the database cannot be reached.
    pub fn open_existing(path: &Path, database_url: Option<&str>) -> Result<Self, String> {
        if !path.join("config.json").exists() {
            return Err(format!(
                "no data directory at {} (no config.json): give --data-dir or set BONOPAY_DATA_DIR",
                path.display()
            ));
        }
        Self::open_with(path, database_url, false)
    }

    /// [`DataDir::open_or_init`] with the ledger's database given on the
    /// command line (`bonopay seal --database-url`).
    ///
    /// # Errors
    /// As [`DataDir::open_or_init`].
    pub fn open_or_init_with(path: &Path, database_url: Option<&str>) -> Result<Self, String> {
        Self::open_with(path, database_url, true)
    }

    fn open_with(path: &Path, database_url: Option<&str>, create: bool) -> Result<Self, String> {
        std::fs::create_dir_all(path.join("keys"))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let config_path = path.join("config.json");
        let mut config = if config_path.exists() {
            let text = std::fs::read_to_string(&config_path)
                .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
            parse_config(text.as_bytes()).map_err(|e| format!("{}: {e}", config_path.display()))?
        } else {
            let c = Config::default();
            let text = serde_json::to_string_pretty(&c).map_err(|e| e.to_string())?;
            std::fs::write(&config_path, text + "\n")
                .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
            c
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        if let Some(url) = database_url {
            config.database.url = Some(url.to_owned());
        }
        let ledger_path = path.join(&config.database.ledger);
        if !create && config.database.url.is_none() && !ledger_path.exists() {
            return Err(format!(
                "no ledger in {} (and no database URL: --database-url, BONOPAY_DATABASE_URL or database.url)",
                path.display()
            ));
        }
        let signer = open_signer(path, &config.signer)?;
        let (store, created): (Arc<dyn LedgerStore>, bool) = match &config.database.url {
            Some(url) => {
                let store = bonopay_ledger::PgStore::connect(url, 16).map_err(|e| e.to_string())?;
                let created = store.outlets().map_err(|e| e.to_string())?.is_empty();
                (Arc::new(store), created)
            }
            None => {
                let created = !ledger_path.exists();
                (
                    Arc::new(SqliteStore::open(&ledger_path).map_err(|e| e.to_string())?),
                    created,
                )
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            config,
            store,
            signer,
            created,
        })
    }

    /// A fiscalizer over this directory's ledger and key.
    ///
    /// # Errors
    /// A message if a configured time zone is unknown.
    pub fn fiscalizer(&self) -> Result<Fiscalizer, String> {
        let tz = |name: &str| {
            name.parse()
                .map_err(|_| format!("unknown time zone `{name}` in config.json"))
        };
        let mut fc = FiscalizerConfig::new(&self.config.nid);
        fc.isf = self.config.isf.clone();
        fc.default_time_zone = tz(&self.config.time_zone)?;
        let mut zones = HashMap::new();
        for m in &self.config.merchants {
            for o in &m.outlets {
                if let Some(z) = &o.time_zone {
                    zones.insert(o.id.clone(), tz(z)?);
                }
            }
        }
        fc.outlet_time_zones = zones;
        // Invoices sealed under earlier keys stay readable (replays, credit
        // notes against them) after a key rotation.
        fc.trusted_keys = self.trusted_keys()?;
        let mut rates = FixedReferenceRates::default();
        for (code, rate) in &self.config.reference_rates {
            let currency = Currency::from_code(code)
                .filter(|c| *c != Currency::Cdf)
                .ok_or_else(|| format!("reference_rates: `{code}` is not a foreign currency"))?;
            let rate = ExchangeRate::parse(rate)
                .map_err(|_| format!("reference_rates.{code}: `{rate}` is not a decimal rate"))?;
            rates.0.insert(currency, rate.value());
        }
        fc.reference_rates = Arc::new(rates);
        // Concurrent seals on different outlets share one commit (one
        // fsync); none is acknowledged before its batch is durable.
        let store = bonopay_ledger::GroupCommit::new(Arc::clone(&self.store), 64);
        Ok(Fiscalizer::new(
            Arc::new(store) as Arc<dyn LedgerStore>,
            Arc::clone(&self.signer),
            fc,
        ))
    }
}

impl DataDir {
    /// Who an outlet's reports are for: its configured merchant.
    ///
    /// # Errors
    /// A message when no configured merchant has the outlet.
    pub fn report_identity(&self, outlet: &str) -> Result<bonopay_signer::ReportIdentity, String> {
        self.config
            .merchants
            .iter()
            .find(|m| m.outlets.iter().any(|o| o.id == outlet))
            .map(|m| bonopay_signer::ReportIdentity {
                merchant_nif: m.nif.clone(),
                trade_name: m.name.clone().unwrap_or_else(|| m.nif.clone()),
            })
            .ok_or_else(|| format!("outlet `{outlet}` is not in any merchant of config.json"))
    }

    /// Every public key whose signatures this directory's ledger may hold:
    /// the signer's, and each `keys/*.pub.pem` (keys used before a
    /// rotation; each signer's public key is saved there).
    ///
    /// # Errors
    /// A message naming an unreadable key file.
    pub fn trusted_keys(&self) -> Result<Vec<PublicKey>, String> {
        let mut keys = vec![self.signer.public_key().clone()];
        let dir = self.path.join("keys");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".pub.pem"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            let key = PublicKey::from_pem(&text).map_err(|e| format!("{}: {e}", f.display()))?;
            if !keys.iter().any(|k| k.key_id() == key.key_id()) {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}

/// Opens the configured signer, creating the software key on first use.
/// The software key signs through aws-lc-rs (already linked for TLS):
/// the same key file and the same signature format as the pure-Rust
/// `p256` signer, about 8× faster per signature (`BENCHMARKS.md`), so the
/// signer no longer caps the server. aws-lc-rs signs with random nonces,
/// like an HSM; nothing here depends on deterministic signatures
/// (docs/format.md §5).
fn fast_signer(key: &SoftwareSigner) -> Result<Arc<dyn Signer>, String> {
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    let s = bonopay_signer::AwsLcSigner::from_pkcs8_der(&der).map_err(|e| e.to_string())?;
    Ok(Arc::new(s))
}

fn open_signer(dir: &Path, config: &SignerConfig) -> Result<Arc<dyn Signer>, String> {
    match config {
        SignerConfig::Software { key_file } => {
            let key_path = dir.join(key_file);
            if key_path.exists() {
                let s = SoftwareSigner::load(&key_path).map_err(|e| e.to_string())?;
                return fast_signer(&s);
            }
            let s = SoftwareSigner::generate().map_err(|e| e.to_string())?;
            if let Some(parent) = key_path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            s.save(&key_path).map_err(|e| e.to_string())?;
            let pub_path = key_path.with_extension("pub.pem");
            std::fs::write(&pub_path, s.public_key().to_pem())
                .map_err(|e| format!("cannot write {}: {e}", pub_path.display()))?;
            fast_signer(&s)
        }
        SignerConfig::Pkcs11 {
            module,
            token_label,
            key_label,
            pin_env,
            pin_file,
        } => {
            use bonopay_signer::signer::pkcs11::{PinSource, Pkcs11Config, Pkcs11Signer};
            let pin = match (pin_file, pin_env) {
                (Some(f), _) => PinSource::File(dir.join(f)),
                (None, Some(v)) => PinSource::Env(v.clone()),
                (None, None) => PinSource::Env("BONOPAY_PKCS11_PIN".into()),
            };
            let cfg = Pkcs11Config {
                module: module.clone(),
                token_label: token_label.clone(),
                key_label: key_label.clone(),
                pin,
                sessions: 4,
            };
            let s = Pkcs11Signer::open(&cfg).map_err(|e| format!("PKCS#11 signer: {e}"))?;
            // Keep its public key with the others, so its signatures stay
            // verifiable after a later change of signer.
            let safe = |t: &str| -> String {
                t.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect()
            };
            let pub_path = dir.join("keys").join(format!(
                "pkcs11-{}-{}.pub.pem",
                safe(token_label),
                safe(key_label)
            ));
            if !pub_path.exists() {
                std::fs::write(&pub_path, s.public_key().to_pem())
                    .map_err(|e| format!("cannot write {}: {e}", pub_path.display()))?;
            }
            Ok(Arc::new(s))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn an_old_config_file_still_reads_with_the_dev_merchant() {
        let c: Config =
            serde_json::from_str(r#"{"nid": "N1", "time_zone": "Africa/Lubumbashi"}"#).unwrap();
        assert_eq!(c.merchants, Config::dev_merchants());
        assert_eq!(c.signer, SignerConfig::default());
        assert_eq!(c.listen_addr(), DEFAULT_LISTEN);
    }

    #[test]
    fn a_dgi_timeout_from_the_environment_must_be_whole_seconds_above_zero() {
        let with = |v: &str| {
            let mut c = Config::default();
            c.apply_env(|k| (k == "BONOPAY_DGI_TIMEOUT_SECS").then(|| v.to_owned()))
                .map(|()| c.dgi.timeout_secs)
        };
        assert_eq!(with("7"), Ok(Some(7)));
        for bad in ["0", "-3", "2.5", "soon", ""] {
            let e = with(bad).unwrap_err();
            assert!(e.contains("BONOPAY_DGI_TIMEOUT_SECS"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let mut c = Config::default();
        let env: HashMap<&str, &str> = [
            ("BONOPAY_NID", "NID-9"),
            ("BONOPAY_LISTEN", "0.0.0.0:9000"),
            ("BONOPAY_PKCS11_MODULE", "/lib/x.so"),
            ("BONOPAY_PKCS11_TOKEN", "tok"),
            ("BONOPAY_SMTP_URL", "smtp://127.0.0.1:2525"),
            ("BONOPAY_WHATSAPP_TOKEN", "t0k"),
        ]
        .into_iter()
        .collect();
        c.apply_env(|k| env.get(k).map(|v| (*v).to_owned()))
            .unwrap();
        assert_eq!(c.nid, "NID-9");
        assert_eq!(c.listen_addr(), "0.0.0.0:9000");
        assert_eq!(
            c.deliveries.smtp_url.as_deref(),
            Some("smtp://127.0.0.1:2525")
        );
        assert_eq!(c.deliveries.whatsapp_token.as_deref(), Some("t0k"));
        assert_eq!(
            c.signer,
            SignerConfig::Pkcs11 {
                module: "/lib/x.so".into(),
                token_label: "tok".into(),
                key_label: "seal".into(),
                pin_env: None,
                pin_file: None,
            }
        );
    }

    #[test]
    fn reference_rates_are_checked_when_the_fiscalizer_is_built() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir_all(&dir).unwrap();
        let write = |rates: &str| {
            std::fs::write(
                dir.join("config.json"),
                format!(
                    r#"{{"nid": "N1", "time_zone": "Africa/Kinshasa", "reference_rates": {rates}}}"#
                ),
            )
            .unwrap();
        };
        write(r#"{"USD": "2850.50"}"#);
        assert!(DataDir::open_or_init(&dir).unwrap().fiscalizer().is_ok());
        for bad in [r#"{"CDF": "1"}"#, r#"{"EUR": "1"}"#, r#"{"USD": "1e3"}"#] {
            write(bad);
            let err = DataDir::open_or_init(&dir)
                .unwrap()
                .fiscalizer()
                .unwrap_err();
            assert!(err.contains("reference_rates"), "{bad}: {err}");
        }
    }

    #[test]
    fn trusted_keys_include_every_saved_public_key() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open_or_init(tmp.path()).unwrap();
        assert_eq!(d.trusted_keys().unwrap().len(), 1);
        let other = SoftwareSigner::generate().unwrap();
        std::fs::write(
            tmp.path().join("keys/old.pub.pem"),
            other.public_key().to_pem(),
        )
        .unwrap();
        let keys = d.trusted_keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().any(|k| k.key_id() == other.key_id()));
        std::fs::write(tmp.path().join("keys/bad.pub.pem"), "nope").unwrap();
        assert!(d.trusted_keys().is_err());
    }

    #[test]
    fn unknown_members_are_refused() {
        assert!(
            serde_json::from_str::<Config>(
                r#"{"nid": "N1", "time_zone": "Africa/Kinshasa", "lisen": "x"}"#
            )
            .is_err()
        );
    }
}
