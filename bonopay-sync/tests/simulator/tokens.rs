//! Tokens: missing, malformed, badly signed, expired, revoked and foreign
//! tokens.

use super::*;

#[test]
fn refuses_missing_bad_expired_and_foreign_tokens() {
    let s = start();
    s.get_as("/api/invoice", None).error(401, "99");
    s.get_as("/api/invoice", Some("not-a-jwt")).error(401, "99");
    s.get_as("/api/invoice", Some("a.b.c")).error(401, "99");
    // Signed with another secret.
    let other = Simulator::new(
        SimConfig {
            secret: b"another secret".to_vec(),
            ..SimConfig::default()
        },
        s.clock.clone(),
    );
    s.get_as("/api/invoice", Some(&other.issue_token(3600)))
        .error(401, "99");
    // Another issuer.
    let other = Simulator::new(
        SimConfig {
            issuer: "impots.example".into(),
            ..SimConfig::default()
        },
        s.clock.clone(),
    );
    s.get_as("/api/invoice", Some(&other.issue_token(3600)))
        .error(401, "99");
    // Expired: issued now, then the clock passes its exp.
    let short = s.sim.issue_token(60);
    s.get_as("/api/invoice", Some(&short)).ok();
    s.clock.advance(60_000);
    s.get_as("/api/invoice", Some(&short)).error(401, "99");
    s.get_as("/api/invoice", Some(&s.sim.issue_token(-1)))
        .error(401, "99");
    // Unauthenticated writes are refused too, and change nothing.
    answer(
        s.http
            .post(format!("{}/api/invoice", s.base))
            .json(&simple("o/2026/1"))
            .send()
            .unwrap(),
    )
    .error(401, "99");
    // A valid token for another NIF may not submit this NIF's invoice.
    let foreign = s.sim.issue_token_for(OTHER_NIF, "CD01009999-1", 3600);
    s.post_as(&simple("o/2026/1"), &foreign).error(403, "99");
    assert_eq!(s.sim.stats().posted, 0);
    // Nor see, confirm or cancel this NIF's invoices: to it they do not
    // exist (error 20).
    let uid = s.create("o/2026/2");
    s.get_as(&format!("/api/invoice/{uid}"), Some(&foreign))
        .refused("20");
    s.put_as(
        &uid,
        "CONFIRM",
        Some(&json!({"total": 133080, "vtotal": 10080})),
        &foreign,
    )
    .refused("20");
    s.put_as(&uid, "CANCEL", None, &foreign).refused("20");
    let st = s.get_as("/api/invoice", Some(&foreign)).ok();
    assert_eq!(st["pendingRequestsCount"], 0);
    assert_eq!(s.state(&uid), DgiInvoiceState::Pending);
}

/// Point 5: tokens expire, and a revocation refuses every token issued
/// before it (all NIFs, or one) while new ones work; the status answers
/// the token's expiry and the server's time in RFC 3339.
#[test]
fn tokens_expire_and_revoked_ones_get_401() {
    let s = start();
    let a = s.sim.issue_token(600);
    let b = s.sim.issue_token_for(OTHER_NIF, "CD01009999-1", 600);
    let st = s.get_as("/api/invoice", Some(&a)).ok();
    assert_eq!(st["tokenValid"], "2026-11-28T09:10:00+01:00");
    assert_eq!(st["serverDateTime"], "2026-11-28T09:00:00+01:00");
    let valid = parse_dgi_time(st["tokenValid"].as_str().unwrap()).unwrap();
    assert_eq!(valid, START_MS + 600_000);
    assert_eq!(
        parse_dgi_time(st["serverDateTime"].as_str().unwrap()),
        Some(START_MS)
    );

    // One NIF's tokens revoked: the other's still work.
    let r = s.sim_post("/_sim/tokens/revoke", &json!({"nif": OTHER_NIF}));
    assert_eq!(r.ok()["revoked_before"], "2026-11-28T09:00:00+01:00");
    let refused = s.get_as("/api/invoice", Some(&b));
    refused.error(401, "99");
    assert!(refused.desc().contains("revoked"), "{}", refused.text);
    s.get_as("/api/invoice", Some(&a)).ok();

    // Every token: refused before its expiry, in the same second as its
    // issue; a token issued afterwards (same second) is accepted.
    s.sim_post("/_sim/tokens/revoke", &json!({})).ok();
    s.get_as("/api/invoice", Some(&a)).error(401, "99");
    s.get_as("/api/invoice", Some(&s.token)).error(401, "99");
    s.post_as(&simple("o/2026/1"), &a).error(401, "99");
    let fresh = s.sim.issue_token(600);
    s.get_as("/api/invoice", Some(&fresh)).ok();
    s.post_as(&simple("o/2026/1"), &fresh).ok();
    // A token from the control endpoint, for another NIF.
    let t = s.sim_post(
        "/_sim/tokens",
        &json!({"nif": OTHER_NIF, "emcf_id": "CD01009999-1", "ttl_secs": 30}),
    );
    let t = t.ok()["token"].as_str().unwrap().to_owned();
    let st = s.get_as("/api/invoice", Some(&t)).ok();
    assert_eq!(st["nif"], OTHER_NIF);
    assert_eq!(st["emcfId"], "CD01009999-1");
    // Then the clock passes their expiry.
    s.clock.advance(30_000);
    s.get_as("/api/invoice", Some(&t)).error(401, "99");
    s.get_as("/api/invoice", Some(&fresh)).ok();
    s.clock.advance(570_000);
    s.get_as("/api/invoice", Some(&fresh)).error(401, "99");

    // The Rust method does the same.
    let t = s.sim.issue_token(600);
    s.get_as("/api/invoice", Some(&t)).ok();
    s.sim.revoke_tokens();
    s.get_as("/api/invoice", Some(&t)).error(401, "99");
}
