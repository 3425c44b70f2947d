//! Reloading the config in a running daemon (what SIGHUP does): a new tenant
//! is served and its MDM synced without a restart, work in flight goes on,
//! and a broken file changes nothing.

use crate::support::*;
use mtd_connector::reload::{reload, ReloadError};
use mtd_connector::store::{SyncOutcome, SyncTrigger};
use mtd_sim::{Fault, SimKind};
use serde_json::{json, Value};
use std::time::Duration;

const NO_POLICY: &str = "";
const LIMIT: Duration = Duration::from_secs(30);

async fn admin_get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("http://{}{path}", app.addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn tenant_ids(app: &TestApp) -> Vec<String> {
    app.state
        .config
        .load()
        .tenants
        .iter()
        .map(|t| t.id.clone())
        .collect()
}

#[tokio::test]
async fn a_reload_adds_a_tenant_whose_mdm_syncs_while_a_running_sync_goes_on() {
    let env = Env::new(&[SimKind::Soti, SimKind::Airwatch], 40).await;
    let app =
        spawn_app(&env.write_config("acme", &[MdmSpec::new(SimKind::Soti)], "0", NO_POLICY)).await;
    let acme = app.mdm_id("acme", "Test SOTI").await;
    app.finished_runs(acme, 1, LIMIT).await;

    // A slow second run of acme's MDM is in progress when the reload lands.
    env.sim
        .soti()
        .unwrap()
        .core()
        .inject(
            Fault::latency(Duration::from_millis(1500))
                .times(1)
                .on_paths("devices"),
        )
        .unwrap();
    app.sync
        .request_full_sync("acme", None, SyncTrigger::Admin)
        .unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while app.store.sync_runs(acme, 10).await.unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second run did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, _) = admin_get(&app, "/v1/admin/tenants/beta/devices").await;
    assert_eq!(status, 404, "beta is not configured yet");
    env.write_config("beta", &[MdmSpec::new(SimKind::Airwatch)], "0", NO_POLICY);
    let r = reload(&app.state).await.expect("the reload succeeds");
    assert_eq!(r.tenants, 2);
    assert_eq!(r.tenants_added, ["beta"]);
    assert!(r.tenants_removed.is_empty());
    assert_eq!(r.mdms.kept, 1, "acme's unchanged MDM keeps its worker");
    assert_eq!(
        r.mdms.started,
        [("beta".to_string(), "Test AIRWATCH".to_string())]
    );
    assert!(r.mdms.stopped.is_empty());

    // The new tenant's MDM gets its initial sync, without a restart.
    let beta = app.mdm_id("beta", "Test AIRWATCH").await;
    let runs = app.finished_runs(beta, 1, LIMIT).await;
    assert_eq!(runs[0].outcome, SyncOutcome::Succeeded, "{:?}", runs[0]);
    let listed = env.sim.airwatch().unwrap().devices().len() as u64;
    assert_eq!(runs[0].added, listed, "every AirWatch device is stored");
    let (status, page) = admin_get(&app, "/v1/admin/tenants/beta/devices?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // The run that was going on when the reload came finished normally.
    let acme_runs = app.finished_runs(acme, 2, LIMIT).await;
    assert!(
        acme_runs
            .iter()
            .all(|r| r.outcome == SyncOutcome::Succeeded),
        "{acme_runs:?}"
    );

    // The new tenant's agents are served with its secret.
    let body = serde_json::to_vec(&json!({
        "event_id": "after-reload-1",
        "detected_at": "2026-11-22T10:00:00Z",
        "device": { "serial": "no-such-serial" },
        "threat": { "type": "network.arp_mitm", "severity": "high" },
    }))
    .unwrap();
    let r = post_signed(&app, "/v1/agent/events", "beta", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    app.shutdown().await;
}

#[tokio::test]
async fn a_reload_with_a_broken_file_keeps_the_running_config_and_a_good_one_applies() {
    let env = Env::new(&[SimKind::Soti], 20).await;
    let main = env.write_config("acme", &[MdmSpec::new(SimKind::Soti)], "0", NO_POLICY);
    let app = spawn_app(&main).await;
    let acme = app.mdm_id("acme", "Test SOTI").await;
    app.finished_runs(acme, 1, LIMIT).await;

    let broken = env.dir.path().join("tenants.d/gamma.toml");
    std::fs::write(
        &broken,
        "id = \"gamma\"\nagent_secret = \"gamma-secret\"\n\n[[mdm]]\nname = \"G\"\nkind = \"intune\"\nurl = \"https://g.example\"\n",
    )
    .unwrap();
    let err = reload(&app.state)
        .await
        .expect_err("a broken file is refused");
    let ReloadError::Config(errors) = &err else {
        panic!("not a config error: {err}");
    };
    let text = errors.to_string();
    assert!(
        text.contains(&format!("{}:6:8:", broken.display())),
        "the error names FILE:LINE:COL of `kind`:\n{text}"
    );
    assert_eq!(tenant_ids(&app), ["acme"], "the old config stays");
    let (status, list) = admin_get(&app, "/v1/admin/tenants").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme"], "the store's tenants are unchanged");
    let (status, _) = admin_get(&app, "/v1/admin/tenants/acme/status").await;
    assert_eq!(status, 200, "still serving the old tenant");

    // Fixed, and acme's MDM changed: its worker is rebuilt and syncs again.
    std::fs::remove_file(&broken).unwrap();
    let mut changed = MdmSpec::new(SimKind::Soti);
    changed.mask_pii = true;
    env.write_config("acme", &[changed], "0", NO_POLICY);
    let r = reload(&app.state).await.expect("the fixed config applies");
    let acme_key = ("acme".to_string(), "Test SOTI".to_string());
    assert_eq!(r.mdms.started, std::slice::from_ref(&acme_key));
    assert_eq!(r.mdms.stopped, [acme_key]);
    assert_eq!(r.mdms.kept, 0);
    let runs = app.finished_runs(acme, 2, LIMIT).await;
    assert!(
        runs.iter().all(|r| r.outcome == SyncOutcome::Succeeded),
        "{runs:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn status_shows_the_sync_retry_and_the_rate_limit_the_mdm_asked_for() {
    let env = Env::new(&[SimKind::Airwatch], 20).await;
    let app =
        spawn_app(&env.write_config("acme", &[MdmSpec::new(SimKind::Airwatch)], "0", NO_POLICY))
            .await;
    let mdm = app.mdm_id("acme", "Test AIRWATCH").await;
    app.finished_runs(mdm, 1, LIMIT).await;
    let (_, status) = admin_get(&app, "/v1/admin/tenants/acme/status").await;
    assert_eq!(
        status["mdms"][0]["backoff"],
        Value::Null,
        "nothing to wait for"
    );

    // The MDM says "too many requests, come back in 120 s" to every call.
    env.sim
        .airwatch()
        .unwrap()
        .core()
        .inject(Fault::rate_limited(120))
        .unwrap();
    app.sync
        .request_full_sync("acme", None, SyncTrigger::Admin)
        .unwrap();
    let runs = app.finished_runs(mdm, 2, LIMIT).await;
    assert_eq!(runs[0].outcome, SyncOutcome::Failed, "{runs:?}");

    let (_, status) = admin_get(&app, "/v1/admin/tenants/acme/status").await;
    let backoff = &status["mdms"][0]["backoff"];
    assert_eq!(backoff["sync_failures"], 1, "{backoff}");
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{backoff}")))
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let now = chrono::Utc::now();
    let retry = at(&backoff["sync_retry_at"]) - now;
    assert!(
        retry > chrono::Duration::seconds(110) && retry <= chrono::Duration::seconds(121),
        "the retry waits out the MDM's Retry-After of 120 s, not only the 30 s back-off (CONTRACT §4): {backoff}"
    );
    let limited = at(&backoff["rate_limited_until"]) - now;
    assert!(
        limited > chrono::Duration::seconds(100) && limited <= chrono::Duration::seconds(120),
        "the MDM's Retry-After is shown: {backoff}"
    );
    app.shutdown().await;
}
