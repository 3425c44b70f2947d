//! What the scenarios need beyond `tests/api`'s helpers: the real binary as a
//! child process (so it can be killed with SIGKILL and its trace log
//! captured), requests that may fail (a killed daemon answers nothing),
//! direct reads of the SQLite store, and the list of every configured secret.

use crate::api::{self, Env, Reply};
use mtd_sim::{airwatch, bcdm, soti, SimKind, SimOptions, Simulator};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mtd-connector")
}

/// Simulators of `kinds` with `devices` each and no BCDM rate limit (the
/// scenarios that want 429s inject them), in a fresh temp dir.
pub async fn env_without_rate_limits(kinds: &[SimKind], devices: usize) -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = SimOptions::new(kinds.to_vec(), devices, 7);
    options.bcdm.rate_limit_per_second = 0;
    let sim = Simulator::start(listener, options).expect("the simulators start");
    Env {
        dir: tempfile::tempdir().unwrap(),
        sim,
        initial_sync: None,
    }
}

/// Every secret value the scenarios configure: the agent secret and admin
/// token of `tests/api`'s configs and the simulators' credentials (the
/// BCDM access key, like a user name, identifies rather than authenticates).
pub fn configured_secrets() -> Vec<&'static str> {
    vec![
        api::AGENT_SECRET,
        api::ADMIN_TOKEN,
        soti::DEFAULT_CLIENT_SECRET,
        soti::DEFAULT_PASSWORD,
        airwatch::DEFAULT_PASSWORD,
        airwatch::DEFAULT_API_KEY,
        bcdm::DEFAULT_SECRET_KEY,
    ]
}

/// Fails if `text` contains any of `secrets`, naming the secret and showing
/// the line it is on (not the whole text: logs are long).
pub fn assert_no_secret(text: &str, what: &str, secrets: &[&str]) {
    for secret in secrets {
        if let Some(line) = text.lines().find(|l| l.contains(secret)) {
            panic!("{what} contains the secret value {secret:?}:\n{line}");
        }
    }
}

/// A running `mtd-connector --log-format json run --config FILE`.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    /// Every line of stderr (the JSON log) and stdout, as they arrive.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts the binary with `RUST_LOG=rust_log` and waits for the log line
    /// that carries the bound address (the configs listen on port 0).
    pub async fn start(config: &Path, rust_log: &str) -> Daemon {
        Self::start_with(config, rust_log, &[]).await
    }

    pub async fn start_with(config: &Path, rust_log: &str, envs: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(bin());
        command
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect(child.stderr.take().unwrap(), lines.clone());
        collect(child.stdout.take().unwrap(), lines.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let found = lines.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == "Serving the agent and admin API")
                    .then(|| v["addr"].as_str()?.parse::<SocketAddr>().ok())?
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the daemon exited ({status}) before serving:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not report its address:\n{}",
                lines.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Daemon { child, addr, lines }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The process id, to send other signals (SIGSTOP, SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as `kill -9` does, and reaps the process.
    pub fn kill9(&mut self) {
        // std's Child::kill sends SIGKILL on Unix.
        self.child.kill().expect("SIGKILL is delivered");
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
    }

    /// SIGTERM, then waits up to `limit` for the exit.
    pub async fn sigterm(&mut self, limit: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {limit:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        // The reader threads may still be draining the pipe after an exit.
        std::thread::sleep(Duration::from_millis(100));
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
}

/// POSTs `body` to `addr` with exactly `headers`; `Err` when no answer came
/// (a killed daemon) or none within 30 s (a hang is a failure the caller sees).
pub async fn try_post(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Reply, reqwest::Error> {
    let mut request = client
        .post(format!("http://{addr}{path}"))
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await?;
    Ok(Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await?,
    })
}

/// POSTs `body` signed with `secret` for `tenant`, now.
pub async fn post_signed_as(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    tenant: &str,
    secret: &str,
    body: &[u8],
) -> Reply {
    let headers = api::signed_headers(
        tenant,
        secret.as_bytes(),
        chrono::Utc::now().timestamp(),
        body,
    );
    try_post(client, addr, path, &headers, body.to_vec())
        .await
        .expect("the daemon answers")
}

/// A read-write pool on the store file, for a test that inspects the store
/// of a killed daemon (a read-only open could not recover its WAL).
pub async fn open_store(path: &Path) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", path.display());
    sqlx::SqlitePool::connect(&url).await.unwrap()
}

/// One text column of every row `sql` returns.
pub async fn strings(pool: &sqlx::SqlitePool, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(pool).await.unwrap()
}

/// One integer column of every row `sql` returns.
pub async fn ints(pool: &sqlx::SqlitePool, sql: &str) -> Vec<i64> {
    sqlx::query_scalar(sql).fetch_all(pool).await.unwrap()
}

/// Waits until `sql` (one integer) returns `want`, polling the store file.
pub async fn wait_scalar(path: &Path, sql: &str, want: i64, limit: Duration) {
    let pool = open_store(path).await;
    let deadline = Instant::now() + limit;
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        if n == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`{sql}` is {n}, not {want}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
}

/// Accepted (2xx) action calls the simulator of `kind` received, per vendor device id.
pub fn sim_actions_per_device(
    sim: &Simulator,
    kind: SimKind,
) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for a in sim.state(kind).unwrap().core().actions() {
        if (200..300).contains(&a.status) {
            let id = a.device_id.unwrap_or_else(|| a.device_ref.clone());
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

/// A device the scenarios send events for.
#[derive(Debug, Clone)]
pub struct Target {
    /// The store's device id.
    pub id: i64,
    pub kind: SimKind,
    /// The vendor's id, as the simulator records it on an action call.
    pub mdm_device_id: String,
    /// What the events name it by: a serial no other device shares.
    pub serial: String,
}

/// The synced devices an event can name unambiguously, by kind then id.
pub async fn targets(db: &Path) -> Vec<Target> {
    let pool = open_store(db).await;
    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT d.id, m.kind, d.mdm_device_id, d.serial FROM devices d
         JOIN mdm_integrations m ON m.id = d.mdm_id
         WHERE d.removed_at IS NULL AND d.collision = 0 AND d.serial IS NOT NULL
           AND d.serial NOT IN (SELECT serial FROM devices WHERE serial IS NOT NULL
                                GROUP BY serial HAVING COUNT(*) > 1)
         ORDER BY m.kind, d.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(id, kind, mdm_device_id, serial)| Target {
            id,
            kind: kind.parse().unwrap(),
            mdm_device_id,
            serial,
        })
        .collect()
}

/// One signed-event body naming a device by serial.
pub fn event_body(event_id: &str, serial: &str, threat: &str) -> Vec<u8> {
    serde_json::json!({
        "event_id": event_id,
        "detected_at": chrono::Utc::now().to_rfc3339(),
        "device": {"serial": serial},
        "threat": {"type": threat, "severity": "high", "name": threat},
        "network": {"ssid": "Office", "bssid": "aa:bb:cc:dd:ee:ff"},
        "details": {}
    })
    .to_string()
    .into_bytes()
}
