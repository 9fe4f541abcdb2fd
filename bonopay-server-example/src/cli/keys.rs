//! `bonopay keys create|list|revoke`: API keys managed by the operator,
//! straight on the key store (the data directory's `auth.db`, or the
//! PostgreSQL database of a scale-out deployment).
//!
//! This is the way back for a merchant who has lost every owner key (or
//! whose last owner key leaked): the API cannot help, since it needs an
//! owner key. The command needs access to the server's files or database,
//! which is what makes it the operator's and not a tenant's. It works while
//! the server runs: a key created here is seen by the server's next lookup.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::Failure;
use crate::datadir::{Config, DataDir};
use crate::server::auth::{
    ApiKey, ApiKeyStore, AuthError, Role, SqliteKeyStore, hash_token, new_key_id, new_token,
};
use crate::server::manage::ApiKeyDto;

/// Where the key store is.
#[derive(Debug, Clone, clap::Args)]
pub struct Store {
    /// Data directory. Defaults to `$BONOPAY_DATA_DIR` or `./bonopay-data`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL of a scale-out deployment (else `database.url` of
    /// `config.json`, else the data directory's SQLite `auth.db`).
    #[arg(long, env = "BONOPAY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// `bonopay keys …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a key and print its token, once.
    Create(CreateArgs),
    /// List a merchant's keys (never their tokens).
    List(ListArgs),
    /// Revoke a key. A merchant's last owner key cannot be revoked: create
    /// another one first.
    Revoke(RevokeArgs),
}

/// Options of `bonopay keys create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Where the key store is.
    #[command(flatten)]
    pub store: Store,
    /// The merchant (NIF). It must be known: in `config.json`, or with an
    /// outlet or a key in the store.
    #[arg(long)]
    pub merchant: String,
    /// owner, cashier, auditor or integration.
    #[arg(long)]
    pub role: String,
    /// Restrict the key to this outlet (repeatable; default: every outlet).
    #[arg(long = "outlet")]
    pub outlets: Vec<String>,
    /// A label shown in the key list.
    #[arg(long)]
    pub label: Option<String>,
}

/// Options of `bonopay keys list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Where the key store is.
    #[command(flatten)]
    pub store: Store,
    /// The merchant (NIF).
    #[arg(long)]
    pub merchant: String,
}

/// Options of `bonopay keys revoke`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// Where the key store is.
    #[command(flatten)]
    pub store: Store,
    /// The merchant (NIF).
    #[arg(long)]
    pub merchant: String,
    /// The key id (`bonopay keys list`).
    pub id: String,
}

/// Runs one `keys` command and returns its JSON report.
///
/// # Errors
/// [`Failure::Message`] when the store cannot be opened, the merchant is
/// unknown, the role or an outlet is refused, or the key is the merchant's
/// last owner key.
pub fn run(command: &Command) -> Result<String, Failure> {
    let out = match command {
        Command::Create(a) => create(a)?,
        Command::List(a) => list(a)?,
        Command::Revoke(a) => revoke(a)?,
    };
    serde_json::to_string_pretty(&out)
        .map(|s| s + "\n")
        .map_err(|e| Failure::Message(e.to_string()))
}

fn msg(e: impl std::fmt::Display) -> Failure {
    Failure::Message(e.to_string())
}

/// The configuration of the data directory at `path`, with the environment
/// overrides, without creating anything (unlike [`DataDir::open_or_init`]):
/// a typo in `--data-dir` must not make an empty data directory.
fn config_at(path: &Path) -> Result<Option<Config>, Failure> {
    let file = path.join("config.json");
    if !file.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| msg(format!("cannot read {}: {e}", file.display())))?;
    let mut config = crate::datadir::parse_config(text.as_bytes())
        .map_err(|e| msg(format!("{}: {e}", file.display())))?;
    config
        .apply_env(|k| std::env::var(k).ok())
        .map_err(Failure::Message)?;
    Ok(Some(config))
}

/// The key store and the configuration (when there is a data directory).
fn open(store: &Store) -> Result<(Arc<dyn ApiKeyStore>, Option<Config>), Failure> {
    let path = DataDir::resolve(store.data_dir.as_deref());
    let config = config_at(&path)?;
    let url = store
        .database_url
        .clone()
        .or_else(|| config.as_ref().and_then(|c| c.database.url.clone()));
    if let Some(url) = url {
        let s = crate::server::auth::postgres::PgKeyStore::connect(&url).map_err(msg)?;
        return Ok((Arc::new(s), config));
    }
    let Some(c) = config else {
        return Err(msg(format!(
            "no data directory at {} (no config.json); give --data-dir or --database-url",
            path.display()
        )));
    };
    let auth = path.join(&c.database.auth);
    let s = SqliteKeyStore::open(&auth).map_err(msg)?;
    Ok((Arc::new(s), Some(c)))
}

/// Ends the browser sessions of revoked key `id` in the session store
/// next to the key store (the server refuses them anyway, since it re-reads
/// the key on every request; this removes them).
fn end_sessions(store: &Store, config: Option<&Config>, id: &str) -> Result<(), Failure> {
    let path = DataDir::resolve(store.data_dir.as_deref());
    let url = store
        .database_url
        .clone()
        .or_else(|| config.and_then(|c| c.database.url.clone()));
    let auth = config.map(|c| path.join(&c.database.auth));
    let sessions = match (url.as_deref(), auth) {
        (Some(url), _) => {
            crate::cli::serve::session_store(Some(url), Path::new("")).map_err(Failure::Message)?
        }
        (None, Some(auth)) => {
            crate::cli::serve::session_store(None, &auth).map_err(Failure::Message)?
        }
        (None, None) => return Ok(()),
    };
    sessions.delete_for_key(id).map_err(msg)?;
    Ok(())
}

/// A key as the API lists it (`GET /v1/keys`), never its token.
fn key_json(k: &ApiKey) -> serde_json::Value {
    serde_json::to_value(ApiKeyDto::from(k.clone())).unwrap_or_default()
}

fn create(a: &CreateArgs) -> Result<serde_json::Value, Failure> {
    let role: Role = a.role.parse().map_err(Failure::Message)?;
    let (keys, config) = open(&a.store)?;
    let outlets = keys.list_outlets(&a.merchant).map_err(msg)?;
    let in_config = config
        .as_ref()
        .is_some_and(|c| c.merchants.iter().any(|m| m.nif == a.merchant));
    let known =
        in_config || !outlets.is_empty() || !keys.list_keys(&a.merchant).map_err(msg)?.is_empty();
    if !known {
        return Err(msg(format!(
            "unknown merchant {}: not in config.json, and no outlet or key in the store",
            a.merchant
        )));
    }
    for o in &a.outlets {
        if !outlets.iter().any(|x| &x.id == o) {
            return Err(msg(format!(
                "outlet {o} is not registered to merchant {}",
                a.merchant
            )));
        }
    }
    let token = new_token().map_err(msg)?;
    let key = ApiKey {
        id: new_key_id().map_err(msg)?,
        merchant_nif: a.merchant.clone(),
        role,
        outlets: (!a.outlets.is_empty()).then(|| a.outlets.clone()),
        label: Some(
            a.label
                .clone()
                .unwrap_or_else(|| "created with bonopay keys create".into()),
        ),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        revoked: false,
    };
    keys.insert_key(&key, &hash_token(&token)).map_err(msg)?;
    // The shape of `POST /v1/keys`.
    Ok(json!({
        "key": key_json(&key),
        "token": token,
        "note": "the token is shown once: keep it",
    }))
}

fn list(a: &ListArgs) -> Result<serde_json::Value, Failure> {
    let (keys, _) = open(&a.store)?;
    let all = keys.list_keys(&a.merchant).map_err(msg)?;
    Ok(json!({
        "merchant": a.merchant,
        "keys": all.iter().map(key_json).collect::<Vec<_>>(),
    }))
}

fn revoke(a: &RevokeArgs) -> Result<serde_json::Value, Failure> {
    let (keys, config) = open(&a.store)?;
    match keys.revoke_key(&a.merchant, &a.id) {
        Ok(true) => end_sessions(&a.store, config.as_ref(), &a.id)?,
        Ok(false) => {
            return Err(msg(format!("merchant {} has no key {}", a.merchant, a.id)));
        }
        Err(AuthError::LastOwnerKey(id)) => {
            return Err(msg(format!(
                "{id} is the last owner key of merchant {}: create another one first \
                 (bonopay keys create --merchant {} --role owner)",
                a.merchant, a.merchant
            )));
        }
        Err(e) => return Err(msg(e)),
    }
    let all = keys.list_keys(&a.merchant).map_err(msg)?;
    let k = all
        .iter()
        .find(|k| k.id == a.id)
        .ok_or_else(|| msg(format!("key {} vanished", a.id)))?;
    Ok(key_json(k))
}
