//! Properties of the MCF serial frame (`bonopay_sync::mcf::frame`): every
//! valid frame round-trips, and no input, however broken or cut, panics
//! the decoder or yields anything but typed events and errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bonopay_sync::mcf::frame::{
    AMB, Decoder, ETX, Event, Frame, FrameError, MAX_DATA, NAK, SOH, SYN, bcc_digits, bcc_sum,
    decode_all, next_seq,
};
use proptest::prelude::*;

fn frame() -> impl Strategy<Value = Frame> {
    (
        0x20u8..=0xFF,
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..=MAX_DATA),
    )
        .prop_map(|(seq, cmd, data)| Frame { seq, cmd, data })
}

/// A known frame, computed by hand: status (C1h), SEQ 0x21, no data.
/// LEN = 0x20 + 4 = 0x24; sum 0x24+0x21+0xC1+0x05 = 0x10B.
#[test]
fn status_frame_matches_hand_computation() {
    let bytes = Frame::new(0x21, 0xC1, Vec::new()).encode().unwrap();
    assert_eq!(
        bytes,
        vec![SOH, 0x24, 0x21, 0xC1, AMB, 0x30, 0x31, 0x30, 0x3B, ETX]
    );
    assert_eq!(
        bcc_digits(bcc_sum(&[0x24, 0x21, 0xC1, 0x05])),
        [0x30, 0x31, 0x30, 0x3B]
    );
}

#[test]
fn seq_wraps_inside_0x20_0xff() {
    assert_eq!(next_seq(0x20), 0x21);
    assert_eq!(next_seq(0xFE), 0xFF);
    assert_eq!(next_seq(0xFF), 0x20);
    assert_eq!(next_seq(0x00), 0x20);
    let mut s = 0x20;
    for _ in 0..1000 {
        s = next_seq(s);
        assert!(s >= 0x20);
    }
}

#[test]
fn encode_refuses_what_cannot_be_sent() {
    assert_eq!(
        Frame::new(0x20, 0x31, vec![b'a'; MAX_DATA + 1]).encode(),
        Err(FrameError::DataTooLong { len: MAX_DATA + 1 })
    );
    assert_eq!(
        Frame::new(0x1F, 0x31, Vec::new()).encode(),
        Err(FrameError::SeqOutOfRange { seq: 0x1F })
    );
    assert!(
        Frame::new(0xFF, 0x31, vec![b'a'; MAX_DATA])
            .encode()
            .is_ok()
    );
}

#[test]
fn damaged_frames_give_typed_errors_then_resync() {
    let good = Frame::new(0x30, 0x38, b"R:1,2".to_vec()).encode().unwrap();
    let mut bad_bcc = good.clone();
    let n = bad_bcc.len();
    bad_bcc[n - 2] ^= 0x01;
    let mut stream = b"noise".to_vec();
    stream.extend_from_slice(&bad_bcc);
    stream.push(NAK);
    stream.push(SYN);
    stream.extend_from_slice(&good);
    let events = decode_all(&stream);
    assert!(
        matches!(events[0], Err(FrameError::BadBcc { .. })),
        "{events:?}"
    );
    assert!(events.contains(&Ok(Event::Nak)));
    assert!(events.contains(&Ok(Event::Syn)));
    assert_eq!(
        events.last().unwrap(),
        &Ok(Event::Frame(Frame::new(0x30, 0x38, b"R:1,2".to_vec())))
    );

    let mut no_etx = good.clone();
    *no_etx.last_mut().unwrap() = 0x04;
    assert!(matches!(
        decode_all(&no_etx)[0],
        Err(FrameError::MissingEtx { found: 0x04 })
    ));
    assert_eq!(
        decode_all(&[SOH, 0x23, 0x20])[0],
        Err(FrameError::LengthTooShort { len: 0x23 })
    );
    assert_eq!(
        decode_all(&good[..5]),
        vec![Err(FrameError::Truncated { have: 5 })]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_of_encode_is_identity(f in frame()) {
        let bytes = f.encode().unwrap();
        prop_assert_eq!(bytes.len(), f.data.len() + 10);
        prop_assert_eq!(decode_all(&bytes), vec![Ok(Event::Frame(f))]);
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_frames(fs in proptest::collection::vec(frame(), 1..4)) {
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for f in &fs {
            for b in f.encode().unwrap() {
                d.feed(&[b]);
                while let Some(ev) = d.next_event() {
                    got.push(ev.unwrap());
                }
            }
        }
        prop_assert_eq!(got, fs.into_iter().map(Event::Frame).collect::<Vec<_>>());
        prop_assert!(d.finish().is_ok());
    }

    #[test]
    fn garbage_before_a_frame_is_skipped(
        noise in proptest::collection::vec(any::<u8>().prop_filter("not a control", |b| ![SOH, NAK, SYN].contains(b)), 0..64),
        f in frame(),
    ) {
        let mut bytes = noise;
        bytes.extend_from_slice(&f.encode().unwrap());
        prop_assert_eq!(decode_all(&bytes), vec![Ok(Event::Frame(f))]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for ev in decode_all(&bytes) {
            if let Ok(Event::Frame(f)) = ev {
                // Whatever decodes is a frame that encodes.
                prop_assert!(f.encode().is_ok());
            }
        }
    }

    #[test]
    fn truncations_and_flips_yield_typed_errors(f in frame(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let bytes = f.encode().unwrap();
        let cut = cut.index(bytes.len());
        prop_assert_eq!(
            decode_all(&bytes[..cut]),
            if cut == 0 { vec![] } else { vec![Err(FrameError::Truncated { have: cut })] }
        );
        let mut flipped = bytes.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= 1 << bit;
        let events = decode_all(&flipped);
        // A single flipped bit never passes as the original frame with
        // different content: either the same frame or an error first.
        if let Some(Ok(Event::Frame(g))) = events.first() {
            prop_assert_eq!(g, &f);
        }
    }
}
