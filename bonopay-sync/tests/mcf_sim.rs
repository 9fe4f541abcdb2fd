//! The real client against the simulated MCF over a real pseudo-terminal:
//! a whole invoice, then each injected fault (NAK, long SYN, `E:`, a
//! dropped line, a power cut after 38h with recovery through C1h), and
//! the fiscal memory across restarts.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use bonopay_sync::mcf::command::{Command, Item, OpenInvoice};
use bonopay_sync::mcf::link::{McfClient, McfError};
use bonopay_sync::mcf::sim::pty::{FdLink, Pty};
use bonopay_sync::mcf::sim::{Device, Faults, FiscalMemory, ServeEnd, SimConfig, serve};
use rust_decimal::Decimal;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn config(dir: &Path, faults: Faults) -> SimConfig {
    SimConfig {
        nim: "DEF0100001".into(),
        nif: "A1234567B".into(),
        secret: b"device secret".to_vec(),
        state_path: dir.join("fiscal-memory.json"),
        faults,
    }
}

/// Starts a device on a fresh pty; the client on its slave path.
fn start(dir: &Path, faults: Faults) -> (McfClient<FdLink>, JoinHandle<ServeEnd>, Arc<AtomicBool>) {
    let mut device = Device::new(config(dir, faults)).unwrap();
    let Pty {
        mut master,
        slave_path,
    } = Pty::open().unwrap();
    assert!(slave_path.starts_with("/dev/"), "{slave_path:?}");
    let client = McfClient::new(FdLink::open(&slave_path).unwrap())
        .with_read_timeout(Duration::from_millis(700));
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || serve(&mut device, &mut master, &s).unwrap());
    (client, handle, stop)
}

fn finish(handle: JoinHandle<ServeEnd>, stop: &AtomicBool) -> ServeEnd {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    handle.join().unwrap()
}

fn invoice(number: &str) -> Vec<Command> {
    vec![
        Command::OpenInvoice(OpenInvoice {
            operator_id: "1".into(),
            operator_name: "Caisse 1".into(),
            nif: "A1234567B".into(),
            invoice_type: "FV".into(),
            credit_note: None,
            price_mode: "TTC".into(),
            isf: "ISF01".into(),
            number: number.into(),
            currency: None,
        }),
        Command::Item(Item {
            name: "Ciment".into(),
            code: None,
            item_type: "BIE".into(),
            group: 'B',
            rate: d("16"),
            tax: d("32"),
            price: d("116"),
            quantity: Some(d("2")),
            specific_tax: None,
            original_price: None,
        }),
        Command::Subtotal,
        Command::Payment {
            code: "E".into(),
            amount: d("232"),
        },
        Command::Finalize {
            ttc: d("232"),
            vat: d("32"),
        },
    ]
}

#[test]
fn an_invoice_is_certified_and_counters_persist() {
    let dir = tempfile::tempdir().unwrap();
    let (mut client, handle, stop) = start(dir.path(), Faults::default());
    let r = client.certify(invoice("2026-000001")).unwrap();
    assert_eq!(
        (r.fc.as_str(), r.tc.as_str(), r.ft.as_str()),
        ("1", "1", "FV")
    );
    assert_eq!(r.sig.len(), 24);
    assert_eq!(r.dt.len(), 14);
    let e = r.dgi_elements();
    e.check().unwrap();
    assert_eq!(e.counters, "1/1 FV");
    assert!(e.qr_code.starts_with("RDCDEF01;DEF0100001;"));
    let r2 = client.certify(invoice("2026-000002")).unwrap();
    assert_eq!(r2.dgi_elements().counters, "2/2 FV");
    assert_ne!(r.sig, r2.sig);
    finish(handle, &stop);

    // A restart keeps the fiscal memory.
    let (mut client, handle, stop) = start(dir.path(), Faults::default());
    let status = client.status().unwrap();
    assert_eq!(status[0], "DEF0100001");
    assert_eq!(status[3], "2", "TC survives the restart: {status:?}");
    assert_eq!(status[8], r2.sig);
    let r3 = client.certify(invoice("2026-000003")).unwrap();
    assert_eq!(r3.dgi_elements().counters, "3/3 FV");
    finish(handle, &stop);
    let m = FiscalMemory::load(&dir.path().join("fiscal-memory.json"), "DEF0100001").unwrap();
    assert_eq!(m.tc, 3);
}

#[test]
fn nak_makes_the_client_resend() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        nak_on_frame: Some(2),
        ..Faults::default()
    };
    let (mut client, handle, stop) = start(dir.path(), faults);
    let r = client.certify(invoice("2026-000001")).unwrap();
    assert_eq!(r.dgi_elements().counters, "1/1 FV");
    finish(handle, &stop);
}

#[test]
fn a_long_syn_is_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        syn_before: Some((0x38, 150)),
        ..Faults::default()
    };
    let (mut client, handle, stop) = start(dir.path(), faults);
    let r = client.certify(invoice("2026-000001")).unwrap();
    assert_eq!(r.fc, "1");
    finish(handle, &stop);
}

#[test]
fn a_device_error_is_typed_and_not_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        error_on: Some((0x31, "5".into(), "item refused".into())),
        ..Faults::default()
    };
    let (mut client, handle, stop) = start(dir.path(), faults);
    let e = client.certify(invoice("2026-000001")).unwrap_err();
    assert_eq!(
        e,
        McfError::DeviceError {
            cmd: 0x31,
            code: "5".into(),
            message: "item refused".into()
        }
    );
    assert!(!e.is_retryable());
    // The invoice is still open on the device: cancel it.
    client.run(vec![Command::Cancel]).unwrap();
    finish(handle, &stop);
}

#[test]
fn a_dropped_line_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        drop_on_frame: Some(3),
        ..Faults::default()
    };
    let (mut client, handle, stop) = start(dir.path(), faults);
    let e = client.certify(invoice("2026-000001")).unwrap_err();
    assert_eq!(handle.join().unwrap(), ServeEnd::HungUp);
    drop(stop);
    assert!(
        matches!(e, McfError::LineDropped { .. } | McfError::Timeout { .. }),
        "{e:?}"
    );
    assert!(e.is_retryable());
}

#[test]
fn power_cut_after_finalize_is_recovered_through_status() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        power_cycle_after_finalize: true,
        ..Faults::default()
    };
    let (mut client, handle, _stop) = start(dir.path(), faults);
    let e = client.certify(invoice("2026-000007")).unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert_eq!(handle.join().unwrap(), ServeEnd::PowerCycled);

    // The device comes back with its fiscal memory; C1h shows the invoice.
    let (mut client, handle, stop) = start(dir.path(), Faults::default());
    let status = client.status().unwrap();
    assert_eq!(
        status[3], "1",
        "TC counts the finalized invoice: {status:?}"
    );
    assert_eq!(status[7], "FV");
    assert_eq!(status[8].len(), 24, "lastCode is the SIG");
    assert_eq!(status[9], "2026-000007", "lastNo is our invoice number");
    assert_eq!(status[10], "232.00");
    finish(handle, &stop);
}
