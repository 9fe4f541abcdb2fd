//! Load run: durable sealing on PostgreSQL (issue 8): 1, 2 and 8 outlets
//! with one till each, and one hot outlet with 8 tills, all threads
//! sealing at once through one `Fiscalizer` over `GroupCommit<PgStore>`
//! (aws-lc signer). Afterwards every chain is verified (hashes, gapless
//! counters, signatures) and the entries are counted against the seals:
//! a duplicate or a gap fails the run.
//!
//! Needs PostgreSQL (`BONOPAY_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each run uses a fresh
//! database. Run: `cargo bench -p bonopay-benches --bench pg_seal`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bonopay_core::{InvoiceRequest, parse_invoice};
use bonopay_ledger::{GroupCommit, LedgerStore, PgStore, TestDb, verify_store};
use bonopay_signer::{
    AwsLcSigner, Fiscalizer, FiscalizerConfig, SignatureCheck, Signer, SoftwareSigner,
};

fn invoice(outlet: &str) -> InvoiceRequest {
    let mut items = Vec::new();
    let mut total = 0u64;
    for i in 0..20u64 {
        let price = 100 + i * 37;
        let q = 1 + i % 3;
        total += price * q;
        items.push(format!(
            r#"{{"code":"ART-{i}","kind":"BIE","name":"Article {i}","unit_price":"{price}","quantity":"{q}","tax_group":"{}"}}"#,
            ["B", "C", "A", "E"][(i % 4) as usize]
        ));
    }
    parse_invoice(&format!(
        r#"{{"merchant_nif":"A1309334L","outlet_id":"{outlet}","pos_terminal_id":"t1","cashier":{{"id":"c1","name":"C"}},
            "invoice_type":"FV","price_mode":"TTC","client":{{"type":"PP"}},"items":[{}],
            "payments":[{{"method":"ESPECES","amount":"{total}"}}]}}"#,
        items.join(",")
    ))
    .unwrap()
}

fn run(label: &str, outlets: usize, tills_per_outlet: usize, secs: u64) {
    let db = TestDb::create().unwrap();
    let store = Arc::new(GroupCommit::new(
        PgStore::connect(&db.url, 24).unwrap(),
        256,
    ));
    let pem = SoftwareSigner::generate().unwrap().to_pkcs8_pem().unwrap();
    let signer = Arc::new(AwsLcSigner::from_pkcs8_pem(&pem).unwrap());
    let keys = vec![signer.public_key().clone()];
    let f = Arc::new(Fiscalizer::new(
        Arc::clone(&store) as Arc<dyn LedgerStore>,
        signer,
        FiscalizerConfig::new("NID-BENCH"),
    ));
    let stop = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..outlets * tills_per_outlet)
        .map(|t| {
            let f = Arc::clone(&f);
            let outlet = format!("o{}", t % outlets);
            let req = invoice(&outlet);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < stop {
                    f.seal(&req, &format!("t{t}-{n}")).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let sealed: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let elapsed = start.elapsed();
    let mut entries = 0;
    for o in 0..outlets {
        let r = verify_store(
            &*store,
            &format!("o{o}"),
            &SignatureCheck::new(keys.clone()),
        );
        assert!(r.is_valid(), "{:?}", r.error);
        entries += r.head.counters.total;
    }
    assert_eq!(entries, sealed, "every seal is exactly one entry");
    let per_sec = u128::from(sealed) * 1000 / elapsed.as_millis().max(1);
    println!(
        "{label}: {sealed} invoices in {:.2} s = {per_sec}/s; chains verified, {entries} entries, 0 duplicates, 0 gaps",
        elapsed.as_secs_f64()
    );
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let secs = if benching { 5 } else { 1 };
    run("1 outlet, 1 till", 1, 1, secs);
    run("2 outlets, 1 till each", 2, 1, secs);
    run("8 outlets, 1 till each", 8, 1, secs);
    run("hot outlet, 8 tills", 1, 8, secs);
}
