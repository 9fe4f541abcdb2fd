//! The conformance suite every [`OutboxStore`] backend runs (feature
//! `testing`; a test helper, so not in a production build). Each check takes a fresh, empty store and panics with a
//! message on the first violation; `run_all` runs them all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;

use crate::dgi::outbox::{ItemState, NewItem, OutboxStore};
use crate::dgi::{DgiClient, DgiInvoiceRequest, DgiOperator, DgiTotals};

/// A new item for `outlet`/`seq`.
#[must_use]
pub fn item(outlet: &str, seq: u64, sealed_at_ms: i64) -> NewItem {
    NewItem {
        outlet: outlet.into(),
        seq,
        merchant_nif: "A1309334L".into(),
        sealed_at_ms,
        request: DgiInvoiceRequest {
            nif: "A1309334L".into(),
            isf: String::new(),
            rn: format!("{outlet}/2026/{seq}"),
            mode: "ttc".into(),
            invoice_type: "FV".into(),
            items: Vec::new(),
            client: DgiClient {
                client_type: "PP".into(),
                type_desc: String::new(),
                nif: String::new(),
                name: String::new(),
                contact: String::new(),
                address: String::new(),
            },
            operator: DgiOperator {
                id: "c1".into(),
                name: "C".into(),
            },
            payment: Vec::new(),
            reference: String::new(),
            reference_type: String::new(),
            reference_desc: String::new(),
            comments: BTreeMap::new(),
            cur_code: "CDF".into(),
            cur_date: String::new(),
            cur_rate: Decimal::ONE,
        },
        ours: DgiTotals {
            total: Decimal::new(11600, 2),
            vtotal: Decimal::new(1600, 2),
        },
    }
}

/// Enqueue is idempotent per position and moves the cursor atomically.
pub fn enqueue_and_cursor(store: &dyn OutboxStore) {
    assert_eq!(store.cursor("o1").unwrap(), 0);
    store
        .enqueue("o1", 3, &[item("o1", 1, 10), item("o1", 3, 30)])
        .unwrap();
    assert_eq!(store.cursor("o1").unwrap(), 3);
    assert_eq!(store.cursor("o2").unwrap(), 0);
    // A re-scan after a crash inserts nothing twice and never moves back.
    store.enqueue("o1", 2, &[item("o1", 1, 10)]).unwrap();
    assert_eq!(store.cursor("o1").unwrap(), 3);
    let due = store.due(i64::MAX, 100).unwrap();
    assert_eq!(due.len(), 2);
    let it = store.get("o1", 3).unwrap().unwrap();
    assert_eq!(it.state, ItemState::Queued);
    assert_eq!(it.request, item("o1", 3, 30).request);
    assert_eq!(it.ours, item("o1", 3, 30).ours);
    assert!(store.get("o1", 2).unwrap().is_none());
}

/// Updates are durable, change numbers increase, due respects times.
pub fn update_due_and_changes(store: &dyn OutboxStore) {
    store
        .enqueue("o1", 2, &[item("o1", 1, 10), item("o1", 2, 20)])
        .unwrap();
    let mut a = store.claim("o1", 1, 0, 60_000).unwrap().unwrap();
    let before = store.changes_since(0, 100).unwrap();
    assert_eq!(before.len(), 2);
    let c0 = before.iter().map(|i| i.change).max().unwrap();
    a.state = ItemState::Submitted;
    a.uid = Some("u-1".into());
    a.theirs = Some(a.ours);
    a.attempts = 2;
    a.next_attempt_ms = 1_000;
    a.error = Some("x".into());
    let c1 = store.update(&a).unwrap();
    assert!(c1 > c0);
    let back = store.get("o1", 1).unwrap().unwrap();
    assert_eq!(back.state, ItemState::Submitted);
    assert_eq!(back.uid.as_deref(), Some("u-1"));
    assert_eq!(back.theirs, Some(a.ours));
    assert_eq!(back.attempts, 2);
    assert_eq!(back.change, c1);
    // Not due before its time; the other one is.
    let due = store.due(999, 100).unwrap();
    assert_eq!(due.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![2]);
    assert_eq!(store.due(1_000, 100).unwrap().len(), 2);
    assert_eq!(store.in_flight().unwrap().len(), 1);
    let changes = store.changes_since(c0, 100).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].seq, 1);
    // Final items are never due.
    a.state = ItemState::Synced;
    a.next_attempt_ms = 0;
    store.update(&a).unwrap();
    assert_eq!(store.due(i64::MAX, 100).unwrap().len(), 1);
    // What a worker claims, it may update; claim_due gives in-flight
    // items first.
    let claimed = store.claim_due(i64::MAX - 1, 60_000, 100).unwrap();
    assert!(claimed.iter().all(|i| !i.state.is_final()));
    // Unknown items cannot be updated.
    let mut ghost = a.clone();
    ghost.seq = 99;
    assert!(store.update(&ghost).is_err());
}

/// Summary counts states and ages per outlet.
pub fn summary(store: &dyn OutboxStore) {
    store
        .enqueue(
            "o1",
            3,
            &[item("o1", 1, 10), item("o1", 2, 20), item("o1", 3, 30)],
        )
        .unwrap();
    store.enqueue("o2", 1, &[item("o2", 1, 5)]).unwrap();
    let mut x = store.claim("o1", 1, 0, 60_000).unwrap().unwrap();
    x.state = ItemState::Synced;
    x.updated_ms = 500;
    store.update(&x).unwrap();
    let mut y = store.claim("o1", 2, 0, 60_000).unwrap().unwrap();
    y.state = ItemState::Queued;
    y.attempts = 1;
    store.update(&y).unwrap();
    let s = store.summary().unwrap();
    let o1 = s.iter().find(|o| o.outlet == "o1").unwrap();
    assert_eq!(o1.counts.get(&ItemState::Synced), Some(&1));
    assert_eq!(o1.counts.get(&ItemState::Queued), Some(&2));
    assert_eq!(o1.oldest_unsynced_ms, Some(20));
    assert_eq!(o1.last_synced_ms, Some(500));
    assert_eq!(o1.failing, 1);
    let o2 = s.iter().find(|o| o.outlet == "o2").unwrap();
    assert_eq!(o2.oldest_unsynced_ms, Some(5));
    assert_eq!(o2.last_synced_ms, None);
}

/// Concurrent updates from threads lose nothing and change numbers stay
/// unique.
pub fn concurrent_updates(store: Arc<dyn OutboxStore>) {
    let items: Vec<_> = (1..=40).map(|s| item("o1", s, s as i64)).collect();
    store.enqueue("o1", 40, &items).unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for s in (1..=40).filter(|s| s % 4 == t) {
                    let mut it = store.claim("o1", s, 0, 60_000).unwrap().unwrap();
                    it.state = ItemState::Synced;
                    store.update(&it).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = store.changes_since(0, 1000).unwrap();
    assert_eq!(all.len(), 40);
    assert!(all.iter().all(|i| i.state == ItemState::Synced));
    let mut changes: Vec<u64> = all.iter().map(|i| i.change).collect();
    changes.dedup();
    assert_eq!(changes.len(), 40, "change numbers are unique");
}

/// Runs every check, each on a fresh store from `fresh`.
pub fn run_all(fresh: &dyn Fn() -> Arc<dyn OutboxStore>) {
    enqueue_and_cursor(&*fresh());
    update_due_and_changes(&*fresh());
    summary(&*fresh());
    concurrent_updates(fresh());
}
