//! A flaky MDM of every kind: 30 % of its requests fail.
//!
//! Each simulator gets four faults, each hitting a seeded 8.5 % of requests
//! (token requests included), so about 30 % (1 - 0.915^4) meet one of: a 503,
//! a connection closed without an answer, a 429 with `Retry-After: 1`, or
//! 5 s of latency before a normal answer. Delivery must stay exactly once:
//! a refused or dropped call never reached the simulator's handler, and the
//! adapters' request timeout (30 s, adapters/core/src/http.rs) is longer than
//! the latency, so a slow call is answered, not retried. Full syncs run all
//! the while; a failed listing must never look like "the devices are gone".

use crate::api::{self, spawn_app, MdmSpec, TestApp};
use crate::support::*;
use mtd_sim::{Fault, SimKind, Simulator};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const TENANT: &str = "flaky";
const DEVICES: usize = 30;
/// Per fault: 1 - (1 - 0.0853)^4 ≈ 0.30 of requests meet one of the four.
const SHARE: f64 = 0.0853;

const POLICY: &str = r#"[policy]
action_cooldown_minutes = 15
[[policy.rule]]
threat = "device.*"
action = "lock"
[[policy.rule]]
threat = "network.*"
action = "disconnect_wifi"
"#;

fn spec(kind: SimKind) -> MdmSpec {
    let wifi = match kind {
        SimKind::Bcdm | SimKind::Maas360 => "",
        SimKind::Soti => "wifi_disconnect_profile_id = \"wifi-off-1\"\n",
        // AirWatch profile ids are numbers.
        SimKind::Airwatch => "wifi_disconnect_profile_id = \"42\"\n",
    };
    MdmSpec {
        extra: format!("{wifi}[mdm.permit]\nlock = true\ndisconnect_wifi = true\n"),
        ..MdmSpec::new(kind)
    }
}

fn sim_device_count(sim: &Simulator, kind: SimKind) -> usize {
    match kind {
        SimKind::Soti => sim.soti().unwrap().devices().len(),
        SimKind::Airwatch => sim.airwatch().unwrap().devices().len(),
        SimKind::Maas360 => sim.maas360().unwrap().devices().len(),
        SimKind::Bcdm => sim.bcdm().unwrap().devices().len(),
    }
}

/// Live (not removed) devices of one MDM in the store.
async fn store_device_count(app: &TestApp, db: &std::path::Path, mdm_id: i64) -> usize {
    let _ = app;
    let pool = open_store(db).await;
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE mdm_id = ? AND removed_at IS NULL")
            .bind(mdm_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    n as usize
}

async fn request_sync(client: &reqwest::Client, app: &TestApp) {
    let r = client
        .post(format!(
            "http://{}/v1/admin/tenants/{TENANT}/sync",
            app.addr
        ))
        .bearer_auth(api::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdm_faults_30_percent_failing_requests_of_every_kind_deliver_each_action_exactly_once_and_remove_no_device(
) {
    let env = env_without_rate_limits(&SimKind::ALL, DEVICES).await;
    let specs: Vec<MdmSpec> = SimKind::ALL.iter().map(|k| spec(*k)).collect();
    let app = spawn_app(&env.write_config(TENANT, &specs, "0", POLICY)).await;
    let db = env.db_path();
    let mut mdm_ids = HashMap::new();
    // What the fault-free initial sync mirrored: every device the simulator
    // lists, less the ones the run skipped (e.g. without any identifier).
    let mut mirrored = HashMap::new();
    for s in &specs {
        let id = app.mdm_id(TENANT, &s.name).await;
        let run = app.finished_runs(id, 1, Duration::from_secs(30)).await;
        let live = store_device_count(&app, &db, id).await;
        assert_eq!(
            live + run[0].skipped as usize,
            sim_device_count(&env.sim, s.kind),
            "{}: the initial sync mirrors the simulator: {run:?}",
            s.kind
        );
        mdm_ids.insert(s.kind, id);
        mirrored.insert(s.kind, live);
    }

    for (n, kind) in SimKind::ALL.into_iter().enumerate() {
        let core = env.sim.state(kind).unwrap();
        let core = core.core();
        let seed = 100 * n as u64;
        for (i, fault) in [
            Fault::status(503),
            Fault::drop_connection(),
            Fault::rate_limited(1),
            Fault::latency(Duration::from_secs(5)),
        ]
        .into_iter()
        .enumerate()
        {
            core.inject(
                fault
                    .including_token()
                    .with_probability(SHARE, seed + i as u64),
            )
            .unwrap();
        }
    }

    // Per kind, 8 devices get a lock and 4 others a Wi-Fi disconnect (MaaS360,
    // which cannot take a device off Wi-Fi, a lock all 12).
    let targets = targets(&db).await;
    let mut expected: HashMap<(SimKind, String), &'static str> = HashMap::new();
    let mut events = Vec::new();
    for kind in SimKind::ALL {
        for (n, t) in targets
            .iter()
            .filter(|t| t.kind == kind)
            .take(12)
            .enumerate()
        {
            let (threat, action) = if n < 8 || kind == SimKind::Maas360 {
                ("device.jailbroken_rooted", "lock")
            } else {
                ("network.arp_mitm", "disconnect_wifi")
            };
            events.push(event_body(&format!("flaky-{kind}-{n}"), &t.serial, threat));
            expected.insert((kind, t.mdm_device_id.clone()), action);
        }
    }
    assert_eq!(
        expected.len(),
        12 * SimKind::ALL.len(),
        "12 distinct devices per kind"
    );
    for body in &events {
        let r = api::post_signed(&app, "/v1/agent/events", TENANT, body).await;
        assert_eq!(r.status, 202, "{}", r.text);
    }

    // Full syncs, one after another, while the actions are being delivered.
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut rounds = 0;
    let outstanding = "SELECT COUNT(*) FROM actions WHERE kind IN ('lock', 'disconnect_wifi') AND state IN ('pending', 'failed')";
    loop {
        let before: HashMap<i64, usize> = {
            let mut m = HashMap::new();
            for id in mdm_ids.values() {
                m.insert(*id, app.finished_runs(*id, 0, Duration::ZERO).await.len());
            }
            m
        };
        request_sync(&client, &app).await;
        rounds += 1;
        for (kind, id) in &mdm_ids {
            app.finished_runs(*id, before[id] + 1, Duration::from_secs(60))
                .await;
            assert_eq!(
                store_device_count(&app, &db, *id).await,
                mirrored[kind],
                "{kind}: a sync during the faults changed the device count (the simulator has {})",
                sim_device_count(&env.sim, *kind)
            );
        }
        let pool = open_store(&db).await;
        let left: i64 = sqlx::query_scalar(outstanding)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        if left == 0 && rounds >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{left} actions still undelivered after {rounds} sync rounds"
        );
    }

    // The faults really happened, on every kind.
    for kind in SimKind::ALL {
        let requests = env.sim.state(kind).unwrap().core().requests();
        let faulted = requests.iter().filter(|r| r.fault.is_some()).count();
        assert!(
            faulted > 0,
            "{kind}: none of {} requests met a fault",
            requests.len()
        );
    }
    let pool = open_store(&db).await;
    let retried: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM action_audit WHERE to_state = 'failed'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let runs: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT outcome, removed, held_removals FROM sync_runs")
            .fetch_all(&pool)
            .await
            .unwrap();
    let states: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, state, COUNT(*) FROM actions GROUP BY kind, state ORDER BY kind, state",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let dead: Vec<(i64, String, Option<String>)> =
        sqlx::query_as("SELECT id, kind, reason FROM actions WHERE state = 'dead'")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert!(
        retried > 0,
        "no action delivery failed: the faults missed the actions"
    );
    assert!(
        runs.iter()
            .all(|(_, removed, held)| *removed == 0 && *held == 0),
        "a sync removed (or wanted to remove) devices that still exist: {runs:?}"
    );
    for (kind, state, n) in &states {
        let fine = matches!(
            (kind.as_str(), state.as_str()),
            ("lock", "sent") | ("disconnect_wifi", "sent") | ("remove_wifi_profile", "pending")
        );
        assert!(
            fine,
            "{n} {kind} actions ended {state}: {states:?}\n{dead:#?}"
        );
    }

    // Exactly once: one accepted call per device at its simulator.
    for kind in SimKind::ALL {
        let calls = env.sim.state(kind).unwrap().core().actions();
        let mut per_device: HashMap<String, Vec<String>> = HashMap::new();
        for c in calls.iter().filter(|c| (200..300).contains(&c.status)) {
            let id = c.device_id.clone().unwrap_or_else(|| c.device_ref.clone());
            per_device.entry(id).or_default().push(c.action.clone());
        }
        for ((k, device), action) in &expected {
            if *k != kind {
                continue;
            }
            let got = per_device.remove(device).unwrap_or_default();
            assert_eq!(
                got.len(),
                1,
                "{kind} device {device} ({action}) received {got:?}"
            );
        }
        assert!(
            per_device.is_empty(),
            "{kind}: calls for devices no event named: {per_device:?}"
        );
    }
    let succeeded = runs.iter().filter(|r| r.0 == "succeeded").count();
    println!(
        "mdm_faults: {rounds} sync rounds ({succeeded} of {} runs succeeded), {retried} failed delivery attempts retried, {:?}",
        runs.len(),
        started.elapsed()
    );

    app.shutdown().await;
    assert_no_secret(
        &crate::logs::text(),
        "the in-process daemons' log",
        &configured_secrets(),
    );
}

/// The MDM acts on a wipe but its answer is lost (the connection closes
/// after the request was served; an answer after the adapter's timeout is
/// the same case). The adapter reports `NoAnswer` for a command whose
/// connection stood, and the dispatcher does not repeat a command that is not
/// idempotent: the wipe is `dead` with "check the MDM console" and reached
/// the MDM once (CONTRACT §4: at most once per action record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdm_faults_a_wipe_whose_answer_is_lost_reaches_the_mdm_at_most_once() {
    let env = env_without_rate_limits(&[SimKind::Soti], 5).await;
    let spec = MdmSpec {
        extra: "[mdm.permit]\nenterprise_wipe = true\n".into(),
        ..MdmSpec::new(SimKind::Soti)
    };
    let policy = "[policy]\nmax_destructive_actions_per_hour = 100\n[[policy.rule]]\nthreat = \"app.malicious\"\naction = \"enterprise_wipe\"\n";
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", policy)).await;
    let id = app.mdm_id(TENANT, &spec.name).await;
    app.finished_runs(id, 1, Duration::from_secs(30)).await;
    let target = targets(&env.db_path()).await.remove(0);

    // The MDM performs the first action call it gets, and the answer is lost.
    env.sim
        .soti()
        .unwrap()
        .core()
        .inject(Fault::drop_answer().times(1).on_paths("/actions"))
        .unwrap();
    let r = api::post_signed(
        &app,
        "/v1/agent/events",
        TENANT,
        &event_body("lost-1", &target.serial, "app.malicious"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let rows = api::wait_actions(&env, Duration::from_secs(20), |rows| {
        rows.iter()
            .any(|a| a.kind == "enterprise_wipe" && (a.state == "sent" || a.state == "dead"))
    })
    .await;
    // Whatever is due now is sent; a dead wipe has no retry to come.
    api::settle(&app, &env).await;
    let calls = sim_actions_per_device(&env.sim, SimKind::Soti);
    let got = calls.get(&target.mdm_device_id).copied().unwrap_or(0);
    app.shutdown().await;
    assert_eq!(got, 1, "the wipe reached the MDM {got} times: {rows:#?}");
    let wipe = rows
        .iter()
        .find(|a| a.kind == "enterprise_wipe")
        .expect("the wipe row");
    assert_eq!(wipe.state, "dead", "{wipe:?}");
    assert!(
        wipe.reason
            .as_deref()
            .is_some_and(|r| r.contains("no answer")),
        "the reason says why: {wipe:?}"
    );
}
