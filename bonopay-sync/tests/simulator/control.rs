//! The info tables and the control API: tax rate overrides, the strings-
//! refused switch and the portal view.

use super::*;

/// Point 6: the info tables, behind the bearer token.
#[test]
fn info_endpoints_answer_the_tables() {
    let s = start();
    for table in [
        "status",
        "taxGroups",
        "invoiceTypes",
        "paymentTypes",
        "clientTypes",
        "referenceTypes",
        "itemTypes",
        "currencyRates",
    ] {
        s.get_as(&format!("/api/info/{table}"), None)
            .error(401, "99");
    }
    let st = s.get("/api/info/status").ok();
    assert_eq!(st["nim"], "EMCFSIM0001");
    assert_eq!(st["nif"], NIF);
    assert_eq!(st["tokenValid"], "2026-11-28T10:00:00+01:00");

    let g = s.get("/api/info/taxGroups");
    assert_eq!(
        g.text,
        r#"{"a":0,"b":16,"c":8,"d":0,"e":0,"f":16,"g":8,"h":0,"i":0,"j":0,"k":0,"l":0,"m":0,"n":0}"#
    );
    // What a client compares its own table with finds no difference.
    let ours = bonopay_tax::RateTable::dgi_2025().invoiced_rates();
    assert!(bonopay_sync::dgi::tax_group_differences(&g.body, &ours).is_empty());

    let codes = |table: &str| -> Vec<String> {
        s.get(&format!("/api/info/{table}"))
            .ok()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert!(r["description"].as_str().is_some_and(|d| !d.is_empty()));
                r["code"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(codes("invoiceTypes"), ["FV", "FT", "FA", "EV", "ET", "EA"]);
    assert_eq!(
        codes("paymentTypes"),
        [
            "ESPECES",
            "VIREMENT",
            "CARTEBANCAIRE",
            "MOBILEMONEY",
            "CHEQUES",
            "CREDIT",
            "AUTRE"
        ]
    );
    assert_eq!(codes("clientTypes"), ["PP", "PM", "PC", "PL", "AO"]);
    assert_eq!(codes("referenceTypes"), ["COR", "RAN", "RAM", "RRR"]);
    assert_eq!(codes("itemTypes"), ["BIE", "SER", "TAX"]);

    let r = s.get("/api/info/currencyRates");
    assert_eq!(
        r.text,
        r#"[{"curCode":"USD","curRate":2850.00,"curDate":"2026-11-28"}]"#
    );
    s.get("/api/info/nothing").error(404, "99");

    // The USD rate is the simulator's: set it, and the table follows.
    s.sim_post("/_sim/settings", &json!({"usd_rate": 2900.5}))
        .ok();
    let r = s.get("/api/info/currencyRates");
    assert_eq!(
        r.text,
        r#"[{"curCode":"USD","curRate":2900.5,"curDate":"2026-11-28"}]"#
    );
}

/// Point 6: a rate override makes the e-MCF's table, and its totals,
/// differ from the client's.
#[test]
fn a_tax_rate_override_changes_the_table_and_the_totals() {
    let s = start();
    let set = s.sim_post("/_sim/settings", &json!({"tax_rate_overrides": {"b": 18}}));
    assert_eq!(set.ok()["tax_rate_overrides"], json!({"B": 18}));
    let g = s.get("/api/info/taxGroups");
    assert_eq!(g.body["b"], 18);
    assert_eq!(g.body["c"], 8);
    let ours = bonopay_tax::RateTable::dgi_2025().invoiced_rates();
    assert_eq!(
        bonopay_sync::dgi::tax_group_differences(&g.body, &ours),
        ["group B: our rate 16%, the e-MCF's 18%"]
    );
    // 3480 TTC at 18 %: 2949.15 + 530.85; the VAT total moves with it.
    let a = s.post(&simple("o/2026/1"));
    assert_eq!(a.raw("tb"), "18");
    assert_eq!(a.raw("hab"), "2949.15");
    assert_eq!(a.raw("vab"), "530.85");
    assert_eq!(a.raw("vtotal"), "10130.85");
    assert_eq!(a.raw("total"), "133080.00");
    let uid = a.ok()["uid"].as_str().unwrap().to_owned();
    // A client confirming its own (16 %) totals is refused.
    s.confirm(&uid, "133080.00", "10080.00").refused("99");

    // Removed: back to 16.
    s.sim_post(
        "/_sim/settings",
        &json!({"tax_rate_overrides": {"B": null}}),
    )
    .ok();
    assert_eq!(s.get("/api/info/taxGroups").body["b"], 16);
    // Bad overrides are refused and change nothing.
    s.sim_post("/_sim/settings", &json!({"tax_rate_overrides": {"Z": 5}}))
        .error(400, "99");
    s.sim_post("/_sim/settings", &json!({"tax_rate_overrides": {"B": 150}}))
        .error(400, "99");
    s.sim_post("/_sim/settings", &json!({"nonsense": true}))
        .error(400, "99");
    assert!(s.sim.settings().tax_rate_overrides.is_empty());

    // From the configuration, and through the Rust method.
    let s = start_with(SimConfig {
        tax_rate_overrides: BTreeMap::from([("C".to_owned(), dec("10"))]),
        ..SimConfig::default()
    });
    assert_eq!(s.get("/api/info/taxGroups").body["c"], 10);
    s.sim.set_tax_rate("D", Some(dec("16"))).unwrap();
    assert_eq!(s.get("/api/info/taxGroups").body["d"], 16);
    assert_eq!(s.sim.tax_groups()["D"], dec("16"));
}

/// Point 7: with the switch on, amounts sent as JSON strings are refused
/// (99, naming the member); numbers pass; off, both pass.
#[test]
fn string_decimals_are_refused_only_when_switched_on() {
    let s = start();
    // Off (the default): strings and numbers alike.
    let strings = s.post(&simple("o/2026/1")).ok()["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    s.confirm(&strings, "133080.00", "10080.00").ok();
    let numbers = s.post_text(SIMPLE_NUMBERS).ok()["uid"]
        .as_str()
        .unwrap()
        .to_owned();

    // On, through the control endpoint.
    let set = s.sim_post("/_sim/settings", &json!({"refuse_string_decimals": true}));
    assert_eq!(set.ok()["refuse_string_decimals"], true);
    let a = s.post(&simple("o/2026/2"));
    let desc = a.refused_with("99");
    for member in ["items[0].price", "items[1].quantity", "payment[0].amount"] {
        assert!(desc.contains(member), "{member} in {desc}");
    }
    // One string among numbers is enough, wherever it is.
    for (path, value) in [
        ("/items/0/taxSpecificAmount", json!("0")),
        ("/items/1/originalPrice", json!("64800.00")),
        ("/curRate", json!("1")),
    ] {
        let mut v = simple_numbers();
        *v.pointer_mut(path).unwrap() = value;
        let desc = s.post(&v).refused_with("99");
        let member = path
            .trim_start_matches('/')
            .replace("/0/", "[0].")
            .replace("/1/", "[1].");
        assert!(desc.contains(&member), "{member} in {desc}");
    }
    let mut usd = simple_numbers();
    usd["payment"][0]["currencyRate"] = json!("1");
    assert!(
        s.post(&usd)
            .refused_with("99")
            .contains("payment[0].currencyRate")
    );
    // CONFIRM: strings refused (the invoice stays pending), numbers pass.
    let d = s
        .confirm(&numbers, "133080.00", "10080.00")
        .refused_with("99");
    assert!(d.contains("total") && d.contains("vtotal"), "{d}");
    assert_eq!(s.state(&numbers), DgiInvoiceState::Pending);
    s.put(
        &numbers,
        "CONFIRM",
        Some(&json!({"total": 133080.00, "vtotal": 10080})),
    )
    .ok();
    // Numbers throughout pass.
    let mut n = simple_numbers();
    n["rn"] = json!("shop/2026/8");
    s.post(&n).ok();

    // Off again, through the Rust method: strings pass.
    s.sim.set_refuse_string_decimals(false);
    s.post(&simple("o/2026/3")).ok();

    // On from the configuration.
    let s = start_with(SimConfig {
        refuse_string_decimals: true,
        ..SimConfig::default()
    });
    s.post(&simple("o/2026/1")).refused("99");
    s.post_text(SIMPLE_NUMBERS).ok();
}

/// Point 8: the portal view lists a NIF's invoices by `rn`, with their
/// state and, once confirmed, their elements, including a confirm whose
/// answer was lost.
#[test]
fn the_portal_shows_state_and_elements_by_nif_and_rn() {
    let s = start();
    let rn = "shop/2026/1";
    // The same rn: expired, cancelled, then confirmed with its answer lost.
    let expired = s.create(rn);
    s.clock.advance(120_000);
    let cancelled = s.create(rn);
    s.put(&cancelled, "CANCEL", None).ok();
    s.clock.advance(1_000);
    let lost = s.create(rn);
    s.sim.set_faults(Faults {
        drop_rate: 1000,
        ..Faults::default()
    });
    s.confirm(&lost, "133080.00", "10080.00").error(500, "99");
    s.sim.set_faults(Faults::default());
    s.clock.advance(1_000);
    let pending = s.create(rn);
    // Another rn, and another NIF with the same rn.
    s.create("shop/2026/2");
    let mut theirs = simple(rn);
    theirs["nif"] = json!(OTHER_NIF);
    s.post_as(
        &theirs,
        &s.sim.issue_token_for(OTHER_NIF, "CD01009999-1", 60),
    )
    .ok();

    let list: Vec<PortalInvoice> = serde_json::from_value(
        s.get_as(&format!("/_sim/portal?nif={NIF}&rn={rn}"), None)
            .ok(),
    )
    .unwrap();
    assert_eq!(list, s.sim.portal(NIF, Some(rn)));
    let states: Vec<(&str, DgiInvoiceState)> =
        list.iter().map(|p| (p.uid.as_str(), p.status)).collect();
    assert_eq!(
        states,
        [
            (expired.as_str(), DgiInvoiceState::Expired),
            (cancelled.as_str(), DgiInvoiceState::Cancelled),
            (lost.as_str(), DgiInvoiceState::Confirmed),
            (pending.as_str(), DgiInvoiceState::Pending),
        ]
    );
    for p in &list {
        assert_eq!(
            (p.nif.as_str(), p.rn.as_str(), p.invoice_type.as_str()),
            (NIF, rn, "FV")
        );
        assert_eq!((p.total, p.vtotal), (dec("133080.00"), dec("10080.00")));
        assert_eq!(p.elements.is_some(), p.status == DgiInvoiceState::Confirmed);
    }
    // The lost answer's elements, all five, as the confirm record holds them.
    let elements = list[2].elements.clone().unwrap();
    assert_eq!(elements, s.sim.confirms()[0].elements());
    assert_eq!(elements.counters, "1/1 FV");
    assert_eq!(elements.date_time, "2026-11-28 09:02:01");
    // On the wire, under the e-MCF's names.
    let raw = s
        .get_as(&format!("/_sim/portal?nif={NIF}&rn={rn}"), None)
        .ok();
    assert_eq!(raw[2]["status"], "CONFIRMED");
    assert_eq!(
        raw[2]["elements"]["codeDEFDGI"],
        elements.code_def_dgi.as_str()
    );
    assert_eq!(raw[2]["elements"]["qrCode"], elements.qr_code.as_str());
    assert_eq!(raw[0]["elements"], Value::Null);
    assert_eq!(raw[0]["createdAt"], "2026-11-28T09:00:00+01:00");

    // Every rn of the NIF; the other NIF sees only its own.
    assert_eq!(s.sim.portal(NIF, None).len(), 5);
    let theirs = s
        .get_as(&format!("/_sim/portal?nif={OTHER_NIF}"), None)
        .ok();
    assert_eq!(theirs.as_array().unwrap().len(), 1);
    assert!(s.sim.portal("C0000000Z", None).is_empty());
    s.get_as("/_sim/portal", None).error(400, "99");
}
