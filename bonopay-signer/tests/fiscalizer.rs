//! The sealing pipeline end to end, over every ledger store (memory,
//! SQLite, PostgreSQL: `common::on_every_store`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;

use bonopay_core::{ErrorCode, ValidInvoice, parse_invoice};
use bonopay_ledger::{ChainOnly, LedgerStore, verify_store};
use bonopay_signer::{
    FaultySigner, Fiscalizer, FiscalizerConfig, ManualClock, PublicKey, ReplayCheck, SealError,
    SealedInvoice, SignatureCheck, Signer, SimulatedDef, SoftwareSigner, verify_qr,
};
use serde_json::{Value, json};

mod common;
use common::{BACKENDS, Db, on_every_store};

/// 2026-11-28T08:00:00Z, i.e. 09:00 in Kinshasa.
const T0: i64 = 1_795_852_800_000;

fn invoice(outlet: &str, items: Value, payment: &str) -> Value {
    json!({
        "merchant_nif": "A1309334L", "outlet_id": outlet, "pos_terminal_id": "till-1",
        "cashier": {"id": "c-07", "name": "Mbuyi Kalala"}, "invoice_type": "FV", "price_mode": "TTC",
        "client": {"type": "PP"}, "items": items,
        "payments": [{"method": "ESPECES", "amount": payment}]
    })
}

fn sale(outlet: &str) -> ValidInvoice {
    parse_invoice(
        &invoice(
            outlet,
            json!([
                {"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": "3", "tax_group": "B"},
                {"code": "RIZ", "kind": "BIE", "name": "Riz 25kg", "unit_price": "64800", "quantity": "2", "tax_group": "C"}
            ]),
            "133080",
        )
        .to_string(),
    )
    .unwrap()
}

struct Rig {
    fiscalizer: Fiscalizer,
    clock: Arc<ManualClock>,
    keys: Vec<PublicKey>,
}

fn rig_with(store: Arc<dyn LedgerStore>, signer: Arc<dyn Signer>) -> Rig {
    let clock = Arc::new(ManualClock::new(T0));
    let keys = vec![signer.public_key().clone()];
    let fiscalizer = Fiscalizer::with_clock(
        store,
        signer,
        clock.clone(),
        FiscalizerConfig::new("NID-BONO-0001"),
    );
    Rig {
        fiscalizer,
        clock,
        keys,
    }
}

fn rig_on(db: &Db) -> Rig {
    rig_with(db.open(), Arc::new(SoftwareSigner::generate().unwrap()))
}

fn chain_ok(r: &Rig, outlet: &str) -> u64 {
    let report = verify_store(
        &**r.fiscalizer.store(),
        outlet,
        &SignatureCheck::new(r.keys.clone()),
    );
    assert!(report.is_valid(), "{:?}", report.error);
    report.verified
}

#[test]
fn sealing_returns_the_five_security_elements() {
    on_every_store(|db| {
        let r = rig_on(db);
        let s = r
            .fiscalizer
            .seal(&sale("kin-01"), &"key-1".parse().unwrap())
            .unwrap();
        let e = &s.invoice.elements;
        assert_eq!(e.fiscal_number, "1/1 FV");
        assert_eq!(e.fiscal_authority_id, "NID-BONO-0001");
        assert_eq!(e.authentication_code.len(), 24);
        assert!(
            e.authentication_code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(e.authentication_code_display.len(), 29);
        assert_eq!(
            e.authentication_code_display.replace('-', ""),
            e.authentication_code
        );
        assert_eq!(
            e.timestamp, "2026-11-28T09:00:00+01:00",
            "trusted clock, Kinshasa time"
        );
        // Bono Pay's own QR is its verification payload: only a DGI device
        // issues an `RDCDEF01` QR (docs/format.md §6, §10).
        assert_eq!(e.qr, e.verification_qr);
        assert!(e.qr.starts_with("BPV1:"), "{}", e.qr);
        assert!(!e.qr.contains("RDCDEF01"));
        // The body carries the totals the DGI will compare.
        assert_eq!(s.invoice.tuple.total, "133080.00");
        assert_eq!(
            s.invoice.body_value().unwrap()["tax"]["dgi"]["vtotal"],
            "10080.00"
        );
        // What the pipeline returned is exactly what verification reads back.
        let read = SealedInvoice::verify(&s.invoice.payload, &r.keys).unwrap();
        assert_eq!(read, s.invoice);
        // Anyone with the public key can check it, from storage or from the QR.
        let stored = r.fiscalizer.store().entry("kin-01", 1).unwrap().unwrap();
        let v = SealedInvoice::verify(&stored.payload, &r.keys).unwrap();
        assert_eq!(v.elements, *e);
        let q = verify_qr(&e.verification_qr, &r.keys).unwrap();
        assert_eq!(q.authentication_code, e.authentication_code);
        assert_eq!(q.tuple.counters, "1/1 FV");
        // QR renderings.
        assert!(bonopay_signer::qr_svg(&e.qr).unwrap().starts_with("<?xml"));
        assert!(
            bonopay_signer::qr_png(&e.verification_qr, 4)
                .unwrap()
                .starts_with(b"\x89PNG")
        );
        assert_eq!(chain_ok(&r, "kin-01"), 1);
    });
}

#[test]
fn numbers_are_per_outlet_and_per_type() {
    on_every_store(|db| {
        let r = rig_on(db);
        let mut labels = Vec::new();
        for i in 0..3 {
            labels.push(
                r.fiscalizer
                    .seal(&sale("kin-01"), &format!("a{i}").parse().unwrap())
                    .unwrap()
                    .invoice
                    .elements
                    .fiscal_number,
            );
        }
        let mut ft = sale("kin-01").into_request();
        ft.invoice_type = bonopay_core::InvoiceType::Ft;
        let ft = ValidInvoice::new(ft).unwrap();
        labels.push(
            r.fiscalizer
                .seal(&ft, &"ft".parse().unwrap())
                .unwrap()
                .invoice
                .elements
                .fiscal_number,
        );
        labels.push(
            r.fiscalizer
                .seal(&sale("lubum-01"), &"b0".parse().unwrap())
                .unwrap()
                .invoice
                .elements
                .fiscal_number,
        );
        assert_eq!(labels, ["1/1 FV", "2/2 FV", "3/3 FV", "1/4 FT", "1/1 FV"]);
        chain_ok(&r, "kin-01");
        chain_ok(&r, "lubum-01");
    });
}

#[test]
fn idempotent_replay_consumes_nothing_and_different_content_conflicts() {
    on_every_store(|db| {
        let r = rig_on(db);
        let first = r
            .fiscalizer
            .seal(&sale("kin-01"), &"pos-42".parse().unwrap())
            .unwrap();
        r.clock.advance(1000);
        let again = r
            .fiscalizer
            .seal(&sale("kin-01"), &"pos-42".parse().unwrap())
            .unwrap();
        assert!(again.replayed && !first.replayed);
        assert_eq!(again.invoice.elements, first.invoice.elements);
        assert_eq!(
            r.fiscalizer.store().head("kin-01").unwrap().seq,
            1,
            "nothing consumed"
        );
        let mut other = sale("kin-01").into_request();
        other.items[0].quantity = bonopay_core::Quantity::parse("4").unwrap();
        other.payments[0].amount = bonopay_core::Money::parse("134240").unwrap();
        let other = ValidInvoice::new(other).unwrap();
        assert!(matches!(
            r.fiscalizer.seal(&other, &"pos-42".parse().unwrap()),
            Err(SealError::IdempotencyConflict { .. })
        ));
        // Keys are scoped per merchant.
        let mut other_merchant = sale("kin-01").into_request();
        other_merchant.merchant_nif = "B0000001Z".into();
        let other_merchant = ValidInvoice::new(other_merchant).unwrap();
        assert!(
            !r.fiscalizer
                .seal(&other_merchant, &"pos-42".parse().unwrap())
                .unwrap()
                .replayed
        );
        assert_eq!(chain_ok(&r, "kin-01"), 2);
    });
}

#[test]
fn idempotency_survives_a_restart() {
    on_every_store(|db| {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("seal.pem");
        SoftwareSigner::generate().unwrap().save(&key_path).unwrap();
        let first = {
            let r = rig_with(
                db.open(),
                Arc::new(SoftwareSigner::load(&key_path).unwrap()),
            );
            r.fiscalizer
                .seal(&sale("kin-01"), &"k".parse().unwrap())
                .unwrap()
        };
        let r = rig_with(
            db.open(),
            Arc::new(SoftwareSigner::load(&key_path).unwrap()),
        );
        let again = r
            .fiscalizer
            .seal(&sale("kin-01"), &"k".parse().unwrap())
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.invoice.elements, first.invoice.elements);
        assert_eq!(chain_ok(&r, "kin-01"), 1);
    });
}

#[test]
fn concurrent_duplicate_submissions_seal_once() {
    on_every_store(|db| {
        let r = Arc::new(rig_on(db));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let r = Arc::clone(&r);
                thread::spawn(move || {
                    r.fiscalizer
                        .seal(&sale("kin-01"), &"dup".parse().unwrap())
                        .unwrap()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let codes: BTreeSet<_> = results
            .iter()
            .map(|s| s.invoice.elements.authentication_code.clone())
            .collect();
        assert_eq!(codes.len(), 1, "every caller got the same sealed invoice");
        assert_eq!(
            results.iter().filter(|s| !s.replayed).count(),
            1,
            "exactly one sealed it"
        );
        assert_eq!(r.fiscalizer.store().head("kin-01").unwrap().seq, 1);
    });
}

#[test]
fn concurrent_duplicates_across_outlets_of_one_merchant_conflict_not_duplicate() {
    on_every_store(|db| {
        // The same key for two different invoices (different outlets) at once:
        // one seals, the other is told the key is taken.
        let r = Arc::new(rig_on(db));
        let handles: Vec<_> = ["kin-01", "kin-02"]
            .into_iter()
            .map(|o| {
                let r = Arc::clone(&r);
                thread::spawn(move || r.fiscalizer.seal(&sale(o), &"shared-key".parse().unwrap()))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|x| x.is_ok()).count(), 1);
        assert!(
            results
                .iter()
                .any(|x| matches!(x, Err(SealError::IdempotencyConflict { .. })))
        );
        let total = r.fiscalizer.store().head("kin-01").unwrap().seq
            + r.fiscalizer.store().head("kin-02").unwrap().seq;
        assert_eq!(total, 1);
    });
}

fn credit(reference: &str, nature: &str, items: Value, payment: &str) -> ValidInvoice {
    let mut v = invoice("kin-01", items, payment);
    v["invoice_type"] = json!("FA");
    v["credit_note"] = json!({"reference": reference, "nature": nature});
    parse_invoice(&v.to_string()).unwrap()
}

fn errs(e: SealError) -> bonopay_core::ValidationErrors {
    match e {
        SealError::Invalid(v) => v,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn credit_note_rules() {
    on_every_store(|db| {
        let r = rig_on(db);
        let orig = r
            .fiscalizer
            .seal(&sale("kin-01"), &"sale".parse().unwrap())
            .unwrap();
        let code = orig.invoice.elements.authentication_code.clone();
        let soap = |q: &str, price: &str| json!([{"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": price, "quantity": q, "tax_group": "B"}]);

        // Two partial credit notes are allowed; the printed (dashed) code works too.
        let dashed = orig.invoice.elements.authentication_code_display.clone();
        let c1 = r
            .fiscalizer
            .seal(
                &credit(&dashed, "RAM", soap("1", "1160"), "1160"),
                &"c1".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(c1.invoice.elements.fiscal_number, "1/2 FA");
        r.fiscalizer
            .seal(
                &credit(&code, "RAM", soap("1.5", "1160"), "1740"),
                &"c2".parse().unwrap(),
            )
            .unwrap();
        // A third would exceed the 3 sold.
        let e = errs(
            r.fiscalizer
                .seal(
                    &credit(&code, "RAM", soap("0.6", "1160"), "696"),
                    &"c3".parse().unwrap(),
                )
                .unwrap_err(),
        );
        assert!(
            e.has_at("items[0].quantity", ErrorCode::CreditExceedsSold),
            "{e}"
        );
        // Same unit price required.
        let e = errs(
            r.fiscalizer
                .seal(
                    &credit(&code, "COR", soap("0.5", "1000"), "500"),
                    &"c4".parse().unwrap(),
                )
                .unwrap_err(),
        );
        assert!(
            e.has_at("items[0].unit_price", ErrorCode::UnitPriceDiffers),
            "{e}"
        );
        // Items must exist on the original.
        let other = json!([{"code": "HUILE", "kind": "BIE", "name": "Huile", "unit_price": "8700", "quantity": "1", "tax_group": "B"}]);
        let e = errs(
            r.fiscalizer
                .seal(&credit(&code, "RAM", other, "8700"), &"c5".parse().unwrap())
                .unwrap_err(),
        );
        assert!(
            e.has_at("items[0].code", ErrorCode::ItemNotOnOriginal),
            "{e}"
        );
        // Unknown reference.
        let e = errs(
            r.fiscalizer
                .seal(
                    &credit("AAAABBBBCCCCDDDDEEEEFFFF", "RAM", soap("1", "1160"), "1160"),
                    &"c6".parse().unwrap(),
                )
                .unwrap_err(),
        );
        assert!(
            e.has_at("credit_note.reference", ErrorCode::OriginalNotFound),
            "{e}"
        );
        // Another merchant's invoice is "not found", revealing nothing.
        let mut foreign = credit(&code, "RAM", soap("1", "1160"), "1160").into_request();
        foreign.merchant_nif = "B0000001Z".into();
        let foreign = ValidInvoice::new(foreign).unwrap();
        let e = errs(
            r.fiscalizer
                .seal(&foreign, &"c7".parse().unwrap())
                .unwrap_err(),
        );
        assert!(
            e.has_at("credit_note.reference", ErrorCode::OriginalNotFound),
            "{e}"
        );
        // A credit note cannot be the original.
        let e = errs(
            r.fiscalizer
                .seal(
                    &credit(
                        &c1.invoice.elements.authentication_code,
                        "RAM",
                        soap("0.1", "1160"),
                        "116",
                    ),
                    &"c8".parse().unwrap(),
                )
                .unwrap_err(),
        );
        assert!(
            e.has_at("credit_note.reference", ErrorCode::OriginalIsCreditNote),
            "{e}"
        );
        // RRR needs no original.
        let rrr = json!([{"code": "REM", "kind": "SER", "name": "Remise fidélité", "unit_price": "500", "quantity": "1", "tax_group": "B"}]);
        r.fiscalizer
            .seal(&credit("RRR", "RRR", rrr, "500"), &"c9".parse().unwrap())
            .unwrap();
        // Failed credit notes consumed nothing.
        assert_eq!(chain_ok(&r, "kin-01"), 4);
    });
}

#[test]
fn a_failing_signer_appends_nothing_and_the_chain_continues_after_recovery() {
    on_every_store(|db| {
        let signer = Arc::new(FaultySigner::new(SoftwareSigner::generate().unwrap()));
        let r = rig_with(db.open(), signer.clone());
        r.fiscalizer
            .seal(&sale("kin-01"), &"s1".parse().unwrap())
            .unwrap();
        signer.set_down(true);
        for i in 0..3 {
            let err = r
                .fiscalizer
                .seal(&sale("kin-01"), &format!("down{i}").parse().unwrap())
                .unwrap_err();
            assert!(
                matches!(err, SealError::SignerUnavailable(_)) && err.is_retryable(),
                "{err:?}"
            );
        }
        assert_eq!(
            r.fiscalizer.store().head("kin-01").unwrap().seq,
            1,
            "nothing appended, no number consumed"
        );
        signer.set_down(false);
        let s = r
            .fiscalizer
            .seal(&sale("kin-01"), &"down0".parse().unwrap())
            .unwrap();
        assert_eq!(s.invoice.elements.fiscal_number, "2/2 FV");
        assert_eq!(chain_ok(&r, "kin-01"), 2);
    });
}

#[test]
fn a_clock_stepping_backwards_never_produces_an_earlier_timestamp() {
    on_every_store(|db| {
        let r = rig_on(db);
        let a = r
            .fiscalizer
            .seal(&sale("kin-01"), &"t1".parse().unwrap())
            .unwrap();
        r.clock.advance(-60_000); // one minute back: within the 5-minute tolerance
        let b = r
            .fiscalizer
            .seal(&sale("kin-01"), &"t2".parse().unwrap())
            .unwrap();
        assert_eq!(
            b.invoice.elements.timestamp, a.invoice.elements.timestamp,
            "time held"
        );
        r.clock.advance(-10 * 60_000); // far behind: refused
        let err = r
            .fiscalizer
            .seal(&sale("kin-01"), &"t3".parse().unwrap())
            .unwrap_err();
        assert!(
            matches!(err, SealError::ClockBehind { .. }) && err.is_retryable(),
            "{err:?}"
        );
        assert_eq!(r.fiscalizer.store().head("kin-01").unwrap().seq, 2);
        r.clock.set(T0 + 120_000);
        let c = r
            .fiscalizer
            .seal(&sale("kin-01"), &"t3".parse().unwrap())
            .unwrap();
        assert_eq!(c.invoice.elements.timestamp, "2026-11-28T09:02:00+01:00");
        // Other outlets are unaffected by this outlet's history.
        r.clock.set(T0 - 3_600_000);
        r.fiscalizer
            .seal(&sale("kin-02"), &"t4".parse().unwrap())
            .unwrap();
        chain_ok(&r, "kin-01");
    });
}

#[test]
fn numbers_restart_with_the_fiscal_year_in_local_time() {
    on_every_store(|db| {
        let r = rig_on(db);
        // 2026-12-31 23:59:30 in Kinshasa is 22:59:30 UTC.
        r.clock.set(1_798_757_970_000);
        let a = r
            .fiscalizer
            .seal(&sale("kin-01"), &"y1".parse().unwrap())
            .unwrap();
        assert_eq!(a.invoice.elements.timestamp, "2026-12-31T23:59:30+01:00");
        r.clock.advance(60_000);
        let b = r
            .fiscalizer
            .seal(&sale("kin-01"), &"y2".parse().unwrap())
            .unwrap();
        assert_eq!(b.invoice.elements.timestamp, "2027-01-01T00:00:30+01:00");
        assert_eq!(b.invoice.elements.fiscal_number, "1/1 FV");
        assert_eq!(b.seq, 2);
        chain_ok(&r, "kin-01");
    });
}

#[test]
fn forged_or_altered_seals_are_rejected() {
    on_every_store(|db| {
        let r = rig_on(db);
        let s = r
            .fiscalizer
            .seal(&sale("kin-01"), &"f1".parse().unwrap())
            .unwrap();
        let t = r
            .fiscalizer
            .seal(&sale("kin-01"), &"f2".parse().unwrap())
            .unwrap();
        let payload = String::from_utf8(s.invoice.payload.clone()).unwrap();
        let keys = &r.keys;

        // A changed amount in the body.
        let bad = payload.replacen("\"quantity\":\"3.000\"", "\"quantity\":\"2.000\"", 1);
        assert_ne!(bad, payload);
        assert!(SealedInvoice::verify(bad.as_bytes(), keys).is_err());
        // A changed total in the signed tuple.
        let bad = payload.replace("\"total\":\"133080.00\",\"v\"", "\"total\":\"1.00\",\"v\"");
        assert_ne!(bad, payload);
        assert!(SealedInvoice::verify(bad.as_bytes(), keys).is_err());
        // Another invoice's signature.
        let other_sig = t.invoice.signature.to_hex();
        let bad = payload.replace(&s.invoice.signature.to_hex(), &other_sig);
        assert!(SealedInvoice::verify(bad.as_bytes(), keys).is_err());
        // The same signature in upper case: a second spelling of one seal.
        let upper = s.invoice.signature.to_hex().to_ascii_uppercase();
        assert_ne!(upper, s.invoice.signature.to_hex());
        let bad = payload.replace(&s.invoice.signature.to_hex(), &upper);
        assert!(SealedInvoice::verify(bad.as_bytes(), keys).is_err());
        // A made-up authentication code.
        let bad = payload.replace(
            &s.invoice.elements.authentication_code,
            "AAAAAAAAAAAAAAAAAAAAAAAA",
        );
        assert!(SealedInvoice::verify(bad.as_bytes(), keys).is_err());
        // Signed by another key (a forger's own key, same key id claimed).
        let forger = SoftwareSigner::generate().unwrap();
        let forged_sig = bonopay_signer::Signer::sign(&forger, &s.invoice.tuple.digest())
            .unwrap()
            .signature;
        let bad = payload.replace(&s.invoice.signature.to_hex(), &forged_sig.to_hex());
        assert!(SealedInvoice::verify(bad.as_bytes(), keys).is_err());
        // The verification QR with an altered tuple.
        let qr = &s.invoice.elements.verification_qr;
        assert!(verify_qr(qr, keys).is_ok());
        let mut tampered = s.invoice.tuple.clone();
        tampered.total = "1.00".into();
        let fake = bonopay_signer::SignOutput {
            signature: s.invoice.signature,
            device_counter: None,
        };
        let fake_qr = {
            // Rebuild a BPV1 payload around the altered tuple with the real signature.
            let forged = bonopay_signer::SealedInvoice::read_own(&s.invoice.payload).unwrap();
            assert_eq!(forged.tuple, s.invoice.tuple);
            let json = serde_json::json!({"signature": fake.signature.to_hex(), "tuple": tampered});
            use base64::Engine as _;
            format!(
                "BPV1:{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
            )
        };
        assert!(verify_qr(&fake_qr, keys).is_err());
        // Unknown key.
        assert!(
            SealedInvoice::verify(&s.invoice.payload, &vec![forger.public_key().clone()]).is_err()
        );
        // And a client cannot even submit security elements.
        let mut v = invoice("kin-01", json!([]), "1");
        v["authentication_code"] = json!(s.invoice.elements.authentication_code);
        let e = parse_invoice(&v.to_string()).unwrap_err();
        assert!(e.has_at("authentication_code", ErrorCode::SecurityElementForbidden));
    });
}

#[test]
fn a_tampered_ledger_payload_fails_the_signature_aware_verifier() {
    on_every_store(|db| {
        let r = rig_on(db);
        for i in 0..3 {
            r.fiscalizer
                .seal(&sale("kin-01"), &format!("v{i}").parse().unwrap())
                .unwrap();
        }
        // An attacker rebuilds a consistent chain with an altered invoice in it:
        // hashes link, but the signature does not verify.
        let store = r.fiscalizer.store();
        let mut entries: Vec<_> = store.iter_from("kin-01", 1).map(Result::unwrap).collect();
        let mut head = bonopay_ledger::Head::genesis("kin-01");
        let mut rebuilt = Vec::new();
        for (i, e) in entries.drain(..).enumerate() {
            let mut payload = e.payload.clone();
            if i == 1 {
                payload = String::from_utf8(payload)
                    .unwrap()
                    .replacen("\"3.000\"", "\"9.000\"", 1)
                    .into_bytes();
            }
            let ne = head.prepare(&e.meta()).unwrap().seal(payload);
            head = head.advance(&ne);
            rebuilt.push(Ok(ne));
        }
        let chain_only = bonopay_ledger::verify_chain("kin-01", rebuilt.clone(), &ChainOnly);
        assert!(chain_only.is_valid(), "the hash chain alone cannot tell");
        let signed =
            bonopay_ledger::verify_chain("kin-01", rebuilt, &SignatureCheck::new(r.keys.clone()));
        assert!(
            matches!(
                signed.error,
                Some(bonopay_ledger::ChainError::CheckFailed { position: 2, .. })
            ),
            "{:?}",
            signed.error
        );
    });
}

#[test]
fn many_threads_on_many_outlets() {
    on_every_store(|db| {
        let store = db.open();
        let r = Arc::new(rig_with(
            store,
            Arc::new(SoftwareSigner::generate().unwrap()),
        ));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let r = Arc::clone(&r);
                thread::spawn(move || {
                    let outlet = format!("o{}", t % 3);
                    (0..15)
                        .map(|i| {
                            r.fiscalizer
                                .seal(&sale(&outlet), &format!("t{t}-{i}").parse().unwrap())
                                .unwrap()
                                .invoice
                                .elements
                                .authentication_code
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let codes: Vec<String> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(
            codes.iter().collect::<BTreeSet<_>>().len(),
            120,
            "every seal has its own code"
        );
        let total: u64 = (0..3).map(|o| chain_ok(&r, &format!("o{o}"))).sum();
        assert_eq!(total, 120);
    });
}

#[test]
fn a_simulated_def_signs_and_its_counter_is_mirrored_in_the_ledger() {
    on_every_store(|db| {
        let def = Arc::new(SimulatedDef::ephemeral("DEF-SIM-7").unwrap());
        let r = rig_with(db.open(), def.clone());
        let a = r
            .fiscalizer
            .seal(&sale("kin-01"), &"d1".parse().unwrap())
            .unwrap();
        let b = r
            .fiscalizer
            .seal(&sale("kin-01"), &"d2".parse().unwrap())
            .unwrap();
        assert_eq!(
            (a.invoice.device_counter, b.invoice.device_counter),
            (Some(1), Some(2))
        );
        assert_eq!(def.counter(), 2);
        chain_ok(&r, "kin-01");
    });
}

#[test]
fn auth_code_matches_an_independent_computation() {
    // Python: base64.b32encode(sha256(b"bonopay/v1/auth-code\0" + bytes(range(1, 65))))[:24]
    let mut raw = [0u8; 64];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    assert_eq!(
        bonopay_signer::auth_code_of(&bonopay_signer::Signature(raw)),
        "XM6RL6FR3KF7OGR5Z3LERWMB"
    );
    assert_eq!(
        bonopay_signer::format_auth_code("XM6RL6FR3KF7OGR5Z3LERWMB"),
        "XM6R-L6FR-3KF7-OGR5-Z3LE-RWMB"
    );
}

#[test]
fn after_a_key_rotation_old_invoices_replay_and_can_be_credited() {
    on_every_store(|db| {
        let store: Arc<dyn LedgerStore> = db.open();
        let old = SoftwareSigner::generate().unwrap();
        let old_pub = old.public_key().clone();
        let r1 = rig_with(store.clone(), Arc::new(old));
        let orig = r1
            .fiscalizer
            .seal(&sale("kin-01"), &"before".parse().unwrap())
            .unwrap();
        // Rotate: a new key signs from now on.
        let new: Arc<dyn Signer> = Arc::new(SoftwareSigner::generate().unwrap());
        let mut config = FiscalizerConfig::new("NID-BONO-0001");
        let strict = Fiscalizer::with_clock(
            store.clone(),
            new.clone(),
            Arc::new(ManualClock::new(T0 + 1000)),
            config.clone(),
        );
        assert!(
            matches!(
                strict.seal(&sale("kin-01"), &"before".parse().unwrap()),
                Err(SealError::Corrupt(_))
            ),
            "without the old key it cannot read the old seal"
        );
        config.trusted_keys = vec![old_pub.clone()];
        let f = Fiscalizer::with_clock(
            store.clone(),
            new.clone(),
            Arc::new(ManualClock::new(T0 + 1000)),
            config,
        );
        let replay = f.seal(&sale("kin-01"), &"before".parse().unwrap()).unwrap();
        assert!(replay.replayed);
        assert_eq!(replay.invoice.elements, orig.invoice.elements);
        let soap = json!([{"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": "1", "tax_group": "B"}]);
        let c = f
            .seal(
                &credit(
                    &orig.invoice.elements.authentication_code,
                    "RAM",
                    soap,
                    "1160",
                ),
                &"credit".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(c.invoice.elements.fiscal_number, "1/2 FA");
        let report = verify_store(
            &*store,
            "kin-01",
            &SignatureCheck::new(vec![old_pub, new.public_key().clone()]),
        );
        assert!(report.is_valid(), "{:?}", report.error);
    });
}

#[test]
fn a_replay_is_answered_even_while_the_signer_is_down() {
    on_every_store(|db| {
        let signer = Arc::new(FaultySigner::new(SoftwareSigner::generate().unwrap()));
        let r = rig_with(db.open(), signer.clone());
        let first = r
            .fiscalizer
            .seal(&sale("kin-01"), &"retry-me".parse().unwrap())
            .unwrap();
        signer.set_down(true);
        let again = r
            .fiscalizer
            .seal(&sale("kin-01"), &"retry-me".parse().unwrap())
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.invoice.elements, first.invoice.elements);
        assert!(matches!(
            r.fiscalizer.seal(&sale("kin-01"), &"new".parse().unwrap()),
            Err(SealError::SignerUnavailable(_))
        ));
    });
}

#[test]
fn two_fiscalizers_on_one_store_never_fork_or_skip() {
    on_every_store(|db| {
        // Like two server processes on one database: each caches heads after
        // its own appends; the other's appends make the cache stale, which the
        // ledger's compare-and-swap turns into a retry, never a fork.
        let store: Arc<dyn LedgerStore> = db.open();
        let a = rig_with(store.clone(), Arc::new(SoftwareSigner::generate().unwrap()));
        let b = rig_with(store.clone(), Arc::new(SoftwareSigner::generate().unwrap()));
        let mut numbers = Vec::new();
        for i in 0..10 {
            let f = if i % 3 == 0 {
                &b.fiscalizer
            } else {
                &a.fiscalizer
            };
            numbers.push(
                f.seal(&sale("kin-01"), &format!("k{i}").parse().unwrap())
                    .unwrap()
                    .invoice
                    .elements
                    .fiscal_number,
            );
        }
        let want: Vec<String> = (1..=10).map(|n| format!("{n}/{n} FV")).collect();
        assert_eq!(numbers, want);
        let keys = vec![a.keys[0].clone(), b.keys[0].clone()];
        let report = verify_store(&*store, "kin-01", &SignatureCheck::new(keys));
        assert!(report.is_valid(), "{:?}", report.error);
    });
}

#[test]
fn two_instances_racing_credit_notes_never_credit_more_than_was_sold() {
    // Two fiscalizers (two server instances: separate in-process locks) on
    // one store. Soap was sold 3 times; each instance tries to credit 2 at
    // the same moment. However they interleave, at most one is sealed.
    for backend in BACKENDS {
        eprintln!("--- over the {backend:?} store");
        for round in 0..20 {
            let db = Db::new(backend);
            let store = db.open();
            let signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::generate().unwrap());
            let a = Arc::new(Fiscalizer::new(
                Arc::clone(&store),
                Arc::clone(&signer),
                FiscalizerConfig::new("NID-BONO-0001"),
            ));
            let b = Arc::new(Fiscalizer::new(
                Arc::clone(&store),
                signer,
                FiscalizerConfig::new("NID-BONO-0001"),
            ));
            let orig = a.seal(&sale("kin-01"), &"sale".parse().unwrap()).unwrap();
            let code = orig.invoice.elements.authentication_code.clone();
            let note = credit(
                &code,
                "RAM",
                json!([{"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": "2", "tax_group": "B"}]),
                "2320",
            );
            let gate = Arc::new(std::sync::Barrier::new(2));
            let handles: Vec<_> = [(a, "n-a"), (b, "n-b")]
                .into_iter()
                .map(|(f, key)| {
                    let (note, gate) = (note.clone(), Arc::clone(&gate));
                    thread::spawn(move || {
                        gate.wait();
                        f.seal(&note, &key.parse().unwrap())
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let sealed = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(sealed, 1, "round {round}: {results:?}");
            let refused = results.iter().find_map(|r| r.as_ref().err()).unwrap();
            let SealError::Invalid(v) = refused else {
                panic!("round {round}: {refused:?}")
            };
            assert_eq!(v.0[0].code, ErrorCode::CreditExceedsSold);
        }
    }
}

/// Counts signatures; optionally slow (a busy HSM).
#[derive(Debug)]
struct CountingSigner {
    inner: SoftwareSigner,
    delay: std::time::Duration,
    calls: std::sync::atomic::AtomicU64,
}

impl CountingSigner {
    fn new(delay_ms: u64) -> Self {
        Self {
            inner: SoftwareSigner::generate().unwrap(),
            delay: std::time::Duration::from_millis(delay_ms),
            calls: std::sync::atomic::AtomicU64::new(0),
        }
    }
    fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Signer for CountingSigner {
    fn key_id(&self) -> &str {
        self.inner.key_id()
    }
    fn public_key(&self) -> &PublicKey {
        self.inner.public_key()
    }
    fn sign(
        &self,
        digest: &[u8; 32],
    ) -> Result<bonopay_signer::SignOutput, bonopay_signer::SignerError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        thread::sleep(self.delay);
        self.inner.sign(digest)
    }
}

fn rig_checking(db: &Db, signer: Arc<CountingSigner>, check: ReplayCheck) -> Fiscalizer {
    let mut config = FiscalizerConfig::new("NID-BONO-0001");
    config.replay_check = check;
    Fiscalizer::with_clock(db.open(), signer, Arc::new(ManualClock::new(T0)), config)
}

#[test]
fn while_signing_is_slow_a_retry_is_answered_without_signing() {
    on_every_store(|db| {
        let signer = Arc::new(CountingSigner::new(20));
        let f = rig_checking(
            db,
            Arc::clone(&signer),
            ReplayCheck::Adaptive {
                slow_signing: std::time::Duration::from_millis(1),
                after_retry: std::time::Duration::ZERO,
            },
        );
        let first = f.seal(&sale("kin-01"), &"k".parse().unwrap()).unwrap();
        assert_eq!(signer.calls(), 1);
        let again = f.seal(&sale("kin-01"), &"k".parse().unwrap()).unwrap();
        assert!(again.replayed);
        assert_eq!(again.invoice.elements, first.invoice.elements);
        assert_eq!(signer.calls(), 1, "the retry was signed again");
        // A new key still seals.
        assert!(
            !f.seal(&sale("kin-01"), &"k2".parse().unwrap())
                .unwrap()
                .replayed
        );
        assert_eq!(signer.calls(), 2);
    });
}

#[test]
fn with_a_fast_signer_a_retry_signs_again_but_seals_nothing_new() {
    on_every_store(|db| {
        let signer = Arc::new(CountingSigner::new(0));
        // No signer is this slow, and retries do not turn the lookup on: the
        // key is never looked up first.
        let f = rig_checking(
            db,
            Arc::clone(&signer),
            ReplayCheck::Adaptive {
                slow_signing: std::time::Duration::from_secs(3600),
                after_retry: std::time::Duration::ZERO,
            },
        );
        let first = f.seal(&sale("kin-01"), &"k".parse().unwrap()).unwrap();
        let again = f.seal(&sale("kin-01"), &"k".parse().unwrap()).unwrap();
        assert_eq!(signer.calls(), 2, "the retry is found at append");
        assert!(again.replayed && !first.replayed);
        assert_eq!(again.invoice.elements, first.invoice.elements);
        assert_eq!(f.store().head("kin-01").unwrap().seq, 1, "nothing consumed");
        // And the next invoice continues the chain at 2.
        let next = f.seal(&sale("kin-01"), &"k3".parse().unwrap()).unwrap();
        assert_eq!(next.seq, 2);
    });
}

#[test]
fn replay_check_always_never_signs_a_retry() {
    on_every_store(|db| {
        let signer = Arc::new(CountingSigner::new(0));
        let f = rig_checking(db, Arc::clone(&signer), ReplayCheck::Always);
        f.seal(&sale("kin-01"), &"k".parse().unwrap()).unwrap();
        assert!(
            f.seal(&sale("kin-01"), &"k".parse().unwrap())
                .unwrap()
                .replayed
        );
        assert_eq!(signer.calls(), 1);
    });
}

#[test]
fn after_a_retry_is_found_at_append_retries_are_answered_without_signing() {
    on_every_store(|db| {
        let signer = Arc::new(CountingSigner::new(0));
        let f = rig_checking(
            db,
            Arc::clone(&signer),
            ReplayCheck::Adaptive {
                slow_signing: std::time::Duration::from_secs(3600),
                after_retry: std::time::Duration::from_secs(3600),
            },
        );
        for k in ["a", "b", "c"] {
            f.seal(&sale("kin-01"), &k.parse().unwrap()).unwrap();
        }
        assert_eq!(signer.calls(), 3);
        // The first retry is signed and found at append...
        assert!(
            f.seal(&sale("kin-01"), &"a".parse().unwrap())
                .unwrap()
                .replayed
        );
        assert_eq!(signer.calls(), 4);
        // ...and from then on (a till replaying its queue) retries are looked
        // up first.
        assert!(
            f.seal(&sale("kin-01"), &"b".parse().unwrap())
                .unwrap()
                .replayed
        );
        assert!(
            f.seal(&sale("kin-01"), &"c".parse().unwrap())
                .unwrap()
                .replayed
        );
        assert_eq!(signer.calls(), 4);
        assert_eq!(f.store().head("kin-01").unwrap().seq, 3);
    });
}

/// Another writer that wins every race for the outlet's next position:
/// each append first appends a rival entry there, so this one conflicts
/// (the situation of a hot outlet under several instances, forced).
#[derive(Debug)]
struct AlwaysRaced {
    inner: Arc<dyn LedgerStore>,
    rival: Fiscalizer,
    n: std::sync::atomic::AtomicU64,
}

impl LedgerStore for AlwaysRaced {
    fn head(&self, outlet: &str) -> Result<bonopay_ledger::Head, bonopay_ledger::LedgerError> {
        self.inner.head(outlet)
    }
    fn append_batch(
        &self,
        entries: &[bonopay_ledger::Entry],
    ) -> Vec<Result<bonopay_ledger::Head, bonopay_ledger::LedgerError>> {
        let i = self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.rival
            .seal(&sale("kin-01"), &format!("rival-{i}").parse().unwrap())
            .unwrap();
        self.inner.append_batch(entries)
    }
    fn entry(
        &self,
        outlet: &str,
        seq: u64,
    ) -> Result<Option<bonopay_ledger::Entry>, bonopay_ledger::LedgerError> {
        self.inner.entry(outlet, seq)
    }
    fn entry_by_fiscal_number(
        &self,
        outlet: &str,
        year: i32,
        total: u64,
    ) -> Result<Option<bonopay_ledger::Entry>, bonopay_ledger::LedgerError> {
        self.inner.entry_by_fiscal_number(outlet, year, total)
    }
    fn range(
        &self,
        outlet: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<bonopay_ledger::Entry>, bonopay_ledger::LedgerError> {
        self.inner.range(outlet, from, to)
    }
    fn find_index(
        &self,
        name: &str,
        value: &str,
    ) -> Result<Vec<(String, u64)>, bonopay_ledger::LedgerError> {
        self.inner.find_index(name, value)
    }
    fn outlets(&self) -> Result<Vec<String>, bonopay_ledger::LedgerError> {
        self.inner.outlets()
    }
    fn iter_from<'a>(&'a self, outlet: &str, from_seq: u64) -> bonopay_ledger::EntryIter<'a> {
        self.inner.iter_from(outlet, from_seq)
    }
}

/// Contention that outlasts the retries is `Contention`, retryable, with
/// nothing appended for this request and no number used by it (it was
/// a storage error, answered 500 by the server, before).
#[test]
fn contention_beyond_the_retries_is_retryable_and_consumes_nothing() {
    on_every_store(|db| {
        let inner = db.open();
        let signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::generate().unwrap());
        let rival = Fiscalizer::with_clock(
            Arc::clone(&inner),
            Arc::clone(&signer),
            Arc::new(ManualClock::new(T0)),
            FiscalizerConfig::new("NID-BONO-0001"),
        );
        let raced: Arc<dyn LedgerStore> = Arc::new(AlwaysRaced {
            inner: Arc::clone(&inner),
            rival,
            n: std::sync::atomic::AtomicU64::new(0),
        });
        let mut config = FiscalizerConfig::new("NID-BONO-0001");
        config.max_conflict_retries = 3;
        let f = Fiscalizer::with_clock(raced, signer, Arc::new(ManualClock::new(T0)), config);
        let e = f
            .seal(&sale("kin-01"), &"mine".parse().unwrap())
            .unwrap_err();
        assert!(
            matches!(e, SealError::Contention { ref outlet, attempts: 4 } if outlet == "kin-01"),
            "{e:?}"
        );
        assert!(e.is_retryable());
        // Only the rival's entries are in the chain: 4 attempts, 4 rivals.
        assert_eq!(inner.head("kin-01").unwrap().seq, 4);
        assert!(
            inner
                .find_index("idempotency", "A1309334L/mine")
                .unwrap()
                .is_empty()
        );
    });
}
