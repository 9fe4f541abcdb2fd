//! The offline queue against the real sealing pipeline (in process), with
//! faults injected in front of it: requests that never arrive, answers lost
//! after the seal committed, and the POS dying mid-flush.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bonopay_ledger::{LedgerStore, MemoryStore};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, SealError, SoftwareSigner};
use bonopay_sync::pos_queue::{
    DraftStatus, OfflineQueue, QueueError, Retryable, Submitted, Transport,
};

/// The real pipeline behind a transport, answering like the HTTP API.
#[derive(Debug)]
struct InProcess(Fiscalizer);

impl Transport for InProcess {
    fn submit(&self, key: &str, body: &str) -> Result<Submitted, Retryable> {
        let req = match bonopay_core::parse_invoice(body) {
            Ok(r) => r,
            Err(e) => return Ok(Submitted::Rejected(e.to_json())),
        };
        match self.0.seal(&req, &key.parse().unwrap()) {
            Ok(s) => Ok(Submitted::Sealed(s.invoice.elements.authentication_code)),
            Err(SealError::Invalid(e)) => Ok(Submitted::Rejected(e.to_json())),
            Err(SealError::IdempotencyConflict { key }) => {
                Ok(Submitted::Rejected(format!("conflict {key}")))
            }
            Err(e) => Err(Retryable(e.to_string())),
        }
    }
}

/// Fault injection layered over the real transport, driven by a seed.
#[derive(Debug)]
struct Flaky<'a> {
    inner: &'a InProcess,
    state: AtomicU64,
}

impl Transport for Flaky<'_> {
    fn submit(&self, key: &str, body: &str) -> Result<Submitted, Retryable> {
        let mut s = self.state.load(Ordering::SeqCst);
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.state.store(s, Ordering::SeqCst);
        match s % 10 {
            0 | 1 => Err(Retryable("connection refused (injected)".into())),
            2 | 3 => {
                // The seal commits on the server, then the answer is lost.
                let _ = self.inner.submit(key, body)?;
                Err(Retryable("timeout after commit (injected)".into()))
            }
            _ => self.inner.submit(key, body),
        }
    }
}

fn invoice(outlet: &str, qty: u32) -> String {
    format!(
        r#"{{"merchant_nif":"A1309334L","outlet_id":"{outlet}","pos_terminal_id":"{outlet}-till","cashier":{{"id":"c1","name":"Ngalula"}},
        "invoice_type":"FV","price_mode":"TTC","client":{{"type":"PP"}},
        "items":[{{"code":"PAIN","kind":"BIE","name":"Pain","unit_price":"500","quantity":"{qty}","tax_group":"A"}}],
        "payments":[{{"method":"ESPECES","amount":"{}"}}]}}"#,
        500 * qty
    )
}

fn server() -> (InProcess, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let f = Fiscalizer::new(
        store.clone(),
        Arc::new(SoftwareSigner::generate().unwrap()),
        FiscalizerConfig::new("NID-T"),
    );
    (InProcess(f), store)
}

#[test]
fn every_draft_is_sealed_exactly_once_through_faults_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let (srv, store) = server();
    {
        let q = OfflineQueue::open(&path).unwrap();
        for i in 0..30u32 {
            let t = ["t1", "t2", "t3"][(i % 3) as usize];
            q.enqueue(t, &invoice(t, i + 1)).unwrap();
        }
    }
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 200, "the queue never drained");
        // Reopen each round: the POS restarts between attempts.
        let q = OfflineQueue::open(&path).unwrap();
        let flaky = Flaky {
            inner: &srv,
            state: AtomicU64::new(0x9E37_79B9_7F4A_7C15 ^ rounds),
        };
        let report = q.flush(&flaky).unwrap();
        if report.remaining == 0 {
            break;
        }
    }
    let q = OfflineQueue::open(&path).unwrap();
    let drafts = q.drafts().unwrap();
    assert!(
        drafts.iter().all(|d| d.status == DraftStatus::Fiscalized),
        "{drafts:?}"
    );
    let codes: BTreeSet<_> = drafts.iter().map(|d| d.result.clone().unwrap()).collect();
    assert_eq!(codes.len(), 30, "30 distinct seals");
    let sealed: u64 = ["t1", "t2", "t3"]
        .iter()
        .map(|o| store.head(o).unwrap().seq)
        .sum();
    assert_eq!(sealed, 30, "nothing sealed twice despite lost answers");
    assert!(
        drafts.iter().any(|d| d.attempts > 1),
        "faults really happened"
    );
    // In order per terminal: fiscal numbers follow draft order.
    for t in ["t1", "t2", "t3"] {
        let mine: Vec<_> = drafts.iter().filter(|d| d.terminal == t).collect();
        for (n, d) in mine.iter().enumerate() {
            let e = store.entry(t, n as u64 + 1).unwrap().unwrap();
            let payload = String::from_utf8(e.payload).unwrap();
            assert!(
                payload.contains(d.result.as_deref().unwrap()),
                "draft {} sealed out of order",
                d.id
            );
        }
    }
}

#[test]
fn a_draft_left_in_flight_by_a_crash_is_resent_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let (srv, store) = server();
    let q = OfflineQueue::open(&path).unwrap();
    let d = q.enqueue("t1", &invoice("t1", 2)).unwrap();
    // The POS sent it (the server sealed) and died before recording the answer.
    srv.submit(&d.idempotency_key, &d.body).unwrap();
    rusqlite_mark_in_flight(&path, d.id);
    drop(q);
    let q = OfflineQueue::open(&path).unwrap();
    assert_eq!(q.get(d.id).unwrap().status, DraftStatus::InFlight);
    let r = q.flush(&srv).unwrap();
    assert_eq!((r.fiscalized, r.remaining), (1, 0));
    assert_eq!(
        store.head("t1").unwrap().seq,
        1,
        "replayed, not sealed again"
    );
}

/// Leaves a draft exactly as a process killed between "in_flight" and the
/// answer would (the queue's own API never stops there).
fn rusqlite_mark_in_flight(path: &std::path::Path, id: i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute(
        "UPDATE drafts SET status = 'in_flight', attempts = 1 WHERE id = ?1",
        [id],
    )
    .unwrap();
}

#[test]
fn invalid_drafts_are_refused_at_the_till_and_rejections_do_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = server();
    let q = OfflineQueue::open(dir.path().join("q.db")).unwrap();
    let bad = invoice("t1", 1).replace("\"quantity\":\"1\"", "\"quantity\":\"1.0001\"");
    assert!(
        matches!(q.enqueue("t1", &bad), Err(QueueError::Invalid(e)) if e.has(bonopay_core::ErrorCode::TooManyDecimals))
    );
    // Valid locally, refused by the server (payments do not match the total).
    let refused = invoice("t1", 1).replace("\"amount\":\"500\"", "\"amount\":\"400\"");
    let a = q.enqueue("t1", &refused).unwrap();
    let b = q.enqueue("t1", &invoice("t1", 3)).unwrap();
    let r = q.flush(&srv).unwrap();
    assert_eq!((r.fiscalized, r.rejected, r.remaining), (1, 1, 0));
    let a = q.get(a.id).unwrap();
    assert_eq!(a.status, DraftStatus::Rejected);
    assert!(a.result.unwrap().contains("payments_mismatch"));
    assert_eq!(q.get(b.id).unwrap().status, DraftStatus::Fiscalized);
}

#[test]
fn a_retryable_failure_stops_only_that_terminal_and_keeps_order() {
    #[derive(Debug)]
    struct DownFor<'a>(&'a InProcess, &'static str);
    impl Transport for DownFor<'_> {
        fn submit(&self, key: &str, body: &str) -> Result<Submitted, Retryable> {
            if body.contains(self.1) {
                return Err(Retryable("503 signer down (injected)".into()));
            }
            self.0.submit(key, body)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (srv, store) = server();
    let q = OfflineQueue::open(dir.path().join("q.db")).unwrap();
    for t in ["t1", "t2", "t1", "t2"] {
        q.enqueue(t, &invoice(t, 1)).unwrap();
    }
    let r = q.flush(&DownFor(&srv, "\"outlet_id\":\"t1\"")).unwrap();
    assert_eq!((r.fiscalized, r.remaining), (2, 2));
    assert_eq!(store.head("t1").unwrap().seq, 0);
    assert_eq!(r.errors.len(), 1, "{r:?}");
    let r = q.flush(&srv).unwrap();
    assert_eq!((r.fiscalized, r.remaining), (2, 0));
}
