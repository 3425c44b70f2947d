//! BCDM's JSON as it comes off the wire, and its mapping into the shared model.
//!
//! The wire structs stay private: the rest of the connector only sees
//! [`Device`] and [`User`]. Unknown fields are ignored; ids are read whether
//! the server sends them as strings or numbers, since no published schema
//! fixes their type.

use chrono::{DateTime, NaiveDateTime, Utc};
use mtd_adapter::{
    normalize_imei, normalize_mac, normalize_serial, normalize_udid, Device, Identifiers,
    Ownership, Page, Platform, Posture, SignalLevel, User,
};
use serde::{Deserialize, Deserializer};

/// `{"total":N,"devices":[…]}`: a listing page, or a lookup (0 or 1 device).
#[derive(Debug, Deserialize)]
pub(crate) struct DevicesEnvelope {
    pub total: u64,
    #[serde(default)]
    pub devices: Vec<WireDevice>,
}

/// `{"total":N,"users":[…]}`.
#[derive(Debug, Deserialize)]
pub(crate) struct UsersEnvelope {
    pub total: u64,
    #[serde(default)]
    pub users: Vec<WireUser>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireDevice {
    #[serde(deserialize_with = "id")]
    pub device_id: String,
    #[serde(default)]
    pub udid: Option<String>,
    #[serde(default)]
    pub serial_number: Option<String>,
    #[serde(default)]
    pub imei: Option<String>,
    #[serde(default)]
    pub wifi_mac: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    pub user_id: Option<String>,
    #[serde(default)]
    pub ownership: Option<String>,
    #[serde(default)]
    pub last_checkin_at: Option<String>,
    // Posture. Read leniently (see [`flag`] and [`lenient_text`]): these
    // fields are our own design, not a published schema, and a value of an
    // unexpected type must cost that field, never the page.
    /// The MDM's compliance verdict (a boolean).
    #[serde(default, deserialize_with = "flag")]
    pub compliant: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    pub passcode_enabled: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    pub encrypted: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    pub jailbroken: Option<bool>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub manufacturer: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub phone_number: Option<String>,
    /// The risk level last written (`PUT …/risk`), `null` if never; read
    /// into [`Device::reported_risk`] (a value that is no level is `None`).
    #[serde(default, deserialize_with = "lenient_text")]
    pub mtd_risk_level: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireUser {
    #[serde(deserialize_with = "id")]
    pub user_id: String,
    #[serde(default)]
    pub login_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

/// `202 {"request_id":"…"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionAccepted {
    #[serde(default, deserialize_with = "opt_id")]
    pub request_id: Option<String>,
}

/// `{"error":"…","message":"…"}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Text(String),
    Number(serde_json::Number),
}

impl IdValue {
    fn into_string(self) -> String {
        match self {
            IdValue::Text(s) => s.trim().to_string(),
            IdValue::Number(n) => n.to_string(),
        }
    }
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    IdValue::deserialize(d).map(IdValue::into_string)
}

fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<IdValue>::deserialize(d)?
        .map(IdValue::into_string)
        .filter(|s| !s.is_empty()))
}

/// A boolean, or its text (`"true"`, `"False"`, `"1"`, `"0"`), or 0/1;
/// `null`, `""` and anything else are `None` (not said). Never an error.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Some(b),
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
    })
}

/// Text, trimmed (a number is its decimal text); blank, `null` and
/// anything else are `None`. Never an error.
fn lenient_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => non_empty(Some(s)),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The MAC form sent in `wifi_mac=` lookups: colon-separated lower case
/// (`a4:67:06:0c:15:3d`), the form iOS itself reports (`WiFiMAC`). The design
/// does not fix it; reading is lenient either way ([`normalize_mac`]).
pub(crate) fn mac_for_lookup(raw: &str) -> String {
    match normalize_mac(raw) {
        Some(hex12) => hex12
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).expect("normalised MACs are ASCII hex"))
            .collect::<Vec<_>>()
            .join(":"),
        None => raw.trim().to_ascii_lowercase(),
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// RFC 3339, or an ISO date-time without a zone read as UTC; anything else is
/// dropped (a missing check-in time is better than a lost device).
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    tracing::debug!(
        last_checkin_at = raw,
        "Ignoring a check-in time in an unknown format."
    );
    None
}

impl WireDevice {
    pub(crate) fn platform(&self) -> Platform {
        self.platform
            .as_deref()
            .map(Platform::from_vendor)
            .unwrap_or(Platform::Other)
    }

    /// Whether the connector can manage the device: BCDM manages iOS only.
    pub(crate) fn is_ios(&self) -> bool {
        self.platform() == Platform::Ios
    }

    pub(crate) fn into_device(self) -> Device {
        let platform = self.platform();
        Device {
            reported_risk: self.mtd_risk_level.as_deref().and_then(SignalLevel::parse),
            posture: Posture {
                compliant: self.compliant,
                // BCDM manages what it lists: there is no enrolment flag.
                enrolled: None,
                encrypted: self.encrypted,
                passcode: self.passcode_enabled,
                compromised: self.jailbroken,
                manufacturer: self.manufacturer,
                phone_number: self.phone_number,
            },
            identifiers: Identifiers {
                udid: self.udid.as_deref().and_then(normalize_udid),
                serial: self.serial_number.as_deref().and_then(normalize_serial),
                imei: self.imei.as_deref().and_then(normalize_imei),
                mac: self.wifi_mac.as_deref().and_then(normalize_mac),
            },
            mdm_device_id: self.device_id,
            // BCDM's device carries no device name.
            name: None,
            platform,
            model: non_empty(self.model),
            os_version: non_empty(self.os_version),
            ownership: self
                .ownership
                .as_deref()
                .map(Ownership::parse_lenient)
                .unwrap_or_default(),
            // Only the id: the user's details come from the user listing,
            // which the sync engine upserts before the devices.
            user: self.user_id.map(|mdm_user_id| User {
                mdm_user_id,
                ..User::default()
            }),
            // No groups at BCDM: every device belongs to the integration.
            groups: Vec::new(),
            last_checkin_at: self.last_checkin_at.as_deref().and_then(parse_time),
        }
    }
}

/// The iOS devices of one listing page; the others are counted, with the reason.
pub(crate) fn ios_page(devices: Vec<WireDevice>) -> Page<Device> {
    let total = devices.len();
    let items: Vec<Device> = devices
        .into_iter()
        .filter(WireDevice::is_ios)
        .map(WireDevice::into_device)
        .collect();
    let skipped = (total - items.len()) as u64;
    Page {
        items,
        skipped,
        skip_reason: (skipped > 0)
            .then(|| format!("BCDM supports iOS only: {skipped} Android/other devices skipped")),
        total: None,
    }
}

impl WireUser {
    /// `tenant_id` names the placeholder email of users who have none.
    ///
    /// BCDM gives one display `name`. It is not split into first and last
    /// names: the order differs by language (Japanese names put the family
    /// name first), so a split on spaces would be wrong as often as right.
    /// The whole name goes into `first_name` (anything that shows
    /// "first last" then shows it unchanged) and `last_name` stays empty.
    pub(crate) fn into_user(self, tenant_id: &str) -> User {
        User {
            mdm_user_id: self.user_id,
            username: non_empty(self.login_id),
            email: Some(non_empty(self.email).unwrap_or_else(|| placeholder_email(tenant_id))),
            first_name: non_empty(self.name),
            last_name: None,
        }
    }
}

/// The integration guide's placeholder for users without an email.
pub(crate) fn placeholder_email(tenant_id: &str) -> String {
    format!("{}-user@qmpr.com", tenant_id.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(json: serde_json::Value) -> WireDevice {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_full_ios_device_maps_with_normalised_identifiers_and_only_its_user_id() {
        let d = device(serde_json::json!({
            "device_id": "dev-1", "udid": "00008030-001a", "serial_number": "f17xk0abcd",
            "imei": "35 209900 176148 1", "wifi_mac": "A4:67:06:0C:15:3D", "model": "iPhone 14",
            "os_version": "17.4", "platform": "iOS", "user_id": "u-1", "ownership": "corporate",
            "last_checkin_at": "2024-03-01T10:00:00Z", "extra": "ignored"
        }))
        .into_device();
        assert_eq!(d.mdm_device_id, "dev-1");
        assert_eq!(d.identifiers.udid.as_deref(), Some("00008030-001A"));
        assert_eq!(d.identifiers.serial.as_deref(), Some("F17XK0ABCD"));
        assert_eq!(d.identifiers.imei.as_deref(), Some("352099001761481"));
        assert_eq!(d.identifiers.mac.as_deref(), Some("a467060c153d"));
        assert_eq!(d.platform, Platform::Ios);
        assert_eq!(d.ownership, Ownership::Corporate);
        assert_eq!(
            d.user,
            Some(User {
                mdm_user_id: "u-1".into(),
                ..User::default()
            })
        );
        assert!(d.groups.is_empty());
        assert_eq!(
            d.last_checkin_at.unwrap().to_rfc3339(),
            "2024-03-01T10:00:00+00:00"
        );
    }

    #[test]
    fn a_sparse_device_with_numeric_ids_still_maps() {
        let d = device(serde_json::json!({
            "device_id": 42, "platform": "ios", "user_id": null, "ownership": "personal",
            "last_checkin_at": "not a time"
        }));
        assert!(d.is_ios());
        let d = d.into_device();
        assert_eq!(d.mdm_device_id, "42");
        assert_eq!(d.user, None);
        assert_eq!(d.ownership, Ownership::Personal);
        assert_eq!(d.last_checkin_at, None);
    }

    #[test]
    fn posture_and_the_reported_risk_level_map_from_the_device_object() {
        let d = device(serde_json::json!({
            "device_id": "dev-1", "platform": "iOS", "model": "iPhone 14", "os_version": "17.4",
            "last_checkin_at": "2024-03-01T19:00:00+09:00",
            "compliant": false, "passcode_enabled": true, "encrypted": true, "jailbroken": true,
            "manufacturer": "Apple", "phone_number": "+819012345678", "mtd_risk_level": "high"
        }));
        assert_eq!(d.mtd_risk_level.as_deref(), Some("high"));
        let d = d.into_device();
        assert_eq!(d.reported_risk, Some(SignalLevel::High));
        assert_eq!(
            d.posture,
            Posture {
                compliant: Some(false),
                enrolled: None,
                encrypted: Some(true),
                passcode: Some(true),
                compromised: Some(true),
                manufacturer: Some("Apple".into()),
                phone_number: Some("+819012345678".into()),
            }
        );
        assert_eq!(d.model.as_deref(), Some("iPhone 14"));
        assert_eq!(d.os_version.as_deref(), Some("17.4"));
        assert_eq!(
            d.last_checkin_at.unwrap().to_rfc3339(),
            "2024-03-01T10:00:00+00:00"
        );
    }

    #[test]
    fn posture_values_are_read_leniently_and_null_blank_or_odd_ones_are_none() {
        let lenient = device(serde_json::json!({
            "device_id": "a", "platform": "iOS",
            "compliant": "true", "passcode_enabled": "False", "encrypted": 1, "jailbroken": "0",
            "manufacturer": " Apple ", "phone_number": 819012345678u64, "mtd_risk_level": 3
        }));
        assert_eq!(lenient.mtd_risk_level.as_deref(), Some("3"));
        let lenient = lenient.into_device();
        assert_eq!(lenient.reported_risk, None, "3 is no level");
        let p = lenient.posture;
        assert_eq!(
            (p.compliant, p.passcode, p.encrypted, p.compromised),
            (Some(true), Some(false), Some(true), Some(false))
        );
        assert_eq!(p.manufacturer.as_deref(), Some("Apple"));
        assert_eq!(p.phone_number.as_deref(), Some("819012345678"));
        for odd in [
            serde_json::json!({
                "device_id": "b", "platform": "iOS", "compliant": null, "passcode_enabled": null,
                "encrypted": null, "jailbroken": null, "manufacturer": null, "phone_number": null,
                "mtd_risk_level": null
            }),
            serde_json::json!({
                "device_id": "c", "platform": "iOS", "compliant": "yes?", "passcode_enabled": "",
                "encrypted": 7, "jailbroken": {"nested": true}, "manufacturer": "",
                "phone_number": "  ", "mtd_risk_level": ["high"]
            }),
            serde_json::json!({"device_id": "d", "platform": "iOS"}),
        ] {
            let d = device(odd.clone());
            assert_eq!(d.mtd_risk_level, None, "{odd}");
            let d = d.into_device();
            assert_eq!(d.posture, Posture::default(), "{odd}");
            assert_eq!(d.reported_risk, None, "{odd}");
        }
    }

    #[test]
    fn the_reported_risk_level_is_read_in_either_spelling_and_any_case() {
        for (raw, want) in [
            ("secured", Some(SignalLevel::Secured)),
            ("Low", Some(SignalLevel::Low)),
            (" MEDIUM ", Some(SignalLevel::Medium)),
            ("critical", Some(SignalLevel::Critical)),
            ("none", None),
            ("", None),
        ] {
            let d = device(serde_json::json!({
                "device_id": "r", "platform": "iOS", "mtd_risk_level": raw
            }));
            assert_eq!(d.into_device().reported_risk, want, "{raw:?}");
        }
    }

    #[test]
    fn a_device_without_a_platform_is_not_taken_as_ios() {
        assert!(!device(serde_json::json!({"device_id": "x"})).is_ios());
        assert!(!device(serde_json::json!({"device_id": "x", "platform": "Android"})).is_ios());
    }

    #[test]
    fn a_page_keeps_ios_devices_and_counts_the_rest_with_a_reason() {
        let page = ios_page(vec![
            device(serde_json::json!({"device_id": "a", "platform": "iOS"})),
            device(serde_json::json!({"device_id": "b", "platform": "Android"})),
            device(serde_json::json!({"device_id": "c", "platform": "IOS"})),
            device(serde_json::json!({"device_id": "d"})),
        ]);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.skipped, 2);
        assert_eq!(
            page.skip_reason.as_deref(),
            Some("BCDM supports iOS only: 2 Android/other devices skipped")
        );
        assert_eq!(ios_page(Vec::new()).skip_reason, None);
    }

    #[test]
    fn a_user_without_an_email_gets_the_tenant_placeholder_and_keeps_the_whole_name() {
        let u: WireUser = serde_json::from_value(serde_json::json!({
            "user_id": "u-7", "login_id": "yamada", "name": "山田 太郎", "email": null
        }))
        .unwrap();
        let u = u.into_user("acme");
        assert_eq!(u.mdm_user_id, "u-7");
        assert_eq!(u.username.as_deref(), Some("yamada"));
        assert_eq!(u.email.as_deref(), Some("acme-user@qmpr.com"));
        assert_eq!(u.first_name.as_deref(), Some("山田 太郎"));
        assert_eq!(u.last_name, None);
        let blank: WireUser =
            serde_json::from_value(serde_json::json!({"user_id": "u-8", "email": "  "})).unwrap();
        assert_eq!(
            blank.into_user("acme").email.as_deref(),
            Some("acme-user@qmpr.com")
        );
    }

    #[test]
    fn lookup_macs_are_colon_separated_lower_case() {
        assert_eq!(mac_for_lookup("A467060C153D"), "a4:67:06:0c:15:3d");
        assert_eq!(mac_for_lookup("a4-67-06-0c-15-3d"), "a4:67:06:0c:15:3d");
    }
}
