//! The SOTI adapter against a wiremock MobiControl: auth, paging, mapping,
//! lookups, actions and every error class.

use futures::TryStreamExt;
use mtd_adapter::http::HttpSettings;
use mtd_adapter::{
    AdapterError, Device, DeviceIdentifier, Identifiers, MdmAdapter, MdmCommand, Ownership,
    Platform, Posture, RiskReadBack, Secret, SignalLevel,
};
use mtd_adapter_soti::{SotiAdapter, SotiConfig, SotiCredentials};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use url::Url;
use wiremock::matchers::{body_string, body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const TOKEN_PATH: &str = "/MobiControl/api/token";
const DEVICES_PATH: &str = "/MobiControl/api/devices";
const CLIENT_ID: &str = "a9326fd5872f4a66b6bab3e2c8065e63";
const CLIENT_SECRET: &str = "19DzUX7K7ObjwPRFbxZanwVQFsUcqMak";
const USERNAME: &str = "api-admin";
const PASSWORD: &str = "p@ss w&rd=1";

fn config(server: &MockServer) -> SotiConfig {
    let mut c = SotiConfig::new(
        "soti-test",
        Url::parse(&format!("{}/MobiControl", server.uri())).unwrap(),
        SotiCredentials {
            client_id: CLIENT_ID.into(),
            client_secret: Secret::new(CLIENT_SECRET),
            username: USERNAME.into(),
            password: Secret::new(PASSWORD),
        },
    );
    c.http = HttpSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ca_cert_pem: None,
    };
    c.wifi_disconnect_profile_id = Some("wifi-off-profile".into());
    c
}

fn adapter(server: &MockServer) -> SotiAdapter {
    SotiAdapter::new(config(server)).unwrap()
}

fn adapter_with(server: &MockServer, f: impl FnOnce(&mut SotiConfig)) -> SotiAdapter {
    let mut c = config(server);
    f(&mut c);
    SotiAdapter::new(c).unwrap()
}

/// Answers token requests with `tok-1`, `tok-2`, … so tests can tell them apart.
#[derive(Clone)]
struct Tokens {
    issued: Arc<AtomicUsize>,
    expires_in: u64,
    delay: Duration,
}

impl Respond for Tokens {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": format!("tok-{n}"),
                "token_type": "bearer",
                "expires_in": self.expires_in
            }))
            .set_delay(self.delay)
    }
}

async fn mount_tokens(server: &MockServer) -> Arc<AtomicUsize> {
    mount_tokens_with(server, 3600, Duration::ZERO).await
}

async fn mount_tokens_with(
    server: &MockServer,
    expires_in: u64,
    delay: Duration,
) -> Arc<AtomicUsize> {
    let issued = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(Tokens {
            issued: issued.clone(),
            expires_in,
            delay,
        })
        .mount(server)
        .await;
    issued
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

fn android(i: usize) -> Value {
    json!({
        "$type": "DeviceAndroidPlus",
        "DeviceId": format!("3520990017{i:05}"),
        "DeviceName": format!("android-{i}"),
        "Kind": "AndroidPlus",
        "Model": "Galaxy A54",
        "OSVersion": "14",
        "Path": "\\\\Company\\Field",
        "MACAddress": "D087E278B54B",
        "IMEI_MEID_ESN": format!("3520990017{i:05}"),
        "HardwareSerialNumber": format!("r58m{i:05}"),
        "LastCheckInTime": "2024-05-01T10:20:30",
        "DeviceUserInfo": null
    })
}

fn page_of(n: usize, from: usize) -> Value {
    Value::Array((from..from + n).map(android).collect())
}

async fn list_all(a: &SotiAdapter) -> Result<Vec<Device>, AdapterError> {
    let pages: Vec<_> = a.devices().try_collect().await?;
    Ok(pages.into_iter().flat_map(|p| p.items).collect())
}

/// Lists devices against a server that answers every page with `answer`.
async fn listing_error(answer: ResponseTemplate) -> (AdapterError, MockServer) {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(answer)
        .mount(&server)
        .await;
    let err = list_all(&adapter(&server)).await.unwrap_err();
    (err, server)
}

fn fixtures() -> Value {
    serde_json::from_str(include_str!("fixtures/spec-requests.json")).unwrap()
}

fn device(id: &str) -> Device {
    Device {
        reported_risk: None,
        posture: Default::default(),
        mdm_device_id: id.into(),
        identifiers: Identifiers::default(),
        name: None,
        platform: Platform::Android,
        model: None,
        os_version: None,
        ownership: Ownership::Unknown,
        user: None,
        groups: vec![],
        last_checkin_at: None,
    }
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn the_token_is_requested_with_the_basic_header_and_the_password_grant_form() {
    let server = MockServer::start().await;
    // base64("a9326fd5872f4a66b6bab3e2c8065e63:19DzUX7K7ObjwPRFbxZanwVQFsUcqMak")
    let basic = "Basic YTkzMjZmZDU4NzJmNGE2NmI2YmFiM2UyYzgwNjVlNjM6MTlEelVYN0s3T2Jqd1BSRmJ4WmFud1ZRRnNVY3FNYWs=";
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .and(header("authorization", basic))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "grant_type=password&username=api-admin&password=p%40ss+w%26rd%3D1",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "the-token", "token_type": "bearer", "expires_in": 3600}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(header("authorization", "Bearer the-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_of(2, 0)))
        .expect(1)
        .mount(&server)
        .await;
    let report = adapter(&server).health_check().await.unwrap();
    assert_eq!(report.devices_on_first_page, 2);
}

#[tokio::test]
async fn refused_credentials_are_unauthorized_and_the_message_shows_no_secret() {
    for (status, body) in [
        (400, json!({"error": "invalid_grant"})),
        (401, json!({"ErrorMessage": "Unauthorized"})),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .expect(1)
            .mount(&server)
            .await;
        let err = adapter(&server).health_check().await.unwrap_err();
        assert!(
            matches!(err, AdapterError::Unauthorized(_)),
            "{status}: {err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("refused the credentials"), "{text}");
        for secret in [PASSWORD, CLIENT_SECRET] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(requests_to(&server, DEVICES_PATH).await.is_empty());
    }
}

#[tokio::test]
async fn a_cached_token_serves_many_calls_and_one_at_its_end_is_renewed_before_use() {
    let server = MockServer::start().await;
    let issued = mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_of(1, 0)))
        .mount(&server)
        .await;
    let a = adapter(&server);
    for _ in 0..3 {
        a.health_check().await.unwrap();
    }
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    // The adapter prints neither its credentials nor the cached token.
    let printed = format!("{a:?}");
    for secret in [PASSWORD, CLIENT_SECRET, "tok-1"] {
        assert!(!printed.contains(secret), "{printed}");
    }

    // A token that expires at once (expires_in 0) is never reused.
    let server = MockServer::start().await;
    let issued = mount_tokens_with(&server, 0, Duration::ZERO).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_of(1, 0)))
        .mount(&server)
        .await;
    let a = adapter(&server);
    a.health_check().await.unwrap();
    a.health_check().await.unwrap();
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn twenty_concurrent_lookups_share_one_token_request() {
    let server = MockServer::start().await;
    let issued = mount_tokens_with(&server, 3600, Duration::from_millis(300)).await;
    Mock::given(method("GET"))
        .and(path(format!("{DEVICES_PATH}/dev-1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(android(1)))
        .expect(20)
        .mount(&server)
        .await;
    let a = Arc::new(adapter(&server));
    let id = DeviceIdentifier::mdm_device_id("dev-1").unwrap();
    let lookups = (0..20).map(|_| {
        let (a, id) = (a.clone(), id.clone());
        tokio::spawn(async move { a.lookup_device(&id).await })
    });
    for l in futures::future::join_all(lookups).await {
        assert!(l.unwrap().unwrap().is_some());
    }
    assert_eq!(issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_token_that_expires_in_the_middle_of_a_listing_is_renewed_and_the_listing_completes() {
    let server = MockServer::start().await;
    let issued = mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(query_param("skip", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_of(2, 0)))
        .mount(&server)
        .await;
    // The server stops accepting the first token between page 1 and page 2.
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(query_param("skip", "2"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"ErrorMessage": "Token expired"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .and(query_param("skip", "2"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_of(1, 2)))
        .expect(1)
        .mount(&server)
        .await;
    let a = adapter_with(&server, |c| c.page_size = 2);
    let devices = list_all(&a).await.unwrap();
    assert_eq!(devices.len(), 3);
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------- error classes

#[tokio::test]
async fn a_401_after_a_fresh_token_is_unauthorized_after_exactly_one_retry() {
    let (err, server) = listing_error(
        ResponseTemplate::new(401).set_body_json(json!({"ErrorMessage": "Access denied"})),
    )
    .await;
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
    assert!(err.to_string().contains("Access denied"), "{err}");
    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 2);
    assert_eq!(requests_to(&server, DEVICES_PATH).await.len(), 2);
}

#[tokio::test]
async fn a_403_is_forbidden_with_sotis_message() {
    let (err, _s) = listing_error(
        ResponseTemplate::new(403)
            .set_body_json(json!({"ErrorMessage": "User has no View Groups permission"})),
    )
    .await;
    assert!(matches!(err, AdapterError::Forbidden(_)), "{err:?}");
    assert!(err.to_string().contains("View Groups"), "{err}");
}

#[tokio::test]
async fn a_404_on_the_listing_is_not_found() {
    let (err, _s) = listing_error(ResponseTemplate::new(404)).await;
    assert!(matches!(err, AdapterError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_500_and_a_503_are_unavailable_and_retryable() {
    for status in [500u16, 503] {
        let (err, _s) = listing_error(
            ResponseTemplate::new(status)
                .set_body_json(json!({"ErrorMessage": "Internal Server Error"})),
        )
        .await;
        match &err {
            AdapterError::Unavailable { status: s, .. } => assert_eq!(*s, Some(status)),
            other => panic!("{status}: {other:?}"),
        }
        assert!(err.is_retryable());
        assert!(err.to_string().contains("Internal Server Error"), "{err}");
    }
}

#[tokio::test]
async fn a_429_with_retry_after_is_rate_limited_for_that_long() {
    let (err, _s) =
        listing_error(ResponseTemplate::new(429).insert_header("Retry-After", "3")).await;
    assert!(matches!(err, AdapterError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
}

#[tokio::test]
async fn a_400_keeps_sotis_error_code_and_message() {
    let (err, _s) = listing_error(ResponseTemplate::new(400).set_body_json(json!({
        "ErrorCode": 0,
        "ErrorMessage": "Take must be a positive number",
        "Data": [],
        "HelpLink": null
    })))
    .await;
    match &err {
        AdapterError::Rejected { status, message } => {
            assert_eq!(*status, 400);
            assert!(
                message.contains("ErrorCode 0: Take must be a positive number"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page_of(1, 0))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let a = adapter_with(&server, |c| {
        c.http.request_timeout = Duration::from_millis(300)
    });
    let err = list_all(&a).await.unwrap_err();
    assert!(matches!(err, AdapterError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn malformed_json_on_a_200_is_a_decode_error() {
    let (err, _s) = listing_error(
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/json")
            .set_body_string("[{\"DeviceId\": \"a\",, }"),
    )
    .await;
    assert!(matches!(err, AdapterError::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn an_html_error_page_is_reduced_to_its_title() {
    let page = "<!DOCTYPE html><html><head><title>502 - Web server received an invalid response</title></head><body><h1>Server Error</h1></body></html>";
    let (err, _s) = listing_error(
        ResponseTemplate::new(502)
            .insert_header("content-type", "text/html")
            .set_body_string(page),
    )
    .await;
    assert!(matches!(err, AdapterError::Unavailable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("502 - Web server received an invalid response"),
        "{text}"
    );
    assert!(!text.contains("<h1>"), "{text}");

    // The same page with a 200 (a proxy's login page) cannot be read as devices.
    let (err, _s) = listing_error(
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/html")
            .set_body_string(page),
    )
    .await;
    assert!(matches!(err, AdapterError::Decode(_)), "{err:?}");
    assert!(err.to_string().contains("HTML page: 502"), "{err}");
}

#[tokio::test]
async fn a_closed_port_is_cannot_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = SotiConfig::new(
        "closed",
        Url::parse(&format!("http://127.0.0.1:{port}/MobiControl")).unwrap(),
        SotiCredentials {
            client_id: "id".into(),
            client_secret: Secret::new("s"),
            username: "u".into(),
            password: Secret::new("p"),
        },
    );
    c.http.connect_timeout = Duration::from_secs(2);
    let err = SotiAdapter::new(c)
        .unwrap()
        .health_check()
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Connect(_)), "{err:?}");
}

// ---------------------------------------------------------------- paging

async fn paging(total: usize, take: u32) -> (Vec<Device>, Vec<(String, String)>) {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let mut skip = 0usize;
    loop {
        let n = total.saturating_sub(skip).min(take as usize);
        Mock::given(method("GET"))
            .and(path(DEVICES_PATH))
            .and(query_param("skip", skip.to_string()))
            .and(query_param("take", take.to_string()))
            .respond_with(ResponseTemplate::new(200).set_body_json(page_of(n, skip)))
            .mount(&server)
            .await;
        if n < take as usize {
            break;
        }
        skip += take as usize;
    }
    let a = adapter_with(&server, |c| c.page_size = take);
    let devices = list_all(&a).await.unwrap();
    let asked = requests_to(&server, DEVICES_PATH)
        .await
        .into_iter()
        .map(|r| {
            let q: std::collections::HashMap<_, _> = r.url.query_pairs().into_owned().collect();
            (q["skip"].clone(), q["take"].clone())
        })
        .collect();
    (devices, asked)
}

#[tokio::test]
async fn an_empty_listing_is_one_request_and_no_devices() {
    let (devices, asked) = paging(0, 5).await;
    assert!(devices.is_empty());
    assert_eq!(asked, vec![("0".into(), "5".into())]);
}

#[tokio::test]
async fn a_single_short_page_is_the_whole_listing() {
    let (devices, asked) = paging(3, 5).await;
    assert_eq!(devices.len(), 3);
    assert_eq!(asked.len(), 1);
}

#[tokio::test]
async fn an_exact_multiple_of_take_ends_with_an_empty_page() {
    let (devices, asked) = paging(4, 2).await;
    assert_eq!(devices.len(), 4);
    assert_eq!(
        asked,
        vec![
            ("0".into(), "2".into()),
            ("2".into(), "2".into()),
            ("4".into(), "2".into())
        ]
    );
    let ids: std::collections::BTreeSet<_> = devices.iter().map(|d| &d.mdm_device_id).collect();
    assert_eq!(ids.len(), 4, "no device twice");
}

#[tokio::test]
async fn a_long_listing_arrives_in_full_pages_then_a_short_one() {
    let (devices, asked) = paging(1234, 500).await;
    assert_eq!(devices.len(), 1234);
    assert_eq!(asked.len(), 3);
}

// ---------------------------------------------------------------- mapping

#[tokio::test]
async fn devices_map_both_mac_formats_both_serial_fields_any_kind_spelling_and_null_users() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let body = json!([
        {
            "$type": "DeviceIos",
            "DeviceId": "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567",
            "Kind": "iOS",
            "DeviceName": "Ana's iPhone",
            "Model": "iPhone 15",
            "OSVersion": "17.4.1",
            "Path": "\\\\Company\\Sales",
            "MACAddress": "a4:67:06:0c:15:3d",
            "IMEI_MEID_ESN": "35 209900 176148 1",
            "ManufacturerSerialNumber": "f17xk0abcd",
            "LastCheckInTime": "2024-05-01T10:20:30Z",
            "IsAgentOnline": true,
            "Mode": "Active",
            "DeviceUserInfo": {"UserName": "ana", "FirstName": "Ana", "LastName": "Lima",
                               "Email": "ana@example.com", "UPN": "ana@corp.example", "Identifier": null}
        },
        {
            "DeviceId": "00008030-001a2d3e4f5a6b7c",
            "Kind": "Ios",
            "MACAddress": "A4:67:06:0C:15:3E",
            "ManufacturerSerialNumber": "DMPXK1ABCD",
            "DeviceUserInfo": {"UserName": null, "Email": "bo@example.com"}
        },
        {
            "$type": "DeviceAndroidPlus",
            "DeviceId": "352099001761482",
            "Kind": "AndroidPlus",
            "MACAddress": "D087E278B54B",
            "HardwareSerialNumber": "R58M12345",
            "IMEI_MEID_ESN": "352099001761482",
            "LastCheckInTime": "2024-05-01T10:20:30",
            "DeviceUserInfo": null
        },
        {"Kind": "AndroidPlus", "DeviceName": "no id"}
    ]);
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let pages: Vec<_> = adapter(&server).devices().try_collect().await.unwrap();
    assert_eq!(pages.len(), 1);
    let page = &pages[0];
    assert_eq!(page.skipped, 1);
    assert!(page.skip_reason.as_deref().unwrap().contains("DeviceId"));
    let [ios, ios2, android] = &page.items[..] else {
        panic!("{:?}", page.items)
    };

    assert_eq!(
        ios.mdm_device_id,
        "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567"
    );
    assert_eq!(ios.platform, Platform::Ios);
    assert_eq!(
        ios.identifiers,
        Identifiers {
            udid: Some("0A1B2C3D4E5F60718293A4B5C6D7E8F901234567".into()),
            serial: Some("F17XK0ABCD".into()),
            imei: Some("352099001761481".into()),
            mac: Some("a467060c153d".into()),
        }
    );
    assert_eq!(ios.name.as_deref(), Some("Ana's iPhone"));
    assert_eq!(ios.model.as_deref(), Some("iPhone 15"));
    assert_eq!(ios.os_version.as_deref(), Some("17.4.1"));
    assert_eq!(ios.groups, vec!["\\\\Company\\Sales".to_string()]);
    assert_eq!(ios.ownership, Ownership::Unknown);
    let user = ios.user.as_ref().unwrap();
    assert_eq!(user.mdm_user_id, "ana");
    assert_eq!(user.email.as_deref(), Some("ana@example.com"));
    assert_eq!(user.first_name.as_deref(), Some("Ana"));
    assert_eq!(
        ios.last_checkin_at.unwrap().to_rfc3339(),
        "2024-05-01T10:20:30+00:00"
    );

    assert_eq!(ios2.platform, Platform::Ios);
    assert_eq!(
        ios2.identifiers.udid.as_deref(),
        Some("00008030-001A2D3E4F5A6B7C")
    );
    assert_eq!(ios2.identifiers.mac.as_deref(), Some("a467060c153e"));
    assert_eq!(ios2.user.as_ref().unwrap().mdm_user_id, "bo@example.com");

    assert_eq!(android.platform, Platform::Android);
    assert_eq!(android.identifiers.udid, None);
    assert_eq!(android.identifiers.serial.as_deref(), Some("R58M12345"));
    assert_eq!(android.identifiers.mac.as_deref(), Some("d087e278b54b"));
    assert_eq!(android.user, None);
    assert_eq!(
        android.last_checkin_at.unwrap().to_rfc3339(),
        "2024-05-01T10:20:30+00:00"
    );
}

/// The posture fields of the SOTI spec on an iOS device, an Android+ device
/// with lenient and unenrolled values, and a Windows device that says nothing.
fn posture_devices() -> Value {
    json!([
        {
            "$type": "DeviceIos",
            "DeviceId": "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
            "Kind": "Ios",
            "Manufacturer": "Apple",
            "Model": "iPhone 15",
            "OSVersion": "17.4.1",
            "ManufacturerSerialNumber": "F17XK0ABCD",
            "LastCheckInTime": "2024-05-01T10:20:30.123Z",
            "ComplianceStatus": true,
            "Mode": "Active",
            "IsEncrypted": true,
            "PasscodeEnabled": true,
            "IsOSSecure": true,
            "PhoneNumber": "+14165550123",
            "DeviceUserInfo": null
        },
        {
            "$type": "DeviceAndroidPlus",
            "DeviceId": "352099001761482",
            "Kind": "AndroidPlus",
            "Manufacturer": "samsung",
            "Model": "SM-G991B",
            "OSVersion": "14",
            "LastCheckInTime": "2024-05-01T10:20:30",
            "ComplianceStatus": "False",
            "Mode": "UnenrolledByUser",
            "IsEncrypted": "false",
            "PasscodeEnabled": 0,
            "IsOSSecure": false,
            "PhoneNumber": "",
            "DeviceUserInfo": null
        },
        {
            "$type": "DeviceWindowsDesktop",
            "DeviceId": "{0F4C1B2A-1111-2222-3333-444455556666}",
            "Kind": "WindowsDesktop",
            "Manufacturer": "",
            "ComplianceStatus": null,
            "Mode": "",
            "PasscodeEnabled": "unknown",
            "DeviceUserInfo": null
        }
    ])
}

fn posture_of(devices: &[Device], id: &str) -> Posture {
    devices
        .iter()
        .find(|d| d.mdm_device_id == id)
        .unwrap_or_else(|| panic!("{id} not listed"))
        .posture
        .clone()
}

#[tokio::test]
async fn the_listing_maps_posture_field_by_field_with_lenient_and_unsaid_values() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(posture_devices()))
        .mount(&server)
        .await;
    let devices = list_all(&adapter(&server)).await.unwrap();
    assert_eq!(
        devices.len(),
        3,
        "no record is lost to an odd posture value"
    );
    assert_eq!(
        posture_of(&devices, "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"),
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
        posture_of(&devices, "352099001761482"),
        Posture {
            compliant: Some(false),
            enrolled: Some(false),
            encrypted: Some(false),
            passcode: Some(false),
            compromised: Some(true),
            manufacturer: Some("samsung".into()),
            phone_number: None,
        }
    );
    assert_eq!(
        posture_of(&devices, "{0F4C1B2A-1111-2222-3333-444455556666}"),
        Posture::default()
    );
    let android = devices
        .iter()
        .find(|d| d.mdm_device_id == "352099001761482")
        .unwrap();
    assert_eq!(android.model.as_deref(), Some("SM-G991B"));
    assert_eq!(android.os_version.as_deref(), Some("14"));
    assert_eq!(
        android.last_checkin_at.unwrap().to_rfc3339(),
        "2024-05-01T10:20:30+00:00"
    );
}

#[tokio::test]
async fn a_lookup_maps_posture_as_the_listing_does_by_device_path_and_by_search() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let devices = posture_devices();
    Mock::given(method("GET"))
        .and(path("/MobiControl/api/devices/352099001761482"))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices[1].clone()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/MobiControl/api/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([devices[0].clone()])))
        .expect(1)
        .mount(&server)
        .await;
    let a = adapter(&server);
    let android = a
        .lookup_device(&DeviceIdentifier::mdm_device_id("352099001761482").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(android.posture.enrolled, Some(false));
    assert_eq!(android.posture.compromised, Some(true));
    assert_eq!(android.posture.compliant, Some(false));
    assert_eq!(android.posture.manufacturer.as_deref(), Some("samsung"));
    assert_eq!(android.posture.phone_number, None);
    let ios = a
        .lookup_device(&DeviceIdentifier::serial("F17XK0ABCD").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ios.posture.compromised, Some(false));
    assert_eq!(ios.posture.phone_number.as_deref(), Some("+14165550123"));
    assert_eq!(ios.model.as_deref(), Some("iPhone 15"));
    assert_eq!(ios.os_version.as_deref(), Some("17.4.1"));
    assert_eq!(
        ios.last_checkin_at.unwrap().to_rfc3339(),
        "2024-05-01T10:20:30.123+00:00"
    );
}

#[tokio::test]
async fn groups_are_the_device_group_paths_and_users_are_not_listed() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path("/MobiControl/api/devicegroups"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"Name": "Company", "Path": "\\\\Company", "Icon": "Yellow", "Kind": "Regular", "ReferenceId": "r1"},
            {"Name": "Sales", "Path": "\\\\Company\\Sales", "Icon": "Blue", "Kind": "Regular", "ReferenceId": "r2"}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let a = adapter(&server);
    let pages: Vec<_> = a.groups().try_collect().await.unwrap();
    let groups: Vec<_> = pages.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[1].mdm_group_id, "\\\\Company\\Sales");
    assert_eq!(groups[1].name, "\\\\Company\\Sales");
    let users: Vec<_> = a.users().try_collect().await.unwrap();
    assert!(users.is_empty());
    let caps = a.capabilities();
    assert!(caps.groups && !caps.user_listing && !caps.removes_wifi_profile_itself);
    assert_eq!(caps.commands.len(), 5);
}

// ---------------------------------------------------------------- lookups

#[tokio::test]
async fn lookups_by_device_id_udid_and_mac_use_the_device_path() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    for p in [
        "/MobiControl/api/devices/352099001761482",
        "/MobiControl/api/devices/0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
        "/MobiControl/api/devices/mac:A467060C153D",
        "/MobiControl/api/devices/%7B0F4C1B2A-1111-2222-3333-444455556666%7D",
    ] {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200).set_body_json(android(7)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let a = adapter(&server);
    for id in [
        DeviceIdentifier::mdm_device_id("352099001761482").unwrap(),
        DeviceIdentifier::udid("0A1B2C3D4E5F60718293A4B5C6D7E8F901234567").unwrap(),
        DeviceIdentifier::mac("a4:67:06:0c:15:3d").unwrap(),
        DeviceIdentifier::mdm_device_id("{0F4C1B2A-1111-2222-3333-444455556666}").unwrap(),
    ] {
        let d = a.lookup_device(&id).await.unwrap();
        assert_eq!(d.unwrap().mdm_device_id, "352099001700007", "{id}");
    }
}

#[tokio::test]
async fn an_unknown_device_is_none() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path("/MobiControl/api/devices/nope"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"ErrorCode": 4001, "ErrorMessage": "Device not found"})),
        )
        .mount(&server)
        .await;
    let id = DeviceIdentifier::mdm_device_id("nope").unwrap();
    assert_eq!(adapter(&server).lookup_device(&id).await.unwrap(), None);
}

#[tokio::test]
async fn a_lookup_by_imei_searches_with_a_double_encoded_filter() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path("/MobiControl/api/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_of(1, 3)))
        .expect(1)
        .mount(&server)
        .await;
    let id = DeviceIdentifier::imei("35-209900-176148-1").unwrap();
    let d = adapter(&server).lookup_device(&id).await.unwrap().unwrap();
    assert_eq!(d.mdm_device_id, "352099001700003");
    let asked = requests_to(&server, "/MobiControl/api/devices/search").await;
    assert_eq!(
        asked[0].url.query(),
        Some("filter=IMEI_MEID_ESN%253D%2527352099001761481%2527&skip=0&take=2")
    );
}

#[tokio::test]
async fn a_lookup_by_serial_tries_hardware_then_manufacturer_serial_number() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    // wiremock decodes the query once: what remains is the once-encoded filter.
    Mock::given(method("GET"))
        .and(path("/MobiControl/api/devices/search"))
        .and(query_param(
            "filter",
            "HardwareSerialNumber%3D%27F17XK0ABCD%27",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/MobiControl/api/devices/search"))
        .and(query_param(
            "filter",
            "ManufacturerSerialNumber%3D%27F17XK0ABCD%27",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{
            "DeviceId": "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
            "Kind": "Ios",
            "ManufacturerSerialNumber": "F17XK0ABCD"
        }])))
        .expect(1)
        .mount(&server)
        .await;
    let id = DeviceIdentifier::serial("f17xk0abcd").unwrap();
    let d = adapter(&server).lookup_device(&id).await.unwrap().unwrap();
    assert_eq!(d.identifiers.serial.as_deref(), Some("F17XK0ABCD"));
    let queries: Vec<_> = requests_to(&server, "/MobiControl/api/devices/search")
        .await
        .into_iter()
        .map(|r| r.url.query().unwrap().to_string())
        .collect();
    assert_eq!(
        queries,
        vec![
            "filter=HardwareSerialNumber%253D%2527F17XK0ABCD%2527&skip=0&take=2",
            "filter=ManufacturerSerialNumber%253D%2527F17XK0ABCD%2527&skip=0&take=2",
        ]
    );
}

#[tokio::test]
async fn a_serial_that_matches_two_devices_is_refused_not_guessed() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path("/MobiControl/api/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_of(2, 0)))
        .mount(&server)
        .await;
    let id = DeviceIdentifier::serial("DUP").unwrap();
    let err = adapter(&server).lookup_device(&id).await.unwrap_err();
    assert!(matches!(err, AdapterError::Rejected { .. }), "{err:?}");
    assert!(err.to_string().contains("2 or more devices"), "{err}");
}

// ---------------------------------------------------------------- actions

async fn action_server() -> MockServer {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("POST"))
        .and(path_regex_any())
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

fn path_regex_any() -> wiremock::matchers::PathRegexMatcher {
    wiremock::matchers::path_regex(r"^/MobiControl/api/devices/.+")
}

/// The one command request the server received: method, path, JSON body, content type.
async fn sent(server: &MockServer) -> (String, String, Value, String) {
    let reqs: Vec<_> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() != TOKEN_PATH)
        .collect();
    assert_eq!(reqs.len(), 1, "exactly one command request");
    let r = &reqs[0];
    (
        r.method.to_string(),
        r.url.path().to_string(),
        serde_json::from_slice(&r.body).unwrap(),
        r.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string(),
    )
}

#[tokio::test]
async fn lock_sends_the_spec_lock_action_and_keeps_a_receipt() {
    let server = action_server().await;
    let receipt = adapter(&server)
        .execute(MdmCommand::Lock, &device("352099001761482"))
        .await
        .unwrap();
    let (m, p, body, ct) = sent(&server).await;
    assert_eq!(m, "POST");
    assert_eq!(p, "/MobiControl/api/devices/352099001761482/actions");
    assert_eq!(ct, "application/json");
    let fx = fixtures();
    assert_eq!(body, fx["requests"]["lock"]["body"]);
    assert_eq!(
        fx["requests"]["lock"]["path"],
        "/api/devices/{deviceId}/actions"
    );
    assert_eq!(
        receipt.request,
        "POST /MobiControl/api/devices/352099001761482/actions"
    );
    assert_eq!(
        serde_json::from_str::<Value>(receipt.request_body.as_deref().unwrap()).unwrap(),
        body
    );
    assert_eq!(receipt.status, 204);
    assert_eq!(receipt.response_body, None);
}

#[tokio::test]
async fn disconnect_wifi_installs_the_profile_with_the_spec_body() {
    let server = action_server().await;
    let receipt = adapter(&server)
        .execute(MdmCommand::DisconnectWifi, &device("352099001761482"))
        .await
        .unwrap();
    let (m, p, body, ct) = sent(&server).await;
    assert_eq!(m, "POST");
    assert_eq!(
        p,
        "/MobiControl/api/devices/352099001761482/profiles/wifi-off-profile/actions"
    );
    assert_eq!(ct, "application/json");
    let fx = fixtures();
    assert_eq!(body, fx["requests"]["profile_install"]["body"]);
    assert_eq!(receipt.request_body.as_deref(), Some("\"Install\""));
    assert_eq!(receipt.status, 204);
}

#[tokio::test]
async fn removing_the_wifi_profile_revokes_it() {
    let server = action_server().await;
    adapter(&server)
        .execute(MdmCommand::RemoveWifiProfile, &device("dev 1/x"))
        .await
        .unwrap();
    let (_, p, body, _) = sent(&server).await;
    assert_eq!(
        p,
        "/MobiControl/api/devices/dev%201%2Fx/profiles/wifi-off-profile/actions"
    );
    assert_eq!(body, fixtures()["requests"]["profile_revoke"]["body"]);
}

#[tokio::test]
async fn enterprise_wipe_is_unenroll_with_revoked_certificates() {
    let server = action_server().await;
    adapter(&server)
        .execute(MdmCommand::EnterpriseWipe, &device("abc"))
        .await
        .unwrap();
    let (_, p, body, _) = sent(&server).await;
    assert_eq!(p, "/MobiControl/api/devices/abc/actions");
    let fx = fixtures();
    assert_eq!(body, fx["requests"]["enterprise_wipe"]["body"]);
    assert_required_fields(&body, &fx["device_action"]["definitions"]["UnenrollAction"]);
}

#[tokio::test]
async fn wipe_sends_every_field_the_spec_requires_with_valid_values() {
    let server = action_server().await;
    adapter(&server)
        .execute(MdmCommand::Wipe, &device("abc"))
        .await
        .unwrap();
    let (_, p, body, _) = sent(&server).await;
    assert_eq!(p, "/MobiControl/api/devices/abc/actions");
    let fx = fixtures();
    let def = &fx["device_action"]["definitions"]["WipeAction"];
    assert_required_fields(&body, def);
    for (field, allowed) in def["enums"].as_object().unwrap() {
        if let Some(v) = body.get(field) {
            assert!(allowed.as_array().unwrap().contains(v), "{field}={v}");
        }
    }
    assert_eq!(body, fx["requests"]["wipe"]["body"]);
}

fn assert_required_fields(body: &Value, def: &Value) {
    assert_eq!(body["Action"], def["Action"]);
    let allowed: Vec<&str> = def["required"]
        .as_array()
        .unwrap()
        .iter()
        .chain(def["optional"].as_array().unwrap())
        .map(|v| v.as_str().unwrap())
        .collect();
    for field in def["required"].as_array().unwrap() {
        assert!(
            body.get(field.as_str().unwrap()).is_some(),
            "missing required {field}"
        );
    }
    for key in body.as_object().unwrap().keys() {
        assert!(
            key == "Action" || allowed.contains(&key.as_str()),
            "{key} is not in the spec"
        );
    }
}

#[test]
fn the_lock_fixture_itself_satisfies_the_spec_definition() {
    let fx = fixtures();
    assert_required_fields(
        &fx["requests"]["lock"]["body"],
        &fx["device_action"]["definitions"]["LockAction"],
    );
    assert!(fx["profile_action"]["body_enum"]
        .as_array()
        .unwrap()
        .contains(&fx["requests"]["profile_install"]["body"]));
}

#[tokio::test]
async fn disconnect_wifi_without_a_profile_id_is_a_config_error_and_sends_nothing() {
    let server = action_server().await;
    let a = adapter_with(&server, |c| c.wifi_disconnect_profile_id = None);
    let err = a
        .execute(MdmCommand::DisconnectWifi, &device("abc"))
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("wifi_disconnect_profile_id"));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_action_keeps_sotis_error_in_the_message() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("POST"))
        .and(path("/MobiControl/api/devices/abc/actions"))
        .and(body_string_contains("\"Action\":\"Lock\""))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "ErrorCode": 0,
            "ErrorMessage": "Action is not supported by the device",
            "Data": ["Lock"]
        })))
        .mount(&server)
        .await;
    let err = adapter(&server)
        .execute(MdmCommand::Lock, &device("abc"))
        .await
        .unwrap_err();
    match &err {
        AdapterError::Rejected { status, message } => {
            assert_eq!(*status, 422);
            assert!(
                message.contains("ErrorCode 0: Action is not supported"),
                "{message}"
            );
            assert!(
                message.contains("POST /MobiControl/api/devices/abc/actions"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_retry_after_above_one_hour_counts_as_one_hour() {
    for huge in [
        "18446744073709551615",
        "86400",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let (err, _s) =
            listing_error(ResponseTemplate::new(429).insert_header("Retry-After", huge)).await;
        assert!(matches!(err, AdapterError::RateLimited { .. }), "{err:?}");
        assert_eq!(
            err.retry_after(),
            Some(Duration::from_secs(3600)),
            "Retry-After: {huge}"
        );
    }
    let (err, _s) =
        listing_error(ResponseTemplate::new(503).insert_header("Retry-After", "99999999")).await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
}

// ---------------------------------------------------------------- redirects

#[tokio::test]
async fn a_token_request_redirected_to_another_port_sends_nothing_there_and_names_the_location() {
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "stolen", "token_type": "bearer", "expires_in": 3600
        })))
        .mount(&elsewhere)
        .await;
    let location = format!("{}/MobiControl/api/token", elsewhere.uri());
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(307).insert_header("Location", location.as_str()))
        .mount(&server)
        .await;
    let err = adapter(&server).health_check().await.unwrap_err();
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the password grant went to another origin"
    );
    assert_eq!(err.class(), "redirected", "{err:?}");
    assert!(err.to_string().contains(&location), "{err}");
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains(PASSWORD), "{err}");
}

#[tokio::test]
async fn a_command_redirected_to_another_port_is_not_sent_there() {
    let elsewhere = MockServer::start().await;
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let location = format!("{}/MobiControl/api/devices/abc/actions", elsewhere.uri());
    Mock::given(method("POST"))
        .and(path_regex_any())
        .respond_with(ResponseTemplate::new(308).insert_header("Location", location.as_str()))
        .mount(&server)
        .await;
    let err = adapter(&server)
        .execute(MdmCommand::EnterpriseWipe, &device("abc"))
        .await
        .unwrap_err();
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
    assert_eq!(err.class(), "redirected", "{err:?}");
    assert!(err.to_string().contains(&location), "{err}");
}

#[tokio::test]
async fn a_redirect_within_the_same_origin_is_still_followed() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", "/MobiControl/api/devices2?skip=0"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/MobiControl/api/devices2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_of(2, 0)))
        .mount(&server)
        .await;
    let report = adapter(&server).health_check().await.unwrap();
    assert_eq!(report.devices_on_first_page, 2);
}

// ------------------------------------------------- gateway errors to commands

#[tokio::test]
async fn a_command_answered_502_or_504_is_no_answer_and_a_read_is_unavailable() {
    for status in [502u16, 504] {
        let server = MockServer::start().await;
        mount_tokens(&server).await;
        Mock::given(method("POST"))
            .and(path_regex_any())
            .respond_with(ResponseTemplate::new(status).set_body_raw(
                "<html><head><title>Bad Gateway</title></head></html>",
                "text/html",
            ))
            .mount(&server)
            .await;
        let err = adapter(&server)
            .execute(MdmCommand::Wipe, &device("abc"))
            .await
            .unwrap_err();
        assert_eq!(err.class(), "no_answer", "{status}: {err:?}");
        assert!(err.to_string().contains(&status.to_string()), "{err}");
        assert!(err.to_string().contains("check the MDM console"), "{err}");
        assert!(err.is_retryable(), "an idempotent command may be repeated");

        let (err, _s) = listing_error(ResponseTemplate::new(status)).await;
        assert_eq!(
            err.class(),
            "unavailable",
            "{status}: a read is just unavailable"
        );
    }
}

// ------------------------------------------------- what counts as sent

/// MDM-APIS.md and SOTI's spec: an action and a profile action are answered
/// 204 with no body. Any other answer, a 2xx HTML page included, does not
/// count as sent; the MDM may have acted, so it is `NoAnswer`.
#[tokio::test]
async fn only_204_without_a_body_counts_as_a_sent_action() {
    let answers = [
        ResponseTemplate::new(200).set_body_raw(
            "<!DOCTYPE html><html><head><title>MobiControl - Log In</title></head></html>",
            "text/html",
        ),
        ResponseTemplate::new(200),
        ResponseTemplate::new(202).set_body_json(json!({"Status": "Queued"})),
    ];
    for (i, answer) in answers.into_iter().enumerate() {
        for command in [MdmCommand::EnterpriseWipe, MdmCommand::DisconnectWifi] {
            let server = MockServer::start().await;
            mount_tokens(&server).await;
            Mock::given(method("POST"))
                .and(path_regex_any())
                .respond_with(answer.clone())
                .mount(&server)
                .await;
            let err = adapter(&server)
                .execute(command, &device("abc"))
                .await
                .expect_err(&format!("answer {i} to {command} counted as sent"));
            assert_eq!(err.class(), "no_answer", "answer {i}: {err:?}");
            assert!(err.to_string().contains("204"), "names what was due: {err}");
        }
    }
}

// ------------------------------------------------- answer size

/// A page of one device whose name makes the body `size` bytes: valid JSON,
/// so only the size can make it fail.
fn huge_page(size: usize) -> Vec<u8> {
    let head = br#"[{"DeviceId":"1","Kind":"AndroidPlus","DeviceName":""#;
    let tail = br#""}]"#;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(head);
    body.resize(size - tail.len(), b'a');
    body.extend_from_slice(tail);
    body
}

#[tokio::test]
async fn an_answer_larger_than_64_mib_fails_the_call() {
    let (err, _s) = listing_error(
        ResponseTemplate::new(200).set_body_raw(huge_page(65 * 1024 * 1024), "application/json"),
    )
    .await;
    assert!(err.to_string().contains("64 MiB"), "{err}");
}

// ------------------------------------------------- listings that never end

#[tokio::test]
async fn a_server_that_ignores_skip_ends_the_listing_with_an_error_saying_so() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    // The same full page, whatever `skip` asks for.
    Mock::given(method("GET"))
        .and(path(DEVICES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_of(2, 0)))
        .mount(&server)
        .await;
    let a = adapter_with(&server, |c| c.page_size = 2);
    let listed = tokio::time::timeout(Duration::from_secs(10), list_all(&a))
        .await
        .expect("the listing ends");
    let err = listed.unwrap_err();
    assert_eq!(err.class(), "listing", "{err:?}");
    assert!(err.to_string().contains("same page"), "{err}");
    assert_eq!(requests_to(&server, DEVICES_PATH).await.len(), 2);
}

// ------------------------------------------------------------ risk signal

const RISK: &str = "MTD_Threat_Level";

fn attributes_path(id: &str) -> String {
    format!("/MobiControl/api/devices/{id}/customAttributes")
}

const DEFINITIONS_PATH: &str = "/MobiControl/api/customattributes";

/// A server that stores nothing and answers every custom attribute `PUT`
/// with `answer`.
async fn risk_server(answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("PUT"))
        .and(wiremock::matchers::path_regex(
            r"^/MobiControl/api/devices/[^/]+/customAttributes$",
        ))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

async fn puts(server: &MockServer) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "PUT")
        .collect()
}

async fn mount_definitions(server: &MockServer, names: &[&str]) {
    let definitions: Vec<Value> = names
        .iter()
        .map(|n| json!({"Name": n, "CustomAttributeDataType": "Text", "PropagateToDevice": false}))
        .collect();
    Mock::given(method("GET"))
        .and(path(DEFINITIONS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(definitions))
        .mount(server)
        .await;
}

#[tokio::test]
async fn each_level_secured_included_is_the_specs_custom_attribute_put() {
    let server = risk_server(ResponseTemplate::new(200)).await;
    let a = adapter(&server);
    let fx = fixtures();
    for level in SignalLevel::ALL {
        let receipt = a
            .signal_risk(&device("352099001761482"), level, RISK)
            .await
            .unwrap();
        let want =
            json!({"Attributes": [{"AttributeName": RISK, "AttributeValue": level.as_vendor()}]});
        assert_eq!(
            receipt.request,
            "PUT /MobiControl/api/devices/352099001761482/customAttributes"
        );
        assert_eq!(
            serde_json::from_str::<Value>(receipt.request_body.as_deref().unwrap()).unwrap(),
            want
        );
        assert_eq!(receipt.status, 200);
        assert_eq!(receipt.response_body, None);
        assert_eq!(receipt.vendor_reference, None);
        let sent = puts(&server).await.pop().unwrap();
        assert_eq!(sent.url.path(), attributes_path("352099001761482"));
        assert_eq!(serde_json::from_slice::<Value>(&sent.body).unwrap(), want);
        assert_eq!(
            sent.headers.get("content-type").unwrap(),
            "application/json"
        );
        assert!(sent
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer tok-"));
    }
    assert_eq!(puts(&server).await.len(), 5);
    // The spec's path and body, as captured in the fixture.
    let high = &puts(&server).await[3];
    assert_eq!(
        serde_json::from_slice::<Value>(&high.body).unwrap(),
        fx["requests"]["risk_high"]["body"]
    );
    assert_eq!(fx["requests"]["risk_high"]["method"], "PUT");
    assert_eq!(fx["custom_attributes"]["put"]["success_status"], 200);
    assert_eq!(
        format!(
            "/MobiControl{}",
            fx["custom_attributes"]["put"]["path"]
                .as_str()
                .unwrap()
                .replace("{deviceId}", "352099001761482")
        ),
        high.url.path()
    );
}

#[tokio::test]
async fn writing_the_same_level_twice_is_the_same_harmless_put_twice() {
    let server = risk_server(ResponseTemplate::new(200)).await;
    let a = adapter(&server);
    let d = device("abc");
    let first = a.signal_risk(&d, SignalLevel::Medium, RISK).await.unwrap();
    let second = a.signal_risk(&d, SignalLevel::Medium, RISK).await.unwrap();
    assert_eq!(first, second);
    let sent = puts(&server).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].body, sent[1].body);
}

#[tokio::test]
async fn an_undefined_attribute_is_not_permitted_and_names_the_attribute_to_create() {
    let server = risk_server(ResponseTemplate::new(400).set_body_json(json!({
        "ErrorCode": 0,
        "ErrorMessage": "Custom attribute 'MTD_Threat_Level' does not exist.",
        "Data": ["MTD_Threat_Level"],
        "HelpLink": null
    })))
    .await;
    mount_definitions(&server, &["Cost_Center"]).await;
    let err = adapter(&server)
        .signal_risk(&device("abc"), SignalLevel::High, RISK)
        .await
        .unwrap_err();
    match &err {
        AdapterError::ActionNotPermitted { setting, message } => {
            assert_eq!(
                setting,
                "create the device custom attribute `MTD_Threat_Level` (text) in MobiControl"
            );
            assert!(message.contains("does not exist"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_422_for_an_attribute_that_is_defined_stays_a_plain_refusal() {
    let server = risk_server(ResponseTemplate::new(422).set_body_json(json!({
        "ErrorCode": 7,
        "ErrorMessage": "The value is not valid.",
        "Data": [],
        "HelpLink": null
    })))
    .await;
    mount_definitions(&server, &["mtd_threat_level"]).await;
    let err = adapter(&server)
        .signal_risk(&device("abc"), SignalLevel::High, RISK)
        .await
        .unwrap_err();
    match &err {
        AdapterError::Rejected { status, message } => {
            assert_eq!(*status, 422);
            assert!(message.contains("ErrorCode 7"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_5xx_a_429_and_a_gateway_error_on_the_write_are_retryable_as_for_reads() {
    for (answer, class) in [
        (ResponseTemplate::new(500), "unavailable"),
        (ResponseTemplate::new(503), "unavailable"),
        // A PUT of a value may be repeated: a lost answer is just unavailable.
        (ResponseTemplate::new(502), "unavailable"),
        (ResponseTemplate::new(504), "unavailable"),
        (
            ResponseTemplate::new(429).insert_header("Retry-After", "7"),
            "rate_limited",
        ),
        (
            ResponseTemplate::new(200).set_body_raw(
                "<!DOCTYPE html><html><head><title>Log In</title></head></html>",
                "text/html",
            ),
            "no_answer",
        ),
        (ResponseTemplate::new(204), "no_answer"),
    ] {
        let server = risk_server(answer).await;
        let err = adapter(&server)
            .signal_risk(&device("abc"), SignalLevel::Low, RISK)
            .await
            .unwrap_err();
        assert_eq!(err.class(), class, "{err:?}");
        assert!(err.is_retryable(), "{err:?}");
        if class == "rate_limited" {
            assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        }
    }
}

#[tokio::test]
async fn a_slow_write_is_a_retryable_timeout() {
    let server = risk_server(ResponseTemplate::new(200).set_delay(Duration::from_secs(3))).await;
    let a = adapter_with(&server, |c| {
        c.http.request_timeout = Duration::from_millis(300)
    });
    let err = a
        .signal_risk(&device("abc"), SignalLevel::Low, RISK)
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Timeout(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn the_level_is_read_back_per_device_from_its_custom_attributes() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let info = |name: &str, value: Value| json!({"Name": name, "OriginName": name, "Value": value, "DataType": "Text", "IsInherited": false});
    for (id, attributes) in [
        (
            "d-high",
            json!([
                info("Cost_Center", json!("Sales")),
                info(RISK, json!("High"))
            ]),
        ),
        (
            "d-secured",
            json!([info("mtd_threat_level", json!("secured"))]),
        ),
        ("d-unset", json!([info(RISK, Value::Null)])),
        ("d-odd", json!([info(RISK, json!("banana"))])),
        ("d-none", json!([])),
    ] {
        Mock::given(method("GET"))
            .and(path(attributes_path(id)))
            .respond_with(ResponseTemplate::new(200).set_body_json(attributes))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(attributes_path("d-gone")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "ErrorCode": 0, "ErrorMessage": "Device 'd-gone' was not found.", "Data": []
        })))
        .mount(&server)
        .await;
    let a = adapter(&server);
    assert_eq!(a.risk_read_back(), Some(RiskReadBack::PerDevice));
    let devices: Vec<Device> = [
        "d-high",
        "d-secured",
        "d-unset",
        "d-odd",
        "d-none",
        "d-gone",
    ]
    .into_iter()
    .map(device)
    .collect();
    let levels = a.read_risk(&devices, RISK).await.unwrap();
    assert_eq!(
        levels,
        vec![
            Some(SignalLevel::High),
            Some(SignalLevel::Secured),
            None,
            None,
            None,
            None
        ]
    );
    let gets: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "GET")
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(gets.len(), 6, "one request per device: {gets:?}");
}

#[tokio::test]
async fn a_read_back_that_fails_is_the_error_of_its_request() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(method("GET"))
        .and(path(attributes_path("d1")))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let err = adapter(&server)
        .read_risk(&[device("d1")], RISK)
        .await
        .unwrap_err();
    assert_eq!(err.class(), "unavailable", "{err:?}");
}

#[tokio::test]
async fn the_missing_risk_signal_is_the_attribute_the_definitions_lack() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    mount_definitions(&server, &["Cost_Center", "MTD_Threat_Level"]).await;
    let a = adapter(&server);
    assert!(a.missing_risk_signal(RISK).await.unwrap().is_empty());
    assert_eq!(
        a.missing_risk_signal("MTD_Risk").await.unwrap(),
        vec!["MTD_Risk".to_string()]
    );
    let gets = requests_to(&server, DEFINITIONS_PATH).await;
    assert_eq!(gets.len(), 2);
}
