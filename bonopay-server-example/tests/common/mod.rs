//! Shared helpers of the server tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]

use serde_json::Value;

pub const NIF_A: &str = "A1309334L";
pub const NIF_B: &str = "B0000001X";
pub const OUTLET_A: &str = "kin-gombe-01";
pub const OUTLET_A2: &str = "kin-limete-02";
pub const OUTLET_B: &str = "lub-01";

/// The egress policy of the test servers: the public internet and
/// 127.0.0.1, where the tests' receivers listen (as an operator allows an
/// on-premise receiver with `"egress": {"allow": ["127.0.0.1"]}`).
pub fn loopback_egress() -> bonopay_server_example::server::egress::Egress {
    bonopay_server_example::server::egress::EgressPolicy::allowing(["127.0.0.1"])
        .unwrap()
        .into()
}

/// `examples/invoice.json` (merchant A, outlet kin-gombe-01).
pub fn example() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/invoice.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

/// The example for another merchant and outlet.
pub fn invoice_for(nif: &str, outlet: &str) -> Value {
    let mut v = example();
    v["merchant_nif"] = nif.into();
    v["outlet_id"] = outlet.into();
    v
}

/// A running `bonopay serve` child process, killed (and reaped) on drop.
pub struct Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Owner keys printed at start, as (merchant NIF, token).
    pub owner_keys: Vec<(String, String)>,
    /// Every line printed before "listening on".
    pub banner: Vec<String>,
}

impl Server {
    /// Starts `bonopay serve --data-dir DIR --listen 127.0.0.1:0` and waits
    /// for it to print its address. Port 0 lets the kernel pick a free port
    /// with no race; the server prints the one it got.
    pub fn start(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
        Self::start_with_nofile(data_dir, env, None)
    }

    /// [`Server::start`] with the process's file-descriptor limit (soft and
    /// hard) set to `nofile`, as a small VPS or a container might have it.
    #[allow(dead_code)]
    pub fn start_with_nofile(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> Server {
        use std::io::BufRead;
        let mut cmd = match nofile {
            None => std::process::Command::new(env!("CARGO_BIN_EXE_bonopay")),
            Some(n) => {
                let mut c = std::process::Command::new("sh");
                c.args([
                    "-c",
                    &format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_bonopay"),
                ]);
                c
            }
        };
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("BONOPAY_LISTEN")
            .env_remove("BONOPAY_DATA_DIR")
            // A pipe that stays open: `serve` must not wait for stdin.
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        // Watchdog: a server that never listens (say, one waiting on
        // stdin) is killed after a minute, which fails the start below.
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let ready = std::sync::Arc::clone(&ready);
            let pid = child.id().to_string();
            std::thread::spawn(move || {
                for _ in 0..600 {
                    if ready.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .status();
            });
        }
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let mut owner_keys = Vec::new();
        let base = loop {
            let Some(Ok(line)) = lines.next() else {
                // Stand the watchdog down before the pid can be reused.
                ready.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = child.kill();
                let _ = child.wait();
                panic!("bonopay serve exited (or was killed) before listening; printed {banner:?}");
            };
            if let Some(addr) = line.strip_prefix("bonopay: listening on ") {
                ready.store(true, std::sync::atomic::Ordering::SeqCst);
                break addr.trim().to_owned();
            }
            if let Some(rest) = line.strip_prefix("bonopay: owner API key for merchant ") {
                let nif = rest.split_whitespace().next().unwrap().to_owned();
                let token = rest.split_whitespace().last().unwrap().to_owned();
                owner_keys.push((nif, token));
            }
            banner.push(line);
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            owner_keys,
            banner,
        }
    }

    /// The owner key printed for `nif`.
    pub fn owner(&self, nif: &str) -> String {
        self.owner_keys
            .iter()
            .find(|(n, _)| n == nif)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("no owner key printed for {nif}: {:?}", self.banner))
    }

    /// Sends SIGTERM and waits for the exit status (graceful shutdown).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request through the router in process, with a bearer key and an
/// optional JSON body; the status and the JSON answer (or null).
pub async fn call_router(
    router: &axum::Router,
    method: axum::http::Method,
    uri: &str,
    key: &str,
    body: Option<Value>,
) -> (axum::http::StatusCode, Value) {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(axum::body::Body::empty, |b| {
            axum::body::Body::from(serde_json::to_vec(&b).unwrap())
        }))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(router.clone(), req)
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Asserts that a command exited 0, showing what it printed if not.
pub fn assert_exit_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A two-thread runtime with the e-MCF simulator on a loopback port: the
/// simulator and its base URL.
#[allow(dead_code)]
pub fn sim_on_loopback(
    rt: &tokio::runtime::Runtime,
) -> (std::sync::Arc<bonopay_sync::sim::Simulator>, String) {
    let sim = bonopay_sync::sim::Simulator::new(
        bonopay_sync::sim::SimConfig::default(),
        std::sync::Arc::new(bonopay_sync::sim::SystemClock),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(std::sync::Arc::clone(&sim).serve(listener));
    (sim, url)
}

/// Copies the signing key files of data directory `from` into each of
/// `to`: several instances over one database sign with one key (in
/// production, one HSM key).
#[allow(dead_code)]
pub fn share_keys(from: &std::path::Path, to: &[std::path::PathBuf]) {
    for dir in to {
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        for f in std::fs::read_dir(from.join("keys")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dir.join("keys").join(f.file_name())).unwrap();
        }
    }
}

/// The tests' runtime for servers they run in-process (the simulator,
/// receivers).
#[allow(dead_code)]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
