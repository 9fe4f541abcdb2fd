//! `bonopay canonicalize`: invoice JSON on stdin, canonical bytes on stdout.

use super::Failure;

/// Options of `bonopay canonicalize` (none yet).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {}

/// Parses and validates `input` and returns its canonical form (RFC 8785
/// JCS), with no trailing newline: the output is exactly the bytes that are
/// hashed and signed.
///
/// Only the request itself is checked here; the checks that need the tax
/// computation (payments, client totals, exchange rate) are `totals`' job.
///
/// # Errors
/// [`Failure::Invalid`] with every validation problem.
pub fn run(_args: &Args, input: &str) -> Result<String, Failure> {
    Ok(bonopay_core::canonicalize(input)?)
}
