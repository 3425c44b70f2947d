//! Issue 13, item 14: `/readyz` does not queue on SQLite's write lock with
//! the store's connections.

use crate::support::*;
use mtd_connector::sim::SimKind;
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
