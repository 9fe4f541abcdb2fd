//! Typed MCF commands and replies, the 38h result as DGI elements, and the
//! sans-I/O [`Session`] that runs an invoice's commands over any line.
//!
//! Command bytes and field order are the table of
//! `../shared/spec/dgi-emcf.md` §4 (DRC MCF, source S4; the same bytes in
//! the Benin libraries S12 `MecefService.java` and S13
//! `CommandString_v4.cs`). What the table leaves open is assumed here and
//! marked so:
//!
//! - **Text** is sent as UTF-8. \[assumed: the table names no code page\]
//! - **Fields** are separated by `,` and sent in the table's order; an
//!   absent optional field is left out with its separator.
//! - **Amounts** are `rust_decimal::Decimal` written with exactly two
//!   decimals (quantities three), `.` as the decimal point, never floats.
//! - **Replies**: `R:` then comma-separated fields, `P:` pending, `E:` then
//!   `code[,message]`. \[assumed: the spec gives the prefixes only\]
//! - **Pending** (`P:`) is taken like SYN: the device has the command and
//!   the result comes in a later frame with the same SEQ. \[assumed\]
//! - **Repeated SEQ**: a frame sent again with the same SEQ (after a NAK,
//!   a damaged reply) is answered from the device's last reply without
//!   executing the command twice, as serial fiscal devices of this family
//!   do. \[assumed; the simulator behaves so\]

use std::fmt::Write as _;

use bonopay_signer::certification::DgiElements;
use rust_decimal::{Decimal, RoundingStrategy};
use thiserror::Error;

use super::frame::{Event, Frame, FrameError, next_seq};

/// Command byte: status.
pub const CMD_STATUS: u8 = 0xC1;
/// Command byte: link with the DGI server.
pub const CMD_SERVER_LINK: u8 = 0xC2;
/// Command byte: taxpayer information.
pub const CMD_TAXPAYER: u8 = 0x2B;
/// Command byte: client of the invoice.
pub const CMD_CLIENT: u8 = 0xC3;
/// Command byte: open an invoice.
pub const CMD_OPEN_INVOICE: u8 = 0xC0;
/// Command byte: one item.
pub const CMD_ITEM: u8 = 0x31;
/// Command byte: a comment line.
pub const CMD_COMMENT: u8 = 0x36;
/// Command byte: subtotal.
pub const CMD_SUBTOTAL: u8 = 0x33;
/// Command byte: a payment.
pub const CMD_PAYMENT: u8 = 0x35;
/// Command byte: finalize (or cancel, with data `C`).
pub const CMD_FINALIZE: u8 = 0x38;

/// An amount with exactly two decimals, rounded half away from zero (the
/// SFE rounding rule, §6), as the device reads it.
#[must_use]
pub fn amount(d: Decimal) -> String {
    let mut r = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(2);
    r.to_string()
}

/// A quantity with exactly three decimals.
#[must_use]
pub fn quantity(d: Decimal) -> String {
    let mut r = d.round_dp_with_strategy(3, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(3);
    r.to_string()
}

/// Which taxpayer field 2Bh reads (I0–I4, D0–D2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaxpayerField {
    /// I0: name.
    Name,
    /// I1: address.
    Address,
    /// I2: city.
    City,
    /// I3: phone.
    Phone,
    /// I4: e-mail.
    Email,
    /// D0–D2: the currency settings.
    Currency(u8),
}

impl TaxpayerField {
    fn key(self) -> String {
        match self {
            Self::Name => "I0".into(),
            Self::Address => "I1".into(),
            Self::City => "I2".into(),
            Self::Phone => "I3".into(),
            Self::Email => "I4".into(),
            Self::Currency(n) => format!("D{}", n.min(2)),
        }
    }
}

/// The client of the invoice (C3h): `type,NIF,name,address,contact,email,RCCM`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// Client type code (PP, PM, PC, PL, AO in the e-MCF dictionary).
    pub kind: String,
    /// The client's NIF, empty for a walk-in customer.
    pub nif: String,
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Phone or other contact.
    pub contact: String,
    /// E-mail.
    pub email: String,
    /// Trade register number.
    pub rccm: String,
}

/// Opening an invoice (C0h): `OPID,OPN,NIF,{FV…|FA/EA,nature,ref},PMODE,ISF,FN[,CRT,CDT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInvoice {
    /// Operator id.
    pub operator_id: String,
    /// Operator name (printed, SFE §1.2).
    pub operator_name: String,
    /// The seller's NIF.
    pub nif: String,
    /// Invoice type: FV, FT, EV, ET, FA or EA.
    pub invoice_type: String,
    /// For FA/EA: the nature of the credit note and the Code DEF/DGI of
    /// the invoice it corrects.
    pub credit_note: Option<(String, String)>,
    /// Price mode: `TTC` or `HT`.
    pub price_mode: String,
    /// The SFE's ISF (its identifier).
    pub isf: String,
    /// The SFE invoice number (`rn` on the e-MCF).
    pub number: String,
    /// CRT, CDT: currency code and rate for a foreign-currency invoice.
    /// \[assumed meaning: the table names them only\]
    pub currency: Option<(String, Decimal)>,
}

/// One item (31h):
/// `name[LF code] TAB ITYPE,GRP RATE% AMOUNT TAB PRICE[*QTY][;T value,amt][TAB origPrice,modif]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Item name.
    pub name: String,
    /// Article code, printed under the name.
    pub code: Option<String>,
    /// Item type: BIE, SER or TAX.
    pub item_type: String,
    /// Tax group letter, A..P.
    pub group: char,
    /// The group's rate in percent.
    pub rate: Decimal,
    /// The line's tax amount.
    pub tax: Decimal,
    /// Unit price.
    pub price: Decimal,
    /// Quantity, 1 when absent.
    pub quantity: Option<Decimal>,
    /// Specific tax: its value and amount.
    pub specific_tax: Option<(Decimal, Decimal)>,
    /// Original price and the reason it was modified.
    pub original_price: Option<(Decimal, String)>,
}

/// A command to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// C1h: the device status (NIM, NIF, counters, last invoice, rates).
    Status,
    /// C2h: the state of the device's link with the DGI server.
    ServerLink,
    /// 2Bh: one taxpayer field.
    Taxpayer(TaxpayerField),
    /// C3h: the invoice's client.
    Client(ClientInfo),
    /// C0h: open an invoice.
    OpenInvoice(OpenInvoice),
    /// 31h: one item.
    Item(Item),
    /// 36h: a comment on line `A`..`H`.
    Comment {
        /// Line letter A..H.
        line: char,
        /// Its text.
        text: String,
    },
    /// 33h: subtotal; the reply carries the device's totals per group.
    Subtotal,
    /// 35h: one payment, `{code}{amount}`.
    Payment {
        /// Payment mode code (assumed one letter, e.g. `E` cash).
        code: String,
        /// Amount paid.
        amount: Decimal,
    },
    /// 38h: finalize with the SFE's total and VAT for the device to check;
    /// the reply is the [`FinalizeResult`].
    Finalize {
        /// Total, taxes included.
        ttc: Decimal,
        /// VAT.
        vat: Decimal,
    },
    /// 38h with `C`: cancel the open invoice.
    Cancel,
}

/// Fields joined by commas, in order.
fn join(fields: &[&str]) -> String {
    fields.join(",")
}

impl Command {
    /// The command byte.
    #[must_use]
    pub fn code(&self) -> u8 {
        match self {
            Self::Status => CMD_STATUS,
            Self::ServerLink => CMD_SERVER_LINK,
            Self::Taxpayer(_) => CMD_TAXPAYER,
            Self::Client(_) => CMD_CLIENT,
            Self::OpenInvoice(_) => CMD_OPEN_INVOICE,
            Self::Item(_) => CMD_ITEM,
            Self::Comment { .. } => CMD_COMMENT,
            Self::Subtotal => CMD_SUBTOTAL,
            Self::Payment { .. } => CMD_PAYMENT,
            Self::Finalize { .. } | Self::Cancel => CMD_FINALIZE,
        }
    }

    /// The data bytes.
    #[must_use]
    pub fn data(&self) -> Vec<u8> {
        let text = match self {
            Self::Status | Self::ServerLink | Self::Subtotal => String::new(),
            Self::Taxpayer(f) => f.key(),
            Self::Client(c) => join(&[
                &c.kind, &c.nif, &c.name, &c.address, &c.contact, &c.email, &c.rccm,
            ]),
            Self::OpenInvoice(o) => {
                let mut s = join(&[&o.operator_id, &o.operator_name, &o.nif, &o.invoice_type]);
                if let Some((nature, reference)) = &o.credit_note {
                    let _ = write!(s, ",{nature},{reference}");
                }
                let _ = write!(s, ",{},{},{}", o.price_mode, o.isf, o.number);
                if let Some((code, rate)) = &o.currency {
                    let _ = write!(s, ",{code},{rate}");
                }
                s
            }
            Self::Item(i) => {
                let mut s = i.name.clone();
                if let Some(code) = &i.code {
                    let _ = write!(s, "\n{code}");
                }
                let _ = write!(
                    s,
                    "\t{},{} {}% {}\t{}",
                    i.item_type,
                    i.group,
                    i.rate.normalize(),
                    amount(i.tax),
                    amount(i.price)
                );
                if let Some(q) = i.quantity {
                    let _ = write!(s, "*{}", quantity(q));
                }
                if let Some((value, amt)) = i.specific_tax {
                    let _ = write!(s, ";T {},{}", amount(value), amount(amt));
                }
                if let Some((orig, why)) = &i.original_price {
                    let _ = write!(s, "\t{},{why}", amount(*orig));
                }
                s
            }
            Self::Comment { line, text } => format!("{line},{text}"),
            Self::Payment { code, amount: a } => format!("{code}{}", amount(*a)),
            Self::Finalize { ttc, vat } => format!("{},{}", amount(*ttc), amount(*vat)),
            Self::Cancel => "C".into(),
        };
        text.into_bytes()
    }

    /// The frame of this command under `seq`.
    #[must_use]
    pub fn frame(&self, seq: u8) -> Frame {
        Frame::new(seq, self.code(), self.data())
    }
}

/// What the device answered to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// `R:`: done, with the reply's fields.
    Result(Vec<String>),
    /// `P:`: accepted, the result comes later.
    Pending,
    /// `E:`: refused.
    Error {
        /// The device's error code.
        code: String,
        /// Its message, possibly empty.
        message: String,
    },
}

/// A reply's data that is none of `R:`, `P:` or `E:`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("reply data is not R:, P: or E: ({shown})")]
pub struct UnknownReply {
    /// The start of the data, lossily decoded.
    pub shown: String,
}

impl Reply {
    /// Reads a reply frame's data.
    ///
    /// # Errors
    /// [`UnknownReply`] when the data has no known prefix.
    pub fn parse(data: &[u8]) -> Result<Self, UnknownReply> {
        let text = String::from_utf8_lossy(data);
        if let Some(rest) = text.strip_prefix("R:") {
            let fields = if rest.is_empty() {
                Vec::new()
            } else {
                rest.split(',').map(str::to_owned).collect()
            };
            return Ok(Self::Result(fields));
        }
        if text.starts_with("P:") {
            return Ok(Self::Pending);
        }
        if let Some(rest) = text.strip_prefix("E:") {
            let (code, message) = rest.split_once(',').unwrap_or((rest, ""));
            return Ok(Self::Error {
                code: code.to_owned(),
                message: message.to_owned(),
            });
        }
        Err(UnknownReply {
            shown: text.chars().take(32).collect(),
        })
    }

    /// The data bytes of this reply (the device's side).
    #[must_use]
    pub fn to_data(&self) -> Vec<u8> {
        match self {
            Self::Result(f) => format!("R:{}", f.join(",")),
            Self::Pending => "P:".into(),
            Self::Error { code, message } if message.is_empty() => format!("E:{code}"),
            Self::Error { code, message } => format!("E:{code},{message}"),
        }
        .into_bytes()
    }
}

/// The 38h result, `R:FC,TC,FT,DT,MID,NIF,FN,SIG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizeResult {
    /// FC: the per-type counter.
    pub fc: String,
    /// TC: the total counter.
    pub tc: String,
    /// FT: the invoice type (FV, FA, …).
    pub ft: String,
    /// DT: the device's time, `yyyyMMddHHmmss`.
    pub dt: String,
    /// MID: the device id (NIM).
    pub mid: String,
    /// NIF of the seller.
    pub nif: String,
    /// FN: the SFE invoice number, echoed.
    pub fn_: String,
    /// SIG: the Code DEF/DGI (24 characters).
    pub sig: String,
}

/// A 38h result without its eight fields.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the finalize reply has {found} fields, 8 expected (FC,TC,FT,DT,MID,NIF,FN,SIG)")]
pub struct MalformedFinalize {
    /// Fields found.
    pub found: usize,
}

impl FinalizeResult {
    /// Reads the eight fields of a 38h `R:` reply.
    ///
    /// # Errors
    /// [`MalformedFinalize`] unless there are exactly eight, none empty.
    pub fn from_fields(fields: &[String]) -> Result<Self, MalformedFinalize> {
        let bad = MalformedFinalize {
            found: fields.len(),
        };
        let [fc, tc, ft, dt, mid, nif, fn_, sig] = fields else {
            return Err(bad);
        };
        if [fc, tc, ft, dt, mid, sig]
            .iter()
            .any(|f| f.trim().is_empty())
        {
            return Err(bad);
        }
        Ok(Self {
            fc: fc.clone(),
            tc: tc.clone(),
            ft: ft.clone(),
            dt: dt.clone(),
            mid: mid.clone(),
            nif: nif.clone(),
            fn_: fn_.clone(),
            sig: sig.clone(),
        })
    }

    /// The fields in reply order (the device's side).
    #[must_use]
    pub fn to_fields(&self) -> Vec<String> {
        vec![
            self.fc.clone(),
            self.tc.clone(),
            self.ft.clone(),
            self.dt.clone(),
            self.mid.clone(),
            self.nif.clone(),
            self.fn_.clone(),
            self.sig.clone(),
        ]
    }

    /// The QR text, `RDCDEF01;{MID};{SIG};{NIF};{DT}` (spec §2, "PROTOCOLE
    /// MCF-SFE" as two DRC integrations cite it).
    #[must_use]
    pub fn qr_code(&self) -> String {
        format!(
            "RDCDEF01;{};{};{};{}",
            self.mid, self.sig, self.nif, self.dt
        )
    }

    /// The same security elements the e-MCF returns, so an MCF-certified
    /// invoice is recorded like an e-MCF one (spec §2 table, column "MCF
    /// 38h field"): `codeDEFDGI` = SIG, `counters` = `"FC/TC FT"`, `nim` =
    /// MID, `dateTime` = DT as the device wrote it, `qrCode` built above.
    #[must_use]
    pub fn dgi_elements(&self) -> DgiElements {
        DgiElements {
            code_def_dgi: self.sig.clone(),
            counters: format!("{}/{} {}", self.fc, self.tc, self.ft),
            nim: self.mid.clone(),
            date_time: self.dt.clone(),
            qr_code: self.qr_code(),
        }
    }
}

/// How long a [`Session`] bears with the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Resends of one frame (NAK or a damaged reply) before giving up.
    pub max_resends: u32,
    /// SYN and `P:` signals tolerated while waiting for one reply.
    pub max_busy: u32,
}

impl Default for Limits {
    /// 3 resends and 200 busy signals (at the device's pace of one SYN per
    /// ~60 ms in the Datecs family this is some 12 s of printing).
    fn default() -> Self {
        Self {
            max_resends: 3,
            max_busy: 200,
        }
    }
}

/// Why a session stopped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The device refused a command (`E:`); the invoice is still open on
    /// it unless the command was the finalize.
    #[error("the device refused command {cmd:#04x}: E:{code} {message}")]
    DeviceError {
        /// The command byte.
        cmd: u8,
        /// The device's code.
        code: String,
        /// Its message.
        message: String,
    },
    /// NAKs or damaged replies past [`Limits::max_resends`].
    #[error("command {cmd:#04x} was not received intact after {resends} resends")]
    TooManyResends {
        /// The command byte.
        cmd: u8,
        /// Resends made.
        resends: u32,
    },
    /// SYN or `P:` past [`Limits::max_busy`].
    #[error("the device stayed busy on command {cmd:#04x}")]
    Busy {
        /// The command byte.
        cmd: u8,
    },
    /// A reply frame whose data is not a reply.
    #[error(transparent)]
    UnknownReply(#[from] UnknownReply),
    /// The 38h reply is not the eight fields.
    #[error(transparent)]
    MalformedFinalize(#[from] MalformedFinalize),
    /// A command's data is too long for one frame.
    #[error("command {cmd:#04x} does not fit in a frame: {source}")]
    Unencodable {
        /// The command byte.
        cmd: u8,
        /// Why.
        source: FrameError,
    },
    /// Events were given to a session that had finished.
    #[error("the session is over")]
    Finished,
}

/// What the session wants after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Write these bytes (a new command or a resend), then read.
    Write(Vec<u8>),
    /// Keep reading.
    Wait,
    /// All commands answered: the `R:` fields of each, in order.
    Done(Vec<Vec<String>>),
}

/// The protocol logic of one run of commands, without I/O: give it the
/// line's events, it says what to write. A driver
/// ([`super::link::McfClient`]) only moves bytes and keeps time.
#[derive(Debug, Clone)]
pub struct Session {
    commands: Vec<Command>,
    index: usize,
    seq: u8,
    current: Vec<u8>,
    resends: u32,
    busy: u32,
    results: Vec<Vec<String>>,
    limits: Limits,
    finished: bool,
}

impl Session {
    /// A session over `commands`, numbering frames from `seq` on.
    #[must_use]
    pub fn new(commands: Vec<Command>, seq: u8, limits: Limits) -> Self {
        Self {
            commands,
            index: 0,
            seq,
            current: Vec::new(),
            resends: 0,
            busy: 0,
            results: Vec::new(),
            limits,
            finished: false,
        }
    }

    /// The sequence number the next session should start from.
    #[must_use]
    pub fn next_seq(&self) -> u8 {
        self.seq
    }

    /// The command awaiting its reply, if any.
    #[must_use]
    pub fn current_command(&self) -> Option<&Command> {
        self.commands.get(self.index)
    }

    /// Starts: the first frame to write (or `Done` for no commands).
    ///
    /// # Errors
    /// [`SessionError::Unencodable`] when the command does not fit a frame.
    pub fn start(&mut self) -> Result<Step, SessionError> {
        self.send_current()
    }

    fn send_current(&mut self) -> Result<Step, SessionError> {
        let Some(cmd) = self.commands.get(self.index) else {
            self.finished = true;
            return Ok(Step::Done(std::mem::take(&mut self.results)));
        };
        let code = cmd.code();
        self.current = match cmd.frame(self.seq).encode() {
            Ok(bytes) => bytes,
            Err(source) => return self.fail(SessionError::Unencodable { cmd: code, source }),
        };
        self.resends = 0;
        self.busy = 0;
        Ok(Step::Write(self.current.clone()))
    }

    /// Ends the session; the next one starts at a fresh SEQ, so the device
    /// never takes its first frame for a repeat of this one's last.
    fn fail(&mut self, e: SessionError) -> Result<Step, SessionError> {
        self.finished = true;
        self.seq = next_seq(self.seq);
        Err(e)
    }

    fn cmd(&self) -> u8 {
        self.commands.get(self.index).map_or(0, Command::code)
    }

    fn resend(&mut self) -> Result<Step, SessionError> {
        if self.resends >= self.limits.max_resends {
            let e = SessionError::TooManyResends {
                cmd: self.cmd(),
                resends: self.resends,
            };
            return self.fail(e);
        }
        self.resends = self.resends.saturating_add(1);
        Ok(Step::Write(self.current.clone()))
    }

    fn busy(&mut self) -> Result<Step, SessionError> {
        self.busy = self.busy.saturating_add(1);
        if self.busy > self.limits.max_busy {
            let e = SessionError::Busy { cmd: self.cmd() };
            return self.fail(e);
        }
        Ok(Step::Wait)
    }

    /// One decoded event (or decode error) from the line.
    ///
    /// # Errors
    /// [`SessionError`] when the run cannot go on; the session is then over.
    pub fn on_event(&mut self, event: Result<Event, FrameError>) -> Result<Step, SessionError> {
        if self.finished {
            return Err(SessionError::Finished);
        }
        match event {
            // A damaged reply: ask again, same SEQ.
            Err(_) | Ok(Event::Nak) => self.resend(),
            Ok(Event::Syn) => self.busy(),
            Ok(Event::Frame(f)) => {
                if f.seq != self.seq || f.cmd != self.cmd() {
                    // A stale reply to an earlier frame: not ours.
                    return Ok(Step::Wait);
                }
                match Reply::parse(&f.data) {
                    Err(e) => self.fail(e.into()),
                    Ok(Reply::Pending) => self.busy(),
                    Ok(Reply::Error { code, message }) => self.fail(SessionError::DeviceError {
                        cmd: f.cmd,
                        code,
                        message,
                    }),
                    Ok(Reply::Result(fields)) => {
                        if matches!(
                            self.commands.get(self.index),
                            Some(Command::Finalize { .. })
                        ) && let Err(e) = FinalizeResult::from_fields(&fields)
                        {
                            return self.fail(e.into());
                        }
                        self.results.push(fields);
                        self.index = self.index.saturating_add(1);
                        self.seq = next_seq(self.seq);
                        self.send_current()
                    }
                }
            }
        }
    }
}
