//! The `bonopay` commands.
//!
//! Exit codes: `0` on success; `2` when the input is refused (validation
//! errors, printed as a JSON array on stderr), when stdin cannot be read,
//! when an option is malformed or a file cannot be loaded (a one-line
//! message on stderr), and for clap's own usage errors.

use std::io::{Read, Write};
use std::process::ExitCode;

use bonopay_core::ValidationErrors;
use clap::{Parser, Subcommand};

pub mod backup;
pub mod canonicalize;
pub mod dgi_sim;
pub mod export;
pub mod keys;
pub mod ledger;
pub mod mcf_sim;
pub mod migrate;
pub mod report;
pub mod seal;
pub mod serve;
pub mod totals;
pub mod verify;

/// Exit code for every failure: refused input, unreadable input, bad option.
pub const EXIT_FAILURE: u8 = 2;
/// Exit code of a verification that ran and found the data invalid.
pub const EXIT_INVALID: u8 = 1;

/// Bono Pay fiscalization tools.
#[derive(Debug, Parser)]
#[command(name = "bonopay", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read an invoice request (JSON) on stdin and print its canonical
    /// bytes (RFC 8785), without a trailing newline.
    Canonicalize(canonicalize::Args),
    /// Read an invoice request (JSON) on stdin, run the full check (parse,
    /// validate, compute taxes) and print the computed totals as JSON.
    Totals(totals::Args),
    /// Fiscalize the invoice (JSON) on stdin with the embedded defaults: a
    /// SQLite ledger and a software key in the data directory, created on
    /// first use. Prints the five security elements as JSON.
    Seal(seal::Args),
    /// Run the reference HTTP server (JSON API under /v1) on the embedded
    /// defaults: creates the data directory and an owner API key on first
    /// run and prints them, then listens on 127.0.0.1:8080.
    Serve(serve::Args),
    /// Ledger tools.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// X, Z and A reports and closings of an outlet in a data directory.
    Report(report::Args),
    /// Write an outlet's audit bundle (JSON Lines) from a data directory.
    Export(export::Args),
    /// Move a SQLite data directory into PostgreSQL, and verify the move.
    Migrate(migrate::Args),
    /// Copy a SQLite data directory while the server runs (SQLite's
    /// online backup API), verify the copy, and write its manifest.
    Backup(backup::BackupArgs),
    /// Check a backup and restore it into a new, empty data directory.
    Restore(backup::RestoreArgs),
    /// Check an audit bundle offline: chain, counters, signatures, and
    /// every report recomputed. Exit 0 valid, 1 invalid, 2 unreadable.
    Verify(verify::Args),
    /// API keys, straight on the key store (the operator's way back for a
    /// merchant locked out of the API).
    #[command(subcommand)]
    Keys(keys::Command),
    /// Run the DGI e-MCF simulator (API under /api) in memory: prints its
    /// URL and a bearer token, then serves until Ctrl-C.
    DgiSim(dgi_sim::Args),
    /// Run a simulated physical MCF (DGI fiscal device) on a
    /// pseudo-terminal: prints its path, then speaks the MCF serial
    /// protocol on it until Ctrl-C.
    McfSim(mcf_sim::Args),
}

/// `bonopay ledger …`.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Verify every outlet's chain: hashes, counters, signatures. Exit 0
    /// when valid, 1 when not (the report names the first broken entry).
    Verify(ledger::Args),
}

impl Command {
    fn reads_stdin(&self) -> bool {
        matches!(
            self,
            Command::Canonicalize(_) | Command::Totals(_) | Command::Seal(_)
        )
    }
}

/// Why a command did not produce its output.
#[derive(Debug)]
pub enum Failure {
    /// The invoice was refused: every problem, with path and code.
    Invalid(ValidationErrors),
    /// Anything else (unreadable input, bad option, unreadable file).
    Message(String),
    /// A verification ran and found the data invalid: the report to print
    /// on stdout, exit code 1.
    Broken(String),
}

impl From<ValidationErrors> for Failure {
    fn from(e: ValidationErrors) -> Self {
        Failure::Invalid(e)
    }
}

/// Runs a parsed command on the given stdin text and returns what to print
/// on stdout.
///
/// # Errors
/// A [`Failure`] to report on stderr.
pub fn run(command: &Command, stdin: &str) -> Result<String, Failure> {
    match command {
        Command::Canonicalize(args) => canonicalize::run(args, stdin),
        Command::Totals(args) => totals::run(args, stdin),
        Command::Seal(args) => seal::run(args, stdin),
        Command::Ledger(LedgerCommand::Verify(args)) => ledger::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Report(args) => report::run(args),
        Command::Export(args) => export::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::DgiSim(args) => dgi_sim::run(args),
        Command::McfSim(args) => mcf_sim::run(args),
        Command::Keys(command) => keys::run(command),
    }
}

/// Log events (the server's, mostly) go to stderr, filtered by
/// `BONOPAY_LOG` in `tracing`'s env-filter syntax (`info` by default,
/// e.g. `BONOPAY_LOG=bonopay_server_example=debug,warn`). A filter that does
/// not parse falls back to the default rather than silencing the log.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BONOPAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Reads all of stdin as UTF-8.
fn read_stdin() -> Result<String, Failure> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|e| Failure::Message(format!("cannot read stdin: {e}")))?;
    String::from_utf8(buf).map_err(|e| Failure::Message(format!("stdin is not valid UTF-8: {e}")))
}

/// Writes `text` to `out` and flushes it.
fn emit(mut out: impl Write, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// The whole program: parse arguments, read stdin, run, print. Never
/// panics; returns the process exit code.
#[must_use]
pub fn main() -> ExitCode {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that go to stdout and exit 0.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_FAILURE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let input = if cli.command.reads_stdin() {
        read_stdin()
    } else {
        Ok(String::new())
    };
    let result = input.and_then(|input| run(&cli.command, &input));
    match result {
        Ok(text) => match emit(std::io::stdout().lock(), &text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = emit(
                    std::io::stderr().lock(),
                    &format!("bonopay: cannot write stdout: {e}\n"),
                );
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Err(Failure::Invalid(errors)) => {
            let _ = emit(std::io::stderr().lock(), &format!("{}\n", errors.to_json()));
            ExitCode::from(EXIT_FAILURE)
        }
        Err(Failure::Broken(report)) => {
            let _ = emit(std::io::stdout().lock(), &report);
            ExitCode::from(EXIT_INVALID)
        }
        Err(Failure::Message(msg)) => {
            let _ = emit(
                std::io::stderr().lock(),
                &format!("bonopay: error: {msg}\n"),
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
