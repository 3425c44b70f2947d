//! SOTI's JSON as it comes over the wire, and its mapping to the shared model.
//!
//! Every field is optional and unknown fields (including the `$type` newer
//! servers add, and the many kind-specific extras) are ignored: the device
//! object is polymorphic, and a server upgrade must not break a sync. Records
//! are mapped one by one, so a single odd record is skipped and counted
//! instead of failing its page.

use chrono::{DateTime, NaiveDateTime, Utc};
use mtd_adapter::{
    normalize_imei, normalize_mac, normalize_serial, normalize_udid, Device, Group, Identifiers,
    Ownership, Platform, Posture, User,
};
use serde::Deserialize;

/// `DeviceBase` plus the kind-specific fields the connector reads
/// (`DeviceIos`, `DeviceAndroidPlus`, …).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireDevice {
    device_id: Option<String>,
    device_name: Option<String>,
    /// `DeviceKind` (`Ios`, `AndroidPlus`, …; real payloads also say `iOS`).
    kind: Option<String>,
    /// `DevicePlatform` (`iOS`, `AndroidPlus`, `WindowsTen`, …): a fallback for `Kind`.
    platform: Option<String>,
    /// `DeviceFamily` (`Apple`, `AndroidPlus`, …): the last fallback.
    family: Option<String>,
    model: Option<String>,
    #[serde(rename = "OSVersion")]
    os_version: Option<String>,
    path: Option<String>,
    #[serde(rename = "MACAddress")]
    mac_address: Option<String>,
    #[serde(rename = "WifiMAC")]
    wifi_mac: Option<String>,
    #[serde(rename = "IMEI_MEID_ESN")]
    imei_meid_esn: Option<String>,
    /// iOS (`DeviceIos` has no `HardwareSerialNumber`).
    manufacturer_serial_number: Option<String>,
    /// Android+ and most other kinds.
    hardware_serial_number: Option<String>,
    last_check_in_time: Option<String>,
    device_user_info: Option<WireUser>,
    // Posture. Read as raw JSON and parsed leniently (see [`flag`]): a `"true"`
    // where the spec says boolean must cost the field, never the record.
    /// `DeviceBase.ComplianceStatus` (boolean).
    compliance_status: Option<serde_json::Value>,
    /// `DeviceMode` (`Active`, `Disabled`, `UnenrollPendingUser`,
    /// `UnenrollPendingAdmin`, `UnenrolledByUser`, `UnenrolledByAdmin`).
    mode: Option<serde_json::Value>,
    /// iOS and Android kinds only.
    is_encrypted: Option<serde_json::Value>,
    /// iOS, Android and Windows kinds.
    passcode_enabled: Option<serde_json::Value>,
    /// iOS and Android kinds only; `false` means jailbroken or rooted.
    #[serde(rename = "IsOSSecure")]
    is_os_secure: Option<serde_json::Value>,
    manufacturer: Option<serde_json::Value>,
    phone_number: Option<serde_json::Value>,
}

/// `DeviceUser`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireUser {
    user_name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    #[serde(rename = "UPN")]
    upn: Option<String>,
}

/// `DeviceGroup` (`Name`, `Path`, `ReferenceId`, …).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireGroup {
    path: Option<String>,
}

/// The answer of `POST /api/token`.
#[derive(Debug, Deserialize)]
pub(crate) struct WireToken {
    pub access_token: Option<String>,
    /// Seconds; a number in practice, tolerated as a numeric string.
    pub expires_in: Option<serde_json::Value>,
}

/// SOTI's error object: `{"ErrorCode":n,"ErrorMessage":"…","Data":[…],"HelpLink":"…"}`
/// (400/422) or just `{"ErrorMessage":"…"}` (401/403/500).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireError {
    error_code: Option<serde_json::Value>,
    error_message: Option<String>,
}

/// What SOTI said in an error body: `ErrorCode n: message`, or `None` when the
/// body is not SOTI's error JSON (an HTML page, a proxy's text).
pub(crate) fn soti_error_message(body: &str) -> Option<String> {
    let e: WireError = serde_json::from_str(body).ok()?;
    let message = nonblank(e.error_message)?;
    Some(match e.error_code {
        Some(serde_json::Value::Number(n)) => format!("ErrorCode {n}: {message}"),
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
            format!("ErrorCode {}: {message}", s.trim())
        }
        _ => message,
    })
}

/// The record among `records` whose `Name` is `name`: spelled exactly so,
/// else the one that matches ignoring case (MobiControl's names are kept in
/// a case-insensitive database; two such records are ambiguous: none).
fn named<'a>(records: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    fn name_of(r: &serde_json::Value) -> Option<&str> {
        r.get("Name")
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
    }
    let name = name.trim();
    if let Some(exact) = records.iter().find(|r| name_of(r) == Some(name)) {
        return Some(exact);
    }
    let mut loose = records
        .iter()
        .filter(|r| name_of(r).is_some_and(|n| n.eq_ignore_ascii_case(name)));
    match (loose.next(), loose.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// Whether the custom attribute definitions (`GET /api/customattributes`,
/// the spec's `CustomAttribute`: `Name`, `CustomAttributeDataType`, …)
/// define `name`.
pub(crate) fn attribute_is_defined(definitions: &[serde_json::Value], name: &str) -> bool {
    named(definitions, name).is_some()
}

/// The value of `name` in a device's custom attributes
/// (`GET /api/devices/{id}/customAttributes`, the spec's
/// `CustomAttributeInfo`: `Name`, `Value`, `DataType`, `IsInherited`);
/// `None` when absent, `null` or blank.
pub(crate) fn attribute_value(attributes: &[serde_json::Value], name: &str) -> Option<String> {
    text(named(attributes, name)?.get("Value"))
}

/// Maps one record of a device listing or lookup; `Err` says why it was skipped.
pub(crate) fn map_device(raw: serde_json::Value) -> Result<Device, String> {
    let w: WireDevice =
        serde_json::from_value(raw).map_err(|e| format!("unreadable device record ({e})"))?;
    let mdm_device_id = w
        .device_id
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| "device record without a DeviceId".to_string())?;
    let platform = [&w.kind, &w.platform, &w.family]
        .into_iter()
        .flatten()
        .map(|s| Platform::from_vendor(s))
        .find(|p| *p != Platform::Other)
        .unwrap_or(Platform::Other);
    // iOS devices are keyed by their UDID at SOTI; no other kind's id is a UDID.
    let udid = (platform == Platform::Ios && looks_like_udid(&mdm_device_id))
        .then(|| normalize_udid(&mdm_device_id))
        .flatten();
    let serial = [&w.manufacturer_serial_number, &w.hardware_serial_number]
        .into_iter()
        .flatten()
        .find_map(|s| normalize_serial(s));
    let mac = [&w.mac_address, &w.wifi_mac]
        .into_iter()
        .flatten()
        .find_map(|s| normalize_mac(s));
    let posture = Posture {
        compliant: flag(w.compliance_status.as_ref()),
        enrolled: enrolled(w.mode.as_ref()),
        encrypted: flag(w.is_encrypted.as_ref()),
        passcode: flag(w.passcode_enabled.as_ref()),
        // SOTI says whether the OS is secure; the model asks the opposite.
        compromised: flag(w.is_os_secure.as_ref()).map(|secure| !secure),
        manufacturer: text(w.manufacturer.as_ref()),
        phone_number: text(w.phone_number.as_ref()),
    };
    Ok(Device {
        reported_risk: None,
        posture,
        identifiers: Identifiers {
            udid,
            serial,
            imei: w.imei_meid_esn.as_deref().and_then(normalize_imei),
            mac,
        },
        name: nonblank(w.device_name),
        platform,
        model: nonblank(w.model),
        os_version: nonblank(w.os_version),
        // SOTI's device objects carry no ownership (see the crate docs).
        ownership: Ownership::Unknown,
        user: w.device_user_info.and_then(map_user),
        groups: nonblank(w.path).into_iter().collect(),
        last_checkin_at: w.last_check_in_time.as_deref().and_then(parse_time),
        mdm_device_id,
    })
}

/// A device's user; `None` when SOTI knows no name for them (an all-null
/// `DeviceUserInfo` is common on devices nobody is assigned to).
fn map_user(u: WireUser) -> Option<User> {
    let username = nonblank(u.user_name);
    let email = nonblank(u.email);
    let upn = nonblank(u.upn);
    let mdm_user_id = username
        .clone()
        .or_else(|| upn.clone())
        .or_else(|| email.clone())?;
    Some(User {
        mdm_user_id,
        username: username.or(upn),
        email,
        first_name: nonblank(u.first_name),
        last_name: nonblank(u.last_name),
    })
}

/// Maps one device group; groups are keyed by their path, as devices name them.
pub(crate) fn map_group(raw: serde_json::Value) -> Result<Group, String> {
    let w: WireGroup =
        serde_json::from_value(raw).map_err(|e| format!("unreadable device group ({e})"))?;
    let path = nonblank(w.path).ok_or_else(|| "device group without a Path".to_string())?;
    Ok(Group {
        mdm_group_id: path.clone(),
        name: path,
    })
}

/// Apple's UDIDs: 40 hex digits, or the newer `00008030-001A…` (8 + 16 hex).
pub(crate) fn looks_like_udid(s: &str) -> bool {
    let s = s.trim();
    let hex = |p: &str| p.chars().all(|c| c.is_ascii_hexdigit());
    match s.split_once('-') {
        None => s.len() == 40 && hex(s),
        Some((a, b)) => a.len() == 8 && b.len() == 16 && hex(a) && hex(b),
    }
}

/// `LastCheckInTime`, with or without a zone (no zone means UTC, as SOTI's
/// server stores it); `None` when unreadable: a bad timestamp loses no device.
pub(crate) fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .map(|t| t.and_utc())
}

/// A boolean as SOTI sends it (`true`), or as text (`"True"`, `"false"`,
/// `"1"`, `"0"`) or 0/1 from a proxy that rewrote it; anything else
/// (`null`, `""`, an unknown word) is `None`: not said.
fn flag(raw: Option<&serde_json::Value>) -> Option<bool> {
    match raw? {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `Mode`: `Active` is enrolled; every other mode (`Disabled`, the
/// `UnenrollPending…` and `Unenrolled…` modes, and any newer one) means the
/// device is not, or no longer, actively managed. Absent, blank or not a
/// string (an enum's number, whose order the spec does not fix): `None`.
fn enrolled(raw: Option<&serde_json::Value>) -> Option<bool> {
    let serde_json::Value::String(mode) = raw? else {
        return None;
    };
    let mode = mode.trim();
    (!mode.is_empty()).then(|| mode.eq_ignore_ascii_case("Active"))
}

/// A text field, trimmed; a number is its decimal text; blank is `None`.
fn text(raw: Option<&serde_json::Value>) -> Option<String> {
    match raw? {
        serde_json::Value::String(s) => nonblank(Some(s.clone())),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn nonblank(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn an_ios_device_maps_with_its_udid_and_manufacturer_serial() {
        let d = map_device(json!({
            "$type": "DeviceIos",
            "DeviceId": "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
            "Kind": "iOS",
            "DeviceName": "Ana's iPhone",
            "Model": "iPhone 15",
            "OSVersion": "17.4",
            "Path": "\\\\Company\\Sales",
            "MACAddress": "a4:67:06:0c:15:3d",
            "IMEI_MEID_ESN": "35 209900 176148 1",
            "ManufacturerSerialNumber": "f17xk0abcd",
            "LastCheckInTime": "2024-05-01T10:20:30Z",
            "DeviceUserInfo": {"UserName": "ana", "Email": "ana@example.com", "FirstName": "Ana", "LastName": "Lima"},
            "SomethingNew": {"nested": true}
        }))
        .unwrap();
        assert_eq!(d.platform, Platform::Ios);
        assert_eq!(
            d.identifiers.udid.as_deref(),
            Some("0A1B2C3D4E5F60718293A4B5C6D7E8F901234567")
        );
        assert_eq!(d.identifiers.serial.as_deref(), Some("F17XK0ABCD"));
        assert_eq!(d.identifiers.mac.as_deref(), Some("a467060c153d"));
        assert_eq!(d.identifiers.imei.as_deref(), Some("352099001761481"));
        assert_eq!(d.groups, vec!["\\\\Company\\Sales".to_string()]);
        assert_eq!(d.user.as_ref().unwrap().mdm_user_id, "ana");
        assert_eq!(d.ownership, Ownership::Unknown);
        assert_eq!(
            d.last_checkin_at,
            Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 20, 30).unwrap())
        );
    }

    #[test]
    fn an_android_device_has_no_udid_and_its_serial_from_hardware_serial_number() {
        let d = map_device(json!({
            "DeviceId": "352099001761481",
            "Kind": "AndroidPlus",
            "MACAddress": "D087E278B54B",
            "HardwareSerialNumber": "R58M12345",
            "DeviceUserInfo": null
        }))
        .unwrap();
        assert_eq!(d.platform, Platform::Android);
        assert_eq!(d.identifiers.udid, None);
        assert_eq!(d.identifiers.serial.as_deref(), Some("R58M12345"));
        assert_eq!(d.identifiers.mac.as_deref(), Some("d087e278b54b"));
        assert_eq!(d.user, None);
    }

    #[test]
    fn a_user_is_keyed_by_user_name_then_upn_then_email_and_an_empty_one_is_none() {
        let u = |v| {
            map_device(json!({"DeviceId": "x", "DeviceUserInfo": v}))
                .unwrap()
                .user
        };
        assert_eq!(
            u(json!({"UPN": "bo@corp.example", "Email": "bo@example.com"}))
                .unwrap()
                .mdm_user_id,
            "bo@corp.example"
        );
        assert_eq!(
            u(json!({"Email": "cy@example.com"})).unwrap().mdm_user_id,
            "cy@example.com"
        );
        assert_eq!(
            u(json!({"UserName": null, "FirstName": "Di", "Email": " "})),
            None
        );
    }

    #[test]
    fn a_record_without_device_id_is_refused_with_a_reason() {
        assert!(map_device(json!({"Kind": "Ios"}))
            .unwrap_err()
            .contains("DeviceId"));
        assert!(map_device(json!({"DeviceId": "  "})).is_err());
        assert!(map_device(json!("not an object"))
            .unwrap_err()
            .contains("unreadable"));
    }

    #[test]
    fn check_in_times_parse_with_or_without_a_zone() {
        let want = Utc.with_ymd_and_hms(2024, 5, 1, 10, 20, 30).unwrap();
        assert_eq!(parse_time("2024-05-01T10:20:30"), Some(want));
        assert_eq!(parse_time("2024-05-01T12:20:30+02:00"), Some(want));
        assert_eq!(parse_time("2024-05-01 10:20:30.000"), Some(want));
        assert!(parse_time("2024-05-01T10:20:30.1234567").is_some());
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn udids_are_recognised_in_both_of_apples_forms() {
        assert!(looks_like_udid("0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"));
        assert!(looks_like_udid("00008030-001A2D3E4F5A6B7C"));
        assert!(!looks_like_udid("352099001761481"));
        assert!(!looks_like_udid("{0F4C1B2A-1111-2222-3333-444455556666}"));
    }

    #[test]
    fn posture_maps_from_the_spec_fields_and_is_os_secure_false_is_compromised() {
        let d = map_device(json!({
            "DeviceId": "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
            "Kind": "Ios",
            "Manufacturer": "Apple",
            "Model": "iPhone 15",
            "OSVersion": "17.4",
            "LastCheckInTime": "2024-05-01T10:20:30Z",
            "ComplianceStatus": false,
            "Mode": "Active",
            "IsEncrypted": true,
            "PasscodeEnabled": false,
            "IsOSSecure": false,
            "PhoneNumber": " +4915112345678 "
        }))
        .unwrap();
        assert_eq!(
            d.posture,
            Posture {
                compliant: Some(false),
                enrolled: Some(true),
                encrypted: Some(true),
                passcode: Some(false),
                compromised: Some(true),
                manufacturer: Some("Apple".into()),
                phone_number: Some("+4915112345678".into()),
            }
        );
        assert_eq!(d.model.as_deref(), Some("iPhone 15"));
        assert_eq!(d.os_version.as_deref(), Some("17.4"));
        assert!(d.last_checkin_at.is_some());
        let secure =
            map_device(json!({"DeviceId": "x", "IsOSSecure": true, "ComplianceStatus": true}))
                .unwrap()
                .posture;
        assert_eq!(
            (secure.compromised, secure.compliant),
            (Some(false), Some(true))
        );
    }

    #[test]
    fn every_mode_but_active_is_not_enrolled_and_a_missing_one_is_not_said() {
        let mode = |m: serde_json::Value| {
            map_device(json!({"DeviceId": "x", "Mode": m}))
                .unwrap()
                .posture
                .enrolled
        };
        assert_eq!(mode(json!("Active")), Some(true));
        assert_eq!(mode(json!(" active ")), Some(true));
        for other in [
            "Disabled",
            "UnenrollPendingUser",
            "UnenrollPendingAdmin",
            "UnenrolledByUser",
            "UnenrolledByAdmin",
            "Unenrolled",
        ] {
            assert_eq!(mode(json!(other)), Some(false), "{other}");
        }
        assert_eq!(mode(json!("")), None);
        assert_eq!(mode(json!(null)), None);
        assert_eq!(
            mode(json!(0)),
            None,
            "an enum number has no documented order"
        );
    }

    #[test]
    fn posture_is_read_leniently_and_unsaid_or_blank_values_are_none() {
        let d = map_device(json!({
            "DeviceId": "352099001761481",
            "Kind": "AndroidPlus",
            "ComplianceStatus": "True",
            "IsEncrypted": "false",
            "PasscodeEnabled": 1,
            "IsOSSecure": "0",
            "Manufacturer": "  ",
            "PhoneNumber": ""
        }))
        .unwrap();
        assert_eq!(d.posture.compliant, Some(true));
        assert_eq!(d.posture.encrypted, Some(false));
        assert_eq!(d.posture.passcode, Some(true));
        assert_eq!(d.posture.compromised, Some(true));
        assert_eq!(d.posture.manufacturer, None);
        assert_eq!(d.posture.phone_number, None);
        // A Windows device: the spec's DeviceWindows* have no IsEncrypted or IsOSSecure.
        let d = map_device(json!({
            "DeviceId": "{0F4C1B2A-1111-2222-3333-444455556666}",
            "Kind": "WindowsDesktop",
            "ComplianceStatus": null,
            "IsEncrypted": "maybe",
            "IsOSSecure": 7,
            "PasscodeEnabled": {"nested": true}
        }))
        .unwrap();
        assert_eq!(
            d.posture,
            Posture::default(),
            "a bad posture field never costs the record"
        );
    }

    #[test]
    fn custom_attributes_are_found_by_name_exactly_then_ignoring_case() {
        let values = vec![
            json!({"Name": "Owner", "Value": "ops", "DataType": "Text", "IsInherited": true}),
            json!({"Name": "mtd_threat_level", "Value": "High", "DataType": "Text", "IsInherited": false}),
            json!({"Name": "Blank", "Value": "  ", "DataType": "Text", "IsInherited": false}),
            json!({"Name": "Unset", "Value": null, "DataType": "Text", "IsInherited": false}),
        ];
        assert_eq!(
            attribute_value(&values, "MTD_Threat_Level").as_deref(),
            Some("High")
        );
        assert_eq!(attribute_value(&values, "Owner").as_deref(), Some("ops"));
        assert_eq!(attribute_value(&values, "Blank"), None);
        assert_eq!(attribute_value(&values, "Unset"), None);
        assert_eq!(attribute_value(&values, "Missing"), None);
        let two = vec![
            json!({"Name": "Level", "Value": "Low"}),
            json!({"Name": "LEVEL", "Value": "High"}),
        ];
        assert_eq!(attribute_value(&two, "Level").as_deref(), Some("Low"));
        assert_eq!(attribute_value(&two, "level"), None, "ambiguous");
        let definitions = vec![
            json!({"Name": "MTD_Threat_Level", "CustomAttributeDataType": "Text", "PropagateToDevice": false}),
        ];
        assert!(attribute_is_defined(&definitions, "MTD_Threat_Level"));
        assert!(attribute_is_defined(&definitions, "mtd_threat_level"));
        assert!(!attribute_is_defined(&definitions, "MTD_Risk"));
        assert!(!attribute_is_defined(&[], "MTD_Threat_Level"));
    }

    #[test]
    fn soti_error_json_keeps_code_and_message() {
        assert_eq!(
            soti_error_message(r#"{"ErrorCode":4001,"ErrorMessage":"Device not found","Data":[]}"#)
                .as_deref(),
            Some("ErrorCode 4001: Device not found")
        );
        assert_eq!(
            soti_error_message(r#"{"ErrorMessage":"Internal Server Error"}"#).as_deref(),
            Some("Internal Server Error")
        );
        assert_eq!(soti_error_message("<html></html>"), None);
    }
}
