//! Scheduling: one poisoned invoice backs off alone, backoff with jitter
//! and a cap, items in flight before queued ones, an unreachable e-MCF
//! never dead-letters a sale, and a bad token pauses only its merchant.

use super::*;

#[test]
fn one_poisoned_invoice_backs_off_alone_until_dead_lettered() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(6);
    let agent = r.agent(poisoned(&sim, rn(&r, 2)));
    agent.run_once().unwrap();
    assert_eq!(
        r.states().get(&ItemState::Synced),
        Some(&5),
        "the rest went on"
    );
    let p = r.outbox.get(OUTLET, 2).unwrap().unwrap();
    // A 5xx may have created it: `submitting`, reconciled by rn next time.
    assert_eq!((p.state, p.attempts), (ItemState::Submitting, 1));
    assert!(p.next_attempt_ms > r.clock.now_ms());
    // More invoices keep flowing while it backs off.
    r.seal(2);
    agent.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Synced), Some(&7));
    // Until its budget is spent.
    let mut last_next = 0;
    for _ in 0..40 {
        r.clock.advance(20 * 60 * 1000);
        agent.run_once().unwrap();
        let p = r.outbox.get(OUTLET, 2).unwrap().unwrap();
        if p.state == ItemState::Dead {
            break;
        }
        assert!(p.next_attempt_ms >= last_next);
        last_next = p.next_attempt_ms;
    }
    let p = r.outbox.get(OUTLET, 2).unwrap().unwrap();
    assert_eq!(p.state, ItemState::Dead);
    assert_eq!(p.attempts, AgentConfig::default().max_attempts);
    // A person requeues it; it goes through once the DGI takes it.
    let healthy = r.agent(Arc::new(http(&sim)));
    healthy.requeue(OUTLET, 2).unwrap();
    healthy.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Synced), Some(&8));
    assert!(sim.sim.double_confirms().is_empty());
}

#[test]
fn backoff_doubles_with_jitter_and_respects_the_cap() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(1);
    let agent = SyncAgent::with(
        Arc::clone(&r.ledger),
        Arc::clone(&r.outbox),
        poisoned(&sim, rn(&r, 1)),
        r.clock.clone(),
        Box::new(SplitMix::new(1)),
        AgentConfig {
            backoff_base_ms: 1_000,
            backoff_cap_ms: 16_000,
            max_attempts: 100,
            ..AgentConfig::default()
        },
    );
    let mut waits = Vec::new();
    for _ in 0..8 {
        let now = r.clock.now_ms();
        agent.run_once().unwrap();
        let p = r.outbox.get(OUTLET, 1).unwrap().unwrap();
        waits.push(p.next_attempt_ms - now);
        r.clock.advance(p.next_attempt_ms - now);
    }
    // Attempt n waits between half and all of min(cap, base·2^(n-1)).
    for (n, w) in waits.iter().enumerate() {
        let full = (1_000i64 << n).min(16_000);
        assert!(
            *w >= full / 2 && *w < full,
            "attempt {}: {w} of {full}",
            n + 1
        );
    }
}

#[test]
fn items_in_flight_are_settled_before_queued_ones_so_a_full_cap_never_starves() {
    // Ten lost POSTs fill the cap, and more queued items than one batch
    // wait behind them: each pass must settle the in-flight ones first.
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(40);
    let faulty = Arc::new(FaultyTransport::new(http(&sim)));
    for _ in 0..10 {
        faulty.arm(Op::Submit, Fault::LoseAnswer);
    }
    let agent = SyncAgent::with(
        Arc::clone(&r.ledger),
        Arc::clone(&r.outbox),
        faulty,
        r.clock.clone(),
        Box::new(SplitMix::new(3)),
        AgentConfig {
            batch: 5,
            ..AgentConfig::default()
        },
    );
    agent.run_once().unwrap();
    agent.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Submitting), Some(&10));
    r.clock.advance(60_000);
    agent.run_once().unwrap();
    assert!(
        !r.states().contains_key(&ItemState::Submitting),
        "the ten in flight were settled first: {:?}",
        r.states()
    );
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&40));
    // The ten lost POSTs were found pending, cancelled and posted again.
    assert_eq!(sim.sim.stats().posted, 50);
    assert_eq!(sim.sim.stats().confirmed, 40);
    assert!(sim.sim.double_confirms().is_empty());
}

#[test]
fn an_unreachable_emcf_never_dead_letters_a_sale() {
    let r = rig();
    r.seal(1);
    // Nothing listens there: every call is refused at once.
    let down = HttpDgiTransport::new("http://127.0.0.1:9", "t", Duration::from_secs(2)).unwrap();
    let agent = r.agent(Arc::new(down));
    for _ in 0..(AgentConfig::default().max_attempts + 5) {
        agent.run_once().unwrap();
        r.clock.advance(20 * 60 * 1000);
    }
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Queued, "{item:?}");
    assert!(item.attempts > AgentConfig::default().max_attempts);
    assert!(item.error.unwrap().contains("unreachable"));
    // Health shows the wait (red after 48 h, the DGI's limit).
    r.clock.advance(48 * 3600 * 1000);
    let h = health::judge(
        &r.outbox.summary().unwrap()[0],
        r.clock.now_ms(),
        &HealthThresholds::default(),
    );
    assert_eq!(h.health, Health::Red, "{h:?}");
}

#[test]
fn an_expired_or_refused_token_pauses_uploads_until_a_new_one_is_in_place() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(3);
    let token_file = r.dir.path().join("A1309334L.jwt");
    std::fs::write(&token_file, sim.sim.issue_token(-60)).unwrap();
    let transport = HttpDgiTransport::with_token_source(
        &sim.base,
        Arc::new(bonopay_sync::dgi::http::FileToken(token_file.clone())),
        Duration::from_secs(10),
    )
    .unwrap();
    let agent = r.agent(Arc::new(transport));
    // Expired: every call is refused; uploads pause, nothing is spent.
    for _ in 0..5 {
        agent.run_once().unwrap();
        r.clock.advance(60_000);
    }
    let why = agent.paused("A1309334L").expect("paused");
    assert!(why.contains("token"), "{why}");
    for seq in 1..=3 {
        let item = r.outbox.get(OUTLET, seq).unwrap().unwrap();
        assert_eq!(
            (item.state, item.attempts),
            (ItemState::Queued, 0),
            "{item:?}"
        );
    }
    assert_eq!(sim.sim.stats().posted, 0);
    assert!(agent.account_health()[0].paused.is_some());
    // A new token in the file: uploads resume, no restart.
    std::fs::write(&token_file, sim.sim.issue_token(3600)).unwrap();
    r.clock.advance(bonopay_sync::dgi::agent::PAUSED_PROBE_MS);
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&3));
    assert_eq!(agent.paused("A1309334L"), None);
    // A token refused before its expiry (revoked): the same.
    r.seal(2);
    sim.sim.revoke_tokens();
    agent.run_once().unwrap();
    assert!(agent.paused("A1309334L").is_some());
    assert_eq!(r.states().get(&ItemState::Synced), Some(&3));
    assert_eq!(
        r.states().get(&ItemState::Dead),
        None,
        "nothing dead-lettered"
    );
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&token_file, sim.sim.issue_token(3600)).unwrap();
    r.clock.advance(bonopay_sync::dgi::agent::PAUSED_PROBE_MS);
    r.drain(&agent);
    assert_eq!(r.states().get(&ItemState::Synced), Some(&5));
    assert!(sim.sim.double_confirms().is_empty());
}
