//! The ApiKeyStore conformance suite on PostgreSQL, and what is
//! PostgreSQL's own: migrations, the pool, lost connections.
//!
//! Needs a PostgreSQL server: `postgres://postgres@127.0.0.1:5432/postgres`
//! by default, or the admin URL in `BONOPAY_TEST_PG`. Every store gets a
//! database of its own (`bonopay_t_<pid>_<nanos>_<n>`), dropped afterwards.
//! An unreachable server fails the tests: they never skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bonopay_server_example::server::auth::concurrent as auth_conformance;
use bonopay_server_example::server::auth::postgres::{PgKeyStore, SCHEMA_VERSION};
use bonopay_server_example::server::auth::{
    ApiKey, ApiKeyStore, AuthError, Outlet, Role, hash_token,
};
use postgres::{Client, NoTls};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("BONOPAY_TEST_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

fn admin() -> Client {
    let url = admin_url();
    Client::connect(&url, NoTls).unwrap_or_else(|e| {
        let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
        panic!(
            "PostgreSQL is not reachable at {url} ({e}{cause}). These tests need it: start \
             PostgreSQL, or set BONOPAY_TEST_PG to an admin URL (a role that may \
             CREATE DATABASE)."
        )
    })
}

/// `admin` with its database replaced by `db` (URL or key=value form).
fn with_dbname(admin: &str, db: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = admin.strip_prefix(scheme) {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            let query = tail.find('?').map_or("", |q| &tail[q..]);
            return format!("{scheme}{authority}/{db}{query}");
        }
    }
    format!("{admin} dbname={db}")
}

/// A database of its own, dropped (connections and all) on drop.
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "bonopay_t_{}_{nanos}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        admin()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let url = with_dbname(&admin_url(), &name);
        Self { name, url }
    }

    fn store(&self) -> PgKeyStore {
        PgKeyStore::connect(&self.url).unwrap()
    }
}

/// Connections of key stores (by application name) to database `db`.
fn store_connections(admin: &mut Client, db: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'bonopay-auth'",
            &[&db],
        )
        .unwrap()
        .get(0)
}

/// Waits (up to 5 s) until database `db` has no key-store connection:
/// backends exit a moment after their client closes.
fn assert_store_connections_close(admin: &mut Client, db: &str) {
    for _ in 0..250 {
        if store_connections(admin, db) == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("key-store connections left open after the store was dropped");
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let dropped = Client::connect(&admin_url(), NoTls).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

fn key(id: &str, merchant: &str) -> ApiKey {
    ApiKey {
        id: id.into(),
        merchant_nif: merchant.into(),
        role: Role::Cashier,
        outlets: Some(vec!["o1".into()]),
        label: Some("till".into()),
        created_at: "2026-01-01T00:00:00Z".into(),
        revoked: false,
    }
}

fn outlet(id: &str, merchant: &str) -> Outlet {
    Outlet {
        id: id.into(),
        merchant_nif: merchant.into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

#[test]
fn postgres_conforms() {
    let dbs = Mutex::new(Vec::new());
    auth_conformance::run_all(&|| {
        let db = TestDb::new();
        let store = Arc::new(db.store());
        dbs.lock().unwrap().push(db);
        store
    });
}

#[test]
fn postgres_shared_by_several_handles() {
    let db = TestDb::new();
    auth_conformance::shared_database(&|| Arc::new(db.store()));
}

#[test]
fn keys_revocations_and_outlets_survive_a_reconnect() {
    let db = TestDb::new();
    {
        let s = db.store();
        s.insert_key(&key("key_1", "A1"), &hash_token("t")).unwrap();
        s.insert_outlet(&outlet("o1", "A1")).unwrap();
        assert!(s.revoke_key("A1", "key_1").unwrap());
    }
    let s = db.store();
    let back = s.key_by_hash(&hash_token("t")).unwrap().unwrap();
    assert!(back.revoked);
    assert_eq!(back.outlets, Some(vec!["o1".to_owned()]));
    assert_eq!(s.outlet("o1").unwrap().unwrap().merchant_nif, "A1");
}

#[test]
fn processes_starting_together_migrate_once() {
    let db = TestDb::new();
    let url = Arc::new(db.url.clone());
    let start = Arc::new(std::sync::Barrier::new(8));
    let connects: Vec<_> = (0..8)
        .map(|_| {
            let (url, start) = (Arc::clone(&url), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                PgKeyStore::connect(&url).map(|s| s.schema_version())
            })
        })
        .collect();
    for c in connects {
        assert_eq!(c.join().unwrap().unwrap().unwrap(), SCHEMA_VERSION);
    }
    let mut c = Client::connect(&db.url, NoTls).unwrap();
    let versions: Vec<i32> = c
        .query(
            "SELECT version FROM auth_schema_version ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // Reconnecting applies nothing again, and keeps the data.
    let s = db.store();
    s.insert_outlet(&outlet("o1", "A1")).unwrap();
    drop(s);
    let s = db.store();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(s.outlet("o1").unwrap().is_some());
}

#[test]
fn a_schema_newer_than_this_build_is_refused() {
    let db = TestDb::new();
    drop(db.store());
    let mut c = Client::connect(&db.url, NoTls).unwrap();
    c.execute(
        "INSERT INTO auth_schema_version (version) VALUES ($1)",
        &[&(SCHEMA_VERSION + 1)],
    )
    .unwrap();
    match PgKeyStore::connect(&db.url) {
        Err(AuthError::Storage(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_pool_never_opens_more_than_its_size() {
    let db = TestDb::new();
    let s: Arc<dyn ApiKeyStore> = Arc::new(PgKeyStore::connect_with_pool_size(&db.url, 3).unwrap());
    for i in 0..16 {
        s.insert_key(&key(&format!("k{i}"), "A1"), &hash_token(&format!("t{i}")))
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let most = {
        let stop = Arc::clone(&stop);
        let mut admin = admin();
        let name = db.name.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(Ordering::SeqCst) {
                most = most.max(store_connections(&mut admin, &name));
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    let workers: Vec<_> = (0..12)
        .map(|w| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for n in 0..40 {
                    let i = (w + n) % 16;
                    let k = s.key_by_hash(&hash_token(&format!("t{i}"))).unwrap();
                    assert_eq!(k.unwrap().id, format!("k{i}"));
                }
                s.list_keys("A1").unwrap().len()
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), 16);
    }
    stop.store(true, Ordering::SeqCst);
    let most = most.join().unwrap();
    assert!(most <= 3, "{most} connections open at once, pool size 3");
    assert!(most >= 1);
    // Idle connections are kept for the next calls, not closed.
    let mut admin = admin();
    let idle = store_connections(&mut admin, &db.name);
    assert!((1..=3).contains(&idle), "{idle} idle connections");
    drop(s);
    assert_store_connections_close(&mut admin, &db.name);
}

#[test]
fn connections_killed_under_the_store_are_replaced_without_failing_a_call() {
    let db = TestDb::new();
    let s: Arc<dyn ApiKeyStore> = Arc::new(db.store());
    s.insert_key(&key("k1", "A1"), &hash_token("t1")).unwrap();
    // Open several connections, all idle afterwards.
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for _ in 0..20 {
                    s.key_by_hash(&hash_token("t1")).unwrap().unwrap();
                }
            })
        })
        .collect();
    for r in racers {
        r.join().unwrap();
    }
    let mut admin = admin();
    for round in 0..3 {
        // As a database restart or failover would.
        let killed: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'bonopay-auth'",
                &[&db.name],
            )
            .unwrap()
            .get(0);
        assert!(killed >= 1, "round {round}: nothing to kill");
        std::thread::sleep(Duration::from_millis(100));
        match round {
            0 => assert!(s.key_by_hash(&hash_token("t1")).unwrap().is_some()),
            1 => s.insert_outlet(&outlet("o1", "A1")).unwrap(),
            _ => s.insert_key(&key("k2", "A1"), &hash_token("t2")).unwrap(),
        }
    }
    assert!(s.revoke_key("A1", "k1").unwrap());
    assert_eq!(s.list_keys("A1").unwrap().len(), 2);
    assert_eq!(s.list_outlets("A1").unwrap().len(), 1);
}

#[test]
fn storage_errors_say_what_the_database_said() {
    let db = TestDb::new();
    let s = db.store();
    s.insert_key(&key("k1", "A1"), &hash_token("t1")).unwrap();
    match s.insert_key(&key("k1", "A1"), &hash_token("t2")) {
        Err(AuthError::Storage(msg)) => {
            assert!(msg.contains("duplicate key"), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[test]
fn an_unreachable_server_is_a_storage_error() {
    // Port 1 on loopback: nothing listens there.
    match PgKeyStore::connect("postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2") {
        Err(AuthError::Storage(msg)) => assert!(msg.contains("PostgreSQL"), "{msg}"),
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert!(matches!(
        PgKeyStore::connect("not a url ="),
        Err(AuthError::Storage(_))
    ));
}

#[test]
fn debug_output_hides_the_password() {
    let db = TestDb::new();
    // Trust authentication ignores the password, so it can be anything.
    let url = db.url.replacen("postgres@", "postgres:s3cr3t-pw@", 1);
    let s = PgKeyStore::connect(&url).unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("PgKeyStore"));
}

#[test]
fn dropping_the_store_inside_an_async_task_does_not_panic() {
    let db = TestDb::new();
    let s = db.store();
    s.insert_outlet(&outlet("o1", "A1")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    rt.block_on(async move {
        tokio::spawn(async move { drop(s) }).await.unwrap();
    });
    drop(rt);
    // The connections were closed on a helper thread.
    assert_store_connections_close(&mut admin(), &db.name);
}

#[test]
fn instances_bootstrapping_together_create_one_owner_key() {
    // Eight `bonopay serve` instances starting at once on an empty shared
    // database, released together by a barrier, five times over: one
    // bootstrap owner key each time, one registration per outlet.
    let merchants = bonopay_server_example::datadir::Config::dev_merchants();
    for _ in 0..5 {
        let db = TestDb::new();
        let gate = std::sync::Barrier::new(8);
        let created: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let store = db.store();
                    // Warm the connection so the race is on the inserts.
                    let _ = store.list_keys("warm-up");
                    let (merchants, gate) = (merchants.clone(), &gate);
                    s.spawn(move || {
                        gate.wait();
                        bonopay_server_example::cli::serve::bootstrap(&store, &merchants)
                            .unwrap()
                            .len()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(created, 1);
        let store = db.store();
        let nif = &merchants[0].nif;
        assert_eq!(store.list_keys(nif).unwrap().len(), 1);
        assert!(store.outlet(&merchants[0].outlets[0].id).unwrap().is_some());
    }
}

/// `bonopay keys` reaches a PostgreSQL deployment through `--database-url`
/// (no data directory needed): create, list, revoke, and the last owner
/// key is kept there too.
#[test]
fn keys_cli_on_postgres() {
    let db = TestDb::new();
    db.store().insert_outlet(&outlet("o1", "A1")).unwrap();
    let nowhere = tempfile::tempdir().unwrap();
    let keys = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bonopay"))
            .arg("keys")
            .args(args)
            .args(["--database-url", &db.url])
            .arg("--data-dir")
            .arg(nowhere.path().join("none"))
            .env_remove("BONOPAY_DATABASE_URL")
            .output()
            .unwrap()
    };
    let json = |out: &std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let owner = json(&keys(&["create", "--merchant", "A1", "--role", "owner"]));
    let token = owner["token"].as_str().unwrap();
    let stored = db.store().key_by_hash(&hash_token(token)).unwrap().unwrap();
    assert_eq!(stored.role, Role::Owner);
    assert_eq!(stored.merchant_nif, "A1");

    let cashier = json(&keys(&[
        "create",
        "--merchant",
        "A1",
        "--role",
        "cashier",
        "--outlet",
        "o1",
    ]));
    assert_eq!(cashier["key"]["outlets"], serde_json::json!(["o1"]));
    let foreign = keys(&[
        "create",
        "--merchant",
        "A1",
        "--role",
        "cashier",
        "--outlet",
        "o9",
    ]);
    assert_eq!(foreign.status.code(), Some(2), "o9 is not A1's outlet");

    let listed = json(&keys(&["list", "--merchant", "A1"]));
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);

    let owner_id = owner["key"]["id"].as_str().unwrap();
    let refused = keys(&["revoke", "--merchant", "A1", owner_id]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("last owner key"));
    let cashier_id = cashier["key"]["id"].as_str().unwrap();
    let revoked = json(&keys(&["revoke", "--merchant", "A1", cashier_id]));
    assert_eq!(revoked["revoked"], true);
    assert!(!nowhere.path().join("none").exists());
}
