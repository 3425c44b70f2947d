//! The AirWatch adapter against a wiremock server: headers, every
//! error class, paging boundaries (with the number of requests), the
//! rate-limit slowdown, each lookup and each command as sent on the wire.

use futures::TryStreamExt as _;
use mtd_adapter::http::HttpSettings;
use mtd_adapter::{
    AdapterError, Device, DeviceIdentifier, Identifiers, MdmAdapter, MdmCommand, Ownership, Page,
    Platform, Posture, RiskReadBack, Secret, SignalLevel,
};
use mtd_adapter_airwatch::{AirwatchAdapter, AirwatchConfig, AirwatchCredentials};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use url::Url;
use wiremock::matchers::{body_string, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const USER: &str = "api-admin";
const PASSWORD: &str = "pa55word";
const API_KEY: &str = "tenant-code-1234";
/// base64("api-admin:pa55word")
const BASIC: &str = "Basic YXBpLWFkbWluOnBhNTV3b3Jk";

fn config(server: &MockServer) -> AirwatchConfig {
    let mut c = AirwatchConfig::new(
        "airwatch-test",
        Url::parse(&server.uri()).unwrap(),
        AirwatchCredentials {
            username: USER.into(),
            password: Secret::new(PASSWORD),
            api_key: Secret::new(API_KEY),
        },
    );
    c.http = HttpSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ca_cert_pem: None,
    };
    c.wifi_disconnect_profile_id = Some("4711".into());
    c
}

fn adapter(server: &MockServer) -> AirwatchAdapter {
    AirwatchAdapter::new(config(server)).unwrap()
}

fn adapter_with(server: &MockServer, page_size: u32) -> AirwatchAdapter {
    let mut c = config(server);
    c.page_size = page_size;
    AirwatchAdapter::new(c).unwrap()
}

fn device_json(id: u64) -> Value {
    json!({
        "Id": {"Value": id},
        "Uuid": format!("uuid-{id}"),
        "Udid": format!("udid{id:036}"),
        "SerialNumber": format!("SN{id:08}"),
        "MacAddress": format!("A4670600{id:04X}"),
        "Imei": format!("35209900{id:07}"),
        "DeviceFriendlyName": format!("Device {id}"),
        "LocationGroupName": "Sales",
        "UserName": format!("user{id}"),
        "UserEmailAddress": format!("user{id}@example.com"),
        "Ownership": "C",
        "Platform": "Apple",
        "Model": "iPhone 12",
        "OperatingSystem": "16.4.1",
        "LastSeen": "2018-03-15T08:08:09.460",
        "EnrollmentStatus": "Enrolled",
        "ComplianceStatus": "Compliant",
    })
}

fn devices_page(ids: std::ops::Range<u64>, page: u32, page_size: u32, total: u64) -> Value {
    json!({
        "Devices": ids.map(device_json).collect::<Vec<_>>(),
        "Page": page,
        "PageSize": page_size,
        "Total": total,
    })
}

fn device(id: &str, serial: Option<&str>) -> Device {
    Device {
        reported_risk: None,
        posture: Default::default(),
        mdm_device_id: id.into(),
        identifiers: Identifiers {
            serial: serial.map(str::to_string),
            ..Default::default()
        },
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

async fn all_pages(a: &AirwatchAdapter) -> Result<Vec<Page<Device>>, AdapterError> {
    a.devices().try_collect().await
}

async fn list_error(server: &MockServer) -> AdapterError {
    all_pages(&adapter(server)).await.unwrap_err()
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

async fn mount_search_error(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .respond_with(response)
        .mount(server)
        .await;
}

// ---------------------------------------------------------------- headers

#[tokio::test]
async fn every_request_carries_basic_auth_the_tenant_code_and_accept_json() {
    let server = MockServer::start().await;
    Mock::given(header("authorization", BASIC))
        .and(header("aw-tenant-code", API_KEY))
        .and(header("accept", "application/json"))
        .and(path("/API/mdm/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_page(1..2, 0, 500, 1)))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(header("authorization", BASIC))
        .and(header("aw-tenant-code", API_KEY))
        .and(header("accept", "application/json"))
        .and(path("/API/mdm/devices/1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(device_json(1)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(header("authorization", BASIC))
        .and(header("aw-tenant-code", API_KEY))
        .and(header("accept", "application/json"))
        .and(path("/API/mdm/devices/1/commands"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(header("authorization", BASIC))
        .and(header("aw-tenant-code", API_KEY))
        .and(header("accept", "application/json"))
        .and(path("/API/mdm/profiles/4711/install"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let a = adapter(&server);
    a.health_check().await.unwrap();
    all_pages(&a).await.unwrap();
    a.lookup_device(&DeviceIdentifier::MdmDeviceId("1".into()))
        .await
        .unwrap()
        .unwrap();
    a.execute(MdmCommand::Lock, &device("1", None))
        .await
        .unwrap();
    a.execute(MdmCommand::DisconnectWifi, &device("1", Some("SN1")))
        .await
        .unwrap();
    // Every request matched a mock that demands all three headers.
    assert_eq!(requests(&server).await.len(), 5);
}

#[tokio::test]
async fn the_debug_output_of_the_adapter_shows_no_secret() {
    let server = MockServer::start().await;
    let text = format!("{:?}", adapter(&server));
    assert!(
        !text.contains(PASSWORD) && !text.contains(API_KEY),
        "{text}"
    );
    assert!(!text.contains(&BASIC[6..]), "{text}");
}

// ---------------------------------------------------------------- error classes

#[tokio::test]
async fn a_401_is_unauthorized_and_keeps_the_vendor_message() {
    let server = MockServer::start().await;
    mount_search_error(
        &server,
        ResponseTemplate::new(401)
            .set_body_json(json!({"errorCode": 1005, "message": "Invalid credentials"})),
    )
    .await;
    let e = list_error(&server).await;
    assert!(matches!(e, AdapterError::Unauthorized(_)), "{e:?}");
    assert!(e.is_auth());
    assert!(
        e.to_string()
            .contains("errorCode 1005: Invalid credentials"),
        "{e}"
    );
}

#[tokio::test]
async fn a_403_is_forbidden() {
    let server = MockServer::start().await;
    mount_search_error(
        &server,
        ResponseTemplate::new(403)
            .set_body_json(json!({"errorCode": 1013, "message": "Access denied"})),
    )
    .await;
    let e = list_error(&server).await;
    assert!(matches!(e, AdapterError::Forbidden(_)), "{e:?}");
}

#[tokio::test]
async fn a_404_on_a_listing_is_not_found() {
    let server = MockServer::start().await;
    mount_search_error(&server, ResponseTemplate::new(404)).await;
    let e = list_error(&server).await;
    assert!(matches!(e, AdapterError::NotFound(_)), "{e:?}");
}

#[tokio::test]
async fn a_5xx_is_unavailable_with_its_status_and_is_retryable() {
    let server = MockServer::start().await;
    mount_search_error(&server, ResponseTemplate::new(503)).await;
    let e = list_error(&server).await;
    assert!(
        matches!(
            e,
            AdapterError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn a_429_is_rate_limited_with_the_retry_after_of_the_answer() {
    let server = MockServer::start().await;
    mount_search_error(
        &server,
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "7")
            .set_body_json(json!({"errorCode": 429, "message": "Quota exceeded"})),
    )
    .await;
    let e = list_error(&server).await;
    assert!(matches!(e, AdapterError::RateLimited { .. }), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert!(e.is_retryable());
}

#[tokio::test]
async fn a_400_with_error_json_is_rejected_with_code_and_message() {
    let server = MockServer::start().await;
    mount_search_error(
        &server,
        ResponseTemplate::new(400).set_body_json(
            json!({"errorCode": 1001, "message": "Invalid page size", "activityId": "x"}),
        ),
    )
    .await;
    let e = list_error(&server).await;
    match &e {
        AdapterError::Rejected { status, message } => {
            assert_eq!(*status, 400);
            assert_eq!(message, "errorCode 1001: Invalid page size");
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn an_html_error_page_is_reduced_to_its_title() {
    let server = MockServer::start().await;
    let page = "<!DOCTYPE html>\n<html><head><title>502 - Web server received an invalid \
                response</title></head><body><h1>Server Error</h1>…lots of markup…</body></html>";
    mount_search_error(
        &server,
        ResponseTemplate::new(502).set_body_raw(page, "text/html"),
    )
    .await;
    let e = list_error(&server).await;
    assert!(
        matches!(
            e,
            AdapterError::Unavailable {
                status: Some(502),
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("HTML page: 502 - Web server received an invalid response"),
        "{text}"
    );
    assert!(!text.contains("markup"), "{text}");
}

#[tokio::test]
async fn malformed_json_on_a_200_is_a_decode_error() {
    let server = MockServer::start().await;
    mount_search_error(
        &server,
        ResponseTemplate::new(200).set_body_raw("{\"Devices\": [", "application/json"),
    )
    .await;
    let e = list_error(&server).await;
    assert!(matches!(e, AdapterError::Decode(_)), "{e:?}");
}

#[tokio::test]
async fn an_html_page_on_a_200_is_a_decode_error() {
    let server = MockServer::start().await;
    mount_search_error(
        &server,
        ResponseTemplate::new(200).set_body_raw("<html><title>Sign in</title></html>", "text/html"),
    )
    .await;
    let e = list_error(&server).await;
    assert!(matches!(e, AdapterError::Decode(_)), "{e:?}");
    assert!(e.to_string().contains("Sign in"), "{e}");
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout() {
    let server = MockServer::start().await;
    mount_search_error(
        &server,
        ResponseTemplate::new(200)
            .set_body_json(devices_page(1..2, 0, 500, 1))
            .set_delay(Duration::from_secs(3)),
    )
    .await;
    let mut c = config(&server);
    c.http.request_timeout = Duration::from_millis(200);
    let a = AirwatchAdapter::new(c).unwrap();
    let e = a.health_check().await.unwrap_err();
    assert!(matches!(e, AdapterError::Timeout(_)), "{e:?}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn a_refused_connection_is_cannot_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = AirwatchConfig::new(
        "airwatch-test",
        Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        AirwatchCredentials {
            username: USER.into(),
            password: Secret::new(PASSWORD),
            api_key: Secret::new(API_KEY),
        },
    );
    c.http.connect_timeout = Duration::from_secs(2);
    let a = AirwatchAdapter::new(c).unwrap();
    let e = a.health_check().await.unwrap_err();
    assert!(matches!(e, AdapterError::Connect(_)), "{e:?}");
}

// ---------------------------------------------------------------- paging

#[tokio::test]
async fn a_204_with_no_body_is_an_empty_listing_after_one_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .and(query_param("page", "0"))
        .and(query_param("pagesize", "500"))
        .respond_with(ResponseTemplate::new(204))
        .expect(2)
        .mount(&server)
        .await;
    let a = adapter(&server);
    let pages = all_pages(&a).await.unwrap();
    assert!(pages.iter().all(|p| p.items.is_empty()));
    assert_eq!(a.health_check().await.unwrap().devices_on_first_page, 0);
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn exactly_one_page_takes_one_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .and(query_param("page", "0"))
        .and(query_param("pagesize", "500"))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_page(1..4, 0, 500, 3)))
        .expect(1)
        .mount(&server)
        .await;
    let pages = all_pages(&adapter(&server)).await.unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].items.len(), 3);
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn a_total_that_is_a_multiple_of_the_page_size_makes_no_request_past_the_end() {
    let server = MockServer::start().await;
    for page in 0..3u32 {
        let first = u64::from(page) * 2 + 1;
        Mock::given(method("GET"))
            .and(path("/API/mdm/devices/search"))
            .and(query_param("page", page.to_string()))
            .and(query_param("pagesize", "2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(devices_page(
                first..first + 2,
                page,
                2,
                6,
            )))
            .expect(1)
            .mount(&server)
            .await;
    }
    // A fourth page would be past Total: it must never be asked for.
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .and(query_param("page", "3"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let pages = all_pages(&adapter_with(&server, 2)).await.unwrap();
    let ids: Vec<String> = pages
        .iter()
        .flat_map(|p| p.items.iter().map(|d| d.mdm_device_id.clone()))
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(requests(&server).await.len(), 3);
}

#[tokio::test]
async fn a_short_page_ends_the_listing_even_if_total_says_more() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .and(query_param("page", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_page(1..3, 0, 2, 10)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_page(3..4, 1, 2, 10)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let pages = all_pages(&adapter_with(&server, 2)).await.unwrap();
    assert_eq!(pages.iter().map(|p| p.items.len()).sum::<usize>(), 3);
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn a_204_after_full_pages_ends_the_listing() {
    let server = MockServer::start().await;
    // No Total in the envelope: only the 204 can end it.
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .and(query_param("page", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Devices": [device_json(1), device_json(2)], "Page": 0, "PageSize": 2
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let pages = all_pages(&adapter_with(&server, 2)).await.unwrap();
    assert_eq!(pages.iter().map(|p| p.items.len()).sum::<usize>(), 2);
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn an_error_on_a_later_page_ends_the_stream_with_that_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .and(query_param("page", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_page(1..3, 0, 2, 4)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let a = adapter_with(&server, 2);
    let results: Vec<_> = futures::StreamExt::collect::<Vec<_>>(a.devices()).await;
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap().items.len(), 2);
    assert!(matches!(
        results[1],
        Err(AdapterError::Unavailable {
            status: Some(500),
            ..
        })
    ));
}

#[tokio::test]
async fn unmappable_records_are_skipped_and_counted_with_a_reason() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Devices": [device_json(1), {"Udid": "no-id"}, device_json(3)],
            "Page": 0, "PageSize": 500, "Total": 3
        })))
        .mount(&server)
        .await;
    let pages = all_pages(&adapter(&server)).await.unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].items.len(), 2);
    assert_eq!(pages[0].skipped, 1);
    assert!(pages[0].skip_reason.as_deref().unwrap().contains("Id"));
}

// ---------------------------------------------------------------- mapping

#[tokio::test]
async fn a_listed_device_maps_every_field_and_last_seen_without_zone_is_utc() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_page(42..43, 0, 500, 1)))
        .mount(&server)
        .await;
    let pages = all_pages(&adapter(&server)).await.unwrap();
    let d = &pages[0].items[0];
    assert_eq!(d.mdm_device_id, "42");
    assert_eq!(
        d.identifiers.udid.as_deref(),
        Some("UDID000000000000000000000000000000000042")
    );
    assert_eq!(d.identifiers.serial.as_deref(), Some("SN00000042"));
    assert_eq!(d.identifiers.mac.as_deref(), Some("a4670600002a"));
    assert_eq!(d.identifiers.imei.as_deref(), Some("352099000000042"));
    assert_eq!(d.name.as_deref(), Some("Device 42"));
    assert_eq!(d.platform, Platform::Ios);
    assert_eq!(d.model.as_deref(), Some("iPhone 12"));
    assert_eq!(d.os_version.as_deref(), Some("16.4.1"));
    assert_eq!(d.groups, ["Sales"]);
    let user = d.user.as_ref().unwrap();
    assert_eq!(user.mdm_user_id, "user42");
    assert_eq!(user.email.as_deref(), Some("user42@example.com"));
    assert_eq!(
        d.last_checkin_at.unwrap().to_rfc3339(),
        "2018-03-15T08:08:09.460+00:00"
    );
}

#[tokio::test]
async fn ownership_c_e_s_and_anything_else_map_to_corporate_personal_shared_unknown() {
    let server = MockServer::start().await;
    let with = |id: u64, ownership: Value| {
        let mut d = device_json(id);
        d["Ownership"] = ownership;
        d
    };
    let mut missing = device_json(6);
    missing.as_object_mut().unwrap().remove("Ownership");
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Devices": [with(1, json!("C")), with(2, json!("E")), with(3, json!("S")),
                        with(4, json!("Undefined")), with(5, json!(null)), missing],
            "Page": 0, "PageSize": 500, "Total": 6
        })))
        .mount(&server)
        .await;
    let pages = all_pages(&adapter(&server)).await.unwrap();
    let got: Vec<Ownership> = pages[0].items.iter().map(|d| d.ownership).collect();
    assert_eq!(
        got,
        [
            Ownership::Corporate,
            Ownership::Personal,
            Ownership::Shared,
            Ownership::Unknown,
            Ownership::Unknown,
            Ownership::Unknown,
        ]
    );
}

#[tokio::test]
async fn android_and_a_device_without_user_map_too() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Devices": [{"Id": {"Value": 7}, "Platform": "Android", "UserName": "",
                         "UserEmailAddress": "", "MacAddress": "", "LastSeen": "2024-01-02T03:04:05+01:00"}],
            "Total": 1
        })))
        .mount(&server)
        .await;
    let pages = all_pages(&adapter(&server)).await.unwrap();
    let d = &pages[0].items[0];
    assert_eq!(d.platform, Platform::Android);
    assert_eq!(d.user, None);
    assert_eq!(d.identifiers.mac, None);
    assert_eq!(
        d.last_checkin_at.unwrap().to_rfc3339(),
        "2024-01-02T02:04:05+00:00"
    );
}

/// The posture fields of the device search on three records: compliant,
/// non-compliant and compromised (its flag as text, as event payloads write
/// it), and one that gives no verdict.
fn posture_records() -> Vec<Value> {
    let with = |id: u64, pairs: &[(&str, Value)]| {
        let mut d = device_json(id);
        for (k, v) in pairs {
            d[*k] = v.clone();
        }
        d
    };
    vec![
        with(
            1,
            &[
                ("EnrollmentStatus", json!("Enrolled")),
                ("ComplianceStatus", json!("Compliant")),
                ("CompromisedStatus", json!(false)),
                ("OEMInfo", json!("Apple")),
                ("PhoneNumber", json!("+14045550100")),
                ("DataEncryptionYN", json!("Y")),
            ],
        ),
        with(
            2,
            &[
                ("Platform", json!("Android")),
                ("Model", json!("SM-G991B")),
                ("OperatingSystem", json!("14.0.0")),
                ("LastSeen", json!("2026-11-20T08:08:09")),
                ("EnrollmentStatus", json!("Unenrolled")),
                ("ComplianceStatus", json!("NonCompliant")),
                ("CompromisedStatus", json!("true")),
                ("OEMInfo", json!("samsung")),
                ("PhoneNumber", json!("")),
            ],
        ),
        with(
            3,
            &[
                ("EnrollmentStatus", json!("")),
                ("ComplianceStatus", json!("NotAvailable")),
                ("CompromisedStatus", json!(null)),
                ("OEMInfo", json!("")),
            ],
        ),
    ]
}

#[tokio::test]
async fn the_listing_maps_posture_and_says_nothing_of_encryption_or_passcode() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Devices": posture_records(), "Page": 0, "PageSize": 500, "Total": 3
        })))
        .mount(&server)
        .await;
    let pages = all_pages(&adapter(&server)).await.unwrap();
    let [good, bad, unsaid] = &pages[0].items[..] else {
        panic!("{:?}", pages[0].items);
    };
    assert_eq!(
        good.posture,
        Posture {
            compliant: Some(true),
            enrolled: Some(true),
            encrypted: None,
            passcode: None,
            compromised: Some(false),
            manufacturer: Some("Apple".into()),
            phone_number: Some("+14045550100".into()),
        }
    );
    assert_eq!(
        bad.posture,
        Posture {
            compliant: Some(false),
            enrolled: Some(false),
            encrypted: None,
            passcode: None,
            compromised: Some(true),
            manufacturer: Some("samsung".into()),
            phone_number: None,
        }
    );
    assert_eq!(bad.model.as_deref(), Some("SM-G991B"));
    assert_eq!(bad.os_version.as_deref(), Some("14.0.0"));
    assert_eq!(
        bad.last_checkin_at.unwrap().to_rfc3339(),
        "2026-11-20T08:08:09+00:00"
    );
    assert_eq!(unsaid.posture, Posture::default());
}

#[tokio::test]
async fn a_lookup_maps_posture_as_the_listing_does() {
    let server = MockServer::start().await;
    let records = posture_records();
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records[1].clone()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices"))
        .and(query_param("searchby", "Serialnumber"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records[0].clone()))
        .expect(1)
        .mount(&server)
        .await;
    let a = adapter(&server);
    let bad = a
        .lookup_device(&DeviceIdentifier::MdmDeviceId("2".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bad.posture.compromised, Some(true));
    assert_eq!(bad.posture.compliant, Some(false));
    assert_eq!(bad.posture.enrolled, Some(false));
    assert_eq!(bad.posture.manufacturer.as_deref(), Some("samsung"));
    let good = a
        .lookup_device(&DeviceIdentifier::serial("SN00000001").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(good.posture.compliant, Some(true));
    assert_eq!(good.posture.compromised, Some(false));
    assert_eq!(good.posture.encrypted, None, "DataEncryptionYN is not read");
    assert_eq!(good.posture.phone_number.as_deref(), Some("+14045550100"));
}

#[tokio::test]
async fn users_are_listed_page_by_page_and_keyed_by_user_name() {
    let server = MockServer::start().await;
    let user = |n: u64| {
        json!({"Id": {"Value": 1000 + n}, "UserName": format!("user{n}"), "FirstName": "Ann",
               "LastName": format!("L{n}"), "Email": format!("user{n}@example.com"),
               "Status": true, "Group": "Sales"})
    };
    Mock::given(method("GET"))
        .and(path("/API/system/users/search"))
        .and(query_param("page", "0"))
        .and(query_param("pagesize", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Users": [user(1), user(2)], "Page": 0, "PageSize": 2, "Total": 3
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/system/users/search"))
        .and(query_param("page", "1"))
        .and(query_param("pagesize", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Users": [user(3)], "Page": 1, "PageSize": 2, "Total": 3
        })))
        .expect(1)
        .mount(&server)
        .await;
    let a = adapter_with(&server, 2);
    let pages: Vec<_> = a.users().try_collect().await.unwrap();
    let users: Vec<_> = pages.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(users.len(), 3);
    assert_eq!(users[2].mdm_user_id, "user3");
    assert_eq!(users[2].username.as_deref(), Some("user3"));
    assert_eq!(users[2].email.as_deref(), Some("user3@example.com"));
    assert_eq!(users[2].first_name.as_deref(), Some("Ann"));
    assert_eq!(users[2].last_name.as_deref(), Some("L3"));
}

#[tokio::test]
async fn an_empty_user_listing_is_a_204() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/system/users/search"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let pages: Vec<_> = adapter(&server).users().try_collect().await.unwrap();
    assert!(pages.iter().all(|p| p.items.is_empty()));
}

#[tokio::test]
async fn groups_are_keyed_by_name_in_either_envelope_and_id_shape() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/system/groups/search"))
        .and(query_param("page", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "OrganizationGroups": [{"Id": 570, "Name": "Global", "GroupId": "global"},
                                   {"Id": {"Value": 571}, "Name": "Sales"}],
            "TotalResults": 2
        })))
        .expect(1)
        .mount(&server)
        .await;
    let a = adapter(&server);
    let groups: Vec<_> = a
        .groups()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|p| p.items)
        .collect();
    let names: Vec<_> = groups.iter().map(|g| g.mdm_group_id.as_str()).collect();
    assert_eq!(names, ["Global", "Sales"]);
    assert_eq!(groups[1].name, "Sales");

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/system/groups/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "LocationGroups": [{"Id": {"Value": 1}, "Name": "A"}, {"Id": {"Value": 2}, "Name": "B"},
                               {"Id": {"Value": 3}, "Name": "C"}],
            "Page": 0, "PageSize": 500, "Total": 3
        })))
        .expect(1)
        .mount(&server)
        .await;
    // Page size 2 but three groups in one answer: the server ignored paging,
    // so there is no second request.
    let a = adapter_with(&server, 2);
    let pages: Vec<_> = a.groups().try_collect().await.unwrap();
    assert_eq!(pages.iter().map(|p| p.items.len()).sum::<usize>(), 3);
}

// ---------------------------------------------------------------- rate limit

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_spent_quota_delays_the_next_request_until_the_reset() {
    let server = MockServer::start().await;
    let reset = epoch_secs() + 2;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(device_json(1))
                .insert_header("x-ratelimit-limit", "100")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str()),
        )
        .mount(&server)
        .await;
    let a = adapter(&server);
    let id = DeviceIdentifier::MdmDeviceId("1".into());
    a.lookup_device(&id).await.unwrap();
    let after_first = SystemTime::now();
    let started = Instant::now();
    a.lookup_device(&id).await.unwrap();
    let waited = started.elapsed();
    // The second request went out no earlier than the reset (less the
    // sub-second part lost to epoch-second precision and to the clocks).
    let until_reset = UNIX_EPOCH + Duration::from_secs(reset);
    let expected = until_reset.duration_since(after_first).unwrap_or_default();
    assert!(
        waited + Duration::from_millis(50) >= expected,
        "waited {waited:?}, reset was {expected:?} away"
    );
    assert!(waited >= Duration::from_millis(900), "waited {waited:?}");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn a_healthy_quota_does_not_slow_requests_down() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(device_json(1))
                .insert_header("x-ratelimit-limit", "100")
                .insert_header("x-ratelimit-remaining", "60")
                .insert_header(
                    "x-ratelimit-reset",
                    (epoch_secs() + 30).to_string().as_str(),
                ),
        )
        .mount(&server)
        .await;
    let a = adapter(&server);
    let id = DeviceIdentifier::MdmDeviceId("1".into());
    let started = Instant::now();
    for _ in 0..5 {
        a.lookup_device(&id).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_429_holds_back_the_next_request_for_its_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/1"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(device_json(1)))
        .mount(&server)
        .await;
    let a = adapter(&server);
    let id = DeviceIdentifier::MdmDeviceId("1".into());
    let e = a.lookup_device(&id).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    let started = Instant::now();
    a.lookup_device(&id).await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- lookups

async fn assert_lookup(id: DeviceIdentifier, searchby: &str, value: &str) {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices"))
        .and(query_param("searchby", searchby))
        .and(query_param("id", value))
        .respond_with(ResponseTemplate::new(200).set_body_json(device_json(9)))
        .expect(1)
        .mount(&server)
        .await;
    let d = adapter(&server).lookup_device(&id).await.unwrap().unwrap();
    assert_eq!(d.mdm_device_id, "9");
    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method.as_str(), "GET");
    // Exactly these two parameters, nothing else.
    assert_eq!(reqs[0].url.query_pairs().count(), 2, "{}", reqs[0].url);
}

#[tokio::test]
async fn lookup_by_udid_searches_by_udid() {
    let id = DeviceIdentifier::udid("00008030-001a2b3c").unwrap();
    assert_lookup(id, "Udid", "00008030-001A2B3C").await;
}

#[tokio::test]
async fn lookup_by_serial_searches_by_serialnumber() {
    let id = DeviceIdentifier::serial("f17xk0abcd").unwrap();
    assert_lookup(id, "Serialnumber", "F17XK0ABCD").await;
}

#[tokio::test]
async fn lookup_by_mac_searches_by_macaddress_in_upper_case_without_separators() {
    let id = DeviceIdentifier::mac("a4:67:06:0c:15:3d").unwrap();
    assert_lookup(id, "Macaddress", "A467060C153D").await;
}

#[tokio::test]
async fn lookup_by_imei_searches_by_imeinumber() {
    let id = DeviceIdentifier::imei("35 209900 176148 1").unwrap();
    assert_lookup(id, "ImeiNumber", "352099001761481").await;
}

#[tokio::test]
async fn lookup_by_mdm_id_gets_the_device_path() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/42"))
        .and(query_param_is_missing("searchby"))
        .respond_with(ResponseTemplate::new(200).set_body_json(device_json(42)))
        .expect(1)
        .mount(&server)
        .await;
    let d = adapter(&server)
        .lookup_device(&DeviceIdentifier::MdmDeviceId("42".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.identifiers.serial.as_deref(), Some("SN00000042"));
}

#[tokio::test]
async fn a_lookup_answered_404_or_204_finds_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices"))
        .and(query_param("searchby", "Serialnumber"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"errorCode": 404, "message": "Device not found"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices"))
        .and(query_param("searchby", "Udid"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let a = adapter(&server);
    assert_eq!(
        a.lookup_device(&DeviceIdentifier::serial("X1").unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        a.lookup_device(&DeviceIdentifier::udid("ABC").unwrap())
            .await
            .unwrap(),
        None
    );
    // AirWatch ids are integers: a non-numeric id cannot exist and costs no request.
    assert_eq!(
        a.lookup_device(&DeviceIdentifier::MdmDeviceId("abc".into()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn a_lookup_that_fails_otherwise_is_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let e = adapter(&server)
        .lookup_device(&DeviceIdentifier::serial("X1").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, AdapterError::Unauthorized(_)), "{e:?}");
}

// ---------------------------------------------------------------- commands

async fn assert_command(command: MdmCommand, vendor_name: &str) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/API/mdm/devices/42/commands"))
        .and(query_param("command", vendor_name))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = adapter(&server)
        .execute(command, &device("42", Some("SN42")))
        .await
        .unwrap();
    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].body.is_empty(), "body {:?}", reqs[0].body);
    assert_eq!(
        reqs[0]
            .headers
            .get("content-length")
            .map(|v| v.to_str().unwrap()),
        Some("0")
    );
    assert_eq!(reqs[0].url.query_pairs().count(), 1, "{}", reqs[0].url);
    assert_eq!(
        receipt.request,
        format!("POST /API/mdm/devices/42/commands?command={vendor_name}")
    );
    assert_eq!(receipt.request_body, None);
    assert_eq!(receipt.status, 202);
    assert_eq!(receipt.response_body, None);
}

#[tokio::test]
async fn lock_posts_the_lock_command_with_an_empty_body() {
    assert_command(MdmCommand::Lock, "Lock").await;
}

#[tokio::test]
async fn enterprise_wipe_posts_the_enterprisewipe_command() {
    assert_command(MdmCommand::EnterpriseWipe, "EnterpriseWipe").await;
}

#[tokio::test]
async fn wipe_posts_the_devicewipe_command() {
    assert_command(MdmCommand::Wipe, "DeviceWipe").await;
}

#[tokio::test]
async fn disconnect_wifi_installs_the_profile_for_the_device_serial() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/API/mdm/profiles/4711/install"))
        .and(header("content-type", "application/json"))
        .and(body_string(r#"{"SerialNumber":"SN42"}"#))
        .respond_with(ResponseTemplate::new(202).set_body_string("Profile queued"))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = adapter(&server)
        .execute(MdmCommand::DisconnectWifi, &device("42", Some("SN42")))
        .await
        .unwrap();
    assert_eq!(receipt.request, "POST /API/mdm/profiles/4711/install");
    assert_eq!(
        receipt.request_body.as_deref(),
        Some(r#"{"SerialNumber":"SN42"}"#)
    );
    assert_eq!(receipt.status, 202);
    assert_eq!(receipt.response_body.as_deref(), Some("Profile queued"));
}

#[tokio::test]
async fn remove_wifi_profile_removes_the_profile_for_the_device_serial() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/API/mdm/profiles/4711/remove"))
        .and(body_string(r#"{"SerialNumber":"SN42"}"#))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = adapter(&server)
        .execute(MdmCommand::RemoveWifiProfile, &device("42", Some("SN42")))
        .await
        .unwrap();
    assert_eq!(receipt.request, "POST /API/mdm/profiles/4711/remove");
    assert_eq!(receipt.status, 200);
}

#[tokio::test]
async fn profile_commands_without_a_profile_id_or_a_serial_are_config_errors_and_send_nothing() {
    let server = MockServer::start().await;
    let mut c = config(&server);
    c.wifi_disconnect_profile_id = None;
    let a = AirwatchAdapter::new(c).unwrap();
    let e = a
        .execute(MdmCommand::DisconnectWifi, &device("42", Some("SN42")))
        .await
        .unwrap_err();
    assert!(matches!(e, AdapterError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("wifi_disconnect_profile_id"), "{e}");

    let e = adapter(&server)
        .execute(MdmCommand::RemoveWifiProfile, &device("42", None))
        .await
        .unwrap_err();
    assert!(matches!(e, AdapterError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("serial"), "{e}");
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn a_refused_command_keeps_the_vendor_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/API/mdm/devices/42/commands"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"errorCode": 400, "message": "Command not supported for this platform"}),
        ))
        .mount(&server)
        .await;
    let e = adapter(&server)
        .execute(MdmCommand::EnterpriseWipe, &device("42", None))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("errorCode 400: Command not supported for this platform"),
        "{e}"
    );
}

#[tokio::test]
async fn a_command_answered_by_a_login_page_does_not_count_as_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<!DOCTYPE html><html><title>Login</title></html>",
            "text/html",
        ))
        .mount(&server)
        .await;
    let e = adapter(&server)
        .execute(MdmCommand::Lock, &device("42", None))
        .await
        .unwrap_err();
    // Not sent as far as anyone can tell, but a proxy may have passed it on.
    assert_eq!(e.class(), "no_answer", "{e:?}");
    assert!(e.to_string().contains("HTML page: Login"), "{e}");
}

/// MDM-APIS.md: a device command is answered 2xx with an empty body; any
/// other answer does not count as sent, and a profile call answered by an
/// HTML page neither.
#[tokio::test]
async fn only_a_2xx_with_an_empty_body_counts_as_a_sent_command() {
    for (i, answer) in [
        ResponseTemplate::new(200).set_body_json(json!({"Redirect": "/Login"})),
        ResponseTemplate::new(202).set_body_string("Please sign in"),
    ]
    .into_iter()
    .enumerate()
    {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let e = adapter(&server)
            .execute(MdmCommand::EnterpriseWipe, &device("42", None))
            .await
            .expect_err(&format!("answer {i} counted as sent"));
        assert_eq!(e.class(), "no_answer", "answer {i}: {e:?}");
    }
    for status in [200u16, 202, 204] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let receipt = adapter(&server)
            .execute(MdmCommand::Wipe, &device("42", None))
            .await
            .unwrap();
        assert_eq!(receipt.status, status);
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("<html><title>Login</title></html>", "text/html"),
        )
        .mount(&server)
        .await;
    let e = adapter(&server)
        .execute(MdmCommand::DisconnectWifi, &device("42", Some("SN42")))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "no_answer", "{e:?}");
}

#[tokio::test]
async fn the_adapter_offers_all_five_commands_groups_and_a_user_listing() {
    let server = MockServer::start().await;
    let caps = adapter(&server).capabilities();
    for c in [
        MdmCommand::Lock,
        MdmCommand::DisconnectWifi,
        MdmCommand::RemoveWifiProfile,
        MdmCommand::EnterpriseWipe,
        MdmCommand::Wipe,
    ] {
        assert!(caps.supports(c), "{c}");
    }
    assert!(!caps.removes_wifi_profile_itself);
    assert!(caps.groups && caps.user_listing);
    assert_eq!(adapter(&server).kind(), mtd_adapter::MdmKind::Airwatch);
}

#[tokio::test]
async fn a_base_url_with_a_path_keeps_it_in_front_of_api() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/tenant/API/mdm/devices/search"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.base_url = Url::parse(&format!("{}/tenant/", server.uri())).unwrap();
    AirwatchAdapter::new(c)
        .unwrap()
        .health_check()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_429_with_a_huge_retry_after_counts_as_one_hour_and_does_not_panic() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/1"))
        .respond_with(
            ResponseTemplate::new(429).insert_header("Retry-After", "18446744073709551615"),
        )
        .mount(&server)
        .await;
    let a = adapter(&server);
    let id = DeviceIdentifier::MdmDeviceId("1".into());
    let e = a.lookup_device(&id).await.unwrap_err();
    assert!(matches!(e, AdapterError::RateLimited { .. }), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
    assert!(e.to_string().contains("retry after 3600s"), "{e}");
}

#[tokio::test]
async fn a_listing_redirected_to_another_port_sends_no_credential_there_and_names_the_location() {
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_page(1..3, 0, 500, 2)))
        .mount(&elsewhere)
        .await;
    let location = format!(
        "{}/API/mdm/devices/search?page=0&pagesize=500",
        elsewhere.uri()
    );
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(302).insert_header("Location", location.as_str()))
        .mount(&server)
        .await;
    let e = list_error(&server).await;
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the API key went to another origin"
    );
    assert_eq!(e.class(), "redirected", "{e:?}");
    assert!(e.to_string().contains(&location), "{e}");
    assert!(!e.to_string().contains(API_KEY) && !e.to_string().contains(PASSWORD));

    // Another scheme on the same host and port is another origin too.
    let https = server.uri().replace("http://", "https://") + "/API/mdm/devices/search";
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(301).insert_header("Location", https.as_str()))
        .mount(&server)
        .await;
    let e = list_error(&server).await;
    assert_eq!(e.class(), "redirected", "{e:?}");
}

#[tokio::test]
async fn a_command_answered_502_or_504_is_no_answer() {
    for status in [502u16, 504] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let e = adapter(&server)
            .execute(MdmCommand::EnterpriseWipe, &device("42", None))
            .await
            .unwrap_err();
        assert_eq!(e.class(), "no_answer", "{status}: {e:?}");
        let e = adapter(&server)
            .execute(MdmCommand::Lock, &device("42", None))
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
    }
}

#[tokio::test]
async fn an_answer_larger_than_64_mib_fails_the_call() {
    let server = MockServer::start().await;
    let head = br#"{"Id":{"Value":1},"Udid":"u","DeviceFriendlyName":""#;
    let mut body = Vec::with_capacity(65 * 1024 * 1024);
    body.extend_from_slice(head);
    body.resize(65 * 1024 * 1024 - 2, b'a');
    body.extend_from_slice(br#""}"#);
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/1"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let e = adapter(&server)
        .lookup_device(&DeviceIdentifier::MdmDeviceId("1".into()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("64 MiB"), "{e}");
}

#[tokio::test]
async fn a_server_that_ignores_the_page_number_ends_the_listing_with_an_error_saying_so() {
    // Without a Total, the same full page forever.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Devices": [device_json(1), device_json(2)], "Page": 0, "PageSize": 2
        })))
        .mount(&server)
        .await;
    let listed = tokio::time::timeout(
        Duration::from_secs(10),
        all_pages(&adapter_with(&server, 2)),
    )
    .await
    .expect("the listing ends");
    let e = listed.unwrap_err();
    assert_eq!(e.class(), "listing", "{e:?}");
    assert!(e.to_string().contains("same page"), "{e}");

    // With a Total, the same page up to it is no better.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_page(1..3, 0, 2, 6)))
        .mount(&server)
        .await;
    let e = all_pages(&adapter_with(&server, 2)).await.unwrap_err();
    assert_eq!(e.class(), "listing", "{e:?}");
}

#[tokio::test]
async fn a_page_with_more_records_than_the_announced_total_fails_the_listing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/devices/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(devices_page(1..4, 0, 500, 2)))
        .mount(&server)
        .await;
    let e = all_pages(&adapter(&server)).await.unwrap_err();
    assert_eq!(e.class(), "listing", "{e:?}");
    assert!(e.to_string().contains("announced 2"), "{e}");
}

// ------------------------------------------------------------ risk signal

const RISK: &str = "MTD_Threat_Level";

/// The level tags and the ids the test server gives them.
const TAGS: [(SignalLevel, &str, u64); 4] = [
    (SignalLevel::Low, "MTD_Threat_Level_Low", 11),
    (SignalLevel::Medium, "MTD_Threat_Level_Medium", 12),
    (SignalLevel::High, "MTD_Threat_Level_High", 13),
    (SignalLevel::Critical, "MTD_Threat_Level_Critical", 14),
];

fn bulk_ok() -> Value {
    json!({"TotalItems": 1, "AcceptedItems": 1, "FailedItems": 0, "Faults": {"Fault": []}})
}

/// Mounts `tags/search` for each level tag but those in `missing` (204),
/// each expected `searches` times (`None`: any number). The search also
/// answers a tag whose name only starts with the level tag's, as a contains
/// search does.
async fn mount_tag_search(server: &MockServer, missing: &[&str], searches: Option<u64>) {
    for (_, name, id) in TAGS {
        let answer = if missing.contains(&name) {
            ResponseTemplate::new(204)
        } else {
            ResponseTemplate::new(200).set_body_json(json!({"Tags": [
                {"Id": {"Value": 90 + id}, "TagName": format!("{name}_Old")},
                {"Id": {"Value": id}, "TagName": name, "TagType": 1},
            ], "Page": 0, "PageSize": 500, "Total": 2}))
        };
        let mock = Mock::given(method("GET"))
            .and(path("/API/mdm/tags/search"))
            .and(query_param("name", name))
            .respond_with(answer);
        match searches {
            Some(n) => mock.expect(n).mount(server).await,
            None => mock.mount(server).await,
        }
    }
}

async fn mount_tag_changes(server: &MockServer, answer: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(wiremock::matchers::path_regex(
            r"^/API/mdm/tags/\d+/(adddevices|removedevices)$",
        ))
        .respond_with(answer)
        .mount(server)
        .await;
}

async fn tag_server(missing: &[&str]) -> MockServer {
    let server = MockServer::start().await;
    mount_tag_search(&server, missing, None).await;
    mount_tag_changes(&server, ResponseTemplate::new(200).set_body_json(bulk_ok())).await;
    server
}

/// The tag changes sent, in order: (path, JSON body).
async fn tag_posts(server: &MockServer) -> Vec<(String, Value)> {
    requests(server)
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| {
            (
                r.url.path().to_string(),
                serde_json::from_slice(&r.body).unwrap(),
            )
        })
        .collect()
}

async fn searches_for(server: &MockServer, name: &str) -> usize {
    requests(server)
        .await
        .iter()
        .filter(|r| {
            r.url.path() == "/API/mdm/tags/search"
                && r.url.query_pairs().any(|(k, v)| k == "name" && v == name)
        })
        .count()
}

#[tokio::test]
async fn each_level_goes_into_its_tag_first_and_out_of_the_other_three() {
    let body = json!({"BulkValues": {"Value": ["42"]}});
    for level in SignalLevel::ALL {
        let server = tag_server(&[]).await;
        let receipt = adapter(&server)
            .signal_risk(&device("42", None), level, RISK)
            .await
            .unwrap();
        let mut want: Vec<(String, Value)> = Vec::new();
        if let Some((_, _, id)) = TAGS.iter().find(|(l, _, _)| *l == level) {
            want.push((format!("/API/mdm/tags/{id}/adddevices"), body.clone()));
        }
        for (l, _, id) in TAGS {
            if l != level {
                want.push((format!("/API/mdm/tags/{id}/removedevices"), body.clone()));
            }
        }
        let sent = tag_posts(&server).await;
        assert_eq!(sent, want, "{level:?}");
        assert_eq!(
            receipt.request,
            want.iter()
                .map(|(p, _)| format!("POST {p}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        assert_eq!(
            serde_json::from_str::<Value>(receipt.request_body.as_deref().unwrap()).unwrap(),
            body
        );
        assert_eq!(receipt.status, 200);
        let answers = vec![bulk_ok().to_string(); want.len()].join("; ");
        assert_eq!(receipt.response_body.as_deref(), Some(answers.as_str()));
        for r in requests(&server).await {
            assert_eq!(r.headers.get("authorization").unwrap(), BASIC);
            assert_eq!(r.headers.get("aw-tenant-code").unwrap(), API_KEY);
            if r.method.as_str() == "POST" {
                assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
            }
        }
    }
}

#[tokio::test]
async fn tag_ids_are_searched_once_per_name_across_calls_and_taken_by_exact_name() {
    let server = MockServer::start().await;
    mount_tag_search(&server, &[], Some(1)).await;
    mount_tag_changes(&server, ResponseTemplate::new(200).set_body_json(bulk_ok())).await;
    for (_, _, id) in TAGS {
        Mock::given(method("GET"))
            .and(path(format!("/API/mdm/tags/{id}/devices")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Device": []})))
            .mount(&server)
            .await;
    }
    let a = adapter(&server);
    for level in SignalLevel::ALL {
        a.signal_risk(&device("7", None), level, RISK)
            .await
            .unwrap();
    }
    a.signal_risk(&device("8", None), SignalLevel::High, RISK)
        .await
        .unwrap();
    a.read_risk(&[device("7", None)], RISK).await.unwrap();
    // `expect(1)` on each search is checked when the server drops; the ids
    // used are the exact names', never the `_Old` look-alikes'.
    assert!(tag_posts(&server)
        .await
        .iter()
        .all(|(p, _)| ["/11/", "/12/", "/13/", "/14/"]
            .iter()
            .any(|id| p.contains(id))));
}

#[tokio::test]
async fn writing_the_same_level_twice_sends_the_same_calls_and_changes_nothing_more() {
    let server = tag_server(&[]).await;
    let a = adapter(&server);
    let first = a
        .signal_risk(&device("42", None), SignalLevel::Medium, RISK)
        .await
        .unwrap();
    let second = a
        .signal_risk(&device("42", None), SignalLevel::Medium, RISK)
        .await
        .unwrap();
    assert_eq!(first, second);
    let sent = tag_posts(&server).await;
    assert_eq!(sent.len(), 8);
    assert_eq!(sent[..4], sent[4..]);
}

#[tokio::test]
async fn a_missing_level_tag_is_not_permitted_naming_it_and_is_searched_again_next_time() {
    let server = tag_server(&["MTD_Threat_Level_High"]).await;
    let a = adapter(&server);
    for _ in 0..2 {
        let err = a
            .signal_risk(&device("42", None), SignalLevel::High, RISK)
            .await
            .unwrap_err();
        match &err {
            AdapterError::ActionNotPermitted { setting, .. } => assert_eq!(
                setting,
                "create the device tag `MTD_Threat_Level_High` in Workspace ONE UEM"
            ),
            other => panic!("{other:?}"),
        }
        assert!(!err.is_retryable());
    }
    assert!(tag_posts(&server).await.is_empty(), "nothing was changed");
    assert_eq!(searches_for(&server, "MTD_Threat_Level_High").await, 2);
    // Another level still works; the missing tag holds no device to remove.
    a.signal_risk(&device("42", None), SignalLevel::Low, RISK)
        .await
        .unwrap();
    let sent: Vec<String> = tag_posts(&server)
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        sent,
        [
            "/API/mdm/tags/11/adddevices",
            "/API/mdm/tags/12/removedevices",
            "/API/mdm/tags/14/removedevices"
        ]
    );
}

#[tokio::test]
async fn secured_without_any_level_tag_is_not_permitted_and_names_all_four() {
    let names: Vec<&str> = TAGS.iter().map(|(_, n, _)| *n).collect();
    let server = tag_server(&names).await;
    let err = adapter(&server)
        .signal_risk(&device("42", None), SignalLevel::Secured, RISK)
        .await
        .unwrap_err();
    match &err {
        AdapterError::ActionNotPermitted { setting, .. } => {
            for name in names {
                assert!(setting.contains(name), "{setting}");
            }
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_tag_deleted_since_its_id_was_cached_is_searched_again_once() {
    let server = MockServer::start().await;
    // The first search finds id 13; once the tag is recreated, id 23.
    Mock::given(method("GET"))
        .and(path("/API/mdm/tags/search"))
        .and(query_param("name", "MTD_Threat_Level_High"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"Tags": [{"Id": {"Value": 13}, "TagName": "MTD_Threat_Level_High"}]}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/tags/search"))
        .and(query_param("name", "MTD_Threat_Level_High"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"Tags": [{"Id": {"Value": 23}, "TagName": "MTD_Threat_Level_High"}]}),
        ))
        .mount(&server)
        .await;
    for other in [
        "MTD_Threat_Level_Low",
        "MTD_Threat_Level_Medium",
        "MTD_Threat_Level_Critical",
    ] {
        Mock::given(method("GET"))
            .and(path("/API/mdm/tags/search"))
            .and(query_param("name", other))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/API/mdm/tags/13/adddevices"))
        .respond_with(ResponseTemplate::new(200).set_body_json(bulk_ok()))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/API/mdm/tags/13/adddevices"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"errorCode": 1001, "message": "Tag '13' was not found."})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/API/mdm/tags/23/adddevices"))
        .respond_with(ResponseTemplate::new(200).set_body_json(bulk_ok()))
        .mount(&server)
        .await;
    let a = adapter(&server);
    a.signal_risk(&device("42", None), SignalLevel::High, RISK)
        .await
        .unwrap();
    let receipt = a
        .signal_risk(&device("42", None), SignalLevel::High, RISK)
        .await
        .unwrap();
    assert_eq!(receipt.request, "POST /API/mdm/tags/23/adddevices");
    assert_eq!(searches_for(&server, "MTD_Threat_Level_High").await, 2);
}

#[tokio::test]
async fn a_device_the_tag_call_fails_is_a_permanent_refusal_with_the_fault() {
    let server = MockServer::start().await;
    mount_tag_search(&server, &[], None).await;
    mount_tag_changes(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "TotalItems": 1, "AcceptedItems": 0, "FailedItems": 1,
            "Faults": {"Fault": [{"ErrorCode": 1001, "ItemValue": "42", "Message": "Device not found."}]}
        })),
    )
    .await;
    let err = adapter(&server)
        .signal_risk(&device("42", None), SignalLevel::Low, RISK)
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Rejected { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("Device not found"), "{err}");
}

#[tokio::test]
async fn a_tag_call_answered_5xx_429_or_a_page_maps_as_a_command_does() {
    for (answer, class) in [
        (ResponseTemplate::new(503), "unavailable"),
        (ResponseTemplate::new(500), "unavailable"),
        (ResponseTemplate::new(502), "no_answer"),
        (ResponseTemplate::new(504), "no_answer"),
        (
            ResponseTemplate::new(429).insert_header("Retry-After", "1"),
            "rate_limited",
        ),
        (
            ResponseTemplate::new(200)
                .set_body_raw("<html><title>Sign in</title></html>", "text/html"),
            "no_answer",
        ),
    ] {
        let server = MockServer::start().await;
        mount_tag_search(&server, &[], None).await;
        mount_tag_changes(&server, answer).await;
        let err = adapter(&server)
            .signal_risk(&device("42", None), SignalLevel::High, RISK)
            .await
            .unwrap_err();
        assert_eq!(err.class(), class, "{err:?}");
        assert!(err.is_retryable(), "{err:?}");
        if class == "rate_limited" {
            assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
        }
        assert_eq!(
            tag_posts(&server).await.len(),
            1,
            "the first failure ends the write"
        );
    }
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/tags/search"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let err = adapter(&server)
        .signal_risk(&device("42", None), SignalLevel::High, RISK)
        .await
        .unwrap_err();
    assert_eq!(err.class(), "unavailable", "a failed search: {err:?}");
}

#[tokio::test]
async fn a_device_id_that_is_no_number_is_a_config_error_and_sends_nothing() {
    let server = tag_server(&[]).await;
    let err = adapter(&server)
        .signal_risk(&device("abc", None), SignalLevel::High, RISK)
        .await
        .unwrap_err();
    assert_eq!(err.class(), "config", "{err:?}");
    assert!(requests(&server).await.is_empty());
}

async fn mount_members(server: &MockServer, id: u64, members: Value) {
    Mock::given(method("GET"))
        .and(path(format!("/API/mdm/tags/{id}/devices")))
        .respond_with(ResponseTemplate::new(200).set_body_json(members))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn the_levels_are_read_back_from_each_tags_members_once_the_highest_winning() {
    let server = MockServer::start().await;
    mount_tag_search(&server, &[], None).await;
    mount_members(
        &server,
        11,
        json!({"Device": [{"DeviceId": 1}, {"DeviceId": 3}]}),
    )
    .await;
    mount_members(&server, 12, json!({"Device": []})).await;
    mount_members(
        &server,
        13,
        json!({"Device": [{"DeviceId": {"Value": 2}}, {"DeviceId": "3", "FriendlyName": "x"}]}),
    )
    .await;
    mount_members(&server, 14, json!({"Device": [{"DeviceId": 5}]})).await;
    let a = adapter(&server);
    assert_eq!(a.risk_read_back(), Some(RiskReadBack::Bulk));
    let devices: Vec<Device> = ["1", "2", "3", "4", "5"]
        .into_iter()
        .map(|id| device(id, None))
        .collect();
    assert_eq!(
        a.read_risk(&devices, RISK).await.unwrap(),
        vec![
            Some(SignalLevel::Low),
            Some(SignalLevel::High),
            Some(SignalLevel::High),
            Some(SignalLevel::Secured),
            Some(SignalLevel::Critical),
        ]
    );
}

#[tokio::test]
async fn a_missing_level_tag_reads_as_holding_nobody_and_no_tag_at_all_as_no_level() {
    let server = MockServer::start().await;
    mount_tag_search(
        &server,
        &["MTD_Threat_Level_Medium", "MTD_Threat_Level_Critical"],
        None,
    )
    .await;
    mount_members(&server, 11, json!({"Device": [{"DeviceId": 1}]})).await;
    Mock::given(method("GET"))
        .and(path("/API/mdm/tags/13/devices"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let devices = [device("1", None), device("2", None)];
    assert_eq!(
        adapter(&server).read_risk(&devices, RISK).await.unwrap(),
        vec![Some(SignalLevel::Low), Some(SignalLevel::Secured)]
    );

    let names: Vec<&str> = TAGS.iter().map(|(_, n, _)| *n).collect();
    let empty = MockServer::start().await;
    mount_tag_search(&empty, &names, None).await;
    assert_eq!(
        adapter(&empty).read_risk(&devices, RISK).await.unwrap(),
        vec![None, None]
    );
    assert!(requests(&empty)
        .await
        .iter()
        .all(|r| r.url.path() == "/API/mdm/tags/search"));
}

#[tokio::test]
async fn the_missing_risk_signal_lists_the_level_tags_not_found_searching_afresh() {
    let server = MockServer::start().await;
    mount_tag_search(
        &server,
        &["MTD_Threat_Level_Medium", "MTD_Threat_Level_Critical"],
        Some(2),
    )
    .await;
    let a = adapter(&server);
    for _ in 0..2 {
        assert_eq!(
            a.missing_risk_signal(RISK).await.unwrap(),
            vec![
                "MTD_Threat_Level_Medium".to_string(),
                "MTD_Threat_Level_Critical".to_string()
            ]
        );
    }
}
