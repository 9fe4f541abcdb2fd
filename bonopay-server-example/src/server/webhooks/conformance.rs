//! The [`WebhookStore`] conformance suite (feature `conformance`): every
//! backend (SQLite, PostgreSQL) runs it, so the service behaves the same
//! over either.
//!
//! [`run_all`] runs every check on fresh stores, the racing ones with
//! [`THREADS`] threads on one handle. [`shared_database`] is for backends
//! that several handles (or server instances) open at once: it takes a
//! factory that opens the *same* database on every call, and races the
//! threads over different handles. Each check panics with a message naming
//! the broken promise. Times are plain numbers (Unix ms): the store never
//! reads a clock.
//!
//! ```
//! use std::sync::Arc;
//! use bonopay_server_example::server::webhooks::SqliteWebhookStore;
//! use bonopay_server_example::server::webhooks::conformance;
//!
//! conformance::run_all(&|| Arc::new(SqliteWebhookStore::in_memory().unwrap()));
//! ```
#![cfg(feature = "conformance")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    AttemptOutcome, AttemptStatus, ClaimedDelivery, DeliveryState, EventType, NewEvent, Recorded,
    Subscriber, WebhookError, WebhookStore, rfc3339,
};
pub use crate::server::auth::concurrent::THREADS;
use crate::server::auth::concurrent::race;

/// A moment in 2026 (Unix ms): the checks' "now".
pub const T0: i64 = 1_772_000_000_000;

/// The lease the checks claim with.
pub const LEASE: i64 = 60_000;

/// Opens a store: a fresh, empty one for [`run_all`]; one more handle on
/// the same database for [`shared_database`].
pub type Open<'a> = &'a dyn Fn() -> Arc<dyn WebhookStore>;

/// Runs every check, each on a fresh store (except [`shared_database`]).
pub fn run_all(fresh: Open<'_>) {
    subscribers_round_trip_with_a_limit_per_merchant(fresh);
    enqueue_fans_out_to_matching_current_subscribers_once(fresh);
    the_cursor_moves_once_and_forward_only(fresh);
    claims_are_leased_soonest_first_and_lapse(fresh);
    recording_moves_deliveries_on(fresh);
    deleting_a_subscriber_cancels_its_pending_deliveries(fresh);
    a_late_claimant_logs_but_does_not_reschedule(fresh);
    let s = fresh();
    racing_producers_enqueue_each_event_once(&vec![Arc::clone(&s); THREADS]);
    let s = fresh();
    racing_claims_share_out_each_delivery_once(&vec![Arc::clone(&s); THREADS]);
}

/// A subscriber of `merchant` for `events`, at `https://erp.example.cd/{id}`.
#[must_use]
pub fn subscriber(id: &str, merchant: &str, events: &[EventType]) -> Subscriber {
    Subscriber {
        id: id.into(),
        merchant_nif: merchant.into(),
        url: format!("https://erp.example.cd/{id}"),
        events: events.to_vec(),
        created_at: "2026-02-25T06:13:20.000Z".into(),
    }
}

/// The secret the checks give subscriber `id`.
#[must_use]
pub fn secret_of(id: &str) -> String {
    format!("whsec_secret-of-{id}")
}

/// Stores `s` (limit 16), which must succeed.
fn add(store: &dyn WebhookStore, s: &Subscriber) {
    assert!(
        store.insert_subscriber(s, &secret_of(&s.id), 16).unwrap(),
        "subscriber {} refused under the limit",
        s.id
    );
}

/// Event `id` of `merchant` of type `kind`, with `data` `{"n": n}`.
#[must_use]
pub fn event(id: &str, merchant: &str, kind: EventType, n: u64) -> NewEvent {
    NewEvent {
        id: id.into(),
        merchant_nif: merchant.into(),
        kind,
        payload: json!({ "n": n }).to_string(),
    }
}

fn sealed(outlet: &str, seq: u64) -> NewEvent {
    event(
        &format!("invoice.sealed:{outlet}:{seq}"),
        "A1",
        EventType::InvoiceSealed,
        seq,
    )
}

/// A 2xx answer at `at`.
#[must_use]
pub fn success(at: i64) -> AttemptOutcome {
    AttemptOutcome {
        http_status: Some(200),
        error: None,
        started_ms: at,
        completed_ms: at + 40,
    }
}

/// A 500 answer at `at`.
#[must_use]
pub fn failure(at: i64) -> AttemptOutcome {
    AttemptOutcome {
        http_status: Some(500),
        error: Some("the receiver answered 500 Internal Server Error".into()),
        started_ms: at,
        completed_ms: at + 40,
    }
}

fn claim(store: &dyn WebhookStore, now: i64) -> Vec<ClaimedDelivery> {
    store.claim_due(now, now + LEASE, 1000).unwrap()
}

fn claim_one(store: &dyn WebhookStore, now: i64) -> ClaimedDelivery {
    let mut c = claim(store, now);
    assert_eq!(c.len(), 1, "exactly one delivery due at {now}: {c:?}");
    c.remove(0)
}

fn url_of(id: &str) -> String {
    format!("https://erp.example.cd/{id}")
}

/// Subscribers round-trip oldest first per merchant; the limit counts
/// current subscribers only; deleting is per merchant; an id is unique.
pub fn subscribers_round_trip_with_a_limit_per_merchant(fresh: Open<'_>) {
    let s = fresh();
    let s1 = subscriber("whk_1", "A1", &EventType::ALL);
    let s2 = Subscriber {
        url: "http://127.0.0.1:9/hooks/bonopay?x=1&y=«é»".into(),
        ..subscriber("whk_2", "A1", &[EventType::ReportZClosed])
    };
    let s3 = subscriber("whk_3", "B2", &[EventType::InvoiceSealed]);
    for sub in [&s1, &s2, &s3] {
        assert!(s.insert_subscriber(sub, &secret_of(&sub.id), 3).unwrap());
    }
    assert_eq!(
        s.list_subscribers("A1").unwrap(),
        vec![s1.clone(), s2.clone()],
        "oldest first, every field as written"
    );
    assert_eq!(s.list_subscribers("B2").unwrap(), vec![s3.clone()]);
    assert!(s.list_subscribers("a1").unwrap().is_empty());

    let s4 = subscriber("whk_4", "A1", &EventType::ALL);
    let s5 = subscriber("whk_5", "A1", &EventType::ALL);
    assert!(s.insert_subscriber(&s4, "whsec_4", 3).unwrap());
    assert!(
        !s.insert_subscriber(&s5, "whsec_5", 3).unwrap(),
        "a fourth subscriber over a limit of three is refused"
    );
    assert_eq!(s.list_subscribers("A1").unwrap().len(), 3);

    assert!(!s.delete_subscriber("B2", "whk_1").unwrap(), "not B2's");
    assert!(!s.delete_subscriber("A1", "whk_nope").unwrap());
    assert!(s.delete_subscriber("A1", "whk_1").unwrap());
    assert!(!s.delete_subscriber("A1", "whk_1").unwrap(), "deleted once");
    assert_eq!(s.list_subscribers("A1").unwrap(), vec![s2, s4]);
    assert!(
        s.insert_subscriber(&s5, "whsec_5", 3).unwrap(),
        "a deleted subscriber frees its place"
    );
    assert!(matches!(
        s.insert_subscriber(&subscriber("whk_3", "A1", &EventType::ALL), "x", 16),
        Err(WebhookError::Storage(_))
    ));
    assert_eq!(s.list_subscribers("B2").unwrap(), vec![s3]);
}

/// An event is stored once, and fans out to the current subscribers of its
/// merchant that want its type, each delivery carrying the request body,
/// the URL and the secret.
pub fn enqueue_fans_out_to_matching_current_subscribers_once(fresh: Open<'_>) {
    let s = fresh();
    add(&*s, &subscriber("whk_all", "A1", &EventType::ALL));
    add(&*s, &subscriber("whk_z", "A1", &[EventType::ReportZClosed]));
    add(&*s, &subscriber("whk_b", "B2", &EventType::ALL));
    add(&*s, &subscriber("whk_gone", "A1", &EventType::ALL));
    assert!(s.delete_subscriber("A1", "whk_gone").unwrap());

    let ev = event("invoice.sealed:o1:1", "A1", EventType::InvoiceSealed, 1);
    assert!(s.enqueue(&ev, T0).unwrap(), "a new event");
    let again = NewEvent {
        payload: json!({"other": true}).to_string(),
        ..ev.clone()
    };
    assert!(!s.enqueue(&again, T0 + 5).unwrap(), "the same id, once");

    let c = claim_one(&*s, T0);
    assert_eq!(c.url, url_of("whk_all"));
    assert_eq!(c.secret, secret_of("whk_all"));
    assert_eq!(c.event_id, "invoice.sealed:o1:1");
    assert_eq!(c.event_type, "invoice.sealed");
    assert_eq!(c.lease_until_ms, T0 + LEASE);
    let body: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(
        body,
        json!({
            "id": "invoice.sealed:o1:1",
            "type": "invoice.sealed",
            "merchant_nif": "A1",
            "created_at": rfc3339(T0),
            "data": {"n": 1},
        }),
        "the body of the first enqueue"
    );

    assert!(
        s.enqueue(
            &event("report.z_closed:o1:2", "A1", EventType::ReportZClosed, 2),
            T0 + 10
        )
        .unwrap()
    );
    assert!(
        claim(&*s, T0 + 9).is_empty(),
        "not due before it is enqueued"
    );
    let mut urls: Vec<String> = claim(&*s, T0 + 10).into_iter().map(|c| c.url).collect();
    urls.sort();
    assert_eq!(urls, [url_of("whk_all"), url_of("whk_z")]);
    assert!(
        s.enqueue(
            &event("invoice.synced:o9:1", "B2", EventType::InvoiceSynced, 3),
            T0
        )
        .unwrap()
    );
    assert_eq!(claim_one(&*s, T0 + 20).url, url_of("whk_b"));
    assert!(claim(&*s, T0 + 30).is_empty());
}

/// The cursor starts at 1, moves only from where the caller read it (a
/// stale producer writes nothing), never backwards, and per outlet; an
/// event stored before is not enqueued again.
pub fn the_cursor_moves_once_and_forward_only(fresh: Open<'_>) {
    let s = fresh();
    add(&*s, &subscriber("whk_1", "A1", &EventType::ALL));
    assert_eq!(s.cursor("o1").unwrap(), 1, "an outlet never seen");
    assert_eq!(
        s.commit_events("o1", 1, &[sealed("o1", 1), sealed("o1", 2)], 3, T0)
            .unwrap(),
        Some(2)
    );
    assert_eq!(s.cursor("o1").unwrap(), 3);
    assert_eq!(
        s.commit_events("o1", 1, &[sealed("o1", 1), sealed("o1", 2)], 3, T0)
            .unwrap(),
        None,
        "a producer that read the cursor at 1 is too late"
    );
    assert_eq!(s.cursor("o1").unwrap(), 3);
    assert_eq!(
        s.commit_events("o1", 3, &[], 2, T0).unwrap(),
        Some(0),
        "an empty batch"
    );
    assert_eq!(s.cursor("o1").unwrap(), 3, "never backwards");
    assert!(s.enqueue(&sealed("o1", 4), T0).unwrap());
    assert_eq!(
        s.commit_events("o1", 3, &[sealed("o1", 3), sealed("o1", 4)], 5, T0)
            .unwrap(),
        Some(1),
        "an event stored before is not new"
    );
    assert_eq!(s.cursor("o1").unwrap(), 5);
    assert_eq!(s.cursor("o2").unwrap(), 1, "cursors are per outlet");
    assert_eq!(
        s.commit_events("o2", 1, &[], 8, T0).unwrap(),
        Some(0),
        "entries without events move the cursor too"
    );
    assert_eq!(s.cursor("o2").unwrap(), 8);

    let mut ids: Vec<String> = claim(&*s, T0).into_iter().map(|c| c.event_id).collect();
    ids.sort();
    let expected: Vec<String> = (1..=4).map(|n| format!("invoice.sealed:o1:{n}")).collect();
    assert_eq!(ids, expected, "each event, one delivery");
}

/// A claim holds its deliveries until the lease ends, then they are due
/// again; claims take the soonest due first, at most `limit`.
pub fn claims_are_leased_soonest_first_and_lapse(fresh: Open<'_>) {
    let s = fresh();
    add(&*s, &subscriber("whk_1", "A1", &EventType::ALL));
    assert!(s.enqueue(&sealed("o1", 1), T0).unwrap());
    let first = claim_one(&*s, T0);
    assert!(claim(&*s, T0).is_empty(), "claimed: not due again");
    assert!(
        claim(&*s, T0 + LEASE - 1).is_empty(),
        "not within the lease"
    );
    let taken = s.claim_due(T0 + LEASE, T0 + 3 * LEASE, 10).unwrap();
    assert_eq!(taken.len(), 1, "due again when the lease ends");
    assert_eq!(taken[0].delivery_id, first.delivery_id);
    assert_eq!(taken[0].lease_until_ms, T0 + 3 * LEASE);
    assert!(claim(&*s, T0 + 2 * LEASE).is_empty(), "the new lease holds");

    for (seq, at) in [(2, T0 + 3), (3, T0 + 1), (4, T0 + 2)] {
        assert!(s.enqueue(&sealed("o1", seq), at).unwrap());
    }
    let order: Vec<String> = (0..3)
        .map(|_| {
            let c = s.claim_due(T0 + 10, T0 + LEASE, 1).unwrap();
            assert_eq!(c.len(), 1, "a limit of one");
            c[0].event_id.clone()
        })
        .collect();
    assert_eq!(
        order,
        [
            "invoice.sealed:o1:3",
            "invoice.sealed:o1:4",
            "invoice.sealed:o1:2"
        ],
        "soonest due first"
    );
    assert!(s.claim_due(T0 + 10, T0 + LEASE, 1).unwrap().is_empty());
}

/// A failure is logged and rescheduled at the policy's time (the store
/// hands it the attempt number), a success delivers for good, the last
/// failure kills; the log is newest first, limited, and the subscriber's
/// merchant's only.
pub fn recording_moves_deliveries_on(fresh: Open<'_>) {
    let s = fresh();
    add(&*s, &subscriber("whk_1", "A1", &EventType::ALL));
    assert!(s.enqueue(&sealed("o1", 1), T0).unwrap());
    let c = claim_one(&*s, T0);
    let asked = Cell::new(0);
    let retry_at = T0 + 5_140;
    let schedule = |n: u32| {
        asked.set(n);
        Some(retry_at)
    };
    assert_eq!(
        s.record(&c, &failure(T0 + 100), &schedule).unwrap(),
        Recorded::Retry
    );
    assert_eq!(asked.get(), 1, "the first attempt is attempt 1");
    let log = s.delivery_log("A1", "whk_1", 100).unwrap().unwrap();
    assert_eq!(log.len(), 1);
    let a = &log[0];
    assert_eq!(a.event_id, "invoice.sealed:o1:1");
    assert_eq!(a.event_type, EventType::InvoiceSealed);
    assert_eq!(a.attempt, 1);
    assert_eq!(a.status, AttemptStatus::Failed);
    assert_eq!(a.http_status, Some(500));
    assert!(a.error.as_deref().unwrap().contains("500"));
    assert_eq!(a.started_at, rfc3339(T0 + 100));
    assert_eq!(a.completed_at, rfc3339(T0 + 140));
    assert_eq!(a.next_attempt_at, Some(rfc3339(retry_at)));
    assert_eq!(a.delivery_state, DeliveryState::Pending);

    assert!(claim(&*s, retry_at - 1).is_empty(), "not before the retry");
    let c2 = claim_one(&*s, retry_at);
    assert_eq!(c2.delivery_id, c.delivery_id);
    let never = |_: u32| -> Option<i64> { panic!("a success schedules nothing") };
    assert_eq!(
        s.record(&c2, &success(retry_at), &never).unwrap(),
        Recorded::Sent
    );
    let log = s.delivery_log("A1", "whk_1", 100).unwrap().unwrap();
    let attempts: Vec<(u32, AttemptStatus)> = log.iter().map(|a| (a.attempt, a.status)).collect();
    assert_eq!(
        attempts,
        [(2, AttemptStatus::Sent), (1, AttemptStatus::Failed)],
        "newest first"
    );
    assert_eq!(log[0].http_status, Some(200));
    assert_eq!(log[0].error, None);
    assert_eq!(log[0].next_attempt_at, None);
    assert!(
        log.iter()
            .all(|a| a.delivery_state == DeliveryState::Delivered)
    );
    assert!(
        claim(&*s, T0 + 1_000_000_000).is_empty(),
        "delivered is final"
    );

    assert!(s.enqueue(&sealed("o1", 2), T0).unwrap());
    let c3 = claim_one(&*s, T0);
    let last = |n: u32| {
        asked.set(n);
        None
    };
    assert_eq!(s.record(&c3, &failure(T0), &last).unwrap(), Recorded::Dead);
    assert_eq!(asked.get(), 1);
    let log = s.delivery_log("A1", "whk_1", 1).unwrap().unwrap();
    assert_eq!(log.len(), 1, "the limit holds");
    assert_eq!(log[0].event_id, "invoice.sealed:o1:2");
    assert_eq!(log[0].delivery_state, DeliveryState::Dead);
    assert_eq!(
        log[0].next_attempt_at, None,
        "the last one schedules nothing"
    );
    assert!(claim(&*s, T0 + 1_000_000_000).is_empty(), "dead is final");

    assert_eq!(
        s.delivery_log("B2", "whk_1", 100).unwrap(),
        None,
        "not B2's"
    );
    assert_eq!(s.delivery_log("A1", "whk_nope", 100).unwrap(), None);
}

/// Deleting a subscriber cancels its pending deliveries, also one in
/// flight: an attempt recorded afterwards leaves it cancelled. Its new
/// events go to the others only.
pub fn deleting_a_subscriber_cancels_its_pending_deliveries(fresh: Open<'_>) {
    let s = fresh();
    add(&*s, &subscriber("whk_1", "A1", &EventType::ALL));
    add(&*s, &subscriber("whk_2", "A1", &EventType::ALL));
    assert!(s.enqueue(&sealed("o1", 1), T0).unwrap());
    let in_flight = claim(&*s, T0);
    assert_eq!(in_flight.len(), 2);
    assert!(s.enqueue(&sealed("o1", 2), T0 + 1).unwrap());
    assert!(s.delete_subscriber("A1", "whk_1").unwrap());
    assert!(s.enqueue(&sealed("o1", 3), T0 + 2).unwrap());

    let mine = in_flight.iter().find(|c| c.url == url_of("whk_1")).unwrap();
    let again = |_: u32| Some(T0 + 10);
    assert_eq!(
        s.record(mine, &failure(T0 + 3), &again).unwrap(),
        Recorded::Retry
    );
    let theirs = in_flight.iter().find(|c| c.url == url_of("whk_2")).unwrap();
    assert_eq!(
        s.record(theirs, &success(T0 + 3), &again).unwrap(),
        Recorded::Sent
    );
    let later: Vec<(String, String)> = claim(&*s, T0 + 10 * LEASE)
        .into_iter()
        .map(|c| (c.url, c.event_id))
        .collect();
    assert_eq!(
        later,
        [
            (url_of("whk_2"), "invoice.sealed:o1:2".to_owned()),
            (url_of("whk_2"), "invoice.sealed:o1:3".to_owned()),
        ],
        "nothing more for the deleted subscriber, in flight or not"
    );
    assert_eq!(s.delivery_log("A1", "whk_1", 10).unwrap(), None);
}

/// After a takeover (the first claimant stalled past its lease), the late
/// claimant's failure is logged but leaves the delivery to the new
/// claimant; its success delivers (and the new claimant's record then
/// leaves it delivered).
pub fn a_late_claimant_logs_but_does_not_reschedule(fresh: Open<'_>) {
    let s = fresh();
    add(&*s, &subscriber("whk_1", "A1", &EventType::ALL));
    assert!(s.enqueue(&sealed("o1", 1), T0).unwrap());
    let late = claim_one(&*s, T0);
    let current = claim_one(&*s, T0 + LEASE);
    let soon = |_: u32| Some(T0 + LEASE + 1);
    assert_eq!(
        s.record(&late, &failure(T0 + LEASE), &soon).unwrap(),
        Recorded::Retry
    );
    assert!(
        claim(&*s, T0 + 2 * LEASE - 1).is_empty(),
        "the late failure did not reschedule under the current claim"
    );
    let retry = |n: u32| {
        assert_eq!(n, 2, "attempts count across claimants");
        Some(T0 + 3 * LEASE)
    };
    assert_eq!(
        s.record(&current, &failure(T0 + LEASE + 5), &retry)
            .unwrap(),
        Recorded::Retry
    );
    let log = s.delivery_log("A1", "whk_1", 10).unwrap().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].next_attempt_at, Some(rfc3339(T0 + 3 * LEASE)));
    assert_eq!(
        log[1].next_attempt_at, None,
        "the late one scheduled nothing"
    );
    assert!(claim(&*s, T0 + 3 * LEASE - 1).is_empty());
    let third = claim_one(&*s, T0 + 3 * LEASE);
    let none = |_: u32| None;
    assert_eq!(
        s.record(&third, &success(T0 + 3 * LEASE), &none).unwrap(),
        Recorded::Sent
    );

    assert!(s.enqueue(&sealed("o1", 2), T0).unwrap());
    let late = claim_one(&*s, T0);
    let current = claim_one(&*s, T0 + LEASE);
    assert_eq!(
        s.record(&late, &success(T0 + LEASE), &none).unwrap(),
        Recorded::Sent
    );
    assert!(
        claim(&*s, T0 + 10 * LEASE).is_empty(),
        "a late success delivers"
    );
    assert_eq!(
        s.record(&current, &failure(T0 + LEASE + 5), &soon).unwrap(),
        Recorded::Retry
    );
    assert!(
        claim(&*s, T0 + 10 * LEASE).is_empty(),
        "and a failure after it does not undo it"
    );
    let log = s.delivery_log("A1", "whk_1", 2).unwrap().unwrap();
    assert!(
        log.iter()
            .all(|a| a.delivery_state == DeliveryState::Delivered)
    );
}

/// [`THREADS`] producers (thread `i` on `handles[i % len]`) turn one
/// outlet's 60 entries into events at once, each in batches of 4 from the
/// cursor it reads: the cursor moves from each position exactly once (a
/// producer that read a stale cursor writes nothing), every event is new
/// exactly once, the cursor ends past the last entry, and each event has
/// one delivery per subscriber.
pub fn racing_producers_enqueue_each_event_once(handles: &[Arc<dyn WebhookStore>]) {
    const ENTRIES: u64 = 60;
    const BATCH: u64 = 4;
    add(&*handles[0], &subscriber("whk_p1", "A1", &EventType::ALL));
    add(&*handles[0], &subscriber("whk_p2", "A1", &EventType::ALL));
    let handles = Arc::new(handles.to_vec());
    let theirs = Arc::clone(&handles);
    // Per thread: (from, new events) of each commit that moved the cursor.
    let commits = race(move |i| {
        let s = &theirs[i % theirs.len()];
        let mut mine = Vec::new();
        loop {
            let from = s.cursor("race").unwrap();
            if from > ENTRIES {
                return mine;
            }
            let next = (from + BATCH).min(ENTRIES + 1);
            let events: Vec<NewEvent> = (from..next).map(|seq| sealed("race", seq)).collect();
            if let Some(n) = s.commit_events("race", from, &events, next, T0).unwrap() {
                mine.push((from, n));
            }
        }
    });
    let mut starts: Vec<u64> = commits.iter().flatten().map(|(from, _)| *from).collect();
    starts.sort_unstable();
    assert_eq!(
        starts,
        (1..=ENTRIES)
            .step_by(usize::try_from(BATCH).unwrap())
            .collect::<Vec<_>>(),
        "the cursor moved from each position exactly once"
    );
    assert!(
        commits
            .iter()
            .flatten()
            .all(|(_, n)| *n == usize::try_from(BATCH).unwrap()),
        "each commit's events were new: {commits:?}"
    );
    assert_eq!(handles[0].cursor("race").unwrap(), ENTRIES + 1);
    let mut per_event: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let claims = claim(&*handles[0], T0);
    assert_eq!(claims.len(), 2 * usize::try_from(ENTRIES).unwrap());
    let none = |_: u32| None;
    for c in claims {
        handles[0].record(&c, &success(T0), &none).unwrap();
        assert!(
            per_event.entry(c.event_id).or_default().insert(c.url),
            "one delivery per (event, subscriber)"
        );
    }
    assert_eq!(per_event.len(), usize::try_from(ENTRIES).unwrap());
}

/// [`THREADS`] dispatchers (thread `i` on `handles[i % len]`) claim 90
/// due deliveries (merchant `C3`'s) in small batches at once, then record
/// them: each delivery is claimed by exactly one of them, and all end
/// delivered.
pub fn racing_claims_share_out_each_delivery_once(handles: &[Arc<dyn WebhookStore>]) {
    for i in 0..3 {
        add(
            &*handles[0],
            &subscriber(&format!("whk_c{i}"), "C3", &EventType::ALL),
        );
    }
    for seq in 1..=30 {
        let ev = event(
            &format!("invoice.sealed:c3-o1:{seq}"),
            "C3",
            EventType::InvoiceSealed,
            seq,
        );
        assert!(handles[0].enqueue(&ev, T0).unwrap());
    }
    let handles = Arc::new(handles.to_vec());
    let theirs = Arc::clone(&handles);
    let claimed = race(move |i| {
        let s = &theirs[i % theirs.len()];
        let mut mine = Vec::new();
        loop {
            let batch = s.claim_due(T0, T0 + LEASE, 4).unwrap();
            if batch.is_empty() {
                break;
            }
            mine.extend(batch);
        }
        let none = |_: u32| None;
        for c in &mine {
            assert_eq!(
                s.record(c, &success(T0 + 1), &none).unwrap(),
                Recorded::Sent
            );
        }
        mine.into_iter().map(|c| c.delivery_id).collect::<Vec<_>>()
    });
    let all: Vec<i64> = claimed.into_iter().flatten().collect();
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 90, "every delivery claimed");
    assert_eq!(unique.len(), 90, "no delivery claimed twice");
    assert!(
        claim(&*handles[0], T0 + 10 * LEASE).is_empty(),
        "all delivered"
    );
    for i in 0..3 {
        let log = handles[0]
            .delivery_log("C3", &format!("whk_c{i}"), 1000)
            .unwrap()
            .unwrap();
        assert_eq!(log.len(), 30, "one attempt per delivery");
        assert!(log.iter().all(|a| a.attempt == 1));
    }
}

/// Several handles on one database (as several server instances): what
/// one writes, the others see at once — subscribers, events, claims,
/// attempts, cursors — and the racing checks hold across handles. `open`
/// returns a new handle on the same, initially empty, database on every
/// call.
pub fn shared_database(open: Open<'_>) {
    let a = open();
    let b = open();
    let sub = subscriber("whk_shared", "A1", &EventType::ALL);
    add(&*a, &sub);
    assert_eq!(b.list_subscribers("A1").unwrap(), vec![sub]);
    assert!(b.enqueue(&sealed("o1", 1), T0).unwrap());
    assert!(
        !a.enqueue(&sealed("o1", 1), T0).unwrap(),
        "stored once for all"
    );
    let c = claim_one(&*a, T0);
    assert!(claim(&*b, T0).is_empty(), "a's claim holds for b");
    let none = |_: u32| None;
    assert_eq!(a.record(&c, &success(T0), &none).unwrap(), Recorded::Sent);
    let log = b.delivery_log("A1", "whk_shared", 10).unwrap().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].delivery_state, DeliveryState::Delivered);

    assert_eq!(a.commit_events("o2", 1, &[], 5, T0).unwrap(), Some(0));
    assert_eq!(b.cursor("o2").unwrap(), 5);
    assert_eq!(b.commit_events("o2", 1, &[], 9, T0).unwrap(), None);
    assert!(b.delete_subscriber("A1", "whk_shared").unwrap());
    assert!(a.list_subscribers("A1").unwrap().is_empty());

    let handles: Vec<Arc<dyn WebhookStore>> = (0..THREADS / 2).map(|_| open()).collect();
    racing_producers_enqueue_each_event_once(&handles);
    racing_claims_share_out_each_delivery_once(&handles);
}
