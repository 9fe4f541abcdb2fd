//! A simulated MCF (feature `mcf-sim`): a device that speaks the serial
//! protocol of [`super::frame`] and [`super::command`] over any byte pipe,
//! with a fiscal memory on disk and injectable faults, so the client is
//! tested end to end over a real pseudo-terminal ([`pty`]).
//!
//! What it keeps, like a fiscal memory: the device's NIM, the total
//! counter TC and one counter per invoice type (FV, FA, …), and the last
//! invoice, in a small JSON file replaced atomically (write a temporary
//! file, fsync it, rename it over the old one, fsync the directory), so a
//! power cut leaves either the old or the new state. SIG is the first 24
//! characters of the RFC 4648 base32 of an HMAC-SHA256, under the device's
//! secret, over the invoice's frames and its counters and time
//! (`bonopay/v1/mcf-sim-sig\0`, domain separated). DT is the device's local
//! time (Africa/Kinshasa), `yyyyMMddHHmmss`.
//!
//! Replies: `R:` fields as [`super::command`] reads them; C1h answers
//! `NIM,NIF,DT,TC,FVcount,FAcount,lastDT,lastType,lastCode,lastNo,lastAmt`
//! (the rates and currency of the spec's list are left out \[simplified\]).
//! A frame repeated under the same SEQ and command is answered from the
//! last reply without executing it again.

#[cfg(unix)]
pub mod pty;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::command::{
    CMD_CLIENT, CMD_COMMENT, CMD_FINALIZE, CMD_ITEM, CMD_OPEN_INVOICE, CMD_PAYMENT,
    CMD_SERVER_LINK, CMD_STATUS, CMD_SUBTOTAL, CMD_TAXPAYER, FinalizeResult, Reply, amount,
};
use super::frame::{Decoder, Event, Frame, NAK, SYN};
use super::link::McfLink;

/// Faults to inject, each counted from the device's start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Answer NAK instead of executing the N-th frame received (1-based).
    pub nak_on_frame: Option<u64>,
    /// Send this many SYN bytes before every reply to this command.
    pub syn_before: Option<(u8, u32)>,
    /// Refuse this command with `E:code,message`.
    pub error_on: Option<(u8, String, String)>,
    /// Hang up, without answering, when the N-th frame arrives.
    pub drop_on_frame: Option<u64>,
    /// After executing and persisting a 38h finalize, lose power before
    /// replying: the reply is lost, RAM (open invoice, last reply) too.
    pub power_cycle_after_finalize: bool,
}

/// How to build a device.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The device id (NIM / MID), e.g. `DEF0100001`.
    pub nim: String,
    /// The taxpayer's NIF the device is registered to.
    pub nif: String,
    /// The key SIG is computed under.
    pub secret: Vec<u8>,
    /// The fiscal memory file.
    pub state_path: PathBuf,
    /// Faults to inject.
    pub faults: Faults,
}

/// The last finalized invoice, as C1h reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastInvoice {
    /// DT of the finalize.
    pub dt: String,
    /// Invoice type.
    pub ft: String,
    /// Its SIG.
    pub sig: String,
    /// The SFE invoice number.
    pub number: String,
    /// Its total, two decimals.
    pub total: String,
    /// FC at the time.
    pub fc: u64,
    /// TC at the time.
    pub tc: u64,
}

/// The fiscal memory: what survives a power cut.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiscalMemory {
    /// The device id it belongs to.
    pub nim: String,
    /// Total counter.
    pub tc: u64,
    /// Counter per invoice type.
    pub per_type: BTreeMap<String, u64>,
    /// The last finalized invoice.
    pub last: Option<LastInvoice>,
}

impl FiscalMemory {
    /// Reads `path`, or a fresh memory for `nim` when there is none.
    ///
    /// # Errors
    /// An unreadable or foreign file.
    pub fn load(path: &Path, nim: &str) -> io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let m: Self = serde_json::from_slice(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if m.nim != nim {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the fiscal memory belongs to {}, not {nim}", m.nim),
                    ));
                }
                Ok(m)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self {
                nim: nim.to_owned(),
                ..Self::default()
            }),
            Err(e) => Err(e),
        }
    }

    /// Replaces `path` atomically: temporary file, fsync, rename, fsync
    /// of the directory.
    ///
    /// # Errors
    /// The file system's.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        super::write_atomic(path, &bytes)
    }
}

#[derive(Debug, Clone)]
struct OpenInvoice {
    ft: String,
    number: String,
    total: Decimal,
    items: u32,
    mac_input: Vec<u8>,
}

/// What the device does after a chunk of input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Write these bytes on the line.
    Write(Vec<u8>),
    /// Hang up the line (injected drop).
    HangUp,
    /// Power lost: stop, keeping only the fiscal memory on disk.
    PowerCycle,
}

/// The simulated device.
#[derive(Debug)]
pub struct Device {
    config: SimConfig,
    memory: FiscalMemory,
    decoder: Decoder,
    open: Option<OpenInvoice>,
    frames_seen: u64,
    last_reply: Option<(u8, u8, Vec<u8>)>,
}

/// Reads `PRICE[*QTY]` from an item's data (after its second TAB).
fn item_total(data: &str) -> Option<Decimal> {
    let priced = data.split('\t').nth(2)?;
    let priced = priced.split(';').next()?;
    let (price, qty) = match priced.split_once('*') {
        Some((p, q)) => (p.parse::<Decimal>().ok()?, q.parse::<Decimal>().ok()?),
        None => (priced.parse::<Decimal>().ok()?, Decimal::ONE),
    };
    let total = price.checked_mul(qty)?;
    if total <= Decimal::ZERO {
        return None;
    }
    Some(total.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero))
}

fn err(code: &str, message: &str) -> Reply {
    Reply::Error {
        code: code.into(),
        message: message.into(),
    }
}

fn ok(fields: Vec<String>) -> Reply {
    Reply::Result(fields)
}

impl Device {
    /// A device with its fiscal memory loaded from `config.state_path`.
    ///
    /// # Errors
    /// An unreadable fiscal memory.
    pub fn new(config: SimConfig) -> io::Result<Self> {
        let memory = FiscalMemory::load(&config.state_path, &config.nim)?;
        Ok(Self {
            config,
            memory,
            decoder: Decoder::new(),
            open: None,
            frames_seen: 0,
            last_reply: None,
        })
    }

    /// The fiscal memory as it stands.
    #[must_use]
    pub fn memory(&self) -> &FiscalMemory {
        &self.memory
    }

    /// DT as a device set to Kinshasa time writes it (`yyyyMMddHHmmss`,
    /// local, no offset): the machine's own zone would print a time an
    /// hour off the receipt's other times on a UTC host.
    fn now() -> String {
        chrono::Utc::now()
            .with_timezone(&chrono_tz::Africa::Kinshasa)
            .format("%Y%m%d%H%M%S")
            .to_string()
    }

    fn sig(&self, open: &OpenInvoice, fc: u64, tc: u64, dt: &str) -> io::Result<String> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.config.secret).map_err(io::Error::other)?;
        mac.update(b"bonopay/v1/mcf-sim-sig\0");
        for part in [
            self.config.nim.as_bytes(),
            open.ft.as_bytes(),
            open.number.as_bytes(),
            dt.as_bytes(),
            fc.to_string().as_bytes(),
            tc.to_string().as_bytes(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(&open.mac_input);
        let code = data_encoding::BASE32_NOPAD.encode(&mac.finalize().into_bytes());
        Ok(code.chars().take(24).collect())
    }

    /// Feeds bytes from the line; what to do in return.
    ///
    /// # Errors
    /// The fiscal memory could not be written (the device then refuses the
    /// finalize with `E:`, unless the write failed after the rename).
    pub fn on_bytes(&mut self, bytes: &[u8]) -> io::Result<Vec<Action>> {
        self.decoder.feed(bytes);
        let mut out = Vec::new();
        while let Some(event) = self.decoder.next_event() {
            match event {
                // A damaged frame: ask for it again.
                Err(_) => out.push(Action::Write(vec![NAK])),
                // The host does not send these; ignore.
                Ok(Event::Nak | Event::Syn) => {}
                Ok(Event::Frame(f)) => {
                    self.frames_seen = self.frames_seen.saturating_add(1);
                    let faults = &self.config.faults;
                    if faults.drop_on_frame == Some(self.frames_seen) {
                        out.push(Action::HangUp);
                        return Ok(out);
                    }
                    if faults.nak_on_frame == Some(self.frames_seen) {
                        out.push(Action::Write(vec![NAK]));
                        continue;
                    }
                    if let Some((seq, cmd, reply)) = &self.last_reply
                        && *seq == f.seq
                        && *cmd == f.cmd
                    {
                        out.push(Action::Write(reply.clone()));
                        continue;
                    }
                    let reply = self.execute(&f)?;
                    if f.cmd == CMD_FINALIZE
                        && matches!(reply, Reply::Result(ref r) if r.len() == 8)
                        && self.config.faults.power_cycle_after_finalize
                    {
                        self.open = None;
                        self.last_reply = None;
                        self.config.faults.power_cycle_after_finalize = false;
                        out.push(Action::PowerCycle);
                        return Ok(out);
                    }
                    let bytes = Frame::new(f.seq, f.cmd, reply.to_data())
                        .encode()
                        .map_err(io::Error::other)?;
                    if let Some((cmd, n)) = self.config.faults.syn_before
                        && cmd == f.cmd
                    {
                        out.push(Action::Write(vec![SYN; n as usize]));
                    }
                    self.last_reply = Some((f.seq, f.cmd, bytes.clone()));
                    out.push(Action::Write(bytes));
                }
            }
        }
        Ok(out)
    }

    fn execute(&mut self, f: &Frame) -> io::Result<Reply> {
        if let Some((cmd, code, message)) = &self.config.faults.error_on
            && *cmd == f.cmd
        {
            return Ok(err(code, message));
        }
        let text = String::from_utf8_lossy(&f.data).into_owned();
        let m = &self.memory;
        Ok(match f.cmd {
            CMD_STATUS => {
                let count = |t: &str| m.per_type.get(t).copied().unwrap_or(0).to_string();
                let last = m.last.clone();
                let l = |g: fn(&LastInvoice) -> String| last.as_ref().map(g).unwrap_or_default();
                ok(vec![
                    self.config.nim.clone(),
                    self.config.nif.clone(),
                    Self::now(),
                    m.tc.to_string(),
                    count("FV"),
                    count("FA"),
                    l(|x| x.dt.clone()),
                    l(|x| x.ft.clone()),
                    l(|x| x.sig.clone()),
                    l(|x| x.number.clone()),
                    l(|x| x.total.clone()),
                ])
            }
            CMD_SERVER_LINK => ok(vec![
                m.tc.to_string(),
                "0".into(),
                Self::now(),
                "OK".into(),
                String::new(),
            ]),
            CMD_TAXPAYER => ok(vec![format!("{} (simulated)", text)]),
            CMD_CLIENT | CMD_COMMENT | CMD_PAYMENT => {
                if self.open.is_none() {
                    err("2", "no open invoice")
                } else {
                    self.absorb(&f.data);
                    ok(Vec::new())
                }
            }
            CMD_OPEN_INVOICE => {
                if self.open.is_some() {
                    return Ok(err("1", "an invoice is already open"));
                }
                let fields: Vec<&str> = text.split(',').collect();
                let ft = fields.get(3).copied().unwrap_or_default().to_owned();
                // FA/EA carry nature and reference before PMODE,ISF,FN.
                let fn_at = if matches!(ft.as_str(), "FA" | "EA") {
                    8
                } else {
                    6
                };
                let Some(number) = fields.get(fn_at) else {
                    return Ok(err("3", "open invoice: missing fields"));
                };
                if !matches!(ft.as_str(), "FV" | "FT" | "EV" | "ET" | "FA" | "EA") {
                    return Ok(err("4", "unknown invoice type"));
                }
                self.open = Some(OpenInvoice {
                    ft,
                    number: (*number).to_owned(),
                    total: Decimal::ZERO,
                    items: 0,
                    mac_input: Vec::new(),
                });
                self.absorb(&f.data);
                ok(Vec::new())
            }
            CMD_ITEM => {
                let Some(total) = item_total(&text) else {
                    return Ok(err("5", "item: bad or non-positive price"));
                };
                match self.open.as_mut() {
                    None => err("2", "no open invoice"),
                    Some(o) => {
                        o.total = o.total.checked_add(total).unwrap_or(o.total);
                        o.items = o.items.saturating_add(1);
                        self.absorb(&f.data);
                        ok(Vec::new())
                    }
                }
            }
            CMD_SUBTOTAL => match &self.open {
                None => err("2", "no open invoice"),
                Some(o) => ok(vec![amount(o.total)]),
            },
            CMD_FINALIZE => self.finalize(&text)?,
            _ => err("9", "unknown command"),
        })
    }

    fn absorb(&mut self, data: &[u8]) {
        if let Some(o) = self.open.as_mut() {
            o.mac_input
                .extend_from_slice(&(data.len() as u64).to_be_bytes());
            o.mac_input.extend_from_slice(data);
        }
    }

    fn finalize(&mut self, text: &str) -> io::Result<Reply> {
        let Some(open) = self.open.clone() else {
            return Ok(err("2", "no open invoice"));
        };
        if text == "C" {
            self.open = None;
            return Ok(ok(Vec::new()));
        }
        if open.items == 0 {
            return Ok(err("6", "an invoice needs items"));
        }
        let ttc = text
            .split(',')
            .next()
            .and_then(|t| t.parse::<Decimal>().ok());
        if ttc != Some(open.total) {
            return Ok(err(
                "7",
                &format!(
                    "total {} differs from the items' {}",
                    text,
                    amount(open.total)
                ),
            ));
        }
        let mut memory = self.memory.clone();
        memory.tc = memory.tc.saturating_add(1);
        let fc = memory.per_type.entry(open.ft.clone()).or_insert(0);
        *fc = fc.saturating_add(1);
        let fc = *fc;
        let dt = Self::now();
        let sig = self.sig(&open, fc, memory.tc, &dt)?;
        memory.last = Some(LastInvoice {
            dt: dt.clone(),
            ft: open.ft.clone(),
            sig: sig.clone(),
            number: open.number.clone(),
            total: amount(open.total),
            fc,
            tc: memory.tc,
        });
        // Durable before the reply leaves, like a fiscal memory.
        if let Err(e) = memory.store(&self.config.state_path) {
            return Ok(err("8", &format!("fiscal memory: {}", e.kind())));
        }
        self.memory = memory;
        self.open = None;
        let result = FinalizeResult {
            fc: fc.to_string(),
            tc: self.memory.tc.to_string(),
            ft: open.ft,
            dt,
            mid: self.config.nim.clone(),
            nif: self.config.nif.clone(),
            fn_: open.number,
            sig,
        };
        Ok(ok(result.to_fields()))
    }
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServeEnd {
    /// The host closed the line.
    Closed,
    /// An injected hang-up.
    HungUp,
    /// An injected power cut.
    PowerCycled,
    /// `stop` was set.
    Stopped,
}

/// Runs `device` on `link` until the line closes, a fault ends it, or
/// `stop` is set (checked every 50 ms).
///
/// # Errors
/// The line's or the fiscal memory's I/O errors.
pub fn serve(
    device: &mut Device,
    link: &mut dyn McfLink,
    stop: &Arc<AtomicBool>,
) -> io::Result<ServeEnd> {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let n = match link.read(&mut buf, Duration::from_millis(50)) {
            Ok(0) => return Ok(ServeEnd::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for action in device.on_bytes(buf.get(..n).unwrap_or_default())? {
            match action {
                Action::Write(bytes) => link.write_all(&bytes)?,
                Action::HangUp => return Ok(ServeEnd::HungUp),
                Action::PowerCycle => return Ok(ServeEnd::PowerCycled),
            }
        }
    }
    Ok(ServeEnd::Stopped)
}

/// Runs a device on `link` until `stop` is set, the way a device on a desk
/// behaves: a host that closes and reopens the line finds the same device
/// (its open invoice, its frame count); after an injected hang-up or power
/// cut the device restarts from its fiscal memory, with no faults left to
/// inject (each fault fires once). `on_end` hears how each run ended.
///
/// # Errors
/// The fiscal memory's, or the line's other than its closing.
pub fn host(
    config: &SimConfig,
    link: &mut dyn McfLink,
    stop: &Arc<AtomicBool>,
    on_end: &mut dyn FnMut(ServeEnd),
) -> io::Result<()> {
    let mut device = Device::new(config.clone())?;
    loop {
        let end = serve(&mut device, link, stop)?;
        on_end(end);
        match end {
            ServeEnd::Stopped => return Ok(()),
            // The host closed its side; wait for it to open again.
            ServeEnd::Closed => std::thread::sleep(Duration::from_millis(20)),
            ServeEnd::HungUp | ServeEnd::PowerCycled => {
                let mut quiet = config.clone();
                quiet.faults = Faults::default();
                device = Device::new(quiet)?;
            }
        }
    }
}
