//! The MCF command layer and the sans-I/O session: command bytes, reply
//! parsing, the 38h result as DGI elements, and NAK / SYN / `E:` handling
//! without any port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bonopay_sync::mcf::command::{
    Command, FinalizeResult, Item, Limits, Reply, Session, SessionError, Step,
};
use bonopay_sync::mcf::frame::{Event, Frame, FrameError, decode_all};
use rust_decimal::Decimal;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn finalize_fields() -> Vec<String> {
    "12,40,FV,20261205143000,DEF0100001,A1234567B,2026-000012,ABCDEFGHIJKLMNOPQRSTUVWX"
        .split(',')
        .map(str::to_owned)
        .collect()
}

fn reply(seq: u8, cmd: u8, r: &Reply) -> Result<Event, FrameError> {
    Ok(Event::Frame(Frame::new(seq, cmd, r.to_data())))
}

fn written(step: Step) -> Frame {
    let Step::Write(bytes) = step else {
        panic!("expected a write, got {step:?}")
    };
    match decode_all(&bytes).pop().unwrap().unwrap() {
        Event::Frame(f) => f,
        other => panic!("{other:?}"),
    }
}

#[test]
fn command_data_follows_the_table() {
    let item = Command::Item(Item {
        name: "Ciment".into(),
        code: Some("1001".into()),
        item_type: "BIE".into(),
        group: 'B',
        rate: d("16"),
        tax: d("16"),
        price: d("100"),
        quantity: Some(d("1")),
        specific_tax: None,
        original_price: None,
    });
    assert_eq!(item.code(), 0x31);
    assert_eq!(
        item.data(),
        b"Ciment\n1001\tBIE,B 16% 16.00\t100.00*1.000".to_vec()
    );
    let fin = Command::Finalize {
        ttc: d("116"),
        vat: d("16.005"),
    };
    assert_eq!(fin.data(), b"116.00,16.01".to_vec());
    assert_eq!(Command::Cancel.data(), b"C".to_vec());
    assert_eq!(Command::Cancel.code(), 0x38);
    assert_eq!(
        Command::Payment {
            code: "E".into(),
            amount: d("116")
        }
        .data(),
        b"E116.00".to_vec()
    );
}

#[test]
fn replies_parse() {
    assert_eq!(
        Reply::parse(b"R:1,2").unwrap(),
        Reply::Result(vec!["1".into(), "2".into()])
    );
    assert_eq!(Reply::parse(b"P:").unwrap(), Reply::Pending);
    assert_eq!(
        Reply::parse(b"E:12,no open invoice").unwrap(),
        Reply::Error {
            code: "12".into(),
            message: "no open invoice".into()
        }
    );
    assert!(Reply::parse(b"X:").is_err());
}

#[test]
fn finalize_result_gives_dgi_elements() {
    let r = FinalizeResult::from_fields(&finalize_fields()).unwrap();
    let e = r.dgi_elements();
    assert_eq!(e.code_def_dgi, "ABCDEFGHIJKLMNOPQRSTUVWX");
    assert_eq!(e.counters, "12/40 FV");
    assert_eq!(e.nim, "DEF0100001");
    assert_eq!(e.date_time, "20261205143000");
    assert_eq!(
        e.qr_code,
        "RDCDEF01;DEF0100001;ABCDEFGHIJKLMNOPQRSTUVWX;A1234567B;20261205143000"
    );
    e.check().unwrap();
    assert!(FinalizeResult::from_fields(&finalize_fields()[..7]).is_err());
}

#[test]
fn session_runs_commands_with_nak_syn_and_pending() {
    let cmds = vec![
        Command::Subtotal,
        Command::Finalize {
            ttc: d("116"),
            vat: d("16"),
        },
    ];
    let mut s = Session::new(cmds, 0xFF, Limits::default());
    let f = written(s.start().unwrap());
    assert_eq!((f.seq, f.cmd), (0xFF, 0x33));
    // NAK: the same bytes again.
    let again = written(s.on_event(Ok(Event::Nak)).unwrap());
    assert_eq!(again, f);
    // A damaged reply: resend too.
    assert_eq!(
        written(
            s.on_event(Err(FrameError::BadBcc {
                computed: 1,
                received: 2
            }))
            .unwrap()
        ),
        f
    );
    assert_eq!(s.on_event(Ok(Event::Syn)).unwrap(), Step::Wait);
    assert_eq!(
        s.on_event(reply(0xFF, 0x33, &Reply::Pending)).unwrap(),
        Step::Wait
    );
    // A stale reply to another SEQ is ignored.
    assert_eq!(
        s.on_event(reply(0xFE, 0x33, &Reply::Result(vec![])))
            .unwrap(),
        Step::Wait
    );
    let fin = written(
        s.on_event(reply(0xFF, 0x33, &Reply::Result(vec!["116.00".into()])))
            .unwrap(),
    );
    assert_eq!((fin.seq, fin.cmd), (0x20, 0x38), "SEQ wraps to 0x20");
    let done = s
        .on_event(reply(0x20, 0x38, &Reply::Result(finalize_fields())))
        .unwrap();
    assert_eq!(
        done,
        Step::Done(vec![vec!["116.00".into()], finalize_fields()])
    );
    assert_eq!(s.next_seq(), 0x21);
    assert_eq!(s.on_event(Ok(Event::Syn)), Err(SessionError::Finished));
}

#[test]
fn session_limits_and_device_errors() {
    let limits = Limits {
        max_resends: 2,
        max_busy: 3,
    };
    let mut s = Session::new(vec![Command::Status], 0x20, limits);
    let _ = s.start().unwrap();
    let _ = s.on_event(Ok(Event::Nak)).unwrap();
    let _ = s.on_event(Ok(Event::Nak)).unwrap();
    assert_eq!(
        s.on_event(Ok(Event::Nak)),
        Err(SessionError::TooManyResends {
            cmd: 0xC1,
            resends: 2
        })
    );
    assert_eq!(s.next_seq(), 0x21, "a failed run still moves the SEQ on");

    let mut s = Session::new(vec![Command::Status], 0x20, limits);
    let _ = s.start().unwrap();
    for _ in 0..3 {
        assert_eq!(s.on_event(Ok(Event::Syn)).unwrap(), Step::Wait);
    }
    assert_eq!(
        s.on_event(Ok(Event::Syn)),
        Err(SessionError::Busy { cmd: 0xC1 })
    );

    let mut s = Session::new(vec![Command::Subtotal], 0x20, limits);
    let _ = s.start().unwrap();
    assert_eq!(
        s.on_event(reply(
            0x20,
            0x33,
            &Reply::Error {
                code: "7".into(),
                message: "no open invoice".into()
            }
        )),
        Err(SessionError::DeviceError {
            cmd: 0x33,
            code: "7".into(),
            message: "no open invoice".into()
        })
    );

    let mut s = Session::new(
        vec![Command::Finalize {
            ttc: d("1"),
            vat: d("0"),
        }],
        0x20,
        limits,
    );
    let _ = s.start().unwrap();
    assert!(matches!(
        s.on_event(reply(0x20, 0x38, &Reply::Result(vec!["1".into()]))),
        Err(SessionError::MalformedFinalize(_))
    ));
}
