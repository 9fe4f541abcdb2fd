//! Signing and sealing throughput.
//!
//! - raw signing of a 32-byte digest: p256, aws-lc-rs, SoftHSM2 (PKCS#11);
//! - sealing end to end (taxes, payload, sign, ledger append) in memory, per
//!   backend, single-threaded, so the ratio to raw signing can be computed;
//! - sealing end to end on SQLite: one fsync per invoice, and group commit
//!   with 8 threads on 8 outlets (both cores busy).
//!
//! The SoftHSM2 benches need `SOFTHSM2_CONF` pointing at a SoftHSM2
//! configuration, and the PINs in `BONOPAY_BENCH_PIN` / `BONOPAY_BENCH_SO_PIN`
//! (never on a command line); on first use they create token `bono-bench`
//! and a non-extractable key `bono-seal` in it. `benches/softhsm-bench.sh`
//! sets that up with a throwaway directory. Without it they are skipped
//! with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bonopay_core::{ValidInvoice, parse_invoice};
use bonopay_ledger::{GroupCommit, LedgerStore, MemoryStore, SqliteStore};
use bonopay_signer::{
    AwsLcSigner, Fiscalizer, FiscalizerConfig, Signer, SoftwareSigner, domain_digest,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn invoice(outlet: &str) -> ValidInvoice {
    let mut items = Vec::new();
    for i in 0..20 {
        items.push(format!(
            r#"{{"code":"ART-{i}","kind":"BIE","name":"Article numéro {i}","unit_price":"{}.50","quantity":"{}","tax_group":"{}"}}"#,
            100 + i * 37,
            1 + i % 3,
            ["B", "C", "A", "E"][i % 4]
        ));
    }
    let probe = format!(
        r#"{{"merchant_nif":"A1309334L","outlet_id":"{outlet}","pos_terminal_id":"t1","cashier":{{"id":"c1","name":"Caissier"}},
            "invoice_type":"FV","price_mode":"TTC","client":{{"type":"PP"}},"items":[{}],
            "payments":[{{"method":"ESPECES","amount":"PAY"}}]}}"#,
        items.join(",")
    );
    // The payment is the computed total, so the invoice is valid.
    let req = parse_invoice(&probe.replace("PAY", "1")).unwrap();
    let total = match bonopay_tax::compute(
        &req,
        &bonopay_tax::RateTable::dgi_2025(),
        &bonopay_tax::NoReferenceRates,
    ) {
        Ok(r) => r.totals.ttc,
        Err(e) => e.errors()[0]
            .message
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap(),
    };
    parse_invoice(&probe.replace("PAY", &total.to_string())).unwrap()
}

fn software_keys() -> (SoftwareSigner, AwsLcSigner) {
    let sw = SoftwareSigner::generate().unwrap();
    let aws = AwsLcSigner::from_pkcs8_pem(&sw.to_pkcs8_pem().unwrap()).unwrap();
    (sw, aws)
}

fn softhsm() -> Option<bonopay_signer::signer::pkcs11::Pkcs11Signer> {
    use bonopay_signer::signer::pkcs11::{PinSource, Pkcs11Config, Pkcs11Signer, provision};
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        eprintln!(
            "SOFTHSM2_CONF not set: skipping SoftHSM2 benches (run benches/softhsm-bench.sh)"
        );
        return None;
    }
    let module = std::path::PathBuf::from("/usr/lib/softhsm/libsofthsm2.so");
    let pin = PinSource::Env("BONOPAY_BENCH_PIN".into());
    let config = Pkcs11Config {
        module: module.clone(),
        token_label: "bono-bench".into(),
        key_label: "bono-seal".into(),
        pin: pin.clone(),
        sessions: 2,
    };
    if let Err(bonopay_signer::SignerError::TokenNotFound(_)) = Pkcs11Signer::open(&config) {
        // First run on a fresh token directory: create the token and a
        // non-extractable key inside it. PINs come from the environment.
        let so = std::env::var("BONOPAY_BENCH_SO_PIN").unwrap();
        let user = std::env::var("BONOPAY_BENCH_PIN").unwrap();
        provision::init_token(&module, "bono-bench", &so, &user).unwrap();
        provision::generate_key(&module, "bono-bench", &pin, "bono-seal").unwrap();
    }
    Some(Pkcs11Signer::open(&config).unwrap())
}

fn signers() -> Vec<(&'static str, Arc<dyn Signer>)> {
    let (sw, aws) = software_keys();
    let mut v: Vec<(&'static str, Arc<dyn Signer>)> =
        vec![("p256", Arc::new(sw)), ("aws_lc", Arc::new(aws))];
    if let Some(h) = softhsm() {
        v.push(("softhsm2", Arc::new(h)));
    }
    v
}

fn raw_sign(c: &mut Criterion) {
    let mut g = c.benchmark_group("sign");
    g.throughput(Throughput::Elements(1));
    let digest = domain_digest(b"bench\0", &[b"x"]);
    for (name, s) in signers() {
        g.bench_function(name, |b| b.iter(|| s.sign(black_box(&digest)).unwrap()));
    }
    g.finish();
}

fn seal_memory(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal_memory");
    g.throughput(Throughput::Elements(1));
    let req = invoice("bench");
    for (name, s) in signers() {
        let f = Fiscalizer::new(
            Arc::new(MemoryStore::new()),
            s,
            FiscalizerConfig::new("NID-BENCH"),
        );
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                f.seal(black_box(&req), &i.to_string().parse().unwrap())
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// Seals `per_thread` invoices on each of `threads` outlets concurrently and
/// returns the elapsed time.
fn concurrent_seals(f: &Arc<Fiscalizer>, threads: usize, per_thread: u64, round: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let f = Arc::clone(f);
            std::thread::spawn(move || {
                let req = invoice(&format!("o{t}"));
                for i in 0..per_thread {
                    f.seal(&req, &format!("{round}-{t}-{i}").parse().unwrap())
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn seal_sqlite(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal_sqlite");
    g.sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let req = invoice("bench");
    let (sw, aws) = software_keys();
    let aws: Arc<dyn Signer> = Arc::new(aws);
    let sw: Arc<dyn Signer> = Arc::new(sw);
    let hsm: Option<Arc<dyn Signer>> = softhsm().map(|h| Arc::new(h) as Arc<dyn Signer>);

    // One fsync per invoice, one thread.
    g.throughput(Throughput::Elements(1));
    for (name, s) in [
        ("aws_lc", Some(aws.clone())),
        ("p256", Some(sw.clone())),
        ("softhsm2", hsm.clone()),
    ] {
        let Some(s) = s else { continue };
        let store = SqliteStore::open(dir.path().join(format!("each-{name}.db"))).unwrap();
        let f = Fiscalizer::new(Arc::new(store), s, FiscalizerConfig::new("NID-BENCH"));
        let mut i = 0u64;
        g.bench_function(format!("fsync_each/{name}"), |b| {
            b.iter(|| {
                i += 1;
                f.seal(&req, &i.to_string().parse().unwrap()).unwrap()
            })
        });
    }

    // Group commit: outlets sealing concurrently share commits. 8 threads
    // on 8 outlets, and 64 on 64 (a busy server's worth of requests).
    for (threads, per_thread, name, s) in [
        (8usize, 250u64, "aws_lc", Some(aws.clone())),
        (8, 250, "p256", Some(sw.clone())),
        (8, 250, "softhsm2", hsm.clone()),
        (64, 32, "aws_lc", Some(aws)),
        (64, 32, "p256", Some(sw)),
        (64, 32, "softhsm2", hsm),
    ] {
        let Some(s) = s else { continue };
        g.throughput(Throughput::Elements(threads as u64 * per_thread));
        let store: Arc<dyn LedgerStore> = Arc::new(GroupCommit::new(
            SqliteStore::open(dir.path().join(format!("group-{threads}-{name}.db"))).unwrap(),
            64,
        ));
        let f = Arc::new(Fiscalizer::new(
            store,
            s,
            FiscalizerConfig::new("NID-BENCH"),
        ));
        let mut round = 0;
        g.bench_function(format!("group_commit_{threads}_outlets/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    total += concurrent_seals(&f, threads, per_thread, round);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, raw_sign, seal_memory, seal_sqlite);
criterion_main!(benches);
