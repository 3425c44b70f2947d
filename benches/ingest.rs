//! Event-ingest and event → action benchmark (issue 7's last acceptance
//! point, issue 9's "Event ingest" and "Event → action").
//!
//! Run it with `cargo bench --bench ingest` (release profile). Options, as
//! arguments after `--` or from the environment:
//!
//! - `--seconds 5` / `INGEST_BENCH_SECONDS`: measured seconds per cell;
//! - `--clients 1,16,64` / `INGEST_BENCH_CLIENTS`: concurrent clients;
//! - `--rates 100,1000` / `INGEST_BENCH_RATES`: offered events/s for event → action;
//! - `--queued 10000` / `INGEST_BENCH_QUEUED`: pending locks of the sustained
//!   dispatch cell;
//! - `--only e2a,drain` / `INGEST_BENCH_ONLY`: run only these groups of cells
//!   (`ingest`, `lock`, `store`, `e2a`, `e2a-sync`, `e2a-burst`, `drain`; all
//!   by default);
//! - `--burst-devices 20000` / `INGEST_BENCH_BURST_DEVICES`: the devices the
//!   `e2a-burst` cell's batches cycle over (fewer repeat each device's
//!   threat sooner, which a writer group collapses);
//! - `--ids random|ordered` / `INGEST_BENCH_IDS`: the events' `event_id`s.
//!   `random` (the default) gives each event a UUIDv4, as agents send them;
//!   `ordered` gives `{prefix}-{n}` ids that sort near each other (what this
//!   bench sent before 2026-12-04), which spares the store most of the cost of
//!   its unique `(tenant_id, event_id)` key (BENCHMARKS.md, "seventh session");
//! - `RUST_LOG=info`: the daemon's logs on stderr (off by default).
//!
//! Each cell runs in a fresh copy of this binary (re-executed with `--case
//! MODE SHAPE N SECONDS`, like `benches/sync.rs`), so every cell starts
//! from an empty store and no backlog of one cell (the dispatcher's) leaks
//! into the next; the child prints one JSON line the parent collects.
//!
//! In a child, everything shares one process and the machine's cores: the
//! SOTI simulator and the daemon (`App::build_with_listener` on port 0, the
//! real router, store and dispatcher, default dispatch settings) run on one
//! multi-threaded runtime (`tokio-runtime-w*` threads, SQLite on sqlx's own
//! `sqlx-sqlite-*` threads), the load generator on a second runtime
//! (`bench-client` threads): reqwest, keep-alive, one client (one
//! connection) per concurrent worker. The load loop is closed (each worker
//! posts, waits for the answer, posts again), bounded by time (a 0.5 s
//! warm-up, then `--seconds`) and by count ([`MAX_REQUESTS`]).
//!
//! The cells:
//!
//! - `ingest-none`: `POST /v1/agent/events`, one event per request or
//!   batches of 100, every event decided `none` by a `* → none` rule: the
//!   ingest path alone (device lookup in the store, then the ingest writer
//!   commits the event with its `none` action row and audit row, together
//!   with the other requests waiting, and the 202 follows the commit).
//! - `ingest-lock`: the same, single events, with a `lock` rule and
//!   `action_cooldown_minutes = 0`, cycling over 10,000 seeded devices: each
//!   event also runs the cool-down and cap queries and queues a lock, which
//!   the dispatcher sends to the simulator in the same process meanwhile.
//! - `baseline`: the ceiling of this machine for this HTTP stack: an axum
//!   0.8 router served by `axum::serve` like the daemon, same body limit, the
//!   same signature check (tenant lookup, 300 s window, `sign_agent_request`
//!   and a constant-time compare), then the body parsed and validated by the
//!   daemon's own function (`http::parse_agent_events`: the typed events,
//!   each validated), and a 202 naming the accepted event ids, as the
//!   daemon's answer does; no storage.
//! - `store`: the store work of one `none` event without HTTP as ingest did
//!   it before the writer (`find_devices`, `begin` (`BEGIN IMMEDIATE`) on a
//!   pooled connection, the event's insert, `insert_action`, `commit`, one
//!   statement at a time; the one-row `insert_event` is gone since, so the
//!   cell calls `insert_events` with one event), from 1 or 16 tasks, one
//!   transaction per event or per 100: kept as the reference for that design
//!   (BENCHMARKS.md, "Event ingest"), which the ingest cells no longer use.
//! - `e2a`: event → action. Single `lock` events for distinct devices,
//!   paced (open loop) at the offered rate; the time from the client's 202
//!   (`Utc::now()` when the answer's head arrived) to the simulator's
//!   recorded arrival of the lock (`RecordedAction::at`), same clock, same
//!   process.
//! - `e2a-sync`: the same at 100 events/s while full syncs of
//!   [`SYNC_DEVICES`] devices run back to back in the daemon (started just
//!   before the first event, repeated until the last 202): what a sync's
//!   write transactions cost the events that wait for the write lock.
//! - `e2a-burst`: the same at 100 events/s while [`BURST_CLIENTS`] clients
//!   post batches of 100 `none` events for other devices (`--burst-devices`,
//!   in turn) in a closed loop
//!   (started [`WARMUP`] before the first lock): whether a burst of events
//!   that decide nothing delays the locks that matter, and how much of the
//!   burst the daemon takes meanwhile.
//! - `drain`: sustained dispatch to one simulator. `--queued` pending `lock`
//!   rows for distinct devices are committed at once (one transaction,
//!   through the store's own `insert_action`, as an approval or a deferred
//!   decision would leave them) and the dispatcher woken; delivered/s =
//!   locks that reached the simulator per second between the first and the
//!   last arrival (`RecordedAction::at`), default dispatcher settings (4
//!   calls in flight per MDM). Each row must reach the simulator exactly
//!   once and end `sent`.
//!
//! Each cell also reports where the CPU went during its measured window
//! (from `/proc/self/task/*/stat`), as a share of one core: SQLite's
//! threads, the server runtime (daemon and simulator), the client runtime.

mod common;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use common::{f, load_average, machine, thread_cpu};
#[allow(dead_code)]
#[path = "common/daemon.rs"]
mod daemon;
use daemon::{serve, signed_events, Served};
use mtd_adapter::DeviceIdentifier;
use mtd_connector::http::sign_agent_request;
use mtd_connector::store::{
    ActionRecordKind, ActionState, EventIdentifiers, NewAction, NewEvent, Store, SyncOutcome,
    SyncTrigger,
};
use mtd_sim::{self as sim, SimKind, SimOptions, Simulator};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const TENANT: &str = "bench";
const AGENT_SECRET: &str = "bench-agent-secret-0123456789";
const MDM_NAME: &str = "Bench SOTI";
const SEED: u64 = 7;
/// The line prefix that marks a case's result on the child's stdout.
const RESULT_PREFIX: &str = "INGEST-BENCH-RESULT ";
/// Events per request in the batch cells.
const BATCH: usize = 100;
/// Unmeasured seconds at the start of a closed-loop cell (connections open,
/// caches warm).
const WARMUP: Duration = Duration::from_millis(500);
/// The count limit of a closed-loop cell, whatever the time limit.
const MAX_REQUESTS: u64 = 2_000_000;
/// Devices seeded for the cells that do not need distinct devices.
const FEW_DEVICES: usize = 1_000;
/// Devices seeded for the lock ingest cells (events cycle over them).
const LOCK_DEVICES: usize = 10_000;
/// How long the e2a cell waits after its last 202 for the last action.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long a child waits for the initial sync.
const SYNC_LIMIT: Duration = Duration::from_secs(120);
/// Devices of the simulator in the `e2a-sync` cell: each re-sync writes them all.
const SYNC_DEVICES: usize = 50_000;
/// Offered events/s of the `e2a-sync` and `e2a-burst` cells.
const SYNC_E2A_RATE: u64 = 100;
/// Closed-loop clients posting batches of `none` events in the `e2a-burst` cell.
const BURST_CLIENTS: usize = 16;
/// Devices the `e2a-burst` cell's batches cycle over, by default.
const BURST_DEVICES: usize = 20_000;
/// Clock ticks per second of `/proc/*/stat` (USER_HZ; see `benches/sync.rs`).
const USER_HZ: f64 = 100.0;

/// `[[policy.rule]]`s: `device.jailbroken_rooted` → lock, anything else →
/// none; no cool-down, so a second lock for a device is only skipped while
/// its first is still waiting to be sent.
const POLICY: &str = "[policy]\naction_cooldown_minutes = 0\n\
    [[policy.rule]]\nthreat = \"device.jailbroken_rooted\"\naction = \"lock\"\n\
    [[policy.rule]]\nthreat = \"*\"\naction = \"none\"\n";
const THREAT_NONE: &str = "network.arp_mitm";
const THREAT_LOCK: &str = "device.jailbroken_rooted";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--case") {
        return child(&args[at + 1..]);
    }
    if common::help_asked(&args, include_str!("ingest.rs")) {
        return ExitCode::SUCCESS;
    }
    parent(&args)
}

// ---------------------------------------------------------------------------
// The parent: runs each cell in a child, prints the tables.
// ---------------------------------------------------------------------------

fn parse_list(what: &str, s: &str) -> Result<Vec<u64>, String> {
    s.split(',')
        .map(|n| n.trim().replace('_', "").parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|e| format!("{what}: `{s}`: {e}"))
}

fn parent(args: &[String]) -> ExitCode {
    let mut seconds = std::env::var("INGEST_BENCH_SECONDS").ok();
    let mut clients = std::env::var("INGEST_BENCH_CLIENTS").ok();
    let mut rates = std::env::var("INGEST_BENCH_RATES").ok();
    let mut queued = std::env::var("INGEST_BENCH_QUEUED").ok();
    let mut only = std::env::var("INGEST_BENCH_ONLY").ok();
    let mut ids = std::env::var("INGEST_BENCH_IDS").ok();
    let mut burst_devices = std::env::var("INGEST_BENCH_BURST_DEVICES").ok();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => seconds = it.next().cloned(),
            "--clients" => clients = it.next().cloned(),
            "--rates" => rates = it.next().cloned(),
            "--queued" => queued = it.next().cloned(),
            "--only" => only = it.next().cloned(),
            "--ids" => ids = it.next().cloned(),
            "--burst-devices" => burst_devices = it.next().cloned(),
            other => common::other_arg(other),
        }
    }
    const GROUPS: [&str; 7] = [
        "ingest",
        "lock",
        "store",
        "e2a",
        "e2a-sync",
        "e2a-burst",
        "drain",
    ];
    /// seconds, clients, rates, queued, groups.
    type Options = (u64, Vec<u64>, Vec<u64>, u64, Vec<String>);
    let parsed = (|| -> Result<Options, String> {
        let seconds = parse_list("--seconds", seconds.as_deref().unwrap_or("5"))?;
        let clients = parse_list("--clients", clients.as_deref().unwrap_or("1,16,64"))?;
        let rates = parse_list("--rates", rates.as_deref().unwrap_or("100,1000"))?;
        let queued = match parse_list("--queued", queued.as_deref().unwrap_or("10000"))?[..] {
            [n] if n > 1 => n,
            _ => return Err("--queued takes one number above 1".into()),
        };
        let only: Vec<String> = match only.as_deref() {
            None => GROUPS.iter().map(|g| g.to_string()).collect(),
            Some(list) => list.split(',').map(|g| g.trim().to_string()).collect(),
        };
        if let Some(g) = only.iter().find(|g| !GROUPS.contains(&g.as_str())) {
            return Err(format!("--only: unknown group `{g}` (one of {GROUPS:?})"));
        }
        match seconds.as_slice() {
            [s] if *s > 0 => Ok((*s, clients, rates, queued, only)),
            _ => Err("--seconds takes one number above 0".into()),
        }
    })();
    let (seconds, clients, rates, queued, only) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ids = match ids.as_deref().unwrap_or("random") {
        i @ ("random" | "ordered") => i,
        other => {
            eprintln!("error: --ids: `{other}` (random or ordered)");
            return ExitCode::FAILURE;
        }
    };
    let burst_devices = match burst_devices
        .as_deref()
        .map(|b| parse_list("--burst-devices", b))
    {
        None => BURST_DEVICES,
        Some(Ok(n)) if n.len() == 1 && n[0] > 0 => n[0] as usize,
        Some(Ok(_)) => {
            eprintln!("error: --burst-devices takes one number above 0");
            return ExitCode::FAILURE;
        }
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The children read them from the environment (see `random_ids`, `burst_devices`).
    std::env::set_var("INGEST_BENCH_IDS", ids);
    std::env::set_var("INGEST_BENCH_BURST_DEVICES", burst_devices.to_string());

    println!("Event ingest and event → action benchmark");
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());
    println!("event ids: {ids}");
    println!(
        "{seconds} s measured per cell after a {:.1} s warm-up; each cell in its own process; \
         simulator, daemon and load generator in that one process, sharing the machine's cores",
        WARMUP.as_secs_f64()
    );

    let mut failed = false;
    let mut run = |mode: &str, shape: &str, n: u64| {
        eprintln!("[{mode} {shape} {n}] …");
        let v = run_case(mode, shape, n, seconds);
        if let Some(e) = v.get("error") {
            eprintln!("[{mode} {shape} {n}] error: {e}");
            failed = true;
        }
        v
    };

    let wanted = |g: &str| only.iter().any(|o| o == g);
    // Event ingest vs the baseline.
    let mut ingest_rows = Vec::new();
    if wanted("ingest") {
        for shape in ["single", "batch"] {
            for &c in &clients {
                let base = run("baseline", shape, c);
                let ingest = run("ingest-none", shape, c);
                ingest_rows.push((shape, c, ingest, base));
            }
        }
    }
    let mut lock_rows = Vec::new();
    if wanted("lock") {
        for &c in &clients {
            lock_rows.push((c, run("ingest-lock", "single", c)));
        }
    }
    let mut store_rows = Vec::new();
    if wanted("store") {
        for (shape, c) in [("single", 1), ("single", 16), ("batch", 1)] {
            store_rows.push((shape, c, run("store", shape, c)));
        }
    }
    let mut e2a_rows = Vec::new();
    let mut e2a_sync_row = None;
    if wanted("e2a") {
        for &r in &rates {
            e2a_rows.push((r, run("e2a", "single", r)));
        }
    }
    if wanted("e2a-sync") {
        e2a_sync_row = Some(run("e2a-sync", "single", SYNC_E2A_RATE));
    }
    let e2a_burst_row = wanted("e2a-burst").then(|| run("e2a-burst", "single", SYNC_E2A_RATE));
    let drain = wanted("drain").then(|| run("drain", "single", queued));

    if wanted("ingest") {
        print_ingest(&ingest_rows);
    }
    if wanted("lock") {
        print_lock(&lock_rows);
    }
    if wanted("store") {
        print_store(&store_rows);
    }
    if wanted("e2a") {
        print_e2a(&e2a_rows);
    }
    if let Some(v) = &e2a_sync_row {
        print_e2a_sync(v);
    }
    if let Some(v) = &e2a_burst_row {
        print_e2a_burst(v);
    }
    if let Some(v) = &drain {
        print_drain(v);
    }
    print_targets(&ingest_rows, &e2a_rows, drain.as_ref());
    println!(
        "load average at the end: {} (other work on the machine lowers every figure)",
        load_average()
    );

    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs one cell in a child process; its result, or `{"error": …}`.
fn run_case(mode: &str, shape: &str, n: u64, seconds: u64) -> Value {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return json!({ "error": format!("cannot find this executable: {e}") }),
    };
    let out = Command::new(exe)
        .args(["--case", mode, shape, &n.to_string(), &seconds.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return json!({ "error": format!("cannot run the case: {e}") }),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(
            || json!({ "error": format!("the case printed no result (exit {})", out.status) }),
        )
}

fn err(v: &Value) -> Option<&str> {
    v.get("error").map(|e| e.as_str().unwrap_or("?"))
}

/// `sqlite/server/client` CPU as % of one core during the measured window.
fn cpu(v: &Value) -> String {
    let c = &v["cpu"];
    format!(
        "{:.0}/{:.0}/{:.0}",
        f(c, "sqlite"),
        f(c, "server"),
        f(c, "client")
    )
}

fn print_ingest(rows: &[(&str, u64, Value, Value)]) {
    println!();
    println!(
        "== Event ingest: signed events with durable commit (policy `* → none`) vs baseline \
         (same HTTP stack and signature check, 202, no storage)"
    );
    println!(
        "{:>6} {:>7} | {:>9} {:>8} {:>7} {:>7} {:>12} | {:>9} {:>7} {:>7} {:>10} | {:>6}",
        "shape",
        "clients",
        "events/s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "CPU sq/sv/cl",
        "events/s",
        "p50 ms",
        "p99 ms",
        "CPU sv/cl",
        "ratio"
    );
    for (shape, c, i, b) in rows {
        if let Some(e) = err(i).or(err(b)) {
            println!("{shape:>6} {c:>7} error: {e}");
            continue;
        }
        println!(
            "{:>6} {:>7} | {:>9.0} {:>8.0} {:>7.2} {:>7.2} {:>12} | {:>9.0} {:>7.2} {:>7.2} {:>10} | {:>5.1}%",
            shape,
            c,
            f(i, "events_per_s"),
            f(i, "requests_per_s"),
            f(i, "p50_ms"),
            f(i, "p99_ms"),
            cpu(i),
            f(b, "events_per_s"),
            f(b, "p50_ms"),
            f(b, "p99_ms"),
            format!("{:.0}/{:.0}", f(&b["cpu"], "server"), f(&b["cpu"], "client")),
            100.0 * f(i, "events_per_s") / f(b, "events_per_s"),
        );
    }
    println!(
        "left: the daemon; right: the baseline; ratio = ingest events/s / baseline events/s. \
         p50/p99: time from sending the request to the 202's head (ack latency). \
         CPU: % of one core during the measured window on SQLite's threads (sq), the server \
         runtime: daemon + simulator (sv), the load generator (cl)."
    );
    for (shape, c, i, _) in rows {
        if err(i).is_some() {
            continue;
        }
        println!(
            "  ingest {shape} ×{c}: {} requests measured, {} non-202, {} events stored \
             (of {} acknowledged over the whole run), {} without a device",
            i["requests"],
            i["errors"],
            i["stored_events"],
            i["acked_events_total"],
            i["events_without_device"]
        );
    }
}

fn print_lock(rows: &[(u64, Value)]) {
    println!();
    println!(
        "== Event ingest with a `lock` rule (single events, {LOCK_DEVICES} devices cycled, \
         cool-down 0; the dispatcher sends meanwhile)"
    );
    println!(
        "{:>7} {:>9} {:>7} {:>7} {:>12}  actions by state at the end; locks at the simulator",
        "clients", "events/s", "p50 ms", "p99 ms", "CPU sq/sv/cl"
    );
    for (c, v) in rows {
        if let Some(e) = err(v) {
            println!("{c:>7} error: {e}");
            continue;
        }
        println!(
            "{:>7} {:>9.0} {:>7.2} {:>7.2} {:>12}  {} ; {}",
            c,
            f(v, "events_per_s"),
            f(v, "p50_ms"),
            f(v, "p99_ms"),
            cpu(v),
            v["actions_by_state"],
            v["sim_locks"]
        );
    }
}

fn print_store(rows: &[(&str, u64, Value)]) {
    println!();
    println!(
        "== Store alone (no HTTP): find_devices + BEGIN IMMEDIATE + insert_events(1 event) + \
         insert_action(none) + COMMIT per event on pooled connections: the path ingest used before its writer task"
    );
    println!(
        "{:>6} {:>6} {:>10} {:>9} {:>7} {:>7} {:>12}  mean ms per tx: lookups / BEGIN IMMEDIATE / inserts / COMMIT",
        "shape", "tasks", "events/s", "tx/s", "p50 ms", "p99 ms", "CPU sq/sv/cl"
    );
    for (shape, c, v) in rows {
        if let Some(e) = err(v) {
            println!("{shape:>6} {c:>6} error: {e}");
            continue;
        }
        let ph = &v["phases_ms_per_tx"];
        println!(
            "{:>6} {:>6} {:>10.0} {:>9.0} {:>7.2} {:>7.2} {:>12}  {:.3} / {:.3} / {:.3} / {:.3}",
            shape,
            c,
            f(v, "events_per_s"),
            f(v, "requests_per_s"),
            f(v, "p50_ms"),
            f(v, "p99_ms"),
            cpu(v),
            f(ph, "lookup"),
            f(ph, "begin"),
            f(ph, "insert"),
            f(ph, "commit"),
        );
    }
    println!("single: one transaction per event; batch: one per {BATCH} events (lookups still one per event). p50/p99: per transaction.");
}

fn print_e2a(rows: &[(u64, Value)]) {
    println!();
    println!("== Event → action: time from the 202 to the simulator receiving the lock (paced single events, distinct devices)");
    println!(
        "{:>8} {:>8} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "offered",
        "achieved",
        "acked",
        "actions",
        "p50 ms",
        "p99 ms",
        "max ms",
        "ack p50",
        "ack p99",
        "missing"
    );
    for (r, v) in rows {
        if let Some(e) = err(v) {
            println!("{r:>8} error: {e}");
            continue;
        }
        println!(
            "{:>8} {:>8.0} {:>6} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>8.2} {:>8.2} {:>8}",
            r,
            f(v, "achieved_per_s"),
            v["acked"],
            v["actions"],
            f(v, "p50_ms"),
            f(v, "p99_ms"),
            f(v, "max_ms"),
            f(v, "ack_p50_ms"),
            f(v, "ack_p99_ms"),
            v["missing"]
        );
    }
    println!(
        "p50/p99/max: RecordedAction::at minus the client's Utc::now() at the 202 (same clock, same \
         process); default dispatcher settings (woken on commit, 4 calls in flight per MDM). \
         missing: acknowledged lock events whose lock had not reached the simulator {} s after the last 202.",
        DRAIN_LIMIT.as_secs()
    );
}

fn print_e2a_sync(v: &Value) {
    println!();
    println!(
        "== Event → action while full syncs of {SYNC_DEVICES} devices run back to back in the daemon"
    );
    if let Some(e) = err(v) {
        println!("error: {e}");
        return;
    }
    println!(
        "{}; syncs finished while the events went in: {} (failed: {})",
        paced_locks(v),
        v["syncs_done"],
        v["syncs_failed"]
    );
}

/// The paced locks of an `e2a` cell with work in the background: rates,
/// counts, 202 → simulator and the 202's own latency.
fn paced_locks(v: &Value) -> String {
    format!(
        "offered {}/s, achieved {:.0}/s, acked {}, actions {}, missing {}; 202 → simulator p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms; the 202 itself p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        v["offered_per_s"],
        f(v, "achieved_per_s"),
        v["acked"],
        v["actions"],
        v["missing"],
        f(v, "p50_ms"),
        f(v, "p99_ms"),
        f(v, "max_ms"),
        f(v, "ack_p50_ms"),
        f(v, "ack_p99_ms"),
        f(v, "ack_max_ms"),
    )
}

fn print_e2a_burst(v: &Value) {
    println!();
    println!(
        "== Event → action while {BURST_CLIENTS} clients post batches of {BATCH} `none` events for {} devices (closed loop)",
        burst_devices()
    );
    if let Some(e) = err(v) {
        println!("error: {e}");
        return;
    }
    let burst = &v["burst"];
    println!("locks: {}", paced_locks(v));
    println!(
        "burst meanwhile: {:.0} events/s acknowledged, p50 {:.1} ms, p99 {:.1} ms per batch, {} non-202",
        f(burst, "events_per_s"),
        f(burst, "p50_ms"),
        f(burst, "p99_ms"),
        burst["errors"]
    );
}

fn print_drain(v: &Value) {
    println!();
    println!("== Sustained dispatch: pending locks for distinct devices queued at once, delivered to one simulator");
    if let Some(e) = err(v) {
        println!("error: {e}");
        return;
    }
    println!(
        "{:>7} {:>9} {:>11} {:>9} {:>9} {:>8} {:>9}  actions by state at the end",
        "queued", "arrived", "delivered/s", "span s", "first ms", "missing", "repeated"
    );
    println!(
        "{:>7} {:>9} {:>11.0} {:>9.2} {:>9.1} {:>8} {:>9}  {}",
        v["queued"].as_u64().unwrap_or(0),
        v["arrived"].as_u64().unwrap_or(0),
        f(v, "delivered_per_s"),
        f(v, "span_s"),
        f(v, "first_ms"),
        v["missing"].as_u64().unwrap_or(0),
        v["repeated"].as_u64().unwrap_or(0),
        v["actions_by_state"]
    );
    println!(
        "delivered/s: (arrived - 1) / (last arrival - first arrival) at the simulator (RecordedAction::at); \
         first ms: commit of the rows → first arrival; default dispatcher settings (4 calls in flight per MDM)."
    );
}

fn print_targets(
    ingest: &[(&str, u64, Value, Value)],
    e2a: &[(u64, Value)],
    drain: Option<&Value>,
) {
    println!();
    println!("== Issue 9 and 19 targets");
    let best = ingest
        .iter()
        .filter(|(s, _, i, b)| *s == "single" && err(i).is_none() && err(b).is_none())
        .max_by(|a, b| f(&a.2, "events_per_s").total_cmp(&f(&b.2, "events_per_s")));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    if let Some((_, c, i, b)) = best {
        let eps = f(i, "events_per_s");
        let ratio = eps / f(b, "events_per_s");
        println!(
            "single events/s ≥ 10,000 on 2 cores: {} ({eps:.0} at {c} clients, {cores} cores here)",
            if eps >= 10_000.0 { "MET" } else { "MISSED" }
        );
        println!(
            "≥ 40% of the baseline (issue 9): {} ({:.1}% at {c} clients; per clients: {})",
            if ratio >= 0.4 { "MET" } else { "MISSED" },
            100.0 * ratio,
            ingest
                .iter()
                .filter(|(s, _, i, b)| *s == "single" && err(i).is_none() && err(b).is_none())
                .map(|(_, c, i, b)| format!(
                    "{c}: {:.1}%",
                    100.0 * f(i, "events_per_s") / f(b, "events_per_s")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Issue 19: single events at 16 and 64 clients ≥ 50 % of the baseline,
    // batches of 100 ≥ 30 %, each cell in the same run as its baseline.
    for (shape, clients, share) in [("single", &[16, 64][..], 0.5), ("batch", &[][..], 0.3)] {
        let cells: Vec<(u64, f64)> = ingest
            .iter()
            .filter(|(s, c, i, b)| {
                *s == shape
                    && (clients.is_empty() || clients.contains(c))
                    && err(i).is_none()
                    && err(b).is_none()
            })
            .map(|(_, c, i, b)| (*c, f(i, "events_per_s") / f(b, "events_per_s")))
            .collect();
        if cells.is_empty() {
            continue;
        }
        println!(
            "{shape} events ≥ {:.0}% of the baseline (issue 19): {} ({})",
            100.0 * share,
            if cells.iter().all(|(_, r)| *r >= share) {
                "MET"
            } else {
                "MISSED"
            },
            cells
                .iter()
                .map(|(c, r)| format!("{c} clients: {:.1}%", 100.0 * r))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (r, v) in e2a {
        if err(v).is_some() {
            continue;
        }
        let p99 = f(v, "p99_ms");
        let missing = v["missing"].as_u64().unwrap_or(0);
        println!(
            "event → action p99 < 100 ms at {r}/s: {} (p99 {p99:.1} ms{})",
            if p99 < 100.0 && missing == 0 {
                "MET"
            } else {
                "MISSED"
            },
            if missing > 0 {
                format!(", {missing} actions missing")
            } else {
                String::new()
            }
        );
    }
    if let Some(v) = drain.filter(|v| err(v).is_none()) {
        let rate = f(v, "delivered_per_s");
        let clean = v["missing"].as_u64() == Some(0) && v["repeated"].as_u64() == Some(0);
        println!(
            "sustained ≥ 2,000 actions/s to one simulator: {} ({rate:.0}/s over {} locks{})",
            if rate >= 2000.0 && clean {
                "MET"
            } else {
                "MISSED"
            },
            v["queued"],
            if clean {
                ""
            } else {
                ", some missing or repeated"
            }
        );
    }
}

// ---------------------------------------------------------------------------
// The child: one cell, one JSON line.
// ---------------------------------------------------------------------------

fn child(args: &[String]) -> ExitCode {
    let parsed = match args {
        [mode, shape, n, secs, ..] => match (n.parse::<u64>(), secs.parse::<u64>()) {
            (Ok(n), Ok(s)) => Some((mode.clone(), shape.clone(), n, s)),
            _ => None,
        },
        _ => None,
    };
    let Some((mode, shape, n, seconds)) = parsed else {
        eprintln!("error: --case MODE SHAPE N SECONDS");
        return ExitCode::FAILURE;
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // Two runtimes: the server's (daemon + simulator, one worker per CPU
    // like the daemon's) and the load generator's, so the client's tasks
    // never queue behind the server's in one run queue; the OS shares the cores.
    let runtimes = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .and_then(|server| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("bench-client")
                .build()
                .map(|client| (server, client))
        });
    let (server, client) = match runtimes {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtimes: {e}");
            return ExitCode::FAILURE;
        }
    };
    let batch = if shape == "batch" { BATCH } else { 1 };
    let window = Duration::from_secs(seconds);
    let result = match mode.as_str() {
        "baseline" => baseline_case(&server, &client, n as usize, batch, window),
        "ingest-none" => ingest_case(&server, &client, n as usize, batch, window, false),
        "ingest-lock" => ingest_case(&server, &client, n as usize, batch, window, true),
        "store" => store_case(&server, n as usize, batch, window),
        "e2a" => e2a_case(&server, &client, n, window, Background::Quiet),
        "e2a-sync" => e2a_case(&server, &client, n, window, Background::Syncs(SYNC_DEVICES)),
        "e2a-burst" => e2a_case(
            &server,
            &client,
            n,
            window,
            Background::Burst(BURST_CLIENTS),
        ),
        "drain" => drain_case(&server, n as usize),
        other => Err(format!("unknown case mode `{other}`")),
    };
    let (value, code) = match result {
        Ok(mut v) => {
            v["mode"] = json!(mode);
            v["shape"] = json!(shape);
            v["n"] = json!(n);
            (v, ExitCode::SUCCESS)
        }
        Err(e) => (json!({ "error": e }), ExitCode::FAILURE),
    };
    println!("{RESULT_PREFIX}{value}");
    // Do not wait for the runtimes' blocking threads (sqlx workers) to wind down.
    server.shutdown_background();
    client.shutdown_background();
    code
}

/// The simulator, the daemon served on port 0 and its initial sync done.
struct Daemon {
    addr: std::net::SocketAddr,
    store: Store,
    /// Wakes the daemon's dispatcher (rows committed behind its back).
    wake: mtd_connector::dispatch::DispatchHandle,
    sim: Simulator,
    devices: Vec<String>,
    db_path: PathBuf,
    served: Served,
    // Last: the store's files live here.
    _dir: tempfile::TempDir,
}

async fn start_daemon(devices: usize) -> Result<Daemon, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind the simulator: {e}"))?;
    let sim = Simulator::start(
        listener,
        SimOptions::new(vec![SimKind::Soti], devices, SEED),
    )
    .map_err(|e| format!("start the simulator: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let path = write_config(dir.path(), &sim)?;
    let served = serve(&path).await?;
    // The initial sync (background_sync = true): wait for its run record.
    served.initial_sync(served.only_mdm()?, SYNC_LIMIT).await?;
    let devices: Vec<String> = sim
        .soti()
        .ok_or("no SOTI simulator")?
        .devices()
        .iter()
        .filter_map(|d| d["DeviceId"].as_str().map(str::to_string))
        .collect();
    Ok(Daemon {
        addr: served.addr,
        store: served.store.clone(),
        wake: served.wake.clone(),
        sim,
        devices,
        db_path: dir.path().join("data/connector.db"),
        served,
        _dir: dir,
    })
}

impl Daemon {
    /// Stops the daemon like SIGTERM, bounded (a dispatcher backlog must not
    /// hold the bench up), then the simulator; the directory goes last.
    async fn shutdown(self) {
        self.served.stop().await;
        self.sim.shutdown().await;
    }
}

/// `connector.toml` and one tenant with one SOTI MDM at the simulator, an
/// initial sync and no schedule, [`POLICY`].
fn write_config(root: &Path, sim: &Simulator) -> Result<PathBuf, String> {
    let io = |e: std::io::Error| format!("write the config: {e}");
    std::fs::create_dir_all(root.join("tenants.d")).map_err(io)?;
    let main = root.join("connector.toml");
    std::fs::write(
        &main,
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data/connector.db\"\n\
         [admin]\ntoken = \"bench-admin-token-abcdef\"\n[tenants]\ndir = \"tenants.d\"\n\
         [sync]\nfull_sync_every = \"0\"\n",
    )
    .map_err(io)?;
    std::fs::write(
        root.join(format!("tenants.d/{TENANT}.toml")),
        format!(
            "id = \"{TENANT}\"\ndisplay_name = \"Bench\"\nagent_secret = \"{AGENT_SECRET}\"\n\n\
             [[mdm]]\nname = \"{MDM_NAME}\"\nkind = \"soti\"\nurl = \"{}\"\nbackground_sync = true\n\
             mask_pii = false\n[mdm.credentials]\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\
             username = \"{}\"\npassword = \"{}\"\n\n{POLICY}",
            sim.base_url(SimKind::Soti),
            sim::soti::DEFAULT_CLIENT_ID,
            sim::soti::DEFAULT_CLIENT_SECRET,
            sim::soti::DEFAULT_USERNAME,
            sim::soti::DEFAULT_PASSWORD
        ),
    )
    .map_err(io)?;
    Ok(main)
}

// ---------------------------------------------------------------------------
// The baseline server: the same stack and signature check, no storage.
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct BaselineState {
    tenants: Arc<Vec<(String, String)>>,
}

/// `POST /v1/agent/events` without the store: the signature check, the
/// body parsed as the daemon parses it, then 202 with the event ids.
/// Mirrors `http::agent::verify`: tenant lookup, the timestamp's digits and
/// window, one HMAC (`sign_agent_request`, the same function) and a
/// constant-time compare; then `http::parse_agent_events`, the daemon's
/// parser (typed events, each validated). No store.
async fn baseline_events(
    State(state): State<BaselineState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(tenant), Some(ts), Some(sig)) = (
        h("x-mtd-tenant"),
        h("x-mtd-timestamp"),
        h("x-mtd-signature"),
    ) else {
        return unauthorized();
    };
    let Some((_, secret)) = state.tenants.iter().find(|(id, _)| id == tenant) else {
        return unauthorized();
    };
    let Some(t) = ts
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| ts.parse::<i64>().ok())
        .flatten()
    else {
        return unauthorized();
    };
    if t.abs_diff(Utc::now().timestamp()) > 300 {
        return unauthorized();
    }
    let expected = sign_agent_request(secret.as_bytes(), t, &body);
    if !constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
        return unauthorized();
    }
    match mtd_connector::http::parse_agent_events(&body) {
        Ok(events) => {
            let accepted: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
            (
                StatusCode::ACCEPTED,
                Json(json!({"accepted": accepted, "duplicates": []})),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn unauthorized() -> axum::response::Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "unauthorized"})),
    )
        .into_response()
}

/// Equal length and every byte equal, without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn baseline_case(
    server: &tokio::runtime::Runtime,
    client: &tokio::runtime::Runtime,
    clients: usize,
    batch: usize,
    window: Duration,
) -> Result<Value, String> {
    let (addr, stop) = server.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind the baseline: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let router = Router::new()
            .route("/v1/agent/events", post(baseline_events))
            .layer(DefaultBodyLimit::max(1024 * 1024))
            .with_state(BaselineState {
                tenants: Arc::new(vec![(TENANT.to_string(), AGENT_SECRET.to_string())]),
            });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok::<_, String>((addr, stop))
    })?;
    // Any ids will do: the baseline does not look devices up.
    let devices: Arc<Vec<String>> =
        Arc::new((0..FEW_DEVICES).map(|i| format!("dev-{i}")).collect());
    let load = client.block_on(closed_loop(
        addr,
        Load {
            clients,
            batch,
            window,
            devices,
            threat: THREAT_NONE,
        },
    ));
    let _ = stop.send(());
    Ok(load.into_json())
}

// ---------------------------------------------------------------------------
// The daemon cells.
// ---------------------------------------------------------------------------

fn ingest_case(
    server: &tokio::runtime::Runtime,
    client: &tokio::runtime::Runtime,
    clients: usize,
    batch: usize,
    window: Duration,
    lock: bool,
) -> Result<Value, String> {
    let daemon = server.block_on(start_daemon(if lock { LOCK_DEVICES } else { FEW_DEVICES }))?;
    let load = client.block_on(closed_loop(
        daemon.addr,
        Load {
            clients,
            batch,
            window,
            devices: Arc::new(daemon.devices.clone()),
            threat: if lock { THREAT_LOCK } else { THREAT_NONE },
        },
    ));
    let mut v = load.into_json();
    let sim_locks = daemon
        .sim
        .soti()
        .map(|s| {
            s.core()
                .actions()
                .iter()
                .filter(|a| (200..300).contains(&a.status))
                .count()
        })
        .unwrap_or(0);
    let counts = server.block_on(store_counts(&daemon.db_path));
    server.block_on(daemon.shutdown());
    let counts = counts?;
    v["stored_events"] = counts["events"].clone();
    v["events_without_device"] = counts["without_device"].clone();
    v["actions_by_state"] = counts["actions_by_state"].clone();
    v["sim_locks"] = json!(sim_locks);
    Ok(v)
}

/// What the store holds, read through a separate read-only connection (what
/// is committed, not what the app's pool sees).
async fn store_counts(db: &Path) -> Result<Value, String> {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .map_err(|e| format!("open the store read-only: {e}"))?;
    let q = |e: sqlx::Error| format!("count: {e}");
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM threat_events")
        .fetch_one(&pool)
        .await
        .map_err(q)?;
    let without: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM threat_events WHERE device_id IS NULL")
            .fetch_one(&pool)
            .await
            .map_err(q)?;
    let by_state: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM actions GROUP BY state ORDER BY state")
            .fetch_all(&pool)
            .await
            .map_err(q)?;
    pool.close().await;
    let by_state: serde_json::Map<String, Value> =
        by_state.into_iter().map(|(s, n)| (s, json!(n))).collect();
    Ok(json!({ "events": events, "without_device": without, "actions_by_state": by_state }))
}

/// The store work of `none` events without HTTP, from `tasks` tasks.
fn store_case(
    server: &tokio::runtime::Runtime,
    tasks: usize,
    batch: usize,
    window: Duration,
) -> Result<Value, String> {
    server.block_on(async {
        let daemon = start_daemon(FEW_DEVICES).await?;
        let devices = Arc::new(daemon.devices.clone());
        let count = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let measure_from = start + WARMUP;
        let end = measure_from + window;
        let cpu_at = Arc::new(Mutex::new(None));
        let mut handles = Vec::new();
        for w in 0..tasks {
            let (store, devices, count, cpu_at) = (
                daemon.store.clone(),
                devices.clone(),
                count.clone(),
                cpu_at.clone(),
            );
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut last = measure_from;
                let mut seq = 0u64;
                // Measured seconds in: lookups, BEGIN IMMEDIATE (the wait for
                // the write lock), the inserts, COMMIT.
                let mut phases = [0f64; 4];
                loop {
                    let t0 = Instant::now();
                    if t0 >= end || count.fetch_add(1, Ordering::Relaxed) >= MAX_REQUESTS {
                        break;
                    }
                    if t0 >= measure_from {
                        mark_cpu(&cpu_at);
                    }
                    let now = Utc::now();
                    let mut found = Vec::with_capacity(batch);
                    for k in 0..batch {
                        let d = &devices[(w * 7919 + seq as usize * batch + k) % devices.len()];
                        let id = DeviceIdentifier::mdm_device_id(d).ok_or("empty device id")?;
                        let device = store
                            .find_devices(TENANT, &id)
                            .await
                            .map_err(|e| e.to_string())?
                            .into_iter()
                            .next();
                        found.push((d.clone(), device));
                    }
                    let t_lookup = Instant::now();
                    let mut tx = store.begin().await.map_err(|e| e.to_string())?;
                    let t_begin = Instant::now();
                    for (k, (d, device)) in found.into_iter().enumerate() {
                        // One event per statement, as before the writer (the
                        // one-row insert is gone; this is the group insert
                        // with a group of one).
                        let inserted = tx
                            .insert_events(&[&NewEvent {
                                tenant_id: TENANT.into(),
                                event_id: format!("store-{w}-{seq}-{k}"),
                                device_id: device.as_ref().map(|x| x.id),
                                identifiers: EventIdentifiers {
                                    udid: None,
                                    serial: None,
                                    imei: None,
                                    mac: None,
                                    mdm_device_id: Some(d),
                                },
                                threat_type: THREAT_NONE.into(),
                                severity: "high".into(),
                                threat_name: Some("bench".into()),
                                detected_at: now,
                                received_at: now,
                                network: Some(
                                    json!({"ssid": "CoffeeShop", "bssid": "aa:bb:cc:dd:ee:ff"}),
                                ),
                                details: Some(json!({})),
                                status: mtd_connector::store::ThreatStatus::Detected,
                                threat_key: String::new(),
                                settled: true,
                            }])
                            .await
                            .map_err(|e| e.to_string())?;
                        tx.insert_action(&NewAction {
                            signal_level: None,
                            tenant_id: TENANT.into(),
                            event_id: inserted.rows[0],
                            device_id: device.as_ref().map(|x| x.id),
                            mdm_id: device.as_ref().map(|x| x.mdm_id),
                            kind: ActionRecordKind::None,
                            parent_action_id: None,
                            state: ActionState::Skipped,
                            reason: Some("policy action is none: recorded only".into()),
                            next_attempt_at: None,
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    }
                    let t_insert = Instant::now();
                    tx.commit().await.map_err(|e| e.to_string())?;
                    let t1 = Instant::now();
                    if t0 >= measure_from {
                        lat.push((t1 - t0).as_secs_f64() * 1e3);
                        last = last.max(t1);
                        for (p, (a, b)) in phases.iter_mut().zip([
                            (t0, t_lookup),
                            (t_lookup, t_begin),
                            (t_begin, t_insert),
                            (t_insert, t1),
                        ]) {
                            *p += (b - a).as_secs_f64();
                        }
                    }
                    seq += 1;
                }
                Ok::<_, String>((lat, last, phases))
            }));
        }
        let mut lat = Vec::new();
        let mut last = measure_from;
        let mut phases = [0f64; 4];
        for h in handles {
            let (l, t, p) = h.await.map_err(|e| format!("a store task died: {e}"))??;
            lat.extend(l);
            last = last.max(t);
            for (sum, x) in phases.iter_mut().zip(p) {
                *sum += x;
            }
        }
        let cpu_end = thread_cpu();
        let cpu_start = cpu_at.lock().expect("cpu lock").take();
        let elapsed = (last - measure_from).as_secs_f64();
        let result = LoadResult {
            latencies_ms: lat,
            errors: 0,
            elapsed,
            batch,
            cpu: cpu_start.map(|s| cpu_split(&s, &cpu_end, elapsed)),
            acked_events_total: 0,
        };
        let transactions = result.latencies_ms.len().max(1) as f64;
        daemon.shutdown().await;
        let mut v = result.into_json();
        let per_tx = |s: f64| s * 1e3 / transactions;
        v["phases_ms_per_tx"] = json!({
            "lookup": per_tx(phases[0]),
            "begin": per_tx(phases[1]),
            "insert": per_tx(phases[2]),
            "commit": per_tx(phases[3]),
        });
        Ok(v)
    })
}

/// One paced request: its index (= its device), status, the 202's wall-clock
/// time and the ack latency in ms.
type Ack = (usize, u16, DateTime<Utc>, f64);

/// What else the daemon does while the `e2a` cells' locks go in.
#[derive(Clone, Copy)]
enum Background {
    Quiet,
    /// Full syncs back to back, of this many devices.
    Syncs(usize),
    /// This many clients posting batches of `none` events, closed loop.
    Burst(usize),
}

/// Event → action at `rate` events/s, paced, distinct devices.
fn e2a_case(
    server: &tokio::runtime::Runtime,
    client: &tokio::runtime::Runtime,
    rate: u64,
    window: Duration,
    background: Background,
) -> Result<Value, String> {
    let sync_devices = match background {
        Background::Syncs(n) => Some(n),
        _ => None,
    };
    let total = (rate as f64 * window.as_secs_f64()).round() as usize;
    // One device per event, plus one to warm the dispatcher's token up; a
    // burst names devices of its own after those.
    let burst_devices = if matches!(background, Background::Burst(_)) {
        burst_devices()
    } else {
        0
    };
    let devices = (total + 1 + burst_devices)
        .max(FEW_DEVICES)
        .max(sync_devices.unwrap_or(0));
    let daemon = server.block_on(start_daemon(devices))?;
    if daemon.devices.len() < total + 1 {
        return Err(format!(
            "the simulator has {} devices, {} needed",
            daemon.devices.len(),
            total + 1
        ));
    }
    let soti = daemon.sim.soti().ok_or("no SOTI simulator")?;
    let addr = daemon.addr;
    let devices = Arc::new(daemon.devices.clone());
    let engine = daemon.served.engine.clone();
    let server_handle = server.handle().clone();
    let stop_syncing = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let outcome = client.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        // Warm-up: one lock end to end (the adapter's token, connections).
        let (status, _) = post_once(
            &http,
            addr,
            "e2a-warm",
            &devices[total..=total],
            THREAT_LOCK,
        )
        .await?;
        if status != 202 {
            return Err(format!("warm-up event answered {status}"));
        }
        let warm = &devices[total];
        let deadline = Instant::now() + DRAIN_LIMIT;
        while !soti
            .core()
            .actions()
            .iter()
            .any(|a| a.device_id.as_deref() == Some(warm.as_str()))
        {
            if Instant::now() > deadline {
                return Err("the warm-up lock never reached the simulator".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Full syncs back to back in the daemon while the events go in.
        let syncing = sync_devices.map(|_| {
            let engine = engine.clone();
            let stop = stop_syncing.clone();
            server_handle.spawn(async move {
                let (mut runs, mut failed) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    match engine
                        .full_sync_now(TENANT, None, SyncTrigger::Admin, None)
                        .await
                    {
                        Ok(reports)
                            if reports.iter().all(|r| r.outcome == SyncOutcome::Succeeded) =>
                        {
                            runs += 1
                        }
                        // Counted and reported; paced, so a broken sync cannot spin.
                        _ => {
                            failed += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                (runs, failed)
            })
        });
        // Batches of `none` events for other devices, from WARMUP before the
        // first lock until the last.
        let burst = match background {
            Background::Burst(clients) => {
                let load = Load {
                    clients,
                    batch: BATCH,
                    window,
                    devices: Arc::new(devices[total + 1..].to_vec()),
                    threat: THREAT_NONE,
                };
                let task = tokio::spawn(closed_loop(addr, load));
                tokio::time::sleep(WARMUP).await;
                Some(task)
            }
            _ => None,
        };
        // Paced, open loop: request i leaves at start + i/rate whatever the
        // earlier ones are doing (bounded in flight, so a stall cannot pile up
        // unboundedly; the achieved rate shows if the bound was hit).
        let in_flight = Arc::new(tokio::sync::Semaphore::new(1024));
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let start = tokio::time::Instant::now();
        let mut joins = tokio::task::JoinSet::new();
        for i in 0..total {
            tokio::time::sleep_until(start + period * i as u32).await;
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let (http, devices, acks) = (http.clone(), devices.clone(), acks.clone());
            joins.spawn(async move {
                let t0 = Instant::now();
                let r = post_once(
                    &http,
                    addr,
                    &format!("e2a-{i}"),
                    &devices[i..=i],
                    THREAT_LOCK,
                )
                .await;
                let acked = Utc::now();
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                drop(permit);
                let status = r.map(|(s, _)| s).unwrap_or(0);
                acks.lock().expect("acks lock").push((i, status, acked, ms));
            });
        }
        while joins.join_next().await.is_some() {}
        let sent_for = start.elapsed().as_secs_f64();
        let acks = std::mem::take(&mut *acks.lock().expect("acks lock"));
        stop_syncing.store(true, std::sync::atomic::Ordering::Release);
        let syncs = match syncing {
            Some(task) => Some(task.await.map_err(|e| format!("the sync loop: {e}"))?),
            None => None,
        };
        let burst = match burst {
            Some(task) => Some(task.await.map_err(|e| format!("the burst: {e}"))?),
            None => None,
        };

        // Wait (bounded) until every acknowledged lock reached the simulator.
        let ok: HashMap<&str, DateTime<Utc>> = acks
            .iter()
            .filter(|a| a.1 == 202)
            .map(|a| (devices[a.0].as_str(), a.2))
            .collect();
        let deadline = Instant::now() + DRAIN_LIMIT;
        let arrived = loop {
            let arrived: HashMap<String, DateTime<Utc>> = soti
                .core()
                .actions()
                .into_iter()
                .filter(|a| (200..300).contains(&a.status))
                .filter_map(|a| {
                    let d = a.device_id?;
                    ok.contains_key(d.as_str()).then_some((d, a.at))
                })
                .fold(HashMap::new(), |mut m, (d, at)| {
                    m.entry(d).or_insert(at);
                    m
                });
            if arrived.len() >= ok.len() || Instant::now() > deadline {
                break arrived;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok::<_, String>((acks, ok, arrived, sent_for, syncs, burst))
    });
    let (acks, ok, arrived, sent_for, syncs, burst) = match outcome {
        Ok(o) => o,
        Err(e) => {
            server.block_on(daemon.shutdown());
            return Err(e);
        }
    };
    let mut e2a: Vec<f64> = arrived
        .iter()
        .filter_map(|(d, at)| {
            let acked = ok.get(d.as_str())?;
            Some((*at - *acked).num_microseconds()? as f64 / 1e3)
        })
        .collect();
    e2a.sort_by(f64::total_cmp);
    let mut ack_ms: Vec<f64> = acks.iter().filter(|a| a.1 == 202).map(|a| a.3).collect();
    ack_ms.sort_by(f64::total_cmp);
    let counts = server.block_on(store_counts(&daemon.db_path));
    server.block_on(daemon.shutdown());
    Ok(json!({
        "offered_per_s": rate,
        "sent": acks.len(),
        "acked": ok.len(),
        "non_202": acks.len() - ok.len(),
        "achieved_per_s": acks.len() as f64 / sent_for,
        "actions": arrived.len(),
        "missing": ok.len() - arrived.len(),
        "p50_ms": pct(&e2a, 50.0),
        "p99_ms": pct(&e2a, 99.0),
        "min_ms": e2a.first().copied(),
        "max_ms": e2a.last().copied(),
        "ack_p50_ms": pct(&ack_ms, 50.0),
        "ack_p99_ms": pct(&ack_ms, 99.0),
        "ack_max_ms": ack_ms.last().copied(),
        "sync_devices": sync_devices,
        "syncs_done": syncs.map(|s| s.0),
        "syncs_failed": syncs.map(|s| s.1),
        "burst": burst.map(LoadResult::into_json),
        "actions_by_state": counts.map(|c| c["actions_by_state"].clone()).unwrap_or(Value::Null),
    }))
}

/// Sustained dispatch: `queued` pending locks for distinct devices committed
/// at once, then delivered/s at the simulator.
fn drain_case(server: &tokio::runtime::Runtime, queued: usize) -> Result<Value, String> {
    let daemon = server.block_on(start_daemon(queued + 1))?;
    let result = server.block_on(drain(&daemon, queued));
    let counts = server.block_on(store_counts(&daemon.db_path));
    server.block_on(daemon.shutdown());
    let mut v = result?;
    v["actions_by_state"] = counts
        .map(|c| c["actions_by_state"].clone())
        .unwrap_or(Value::Null);
    Ok(v)
}

async fn drain(daemon: &Daemon, queued: usize) -> Result<Value, String> {
    let soti = daemon.sim.soti().ok_or("no SOTI simulator")?;
    let ids = |e: mtd_connector::store::StoreError| format!("the store: {e}");
    // Every device's store id, by its SOTI DeviceId.
    let mut targets = Vec::with_capacity(queued + 1);
    for d in daemon.devices.iter().take(queued + 1) {
        let found = daemon
            .store
            .find_devices(TENANT, &DeviceIdentifier::MdmDeviceId(d.clone()))
            .await
            .map_err(ids)?;
        let device = found.first().ok_or(format!("device {d} not stored"))?;
        targets.push((d.clone(), device.id, device.mdm_id));
    }
    if targets.len() < queued + 1 {
        return Err(format!(
            "{} devices stored, {} needed",
            targets.len(),
            queued + 1
        ));
    }
    let lock = |(_, device, mdm): &(String, i64, i64)| NewAction {
        signal_level: None,
        tenant_id: TENANT.into(),
        event_id: None,
        device_id: Some(*device),
        mdm_id: Some(*mdm),
        kind: ActionRecordKind::Lock,
        parent_action_id: None,
        state: ActionState::Pending,
        reason: Some("bench: queued".into()),
        next_attempt_at: None,
    };
    // Warm-up: one lock end to end (the adapter's token, connections).
    let (warm, rest) = targets.split_last().ok_or("no devices")?;
    daemon.store.insert_action(&lock(warm)).await.map_err(ids)?;
    daemon.wake.wake();
    let deadline = Instant::now() + DRAIN_LIMIT;
    while soti.core().action_count() < 1 {
        if Instant::now() > deadline {
            return Err("the warm-up lock never reached the simulator".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    soti.core().clear_records();

    let mut tx = daemon.store.begin().await.map_err(ids)?;
    for t in rest {
        tx.insert_action(&lock(t)).await.map_err(ids)?;
    }
    tx.commit().await.map_err(ids)?;
    let committed = Utc::now();
    daemon.wake.wake();
    let deadline = Instant::now() + DRAIN_LIMIT + Duration::from_secs(queued as u64 / 100);
    while soti.core().action_count() < queued && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recorded = soti.core().actions();
    let mut per_device: HashMap<&str, usize> = HashMap::new();
    let mut times = Vec::with_capacity(recorded.len());
    for a in &recorded {
        if (200..300).contains(&a.status) {
            if let Some(d) = a.device_id.as_deref() {
                *per_device.entry(d).or_default() += 1;
                times.push(a.at);
            }
        }
    }
    times.sort();
    let missing = rest
        .iter()
        .filter(|t| !per_device.contains_key(t.0.as_str()))
        .count();
    let repeated = per_device.values().filter(|n| **n > 1).count();
    let (first, last) = match (times.first(), times.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => return Err("no lock reached the simulator".into()),
    };
    let span = (last - first).num_microseconds().unwrap_or(0) as f64 / 1e6;
    Ok(json!({
        "queued": queued,
        "arrived": times.len(),
        "missing": missing,
        "repeated": repeated,
        "span_s": span,
        "delivered_per_s": if span > 0.0 { (times.len() - 1) as f64 / span } else { 0.0 },
        "first_ms": (first - committed).num_microseconds().unwrap_or(0) as f64 / 1e3,
    }))
}

// ---------------------------------------------------------------------------
// The load generator.
// ---------------------------------------------------------------------------

struct Load {
    clients: usize,
    /// Events per request: 1 is a single event, more a `{"events":[…]}` batch.
    batch: usize,
    window: Duration,
    /// Device ids the events name, in turn.
    devices: Arc<Vec<String>>,
    threat: &'static str,
}

struct LoadResult {
    /// Per measured request, ms from send to the answer's head.
    latencies_ms: Vec<f64>,
    errors: u64,
    /// Seconds from the start of the measured window to its last answer.
    elapsed: f64,
    batch: usize,
    cpu: Option<Value>,
    /// Events acknowledged over the whole run, warm-up included.
    acked_events_total: u64,
}

impl LoadResult {
    fn into_json(mut self) -> Value {
        self.latencies_ms.sort_by(f64::total_cmp);
        let n = self.latencies_ms.len() as f64;
        json!({
            "requests": self.latencies_ms.len(),
            "errors": self.errors,
            "seconds": self.elapsed,
            "requests_per_s": n / self.elapsed,
            "events_per_s": n * self.batch as f64 / self.elapsed,
            "p50_ms": pct(&self.latencies_ms, 50.0),
            "p99_ms": pct(&self.latencies_ms, 99.0),
            "max_ms": self.latencies_ms.last().copied(),
            "cpu": self.cpu,
            "acked_events_total": self.acked_events_total,
        })
    }
}

fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

/// The devices of the `e2a-burst` cell's batches (`INGEST_BENCH_BURST_DEVICES`,
/// set by the parent).
fn burst_devices() -> usize {
    std::env::var("INGEST_BENCH_BURST_DEVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(BURST_DEVICES)
}

/// Whether events get random UUIDv4 ids (`INGEST_BENCH_IDS`, set by the parent).
fn random_ids() -> bool {
    static RANDOM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RANDOM.get_or_init(|| std::env::var("INGEST_BENCH_IDS").as_deref() != Ok("ordered"))
}

/// A random UUIDv4 in its usual text form.
fn uuid_v4() -> String {
    let n = rand::random::<u128>() & !(0xf000 << 64) & !(0xc << 60) | (0x4000 << 64) | (0x8 << 60);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The JSON of `devices.len()` events (one object, or a batch of several);
/// their ids are `{prefix}-{k}`, or UUIDs (see [`random_ids`]).
fn events_body(prefix: &str, devices: &[String], threat: &str) -> String {
    let event = |k: usize, d: &str| {
        let id = if random_ids() {
            uuid_v4()
        } else {
            format!("{prefix}-{k}")
        };
        format!(
            r#"{{"event_id":"{id}","detected_at":"2026-11-22T10:00:00Z","device":{{"mdm_device_id":"{d}"}},"threat":{{"type":"{threat}","severity":"high","name":"bench"}},"network":{{"ssid":"CoffeeShop","bssid":"aa:bb:cc:dd:ee:ff"}},"details":{{}}}}"#
        )
    };
    if devices.len() == 1 {
        return event(0, &devices[0]);
    }
    let events: Vec<String> = devices
        .iter()
        .enumerate()
        .map(|(k, d)| event(k, d))
        .collect();
    format!(r#"{{"events":[{}]}}"#, events.join(","))
}

/// Signs and posts one body; the status (the body is read so the
/// connection can be reused).
async fn post_once(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    prefix: &str,
    devices: &[String],
    threat: &str,
) -> Result<(u16, Instant), String> {
    let body = events_body(prefix, devices, threat);
    let response = signed_events(http, addr, TENANT, AGENT_SECRET, body)
        .send()
        .await
        .map_err(|e| format!("post: {e}"))?;
    let head = Instant::now();
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    Ok((status, head))
}

/// Records the CPU reading at the start of the measured window, once.
fn mark_cpu(at: &Mutex<Option<HashMap<u64, (String, u64)>>>) {
    let mut at = at.lock().expect("cpu lock");
    if at.is_none() {
        *at = Some(thread_cpu());
    }
}

/// `clients` workers, each with its own keep-alive connection, posting in a
/// closed loop until the window ends or [`MAX_REQUESTS`] is reached.
async fn closed_loop(addr: std::net::SocketAddr, load: Load) -> LoadResult {
    let count = Arc::new(AtomicU64::new(0));
    let next_device = Arc::new(AtomicU64::new(0));
    let acked_events = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + load.window;
    let cpu_at = Arc::new(Mutex::new(None));
    let mut handles = Vec::new();
    for w in 0..load.clients {
        let (count, next_device, acked_events, cpu_at, devices) = (
            count.clone(),
            next_device.clone(),
            acked_events.clone(),
            cpu_at.clone(),
            load.devices.clone(),
        );
        let (batch, threat) = (load.batch, load.threat);
        handles.push(tokio::spawn(async move {
            // One client per worker: one keep-alive connection each.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("a plain-HTTP client builds");
            let (mut lat, mut errors, mut last) = (Vec::new(), 0u64, measure_from);
            let mut picked = Vec::with_capacity(batch);
            let mut seq = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end || count.fetch_add(1, Ordering::Relaxed) >= MAX_REQUESTS {
                    break;
                }
                if t0 >= measure_from {
                    mark_cpu(&cpu_at);
                }
                picked.clear();
                let first = next_device.fetch_add(batch as u64, Ordering::Relaxed) as usize;
                picked.extend((0..batch).map(|k| devices[(first + k) % devices.len()].clone()));
                let r = post_once(&http, addr, &format!("ev-{w}-{seq}"), &picked, threat).await;
                seq += 1;
                let ok = matches!(r, Ok((202, _)));
                if ok {
                    acked_events.fetch_add(batch as u64, Ordering::Relaxed);
                }
                if t0 < measure_from {
                    continue;
                }
                match r {
                    Ok((202, head)) => {
                        lat.push((head - t0).as_secs_f64() * 1e3);
                        last = last.max(head);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors, last)
        }));
    }
    let (mut lat, mut errors, mut last) = (Vec::new(), 0, measure_from);
    for h in handles {
        match h.await {
            Ok((l, e, t)) => {
                lat.extend(l);
                errors += e;
                last = last.max(t);
            }
            Err(_) => errors += 1,
        }
    }
    let cpu_end = thread_cpu();
    let elapsed = (last - measure_from).as_secs_f64();
    let cpu_start = cpu_at.lock().expect("cpu lock").take();
    LoadResult {
        latencies_ms: lat,
        errors,
        elapsed,
        batch: load.batch,
        cpu: cpu_start.map(|s| cpu_split(&s, &cpu_end, elapsed)),
        acked_events_total: acked_events.load(Ordering::Relaxed),
    }
}

// ---------------------------------------------------------------------------
// /proc readings.
// ---------------------------------------------------------------------------

/// CPU between two readings as % of one core over `seconds`, by kind of
/// thread: SQLite (`sqlx-sqlite-*`), the load generator (`bench-client`),
/// the server runtime (`tokio-runtime-w*`: daemon and simulator), other.
fn cpu_split(
    before: &HashMap<u64, (String, u64)>,
    after: &HashMap<u64, (String, u64)>,
    seconds: f64,
) -> Value {
    let (mut sqlite, mut client, mut server, mut other) = (0u64, 0u64, 0u64, 0u64);
    for (tid, (comm, ticks)) in after {
        let spent = ticks.saturating_sub(before.get(tid).map_or(0, |b| b.1));
        if comm.starts_with("sqlx-sqlite") {
            sqlite += spent;
        } else if comm.starts_with("bench-client") {
            client += spent;
        } else if comm.starts_with("tokio-r") {
            server += spent;
        } else {
            other += spent;
        }
    }
    let pct = |t: u64| 100.0 * t as f64 / USER_HZ / seconds;
    json!({
        "sqlite": pct(sqlite),
        "server": pct(server),
        "client": pct(client),
        "other": pct(other),
    })
}
