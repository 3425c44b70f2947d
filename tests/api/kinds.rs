//! The sync and the dispatcher for every MDM kind (MaaS360, AirWatch and BCDM
//! here; SOTI in sync.rs and actions.rs), and the destructive-action safety nets.

use crate::support::*;
use mtd_connector::dispatch::Dispatched;
use mtd_sim::{Fault, SimKind};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TENANT: &str = "acme";

const POLICY: &str = r#"[policy]
[[policy.rule]]
threat = "device.jailbroken_rooted"
action = "lock"
[[policy.rule]]
threat = "app.malicious"
action = "enterprise_wipe"
[[policy.rule]]
threat = "device.suspicious_profile"
action = "wipe"
"#;

fn spec(kind: SimKind) -> MdmSpec {
    // BCDM removes its own profile; MaaS360 has no Wi-Fi call: neither takes a profile id.
    let wifi = if matches!(kind, SimKind::Bcdm | SimKind::Maas360) {
        ""
    } else {
        "wifi_disconnect_profile_id = \"42\"\n"
    };
    MdmSpec {
        extra: format!("{wifi}[mdm.permit]\nlock = true\ndisconnect_wifi = true\nenterprise_wipe = true\nwipe = true\n"),
        ..MdmSpec::new(kind)
    }
}

async fn started(kind: SimKind, devices: usize) -> (Env, TestApp) {
    let env = Env::new(&[kind], devices).await;
    let spec = spec(kind);
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", POLICY)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    let runs = app.finished_runs(mdm_id, 1, Duration::from_secs(60)).await;
    assert_eq!(
        runs[0].outcome,
        mtd_connector::store::SyncOutcome::Succeeded,
        "{:?}",
        runs[0].error
    );
    (env, app)
}

async fn post(app: &TestApp, body: Value) -> u16 {
    post_signed(app, "/v1/agent/events", TENANT, body.to_string().as_bytes())
        .await
        .status
}

fn event(id: &str, device: Value, threat: &str) -> Value {
    json!({"event_id": id, "detected_at": "2026-11-22T10:00:00Z", "device": device,
           "threat": {"type": threat, "severity": "critical"}})
}

async fn admin_post(app: &TestApp, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}{path}", app.addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// (the agent's identifiers, the vendor's id) of seeded devices of a kind.
fn devices(env: &Env, kind: SimKind) -> Vec<(Value, String, Value)> {
    match kind {
        SimKind::Airwatch => env
            .sim
            .airwatch()
            .unwrap()
            .devices()
            .into_iter()
            .filter(|d| d["SerialNumber"].is_string())
            .map(|d| {
                (
                    json!({"serial": d["SerialNumber"]}),
                    d["Id"]["Value"].to_string(),
                    d,
                )
            })
            .collect(),
        SimKind::Bcdm => env
            .sim
            .bcdm()
            .unwrap()
            .devices()
            .into_iter()
            .filter(|d| d.platform.eq_ignore_ascii_case("ios") && d.udid.is_some())
            .map(|d| {
                (
                    json!({"udid": d.udid}),
                    d.device_id.clone(),
                    serde_json::to_value(&d).unwrap(),
                )
            })
            .collect(),
        SimKind::Maas360 => env
            .sim
            .maas360()
            .unwrap()
            .devices()
            .into_iter()
            .filter(|d| d["udid"].as_str().is_some_and(|u| !u.is_empty()))
            .map(|d| {
                (
                    json!({"udid": d["udid"]}),
                    d["maas360DeviceID"].as_str().unwrap().to_string(),
                    d,
                )
            })
            .collect(),
        SimKind::Soti => unreachable!("covered in actions.rs"),
    }
}

fn accepted_actions(env: &Env, kind: SimKind, vendor_id: &str) -> Vec<String> {
    env.sim
        .state(kind)
        .unwrap()
        .core()
        .actions()
        .into_iter()
        .filter(|a| a.device_id.as_deref() == Some(vendor_id) && (200..300).contains(&a.status))
        .map(|a| a.action)
        .collect()
}

#[tokio::test]
async fn the_initial_sync_brings_every_seeded_airwatch_device_and_user() {
    let (env, app) = started(SimKind::Airwatch, 700).await;
    let sim = env.sim.airwatch().unwrap();
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) FROM devices WHERE removed_at IS NULL"
        )
        .await,
        sim.devices().len() as i64
    );
    assert_eq!(
        count(&env, "SELECT COUNT(*) FROM users WHERE removed_at IS NULL").await,
        sim.users().len() as i64
    );
    let prefixed = count(&env, "SELECT COUNT(*) FROM groups").await;
    assert!(prefixed > 1);
    app.shutdown().await;
}

#[tokio::test]
async fn the_initial_sync_brings_every_seeded_ios_bcdm_device_and_reports_the_rest_as_skipped() {
    let (env, app) = started(SimKind::Bcdm, 300).await;
    let sim = env.sim.bcdm().unwrap();
    let ios = sim
        .devices()
        .iter()
        .filter(|d| d.platform.eq_ignore_ascii_case("ios"))
        .count() as i64;
    assert!(ios < 300, "the seed has non-iOS devices");
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) FROM devices WHERE removed_at IS NULL"
        )
        .await,
        ios
    );
    assert_eq!(
        count(&env, "SELECT skipped FROM sync_runs ORDER BY id LIMIT 1").await,
        300 - ios
    );
    assert_eq!(
        count(&env, "SELECT COUNT(*) FROM users WHERE removed_at IS NULL").await,
        sim.users().len() as i64
    );
    assert!(
        count(
            &env,
            "SELECT COUNT(*) FROM users WHERE email LIKE 'acme-user@qmpr.com'"
        )
        .await
            > 0
    );
    app.shutdown().await;
}

#[tokio::test]
async fn for_maas360_airwatch_and_bcdm_a_lock_rule_makes_exactly_one_vendor_correct_lock() {
    for (kind, want) in [
        (SimKind::Airwatch, "Lock"),
        (SimKind::Bcdm, "lock"),
        (SimKind::Maas360, "lockDevice"),
    ] {
        let (env, app) = started(kind, 40).await;
        let (who, vendor_id, _) = devices(&env, kind).remove(0);
        assert_eq!(
            post(&app, event("l-1", who.clone(), "device.jailbroken_rooted")).await,
            202
        );
        assert_eq!(
            post(&app, event("l-1", who.clone(), "device.jailbroken_rooted")).await,
            202,
            "a repeat"
        );
        wait_actions(&env, Duration::from_secs(20), |r| {
            r.iter().any(|a| a.state == "sent")
        })
        .await;
        let cooled = post(&app, event("l-2", who, "device.jailbroken_rooted")).await;
        assert_eq!(cooled, 202, "inside the cool-down");
        let rows = actions(&env).await;
        assert_eq!(rows.len(), 2, "{kind}: one action per new event: {rows:#?}");
        assert_eq!(rows[1].state, "skipped", "{kind}");
        assert!(
            rows[1].reason.as_deref().unwrap().contains("cool-down"),
            "{kind}: {rows:#?}"
        );
        settle(&app, &env).await;
        assert_eq!(
            accepted_actions(&env, kind, &vendor_id),
            vec![want.to_string()],
            "{kind}"
        );
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_wipe_of_a_device_that_became_personal_at_the_mdm_since_the_sync_is_skipped() {
    let (env, app) = started(SimKind::Airwatch, 60).await;
    let (who, vendor_id, _) = devices(&env, SimKind::Airwatch)
        .into_iter()
        .find(|(_, _, d)| d["Ownership"] == "C")
        .expect("a corporate device");
    let mut fields = serde_json::Map::new();
    fields.insert("Ownership".into(), json!("E"));
    env.sim
        .airwatch()
        .unwrap()
        .update_device(vendor_id.parse().unwrap(), fields)
        .unwrap();

    assert_eq!(
        post(&app, event("w-1", who, "device.suspicious_profile")).await,
        202
    );
    let rows = wait_actions(&env, Duration::from_secs(20), |r| {
        r.iter()
            .any(|a| a.state != "pending" && a.state != "failed")
    })
    .await;
    assert_eq!(rows[0].state, "skipped", "{rows:#?}");
    assert!(
        rows[0].reason.as_deref().unwrap().contains("corporate"),
        "{rows:#?}"
    );
    assert!(
        accepted_actions(&env, SimKind::Airwatch, &vendor_id).is_empty(),
        "no wipe was sent"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_eleventh_enterprise_wipe_in_an_hour_is_held_and_approving_it_sends_it() {
    let (env, app) = started(SimKind::Airwatch, 60).await;
    let targets: Vec<(Value, String, Value)> = devices(&env, SimKind::Airwatch)
        .into_iter()
        .take(11)
        .collect();
    for (i, (who, _, _)) in targets.iter().enumerate() {
        assert_eq!(
            post(
                &app,
                event(&format!("ew-{i}"), who.clone(), "app.malicious")
            )
            .await,
            202
        );
    }
    let rows = wait_actions(&env, Duration::from_secs(20), |r| {
        r.iter().filter(|a| a.state == "sent").count() == 10
    })
    .await;
    let held: Vec<_> = rows.iter().filter(|a| a.state == "held").collect();
    assert_eq!(held.len(), 1, "{rows:#?}");
    assert!(held[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("max_destructive_actions_per_hour"));
    let held_id = held[0].id;
    let last = &targets[10].1;
    assert!(
        accepted_actions(&env, SimKind::Airwatch, last).is_empty(),
        "the held wipe was not sent"
    );

    let (status, body) = admin_post(
        &app,
        &format!("/v1/admin/tenants/{TENANT}/actions/{held_id}/approve"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_actions(&env, Duration::from_secs(20), |r| {
        r.iter().any(|a| a.id == held_id && a.state == "sent")
    })
    .await;
    assert_eq!(
        accepted_actions(&env, SimKind::Airwatch, last),
        vec!["EnterpriseWipe".to_string()]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn cancelling_all_pending_destructive_actions_leaves_none_to_send() {
    let (env, app) = started(SimKind::Airwatch, 60).await;
    let sim = env.sim.airwatch().unwrap();
    sim.core()
        .inject(Fault::status(503).times(100_000).on_paths("/commands"))
        .unwrap();
    let targets: Vec<(Value, String, Value)> = devices(&env, SimKind::Airwatch)
        .into_iter()
        .take(3)
        .collect();
    for (i, (who, _, _)) in targets.iter().enumerate() {
        assert_eq!(
            post(&app, event(&format!("c-{i}"), who.clone(), "app.malicious")).await,
            202
        );
    }
    wait_actions(&env, Duration::from_secs(20), |r| {
        r.len() == 3 && r.iter().all(|a| a.state == "failed")
    })
    .await;
    // A claim in flight is not cancelled; repeat until every row is cancelled.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut cancelled = 0;
    while cancelled < 3 {
        let (status, body) = admin_post(
            &app,
            &format!("/v1/admin/tenants/{TENANT}/actions/cancel-destructive"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        cancelled += body["cancelled"].as_u64().unwrap();
        assert!(Instant::now() < deadline, "not all cancelled");
    }
    sim.core().clear_faults();
    // Drain what is due instead of waiting for the background loop: nothing is.
    let dispatch = &app.state.dispatch;
    while dispatch.try_dispatch_next(&fast_dispatch()).await.unwrap() == Dispatched::One {}
    let rows = actions(&env).await;
    assert!(rows.iter().all(|a| a.state == "cancelled"), "{rows:#?}");
    for (_, id, _) in &targets {
        assert!(
            accepted_actions(&env, SimKind::Airwatch, id).is_empty(),
            "nothing was sent"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_wipe_rule_on_a_personal_or_shared_device_is_skipped_and_nothing_is_sent() {
    let (env, app) = started(SimKind::Airwatch, 80).await;
    let all = devices(&env, SimKind::Airwatch);
    let personal = all
        .iter()
        .find(|(_, _, d)| d["Ownership"] == "E")
        .expect("a personal device");
    let shared = all
        .iter()
        .find(|(_, _, d)| d["Ownership"] == "S")
        .expect("a shared device");
    assert_eq!(
        post(
            &app,
            event("p-1", personal.0.clone(), "device.suspicious_profile")
        )
        .await,
        202
    );
    assert_eq!(
        post(
            &app,
            event("p-2", shared.0.clone(), "device.suspicious_profile")
        )
        .await,
        202
    );
    let rows = actions(&env).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for row in &rows {
        assert_eq!(row.state, "skipped", "{rows:#?}");
        assert!(
            row.reason
                .as_deref()
                .unwrap()
                .contains("only sent to corporate-owned devices"),
            "{rows:#?}"
        );
    }
    settle(&app, &env).await;
    assert!(accepted_actions(&env, SimKind::Airwatch, &personal.1).is_empty());
    assert!(accepted_actions(&env, SimKind::Airwatch, &shared.1).is_empty());
    app.shutdown().await;
}

// ---------------------------------------------------------------- MaaS360

/// The normal form the store keeps an identifier in (`""` and absent: none).
fn normalised(d: &Value, field: &str, norm: fn(&str) -> Option<String>) -> Option<String> {
    let raw = match &d[field] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    norm(&raw)
}

/// 10,001 devices: forty full pages of 250 and a last page of exactly one
/// device (an object, not an array, on the wire), each device's identifiers
/// as the MDM gives them; every user; and a token that expires during the
/// listing is renewed without failing the sync.
#[tokio::test]
async fn maas360_a_sync_of_10001_devices_lists_every_device_and_user_exactly_through_a_token_expiry(
) {
    use mtd_adapter::{normalize_imei, normalize_mac, normalize_serial, normalize_udid};
    let env = Env::new(&[SimKind::Maas360], 10_001).await;
    let sim = env.sim.maas360().unwrap();
    // Tokens live 2 s: the listing (41 pages at 20 requests per second) outlives one.
    sim.set_token_lifetime(Duration::from_secs(2));
    let spec = spec(SimKind::Maas360);
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", POLICY)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    let runs = app.finished_runs(mdm_id, 1, Duration::from_secs(120)).await;
    assert_eq!(
        runs[0].outcome,
        mtd_connector::store::SyncOutcome::Succeeded,
        "{:?}",
        runs[0].error
    );
    let expired = sim
        .core()
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(401) && r.path.contains("/device-apis/"))
        .count();
    assert!(expired >= 1, "the token expired during the listing");

    let url = format!("sqlite://{}?mode=ro", env.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    type Ids = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let stored: std::collections::BTreeSet<Ids> = sqlx::query_as(
        "SELECT mdm_device_id, udid, imei, mac, serial FROM devices WHERE removed_at IS NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE removed_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    let listed: std::collections::BTreeSet<Ids> = sim
        .devices()
        .iter()
        .map(|d| {
            (
                d["maas360DeviceID"].as_str().unwrap().to_string(),
                normalised(d, "udid", normalize_udid),
                normalised(d, "imeiEsn", normalize_imei),
                normalised(d, "wifiMacAddress", normalize_mac),
                normalised(d, "platformSerialNumber", normalize_serial),
            )
        })
        .collect();
    assert_eq!(listed.len(), 10_001);
    assert_eq!(stored.len(), listed.len(), "every device, once");
    assert!(
        stored == listed,
        "the stored identifiers are the listed ones"
    );
    assert_eq!(users, sim.users().len() as i64, "every user");
    app.shutdown().await;
}

/// Sync, then a lock, an enterprise wipe and a wipe of a corporate device
/// through the daemon, each the right MaaS360 call once; a wipe of an
/// employee-owned device is skipped; disconnect Wi-Fi is skipped as
/// unsupported; `actionStatus` 1 ends the action dead with MaaS360's words.
#[tokio::test]
async fn maas360_lock_enterprise_wipe_and_corporate_only_wipe_reach_the_mdm_once_each() {
    let policy =
        format!("{POLICY}[[policy.rule]]\nthreat = \"network.*\"\naction = \"disconnect_wifi\"\n");
    let env = Env::new(&[SimKind::Maas360], 120).await;
    let spec = spec(SimKind::Maas360);
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", &policy)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    app.finished_runs(mdm_id, 1, Duration::from_secs(60)).await;
    let all = devices(&env, SimKind::Maas360);
    let owned = |o: &str| {
        all.iter()
            .filter(|d| d.2["ownership"] == o)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (corporate, personal) = (owned("Corporate Owned"), owned("Employee Owned"));
    assert!(
        corporate.len() >= 2 && personal.len() >= 3,
        "the seed mixes ownership"
    );

    let cases = [
        ("m-lock", &personal[0], "device.jailbroken_rooted"),
        ("m-ewipe", &personal[1], "app.malicious"),
        ("m-wipe", &corporate[0], "device.suspicious_profile"),
        ("m-wipe-personal", &personal[2], "device.suspicious_profile"),
        ("m-wifi", &corporate[1], "network.arp_mitm"),
    ];
    for (id, (who, _, _), threat) in &cases {
        assert_eq!(
            post(&app, event(id, who.clone(), threat)).await,
            202,
            "{id}"
        );
    }
    let rows = wait_actions(&env, Duration::from_secs(20), |r| {
        r.len() == 5
            && r.iter()
                .all(|a| a.state != "pending" && a.state != "failed")
    })
    .await;
    settle(&app, &env).await;
    let state = |kind: &str| {
        rows.iter()
            .filter(|a| a.kind == kind)
            .map(|a| a.state.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(state("lock"), ["sent"], "{rows:#?}");
    assert_eq!(state("enterprise_wipe"), ["sent"], "{rows:#?}");
    assert_eq!(state("wipe"), ["sent", "skipped"], "{rows:#?}");
    assert_eq!(state("disconnect_wifi"), ["skipped"], "{rows:#?}");
    let reason = |kind: &str, st: &str| {
        rows.iter()
            .find(|a| a.kind == kind && a.state == st)
            .and_then(|a| a.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason("wipe", "skipped").contains("only sent to corporate-owned devices"),
        "{rows:#?}"
    );
    assert!(
        reason("disconnect_wifi", "skipped").contains("cannot disconnect_wifi"),
        "{rows:#?}"
    );

    assert_eq!(
        accepted_actions(&env, SimKind::Maas360, &personal[0].1),
        ["lockDevice"]
    );
    assert_eq!(
        accepted_actions(&env, SimKind::Maas360, &personal[1].1),
        ["selectiveWipeDevice"]
    );
    assert_eq!(
        accepted_actions(&env, SimKind::Maas360, &corporate[0].1),
        ["wipeDevice"]
    );
    assert!(accepted_actions(&env, SimKind::Maas360, &personal[2].1).is_empty());
    assert!(accepted_actions(&env, SimKind::Maas360, &corporate[1].1).is_empty());

    // MaaS360 answers a refused action with HTTP 200 and actionStatus 1.
    let sim = env.sim.maas360().unwrap();
    let target = &personal[3];
    sim.fail_next_action(
        mtd_sim::maas360::ActionFailure::next(target.1.clone())
            .of("lockDevice")
            .saying("Device is not reachable for this action"),
    )
    .unwrap();
    assert_eq!(
        post(
            &app,
            event("m-refused", target.0.clone(), "device.jailbroken_rooted")
        )
        .await,
        202
    );
    let rows = wait_actions(&env, Duration::from_secs(20), |r| {
        r.iter().any(|a| a.kind == "lock" && a.state == "dead")
    })
    .await;
    let dead = rows
        .iter()
        .find(|a| a.kind == "lock" && a.state == "dead")
        .unwrap();
    assert!(
        dead.reason
            .as_deref()
            .unwrap_or_default()
            .contains("Device is not reachable for this action"),
        "{dead:?}"
    );
    settle(&app, &env).await;
    let calls = sim
        .core()
        .actions()
        .into_iter()
        .filter(|a| a.device_id.as_deref() == Some(target.1.as_str()))
        .count();
    assert_eq!(calls, 1, "a refusal is not retried");
    app.shutdown().await;
}
