//! `kill -9` of the real binary mid-stream, then a restart on the same store.
//!
//! What the dispatcher promises (src/dispatch): a row is claimed (`claimed_at`
//! set, attempt counted, audited "claimed for attempt N") in batches, waits
//! for its MDM's turn, and is released by the transition that records the
//! outcome; a wipe's call is preceded by a committed "sending attempt N"
//! audit row. A row still claimed at start was in flight at the crash. A lock
//! (idempotent at the MDM) is released and retried, audited "claimed before
//! the last stop and not finished; retried …"; an enterprise wipe whose last
//! audit row is "claimed …" never reached its MDM and is retried the same way
//! ("claimed before the last stop but never sent …"); one whose last row is
//! "sending …" is `dead`, audited "interrupted while being sent at the last
//! stop … check the MDM console". So the exact claim checked here: the rows
//! still claimed in the killed daemon's store are exactly the rows with a
//! recovery audit entry; every other action reached its simulator exactly
//! once; a retried lock once or twice, a retried wipe exactly once, a dead
//! wipe at most once.

use crate::api::{self, MdmSpec};
use crate::support::*;
use mtd_sim::{Fault, SimKind};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TENANT: &str = "crash";
const DEVICES_PER_KIND: usize = 160;
const EVENTS: usize = 2000;
const CLIENTS: usize = 4;
/// The kill comes once this many events were acknowledged.
const KILL_AFTER_ACKS: usize = 700;
/// Every 20th event is an enterprise wipe, each for a device of its own
/// (a dead wipe does not cool down its device, so a second wipe event could
/// legitimately send a new one).
const WIPE_EVERY: usize = 20;

const POLICY: &str = r#"[policy]
action_cooldown_minutes = 15
max_destructive_actions_per_hour = 100000
[[policy.rule]]
threat = "device.*"
action = "lock"
[[policy.rule]]
threat = "app.malicious"
action = "enterprise_wipe"
"#;

/// An action row: id, device id, kind, state, reason.
type ActionRow = (i64, Option<i64>, String, String, Option<String>);

struct Event {
    id: String,
    body: Vec<u8>,
}

fn event(i: usize, target: &Target, threat: &str) -> Event {
    let id = format!("crash-{i:05}");
    let body = json!({
        "event_id": id,
        "detected_at": chrono::Utc::now().to_rfc3339(),
        "device": {"serial": target.serial},
        "threat": {"type": threat, "severity": "high", "name": threat},
        "network": {"ssid": "Office", "bssid": "aa:bb:cc:dd:ee:ff"},
        "details": {"n": i}
    });
    Event {
        id,
        body: body.to_string().into_bytes(),
    }
}

/// Posts `events` in order from `from`, single events, until all got a 202 or
/// the daemon stops answering; returns the index of the first event without
/// a 202. Any answer other than 202 is a failure: the daemon was healthy.
async fn post_until_gone(
    client: reqwest::Client,
    addr: SocketAddr,
    events: Arc<Vec<Event>>,
    from: usize,
    acked: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicUsize>,
) -> usize {
    for (n, e) in events.iter().enumerate().skip(from) {
        let headers = api::agent_headers(TENANT, &e.body);
        match try_post(&client, addr, "/v1/agent/events", &headers, e.body.clone()).await {
            Ok(r) if r.status == 202 => {
                acked.lock().unwrap().push(e.id.clone());
                count.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => panic!("event {} got {}: {}", e.id, r.status, r.text),
            Err(_) => return n,
        }
    }
    events.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_kill9_while_four_clients_post_2000_events_loses_no_acknowledged_event_and_sends_each_action_once(
) {
    let env = env_without_rate_limits(&SimKind::ALL, DEVICES_PER_KIND).await;
    let specs: Vec<MdmSpec> = SimKind::ALL
        .iter()
        .map(|k| MdmSpec {
            extra: "[mdm.permit]\nlock = true\nenterprise_wipe = true\n".into(),
            ..MdmSpec::new(*k)
        })
        .collect();
    let config = env.write_config(TENANT, &specs, "0", POLICY);
    let db = env.db_path();
    let mut daemon = Daemon::start(&config, "info").await;
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM sync_runs WHERE outcome = 'succeeded'",
        SimKind::ALL.len() as i64,
        Duration::from_secs(60),
    )
    .await;

    let targets = targets(&db).await;
    // Every fourth device (so every kind) gets one wipe event; the rest get locks.
    let (wipe_targets, lock_targets): (Vec<_>, Vec<_>) = targets
        .iter()
        .cloned()
        .enumerate()
        .partition(|(n, _)| n % 4 == 0);
    let wipe_targets: Vec<Target> = wipe_targets.into_iter().map(|(_, t)| t).collect();
    let lock_targets: Vec<Target> = lock_targets.into_iter().map(|(_, t)| t).collect();
    assert!(
        wipe_targets.len() >= EVENTS / WIPE_EVERY && lock_targets.len() >= 200,
        "too few distinct devices: {} wipe, {} lock",
        wipe_targets.len(),
        lock_targets.len()
    );

    // 2,000 events: wipes, locks (many repeats: cooled down), and a share no rule matches.
    let mut per_client: Vec<Vec<Event>> = (0..CLIENTS).map(|_| Vec::new()).collect();
    let mut wiped = BTreeSet::new();
    let mut locked = BTreeSet::new();
    for i in 0..EVENTS {
        let e = if i % WIPE_EVERY == 0 {
            let t = &wipe_targets[i / WIPE_EVERY];
            wiped.insert(t.id);
            event(i, t, "app.malicious")
        } else {
            let t = &lock_targets[(i * 7919) % lock_targets.len()];
            if i % 9 == 0 {
                event(i, t, "phishing.url")
            } else {
                locked.insert(t.id);
                event(i, t, "device.jailbroken_rooted")
            }
        };
        per_client[i % CLIENTS].push(e);
    }
    let per_client: Vec<Arc<Vec<Event>>> = per_client.into_iter().map(Arc::new).collect();

    // Slow MDM calls keep actions in flight, so the kill finds some claimed.
    for kind in SimKind::ALL {
        env.sim
            .state(kind)
            .unwrap()
            .core()
            .inject(Fault::latency(Duration::from_millis(200)))
            .unwrap();
    }

    let client = reqwest::Client::new();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let posting: Vec<_> = per_client
        .iter()
        .map(|events| {
            tokio::spawn(post_until_gone(
                client.clone(),
                daemon.addr,
                events.clone(),
                0,
                acked.clone(),
                count.clone(),
            ))
        })
        .collect();
    while count.load(Ordering::SeqCst) < KILL_AFTER_ACKS {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Kill while a wipe call is at an MDM if one comes within 2 s, so the
    // `dead` path is taken too, not only the retries.
    let wait_for_wipe = Instant::now() + Duration::from_secs(2);
    let mut wipe_mid_call = false;
    while Instant::now() < wait_for_wipe {
        wipe_mid_call = SimKind::ALL.iter().any(|k| wipe_at_mdm(&env.sim, *k));
        if wipe_mid_call {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.kill9();
    let first_log = daemon.log();
    let mut resume = Vec::new();
    for p in posting {
        resume.push(p.await.unwrap());
    }
    let acked_before: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        resume.iter().sum::<usize>() < EVENTS,
        "the kill came after every event was posted: not mid-stream"
    );

    // The killed daemon's store: every acknowledged event is there, and the
    // rows still claimed are the actions that were in flight.
    let pool = open_store(&db).await;
    let stored: BTreeSet<String> = strings(
        &pool,
        "SELECT event_id FROM threat_events WHERE tenant_id = 'crash'",
    )
    .await
    .into_iter()
    .collect();
    let lost: Vec<&String> = acked_before
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events are not in the store after kill -9: {lost:?}",
        lost.len()
    );
    let in_flight: BTreeSet<i64> = ints(
        &pool,
        "SELECT id FROM actions WHERE claimed_at IS NOT NULL AND state IN ('pending', 'failed')",
    )
    .await
    .into_iter()
    .collect();
    pool.close().await;
    assert!(
        !in_flight.is_empty(),
        "no action was in flight at the kill: the scenario did not test recovery"
    );

    // Restart on the same store; the clients go on where they stopped (the
    // event that got no answer is posted again, as an agent would).
    let mut daemon = Daemon::start(&config, "info").await;
    let mut again = Vec::new();
    for (events, from) in per_client.iter().zip(&resume) {
        again.push(tokio::spawn(post_until_gone(
            client.clone(),
            daemon.addr,
            events.clone(),
            *from,
            acked.clone(),
            count.clone(),
        )));
    }
    for p in again {
        assert_eq!(
            p.await.unwrap(),
            EVENTS / CLIENTS,
            "the restarted daemon answers every post"
        );
    }
    wait_scalar(
        &db,
        "SELECT COUNT(*) FROM actions WHERE state IN ('pending', 'failed', 'held') OR claimed_at IS NOT NULL",
        0,
        Duration::from_secs(90),
    )
    .await;
    let status = daemon.sigterm(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    let second_log = daemon.log();

    let pool = open_store(&db).await;
    let stored = strings(
        &pool,
        "SELECT event_id FROM threat_events WHERE tenant_id = 'crash' ORDER BY event_id",
    )
    .await;
    assert_eq!(stored.len(), EVENTS, "every event is stored once");

    // The recovery trail names exactly the rows that were in flight.
    let retried: BTreeSet<i64> = ints(
        &pool,
        "SELECT DISTINCT action_id FROM action_audit WHERE note LIKE 'claimed before the last stop%'",
    )
    .await
    .into_iter()
    .collect();
    let gave_up: BTreeSet<i64> = ints(
        &pool,
        "SELECT DISTINCT action_id FROM action_audit WHERE to_state = 'dead' AND note LIKE 'interrupted while being sent%'",
    )
    .await
    .into_iter()
    .collect();
    let recovered: BTreeSet<i64> = retried.union(&gave_up).copied().collect();
    assert!(
        !wipe_mid_call || !gave_up.is_empty(),
        "a wipe was at its MDM at the kill, yet no wipe was given up"
    );
    assert_eq!(
        recovered, in_flight,
        "recovery audit rows must name exactly the rows left claimed"
    );

    // Each action row: (id, device, kind, state).
    let actions: Vec<ActionRow> =
        sqlx::query_as("SELECT id, device_id, kind, state, reason FROM actions ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut delivered_rows: HashMap<i64, Vec<(i64, String, String)>> = HashMap::new();
    for (id, device, kind, state, reason) in &actions {
        match (kind.as_str(), state.as_str()) {
            ("none", "skipped") => {}
            ("lock", "skipped") => assert!(
                reason.as_deref().unwrap_or("").contains("cool-down"),
                "lock {id} skipped for another reason: {reason:?}"
            ),
            ("lock", "sent") | ("enterprise_wipe", "sent") => {}
            ("enterprise_wipe", "dead") => assert!(
                gave_up.contains(id),
                "wipe {id} is dead but was not in flight: {reason:?}"
            ),
            _ => panic!("action {id}: {kind} ended {state} ({reason:?})"),
        }
        if state == "sent" || state == "dead" {
            delivered_rows
                .entry(device.expect("a device"))
                .or_default()
                .push((*id, kind.clone(), state.clone()));
        }
    }
    pool.close().await;
    assert!(gave_up.is_subset(&ids_of(&actions, "enterprise_wipe")));
    assert!(retried.intersection(&gave_up).next().is_none());
    // A wipe is retried only with the note that says it was never sent.
    let pool = open_store(&db).await;
    let wipes_retried: BTreeSet<i64> = ints(
        &pool,
        "SELECT DISTINCT action_id FROM action_audit WHERE note LIKE 'claimed before the last stop but never sent%'",
    )
    .await
    .into_iter()
    .collect();
    pool.close().await;
    let wipes = ids_of(&actions, "enterprise_wipe");
    assert_eq!(
        retried
            .intersection(&wipes)
            .copied()
            .collect::<BTreeSet<_>>(),
        wipes_retried
    );

    // Per device: what the simulator received against what the rows say.
    let mut received: HashMap<(SimKind, String), usize> = HashMap::new();
    for kind in SimKind::ALL {
        for (device, n) in sim_actions_per_device(&env.sim, kind) {
            received.insert((kind, device), n);
        }
    }
    let mut exactly_once = 0;
    let mut twice = 0;
    let mut dead_unsent = 0;
    for t in &targets {
        let got = received
            .remove(&(t.kind, t.mdm_device_id.clone()))
            .unwrap_or(0);
        let rows = delivered_rows.remove(&t.id).unwrap_or_default();
        let expected = wiped.contains(&t.id) || locked.contains(&t.id);
        match rows.as_slice() {
            [] => assert!(
                !expected && got == 0,
                "device {} ({}): no action row, {got} calls at the MDM",
                t.id,
                t.kind
            ),
            [(id, kind, state)] => {
                assert!(
                    expected,
                    "device {} got an action it had no event for",
                    t.id
                );
                let allowed = match (in_flight.contains(id), kind.as_str(), state.as_str()) {
                    (false, _, "sent") => 1..=1,
                    (true, "lock", "sent") => 1..=2,
                    // Retried only because it had not been sent.
                    (true, "enterprise_wipe", "sent") => 1..=1,
                    (true, "enterprise_wipe", "dead") => 0..=1,
                    other => panic!("action {id}: unexpected {other:?}"),
                };
                assert!(
                    allowed.contains(&got),
                    "action {id} ({kind}, {state}, in flight at the kill: {}) reached the {} simulator {got} times",
                    in_flight.contains(id),
                    t.kind
                );
                if state == "dead" && got == 0 {
                    dead_unsent += 1;
                }
                if got == 1 {
                    exactly_once += 1;
                } else if got == 2 {
                    twice += 1;
                }
            }
            more => panic!(
                "device {} has {} delivered actions despite the cool-down: {more:?}",
                t.id,
                more.len()
            ),
        }
    }
    assert!(
        received.is_empty(),
        "calls for devices no event named: {received:?}"
    );
    assert!(delivered_rows.is_empty(), "{delivered_rows:?}");
    println!(
        "crash: wipe at an MDM at the kill: {wipe_mid_call}; {} acked before the kill, {} in flight ({} retried, of them {} wipes never sent; {} wipes dead), {exactly_once} delivered once, {twice} twice, {dead_unsent} dead wipes never reached the MDM",
        acked_before.len(),
        in_flight.len(),
        retried.len(),
        wipes_retried.len(),
        gave_up.len()
    );

    for (what, log) in [("first run", &first_log), ("second run", &second_log)] {
        assert_no_secret(log, &format!("the {what}'s log"), &configured_secrets());
    }
    assert!(
        retried.is_empty()
            || second_log.contains("Retrying an action interrupted by the last stop"),
        "the retry of interrupted locks is logged"
    );
}

/// Whether an enterprise wipe call (SOTI `Unenroll`, AirWatch `EnterpriseWipe`,
/// BCDM `enterprise_wipe`) is at the simulator now: received, not answered.
fn wipe_at_mdm(sim: &mtd_sim::Simulator, kind: SimKind) -> bool {
    sim.state(kind)
        .unwrap()
        .core()
        .requests()
        .iter()
        .rev()
        .take(64)
        .any(|r| {
            let text = format!("{} {}", r.path, r.body).to_lowercase();
            r.status.is_none()
                && r.fault.is_none()
                && ["unenroll", "enterprisewipe", "enterprise_wipe"]
                    .iter()
                    .any(|w| text.contains(w))
        })
}

fn ids_of(actions: &[ActionRow], kind: &str) -> BTreeSet<i64> {
    actions
        .iter()
        .filter(|a| a.2 == kind)
        .map(|a| a.0)
        .collect()
}
