//! The real MaaS360 adapter against the MaaS360 simulator over loopback: the
//! posture of every seeded device, listed and looked up, compared with the
//! raw JSON the simulator serves. The simulator is an independent reading of
//! `MDM-APIS.md`, so a misread field name shows here as a wrong posture.
//! Port 0 everywhere; nothing sleeps waiting for a server.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{NaiveDateTime, TimeZone, Utc};
use futures::TryStreamExt as _;
use mtd_adapter::{
    http::HttpSettings, AdapterError, Device, DeviceIdentifier, MdmAdapter, Posture, RiskReadBack,
    Secret, SignalLevel,
};
use mtd_adapter_maas360::{Maas360Adapter, Maas360Config, Maas360Credentials};
use mtd_sim::{
    maas360::{
        DEFAULT_APP_ACCESS_KEY, DEFAULT_APP_ID, DEFAULT_APP_VERSION, DEFAULT_BILLING_ID,
        DEFAULT_PASSWORD, DEFAULT_PLATFORM_ID, DEFAULT_USERNAME,
    },
    Fault, Maas360Options, Maas360State, SimKind, SimOptions, Simulator,
};
use serde_json::Value;
use tokio::net::TcpListener;
use url::Url;

/// A simulator without its rate limit: these tests count mappings, not
/// requests, and the lookups come in quick succession.
async fn start(devices: usize, seed: u64) -> (Simulator, Arc<Maas360State>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = SimOptions::new(vec![SimKind::Maas360], devices, seed);
    options.maas360 = Maas360Options {
        rate_limit_per_second: 0,
        ..Maas360Options::default()
    };
    let sim = Simulator::start(listener, options).unwrap();
    let state = sim.maas360().unwrap();
    (sim, state)
}

fn adapter(sim: &Simulator) -> Maas360Adapter {
    let mut config = Maas360Config::new(
        "maas360-sim",
        Url::parse(&sim.base_url(SimKind::Maas360)).unwrap(),
        Maas360Credentials {
            billing_id: DEFAULT_BILLING_ID.into(),
            app_id: DEFAULT_APP_ID.into(),
            app_version: DEFAULT_APP_VERSION.into(),
            platform_id: DEFAULT_PLATFORM_ID.into(),
            app_access_key: Secret::new(DEFAULT_APP_ACCESS_KEY),
            username: DEFAULT_USERNAME.into(),
            password: Secret::new(DEFAULT_PASSWORD),
        },
    );
    config.http = HttpSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        ca_cert_pem: None,
    };
    Maas360Adapter::new(config).unwrap()
}

/// A field that may be a string or a number, as text; `""` is none.
fn text(raw: &Value, field: &str) -> Option<String> {
    match &raw[field] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The posture a served device should map to, by this test's own reading
/// of MDM-APIS.md and `specs/maas360.md`.
fn expected_posture(raw: &Value) -> Posture {
    let word = |field: &str, yes: &[&str], no: &[&str]| {
        let value = text(raw, field)?;
        if yes.contains(&value.as_str()) {
            Some(true)
        } else if no.contains(&value.as_str()) {
            Some(false)
        } else {
            panic!("the simulator served {field} {value:?}, which this test does not know")
        }
    };
    Posture {
        compliant: word(
            "policyComplianceState",
            &["In Compliance"],
            &["Out of Compliance"],
        ),
        enrolled: word(
            "maas360ManagedStatus",
            &["Enrolled", "Activated"],
            &["Control Removed", "Pending Control Removed", "Not Enrolled"],
        ),
        encrypted: word(
            "encryptionStatus",
            &["Encryption Complete"],
            &["Not Encrypted"],
        ),
        passcode: word("passcodeCompliance", &["Compliant"], &["Not Compliant"]),
        compromised: word("jailbreakStatus", &["Yes"], &["No"]),
        manufacturer: text(raw, "manufacturer"),
        phone_number: text(raw, "phoneNumber"),
    }
}

fn assert_state_fields(d: &Device, raw: &Value) {
    assert_eq!(d.posture, expected_posture(raw), "{raw}");
    assert_eq!(d.model, text(raw, "model"));
    assert_eq!(d.os_version, text(raw, "osVersion"));
    let last =
        NaiveDateTime::parse_from_str(raw["lastReported"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S")
            .unwrap();
    assert_eq!(d.last_checkin_at, Some(Utc.from_utc_datetime(&last)));
}

fn id_of(raw: &Value) -> String {
    text(raw, "maas360DeviceID").unwrap()
}

#[tokio::test]
async fn the_listing_maps_every_served_posture_field_of_every_device() {
    let (sim, state) = start(1000, 21).await;
    let served: HashMap<String, Value> = state
        .devices()
        .into_iter()
        .map(|d| (id_of(&d), d))
        .collect();
    let pages: Vec<_> = adapter(&sim).devices().try_collect().await.unwrap();
    let devices: Vec<Device> = pages.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(devices.len(), 1000);
    for d in &devices {
        assert_state_fields(d, &served[&d.mdm_device_id]);
    }
    let count = |f: &dyn Fn(&Posture) -> bool| devices.iter().filter(|d| f(&d.posture)).count();
    assert!(count(&|p| p.compliant == Some(false)) > 0);
    assert!(count(&|p| p.enrolled == Some(false)) > 0);
    assert!(count(&|p| p.encrypted == Some(false)) > 0);
    assert!(count(&|p| p.passcode == Some(false)) > 0);
    assert!(
        count(&|p| p.passcode.is_none()) > 0,
        "a blank passcodeCompliance"
    );
    assert!(count(&|p| p.compromised == Some(true)) > 0);
    assert!(count(&|p| p.compromised == Some(true) && p.compliant == Some(true)) == 0);
    assert!(count(&|p| p.phone_number.is_none()) > 0);
    assert!(
        count(&|p| p
            .phone_number
            .as_deref()
            .is_some_and(|n| !n.starts_with('+')))
            > 0,
        "a number served as a JSON number maps to its digits"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lookup_maps_the_served_posture_of_a_sample_of_devices() {
    let (sim, state) = start(300, 22).await;
    let adapter = adapter(&sim);
    let devices = state.devices();
    let mut sample: Vec<&Value> = devices.iter().step_by(30).collect();
    for rare in [
        devices.iter().find(|d| d["jailbreakStatus"] == "Yes"),
        devices
            .iter()
            .find(|d| d["maas360ManagedStatus"] == "Control Removed"),
        devices
            .iter()
            .find(|d| d["encryptionStatus"] == "Not Encrypted"),
        devices.iter().find(|d| d["passcodeCompliance"] == ""),
        devices.iter().find(|d| d["phoneNumber"].is_u64()),
    ] {
        sample.push(rare.expect("the seed has one"));
    }
    for raw in sample {
        let by_id = DeviceIdentifier::mdm_device_id(&id_of(raw)).unwrap();
        let found = adapter.lookup_device(&by_id).await.unwrap().unwrap();
        assert_state_fields(&found, raw);
        let by_mac = DeviceIdentifier::mac(raw["wifiMacAddress"].as_str().unwrap()).unwrap();
        let found = adapter.lookup_device(&by_mac).await.unwrap().unwrap();
        assert_eq!(found.mdm_device_id, id_of(raw));
        assert_state_fields(&found, raw);
    }
    sim.shutdown().await;
}

// ------------------------------------------------------------ risk signal

const RISK: &str = "MTD_Threat_Level";

async fn listed(adapter: &Maas360Adapter) -> Vec<Device> {
    let pages: Vec<_> = adapter.devices().try_collect().await.unwrap();
    pages.into_iter().flat_map(|p| p.items).collect()
}

#[tokio::test]
async fn each_level_written_through_the_adapter_is_stored_and_read_back_through_it() {
    let (sim, state) = start(3, 4).await;
    let a = adapter(&sim);
    let devices = listed(&a).await;
    assert_eq!(a.risk_read_back(), Some(RiskReadBack::PerDevice));
    assert_eq!(a.read_risk(&devices, RISK).await.unwrap(), vec![None; 3]);
    let target = &devices[2];
    for level in SignalLevel::ALL {
        let receipt = a.signal_risk(target, level, RISK).await.unwrap();
        assert!(receipt.vendor_reference.is_some());
        assert_eq!(
            state
                .custom_attribute(&target.mdm_device_id, RISK)
                .as_deref(),
            Some(level.as_vendor())
        );
        assert_eq!(
            a.read_risk(&devices, RISK).await.unwrap(),
            vec![None, None, Some(level)]
        );
    }
    a.signal_risk(target, SignalLevel::Critical, RISK)
        .await
        .unwrap();
    let writes: Vec<String> = state
        .core()
        .actions()
        .into_iter()
        .filter(|w| w.device_id.as_deref() == Some(target.mdm_device_id.as_str()))
        .map(|w| w.action)
        .collect();
    assert_eq!(writes.len(), 6);
    assert_eq!(writes[3], "SetCustomAttribute:MTD_Threat_Level=High");
    assert!(state.action_results().iter().all(|r| r.action_status == 0));
    // A second attribute on the device turns the identity's one object into a list.
    state.define_custom_attribute("Office").unwrap();
    state
        .set_custom_attribute_value(&target.mdm_device_id, "Office", Some("Berlin"))
        .unwrap();
    assert_eq!(
        a.read_risk(&devices[2..], RISK).await.unwrap(),
        vec![Some(SignalLevel::Critical)]
    );
}

#[tokio::test]
async fn a_value_changed_behind_the_connectors_back_is_what_it_reads_back() {
    let (sim, state) = start(2, 4).await;
    let a = adapter(&sim);
    let devices = listed(&a).await;
    a.signal_risk(&devices[0], SignalLevel::Critical, RISK)
        .await
        .unwrap();
    state
        .set_custom_attribute_value(&devices[0].mdm_device_id, RISK, Some("Medium"))
        .unwrap();
    state
        .set_custom_attribute_value(&devices[1].mdm_device_id, RISK, Some("none"))
        .unwrap();
    assert_eq!(
        a.read_risk(&devices, RISK).await.unwrap(),
        vec![Some(SignalLevel::Medium), None]
    );
    // A device removed from MaaS360 holds nothing (its identity is a 400).
    state.remove_device(&devices[0].mdm_device_id).unwrap();
    assert_eq!(a.read_risk(&devices[..1], RISK).await.unwrap(), vec![None]);
}

#[tokio::test]
async fn a_missing_attribute_is_refused_naming_it_and_cannot_be_reported_ahead() {
    let (sim, state) = start(1, 4).await;
    let a = adapter(&sim);
    let devices = listed(&a).await;
    assert!(state.remove_custom_attribute(RISK));
    assert!(
        a.missing_risk_signal(RISK).await.unwrap().is_empty(),
        "no MaaS360 call lists the definitions"
    );
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
    state.define_custom_attribute(RISK).unwrap();
    a.signal_risk(&devices[0], SignalLevel::High, RISK)
        .await
        .unwrap();
}

#[tokio::test]
async fn faults_on_a_risk_write_or_read_are_retryable_and_the_next_attempt_lands() {
    let (sim, state) = start(1, 4).await;
    let a = adapter(&sim);
    let devices = listed(&a).await;
    state
        .core()
        .inject(
            Fault::status(503)
                .times(1)
                .on_paths("/setCustomAttributeValue/"),
        )
        .unwrap();
    let err = a
        .signal_risk(&devices[0], SignalLevel::Low, RISK)
        .await
        .unwrap_err();
    assert_eq!(err.class(), "unavailable", "{err:?}");
    state
        .core()
        .inject(
            Fault::rate_limited(30)
                .times(1)
                .on_paths("/setCustomAttributeValue/"),
        )
        .unwrap();
    let err = a
        .signal_risk(&devices[0], SignalLevel::Low, RISK)
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)), "{err:?}");
    a.signal_risk(&devices[0], SignalLevel::Low, RISK)
        .await
        .unwrap();
    state
        .core()
        .inject(Fault::status(500).times(1).on_paths("/identity/"))
        .unwrap();
    assert!(a
        .read_risk(&devices, RISK)
        .await
        .unwrap_err()
        .is_retryable());
    assert_eq!(
        a.read_risk(&devices, RISK).await.unwrap(),
        vec![Some(SignalLevel::Low)]
    );
}
