//! The AirWatch simulator over loopback, driven by a raw HTTP client:
//! what an adapter would see. Every test binds port 0 and never waits for the
//! server by sleeping (`Simulator::start` returns once the socket is bound).

use std::{
    collections::HashSet,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mtd_sim::{AirwatchOptions, Fault, SimKind, SimOptions, Simulator};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const USERNAME: &str = "mtd-api";
const PASSWORD: &str = "sim-password";
const API_KEY: &str = "sim-api-key";
const NO_API_ROLE: &str = "mtd-noapi";

struct TestSim {
    sim: Simulator,
    http: Client,
    base: String,
    control: String,
}

async fn spawn(devices: usize, seed: u64) -> TestSim {
    spawn_with(devices, seed, AirwatchOptions::default()).await
}

async fn spawn_with(devices: usize, seed: u64, airwatch: AirwatchOptions) -> TestSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = SimOptions::new(vec![SimKind::Airwatch], devices, seed);
    options.airwatch = airwatch;
    let sim = Simulator::start(listener, options).unwrap();
    let base = sim.base_url(SimKind::Airwatch);
    let control = sim.control_url(SimKind::Airwatch);
    assert_eq!(base, format!("http://{}/airwatch", sim.local_addr()));
    TestSim {
        sim,
        http: Client::new(),
        base,
        control,
    }
}

impl TestSim {
    /// A request with the default credentials, as the adapter sends them.
    fn authed(&self, builder: RequestBuilder) -> RequestBuilder {
        builder
            .basic_auth(USERNAME, Some(PASSWORD))
            .header("aw-tenant-code", API_KEY)
            .header("Accept", "application/json")
    }

    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.authed(self.http.get(format!("{}{}", self.base, path_and_query)))
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path_and_query: &str) -> Value {
        let response = self.get(path_and_query).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path_and_query}");
        response.json().await.unwrap()
    }

    async fn post(&self, path_and_query: &str, body: Option<Value>) -> reqwest::Response {
        let builder = self.authed(self.http.post(format!("{}{}", self.base, path_and_query)));
        let builder = match body {
            Some(body) => builder.json(&body),
            None => builder.header("Content-Length", "0"),
        };
        builder.send().await.unwrap()
    }

    async fn control_get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{}", self.control, path))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "GET {path}");
        response.json().await.unwrap()
    }

    async fn control_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> reqwest::Response {
        self.http
            .request(method, format!("{}{}", self.control, path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Every device, page by page, until the 204.
    async fn list_all(&self, page_size: usize) -> (Vec<Value>, Vec<usize>) {
        let mut devices = Vec::new();
        let mut pages = Vec::new();
        for page in 0.. {
            let response = self
                .get(&format!(
                    "/API/mdm/devices/search?page={page}&pagesize={page_size}"
                ))
                .await;
            if response.status() == StatusCode::NO_CONTENT {
                return (devices, pages);
            }
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["Page"], page);
            assert_eq!(body["PageSize"], page_size);
            let items = body["Devices"].as_array().unwrap();
            pages.push(items.len());
            devices.extend(items.iter().cloned());
        }
        unreachable!()
    }
}

fn assert_aw_error(body: &Value, code: u64) {
    assert_eq!(body["errorCode"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn the_right_credentials_read_devices_under_both_api_spellings() {
    let t = spawn(10, 1).await;
    for prefix in ["/API", "/api"] {
        let body = t
            .get_json(&format!("{prefix}/mdm/devices/search?page=0&pagesize=5"))
            .await;
        assert_eq!(body["Devices"].as_array().unwrap().len(), 5);
        assert_eq!(body["Total"], 10);
    }
    let requests = t.sim.airwatch().unwrap().core().requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].path,
        "/airwatch/API/mdm/devices/search?page=0&pagesize=5"
    );
    assert_eq!(requests[0].header("aw-tenant-code"), Some(API_KEY));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_a_wrong_key_or_missing_credentials_get_401_with_error_code_1005() {
    let t = spawn(5, 1).await;
    let url = format!("{}/API/mdm/devices/search", t.base);
    let attempts = [
        t.http
            .get(&url)
            .basic_auth(USERNAME, Some("wrong"))
            .header("aw-tenant-code", API_KEY),
        t.http
            .get(&url)
            .basic_auth(USERNAME, Some(PASSWORD))
            .header("aw-tenant-code", "wrong"),
        t.http.get(&url).basic_auth(USERNAME, Some(PASSWORD)),
        t.http.get(&url).header("aw-tenant-code", API_KEY),
        t.http
            .get(&url)
            .basic_auth("someone", Some(PASSWORD))
            .header("aw-tenant-code", API_KEY),
        // The no-API-role account with a wrong key is refused as 401 too.
        t.http
            .get(&url)
            .basic_auth(NO_API_ROLE, Some(PASSWORD))
            .header("aw-tenant-code", "wrong"),
    ];
    for attempt in attempts {
        let response = attempt.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        // Refused requests use no quota and carry no rate-limit headers.
        assert!(header(&response, "x-ratelimit-remaining").is_none());
        let body: Value = response.json().await.unwrap();
        assert_aw_error(&body, 1005);
    }
    assert_eq!(t.sim.airwatch().unwrap().rate_limit().remaining, 5000);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn an_account_without_the_api_role_gets_403_everywhere() {
    let t = spawn(5, 1).await;
    for path in [
        "/API/mdm/devices/search",
        "/API/system/users/search",
        "/API/mdm/devices?searchby=Udid&id=X",
    ] {
        let response = t
            .http
            .get(format!("{}{path}", t.base))
            .basic_auth(NO_API_ROLE, Some(PASSWORD))
            .header("aw-tenant-code", API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert_aw_error(&response.json().await.unwrap(), 1013);
    }
    t.sim.shutdown().await;
}

#[tokio::test]
async fn devices_are_paged_from_page_zero_with_total_and_a_page_past_the_end_is_204_without_body() {
    let t = spawn(23, 4).await;
    let (devices, pages) = t.list_all(10).await;
    assert_eq!(pages, vec![10, 10, 3]);
    let seeded = t.sim.airwatch().unwrap().device_ids();
    let listed: Vec<u64> = devices
        .iter()
        .map(|d| d["Id"]["Value"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, seeded);
    let body = t
        .get_json("/API/mdm/devices/search?page=1&pagesize=10")
        .await;
    assert_eq!(body["Total"], 23);

    let past = t.get("/API/mdm/devices/search?page=3&pagesize=10").await;
    assert_eq!(past.status(), StatusCode::NO_CONTENT);
    assert!(header(&past, "content-type").is_none());
    assert!(past.bytes().await.unwrap().is_empty());

    // Without paging parameters: page 0 of AirWatch's default size 500.
    let body = t.get_json("/API/mdm/devices/search").await;
    assert_eq!(body["PageSize"], 500);
    assert_eq!(body["Devices"].as_array().unwrap().len(), 23);
    // Parameter names are case-insensitive.
    let body = t
        .get_json("/API/mdm/devices/search?Page=2&PageSize=10")
        .await;
    assert_eq!(body["Devices"].as_array().unwrap().len(), 3);

    for bad in ["page=-1", "pagesize=0", "pagesize=ten"] {
        let response = t.get(&format!("/API/mdm/devices/search?{bad}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_aw_error(&response.json().await.unwrap(), 1000);
    }
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_server_without_devices_answers_the_first_page_with_204() {
    let t = spawn(0, 1).await;
    let response = t.get("/API/mdm/devices/search?page=0&pagesize=500").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn users_are_paged_like_devices_and_groups_come_as_organisation_groups() {
    let t = spawn(40, 2).await;
    let users = t.sim.airwatch().unwrap().users();
    assert_eq!(users.len(), 30);
    let body = t
        .get_json("/API/system/users/search?page=0&pagesize=20")
        .await;
    assert_eq!(body["Total"], 30);
    assert_eq!(body["Page"], 0);
    assert_eq!(body["PageSize"], 20);
    let first = &body["Users"][0];
    for field in [
        "UserName",
        "FirstName",
        "LastName",
        "Email",
        "Status",
        "Group",
    ] {
        assert!(
            first.get(field).is_some(),
            "user field {field} missing: {first}"
        );
    }
    assert!(first["Id"]["Value"].is_u64());
    let body = t
        .get_json("/API/system/users/search?page=1&pagesize=20")
        .await;
    assert_eq!(body["Users"].as_array().unwrap().len(), 10);
    let past = t.get("/API/system/users/search?page=2&pagesize=20").await;
    assert_eq!(past.status(), StatusCode::NO_CONTENT);

    let body = t.get_json("/API/system/groups/search").await;
    let groups = body["OrganizationGroups"].as_array().unwrap();
    assert_eq!(body["TotalResults"], groups.len());
    let names: HashSet<&str> = groups.iter().map(|g| g["Name"].as_str().unwrap()).collect();
    for d in t.sim.airwatch().unwrap().devices() {
        assert!(names.contains(d["LocationGroupName"].as_str().unwrap()));
    }
    assert!(names.contains("Global") && names.contains("Acme Corp"));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn each_searchby_finds_its_device_in_any_case_and_an_unknown_value_gets_404() {
    let t = spawn(50, 3).await;
    let devices = t.sim.airwatch().unwrap().devices();
    let with_imei = devices.iter().find(|d| d["Imei"] != "").unwrap();
    let mac = with_imei["MacAddress"].as_str().unwrap();
    let colons = mac
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_lowercase())
        .collect::<Vec<_>>()
        .join(":");
    let udid = with_imei["Udid"].as_str().unwrap();
    let serial = with_imei["SerialNumber"].as_str().unwrap();
    let imei = with_imei["Imei"].as_str().unwrap();
    for (searchby, id) in [
        ("Udid", udid.to_uppercase()),
        ("udid", udid.to_lowercase()),
        ("Serialnumber", serial.to_uppercase()),
        ("SERIALNUMBER", serial.to_lowercase()),
        ("Macaddress", mac.to_owned()),
        ("macaddress", colons.clone()),
        ("ImeiNumber", imei.to_owned()),
    ] {
        let found = t
            .get_json(&format!(
                "/API/mdm/devices?searchby={searchby}&id={}",
                urlencode(&id)
            ))
            .await;
        // One unwrapped device, not an envelope.
        assert_eq!(&found, with_imei, "searchby={searchby}&id={id}");
    }
    let id = with_imei["Id"]["Value"].as_u64().unwrap();
    assert_eq!(
        &t.get_json(&format!("/API/mdm/devices/{id}")).await,
        with_imei
    );

    for path in [
        "/API/mdm/devices?searchby=Udid&id=NOPE".to_owned(),
        "/API/mdm/devices?searchby=Macaddress&id=000000000000".to_owned(),
        "/API/mdm/devices/999999999".to_owned(),
        "/API/mdm/devices/not-a-number".to_owned(),
    ] {
        let response = t.get(&path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_aw_error(&response.json().await.unwrap(), 1001);
    }
    for path in [
        "/API/mdm/devices?searchby=Imei&id=1",
        "/API/mdm/devices?searchby=Udid",
        "/API/mdm/devices",
    ] {
        let response = t.get(path).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_aw_error(&response.json().await.unwrap(), 1000);
    }
    t.sim.shutdown().await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn commands_are_accepted_with_202_and_no_body_and_every_call_is_recorded() {
    let t = spawn(10, 5).await;
    let ids = t.sim.airwatch().unwrap().device_ids();
    for (i, command) in ["Lock", "EnterpriseWipe", "DeviceWipe", "SyncDevice"]
        .iter()
        .enumerate()
    {
        let response = t
            .post(
                &format!("/API/mdm/devices/{}/commands?command={command}", ids[i]),
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{command}");
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let response = t
        .post(
            &format!("/API/mdm/devices/{}/commands?command=SelfDestruct", ids[0]),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_aw_error(&response.json().await.unwrap(), 1000);
    let response = t
        .post("/API/mdm/devices/42/commands?command=Lock", None)
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_aw_error(&response.json().await.unwrap(), 1001);

    // The search form of the command call.
    let serial = t.sim.airwatch().unwrap().device(ids[5]).unwrap()["SerialNumber"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = t
        .post(
            &format!("/API/mdm/devices/commands?command=Lock&searchby=Serialnumber&id={serial}"),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let actions = t.sim.airwatch().unwrap().core().actions();
    let summary: Vec<(String, Option<String>, u16)> = actions
        .iter()
        .map(|a| (a.action.clone(), a.device_id.clone(), a.status))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("Lock".into(), Some(ids[0].to_string()), 202),
            ("EnterpriseWipe".into(), Some(ids[1].to_string()), 202),
            ("DeviceWipe".into(), Some(ids[2].to_string()), 202),
            ("SyncDevice".into(), Some(ids[3].to_string()), 202),
            ("SelfDestruct".into(), Some(ids[0].to_string()), 400),
            ("Lock".into(), None, 404),
            ("Lock".into(), Some(ids[5].to_string()), 202),
        ]
    );
    assert!(actions
        .iter()
        .all(|a| a.kind == SimKind::Airwatch && a.profile_id.is_none()));
    assert_eq!(actions[0].body, json!(""));
    // Read back through the control API too.
    let recorded = t.control_get("/actions").await;
    assert_eq!(recorded.as_array().unwrap().len(), 7);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn profiles_are_installed_and_removed_by_serial_number_and_recorded() {
    let t = spawn(10, 6).await;
    let device = t.sim.airwatch().unwrap().devices()[3].clone();
    let serial = device["SerialNumber"].as_str().unwrap();
    let id = device["Id"]["Value"].as_u64().unwrap().to_string();
    for verb in ["install", "remove"] {
        let response = t
            .post(
                &format!("/API/mdm/profiles/4711/{verb}"),
                Some(json!({ "SerialNumber": serial })),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{verb}");
    }
    let response = t
        .post(
            "/API/mdm/profiles/4711/install",
            Some(json!({ "SerialNumber": "NOSUCHSERIAL" })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_aw_error(&response.json().await.unwrap(), 1001);
    let response = t.post("/API/mdm/profiles/4711/install", None).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_aw_error(&response.json().await.unwrap(), 1000);

    let actions = t.sim.airwatch().unwrap().core().actions();
    assert_eq!(actions.len(), 4);
    assert_eq!(actions[0].action, "Install");
    assert_eq!(actions[1].action, "Remove");
    for a in &actions[..2] {
        assert_eq!(a.profile_id.as_deref(), Some("4711"));
        assert_eq!(a.device_id.as_deref(), Some(id.as_str()));
        assert_eq!(a.body, json!({ "SerialNumber": serial }));
        assert_eq!(a.status, 200);
    }
    assert_eq!((actions[2].status, actions[3].status), (404, 400));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn every_authenticated_answer_carries_the_rate_limit_headers() {
    let t = spawn(3, 1).await;
    let before = epoch_now();
    let first = t.get("/API/mdm/devices/search").await;
    let second = t.get("/API/mdm/devices/999").await;
    assert_eq!(second.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&first, "x-ratelimit-limit"), Some("5000"));
    assert_eq!(header(&first, "x-ratelimit-remaining"), Some("4999"));
    assert_eq!(header(&second, "x-ratelimit-remaining"), Some("4998"));
    let reset: u64 = header(&first, "x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reset > before && reset <= before + 61,
        "reset {reset} vs now {before}"
    );
    assert_eq!(reset % 60, 0, "windows are aligned to the epoch");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_spent_quota_gets_429_with_retry_after_until_the_window_resets() {
    let t = spawn(3, 1).await;
    // An hour-long window (aligned to the epoch), so four quick requests
    // share one; should they straddle a boundary anyway, the reset headers
    // differ and the round is repeated.
    let mut rounds = 0;
    let (statuses, resets, refused) = loop {
        rounds += 1;
        let response = t
            .control_send(
                reqwest::Method::PUT,
                "/rate-limit",
                json!({ "limit": 3, "window_seconds": 3600 }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut statuses = Vec::new();
        let mut resets = HashSet::new();
        let mut last = None;
        for _ in 0..4 {
            let r = t.get("/API/mdm/devices/search").await;
            statuses.push(r.status().as_u16());
            resets.insert(header(&r, "x-ratelimit-reset").unwrap().to_owned());
            last = Some(r);
        }
        if resets.len() == 1 || rounds == 3 {
            break (statuses, resets, last.unwrap());
        }
    };
    assert_eq!(resets.len(), 1);
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    assert_eq!(header(&refused, "x-ratelimit-remaining"), Some("0"));
    let reset: u64 = resets.into_iter().next().unwrap().parse().unwrap();
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    let expected = reset - epoch_now();
    assert!(
        retry_after.abs_diff(expected) <= 1 && retry_after >= 1,
        "Retry-After {retry_after}, reset in {expected}"
    );
    assert_aw_error(&refused.json().await.unwrap(), 1020);
    let status = t.control_get("/rate-limit").await;
    assert_eq!(
        (status["limit"].as_u64(), status["remaining"].as_u64()),
        (Some(3), Some(0))
    );

    // The control API raises the quota and starts a fresh window.
    let response = t
        .control_send(
            reqwest::Method::PUT,
            "/rate-limit",
            json!({ "limit": 100, "window_seconds": 60 }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let ok = t.get("/API/mdm/devices/search").await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(header(&ok, "x-ratelimit-remaining"), Some("99"));
    let bad = t
        .control_send(
            reqwest::Method::PUT,
            "/rate-limit",
            json!({ "window_seconds": 0 }),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn injected_statuses_answer_error_json_or_an_html_gateway_page() {
    let t = spawn(5, 1).await;
    let core_faults = [
        json!({"status": 503, "count": 2}),
        json!({"status": 429, "retry_after": 7, "count": 1}),
        json!({"status": 502, "count": 1}),
    ];
    for fault in core_faults {
        let response = t
            .control_send(reqwest::Method::POST, "/faults", fault)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    for _ in 0..2 {
        let r = t.get("/API/mdm/devices/search").await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_aw_error(&r.json().await.unwrap(), 1500);
    }
    let r = t.get("/API/mdm/devices/search").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), Some("7"));
    let r = t.get("/API/mdm/devices/search").await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(header(&r, "content-type").unwrap().starts_with("text/html"));
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("<title>502 Bad Gateway</title>"));
    assert_eq!(
        t.get("/API/mdm/devices/search").await.status(),
        StatusCode::OK
    );

    let requests = t.sim.airwatch().unwrap().core().requests();
    let faults: Vec<Option<&str>> = requests.iter().map(|r| r.fault.as_deref()).collect();
    assert_eq!(
        faults,
        vec![Some("status"); 4]
            .into_iter()
            .chain([None])
            .collect::<Vec<_>>()
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_and_added_latency_are_injected_on_matching_paths() {
    let t = spawn(5, 1).await;
    let airwatch = t.sim.airwatch().unwrap();
    airwatch
        .core()
        .inject(Fault::drop_connection().times(1).on_paths("/users"))
        .unwrap();
    airwatch
        .core()
        .inject(
            Fault::latency(Duration::from_millis(300))
                .times(1)
                .on_paths("/devices"),
        )
        .unwrap();
    let err = t
        .authed(t.http.get(format!("{}/API/system/users/search", t.base)))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err}");
    let started = Instant::now();
    assert_eq!(
        t.get("/API/mdm/devices/search").await.status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(airwatch.core().faults().is_empty());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_same_seed_gives_the_same_data_and_the_data_is_varied() {
    let a = spawn(400, 9).await;
    let b = spawn(400, 9).await;
    let c = spawn(400, 10).await;
    let (da, _) = a.list_all(500).await;
    let (db, _) = b.list_all(500).await;
    let (dc, _) = c.list_all(500).await;
    assert_eq!(da, db);
    assert_ne!(da, dc);

    let count = |f: &dyn Fn(&Value) -> bool| da.iter().filter(|d| f(d)).count();
    for platform in ["Apple", "Android"] {
        assert!(count(&|d| d["Platform"] == platform) > 100, "{platform}");
    }
    assert!(count(&|d| d["Platform"] != "Apple" && d["Platform"] != "Android") > 0);
    for ownership in ["C", "E", "S"] {
        assert!(count(&|d| d["Ownership"] == ownership) > 20, "{ownership}");
    }
    assert!(count(&|d| !["C", "E", "S"].contains(&d["Ownership"].as_str().unwrap())) > 0);
    assert!(count(&|d| d["UserName"] == "") > 5);
    assert!(count(&|d| d["UserName"] != "" && d["UserEmailAddress"] == "") > 5);
    let groups: HashSet<&str> = da
        .iter()
        .map(|d| d["LocationGroupName"].as_str().unwrap())
        .collect();
    assert!(groups.len() >= 5, "{groups:?}");
    for d in &da {
        for field in [
            "Uuid",
            "Udid",
            "SerialNumber",
            "MacAddress",
            "Imei",
            "DeviceFriendlyName",
            "LocationGroupName",
            "UserName",
            "UserEmailAddress",
            "Ownership",
            "Platform",
            "Model",
            "OperatingSystem",
            "PhoneNumber",
            "LastSeen",
            "EnrollmentStatus",
            "ComplianceStatus",
            "CompromisedStatus",
        ] {
            assert!(d.get(field).is_some(), "{field} missing from {d}");
        }
        let mac = d["MacAddress"].as_str().unwrap();
        assert!(
            mac.len() == 12 && mac.chars().all(|c| c.is_ascii_hexdigit()),
            "{mac}"
        );
        let last_seen = d["LastSeen"].as_str().unwrap();
        assert!(
            !last_seen.ends_with('Z') && last_seen.len() >= 19,
            "{last_seen}"
        );
    }
    for t in [a, b, c] {
        t.sim.shutdown().await;
    }
}

#[tokio::test]
async fn a_thousand_seeded_devices_serve_every_posture_field_with_realistic_variety() {
    let t = spawn(1000, 21).await;
    let (devices, _) = t.list_all(500).await;
    assert_eq!(devices.len(), 1000);
    let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
    for d in &devices {
        assert!(
            ["Enrolled", "Unenrolled", "EnrollmentInProgress"]
                .contains(&d["EnrollmentStatus"].as_str().unwrap()),
            "{d}"
        );
        assert!(
            ["Compliant", "NonCompliant", "NotAvailable"]
                .contains(&d["ComplianceStatus"].as_str().unwrap()),
            "{d}"
        );
        assert!(d["CompromisedStatus"].is_boolean(), "{d}");
        if d["CompromisedStatus"] == true {
            assert_eq!(d["ComplianceStatus"], "NonCompliant", "{d}");
        }
        let oem = d["OEMInfo"].as_str().unwrap();
        match d["Platform"].as_str().unwrap() {
            "Apple" | "AppleOsX" => assert_eq!(oem, "Apple", "{d}"),
            "Android" => assert!(
                ["Samsung", "Google", "Zebra Technologies", "motorola"].contains(&oem),
                "{d}"
            ),
            _ => assert!(["Microsoft Corporation", "Dell Inc."].contains(&oem), "{d}"),
        }
        let phone = d["PhoneNumber"].as_str().unwrap();
        if d["Imei"] == "" {
            assert_eq!(phone, "", "no SIM, no number: {d}");
        } else {
            assert!(phone.starts_with('+') && phone.len() > 10, "{d}");
        }
        assert!(!d["LastSeen"].as_str().unwrap().is_empty());
    }
    assert!(count(&|d| d["EnrollmentStatus"] == "Enrolled") > 850);
    assert!(count(&|d| d["EnrollmentStatus"] != "Enrolled") > 20);
    assert!(count(&|d| d["ComplianceStatus"] == "Compliant") > 700);
    assert!(count(&|d| d["ComplianceStatus"] == "NonCompliant") > 80);
    assert!(count(&|d| d["ComplianceStatus"] == "NotAvailable") > 20);
    assert!(count(&|d| d["CompromisedStatus"] == true) > 5);
    assert!(count(&|d| d["PhoneNumber"] == "") > 50);
    assert!(count(&|d| d["PhoneNumber"] != "") > 600);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn devices_and_users_added_changed_or_removed_through_the_control_api_show_in_the_next_listing(
) {
    let t = spawn(10, 1).await;
    let airwatch = t.sim.airwatch().unwrap();
    let ids = airwatch.device_ids();

    let removed = t
        .http
        .delete(format!("{}/devices/{}", t.control, ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::OK);
    let patched = t
        .control_send(
            reqwest::Method::PATCH,
            &format!("/devices/{}", ids[1]),
            json!({ "Ownership": "E" }),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let added = t
        .control_send(
            reqwest::Method::POST,
            "/devices",
            json!({ "Udid": "ADDED-UDID", "SerialNumber": "ADDEDSERIAL1", "MacAddress": "02AABBCCDDEE",
                    "Imei": "", "Platform": "Apple", "Ownership": "S", "LocationGroupName": "Pop-up Store" }),
        )
        .await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await.unwrap();
    let new_id = added["Id"]["Value"].as_u64().unwrap();
    assert!(!ids.contains(&new_id));
    let generated = t
        .control_send(
            reqwest::Method::POST,
            "/devices/generate",
            json!({ "count": 5 }),
        )
        .await;
    assert_eq!(generated.status(), StatusCode::CREATED);

    let (devices, _) = t.list_all(4).await;
    assert_eq!(devices.len(), 10 - 1 + 1 + 5);
    let listed: HashSet<u64> = devices
        .iter()
        .map(|d| d["Id"]["Value"].as_u64().unwrap())
        .collect();
    assert_eq!(listed.len(), devices.len(), "ids are unique");
    assert!(!listed.contains(&ids[0]) && listed.contains(&new_id));
    assert_eq!(
        t.get_json(&format!("/API/mdm/devices/{}", ids[1])).await["Ownership"],
        "E"
    );
    let found = t
        .get_json("/API/mdm/devices?searchby=Udid&id=added-udid")
        .await;
    assert_eq!(found["Id"]["Value"], new_id);
    let groups = t.get_json("/API/system/groups/search").await;
    assert!(groups["OrganizationGroups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["Name"] == "Pop-up Store"));

    // Users: add one, rename another, remove a third (its devices lose it).
    let users = airwatch.users();
    let response = t
        .control_send(
            reqwest::Method::POST,
            "/users",
            json!({ "UserName": "new.user", "FirstName": "New", "LastName": "User", "Email": "", "Status": true, "Group": "Sales" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let conflict = t
        .control_send(
            reqwest::Method::POST,
            "/users",
            json!({ "UserName": "NEW.USER" }),
        )
        .await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let victim = devices.iter().find(|d| d["UserName"] != "").unwrap()["UserName"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = t
        .http
        .delete(format!("{}/users/{victim}", t.control))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(airwatch
        .devices()
        .iter()
        .all(|d| d["UserName"] != victim.as_str()));
    let body = t
        .get_json("/API/system/users/search?page=0&pagesize=500")
        .await;
    assert_eq!(body["Total"], users.len());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn credentials_changed_through_the_control_api_take_effect_at_once() {
    let t = spawn(2, 1).await;
    let response = t
        .control_send(
            reqwest::Method::PUT,
            "/credentials",
            json!({ "api_key": "rotated" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        t.get("/API/mdm/devices/search").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = t
        .http
        .get(format!("{}/API/mdm/devices/search", t.base))
        .basic_auth(USERNAME, Some(PASSWORD))
        .header("aw-tenant-code", "rotated")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(t.sim.banner().contains("rotated"));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_vendor_path_gets_404_in_the_vendor_error_shape() {
    let t = spawn(2, 1).await;
    let response = t.get("/API/mdm/nothing/here").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_aw_error(&response.json().await.unwrap(), 1001);
    t.sim.shutdown().await;
}

// ------------------------------------------------------------ tags

fn bulk(ids: &[&str]) -> Value {
    json!({"BulkValues": {"Value": ids}})
}

/// The id of the seeded tag named exactly `name`, from the vendor's search.
async fn tag_id(t: &TestSim, name: &str) -> u64 {
    let body = t
        .get_json(&format!("/API/mdm/tags/search?name={name}"))
        .await;
    body["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tag| tag["TagName"] == name)
        .and_then(|tag| tag["Id"]["Value"].as_u64())
        .unwrap_or_else(|| panic!("{name} not in {body}"))
}

async fn members(t: &TestSim, tag: u64) -> Vec<u64> {
    let body = t.get_json(&format!("/API/mdm/tags/{tag}/devices")).await;
    body["Device"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["DeviceId"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn the_level_tags_are_seeded_and_found_by_a_search_that_matches_part_of_the_name() {
    let t = spawn(3, 1).await;
    let body = t
        .get_json("/API/mdm/tags/search?name=MTD_Threat_Level")
        .await;
    let names: Vec<&str> = body["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tag| {
            assert!(tag["Id"]["Value"].is_u64(), "{tag}");
            tag["TagName"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "MTD_Threat_Level_Low",
            "MTD_Threat_Level_Medium",
            "MTD_Threat_Level_High",
            "MTD_Threat_Level_Critical"
        ]
    );
    // Parameter names and values ignore case; no match is a 204.
    let body = t
        .get_json("/API/mdm/tags/search?Name=mtd_threat_level_high")
        .await;
    assert_eq!(body["Tags"].as_array().unwrap().len(), 1);
    let response = t.get("/API/mdm/tags/search?name=NoSuchTag").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());
    let all = t.get_json("/API/mdm/tags/search").await;
    assert_eq!(all["Tags"].as_array().unwrap().len(), 6);
    // Without credentials, as every call.
    let response = t
        .http
        .get(format!("{}/API/mdm/tags/search", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn devices_are_added_to_and_removed_from_tags_and_each_change_is_recorded() {
    let t = spawn(4, 1).await;
    let state = t.sim.airwatch().unwrap();
    let ids = state.device_ids();
    let (a, b) = (ids[0].to_string(), ids[1].to_string());
    let high = tag_id(&t, "MTD_Threat_Level_High").await;
    let low = tag_id(&t, "MTD_Threat_Level_Low").await;
    assert!(members(&t, high).await.is_empty());

    let response = t
        .post(
            &format!("/API/mdm/tags/{high}/adddevices"),
            Some(bulk(&[&a, &b])),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"TotalItems": 2, "AcceptedItems": 2, "FailedItems": 0, "Faults": {"Fault": []}})
    );
    assert_eq!(members(&t, high).await, vec![ids[0], ids[1]]);
    // Adding again is harmless; so is removing a device that is not in the tag.
    let response = t
        .post(
            &format!("/API/mdm/tags/{high}/adddevices"),
            Some(bulk(&[&a])),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = t
        .post(
            &format!("/API/mdm/tags/{low}/removedevices"),
            Some(bulk(&[&a])),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = t
        .post(
            &format!("/API/mdm/tags/{high}/removedevices"),
            Some(bulk(&[&b])),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(members(&t, high).await, vec![ids[0]]);
    assert_eq!(state.device_tags(ids[0]), vec!["MTD_Threat_Level_High"]);
    assert_eq!(state.risk_levels(ids[0], "MTD_Threat_Level"), vec!["High"]);
    assert!(state.risk_levels(ids[1], "MTD_Threat_Level").is_empty());

    // An unknown device is a failed item; an unknown tag a 404; a bad body a 400.
    let answer: Value = t
        .post(
            &format!("/API/mdm/tags/{high}/adddevices"),
            Some(bulk(&["999999"])),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["FailedItems"], 1);
    assert_eq!(answer["Faults"]["Fault"][0]["ItemValue"], "999999");
    let response = t
        .post("/API/mdm/tags/424242/adddevices", Some(bulk(&[&a])))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_aw_error(&response.json().await.unwrap(), 1001);
    assert_eq!(
        t.get("/API/mdm/tags/424242/devices").await.status(),
        StatusCode::NOT_FOUND
    );
    let response = t
        .post(
            &format!("/API/mdm/tags/{high}/adddevices"),
            Some(json!({"Value": [a]})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let recorded: Vec<(String, String, Option<String>, u16)> = state
        .core()
        .actions()
        .into_iter()
        .map(|r| (r.action, r.device_ref, r.device_id, r.status))
        .collect();
    let (sa, sb) = (Some(a.clone()), Some(b.clone()));
    assert_eq!(
        recorded,
        vec![
            (
                "AddTag:MTD_Threat_Level_High".into(),
                a.clone(),
                sa.clone(),
                200
            ),
            (
                "AddTag:MTD_Threat_Level_High".into(),
                b.clone(),
                sb.clone(),
                200
            ),
            (
                "AddTag:MTD_Threat_Level_High".into(),
                a.clone(),
                sa.clone(),
                200
            ),
            (
                "RemoveTag:MTD_Threat_Level_Low".into(),
                a.clone(),
                sa.clone(),
                200
            ),
            ("RemoveTag:MTD_Threat_Level_High".into(), b.clone(), sb, 200),
            (
                "AddTag:MTD_Threat_Level_High".into(),
                "999999".into(),
                None,
                404
            ),
            ("AddTag:#424242".into(), a.clone(), sa, 404),
            (
                "AddTag:MTD_Threat_Level_High".into(),
                String::new(),
                None,
                400
            ),
        ]
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_control_api_tags_devices_behind_the_apis_back_and_renames_or_removes_tags() {
    use reqwest::Method;
    let t = spawn(3, 1).await;
    let state = t.sim.airwatch().unwrap();
    let id = state.device_ids()[2];
    let response = t
        .control_send(
            Method::PUT,
            &format!("/tags/MTD_Threat_Level_Critical/devices/{id}"),
            json!(null),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let critical = tag_id(&t, "MTD_Threat_Level_Critical").await;
    assert_eq!(members(&t, critical).await, vec![id]);
    assert!(
        state.core().actions().is_empty(),
        "a drift is not an API call"
    );
    assert_eq!(
        t.control_get(&format!("/devices/{id}/tags")).await,
        json!(["MTD_Threat_Level_Critical"])
    );
    state.tag_device("MTD_Threat_Level_Low", id).unwrap();
    assert_eq!(
        state.risk_levels(id, "MTD_Threat_Level"),
        vec!["Low", "Critical"]
    );
    state.untag_device("MTD_Threat_Level_Low", id).unwrap();
    assert!(state.tag_device("MTD_Threat_Level_Low", 999_999).is_err());

    // A rename keeps the id and the devices; the old name finds nothing.
    let response = t
        .control_send(
            Method::PATCH,
            "/tags/MTD_Threat_Level_Critical",
            json!({"name": "Threat_Critical"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        t.get("/API/mdm/tags/search?name=MTD_Threat_Level_Critical")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(members(&t, critical).await, vec![id]);
    // A removed tag is gone with its id.
    let response = t
        .control_send(Method::DELETE, "/tags/Threat_Critical", json!(null))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        t.get(&format!("/API/mdm/tags/{critical}/devices"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // Created again, it has a new id and no device.
    let response = t
        .control_send(
            Method::POST,
            "/tags",
            json!({"name": "MTD_Threat_Level_Critical"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let tag: Value = response.json().await.unwrap();
    assert_ne!(tag["id"], critical);
    assert_eq!(
        tag_id(&t, "MTD_Threat_Level_Critical").await,
        tag["id"].as_u64().unwrap()
    );
    assert!(state.device_tags(id).is_empty());
    assert_eq!(
        t.control_send(Method::POST, "/tags", json!({"name": "vip"}))
            .await
            .status(),
        StatusCode::CONFLICT
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn faults_apply_to_the_tag_paths_too() {
    let t = spawn(2, 1).await;
    let state = t.sim.airwatch().unwrap();
    let id = state.device_ids()[0].to_string();
    let high = tag_id(&t, "MTD_Threat_Level_High").await;
    state
        .core()
        .inject(Fault::status(503).times(1).on_paths("/mdm/tags/"))
        .unwrap();
    state
        .core()
        .inject(Fault::rate_limited(2).times(1).on_paths("/adddevices"))
        .unwrap();
    let path = format!("/API/mdm/tags/{high}/adddevices");
    assert_eq!(
        t.post(&path, Some(bulk(&[&id]))).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let response = t.post(&path, Some(bulk(&[&id]))).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "2");
    assert!(state.device_tags(id.parse().unwrap()).is_empty());
    assert_eq!(
        t.post(&path, Some(bulk(&[&id]))).await.status(),
        StatusCode::OK
    );
    t.sim.shutdown().await;
}
