//! Issue 7, item 1: the agent API of CONTRACT §3 over HTTP. Every refusal
//! case gives its status and stores nothing; the happy paths of activation
//! and event ingest against the SOTI simulator.

use crate::support::*;
use mtd_sim::{Fault, SimKind};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TENANT: &str = "acme";
const ACTIVATE: &str = "/v1/agent/activate";
const EVENTS: &str = "/v1/agent/events";
const UNAUTHORIZED: &str = r#"{"error":"unauthorized"}"#;
const MIB: usize = 1024 * 1024;

/// An app with one SOTI simulator of 20 devices and no background sync, so
/// the store holds only what the agent API puts there.
async fn start() -> (Env, TestApp) {
    let env = Env::new(&[SimKind::Soti], 20).await;
    let soti = MdmSpec {
        background_sync: false,
        ..MdmSpec::new(SimKind::Soti)
    };
    let app = spawn_app(&env.write_config(TENANT, &[soti], "0", "")).await;
    (env, app)
}

/// The UDID of a seeded iOS device (its SOTI `DeviceId`).
fn ios_udid(env: &Env) -> String {
    env.sim
        .soti()
        .unwrap()
        .devices()
        .into_iter()
        .find(|d| d["Kind"].as_str().unwrap().eq_ignore_ascii_case("ios"))
        .expect("the seed has an iOS device")["DeviceId"]
        .as_str()
        .unwrap()
        .to_string()
}

fn event(id: &str, udid: &str) -> Value {
    json!({
        "event_id": id,
        "detected_at": "2026-11-22T10:00:00Z",
        "device": { "udid": udid },
        "threat": { "type": "network.arp_mitm", "severity": "high", "name": "ARP MITM" },
        "network": { "ssid": "CoffeeShop", "bssid": "aa:bb:cc:dd:ee:ff" },
        "details": {}
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// (threat_events, actions): what a refusal must leave unchanged.
async fn stored(env: &Env) -> (i64, i64) {
    (
        count(env, "SELECT COUNT(*) FROM threat_events").await,
        count(env, "SELECT COUNT(*) FROM actions").await,
    )
}

/// Stores one event first, so "unchanged" is checked against a non-empty store.
async fn start_with_one_event() -> (Env, TestApp, (i64, i64)) {
    let (env, app) = start().await;
    let r = post_signed(
        &app,
        EVENTS,
        TENANT,
        &bytes(&event("seed-1", "UDID-SEED-1")),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let before = stored(&env).await;
    assert_eq!(before.0, 1);
    (env, app, before)
}

async fn assert_unauthorized(env: &Env, before: (i64, i64), r: Reply, case: &str) {
    assert_eq!(r.status, 401, "{case}: {}", r.text);
    assert_eq!(
        r.text, UNAUTHORIZED,
        "{case}: the same body for every refusal"
    );
    assert_eq!(stored(env).await, before, "{case}: nothing stored");
}

async fn assert_invalid_field(env: &Env, before: (i64, i64), r: Reply, field: &str) {
    assert_eq!(r.status, 400, "{field}: {}", r.text);
    let body = r.json();
    assert_eq!(body["error"], "invalid_field", "{body}");
    assert_eq!(body["field"], field, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(stored(env).await, before, "{field}: nothing stored");
}

// ---------------------------------------------------------------- refusals: 401

#[tokio::test]
async fn a_wrong_signature_is_refused_with_401_and_stores_nothing() {
    let (env, app, before) = start_with_one_event().await;
    let body = bytes(&event("e-wrong-sig", "UDID-1"));
    let now = chrono::Utc::now().timestamp();

    let other_key = signed_headers(TENANT, b"not-the-agent-secret", now, &body);
    let r = post_agent(&app, EVENTS, &other_key, body.clone()).await;
    assert_unauthorized(&env, before, r, "another key").await;

    let mut tampered = body.clone();
    let signed_for_original = agent_headers(TENANT, &body);
    tampered[body.len() - 2] = b' ';
    let r = post_agent(&app, EVENTS, &signed_for_original, tampered).await;
    assert_unauthorized(&env, before, r, "a body changed after signing").await;

    let mut headers = agent_headers(TENANT, &body);
    let sig = headers[2].1.trim_start_matches("v1=").to_string();
    for (case, value) in [
        ("no scheme", sig.clone()),
        ("another scheme", format!("v2={sig}")),
        ("not hex", format!("v1={}", "zz".repeat(32))),
        ("truncated", format!("v1={}", &sig[..62])),
        ("empty", "v1=".to_string()),
    ] {
        headers[2].1 = value;
        let r = post_agent(&app, EVENTS, &headers, body.clone()).await;
        assert_unauthorized(&env, before, r, case).await;
    }

    // A signature over another timestamp than the one sent.
    let mut headers = signed_headers(TENANT, AGENT_SECRET.as_bytes(), now - 1, &body);
    headers[1].1 = now.to_string();
    let r = post_agent(&app, EVENTS, &headers, body.clone()).await;
    assert_unauthorized(&env, before, r, "signed for another timestamp").await;

    let r = post_agent(&app, ACTIVATE, &other_key, body).await;
    assert_unauthorized(&env, before, r, "activation with another key").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_timestamp_more_than_300_s_in_the_past_or_the_future_is_refused_with_401() {
    let (env, app, before) = start_with_one_event().await;
    let body = bytes(&event("e-stale", "UDID-1"));
    let now = chrono::Utc::now().timestamp();
    let secret = AGENT_SECRET.as_bytes();
    for (case, ts) in [
        ("past", now - 330),
        ("future", now + 330),
        ("long ago", now - 86_400),
        ("epoch", 0),
    ] {
        let headers = signed_headers(TENANT, secret, ts, &body);
        let r = post_agent(&app, EVENTS, &headers, body.clone()).await;
        assert_unauthorized(&env, before, r, case).await;
    }
    // Correctly signed, but not unix seconds as digits.
    let mut headers = agent_headers(TENANT, &body);
    for ts in ["soon", "", "-5", "1e9"] {
        headers[1].1 = ts.to_string();
        let r = post_agent(&app, EVENTS, &headers, body.clone()).await;
        assert_unauthorized(&env, before, r, ts).await;
    }

    // Inside the window either way, a signed request is accepted.
    for (id, ts) in [("e-late", now - 240), ("e-early", now + 240)] {
        let body = bytes(&event(id, "UDID-1"));
        let headers = signed_headers(TENANT, secret, ts, &body);
        let r = post_agent(&app, EVENTS, &headers, body).await;
        assert_eq!(r.status, 202, "{id}: {}", r.text);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn an_unknown_tenant_is_refused_with_the_same_401() {
    let (env, app, before) = start_with_one_event().await;
    let body = bytes(&event("e-unknown-tenant", "UDID-1"));
    for tenant in ["globex", "ACME", "acme-other", ""] {
        let r = post_agent(&app, EVENTS, &agent_headers(tenant, &body), body.clone()).await;
        assert_unauthorized(&env, before, r, &format!("tenant {tenant:?}")).await;
    }
    let r = post_signed(
        &app,
        ACTIVATE,
        "globex",
        &bytes(&json!({"device": {"udid": "X"}})),
    )
    .await;
    assert_unauthorized(&env, before, r, "activation for an unknown tenant").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_request_missing_any_signature_header_is_refused_with_the_same_401() {
    let (env, app, before) = start_with_one_event().await;
    let body = bytes(&event("e-missing-header", "UDID-1"));
    let all = agent_headers(TENANT, &body);
    for missing in 0..all.len() {
        let mut headers = all.clone();
        let (name, _) = headers.remove(missing);
        let r = post_agent(&app, EVENTS, &headers, body.clone()).await;
        assert_unauthorized(&env, before, r, &format!("without {name}")).await;
    }
    let r = post_agent(&app, EVENTS, &[], body.clone()).await;
    assert_unauthorized(&env, before, r, "no headers at all").await;
    let r = post_agent(&app, ACTIVATE, &[], body).await;
    assert_unauthorized(&env, before, r, "activation without headers").await;
    app.shutdown().await;
}

#[tokio::test]
async fn refusals_log_their_reason_and_tenant_but_never_the_secret_or_the_signature() {
    let (_env, app, _) = start_with_one_event().await;
    let body = bytes(&event("e-logged", "UDID-1"));
    let now = chrono::Utc::now().timestamp();
    let stale = signed_headers(TENANT, AGENT_SECRET.as_bytes(), now - 1000, &body);
    let r = post_agent(&app, EVENTS, &stale, body.clone()).await;
    assert_eq!(r.status, 401);
    let wrong = signed_headers(TENANT, b"wrong-key", now, &body);
    let r = post_agent(&app, EVENTS, &wrong, body.clone()).await;
    assert_eq!(r.status, 401);
    let good = agent_headers(TENANT, &body);
    assert_eq!(post_agent(&app, EVENTS, &good, body).await.status, 202);

    let logs = crate::logs::text();
    assert!(
        logs.contains("Agent request refused"),
        "refusals are logged"
    );
    assert!(logs.contains("timestamp outside the 300 s window"));
    assert!(logs.contains("signature does not match"));
    assert!(
        !logs.contains(AGENT_SECRET),
        "the agent secret is never logged"
    );
    for headers in [&stale, &wrong, &good] {
        let hex = headers[2].1.trim_start_matches("v1=");
        assert!(!logs.contains(hex), "a signature is never logged");
    }
    app.shutdown().await;
}

// ---------------------------------------------------------------- refusals: 413

#[tokio::test]
async fn a_body_of_one_mib_plus_one_byte_gets_413_even_when_correctly_signed() {
    let (env, app, before) = start_with_one_event().await;
    let body = vec![b' '; MIB + 1];
    for path in [EVENTS, ACTIVATE] {
        let r = post_signed(&app, path, TENANT, &body).await;
        assert_eq!(r.status, 413, "{path}: {}", r.text);
        assert_eq!(r.json(), json!({"error": "payload_too_large"}));
    }
    // Unsigned too: the size is checked before the signature.
    let r = post_agent(&app, EVENTS, &[], body).await;
    assert_eq!(r.status, 413);
    assert_eq!(stored(&env).await, before);
    app.shutdown().await;
}

#[tokio::test]
async fn a_chunked_body_over_one_mib_without_content_length_gets_413() {
    let (env, app, before) = start_with_one_event().await;
    let body = vec![b' '; MIB + 1];
    let headers = agent_headers(TENANT, &body);
    let (status, text) = post_chunked(&app, EVENTS, &headers, &body).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.ends_with(r#"{"error":"payload_too_large"}"#), "{text}");
    assert_eq!(stored(&env).await, before);

    // The same way, a body under the limit goes through.
    let body = bytes(&event("e-chunked", "UDID-1"));
    let headers = agent_headers(TENANT, &body);
    let (status, text) = post_chunked(&app, EVENTS, &headers, &body).await;
    assert_eq!(status, 202, "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_of_exactly_one_mib_is_accepted() {
    let (env, app, before) = start_with_one_event().await;
    let mut body = bytes(&event("e-one-mib", "UDID-1"));
    body.resize(MIB, b' ');
    let r = post_signed(&app, EVENTS, TENANT, &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(stored(&env).await.0, before.0 + 1);
    app.shutdown().await;
}

/// POSTs with `Transfer-Encoding: chunked` over a raw connection (no
/// `Content-Length`), and returns the status and the raw answer.
async fn post_chunked(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
        app.addr
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let body = body.to_vec();
    // Writes on its own task: the server may answer before it has read
    // everything, and then stops reading; a failed write is expected then.
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(64 * 1024) {
            write
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            write.write_all(chunk).await?;
            write.write_all(b"\r\n").await?;
        }
        write.write_all(b"0\r\n\r\n").await?;
        write.flush().await?;
        // Handed back, not dropped: dropping it would half-close the
        // connection, and the server takes that as the client leaving.
        Ok::<_, std::io::Error>(write)
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let next = tokio::time::timeout_at(deadline, read.read(&mut buf));
        match next
            .await
            .expect("the server answers and closes within 30 s")
        {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // A reset after the answer arrived: keep what was read.
            Err(_) if !answer.is_empty() => break,
            Err(e) => panic!("no answer: {e}"),
        }
    }
    drop(writer.await);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

// ---------------------------------------------------------------- refusals: 400

#[tokio::test]
async fn unparseable_json_gets_400_invalid_json() {
    let (env, app, before) = start_with_one_event().await;
    for (path, body) in [
        (EVENTS, &br#"{"event_id": "e1", "#[..]),
        (EVENTS, b"not json"),
        (EVENTS, b""),
        (EVENTS, b"[1, 2]"),
        (ACTIVATE, br#"{"device": {"udid": "X"}"#),
    ] {
        let r = post_signed(&app, path, TENANT, body).await;
        assert_eq!(r.status, 400, "{path} {body:?}: {}", r.text);
        let json = r.json();
        assert_eq!(json["error"], "invalid_json", "{json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(stored(&env).await, before);
    app.shutdown().await;
}

#[tokio::test]
async fn a_missing_threat_gets_400_naming_threat() {
    let (env, app, before) = start_with_one_event().await;
    let mut e = event("e-no-threat", "UDID-1");
    e.as_object_mut().unwrap().remove("threat");
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&e)).await;
    assert_invalid_field(&env, before, r, "threat").await;

    let mut e = event("e-no-severity", "UDID-1");
    e["threat"].as_object_mut().unwrap().remove("severity");
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&e)).await;
    assert_invalid_field(&env, before, r, "threat.severity").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_wrongly_typed_detected_at_gets_400_naming_detected_at() {
    let (env, app, before) = start_with_one_event().await;
    for value in [json!(1_700_000_000), json!("yesterday"), json!(null)] {
        let mut e = event("e-bad-time", "UDID-1");
        e["detected_at"] = value;
        let r = post_signed(&app, EVENTS, TENANT, &bytes(&e)).await;
        assert_invalid_field(&env, before, r, "detected_at").await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_bad_severity_gets_400_naming_threat_severity() {
    let (env, app, before) = start_with_one_event().await;
    for value in [json!("extreme"), json!("HIGH"), json!(3)] {
        let mut e = event("e-bad-severity", "UDID-1");
        e["threat"]["severity"] = value;
        let r = post_signed(&app, EVENTS, TENANT, &bytes(&e)).await;
        assert_invalid_field(&env, before, r, "threat.severity").await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_bad_threat_type_gets_400_naming_threat_type() {
    let (env, app, before) = start_with_one_event().await;
    for value in [json!("ARP MITM"), json!("network"), json!(""), json!(7)] {
        let mut e = event("e-bad-type", "UDID-1");
        e["threat"]["type"] = value;
        let r = post_signed(&app, EVENTS, TENANT, &bytes(&e)).await;
        assert_invalid_field(&env, before, r, "threat.type").await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_device_without_identifiers_gets_400_naming_device() {
    let (env, app, before) = start_with_one_event().await;
    let mdm_requests = env.sim.soti().unwrap().core().requests().len();
    let mut e = event("e-no-ids", "UDID-1");
    e["device"] = json!({});
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&e)).await;
    assert_invalid_field(&env, before, r, "device").await;

    e["device"] = json!({"udid": 42});
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&e)).await;
    assert_invalid_field(&env, before, r, "device.udid").await;

    let activation = json!({"device": {}, "platform": "ios"});
    let r = post_signed(&app, ACTIVATE, TENANT, &bytes(&activation)).await;
    assert_invalid_field(&env, before, r, "device").await;
    let r = post_signed(&app, ACTIVATE, TENANT, &bytes(&json!({"platform": "ios"}))).await;
    assert_invalid_field(&env, before, r, "device").await;
    assert_eq!(
        count(&env, "SELECT COUNT(*) FROM devices").await,
        0,
        "no lookup stored a device"
    );
    assert_eq!(
        env.sim.soti().unwrap().core().requests().len(),
        mdm_requests,
        "no MDM was asked"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_bad_event_inside_a_batch_gets_400_naming_its_index_and_stores_none_of_the_batch() {
    let (env, app, before) = start_with_one_event().await;
    let good = event("e-batch-good", "UDID-1");

    let mut bad = event("e-batch-bad", "UDID-1");
    bad["threat"]["severity"] = json!("extreme");
    let batch = json!({"events": [good, bad, event("e-batch-3", "UDID-1")]});
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&batch)).await;
    assert_invalid_field(&env, before, r, "events[1].threat.severity").await;

    let mut bad = event("e-batch-bad", "UDID-1");
    bad.as_object_mut().unwrap().remove("detected_at");
    let batch = json!({"events": [good, bad]});
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&batch)).await;
    assert_invalid_field(&env, before, r, "events[1].detected_at").await;

    let mut bad = event("e-batch-bad", "UDID-1");
    bad["threat"]["type"] = json!("nonsense");
    let batch = json!({"events": [good, bad]});
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&batch)).await;
    assert_invalid_field(&env, before, r, "events[1].threat.type").await;

    let r = post_signed(&app, EVENTS, TENANT, &bytes(&json!({"events": good}))).await;
    assert_invalid_field(&env, before, r, "events").await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_empty_batch_gets_400_naming_events() {
    let (env, app, before) = start_with_one_event().await;
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&json!({"events": []}))).await;
    assert_invalid_field(&env, before, r, "events").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_501_events_gets_400_too_many_events_and_500_are_accepted() {
    let (env, app, before) = start_with_one_event().await;
    let events: Vec<Value> = (0..501)
        .map(|i| event(&format!("e-many-{i}"), "UDID-1"))
        .collect();
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&json!({ "events": events }))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json(), json!({"error": "too_many_events"}));
    assert_eq!(stored(&env).await, before);

    let r = post_signed(
        &app,
        EVENTS,
        TENANT,
        &bytes(&json!({"events": &events[..500]})),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["accepted"].as_array().unwrap().len(), 500);
    assert_eq!(stored(&env).await.0, before.0 + 500);
    app.shutdown().await;
}

// ---------------------------------------------------------------- happy paths

#[tokio::test]
async fn a_single_event_is_accepted_with_202_and_a_repeat_is_a_duplicate_that_changes_nothing() {
    let (env, app) = start().await;
    let udid = ios_udid(&env);
    let body = bytes(&event("8b2e0c5e-0001", &udid));

    let r = post_signed(&app, EVENTS, TENANT, &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"accepted": ["8b2e0c5e-0001"], "duplicates": []})
    );
    let after_first = stored(&env).await;
    assert_eq!(after_first.0, 1);
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) FROM threat_events WHERE device_id IS NOT NULL"
        )
        .await,
        1,
        "the unknown device was looked up on demand and linked"
    );

    // The same event again, freshly signed: reported, not stored again.
    let r = post_signed(&app, EVENTS, TENANT, &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"accepted": [], "duplicates": ["8b2e0c5e-0001"]})
    );
    assert_eq!(stored(&env).await, after_first, "a repeat changes nothing");
    app.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_three_is_accepted_in_order() {
    let (env, app) = start().await;
    let udid = ios_udid(&env);
    let ids = ["batch-a", "batch-b", "batch-c"];
    let batch = json!({"events": ids.iter().map(|id| event(id, &udid)).collect::<Vec<_>>()});
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&batch)).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json(), json!({"accepted": ids, "duplicates": []}));
    assert_eq!(stored(&env).await.0, 3);

    // A batch mixing a stored id with a new one.
    let batch = json!({"events": [event("batch-b", &udid), event("batch-d", &udid)]});
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&batch)).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"accepted": ["batch-d"], "duplicates": ["batch-b"]})
    );
    assert_eq!(stored(&env).await.0, 4);
    app.shutdown().await;
}

#[tokio::test]
async fn a_repeated_event_id_inside_one_batch_reports_the_later_one_as_a_duplicate() {
    let (env, app) = start().await;
    let udid = ios_udid(&env);
    let mut later = event("twice", &udid);
    later["threat"]["severity"] = json!("low");
    let batch = json!({"events": [event("twice", &udid), event("once", &udid), later]});
    let r = post_signed(&app, EVENTS, TENANT, &bytes(&batch)).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"accepted": ["twice", "once"], "duplicates": ["twice"]})
    );
    assert_eq!(stored(&env).await.0, 2);
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) FROM threat_events WHERE event_id = 'twice' AND severity = 'high'"
        )
        .await,
        1,
        "the first occurrence is the one kept"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn activating_a_device_the_mdm_knows_answers_200_with_the_stored_device() {
    let (env, app) = start().await;
    let udid = ios_udid(&env);
    let body = json!({
        "device": { "udid": udid.to_lowercase() },
        "platform": "ios", "agent_version": "4.8.0",
        "tracking_id_1": "t1", "tracking_id_2": "t2"
    });
    let r = post_signed(&app, ACTIVATE, TENANT, &bytes(&body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let device = &r.json()["device"];
    assert_eq!(device["mdm_device_id"], udid.as_str(), "{device}");
    assert_eq!(
        device["identifiers"]["udid"],
        udid.to_uppercase(),
        "{device}"
    );
    assert_eq!(device["tenant_id"], TENANT);
    assert!(device["id"].is_i64(), "{device}");
    assert_eq!(count(&env, "SELECT COUNT(*) FROM devices").await, 1);

    // A second activation is served from the store.
    let requests = env.sim.soti().unwrap().core().requests().len();
    let r = post_signed(&app, ACTIVATE, TENANT, &bytes(&body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["device"]["id"], device["id"]);
    assert_eq!(env.sim.soti().unwrap().core().requests().len(), requests);
    app.shutdown().await;
}

#[tokio::test]
async fn activating_a_device_no_mdm_knows_answers_404_device_not_enrolled() {
    let (env, app) = start().await;
    let body = json!({"device": {"udid": "00008030-FFFFFFFFFFFFFFFF"}, "platform": "ios"});
    let r = post_signed(&app, ACTIVATE, TENANT, &bytes(&body)).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.json(), json!({"error": "device_not_enrolled"}));
    assert_eq!(count(&env, "SELECT COUNT(*) FROM devices").await, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn activating_while_the_mdm_answers_503_gives_503_with_retry_after() {
    let (env, app) = start().await;
    let udid = ios_udid(&env);
    env.sim
        .soti()
        .unwrap()
        .core()
        .inject(Fault::status(503).times(10))
        .unwrap();
    let body = json!({"device": {"udid": udid}});
    let r = post_signed(&app, ACTIVATE, TENANT, &bytes(&body)).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json(), json!({"error": "mdm_unavailable"}));
    let retry_after: u64 = r
        .headers
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    assert_eq!(count(&env, "SELECT COUNT(*) FROM devices").await, 0);

    // Once the MDM is back, the same request succeeds.
    env.sim.soti().unwrap().core().clear_faults();
    let r = post_signed(&app, ACTIVATE, TENANT, &bytes(&body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.shutdown().await;
}
