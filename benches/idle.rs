//! Idle-footprint benchmark (issue 9's "Idle footprint with 100 configured
//! tenants"): what the daemon costs while nothing happens.
//!
//! Run it with `cargo bench --bench idle` (release profile). Options, as
//! arguments after `--` or from the environment:
//!
//! - `--tenants 1,100` / `IDLE_BENCH_TENANTS`: configured tenants per case
//!   (the first is the baseline the others are compared with);
//! - `--seconds 60` / `IDLE_BENCH_SECONDS`: length of the idle window;
//! - `--devices 50` / `IDLE_BENCH_DEVICES`: devices per simulated MDM.
//!
//! What a case is: the real daemon (`mtd-connector run`, the release binary
//! cargo builds for this bench) in its own process, with N tenant files,
//! each with one MDM (SOTI, AirWatch and BCDM in turn) pointing at the
//! simulators, which run in another process (`mtd-connector sim --kind
//! all`), so they count neither in the daemon's memory nor in its CPU. The
//! MDMs are configured as an admin would have them: `background_sync =
//! true` and the default schedule (`full_sync_every = "4h"`), so every MDM
//! gets its initial sync at start, and then a scheduled one hours later.
//!
//! The bench waits until every MDM's initial sync has succeeded (read from
//! the daemon's database, read-only), lets the daemon settle for a few
//! seconds, then samples `/proc/PID/status` (`VmRSS`) every second for the
//! idle window and reads `/proc/PID/stat` (user + system CPU time) at both
//! ends. The daemon is stopped with SIGTERM afterwards.
//!
//! The BCDM simulator's own rate limit is switched off for this bench: it
//! counts requests per access key, and the simulator has one key for every
//! tenant, where real tenants each have their own BCDM account. Each BCDM
//! adapter still paces itself at 10 requests per second.

// Shared with the other benches; each uses a part of them.
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "common/simproc.rs"]
mod simproc;
use common::{load_average, machine};
use simproc::{proc_status_kb, SimProcess};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_TENANTS: [usize; 2] = [1, 100];
const DEFAULT_SECONDS: u64 = 60;
const DEFAULT_DEVICES: usize = 50;
const SEED: u64 = 11;
/// Every initial sync must have succeeded by then.
const SYNC_LIMIT: Duration = Duration::from_secs(600);
/// After the last initial sync: connections close, buffers are freed.
const SETTLE: Duration = Duration::from_secs(5);
/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on every Linux ABI
/// this runs on; reading it properly would need libc, which is not a dependency).
const USER_HZ: f64 = 100.0;
const KINDS: [&str; 3] = ["soti", "airwatch", "bcdm"];

fn main() -> ExitCode {
    let mut tenants = std::env::var("IDLE_BENCH_TENANTS").ok();
    let mut seconds = std::env::var("IDLE_BENCH_SECONDS").ok();
    let mut devices = std::env::var("IDLE_BENCH_DEVICES").ok();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if common::help_asked(&args, include_str!("idle.rs")) {
        return ExitCode::SUCCESS;
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tenants" => tenants = it.next().cloned(),
            "--seconds" => seconds = it.next().cloned(),
            "--devices" => devices = it.next().cloned(),
            other => common::other_arg(other),
        }
    }
    let tenants: Vec<usize> = match tenants {
        None => DEFAULT_TENANTS.to_vec(),
        Some(s) => match s.split(',').map(|n| n.trim().parse()).collect() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: --tenants / IDLE_BENCH_TENANTS: `{s}`: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let seconds = match seconds.map(|s| s.parse::<u64>()) {
        None => DEFAULT_SECONDS,
        Some(Ok(s)) if s > 0 => s,
        Some(_) => {
            eprintln!("error: --seconds / IDLE_BENCH_SECONDS: a positive number");
            return ExitCode::FAILURE;
        }
    };
    let devices = match devices.map(|s| s.parse::<usize>()) {
        None => DEFAULT_DEVICES,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("error: --devices / IDLE_BENCH_DEVICES: a positive number");
            return ExitCode::FAILURE;
        }
    };

    println!("Idle-footprint benchmark");
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());
    println!(
        "daemon: {} run; simulators: the same binary's `sim --kind all --devices {devices}` in another process; idle window {seconds} s",
        simproc::connector_bin().display()
    );

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    let mut failed = false;
    for &n in &tenants {
        eprintln!("[{n} tenants] starting …");
        match rt.block_on(case(n, devices, Duration::from_secs(seconds))) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("[{n} tenants] failed: {e}");
                failed = true;
            }
        }
    }
    print_table(&rows, seconds);
    println!("load average at the end: {}", load_average());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What one case measured.
struct Row {
    tenants: usize,
    devices_stored: i64,
    sync_seconds: f64,
    rss_start_kb: u64,
    rss_end_kb: u64,
    rss_min_kb: u64,
    rss_max_kb: u64,
    hwm_kb: u64,
    cpu_seconds: f64,
    window: f64,
    threads: u64,
    sync_runs_in_window: i64,
}

fn print_table(rows: &[Row], seconds: u64) {
    println!();
    println!("== idle daemon, {seconds} s after every initial sync has succeeded");
    println!(
        "{:>8} {:>9} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8} {:>8} {:>6}",
        "tenants",
        "devices",
        "sync s",
        "RSS start",
        "RSS end",
        "RSS min",
        "RSS max",
        "peak",
        "CPU s",
        "CPU %",
        "RSS ×",
        "CPU ×",
        "runs"
    );
    let base = rows.first();
    for r in rows {
        let mib = |kb: u64| kb as f64 / 1024.0;
        let cpu_pct = 100.0 * r.cpu_seconds / r.window;
        let (rss_x, cpu_x) = match base {
            Some(b) => (
                r.rss_end_kb as f64 / b.rss_end_kb.max(1) as f64,
                if b.cpu_seconds > 0.0 {
                    format!("{:.1}", r.cpu_seconds / b.cpu_seconds)
                } else {
                    "-".into()
                },
            ),
            None => (1.0, "-".into()),
        };
        println!(
            "{:>8} {:>9} {:>8.1} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>7.2} {:>8.2} {:>8} {:>6}",
            r.tenants,
            r.devices_stored,
            r.sync_seconds,
            mib(r.rss_start_kb),
            mib(r.rss_end_kb),
            mib(r.rss_min_kb),
            mib(r.rss_max_kb),
            mib(r.hwm_kb),
            r.cpu_seconds,
            cpu_pct,
            rss_x,
            cpu_x,
            r.sync_runs_in_window,
        );
        println!("         threads: {}", r.threads);
    }
    println!(
        "RSS in MiB (VmRSS of the daemon's process, sampled every second in the window). peak: \
         VmHWM, the process's peak since start (the initial syncs included). sync s: from \
         spawning the daemon to the last initial sync's success. CPU s: user + system time of \
         the daemon during the window; CPU % of one core. RSS × and CPU ×: against the first \
         row. runs: sync runs started during the window (0 expected: the next is hours away)."
    );
}

async fn case(tenants: usize, devices: usize, window: Duration) -> Result<Row, String> {
    let sim = tokio::task::spawn_blocking(move || SimProcess::start("all", devices, SEED))
        .await
        .map_err(|e| format!("start the simulator: {e}"))??;
    let bcdm = sim.url("bcdm").ok_or("no BCDM url in the banner")?;
    // The control API lives next to the vendor paths: http://ADDR/_sim/bcdm.
    let control = bcdm.replace("/bcdm", "/_sim/bcdm/rate-limit");
    let off = reqwest::Client::new()
        .put(&control)
        .json(&serde_json::json!({ "requests_per_second": 0 }))
        .send()
        .await
        .map_err(|e| format!("PUT {control}: {e}"))?;
    if !off.status().is_success() {
        return Err(format!("PUT {control}: {}", off.status()));
    }

    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let config = write_config(dir.path(), &sim, tenants)?;
    let log = std::fs::File::create(dir.path().join("daemon.log"))
        .map_err(|e| format!("daemon log: {e}"))?;
    let started = Instant::now();
    let daemon = Command::new(simproc::connector_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start the daemon: {e}"))?;
    let daemon = Daemon(daemon);
    let pid = daemon.0.id();

    let db = dir.path().join("data/connector.db");
    let result = async {
        let devices_stored = wait_for_initial_syncs(&db, tenants, started).await?;
        let sync_seconds = started.elapsed().as_secs_f64();
        let runs_before = count(&db, "SELECT COUNT(*) FROM sync_runs").await?;
        tokio::time::sleep(SETTLE).await;

        let cpu_start = cpu_ticks(pid).ok_or("cannot read the daemon's /proc stat")?;
        let t0 = Instant::now();
        let rss_start_kb = proc_status_kb(pid, "VmRSS").unwrap_or(0);
        let (mut min, mut max, mut last) = (rss_start_kb, rss_start_kb, rss_start_kb);
        while t0.elapsed() < window {
            tokio::time::sleep(Duration::from_secs(1).min(window.saturating_sub(t0.elapsed())))
                .await;
            let rss = proc_status_kb(pid, "VmRSS").ok_or("the daemon exited")?;
            min = min.min(rss);
            max = max.max(rss);
            last = rss;
        }
        let cpu_end = cpu_ticks(pid).ok_or("the daemon exited")?;
        let elapsed = t0.elapsed().as_secs_f64();
        let runs_after = count(&db, "SELECT COUNT(*) FROM sync_runs").await?;
        Ok::<Row, String>(Row {
            tenants,
            devices_stored,
            sync_seconds,
            rss_start_kb,
            rss_end_kb: last,
            rss_min_kb: min,
            rss_max_kb: max,
            hwm_kb: proc_status_kb(pid, "VmHWM").unwrap_or(0),
            cpu_seconds: cpu_end.saturating_sub(cpu_start) as f64 / USER_HZ,
            window: elapsed,
            threads: proc_status_kb(pid, "Threads").unwrap_or(0),
            sync_runs_in_window: runs_after - runs_before,
        })
    }
    .await;
    daemon.stop();
    drop(sim);
    if result.is_err() {
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  daemon: {line}");
        }
    }
    result
}

/// The daemon's process; SIGKILLed if dropped without [`Daemon::stop`].
struct Daemon(Child);

impl Daemon {
    /// SIGTERM (the daemon's one shutdown path), then waits; SIGKILL after 30 s.
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        // `kill` the command: sending a signal from Rust would need libc.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits until every MDM has a succeeded sync run; returns the live devices stored.
async fn wait_for_initial_syncs(
    db: &Path,
    tenants: usize,
    started: Instant,
) -> Result<i64, String> {
    loop {
        if started.elapsed() > SYNC_LIMIT {
            return Err(format!(
                "not every initial sync succeeded within {} s",
                SYNC_LIMIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !db.exists() {
            continue;
        }
        let Ok(done) = count(
            db,
            "SELECT COUNT(DISTINCT mdm_id) FROM sync_runs WHERE outcome = 'succeeded'",
        )
        .await
        else {
            continue;
        };
        if done as usize >= tenants {
            return count(db, "SELECT COUNT(*) FROM devices WHERE removed_at IS NULL").await;
        }
    }
}

/// One number from the daemon's database, on a read-only connection that
/// is closed again at once (WAL: it never blocks the daemon's writer).
async fn count(db: &Path, sql: &str) -> Result<i64, String> {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .map_err(|e| format!("open {}: {e}", db.display()))?;
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("{sql}: {e}"))?;
    let _ = conn.close().await;
    Ok(n)
}

/// User + system CPU ticks of a process (fields 14 and 15 of `/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state …`: comm may hold spaces, so split at the last `)`.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(ticks(11)? + ticks(12)?)
}

/// `connector.toml` with the defaults an admin would keep (schedule every
/// 4 h), and `tenants` tenant files, each with one MDM at the simulators.
fn write_config(
    root: &Path,
    sim: &SimProcess,
    tenants: usize,
) -> Result<std::path::PathBuf, String> {
    let io = |e: std::io::Error| format!("write the config: {e}");
    std::fs::create_dir_all(root.join("tenants.d")).map_err(io)?;
    let main = root.join("connector.toml");
    std::fs::write(
        &main,
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data/connector.db\"\n\
         [admin]\ntoken = \"idle-bench-admin-token-abcdef\"\n[tenants]\ndir = \"tenants.d\"\n\
         [sync]\nfull_sync_every = \"4h\"\n",
    )
    .map_err(io)?;
    for t in 0..tenants {
        let kind = KINDS[t % KINDS.len()];
        let url = sim
            .url(kind)
            .ok_or(format!("no {kind} url in the banner"))?;
        let credentials = match kind {
            "soti" => format!(
                "client_id = \"{}\"\nclient_secret = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n",
                mtd_sim::soti::DEFAULT_CLIENT_ID,
                mtd_sim::soti::DEFAULT_CLIENT_SECRET,
                mtd_sim::soti::DEFAULT_USERNAME,
                mtd_sim::soti::DEFAULT_PASSWORD
            ),
            "airwatch" => format!(
                "username = \"{}\"\npassword = \"{}\"\napi_key = \"{}\"\n",
                mtd_sim::airwatch::DEFAULT_USERNAME,
                mtd_sim::airwatch::DEFAULT_PASSWORD,
                mtd_sim::airwatch::DEFAULT_API_KEY
            ),
            _ => format!(
                "access_key = \"{}\"\nsecret_key = \"{}\"\ndm_code = \"{}\"\n",
                mtd_sim::bcdm::DEFAULT_ACCESS_KEY,
                mtd_sim::bcdm::DEFAULT_SECRET_KEY,
                mtd_sim::bcdm::DEFAULT_DM_CODE
            ),
        };
        let id = format!("tenant-{t:03}");
        std::fs::write(
            root.join(format!("tenants.d/{id}.toml")),
            format!(
                "id = \"{id}\"\nagent_secret = \"idle-bench-agent-secret-{t:03}-0123456789\"\n\n\
                 [[mdm]]\nname = \"{kind} of {id}\"\nkind = \"{kind}\"\nurl = \"{url}\"\n\
                 background_sync = true\n[mdm.credentials]\n{credentials}"
            ),
        )
        .map_err(io)?;
    }
    Ok(main)
}
