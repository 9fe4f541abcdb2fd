//! X, Z and A reports, closings, incomplete sales and the audit bundle,
//! over every ledger store (memory, SQLite, PostgreSQL: `common::on_every_store`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::thread;

use bonopay_core::{ValidInvoice, parse_invoice};
use bonopay_ledger::{EntryKind, EntryMeta, LedgerStore, verify_store};
use bonopay_signer::audit::{ExportRequest, Exporter, UnreadableBundle, Verifier};
use bonopay_signer::event::{event_digest, event_payload};
use bonopay_signer::render::Paper;
use bonopay_signer::{
    Fiscalizer, FiscalizerConfig, IncompleteSale, ManualClock, PublicKey, ReportIdentity,
    SealError, SignatureCheck, Signer, SoftwareSigner, head_json,
};
use rust_decimal::Decimal;
use serde_json::{Value, json};

mod common;
use common::{Db, on_every_store};

/// 2026-11-28T08:00:00Z, 09:00 in Kinshasa.
const T0: i64 = 1_795_852_800_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn request(outlet: &str, ty: &str, items: Value, payments: Value) -> ValidInvoice {
    let mut v = json!({
        "merchant_nif": "A1309334L", "outlet_id": outlet, "pos_terminal_id": "till-1",
        "cashier": {"id": "c-07", "name": "Mbuyi Kalala"}, "invoice_type": ty, "price_mode": "TTC",
        "client": {"type": "PP"}, "items": items, "payments": payments
    });
    if ty == "FA" {
        v["credit_note"] = json!({"reference": "RRR", "nature": "RRR"});
    }
    parse_invoice(&v.to_string()).unwrap()
}

/// Soap 3 × 1 160 (group B, 16 %) and rice 2 × 64 800 (group C, 8 %), TTC:
/// 133 080 in all. B: 3 480 = 3 000 + 480 VAT; C: 129 600 = 120 000 + 9 600.
fn sale(outlet: &str) -> ValidInvoice {
    request(
        outlet,
        "FV",
        json!([
            {"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": "3", "tax_group": "B"},
            {"code": "RIZ", "kind": "BIE", "name": "Riz 25kg", "unit_price": "64800", "quantity": "2", "tax_group": "C"}
        ]),
        json!([{"method": "ESPECES", "amount": "100000"}, {"method": "MOBILEMONEY", "amount": "33080"}]),
    )
}

/// A commercial reduction (RRR) of one soap: 1 160 = 1 000 + 160 VAT.
fn reduction(outlet: &str) -> ValidInvoice {
    request(
        outlet,
        "FA",
        json!([{"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": "1", "tax_group": "B"}]),
        json!([{"method": "ESPECES", "amount": "1160"}]),
    )
}

struct Rig {
    f: Arc<Fiscalizer>,
    clock: Arc<ManualClock>,
    signer: Arc<SoftwareSigner>,
    keys: Vec<PublicKey>,
}

fn rig_on(store: Arc<dyn LedgerStore>, config: FiscalizerConfig) -> Rig {
    let clock = Arc::new(ManualClock::new(T0));
    let signer = Arc::new(SoftwareSigner::generate().unwrap());
    let keys = vec![signer.public_key().clone()];
    let f = Arc::new(Fiscalizer::with_clock(
        store,
        signer.clone(),
        clock.clone(),
        config,
    ));
    Rig {
        f,
        clock,
        signer,
        keys,
    }
}

fn rig(db: &Db) -> Rig {
    rig_on(db.open(), FiscalizerConfig::new("NID-BONO-0001"))
}

fn id() -> ReportIdentity {
    ReportIdentity {
        merchant_nif: "A1309334L".into(),
        trade_name: "Alimentation La Gombe".into(),
    }
}

fn chain_ok(r: &Rig, outlet: &str) {
    let report = verify_store(&**r.f.store(), outlet, &SignatureCheck::new(r.keys.clone()));
    assert!(report.is_valid(), "{:?}", report.error);
}

fn seal_n(r: &Rig, outlet: &str, n: usize, tag: &str) {
    for i in 0..n {
        r.f.seal(&sale(outlet), &format!("{tag}-{i}").parse().unwrap())
            .unwrap();
        r.clock.advance(1000);
    }
}

fn stat<'a>(report: &'a Value, ptr: &str) -> &'a Value {
    report
        .pointer(&format!("/stats{ptr}"))
        .unwrap_or_else(|| panic!("no {ptr} in {report}"))
}

#[test]
fn x_shows_the_session_and_z_closes_it() {
    on_every_store(|db| {
        let r = rig(db);
        seal_n(&r, "kin-01", 3, "s");
        r.f.seal(&reduction("kin-01"), &"rrr".parse().unwrap())
            .unwrap();
        r.f.record_incomplete_sale(
            "kin-01",
            &IncompleteSale {
                merchant_nif: "A1309334L".into(),
                pos_terminal_id: "till-1".into(),
                cashier_id: "c-07".into(),
                amount: Decimal::new(250_000, 2),
                reason: "client parti".into(),
            },
        )
        .unwrap();

        let x = r.f.x_report("kin-01", &id()).unwrap();
        let b = &x.body;
        assert_eq!(b["schema"], "bonopay/x-report/v1");
        assert_eq!(b["next_z_number"], 1);
        assert_eq!(stat(b, "/invoices"), 4);
        assert_eq!(stat(b, "/by_type/FV/count"), 3);
        assert_eq!(stat(b, "/by_type/FV/amounts/ttc"), "399240.00");
        assert_eq!(stat(b, "/by_type/FV/amounts/ht"), "369000.00");
        assert_eq!(stat(b, "/by_type/FV/amounts/vat"), "30240.00");
        assert_eq!(stat(b, "/by_type/FA/amounts/ttc"), "1160.00");
        assert_eq!(stat(b, "/by_group/B/sales/base"), "9000.00");
        assert_eq!(stat(b, "/by_group/B/sales/tax"), "1440.00");
        assert_eq!(stat(b, "/by_group/B/credits/base"), "1000.00");
        assert_eq!(stat(b, "/by_group/B/credits/tax"), "160.00");
        assert_eq!(stat(b, "/by_group/C/sales/total"), "388800.00");
        assert_eq!(stat(b, "/payments/ESPECES/CDF/paid"), "300000.00");
        assert_eq!(stat(b, "/payments/ESPECES/CDF/refunded"), "1160.00");
        assert_eq!(stat(b, "/payments/MOBILEMONEY/CDF/paid"), "99240.00");
        assert_eq!(stat(b, "/credit_notes/RRR/count"), 1);
        assert_eq!(stat(b, "/incomplete_sales/count"), 1);
        assert_eq!(stat(b, "/incomplete_sales/amount"), "2500.00");
        assert_eq!(stat(b, "/net/ttc"), "398080.00");
        assert_eq!(stat(b, "/first/counters"), "1/1 FV");
        assert_eq!(stat(b, "/last/counters"), "1/4 FA");
        // X closes nothing: a second X is the same session.
        let x2 = r.f.x_report("kin-01", &id()).unwrap();
        assert_eq!(x2.body["stats"], b["stats"]);

        let z = r.f.z_report("kin-01", &id()).unwrap();
        assert_eq!(z.body["schema"], "bonopay/z-report/v1");
        assert_eq!(z.body["z_number"], 1);
        assert_eq!(z.body["stats"], b["stats"], "Z = the X of the same session");
        let sealed = z.sealed.clone().unwrap();
        assert_eq!(sealed.seq, 6);
        // It carries the head it closed: the entry before it.
        let before = r.f.store().entry("kin-01", 5).unwrap().unwrap();
        assert_eq!(
            z.body["closing_head"]["hash"],
            hex::encode(before.entry_hash)
        );
        assert_eq!(z.body["prev_hash"], hex::encode(before.entry_hash));
        assert_eq!(z.body["closing_head"]["counters"]["total"], 4);
        let stored = r.f.store().entry("kin-01", 6).unwrap().unwrap();
        assert_eq!(stored.kind, EntryKind::ZReport);
        assert_eq!(stored.z_number, Some(1));
        assert_eq!(r.f.load_report("kin-01", 6).unwrap().unwrap().body, z.body);

        // A new session starts after the Z.
        let x3 = r.f.x_report("kin-01", &id()).unwrap();
        assert_eq!(stat(&x3.body, "/invoices"), 0);
        assert_eq!(x3.body["period"]["previous_seq"], 6);
        r.clock.advance(1000);
        seal_n(&r, "kin-01", 1, "after");
        let z2 = r.f.z_report("kin-01", &id()).unwrap();
        assert_eq!(z2.body["z_number"], 2);
        assert_eq!(z2.body["period"]["from_seq"], 7);
        assert_eq!(stat(&z2.body, "/invoices"), 1);
        assert_eq!(stat(&z2.body, "/first/counters"), "4/5 FV");
        assert_eq!(r.f.z_reports("kin-01").unwrap(), vec![(2, 8), (1, 6)]);
        chain_ok(&r, "kin-01");

        // Thermal text: every line fits the paper.
        for paper in [Paper::Mm58, Paper::Mm80] {
            let text = z.text(paper);
            assert!(text.contains("RAPPORT Z no 1"), "{text}");
            assert!(text.contains("A1309334L"));
            assert!(text.contains("399240.00"));
            assert!(text.contains("Ventes incompletes x1"));
            for line in text.lines() {
                assert!(line.chars().count() <= paper.columns(), "{line:?}");
            }
        }
        assert!(x.text(Paper::Mm80).contains("NE CLOT PAS"));
    });
}

#[test]
fn an_empty_session_gives_an_empty_z() {
    on_every_store(|db| {
        let r = rig(db);
        let z = r.f.z_report("kin-01", &id()).unwrap();
        assert_eq!(z.body["z_number"], 1);
        assert_eq!(stat(&z.body, "/invoices"), 0);
        assert_eq!(z.body["closing_head"]["seq"], 0);
        chain_ok(&r, "kin-01");
    });
}

#[test]
fn z_under_concurrent_sales_counts_every_invoice_exactly_once() {
    on_every_store(|db| {
        let r = rig(db);
        let f = r.f.clone();
        let sellers: Vec<_> = (0..4)
            .map(|t| {
                let f = f.clone();
                thread::spawn(move || {
                    for i in 0..40 {
                        f.seal(&sale("kin-01"), &format!("t{t}-{i}").parse().unwrap())
                            .unwrap();
                    }
                })
            })
            .collect();
        let mut zs = Vec::new();
        for _ in 0..5 {
            zs.push(r.f.z_report("kin-01", &id()).unwrap());
            thread::yield_now();
        }
        for s in sellers {
            s.join().unwrap();
        }
        zs.push(r.f.z_report("kin-01", &id()).unwrap());
        let counted: u64 = zs
            .iter()
            .map(|z| stat(&z.body, "/invoices").as_u64().unwrap())
            .sum();
        assert_eq!(counted, 160);
        // Sessions tile the chain: each starts right after the previous Z.
        for w in zs.windows(2) {
            assert_eq!(
                w[1].body["period"]["previous_seq"],
                w[0].sealed.as_ref().unwrap().seq
            );
        }
        chain_ok(&r, "kin-01");
    });
}

#[test]
fn daily_closings_follow_the_outlets_time_zone() {
    on_every_store(|db| {
        let mut config = FiscalizerConfig::new("NID-BONO-0001");
        config
            .outlet_time_zones
            .insert("lub-01".into(), chrono_tz::Africa::Lubumbashi);
        let r = rig_on(db.open(), config);
        // 2026-11-28 22:30 UTC: 23:30 on the 28th in Kinshasa, but 00:30 on
        // the 29th in Lubumbashi.
        r.clock.set(T0 + 14 * HOUR + 30 * 60_000);
        r.f.seal(&sale("kin-01"), &"k1".parse().unwrap()).unwrap();
        r.f.seal(&sale("lub-01"), &"l1".parse().unwrap()).unwrap();
        r.clock.advance(HOUR); // 00:30 / 01:30 on the 29th
        r.f.seal(&sale("kin-01"), &"k2".parse().unwrap()).unwrap();
        r.f.seal(&sale("lub-01"), &"l2".parse().unwrap()).unwrap();

        // On the 29th, Kinshasa can close the 28th; Lubumbashi has nothing to close.
        let kin = r.f.close_periods("kin-01", &id()).unwrap();
        assert_eq!(kin.len(), 1);
        assert_eq!(kin[0].body["period"]["label"], "2026-11-28");
        assert_eq!(kin[0].body["period"]["from_seq"], 1);
        assert_eq!(kin[0].body["period"]["to_seq"], 1);
        assert_eq!(stat(&kin[0].body, "/invoices"), 1);
        assert!(r.f.close_periods("lub-01", &id()).unwrap().is_empty());
        assert!(
            r.f.close_periods("kin-01", &id()).unwrap().is_empty(),
            "a day is closed once"
        );

        r.clock.advance(DAY);
        let lub = r.f.close_periods("lub-01", &id()).unwrap();
        assert_eq!(lub.len(), 1);
        assert_eq!(lub[0].body["period"]["label"], "2026-11-29");
        assert_eq!(lub[0].body["time_zone"], "Africa/Lubumbashi");
        assert_eq!(stat(&lub[0].body, "/invoices"), 2);
        let kin = r.f.close_periods("kin-01", &id()).unwrap();
        assert_eq!(kin.len(), 1);
        assert_eq!(kin[0].body["period"]["label"], "2026-11-29");
        assert_eq!(kin[0].body["period"]["from_seq"], 2);
        chain_ok(&r, "kin-01");
        chain_ok(&r, "lub-01");
    });
}

#[test]
fn monthly_and_yearly_closings_merge_the_periods_below() {
    on_every_store(|db| {
        let r = rig(db);
        // 2026-12-30, 2026-12-31, 2027-01-15 (Kinshasa, 09:00).
        let dec30 = T0 + 32 * DAY;
        for (t, n) in [(dec30, 2), (dec30 + DAY, 1), (dec30 + 16 * DAY, 3)] {
            r.clock.set(t);
            seal_n(&r, "kin-01", n, &format!("d{t}"));
        }
        r.clock.set(dec30 + 40 * DAY); // 2027-02-08
        let closed = r.f.close_periods("kin-01", &id()).unwrap();
        let labels: Vec<(String, String)> = closed
            .iter()
            .map(|c| {
                (
                    c.body["period"]["kind"].as_str().unwrap().to_owned(),
                    c.body["period"]["label"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = [
            ("daily", "2026-12-30"),
            ("daily", "2026-12-31"),
            ("daily", "2027-01-15"),
            ("monthly", "2026-12"),
            ("monthly", "2027-01"),
            ("yearly", "2026"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        assert_eq!(labels, want);
        let dec = &closed[3].body;
        assert_eq!(stat(dec, "/invoices"), 3);
        assert_eq!(stat(dec, "/by_type/FV/amounts/ttc"), "399240.00");
        assert_eq!(
            dec["period"]["closings"],
            json!([
                closed[0].sealed.as_ref().unwrap().seq,
                closed[1].sealed.as_ref().unwrap().seq
            ])
        );
        assert_eq!(stat(&closed[5].body, "/invoices"), 3);
        assert_eq!(stat(&closed[4].body, "/first/counters"), "1/1 FV");
        assert!(r.f.close_periods("kin-01", &id()).unwrap().is_empty());
        assert!(
            closed[3]
                .text(Paper::Mm58)
                .contains("CLOTURE MENSUELLE 2026-12")
        );
        chain_ok(&r, "kin-01");
    });
}

#[test]
fn a_reports_count_per_article_since_the_last_one() {
    on_every_store(|db| {
        let r = rig(db);
        seal_n(&r, "kin-01", 2, "s");
        r.f.seal(&reduction("kin-01"), &"rrr".parse().unwrap())
            .unwrap();
        let preview = r.f.a_report("kin-01", &id(), false).unwrap();
        assert!(preview.sealed.is_none());
        let a = r.f.a_report("kin-01", &id(), true).unwrap();
        assert_eq!(a.body["a_number"], 1);
        assert_eq!(a.body["articles"], preview.body["articles"]);
        let lines = a.body["articles"].as_array().unwrap();
        assert_eq!(lines.len(), 2);
        let soap = lines.iter().find(|l| l["code"] == "SAV").unwrap();
        assert_eq!(soap["sold"], "6.000");
        assert_eq!(soap["returned"], "1.000");
        assert_eq!(soap["unit_price"], "1160.00");
        assert_eq!(soap["rate"], "16.00");
        let rice = lines.iter().find(|l| l["code"] == "RIZ").unwrap();
        assert_eq!(rice["sold"], "4.000");
        assert_eq!(rice["rate"], "8.00");
        seal_n(&r, "kin-01", 1, "t");
        let a2 = r.f.a_report("kin-01", &id(), true).unwrap();
        assert_eq!(a2.body["a_number"], 2);
        let soap = a2.body["articles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["code"] == "SAV")
            .unwrap()
            .clone();
        assert_eq!(soap["sold"], "3.000");
        assert_eq!(soap["returned"], "0.000");
        let text = a2.text(Paper::Mm58);
        assert!(
            text.contains("A-RAPPORT no 2") && text.contains("Riz 25kg"),
            "{text}"
        );
        chain_ok(&r, "kin-01");
    });
}

#[test]
fn bad_incomplete_sales_are_refused_and_a_failing_signer_appends_nothing() {
    on_every_store(|db| {
        let r = rig(db);
        let err =
            r.f.record_incomplete_sale(
                "kin-01",
                &IncompleteSale {
                    merchant_nif: String::new(),
                    pos_terminal_id: "till-1".into(),
                    cashier_id: "c".into(),
                    amount: Decimal::new(-1, 0),
                    reason: "x".into(),
                },
            )
            .unwrap_err();
        let SealError::Invalid(v) = err else {
            panic!("{err:?}")
        };
        let paths: Vec<&str> = v.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["amount", "merchant_nif"]);

        let faulty = Arc::new(bonopay_signer::FaultySigner::new(r.signer.clone()));
        let f = Fiscalizer::with_clock(
            r.f.store().clone(),
            faulty.clone(),
            r.clock.clone(),
            FiscalizerConfig::new("NID-BONO-0001"),
        );
        f.seal(&sale("kin-01"), &"a".parse().unwrap()).unwrap();
        faulty.set_down(true);
        assert!(matches!(
            f.z_report("kin-01", &id()),
            Err(SealError::SignerUnavailable(_))
        ));
        faulty.set_down(false);
        assert_eq!(f.store().head("kin-01").unwrap().seq, 1, "nothing appended");
        assert_eq!(f.z_report("kin-01", &id()).unwrap().body["z_number"], 1);
    });
}

// ---- audit bundles -----------------------------------------------------------

fn export(r: &Rig, outlet: &str, from_ms: Option<i64>) -> Vec<Vec<u8>> {
    let req = ExportRequest {
        outlet: outlet.into(),
        time_zone: chrono_tz::Africa::Kinshasa,
        from_ms,
        to_ms: None,
        keys: r.keys.clone(),
        created: "2026-11-28T10:00:00+01:00".into(),
    };
    Exporter::new(&**r.f.store(), &req)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn verify(lines: &[Vec<u8>]) -> bonopay_signer::audit::BundleReport {
    let mut v = Verifier::new(&lines[0]).unwrap();
    for l in &lines[1..] {
        v.feed(l, false);
    }
    let one_by_one = v.finish();
    // The batched walk (signatures checked ahead on all cores) must reach
    // exactly the same verdict, whatever the batch boundaries.
    for size in [1, 3, 64] {
        let mut v = Verifier::new(&lines[0]).unwrap();
        for chunk in lines[1..].chunks(size) {
            v.feed_batch(chunk);
        }
        assert_eq!(v.finish(), one_by_one, "batches of {size}");
    }
    one_by_one
}

/// A day of trading with everything a bundle can hold.
fn history(r: &Rig) {
    seal_n(r, "kin-01", 3, "a");
    r.f.seal(&reduction("kin-01"), &"rrr".parse().unwrap())
        .unwrap();
    r.f.a_report("kin-01", &id(), true).unwrap();
    r.f.z_report("kin-01", &id()).unwrap();
    r.clock.advance(DAY);
    seal_n(r, "kin-01", 2, "b");
    r.f.close_periods("kin-01", &id()).unwrap();
    r.f.a_report("kin-01", &id(), true).unwrap();
    r.f.z_report("kin-01", &id()).unwrap();
    r.clock.advance(DAY);
    r.f.close_periods("kin-01", &id()).unwrap();
}

#[test]
fn a_whole_chain_bundle_verifies_and_every_report_is_recomputed() {
    on_every_store(|db| {
        let r = rig_on(db.open(), FiscalizerConfig::new("NID-BONO-0001"));
        history(&r);
        let lines = export(&r, "kin-01", None);
        let report = verify(&lines);
        assert!(report.is_valid(), "{:?}", report.error);
        let head = r.f.store().head("kin-01").unwrap();
        assert_eq!(report.last_seq, head.seq);
        assert_eq!(report.head_hash, hex::encode(head.hash));
        assert_eq!(report.checked.entries, head.seq);
        assert_eq!(report.checked.invoices, 6);
        assert_eq!(report.checked.z_reports, 2);
        assert_eq!(report.checked.a_reports, 2);
        assert_eq!(report.checked.closings, 2);
        assert_eq!(report.checked.not_recomputable, 0);
        assert_eq!(report.to_json()["valid"], true);
    });
}

#[test]
fn a_bundle_from_a_period_starts_at_a_z_that_vouches_for_it() {
    on_every_store(|db| {
        let r = rig(db);
        history(&r);
        // From the second day: the bundle starts at the first Z report.
        let lines = export(&r, "kin-01", Some(T0 + DAY - HOUR));
        let first: Value = serde_json::from_slice(&lines[1]).unwrap();
        assert_eq!(first["entry"]["kind"], "z_report");
        let report = verify(&lines);
        assert!(report.is_valid(), "{:?}", report.error);
        assert_eq!(report.first_seq, 6);
        assert_eq!(report.checked.z_reports, 1);
        assert_eq!(report.checked.closings, 1, "day 2 is whole in the bundle");
        // The starting Z's own session, the A report whose period began before
        // the bundle, and the closing of day 1 (partly before it) are
        // signature-checked only.
        assert_eq!(report.checked.not_recomputable, 3);

        // A start whose counters the Z does not vouch for is refused.
        let mut header: Value = serde_json::from_slice(&lines[0]).unwrap();
        header["bundle"]["start"]["counters"]["total"] = json!(3);
        let mut forged = lines.clone();
        forged[0] = serde_json_canonicalizer::to_vec(&header).unwrap();
        forged[0].push(b'\n');
        let report = verify(&forged);
        let err = report.error.unwrap();
        assert!(err.reason.contains("closing_head"), "{}", err.reason);
    });
}

fn edit_entry(lines: &mut [Vec<u8>], seq: u64, f: impl FnOnce(&mut Value)) {
    for l in lines.iter_mut() {
        let mut v: Value = serde_json::from_slice(l).unwrap();
        if v["entry"]["seq"] == seq {
            f(&mut v["entry"]);
            *l = serde_json_canonicalizer::to_vec(&v).unwrap();
            l.push(b'\n');
            return;
        }
    }
    panic!("no seq {seq}");
}

#[test]
fn tampered_bundles_fail_at_the_first_bad_entry() {
    on_every_store(|db| {
        let r = rig(db);
        history(&r);
        let lines = export(&r, "kin-01", None);

        // A changed amount in an invoice: the header's payload hash breaks.
        let mut t = lines.clone();
        edit_entry(&mut t, 2, |e| {
            let p = e["payload"]
                .as_str()
                .unwrap()
                .replace("133080.00", "133000.00");
            e["payload"] = json!(p);
        });
        let err = verify(&t).error.unwrap();
        assert_eq!(err.seq, Some(2));
        assert!(err.reason.contains("altered"), "{}", err.reason);

        // A removed entry: the sequence breaks where it was.
        let mut t = lines.clone();
        t.remove(3);
        let err = verify(&t).error.unwrap();
        assert_eq!(err.seq, Some(4));
        assert!(err.reason.contains("removed"), "{}", err.reason);

        // A truncated bundle.
        let t = lines[..lines.len() - 1].to_vec();
        let err = verify(&t).error.unwrap();
        assert!(err.reason.contains("truncated"), "{}", err.reason);

        // A re-hashed but unsigned change: the hashes are rebuilt, so only the
        // signature can catch it.
        let mut t = lines.clone();
        let seq = 1;
        let mut rehash_from = None;
        edit_entry(&mut t, seq, |e| {
            let p = e["payload"].as_str().unwrap().replace("Savon", "Savom");
            let header: Value = serde_json::from_str(e["header"].as_str().unwrap()).unwrap();
            let mut h = header.clone();
            h["payload_sha256"] = json!(hex::encode(bonopay_ledger::payload_hash(p.as_bytes())));
            let h = String::from_utf8(serde_json_canonicalizer::to_vec(&h).unwrap()).unwrap();
            let prev: [u8; 32] = hex::decode(e["prev_hash"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let eh = bonopay_ledger::entry_hash(&prev, h.as_bytes());
            e["payload"] = json!(p);
            e["header"] = json!(h);
            e["entry_hash"] = json!(hex::encode(eh));
            rehash_from = Some(eh);
        });
        let err = verify(&t).error.unwrap();
        assert_eq!(err.seq, Some(1));
        assert!(err.reason.contains("sealed invoice"), "{}", err.reason);

        // Not a bundle at all.
        assert!(matches!(
            Verifier::new(b"hello\n"),
            Err(UnreadableBundle::NotABundle(_))
        ));
        assert!(matches!(
            Verifier::new(br#"{"bundle":{"format":"bonopay/audit-bundle/v9"}}"#),
            Err(UnreadableBundle::UnsupportedFormat(_))
        ));
    });
}

#[test]
fn a_signed_z_whose_totals_lie_is_caught_by_recomputation() {
    on_every_store(|db| {
        // A buggy or dishonest server signs a Z with inflated totals: the
        // signature is valid, so only recomputing from the entries catches it.
        let r = rig(db);
        seal_n(&r, "kin-01", 2, "s");
        let store = r.f.store().clone();
        let head = store.head("kin-01").unwrap();
        let x = r.f.x_report("kin-01", &id()).unwrap();
        let meta = EntryMeta {
            kind: EntryKind::ZReport,
            invoice_type: None,
            fiscal_year: 2026,
            time_ms: T0 + 10_000,
        };
        let prepared = head.prepare(&meta).unwrap();
        let mut stats = x.body["stats"].clone();
        stats["by_type"]["FV"]["amounts"]["ttc"] = json!("1.00");
        let body = json!({
            "schema": "bonopay/z-report/v1", "outlet": "kin-01", "seq": prepared.seq,
            "prev_hash": hex::encode(prepared.prev_hash), "time_ms": T0 + 10_000,
            "timestamp": "2026-11-28T09:00:10+01:00", "time_zone": "Africa/Kinshasa",
            "key_id": r.signer.key_id(), "algorithm": "ES256", "nid": "NID-BONO-0001",
            "merchant_nif": "A1309334L", "trade_name": "x", "z_number": 1,
            "period": {"from_seq": 1, "previous_seq": 0, "since": null, "to_seq": 2},
            "closing_head": head_json(&head), "stats": stats,
        });
        let jcs = serde_json_canonicalizer::to_vec(&body).unwrap();
        let out = r.signer.sign(&event_digest(&jcs)).unwrap();
        store
            .append(&prepared.seal(event_payload(&jcs, &out)))
            .unwrap();
        chain_ok(&r, "kin-01"); // chain and signatures are fine …
        let report = verify(&export(&r, "kin-01", None));
        let err = report.error.unwrap(); // … the totals are not.
        assert_eq!(err.seq, Some(3));
        assert!(
            err.reason.contains(
                "stats.by_type.FV.amounts.ttc: stated \"1.00\", recomputed \"266160.00\""
            ),
            "{}",
            err.reason
        );
    });
}

#[test]
fn explain_shows_the_hashes_up_to_the_break() {
    on_every_store(|db| {
        let r = rig(db);
        seal_n(&r, "kin-01", 3, "s");
        let mut lines = export(&r, "kin-01", None);
        edit_entry(&mut lines, 2, |e| e["prev_hash"] = json!("00".repeat(32)));
        let mut v = Verifier::new(&lines[0]).unwrap();
        let steps: Vec<_> = lines[1..].iter().filter_map(|l| v.feed(l, true)).collect();
        assert_eq!(steps.len(), 2, "the walk stops at the break");
        assert_eq!(steps[0].verdict, "ok");
        assert_eq!(steps[0].computed_hash, steps[0].stated_hash);
        assert_eq!(steps[1].expected_prev, steps[0].computed_hash);
        assert_eq!(steps[1].prev_hash, "00".repeat(32));
        assert!(
            steps[1].verdict.contains("broken link"),
            "{}",
            steps[1].verdict
        );
        assert_eq!(v.finish().error.unwrap().seq, Some(2));
    });
}

#[test]
fn statistics_of_adjacent_ranges_merge_into_the_statistics_of_their_union() {
    on_every_store(|db| {
        // The Z report computes its bulk outside the outlet lock and the rest
        // under it, and monthly closings merge daily ones: both rely on this.
        use bonopay_signer::reports::Stats;
        let mut config = FiscalizerConfig::new("NID-BONO-0001");
        let usd = bonopay_core::ExchangeRate::parse("2850").unwrap().value();
        config.reference_rates = Arc::new(bonopay_tax::FixedReferenceRates(
            [(bonopay_core::Currency::Usd, usd)].into_iter().collect(),
        ));
        let r = rig_on(db.open(), config);
        seal_n(&r, "kin-01", 2, "a");
        r.f.seal(&reduction("kin-01"), &"rrr".parse().unwrap())
            .unwrap();
        let mut usd_sale: Value = serde_json::from_str(&sale("kin-01").canonical_string()).unwrap();
        usd_sale.as_object_mut().unwrap().remove("schema");
        usd_sale["currency"] = json!("USD");
        usd_sale["exchange_rate"] = json!({"rate": "2850", "date": "2026-11-28"});
        usd_sale["items"] = json!([{"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1.50", "quantity": "2", "tax_group": "B"}]);
        usd_sale["payments"] = json!([{"method": "CARTEBANCAIRE", "amount": "3.00"}]);
        let usd_sale = parse_invoice(&usd_sale.to_string()).unwrap();
        r.f.seal(&usd_sale, &"usd".parse().unwrap()).unwrap();
        r.f.record_incomplete_sale(
            "kin-01",
            &IncompleteSale {
                merchant_nif: "A1309334L".into(),
                pos_terminal_id: "till-2".into(),
                cashier_id: "c".into(),
                amount: Decimal::new(990, 2),
                reason: String::new(),
            },
        )
        .unwrap();
        seal_n(&r, "kin-01", 1, "b");
        let entries: Vec<_> =
            r.f.store()
                .iter_from("kin-01", 1)
                .map(Result::unwrap)
                .collect();
        let stats = |es: &[bonopay_ledger::Entry]| {
            let mut s = Stats::default();
            for e in es {
                s.add(e).unwrap();
            }
            s
        };
        let whole = stats(&entries);
        assert_eq!(whole.invoices, 5);
        assert_eq!(whole.by_currency["USD"].count, 1);
        assert_eq!(whole.by_currency["USD"].net.to_string(), "3.00");
        assert_eq!(
            whole.payments["CARTEBANCAIRE"]["USD"].paid.to_string(),
            "3.00"
        );
        for cut in 0..=entries.len() {
            let mut merged = stats(&entries[..cut]);
            merged.merge(&stats(&entries[cut..]));
            assert_eq!(merged.to_json(), whole.to_json(), "split at {cut}");
        }
    });
}

#[test]
fn pipelined_seals_on_one_hot_outlet_with_z_reports_and_failures_stay_exact() {
    on_every_store(|db| {
        // Eight tills on one outlet over group commit: invoices are placed on
        // top of ones not yet durable. Injected write failures make whole
        // batches fail (and everything placed on them conflict and retry), Z
        // reports interleave, and duplicate keys race. At the end the chain,
        // the counters and every Z report recompute exactly.
        use bonopay_ledger::{Fault, FaultyStore, GroupCommit};
        let faulty = Arc::new(FaultyStore::new(db.open()));
        let store: Arc<dyn LedgerStore> = Arc::new(GroupCommit::new(Arc::clone(&faulty), 16));
        let signer = Arc::new(SoftwareSigner::generate().unwrap());
        let keys = vec![signer.public_key().clone()];
        let f = Arc::new(Fiscalizer::new(
            store,
            signer,
            FiscalizerConfig::new("NID-BONO-0001"),
        ));
        let tills: Vec<_> = (0..8)
            .map(|t| {
                let f = Arc::clone(&f);
                let faulty = Arc::clone(&faulty);
                thread::spawn(move || {
                    let mut sealed = 0;
                    for i in 0..30 {
                        if t == 0 && i % 10 == 5 {
                            faulty.arm(Fault::FailWrite(1));
                        }
                        // Tills 0 and 1 share keys: each key seals once.
                        let key = format!("k{}-{i}", if t < 2 { 0 } else { t });
                        match f.seal(&sale("kin-01"), &key.parse().unwrap()) {
                            Ok(s) if !s.replayed => sealed += 1,
                            Ok(_) => {}
                            Err(e) if e.is_retryable() => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    sealed
                })
            })
            .collect();
        let mut zs = 0;
        for _ in 0..4 {
            thread::sleep(std::time::Duration::from_millis(20));
            if f.z_report("kin-01", &id()).is_ok() {
                zs += 1;
            }
        }
        let sealed: u64 = tills.into_iter().map(|t| t.join().unwrap()).sum();
        f.z_report("kin-01", &id()).unwrap();
        zs += 1;
        let report = verify_store(&**f.store(), "kin-01", &SignatureCheck::new(keys.clone()));
        assert!(report.is_valid(), "{:?}", report.error);
        assert_eq!(
            report.head.counters.total, sealed,
            "one number per seal, no gap"
        );
        // Every Z recomputes from the entries in an audit bundle.
        let req = ExportRequest {
            outlet: "kin-01".into(),
            time_zone: chrono_tz::Africa::Kinshasa,
            from_ms: None,
            to_ms: None,
            keys,
            created: "t".into(),
        };
        let lines: Vec<Vec<u8>> = Exporter::new(&**f.store(), &req)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let b = verify(&lines);
        assert!(b.is_valid(), "{:?}", b.error);
        assert_eq!(b.checked.z_reports, zs);
    });
}
