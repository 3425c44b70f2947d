//! Issue 9: event posts are committed in groups by one writer. What an agent
//! and an operator can see of that: concurrent posts decide exactly as the
//! same posts one after another would, a repeat or a refused request in the
//! same moment changes nothing for the others, and a store that cannot take
//! writes answers 503 with nothing stored.

use crate::support::*;
use futures::future::join_all;
use mtd_sim::SimKind;
use serde_json::{json, Value};
use std::time::Duration;

const TENANT: &str = "acme";

const POLICY: &str = r#"[policy]
action_cooldown_minutes = 15
max_destructive_actions_per_hour = 10
[[policy.rule]]
threat = "device.jailbroken_rooted"
action = "lock"
[[policy.rule]]
threat = "app.malicious"
action = "enterprise_wipe"
"#;

fn soti_all_permitted() -> MdmSpec {
    MdmSpec {
        background_sync: true,
        extra: "[mdm.permit]\nlock = true\nenterprise_wipe = true\n".into(),
        ..MdmSpec::new(SimKind::Soti)
    }
}

async fn started() -> (Env, TestApp) {
    let env = Env::new(&[SimKind::Soti], 40).await;
    let spec = soti_all_permitted();
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", POLICY)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;
    (env, app)
}

fn event(id: &str, udid: &str, threat: &str) -> Value {
    json!({
        "event_id": id,
        "detected_at": "2026-11-22T10:00:00Z",
        "device": {"udid": udid},
        "threat": {"type": threat, "severity": "high"}
    })
}

/// The SOTI simulator's device ids.
fn device_ids(env: &Env) -> Vec<String> {
    env.sim
        .soti()
        .unwrap()
        .devices()
        .into_iter()
        .map(|d| d["DeviceId"].as_str().unwrap().to_string())
        .collect()
}

/// Posts every body at the same time, each on its own connection.
async fn post_all(app: &TestApp, bodies: Vec<Value>) -> Vec<Reply> {
    join_all(bodies.into_iter().map(|body| async move {
        post_signed(app, "/v1/agent/events", TENANT, body.to_string().as_bytes()).await
    }))
    .await
}

#[tokio::test]
async fn sixty_four_concurrent_events_for_one_device_under_a_cool_down_make_exactly_one_lock() {
    let (env, app) = started().await;
    let device = device_ids(&env).remove(0);
    let bodies = (0..64)
        .map(|i| event(&format!("c-{i}"), &device, "device.jailbroken_rooted"))
        .collect();
    let replies = post_all(&app, bodies).await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 202, "{r:?}");
        assert_eq!(r.json()["accepted"], json!([format!("c-{i}")]));
    }

    let rows = wait_actions(&env, Duration::from_secs(10), |r| {
        r.iter().any(|a| a.state == "sent")
    })
    .await;
    assert_eq!(rows.len(), 64, "one action per event: {rows:#?}");
    let not_skipped: Vec<_> = rows.iter().filter(|a| a.state != "skipped").collect();
    assert_eq!(not_skipped.len(), 1, "{rows:#?}");
    let first = not_skipped[0].id;
    for skipped in rows.iter().filter(|a| a.state == "skipped") {
        let reason = skipped.reason.as_deref().unwrap();
        assert!(
            reason.contains("cool-down") && reason.contains(&format!("action {first} is")),
            "{reason}"
        );
    }
    assert_eq!(count(&env, "SELECT COUNT(*) FROM threat_events").await, 64);
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) FROM action_audit WHERE from_state IS NULL"
        )
        .await,
        64,
        "each action has its creation audited"
    );
    settle(&app, &env).await;
    let locks = env
        .sim
        .soti()
        .unwrap()
        .core()
        .actions()
        .into_iter()
        .filter(|a| a.device_id.as_deref() == Some(device.as_str()))
        .count();
    assert_eq!(locks, 1, "exactly one lock reached the MDM");
    app.shutdown().await;
}

#[tokio::test]
async fn sixteen_concurrent_enterprise_wipes_send_ten_and_hold_six_for_approval() {
    let (env, app) = started().await;
    let bodies = device_ids(&env)
        .iter()
        .take(16)
        .enumerate()
        .map(|(i, d)| event(&format!("w-{i}"), d, "app.malicious"))
        .collect();
    for r in post_all(&app, bodies).await {
        assert_eq!(r.status, 202, "{r:?}");
    }
    let rows = actions(&env).await;
    assert_eq!(rows.len(), 16);
    let held: Vec<_> = rows.iter().filter(|a| a.state == "held").collect();
    assert_eq!(held.len(), 6, "{rows:#?}");
    assert!(held.iter().all(|a| a
        .reason
        .as_deref()
        .unwrap()
        .contains("max_destructive_actions_per_hour = 10")));
    assert_eq!(
        rows.iter()
            .filter(|a| ["pending", "sent", "failed"].contains(&a.state.as_str()))
            .count(),
        10,
        "{rows:#?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn repeats_and_refused_requests_posted_at_the_same_time_do_not_affect_the_others() {
    let (env, app) = started().await;
    let devices = device_ids(&env);
    // An event already stored, to be repeated below.
    let before = post_all(&app, vec![event("old", &devices[1], "network.scan")]).await;
    assert_eq!(before[0].status, 202);

    let mut bodies = Vec::new();
    for i in 0..24 {
        bodies.push(event(&format!("n-{i}"), &devices[i % 8], "network.scan"));
    }
    for _ in 0..8 {
        // The same new id eight times: one is accepted, seven are repeats.
        bodies.push(event("same", &devices[2], "network.scan"));
        bodies.push(event("old", &devices[1], "network.scan"));
    }
    let mut invalid = event("bad", &devices[3], "network.scan");
    invalid["threat"]["severity"] = json!("extreme");
    bodies.push(invalid);
    // And one signed with the wrong key.
    let forged = event("forged", &devices[4], "network.scan").to_string();
    let headers = signed_headers(
        TENANT,
        b"wrong key",
        chrono::Utc::now().timestamp(),
        forged.as_bytes(),
    );
    let mut posts: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let app = &app;
            Box::pin(async move {
                post_signed(app, "/v1/agent/events", TENANT, b.to_string().as_bytes()).await
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + '_>>
        })
        .collect();
    posts.push(Box::pin(post_agent(
        &app,
        "/v1/agent/events",
        &headers,
        forged.clone().into_bytes(),
    )));
    let replies = join_all(posts).await;

    let mut accepted = Vec::new();
    let mut duplicates = Vec::new();
    for r in &replies[..replies.len() - 2] {
        assert_eq!(r.status, 202, "{r:?}");
        for id in r.json()["accepted"].as_array().unwrap() {
            accepted.push(id.as_str().unwrap().to_string());
        }
        for id in r.json()["duplicates"].as_array().unwrap() {
            duplicates.push(id.as_str().unwrap().to_string());
        }
    }
    assert_eq!(replies[replies.len() - 2].status, 400);
    assert_eq!(replies[replies.len() - 1].status, 401);
    accepted.sort();
    let mut want: Vec<String> = (0..24).map(|i| format!("n-{i}")).collect();
    want.push("same".into());
    want.sort();
    assert_eq!(accepted, want);
    assert_eq!(duplicates.iter().filter(|d| *d == "same").count(), 7);
    assert_eq!(duplicates.iter().filter(|d| *d == "old").count(), 8);
    assert_eq!(count(&env, "SELECT COUNT(*) FROM threat_events").await, 26);
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) FROM threat_events WHERE event_id IN ('bad', 'forged')"
        )
        .await,
        0
    );
    assert_eq!(
        count(&env, "SELECT COUNT(*) FROM actions").await,
        26,
        "one per stored event"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn while_another_process_holds_the_write_lock_events_get_503_with_retry_after_and_nothing_is_stored(
) {
    use sqlx::Connection;

    let (env, app) = started().await;
    let device = device_ids(&env).remove(0);
    let url = format!("sqlite://{}", env.db_path().display());
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mut blocker = other.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("UPDATE store_heartbeat SET at = 'held by the test' WHERE id = 1")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let replies = post_all(
        &app,
        (0..4)
            .map(|i| event(&format!("l-{i}"), &device, "network.scan"))
            .collect(),
    )
    .await;
    for r in &replies {
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.json()["error"], "unavailable");
        assert!(r.headers.get("retry-after").is_some(), "{r:?}");
    }
    blocker.rollback().await.unwrap();
    other.close().await.unwrap();
    assert_eq!(count(&env, "SELECT COUNT(*) FROM threat_events").await, 0);

    // Writable again: the same posts are accepted.
    let replies = post_all(&app, vec![event("l-0", &device, "network.scan")]).await;
    assert_eq!(replies[0].status, 202, "{:?}", replies[0]);
    assert_eq!(replies[0].json()["accepted"], json!(["l-0"]));
    assert_eq!(count(&env, "SELECT COUNT(*) FROM threat_events").await, 1);
    app.shutdown().await;
}
