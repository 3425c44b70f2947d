//! Risk signals at scale (issue 17): 10,000 devices each go from `secured`
//! to `high` (one signed event per device, posted in batches of 100 by 16
//! clients), and the bench measures how long until the SOTI simulator holds
//! `High` for all 10,000, against the same ingest with `[mdm.risk_signal]`
//! off (the ingest path's own time is the baseline: signals must not slow
//! the 202s beyond noise).
//!
//! Three modes per round, rounds repeated (the spread of the `off` rounds is
//! the noise): `off` (no signals), `held` (signals on, but the simulator
//! holds every custom-attribute write for 10 s while the events are posted,
//! so the 202s pay only for enqueuing the signal rows in the ingest
//! transaction) and `on` (signals delivered during the ingest, so the
//! dispatcher competes for the same cores and write lock).
//!
//! `cargo bench --bench signals` (`-- --devices N --rounds R`). One
//! process: the simulator and the daemon (`App::build_with_listener`, real
//! router, store, dispatcher with its default settings) on one runtime, the
//! clients on the same runtime. Figures depend on the machine's load: the
//! load average is printed with them.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "common/daemon.rs"]
mod daemon;
use daemon::{post_until_accepted, serve};
use mtd_sim::{SimKind, SimOptions, Simulator};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const TENANT: &str = "bench";
const SECRET: &str = "bench-agent-secret-0123456789";
const BATCH: usize = 100;
const CLIENTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Held,
    On,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Off => "off ",
            Mode::Held => "held",
            Mode::On => "on  ",
        }
    }
}

fn main() -> ExitCode {
    let mut devices = 10_000usize;
    let mut rounds = 3usize;
    let args: Vec<String> = std::env::args().collect();
    if common::help_asked(&args, include_str!("signals.rs")) {
        return ExitCode::SUCCESS;
    }
    for (flag, slot) in [("--devices", &mut devices), ("--rounds", &mut rounds)] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            match args.get(i + 1).and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => *slot = n,
                _ => {
                    eprintln!("{flag} takes a positive number");
                    return ExitCode::from(2);
                }
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "Risk-signal benchmark: {devices} devices, secured -> high, SOTI simulator, {rounds} rounds"
    );
    println!("load average at start: {}", load());
    let mut acked: Vec<(Mode, f64)> = Vec::new();
    let mut delivered = Vec::new();
    for round in 1..=rounds {
        for mode in [Mode::Off, Mode::Held, Mode::On] {
            match rt.block_on(run(devices, mode)) {
                Ok((a, d)) => {
                    acked.push((mode, a.as_secs_f64()));
                    let mut line = format!(
                        "round {round} {}: {devices} events acknowledged in {:.2} s ({:.0}/s)",
                        mode.label(),
                        a.as_secs_f64(),
                        devices as f64 / a.as_secs_f64()
                    );
                    if let (Mode::On, Some(d)) = (mode, d) {
                        delivered.push(d.as_secs_f64());
                        line += &format!(
                            "; all {devices} levels at the simulator after {:.2} s ({:.0} writes/s)",
                            d.as_secs_f64(),
                            devices as f64 / d.as_secs_f64()
                        );
                    }
                    println!("{line} [load {}]", load());
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let of = |m: Mode| -> Vec<f64> {
        acked
            .iter()
            .filter(|(x, _)| *x == m)
            .map(|(_, t)| *t)
            .collect()
    };
    let (off, held, on) = (of(Mode::Off), of(Mode::Held), of(Mode::On));
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "median ingest time: off {:.2} s, held {:.2} s, on {:.2} s",
        median(&off),
        median(&held),
        median(&on)
    );
    println!(
        "ratios to off (medians): held {:.2}, on {:.2}; noise: the off rounds span {:.2}..{:.2} of their median",
        median(&held) / median(&off),
        median(&on) / median(&off),
        min(&off) / median(&off),
        max(&off) / median(&off)
    );
    println!(
        "delivery of {devices} levels (on): median {:.2} s",
        median(&delivered)
    );
    println!("load average at the end: {}", load());
    ExitCode::SUCCESS
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One daemon: the time until every event is acknowledged, and with
/// signals the time until the simulator holds `High` for every device.
async fn run(devices: usize, mode: Mode) -> Result<(Duration, Option<Duration>), String> {
    let signals = mode != Mode::Off;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let sim = Simulator::start(listener, SimOptions::new(vec![SimKind::Soti], devices, 7))
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = write_config(dir.path(), &sim, signals)?;
    let served = serve(&path).await?;
    served
        .initial_sync(served.only_mdm()?, Duration::from_secs(600))
        .await?;
    let addr = served.addr;
    let soti = sim.soti().ok_or("no SOTI simulator")?;
    let ids: Vec<String> = soti
        .devices()
        .iter()
        .filter_map(|d| d["DeviceId"].as_str().map(str::to_string))
        .collect();
    let batches: Vec<String> = ids
        .chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| {
            let events: Vec<serde_json::Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    serde_json::json!({
                        "event_id": format!("sig-{b}-{i}"),
                        "detected_at": "2026-11-22T10:00:00Z",
                        "device": {"mdm_device_id": id},
                        "threat": {"type": "network.arp_mitm", "severity": "high"}
                    })
                })
                .collect();
            serde_json::json!({ "events": events }).to_string()
        })
        .collect();
    if mode == Mode::Held {
        soti.core().inject(
            mtd_sim::Fault::latency(Duration::from_secs(10)).on_paths("/customAttributes"),
        )?;
    }
    let client = reqwest::Client::new();
    let started = Instant::now();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(batches));
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let queue = queue.clone();
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    return Ok::<(), String>(());
                };
                post_until_accepted(&client, addr, TENANT, SECRET, &body).await?;
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    let acked = started.elapsed();
    // Held: the writes go on now, and the round waits for them, so that no
    // task of this daemon runs into the next round.
    soti.core().clear_faults();
    let delivered = if signals {
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            let written = soti
                .core()
                .actions()
                .iter()
                .filter(|a| {
                    a.action == "SetCustomAttribute:MTD_Threat_Level=High" && a.status == 200
                })
                .count();
            if written >= ids.len() {
                break Some(started.elapsed());
            }
            if Instant::now() > deadline {
                return Err(format!("only {written} levels written after 15 minutes"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        None
    };
    served.stop().await;
    sim.shutdown().await;
    Ok((acked, delivered))
}

fn write_config(root: &Path, sim: &Simulator, signals: bool) -> Result<std::path::PathBuf, String> {
    let io = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(root.join("tenants.d")).map_err(io)?;
    let main = root.join("connector.toml");
    std::fs::write(
        &main,
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data/connector.db\"\n\
         [admin]\ntoken = \"bench-admin-token-abcdef\"\n[tenants]\ndir = \"tenants.d\"\n\
         [sync]\nfull_sync_every = \"0\"\n",
    )
    .map_err(io)?;
    let signal = if signals {
        "[mdm.risk_signal]\nenabled = true\n"
    } else {
        ""
    };
    std::fs::write(
        root.join(format!("tenants.d/{TENANT}.toml")),
        format!(
            "id = \"{TENANT}\"\nagent_secret = \"{SECRET}\"\n\n[[mdm]]\nname = \"Bench SOTI\"\n\
             kind = \"soti\"\nurl = \"{}\"\n{}{signal}",
            sim.base_url(SimKind::Soti),
            SimKind::Soti.credentials_toml()
        ),
    )
    .map_err(io)?;
    Ok(main)
}
