//! The data directory: everything a Bono Pay instance keeps on disk, with
//! embedded defaults so that one command works on a fresh machine.
//!
//! ```text
//! <data dir>/
//!   config.json          NID, time zone, … (created with defaults)
//!   ledger.db            the SQLite ledger (WAL, synchronous=FULL)
//!   keys/seal-p256.pem   the software signing key (PKCS#8, mode 0600)
//!   keys/seal-p256.pub.pem  its public key, for auditors
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bonopay_ledger::{LedgerStore, SqliteStore};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, Signer, SoftwareSigner};
use serde::{Deserialize, Serialize};

/// Default location when neither `--data-dir` nor `BONOPAY_DATA_DIR` is set.
pub const DEFAULT_DIR: &str = "bonopay-data";

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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nid: "BONOPAY-DEV-0001".into(),
            isf: None,
            time_zone: "Africa/Kinshasa".into(),
        }
    }
}

/// An opened data directory.
#[derive(Debug)]
pub struct DataDir {
    /// Its path.
    pub path: PathBuf,
    /// The configuration.
    pub config: Config,
    /// The ledger.
    pub store: Arc<SqliteStore>,
    /// The signer.
    pub signer: Arc<SoftwareSigner>,
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

    /// Opens `path`, creating the directory, configuration, ledger and key
    /// on first use.
    ///
    /// # Errors
    /// A message naming what could not be read or created.
    pub fn open_or_init(path: &Path) -> Result<Self, String> {
        let created = !path.join("ledger.db").exists();
        std::fs::create_dir_all(path.join("keys"))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let config_path = path.join("config.json");
        let config = if config_path.exists() {
            let text = std::fs::read_to_string(&config_path)
                .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", config_path.display()))?
        } else {
            let c = Config::default();
            let text = serde_json::to_string_pretty(&c).map_err(|e| e.to_string())?;
            std::fs::write(&config_path, text + "\n")
                .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
            c
        };
        let key_path = path.join("keys/seal-p256.pem");
        let signer = if key_path.exists() {
            SoftwareSigner::load(&key_path).map_err(|e| e.to_string())?
        } else {
            let s = SoftwareSigner::generate().map_err(|e| e.to_string())?;
            s.save(&key_path).map_err(|e| e.to_string())?;
            let pub_path = path.join("keys/seal-p256.pub.pem");
            std::fs::write(&pub_path, s.public_key().to_pem())
                .map_err(|e| format!("cannot write {}: {e}", pub_path.display()))?;
            s
        };
        let store = SqliteStore::open(path.join("ledger.db")).map_err(|e| e.to_string())?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
            store: Arc::new(store),
            signer: Arc::new(signer),
            created,
        })
    }

    /// A fiscalizer over this directory's ledger and key.
    ///
    /// # Errors
    /// A message if the configured time zone is unknown.
    pub fn fiscalizer(&self) -> Result<Fiscalizer, String> {
        let mut fc = FiscalizerConfig::new(&self.config.nid);
        fc.isf = self.config.isf.clone();
        fc.default_time_zone = self.config.time_zone.parse().map_err(|_| {
            format!(
                "unknown time zone `{}` in config.json",
                self.config.time_zone
            )
        })?;
        Ok(Fiscalizer::new(
            Arc::clone(&self.store) as Arc<dyn LedgerStore>,
            Arc::clone(&self.signer) as Arc<dyn Signer>,
            fc,
        ))
    }
}
