//! The BCDM simulator over loopback, driven by raw signed HTTP requests: what
//! an adapter would see. The signing here is the test's own, written from
//! `MDM-APIS.md`, so it checks the simulator rather than sharing its code.
//! Every test binds port 0 and never waits for the server by sleeping.

use std::collections::HashSet;

use hmac::{Hmac, Mac};
use mtd_sim::{
    bcdm::{BcdmAction, BcdmPermits},
    Fault, SimKind, SimOptions, Simulator,
};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

const ACCESS_KEY: &str = "sim-access-key";
const SECRET_KEY: &str = "sim-secret-key";
const DM_CODE: &str = "SIM-DM-001";

struct TestSim {
    sim: Simulator,
    http: Client,
    origin: String,
    control: String,
}

/// A simulator without the rate limit: most tests send more than 10
/// requests a second and are not about the limit.
async fn spawn(devices: usize, seed: u64) -> TestSim {
    let mut options = SimOptions::new(vec![SimKind::Bcdm], devices, seed);
    options.bcdm.rate_limit_per_second = 0;
    spawn_with(options).await
}

/// A simulator with BCDM's documented limit of 10 requests a second.
async fn spawn_limited(devices: usize, seed: u64) -> TestSim {
    spawn_with(SimOptions::new(vec![SimKind::Bcdm], devices, seed)).await
}

async fn spawn_with(options: SimOptions) -> TestSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(listener, options).unwrap();
    let origin = format!("http://{}", sim.local_addr());
    assert_eq!(sim.base_url(SimKind::Bcdm), format!("{origin}/bcdm"));
    let control = sim.control_url(SimKind::Bcdm);
    TestSim {
        sim,
        http: Client::new(),
        origin,
        control,
    }
}

/// Lowercase hex HMAC-SHA256(secret, `METHOD\nTARGET\nTIMESTAMP\nhex(SHA-256(body))`).
fn sign(secret: &str, method: &str, target: &str, timestamp: i64, body: &[u8]) -> String {
    let to_sign = format!(
        "{method}\n{target}\n{timestamp}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One request as sent, and what its signature covers (normally the same;
/// tests tamper with one side).
#[derive(Clone)]
struct Call {
    method: Method,
    /// The request target, `/bcdm/api/v1/…?…`.
    target: String,
    body: Vec<u8>,
    access_key: String,
    secret_key: String,
    dm_code: String,
    timestamp: i64,
    signed_method: Option<String>,
    signed_target: Option<String>,
    signed_body: Option<Vec<u8>>,
    signed_timestamp: Option<i64>,
}

impl Call {
    fn get(target: &str) -> Self {
        Call {
            method: Method::GET,
            target: target.to_owned(),
            body: Vec::new(),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            dm_code: DM_CODE.into(),
            timestamp: now(),
            signed_method: None,
            signed_target: None,
            signed_body: None,
            signed_timestamp: None,
        }
    }

    fn post(target: &str, body: &Value) -> Self {
        Call {
            method: Method::POST,
            body: body.to_string().into_bytes(),
            ..Call::get(target)
        }
    }

    fn action(device_id: &str, action: &str) -> Self {
        Call::post(
            &format!("/bcdm/api/v1/devices/{device_id}/actions"),
            &json!({ "action": action }),
        )
    }

    fn signature(&self) -> String {
        sign(
            &self.secret_key,
            self.signed_method
                .as_deref()
                .unwrap_or(self.method.as_str()),
            self.signed_target.as_deref().unwrap_or(&self.target),
            self.signed_timestamp.unwrap_or(self.timestamp),
            self.signed_body.as_deref().unwrap_or(&self.body),
        )
    }
}

impl TestSim {
    fn state(&self) -> std::sync::Arc<mtd_sim::BcdmState> {
        self.sim.bcdm().expect("the BCDM simulator was started")
    }

    async fn send(&self, call: &Call) -> reqwest::Response {
        let mut request = self
            .http
            .request(
                call.method.clone(),
                format!("{}{}", self.origin, call.target),
            )
            .header("X-BCDM-Access-Key", &call.access_key)
            .header("X-BCDM-DM-Code", &call.dm_code)
            .header("X-BCDM-Timestamp", call.timestamp.to_string())
            .header("X-BCDM-Signature", call.signature());
        if !call.body.is_empty() {
            request = request
                .header("Content-Type", "application/json")
                .body(call.body.clone());
        }
        request.send().await.unwrap()
    }

    async fn get_json(&self, target: &str) -> Value {
        let response = self.send(&Call::get(target)).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {target}");
        response.json().await.unwrap()
    }

    async fn expect(&self, call: &Call, status: StatusCode, error: &str) -> Value {
        let response = self.send(call).await;
        assert_eq!(response.status(), status, "{} {}", call.method, call.target);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        body
    }

    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{}", self.control, path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// Every page of a listing with `limit`, and the page sizes.
    async fn list_all(&self, what: &str, limit: usize) -> (Vec<Value>, Vec<usize>, u64) {
        let mut items = Vec::new();
        let mut pages = Vec::new();
        loop {
            let page = self
                .get_json(&format!(
                    "/bcdm/api/v1/{what}?offset={}&limit={limit}",
                    items.len()
                ))
                .await;
            let total = page["total"].as_u64().unwrap();
            let batch = page[what].as_array().unwrap().clone();
            pages.push(batch.len());
            items.extend(batch);
            if items.len() as u64 >= total || pages.last() == Some(&0) {
                return (items, pages, total);
            }
        }
    }
}

// ------------------------------------------------------------------ signing

#[tokio::test]
async fn a_correctly_signed_request_is_served_and_the_signed_path_includes_the_base_path() {
    let t = spawn(10, 1).await;
    let body = t.get_json("/bcdm/api/v1/users").await;
    assert!(body["total"].as_u64().unwrap() > 0);
    // Signing the path without `/bcdm` is signing something else.
    let mut call = Call::get("/bcdm/api/v1/users");
    call.signed_target = Some("/api/v1/users".into());
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    // The recorder keeps the full target and the signing headers.
    let recorded = t.state().core().requests();
    assert_eq!(recorded[0].path, "/bcdm/api/v1/users");
    assert_eq!(recorded[0].header("x-bcdm-access-key"), Some(ACCESS_KEY));
    assert_eq!(recorded[0].status, Some(200));
    assert_eq!(recorded[1].status, Some(401));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_access_key_gets_401_unauthorized() {
    let t = spawn(5, 1).await;
    let mut call = Call::get("/bcdm/api/v1/devices");
    call.access_key = "someone-else".into();
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    // No headers at all is no better.
    let response = t
        .http
        .get(format!("{}/bcdm/api/v1/devices", t.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_signature_made_with_the_wrong_secret_gets_401_unauthorized() {
    let t = spawn(5, 1).await;
    let mut call = Call::get("/bcdm/api/v1/devices");
    call.secret_key = "not-the-secret".into();
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    // The signature must be lowercase hex, as documented.
    let call = Call::get("/bcdm/api/v1/devices");
    let response = t
        .http
        .get(format!("{}{}", t.origin, call.target))
        .header("X-BCDM-Access-Key", ACCESS_KEY)
        .header("X-BCDM-DM-Code", DM_CODE)
        .header("X-BCDM-Timestamp", call.timestamp.to_string())
        .header("X-BCDM-Signature", call.signature().to_uppercase())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_timestamp_more_than_300_seconds_off_gets_401_stale_request() {
    let t = spawn(5, 1).await;
    for offset in [-400, 400, -3600] {
        let mut call = Call::get("/bcdm/api/v1/devices");
        call.timestamp = now() + offset;
        t.expect(&call, StatusCode::UNAUTHORIZED, "stale_request")
            .await;
    }
    // Well inside the window either way is fine.
    for offset in [-290, 290] {
        let mut call = Call::get("/bcdm/api/v1/devices");
        call.timestamp = now() + offset;
        assert_eq!(t.send(&call).await.status(), StatusCode::OK);
    }
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_dm_code_that_is_not_the_keys_gets_403_forbidden() {
    let t = spawn(5, 1).await;
    let mut call = Call::get("/bcdm/api/v1/devices");
    call.dm_code = "OTHER-DM-002".into();
    t.expect(&call, StatusCode::FORBIDDEN, "forbidden").await;
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_checks_run_in_the_documented_order() {
    let t = spawn(5, 1).await;
    let mut call = Call::get("/bcdm/api/v1/devices");
    call.access_key = "unknown".into();
    call.timestamp = now() - 1000;
    call.secret_key = "wrong".into();
    call.dm_code = "wrong".into();
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    call.access_key = ACCESS_KEY.into();
    t.expect(&call, StatusCode::UNAUTHORIZED, "stale_request")
        .await;
    call.timestamp = now();
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    call.secret_key = SECRET_KEY.into();
    t.expect(&call, StatusCode::FORBIDDEN, "forbidden").await;
    call.dm_code = DM_CODE.into();
    assert_eq!(t.send(&call).await.status(), StatusCode::OK);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_tampered_body_path_query_method_or_timestamp_fails_verification() {
    let t = spawn(5, 1).await;
    let device_id = t.state().devices()[0].device_id.clone();

    // Body: signed a lock, sent a remote wipe.
    let mut call = Call::action(&device_id, "remote_wipe");
    call.signed_body = Some(json!({"action":"lock"}).to_string().into_bytes());
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    assert!(
        t.state().core().actions().is_empty(),
        "nothing reached the handler"
    );

    // Path: signed one device, sent to another.
    let mut call = Call::action(&device_id, "lock");
    call.signed_target = Some("/bcdm/api/v1/devices/D999999999/actions".into());
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;

    // Query: another offset, or the same parameters re-ordered.
    let mut call = Call::get("/bcdm/api/v1/devices?offset=100&limit=100");
    call.signed_target = Some("/bcdm/api/v1/devices?offset=0&limit=100".into());
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    let mut call = Call::get("/bcdm/api/v1/devices?limit=100&offset=0");
    call.signed_target = Some("/bcdm/api/v1/devices?offset=0&limit=100".into());
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;

    // Method.
    let mut call = Call::get("/bcdm/api/v1/devices");
    call.signed_method = Some("POST".into());
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;

    // Timestamp: the header says one second later than what was signed.
    let mut call = Call::get("/bcdm/api/v1/devices");
    call.signed_timestamp = Some(call.timestamp);
    call.timestamp += 1;
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;

    // The untampered action goes through.
    let response = t.send(&Call::action(&device_id, "lock")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_query_is_signed_raw_as_sent_not_decoded() {
    let t = spawn(20, 1).await;
    let mac = t.state().devices()[3].wifi_mac.clone().unwrap();
    let encoded = mac.replace(':', "%3A");
    let target = format!("/bcdm/api/v1/devices?wifi_mac={encoded}");
    let body = t.get_json(&target).await;
    assert_eq!(body["total"], 1);
    // Signing the decoded form of what was sent fails.
    let mut call = Call::get(&target);
    call.signed_target = Some(format!("/bcdm/api/v1/devices?wifi_mac={mac}"));
    t.expect(&call, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    t.sim.shutdown().await;
}

// ------------------------------------------------------------------ listings

#[tokio::test]
async fn devices_and_users_page_with_offset_and_limit_up_to_the_total() {
    let t = spawn(450, 2).await;
    let state = t.state();
    let (devices, pages, total) = t.list_all("devices", 200).await;
    assert_eq!(total, 450);
    assert_eq!(pages, vec![200, 200, 50]);
    let expected: Vec<Value> = state
        .devices()
        .iter()
        .map(|d| serde_json::to_value(d).unwrap())
        .collect();
    assert_eq!(devices, expected);

    let (users, _, total) = t.list_all("users", 200).await;
    assert_eq!(total as usize, state.users().len());
    assert_eq!(users.len(), state.users().len());

    // Defaults: offset 0, limit 100.
    let page = t.get_json("/bcdm/api/v1/devices").await;
    assert_eq!(page["devices"].as_array().unwrap().len(), 100);
    assert_eq!(page["devices"][0], expected[0]);
    // Past the end: empty, with the total.
    let page = t
        .get_json("/bcdm/api/v1/devices?offset=1000&limit=10")
        .await;
    assert_eq!(page["total"], 450);
    assert_eq!(page["devices"], json!([]));
    // Out of range or not numbers.
    for query in ["limit=201", "limit=0", "limit=abc", "offset=-1"] {
        for what in ["devices", "users"] {
            let call = Call::get(&format!("/bcdm/api/v1/{what}?{query}"));
            t.expect(&call, StatusCode::BAD_REQUEST, "invalid_parameter")
                .await;
        }
    }
    let page = t.get_json("/bcdm/api/v1/users?limit=200").await;
    assert_eq!(page["users"].as_array().unwrap().len(), 200);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn devices_and_users_have_every_documented_field_and_realistic_variety() {
    let t = spawn(1000, 3).await;
    let (devices, _, _) = t.list_all("devices", 200).await;
    let fields = [
        "device_id",
        "udid",
        "serial_number",
        "imei",
        "wifi_mac",
        "model",
        "os_version",
        "platform",
        "user_id",
        "ownership",
        "last_checkin_at",
        "compliant",
        "passcode_enabled",
        "encrypted",
        "jailbroken",
        "manufacturer",
        "phone_number",
        "mtd_risk_level",
    ];
    for d in &devices {
        let object = d.as_object().unwrap();
        assert_eq!(object.len(), fields.len(), "{d}");
        for f in fields {
            assert!(object.contains_key(f), "{f} missing from {d}");
        }
        assert!(matches!(
            d["ownership"].as_str(),
            Some("corporate" | "personal")
        ));
        if let Some(at) = d["last_checkin_at"].as_str() {
            assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
        }
    }
    let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
    let ios = count(&|d| d["platform"] == "iOS");
    let android = count(&|d| d["platform"] == "Android");
    assert_eq!(ios + android, 1000);
    assert!(ios > 750 && android > 50, "ios {ios}, android {android}");
    assert!(count(&|d| d["ownership"] == "personal") > 50);
    assert!(count(&|d| d["user_id"].is_null()) > 10);
    assert!(
        count(&|d| d["platform"] == "iOS" && d["imei"].is_null()) > 10,
        "Wi-Fi iPads"
    );
    assert!(count(&|d| d["platform"] == "Android" && d["udid"].is_null()) == android);
    assert!(count(&|d| d["udid"].as_str().is_some_and(|u| u.len() == 25)) > 100);
    assert!(count(&|d| d["udid"].as_str().is_some_and(|u| u.len() == 40)) > 10);
    assert!(count(&|d| d["last_checkin_at"].is_null()) > 0);
    // Identifiers are unique.
    for f in ["device_id", "udid", "serial_number", "imei", "wifi_mac"] {
        let values: Vec<String> = devices
            .iter()
            .filter_map(|d| d[f].as_str())
            .map(|v| v.to_lowercase())
            .collect();
        let unique: HashSet<&String> = values.iter().collect();
        assert_eq!(unique.len(), values.len(), "{f}");
    }

    let (users, _, _) = t.list_all("users", 200).await;
    let without_email = users.iter().filter(|u| u["email"].is_null()).count();
    assert!(
        without_email > users.len() / 10,
        "{without_email} of {}",
        users.len()
    );
    assert!(users
        .iter()
        .any(|u| u["name"].as_str().is_some_and(|n| n.contains('田'))));
    assert!(users.iter().all(|u| u["user_id"].is_string()
        && u["login_id"].is_string()
        && u["name"].is_string()
        && u.as_object().unwrap().len() == 4));
    // Users with several devices and users with none.
    let owners: Vec<&str> = devices
        .iter()
        .filter_map(|d| d["user_id"].as_str())
        .collect();
    let distinct: HashSet<&str> = owners.iter().copied().collect();
    assert!(distinct.len() < owners.len());
    assert!(distinct.len() < users.len());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_thousand_seeded_devices_serve_every_posture_field_with_realistic_variety() {
    let t = spawn(1000, 21).await;
    let (devices, _, _) = t.list_all("devices", 200).await;
    assert_eq!(devices.len(), 1000);
    let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
    for d in &devices {
        assert!(d["compliant"].is_boolean(), "{d}");
        for field in ["passcode_enabled", "encrypted", "jailbroken"] {
            assert!(
                d[field].is_boolean() || d[field].is_null(),
                "{field} in {d}"
            );
        }
        assert!(d["mtd_risk_level"].is_null(), "present and null: {d}");
        let ios = d["platform"] == "iOS";
        let manufacturer = d["manufacturer"].as_str().unwrap();
        if ios {
            assert_eq!(manufacturer, "Apple", "{d}");
            assert_eq!(
                d["encrypted"], d["passcode_enabled"],
                "data protection: {d}"
            );
        } else {
            assert!(
                ["samsung", "Google", "SHARP", "Sony"].contains(&manufacturer),
                "{d}"
            );
        }
        if d["jailbroken"] == true || d["passcode_enabled"] == false {
            assert_eq!(d["compliant"], false, "{d}");
        }
        if d["last_checkin_at"].is_null() {
            assert_eq!(d["compliant"], false, "never checked in: {d}");
        }
        match d["phone_number"].as_str() {
            Some(phone) => {
                assert!(phone.starts_with("+81") && phone[1..].chars().all(|c| c.is_ascii_digit()));
                assert!(!d["imei"].is_null(), "a number needs a SIM: {d}");
            }
            None => assert!(d["phone_number"].is_null()),
        }
    }
    assert!(count(&|d| d["compliant"] == true) > 700);
    assert!(count(&|d| d["compliant"] == false) > 60);
    assert!(count(&|d| d["passcode_enabled"] == false) > 30);
    assert!(count(&|d| d["encrypted"] == false) > 30);
    assert!(count(&|d| d["jailbroken"] == true) > 5);
    assert!(count(&|d| d["jailbroken"].is_null()) > 5);
    assert!(count(&|d| d["phone_number"].is_string()) > 400);
    assert!(count(&|d| d["phone_number"].is_null()) > 100);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_same_seed_gives_the_same_data_and_another_seed_other_data() {
    let a = spawn(300, 11).await;
    let b = spawn(300, 11).await;
    let c = spawn(300, 12).await;
    assert_eq!(a.state().devices(), b.state().devices());
    assert_eq!(a.state().users(), b.state().users());
    assert_ne!(a.state().devices(), c.state().devices());
    // Over the wire too.
    assert_eq!(
        a.get_json("/bcdm/api/v1/devices?limit=200").await,
        b.get_json("/bcdm/api/v1/devices?limit=200").await
    );
    a.sim.shutdown().await;
    b.sim.shutdown().await;
    c.sim.shutdown().await;
}

// ------------------------------------------------------------------ lookups

#[tokio::test]
async fn a_device_is_found_by_its_id_and_by_each_identifier_in_any_case_or_mac_form() {
    let t = spawn(80, 4).await;
    let state = t.state();
    let devices = state.devices();
    let ipad = devices
        .iter()
        .find(|d| d.is_ios() && d.imei.is_none())
        .unwrap();
    let phone = devices
        .iter()
        .find(|d| d.is_ios() && d.imei.is_some())
        .unwrap();
    let android = devices.iter().find(|d| !d.is_ios()).unwrap();
    for d in [ipad, phone, android] {
        let expected = serde_json::to_value(d).unwrap();
        let bare = t
            .get_json(&format!("/bcdm/api/v1/devices/{}", d.device_id))
            .await;
        assert_eq!(bare, expected);

        let mac = d.wifi_mac.clone().unwrap();
        let hex: String = mac.chars().filter(|c| *c != ':').collect();
        let mut queries = vec![
            format!(
                "serial_number={}",
                d.serial_number.clone().unwrap().to_lowercase()
            ),
            format!("serial_number={}", d.serial_number.clone().unwrap()),
            format!("wifi_mac={}", mac.to_lowercase()),
            format!("wifi_mac={}", mac.to_uppercase().replace(':', "-")),
            format!("wifi_mac={}", hex.to_uppercase()),
        ];
        if let Some(udid) = &d.udid {
            queries.push(format!("udid={}", udid.to_uppercase()));
            queries.push(format!("udid={}", udid.to_lowercase()));
        }
        if let Some(imei) = &d.imei {
            queries.push(format!("imei={imei}"));
        }
        for q in queries {
            let found = t.get_json(&format!("/bcdm/api/v1/devices?{q}")).await;
            assert_eq!(found["total"], 1, "{q}");
            assert_eq!(found["devices"], json!([expected.clone()]), "{q}");
        }
    }
    for q in [
        "udid=00008101-000000000000000A",
        "serial_number=NOPE",
        "imei=",
        "wifi_mac=00:00:00:00:00:01",
        "wifi_mac=not-a-mac",
    ] {
        let found = t.get_json(&format!("/bcdm/api/v1/devices?{q}")).await;
        assert_eq!(found, json!({"total": 0, "devices": []}), "{q}");
    }
    t.expect(
        &Call::get("/bcdm/api/v1/devices/D999999999"),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    t.sim.shutdown().await;
}

// ------------------------------------------------------------------ actions

#[tokio::test]
async fn each_action_is_accepted_with_a_request_id_and_recorded() {
    let t = spawn(10, 5).await;
    let state = t.state();
    let device_id = state.devices()[0].device_id.clone();
    let mut ids = Vec::new();
    for action in BcdmAction::ALL {
        let response = t.send(&Call::action(&device_id, action.as_str())).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        let id = body["request_id"].as_str().unwrap().to_owned();
        assert!(!id.is_empty());
        ids.push(id);
    }
    let recorded = state.core().actions();
    assert_eq!(recorded.len(), 4);
    for (r, action) in recorded.iter().zip(BcdmAction::ALL) {
        assert_eq!(r.kind, SimKind::Bcdm);
        assert_eq!(r.device_id.as_deref(), Some(device_id.as_str()));
        assert_eq!(r.action, action.as_str());
        assert_eq!(r.body, json!({ "action": action.as_str() }));
        assert_eq!(r.status, 202);
    }
    let accepted = state.accepted_actions();
    assert_eq!(
        accepted
            .iter()
            .map(|a| a.request_id.clone())
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(accepted[3].action, BcdmAction::RemoteWipe);
    // The control API lists them too.
    let listed: Value = t
        .control(Method::GET, "/accepted-actions", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["request_id"], ids[0].as_str());
    assert_eq!(listed[0]["action"], "lock");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_forbidden_action_gets_403_action_not_permitted_and_an_unknown_one_400() {
    let t = spawn(10, 5).await;
    let state = t.state();
    let device_id = state.devices()[0].device_id.clone();
    // Through the control API, as a test of the daemon would.
    let response = t
        .control(
            Method::PATCH,
            "/permits",
            Some(json!({"remote_wipe": false})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let permits: BcdmPermits = t
        .control(Method::GET, "/permits", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(!permits.remote_wipe && permits.lock && permits.enterprise_wipe);
    let body = t
        .expect(
            &Call::action(&device_id, "remote_wipe"),
            StatusCode::FORBIDDEN,
            "action_not_permitted",
        )
        .await;
    assert!(body["message"].as_str().unwrap().contains("Remote Wipe"));
    assert_eq!(
        t.send(&Call::action(&device_id, "lock")).await.status(),
        StatusCode::ACCEPTED
    );
    // In process.
    state.set_permit(BcdmAction::Lock, false);
    t.expect(
        &Call::action(&device_id, "lock"),
        StatusCode::FORBIDDEN,
        "action_not_permitted",
    )
    .await;
    // Unknown actions, bodies and devices.
    for action in ["format", "Lock", "wipe", ""] {
        t.expect(
            &Call::action(&device_id, action),
            StatusCode::BAD_REQUEST,
            "invalid_action",
        )
        .await;
    }
    t.expect(
        &Call::post(
            &format!("/bcdm/api/v1/devices/{device_id}/actions"),
            &json!("lock"),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_action",
    )
    .await;
    t.expect(
        &Call::action("D999999999", "lock"),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let statuses: Vec<u16> = state.core().actions().iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![403, 202, 403, 400, 400, 400, 400, 400, 404]);
    assert_eq!(state.accepted_actions().len(), 1);
    // An unknown permit name is refused.
    let response = t
        .control(Method::PATCH, "/permits", Some(json!({"format": false})))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    t.sim.shutdown().await;
}

// --------------------------------------------------------------- rate limit

#[tokio::test]
async fn the_eleventh_request_in_a_second_gets_429_with_retry_after() {
    let t = spawn_limited(10, 6).await;
    let state = t.state();
    let started = std::time::Instant::now();
    for i in 0..10 {
        let response = t.send(&Call::get("/bcdm/api/v1/users?limit=1")).await;
        assert_eq!(response.status(), StatusCode::OK, "request {}", i + 1);
    }
    let response = t.send(&Call::get("/bcdm/api/v1/users?limit=1")).await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(900),
        "the burst was too slow to test the limit"
    );
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1, "the window is one second");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(state.rate_limited_requests().len(), 1);
    let limit: Value = t
        .control(Method::GET, "/rate-limit", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(limit, json!({"requests_per_second": 10, "rate_limited": 1}));

    // After Retry-After, requests get through again.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    assert_eq!(
        t.send(&Call::get("/bcdm/api/v1/users?limit=1"))
            .await
            .status(),
        StatusCode::OK
    );

    // The limit is a knob: off, then 2 a second.
    let response = t
        .control(
            Method::PUT,
            "/rate-limit",
            Some(json!({"requests_per_second": 0})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for _ in 0..25 {
        assert_eq!(
            t.send(&Call::get("/bcdm/api/v1/users?limit=1"))
                .await
                .status(),
            StatusCode::OK
        );
    }
    state.set_rate_limit(2);
    let statuses: Vec<StatusCode> = burst_statuses(&t, 3).await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 2);
    assert_eq!(state.rate_limited_requests().len(), 2);
    t.sim.shutdown().await;
}

async fn burst_statuses(t: &TestSim, n: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(
            t.send(&Call::get("/bcdm/api/v1/users?limit=1"))
                .await
                .status(),
        );
    }
    statuses
}

#[tokio::test]
async fn requests_that_fail_verification_do_not_use_up_the_rate_limit() {
    let t = spawn_limited(5, 6).await;
    let mut bad = Call::get("/bcdm/api/v1/users");
    bad.secret_key = "wrong".into();
    for _ in 0..15 {
        assert_eq!(t.send(&bad).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        t.send(&Call::get("/bcdm/api/v1/users")).await.status(),
        StatusCode::OK
    );
    t.sim.shutdown().await;
}

// ------------------------------------------------------------------- faults

#[tokio::test]
async fn injected_faults_answer_in_bcdm_error_shape_or_drop_the_connection() {
    let t = spawn(5, 7).await;
    let state = t.state();
    let response = t
        .control(
            Method::POST,
            "/faults",
            Some(json!({"status": 503, "count": 1})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    t.expect(
        &Call::get("/bcdm/api/v1/devices"),
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    assert_eq!(
        t.send(&Call::get("/bcdm/api/v1/devices")).await.status(),
        StatusCode::OK
    );

    state
        .core()
        .inject(Fault::rate_limited(7).times(1))
        .unwrap();
    let response = t.send(&Call::get("/bcdm/api/v1/devices")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    // An injected 429 is told apart from the real limit.
    assert!(state.rate_limited_requests().is_empty());

    state
        .core()
        .inject(Fault::drop_connection().times(1).on_paths("/actions"))
        .unwrap();
    let device_id = state.devices()[0].device_id.clone();
    let call = Call::action(&device_id, "lock");
    let result = t
        .http
        .post(format!("{}{}", t.origin, call.target))
        .header("X-BCDM-Access-Key", ACCESS_KEY)
        .header("X-BCDM-DM-Code", DM_CODE)
        .header("X-BCDM-Timestamp", call.timestamp.to_string())
        .header("X-BCDM-Signature", call.signature())
        .body(call.body.clone())
        .send()
        .await;
    assert!(result.is_err(), "the connection was dropped: {result:?}");
    assert!(state.core().actions().is_empty());

    // Faults apply before the signature check: even unsigned requests get them.
    state.core().inject(Fault::status(500).times(1)).unwrap();
    let response = t
        .http
        .get(format!("{}/bcdm/api/v1/users", t.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "internal_error");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_skewed_simulator_clock_makes_a_correct_client_stale() {
    let t = spawn(5, 8).await;
    let response = t
        .control(Method::PUT, "/clock", Some(json!({"skew_seconds": -400})))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    t.expect(
        &Call::get("/bcdm/api/v1/devices"),
        StatusCode::UNAUTHORIZED,
        "stale_request",
    )
    .await;
    let mut call = Call::get("/bcdm/api/v1/devices");
    call.timestamp = now() - 400;
    assert_eq!(t.send(&call).await.status(), StatusCode::OK);
    t.state().set_clock_skew(0);
    assert_eq!(
        t.send(&Call::get("/bcdm/api/v1/devices")).await.status(),
        StatusCode::OK
    );
    t.sim.shutdown().await;
}

// -------------------------------------------------------------- control API

#[tokio::test]
async fn devices_and_users_change_between_syncs_through_the_control_api() {
    let t = spawn(20, 9).await;
    let state = t.state();

    let response = t
        .control(
            Method::POST,
            "/devices/generate",
            Some(json!({"count": 5, "platform": "Android"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let new: Vec<Value> = response.json().await.unwrap();
    assert!(new.iter().all(|d| d["platform"] == "Android"));
    let page = t.get_json("/bcdm/api/v1/devices?limit=1").await;
    assert_eq!(page["total"], 25);

    let first = state.devices()[0].device_id.clone();
    let response = t
        .control(Method::DELETE, &format!("/devices/{first}"), None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    t.expect(
        &Call::get(&format!("/bcdm/api/v1/devices/{first}")),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let second = state.devices()[0].device_id.clone();
    let response = t
        .control(
            Method::PATCH,
            &format!("/devices/{second}"),
            Some(json!({"os_version": "18.3", "imei": null})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let d = t.get_json(&format!("/bcdm/api/v1/devices/{second}")).await;
    assert_eq!(d["os_version"], "18.3");
    assert!(d["imei"].is_null());
    let response = t
        .control(
            Method::PATCH,
            &format!("/devices/{second}"),
            Some(json!({"ownership": "borrowed"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let device = json!({
        "device_id": "D-TEST-1", "udid": "00008101-0000AAAABBBBCCCC", "serial_number": "F2LXQ0TESTAA",
        "imei": null, "wifi_mac": "a4:67:06:00:00:01", "model": "iPad Pro", "os_version": "18.2",
        "platform": "iOS", "user_id": "U-TEST", "ownership": "corporate", "last_checkin_at": null,
        "compliant": false, "passcode_enabled": true, "encrypted": true, "jailbroken": null,
        "manufacturer": "Apple", "phone_number": null, "mtd_risk_level": null
    });
    let response = t
        .control(Method::POST, "/devices", Some(device.clone()))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = t
        .control(Method::POST, "/devices", Some(device.clone()))
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let user =
        json!({"user_id": "U-TEST", "login_id": "k.tanaka", "name": "田中 健一", "email": null});
    let response = t.control(Method::POST, "/users", Some(user.clone())).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let found = t
        .get_json("/bcdm/api/v1/devices?udid=00008101-0000aaaabbbbcccc")
        .await;
    assert_eq!(found["devices"][0], device);
    let users = t.list_all("users", 200).await.0;
    assert_eq!(users.last().unwrap(), &user);

    let response = t.control(Method::DELETE, "/users/U-TEST", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(state.device("D-TEST-1").unwrap().user_id, None);
    assert_eq!(
        t.control(Method::DELETE, "/users/U-TEST", None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_banner_tells_the_url_and_the_default_credentials() {
    let t = spawn(3, 1).await;
    let banner = t.sim.banner();
    for part in [
        format!("{}/bcdm", t.origin),
        ACCESS_KEY.to_owned(),
        SECRET_KEY.to_owned(),
        DM_CODE.to_owned(),
        t.control.clone(),
    ] {
        assert!(banner.contains(&part), "{part} missing from {banner}");
    }
    t.sim.shutdown().await;
}

#[tokio::test]
async fn credentials_are_configurable_through_the_options() {
    let mut options = SimOptions::new(vec![SimKind::Bcdm], 3, 1);
    options.bcdm.access_key = "ak-2".into();
    options.bcdm.secret_key = "sk-2".into();
    options.bcdm.dm_code = "DM-2".into();
    let t = spawn_with(options).await;
    t.expect(
        &Call::get("/bcdm/api/v1/users"),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let mut call = Call::get("/bcdm/api/v1/users");
    call.access_key = "ak-2".into();
    call.secret_key = "sk-2".into();
    call.dm_code = "DM-2".into();
    assert_eq!(t.send(&call).await.status(), StatusCode::OK);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_outbound_safety_faults_redirect_answer_html_repeat_the_first_page_and_send_a_huge_retry_after(
) {
    let t = spawn(30, 7).await;
    let state = t.state();
    let core = state.core();

    // A redirect to another origin, answered as is (the test's client does not follow).
    core.inject(Fault::redirect("http://127.0.0.1:9/elsewhere").times(1))
        .unwrap();
    let no_follow = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let call = Call::get("/bcdm/api/v1/devices");
    let response = no_follow
        .get(format!("{}{}", t.origin, call.target))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        response.headers()["location"],
        "http://127.0.0.1:9/elsewhere"
    );

    // A 2xx with an HTML page instead of BCDM's answer, even to an action.
    core.inject(Fault::html_page(200).times(1).on_paths("/actions"))
        .unwrap();
    let device_id = t.state().devices()[0].device_id.clone();
    let response = t.send(&Call::action(&device_id, "lock")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("<title>Sign in</title>"));
    assert!(
        core.actions().is_empty(),
        "the page answered instead of BCDM"
    );

    // The same page whatever the offset (the signature over the sent target still holds).
    let first = t.get_json("/bcdm/api/v1/devices?offset=0&limit=10").await;
    core.inject(Fault::repeat_page().on_paths("/devices"))
        .unwrap();
    let later = t.get_json("/bcdm/api/v1/devices?offset=20&limit=10").await;
    assert_eq!(later, first);
    let recorded = core.requests().pop().unwrap();
    assert_eq!(recorded.path, "/bcdm/api/v1/devices?offset=20&limit=10");
    assert_eq!(recorded.fault.as_deref(), Some("repeat_page"));
    core.clear_faults();
    assert_ne!(
        t.get_json("/bcdm/api/v1/devices?offset=20&limit=10").await,
        first
    );

    // A Retry-After no client should believe.
    core.inject(Fault::rate_limited(u64::MAX).times(1)).unwrap();
    let response = t.send(&Call::get("/bcdm/api/v1/users")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "18446744073709551615");
    t.sim.shutdown().await;
}

// ------------------------------------------------------------ risk level

fn put_risk(device_id: &str, body: &Value) -> Call {
    Call {
        method: Method::PUT,
        body: body.to_string().into_bytes(),
        ..Call::get(&format!("/bcdm/api/v1/devices/{device_id}/risk"))
    }
}

#[tokio::test]
async fn a_written_risk_level_is_served_in_the_listing_and_the_lookup_and_recorded() {
    let t = spawn(3, 1).await;
    let state = t.state();
    let ids: Vec<String> = state.devices().into_iter().map(|d| d.device_id).collect();
    let listed = t.get_json("/bcdm/api/v1/devices").await;
    assert!(listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d.get("mtd_risk_level") == Some(&Value::Null)));
    for level in ["secured", "low", "medium", "high", "critical", "critical"] {
        let response = t.send(&put_risk(&ids[1], &json!({ "level": level }))).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response.bytes().await.unwrap().is_empty());
        let device = t
            .get_json(&format!("/bcdm/api/v1/devices/{}", ids[1]))
            .await;
        assert_eq!(device["mtd_risk_level"], level);
        assert_eq!(state.risk_level(&ids[1]).as_deref(), Some(level));
    }
    let listed = t.get_json("/bcdm/api/v1/devices").await;
    let levels: Vec<Value> = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["mtd_risk_level"].clone())
        .collect();
    assert_eq!(levels, vec![Value::Null, json!("critical"), Value::Null]);
    let writes: Vec<(String, Option<String>, u16)> = state
        .core()
        .actions()
        .into_iter()
        .map(|a| (a.action, a.device_id, a.status))
        .collect();
    assert_eq!(
        writes,
        ["secured", "low", "medium", "high", "critical", "critical"]
            .iter()
            .map(|l| (format!("Risk:{l}"), Some(ids[1].clone()), 204))
            .collect::<Vec<_>>()
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_risk_level_that_is_not_one_or_an_unknown_device_is_refused_and_changes_nothing() {
    let t = spawn(2, 1).await;
    let state = t.state();
    let id = state.devices()[0].device_id.clone();
    for bad in [
        json!({"level": "High"}),
        json!({"level": "severe"}),
        json!({"level": 3}),
        json!({}),
    ] {
        t.expect(
            &put_risk(&id, &bad),
            StatusCode::BAD_REQUEST,
            "invalid_level",
        )
        .await;
    }
    assert_eq!(state.risk_level(&id), None);
    t.expect(
        &put_risk("no-such-device", &json!({"level": "high"})),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Signed like every request.
    let mut unsigned = put_risk(&id, &json!({"level": "high"}));
    unsigned.signed_body = Some(b"{}".to_vec());
    t.expect(&unsigned, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    let statuses: Vec<(String, u16)> = state
        .core()
        .actions()
        .into_iter()
        .map(|a| (a.action, a.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("Risk:High".into(), 400),
            ("Risk:severe".into(), 400),
            ("Risk".into(), 400),
            ("Risk".into(), 400),
            ("Risk:high".into(), 404),
        ]
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_control_api_sets_a_level_behind_the_apis_back_and_faults_apply_to_the_risk_path() {
    let t = spawn(2, 1).await;
    let state = t.state();
    let id = state.devices()[0].device_id.clone();
    let response = t
        .control(
            Method::PUT,
            &format!("/devices/{id}/risk"),
            Some(json!({"level": "medium"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let device = t.get_json(&format!("/bcdm/api/v1/devices/{id}")).await;
    assert_eq!(device["mtd_risk_level"], "medium");
    assert!(
        state.core().actions().is_empty(),
        "a drift is not an API write"
    );
    let body: Value = t
        .control(Method::GET, &format!("/devices/{id}/risk"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"level": "medium"}));
    state.set_risk_level(&id, None).unwrap();
    assert_eq!(state.risk_level(&id), None);
    assert_eq!(
        t.control(
            Method::PUT,
            "/devices/nope/risk",
            Some(json!({"level": "low"}))
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );

    state
        .core()
        .inject(Fault::rate_limited(3).times(1).on_paths("/risk"))
        .unwrap();
    let response = t.send(&put_risk(&id, &json!({"level": "high"}))).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(state.risk_level(&id), None);
    let response = t.send(&put_risk(&id, &json!({"level": "high"}))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    t.sim.shutdown().await;
}
