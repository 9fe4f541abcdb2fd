//! Load run for reports and audit bundles (issue 6):
//!
//! - a Z report over 100 000 sealed invoices on one outlet of a SQLite
//!   ledger: wall time and the peak resident memory of the process;
//! - exporting that outlet's audit bundle and verifying it offline
//!   (chain, counters, every signature, every report recomputed): entries
//!   per second, and peak memory.
//!
//! Each measurement runs in a fresh child process (this binary re-run with
//! `BONOPAY_REPORTS_CHILD`), so its peak RSS (`VmHWM`) is its own and not
//! the preparation's. Run: `cargo bench -p bonopay-benches --bench reports`.
//! `BONOPAY_REPORTS_N` changes the invoice count (default 100000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bonopay_core::{ValidInvoice, parse_invoice};
use bonopay_ledger::{Durability, LedgerStore, SqliteOptions, SqliteStore};
use bonopay_signer::audit::{ExportRequest, Exporter, Verifier};
use bonopay_signer::{
    AwsLcSigner, Fiscalizer, FiscalizerConfig, ReportIdentity, Signer, SoftwareSigner,
};

const OUTLET: &str = "kin-bench-01";
const CHILD: &str = "BONOPAY_REPORTS_CHILD";

/// Invoice `n`: 1 to 8 items over groups A, B, C, E; every 25th is an RRR
/// credit note (a commercial reduction).
fn invoice(n: usize) -> ValidInvoice {
    let lines = 1 + n % 8;
    let mut items = Vec::new();
    let mut total = rust_decimal::Decimal::ZERO;
    for i in 0..lines {
        let price =
            rust_decimal::Decimal::new(((n * 7 + i * 13) % 5000 + 100) as i64 * 100 + 50, 2);
        let qty = rust_decimal::Decimal::from(1 + (n + i) % 3);
        total += price * qty;
        items.push(format!(
            r#"{{"code":"ART-{}","kind":"BIE","name":"Article {}","unit_price":"{price}","quantity":"{qty}","tax_group":"{}"}}"#,
            (n + i) % 500,
            (n + i) % 500,
            ["B", "C", "A", "E"][(n + i) % 4]
        ));
    }
    let credit = n % 25 == 24;
    let (ty, cn) = if credit {
        ("FA", r#","credit_note":{"reference":"RRR","nature":"RRR"}"#)
    } else {
        ("FV", "")
    };
    let method = ["ESPECES", "MOBILEMONEY", "CARTEBANCAIRE"][n % 3];
    parse_invoice(&format!(
        r#"{{"merchant_nif":"A1309334L","outlet_id":"{OUTLET}","pos_terminal_id":"t{}","cashier":{{"id":"c1","name":"Caissier"}},
            "invoice_type":"{ty}","price_mode":"TTC","client":{{"type":"PP"}},"items":[{}],
            "payments":[{{"method":"{method}","amount":"{total}"}}]{cn}}}"#,
        n % 4,
        items.join(",")
    ))
    .unwrap()
}

fn id() -> ReportIdentity {
    ReportIdentity {
        merchant_nif: "A1309334L".into(),
        trade_name: "Bench".into(),
    }
}

fn fiscalizer(dir: &Path, durability: Durability) -> Fiscalizer {
    let store = SqliteStore::open_with(
        dir.join("ledger.db"),
        SqliteOptions {
            durability,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let key = dir.join("key.pem");
    if !key.exists() {
        let s = SoftwareSigner::generate().unwrap();
        std::fs::write(&key, s.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    }
    let signer = AwsLcSigner::from_pkcs8_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
    Fiscalizer::new(
        Arc::new(store) as Arc<dyn LedgerStore>,
        Arc::new(signer),
        FiscalizerConfig::new("NID-BENCH"),
    )
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn child(mode: &str, dir: &Path) {
    match mode {
        "z" => {
            let f = fiscalizer(dir, Durability::Full);
            let before = peak_rss_kib();
            let t = Instant::now();
            let z = f.z_report(OUTLET, &id()).unwrap();
            let secs = t.elapsed().as_secs_f64();
            println!(
                "z invoices={} secs={secs:.3} peak_rss_kib={} rss_before_kib={before}",
                z.body["stats"]["invoices"],
                peak_rss_kib()
            );
        }
        "export" => {
            let f = fiscalizer(dir, Durability::Full);
            let req = ExportRequest {
                outlet: OUTLET.into(),
                time_zone: chrono_tz::Africa::Kinshasa,
                from_ms: None,
                to_ms: None,
                keys: vec![f.signer().public_key().clone()],
                created: "bench".into(),
            };
            let t = Instant::now();
            let mut out = BufWriter::new(std::fs::File::create(dir.join("bundle.jsonl")).unwrap());
            let mut n = 0u64;
            for chunk in Exporter::new(&**f.store(), &req).unwrap() {
                out.write_all(&chunk.unwrap()).unwrap();
                n += 1;
            }
            out.flush().unwrap();
            let secs = t.elapsed().as_secs_f64();
            println!(
                "export entries={} secs={secs:.3} peak_rss_kib={}",
                n - 2,
                peak_rss_kib()
            );
        }
        "verify" => {
            let file = std::fs::File::open(dir.join("bundle.jsonl")).unwrap();
            let bytes = file.metadata().unwrap().len();
            let mut r = BufReader::with_capacity(1 << 20, file);
            let t = Instant::now();
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).unwrap();
            let mut v = Verifier::new(&line).unwrap();
            let mut batch: Vec<Vec<u8>> = Vec::with_capacity(512);
            loop {
                let mut l = Vec::new();
                let n = r.read_until(b'\n', &mut l).unwrap();
                if n > 0 {
                    batch.push(l);
                }
                if (n == 0 || batch.len() == 512) && !batch.is_empty() {
                    v.feed_batch(&batch);
                    batch.clear();
                }
                if n == 0 {
                    break;
                }
            }
            let report = v.finish();
            let secs = t.elapsed().as_secs_f64();
            assert!(report.is_valid(), "{:?}", report.error);
            println!(
                "verify entries={} secs={secs:.3} bytes={bytes} z_recomputed={} peak_rss_kib={}",
                report.checked.entries,
                report.checked.z_reports,
                peak_rss_kib()
            );
        }
        other => panic!("unknown mode {other}"),
    }
}

fn run_child(mode: &str, dir: &Path) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD, mode)
        .env("BONOPAY_REPORTS_DIR", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(
            &mode,
            &PathBuf::from(std::env::var("BONOPAY_REPORTS_DIR").unwrap()),
        );
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing:
    // then run a small smoke version so the target stays working.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("BONOPAY_REPORTS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 100_000 } else { 500 });
    let tmp = tempfile::tempdir_in(
        std::env::var("BONOPAY_BENCH_TMP").unwrap_or_else(|_| "/var/tmp".into()),
    )
    .unwrap();
    let dir = tmp.path();
    // Preparation (not measured): n sealed invoices, without fsync.
    let t = Instant::now();
    {
        let f = fiscalizer(dir, Durability::Normal);
        for i in 0..n {
            f.seal(&invoice(i), &format!("k{i}").parse().unwrap())
                .unwrap();
        }
    }
    let db = std::fs::metadata(dir.join("ledger.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "prepared {n} invoices in {:.1} s (ledger.db {} MB)",
        t.elapsed().as_secs_f64(),
        db / 1_000_000
    );
    for mode in ["z", "export", "verify"] {
        print!("{}", run_child(mode, dir));
    }
}
