//! Tenant isolation, admin authentication, and no secret anywhere.
//!
//! The real binary at trace level serves two tenants with secrets in all
//! three forms (literal, `{ env }`, `{ file }`), against the simulators, one
//! MDM configured with a wrong password. After a run of everything the other
//! scenarios do in small (events valid and not, activations, syncs, actions,
//! an MDM refusing the login, refused agents, refused admins), the whole log,
//! `/metrics` and every admin API answer are scanned for every configured
//! secret value. The contract has one admin token, so "another tenant's
//! token" is a tenant's agent secret (or an MDM credential) used as a bearer.

use crate::api::{self, MdmSpec};
use crate::support::*;
use mtd_sim::{soti, SimKind};
use serde_json::{json, Value};
use std::time::Duration;

const ALPHA: &str = "alpha";
const BETA: &str = "beta";
/// Beta's agent secret, from the environment.
const BETA_SECRET: &str = "beta-agent-secret-from-env-4c3b2a19";
const BETA_SECRET_VAR: &str = "RELIAB_BETA_AGENT_SECRET";
/// A wrong AirWatch password, from a file: the MDM refuses it (401).
const WRONG_PASSWORD: &str = "wrong-airwatch-password-from-file-77e1";

fn secrets() -> Vec<&'static str> {
    let mut all = configured_secrets();
    all.extend([BETA_SECRET, WRONG_PASSWORD]);
    all
}

/// Beta: the SOTI simulator with its password from a file, the AirWatch one with
/// a wrong password; the agent secret from the environment.
fn write_beta(env: &api::Env) {
    let root = env.dir.path();
    std::fs::write(
        root.join("soti-password.txt"),
        format!("{}\n", soti::DEFAULT_PASSWORD),
    )
    .unwrap();
    std::fs::write(root.join("airwatch-password.txt"), WRONG_PASSWORD).unwrap();
    let text = format!(
        r#"id = "{BETA}"
display_name = "Beta"
agent_secret = {{ env = "{BETA_SECRET_VAR}" }}

[[mdm]]
name = "Beta SOTI"
kind = "soti"
url = "{soti_url}"
[mdm.credentials]
client_id = "{client_id}"
client_secret = "{client_secret}"
username = "{username}"
password = {{ file = "../soti-password.txt" }}

[[mdm]]
name = "Beta AirWatch"
kind = "airwatch"
url = "{airwatch_url}"
[mdm.credentials]
username = "{airwatch_user}"
password = {{ file = "../airwatch-password.txt" }}
api_key = "{api_key}"

[policy]
[[policy.rule]]
threat = "*"
action = "lock"
"#,
        soti_url = env.sim.base_url(SimKind::Soti),
        airwatch_url = env.sim.base_url(SimKind::Airwatch),
        client_id = soti::DEFAULT_CLIENT_ID,
        client_secret = soti::DEFAULT_CLIENT_SECRET,
        username = soti::DEFAULT_USERNAME,
        airwatch_user = mtd_sim::airwatch::DEFAULT_USERNAME,
        api_key = mtd_sim::airwatch::DEFAULT_API_KEY,
    );
    std::fs::write(root.join(format!("tenants.d/{BETA}.toml")), text).unwrap();
}

const POLICY: &str = "[policy]\n[[policy.rule]]\nthreat = \"device.*\"\naction = \"lock\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_tenants_are_isolated_admin_needs_the_admin_token_and_no_secret_reaches_logs_metrics_or_api(
) {
    let env = env_without_rate_limits(&SimKind::ALL, 10).await;
    let specs: Vec<MdmSpec> = SimKind::ALL.iter().map(|k| MdmSpec::new(*k)).collect();
    let config = env.write_config(ALPHA, &specs, "0", POLICY);
    write_beta(&env);
    let db = env.db_path();
    let mut daemon = Daemon::start_with(&config, "trace", &[(BETA_SECRET_VAR, BETA_SECRET)]).await;
    // Alpha's MDMs (one per kind) and Beta's SOTI sync; Beta's AirWatch refuses the login.
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM sync_runs WHERE outcome = 'succeeded'",
        SimKind::ALL.len() as i64 + 1,
        Duration::from_secs(60),
    )
    .await;
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM sync_runs WHERE outcome = 'failed'",
        1,
        Duration::from_secs(60),
    )
    .await;
    let client = reqwest::Client::new();
    let alpha_device = targets(&db).await.remove(0);
    let addr = daemon.addr;
    let event = |id: &str| event_body(id, &alpha_device.serial, "device.jailbroken_rooted");
    let activation = json!({"device": {"serial": alpha_device.serial}}).to_string();

    // 1. One tenant's key does not open another tenant's door.
    for (tenant, secret) in [(BETA, api::AGENT_SECRET), (ALPHA, BETA_SECRET)] {
        for (path, body) in [
            ("/v1/agent/events", event(&format!("cross-{tenant}"))),
            ("/v1/agent/activate", activation.clone().into_bytes()),
        ] {
            let r = post_signed_as(&client, addr, path, tenant, secret, &body).await;
            assert_eq!(
                r.status, 401,
                "{path} as {tenant} with the other's key: {}",
                r.text
            );
            assert_eq!(r.json(), json!({"error": "unauthorized"}));
        }
    }
    // Alpha's agent naming a device both tenants' SOTI know: stored for Alpha only.
    let r = post_signed_as(
        &client,
        addr,
        "/v1/agent/events",
        ALPHA,
        api::AGENT_SECRET,
        &event("alpha-1"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let pool = open_store(&db).await;
    let beta_rows = ints(
        &pool,
        "SELECT (SELECT COUNT(*) FROM threat_events WHERE tenant_id = 'beta')
              + (SELECT COUNT(*) FROM actions WHERE tenant_id = 'beta')",
    )
    .await;
    pool.close().await;
    assert_eq!(beta_rows, vec![0], "nothing was stored for Beta");

    // 2. The admin API takes the admin token and nothing else.
    let admin_paths: Vec<(&str, String)> = vec![
        ("GET", "/v1/admin/tenants".into()),
        (
            "GET",
            format!("/v1/admin/tenants/{ALPHA}/devices?include_removed=true"),
        ),
        (
            "GET",
            format!("/v1/admin/tenants/{ALPHA}/users?include_removed=true"),
        ),
        ("GET", format!("/v1/admin/tenants/{ALPHA}/events")),
        ("GET", format!("/v1/admin/tenants/{ALPHA}/actions")),
        ("GET", format!("/v1/admin/tenants/{ALPHA}/sync-runs")),
        ("GET", format!("/v1/admin/tenants/{ALPHA}/status")),
        ("GET", format!("/v1/admin/tenants/{BETA}/status")),
        ("GET", format!("/v1/admin/tenants/{BETA}/events")),
        ("POST", format!("/v1/admin/tenants/{ALPHA}/sync")),
        (
            "POST",
            format!("/v1/admin/tenants/{ALPHA}/actions/1/approve"),
        ),
        (
            "POST",
            format!("/v1/admin/tenants/{ALPHA}/actions/1/cancel"),
        ),
        (
            "POST",
            format!("/v1/admin/tenants/{ALPHA}/actions/cancel-destructive"),
        ),
    ];
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("a wrong token", Some("Bearer not-the-admin-token".into())),
        (
            "Alpha's agent secret",
            Some(format!("Bearer {}", api::AGENT_SECRET)),
        ),
        ("Beta's agent secret", Some(format!("Bearer {BETA_SECRET}"))),
        (
            "an MDM password",
            Some(format!("Bearer {}", soti::DEFAULT_PASSWORD)),
        ),
        (
            "the token with a suffix",
            Some(format!("Bearer {}x", api::ADMIN_TOKEN)),
        ),
        (
            "the token without a scheme",
            Some(api::ADMIN_TOKEN.to_string()),
        ),
        (
            "the token as Basic",
            Some(format!("Basic {}", api::ADMIN_TOKEN)),
        ),
    ];
    let runs_before = ints(&open_store(&db).await, "SELECT COUNT(*) FROM sync_runs").await;
    let send = |method: &str, path: &str, auth: Option<&str>| {
        let mut request = match method {
            "GET" => client.get(format!("http://{addr}{path}")),
            _ => client.post(format!("http://{addr}{path}")),
        };
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        async move {
            let r = request.send().await.expect("the daemon answers");
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    for (method, path) in &admin_paths {
        for (what, auth) in &refused {
            let (status, body) = send(method, path, auth.as_deref()).await;
            assert_eq!(status, 401, "{method} {path} with {what}: {body}");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs_after = ints(&open_store(&db).await, "SELECT COUNT(*) FROM sync_runs").await;
    assert_eq!(
        runs_before, runs_after,
        "a refused POST …/sync started no sync"
    );

    // 3. A little of everything, then every answer scanned.
    let mut answers = String::new();
    for (i, body) in [
        event("alpha-2"),
        b"{not json".to_vec(),
        json!({"event_id": "x"}).to_string().into_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        let r = post_signed_as(
            &client,
            addr,
            "/v1/agent/events",
            ALPHA,
            api::AGENT_SECRET,
            &body,
        )
        .await;
        assert!([202, 400].contains(&r.status), "{i}: {}", r.text);
        answers.push_str(&r.text);
    }
    let beta_event = event_body("beta-1", &alpha_device.serial, "app.sideloaded");
    let r = post_signed_as(
        &client,
        addr,
        "/v1/agent/events",
        BETA,
        BETA_SECRET,
        &beta_event,
    )
    .await;
    assert_eq!(r.status, 202, "Beta's own key works: {}", r.text);
    answers.push_str(&r.text);
    for body in [
        activation.clone(),
        json!({"device": {"serial": "NO-SUCH"}}).to_string(),
    ] {
        let r = post_signed_as(
            &client,
            addr,
            "/v1/agent/activate",
            ALPHA,
            api::AGENT_SECRET,
            body.as_bytes(),
        )
        .await;
        assert!([200, 404].contains(&r.status), "{}", r.text);
        answers.push_str(&r.text);
    }
    let auth = format!("Bearer {}", api::ADMIN_TOKEN);
    for tenant in [ALPHA, BETA] {
        let (status, body) = send(
            "POST",
            &format!("/v1/admin/tenants/{tenant}/sync"),
            Some(&auth),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        answers.push_str(&body);
    }
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM actions WHERE state IN ('pending', 'failed')",
        0,
        Duration::from_secs(30),
    )
    .await;
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM sync_runs WHERE finished_at IS NULL",
        0,
        Duration::from_secs(30),
    )
    .await;
    for (method, path) in admin_paths.iter().filter(|(m, _)| *m == "GET") {
        let (status, body) = send(method, path, Some(&auth)).await;
        assert_eq!(status, 200, "{path}: {body}");
        answers.push_str(&body);
    }
    for tenant in [ALPHA, BETA] {
        for list in [
            "devices?limit=500&include_removed=true",
            "users?limit=500&include_removed=true",
            "events?limit=500",
            "actions?limit=500",
            "sync-runs?limit=500",
            "status",
        ] {
            let (status, body) = send(
                "GET",
                &format!("/v1/admin/tenants/{tenant}/{list}"),
                Some(&auth),
            )
            .await;
            assert_eq!(status, 200, "{tenant}/{list}: {body}");
            answers.push_str(&body);
        }
    }
    let beta_status: Value = serde_json::from_str(
        &send(
            "GET",
            &format!("/v1/admin/tenants/{BETA}/status"),
            Some(&auth),
        )
        .await
        .1,
    )
    .unwrap();
    let text = beta_status.to_string().to_lowercase();
    assert!(
        text.contains("401") || text.contains("unauthorized") || text.contains("password"),
        "Beta's status shows the AirWatch login refusal: {beta_status}"
    );
    let metrics = reqwest::get(daemon.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("mtd_"), "{metrics}");

    let status = daemon.sigterm(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    let log = daemon.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("\"level\":\"TRACE\""))
            .count()
            > 0,
        "the log is at trace level"
    );
    assert_no_secret(&log, "the daemon's trace-level log", &secrets());
    assert_no_secret(&metrics, "/metrics", &secrets());
    assert_no_secret(&answers, "the admin and agent API answers", &secrets());
    // Beyond the contract's list, and cheap: the store's files hold none either.
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", db.display());
        if let Ok(bytes) = std::fs::read(&path) {
            assert_no_secret(&String::from_utf8_lossy(&bytes), &path, &secrets());
        }
    }
    println!(
        "security: scanned {} log lines, {} bytes of /metrics, {} bytes of API answers",
        log.lines().count(),
        metrics.len(),
        answers.len()
    );
}
