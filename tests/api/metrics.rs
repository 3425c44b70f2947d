//! Issue 8, item 6: `/metrics` in the Prometheus text format, and `/readyz`
//! when the store cannot take writes.
//!
//! The registry is process-wide and the tests of this binary run in
//! parallel, so exact deltas are read only on series labelled with this
//! file's own tenants; series shared with other tests (by MDM kind) are
//! only checked to have moved by at least what this test did.

use crate::support::*;
use mtd_sim::SimKind;
use prometheus_parse::{LineInfo, Scrape, Value as PromValue};
use serde_json::{json, Value};
use std::time::Duration;

/// Tenants no other test uses, so their series move only here.
const TENANT: &str = "metrics-acme";
const READY_TENANT: &str = "metrics-ready";
const MDM_TENANT: &str = "metrics-mdm";

const POLICY: &str = r#"[policy]
[[policy.rule]]
threat = "device.jailbroken_rooted"
action = "lock"
"#;

/// Every family, with its type.
const FAMILIES: &[(&str, &str)] = &[
    ("mtd_agent_events_received_total", "counter"),
    ("mtd_agent_events_accepted_total", "counter"),
    ("mtd_agent_events_duplicate_total", "counter"),
    ("mtd_agent_requests_refused_total", "counter"),
    ("mtd_actions_total", "counter"),
    ("mtd_action_delivery_seconds", "histogram"),
    ("mtd_mdm_requests_total", "counter"),
    ("mtd_mdm_request_seconds", "histogram"),
    ("mtd_sync_runs_total", "counter"),
    ("mtd_sync_run_seconds", "histogram"),
    ("mtd_devices", "gauge"),
    ("mtd_devices_by_risk", "gauge"),
    ("mtd_mdm_last_successful_sync_timestamp_seconds", "gauge"),
    ("mtd_mdm_devices", "gauge"),
    ("mtd_mdm_devices_by_risk", "gauge"),
    ("mtd_build_info", "gauge"),
];

struct Metrics {
    text: String,
    scrape: Scrape,
}

impl Metrics {
    /// The value of the series with exactly these labels (0 when absent:
    /// a series appears on its first increment).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && s.labels.len() == labels.len())
            .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map_or(0.0, |s| match s.value {
                PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => v,
                ref other => panic!("{name} is not a single value: {other:?}"),
            })
    }
}

async fn scrape(app: &TestApp) -> Metrics {
    let response = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .expect("the app answers");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    // The parser skips lines it cannot read; here every line must be one it reads.
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Sample { .. } => {}
            other => panic!("not a line of the text format: {line:?} ({other:?})"),
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    Metrics { text, scrape }
}

/// Scrapes until `done` holds, for values recorded just after a commit the test waits on.
async fn scrape_until(app: &TestApp, limit: Duration, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let m = scrape(app).await;
        if done(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics did not get there in {limit:?}:\n{}",
            m.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn event(id: &str, udid: &str) -> Vec<u8> {
    json!({
        "event_id": id,
        "detected_at": "2026-11-22T10:00:00Z",
        "device": {"udid": udid},
        "threat": {"type": "device.jailbroken_rooted", "severity": "high", "name": "root"},
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_events_refusals_actions_mdm_calls_and_syncs() {
    let env = Env::new(&[SimKind::Soti], 12).await;
    let spec = MdmSpec {
        extra: "[mdm.permit]\nlock = true\n".into(),
        ..MdmSpec::new(SimKind::Soti)
    };
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", POLICY)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;

    let before = scrape(&app).await;
    for (name, kind) in FAMILIES {
        assert!(before.scrape.docs.contains_key(*name), "no HELP for {name}");
        assert!(
            before.text.contains(&format!("\n# TYPE {name} {kind}\n")),
            "no TYPE {kind} for {name}"
        );
    }
    let live = count(
        &env,
        "SELECT COUNT(*) FROM devices WHERE tenant_id = 'metrics-acme' AND removed_at IS NULL",
    )
    .await;
    assert!(live > 0);
    assert_eq!(
        before.get("mtd_devices", &[("tenant", TENANT)]),
        live as f64
    );
    assert_eq!(
        before.get("mtd_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert!(
        before.get(
            "mtd_sync_runs_total",
            &[("kind", "soti"), ("outcome", "succeeded")]
        ) >= 1.0
    );
    assert!(before.get("mtd_sync_run_seconds_count", &[("kind", "soti")]) >= 1.0);
    let listed = [
        ("kind", "soti"),
        ("operation", "list_devices"),
        ("class", "ok"),
    ];
    assert!(before.get("mtd_mdm_requests_total", &listed) >= 1.0);

    // One new event: received and accepted move by exactly one.
    let events = |m: &Metrics, family: &str| m.get(family, &[("tenant", TENANT)]);
    let udid = env.sim.soti().unwrap().devices()[0]["DeviceId"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = post_signed(&app, "/v1/agent/events", TENANT, &event("m-1", &udid)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let after = scrape(&app).await;
    for (family, delta) in [
        ("mtd_agent_events_received_total", 1.0),
        ("mtd_agent_events_accepted_total", 1.0),
        ("mtd_agent_events_duplicate_total", 0.0),
    ] {
        assert_eq!(
            events(&after, family) - events(&before, family),
            delta,
            "{family}"
        );
    }

    // Its repeat is a duplicate, not an acceptance.
    let reply = post_signed(&app, "/v1/agent/events", TENANT, &event("m-1", &udid)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let repeat = scrape(&app).await;
    assert_eq!(
        events(&repeat, "mtd_agent_events_accepted_total"),
        events(&after, "mtd_agent_events_accepted_total")
    );
    assert_eq!(
        events(&repeat, "mtd_agent_events_duplicate_total")
            - events(&after, "mtd_agent_events_duplicate_total"),
        1.0
    );

    // A signed body that is not JSON: refused as invalid_json, for this tenant.
    let refused = |m: &Metrics, tenant: Option<&str>, reason: &str| match tenant {
        Some(t) => m.get(
            "mtd_agent_requests_refused_total",
            &[("tenant", t), ("reason", reason)],
        ),
        None => m.get("mtd_agent_requests_refused_total", &[("reason", reason)]),
    };
    let reply = post_signed(&app, "/v1/agent/events", TENANT, b"{not json").await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    // A wrong signature: unauthorized, with no tenant (it was not verified).
    let body = event("m-2", &udid);
    let headers = signed_headers(
        TENANT,
        b"not the secret",
        chrono::Utc::now().timestamp(),
        &body,
    );
    let reply = post_agent(&app, "/v1/agent/events", &headers, body).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    let refusals = scrape(&app).await;
    assert_eq!(
        refused(&refusals, Some(TENANT), "invalid_json")
            - refused(&repeat, Some(TENANT), "invalid_json"),
        1.0
    );
    assert_eq!(
        refused(&refusals, Some(TENANT), "unauthorized"),
        0.0,
        "an unverified tenant is never a label"
    );
    // Other tests refuse requests too: the shared series moved by at least ours.
    assert!(
        refused(&refusals, None, "unauthorized") - refused(&repeat, None, "unauthorized") >= 1.0
    );
    assert_eq!(
        events(&refusals, "mtd_agent_events_received_total"),
        events(&repeat, "mtd_agent_events_received_total"),
        "refused requests carry no received events"
    );

    // The lock was decided pending, then sent: counted in both states, its
    // delivery timed, and the MDM call counted.
    let lock = |m: &Metrics, state: &str| {
        m.get("mtd_actions_total", &[("kind", "lock"), ("state", state)])
    };
    let delivered = |m: &Metrics| m.get("mtd_action_delivery_seconds_count", &[("kind", "lock")]);
    let executed = [("kind", "soti"), ("operation", "execute"), ("class", "ok")];
    let sent = scrape_until(&app, Duration::from_secs(10), |m| {
        lock(m, "sent") > lock(&before, "sent") && delivered(m) > delivered(&before)
    })
    .await;
    assert!(lock(&sent, "pending") > lock(&before, "pending"));
    assert!(
        sent.get("mtd_mdm_requests_total", &executed)
            > before.get("mtd_mdm_requests_total", &executed)
    );
    let sent_rows = count(
        &env,
        "SELECT COUNT(*) FROM actions WHERE tenant_id = 'metrics-acme' AND kind = 'lock' AND state = 'sent'",
    )
    .await;
    assert_eq!(sent_rows, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn metrics_show_per_mdm_the_last_successful_sync_the_devices_and_their_risk_levels() {
    let env = Env::new(&[SimKind::Soti, SimKind::Airwatch], 8).await;
    let soti = MdmSpec::new(SimKind::Soti);
    let off = MdmSpec {
        extra: "enabled = false\n".into(),
        ..MdmSpec::new(SimKind::Airwatch)
    };
    let started = chrono::Utc::now();
    let app =
        spawn_app(&env.write_config(MDM_TENANT, &[soti.clone(), off.clone()], "0", POLICY)).await;
    let mdm_id = app.mdm_id(MDM_TENANT, &soti.name).await;
    let run = app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;
    let synced_at = run[0].finished_at.expect("a finished run");

    fn labels(mdm: &str) -> [(&'static str, &str); 2] {
        [("tenant", MDM_TENANT), ("mdm", mdm)]
    }
    let by_risk = |m: &Metrics, mdm: &str, level: &str| {
        m.get(
            "mtd_mdm_devices_by_risk",
            &[("tenant", MDM_TENANT), ("mdm", mdm), ("level", level)],
        )
    };
    let m = scrape(&app).await;
    let at = m.get(
        "mtd_mdm_last_successful_sync_timestamp_seconds",
        &labels(&soti.name),
    );
    assert!(
        (at - synced_at.timestamp_millis() as f64 / 1000.0).abs() < 0.002,
        "{at} is not the run's end {synced_at}"
    );
    assert!(at >= started.timestamp() as f64 && at <= chrono::Utc::now().timestamp() as f64 + 1.0);
    assert_eq!(m.get("mtd_mdm_devices", &labels(&soti.name)), 8.0);
    assert_eq!(by_risk(&m, &soti.name, "secured"), 8.0);
    for level in ["low", "medium", "high", "critical"] {
        assert_eq!(by_risk(&m, &soti.name, level), 0.0, "{level}");
    }
    // The disabled MDM never synced: 0, listed all the same.
    assert!(
        m.text.contains(&format!(
        "mtd_mdm_last_successful_sync_timestamp_seconds{{tenant=\"{MDM_TENANT}\",mdm=\"{}\"}} 0\n",
        off.name
    )),
        "{}",
        m.text
    );
    assert!(
        m.text.contains(&format!(
            "mtd_mdm_devices{{tenant=\"{MDM_TENANT}\",mdm=\"{}\"}} 0\n",
            off.name
        )),
        "{}",
        m.text
    );

    // A high threat on one device moves it from secured to high.
    let udid = env.sim.soti().unwrap().devices()[0]["DeviceId"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = post_signed(&app, "/v1/agent/events", MDM_TENANT, &event("mdm-1", &udid)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let m = scrape_until(&app, Duration::from_secs(10), |m| {
        by_risk(m, &soti.name, "high") == 1.0
    })
    .await;
    assert_eq!(by_risk(&m, &soti.name, "secured"), 7.0);
    assert_eq!(m.get("mtd_mdm_devices", &labels(&soti.name)), 8.0);
    assert_eq!(
        m.get(
            "mtd_devices_by_risk",
            &[("tenant", MDM_TENANT), ("level", "high")]
        ),
        1.0,
        "the tenant's figure agrees"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn readyz_answers_503_while_another_process_holds_the_write_lock_and_200_after() {
    use sqlx::Connection;

    let env = Env::new(&[SimKind::Soti], 2).await;
    let spec = MdmSpec {
        background_sync: false,
        ..MdmSpec::new(SimKind::Soti)
    };
    let app = spawn_app(&env.write_config(READY_TENANT, &[spec], "0", "")).await;
    let ready = || async {
        let r = reqwest::get(format!("http://{}/readyz", app.addr))
            .await
            .expect("the app answers");
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(ready().await.0, 200);

    // Another process takes SQLite's write lock and keeps it past the store's busy timeout.
    let url = format!("sqlite://{}", env.db_path().display());
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mut blocker = other.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("UPDATE store_heartbeat SET at = 'held by the test' WHERE id = 1")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["store"], "unwritable", "{body}");

    blocker.rollback().await.unwrap();
    other.close().await.unwrap();
    assert_eq!(ready().await.0, 200);
    app.shutdown().await;
}
