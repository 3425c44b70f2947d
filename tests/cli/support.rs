//! Helpers: the binary, temporary configs with known secrets, a running daemon.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mtd-connector")
}

/// Secret values planted in test configs; none may ever be printed.
pub const AGENT_SECRET: &str = "agent-secret-9f8e7d6c5b4a";
pub const ENV_PASSWORD: &str = "env-password-1a2b3c4d5e6f";
pub const FILE_SECRET: &str = "file-secret-0a9b8c7d6e5f";
pub const ADMIN_TOKEN: &str = "admin-token-77aa88bb99cc";
pub const PASSWORD_ENV_VAR: &str = "MTD_TEST_SOTI_PASSWORD";

/// A main file and one tenant in a temp dir, secrets in all three forms.
pub fn write_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("tenants.d")).unwrap();
    std::fs::write(dir.join("client-secret.txt"), format!("{FILE_SECRET}\n")).unwrap();
    let main = dir.join("connector.toml");
    std::fs::write(
        &main,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
[store]
path = "state/connector.db"
[admin]
token = "{ADMIN_TOKEN}"
[tenants]
dir = "tenants.d"
[sync]
full_sync_every = "0"
initial_sync = false
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("tenants.d/acme.toml"),
        format!(
            r#"id = "acme"
display_name = "Acme Corp"
agent_secret = "{AGENT_SECRET}"

[[mdm]]
name = "Acme SOTI"
kind = "soti"
url = "https://127.0.0.1:9/MobiControl"
background_sync = false
[mdm.credentials]
client_id = "mtd-client"
client_secret = {{ file = "../client-secret.txt" }}
username = "mtd-api"
password = {{ env = "{PASSWORD_ENV_VAR}" }}

[policy]
mode = "monitor"
[[policy.rule]]
threat = "device.*"
action = "lock"
"#
        ),
    )
    .unwrap();
    main
}

pub fn assert_no_secret(text: &str, what: &str) {
    for s in [AGENT_SECRET, ENV_PASSWORD, FILE_SECRET, ADMIN_TOKEN] {
        assert!(!text.contains(s), "{what} contains a secret value:\n{text}");
    }
}

/// A running `mtd-connector run`, with its stderr (JSON logs) collected.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

/// How [`Daemon::start_with`] starts the binary.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub rust_log: &'static str,
    /// `ulimit -n` for the daemon (soft and hard), through `sh`.
    pub nofile: Option<u32>,
    /// The umask the daemon starts with, through `sh`.
    pub umask: Option<u32>,
    /// More environment variables for the daemon.
    pub env: Vec<(&'static str, std::ffi::OsString)>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            rust_log: "trace",
            nofile: None,
            umask: None,
            env: Vec::new(),
        }
    }
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Self::start_with(config, &StartOptions::default())
    }

    pub fn start_with(config: &Path, options: &StartOptions) -> Daemon {
        let mut command = if options.nofile.is_some() || options.umask.is_some() {
            let mut script = String::new();
            if let Some(n) = options.nofile {
                script.push_str(&format!("ulimit -n {n} && "));
            }
            if let Some(m) = options.umask {
                script.push_str(&format!("umask {m:03o} && "));
            }
            script.push_str("exec \"$0\" \"$@\"");
            let mut c = Command::new("sh");
            c.arg("-c").arg(script).arg(bin());
            c
        } else {
            Command::new(bin())
        };
        let mut child = command
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .env(PASSWORD_ENV_VAR, ENV_PASSWORD)
            .env("RUST_LOG", options.rust_log)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon {
            child,
            addr: String::new(),
            lines,
            log: Vec::new(),
        };
        // Wait for the "Serving" log line that carries the bound address (port 0 in the config).
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.addr.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = d.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "the daemon did not report its address; log so far:\n{}",
                    d.log.join("\n")
                )
            });
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "Serving the agent and admin API" {
                    d.addr = v["addr"].as_str().unwrap().to_string();
                }
            }
            d.log.push(line);
        }
        d
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for a log line (JSON) that `pred` accepts; returns it.
    pub fn wait_for_log(
        &mut self,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!(
                    "the expected log line did not come within {limit:?}; log:\n{}",
                    self.log.join("\n")
                );
            };
            self.log.push(line.clone());
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if pred(&v) {
                    return v;
                }
            }
        }
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit within `limit`; returns its status and the whole log.
    pub fn wait_exit(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread ends at EOF; collect what is left.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.log.push(line);
                }
                return (status, self.log.join("\n"));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the daemon did not exit within {limit:?}; log:\n{}",
                    self.log.join("\n")
                );
            }
            while let Ok(line) = self.lines.try_recv() {
                self.log.push(line);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// A GET with the admin token.
pub fn admin_get(url: &str) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("the daemon answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    })
}

pub fn get(url: &str) -> (u16, String) {
    // A blocking client keeps these tests free of an async runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::get(url).await.expect("the daemon answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    })
}
