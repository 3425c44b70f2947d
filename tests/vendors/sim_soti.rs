//! The SOTI simulator over loopback, driven by a raw HTTP client: what an
//! adapter would see. Every test binds port 0 and never waits for the server
//! by sleeping (`Simulator::start` returns once the socket is bound).

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use mtd_sim::{Fault, SimKind, SimOptions, Simulator};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const CLIENT_ID: &str = "mtd-sim";
const CLIENT_SECRET: &str = "sim-secret";
const USERNAME: &str = "mtd-api";
const PASSWORD: &str = "sim-password";

struct TestSim {
    sim: Simulator,
    http: Client,
    base: String,
    control: String,
}

async fn spawn(devices: usize, seed: u64) -> TestSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(
        listener,
        SimOptions::new(vec![SimKind::Soti], devices, seed),
    )
    .unwrap();
    let base = sim.base_url(SimKind::Soti);
    let control = sim.control_url(SimKind::Soti);
    assert_eq!(base, format!("http://{}/MobiControl", sim.local_addr()));
    TestSim {
        sim,
        http: Client::new(),
        base,
        control,
    }
}

impl TestSim {
    async fn token_response(&self, client: (&str, &str), user: (&str, &str)) -> reqwest::Response {
        self.http
            .post(format!("{}/api/token", self.base))
            .basic_auth(client.0, Some(client.1))
            .form(&[
                ("grant_type", "password"),
                ("username", user.0),
                ("password", user.1),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn token(&self) -> String {
        let response = self
            .token_response((CLIENT_ID, CLIENT_SECRET), (USERNAME, PASSWORD))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn get(&self, token: &str, path_and_query: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{}", self.base, path_and_query))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, token: &str, path_and_query: &str) -> Value {
        let response = self.get(token, path_and_query).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path_and_query}");
        response.json().await.unwrap()
    }

    async fn post_json(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn control_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{}", self.control, path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn list_all(&self, token: &str, take: usize) -> (Vec<Value>, Vec<usize>) {
        let mut devices = Vec::new();
        let mut pages = Vec::new();
        loop {
            let page = self
                .get_json(
                    token,
                    &format!("/api/devices?skip={}&take={take}", devices.len()),
                )
                .await;
            let page = page.as_array().expect("a bare JSON array").clone();
            pages.push(page.len());
            let short = page.len() < take;
            devices.extend(page);
            if short {
                return (devices, pages);
            }
        }
    }
}

/// SOTI's double URL encoding of a query value.
fn double_encode(value: &str) -> String {
    let once: String = url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    once.replace('%', "%25")
}

fn spec_facts() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sim/soti-spec-facts.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn assert_soti_400(body: &Value) {
    assert_eq!(body["ErrorCode"], 0, "{body}");
    assert!(
        body["ErrorMessage"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["Data"].is_array(), "{body}");
    assert!(body.get("HelpLink").is_some(), "{body}");
}

#[tokio::test]
async fn a_token_is_issued_for_the_right_client_and_user() {
    let t = spawn(10, 1).await;
    let response = t
        .token_response((CLIENT_ID, CLIENT_SECRET), (USERNAME, PASSWORD))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.len() >= 32);
    assert_eq!(t.get(token, "/api/devices").await.status(), StatusCode::OK);
    // The lower-case base path of the spec works too.
    let lower = t.base.replace("/MobiControl", "/mobicontrol");
    let response = t
        .http
        .get(format!("{lower}/api/devices?take=1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_client_gets_401_and_a_wrong_user_or_password_gets_400_invalid_grant() {
    let t = spawn(10, 1).await;
    let response = t
        .token_response((CLIENT_ID, "wrong"), (USERNAME, PASSWORD))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = t
        .token_response(("someone-else", CLIENT_SECRET), (USERNAME, PASSWORD))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = t
        .http
        .post(format!("{}/api/token", t.base))
        .form(&[
            ("grant_type", "password"),
            ("username", USERNAME),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "no Basic header at all"
    );
    for user in [(USERNAME, "wrong"), ("admin", PASSWORD)] {
        let response = t.token_response((CLIENT_ID, CLIENT_SECRET), user).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
    }
    t.sim.shutdown().await;
}

#[tokio::test]
async fn api_calls_without_a_token_or_after_tokens_expire_get_401_with_soti_error_json() {
    let t = spawn(10, 1).await;
    let response = t
        .http
        .get(format!("{}/api/devices", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert!(body["ErrorMessage"].is_string());
    assert_eq!(
        t.get("made-up", "/api/devices").await.status(),
        StatusCode::UNAUTHORIZED
    );

    let token = t.token().await;
    assert_eq!(t.get(&token, "/api/devices").await.status(), StatusCode::OK);
    let response = t.control_post("/tokens/expire", json!({})).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        t.get(&token, "/api/devices").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A fresh token works; expiring in-process does the same as over HTTP.
    let token = t.token().await;
    assert_eq!(t.get(&token, "/api/devices").await.status(), StatusCode::OK);
    t.sim.soti().unwrap().expire_tokens();
    assert_eq!(
        t.get(&token, "/api/devices/search").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A lifetime of 0 issues tokens that are already expired.
    let response = t
        .http
        .put(format!("{}/tokens/lifetime", t.control))
        .json(&json!({"seconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let token = t.token().await;
    assert_eq!(
        t.get(&token, "/api/devices").await.status(),
        StatusCode::UNAUTHORIZED
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn paging_ten_thousand_devices_with_take_1000_returns_every_seeded_device_exactly_once() {
    let t = spawn(10_000, 42).await;
    let token = t.token().await;
    let started = Instant::now();
    let (devices, pages) = t.list_all(&token, 1000).await;
    // An exact multiple of `take`: ten full pages, then an empty one ends it.
    assert_eq!(pages, [vec![1000; 10], vec![0]].concat());
    let ids: Vec<&str> = devices
        .iter()
        .map(|d| d["DeviceId"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 10_000);
    let seeded = t.sim.soti().unwrap().devices();
    assert_eq!(devices, seeded, "the listing is the seeded set, in order");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );

    // Not a multiple: the last page is the first one shorter than `take`.
    let (_, pages) = t.list_all(&token, 3000).await;
    assert_eq!(pages, vec![3000, 3000, 3000, 1000]);
    // Past the end: an empty array, not an error.
    let page = t.get_json(&token, "/api/devices?skip=10000&take=50").await;
    assert_eq!(page, json!([]));
    // Without take: everything after skip.
    let page = t.get_json(&token, "/api/devices?skip=9990").await;
    assert_eq!(page.as_array().unwrap().len(), 10);
    // A negative or non-numeric take is a contract error.
    for bad in ["take=-1", "skip=abc"] {
        let response = t.get(&token, &format!("/api/devices?{bad}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_soti_400(&response.json().await.unwrap());
    }
    t.sim.shutdown().await;
}

#[tokio::test]
async fn devices_are_found_by_id_by_mac_in_both_formats_and_by_imei() {
    let t = spawn(300, 9).await;
    let token = t.token().await;
    let devices = t.sim.soti().unwrap().devices();
    let colon = devices
        .iter()
        .find(|d| d["MACAddress"].as_str().unwrap().contains(':'))
        .unwrap();
    let plain = devices
        .iter()
        .find(|d| !d["MACAddress"].as_str().unwrap().contains(':'))
        .unwrap();
    for device in [colon, plain] {
        let id = device["DeviceId"].as_str().unwrap();
        assert_eq!(
            &t.get_json(&token, &format!("/api/devices/{id}")).await,
            device
        );
        let mac = device["MACAddress"].as_str().unwrap();
        let hex: String = mac.chars().filter(|c| *c != ':').collect();
        let with_colons: Vec<String> = hex
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        for form in [
            hex.to_uppercase(),
            hex.to_lowercase(),
            with_colons.join(":").to_lowercase(),
            with_colons.join(":").to_uppercase(),
        ] {
            assert_eq!(
                &t.get_json(&token, &format!("/api/devices/mac:{form}"))
                    .await,
                device,
                "mac:{form}"
            );
        }
    }
    let android = devices.iter().find(|d| d["Kind"] == "AndroidPlus").unwrap();
    let imei = android["IMEI_MEID_ESN"].as_str().unwrap();
    assert_eq!(
        &t.get_json(&token, &format!("/api/devices/imei_meid_esn:{imei}"))
            .await,
        android
    );
    let iphone = devices
        .iter()
        .find(|d| {
            d["Kind"].as_str().unwrap().eq_ignore_ascii_case("ios") && d["IMEI_MEID_ESN"] != ""
        })
        .unwrap();
    let imei = iphone["IMEI_MEID_ESN"].as_str().unwrap();
    assert_eq!(
        &t.get_json(&token, &format!("/api/devices/imei_meid_esn:{imei}"))
            .await,
        iphone
    );

    for missing in [
        "0000000000000000000000000000000000000000",
        "mac:00:00:00:00:00:00",
        "imei_meid_esn:000000000000000",
    ] {
        let response = t.get(&token, &format!("/api/devices/{missing}")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        let body: Value = response.json().await.unwrap();
        assert!(body["ErrorMessage"].as_str().unwrap().contains("not found"));
    }
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_double_encoded_serial_filter_finds_exactly_that_device() {
    let t = spawn(300, 9).await;
    let token = t.token().await;
    let devices = t.sim.soti().unwrap().devices();
    let ios = devices
        .iter()
        .find(|d| d.get("ManufacturerSerialNumber").is_some())
        .unwrap();
    let android = devices
        .iter()
        .find(|d| d.get("HardwareSerialNumber").is_some())
        .unwrap();
    for (device, field) in [
        (ios, "ManufacturerSerialNumber"),
        (android, "HardwareSerialNumber"),
    ] {
        let serial = device[field].as_str().unwrap();
        let filter = double_encode(&format!("{field}='{serial}'"));
        assert!(filter.contains("%253D%2527"), "{filter}");
        let found = t
            .get_json(
                &token,
                &format!("/api/devices/search?filter={filter}&skip=0&take=10"),
            )
            .await;
        assert_eq!(found, json!([device]));
    }
    // The iOS serial under the Android field matches nothing.
    let serial = ios["ManufacturerSerialNumber"].as_str().unwrap();
    let filter = double_encode(&format!("HardwareSerialNumber='{serial}'"));
    assert_eq!(
        t.get_json(&token, &format!("/api/devices/search?filter={filter}"))
            .await,
        json!([])
    );
    // The spec's own example.
    let found = t
        .get_json(
            &token,
            "/api/devices/search?filter=Manufacturer%253D%2527Apple%2527",
        )
        .await;
    assert!(found
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["Manufacturer"] == "Apple"));
    assert!(!found.as_array().unwrap().is_empty());
    // A broken expression is a contract error.
    let response = t
        .get(
            &token,
            &format!(
                "/api/devices/search?filter={}",
                double_encode("Manufacturer='Apple")
            ),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_soti_400(&response.json().await.unwrap());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn group_paths_are_double_encoded_and_subgroups_are_opt_in() {
    let t = spawn(500, 3).await;
    let token = t.token().await;
    let devices = t.sim.soti().unwrap().devices();
    let in_path = |p: &str| devices.iter().filter(|d| d["Path"] == p).count();
    let berlin = r"\\Acme\Engineering\Berlin";
    let found = t
        .get_json(
            &token,
            &format!(
                "/api/devices/search?groupPath={}&take=1000",
                double_encode(berlin)
            ),
        )
        .await;
    assert_eq!(found.as_array().unwrap().len(), in_path(berlin));
    assert!(in_path(berlin) > 0);
    let engineering = double_encode(r"\\Acme\Engineering");
    assert_eq!(engineering, "%255C%255CAcme%255CEngineering");
    let direct = t
        .get_json(
            &token,
            &format!("/api/devices/search?groupPath={engineering}&take=1000"),
        )
        .await;
    assert_eq!(direct, json!([]));
    let all = t
        .get_json(
            &token,
            &format!("/api/devices/search?groupPath={engineering}&includeSubgroups=true&take=1000"),
        )
        .await;
    assert_eq!(
        all.as_array().unwrap().len(),
        in_path(berlin) + in_path(r"\\Acme\Engineering\Toronto")
    );
    let spaced = double_encode(r"\\Acme\Sales\Retail Stores");
    assert!(spaced.contains("%2520"));
    let retail = t
        .get_json(
            &token,
            &format!("/api/devices/search?groupPath={spaced}&take=1000"),
        )
        .await;
    assert_eq!(
        retail.as_array().unwrap().len(),
        in_path(r"\\Acme\Sales\Retail Stores")
    );

    let groups = t.get_json(&token, "/api/devicegroups").await;
    let groups = groups.as_array().unwrap();
    let facts = spec_facts();
    for g in groups {
        for field in facts["device_group_required"].as_array().unwrap() {
            assert!(
                g.get(field.as_str().unwrap()).is_some(),
                "{g} lacks {field}"
            );
        }
    }
    let paths: Vec<&str> = groups.iter().map(|g| g["Path"].as_str().unwrap()).collect();
    assert!(paths.contains(&r"\\Acme"));
    assert!(paths.contains(&berlin));
    let children = t
        .get_json(
            &token,
            &format!("/api/devicegroups?parentPath={engineering}"),
        )
        .await;
    let names: Vec<&str> = children
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Berlin", "Toronto"]);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn action_bodies_are_accepted_or_rejected_per_the_specs_required_fields() {
    let t = spawn(20, 5).await;
    let token = t.token().await;
    let state = t.sim.soti().unwrap();
    let device = state.devices()[0].clone();
    let id = device["DeviceId"].as_str().unwrap();
    let facts = spec_facts();
    let path = format!("/api/devices/{id}/actions");

    for (name, action) in facts["actions"].as_object().unwrap() {
        let example = &action["example"];
        let response = t.post_json(&token, &path, example).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{name}");
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "204 has no body"
        );
        for required in action["required"].as_array().unwrap() {
            let mut body = example.clone();
            body.as_object_mut()
                .unwrap()
                .remove(required.as_str().unwrap());
            let response = t.post_json(&token, &path, &body).await;
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{name} without {required}"
            );
            let error: Value = response.json().await.unwrap();
            assert_soti_400(&error);
            assert!(
                error["Data"].as_array().unwrap().contains(required),
                "{error}"
            );
        }
    }
    // What public clients often send, and misspellings, are refused.
    for body in [
        json!({"Action": "Lock"}),
        json!({"Action": "lock", "AutogenerateNewPasscode": false}),
        json!({"Action": "EnterpriseWipe"}),
        json!({"Action": "Lock", "AutogenerateNewPasscode": "false"}),
    ] {
        let response = t.post_json(&token, &path, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let response = t
        .http
        .post(format!("{}{path}", t.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Actions are addressed by mac: and imei_meid_esn: too, and recorded.
    let mac = device["MACAddress"].as_str().unwrap();
    let lock = &facts["actions"]["Lock"]["example"];
    let response = t
        .post_json(&token, &format!("/api/devices/mac:{mac}/actions"), lock)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let unknown = t.post_json(&token, "/api/devices/nope/actions", lock).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let actions = state.core().actions();
    let accepted: Vec<&str> = actions
        .iter()
        .filter(|a| a.status == 204)
        .map(|a| a.action.as_str())
        .collect();
    let mut expected: Vec<&str> = facts["actions"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    expected.push("Lock");
    assert_eq!(accepted, expected);
    let last_ok = actions.iter().rev().find(|a| a.status == 204).unwrap();
    assert_eq!(last_ok.device_ref, format!("mac:{mac}"));
    assert_eq!(last_ok.device_id.as_deref(), Some(id));
    assert_eq!(&last_ok.body, lock);
    assert_eq!(actions.last().unwrap().status, 404);

    // The same records over the control API.
    let over_http: Value = t
        .http
        .get(format!("{}/actions", t.control))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http.as_array().unwrap().len(), actions.len());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn profile_install_and_revoke_are_answered_204_and_recorded() {
    let t = spawn(5, 5).await;
    let token = t.token().await;
    let state = t.sim.soti().unwrap();
    let id = state.devices()[1]["DeviceId"].as_str().unwrap().to_owned();
    let path = format!("/api/devices/{id}/profiles/wifi-off-7/actions");
    for body in ["Install", "Revoke"] {
        let response = t.post_json(&token, &path, &json!(body)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{body}");
    }
    for bad in [json!("Uninstall"), json!({"Action": "Install"})] {
        let response = t.post_json(&token, &path, &bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    let actions = state.core().actions();
    let ok: Vec<(&str, Option<&str>, &Value)> = actions
        .iter()
        .filter(|a| a.status == 204)
        .map(|a| (a.action.as_str(), a.profile_id.as_deref(), &a.body))
        .collect();
    assert_eq!(
        ok,
        vec![
            ("Install", Some("wifi-off-7"), &json!("Install")),
            ("Revoke", Some("wifi-off-7"), &json!("Revoke"))
        ]
    );
    // The exact request as sent is recorded too.
    let requests = state.core().requests();
    let install = requests
        .iter()
        .find(|r| r.path.ends_with("/profiles/wifi-off-7/actions"))
        .unwrap();
    assert_eq!(install.method, "POST");
    assert_eq!(install.body, "\"Install\"");
    assert_eq!(
        install.path,
        format!("/MobiControl/api/devices/{id}/profiles/wifi-off-7/actions")
    );
    assert_eq!(install.status, Some(204));
    assert!(install
        .header("authorization")
        .unwrap()
        .starts_with("Bearer "));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_status_fault_answers_the_next_k_api_calls_but_not_the_token_endpoint() {
    let t = spawn(5, 1).await;
    let response = t
        .control_post("/faults", json!({"status": 503, "count": 2}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let token = t.token().await; // not affected
    for _ in 0..2 {
        let response = t.get(&token, "/api/devices").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = response.json().await.unwrap();
        assert!(body["ErrorMessage"].is_string());
    }
    assert_eq!(t.get(&token, "/api/devices").await.status(), StatusCode::OK);

    // include_token extends it to the token endpoint.
    t.control_post(
        "/faults",
        json!({"status": 500, "count": 1, "include_token": true}),
    )
    .await;
    let response = t
        .token_response((CLIENT_ID, CLIENT_SECRET), (USERNAME, PASSWORD))
        .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let requests = t.sim.soti().unwrap().core().requests();
    let faulted: Vec<Option<&str>> = requests.iter().map(|r| r.fault.as_deref()).collect();
    assert_eq!(
        faulted,
        vec![None, Some("status"), Some("status"), None, Some("status")]
    );

    // Malformed fault requests are refused.
    let response = t
        .control_post("/faults", json!({"status": 503, "drop": true}))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_rate_limit_fault_answers_429_with_retry_after() {
    let t = spawn(5, 1).await;
    let token = t.token().await;
    t.control_post(
        "/faults",
        json!({"status": 429, "retry_after": 2, "count": 1}),
    )
    .await;
    let response = t.get(&token, "/api/devices").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(t.get(&token, "/api/devices").await.status(), StatusCode::OK);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_latency_fault_delays_the_next_k_answers() {
    let t = spawn(5, 1).await;
    let token = t.token().await;
    t.sim
        .soti()
        .unwrap()
        .core()
        .inject(Fault::latency(Duration::from_millis(300)).times(1))
        .unwrap();
    let started = Instant::now();
    assert_eq!(t.get(&token, "/api/devices").await.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_eq!(t.get(&token, "/api/devices").await.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(300));
    // A client timeout shorter than the latency fires.
    t.control_post("/faults", json!({"latency_ms": 2000, "count": 1}))
        .await;
    let err = t
        .http
        .get(format!("{}/api/devices", t.base))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(100))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_drop_fault_closes_the_connection_without_any_answer() {
    let t = spawn(5, 1).await;
    let token = t.token().await;
    t.control_post("/faults", json!({"drop": true, "count": 1}))
        .await;
    let err = t.get_err(&token, "/api/devices").await;
    assert!(err.status().is_none(), "no HTTP status: {err:?}");
    assert!(!err.is_timeout());
    assert_eq!(t.get(&token, "/api/devices").await.status(), StatusCode::OK);
    let requests = t.sim.soti().unwrap().core().requests();
    let dropped = requests
        .iter()
        .find(|r| r.fault.as_deref() == Some("drop"))
        .unwrap();
    assert_eq!(dropped.status, None);

    // Faults can be listed and cleared.
    t.control_post("/faults", json!({"drop": true})).await;
    let faults: Value = t
        .http
        .get(format!("{}/faults", t.control))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults.as_array().unwrap().len(), 1);
    let response = t
        .http
        .delete(format!("{}/faults", t.control))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(t.get(&token, "/api/devices").await.status(), StatusCode::OK);
    t.sim.shutdown().await;
}

impl TestSim {
    async fn get_err(&self, token: &str, path: &str) -> reqwest::Error {
        self.http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .send()
            .await
            .expect_err("the connection should be dropped")
    }
}

#[tokio::test]
async fn devices_added_removed_and_changed_between_listings_show_in_the_next_listing() {
    let t = spawn(50, 2).await;
    let token = t.token().await;
    let (before, _) = t.list_all(&token, 20).await;
    assert_eq!(before.len(), 50);

    let removed = before[3]["DeviceId"].as_str().unwrap().to_owned();
    let response = t
        .http
        .delete(format!("{}/devices/{removed}", t.control))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = t
        .control_post("/devices/generate", json!({"count": 2}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let generated: Value = response.json().await.unwrap();
    let added = json!({
        "Kind": "AndroidPlus", "DeviceId": "359881234567890", "DeviceName": "Spare",
        "IMEI_MEID_ESN": "359881234567890", "MACAddress": "D087E278B54B",
        "HardwareSerialNumber": "R58SPARE001", "Path": "\\\\Acme\\Spares", "DeviceUserInfo": null
    });
    assert_eq!(
        t.control_post("/devices", added.clone()).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        t.control_post("/devices", added.clone()).await.status(),
        StatusCode::CONFLICT
    );
    let changed = before[0]["DeviceId"].as_str().unwrap().to_owned();
    let response = t
        .http
        .patch(format!("{}/devices/{changed}", t.control))
        .json(&json!({"DeviceName": "Renamed", "DeviceUserInfo": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let (after, _) = t.list_all(&token, 20).await;
    assert_eq!(after.len(), 50 - 1 + 2 + 1);
    let ids: HashSet<&str> = after
        .iter()
        .map(|d| d["DeviceId"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(removed.as_str()));
    for g in generated.as_array().unwrap() {
        assert!(ids.contains(g["DeviceId"].as_str().unwrap()));
    }
    assert_eq!(after.last().unwrap(), &added);
    assert_eq!(after[0]["DeviceName"], "Renamed");
    assert!(after[0]["DeviceUserInfo"].is_null());
    assert_eq!(
        t.get(&token, &format!("/api/devices/{removed}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.get_json(&token, "/api/devices/mac:d0:87:e2:78:b5:4b")
            .await,
        added
    );
    // The new group shows up among the device groups.
    let groups = t.get_json(&token, "/api/devicegroups").await;
    assert!(groups
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["Path"] == "\\\\Acme\\Spares"));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn users_can_be_listed_changed_and_removed_through_the_control_api() {
    let t = spawn(200, 4).await;
    let state = t.sim.soti().unwrap();
    let users: Value = t
        .http
        .get(format!("{}/users", t.control))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users = users.as_array().unwrap();
    assert!(!users.is_empty());
    let shared = users
        .iter()
        .find(|u| u["device_ids"].as_array().unwrap().len() > 1)
        .expect("a user with two devices");
    let name = shared["user"]["UserName"].as_str().unwrap().to_owned();
    let response = t
        .http
        .patch(format!("{}/users/{name}", t.control))
        .json(&json!({"Email": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let with_user: Vec<Value> = state
        .devices()
        .into_iter()
        .filter(|d| d["DeviceUserInfo"]["UserName"] == name.as_str())
        .collect();
    assert!(with_user.len() > 1);
    assert!(with_user
        .iter()
        .all(|d| d["DeviceUserInfo"]["Email"].is_null()));
    let response = t
        .http
        .delete(format!("{}/users/{name}", t.control))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(state
        .users()
        .iter()
        .all(|u| u.user["UserName"] != name.as_str()));
    let response = t
        .http
        .delete(format!("{}/users/nobody.at.all", t.control))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_data_set_is_deterministic_for_a_seed_and_has_realistic_variety() {
    let a = spawn(2000, 77).await;
    let b = spawn(2000, 77).await;
    let c = spawn(2000, 78).await;
    let devices = a.sim.soti().unwrap().devices();
    assert_eq!(devices, b.sim.soti().unwrap().devices());
    assert_ne!(devices, c.sim.soti().unwrap().devices());

    let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
    let ios = count(&|d| d["Kind"].as_str().unwrap().eq_ignore_ascii_case("ios"));
    let android = count(&|d| d["Kind"] == "AndroidPlus");
    assert_eq!(ios + android, 2000);
    assert!((800..1400).contains(&ios), "{ios} iOS devices");
    assert!(count(&|d| d["Kind"] == "iOS") > 0 && count(&|d| d["Kind"] == "Ios") > 0);
    assert!(count(&|d| d["MACAddress"].as_str().unwrap().contains(':')) > 500);
    assert!(
        count(&|d| {
            let m = d["MACAddress"].as_str().unwrap();
            m.len() == 12
                && m.chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        }) > 500
    );
    assert!(count(&|d| d["DeviceUserInfo"].is_null()) > 100);
    let users = a.sim.soti().unwrap().users();
    let without_email = users
        .iter()
        .filter(|u| u.user.get("Email").is_none_or(Value::is_null))
        .count();
    assert!(without_email > 20, "{without_email} users without email");
    assert!(count(&|d| d.get("$type").is_some()) > 300);
    let paths: HashSet<&str> = devices
        .iter()
        .map(|d| d["Path"].as_str().unwrap())
        .collect();
    assert!(paths.len() >= 5);
    assert!(paths.contains(r"\\Acme\Sales") && paths.contains(r"\\Acme\Engineering\Berlin"));
    for d in &devices {
        for field in [
            "DeviceId",
            "DeviceName",
            "Model",
            "OSVersion",
            "Manufacturer",
            "LastCheckInTime",
            "Mode",
            "Path",
        ] {
            assert!(
                d[field].as_str().is_some_and(|v| !v.is_empty()),
                "{field} in {d}"
            );
        }
        assert!(d["IsAgentOnline"].is_boolean() && d["ComplianceStatus"].is_boolean());
    }
    // The banner tells a human what to configure.
    let banner = a.sim.banner();
    for needle in [
        a.base.as_str(),
        CLIENT_ID,
        CLIENT_SECRET,
        USERNAME,
        PASSWORD,
        a.control.as_str(),
    ] {
        assert!(banner.contains(needle), "{needle} missing from {banner}");
    }
    a.sim.shutdown().await;
    b.sim.shutdown().await;
    c.sim.shutdown().await;
}

#[tokio::test]
async fn a_thousand_seeded_devices_serve_every_posture_field_with_realistic_variety() {
    let t = spawn(1000, 21).await;
    let token = t.token().await;
    let (devices, _) = t.list_all(&token, 500).await;
    assert_eq!(devices.len(), 1000);
    let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
    // The spec's types: booleans, the DeviceMode enum, strings.
    for d in &devices {
        for field in [
            "ComplianceStatus",
            "IsEncrypted",
            "PasscodeEnabled",
            "IsOSSecure",
        ] {
            assert!(d[field].is_boolean(), "{field} in {d}");
        }
        assert!(
            [
                "Active",
                "Disabled",
                "UnenrollPendingUser",
                "UnenrollPendingAdmin",
                "UnenrolledByUser",
                "UnenrolledByAdmin"
            ]
            .contains(&d["Mode"].as_str().unwrap()),
            "{d}"
        );
        assert!(d["PhoneNumber"].is_string() || d["PhoneNumber"].is_null());
        assert!(
            chrono::DateTime::parse_from_rfc3339(d["LastCheckInTime"].as_str().unwrap()).is_ok()
        );
        let ios = d["Kind"].as_str().unwrap().eq_ignore_ascii_case("ios");
        let manufacturer = d["Manufacturer"].as_str().unwrap();
        if ios {
            assert_eq!(manufacturer, "Apple", "{d}");
        } else {
            assert!(
                ["samsung", "Google", "Zebra Technologies", "motorola"].contains(&manufacturer),
                "{d}"
            );
        }
        // Jailbroken or rooted devices are never compliant.
        if d["IsOSSecure"] == false {
            assert_eq!(d["ComplianceStatus"], false, "{d}");
        }
        if let Some(phone) = d["PhoneNumber"].as_str().filter(|p| !p.is_empty()) {
            assert!(phone.starts_with('+') && phone[1..].chars().all(|c| c.is_ascii_digit()));
            assert!(!d["Model"].as_str().unwrap().starts_with("iPad"), "{d}");
        }
    }
    // Most compliant, some not; most active, a few not; a few of each bad value.
    assert!(count(&|d| d["ComplianceStatus"] == true) > 700);
    assert!(count(&|d| d["ComplianceStatus"] == false) > 50);
    assert!(count(&|d| d["Mode"] == "Active") > 800);
    assert!(count(&|d| d["Mode"] != "Active") > 50);
    assert!(count(&|d| d["IsEncrypted"] == false) > 10);
    assert!(count(&|d| d["PasscodeEnabled"] == false) > 30);
    assert!(count(&|d| d["IsOSSecure"] == false) > 5);
    assert!(count(&|d| d["IsOSSecure"] == true) > 900);
    assert!(
        count(&|d| d["PhoneNumber"]
            .as_str()
            .is_some_and(|p| p.starts_with('+')))
            > 400
    );
    assert!(count(&|d| d["PhoneNumber"] == "") > 50);
    assert!(count(&|d| d["PhoneNumber"].is_null()) > 50);
    let manufacturers: HashSet<&str> = devices
        .iter()
        .map(|d| d["Manufacturer"].as_str().unwrap())
        .collect();
    assert!(manufacturers.len() >= 4, "{manufacturers:?}");
    // A lookup serves the same posture as the listing.
    let one = &devices[7];
    let id = one["DeviceId"].as_str().unwrap();
    assert_eq!(
        &t.get_json(&token, &format!("/api/devices/{id}")).await,
        one
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn requests_are_recorded_as_sent_and_can_be_cleared() {
    let t = spawn(5, 1).await;
    let token = t.token().await;
    t.get(
        &token,
        "/api/devices/search?filter=Manufacturer%253D%2527Apple%2527&take=2",
    )
    .await;
    let requests: Value = t
        .http
        .get(format!("{}/requests", t.control))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let requests = requests.as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["path"], "/MobiControl/api/token");
    assert!(requests[0]["body"]
        .as_str()
        .unwrap()
        .contains("grant_type=password"));
    assert_eq!(
        requests[1]["path"],
        "/MobiControl/api/devices/search?filter=Manufacturer%253D%2527Apple%2527&take=2"
    );
    assert_eq!(requests[1]["status"], 200);
    let response = t
        .http
        .delete(format!("{}/records", t.control))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(t.sim.soti().unwrap().core().requests().is_empty());
    // Control calls are not recorded as vendor requests.
    t.http
        .get(format!("{}/devices", t.control))
        .send()
        .await
        .unwrap();
    assert!(t.sim.soti().unwrap().core().requests().is_empty());
    t.sim.shutdown().await;
}

// ------------------------------------------------------------ custom attributes

impl TestSim {
    async fn put_json(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .put(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{}", self.control, path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// The value of `name` in the device's `GET …/customAttributes`.
    async fn attribute(&self, token: &str, device_id: &str, name: &str) -> Value {
        let list = self
            .get_json(token, &format!("/api/devices/{device_id}/customAttributes"))
            .await;
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["Name"] == name)
            .map(|a| a["Value"].clone())
            .unwrap_or_else(|| panic!("{name} not in {list}"))
    }
}

fn risk_body(name: &str, value: Value) -> Value {
    json!({"Attributes": [{"AttributeName": name, "AttributeValue": value}]})
}

#[tokio::test]
async fn custom_attributes_are_listed_written_per_device_and_read_back_in_the_spec_shapes() {
    let t = spawn(5, 1).await;
    let token = t.token().await;
    let state = t.sim.soti().unwrap();
    let ids: Vec<String> = state
        .devices()
        .iter()
        .map(|d| d["DeviceId"].as_str().unwrap().to_owned())
        .collect();

    let definitions = t.get_json(&token, "/api/customattributes").await;
    let risk = definitions
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["Name"] == "MTD_Threat_Level")
        .expect("seeded");
    assert_eq!(risk["CustomAttributeDataType"], "Text");
    for d in definitions.as_array().unwrap() {
        for field in ["Name", "CustomAttributeDataType", "PropagateToDevice"] {
            assert!(d.get(field).is_some(), "{field} in {d}");
        }
    }

    let before = t
        .get_json(&token, &format!("/api/devices/{}/customAttributes", ids[0]))
        .await;
    for info in before.as_array().unwrap() {
        for field in ["Name", "Value", "DataType", "IsInherited"] {
            assert!(info.get(field).is_some(), "{field} in {info}");
        }
        assert_eq!(info["IsInherited"], false);
        assert_eq!(info["Value"], Value::Null, "nothing set yet");
    }
    assert_eq!(
        before.as_array().unwrap().len(),
        definitions.as_array().unwrap().len(),
        "one per definition"
    );

    let path = format!("/api/devices/{}/customAttributes", ids[0]);
    let response = t
        .put_json(&token, &path, &risk_body("MTD_Threat_Level", json!("High")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(
        t.attribute(&token, &ids[0], "MTD_Threat_Level").await,
        "High"
    );
    assert_eq!(
        t.attribute(&token, &ids[1], "MTD_Threat_Level").await,
        Value::Null
    );
    assert_eq!(
        state
            .custom_attribute(&ids[0], "MTD_Threat_Level")
            .as_deref(),
        Some("High")
    );
    // Names ignore case and keep the defined spelling; the same value again is harmless.
    for _ in 0..2 {
        let response = t
            .put_json(
                &token,
                &path,
                &risk_body("mtd_threat_level", json!("Secured")),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(
        t.attribute(&token, &ids[0], "MTD_Threat_Level").await,
        "Secured"
    );
    // The lower-case path spelling is the same resource; `null` clears.
    let response = t
        .put_json(
            &token,
            &format!("/api/devices/{}/customattributes", ids[0]),
            &risk_body("MTD_Threat_Level", Value::Null),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(state.custom_attribute(&ids[0], "MTD_Threat_Level"), None);

    let actions: Vec<(String, Option<String>, u16)> = state
        .core()
        .actions()
        .into_iter()
        .map(|a| (a.action, a.device_id, a.status))
        .collect();
    let id = Some(ids[0].clone());
    assert_eq!(
        actions,
        vec![
            (
                "SetCustomAttribute:MTD_Threat_Level=High".into(),
                id.clone(),
                200
            ),
            (
                "SetCustomAttribute:mtd_threat_level=Secured".into(),
                id.clone(),
                200
            ),
            (
                "SetCustomAttribute:mtd_threat_level=Secured".into(),
                id.clone(),
                200
            ),
            ("ClearCustomAttribute:MTD_Threat_Level".into(), id, 200),
        ]
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn an_undefined_attribute_a_wrong_type_or_a_bad_body_is_a_soti_400_and_writes_nothing() {
    let t = spawn(3, 1).await;
    let token = t.token().await;
    let state = t.sim.soti().unwrap();
    let id = state.devices()[0]["DeviceId"].as_str().unwrap().to_owned();
    let path = format!("/api/devices/{id}/customAttributes");

    let both = json!({"Attributes": [
        {"AttributeName": "MTD_Threat_Level", "AttributeValue": "High"},
        {"AttributeName": "Nope", "AttributeValue": "x"}
    ]});
    let response = t.put_json(&token, &path, &both).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_soti_400(&body);
    assert_eq!(body["Data"], json!(["Nope"]));
    assert!(body["ErrorMessage"].as_str().unwrap().contains("Nope"));
    assert_eq!(
        state.custom_attribute(&id, "MTD_Threat_Level"),
        None,
        "all or nothing"
    );

    // The seeded enumerator takes only its values.
    let response = t
        .put_json(&token, &path, &risk_body("Cost_Center", json!("Marketing")))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_soti_400(&response.json().await.unwrap());
    let response = t
        .put_json(&token, &path, &risk_body("Cost_Center", json!("Sales")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    for bad in [
        json!({"Attrs": []}),
        json!([1, 2]),
        json!({"Attributes": [{"AttributeValue": "x"}]}),
    ] {
        let response = t.put_json(&token, &path, &bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_soti_400(&response.json().await.unwrap());
    }
    let response = t
        .put_json(
            &token,
            "/api/devices/no-such-device/customAttributes",
            &risk_body("MTD_Threat_Level", json!("High")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        t.get(&token, "/api/devices/no-such-device/customAttributes")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // Without a token, as every API call.
    let response = t
        .http
        .put(format!("{}{path}", t.base))
        .json(&risk_body("MTD_Threat_Level", json!("High")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let statuses: Vec<(String, u16)> = state
        .core()
        .actions()
        .into_iter()
        .map(|a| (a.action, a.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("SetCustomAttribute:MTD_Threat_Level=High".into(), 400),
            ("SetCustomAttribute:Nope=x".into(), 400),
            ("SetCustomAttribute:Cost_Center=Marketing".into(), 400),
            ("SetCustomAttribute:Cost_Center=Sales".into(), 200),
            ("SetCustomAttribute".into(), 400),
            ("SetCustomAttribute".into(), 400),
            ("SetCustomAttribute".into(), 400),
            ("SetCustomAttribute:MTD_Threat_Level=High".into(), 404),
        ]
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_control_api_sets_values_behind_the_apis_back_and_renames_and_removes_definitions() {
    use reqwest::Method;
    let t = spawn(3, 1).await;
    let token = t.token().await;
    let state = t.sim.soti().unwrap();
    let id = state.devices()[1]["DeviceId"].as_str().unwrap().to_owned();

    let response = t
        .control(
            Method::PUT,
            &format!("/devices/{id}/custom-attributes/MTD_Threat_Level"),
            Some(json!("Critical")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        t.attribute(&token, &id, "MTD_Threat_Level").await,
        "Critical"
    );
    assert!(
        state.core().actions().is_empty(),
        "a drift is not an API write"
    );
    let values: Value = t
        .control(
            Method::GET,
            &format!("/devices/{id}/custom-attributes"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(values["MTD_Threat_Level"], "Critical");
    assert_eq!(values["Cost_Center"], Value::Null);
    assert_eq!(
        t.control(
            Method::PUT,
            &format!("/devices/{id}/custom-attributes/Undefined"),
            Some(json!("x"))
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    state
        .set_custom_attribute(&id, "MTD_Threat_Level", None)
        .unwrap();
    assert_eq!(state.custom_attribute(&id, "MTD_Threat_Level"), None);
    state
        .set_custom_attribute(&id, "MTD_Threat_Level", Some("Low"))
        .unwrap();

    // A rename: the value follows, the old name is unknown.
    let response = t
        .control(
            Method::PATCH,
            "/custom-attribute-definitions/MTD_Threat_Level",
            Some(json!({"Name": "MTD_Risk"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(t.attribute(&token, &id, "MTD_Risk").await, "Low");
    let response = t
        .put_json(
            &token,
            &format!("/api/devices/{id}/customAttributes"),
            &risk_body("MTD_Threat_Level", json!("High")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A removal takes the values along.
    let response = t
        .control(
            Method::DELETE,
            "/custom-attribute-definitions/MTD_Risk",
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let names: Vec<Value> = t
        .get_json(&token, "/api/customattributes")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["Name"].clone())
        .collect();
    assert_eq!(names, vec![json!("Cost_Center")]);
    assert_eq!(
        t.control(
            Method::DELETE,
            "/custom-attribute-definitions/MTD_Risk",
            None
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );

    // Defined again (type Text by default), it starts empty.
    let response = t
        .control(
            Method::POST,
            "/custom-attribute-definitions",
            Some(json!({"Name": "MTD_Threat_Level"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        t.attribute(&token, &id, "MTD_Threat_Level").await,
        Value::Null
    );
    assert_eq!(
        t.control(
            Method::POST,
            "/custom-attribute-definitions",
            Some(json!({"Name": "mtd_threat_level"}))
        )
        .await
        .status(),
        StatusCode::CONFLICT
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn faults_apply_to_the_custom_attribute_paths_too() {
    let t = spawn(3, 1).await;
    let token = t.token().await;
    let state = t.sim.soti().unwrap();
    let id = state.devices()[0]["DeviceId"].as_str().unwrap().to_owned();
    let path = format!("/api/devices/{id}/customAttributes");
    state
        .core()
        .inject(Fault::status(503).times(1).on_paths("/customAttributes"))
        .unwrap();
    state
        .core()
        .inject(
            Fault::rate_limited(2)
                .times(1)
                .on_paths("/customAttributes"),
        )
        .unwrap();
    let body = risk_body("MTD_Threat_Level", json!("High"));
    let response = t.put_json(&token, &path, &body).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response = t.put_json(&token, &path, &body).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(state.custom_attribute(&id, "MTD_Threat_Level"), None);
    assert!(
        state.core().actions().is_empty(),
        "a faulted request reaches no handler"
    );
    assert_eq!(
        t.put_json(&token, &path, &body).await.status(),
        StatusCode::OK
    );
    state
        .core()
        .inject(
            Fault::status(500)
                .times(1)
                .on_paths("/api/customattributes"),
        )
        .unwrap();
    assert_eq!(
        t.get(&token, "/api/customattributes").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    t.sim.shutdown().await;
}
