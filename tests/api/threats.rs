//! Issue 16, through the HTTP API only: threats open and close, a device's
//! risk level follows its open threats (out-of-order and repeated events
//! included), an admin resolves a threat, activation is kept, rules scoped
//! to groups fire only inside them, and the lists, status and metrics show
//! all of it.

use crate::support::*;
use mtd_sim::SimKind;
use serde_json::{json, Value};
use std::time::Duration;

const TENANT: &str = "acme";

async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("http://{}{path}", app.addr);
    let mut request = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    }
    .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("the app answers");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_events(app: &TestApp, body: Value) -> Value {
    let r = post_signed(app, "/v1/agent/events", TENANT, body.to_string().as_bytes()).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json()
}

fn event(id: &str, udid: &str, threat: Value, at: &str) -> Value {
    json!({"event_id": id, "detected_at": at, "device": {"udid": udid}, "threat": threat})
}

/// A SOTI tenant synced from the simulator; its devices' UDIDs.
async fn synced(policy: &str) -> (Env, TestApp, Vec<Value>) {
    let env = Env::new(&[SimKind::Soti], 30).await;
    let spec = MdmSpec::new(SimKind::Soti);
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", policy)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;
    let devices = env.sim.soti().unwrap().devices();
    (env, app, devices)
}

/// The stored device with this MDM device id, as the detail endpoint shows it.
async fn detail(app: &TestApp, mdm_device_id: &str) -> Value {
    let (status, list) = admin(
        app,
        "GET",
        &format!("/v1/admin/tenants/{TENANT}/devices?identifier={mdm_device_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let id = list["items"][0]["id"]
        .as_i64()
        .expect("the device is stored");
    let (status, d) = admin(
        app,
        "GET",
        &format!("/v1/admin/tenants/{TENANT}/devices/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{d}");
    d
}

fn level(d: &Value) -> &str {
    d["risk"]["level"].as_str().unwrap()
}

fn open_types(d: &Value) -> Vec<(String, Value, String)> {
    d["risk"]["open_threats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap().to_string(),
                t["key"].clone(),
                t["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn udid(d: &Value) -> String {
    d["DeviceId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn threats_open_and_close_and_the_risk_level_follows_them() {
    let (_env, app, devices) = synced("").await;
    let a = udid(&devices[0]);
    let b = udid(&devices[1]);
    assert_eq!(level(&detail(&app, &a).await), "secured");

    // detected then resolved, same (type, key): secured again.
    let app_threat = |status: &str| json!({"type": "app.malicious", "severity": "critical", "key": "com.evil", "status": status});
    post_events(
        &app,
        event("a-1", &a, app_threat("detected"), "2026-11-22T10:00:00Z"),
    )
    .await;
    let d = detail(&app, &a).await;
    assert_eq!(level(&d), "critical");
    assert_eq!(
        open_types(&d),
        [("app.malicious".into(), json!("com.evil"), "critical".into())]
    );
    // Another key of the same type is another threat: resolving it changes nothing.
    let other_key = json!({"type": "app.malicious", "severity": "low", "key": "com.other", "status": "resolved"});
    post_events(&app, event("a-2", &a, other_key, "2026-11-22T10:05:00Z")).await;
    assert_eq!(level(&detail(&app, &a).await), "critical");
    post_events(
        &app,
        event("a-3", &a, app_threat("resolved"), "2026-11-22T10:10:00Z"),
    )
    .await;
    let d = detail(&app, &a).await;
    assert_eq!(level(&d), "secured");
    assert!(open_types(&d).is_empty());
    let closed = &d["resolved_threats"][0];
    assert_eq!(closed["closed_by"], "agent");
    assert_eq!(closed["resolved_at"], "2026-11-22T10:10:00Z");

    // Two open threats of different severity: the higher one; resolving it
    // leaves the other's level. A missing key, null and "" are one key.
    post_events(
        &app,
        json!({"events": [
            event("b-1", &b, json!({"type": "network.arp_mitm", "severity": "medium"}), "2026-11-22T11:00:00Z"),
            event("b-2", &b, json!({"type": "device.jailbroken_rooted", "severity": "high", "key": ""}), "2026-11-22T11:01:00Z"),
        ]}),
    )
    .await;
    assert_eq!(level(&detail(&app, &b).await), "high");
    post_events(
        &app,
        event(
            "b-3",
            &b,
            json!({"type": "device.jailbroken_rooted", "severity": "high", "key": null, "status": "resolved"}),
            "2026-11-22T11:02:00Z",
        ),
    )
    .await;
    let d = detail(&app, &b).await;
    assert_eq!(level(&d), "medium");
    assert_eq!(
        open_types(&d),
        [("network.arp_mitm".into(), Value::Null, "medium".into())]
    );

    // A resolution dated before the latest detection closes nothing.
    post_events(
        &app,
        event(
            "b-4",
            &b,
            json!({"type": "network.arp_mitm", "severity": "medium"}),
            "2026-11-22T12:00:00Z",
        ),
    )
    .await;
    post_events(
        &app,
        event(
            "b-5",
            &b,
            json!({"type": "network.arp_mitm", "severity": "medium", "status": "resolved"}),
            "2026-11-22T11:30:00Z",
        ),
    )
    .await;
    let d = detail(&app, &b).await;
    assert_eq!(level(&d), "medium", "an older resolution leaves it open");
    assert_eq!(d["risk"]["open_threats"][0]["detections"], 2);
    assert_eq!(
        d["risk"]["open_threats"][0]["last_detected_at"],
        "2026-11-22T12:00:00Z"
    );

    // A repeat event_id changes nothing, even with another body.
    let repeat = post_events(
        &app,
        event(
            "b-4",
            &b,
            json!({"type": "network.arp_mitm", "severity": "medium", "status": "resolved"}),
            "2026-11-22T13:00:00Z",
        ),
    )
    .await;
    assert_eq!(repeat["duplicates"], json!(["b-4"]));
    assert_eq!(level(&detail(&app, &b).await), "medium");

    // A late copy of a detection older than the last resolution opens nothing.
    post_events(
        &app,
        event("a-4", &a, app_threat("detected"), "2026-11-22T10:09:00Z"),
    )
    .await;
    assert_eq!(level(&detail(&app, &a).await), "secured");

    // An admin closes the last open threat of b.
    let id = detail(&app, &b).await["id"].as_i64().unwrap();
    let path = format!("/v1/admin/tenants/{TENANT}/devices/{id}/threats/resolve");
    let (status, resolved) = admin(
        &app,
        "POST",
        &path,
        Some(json!({"type": "network.arp_mitm", "key": null})),
    )
    .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["risk_level"], "secured");
    assert_eq!(resolved["threat"]["closed_by"], "admin");
    let (status, again) = admin(
        &app,
        "POST",
        &path,
        Some(json!({"type": "network.arp_mitm"})),
    )
    .await;
    assert_eq!(
        (status, again["error"].as_str()),
        (404, Some("threat_not_open"))
    );
    assert_eq!(level(&detail(&app, &b).await), "secured");

    // Every event is kept, resolutions included.
    let (_, events) = admin(
        &app,
        "GET",
        &format!("/v1/admin/tenants/{TENANT}/events?limit=100"),
        None,
    )
    .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 9);
    app.shutdown().await;
}

#[tokio::test]
async fn risk_and_activation_are_listed_filtered_and_counted() {
    let (_env, app, devices) = synced("").await;
    let (a, b) = (udid(&devices[0]), udid(&devices[1]));
    post_events(
        &app,
        json!({"events": [
            event("r-1", &a, json!({"type": "network.arp_mitm", "severity": "high"}), "2026-11-22T10:00:00Z"),
            event("r-2", &b, json!({"type": "app.sideloaded", "severity": "low"}), "2026-11-22T10:00:00Z"),
        ]}),
    )
    .await;
    let activate = json!({"device": {"udid": a}, "platform": "ios", "agent_version": "4.8.0",
                          "tracking_id_1": "t-1", "tracking_id_2": "t-2"});
    for _ in 0..2 {
        let r = post_signed(
            &app,
            "/v1/agent/activate",
            TENANT,
            activate.to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let d = detail(&app, &a).await;
    let act = &d["activation"];
    assert_eq!(
        (
            &act["platform"],
            &act["agent_version"],
            &act["tracking_id_1"],
            &act["tracking_id_2"]
        ),
        (&json!("ios"), &json!("4.8.0"), &json!("t-1"), &json!("t-2"))
    );
    assert!(act["first_activated_at"].as_str() <= act["last_activated_at"].as_str());
    assert!(
        detail(&app, &b).await["activation"].is_null(),
        "never activated"
    );

    let list = |q: &str| {
        let app = &app;
        let q = q.to_string();
        async move {
            let (status, v) = admin(
                app,
                "GET",
                &format!("/v1/admin/tenants/{TENANT}/devices?limit=500&{q}"),
                None,
            )
            .await;
            assert_eq!(status, 200, "{v}");
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["mdm_device_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("risk=high").await, std::slice::from_ref(&a));
    assert_eq!(list("risk=low").await, std::slice::from_ref(&b));
    assert_eq!(list("risk=secured").await.len(), devices.len() - 2);
    assert_eq!(list("activated=true").await, std::slice::from_ref(&a));
    assert_eq!(list("activated=false").await.len(), devices.len() - 1);
    let (status, bad) = admin(
        &app,
        "GET",
        &format!("/v1/admin/tenants/{TENANT}/devices?risk=severe"),
        None,
    )
    .await;
    assert_eq!((status, bad["field"].as_str()), (400, Some("risk")));

    let (_, status) = admin(
        &app,
        "GET",
        &format!("/v1/admin/tenants/{TENANT}/status"),
        None,
    )
    .await;
    assert_eq!(
        status["devices_by_risk"],
        json!({"secured": devices.len() - 2, "low": 1, "medium": 0, "high": 1, "critical": 0})
    );
    assert_eq!(status["mdms"][0]["activated_devices"], 1);
    assert_eq!(status["mdms"][0]["enabled"], true);

    let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "mtd_devices_by_risk{{tenant=\"{TENANT}\",level=\"high\"}} 1\n"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "mtd_devices_by_risk{{tenant=\"{TENANT}\",level=\"secured\"}} {}\n",
        devices.len() - 2
    )));
    app.shutdown().await;
}

#[tokio::test]
async fn a_rule_scoped_to_a_group_fires_inside_it_and_not_outside() {
    let policy = "[[policy.rule]]\nthreat = \"device.*\"\ngroups = ['Test SOTI \\\\Acme\\Sales']\naction = \"lock\"\n";
    let (env, app, devices) = synced(policy).await;
    let path = |d: &Value| d["Path"].as_str().unwrap().to_string();
    // A subgroup counts as inside; a sibling whose name only starts the same does not.
    let inside = devices
        .iter()
        .find(|d| path(d) == r"\\Acme\Sales\Retail Stores")
        .expect("a device in a subgroup of Sales");
    let outside = devices
        .iter()
        .find(|d| !path(d).starts_with(r"\\Acme\Sales"))
        .expect("a device outside Sales");
    let threat = json!({"type": "device.jailbroken_rooted", "severity": "high"});
    post_events(
        &app,
        json!({"events": [
            event("g-in", &udid(inside), threat.clone(), "2026-11-22T10:00:00Z"),
            event("g-out", &udid(outside), threat, "2026-11-22T10:00:00Z"),
        ]}),
    )
    .await;
    settle(&app, &env).await;
    let rows = actions(&env).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].kind.as_str(), rows[0].state.as_str()),
        ("lock", "sent")
    );
    assert_eq!(
        rows[1].kind, "none",
        "no rule matched outside the group: {rows:?}"
    );
    let locked: Vec<Option<String>> = env
        .sim
        .soti()
        .unwrap()
        .core()
        .actions()
        .iter()
        .map(|a| a.device_id.clone())
        .collect();
    assert_eq!(locked, [Some(udid(inside))]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_device_removed_at_its_mdm_has_its_threats_closed() {
    let (env, app, devices) = synced("").await;
    let gone = udid(&devices[0]);
    post_events(
        &app,
        event(
            "x-1",
            &gone,
            json!({"type": "network.rogue_access_point", "severity": "critical", "key": "aa:bb:cc:dd:ee:ff"}),
            "2026-11-22T10:00:00Z",
        ),
    )
    .await;
    assert_eq!(level(&detail(&app, &gone).await), "critical");
    env.sim
        .soti()
        .unwrap()
        .remove_device(&gone)
        .expect("removed at the MDM");
    let reports = app
        .sync
        .full_sync_now(TENANT, None, mtd_connector::store::SyncTrigger::Cli, None)
        .await
        .unwrap();
    assert_eq!(reports[0].counts.removed, 1);
    // The removed device is still shown (with its history), secured.
    let (_, list) = admin(
        &app,
        "GET",
        &format!("/v1/admin/tenants/{TENANT}/devices?identifier={gone}&include_removed=true"),
        None,
    )
    .await;
    let id = list["items"][0]["id"].as_i64().unwrap();
    let (_, d) = admin(
        &app,
        "GET",
        &format!("/v1/admin/tenants/{TENANT}/devices/{id}"),
        None,
    )
    .await;
    assert!(!d["removed_at"].is_null());
    assert_eq!(level(&d), "secured");
    assert_eq!(d["resolved_threats"][0]["closed_by"], "removal");
    assert_eq!(
        d["resolved_threats"][0]["close_reason"],
        "the device was removed at its MDM"
    );
    app.shutdown().await;
}

/// CONTRACT §4 "Resolution reverts", on both MDMs where the connector
/// removes the disconnect-Wi-Fi profile itself: the removal waits while a
/// network threat is open, and is sent at once, once, when the last one is
/// resolved (instead of after `wifi_profile_removal_minutes`).
#[tokio::test]
async fn resolving_the_network_threats_removes_the_wifi_profile_at_once() {
    for kind in [SimKind::Soti, SimKind::Airwatch] {
        let env = Env::new(&[kind], 20).await;
        let spec = MdmSpec {
            extra: "wifi_disconnect_profile_id = \"42\"\n[mdm.permit]\ndisconnect_wifi = true\n"
                .into(),
            ..MdmSpec::new(kind)
        };
        let policy = "[policy]\naction_cooldown_minutes = 0\n[[policy.rule]]\nthreat = \"network.*\"\naction = \"disconnect_wifi\"\n";
        let app =
            spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", policy)).await;
        let mdm_id = app.mdm_id(TENANT, &spec.name).await;
        app.finished_runs(mdm_id, 1, Duration::from_secs(30)).await;
        let (device_ref, sim_id) = match kind {
            SimKind::Soti => {
                let d = env.sim.soti().unwrap().devices()[0].clone();
                let id = d["DeviceId"].as_str().unwrap().to_string();
                (json!({"mdm_device_id": id}), id)
            }
            _ => {
                let d = env.sim.airwatch().unwrap().devices()[0].clone();
                let id = d["Id"]["Value"].to_string();
                (json!({"mdm_device_id": id}), id)
            }
        };
        let ev = |id: &str, threat: &str, status: &str, at: &str| {
            json!({"event_id": id, "detected_at": at, "device": device_ref,
                   "threat": {"type": threat, "severity": "high", "key": "aa:bb:cc:dd:ee:ff", "status": status}})
        };
        let profile_calls = || {
            let core = match kind {
                SimKind::Soti => env.sim.soti().unwrap().core().actions(),
                _ => env.sim.airwatch().unwrap().core().actions(),
            };
            let calls: Vec<String> = core
                .into_iter()
                .filter(|a| {
                    a.device_id.as_deref() == Some(sim_id.as_str())
                        && a.profile_id.is_some()
                        && (200..300).contains(&a.status)
                })
                .map(|a| a.action.to_ascii_lowercase())
                .collect();
            calls
        };
        post_events(
            &app,
            ev(
                "n-1",
                "network.arp_mitm",
                "detected",
                "2026-11-22T10:00:00Z",
            ),
        )
        .await;
        post_events(
            &app,
            ev(
                "n-2",
                "network.rogue_access_point",
                "detected",
                "2026-11-22T10:01:00Z",
            ),
        )
        .await;
        settle(&app, &env).await;
        assert_eq!(
            profile_calls(),
            ["install"],
            "{kind:?}: one install; rows {:?}; sim {:?}",
            actions(&env).await,
            env.sim.airwatch().map(|a| a.core().actions())
        );
        let removal = || async {
            actions(&env)
                .await
                .into_iter()
                .find(|a| a.kind == "remove_wifi_profile")
                .expect("a removal is scheduled")
        };
        assert_eq!(removal().await.state, "pending");

        // The threat that caused it is resolved, but another network threat is open: it waits.
        post_events(
            &app,
            ev(
                "n-3",
                "network.arp_mitm",
                "resolved",
                "2026-11-22T10:05:00Z",
            ),
        )
        .await;
        settle(&app, &env).await;
        assert_eq!(removal().await.state, "pending", "{kind:?}");
        assert_eq!(profile_calls(), ["install"]);

        // The last one resolved: the profile is removed within seconds, once.
        post_events(
            &app,
            ev(
                "n-4",
                "network.rogue_access_point",
                "resolved",
                "2026-11-22T10:06:00Z",
            ),
        )
        .await;
        wait_actions(&env, Duration::from_secs(5), |rows| {
            rows.iter()
                .any(|a| a.kind == "remove_wifi_profile" && a.state == "sent")
        })
        .await;
        settle(&app, &env).await;
        let calls = profile_calls();
        assert_eq!(calls.len(), 2, "{kind:?}: {calls:?}");
        assert!(
            calls[1] == "revoke" || calls[1] == "remove",
            "{kind:?}: {calls:?}"
        );
        app.shutdown().await;
    }
}
