//! `bonopay dgi-sim` as a process: it prints its URL and a token, and the
//! token opens the e-MCF API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the simulator even when an assertion fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dgi_sim_prints_url_and_token_that_work() {
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_bonopay"))
            .args([
                "dgi-sim",
                "--listen",
                "127.0.0.1:0",
                "--nim",
                "NIM-CLI-01",
                "--nif",
                "A1309334L",
            ])
            .env_remove("BONOPAY_DGI_SIM_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut url = None;
    let mut token = None;
    while url.is_none() || token.is_none() {
        let line = lines.next().expect("dgi-sim exited early").unwrap();
        if let Some(u) = line.strip_prefix("bonopay dgi-sim: listening on ") {
            url = Some(u.trim().to_owned());
        } else if line.starts_with("bonopay dgi-sim: bearer token for NIF A1309334L") {
            token = Some(line.rsplit(' ').next().unwrap().to_owned());
        }
    }
    let (url, token) = (url.unwrap(), token.unwrap());
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/api"),
        "{url}"
    );

    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = http
        .get(format!("{url}/invoice"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["nim"], "NIM-CLI-01");
    assert_eq!(v["nif"], "A1309334L");
    assert_eq!(v["pendingRequestsCount"], 0);

    let r = http.get(format!("{url}/invoice")).send().unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
}
