//! Hardening of `bonopay serve` against clients without a key and against
//! tenants (issue 15), on the real binary over real sockets: slow clients
//! cannot exhaust the server, an announced oversize body is refused at
//! once, a tenant's outlet cannot keep the server from starting, and a
//! merchant cannot lock itself out (and an operator can let it back in).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{NIF_A, NIF_B, OUTLET_A, Server, invoice_for};
use serde_json::{Value, json};

fn write_config(dir: &Path, merchants: Value, limits: Value) {
    std::fs::create_dir_all(dir).unwrap();
    let config = json!({
        "nid": "BONOPAY-TEST-0001",
        "time_zone": "Africa/Kinshasa",
        "merchants": merchants,
        "limits": limits,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// A data directory whose config.json has merchant A with its outlet and
/// these `limits` (the directory lives as long as the returned guard).
fn merchant_a_with_limits(limits: Value) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    write_config(
        &dir,
        json!([{"nif": NIF_A, "outlets": [{"id": OUTLET_A}]}]),
        limits,
    );
    (tmp, dir)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

fn seal(server: &Server, token: &str, outlet: &str) -> reqwest::blocking::Response {
    client()
        .post(format!("{}/v1/invoices", server.base))
        .bearer_auth(token)
        .header(
            "Idempotency-Key",
            format!(
                "hardening-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ),
        )
        .json(&invoice_for(NIF_A, outlet))
        .send()
        .unwrap()
}

fn metric(server: &Server, name: &str) -> u64 {
    let text = client()
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// The server, with 256 file descriptors, faces 250 connections that sent
/// half a request line and 20 that sent headers and a trickle of body:
/// more than it has descriptors. `/healthz` and a real seal still answer,
/// and the slow connections are closed (evicted at the cap, or timed out).
#[test]
fn slow_clients_cannot_take_the_server_down() {
    let (_tmp, dir) =
        merchant_a_with_limits(json!({"header_timeout_secs": 3, "idle_timeout_secs": 5}));
    let server = Server::start_with_nofile(&dir, &[], Some(256));
    let owner = server.owner(NIF_A);
    let a = addr(&server);

    let mut slow = Vec::new();
    for _ in 0..250 {
        if let Ok(mut s) = TcpStream::connect(&a) {
            let _ = s.write_all(b"POST /v1/invoices HTTP/1.1\r\nHost: x\r\n");
            slow.push(s);
        }
    }
    for _ in 0..20 {
        if let Ok(mut s) = TcpStream::connect(&a) {
            let head = format!(
                "POST /v1/invoices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {owner}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"outlet"
            );
            let _ = s.write_all(head.as_bytes());
            slow.push(s);
        }
    }

    let health = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .expect("/healthz answers with the slow clients connected");
    assert_eq!(health.status(), 200);
    let sealed = seal(&server, &owner, OUTLET_A);
    assert_eq!(
        sealed.status(),
        201,
        "a legitimate seal goes through: {:?}",
        sealed.text()
    );
    assert!(
        metric(&server, "bonopay_connections_evicted_total") > 0,
        "the cap was reached and slow connections made room"
    );

    // The first slow client is gone: evicted, or closed at the header
    // timeout (3 s); the read bound is only there so a hang fails.
    let first = &mut slow[0];
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 256];
    match first.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "expected a close, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset,
            "a slow-header connection was still open after 20 s: {e}"
        ),
    }
}

/// A connection that never sends a request is closed at the idle timeout,
/// and one that sends part of its headers at the header timeout.
#[test]
fn idle_and_slow_header_connections_are_closed() {
    let (_tmp, dir) =
        merchant_a_with_limits(json!({"header_timeout_secs": 1, "idle_timeout_secs": 2}));
    let server = Server::start(&dir, &[]);
    let a = addr(&server);
    let idle = TcpStream::connect(&a).unwrap();
    let mut half = TcpStream::connect(&a).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
    for mut s in [idle, half] {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).expect("closed well before 20 s");
        assert_eq!(n, 0, "closed without an answer");
    }
    assert!(metric(&server, "bonopay_connections_timed_out_total") >= 2);
}

/// `Content-Length: 10000000000` is answered 413 before any body byte,
/// with or without a key (the request timeout is 30 s: a server that waits
/// for the body fails the 10 s read bound).
#[test]
fn announced_oversize_body_gets_413_at_once() {
    let (_tmp, dir) = merchant_a_with_limits(json!({}));
    let server = Server::start(&dir, &[]);
    let owner = server.owner(NIF_A);
    for auth in [String::new(), format!("Authorization: Bearer {owner}\r\n")] {
        let mut s = TcpStream::connect(addr(&server)).unwrap();
        s.write_all(
            format!(
                "POST /v1/invoices HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
                 Content-Length: 10000000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "no answer within 10 s ({e}); got {:?}",
                    String::from_utf8_lossy(&answer)
                ),
            }
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("payload_too_large"), "{text}");
    }
}

/// Merchant A registers `lubu-02` through the API; the operator then
/// names it for merchant B in config.json. The server still starts, for
/// both merchants; the conflict is in the log and in /healthz; the outlet
/// stays A's.
#[test]
fn config_conflict_with_a_registered_outlet_does_not_stop_the_server() {
    let (_tmp, dir) = merchant_a_with_limits(json!({}));
    let server = Server::start(&dir, &[]);
    let owner_a = server.owner(NIF_A);
    let r = client()
        .post(format!("{}/v1/outlets", server.base))
        .bearer_auth(&owner_a)
        .json(&json!({"id": "lubu-02"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text());
    assert!(server.terminate().success());

    write_config(
        &dir,
        json!([
            {"nif": NIF_A, "outlets": [{"id": OUTLET_A}]},
            {"nif": NIF_B, "outlets": [{"id": "lubu-02", "time_zone": "Africa/Lubumbashi"}, {"id": "b-01"}]}
        ]),
        json!({}),
    );
    let server = Server::start(&dir, &[]);
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("warning") && l.contains("lubu-02") && l.contains(NIF_B)),
        "the conflict is logged: {:?}",
        server.banner
    );
    let health: Value = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        health["config_conflicts"],
        json!([{"outlet": "lubu-02", "config_merchant": NIF_B}])
    );
    // A still seals on its outlet; B got its owner key and its other
    // outlet, but not A's.
    assert_eq!(seal(&server, &owner_a, "lubu-02").status(), 201);
    let owner_b = server.owner(NIF_B);
    let outlets: Value = client()
        .get(format!("{}/v1/outlets", server.base))
        .bearer_auth(&owner_b)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ids: Vec<&str> = outlets
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b-01"], "{outlets}");
}

fn keys_cmd(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .arg("keys")
        .args(args)
        .env_remove("BONOPAY_DATABASE_URL")
        .env_remove("BONOPAY_DATA_DIR")
        .output()
        .unwrap()
}

/// The API refuses to revoke a merchant's last owner key; with a second
/// owner key, the first can go. An operator recovers a merchant whose
/// owner keys were all revoked (by an older version, or directly in the
/// store after a leak) with `bonopay keys create`, while the server runs.
#[test]
fn last_owner_key_is_kept_and_an_operator_can_recover_a_merchant() {
    let (tmp, dir) = merchant_a_with_limits(json!({}));
    let server = Server::start(&dir, &[]);
    let owner = server.owner(NIF_A);
    let keys: Value = client()
        .get(format!("{}/v1/keys", server.base))
        .bearer_auth(&owner)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    let first = keys[0]["id"].as_str().unwrap().to_owned();
    let revoke = |token: &str, id: &str| {
        client()
            .delete(format!("{}/v1/keys/{id}", server.base))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    let r = revoke(&owner, &first);
    assert_eq!(r.status(), 409);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "last_owner_key", "{body}");

    let second: Value = client()
        .post(format!("{}/v1/keys", server.base))
        .bearer_auth(&owner)
        .json(&json!({"role": "owner", "label": "second"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let second_token = second["token"].as_str().unwrap().to_owned();
    let second_id = second["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(revoke(&owner, &first).status(), 200);
    assert_eq!(revoke(&second_token, &second_id).status(), 409);

    // A lockout as older versions allowed it: every owner key revoked in
    // the store itself.
    let auth = rusqlite::Connection::open(dir.join("auth.db")).unwrap();
    auth.execute("UPDATE api_keys SET revoked = 1", []).unwrap();
    assert_eq!(
        client()
            .get(format!("{}/v1/keys", server.base))
            .bearer_auth(&second_token)
            .send()
            .unwrap()
            .status(),
        401
    );

    let d = dir.to_str().unwrap();
    let unknown = keys_cmd(&[
        "create",
        "--data-dir",
        d,
        "--merchant",
        "Z9999999Z",
        "--role",
        "owner",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown merchant"));

    let created = keys_cmd(&[
        "create",
        "--data-dir",
        d,
        "--merchant",
        NIF_A,
        "--role",
        "owner",
    ]);
    common::assert_exit_ok(&created);
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let token = created["token"].as_str().unwrap();
    assert_eq!(created["key"]["role"], "owner");
    let listed = client()
        .get(format!("{}/v1/keys", server.base))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(listed.status(), 200, "the recovered key works at once");

    let list = keys_cmd(&["list", "--data-dir", d, "--merchant", NIF_A]);
    common::assert_exit_ok(&list);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["keys"].as_array().unwrap().len(), 3);
    assert!(
        !String::from_utf8_lossy(&serde_json::to_vec(&list).unwrap()).contains(token),
        "a list never shows a token"
    );
    let id = created["key"]["id"].as_str().unwrap();
    let refused = keys_cmd(&["revoke", "--data-dir", d, "--merchant", NIF_A, id]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("last owner key"));

    let missing = keys_cmd(&[
        "list",
        "--data-dir",
        tmp.path().join("nowhere").to_str().unwrap(),
        "--merchant",
        NIF_A,
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        !tmp.path().join("nowhere").exists(),
        "a wrong --data-dir creates nothing"
    );
}
