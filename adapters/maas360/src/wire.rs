//! MaaS360's JSON as it comes over the wire, and its mapping to the shared model.
//!
//! Read field by field from `serde_json::Value`, not through derived structs:
//! MaaS360's JSON is converted from XML, so a number may come as a string (or
//! a string as a number), an empty value as `""`, and a list of exactly one
//! element as a bare object. One odd record costs that record at most (it is
//! skipped and counted), never its page.

use chrono::{DateTime, NaiveDateTime, Utc};
use mtd_adapter::{
    normalize_imei, normalize_mac, normalize_serial, normalize_udid, Device, DeviceIdentifier,
    Identifiers, Ownership, Platform, Posture, User,
};
use serde_json::Value;

/// A field as trimmed, non-empty text; a number is its decimal text
/// (`"imeiEsn": 351623070066166`, `"osVersion": 17.4`). `""` and `null` are none.
pub(crate) fn text(record: &Value, key: &str) -> Option<String> {
    match record.get(key)? {
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_string())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A whole number given as a number or as numeric text (`"count": "12"`).
pub(crate) fn number(record: &Value, key: &str) -> Option<i64> {
    integer(record.get(key)?)
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One page of a search: the records of the list and the announced `count`.
#[derive(Debug)]
pub(crate) struct SearchPage {
    pub records: Vec<Value>,
    pub count: Option<u64>,
}

/// Reads `{"<envelope>":{"count":N,…,"<item>":[…] | {…}}}`. A missing (or
/// empty) `<item>` is an empty result; a missing `<envelope>` is an error,
/// because an answer that is not a search result must never read as "no
/// devices" (a sync would then remove them all).
pub(crate) fn search_page(body: &str, envelope: &str, item: &str) -> Result<SearchPage, String> {
    let mut value: Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e})"))?;
    let Some(Value::Object(inner)) = value.get_mut(envelope) else {
        return Err(format!("no `{envelope}` object"));
    };
    let count = inner
        .get("count")
        .and_then(integer)
        .and_then(|n| u64::try_from(n).ok());
    let records = one_or_many(inner.remove(item)).map_err(|what| format!("`{item}` is {what}"))?;
    Ok(SearchPage { records, count })
}

/// MaaS360's list of zero, one or more: absent, `null` or `""` (none), a bare
/// object (exactly one) or an array.
fn one_or_many(raw: Option<Value>) -> Result<Vec<Value>, &'static str> {
    match raw {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(one @ Value::Object(_)) => Ok(vec![one]),
        Some(_) => Err("neither an object nor an array"),
    }
}

/// `Corporate Owned` and `Employee Owned` (compared without case); anything
/// else is `Unknown`, because `Corporate` is what permits a full wipe and
/// must never be guessed.
pub(crate) fn ownership(raw: Option<&str>) -> Ownership {
    match raw.map(str::trim) {
        Some(s) if s.eq_ignore_ascii_case("Corporate Owned") => Ownership::Corporate,
        Some(s) if s.eq_ignore_ascii_case("Employee Owned") => Ownership::Personal,
        _ => Ownership::Unknown,
    }
}

/// `lastReported` is server time without a zone (`2019-04-23T16:11:23`),
/// read as UTC; a zone, when present, is honoured.
pub(crate) fn timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .map(|t| t.and_utc())
}

/// The last check-in: `lastReported`, else `lastReportedInEpochms`.
fn last_reported(record: &Value) -> Option<DateTime<Utc>> {
    text(record, "lastReported")
        .and_then(|t| timestamp(&t))
        .or_else(|| {
            number(record, "lastReportedInEpochms")
                .filter(|ms| *ms > 0)
                .and_then(DateTime::from_timestamp_millis)
        })
}

/// The MAC the way MaaS360 writes it and searches it: `a4:e4:b8:73:a1:93`.
/// A value that is not a MAC is sent as it is (and will find nothing).
pub(crate) fn mac_for_search(raw: &str) -> String {
    let Some(mac) = normalize_mac(raw) else {
        return raw.trim().to_string();
    };
    // Twelve ASCII hex digits: every pair is a char boundary.
    (0..6)
        .map(|i| &mac[2 * i..2 * i + 2])
        .collect::<Vec<_>>()
        .join(":")
}

/// One device of the search (listing or lookup). A record without
/// `maas360DeviceID` cannot be looked up or acted on, and is skipped.
pub(crate) fn device(record: &Value) -> Result<Device, String> {
    if !record.is_object() {
        return Err("device record is not a JSON object".into());
    }
    let mdm_device_id =
        text(record, "maas360DeviceID").ok_or("device without a maas360DeviceID")?;
    Ok(Device {
        reported_risk: None,
        posture: posture(record),
        mdm_device_id,
        identifiers: Identifiers {
            udid: text(record, "udid").and_then(|v| normalize_udid(&v)),
            serial: text(record, "platformSerialNumber").and_then(|v| normalize_serial(&v)),
            imei: text(record, "imeiEsn").and_then(|v| normalize_imei(&v)),
            mac: text(record, "wifiMacAddress").and_then(|v| normalize_mac(&v)),
        },
        name: text(record, "deviceName"),
        platform: text(record, "platformName")
            .map(|p| Platform::from_vendor(&p))
            .unwrap_or_default(),
        model: text(record, "model"),
        os_version: text(record, "osVersion"),
        ownership: ownership(text(record, "ownership").as_deref()),
        user: device_user(record),
        // The search answer names no group (MDM-APIS.md).
        groups: Vec::new(),
        last_checkin_at: last_reported(record),
    })
}

/// What the search says of a device's state. MaaS360 writes words
/// (`In Compliance`, `Encryption Complete`, `Yes`); they are compared
/// without case, spaces or punctuation ([`word`]), so `Out of Compliance`,
/// `OUT_OF_COMPLIANCE` and `OutOfCompliance` are one value. A value that is
/// blank or not one of the known words is `None`: not said, never guessed.
fn posture(record: &Value) -> Posture {
    Posture {
        compliant: known(record, "policyComplianceState", |w| match w {
            "incompliance" | "compliant" => Some(true),
            "outofcompliance" | "noncompliant" | "notcompliant" => Some(false),
            _ => None,
        }),
        enrolled: known(record, "maas360ManagedStatus", |w| match w {
            "enrolled" | "activated" => Some(true),
            // `Pending Control Removed` is on its way out: the admin (or
            // the user) has already ended management.
            "controlremoved"
            | "pendingcontrolremoved"
            | "userremovedcontrol"
            | "notenrolled"
            | "inactive" => Some(false),
            _ => None,
        }),
        encrypted: known(record, "encryptionStatus", |w| match w {
            "encryptioncomplete" | "encrypted" => Some(true),
            "notencrypted" | "unencrypted" | "notsupported" | "encryptionnotsupported" => {
                Some(false)
            }
            _ => None,
        }),
        passcode: known(record, "passcodeCompliance", |w| match w {
            "compliant" => Some(true),
            "noncompliant" | "notcompliant" => Some(false),
            _ => None,
        }),
        compromised: match record.get("jailbreakStatus") {
            Some(Value::Bool(b)) => Some(*b),
            _ => known(record, "jailbreakStatus", |w| match w {
                "yes" | "true" | "jailbroken" | "rooted" => Some(true),
                "no" | "false" => Some(false),
                _ => None,
            }),
        },
        manufacturer: text(record, "manufacturer"),
        phone_number: text(record, "phoneNumber"),
    }
}

/// The field `key` as a [`word`], mapped by `map`.
fn known(record: &Value, key: &str, map: impl Fn(&str) -> Option<bool>) -> Option<bool> {
    text(record, key).and_then(|t| map(&word(&t)))
}

/// Lower case, letters and digits only: `Out of Compliance` → `outofcompliance`.
fn word(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A device's user, keyed by `username` as the user listing keys its users
/// (else by the e-mail); `None` when the device names nobody.
fn device_user(record: &Value) -> Option<User> {
    let username = text(record, "username");
    let email = text(record, "emailAddress");
    let mdm_user_id = username.clone().or_else(|| email.clone())?;
    Some(User {
        mdm_user_id,
        username,
        email,
        first_name: None,
        last_name: None,
    })
}

/// One user of the user search, keyed by `userName` (not `userIdentifier`):
/// devices name their user only by `username`, so this is the key both
/// listings share. `fullName` is split at its first space into first and
/// last name. A user without a `userName` is skipped.
pub(crate) fn user(record: &Value) -> Result<User, String> {
    if !record.is_object() {
        return Err("user record is not a JSON object".into());
    }
    let user_name = text(record, "userName").ok_or("user without a userName")?;
    let (first_name, last_name) = match text(record, "fullName") {
        Some(full) => match full.split_once(char::is_whitespace) {
            Some((first, last)) => (Some(first.to_string()), Some(last.trim().to_string())),
            None => (Some(full), None),
        },
        None => (None, None),
    };
    Ok(User {
        mdm_user_id: user_name.clone(),
        username: Some(user_name),
        email: text(record, "emailAddress"),
        first_name,
        last_name,
    })
}

/// Whether a mapped device carries `id` (compared in normal form): a lookup
/// never takes a device the server sent for another identifier.
pub(crate) fn carries(device: &Device, id: &DeviceIdentifier) -> bool {
    let ids = &device.identifiers;
    let same = |have: &Option<String>, norm: fn(&str) -> Option<String>| {
        have.is_some() && have.as_deref() == norm(id.value()).as_deref()
    };
    match id {
        DeviceIdentifier::MdmDeviceId(v) => device.mdm_device_id == v.trim(),
        DeviceIdentifier::Udid(_) => same(&ids.udid, normalize_udid),
        DeviceIdentifier::Serial(_) => same(&ids.serial, normalize_serial),
        DeviceIdentifier::Imei(_) => same(&ids.imei, normalize_imei),
        DeviceIdentifier::Mac(_) => same(&ids.mac, normalize_mac),
    }
}

/// The answer of a login or a token refresh.
#[derive(Debug)]
pub(crate) enum AuthAnswer {
    /// `errorCode` 0 with a token.
    Granted {
        auth_token: String,
        refresh_token: Option<String>,
    },
    /// `errorCode` ≠ 0 (HTTP 200): the credentials (or the refresh token) were refused.
    Refused { code: String, description: String },
}

/// Reads `{"authResponse":{"authToken":"…","errorCode":0,"refreshToken":"…"}}`.
/// `Err` says what is wrong, never echoing the body (it may hold a token).
pub(crate) fn auth_answer(body: &str) -> Result<AuthAnswer, String> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
    let answer = value
        .get("authResponse")
        .filter(|v| v.is_object())
        .ok_or("no `authResponse` object")?;
    let code = text(answer, "errorCode");
    let token = text(answer, "authToken");
    match (code.as_deref(), token) {
        (Some("0") | None, Some(auth_token)) => Ok(AuthAnswer::Granted {
            auth_token,
            refresh_token: text(answer, "refreshToken"),
        }),
        (Some("0") | None, None) => Err("`errorCode` 0 but no `authToken`".into()),
        (Some(code), _) => Ok(AuthAnswer::Refused {
            code: code.to_string(),
            description: text(answer, "errorDesc").unwrap_or_else(|| "(no errorDesc)".into()),
        }),
    }
}

/// The answer of a device action.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ActionAnswer {
    pub action_id: Option<String>,
    /// 0 success, 1 failure (with HTTP 200); anything else is undocumented.
    pub status: Option<i64>,
    pub description: Option<String>,
}

/// Reads `{"actionResponse":{"actionID":…,"actionStatus":0,"description":"…",…}}`;
/// `None` when the body is not that (a portal page, another JSON).
pub(crate) fn action_answer(body: &str) -> Option<ActionAnswer> {
    let value: Value = serde_json::from_str(body).ok()?;
    let answer = value.get("actionResponse").filter(|v| v.is_object())?;
    Some(ActionAnswer {
        action_id: text(answer, "actionID"),
        status: number(answer, "actionStatus"),
        description: text(answer, "description"),
    })
}

/// The value of the custom attribute `name` in the answer of
/// `GET /device-apis/devices/1.0/identity/{billingId}?deviceId=…`:
/// `{"deviceIdentity":{…,"customAttributes":{"customAttribute":[{"customAttributeName","customAttributeValue"}]}}}`,
/// a list of one given as a bare object, none as no key (or `""`). The name
/// is matched exactly, else ignoring case. `Ok(None)`: not set, or blank;
/// `Err`: the answer is not an identity.
pub(crate) fn identity_attribute(body: &str, name: &str) -> Result<Option<String>, String> {
    let mut value: Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e})"))?;
    let Some(identity) = value.get_mut("deviceIdentity").filter(|v| v.is_object()) else {
        return Err("no `deviceIdentity` object".into());
    };
    let list = match identity.get_mut("customAttributes") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::Object(o)) => o.remove("customAttribute"),
        Some(_) => return Err("`customAttributes` is not an object".into()),
    };
    let attributes = one_or_many(list).map_err(|what| format!("`customAttribute` is {what}"))?;
    let name_of = |a: &Value| text(a, "customAttributeName");
    let name = name.trim();
    let found = attributes
        .iter()
        .find(|a| name_of(a).as_deref() == Some(name))
        .or_else(|| {
            attributes
                .iter()
                .find(|a| name_of(a).is_some_and(|n| n.eq_ignore_ascii_case(name)))
        });
    Ok(found.and_then(|a| text(a, "customAttributeValue")))
}

/// Whether an action's failure `description` says the custom attribute
/// does not exist for the customer. MaaS360 documents no wording
/// (**\[ours\]**): a description that mentions an attribute together with
/// "not defined", "not found", "does not exist", "no such", "unknown" or
/// "invalid attribute" counts.
pub(crate) fn says_attribute_unknown(description: &str) -> bool {
    let d = description.to_ascii_lowercase();
    d.contains("attribute")
        && [
            "not defined",
            "not found",
            "does not exist",
            "doesn't exist",
            "no such",
            "unknown",
            "invalid attribute",
        ]
        .iter()
        .any(|p| d.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_of_one_is_an_object_and_an_empty_result_has_no_item_key() {
        let one = search_page(
            r#"{"devices":{"count":1,"pageNumber":1,"pageSize":25,"device":{"maas360DeviceID":"a"}}}"#,
            "devices",
            "device",
        )
        .unwrap();
        assert_eq!(one.records.len(), 1);
        assert_eq!(one.count, Some(1));
        let many = search_page(
            r#"{"devices":{"count":"7","device":[{"maas360DeviceID":"a"},{"maas360DeviceID":"b"}]}}"#,
            "devices",
            "device",
        )
        .unwrap();
        assert_eq!(many.records.len(), 2);
        assert_eq!(many.count, Some(7), "a count given as text");
        for empty in [
            r#"{"devices":{"count":0,"pageNumber":1,"pageSize":250}}"#,
            r#"{"devices":{"count":0,"device":null}}"#,
            r#"{"devices":{"count":"","device":""}}"#,
        ] {
            let page = search_page(empty, "devices", "device").unwrap();
            assert!(page.records.is_empty(), "{empty}");
        }
        let users = search_page(
            r#"{"users":{"count":1,"user":{"userName":"ana"}}}"#,
            "users",
            "user",
        )
        .unwrap();
        assert_eq!(users.records.len(), 1);
    }

    #[test]
    fn an_answer_that_is_not_a_search_result_is_an_error_not_an_empty_page() {
        for (body, want) in [
            ("<html></html>", "not JSON"),
            (r#"{"errorCode":1007}"#, "no `devices` object"),
            (r#"{"devices":"none"}"#, "no `devices` object"),
            (r#"{"devices":{"device":42}}"#, "`device` is neither"),
        ] {
            let e = search_page(body, "devices", "device").unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    fn full_device() -> Value {
        json!({
            "maas360DeviceID": "ApplF17XK0ABCD",
            "deviceName": "Ana's iPhone",
            "username": "ana",
            "emailAddress": "ana@example.com",
            "platformName": "iOS",
            "manufacturer": "Apple",
            "model": "iPhone 15",
            "osName": "iOS 17.4",
            "osVersion": 17.4,
            "imeiEsn": 352099001761481u64,
            "udid": "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
            "wifiMacAddress": "a4:e4:b8:73:a1:93",
            "phoneNumber": "",
            "ownership": "Corporate Owned",
            "lastReported": "2019-04-23T16:11:23",
            "lastReportedInEpochms": 1556035883843u64,
            "platformSerialNumber": " f17xk0abcd ",
            "somethingNew": {"nested": true}
        })
    }

    #[test]
    fn a_full_device_maps_every_field_with_identifiers_normalised() {
        let d = device(&full_device()).unwrap();
        assert_eq!(d.mdm_device_id, "ApplF17XK0ABCD");
        assert_eq!(d.name.as_deref(), Some("Ana's iPhone"));
        assert_eq!(
            d.identifiers.udid.as_deref(),
            Some("0A1B2C3D4E5F60718293A4B5C6D7E8F901234567")
        );
        assert_eq!(d.identifiers.serial.as_deref(), Some("F17XK0ABCD"));
        assert_eq!(d.identifiers.imei.as_deref(), Some("352099001761481"));
        assert_eq!(d.identifiers.mac.as_deref(), Some("a4e4b873a193"));
        assert_eq!(d.platform, Platform::Ios);
        assert_eq!(d.model.as_deref(), Some("iPhone 15"));
        assert_eq!(d.os_version.as_deref(), Some("17.4"), "a number as text");
        assert_eq!(d.ownership, Ownership::Corporate);
        let u = d.user.unwrap();
        assert_eq!(u.mdm_user_id, "ana");
        assert_eq!(u.email.as_deref(), Some("ana@example.com"));
        assert_eq!(
            d.last_checkin_at.unwrap().to_rfc3339(),
            "2019-04-23T16:11:23+00:00",
            "no zone: UTC"
        );
        assert!(d.groups.is_empty());
    }

    #[test]
    fn numbers_as_strings_strings_as_numbers_and_empty_strings_are_read_leniently() {
        let d = device(&json!({
            "maas360DeviceID": 123456,
            "deviceName": "",
            "username": "",
            "emailAddress": "",
            "platformName": "Android",
            "osVersion": "14",
            "imeiEsn": "",
            "udid": "",
            "wifiMacAddress": "",
            "platformSerialNumber": "",
            "ownership": "",
            "lastReported": "",
            "lastReportedInEpochms": "1556035883843"
        }))
        .unwrap();
        assert_eq!(d.mdm_device_id, "123456");
        assert_eq!(d.name, None);
        assert_eq!(d.user, None, "no user name and no e-mail: no user");
        assert_eq!(d.identifiers, Identifiers::default());
        assert_eq!(d.platform, Platform::Android);
        assert_eq!(d.os_version.as_deref(), Some("14"));
        assert_eq!(d.ownership, Ownership::Unknown);
        assert_eq!(
            d.last_checkin_at.unwrap().to_rfc3339(),
            "2019-04-23T16:11:23.843+00:00",
            "the epoch milliseconds when lastReported is empty"
        );
        let d = device(&json!({"maas360DeviceID": "x", "emailAddress": "e@example.com"})).unwrap();
        assert_eq!(d.user.unwrap().mdm_user_id, "e@example.com");
    }

    #[test]
    fn posture_maps_the_documented_words_of_the_search_answer() {
        let mut record = full_device();
        for (k, v) in [
            ("policyComplianceState", json!("In Compliance")),
            ("maas360ManagedStatus", json!("Enrolled")),
            ("encryptionStatus", json!("Encryption Complete")),
            ("passcodeCompliance", json!("Compliant")),
            ("jailbreakStatus", json!("No")),
            ("phoneNumber", json!("+14165550123")),
        ] {
            record[k] = v;
        }
        let d = device(&record).unwrap();
        assert_eq!(
            d.posture,
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
        assert_eq!(d.model.as_deref(), Some("iPhone 15"));
        assert_eq!(d.os_version.as_deref(), Some("17.4"));
        assert!(d.last_checkin_at.is_some());
    }

    #[test]
    fn every_known_word_of_each_posture_field_maps_without_case_and_others_are_none() {
        let p = |key: &str, v: Value| {
            device(&json!({"maas360DeviceID": "x", key: v}))
                .unwrap()
                .posture
        };
        for (raw, want) in [
            ("In Compliance", Some(true)),
            ("in compliance", Some(true)),
            ("Out of Compliance", Some(false)),
            ("OUT OF COMPLIANCE", Some(false)),
            ("", None),
            ("Pending", None),
        ] {
            assert_eq!(
                p("policyComplianceState", json!(raw)).compliant,
                want,
                "{raw:?}"
            );
        }
        for (raw, want) in [
            ("Enrolled", Some(true)),
            ("Activated", Some(true)),
            ("Control Removed", Some(false)),
            ("Pending Control Removed", Some(false)),
            ("User Removed Control", Some(false)),
            ("Not Enrolled", Some(false)),
            ("Inactive", Some(false)),
            ("", None),
            ("Something New", None),
        ] {
            assert_eq!(
                p("maas360ManagedStatus", json!(raw)).enrolled,
                want,
                "{raw:?}"
            );
        }
        for (raw, want) in [
            ("Encryption Complete", Some(true)),
            ("Encrypted", Some(true)),
            ("Not Encrypted", Some(false)),
            ("Unencrypted", Some(false)),
            ("Not Supported", Some(false)),
            ("", None),
            ("Encryption In Progress", None),
        ] {
            assert_eq!(p("encryptionStatus", json!(raw)).encrypted, want, "{raw:?}");
        }
        for (raw, want) in [
            ("Compliant", Some(true)),
            ("compliant", Some(true)),
            ("Non Compliant", Some(false)),
            ("Not Compliant", Some(false)),
            ("Noncompliant", Some(false)),
            ("Non-Compliant", Some(false)),
            ("", None),
            ("N/A", None),
        ] {
            assert_eq!(
                p("passcodeCompliance", json!(raw)).passcode,
                want,
                "{raw:?}"
            );
        }
        for (raw, want) in [
            (json!("Yes"), Some(true)),
            (json!("yes"), Some(true)),
            (json!("No"), Some(false)),
            (json!(true), Some(true)),
            (json!(false), Some(false)),
            (json!(""), None),
            (json!("Unknown"), None),
            (json!(null), None),
        ] {
            assert_eq!(p("jailbreakStatus", raw.clone()).compromised, want, "{raw}");
        }
    }

    #[test]
    fn a_phone_number_given_as_a_number_is_its_digits_and_blank_posture_is_none() {
        let d = device(&json!({
            "maas360DeviceID": "x",
            "phoneNumber": 4915112345678u64,
            "manufacturer": 42
        }))
        .unwrap();
        assert_eq!(d.posture.phone_number.as_deref(), Some("4915112345678"));
        assert_eq!(d.posture.manufacturer.as_deref(), Some("42"));
        let d = device(&json!({
            "maas360DeviceID": "x", "manufacturer": "", "phoneNumber": "",
            "policyComplianceState": "", "maas360ManagedStatus": "", "encryptionStatus": "",
            "passcodeCompliance": "", "jailbreakStatus": ""
        }))
        .unwrap();
        assert_eq!(d.posture, Posture::default());
        assert_eq!(
            device(&json!({"maas360DeviceID": "x"})).unwrap().posture,
            Posture::default()
        );
    }

    #[test]
    fn a_record_without_its_id_is_skipped_with_a_reason() {
        assert!(device(&json!({"maas360DeviceID": ""}))
            .unwrap_err()
            .contains("maas360DeviceID"));
        assert!(device(&json!("x")).is_err());
        assert!(user(&json!({"emailAddress": "a@b.c"})).is_err());
    }

    #[test]
    fn ownership_words_map_and_everything_else_is_unknown() {
        assert_eq!(ownership(Some("Corporate Owned")), Ownership::Corporate);
        assert_eq!(ownership(Some(" corporate owned ")), Ownership::Corporate);
        assert_eq!(ownership(Some("Employee Owned")), Ownership::Personal);
        for other in ["Corporate", "Shared", "C", "", "Corporate Shared"] {
            assert_eq!(ownership(Some(other)), Ownership::Unknown, "{other}");
        }
        assert_eq!(ownership(None), Ownership::Unknown);
    }

    #[test]
    fn platform_names_of_maas360_map_to_the_model() {
        for (raw, want) in [
            ("iOS", Platform::Ios),
            ("Android", Platform::Android),
            ("Windows", Platform::Windows),
            ("Windows Phone 7", Platform::Windows),
            ("Mac", Platform::Macos),
            ("BlackBerry", Platform::Other),
            ("Others", Platform::Other),
        ] {
            let d = device(&json!({"maas360DeviceID": "x", "platformName": raw})).unwrap();
            assert_eq!(d.platform, want, "{raw}");
        }
    }

    #[test]
    fn users_are_keyed_by_user_name_and_their_full_name_split_once() {
        let u = user(&json!({
            "userIdentifier": "U-1", "userName": "ana", "emailAddress": "ana@example.com",
            "fullName": "Ana  de Lima", "domain": "example.com", "status": "Active"
        }))
        .unwrap();
        assert_eq!(u.mdm_user_id, "ana");
        assert_eq!(u.first_name.as_deref(), Some("Ana"));
        assert_eq!(u.last_name.as_deref(), Some("de Lima"));
        let u = user(&json!({"userName": 42, "fullName": "Cher", "emailAddress": ""})).unwrap();
        assert_eq!(u.mdm_user_id, "42");
        assert_eq!((u.first_name.as_deref(), u.last_name), (Some("Cher"), None));
        assert_eq!(u.email, None);
    }

    #[test]
    fn a_login_answer_is_a_grant_or_a_refusal_with_its_code() {
        let granted = auth_answer(
            r#"{"authResponse":{"authToken":"t-1","errorCode":0,"refreshToken":"r-1"}}"#,
        )
        .unwrap();
        assert!(matches!(
            granted,
            AuthAnswer::Granted { ref auth_token, refresh_token: Some(ref r) } if auth_token == "t-1" && r == "r-1"
        ));
        let refused = auth_answer(
            r#"{"authResponse":{"errorCode":"1008","errorDesc":"Invalid credentials","authToken":""}}"#,
        )
        .unwrap();
        assert!(matches!(
            refused,
            AuthAnswer::Refused { ref code, ref description } if code == "1008" && description == "Invalid credentials"
        ));
        assert!(auth_answer(r#"{"authResponse":{"errorCode":0}}"#).is_err());
        let e =
            auth_answer("<authResponse><authToken>secret</authToken></authResponse>").unwrap_err();
        assert!(!e.contains("secret"), "never echoes the body: {e}");
    }

    #[test]
    fn an_action_answer_reads_its_id_and_status_as_numbers_or_text() {
        assert_eq!(
            action_answer(
                r#"{"actionResponse":{"actionID":128294549,"actionStatus":0,"description":"ok","maas360DeviceID":"d"}}"#
            ),
            Some(ActionAnswer {
                action_id: Some("128294549".into()),
                status: Some(0),
                description: Some("ok".into())
            })
        );
        let failed =
            action_answer(r#"{"actionResponse":{"actionStatus":"1","description":"no"}}"#).unwrap();
        assert_eq!(failed.status, Some(1));
        assert_eq!(action_answer("<html></html>"), None);
        assert_eq!(action_answer(r#"{"status":"ok"}"#), None);
    }

    #[test]
    fn an_identity_gives_the_attribute_value_from_a_list_or_a_single_object() {
        let many = r#"{"deviceIdentity":{"maas360DeviceID":"a","customAttributes":{"customAttribute":[
            {"customAttributeName":"Office","customAttributeValue":"Berlin"},
            {"customAttributeName":"mtd_threat_level","customAttributeValue":" High "}]}}}"#;
        assert_eq!(
            identity_attribute(many, "MTD_Threat_Level")
                .unwrap()
                .as_deref(),
            Some("High")
        );
        assert_eq!(
            identity_attribute(many, "Office").unwrap().as_deref(),
            Some("Berlin")
        );
        assert_eq!(identity_attribute(many, "Missing").unwrap(), None);
        let one = r#"{"deviceIdentity":{"customAttributes":{"customAttribute":
            {"customAttributeName":"MTD_Threat_Level","customAttributeValue":"Critical"}}}}"#;
        assert_eq!(
            identity_attribute(one, "MTD_Threat_Level")
                .unwrap()
                .as_deref(),
            Some("Critical")
        );
        for none in [
            r#"{"deviceIdentity":{"maas360DeviceID":"a","customAttributes":{}}}"#,
            r#"{"deviceIdentity":{"maas360DeviceID":"a","customAttributes":""}}"#,
            r#"{"deviceIdentity":{"maas360DeviceID":"a"}}"#,
            r#"{"deviceIdentity":{"customAttributes":{"customAttribute":{"customAttributeName":"MTD_Threat_Level","customAttributeValue":""}}}}"#,
        ] {
            assert_eq!(
                identity_attribute(none, "MTD_Threat_Level").unwrap(),
                None,
                "{none}"
            );
        }
        for bad in [
            "<html></html>",
            r#"{"actionResponse":{}}"#,
            r#"{"deviceIdentity":{"customAttributes":7}}"#,
            r#"{"deviceIdentity":{"customAttributes":{"customAttribute":7}}}"#,
        ] {
            assert!(
                identity_attribute(bad, "MTD_Threat_Level").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_failure_that_names_an_unknown_attribute_is_recognised() {
        for yes in [
            "Invalid attribute name: custom attribute MTD_Threat_Level is not defined for this customer.",
            "Custom Attribute not found",
            "The attribute does not exist.",
            "Unknown custom attribute 'x'",
        ] {
            assert!(says_attribute_unknown(yes), "{yes}");
        }
        for no in [
            "Invalid device ID: no such device for this customer.",
            "Custom attribute names and values cannot contain . < > \\ \" or '.",
            "The action could not be executed on the device. Please try again later.",
        ] {
            assert!(!says_attribute_unknown(no), "{no}");
        }
    }

    #[test]
    fn macs_are_searched_colon_separated_in_lower_case() {
        assert_eq!(mac_for_search("a4e4b873a193"), "a4:e4:b8:73:a1:93");
        assert_eq!(mac_for_search("A4E4B873A193"), "a4:e4:b8:73:a1:93");
    }

    #[test]
    fn a_device_carries_an_identifier_only_in_normal_form() {
        let d = device(&full_device()).unwrap();
        for id in [
            DeviceIdentifier::mdm_device_id("ApplF17XK0ABCD").unwrap(),
            DeviceIdentifier::udid("0A1B2C3D4E5F60718293A4B5C6D7E8F901234567").unwrap(),
            DeviceIdentifier::imei("35-209900-176148-1").unwrap(),
            DeviceIdentifier::mac("A4-E4-B8-73-A1-93").unwrap(),
            DeviceIdentifier::serial("F17XK0ABCD").unwrap(),
        ] {
            assert!(carries(&d, &id), "{id}");
        }
        assert!(!carries(&d, &DeviceIdentifier::udid("other").unwrap()));
        assert!(!carries(
            &d,
            &DeviceIdentifier::mdm_device_id("applf17xk0abcd").unwrap()
        ));
    }
}
