//! Issue 6: full sync, removal safety, on-demand lookups, collisions, PII masking.

use crate::support::*;
use mtd_adapter::DeviceIdentifier;
use mtd_connector::store::{EventIdentifiers, NewEvent, SyncOutcome, SyncTrigger};
use mtd_connector::sync::LookupOutcome;
use mtd_sim::{Fault, SimKind};
use serde_json::Value;
use std::time::Duration;

const TENANT: &str = "acme";
const NO_POLICY: &str = "";

fn soti(background_sync: bool) -> MdmSpec {
    MdmSpec {
        background_sync,
        ..MdmSpec::new(SimKind::Soti)
    }
}

async fn live_devices(env: &Env) -> i64 {
    count(env, "SELECT COUNT(*) FROM devices WHERE removed_at IS NULL").await
}

async fn live_users(env: &Env) -> i64 {
    count(env, "SELECT COUNT(*) FROM users WHERE removed_at IS NULL").await
}

async fn sync_now(app: &TestApp) -> mtd_connector::sync::RunReport {
    let mut reports = app
        .sync
        .full_sync_now(TENANT, None, SyncTrigger::Admin, None)
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

#[tokio::test]
async fn the_initial_sync_brings_every_seeded_device_and_user_and_a_second_sync_changes_nothing() {
    let env = Env::new(&[SimKind::Soti], 300).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti(true)], "0", NO_POLICY)).await;
    let mdm_id = app.mdm_id(TENANT, "Test SOTI").await;
    let runs = app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;
    assert_eq!(
        runs[0].outcome,
        SyncOutcome::Succeeded,
        "{:?}",
        runs[0].error
    );
    assert_eq!(runs[0].trigger, "initial");

    let sim = env.sim.soti().unwrap();
    assert_eq!(live_devices(&env).await, sim.device_count() as i64);
    assert_eq!(
        live_users(&env).await,
        sim.users().len() as i64,
        "one user per distinct DeviceUserInfo"
    );
    assert!(count(&env, "SELECT COUNT(*) FROM groups").await >= 2);

    let ready = reqwest::get(format!("http://{}/readyz", app.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let second = sync_now(&app).await;
    assert_eq!(second.outcome, SyncOutcome::Succeeded);
    assert_eq!(
        (
            second.counts.added,
            second.counts.updated,
            second.counts.removed
        ),
        (0, 0, 0),
        "{second:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_device_and_a_user_removed_at_the_mdm_disappear_after_the_next_sync_and_keep_their_events(
) {
    let env = Env::new(&[SimKind::Soti], 120).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti(false)], "0", NO_POLICY)).await;
    assert_eq!(sync_now(&app).await.outcome, SyncOutcome::Succeeded);

    let sim = env.sim.soti().unwrap();
    let lone = sim
        .users()
        .into_iter()
        .find(|u| u.device_ids.len() == 1)
        .expect("a user with one device");
    let device_id = lone.device_ids[0].clone();
    let user_name = lone.user["UserName"].as_str().unwrap().to_string();
    let stored = app
        .store
        .find_devices(TENANT, &DeviceIdentifier::MdmDeviceId(device_id.clone()))
        .await
        .unwrap()
        .remove(0);
    let event = record_event(
        &app.store,
        &NewEvent {
            tenant_id: TENANT.into(),
            event_id: "evt-before-removal".into(),
            device_id: Some(stored.id),
            identifiers: EventIdentifiers {
                mdm_device_id: Some(device_id.clone()),
                ..Default::default()
            },
            threat_type: "network.arp_mitm".into(),
            severity: "high".into(),
            threat_name: None,
            detected_at: chrono::Utc::now(),
            received_at: chrono::Utc::now(),
            network: None,
            details: None,
            status: mtd_connector::store::ThreatStatus::Detected,
            threat_key: String::new(),
            settled: true,
        },
    )
    .await;

    sim.remove_device(&device_id).expect("the device existed");
    let report = sync_now(&app).await;
    assert_eq!(report.outcome, SyncOutcome::Succeeded);
    assert_eq!(
        report.counts.removed, 1,
        "the device (run counts are devices): {report:?}"
    );

    assert!(app
        .store
        .find_devices(TENANT, &DeviceIdentifier::MdmDeviceId(device_id.clone()))
        .await
        .unwrap()
        .is_empty());
    let removed_user = count(
        &env,
        &format!("SELECT COUNT(*) FROM users WHERE mdm_user_id = '{user_name}' AND removed_at IS NOT NULL"),
    )
    .await;
    assert_eq!(removed_user, 1, "the user of the removed device is removed");
    let kept = app
        .store
        .get_event(event)
        .await
        .unwrap()
        .expect("the event is kept");
    assert_eq!(kept.device_id, Some(stored.id));
    assert_eq!(
        kept.identifiers.mdm_device_id.as_deref(),
        Some(device_id.as_str())
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_sync_that_fails_on_page_two_removes_nothing_and_the_next_one_catches_up() {
    let env = Env::new(&[SimKind::Soti], 1200).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti(false)], "0", NO_POLICY)).await;
    assert_eq!(sync_now(&app).await.outcome, SyncOutcome::Succeeded);
    assert_eq!(live_devices(&env).await, 1200);

    let sim = env.sim.soti().unwrap();
    let gone: Vec<String> = sim
        .devices()
        .iter()
        .take(5)
        .map(|d| d["DeviceId"].as_str().unwrap().to_string())
        .collect();
    for id in &gone {
        sim.remove_device(id).unwrap();
    }
    sim.core()
        .inject(Fault::status(500).times(1).on_paths("skip=500"))
        .unwrap();

    let failed = sync_now(&app).await;
    assert_eq!(failed.outcome, SyncOutcome::Failed);
    assert_eq!(failed.error_class, Some("unavailable"), "{failed:?}");
    assert_eq!(failed.counts.removed, 0);
    assert_eq!(
        live_devices(&env).await,
        1200,
        "a failed run removes nothing"
    );
    let run = app
        .store
        .sync_run(failed.run_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.outcome, SyncOutcome::Failed);
    assert!(
        run.error.as_deref().unwrap_or_default().contains("500"),
        "{:?}",
        run.error
    );

    let next = sync_now(&app).await;
    assert_eq!(next.outcome, SyncOutcome::Succeeded);
    assert_eq!(
        live_devices(&env).await,
        1195,
        "the next successful run catches up"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_sync_while_other_writers_keep_the_write_lock_busy_stores_every_device_once() {
    // Two writers that take turns with the sync's transactions (as event
    // ingest and the dispatcher do): the sync then commits whenever one
    // waits and writes its pages in chunks. Counts and rows stay exact.
    let env = Env::new(&[SimKind::Soti], 1200).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti(false)], "0", NO_POLICY)).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (app.store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut turns = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let tx = store.begin().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    tx.rollback().await.unwrap();
                    turns += 1;
                }
                turns
            })
        })
        .collect();
    let report = sync_now(&app).await;
    // A second sync under the same load changes nothing.
    let again = sync_now(&app).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    for w in writers {
        assert!(w.await.unwrap() > 0, "the other writers got their turns");
    }
    assert_eq!(report.outcome, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.counts.added, 1200);
    assert_eq!(report.counts.updated, 0);
    assert_eq!(live_devices(&env).await, 1200);
    let sim = env.sim.soti().unwrap();
    assert_eq!(live_users(&env).await, sim.users().len() as i64);
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) FROM devices WHERE last_sync_run_id IS NOT (SELECT MAX(id) FROM sync_runs)"
        )
        .await,
        0,
        "every device tagged with the last run"
    );
    assert_eq!(again.outcome, SyncOutcome::Succeeded);
    assert_eq!((again.counts.added, again.counts.updated), (0, 0));
    app.shutdown().await;
}

#[tokio::test]
async fn syncs_repeat_on_a_short_interval_never_overlap_and_stop_on_shutdown() {
    let env = Env::new(&[SimKind::Soti], 200).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti(true)], "2s", NO_POLICY)).await;
    let mdm_id = app.mdm_id(TENANT, "Test SOTI").await;
    // Admin requests on top of the schedule must not overlap with it either.
    for _ in 0..3 {
        let _ = app
            .sync
            .request_full_sync(TENANT, None, SyncTrigger::Admin)
            .unwrap();
    }
    let mut runs = app.finished_runs(mdm_id, 4, Duration::from_secs(30)).await;
    app.shutdown().await;
    runs.sort_by_key(|r| r.id);
    assert!(runs.iter().any(|r| r.trigger == "scheduled"), "{runs:?}");
    for pair in runs.windows(2) {
        let prev_end = pair[0].finished_at.unwrap();
        assert!(
            pair[1].started_at >= prev_end,
            "run {} started before run {} ended",
            pair[1].id,
            pair[0].id
        );
    }
    let all = env.sim.soti().unwrap();
    drop(all);
    let still_running = count(
        &env,
        "SELECT COUNT(*) FROM sync_runs WHERE outcome = 'running'",
    )
    .await;
    assert_eq!(still_running, 0, "shutdown leaves no run marked running");
}

#[tokio::test]
async fn an_interval_of_zero_and_background_sync_false_schedule_nothing() {
    let env = Env::new(&[SimKind::Soti], 20).await;
    // "0": the initial sync runs, nothing after it.
    let app = spawn_app(&env.write_config(TENANT, &[soti(true)], "0", NO_POLICY)).await;
    let mdm_id = app.mdm_id(TENANT, "Test SOTI").await;
    app.finished_runs(mdm_id, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.store.sync_runs(mdm_id, 10).await.unwrap().len(),
        1,
        "only the initial sync"
    );
    app.shutdown().await;

    // background_sync = false: the initial sync runs (as BCDM's "Finish"
    // does), and nothing is scheduled after it, whatever the interval.
    let mut env = Env::new(&[SimKind::Soti], 20).await;
    env.initial_sync = Some(true);
    let app = spawn_app(&env.write_config(TENANT, &[soti(false)], "1s", NO_POLICY)).await;
    let mdm_id = app.mdm_id(TENANT, "Test SOTI").await;
    let runs = app.finished_runs(mdm_id, 1, Duration::from_secs(10)).await;
    assert_eq!(runs[0].trigger, "initial");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.store.sync_runs(mdm_id, 10).await.unwrap().len(),
        1,
        "only the initial sync"
    );
    app.shutdown().await;
}

/// `enabled = false`: the MDM stays configured but the daemon sends it
/// nothing: no initial or scheduled sync, no lookup, no action (decided
/// `skipped`, "MDM disabled"); an admin's sync of it is refused with 409.
#[tokio::test]
async fn a_disabled_mdm_receives_no_request_from_the_daemon() {
    let mut env = Env::new(&[SimKind::Soti], 20).await;
    env.initial_sync = Some(true);
    let mut spec = soti(true);
    spec.extra = "enabled = false\n".into();
    let policy = "[[policy.rule]]\nthreat = \"*\"\naction = \"lock\"\n";
    let app = spawn_app(&env.write_config(TENANT, &[spec], "1s", policy)).await;
    let mdm_id = app.mdm_id(TENANT, "Test SOTI").await;
    let sim = env.sim.soti().unwrap();
    let device = sim.devices()[0].clone();
    let device_id = device["DeviceId"].as_str().unwrap().to_string();

    // A lookup (activation of a device the store does not know) asks no MDM.
    let udid = DeviceIdentifier::udid(&device_id).unwrap();
    assert!(matches!(
        app.sync.lookup(TENANT, &[udid]).await,
        Ok(LookupOutcome::NotEnrolled)
    ));
    // An admin's sync of it is refused.
    let refused = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/admin/tenants/{TENANT}/sync?mdm=Test%20SOTI",
            app.addr
        ))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert_eq!(
        refused.json::<serde_json::Value>().await.unwrap()["error"],
        "mdm_disabled"
    );
    // Two schedule periods later: no run, no request.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(app.store.sync_runs(mdm_id, 10).await.unwrap().is_empty());
    assert!(
        sim.core().requests().is_empty(),
        "no request reached the MDM: {:?}",
        sim.core().requests()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn fifty_concurrent_lookups_of_one_unknown_device_make_one_request_and_unknown_ones_are_not_enrolled(
) {
    let env = Env::new(&[SimKind::Soti], 50).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti(false)], "0", NO_POLICY)).await;
    let sim = env.sim.soti().unwrap();
    let ios = sim
        .devices()
        .into_iter()
        .find(|d| d["Kind"].as_str().unwrap().eq_ignore_ascii_case("ios"))
        .unwrap();
    let device_id = ios["DeviceId"].as_str().unwrap().to_string();
    let udid = DeviceIdentifier::udid(&device_id).unwrap();

    let lookups = (0..50).map(|_| {
        let sync = app.sync.clone();
        let udid = udid.clone();
        tokio::spawn(async move { sync.lookup(TENANT, &[udid]).await })
    });
    let results = futures::future::join_all(lookups).await;
    for r in results {
        match r.unwrap().unwrap() {
            LookupOutcome::Found(d) => assert_eq!(d.mdm_device_id, device_id),
            other => panic!("{other:?}"),
        }
    }
    let device_requests = sim
        .core()
        .requests()
        .into_iter()
        .filter(|r| r.path.to_lowercase().contains(&device_id))
        .count();
    assert_eq!(device_requests, 1, "single flight: one lookup at the MDM");

    let unknown = DeviceIdentifier::udid("00008030-FFFFFFFFFFFFFFFF").unwrap();
    assert_eq!(
        app.sync
            .lookup(TENANT, std::slice::from_ref(&unknown))
            .await
            .unwrap(),
        LookupOutcome::NotEnrolled
    );
    let before = sim.core().requests().len();
    for _ in 0..20 {
        assert_eq!(
            app.sync
                .lookup(TENANT, std::slice::from_ref(&unknown))
                .await
                .unwrap(),
            LookupOutcome::NotEnrolled
        );
    }
    assert_eq!(
        sim.core().requests().len(),
        before,
        "a miss is remembered: no new MDM calls"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_sync_that_would_remove_half_the_devices_removes_none_until_a_second_run_confirms() {
    let env = Env::new(&[SimKind::Soti], 100).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti(false)], "0", NO_POLICY)).await;
    assert_eq!(sync_now(&app).await.outcome, SyncOutcome::Succeeded);
    let sim = env.sim.soti().unwrap();
    let half: Vec<String> = sim
        .devices()
        .iter()
        .take(50)
        .map(|d| d["DeviceId"].as_str().unwrap().to_string())
        .collect();
    for id in &half {
        sim.remove_device(id).unwrap();
    }

    let held = sync_now(&app).await;
    assert_eq!(held.outcome, SyncOutcome::Succeeded);
    assert_eq!(held.counts.removed, 0);
    assert!(held.counts.held_removals >= 50, "{held:?}");
    assert!(
        held.held_reason
            .as_deref()
            .unwrap_or_default()
            .contains("max_removal_percent"),
        "{held:?}"
    );
    assert_eq!(live_devices(&env).await, 100);
    let run = app
        .store
        .sync_run(held.run_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        run.held_removals >= 50,
        "the held removals are recorded on the run"
    );

    let confirmed = sync_now(&app).await;
    assert!(confirmed.counts.removed >= 50, "{confirmed:?}");
    assert_eq!(live_devices(&env).await, 50);
    app.shutdown().await;
}

#[tokio::test]
async fn a_run_that_fails_authentication_removes_nothing() {
    let env = Env::new(&[SimKind::Soti], 60).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti(false)], "0", NO_POLICY)).await;
    assert_eq!(sync_now(&app).await.outcome, SyncOutcome::Succeeded);
    let sim = env.sim.soti().unwrap();
    for d in sim.devices().iter().take(3) {
        sim.remove_device(d["DeviceId"].as_str().unwrap()).unwrap();
    }
    let mut options = sim.options();
    options.password = "changed-at-the-console".into();
    sim.set_options(options);
    sim.expire_tokens();

    let failed = sync_now(&app).await;
    assert_eq!(failed.outcome, SyncOutcome::Failed);
    assert_eq!(failed.error_class, Some("unauthorized"), "{failed:?}");
    assert_eq!(live_devices(&env).await, 60);
    app.shutdown().await;
}

#[tokio::test]
async fn two_devices_sharing_a_serial_are_both_kept_and_flagged_and_a_lookup_picks_the_latest_check_in(
) {
    let env = Env::new(&[SimKind::Soti], 30).await;
    let sim = env.sim.soti().unwrap();
    let original = sim
        .devices()
        .into_iter()
        .find(|d| {
            d["Kind"].as_str().unwrap().eq_ignore_ascii_case("ios")
                && d["ManufacturerSerialNumber"].is_string()
        })
        .unwrap();
    let serial = original["ManufacturerSerialNumber"]
        .as_str()
        .unwrap()
        .to_string();
    let mut twin = original.clone();
    let twin_id = "f".repeat(40);
    twin["DeviceId"] = Value::from(twin_id.clone());
    twin["MACAddress"] = Value::from("02:11:22:33:44:55");
    twin["LastCheckInTime"] = Value::from("2099-01-01T00:00:00Z");
    sim.add_device(twin).unwrap();

    let app = spawn_app(&env.write_config(TENANT, &[soti(false)], "0", NO_POLICY)).await;
    let report = sync_now(&app).await;
    assert_eq!(report.outcome, SyncOutcome::Succeeded);
    let both = app
        .store
        .find_devices(TENANT, &DeviceIdentifier::serial(&serial).unwrap())
        .await
        .unwrap();
    assert_eq!(both.len(), 2, "both records are kept");
    assert!(both.iter().all(|d| d.collision), "both are flagged");
    match app
        .sync
        .lookup(TENANT, &[DeviceIdentifier::serial(&serial).unwrap()])
        .await
        .unwrap()
    {
        LookupOutcome::Found(d) => {
            assert_eq!(d.mdm_device_id, twin_id, "the most recently checked-in one")
        }
        other => panic!("{other:?}"),
    }
    app.shutdown().await;
}

#[tokio::test]
async fn with_mask_pii_no_clear_name_or_email_reaches_the_sqlite_file_or_the_logs() {
    let env = Env::new(&[SimKind::Soti], 200).await;
    let spec = MdmSpec {
        mask_pii: true,
        ..soti(false)
    };
    let app = spawn_app(&env.write_config(TENANT, &[spec], "0", NO_POLICY)).await;
    let report = sync_now(&app).await;
    assert_eq!(report.outcome, SyncOutcome::Succeeded);
    // A lookup path must mask too.
    let sim = env.sim.soti().unwrap();
    assert!(
        count(
            &env,
            "SELECT COUNT(*) FROM users WHERE pii_hash IS NOT NULL"
        )
        .await
            > 0
    );
    let mut clear: Vec<String> = Vec::new();
    for u in sim.users() {
        for field in ["FirstName", "LastName", "Email", "UserName"] {
            if let Some(v) = u.user[field].as_str().filter(|v| v.chars().count() >= 4) {
                clear.push(v.to_string());
            }
        }
    }
    assert!(clear.len() > 50);
    app.shutdown().await;

    let mut bytes = std::fs::read(env.db_path()).unwrap();
    if let Ok(wal) = std::fs::read(env.db_path().with_extension("db-wal")) {
        bytes.extend(wal);
    }
    for value in &clear {
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "`{value}` is in the SQLite file in clear"
        );
    }
    let logs = crate::logs::text();
    assert!(logs.contains("Full sync succeeded"), "the log is captured");
    for value in &clear {
        assert!(
            !logs.contains(value.as_str()),
            "`{value}` is in the logs in clear"
        );
    }
}
