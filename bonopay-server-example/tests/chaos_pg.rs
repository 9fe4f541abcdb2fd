//! Chaos on a PostgreSQL deployment: three `bonopay serve` instances over
//! one database, tills sealing on a hot outlet and on two others, while a
//! killer SIGKILLs a random instance and restarts it, again and again (and,
//! when asked, restarts PostgreSQL itself mid-run). Clients do what a POS
//! does: a request with no answer (connection refused or reset, 503) is in
//! doubt, and is sent again with the same idempotency key to any instance.
//!
//! At the end: every acknowledged invoice is in the ledger and identical
//! to what was acknowledged, every in-doubt request resolved by its key to
//! exactly one seal, each outlet's numbers are gapless, no answer was a
//! 500, and `bonopay ledger verify` on the database passes.
//!
//! The suite runs a short version (`BONOPAY_CHAOS_KILLS`, default 6). The
//! figures in RELIABILITY.md come from a long run:
//! `BONOPAY_CHAOS_KILLS=120 BONOPAY_CHAOS_PG_RESTART=1 cargo test -p
//! bonopay-server-example --test chaos_pg -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bonopay_ledger::{LedgerStore, PgStore, TestDb, verify_store};
use bonopay_signer::{PublicKey, SignatureCheck};
use common::*;
use serde_json::{Value, json};

const OUTLETS: [&str; 3] = ["kin-gombe-01", "kin-limete-02", "lub-03"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Restarts the local PostgreSQL cluster (Debian's `pg_ctlcluster`).
fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .unwrap();
    let ok = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "pg_ctlcluster restart failed");
}

#[derive(Default)]
struct Tally {
    acknowledged: AtomicU64,
    in_doubt: AtomicU64,
    busy_503: AtomicU64,
    status_500: AtomicU64,
}

#[test]
fn instances_killed_at_random_lose_nothing_and_fork_nothing() {
    let kills_wanted = env_u64("BONOPAY_CHAOS_KILLS", 6);
    let pg_restart = std::env::var("BONOPAY_CHAOS_PG_RESTART").is_ok_and(|v| v == "1");
    let db = TestDb::create().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let env = [("BONOPAY_DATABASE_URL", db.url.as_str())];
    let first = Server::start(&tmp.path().join("i0"), &env);
    let owner = first.owner(NIF_A);
    share_keys(
        &tmp.path().join("i0"),
        &[tmp.path().join("i1"), tmp.path().join("i2")],
    );
    let servers: Vec<Mutex<Option<Server>>> = vec![
        Mutex::new(Some(first)),
        Mutex::new(Some(Server::start(&tmp.path().join("i1"), &env))),
        Mutex::new(Some(Server::start(&tmp.path().join("i2"), &env))),
    ];
    let bases: Arc<RwLock<Vec<String>>> = Arc::new(RwLock::new(
        servers
            .iter()
            .map(|s| s.lock().unwrap().as_ref().unwrap().base.clone())
            .collect(),
    ));
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for o in &OUTLETS[1..] {
        let r = http
            .post(format!("{}/v1/outlets", bases.read().unwrap()[0]))
            .bearer_auth(&owner)
            .json(&json!({"id": o}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let acked: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    // Tills: 4 on the hot outlet, one on each of the others, sealing until
    // the killer is done.
    let tills: Vec<(usize, &str)> = (0..4)
        .map(|t| (t, OUTLETS[0]))
        .chain([(4, OUTLETS[1]), (5, OUTLETS[2])])
        .collect();
    let handles: Vec<_> = tills
        .into_iter()
        .map(|(t, outlet)| {
            let (http, bases, owner) = (http.clone(), Arc::clone(&bases), owner.clone());
            let (stop, tally, acked) = (Arc::clone(&stop), Arc::clone(&tally), Arc::clone(&acked));
            std::thread::spawn(move || {
                let body = invoice_for(NIF_A, outlet);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("till{t}-{n}");
                    n += 1;
                    let mut tries = 0usize;
                    let answer = loop {
                        let base = bases.read().unwrap()[(t + tries) % 3].clone();
                        tries += 1;
                        let r = http
                            .post(format!("{base}/v1/invoices"))
                            .bearer_auth(&owner)
                            .header("idempotency-key", &key)
                            .json(&body)
                            .send();
                        match r {
                            Ok(r) if r.status().is_success() => match r.json::<Value>() {
                                Ok(v) => break v,
                                // Cut off mid-answer: in doubt.
                                Err(_) => tally.in_doubt.fetch_add(1, Ordering::Relaxed),
                            },
                            Ok(r) if r.status().as_u16() == 503 => {
                                tally.busy_503.fetch_add(1, Ordering::Relaxed)
                            }
                            Ok(r) if r.status().as_u16() == 500 => {
                                tally.status_500.fetch_add(1, Ordering::Relaxed)
                            }
                            Ok(r) => panic!("{key}: {} {}", r.status(), r.text().unwrap()),
                            Err(_) => tally.in_doubt.fetch_add(1, Ordering::Relaxed),
                        };
                        std::thread::sleep(Duration::from_millis(20));
                    };
                    tally.acknowledged.fetch_add(1, Ordering::Relaxed);
                    acked.lock().unwrap().insert(key, answer);
                }
            })
        })
        .collect();

    // The killer: a random instance every ~150 ms, restarted at once.
    let started = Instant::now();
    let rng = bonopay_sync::retry::SplitMix::new(u64::from(std::process::id()));
    let mut kills = 0u64;
    let mut pg_restarted_at = None;
    while kills < kills_wanted {
        std::thread::sleep(Duration::from_millis(100 + rng.next_u64() % 100));
        let victim = usize::try_from(rng.next_u64() % 3).unwrap();
        let dir = tmp.path().join(format!("i{victim}"));
        let mut slot = servers[victim].lock().unwrap();
        drop(slot.take()); // SIGKILL, reaped
        kills += 1;
        if pg_restart && pg_restarted_at.is_none() && kills == kills_wanted / 2 {
            restart_postgres();
            pg_restarted_at = Some(kills);
        }
        let s = Server::start(&dir, &env);
        bases.write().unwrap()[victim] = s.base.clone();
        *slot = Some(s);
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = started.elapsed();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "chaos: {kills} SIGKILLs in {:.1} s{}; {} invoices acknowledged, {} requests in doubt \
         (resent with their key), {} answered 503, {} answered 500",
        elapsed.as_secs_f64(),
        pg_restarted_at.map_or(String::new(), |k| format!(
            ", PostgreSQL restarted after kill {k}"
        )),
        tally.acknowledged.load(Ordering::Relaxed),
        tally.in_doubt.load(Ordering::Relaxed),
        tally.busy_503.load(Ordering::Relaxed),
        tally.status_500.load(Ordering::Relaxed),
    );
    assert_eq!(
        tally.status_500.load(Ordering::Relaxed),
        0,
        "no answer is a 500 (contention, a database restart: 503)"
    );
    assert!(!acked.is_empty());

    // Every acknowledged invoice is in the ledger, identical, once per key.
    let store = PgStore::connect(&db.url, 2).unwrap();
    let keys: Vec<PublicKey> = std::fs::read_dir(tmp.path().join("i0/keys"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            p.to_string_lossy()
                .ends_with(".pub.pem")
                .then(|| PublicKey::from_pem(&std::fs::read_to_string(p).unwrap()).unwrap())
        })
        .collect();
    let base = bases.read().unwrap()[0].clone();
    for (key, answer) in &acked {
        let hits = store
            .find_index("idempotency", &format!("{NIF_A}/{key}"))
            .unwrap();
        assert_eq!(hits.len(), 1, "{key}: sealed {} times", hits.len());
        let id = answer["id"].as_str().unwrap();
        let now: Value = http
            .get(format!("{base}/v1/invoices/{id}"))
            .bearer_auth(&owner)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            now["seal"], answer["seal"],
            "{key}: acknowledged seal changed"
        );
        assert_eq!(format!("{}:{}", hits[0].0, hits[0].1), id, "{key}");
    }
    // Gapless and verified, every signature; nothing but acknowledged or
    // in-doubt-then-resolved invoices in the chains.
    let mut invoices = 0usize;
    for o in OUTLETS {
        let r = verify_store(&store, o, &SignatureCheck::new(keys.clone()));
        assert!(r.is_valid(), "{o}: {:?}", r.error);
        invoices += store
            .iter_from(o, 1)
            .filter(|e| e.as_ref().unwrap().kind == bonopay_ledger::EntryKind::Invoice)
            .count();
    }
    assert_eq!(invoices, acked.len(), "an invoice nobody acknowledged");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .args(["ledger", "verify", "--data-dir"])
        .arg(tmp.path().join("i0"))
        .args(["--database-url", &db.url])
        .env_remove("BONOPAY_DATABASE_URL")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("\"valid\": true"), "{report}");
}
