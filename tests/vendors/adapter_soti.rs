//! The real SOTI adapter against the SOTI simulator over loopback: listing,
//! lookups, actions, injected faults, and the agreement of both sides with the
//! requests captured from SOTI's Swagger spec
//! (`tests/fixtures/sim/soti-spec-facts.json` and
//! `adapters/soti/tests/fixtures/spec-requests.json`).
//!
//! Every simulator binds port 0 and is used as soon as `Simulator::start`
//! returns (the socket is bound by then): nothing sleeps waiting for a server.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use futures::TryStreamExt;
use mtd_adapter::{
    http::HttpSettings, normalize_imei, normalize_mac, normalize_serial, AdapterError, Device,
    DeviceIdentifier, MdmAdapter, MdmCommand, Platform, Posture, RiskReadBack, Secret, SignalLevel,
};
use mtd_adapter_soti::{SotiAdapter, SotiConfig, SotiCredentials};
use mtd_sim::{
    soti::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME},
    Fault, RecordedRequest, SimKind, SimOptions, Simulator, SotiState,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use url::Url;

const WIFI_PROFILE_ID: &str = "b5f6c0de-1c2d-4e3f-8a9b-0c1d2e3f4a5b";

/// SOTI's spec facts the simulator was written from.
fn spec_facts() -> Value {
    serde_json::from_str(include_str!("../fixtures/sim/soti-spec-facts.json")).unwrap()
}

/// The requests captured from SOTI's spec that the adapter crate checks.
fn spec_requests() -> Value {
    serde_json::from_str(include_str!(
        "../../adapters/soti/tests/fixtures/spec-requests.json"
    ))
    .unwrap()
}

async fn start_sim(devices: usize, seed: u64) -> Simulator {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(
        listener,
        SimOptions::new(vec![SimKind::Soti], devices, seed),
    )
    .unwrap()
}

fn config_for(base_url: &str, password: &str) -> SotiConfig {
    let mut c = SotiConfig::new(
        "soti-sim",
        Url::parse(base_url).unwrap(),
        SotiCredentials {
            client_id: DEFAULT_CLIENT_ID.into(),
            client_secret: Secret::new(DEFAULT_CLIENT_SECRET),
            username: DEFAULT_USERNAME.into(),
            password: Secret::new(password),
        },
    );
    c.http = HttpSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        ca_cert_pem: None,
    };
    c.wifi_disconnect_profile_id = Some(WIFI_PROFILE_ID.into());
    c
}

fn config(sim: &Simulator) -> SotiConfig {
    config_for(&sim.base_url(SimKind::Soti), DEFAULT_PASSWORD)
}

fn adapter(config: SotiConfig) -> SotiAdapter {
    SotiAdapter::new(config).unwrap()
}

fn state(sim: &Simulator) -> std::sync::Arc<SotiState> {
    sim.soti().expect("the SOTI simulator runs")
}

async fn list_all(adapter: &SotiAdapter) -> Result<Vec<Device>, AdapterError> {
    let pages: Vec<_> = adapter.devices().try_collect().await?;
    for page in &pages {
        assert_eq!(page.skipped, 0, "skipped records: {:?}", page.skip_reason);
    }
    Ok(pages.into_iter().flat_map(|p| p.items).collect())
}

fn str_field<'a>(device: &'a Value, name: &str) -> Option<&'a str> {
    device.get(name).and_then(Value::as_str)
}

fn device_id(device: &Value) -> &str {
    str_field(device, "DeviceId").expect("seeded devices have a DeviceId")
}

fn is_ios(device: &Value) -> bool {
    str_field(device, "Kind").is_some_and(|k| k.eq_ignore_ascii_case("ios"))
}

fn is_android(device: &Value) -> bool {
    str_field(device, "Kind").is_some_and(|k| k.eq_ignore_ascii_case("androidplus"))
}

fn token_requests(sim: &Simulator) -> Vec<RecordedRequest> {
    state(sim)
        .core()
        .requests()
        .into_iter()
        .filter(|r| r.path.to_ascii_lowercase().ends_with("/api/token"))
        .collect()
}

fn device_list_requests(sim: &Simulator) -> Vec<RecordedRequest> {
    state(sim)
        .core()
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/MobiControl/api/devices?"))
        .collect()
}

/// The highest request sequence number recorded so far (0 when none).
fn last_seq(sim: &Simulator) -> u64 {
    state(sim).core().requests().last().map_or(0, |r| r.seq)
}

/// Standard base64 (with padding), for the expected Basic header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ------------------------------------------------------------------ listing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_ten_thousand_seeded_devices_returns_exactly_the_seeded_set_mapped_as_documented() {
    let sim = start_sim(10_000, 42).await;
    let seeded = state(&sim).devices();
    assert_eq!(seeded.len(), 10_000);
    let adapter = adapter(config(&sim));

    let listed = list_all(&adapter).await.unwrap();

    // Exactly the seeded set, no duplicates.
    assert_eq!(listed.len(), seeded.len());
    let listed_ids: HashSet<&str> = listed.iter().map(|d| d.mdm_device_id.as_str()).collect();
    assert_eq!(listed_ids.len(), listed.len(), "duplicate devices listed");
    let seeded_ids: HashSet<&str> = seeded.iter().map(device_id).collect();
    assert_eq!(listed_ids, seeded_ids);

    // 10,000 is an exact multiple of the page size (500): 20 full pages, then
    // one empty page ends the listing.
    let take = SotiConfig::DEFAULT_PAGE_SIZE as usize;
    let paths: Vec<String> = device_list_requests(&sim)
        .into_iter()
        .map(|r| r.path)
        .collect();
    let expected: Vec<String> = (0..=10_000 / take)
        .map(|i| format!("/MobiControl/api/devices?skip={}&take={take}", i * take))
        .collect();
    assert_eq!(paths, expected);

    // Mapping, checked against every seeded record.
    let by_id: HashMap<&str, &Device> = listed
        .iter()
        .map(|d| (d.mdm_device_id.as_str(), d))
        .collect();
    let (mut ios, mut android, mut colon_macs, mut bare_macs, mut without_user) = (0, 0, 0, 0, 0);
    let mut kind_spellings = HashSet::new();
    for raw in &seeded {
        let id = device_id(raw);
        let d = by_id[id];
        let kind = str_field(raw, "Kind").unwrap();
        kind_spellings.insert(kind.to_owned());
        if is_ios(raw) {
            ios += 1;
            assert_eq!(d.platform, Platform::Ios, "{id} ({kind})");
            let serial = str_field(raw, "ManufacturerSerialNumber").unwrap();
            assert_eq!(d.identifiers.serial.as_deref(), Some(serial), "{id}");
            assert_eq!(
                d.identifiers.udid.as_deref(),
                Some(id.to_ascii_uppercase().as_str()),
                "an iOS DeviceId is its UDID"
            );
        } else {
            assert!(is_android(raw), "unexpected kind {kind}");
            android += 1;
            assert_eq!(d.platform, Platform::Android, "{id}");
            let serial = str_field(raw, "HardwareSerialNumber").unwrap();
            assert_eq!(d.identifiers.serial.as_deref(), Some(serial), "{id}");
            assert_eq!(d.identifiers.udid, None, "{id}");
        }
        let raw_mac = str_field(raw, "MACAddress").unwrap();
        if raw_mac.contains(':') {
            colon_macs += 1;
        } else {
            bare_macs += 1;
        }
        let mac = d
            .identifiers
            .mac
            .as_deref()
            .expect("every seeded device has a MAC");
        assert_eq!(mac.len(), 12, "{mac}");
        assert!(
            mac.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{mac} is not 12 lower-case hex digits"
        );
        assert_eq!(mac, raw_mac.replace(':', "").to_ascii_lowercase());
        assert_eq!(
            d.identifiers.imei,
            str_field(raw, "IMEI_MEID_ESN").and_then(normalize_imei),
            "{id}"
        );
        match raw.get("DeviceUserInfo") {
            None | Some(Value::Null) => {
                without_user += 1;
                assert_eq!(d.user, None, "{id} has no DeviceUserInfo");
            }
            Some(user) => {
                let u = d.user.as_ref().expect("a device with a user keeps it");
                assert_eq!(Some(u.mdm_user_id.as_str()), str_field(user, "UserName"));
                assert_eq!(u.email.as_deref(), str_field(user, "Email"));
            }
        }
        assert_eq!(
            d.groups,
            vec![str_field(raw, "Path").unwrap().to_owned()],
            "the group is the Path"
        );
        assert_eq!(d.name.as_deref(), str_field(raw, "DeviceName"));
    }
    // The data set really has the variety the checks above are about.
    assert!(ios > 0 && android > 0, "ios {ios}, android {android}");
    assert!(
        colon_macs > 0 && bare_macs > 0,
        "colon MACs {colon_macs}, bare MACs {bare_macs}"
    );
    assert!(without_user > 0, "no device without a user was seeded");
    assert!(
        kind_spellings.contains("Ios") && kind_spellings.contains("iOS"),
        "{kind_spellings:?}"
    );
    // One token for the whole listing.
    assert_eq!(token_requests(&sim).len(), 1);
}

#[tokio::test]
async fn a_listing_that_is_not_a_multiple_of_the_page_size_ends_at_its_short_page() {
    let sim = start_sim(250, 3).await;
    let mut c = config(&sim);
    c.page_size = 100;
    let listed = list_all(&adapter(c)).await.unwrap();
    assert_eq!(listed.len(), 250);
    let paths: Vec<String> = device_list_requests(&sim)
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        paths,
        [
            "/MobiControl/api/devices?skip=0&take=100",
            "/MobiControl/api/devices?skip=100&take=100",
            "/MobiControl/api/devices?skip=200&take=100",
        ]
    );
}

/// The posture a served SOTI device should map to, read from the raw JSON
/// by this test's own reading of the spec: booleans as they are, `Mode`
/// `Active` = enrolled, `IsOSSecure` false = compromised, blank text = none.
fn expected_posture(raw: &Value) -> Posture {
    let flag = |f: &str| raw.get(f).and_then(Value::as_bool);
    let text = |f: &str| {
        str_field(raw, f)
            .filter(|v| !v.trim().is_empty())
            .map(str::to_owned)
    };
    Posture {
        compliant: flag("ComplianceStatus"),
        enrolled: str_field(raw, "Mode").map(|m| m == "Active"),
        encrypted: flag("IsEncrypted"),
        passcode: flag("PasscodeEnabled"),
        compromised: flag("IsOSSecure").map(|secure| !secure),
        manufacturer: text("Manufacturer"),
        phone_number: text("PhoneNumber"),
    }
}

fn assert_state_fields(d: &Device, raw: &Value) {
    let id = device_id(raw);
    assert_eq!(d.posture, expected_posture(raw), "{id}: {raw}");
    assert_eq!(d.model.as_deref(), str_field(raw, "Model"), "{id}");
    assert_eq!(d.os_version.as_deref(), str_field(raw, "OSVersion"), "{id}");
    let checkin =
        chrono::DateTime::parse_from_rfc3339(str_field(raw, "LastCheckInTime").unwrap()).unwrap();
    assert_eq!(d.last_checkin_at, Some(checkin.into()), "{id}");
}

#[tokio::test]
async fn the_listing_maps_every_served_posture_field_of_every_device() {
    let sim = start_sim(1000, 21).await;
    let seeded = state(&sim).devices();
    let listed = list_all(&adapter(config(&sim))).await.unwrap();
    let by_id: HashMap<&str, &Device> = listed
        .iter()
        .map(|d| (d.mdm_device_id.as_str(), d))
        .collect();
    for raw in &seeded {
        assert_state_fields(by_id[device_id(raw)], raw);
    }
    // The mapped set shows each value, the unsaid ones included.
    let count = |f: &dyn Fn(&Posture) -> bool| listed.iter().filter(|d| f(&d.posture)).count();
    assert!(count(&|p| p.compliant == Some(false)) > 0);
    assert!(count(&|p| p.enrolled == Some(false)) > 0);
    assert!(count(&|p| p.encrypted == Some(false)) > 0);
    assert!(count(&|p| p.passcode == Some(false)) > 0);
    assert!(count(&|p| p.compromised == Some(true)) > 0);
    assert!(count(&|p| p.compromised == Some(true) && p.compliant == Some(true)) == 0);
    assert!(count(&|p| p.phone_number.is_some()) > 0);
    assert!(count(&|p| p.phone_number.is_none()) > 0);
    assert!(listed
        .iter()
        .filter(|d| d.platform == Platform::Ios)
        .all(|d| d.posture.manufacturer.as_deref() == Some("Apple")));
}

#[tokio::test]
async fn a_lookup_maps_the_served_posture_of_a_sample_of_devices() {
    let sim = start_sim(400, 22).await;
    let seeded = state(&sim).devices();
    let adapter = adapter(config(&sim));
    // Every 40th device, plus one of each value that is rare.
    let mut sample: Vec<&Value> = seeded.iter().step_by(40).collect();
    for rare in [
        seeded.iter().find(|d| d["IsOSSecure"] == false),
        seeded.iter().find(|d| d["Mode"] != "Active"),
        seeded.iter().find(|d| d["PhoneNumber"].is_null()),
        seeded.iter().find(|d| d["PhoneNumber"] == ""),
        seeded.iter().find(|d| d["IsEncrypted"] == false),
    ] {
        sample.push(rare.expect("the seed has one"));
    }
    for raw in sample {
        let id = DeviceIdentifier::mdm_device_id(device_id(raw)).unwrap();
        let found = adapter.lookup_device(&id).await.unwrap().unwrap();
        assert_state_fields(&found, raw);
    }
    // By IMEI (the search path) too.
    let android = seeded.iter().find(|d| is_android(d)).unwrap();
    let imei = DeviceIdentifier::imei(str_field(android, "IMEI_MEID_ESN").unwrap()).unwrap();
    let found = adapter.lookup_device(&imei).await.unwrap().unwrap();
    assert_state_fields(&found, android);
}

// ------------------------------------------------------------------ lookups

#[tokio::test]
async fn lookup_by_each_identifier_finds_the_right_device_and_an_unknown_one_is_none() {
    let sim = start_sim(300, 11).await;
    let seeded = state(&sim).devices();
    let adapter = adapter(config(&sim));

    let iphone = seeded
        .iter()
        .find(|d| is_ios(d) && str_field(d, "IMEI_MEID_ESN").is_some_and(|i| !i.is_empty()))
        .expect("an iPhone with an IMEI");
    let android = seeded.iter().find(|d| is_android(d)).expect("an Android");
    let colon_mac = seeded
        .iter()
        .find(|d| str_field(d, "MACAddress").unwrap().contains(':'))
        .unwrap();
    let bare_mac = seeded
        .iter()
        .find(|d| !str_field(d, "MACAddress").unwrap().contains(':'))
        .unwrap();

    let cases: Vec<(&str, DeviceIdentifier, &Value)> = vec![
        (
            "mdm_device_id of an iOS device",
            DeviceIdentifier::mdm_device_id(device_id(iphone)).unwrap(),
            iphone,
        ),
        (
            "mdm_device_id of an Android device",
            DeviceIdentifier::mdm_device_id(device_id(android)).unwrap(),
            android,
        ),
        (
            "udid of an iOS device",
            DeviceIdentifier::udid(device_id(iphone)).unwrap(),
            iphone,
        ),
        (
            "mac written with colons",
            DeviceIdentifier::mac(str_field(colon_mac, "MACAddress").unwrap()).unwrap(),
            colon_mac,
        ),
        (
            "mac written as bare upper-case hex",
            DeviceIdentifier::mac(str_field(bare_mac, "MACAddress").unwrap()).unwrap(),
            bare_mac,
        ),
        (
            "imei of an Android device",
            DeviceIdentifier::imei(str_field(android, "IMEI_MEID_ESN").unwrap()).unwrap(),
            android,
        ),
        (
            "imei of an iPhone",
            DeviceIdentifier::imei(str_field(iphone, "IMEI_MEID_ESN").unwrap()).unwrap(),
            iphone,
        ),
        (
            "serial of an iOS device (ManufacturerSerialNumber)",
            DeviceIdentifier::serial(str_field(iphone, "ManufacturerSerialNumber").unwrap())
                .unwrap(),
            iphone,
        ),
        (
            "serial of an Android device (HardwareSerialNumber)",
            DeviceIdentifier::serial(str_field(android, "HardwareSerialNumber").unwrap()).unwrap(),
            android,
        ),
    ];
    for (what, id, want) in cases {
        let found = adapter
            .lookup_device(&id)
            .await
            .unwrap_or_else(|e| panic!("lookup by {what}: {e}"))
            .unwrap_or_else(|| panic!("lookup by {what} ({id:?}) found nothing"));
        assert_eq!(found.mdm_device_id, device_id(want), "lookup by {what}");
    }
    // A serial given in lower case is normalised and still found.
    let lower = str_field(android, "HardwareSerialNumber")
        .unwrap()
        .to_ascii_lowercase();
    let found = adapter
        .lookup_device(&DeviceIdentifier::serial(&lower).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.mdm_device_id, device_id(android));

    // Unknown identifiers of every kind: Ok(None).
    let known_serials: HashSet<String> = seeded
        .iter()
        .flat_map(|d| {
            [
                str_field(d, "ManufacturerSerialNumber"),
                str_field(d, "HardwareSerialNumber"),
            ]
        })
        .flatten()
        .filter_map(normalize_serial)
        .collect();
    assert!(!known_serials.contains("ZZ0000000000"));
    let known_macs: HashSet<String> = seeded
        .iter()
        .filter_map(|d| str_field(d, "MACAddress").and_then(normalize_mac))
        .collect();
    assert!(!known_macs.contains("020000000001"));
    for id in [
        DeviceIdentifier::mdm_device_id("no-such-device").unwrap(),
        DeviceIdentifier::udid("0000000000000000000000000000000000000000").unwrap(),
        DeviceIdentifier::mac("02:00:00:00:00:01").unwrap(),
        DeviceIdentifier::imei("000000000000000").unwrap(),
        DeviceIdentifier::serial("ZZ0000000000").unwrap(),
    ] {
        let found = adapter
            .lookup_device(&id)
            .await
            .unwrap_or_else(|e| panic!("lookup of unknown {id:?}: {e}"));
        assert_eq!(found, None, "unknown {id:?}");
    }
}

// ------------------------------------------------------------------ actions

/// `"POST /devices/{deviceId}/actions"` of the spec facts, filled in, with the
/// spec's `basePath` (`/mobicontrol/api`).
fn spec_path(facts: &Value, key: &str, device_id: &str, profile_id: &str) -> (String, String) {
    let raw = facts["paths"][key].as_str().unwrap();
    let (method, path) = raw.split_once(' ').unwrap();
    let path = path
        .replace("{deviceId}", device_id)
        .replace("{profileId}", profile_id);
    (
        method.to_owned(),
        format!("{}{path}", facts["base_path"].as_str().unwrap()),
    )
}

/// Checks a device action body against the spec facts' definition of its
/// `Action`: every required property present, every enum value allowed.
fn assert_body_follows_spec_facts(facts: &Value, body: &Value) {
    let action = body["Action"].as_str().expect("an Action");
    let definition = &facts["actions"][action];
    assert!(definition.is_object(), "{action} is not a spec action");
    for name in definition["required"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            body.get(name).is_some_and(|v| !v.is_null()),
            "{action} lacks the required {name}: {body}"
        );
    }
    for (field, enum_name) in [
        ("ObliterationBehavior", "ObliterationBehavior"),
        ("SendBy", "DeliveryMethod"),
    ] {
        if let Some(value) = body.get(field) {
            let allowed = facts["enums"][enum_name].as_array().unwrap();
            assert!(
                allowed.contains(value),
                "{field} {value} not in {allowed:?}"
            );
        }
    }
}

#[tokio::test]
async fn each_action_arrives_at_the_simulator_as_the_vendor_correct_request() {
    let sim = start_sim(50, 5).await;
    let seeded = state(&sim).devices();
    let facts = spec_facts();
    let requests = spec_requests();
    let adapter = adapter(config(&sim));

    let android_id = device_id(seeded.iter().find(|d| is_android(d)).unwrap()).to_owned();
    let ios_id = device_id(seeded.iter().find(|d| is_ios(d)).unwrap()).to_owned();

    // (command, key in spec-requests.json `requests`, key in the facts' `paths`)
    let commands = [
        (MdmCommand::Lock, "lock", "device_action"),
        (
            MdmCommand::EnterpriseWipe,
            "enterprise_wipe",
            "device_action",
        ),
        (MdmCommand::Wipe, "wipe", "device_action"),
        (
            MdmCommand::DisconnectWifi,
            "profile_install",
            "profile_action",
        ),
        (
            MdmCommand::RemoveWifiProfile,
            "profile_revoke",
            "profile_action",
        ),
    ];
    for target in [&android_id, &ios_id] {
        let device = adapter
            .lookup_device(&DeviceIdentifier::mdm_device_id(target).unwrap())
            .await
            .unwrap()
            .unwrap();
        for (command, request_key, path_key) in commands {
            let before = last_seq(&sim);
            let receipt = adapter
                .execute(command, &device)
                .await
                .unwrap_or_else(|e| panic!("{command} on {target}: {e}"));
            let fixture = &requests["requests"][request_key];

            // What the simulator received.
            let sent: Vec<RecordedRequest> = state(&sim)
                .core()
                .requests()
                .into_iter()
                .filter(|r| r.seq > before && !r.path.ends_with("/api/token"))
                .collect();
            assert_eq!(sent.len(), 1, "{command}: one request, got {sent:#?}");
            let sent = &sent[0];
            let want_path = format!(
                "/MobiControl{}",
                fixture["path"]
                    .as_str()
                    .unwrap()
                    .replace("{deviceId}", target)
                    .replace("{profileId}", WIFI_PROFILE_ID)
            );
            assert_eq!(
                sent.method,
                fixture["method"].as_str().unwrap(),
                "{command}"
            );
            assert_eq!(sent.path, want_path, "{command}");
            // And the same against the spec's own base path and path template.
            let (spec_method, spec_path) = spec_path(&facts, path_key, target, WIFI_PROFILE_ID);
            assert_eq!(sent.method, spec_method, "{command}");
            assert!(
                sent.path.eq_ignore_ascii_case(&spec_path),
                "{command}: {} is not the spec's {spec_path}",
                sent.path
            );
            assert!(
                sent.header("content-type")
                    .is_some_and(|v| v.starts_with("application/json")),
                "{command}: content-type {:?}",
                sent.header("content-type")
            );
            assert!(
                sent.header("authorization")
                    .is_some_and(|v| v.starts_with("Bearer ")),
                "{command}: no bearer token"
            );
            let body: Value = serde_json::from_str(&sent.body)
                .unwrap_or_else(|e| panic!("{command}: body {:?} is not JSON: {e}", sent.body));
            assert_eq!(
                body, fixture["body"],
                "{command}: body differs from the spec fixture"
            );
            if path_key == "device_action" {
                assert_body_follows_spec_facts(&facts, &body);
            } else {
                let allowed = facts["enums"]["DeviceProfileAction"].as_array().unwrap();
                assert!(allowed.contains(&body), "{body} not in {allowed:?}");
                // A bare JSON string, byte for byte.
                assert_eq!(sent.body, fixture["body"].to_string(), "{command}");
            }

            // What the simulator made of it.
            let action = state(&sim)
                .core()
                .actions()
                .pop()
                .expect("an action record");
            assert_eq!(action.status, 204, "{command}: {action:?}");
            assert_eq!(action.device_id.as_deref(), Some(target.as_str()));
            assert_eq!(action.body, fixture["body"]);
            match path_key {
                "device_action" => {
                    assert_eq!(action.action, fixture["body"]["Action"].as_str().unwrap());
                    assert_eq!(action.profile_id, None);
                }
                _ => {
                    assert_eq!(action.action, fixture["body"].as_str().unwrap());
                    assert_eq!(action.profile_id.as_deref(), Some(WIFI_PROFILE_ID));
                }
            }

            // The receipt records what was sent and what came back.
            assert_eq!(receipt.status, 204);
            assert_eq!(receipt.request, format!("POST {want_path}"));
            assert_eq!(receipt.request_body.as_deref(), Some(sent.body.as_str()));
        }
    }
}

#[tokio::test]
async fn the_exact_lock_and_profile_install_bodies_equal_the_spec_capture_on_both_sides() {
    let sim = start_sim(10, 9).await;
    let soti = state(&sim);
    let requests = spec_requests();
    let facts = spec_facts();
    let target = device_id(&soti.devices()[0]).to_owned();

    // The adapter's side: what it sends is the captured request, exactly.
    let adapter = adapter(config(&sim));
    let device = adapter
        .lookup_device(&DeviceIdentifier::mdm_device_id(&target).unwrap())
        .await
        .unwrap()
        .unwrap();
    adapter.execute(MdmCommand::Lock, &device).await.unwrap();
    adapter
        .execute(MdmCommand::DisconnectWifi, &device)
        .await
        .unwrap();
    let posts: Vec<RecordedRequest> = soti
        .core()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && !r.path.ends_with("/api/token"))
        .collect();
    assert_eq!(posts.len(), 2);
    let lock: Value = serde_json::from_str(&posts[0].body).unwrap();
    assert_eq!(lock, requests["requests"]["lock"]["body"]);
    assert_eq!(
        lock,
        json!({"Action": "Lock", "AutogenerateNewPasscode": false})
    );
    assert_eq!(posts[1].body, r#""Install""#);
    assert_eq!(
        Value::String("Install".into()),
        requests["requests"]["profile_install"]["body"]
    );

    // The simulator's side: it accepts the captured requests and the spec's
    // examples, and refuses a body that lacks any required property.
    let http = reqwest::Client::new();
    let token = soti.issue_token();
    let base = sim.base_url(SimKind::Soti);
    let post = |path: String, body: String| {
        let http = http.clone();
        let token = token.clone();
        async move {
            http.post(path)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let action_url = format!("{base}/api/devices/{target}/actions");
    let profile_url = format!("{base}/api/devices/{target}/profiles/{WIFI_PROFILE_ID}/actions");
    for key in ["lock", "enterprise_wipe", "wipe"] {
        let body = requests["requests"][key]["body"].to_string();
        assert_eq!(
            post(action_url.clone(), body.clone()).await,
            204,
            "{key}: {body}"
        );
    }
    for key in ["profile_install", "profile_revoke"] {
        let body = requests["requests"][key]["body"].to_string();
        assert_eq!(
            post(profile_url.clone(), body.clone()).await,
            204,
            "{key}: {body}"
        );
    }
    for (name, definition) in facts["actions"].as_object().unwrap() {
        let example = &definition["example"];
        assert_eq!(
            post(action_url.clone(), example.to_string()).await,
            204,
            "the spec's {name} example"
        );
        for required in definition["required"].as_array().unwrap() {
            let required = required.as_str().unwrap();
            let mut body = example.clone();
            body.as_object_mut().unwrap().remove(required);
            assert_eq!(
                post(action_url.clone(), body.to_string()).await,
                400,
                "{name} without {required} must be refused: {body}"
            );
        }
    }
    // A Lock with a mistyped required field, and a profile body that is not
    // one of the two verbs, are refused too.
    assert_eq!(
        post(
            action_url.clone(),
            json!({"Action": "Lock", "AutogenerateNewPasscode": "false"}).to_string()
        )
        .await,
        400
    );
    assert_eq!(
        post(profile_url.clone(), r#""Uninstall""#.into()).await,
        400
    );
    assert_eq!(
        post(profile_url, r#"{"Action":"Install"}"#.into()).await,
        400
    );
}

#[tokio::test]
async fn the_token_request_is_the_documented_password_grant_with_a_basic_client_header() {
    let sim = start_sim(5, 1).await;
    let requests = spec_requests();
    let fact = &requests["token"];
    adapter(config(&sim)).health_check().await.unwrap();

    let tokens = token_requests(&sim);
    assert_eq!(tokens.len(), 1);
    let t = &tokens[0];
    assert_eq!(t.method, fact["method"].as_str().unwrap());
    assert_eq!(
        t.path,
        format!("/MobiControl{}", fact["path"].as_str().unwrap())
    );
    assert!(
        t.header("content-type")
            .is_some_and(|v| v.starts_with(fact["content_type"].as_str().unwrap())),
        "{:?}",
        t.header("content-type")
    );
    assert_eq!(
        t.header("authorization"),
        Some(
            format!(
                "Basic {}",
                base64(format!("{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}").as_bytes())
            )
            .as_str()
        )
    );
    let form: HashMap<String, String> = url::form_urlencoded::parse(t.body.as_bytes())
        .into_owned()
        .collect();
    let example: HashMap<String, String> =
        url::form_urlencoded::parse(fact["example_body"].as_str().unwrap().as_bytes())
            .into_owned()
            .collect();
    let keys = |m: &HashMap<String, String>| m.keys().cloned().collect::<HashSet<_>>();
    assert_eq!(keys(&form), keys(&example), "{}", t.body);
    assert_eq!(form["grant_type"], "password");
    assert_eq!(form["username"], DEFAULT_USERNAME);
    assert_eq!(form["password"], DEFAULT_PASSWORD);
}

// ------------------------------------------------------------------- faults

#[tokio::test]
async fn a_503_for_the_next_k_requests_is_unavailable_and_the_listing_succeeds_once_it_is_spent() {
    const K: usize = 3;
    let sim = start_sim(300, 21).await;
    let mut c = config(&sim);
    c.page_size = 100;
    let adapter = adapter(c);
    state(&sim)
        .core()
        .inject(Fault::status(503).times(K as u32))
        .unwrap();

    let mut failures = Vec::new();
    let listed = loop {
        match list_all(&adapter).await {
            Ok(devices) => break devices,
            Err(e) => {
                failures.push(e);
                assert!(failures.len() <= K, "still failing after {K} attempts");
            }
        }
    };
    assert_eq!(failures.len(), K, "{failures:?}");
    for e in &failures {
        assert_eq!(e.class(), "unavailable", "{e}");
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
    assert_eq!(listed.len(), 300);
    assert!(state(&sim).core().faults().is_empty());
    let faulted = state(&sim)
        .core()
        .requests()
        .iter()
        .filter(|r| r.fault.as_deref() == Some("status"))
        .count();
    assert_eq!(faulted, K);
}

#[tokio::test]
async fn a_429_with_retry_after_2_is_rate_limited_with_a_2_second_retry_after() {
    let sim = start_sim(20, 22).await;
    let adapter = adapter(config(&sim));
    state(&sim)
        .core()
        .inject(Fault::rate_limited(2).times(1))
        .unwrap();

    let e = adapter.health_check().await.unwrap_err();
    assert_eq!(e.class(), "rate_limited", "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    assert!(
        matches!(e, AdapterError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2))
    );
    assert!(e.is_retryable());
    // Spent: the next call goes through.
    assert_eq!(
        adapter.health_check().await.unwrap().devices_on_first_page,
        20
    );
}

#[tokio::test]
async fn latency_beyond_the_request_timeout_is_a_timeout() {
    let sim = start_sim(20, 23).await;
    let mut c = config(&sim);
    c.http.request_timeout = Duration::from_millis(300);
    let adapter = adapter(c);
    // Log in first so the latency hits an API call, not the token request.
    adapter.health_check().await.unwrap();
    state(&sim)
        .core()
        .inject(Fault::latency(Duration::from_secs(3)).times(1))
        .unwrap();

    let started = Instant::now();
    let e = adapter.health_check().await.unwrap_err();
    assert_eq!(e.class(), "timeout", "{e}");
    assert!(e.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the request waited {:?} for a 3 s answer",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_dropped_connection_is_a_retryable_unavailable_error() {
    let sim = start_sim(20, 24).await;
    let adapter = adapter(config(&sim));
    state(&sim)
        .core()
        .inject(Fault::drop_connection().times(1))
        .unwrap();

    let e = adapter.health_check().await.unwrap_err();
    // The request reached the server, which closed the connection without an
    // answer: the MDM is in trouble, not unreachable.
    assert_eq!(e.class(), "unavailable", "{e:?}");
    assert!(
        matches!(e, AdapterError::Unavailable { status: None, .. }),
        "{e:?}"
    );
    assert!(e.is_retryable());
    let dropped = state(&sim)
        .core()
        .requests()
        .into_iter()
        .filter(|r| r.fault.as_deref() == Some("drop"))
        .count();
    assert_eq!(dropped, 1);
    // Spent: the next call goes through on a new connection.
    assert_eq!(
        adapter.health_check().await.unwrap().devices_on_first_page,
        20
    );
}

#[tokio::test]
async fn tokens_expiring_mid_listing_make_the_adapter_log_in_again_and_the_listing_completes() {
    let sim = start_sim(1_000, 25).await;
    let mut c = config(&sim);
    c.page_size = 100;
    let adapter = adapter(c);

    let mut pages = adapter.devices();
    let mut listed: Vec<Device> = Vec::new();
    let first = pages.try_next().await.unwrap().expect("a first page");
    listed.extend(first.items);
    assert_eq!(token_requests(&sim).len(), 1);

    state(&sim).expire_tokens();
    while let Some(page) = pages.try_next().await.unwrap() {
        listed.extend(page.items);
    }
    drop(pages);

    let ids: HashSet<String> = listed.iter().map(|d| d.mdm_device_id.clone()).collect();
    assert_eq!(listed.len(), 1_000);
    assert_eq!(ids.len(), 1_000);
    let seeded: HashSet<String> = state(&sim)
        .devices()
        .iter()
        .map(|d| device_id(d).to_owned())
        .collect();
    assert_eq!(ids, seeded);

    let tokens = token_requests(&sim);
    assert_eq!(tokens.len(), 2, "{tokens:#?}");
    assert!(tokens.iter().all(|t| t.status == Some(200)));
    // Exactly one API call was refused, and it was repeated with the new token.
    let refused: Vec<RecordedRequest> = state(&sim)
        .core()
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(401))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let lists = device_list_requests(&sim);
    assert_eq!(
        lists.len(),
        11 + 1,
        "10 full pages, an empty one, one repeat"
    );
    let repeated = lists
        .iter()
        .filter(|r| r.path == refused[0].path)
        .collect::<Vec<_>>();
    assert_eq!(repeated.len(), 2);
    assert_eq!(repeated[1].status, Some(200));
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let sim = start_sim(30, 26).await;
    let adapter = adapter(config(&sim));
    let ids: Vec<String> = state(&sim)
        .devices()
        .iter()
        .take(8)
        .map(|d| device_id(d).to_owned())
        .collect();
    let found = futures::future::join_all(ids.iter().map(|id| {
        let adapter = &adapter;
        async move {
            adapter
                .lookup_device(&DeviceIdentifier::mdm_device_id(id).unwrap())
                .await
        }
    }))
    .await;
    for (id, result) in ids.iter().zip(found) {
        assert_eq!(result.unwrap().unwrap().mdm_device_id, *id);
    }
    assert_eq!(token_requests(&sim).len(), 1);
}

#[tokio::test]
async fn a_wrong_password_is_unauthorized() {
    let sim = start_sim(5, 27).await;
    let adapter = adapter(config_for(&sim.base_url(SimKind::Soti), "not-the-password"));
    let e = adapter.health_check().await.unwrap_err();
    assert_eq!(e.class(), "unauthorized", "{e}");
    assert!(e.is_auth());
    assert!(!e.is_retryable());
    assert!(!e.to_string().contains("not-the-password"), "{e}");
    // Nothing but the refused token request reached the server.
    let requests = state(&sim).core().requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].status, Some(400));

    // A wrong client secret is refused the same way.
    let mut c = config(&sim);
    c.credentials.client_secret = Secret::new("not-the-secret");
    let e = SotiAdapter::new(c)
        .unwrap()
        .health_check()
        .await
        .unwrap_err();
    assert_eq!(e.class(), "unauthorized", "{e}");
}

#[tokio::test]
async fn a_closed_port_is_cannot_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let adapter = adapter(config_for(
        &format!("http://{addr}/MobiControl"),
        DEFAULT_PASSWORD,
    ));
    let e = adapter.health_check().await.unwrap_err();
    assert_eq!(e.class(), "connect", "{e}");
    assert!(e.is_retryable());
}

// ------------------------------------------------------------------- health

#[tokio::test]
async fn health_check_against_the_simulator_returns_the_devices_on_the_first_page() {
    let sim = start_sim(120, 28).await;
    let report = adapter(config(&sim)).health_check().await.unwrap();
    assert_eq!(report.devices_on_first_page, 120);

    let mut c = config(&sim);
    c.page_size = 50;
    let report = adapter(c).health_check().await.unwrap();
    assert_eq!(report.devices_on_first_page, 50);
    let last = device_list_requests(&sim).pop().unwrap();
    assert_eq!(last.path, "/MobiControl/api/devices?skip=0&take=50");
    assert_eq!(last.status, Some(200));
}

// ------------------------------------------------------------ risk signal

const RISK: &str = "MTD_Threat_Level";

#[tokio::test]
async fn each_level_written_through_the_adapter_is_stored_and_read_back_through_it() {
    let sim = start_sim(4, 3).await;
    let a = adapter(config(&sim));
    let devices = list_all(&a).await.unwrap();
    assert_eq!(a.risk_read_back(), Some(RiskReadBack::PerDevice));
    assert_eq!(
        a.read_risk(&devices, RISK).await.unwrap(),
        vec![None; devices.len()],
        "nothing written yet"
    );
    let target = &devices[1];
    for level in SignalLevel::ALL {
        let receipt = a.signal_risk(target, level, RISK).await.unwrap();
        assert_eq!(receipt.status, 200);
        assert_eq!(
            state(&sim)
                .custom_attribute(&target.mdm_device_id, RISK)
                .as_deref(),
            Some(level.as_vendor())
        );
        let read = a.read_risk(&devices, RISK).await.unwrap();
        assert_eq!(read[1], Some(level), "{level:?}");
        assert!(read[0].is_none() && read[2].is_none() && read[3].is_none());
    }
    // The same level again changes nothing and is one more recorded write.
    a.signal_risk(target, SignalLevel::Critical, RISK)
        .await
        .unwrap();
    let writes: Vec<String> = state(&sim)
        .core()
        .actions()
        .into_iter()
        .filter(|w| w.device_id.as_deref() == Some(target.mdm_device_id.as_str()))
        .map(|w| {
            assert_eq!(w.status, 200);
            w.action
        })
        .collect();
    assert_eq!(
        writes,
        [
            "SetCustomAttribute:MTD_Threat_Level=Secured",
            "SetCustomAttribute:MTD_Threat_Level=Low",
            "SetCustomAttribute:MTD_Threat_Level=Medium",
            "SetCustomAttribute:MTD_Threat_Level=High",
            "SetCustomAttribute:MTD_Threat_Level=Critical",
            "SetCustomAttribute:MTD_Threat_Level=Critical",
        ]
    );
    // Each request as SOTI's spec shapes it.
    let put = state(&sim)
        .core()
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(
        put.path,
        format!(
            "/MobiControl/api/devices/{}/customAttributes",
            target.mdm_device_id
        )
    );
    let body: Value = serde_json::from_str(&put.body).unwrap();
    assert_eq!(
        body,
        json!({"Attributes": [{"AttributeName": RISK, "AttributeValue": "Critical"}]})
    );
    assert_eq!(
        spec_requests()["custom_attributes"]["put"]["path"],
        "/api/devices/{deviceId}/customAttributes"
    );
}

#[tokio::test]
async fn a_value_changed_behind_the_connectors_back_is_what_it_reads_back() {
    let sim = start_sim(3, 3).await;
    let a = adapter(config(&sim));
    let devices = list_all(&a).await.unwrap();
    a.signal_risk(&devices[0], SignalLevel::High, RISK)
        .await
        .unwrap();
    let s = state(&sim);
    s.set_custom_attribute(&devices[0].mdm_device_id, RISK, Some("Low"))
        .unwrap();
    s.set_custom_attribute(&devices[2].mdm_device_id, RISK, Some("not a level"))
        .unwrap();
    assert_eq!(
        a.read_risk(&devices, RISK).await.unwrap(),
        vec![Some(SignalLevel::Low), None, None]
    );
    s.set_custom_attribute(&devices[0].mdm_device_id, RISK, None)
        .unwrap();
    assert_eq!(a.read_risk(&devices[..1], RISK).await.unwrap(), vec![None]);
}

#[tokio::test]
async fn a_missing_attribute_is_reported_and_refused_until_it_is_defined_again() {
    let sim = start_sim(2, 3).await;
    let a = adapter(config(&sim));
    let devices = list_all(&a).await.unwrap();
    assert!(a.missing_risk_signal(RISK).await.unwrap().is_empty());
    let s = state(&sim);
    assert!(s.remove_custom_attribute(RISK));
    assert_eq!(a.missing_risk_signal(RISK).await.unwrap(), vec![RISK]);
    let err = a
        .signal_risk(&devices[0], SignalLevel::High, RISK)
        .await
        .unwrap_err();
    match &err {
        AdapterError::ActionNotPermitted { setting, .. } => {
            assert!(setting.contains("`MTD_Threat_Level`"), "{setting}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    // Renamed rather than removed: just as missing.
    s.define_custom_attribute(RISK, "Text", &[]).unwrap();
    s.rename_custom_attribute(RISK, "MTD_Risk").unwrap();
    assert_eq!(a.missing_risk_signal(RISK).await.unwrap(), vec![RISK]);
    assert!(a.missing_risk_signal("MTD_Risk").await.unwrap().is_empty());
    s.define_custom_attribute(RISK, "Text", &[]).unwrap();
    a.signal_risk(&devices[0], SignalLevel::High, RISK)
        .await
        .unwrap();
    assert_eq!(
        a.read_risk(&devices, RISK).await.unwrap(),
        vec![Some(SignalLevel::High), None]
    );
}

#[tokio::test]
async fn faults_on_a_risk_write_or_read_are_retryable_and_the_next_attempt_lands() {
    let sim = start_sim(2, 3).await;
    let a = adapter(config(&sim));
    let devices = list_all(&a).await.unwrap();
    let s = state(&sim);
    s.core()
        .inject(Fault::status(503).times(1).on_paths("/customAttributes"))
        .unwrap();
    let err = a
        .signal_risk(&devices[0], SignalLevel::Medium, RISK)
        .await
        .unwrap_err();
    assert_eq!(err.class(), "unavailable", "{err:?}");
    assert!(err.is_retryable());
    s.core()
        .inject(
            Fault::rate_limited(2)
                .times(1)
                .on_paths("/customAttributes"),
        )
        .unwrap();
    let err = a
        .signal_risk(&devices[0], SignalLevel::Medium, RISK)
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)), "{err:?}");
    assert_eq!(s.custom_attribute(&devices[0].mdm_device_id, RISK), None);
    a.signal_risk(&devices[0], SignalLevel::Medium, RISK)
        .await
        .unwrap();
    s.core()
        .inject(Fault::status(502).times(1).on_paths("/customAttributes"))
        .unwrap();
    let err = a.read_risk(&devices, RISK).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        a.read_risk(&devices, RISK).await.unwrap(),
        vec![Some(SignalLevel::Medium), None]
    );
}
