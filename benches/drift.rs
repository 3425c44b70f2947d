//! Risk-signal drift repair at scale (issue 17): what the repair after a full
//! sync (`repair_risk_drift` in `src/sync/run.rs`) costs at 100,000 devices,
//! per MDM kind, in time and in requests to the MDM.
//!
//! `cargo bench --bench drift` (release). Options after `--`:
//! `--devices N` (default 100,000 per simulator), `--kinds soti,bcdm`
//! (default: soti, maas360, airwatch, bcdm, in that order).
//!
//! For each kind, one process: the simulator (`mtd_sim::Simulator`, seed 7)
//! and the daemon (`App::build_with_listener`: real router, store,
//! dispatcher, sync engine) on one runtime, with **two tenants on the same
//! simulator**: `on` with `[mdm.risk_signal] enabled = true` and `off`
//! without it. `off` is the baseline: the identical full sync of the
//! identical MDM, without the repair.
//!
//! Setup (not measured): both initial syncs, side by side, awaited through
//! `SyncEngine::full_sync_now` (`initial_sync = false`: a run's
//! `finished_at` is written before its repair, and a repair still running
//! while levels are delivered writes stale levels back); then one signed
//! `high` event (`network.arp_mitm`, batches of 100) for 1 % of the devices
//! the connector stores, posted to both tenants; the bench waits until every
//! `signal_risk` of `on` is `sent` and the simulator holds `High` for each
//! of those devices. During the setup the simulator's rate limit is off (it
//! would only make the setup slow); it is back at the simulator's default
//! (the vendor's documented limit) before the measured syncs; the BCDM
//! adapter paces itself at 10 requests per second whatever the simulator
//! allows. Then 100 of
//! those levels are changed at the simulator behind the connector's back (50
//! to `Secured`, 50 to `Low`). All 100 are at-risk devices: a per-device
//! read-back (SOTI, MaaS360) by design only reads devices that are not
//! `secured` or whose last signal is unconfirmed, so a drift on a device
//! the connector holds as `secured` is not one this repair looks for.
//!
//! Measured, one after the other: `SyncEngine::full_sync_now` of `off`, then
//! of `on` (the call returns once the run, repair included, is over: the
//! run's `finished_at` in the store is written before the repair). For
//! each: wall time, the time after the last page was stored (removal check,
//! run record and, for `on`, the repair), the process's CPU time
//! (simulator included), and the requests the simulator received (writes
//! of levels that the dispatcher may start right after the repair are
//! counted apart). The bench fails (exit code 1) unless the `on` sync
//! enqueued exactly one `signal_risk` per changed level. Afterwards it
//! waits for those writes to reach the simulator, then runs the repair's
//! store query alone (`devices_to_verify` / `listing_risk_drift`) to show
//! its share.
//!
//! Figures depend on the machine's load: the load average is printed with
//! them. The simulators find a device by scanning their device list, so
//! each device a read-back names (SOTI and MaaS360: each read; AirWatch:
//! each member of a level tag in the answer) costs the simulator O(N); the
//! bench times those look-ups in-process on a sample and prints the share of
//! the `on` sync that is the simulator's, not the connector's.
//!
//! Duration at 100,000 devices on 2 CPUs: 23 to 26 minutes, most of it
//! MaaS360 (the simulator's own cost per page: 100 to 150 s per full sync,
//! 200 to 260 s for the two initial ones side by side) and BCDM (the adapter's 10
//! requests per second: 92 s per full sync, 100 s for the 1,000 level
//! writes). `--kinds` runs a subset.

#[allow(dead_code)]
mod common;

use common::{load_average, machine};
#[allow(dead_code)]
#[path = "common/daemon.rs"]
mod daemon;
use daemon::{post_until_accepted, serve};
use mtd_connector::store::{Store, SyncOutcome, SyncTrigger};
use mtd_connector::sync::{ProgressFn, SyncEngine};
use mtd_sim::{
    AirwatchOptions, AirwatchState, BcdmOptions, BcdmState, Maas360Options, Maas360State,
    RecordedRequest, SimCore, SimKind, SimOptions, Simulator, SotiState,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SEED: u64 = 7;
const SECRET_ON: &str = "bench-agent-secret-on-0123456789";
const SECRET_OFF: &str = "bench-agent-secret-off-012345678";
/// The custom attribute (SOTI, MaaS360) or tag prefix (AirWatch) by default.
const NAME: &str = "MTD_Threat_Level";
const BATCH: usize = 100;
/// Levels changed behind the connector's back (fewer with tiny `--devices`).
const DRIFTS: usize = 100;
/// Clock ticks per second of `/proc/self/stat` (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;
const ORDER: [SimKind; 4] = [
    SimKind::Soti,
    SimKind::Maas360,
    SimKind::Airwatch,
    SimKind::Bcdm,
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if common::help_asked(&args, include_str!("drift.rs")) {
        return ExitCode::SUCCESS;
    }
    let mut devices = 100_000usize;
    let mut kinds = ORDER.to_vec();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--devices" => match it.next().and_then(|v| v.replace('_', "").parse().ok()) {
                Some(n) if n >= 100 => devices = n,
                _ => {
                    eprintln!("--devices takes a number of at least 100");
                    return ExitCode::from(2);
                }
            },
            "--kinds" => {
                let parsed: Result<Vec<SimKind>, _> = it
                    .next()
                    .map(|s| s.split(',').map(|k| k.trim().parse()).collect())
                    .unwrap_or_else(|| Ok(Vec::new()));
                match parsed {
                    Ok(v) if !v.is_empty() => kinds = v,
                    Ok(_) => {
                        eprintln!("--kinds takes a list such as soti,bcdm");
                        return ExitCode::from(2);
                    }
                    Err(e) => {
                        eprintln!("--kinds: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            other => common::other_arg(other),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!("Risk-signal drift repair benchmark: {devices} devices per simulator");
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failed = false;
    for kind in kinds {
        eprintln!("[{kind}] …");
        match rt.block_on(run(kind, devices)) {
            Ok(r) => {
                print_case(&r);
                failed |= r.drifts_found != r.drifts_made;
                rows.push(r);
            }
            Err(e) => {
                println!("\n== {kind}: error: {e}");
                failed = true;
            }
        }
    }
    print_summary(&rows);
    println!(
        "\nwhole bench: {:.0} s; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    if failed {
        println!(
            "FAILED: a kind did not run, or its repair did not find exactly the levels changed"
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One measured full sync.
#[derive(Debug, Default, Clone)]
struct Sync {
    seconds: f64,
    /// From the last stored page to the end of the run.
    tail: f64,
    cpu: f64,
    /// Requests the simulator received, writes of levels excluded.
    requests: usize,
    /// Writes of levels during the sync (the dispatcher's, not the sync's).
    writes: usize,
    /// Of `requests`, those the simulator's rate limit refused (429).
    refused: usize,
    /// Requests by method and path shape, writes excluded.
    shapes: BTreeMap<String, usize>,
    listed: u64,
}

#[derive(Debug)]
struct Case {
    kind: SimKind,
    devices: usize,
    stored: usize,
    flagged: usize,
    seeding: f64,
    initial: f64,
    delivery: f64,
    off: Sync,
    on: Sync,
    drifts_made: usize,
    drifts_found: usize,
    repaired: Option<f64>,
    /// The simulator's own look-ups of devices while it answers the
    /// read-back, timed in-process on a sample: (look-ups timed, their
    /// seconds, look-ups the read-back made it do, seconds extrapolated to
    /// them). `None` for BCDM (no read-back requests).
    sim_lookups: Option<(usize, f64, usize, f64)>,
    /// The repair's store side alone, run again after the syncs: (what,
    /// rows, seconds of the query, seconds to turn the rows into adapter
    /// devices).
    store_probe: (&'static str, usize, f64, f64),
}

/// The simulator of one kind, as this bench uses it.
enum Mdm {
    Soti(Arc<SotiState>),
    Maas360(Arc<Maas360State>),
    Airwatch(Arc<AirwatchState>),
    Bcdm(Arc<BcdmState>),
}

impl Mdm {
    fn of(sim: &Simulator, kind: SimKind) -> Result<Mdm, String> {
        let missing = || format!("no {kind} simulator");
        Ok(match kind {
            SimKind::Soti => Mdm::Soti(sim.soti().ok_or_else(missing)?),
            SimKind::Maas360 => Mdm::Maas360(sim.maas360().ok_or_else(missing)?),
            SimKind::Airwatch => Mdm::Airwatch(sim.airwatch().ok_or_else(missing)?),
            SimKind::Bcdm => Mdm::Bcdm(sim.bcdm().ok_or_else(missing)?),
        })
    }

    fn core(&self) -> &SimCore {
        match self {
            Mdm::Soti(s) => s.core(),
            Mdm::Maas360(s) => s.core(),
            Mdm::Airwatch(s) => s.core(),
            Mdm::Bcdm(s) => s.core(),
        }
    }

    /// The ids (as agents send them) of the devices the connector stores:
    /// BCDM's only iOS devices, the others all.
    fn device_ids(&self) -> Vec<String> {
        match self {
            Mdm::Soti(s) => s
                .devices()
                .iter()
                .filter_map(|d| d["DeviceId"].as_str().map(str::to_string))
                .collect(),
            Mdm::Maas360(s) => s.device_ids(),
            Mdm::Airwatch(s) => s.device_ids().iter().map(u64::to_string).collect(),
            Mdm::Bcdm(s) => s
                .devices()
                .into_iter()
                .filter(|d| d.platform == "iOS")
                .map(|d| d.device_id)
                .collect(),
        }
    }

    /// The level the simulator holds, lower case (`None`: nothing written).
    fn level(&self, id: &str) -> Option<String> {
        match self {
            Mdm::Soti(s) => s.custom_attribute(id, NAME).map(|v| v.to_lowercase()),
            Mdm::Maas360(s) => s.custom_attribute(id, NAME).map(|v| v.to_lowercase()),
            Mdm::Airwatch(s) => {
                let levels = s.risk_levels(id.parse().ok()?, NAME);
                Some(levels.last().map_or("secured".into(), |l| l.to_lowercase()))
            }
            Mdm::Bcdm(s) => s.risk_level(id),
        }
    }

    /// Sets a level behind the connector's back, as an admin in the MDM's
    /// console would (`level` capitalised: `Secured`, `Low`, …).
    fn tamper(&self, id: &str, level: &str) -> Result<(), String> {
        let e = |e: mtd_sim::ControlError| format!("{id}: {e}");
        match self {
            Mdm::Soti(s) => s.set_custom_attribute(id, NAME, Some(level)).map_err(e),
            Mdm::Maas360(s) => s
                .set_custom_attribute_value(id, NAME, Some(level))
                .map_err(e),
            Mdm::Airwatch(s) => {
                let device: u64 = id.parse().map_err(|_| format!("{id}: not a number"))?;
                for l in ["Low", "Medium", "High", "Critical"] {
                    let _ = s.untag_device(&format!("{NAME}_{l}"), device);
                }
                if level == "Secured" {
                    Ok(())
                } else {
                    s.tag_device(&format!("{NAME}_{level}"), device).map_err(e)
                }
            }
            Mdm::Bcdm(s) => s.set_risk_level(id, Some(&level.to_lowercase())).map_err(e),
        }
    }

    /// Off during the setup; `false` puts back the simulator's default.
    fn rate_limit(&self, on: bool) {
        match self {
            Mdm::Soti(_) => {}
            Mdm::Maas360(s) => s.set_rate_limit(if on {
                Maas360Options::default().rate_limit_per_second
            } else {
                0
            }),
            Mdm::Airwatch(s) => {
                let d = AirwatchOptions::default();
                if on {
                    s.set_rate_limit(d.rate_limit, d.rate_limit_window_seconds)
                } else {
                    s.set_rate_limit(u32::MAX, 1)
                }
            }
            Mdm::Bcdm(s) => s.set_rate_limit(if on {
                BcdmOptions::default().rate_limit_per_second
            } else {
                0
            }),
        }
    }

    /// What the simulator does for each device a read-back asks about
    /// (SOTI, MaaS360: the device read; AirWatch: each member of a level tag
    /// it lists, named in the answer): find the device, a scan of its
    /// device list. `false` for BCDM.
    fn look_up(&self, id: &str) -> bool {
        match self {
            Mdm::Soti(s) => s.device(id).is_some(),
            Mdm::Maas360(s) => s.device(id).is_some(),
            Mdm::Airwatch(s) => id.parse().ok().and_then(|id| s.device(id)).is_some(),
            Mdm::Bcdm(_) => false,
        }
    }
}

/// A request that writes a level (the dispatcher's, never the sync's).
fn is_write(r: &RecordedRequest) -> bool {
    r.method != "GET"
        && [
            "/customAttributes",
            "setCustomAttributeValue",
            "/tags/",
            "/risk",
        ]
        .iter()
        .any(|p| r.path.contains(p))
}

/// `GET /MobiControl/api/devices/{id}/customAttributes`: the path without
/// its query, a segment with a digit among four or more characters as `{id}`.
fn shape(r: &RecordedRequest) -> String {
    let path = r.path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path
        .split('/')
        .map(|s| {
            if s.len() >= 4 && s.chars().any(|c| c.is_ascii_digit()) {
                "{id}"
            } else {
                s
            }
        })
        .collect();
    format!("{} {}", r.method, segments.join("/"))
}

/// User + system CPU seconds of this process (its exited threads included).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / USER_HZ
}

async fn run(kind: SimKind, devices: usize) -> Result<Case, String> {
    let t = Instant::now();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let sim = Simulator::start(listener, SimOptions::new(vec![kind], devices, SEED))
        .map_err(|e| e.to_string())?;
    let seeding = t.elapsed().as_secs_f64();
    let mdm = Mdm::of(&sim, kind)?;
    mdm.rate_limit(false);

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = write_config(dir.path(), &sim, kind)?;
    let served = serve(&path).await?;
    let (addr, store, engine) = (served.addr, served.store.clone(), served.engine.clone());
    let on_id = served.mdm_of("on")?;

    let outcome = async {
        // Both initial syncs, side by side, awaited through the engine: a
        // run's `finished_at` is written before its repair, and a repair
        // still running while the events below are delivered compares
        // levels read after a delivery with the stored ones read before
        // it (an AirWatch setup once got 1,260 signals for 1,000 devices).
        let t = Instant::now();
        let (a, b) = tokio::join!(
            engine.full_sync_now("on", None, SyncTrigger::Initial, None),
            engine.full_sync_now("off", None, SyncTrigger::Initial, None)
        );
        for reports in [a, b] {
            let reports = reports.map_err(|e| format!("initial sync: {e}"))?;
            if let Some(r) = reports.iter().find(|r| r.outcome != SyncOutcome::Succeeded) {
                return Err(format!(
                    "initial sync of {} failed: {:?}",
                    r.tenant_id, r.error
                ));
            }
        }
        let initial = t.elapsed().as_secs_f64();

        // 1 % of the stored devices, spread over the listing, go to `high`
        // at both tenants.
        let ids = mdm.device_ids();
        let flagged_n = (devices / 100).clamp(1, ids.len());
        let step = ids.len() / flagged_n;
        let flagged: Vec<String> = ids.iter().step_by(step).take(flagged_n).cloned().collect();
        drop(ids);
        let t = Instant::now();
        for (tenant, secret) in [("on", SECRET_ON), ("off", SECRET_OFF)] {
            post_high(addr, tenant, secret, &flagged).await?;
        }
        wait_delivered(&store, &mdm, &flagged).await?;
        let delivery = t.elapsed().as_secs_f64();
        mdm.rate_limit(true);

        // The drifts: half to Secured, half to Low.
        let drifts_made = DRIFTS.min(flagged.len());
        let changed = &flagged[..drifts_made];
        for (i, id) in changed.iter().enumerate() {
            mdm.tamper(id, if i % 2 == 0 { "Secured" } else { "Low" })?;
        }

        let before = signal_rows(&store, "on").await?;
        let off = measured(&engine, &mdm, "off").await?;
        if signal_rows(&store, "off").await? != 0 {
            return Err("the `off` tenant has signal_risk rows".to_string());
        }
        let on = measured(&engine, &mdm, "on").await?;
        let drifts_found = signal_rows(&store, "on").await? - before;

        // The repair's writes reaching the simulator.
        let t = Instant::now();
        let repaired = loop {
            if changed
                .iter()
                .all(|id| mdm.level(id).as_deref() == Some("high"))
            {
                break Some(t.elapsed().as_secs_f64());
            }
            if t.elapsed() > Duration::from_secs(180) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        // The simulator's own share of the read-back: its look-up of each
        // device read (SOTI, MaaS360: every flagged device) or listed as a
        // level tag's member (AirWatch: all but those set to Secured), a
        // scan of its device list each; timed in-process on a sample.
        let sim_lookups = if kind == SimKind::Bcdm {
            None
        } else {
            let reads = if kind == SimKind::Airwatch {
                flagged.len() - changed.iter().step_by(2).count()
            } else {
                flagged.len()
            };
            let sample: Vec<&String> = flagged.iter().step_by(10).collect();
            let t = Instant::now();
            for id in &sample {
                std::hint::black_box(mdm.look_up(id));
            }
            let secs = t.elapsed().as_secs_f64();
            Some((
                sample.len(),
                secs,
                reads,
                secs * reads as f64 / sample.len() as f64,
            ))
        };

        // The repair's store side alone: the query that picks what to read
        // (or, for BCDM, finds the drift), and the conversion of its rows.
        let store_probe = {
            let t = Instant::now();
            if kind == SimKind::Bcdm {
                let drift = store
                    .listing_risk_drift(on_id)
                    .await
                    .map_err(|e| e.to_string())?;
                (
                    "listing_risk_drift",
                    drift.len(),
                    t.elapsed().as_secs_f64(),
                    0.0,
                )
            } else {
                let all = kind == SimKind::Airwatch;
                let rows = store
                    .devices_to_verify(on_id, all)
                    .await
                    .map_err(|e| e.to_string())?;
                let query = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let asked: Vec<mtd_adapter::Device> = rows
                    .iter()
                    .map(mtd_connector::store::StoredDevice::to_adapter_device)
                    .collect();
                std::hint::black_box(&asked);
                (
                    if all {
                        "devices_to_verify(all)"
                    } else {
                        "devices_to_verify"
                    },
                    rows.len(),
                    query,
                    t.elapsed().as_secs_f64(),
                )
            }
        };
        Ok::<_, String>(Case {
            kind,
            devices,
            stored: 0,
            flagged: flagged.len(),
            seeding,
            initial,
            delivery,
            off,
            on,
            drifts_made,
            drifts_found,
            repaired,
            sim_lookups,
            store_probe,
        })
    }
    .await;
    let stored = store
        .live_device_count(on_id)
        .await
        .map_err(|e| e.to_string())? as usize;
    served.stop().await;
    sim.shutdown().await;
    outcome.map(|c| Case { stored, ..c })
}

/// One signed `high` event per device, in batches of [`BATCH`].
async fn post_high(
    addr: std::net::SocketAddr,
    tenant: &str,
    secret: &str,
    ids: &[String],
) -> Result<(), String> {
    let client = reqwest::Client::new();
    for (b, chunk) in ids.chunks(BATCH).enumerate() {
        let events: Vec<serde_json::Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| {
                serde_json::json!({
                    "event_id": format!("drift-{b}-{i}"),
                    "detected_at": "2026-11-22T10:00:00Z",
                    "device": {"mdm_device_id": id},
                    "threat": {"type": "network.arp_mitm", "severity": "high"}
                })
            })
            .collect();
        let body = serde_json::json!({ "events": events }).to_string();
        post_until_accepted(&client, addr, tenant, secret, &body).await?;
    }
    Ok(())
}

/// `signal_risk` rows of a tenant, by state.
async fn signal_states(store: &Store, tenant: &str) -> Result<BTreeMap<String, usize>, String> {
    let mut out = BTreeMap::new();
    for a in store.action_summaries().await.map_err(|e| e.to_string())? {
        if a.tenant_id == tenant && a.kind == "signal_risk" {
            *out.entry(a.state).or_default() += 1;
        }
    }
    Ok(out)
}

async fn signal_rows(store: &Store, tenant: &str) -> Result<usize, String> {
    Ok(signal_states(store, tenant).await?.values().sum())
}

/// Until every `signal_risk` of `on` is `sent` and the simulator holds
/// `high` for every flagged device.
async fn wait_delivered(store: &Store, mdm: &Mdm, flagged: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let states = signal_states(store, "on").await?;
        let sent = states.get("sent").copied().unwrap_or(0);
        if sent == flagged.len() && states.len() == 1 {
            break;
        }
        if states.contains_key("dead") || sent > flagged.len() || Instant::now() > deadline {
            let mut held: BTreeMap<String, usize> = BTreeMap::new();
            for id in flagged {
                *held
                    .entry(mdm.level(id).unwrap_or_else(|| "none".into()))
                    .or_default() += 1;
            }
            return Err(format!(
                "signals not delivered as expected: {states:?} for {} devices; the simulator holds {held:?}",
                flagged.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wrong: Vec<&String> = flagged
        .iter()
        .filter(|id| mdm.level(id).as_deref() != Some("high"))
        .collect();
    if !wrong.is_empty() {
        return Err(format!(
            "{} devices confirmed `sent` but not High at the simulator, e.g. {}",
            wrong.len(),
            wrong[0]
        ));
    }
    Ok(())
}

/// One full sync of `tenant`, timed, with the requests it made.
async fn measured(engine: &SyncEngine, mdm: &Mdm, tenant: &str) -> Result<Sync, String> {
    let last_page: Arc<Mutex<Option<Instant>>> = Arc::default();
    let progress: ProgressFn = {
        let last_page = last_page.clone();
        Arc::new(move |_, _| {
            *last_page.lock().expect("progress lock") = Some(Instant::now());
        })
    };
    // A fresh rate-limit window for each sync: the previous one's requests
    // must not slow this one down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    mdm.core().clear_records();
    let cpu = cpu_seconds();
    let started = Instant::now();
    let reports = engine
        .full_sync_now(tenant, None, SyncTrigger::Admin, Some(progress))
        .await
        .map_err(|e| format!("{tenant}: full sync: {e}"))?;
    let ended = Instant::now();
    let cpu = cpu_seconds() - cpu;
    let requests = mdm.core().requests();
    let report = reports.first().ok_or("no report")?;
    if report.outcome != SyncOutcome::Succeeded {
        return Err(format!("{tenant}: full sync failed: {:?}", report.error));
    }
    let last = last_page.lock().expect("progress lock").unwrap_or(started);
    let mut out = Sync {
        seconds: (ended - started).as_secs_f64(),
        tail: (ended - last).as_secs_f64(),
        cpu,
        listed: report.listed,
        ..Sync::default()
    };
    for r in &requests {
        if is_write(r) {
            out.writes += 1;
        } else {
            out.requests += 1;
            out.refused += usize::from(r.status == Some(429));
            *out.shapes.entry(shape(r)).or_default() += 1;
        }
    }
    Ok(out)
}

fn print_case(c: &Case) {
    let (off, on) = (&c.off, &c.on);
    println!();
    println!(
        "== {}: {} devices at the simulator, {} stored per tenant, {} at `high` (1 %), {} changed at the MDM",
        c.kind, c.devices, c.stored, c.flagged, c.drifts_made
    );
    println!(
        "setup: seeding {:.1} s, both initial syncs {:.1} s, {} events per tenant posted and the levels confirmed in {:.1} s (rate limit off)",
        c.seeding, c.initial, c.flagged, c.delivery
    );
    for (label, s) in [("sync off (baseline)", off), ("sync on  (repair)   ", on)] {
        println!(
            "{label}: {:7.2} s (after the last page {:6.2} s), CPU {:6.2} s, {:6} requests ({} refused with 429 and repeated; {} records listed; {} level writes of the dispatcher meanwhile, not counted)",
            s.seconds, s.tail, s.cpu, s.requests, s.refused, s.listed, s.writes
        );
    }
    println!(
        "repair cost: {:+.2} s ({:+.2} s after the last page), ratio on/off {:.3}; CPU {:+.2} s; {:+} requests",
        on.seconds - off.seconds,
        on.tail - off.tail,
        on.seconds / off.seconds,
        on.cpu - off.cpu,
        on.requests as i64 - off.requests as i64
    );
    let mut extra: Vec<(String, i64)> = on
        .shapes
        .iter()
        .map(|(k, n)| {
            (
                k.clone(),
                *n as i64 - off.shapes.get(k).copied().unwrap_or(0) as i64,
            )
        })
        .chain(
            off.shapes
                .iter()
                .filter(|(k, _)| !on.shapes.contains_key(*k))
                .map(|(k, n)| (k.clone(), -(*n as i64))),
        )
        .filter(|(_, d)| *d != 0)
        .collect();
    extra.sort_by_key(|(_, d)| -d.abs());
    if extra.is_empty() {
        println!("  requests on vs off: the same requests");
    }
    for (k, d) in extra.iter().take(6) {
        println!("  requests on vs off: {d:+6}  {k}");
    }
    if let Some((n, s, reads, all)) = c.sim_lookups {
        println!(
            "  the simulator's own share: it finds a device by scanning its list; {n} look-ups took {s:.2} s in-process, \
             so about {all:.1} s of the read-back ({reads} devices {}) is the simulator's",
            if c.kind == SimKind::Airwatch {
                "listed as level tag members"
            } else {
                "read one by one"
            }
        );
    }
    let (what, rows, query, convert) = c.store_probe;
    println!(
        "  the repair's store side alone, run again afterwards: {what} {rows} rows in {query:.2} s{}",
        if convert > 0.0 {
            format!(", turned into adapter devices in {convert:.2} s")
        } else {
            String::new()
        }
    );
    println!(
        "drifts found: {} of {} ({}); the MDM held `high` again for all {} {}",
        c.drifts_found,
        c.drifts_made,
        if c.drifts_found == c.drifts_made {
            "ok"
        } else {
            "WRONG"
        },
        c.drifts_made,
        match c.repaired {
            Some(s) => format!("{s:.1} s after the `on` sync"),
            None => "NOT within 180 s".into(),
        }
    );
}

fn print_summary(rows: &[Case]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<9} {:>8} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>11} {:>7}",
        "kind",
        "devices",
        "off s",
        "on s",
        "diff s",
        "on/off",
        "tail diff",
        "req off",
        "req on",
        "extra",
        "429 off/on",
        "drifts"
    );
    for c in rows {
        println!(
            "{:<9} {:>8} {:>9.2} {:>9.2} {:>+9.2} {:>7.3} {:>+10.2} {:>9} {:>9} {:>+9} {:>11} {:>3}/{:<3}",
            c.kind.as_str(),
            c.devices,
            c.off.seconds,
            c.on.seconds,
            c.on.seconds - c.off.seconds,
            c.on.seconds / c.off.seconds,
            c.on.tail - c.off.tail,
            c.off.requests,
            c.on.requests,
            c.on.requests as i64 - c.off.requests as i64,
            format!("{}/{}", c.off.refused, c.on.refused),
            c.drifts_found,
            c.drifts_made
        );
    }
    println!(
        "off / on s: full_sync_now of the tenant without / with [mdm.risk_signal] (same simulator, same store); \
         diff = the repair's cost in wall time; tail diff = the same measured from the last stored page \
         (less listing noise); req: requests the simulator received, level writes excluded, 429s \
         included (429 off/on: how many of them the rate limit refused); \
         rate limits at the simulator's defaults during both syncs."
    );
}

fn write_config(root: &Path, sim: &Simulator, kind: SimKind) -> Result<PathBuf, String> {
    let io = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(root.join("tenants.d")).map_err(io)?;
    let main = root.join("connector.toml");
    std::fs::write(
        &main,
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data/connector.db\"\n\
         [admin]\ntoken = \"bench-admin-token-abcdef\"\n[tenants]\ndir = \"tenants.d\"\n\
         [sync]\nfull_sync_every = \"0\"\ninitial_sync = false\n",
    )
    .map_err(io)?;
    for (tenant, secret, signal) in [
        ("on", SECRET_ON, "[mdm.risk_signal]\nenabled = true\n"),
        ("off", SECRET_OFF, ""),
    ] {
        std::fs::write(
            root.join(format!("tenants.d/{tenant}.toml")),
            format!(
                "id = \"{tenant}\"\nagent_secret = \"{secret}\"\n\n[[mdm]]\nname = \"Bench {kind}\"\n\
                 kind = \"{}\"\nurl = \"{}\"\n{}{signal}",
                kind.as_str(),
                sim.base_url(kind),
                kind.credentials_toml()
            ),
        )
        .map_err(io)?;
    }
    Ok(main)
}
