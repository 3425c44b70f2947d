//! Issue 8 (admin API, CONTRACT §5): bearer token, paginated lists and their
//! filters, sync trigger, approval and cancel of actions, tenant status.

use crate::support::*;
use chrono::Utc;
use mtd_connector::store::{
    ActionRecordKind, ActionState, EventIdentifiers, NewAction, NewEvent, SyncOutcome, SyncTrigger,
};
use mtd_sim::{Fault, SimKind};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

const TENANT: &str = "acme";
const MDM: &str = "Test SOTI";

fn soti() -> MdmSpec {
    MdmSpec {
        background_sync: false,
        ..MdmSpec::new(SimKind::Soti)
    }
}

/// A SOTI simulator with `devices` devices and the app on it, synced once.
async fn synced_app(devices: usize) -> (Env, TestApp) {
    let env = Env::new(&[SimKind::Soti], devices).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti()], "0", "")).await;
    assert_eq!(sync_now(&app).await, SyncOutcome::Succeeded);
    (env, app)
}

async fn sync_now(app: &TestApp) -> SyncOutcome {
    let reports = app
        .sync
        .full_sync_now(TENANT, None, SyncTrigger::Cli, None)
        .await
        .unwrap();
    reports[0].outcome
}

/// The status and JSON body of an admin request.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

async fn call(app: &TestApp, method: &str, path: &str, auth: Option<&str>) -> Answer {
    let url = format!("http://{}{path}", app.addr);
    let client = reqwest::Client::new();
    let mut request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        other => panic!("{other}"),
    };
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    let response = request.send().await.expect("the app answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"));
    Answer { status, body }
}

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

async fn get(app: &TestApp, path: &str) -> Answer {
    call(app, "GET", path, Some(&bearer())).await
}

async fn post(app: &TestApp, path: &str) -> Answer {
    call(app, "POST", path, Some(&bearer())).await
}

/// Follows `next_cursor` from the first page to the last; returns every item.
async fn all_pages(app: &TestApp, path: &str, limit: usize) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let url = match &cursor {
            None => format!("{path}{sep}limit={limit}"),
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
        };
        let a = get(app, &url).await;
        assert_eq!(a.status, 200, "{url}: {:?}", a.body);
        let page = a.body["items"].as_array().expect("items").clone();
        assert!(page.len() <= limit, "{url}: {} items", page.len());
        items.extend(page);
        match a.body["next_cursor"].as_str() {
            Some(c) => {
                assert!(!c.is_empty());
                cursor = Some(c.to_string());
            }
            None => {
                assert!(a.body["next_cursor"].is_null());
                return items;
            }
        }
    }
    panic!("{path}: the cursor never ended");
}

/// Pages through `path` with a small limit and checks the result is the same
/// set as one big page: no duplicates, none missing. Returns the ids.
async fn paginates(app: &TestApp, path: &str, limit: usize, at_least: usize) -> Vec<Value> {
    let paged: Vec<Value> = all_pages(app, path, limit)
        .await
        .into_iter()
        .map(|i| i["id"].clone())
        .collect();
    let whole = get(app, &format!("{path}?limit=500")).await;
    let whole: Vec<Value> = whole.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].clone())
        .collect();
    assert!(
        whole.len() > limit && whole.len() >= at_least,
        "{path}: only {} rows for a page of {limit}",
        whole.len()
    );
    let unique: HashSet<String> = paged.iter().map(Value::to_string).collect();
    assert_eq!(unique.len(), paged.len(), "{path}: duplicates across pages");
    assert_eq!(
        paged, whole,
        "{path}: paging gives the same rows in the same order"
    );
    paged
}

fn event(event_id: &str, device_id: Option<i64>, threat_type: &str) -> NewEvent {
    NewEvent {
        tenant_id: TENANT.into(),
        event_id: event_id.into(),
        device_id,
        identifiers: EventIdentifiers::default(),
        threat_type: threat_type.into(),
        severity: "high".into(),
        threat_name: None,
        detected_at: Utc::now(),
        received_at: Utc::now(),
        network: None,
        details: None,
        status: mtd_connector::store::ThreatStatus::Detected,
        threat_key: String::new(),
        settled: true,
    }
}

/// An action row written straight into the store; pending rows are due in
/// an hour, so the dispatcher leaves them alone during the test (held rows
/// carry no due time, as the policy writes them).
async fn insert_action(
    app: &TestApp,
    device_id: Option<i64>,
    kind: ActionRecordKind,
    state: ActionState,
) -> i64 {
    let mdm_id = app.mdm_id(TENANT, MDM).await;
    app.store
        .insert_action(&NewAction {
            signal_level: None,
            tenant_id: TENANT.into(),
            event_id: None,
            device_id,
            mdm_id: Some(mdm_id),
            kind,
            parent_action_id: None,
            state,
            reason: (state == ActionState::Held).then(|| "held: test".to_string()),
            next_attempt_at: (state != ActionState::Held)
                .then(|| Utc::now() + chrono::Duration::hours(1)),
        })
        .await
        .unwrap()
}

async fn first_device_id(app: &TestApp) -> i64 {
    get(app, &format!("/v1/admin/tenants/{TENANT}/devices?limit=1"))
        .await
        .body["items"][0]["id"]
        .as_i64()
        .unwrap()
}

async fn live_users(env: &Env) -> i64 {
    let url = format!("sqlite://{}?mode=ro", env.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE tenant_id = 'acme' AND removed_at IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

fn ids(items: &[Value]) -> Vec<i64> {
    items.iter().map(|i| i["id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn every_admin_route_refuses_a_missing_malformed_or_wrong_token_with_one_401() {
    let env = Env::new(&[SimKind::Soti], 5).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti()], "0", "")).await;
    let routes = [
        ("GET", "/v1/admin/tenants".to_string()),
        ("GET", format!("/v1/admin/tenants/{TENANT}/devices")),
        ("GET", format!("/v1/admin/tenants/{TENANT}/users")),
        ("GET", format!("/v1/admin/tenants/{TENANT}/events")),
        ("GET", format!("/v1/admin/tenants/{TENANT}/actions")),
        ("GET", format!("/v1/admin/tenants/{TENANT}/sync-runs")),
        ("GET", format!("/v1/admin/tenants/{TENANT}/status")),
        ("POST", format!("/v1/admin/tenants/{TENANT}/sync")),
        (
            "POST",
            format!("/v1/admin/tenants/{TENANT}/actions/1/approve"),
        ),
        (
            "POST",
            format!("/v1/admin/tenants/{TENANT}/actions/1/cancel"),
        ),
        (
            "POST",
            format!("/v1/admin/tenants/{TENANT}/actions/cancel-destructive"),
        ),
        // An unknown tenant is not revealed to a caller without the token.
        ("GET", "/v1/admin/tenants/nobody/devices".to_string()),
    ];
    let refused = [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Token {ADMIN_TOKEN}")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(format!("Bearer{ADMIN_TOKEN}")),
        Some("Bearer ".to_string()),
        Some(ADMIN_TOKEN.to_string()),
    ];
    for (method, path) in &routes {
        for auth in &refused {
            let a = call(&app, method, path, auth.as_deref()).await;
            assert_eq!(a.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(
                a.body,
                serde_json::json!({"error": "unauthorized"}),
                "{method} {path}"
            );
        }
    }
    // The scheme is case-insensitive; the token is not.
    let ok = call(
        &app,
        "GET",
        "/v1/admin/tenants",
        Some(&format!("bearer {ADMIN_TOKEN}")),
    )
    .await;
    assert_eq!(ok.status, 200);
    let upper = call(
        &app,
        "GET",
        "/v1/admin/tenants",
        Some(&format!("Bearer {}", ADMIN_TOKEN.to_uppercase())),
    )
    .await;
    assert_eq!(upper.status, 401);
    // Health needs no token.
    let health = reqwest::get(format!("http://{}/healthz", app.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn every_list_paginates_to_the_end_without_duplicates_or_gaps() {
    let env = Env::new(&[SimKind::Soti], 23).await;
    let main = env.write_config(TENANT, &[soti()], "0", "");
    // Two more tenants (same MDM), to page through the tenant list too.
    let tenants_d = env.dir.path().join("tenants.d");
    let acme = std::fs::read_to_string(tenants_d.join("acme.toml")).unwrap();
    for other in ["beta", "gamma"] {
        std::fs::write(
            tenants_d.join(format!("{other}.toml")),
            acme.replace("id = \"acme\"", &format!("id = \"{other}\"")),
        )
        .unwrap();
    }
    let app = spawn_app(&main).await;
    for _ in 0..3 {
        assert_eq!(sync_now(&app).await, SyncOutcome::Succeeded);
    }
    let device = first_device_id(&app).await;
    for i in 0..12 {
        record_event(
            &app.store,
            &event(&format!("evt-{i}"), Some(device), "network.arp_mitm"),
        )
        .await;
    }
    for _ in 0..9 {
        insert_action(
            &app,
            Some(device),
            ActionRecordKind::Lock,
            ActionState::Skipped,
        )
        .await;
    }

    let tenants: Vec<String> = all_pages(&app, "/v1/admin/tenants", 1)
        .await
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tenants, vec!["acme", "beta", "gamma"]);
    let t = &get(&app, "/v1/admin/tenants").await.body["items"][0];
    assert_eq!(t["display_name"], "Tenant acme");
    assert_eq!(t["mdms"][0]["name"], MDM);
    assert_eq!(t["mdms"][0]["kind"], "soti");

    let base = format!("/v1/admin/tenants/{TENANT}");
    let devices = paginates(&app, &format!("{base}/devices"), 5, 23).await;
    assert_eq!(devices.len(), 23);
    let users = paginates(&app, &format!("{base}/users"), 3, 2).await;
    assert_eq!(users.len() as i64, live_users(&env).await);
    let events = paginates(&app, &format!("{base}/events"), 5, 12).await;
    assert_eq!(events.len(), 12);
    let actions = paginates(&app, &format!("{base}/actions"), 4, 9).await;
    assert_eq!(actions.len(), 9);
    let runs = paginates(&app, &format!("{base}/sync-runs"), 2, 3).await;
    assert_eq!(runs.len(), 3);

    // Newest first for events, actions and runs; oldest first for inventory.
    let as_i64 = |v: &[Value]| v.iter().map(|i| i.as_i64().unwrap()).collect::<Vec<_>>();
    let mut sorted = as_i64(&devices);
    sorted.sort();
    assert_eq!(as_i64(&devices), sorted);
    let mut newest_first = as_i64(&events);
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(as_i64(&events), newest_first);

    // The default page is 50, the largest 500.
    let page = get(&app, &format!("{base}/devices")).await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 23);
    assert!(page.body["next_cursor"].is_null());
    for (query, field) in [
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=3132", "cursor"),
        ("offset=5", "offset"),
    ] {
        let a = get(&app, &format!("{base}/devices?{query}")).await;
        assert_eq!(a.status, 400, "{query}: {:?}", a.body);
        assert_eq!(a.body["field"], field, "{query}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn removed_devices_and_users_are_listed_only_with_include_removed() {
    let (env, app) = synced_app(30).await;
    let sim = env.sim.soti().unwrap();
    let lone = sim
        .users()
        .into_iter()
        .find(|u| u.device_ids.len() == 1)
        .expect("a user with one device");
    let gone = lone.device_ids[0].clone();
    sim.remove_device(&gone).unwrap();
    assert_eq!(sync_now(&app).await, SyncOutcome::Succeeded);

    let base = format!("/v1/admin/tenants/{TENANT}");
    let live = all_pages(&app, &format!("{base}/devices"), 500).await;
    let all = all_pages(&app, &format!("{base}/devices?include_removed=true"), 7).await;
    assert_eq!(live.len(), 29);
    assert_eq!(all.len(), 30);
    assert!(live.iter().all(|d| d["removed_at"].is_null()));
    let removed: Vec<&Value> = all.iter().filter(|d| !d["removed_at"].is_null()).collect();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["mdm_device_id"], gone.as_str());
    let explicit = all_pages(&app, &format!("{base}/devices?include_removed=false"), 500).await;
    assert_eq!(explicit.len(), 29);

    let live_users = all_pages(&app, &format!("{base}/users"), 500).await;
    let all_users = all_pages(&app, &format!("{base}/users?include_removed=true"), 500).await;
    assert_eq!(all_users.len(), live_users.len() + 1);
    assert!(live_users.iter().all(|u| u["removed_at"].is_null()));
    assert!(all_users.iter().all(|u| u["mdm"] == MDM));

    let bad = get(&app, &format!("{base}/users?include_removed=yes")).await;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (400, Some("include_removed"))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn devices_are_found_by_identifier_platform_group_and_mdm() {
    let (_env, app) = synced_app(40).await;
    let base = format!("/v1/admin/tenants/{TENANT}/devices");
    let all = all_pages(&app, &base, 500).await;
    assert_eq!(all.len(), 40);
    assert!(all.iter().all(|d| d["mdm"] == MDM));

    // Identifier: any kind, in any spelling the agent or an admin might type.
    let with_serial = all
        .iter()
        .find(|d| d["identifiers"]["serial"].is_string())
        .expect("a device with a serial");
    let serial = with_serial["identifiers"]["serial"].as_str().unwrap();
    let found = all_pages(
        &app,
        &format!("{base}?identifier={}", serial.to_lowercase()),
        500,
    )
    .await;
    assert!(ids(&found).contains(&with_serial["id"].as_i64().unwrap()));
    let with_mac = all
        .iter()
        .find(|d| d["identifiers"]["mac"].is_string())
        .expect("a device with a MAC");
    {
        let mac = with_mac["identifiers"]["mac"]
            .as_str()
            .unwrap()
            .to_uppercase();
        let colons: Vec<String> = mac
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        let found = all_pages(
            &app,
            &format!("{base}?identifier={}", colons.join(":")),
            500,
        )
        .await;
        assert_eq!(ids(&found), vec![with_mac["id"].as_i64().unwrap()]);
    }
    let by_mdm_id = all_pages(
        &app,
        &format!(
            "{base}?identifier={}",
            all[3]["mdm_device_id"].as_str().unwrap()
        ),
        500,
    )
    .await;
    assert_eq!(ids(&by_mdm_id), vec![all[3]["id"].as_i64().unwrap()]);
    let none = all_pages(&app, &format!("{base}?identifier=NO-SUCH-DEVICE"), 500).await;
    assert!(none.is_empty());

    // Platform.
    for platform in ["ios", "android"] {
        let want = all.iter().filter(|d| d["platform"] == platform).count();
        let got = all_pages(&app, &format!("{base}?platform={platform}"), 7).await;
        assert_eq!(got.len(), want, "{platform}");
        assert!(got.iter().all(|d| d["platform"] == platform));
    }
    assert!(all.iter().any(|d| d["platform"] == "ios"));

    // Group, by the display name admins see ("<MDM name> <group name>").
    let group = all
        .iter()
        .find_map(|d| d["groups"].as_array().and_then(|g| g.first()).cloned())
        .expect("a device in a group");
    let group = group.as_str().unwrap();
    assert!(group.starts_with("Test SOTI "), "{group}");
    let want = all
        .iter()
        .filter(|d| d["groups"].as_array().unwrap().iter().any(|g| g == group))
        .count();
    let encoded: String = url::form_urlencoded::byte_serialize(group.as_bytes()).collect();
    let got = all_pages(&app, &format!("{base}?group={encoded}"), 5).await;
    assert_eq!(got.len(), want);
    assert!(got
        .iter()
        .all(|d| d["groups"].as_array().unwrap().iter().any(|g| g == group)));

    // MDM by name; a name the tenant does not have is a 400 naming `mdm`.
    let soti = all_pages(&app, &format!("{base}?mdm=Test%20SOTI&platform=ios"), 500).await;
    assert_eq!(
        soti.len(),
        all.iter().filter(|d| d["platform"] == "ios").count()
    );
    for (query, field) in [
        ("mdm=Nope", "mdm"),
        ("platform=symbian", "platform"),
        ("include_removed=1", "include_removed"),
    ] {
        let a = get(&app, &format!("{base}?{query}")).await;
        assert_eq!(a.status, 400, "{query}");
        assert_eq!(a.body["field"], field, "{query}");
    }
    let unknown = get(&app, "/v1/admin/tenants/nobody/devices").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.body,
        serde_json::json!({"error": "tenant_not_found"})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn events_filter_by_type_device_and_time_and_actions_by_state_kind_and_device() {
    let (_env, app) = synced_app(5).await;
    let device = first_device_id(&app).await;
    let before = Utc::now();
    for i in 0..6 {
        let (t, d) = if i % 2 == 0 {
            ("network.arp_mitm", Some(device))
        } else {
            ("app.malicious", None)
        };
        record_event(&app.store, &event(&format!("e{i}"), d, t)).await;
    }
    let after = Utc::now();
    let base = format!("/v1/admin/tenants/{TENANT}");
    let arp = all_pages(&app, &format!("{base}/events?type=network.arp_mitm"), 2).await;
    assert_eq!(arp.len(), 3);
    assert!(arp.iter().all(|e| e["threat_type"] == "network.arp_mitm"));
    let by_device = all_pages(&app, &format!("{base}/events?device_id={device}"), 500).await;
    assert_eq!(by_device.len(), 3);
    let enc = |t: chrono::DateTime<Utc>| {
        url::form_urlencoded::byte_serialize(t.to_rfc3339().as_bytes()).collect::<String>()
    };
    let window = all_pages(
        &app,
        &format!("{base}/events?since={}&until={}", enc(before), enc(after)),
        500,
    )
    .await;
    assert_eq!(window.len(), 6);
    let future = all_pages(&app, &format!("{base}/events?since={}", enc(after)), 500).await;
    assert!(future.is_empty());
    for (query, field) in [("since=yesterday", "since"), ("device_id=abc", "device_id")] {
        let a = get(&app, &format!("{base}/events?{query}")).await;
        assert_eq!(
            (a.status, a.body["field"].as_str()),
            (400, Some(field)),
            "{query}"
        );
    }

    let held = insert_action(
        &app,
        Some(device),
        ActionRecordKind::Wipe,
        ActionState::Held,
    )
    .await;
    insert_action(
        &app,
        Some(device),
        ActionRecordKind::Lock,
        ActionState::Pending,
    )
    .await;
    insert_action(&app, None, ActionRecordKind::None, ActionState::Skipped).await;
    let got = all_pages(&app, &format!("{base}/actions?state=held"), 500).await;
    assert_eq!(ids(&got), vec![held]);
    assert_eq!(got[0]["kind"], "wipe");
    assert_eq!(got[0]["mdm"], MDM);
    assert_eq!(got[0]["reason"], "held: test");
    let wipes = all_pages(&app, &format!("{base}/actions?kind=wipe"), 500).await;
    assert_eq!(ids(&wipes), vec![held]);
    let of_device = all_pages(&app, &format!("{base}/actions?device_id={device}"), 500).await;
    assert_eq!(of_device.len(), 2);
    for (query, field) in [("state=lost", "state"), ("kind=nuke", "kind")] {
        let a = get(&app, &format!("{base}/actions?{query}")).await;
        assert_eq!(
            (a.status, a.body["field"].as_str()),
            (400, Some(field)),
            "{query}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_sync_request_answers_202_and_a_second_one_during_the_run_is_queued_or_coalesced() {
    let env = Env::new(&[SimKind::Soti], 200).await;
    let app = spawn_app(&env.write_config(TENANT, &[soti()], "0", "")).await;
    let mdm_id = app.mdm_id(TENANT, MDM).await;
    // Slow answers keep the first run going while the next requests arrive.
    env.sim
        .soti()
        .unwrap()
        .core()
        .inject(Fault::latency(Duration::from_millis(200)).times(3))
        .unwrap();
    let path = format!("/v1/admin/tenants/{TENANT}/sync");
    for _ in 0..4 {
        let a = post(&app, &path).await;
        assert_eq!(a.status, 202, "{:?}", a.body);
        let mdms = a.body["mdms"].as_array().unwrap();
        assert_eq!(mdms.len(), 1);
        assert_eq!(mdms[0]["name"], MDM);
        let requested = mdms[0]["requested"].as_str().unwrap();
        assert!(
            requested == "queued" || requested == "coalesced",
            "{requested}"
        );
    }
    let one = post(&app, &format!("{path}?mdm=Test%20SOTI")).await;
    assert_eq!(one.status, 202);
    let bad = post(&app, &format!("{path}?mdm=Nope")).await;
    assert_eq!((bad.status, bad.body["field"].as_str()), (400, Some("mdm")));
    let unknown = post(&app, "/v1/admin/tenants/nobody/sync").await;
    assert_eq!(unknown.status, 404);

    let runs = app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;
    assert_eq!(runs.last().unwrap().trigger, "admin");
    assert_eq!(runs.last().unwrap().outcome, SyncOutcome::Succeeded);
    // Wait for every queued follow-up run, then check none overlapped.
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = app.store.sync_runs(mdm_id, 100).await.unwrap();
        if now.len() == seen && now.iter().all(|r| r.finished_at.is_some()) {
            break;
        }
        seen = now.len();
    }
    let listed = all_pages(
        &app,
        &format!("/v1/admin/tenants/{TENANT}/sync-runs?mdm=Test%20SOTI"),
        500,
    )
    .await;
    assert_eq!(listed.len(), seen);
    assert!(seen <= 6, "coalesced: at most one run per request, {seen}");
    assert!(listed
        .iter()
        .all(|r| r["trigger"] == "admin" && r["mdm"] == MDM));
    app.shutdown().await;
}

#[tokio::test]
async fn approving_a_held_action_makes_it_pending_once_and_wakes_the_dispatcher() {
    let (_env, app) = synced_app(5).await;
    let device = first_device_id(&app).await;
    let held = insert_action(
        &app,
        Some(device),
        ActionRecordKind::Lock,
        ActionState::Held,
    )
    .await;
    let base = format!("/v1/admin/tenants/{TENANT}/actions");

    let a = post(&app, &format!("{base}/{held}/approve")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["id"], held);
    assert_eq!(a.body["state"], "pending");
    assert_eq!(a.body["mdm"], MDM);
    let audit = app.store.action_audit(held).await.unwrap();
    assert!(audit.iter().any(|r| r.from_state == Some(ActionState::Held)
        && r.to_state == ActionState::Pending
        && r.note.as_deref() == Some("approved by an admin")));

    let again = post(&app, &format!("{base}/{held}/approve")).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"], "not_held");
    assert!(again.body["state"].is_string());

    for missing in ["999999", "abc", "0"] {
        let a = post(&app, &format!("{base}/{missing}/approve")).await;
        assert_eq!(a.status, 404, "{missing}");
        assert_eq!(a.body, serde_json::json!({"error": "action_not_found"}));
    }
    let other = post(
        &app,
        &format!("/v1/admin/tenants/nobody/actions/{held}/approve"),
    )
    .await;
    assert_eq!(other.status, 404);
    assert_eq!(other.body["error"], "tenant_not_found");

    // Approval makes the row due now and wakes the dispatcher; the
    // end-to-end delivery of an approved wipe is tested with the policy.
    let row = app.store.get_action(held).await.unwrap().unwrap();
    assert_ne!(row.state, ActionState::Held);
    app.shutdown().await;
}

#[tokio::test]
async fn cancel_takes_one_waiting_action_and_cancel_destructive_takes_every_waiting_wipe() {
    let (_env, app) = synced_app(5).await;
    let device = first_device_id(&app).await;
    let base = format!("/v1/admin/tenants/{TENANT}/actions");

    let lock = insert_action(
        &app,
        Some(device),
        ActionRecordKind::Lock,
        ActionState::Pending,
    )
    .await;
    let a = post(&app, &format!("{base}/{lock}/cancel")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["state"], "cancelled");
    assert_eq!(a.body["id"], lock);
    let again = post(&app, &format!("{base}/{lock}/cancel")).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"], "not_cancellable");
    assert_eq!(again.body["state"], "cancelled");
    let sent = insert_action(
        &app,
        Some(device),
        ActionRecordKind::Lock,
        ActionState::Sent,
    )
    .await;
    let a = post(&app, &format!("{base}/{sent}/cancel")).await;
    assert_eq!((a.status, a.body["state"].as_str()), (409, Some("sent")));
    let missing = post(&app, &format!("{base}/424242/cancel")).await;
    assert_eq!(missing.status, 404);

    let mut waiting = vec![
        insert_action(
            &app,
            Some(device),
            ActionRecordKind::Wipe,
            ActionState::Held,
        )
        .await,
        insert_action(
            &app,
            Some(device),
            ActionRecordKind::EnterpriseWipe,
            ActionState::Held,
        )
        .await,
        insert_action(
            &app,
            Some(device),
            ActionRecordKind::EnterpriseWipe,
            ActionState::Pending,
        )
        .await,
    ];
    waiting.sort();
    let sent_wipe = insert_action(
        &app,
        Some(device),
        ActionRecordKind::Wipe,
        ActionState::Sent,
    )
    .await;
    let other_lock = insert_action(
        &app,
        Some(device),
        ActionRecordKind::Lock,
        ActionState::Pending,
    )
    .await;

    let a = post(&app, &format!("{base}/cancel-destructive")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["cancelled"], 3);
    let mut got: Vec<i64> = a.body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, waiting);
    for id in &waiting {
        let row = app.store.get_action(*id).await.unwrap().unwrap();
        assert_eq!(row.state, ActionState::Cancelled);
    }
    assert_eq!(
        app.store
            .get_action(sent_wipe)
            .await
            .unwrap()
            .unwrap()
            .state,
        ActionState::Sent
    );
    assert_eq!(
        app.store
            .get_action(other_lock)
            .await
            .unwrap()
            .unwrap()
            .state,
        ActionState::Pending
    );
    let none_left = post(&app, &format!("{base}/cancel-destructive")).await;
    assert_eq!(
        none_left.body,
        serde_json::json!({"cancelled": 0, "actions": []})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_status_shows_per_mdm_the_last_sync_recent_failures_and_waiting_work() {
    let (env, app) = synced_app(12).await;
    env.sim
        .soti()
        .unwrap()
        .core()
        .inject(Fault::status(500).times(1))
        .unwrap();
    assert_eq!(sync_now(&app).await, SyncOutcome::Failed);
    assert_eq!(sync_now(&app).await, SyncOutcome::Succeeded);
    let device = first_device_id(&app).await;
    insert_action(
        &app,
        Some(device),
        ActionRecordKind::EnterpriseWipe,
        ActionState::Held,
    )
    .await;
    insert_action(
        &app,
        Some(device),
        ActionRecordKind::Lock,
        ActionState::Pending,
    )
    .await;
    insert_action(
        &app,
        Some(device),
        ActionRecordKind::Lock,
        ActionState::Dead,
    )
    .await;
    insert_action(
        &app,
        Some(device),
        ActionRecordKind::RemoveWifiProfile,
        ActionState::Pending,
    )
    .await;

    let a = get(&app, &format!("/v1/admin/tenants/{TENANT}/status")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["tenant"], TENANT);
    let mdms = a.body["mdms"].as_array().unwrap();
    assert_eq!(mdms.len(), 1);
    let m = &mdms[0];
    assert_eq!(m["name"], MDM);
    assert_eq!(m["kind"], "soti");
    assert_eq!(m["devices"], 12);
    assert!(m["last_successful_sync_at"].is_string());
    let last = &m["last_sync"];
    assert_eq!(last["outcome"], "succeeded");
    assert!(last["started_at"].is_string() && last["finished_at"].is_string());
    for key in ["added", "updated", "removed", "skipped"] {
        assert!(last["counts"][key].is_u64(), "{key}");
    }
    assert!(last["held_removals"].is_u64());
    assert!(last["error"].is_null());
    assert_eq!(m["failed_syncs_24h"]["count"], 1);
    assert!(m["failed_syncs_24h"]["last_error"].is_string());
    assert_eq!(m["actions"]["held"], 1);
    assert_eq!(m["actions"]["pending"], 1);
    assert_eq!(m["actions"]["failed"], 0);
    assert_eq!(m["actions"]["dead"], 1);
    assert_eq!(m["pending_wifi_removals"], 1);
    assert_eq!(m["identity_collisions"], 0);
    assert!(m.as_object().unwrap().contains_key("backoff"));

    let unknown = get(&app, "/v1/admin/tenants/nobody/status").await;
    assert_eq!(unknown.status, 404);
    app.shutdown().await;
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_a_json_400_naming_the_path() {
    let (_env, app) = synced_app(3).await;
    for path in [
        "/v1/admin/tenants/%FF/devices",
        "/v1/admin/tenants/%FF/status",
        &format!("/v1/admin/tenants/{TENANT}/actions/%FF/approve"),
    ] {
        let method = if path.ends_with("approve") {
            "POST"
        } else {
            "GET"
        };
        let a = call(&app, method, path, Some(&bearer())).await;
        assert_eq!(a.status, 400, "{path}: {:?}", a.body);
        assert_eq!(a.body["error"], "invalid_field", "{path}: {:?}", a.body);
        assert_eq!(a.body["field"], "path", "{path}: {:?}", a.body);
    }
    // The token is still checked first.
    let a = call(&app, "GET", "/v1/admin/tenants/%FF/devices", None).await;
    assert_eq!(a.status, 401);
    app.shutdown().await;
}
