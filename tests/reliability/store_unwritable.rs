//! The store stops taking writes while the daemon runs, then takes them again.
//!
//! The mechanism, and why this one: another process (this test, not the
//! daemon) opens the same SQLite file and holds its write lock (`BEGIN
//! IMMEDIATE` plus a write, never committed). Every write transaction of the
//! daemon then waits its 5 s busy timeout and fails with SQLITE_BUSY, exactly
//! what a store that cannot take writes looks like from inside the daemon.
//! It needs no root (a read-only mount or a full disk do; `chmod` does not
//! stop a root process nor an already open file), works on any CI machine,
//! and is undone by a rollback. A file-size limit (RLIMIT_FSIZE) would also
//! work without root, but the daemon would die of SIGXFSZ, and SQLite reuses
//! its WAL file, so the first failing write is hard to place.

use crate::api::{self, MdmSpec};
use crate::support::*;
use mtd_sim::{Fault, SimKind};
use serde_json::{json, Value};
use sqlx::Connection;
use std::collections::BTreeSet;
use std::time::Duration;

const TENANT: &str = "disk";
const POLICY: &str = "[policy]\n[[policy.rule]]\nthreat = \"device.*\"\naction = \"lock\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_unwritable_while_another_process_holds_the_sqlite_write_lock_gives_503_and_failing_readyz_then_recovers_losing_nothing(
) {
    let env = env_without_rate_limits(&[SimKind::Soti], 30).await;
    let config = env.write_config(TENANT, &[MdmSpec::new(SimKind::Soti)], "0", POLICY);
    let db = env.db_path();
    let mut daemon = Daemon::start(&config, "debug").await;
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM sync_runs WHERE outcome = 'succeeded'",
        1,
        Duration::from_secs(30),
    )
    .await;
    let targets = targets(&db).await;
    let client = reqwest::Client::new();
    let post = |id: String, n: usize| {
        let body = event_body(
            &id,
            &targets[n % targets.len()].serial,
            "device.usb_debugging",
        );
        let client = client.clone();
        let addr = daemon.addr;
        async move {
            let headers = api::agent_headers(TENANT, &body);
            try_post(&client, addr, "/v1/agent/events", &headers, body)
                .await
                .expect("the daemon answers within 30 s")
        }
    };
    let get = |path: &'static str| {
        let url = daemon.url(path);
        async move {
            let r = reqwest::get(url).await.expect("the daemon answers");
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    // The MDM answers lock calls after 1.5 s, so the locks of the first
    // events are still at the MDM when the store stops taking writes: their
    // outcome must be recorded once it takes them again.
    env.sim
        .soti()
        .unwrap()
        .core()
        .inject(Fault::latency(Duration::from_millis(1500)).on_paths("/actions"))
        .unwrap();
    let mut acked = BTreeSet::new();
    for n in 0..10 {
        let r = post(format!("before-{n}"), n).await;
        assert_eq!(r.status, 202, "{}", r.text);
        acked.insert(format!("before-{n}"));
    }
    assert_eq!(get("/readyz").await.0, 200);

    // Another process takes the write lock and keeps it.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let mut blocker = other.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let outage_started = tokio::time::Instant::now();
    sqlx::query("UPDATE store_heartbeat SET at = 'held by another process' WHERE id = 1")
        .execute(&mut *blocker)
        .await
        .unwrap();

    // Single events, a batch and the readiness probe, all while the lock is held.
    let batch = {
        let events: Vec<Value> = (0..3)
            .map(|n| {
                serde_json::from_slice(&event_body(
                    &format!("during-batch-{n}"),
                    &targets[n].serial,
                    "device.usb_debugging",
                ))
                .unwrap()
            })
            .collect();
        json!({ "events": events }).to_string().into_bytes()
    };
    let batch_post = {
        let client = client.clone();
        let addr = daemon.addr;
        async move {
            let headers = api::agent_headers(TENANT, &batch);
            try_post(&client, addr, "/v1/agent/events", &headers, batch)
                .await
                .expect("the daemon answers within 30 s")
        }
    };
    let (r1, r2, r3, rb, (ready, ready_body), (health, _)) = tokio::join!(
        post("during-1".into(), 1),
        post("during-2".into(), 2),
        post("during-3".into(), 3),
        batch_post,
        get("/readyz"),
        get("/healthz"),
    );
    for r in [&r1, &r2, &r3, &rb] {
        assert_eq!(
            r.status, 503,
            "an event that cannot be stored is not acknowledged: {}",
            r.text
        );
        assert_eq!(r.json(), json!({"error": "unavailable"}));
        assert!(
            r.headers.get("retry-after").is_some(),
            "503 tells the agent when to retry: {:?}",
            r.headers
        );
    }
    assert_eq!(ready, 503, "{ready_body}");
    assert_eq!(
        serde_json::from_str::<Value>(&ready_body).unwrap()["store"],
        "unwritable"
    );
    assert_eq!(health, 200, "the process itself is up");

    // An outage longer than the store's 5 s busy timeout after the MDM
    // answered: recording those outcomes fails at least once.
    tokio::time::sleep_until(outage_started + Duration::from_secs(9)).await;

    // The store takes writes again.
    blocker.rollback().await.unwrap();
    other.close().await.unwrap();
    assert_eq!(get("/readyz").await.0, 200);

    // The refused events again: accepted now, not duplicates (a 503 stored nothing).
    for (n, id) in ["during-1", "during-2", "during-3"].iter().enumerate() {
        let r = post(id.to_string(), n + 1).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.json()["accepted"], json!([id]), "{}", r.text);
        acked.insert(id.to_string());
    }
    for n in 0..10 {
        let r = post(format!("after-{n}"), n + 10).await;
        assert_eq!(r.status, 202, "{}", r.text);
        acked.insert(format!("after-{n}"));
    }

    // Nothing acknowledged is lost, nothing refused was half-stored, and
    // every lock the events caused went out once the store was back.
    let pool = open_store(&db).await;
    let stored: BTreeSet<String> = strings(&pool, "SELECT event_id FROM threat_events")
        .await
        .into_iter()
        .collect();
    assert_eq!(stored, acked);
    pool.close().await;
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM actions WHERE state IN ('pending', 'failed') OR claimed_at IS NOT NULL",
        0,
        Duration::from_secs(30),
    )
    .await;
    let pool = open_store(&db).await;
    let states = strings(&pool, "SELECT DISTINCT state FROM actions ORDER BY state").await;
    let sent = strings(
        &pool,
        "SELECT d.mdm_device_id FROM actions a JOIN devices d ON d.id = a.device_id
         WHERE a.state = 'sent' ORDER BY a.id",
    )
    .await;
    pool.close().await;
    assert!(
        states.iter().all(|s| s == "sent" || s == "skipped"),
        "{states:?}"
    );
    // Each lock reached the MDM once, and the count matches the rows.
    let calls = sim_actions_per_device(&env.sim, SimKind::Soti);
    assert_eq!(calls.len(), sent.len(), "{calls:?}");
    for device in &sent {
        assert_eq!(calls.get(device), Some(&1), "{device}: {calls:?}");
    }

    let status = daemon.sigterm(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    let log = daemon.log();
    assert!(
        log.contains("Store unavailable"),
        "the 503s are logged with their cause"
    );
    assert_no_secret(&log, "the daemon's log", &configured_secrets());
}
