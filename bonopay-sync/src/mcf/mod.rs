//! The physical MCF (DGI fiscal device, "DEF") on a serial line.
//!
//! The protocol is `../shared/spec/dgi-emcf.md` §4 "DRC physical MCF,
//! serial protocol"; each module states what it follows and what it
//! assumes. Layers, each testable without the one below:
//!
//! | Module | Holds |
//! |---|---|
//! | [`frame`] | the byte frame (SOH … ETX, BCC), an incremental decoder; pure |
//! | [`command`] | typed commands and replies, the 38h result as DGI elements, and the sans-I/O [`command::Session`] (NAK, SYN, errors) |
//! | [`link`] | the [`link::McfLink`] byte pipe and the [`link::McfClient`] driver: read timeouts, typed [`link::McfError`]s |
//! | [`certifier`] | [`certifier::DeviceCertifier`]: an invoice as the device's commands, exactly once (journal, one invoice at a time, status before a retry) |
//! | `serial` (feature `serial`) | the line over a real serial port (`serialport`), 115200 8N1 |
//! | `sim` (feature `mcf-sim`) | a simulated device: fiscal memory on disk, fault injection, a pseudo-terminal |

pub mod certifier;
pub mod command;
pub mod frame;
pub mod link;
#[cfg(feature = "serial")]
pub mod serial;
#[cfg(feature = "mcf-sim")]
pub mod sim;

/// Replaces `path` atomically: a temporary file written and fsynced,
/// renamed over the old one, then the directory fsynced, so a power cut
/// leaves the old content or the new, never a mix. (The device's fiscal
/// memory in the simulator, and the certifier's journal.)
///
/// # Errors
/// The file system's.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
