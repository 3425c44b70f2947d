//! Issue 13, item 14: `/readyz` does not queue on SQLite's write lock with
//! the store's connections, and a `none` decision is a DEBUG line.

use crate::support::*;
use mtd_sim::SimKind;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_probes_during_a_write_lock_held_elsewhere_leave_the_stores_readers_alone() {
    use sqlx::Connection;
    const TENANT: &str = "ready-probe";

    let env = Env::new(&[SimKind::Soti], 2).await;
    let spec = MdmSpec {
        background_sync: false,
        ..MdmSpec::new(SimKind::Soti)
    };
    let app = spawn_app(&env.write_config(TENANT, &[spec], "0", "")).await;
    let client = reqwest::Client::new();
    let ready = |client: reqwest::Client| {
        let url = format!("http://{}/readyz", app.addr);
        async move {
            let r = client.get(url).send().await.expect("the app answers");
            r.status().as_u16()
        }
    };
    assert_eq!(ready(client.clone()).await, 200);

    // Another process holds SQLite's write lock past the store's busy timeout.
    let url = format!("sqlite://{}", env.db_path().display());
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mut blocker = other.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("UPDATE store_heartbeat SET at = 'held by the test' WHERE id = 1")
        .execute(&mut *blocker)
        .await
        .unwrap();

    // A monitoring system (or anyone: /readyz needs no token) probes hard.
    let probes: Vec<_> = (0..16)
        .map(|_| tokio::spawn(ready(client.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Reads of the store do not wait behind the probes.
    let asked = Instant::now();
    let devices = client
        .get(format!(
            "http://{}/v1/admin/tenants/{TENANT}/devices",
            app.addr
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(devices.status(), 200);
    assert!(
        took < Duration::from_secs(2),
        "an admin read waited {took:?} behind readiness probes"
    );

    for probe in probes {
        assert_eq!(probe.await.unwrap(), 503, "the store does not take writes");
    }
    blocker.rollback().await.unwrap();
    other.close().await.unwrap();
    assert_eq!(ready(client.clone()).await, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_none_decision_is_logged_at_debug_not_at_info() {
    const TENANT: &str = "none-decision";
    const EVENT: &str = "evt-none-decision-1";
    let env = Env::new(&[SimKind::Soti], 5).await;
    let spec = MdmSpec::new(SimKind::Soti);
    let policy = "[policy]\n[[policy.rule]]\nthreat = \"*\"\naction = \"none\"\n";
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", policy)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;
    let device = env.sim.soti().unwrap().devices()[0]["DeviceId"]
        .as_str()
        .unwrap()
        .to_string();

    let body = json!({
        "event_id": EVENT,
        "detected_at": "2026-11-22T10:00:00Z",
        "device": {"mdm_device_id": device},
        "threat": {"type": "network.scan", "severity": "low"}
    });
    let r = post_signed(
        &app,
        "/v1/agent/events",
        TENANT,
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["accepted"], json!([EVENT]));
    let recorded: Vec<Row> = actions(&env).await;
    assert!(
        recorded.iter().any(|a| a.kind == "none"),
        "the decision is recorded: {recorded:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = crate::logs::text();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains(EVENT))
            .map(str::to_owned)
            .collect();
        if lines.iter().any(|l| l.contains("DEBUG")) || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        lines.iter().any(|l| l.contains("DEBUG")),
        "the decision is logged at DEBUG: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(" INFO ")),
        "a `none` decision is not an INFO line per event: {lines:#?}"
    );
    let _: Value = r.json();
    app.shutdown().await;
}
