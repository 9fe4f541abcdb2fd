//! Certification through the physical MCF, end to end in one process: real
//! sealed invoices mapped as for the e-MCF, the certifier driving the
//! simulated device over a real pseudo-terminal opened as a serial port
//! (`serialport`, 115200 8N1), and each fault the device can inject.
//!
//! What every test checks, whatever broke: an invoice is finalized on the
//! device at most once (the fiscal memory's TC counts distinct invoices),
//! and none is lost (a retry returns the first finalize's elements).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bonopay_core::parse_invoice;
use bonopay_ledger::{LedgerStore, MemoryStore};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, ManualClock, SoftwareSigner};
use bonopay_sync::dgi::{DgiInvoiceRequest, DgiTotals, map_sealed};
use bonopay_sync::mcf::certifier::{CertifyError, DeviceCertifier, McfCertifier};
use bonopay_sync::mcf::command::{CMD_FINALIZE, CMD_ITEM, Limits};
use bonopay_sync::mcf::serial::{DEFAULT_BAUD, SerialLink};
use bonopay_sync::mcf::sim::pty::Pty;
use bonopay_sync::mcf::sim::{Faults, FiscalMemory, ServeEnd, SimConfig, host};
use serde_json::json;

const NIM: &str = "DEF0100001";

/// A device hosted on a pseudo-terminal for the whole test.
struct Desk {
    slave: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<ServeEnd>>>,
    state: std::path::PathBuf,
}

impl Desk {
    fn start(dir: &Path, faults: Faults) -> Self {
        let config = SimConfig {
            nim: NIM.into(),
            nif: "A1309334L".into(),
            secret: b"device secret".to_vec(),
            state_path: dir.join("fiscal-memory.json"),
            faults,
        };
        let Pty {
            mut master,
            slave_path,
        } = Pty::open().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut ends = Vec::new();
            host(&config, &mut master, &s, &mut |e| ends.push(e)).unwrap();
            ends
        });
        Self {
            slave: slave_path.to_string_lossy().into_owned(),
            stop,
            thread: Some(thread),
            state: dir.join("fiscal-memory.json"),
        }
    }

    fn certifier(&self, dir: &Path) -> McfCertifier {
        let path = self.slave.clone();
        McfCertifier::new(
            Box::new(move || {
                Ok(Box::new(SerialLink::open(&path, DEFAULT_BAUD)?)
                    as Box<dyn bonopay_sync::mcf::link::McfLink>)
            }),
            dir.join("mcf-journal.json"),
            bonopay_tax::RateTable::dgi_2025().invoiced_rates(),
        )
        .unwrap()
        .with_read_timeout(Duration::from_millis(400))
        .with_limits(Limits {
            max_resends: 3,
            max_busy: 400,
        })
    }

    fn memory(&self) -> FiscalMemory {
        FiscalMemory::load(&self.state, NIM).unwrap()
    }

    fn stop(mut self) -> Vec<ServeEnd> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn invoices(n: usize) -> Vec<(DgiInvoiceRequest, DgiTotals)> {
    let ledger: Arc<dyn LedgerStore> = Arc::new(MemoryStore::new());
    let mut config = FiscalizerConfig::new("NID-TEST");
    config.isf = Some("ISF-TEST-01".into());
    let f = Fiscalizer::with_clock(
        ledger,
        Arc::new(SoftwareSigner::generate().unwrap()),
        Arc::new(ManualClock::new(1_800_000_000_000)),
        config,
    );
    (0..n)
        .map(|i| {
            let qty = format!("{}", i + 1);
            let request = json!({
                "merchant_nif": "A1309334L", "outlet_id": "kin-gombe-01", "pos_terminal_id": "till-1",
                "cashier": {"id": "c-07", "name": "Mbuyi"}, "invoice_type": "FV", "price_mode": "TTC",
                "client": {"type": "PP", "name": "Client, comptoir"},
                "items": [
                    {"code": "CIM", "kind": "BIE", "name": "Ciment 50 kg", "unit_price": "116",
                     "quantity": qty, "tax_group": "B"},
                    {"code": "PAIN", "kind": "BIE", "name": "Pain", "unit_price": "1500",
                     "quantity": "1", "tax_group": "A"}
                ],
                "payments": [{"method": "ESPECES", "amount": format!("{}", 116 * (i + 1) + 1500)}]
            });
            let sealed = f
                .seal(
                    &parse_invoice(&request.to_string()).unwrap(),
                    &format!("k{i}").parse().unwrap(),
                )
                .unwrap();
            map_sealed(&sealed.invoice).unwrap()
        })
        .collect()
}

/// Certifies until it succeeds (a fault makes the first calls fail).
fn certify_until_done(c: &McfCertifier, req: &DgiInvoiceRequest, t: &DgiTotals) -> String {
    for _ in 0..6 {
        match c.certify(req, t) {
            Ok(e) => return e.code_def_dgi,
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
    }
    panic!("not certified after 6 calls");
}

#[test]
fn invoices_are_certified_through_the_tty_and_a_retry_returns_the_same_elements() {
    let dir = tempfile::tempdir().unwrap();
    let desk = Desk::start(dir.path(), Faults::default());
    let c = desk.certifier(dir.path());
    let inv = invoices(3);
    let mut codes = Vec::new();
    for (req, t) in &inv {
        let e = c.certify(req, t).unwrap();
        assert_eq!(e.nim, NIM);
        assert_eq!(e.code_def_dgi.len(), 24);
        assert!(
            e.qr_code
                .starts_with(&format!("RDCDEF01;{NIM};{}", e.code_def_dgi))
        );
        e.check().unwrap();
        codes.push(e);
    }
    assert_eq!(codes[2].counters, "3/3 FV");
    // DT is the device's Kinshasa time, whatever the host's zone.
    let dt = chrono::NaiveDateTime::parse_from_str(&codes[2].date_time, "%Y%m%d%H%M%S").unwrap();
    let kinshasa = chrono::Utc::now()
        .with_timezone(&chrono_tz::Africa::Kinshasa)
        .naive_local();
    assert!(
        (kinshasa - dt).num_seconds().abs() < 120,
        "DT {dt} is not Kinshasa time ({kinshasa})"
    );
    // Asking again (a crash before the ledger write) finalizes nothing more.
    assert_eq!(c.certify(&inv[1].0, &inv[1].1).unwrap(), codes[1]);
    assert_eq!(c.recall(&inv[0].0).unwrap().as_ref(), Some(&codes[0]));
    // A new certifier over the same journal (a restarted server) too.
    let again = desk.certifier(dir.path());
    assert_eq!(again.certify(&inv[2].0, &inv[2].1).unwrap(), codes[2]);
    assert_eq!(desk.memory().tc, 3);
    assert_eq!(c.device_id().as_deref(), Some(NIM));
    desk.stop();
}

#[test]
fn nak_and_long_syn_are_absorbed() {
    for faults in [
        Faults {
            nak_on_frame: Some(2),
            ..Faults::default()
        },
        Faults {
            syn_before: Some((CMD_FINALIZE, 150)),
            ..Faults::default()
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let desk = Desk::start(dir.path(), faults.clone());
        let c = desk.certifier(dir.path());
        let inv = invoices(1);
        c.certify(&inv[0].0, &inv[0].1)
            .unwrap_or_else(|e| panic!("{faults:?}: {e}"));
        assert_eq!(desk.memory().tc, 1, "{faults:?}");
        desk.stop();
    }
}

#[test]
fn a_refusal_is_final_and_leaves_nothing_open() {
    let dir = tempfile::tempdir().unwrap();
    let desk = Desk::start(
        dir.path(),
        Faults {
            error_on: Some((CMD_ITEM, "7".into(), "article refusé".into())),
            ..Faults::default()
        },
    );
    let c = desk.certifier(dir.path());
    let inv = invoices(2);
    let e = c.certify(&inv[0].0, &inv[0].1).unwrap_err();
    assert!(matches!(e, CertifyError::Device(_)), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(desk.memory().tc, 0);
    assert_eq!(c.recall(&inv[0].0).unwrap(), None);
    desk.stop();
}

/// The line dropped at each frame of an invoice in turn: every time the
/// invoice ends up finalized exactly once, and the next one follows.
#[test]
fn a_line_drop_at_every_command_finalizes_once_and_loses_nothing() {
    let inv = invoices(2);
    // Frames of one invoice: C0h, C3h, two 31h, 33h, 35h, 38h.
    let frames = 7;
    for k in 1..=frames {
        let dir = tempfile::tempdir().unwrap();
        let desk = Desk::start(
            dir.path(),
            Faults {
                drop_on_frame: Some(k),
                ..Faults::default()
            },
        );
        let c = desk.certifier(dir.path());
        let first = certify_until_done(&c, &inv[0].0, &inv[0].1);
        let second = certify_until_done(&c, &inv[1].0, &inv[1].1);
        assert_ne!(first, second);
        let memory = desk.memory();
        assert_eq!(memory.tc, 2, "drop at frame {k}: {memory:?}");
        assert_eq!(c.certify(&inv[0].0, &inv[0].1).unwrap().code_def_dgi, first);
        let ends = desk.stop();
        assert!(
            ends.contains(&ServeEnd::HungUp),
            "drop at frame {k}: {ends:?}"
        );
    }
}

#[test]
fn a_power_cut_after_finalize_is_recovered_from_the_status_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let desk = Desk::start(
        dir.path(),
        Faults {
            power_cycle_after_finalize: true,
            ..Faults::default()
        },
    );
    let c = desk.certifier(dir.path());
    let inv = invoices(2);
    // The 38h answer is lost; the certifier asks the restarted device.
    let code = certify_until_done(&c, &inv[0].0, &inv[0].1);
    assert_eq!(desk.memory().tc, 1, "finalized once");
    let last = desk.memory().last.unwrap();
    assert_eq!(last.sig, code, "the elements are the device's own");
    assert_eq!(last.number, inv[0].0.rn);
    certify_until_done(&c, &inv[1].0, &inv[1].1);
    assert_eq!(desk.memory().tc, 2);
    let ends = desk.stop();
    assert!(ends.contains(&ServeEnd::PowerCycled), "{ends:?}");
}
