//! The platform's own behaviour: refusals in HTTP 200 bodies, details that
//! echo pending invoices only, credit notes checked against their
//! originals, per-NIF counters.

use super::*;

/// Point 1: every business refusal comes in an HTTP 200 body, with its
/// e-MECeF code, and a client finds it with `dgi::error_in`.
#[test]
fn every_business_refusal_is_an_error_body_in_a_200() {
    let s = start_with(SimConfig {
        max_pending: 1,
        reference_delay_ms: 1_000,
        ..SimConfig::default()
    });
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = simple("o/2026/1");
        f(&mut v);
        v
    };
    let mut seen = Vec::new();
    let mut check = |a: Answer, code: &str| {
        a.refused(code);
        let e = error_in(&a.body).unwrap();
        assert_eq!(e.error_code, code);
        seen.push(code.to_owned());
    };
    check(s.post(&with(&|v| v["type"] = json!("FX"))), "3");
    check(s.post(&with(&|v| v["type"] = json!("FA"))), "4");
    check(
        s.post(&with(&|v| {
            v["type"] = json!("FA");
            v["reference"] = json!("SHORT");
            v["referenceType"] = json!("COR");
        })),
        "5",
    );
    check(
        s.post(&with(&|v| v["payment"][0]["name"] = json!("TROC"))),
        "7",
    );
    check(s.post(&with(&|v| v["items"] = json!([]))), "8");
    check(
        s.post(&with(&|v| v["items"][1]["taxGroup"] = json!("P"))),
        "9",
    );
    check(
        s.post(&with(&|v| v["payment"][0]["amount"] = json!(1))),
        "99",
    );
    // 11: a well-formed code this e-MCF never issued.
    check(
        s.post(&credit_note(
            "o/2026/2",
            "AAAABBBBCCCCDDDDEEEEFFFF",
            &[("SUCRE-1KG", "1")],
        )),
        "11",
    );
    // 10: an original confirmed too recently to be referenced.
    let sale = s.certify(&simple("o/2026/3"));
    check(
        s.post(&credit_note(
            "o/2026/4",
            &sale.code_def_dgi,
            &[("SUCRE-1KG", "1")],
        )),
        "10",
    );
    s.clock.advance(1_000);
    // 12: more than was sold.
    check(
        s.post(&credit_note(
            "o/2026/4",
            &sale.code_def_dgi,
            &[("SUCRE-1KG", "4")],
        )),
        "12",
    );
    // 1: one pending already (the limit here is 1).
    let uid = s.create("o/2026/5");
    check(s.post(&simple("o/2026/6")), "1");
    // 99: CONFIRM totals differing.
    check(s.confirm(&uid, "1.00", "0.00"), "99");
    // 20: CONFIRM, CANCEL and details of a finalised or unknown uid.
    s.put(&uid, "CANCEL", None).ok();
    check(s.confirm(&uid, "133080.00", "10080.00"), "20");
    check(s.put(&uid, "CANCEL", None), "20");
    check(s.echo(&uid), "20");
    check(s.echo("00000000-0000-4000-8000-000000000000"), "20");
    assert_eq!(
        seen,
        [
            "3", "4", "5", "7", "8", "9", "99", "11", "10", "12", "1", "99", "20", "20", "20", "20"
        ]
    );
}

/// Point 2: details echo a pending invoice's request as it was received,
/// and nothing else; a final or unknown uid is error 20.
#[test]
fn details_echo_a_pending_request_byte_for_byte_and_20_once_final() {
    let s = start();
    let a = s.post_text(SIMPLE_NUMBERS);
    let uid = a.ok()["uid"].as_str().unwrap().to_owned();
    let d = s.echo(&uid);
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.text, SIMPLE_NUMBERS);
    for key in ["status", "total", "vtotal", "codeDEFDGI", "counters", "uid"] {
        assert!(d.body.get(key).is_none(), "{key} in {}", d.text);
    }
    assert!(error_in(&d.body).is_none());

    // Confirmed, cancelled, expired, unknown: 20, whatever the state.
    s.confirm(&uid, "133080.00", "10080.00").ok();
    s.echo(&uid).refused("20");
    let cancelled = s.create("o/2026/2");
    s.put(&cancelled, "CANCEL", None).ok();
    s.echo(&cancelled).refused("20");
    let expired = s.create("o/2026/3");
    let pending = s.create("o/2026/4");
    s.clock.advance(60_000);
    let pending_later = s.create("o/2026/5");
    s.clock.advance(60_000);
    s.echo(&expired).refused("20");
    s.echo(&pending).refused("20");
    assert_eq!(s.echo(&pending_later).ok(), simple("o/2026/5"));
    s.echo("nothing-like-a-uid").refused("20");
}

/// Point 3, error 11: the reference must be an invoice this e-MCF
/// confirmed for the same NIF.
#[test]
fn credit_notes_need_an_original_confirmed_for_the_same_nif() {
    let s = start();
    // Unknown code.
    s.post(&credit_note(
        "o/2026/1",
        "AAAABBBBCCCCDDDDEEEEFFFF",
        &[("SUCRE-1KG", "1")],
    ))
    .refused("11");
    // Another NIF's invoice.
    let other_token = s.sim.issue_token_for(OTHER_NIF, "CD01009999-1", 3600);
    let mut theirs = simple("x/2026/1");
    theirs["nif"] = json!(OTHER_NIF);
    let their_sale = s.certify_as(&theirs, &other_token);
    let a = s.post(&credit_note(
        "o/2026/2",
        &their_sale.code_def_dgi,
        &[("SUCRE-1KG", "1")],
    ));
    a.refused("11");
    // An invoice created but never confirmed has no code to reference;
    // a credit note's own code is no original.
    let ours = s.certify(&simple("o/2026/3"));
    let note = s.certify(&credit_note(
        "o/2026/4",
        &ours.code_def_dgi,
        &[("SUCRE-1KG", "1")],
    ));
    assert_eq!(note.counters, "1/2 FA");
    s.post(&credit_note(
        "o/2026/5",
        &note.code_def_dgi,
        &[("SUCRE-1KG", "1")],
    ))
    .refused("11");
    // The other NIF can credit its own.
    let mut their_note = credit_note("x/2026/2", &their_sale.code_def_dgi, &[("CIMENT-50", "2")]);
    their_note["nif"] = json!(OTHER_NIF);
    s.post_as(&their_note, &other_token).ok();
    // RRR needs no original.
    s.post(&credit_note("o/2026/6", "RRR", &[("SUCRE-1KG", "1")]))
        .ok();
}

/// Point 3, error 10: `reference_delay_ms`, from the config, the control
/// endpoint and the Rust method.
#[test]
fn a_fresh_code_is_not_verifiable_before_the_reference_delay() {
    let s = start();
    assert_eq!(s.sim.settings().reference_delay_ms, 0);
    let set = s.sim_post("/_sim/settings", &json!({"reference_delay_ms": 60_000}));
    assert_eq!(set.ok()["reference_delay_ms"], 60_000);
    assert_eq!(s.get("/_sim/settings").ok()["reference_delay_ms"], 60_000);
    let sale = s.certify(&simple("o/2026/1"));
    let note = credit_note("o/2026/2", &sale.code_def_dgi, &[("SUCRE-1KG", "1")]);
    let a = s.post(&note);
    assert!(a.refused_with("10").contains(&sale.code_def_dgi));
    s.clock.advance(59_999);
    s.post(&note).refused("10");
    s.clock.advance(1);
    s.post(&note).ok();
    // Shortened while running: a newer code is usable at once.
    s.sim.set_reference_delay_ms(0);
    let sale2 = s.certify(&simple("o/2026/3"));
    s.post(&credit_note(
        "o/2026/4",
        &sale2.code_def_dgi,
        &[("SUCRE-1KG", "1")],
    ))
    .ok();
    // And from the configuration.
    let s = start_with(SimConfig {
        reference_delay_ms: 5_000,
        ..SimConfig::default()
    });
    let sale = s.certify(&simple("o/2026/1"));
    s.post(&credit_note(
        "o/2026/2",
        &sale.code_def_dgi,
        &[("SUCRE-1KG", "1")],
    ))
    .refused("10");
}

/// Point 3, error 12: per article, every confirmed credit note against
/// the original plus this one must not exceed the quantity sold; an
/// article not on the original is 12 too.
#[test]
fn over_credit_is_12_summed_over_confirmed_credit_notes() {
    let s = start();
    // Sold: 3 SUCRE-1KG, 2 CIMENT-50.
    let sale = s.certify(&simple("o/2026/1"));
    let code = sale.code_def_dgi.as_str();
    s.post(&credit_note("o/2026/2", code, &[("SUCRE-1KG", "4")]))
        .refused("12");
    let a = s.post(&credit_note("o/2026/2", code, &[("RIZ-25", "1")]));
    assert!(a.refused_with("12").contains("RIZ-25"), "{}", a.desc());
    // The same article on two lines counts twice.
    s.post(&credit_note(
        "o/2026/2",
        code,
        &[("SUCRE-1KG", "2"), ("SUCRE-1KG", "2")],
    ))
    .refused("12");

    // 2 credited and confirmed.
    let first = s.certify(&credit_note("o/2026/2", code, &[("SUCRE-1KG", "2")]));
    assert_eq!(first.counters, "1/2 FA");
    s.post(&credit_note("o/2026/3", code, &[("SUCRE-1KG", "2")]))
        .refused("12");
    // A pending or cancelled credit note does not count...
    let pending = s
        .post(&credit_note("o/2026/3", code, &[("SUCRE-1KG", "1")]))
        .ok()["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = s
        .post(&credit_note("o/2026/4", code, &[("SUCRE-1KG", "1")]))
        .ok()["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    s.put(&cancelled, "CANCEL", None).ok();
    s.post(&credit_note("o/2026/5", code, &[("SUCRE-1KG", "1")]))
        .ok();
    // ...until it is confirmed.
    s.confirm(&pending, "1160.00", "160.00").ok();
    s.post(&credit_note("o/2026/6", code, &[("SUCRE-1KG", "1")]))
        .refused("12");
    // Other articles keep their own count.
    s.post(&credit_note("o/2026/6", code, &[("CIMENT-50", "2")]))
        .ok();
    s.post(&credit_note("o/2026/7", code, &[("CIMENT-50", "2.001")]))
        .refused("12");
}

/// Point 4: each NIF's e-MCF account counts its own confirmed invoices.
#[test]
fn counters_are_per_nif() {
    let s = start();
    let other_token = s.sim.issue_token_for(OTHER_NIF, "CD01009999-1", 3600);
    let mut theirs = simple("x/2026/1");
    theirs["nif"] = json!(OTHER_NIF);
    assert_eq!(s.certify(&simple("o/2026/1")).counters, "1/1 FV");
    assert_eq!(s.certify(&simple("o/2026/2")).counters, "2/2 FV");
    let c = s.certify_as(&theirs, &other_token);
    assert_eq!(c.counters, "1/1 FV");
    assert!(
        c.qr_code.contains(&format!(";{OTHER_NIF};")),
        "{}",
        c.qr_code
    );
    assert_eq!(c.nim, "EMCFSIM0001");
    let mut ft = simple("o/2026/3");
    ft["type"] = json!("FT");
    assert_eq!(s.certify(&ft).counters, "1/3 FT");
    theirs["rn"] = json!("x/2026/2");
    assert_eq!(s.certify_as(&theirs, &other_token).counters, "2/2 FV");
    // Each sees only its own pending list.
    s.create("o/2026/4");
    let st: DgiStatus =
        serde_json::from_value(s.get_as("/api/invoice", Some(&other_token)).ok()).unwrap();
    assert_eq!(st.pending_count, 0);
}
