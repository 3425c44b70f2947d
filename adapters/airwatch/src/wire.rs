//! Reading AirWatch records into the shared model.
//!
//! Records are read field by field from a `serde_json::Value` rather than
//! through derived structs: one odd record (an `Id` given as a plain number, a
//! `null` where a string was due) must cost that record at most, never the
//! page, and unknown fields must be ignored. A record that cannot be mapped
//! yields `Err(reason)`, which the listing counts in `Page::skipped`.

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use mtd_adapter::{
    normalize_imei, normalize_mac, normalize_serial, normalize_udid, Device, Group, Identifiers,
    Ownership, Platform, Posture, User,
};
use serde_json::Value;

/// A field as trimmed, non-empty text; numbers are accepted as text too
/// (AirWatch versions differ in whether some ids are strings or numbers).
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

/// An AirWatch id: `{"Value": 42}` (the v1 shape), `42`, or `"42"`.
pub(crate) fn id(record: &Value, key: &str) -> Option<String> {
    let raw = record.get(key)?;
    let inner = match raw {
        Value::Object(o) => o.get("Value")?,
        other => other,
    };
    match inner {
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty() && t.chars().all(|c| c.is_ascii_digit())).then(|| t.to_string())
        }
        _ => None,
    }
}

/// A count (`Total`, `TotalResults`), as a number or a numeric string.
pub(crate) fn count(record: &Value, key: &str) -> Option<u64> {
    match record.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `C` corporate, `E` employee-owned, `S` shared; anything else (including
/// the spelled-out words) is `Unknown`, because `Corporate` is what permits a
/// full wipe and must never be guessed.
pub(crate) fn ownership(raw: Option<&str>) -> Ownership {
    match raw.map(str::trim) {
        Some(s) if s.eq_ignore_ascii_case("C") => Ownership::Corporate,
        Some(s) if s.eq_ignore_ascii_case("E") => Ownership::Personal,
        Some(s) if s.eq_ignore_ascii_case("S") => Ownership::Shared,
        _ => Ownership::Unknown,
    }
}

/// `LastSeen` is server time without a zone
/// (`2018-03-15T08:08:09.460`): AirWatch keeps it in UTC, so it is read as
/// UTC. A value with a zone or offset is accepted too. .NET's
/// `DateTime.MinValue` (`0001-01-01T00:00:00`) means "never" and maps to `None`.
pub(crate) fn timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    let parsed = DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
            ]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
            .map(|n| n.and_utc())
        })?;
    (parsed.year() > 1970).then_some(parsed)
}

/// One device of `/API/mdm/devices/search` or of a lookup.
///
/// - `mdm_device_id` is `Id.Value` as a string: the key of the lookup and
///   command paths. A record without it cannot be acted on and is skipped.
/// - The group is `LocationGroupName`, the organisation group's *name*:
///   devices carry no group id, so groups are keyed by name on both sides.
/// - The user is keyed by `UserName`, the only user reference a device has.
pub(crate) fn device(record: &Value) -> Result<Device, String> {
    if !record.is_object() {
        return Err("device record is not a JSON object".into());
    }
    let mdm_device_id = id(record, "Id").ok_or("device without a numeric Id.Value")?;
    let user_name = text(record, "UserName");
    let email = text(record, "UserEmailAddress");
    let user = match (&user_name, &email) {
        (None, None) => None,
        _ => Some(User {
            // A device with an email but no user name (rare; seen on
            // staged devices) is still linked, keyed by the email.
            mdm_user_id: user_name
                .clone()
                .or_else(|| email.clone())
                .unwrap_or_default(),
            username: user_name,
            email,
            first_name: None,
            last_name: None,
        }),
    };
    Ok(Device {
        reported_risk: None,
        posture: posture(record),
        mdm_device_id,
        identifiers: Identifiers {
            udid: text(record, "Udid").and_then(|v| normalize_udid(&v)),
            serial: text(record, "SerialNumber").and_then(|v| normalize_serial(&v)),
            imei: text(record, "Imei").and_then(|v| normalize_imei(&v)),
            mac: text(record, "MacAddress").and_then(|v| normalize_mac(&v)),
        },
        name: text(record, "DeviceFriendlyName"),
        platform: text(record, "Platform")
            .map(|p| Platform::from_vendor(&p))
            .unwrap_or_default(),
        model: text(record, "Model"),
        os_version: text(record, "OperatingSystem"),
        ownership: ownership(text(record, "Ownership").as_deref()),
        user,
        groups: text(record, "LocationGroupName").into_iter().collect(),
        last_checkin_at: text(record, "LastSeen").and_then(|t| timestamp(&t)),
    })
}

/// What the device record says of the device's state.
///
/// - `EnrollmentStatus` `Enrolled` is enrolled; any other status
///   (`Unenrolled`, `EnrollmentInProgress`, `EnterpriseWipePending`, …) is
///   not, or no longer.
/// - `ComplianceStatus` `Compliant` / `NonCompliant`; `NotAvailable`,
///   `PendingComplianceCheck` and anything else are not a verdict (`None`).
/// - `CompromisedStatus` is a boolean in the device search; event payloads
///   write it as text, so `"true"`/`"false"` are read too and `""` is `None`.
/// - Encryption and passcode: `None`, per MDM-APIS.md (the listing is not
///   taken to say; `DataEncryptionYN` is left unread on purpose).
/// - The manufacturer is `OEMInfo` (`"Samsung"`, `"Dell Inc."` in the
///   public examples of the device search answer).
fn posture(record: &Value) -> Posture {
    let word = |key: &str| text(record, key).map(|t| t.to_ascii_lowercase());
    Posture {
        compliant: word("ComplianceStatus").and_then(|w| match w.as_str() {
            "compliant" => Some(true),
            "noncompliant" | "non compliant" | "non-compliant" => Some(false),
            _ => None,
        }),
        enrolled: word("EnrollmentStatus").map(|w| w == "enrolled"),
        encrypted: None,
        passcode: None,
        compromised: match record.get("CompromisedStatus") {
            Some(Value::Bool(b)) => Some(*b),
            _ => word("CompromisedStatus").and_then(|w| match w.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }),
        },
        manufacturer: text(record, "OEMInfo"),
        phone_number: text(record, "PhoneNumber"),
    }
}

/// One user of `/API/system/users/search`, keyed by `UserName` (not `Id.Value`):
/// devices name their user only by `UserName`, so this is the key both
/// listings share. A user without one is skipped.
pub(crate) fn user(record: &Value) -> Result<User, String> {
    if !record.is_object() {
        return Err("user record is not a JSON object".into());
    }
    let user_name = text(record, "UserName").ok_or("user without a UserName")?;
    Ok(User {
        mdm_user_id: user_name.clone(),
        username: Some(user_name),
        email: text(record, "Email"),
        first_name: text(record, "FirstName"),
        last_name: text(record, "LastName"),
    })
}

/// One organisation group of `/API/system/groups/search`, keyed by its
/// `Name` because that is what a device's `LocationGroupName` holds. The `Id`
/// (`{"Value":n}` in v1, a plain number in v2) is not needed for the join.
pub(crate) fn group(record: &Value) -> Result<Group, String> {
    if !record.is_object() {
        return Err("group record is not a JSON object".into());
    }
    let name = text(record, "Name").ok_or("organisation group without a Name")?;
    Ok(Group {
        mdm_group_id: name.clone(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_device_record_maps_every_field() {
        let d = device(&json!({
            "Id": {"Value": 17},
            "Uuid": "ignored",
            "Udid": "a1b2c3d4e5",
            "SerialNumber": " f17xk0abcd ",
            "MacAddress": "A467060C153D",
            "Imei": "35 209900 176148 1",
            "DeviceFriendlyName": "Anna's iPhone",
            "LocationGroupName": "Sales",
            "UserName": "anna",
            "UserEmailAddress": "anna@example.com",
            "Ownership": "C",
            "Platform": "Apple",
            "Model": "iPhone 12",
            "OperatingSystem": "16.4.1",
            "LastSeen": "2018-03-15T08:08:09.460",
            "SomethingNew": {"nested": true}
        }))
        .unwrap();
        assert_eq!(d.mdm_device_id, "17");
        assert_eq!(d.identifiers.udid.as_deref(), Some("A1B2C3D4E5"));
        assert_eq!(d.identifiers.serial.as_deref(), Some("F17XK0ABCD"));
        assert_eq!(d.identifiers.mac.as_deref(), Some("a467060c153d"));
        assert_eq!(d.identifiers.imei.as_deref(), Some("352099001761481"));
        assert_eq!(d.name.as_deref(), Some("Anna's iPhone"));
        assert_eq!(d.platform, Platform::Ios);
        assert_eq!(d.ownership, Ownership::Corporate);
        assert_eq!(d.groups, vec!["Sales".to_string()]);
        let u = d.user.unwrap();
        assert_eq!(u.mdm_user_id, "anna");
        assert_eq!(u.email.as_deref(), Some("anna@example.com"));
        assert_eq!(
            d.last_checkin_at.unwrap().to_rfc3339(),
            "2018-03-15T08:08:09.460+00:00"
        );
    }

    #[test]
    fn posture_maps_enrollment_compliance_compromise_oem_and_phone() {
        let d = device(&json!({
            "Id": {"Value": 17},
            "Platform": "Android",
            "Model": "SM-G991B",
            "OperatingSystem": "14.0.0",
            "LastSeen": "2018-03-15T08:08:09.460",
            "EnrollmentStatus": "Enrolled",
            "ComplianceStatus": "NonCompliant",
            "CompromisedStatus": true,
            "OEMInfo": "Samsung",
            "PhoneNumber": "+14045550100",
            "DataEncryptionYN": "Y"
        }))
        .unwrap();
        assert_eq!(
            d.posture,
            Posture {
                compliant: Some(false),
                enrolled: Some(true),
                encrypted: None,
                passcode: None,
                compromised: Some(true),
                manufacturer: Some("Samsung".into()),
                phone_number: Some("+14045550100".into()),
            }
        );
        assert_eq!(d.model.as_deref(), Some("SM-G991B"));
        assert_eq!(d.os_version.as_deref(), Some("14.0.0"));
        assert!(d.last_checkin_at.is_some());
    }

    #[test]
    fn every_status_word_maps_or_is_none_and_compromised_is_read_from_text_too() {
        let p = |pairs: serde_json::Value| {
            let mut record = json!({"Id": {"Value": 1}});
            for (k, v) in pairs.as_object().unwrap() {
                record[k] = v.clone();
            }
            device(&record).unwrap().posture
        };
        for (raw, want) in [
            ("Enrolled", Some(true)),
            ("enrolled", Some(true)),
            ("Unenrolled", Some(false)),
            ("EnrollmentInProgress", Some(false)),
            ("EnterpriseWipePending", Some(false)),
            ("", None),
        ] {
            assert_eq!(
                p(json!({"EnrollmentStatus": raw})).enrolled,
                want,
                "{raw:?}"
            );
        }
        for (raw, want) in [
            ("Compliant", Some(true)),
            ("NonCompliant", Some(false)),
            ("noncompliant", Some(false)),
            ("NotAvailable", None),
            ("PendingComplianceCheck", None),
            ("", None),
        ] {
            assert_eq!(
                p(json!({"ComplianceStatus": raw})).compliant,
                want,
                "{raw:?}"
            );
        }
        for (raw, want) in [
            (json!(true), Some(true)),
            (json!(false), Some(false)),
            (json!("True"), Some(true)),
            (json!("false"), Some(false)),
            (json!(""), None),
            (json!(null), None),
            (json!("Unknown"), None),
        ] {
            assert_eq!(
                p(json!({"CompromisedStatus": raw})).compromised,
                want,
                "{raw}"
            );
        }
        let blank = p(json!({"OEMInfo": "", "PhoneNumber": "  ", "EnrollmentStatus": null}));
        assert_eq!(blank, Posture::default());
    }

    #[test]
    fn ids_are_read_in_every_shape_and_a_missing_id_skips_the_record() {
        assert_eq!(id(&json!({"Id": {"Value": 5}}), "Id").as_deref(), Some("5"));
        assert_eq!(id(&json!({"Id": 5}), "Id").as_deref(), Some("5"));
        assert_eq!(id(&json!({"Id": "5"}), "Id").as_deref(), Some("5"));
        assert_eq!(id(&json!({"Id": {"Value": null}}), "Id"), None);
        assert!(device(&json!({"Udid": "X"})).unwrap_err().contains("Id"));
        assert!(device(&json!(3)).is_err());
    }

    #[test]
    fn a_device_without_user_name_and_email_has_no_user() {
        let d =
            device(&json!({"Id": {"Value": 1}, "UserName": "", "UserEmailAddress": null})).unwrap();
        assert_eq!(d.user, None);
        let d = device(&json!({"Id": {"Value": 1}, "UserEmailAddress": "x@example.com"})).unwrap();
        assert_eq!(d.user.unwrap().mdm_user_id, "x@example.com");
    }

    #[test]
    fn timestamps_with_and_without_zone_are_read_and_min_value_is_never() {
        let t = |s| timestamp(s).map(|t| t.to_rfc3339());
        assert_eq!(
            t("2018-03-15T08:08:09").as_deref(),
            Some("2018-03-15T08:08:09+00:00")
        );
        assert_eq!(
            t("2018-03-15T08:08:09+02:00").as_deref(),
            Some("2018-03-15T06:08:09+00:00")
        );
        assert_eq!(
            t("2018-03-15T08:08:09Z").as_deref(),
            Some("2018-03-15T08:08:09+00:00")
        );
        assert_eq!(t("0001-01-01T00:00:00"), None);
        assert_eq!(t("yesterday"), None);
    }

    #[test]
    fn ownership_letters_map_and_everything_else_is_unknown() {
        assert_eq!(ownership(Some("C")), Ownership::Corporate);
        assert_eq!(ownership(Some("e")), Ownership::Personal);
        assert_eq!(ownership(Some("S")), Ownership::Shared);
        assert_eq!(ownership(Some("Corporate")), Ownership::Unknown);
        assert_eq!(ownership(Some("X")), Ownership::Unknown);
        assert_eq!(ownership(None), Ownership::Unknown);
    }

    #[test]
    fn users_and_groups_are_keyed_by_name() {
        let u = user(
            &json!({"Id": {"Value": 9}, "UserName": "anna", "FirstName": "Anna",
            "LastName": "Berg", "Email": "anna@example.com"}),
        )
        .unwrap();
        assert_eq!(u.mdm_user_id, "anna");
        assert_eq!(u.last_name.as_deref(), Some("Berg"));
        assert!(user(&json!({"Id": {"Value": 9}})).is_err());
        let g = group(&json!({"Id": 7, "Name": "Sales"})).unwrap();
        assert_eq!(g.mdm_group_id, "Sales");
        assert!(group(&json!({"Id": 7})).is_err());
    }
}
