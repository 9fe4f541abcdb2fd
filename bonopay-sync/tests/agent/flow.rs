//! The happy paths and what is sent: invoices and credit notes synced with
//! the DGI's elements, a credit note waiting for its original and quoting
//! its DGI code, refusals in 2xx answers, the gapless SFE number, decimals
//! as JSON numbers, the tax group comparison.

use super::*;

#[test]
fn invoices_and_credit_notes_are_synced_with_the_dgi_elements() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    r.seal(4);
    r.fiscalizer
        .seal(&reduction(), &"rrr".parse().unwrap())
        .unwrap();
    let agent = r.agent(Arc::new(http(&sim)));
    let report = agent.run_once().unwrap();
    assert_eq!(report.enqueued, 5);
    assert_eq!(report.synced, 5, "{report:?}");
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Synced);
    let c = item.confirmation.clone().unwrap();
    assert_eq!(c.code_def_dgi.len(), 24);
    assert_eq!(c.counters, "1/1 FV");
    assert!(c.qr_code.starts_with("RDCDEF01;"), "{}", c.qr_code);
    // The elements are bound into the ledger, hash-linked to the sale, and
    // the whole chain still verifies with every link checked.
    assert_eq!(r.certified(1), Some(c.code_def_dgi.clone()));
    let cert = r.fiscalizer.certification_of(OUTLET, 1).unwrap().unwrap();
    assert_eq!(cert.source, CertificationSource::Emcf);
    assert_eq!(cert.rn, format!("{OUTLET}/2026/1"));
    assert_eq!(item.request.rn, cert.rn, "rn is the SFE number");
    let check =
        bonopay_signer::SignatureCheck::new(vec![r.fiscalizer.signer().public_key().clone()]);
    let report = bonopay_ledger::verify_store(&*r.ledger, OUTLET, &check);
    assert!(report.is_valid(), "{:?}", report.error);
    let fa = r.outbox.get(OUTLET, 5).unwrap().unwrap();
    assert_eq!(fa.confirmation.unwrap().counters, "1/5 FA");
    // Our totals and the DGI's agreed.
    assert_eq!(fa.theirs, Some(fa.ours));
    assert_eq!(fa.ours.total.to_string(), "1160.00");
    assert_eq!(fa.ours.vtotal.to_string(), "160.00");
    assert!(sim.sim.double_confirms().is_empty());
    assert_eq!(sim.sim.stats().pending, 0);
    // Nothing new: nothing more is sent.
    let again = agent.run_once().unwrap();
    assert_eq!((again.enqueued, again.synced), (0, 0));
    assert_eq!(sim.sim.confirms().len(), 5);
    let h = health::judge(
        &r.outbox.summary().unwrap()[0],
        r.clock.now_ms(),
        &HealthThresholds::default(),
    );
    assert_eq!(h.health, Health::Green, "{h:?}");
}

#[test]
fn a_credit_note_waits_for_its_original_and_quotes_its_dgi_code() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    // Two soaps sold: one credited now, one later.
    let sale_seq = r.seal_one(&sale(1));
    let ours = r
        .fiscalizer
        .load(OUTLET, sale_seq)
        .unwrap()
        .unwrap()
        .invoice
        .elements
        .authentication_code;
    // The credit note quotes Bono Pay's code (all the till knows yet).
    let note_seq = r.seal_one(&credit_of(&ours));
    // The original cannot get through for now: the credit note must not go
    // first (the e-MCF would refuse it: original unknown, error 11).
    let blocked = r.agent(poisoned(&sim, rn(&r, sale_seq)));
    blocked.run_once().unwrap();
    let note = r.outbox.get(OUTLET, note_seq).unwrap().unwrap();
    assert_eq!(note.state, ItemState::Queued, "{note:?}");
    assert_eq!(note.attempts, 0, "waiting spends no retry budget");
    assert!(
        note.error
            .as_deref()
            .unwrap()
            .contains("waiting for the original"),
        "{note:?}"
    );
    assert_eq!(
        sim.sim.stats().posted,
        0,
        "nothing sent before the original"
    );
    // The original goes through; then the credit note, quoting its Code
    // DEF/DGI, which the e-MCF knows (otherwise error 11).
    let agent = r.agent(Arc::new(http(&sim)));
    r.drain(&agent);
    let note = r.outbox.get(OUTLET, note_seq).unwrap().unwrap();
    assert_eq!(note.state, ItemState::Synced, "{note:?}");
    let fa = sim.sim.portal("A1309334L", Some(&note.request.rn));
    assert_eq!(fa[0].status, DgiInvoiceState::Confirmed);
    let original_code = r.certified(sale_seq).unwrap();
    assert_ne!(original_code, ours);

    // A credit note quoting the DGI's code while the e-MCF cannot verify
    // the original yet: error 10 inside a 200 answer. It retries, it is
    // never rejected, and it goes through once the e-MCF can verify.
    sim.sim.set_reference_delay_ms(3_600_000);
    let note2 = r.seal_one(&credit_of(&original_code));
    agent.run_once().unwrap();
    let item = r.outbox.get(OUTLET, note2).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Queued, "{item:?}");
    assert!(
        item.error.as_deref().unwrap().contains("DGI error 10"),
        "{item:?}"
    );
    sim.sim.set_reference_delay_ms(0);
    r.drain(&agent);
    assert_eq!(
        r.outbox.get(OUTLET, note2).unwrap().unwrap().state,
        ItemState::Synced
    );
    assert!(sim.sim.double_confirms().is_empty());
}

#[test]
fn an_error_code_in_a_2xx_answer_is_a_rejection_with_the_dgis_words() {
    // Our reference rate accepts 3000 CDF/USD; the e-MCF's (2850) does not
    // (more than 1 % off): it answers 200 with `errorCode` 99.
    let sim = start_sim(SimConfig::default());
    let r = rig();
    let mut config = FiscalizerConfig::new("NID-TEST");
    config.reference_rates = Arc::new(bonopay_tax::FixedReferenceRates(
        [(bonopay_core::Currency::Usd, "3000".parse().unwrap())]
            .into_iter()
            .collect(),
    ));
    let usd = Fiscalizer::new(
        Arc::clone(&r.ledger),
        Arc::clone(r.fiscalizer.signer()),
        config,
    );
    let req = parse_invoice(
        &json!({
            "merchant_nif": "A1309334L", "outlet_id": OUTLET, "pos_terminal_id": "till-1",
            "cashier": {"id": "c-07", "name": "Mbuyi"}, "invoice_type": "EV", "price_mode": "TTC",
            "client": {"type": "PM", "name": "Kivu Export", "nif": "A0700012B"},
            "currency": "USD", "exchange_rate": {"rate": "3000", "date": "2026-12-05"},
            "items": [{"code": "AC", "kind": "SER", "name": "Service", "unit_price": "100", "quantity": "1", "tax_group": "E"}],
            "payments": [{"method": "VIREMENT", "amount": "100"}]
        })
        .to_string(),
    )
    .unwrap();
    let seq = usd.seal(&req, &"usd-1".parse().unwrap()).unwrap().seq;
    r.agent(Arc::new(http(&sim))).run_once().unwrap();
    let item = r.outbox.get(OUTLET, seq).unwrap().unwrap();
    assert_eq!(item.state, ItemState::Rejected, "{item:?}");
    let why = item.error.unwrap();
    assert!(why.contains("error 99"), "{why}");
    assert!(
        why.to_lowercase().contains("currate") || why.contains("1 %") || why.contains("1%"),
        "{why}"
    );
    assert_eq!(sim.sim.stats().posted, 0);
    // Payments of a foreign-currency invoice carry their currency.
    assert_eq!(
        item.request.payment[0].currency_code.as_deref(),
        Some("USD")
    );
    assert_eq!(item.request.cur_code, "USD");
    let h = health::judge(
        &r.outbox.summary().unwrap()[0],
        r.clock.now_ms(),
        &HealthThresholds::default(),
    );
    assert_eq!(h.health, Health::Red, "{h:?}");
}

#[test]
fn the_sfe_number_is_gapless_across_z_reports_and_other_entries() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    let id = bonopay_signer::ReportIdentity {
        merchant_nif: "A1309334L".into(),
        trade_name: "Test".into(),
    };
    r.seal(2);
    r.fiscalizer.z_report(OUTLET, &id).unwrap();
    r.seal(1);
    r.fiscalizer
        .record_incomplete_sale(
            OUTLET,
            &bonopay_signer::IncompleteSale {
                merchant_nif: "A1309334L".into(),
                pos_terminal_id: "till-1".into(),
                cashier_id: "c-07".into(),
                amount: "10".parse().unwrap(),
                reason: "abandon".into(),
            },
        )
        .unwrap();
    r.fiscalizer.z_report(OUTLET, &id).unwrap();
    r.seal(2);
    let agent = r.agent(Arc::new(http(&sim)));
    r.drain(&agent);
    let year = chrono_year(&r);
    let mut rns = Vec::new();
    for seq in 1..=r.outbox.cursor(OUTLET).unwrap() {
        if let Some(item) = r.outbox.get(OUTLET, seq).unwrap() {
            rns.push((seq, item.request.rn));
        }
    }
    let seqs: Vec<u64> = rns.iter().map(|(s, _)| *s).collect();
    assert_ne!(
        seqs,
        (1..=5).collect::<Vec<_>>(),
        "the chain has other entries"
    );
    let sent: Vec<String> = rns.into_iter().map(|(_, rn)| rn).collect();
    let want: Vec<String> = (1..=5).map(|n| format!("{OUTLET}/{year}/{n}")).collect();
    assert_eq!(sent, want);
    // The e-MCF saw exactly that series.
    let mut confirmed: Vec<String> = sim.sim.confirms().into_iter().map(|c| c.rn).collect();
    confirmed.sort();
    let mut want_sorted = want;
    want_sorted.sort();
    assert_eq!(confirmed, want_sorted);
}

#[test]
fn decimals_go_as_json_numbers_so_a_platform_refusing_strings_takes_them() {
    let sim = start_sim(SimConfig::default());
    sim.sim.set_refuse_string_decimals(true);
    let r = rig();
    r.seal(3);
    let agent = r.agent(Arc::new(http(&sim)));
    agent.run_once().unwrap();
    assert_eq!(
        r.states().get(&ItemState::Synced),
        Some(&3),
        "{:?}",
        r.states()
    );
    // And with the switch off, the same.
    sim.sim.set_refuse_string_decimals(false);
    r.seal(3);
    agent.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Synced), Some(&6));
    // What went on the wire: numbers, never strings.
    let item = r.outbox.get(OUTLET, 1).unwrap().unwrap();
    let wire = serde_json::to_string(&item.request).unwrap();
    assert!(
        wire.contains(r#""price":1160.00,"#),
        "exact, to the cent: {wire}"
    );
    assert!(wire.contains(r#""amount":65960.00"#), "{wire}");
    assert!(wire.contains(r#""quantity":1.000,"#), "{wire}");
}

#[test]
fn the_emcfs_tax_groups_are_compared_with_ours_and_a_difference_is_shown() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    let ours = r.fiscalizer.config().rate_table.invoiced_rates();
    let agent = r.agent(Arc::new(http(&sim))).comparing_rates(ours);
    let h = agent.check_accounts();
    assert!(h[0].rate_differences.is_empty(), "{h:?}");
    assert!(h[0].token_valid.is_some(), "tokenValid is read: {h:?}");
    sim.sim
        .set_tax_rate("B", Some("18".parse().unwrap()))
        .unwrap();
    let h = agent.check_accounts();
    assert_eq!(
        h[0].rate_differences,
        vec!["group B: our rate 16%, the e-MCF's 18%".to_owned()],
        "{h:?}"
    );
}
