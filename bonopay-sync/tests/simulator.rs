//! The DGI e-MCF simulator over real loopback HTTP: auth, the two-phase
//! create → confirm / cancel flow, expiry on an injected clock, the
//! pending limit, fault injection and the confirm record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bonopay_sync::dgi::{DgiConfirmation, DgiInvoiceDetails, DgiInvoiceState, DgiStatus};
use bonopay_sync::sim::{ConfirmRecord, Faults, ManualClock, SimConfig, SimStats, Simulator};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

/// 2026-11-28 08:00:00 UTC = 09:00:00 in Kinshasa.
const START_MS: i64 = 1_795_852_800_000;
const NIF: &str = "A1309334L";

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
    body: Value,
}

impl Answer {
    fn ok(self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self.body
    }
    fn error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["errorCode"], code, "{}", self.body);
        assert!(
            self.body["errorDesc"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{}",
            self.body
        );
        assert_eq!(self.body.as_object().unwrap().len(), 2, "{}", self.body);
    }
}

fn answer(r: reqwest::blocking::Response) -> Answer {
    let status = r.status();
    let text = r.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, body }
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
    fn put(&self, uid: &str, action: &str, body: Option<&Value>) -> Answer {
        let mut r = self
            .http
            .put(format!("{}/api/invoice/{uid}/{action}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(b);
        }
        answer(r.send().unwrap())
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
    fn details(&self, uid: &str) -> DgiInvoiceDetails {
        serde_json::from_value(self.get(&format!("/api/invoice/{uid}")).ok()).unwrap()
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
}

/// 3 × 1160 in group B and 2 × 64800 in group C, TTC: B is 3480 TTC at 16 %
/// (3000 + 480), C is 129600 at 8 % (120000 + 9600); total 133080.00 and
/// VAT 10080.00.
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
    s.clock.advance_ms(60_000);
    s.get_as("/api/invoice", Some(&short)).error(401, "99");
    s.get_as("/api/invoice", Some(&s.sim.issue_token(-1)))
        .error(401, "99");
    // Unauthenticated writes are refused too, and change nothing.
    answer(
        s.http
            .post(format!("{}/api/invoice", s.base))
            .json(&simple("o:1"))
            .send()
            .unwrap(),
    )
    .error(401, "99");
    // A valid token for another NIF may not submit this NIF's invoice.
    let foreign = s.sim.issue_token_for("B0000001X", "CD01009999-1", 3600);
    s.post_as(&simple("o:1"), &foreign).error(403, "99");
    assert_eq!(s.sim.stats().posted, 0);
    // Nor see this NIF's invoices.
    let uid = s.create("o:2");
    let a = s.get_as(&format!("/api/invoice/{uid}"), Some(&foreign));
    a.error(404, "20");
    let st = s.get_as("/api/invoice", Some(&foreign)).ok();
    assert_eq!(st["pendingRequestsCount"], 0);
}

#[test]
fn post_list_confirm_gives_counters_code_and_qr() {
    let s = start();
    let v = s.post(&simple("outlet-1:1")).ok();
    assert_eq!(v["total"], "133080.00");
    assert_eq!(v["vtotal"], "10080.00");
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(
        groups[0],
        json!({"group": "B", "rate": "16.00", "base": "3000.00", "tax": "480.00", "total": "3480.00"})
    );
    assert_eq!(
        groups[1],
        json!({"group": "C", "rate": "8.00", "base": "120000.00", "tax": "9600.00", "total": "129600.00"})
    );
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

    let d = s.details(&uid);
    assert_eq!(d.status, DgiInvoiceState::Pending);
    assert_eq!(d.rn, "outlet-1:1");
    assert_eq!(d.totals.total.to_string(), "133080.00");
    assert!(d.confirmation.is_none());

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
    let d = s.details(&uid);
    assert_eq!(d.status, DgiInvoiceState::Confirmed);
    assert_eq!(d.confirmation.as_ref(), Some(&c));

    // Confirming again: error 20, and still one confirm on record.
    s.confirm(&uid, "133080.00", "10080.00").error(404, "20");
    s.put(&uid, "CANCEL", None).error(404, "20");
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
        (uid.as_str(), "outlet-1:1", NIF, "1/1 FV")
    );
    assert_eq!(rec.code, c.code_def_dgi);
    assert_eq!(rec.at_ms, START_MS);

    // Counters per type and in total; lowercase `confirm`; numbers as
    // totals are accepted too.
    let uid2 = s.create("outlet-1:2");
    s.clock.advance_ms(1_000);
    let c2 = s
        .put(
            &uid2,
            "confirm",
            Some(&json!({"total": 133080, "vtotal": "10080"})),
        )
        .ok();
    assert_eq!(c2["counters"], "2/2 FV");
    assert_eq!(c2["dateTime"], "2026-11-28 09:00:01");
    let mut ft = simple("outlet-1:3");
    ft["type"] = json!("FT");
    let uid3 = s.post(&ft).ok()["uid"].as_str().unwrap().to_owned();
    assert_eq!(
        s.confirm(&uid3, "133080.00", "10080.00").ok()["counters"],
        "1/3 FT"
    );

    let recs: Vec<ConfirmRecord> = serde_json::from_value(s.get("/_sim/confirms").ok()).unwrap();
    assert_eq!(recs, s.sim.confirms());
    assert_eq!(recs.len(), 3);
    let stats: SimStats = serde_json::from_value(s.get("/_sim/stats").ok()).unwrap();
    assert_eq!((stats.posted, stats.confirmed, stats.pending), (3, 3, 0));
}

#[test]
fn wrong_totals_are_refused_and_cancel_finalises() {
    let s = start();
    let uid = s.create("o:1");
    let a = s.confirm(&uid, "133081.00", "10080.00");
    a.error(400, "99");
    let desc = a.body["errorDesc"].as_str().unwrap();
    assert!(desc.contains("133081") && desc.contains("133080"), "{desc}");
    s.confirm(&uid, "133080.00", "10079.99").error(400, "99");
    // Missing or malformed body.
    s.put(&uid, "CONFIRM", None).error(400, "99");
    s.put(&uid, "CONFIRM", Some(&json!({"total": "x"})))
        .error(400, "99");
    assert_eq!(s.details(&uid).status, DgiInvoiceState::Pending);
    assert!(s.sim.confirms().is_empty());

    let d: DgiInvoiceDetails = serde_json::from_value(s.put(&uid, "CANCEL", None).ok()).unwrap();
    assert_eq!(d.status, DgiInvoiceState::Cancelled);
    assert_eq!(s.status().pending_count, 0);
    assert_eq!(s.details(&uid).status, DgiInvoiceState::Cancelled);
    s.put(&uid, "CANCEL", None).error(404, "20");
    s.confirm(&uid, "133080.00", "10080.00").error(404, "20");
    s.put("no-such-uid", "cancel", None).error(404, "20");
    s.get("/api/invoice/no-such-uid").error(404, "20");
    s.put(&uid, "REOPEN", None).error(404, "99");
    assert_eq!(s.sim.stats().cancelled, 1);
}

#[test]
fn pending_invoices_expire_on_the_clock() {
    let s = start();
    let uid = s.create("o:1");
    s.clock.advance_ms(119_999);
    assert_eq!(s.status().pending_count, 1);
    assert_eq!(s.details(&uid).status, DgiInvoiceState::Pending);
    s.clock.advance_ms(2);
    let st = s.status();
    assert_eq!(st.pending_count, 0);
    assert!(st.pending.is_empty());
    assert_eq!(s.details(&uid).status, DgiInvoiceState::Expired);
    s.confirm(&uid, "133080.00", "10080.00").error(404, "20");
    s.put(&uid, "CANCEL", None).error(404, "20");
    assert!(s.sim.confirms().is_empty());
    assert_eq!(s.sim.stats().expired, 1);

    // A configured TTL, and /_sim/expire.
    let s = start_with(SimConfig {
        pending_ttl_ms: 5_000,
        ..SimConfig::default()
    });
    let a = s.create("o:1");
    s.clock.advance_ms(5_000);
    assert_eq!(s.details(&a).status, DgiInvoiceState::Expired);
    let b = s.create("o:2");
    let c = s.create("o:3");
    assert_eq!(s.sim_post("/_sim/expire", &json!({})).ok()["expired"], 2);
    assert_eq!(s.details(&b).status, DgiInvoiceState::Expired);
    assert_eq!(s.details(&c).status, DgiInvoiceState::Expired);
    assert_eq!(s.status().pending_count, 0);
    assert_eq!(s.sim.stats().expired, 3);
}

#[test]
fn eleventh_pending_invoice_is_refused_with_code_1() {
    let s = start();
    let uids: Vec<String> = (1..=10).map(|i| s.create(&format!("o:{i}"))).collect();
    assert_eq!(s.status().pending_count, 10);
    let a = s.post(&simple("o:11"));
    a.error(400, "1");
    assert_eq!(s.status().pending_count, 10);
    // Another NIF has its own limit.
    let mut other = simple("x:1");
    other["nif"] = json!("B0000001X");
    s.post_as(
        &other,
        &s.sim.issue_token_for("B0000001X", "CD01009999-1", 60),
    )
    .ok();
    // Finalising one frees a place.
    s.put(&uids[0], "CANCEL", None).ok();
    s.create("o:11");
    s.post(&simple("o:12")).error(400, "1");
    // So does expiry.
    s.clock.advance_ms(120_000);
    s.create("o:12");
}

#[test]
fn dropped_confirm_is_committed_and_recorded() {
    let s = start();
    let uid = s.create("o:1");
    s.sim.set_faults(Faults {
        drop_rate: 1000,
        ..Faults::default()
    });
    let a = s.confirm(&uid, "133080.00", "10080.00");
    a.error(500, "99");
    // The same answer as an injected error: nothing tells them apart.
    assert_eq!(a.body["errorDesc"], "internal server error");
    // GETs are not dropped.
    let d = s.details(&uid);
    assert_eq!(d.status, DgiInvoiceState::Confirmed);
    let conf = d.confirmation.unwrap();
    assert_eq!(conf.counters, "1/1 FV");
    let recs = s.sim.confirms();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].rn, "o:1");
    assert_eq!(recs[0].code, conf.code_def_dgi);
    // A client that blindly retries gets 20, not a second confirm.
    s.confirm(&uid, "133080.00", "10080.00").error(404, "20");
    assert!(s.sim.double_confirms().is_empty());

    // A dropped POST still created the invoice: it is in the pending list.
    let a = s.post(&simple("o:2"));
    a.error(500, "99");
    let st = s.status();
    assert_eq!(st.pending_count, 1);
    // A client that resubmits instead of reconciling creates a second
    // pending invoice for the same rn, and confirming both is exactly
    // what double_confirms reports.
    s.sim.set_faults(Faults::default());
    let again = s.create("o:2");
    s.confirm(&st.pending[0].uid, "133080.00", "10080.00").ok();
    s.confirm(&again, "133080.00", "10080.00").ok();
    assert_eq!(s.sim.double_confirms(), vec!["o:2".to_owned()]);

    let stats = s.sim.stats();
    assert_eq!(stats.drops_injected, 2);
    assert_eq!(stats.faults_injected, 2);
    assert_eq!(stats.confirmed, 3);
}

#[test]
fn injected_errors_change_nothing() {
    let s = start();
    let uid = s.create("o:1");
    let set = s.sim_post("/_sim/faults", &json!({"error_rate": 1000, "seed": 1}));
    assert_eq!(set.ok()["error_rate"], 1000);
    s.post(&simple("o:2")).error(500, "99");
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
    assert_eq!(s.details(&uid).status, DgiInvoiceState::Pending);
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
    let v = s.post(&simple("o:1")).ok();
    assert_eq!(v["total"], "133081.00");
    assert_eq!(v["vtotal"], "10080.00");
    let uid = v["uid"].as_str().unwrap();
    // The client's own totals differ from the answer: refused.
    s.confirm(uid, "133080.00", "10080.00").error(400, "99");
    assert_eq!(s.details(uid).totals.total.to_string(), "133081.00");
    s.put(uid, "CANCEL", None).ok();
    // A client echoing the answered totals would have been accepted.
    let v = s.post(&simple("o:2")).ok();
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
    let usd = json!({
        "nif": NIF, "rn": "o:1", "mode": "ttc", "type": "FV",
        "items": [{"code": "USB", "type": "BIE", "name": "Cle USB", "price": "10.00", "quantity": "1", "taxGroup": "B"}],
        "client": {"type": "PM", "nif": "B0000001X", "name": "Acme SARL"},
        "operator": {"id": "c1", "name": "Mado"},
        "payment": [{"name": "CARTEBANCAIRE", "amount": "10.00"}],
        "curCode": "USD", "curRate": "2850", "curDate": "2026-11-27T00:00:00"
    });
    let v = s.post(&usd).ok();
    assert_eq!(v["curTotal"], "10.00");
    assert_eq!(v["total"], "28500.00");
    // 10.00 TTC at 16 % is 8.62 + 1.38 USD; the group is converted at the
    // invoice's rate: 24567.00 + 3933.00 CDF.
    assert_eq!(v["vtotal"], "3933.00");
    assert_eq!(
        v["groups"],
        json!([{"group": "B", "rate": "16.00", "base": "24567.00", "tax": "3933.00", "total": "28500.00"}])
    );
    s.confirm(
        v["uid"].as_str().unwrap(),
        v["total"].as_str().unwrap(),
        v["vtotal"].as_str().unwrap(),
    )
    .ok();

    // An RRR credit note.
    let mut fa = simple("o:2");
    fa["type"] = json!("FA");
    fa["reference"] = json!("RRR");
    fa["referenceType"] = json!("RRR");
    let v = s.post(&fa).ok();
    assert_eq!(v["total"], "133080.00");
    let c = s
        .confirm(v["uid"].as_str().unwrap(), "133080.00", "10080.00")
        .ok();
    assert_eq!(c["counters"], "1/2 FA");

    // A credit note against a Code DEF/DGI.
    let code = s.sim.confirms()[0].code.clone();
    let mut ea = simple("o:3");
    ea["type"] = json!("EA");
    ea["reference"] = json!(code);
    ea["referenceType"] = json!("COR");
    s.post(&ea).ok();

    // Missing and malformed references.
    let mut bad = simple("o:4");
    bad["type"] = json!("FA");
    s.post(&bad).error(400, "4");
    bad["reference"] = json!("RRR");
    s.post(&bad).error(400, "4");
    bad["reference"] = json!("ABC123");
    bad["referenceType"] = json!("COR");
    s.post(&bad).error(400, "5");
    bad["reference"] = json!("RRR");
    bad["referenceType"] = json!("COR");
    s.post(&bad).error(400, "99");
}

#[test]
fn invalid_invoices_get_benin_codes() {
    let s = start();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = simple("o:1");
        f(&mut v);
        v
    };
    s.post(&with(&|v| v["type"] = json!("FX"))).error(400, "3");
    s.post(&with(&|v| v["items"] = json!([]))).error(400, "8");
    s.post(&with(&|v| v["items"][0]["taxGroup"] = json!("Z")))
        .error(400, "9");
    s.post(&with(&|v| v["payment"][0]["name"] = json!("BITCOIN")))
        .error(400, "7");
    s.post(&with(&|v| v["mode"] = json!("net")))
        .error(400, "99");
    // Payments must add up to the total.
    s.post(&with(&|v| v["payment"][0]["amount"] = json!("100.00")))
        .error(400, "99");
    // A price the core refuses.
    s.post(&with(&|v| v["items"][0]["price"] = json!("-5")))
        .error(400, "99");
    // Missing members, wrong JSON types, not JSON at all, no body.
    s.post(&with(&|v| {
        v.as_object_mut().unwrap().remove("items");
    }))
    .error(400, "99");
    s.post(&json!([1, 2])).error(400, "99");
    let raw = |body: &'static str| {
        answer(
            s.http
                .post(format!("{}/api/invoice", s.base))
                .bearer_auth(&s.token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .unwrap(),
        )
    };
    raw("{not json").error(400, "99");
    raw("").error(400, "99");
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
                    let uid = s.create(&format!("t{t}:{i}"));
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
