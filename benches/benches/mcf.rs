//! Certification through the simulated physical MCF: a 20-line invoice
//! through the certifier, the serial driver (`serialport` on a
//! pseudo-terminal) and the device simulator, each iteration a new sale.
//!
//! A pseudo-terminal moves bytes as fast as the kernel copies them, so two
//! figures are measured: `pty` (the line at memory speed: what the
//! software costs) and `paced_115200` (every byte held for the time 8N1
//! takes at 115200 baud, 10 bits per byte, in both directions, as on a
//! real cable). The bytes on the wire per invoice are counted in the same
//! run and printed with the bound they set: `115200 / 10 / bytes`
//! invoices per second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bonopay_core::parse_invoice;
use bonopay_ledger::{LedgerStore, MemoryStore};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, ManualClock, SoftwareSigner};
use bonopay_sync::dgi::{DgiInvoiceRequest, DgiTotals, map_sealed};
use bonopay_sync::mcf::certifier::{DeviceCertifier, McfCertifier};
use bonopay_sync::mcf::link::McfLink;
use bonopay_sync::mcf::serial::{DEFAULT_BAUD, SerialLink};
use bonopay_sync::mcf::sim::pty::Pty;
use bonopay_sync::mcf::sim::{Faults, SimConfig, host};
use criterion::{Criterion, criterion_group, criterion_main};

/// Counts the bytes both ways and, when `paced`, holds each byte for its
/// time on a 115200-baud 8N1 line.
#[derive(Debug)]
struct Wire {
    inner: SerialLink,
    bytes: Arc<AtomicU64>,
    paced: bool,
}

impl Wire {
    fn hold(&self, n: usize) {
        if self.paced {
            let micros = (n as u64) * 10 * 1_000_000 / u64::from(DEFAULT_BAUD);
            std::thread::sleep(Duration::from_micros(micros));
        }
    }
}

impl McfLink for Wire {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hold(bytes.len());
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.inner.write_all(bytes)
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let n = self.inner.read(buf, timeout)?;
        self.hold(n);
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn invoices(n: usize) -> Vec<(DgiInvoiceRequest, DgiTotals)> {
    let ledger: Arc<dyn LedgerStore> = Arc::new(MemoryStore::new());
    let f = Fiscalizer::with_clock(
        ledger,
        Arc::new(SoftwareSigner::generate().unwrap()),
        Arc::new(ManualClock::new(1_800_000_000_000)),
        FiscalizerConfig::new("NID-BENCH"),
    );
    let groups = ["A", "B", "C", "B"];
    (0..n)
        .map(|i| {
            let items: Vec<serde_json::Value> = (0..20)
                .map(|l| {
                    serde_json::json!({
                        "code": format!("ART-{l:03}"), "kind": "BIE",
                        "name": format!("Article numéro {l}"), "unit_price": format!("{}", 100 + l * 7),
                        "quantity": "2", "tax_group": groups[l % 4]
                    })
                })
                .collect();
            let total: usize = (0..20).map(|l| (100 + l * 7) * 2).sum();
            let request = serde_json::json!({
                "merchant_nif": "A1309334L", "outlet_id": "kin-gombe-01", "pos_terminal_id": "till-1",
                "cashier": {"id": "c-07", "name": "Mbuyi"}, "invoice_type": "FV", "price_mode": "TTC",
                "client": {"type": "PP"},
                "items": items,
                "payments": [{"method": "ESPECES", "amount": format!("{total}")}]
            });
            let sealed = f
                .seal(
                    &parse_invoice(&request.to_string()).unwrap(),
                    &format!("b{i}").parse().unwrap(),
                )
                .unwrap();
            map_sealed(&sealed.invoice).unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("mcf");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let pool = invoices(4000);
    for (name, paced) in [
        ("certify_20_lines/pty", false),
        ("certify_20_lines/paced_115200", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = SimConfig {
            nim: "DEF0100001".into(),
            nif: "A1309334L".into(),
            secret: b"bench".to_vec(),
            state_path: dir.path().join("memory.json"),
            faults: Faults::default(),
        };
        let Pty {
            mut master,
            slave_path,
        } = Pty::open().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let device =
            std::thread::spawn(move || host(&config, &mut master, &s, &mut |_| {}).unwrap());
        let bytes = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&bytes);
        let path = slave_path.to_string_lossy().into_owned();
        let certifier = McfCertifier::new(
            Box::new(move || {
                Ok(Box::new(Wire {
                    inner: SerialLink::open(&path, DEFAULT_BAUD)?,
                    bytes: Arc::clone(&counter),
                    paced,
                }) as Box<dyn McfLink>)
            }),
            dir.path().join("journal.json"),
            bonopay_tax::RateTable::dgi_2025().invoiced_rates(),
        )
        .unwrap();
        let mut next = 0usize;
        let mut done = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let (req, totals) = &pool[next % pool.len()];
                next += 1;
                let mut req = req.clone();
                // A new sale each time: the device finalizes each number once.
                req.rn = format!("{}-{next}-{name}", req.rn);
                certifier.certify(&req, totals).unwrap();
                done += 1;
            });
        });
        // Integer arithmetic: bytes per invoice, and the bound in
        // hundredths of an invoice per second.
        let per_invoice = bytes.load(Ordering::Relaxed) / done.max(1);
        let bound_centi = u64::from(DEFAULT_BAUD) * 10 / per_invoice.max(1);
        eprintln!(
            "mcf {name}: {per_invoice} bytes on the wire per invoice (commands and replies, both ways); \
             bound at 115200 baud 8N1: {}.{:02} invoices/s",
            bound_centi / 100,
            bound_centi % 100
        );
        stop.store(true, Ordering::Relaxed);
        device.join().unwrap();
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
