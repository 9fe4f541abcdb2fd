//! Running a [`Session`] over a real line: the [`McfLink`] byte pipe and
//! the [`McfClient`] driver, which only moves bytes and keeps time.
//!
//! A read that times out ends the run with [`McfError::Timeout`]; the
//! driver does not resend on silence, because after a power cut the device
//! has lost its memory of the last SEQ and a resent 38h would be refused
//! although the invoice *was* finalized. The caller recovers instead with
//! [`McfClient::status`] (C1h), which reports the last invoice.

use std::fmt::Debug;
use std::io;
use std::time::Duration;

use thiserror::Error;

use super::command::{Command, FinalizeResult, Limits, Session, SessionError, Step};
use super::frame::{Decoder, SEQ_FIRST};

/// A byte pipe to the device: a serial port, a pseudo-terminal, a socket.
/// Synchronous and object-safe, like the crate's other transports.
pub trait McfLink: Debug + Send {
    /// Writes every byte (and flushes).
    ///
    /// # Errors
    /// The line's I/O error.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Reads what is there, waiting at most `timeout` for the first byte.
    /// `Ok(0)` means the line is closed.
    ///
    /// # Errors
    /// [`io::ErrorKind::TimedOut`] or [`io::ErrorKind::WouldBlock`] when
    /// nothing came in time; any other error is a broken line.
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
}

impl<L: McfLink + ?Sized> McfLink for Box<L> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).write_all(bytes)
    }
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        (**self).read(buf, timeout)
    }
}

/// A Unix socket as a link (tests, and devices behind a socket bridge).
#[cfg(unix)]
impl McfLink for std::os::unix::net::UnixStream {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        io::Write::write_all(self, bytes)?;
        io::Write::flush(self)
    }
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        io::Read::read(self, buf)
    }
}

/// Why a run of commands on the device failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum McfError {
    /// No byte came within the read timeout. The command may or may not
    /// have been executed: ask [`McfClient::status`] before retrying.
    #[error("no answer from the MCF to command {cmd:#04x} within {waited:?}")]
    Timeout {
        /// The command byte.
        cmd: u8,
        /// The read timeout.
        waited: Duration,
    },
    /// The line closed or failed (cable pulled, device off, port gone).
    #[error("the line to the MCF dropped: {kind:?}: {message}")]
    LineDropped {
        /// The I/O error's kind.
        kind: io::ErrorKind,
        /// Its text.
        message: String,
    },
    /// The device refused a command (`E:`).
    #[error("the MCF refused command {cmd:#04x}: E:{code} {message}")]
    DeviceError {
        /// The command byte.
        cmd: u8,
        /// The device's error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The device stayed busy (SYN or `P:`) past the limit.
    #[error("the MCF stayed busy on command {cmd:#04x}")]
    Busy {
        /// The command byte.
        cmd: u8,
    },
    /// The exchange broke the protocol (damaged frames past the resend
    /// limit, an unreadable reply).
    #[error("MCF protocol failure: {0}")]
    Protocol(SessionError),
    /// [`McfClient::certify`] was given commands that do not end with a
    /// finalize (38h with totals).
    #[error("the commands do not end with a finalize")]
    NoFinalize,
}

impl McfError {
    /// Whether trying again may succeed: line trouble and a busy device,
    /// yes (after a status check, see [`McfError::Timeout`]); a refusal
    /// or a malformed reply, no.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::LineDropped { .. } | Self::Busy { .. } => true,
            Self::Protocol(e) => matches!(e, SessionError::TooManyResends { .. }),
            Self::DeviceError { .. } | Self::NoFinalize => false,
        }
    }

    fn line(e: &io::Error) -> Self {
        Self::LineDropped {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl From<SessionError> for McfError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::DeviceError { cmd, code, message } => {
                Self::DeviceError { cmd, code, message }
            }
            SessionError::Busy { cmd } => Self::Busy { cmd },
            other => Self::Protocol(other),
        }
    }
}

/// Drives sessions over a link: one invoice (or status query) at a time,
/// keeping the SEQ across runs.
#[derive(Debug)]
pub struct McfClient<L: McfLink> {
    link: L,
    decoder: Decoder,
    seq: u8,
    limits: Limits,
    read_timeout: Duration,
}

impl<L: McfLink> McfClient<L> {
    /// A client with default limits and a 2 s read timeout (the device
    /// sends SYN while busy, so silence that long means trouble).
    #[must_use]
    pub fn new(link: L) -> Self {
        Self {
            link,
            decoder: Decoder::new(),
            seq: SEQ_FIRST,
            limits: Limits::default(),
            read_timeout: Duration::from_secs(2),
        }
    }

    /// Sets the resend and busy limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets how long one read waits for a byte.
    #[must_use]
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Starts numbering at `seq` (e.g. to continue after a restart).
    #[must_use]
    pub fn with_seq(mut self, seq: u8) -> Self {
        self.seq = seq.max(SEQ_FIRST);
        self
    }

    /// The link, to close it or hand it on.
    pub fn into_inner(self) -> L {
        self.link
    }

    /// Runs `commands` in order; the `R:` fields of each.
    ///
    /// # Errors
    /// An [`McfError`]; the SEQ moves on either way.
    pub fn run(&mut self, commands: Vec<Command>) -> Result<Vec<Vec<String>>, McfError> {
        let mut session = Session::new(commands, self.seq, self.limits);
        let out = self.drive(&mut session);
        self.seq = session.next_seq();
        out
    }

    fn drive(&mut self, session: &mut Session) -> Result<Vec<Vec<String>>, McfError> {
        let mut buf = [0u8; 512];
        let mut step = session.start()?;
        loop {
            match step {
                Step::Write(bytes) => {
                    // Whatever was buffered answers an older frame.
                    self.decoder.clear();
                    self.link
                        .write_all(&bytes)
                        .map_err(|e| McfError::line(&e))?;
                }
                Step::Wait => {}
                Step::Done(results) => return Ok(results),
            }
            step = loop {
                if let Some(event) = self.decoder.next_event() {
                    break session.on_event(event)?;
                }
                match self.link.read(&mut buf, self.read_timeout) {
                    Ok(0) => {
                        return Err(McfError::LineDropped {
                            kind: io::ErrorKind::UnexpectedEof,
                            message: "the line closed".into(),
                        });
                    }
                    Ok(n) => self.decoder.feed(buf.get(..n).unwrap_or_default()),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                        ) =>
                    {
                        return Err(McfError::Timeout {
                            cmd: session.current_command().map_or(0, Command::code),
                            waited: self.read_timeout,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(McfError::line(&e)),
                }
            };
        }
    }

    /// C1h: the device's status fields
    /// (`NIM,NIF,DT,TC,FVcount,FAcount,lastDT,lastType,lastCode,…`).
    ///
    /// # Errors
    /// As [`McfClient::run`].
    pub fn status(&mut self) -> Result<Vec<String>, McfError> {
        Ok(self
            .run(vec![Command::Status])?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// Runs an invoice's commands (C0h … 38h) and returns the 38h result.
    ///
    /// # Errors
    /// [`McfError::NoFinalize`] unless the last command is a finalize;
    /// otherwise as [`McfClient::run`].
    pub fn certify(&mut self, commands: Vec<Command>) -> Result<FinalizeResult, McfError> {
        if !matches!(commands.last(), Some(Command::Finalize { .. })) {
            return Err(McfError::NoFinalize);
        }
        let results = self.run(commands)?;
        let last = results.last().map(Vec::as_slice).unwrap_or_default();
        FinalizeResult::from_fields(last).map_err(|e| McfError::Protocol(e.into()))
    }
}
