//! The MDM simulators in a process of their own (`mtd-connector sim`), so a
//! bench measures the connector's memory and CPU without the simulator's:
//! the simulator keeps every seeded record in memory (about 6 KB per SOTI
//! device, 12 KB per AirWatch device) and serialises every page on its own
//! threads.
//!
//! Used by `benches/sync.rs` and `benches/idle.rs` through
//! `#[path = "common/simproc.rs"] mod simproc;`, so the shared `common`
//! module (and the benches that use only it) do not change.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The kinds `sim --kind all` serves, as named in their banners.
const KINDS: [&str; 4] = ["soti", "airwatch", "bcdm", "maas360"];

/// How long the simulator may take to seed and print its banner (seeding
/// 100,000 AirWatch devices takes a few seconds on a loaded machine).
const STARTUP_LIMIT: Duration = Duration::from_secs(300);

/// The daemon binary: `MTD_CONNECTOR_BIN` if set (to run a copy while the
/// tree is being rebuilt), else the one cargo built for this bench.
pub fn connector_bin() -> PathBuf {
    std::env::var_os("MTD_CONNECTOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mtd-connector")))
}

/// A running `mtd-connector sim`; killed when dropped.
#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    /// Kept open: the simulator printed its banner there, and a closed pipe
    /// would fail a later write instead of being ignored.
    _stdout: BufReader<ChildStdout>,
    /// (kind, vendor `url`) for every kind served, from the banner.
    urls: Vec<(String, String)>,
    /// From spawn to the banner: seeding the data set.
    pub startup: Duration,
}

impl SimProcess {
    /// Starts `mtd-connector sim --kind KIND --devices N --seed SEED` on a
    /// free port and waits for its banner (printed once the data is seeded
    /// and the port is bound). `kind` is `soti`, `airwatch`, `bcdm`, `maas360`
    /// or `all`.
    pub fn start(kind: &str, devices: usize, seed: u64) -> Result<SimProcess, String> {
        let bin = connector_bin();
        let started = Instant::now();
        let mut child = Command::new(&bin)
            .args(["sim", "--listen", "127.0.0.1:0", "--kind", kind])
            .args([
                "--devices",
                &devices.to_string(),
                "--seed",
                &seed.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {} sim: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("the simulator has no stdout")?;
        let mut stdout = BufReader::new(stdout);
        let wanted = if kind == "all" { KINDS.len() } else { 1 };
        let mut urls = Vec::new();
        let mut current: Option<String> = None;
        let mut line = String::new();
        while urls.len() < wanted {
            if started.elapsed() > STARTUP_LIMIT {
                let _ = child.kill();
                return Err("the simulator printed no banner in time".into());
            }
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!("the simulator exited before its banner ({status})"));
                }
                Ok(_) => {}
            }
            // "SOTI MobiControl simulator: …" / "AirWatch …" / "BCDM …" /
            // "MaaS360 …", then "  url: …".
            let lower = line.to_ascii_lowercase();
            if lower.contains("simulator") {
                current = KINDS
                    .into_iter()
                    .find(|k| lower.contains(k))
                    .map(String::from);
            } else if let Some(url) = line.trim().strip_prefix("url:") {
                let kind = current.clone().unwrap_or_else(|| kind.to_string());
                urls.push((kind, url.trim().to_string()));
            }
        }
        Ok(SimProcess {
            child,
            _stdout: stdout,
            urls,
            startup: started.elapsed(),
        })
    }

    /// The vendor `url` to configure for `kind`.
    pub fn url(&self, kind: &str) -> Option<&str> {
        self.urls
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, u)| u.as_str())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `kB` line of the simulator's `/proc/PID/status` (`VmRSS`, `VmHWM`).
    pub fn status_kb(&self, field: &str) -> Option<u64> {
        proc_status_kb(self.pid(), field)
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        // Our own child, by its pid; waited for so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` line of `/proc/PID/status`.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
