//! `bonopay dgi-sim`: the DGI e-MCF simulator, standalone.
//!
//! For developing and testing the DGI upload without the DGI: it serves
//! the e-MCF API under `/api` (and the simulator's controls under `/_sim`,
//! see `bonopay_sync::sim`), prints `listening on http://ADDR/api` and a
//! bearer token for the given NIF, and runs until Ctrl-C or SIGTERM.
//! Its state lives in memory only: a restart forgets every invoice.
//!
//! The platform behaviours a client must cope with can be set from the
//! command line (and changed while it runs, `POST /_sim/settings`): how
//! long a confirmed invoice's code takes to become referencable by a
//! credit note (`--reference-delay-ms`), a tax table that differs from
//! the client's (`--tax-rate B=18`), amounts refused when sent as strings
//! (`--refuse-string-decimals`), and the USD rate taken as the BCC's
//! (`--usd-rate`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bonopay_sync::sim::{SimConfig, Simulator, SystemClock};
use rust_decimal::Decimal;

use super::Failure;
use super::serve::{say, shutdown};

/// How long the printed token is valid: long enough for a development
/// session, unlike the DGI's short-lived ones.
const TOKEN_DAYS: i64 = 30;

/// Options of `bonopay dgi-sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// The simulated e-MCF's NIM (returned on confirm and put in the QR).
    #[arg(long, default_value = "EMCFSIM0001")]
    pub nim: String,
    /// The seller NIF the printed token is issued for.
    #[arg(long, default_value = "A1309334L")]
    pub nif: String,
    /// The e-MCF id put after the NIF in the token's `unique_name`.
    #[arg(long, default_value = "CD01003075-1")]
    pub emcf_id: String,
    /// Seconds an invoice stays pending before it expires.
    #[arg(long, default_value_t = 120)]
    pub pending_ttl_secs: u64,
    /// Key of the tokens (HS256). Give the same one to keep tokens valid
    /// across restarts; by default a random key per run.
    #[arg(long, env = "BONOPAY_DGI_SIM_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Milliseconds after its CONFIRM before an invoice's Code DEF/DGI may
    /// be a credit note's reference (before that: error 10).
    #[arg(long, default_value_t = 0)]
    pub reference_delay_ms: u64,
    /// Replaces a group's rate, as `GROUP=PERCENT` (e.g. `B=18`); repeat
    /// for several groups. `GET /api/info/taxGroups` reports it and the
    /// totals use it.
    #[arg(long = "tax-rate", value_name = "GROUP=PERCENT", value_parser = parse_tax_rate)]
    pub tax_rates: Vec<(String, Decimal)>,
    /// Refuse (error 99) amounts, quantities and rates sent as JSON strings
    /// instead of numbers.
    #[arg(long)]
    pub refuse_string_decimals: bool,
    /// CDF per USD, taken as the BCC rate: a USD invoice's `curRate` must
    /// be within 1 % of it.
    #[arg(long, default_value = "2850.00", value_parser = parse_decimal)]
    pub usd_rate: Decimal,
}

fn parse_decimal(text: &str) -> Result<Decimal, String> {
    text.trim()
        .parse::<Decimal>()
        .map_err(|e| format!("{text:?} is not a decimal number: {e}"))
}

/// `B=18` → (`B`, 18).
fn parse_tax_rate(text: &str) -> Result<(String, Decimal), String> {
    let (group, rate) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not GROUP=PERCENT (e.g. B=18)"))?;
    Ok((group.trim().to_ascii_uppercase(), parse_decimal(rate)?))
}

fn random_secret() -> Result<Vec<u8>, Failure> {
    use rand_core::RngCore;
    let mut key = vec![0u8; 32];
    rand_core::OsRng
        .try_fill_bytes(&mut key)
        .map_err(|e| Failure::Message(format!("no randomness for the token key: {e}")))?;
    Ok(key)
}

/// Runs the simulator until it is stopped.
///
/// # Errors
/// [`Failure::Message`] when the runtime cannot start or the address
/// cannot be listened on.
pub fn run(args: &Args) -> Result<String, Failure> {
    let secret = match &args.secret {
        Some(s) if !s.is_empty() => s.as_bytes().to_vec(),
        _ => random_secret()?,
    };
    let config = SimConfig {
        nim: args.nim.clone(),
        nif: args.nif.clone(),
        emcf_id: args.emcf_id.clone(),
        secret,
        pending_ttl_ms: args.pending_ttl_secs.saturating_mul(1000),
        reference_delay_ms: args.reference_delay_ms,
        tax_rate_overrides: args.tax_rates.iter().cloned().collect::<BTreeMap<_, _>>(),
        refuse_string_decimals: args.refuse_string_decimals,
        usd_rate: args.usd_rate,
        ..SimConfig::default()
    };
    config
        .check()
        .map_err(|e| Failure::Message(format!("bonopay dgi-sim: {e}")))?;
    let settings = format!(
        "bonopay dgi-sim: credit-note reference delay {} ms, tax rate overrides {}, amounts as strings {}, USD rate {}",
        config.reference_delay_ms,
        if config.tax_rate_overrides.is_empty() {
            "none".to_owned()
        } else {
            config
                .tax_rate_overrides
                .iter()
                .map(|(g, r)| format!("{g}={r}%"))
                .collect::<Vec<_>>()
                .join(" ")
        },
        if config.refuse_string_decimals {
            "refused"
        } else {
            "accepted"
        },
        config.usd_rate,
    );
    let sim = Simulator::new(config, Arc::new(SystemClock));
    let token = sim.issue_token(TOKEN_DAYS * 24 * 3600);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Message(format!("cannot start the runtime: {e}")))?;
    let listen = args.listen.clone();
    let nif = args.nif.clone();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| Failure::Message(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::Message(e.to_string()))?;
        say(&format!("bonopay dgi-sim: listening on http://{addr}/api"));
        say(&format!(
            "bonopay dgi-sim: bearer token for NIF {nif} (valid {TOKEN_DAYS} days): {token}"
        ));
        say(&settings);
        say(&format!(
            "bonopay dgi-sim: controls under http://{addr}/_sim (settings, faults, tokens, tokens/revoke, portal, confirms, stats, expire)"
        ));
        sim.serve_with_shutdown(listener, shutdown())
            .await
            .map_err(|e| Failure::Message(format!("server: {e}")))
    })?;
    Ok(String::new())
}
