//! `bonopay backup --to DIR` and `bonopay restore --from DIR`: a
//! consistent copy of a SQLite data directory while the server runs, and
//! its restoration, each checked before it reports success.
//!
//! **Consistent while sealing.** The ledger and `auth.db` are copied with
//! SQLite's online backup API in one step, which reads one snapshot: a
//! seal committed during the copy is either wholly in it or not at all,
//! and the server keeps sealing (WAL mode lets writers go on). The
//! configuration, the key files and the MCF journals are copied as files.
//!
//! **Checked before success.** The copy is written to `DIR.partial`, its
//! chains verified there (hashes, counters, every signature, with the
//! copied keys), a manifest (`backup.json`: SHA-256 of each file, each
//! outlet's head) written, and only then renamed to `DIR`. `restore`
//! checks the manifest and the chains again, refuses a target that holds
//! anything (a live data directory is never overwritten), writes to
//! `TARGET.restoring` and renames it into place.
//!
//! **PostgreSQL** is backed up by PostgreSQL: a base backup with WAL
//! archiving (`pg_basebackup`), then `bonopay ledger verify
//! --database-url` on the restored database (README).
//!
//! The backup holds the signing key (`keys/`): keep it as safe as the
//! data directory itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bonopay_ledger::{LedgerStore, verify_store};
use bonopay_signer::SignatureCheck;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Failure;
use crate::datadir::DataDir;

/// The manifest's file name.
pub const MANIFEST: &str = "backup.json";

/// Options of `bonopay backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Data directory. Defaults to `$BONOPAY_DATA_DIR` or `./bonopay-data`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where to write the backup: a directory that does not exist yet.
    #[arg(long)]
    pub to: PathBuf,
}

/// Options of `bonopay restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup (a directory `bonopay backup` wrote).
    #[arg(long)]
    pub from: PathBuf,
    /// The data directory to create. It must not exist, or be empty.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn msg(e: impl std::fmt::Display) -> Failure {
    Failure::Message(e.to_string())
}

fn sha256_file(path: &Path) -> Result<String, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| msg(format!("cannot read {}: {e}", path.display())))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for e in std::fs::read_dir(&abs).map_err(|e| msg(format!("{}: {e}", abs.display())))? {
            let e = e.map_err(msg)?;
            let r = rel.join(e.file_name());
            if e.file_type().map_err(msg)?.is_dir() {
                stack.push(r);
            } else {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies a SQLite database with the online backup API, in one step (one
/// snapshot), then fsyncs the copy.
fn sqlite_copy(src: &Path, dst: &Path) -> Result<(), Failure> {
    let from = rusqlite::Connection::open_with_flags(
        src,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| msg(format!("{}: {e}", src.display())))?;
    from.busy_timeout(Duration::from_secs(10)).map_err(msg)?;
    let mut to = rusqlite::Connection::open(dst).map_err(msg)?;
    {
        use rusqlite::backup::StepResult;
        let b = rusqlite::backup::Backup::new(&from, &mut to).map_err(msg)?;
        // -1: every page in one step, under one read transaction, so the
        // copy is one snapshot. Busy or locked: the server is writing;
        // try again shortly.
        let mut tries = 0;
        loop {
            match b
                .step(-1)
                .map_err(|e| msg(format!("backing up {}: {e}", src.display())))?
            {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => {
                    return Err(msg(format!(
                        "backing up {}: the database stayed busy ({other:?})",
                        src.display()
                    )));
                }
            }
        }
    }
    // The copy is a plain file of its own: no WAL beside it.
    to.pragma_update(None, "journal_mode", "DELETE")
        .map_err(msg)?;
    drop(to);
    std::fs::File::open(dst)
        .and_then(|f| f.sync_all())
        .map_err(msg)
}

fn copy_file(src: &Path, dst: &Path) -> Result<(), Failure> {
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).map_err(msg)?;
    }
    std::fs::copy(src, dst).map_err(|e| msg(format!("copying {}: {e}", src.display())))?;
    std::fs::File::open(dst)
        .and_then(|f| f.sync_all())
        .map_err(msg)
}

fn sync_dir(dir: &Path) -> Result<(), Failure> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(msg)
}

/// Verifies every chain of the data directory at `dir` (its own keys):
/// `(outlet, entries, head hash)`, or the report of the first broken one.
fn verify_dir(dir: &Path) -> Result<Vec<(String, u64, String)>, Failure> {
    let d = DataDir::open_existing(dir, None).map_err(Failure::Message)?;
    if d.config.database.url.is_some() {
        // BONOPAY_DATABASE_URL would make this check the database instead
        // of the copy.
        return Err(msg(
            "unset BONOPAY_DATABASE_URL: a backup is checked on its own SQLite files",
        ));
    }
    let check = SignatureCheck::new(d.trusted_keys().map_err(Failure::Message)?);
    let mut out = Vec::new();
    for outlet in d.store.outlets().map_err(msg)? {
        let r = verify_store(&*d.store, &outlet, &check);
        if !r.is_valid() {
            return Err(Failure::Broken(format!(
                "outlet {outlet} does not verify in {}: {}\n",
                dir.display(),
                r.error.map(|e| e.to_string()).unwrap_or_default()
            )));
        }
        out.push((outlet, r.verified, hex::encode(r.head.hash)));
    }
    Ok(out)
}

fn outlets_json(v: &[(String, u64, String)]) -> Value {
    Value::Array(
        v.iter()
            .map(|(o, n, h)| json!({"outlet": o, "entries": n, "head_hash": h}))
            .collect(),
    )
}

fn is_empty_or_missing(p: &Path) -> Result<bool, Failure> {
    match std::fs::read_dir(p) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(msg(format!("{}: {e}", p.display()))),
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes the backup and returns its report.
///
/// # Errors
/// [`Failure::Message`] when the source or the target fails (nothing is
/// left at `--to`); [`Failure::Broken`] when the copy does not verify.
pub fn backup(args: &BackupArgs) -> Result<String, Failure> {
    let path = DataDir::resolve(args.data_dir.as_deref());
    let dir = DataDir::open_existing(&path, None).map_err(Failure::Message)?;
    if dir.config.database.url.is_some() {
        return Err(msg(
            "this deployment's ledger is in PostgreSQL: back it up with PostgreSQL (pg_basebackup and WAL archiving), then check the restore with `bonopay ledger verify --database-url` (README)",
        ));
    }
    if !is_empty_or_missing(&args.to)? {
        return Err(msg(format!(
            "{} exists and is not empty: give a new directory",
            args.to.display()
        )));
    }
    let staging = with_suffix(&args.to, ".partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(msg)?;
    }
    std::fs::create_dir_all(&staging).map_err(msg)?;
    let result = (|| {
        let ledger = &dir.config.database.ledger;
        sqlite_copy(&dir.file(ledger), &staging.join(ledger))?;
        let auth = &dir.config.database.auth;
        if dir.file(auth).exists() {
            sqlite_copy(&dir.file(auth), &staging.join(auth))?;
        }
        copy_file(&path.join("config.json"), &staging.join("config.json"))?;
        for rel in files_under(&path.join("keys"))? {
            copy_file(
                &path.join("keys").join(&rel),
                &staging.join("keys").join(&rel),
            )?;
        }
        for e in std::fs::read_dir(&path).map_err(msg)? {
            let name = e.map_err(msg)?.file_name().to_string_lossy().into_owned();
            if name.starts_with("mcf-") && name.ends_with(".journal.json") {
                copy_file(&path.join(&name), &staging.join(&name))?;
            }
        }
        let outlets = verify_dir(&staging)?;
        let mut files = BTreeMap::new();
        for rel in files_under(&staging)? {
            files.insert(
                rel.to_string_lossy().into_owned(),
                sha256_file(&staging.join(&rel))?,
            );
        }
        let manifest = json!({
            "format": "bonopay/backup/v1",
            "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "source": path.display().to_string(),
            "files": files,
            "outlets": outlets_json(&outlets),
        });
        let text = serde_json::to_string_pretty(&manifest).map_err(msg)? + "\n";
        std::fs::write(staging.join(MANIFEST), &text).map_err(msg)?;
        std::fs::File::open(staging.join(MANIFEST))
            .and_then(|f| f.sync_all())
            .map_err(msg)?;
        sync_dir(&staging)?;
        Ok(manifest)
    })();
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if args.to.exists() {
        std::fs::remove_dir(&args.to).map_err(msg)?;
    }
    std::fs::rename(&staging, &args.to).map_err(msg)?;
    if let Some(parent) = args.to.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    let report = json!({
        "valid": true,
        "backup": args.to.display().to_string(),
        "files": manifest["files"].as_object().map_or(0, serde_json::Map::len),
        "outlets": manifest["outlets"],
    });
    Ok(serde_json::to_string_pretty(&report).map_err(msg)? + "\n")
}

/// Checks a backup and restores it into a new data directory.
///
/// # Errors
/// [`Failure::Message`] when the target is not empty or a file fails;
/// [`Failure::Broken`] when the backup does not match its manifest or its
/// chains do not verify.
pub fn restore(args: &RestoreArgs) -> Result<String, Failure> {
    let target = DataDir::resolve(args.data_dir.as_deref());
    if !is_empty_or_missing(&target)? {
        return Err(msg(format!(
            "{} is not empty: restore never overwrites a data directory (stop the server, move the directory away, and restore into a new one)",
            target.display()
        )));
    }
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(args.from.join(MANIFEST))
            .map_err(|e| msg(format!("{}: not a backup ({e})", args.from.display())))?,
    )
    .map_err(|e| msg(format!("{}: {e}", MANIFEST)))?;
    let files = manifest["files"]
        .as_object()
        .ok_or_else(|| msg("backup.json lists no files"))?;
    let mut problems = Vec::new();
    for (rel, want) in files {
        let got = sha256_file(&args.from.join(rel))?;
        if Some(got.as_str()) != want.as_str() {
            problems.push(format!("{rel}: SHA-256 differs from the manifest"));
        }
    }
    for rel in files_under(&args.from)? {
        let r = rel.to_string_lossy();
        if r != MANIFEST && !files.contains_key(r.as_ref()) {
            problems.push(format!("{r}: not in the manifest"));
        }
    }
    if !problems.is_empty() {
        return Err(Failure::Broken(problems.join("\n") + "\n"));
    }
    let staging = with_suffix(&target, ".restoring");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(msg)?;
    }
    let result = (|| {
        for rel in files.keys() {
            copy_file(&args.from.join(rel), &staging.join(rel))?;
        }
        sync_dir(&staging)?;
        verify_dir(&staging)
    })();
    let outlets = match result {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if outlets_json(&outlets) != manifest["outlets"] {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(Failure::Broken(
            "the restored chains' heads are not the manifest's\n".into(),
        ));
    }
    if target.exists() {
        std::fs::remove_dir(&target).map_err(msg)?;
    }
    std::fs::rename(&staging, &target).map_err(msg)?;
    let report = json!({
        "valid": true,
        "restored": target.display().to_string(),
        "outlets": outlets_json(&outlets),
    });
    Ok(serde_json::to_string_pretty(&report).map_err(msg)? + "\n")
}
