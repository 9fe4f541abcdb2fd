//! The DGI e-MCF simulator over real loopback HTTP: auth, the two-phase
//! create → confirm / cancel flow, expiry on an injected clock, the
//! pending limit, fault injection and the confirm record; and the
//! platform's own ways: refusals in HTTP 200 bodies, details that echo
//! pending invoices only, credit notes checked against their originals,
//! per-NIF counters and tokens, the info tables, the strings-refused
//! switch and the portal view.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bonopay_sync::dgi::{DgiConfirmation, DgiInvoiceState, DgiStatus, error_in, parse_dgi_time};
use bonopay_sync::sim::{
    ConfirmRecord, Faults, ManualClock, PortalInvoice, SimConfig, SimStats, Simulator,
};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// 2026-11-28 08:00:00 UTC = 09:00:00 in Kinshasa.
const START_MS: i64 = 1_795_852_800_000;
const NIF: &str = "A1309334L";
const OTHER_NIF: &str = "B0000001X";

struct Sim {
    sim: Arc<Simulator>,
    clock: Arc<ManualClock>,
    base: String,
    token: String,
    http: Client,
}

/// Starts a simulator on `127.0.0.1:0` in a runtime on its own thread
/// (the thread ends with the test process).
fn start_with(config: SimConfig) -> Sim {
    let clock = Arc::new(ManualClock::new(START_MS));
    let sim = Simulator::new(config, clock.clone());
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let server = Arc::clone(&sim);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            server.serve(listener).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let token = sim.issue_token(3600);
    Sim {
        sim,
        clock,
        base: format!("http://{addr}"),
        token,
        http: Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    }
}

fn start() -> Sim {
    start_with(SimConfig::default())
}

struct Answer {
    status: StatusCode,
    text: String,
    body: Value,
}

impl Answer {
    /// A success: HTTP 200 and no `errorCode`.
    fn ok(self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        assert!(error_in(&self.body).is_none(), "{}", self.text);
        self.body
    }
    /// An error body `{errorCode, errorDesc}` and nothing else, under
    /// `status` (200 for the platform's refusals).
    fn error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.body["errorCode"], code, "{}", self.text);
        assert!(
            self.body["errorDesc"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{}",
            self.text
        );
        assert_eq!(self.body.as_object().unwrap().len(), 2, "{}", self.text);
    }
    /// A business refusal: HTTP 200 with the error body.
    fn refused(&self, code: &str) {
        self.error(200, code);
    }
    fn desc(&self) -> &str {
        self.body["errorDesc"].as_str().unwrap()
    }
    /// A member of the JSON object as written on the wire (so `133080.00`
    /// stays `133080.00`, and a string keeps its quotes).
    fn raw(&self, key: &str) -> String {
        let m: BTreeMap<String, Box<RawValue>> = serde_json::from_str(&self.text).unwrap();
        m.get(key)
            .unwrap_or_else(|| panic!("no {key} in {}", self.text))
            .get()
            .to_owned()
    }
}

fn answer(r: reqwest::blocking::Response) -> Answer {
    let status = r.status();
    let text = r.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    Answer { status, text, body }
}

impl Sim {
    fn get_as(&self, path: &str, token: Option<&str>) -> Answer {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        answer(r.send().unwrap())
    }
    fn get(&self, path: &str) -> Answer {
        self.get_as(path, Some(&self.token))
    }
    fn post_as(&self, body: &Value, token: &str) -> Answer {
        answer(
            self.http
                .post(format!("{}/api/invoice", self.base))
                .bearer_auth(token)
                .json(body)
                .send()
                .unwrap(),
        )
    }
    fn post(&self, body: &Value) -> Answer {
        self.post_as(body, &self.token)
    }
    /// POSTs `text` exactly.
    fn post_text(&self, text: &str) -> Answer {
        answer(
            self.http
                .post(format!("{}/api/invoice", self.base))
                .bearer_auth(&self.token)
                .header("content-type", "application/json")
                .body(text.to_owned())
                .send()
                .unwrap(),
        )
    }
    fn put_as(&self, uid: &str, action: &str, body: Option<&Value>, token: &str) -> Answer {
        let mut r = self
            .http
            .put(format!("{}/api/invoice/{uid}/{action}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(b);
        }
        answer(r.send().unwrap())
    }
    fn put(&self, uid: &str, action: &str, body: Option<&Value>) -> Answer {
        self.put_as(uid, action, body, &self.token)
    }
    fn confirm(&self, uid: &str, total: &str, vtotal: &str) -> Answer {
        self.put(
            uid,
            "CONFIRM",
            Some(&json!({"total": total, "vtotal": vtotal})),
        )
    }
    fn status(&self) -> DgiStatus {
        serde_json::from_value(self.get("/api/invoice").ok()).unwrap()
    }
    /// `GET /api/invoice/{uid}`.
    fn echo(&self, uid: &str) -> Answer {
        self.get(&format!("/api/invoice/{uid}"))
    }
    /// Where the invoice stands, as the portal shows it.
    fn state(&self, uid: &str) -> DgiInvoiceState {
        self.sim.details(uid).unwrap().status
    }
    fn sim_post(&self, path: &str, body: &Value) -> Answer {
        answer(
            self.http
                .post(format!("{}{path}", self.base))
                .json(body)
                .send()
                .unwrap(),
        )
    }
    /// POSTs the simple invoice and returns its uid.
    fn create(&self, rn: &str) -> String {
        let v = self.post(&simple(rn)).ok();
        v["uid"].as_str().unwrap().to_owned()
    }
    /// POSTs and confirms `body` (with the answered totals), returning
    /// the elements.
    fn certify_as(&self, body: &Value, token: &str) -> DgiConfirmation {
        let a = self.post_as(body, token);
        let total = a.raw("total");
        let vtotal = a.raw("vtotal");
        let uid = a.ok()["uid"].as_str().unwrap().to_owned();
        let c = self.put_as(
            &uid,
            "CONFIRM",
            Some(&json!({"total": total, "vtotal": vtotal})),
            token,
        );
        serde_json::from_value(c.ok()).unwrap()
    }
    fn certify(&self, body: &Value) -> DgiConfirmation {
        self.certify_as(body, &self.token)
    }
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// 3 × 1160 in group B and 2 × 64800 in group C, TTC: B is 3480 TTC at 16 %
/// (3000 + 480), C is 129600 at 8 % (120000 + 9600); total 133080.00 and
/// VAT 10080.00. Amounts as strings, members left out (both accepted).
fn simple(rn: &str) -> Value {
    json!({
        "nif": NIF,
        "rn": rn,
        "mode": "ttc",
        "type": "FV",
        "items": [
            {"code": "SUCRE-1KG", "type": "BIE", "name": "Sucre 1 kg", "price": "1160.00", "quantity": "3", "taxGroup": "B"},
            {"code": "CIMENT-50", "type": "BIE", "name": "Ciment 50 kg", "price": "64800.00", "quantity": "2", "taxGroup": "C", "taxSpecificValue": "0.00%"}
        ],
        "client": {"type": "PP", "name": "Client comptoir"},
        "operator": {"id": "caissier-1", "name": "Mado Mbuyi"},
        "payment": [{"name": "ESPECES", "amount": "133080.00"}],
        "cmta": "Merci de votre visite"
    })
}

/// The same invoice as the client now sends it: every member present,
/// amounts as JSON numbers written to the cent.
const SIMPLE_NUMBERS: &str = r#"{"nif":"A1309334L","isf":"ISF-1","rn":"shop/2026/7","mode":"ttc","type":"FV","items":[{"code":"SUCRE-1KG","type":"BIE","name":"Sucre 1 kg","price":1160.00,"quantity":3.000,"taxGroup":"B","taxSpecificValue":"","taxSpecificAmount":0,"originalPrice":null,"priceModification":""},{"code":"CIMENT-50","type":"BIE","name":"Ciment 50 kg","price":64800.00,"quantity":2,"taxGroup":"C","taxSpecificValue":"","taxSpecificAmount":0,"originalPrice":null,"priceModification":""}],"client":{"type":"PP","typeDesc":"Personne physique","nif":"","name":"","contact":"","address":""},"operator":{"id":"c1","name":"Mado"},"payment":[{"name":"ESPECES","amount":133080.00}],"reference":"","referenceType":"","referenceDesc":"","cmta":"","cmtb":"","cmtc":"","cmtd":"","cmte":"","cmtf":"","cmtg":"","cmth":"","curCode":"CDF","curDate":"2026-11-28","curRate":1}"#;

fn simple_numbers() -> Value {
    serde_json::from_str(SIMPLE_NUMBERS).unwrap()
}

/// A TTC credit note (FA, nature COR unless `reference` is `RRR`) of
/// `lines` (`code`, `quantity`) at the simple invoice's prices, paid back
/// in cash.
fn credit_note(rn: &str, reference: &str, lines: &[(&str, &str)]) -> Value {
    let mut total = Decimal::ZERO;
    let items: Vec<Value> = lines
        .iter()
        .map(|(code, qty)| {
            let (name, price, group) = match *code {
                "SUCRE-1KG" => ("Sucre 1 kg", "1160.00", "B"),
                "CIMENT-50" => ("Ciment 50 kg", "64800.00", "C"),
                other => (other, "500.00", "B"),
            };
            total += dec(price) * dec(qty);
            json!({"code": code, "type": "BIE", "name": name, "price": price, "quantity": qty, "taxGroup": group})
        })
        .collect();
    let nature = if reference == "RRR" { "RRR" } else { "COR" };
    json!({
        "nif": NIF, "rn": rn, "mode": "ttc", "type": "FA",
        "items": items,
        "client": {"type": "PP"},
        "operator": {"id": "c1", "name": "Mado"},
        "payment": [{"name": "ESPECES", "amount": total.round_dp(2).to_string()}],
        "reference": reference, "referenceType": nature
    })
}

fn is_code(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

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

impl Answer {
    /// [`Answer::refused`], returning the description.
    fn refused_with(&self, code: &str) -> String {
        self.refused(code);
        self.desc().to_owned()
    }
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

// ---------------------------------------------------------------------
// The platform's own behaviour.

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
