//! `bonopay report`: X, Z and A reports and closings from a data directory,
//! for outlets run without the server (or next to it: appends are
//! compare-and-swap, so a Z here and sales in the server never fork).

use std::path::PathBuf;

use bonopay_signer::render::Paper;
use bonopay_signer::{Report, SealError};

use super::Failure;
use crate::datadir::DataDir;

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// The current session's statistics (closes nothing).
    X,
    /// The session's statistics, sealed; starts a new session.
    Z,
    /// Per article since the last A report (sealed with `--seal`).
    A,
    /// Seal every daily, monthly and yearly closing that is due.
    Close,
}

/// Options of `bonopay report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which report.
    #[arg(value_enum)]
    pub kind: Kind,
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
    /// Print JSON instead of thermal-printer text.
    #[arg(long)]
    pub json: bool,
    /// Paper width for text: 58 or 80 (mm).
    #[arg(long, default_value = "80")]
    pub paper: String,
    /// For `a`: seal it (the next A report starts after it).
    #[arg(long)]
    pub seal: bool,
}

fn seal_failure(e: SealError) -> Failure {
    match e {
        SealError::Invalid(v) => Failure::Invalid(v),
        other => Failure::Message(other.to_string()),
    }
}

fn render(reports: &[Report], json: bool, paper: Paper) -> String {
    if json {
        let docs: Vec<_> = reports.iter().map(Report::to_json).collect();
        let v = match docs.as_slice() {
            [one] => one.clone(),
            _ => serde_json::Value::Array(docs),
        };
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    } else {
        reports
            .iter()
            .map(|r| r.text(paper))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Computes (and for Z, A with `--seal` and closings, seals) the report.
///
/// # Errors
/// [`Failure::Message`] when the data directory or the ledger fails.
pub fn run(args: &Args) -> Result<String, Failure> {
    let paper = Paper::from_mm(&args.paper).ok_or_else(|| {
        Failure::Message(format!("--paper must be 58 or 80, not `{}`", args.paper))
    })?;
    let path = DataDir::resolve(args.data_dir.as_deref());
    let dir =
        DataDir::open_existing(&path, args.database_url.as_deref()).map_err(Failure::Message)?;
    let id = dir
        .report_identity(&args.outlet)
        .map_err(Failure::Message)?;
    let f = dir.fiscalizer().map_err(Failure::Message)?;
    let reports = match args.kind {
        Kind::X => vec![f.x_report(&args.outlet, &id).map_err(seal_failure)?],
        Kind::Z => vec![f.z_report(&args.outlet, &id).map_err(seal_failure)?],
        Kind::A => vec![
            f.a_report(&args.outlet, &id, args.seal)
                .map_err(seal_failure)?,
        ],
        Kind::Close => f.close_periods(&args.outlet, &id).map_err(seal_failure)?,
    };
    if reports.is_empty() {
        return Ok(if args.json {
            "[]\n".into()
        } else {
            "no period to close\n".into()
        });
    }
    Ok(render(&reports, args.json, paper))
}
