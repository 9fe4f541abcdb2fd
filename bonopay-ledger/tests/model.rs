//! A property-based state machine: random appends, conflicting (stale)
//! appends, injected failures and reopens against a SQLite store, compared
//! after every step with a simple model (a list of entry hashes per outlet).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;

use bonopay_core::InvoiceType;
use bonopay_ledger::conformance::invoice;
use bonopay_ledger::{
    ChainOnly, Fault, FaultyStore, Hash, Head, LedgerError, LedgerStore, SqliteStore, verify_store,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append { outlet: usize, credit: bool },
    StaleAppend { outlet: usize },
    FailWrite { outlet: usize },
    FailAfterCommit { outlet: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, any::<bool>()).prop_map(|(outlet, credit)| Op::Append { outlet, credit }),
        2 => (0..3usize).prop_map(|outlet| Op::StaleAppend { outlet }),
        1 => (0..3usize).prop_map(|outlet| Op::FailWrite { outlet }),
        1 => (0..3usize).prop_map(|outlet| Op::FailAfterCommit { outlet }),
        1 => Just(Op::Reopen),
    ]
}

const OUTLETS: [&str; 3] = ["a", "b", "c"];

fn next_entry(
    store: &dyn LedgerStore,
    outlet: &str,
    credit: bool,
    clock: &mut i64,
) -> bonopay_ledger::Entry {
    *clock += 1;
    let t = if credit {
        InvoiceType::Fa
    } else {
        InvoiceType::Fv
    };
    store
        .head(outlet)
        .unwrap()
        .prepare(&invoice(t, 2026, *clock))
        .unwrap()
        .seal(format!("{{\"t\":{clock}}}").into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut store = FaultyStore::new(SqliteStore::open(&path).unwrap());
        let mut model: BTreeMap<&str, Vec<Hash>> = BTreeMap::new();
        let mut stale: BTreeMap<&str, Head> = BTreeMap::new();
        let mut clock = 0i64;
        for op in ops {
            match op {
                Op::Append { outlet, credit } => {
                    let o = OUTLETS[outlet];
                    stale.insert(o, store.head(o).unwrap());
                    let e = next_entry(&store, o, credit, &mut clock);
                    store.append(&e).unwrap();
                    model.entry(o).or_default().push(e.entry_hash);
                }
                Op::StaleAppend { outlet } => {
                    let o = OUTLETS[outlet];
                    if let Some(old) = stale.get(o)
                        && old.seq < model.get(o).map_or(0, Vec::len) as u64
                    {
                        {
                            clock += 1;
                            let e = old.prepare(&invoice(InvoiceType::Fv, 2026, clock.max(old.time_ms))).unwrap().seal(b"{}".to_vec());
                            let err = store.append(&e).unwrap_err();
                            prop_assert!(matches!(err, LedgerError::Conflict { .. }), "{err:?}");
                        }
                    }
                }
                Op::FailWrite { outlet } => {
                    let o = OUTLETS[outlet];
                    let e = next_entry(&store, o, false, &mut clock);
                    store.arm(Fault::FailWrite(1));
                    prop_assert!(store.append(&e).is_err());
                }
                Op::FailAfterCommit { outlet } => {
                    let o = OUTLETS[outlet];
                    let e = next_entry(&store, o, false, &mut clock);
                    store.arm(Fault::FailAfterCommit(1));
                    prop_assert!(store.append(&e).is_err());
                    // The caller re-reads the head to learn the outcome.
                    if store.head(o).unwrap().hash == e.entry_hash {
                        model.entry(o).or_default().push(e.entry_hash);
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = FaultyStore::new(SqliteStore::open(&path).unwrap());
                }
            }
            for o in OUTLETS {
                let want = model.get(o).cloned().unwrap_or_default();
                let head = store.head(o).unwrap();
                prop_assert_eq!(head.seq, want.len() as u64);
                if let Some(last) = want.last() {
                    prop_assert_eq!(&head.hash, last);
                }
            }
        }
        for o in OUTLETS {
            let report = verify_store(&store, o, &ChainOnly);
            prop_assert!(report.is_valid(), "{:?}", report.error);
            let stored: Vec<Hash> = store.iter_from(o, 1).map(|e| e.unwrap().entry_hash).collect();
            prop_assert_eq!(stored, model.get(o).cloned().unwrap_or_default());
        }
    }
}
