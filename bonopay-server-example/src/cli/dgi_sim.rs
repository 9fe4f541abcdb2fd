//! `bonopay dgi-sim`: the DGI e-MCF simulator, standalone.
//!
//! For developing and testing the DGI upload without the DGI: it serves
//! the e-MCF API under `/api` (and the simulator's controls under `/_sim`,
//! see `bonopay_sync::sim`), prints `listening on http://ADDR/api` and a
//! bearer token for the given NIF, and runs until Ctrl-C or SIGTERM.
//! Its state lives in memory only: a restart forgets every invoice.

use std::sync::Arc;

use bonopay_sync::sim::{SimConfig, Simulator, SystemClock};

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
        ..SimConfig::default()
    };
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
        sim.serve_with_shutdown(listener, shutdown())
            .await
            .map_err(|e| Failure::Message(format!("server: {e}")))
    })?;
    Ok(String::new())
}
