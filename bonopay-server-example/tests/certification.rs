//! End to end: the real `bonopay serve` certifying through the e-MCF
//! simulator (`BONOPAY_DGI_URL`). The security elements on the answer and
//! on every receipt are the simulator's, bound into the ledger where the
//! verifier checks them; with the e-MCF down the sale is pending and its
//! ticket says so; when it comes back the invoice is certified, the
//! webhook fires, reprints are duplicates, and the receipt delivery that
//! was waiting sends the certified invoice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bonopay_server_example::server::receipt::DGI_ONLY_MARKS;
use bonopay_sync::sim::{SimConfig, Simulator, SystemClock};
use common::*;
use serde_json::{Value, json};

type Got = Arc<Mutex<Vec<Value>>>;

/// An HTTP receiver on loopback that records the JSON bodies posted to it
/// (the webhook and the WhatsApp-style messaging API alike).
fn receiver(rt: &tokio::runtime::Runtime) -> (String, Got) {
    let got: Got = Arc::default();
    let app = {
        let got = Arc::clone(&got);
        axum::Router::new().route(
            "/{*path}",
            axum::routing::post(move |body: axum::body::Bytes| {
                let got = Arc::clone(&got);
                async move {
                    got.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    axum::Json(json!({"id": "msg-1"}))
                }
            }),
        )
    };
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    rt.spawn(async move { axum::serve(l, app).await });
    (base, got)
}

/// Serves `sim` on `addr` until the returned sender is dropped.
fn serve_sim(
    rt: &tokio::runtime::Runtime,
    sim: &Arc<Simulator>,
    addr: std::net::SocketAddr,
) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    let sim = Arc::clone(sim);
    rt.spawn(sim.serve_with_shutdown(listener, async move {
        let _ = rx.await;
    }));
    tx
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    // A liveness bound, not a performance assertion.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn invoices_carry_the_emcfs_elements_and_wait_for_it_when_it_is_down() {
    let rt = runtime();
    let sim = Simulator::new(SimConfig::default(), Arc::new(SystemClock));
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sim_addr = probe.local_addr().unwrap();
    drop(probe);
    let mut sim_up = Some(serve_sim(&rt, &sim, sim_addr));
    let (hooks, got) = receiver(&rt);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = sim.issue_token(3600);
    let sim_url = format!("http://{sim_addr}");
    let whatsapp = format!("{hooks}/v1/messages");
    let env = [
        ("BONOPAY_DGI_URL", sim_url.as_str()),
        ("BONOPAY_DGI_TOKEN", token.as_str()),
        ("BONOPAY_DGI_DEADLINE_MS", "5000"),
        ("BONOPAY_WHATSAPP_URL", whatsapp.as_str()),
        ("BONOPAY_WHATSAPP_TOKEN", "wa-token"),
        // The webhook and messaging receivers listen on loopback.
        ("BONOPAY_EGRESS_ALLOW", "127.0.0.1"),
    ];
    let server = Server::start(&data, &env);
    let key = server.owner(NIF_A);
    let http = reqwest::blocking::Client::new();
    let base = server.base.clone();
    let get = |path: &str| {
        http.get(format!("{base}{path}"))
            .bearer_auth(&key)
            .send()
            .unwrap()
    };
    let hook: Value = http
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": format!("{hooks}/hook"), "events": ["invoice.certified"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(hook["secret"].is_string(), "{hook}");
    let post = |idem: &str| {
        let r = http
            .post(format!("{base}/v1/invoices"))
            .bearer_auth(&key)
            .header("idempotency-key", idem)
            .json(&example())
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };

    // --- 1. Online: the answer's elements are the e-MCF's. ---------------
    let (status, v) = post("cert-1");
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["certification"]["state"], "certified", "{v}");
    assert_eq!(v["certification"]["mode"], "emcf");
    let confirm = sim.confirms().pop().unwrap();
    let dgi = confirm.elements();
    let el = &v["security_elements"];
    assert_eq!(el["issuer"], "dgi");
    assert_eq!(el["authentication_code"], dgi.code_def_dgi);
    assert_eq!(el["fiscal_authority_id"], dgi.nim);
    assert_eq!(el["fiscal_number"], dgi.counters);
    assert_eq!(el["timestamp"], dgi.date_time);
    assert_eq!(el["qr"], dgi.qr_code);
    assert_eq!(confirm.rn, v["certification"]["rn"]);
    // Bono Pay's own seal is there too, under its own name.
    assert_ne!(v["seal"]["authentication_code"], el["authentication_code"]);
    let id = v["id"].as_str().unwrap().to_owned();

    // The receipts show exactly those elements, under the DGI's labels.
    let txt = get(&format!("/v1/invoices/{id}/receipt.txt"))
        .text()
        .unwrap();
    for (label, value) in [
        ("CODE DEF/DGI", dgi.code_def_dgi.as_str()),
        ("DEF NID", dgi.nim.as_str()),
        ("DEF Compteurs", dgi.counters.as_str()),
        ("DEF Heure", dgi.date_time.as_str()),
    ] {
        assert!(txt.contains(label), "{label}:\n{txt}");
        assert!(txt.contains(value), "{value}:\n{txt}");
    }
    assert!(txt.replace('\n', "").contains(&dgi.qr_code), "{txt}");
    assert!(txt.contains("FACTURE NORMALISEE"), "{txt}");
    assert!(
        !txt.contains("DUPLICATA"),
        "the first print is the original:\n{txt}"
    );
    let pdf = get(&format!("/v1/invoices/{id}/receipt.pdf?format=80mm"))
        .bytes()
        .unwrap();
    let pdf_text = String::from_utf8_lossy(&pdf);
    assert!(pdf_text.contains(&dgi.code_def_dgi) && pdf_text.contains(&dgi.nim));
    assert!(
        pdf_text.contains("DUPLICATA"),
        "the second print is a duplicate"
    );
    let svg = get(&format!("/v1/invoices/{id}/receipt.svg"))
        .text()
        .unwrap();
    let expected_svg = bonopay_signer::qr_svg(&dgi.qr_code).unwrap();
    assert_eq!(svg, expected_svg, "the SVG draws the DGI's QR, as returned");
    // Found by the code the DGI printed.
    let found: Value = get(&format!(
        "/v1/invoices/lookup?dgi_code={}",
        dgi.code_def_dgi
    ))
    .json()
    .unwrap();
    assert_eq!(found["id"], id.as_str());
    // The public verifier accepts the DGI's QR for this invoice.
    let verdict: Value = http
        .get(format!("{base}/v1/verify"))
        .query(&[("qr", dgi.qr_code.as_str())])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["format"], "dgi");

    // --- 2. The e-MCF is down: pending, and the ticket says so. ----------
    drop(sim_up.take());
    std::thread::sleep(Duration::from_millis(200));
    let (status, p) = post("cert-2");
    assert_eq!(status, 202, "{p}");
    assert_eq!(p["certification"]["state"], "pending", "{p}");
    assert!(p["security_elements"].is_null(), "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    let ticket = get(&format!("/v1/invoices/{pid}/receipt.txt"))
        .text()
        .unwrap();
    assert!(ticket.contains("TICKET PROVISOIRE"), "{ticket}");
    assert!(
        ticket.contains("PAS ENCORE UNE FACTURE NORMALISEE"),
        "{ticket}"
    );
    assert!(
        !ticket.contains("unreachable") && !ticket.contains(&sim_url),
        "no transport detail on a customer's ticket:\n{ticket}"
    );
    for mark in DGI_ONLY_MARKS {
        assert!(
            !ticket.contains(mark),
            "`{mark}` on a pending ticket:\n{ticket}"
        );
    }
    // A delivery asked for now waits for the certification.
    let r = http
        .post(format!("{base}/v1/invoices/{pid}/deliveries"))
        .bearer_auth(&key)
        .json(&json!({"channel": "whatsapp", "to": "+243812345678"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().unwrap());
    let waiting: Value = r.json().unwrap();
    assert_eq!(waiting["status"], "waiting");
    let messages = || {
        got.lock()
            .unwrap()
            .iter()
            .filter(|m| m.get("document_base64").is_some())
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        messages().is_empty(),
        "nothing sent before the certification"
    );

    // --- 3. The e-MCF is back: certified later, webhook, duplicata, the
    // waiting delivery sends the certified invoice. ------------------------
    sim_up = Some(serve_sim(&rt, &sim, sim_addr));
    wait_for("the pending invoice to be certified", || {
        let v: Value = get(&format!("/v1/invoices/{pid}")).json().unwrap();
        v["certification"]["state"] == "certified"
    });
    let v: Value = get(&format!("/v1/invoices/{pid}")).json().unwrap();
    let dgi2 = sim
        .confirms()
        .into_iter()
        .find(|c| c.rn == v["certification"]["rn"])
        .unwrap()
        .elements();
    assert_eq!(
        v["security_elements"]["authentication_code"],
        dgi2.code_def_dgi
    );
    wait_for("the invoice.certified webhook", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|m| m["type"] == "invoice.certified" && m["data"]["id"] == pid.as_str())
    });
    let first = get(&format!("/v1/invoices/{pid}/receipt.txt"))
        .text()
        .unwrap();
    let reprint = get(&format!("/v1/invoices/{pid}/receipt.txt"))
        .text()
        .unwrap();
    for r in [&first, &reprint] {
        assert!(r.contains(&dgi2.code_def_dgi), "{r}");
        assert!(r.contains("CODE DEF/DGI"), "{r}");
    }
    assert!(reprint.contains("DUPLICATA"), "{reprint}");
    wait_for("the waiting delivery to be sent", || !messages().is_empty());
    let sent = messages();
    assert_eq!(sent.len(), 1, "sent once");
    let doc = base64::engine::general_purpose::STANDARD
        .decode(sent[0]["document_base64"].as_str().unwrap())
        .unwrap();
    let doc_text = String::from_utf8_lossy(&doc);
    assert!(
        doc_text.contains(&dgi2.code_def_dgi),
        "the certified invoice is sent"
    );
    assert!(!doc_text.contains("TICKET PROVISOIRE"));
    let log: Value = get(&format!("/v1/invoices/{pid}/deliveries"))
        .json()
        .unwrap();
    let whatsapp_log: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["channel"] == "whatsapp")
        .collect();
    assert_eq!(whatsapp_log.len(), 1, "{log}");
    assert_eq!(whatsapp_log[0]["status"], "sent", "{log}");
    assert!(sim.double_confirms().is_empty());
    drop(sim_up);
    drop(server);

    // --- 4. The verifier accepts the ledger, and refuses it once a DGI
    // element in it is altered. --------------------------------------------
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bonopay"))
            .args(["ledger", "verify", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap()
    };
    let ok = verify();
    assert_exit_ok(&ok);
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    let (rowid, payload): (i64, Vec<u8>) = db
        .query_row(
            "SELECT rowid, payload FROM entries WHERE instr(payload, ?1) > 0 LIMIT 1",
            [format!("\"codeDEFDGI\":\"{}\"", dgi.code_def_dgi)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut altered = String::from_utf8(payload).unwrap();
    let last = dgi.code_def_dgi.chars().last().unwrap();
    let other = if last == 'A' { 'B' } else { 'A' };
    let mut code = dgi.code_def_dgi.clone();
    code.pop();
    code.push(other);
    altered = altered.replace(&dgi.code_def_dgi, &code);
    db.execute(
        "UPDATE entries SET payload = ?1 WHERE rowid = ?2",
        rusqlite::params![altered.into_bytes(), rowid],
    )
    .unwrap();
    let bad = verify();
    assert!(!bad.status.success(), "an altered DGI code must not verify");
    let said =
        String::from_utf8_lossy(&bad.stdout).to_string() + &String::from_utf8_lossy(&bad.stderr);
    assert!(
        said.contains("altered") || said.contains("certification"),
        "{said}"
    );
}
