//! The MaaS360 simulator over loopback, driven by a raw HTTP client: what an
//! adapter would see. Every test binds port 0 and never waits for the server
//! by sleeping (`Simulator::start` returns once the socket is bound); the
//! only sleeps wait out a token lifetime or a `Retry-After`.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use mtd_sim::{
    maas360::{ActionFailure, DEFAULT_ACTION_FAILURE},
    Fault, Maas360Options, SimKind, SimOptions, Simulator,
};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const BILLING_ID: &str = "30012345";
const PLATFORM_ID: &str = "3";
const APP_ID: &str = "com.30012345.api";
const APP_VERSION: &str = "1.0";
const APP_ACCESS_KEY: &str = "sim-app-access-key";
const USERNAME: &str = "mtd-api";
const PASSWORD: &str = "sim-password";

struct TestSim {
    sim: Simulator,
    http: Client,
    base: String,
    control: String,
}

/// A simulator without the rate limit (tests that page or look up a lot
/// would trip it); the rate-limit test uses the default options.
async fn spawn(devices: usize, seed: u64) -> TestSim {
    spawn_with(
        devices,
        seed,
        Maas360Options {
            rate_limit_per_second: 0,
            ..Maas360Options::default()
        },
    )
    .await
}

async fn spawn_with(devices: usize, seed: u64, maas360: Maas360Options) -> TestSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = SimOptions::new(vec![SimKind::Maas360], devices, seed);
    options.maas360 = maas360;
    let sim = Simulator::start(listener, options).unwrap();
    let base = sim.base_url(SimKind::Maas360);
    let control = sim.control_url(SimKind::Maas360);
    assert_eq!(base, format!("http://{}/maas360", sim.local_addr()));
    TestSim {
        sim,
        http: Client::new(),
        base,
        control,
    }
}

/// The auth body with the default credentials; a `null` removes a field.
fn auth_body(changes: &[(&str, Value)]) -> Value {
    let mut auth = json!({
        "billingID": BILLING_ID,
        "platformID": PLATFORM_ID,
        "appID": APP_ID,
        "appVersion": APP_VERSION,
        "appAccessKey": APP_ACCESS_KEY,
        "userName": USERNAME,
        "password": PASSWORD,
    });
    let object = auth.as_object_mut().unwrap();
    for (name, value) in changes {
        if value.is_null() {
            object.remove(*name);
        } else {
            object.insert((*name).to_owned(), value.clone());
        }
    }
    json!({ "authRequest": { "maaS360AdminAuth": auth } })
}

fn devices_path(query: &str) -> String {
    format!("/device-apis/devices/2.0/search/customer/{BILLING_ID}?{query}")
}

fn users_path(query: &str) -> String {
    format!("/user-apis/user/1.0/search/{BILLING_ID}?{query}")
}

/// The records of a listing page: no key → none, an object → one.
fn items(page: &Value, root: &str, item: &str) -> Vec<Value> {
    match &page[root][item] {
        Value::Null => vec![],
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    }
}

/// A field that may be a string or a number, as text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

impl TestSim {
    async fn login_at(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("Accept", "application/json")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn login_response(&self, body: &Value) -> reqwest::Response {
        self.login_at(
            &format!("/auth-apis/auth/2.0/authenticate/customer/{BILLING_ID}"),
            body,
        )
        .await
    }

    /// (authToken, refreshToken) for the default credentials.
    async fn login(&self) -> (String, String) {
        let response = self.login_response(&auth_body(&[])).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["authResponse"]["errorCode"], 0, "{body}");
        (
            body["authResponse"]["authToken"]
                .as_str()
                .unwrap()
                .to_owned(),
            body["authResponse"]["refreshToken"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    async fn refresh(&self, body: &Value) -> Value {
        let response = self
            .login_at(
                &format!("/auth-apis/auth/2.0/refreshToken/customer/{BILLING_ID}"),
                body,
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// A request as the adapter sends it: the token in double quotes.
    fn authed(&self, builder: RequestBuilder, token: &str) -> RequestBuilder {
        builder
            .header("Authorization", format!("MaaS token=\"{token}\""))
            .header("Accept", "application/json")
    }

    async fn get(&self, token: &str, path_and_query: &str) -> reqwest::Response {
        self.authed(
            self.http.get(format!("{}{path_and_query}", self.base)),
            token,
        )
        .send()
        .await
        .unwrap()
    }

    async fn get_json(&self, token: &str, path_and_query: &str) -> Value {
        let response = self.get(token, path_and_query).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path_and_query}");
        response.json().await.unwrap()
    }

    /// `POST /device-apis/devices/1.0/{action}/{billingId}` with a form body.
    async fn action(&self, token: &str, action: &str, form: &str) -> reqwest::Response {
        self.authed(
            self.http.post(format!(
                "{}/device-apis/devices/1.0/{action}/{BILLING_ID}",
                self.base
            )),
            token,
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap()
    }

    async fn action_json(&self, token: &str, action: &str, form: &str) -> Value {
        let response = self.action(token, action, form).await;
        assert_eq!(response.status(), StatusCode::OK, "{action} {form}");
        let body: Value = response.json().await.unwrap();
        body["actionResponse"].clone()
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> reqwest::Response {
        self.http
            .request(method, format!("{}{path}", self.control))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn control_get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.control))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "GET {path}");
        response.json().await.unwrap()
    }
}

async fn assert_empty_400(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.text().await.unwrap(), "");
}

#[tokio::test]
async fn a_login_with_every_field_right_gets_a_token_and_a_refresh_token() {
    let t = spawn(30, 1).await;
    let (token, refresh) = t.login().await;
    assert!(token.len() > 30 && refresh.len() > 30 && token != refresh);
    let body = t
        .get_json(
            &token,
            &devices_path("pageSize=25&pageNumber=1&deviceStatus=Active"),
        )
        .await;
    assert_eq!(body["devices"]["count"], 30);
    assert_eq!(body["devices"]["pageSize"], 25);
    assert_eq!(items(&body, "devices", "device").len(), 25);

    // v1 login and the trailing slash some clients add; v1 has no refresh token.
    let r = t
        .login_at(
            &format!("/auth-apis/auth/1.0/authenticate/{BILLING_ID}/"),
            &auth_body(&[]),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["authResponse"]["errorCode"], 0);
    assert!(body["authResponse"].get("refreshToken").is_none());
    let v1_token = body["authResponse"]["authToken"].as_str().unwrap();
    let body = t
        .get_json(
            v1_token,
            &format!("/device-apis/devices/1.0/search/{BILLING_ID}/?pageSize=50"),
        )
        .await;
    assert_eq!(body["devices"]["pageSize"], 30);

    let requests = t.sim.maas360().unwrap().core().requests();
    assert_eq!(
        requests[0].path,
        format!("/maas360/auth-apis/auth/2.0/authenticate/customer/{BILLING_ID}")
    );
    assert_eq!(
        requests[1].header("authorization"),
        Some(format!("MaaS token=\"{token}\"").as_str())
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn any_wrong_login_field_gets_http_200_with_an_error_code_and_no_token() {
    let t = spawn(5, 1).await;
    for (name, code) in [
        ("billingID", 1002),
        ("userName", 1002),
        ("password", 1002),
        ("appID", 1008),
        ("appVersion", 1008),
        ("platformID", 1008),
        ("appAccessKey", 1008),
    ] {
        for value in [json!("wrong"), Value::Null] {
            let response = t.login_response(&auth_body(&[(name, value.clone())])).await;
            assert_eq!(response.status(), StatusCode::OK, "{name} {value}");
            let body: Value = response.json().await.unwrap();
            let auth = &body["authResponse"];
            assert_eq!(auth["errorCode"], code, "{name} {value}: {body}");
            assert!(auth["errorDesc"].as_str().is_some_and(|d| !d.is_empty()));
            assert!(auth.get("authToken").is_none(), "{body}");
        }
    }
    let body: Value = t
        .login_response(&auth_body(&[]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["authResponse"]["errorCode"], 0);
    // The path's billing id must be the customer's too.
    let r = t
        .login_at(
            "/auth-apis/auth/2.0/authenticate/customer/99999999",
            &auth_body(&[]),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["authResponse"]["errorCode"], 1002);
    assert_eq!(body["authResponse"]["errorDesc"], "Invalid credentials");
    // Numbers for the numeric-looking ids are accepted.
    let numeric = auth_body(&[("billingID", json!(30012345)), ("platformID", json!(3))]);
    let body: Value = t.login_response(&numeric).await.json().await.unwrap();
    assert_eq!(body["authResponse"]["errorCode"], 0);
    // Not the JSON wrapper: 400 with no useful body.
    let r = t
        .http
        .post(format!(
            "{}/auth-apis/auth/2.0/authenticate/customer/{BILLING_ID}",
            t.base
        ))
        .header("Content-Type", "application/xml")
        .body("<authRequest/>")
        .send()
        .await
        .unwrap();
    assert_empty_400(r).await;
    t.sim.shutdown().await;
}

#[tokio::test]
async fn calls_without_a_token_or_with_an_unknown_one_get_401_token_invalid() {
    let t = spawn(5, 1).await;
    let (token, _) = t.login().await;
    let url = format!("{}{}", t.base, devices_path("pageSize=25"));
    let attempts = [
        t.http.get(&url),
        t.http
            .get(&url)
            .header("Authorization", "MaaS token=\"nope\""),
        t.http
            .get(&url)
            .header("Authorization", format!("Bearer {token}")),
        t.http.get(&url).header("Authorization", "MaaS token=\"\""),
    ];
    for attempt in attempts {
        let response = attempt.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let text = response.text().await.unwrap();
        assert!(text.contains("Token invalid"), "{text}");
    }
    // Single quotes (seen in a public client) are tolerated.
    let response = t
        .http
        .get(&url)
        .header("Authorization", format!("MaaS token='{token}'"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A token of this customer on another billing id's path is refused.
    let response = t
        .get(
            &token,
            "/device-apis/devices/2.0/search/customer/99999999?pageSize=25",
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn tokens_expired_by_the_control_api_or_by_their_lifetime_get_401_token_expired() {
    let t = spawn(5, 1).await;
    let (token, _) = t.login().await;
    let path = devices_path("pageSize=25");
    assert_eq!(t.get(&token, &path).await.status(), StatusCode::OK);
    let r = t
        .control(reqwest::Method::POST, "/tokens/expire", json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let response = t.get(&token, &path).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let text = response.text().await.unwrap();
    assert!(text.contains("Token expired."), "{text}");
    // Logging in again is the cure.
    let (fresh, _) = t.login().await;
    assert_eq!(t.get(&fresh, &path).await.status(), StatusCode::OK);

    // A token lives as long as configured (60 minutes by default).
    assert_eq!(
        t.sim.maas360().unwrap().options().token_lifetime_seconds,
        3600
    );
    let r = t
        .control(
            reqwest::Method::PUT,
            "/tokens/lifetime",
            json!({"seconds": 1}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (short, _) = t.login().await;
    assert_eq!(t.get(&short, &path).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = t.get(&short, &path).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.text().await.unwrap().contains("Token expired."));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_refresh_token_renews_the_token_once_without_the_password() {
    let t = spawn(5, 1).await;
    let (_, refresh) = t.login().await;
    let refresh_body = |token: &str| {
        auth_body(&[
            ("password", Value::Null),
            ("appAccessKey", Value::Null),
            ("refreshToken", json!(token)),
        ])
    };
    let body = t.refresh(&refresh_body(&refresh)).await;
    let auth = &body["authResponse"];
    assert_eq!(auth["errorCode"], 0, "{body}");
    let (token, next_refresh) = (
        auth["authToken"].as_str().unwrap().to_owned(),
        auth["refreshToken"].as_str().unwrap().to_owned(),
    );
    assert_ne!(next_refresh, refresh);
    assert_eq!(
        t.get(&token, &devices_path("pageSize=25")).await.status(),
        StatusCode::OK
    );
    // A spent refresh token is refused as public clients expect.
    let body = t.refresh(&refresh_body(&refresh)).await;
    assert_eq!(body["authResponse"]["errorCode"], 1002);
    assert_eq!(body["authResponse"]["errorDesc"], "Invalid credentials");
    assert!(body["authResponse"].get("authToken").is_none());
    // Sending the access key along (another client does) is fine.
    let with_key = auth_body(&[
        ("password", Value::Null),
        ("refreshToken", json!(next_refresh)),
    ]);
    let body = t.refresh(&with_key).await;
    assert_eq!(body["authResponse"]["errorCode"], 0, "{body}");
    let latest = body["authResponse"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = t
        .control(reqwest::Method::POST, "/tokens/revoke-refresh", json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let body = t.refresh(&refresh_body(&latest)).await;
    assert_eq!(body["authResponse"]["errorCode"], 1002);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn paging_ten_thousand_devices_at_250_returns_each_exactly_once_with_exact_counts() {
    let t = spawn(10_000, 3).await;
    let (token, _) = t.login().await;
    let mut ids = Vec::new();
    let mut pages = 0;
    for number in 1.. {
        let body = t
            .get_json(
                &token,
                &devices_path(&format!(
                    "pageSize=250&pageNumber={number}&deviceStatus=Active"
                )),
            )
            .await;
        assert_eq!(body["devices"]["count"], 10_000);
        assert_eq!(body["devices"]["pageNumber"], number);
        let page = items(&body, "devices", "device");
        assert_eq!(body["devices"]["pageSize"], page.len());
        if page.is_empty() {
            assert!(body["devices"].get("device").is_none());
            break;
        }
        assert_eq!(page.len(), 250);
        pages += 1;
        ids.extend(
            page.iter()
                .map(|d| d["maas360DeviceID"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(pages, 40);
    assert_eq!(ids.len(), 10_000);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10_000);
    assert_eq!(ids, t.sim.maas360().unwrap().device_ids());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_thousand_seeded_devices_serve_every_posture_field_in_maas360s_words_with_variety() {
    let t = spawn(1000, 21).await;
    let (token, _) = t.login().await;
    let mut devices = Vec::new();
    for page in 1..=4 {
        let body = t
            .get_json(
                &token,
                &devices_path(&format!("pageSize=250&pageNumber={page}")),
            )
            .await;
        devices.extend(items(&body, "devices", "device"));
    }
    assert_eq!(devices.len(), 1000);
    let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
    let words =
        |field: &str| -> HashSet<String> { devices.iter().map(|d| text(&d[field])).collect() };
    let known = |field: &str, allowed: &[&str]| {
        for w in words(field) {
            assert!(allowed.contains(&w.as_str()), "{field}: {w:?}");
        }
    };
    known(
        "policyComplianceState",
        &["In Compliance", "Out of Compliance"],
    );
    known(
        "maas360ManagedStatus",
        &[
            "Enrolled",
            "Activated",
            "Control Removed",
            "Pending Control Removed",
            "Not Enrolled",
        ],
    );
    known(
        "encryptionStatus",
        &["Encryption Complete", "Not Encrypted"],
    );
    known("passcodeCompliance", &["Compliant", "Not Compliant", ""]);
    known("jailbreakStatus", &["Yes", "No"]);
    assert!(count(&|d| d["policyComplianceState"] == "In Compliance") > 700);
    assert!(count(&|d| d["policyComplianceState"] == "Out of Compliance") > 50);
    assert!(
        count(&|d| matches!(
            d["maas360ManagedStatus"].as_str(),
            Some("Enrolled" | "Activated")
        )) > 850
    );
    assert!(count(&|d| d["maas360ManagedStatus"] == "Control Removed") > 5);
    assert!(count(&|d| d["encryptionStatus"] == "Not Encrypted") > 20);
    assert!(count(&|d| d["passcodeCompliance"] == "Not Compliant") > 50);
    assert!(count(&|d| d["jailbreakStatus"] == "Yes") > 5);
    assert!(count(&|d| text(&d["phoneNumber"]).is_empty()) > 200);
    assert!(count(&|d| !text(&d["phoneNumber"]).is_empty()) > 300);
    assert!(
        count(&|d| d["phoneNumber"].is_u64()) > 10,
        "numbers as JSON numbers"
    );
    for d in &devices {
        if d["jailbreakStatus"] == "Yes" {
            assert_eq!(d["policyComplianceState"], "Out of Compliance", "{d}");
        }
        let manufacturer = d["manufacturer"].as_str().unwrap();
        match d["platformName"].as_str().unwrap() {
            "iOS" | "Mac" => assert_eq!(manufacturer, "Apple", "{d}"),
            "Android" => assert!(
                ["samsung", "Google", "Zebra Technologies", "motorola"].contains(&manufacturer),
                "{d}"
            ),
            _ => assert!(
                ["Microsoft Corporation", "Dell Inc."].contains(&manufacturer),
                "{d}"
            ),
        }
        if d["deviceType"] == "Tablet"
            || d["platformName"] == "Windows"
            || d["platformName"] == "Mac"
        {
            assert_eq!(d["phoneNumber"], "", "no SIM: {d}");
        }
        assert!(!d["model"].as_str().unwrap().is_empty());
        assert!(!text(&d["osVersion"]).is_empty());
        assert!(!d["lastReported"].as_str().unwrap().is_empty());
    }
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_page_with_exactly_one_device_has_it_as_an_object_and_an_empty_one_has_no_device_key() {
    let t = spawn(251, 4).await;
    let (token, _) = t.login().await;
    let body = t
        .get_json(&token, &devices_path("pageSize=250&pageNumber=2"))
        .await;
    assert!(body["devices"]["device"].is_object(), "{body}");
    assert_eq!(body["devices"]["count"], 251);
    assert_eq!(body["devices"]["pageSize"], 1);
    let last = t.sim.maas360().unwrap().devices().pop().unwrap();
    assert_eq!(body["devices"]["device"], last);
    let body = t
        .get_json(&token, &devices_path("pageSize=250&pageNumber=3"))
        .await;
    assert_eq!(
        body,
        json!({"devices": {"count": 251, "pageNumber": 3, "pageSize": 0}})
    );
    let body = t.get_json(&token, &devices_path("udid=no-such-udid")).await;
    assert_eq!(
        body,
        json!({"devices": {"count": 0, "pageNumber": 1, "pageSize": 0}})
    );
    // Defaults: page 1 of 250.
    let body = t.get_json(&token, &devices_path("")).await;
    assert_eq!(body["devices"]["pageSize"], 250);
    assert!(body["devices"]["device"].is_array());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn page_sizes_other_than_the_five_allowed_and_page_numbers_below_one_get_400_with_no_body() {
    let t = spawn(10, 1).await;
    let (token, _) = t.login().await;
    for query in [
        "pageSize=30",
        "pageSize=0",
        "pageSize=500",
        "pageSize=abc",
        "pageNumber=0",
        "pageNumber=-1",
        "deviceStatus=Deleted",
    ] {
        assert_empty_400(t.get(&token, &devices_path(query)).await).await;
    }
    assert_empty_400(t.get(&token, &users_path("pageSize=30")).await).await;
    assert_empty_400(t.get(&token, &users_path("includeAllUsers=3")).await).await;
    for size in [25, 50, 100, 200, 250] {
        let body = t
            .get_json(&token, &devices_path(&format!("pageSize={size}")))
            .await;
        assert_eq!(body["devices"]["count"], 10);
    }
    t.sim.shutdown().await;
}

#[tokio::test]
async fn each_exact_filter_finds_its_device() {
    let t = spawn(300, 5).await;
    let (token, _) = t.login().await;
    let state = t.sim.maas360().unwrap();
    let devices = state.devices();
    let with_number_imei = devices.iter().find(|d| d["imeiEsn"].is_u64()).unwrap();
    let with_string_imei = devices
        .iter()
        .find(|d| d["imeiEsn"].as_str().is_some_and(|s| !s.is_empty()))
        .unwrap();
    let without_imei = devices.iter().find(|d| d["imeiEsn"] == "").unwrap();
    for d in [with_number_imei, with_string_imei, without_imei] {
        let id = d["maas360DeviceID"].as_str().unwrap();
        let mut lookups = vec![
            format!("maas360DeviceId={id}"),
            format!("maas360DeviceId={}", id.to_lowercase()),
            format!("udid={}", d["udid"].as_str().unwrap()),
            format!("wifiMacAddress={}", d["wifiMacAddress"].as_str().unwrap()),
            format!(
                "wifiMacAddress={}",
                d["wifiMacAddress"].as_str().unwrap().to_uppercase()
            ),
            format!("udid={}&maas360DeviceId={id}", d["udid"].as_str().unwrap()),
        ];
        if d["imeiEsn"] != "" {
            lookups.push(format!("imeiMeid={}", text(&d["imeiEsn"])));
        }
        for query in lookups {
            let body = t
                .get_json(&token, &devices_path(&format!("pageSize=25&{query}")))
                .await;
            assert_eq!(body["devices"]["count"], 1, "{query}");
            assert_eq!(&body["devices"]["device"], d, "{query}");
        }
        // The stored form only: a MAC without colons finds nothing.
        let bare: String = d["wifiMacAddress"].as_str().unwrap().replace(':', "");
        let body = t
            .get_json(&token, &devices_path(&format!("wifiMacAddress={bare}")))
            .await;
        assert_eq!(body["devices"]["count"], 0);
        // Filters are ANDed.
        let body = t
            .get_json(
                &token,
                &devices_path(&format!("maas360DeviceId={id}&udid=someone-else")),
            )
            .await;
        assert_eq!(body["devices"]["count"], 0);
    }
    // An inactive device leaves the default (Active) listing.
    let id = without_imei["maas360DeviceID"].as_str().unwrap();
    let r = t
        .control(
            reqwest::Method::PATCH,
            &format!("/devices/{id}"),
            json!({"deviceStatus": "Inactive"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = t
        .get_json(&token, &devices_path(&format!("maas360DeviceId={id}")))
        .await;
    assert_eq!(body["devices"]["count"], 0);
    let body = t
        .get_json(
            &token,
            &devices_path(&format!("maas360DeviceId={id}&deviceStatus=Inactive")),
        )
        .await;
    assert_eq!(body["devices"]["count"], 1);
    let body = t
        .get_json(&token, &devices_path("pageSize=250&pageNumber=2"))
        .await;
    assert_eq!(body["devices"]["count"], 299);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn users_are_listed_with_the_one_object_quirk_and_agree_with_the_devices() {
    let t = spawn(200, 6).await;
    let (token, _) = t.login().await;
    let state = t.sim.maas360().unwrap();
    let all_users = state.users();
    let body = t
        .get_json(
            &token,
            &users_path("includeAllUsers=1&pageSize=250&pageNumber=1"),
        )
        .await;
    assert_eq!(body["users"]["count"], all_users.len());
    let listed = items(&body, "users", "user");
    assert_eq!(listed, all_users);
    for u in &listed {
        for field in ["userIdentifier", "userName", "fullName", "domain", "status"] {
            assert!(
                u[field].as_str().is_some_and(|v| !v.is_empty()),
                "{field} {u}"
            );
        }
        assert!(u["emailAddress"].is_string());
    }
    assert!(listed.iter().any(|u| u["emailAddress"] == ""));
    // Every device user is a listed user with the same email.
    let devices = state.devices();
    for d in devices.iter().filter(|d| d["username"] != "") {
        let u = listed
            .iter()
            .find(|u| u["userName"] == d["username"])
            .unwrap();
        assert_eq!(u["emailAddress"], d["emailAddress"]);
    }
    assert!(devices.iter().any(|d| d["username"] == ""));
    // Default: users with a device; 2: users without one.
    let with: Value = t.get_json(&token, &users_path("pageSize=250")).await;
    let without: Value = t
        .get_json(&token, &users_path("includeAllUsers=2&pageSize=250"))
        .await;
    let (with, without) = (
        with["users"]["count"].as_u64().unwrap(),
        without["users"]["count"].as_u64().unwrap(),
    );
    assert!(with > 0 && without > 0);
    assert_eq!(with + without, all_users.len() as u64);
    // One user on a page: an object; past the end: no `user` key.
    let name_of = |u: &Value| u["userName"].as_str().unwrap().to_lowercase();
    let one = all_users
        .iter()
        .find(|u| {
            let name = name_of(u);
            all_users
                .iter()
                .filter(|o| name_of(o).starts_with(&name))
                .count()
                == 1
        })
        .unwrap();
    let name = one["userName"].as_str().unwrap();
    let body = t
        .get_json(
            &token,
            &users_path(&format!("includeAllUsers=1&partialUsername={name}")),
        )
        .await;
    assert_eq!(body["users"]["count"], 1, "{body}");
    assert_eq!(&body["users"]["user"], one);
    let body = t
        .get_json(
            &token,
            &users_path("includeAllUsers=1&pageSize=250&pageNumber=9"),
        )
        .await;
    assert!(body["users"].get("user").is_none());
    assert_eq!(body["users"]["pageSize"], 0);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn lock_selective_wipe_and_wipe_are_answered_action_status_0_and_recorded() {
    let t = spawn(20, 7).await;
    let (token, _) = t.login().await;
    let state = t.sim.maas360().unwrap();
    let id = state.device_ids()[3].clone();
    let calls = [
        ("lockDevice", format!("deviceId={id}")),
        ("selectiveWipeDevice", format!("deviceId={id}")),
        (
            "wipeDevice",
            format!("deviceId={id}&notifyMe=No&notifyUser=No"),
        ),
    ];
    let mut action_ids = HashSet::new();
    for (action, form) in &calls {
        let answer = t.action_json(&token, action, form).await;
        assert_eq!(answer["actionStatus"], 0, "{answer}");
        assert_eq!(answer["maas360DeviceID"], id.as_str());
        assert!(answer["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
        assert!(action_ids.insert(answer["actionID"].as_u64().unwrap()));
    }
    let recorded = state.core().actions();
    assert_eq!(recorded.len(), 3);
    for (r, (action, form)) in recorded.iter().zip(&calls) {
        assert_eq!(r.kind, SimKind::Maas360);
        assert_eq!(&r.action, action);
        assert_eq!(r.device_ref, id);
        assert_eq!(r.device_id.as_deref(), Some(id.as_str()));
        assert_eq!(r.body, json!(form));
        assert_eq!(r.status, 200);
    }
    // The same records through the control API.
    let listed = t.control_get("/actions").await;
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(listed[2]["action"], "wipeDevice");
    // Parameters in the query string with no body work too.
    let r = t
        .authed(
            t.http.post(format!(
                "{}/device-apis/devices/1.0/cancelPendingWipe/{BILLING_ID}?deviceId={id}",
                t.base
            )),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["actionResponse"]["actionStatus"], 0);
    let results = t.control_get("/action-results").await;
    assert_eq!(results.as_array().unwrap().len(), 4);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_device_gets_action_status_1_and_bad_requests_get_400_without_body() {
    let t = spawn(5, 1).await;
    let (token, _) = t.login().await;
    let answer = t
        .action_json(&token, "lockDevice", "deviceId=ApplNOSUCHDEVICE")
        .await;
    assert_eq!(answer["actionStatus"], 1, "{answer}");
    assert_eq!(answer["maas360DeviceID"], "ApplNOSUCHDEVICE");
    assert!(answer["description"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    assert!(answer.get("actionID").is_none());

    let id = t.sim.maas360().unwrap().device_ids()[0].clone();
    assert_empty_400(t.action(&token, "lockDevice", "").await).await;
    assert_empty_400(t.action(&token, "lockDevice", "deviceId=").await).await;
    assert_empty_400(
        t.action(
            &token,
            "wipeDevice",
            &format!("deviceId={id}&notifyMe=Maybe"),
        )
        .await,
    )
    .await;
    let json_body = t
        .authed(
            t.http.post(format!(
                "{}/device-apis/devices/1.0/lockDevice/{BILLING_ID}",
                t.base
            )),
            &token,
        )
        .json(&json!({"deviceId": id}))
        .send()
        .await
        .unwrap();
    assert_empty_400(json_body).await;
    let statuses: Vec<u16> = t
        .sim
        .maas360()
        .unwrap()
        .core()
        .actions()
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses, vec![200, 400, 400, 400, 400]);
    // An action MaaS360 does not have is not found.
    let r = t
        .action(&token, "rebootDevice", &format!("deviceId={id}"))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_planned_failure_answers_action_status_1_for_an_existing_device_once() {
    let t = spawn(5, 1).await;
    let (token, _) = t.login().await;
    let state = t.sim.maas360().unwrap();
    let ids = state.device_ids();
    let r = t
        .control(
            reqwest::Method::POST,
            "/action-failures",
            json!({"device_id": ids[1], "action": "lockDevice", "description": "Device is not reachable."}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Another action, or another device, is not affected.
    let answer = t
        .action_json(&token, "wipeDevice", &format!("deviceId={}", ids[1]))
        .await;
    assert_eq!(answer["actionStatus"], 0);
    let answer = t
        .action_json(&token, "lockDevice", &format!("deviceId={}", ids[2]))
        .await;
    assert_eq!(answer["actionStatus"], 0);
    let answer = t
        .action_json(&token, "lockDevice", &format!("deviceId={}", ids[1]))
        .await;
    assert_eq!(answer["actionStatus"], 1);
    assert_eq!(answer["description"], "Device is not reachable.");
    assert_eq!(answer["maas360DeviceID"], ids[1].as_str());
    let answer = t
        .action_json(&token, "lockDevice", &format!("deviceId={}", ids[1]))
        .await;
    assert_eq!(answer["actionStatus"], 0);
    // In process: any action, default description.
    state
        .fail_next_action(ActionFailure::next(&ids[0]))
        .unwrap();
    let answer = t
        .action_json(
            &token,
            "selectiveWipeDevice",
            &format!("deviceId={}", ids[0]),
        )
        .await;
    assert_eq!(answer["actionStatus"], 1);
    assert_eq!(answer["description"], DEFAULT_ACTION_FAILURE);
    let results = state.action_results();
    let statuses: Vec<u8> = results.iter().map(|r| r.action_status).collect();
    assert_eq!(statuses, vec![0, 0, 1, 0, 1]);
    assert!(state.action_failures().is_empty());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn custom_attributes_set_through_the_api_are_read_back_by_identity() {
    let t = spawn(5, 1).await;
    let (token, _) = t.login().await;
    let id = t.sim.maas360().unwrap().device_ids()[2].clone();
    let identity = format!("/device-apis/devices/1.0/identity/{BILLING_ID}?deviceId={id}");
    let body = t.get_json(&token, &identity).await;
    assert_eq!(body["deviceIdentity"]["maas360DeviceID"], id.as_str());
    assert!(body["deviceIdentity"]["customAttributes"]
        .get("customAttribute")
        .is_none());
    let answer = t
        .action_json(
            &token,
            "setCustomAttributeValue",
            &format!("deviceId={id}&attributeName=MTD_Threat_Level&attributeValue=High"),
        )
        .await;
    assert_eq!(answer["actionStatus"], 0, "{answer}");
    let body = t.get_json(&token, &identity).await;
    assert_eq!(
        body["deviceIdentity"]["customAttributes"]["customAttribute"],
        json!({"customAttributeName": "MTD_Threat_Level", "customAttributeValue": "High"})
    );
    // Only attributes the customer defined can be set.
    let answer = t
        .action_json(
            &token,
            "setCustomAttributeValue",
            &format!("deviceId={id}&attributeName=Other&attributeValue=x"),
        )
        .await;
    assert_eq!(answer["actionStatus"], 1, "{answer}");
    t.sim
        .maas360()
        .unwrap()
        .define_custom_attribute("Other")
        .unwrap();
    let answer = t
        .action_json(
            &token,
            "setCustomAttributeValue",
            &format!("deviceId={id}&attributeName=Other&attributeValue=x"),
        )
        .await;
    assert_eq!(answer["actionStatus"], 0, "{answer}");
    t.action_json(
        &token,
        "setCustomAttributeValue",
        &format!("deviceId={id}&attributeName=MTD_Threat_Level&attributeValue=Secured"),
    )
    .await;
    let body = t.get_json(&token, &identity).await;
    assert_eq!(
        body["deviceIdentity"]["customAttributes"]["customAttribute"],
        json!([
            {"customAttributeName": "MTD_Threat_Level", "customAttributeValue": "Secured"},
            {"customAttributeName": "Other", "customAttributeValue": "x"},
        ])
    );
    let answer = t
        .action_json(
            &token,
            "setCustomAttributeValue",
            &format!("deviceId={id}&attributeName=MTD_Threat_Level&attributeValue=v1.2"),
        )
        .await;
    assert_eq!(answer["actionStatus"], 1);
    assert_empty_400(
        t.action(
            &token,
            "setCustomAttributeValue",
            &format!("deviceId={id}&attributeValue=x"),
        )
        .await,
    )
    .await;
    t.sim.shutdown().await;
}

#[tokio::test]
async fn beyond_20_requests_in_a_rolling_second_the_billing_id_gets_429_with_retry_after() {
    let t = spawn_with(5, 1, Maas360Options::default()).await;
    let state = t.sim.maas360().unwrap();
    assert_eq!(state.options().rate_limit_per_second, 20);
    let token = state.issue_token();
    let path = devices_path("pageSize=25");
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..40 {
        let response = t.get(&token, &path).await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    assert!(
        statuses[..20].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let response = limited.expect("a 429 within 40 quick requests");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    let body: Value = response.json().await.unwrap();
    assert!(body["errorResponse"]["errorDesc"].is_string(), "{body}");
    assert!(!state.rate_limited_requests().is_empty());
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(t.get(&token, &path).await.status(), StatusCode::OK);
    let limit = t.control_get("/rate-limit").await;
    assert_eq!(limit["requests_per_second"], 20);
    assert!(limit["rate_limited"].as_u64().unwrap() >= 1);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn core_faults_apply_to_maas360_routes_but_not_to_the_login_by_default() {
    let t = spawn(300, 1).await;
    let (token, _) = t.login().await;
    let path = devices_path("pageSize=25");
    for fault in [
        json!({"status": 503, "count": 2}),
        json!({"status": 502, "count": 1}),
        json!({"status": 400, "count": 1}),
        json!({"status": 429, "retry_after": 7, "count": 1}),
    ] {
        let r = t.control(reqwest::Method::POST, "/faults", fault).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    // The login endpoint is skipped by faults unless they say otherwise.
    t.login().await;
    for _ in 0..2 {
        let r = t.get(&token, &path).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = r.json().await.unwrap();
        assert!(body["errorResponse"]["errorCode"].is_u64());
    }
    let r = t.get(&token, &path).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_empty_400(t.get(&token, &path).await).await;
    let r = t.get(&token, &path).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(t.get(&token, &path).await.status(), StatusCode::OK);

    // A dropped connection, added latency, the same page forever.
    let state = t.sim.maas360().unwrap();
    state
        .core()
        .inject(Fault::drop_connection().times(1).on_paths("/user-apis/"))
        .unwrap();
    let err = t
        .authed(t.http.get(format!("{}{}", t.base, users_path(""))), &token)
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err}");
    state
        .core()
        .inject(Fault::latency(Duration::from_millis(300)).times(1))
        .unwrap();
    let started = Instant::now();
    assert_eq!(t.get(&token, &path).await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let first = t
        .get_json(&token, &devices_path("pageSize=100&pageNumber=1"))
        .await;
    state
        .core()
        .inject(Fault::repeat_page().on_paths("/device-apis/"))
        .unwrap();
    let third = t
        .get_json(&token, &devices_path("pageSize=100&pageNumber=3"))
        .await;
    assert_eq!(first, third);
    state.core().clear_faults();
    let third = t
        .get_json(&token, &devices_path("pageSize=100&pageNumber=3"))
        .await;
    assert_ne!(first, third);
    // An action whose answer is lost still took effect and was recorded.
    let id = state.device_ids()[0].clone();
    state
        .core()
        .inject(Fault::drop_answer().times(1).on_paths("lockDevice"))
        .unwrap();
    let err = t
        .authed(
            t.http.post(format!(
                "{}/device-apis/devices/1.0/lockDevice/{BILLING_ID}",
                t.base
            )),
            &token,
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("deviceId={id}"))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err}");
    assert_eq!(state.action_results().len(), 1);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn devices_and_users_changed_through_the_control_api_show_in_the_next_listing() {
    let t = spawn(10, 2).await;
    let (token, _) = t.login().await;
    let state = t.sim.maas360().unwrap();
    let r = t
        .control(
            reqwest::Method::POST,
            "/devices/generate",
            json!({"count": 5}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut device = state.devices()[0].clone();
    device["maas360DeviceID"] = json!("ApplADDED000001");
    device["udid"] = json!("added-udid");
    let r = t.control(reqwest::Method::POST, "/devices", device).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let removed = state.device_ids()[0].clone();
    let r = t
        .control(
            reqwest::Method::DELETE,
            &format!("/devices/{removed}"),
            json!(null),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = t.get_json(&token, &devices_path("")).await;
    assert_eq!(body["devices"]["count"], 15);
    let ids: Vec<String> = items(&body, "devices", "device")
        .iter()
        .map(|d| d["maas360DeviceID"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"ApplADDED000001".to_owned()));
    assert!(!ids.contains(&removed));
    // A user renamed: its devices follow; removed: they have no user.
    let user = state
        .devices()
        .iter()
        .find(|d| d["username"] != "")
        .map(|d| d["username"].as_str().unwrap().to_owned())
        .unwrap();
    let r = t
        .control(
            reqwest::Method::PATCH,
            &format!("/users/{user}"),
            json!({"userName": "renamed.user", "emailAddress": "renamed@acme.example"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = t
        .get_json(&token, &devices_path("email=renamed@acme.example"))
        .await;
    assert!(body["devices"]["count"].as_u64().unwrap() >= 1);
    for d in items(&body, "devices", "device") {
        assert_eq!(d["username"], "renamed.user");
    }
    let r = t
        .control(reqwest::Method::DELETE, "/users/renamed.user", json!(null))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = t
        .get_json(&token, &devices_path("email=renamed@acme.example"))
        .await;
    assert_eq!(body["devices"]["count"], 0);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_same_seed_gives_the_same_data_and_the_banner_names_what_to_configure() {
    let a = spawn(300, 9).await;
    let b = spawn(300, 9).await;
    let c = spawn(300, 10).await;
    let devices = a.sim.maas360().unwrap().devices();
    assert_eq!(devices, b.sim.maas360().unwrap().devices());
    assert_eq!(
        a.sim.maas360().unwrap().users(),
        b.sim.maas360().unwrap().users()
    );
    assert_ne!(devices, c.sim.maas360().unwrap().devices());
    let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
    for platform in ["iOS", "Android", "Windows", "Mac"] {
        assert!(count(&|d| d["platformName"] == platform) > 0, "{platform}");
    }
    for ownership in ["Corporate Owned", "Employee Owned", "Shared", ""] {
        assert!(count(&|d| d["ownership"] == ownership) > 0, "{ownership:?}");
    }
    assert!(count(&|d| d["imeiEsn"].is_number()) > 0);
    assert!(count(&|d| d["osVersion"].is_number()) > 0);
    for d in &devices {
        let mac = d["wifiMacAddress"].as_str().unwrap();
        assert_eq!(mac, mac.to_lowercase());
        assert_eq!(mac.split(':').count(), 6);
        let reported = d["lastReported"].as_str().unwrap();
        assert_eq!(reported.len(), 19, "{reported}");
        assert!(d["lastReportedInEpochms"].is_i64());
        assert!(d["isSupervisedDevice"].is_boolean());
        for field in [
            "maas360DeviceID",
            "deviceName",
            "platformName",
            "manufacturer",
            "model",
            "osName",
            "udid",
            "deviceStatus",
            "maas360ManagedStatus",
            "policyComplianceState",
            "encryptionStatus",
            "jailbreakStatus",
        ] {
            assert!(
                d[field].as_str().is_some_and(|v| !v.is_empty()),
                "{field} {d}"
            );
        }
    }
    let banner = a.sim.banner();
    assert!(
        banner.starts_with("MaaS360 simulator: 300 devices, "),
        "{banner}"
    );
    for needle in [
        format!("url:            {}", a.base),
        BILLING_ID.to_owned(),
        PLATFORM_ID.to_owned(),
        APP_ID.to_owned(),
        APP_ACCESS_KEY.to_owned(),
        USERNAME.to_owned(),
        PASSWORD.to_owned(),
        format!("control API:    {}", a.control),
    ] {
        assert!(banner.contains(&needle), "{needle} missing from {banner}");
    }
    // `sim --kind mcms` is the MaaS360 simulator.
    assert_eq!("mcms".parse::<SimKind>().unwrap(), SimKind::Maas360);
    a.sim.shutdown().await;
    b.sim.shutdown().await;
    c.sim.shutdown().await;
}

// ------------------------------------------------------------ risk signal

#[tokio::test]
async fn the_risk_attribute_is_defined_at_start_and_its_writes_are_recorded_per_device() {
    let t = spawn(4, 2).await;
    let (token, _) = t.login().await;
    let state = t.sim.maas360().unwrap();
    assert_eq!(state.custom_attribute_names(), vec!["MTD_Threat_Level"]);
    let ids = state.device_ids();
    for value in ["Secured", "Low", "Medium", "High", "Critical", "Critical"] {
        let answer = t
            .action_json(
                &token,
                "setCustomAttributeValue",
                &format!(
                    "deviceId={}&attributeName=MTD_Threat_Level&attributeValue={value}",
                    ids[1]
                ),
            )
            .await;
        assert_eq!(answer["actionStatus"], 0, "{answer}");
        assert!(answer["actionID"].is_number());
        assert_eq!(
            state
                .custom_attribute(&ids[1], "MTD_Threat_Level")
                .as_deref(),
            Some(value)
        );
    }
    assert_eq!(state.custom_attribute(&ids[0], "MTD_Threat_Level"), None);
    let writes: Vec<(String, Option<String>, u16)> = state
        .core()
        .actions()
        .into_iter()
        .map(|a| (a.action, a.device_id, a.status))
        .collect();
    let id = Some(ids[1].clone());
    assert_eq!(
        writes,
        ["Secured", "Low", "Medium", "High", "Critical", "Critical"]
            .iter()
            .map(|v| (
                format!("SetCustomAttribute:MTD_Threat_Level={v}"),
                id.clone(),
                200
            ))
            .collect::<Vec<_>>()
    );
    // The identity shows the value; the attribute name is matched ignoring case.
    let answer = t
        .action_json(
            &token,
            "setCustomAttributeValue",
            &format!(
                "deviceId={}&attributeName=mtd_threat_level&attributeValue=Low",
                ids[1]
            ),
        )
        .await;
    assert_eq!(answer["actionStatus"], 0);
    let body = t
        .get_json(
            &token,
            &format!(
                "/device-apis/devices/1.0/identity/{BILLING_ID}?deviceId={}",
                ids[1]
            ),
        )
        .await;
    assert_eq!(
        body["deviceIdentity"]["customAttributes"]["customAttribute"],
        json!({"customAttributeName": "MTD_Threat_Level", "customAttributeValue": "Low"})
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn an_undefined_attribute_is_refused_with_action_status_1_naming_it() {
    let t = spawn(2, 2).await;
    let (token, _) = t.login().await;
    let state = t.sim.maas360().unwrap();
    let id = state.device_ids()[0].clone();
    assert!(state.remove_custom_attribute("MTD_Threat_Level"));
    let answer = t
        .action_json(
            &token,
            "setCustomAttributeValue",
            &format!("deviceId={id}&attributeName=MTD_Threat_Level&attributeValue=High"),
        )
        .await;
    assert_eq!(answer["actionStatus"], 1, "{answer}");
    assert!(answer.get("actionID").is_none());
    let description = answer["description"].as_str().unwrap();
    assert!(
        description.contains("MTD_Threat_Level") && description.contains("not defined"),
        "{description}"
    );
    assert_eq!(state.custom_attribute(&id, "MTD_Threat_Level"), None);
    // Recorded as received (HTTP 200); the action results tell the refusal.
    let recorded = state.core().actions();
    assert_eq!(
        recorded[0].action,
        "SetCustomAttribute:MTD_Threat_Level=High"
    );
    assert_eq!(recorded[0].status, 200);
    assert_eq!(state.action_results()[0].action_status, 1);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_control_api_drifts_values_and_renames_or_removes_definitions() {
    use reqwest::Method;
    let t = spawn(2, 2).await;
    let (token, _) = t.login().await;
    let state = t.sim.maas360().unwrap();
    let id = state.device_ids()[0].clone();
    let identity = format!("/device-apis/devices/1.0/identity/{BILLING_ID}?deviceId={id}");

    let response = t
        .control(
            Method::PUT,
            &format!("/devices/{id}/custom-attributes/MTD_Threat_Level"),
            json!("High"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let body = t.get_json(&token, &identity).await;
    assert_eq!(
        body["deviceIdentity"]["customAttributes"]["customAttribute"]["customAttributeValue"],
        "High"
    );
    assert!(
        state.core().actions().is_empty(),
        "a drift is not an API write"
    );
    assert_eq!(
        t.control_get(&format!("/devices/{id}/custom-attributes"))
            .await,
        json!({"MTD_Threat_Level": "High"})
    );
    assert_eq!(
        t.control(
            Method::PUT,
            &format!("/devices/{id}/custom-attributes/Nope"),
            json!("x")
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    state
        .set_custom_attribute_value(&id, "MTD_Threat_Level", None)
        .unwrap();
    assert_eq!(state.custom_attribute(&id, "MTD_Threat_Level"), None);
    state
        .set_custom_attribute_value(&id, "MTD_Threat_Level", Some("Medium"))
        .unwrap();

    let response = t
        .control(
            Method::PATCH,
            "/custom-attribute-definitions/MTD_Threat_Level",
            json!({"name": "MTD_Risk"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        state.custom_attribute(&id, "MTD_Risk").as_deref(),
        Some("Medium")
    );
    assert_eq!(
        t.control_get("/custom-attribute-definitions").await,
        json!(["MTD_Risk"])
    );
    let response = t
        .control(
            Method::DELETE,
            "/custom-attribute-definitions/MTD_Risk",
            json!(null),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(state.custom_attribute(&id, "MTD_Risk"), None);
    let response = t
        .control(
            Method::POST,
            "/custom-attribute-definitions",
            json!({"name": "MTD_Threat_Level"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(state.custom_attribute_names(), vec!["MTD_Threat_Level"]);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn faults_apply_to_the_custom_attribute_write_and_the_identity() {
    let t = spawn(2, 2).await;
    let (token, _) = t.login().await;
    let state = t.sim.maas360().unwrap();
    let id = state.device_ids()[0].clone();
    state
        .core()
        .inject(
            Fault::rate_limited(3)
                .times(1)
                .on_paths("/setCustomAttributeValue/"),
        )
        .unwrap();
    state
        .core()
        .inject(Fault::status(503).times(1).on_paths("/identity/"))
        .unwrap();
    let form = format!("deviceId={id}&attributeName=MTD_Threat_Level&attributeValue=High");
    let response = t.action(&token, "setCustomAttributeValue", &form).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(state.custom_attribute(&id, "MTD_Threat_Level"), None);
    let identity = format!("/device-apis/devices/1.0/identity/{BILLING_ID}?deviceId={id}");
    assert_eq!(
        t.get(&token, &identity).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        t.action_json(&token, "setCustomAttributeValue", &form)
            .await["actionStatus"],
        0
    );
    assert_eq!(t.get(&token, &identity).await.status(), StatusCode::OK);
    t.sim.shutdown().await;
}
