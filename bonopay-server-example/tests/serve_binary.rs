//! The real `bonopay serve` binary over loopback: fiscalizing, an
//! idempotent replay (also across a restart), cross-tenant attempts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn write_config(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let config = json!({
        "nid": "NID-BIN-01",
        "time_zone": "Africa/Kinshasa",
        "merchants": [
            {"nif": NIF_A, "name": "Kin Alimentation", "outlets": [{"id": OUTLET_A}]},
            {"nif": NIF_B, "outlets": [{"id": OUTLET_B, "time_zone": "Africa/Lubumbashi"}]}
        ]
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

async fn post(
    client: &reqwest::Client,
    s: &Server,
    key: &str,
    idem: &str,
    body: &Value,
) -> (StatusCode, String) {
    let r = client
        .post(format!("{}/v1/invoices", s.base))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn get(client: &reqwest::Client, s: &Server, key: &str, path: &str) -> (StatusCode, String) {
    let r = client
        .get(format!("{}{path}", s.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn serve_fiscalizes_replays_and_isolates_merchants_over_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_config(&data);
    let client = reqwest::Client::new();

    let server = Server::start(&data, &[]);
    assert!(
        server.banner[0].contains(&data.display().to_string()),
        "{:?}",
        server.banner
    );
    assert!(server.banner[0].contains("(created)"));
    assert_eq!(server.owner_keys.len(), 2, "{:?}", server.banner);
    let a = server.owner(NIF_A);
    let b = server.owner(NIF_B);
    assert!(a.starts_with("bp_live_") && b.starts_with("bp_live_") && a != b);

    let (status, first) = post(&client, &server, &a, "bin-1", &example()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["security_elements"]["fiscal_number"], "1/1 FV");
    assert_eq!(v["security_elements"]["fiscal_authority_id"], "NID-BIN-01");
    let (status, again) = post(&client, &server, &a, "bin-1", &example()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);

    // Merchant B: A's invoice does not exist for it, in reads and writes.
    let (status, body) = get(&client, &server, &b, "/v1/invoices/kin-gombe-01:1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = post(&client, &server, &b, "bin-2", &example()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&client, &server, &b, "bin-3", &invoice_for(NIF_B, OUTLET_A)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // B's own outlet, in its own time zone.
    let (status, body) = post(&client, &server, &b, "bin-4", &invoice_for(NIF_B, OUTLET_B)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let vb: Value = serde_json::from_str(&body).unwrap();
    assert!(
        vb["security_elements"]["timestamp"]
            .as_str()
            .unwrap()
            .ends_with("+02:00")
    );
    let (status, _) = get(
        &client,
        &server,
        "bp_live_forged",
        "/v1/invoices/kin-gombe-01:1",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Restart on the same directory: no new key is printed, the old ones
    // work, and the idempotency key still replays the original seal.
    // SIGTERM: a graceful stop, exit code 0.
    assert!(server.terminate().success());
    // The printed tokens are nowhere in the data directory (hashes only).
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for token in [&a, &b] {
                assert!(
                    !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                    "{} holds a token",
                    path.display()
                );
            }
        }
    }
    let server = Server::start(&data, &[]);
    assert!(server.owner_keys.is_empty(), "{:?}", server.banner);
    assert!(server.banner[0].contains("(existing)"));
    let (status, replay) = post(&client, &server, &a, "bin-1", &example()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay, first);
    let (status, body) = get(&client, &server, &a, "/v1/outlets/kin-gombe-01/invoices").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, metrics) = get(&client, &server, &a, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("bonopay_invoices_replayed_total 1"),
        "{metrics}"
    );
}

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A data directory moves from its software key to a key on a SoftHSM2
/// token (configured through the environment only): old invoices still
/// read and verify. Then removing the token while the server runs turns
/// sealing into a retryable 503 that consumes no number.
#[tokio::test]
async fn serve_with_a_pkcs11_token_that_is_removed_answers_503() {
    assert!(
        std::path::Path::new(SOFTHSM_MODULE).exists(),
        "SoftHSM2 not installed: scripts/test installs the softhsm2 package"
    );
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = tmp.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    let softhsm = |args: &[&str]| {
        let out = std::process::Command::new("softhsm2-util")
            .args(args)
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util (package softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    softhsm(&[
        "--init-token",
        "--free",
        "--label",
        "bono-srv",
        "--so-pin",
        "12345678",
        "--pin",
        "4321",
    ]);
    // Import a fresh P-256 key (PKCS#8) as the token's signing key.
    let key = bonopay_signer::SoftwareSigner::generate().unwrap();
    let pem = tmp.path().join("seal.pem");
    key.save(&pem).unwrap();
    softhsm(&[
        "--import",
        pem.to_str().unwrap(),
        "--token",
        "bono-srv",
        "--label",
        "seal",
        "--id",
        "01",
        "--pin",
        "4321",
    ]);
    std::fs::remove_file(&pem).unwrap();

    // First on the default software key: one invoice.
    let data = tmp.path().join("data");
    let client = reqwest::Client::new();
    let software = Server::start(&data, &[]);
    let owner = software.owner(NIF_A);
    let (status, body) = post(&client, &software, &owner, "sw-1", &example()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let old_key = serde_json::from_str::<Value>(&body).unwrap()["key_id"].clone();
    drop(software);

    // Then the same directory with the token's key (a key rotation).
    let env = [
        ("SOFTHSM2_CONF", conf.to_str().unwrap()),
        ("BONOPAY_PKCS11_MODULE", SOFTHSM_MODULE),
        ("BONOPAY_PKCS11_TOKEN", "bono-srv"),
        ("BONOPAY_PKCS11_KEY", "seal"),
        ("BONOPAY_PKCS11_PIN", "4321"),
    ];
    let server = Server::start(&data, &env);
    use bonopay_signer::Signer as _;
    assert!(
        server.banner[0].contains(key.key_id()),
        "the server signs with the token's key: {:?}",
        server.banner
    );
    let (status, body) = post(&client, &server, &owner, "hsm-1", &example()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["key_id"], key.key_id());
    assert_eq!(v["security_elements"]["fiscal_number"], "2/2 FV");
    // The invoice signed before the rotation still reads and verifies.
    let (status, body) = get(&client, &server, &owner, "/v1/invoices/kin-gombe-01:1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["key_id"],
        old_key
    );
    // And the whole chain verifies, both keys' signatures included.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .args(["ledger", "verify", "--data-dir"])
        .arg(&data)
        .envs(env)
        .output()
        .unwrap();
    assert_exit_ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outlets"][0]["entries_verified"], 2);

    // Pull the token out.
    for entry in std::fs::read_dir(&tokens).unwrap() {
        std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    let r = client
        .post(format!("{}/v1/invoices", server.base))
        .bearer_auth(&owner)
        .header("Idempotency-Key", "hsm-2")
        .json(&example())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "5");
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "signer_unavailable");
    // Nothing was sealed; reads (which need no signer) still work.
    let (status, body) = get(
        &client,
        &server,
        &owner,
        "/v1/outlets/kin-gombe-01/invoices",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (_, metrics) = get(&client, &server, &owner, "/metrics").await;
    assert!(
        metrics.contains("bonopay_signer_errors_total 1"),
        "{metrics}"
    );
}
