//! The conformance suite every [`LedgerStore`] backend must pass.
//!
//! Call [`run_all`] from a backend's tests with a factory that returns a
//! fresh, empty store each time:
//!
//! ```
//! bonopay_ledger::conformance::run_all(&|| Box::new(bonopay_ledger::MemoryStore::new()));
//! ```
//!
//! Failures panic with a message naming the broken promise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;

use bonopay_core::InvoiceType;

use crate::{
    ChainOnly, Entry, EntryKind, EntryMeta, Head, IndexKey, LedgerError, LedgerStore,
    LedgerStoreExt, verify_store,
};

/// Builds a fresh, empty store.
pub type Factory<'a> = &'a dyn Fn() -> Box<dyn LedgerStore>;

/// Metadata of an invoice (or credit note for FA/EA) at `time_ms`.
#[must_use]
pub fn invoice(t: InvoiceType, year: i32, time_ms: i64) -> EntryMeta {
    EntryMeta {
        kind: if t.is_credit_note() {
            EntryKind::CreditNote
        } else {
            EntryKind::Invoice
        },
        invoice_type: Some(t),
        fiscal_year: year,
        time_ms,
    }
}

/// Metadata of an unnumbered entry.
#[must_use]
pub fn other(kind: EntryKind, year: i32, time_ms: i64) -> EntryMeta {
    EntryMeta {
        kind,
        invoice_type: None,
        fiscal_year: year,
        time_ms,
    }
}

fn payload(p: &crate::Prepared) -> Vec<u8> {
    format!(
        r#"{{"prev":"{}","seq":{}}}"#,
        hex::encode(p.prev_hash),
        p.seq
    )
    .into_bytes()
}

fn append(store: &dyn LedgerStore, outlet: &str, meta: &EntryMeta) -> Entry {
    store.append_new(outlet, meta, 1, &mut payload).unwrap()
}

/// Runs every check.
pub fn run_all(factory: Factory<'_>) {
    sequencing(factory);
    fiscal_year_rollover(factory);
    cas_conflicts(factory);
    refuses_forged_entries(factory);
    batches(factory);
    reads_and_iteration(factory);
    concurrent_same_outlet(factory);
    concurrent_many_outlets(factory);
    index_keys(factory);
}

/// Index keys are written with the entry; a taken unique key refuses the
/// entry (before the head is even checked) and names the holder.
pub fn index_keys(factory: Factory<'_>) {
    let store = factory();
    let head = store.head("o1").unwrap();
    let a = head
        .prepare(&invoice(InvoiceType::Fv, 2026, 1))
        .unwrap()
        .seal(b"{}".to_vec())
        .with_index([
            IndexKey::unique("idempotency", "m1/k1"),
            IndexKey::multi("credits", "CODE1"),
        ]);
    store.append(&a).unwrap();
    assert_eq!(
        store.find_index("idempotency", "m1/k1").unwrap(),
        [("o1".to_owned(), 1)]
    );
    assert_eq!(store.find_index("idempotency", "m1/k2").unwrap(), []);

    // Same unique key on another outlet: refused, nothing written.
    let b = store
        .head("o2")
        .unwrap()
        .prepare(&invoice(InvoiceType::Fv, 2026, 1))
        .unwrap()
        .seal(b"{}".to_vec())
        .with_index([IndexKey::unique("idempotency", "m1/k1")]);
    match store.append(&b) {
        Err(LedgerError::Duplicate { outlet, seq, .. }) => {
            assert_eq!((outlet.as_str(), seq), ("o1", 1))
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(store.head("o2").unwrap().seq, 0);

    // A duplicate that also lost the race reports the duplicate.
    let stale = head
        .prepare(&invoice(InvoiceType::Fv, 2026, 1))
        .unwrap()
        .seal(b"{}".to_vec())
        .with_index([IndexKey::unique("idempotency", "m1/k1")]);
    assert!(matches!(
        store.append(&stale),
        Err(LedgerError::Duplicate { .. })
    ));

    // Non-unique keys accumulate; in-batch duplicates of a unique key are caught.
    let mut h = store.head("o1").unwrap();
    let mut batch = Vec::new();
    for i in 0..3 {
        let e = h
            .prepare(&invoice(InvoiceType::Fa, 2026, 2 + i))
            .unwrap()
            .seal(b"{}".to_vec())
            .with_index([
                IndexKey::multi("credits", "CODE1"),
                IndexKey::unique(
                    "idempotency",
                    if i == 2 {
                        "m1/k2".to_owned()
                    } else {
                        format!("m1/c{i}")
                    },
                ),
            ]);
        h = h.advance(&e);
        batch.push(e);
    }
    let dup = h
        .prepare(&invoice(InvoiceType::Fv, 2026, 9))
        .unwrap()
        .seal(b"{}".to_vec())
        .with_index([IndexKey::unique("idempotency", "m1/k2")]);
    batch.push(dup);
    let r = store.append_batch(&batch);
    assert!(r[..3].iter().all(Result::is_ok), "{r:?}");
    assert!(
        matches!(r[3], Err(LedgerError::Duplicate { seq: 4, .. })),
        "{:?}",
        r[3]
    );
    let credits: Vec<u64> = store
        .find_index("credits", "CODE1")
        .unwrap()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(credits, [1, 2, 3, 4]);
    assert_eq!(
        store.entry("o1", 2).unwrap().unwrap().index,
        [],
        "reads return entries without index keys"
    );
}

/// Numbers, heads and Z numbers advance exactly by one.
pub fn sequencing(factory: Factory<'_>) {
    let store = factory();
    let head = store.head("o1").unwrap();
    assert_eq!(
        head,
        Head::genesis("o1"),
        "an unknown outlet has the genesis head"
    );
    let types = [
        InvoiceType::Fv,
        InvoiceType::Fv,
        InvoiceType::Ft,
        InvoiceType::Fa,
        InvoiceType::Ev,
        InvoiceType::Fv,
    ];
    let mut labels = Vec::new();
    for (i, t) in types.iter().enumerate() {
        let e = append(&*store, "o1", &invoice(*t, 2026, 1000 + i as i64));
        labels.push(e.fiscal_number.unwrap().to_string());
    }
    assert_eq!(
        labels,
        ["1/1 FV", "2/2 FV", "1/3 FT", "1/4 FA", "1/5 EV", "3/6 FV"]
    );
    let z1 = append(&*store, "o1", &other(EntryKind::ZReport, 2026, 2000));
    let z2 = append(&*store, "o1", &other(EntryKind::ZReport, 2026, 2001));
    assert_eq!((z1.z_number, z2.z_number), (Some(1), Some(2)));
    assert_eq!(z1.fiscal_number, None);
    let head = store.head("o1").unwrap();
    assert_eq!(head.seq, 8);
    assert_eq!(head.hash, z2.entry_hash);
    assert_eq!(head.counters.total, 6);
    assert_eq!(head.z_number, 2);
    assert!(verify_store(&*store, "o1", &ChainOnly).is_valid());
}

/// Numbers restart at 1 in a new fiscal year; the chain does not.
pub fn fiscal_year_rollover(factory: Factory<'_>) {
    let store = factory();
    append(&*store, "o1", &invoice(InvoiceType::Fv, 2026, 1));
    append(&*store, "o1", &invoice(InvoiceType::Fv, 2026, 2));
    let e = append(&*store, "o1", &invoice(InvoiceType::Fv, 2027, 3));
    assert_eq!(e.fiscal_number.unwrap().to_string(), "1/1 FV");
    assert_eq!(e.seq, 3);
    let back = store
        .head("o1")
        .unwrap()
        .prepare(&invoice(InvoiceType::Fv, 2026, 4));
    assert!(
        matches!(back, Err(LedgerError::InvalidEntry(_))),
        "a year cannot go back"
    );
    let early = store
        .head("o1")
        .unwrap()
        .prepare(&invoice(InvoiceType::Fv, 2027, 2));
    assert!(
        matches!(early, Err(LedgerError::InvalidEntry(_))),
        "time cannot go back"
    );
    assert!(
        store
            .entry_by_fiscal_number("o1", 2026, 2)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store
            .entry_by_fiscal_number("o1", 2027, 1)
            .unwrap()
            .unwrap()
            .seq,
        3
    );
    assert!(verify_store(&*store, "o1", &ChainOnly).is_valid());
}

/// Append is a compare-and-swap: a stale writer gets `Conflict` and writes nothing.
pub fn cas_conflicts(factory: Factory<'_>) {
    let store = factory();
    append(&*store, "o1", &invoice(InvoiceType::Fv, 2026, 1));
    let head = store.head("o1").unwrap();
    let a = head
        .prepare(&invoice(InvoiceType::Fv, 2026, 2))
        .unwrap()
        .seal(b"{\"a\":1}".to_vec());
    let b = head
        .prepare(&invoice(InvoiceType::Fv, 2026, 2))
        .unwrap()
        .seal(b"{\"b\":1}".to_vec());
    store.append(&a).unwrap();
    let err = store.append(&b).unwrap_err();
    assert!(
        matches!(err, LedgerError::Conflict { actual_seq: 2, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(
        store.head("o1").unwrap().seq,
        2,
        "the losing writer wrote nothing"
    );
    assert_eq!(store.entry("o1", 2).unwrap().unwrap(), a);
    assert_eq!(
        store.range("o1", 1, 10).unwrap().len(),
        2,
        "no fork, no extra row"
    );
    // Re-appending the same entry is a conflict too, not a duplicate.
    assert!(matches!(
        store.append(&a),
        Err(LedgerError::Conflict { .. })
    ));
    assert!(verify_store(&*store, "o1", &ChainOnly).is_valid());
}

/// The store re-derives counters and hashes instead of trusting the caller.
pub fn refuses_forged_entries(factory: Factory<'_>) {
    let store = factory();
    append(&*store, "o1", &invoice(InvoiceType::Fv, 2026, 1));
    let head = store.head("o1").unwrap();
    let good = head.prepare(&invoice(InvoiceType::Fv, 2026, 2)).unwrap();

    let mut skip = good.clone();
    skip.fiscal_number.as_mut().unwrap().total += 1;
    let e = skip.seal(b"{}".to_vec());
    assert!(
        matches!(store.append(&e), Err(LedgerError::InvalidEntry(_))),
        "a skipped number is refused"
    );

    let mut bad_hash = good.clone().seal(b"{}".to_vec());
    bad_hash.entry_hash[0] ^= 0xff;
    assert!(matches!(
        store.append(&bad_hash),
        Err(LedgerError::InvalidEntry(_))
    ));

    let mut bad_payload = good.clone().seal(b"{}".to_vec());
    bad_payload.payload = b"{\"x\":1}".to_vec();
    assert!(matches!(
        store.append(&bad_payload),
        Err(LedgerError::InvalidEntry(_))
    ));

    let mut z = good.clone();
    z.kind = EntryKind::ZReport;
    z.fiscal_number = None;
    z.z_number = Some(5);
    assert!(matches!(
        store.append(&z.seal(b"{}".to_vec())),
        Err(LedgerError::InvalidEntry(_))
    ));

    assert_eq!(store.head("o1").unwrap().seq, 1, "nothing was written");
    store.append(&good.seal(b"{}".to_vec())).unwrap();
}

/// A batch chains entries, and one bad entry does not sink the others.
pub fn batches(factory: Factory<'_>) {
    let store = factory();
    let mut h1 = store.head("o1").unwrap();
    let mut h2 = store.head("o2").unwrap();
    let mut batch = Vec::new();
    for i in 0..5 {
        let e = h1
            .prepare(&invoice(InvoiceType::Fv, 2026, i))
            .unwrap()
            .seal(b"{}".to_vec());
        h1 = h1.advance(&e);
        batch.push(e);
        let e = h2
            .prepare(&invoice(InvoiceType::Ft, 2026, i))
            .unwrap()
            .seal(b"{}".to_vec());
        h2 = h2.advance(&e);
        batch.push(e);
    }
    // A stale entry for o2 in the middle.
    let stale = Head::genesis("o2")
        .prepare(&invoice(InvoiceType::Ft, 2026, 0))
        .unwrap()
        .seal(b"{}".to_vec());
    batch.insert(5, stale);
    let results = store.append_batch(&batch);
    assert_eq!(results.len(), 11);
    assert!(
        matches!(results[5], Err(LedgerError::Conflict { .. })),
        "{:?}",
        results[5]
    );
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 10);
    assert_eq!(store.head("o1").unwrap().seq, 5);
    assert_eq!(store.head("o2").unwrap().seq, 5);
    assert!(verify_store(&*store, "o1", &ChainOnly).is_valid());
    assert!(verify_store(&*store, "o2", &ChainOnly).is_valid());
    assert_eq!(store.outlets().unwrap(), ["o1", "o2"]);
}

/// Reads by seq, by number, by range, and streaming iteration over more
/// entries than any page.
pub fn reads_and_iteration(factory: Factory<'_>) {
    let store = factory();
    let n = 2_500u64;
    let mut head = store.head("o1").unwrap();
    let mut batch = Vec::new();
    for i in 0..n {
        let t = if i % 10 == 9 {
            InvoiceType::Fa
        } else {
            InvoiceType::Fv
        };
        let e = head
            .prepare(&invoice(t, 2026, i as i64))
            .unwrap()
            .seal(format!("{{\"i\":{i}}}").into_bytes());
        head = head.advance(&e);
        batch.push(e);
        if batch.len() == 500 {
            assert!(store.append_batch(&batch).iter().all(Result::is_ok));
            batch.clear();
        }
    }
    let all: Vec<Entry> = store.iter_from("o1", 1).map(Result::unwrap).collect();
    assert_eq!(all.len() as u64, n);
    assert!(
        all.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1),
        "iteration is in seq order, no gaps"
    );
    let tail: Vec<u64> = store
        .iter_from("o1", n - 2)
        .map(|e| e.unwrap().seq)
        .collect();
    assert_eq!(tail, [n - 2, n - 1, n]);
    assert_eq!(store.iter_from("o1", n + 1).count(), 0);
    assert_eq!(store.iter_from("nobody", 1).count(), 0);
    let r = store.range("o1", 1000, 1009).unwrap();
    assert_eq!(
        r.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1000..=1009).collect::<Vec<_>>()
    );
    assert_eq!(
        store.entry("o1", 42).unwrap().unwrap().payload,
        b"{\"i\":41}"
    );
    assert_eq!(store.entry("o1", n + 1).unwrap(), None);
    assert_eq!(store.entry("o1", 0).unwrap(), None);
    let by_number = store
        .entry_by_fiscal_number("o1", 2026, 10)
        .unwrap()
        .unwrap();
    assert_eq!(by_number.fiscal_number.unwrap().to_string(), "1/10 FA");
    assert_eq!(store.entry_by_fiscal_number("o1", 2025, 10).unwrap(), None);
    assert!(verify_store(&*store, "o1", &ChainOnly).is_valid());
}

fn hammer(store: Arc<dyn LedgerStore>, outlet: String, per_thread: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    for i in 0..per_thread {
        let t = if i % 3 == 0 {
            InvoiceType::Ft
        } else {
            InvoiceType::Fv
        };
        loop {
            // The clock of each thread is the seq it sees: monotonic per outlet.
            let head = store.head(&outlet).unwrap();
            let meta = invoice(t, 2026, head.seq as i64);
            let e = head
                .prepare(&meta)
                .unwrap()
                .seal(payload(&head.prepare(&meta).unwrap()));
            match store.append(&e) {
                Ok(_) => {
                    out.push(e);
                    break;
                }
                Err(LedgerError::Conflict { .. }) => continue,
                Err(err) => panic!("append failed: {err}"),
            }
        }
    }
    out
}

fn assert_gapless(store: &dyn LedgerStore, outlet: &str, expected: usize, acked: &[Entry]) {
    let report = verify_store(store, outlet, &ChainOnly);
    assert!(report.is_valid(), "{:?}", report.error);
    assert_eq!(report.verified as usize, expected);
    let totals: BTreeSet<u64> = acked
        .iter()
        .map(|e| e.fiscal_number.unwrap().total)
        .collect();
    assert_eq!(
        totals.len(),
        expected,
        "no duplicate number was acknowledged"
    );
    assert_eq!(
        totals.iter().copied().collect::<Vec<_>>(),
        (1..=expected as u64).collect::<Vec<_>>(),
        "no gap"
    );
    for e in acked {
        assert_eq!(
            &store.entry(outlet, e.seq).unwrap().unwrap(),
            e,
            "every acknowledged entry is stored as acknowledged"
        );
    }
}

/// Many threads on one outlet: no gap, no duplicate, chain intact.
pub fn concurrent_same_outlet(factory: Factory<'_>) {
    let store: Arc<dyn LedgerStore> = Arc::from(factory());
    let threads = 8;
    let per = 40;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = Arc::clone(&store);
            thread::spawn(move || hammer(s, "hot".into(), per))
        })
        .collect();
    let acked: Vec<Entry> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_gapless(&*store, "hot", threads * per, &acked);
}

/// Threads on different outlets never interfere.
pub fn concurrent_many_outlets(factory: Factory<'_>) {
    let store: Arc<dyn LedgerStore> = Arc::from(factory());
    let outlets = 6;
    let per = 50;
    let handles: Vec<_> = (0..outlets * 2)
        .map(|i| {
            let s = Arc::clone(&store);
            thread::spawn(move || (i % outlets, hammer(s, format!("o{}", i % outlets), per)))
        })
        .collect();
    let mut by_outlet = vec![Vec::new(); outlets];
    for h in handles {
        let (o, acked) = h.join().unwrap();
        by_outlet[o].extend(acked);
    }
    for (o, acked) in by_outlet.iter().enumerate() {
        assert_gapless(&*store, &format!("o{o}"), 2 * per, acked);
    }
}

/// Several handles on one storage (several server instances on one
/// database, or several processes on one SQLite file), their threads all
/// appending to one outlet and to their own: no gap, no duplicate, no fork.
pub fn concurrent_handles(stores: &[Arc<dyn LedgerStore>]) {
    let per = 30;
    let handles: Vec<_> = stores
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let hot = Arc::clone(s);
            let own = Arc::clone(s);
            [
                thread::spawn(move || ("shared".to_owned(), hammer(hot, "shared".into(), per))),
                thread::spawn(move || {
                    let o = format!("own{i}");
                    (o.clone(), hammer(own, o, per))
                }),
            ]
        })
        .collect();
    let mut by_outlet: std::collections::BTreeMap<String, Vec<Entry>> = Default::default();
    for h in handles {
        let (o, acked) = h.join().unwrap();
        by_outlet.entry(o).or_default().extend(acked);
    }
    for (o, acked) in &by_outlet {
        let expected = if o == "shared" {
            per * stores.len()
        } else {
            per
        };
        for s in stores {
            assert_gapless(&**s, o, expected, acked);
        }
    }
}
