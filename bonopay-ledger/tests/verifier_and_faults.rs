//! Counter breaks the verifier must name, and the fault-injecting decorator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bonopay_core::InvoiceType;
use bonopay_ledger::conformance::{invoice, other};
use bonopay_ledger::{
    ChainError, ChainOnly, Entry, EntryCheck, EntryKind, Fault, FaultyStore, Head, LedgerError,
    LedgerStore, LedgerStoreExt, MemoryStore, SqliteStore, verify_chain, verify_store,
};

/// Builds a chain of FV invoices where entry `tweak_at` gets its total
/// counter replaced by `total` (hashes recomputed, so only the counter rule
/// can catch it).
fn chain_with_total(tweak_at: u64, total: u64) -> Vec<Entry> {
    let mut head = Head::genesis("o");
    let mut out = Vec::new();
    for i in 1..=6u64 {
        let mut p = head
            .prepare(&invoice(InvoiceType::Fv, 2026, i as i64))
            .unwrap();
        if i == tweak_at {
            let n = p.fiscal_number.as_mut().unwrap();
            n.total = total;
            n.type_counter = total;
        }
        let e = p.seal(b"{}".to_vec());
        head = head.advance(&e);
        out.push(e);
    }
    out
}

fn counter_break(entries: Vec<Entry>) -> (u64, u64, u64) {
    let r = verify_chain("o", entries.into_iter().map(Ok), &ChainOnly);
    match r.error {
        Some(ChainError::CounterBreak {
            position,
            expected,
            found,
            ..
        }) => (position, expected.unwrap().total, found.unwrap().total),
        other => panic!("{other:?}"),
    }
}

#[test]
fn counters_that_jump_repeat_or_go_back_are_named() {
    assert_eq!(counter_break(chain_with_total(4, 9)), (4, 4, 9), "jump");
    assert_eq!(counter_break(chain_with_total(4, 3)), (4, 4, 3), "repeat");
    assert_eq!(
        counter_break(chain_with_total(4, 1)),
        (4, 4, 1),
        "backwards"
    );
    let ok = verify_chain("o", chain_with_total(0, 0).into_iter().map(Ok), &ChainOnly);
    assert!(ok.is_valid() && ok.verified == 6);
}

#[test]
fn z_numbers_and_time_order_are_checked() {
    let mut head = Head::genesis("o");
    let mut entries = Vec::new();
    for i in 0..3 {
        let mut p = head.prepare(&other(EntryKind::ZReport, 2026, i)).unwrap();
        if i == 2 {
            p.z_number = Some(7);
        }
        let e = p.seal(b"{}".to_vec());
        head = head.advance(&e);
        entries.push(e);
    }
    let r = verify_chain("o", entries.into_iter().map(Ok), &ChainOnly);
    assert!(matches!(
        r.error,
        Some(ChainError::ZNumberBreak {
            position: 3,
            expected: Some(3),
            found: Some(7),
            ..
        })
    ));

    let head = Head::genesis("o");
    let a = head
        .prepare(&invoice(InvoiceType::Fv, 2026, 100))
        .unwrap()
        .seal(b"{}".to_vec());
    let head2 = head.advance(&a);
    let mut p = head2.prepare(&invoice(InvoiceType::Fv, 2026, 100)).unwrap();
    p.time_ms = 50;
    let b = p.seal(b"{}".to_vec());
    let r = verify_chain("o", [Ok(a), Ok(b)], &ChainOnly);
    assert!(
        matches!(r.error, Some(ChainError::InvalidOrder { position: 2, .. })),
        "{:?}",
        r.error
    );
}

#[test]
fn a_chain_replayed_under_another_outlet_fails_at_genesis() {
    let entries = chain_with_total(0, 0);
    let r = verify_chain("other", entries.into_iter().map(Ok), &ChainOnly);
    assert!(matches!(
        r.error,
        Some(ChainError::WrongOutlet { position: 1, .. })
    ));
}

struct RejectSeq(u64);
impl EntryCheck for RejectSeq {
    fn check(&self, e: &Entry) -> Result<(), String> {
        if e.seq == self.0 {
            Err("bad signature".into())
        } else {
            Ok(())
        }
    }
}

#[test]
fn extra_checks_plug_in() {
    let r = verify_chain(
        "o",
        chain_with_total(0, 0).into_iter().map(Ok),
        &RejectSeq(5),
    );
    assert!(
        matches!(r.error, Some(ChainError::CheckFailed { position: 5, ref reason, .. }) if reason == "bad signature")
    );
    assert_eq!(r.verified, 4);
}

fn append_fv(store: &dyn LedgerStore, t: i64) -> Result<Entry, LedgerError> {
    store.append_new("o", &invoice(InvoiceType::Fv, 2026, t), 1, &mut |_| {
        b"{}".to_vec()
    })
}

type Backend = (
    &'static str,
    FaultyStore<Box<dyn LedgerStore>>,
    Option<tempfile::TempDir>,
);

fn faulty_backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Box<dyn LedgerStore> =
        Box::new(SqliteStore::open(dir.path().join("l.db")).unwrap());
    vec![
        (
            "memory",
            FaultyStore::new(Box::new(MemoryStore::new()) as Box<dyn LedgerStore>),
            None,
        ),
        ("sqlite", FaultyStore::new(sqlite), Some(dir)),
    ]
}

#[test]
fn a_failed_write_consumes_no_number() {
    for (name, store, _dir) in faulty_backends() {
        append_fv(&store, 1).unwrap();
        append_fv(&store, 2).unwrap();
        store.arm(Fault::FailWrite(1));
        let err = append_fv(&store, 3).unwrap_err();
        assert!(err.is_retryable(), "{name}: {err}");
        assert_eq!(store.head("o").unwrap().seq, 2, "{name}: nothing written");
        let e = append_fv(&store, 3).unwrap();
        assert_eq!(
            e.fiscal_number.unwrap().to_string(),
            "3/3 FV",
            "{name}: the number was not consumed"
        );
        assert!(verify_store(&store, "o", &ChainOnly).is_valid(), "{name}");
    }
}

#[test]
fn a_lost_sync_result_is_resolved_by_rereading_the_head() {
    for (name, store, _dir) in faulty_backends() {
        append_fv(&store, 1).unwrap();
        store.arm(Fault::FailAfterCommit(1));
        let head = store.head("o").unwrap();
        let entry = head
            .prepare(&invoice(InvoiceType::Fv, 2026, 2))
            .unwrap()
            .seal(b"{\"x\":1}".to_vec());
        assert!(
            store.append(&entry).is_err(),
            "{name}: the caller saw a failure"
        );
        // The outcome is unknown to the caller: the head tells the truth.
        let now = store.head("o").unwrap();
        assert_eq!(now.hash, entry.entry_hash, "{name}: the entry is durable");
        // Retrying the same entry cannot duplicate it.
        assert!(
            matches!(store.append(&entry), Err(LedgerError::Conflict { .. })),
            "{name}"
        );
        assert_eq!(store.range("o", 1, 10).unwrap().len(), 2, "{name}");
        assert!(verify_store(&store, "o", &ChainOnly).is_valid(), "{name}");
    }
}

#[test]
fn a_failed_batch_writes_nothing() {
    for (name, store, _dir) in faulty_backends() {
        let mut head = store.head("o").unwrap();
        let batch: Vec<Entry> = (0..8)
            .map(|i| {
                let e = head
                    .prepare(&invoice(InvoiceType::Fv, 2026, i))
                    .unwrap()
                    .seal(b"{}".to_vec());
                head = head.advance(&e);
                e
            })
            .collect();
        store.arm(Fault::FailWrite(1));
        assert!(
            store.append_batch(&batch).iter().all(Result::is_err),
            "{name}"
        );
        assert_eq!(store.head("o").unwrap().seq, 0, "{name}");
        assert!(
            store.append_batch(&batch).iter().all(Result::is_ok),
            "{name}"
        );
        assert_eq!(store.head("o").unwrap().seq, 8, "{name}");
    }
}
