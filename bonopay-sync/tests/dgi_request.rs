//! The e-MCF request of a real sealed invoice, byte for byte.
//!
//! Invoices are sealed by the real Fiscalizer (fixed clock, so the dates are
//! fixed), then mapped to `POST /api/invoice` bodies. The expected bodies
//! were produced by the former mapping (raw JSON pointers over the body,
//! `map_sealed_body`), before it was replaced by the typed reader
//! (`map_sealed` over `SealedInvoice`): the two agree on every byte sent
//! to the DGI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bonopay_core::parse_invoice;
use bonopay_ledger::{LedgerStore, MemoryStore};
use bonopay_signer::{Fiscalizer, FiscalizerConfig, ManualClock, SealedInvoice, SoftwareSigner};
use serde_json::{Value, json};

/// 2027-01-15T08:00:00+01:00 in Kinshasa.
const NOW_MS: i64 = 1_800_000_000_000;

fn fiscalizer() -> Fiscalizer {
    let ledger: Arc<dyn LedgerStore> = Arc::new(MemoryStore::new());
    let mut config = FiscalizerConfig::new("NID-TEST");
    config.isf = Some("ISF-TEST-01".into());
    config.reference_rates = Arc::new(bonopay_tax::FixedReferenceRates(
        [(bonopay_core::Currency::Usd, "2850".parse().unwrap())].into(),
    ));
    Fiscalizer::with_clock(
        ledger,
        Arc::new(SoftwareSigner::generate().unwrap()),
        Arc::new(ManualClock::new(NOW_MS)),
        config,
    )
}

fn seal(f: &Fiscalizer, request: &Value, key: &str) -> SealedInvoice {
    f.seal(
        &parse_invoice(&request.to_string()).unwrap(),
        &key.parse().unwrap(),
    )
    .unwrap()
    .invoice
}

fn usd_sale() -> Value {
    json!({
        "merchant_nif": "A1309334L", "outlet_id": "kin-gombe-01", "pos_terminal_id": "till-1",
        "cashier": {"id": "c-07", "name": "Mbuyi"}, "invoice_type": "FV", "price_mode": "HT",
        "client": {"type": "PM", "nif": "A0000001B", "name": "Société Kivu SARL",
                   "contact": "+243 81 000 0000", "address": "12 av. du Commerce, Gombe"},
        "currency": "USD",
        "exchange_rate": {"rate": "2850.00", "date": "2027-01-14"},
        "items": [
            {"code": "PC-1", "kind": "BIE", "name": "Ordinateur", "unit_price": "500",
             "quantity": "1", "tax_group": "B", "original_price": "550",
             "price_modification": "remise 10%"},
            {"code": "BIERE", "kind": "BIE", "name": "Bière 65 cl", "unit_price": "2.5",
             "quantity": "12.250", "tax_group": "B",
             "specific_tax": {"amount": "3.06", "rate": "10"}},
            {"code": "INST", "kind": "SER", "name": "Installation", "unit_price": "40",
             "quantity": "1", "tax_group": "C"}
        ],
        "payments": [{"method": "VIREMENT", "amount": "500"}, {"method": "ESPECES", "amount": "162.28"}],
        "comments": {"A": "Merci de votre visite", "C": "Livraison incluse"}
    })
}

fn cdf_sale() -> Value {
    json!({
        "merchant_nif": "A1309334L", "outlet_id": "kin-gombe-01", "pos_terminal_id": "till-1",
        "cashier": {"id": "c-07", "name": "Mbuyi"}, "invoice_type": "FV", "price_mode": "TTC",
        "client": {"type": "PP"},
        "items": [
            {"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": "2", "tax_group": "B"},
            {"code": "RIZ", "kind": "BIE", "name": "Riz", "unit_price": "64800", "quantity": "1", "tax_group": "C"}
        ],
        "payments": [{"method": "ESPECES", "amount": "67120"}]
    })
}

fn credit_note() -> Value {
    json!({
        "merchant_nif": "A1309334L", "outlet_id": "kin-gombe-01", "pos_terminal_id": "till-1",
        "cashier": {"id": "c-07", "name": "Mbuyi"}, "invoice_type": "FA", "price_mode": "TTC",
        "client": {"type": "PP"},
        "items": [{"code": "SAV", "kind": "BIE", "name": "Savon", "unit_price": "1160", "quantity": "1", "tax_group": "B"}],
        "payments": [{"method": "ESPECES", "amount": "1160"}],
        "credit_note": {"reference": "RRR", "nature": "RRR"}
    })
}

fn mapped(invoice: &SealedInvoice) -> (String, String) {
    let (request, totals) = bonopay_sync::dgi::map_sealed(invoice).unwrap();
    (
        serde_json::to_string(&request).unwrap(),
        serde_json::to_string(&totals).unwrap(),
    )
}

/// What the mapping sent for each case before the typed reader: request
/// body, then the CONFIRM totals.
const EXPECTED: [(&str, &str, &str); 3] = [
    (
        "usd_sale",
        r#"{"nif":"A1309334L","isf":"ISF-TEST-01","rn":"kin-gombe-01/2027/1","mode":"ht","type":"FV","items":[{"code":"PC-1","type":"BIE","name":"Ordinateur","price":500.00,"quantity":1.000,"taxGroup":"B","taxSpecificValue":"","taxSpecificAmount":0,"originalPrice":550.00,"priceModification":"remise 10%"},{"code":"BIERE","type":"BIE","name":"Bière 65 cl","price":2.50,"quantity":12.250,"taxGroup":"B","taxSpecificValue":"10.00%","taxSpecificAmount":3.06,"originalPrice":null,"priceModification":""},{"code":"INST","type":"SER","name":"Installation","price":40.00,"quantity":1.000,"taxGroup":"C","taxSpecificValue":"","taxSpecificAmount":0,"originalPrice":null,"priceModification":""}],"client":{"type":"PM","typeDesc":"Personne morale","nif":"A0000001B","name":"Société Kivu SARL","contact":"+243 81 000 0000","address":"12 av. du Commerce, Gombe"},"operator":{"id":"c-07","name":"Mbuyi"},"payment":[{"name":"VIREMENT","amount":500.00,"currencyCode":"USD","currencyRate":2850.000000},{"name":"ESPECES","amount":162.28,"currencyCode":"USD","currencyRate":2850.000000}],"reference":"","referenceType":"","referenceDesc":"","cmta":"Merci de votre visite","cmtb":"","cmtc":"Livraison incluse","cmtd":"","cmte":"","cmtf":"","cmtg":"","cmth":"","curCode":"USD","curDate":"2027-01-14","curRate":2850.000000}"#,
        r#"{"total":1887498.00,"vtotal":252481.50}"#,
    ),
    (
        "cdf_sale",
        r#"{"nif":"A1309334L","isf":"ISF-TEST-01","rn":"kin-gombe-01/2027/2","mode":"ttc","type":"FV","items":[{"code":"SAV","type":"BIE","name":"Savon","price":1160.00,"quantity":2.000,"taxGroup":"B","taxSpecificValue":"","taxSpecificAmount":0,"originalPrice":null,"priceModification":""},{"code":"RIZ","type":"BIE","name":"Riz","price":64800.00,"quantity":1.000,"taxGroup":"C","taxSpecificValue":"","taxSpecificAmount":0,"originalPrice":null,"priceModification":""}],"client":{"type":"PP","typeDesc":"Personne physique","nif":"","name":"","contact":"","address":""},"operator":{"id":"c-07","name":"Mbuyi"},"payment":[{"name":"ESPECES","amount":67120.00}],"reference":"","referenceType":"","referenceDesc":"","cmta":"","cmtb":"","cmtc":"","cmtd":"","cmte":"","cmtf":"","cmtg":"","cmth":"","curCode":"CDF","curDate":"2027-01-15","curRate":1}"#,
        r#"{"total":67120.00,"vtotal":5120.00}"#,
    ),
    (
        "credit_note",
        r#"{"nif":"A1309334L","isf":"ISF-TEST-01","rn":"kin-gombe-01/2027/3","mode":"ttc","type":"FA","items":[{"code":"SAV","type":"BIE","name":"Savon","price":1160.00,"quantity":1.000,"taxGroup":"B","taxSpecificValue":"","taxSpecificAmount":0,"originalPrice":null,"priceModification":""}],"client":{"type":"PP","typeDesc":"Personne physique","nif":"","name":"","contact":"","address":""},"operator":{"id":"c-07","name":"Mbuyi"},"payment":[{"name":"ESPECES","amount":1160.00}],"reference":"RRR","referenceType":"RRR","referenceDesc":"Rabais, remise, ristourne","cmta":"","cmtb":"","cmtc":"","cmtd":"","cmte":"","cmtf":"","cmtg":"","cmth":"","curCode":"CDF","curDate":"2027-01-15","curRate":1}"#,
        r#"{"total":1160.00,"vtotal":160.00}"#,
    ),
];

#[test]
fn sealed_invoices_map_to_the_same_emcf_bytes() {
    let f = fiscalizer();
    let sealed = [
        seal(&f, &usd_sale(), "k-usd"),
        seal(&f, &cdf_sale(), "k-cdf"),
        seal(&f, &credit_note(), "k-fa"),
    ];
    for (invoice, (name, request, totals)) in sealed.iter().zip(EXPECTED) {
        let (got_request, got_totals) = mapped(invoice);
        assert_eq!(got_request, request, "{name}: request");
        assert_eq!(got_totals, totals, "{name}: totals");
    }
}
