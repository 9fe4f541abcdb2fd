//! The conformance suite every [`DeliveryStore`] backend runs (feature
//! `conformance`): memory, SQLite and PostgreSQL. Each check panics with a
//! message naming the broken promise.
//!
//! ```
//! use std::sync::Arc;
//! use bonopay_server_example::server::deliveries::{MemoryDeliveryStore, conformance};
//!
//! conformance::run_all(&|| Arc::new(MemoryDeliveryStore::default()));
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::{Channel, DeliveryRecord, DeliveryStatus, DeliveryStore, DeliveryStoreError};
pub use crate::server::auth::concurrent::THREADS;
use crate::server::auth::concurrent::race;

/// Opens a store: a fresh, empty one for [`run_all`]; one more handle
/// on the same database for [`shared_database`].
pub type Open<'a> = &'a dyn Fn() -> Arc<dyn DeliveryStore>;

/// A failed WhatsApp attempt `id` for `invoice_id` of `merchant`.
#[must_use]
pub fn record(id: &str, merchant: &str, invoice_id: &str) -> DeliveryRecord {
    DeliveryRecord {
        id: id.into(),
        invoice_id: invoice_id.into(),
        merchant_nif: merchant.into(),
        channel: Channel::Whatsapp,
        recipient: "+243812345678".into(),
        status: DeliveryStatus::Failed,
        error: Some("the messaging API answered 503".into()),
        created_at: "2026-03-01T08:00:00.000Z".into(),
        completed_at: "2026-03-01T08:00:01.250Z".into(),
    }
}

/// Runs every check, each on a fresh store (except
/// [`shared_database`]).
pub fn run_all(fresh: Open<'_>) {
    round_trips_oldest_first_per_merchant_and_invoice(fresh);
    an_id_is_recorded_once(fresh);
    concurrent_records(fresh);
    waiting_deliveries_are_taken_once(fresh);
    stalled_sends_are_taken_over_once(fresh);
}

/// A record claimed for sending is not stalled while its claim lasts;
/// once the claim ends (the sender died mid-send) it is reported with
/// that claim, and of several instances exactly one takes it over. A
/// claim under a stale `held` takes nothing, and the settle still
/// works.
pub fn stalled_sends_are_taken_over_once(fresh: Open<'_>) {
    const T0: i64 = 1_780_000_000_000;
    const LEASE: i64 = 45_000;
    let s = fresh();
    let w = DeliveryRecord {
        status: DeliveryStatus::Waiting,
        error: None,
        ..record("dlv_s", "A1", "o1:7")
    };
    s.record(&w).unwrap();
    assert!(s.stalled(T0).unwrap().is_empty(), "waiting is not stalled");
    assert!(
        !s.claim("dlv_s", DeliveryStatus::Sending, None, T0 + LEASE)
            .unwrap(),
        "not sending yet"
    );
    assert!(
        s.claim("dlv_s", DeliveryStatus::Waiting, None, T0 + LEASE)
            .unwrap()
    );
    assert!(
        !s.claim("dlv_s", DeliveryStatus::Waiting, None, T0 + LEASE)
            .unwrap(),
        "taken once"
    );
    assert!(s.waiting().unwrap().is_empty());
    assert_eq!(
        s.list("A1", "o1:7").unwrap()[0].status,
        DeliveryStatus::Sending
    );
    assert!(
        s.stalled(T0 + LEASE - 1).unwrap().is_empty(),
        "within its claim"
    );
    let stalled = s.stalled(T0 + LEASE + 1).unwrap();
    assert_eq!(stalled.len(), 1, "{stalled:?}");
    assert_eq!(stalled[0].held, Some(T0 + LEASE));
    assert_eq!(stalled[0].record.id, "dlv_s");
    assert_eq!(stalled[0].record.status, DeliveryStatus::Sending);
    assert!(
        !s.claim("dlv_s", DeliveryStatus::Sending, Some(T0), T0 + 3 * LEASE)
            .unwrap(),
        "a stale claim takes nothing"
    );

    let theirs = Arc::clone(&s);
    let taken = race(move |i| {
        let until = T0 + 2 * LEASE + i64::try_from(i).unwrap();
        theirs
            .claim("dlv_s", DeliveryStatus::Sending, Some(T0 + LEASE), until)
            .unwrap()
    });
    assert_eq!(
        taken.iter().filter(|t| **t).count(),
        1,
        "exactly one instance takes a stalled send over"
    );
    assert!(
        s.stalled(T0 + LEASE + 1).unwrap().is_empty(),
        "the new claim holds"
    );
    let sent = DeliveryRecord {
        status: DeliveryStatus::Sent,
        completed_at: "2026-03-01T09:00:00.000Z".into(),
        ..w.clone()
    };
    assert!(s.transition(DeliveryStatus::Sending, &sent).unwrap());
    assert!(
        s.stalled(T0 + 10 * LEASE).unwrap().is_empty(),
        "settled is never stalled"
    );
    assert_eq!(s.list("A1", "o1:7").unwrap(), vec![sent]);
}

/// A waiting record is listed by `waiting`; of several takers exactly
/// one moves it (to sending), and only the taker settles it.
pub fn waiting_deliveries_are_taken_once(fresh: Open<'_>) {
    let s = fresh();
    let w = DeliveryRecord {
        status: DeliveryStatus::Waiting,
        error: None,
        ..record("dlv_w", "A1", "o1:1")
    };
    s.record(&record("dlv_f", "A1", "o1:1")).unwrap();
    s.record(&w).unwrap();
    assert_eq!(
        s.waiting().unwrap(),
        vec![w.clone()],
        "only waiting records"
    );
    let sending = DeliveryRecord {
        status: DeliveryStatus::Sending,
        ..w.clone()
    };
    let theirs = Arc::clone(&s);
    let sending2 = sending.clone();
    let taken = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..THREADS {
            sc.spawn(|| {
                if theirs
                    .transition(DeliveryStatus::Waiting, &sending2)
                    .unwrap()
                {
                    taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(taken.into_inner(), 1, "exactly one taker");
    assert!(s.waiting().unwrap().is_empty());
    let sent = DeliveryRecord {
        status: DeliveryStatus::Sent,
        completed_at: "2026-03-01T09:00:00.000Z".into(),
        ..w.clone()
    };
    assert!(
        !s.transition(DeliveryStatus::Waiting, &sent).unwrap(),
        "no longer waiting"
    );
    assert!(s.transition(DeliveryStatus::Sending, &sent).unwrap());
    assert_eq!(s.list("A1", "o1:1").unwrap()[1], sent, "settled as written");
}

/// Every field reads back as written; a list holds one merchant's
/// attempts at one invoice, oldest first.
pub fn round_trips_oldest_first_per_merchant_and_invoice(fresh: Open<'_>) {
    let s = fresh();
    let first = record("dlv_1", "A1", "o1:1");
    let second = DeliveryRecord {
        id: "dlv_2".into(),
        channel: Channel::Email,
        recipient: "caissier+reçus@exemple.cd".into(),
        status: DeliveryStatus::Sent,
        error: None,
        ..record("dlv_2", "A1", "o1:1")
    };
    let other_invoice = record("dlv_3", "A1", "o1:2");
    let other_merchant = record("dlv_4", "B2", "o1:1");
    for d in [&first, &other_invoice, &second, &other_merchant] {
        s.record(d).unwrap();
    }
    assert_eq!(
        s.list("A1", "o1:1").unwrap(),
        vec![first, second],
        "oldest first, fields as written"
    );
    assert_eq!(s.list("A1", "o1:2").unwrap(), vec![other_invoice]);
    assert_eq!(s.list("B2", "o1:1").unwrap(), vec![other_merchant]);
    assert!(s.list("B2", "o1:2").unwrap().is_empty());
    assert!(s.list("a1", "o1:1").unwrap().is_empty(), "case-sensitive");
}

/// A second record with a taken id fails and changes nothing.
pub fn an_id_is_recorded_once(fresh: Open<'_>) {
    let s = fresh();
    let d = record("dlv_dup", "A1", "o1:1");
    s.record(&d).unwrap();
    let again = DeliveryRecord {
        status: DeliveryStatus::Sent,
        error: None,
        ..d.clone()
    };
    assert!(matches!(
        s.record(&again),
        Err(DeliveryStoreError::Storage(_))
    ));
    assert_eq!(s.list("A1", "o1:1").unwrap(), vec![d]);
}

/// [`THREADS`] threads record at once: nothing is lost, and each
/// thread's records list in the order it made them.
pub fn concurrent_records(fresh: Open<'_>) {
    const PER_THREAD: usize = 10;
    let s = fresh();
    let theirs = Arc::clone(&s);
    race(move |t| {
        for i in 0..PER_THREAD {
            theirs
                .record(&record(&format!("dlv_{t}_{i}"), "A1", "o1:1"))
                .unwrap_or_else(|e| panic!("record {t}/{i} refused: {e}"));
        }
    });
    let all = s.list("A1", "o1:1").unwrap();
    assert_eq!(all.len(), THREADS * PER_THREAD, "no record lost");
    for t in 0..THREADS {
        let mine: Vec<String> = all
            .iter()
            .map(|d| d.id.clone())
            .filter(|id| id.starts_with(&format!("dlv_{t}_")))
            .collect();
        let expected: Vec<String> = (0..PER_THREAD).map(|i| format!("dlv_{t}_{i}")).collect();
        assert_eq!(mine, expected, "thread {t}'s records, oldest first");
    }
}

/// Several handles on one database (as several server instances):
/// what one records, the others list at once, in order. `open` returns
/// a new handle on the same, initially empty, database on every call.
pub fn shared_database(open: Open<'_>) {
    let a = open();
    let b = open();
    let first = record("dlv_a", "A1", "o1:1");
    let second = record("dlv_b", "A1", "o1:1");
    a.record(&first).unwrap();
    b.record(&second).unwrap();
    for s in [&a, &b] {
        assert_eq!(
            s.list("A1", "o1:1").unwrap(),
            vec![first.clone(), second.clone()],
            "every handle lists every attempt, oldest first"
        );
    }
    assert!(
        b.record(&first).is_err(),
        "an id taken through a is taken for b"
    );
}
