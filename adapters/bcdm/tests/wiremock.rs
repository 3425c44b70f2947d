//! The BCDM adapter against a wiremock server speaking the design of the
//! project's `MDM-APIS.md` (BCDM section).
//!
//! Every test checks the requests the server received with an independent
//! verifier of the signature ([`verify`]): it recomputes the HMAC from what
//! wiremock received (method, the URL's path and query, the timestamp header,
//! the body) with `hmac`/`sha2` directly, not with the adapter's own code.

use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use mtd_adapter::{
    AdapterError, Device, DeviceIdentifier, Identifiers, MdmAdapter, MdmCommand, Ownership,
    Platform, Posture, RiskReadBack, Secret, SignalLevel, User,
};
use mtd_adapter_bcdm::{BcdmAdapter, BcdmConfig, BcdmCredentials};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;
use wiremock::matchers::{body_json, method, path, query_param};
use wiremock::{Match, Mock, MockServer, Request, Respond, ResponseTemplate};

const ACCESS_KEY: &str = "AK-test-0001";
const DM_CODE: &str = "DM-4242";
const SECRET_KEY: &str = "secret-key-from-the-csv";
const TENANT: &str = "acme";

fn config_for(base: &str) -> BcdmConfig {
    BcdmConfig::new(
        "bcdm-test",
        TENANT,
        Url::parse(base).unwrap(),
        BcdmCredentials {
            access_key: ACCESS_KEY.into(),
            secret_key: Secret::new(SECRET_KEY),
            dm_code: DM_CODE.into(),
        },
    )
}

fn adapter(server: &MockServer) -> BcdmAdapter {
    BcdmAdapter::new(config_for(&server.uri())).unwrap()
}

fn adapter_with(server: &MockServer, change: impl FnOnce(&mut BcdmConfig)) -> BcdmAdapter {
    let mut config = config_for(&server.uri());
    change(&mut config);
    BcdmAdapter::new(config).unwrap()
}

/// Recomputes the signature of a received request; `Err` says what is wrong.
fn verify(request: &Request) -> Result<(), String> {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| format!("no {name} header"))
    };
    if header("X-BCDM-Access-Key")? != ACCESS_KEY {
        return Err("wrong access key".into());
    }
    if header("X-BCDM-DM-Code")? != DM_CODE {
        return Err("wrong DM code".into());
    }
    let timestamp: i64 = header("X-BCDM-Timestamp")?
        .parse()
        .map_err(|e| format!("timestamp: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - timestamp).abs() > 60 {
        return Err(format!("timestamp {timestamp} is far from now {now}"));
    }
    let target = match request.url.query() {
        Some(q) => format!("{}?{q}", request.url.path()),
        None => request.url.path().to_string(),
    };
    let body_hash = hex::encode(Sha256::digest(&request.body));
    let signed = format!("{}\n{target}\n{timestamp}\n{body_hash}", request.method);
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET_KEY.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    let got = header("X-BCDM-Signature")?;
    if got != expected {
        return Err(format!("signature {got} != {expected} over {signed:?}"));
    }
    Ok(())
}

/// A matcher that only lets correctly signed requests through.
struct Signed;
impl Match for Signed {
    fn matches(&self, request: &Request) -> bool {
        verify(request).is_ok()
    }
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

/// Asserts every request the server received verifies; returns them.
async fn all_signed(server: &MockServer) -> Vec<Request> {
    let requests = received(server).await;
    for r in &requests {
        if let Err(e) = verify(r) {
            panic!("{} {}: {e}", r.method, r.url);
        }
    }
    requests
}

fn target(request: &Request) -> String {
    match request.url.query() {
        Some(q) => format!("{}?{q}", request.url.path()),
        None => request.url.path().to_string(),
    }
}

fn ios(id: &str) -> Value {
    json!({
        "device_id": id, "udid": format!("00008030-{id}"), "serial_number": format!("SN{id}"),
        "imei": "352099001761481", "wifi_mac": "a4:67:06:0c:15:3d", "model": "iPhone 15",
        "os_version": "17.5", "platform": "iOS", "user_id": "u-1", "ownership": "corporate",
        "last_checkin_at": "2024-05-01T09:30:00Z"
    })
}

fn android(id: &str) -> Value {
    json!({"device_id": id, "platform": "Android", "ownership": "personal"})
}

fn devices_body(total: u64, devices: Vec<Value>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"total": total, "devices": devices}))
}

fn error_body(status: u16, error: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"error": error, "message": message}))
}

fn a_device(id: &str) -> Device {
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
        groups: Vec::new(),
        last_checkin_at: None,
    }
}

async fn mount_device_pages(server: &MockServer, total: u64, page: u64, limit: u64) {
    let mut offset = 0;
    while offset < total {
        let n = page.min(total - offset);
        let devices = (offset..offset + n)
            .map(|i| ios(&format!("d{i}")))
            .collect();
        Mock::given(method("GET"))
            .and(path("/api/v1/devices"))
            .and(query_param("offset", offset.to_string()))
            .and(query_param("limit", limit.to_string()))
            .and(Signed)
            .respond_with(devices_body(total, devices))
            .expect(1)
            .mount(server)
            .await;
        offset += n;
    }
}

async fn all_devices(
    adapter: &BcdmAdapter,
) -> Result<Vec<mtd_adapter::Page<Device>>, AdapterError> {
    adapter.devices().try_collect().await
}

// ---- signing ---------------------------------------------------------------

#[tokio::test]
async fn every_request_carries_the_four_headers_and_a_signature_that_verifies() {
    let server = MockServer::start().await;
    Mock::given(Signed)
        .and(method("GET"))
        .and(path("/api/v1/devices"))
        .respond_with(devices_body(1, vec![ios("d1")]))
        .mount(&server)
        .await;
    Mock::given(Signed)
        .and(method("GET"))
        .and(path("/api/v1/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"total": 0, "users": []})))
        .mount(&server)
        .await;
    Mock::given(Signed)
        .and(method("GET"))
        .and(path("/api/v1/devices/d1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ios("d1")))
        .mount(&server)
        .await;
    Mock::given(Signed)
        .and(method("POST"))
        .and(path("/api/v1/devices/d1/actions"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"request_id": "r-1"})))
        .mount(&server)
        .await;
    let bcdm = adapter(&server);

    bcdm.health_check().await.unwrap();
    all_devices(&bcdm).await.unwrap();
    let _: Vec<_> = bcdm.users().try_collect().await.unwrap();
    for id in [
        DeviceIdentifier::udid("00008030-d1").unwrap(),
        DeviceIdentifier::serial("SNd1").unwrap(),
        DeviceIdentifier::imei("352099001761481").unwrap(),
        DeviceIdentifier::mac("A467060C153D").unwrap(),
        DeviceIdentifier::mdm_device_id("d1").unwrap(),
    ] {
        assert!(bcdm.lookup_device(&id).await.unwrap().is_some(), "{id}");
    }
    bcdm.execute(MdmCommand::Lock, &a_device("d1"))
        .await
        .unwrap();

    let requests = all_signed(&server).await;
    assert_eq!(requests.len(), 9);
    let post = requests
        .iter()
        .find(|r| r.method.as_str() == "POST")
        .unwrap();
    assert_eq!(
        post.headers.get("content-type").unwrap(),
        "application/json"
    );
}

#[tokio::test]
async fn a_base_path_in_the_url_is_part_of_the_signed_target() {
    let server = MockServer::start().await;
    Mock::given(Signed)
        .and(path("/bcdm/api/v1/devices"))
        .respond_with(devices_body(1, vec![ios("d1")]))
        .expect(1)
        .mount(&server)
        .await;
    let bcdm = BcdmAdapter::new(config_for(&format!("{}/bcdm/", server.uri()))).unwrap();
    assert_eq!(bcdm.health_check().await.unwrap().devices_on_first_page, 1);
    let requests = all_signed(&server).await;
    assert_eq!(
        target(&requests[0]),
        "/bcdm/api/v1/devices?offset=0&limit=100"
    );
}

#[tokio::test]
async fn a_device_id_with_odd_characters_is_encoded_and_signed_as_sent() {
    let server = MockServer::start().await;
    Mock::given(Signed)
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": "not_found"})))
        .expect(1)
        .mount(&server)
        .await;
    let bcdm = adapter(&server);
    let id = DeviceIdentifier::mdm_device_id("a/b c?d").unwrap();
    assert!(bcdm.lookup_device(&id).await.unwrap().is_none());
    let requests = all_signed(&server).await;
    assert_eq!(target(&requests[0]), "/api/v1/devices/a%2Fb%20c%3Fd");
}

// ---- paging ----------------------------------------------------------------

#[tokio::test]
async fn devices_are_paged_by_offset_and_limit_and_stop_at_an_exact_multiple_of_the_total() {
    let server = MockServer::start().await;
    mount_device_pages(&server, 6, 3, 3).await;
    let bcdm = adapter_with(&server, |c| c.page_size = 3);
    let pages = all_devices(&bcdm).await.unwrap();
    assert_eq!(pages.len(), 2);
    let ids: Vec<_> = pages
        .iter()
        .flat_map(|p| p.items.iter().map(|d| d.mdm_device_id.clone()))
        .collect();
    assert_eq!(ids, ["d0", "d1", "d2", "d3", "d4", "d5"]);
    // No request for offset 6: the total was reached.
    let targets: Vec<_> = all_signed(&server).await.iter().map(target).collect();
    assert_eq!(
        targets,
        [
            "/api/v1/devices?offset=0&limit=3",
            "/api/v1/devices?offset=3&limit=3"
        ]
    );
}

#[tokio::test]
async fn a_short_last_page_ends_the_listing() {
    let server = MockServer::start().await;
    mount_device_pages(&server, 7, 3, 3).await;
    let bcdm = adapter_with(&server, |c| c.page_size = 3);
    let pages = all_devices(&bcdm).await.unwrap();
    assert_eq!(
        pages.iter().map(|p| p.items.len()).collect::<Vec<_>>(),
        [3, 3, 1]
    );
    assert_eq!(all_signed(&server).await.len(), 3);
}

#[tokio::test]
async fn a_total_of_zero_is_one_request_and_no_devices() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/devices"))
        .and(query_param("offset", "0"))
        .respond_with(devices_body(0, vec![]))
        .expect(1)
        .mount(&server)
        .await;
    let bcdm = adapter(&server);
    assert!(all_devices(&bcdm).await.unwrap().is_empty());
    assert_eq!(all_signed(&server).await.len(), 1);
}

#[tokio::test]
async fn an_empty_page_before_the_total_ends_the_listing_instead_of_looping() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/devices"))
        .and(query_param("offset", "0"))
        .respond_with(devices_body(10, vec![ios("a"), ios("b")]))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/devices"))
        .and(query_param("offset", "2"))
        .respond_with(devices_body(10, vec![]))
        .expect(1)
        .mount(&server)
        .await;
    let bcdm = adapter_with(&server, |c| c.page_size = 2);
    let pages = all_devices(&bcdm).await.unwrap();
    assert_eq!(pages.len(), 1);
}

#[tokio::test]
async fn the_listing_ends_with_the_first_error() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/devices"))
        .and(query_param("offset", "0"))
        .respond_with(devices_body(4, vec![ios("a"), ios("b")]))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/devices"))
        .and(query_param("offset", "2"))
        .respond_with(error_body(500, "internal", "boom"))
        .mount(&server)
        .await;
    let bcdm = adapter_with(&server, |c| c.page_size = 2);
    let results: Vec<_> = futures::StreamExt::collect(bcdm.devices()).await;
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap().items.len(), 2);
    assert_eq!(results[1].as_ref().unwrap_err().class(), "unavailable");
}

#[tokio::test]
async fn only_ios_devices_are_kept_and_the_rest_are_counted_as_skipped() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/devices"))
        .and(query_param("offset", "0"))
        .respond_with(devices_body(
            5,
            vec![
                ios("i1"),
                android("a1"),
                json!({"device_id": "i2", "platform": "ios"}),
                android("a2"),
                json!({"device_id": "w1", "platform": "Windows"}),
            ],
        ))
        .mount(&server)
        .await;
    let bcdm = adapter(&server);
    let pages = all_devices(&bcdm).await.unwrap();
    assert_eq!(pages.len(), 1);
    let page = &pages[0];
    assert_eq!(
        page.items
            .iter()
            .map(|d| d.mdm_device_id.as_str())
            .collect::<Vec<_>>(),
        ["i1", "i2"]
    );
    assert_eq!(page.skipped, 3);
    assert_eq!(
        page.skip_reason.as_deref(),
        Some("BCDM supports iOS only: 3 Android/other devices skipped")
    );
    let d = &page.items[0];
    assert_eq!(d.identifiers.mac.as_deref(), Some("a467060c153d"));
    assert_eq!(d.user.as_ref().unwrap().mdm_user_id, "u-1");
    assert!(d.groups.is_empty());
    // The health check counts the iOS devices only.
    assert_eq!(bcdm.health_check().await.unwrap().devices_on_first_page, 2);
}

#[tokio::test]
async fn users_are_paged_and_those_without_an_email_get_the_tenant_placeholder() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/users"))
        .and(query_param("offset", "0"))
        .and(query_param("limit", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"total": 3, "users": [
            {"user_id": "u-1", "login_id": "taro", "name": "山田 太郎", "email": "taro@example.jp"},
            {"user_id": "u-2", "login_id": "hanako", "name": "佐藤 花子", "email": null},
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/users"))
        .and(query_param("offset", "2"))
        .and(query_param("limit", "2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"total": 3, "users": [
                {"user_id": "u-3", "login_id": "kiosk", "name": null},
            ]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let bcdm = adapter_with(&server, |c| c.page_size = 2);
    let pages: Vec<_> = bcdm.users().try_collect().await.unwrap();
    let users: Vec<User> = pages.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(users.len(), 3);
    assert_eq!(users[0].email.as_deref(), Some("taro@example.jp"));
    assert_eq!(users[0].first_name.as_deref(), Some("山田 太郎"));
    assert_eq!(users[0].username.as_deref(), Some("taro"));
    assert_eq!(users[1].email.as_deref(), Some("acme-user@qmpr.com"));
    assert_eq!(users[2].email.as_deref(), Some("acme-user@qmpr.com"));
    assert_eq!(users[2].mdm_user_id, "u-3");
    all_signed(&server).await;
}

#[tokio::test]
async fn there_are_no_groups_and_the_capabilities_say_so() {
    let server = MockServer::start().await;
    let bcdm = adapter(&server);
    let groups: Vec<_> = bcdm.groups().try_collect().await.unwrap();
    assert!(groups.is_empty());
    let caps = bcdm.capabilities();
    assert!(!caps.groups);
    assert!(caps.user_listing);
    assert!(caps.removes_wifi_profile_itself);
    assert!(bcdm.removes_wifi_profile_itself());
    assert_eq!(
        caps.commands.into_iter().collect::<Vec<_>>(),
        [
            MdmCommand::Lock,
            MdmCommand::DisconnectWifi,
            MdmCommand::EnterpriseWipe,
            MdmCommand::Wipe
        ]
    );
    assert_eq!(bcdm.kind(), mtd_adapter::MdmKind::Bcdm);
    assert!(received(&server).await.is_empty());
}

// ---- posture ---------------------------------------------------------------

/// Three iOS devices: a healthy one, a jailbroken one whose flags come as
/// text and whose risk level was written, and one that says nothing.
fn posture_devices() -> Vec<Value> {
    let with = |id: &str, pairs: Value| {
        let mut d = ios(id);
        for (k, v) in pairs.as_object().unwrap() {
            d[k] = v.clone();
        }
        d
    };
    vec![
        with(
            "p1",
            json!({"compliant": true, "passcode_enabled": true, "encrypted": true,
                   "jailbroken": false, "manufacturer": "Apple",
                   "phone_number": "+819012345678", "mtd_risk_level": null}),
        ),
        with(
            "p2",
            json!({"compliant": "false", "passcode_enabled": "false", "encrypted": 0,
                   "jailbroken": "true", "manufacturer": "Apple", "phone_number": "",
                   "mtd_risk_level": "high", "model": "iPhone 12", "os_version": "16.7.8",
                   "last_checkin_at": "2025-03-03T09:30:00+09:00"}),
        ),
        with(
            "p3",
            json!({"compliant": null, "passcode_enabled": null, "encrypted": null,
                   "jailbroken": null, "manufacturer": null, "phone_number": null}),
        ),
    ]
}

#[tokio::test]
async fn the_listing_maps_posture_with_lenient_and_null_values() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/devices"))
        .and(Signed)
        .respond_with(devices_body(3, posture_devices()))
        .mount(&server)
        .await;
    let pages = all_devices(&adapter(&server)).await.unwrap();
    let [healthy, jailbroken, unsaid] = &pages[0].items[..] else {
        panic!("{:?}", pages[0].items);
    };
    assert_eq!(
        healthy.posture,
        Posture {
            compliant: Some(true),
            enrolled: None,
            encrypted: Some(true),
            passcode: Some(true),
            compromised: Some(false),
            manufacturer: Some("Apple".into()),
            phone_number: Some("+819012345678".into()),
        }
    );
    assert_eq!(
        jailbroken.posture,
        Posture {
            compliant: Some(false),
            enrolled: None,
            encrypted: Some(false),
            passcode: Some(false),
            compromised: Some(true),
            manufacturer: Some("Apple".into()),
            phone_number: None,
        }
    );
    assert_eq!(jailbroken.model.as_deref(), Some("iPhone 12"));
    assert_eq!(jailbroken.os_version.as_deref(), Some("16.7.8"));
    assert_eq!(
        jailbroken.last_checkin_at.unwrap().to_rfc3339(),
        "2025-03-03T00:30:00+00:00"
    );
    assert_eq!(unsaid.posture, Posture::default());
}

#[tokio::test]
async fn a_lookup_maps_posture_as_the_listing_does_by_id_and_by_identifier() {
    let server = MockServer::start().await;
    let devices = posture_devices();
    Mock::given(method("GET"))
        .and(path("/api/v1/devices/p2"))
        .and(Signed)
        .respond_with(ResponseTemplate::new(200).set_body_json(devices[1].clone()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/devices"))
        .and(query_param("serial_number", "SNP1"))
        .and(Signed)
        .respond_with(devices_body(1, vec![devices[0].clone()]))
        .expect(1)
        .mount(&server)
        .await;
    let bcdm = adapter(&server);
    let by_id = DeviceIdentifier::mdm_device_id("p2").unwrap();
    let jailbroken = bcdm.lookup_device(&by_id).await.unwrap().unwrap();
    assert_eq!(jailbroken.posture.compromised, Some(true));
    assert_eq!(jailbroken.posture.compliant, Some(false));
    assert_eq!(jailbroken.posture.phone_number, None);
    let by_serial = DeviceIdentifier::serial("snp1").unwrap();
    let healthy = bcdm.lookup_device(&by_serial).await.unwrap().unwrap();
    assert_eq!(healthy.mdm_device_id, "p1");
    assert_eq!(healthy.posture.compromised, Some(false));
    assert_eq!(healthy.posture.passcode, Some(true));
    assert_eq!(
        healthy.posture.phone_number.as_deref(),
        Some("+819012345678")
    );
}

// ---- lookups ---------------------------------------------------------------

#[tokio::test]
async fn each_lookup_sends_its_exact_query() {
    let cases = [
        (
            DeviceIdentifier::udid("00008030-001a").unwrap(),
            "/api/v1/devices?udid=00008030-001A",
        ),
        (
            DeviceIdentifier::serial("f17xk0abcd").unwrap(),
            "/api/v1/devices?serial_number=F17XK0ABCD",
        ),
        (
            DeviceIdentifier::imei("35 209900 176148 1").unwrap(),
            "/api/v1/devices?imei=352099001761481",
        ),
        (
            DeviceIdentifier::mac("A4-67-06-0C-15-3D").unwrap(),
            "/api/v1/devices?wifi_mac=a4%3A67%3A06%3A0c%3A15%3A3d",
        ),
        (
            DeviceIdentifier::mdm_device_id("dev-77").unwrap(),
            "/api/v1/devices/dev-77",
        ),
    ];
    for (id, expected) in cases {
        let server = MockServer::start().await;
        let mut device = ios("dev-77");
        device["udid"] = json!("00008030-001a");
        device["serial_number"] = json!("F17XK0ABCD");
        let answer = if matches!(id, DeviceIdentifier::MdmDeviceId(_)) {
            ResponseTemplate::new(200).set_body_json(device)
        } else {
            devices_body(1, vec![device])
        };
        Mock::given(Signed)
            .and(method("GET"))
            .respond_with(answer)
            .expect(1)
            .mount(&server)
            .await;
        let found = adapter(&server).lookup_device(&id).await.unwrap();
        assert_eq!(found.unwrap().mdm_device_id, "dev-77", "{id}");
        let requests = all_signed(&server).await;
        assert_eq!(target(&requests[0]), expected, "{id}");
    }
}

#[tokio::test]
async fn a_lookup_that_finds_nothing_is_none() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/devices"))
        .respond_with(devices_body(0, vec![]))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/devices/gone"))
        .respond_with(error_body(404, "not_found", "no such device"))
        .mount(&server)
        .await;
    let bcdm = adapter(&server);
    let serial = DeviceIdentifier::serial("NOPE").unwrap();
    assert_eq!(bcdm.lookup_device(&serial).await.unwrap(), None);
    let by_id = DeviceIdentifier::mdm_device_id("gone").unwrap();
    assert_eq!(bcdm.lookup_device(&by_id).await.unwrap(), None);
}

#[tokio::test]
async fn a_non_ios_device_found_by_lookup_is_not_found() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/devices"))
        .respond_with(devices_body(1, vec![android("a1")]))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/devices/a1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(android("a1")))
        .mount(&server)
        .await;
    let bcdm = adapter(&server);
    let imei = DeviceIdentifier::imei("352099001761481").unwrap();
    assert_eq!(bcdm.lookup_device(&imei).await.unwrap(), None);
    let by_id = DeviceIdentifier::mdm_device_id("a1").unwrap();
    assert_eq!(bcdm.lookup_device(&by_id).await.unwrap(), None);
}

#[tokio::test]
async fn a_lookup_answered_with_several_devices_takes_the_one_that_matches() {
    let server = MockServer::start().await;
    let mut other = ios("x");
    other["serial_number"] = json!("OTHER");
    let mut wanted = ios("y");
    wanted["serial_number"] = json!("want1");
    Mock::given(path("/api/v1/devices"))
        .respond_with(devices_body(2, vec![other, wanted]))
        .mount(&server)
        .await;
    let found = adapter(&server)
        .lookup_device(&DeviceIdentifier::serial("WANT1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.mdm_device_id, "y");
}

// ---- actions ---------------------------------------------------------------

#[tokio::test]
async fn each_action_sends_its_exact_body_and_keeps_the_request_id() {
    for (command, action) in [
        (MdmCommand::Lock, "lock"),
        (MdmCommand::DisconnectWifi, "disconnect_wifi"),
        (MdmCommand::EnterpriseWipe, "enterprise_wipe"),
        (MdmCommand::Wipe, "remote_wipe"),
    ] {
        let server = MockServer::start().await;
        Mock::given(Signed)
            .and(method("POST"))
            .and(path("/api/v1/devices/dev-9/actions"))
            .and(body_json(json!({ "action": action })))
            .respond_with(
                ResponseTemplate::new(202)
                    .set_body_json(json!({"request_id": format!("req-{action}")})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let receipt = adapter(&server)
            .execute(command, &a_device("dev-9"))
            .await
            .unwrap();
        assert_eq!(receipt.request, "POST /api/v1/devices/dev-9/actions");
        let expected_body = format!(r#"{{"action":"{action}"}}"#);
        assert_eq!(
            receipt.request_body.as_deref(),
            Some(expected_body.as_str())
        );
        assert_eq!(receipt.status, 202);
        assert_eq!(
            receipt.vendor_reference.as_deref(),
            Some(format!("req-{action}").as_str())
        );
        let requests = all_signed(&server).await;
        assert_eq!(requests[0].body, expected_body.as_bytes(), "{command}");
    }
}

/// MDM-APIS.md: an action is accepted with 202 `{"request_id":"…"}`; any
/// other answer, a 2xx included, does not count as sent (CONTRACT §4). The
/// MDM may have acted on it, so it is `NoAnswer`: never repeated for a wipe.
#[tokio::test]
async fn only_202_with_a_request_id_counts_as_sent() {
    let answers = [
        ResponseTemplate::new(200).set_body_raw(
            "<!DOCTYPE html><html><head><title>Sign in</title></head></html>",
            "text/html",
        ),
        ResponseTemplate::new(202),
        ResponseTemplate::new(202).set_body_json(json!({"status": "queued"})),
        ResponseTemplate::new(202).set_body_json(json!({"request_id": ""})),
        ResponseTemplate::new(200).set_body_json(json!({"request_id": "r-1"})),
        ResponseTemplate::new(204),
    ];
    for (i, answer) in answers.into_iter().enumerate() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let err = adapter(&server)
            .execute(MdmCommand::EnterpriseWipe, &a_device("d"))
            .await
            .expect_err(&format!("answer {i} counted as sent"));
        assert_eq!(err.class(), "no_answer", "answer {i}: {err:?}");
        assert!(err.to_string().contains("202"), "names what was due: {err}");
    }
}

#[tokio::test]
async fn removing_the_wifi_profile_is_unsupported_and_sends_nothing() {
    let server = MockServer::start().await;
    let err = adapter(&server)
        .execute(MdmCommand::RemoveWifiProfile, &a_device("d"))
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Unsupported(_)), "{err:?}");
    assert!(err
        .to_string()
        .contains("removes its disconnect-Wi-Fi profile itself"));
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn an_action_the_console_forbids_names_its_setting_and_is_not_retryable() {
    for (command, setting) in [
        (MdmCommand::Lock, "Remote lock"),
        (MdmCommand::DisconnectWifi, "Disconnect Wi-Fi"),
        (
            MdmCommand::EnterpriseWipe,
            "Enterprise Wipe (delete device registration)",
        ),
        (MdmCommand::Wipe, "Remote Wipe"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(error_body(
                403,
                "action_not_permitted",
                "the console does not permit this action",
            ))
            .expect(1)
            .mount(&server)
            .await;
        let err = adapter(&server)
            .execute(command, &a_device("d"))
            .await
            .unwrap_err();
        match &err {
            AdapterError::ActionNotPermitted {
                setting: s,
                message,
            } => {
                assert_eq!(s, setting);
                assert!(message.contains("does not permit"), "{message}");
            }
            other => panic!("{command}: {other:?}"),
        }
        assert!(!err.is_retryable());
        assert_eq!(err.class(), "action_not_permitted");
        assert!(err.to_string().contains(setting));
    }
}

// ---- errors ----------------------------------------------------------------

async fn health_error(answer: ResponseTemplate) -> AdapterError {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(answer)
        .mount(&server)
        .await;
    adapter(&server).health_check().await.unwrap_err()
}

#[tokio::test]
async fn a_401_unauthorized_is_unauthorized_and_names_the_keys() {
    let err = health_error(error_body(401, "unauthorized", "bad signature")).await;
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
    assert!(err.to_string().contains("access_key and secret_key"));
    assert!(err.to_string().contains("bad signature"));
    assert!(!err.is_retryable());
    assert!(err.is_auth());
}

#[tokio::test]
async fn a_401_stale_request_says_clock_skew() {
    let err = health_error(error_body(401, "stale_request", "timestamp too old")).await;
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");
    assert!(err.to_string().contains(
        "clock skew: the BCDM server says the request timestamp is stale; check this host's clock"
    ));
}

#[tokio::test]
async fn a_403_forbidden_says_the_dm_code_does_not_match() {
    let err = health_error(error_body(403, "forbidden", "dm code mismatch")).await;
    assert!(matches!(err, AdapterError::Forbidden(_)), "{err:?}");
    assert!(err
        .to_string()
        .contains("DM code does not match the access key"));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_403_action_not_permitted_on_a_listing_is_plain_forbidden() {
    let err = health_error(error_body(403, "action_not_permitted", "?")).await;
    assert!(matches!(err, AdapterError::Forbidden(_)), "{err:?}");
}

#[tokio::test]
async fn a_404_on_a_listing_is_not_found() {
    let err = health_error(error_body(404, "not_found", "no such path")).await;
    assert!(matches!(err, AdapterError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_429_is_rate_limited_with_the_retry_after_delay() {
    let err = health_error(
        error_body(429, "rate_limited", "slow down").insert_header("Retry-After", "3"),
    )
    .await;
    assert!(matches!(err, AdapterError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn one_stray_429_on_a_listing_page_is_waited_out_and_the_page_read_again() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/devices"))
        .respond_with(
            error_body(429, "rate_limited", "slow down").insert_header("Retry-After", "1"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/devices"))
        .respond_with(devices_body(1, vec![ios("d1")]))
        .mount(&server)
        .await;
    let started = Instant::now();
    let pages: Vec<_> = adapter(&server).devices().try_collect().await.unwrap();
    assert_eq!(pages.iter().map(|p| p.items.len()).sum::<usize>(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the Retry-After was honoured"
    );
    let all = all_signed(&server).await;
    assert_eq!(all.len(), 2, "one repeat, signed like every request");
}

#[tokio::test]
async fn a_429_that_persists_fails_the_read_after_one_repeat_and_a_command_is_never_repeated() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            error_body(429, "rate_limited", "slow down").insert_header("Retry-After", "0"),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            error_body(429, "rate_limited", "slow down").insert_header("Retry-After", "0"),
        )
        .mount(&server)
        .await;
    let bcdm = adapter(&server);
    let err = bcdm.health_check().await.unwrap_err();
    assert!(matches!(err, AdapterError::RateLimited { .. }), "{err:?}");
    assert_eq!(received(&server).await.len(), 2, "one read and one repeat");
    let err = bcdm
        .execute(MdmCommand::Lock, &a_device("d1"))
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::RateLimited { .. }), "{err:?}");
    assert_eq!(
        received(&server).await.len(),
        3,
        "a command is left to the dispatcher's retry"
    );
}

#[tokio::test]
async fn a_5xx_is_unavailable_and_retryable() {
    for status in [500, 502, 503] {
        let err = health_error(error_body(status, "internal", "oops")).await;
        assert!(
            matches!(err, AdapterError::Unavailable { status: Some(s), .. } if s == status),
            "{err:?}"
        );
        assert!(err.is_retryable());
    }
}

#[tokio::test]
async fn a_400_is_rejected() {
    let err = health_error(error_body(400, "bad_request", "limit too large")).await;
    assert!(
        matches!(err, AdapterError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("limit too large"));
}

#[tokio::test]
async fn malformed_json_is_a_decode_error() {
    let err = health_error(
        ResponseTemplate::new(200)
            .set_body_raw(r#"{"total": 3, "devices": [{"#, "application/json"),
    )
    .await;
    assert!(matches!(err, AdapterError::Decode(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_html_page_where_json_was_due_is_a_decode_error_naming_the_page() {
    let page =
        "<!DOCTYPE html><html><head><title>Maintenance</title></head><body>Back soon</body></html>";
    let err = health_error(ResponseTemplate::new(200).set_body_raw(page, "text/html")).await;
    assert!(matches!(err, AdapterError::Decode(_)), "{err:?}");
    assert!(err.to_string().contains("HTML page: Maintenance"), "{err}");

    let err = health_error(ResponseTemplate::new(502).set_body_raw(
        "<html><head><title>502 Bad Gateway</title></head></html>",
        "text/html",
    ))
    .await;
    assert!(matches!(err, AdapterError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("502 Bad Gateway"), "{err}");
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(devices_body(0, vec![]).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let bcdm = adapter_with(&server, |c| {
        c.http.request_timeout = Duration::from_millis(200)
    });
    let err = bcdm.health_check().await.unwrap_err();
    assert!(matches!(err, AdapterError::Timeout(_)), "{err:?}");
    assert!(err.is_retryable());
}

// ---- the limiter -----------------------------------------------------------

/// Answers a device and records when each request arrived.
#[derive(Clone, Default)]
struct ArrivalLog(Arc<Mutex<Vec<Instant>>>);
impl Respond for ArrivalLog {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.lock().unwrap().push(Instant::now());
        ResponseTemplate::new(200).set_body_json(ios("d1"))
    }
}

#[tokio::test]
async fn twenty_five_concurrent_requests_take_two_seconds_and_never_exceed_ten_in_a_second() {
    let server = MockServer::start().await;
    let log = ArrivalLog::default();
    Mock::given(Signed)
        .respond_with(log.clone())
        .expect(25)
        .mount(&server)
        .await;
    let bcdm = adapter(&server);
    let id = DeviceIdentifier::mdm_device_id("d1").unwrap();
    let begin = Instant::now();
    let results = futures::future::join_all((0..25).map(|_| bcdm.lookup_device(&id))).await;
    let elapsed = begin.elapsed();
    assert!(results.iter().all(|r| matches!(r, Ok(Some(_)))));
    assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
    let mut arrivals = log.0.lock().unwrap().clone();
    arrivals.sort();
    let busiest = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|&&t| t < arrivals[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= 10,
        "{busiest} requests arrived within one second"
    );
}

// ---- config ----------------------------------------------------------------

#[test]
fn a_config_out_of_range_is_refused_with_the_fix() {
    let base = "https://star19extapi.bizconcier-dm.com";
    let refused = |change: &dyn Fn(&mut BcdmConfig), needle: &str| {
        let mut config = config_for(base);
        change(&mut config);
        let err = BcdmAdapter::new(config).unwrap_err();
        assert_eq!(err.class(), "config");
        assert!(err.to_string().contains(needle), "{err}");
    };
    refused(&|c| c.page_size = 0, "page_size");
    refused(&|c| c.page_size = 201, "page_size");
    refused(
        &|c| c.max_requests_per_second = 0,
        "max_requests_per_second",
    );
    refused(&|c| c.credentials.access_key = " ".into(), "access_key");
    refused(&|c| c.credentials.dm_code = "a\nb".into(), "dm_code");
    refused(
        &|c| c.credentials.secret_key = Secret::new(""),
        "secret_key",
    );
    refused(
        &|c| c.base_url = Url::parse("https://h/x?y=1").unwrap(),
        "query",
    );
    refused(
        &|c| c.base_url = Url::parse("mailto:a@b").unwrap(),
        "http(s)",
    );
    assert!(BcdmAdapter::new(config_for(base)).is_ok());
    let mut max = config_for(base);
    max.page_size = 200;
    assert!(BcdmAdapter::new(max).is_ok());
}

#[test]
fn debug_output_of_the_config_and_adapter_never_shows_the_secret_key() {
    let config = config_for("https://star19extapi.bizconcier-dm.com");
    assert!(!format!("{config:?}").contains(SECRET_KEY));
    let adapter = BcdmAdapter::new(config).unwrap();
    assert!(!format!("{adapter:?}").contains(SECRET_KEY));
}

#[tokio::test]
async fn a_command_answered_429_with_a_huge_retry_after_counts_as_one_hour() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            error_body(429, "rate_limited", "slow down")
                .insert_header("Retry-After", "18446744073709551615"),
        )
        .mount(&server)
        .await;
    let err = adapter(&server)
        .execute(MdmCommand::Lock, &a_device("d1"))
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
}

#[tokio::test]
async fn a_command_redirected_to_another_port_is_not_sent_there_and_names_the_location() {
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"request_id": "r-1"})))
        .mount(&elsewhere)
        .await;
    let location = format!("{}/api/v1/devices/d1/actions", elsewhere.uri());
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(307).insert_header("Location", location.as_str()))
        .mount(&server)
        .await;
    let err = adapter(&server)
        .execute(MdmCommand::EnterpriseWipe, &a_device("d1"))
        .await
        .unwrap_err();
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the signed command went to another origin"
    );
    assert_eq!(err.class(), "redirected", "{err:?}");
    assert!(err.to_string().contains(&location), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_command_answered_502_or_504_is_no_answer() {
    for status in [502u16, 504] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(error_body(status, "bad_gateway", "upstream"))
            .mount(&server)
            .await;
        let err = adapter(&server)
            .execute(MdmCommand::Wipe, &a_device("d1"))
            .await
            .unwrap_err();
        assert_eq!(err.class(), "no_answer", "{status}: {err:?}");
        assert_eq!(received(&server).await.len(), 1, "sent once");
    }
}

#[tokio::test]
async fn an_answer_larger_than_64_mib_fails_the_call_and_a_command_is_not_counted_sent() {
    let size = 65 * 1024 * 1024;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(br#"{"request_id":"r-1","note":""#);
    body.resize(size - 2, b'a');
    body.extend_from_slice(br#""}"#);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let err = adapter(&server)
        .execute(MdmCommand::EnterpriseWipe, &a_device("d1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("64 MiB"), "{err}");
    assert_eq!(err.class(), "no_answer", "the MDM may have acted: {err:?}");
}

#[tokio::test]
async fn a_server_that_ignores_the_offset_ends_the_listing_with_an_error_saying_so() {
    let server = MockServer::start().await;
    // The same page whatever the offset, with a total that never comes.
    Mock::given(method("GET"))
        .and(path("/api/v1/devices"))
        .respond_with(devices_body(u64::MAX, vec![ios("d1"), ios("d2")]))
        .mount(&server)
        .await;
    let bcdm = adapter_with(&server, |c| c.page_size = 2);
    let listed = tokio::time::timeout(Duration::from_secs(10), async {
        bcdm.devices().try_collect::<Vec<_>>().await
    })
    .await
    .expect("the listing ends");
    let err = listed.unwrap_err();
    assert_eq!(err.class(), "listing", "{err:?}");
    assert!(err.to_string().contains("same page"), "{err}");
    assert_eq!(received(&server).await.len(), 2);
}

// ---- the risk signal -------------------------------------------------------

#[tokio::test]
async fn each_level_secured_included_is_a_signed_put_of_its_lower_case_name() {
    let server = MockServer::start().await;
    for level in SignalLevel::ALL {
        Mock::given(Signed)
            .and(method("PUT"))
            .and(path("/api/v1/devices/dev-9/risk"))
            .and(body_json(json!({ "level": level.as_lower() })))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
    }
    let bcdm = adapter(&server);
    for level in SignalLevel::ALL {
        // The name is BCDM's to ignore: one level per device.
        let receipt = bcdm
            .signal_risk(&a_device("dev-9"), level, "MTD_Threat_Level")
            .await
            .unwrap();
        assert_eq!(receipt.request, "PUT /api/v1/devices/dev-9/risk");
        let body = format!(r#"{{"level":"{}"}}"#, level.as_lower());
        assert_eq!(receipt.request_body.as_deref(), Some(body.as_str()));
        assert_eq!(receipt.status, 204);
        assert_eq!(receipt.response_body, None);
        assert_eq!(receipt.vendor_reference, None);
    }
    let requests = all_signed(&server).await;
    assert_eq!(requests.len(), 5);
    assert!(requests
        .iter()
        .all(|r| r.headers.get("content-type").unwrap() == "application/json"));
}

#[tokio::test]
async fn writing_the_same_level_twice_is_the_same_put_twice() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(204))
        .expect(2)
        .mount(&server)
        .await;
    let bcdm = adapter(&server);
    let first = bcdm
        .signal_risk(&a_device("d"), SignalLevel::High, "x")
        .await
        .unwrap();
    let second = bcdm
        .signal_risk(&a_device("d"), SignalLevel::High, "x")
        .await
        .unwrap();
    assert_eq!(first, second);
    let requests = all_signed(&server).await;
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test]
async fn only_a_204_counts_as_a_written_level() {
    for answer in [
        ResponseTemplate::new(200).set_body_raw(
            "<!DOCTYPE html><html><head><title>Sign in</title></head></html>",
            "text/html",
        ),
        ResponseTemplate::new(200),
        ResponseTemplate::new(202).set_body_json(json!({"request_id": "r-1"})),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let err = adapter(&server)
            .signal_risk(&a_device("d"), SignalLevel::Low, "x")
            .await
            .unwrap_err();
        assert_eq!(err.class(), "no_answer", "{err:?}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("204"), "{err}");
    }
}

#[tokio::test]
async fn a_level_write_maps_errors_as_every_request_does() {
    for (answer, class, retryable) in [
        (
            error_body(503, "service_unavailable", "down"),
            "unavailable",
            true,
        ),
        (
            error_body(500, "internal_error", "oops"),
            "unavailable",
            true,
        ),
        // A PUT of a value is safe to repeat: its lost answer is just unavailable.
        (ResponseTemplate::new(502), "unavailable", true),
        (
            error_body(429, "rate_limited", "slow down").insert_header("Retry-After", "4"),
            "rate_limited",
            true,
        ),
        (
            error_body(404, "not_found", "Device 'd' was not found."),
            "not_found",
            false,
        ),
        (error_body(400, "invalid_level", "bad"), "rejected", false),
        (error_body(401, "unauthorized", "no"), "unauthorized", false),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let err = adapter(&server)
            .signal_risk(&a_device("d"), SignalLevel::Low, "x")
            .await
            .unwrap_err();
        assert_eq!(err.class(), class, "{err:?}");
        assert_eq!(err.is_retryable(), retryable, "{err:?}");
        if class == "rate_limited" {
            assert_eq!(err.retry_after(), Some(Duration::from_secs(4)));
            assert_eq!(received(&server).await.len(), 1, "a write is not repeated");
        }
    }
}

#[tokio::test]
async fn the_level_is_read_back_from_the_listings_mtd_risk_level_at_no_cost() {
    let server = MockServer::start().await;
    let mut high = ios("d1");
    high["mtd_risk_level"] = json!("high");
    let mut secured = ios("d2");
    secured["mtd_risk_level"] = json!("secured");
    let mut never = ios("d3");
    never["mtd_risk_level"] = Value::Null;
    let mut odd = ios("d4");
    odd["mtd_risk_level"] = json!("orange");
    Mock::given(method("GET"))
        .and(path("/api/v1/devices"))
        .respond_with(devices_body(4, vec![high, secured, never, odd]))
        .mount(&server)
        .await;
    let bcdm = adapter(&server);
    assert_eq!(bcdm.risk_read_back(), Some(RiskReadBack::Listing));
    let devices: Vec<Device> = all_devices(&bcdm)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|p| p.items)
        .collect();
    let reported: Vec<Option<SignalLevel>> = devices.iter().map(|d| d.reported_risk).collect();
    assert_eq!(
        reported,
        vec![
            Some(SignalLevel::High),
            Some(SignalLevel::Secured),
            None,
            None
        ]
    );
    let before = received(&server).await.len();
    assert_eq!(
        bcdm.read_risk(&devices, "MTD_Threat_Level").await.unwrap(),
        reported
    );
    assert_eq!(received(&server).await.len(), before, "no request");
    assert!(bcdm
        .missing_risk_signal("MTD_Threat_Level")
        .await
        .unwrap()
        .is_empty());
}
