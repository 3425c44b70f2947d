//! Regression tests for the safety defects of issue 13 that live in the
//! store, the on-demand lookups and the dispatcher: each failed on the code
//! before its fix.

use crate::support::*;
use mtd_sim::SimKind;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const TENANT: &str = "acme";

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

async fn admin_post(app: &TestApp, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}{path}", app.addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every live user of the tenant as the admin API lists it, by the MDM's key.
async fn listed_users(app: &TestApp) -> BTreeMap<String, Value> {
    let mut users = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/tenants/{TENANT}/users?limit=500&cursor={c}"),
            None => format!("/v1/admin/tenants/{TENANT}/users?limit=500"),
        };
        let (status, page) = admin_get(app, &path).await;
        assert_eq!(status, 200, "{page}");
        for u in page["items"].as_array().unwrap() {
            let mut u = u.clone();
            // Stamped by every sync that sees the user; not a detail.
            u.as_object_mut().unwrap().remove("last_seen_at");
            users.insert(u["mdm_user_id"].as_str().unwrap().to_owned(), u);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return users,
        }
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// (login, e-mail, first name, last name) of each user as the MDM's own
/// user listing gives it, by the MDM's key.
type Details = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn expected_users(env: &Env, kind: SimKind) -> BTreeMap<String, Details> {
    match kind {
        SimKind::Airwatch => env
            .sim
            .airwatch()
            .unwrap()
            .users()
            .iter()
            .map(|u| {
                let name = text(&u["UserName"]).unwrap();
                let details = (
                    Some(name.clone()),
                    text(&u["Email"]),
                    text(&u["FirstName"]),
                    text(&u["LastName"]),
                );
                (name, details)
            })
            .collect(),
        SimKind::Bcdm => env
            .sim
            .bcdm()
            .unwrap()
            .users()
            .into_iter()
            .map(|u| {
                let email = u
                    .email
                    .filter(|e| !e.trim().is_empty())
                    .unwrap_or_else(|| format!("{TENANT}-user@qmpr.com"));
                let details = (
                    Some(u.login_id.clone()).filter(|s| !s.is_empty()),
                    Some(email),
                    Some(u.name.clone()).filter(|s| !s.is_empty()),
                    None,
                );
                (u.user_id, details)
            })
            .collect(),
        SimKind::Maas360 => env
            .sim
            .maas360()
            .unwrap()
            .users()
            .iter()
            .map(|u| {
                // MaaS360 keys users by `userName`; `fullName` splits at its first space.
                let name = u["userName"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| u["userName"].to_string());
                let full = text(&u["fullName"]);
                let (first, last) = match full.as_deref().and_then(|f| f.split_once(' ')) {
                    Some((f, l)) => (Some(f.to_owned()), Some(l.trim().to_owned())),
                    None => (full.clone(), None),
                };
                (
                    name.clone(),
                    (Some(name), text(&u["emailAddress"]), first, last),
                )
            })
            .collect(),
        SimKind::Soti => unreachable!("SOTI has no user listing"),
    }
}

fn details(u: &Value) -> Details {
    (
        text(&u["username"]),
        text(&u["email"]),
        text(&u["first_name"]),
        text(&u["last_name"]),
    )
}

/// Issue 13.1: a device's embedded user (BCDM: the bare id; AirWatch: login and
/// e-mail) was written over the full user of the listing, erasing e-mail,
/// names and login of every user who owns a device.
#[tokio::test]
async fn a_full_sync_keeps_what_the_user_listing_gave_for_users_with_devices() {
    for kind in [SimKind::Airwatch, SimKind::Bcdm, SimKind::Maas360] {
        let env = Env::new(&[kind], 300).await;
        let spec = MdmSpec::new(kind);
        let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", "")).await;
        let mdm_id = app.mdm_id(TENANT, &spec.name).await;
        let runs = app.finished_runs(mdm_id, 1, Duration::from_secs(60)).await;
        assert_eq!(runs[0].error, None);

        let expected = expected_users(&env, kind);
        let stored = listed_users(&app).await;
        let owners = count(
            &env,
            "SELECT COUNT(DISTINCT user_id) FROM devices WHERE user_id IS NOT NULL",
        )
        .await;
        assert!(owners > 10, "{kind}: the seed links users to devices");
        assert_eq!(stored.len(), expected.len(), "{kind}: every listed user");
        for (key, want) in &expected {
            let got = stored
                .get(key)
                .unwrap_or_else(|| panic!("{kind}: user {key} is missing"));
            assert_eq!(&details(got), want, "{kind}: user {key}");
        }

        // A second sync changes nothing: same values, nothing rewritten.
        let (status, _) = admin_post(&app, &format!("/v1/admin/tenants/{TENANT}/sync")).await;
        assert_eq!(status, 202);
        let runs = app.finished_runs(mdm_id, 2, Duration::from_secs(60)).await;
        assert!(runs.iter().all(|r| r.error.is_none()), "{runs:?}");
        let again = listed_users(&app).await;
        assert_eq!(again, stored, "{kind}: a second sync changes no user");
        app.shutdown().await;
    }
}

const WIPE_POLICY: &str = r#"[policy]
[[policy.rule]]
threat = "app.malicious"
action = "enterprise_wipe"
[[policy.rule]]
threat = "device.jailbroken_rooted"
action = "lock"
"#;

fn permitting(kind: SimKind) -> MdmSpec {
    MdmSpec {
        extra: "[mdm.permit]\nlock = true\nenterprise_wipe = true\nwipe = true\n".into(),
        ..MdmSpec::new(kind)
    }
}

async fn started(spec: MdmSpec, devices: usize, policy: &str) -> (Env, TestApp) {
    let env = Env::new(&[spec.kind], devices).await;
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", policy)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    let runs = app.finished_runs(mdm_id, 1, Duration::from_secs(60)).await;
    assert_eq!(runs[0].error, None);
    (env, app)
}

fn threat(id: &str, device: Value, threat: &str) -> Value {
    serde_json::json!({"event_id": id, "detected_at": chrono::Utc::now().to_rfc3339(),
        "device": device, "threat": {"type": threat, "severity": "critical"}})
}

async fn post_events(app: &TestApp, body: Value) -> Reply {
    post_signed(app, "/v1/agent/events", TENANT, body.to_string().as_bytes()).await
}

/// Issue 13.10: the lookup right before a destructive action stored the
/// device's name in clear under `mask_pii`.
#[tokio::test]
async fn the_lookup_before_a_wipe_stores_the_device_masked_like_a_sync() {
    let spec = MdmSpec {
        mask_pii: true,
        ..permitting(SimKind::Airwatch)
    };
    let (env, app) = started(spec, 40, WIPE_POLICY).await;
    let sim = env.sim.airwatch().unwrap();
    let device = sim
        .devices()
        .into_iter()
        .find(|d| text(&d["UserName"]).is_some() && text(&d["SerialNumber"]).is_some())
        .expect("a seeded device with a user and a serial");
    let id = device["Id"]["Value"].as_u64().unwrap();
    // Renamed at the MDM after the sync, after its user: the connector
    // learns the new name only from the lookup before the wipe.
    let name = format!("{}'s Work Phone", text(&device["UserName"]).unwrap());
    let mut fields = serde_json::Map::new();
    fields.insert("DeviceFriendlyName".into(), Value::String(name.clone()));
    sim.update_device(id, fields).unwrap();

    let who = serde_json::json!({ "serial": device["SerialNumber"] });
    assert_eq!(
        post_events(&app, threat("w-1", who, "app.malicious"))
            .await
            .status,
        202
    );
    wait_actions(&env, Duration::from_secs(20), |r| {
        r.iter().any(|a| a.state == "sent")
    })
    .await;
    app.shutdown().await;

    let mut bytes = std::fs::read(env.db_path()).unwrap();
    if let Ok(wal) = std::fs::read(env.db_path().with_extension("db-wal")) {
        bytes.extend(wal);
    }
    assert!(
        !bytes.windows(name.len()).any(|w| w == name.as_bytes()),
        "`{name}` is in the SQLite file in clear"
    );
    let logs = crate::logs::text();
    assert!(!logs.contains(&name), "`{name}` is in the logs in clear");
}

/// Issue 13.3: an on-demand lookup whose agent request was abandoned (the
/// agent timed out) stayed unpolled in the single-flight map while it held
/// the SOTI token lock: every later sync, lookup and action of that MDM
/// waited for the same device to activate again.
#[tokio::test]
async fn an_abandoned_lookup_does_not_hold_up_the_next_sync_of_its_mdm() {
    use mtd_sim::Fault;
    let spec = MdmSpec::new(SimKind::Soti);
    let (env, app) = started(spec.clone(), 20, "").await;
    let sim = env.sim.soti().unwrap();
    // The next token request takes 2 s; the cached token stops working, so
    // the lookup must log in again, holding the adapter's token lock.
    sim.core()
        .inject(
            Fault::latency(Duration::from_secs(2))
                .times(1)
                .including_token()
                .on_paths("/token"),
        )
        .unwrap();
    sim.expire_tokens();

    let body =
        serde_json::json!({"device": {"udid": "0000abandoned0000"}, "platform": "ios"}).to_string();
    let headers = agent_headers(TENANT, body.as_bytes());
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/v1/agent/activate", app.addr))
        .timeout(Duration::from_millis(300))
        .body(body.clone());
    for (name, value) in &headers {
        request = request.header(*name, value);
    }
    let abandoned = request.send().await;
    assert!(
        abandoned.as_ref().is_err_and(|e| e.is_timeout()),
        "the agent gives up first: {abandoned:?}"
    );

    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    let (status, _) = admin_post(&app, &format!("/v1/admin/tenants/{TENANT}/sync")).await;
    assert_eq!(status, 202);
    // Bounded only to fail rather than hang: the lookup ends after 2 s.
    let runs = app.finished_runs(mdm_id, 2, Duration::from_secs(30)).await;
    assert!(runs.iter().all(|r| r.error.is_none()), "{runs:?}");
    app.shutdown().await;
}

/// Issue 13.11: one request of 500 events for unknown devices made 500
/// sequential MDM lookups. At most 16 per request now; the other events are
/// kept and decided when their device becomes known.
#[tokio::test]
async fn one_request_makes_at_most_sixteen_on_demand_lookups() {
    let (env, app) = started(permitting(SimKind::Airwatch), 20, WIPE_POLICY).await;
    let sim = env.sim.airwatch().unwrap();
    sim.core().clear_records();
    let events: Vec<Value> = (0..100)
        .map(|i| {
            threat(
                &format!("u-{i}"),
                serde_json::json!({ "udid": format!("unknown-udid-{i:04}") }),
                "device.jailbroken_rooted",
            )
        })
        .collect();
    let reply = post_events(&app, serde_json::json!({ "events": events })).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json()["accepted"].as_array().unwrap().len(), 100);
    let lookups = sim
        .core()
        .requests()
        .into_iter()
        .filter(|r| r.path.to_ascii_lowercase().contains("searchby="))
        .count();
    assert!(
        (1..=16).contains(&lookups),
        "{lookups} MDM lookups for one request"
    );
    assert_eq!(
        count(&env, "SELECT COUNT(*) FROM threat_events").await,
        100,
        "every event is kept"
    );
    app.shutdown().await;
}

/// Issue 13.13: the mass-removal guard judged devices only: a user listing
/// that came back empty, with the devices intact, removed every user who
/// has no device.
#[tokio::test]
async fn an_empty_user_listing_with_intact_devices_removes_no_user_until_confirmed() {
    use mtd_sim::Fault;
    let spec = MdmSpec::new(SimKind::Airwatch);
    let (env, app) = started(spec.clone(), 60, "").await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    let live = "SELECT COUNT(*) FROM users WHERE removed_at IS NULL";
    let users = count(&env, live).await;
    let with_device = count(
        &env,
        "SELECT COUNT(DISTINCT user_id) FROM devices WHERE user_id IS NOT NULL AND removed_at IS NULL",
    )
    .await;
    assert!(
        users > with_device,
        "the seed has users without a device ({users} users, {with_device} with one)"
    );
    // The user search answers "no users" (AirWatch's empty page is a 204).
    env.sim
        .airwatch()
        .unwrap()
        .core()
        .inject(Fault::status(204).on_paths("/users/search"))
        .unwrap();

    let (status, _) = admin_post(&app, &format!("/v1/admin/tenants/{TENANT}/sync")).await;
    assert_eq!(status, 202);
    let runs = app.finished_runs(mdm_id, 2, Duration::from_secs(60)).await;
    let collapsed = runs.iter().find(|r| r.trigger != "initial").unwrap();
    assert_eq!(collapsed.error, None);
    assert_eq!(
        count(&env, live).await,
        users,
        "no user is removed by one run with an empty user listing"
    );
    assert!(collapsed.held_removals > 0, "{collapsed:?}");

    // A second complete run that still lists no users confirms the removal.
    let (status, _) = admin_post(&app, &format!("/v1/admin/tenants/{TENANT}/sync")).await;
    assert_eq!(status, 202);
    app.finished_runs(mdm_id, 3, Duration::from_secs(60)).await;
    assert_eq!(
        count(&env, live).await,
        with_device,
        "confirmed by a second run"
    );
    app.shutdown().await;
}

/// The enterprise wipes the AirWatch simulator received (answered or not).
fn wipes_received(env: &Env) -> usize {
    env.sim
        .airwatch()
        .unwrap()
        .core()
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("command=EnterpriseWipe"))
        .count()
}

/// Devices of the AirWatch simulator an agent can name by serial.
fn serials(env: &Env, n: usize) -> Vec<Value> {
    let devices: Vec<Value> = env
        .sim
        .airwatch()
        .unwrap()
        .devices()
        .into_iter()
        .filter(|d| text(&d["SerialNumber"]).is_some())
        .take(n)
        .map(|d| serde_json::json!({ "serial": d["SerialNumber"] }))
        .collect();
    assert_eq!(devices.len(), n);
    devices
}

/// Issue 13.2: wipes the dispatcher had claimed, waiting for a free slot of
/// their MDM, were not cancelled by cancel-destructive and went out after
/// its answer said nothing was left waiting.
#[tokio::test]
async fn cancel_destructive_stops_wipes_already_claimed_and_waiting_for_their_turn() {
    use mtd_sim::Fault;
    let (env, app) = started(permitting(SimKind::Airwatch), 40, WIPE_POLICY).await;
    let devices = serials(&env, 7);
    let sim = env.sim.airwatch().unwrap();
    // Every command takes 2 s: four locks fill the MDM's four slots.
    sim.core()
        .inject(Fault::latency(Duration::from_secs(2)).on_paths("/commands"))
        .unwrap();
    for (i, who) in devices[..4].iter().enumerate() {
        let reply = post_events(
            &app,
            threat(&format!("l-{i}"), who.clone(), "device.jailbroken_rooted"),
        )
        .await;
        assert_eq!(reply.status, 202);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sim
        .core()
        .requests()
        .iter()
        .filter(|r| r.path.contains("/commands"))
        .count()
        < 4
    {
        assert!(std::time::Instant::now() < deadline, "four locks in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (i, who) in devices[4..].iter().enumerate() {
        let reply = post_events(
            &app,
            threat(&format!("w-{i}"), who.clone(), "app.malicious"),
        )
        .await;
        assert_eq!(reply.status, 202);
    }
    let claimed =
        "SELECT COUNT(*) FROM actions WHERE kind = 'enterprise_wipe' AND claimed_at IS NOT NULL";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&env, claimed).await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the wipes are claimed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (status, answer) = admin_post(
        &app,
        &format!("/v1/admin/tenants/{TENANT}/actions/cancel-destructive"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["cancelled"], 3,
        "the claimed, waiting wipes: {answer}"
    );

    // The locks finish; the slots free up; no wipe may go out.
    let rows = wait_actions(&env, Duration::from_secs(30), |rows| {
        rows.iter()
            .filter(|a| a.kind == "lock" && a.state == "sent")
            .count()
            == 4
    })
    .await;
    let audit = "SELECT COUNT(*) FROM action_audit a JOIN actions x ON x.id = a.action_id
                 WHERE x.kind = 'enterprise_wipe' AND a.note LIKE '%not sent%'";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&env, audit).await < 3 {
        assert_eq!(wipes_received(&env), 0, "a cancelled wipe reached the MDM");
        assert!(
            std::time::Instant::now() < deadline,
            "each waiting wipe noted it was not sent: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(wipes_received(&env), 0, "a cancelled wipe reached the MDM");
    let wipes: Vec<_> = actions(&env)
        .await
        .into_iter()
        .filter(|a| a.kind == "enterprise_wipe")
        .collect();
    assert!(wipes.iter().all(|a| a.state == "cancelled"), "{wipes:#?}");
    app.shutdown().await;
}

/// Issue 13.14: the hourly cap of destructive actions was checked only when
/// an action was decided, so a backlog that built up during an MDM outage
/// (each wipe decided within its own hour's cap) went out all at once.
#[tokio::test]
async fn a_backlog_of_wipes_goes_out_no_faster_than_the_hourly_cap() {
    let policy = WIPE_POLICY.replace(
        "[policy]\n",
        "[policy]\nmax_destructive_actions_per_hour = 2\n",
    );
    let (env, app) = started(permitting(SimKind::Airwatch), 40, &policy).await;
    // Five enterprise wipes decided over the three hours the MDM was down,
    // all due now: what the store holds when the MDM comes back.
    let url = format!("sqlite://{}", env.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let devices: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, mdm_id FROM devices WHERE removed_at IS NULL AND ownership = 'corporate' LIMIT 5",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(devices.len(), 5);
    for (i, (device, mdm)) in devices.iter().enumerate() {
        let created = chrono::Utc::now() - chrono::Duration::minutes(170 - 35 * i as i64);
        sqlx::query(
            "INSERT INTO actions (tenant_id, device_id, mdm_id, kind, state, reason, attempts,
             next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'enterprise_wipe', 'failed', 'decided during the outage', 3, ?4, ?5, ?5)",
        )
        .bind(TENANT)
        .bind(device)
        .bind(mdm)
        .bind(chrono::Utc::now() - chrono::Duration::seconds(1))
        .bind(created)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let rows = wait_actions(&env, Duration::from_secs(20), |rows| {
        rows.iter().filter(|a| a.state == "sent").count() >= 2 && count_sync(rows, "failed") == 3
    })
    .await;
    // Everything due now is sent: a dispatcher that ignored the cap would send more.
    settle(&app, &env).await;
    assert_eq!(wipes_received(&env), 2, "{rows:#?}");
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=ro"))
        .await
        .unwrap();
    let due: Vec<(chrono::DateTime<chrono::Utc>,)> = sqlx::query_as(
        "SELECT next_attempt_at FROM actions WHERE kind = 'enterprise_wipe' AND state = 'failed'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(due.len(), 3);
    let soonest = chrono::Utc::now() + chrono::Duration::minutes(50);
    assert!(
        due.iter().all(|(at,)| *at > soonest),
        "due again in about an hour: {due:?}"
    );
    app.shutdown().await;
}

fn count_sync(rows: &[Row], state: &str) -> usize {
    rows.iter().filter(|a| a.state == state).count()
}
