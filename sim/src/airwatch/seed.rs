//! Deterministic AirWatch data: the same seed gives the same organisation
//! groups, users and devices, in the same order, on every run (`StdRng` from
//! `rand` 0.8; timestamps count back from a fixed instant, never from "now").
//!
//! Variety, as `MDM-APIS.md` describes real payloads: `Apple` iPhones (40-hex
//! or the newer `00008110-…` UDID) and Wi-Fi iPads without an IMEI or phone
//! number, `Android` devices (32 lower-case hex UDID), a few `AppleOsX` and
//! `WinRT` devices; `Ownership` `C`, `E`, `S` and a few `Undefined`; several
//! organisation groups; ~8 % of devices without a user (empty `UserName` and
//! `UserEmailAddress`, no `UserId`); ~12 % of users without an email (`""`);
//! users with more than one device; `LastSeen` without a zone, mostly with
//! milliseconds and sometimes without a fraction.
//!
//! Posture, as the device search carries it: `EnrollmentStatus` (`Enrolled`
//! ~93 %, `Unenrolled`, `EnrollmentInProgress`), `ComplianceStatus`
//! (`Compliant` ~80 %, `NonCompliant`, `NotAvailable`), `CompromisedStatus`
//! (a boolean, `true` for ~3 %, and those are always `NonCompliant`),
//! `PhoneNumber` (E.164 on every device with a SIM, `""` on Wi-Fi iPads,
//! Macs and PCs), `OEMInfo` (`Apple`; `Samsung`, `Google`, `Zebra
//! Technologies`, `motorola`; `Microsoft Corporation`, `Dell Inc.`),
//! `DataEncryptionYN` (`Y` ~95 %) and `LastSeen`.

use std::collections::HashSet;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::{json, Map, Value};

use crate::seed::{
    ascii_fold, imei, phone, random_chars, uuid, ANDROID_TACS, APPLE_SERIAL_CHARS, FIRST_NAMES,
    HEX_LOWER, HEX_UPPER, IOS_MODELS, IOS_TACS, LAST_NAMES, UPPER_ALNUM,
};

/// An organisation group: id, name, short code, type, parent id.
pub(crate) struct OrgGroup {
    pub(crate) id: u64,
    pub(crate) name: &'static str,
    pub(crate) group_id: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) parent: Option<u64>,
}

/// The organisation group tree: `Global` → `Acme Corp` → departments.
pub(crate) const ORG_GROUPS: &[OrgGroup] = &[
    OrgGroup {
        id: 7,
        name: "Global",
        group_id: "Global",
        kind: "Global",
        parent: None,
    },
    OrgGroup {
        id: 570,
        name: "Acme Corp",
        group_id: "acme",
        kind: "Customer",
        parent: Some(7),
    },
    OrgGroup {
        id: 571,
        name: "Sales",
        group_id: "acme-sales",
        kind: "Container",
        parent: Some(570),
    },
    OrgGroup {
        id: 572,
        name: "Retail Stores",
        group_id: "acme-retail",
        kind: "Container",
        parent: Some(571),
    },
    OrgGroup {
        id: 573,
        name: "Engineering Berlin",
        group_id: "acme-eng-ber",
        kind: "Container",
        parent: Some(570),
    },
    OrgGroup {
        id: 574,
        name: "Engineering Toronto",
        group_id: "acme-eng-tor",
        kind: "Container",
        parent: Some(570),
    },
    OrgGroup {
        id: 575,
        name: "Support",
        group_id: "acme-support",
        kind: "Container",
        parent: Some(570),
    },
    OrgGroup {
        id: 576,
        name: "Executives",
        group_id: "acme-exec",
        kind: "Container",
        parent: Some(570),
    },
    OrgGroup {
        id: 577,
        name: "Kiosks",
        group_id: "acme-kiosk",
        kind: "Container",
        parent: Some(570),
    },
];

/// The groups devices and users sit in (every one but `Global`).
fn device_groups() -> Vec<&'static OrgGroup> {
    ORG_GROUPS.iter().filter(|g| g.parent.is_some()).collect()
}

/// (Model, OS versions, serial prefix, `OEMInfo`)
const ANDROID_MODELS: &[(&str, &[&str], &str, &str)] = &[
    ("SM-G991B", &["13.0.0", "14.0.0"], "R5C", "Samsung"),
    ("SM-A536B", &["13.0.0", "14.0.0"], "R58", "Samsung"),
    ("Pixel 7", &["14.0.0", "15.0.0"], "2B1", "Google"),
    ("Pixel 8", &["14.0.0", "15.0.0"], "3A0", "Google"),
    ("TC52", &["11.0.0", "13.0.0"], "2113", "Zebra Technologies"),
    ("moto g54 5G", &["13.0.0", "14.0.0"], "ZY2", "motorola"),
];
const MAC_MODELS: &[(&str, &[&str])] = &[
    ("MacBook Pro (14-inch, 2023)", &["14.6.1", "15.1"]),
    ("MacBook Air (M2, 2022)", &["14.6.1", "15.1"]),
];
/// (Model, OS versions, `OEMInfo`)
const WINDOWS_MODELS: &[(&str, &[&str], &str)] = &[
    (
        "Surface Pro 9",
        &["10.0.22631", "10.0.26100"],
        "Microsoft Corporation",
    ),
    ("Latitude 7440", &["10.0.22631"], "Dell Inc."),
];

/// The instant seeded `LastSeen` values count back from.
fn reference_time() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 20)
        .and_then(|d| d.and_hms_milli_opt(8, 8, 9, 460))
        .expect("a valid fixed date")
}

/// AirWatch's zone-less timestamp (`2026-11-20T08:08:09.460`).
pub(crate) fn airwatch_time(t: NaiveDateTime, with_fraction: bool) -> String {
    if with_fraction {
        t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// Generates users and devices; keeps its RNG and what it handed out so more
/// devices (the control API's "generate") continue the same deterministic
/// sequence without reusing an identifier.
#[derive(Debug)]
pub(crate) struct Seeder {
    rng: StdRng,
    next_device_id: u64,
    next_user_id: u64,
    next_index: usize,
    used: HashSet<String>,
}

impl Seeder {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            // Offset so the AirWatch data set differs from the SOTI one of the
            // same seed (nobody should mistake one for the other).
            rng: StdRng::seed_from_u64(seed ^ 0x4d43_4d53),
            next_device_id: 1001,
            next_user_id: 201,
            next_index: 0,
            used: HashSet::new(),
        }
    }

    /// The next free device id (ids grow with gaps, as deletions leave).
    pub(crate) fn take_device_id(&mut self) -> u64 {
        let id = self.next_device_id;
        self.next_device_id += self.rng.gen_range(1..=3);
        id
    }

    /// The next free user id.
    pub(crate) fn take_user_id(&mut self) -> u64 {
        let id = self.next_user_id;
        self.next_user_id += 1;
        id
    }

    /// Keeps ids handed out by the control API from being reused.
    pub(crate) fn reserve_device_id(&mut self, id: u64) {
        self.next_device_id = self.next_device_id.max(id + 1);
    }

    pub(crate) fn reserve_user_id(&mut self, id: u64) {
        self.next_user_id = self.next_user_id.max(id + 1);
    }

    fn unique(&mut self, kind: &str, mut make: impl FnMut(&mut StdRng) -> String) -> String {
        loop {
            let candidate = make(&mut self.rng);
            if self
                .used
                .insert(format!("{kind}:{}", candidate.to_ascii_uppercase()))
            {
                return candidate;
            }
        }
    }

    /// `n` users.
    pub(crate) fn users(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.user()).collect()
    }

    fn user(&mut self) -> Value {
        let first = *FIRST_NAMES.choose(&mut self.rng).expect("non-empty");
        let last = *LAST_NAMES.choose(&mut self.rng).expect("non-empty");
        let base = format!("{}.{}", ascii_fold(first), ascii_fold(last));
        let mut user_name = base.clone();
        let mut n = 1;
        while !self
            .used
            .insert(format!("user:{}", user_name.to_ascii_uppercase()))
        {
            n += 1;
            user_name = format!("{base}{n}");
        }
        let id = self.take_user_id();
        let group = *device_groups().choose(&mut self.rng).expect("non-empty");
        let email = if self.rng.gen_bool(0.12) {
            String::new()
        } else {
            format!("{user_name}@acme.example")
        };
        let directory = self.rng.gen_bool(0.7);
        let mut u = Map::new();
        u.insert("Id".into(), json!({ "Value": id }));
        u.insert("Uuid".into(), json!(uuid(&mut self.rng)));
        u.insert("UserName".into(), json!(user_name));
        u.insert("FirstName".into(), json!(first));
        u.insert("LastName".into(), json!(last));
        u.insert("Status".into(), json!(self.rng.gen_bool(0.95)));
        u.insert("Email".into(), json!(email));
        u.insert(
            "SecurityType".into(),
            json!(if directory { "Directory" } else { "Basic" }),
        );
        u.insert("ContactNumber".into(), json!(""));
        u.insert("MobileNumber".into(), json!(phone(&mut self.rng)));
        u.insert("Group".into(), json!(group.name));
        u.insert("LocationGroupId".into(), json!(group.id.to_string()));
        u.insert("Role".into(), json!("Full Access"));
        u.insert("MessageType".into(), json!("Email"));
        Value::Object(u)
    }

    /// The next `n` devices; their users are drawn from `users`.
    pub(crate) fn devices(&mut self, n: usize, users: &[Value]) -> Vec<Value> {
        (0..n).map(|_| self.device(users)).collect()
    }

    fn device(&mut self, users: &[Value]) -> Value {
        let index = self.next_index;
        self.next_index += 1;
        let id = self.take_device_id();
        let user = if users.is_empty() || self.rng.gen_bool(0.08) {
            None
        } else {
            users.choose(&mut self.rng).cloned()
        };
        let group = match &user {
            // Most devices sit in their user's group; some were moved.
            Some(u) if self.rng.gen_bool(0.8) => {
                let name = u["Group"].as_str().unwrap_or_default();
                ORG_GROUPS
                    .iter()
                    .find(|g| g.name == name)
                    .unwrap_or(&ORG_GROUPS[1])
            }
            Some(_) => *device_groups().choose(&mut self.rng).expect("non-empty"),
            None => &ORG_GROUPS[ORG_GROUPS.len() - 1],
        };
        let ownership = match self.rng.gen_range(0..100) {
            0..=54 => "C",
            55..=84 => "E",
            85..=95 => "S",
            _ => "Undefined",
        };
        let mac = self.unique("mac", |rng| {
            let mut bytes: [u8; 6] = rng.gen();
            bytes[0] = (bytes[0] | 0x02) & 0xfe;
            bytes.iter().map(|b| format!("{b:02X}")).collect()
        });
        let platform_roll = self.rng.gen_range(0..100);
        let (platform, model, os, udid, serial, imei, cellular, oem) = match platform_roll {
            0..=51 => {
                let (model, versions, ipad) = *IOS_MODELS.choose(&mut self.rng).expect("non-empty");
                let newer = self.rng.gen_bool(0.5);
                let udid = self.unique("udid", |rng| {
                    if newer {
                        format!(
                            "00008{}-{}",
                            random_chars(rng, b"0123", 3),
                            random_chars(rng, HEX_UPPER, 16)
                        )
                    } else {
                        random_chars(rng, HEX_UPPER, 40)
                    }
                });
                let serial = self.unique("serial", |rng| random_chars(rng, APPLE_SERIAL_CHARS, 12));
                let imei = if ipad {
                    String::new()
                } else {
                    let tac = *IOS_TACS.choose(&mut self.rng).expect("non-empty");
                    self.unique("imei", |rng| imei(rng, tac))
                };
                let os = *versions.choose(&mut self.rng).expect("non-empty");
                ("Apple", model, os, udid, serial, imei, !ipad, "Apple")
            }
            52..=89 => {
                let (model, versions, prefix, oem) =
                    *ANDROID_MODELS.choose(&mut self.rng).expect("non-empty");
                let udid = self.unique("udid", |rng| random_chars(rng, HEX_LOWER, 32));
                let serial = self.unique("serial", |rng| {
                    format!(
                        "{prefix}{}",
                        random_chars(rng, UPPER_ALNUM, 11 - prefix.len())
                    )
                });
                let tac = *ANDROID_TACS.choose(&mut self.rng).expect("non-empty");
                let imei = self.unique("imei", |rng| imei(rng, tac));
                let os = *versions.choose(&mut self.rng).expect("non-empty");
                ("Android", model, os, udid, serial, imei, true, oem)
            }
            90..=94 => {
                let (model, versions) = *MAC_MODELS.choose(&mut self.rng).expect("non-empty");
                let udid = self.unique("udid", |rng| uuid(rng).to_ascii_uppercase());
                let serial = self.unique("serial", |rng| random_chars(rng, APPLE_SERIAL_CHARS, 10));
                let os = *versions.choose(&mut self.rng).expect("non-empty");
                let oem = "Apple";
                (
                    "AppleOsX",
                    model,
                    os,
                    udid,
                    serial,
                    String::new(),
                    false,
                    oem,
                )
            }
            _ => {
                let (model, versions, oem) =
                    *WINDOWS_MODELS.choose(&mut self.rng).expect("non-empty");
                let udid = self.unique("udid", |rng| random_chars(rng, HEX_UPPER, 32));
                let serial = self.unique("serial", |rng| random_chars(rng, UPPER_ALNUM, 12));
                let os = *versions.choose(&mut self.rng).expect("non-empty");
                ("WinRT", model, os, udid, serial, String::new(), false, oem)
            }
        };
        let last_seen = reference_time()
            - Duration::seconds(self.rng.gen_range(0..60 * 60 * 24 * 30))
            - Duration::milliseconds(self.rng.gen_range(0..1000));
        let enrolled_on = last_seen
            - Duration::days(self.rng.gen_range(1..900))
            - Duration::seconds(self.rng.gen_range(0..86_400));
        let enrollment = match self.rng.gen_range(0..100) {
            0..=92 => "Enrolled",
            93..=96 => "Unenrolled",
            _ => "EnrollmentInProgress",
        };
        let compliance = match self.rng.gen_range(0..100) {
            0..=79 => "Compliant",
            80..=93 => "NonCompliant",
            _ => "NotAvailable",
        };
        let suffix = &serial[serial.len().saturating_sub(4)..];
        let name = match &user {
            Some(u) => format!(
                "{} {} {platform} {os} - {suffix}",
                u["FirstName"].as_str().unwrap_or_default(),
                u["LastName"].as_str().unwrap_or_default(),
            ),
            None => format!("Kiosk-{index:05} {platform} {os}"),
        };

        let mut d = Map::new();
        d.insert("Id".into(), json!({ "Value": id }));
        d.insert("Uuid".into(), json!(uuid(&mut self.rng)));
        d.insert("Udid".into(), json!(udid));
        d.insert("SerialNumber".into(), json!(serial));
        d.insert("MacAddress".into(), json!(mac));
        d.insert("Imei".into(), json!(imei));
        d.insert(
            "EasId".into(),
            json!(random_chars(&mut self.rng, UPPER_ALNUM, 20)),
        );
        d.insert("AssetNumber".into(), json!(udid));
        d.insert("DeviceFriendlyName".into(), json!(name));
        d.insert("DeviceReportedName".into(), json!(model));
        d.insert(
            "LocationGroupId".into(),
            json!({ "Id": { "Value": group.id }, "Name": group.name, "Uuid": group_uuid(group.id) }),
        );
        d.insert("LocationGroupName".into(), json!(group.name));
        match &user {
            Some(u) => {
                d.insert(
                    "UserId".into(),
                    json!({ "Id": { "Value": u["Id"]["Value"] }, "Name": format!(
                        "{} {}",
                        u["FirstName"].as_str().unwrap_or_default(),
                        u["LastName"].as_str().unwrap_or_default()
                    ), "Uuid": u["Uuid"] }),
                );
                d.insert("UserName".into(), u["UserName"].clone());
                d.insert("UserEmailAddress".into(), u["Email"].clone());
            }
            None => {
                d.insert("UserName".into(), json!(""));
                d.insert("UserEmailAddress".into(), json!(""));
            }
        }
        d.insert("Ownership".into(), json!(ownership));
        d.insert(
            "PlatformId".into(),
            json!({ "Id": { "Value": platform_id(platform) }, "Name": platform }),
        );
        d.insert("Platform".into(), json!(platform));
        d.insert("Model".into(), json!(model));
        d.insert("OperatingSystem".into(), json!(os));
        d.insert(
            "PhoneNumber".into(),
            json!(if cellular {
                phone(&mut self.rng)
            } else {
                String::new()
            }),
        );
        let with_fraction = self.rng.gen_bool(0.9);
        d.insert(
            "LastSeen".into(),
            json!(airwatch_time(last_seen, with_fraction)),
        );
        d.insert("EnrollmentStatus".into(), json!(enrollment));
        let compromised = self.rng.gen_bool(0.03);
        // A compliance policy with the compromised-status rule (AirWatch's
        // usual one) marks a jailbroken or rooted device non-compliant.
        let compliance = if compromised {
            "NonCompliant"
        } else {
            compliance
        };
        d.insert("ComplianceStatus".into(), json!(compliance));
        d.insert("CompromisedStatus".into(), json!(compromised));
        d.insert(
            "LastEnrolledOn".into(),
            json!(airwatch_time(enrolled_on, true)),
        );
        d.insert(
            "IsSupervised".into(),
            json!(platform == "Apple" && self.rng.gen_bool(0.7)),
        );
        d.insert(
            "DataEncryptionYN".into(),
            json!(if self.rng.gen_bool(0.95) { "Y" } else { "N" }),
        );
        d.insert("AcLineStatus".into(), json!(0));
        d.insert("OEMInfo".into(), json!(oem));
        Value::Object(d)
    }
}

fn platform_id(platform: &str) -> u64 {
    match platform {
        "Apple" => 2,
        "Android" => 5,
        "AppleOsX" => 10,
        "WinRT" => 12,
        _ => 0,
    }
}

/// A stable UUID for an organisation group.
pub(crate) fn group_uuid(id: u64) -> String {
    format!("6f1c0c2e-0000-4000-8000-{id:012}")
}

/// The organisation group whose name is `name` (case-insensitive).
pub(crate) fn org_group(name: &str) -> Option<&'static OrgGroup> {
    ORG_GROUPS
        .iter()
        .find(|g| g.name.eq_ignore_ascii_case(name))
}

/// The fixed creation time of the seeded groups.
pub(crate) fn groups_created_on() -> String {
    let t = DateTime::from_timestamp(1_577_872_800, 0)
        .expect("a valid fixed instant")
        .naive_utc();
    airwatch_time(t, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::luhn_check_digit;

    fn data(seed: u64, n: usize) -> (Vec<Value>, Vec<Value>) {
        let mut s = Seeder::new(seed);
        let users = s.users(n * 3 / 4);
        let devices = s.devices(n, &users);
        (users, devices)
    }

    #[test]
    fn the_same_seed_gives_the_same_data_and_another_seed_does_not() {
        assert_eq!(data(7, 300), data(7, 300));
        assert_ne!(data(7, 300).1, data(8, 300).1);
    }

    #[test]
    fn identifiers_have_the_documented_formats_and_are_unique() {
        let (_, devices) = data(3, 2000);
        let mut seen = HashSet::new();
        for d in &devices {
            let id = d["Id"]["Value"].as_u64().unwrap();
            assert!(seen.insert(format!("id:{id}")));
            for field in ["Udid", "SerialNumber", "MacAddress"] {
                let v = d[field].as_str().unwrap();
                assert!(!v.is_empty());
                assert!(
                    seen.insert(format!("{field}:{}", v.to_uppercase())),
                    "{field} {v}"
                );
            }
            let mac = d["MacAddress"].as_str().unwrap();
            assert_eq!(mac.len(), 12);
            assert!(mac
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
            let imei = d["Imei"].as_str().unwrap();
            if !imei.is_empty() {
                assert!(seen.insert(format!("imei:{imei}")));
                let (payload, check) = imei.split_at(14);
                assert_eq!(luhn_check_digit(payload), check.parse::<u8>().unwrap());
            }
            let last_seen = d["LastSeen"].as_str().unwrap();
            assert!(
                !last_seen.ends_with('Z') && !last_seen.contains('+'),
                "{last_seen}"
            );
            assert!(NaiveDateTime::parse_from_str(last_seen, "%Y-%m-%dT%H:%M:%S%.f").is_ok());
        }
    }

    #[test]
    fn posture_is_varied_and_consistent_with_platform_and_compromise() {
        let (_, devices) = data(11, 1000);
        let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
        for (field, value, at_least) in [
            ("EnrollmentStatus", json!("Enrolled"), 850),
            ("EnrollmentStatus", json!("Unenrolled"), 10),
            ("ComplianceStatus", json!("Compliant"), 700),
            ("ComplianceStatus", json!("NonCompliant"), 80),
            ("ComplianceStatus", json!("NotAvailable"), 20),
            ("CompromisedStatus", json!(true), 5),
            ("CompromisedStatus", json!(false), 900),
            ("PhoneNumber", json!(""), 50),
        ] {
            assert!(count(&|d| d[field] == value) > at_least, "{field} {value}");
        }
        assert!(count(&|d| d["PhoneNumber"].as_str().unwrap().starts_with('+')) > 600);
        for d in &devices {
            if d["CompromisedStatus"] == true {
                assert_eq!(d["ComplianceStatus"], "NonCompliant", "{d}");
            }
            let oem = d["OEMInfo"].as_str().unwrap();
            match d["Platform"].as_str().unwrap() {
                "Apple" | "AppleOsX" => assert_eq!(oem, "Apple"),
                _ => assert!(!oem.is_empty() && oem != "Apple", "{d}"),
            }
        }
    }

    #[test]
    fn the_data_set_has_the_variety_real_servers_show() {
        let (users, devices) = data(11, 2000);
        let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
        for (platform, at_least) in [
            ("Apple", 700),
            ("Android", 500),
            ("AppleOsX", 40),
            ("WinRT", 40),
        ] {
            assert!(
                count(&|d| d["Platform"] == platform) > at_least,
                "{platform}"
            );
        }
        for (ownership, at_least) in [("C", 800), ("E", 400), ("S", 100), ("Undefined", 30)] {
            assert!(
                count(&|d| d["Ownership"] == ownership) > at_least,
                "{ownership}"
            );
        }
        assert!(count(&|d| d["UserName"] == "") > 80);
        assert!(count(&|d| d["UserName"] != "" && d["UserEmailAddress"] == "") > 80);
        assert!(count(&|d| d["Imei"] == "") > 200);
        assert!(count(&|d| !d["LastSeen"].as_str().unwrap().contains('.')) > 50);
        assert!(users.iter().filter(|u| u["Email"] == "").count() > 80);
        for g in device_groups() {
            assert!(
                count(&|d| d["LocationGroupName"] == g.name) > 50,
                "{}",
                g.name
            );
        }
        let mut per_user = std::collections::HashMap::new();
        for d in &devices {
            *per_user.entry(d["UserName"].as_str().unwrap()).or_insert(0) += 1;
        }
        assert!(per_user.iter().any(|(u, n)| !u.is_empty() && *n > 1));
    }
}
