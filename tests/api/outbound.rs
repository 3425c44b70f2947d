//! Issue 13: outbound safety (CONTRACT §4 and §6) through the daemon, against
//! simulators that misbehave: a huge `Retry-After`, a redirect to another
//! origin, a 2xx HTML page instead of the answer, a 502/504 to a command, a
//! listing that never ends.

use crate::support::*;
use mtd_sim::{Fault, SimKind};
use serde_json::{json, Value};
use std::time::Duration;

const TENANT: &str = "acme";
const ACTIVATE: &str = "/v1/agent/activate";
const LIMIT: Duration = Duration::from_secs(30);

async fn admin_get(app: &TestApp, path: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("http://{}{path}", app.addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "GET {path}");
    r.json().await.unwrap()
}

/// The UDID of a seeded iOS device of the SOTI simulator (its `DeviceId`).
fn soti_ios_udid(env: &Env) -> String {
    env.sim
        .soti()
        .unwrap()
        .devices()
        .into_iter()
        .find(|d| d["Kind"].as_str().unwrap().eq_ignore_ascii_case("ios"))
        .expect("the seed has an iOS device")["DeviceId"]
        .as_str()
        .unwrap()
        .to_string()
}

// ------------------------------------------------------------ Retry-After

#[tokio::test]
async fn a_huge_retry_after_on_a_lookup_is_answered_as_at_most_one_hour_and_the_next_activation_succeeds(
) {
    // No background sync: the store knows only what activations put there.
    let env = Env::new(&[SimKind::Soti], 20).await;
    let soti = MdmSpec {
        background_sync: false,
        ..MdmSpec::new(SimKind::Soti)
    };
    let app = spawn_app(&env.write_config(TENANT, &[soti], "0", "")).await;
    let udid = soti_ios_udid(&env);
    env.sim
        .soti()
        .unwrap()
        .core()
        .inject(Fault::rate_limited(u64::MAX).times(1))
        .unwrap();
    let body = json!({"device": {"udid": udid}}).to_string().into_bytes();
    let r = post_signed(&app, ACTIVATE, TENANT, &body).await;
    assert_eq!(r.status, 503, "{}", r.text);
    let retry_after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=3600).contains(&retry_after),
        "Retry-After {retry_after}"
    );

    let status = admin_get(&app, &format!("/v1/admin/tenants/{TENANT}/status")).await;
    let backoff = &status["mdms"][0]["backoff"];
    let until = chrono::DateTime::parse_from_rfc3339(
        backoff["rate_limited_until"]
            .as_str()
            .unwrap_or_else(|| panic!("{backoff}")),
    )
    .unwrap();
    let wait = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::minutes(59) && wait <= chrono::Duration::hours(1),
        "status shows at most an hour: {backoff}"
    );

    // Nothing of the failure is left behind for that device.
    let r = post_signed(&app, ACTIVATE, TENANT, &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.shutdown().await;
}

const LOCK_POLICY: &str = r#"[policy]
action_cooldown_minutes = 15
[[policy.rule]]
threat = "device.*"
action = "lock"
[[policy.rule]]
threat = "app.*"
action = "enterprise_wipe"
[[policy.rule]]
threat = "network.*"
action = "disconnect_wifi"
"#;

/// An MDM of `kind` with lock, disconnect Wi-Fi and enterprise wipe
/// permitted, background sync on (its devices are known), synced once.
async fn started(kind: SimKind) -> (Env, TestApp) {
    let env = Env::new(&[kind], 20).await;
    let wifi = match kind {
        SimKind::Bcdm | SimKind::Maas360 => "",
        SimKind::Soti => "wifi_disconnect_profile_id = \"wifi-off-1\"\n",
        SimKind::Airwatch => "wifi_disconnect_profile_id = \"42\"\n",
    };
    let spec = MdmSpec {
        extra: format!(
            "{wifi}[mdm.permit]\nlock = true\ndisconnect_wifi = true\nenterprise_wipe = true\n"
        ),
        ..MdmSpec::new(kind)
    };
    let app =
        spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", LOCK_POLICY)).await;
    let mdm = app.mdm_id(TENANT, &spec.name).await;
    app.finished_runs(mdm, 1, LIMIT).await;
    (env, app)
}

/// One synced device of the store, by a serial no other device shares:
/// (vendor device id, serial).
async fn a_device(env: &Env) -> (String, String) {
    devices(env).await.remove(0)
}

/// The synced devices an event can name by a serial no other device shares.
async fn devices(env: &Env) -> Vec<(String, String)> {
    let url = format!("sqlite://{}?mode=ro", env.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT mdm_device_id, serial FROM devices
         WHERE removed_at IS NULL AND serial IS NOT NULL AND collision = 0
           AND serial NOT IN (SELECT serial FROM devices WHERE serial IS NOT NULL
                              GROUP BY serial HAVING COUNT(*) > 1)
         ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert!(rows.len() >= 2, "the seed has devices with serials");
    rows
}

/// Where each kind's simulator takes device commands.
fn command_path(kind: SimKind) -> &'static str {
    match kind {
        SimKind::Airwatch => "/commands",
        SimKind::Soti | SimKind::Bcdm => "/actions",
        // The device is a form field; the path names the action (see `command_target`).
        SimKind::Maas360 => "/device-apis/devices/1.0/",
    }
}

/// A path fragment that only `action` ("lock" or "enterprise_wipe") for
/// `mdm_device_id` matches: faults aimed at one command.
fn command_target(kind: SimKind, mdm_device_id: &str, action: &str) -> String {
    match kind {
        // One device per action in these tests: the action's own path.
        SimKind::Maas360 => match action {
            "lock" => "/lockDevice/".to_string(),
            _ => "/selectiveWipeDevice/".to_string(),
        },
        _ => format!("/{mdm_device_id}{}", command_path(kind)),
    }
}

/// The command requests a simulator received for one device: (status answered, fault).
fn command_requests(env: &Env, kind: SimKind, mdm_device_id: &str) -> Vec<Option<u16>> {
    env.sim
        .state(kind)
        .unwrap()
        .core()
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST"
                && match kind {
                    SimKind::Maas360 => {
                        r.path.contains(command_path(kind))
                            && r.body
                                .split('&')
                                .any(|kv| kv == format!("deviceId={mdm_device_id}"))
                    }
                    _ => r
                        .path
                        .contains(&format!("/{mdm_device_id}{}", command_path(kind))),
                }
        })
        .map(|r| r.status)
        .collect()
}

async fn post_event(app: &TestApp, id: &str, serial: &str, threat: &str) {
    let body = json!({
        "event_id": id,
        "detected_at": chrono::Utc::now().to_rfc3339(),
        "device": {"serial": serial},
        "threat": {"type": threat, "severity": "high", "name": threat},
        "network": {"ssid": "Office", "bssid": "aa:bb:cc:dd:ee:ff"},
        "details": {}
    });
    let r = post_signed(app, "/v1/agent/events", TENANT, body.to_string().as_bytes()).await;
    assert_eq!(r.status, 202, "{}", r.text);
}

async fn next_attempt_at(env: &Env, action_id: i64) -> chrono::DateTime<chrono::Utc> {
    let url = format!("sqlite://{}?mode=ro", env.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let at: String = sqlx::query_scalar("SELECT next_attempt_at FROM actions WHERE id = ?")
        .bind(action_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    chrono::DateTime::parse_from_rfc3339(&at)
        .unwrap_or_else(|e| panic!("{at}: {e}"))
        .with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn an_action_answered_429_with_a_huge_retry_after_is_retried_in_one_hour() {
    let (env, app) = started(SimKind::Soti).await;
    let (_, serial) = a_device(&env).await;
    env.sim
        .soti()
        .unwrap()
        .core()
        .inject(Fault::rate_limited(u64::MAX).times(1).on_paths("/actions"))
        .unwrap();
    post_event(&app, "huge-retry-1", &serial, "device.jailbroken_rooted").await;
    let rows = wait_actions(&env, LIMIT, |r| {
        r.iter().any(|a| a.kind == "lock" && a.state == "failed")
    })
    .await;
    let due = next_attempt_at(&env, rows[0].id).await - chrono::Utc::now();
    assert!(
        due > chrono::Duration::minutes(59) && due <= chrono::Duration::minutes(61),
        "retried in an hour, not {due}"
    );
    app.shutdown().await;
}

// ------------------------------------------------------------ redirects

#[tokio::test]
async fn a_wipe_redirected_to_another_port_is_not_sent_there_and_ends_dead_naming_the_location() {
    let (env, app) = started(SimKind::Soti).await;
    let elsewhere = wiremock::MockServer::start().await;
    let location = format!("{}/MobiControl/api/devices/x/actions", elsewhere.uri());
    env.sim
        .soti()
        .unwrap()
        .core()
        .inject(Fault::redirect(location.as_str()).on_paths("/actions"))
        .unwrap();
    let (_, serial) = a_device(&env).await;
    post_event(&app, "redirect-1", &serial, "app.malicious").await;
    let rows = wait_actions(&env, LIMIT, |r| {
        r.iter()
            .any(|a| a.kind == "enterprise_wipe" && a.state == "dead")
    })
    .await;
    let reason = rows[0].reason.as_deref().unwrap_or_default();
    assert!(reason.contains(&location), "{rows:#?}");
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the command went to another origin"
    );
    assert!(
        crate::logs::text().contains(&location),
        "the log names the Location"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_sync_redirected_to_another_port_fails_naming_the_location_and_sends_no_credential_there()
{
    let (env, app) = started(SimKind::Airwatch).await;
    let mdm = app.mdm_id(TENANT, "Test AIRWATCH").await;
    let elsewhere = wiremock::MockServer::start().await;
    let location = format!("{}/airwatch/API/mdm/devices/search", elsewhere.uri());
    env.sim
        .airwatch()
        .unwrap()
        .core()
        .inject(Fault::redirect(location.as_str()))
        .unwrap();
    app.sync
        .request_full_sync(TENANT, None, mtd_connector::store::SyncTrigger::Admin)
        .unwrap();
    let runs = app.finished_runs(mdm, 2, LIMIT).await;
    let latest = runs.iter().max_by_key(|r| r.id).unwrap();
    assert_eq!(
        latest.outcome,
        mtd_connector::store::SyncOutcome::Failed,
        "{latest:?}"
    );
    let error = latest.error.as_deref().unwrap_or_default();
    assert!(error.contains(&location), "{latest:?}");
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
    app.shutdown().await;
}

// ------------------------------------------------- 502 / 504 to a command

#[tokio::test]
async fn a_wipe_answered_502_or_504_ends_dead_unrepeated_and_a_lock_is_retried_and_sent() {
    for (kind, status) in [
        (SimKind::Soti, 502),
        (SimKind::Airwatch, 504),
        (SimKind::Bcdm, 502),
        (SimKind::Maas360, 504),
    ] {
        let (env, app) = started(kind).await;
        let targets = devices(&env).await;
        let (wiped, wiped_serial) = &targets[0];
        let (locked, locked_serial) = &targets[1];
        let core = env.sim.state(kind).unwrap();
        for (id, action) in [(wiped, "enterprise_wipe"), (locked, "lock")] {
            let command = command_target(kind, id, action);
            core.core()
                .inject(Fault::status(status).times(1).on_paths(command))
                .unwrap();
        }
        post_event(
            &app,
            &format!("gw-wipe-{kind}"),
            wiped_serial,
            "app.malicious",
        )
        .await;
        post_event(
            &app,
            &format!("gw-lock-{kind}"),
            locked_serial,
            "device.jailbroken",
        )
        .await;
        let rows = wait_actions(&env, LIMIT, |r| {
            r.iter()
                .any(|a| a.kind == "enterprise_wipe" && a.state != "pending" && a.state != "failed")
                && r.iter().any(|a| a.kind == "lock" && a.state == "sent")
        })
        .await;
        // Whatever is due now is sent; a dead wipe has no retry to come.
        settle(&app, &env).await;
        let wipe = rows.iter().find(|a| a.kind == "enterprise_wipe").unwrap();
        assert_eq!(wipe.state, "dead", "{kind}: {rows:#?}");
        let reason = wipe.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("check the MDM console") && reason.contains(&status.to_string()),
            "{kind}: {wipe:?}"
        );
        assert_eq!(
            command_requests(&env, kind, wiped),
            vec![Some(status)],
            "{kind}: the wipe went out once"
        );
        assert_eq!(
            command_requests(&env, kind, locked).len(),
            2,
            "{kind}: the lock was repeated once"
        );
        app.shutdown().await;
    }
}

// ------------------------------------------------- what counts as sent

#[tokio::test]
async fn a_command_answered_200_with_an_html_page_is_not_recorded_sent() {
    for kind in SimKind::ALL {
        let (env, app) = started(kind).await;
        let targets = devices(&env).await;
        let (wiped, wiped_serial) = &targets[0];
        let (locked, locked_serial) = &targets[1];
        let core = env.sim.state(kind).unwrap();
        let wipe_path = command_target(kind, wiped, "enterprise_wipe");
        core.core()
            .inject(Fault::html_page(200).times(1).on_paths(wipe_path))
            .unwrap();
        // The lock meets the sign-in page on every attempt.
        let lock_path = command_target(kind, locked, "lock");
        core.core()
            .inject(Fault::html_page(200).on_paths(lock_path))
            .unwrap();
        post_event(
            &app,
            &format!("html-wipe-{kind}"),
            wiped_serial,
            "app.malicious",
        )
        .await;
        post_event(
            &app,
            &format!("html-lock-{kind}"),
            locked_serial,
            "device.jailbroken",
        )
        .await;
        let rows = wait_actions(&env, LIMIT, |r| {
            r.iter()
                .any(|a| a.kind == "enterprise_wipe" && a.state == "dead")
                && command_requests(&env, kind, locked).len() >= 2
        })
        .await;
        let wipe = rows.iter().find(|a| a.kind == "enterprise_wipe").unwrap();
        assert!(
            wipe.reason
                .as_deref()
                .is_some_and(|r| r.contains("HTML page") && r.contains("check the MDM console")),
            "{kind}: {wipe:?}"
        );
        assert_eq!(command_requests(&env, kind, wiped).len(), 1, "{kind}");
        let lock = rows.iter().find(|a| a.kind == "lock").unwrap();
        assert_ne!(lock.state, "sent", "{kind}: {lock:?}");
        assert!(
            env.sim.state(kind).unwrap().core().actions().is_empty(),
            "{kind}: the simulator itself never got a command"
        );
        app.shutdown().await;
    }
}

// ------------------------------------------------- listings that never end

async fn live_devices(env: &Env) -> i64 {
    count(env, "SELECT COUNT(*) FROM devices WHERE removed_at IS NULL").await
}

#[tokio::test]
async fn a_sync_of_an_mdm_that_serves_the_same_page_forever_fails_saying_so_and_removes_nothing() {
    // More devices than one page of each adapter (SOTI and AirWatch 500, BCDM 200).
    for kind in SimKind::ALL {
        let env = Env::new(&[kind], 600).await;
        let spec = MdmSpec::new(kind);
        let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", "")).await;
        let mdm = app.mdm_id(TENANT, &spec.name).await;
        app.finished_runs(mdm, 1, LIMIT).await;
        let before = live_devices(&env).await;
        assert!(before > 500, "{kind}: {before} devices");

        env.sim
            .state(kind)
            .unwrap()
            .core()
            .inject(Fault::repeat_page().on_paths("/devices"))
            .unwrap();
        app.sync
            .request_full_sync(TENANT, None, mtd_connector::store::SyncTrigger::Admin)
            .unwrap();
        let runs = app.finished_runs(mdm, 2, LIMIT).await;
        let latest = runs.iter().max_by_key(|r| r.id).unwrap();
        assert_eq!(
            latest.outcome,
            mtd_connector::store::SyncOutcome::Failed,
            "{kind}: {latest:?}"
        );
        let error = latest.error.as_deref().unwrap_or_default();
        assert!(error.contains("same page"), "{kind}: {latest:?}");
        assert_eq!(latest.removed, 0, "{kind}");
        assert_eq!(live_devices(&env).await, before, "{kind}: nothing removed");
        app.shutdown().await;
    }
}
