//! The POS offline queue (`bonopay-sync`, feature `client`) against the
//! real `bonopay serve` over loopback, with the client process killed
//! (SIGKILL) in the middle of its flushes, round after round. Every draft
//! must end sealed exactly once, in order per terminal.
//!
//! The client is this test binary re-run as a child with
//! `BONOPAY_QUEUE_CHILD` set: it opens the queue file and flushes until it
//! is empty (or it is killed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bonopay_sync::pos_queue::{DraftStatus, HttpTransport, OfflineQueue};
use common::*;
use serde_json::Value;

const CHILD: &str = "BONOPAY_QUEUE_CHILD";
const TEST: &str = "drafts_are_sealed_exactly_once_when_the_client_is_killed_mid_flush";

fn draft(terminal: &str, n: usize) -> String {
    let mut v = example();
    v["pos_terminal_id"] = terminal.into();
    v["cashier"]["name"] = format!("Caissier {n}").into();
    v.to_string()
}

/// In the child: flush until nothing remains.
fn child_flush() {
    let queue = OfflineQueue::open(std::env::var("BONOPAY_QUEUE").unwrap()).unwrap();
    let transport = HttpTransport::new(
        &std::env::var("BONOPAY_BASE").unwrap(),
        &std::env::var("BONOPAY_KEY").unwrap(),
        Duration::from_secs(10),
    )
    .unwrap();
    loop {
        let report = queue.flush(&transport).unwrap();
        if report.remaining == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn drafts_are_sealed_exactly_once_when_the_client_is_killed_mid_flush() {
    if std::env::var_os(CHILD).is_some() {
        child_flush();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let key = server.owner(NIF_A);
    let queue_path = tmp.path().join("queue.db");
    // Drafts are queued in batches; when a fast machine drains the queue
    // before enough kills have landed mid-flush, another batch is queued,
    // so the test always exercises what it claims.
    let enqueue = |from: usize, n: usize| {
        let q = OfflineQueue::open(&queue_path).unwrap();
        for n in from..from + n {
            let terminal = ["till-1", "till-2"][n % 2];
            q.enqueue(terminal, &draft(terminal, n)).unwrap();
        }
    };
    let mut drafts = 80;
    enqueue(0, drafts);

    let pending = || {
        OfflineQueue::open(&queue_path)
            .unwrap()
            .drafts()
            .unwrap()
            .iter()
            .filter(|d| !matches!(d.status, DraftStatus::Fiscalized | DraftStatus::Rejected))
            .count()
    };
    let mut killed_mid_flush = 0;
    let mut round = 0;
    loop {
        if pending() == 0 {
            if killed_mid_flush >= 10 {
                break;
            }
            assert!(drafts < 800, "kills never landed mid-flush");
            enqueue(drafts, 40);
            drafts += 40;
        }
        round += 1;
        assert!(round <= 400, "the queue never drained");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--test-threads", "1"])
            .env(CHILD, "1")
            .env("BONOPAY_QUEUE", &queue_path)
            .env("BONOPAY_BASE", &server.base)
            .env("BONOPAY_KEY", &key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill it a little later each round until enough kills landed
        // mid-flush; then let it finish.
        let delay = 10 + (round * 7) % 40;
        std::thread::sleep(Duration::from_millis(delay as u64));
        if killed_mid_flush < 10 {
            let before = pending();
            child.kill().unwrap();
            let status = child.wait().unwrap();
            if !status.success() && before > 0 {
                killed_mid_flush += 1;
            }
        } else {
            assert!(child.wait().unwrap().success());
        }
    }
    eprintln!("{round} rounds, {killed_mid_flush} kills landed mid-flush");
    assert!(
        killed_mid_flush >= 10,
        "only {killed_mid_flush} kills landed mid-flush"
    );

    // Every draft is fiscalized, with its own seal.
    let q = OfflineQueue::open(&queue_path).unwrap();
    let all = q.drafts().unwrap();
    assert_eq!(all.len(), drafts);
    let mut seqs_by_terminal: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut codes = BTreeSet::new();
    for d in &all {
        assert_eq!(d.status, DraftStatus::Fiscalized, "{d:?}");
        let answer: Value = serde_json::from_str(d.result.as_deref().unwrap()).unwrap();
        codes.insert(
            answer["security_elements"]["authentication_code"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        seqs_by_terminal
            .entry(d.terminal.clone())
            .or_default()
            .push(answer["ledger"]["seq"].as_u64().unwrap());
    }
    assert_eq!(codes.len(), drafts, "one seal per draft");
    // In order per terminal: drafts are listed oldest first.
    for (terminal, seqs) in &seqs_by_terminal {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{terminal}: {seqs:?}");
    }

    // And the server sealed exactly that many: nothing twice.
    let client = reqwest::blocking::Client::new();
    let mut sealed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!(
                "{}/v1/outlets/{OUTLET_A}/invoices?limit=200{cursor}",
                server.base
            ))
            .bearer_auth(&key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            sealed.push(item["authentication_code"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(sealed.len(), drafts, "the server sealed each draft once");
    assert_eq!(sealed.into_iter().collect::<BTreeSet<_>>(), codes);
}
