//! The `mcf_frame` property: the physical MCF's serial frame decoder
//! (`bonopay_sync::mcf::frame`), fed whatever the line may carry.
//!
//! 1. Nothing panics, fed whole or byte by byte; every refusal is a typed
//!    `FrameError`;
//! 2. both feedings give the same events;
//! 3. every frame decoded encodes back to bytes that decode to itself.
//!
//! Compiled twice, like every property here (fuzz crate and stable replay).

use bonopay_sync::mcf::frame::{Decoder, Event, FrameError, decode_all};

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Intact frames decoded.
    pub frames: usize,
    /// Lone NAK and SYN bytes.
    pub controls: usize,
    /// Typed errors (damaged or cut frames).
    pub errors: Vec<FrameError>,
}

/// Checks the property on `data`; panics on a violation.
#[must_use]
pub fn check(data: &[u8]) -> Outcome {
    let whole = decode_all(data);
    let mut d = Decoder::new();
    let mut bytewise = Vec::new();
    for b in data {
        d.feed(std::slice::from_ref(b));
        while let Some(ev) = d.next_event() {
            bytewise.push(ev);
        }
    }
    if let Err(e) = d.finish() {
        bytewise.push(Err(e));
    }
    assert_eq!(whole, bytewise, "whole and byte-by-byte feeding differ");
    let mut out = Outcome {
        frames: 0,
        controls: 0,
        errors: Vec::new(),
    };
    for ev in whole {
        match ev {
            Ok(Event::Frame(f)) => {
                let bytes = f.encode().expect("a decoded frame encodes");
                assert_eq!(decode_all(&bytes), vec![Ok(Event::Frame(f))]);
                out.frames += 1;
            }
            Ok(Event::Nak | Event::Syn) => out.controls += 1,
            Err(e) => out.errors.push(e),
        }
    }
    out
}
