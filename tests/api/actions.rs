//! Issue 7: events become MDM actions once, safely, and provably.

use crate::support::*;
use mtd_sim::{Fault, SimKind};
use serde_json::{json, Value};
use std::time::Duration;

const TENANT: &str = "acme";

const POLICY: &str = r#"[policy]
action_cooldown_minutes = 15
[[policy.rule]]
threat = "device.jailbroken_rooted"
action = "lock"
[[policy.rule]]
threat = "app.malicious"
action = "enterprise_wipe"
[[policy.rule]]
threat = "device.suspicious_profile"
action = "wipe"
[[policy.rule]]
threat = "network.*"
action = "disconnect_wifi"
"#;

/// Every action permitted, with a Wi-Fi profile configured.
fn soti_all_permitted() -> MdmSpec {
    MdmSpec {
        background_sync: true,
        extra: "wifi_disconnect_profile_id = \"wifi-off-1\"\nwifi_profile_removal_minutes = 1\n[mdm.permit]\nlock = true\ndisconnect_wifi = true\nenterprise_wipe = true\nwipe = true\n".into(),
        ..MdmSpec::new(SimKind::Soti)
    }
}

async fn post_events(app: &TestApp, events: Value) -> (u16, Value) {
    let reply = post_signed(
        app,
        "/v1/agent/events",
        TENANT,
        events.to_string().as_bytes(),
    )
    .await;
    let body = serde_json::from_str(&reply.text).unwrap_or(Value::Null);
    (reply.status, body)
}

fn event(id: &str, device: Value, threat: &str) -> Value {
    json!({
        "event_id": id,
        "detected_at": "2026-11-22T10:00:00Z",
        "device": device,
        "threat": {"type": threat, "severity": "high", "name": threat},
        "network": {"ssid": "CoffeeShop", "bssid": "aa:bb:cc:dd:ee:ff"},
        "details": {}
    })
}

/// Accepted (2xx) action calls the SOTI simulator recorded for a device.
fn soti_actions_for(env: &Env, device_id: &str) -> Vec<mtd_sim::RecordedAction> {
    env.sim
        .soti()
        .unwrap()
        .core()
        .actions()
        .into_iter()
        .filter(|a| a.device_id.as_deref() == Some(device_id) && (200..300).contains(&a.status))
        .collect()
}

fn soti_devices(env: &Env, ios: bool) -> Vec<Value> {
    env.sim
        .soti()
        .unwrap()
        .devices()
        .into_iter()
        .filter(|d| d["Kind"].as_str().unwrap().eq_ignore_ascii_case("ios") == ios)
        .collect()
}

async fn started(kinds: &[SimKind], spec: MdmSpec, policy: &str) -> (Env, TestApp) {
    let env = Env::new(kinds, 40).await;
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", policy)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;
    (env, app)
}

#[tokio::test]
async fn a_lock_rule_makes_one_vendor_correct_lock_a_repeat_makes_none_and_a_second_event_is_cooled_down(
) {
    let (env, app) = started(&[SimKind::Soti], soti_all_permitted(), POLICY).await;
    let device = soti_devices(&env, true).remove(0);
    let id = device["DeviceId"].as_str().unwrap().to_string();
    let who = json!({"udid": id});

    let (status, body) = post_events(
        &app,
        event("evt-1", who.clone(), "device.jailbroken_rooted"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], json!(["evt-1"]));
    wait_actions(&env, Duration::from_secs(10), |r| {
        r.iter().any(|a| a.kind == "lock" && a.state == "sent")
    })
    .await;

    let sent = soti_actions_for(&env, &id);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].action, "Lock");
    assert_eq!(
        sent[0].body,
        json!({"Action": "Lock", "AutogenerateNewPasscode": false})
    );

    // The same event again: a duplicate, nothing new.
    let (status, body) = post_events(
        &app,
        event("evt-1", who.clone(), "device.jailbroken_rooted"),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(body["duplicates"], json!(["evt-1"]));
    // Another event inside the cool-down: recorded as skipped with the reason.
    let (status, _) = post_events(&app, event("evt-2", who, "device.jailbroken_rooted")).await;
    assert_eq!(status, 202);
    let rows = actions(&env).await;
    assert_eq!(rows.len(), 2, "one action per accepted event: {rows:#?}");
    assert_eq!(rows[1].state, "skipped");
    assert!(
        rows[1].reason.as_deref().unwrap().contains("cool-down"),
        "{rows:#?}"
    );
    settle(&app, &env).await;
    assert_eq!(
        soti_actions_for(&env, &id).len(),
        1,
        "still exactly one lock at the MDM"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn monitor_mode_a_forbidden_permit_and_a_wipe_of_a_non_corporate_device_are_skipped_with_reasons(
) {
    // Monitor mode.
    let monitor = POLICY.replace("[policy]\n", "[policy]\nmode = \"monitor\"\n");
    let (env, app) = started(&[SimKind::Soti], soti_all_permitted(), &monitor).await;
    let id = soti_devices(&env, true)[0]["DeviceId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        post_events(
            &app,
            event("m-1", json!({"udid": id}), "device.jailbroken_rooted")
        )
        .await
        .0,
        202
    );
    let rows = actions(&env).await;
    assert_eq!(rows[0].state, "skipped");
    assert!(
        rows[0].reason.as_deref().unwrap().contains("monitor"),
        "{rows:#?}"
    );
    app.shutdown().await;

    // lock not permitted on this MDM; and wipe of a device whose ownership is not corporate
    // (SOTI reports no ownership, so it is unknown: never wiped).
    let mut spec = soti_all_permitted();
    spec.extra = spec.extra.replace("lock = true", "lock = false");
    let (env, app) = started(&[SimKind::Soti], spec, POLICY).await;
    let id = soti_devices(&env, true)[0]["DeviceId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        post_events(
            &app,
            event("p-1", json!({"udid": id}), "device.jailbroken_rooted")
        )
        .await
        .0,
        202
    );
    assert_eq!(
        post_events(
            &app,
            event("p-2", json!({"udid": id}), "device.suspicious_profile")
        )
        .await
        .0,
        202
    );
    let rows = actions(&env).await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.state == "skipped"), "{rows:#?}");
    assert!(
        rows[0].reason.as_deref().unwrap().contains("not permitted"),
        "{rows:#?}"
    );
    assert!(
        rows[1].reason.as_deref().unwrap().contains("corporate"),
        "{rows:#?}"
    );
    settle(&app, &env).await;
    assert!(soti_actions_for(&env, &id).is_empty(), "nothing was sent");
    app.shutdown().await;
}

#[tokio::test]
async fn an_event_for_a_device_no_mdm_knows_is_kept_with_its_action_skipped() {
    let (env, app) = started(&[SimKind::Soti], soti_all_permitted(), POLICY).await;
    let (status, body) = post_events(
        &app,
        event(
            "u-1",
            json!({"serial": "NOSUCHSERIAL"}),
            "device.jailbroken_rooted",
        ),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let rows = actions(&env).await;
    assert_eq!(rows[0].state, "skipped");
    assert!(
        rows[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("device unknown"),
        "{rows:#?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn after_five_503s_and_a_429_with_retry_after_2_the_action_arrives_exactly_once_after_the_delay(
) {
    let (env, app) = started(&[SimKind::Soti], soti_all_permitted(), POLICY).await;
    let id = soti_devices(&env, true)[0]["DeviceId"]
        .as_str()
        .unwrap()
        .to_string();
    let core = env.sim.soti().unwrap();
    core.core()
        .inject(Fault::status(503).times(5).on_paths("/actions"))
        .unwrap();
    core.core()
        .inject(Fault::rate_limited(2).times(1).on_paths("/actions"))
        .unwrap();

    assert_eq!(
        post_events(
            &app,
            event("r-1", json!({"udid": id}), "device.jailbroken_rooted")
        )
        .await
        .0,
        202
    );
    wait_actions(&env, Duration::from_secs(30), |r| {
        r.iter().any(|a| a.state == "sent")
    })
    .await;
    assert_eq!(
        soti_actions_for(&env, &id).len(),
        1,
        "delivered exactly once"
    );

    let requests: Vec<_> = core
        .core()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/actions"))
        .collect();
    assert_eq!(
        requests.len(),
        7,
        "5 × 503, 1 × 429, then the delivery: {requests:#?}"
    );
    let limited = requests.iter().find(|r| r.status == Some(429)).unwrap();
    let delivered = requests.last().unwrap();
    assert!(
        delivered.at - limited.at >= chrono::Duration::milliseconds(1950),
        "Retry-After: 2 was honoured ({} ms)",
        (delivered.at - limited.at).num_milliseconds()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_pending_action_survives_a_restart_and_is_sent_exactly_once_after_it() {
    let env = Env::new(&[SimKind::Soti], 40).await;
    let config = env.write_config(TENANT, &[soti_all_permitted()], "0", POLICY);
    let app = spawn_app(&config).await;
    let mdm_id = app.mdm_id(TENANT, "Test SOTI").await;
    app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;
    let id = soti_devices(&env, true)[0]["DeviceId"]
        .as_str()
        .unwrap()
        .to_string();
    let sim = env.sim.soti().unwrap();
    // The MDM is down: the action stays failed (retrying) until the restart.
    sim.core()
        .inject(Fault::status(503).times(10_000).on_paths("/actions"))
        .unwrap();
    assert_eq!(
        post_events(
            &app,
            event("s-1", json!({"udid": id}), "device.jailbroken_rooted")
        )
        .await
        .0,
        202
    );
    wait_actions(&env, Duration::from_secs(10), |r| {
        r.iter().any(|a| a.state == "failed")
    })
    .await;
    app.shutdown().await;

    sim.core().clear_faults();
    let app = spawn_app(&config).await;
    wait_actions(&env, Duration::from_secs(10), |r| {
        r.iter().any(|a| a.kind == "lock" && a.state == "sent")
    })
    .await;
    settle(&app, &env).await;
    assert_eq!(
        soti_actions_for(&env, &id).len(),
        1,
        "sent exactly once after the restart"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_wifi_profile_removal_due_during_downtime_is_sent_once_after_the_restart() {
    let env = Env::new(&[SimKind::Soti], 40).await;
    let config = env.write_config(TENANT, &[soti_all_permitted()], "0", POLICY);
    let app = spawn_app(&config).await;
    let mdm_id = app.mdm_id(TENANT, "Test SOTI").await;
    app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;
    let id = soti_devices(&env, true)[0]["DeviceId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        post_events(&app, event("w-1", json!({"udid": id}), "network.arp_mitm"))
            .await
            .0,
        202
    );
    let rows = wait_actions(&env, Duration::from_secs(10), |r| {
        r.iter()
            .any(|a| a.kind == "disconnect_wifi" && a.state == "sent")
            && r.iter().any(|a| a.kind == "remove_wifi_profile")
    })
    .await;
    let removal = rows
        .iter()
        .find(|a| a.kind == "remove_wifi_profile")
        .unwrap()
        .clone();
    assert_eq!(
        removal.state, "pending",
        "the removal waits for wifi_profile_removal_minutes"
    );
    app.shutdown().await;

    // The connector is down while the removal falls due.
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", env.db_path().display()))
            .await
            .unwrap();
        sqlx::query("UPDATE actions SET next_attempt_at = ?1 WHERE id = ?2")
            .bind(chrono::Utc::now() - chrono::Duration::minutes(5))
            .bind(removal.id)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let app = spawn_app(&config).await;
    wait_actions(&env, Duration::from_secs(10), |r| {
        r.iter().any(|a| a.id == removal.id && a.state == "sent")
    })
    .await;
    settle(&app, &env).await;
    let calls = soti_actions_for(&env, &id);
    let installs = calls
        .iter()
        .filter(|a| a.action.eq_ignore_ascii_case("install"))
        .count();
    let revokes = calls
        .iter()
        .filter(|a| a.action.eq_ignore_ascii_case("revoke"))
        .count();
    assert_eq!((installs, revokes), (1, 1), "{calls:#?}");
    assert!(calls
        .iter()
        .all(|a| a.profile_id.as_deref() == Some("wifi-off-1")));
    app.shutdown().await;
}

#[tokio::test]
async fn a_second_disconnect_while_the_profile_is_installed_extends_the_removal_instead_of_stacking(
) {
    let mut policy = POLICY.replace(
        "action_cooldown_minutes = 15",
        "action_cooldown_minutes = 0",
    );
    policy.push('\n');
    let (env, app) = started(&[SimKind::Soti], soti_all_permitted(), &policy).await;
    let id = soti_devices(&env, true)[0]["DeviceId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        post_events(&app, event("x-1", json!({"udid": id}), "network.arp_mitm"))
            .await
            .0,
        202
    );
    wait_actions(&env, Duration::from_secs(10), |r| {
        r.iter().any(|a| a.kind == "remove_wifi_profile")
    })
    .await;
    assert_eq!(
        post_events(
            &app,
            event("x-2", json!({"udid": id}), "network.rogue_access_point")
        )
        .await
        .0,
        202
    );
    let rows = wait_actions(&env, Duration::from_secs(10), |r| {
        r.iter()
            .filter(|a| a.kind == "disconnect_wifi")
            .all(|a| a.state != "pending" && a.state != "failed")
            && r.iter().filter(|a| a.kind == "disconnect_wifi").count() == 2
    })
    .await;
    let second = rows
        .iter()
        .filter(|a| a.kind == "disconnect_wifi")
        .nth(1)
        .unwrap();
    assert_eq!(second.state, "skipped", "{rows:#?}");
    assert!(
        second.reason.as_deref().unwrap().contains("extended"),
        "{rows:#?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|a| a.kind == "remove_wifi_profile")
            .count(),
        1,
        "one removal, extended"
    );
    let installs = soti_actions_for(&env, &id)
        .iter()
        .filter(|a| a.action.eq_ignore_ascii_case("install"))
        .count();
    assert_eq!(installs, 1, "no second profile install");
    app.shutdown().await;
}

#[tokio::test]
async fn an_event_that_arrives_while_the_mdm_is_down_is_decided_once_the_device_is_known() {
    let env = Env::new(&[SimKind::Soti], 40).await;
    let spec = MdmSpec {
        background_sync: false,
        ..soti_all_permitted()
    };
    let app = spawn_app(&env.write_config(TENANT, &[spec], "0", POLICY)).await;
    let sim = env.sim.soti().unwrap();
    let id = soti_devices(&env, true)[0]["DeviceId"]
        .as_str()
        .unwrap()
        .to_string();
    sim.core()
        .inject(Fault::status(503).times(100_000))
        .unwrap();

    let (status, body) = post_events(
        &app,
        event("d-1", json!({"udid": id}), "device.jailbroken_rooted"),
    )
    .await;
    assert_eq!(
        status, 202,
        "the event is kept although its device cannot be looked up: {body}"
    );
    assert!(
        actions(&env).await.is_empty(),
        "no decision without the device"
    );

    sim.core().clear_faults();
    let rows = wait_actions(&env, Duration::from_secs(15), |r| {
        r.iter().any(|a| a.state == "sent")
    })
    .await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].kind, "lock");
    assert_eq!(soti_actions_for(&env, &id).len(), 1);
    app.shutdown().await;
}

/// Issue 19: the dispatcher commits the claims and outcomes of many actions
/// together (one writer). Forty locks decided at once still reach the MDM
/// once each, and each row's audit trail is exactly its own: created,
/// claimed for attempt 1, sent.
#[tokio::test]
async fn forty_locks_decided_at_once_reach_the_mdm_once_each_with_an_exact_audit_trail() {
    let (env, app) = started(&[SimKind::Soti], soti_all_permitted(), POLICY).await;
    let devices: Vec<String> = env
        .sim
        .soti()
        .unwrap()
        .devices()
        .iter()
        .map(|d| d["DeviceId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(devices.len(), 40);
    let events: Vec<Value> = devices
        .iter()
        .enumerate()
        .map(|(i, id)| {
            event(
                &format!("many-{i}"),
                json!({"udid": id}),
                "device.jailbroken_rooted",
            )
        })
        .collect();
    let (status, body) = post_events(&app, json!({ "events": events })).await;
    assert_eq!(status, 202, "{body}");
    let rows = wait_actions(&env, Duration::from_secs(20), |r| {
        r.len() == 40 && r.iter().all(|a| a.state == "sent")
    })
    .await;
    settle(&app, &env).await;
    for id in &devices {
        assert_eq!(soti_actions_for(&env, id).len(), 1, "{id}: one lock");
    }
    for row in rows {
        let trail: Vec<(Option<String>, String, String)> = app
            .store
            .action_audit(row.id)
            .await
            .unwrap()
            .into_iter()
            .map(|a| {
                (
                    a.from_state.map(|s| s.to_string()),
                    a.to_state.to_string(),
                    a.note.unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(trail.len(), 3, "{trail:#?}");
        assert_eq!(
            (trail[0].0.as_deref(), trail[0].1.as_str()),
            (None, "pending")
        );
        assert_eq!(
            trail[1],
            (
                Some("pending".into()),
                "pending".into(),
                "claimed for attempt 1".into()
            )
        );
        assert_eq!(
            (trail[2].0.as_deref(), trail[2].1.as_str()),
            (Some("pending"), "sent")
        );
        assert!(trail[2].2.starts_with("sent to MDM"), "{trail:#?}");
    }
    app.shutdown().await;
}
