//! Every offline command that reads or writes fiscal data (`seal`,
//! `ledger verify`, `report`, `export`, `keys`) on both ledgers: a SQLite
//! data directory, and a PostgreSQL deployment reached the three ways
//! `serve` reaches it (`--database-url`, `BONOPAY_DATABASE_URL`,
//! `database.url` in `config.json`). Real binary, real databases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use bonopay_ledger::TestDb;
use serde_json::Value;

/// How a command is pointed at the ledger.
#[derive(Debug, Clone, Copy)]
enum Via {
    Sqlite,
    Flag,
    Env,
    Config,
}

fn bonopay(data: &Path, url: Option<&str>, via: Via, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bonopay"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("BONOPAY_DATABASE_URL")
        .env_remove("BONOPAY_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match (via, url) {
        (Via::Flag, Some(u)) => {
            cmd.args(["--database-url", u]);
        }
        (Via::Env, Some(u)) => {
            cmd.env("BONOPAY_DATABASE_URL", u);
        }
        _ => {}
    }
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn invoice() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/invoice.json"
    ))
    .unwrap()
}

/// Seals two invoices, then verifies, reports, exports (and checks the
/// bundle offline) and lists keys, all through `via`.
fn run_all(via: Via) {
    let db = match via {
        Via::Sqlite => None,
        _ => Some(TestDb::create().unwrap()),
    };
    let url = db.as_ref().map(|d| d.url.as_str());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    if let (Via::Config, Some(u)) = (via, url) {
        // The operator's data directory names the database in config.json.
        std::fs::create_dir_all(&data).unwrap();
        let file = data.join("config.json");
        let mut c =
            serde_json::to_value(bonopay_server_example::datadir::Config::default()).unwrap();
        c["database"]["url"] = Value::String(u.to_owned());
        std::fs::write(&file, c.to_string()).unwrap();
    }
    let run = |args: &[&str], stdin: &str| bonopay(&data, url, via, args, stdin);

    let first: Value = serde_json::from_str(&ok(&run(&["seal"], &invoice()))).unwrap();
    let second: Value = serde_json::from_str(&ok(&run(
        &["seal", "--idempotency-key", "second"],
        &invoice(),
    )))
    .unwrap();
    assert_ne!(
        first["security_elements"]["authentication_code"],
        second["security_elements"]["authentication_code"],
        "{via:?}"
    );
    assert_eq!(second["seq"], 2, "{via:?}: {second}");
    if url.is_some() {
        assert!(
            !data.join("ledger.db").exists(),
            "{via:?}: sealed into SQLite instead of PostgreSQL"
        );
    }

    let report: Value = serde_json::from_str(&ok(&run(&["ledger", "verify"], ""))).unwrap();
    assert_eq!(report["valid"], true, "{via:?}: {report}");
    assert_eq!(
        report["outlets"][0]["entries_verified"], 2,
        "{via:?}: {report}"
    );

    let x: Value = serde_json::from_str(&ok(&run(
        &["report", "x", "--outlet", "kin-gombe-01", "--json"],
        "",
    )))
    .unwrap();
    assert!(
        x.to_string().contains("140560"),
        "{via:?}: two sales of 70280: {x}"
    );

    let bundle = dir.path().join("bundle.jsonl");
    ok(&run(
        &[
            "export",
            "--outlet",
            "kin-gombe-01",
            "--out",
            bundle.to_str().unwrap(),
        ],
        "",
    ));
    let verdict = Command::new(env!("CARGO_BIN_EXE_bonopay"))
        .arg("verify")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        verdict.status.success(),
        "{via:?}: {}",
        String::from_utf8_lossy(&verdict.stdout)
    );

    let created: Value = serde_json::from_str(&ok(&run(
        &[
            "keys",
            "create",
            "--merchant",
            "A1309334L",
            "--role",
            "auditor",
        ],
        "",
    )))
    .unwrap();
    assert!(
        created["token"].as_str().unwrap().starts_with("bp_live_"),
        "{created}"
    );
    let listed = ok(&run(&["keys", "list", "--merchant", "A1309334L"], ""));
    assert!(listed.contains("auditor"), "{via:?}: {listed}");
}

#[test]
fn every_command_on_a_sqlite_data_directory() {
    run_all(Via::Sqlite);
}

#[test]
fn every_command_on_postgresql_by_flag() {
    run_all(Via::Flag);
}

#[test]
fn every_command_on_postgresql_by_environment() {
    run_all(Via::Env);
}

#[test]
fn every_command_on_postgresql_by_config_json() {
    run_all(Via::Config);
}

/// Offline commands never create what they were pointed at by mistake.
#[test]
fn a_missing_ledger_is_an_error_not_an_empty_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("typo");
    let out = bonopay(&data, None, Via::Sqlite, &["ledger", "verify"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no data directory"));
    assert!(!data.exists(), "nothing created");
}
