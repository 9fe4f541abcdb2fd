//! End to end through a physical MCF: the real `bonopay mcf-sim` on a
//! pseudo-terminal, the real `bonopay serve` with an outlet in mode `mcf`
//! whose `mcf.path` is that terminal, sealing through the serial driver.
//! The answer and the receipt carry the device's elements under the DGI's
//! labels, the fiscal memory counts each sale once, and the exported
//! bundle verifies with the certification bound into the chain.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use bonopay_server_example::datadir::DataDir;
use common::*;
use serde_json::{Value, json};

struct McfSim {
    child: Child,
    path: String,
}

impl Drop for McfSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mcf_sim(memory: &std::path::Path, extra: &[&str]) -> McfSim {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .arg("mcf-sim")
        .arg("--memory")
        .arg(memory)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let path = line
        .split(" on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no path in {line:?}"))
        .trim()
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    McfSim { child, path }
}

/// A data directory whose outlet certifies through the device at `path`.
fn data_dir(root: &std::path::Path, path: &str, mode: &str) -> std::path::PathBuf {
    let data = root.join("data");
    DataDir::open_or_init(&data).unwrap();
    let file = data.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    config["merchants"][0]["outlets"] = json!([{
        "id": OUTLET_A, "certification": mode,
        "mcf": {"path": path, "read_timeout_ms": 2000}
    }]);
    std::fs::write(&file, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    data
}

fn memory_tc(memory: &std::path::Path) -> u64 {
    let m: Value = serde_json::from_str(&std::fs::read_to_string(memory).unwrap()).unwrap();
    m["tc"].as_u64().unwrap()
}

#[test]
fn sales_are_certified_by_the_device_over_its_tty_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let memory = dir.path().join("mcf-memory.json");
    // The device loses power after its first finalize, before answering:
    // the server must find that sale in the device's status, not send it
    // twice.
    let sim = start_mcf_sim(&memory, &["--power-cycle-after-finalize"]);
    assert!(sim.path.starts_with("/dev/"), "{}", sim.path);
    let data = data_dir(dir.path(), &sim.path, "mcf");
    let server = Server::start(&data, &[("BONOPAY_DGI_DEADLINE_MS", "15000")]);
    let key = server.owner(NIF_A);
    let http = reqwest::blocking::Client::new();
    let base = server.base.clone();

    let mut ids = Vec::new();
    for n in 0..3 {
        let r = http
            .post(format!("{base}/v1/invoices"))
            .bearer_auth(&key)
            .header("idempotency-key", format!("mcf-{n}"))
            .json(&example())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().unwrap();
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["certification"]["mode"], "mcf");
        assert_eq!(v["certification"]["state"], "certified", "{v}");
        let el = &v["security_elements"];
        assert_eq!(el["issuer"], "dgi");
        assert_eq!(el["fiscal_authority_id"], "DEF0100001");
        assert_eq!(el["fiscal_number"], format!("{}/{} FV", n + 1, n + 1));
        let code = el["authentication_code"].as_str().unwrap();
        assert_eq!(code.len(), 24);
        assert!(
            el["qr"]
                .as_str()
                .unwrap()
                .starts_with(&format!("RDCDEF01;DEF0100001;{code};{NIF_A};"))
        );
        assert_ne!(v["seal"]["authentication_code"], el["authentication_code"]);
        ids.push((v["id"].as_str().unwrap().to_owned(), code.to_owned()));
    }
    assert_eq!(memory_tc(&memory), 3, "each sale finalized once");

    // The receipt prints the device's elements under the DGI's labels.
    let (id, code) = &ids[0];
    let txt = http
        .get(format!("{base}/v1/invoices/{id}/receipt.txt"))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .text()
        .unwrap();
    for needle in [
        "CODE DEF/DGI",
        "DEF NID",
        "DEF0100001",
        code.as_str(),
        "1/1 FV",
    ] {
        assert!(txt.contains(needle), "{needle}:\n{txt}");
    }

    // The exported bundle verifies offline, certifications included.
    let bundle = http
        .get(format!("{base}/v1/outlets/{OUTLET_A}/export"))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let file = dir.path().join("bundle.jsonl");
    std::fs::write(&file, &bundle).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("VALID"), "{report}");
}

/// Mode `emcf+mcf` with the e-MCF down (its port refuses connections):
/// the sale does not wait as pending, the backup device certifies it in
/// the same request.
#[test]
fn with_the_emcf_down_the_backup_device_certifies_the_sale_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let memory = dir.path().join("mcf-memory.json");
    let sim = start_mcf_sim(&memory, &[]);
    let data = data_dir(dir.path(), &sim.path, "emcf+mcf");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = Server::start(
        &data,
        &[
            ("BONOPAY_DGI_URL", url.as_str()),
            ("BONOPAY_DGI_TOKEN", "token"),
            ("BONOPAY_DGI_DEADLINE_MS", "15000"),
        ],
    );
    let key = server.owner(NIF_A);
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/v1/invoices", server.base))
        .bearer_auth(&key)
        .header("idempotency-key", "backup-1")
        .json(&example())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap();
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["certification"]["mode"], "emcf+mcf");
    assert_eq!(v["certification"]["state"], "certified", "{v}");
    assert_eq!(v["security_elements"]["fiscal_authority_id"], "DEF0100001");
    assert_eq!(v["security_elements"]["fiscal_number"], "1/1 FV");
    assert_eq!(memory_tc(&memory), 1);
}
