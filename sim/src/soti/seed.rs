//! Deterministic SOTI device data: the same seed gives the same devices, in
//! the same order, on every run (`StdRng` from `rand` 0.8 is stable across
//! platforms for a given rand version; timestamps count back from a fixed
//! instant, never from "now").
//!
//! Variety, as `MDM-APIS.md` describes real payloads: iOS devices (`Kind`
//! spelled `Ios` or `iOS`, 40-hex `DeviceId`, `ManufacturerSerialNumber`,
//! Wi-Fi iPads without an IMEI) and Android+ devices (`DeviceId` = IMEI,
//! `HardwareSerialNumber`); MACs as `a4:67:06:0c:15:3d` or `D087E278B54B`;
//! several group paths; ~10 % of devices without a user (`DeviceUserInfo:
//! null`); ~15 % of users without an email (field absent or null); users with
//! more than one device; `"$type"` on some devices as newer servers send.
//!
//! Posture, as the spec's device kinds carry it: `ComplianceStatus` (~85 %
//! `true`), `Mode` (~88 % `Active`, the others `UnenrolledByUser`,
//! `UnenrollPendingAdmin`, `UnenrolledByAdmin`, `Disabled`),
//! `PasscodeEnabled` (~90 %), `IsEncrypted` (~95 %), `IsOSSecure` (~3 %
//! `false`: jailbroken or rooted, and then never compliant), `Manufacturer`
//! (`Apple` for every iOS device; `samsung`, `Google`, `Zebra Technologies`,
//! `motorola` as Android reports them), `PhoneNumber` (E.164 for ~3 in 4
//! phones; iPads and the rest `""` or `null`) and `LastCheckInTime` (the
//! last 30 days). The posture draws come from a second RNG stream
//! ([`posture_rng`]), so every other value is what it was before they were
//! added.

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::{json, Map, Value};

use crate::seed::{
    ascii_fold, imei, phone, posture_rng, random_chars, ANDROID_TACS, APPLE_SERIAL_CHARS,
    FIRST_NAMES, IOS_MODELS, IOS_TACS, LAST_NAMES, UPPER_ALNUM,
};

/// Salts the posture stream of SOTI's seeder (`"SOTI"`).
const POSTURE_SALT: u64 = 0x534f_5449;

/// The device groups, as SOTI paths. Every device sits in one of the leaves.
pub(crate) const GROUP_PATHS: &[&str] = &[
    r"\\Acme\Sales",
    r"\\Acme\Sales\Retail Stores",
    r"\\Acme\Engineering\Berlin",
    r"\\Acme\Engineering\Toronto",
    r"\\Acme\Support",
    r"\\Acme\Executives",
];

/// (Manufacturer, Model, OS versions, serial prefix)
const ANDROID_MODELS: &[(&str, &str, &[&str], &str)] = &[
    ("samsung", "SM-G991B", &["13", "14"], "R5C"),
    ("samsung", "SM-A536B", &["13", "14"], "R58"),
    ("samsung", "SM-S918B", &["14"], "R3C"),
    ("Google", "Pixel 7", &["14", "15"], "2B1"),
    ("Google", "Pixel 8", &["14", "15"], "3A0"),
    ("Zebra Technologies", "TC52", &["11", "13"], "2113"),
    ("motorola", "moto g54 5G", &["13", "14"], "ZY2"),
];

/// Generates devices; keeps its RNG and what it has handed out so more devices
/// (the control API's "generate") continue the same deterministic sequence
/// without reusing an identifier.
#[derive(Debug)]
pub(crate) struct Seeder {
    rng: StdRng,
    /// The posture fields' own stream (see [`posture_rng`]).
    posture: StdRng,
    next_index: usize,
    used: HashSet<String>,
    users: Vec<Value>,
    reference_time: DateTime<Utc>,
}

impl Seeder {
    pub(crate) fn new(seed: u64, devices_hint: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let user_count = (devices_hint * 3 / 4).max(1);
        let mut used = HashSet::new();
        let users = (0..user_count)
            .map(|i| make_user(&mut rng, i, &mut used))
            .collect();
        Self {
            rng,
            posture: posture_rng(seed, POSTURE_SALT),
            next_index: 0,
            used,
            users,
            // Fixed so the data set does not depend on when it is generated.
            reference_time: Utc.with_ymd_and_hms(2025, 3, 3, 9, 30, 0).unwrap(),
        }
    }

    /// The next `n` devices.
    pub(crate) fn devices(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.device()).collect()
    }

    fn unique(&mut self, mut make: impl FnMut(&mut StdRng) -> String) -> String {
        loop {
            let candidate = make(&mut self.rng);
            if self.used.insert(candidate.clone()) {
                return candidate;
            }
        }
    }

    fn device(&mut self) -> Value {
        let index = self.next_index;
        self.next_index += 1;
        let ios = self.rng.gen_bool(0.55);

        let user = if self.rng.gen_bool(0.10) {
            None
        } else {
            let i = self.rng.gen_range(0..self.users.len());
            Some(self.users[i].clone())
        };
        let path = *GROUP_PATHS.choose(&mut self.rng).expect("non-empty");
        let mac = {
            let colons = self.rng.gen_bool(0.5);
            self.unique(|rng| {
                let bytes: [u8; 6] = rng.gen();
                // Locally administered unicast, as randomised Wi-Fi MACs are.
                let mut bytes = bytes;
                bytes[0] = (bytes[0] | 0x02) & 0xfe;
                if colons {
                    bytes
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                } else {
                    bytes.iter().map(|b| format!("{b:02X}")).collect()
                }
            })
        };
        let last_check_in = self.reference_time
            - Duration::seconds(self.rng.gen_range(0..60 * 60 * 24 * 30))
            - Duration::milliseconds(self.rng.gen_range(0..1000));
        let enrolled = last_check_in
            - Duration::days(self.rng.gen_range(1..900))
            - Duration::seconds(self.rng.gen_range(0..86_400));
        let mode = match self.rng.gen_range(0..100) {
            0..=87 => "Active",
            88..=92 => "UnenrolledByUser",
            93..=95 => "UnenrollPendingAdmin",
            96..=97 => "UnenrolledByAdmin",
            _ => "Disabled",
        };
        let online = mode == "Active" && self.rng.gen_bool(0.6);
        let compliant = self.rng.gen_bool(0.85);
        let with_type = self.rng.gen_bool(0.35);

        let mut d = Map::new();
        // Whether the device has a SIM (iPads here are Wi-Fi models).
        let cellular;
        if ios {
            let (model, versions, ipad) = *IOS_MODELS.choose(&mut self.rng).expect("non-empty");
            cellular = !ipad;
            let device_id = self.unique(|rng| {
                (0..20)
                    .map(|_| format!("{:02x}", rng.gen::<u8>()))
                    .collect()
            });
            let serial = self.unique(|rng| random_chars(rng, APPLE_SERIAL_CHARS, 12));
            let imei = if ipad {
                None
            } else {
                let tac = *IOS_TACS.choose(&mut self.rng).expect("non-empty");
                Some(self.unique(|rng| imei(rng, tac)))
            };
            let kind = if self.rng.gen_bool(0.6) { "Ios" } else { "iOS" };
            let name = match (&user, ipad) {
                (Some(u), false) => {
                    format!("{}'s iPhone", u["FirstName"].as_str().unwrap_or("Unknown"))
                }
                (Some(u), true) => {
                    format!("{}'s iPad", u["FirstName"].as_str().unwrap_or("Unknown"))
                }
                (None, false) => format!("iPhone-{index:05}"),
                (None, true) => format!("iPad-Kiosk-{index:05}"),
            };
            if with_type {
                d.insert("$type".into(), json!("DeviceIos"));
            }
            d.insert("Kind".into(), json!(kind));
            d.insert("DeviceId".into(), json!(device_id));
            d.insert("DeviceName".into(), json!(name));
            d.insert("Family".into(), json!("Apple"));
            d.insert("Platform".into(), json!("iOS"));
            d.insert("Manufacturer".into(), json!("Apple"));
            d.insert("Model".into(), json!(model));
            d.insert(
                "OSVersion".into(),
                json!(*versions.choose(&mut self.rng).expect("non-empty")),
            );
            d.insert("ManufacturerSerialNumber".into(), json!(serial));
            match imei {
                Some(imei) => d.insert("IMEI_MEID_ESN".into(), json!(imei)),
                None => d.insert("IMEI_MEID_ESN".into(), json!("")),
            };
            d.insert("IsSupervised".into(), json!(self.rng.gen_bool(0.7)));
            d.insert(
                "EnrollmentType".into(),
                json!(if self.rng.gen_bool(0.9) {
                    "Device"
                } else {
                    "User"
                }),
            );
        } else {
            let (manufacturer, model, versions, prefix) =
                *ANDROID_MODELS.choose(&mut self.rng).expect("non-empty");
            cellular = true;
            let tac = *ANDROID_TACS.choose(&mut self.rng).expect("non-empty");
            let imei = self.unique(|rng| imei(rng, tac));
            let serial = self.unique(|rng| {
                format!(
                    "{prefix}{}",
                    random_chars(rng, UPPER_ALNUM, 11 - prefix.len().min(4))
                )
            });
            let name = match &user {
                Some(u) if self.rng.gen_bool(0.5) => {
                    format!("{} {}", u["FirstName"].as_str().unwrap_or("Unknown"), model)
                }
                _ => format!("{}-{index:05}", model.replace(' ', "-")),
            };
            let os = *versions.choose(&mut self.rng).expect("non-empty");
            if with_type {
                d.insert("$type".into(), json!("DeviceAndroidPlus"));
            }
            d.insert("Kind".into(), json!("AndroidPlus"));
            d.insert("DeviceId".into(), json!(imei.clone()));
            d.insert("DeviceName".into(), json!(name));
            d.insert("Family".into(), json!("AndroidPlus"));
            d.insert("Platform".into(), json!("AndroidPlus"));
            d.insert("Manufacturer".into(), json!(manufacturer));
            d.insert("Model".into(), json!(model));
            d.insert("OSVersion".into(), json!(os));
            d.insert("AndroidApiLevel".into(), json!(api_level(os)));
            d.insert("HardwareSerialNumber".into(), json!(serial));
            d.insert("IMEI_MEID_ESN".into(), json!(imei));
            d.insert("EnrollmentType".into(), json!("NotApplicable"));
        }
        d.insert("Path".into(), json!(path));
        d.insert("MACAddress".into(), json!(mac));
        d.insert("IsAgentOnline".into(), json!(online));
        d.insert("Mode".into(), json!(mode));
        d.insert("ComplianceStatus".into(), json!(compliant));
        d.insert(
            "CompliancePolicyStatus".into(),
            json!(if compliant {
                "Compliant"
            } else if self.rng.gen_bool(0.5) {
                "NonCompliant"
            } else {
                "Pending"
            }),
        );
        d.insert("PasscodeEnabled".into(), json!(self.rng.gen_bool(0.9)));
        d.insert("IsEncrypted".into(), json!(self.rng.gen_bool(0.95)));
        d.insert("LastCheckInTime".into(), json!(soti_time(last_check_in)));
        d.insert("EnrollmentTime".into(), json!(soti_time(enrolled)));
        d.insert(
            "AgentVersion".into(),
            json!(if ios {
                "2024.1.0.1052"
            } else {
                "2024.1.2.1167"
            }),
        );
        d.insert(
            "Watermark".into(),
            json!(self.rng.gen_range(1_000..2_000_000)),
        );
        d.insert("DeviceUserInfo".into(), user.unwrap_or(Value::Null));
        self.posture(&mut d, cellular);
        Value::Object(d)
    }

    /// `IsOSSecure` and `PhoneNumber`, from the posture stream; a jailbroken
    /// or rooted device is never compliant (MobiControl's compliance policy
    /// checks it), whatever the main stream drew.
    fn posture(&mut self, d: &mut Map<String, Value>, cellular: bool) {
        let rng = &mut self.posture;
        let compromised = rng.gen_bool(0.03);
        let number = (cellular && rng.gen_bool(0.75)).then(|| phone(rng));
        let phone_number = match number {
            Some(n) => json!(n),
            // Servers differ: an empty string or null.
            None if rng.gen_bool(0.5) => json!(""),
            None => Value::Null,
        };
        d.insert("IsOSSecure".into(), json!(!compromised));
        d.insert("PhoneNumber".into(), phone_number);
        if compromised {
            d.insert("ComplianceStatus".into(), json!(false));
            d.insert("CompliancePolicyStatus".into(), json!("NonCompliant"));
        }
    }
}

/// SOTI writes UTC timestamps with up to seven fractional digits and a `Z`;
/// we use milliseconds.
fn soti_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn api_level(os: &str) -> u32 {
    match os {
        "11" => 30,
        "12" => 31,
        "13" => 33,
        "14" => 34,
        _ => 35,
    }
}

fn make_user(rng: &mut StdRng, index: usize, used: &mut HashSet<String>) -> Value {
    let first = *FIRST_NAMES.choose(rng).expect("non-empty");
    let last = *LAST_NAMES.choose(rng).expect("non-empty");
    let base = format!("{}.{}", ascii_fold(first), ascii_fold(last));
    let mut user_name = base.clone();
    let mut n = 1;
    while !used.insert(format!("user:{user_name}")) {
        n += 1;
        user_name = format!("{base}{n}");
    }
    let mut u = Map::new();
    u.insert("UserName".into(), json!(user_name));
    u.insert("FirstName".into(), json!(first));
    u.insert("MiddleName".into(), Value::Null);
    u.insert("LastName".into(), json!(last));
    u.insert("DomainName".into(), json!("ACME"));
    u.insert(
        "UPN".into(),
        json!(format!("{user_name}@corp.acme.example")),
    );
    match rng.gen_range(0..100) {
        // No email: the field is absent on some servers, null on others.
        0..=7 => {}
        8..=14 => {
            u.insert("Email".into(), Value::Null);
        }
        _ => {
            u.insert("Email".into(), json!(format!("{user_name}@acme.example")));
        }
    }
    u.insert(
        "Identifier".into(),
        json!(format!(
            "S-1-5-21-3623811015-3361044348-30300820-{}",
            1100 + index
        )),
    );
    Value::Object(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{seed::luhn_check_digit, util::normalize_mac};

    #[test]
    fn the_same_seed_gives_the_same_devices_and_another_seed_does_not() {
        let a = Seeder::new(7, 500).devices(500);
        let b = Seeder::new(7, 500).devices(500);
        let c = Seeder::new(8, 500).devices(500);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn identifiers_have_the_documented_formats_and_are_unique() {
        let devices = Seeder::new(3, 2000).devices(2000);
        let mut ids = HashSet::new();
        let mut macs = HashSet::new();
        for d in &devices {
            let id = d["DeviceId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "duplicate DeviceId {id}");
            assert!(macs.insert(normalize_mac(d["MACAddress"].as_str().unwrap()).unwrap()));
            match d["Kind"].as_str().unwrap() {
                "Ios" | "iOS" => {
                    assert_eq!(id.len(), 40);
                    assert!(id
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
                    assert_eq!(d["ManufacturerSerialNumber"].as_str().unwrap().len(), 12);
                    assert!(d.get("HardwareSerialNumber").is_none());
                }
                "AndroidPlus" => {
                    assert_eq!(id, d["IMEI_MEID_ESN"].as_str().unwrap());
                    assert_eq!(id.len(), 15);
                    let (payload, check) = id.split_at(14);
                    assert_eq!(luhn_check_digit(payload), check.parse::<u8>().unwrap());
                    assert!(d["HardwareSerialNumber"].as_str().is_some());
                    assert!(d.get("ManufacturerSerialNumber").is_none());
                }
                other => panic!("unexpected Kind {other}"),
            }
        }
    }

    #[test]
    fn posture_is_varied_and_consistent_with_platform_and_compromise() {
        let devices = Seeder::new(11, 1000).devices(1000);
        let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
        for (field, value, at_least) in [
            ("ComplianceStatus", json!(true), 700),
            ("ComplianceStatus", json!(false), 60),
            ("Mode", json!("Active"), 800),
            ("PasscodeEnabled", json!(false), 30),
            ("IsEncrypted", json!(false), 10),
            ("IsOSSecure", json!(false), 10),
            ("IsOSSecure", json!(true), 900),
            ("PhoneNumber", json!(""), 50),
            ("PhoneNumber", Value::Null, 50),
        ] {
            assert!(count(&|d| d[field] == value) > at_least, "{field} {value}");
        }
        assert!(count(&|d| d["Mode"] != "Active") > 50);
        assert!(
            count(&|d| d["PhoneNumber"]
                .as_str()
                .is_some_and(|p| p.starts_with('+')))
                > 400
        );
        for d in &devices {
            if d["IsOSSecure"] == false {
                assert_eq!(d["ComplianceStatus"], false, "{d}");
                assert_eq!(d["CompliancePolicyStatus"], "NonCompliant");
            }
            match d["Kind"].as_str().unwrap() {
                "Ios" | "iOS" => assert_eq!(d["Manufacturer"], "Apple"),
                _ => assert_ne!(d["Manufacturer"], "Apple"),
            }
            if d["Model"].as_str().unwrap().starts_with("iPad") {
                assert!(d["PhoneNumber"].as_str().is_none_or(str::is_empty));
            }
            assert!(d["LastCheckInTime"].is_string());
        }
    }

    #[test]
    fn the_data_set_has_the_variety_real_servers_show() {
        let devices = Seeder::new(11, 1000).devices(1000);
        let count = |f: &dyn Fn(&Value) -> bool| devices.iter().filter(|d| f(d)).count();
        assert!(count(&|d| d["Kind"] == "Ios") > 100);
        assert!(count(&|d| d["Kind"] == "iOS") > 100);
        assert!(count(&|d| d["Kind"] == "AndroidPlus") > 300);
        assert!(count(&|d| d["MACAddress"].as_str().unwrap().contains(':')) > 300);
        assert!(count(&|d| !d["MACAddress"].as_str().unwrap().contains(':')) > 300);
        assert!(count(&|d| d["DeviceUserInfo"].is_null()) > 50);
        assert!(
            count(
                &|d| d["DeviceUserInfo"].is_object() && d["DeviceUserInfo"].get("Email").is_none()
            ) > 10
        );
        assert!(
            count(&|d| d["DeviceUserInfo"].is_object() && d["DeviceUserInfo"]["Email"].is_null())
                > 10
        );
        assert!(count(&|d| d.get("$type").is_some()) > 200);
        assert!(count(&|d| d["IMEI_MEID_ESN"] == "") > 20);
        for path in GROUP_PATHS {
            assert!(count(&|d| d["Path"] == *path) > 50, "{path}");
        }
    }
}
