//! Recovery: lost POST and CONFIRM answers, crashes between the two,
//! differing totals, orphans reconciled, a CONFIRM that lands late, and a
//! pass that never works from a stale copy.

use super::*;

#[test]
fn a_lost_post_answer_is_found_by_rn_cancelled_and_posted_again_after_a_restart() {
    // The e-MCF's details echo the request (no totals, no state): the
    // pending uid with our rn is cancelled, and the invoice posted again.
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(1);
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    faulty.arm(Op::Submit, Fault::LoseAnswer);
    r.agent(faulty.clone()).run_once().unwrap();
    assert_eq!(
        r.outbox.get(OUTLET, 1).unwrap().unwrap().state,
        ItemState::Submitting
    );
    assert_eq!(sim.sim.stats().pending, 1, "the POST did arrive");
    // "Restart": a new agent over the same outbox.
    let agent = r.agent(Arc::new(http(&sim)));
    r.clock.advance(60_000);
    agent.run_once().unwrap();
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Synced, "{item:?}");
    let s = sim.sim.stats();
    assert_eq!(
        (s.posted, s.cancelled, s.confirmed, s.pending),
        (2, 1, 1, 0)
    );
    assert_eq!(confirms_per_rn(&sim).get(&item.request.rn), Some(&1));
    assert!(r.certified(1).is_some());
}

#[test]
fn a_lost_confirm_answer_goes_to_a_person_who_resolves_it_from_the_dgi_portal() {
    // The e-MCF reports a confirmed invoice to nobody (details: error 20),
    // so the agent never guesses: a person reads the portal and enters the
    // elements, which are bound into the ledger as typed in (`operator`).
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(1);
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    faulty.arm(Op::Confirm, Fault::LoseAnswer);
    let agent = r.agent(faulty.clone());
    agent.run_once().unwrap();
    assert_eq!(
        r.outbox.get(OUTLET, 1).unwrap().unwrap().state,
        ItemState::Confirming
    );
    assert_eq!(sim.sim.confirms().len(), 1, "the confirm did happen");
    r.clock.advance(60_000);
    agent.run_once().unwrap();
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Dead, "{item:?}");
    assert!(
        item.error.as_deref().unwrap().starts_with(LOST_CONFIRM),
        "{item:?}"
    );
    assert_eq!(r.certified(1), None);
    // More passes never confirm or post it again.
    for _ in 0..3 {
        r.clock.advance(20 * 60 * 1000);
        agent.run_once().unwrap();
    }
    assert_eq!(sim.sim.stats().posted, 1);
    // The portal shows it certified, with its elements.
    let portal = sim.sim.portal("A1309334L", Some(&item.request.rn));
    assert_eq!(portal.len(), 1);
    assert_eq!(portal[0].status, DgiInvoiceState::Confirmed);
    let elements = portal[0].elements.clone().unwrap();
    let done = agent.resolve(OUTLET, 1, &elements).unwrap();
    assert_eq!(done.state, ItemState::Synced);
    let cert = r.fiscalizer.certification_of(OUTLET, 1).unwrap().unwrap();
    assert_eq!(cert.elements, elements);
    assert_eq!(cert.source, CertificationSource::Operator);
    assert!(sim.sim.double_confirms().is_empty());
    // Resolving again is refused: it is no longer a dead letter.
    assert!(agent.resolve(OUTLET, 1, &elements).is_err());
}

#[test]
fn a_crash_between_post_and_confirm_resumes_and_an_expired_uid_is_posted_again() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    // The CONFIRM never leaves (connection refused): the item stays
    // `submitted`, and the uid, still pending on restart, is confirmed.
    r.seal(1);
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    faulty.arm(Op::Confirm, Fault::Unreachable);
    r.agent(faulty.clone()).run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Submitted), Some(&1));
    let agent = r.agent(Arc::new(http(&sim)));
    r.clock.advance(60_000);
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&1));
    assert_eq!(sim.sim.stats().posted, 1);

    // The same, but the uid expires before the restart: no CONFIRM of ours
    // ever reached it, so error 20 means expired, and it is posted again.
    r.seal(1);
    // The ledger holds the first sale and its certification: this is seq 3.
    let seq = r.ledger.head(OUTLET).unwrap().seq;
    faulty.arm(Op::Confirm, Fault::Unreachable);
    r.agent(faulty).run_once().unwrap();
    let uid2 = r.outbox.get(OUTLET, seq).unwrap().unwrap().uid.unwrap();
    assert_eq!(sim.sim.expire_all(), 1);
    r.clock.advance(60_000);
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&2));
    assert_eq!(
        sim.sim.details(&uid2).unwrap().status,
        DgiInvoiceState::Expired
    );
    assert_eq!(sim.sim.stats().posted, 3, "re-posted after expiry");
    assert_eq!(confirms_per_rn(&sim).values().copied().max(), Some(1));
    assert_eq!(sim.sim.confirms().len(), 2);
}

#[test]
fn totals_that_differ_are_cancelled_and_rejected_with_both_sets() {
    let sim = start_sim(SimConfig::default());
    sim.sim.set_faults(Faults {
        wrong_totals_rate: 1000,
        ..Faults::default()
    });
    let r = rig();
    r.seal(1);
    r.agent(Arc::new(http(&sim))).run_once().unwrap();
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Rejected);
    let err = item.error.unwrap();
    assert!(
        err.contains("ours total 65960.00 vtotal 4960.00") && err.contains("DGI total"),
        "{err}"
    );
    assert_eq!(sim.sim.stats().cancelled, 1);
    assert!(sim.sim.confirms().is_empty());
    let h = health::judge(
        &r.outbox.summary().unwrap()[0],
        r.clock.now_ms(),
        &HealthThresholds::default(),
    );
    assert_eq!(h.health, Health::Red);
}

#[test]
fn reconcile_cancels_orphans_and_the_pending_cap_is_respected() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(14);
    // Ten POSTs whose answers are lost: ten pending uids nobody knows.
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    for _ in 0..10 {
        faulty.arm(Op::Submit, Fault::LoseAnswer);
    }
    let agent = r.agent(faulty);
    agent.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Submitting), Some(&10));
    assert_eq!(
        r.states().get(&ItemState::Queued),
        Some(&4),
        "the cap of 10 in flight holds the rest back"
    );
    assert_eq!(sim.sim.stats().pending, 10);
    // On restart, reconciliation finds all ten by rn (the details echo
    // carries no totals), cancels them, and their items post again.
    let agent = r.agent(Arc::new(http(&sim)));
    let rec = agent.reconcile().unwrap();
    assert_eq!(rec.cancelled.len(), 10);
    assert_eq!(r.states().get(&ItemState::Queued), Some(&14));
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&14));
    assert_eq!(sim.sim.stats().posted, 24);
    assert_eq!(sim.sim.stats().confirmed, 14);
    // A POST that arrives late (its item already synced) is an orphan:
    // reconciliation cancels it.
    let late = r.outbox.get(OUTLET, 3).unwrap().unwrap();
    let orphan = http(&sim).submit(&late.request).unwrap();
    let rec = agent.reconcile().unwrap();
    assert_eq!(rec.cancelled, vec![orphan.uid.clone()]);
    assert_eq!(sim.sim.stats().pending, 0);
    assert!(sim.sim.double_confirms().is_empty());
}

/// Holds the first CONFIRM back (its caller sees a timeout) and lets it
/// reach the DGI only when the next CONFIRM is sent: a CONFIRM that lands
/// late, after the agent saw the uid still pending.
#[derive(Debug)]
struct LateConfirm {
    held: std::sync::Mutex<Option<(String, DgiTotals)>>,
    armed: std::sync::atomic::AtomicBool,
}

impl Intercept for LateConfirm {
    fn confirm(
        &self,
        inner: &HttpDgiTransport,
        u: &str,
        t: &DgiTotals,
    ) -> Result<DgiConfirmation, TransportError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            *self.held.lock().unwrap() = Some((u.to_owned(), *t));
            return Err(TransportError::Unknown("timed out".into()));
        }
        if let Some((uid, totals)) = self.held.lock().unwrap().take() {
            let _ = inner.confirm(&uid, &totals);
        }
        inner.confirm(u, t)
    }
}

#[test]
fn a_confirm_that_lands_late_is_never_taken_for_an_expiry() {
    // CONFIRM #1 times out but reaches the DGI later; the uid still looks
    // pending, so the agent confirms again; #1 lands first and #2 finds the
    // uid final. Posting again would certify the sale twice.
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(1);
    let late = Arc::new(Intercepted(
        http(&sim),
        LateConfirm {
            held: std::sync::Mutex::new(None),
            armed: std::sync::atomic::AtomicBool::new(true),
        },
    ));
    let agent = r.agent(late);
    for _ in 0..5 {
        agent.run_once().unwrap();
        r.clock.advance(20 * 60 * 1000);
    }
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Dead, "{item:?}");
    assert!(item.error.unwrap().starts_with(LOST_CONFIRM));
    assert_eq!(sim.sim.stats().posted, 1, "never posted again");
    assert_eq!(sim.sim.confirms().len(), 1);
    assert!(sim.sim.double_confirms().is_empty());
}

/// Runs `certify_now` of another invoice from inside the first POST of a
/// pass: an inline certification finishing while the background pass
/// holds a batch it read before.
#[derive(Debug)]
struct InlineDuringPass {
    agent: std::sync::OnceLock<std::sync::Weak<SyncAgent>>,
    other: u64,
    fired: std::sync::atomic::AtomicBool,
}

impl Intercept for InlineDuringPass {
    fn submit(
        &self,
        inner: &HttpDgiTransport,
        i: &DgiInvoiceRequest,
    ) -> Result<DgiSubmitted, TransportError> {
        if !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Some(agent) = self.agent.get().and_then(std::sync::Weak::upgrade)
        {
            let item = agent.certify_now(OUTLET, self.other).unwrap().unwrap();
            assert_eq!(item.state, ItemState::Synced);
        }
        inner.submit(i)
    }
}

#[test]
fn a_pass_never_works_from_a_copy_an_inline_certification_has_moved_on() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(2);
    let transport = Arc::new(Intercepted(
        http(&sim),
        InlineDuringPass {
            agent: std::sync::OnceLock::new(),
            other: 2,
            fired: std::sync::atomic::AtomicBool::new(false),
        },
    ));
    let agent = Arc::new(r.agent(Arc::clone(&transport) as Arc<dyn DgiTransport>));
    transport.1.agent.set(Arc::downgrade(&agent)).unwrap();
    // The pass reads both items, then (posting the first) the second is
    // certified inline; the pass must not post the second again.
    agent.run_once().unwrap();
    assert_eq!(
        r.states().get(&ItemState::Synced),
        Some(&2),
        "{:?}",
        r.states()
    );
    assert_eq!(sim.sim.stats().posted, 2, "each sale posted once");
    assert!(sim.sim.double_confirms().is_empty());
}
