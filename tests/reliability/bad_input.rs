//! Property tests (`proptest`) with input nobody should send.
//!
//! The agent API of a daemon serving on loopback (in process, so hundreds of
//! cases take seconds) gets random bytes, random JSON and valid signed events
//! with one thing broken. It must never answer 5xx nor hang (every request
//! has a 10 s limit), only the contract's answers: 202 (or 200/404 for an
//! activation) for what is still valid, 400 naming the field, 401 with the
//! one refusal body, 413 over 1 MiB. The config loader gets random TOML and
//! mutated valid tenant files: no panic, and every error line is
//! `FILE:LINE:COL: message` for one of the files it was given.
//!
//! Case counts are moderate (CI has 2 cores); `PROPTEST_CASES` raises them.

use crate::api::{self, spawn_app, MdmSpec, Reply, TestApp};
use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const TENANT: &str = "fuzz";
const POLICY: &str = "[policy]\n[[policy.rule]]\nthreat = \"device.*\"\naction = \"lock\"\n";
const ONE_MIB: usize = 1024 * 1024;

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    TestRunner::new(Config {
        cases,
        // Regressions are reported in the failure message, not written into the tree.
        failure_persistence: None,
        ..Config::default()
    })
}

/// A daemon with one SOTI MDM, synced, and a device it knows.
struct Target {
    rt: tokio::runtime::Runtime,
    _env: api::Env,
    app: Option<TestApp>,
    client: reqwest::Client,
    serial: String,
    /// Answers seen, by status: printed at the end, and proof the cases
    /// reached more than the first check.
    seen: std::sync::Mutex<std::collections::BTreeMap<u16, usize>>,
}

impl Target {
    fn start() -> Target {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (env, app, serial) = rt.block_on(async {
            let env = env_without_rate_limits(&[mtd_sim::SimKind::Soti], 5).await;
            let spec = MdmSpec::new(mtd_sim::SimKind::Soti);
            let app =
                spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", POLICY))
                    .await;
            let id = app.mdm_id(TENANT, &spec.name).await;
            app.finished_runs(id, 1, Duration::from_secs(30)).await;
            let serial = targets(&env.db_path()).await.remove(0).serial;
            (env, app, serial)
        });
        Target {
            rt,
            _env: env,
            app: Some(app),
            client: reqwest::Client::new(),
            serial,
            seen: Default::default(),
        }
    }

    /// One request; a hang (no answer in 10 s) or no answer at all fails the case.
    fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Reply, TestCaseError> {
        let addr = self.app.as_ref().unwrap().addr;
        self.rt.block_on(async {
            match tokio::time::timeout(
                Duration::from_secs(10),
                try_post(&self.client, addr, path, headers, body),
            )
            .await
            {
                Err(_) => Err(TestCaseError::fail(format!("{path}: no answer in 10 s"))),
                Ok(Err(e)) => Err(TestCaseError::fail(format!("{path}: {e}"))),
                Ok(Ok(r)) => {
                    *self.seen.lock().unwrap().entry(r.status).or_default() += 1;
                    Ok(r)
                }
            }
        })
    }

    fn post_signed(&self, path: &str, body: Vec<u8>) -> Result<Reply, TestCaseError> {
        self.post(path, &api::agent_headers(TENANT, &body), body)
    }

    fn valid_event(&self, id: &str) -> Value {
        json!({
            "event_id": id,
            "detected_at": "2026-11-22T10:00:00Z",
            "device": {"serial": self.serial},
            "threat": {"type": "device.usb_debugging", "severity": "high", "name": "USB debugging"},
            "network": {"ssid": "CoffeeShop", "bssid": "aa:bb:cc:dd:ee:ff"},
            "details": {"k": "v"}
        })
    }

    /// Stops the daemon, checks the answers included `statuses`, scans the log.
    fn finish(mut self, name: &str, statuses: &[u16]) {
        let seen = self.seen.lock().unwrap().clone();
        println!("{name}: answers by status {seen:?}");
        for s in statuses {
            assert!(seen.contains_key(s), "{name}: no case got {s}: {seen:?}");
        }
        let app = self.app.take().unwrap();
        self.rt.block_on(app.shutdown());
        assert_no_secret(
            &crate::logs::text(),
            "the in-process daemons' log",
            &configured_secrets(),
        );
    }
}

/// The answers the contract allows on the agent API, with their exact bodies.
fn contract_answer(path: &str, body_len: usize, r: &Reply) -> Result<(), TestCaseError> {
    let activate = path.ends_with("/activate");
    let json: Value = serde_json::from_str(&r.text).map_err(|e| {
        TestCaseError::fail(format!(
            "{} with a non-JSON body ({e}): {:?}",
            r.status, r.text
        ))
    })?;
    match r.status {
        202 if !activate => {
            prop_assert!(
                json["accepted"].is_array() && json["duplicates"].is_array(),
                "{}",
                r.text
            )
        }
        200 if activate => prop_assert!(json["device"].is_object(), "{}", r.text),
        404 if activate => prop_assert_eq!(&json, &json!({"error": "device_not_enrolled"})),
        400 => {
            let code = json["error"].as_str().unwrap_or("");
            prop_assert!(
                ["invalid_json", "invalid_field", "too_many_events"].contains(&code),
                "{}",
                r.text
            );
            if code == "invalid_field" {
                prop_assert!(
                    json["field"].as_str().is_some_and(|f| !f.is_empty()),
                    "400 invalid_field must name the field: {}",
                    r.text
                );
            }
        }
        401 => prop_assert_eq!(&json, &json!({"error": "unauthorized"})),
        413 => {
            prop_assert!(body_len > ONE_MIB, "413 for {body_len} bytes");
            prop_assert_eq!(&json, &json!({"error": "payload_too_large"}));
        }
        s => prop_assert!(false, "{path}: {s} is not a contract answer: {}", r.text),
    }
    if body_len > ONE_MIB {
        prop_assert_eq!(r.status, 413);
    }
    Ok(())
}

/// Arbitrary JSON, with the contract's field names over-represented so the
/// parser gets past the first missing field now and then.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "event_id", "detected_at", "device", "threat", "type", "severity", "name",
            "network", "details", "events", "udid", "serial", "imei", "mac", "mdm_device_id",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(vec![
            "high",
            "critical",
            "device.usb_debugging",
            "2026-11-22T10:00:00Z"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[test]
fn bad_input_random_bytes_at_the_agent_api_get_400_or_401_never_5xx() {
    let target = Target::start();
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        // Text that starts like JSON, to get past the first byte.
        "[\\[{\"a-z0-9:, ]{0,200}".prop_map(String::into_bytes),
    ];
    runner(300)
        .run(&strategy, |bytes| {
            for path in ["/v1/agent/events", "/v1/agent/activate"] {
                let r = target.post_signed(path, bytes.clone())?;
                contract_answer(path, bytes.len(), &r)?;
                prop_assert!(
                    [400, 413].contains(&r.status)
                        || serde_json::from_slice::<Value>(&bytes).is_ok(),
                    "{path}: random bytes got {}: {}",
                    r.status,
                    r.text
                );
                // Unsigned: the one refusal, whatever the body.
                let r = target.post(path, &[("X-Mtd-Tenant", TENANT.into())], bytes.clone())?;
                prop_assert_eq!(r.status, 401, "{}", r.text);
                contract_answer(path, bytes.len(), &r)?;
            }
            Ok(())
        })
        .unwrap();
    target.finish("random bytes", &[400, 401]);
}

/// `valid` three times in four, random JSON otherwise.
fn or_random(valid: Value) -> BoxedStrategy<Value> {
    prop_oneof![3 => Just(valid), 1 => arb_json()].boxed()
}

/// An event (and activation) shaped object whose fields are each valid or
/// random, so the cases reach the checks behind the first field.
fn shaped_event() -> impl Strategy<Value = Value> {
    (
        or_random(json!("shaped")),
        or_random(json!("2026-11-22T10:00:00Z")),
        or_random(json!("NO-SUCH-SERIAL")),
        or_random(json!("device.usb_debugging")),
        or_random(json!("high")),
        or_random(json!({"ssid": "CoffeeShop"})),
    )
        .prop_map(|(id, at, serial, threat, severity, network)| {
            json!({
                "event_id": id, "detected_at": at, "device": {"serial": serial},
                "threat": {"type": threat, "severity": severity}, "network": network
            })
        })
}

#[test]
fn bad_input_random_json_at_the_agent_api_gets_only_contract_answers() {
    let target = Target::start();
    let strategy = (prop_oneof![arb_json(), shaped_event()], any::<bool>());
    runner(300)
        .run(&strategy, |(value, as_batch)| {
            let value = if as_batch {
                json!({ "events": [value] })
            } else {
                value
            };
            let body = value.to_string().into_bytes();
            for path in ["/v1/agent/events", "/v1/agent/activate"] {
                let r = target.post_signed(path, body.clone())?;
                contract_answer(path, body.len(), &r)?;
            }
            Ok(())
        })
        .unwrap();
    target.finish("random JSON", &[202, 400, 404]);
}

/// One thing broken in a valid signed event.
#[derive(Debug, Clone)]
enum Mutation {
    Remove(&'static str),
    Retype(&'static str, Value),
    LongString(&'static str, usize),
    Unicode(&'static str, String),
    DetectedAt(String),
    ClockOff(i64),
    SignatureBitFlip(usize),
    BodyBitFlip(usize),
    Tenant(String),
}

const PATHS: &[&str] = &[
    "event_id",
    "detected_at",
    "device",
    "device.serial",
    "threat",
    "threat.type",
    "threat.severity",
    "threat.name",
    "network",
    "details",
];
/// Fields whose absence (or `null`) still makes a valid event.
const OPTIONAL: &[&str] = &["threat.name", "network", "details"];
/// Fields that take any JSON object (anything else is a 400 naming them:
/// they are stored as sent and shown as objects by the admin API).
const FREE_FORM: &[&str] = &["network", "details"];

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let path = prop::sample::select(PATHS.to_vec());
    let wrong = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        Just(json!([])),
        Just(json!({})),
        Just(json!(["x"])),
        Just(json!({"udid": 5})),
    ];
    prop_oneof![
        path.clone().prop_map(Mutation::Remove),
        (path.clone(), wrong).prop_map(|(p, v)| Mutation::Retype(p, v)),
        (
            path.clone(),
            prop::sample::select(vec![129, 5_000, 300_000, ONE_MIB + 10])
        )
            .prop_map(|(p, n)| Mutation::LongString(p, n)),
        (path, any::<String>()).prop_map(|(p, s)| Mutation::Unicode(p, s)),
        prop_oneof![
            any::<String>(),
            prop::sample::select(vec![
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59Z",
                "2026-02-30T10:00:00Z",
                "2026-11-22T10:00:00+14:00",
                "2026-11-22",
                "1e9",
                "",
                "+275760-09-13T00:00:00Z",
                "2026-11-22T10:00:00.123456789123Z",
            ])
            .prop_map(str::to_string),
        ]
        .prop_map(Mutation::DetectedAt),
        prop_oneof![-1_000_000_000i64..-301, 301i64..1_000_000_000, -290i64..290]
            .prop_map(Mutation::ClockOff),
        (0usize..256).prop_map(Mutation::SignatureBitFlip),
        (0usize..4096).prop_map(Mutation::BodyBitFlip),
        "[a-z0-9-]{0,70}".prop_map(Mutation::Tenant),
    ]
}

/// The object holding `path`'s last segment, and that segment.
fn slot<'a>(event: &'a mut Value, path: &str) -> (&'a mut serde_json::Map<String, Value>, String) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap().to_string();
    let mut v = event;
    for p in parts {
        v = &mut v[p];
    }
    (v.as_object_mut().unwrap(), last)
}

#[test]
fn bad_input_mutated_valid_signed_events_get_the_precise_contract_answer() {
    let target = Target::start();
    let n = AtomicUsize::new(0);
    let strategy = (arb_mutation(), any::<bool>());
    runner(400)
        .run(&strategy, |(mutation, as_batch)| {
            let id = format!("m-{}", n.fetch_add(1, Ordering::Relaxed));
            let mut event = target.valid_event(&id);
            let mut timestamp = chrono::Utc::now().timestamp();
            let mut tenant = TENANT.to_string();
            // What the answer must be: a status, and for a 400 the field named.
            let mut want: Option<(u16, Option<String>)> = None;
            let field = |p: &str| {
                if as_batch {
                    format!("events[0].{p}")
                } else {
                    p.to_string()
                }
            };
            match &mutation {
                Mutation::Remove(p) => {
                    let (obj, key) = slot(&mut event, p);
                    obj.remove(&key);
                    want = Some(if OPTIONAL.contains(p) {
                        (202, None)
                    } else if *p == "device.serial" {
                        (400, Some(field("device")))
                    } else {
                        (400, Some(field(p)))
                    });
                }
                Mutation::Retype(p, v) => {
                    let (obj, key) = slot(&mut event, p);
                    obj.insert(key, v.clone());
                    if (FREE_FORM.contains(p) && v.is_object())
                        || (v.is_null() && OPTIONAL.contains(p))
                    {
                        want = Some((202, None));
                    } else if !(*p == "device.serial" && v.is_null()) && *p != "device" {
                        want = Some((400, Some(field(p))));
                    }
                }
                Mutation::LongString(p, len) => {
                    let (obj, key) = slot(&mut event, p);
                    obj.insert(key, Value::String("x".repeat(*len)));
                }
                Mutation::Unicode(p, s) => {
                    let (obj, key) = slot(&mut event, p);
                    obj.insert(key, Value::String(s.clone()));
                }
                Mutation::DetectedAt(s) => {
                    event["detected_at"] = Value::String(s.clone());
                }
                Mutation::ClockOff(secs) => {
                    timestamp += secs;
                    want = Some((if secs.abs() > 300 { 401 } else { 202 }, None));
                }
                Mutation::Tenant(t) => {
                    want = Some((if t == TENANT { 202 } else { 401 }, None));
                    tenant = t.clone();
                }
                Mutation::SignatureBitFlip(_) | Mutation::BodyBitFlip(_) => {
                    want = Some((401, None))
                }
            }
            let value = if as_batch {
                json!({ "events": [event] })
            } else {
                event
            };
            let signed = value.to_string().into_bytes();
            let mut headers =
                api::signed_headers(&tenant, api::AGENT_SECRET.as_bytes(), timestamp, &signed);
            let mut body = signed.clone();
            match &mutation {
                Mutation::SignatureBitFlip(bit) => {
                    // v1=<64 hex digits>: flip one bit of the MAC and re-encode.
                    let mut mac = hex::decode(&headers[2].1[3..]).unwrap();
                    let byte = (bit / 8) % mac.len();
                    mac[byte] ^= 1 << (bit % 8);
                    headers[2].1 = format!("v1={}", hex::encode(mac));
                }
                Mutation::BodyBitFlip(bit) => {
                    let i = (bit / 8) % body.len();
                    body[i] ^= 1 << (bit % 8);
                }
                _ => {}
            }
            let len = body.len();
            let r = target.post("/v1/agent/events", &headers, body)?;
            contract_answer("/v1/agent/events", len, &r)?;
            if len <= ONE_MIB {
                if let Some((status, field)) = want {
                    prop_assert_eq!(r.status, status, "{:?}: {}", mutation, r.text);
                    // A struct replaced by an object may fail on one of its own fields.
                    if let Some(field) = field {
                        let named = r.json()["field"].as_str().unwrap_or("").to_string();
                        prop_assert!(
                            named.starts_with(&field),
                            "{:?}: named {:?}, not {}",
                            mutation,
                            named,
                            field
                        );
                    }
                }
            }
            if r.status == 202 {
                prop_assert_eq!(
                    r.json()["accepted"].as_array().map(Vec::len),
                    Some(1),
                    "{}",
                    r.text
                );
            }
            Ok(())
        })
        .unwrap();
    target.finish("mutated events", &[202, 400, 401, 413]);
}

// ---------------------------------------------------------------- config

/// A main file and one tenant file (`tenant`) in `dir`; returns both paths.
fn write_config(dir: &Path, tenant: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir.join("tenants.d")).unwrap();
    let main = dir.join("connector.toml");
    std::fs::write(
        &main,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data/connector.db\"\n[admin]\ntoken = \"{}\"\n[tenants]\ndir = \"tenants.d\"\n[sync]\nfull_sync_every = \"0\"\n",
            api::ADMIN_TOKEN
        ),
    )
    .unwrap();
    let file = dir.join("tenants.d/acme.toml");
    std::fs::write(&file, tenant).unwrap();
    (main, file)
}

/// A valid tenant file with every kind, every permit and a policy.
fn valid_tenant() -> String {
    use mtd_sim::SimKind;
    let mut t = format!(
        "id = \"acme\"\ndisplay_name = \"Acme Corp\"\nagent_secret = \"{}\"\n",
        api::AGENT_SECRET
    );
    for (kind, extra) in [
        (
            SimKind::Soti,
            "wifi_disconnect_profile_id = \"wifi-off\"\nwifi_profile_removal_minutes = 30\n",
        ),
        (SimKind::Airwatch, "wifi_disconnect_profile_id = \"42\"\n"),
        (SimKind::Bcdm, ""),
    ] {
        t.push_str(&format!(
            "\n[[mdm]]\nname = \"Acme {kind}\"\nkind = \"{kind}\"\nurl = \"https://{kind}.example{}\"\nbackground_sync = true\nmask_pii = false\n{extra}",
            kind.base_path()
        ));
        t.push_str(&api::credentials(kind));
        t.push_str("[mdm.permit]\nlock = true\ndisconnect_wifi = true\nenterprise_wipe = true\nwipe = false\n");
    }
    t.push_str("\n[policy]\nmode = \"enforce\"\naction_cooldown_minutes = 15\nmax_destructive_actions_per_hour = 10\n[[policy.rule]]\nthreat = \"network.*\"\nmin_severity = \"medium\"\naction = \"disconnect_wifi\"\n[[policy.rule]]\nthreat = \"*\"\naction = \"lock\"\n");
    t
}

/// Checks one load: no panic (a panic fails the case), and on error every
/// line is `FILE:LINE:COL: message` for one of the files given, with no secret.
fn check_load(main: &Path, tenant: &Path, errors_seen: &AtomicUsize) -> Result<(), TestCaseError> {
    let Err(errors) = mtd_connector::config::load(main) else {
        return Ok(());
    };
    errors_seen.fetch_add(1, Ordering::Relaxed);
    let text = errors.to_string();
    prop_assert!(!errors.0.is_empty());
    for line in text.lines() {
        let rest = [main, tenant]
            .iter()
            .find_map(|f| line.strip_prefix(&format!("{}:", f.display())));
        let ok = rest.is_some_and(|rest| {
            let mut parts = rest.splitn(3, ':');
            let (l, c, m) = (parts.next(), parts.next(), parts.next());
            let number = |s: Option<&str>| {
                s.is_some_and(|s| {
                    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s != "0"
                })
            };
            number(l) && number(c) && m.is_some_and(|m| m.starts_with(' ') && m.trim().len() > 1)
        });
        prop_assert!(
            ok,
            "not FILE:LINE:COL: message: {:?}\nall errors:\n{}",
            line,
            text
        );
    }
    for secret in configured_secrets() {
        prop_assert!(!text.contains(secret), "an error shows a secret:\n{}", text);
    }
    Ok(())
}

#[test]
fn bad_input_random_toml_at_the_config_loader_never_panics_and_reports_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let toml_ish = prop_oneof![
        // Arbitrary text.
        any::<String>(),
        // Text made of TOML's own punctuation and keywords.
        prop::collection::vec(
            prop::sample::select(vec![
                "[",
                "]",
                "[[",
                "]]",
                "=",
                "\"",
                "'",
                "\"\"\"",
                "\n",
                " ",
                ".",
                ",",
                "{",
                "}",
                "id",
                "mdm",
                "kind",
                "url",
                "policy",
                "rule",
                "true",
                "1",
                "-1",
                "1.5",
                "1979-05-27T07:32:00Z",
                "#",
                "\\",
                "agent_secret",
                "credentials",
                "env",
                "file",
            ]),
            0..80
        )
        .prop_map(|parts| parts.concat()),
    ];
    let strategy = (toml_ish, any::<bool>());
    let errors = AtomicUsize::new(0);
    runner(300)
        .run(&strategy, |(text, in_main)| {
            let (main, tenant) = write_config(dir.path(), &valid_tenant());
            if in_main {
                std::fs::write(&main, &text).unwrap();
            } else {
                std::fs::write(&tenant, &text).unwrap();
            }
            check_load(&main, &tenant, &errors)
        })
        .unwrap();
    println!("random TOML: {} loads failed", errors.into_inner());
}

/// One line-level edit of a valid tenant file.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    TruncateLine(usize, usize),
    InsertChar(usize, char),
    ReplaceValue(usize, String),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    let value = prop::sample::select(vec![
        "1",
        "-5",
        "4294967296",
        "1.5",
        "true",
        "\"\"",
        "\"Bad Id!\"",
        "[]",
        "[1, \"a\"]",
        "{}",
        "{ env = \"MTD_NO_SUCH_VAR\" }",
        "{ file = \"no/such/file\" }",
        "{ env = 5 }",
        "\"wipe\"",
        "\"none\"",
        "\"ftp://x\"",
        "\"airwatch\"",
        "\"network.\"",
        "\"0\"",
        "1979-05-27",
        "\"é∂漢字🙂\"",
        "nan",
        "inf",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<usize>(), 0usize..40).prop_map(|(l, n)| Edit::TruncateLine(l, n)),
        (any::<usize>(), any::<char>()).prop_map(|(l, c)| Edit::InsertChar(l, c)),
        (any::<usize>(), value).prop_map(|(l, v)| Edit::ReplaceValue(l, v)),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len();
    match edit {
        Edit::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Edit::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Edit::SwapLines(a, b) => lines.swap(a % n, b % n),
        Edit::TruncateLine(i, keep) => {
            let l = &mut lines[i % n];
            *l = l.chars().take(*keep).collect();
        }
        Edit::InsertChar(i, c) => {
            let l = &mut lines[i % n];
            let at = l.chars().count() / 2;
            let mut chars: Vec<char> = l.chars().collect();
            chars.insert(at, *c);
            *l = chars.into_iter().collect();
        }
        Edit::ReplaceValue(i, v) => {
            // The next line with a value, from i on.
            if let Some(k) = (0..n)
                .map(|k| (i % n + k) % n)
                .find(|k| lines[*k].contains(" = "))
            {
                let key = lines[k].split(" = ").next().unwrap().to_string();
                lines[k] = format!("{key} = {v}");
            }
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn bad_input_mutated_valid_tenant_files_never_panic_the_loader_and_errors_point_into_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let valid = valid_tenant();
    let (main, tenant) = write_config(dir.path(), &valid);
    mtd_connector::config::load(&main).unwrap_or_else(|e| panic!("the base file is valid:\n{e}"));
    let errors = AtomicUsize::new(0);
    runner(400)
        .run(&prop::collection::vec(arb_edit(), 1..4), |edits| {
            let text = edits.iter().fold(valid.clone(), |t, e| apply(&t, e));
            std::fs::write(&tenant, &text).unwrap();
            check_load(&main, &tenant, &errors)
        })
        .unwrap();
    let errors = errors.into_inner();
    println!("mutated tenant files: {errors} of 400 loads failed");
    assert!(
        (40..400).contains(&errors),
        "the edits should break some files and not others: {errors} of 400 failed"
    );

    // The same through the binary for a few: exit 2 and the same lines on stderr.
    runner(25)
        .run(&prop::collection::vec(arb_edit(), 1..4), |edits| {
            let text = edits.iter().fold(valid.clone(), |t, e| apply(&t, e));
            std::fs::write(&tenant, &text).unwrap();
            let expected = mtd_connector::config::load(&main)
                .err()
                .map(|e| e.to_string());
            let out = std::process::Command::new(bin())
                .args(["check-config", "--config"])
                .arg(&main)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            match expected {
                None => prop_assert!(out.status.success(), "{}", stderr),
                Some(errors) => {
                    prop_assert_eq!(out.status.code(), Some(2), "{}", stderr);
                    for line in errors.lines() {
                        prop_assert!(stderr.contains(line), "missing {:?} in:\n{}", line, stderr);
                    }
                }
            }
            for secret in configured_secrets() {
                prop_assert!(
                    !stderr.contains(secret)
                        && !String::from_utf8_lossy(&out.stdout).contains(secret)
                );
            }
            Ok(())
        })
        .unwrap();
}

/// Found by the mutated-events property (a rare "error sending request" after
/// a 413): the daemon closes the connection after refusing an oversized body
/// it did not read, so a keep-alive client that reuses the connection for its
/// next request fails. A refusal that closes must say so (`Connection: close`).
#[test]
fn bad_input_an_oversized_body_does_not_break_the_clients_next_request() {
    let target = Target::start();
    let big = vec![b'x'; ONE_MIB + 10];
    let mut closes = 0;
    for n in 0..100 {
        let r = target.post_signed("/v1/agent/events", big.clone()).unwrap();
        assert_eq!(r.status, 413, "{}", r.text);
        if r.headers.get("connection").is_some_and(|v| v == "close") {
            closes += 1;
        }
        let body = target
            .valid_event(&format!("after-413-{n}"))
            .to_string()
            .into_bytes();
        let r = target
            .post_signed("/v1/agent/events", body)
            .unwrap_or_else(|e| panic!("request {n} after a 413 failed: {e:?}"));
        assert_eq!(r.status, 202, "{}", r.text);
    }
    assert_eq!(closes, 100, "every 413 says the connection closes");
    target.finish("oversized bodies", &[202, 413]);
}
