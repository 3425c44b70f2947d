//! Deterministic MaaS360 data: the same seed gives the same users and
//! devices, in the same order, on every run (`StdRng` from `rand` 0.8;
//! timestamps count back from a fixed instant, never from "now").
//!
//! Variety, as `MDM-APIS.md` and the public clients describe real answers:
//! `iOS` iPhones and Wi-Fi iPads (no IMEI, no phone number), `Android`
//! phones (the device id is also the `udid`, and employee-owned ones often
//! report no serial), a few `Windows` and `Mac` computers; `ownership`
//! `Corporate Owned`, `Employee Owned`, and the values the docs do not list
//! (`Shared`, `Not Specified`, `""`); ~8 % of devices without a user
//! (`username`, `emailAddress`, `userDomain` all `""`); users with more than
//! one device, users without any, users without an email (`""`) and users
//! whose user name is their email address. The leniency the docs warn
//! about: `osVersion` sometimes a JSON number (`14`, `18.1`), `imeiEsn` a
//! number for ~40 % of the devices that have one and `""` for the others,
//! `phoneNumber` sometimes a number, `mailboxLastReportedInEpochms` `""`.
//! `lastReported` has no zone (UTC) and agrees with `lastReportedInEpochms`.
//!
//! Posture, in MaaS360's words: `policyComplianceState` (`In Compliance`
//! ~85 %, else `Out of Compliance`), `maas360ManagedStatus` (`Enrolled` ~86
//! %, `Activated`, `Control Removed`, `Pending Control Removed`, `Not
//! Enrolled`), `encryptionStatus` (`Encryption Complete` for every iOS
//! device and ~85 % of the others, else `Not Encrypted`),
//! `passcodeCompliance` (`Compliant` ~82 %, `Not Compliant`, `""`),
//! `jailbreakStatus` (`Yes` for ~3 % of phones and tablets, and those are
//! always `Out of Compliance`), `manufacturer` (`Apple` for iOS and Mac;
//! `samsung`, `Google`, `Zebra Technologies`, `motorola` for Android;
//! `Microsoft Corporation`, `Dell Inc.` for Windows), `phoneNumber` (~70 %
//! of devices with a SIM, E.164, sometimes as a JSON number without the
//! `+`; `""` otherwise).

use std::collections::HashSet;

use chrono::{Duration, NaiveDate, NaiveDateTime};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::{json, Map, Number, Value};

use crate::seed::{
    ascii_fold, imei, phone, random_chars, uuid, ANDROID_TACS, APPLE_SERIAL_CHARS, FIRST_NAMES,
    HEX_LOWER, HEX_UPPER, IOS_MODELS, IOS_TACS, LAST_NAMES, UPPER_ALNUM,
};

/// The email domain of the seeded company.
pub(crate) const EMAIL_DOMAIN: &str = "acme.example";
/// The user directory domain of directory (`authType` 1) users.
pub(crate) const DIRECTORY_DOMAIN: &str = "CORP";

/// The user groups a seeded user belongs to besides `All Users`.
const USER_GROUPS: &[&str] = &[
    "Sales",
    "Engineering",
    "Support",
    "Executives",
    "Field Service",
];

/// (manufacturer, model, OS versions with their build ids, serial prefix)
type AndroidModel = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const ANDROID_MODELS: &[AndroidModel] = &[
    (
        "samsung",
        "SM-G991B",
        &[("13", "TP1A.220624.014"), ("14", "UP1A.231005.007")],
        "R5C",
    ),
    (
        "samsung",
        "SM-A536B",
        &[("13", "TP1A.220624.014"), ("14", "UP1A.231005.007")],
        "R58",
    ),
    (
        "Google",
        "Pixel 7",
        &[("14", "AP1A.240405.002"), ("15", "AP3A.241005.015")],
        "2B1",
    ),
    (
        "Google",
        "Pixel 8",
        &[("14", "AP2A.240805.005"), ("15", "AP4A.250105.002")],
        "3A0",
    ),
    (
        "Zebra Technologies",
        "TC52",
        &[("11", "RKQ1.201217.002"), ("13", "TKQ1.230127.002")],
        "2113",
    ),
    (
        "motorola",
        "moto g54 5G",
        &[("13", "T1TD33.43-48-5"), ("14", "U1TDS34.94-12-7")],
        "ZY2",
    ),
];

/// (manufacturer, model, device type, OS name, OS version)
const WINDOWS_MODELS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "Microsoft Corporation",
        "Surface Pro 9",
        "Laptop",
        "Windows 11 Enterprise",
        "10.0.22631",
    ),
    (
        "Dell Inc.",
        "Latitude 7440",
        "Laptop",
        "Windows 11 Pro",
        "10.0.26100",
    ),
    (
        "Dell Inc.",
        "OptiPlex 7010",
        "Desktop",
        "Windows 10 Enterprise",
        "10.0.19045",
    ),
];

/// (model, macOS name, versions)
const MAC_MODELS: &[(&str, &str, &[&str])] = &[
    ("MacBook Pro (14-inch, 2023)", "Sonoma", &["14.6.1"]),
    ("MacBook Air (M2, 2022)", "Sequoia", &["15.1", "15.2"]),
];

/// The instant seeded timestamps count back from.
fn reference_time() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 20)
        .and_then(|d| d.and_hms_opt(16, 11, 23))
        .expect("a valid fixed date")
}

/// MaaS360's zone-less timestamp (`2019-04-23T16:11:23`, UTC).
pub(crate) fn maas_time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn epoch_ms(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_millis()
}

/// A version as a JSON number when it reads as one (`14`, `18.1`), else the
/// string (`17.5.1`).
fn version_as_number(version: &str) -> Value {
    if let Ok(n) = version.parse::<u64>() {
        return json!(n);
    }
    match version.parse::<f64>().ok().and_then(Number::from_f64) {
        Some(n) if version.matches('.').count() == 1 => Value::Number(n),
        _ => json!(version),
    }
}

/// Generates users and devices; keeps its RNG and what it handed out so more
/// devices (the control API's "generate") continue the same deterministic
/// sequence without reusing an identifier.
#[derive(Debug)]
pub(crate) struct Seeder {
    rng: StdRng,
    next_index: usize,
    used: HashSet<String>,
}

impl Seeder {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            // Offset so the MaaS360 data set differs from the other kinds'
            // data of the same seed.
            rng: StdRng::seed_from_u64(seed ^ 0x4d61_6153_3630),
            next_index: 0,
            used: HashSet::new(),
        }
    }

    /// How many users go with `devices` devices: about three for four.
    pub(crate) fn user_count_for(devices: usize) -> usize {
        (devices * 3 / 4).max(1)
    }

    /// Marks an identifier as taken (devices and users added by the control
    /// API), so generated ones never collide with it.
    pub(crate) fn reserve(&mut self, kind: &str, value: &str) {
        self.used
            .insert(format!("{kind}:{}", value.to_ascii_uppercase()));
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

    /// A new Apple serial whose `Appl{serial}` device id is free too.
    fn apple_serial(&mut self, len: usize) -> String {
        loop {
            let serial = self.unique("serial", |rng| random_chars(rng, APPLE_SERIAL_CHARS, len));
            if self.used.insert(format!("id:APPL{serial}")) {
                return serial;
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
        let email_style = self.rng.gen_bool(0.3);
        // User names are unique ignoring case and the email suffix, so
        // `anna.kim` and `anna.kim@acme.example` are never two people.
        let mut stem = base.clone();
        let mut n = 1;
        while !self
            .used
            .insert(format!("user:{}", stem.to_ascii_uppercase()))
        {
            n += 1;
            stem = format!("{base}{n}");
        }
        let user_name = if email_style {
            format!("{stem}@{EMAIL_DOMAIN}")
        } else {
            stem.clone()
        };
        let directory = !email_style && self.rng.gen_bool(0.7);
        let email = if email_style {
            user_name.clone()
        } else if self.rng.gen_bool(0.15) {
            String::new()
        } else {
            format!("{stem}@{EMAIL_DOMAIN}")
        };
        let identifier = self.unique("uid", |rng| random_chars(rng, HEX_UPPER, 32));
        let created = reference_time()
            - Duration::days(self.rng.gen_range(30..1500))
            - Duration::seconds(self.rng.gen_range(0..86_400));
        let updated = created + Duration::seconds(self.rng.gen_range(0..60 * 60 * 24 * 25));
        let mut groups = vec!["All Users"];
        if self.rng.gen_bool(0.6) {
            groups.push(USER_GROUPS.choose(&mut self.rng).expect("non-empty"));
        }
        let groups: Vec<Value> = groups.iter().map(|g| json!({ "name": g })).collect();
        let mut u = Map::new();
        u.insert("userIdentifier".into(), json!(identifier));
        u.insert("userName".into(), json!(user_name));
        u.insert("emailAddress".into(), json!(email));
        u.insert("fullName".into(), json!(format!("{first} {last}")));
        u.insert("usernameAlias".into(), json!(""));
        u.insert(
            "domain".into(),
            json!(if directory {
                DIRECTORY_DOMAIN
            } else {
                EMAIL_DOMAIN
            }),
        );
        u.insert(
            "status".into(),
            json!(if self.rng.gen_bool(0.95) {
                "Active"
            } else {
                "Inactive"
            }),
        );
        u.insert("createDate".into(), json!(maas_time(created)));
        u.insert("updateDate".into(), json!(maas_time(updated)));
        u.insert("authType".into(), json!(u8::from(directory)));
        u.insert(
            "source".into(),
            json!(if directory { "User Directory" } else { "Local" }),
        );
        // The XML→JSON quirk: one group is an object, not an array.
        u.insert(
            "groups".into(),
            json!({ "group": if groups.len() == 1 { groups[0].clone() } else { Value::Array(groups) } }),
        );
        Value::Object(u)
    }

    /// The next `n` devices; their users are drawn from `users`.
    pub(crate) fn devices(&mut self, n: usize, users: &[Value]) -> Vec<Value> {
        (0..n).map(|_| self.device(users)).collect()
    }

    fn device(&mut self, users: &[Value]) -> Value {
        let index = self.next_index;
        self.next_index += 1;
        let user = if users.is_empty() || self.rng.gen_bool(0.08) {
            None
        } else {
            users.choose(&mut self.rng).cloned()
        };
        let text = |u: &Option<Value>, field: &str| {
            u.as_ref()
                .and_then(|u| u.get(field))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let user_name = text(&user, "userName");
        let email = text(&user, "emailAddress");
        let full_name = text(&user, "fullName");
        let first_name = full_name.split(' ').next().unwrap_or_default().to_owned();
        let user_domain = if user.is_some() {
            EMAIL_DOMAIN.to_owned()
        } else {
            String::new()
        };
        let ownership = match self.rng.gen_range(0..100) {
            0..=51 => "Corporate Owned",
            52..=81 => "Employee Owned",
            82..=89 => "Shared",
            90..=93 => "Not Specified",
            _ => "",
        };
        let corporate = ownership == "Corporate Owned";
        let mac = self.unique("mac", |rng| {
            let mut bytes: [u8; 6] = rng.gen();
            bytes[0] &= 0xfe;
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        });

        struct Platform {
            name: &'static str,
            device_type: &'static str,
            manufacturer: &'static str,
            model: String,
            os_name: String,
            os_version: String,
            id: String,
            udid: String,
            serial: String,
            imei: String,
            cellular: bool,
            supervised: bool,
        }
        let roll = self.rng.gen_range(0..100);
        let p = match roll {
            0..=44 => {
                let (model, versions, ipad) = *IOS_MODELS.choose(&mut self.rng).expect("non-empty");
                let serial = self.apple_serial(12);
                let newer = self.rng.gen_bool(0.5);
                let udid = self.unique("udid", |rng| {
                    if newer {
                        format!(
                            "00008{}-{}",
                            random_chars(rng, b"0123", 3),
                            random_chars(rng, HEX_UPPER, 16)
                        )
                    } else {
                        random_chars(rng, HEX_LOWER, 40)
                    }
                });
                let imei = if ipad {
                    String::new()
                } else {
                    let tac = *IOS_TACS.choose(&mut self.rng).expect("non-empty");
                    self.unique("imei", |rng| imei(rng, tac))
                };
                let os = *versions.choose(&mut self.rng).expect("non-empty");
                Platform {
                    name: "iOS",
                    device_type: if ipad { "Tablet" } else { "Smartphone" },
                    manufacturer: "Apple",
                    model: model.to_owned(),
                    os_name: format!("iOS {os}"),
                    os_version: os.to_owned(),
                    id: format!("Appl{serial}"),
                    udid,
                    serial,
                    imei,
                    cellular: !ipad,
                    supervised: corporate && self.rng.gen_bool(0.8),
                }
            }
            45..=82 => {
                let (manufacturer, model, versions, prefix) =
                    *ANDROID_MODELS.choose(&mut self.rng).expect("non-empty");
                let id = self.unique("id", |rng| {
                    format!("Androidc{}", random_chars(rng, b"0123456789", 10))
                });
                let serial = self.unique("serial", |rng| {
                    format!(
                        "{prefix}{}",
                        random_chars(rng, UPPER_ALNUM, 11 - prefix.len())
                    )
                });
                // A work profile on a personal phone cannot read the serial.
                let serial = if ownership == "Employee Owned" && self.rng.gen_bool(0.5) {
                    String::new()
                } else {
                    serial
                };
                let tac = *ANDROID_TACS.choose(&mut self.rng).expect("non-empty");
                let imei = self.unique("imei", |rng| imei(rng, tac));
                let (os, build) = *versions.choose(&mut self.rng).expect("non-empty");
                Platform {
                    name: "Android",
                    device_type: "Smartphone",
                    manufacturer,
                    model: model.to_owned(),
                    os_name: format!("Android {os} ({build})"),
                    os_version: os.to_owned(),
                    // MaaS360 reports an Android device's id as its UDID.
                    udid: id.clone(),
                    id,
                    serial,
                    imei,
                    cellular: true,
                    supervised: false,
                }
            }
            83..=91 => {
                let (manufacturer, model, device_type, os_name, os) =
                    *WINDOWS_MODELS.choose(&mut self.rng).expect("non-empty");
                let serial = self.unique("serial", |rng| random_chars(rng, UPPER_ALNUM, 10));
                let id = self.unique("id", |rng| {
                    format!("WIN{}", random_chars(rng, HEX_UPPER, 13))
                });
                let udid = self.unique("udid", |rng| uuid(rng).to_ascii_uppercase());
                Platform {
                    name: "Windows",
                    device_type,
                    manufacturer,
                    model: model.to_owned(),
                    os_name: os_name.to_owned(),
                    os_version: os.to_owned(),
                    id,
                    udid,
                    serial,
                    imei: String::new(),
                    cellular: false,
                    supervised: false,
                }
            }
            _ => {
                let (model, name, versions) = *MAC_MODELS.choose(&mut self.rng).expect("non-empty");
                let serial = self.apple_serial(10);
                let udid = self.unique("udid", |rng| uuid(rng).to_ascii_uppercase());
                let os = *versions.choose(&mut self.rng).expect("non-empty");
                Platform {
                    name: "Mac",
                    device_type: "Laptop",
                    manufacturer: "Apple",
                    model: model.to_owned(),
                    os_name: format!("macOS {name} {os}"),
                    os_version: os.to_owned(),
                    id: format!("Appl{serial}"),
                    udid,
                    serial,
                    imei: String::new(),
                    cellular: false,
                    supervised: corporate && self.rng.gen_bool(0.5),
                }
            }
        };
        let last_reported =
            reference_time() - Duration::seconds(self.rng.gen_range(0..60 * 60 * 24 * 30));
        let last_reported_ms = epoch_ms(last_reported) + self.rng.gen_range(0..1000);
        let installed = last_reported
            - Duration::days(self.rng.gen_range(1..900))
            - Duration::seconds(self.rng.gen_range(0..86_400));
        let installed_ms = epoch_ms(installed) + self.rng.gen_range(0..1000);
        let registered_ms = installed_ms + self.rng.gen_range(0..5_000);
        let managed = match self.rng.gen_range(0..100) {
            0..=85 => "Enrolled",
            86..=90 => "Activated",
            91..=94 => "Control Removed",
            95..=96 => "Pending Control Removed",
            _ => "Not Enrolled",
        };
        let in_or_out = |rng: &mut StdRng, p_in: f64| {
            if rng.gen_bool(p_in) {
                "In Compliance"
            } else {
                "Out of Compliance"
            }
        };
        let policy = in_or_out(&mut self.rng, 0.85);
        let app = in_or_out(&mut self.rng, 0.92);
        let rule = match self.rng.gen_range(0..10) {
            0..=2 => "",
            3..=8 => "In Compliance",
            _ => "Out of Compliance",
        };
        let passcode = match self.rng.gen_range(0..100) {
            0..=81 => "Compliant",
            82..=94 => "Not Compliant",
            _ => "",
        };
        let encryption = match p.name {
            "iOS" => "Encryption Complete",
            _ if self.rng.gen_bool(0.85) => "Encryption Complete",
            _ => "Not Encrypted",
        };
        let jailbroken = matches!(p.name, "iOS" | "Android") && self.rng.gen_bool(0.03);
        // MaaS360's default policy takes a jailbroken or rooted device out of
        // compliance.
        let policy = if jailbroken {
            "Out of Compliance"
        } else {
            policy
        };
        let device_name = match (&user, p.name) {
            (Some(_), "iOS") => format!("{first_name}'s {}", p.model),
            (Some(_), "Android") => format!("{user_name}-{}", p.model),
            (Some(_), "Mac") => format!("{first_name}'s MacBook"),
            (Some(_), _) | (None, "Windows") => {
                let tail = if p.serial.is_empty() {
                    &p.id
                } else {
                    &p.serial
                };
                format!("ACME-{}", &tail[tail.len().saturating_sub(6)..])
            }
            (None, _) => format!("Shared-{}-{index:04}", p.model.replace(' ', "")),
        };
        let imei_value = if p.imei.is_empty() {
            json!("")
        } else if self.rng.gen_bool(0.4) {
            json!(p.imei.parse::<u64>().expect("IMEIs are digits"))
        } else {
            json!(p.imei)
        };
        let phone = if p.cellular && self.rng.gen_bool(0.7) {
            let number = phone(&mut self.rng);
            if self.rng.gen_bool(0.15) {
                json!(number
                    .trim_start_matches('+')
                    .parse::<u64>()
                    .expect("digits"))
            } else {
                json!(number)
            }
        } else {
            json!("")
        };
        let os_version = if self.rng.gen_bool(0.5) {
            version_as_number(&p.os_version)
        } else {
            json!(p.os_version)
        };

        let mut d = Map::new();
        d.insert("maas360DeviceID".into(), json!(p.id));
        d.insert("deviceName".into(), json!(device_name));
        d.insert("customAssetNumber".into(), json!(""));
        d.insert("ownership".into(), json!(ownership));
        d.insert(
            "deviceOwner".into(),
            json!(if corporate { "" } else { full_name.as_str() }),
        );
        d.insert("username".into(), json!(user_name));
        d.insert("emailAddress".into(), json!(email));
        d.insert("userDomain".into(), json!(user_domain));
        d.insert("platformName".into(), json!(p.name));
        d.insert("sourceID".into(), json!(1));
        d.insert("deviceType".into(), json!(p.device_type));
        d.insert("manufacturer".into(), json!(p.manufacturer));
        d.insert("model".into(), json!(p.model));
        d.insert("osName".into(), json!(p.os_name));
        d.insert("osVersion".into(), os_version);
        d.insert("osServicePack".into(), json!(""));
        d.insert("imeiEsn".into(), imei_value);
        d.insert("udid".into(), json!(p.udid));
        d.insert("wifiMacAddress".into(), json!(mac));
        d.insert("phoneNumber".into(), phone);
        d.insert("installedDate".into(), json!(maas_time(installed)));
        d.insert("installedDateInEpochms".into(), json!(installed_ms));
        d.insert("firstRegisteredInEpochms".into(), json!(installed_ms));
        d.insert("lastRegisteredInEpochms".into(), json!(installed_ms));
        d.insert("lastMdmRegisteredInEpochms".into(), json!(registered_ms));
        d.insert("lastReported".into(), json!(maas_time(last_reported)));
        d.insert("lastReportedInEpochms".into(), json!(last_reported_ms));
        d.insert("deviceStatus".into(), json!("Active"));
        d.insert("maas360ManagedStatus".into(), json!(managed));
        d.insert("mailboxDeviceId".into(), json!(""));
        d.insert("mailboxLastReported".into(), json!(""));
        d.insert("mailboxLastReportedInEpochms".into(), json!(""));
        d.insert("mailboxManaged".into(), json!(""));
        d.insert("mdmMailboxDeviceId".into(), json!(""));
        d.insert("isSupervisedDevice".into(), json!(p.supervised));
        d.insert("testDevice".into(), json!(false));
        d.insert("unifiedTravelerDeviceId".into(), json!(p.id));
        d.insert("appComplianceState".into(), json!(app));
        d.insert("policyComplianceState".into(), json!(policy));
        d.insert("ruleComplianceState".into(), json!(rule));
        d.insert("passcodeCompliance".into(), json!(passcode));
        d.insert("encryptionStatus".into(), json!(encryption));
        d.insert(
            "jailbreakStatus".into(),
            json!(if jailbroken { "Yes" } else { "No" }),
        );
        d.insert("selectiveWipeStatus".into(), json!("N/a"));
        d.insert("platformSerialNumber".into(), json!(p.serial));
        Value::Object(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::luhn_check_digit;

    fn data(seed: u64, n: usize) -> (Vec<Value>, Vec<Value>) {
        let mut s = Seeder::new(seed);
        let users = s.users(Seeder::user_count_for(n));
        let devices = s.devices(n, &users);
        (users, devices)
    }

    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_data_and_another_seed_does_not() {
        assert_eq!(data(7, 300), data(7, 300));
        assert_ne!(data(7, 300).1, data(8, 300).1);
    }

    #[test]
    fn identifiers_have_the_documented_formats_and_are_unique() {
        let (_, devices) = data(3, 3000);
        let mut seen = HashSet::new();
        for d in &devices {
            let id = d["maas360DeviceID"].as_str().unwrap();
            assert!(seen.insert(format!("id:{}", id.to_uppercase())), "{id}");
            match d["platformName"].as_str().unwrap() {
                "iOS" | "Mac" => assert!(id.starts_with("Appl")),
                "Android" => {
                    assert!(id.starts_with("Androidc"));
                    assert_eq!(d["udid"], d["maas360DeviceID"]);
                }
                "Windows" => assert!(id.starts_with("WIN")),
                other => panic!("{other}"),
            }
            for field in ["udid", "wifiMacAddress"] {
                let v = d[field].as_str().unwrap();
                assert!(!v.is_empty());
                assert!(
                    seen.insert(format!("{field}:{}", v.to_uppercase())),
                    "{field} {v}"
                );
            }
            let mac = d["wifiMacAddress"].as_str().unwrap();
            assert_eq!(mac.len(), 17, "{mac}");
            assert!(mac
                .chars()
                .all(|c| c == ':' || (c.is_ascii_hexdigit() && !c.is_ascii_uppercase())));
            let imei = text(&d["imeiEsn"]);
            if !imei.is_empty() {
                assert!(seen.insert(format!("imei:{imei}")));
                let (payload, check) = imei.split_at(14);
                assert_eq!(luhn_check_digit(payload), check.parse::<u8>().unwrap());
            }
            let last = d["lastReported"].as_str().unwrap();
            let parsed = NaiveDateTime::parse_from_str(last, "%Y-%m-%dT%H:%M:%S").unwrap();
            let ms = d["lastReportedInEpochms"].as_i64().unwrap();
            assert_eq!(parsed.and_utc().timestamp(), ms.div_euclid(1000), "{last}");
            assert_eq!(d["deviceStatus"], "Active");
        }
    }

    #[test]
    fn the_data_set_has_the_variety_and_the_leniency_real_servers_show() {
        let (users, devices) = data(11, 3000);
        let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
        for (platform, at_least) in [
            ("iOS", 1100),
            ("Android", 900),
            ("Windows", 150),
            ("Mac", 150),
        ] {
            assert!(
                count(&|d| d["platformName"] == platform) > at_least,
                "{platform}"
            );
        }
        for (ownership, at_least) in [
            ("Corporate Owned", 1300),
            ("Employee Owned", 700),
            ("Shared", 150),
            ("Not Specified", 60),
            ("", 60),
        ] {
            assert!(
                count(&|d| d["ownership"] == ownership) > at_least,
                "{ownership:?}"
            );
        }
        assert!(count(&|d| d["username"] == "" && d["emailAddress"] == "") > 150);
        assert!(count(&|d| d["username"] != "" && d["emailAddress"] == "") > 100);
        assert!(count(&|d| d["imeiEsn"].is_u64()) > 400);
        assert!(count(&|d| d["imeiEsn"].as_str().is_some_and(|s| !s.is_empty())) > 600);
        assert!(count(&|d| d["platformName"] == "iOS" && d["imeiEsn"] == "") > 100);
        assert!(count(&|d| d["osVersion"].is_number()) > 300);
        assert!(count(&|d| d["osVersion"].is_string()) > 1000);
        assert!(count(&|d| d["phoneNumber"].is_u64()) > 50);
        assert!(count(&|d| d["phoneNumber"] == "") > 500);
        assert!(count(&|d| d["platformSerialNumber"] == "") > 100);
        assert!(count(&|d| d["jailbreakStatus"] == "Yes") > 10);
        assert!(count(&|d| d["policyComplianceState"] == "Out of Compliance") > 200);
        assert!(count(&|d| d["maas360ManagedStatus"] != "Enrolled") > 200);
        assert!(count(&|d| d["isSupervisedDevice"] == true) > 300);
        assert!(users.iter().filter(|u| u["emailAddress"] == "").count() > 100);
        assert!(users
            .iter()
            .any(|u| u["userName"].as_str().unwrap().contains('@')));
        assert!(users.iter().any(|u| u["groups"]["group"].is_object()));
        assert!(users.iter().any(|u| u["groups"]["group"].is_array()));
        // Device users are seeded users, with the same email.
        for d in devices.iter().filter(|d| d["username"] != "") {
            let u = users
                .iter()
                .find(|u| u["userName"] == d["username"])
                .unwrap();
            assert_eq!(u["emailAddress"], d["emailAddress"]);
        }
        let mut per_user = std::collections::HashMap::new();
        for d in &devices {
            *per_user.entry(d["username"].as_str().unwrap()).or_insert(0) += 1;
        }
        assert!(per_user.iter().any(|(u, n)| !u.is_empty() && *n > 1));
        assert!(users
            .iter()
            .any(|u| !per_user.contains_key(u["userName"].as_str().unwrap())));
    }

    #[test]
    fn posture_is_varied_and_consistent_with_platform_and_jailbreak() {
        let (_, devices) = data(11, 1000);
        let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
        for (field, value, at_least) in [
            ("policyComplianceState", "In Compliance", 700),
            ("policyComplianceState", "Out of Compliance", 60),
            ("maas360ManagedStatus", "Enrolled", 750),
            ("maas360ManagedStatus", "Activated", 10),
            ("maas360ManagedStatus", "Control Removed", 10),
            ("maas360ManagedStatus", "Not Enrolled", 5),
            ("encryptionStatus", "Encryption Complete", 800),
            ("encryptionStatus", "Not Encrypted", 20),
            ("passcodeCompliance", "Compliant", 700),
            ("passcodeCompliance", "Not Compliant", 60),
            ("passcodeCompliance", "", 10),
            ("jailbreakStatus", "Yes", 5),
            ("jailbreakStatus", "No", 900),
        ] {
            assert!(count(&|d| d[field] == value) > at_least, "{field} {value}");
        }
        for d in &devices {
            if d["jailbreakStatus"] == "Yes" {
                assert_eq!(d["policyComplianceState"], "Out of Compliance", "{d}");
            }
            match d["platformName"].as_str().unwrap() {
                "iOS" | "Mac" => assert_eq!(d["manufacturer"], "Apple"),
                _ => assert_ne!(d["manufacturer"], "Apple"),
            }
            assert!(d["lastReported"].as_str().is_some_and(|t| !t.is_empty()));
        }
        assert!(count(&|d| d["phoneNumber"] != "") > 300);
    }

    #[test]
    fn versions_become_numbers_only_when_they_read_as_one() {
        assert_eq!(version_as_number("14"), json!(14));
        assert_eq!(version_as_number("18.1"), json!(18.1));
        assert_eq!(version_as_number("17.5.1"), json!("17.5.1"));
        assert_eq!(version_as_number("10.0.22631"), json!("10.0.22631"));
    }
}
