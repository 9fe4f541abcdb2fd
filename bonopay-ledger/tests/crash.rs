//! Crash test: a child process appends in a loop (single appends and
//! 8-entry group commits, on two outlets) and is killed with SIGKILL at
//! random moments, at least 50 times. After each kill the file is reopened
//! and we prove that every append acknowledged before the kill is present
//! unchanged, the chains verify, and the counters have no gap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use bonopay_core::InvoiceType;
use bonopay_ledger::conformance::invoice;
use bonopay_ledger::{ChainOnly, Entry, LedgerStore, SqliteStore, verify_store};

const CHILD_ENV: &str = "BONOPAY_CRASH_CHILD_DB";
const OUTLETS: [&str; 2] = ["crash-a", "crash-b"];

/// The child's body. It only runs when the parent starts this test binary
/// with the environment variable set; otherwise it returns at once.
#[test]
fn child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(&path).unwrap();
    let out = std::io::stdout();
    let mut round = 0u64;
    loop {
        round += 1;
        let outlet = OUTLETS[(round % 2) as usize];
        let mut head = store.head(outlet).unwrap();
        let n = if round.is_multiple_of(3) { 8 } else { 1 };
        let batch: Vec<Entry> = (0..n)
            .map(|_| {
                let t = if head.seq % 5 == 4 {
                    InvoiceType::Fa
                } else {
                    InvoiceType::Fv
                };
                let e = head
                    .prepare(&invoice(t, 2026, head.seq as i64))
                    .unwrap()
                    .seal(format!("{{\"round\":{round}}}").into_bytes());
                head = head.advance(&e);
                e
            })
            .collect();
        let results = store.append_batch(&batch);
        let mut lock = out.lock();
        for (e, r) in batch.iter().zip(results) {
            r.unwrap();
            // Acknowledge only after append_batch returned: the entry is durable.
            writeln!(
                lock,
                "ACK {} {} {}",
                e.outlet,
                e.seq,
                hex::encode(e.entry_hash)
            )
            .unwrap();
        }
        lock.flush().unwrap();
    }
}

/// A small xorshift seeded from the clock: the kill moments differ per run,
/// and the seed is printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let seed = std::env::var("BONOPAY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: {seed} (set BONOPAY_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<(String, u64), String> = BTreeMap::new();
    let kills = 60;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "child_writer",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Let it run for a random while (process start included).
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 60));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in &lines {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() == 4 && parts[0] == "ACK" {
                acked.insert(
                    (parts[1].to_owned(), parts[2].parse().unwrap()),
                    parts[3].to_owned(),
                );
            }
        }
        let store = SqliteStore::open(&db).unwrap();
        for outlet in OUTLETS {
            let report = verify_store(&store, outlet, &ChainOnly);
            assert!(
                report.is_valid(),
                "round {round}: {outlet}: {:?}",
                report.error
            );
        }
        for ((outlet, seq), hash) in &acked {
            let e = store.entry(outlet, *seq).unwrap().unwrap_or_else(|| {
                panic!("round {round}: acknowledged entry {outlet}/{seq} lost (seed {seed})")
            });
            assert_eq!(
                &hex::encode(e.entry_hash),
                hash,
                "round {round}: {outlet}/{seq} changed"
            );
        }
    }
    // The test is only meaningful if the child made progress between kills.
    assert!(
        acked.len() > kills,
        "only {} acknowledgements in {kills} runs",
        acked.len()
    );
    eprintln!(
        "{kills} kills, {} acknowledged entries, all present and verified",
        acked.len()
    );
}
