//! DGI certification entries: exactly once, hash-linked to their invoice,
//! and checked by both verifiers (the ledger walk and the audit bundle),
//! over every ledger store (`common::on_every_store`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use bonopay_core::{ErrorCode, ValidInvoice, parse_invoice};
use bonopay_ledger::{EntryKind, EntryMeta, LedgerStore, verify_store};
use bonopay_signer::audit::{ExportRequest, Exporter, Verifier};
use bonopay_signer::certification::{
    CERTIFICATION_SCHEMA, CertificationSource, DgiElements, sfe_number,
};
use bonopay_signer::event::{event_digest, event_payload};
use bonopay_signer::{
    Fiscalizer, FiscalizerConfig, ManualClock, PublicKey, SealError, SignatureCheck, Signer,
    SoftwareSigner,
};
use serde_json::{Value, json};

mod common;
use common::{Db, on_every_store};

/// 2026-11-28T08:00:00Z.
const T0: i64 = 1_795_852_800_000;

fn request(ty: &str, items: Value, payment: &str, credit: Option<Value>) -> ValidInvoice {
    let mut v = json!({
        "merchant_nif": "A1309334L", "outlet_id": "kin-01", "pos_terminal_id": "till-1",
        "cashier": {"id": "c-07", "name": "Mbuyi Kalala"}, "invoice_type": ty, "price_mode": "TTC",
        "client": {"type": "PP"}, "items": items,
        "payments": [{"method": "ESPECES", "amount": payment}]
    });
    if let Some(c) = credit {
        v["credit_note"] = c;
    }
    parse_invoice(&v.to_string()).unwrap()
}

fn sale() -> ValidInvoice {
    request(
        "FV",
        json!([{"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": "3", "tax_group": "B"}]),
        "3480",
        None,
    )
}

fn credit(reference: &str, qty: &str) -> ValidInvoice {
    let amount = (1160 * qty.parse::<i64>().unwrap()).to_string();
    request(
        "FA",
        json!([{"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": qty, "tax_group": "B"}]),
        &amount,
        Some(json!({"reference": reference, "nature": "RAM"})),
    )
}

fn elements(code: &str) -> DgiElements {
    DgiElements {
        code_def_dgi: code.into(),
        counters: "7/7 FV".into(),
        nim: "EMCFSIM0001".into(),
        date_time: "2026-11-28 09:00:03".into(),
        qr_code: format!("RDCDEF01;EMCFSIM0001;{code};A1309334L;20261128090003"),
    }
}

struct Rig {
    f: Fiscalizer,
    signer: Arc<SoftwareSigner>,
    keys: Vec<PublicKey>,
}

fn rig(db: &Db) -> Rig {
    let signer = Arc::new(SoftwareSigner::generate().unwrap());
    let keys = vec![signer.public_key().clone()];
    let f = Fiscalizer::with_clock(
        db.open(),
        Arc::clone(&signer) as Arc<dyn Signer>,
        Arc::new(ManualClock::new(T0)),
        FiscalizerConfig::new("NID-BONO-0001"),
    );
    Rig { f, signer, keys }
}

fn chain(r: &Rig) -> bonopay_ledger::ChainReport {
    verify_store(
        &**r.f.store(),
        "kin-01",
        &SignatureCheck::new(r.keys.clone()),
    )
}

fn bundle(r: &Rig) -> Vec<Vec<u8>> {
    let req = ExportRequest {
        outlet: "kin-01".into(),
        time_zone: chrono_tz::Africa::Kinshasa,
        from_ms: None,
        to_ms: None,
        keys: r.keys.clone(),
        created: "2026-11-28T10:00:00+01:00".into(),
    };
    Exporter::new(&**r.f.store(), &req)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn verify_bundle(lines: &[Vec<u8>]) -> bonopay_signer::audit::BundleReport {
    let mut v = Verifier::new(&lines[0]).unwrap();
    for l in &lines[1..] {
        v.feed(l, false);
    }
    let one = v.finish();
    let mut v = Verifier::new(&lines[0]).unwrap();
    v.feed_batch(&lines[1..]);
    assert_eq!(v.finish(), one, "the batched walk agrees");
    one
}

#[test]
fn a_certification_is_recorded_once_and_links_to_its_invoice() {
    on_every_store(|db| {
        let r = rig(db);
        let s = r.f.seal(&sale(), &"k1".parse().unwrap()).unwrap();
        let code = "ABCDEFGHIJKLMNOPQRSTUVWX";
        let c =
            r.f.record_certification(
                "kin-01",
                s.seq,
                &elements(code),
                CertificationSource::Emcf,
                Some("uid-1"),
            )
            .unwrap();
        assert_eq!(c.invoice_seq, s.seq);
        assert_eq!(c.invoice_entry_hash, s.entry_hash);
        assert_eq!(c.rn, sfe_number("kin-01", 2026, 1));
        assert_eq!(c.seq, s.seq + 1, "appended to the same chain");
        // The same elements again: the first record, nothing appended.
        let again =
            r.f.record_certification(
                "kin-01",
                s.seq,
                &elements(code),
                CertificationSource::Emcf,
                Some("uid-1"),
            )
            .unwrap();
        assert_eq!(again, c);
        assert_eq!(r.f.store().head("kin-01").unwrap().seq, c.seq);
        // Other elements for the same invoice: refused, the first stands.
        let other = r.f.record_certification(
            "kin-01",
            s.seq,
            &elements("ZZZZEFGHIJKLMNOPQRSTUVWX"),
            CertificationSource::Emcf,
            None,
        );
        assert!(
            matches!(other, Err(SealError::AlreadyCertified { .. })),
            "{other:?}"
        );
        // The same DGI code for another invoice: refused.
        let s2 = r.f.seal(&sale(), &"k2".parse().unwrap()).unwrap();
        let dup = r.f.record_certification(
            "kin-01",
            s2.seq,
            &elements(code),
            CertificationSource::Emcf,
            None,
        );
        assert!(
            matches!(dup, Err(SealError::AlreadyCertified { .. })),
            "{dup:?}"
        );
        // Looked up both ways.
        assert_eq!(
            r.f.certification_of("kin-01", s.seq).unwrap(),
            Some(c.clone())
        );
        assert_eq!(r.f.certification_of("kin-01", s2.seq).unwrap(), None);
        assert_eq!(
            r.f.find_by_dgi_code(code).unwrap(),
            Some(("kin-01".to_owned(), s.seq))
        );
        // As printed, in groups of four, it finds the same invoice.
        assert_eq!(
            r.f.find_by_dgi_code("ABCD-EFGH-IJKL-MNOP-QRST-UVWX")
                .unwrap(),
            Some(("kin-01".to_owned(), s.seq))
        );
        // A certification is no invoice: the next invoice's number follows on.
        assert_eq!(s2.invoice.elements.fiscal_number, "2/2 FV");
        let report = chain(&r);
        assert!(report.is_valid(), "{:?}", report.error);
        let b = verify_bundle(&bundle(&r));
        assert!(b.is_valid(), "{:?}", b.error);
        assert_eq!(b.checked.certifications, 1);
        // Elements that cannot be genuine are refused before anything is written.
        let mut bad = elements("QQQQEFGHIJKLMNOPQRSTUVWX");
        bad.qr_code = String::new();
        assert!(matches!(
            r.f.record_certification("kin-01", s2.seq, &bad, CertificationSource::Emcf, None),
            Err(SealError::Invalid(_))
        ));
        // Not an invoice.
        assert!(matches!(
            r.f.record_certification(
                "kin-01",
                c.seq,
                &elements("RRRREFGHIJKLMNOPQRSTUVWX"),
                CertificationSource::Emcf,
                None
            ),
            Err(SealError::Invalid(_))
        ));
    });
}

#[test]
fn credit_notes_may_quote_the_dgi_code_and_are_counted_against_one_original() {
    on_every_store(|db| {
        let r = rig(db);
        let s = r.f.seal(&sale(), &"k1".parse().unwrap()).unwrap();
        // The e-MCF returned its code dashed (as Benin's e-MECeF prints it).
        let dgi = "DGIC-ODEA-AAAA-AAAA-AAAA-AAAA";
        r.f.record_certification(
            "kin-01",
            s.seq,
            &elements(dgi),
            CertificationSource::Emcf,
            None,
        )
        .unwrap();
        // Two of the three soaps credited quoting the DGI code, as printed…
        r.f.seal(&credit(dgi, "2"), &"c1".parse().unwrap()).unwrap();
        // …so quoting Bono Pay's code, only one more may be.
        let ours = s.invoice.elements.authentication_code.clone();
        let over =
            r.f.seal(&credit(&ours, "2"), &"c2".parse().unwrap())
                .unwrap_err();
        match over {
            SealError::Invalid(v) => assert!(
                v.0.iter().any(|e| e.code == ErrorCode::CreditExceedsSold),
                "{v:?}"
            ),
            other => panic!("{other:?}"),
        }
        r.f.seal(&credit(&ours, "1"), &"c3".parse().unwrap())
            .unwrap();
        // A code nobody issued is no original.
        let unknown =
            r.f.seal(
                &credit("NOPENOPENOPENOPENOPENOPE", "1"),
                &"c4".parse().unwrap(),
            )
            .unwrap_err();
        match unknown {
            SealError::Invalid(v) => assert!(
                v.0.iter().any(|e| e.code == ErrorCode::OriginalNotFound),
                "{v:?}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(chain(&r).is_valid());
    });
}

/// Appends a certification signed with the outlet's own key whose body is
/// `edit`ed first: a forgery only the link check can catch.
fn forge(r: &Rig, invoice_seq: u64, edit: impl Fn(&mut Value)) {
    let store = r.f.store();
    let head = store.head("kin-01").unwrap();
    let invoice = store.entry("kin-01", invoice_seq).unwrap().unwrap();
    let meta = EntryMeta {
        kind: EntryKind::Certification,
        invoice_type: None,
        fiscal_year: 2026,
        time_ms: head.time_ms + 1,
    };
    let prepared = head.prepare(&meta).unwrap();
    let auth: Value = serde_json::from_slice(&invoice.payload).unwrap();
    let mut body = json!({
        "schema": CERTIFICATION_SCHEMA,
        "algorithm": "ES256-prehash-lowS",
        "key_id": r.signer.key_id(),
        "nid": "NID-BONO-0001",
        "outlet": "kin-01",
        "prev_hash": hex::encode(prepared.prev_hash),
        "seq": prepared.seq,
        "time_ms": meta.time_ms,
        "time_zone": "Africa/Kinshasa",
        "timestamp": "2026-11-28T09:00:05+01:00",
        "invoice_seq": invoice_seq,
        "invoice_entry_hash": hex::encode(invoice.entry_hash),
        "invoice_auth_code": auth["auth_code"],
        "rn": sfe_number("kin-01", 2026, invoice.fiscal_number.unwrap().total),
        "merchant_nif": "A1309334L",
        "source": "emcf",
        "dgi": serde_json::to_value(elements("FORGEDAAAAAAAAAAAAAAAAAA")).unwrap(),
    });
    edit(&mut body);
    let jcs = serde_json_canonicalizer::to_vec(&body).unwrap();
    let out = r.signer.sign(&event_digest(&jcs)).unwrap();
    let entry = prepared.seal(event_payload(&jcs, &out));
    store.append(&entry).unwrap();
}

#[test]
fn the_verifiers_refuse_a_certification_that_does_not_link_to_its_invoice() {
    on_every_store(|db| {
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "another entry hash",
                Box::new(|b| b["invoice_entry_hash"] = json!("00".repeat(32))),
                "entry hash",
            ),
            (
                "another SFE number",
                Box::new(|b| b["rn"] = json!("kin-01/2026/9")),
                "SFE number",
            ),
            (
                "another auth code",
                Box::new(|b| b["invoice_auth_code"] = json!("AAAAAAAAAAAAAAAAAAAAAAAA")),
                "authentication code",
            ),
            (
                "a report, not an invoice",
                Box::new(|b| b["invoice_seq"] = json!(3)),
                "not an invoice",
            ),
            (
                "a later entry",
                Box::new(|b| b["invoice_seq"] = json!(99)),
                "must follow",
            ),
        ];
        for (name, edit, want) in cases {
            let case_db = Db::new(db.backend);
            let r = rig(&case_db);
            let s = r.f.seal(&sale(), &"k1".parse().unwrap()).unwrap();
            r.f.seal(&sale(), &"k2".parse().unwrap()).unwrap();
            r.f.record_incomplete_sale(
                "kin-01",
                &bonopay_signer::IncompleteSale {
                    merchant_nif: "A1309334L".into(),
                    pos_terminal_id: "till-1".into(),
                    cashier_id: "c-07".into(),
                    amount: rust_decimal::Decimal::ONE,
                    reason: "abandon".into(),
                },
            )
            .unwrap();
            assert!(chain(&r).is_valid(), "{name}: valid before the forgery");
            forge(&r, s.seq, edit);
            let report = chain(&r);
            let why = report.error.map(|e| e.to_string()).unwrap_or_default();
            assert!(why.contains(want), "{name}: ledger verifier said {why:?}");
            let b = verify_bundle(&bundle(&r));
            let why = b.error.map(|e| e.reason).unwrap_or_default();
            assert!(why.contains(want), "{name}: bundle verifier said {why:?}");
        }
        // The unedited forgery is a genuine-looking certification: accepted,
        // which shows the cases above fail for their edit alone.
        let r = rig(db);
        let s = r.f.seal(&sale(), &"k1".parse().unwrap()).unwrap();
        forge(&r, s.seq, |_| {});
        assert!(chain(&r).is_valid());
        // A second certification of the same invoice is refused by the walk.
        forge(&r, s.seq, |b| {
            b["dgi"]["codeDEFDGI"] = json!("SECONDAAAAAAAAAAAAAAAAAA")
        });
        let why = chain(&r).error.map(|e| e.to_string()).unwrap_or_default();
        assert!(why.contains("already certified"), "{why}");
    });
}

#[test]
fn an_altered_dgi_element_in_the_ledger_breaks_the_chain() {
    on_every_store(|db| {
        let r = rig(db);
        let s = r.f.seal(&sale(), &"k1".parse().unwrap()).unwrap();
        let c =
            r.f.record_certification(
                "kin-01",
                s.seq,
                &elements("ABCDEFGHIJKLMNOPQRSTUVWX"),
                CertificationSource::Emcf,
                None,
            )
            .unwrap();
        // Rewrite the stored bundle line's payload: change one character of the
        // DGI code, keeping the JSON valid.
        let lines = bundle(&r);
        let target = lines
            .iter()
            .position(|l| {
                serde_json::from_slice::<Value>(l)
                    .map(|v| v["entry"]["seq"] == json!(c.seq))
                    .unwrap_or(false)
            })
            .unwrap();
        let text = String::from_utf8(lines[target].clone()).unwrap();
        let tampered = text.replacen("ABCDEFGHIJKLMNOPQRSTUVWX", "ABCDEFGHIJKLMNOPQRSTUVWY", 1);
        assert_ne!(tampered, text);
        let mut lines = lines;
        lines[target] = tampered.into_bytes();
        let b = verify_bundle(&lines);
        let finding = b.error.expect("an altered DGI code must not verify");
        assert_eq!(finding.seq, Some(c.seq), "{finding:?}");
        // The payload's hash is in the entry's header: the chain itself names
        // the altered entry (its signature would catch a rebuilt header).
        assert!(finding.reason.contains("altered"), "{finding:?}");
    });
}

/// The worked example of docs/format.md §10: the body of a certification
/// entry, recomputed from the text of that section.
#[test]
fn certification_vector() {
    on_every_store(|db| {
        let r = rig(db);
        let s = r.f.seal(&sale(), &"k1".parse().unwrap()).unwrap();
        let el = elements("ABCDEFGHIJKLMNOPQRSTUVWX");
        let c =
            r.f.record_certification(
                "kin-01",
                s.seq,
                &el,
                CertificationSource::Emcf,
                Some("uid-9"),
            )
            .unwrap();
        let entry = r.f.store().entry("kin-01", c.seq).unwrap().unwrap();
        assert_eq!(entry.kind, EntryKind::Certification);
        assert_eq!(entry.fiscal_number, None, "a certification takes no number");
        let body = bonopay_signer::event::event_body(&entry.payload).unwrap();
        let head_before = r.f.store().entry("kin-01", s.seq).unwrap().unwrap();
        let expected = json!({
            "schema": "bonopay/certification/v1",
            "invoice_seq": s.seq,
            "invoice_entry_hash": hex::encode(head_before.entry_hash),
            "invoice_auth_code": s.invoice.elements.authentication_code,
            "rn": "kin-01/2026/1",
            "merchant_nif": "A1309334L",
            "source": "emcf",
            "uid": "uid-9",
            "dgi": {"codeDEFDGI": el.code_def_dgi, "counters": el.counters, "dateTime": el.date_time,
                    "nim": el.nim, "qrCode": el.qr_code},
            "algorithm": "ES256-prehash-lowS",
            "key_id": r.signer.key_id(),
            "nid": "NID-BONO-0001",
            "outlet": "kin-01",
            "prev_hash": hex::encode(head_before.entry_hash),
            "seq": c.seq,
            "time_ms": entry.time_ms,
            "time_zone": "Africa/Kinshasa",
            "timestamp": "2026-11-28T09:00:00+01:00",
        });
        assert_eq!(body, expected);
        // The signature covers SHA-256("bonopay/v1/event\0" ‖ JCS(body)).
        let jcs = serde_json_canonicalizer::to_vec(&expected).unwrap();
        let sig: Value = serde_json::from_slice(&entry.payload).unwrap();
        let out = bonopay_signer::SignOutput {
            signature: bonopay_signer::Signature(
                hex::decode(sig["signature"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
            ),
            device_counter: None,
        };
        bonopay_signer::verify_output(&r.keys[0], &event_digest(&jcs), &out).unwrap();
    });
}
