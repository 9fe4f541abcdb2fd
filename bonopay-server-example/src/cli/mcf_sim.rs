//! `bonopay mcf-sim`: a simulated physical MCF (DGI fiscal device) on a
//! pseudo-terminal, standalone.
//!
//! For developing and testing the device path without a device: it opens a
//! pseudo-terminal, prints `bonopay mcf-sim: device NIM on PATH` (give PATH
//! as an outlet's `mcf.path` in `config.json`), and speaks the MCF serial
//! protocol on it until Ctrl-C or SIGTERM. Its counters and last invoice
//! live in a fiscal-memory file (`--memory`), replaced atomically, so they
//! survive restarts as a device's do.
//!
//! Faults for tests, each firing once (after it the device restarts clean
//! from its fiscal memory): `--nak-on-frame N`, `--syn-before CMD:COUNT`,
//! `--error-on CMD:CODE:MESSAGE`, `--drop-on-frame N`,
//! `--power-cycle-after-finalize`. `CMD` is the command byte in hex
//! (`38` finalize, `31` item, …).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bonopay_sync::mcf::sim::pty::Pty;
use bonopay_sync::mcf::sim::{Faults, ServeEnd, SimConfig, host};

use super::Failure;
use super::serve::{say, shutdown};

/// Options of `bonopay mcf-sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The device's NIM (its id, printed on receipts as "DEF NID").
    #[arg(long, default_value = "DEF0100001")]
    pub nim: String,
    /// The taxpayer's NIF the device is registered to.
    #[arg(long, default_value = "A1309334L")]
    pub nif: String,
    /// The fiscal memory file (created on first use).
    #[arg(long, default_value = "mcf-sim-memory.json")]
    pub memory: PathBuf,
    /// The key the device's SIG is computed under.
    #[arg(
        long,
        env = "BONOPAY_MCF_SIM_SECRET",
        hide_env_values = true,
        default_value = "bonopay mcf-sim"
    )]
    pub secret: String,
    /// Answer NAK to the N-th frame received.
    #[arg(long)]
    pub nak_on_frame: Option<u64>,
    /// Send COUNT SYN bytes before every reply to command CMD (hex).
    #[arg(long, value_name = "CMD:COUNT", value_parser = parse_syn)]
    pub syn_before: Option<(u8, u32)>,
    /// Refuse command CMD (hex) with `E:CODE,MESSAGE`.
    #[arg(long, value_name = "CMD:CODE:MESSAGE", value_parser = parse_error)]
    pub error_on: Option<(u8, String, String)>,
    /// Drop the line (stop answering) when the N-th frame arrives.
    #[arg(long)]
    pub drop_on_frame: Option<u64>,
    /// After executing and persisting a finalize (38h), lose power before
    /// the reply.
    #[arg(long)]
    pub power_cycle_after_finalize: bool,
}

fn parse_cmd(text: &str) -> Result<u8, String> {
    u8::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{text:?} is not a command byte in hex (e.g. 38)"))
}

fn parse_syn(text: &str) -> Result<(u8, u32), String> {
    let (cmd, n) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not CMD:COUNT"))?;
    let n = n
        .parse()
        .map_err(|_| format!("{n:?} is not a count of SYN bytes"))?;
    Ok((parse_cmd(cmd)?, n))
}

fn parse_error(text: &str) -> Result<(u8, String, String), String> {
    let mut parts = text.splitn(3, ':');
    let (Some(cmd), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("{text:?} is not CMD:CODE:MESSAGE"));
    };
    Ok((
        parse_cmd(cmd)?,
        code.to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    ))
}

/// Runs the device until a signal.
///
/// # Errors
/// [`Failure::Message`] when the pseudo-terminal or the fiscal memory
/// cannot be opened.
pub fn run(args: &Args) -> Result<String, Failure> {
    let config = SimConfig {
        nim: args.nim.clone(),
        nif: args.nif.clone(),
        secret: args.secret.clone().into_bytes(),
        state_path: args.memory.clone(),
        faults: Faults {
            nak_on_frame: args.nak_on_frame,
            syn_before: args.syn_before,
            error_on: args.error_on.clone(),
            drop_on_frame: args.drop_on_frame,
            power_cycle_after_finalize: args.power_cycle_after_finalize,
        },
    };
    // Refuse a foreign or unreadable fiscal memory before printing a path.
    bonopay_sync::mcf::sim::FiscalMemory::load(&config.state_path, &config.nim)
        .map_err(|e| Failure::Message(format!("{}: {e}", config.state_path.display())))?;
    let Pty {
        mut master,
        slave_path,
    } = Pty::open().map_err(|e| Failure::Message(format!("opening a pseudo-terminal: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(shutdown());
        }
        s.store(true, Ordering::Relaxed);
    });
    say(&format!(
        "bonopay mcf-sim: device {} on {}",
        config.nim,
        slave_path.display()
    ));
    host(&config, &mut master, &stop, &mut |end| match end {
        ServeEnd::HungUp => say("bonopay mcf-sim: line dropped (injected); restarting"),
        ServeEnd::PowerCycled => say("bonopay mcf-sim: power cut after 38h (injected); restarting"),
        _ => {}
    })
    .map_err(|e| Failure::Message(format!("the simulated device stopped: {e}")))?;
    Ok(String::new())
}
