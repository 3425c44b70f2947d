//! `mtd-connector demo`: the whole product on one machine in one command.
//!
//! Starts the four simulators on loopback, writes a throw-away config with a
//! tenant per MDM kind (realistic policies), runs the real daemon on it, waits
//! for the initial syncs, posts signed threat events over real HTTP, waits for
//! the dispatcher, and prints what happened, including a `curl` line that
//! posts another event. Nothing here is a shortcut around the daemon: the
//! events go through the agent API and the actions through the MDM APIs.

use crate::app::App;
use crate::store::{Store, SyncOutcome};
use mtd_sim::{SimKind, SimOptions, Simulator};
use rand::RngCore;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Options of the demo command.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the daemon listens; when taken, a free port is used instead.
    pub listen: SocketAddr,
    /// Devices per simulated MDM.
    pub devices: usize,
    /// Stop after the summary (exit status says whether every step worked).
    pub exit_after: bool,
}

struct TenantPlan {
    id: &'static str,
    display: &'static str,
    kind: SimKind,
    mdm: &'static str,
    permits: &'static str,
    policy: &'static str,
}

const PLANS: [TenantPlan; 4] = [
    TenantPlan {
        id: "acme",
        display: "Acme Corp",
        kind: SimKind::Soti,
        mdm: "Acme SOTI",
        permits: "lock = true\ndisconnect_wifi = true\nenterprise_wipe = true\nwipe = false\n",
        policy: "[[policy.rule]]\nthreat = \"network.arp_mitm\"\naction = \"disconnect_wifi\"\n[[policy.rule]]\nthreat = \"device.jailbroken_rooted\"\nmin_severity = \"high\"\naction = \"lock\"\n[[policy.rule]]\nthreat = \"*\"\naction = \"none\"\n",
    },
    TenantPlan {
        id: "umbrella",
        display: "Umbrella Corporation",
        kind: SimKind::Maas360,
        mdm: "Umbrella MaaS360",
        permits: "lock = true\ndisconnect_wifi = false\nenterprise_wipe = true\nwipe = true\n",
        policy: "[[policy.rule]]\nthreat = \"device.jailbroken_rooted\"\naction = \"lock\"\n[[policy.rule]]\nthreat = \"app.malicious\"\nmin_severity = \"high\"\naction = \"enterprise_wipe\"\n[[policy.rule]]\nthreat = \"device.suspicious_profile\"\nmin_severity = \"critical\"\naction = \"wipe\"\n[[policy.rule]]\nthreat = \"*\"\naction = \"none\"\n",
    },
    TenantPlan {
        id: "globex",
        display: "Globex Corporation",
        kind: SimKind::Airwatch,
        mdm: "Globex AirWatch",
        permits: "lock = true\ndisconnect_wifi = true\nenterprise_wipe = true\nwipe = true\n",
        policy: "[[policy.rule]]\nthreat = \"app.malicious\"\nmin_severity = \"high\"\naction = \"enterprise_wipe\"\n[[policy.rule]]\nthreat = \"network.*\"\naction = \"disconnect_wifi\"\n[[policy.rule]]\nthreat = \"*\"\naction = \"none\"\n",
    },
    TenantPlan {
        id: "initech",
        display: "Initech",
        kind: SimKind::Bcdm,
        mdm: "Initech BCDM",
        permits: "lock = true\ndisconnect_wifi = true\nenterprise_wipe = false\nwipe = false\n",
        policy: "[[policy.rule]]\nthreat = \"network.rogue_access_point\"\naction = \"disconnect_wifi\"\n[[policy.rule]]\nthreat = \"device.*\"\naction = \"lock\"\n[[policy.rule]]\nthreat = \"*\"\naction = \"none\"\n",
    },
];

/// Runs the demo; returns whether every step worked.
pub async fn run(
    options: DemoOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("mtd-connector-demo-")
        .tempdir()?;
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = Simulator::start(
        sim_listener,
        SimOptions {
            kinds: SimKind::ALL.to_vec(),
            devices: options.devices,
            seed: 2026,
            ..Default::default()
        },
    )?;
    let listener = match tokio::net::TcpListener::bind(options.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "note: {} is taken ({e}); using a free port instead",
                options.listen
            );
            tokio::net::TcpListener::bind("127.0.0.1:0").await?
        }
    };
    let addr = listener.local_addr()?;
    let secrets: Vec<String> = PLANS.iter().map(|_| random_hex(16)).collect();
    let admin_token = random_hex(16);
    let ise_password = random_hex(16);
    let main = write_config(
        dir.path(),
        addr,
        &sim,
        &secrets,
        &admin_token,
        &ise_password,
    )?;
    let config = crate::config::load(&main)
        .map_err(|e| anyhow::anyhow!("the demo config is invalid (a bug):\n{e}"))?;
    let app = App::build_with_listener(config, Some(listener)).await?;
    let store = app.store().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));

    let mut ok = true;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nmtd-connector demo: four simulated MDMs, one tenant each, the real daemon in between\n"
    );
    let _ = writeln!(
        out,
        "daemon      http://{addr}  (agent API, admin API, Cisco ISE API, /metrics, /healthz, /readyz)"
    );
    for kind in SimKind::ALL {
        let _ = writeln!(
            out,
            "simulator   {:<8} {}",
            kind.as_str(),
            sim.base_url(kind)
        );
    }
    let _ = writeln!(
        out,
        "store       {}",
        dir.path().join("data/connector.db").display()
    );
    let _ = writeln!(
        out,
        "config      {}  (removed when the demo stops)",
        main.display()
    );

    // 1. The initial full sync of every MDM.
    let _ = writeln!(out, "\n1. Initial sync");
    for plan in &PLANS {
        match wait_first_sync(&store, plan.id, Duration::from_secs(60)).await {
            Ok((outcome, devices, users, skipped)) => {
                let good = outcome == SyncOutcome::Succeeded;
                ok &= good;
                let _ = writeln!(
                    out,
                    "   {:<8} {:<16} {:>4} devices, {:>4} users{}  {}",
                    plan.id,
                    plan.mdm,
                    devices,
                    users,
                    if skipped > 0 {
                        format!(" ({skipped} non-iOS devices skipped: BCDM is iOS only)")
                    } else {
                        String::new()
                    },
                    if good { "ok" } else { "FAILED" }
                );
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "   {:<8} sync did not finish: {e}", plan.id);
            }
        }
    }

    // 2. Signed threat events through the agent API.
    let _ = writeln!(
        out,
        "\n2. Threat events posted by agents (signed, over HTTP)"
    );
    let client = reqwest::Client::new();
    let mut expected = 0usize;
    for (plan, secret) in PLANS.iter().zip(&secrets) {
        for (n, (threat, severity, device)) in events_for(plan, &sim).into_iter().enumerate() {
            let event_id = format!("demo-{}-{}", plan.id, n + 1);
            let body = json!({
                "event_id": event_id,
                "detected_at": chrono::Utc::now().to_rfc3339(),
                "device": device,
                "threat": {"type": threat, "severity": severity, "name": threat},
                "network": {"ssid": "CoffeeShop", "bssid": "aa:bb:cc:dd:ee:ff"},
            })
            .to_string();
            let status = post_signed(&client, addr, plan.id, secret, &body).await;
            ok &= status == Some(202);
            expected += 1;
            let _ = writeln!(
                out,
                "   {:<8} {:<28} {:<8} -> {}",
                plan.id,
                threat,
                severity,
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "no answer".into())
            );
        }
    }

    // 3. Wait for every decision to settle (sent, skipped, held or dead).
    let settled = wait_settled(&store, expected, Duration::from_secs(30)).await;
    ok &= settled.is_ok();
    let _ = writeln!(out, "\n3. Actions (device, action, state)");
    match action_table(&store).await {
        Ok(rows) => {
            for r in &rows {
                // A Wi-Fi profile removal waits, pending, for wifi_profile_removal_minutes.
                let waiting_removal = r.2 == "remove_wifi_profile" && r.3 == "pending";
                ok &= waiting_removal || (r.3 != "dead" && r.3 != "failed" && r.3 != "pending");
                let _ = writeln!(
                    out,
                    "   {:<8} {:<34} {:<20} {:<8} {}",
                    r.0,
                    truncate(&r.1, 34),
                    r.2,
                    r.3,
                    r.4
                );
            }
        }
        Err(e) => {
            ok = false;
            let _ = writeln!(out, "   cannot read the actions: {e}");
        }
    }
    let _ = writeln!(out, "\n4. What each simulated MDM received");
    for kind in SimKind::ALL {
        let state = sim.state(kind).expect("every kind is started");
        let calls = state.core().actions();
        if calls.is_empty() {
            let _ = writeln!(out, "   {:<8} nothing", kind.as_str());
        }
        for a in calls {
            let _ = writeln!(
                out,
                "   {:<8} {:<46} device {:<42} -> {}",
                kind.as_str(),
                a.action,
                a.device_id.as_deref().unwrap_or(&a.device_ref),
                a.status
            );
        }
    }

    // 5. A device's risk level, written into its MDM and taken back.
    let _ = writeln!(
        out,
        "\n5. Risk level at each MDM ([mdm.risk_signal]): a threat detected, then resolved"
    );
    for (n, (plan, secret)) in PLANS.iter().zip(&secrets).enumerate() {
        let (device, id) = signal_device(plan.kind, &sim);
        let mut line = format!("   {:<8} device {:<42}", plan.id, truncate(&id, 42));
        for (step, status, want) in [
            ("detected", "detected", "high"),
            ("resolved", "resolved", "secured"),
        ] {
            let body = json!({
                "event_id": format!("demo-risk-{n}-{step}"),
                "detected_at": chrono::Utc::now().to_rfc3339(),
                "device": device,
                "threat": {"type": "network.rogue_access_point", "severity": "high",
                           "key": "demo-rogue-ap", "status": status},
            })
            .to_string();
            ok &= post_signed(&client, addr, plan.id, secret, &body).await == Some(202);
            let held = wait_level(&sim, plan.kind, &id, want, Duration::from_secs(15)).await;
            ok &= held.as_deref() == Some(want);
            let _ = write!(
                line,
                " {step}: MDM holds {}",
                held.as_deref().unwrap_or("nothing")
            );
        }
        let _ = writeln!(out, "{line}");
    }

    // 6. What Cisco ISE sees of a device before, during and after a threat.
    let _ = writeln!(
        out,
        "\n6. Cisco ISE's view (tenant acme's ISE user, API v3, device by MAC address)"
    );
    match ise_device(&sim) {
        Some((id, mac)) => {
            for (step, status) in [
                ("before", None),
                ("detected", Some("detected")),
                ("resolved", Some("resolved")),
            ] {
                if let Some(status) = status {
                    let body = json!({
                        "event_id": format!("demo-ise-{step}"),
                        "detected_at": chrono::Utc::now().to_rfc3339(),
                        "device": {"mdm_device_id": id},
                        "threat": {"type": "network.arp_mitm", "severity": "high", "status": status},
                    })
                    .to_string();
                    ok &= post_signed(&client, addr, "acme", &secrets[0], &body).await == Some(202);
                }
                let want = status != Some("detected");
                let seen = ise_compliance(&client, addr, &ise_password, &mac, want).await;
                ok &= seen
                    .as_ref()
                    .is_some_and(|(compliant, _)| *compliant == want);
                let _ = writeln!(
                    out,
                    "   {step:<9} {mac}  {}",
                    match &seen {
                        Some((true, _)) => "compliant".to_string(),
                        Some((false, reason)) => format!("NOT compliant: {reason}"),
                        None => "no answer".to_string(),
                    }
                );
            }
        }
        None => {
            ok = false;
            let _ = writeln!(out, "   no SOTI device with a MAC address");
        }
    }
    let _ = writeln!(
        out,
        "   try it: curl -sS -u ise-acme:{ise_password} 'http://{addr}/ciscoise/mdminfo/?ise_api_version=3'"
    );

    let (device, _) = sim_first_ios_soti(&sim);
    let _ = writeln!(
        out,
        "\nPost another event yourself (demo secret of tenant acme, made for this run):\n"
    );
    let _ = writeln!(
        out,
        "  body='{{\"event_id\":\"my-first-event\",\"detected_at\":\"2026-11-25T10:00:00Z\",\"device\":{{\"udid\":\"{device}\"}},\"threat\":{{\"type\":\"device.jailbroken_rooted\",\"severity\":\"critical\"}}}}'\n  ts=$(date +%s); sig=$(printf '%s.%s' \"$ts\" \"$body\" | openssl dgst -sha256 -hmac '{}' -r | cut -d' ' -f1)\n  curl -sS -X POST http://{addr}/v1/agent/events -H 'X-Mtd-Tenant: acme' -H \"X-Mtd-Timestamp: $ts\" -H \"X-Mtd-Signature: v1=$sig\" -H 'Content-Type: application/json' -d \"$body\"",
        secrets[0]
    );
    let _ = writeln!(out, "\nAdmin API: curl -sS -H 'Authorization: Bearer {admin_token}' http://{addr}/v1/admin/tenants/acme/actions");
    if !options.exit_after {
        let _ = writeln!(
            out,
            "Console in the browser, while the demo runs: http://{addr}/console/ (log in with the admin token above)"
        );
        let _ = writeln!(
            out,
            "Command line, while the demo runs: mtd-connector status --config {}",
            main.display()
        );
    }
    let _ = writeln!(
        out,
        "\n{}",
        if ok {
            "Every step worked."
        } else {
            "Some steps FAILED: see above and the log."
        }
    );
    println!("{out}");

    if !options.exit_after {
        println!("Serving until Ctrl-C.");
        shutdown.await;
    }
    let _ = stop_tx.send(());
    match served.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            ok = false;
            eprintln!("error: the daemon failed: {e}");
        }
        Err(e) => {
            ok = false;
            eprintln!("error: the daemon task died: {e}");
        }
    }
    sim.shutdown().await;
    Ok(ok)
}

/// A device of each simulated MDM for the risk-level step (not one of the
/// step 2 devices): as an agent names it, and its id at the MDM.
fn signal_device(kind: SimKind, sim: &Simulator) -> (Value, String) {
    let id = match kind {
        SimKind::Soti => sim.soti().expect("SOTI runs").devices()[5]["DeviceId"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        SimKind::Maas360 => sim.maas360().expect("MaaS360 runs").device_ids()[5].clone(),
        SimKind::Airwatch => {
            sim.airwatch().expect("AirWatch runs").devices()[5]["Id"]["Value"].to_string()
        }
        SimKind::Bcdm => sim
            .bcdm()
            .expect("BCDM runs")
            .devices()
            .into_iter()
            .filter(|d| d.platform == "iOS")
            .nth(5)
            .map(|d| d.device_id)
            .unwrap_or_default(),
    };
    (json!({ "mdm_device_id": id }), id)
}

/// The level a simulated MDM holds for a device, in the connector's words.
fn held_level(sim: &Simulator, kind: SimKind, id: &str) -> Option<String> {
    const NAME: &str = crate::config::DEFAULT_RISK_SIGNAL_NAME;
    match kind {
        SimKind::Soti => sim.soti()?.custom_attribute(id, NAME),
        SimKind::Maas360 => sim.maas360()?.custom_attribute(id, NAME),
        SimKind::Airwatch => {
            let levels = sim.airwatch()?.risk_levels(id.parse().ok()?, NAME);
            Some(levels.first().cloned().unwrap_or_else(|| "Secured".into()))
        }
        SimKind::Bcdm => sim.bcdm()?.risk_level(id),
    }
    .map(|l| l.to_lowercase())
}

/// Waits until the MDM holds `want` (or `limit` passes); returns what it holds.
async fn wait_level(
    sim: &Simulator,
    kind: SimKind,
    id: &str,
    want: &str,
    limit: Duration,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let held = held_level(sim, kind, id);
        if held.as_deref() == Some(want) || Instant::now() > deadline {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn write_config(
    dir: &Path,
    addr: SocketAddr,
    sim: &Simulator,
    secrets: &[String],
    admin_token: &str,
    ise_password: &str,
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir.join("tenants.d"))?;
    std::fs::create_dir_all(dir.join("secrets"))?;
    // Secrets as files, the way production should hold them.
    std::fs::write(dir.join("secrets/admin-token"), admin_token)?;
    std::fs::write(dir.join("secrets/acme-ise"), ise_password)?;
    let main = dir.join("connector.toml");
    std::fs::write(
        &main,
        // The address the daemon really listens on, so that the commands
        // that ask it (`status`, `actions`, …) find it from this file.
        format!("[server]\nlisten = \"{addr}\"\n[store]\npath = \"data/connector.db\"\n[admin]\ntoken = {{ file = \"secrets/admin-token\" }}\n[tenants]\ndir = \"tenants.d\"\n[sync]\nfull_sync_every = \"4h\"\n[ise]\nenabled = true\n"),
    )?;
    for (plan, secret) in PLANS.iter().zip(secrets) {
        std::fs::write(dir.join(format!("secrets/{}-agent", plan.id)), secret)?;
        // Every credential that grants access goes into a file of its own,
        // named in the tenant file, the way production should hold them.
        let mut credentials = String::new();
        for (key, value, secret) in plan.kind.default_credentials() {
            if secret {
                let file = format!("{}-{key}", plan.id);
                std::fs::write(dir.join("secrets").join(&file), value)?;
                let _ = writeln!(credentials, "{key} = {{ file = \"../secrets/{file}\" }}");
            } else {
                let _ = writeln!(credentials, "{key} = \"{value}\"");
            }
        }
        // BCDM removes its own profile; MaaS360 cannot take a device off Wi-Fi.
        let wifi = if matches!(plan.kind, SimKind::Bcdm | SimKind::Maas360) {
            ""
        } else {
            "wifi_disconnect_profile_id = \"42\"\n"
        };
        let text = format!(
            "id = \"{}\"\ndisplay_name = \"{}\"\nagent_secret = {{ file = \"../secrets/{}-agent\" }}\n\n[[mdm]]\nname = \"{}\"\nkind = \"{}\"\nurl = \"{}\"\n{wifi}[mdm.credentials]\n{credentials}[mdm.permit]\n{}\n[mdm.risk_signal]\nenabled = true\n\n[policy]\nmode = \"enforce\"\n{}",
            plan.id,
            plan.display,
            plan.id,
            plan.mdm,
            plan.kind.as_str(),
            sim.base_url(plan.kind),
            plan.permits,
            plan.policy
        );
        // Tenant acme's Cisco ISE (step 6); plain HTTP here, HTTPS in production.
        let ise = if plan.id == "acme" {
            "\n[ise]\nusername = \"ise-acme\"\npassword = { file = \"../secrets/acme-ise\" }\n"
        } else {
            ""
        };
        std::fs::write(
            dir.join(format!("tenants.d/{}.toml", plan.id)),
            format!("{text}{ise}"),
        )?;
    }
    Ok(main)
}

/// A SOTI device that SOTI reports compliant, with a MAC address, that no
/// other step uses: its id and its MAC as ISE sends it (12 upper-case hex
/// digits).
fn ise_device(sim: &Simulator) -> Option<(String, String)> {
    sim.soti()?.devices().iter().skip(10).find_map(|d| {
        if d["ComplianceStatus"].as_bool() != Some(true) {
            return None;
        }
        let mac = mtd_adapter::normalize_mac(d["MACAddress"].as_str()?)?;
        Some((
            d["DeviceId"].as_str()?.to_string(),
            mac.to_ascii_uppercase(),
        ))
    })
}

/// What tenant acme's ISE is told of the device with this MAC: compliant or
/// not, and the failure reason. Asks again for a few seconds until the
/// answer is `want` (the event's transaction commits before its 202, but
/// the demo does not rely on timing either way).
async fn ise_compliance(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    password: &str,
    mac: &str,
    want: bool,
) -> Option<(bool, String)> {
    let url = format!(
        "http://{addr}/ciscoise/mdmapi/v3/devices/?paging=0&querycriteria=macaddress&value={mac}&filter=all"
    );
    let mut last = None;
    for _ in 0..50 {
        let body = client
            .get(&url)
            .basic_auth("ise-acme", Some(password))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let status = xml_text(&body, "status")?;
        let seen = (
            status == "true",
            xml_text(&body, "failure_reason").unwrap_or_default(),
        );
        if seen.0 == want {
            return Some(seen);
        }
        last = Some(seen);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// The text of the first element named `name` in an XML document.
fn xml_text(xml: &str, name: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut inside = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(s) => inside = s.name().as_ref() == name.as_bytes(),
            Event::Text(t) if inside => return t.decode().ok().map(|t| t.trim().to_string()),
            Event::End(_) => inside = false,
            Event::Eof => return None,
            _ => {}
        }
    }
}

fn sim_first_ios_soti(sim: &Simulator) -> (String, String) {
    let soti = sim.soti().expect("SOTI runs");
    let d = soti
        .devices()
        .into_iter()
        .find(|d| {
            d["Kind"]
                .as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case("ios"))
        })
        .or_else(|| soti.devices().into_iter().next())
        .expect("seeded devices");
    (
        d["DeviceId"].as_str().unwrap_or_default().to_string(),
        d["DeviceName"].as_str().unwrap_or_default().to_string(),
    )
}

/// (threat type, severity, device identifiers) of the events a tenant's agents post.
fn events_for(plan: &TenantPlan, sim: &Simulator) -> Vec<(&'static str, &'static str, Value)> {
    match plan.kind {
        SimKind::Soti => {
            let soti = sim.soti().expect("SOTI runs");
            let ios: Vec<Value> = soti
                .devices()
                .into_iter()
                .filter(|d| {
                    d["Kind"]
                        .as_str()
                        .is_some_and(|k| k.eq_ignore_ascii_case("ios"))
                })
                .take(2)
                .collect();
            let a = json!({"udid": ios[0]["DeviceId"]});
            let b = json!({"udid": ios.get(1).unwrap_or(&ios[0])["DeviceId"]});
            vec![
                ("device.jailbroken_rooted", "critical", a),
                ("network.arp_mitm", "high", b.clone()),
                ("phishing.url", "medium", b),
            ]
        }
        SimKind::Airwatch => {
            let airwatch = sim.airwatch().expect("AirWatch runs");
            let devices = airwatch.devices();
            let corporate = devices
                .iter()
                .find(|d| d["Ownership"] == "C" && d["SerialNumber"].is_string())
                .unwrap_or(&devices[0]);
            let other = devices
                .iter()
                .find(|d| d["SerialNumber"].is_string() && d["Id"] != corporate["Id"])
                .unwrap_or(corporate);
            vec![
                (
                    "app.malicious",
                    "critical",
                    json!({"serial": corporate["SerialNumber"]}),
                ),
                (
                    "network.ssl_strip",
                    "high",
                    json!({"serial": other["SerialNumber"]}),
                ),
            ]
        }
        SimKind::Maas360 => {
            let maas360 = sim.maas360().expect("MaaS360 runs");
            let devices = maas360.devices();
            // What an agent knows: the UDID, else the IMEI (MaaS360 cannot search by serial).
            let who = |d: &Value| -> Option<Value> {
                [("udid", "udid"), ("imeiEsn", "imei")]
                    .into_iter()
                    .find_map(|(field, key)| {
                        let v = d[field]
                            .as_str()
                            .map(str::to_string)
                            .or_else(|| d[field].as_u64().map(|n| n.to_string()))?;
                        (!v.is_empty()).then(|| json!({ key: v }))
                    })
            };
            let owned = |owner: &str| {
                devices
                    .iter()
                    .filter(|d| d["ownership"] == owner)
                    .filter_map(who)
                    .collect::<Vec<_>>()
            };
            let (corporate, personal) = (owned("Corporate Owned"), owned("Employee Owned"));
            vec![
                ("device.jailbroken_rooted", "high", personal[0].clone()),
                ("app.malicious", "critical", personal[1].clone()),
                (
                    "device.suspicious_profile",
                    "critical",
                    corporate[0].clone(),
                ),
                ("device.suspicious_profile", "critical", personal[2].clone()),
            ]
        }
        SimKind::Bcdm => {
            let bcdm = sim.bcdm().expect("BCDM runs");
            let ios: Vec<_> = bcdm
                .devices()
                .into_iter()
                .filter(|d| d.platform.eq_ignore_ascii_case("ios") && d.udid.is_some())
                .take(2)
                .collect();
            vec![
                (
                    "network.rogue_access_point",
                    "high",
                    json!({"udid": ios[0].udid}),
                ),
                (
                    "device.passcode_disabled",
                    "medium",
                    json!({"udid": ios.get(1).unwrap_or(&ios[0]).udid}),
                ),
            ]
        }
    }
}

async fn post_signed(
    client: &reqwest::Client,
    addr: SocketAddr,
    tenant: &str,
    secret: &str,
    body: &str,
) -> Option<u16> {
    let ts = chrono::Utc::now().timestamp();
    let sig = crate::ingest::sign_agent_request(secret.as_bytes(), ts, body.as_bytes());
    client
        .post(format!("http://{addr}/v1/agent/events"))
        .header("X-Mtd-Tenant", tenant)
        .header("X-Mtd-Timestamp", ts.to_string())
        .header("X-Mtd-Signature", sig)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn wait_first_sync(
    store: &Store,
    tenant: &str,
    limit: Duration,
) -> anyhow::Result<(SyncOutcome, i64, i64, u64)> {
    let deadline = Instant::now() + limit;
    let mdm = store
        .integrations(tenant)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no MDM"))?;
    loop {
        let runs = store.sync_runs(mdm.id, 1).await?;
        if let Some(run) = runs.into_iter().find(|r| r.finished_at.is_some()) {
            let devices = store.live_device_count(mdm.id).await? as i64;
            let users = store.live_user_count(mdm.id).await? as i64;
            return Ok((run.outcome, devices, users, run.skipped));
        }
        if Instant::now() > deadline {
            anyhow::bail!("no finished sync within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_settled(store: &Store, events: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let rows = action_table(store).await?;
        let decided = rows.iter().filter(|r| r.2 != "remove_wifi_profile").count();
        let busy = rows
            .iter()
            .any(|r| r.2 != "remove_wifi_profile" && (r.3 == "pending" || r.3 == "failed"));
        if decided >= events && !busy {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("actions did not settle within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (tenant, device, action, state, reason or due time) of every action.
async fn action_table(
    store: &Store,
) -> anyhow::Result<Vec<(String, String, String, String, String)>> {
    Ok(store
        .action_summaries()
        .await?
        .into_iter()
        .map(|r| {
            let detail = match (r.state.as_str(), r.kind.as_str()) {
                ("pending", "remove_wifi_profile") => {
                    // RFC 3339 text: keep it to the minute for reading.
                    let due = r.due.unwrap_or_default();
                    format!(
                        "removal due {} UTC",
                        due.get(..16).unwrap_or(&due).replace('T', " ")
                    )
                }
                _ => r.reason.unwrap_or_default(),
            };
            (
                r.tenant_id,
                r.device.unwrap_or_else(|| "(unknown device)".into()),
                r.kind,
                r.state,
                detail,
            )
        })
        .collect())
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}
