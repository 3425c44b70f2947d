//! Cisco ISE device queries under load (issue 18, CONTRACT §7: p99 under
//! 50 ms while agent events arrive; ISE itself waits 200 ms).
//!
//! `cargo bench --bench ise` (`-- --devices N --seconds S --rates 200,2000
//! --events 500` to change the defaults: 100,000 devices, 10 s per rate).
//!
//! One process: a SOTI simulator with `--devices` devices and the daemon
//! (`App::build_with_listener`, real router, store, dispatcher) on one
//! multi-threaded runtime; the load on a second runtime (`bench-client`
//! threads). The daemon's initial full sync fills the store first. Then,
//! per offered ISE rate, with agent events arriving at `--events`/s the
//! whole time (single signed events for random devices, `high` detections
//! and resolutions, so risk levels keep changing and the writer is busy):
//! ISE's query `GET /ciscoise/mdmapi/v3/devices/?paging=0&querycriteria=
//! macaddress&value=<MAC>&filter=all` with Basic credentials for a random
//! stored device, paced open loop (each request leaves at its scheduled
//! time whether or not earlier ones were answered), measured from the
//! scheduled time to the whole answer read, so a stall shows in the
//! percentiles instead of slowing the offered rate. 2 s warm-up, then the
//! measured window. Every answer is checked: 200 and exactly one device.

// Shared with the other benches; each uses a part of them.
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "common/daemon.rs"]
mod daemon;
use common::{load_average, machine};
use daemon::{serve, signed_events, Served};
use mtd_sim::{SimKind, SimOptions, Simulator};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TENANT: &str = "bench";
const SECRET: &str = "bench-agent-secret-0123456789";
const ISE_USER: &str = "ise-bench";
const ISE_PASSWORD: &str = "ise-bench-password-0123";

struct Options {
    devices: usize,
    seconds: u64,
    rates: Vec<u64>,
    events: u64,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        devices: 100_000,
        seconds: 10,
        rates: vec![200, 2_000],
        events: 500,
    };
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| -> Option<&String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let number = |name: &str, v: &String| -> Result<u64, String> {
        v.parse()
            .map_err(|_| format!("{name} takes a number, not `{v}`"))
    };
    if let Some(v) = value("--devices") {
        o.devices = usize::try_from(number("--devices", v)?).map_err(|e| e.to_string())?;
    }
    if let Some(v) = value("--seconds") {
        o.seconds = number("--seconds", v)?;
    }
    if let Some(v) = value("--events") {
        o.events = number("--events", v)?;
    }
    if let Some(v) = value("--rates") {
        o.rates = v
            .split(',')
            .map(|r| number("--rates", &r.to_string()))
            .collect::<Result<_, _>>()?;
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if common::help_asked(&args, include_str!("ise.rs")) {
        return ExitCode::SUCCESS;
    }
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let server = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let client = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
        .expect("a runtime");
    println!(
        "Cisco ISE query benchmark: {} devices stored, agent events at {}/s, {} s per rate",
        o.devices, o.events, o.seconds
    );
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());
    match server.block_on(start(o.devices)) {
        Ok(daemon) => {
            let result = client.block_on(measure(&daemon, &o));
            server.block_on(daemon.stop());
            match result {
                Ok(()) => {
                    println!("load average at the end: {}", load_average());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Daemon {
    addr: std::net::SocketAddr,
    served: Served,
    sim: Simulator,
    /// (MAC as ISE sends it, SOTI device id).
    devices: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    async fn stop(self) {
        self.served.stop().await;
        self.sim.shutdown().await;
    }
}

async fn start(devices: usize) -> Result<Daemon, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let sim = Simulator::start(listener, SimOptions::new(vec![SimKind::Soti], devices, 7))
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let served = serve(&write_config(dir.path(), &sim)?).await?;
    let took = served
        .initial_sync(served.only_mdm()?, Duration::from_secs(900))
        .await?;
    println!(
        "initial sync of {devices} devices: {:.1} s",
        took.as_secs_f64()
    );
    let soti = sim.soti().ok_or("no SOTI simulator")?;
    let devices: Vec<(String, String)> = soti
        .devices()
        .iter()
        .filter_map(|d| {
            let mac = mtd_adapter::normalize_mac(d["MACAddress"].as_str()?)?;
            Some((
                mac.to_ascii_uppercase(),
                d["DeviceId"].as_str()?.to_string(),
            ))
        })
        .collect();
    if devices.is_empty() {
        return Err("no simulated device has a MAC address".into());
    }
    Ok(Daemon {
        addr: served.addr,
        served,
        sim,
        devices,
        _dir: dir,
    })
}

fn write_config(root: &Path, sim: &Simulator) -> Result<std::path::PathBuf, String> {
    let io = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(root.join("tenants.d")).map_err(io)?;
    let main = root.join("connector.toml");
    std::fs::write(
        &main,
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data/connector.db\"\n\
         [admin]\ntoken = \"bench-admin-token-abcdef\"\n[tenants]\ndir = \"tenants.d\"\n\
         [sync]\nfull_sync_every = \"0\"\n[ise]\nenabled = true\n",
    )
    .map_err(io)?;
    std::fs::write(
        root.join(format!("tenants.d/{TENANT}.toml")),
        format!(
            "id = \"{TENANT}\"\nagent_secret = \"{SECRET}\"\n\n[ise]\nusername = \"{ISE_USER}\"\n\
             password = \"{ISE_PASSWORD}\"\n\n[[mdm]]\nname = \"Bench SOTI\"\nkind = \"soti\"\n\
             url = \"{}\"\n{}",
            sim.base_url(SimKind::Soti),
            SimKind::Soti.credentials_toml()
        ),
    )
    .map_err(io)?;
    Ok(main)
}

/// Agent events at `rate`/s until `stop`: single signed events for random
/// devices, detections and resolutions of one `high` threat. Returns the
/// events answered 202 and the 202s' latencies.
async fn agent_load(
    addr: std::net::SocketAddr,
    devices: Arc<Vec<(String, String)>>,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let client = reqwest::Client::new();
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let (_, id) = devices[rng.gen_range(0..devices.len())].clone();
        let status = if rng.gen_bool(0.5) {
            "detected"
        } else {
            "resolved"
        };
        let body = serde_json::json!({
            "event_id": format!("ise-bench-{n}"),
            "detected_at": chrono::Utc::now().to_rfc3339(),
            "device": {"mdm_device_id": id},
            "threat": {"type": "network.arp_mitm", "severity": "high", "status": status}
        })
        .to_string();
        let (client, accepted, refused) = (client.clone(), accepted.clone(), refused.clone());
        tokio::spawn(async move {
            let r = signed_events(&client, addr, TENANT, SECRET, body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().as_u16() == 202 => accepted.fetch_add(1, Ordering::Relaxed),
                _ => refused.fetch_add(1, Ordering::Relaxed),
            };
        });
    }
    (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    )
}

async fn measure(d: &Daemon, o: &Options) -> Result<(), String> {
    let devices = Arc::new(d.devices.clone());
    let stop_events = Arc::new(AtomicBool::new(false));
    let events = tokio::spawn(agent_load(
        d.addr,
        devices.clone(),
        o.events,
        stop_events.clone(),
    ));
    let events_started = Instant::now();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .map_err(|e| e.to_string())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    println!("| offered ISE queries/s | answered | p50 | p90 | p99 | max | errors | achieved/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for &rate in &o.rates {
        let warm = Duration::from_secs(2);
        let window = Duration::from_secs(o.seconds);
        let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let begin = tokio::time::Instant::now();
        let mut handles = Vec::new();
        let mut k = 0u64;
        loop {
            let scheduled = begin + period * u32::try_from(k).map_err(|e| e.to_string())?;
            if scheduled.duration_since(begin) >= warm + window {
                break;
            }
            tokio::time::sleep_until(scheduled).await;
            k += 1;
            let measured = scheduled.duration_since(begin) >= warm;
            let (mac, _) = &devices[rng.gen_range(0..devices.len())];
            let url = format!(
                "http://{}/ciscoise/mdmapi/v3/devices/?paging=0&querycriteria=macaddress&value={mac}&filter=all",
                d.addr
            );
            let (client, latencies, errors) = (client.clone(), latencies.clone(), errors.clone());
            handles.push(tokio::spawn(async move {
                let r = client
                    .get(url)
                    .basic_auth(ISE_USER, Some(ISE_PASSWORD))
                    .send()
                    .await;
                let outcome = match r {
                    Ok(r) if r.status().as_u16() == 200 => match r.text().await {
                        Ok(body) if body.matches("<device>").count() == 1 => Ok(()),
                        Ok(body) => Err(format!("not one device: {body}")),
                        Err(e) => Err(e.to_string()),
                    },
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                if measured {
                    match outcome {
                        Ok(()) => latencies
                            .lock()
                            .unwrap()
                            .push(scheduled.elapsed().as_secs_f64() * 1000.0),
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                }
            }));
        }
        for h in handles {
            let _ = h.await;
        }
        let mut l = latencies.lock().unwrap().clone();
        l.sort_by(f64::total_cmp);
        let errors = errors.lock().unwrap().clone();
        let pct = |p: f64| -> f64 {
            if l.is_empty() {
                f64::NAN
            } else {
                l[((l.len() - 1) as f64 * p).round() as usize]
            }
        };
        println!(
            "| {rate} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.0} |",
            l.len(),
            pct(0.5),
            pct(0.9),
            pct(0.99),
            l.last().copied().unwrap_or(f64::NAN),
            errors.len(),
            l.len() as f64 / window.as_secs_f64()
        );
        if let Some(e) = errors.first() {
            println!("  first error: {e}");
        }
    }
    stop_events.store(true, Ordering::Relaxed);
    let (accepted, refused) = events.await.map_err(|e| e.to_string())?;
    println!(
        "agent events meanwhile: {accepted} answered 202 ({:.0}/s), {refused} not",
        accepted as f64 / events_started.elapsed().as_secs_f64()
    );
    Ok(())
}
