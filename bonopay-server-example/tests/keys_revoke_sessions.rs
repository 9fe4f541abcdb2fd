//! `bonopay keys revoke` (the operator's path, straight on the key store)
//! ends the revoked key's browser sessions: the session rows are deleted,
//! not only refused at the next request. Real binary, real `auth.db`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use bonopay_server_example::server::session::{
    COOKIE_NAME, SessionStore, SqliteSessionStore, hash_session_token,
};
use common::*;
use serde_json::{Value, json};

#[test]
fn the_operators_revoke_deletes_the_keys_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    let owner = server.owner(NIF_A);
    let http = reqwest::blocking::Client::new();
    let created: Value = http
        .post(format!("{}/v1/keys", server.base))
        .bearer_auth(&owner)
        .json(&json!({"role": "cashier", "outlets": [OUTLET_A], "label": "caisse 2"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap();
    let r = http
        .post(format!("{}/v1/session", server.base))
        .json(&json!({"api_key": token}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{COOKIE_NAME}=")))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    let hash = hash_session_token(&cookie);
    let store = SqliteSessionStore::open(&data.join("auth.db")).unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        store.get(&hash, now).unwrap().is_some(),
        "the session is stored"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .args(["keys", "revoke", "--data-dir"])
        .arg(&data)
        .args(["--merchant", NIF_A, &id])
        .env_remove("BONOPAY_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        store.get(&hash, now).unwrap().is_none(),
        "the revoked key's session row is gone"
    );
    let r = http
        .get(format!("{}/v1/session", server.base))
        .header("cookie", format!("{COOKIE_NAME}={cookie}"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
