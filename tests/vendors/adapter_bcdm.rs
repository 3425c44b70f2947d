//! The real BCDM adapter against the BCDM simulator over loopback: issue 5's
//! acceptance. The simulator binds port 0 and is ready when `start` returns;
//! nothing here sleeps waiting for it.
//!
//! The adapter paces itself at 10 requests a second (BCDM's limit), so
//! request counts are kept low: the 10,000-device listing runs once, at the
//! default page size the acceptance names; everything else uses small data
//! sets or page size 200.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures::TryStreamExt;
use mtd_adapter::{
    normalize_mac, AdapterError, Device, DeviceIdentifier, MdmAdapter, MdmCommand, Page, Platform,
    Posture, RiskReadBack, Secret, SignalLevel,
};
use mtd_adapter_bcdm::{BcdmAdapter, BcdmConfig, BcdmCredentials};
use mtd_sim::{
    bcdm::{BcdmAction, BcdmDevice},
    BcdmState, Fault, SimKind, SimOptions, Simulator,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use url::Url;

const TENANT: &str = "acme";

async fn start(devices: usize, seed: u64) -> (Simulator, Arc<BcdmState>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(
        listener,
        SimOptions::new(vec![SimKind::Bcdm], devices, seed),
    )
    .unwrap();
    let state = sim.bcdm().unwrap();
    (sim, state)
}

fn config(sim: &Simulator) -> BcdmConfig {
    let url = Url::parse(&sim.base_url(SimKind::Bcdm)).unwrap();
    BcdmConfig::new(
        "sim-bcdm",
        TENANT,
        url,
        BcdmCredentials {
            access_key: "sim-access-key".into(),
            secret_key: Secret::new("sim-secret-key"),
            dm_code: "SIM-DM-001".into(),
        },
    )
}

fn adapter(sim: &Simulator, page_size: u32) -> BcdmAdapter {
    let mut config = config(sim);
    config.page_size = page_size;
    BcdmAdapter::new(config).unwrap()
}

/// No answer in the simulator's records was the rate limit's (or any) 429.
fn assert_no_429(state: &BcdmState) {
    let limited: Vec<_> = state
        .core()
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(429))
        .collect();
    assert!(limited.is_empty(), "429s received: {limited:?}");
}

async fn device(adapter: &BcdmAdapter, device_id: &str) -> Device {
    adapter
        .lookup_device(&DeviceIdentifier::MdmDeviceId(device_id.into()))
        .await
        .unwrap()
        .expect("the device exists")
}

#[tokio::test]
async fn a_full_sync_of_10000_devices_keeps_exactly_the_ios_ones_reports_the_rest_and_never_gets_429(
) {
    let (sim, state) = start(10_000, 42).await;
    let adapter = adapter(&sim, BcdmConfig::DEFAULT_PAGE_SIZE);
    let pages: Vec<Page<Device>> = adapter.devices().try_collect().await.unwrap();

    let all = state.devices();
    let ios: HashSet<String> = all
        .iter()
        .filter(|d| d.is_ios())
        .map(|d| d.device_id.clone())
        .collect();
    let others = all.len() - ios.len();
    assert!(
        others > 500,
        "the data set mixes platforms ({others} non-iOS)"
    );

    let kept: Vec<&Device> = pages.iter().flat_map(|p| &p.items).collect();
    let kept_ids: HashSet<String> = kept.iter().map(|d| d.mdm_device_id.clone()).collect();
    assert_eq!(kept.len(), kept_ids.len(), "no device twice");
    assert_eq!(kept_ids, ios);
    assert!(kept.iter().all(|d| d.platform == Platform::Ios));
    let skipped: u64 = pages.iter().map(|p| p.skipped).sum();
    assert_eq!(skipped as usize, others);
    assert!(pages
        .iter()
        .filter(|p| p.skipped > 0)
        .all(|p| p.skip_reason.as_deref().is_some_and(|r| r.contains("iOS"))));

    // The fields came through: identifiers in normal form, the user's id.
    let sample = all.iter().find(|d| d.is_ios() && d.imei.is_some()).unwrap();
    let mapped = kept
        .iter()
        .find(|d| d.mdm_device_id == sample.device_id)
        .unwrap();
    assert_eq!(
        mapped.identifiers.mac,
        normalize_mac(sample.wifi_mac.as_deref().unwrap())
    );
    assert_eq!(mapped.identifiers.imei, sample.imei);
    assert_eq!(
        mapped.user.as_ref().map(|u| u.mdm_user_id.clone()),
        sample.user_id
    );

    // 100 pages of 100, all answered, none refused by the rate limit.
    let requests = state.core().requests();
    assert_eq!(requests.len(), 100);
    assert!(requests.iter().all(|r| r.status == Some(200)));
    assert_no_429(&state);
    sim.shutdown().await;
}

#[tokio::test]
async fn users_without_an_email_get_the_tenant_placeholder_and_concurrent_listings_stay_under_the_limit(
) {
    let (sim, state) = start(2_000, 7).await;
    let adapter = adapter(&sim, BcdmConfig::MAX_PAGE_SIZE);
    // One adapter, two listings at once: the shared limiter paces both.
    let (users, devices) = tokio::join!(
        adapter.users().try_collect::<Vec<_>>(),
        adapter.devices().try_collect::<Vec<_>>()
    );
    let users: Vec<_> = users.unwrap().into_iter().flat_map(|p| p.items).collect();
    let devices: usize = devices.unwrap().iter().map(|p| p.items.len()).sum();
    assert_eq!(
        devices,
        state.devices().iter().filter(|d| d.is_ios()).count()
    );

    let expected = state.users();
    assert_eq!(users.len(), expected.len());
    let mut placeholders = 0;
    for (user, wire) in users.iter().zip(&expected) {
        assert_eq!(user.mdm_user_id, wire.user_id);
        assert_eq!(user.username.as_deref(), Some(wire.login_id.as_str()));
        match &wire.email {
            Some(email) => assert_eq!(user.email.as_deref(), Some(email.as_str())),
            None => {
                assert_eq!(user.email.as_deref(), Some("acme-user@qmpr.com"));
                placeholders += 1;
            }
        }
    }
    assert!(placeholders > 0, "the data set has users without an email");
    assert_no_429(&state);
    sim.shutdown().await;
}

/// The posture a served BCDM device should map to, from the raw JSON the
/// simulator serves: the booleans as they are (`null` = not said), no
/// enrolment flag, blank text = none.
fn expected_posture(raw: &Value) -> Posture {
    let text = |f: &str| raw[f].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
    Posture {
        compliant: raw["compliant"].as_bool(),
        enrolled: None,
        encrypted: raw["encrypted"].as_bool(),
        passcode: raw["passcode_enabled"].as_bool(),
        compromised: raw["jailbroken"].as_bool(),
        manufacturer: text("manufacturer"),
        phone_number: text("phone_number"),
    }
}

fn assert_state_fields(d: &Device, raw: &Value) {
    assert_eq!(d.posture, expected_posture(raw), "{raw}");
    assert_eq!(d.model.as_deref(), raw["model"].as_str());
    assert_eq!(d.os_version.as_deref(), raw["os_version"].as_str());
    let checkin = raw["last_checkin_at"]
        .as_str()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().into());
    assert_eq!(d.last_checkin_at, checkin);
}

/// The devices exactly as the simulator serves them, by id.
fn served(state: &BcdmState) -> HashMap<String, Value> {
    state
        .devices()
        .into_iter()
        .map(|d| (d.device_id.clone(), serde_json::to_value(d).unwrap()))
        .collect()
}

#[tokio::test]
async fn the_listing_maps_every_served_posture_field_of_every_ios_device() {
    let (sim, state) = start(1000, 21).await;
    let served = served(&state);
    let devices: Vec<Device> = adapter(&sim, 200)
        .devices()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|p| p.items)
        .collect();
    assert!(devices.len() > 750);
    for d in &devices {
        assert_state_fields(d, &served[&d.mdm_device_id]);
    }
    let count = |f: &dyn Fn(&Posture) -> bool| devices.iter().filter(|d| f(&d.posture)).count();
    assert!(count(&|p| p.compliant == Some(false)) > 0);
    assert!(count(&|p| p.passcode == Some(false)) > 0);
    assert!(count(&|p| p.passcode.is_none()) > 0, "null is not said");
    assert!(count(&|p| p.compromised == Some(true)) > 0);
    assert!(count(&|p| p.phone_number.is_none()) > 0);
    assert!(devices.iter().all(
        |d| d.posture.manufacturer.as_deref() == Some("Apple") && d.posture.enrolled.is_none()
    ));
    assert_no_429(&state);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lookup_maps_the_served_posture_of_a_sample_of_devices() {
    let (sim, state) = start(600, 22).await;
    let served = served(&state);
    let adapter = adapter(&sim, 100);
    let ios: Vec<BcdmDevice> = state.devices().into_iter().filter(|d| d.is_ios()).collect();
    let mut sample: Vec<&BcdmDevice> = ios.iter().step_by(60).collect();
    for rare in [
        ios.iter().find(|d| d.jailbroken == Some(true)),
        ios.iter().find(|d| d.passcode_enabled == Some(false)),
        ios.iter().find(|d| d.last_checkin_at.is_none()),
        ios.iter().find(|d| d.phone_number.is_none()),
    ] {
        sample.push(rare.expect("the seed has one"));
    }
    for d in sample {
        let raw = &served[&d.device_id];
        assert_state_fields(&device(&adapter, &d.device_id).await, raw);
        let by_serial = DeviceIdentifier::serial(d.serial_number.as_deref().unwrap()).unwrap();
        let found = adapter.lookup_device(&by_serial).await.unwrap().unwrap();
        assert_state_fields(&found, raw);
    }
    assert_no_429(&state);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_device_is_looked_up_by_each_identifier_and_by_its_id() {
    let (sim, state) = start(60, 3).await;
    let adapter = adapter(&sim, 200);
    let all = state.devices();
    let phone = all.iter().find(|d| d.is_ios() && d.imei.is_some()).unwrap();
    let hex: String = phone
        .wifi_mac
        .as_deref()
        .unwrap()
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let lookups = [
        (
            DeviceIdentifier::Udid(phone.udid.clone().unwrap().to_lowercase()),
            "udid=",
        ),
        (
            DeviceIdentifier::Serial(phone.serial_number.clone().unwrap().to_lowercase()),
            "serial_number=",
        ),
        (DeviceIdentifier::Imei(phone.imei.clone().unwrap()), "imei="),
        (DeviceIdentifier::Mac(hex.to_uppercase()), "wifi_mac="),
        (DeviceIdentifier::MdmDeviceId(phone.device_id.clone()), ""),
    ];
    for (id, query) in &lookups {
        let found = adapter
            .lookup_device(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id:?} not found"));
        assert_eq!(found.mdm_device_id, phone.device_id, "{id:?}");
        let request = state.core().requests().pop().unwrap();
        if query.is_empty() {
            assert_eq!(
                request.path,
                format!("/bcdm/api/v1/devices/{}", phone.device_id)
            );
        } else {
            assert!(
                request.path.starts_with("/bcdm/api/v1/devices?") && request.path.contains(query),
                "{}",
                request.path
            );
        }
        assert_eq!(request.status, Some(200));
    }
    // Unknown identifiers, and a device BCDM knows that is not iOS.
    let android = all.iter().find(|d| !d.is_ios()).unwrap();
    for id in [
        DeviceIdentifier::Udid("00008101-0000000000000001".into()),
        DeviceIdentifier::Mac("00:00:00:00:00:01".into()),
        DeviceIdentifier::MdmDeviceId("D999999999".into()),
        DeviceIdentifier::MdmDeviceId(android.device_id.clone()),
        DeviceIdentifier::Serial(android.serial_number.clone().unwrap()),
    ] {
        assert_eq!(adapter.lookup_device(&id).await.unwrap(), None, "{id:?}");
    }
    assert_no_429(&state);
    sim.shutdown().await;
}

#[tokio::test]
async fn each_action_arrives_as_the_exact_request_and_the_receipt_keeps_the_request_id() {
    let (sim, state) = start(10, 5).await;
    let adapter = adapter(&sim, 200);
    let target = state.devices().into_iter().find(|d| d.is_ios()).unwrap();
    let device = device(&adapter, &target.device_id).await;
    state.core().clear_records();

    let commands = [
        (MdmCommand::Lock, "lock"),
        (MdmCommand::DisconnectWifi, "disconnect_wifi"),
        (MdmCommand::EnterpriseWipe, "enterprise_wipe"),
        (MdmCommand::Wipe, "remote_wipe"),
    ];
    let path = format!("/bcdm/api/v1/devices/{}/actions", target.device_id);
    for (command, action) in commands {
        let receipt = adapter.execute(command, &device).await.unwrap();
        assert_eq!(receipt.status, 202);
        assert_eq!(receipt.request, format!("POST {path}"));
        let request = state.core().requests().pop().unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, path);
        let body: Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(body, json!({ "action": action }));
        assert_eq!(request.header("content-type"), Some("application/json"));
        for h in [
            "x-bcdm-access-key",
            "x-bcdm-dm-code",
            "x-bcdm-timestamp",
            "x-bcdm-signature",
        ] {
            assert!(request.header(h).is_some(), "{h} missing");
        }
        let accepted = state.accepted_actions().pop().unwrap();
        assert_eq!(accepted.action.as_str(), action);
        assert_eq!(
            receipt.vendor_reference.as_deref(),
            Some(accepted.request_id.as_str())
        );
    }
    assert_eq!(state.core().actions().len(), 4);

    // BCDM removes its own Wi-Fi profile: nothing is sent for a removal.
    assert!(adapter.removes_wifi_profile_itself());
    let err = adapter
        .execute(MdmCommand::RemoveWifiProfile, &device)
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Unsupported(_)), "{err:?}");
    assert_eq!(state.core().requests().len(), 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_forbidden_action_is_reported_as_not_permitted_and_not_retried() {
    let (sim, state) = start(10, 5).await;
    let adapter = adapter(&sim, 200);
    let target = state.devices().into_iter().find(|d| d.is_ios()).unwrap();
    let device = device(&adapter, &target.device_id).await;
    state.set_permit(BcdmAction::RemoteWipe, false);

    let err = adapter
        .execute(MdmCommand::Wipe, &device)
        .await
        .unwrap_err();
    match &err {
        AdapterError::ActionNotPermitted { setting, .. } => assert_eq!(setting, "Remote Wipe"),
        other => panic!("expected ActionNotPermitted, got {other:?}"),
    }
    assert!(!err.is_retryable());
    let actions = state.core().actions();
    assert_eq!(actions.len(), 1, "sent once, not retried");
    assert_eq!(actions[0].status, 403);
    assert_eq!(actions[0].action, "remote_wipe");
    assert!(state.accepted_actions().is_empty());

    // The other actions are still permitted.
    adapter.execute(MdmCommand::Lock, &device).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_credentials_and_a_skewed_clock_are_reported_as_such() {
    let (sim, state) = start(5, 1).await;
    assert!(adapter(&sim, 200).health_check().await.is_ok());

    let mut wrong_secret = config(&sim);
    wrong_secret.credentials.secret_key = Secret::new("not-the-secret");
    let err = BcdmAdapter::new(wrong_secret)
        .unwrap()
        .health_check()
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Unauthorized(_)), "{err:?}");

    let mut wrong_dm = config(&sim);
    wrong_dm.credentials.dm_code = "OTHER-DM".into();
    let err = BcdmAdapter::new(wrong_dm)
        .unwrap()
        .health_check()
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Forbidden(_)), "{err:?}");

    state.set_clock_skew(3600);
    let err = adapter(&sim, 200).health_check().await.unwrap_err();
    match err {
        AdapterError::Unauthorized(message) => assert!(message.contains("clock"), "{message}"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    sim.shutdown().await;
}

// ------------------------------------------------------------ risk level

/// The adapter's listing of three iOS devices generated for the test.
async fn three_ios(adapter: &BcdmAdapter, state: &BcdmState) -> Vec<Device> {
    let ids: Vec<String> = state
        .generate_devices(3, Some("iOS"))
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    let pages: Vec<Page<Device>> = adapter.devices().try_collect().await.unwrap();
    let listed: Vec<Device> = pages.into_iter().flat_map(|p| p.items).collect();
    ids.iter()
        .map(|id| {
            listed
                .iter()
                .find(|d| &d.mdm_device_id == id)
                .cloned()
                .expect("listed")
        })
        .collect()
}

#[tokio::test]
async fn each_level_written_through_the_adapter_comes_back_in_the_listing() {
    let (sim, state) = start(0, 6).await;
    let bcdm = adapter(&sim, 200);
    let devices = three_ios(&bcdm, &state).await;
    assert_eq!(bcdm.risk_read_back(), Some(RiskReadBack::Listing));
    assert!(devices.iter().all(|d| d.reported_risk.is_none()));
    for level in SignalLevel::ALL {
        let receipt = bcdm
            .signal_risk(&devices[1], level, "MTD_Threat_Level")
            .await
            .unwrap();
        assert_eq!(receipt.status, 204);
        assert_eq!(
            state.risk_level(&devices[1].mdm_device_id).as_deref(),
            Some(level.as_lower())
        );
        let listed = three_again(&bcdm, &devices).await;
        assert_eq!(
            listed.iter().map(|d| d.reported_risk).collect::<Vec<_>>(),
            vec![None, Some(level), None]
        );
        assert_eq!(
            bcdm.read_risk(&listed, "MTD_Threat_Level").await.unwrap(),
            vec![None, Some(level), None]
        );
        // The lookup says the same as the listing.
        assert_eq!(
            device(&bcdm, &devices[1].mdm_device_id).await.reported_risk,
            Some(level)
        );
    }
    let writes: Vec<String> = state
        .core()
        .actions()
        .into_iter()
        .filter(|w| w.device_id.as_deref() == Some(devices[1].mdm_device_id.as_str()))
        .map(|w| w.action)
        .collect();
    assert_eq!(
        writes,
        [
            "Risk:secured",
            "Risk:low",
            "Risk:medium",
            "Risk:high",
            "Risk:critical"
        ]
    );
    assert_no_429(&state);
}

/// The same devices, listed again.
async fn three_again(bcdm: &BcdmAdapter, devices: &[Device]) -> Vec<Device> {
    let pages: Vec<Page<Device>> = bcdm.devices().try_collect().await.unwrap();
    let listed: Vec<Device> = pages.into_iter().flat_map(|p| p.items).collect();
    devices
        .iter()
        .map(|d| {
            listed
                .iter()
                .find(|l| l.mdm_device_id == d.mdm_device_id)
                .cloned()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_level_changed_behind_the_connectors_back_is_what_the_listing_reports() {
    let (sim, state) = start(0, 6).await;
    let bcdm = adapter(&sim, 200);
    let devices = three_ios(&bcdm, &state).await;
    bcdm.signal_risk(&devices[0], SignalLevel::High, "MTD_Threat_Level")
        .await
        .unwrap();
    state
        .set_risk_level(&devices[0].mdm_device_id, Some("low"))
        .unwrap();
    state
        .set_risk_level(&devices[2].mdm_device_id, Some("orange"))
        .unwrap();
    let listed = three_again(&bcdm, &devices).await;
    assert_eq!(
        listed.iter().map(|d| d.reported_risk).collect::<Vec<_>>(),
        vec![Some(SignalLevel::Low), None, None]
    );
    assert!(bcdm
        .missing_risk_signal("MTD_Threat_Level")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn faults_on_a_risk_write_are_retryable_and_an_unknown_device_is_not_found() {
    let (sim, state) = start(0, 6).await;
    let bcdm = adapter(&sim, 200);
    let devices = three_ios(&bcdm, &state).await;
    state
        .core()
        .inject(Fault::status(503).times(1).on_paths("/risk"))
        .unwrap();
    let err = bcdm
        .signal_risk(&devices[0], SignalLevel::Medium, "x")
        .await
        .unwrap_err();
    assert_eq!(err.class(), "unavailable", "{err:?}");
    assert!(err.is_retryable());
    state
        .core()
        .inject(Fault::rate_limited(5).times(1).on_paths("/risk"))
        .unwrap();
    let err = bcdm
        .signal_risk(&devices[0], SignalLevel::Medium, "x")
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(5)));
    bcdm.signal_risk(&devices[0], SignalLevel::Medium, "x")
        .await
        .unwrap();
    assert_eq!(
        state.risk_level(&devices[0].mdm_device_id).as_deref(),
        Some("medium")
    );
    state.remove_device(&devices[1].mdm_device_id).unwrap();
    let err = bcdm
        .signal_risk(&devices[1], SignalLevel::Medium, "x")
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::NotFound(_)), "{err:?}");
}
