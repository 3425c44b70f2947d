//! Issue 17: `kill -9` between a change of a device's risk level and its
//! delivery to the MDM. The `signal_risk` row was committed with the event
//! (before the 202), so after a restart the level still reaches the MDM.

use crate::api::{self, MdmSpec};
use crate::support::*;
use mtd_sim::{Fault, SimKind};
use std::time::{Duration, Instant};

const TENANT: &str = "acme";

#[tokio::test]
async fn a_level_change_unsent_at_a_kill_9_reaches_the_mdm_after_the_restart() {
    let env = env_without_rate_limits(&[SimKind::Soti], 10).await;
    let spec = MdmSpec {
        extra: "[mdm.risk_signal]\nenabled = true\n".into(),
        ..MdmSpec::new(SimKind::Soti)
    };
    let config = env.write_config(TENANT, &[spec], "0", "");
    let db = env.db_path();
    let mut daemon = Daemon::start(&config, "info").await;
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM sync_runs WHERE outcome = 'succeeded'",
        1,
        Duration::from_secs(60),
    )
    .await;
    let sim = env.sim.soti().unwrap();
    let device = sim.devices()[0]["DeviceId"].as_str().unwrap().to_string();
    // The MDM fails every write: the level cannot be delivered before the kill.
    sim.core()
        .inject(
            Fault::status(503)
                .times(1_000_000)
                .on_paths("/customAttributes"),
        )
        .unwrap();
    let body = serde_json::json!({
        "event_id": "crash-signal-1",
        "detected_at": chrono::Utc::now().to_rfc3339(),
        "device": {"mdm_device_id": device},
        "threat": {"type": "device.jailbroken_rooted", "severity": "high"}
    })
    .to_string();
    let client = reqwest::Client::new();
    let reply = post_signed_as(
        &client,
        daemon.addr,
        "/v1/agent/events",
        TENANT,
        api::AGENT_SECRET,
        body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    // At least one attempt failed, so the row is waiting for a retry at the kill.
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM actions WHERE kind = 'signal_risk' AND attempts >= 1",
        1,
        Duration::from_secs(20),
    )
    .await;
    daemon.kill9();
    assert_eq!(sim.custom_attribute(&device, "MTD_Threat_Level"), None);

    sim.core().clear_faults();
    let _daemon = Daemon::start(&config, "info").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if sim.custom_attribute(&device, "MTD_Threat_Level").as_deref() == Some("High") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the level did not reach the MDM after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The simulator records the write before it answers; the daemon marks
    // the row sent after the answer, so wait for that commit.
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM actions WHERE kind = 'signal_risk' AND state = 'sent'",
        1,
        Duration::from_secs(20),
    )
    .await;
    let pool = open_store(&db).await;
    let states = strings(
        &pool,
        "SELECT state FROM actions WHERE kind = 'signal_risk' ORDER BY id",
    )
    .await;
    assert_eq!(states, ["sent"], "one signal, delivered");
}
