//! Issue 17 through the HTTP API and the simulators: with `[mdm.risk_signal]`
//! each change of a device's risk level reaches its MDM exactly once, the
//! MDM ends at the last level after an outage (never an older level after a
//! newer one), and a full sync repairs a level changed behind the
//! connector's back. For each of the four kinds.

use crate::support::*;
use mtd_sim::{Fault, SimKind};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TENANT: &str = "acme";
const NAME: &str = "MTD_Threat_Level";

/// One simulated MDM as these tests see it.
struct Mdm<'a> {
    kind: SimKind,
    env: &'a Env,
}

impl Mdm<'_> {
    fn with_core<R>(&self, f: impl FnOnce(&mtd_sim::SimCore) -> R) -> R {
        match self.kind {
            SimKind::Soti => f(self.env.sim.soti().unwrap().core()),
            SimKind::Maas360 => f(self.env.sim.maas360().unwrap().core()),
            SimKind::Airwatch => f(self.env.sim.airwatch().unwrap().core()),
            SimKind::Bcdm => f(self.env.sim.bcdm().unwrap().core()),
        }
    }

    /// A device the connector syncs: (its id at the MDM, as the agent sends it).
    fn device(&self) -> String {
        match self.kind {
            SimKind::Soti => self.env.sim.soti().unwrap().devices()[0]["DeviceId"]
                .as_str()
                .unwrap()
                .to_string(),
            SimKind::Maas360 => self.env.sim.maas360().unwrap().device_ids()[0].clone(),
            SimKind::Airwatch => {
                self.env.sim.airwatch().unwrap().devices()[0]["Id"]["Value"].to_string()
            }
            SimKind::Bcdm => {
                self.env
                    .sim
                    .bcdm()
                    .unwrap()
                    .devices()
                    .into_iter()
                    .find(|d| d.platform == "iOS")
                    .unwrap()
                    .device_id
            }
        }
    }

    /// The level the MDM holds for the device, in the connector's words
    /// (`None`: nothing written).
    fn level(&self, id: &str) -> Option<String> {
        match self.kind {
            SimKind::Soti => self
                .env
                .sim
                .soti()
                .unwrap()
                .custom_attribute(id, NAME)
                .map(|v| v.to_lowercase()),
            SimKind::Maas360 => self
                .env
                .sim
                .maas360()
                .unwrap()
                .custom_attribute(id, NAME)
                .map(|v| v.to_lowercase()),
            SimKind::Airwatch => {
                let levels = self
                    .env
                    .sim
                    .airwatch()
                    .unwrap()
                    .risk_levels(id.parse().unwrap(), NAME);
                assert!(levels.len() <= 1, "in several level tags: {levels:?}");
                Some(
                    levels
                        .first()
                        .map_or("secured".to_string(), |l| l.to_lowercase()),
                )
            }
            SimKind::Bcdm => self.env.sim.bcdm().unwrap().risk_level(id),
        }
    }

    /// Sets the level at the MDM behind the connector's back.
    fn tamper(&self, id: &str, level: &str) {
        match self.kind {
            SimKind::Soti => self
                .env
                .sim
                .soti()
                .unwrap()
                .set_custom_attribute(id, NAME, Some(level))
                .unwrap(),
            SimKind::Maas360 => self
                .env
                .sim
                .maas360()
                .unwrap()
                .set_custom_attribute_value(id, NAME, Some(level))
                .unwrap(),
            SimKind::Airwatch => {
                let sim = self.env.sim.airwatch().unwrap();
                let device: u64 = id.parse().unwrap();
                for l in ["Low", "Medium", "High", "Critical"] {
                    let _ = sim.untag_device(&format!("{NAME}_{l}"), device);
                }
                if level != "Secured" {
                    sim.tag_device(&format!("{NAME}_{level}"), device).unwrap();
                }
            }
            SimKind::Bcdm => self
                .env
                .sim
                .bcdm()
                .unwrap()
                .set_risk_level(id, Some(&level.to_lowercase()))
                .unwrap(),
        }
    }

    /// The levels the MDM accepted for the device, in order (AirWatch: the
    /// tags it was added to, `secured` for a removal that leaves it in none).
    fn writes(&self, id: &str) -> Vec<String> {
        let accepted = self
            .with_core(|c| c.actions())
            .into_iter()
            .filter(|a| a.device_id.as_deref() == Some(id) && (200..300).contains(&a.status));
        match self.kind {
            SimKind::Airwatch => {
                let mut out: Vec<String> = Vec::new();
                let mut held: Option<String> = None;
                for a in accepted {
                    if let Some(tag) = a.action.strip_prefix(&format!("AddTag:{NAME}_")) {
                        held = Some(tag.to_lowercase());
                        out.push(tag.to_lowercase());
                    } else if let Some(tag) = a.action.strip_prefix(&format!("RemoveTag:{NAME}_")) {
                        if held.as_deref() == Some(&tag.to_lowercase()) {
                            held = None;
                            out.push("secured".into());
                        }
                    }
                }
                out
            }
            SimKind::Bcdm => accepted
                .filter_map(|a| a.action.strip_prefix("Risk:").map(str::to_string))
                .collect(),
            _ => accepted
                .filter_map(|a| {
                    a.action
                        .strip_prefix(&format!("SetCustomAttribute:{NAME}="))
                        .map(str::to_lowercase)
                })
                .collect(),
        }
    }

    /// The path fragment of the write calls, for fault injection.
    fn write_path(&self) -> &'static str {
        match self.kind {
            SimKind::Soti => "/customAttributes",
            SimKind::Maas360 => "setCustomAttributeValue",
            SimKind::Airwatch => "devices",
            SimKind::Bcdm => "/risk",
        }
    }
}

async fn started(kind: SimKind, policy: &str) -> (Env, TestApp) {
    let env = Env::new(&[kind], 20).await;
    let spec = MdmSpec {
        extra: "[mdm.risk_signal]\nenabled = true\n".into(),
        ..MdmSpec::new(kind)
    };
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", policy)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    app.finished_runs(mdm_id, 1, Duration::from_secs(60)).await;
    (env, app)
}

async fn post(app: &TestApp, id: &str, threat: Value, at: &str, event_id: &str) {
    let body = json!({"event_id": event_id, "detected_at": at,
                      "device": {"mdm_device_id": id}, "threat": threat});
    let r = post_signed(app, "/v1/agent/events", TENANT, body.to_string().as_bytes()).await;
    assert_eq!(r.status, 202, "{}", r.text);
}

async fn wait_level(app: &TestApp, env: &Env, mdm: &Mdm<'_>, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        settle(app, env).await;
        if mdm.level(id).as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}: the MDM holds {:?}, not {want}; writes {:?}; actions {:#?}",
            mdm.kind,
            mdm.level(id),
            mdm.writes(id),
            actions(env).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_detected_and_a_resolved_threat_write_high_then_secured_once_each() {
    for kind in SimKind::ALL {
        let (env, app) = started(kind, "").await;
        let mdm = Mdm { kind, env: &env };
        let id = mdm.device();
        let arp = |status: &str| json!({"type": "network.arp_mitm", "severity": "high", "status": status});
        post(&app, &id, arp("detected"), "2026-11-22T10:00:00Z", "s-1").await;
        wait_level(&app, &env, &mdm, &id, "high").await;
        assert_eq!(mdm.writes(&id), ["high"], "{kind:?}: one write of High");
        // The same level again (another detection) writes nothing.
        post(&app, &id, arp("detected"), "2026-11-22T10:01:00Z", "s-2").await;
        settle(&app, &env).await;
        assert_eq!(mdm.writes(&id), ["high"], "{kind:?}");
        post(&app, &id, arp("resolved"), "2026-11-22T10:02:00Z", "s-3").await;
        wait_level(&app, &env, &mdm, &id, "secured").await;
        assert_eq!(
            mdm.writes(&id),
            ["high", "secured"],
            "{kind:?}: one write of Secured"
        );
        let signals: Vec<Row> = actions(&env)
            .await
            .into_iter()
            .filter(|a| a.kind == "signal_risk")
            .collect();
        assert_eq!(signals.len(), 2, "{kind:?}: {signals:?}");
        assert!(signals.iter().all(|a| a.state == "sent"), "{signals:?}");
        app.shutdown().await;
    }
}

#[tokio::test]
async fn five_changes_while_the_mdm_is_down_end_at_the_last_level_and_never_go_back() {
    for kind in SimKind::ALL {
        let (env, app) = started(kind, "").await;
        let mdm = Mdm { kind, env: &env };
        let id = mdm.device();
        mdm.with_core(|c| c.inject(Fault::status(503).times(100_000).on_paths(mdm.write_path())))
            .unwrap();
        let t = |ty: &str, sev: &str, status: &str| json!({"type": ty, "severity": sev, "status": status});
        // low, medium, critical, medium, low.
        let steps = [
            (t("app.sideloaded", "low", "detected"), "10:00"),
            (t("network.scan", "medium", "detected"), "10:01"),
            (
                t("device.jailbroken_rooted", "critical", "detected"),
                "10:02",
            ),
            (
                t("device.jailbroken_rooted", "critical", "resolved"),
                "10:03",
            ),
            (t("network.scan", "medium", "resolved"), "10:04"),
        ];
        for (n, (threat, at)) in steps.iter().enumerate() {
            post(
                &app,
                &id,
                threat.clone(),
                &format!("2026-11-22T{at}:00Z"),
                &format!("d-{n}"),
            )
            .await;
        }
        settle(&app, &env).await;
        assert!(mdm.writes(&id).is_empty(), "{kind:?}: the MDM is down");
        mdm.with_core(|c| c.clear_faults());
        wait_level(&app, &env, &mdm, &id, "low").await;
        let order = ["low", "medium", "critical", "medium", "low"];
        let writes = mdm.writes(&id);
        assert_eq!(
            writes.last().map(String::as_str),
            Some("low"),
            "{kind:?}: {writes:?}"
        );
        // Each accepted write is a level of the sequence, in its order.
        let mut at = 0;
        for w in &writes {
            let pos = order[at..]
                .iter()
                .position(|l| l == w)
                .unwrap_or_else(|| panic!("{kind:?}: {w} written after a newer level: {writes:?}"));
            at += pos + 1;
        }
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_level_changed_at_the_mdm_is_repaired_by_the_next_full_sync() {
    for kind in SimKind::ALL {
        let (env, app) = started(kind, "").await;
        let mdm = Mdm { kind, env: &env };
        let id = mdm.device();
        post(
            &app,
            &id,
            json!({"type": "app.malicious", "severity": "critical"}),
            "2026-11-22T10:00:00Z",
            "r-1",
        )
        .await;
        wait_level(&app, &env, &mdm, &id, "critical").await;
        // Someone sets it to Secured in the MDM's console.
        mdm.tamper(&id, "Secured");
        assert_eq!(mdm.level(&id).as_deref(), Some("secured"));
        let reports = app
            .sync
            .full_sync_now(TENANT, None, mtd_connector::store::SyncTrigger::Cli, None)
            .await
            .unwrap();
        assert_eq!(
            reports[0].outcome,
            mtd_connector::store::SyncOutcome::Succeeded
        );
        wait_level(&app, &env, &mdm, &id, "critical").await;
        app.shutdown().await;
    }
}

/// Two daemons in one process (tests, benches) keep their own per-device
/// signal locks: a signal held up at one daemon's MDM does not stop the
/// other daemon's signal to a device with the same store id.
#[tokio::test]
async fn a_signal_held_up_in_one_daemon_does_not_hold_up_another_in_the_same_process() {
    let kind = SimKind::Soti;
    let (env_a, app_a) = started(kind, "").await;
    let (env_b, app_b) = started(kind, "").await;
    let (a, b) = (Mdm { kind, env: &env_a }, Mdm { kind, env: &env_b });
    let id = a.device();
    assert_eq!(id, b.device(), "the same simulated fleet");
    a.with_core(|c| {
        c.inject(
            Fault::latency(Duration::from_secs(60))
                .times(1)
                .on_paths(a.write_path()),
        )
    })
    .unwrap();
    let threat = json!({"type": "app.malicious", "severity": "high"});
    post(&app_a, &id, threat.clone(), "2026-11-22T10:00:00Z", "a-1").await;
    // A's dispatcher is now inside the held write, with the device's lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(
        &env_a,
        "SELECT COUNT(*) FROM actions WHERE kind = 'signal_risk' AND claimed_at IS NOT NULL",
    )
    .await
        == 0
    {
        assert!(Instant::now() < deadline, "A's signal was never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    post(&app_b, &id, threat, "2026-11-22T10:00:00Z", "b-1").await;
    tokio::time::timeout(
        Duration::from_secs(20),
        wait_level(&app_b, &env_b, &b, &id, "high"),
    )
    .await
    .expect("B's signal is not held up by A's");
    assert_eq!(a.level(&id), None, "A's write is still held");
    app_b.shutdown().await;
    drop(app_a);
}

/// A level that changes while a full sync reads the MDM's levels back is not
/// overwritten by the repair: the repair compared an older stored level, so
/// it must not write that one once the device has moved on (found by
/// `benches/drift.rs`).
#[tokio::test]
async fn a_level_change_during_the_read_back_is_not_overwritten_by_the_repair() {
    let kind = SimKind::Soti;
    let (env, app) = started(kind, "").await;
    let mdm = Mdm { kind, env: &env };
    let id = mdm.device();
    let malware =
        |status: &str| json!({"type": "app.malicious", "severity": "critical", "status": status});
    post(
        &app,
        &id,
        malware("detected"),
        "2026-11-22T10:00:00Z",
        "m-1",
    )
    .await;
    wait_level(&app, &env, &mdm, &id, "critical").await;
    // Changed at the MDM: the next sync has a drift to repair, and its
    // read-back of the device is held for two seconds.
    mdm.tamper(&id, "Low");
    mdm.with_core(|c| {
        c.inject(
            Fault::latency(Duration::from_secs(2))
                .times(1)
                .on_paths("/customAttributes"),
        )
    })
    .unwrap();
    let sync = app.sync.clone();
    let run = tokio::spawn(async move {
        sync.full_sync_now(TENANT, None, mtd_connector::store::SyncTrigger::Cli, None)
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mdm
        .with_core(|c| c.requests())
        .iter()
        .any(|r| r.method == "GET" && r.path.contains("/customAttributes") && r.status.is_none())
    {
        assert!(Instant::now() < deadline, "the read-back never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Meanwhile the threat is resolved and Secured written.
    post(
        &app,
        &id,
        malware("resolved"),
        "2026-11-22T10:05:00Z",
        "m-2",
    )
    .await;
    wait_level(&app, &env, &mdm, &id, "secured").await;
    let reports = run.await.unwrap().unwrap();
    assert_eq!(
        reports[0].outcome,
        mtd_connector::store::SyncOutcome::Succeeded
    );
    settle(&app, &env).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    settle(&app, &env).await;
    assert_eq!(
        mdm.level(&id).as_deref(),
        Some("secured"),
        "writes {:?}; actions {:#?}",
        mdm.writes(&id),
        actions(&env).await
    );
    assert_eq!(mdm.writes(&id), ["critical", "secured"]);
    app.shutdown().await;
}
