//! Full-sync benchmark (issue 6, and issue 9's "Full sync"): how long a full
//! sync of N simulated devices takes through the real engine, how much memory
//! it needs, and how that compares with writing the same rows to SQLite with
//! no HTTP at all.
//!
//! Run it with `cargo bench --bench sync` (release profile). Options, as
//! arguments after `--` or from the environment:
//!
//! - `--sizes 10000,100000` / `SYNC_BENCH_SIZES`: devices per case;
//! - `--kinds soti,airwatch,bcdm` / `SYNC_BENCH_KINDS`: simulator kinds (default:
//!   every kind; a kind whose simulator is not implemented yet is skipped
//!   with a note, so the bench picks new simulators up by itself);
//! - `--cases sync,fetch,baseline,resync` / `SYNC_BENCH_CASES`: which cases
//!   to run (default: the first three; `sync,fetch` is enough for the ratio);
//! - `--stored 1000000` / `SYNC_BENCH_STORED`: devices already in the store
//!   before the sync (default 0), written untimed by a child process of their
//!   own (see [`fill`]); `--stored-in other|same` / `SYNC_BENCH_STORED_IN`:
//!   spread over ten other tenants (default), or under a second MDM of the
//!   synced tenant (which shares the tenant's identifier indexes);
//! - `RUST_LOG=info`: the engine's logs on stderr (off by default).
//!
//! Why child processes: peak RSS (`VmHWM`) only ever grows, so each case runs
//! in a fresh copy of this binary (re-executed with `--case MODE KIND N`),
//! which prints one JSON line that the parent collects into the tables.
//!
//! What a `sync` case measures: the simulator seeded with N devices runs in
//! a process of its own (`mtd-connector sim`, see `common/simproc.rs`), so
//! the case's process is the connector alone: a fresh store in a temporary
//! directory, the config
//! loaded through `config::load` and the app built by `App::build_with_listener`
//! (so the adapter comes from the real registry), then one
//! `SyncEngine::full_sync_now`: the same worker, paging and store code as the
//! scheduled sync. The peak of the sync itself is `VmHWM` after the sync,
//! with the high-water mark reset just before it (`/proc/self/clear_refs`).
//!
//! What a `resync` case measures: the same as `sync`, but the store has
//! already been through one untimed full sync of the same listing, so the
//! timed run is the scheduled sync every four hours of an unchanged fleet:
//! every record read, compared and stamped as seen, none written anew.
//!
//! What a `fetch` case measures (the fetch-only baseline): the same setup,
//! the same adapter from the same registry, and the same listings in the
//! same order (groups, users, devices), each guarded as the sync's fetching
//! task guards it; every page is decoded and dropped, nothing is stored. The
//! sync's figure is reported as a ratio to it: what the store adds to the
//! fetch.
//!
//! What a `baseline` case measures: the same listing read through the adapter
//! first (untimed), then written (timed) (a) through the store's own API, one
//! call per kind of record, all devices in one `upsert_devices` transaction,
//! and (b) as plain prepared INSERTs on one sqlx connection in one
//! transaction (no lookups, no collision checks: the ceiling of this SQLite
//! file on this disk).

mod common;
#[path = "common/simproc.rs"]
mod simproc;
use chrono::Utc;
use common::{f, load_average, machine, thread_cpu};
use futures::StreamExt;
use mtd_adapter::{
    guard_listing, normalize_imei, normalize_mac, normalize_serial, normalize_udid, Device, Group,
    PageStream, User,
};
use mtd_connector::app::App;
use mtd_connector::shutdown::CancellationToken;
use mtd_connector::store::{MdmRecord, Pii, Store, SyncOutcome, SyncTrigger, TenantRecord};
use mtd_connector::sync::ProgressFn;
use mtd_sim::{SimError, SimKind, SimOptions, Simulator};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEFAULT_SIZES: [usize; 2] = [10_000, 100_000];
const TENANT: &str = "bench";
const MDM_NAME: &str = "Bench MDM";
/// The same seed in the sync and the baseline case: the same data set.
const SEED: u64 = 7;
/// The line prefix that marks a case's result on the child's stdout.
const RESULT_PREFIX: &str = "SYNC-BENCH-RESULT ";
/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on every Linux ABI
/// this runs on; reading it properly would need libc, which is not a dependency).
const USER_HZ: f64 = 100.0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--case") {
        return child(&args[at + 1..]);
    }
    if let Some(at) = args.iter().position(|a| a == "--fill") {
        return fill_child(&args[at + 1..]);
    }
    if common::help_asked(&args, include_str!("sync.rs")) {
        return ExitCode::SUCCESS;
    }
    parent(&args)
}

// ---------------------------------------------------------------------------
// The parent: picks the cases, runs each in a child, prints the tables.
// ---------------------------------------------------------------------------

fn parent(args: &[String]) -> ExitCode {
    let mut sizes = std::env::var("SYNC_BENCH_SIZES").ok();
    let mut kinds = std::env::var("SYNC_BENCH_KINDS").ok();
    let mut cases = std::env::var("SYNC_BENCH_CASES").ok();
    let mut stored = std::env::var("SYNC_BENCH_STORED").ok();
    let mut stored_in = std::env::var("SYNC_BENCH_STORED_IN").ok();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sizes" => sizes = it.next().cloned(),
            "--kinds" => kinds = it.next().cloned(),
            "--cases" => cases = it.next().cloned(),
            "--stored" => stored = it.next().cloned(),
            "--stored-in" => stored_in = it.next().cloned(),
            other => common::other_arg(other),
        }
    }
    let sizes: Vec<usize> = match sizes {
        None => DEFAULT_SIZES.to_vec(),
        Some(s) => match s
            .split(',')
            .map(|n| n.trim().replace('_', "").parse::<usize>())
            .collect()
        {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: --sizes / SYNC_BENCH_SIZES: `{s}`: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let wanted: Vec<SimKind> = match kinds {
        None => SimKind::ALL.to_vec(),
        Some(s) => match s.split(',').map(|k| k.parse::<SimKind>()).collect() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: --kinds / SYNC_BENCH_KINDS: {e}");
                return ExitCode::FAILURE;
            }
        },
    };

    let cases: Vec<String> = cases
        .as_deref()
        .unwrap_or("sync,fetch,baseline")
        .split(',')
        .map(|c| c.trim().to_string())
        .collect();
    if let Some(bad) = cases
        .iter()
        .find(|c| !["sync", "fetch", "baseline", "resync"].contains(&c.as_str()))
    {
        eprintln!(
            "error: --cases / SYNC_BENCH_CASES: unknown case `{bad}` (sync, fetch, baseline, resync)"
        );
        return ExitCode::FAILURE;
    }
    let stored: usize = match stored.as_deref().map(|s| s.trim().replace('_', "").parse()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("error: --stored / SYNC_BENCH_STORED: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stored_in = stored_in.unwrap_or_else(|| "other".into());
    if !["other", "same"].contains(&stored_in.as_str()) {
        eprintln!("error: --stored-in / SYNC_BENCH_STORED_IN: `other` or `same`");
        return ExitCode::FAILURE;
    }

    println!("Full-sync benchmark");
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());
    println!(
        "sizes: {:?}; each case in its own process; the simulator in another process (`{} sim`)",
        sizes,
        simproc::connector_bin().display()
    );
    if stored > 0 {
        println!(
            "already stored before each sync: {stored} devices ({}), written untimed",
            if stored_in == "same" {
                "under a second MDM of the synced tenant"
            } else {
                "spread over ten other tenants"
            }
        );
    }
    let mut kinds = Vec::new();
    for kind in wanted {
        match simulator_available(kind) {
            Ok(()) => kinds.push(kind),
            Err(why) => println!("note: {kind} skipped: {why}"),
        }
    }

    let mut failed = false;
    for kind in kinds {
        let mut rows = Vec::new();
        for &n in &sizes {
            let mut run = |mode: &str, extra: &[String]| {
                if !cases.iter().any(|c| c == mode) {
                    return json!({ "skipped": true });
                }
                eprintln!("[{kind} {n}] {mode} …");
                let v = run_case(mode, kind, n, extra);
                failed |= v.get("error").is_some();
                v
            };
            let sync = run("sync", &[stored.to_string(), stored_in.clone()]);
            let fetch = run("fetch", &[]);
            let base = run("baseline", &[]);
            let resync = run("resync", &[stored.to_string(), stored_in.clone()]);
            rows.push(Row {
                n,
                sync,
                fetch,
                base,
                resync,
            });
        }
        print_table(kind, &rows);
        print_resync(kind, &rows);
    }
    println!();
    println!(
        "load average at the end: {} (other processes compete for the same CPUs)",
        load_average()
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Starts the simulator of `kind` with one device: an unimplemented kind
/// fails with [`SimError::NotImplemented`].
fn simulator_available(kind: SimKind) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        match Simulator::start(listener, SimOptions::new(vec![kind], 1, SEED)) {
            Ok(sim) => {
                sim.shutdown().await;
                Ok(())
            }
            Err(e @ SimError::NotImplemented(_)) => Err(e.to_string()),
            Err(e) => Err(format!("the simulator does not start: {e}")),
        }
    })
}

/// One size of one kind: the result of each case (`{"skipped": true}` when
/// not asked for).
struct Row {
    n: usize,
    sync: Value,
    fetch: Value,
    base: Value,
    resync: Value,
}

/// Runs one case in a child process; its result, or `{"error": …}`.
fn run_case(mode: &str, kind: SimKind, n: usize, extra: &[String]) -> Value {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return json!({ "error": format!("cannot find this executable: {e}") }),
    };
    let out = Command::new(exe)
        .args(["--case", mode, kind.as_str(), &n.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return json!({ "error": format!("cannot run the case: {e}") }),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .and_then(|l| serde_json::from_str::<Value>(l).ok());
    match result {
        Some(v) => v,
        None => json!({ "error": format!("the case printed no result (exit {})", out.status) }),
    }
}

fn print_table(kind: SimKind, rows: &[Row]) {
    println!();
    println!(
        "== {kind}: full sync through SyncEngine::full_sync_now vs the fetch alone (same adapter) \
         and vs writing the same rows without HTTP"
    );
    println!(
        "{:>8} {:>8} {:>9} {:>7} {:>8} {:>8} {:>7} {:>7} {:>13} {:>8} {:>7} {:>7} {:>7} {:>7}",
        "N",
        "stored",
        "sync s",
        "CPU s",
        "peak MiB",
        "fetch s",
        "f CPU s",
        "ratio",
        "load (sync)",
        "store s",
        "ratio",
        "raw s",
        "raw64 s",
        "list s"
    );
    for Row {
        n,
        sync: s,
        fetch,
        base: b,
        ..
    } in rows
    {
        if let Some(e) = [s, fetch, b].into_iter().find_map(|v| v.get("error")) {
            println!("{n:>8} error: {}", e.as_str().unwrap_or("?"));
            continue;
        }
        let secs = f(s, "seconds");
        let fetch_s = f(fetch, "seconds");
        let store_s = f(b, "store_seconds");
        println!(
            "{:>8} {:>8} {:>9.2} {:>7.2} {:>8.1} {:>8.2} {:>7.2} {:>7.2} {:>13} {:>8.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
            n,
            s.get("stored").and_then(Value::as_u64).unwrap_or(0),
            secs,
            f(&s["cpu"], "total"),
            mib(s, "peak_kb"),
            fetch_s,
            f(&fetch["cpu"], "total"),
            secs / fetch_s,
            s.get("load").and_then(Value::as_str).unwrap_or("-"),
            store_s,
            secs / store_s,
            f(b, "raw_seconds"),
            f(b, "raw_cache64_seconds"),
            f(b, "list_seconds"),
        );
    }
    println!(
        "sync s: wall time of full_sync_now (groups, users, devices, removal check, run record). \
         CPU s: CPU time of the connector's process during the sync. \
         peak MiB: VmHWM of the connector's process during the sync (HWM reset just before it{}); \
         the simulator runs in its own process (`mtd-connector sim`) and is not included. \
         stored: devices in the store before the sync. \
         fetch s / f CPU s: the fetch-only baseline, the same listings through the same adapter \
         (HTTP, paging, decoding, the listing guard), every page dropped: its wall and CPU time. \
         ratio = sync s / fetch s. load (sync): the 1-minute load average at the sync's start \
         and end. store s: the same groups, users and devices written through upsert_groups / \
         upsert_users / upsert_devices (each one transaction) with no HTTP; raw s: plain INSERTs \
         of the same rows in one transaction (SQLite's default 2 MiB page cache); raw64 s: the \
         same with a 64 MiB page cache. list s: the baseline case's own listing, collected into \
         memory before those writes.",
        if rows
            .iter()
            .filter(|r| r.sync.get("peak_kb").is_some())
            .all(|r| r.sync.get("hwm_reset").and_then(Value::as_bool) == Some(true))
        {
            ""
        } else {
            "; NOT reset on some case: there it is the process's peak since start"
        }
    );
    for Row {
        n,
        sync: s,
        fetch,
        base: b,
        ..
    } in rows
    {
        if s.get("seconds").is_none() {
            continue;
        }
        println!(
            "  N={n}: listed {} records, {} devices stored, counts {}; phases: groups {:.2} s, \
             users {:.2} s, devices {:.2} s, removal check + record {:.2} s; CPU during sync: \
             {:.2} s ({:.2} on sqlx-sqlite threads, the run's own writer included, {:.2} on tokio workers, {:.2} other); seeding \
             the simulator {:.2} s; filling the store {:.2} s; process peak since start {:.1} MiB; \
             fetch-only: {} records, peak {:.1} MiB; baseline store API devices alone {:.2} s",
            s["listed"],
            s["devices_stored"],
            s["counts"],
            f(&s["phases"], "groups"),
            f(&s["phases"], "users"),
            f(&s["phases"], "devices"),
            f(&s["phases"], "finish"),
            f(&s["cpu"], "total"),
            f(&s["cpu"], "sqlite"),
            f(&s["cpu"], "tokio"),
            f(&s["cpu"], "other"),
            f(s, "seed_seconds"),
            f(s, "fill_seconds"),
            mib(s, "process_peak_kb"),
            fetch.get("records").unwrap_or(&Value::Null),
            mib(fetch, "peak_kb"),
            f(b, "store_devices_seconds"),
        );
    }
    if let Some((small, large)) = smallest_and_largest(rows, |r| &r.sync) {
        let size = large.n as f64 / small.n as f64;
        println!(
            "growth {}→{}: time ×{:.2}, CPU ×{:.2}, peak RSS ×{:.2}, fetch-only time ×{:.2} \
             (linear = ×{:.0})",
            small.n,
            large.n,
            f(&large.sync, "seconds") / f(&small.sync, "seconds"),
            f(&large.sync["cpu"], "total") / f(&small.sync["cpu"], "total"),
            mib(&large.sync, "peak_kb") / mib(&small.sync, "peak_kb"),
            f(&large.fetch, "seconds") / f(&small.fetch, "seconds"),
            size
        );
    }
}

/// The `resync` rows: the scheduled sync of an unchanged fleet, against the
/// same run's fetch-only baseline.
fn print_resync(kind: SimKind, rows: &[Row]) {
    if rows.iter().all(|r| r.resync.get("skipped").is_some()) {
        return;
    }
    println!();
    println!("== {kind}: re-sync of an unchanged listing (a second full sync) vs the fetch alone");
    println!(
        "{:>8} {:>10} {:>7} {:>8} {:>8} {:>7} {:>13}  counts",
        "N", "resync s", "CPU s", "peak MiB", "fetch s", "ratio", "load (resync)"
    );
    for Row {
        n,
        fetch,
        resync: r,
        ..
    } in rows
    {
        if let Some(e) = [r, fetch].into_iter().find_map(|v| v.get("error")) {
            println!("{n:>8} error: {}", e.as_str().unwrap_or("?"));
            continue;
        }
        if r.get("seconds").is_none() {
            continue;
        }
        println!(
            "{:>8} {:>10.2} {:>7.2} {:>8.1} {:>8.2} {:>7.2} {:>13}  {}",
            n,
            f(r, "seconds"),
            f(&r["cpu"], "total"),
            mib(r, "peak_kb"),
            f(fetch, "seconds"),
            f(r, "seconds") / f(fetch, "seconds"),
            r.get("load").and_then(Value::as_str).unwrap_or("-"),
            r["counts"],
        );
    }
    if let Some((small, large)) = smallest_and_largest(rows, |r| &r.resync) {
        println!(
            "growth {}→{}: resync time ×{:.2} (linear = ×{:.0})",
            small.n,
            large.n,
            f(&large.resync, "seconds") / f(&small.resync, "seconds"),
            large.n as f64 / small.n as f64
        );
    }
}

/// The first and the last row (sizes ascending) where `case` has a time,
/// for the growth line; `None` unless they differ in size.
fn smallest_and_largest(rows: &[Row], case: fn(&Row) -> &Value) -> Option<(&Row, &Row)> {
    let mut ok = rows.iter().filter(|r| case(r).get("seconds").is_some());
    let small = ok.next()?;
    let large = ok.next_back()?;
    (large.n > small.n).then_some((small, large))
}

fn mib(v: &Value, key: &str) -> f64 {
    f(v, key) / 1024.0
}

// ---------------------------------------------------------------------------
// The child: one case, one JSON line.
// ---------------------------------------------------------------------------

fn child(args: &[String]) -> ExitCode {
    let (mode, kind, n, rest) = match args {
        [mode, kind, n, rest @ ..] => match (kind.parse::<SimKind>(), n.parse::<usize>()) {
            (Ok(k), Ok(n)) => (mode.as_str(), k, n, rest),
            _ => {
                eprintln!("error: --case MODE KIND N: bad kind `{kind}` or N `{n}`");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("error: --case MODE KIND N");
            return ExitCode::FAILURE;
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // The daemon's runtime: multi-threaded, one worker per CPU.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match mode {
            "sync" | "resync" => {
                let stored = rest.first().and_then(|s| s.parse().ok()).unwrap_or(0);
                let same = rest.get(1).is_some_and(|s| s == "same");
                sync_case(kind, n, Prefill { stored, same }, mode == "resync").await
            }
            "fetch" => fetch_case(kind, n).await,
            "baseline" => baseline_case(kind, n).await,
            other => Err(format!("unknown case mode `{other}`")),
        }
    });
    let (value, code) = match result {
        Ok(v) => (v, ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("[{kind} {n}] {mode} failed: {e}");
            (json!({ "error": e }), ExitCode::FAILURE)
        }
    };
    println!("{RESULT_PREFIX}{value}");
    code
}

/// A simulator of one kind, a temporary directory, a config pointing at the
/// simulator, and the app built from it (store open, engine built, nothing
/// started, nothing served).
struct Setup {
    // Field order is drop order: the app (and its store) before the directory.
    app: App,
    /// `mtd-connector sim` in its own process: its memory and CPU are not
    /// this process's, so `VmHWM` here is the connector's alone.
    sim: simproc::SimProcess,
    dir: tempfile::TempDir,
    rss_start_kb: u64,
    sim_rss_kb: u64,
    seed_seconds: f64,
    /// Writing the devices already stored (0 without any).
    fill_seconds: f64,
}

/// Devices written into the store before the app opens it.
#[derive(Debug, Clone, Copy, Default)]
struct Prefill {
    stored: usize,
    /// Under a second MDM of the synced tenant, else over ten other tenants.
    same: bool,
}

async fn setup(kind: SimKind, n: usize, prefill: Prefill) -> Result<Setup, String> {
    let rss_start_kb = status_kb("VmRSS").unwrap_or(0);
    let sim =
        tokio::task::spawn_blocking(move || simproc::SimProcess::start(kind.as_str(), n, SEED))
            .await
            .map_err(|e| format!("start the simulator: {e}"))??;
    let seed_seconds = sim.startup.as_secs_f64();
    let sim_rss_kb = sim.status_kb("VmRSS").unwrap_or(0);
    let base_url = sim
        .url(kind.as_str())
        .ok_or("the simulator's banner has no url")?
        .to_string();
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let path = write_config(dir.path(), &base_url, kind)?;
    let mut fill_seconds = 0.0;
    if prefill.stored > 0 {
        let db = dir.path().join("data/connector.db");
        let started = Instant::now();
        tokio::task::spawn_blocking(move || run_fill(&db, prefill))
            .await
            .map_err(|e| format!("fill the store: {e}"))??;
        fill_seconds = started.elapsed().as_secs_f64();
    }
    let config = mtd_connector::config::load(&path).map_err(|e| format!("config:\n{e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind the app: {e}"))?;
    let app = App::build_with_listener(config, Some(listener))
        .await
        .map_err(|e| format!("build the app: {e}"))?;
    Ok(Setup {
        app,
        sim,
        dir,
        rss_start_kb,
        sim_rss_kb,
        seed_seconds,
        fill_seconds,
    })
}

/// `connector.toml` and one tenant with one MDM of `kind` at the simulator:
/// no initial sync (`initial_sync = false`) and no schedule, so the only
/// sync is the one the bench asks for.
fn write_config(root: &Path, base_url: &str, kind: SimKind) -> Result<PathBuf, String> {
    let io = |e: std::io::Error| format!("write the config: {e}");
    std::fs::create_dir_all(root.join("tenants.d")).map_err(io)?;
    let main = root.join("connector.toml");
    std::fs::write(
        &main,
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data/connector.db\"\n\
         [admin]\ntoken = \"bench-admin-token-abcdef\"\n[tenants]\ndir = \"tenants.d\"\n\
         [sync]\nfull_sync_every = \"0\"\ninitial_sync = false\n",
    )
    .map_err(io)?;
    let credentials = kind.credentials_toml();
    std::fs::write(
        root.join(format!("tenants.d/{TENANT}.toml")),
        format!(
            "id = \"{TENANT}\"\ndisplay_name = \"Bench\"\nagent_secret = \"bench-agent-secret-0123456789\"\n\n\
             [[mdm]]\nname = \"{MDM_NAME}\"\nkind = \"{}\"\nurl = \"{}\"\nbackground_sync = false\n\
             mask_pii = false\n{credentials}",
            kind.as_str(),
            base_url
        ),
    )
    .map_err(io)?;
    Ok(main)
}

/// One full sync through the engine, with its time, memory and CPU.
/// `repeat`: one untimed full sync of the same listing first (the `resync`
/// case), so the timed run finds every record already stored.
async fn sync_case(
    kind: SimKind,
    n: usize,
    prefill: Prefill,
    repeat: bool,
) -> Result<Value, String> {
    let s = setup(kind, n, prefill).await?;
    let engine = s.app.sync().clone();
    let cancel = CancellationToken::new();
    let tasks = mtd_connector::shutdown::Tasks::new();
    engine.start(cancel.clone(), &tasks).await;
    let mdm_id = engine
        .integrations()
        .next()
        .ok_or("the engine has no integration")?
        .mdm_id;
    if repeat {
        let first = engine
            .full_sync_now(TENANT, None, SyncTrigger::Cli, None)
            .await
            .map_err(|e| format!("first full sync: {e}"))?;
        if let Some(r) = first.iter().find(|r| r.outcome != SyncOutcome::Succeeded) {
            return Err(format!(
                "the first sync failed: {}",
                r.error.as_deref().unwrap_or("?")
            ));
        }
    }

    // When the last page of each listing was written: the phases of the run.
    let marks: Arc<Mutex<HashMap<&'static str, Instant>>> = Arc::default();
    let progress: ProgressFn = {
        let marks = marks.clone();
        Arc::new(move |what, _count| {
            // Poisoned only if a holder panicked; the bench would be dead anyway.
            marks
                .lock()
                .expect("marks lock")
                .insert(what, Instant::now());
        })
    };

    let rss_before_kb = status_kb("VmRSS").unwrap_or(0);
    let hwm_setup_kb = status_kb("VmHWM").unwrap_or(0);
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0),
    // so the peak read after the sync is the sync's own, not the seeding's.
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let load_before = load_average();
    let cpu_before = cpu_now();
    let started = Instant::now();
    let reports = engine
        .full_sync_now(TENANT, None, SyncTrigger::Cli, Some(progress))
        .await
        .map_err(|e| format!("full sync: {e}"))?;
    let ended = Instant::now();
    let seconds = (ended - started).as_secs_f64();
    let peak_kb = status_kb("VmHWM").unwrap_or(0);
    let rss_after_kb = status_kb("VmRSS").unwrap_or(0);
    let cpu = cpu_split(&cpu_before, &cpu_now());
    let load = format!(
        "{} → {}",
        one_minute(&load_before),
        one_minute(&load_average())
    );

    let report = reports.first().ok_or("no run report")?;
    if report.outcome != SyncOutcome::Succeeded {
        return Err(format!(
            "the sync failed: {}",
            report.error.as_deref().unwrap_or("?")
        ));
    }
    let c = &report.counts;
    if repeat && c.added + c.updated + c.removed > 0 {
        return Err(format!(
            "the second sync changed the store ({} added, {} updated, {} removed): \
             not a re-sync of an unchanged listing",
            c.added, c.updated, c.removed
        ));
    }
    let devices_stored = s
        .app
        .store()
        .live_device_count(mdm_id)
        .await
        .map_err(|e| e.to_string())?;

    let marks = marks.lock().expect("marks lock").clone();
    let mut phases = serde_json::Map::new();
    let mut from = started;
    for what in ["groups", "users", "devices"] {
        let to = marks.get(what).copied().unwrap_or(from);
        phases.insert(what.into(), json!((to - from).as_secs_f64()));
        from = to;
    }
    phases.insert("finish".into(), json!((ended - from).as_secs_f64()));

    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    s.app.store().close().await;
    let sim_peak_kb = s.sim.status_kb("VmHWM").unwrap_or(0);
    drop(s.sim);
    drop(s.dir);

    Ok(json!({
        "mode": if repeat { "resync" } else { "sync" },
        "kind": kind.as_str(),
        "n": n,
        "seconds": seconds,
        "run_seconds": report.duration.as_secs_f64(),
        "listed": report.listed,
        "counts": report.counts,
        "devices_stored": devices_stored,
        "seed_seconds": s.seed_seconds,
        "fill_seconds": s.fill_seconds,
        "stored": prefill.stored,
        "load": load,
        "rss_start_kb": s.rss_start_kb,
        "sim_rss_kb": s.sim_rss_kb,
        "sim_peak_kb": sim_peak_kb,
        "rss_before_kb": rss_before_kb,
        "hwm_reset": hwm_reset,
        "peak_kb": peak_kb,
        "process_peak_kb": peak_kb.max(hwm_setup_kb),
        "rss_after_kb": rss_after_kb,
        "phases": phases,
        "cpu": cpu,
    }))
}

/// The fetch-only baseline: the listings the sync reads, through the same
/// adapter and the same listing guard, in the same order, every page
/// decoded and dropped.
async fn fetch_case(kind: SimKind, n: usize) -> Result<Value, String> {
    let s = setup(kind, n, Prefill::default()).await?;
    let integration = s
        .app
        .sync()
        .integrations()
        .next()
        .ok_or("the engine has no integration")?
        .clone();
    let adapter = integration.adapter.as_ref();
    let name = integration.name.as_str();
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let load_before = load_average();
    let cpu_before = cpu_now();
    let started = Instant::now();
    let groups = drain(guard_listing(
        adapter.groups(),
        format!("{name} groups"),
        group_key,
    ))
    .await?;
    let users = drain(guard_listing(
        adapter.users(),
        format!("{name} users"),
        user_key,
    ))
    .await?;
    let devices = drain(guard_listing(
        adapter.devices(),
        format!("{name} devices"),
        device_key,
    ))
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_split(&cpu_before, &cpu_now());
    let load = format!(
        "{} → {}",
        one_minute(&load_before),
        one_minute(&load_average())
    );
    let peak_kb = status_kb("VmHWM").unwrap_or(0);
    Ok(json!({
        "mode": "fetch",
        "kind": kind.as_str(),
        "n": n,
        "seconds": seconds,
        "records": groups + users + devices,
        "devices": devices,
        "cpu": cpu,
        "load": load,
        "hwm_reset": hwm_reset,
        "peak_kb": peak_kb,
    }))
}

fn group_key(g: &Group) -> &str {
    &g.mdm_group_id
}

fn user_key(u: &User) -> &str {
    &u.mdm_user_id
}

fn device_key(d: &Device) -> &str {
    &d.mdm_device_id
}

/// Reads a listing to its end, dropping every page; the records it held.
async fn drain<T>(mut pages: PageStream<'_, T>) -> Result<u64, String> {
    let mut n = 0;
    while let Some(page) = pages.next().await {
        n += page.map_err(|e| format!("listing: {e}"))?.items.len() as u64;
    }
    Ok(n)
}

/// The first figure of a load average line.
fn one_minute(load: &str) -> &str {
    load.split_whitespace().next().unwrap_or("?")
}

/// The same rows, read through the adapter first (untimed), written without HTTP.
async fn baseline_case(kind: SimKind, n: usize) -> Result<Value, String> {
    let s = setup(kind, n, Prefill::default()).await?;
    let integration = s
        .app
        .sync()
        .integrations()
        .next()
        .ok_or("the engine has no integration")?
        .clone();
    let adapter = integration.adapter.as_ref();
    let listing = Instant::now();
    let groups = collect(adapter.groups()).await?;
    let users = collect(adapter.users()).await?;
    let devices = collect(adapter.devices()).await?;
    let list_seconds = listing.elapsed().as_secs_f64();
    drop(s.sim);

    // (a) The store's API, on the app's fresh store.
    let store = s.app.store();
    let mdm_id = integration.mdm_id;
    let run_id = store
        .start_sync_run(mdm_id, SyncTrigger::Cli)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    store
        .upsert_groups(run_id, mdm_id, &groups)
        .await
        .map_err(|e| e.to_string())?;
    store
        .upsert_users(run_id, mdm_id, &users, Pii::Clear)
        .await
        .map_err(|e| e.to_string())?;
    let devices_started = Instant::now();
    store
        .upsert_devices(run_id, mdm_id, &devices, Pii::Clear)
        .await
        .map_err(|e| e.to_string())?;
    let store_seconds = started.elapsed().as_secs_f64();
    let store_devices_seconds = devices_started.elapsed().as_secs_f64();
    let stored = store
        .live_device_count(mdm_id)
        .await
        .map_err(|e| e.to_string())?;
    if stored != devices.len() as u64 {
        return Err(format!(
            "store baseline stored {stored} of {} devices",
            devices.len()
        ));
    }
    store.close().await;

    // (b) Plain INSERTs on fresh files with the same schema and pragmas:
    // once with SQLite's default page cache (2 MiB, what the store runs
    // with), once with a 64 MiB one, to show what the cache size costs.
    let mut raw_seconds = Vec::new();
    for (file, cache_kib) in [("raw.db", None), ("raw-cache64.db", Some(64 * 1024))] {
        let raw_path = s.dir.path().join("data").join(file);
        let raw_mdm = fresh_store(&raw_path, integration.kind).await?;
        let took = raw_insert(&raw_path, raw_mdm, cache_kib, &groups, &users, &devices)
            .await
            .map_err(|e| format!("raw insert: {e}"))?;
        raw_seconds.push(took.as_secs_f64());
    }

    Ok(json!({
        "mode": "baseline",
        "kind": kind.as_str(),
        "n": n,
        "devices": devices.len(),
        "users": users.len(),
        "groups": groups.len(),
        "list_seconds": list_seconds,
        "store_seconds": store_seconds,
        "store_devices_seconds": store_devices_seconds,
        "raw_seconds": raw_seconds[0],
        "raw_cache64_seconds": raw_seconds[1],
    }))
}

/// A store file with the schema and the bench's tenant and MDM; the MDM's id.
async fn fresh_store(path: &Path, kind: mtd_adapter::MdmKind) -> Result<i64, String> {
    let store = Store::open(path).await.map_err(|e| e.to_string())?;
    let refs = store
        .sync_tenants(&[TenantRecord {
            id: TENANT.into(),
            display_name: "Bench".into(),
            mdms: vec![MdmRecord {
                name: MDM_NAME.into(),
                kind,
                url: "http://raw.invalid".into(),
            }],
        }])
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    Ok(refs.first().ok_or("no integration in the fresh store")?.id)
}

async fn collect<T>(mut pages: PageStream<'_, T>) -> Result<Vec<T>, String> {
    let mut all = Vec::new();
    while let Some(page) = pages.next().await {
        all.extend(page.map_err(|e| format!("listing: {e}"))?.items);
    }
    Ok(all)
}

/// Groups, users, devices and memberships as plain INSERTs (statements
/// prepared once and cached by sqlx) in one transaction, with SQLite's page
/// cache at its default or at `cache_kib`. Returns the time from `BEGIN` to
/// the end of `COMMIT`.
async fn raw_insert(
    path: &Path,
    mdm_id: i64,
    cache_kib: Option<u32>,
    groups: &[Group],
    users: &[User],
    devices: &[Device],
) -> Result<Duration, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    if let Some(kib) = cache_kib {
        sqlx::query(&format!("PRAGMA cache_size = -{kib}"))
            .execute(&mut conn)
            .await?;
    }
    let now = Utc::now();
    let started = Instant::now();
    let mut tx = conn.begin().await?;

    let mut group_ids: HashMap<&str, i64> = HashMap::new();
    let listed_groups = groups.iter().map(|g| (g.mdm_group_id.as_str(), &*g.name));
    let member_groups = devices
        .iter()
        .flat_map(|d| d.groups.iter().map(|g| (g.as_str(), g.as_str())));
    for (key, name) in listed_groups.chain(member_groups) {
        if group_ids.contains_key(key) {
            continue;
        }
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO groups (tenant_id, mdm_id, mdm_group_id, name, first_seen_at, updated_at,
                 last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5) RETURNING id",
        )
        .bind(TENANT)
        .bind(mdm_id)
        .bind(key)
        .bind(name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        group_ids.insert(key, id);
    }

    let mut user_ids: HashMap<&str, i64> = HashMap::new();
    for u in users
        .iter()
        .chain(devices.iter().filter_map(|d| d.user.as_ref()))
    {
        if user_ids.contains_key(u.mdm_user_id.as_str()) {
            continue;
        }
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO users (tenant_id, mdm_id, mdm_user_id, username, email, first_name,
                 last_name, display_name, first_seen_at, updated_at, last_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9) RETURNING id",
        )
        .bind(TENANT)
        .bind(mdm_id)
        .bind(&u.mdm_user_id)
        .bind(&u.username)
        .bind(&u.email)
        .bind(&u.first_name)
        .bind(&u.last_name)
        .bind(u.username.as_deref().unwrap_or(&u.mdm_user_id))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        user_ids.insert(&u.mdm_user_id, id);
    }

    for d in devices {
        let ids = &d.identifiers;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO devices (tenant_id, mdm_id, mdm_device_id, udid, serial, imei, mac,
                 name, platform, model, os_version, ownership, user_id, last_checkin_at,
                 first_seen_at, updated_at, last_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?15)
             RETURNING id",
        )
        .bind(TENANT)
        .bind(mdm_id)
        .bind(&d.mdm_device_id)
        .bind(ids.udid.as_deref().and_then(normalize_udid))
        .bind(ids.serial.as_deref().and_then(normalize_serial))
        .bind(ids.imei.as_deref().and_then(normalize_imei))
        .bind(ids.mac.as_deref().and_then(normalize_mac))
        .bind(&d.name)
        .bind(d.platform.as_str())
        .bind(&d.model)
        .bind(&d.os_version)
        .bind(d.ownership.as_str())
        .bind(
            d.user
                .as_ref()
                .and_then(|u| user_ids.get(u.mdm_user_id.as_str()).copied()),
        )
        .bind(d.last_checkin_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut member: Vec<i64> = d
            .groups
            .iter()
            .filter_map(|g| group_ids.get(g.as_str()).copied())
            .collect();
        member.sort_unstable();
        member.dedup();
        for g in member {
            sqlx::query("INSERT INTO device_groups (device_id, group_id) VALUES (?, ?)")
                .bind(id)
                .bind(g)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    let took = started.elapsed();
    conn.close().await?;
    Ok(took)
}

// ---------------------------------------------------------------------------
// Devices already stored: written by a child process of their own.
// ---------------------------------------------------------------------------

/// Tenants the `other` fill spreads its devices over.
const FILL_TENANTS: usize = 10;

/// Runs `--fill DB N other|same` in a child process, so the memory of the
/// bulk insert (a large page cache) is not the sync case's.
fn run_fill(db: &Path, prefill: Prefill) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let status = Command::new(exe)
        .arg("--fill")
        .arg(db)
        .arg(prefill.stored.to_string())
        .arg(if prefill.same { "same" } else { "other" })
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("cannot run the fill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the fill failed ({status})"))
    }
}

fn fill_child(args: &[String]) -> ExitCode {
    let [db, n, scope, ..] = args else {
        eprintln!("error: --fill DB N other|same");
        return ExitCode::FAILURE;
    };
    let Ok(n) = n.parse::<usize>() else {
        eprintln!("error: --fill: bad N `{n}`");
        return ExitCode::FAILURE;
    };
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
    match rt.block_on(fill(Path::new(db), n, scope == "same")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: fill: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `n` devices into the store at `db` (created and migrated by
/// [`Store::open`] if new) with plain SQL, in one transaction: random
/// identifiers in their normal forms (40-hex UDID and device id, 12-hex
/// serial, 15-digit IMEI, 12-hex MAC), so every identifier index holds `n`
/// more random keys. `same`: under a second MDM of the bench tenant (which
/// the config does not name, so it is retired at start and never synced);
/// else over [`FILL_TENANTS`] other tenants with one MDM each.
async fn fill(db: &Path, n: usize, same: bool) -> Result<(), String> {
    let e = |e: sqlx::Error| e.to_string();
    let store = Store::open(db).await.map_err(|e| e.to_string())?;
    store.close().await;
    let options = SqliteConnectOptions::new()
        .filename(db)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true);
    let mut conn = SqliteConnection::connect_with(&options).await.map_err(e)?;
    // Untimed and in its own process: a cache that holds every index.
    sqlx::query("PRAGMA cache_size = -2000000")
        .execute(&mut conn)
        .await
        .map_err(e)?;
    let now = "2026-12-01T00:00:00+00:00";
    let mut tx = conn.begin().await.map_err(e)?;
    let tenants: Vec<String> = if same {
        vec![TENANT.to_string()]
    } else {
        (0..FILL_TENANTS).map(|t| format!("fill-{t}")).collect()
    };
    for (t, tenant) in tenants.iter().enumerate() {
        sqlx::query(
            "INSERT INTO tenants (id, display_name, created_at, updated_at)
             VALUES (?1, ?1, ?2, ?2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(tenant)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
        let (mdm_id,): (i64,) = sqlx::query_as(
            "INSERT INTO mdm_integrations (tenant_id, name, kind, url, first_seen_at, updated_at)
             VALUES (?1, 'Fill MDM', 'soti', 'http://fill.invalid', ?2, ?2) RETURNING id",
        )
        .bind(tenant)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(e)?;
        let count = n / tenants.len() + usize::from(t < n % tenants.len());
        sqlx::query(
            "WITH RECURSIVE c (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?3)
             INSERT INTO devices (tenant_id, mdm_id, mdm_device_id, udid, serial, imei, mac,
                 name, platform, model, os_version, ownership, first_seen_at, updated_at,
                 last_seen_at)
             SELECT ?1, ?2, lower(hex(randomblob(20))), hex(randomblob(20)), hex(randomblob(6)),
                 printf('%015d', abs(random() % 1000000000000000)), lower(hex(randomblob(6))),
                 'Filled ' || i, 'ios', 'iPhone 15', '18.1', 'corporate', ?4, ?4, ?4
             FROM c",
        )
        .bind(tenant)
        .bind(mdm_id)
        .bind(count as i64)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    }
    tx.commit().await.map_err(e)?;
    conn.close().await.map_err(e)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// /proc readings.
// ---------------------------------------------------------------------------

/// Per thread of this process its name and CPU ticks, and the process's
/// own CPU ticks (which include the threads that have ended).
struct CpuReading(HashMap<u64, (String, u64)>, u64);

fn cpu_now() -> CpuReading {
    CpuReading(thread_cpu(), process_ticks())
}

/// User + system CPU ticks of the whole process, ended threads included
/// (`/proc/self/stat` fields 14 and 15).
fn process_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    ticks(11) + ticks(12)
}

/// A `kB` line of `/proc/self/status` (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds spent between two readings, by kind of thread: sqlx runs each
/// SQLite connection on its own thread (`sqlx-sqlite-worker-N`), so SQLite's
/// share is separate from the tokio workers' (HTTP client, simulator server,
/// JSON, the engine). A thread that ended in between (the sync run's own
/// writer connection, closed at the end of the run) is no longer listed: its
/// time is the process's total (which keeps it) less the listed threads', and
/// counts as SQLite's.
fn cpu_split(before: &CpuReading, after: &CpuReading) -> Value {
    let (before, after, process) = (&before.0, &after.0, after.1.saturating_sub(before.1));
    let (mut sqlite, mut tokio, mut other) = (0u64, 0u64, 0u64);
    for (tid, (comm, ticks)) in after {
        let spent = ticks.saturating_sub(before.get(tid).map_or(0, |b| b.1));
        if comm.starts_with("sqlx-sqlite") {
            sqlite += spent;
        } else if comm.starts_with("tokio-r") {
            tokio += spent;
        } else {
            other += spent;
        }
    }
    let ended = process.saturating_sub(sqlite + tokio + other);
    sqlite += ended;
    let s = |t: u64| t as f64 / USER_HZ;
    json!({
        "total": s(process.max(sqlite + tokio + other)),
        "ended_threads": s(ended),
        "sqlite": s(sqlite),
        "tokio": s(tokio),
        "other": s(other),
    })
}
