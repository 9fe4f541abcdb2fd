//! `bonopay export`: writes an outlet's audit bundle from a data directory.

use std::io::Write;
use std::path::PathBuf;

use bonopay_signer::audit::{ExportRequest, Exporter};
use chrono::NaiveDate;

use super::Failure;
use crate::datadir::DataDir;

/// Options of `bonopay export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory. Defaults to `$BONOPAY_DATA_DIR` or `./bonopay-data`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The PostgreSQL ledger of a scale-out deployment (default:
    /// `BONOPAY_DATABASE_URL`, else `database.url` in `config.json`, else
    /// the data directory's SQLite ledger).
    #[arg(long)]
    pub database_url: Option<String>,
    /// The outlet.
    #[arg(long)]
    pub outlet: String,
    /// First business day (YYYY-MM-DD, outlet time). The bundle starts at
    /// the last Z report at or before it. Default: the whole chain.
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last business day (YYYY-MM-DD, outlet time). Default: up to now.
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Output file (written atomically). Default: stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Writes the bundle.
///
/// # Errors
/// [`Failure::Message`] when the data directory, the ledger or the output
/// fails.
pub fn run(args: &Args) -> Result<String, Failure> {
    let path = DataDir::resolve(args.data_dir.as_deref());
    let dir =
        DataDir::open_existing(&path, args.database_url.as_deref()).map_err(Failure::Message)?;
    let f = dir.fiscalizer().map_err(Failure::Message)?;
    let tz = f.outlet_time_zone(&args.outlet);
    let (from_ms, to_ms) = crate::server::reports::day_bounds(tz, args.from, args.to);
    let req = ExportRequest {
        outlet: args.outlet.clone(),
        time_zone: tz,
        from_ms,
        to_ms,
        keys: dir.trusted_keys().map_err(Failure::Message)?,
        created: chrono::Utc::now().with_timezone(&tz).to_rfc3339(),
    };
    let exporter = Exporter::new(&*dir.store, &req).map_err(|e| Failure::Message(e.to_string()))?;
    let msg = |e: std::io::Error| Failure::Message(format!("cannot write the bundle: {e}"));
    match &args.out {
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for chunk in exporter {
                out.write_all(&chunk.map_err(|e| Failure::Message(e.to_string()))?)
                    .map_err(msg)?;
            }
            out.flush().map_err(msg)?;
            Ok(String::new())
        }
        Some(file) => {
            let parent = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| std::path::Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(parent).map_err(msg)?;
            let mut out = std::io::BufWriter::new(tmp);
            let mut count = 0u64;
            for chunk in exporter {
                out.write_all(&chunk.map_err(|e| Failure::Message(e.to_string()))?)
                    .map_err(msg)?;
                count += 1;
            }
            let tmp = out.into_inner().map_err(|e| msg(e.into_error()))?;
            tmp.as_file().sync_all().map_err(msg)?;
            tmp.persist(file).map_err(|e| msg(e.error))?;
            Ok(format!(
                "wrote {} ({} entries) for outlet {}\n",
                file.display(),
                count.saturating_sub(2),
                args.outlet
            ))
        }
    }
}
