//! The MaaS360 adapter against a wiremock MaaS360: the login and the shared
//! token (reuse, refresh, re-login after a 401), paging with the one-object
//! quirk, lenient fields, users, each lookup filter, each command as sent on
//! the wire, and the error classes.

use futures::TryStreamExt as _;
use mtd_adapter::http::HttpSettings;
use mtd_adapter::{
    AdapterError, Device, DeviceIdentifier, Identifiers, MdmAdapter, MdmCommand, Ownership, Page,
    Platform, Posture, RiskReadBack, Secret, SignalLevel, User,
};
use mtd_adapter_maas360::{Maas360Adapter, Maas360Config, Maas360Credentials};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use url::Url;
use wiremock::matchers::{body_json, body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const BILLING: &str = "30012345";
const APP_ID: &str = "com.30012345.api";
const APP_VERSION: &str = "1.0";
const PLATFORM_ID: &str = "3";
const ACCESS_KEY: &str = "AbCdEf1234-access-key";
const USERNAME: &str = "api_admin";
const PASSWORD: &str = "p@ss w\"rd=1";

const LOGIN_PATH: &str = "/auth-apis/auth/2.0/authenticate/customer/30012345";
const REFRESH_PATH: &str = "/auth-apis/auth/2.0/refreshToken/customer/30012345";
const DEVICES_PATH: &str = "/device-apis/devices/2.0/search/customer/30012345";
const USERS_PATH: &str = "/user-apis/user/1.0/search/30012345";

fn config(server: &MockServer) -> Maas360Config {
    let mut c = Maas360Config::new(
        "maas360-test",
        Url::parse(&server.uri()).unwrap(),
        Maas360Credentials {
            billing_id: BILLING.into(),
            app_id: APP_ID.into(),
            app_version: APP_VERSION.into(),
            platform_id: PLATFORM_ID.into(),
            app_access_key: Secret::new(ACCESS_KEY),
            username: USERNAME.into(),
            password: Secret::new(PASSWORD),
        },
    );
    c.http = HttpSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ca_cert_pem: None,
    };
    c
}

fn adapter(server: &MockServer) -> Maas360Adapter {
    Maas360Adapter::new(config(server)).unwrap()
}

fn adapter_with(server: &MockServer, page_size: u32) -> Maas360Adapter {
    let mut c = config(server);
    c.page_size = page_size;
    Maas360Adapter::new(c).unwrap()
}

fn maas_token(n: usize) -> String {
    format!("MaaS token=\"tok-{n}\"")
}

/// Answers logins (or refreshes) with `tok-N` / `ref-N`, counting them;
/// `N` is shared between logins and refreshes so tests can tell which came.
#[derive(Clone)]
struct Grants {
    issued: Arc<AtomicUsize>,
}

impl Respond for Grants {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        ResponseTemplate::new(200).set_body_json(json!({"authResponse": {
            "authToken": format!("tok-{n}"),
            "errorCode": 0,
            "refreshToken": format!("ref-{n}")
        }}))
    }
}

/// Mounts the login; returns the counter of tokens issued.
async fn mount_login(server: &MockServer) -> Arc<AtomicUsize> {
    let issued = Arc::new(AtomicUsize::new(0));
    mount_grants(server, LOGIN_PATH, issued.clone()).await;
    issued
}

async fn mount_grants(server: &MockServer, p: &str, issued: Arc<AtomicUsize>) {
    Mock::given(method("POST"))
        .and(path(p))
        .respond_with(Grants { issued })
        .mount(server)
        .await;
}

fn login_body() -> Value {
    json!({"authRequest": {"maaS360AdminAuth": {
        "billingID": BILLING, "platformID": PLATFORM_ID, "appID": APP_ID,
        "appVersion": APP_VERSION, "appAccessKey": ACCESS_KEY,
        "userName": USERNAME, "password": PASSWORD
    }}})
}

fn refresh_body(refresh: &str) -> Value {
    json!({"authRequest": {"maaS360AdminAuth": {
        "billingID": BILLING, "platformID": PLATFORM_ID, "appID": APP_ID,
        "appVersion": APP_VERSION, "userName": USERNAME, "refreshToken": refresh
    }}})
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

fn query(r: &Request) -> BTreeMap<String, String> {
    r.url.query_pairs().into_owned().collect()
}

fn device_json(i: usize) -> Value {
    json!({
        "maas360DeviceID": format!("Appl{i:08}"),
        "deviceName": format!("iPhone {i}"),
        "username": format!("user{i}"),
        "emailAddress": format!("user{i}@example.com"),
        "platformName": "iOS",
        "manufacturer": "Apple",
        "model": "iPhone 15",
        "osVersion": "17.4",
        "imeiEsn": format!("35209900{i:07}"),
        "udid": format!("{i:040x}"),
        "wifiMacAddress": format!("a4:e4:b8:73:{:02x}:{:02x}", i / 256, i % 256),
        "ownership": "Corporate Owned",
        "lastReported": "2019-04-23T16:11:23",
        "platformSerialNumber": format!("f17xk{i:05}"),
        "deviceStatus": "Active"
    })
}

/// A search answer as MaaS360 writes it: one record is a bare object, none
/// is no `device` key at all.
fn search_answer(envelope: &str, item: &str, records: Vec<Value>, count: usize) -> Value {
    let mut inner = json!({"count": count, "pageNumber": 1, "pageSize": 250});
    match records.len() {
        0 => {}
        1 => inner[item] = records.into_iter().next().unwrap(),
        _ => inner[item] = Value::Array(records),
    }
    json!({ envelope: inner })
}

fn devices_answer(ids: std::ops::Range<usize>, count: usize) -> Value {
    search_answer("devices", "device", ids.map(device_json).collect(), count)
}

async fn mount_devices(server: &MockServer, answer: Value) {
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(server)
        .await;
}

async fn all_pages(a: &Maas360Adapter) -> Result<Vec<Page<Device>>, AdapterError> {
    a.devices().try_collect().await
}

fn device(id: &str) -> Device {
    Device {
        reported_risk: None,
        posture: Default::default(),
        mdm_device_id: id.into(),
        identifiers: Identifiers::default(),
        name: None,
        platform: Platform::Ios,
        model: None,
        os_version: None,
        ownership: Ownership::Corporate,
        user: None,
        groups: vec![],
        last_checkin_at: None,
    }
}

/// Lets `d` pass on tokio's clock (the adapter's token clock) while the
/// network timers keep running on real time before and after.
async fn let_time_pass(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

// ---------------------------------------------------------------- login and token

#[tokio::test]
async fn the_login_sends_the_auth_2_0_body_and_every_call_the_maas_token_in_double_quotes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN_PATH))
        .and(header("content-type", "application/json"))
        .and(header("accept", "application/json"))
        .and(body_json(login_body()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"authResponse": {
                "authToken": "7069c49e-8775-4032-ab59-940c39c07723-IOd45z3",
                "errorCode": 0,
                "refreshToken": "r-1"
            }})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(header(
            "authorization",
            "MaaS token=\"7069c49e-8775-4032-ab59-940c39c07723-IOd45z3\"",
        ))
        .and(header("accept", "application/json"))
        .and(query_param("pageSize", "250"))
        .and(query_param("pageNumber", "1"))
        .and(query_param("deviceStatus", "Active"))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_answer(0..2, 2)))
        .expect(1)
        .mount(&server)
        .await;
    let report = adapter(&server).health_check().await.unwrap();
    assert_eq!(report.devices_on_first_page, 2);
    let listed = requests_to(&server, DEVICES_PATH).await;
    assert_eq!(
        listed[0].url.query(),
        Some("pageSize=250&pageNumber=1&deviceStatus=Active")
    );
}

#[tokio::test]
async fn a_login_refused_with_200_and_an_error_code_is_unauthorized_naming_the_code_and_nothing_follows(
) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN_PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"authResponse": {
                "errorCode": 1008,
                "errorDesc": "Invalid credentials",
                "authToken": ""
            }})),
        )
        .mount(&server)
        .await;
    mount_devices(&server, devices_answer(0..1, 1)).await;
    let a = adapter(&server);
    let err = a.health_check().await.unwrap_err();
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("1008"), "{text}");
    assert!(text.contains("Invalid credentials"), "{text}");
    for secret in [PASSWORD, ACCESS_KEY] {
        assert!(!text.contains(secret), "{text}");
    }
    let err = a
        .execute(MdmCommand::Wipe, &device("d1"))
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
    let all = server.received_requests().await.unwrap();
    assert_eq!(all.len(), 2, "only the two refused logins");
    assert!(all.iter().all(|r| r.url.path() == LOGIN_PATH));
}

#[tokio::test]
async fn a_login_answered_401_or_with_a_page_fails_without_echoing_the_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN_PATH))
        .respond_with(ResponseTemplate::new(401).set_body_string("Unauthorized"))
        .mount(&server)
        .await;
    let err = adapter(&server).health_check().await.unwrap_err();
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("<authResponse><authToken>tok-xml</authToken></authResponse>"),
        )
        .mount(&server)
        .await;
    let err = adapter(&server).health_check().await.unwrap_err();
    assert_eq!(err.class(), "decode", "{err}");
    assert!(!err.to_string().contains("tok-xml"), "{err}");
}

#[tokio::test]
async fn one_login_serves_many_calls_and_nothing_prints_a_secret() {
    let server = MockServer::start().await;
    let issued = mount_login(&server).await;
    mount_devices(&server, devices_answer(0..1, 1)).await;
    Mock::given(method("GET"))
        .and(path(USERS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"users": {"count": 0}})))
        .mount(&server)
        .await;
    let a = adapter(&server);
    for _ in 0..3 {
        a.health_check().await.unwrap();
    }
    let id = DeviceIdentifier::mdm_device_id("Appl00000000").unwrap();
    assert!(a.lookup_device(&id).await.unwrap().is_some());
    let users: Vec<Page<User>> = a.users().try_collect().await.unwrap();
    assert!(users.is_empty());
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    for r in requests_to(&server, DEVICES_PATH).await {
        assert_eq!(r.headers["authorization"], maas_token(1).as_str());
    }
    let printed = format!("{a:?}");
    for secret in [PASSWORD, ACCESS_KEY, "tok-1", "ref-1"] {
        assert!(!printed.contains(secret), "{printed}");
    }
}

#[tokio::test]
async fn twenty_concurrent_lookups_share_one_login() {
    let server = MockServer::start().await;
    let issued = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path(LOGIN_PATH))
        .respond_with(DelayedGrants {
            inner: Grants {
                issued: issued.clone(),
            },
        })
        .mount(&server)
        .await;
    mount_devices(&server, devices_answer(1..2, 1)).await;
    let a = Arc::new(adapter(&server));
    let id = DeviceIdentifier::mdm_device_id("Appl00000001").unwrap();
    let lookups = (0..20).map(|_| {
        let (a, id) = (a.clone(), id.clone());
        tokio::spawn(async move { a.lookup_device(&id).await })
    });
    for l in futures::future::join_all(lookups).await {
        assert!(l.unwrap().unwrap().is_some());
    }
    assert_eq!(issued.load(Ordering::SeqCst), 1);
}

#[derive(Clone)]
struct DelayedGrants {
    inner: Grants,
}

impl Respond for DelayedGrants {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        self.inner.respond(r).set_delay(Duration::from_millis(300))
    }
}

#[tokio::test]
async fn a_token_is_renewed_by_refresh_after_55_minutes_and_not_before() {
    let server = MockServer::start().await;
    let issued = mount_login(&server).await;
    Mock::given(method("POST"))
        .and(path(REFRESH_PATH))
        .and(header("content-type", "application/json"))
        .and(header("accept", "application/json"))
        .and(body_json(refresh_body("ref-1")))
        .respond_with(Grants {
            issued: issued.clone(),
        })
        .expect(1)
        .mount(&server)
        .await;
    mount_devices(&server, devices_answer(0..1, 1)).await;
    let a = adapter(&server);
    a.health_check().await.unwrap();
    let_time_pass(Duration::from_secs(54 * 60)).await;
    a.health_check().await.unwrap();
    assert!(
        requests_to(&server, REFRESH_PATH).await.is_empty(),
        "54 minutes: still fresh"
    );
    let_time_pass(Duration::from_secs(2 * 60)).await;
    a.health_check().await.unwrap();
    a.health_check().await.unwrap();

    assert_eq!(requests_to(&server, LOGIN_PATH).await.len(), 1);
    assert_eq!(requests_to(&server, REFRESH_PATH).await.len(), 1);
    let used: Vec<_> = requests_to(&server, DEVICES_PATH)
        .await
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        used,
        [maas_token(1), maas_token(1), maas_token(2), maas_token(2)]
    );
}

#[tokio::test]
async fn a_refresh_refused_with_an_error_code_falls_back_to_a_full_login() {
    let server = MockServer::start().await;
    let issued = mount_login(&server).await;
    Mock::given(method("POST"))
        .and(path(REFRESH_PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"authResponse": {
                "errorCode": 1002, "errorDesc": "Invalid credentials"
            }})),
        )
        .expect(1)
        .mount(&server)
        .await;
    mount_devices(&server, devices_answer(0..1, 1)).await;
    let a = adapter(&server);
    a.health_check().await.unwrap();
    let_time_pass(Duration::from_secs(56 * 60)).await;
    a.health_check().await.unwrap();
    assert_eq!(issued.load(Ordering::SeqCst), 2, "two logins");
    let last = requests_to(&server, DEVICES_PATH).await.pop().unwrap();
    assert_eq!(last.headers["authorization"], maas_token(2).as_str());
    let logins = requests_to(&server, LOGIN_PATH).await;
    assert_eq!(logins[1].body_json::<Value>().unwrap(), login_body());
}

#[tokio::test]
async fn a_401_token_expired_logs_in_again_once_and_repeats_the_request() {
    let server = MockServer::start().await;
    let issued = mount_login(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(header("authorization", maas_token(1).as_str()))
        .respond_with(ResponseTemplate::new(401).set_body_string("Token expired."))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(header("authorization", maas_token(2).as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_answer(0..3, 3)))
        .expect(1)
        .mount(&server)
        .await;
    let pages = all_pages(&adapter(&server)).await.unwrap();
    assert_eq!(pages[0].items.len(), 3);
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    assert!(
        requests_to(&server, REFRESH_PATH).await.is_empty(),
        "a refused token is replaced by a full login"
    );
}

#[tokio::test]
async fn a_second_401_is_unauthorized_after_exactly_one_new_login() {
    let server = MockServer::start().await;
    let issued = mount_login(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(ResponseTemplate::new(401).set_body_string("Token invalid"))
        .mount(&server)
        .await;
    let err = all_pages(&adapter(&server)).await.unwrap_err();
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
    assert!(err.to_string().contains("Token invalid"), "{err}");
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    assert_eq!(requests_to(&server, DEVICES_PATH).await.len(), 2);
}

#[tokio::test]
async fn a_command_refused_with_401_is_sent_again_once_after_a_new_login() {
    let server = MockServer::start().await;
    let issued = mount_login(&server).await;
    let action = "/device-apis/devices/1.0/lockDevice/30012345";
    Mock::given(method("POST"))
        .and(path(action))
        .and(header("authorization", maas_token(1).as_str()))
        .respond_with(ResponseTemplate::new(401).set_body_string("Token expired."))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(action))
        .and(header("authorization", maas_token(2).as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(action_ok("d1")))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = adapter(&server)
        .execute(MdmCommand::Lock, &device("d1"))
        .await
        .unwrap();
    assert_eq!(receipt.status, 200);
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------- paging

#[tokio::test]
async fn a_listing_over_three_pages_ends_at_a_last_page_of_one_device_given_as_an_object() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    for (number, ids) in [(1, 0..25), (2, 25..50), (3, 50..51)] {
        Mock::given(method("GET"))
            .and(path(DEVICES_PATH))
            .and(query_param("pageNumber", number.to_string()))
            .and(query_param("pageSize", "25"))
            .and(query_param("deviceStatus", "Active"))
            .respond_with(ResponseTemplate::new(200).set_body_json(devices_answer(ids, 51)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let pages = all_pages(&adapter_with(&server, 25)).await.unwrap();
    let sizes: Vec<_> = pages.iter().map(|p| p.items.len()).collect();
    assert_eq!(sizes, [25, 25, 1]);
    assert!(pages.iter().all(|p| p.total == Some(51)));
    assert_eq!(pages[2].items[0].mdm_device_id, "Appl00000050");
    assert_eq!(requests_to(&server, DEVICES_PATH).await.len(), 3);
}

#[tokio::test]
async fn an_empty_listing_has_no_device_key_and_takes_one_request() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    mount_devices(
        &server,
        json!({"devices": {"count": 0, "pageNumber": 1, "pageSize": 250}}),
    )
    .await;
    let a = adapter(&server);
    assert!(all_pages(&a).await.unwrap().is_empty());
    assert_eq!(a.health_check().await.unwrap().devices_on_first_page, 0);
    assert_eq!(requests_to(&server, DEVICES_PATH).await.len(), 2);
}

#[tokio::test]
async fn a_listing_whose_count_is_reached_by_full_pages_makes_no_request_past_the_end() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    for (number, ids) in [(1, 0..25), (2, 25..50)] {
        Mock::given(method("GET"))
            .and(path(DEVICES_PATH))
            .and(query_param("pageNumber", number.to_string()))
            .respond_with(ResponseTemplate::new(200).set_body_json(devices_answer(ids, 50)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let pages = all_pages(&adapter_with(&server, 25)).await.unwrap();
    assert_eq!(pages.iter().map(|p| p.items.len()).sum::<usize>(), 50);
}

#[tokio::test]
async fn a_server_that_ignores_the_page_number_ends_the_listing_with_an_error_saying_so() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    let mut answer = devices_answer(0..25, 0);
    answer["devices"]["count"] = json!("");
    mount_devices(&server, answer).await;
    let err = all_pages(&adapter_with(&server, 25)).await.unwrap_err();
    assert_eq!(err.class(), "listing", "{err}");
    assert!(err.to_string().contains("same page"), "{err}");
    assert_eq!(requests_to(&server, DEVICES_PATH).await.len(), 2);
}

#[tokio::test]
async fn a_page_with_more_devices_than_the_announced_count_fails_the_listing() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    mount_devices(&server, devices_answer(0..3, 2)).await;
    let err = all_pages(&adapter(&server)).await.unwrap_err();
    assert_eq!(err.class(), "listing", "{err}");
}

#[tokio::test]
async fn an_answer_that_is_not_a_search_result_fails_the_listing_instead_of_emptying_it() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    mount_devices(&server, json!({"errorCode": 1007, "errorDesc": "whatever"})).await;
    let err = all_pages(&adapter(&server)).await.unwrap_err();
    assert_eq!(err.class(), "decode", "{err}");
    assert!(err.to_string().contains("no `devices` object"), "{err}");
}

#[tokio::test]
async fn devices_map_with_lenient_fields_and_every_ownership() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    let records = vec![
        device_json(1),
        json!({
            "maas360DeviceID": 4711,
            "deviceName": "",
            "username": "",
            "emailAddress": "bo@example.com",
            "platformName": "Android",
            "model": "",
            "osVersion": 14,
            "imeiEsn": 352099001761481u64,
            "udid": "Androiddeviceid",
            "wifiMacAddress": "",
            "ownership": "Employee Owned",
            "lastReported": "",
            "lastReportedInEpochms": "1556035883843",
            "platformSerialNumber": ""
        }),
        json!({"maas360DeviceID": "win-1", "platformName": "Windows", "ownership": "Shared Device"}),
        json!({"maas360DeviceID": "mac-1", "platformName": "Mac", "ownership": ""}),
        json!({"deviceName": "no id"}),
    ];
    mount_devices(&server, search_answer("devices", "device", records, 5)).await;
    let pages = all_pages(&adapter(&server)).await.unwrap();
    let page = &pages[0];
    assert_eq!(page.skipped, 1);
    assert!(page
        .skip_reason
        .as_deref()
        .unwrap()
        .contains("maas360DeviceID"));
    let [ios, android, windows, mac] = &page.items[..] else {
        panic!("{:?}", page.items);
    };

    assert_eq!(ios.mdm_device_id, "Appl00000001");
    assert_eq!(ios.platform, Platform::Ios);
    assert_eq!(ios.ownership, Ownership::Corporate);
    assert_eq!(
        ios.identifiers.udid.as_deref(),
        Some("0000000000000000000000000000000000000001")
    );
    assert_eq!(ios.identifiers.serial.as_deref(), Some("F17XK00001"));
    assert_eq!(ios.identifiers.mac.as_deref(), Some("a4e4b8730001"));
    assert_eq!(ios.identifiers.imei.as_deref(), Some("352099000000001"));
    assert_eq!(ios.user.as_ref().unwrap().mdm_user_id, "user1");
    assert_eq!(
        ios.last_checkin_at.unwrap().to_rfc3339(),
        "2019-04-23T16:11:23+00:00"
    );

    assert_eq!(android.mdm_device_id, "4711", "a number as the id");
    assert_eq!(android.ownership, Ownership::Personal);
    assert_eq!(android.name, None, "\"\" is none");
    assert_eq!(android.model, None);
    assert_eq!(android.os_version.as_deref(), Some("14"));
    assert_eq!(android.identifiers.imei.as_deref(), Some("352099001761481"));
    assert_eq!(android.identifiers.udid.as_deref(), Some("ANDROIDDEVICEID"));
    assert_eq!(android.identifiers.mac, None);
    assert_eq!(android.identifiers.serial, None);
    let user = android.user.as_ref().unwrap();
    assert_eq!(
        (user.mdm_user_id.as_str(), user.username.as_deref()),
        ("bo@example.com", None)
    );
    assert_eq!(
        android.last_checkin_at.unwrap().timestamp_millis(),
        1556035883843
    );

    assert_eq!(
        (windows.platform, windows.ownership),
        (Platform::Windows, Ownership::Unknown)
    );
    assert_eq!(
        (mac.platform, mac.ownership),
        (Platform::Macos, Ownership::Unknown)
    );
    assert_eq!(mac.user, None);
}

/// Three search records: a healthy iPhone in MaaS360's own words, a rooted
/// Android phone whose words come in other cases and its phone number as a
/// JSON number, and a Windows laptop with blank and unknown values.
fn posture_records() -> Vec<Value> {
    let mut healthy = device_json(7);
    for (k, v) in [
        ("policyComplianceState", json!("In Compliance")),
        ("maas360ManagedStatus", json!("Enrolled")),
        ("encryptionStatus", json!("Encryption Complete")),
        ("passcodeCompliance", json!("Compliant")),
        ("jailbreakStatus", json!("No")),
        ("phoneNumber", json!("+14165550123")),
    ] {
        healthy[k] = v;
    }
    vec![
        healthy,
        json!({
            "maas360DeviceID": "Androidc0123456789",
            "platformName": "Android",
            "manufacturer": "samsung",
            "model": "SM-G991B",
            "osVersion": 14,
            "imeiEsn": 352099001761481u64,
            "lastReported": "2026-11-20T16:11:23",
            "policyComplianceState": "OUT OF COMPLIANCE",
            "maas360ManagedStatus": "control removed",
            "encryptionStatus": "Not Encrypted",
            "passcodeCompliance": "Not Compliant",
            "jailbreakStatus": "yes",
            "phoneNumber": 4915112345678u64
        }),
        json!({
            "maas360DeviceID": "WIN0123456789ABC",
            "platformName": "Windows",
            "manufacturer": "",
            "phoneNumber": "",
            "policyComplianceState": "",
            "maas360ManagedStatus": "Something Newer",
            "encryptionStatus": "",
            "passcodeCompliance": "",
            "jailbreakStatus": ""
        }),
    ]
}

#[tokio::test]
async fn the_listing_maps_posture_from_maas360s_words_with_lenient_and_unsaid_values() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    mount_devices(
        &server,
        search_answer("devices", "device", posture_records(), 3),
    )
    .await;
    let pages = all_pages(&adapter(&server)).await.unwrap();
    let [ios, android, windows] = &pages[0].items[..] else {
        panic!("{:?}", pages[0].items);
    };
    assert_eq!(
        ios.posture,
        Posture {
            compliant: Some(true),
            enrolled: Some(true),
            encrypted: Some(true),
            passcode: Some(true),
            compromised: Some(false),
            manufacturer: Some("Apple".into()),
            phone_number: Some("+14165550123".into()),
        }
    );
    assert_eq!(
        android.posture,
        Posture {
            compliant: Some(false),
            enrolled: Some(false),
            encrypted: Some(false),
            passcode: Some(false),
            compromised: Some(true),
            manufacturer: Some("samsung".into()),
            phone_number: Some("4915112345678".into()),
        }
    );
    assert_eq!(android.model.as_deref(), Some("SM-G991B"));
    assert_eq!(android.os_version.as_deref(), Some("14"));
    assert_eq!(
        android.last_checkin_at.unwrap().to_rfc3339(),
        "2026-11-20T16:11:23+00:00"
    );
    assert_eq!(windows.posture, Posture::default());
}

#[tokio::test]
async fn a_lookup_maps_posture_as_the_listing_does() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    let rooted = posture_records().remove(1);
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(query_param("imeiMeid", "352099001761481"))
        .respond_with(ResponseTemplate::new(200).set_body_json(search_answer(
            "devices",
            "device",
            vec![rooted],
            1,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let id = DeviceIdentifier::imei("352099001761481").unwrap();
    let found = adapter(&server).lookup_device(&id).await.unwrap().unwrap();
    assert_eq!(found.mdm_device_id, "Androidc0123456789");
    assert_eq!(found.posture.compromised, Some(true));
    assert_eq!(found.posture.compliant, Some(false));
    assert_eq!(found.posture.enrolled, Some(false));
    assert_eq!(found.posture.encrypted, Some(false));
    assert_eq!(found.posture.passcode, Some(false));
    assert_eq!(found.posture.manufacturer.as_deref(), Some("samsung"));
    assert_eq!(found.posture.phone_number.as_deref(), Some("4915112345678"));
    assert_eq!(found.model.as_deref(), Some("SM-G991B"));
}

// ---------------------------------------------------------------- users and groups

#[tokio::test]
async fn users_are_listed_page_by_page_with_the_one_object_quirk() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    let user = |i: usize| {
        json!({"userIdentifier": format!("U{i}"), "userName": format!("user{i}"),
               "emailAddress": format!("user{i}@example.com"), "fullName": format!("User Number{i}"),
               "domain": "example.com", "status": "Active"})
    };
    for (number, ids) in [(1, 0..25), (2, 25..26)] {
        Mock::given(method("GET"))
            .and(path(USERS_PATH))
            .and(query_param("includeAllUsers", "1"))
            .and(query_param("pageSize", "25"))
            .and(query_param("pageNumber", number.to_string()))
            .and(header("accept", "application/json"))
            .and(header("authorization", maas_token(1).as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(search_answer(
                "users",
                "user",
                ids.map(user).collect(),
                26,
            )))
            .expect(1)
            .mount(&server)
            .await;
    }
    let a = adapter_with(&server, 25);
    let pages: Vec<Page<User>> = a.users().try_collect().await.unwrap();
    let users: Vec<User> = pages.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(users.len(), 26);
    let last = &users[25];
    assert_eq!(last.mdm_user_id, "user25");
    assert_eq!(last.email.as_deref(), Some("user25@example.com"));
    assert_eq!(last.first_name.as_deref(), Some("User"));
    assert_eq!(last.last_name.as_deref(), Some("Number25"));
    let first = requests_to(&server, USERS_PATH).await.remove(0);
    assert_eq!(
        first.url.query(),
        Some("includeAllUsers=1&pageSize=25&pageNumber=1")
    );

    let caps = a.capabilities();
    assert!(caps.user_listing);
    assert!(!caps.groups);
    assert!(a.groups().try_collect::<Vec<_>>().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_empty_user_listing_has_no_user_key() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    Mock::given(method("GET"))
        .and(path(USERS_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"users": {"count": 0, "pageNumber": 1, "pageSize": 250}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let pages: Vec<Page<User>> = adapter(&server).users().try_collect().await.unwrap();
    assert!(pages.is_empty());
}

// ---------------------------------------------------------------- lookups

/// Looks `id` up against a server that answers the search with `filter` =
/// `value` with one device (as a bare object); checks the request carries
/// exactly that one identifier filter.
async fn assert_lookup(id: DeviceIdentifier, filter: &str, value: &str, record: Value) {
    let server = MockServer::start().await;
    mount_login(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(query_param(filter, value))
        .and(header("authorization", maas_token(1).as_str()))
        .and(header("accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(search_answer(
            "devices",
            "device",
            vec![record],
            1,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let found = adapter(&server).lookup_device(&id).await.unwrap();
    assert_eq!(found.unwrap().mdm_device_id, "Appl00000007", "{id}");
    let sent = requests_to(&server, DEVICES_PATH).await;
    let q = query(&sent[0]);
    let keys: Vec<_> = q.keys().map(String::as_str).collect();
    let mut want = vec!["deviceStatus", filter, "pageNumber", "pageSize"];
    want.sort_unstable();
    assert_eq!(keys, want, "exactly one identifier filter");
    assert_eq!(q["deviceStatus"], "Active");
    assert_eq!(q["pageNumber"], "1");
}

#[tokio::test]
async fn a_lookup_by_mdm_device_id_filters_by_maas360_device_id() {
    let id = DeviceIdentifier::mdm_device_id("Appl00000007").unwrap();
    assert_lookup(id, "maas360DeviceId", "Appl00000007", device_json(7)).await;
}

#[tokio::test]
async fn a_lookup_by_udid_filters_by_udid() {
    let mut record = device_json(7);
    record["udid"] = json!("00008030-001A2B3C4D5E6F70");
    let id = DeviceIdentifier::udid("00008030-001a2b3c4d5e6f70").unwrap();
    assert_lookup(id, "udid", "00008030-001A2B3C4D5E6F70", record).await;
}

#[tokio::test]
async fn a_lookup_by_imei_filters_by_imei_meid() {
    let id = DeviceIdentifier::imei("35-209900-0000007").unwrap();
    assert_lookup(id, "imeiMeid", "352099000000007", device_json(7)).await;
}

#[tokio::test]
async fn a_lookup_by_mac_filters_by_wifi_mac_address_colon_separated_in_lower_case() {
    let id = DeviceIdentifier::mac("A4E4B8730007").unwrap();
    assert_lookup(id, "wifiMacAddress", "a4:e4:b8:73:00:07", device_json(7)).await;
}

#[tokio::test]
async fn a_udid_not_found_as_normalised_is_tried_once_more_in_lower_case() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    let udid = format!("{:040x}", 0xabcdefu64);
    let mut record = device_json(7);
    record["udid"] = json!(udid);
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(query_param("udid", udid.to_ascii_uppercase()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"devices": {"count": 0}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(query_param("udid", udid.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(search_answer(
            "devices",
            "device",
            vec![record],
            1,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let id = DeviceIdentifier::udid(&udid).unwrap();
    let found = adapter(&server).lookup_device(&id).await.unwrap().unwrap();
    assert_eq!(
        found.identifiers.udid.as_deref(),
        Some(udid.to_ascii_uppercase().as_str())
    );
}

#[tokio::test]
async fn an_empty_search_is_not_found() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    mount_devices(
        &server,
        json!({"devices": {"count": 0, "pageNumber": 1, "pageSize": 25}}),
    )
    .await;
    let a = adapter(&server);
    for id in [
        DeviceIdentifier::mdm_device_id("gone").unwrap(),
        DeviceIdentifier::imei("352099001761481").unwrap(),
        DeviceIdentifier::mac("a4:e4:b8:73:a1:93").unwrap(),
        DeviceIdentifier::udid("1234").unwrap(),
    ] {
        assert_eq!(a.lookup_device(&id).await.unwrap(), None, "{id}");
    }
    assert_eq!(requests_to(&server, DEVICES_PATH).await.len(), 4);
}

#[tokio::test]
async fn a_lookup_by_serial_is_none_without_a_request_because_maas360_cannot_search_serials() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    mount_devices(&server, devices_answer(0..1, 1)).await;
    let id = DeviceIdentifier::serial("F17XK00000").unwrap();
    assert_eq!(adapter(&server).lookup_device(&id).await.unwrap(), None);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_search_that_ignores_its_filter_is_an_error_not_a_guess() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    mount_devices(&server, devices_answer(0..3, 3)).await;
    let id = DeviceIdentifier::mdm_device_id("Appl00000099").unwrap();
    let err = adapter(&server).lookup_device(&id).await.unwrap_err();
    assert_eq!(err.class(), "decode", "{err}");
    assert!(
        err.to_string().contains("did not apply the filter"),
        "{err}"
    );
}

#[tokio::test]
async fn an_identifier_on_two_devices_finds_the_one_that_reported_last() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    let mut older = device_json(1);
    older["udid"] = json!("shared-udid");
    older["lastReported"] = json!("2024-01-01T00:00:00");
    let mut newer = device_json(2);
    newer["udid"] = json!("SHARED-UDID");
    newer["lastReported"] = json!("2024-06-01T00:00:00");
    mount_devices(
        &server,
        search_answer("devices", "device", vec![newer, older], 2),
    )
    .await;
    let id = DeviceIdentifier::udid("shared-udid").unwrap();
    let found = adapter(&server).lookup_device(&id).await.unwrap().unwrap();
    assert_eq!(found.mdm_device_id, "Appl00000002");
}

// ---------------------------------------------------------------- commands

fn action_ok(device_id: &str) -> Value {
    json!({"actionResponse": {
        "actionID": 128294549,
        "actionStatus": 0,
        "description": "The action was executed successfully on the device.",
        "maas360DeviceID": device_id
    }})
}

async fn assert_command(command: MdmCommand, action: &str, form: &str) {
    let server = MockServer::start().await;
    mount_login(&server).await;
    let action_path = format!("/device-apis/devices/1.0/{action}/30012345");
    Mock::given(method("POST"))
        .and(path(action_path.as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(header("accept", "application/json"))
        .and(header("authorization", maas_token(1).as_str()))
        .and(body_string(form))
        .respond_with(ResponseTemplate::new(200).set_body_json(action_ok("Appl00000001")))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = adapter(&server)
        .execute(command, &device("Appl00000001"))
        .await
        .unwrap();
    assert_eq!(receipt.request, format!("POST {action_path}"));
    assert_eq!(receipt.request_body.as_deref(), Some(form));
    assert_eq!(receipt.status, 200);
    assert_eq!(receipt.vendor_reference.as_deref(), Some("128294549"));
    let answer: Value = serde_json::from_str(receipt.response_body.as_deref().unwrap()).unwrap();
    assert_eq!(answer, action_ok("Appl00000001"));
}

#[tokio::test]
async fn lock_posts_lock_device_with_the_device_id_form() {
    assert_command(MdmCommand::Lock, "lockDevice", "deviceId=Appl00000001").await;
}

#[tokio::test]
async fn enterprise_wipe_posts_selective_wipe_device() {
    assert_command(
        MdmCommand::EnterpriseWipe,
        "selectiveWipeDevice",
        "deviceId=Appl00000001",
    )
    .await;
}

#[tokio::test]
async fn wipe_posts_wipe_device_notifying_nobody() {
    assert_command(
        MdmCommand::Wipe,
        "wipeDevice",
        "deviceId=Appl00000001&notifyMe=No&notifyUser=No",
    )
    .await;
}

/// Sends `command` to a server that answers the action with `answer`;
/// returns the error and how many times the action was posted.
async fn command_error(command: MdmCommand, answer: ResponseTemplate) -> (AdapterError, usize) {
    let server = MockServer::start().await;
    mount_login(&server).await;
    Mock::given(method("POST"))
        .and(path("/device-apis/devices/1.0/wipeDevice/30012345"))
        .respond_with(answer.clone())
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/device-apis/devices/1.0/lockDevice/30012345"))
        .respond_with(answer)
        .mount(&server)
        .await;
    let err = adapter(&server)
        .execute(command, &device("Appl00000001"))
        .await
        .unwrap_err();
    let posts = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().starts_with("/device-apis/devices/1.0/"))
        .count();
    (err, posts)
}

#[tokio::test]
async fn action_status_1_is_a_permanent_refusal_with_the_description() {
    let (err, posts) = command_error(
        MdmCommand::Wipe,
        ResponseTemplate::new(200).set_body_json(json!({"actionResponse": {
            "actionID": 5, "actionStatus": 1,
            "description": "Wipe is not supported for this device.", "maas360DeviceID": "Appl00000001"
        }})),
    )
    .await;
    assert!(
        matches!(err, AdapterError::Rejected { status: 200, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .contains("Wipe is not supported for this device."),
        "{err}"
    );
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_400_is_a_permanent_refusal() {
    let (err, posts) = command_error(MdmCommand::Lock, ResponseTemplate::new(400)).await;
    assert!(
        matches!(err, AdapterError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_command_answered_429_is_rate_limited_for_its_retry_after_and_not_repeated() {
    let (err, posts) = command_error(
        MdmCommand::Lock,
        ResponseTemplate::new(429).insert_header("Retry-After", "120"),
    )
    .await;
    assert!(matches!(err, AdapterError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_command_answered_502_or_504_is_no_answer_and_503_unavailable() {
    for (status, class) in [(502, "no_answer"), (504, "no_answer"), (503, "unavailable")] {
        let (err, posts) = command_error(MdmCommand::Wipe, ResponseTemplate::new(status)).await;
        assert_eq!(err.class(), class, "{status}: {err}");
        assert_eq!(posts, 1);
    }
}

#[tokio::test]
async fn a_command_answered_by_a_page_or_another_2xx_does_not_count_as_sent() {
    for answer in [
        ResponseTemplate::new(200)
            .set_body_string("<html><head><title>Sign in</title></head></html>"),
        ResponseTemplate::new(202).set_body_json(action_ok("Appl00000001")),
        ResponseTemplate::new(200).set_body_json(json!({"actionResponse": {"actionStatus": 7}})),
    ] {
        let (err, posts) = command_error(MdmCommand::Wipe, answer).await;
        assert_eq!(err.class(), "no_answer", "{err}");
        assert_eq!(posts, 1);
    }
}

#[tokio::test]
async fn wifi_commands_are_not_offered_and_send_nothing() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    let a = adapter(&server);
    let caps = a.capabilities();
    assert_eq!(
        caps.commands.iter().copied().collect::<Vec<_>>(),
        [
            MdmCommand::Lock,
            MdmCommand::EnterpriseWipe,
            MdmCommand::Wipe
        ]
    );
    assert!(!caps.removes_wifi_profile_itself);
    for command in [MdmCommand::DisconnectWifi, MdmCommand::RemoveWifiProfile] {
        assert!(!caps.supports(command));
        let err = a.execute(command, &device("d1")).await.unwrap_err();
        assert_eq!(err.class(), "unsupported", "{err}");
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

// ---------------------------------------------------------------- rate limits and errors

#[tokio::test]
async fn a_listing_answered_429_with_a_long_retry_after_is_rate_limited_for_that_long() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "30"))
        .mount(&server)
        .await;
    let err = all_pages(&adapter(&server)).await.unwrap_err();
    assert!(matches!(err, AdapterError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(requests_to(&server, DEVICES_PATH).await.len(), 1);
}

#[tokio::test]
async fn a_read_answered_429_with_a_short_retry_after_is_repeated_once_after_it() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_devices(&server, devices_answer(0..2, 2)).await;
    let started = std::time::Instant::now();
    let pages = all_pages(&adapter(&server)).await.unwrap();
    assert_eq!(pages[0].items.len(), 2);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(requests_to(&server, DEVICES_PATH).await.len(), 2);

    // A second 429 is the answer.
    let server = MockServer::start().await;
    mount_login(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .mount(&server)
        .await;
    let err = all_pages(&adapter(&server)).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::ZERO));
    assert_eq!(requests_to(&server, DEVICES_PATH).await.len(), 2);
}

#[tokio::test]
async fn a_5xx_on_a_listing_is_unavailable_and_an_html_page_on_a_200_is_a_decode_error() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_string("<html><head><title>Service Unavailable</title></head></html>"),
        )
        .mount(&server)
        .await;
    let err = all_pages(&adapter(&server)).await.unwrap_err();
    assert!(
        matches!(
            err,
            AdapterError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("Service Unavailable"), "{err}");

    let server = MockServer::start().await;
    mount_login(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_string("<html><title>Portal</title></html>"),
        )
        .mount(&server)
        .await;
    let err = all_pages(&adapter(&server)).await.unwrap_err();
    assert_eq!(err.class(), "decode", "{err}");
}

#[tokio::test]
async fn a_base_url_with_a_path_keeps_it_in_front_of_every_api_path() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/proxy{LOGIN_PATH}")))
        .respond_with(Grants {
            issued: Arc::new(AtomicUsize::new(0)),
        })
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/proxy{DEVICES_PATH}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_answer(0..1, 1)))
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.base_url = Url::parse(&format!("{}/proxy/", server.uri())).unwrap();
    let report = Maas360Adapter::new(c)
        .unwrap()
        .health_check()
        .await
        .unwrap();
    assert_eq!(report.devices_on_first_page, 1);
}

// ------------------------------------------------------------ risk signal

const RISK: &str = "MTD_Threat_Level";
const SET_ATTRIBUTE_PATH: &str = "/device-apis/devices/1.0/setCustomAttributeValue/30012345";
const IDENTITY_PATH: &str = "/device-apis/devices/1.0/identity/30012345";

/// A server whose `setCustomAttributeValue` answers `answer`.
async fn attribute_server(answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    mount_login(&server).await;
    Mock::given(method("POST"))
        .and(path(SET_ATTRIBUTE_PATH))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn each_level_secured_included_is_posted_as_the_custom_attribute_form() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    for level in SignalLevel::ALL {
        let form = format!(
            "deviceId=Appl00000001&attributeName=MTD_Threat_Level&attributeValue={}",
            level.as_vendor()
        );
        Mock::given(method("POST"))
            .and(path(SET_ATTRIBUTE_PATH))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(header("accept", "application/json"))
            .and(header("authorization", maas_token(1).as_str()))
            .and(body_string(form.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(action_ok("Appl00000001")))
            .expect(1)
            .mount(&server)
            .await;
    }
    let a = adapter(&server);
    for level in SignalLevel::ALL {
        let receipt = a
            .signal_risk(&device("Appl00000001"), level, RISK)
            .await
            .unwrap();
        assert_eq!(receipt.request, format!("POST {SET_ATTRIBUTE_PATH}"));
        assert_eq!(
            receipt.request_body.unwrap(),
            format!(
                "deviceId=Appl00000001&attributeName=MTD_Threat_Level&attributeValue={}",
                level.as_vendor()
            )
        );
        assert_eq!(receipt.status, 200);
        assert_eq!(receipt.vendor_reference.as_deref(), Some("128294549"));
    }
}

#[tokio::test]
async fn writing_the_same_level_twice_is_accepted_twice() {
    let server =
        attribute_server(ResponseTemplate::new(200).set_body_json(action_ok("Appl00000001"))).await;
    let a = adapter(&server);
    let d = device("Appl00000001");
    let first = a.signal_risk(&d, SignalLevel::High, RISK).await.unwrap();
    let second = a.signal_risk(&d, SignalLevel::High, RISK).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(requests_to(&server, SET_ATTRIBUTE_PATH).await.len(), 2);
}

#[tokio::test]
async fn an_attribute_the_customer_has_not_defined_is_not_permitted_and_names_it() {
    let server = attribute_server(ResponseTemplate::new(200).set_body_json(json!({"actionResponse": {
        "actionStatus": 1,
        "description": "Invalid attribute name: custom attribute MTD_Threat_Level is not defined for this customer.",
        "maas360DeviceID": "Appl00000001"
    }})))
    .await;
    let err = adapter(&server)
        .signal_risk(&device("Appl00000001"), SignalLevel::Low, RISK)
        .await
        .unwrap_err();
    match &err {
        AdapterError::ActionNotPermitted { setting, message } => {
            assert_eq!(
                setting,
                "create the device custom attribute `MTD_Threat_Level` (text) in the MaaS360 portal"
            );
            assert!(message.contains("not defined"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn another_action_status_1_is_a_permanent_refusal_with_its_description() {
    let server = attribute_server(ResponseTemplate::new(200).set_body_json(
        json!({"actionResponse": {
            "actionStatus": 1,
            "description": "Invalid device ID: no such device for this customer.",
            "maas360DeviceID": "Appl00000001"
        }}),
    ))
    .await;
    let err = adapter(&server)
        .signal_risk(&device("Appl00000001"), SignalLevel::Low, RISK)
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Rejected { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("no such device"), "{err}");
}

#[tokio::test]
async fn a_write_answered_5xx_429_or_a_page_maps_as_a_command_does() {
    for (answer, class) in [
        (ResponseTemplate::new(503), "unavailable"),
        (ResponseTemplate::new(500), "unavailable"),
        (ResponseTemplate::new(502), "no_answer"),
        (
            ResponseTemplate::new(429).insert_header("Retry-After", "9"),
            "rate_limited",
        ),
        (
            ResponseTemplate::new(200)
                .set_body_raw("<html><title>Sign in</title></html>", "text/html"),
            "no_answer",
        ),
    ] {
        let server = attribute_server(answer).await;
        let err = adapter(&server)
            .signal_risk(&device("Appl00000001"), SignalLevel::Critical, RISK)
            .await
            .unwrap_err();
        assert_eq!(err.class(), class, "{err:?}");
        assert!(err.is_retryable(), "{err:?}");
        if class == "rate_limited" {
            assert_eq!(err.retry_after(), Some(Duration::from_secs(9)));
            assert_eq!(
                requests_to(&server, SET_ATTRIBUTE_PATH).await.len(),
                1,
                "a write is not repeated by the adapter"
            );
        }
    }
    let server = attribute_server(ResponseTemplate::new(400)).await;
    let err = adapter(&server)
        .signal_risk(&device("Appl00000001"), SignalLevel::Critical, RISK)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AdapterError::Rejected { status: 400, .. }),
        "{err:?}"
    );
}

fn identity(attributes: Option<Value>) -> Value {
    let mut identity =
        json!({"maas360DeviceID": "x", "ownership": "Corporate Owned", "vendor": ""});
    if let Some(list) = attributes {
        identity["customAttributes"] = json!({ "customAttribute": list });
    } else {
        identity["customAttributes"] = json!({});
    }
    json!({ "deviceIdentity": identity })
}

#[tokio::test]
async fn the_level_is_read_back_from_each_identity_with_the_one_object_quirk() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    let attr = |name: &str, value: &str| json!({"customAttributeName": name, "customAttributeValue": value});
    for (id, answer) in [
        // One attribute: a bare object, not a list.
        ("d-one", identity(Some(attr(RISK, "Critical")))),
        (
            "d-many",
            identity(Some(json!([
                attr("Office", "Berlin"),
                attr("mtd_threat_level", "secured")
            ]))),
        ),
        ("d-none", identity(None)),
        ("d-other", identity(Some(attr("Office", "Berlin")))),
        ("d-odd", identity(Some(attr(RISK, "None")))),
    ] {
        Mock::given(method("GET"))
            .and(path(IDENTITY_PATH))
            .and(query_param("deviceId", id))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&server)
            .await;
    }
    // MaaS360 answers an unknown device id with a 400 and no body.
    Mock::given(method("GET"))
        .and(path(IDENTITY_PATH))
        .and(query_param("deviceId", "d-gone"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&server)
        .await;
    let a = adapter(&server);
    assert_eq!(a.risk_read_back(), Some(RiskReadBack::PerDevice));
    let devices: Vec<Device> = ["d-one", "d-many", "d-none", "d-other", "d-odd", "d-gone"]
        .into_iter()
        .map(device)
        .collect();
    assert_eq!(
        a.read_risk(&devices, RISK).await.unwrap(),
        vec![
            Some(SignalLevel::Critical),
            Some(SignalLevel::Secured),
            None,
            None,
            None,
            None
        ]
    );
    let gets = requests_to(&server, IDENTITY_PATH).await;
    assert_eq!(gets.len(), 6, "one identity per device");
    assert!(gets
        .iter()
        .all(|r| r.headers.get("accept").unwrap() == "application/json"));
}

#[tokio::test]
async fn an_identity_that_is_not_one_is_a_decode_error_and_a_5xx_unavailable() {
    let server = MockServer::start().await;
    mount_login(&server).await;
    Mock::given(method("GET"))
        .and(path(IDENTITY_PATH))
        .and(query_param("deviceId", "d-page"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html></html>", "text/html"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(IDENTITY_PATH))
        .and(query_param("deviceId", "d-down"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let a = adapter(&server);
    let err = a.read_risk(&[device("d-page")], RISK).await.unwrap_err();
    assert_eq!(err.class(), "decode", "{err:?}");
    let err = a.read_risk(&[device("d-down")], RISK).await.unwrap_err();
    assert_eq!(err.class(), "unavailable", "{err:?}");
}

#[tokio::test]
async fn nothing_can_tell_a_missing_attribute_ahead_so_none_is_reported() {
    let server = MockServer::start().await;
    let a = adapter(&server);
    assert!(a.missing_risk_signal(RISK).await.unwrap().is_empty());
    assert!(server.received_requests().await.unwrap().is_empty());
}
