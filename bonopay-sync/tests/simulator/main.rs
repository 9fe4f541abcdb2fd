//! The DGI e-MCF simulator over real loopback HTTP: auth, the two-phase
//! create → confirm / cancel flow, expiry on an injected clock, the
//! pending limit, fault injection and the confirm record; and the
//! platform's own ways: refusals in HTTP 200 bodies, details that echo
//! pending invoices only, credit notes checked against their originals,
//! per-NIF counters and tokens, the info tables, the strings-refused
//! switch and the portal view.
//!
//! One test binary, one module per concern: `tokens`, `two_phase`,
//! `faults`, `platform` and `control`; the harness is here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod control;
mod faults;
mod platform;
mod tokens;
mod two_phase;

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

impl Answer {
    /// [`Answer::refused`], returning the description.
    fn refused_with(&self, code: &str) -> String {
        self.refused(code);
        self.desc().to_owned()
    }
}
