//! The line to a physical MCF over a serial port (feature `serial`): the
//! `serialport` crate, without its `libudev` default (only enumeration
//! needs it), at the protocol's 115200 baud, 8 data bits, no parity, one
//! stop bit, no flow control (`dgi-emcf.md` §4).
//!
//! A pseudo-terminal opens the same way, which is how the tests and
//! `bonopay mcf-sim` exercise this very code.

use std::io::{self, Read, Write};
use std::time::Duration;

use serialport::{DataBits, FlowControl, Parity, SerialPort, StopBits, TTYPort};

use super::link::McfLink;

/// The protocol's line speed.
pub const DEFAULT_BAUD: u32 = 115_200;

/// A serial port as an [`McfLink`].
#[derive(Debug)]
pub struct SerialLink {
    port: TTYPort,
}

impl SerialLink {
    /// Opens `path` (e.g. `/dev/ttyUSB0`) at `baud`, 8N1, no flow control,
    /// for exclusive use.
    ///
    /// # Errors
    /// The port's, as an I/O error (missing device, busy, permissions).
    pub fn open(path: &str, baud: u32) -> io::Result<Self> {
        let port = serialport::new(path, baud)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None)
            .timeout(Duration::from_secs(1))
            .open_native()
            .map_err(io::Error::from)?;
        Ok(Self { port })
    }
}

impl McfLink for SerialLink {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.port.write_all(bytes)?;
        self.port.flush()
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.port
            .set_timeout(timeout.max(Duration::from_millis(1)))
            .map_err(io::Error::from)?;
        match self.port.read(buf) {
            // A pty whose device side closed reads EIO: the line is gone.
            Err(e) if e.raw_os_error() == Some(5) => Ok(0),
            other => other,
        }
    }
}
