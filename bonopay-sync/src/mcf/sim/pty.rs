//! A pseudo-terminal for the simulator: the device holds the master side,
//! a client opens the slave path like a serial port (`/dev/pts/N`). Safe
//! rustix calls only (`openpt`, `grantpt`, `unlockpt`, `ptsname`, raw
//! `termios`, `poll`), as the crate forbids `unsafe`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};

use crate::mcf::link::McfLink;

/// Any file-like descriptor (a pty side, a tty) as an [`McfLink`], reads
/// bounded by `poll`.
#[derive(Debug)]
pub struct FdLink {
    file: File,
}

impl FdLink {
    /// Wraps an open file.
    #[must_use]
    pub fn new(file: File) -> Self {
        Self { file }
    }

    /// Opens a tty path (e.g. a pty slave) read-write, in raw mode.
    ///
    /// # Errors
    /// The open or termios call's.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        make_raw(&file)?;
        Ok(Self { file })
    }
}

fn make_raw(fd: impl AsFd) -> io::Result<()> {
    let mut t = tcgetattr(&fd)?;
    t.make_raw();
    tcsetattr(&fd, OptionalActions::Now, &t)?;
    Ok(())
}

impl McfLink for FdLink {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.flush()
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let ts = Timespec::try_from(timeout).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut fds = [PollFd::new(&self.file, PollFlags::IN)];
        let ready = poll(&mut fds, Some(&ts))?;
        if ready == 0 {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match self.file.read(buf) {
            // A pty whose other side closed reads EIO: the line is gone.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => Ok(0),
            other => other,
        }
    }
}

/// The master side of a fresh pseudo-terminal, and its slave's path.
#[derive(Debug)]
pub struct Pty {
    /// The device's side.
    pub master: FdLink,
    /// The path a client opens, printed by `bonopay mcf-sim`.
    pub slave_path: PathBuf,
}

impl Pty {
    /// Opens a pseudo-terminal in raw mode (no echo, no line editing:
    /// frames are binary).
    ///
    /// # Errors
    /// The pty calls'.
    pub fn open() -> io::Result<Self> {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let slave_path = PathBuf::from(name.to_string_lossy().into_owned());
        make_raw(&master)?;
        Ok(Self {
            master: FdLink::new(File::from(master)),
            slave_path,
        })
    }
}
