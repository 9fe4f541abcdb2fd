//! The two-phase flow: create, list, confirm or cancel, expiry on the
//! injected clock, the pending limit, credit notes, Benin's codes for
//! invalid invoices and unique counters under parallel clients.

use super::*;

#[test]
fn post_list_confirm_gives_counters_code_and_qr() {
    let s = start();
    let a = s.post(&simple("outlet-1/2026/1"));
    // Amounts are JSON numbers, to the cent; per group the rate, total,
    // base and VAT (e-MECeF's ta/taa/haa/vaa members), for A to N.
    for (key, raw) in [
        ("total", "133080.00"),
        ("vtotal", "10080.00"),
        ("curTotal", "133080.00"),
        ("ts", "0.00"),
        ("tb", "16"),
        ("tab", "3480.00"),
        ("hab", "3000.00"),
        ("vab", "480.00"),
        ("tc", "8"),
        ("tac", "129600.00"),
        ("hac", "120000.00"),
        ("vac", "9600.00"),
        ("ta", "0"),
        ("taa", "0.00"),
        ("tn", "0"),
        ("van", "0.00"),
    ] {
        assert_eq!(a.raw(key), raw, "{key}");
    }
    let v = a.ok();
    assert!(v.get("groups").is_none() && v.get("status").is_none());
    let uid = v["uid"].as_str().unwrap().to_owned();
    assert_eq!(uid.len(), 36, "{uid}");
    assert_eq!(uid.matches('-').count(), 4, "{uid}");

    let raw = s.get("/api/invoice").ok();
    assert_eq!(raw["nim"], "EMCFSIM0001");
    assert_eq!(raw["nif"], NIF);
    assert_eq!(raw["status"], true);
    assert_eq!(raw["serverDateTime"], "2026-11-28T09:00:00+01:00");
    let st = s.status();
    assert_eq!(st.pending_count, 1);
    assert_eq!(st.pending[0].uid, uid);
    assert_eq!(st.pending[0].date, "2026-11-28T09:00:00+01:00");

    // Details of a pending invoice: its request, nothing about its state.
    let d = s.echo(&uid).ok();
    assert_eq!(d, simple("outlet-1/2026/1"));
    assert_eq!(s.state(&uid), DgiInvoiceState::Pending);

    let c: DgiConfirmation =
        serde_json::from_value(s.confirm(&uid, "133080.00", "10080.00").ok()).unwrap();
    assert_eq!(c.counters, "1/1 FV");
    assert!(is_code(&c.code_def_dgi), "{}", c.code_def_dgi);
    assert_eq!(c.nim, "EMCFSIM0001");
    assert_eq!(c.date_time, "2026-11-28 09:00:00");
    assert_eq!(
        c.qr_code,
        format!(
            "RDCDEF01;EMCFSIM0001;{};{NIF};20261128090000",
            c.code_def_dgi
        )
    );
    assert_eq!(s.status().pending_count, 0);
    // Once confirmed, the e-MCF says nothing more about it (error 20);
    // only the portal shows its elements.
    s.echo(&uid).refused("20");
    let p = s.sim.details(&uid).unwrap();
    assert_eq!(p.status, DgiInvoiceState::Confirmed);
    assert_eq!(p.elements.as_ref(), Some(&c));

    // Confirming again: error 20, and still one confirm on record.
    s.confirm(&uid, "133080.00", "10080.00").refused("20");
    s.put(&uid, "CANCEL", None).refused("20");
    assert_eq!(s.sim.confirms().len(), 1);
    assert_eq!(s.sim.double_confirms(), Vec::<String>::new());
    let rec = &s.sim.confirms()[0];
    assert_eq!(
        (
            rec.uid.as_str(),
            rec.rn.as_str(),
            rec.nif.as_str(),
            rec.counters.as_str()
        ),
        (uid.as_str(), "outlet-1/2026/1", NIF, "1/1 FV")
    );
    assert_eq!(rec.code, c.code_def_dgi);
    assert_eq!(rec.at_ms, START_MS);
    // The record carries every element, as answered.
    assert_eq!(rec.elements(), c);

    // Counters per type and in total; lowercase `confirm`; numbers as
    // totals are accepted too.
    let uid2 = s.create("outlet-1/2026/2");
    s.clock.advance(1_000);
    let c2 = s
        .put(
            &uid2,
            "confirm",
            Some(&json!({"total": 133080, "vtotal": "10080"})),
        )
        .ok();
    assert_eq!(c2["counters"], "2/2 FV");
    assert_eq!(c2["dateTime"], "2026-11-28 09:00:01");
    let mut ft = simple("outlet-1/2026/3");
    ft["type"] = json!("FT");
    let uid3 = s.post(&ft).ok()["uid"].as_str().unwrap().to_owned();
    assert_eq!(
        s.confirm(&uid3, "133080.00", "10080.00").ok()["counters"],
        "1/3 FT"
    );

    let recs: Vec<ConfirmRecord> = serde_json::from_value(s.get("/_sim/confirms").ok()).unwrap();
    assert_eq!(recs, s.sim.confirms());
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1].date_time, "2026-11-28 09:00:01");
    assert!(recs[2].qr_code.starts_with("RDCDEF01;EMCFSIM0001;"));
    let stats: SimStats = serde_json::from_value(s.get("/_sim/stats").ok()).unwrap();
    assert_eq!((stats.posted, stats.confirmed, stats.pending), (3, 3, 0));
}

#[test]
fn wrong_totals_are_refused_and_cancel_finalises() {
    let s = start();
    let uid = s.create("o/2026/1");
    let a = s.confirm(&uid, "133081.00", "10080.00");
    a.refused("99");
    let desc = a.desc();
    assert!(desc.contains("133081") && desc.contains("133080"), "{desc}");
    s.confirm(&uid, "133080.00", "10079.99").refused("99");
    // No body at all is 400; JSON of the wrong shape is refused in a 200.
    s.put(&uid, "CONFIRM", None).error(400, "99");
    s.put(&uid, "CONFIRM", Some(&json!({"total": "x"})))
        .refused("99");
    assert_eq!(s.state(&uid), DgiInvoiceState::Pending);
    s.echo(&uid).ok();
    assert!(s.sim.confirms().is_empty());

    // CANCEL answers Benin's security elements, empty but for the time.
    let c = s.put(&uid, "CANCEL", None).ok();
    assert_eq!(
        c,
        json!({"dateTime": "2026-11-28 09:00:00", "codeDEFDGI": null, "counters": null, "nim": null, "qrCode": null})
    );
    assert_eq!(s.status().pending_count, 0);
    assert_eq!(s.state(&uid), DgiInvoiceState::Cancelled);
    s.echo(&uid).refused("20");
    s.put(&uid, "CANCEL", None).refused("20");
    s.confirm(&uid, "133080.00", "10080.00").refused("20");
    s.put("no-such-uid", "cancel", None).refused("20");
    s.get("/api/invoice/no-such-uid").refused("20");
    s.put(&uid, "REOPEN", None).error(404, "99");
    assert_eq!(s.sim.stats().cancelled, 1);
}

#[test]
fn pending_invoices_expire_on_the_clock() {
    let s = start();
    let uid = s.create("o/2026/1");
    s.clock.advance(119_999);
    assert_eq!(s.status().pending_count, 1);
    s.echo(&uid).ok();
    s.clock.advance(2);
    let st = s.status();
    assert_eq!(st.pending_count, 0);
    assert!(st.pending.is_empty());
    assert_eq!(s.state(&uid), DgiInvoiceState::Expired);
    s.echo(&uid).refused("20");
    s.confirm(&uid, "133080.00", "10080.00").refused("20");
    s.put(&uid, "CANCEL", None).refused("20");
    assert!(s.sim.confirms().is_empty());
    assert_eq!(s.sim.stats().expired, 1);

    // A configured TTL, and /_sim/expire.
    let s = start_with(SimConfig {
        pending_ttl_ms: 5_000,
        ..SimConfig::default()
    });
    let a = s.create("o/2026/1");
    s.clock.advance(5_000);
    assert_eq!(s.state(&a), DgiInvoiceState::Expired);
    let b = s.create("o/2026/2");
    let c = s.create("o/2026/3");
    assert_eq!(s.sim_post("/_sim/expire", &json!({})).ok()["expired"], 2);
    assert_eq!(s.state(&b), DgiInvoiceState::Expired);
    assert_eq!(s.state(&c), DgiInvoiceState::Expired);
    s.echo(&b).refused("20");
    assert_eq!(s.status().pending_count, 0);
    assert_eq!(s.sim.stats().expired, 3);
}

#[test]
fn eleventh_pending_invoice_is_refused_with_code_1() {
    let s = start();
    let uids: Vec<String> = (1..=10).map(|i| s.create(&format!("o/2026/{i}"))).collect();
    assert_eq!(s.status().pending_count, 10);
    s.post(&simple("o/2026/11")).refused("1");
    assert_eq!(s.status().pending_count, 10);
    // Another NIF has its own limit.
    let mut other = simple("x/2026/1");
    other["nif"] = json!(OTHER_NIF);
    s.post_as(
        &other,
        &s.sim.issue_token_for(OTHER_NIF, "CD01009999-1", 60),
    )
    .ok();
    // Finalising one frees a place.
    s.put(&uids[0], "CANCEL", None).ok();
    s.create("o/2026/11");
    s.post(&simple("o/2026/12")).refused("1");
    // So does expiry.
    s.clock.advance(120_000);
    s.create("o/2026/12");
}

#[test]
fn usd_invoice_and_credit_notes_are_accepted() {
    let s = start();
    // 10.00 USD TTC in group B at 2850 CDF/USD.
    let mut usd = json!({
        "nif": NIF, "rn": "o/2026/1", "mode": "ttc", "type": "FV",
        "items": [{"code": "USB", "type": "BIE", "name": "Cle USB", "price": "10.00", "quantity": "1", "taxGroup": "B"}],
        "client": {"type": "PM", "nif": "B0000001X", "name": "Acme SARL"},
        "operator": {"id": "c1", "name": "Mado"},
        "payment": [{"name": "CARTEBANCAIRE", "amount": "10.00", "currencyCode": "USD", "currencyRate": 2850}],
        "curCode": "USD", "curRate": "2850", "curDate": "2026-11-27T00:00:00"
    });
    let a = s.post(&usd);
    assert_eq!(a.raw("curTotal"), "10.00");
    assert_eq!(a.raw("total"), "28500.00");
    // 10.00 TTC at 16 % is 8.62 + 1.38 USD; the group is converted at the
    // invoice's rate: 24567.00 + 3933.00 CDF.
    assert_eq!(a.raw("vtotal"), "3933.00");
    assert_eq!(
        (a.raw("tab"), a.raw("hab"), a.raw("vab"), a.raw("tb")),
        (
            "28500.00".into(),
            "24567.00".into(),
            "3933.00".into(),
            "16".into()
        )
    );
    let (total, vtotal) = (a.raw("total"), a.raw("vtotal"));
    s.confirm(a.ok()["uid"].as_str().unwrap(), &total, &vtotal)
        .ok();
    // The rate must be within 1 % of the e-MCF's (the BCC's).
    usd["rn"] = json!("o/2026/9");
    usd["curRate"] = json!(3000);
    assert!(s.post(&usd).refused_with("99").contains("rate"));

    // An RRR credit note.
    let mut fa = simple("o/2026/2");
    fa["type"] = json!("FA");
    fa["reference"] = json!("RRR");
    fa["referenceType"] = json!("RRR");
    let a = s.post(&fa);
    assert_eq!(a.raw("total"), "133080.00");
    let v = a.ok();
    let c = s
        .confirm(v["uid"].as_str().unwrap(), "133080.00", "10080.00")
        .ok();
    assert_eq!(c["counters"], "1/2 FA");

    // A credit note against a Code DEF/DGI this e-MCF issued, printed
    // with dashes or not.
    let sale = s.certify(&simple("o/2026/3"));
    let dashed: Vec<String> = sale
        .code_def_dgi
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let mut ea = simple("o/2026/4");
    ea["type"] = json!("EA");
    ea["reference"] = json!(dashed.join("-"));
    ea["referenceType"] = json!("COR");
    s.post(&ea).ok();

    // Missing and malformed references.
    let mut bad = simple("o/2026/5");
    bad["type"] = json!("FA");
    s.post(&bad).refused("4");
    bad["reference"] = json!("RRR");
    s.post(&bad).refused("4");
    bad["reference"] = json!("ABC123");
    bad["referenceType"] = json!("COR");
    s.post(&bad).refused("5");
    bad["reference"] = json!("RRR");
    bad["referenceType"] = json!("COR");
    s.post(&bad).refused("99");
    // Nature RRR goes with the reference RRR only.
    bad["reference"] = json!(sale.code_def_dgi);
    bad["referenceType"] = json!("RRR");
    s.post(&bad).refused("99");
}

#[test]
fn invalid_invoices_get_benin_codes() {
    let s = start();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = simple("o/2026/1");
        f(&mut v);
        v
    };
    s.post(&with(&|v| v["type"] = json!("FX"))).refused("3");
    s.post(&with(&|v| v["items"] = json!([]))).refused("8");
    s.post(&with(&|v| v["items"][0]["taxGroup"] = json!("Z")))
        .refused("9");
    s.post(&with(&|v| v["payment"][0]["name"] = json!("BITCOIN")))
        .refused("7");
    s.post(&with(&|v| v["mode"] = json!("net"))).refused("99");
    // Payments must add up to the total.
    s.post(&with(&|v| v["payment"][0]["amount"] = json!("100.00")))
        .refused("99");
    // A price the core refuses.
    s.post(&with(&|v| v["items"][0]["price"] = json!("-5")))
        .refused("99");
    // Missing members and wrong JSON types: read, then refused (200).
    s.post(&with(&|v| {
        v.as_object_mut().unwrap().remove("items");
    }))
    .refused("99");
    s.post(&json!([1, 2])).refused("99");
    // Not JSON at all, or no body: 400 (Benin: a POST without a body).
    s.post_text("{not json").error(400, "99");
    s.post_text("").error(400, "99");
    // Unknown routes and methods still answer an error body.
    s.get("/api/nothing").error(404, "99");
    answer(
        s.http
            .delete(format!("{}/api/invoice", s.base))
            .send()
            .unwrap(),
    )
    .error(405, "99");
    let stats = s.sim.stats();
    assert_eq!(stats.posted, 0);
    assert_eq!(stats.rejected, 11);
}

#[test]
fn parallel_clients_get_unique_counters() {
    let s = Arc::new(start());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..6 {
                    let uid = s.create(&format!("t{t}/2026/{i}"));
                    s.confirm(&uid, "133080.00", "10080.00").ok();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let recs = s.sim.confirms();
    assert_eq!(recs.len(), 24);
    let mut totals: Vec<u32> = recs
        .iter()
        .map(|r| {
            let (fc_tc, ty) = r.counters.split_once(' ').unwrap();
            assert_eq!(ty, "FV");
            let (fc, tc) = fc_tc.split_once('/').unwrap();
            assert_eq!(fc, tc);
            tc.parse().unwrap()
        })
        .collect();
    totals.sort_unstable();
    assert_eq!(totals, (1..=24).collect::<Vec<u32>>());
    let mut codes: Vec<&str> = recs.iter().map(|r| r.code.as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), 24);
    assert!(s.sim.double_confirms().is_empty());
}
