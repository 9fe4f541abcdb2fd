//! The byte frame of the physical MCF serial line, pure (no I/O, no clock),
//! so it builds for `wasm32-unknown-unknown` like the domain crates.
//!
//! ```text
//! SOH(01) LEN SEQ CMD DATA… AMB(05) BCC0 BCC1 BCC2 BCC3 ETX(03)
//! ```
//!
//! What this module follows, and from where (`../shared/spec/dgi-emcf.md`
//! §4 "DRC physical MCF, serial protocol", sources S4, S12, S13):
//!
//! - **LEN** is `0x20 +` the number of bytes from LEN through AMB inclusive
//!   (LEN, SEQ, CMD, DATA, AMB: `data.len() + 4`). This is how the Benin
//!   MCF library `scorp-gitcontainer/mecef` (`CoreEngine.V9.cs`,
//!   `buildMessage`: `3 + dataLen + 1 + 32`) builds it; the spec only says
//!   "offset by 0x20". One LEN byte therefore bounds DATA to
//!   [`MAX_DATA`] = 219 bytes.
//! - **SEQ** is sent as the wire byte, `0x20..=0xFF`, and wraps from `0xFF`
//!   back to `0x20` ([`next_seq`]).
//! - **BCC** is the 16-bit sum of the bytes from LEN through AMB inclusive,
//!   sent as four ASCII nibbles, most significant first, each `nibble +
//!   0x30` (same file, `calculateCheckSum(message, 1, dataLen + 4)`).
//! - **Replies** are assumed to use the same layout as requests (the
//!   library reads the device's answer up to AMB for the data and up to
//!   ETX for the end, with no status block in between). \[assumed\]
//! - A lone **NAK** (`0x15`) or **SYN** (`0x16`) between frames is an
//!   event of its own; inside a frame every byte is data (LEN, not a
//!   delimiter search, finds the end), so DATA may hold any byte.

use thiserror::Error;

/// Start of a frame.
pub const SOH: u8 = 0x01;
/// End of a frame.
pub const ETX: u8 = 0x03;
/// End of the data, before the BCC ("AMB" in the spec).
pub const AMB: u8 = 0x05;
/// Sent alone: the frame was not received intact, send it again.
pub const NAK: u8 = 0x15;
/// Sent alone: the device is busy, keep waiting for the reply.
pub const SYN: u8 = 0x16;
/// Offset added to LEN and the lowest SEQ on the wire.
pub const OFFSET: u8 = 0x20;
/// The first sequence number.
pub const SEQ_FIRST: u8 = 0x20;
/// The most DATA bytes one frame carries (LEN is one byte: `0xFF - 0x20 - 4`).
pub const MAX_DATA: usize = 0xFF - 0x20 - 4;
/// Bytes of a frame around its data: SOH, LEN, SEQ, CMD, AMB, 4×BCC, ETX.
pub const OVERHEAD: usize = 10;

/// One frame, request or reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The wire sequence number, `0x20..=0xFF`; a reply echoes its request's.
    pub seq: u8,
    /// The command byte (`0xC1` status, `0x38` finalize, …).
    pub cmd: u8,
    /// The command's data, at most [`MAX_DATA`] bytes.
    pub data: Vec<u8>,
}

/// Why bytes are not a frame, or a frame cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The data is longer than one LEN byte can announce.
    #[error("frame data of {len} bytes is over the {MAX_DATA}-byte limit")]
    DataTooLong {
        /// Its length.
        len: usize,
    },
    /// A sequence number under `0x20` (the wire offset).
    #[error("sequence number {seq:#04x} is under 0x20")]
    SeqOutOfRange {
        /// The number given or read.
        seq: u8,
    },
    /// LEN announces fewer bytes than an empty frame has.
    #[error("LEN byte {len:#04x} is under the minimum 0x24")]
    LengthTooShort {
        /// The LEN byte read.
        len: u8,
    },
    /// The byte where AMB belongs is something else.
    #[error("expected AMB (0x05) after the data, found {found:#04x}")]
    MissingAmb {
        /// The byte found.
        found: u8,
    },
    /// A BCC byte outside `0x30..=0x3F`.
    #[error("BCC byte {found:#04x} is not a nibble + 0x30")]
    BadBccDigit {
        /// The byte found.
        found: u8,
    },
    /// The checksum does not match the bytes: the frame was damaged.
    #[error("BCC mismatch: computed {computed:#06x}, frame says {received:#06x}")]
    BadBcc {
        /// Computed over LEN..=AMB.
        computed: u16,
        /// Read from the frame.
        received: u16,
    },
    /// The byte where ETX belongs is something else.
    #[error("expected ETX (0x03) at the end of the frame, found {found:#04x}")]
    MissingEtx {
        /// The byte found.
        found: u8,
    },
    /// The input ended inside a frame.
    #[error("input ended {have} bytes into a frame")]
    Truncated {
        /// Bytes of the frame that were there, SOH included.
        have: usize,
    },
}

/// The sequence number after `seq`: `0x20..=0xFF`, wrapping to `0x20`
/// (anything under `0x20` also restarts at `0x20`).
#[must_use]
pub const fn next_seq(seq: u8) -> u8 {
    if seq == 0xFF || seq < SEQ_FIRST {
        SEQ_FIRST
    } else {
        seq + 1
    }
}

/// The 16-bit sum of `bytes`, as the BCC is computed (wrapping, like the
/// reference's `int` truncated to 16 bits).
#[must_use]
pub fn bcc_sum(bytes: &[u8]) -> u16 {
    bytes
        .iter()
        .fold(0u16, |acc, b| acc.wrapping_add(u16::from(*b)))
}

/// The four BCC bytes of `sum`, most significant nibble first, each + 0x30.
#[must_use]
pub const fn bcc_digits(sum: u16) -> [u8; 4] {
    // Each value is masked to a nibble first, so `as u8` is exact.
    [
        ((sum >> 12) & 0x0F) as u8 + 0x30,
        ((sum >> 8) & 0x0F) as u8 + 0x30,
        ((sum >> 4) & 0x0F) as u8 + 0x30,
        (sum & 0x0F) as u8 + 0x30,
    ]
}

impl Frame {
    /// A frame; checked when encoded.
    #[must_use]
    pub fn new(seq: u8, cmd: u8, data: impl Into<Vec<u8>>) -> Self {
        Self {
            seq,
            cmd,
            data: data.into(),
        }
    }

    /// The bytes on the wire.
    ///
    /// # Errors
    /// [`FrameError::DataTooLong`] over [`MAX_DATA`] bytes,
    /// [`FrameError::SeqOutOfRange`] for a sequence number under `0x20`.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let len = self.data.len();
        if len > MAX_DATA {
            return Err(FrameError::DataTooLong { len });
        }
        if self.seq < SEQ_FIRST {
            return Err(FrameError::SeqOutOfRange { seq: self.seq });
        }
        let len_byte = u8::try_from(len + 4)
            .ok()
            .and_then(|n| n.checked_add(OFFSET))
            .ok_or(FrameError::DataTooLong { len })?;
        let mut out = Vec::with_capacity(len + OVERHEAD);
        out.push(SOH);
        out.push(len_byte);
        out.push(self.seq);
        out.push(self.cmd);
        out.extend_from_slice(&self.data);
        out.push(AMB);
        // LEN..=AMB is everything pushed after SOH.
        let sum = bcc_sum(out.get(1..).unwrap_or_default());
        out.extend_from_slice(&bcc_digits(sum));
        out.push(ETX);
        Ok(out)
    }
}

/// What the decoder found on the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An intact frame.
    Frame(Frame),
    /// A lone NAK: resend the last frame.
    Nak,
    /// A lone SYN: the device is busy, keep waiting.
    Syn,
}

/// Decodes one frame at the start of `bytes` (which must begin with SOH).
/// `Ok(None)` when more bytes are needed; on success, the frame and how
/// many bytes it took.
fn parse_at(bytes: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(&len_byte) = bytes.get(1) else {
        return Ok(None);
    };
    if len_byte < OFFSET + 4 {
        return Err(FrameError::LengthTooShort { len: len_byte });
    }
    // LEN..=AMB spans `body` bytes starting at index 1.
    let body = usize::from(len_byte - OFFSET);
    let total = 1 + body + 5;
    let Some(frame) = bytes.get(..total) else {
        return Ok(None);
    };
    let (head, tail) = frame.split_at(1 + body);
    let (Some(&seq), Some(&cmd), Some(&amb)) = (head.get(2), head.get(3), head.last()) else {
        return Ok(None);
    };
    if amb != AMB {
        return Err(FrameError::MissingAmb { found: amb });
    }
    let mut received: u16 = 0;
    for &d in tail.get(..4).unwrap_or_default() {
        if !(0x30..=0x3F).contains(&d) {
            return Err(FrameError::BadBccDigit { found: d });
        }
        received = (received << 4) | u16::from(d - 0x30);
    }
    let computed = bcc_sum(head.get(1..).unwrap_or_default());
    if computed != received {
        return Err(FrameError::BadBcc { computed, received });
    }
    let etx = tail.get(4).copied().unwrap_or_default();
    if etx != ETX {
        return Err(FrameError::MissingEtx { found: etx });
    }
    if seq < SEQ_FIRST {
        return Err(FrameError::SeqOutOfRange { seq });
    }
    let data = head.get(4..head.len() - 1).unwrap_or_default().to_vec();
    Ok(Some((Frame { seq, cmd, data }, total)))
}

/// Incremental decoder: feed whatever the line gave, take events out.
///
/// Bytes before an SOH that are neither NAK nor SYN are line noise and
/// are skipped (counted in [`Decoder::skipped`]). A damaged frame yields
/// its [`FrameError`] once, then decoding resumes at the byte after its
/// SOH, so a good frame right behind a false SOH is still found. The
/// buffer never holds more than one maximal frame plus what was fed.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    buf: Vec<u8>,
    skipped: u64,
}

impl Decoder {
    /// An empty decoder.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the line.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Noise bytes skipped so far.
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Bytes held, waiting for the rest of a frame.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Forgets everything buffered (after a resend, stale bytes must not
    /// be taken for the new reply).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The next event, `None` when more bytes are needed.
    ///
    /// # Errors
    /// A [`FrameError`] for a damaged frame (its SOH is then dropped).
    pub fn next_event(&mut self) -> Option<Result<Event, FrameError>> {
        loop {
            let first = *self.buf.first()?;
            match first {
                NAK => {
                    self.buf.remove(0);
                    return Some(Ok(Event::Nak));
                }
                SYN => {
                    self.buf.remove(0);
                    return Some(Ok(Event::Syn));
                }
                SOH => {
                    return match parse_at(&self.buf) {
                        Ok(None) => None,
                        Ok(Some((frame, used))) => {
                            self.buf.drain(..used);
                            Some(Ok(Event::Frame(frame)))
                        }
                        Err(e) => {
                            self.buf.remove(0);
                            Some(Err(e))
                        }
                    };
                }
                _ => {
                    let noise = self
                        .buf
                        .iter()
                        .position(|b| matches!(*b, SOH | NAK | SYN))
                        .unwrap_or(self.buf.len());
                    self.buf.drain(..noise);
                    self.skipped = self.skipped.saturating_add(noise as u64);
                }
            }
        }
    }

    /// At the end of the input: an error if a frame was cut off.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] when a partial frame is buffered.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        if self.buf.first() == Some(&SOH) {
            let have = self.buf.len();
            self.buf.clear();
            return Err(FrameError::Truncated { have });
        }
        self.buf.clear();
        Ok(())
    }
}

/// Every event in `bytes`, then [`Decoder::finish`]'s verdict: a
/// convenience for tests and fuzzing.
#[must_use]
pub fn decode_all(bytes: &[u8]) -> Vec<Result<Event, FrameError>> {
    let mut d = Decoder::new();
    d.feed(bytes);
    let mut out = Vec::new();
    while let Some(ev) = d.next_event() {
        out.push(ev);
    }
    if let Err(e) = d.finish() {
        out.push(Err(e));
    }
    out
}
