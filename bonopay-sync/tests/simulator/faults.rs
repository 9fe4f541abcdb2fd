//! Fault injection: dropped answers after committing, injected errors that
//! change nothing, reproducible seeds, wrong totals, latency.

use super::*;

#[test]
fn dropped_confirm_is_committed_and_recorded() {
    let s = start();
    let uid = s.create("o/2026/1");
    s.sim.set_faults(Faults {
        drop_rate: 1000,
        ..Faults::default()
    });
    let a = s.confirm(&uid, "133080.00", "10080.00");
    a.error(500, "99");
    // The same answer as an injected error: nothing tells them apart.
    assert_eq!(a.body["errorDesc"], "internal server error");
    // GETs are not dropped; the e-MCF no longer knows the uid as pending,
    // and the portal shows what the lost answer held.
    s.echo(&uid).refused("20");
    let p = s.sim.details(&uid).unwrap();
    assert_eq!(p.status, DgiInvoiceState::Confirmed);
    let conf = p.elements.unwrap();
    assert_eq!(conf.counters, "1/1 FV");
    let recs = s.sim.confirms();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].rn, "o/2026/1");
    assert_eq!(recs[0].elements(), conf);
    // A client that blindly retries gets 20, not a second confirm.
    s.confirm(&uid, "133080.00", "10080.00").refused("20");
    assert!(s.sim.double_confirms().is_empty());

    // A dropped POST still created the invoice: it is in the pending list.
    let a = s.post(&simple("o/2026/2"));
    a.error(500, "99");
    let st = s.status();
    assert_eq!(st.pending_count, 1);
    // A client that resubmits instead of reconciling creates a second
    // pending invoice for the same rn, and confirming both is exactly
    // what double_confirms reports.
    s.sim.set_faults(Faults::default());
    let again = s.create("o/2026/2");
    s.confirm(&st.pending[0].uid, "133080.00", "10080.00").ok();
    s.confirm(&again, "133080.00", "10080.00").ok();
    assert_eq!(s.sim.double_confirms(), vec!["o/2026/2".to_owned()]);

    let stats = s.sim.stats();
    assert_eq!(stats.drops_injected, 2);
    assert_eq!(stats.faults_injected, 2);
    assert_eq!(stats.confirmed, 3);
}

#[test]
fn injected_errors_change_nothing() {
    let s = start();
    let uid = s.create("o/2026/1");
    let set = s.sim_post("/_sim/faults", &json!({"error_rate": 1000, "seed": 1}));
    assert_eq!(set.ok()["error_rate"], 1000);
    s.post(&simple("o/2026/2")).error(500, "99");
    s.confirm(&uid, "133080.00", "10080.00").error(500, "99");
    s.put(&uid, "CANCEL", None).error(500, "99");
    s.get("/api/invoice").error(500, "99");
    // Even a request without a token: the fault comes first.
    s.get_as("/api/invoice", None).error(500, "99");
    // Control endpoints are never faulted.
    let stats: SimStats = serde_json::from_value(s.get("/_sim/stats").ok()).unwrap();
    assert_eq!(stats.errors_injected, 5);
    assert_eq!((stats.posted, stats.confirmed, stats.cancelled), (1, 0, 0));
    assert_eq!(stats.pending, 1);
    assert!(s.sim.confirms().is_empty());
    // Unknown fault names are refused.
    s.sim_post("/_sim/faults", &json!({"error_ratio": 5}))
        .error(400, "99");
    s.sim_post("/_sim/faults", &json!({})).ok();
    assert_eq!(s.state(&uid), DgiInvoiceState::Pending);
    s.echo(&uid).ok();
}

#[test]
fn faults_are_reproducible_from_the_seed() {
    let s = start();
    let run = || -> Vec<u16> {
        s.sim.set_faults(Faults {
            error_rate: 500,
            seed: 42,
            ..Faults::default()
        });
        (0..40)
            .map(|_| s.get("/api/invoice").status.as_u16())
            .collect()
    };
    let first = run();
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
    assert_eq!(run(), first);
}

#[test]
fn wrong_totals_fault_exercises_the_cancel_path() {
    let s = start();
    s.sim.set_faults(Faults {
        wrong_totals_rate: 1000,
        ..Faults::default()
    });
    let a = s.post(&simple("o/2026/1"));
    assert_eq!(a.raw("total"), "133081.00");
    assert_eq!(a.raw("vtotal"), "10080.00");
    let v = a.ok();
    let uid = v["uid"].as_str().unwrap();
    // The client's own totals differ from the answer: refused.
    s.confirm(uid, "133080.00", "10080.00").refused("99");
    assert_eq!(s.sim.details(uid).unwrap().total, dec("133081.00"));
    s.put(uid, "CANCEL", None).ok();
    // A client echoing the answered totals would have been accepted.
    let v = s.post(&simple("o/2026/2")).ok();
    s.confirm(v["uid"].as_str().unwrap(), "133081.00", "10080.00")
        .ok();
    assert_eq!(s.sim.stats().wrong_totals_injected, 2);
}

#[test]
fn latency_is_added() {
    let s = start();
    s.sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let t = Instant::now();
    s.get("/api/invoice").ok();
    assert!(t.elapsed() >= Duration::from_millis(300));
}
