//! Deterministic BCDM data: the same seed gives the same users and devices,
//! in the same order, on every run (`StdRng` from `rand` 0.8 is stable for a
//! given rand version; timestamps count back from a fixed instant, never from
//! "now").
//!
//! Variety, for a Japanese carrier's MDM: mostly iOS devices (iPhones with an
//! IMEI, Wi-Fi iPads without one; new-style `00008101-…` UDIDs and older
//! 40-hex ones), some Android devices (BCDM lists them, the connector must
//! skip them), corporate and personal ownership, devices without a user or
//! that never checked in; users with Japanese and Latin names, about one in
//! five without an email, some with several devices and some with none. MACs
//! come mostly as `a4:67:06:0c:15:3d`, some in upper case; check-in times in
//! UTC (`Z`) or Japan time (`+09:00`), both RFC 3339.
//!
//! Posture (our design, `MDM-APIS.md`): `passcode_enabled` (~90 % `true`,
//! some `false`, a few `null`), `encrypted` (on iOS the same as the
//! passcode: data protection needs one; on Android ~90 %), `jailbroken`
//! (~2 % `true`, a few `null`), `compliant` (`false` whenever a device is
//! jailbroken, has no passcode or never checked in; else ~93 % `true`),
//! `manufacturer` (`Apple` for every iOS device; `samsung`, `Google`,
//! `SHARP`, `Sony` for Android), `phone_number` (Japanese mobile numbers in
//! E.164, `+8190…`, for ~3 in 4 phones; `null` for iPads and the rest) and
//! `mtd_risk_level` (`null`: nothing has written one). A device that never
//! checked in has reported nothing: its booleans are `null`. The posture
//! draws come from a second RNG stream ([`posture_rng`]), so every other
//! value is what it was before they were added.

use std::collections::HashSet;

use chrono::{DateTime, Duration, FixedOffset, SecondsFormat, TimeZone, Utc};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

use super::{BcdmDevice, BcdmOwnership, BcdmUser};
use crate::seed::{
    luhn_check_digit, posture_rng, random_chars, APPLE_SERIAL_CHARS, HEX_LOWER, HEX_UPPER,
    IOS_TACS, UPPER_ALNUM,
};

/// Salts the posture stream of BCDM's seeder (`"BCDM"`).
const POSTURE_SALT: u64 = 0x4243_444d;

/// The platform strings the simulator lists.
pub const PLATFORM_IOS: &str = "iOS";
pub const PLATFORM_ANDROID: &str = "Android";

/// (family name in kanji, romaji)
const FAMILY_NAMES: &[(&str, &str)] = &[
    ("佐藤", "sato"),
    ("鈴木", "suzuki"),
    ("高橋", "takahashi"),
    ("田中", "tanaka"),
    ("伊藤", "ito"),
    ("渡辺", "watanabe"),
    ("山本", "yamamoto"),
    ("中村", "nakamura"),
    ("小林", "kobayashi"),
    ("加藤", "kato"),
    ("吉田", "yoshida"),
    ("山田", "yamada"),
    ("松本", "matsumoto"),
    ("井上", "inoue"),
    ("木村", "kimura"),
    ("清水", "shimizu"),
];
/// (given name, romaji)
const GIVEN_NAMES: &[(&str, &str)] = &[
    ("太郎", "taro"),
    ("花子", "hanako"),
    ("翔太", "shota"),
    ("美咲", "misaki"),
    ("健一", "kenichi"),
    ("陽菜", "hina"),
    ("大輔", "daisuke"),
    ("さくら", "sakura"),
    ("拓海", "takumi"),
    ("結衣", "yui"),
    ("直樹", "naoki"),
    ("愛", "ai"),
    ("蓮", "ren"),
    ("葵", "aoi"),
];
/// Staff with Latin names (the console takes whatever the admin typed).
const LATIN_NAMES: &[(&str, &str)] = &[
    ("Emily", "Clark"),
    ("David", "Müller"),
    ("Nguyen", "Van An"),
    ("Maria", "García"),
    ("James", "O'Brien"),
    ("Priya", "Patel"),
];
const EMAIL_DOMAINS: &[&str] = &["example.co.jp", "corp.example.jp", "sales.example.co.jp"];

/// (model, OS versions, has a cellular modem (IMEI), new-style UDID)
const IOS_MODELS: &[(&str, &[&str], bool, bool)] = &[
    ("iPhone 12", &["16.7.8", "17.5.1"], true, true),
    ("iPhone 13", &["17.4.1", "17.5.1", "18.0.1"], true, true),
    ("iPhone 14 Pro", &["17.5.1", "18.1"], true, true),
    ("iPhone 15", &["17.6.1", "18.1", "18.2"], true, true),
    (
        "iPhone SE (3rd generation)",
        &["16.7.8", "17.5.1"],
        true,
        true,
    ),
    ("iPhone 8", &["16.7.8"], true, false),
    (
        "iPad Air (5th generation)",
        &["17.5.1", "18.1"],
        false,
        true,
    ),
    ("iPad (10th generation)", &["17.6.1", "18.0"], false, true),
    ("iPad (6th generation)", &["17.7"], false, false),
];
/// (model, OS versions, serial prefix, manufacturer as Android reports it)
const ANDROID_MODELS: &[(&str, &[&str], &str, &str)] = &[
    ("SM-S918B", &["14"], "R3C", "samsung"),
    ("SM-A536B", &["13", "14"], "R58", "samsung"),
    ("Pixel 8", &["14", "15"], "3A0", "Google"),
    ("SH-53C", &["13", "14"], "SH5", "SHARP"),
    ("SO-51D", &["14"], "QV7", "Sony"),
];
const APPLE_OUIS: &[&str] = &["a4:67:06", "f0:18:98", "3c:22:fb", "bc:d0:74", "88:66:5a"];
const ANDROID_OUIS: &[&str] = &["d0:87:e2", "5c:e8:83", "a8:9c:ed"];
/// BCDM's Android TACs: the shared list without `35166308`.
const ANDROID_TACS: &[&str] = &["35274711", "35882109", "86791604"];

/// Generates users and devices; keeps its RNG and what it has handed out, so
/// devices generated later (the control API) continue the same deterministic
/// sequence without reusing an identifier.
#[derive(Debug)]
pub(crate) struct Seeder {
    rng: StdRng,
    /// The posture fields' own stream (see [`posture_rng`]).
    posture: StdRng,
    next_user: u64,
    next_device: u64,
    used: HashSet<String>,
    reference_time: DateTime<Utc>,
}

impl Seeder {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            posture: posture_rng(seed, POSTURE_SALT),
            next_user: 1,
            next_device: 1,
            used: HashSet::new(),
            // Fixed so the data set does not depend on when it is generated.
            reference_time: Utc.with_ymd_and_hms(2025, 3, 3, 0, 30, 0).unwrap(),
        }
    }

    /// How many users a data set of `devices` devices gets: fewer users than
    /// devices (some have several), at least one.
    pub(crate) fn user_count_for(devices: usize) -> usize {
        (devices * 3 / 4).max(1)
    }

    pub(crate) fn users(&mut self, n: usize) -> Vec<BcdmUser> {
        (0..n).map(|_| self.user()).collect()
    }

    fn user(&mut self) -> BcdmUser {
        let n = self.next_user;
        self.next_user += 1;
        let rng = &mut self.rng;
        let (name, login_base) = if rng.gen_bool(0.85) {
            let (family, family_r) = *FAMILY_NAMES.choose(rng).unwrap();
            let (given, given_r) = *GIVEN_NAMES.choose(rng).unwrap();
            (
                format!("{family} {given}"),
                format!("{}.{family_r}", &given_r[..1]),
            )
        } else {
            let (first, last) = *LATIN_NAMES.choose(rng).unwrap();
            let last_ascii: String = last
                .to_lowercase()
                .chars()
                .map(|c| match c {
                    'ü' => 'u',
                    'í' => 'i',
                    c => c,
                })
                .filter(char::is_ascii_alphanumeric)
                .collect();
            (
                format!("{first} {last}"),
                format!("{}.{last_ascii}", first[..1].to_lowercase()),
            )
        };
        // Logins are unique: a second t.sato becomes t.sato2.
        let mut login_id = login_base.clone();
        let mut k = 2;
        while !self.used.insert(format!("login:{login_id}")) {
            login_id = format!("{login_base}{k}");
            k += 1;
        }
        let email = (!self.rng.gen_bool(0.2)).then(|| {
            let domain = EMAIL_DOMAINS.choose(&mut self.rng).unwrap();
            format!("{login_id}@{domain}")
        });
        BcdmUser {
            user_id: format!("U{n:07}"),
            login_id,
            name,
            email,
        }
    }

    /// The next `n` devices, each given a user from `user_ids` (about 8 %
    /// get none) and, unless `platform` says otherwise, about 85 % iOS.
    pub(crate) fn devices(
        &mut self,
        n: usize,
        user_ids: &[String],
        platform: Option<&str>,
    ) -> Vec<BcdmDevice> {
        (0..n).map(|_| self.device(user_ids, platform)).collect()
    }

    fn device(&mut self, user_ids: &[String], platform: Option<&str>) -> BcdmDevice {
        let n = self.next_device;
        self.next_device += 1;
        let ios = match platform {
            Some(p) => p.eq_ignore_ascii_case(PLATFORM_IOS),
            None => self.rng.gen_bool(0.85),
        };
        let user_id = if user_ids.is_empty() || self.rng.gen_bool(0.08) {
            None
        } else {
            user_ids.choose(&mut self.rng).cloned()
        };
        let ownership = if self.rng.gen_bool(if ios { 0.75 } else { 0.4 }) {
            BcdmOwnership::Corporate
        } else {
            BcdmOwnership::Personal
        };
        let last_checkin_at = self.checkin();
        let (udid, serial_number, imei, wifi_mac, model, os_version, platform, manufacturer) =
            if ios {
                let (model, versions, cellular, new_udid) =
                    *IOS_MODELS.choose(&mut self.rng).unwrap();
                let udid = self.unique_with(|s| {
                    if new_udid {
                        let chip = ["8030", "8101", "8110", "8120"].choose(&mut s.rng).unwrap();
                        format!("0000{chip}-{}", s.hex(16, true))
                    } else {
                        s.hex(40, false)
                    }
                });
                let serial = self.unique_with(|s| s.chars(APPLE_SERIAL_CHARS, 12));
                let imei = cellular.then(|| self.unique_with(|s| s.imei(IOS_TACS)));
                let mac = self.unique_with(|s| s.mac(APPLE_OUIS));
                let version = versions.choose(&mut self.rng).unwrap().to_string();
                (
                    Some(udid),
                    Some(serial),
                    imei,
                    Some(mac),
                    model,
                    version,
                    platform.unwrap_or(PLATFORM_IOS),
                    "Apple",
                )
            } else {
                let (model, versions, prefix, manufacturer) =
                    *ANDROID_MODELS.choose(&mut self.rng).unwrap();
                let serial = self.unique_with(|s| format!("{prefix}{}", s.chars(UPPER_ALNUM, 8)));
                let imei = self.unique_with(|s| s.imei(ANDROID_TACS));
                let mac = self.unique_with(|s| s.mac(ANDROID_OUIS));
                let version = versions.choose(&mut self.rng).unwrap().to_string();
                (
                    None,
                    Some(serial),
                    Some(imei),
                    Some(mac),
                    model,
                    version,
                    platform.unwrap_or(PLATFORM_ANDROID),
                    manufacturer,
                )
            };
        let posture = self.posture(ios, imei.is_some(), last_checkin_at.is_some());
        BcdmDevice {
            device_id: format!("D{n:09}"),
            udid,
            serial_number,
            imei,
            wifi_mac,
            model: Some(model.to_owned()),
            os_version: Some(os_version),
            platform: platform.to_owned(),
            user_id,
            ownership,
            last_checkin_at,
            compliant: posture.compliant,
            passcode_enabled: posture.passcode_enabled,
            encrypted: posture.encrypted,
            jailbroken: posture.jailbroken,
            manufacturer: Some(manufacturer.to_owned()),
            phone_number: posture.phone_number,
            mtd_risk_level: None,
        }
    }

    /// The posture of one device, from the posture stream. `cellular`: it
    /// has a SIM (an IMEI); `reported`: it has checked in at least once (a
    /// device that never did has told BCDM nothing, and is not compliant).
    fn posture(&mut self, ios: bool, cellular: bool, reported: bool) -> Posture {
        let rng = &mut self.posture;
        let tri = |rng: &mut StdRng, p_true: f64, p_null: f64| {
            if rng.gen_bool(p_null) {
                None
            } else {
                Some(rng.gen_bool(p_true))
            }
        };
        let passcode_enabled = tri(rng, 0.92, 0.02);
        let android_encrypted = tri(rng, 0.9, 0.02);
        let jailbroken = tri(rng, 0.02, 0.02);
        let verdict = rng.gen_bool(0.93);
        let phone_number = (cellular && rng.gen_bool(0.75)).then(|| japanese_mobile(rng));
        if !reported {
            return Posture {
                compliant: false,
                passcode_enabled: None,
                encrypted: None,
                jailbroken: None,
                phone_number,
            };
        }
        Posture {
            compliant: verdict && jailbroken != Some(true) && passcode_enabled != Some(false),
            passcode_enabled,
            // iOS encrypts user data with a key tied to the passcode (data
            // protection): no passcode, no encryption to speak of.
            encrypted: if ios {
                passcode_enabled
            } else {
                android_encrypted
            },
            jailbroken,
            phone_number,
        }
    }

    /// Within the last 30 days of the reference time; about 3 % never
    /// checked in. Half are written in UTC, half in Japan time.
    fn checkin(&mut self) -> Option<String> {
        if self.rng.gen_bool(0.03) {
            return None;
        }
        let at = self.reference_time - Duration::seconds(self.rng.gen_range(0..30 * 86_400));
        Some(if self.rng.gen_bool(0.5) {
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        } else {
            let jst = FixedOffset::east_opt(9 * 3600).expect("+09:00 is a valid offset");
            at.with_timezone(&jst)
                .to_rfc3339_opts(SecondsFormat::Secs, false)
        })
    }

    fn hex(&mut self, len: usize, upper: bool) -> String {
        let digits = if upper { HEX_UPPER } else { HEX_LOWER };
        self.chars(digits, len)
    }

    fn chars(&mut self, alphabet: &[u8], len: usize) -> String {
        random_chars(&mut self.rng, alphabet, len)
    }

    /// A 15-digit IMEI: a type allocation code, a serial, the Luhn digit.
    fn imei(&mut self, tacs: &[&str]) -> String {
        let tac = tacs.choose(&mut self.rng).unwrap();
        let body = format!("{tac}{:06}", self.rng.gen_range(0..1_000_000));
        format!("{body}{}", luhn_check_digit(&body))
    }

    /// `a4:67:06:0c:15:3d`; about one in five in upper case.
    fn mac(&mut self, ouis: &[&str]) -> String {
        let oui = ouis.choose(&mut self.rng).unwrap();
        let tail: Vec<String> = (0..3)
            .map(|_| format!("{:02x}", self.rng.gen::<u8>()))
            .collect();
        let mac = format!("{oui}:{}", tail.join(":"));
        if self.rng.gen_bool(0.2) {
            mac.to_ascii_uppercase()
        } else {
            mac
        }
    }

    /// Draws values until one has not been handed out (compared ignoring
    /// case and MAC separators).
    fn unique_with(&mut self, mut draw: impl FnMut(&mut Self) -> String) -> String {
        loop {
            let value = draw(self);
            let key = value.to_ascii_uppercase().replace(':', "");
            if self.used.insert(key) {
                return value;
            }
        }
    }
}

/// What [`Seeder::posture`] draws for one device.
struct Posture {
    compliant: bool,
    passcode_enabled: Option<bool>,
    encrypted: Option<bool>,
    jailbroken: Option<bool>,
    phone_number: Option<String>,
}

/// A Japanese mobile number in E.164 form: `+81` and a `070`, `080` or `090`
/// number without its leading 0.
fn japanese_mobile(rng: &mut StdRng) -> String {
    let prefix = ["+8170", "+8180", "+8190"][rng.gen_range(0..3)];
    format!("{prefix}{}", random_chars(rng, b"0123456789", 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_imeis_pass_the_luhn_check() {
        let mut seeder = Seeder::new(3);
        for _ in 0..50 {
            let imei = seeder.imei(IOS_TACS);
            assert_eq!(imei.len(), 15);
            let sum: u32 = imei
                .bytes()
                .rev()
                .map(|b| u32::from(b - b'0'))
                .enumerate()
                .map(|(i, d)| {
                    if i % 2 == 1 {
                        (d * 2) / 10 + (d * 2) % 10
                    } else {
                        d
                    }
                })
                .sum();
            assert_eq!(sum % 10, 0, "{imei}");
        }
    }

    #[test]
    fn posture_is_varied_and_consistent_with_platform_jailbreak_and_check_in() {
        let mut s = Seeder::new(5);
        let users = s.users(750);
        let ids: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
        let devices = s.devices(1000, &ids, None);
        let count = |f: &dyn Fn(&BcdmDevice) -> bool| devices.iter().filter(|d| f(d)).count();
        assert!(count(&|d| d.compliant) > 700);
        assert!(count(&|d| !d.compliant) > 60);
        assert!(count(&|d| d.passcode_enabled == Some(false)) > 30);
        assert!(count(&|d| d.passcode_enabled.is_none()) > 5);
        assert!(count(&|d| d.encrypted == Some(false)) > 30);
        assert!(count(&|d| d.jailbroken == Some(true)) > 5);
        assert!(count(&|d| d.phone_number.is_some()) > 400);
        assert!(count(&|d| d.phone_number.is_none()) > 100);
        for d in &devices {
            assert_eq!(d.mtd_risk_level, None);
            if d.jailbroken == Some(true) || d.passcode_enabled == Some(false) {
                assert!(!d.compliant, "{d:?}");
            }
            if d.last_checkin_at.is_none() {
                assert!(!d.compliant && d.jailbroken.is_none(), "{d:?}");
            }
            if d.is_ios() {
                assert_eq!(d.manufacturer.as_deref(), Some("Apple"));
                assert_eq!(d.encrypted, d.passcode_enabled, "{d:?}");
            } else {
                assert_ne!(d.manufacturer.as_deref(), Some("Apple"));
            }
            if d.imei.is_none() {
                assert_eq!(d.phone_number, None, "no SIM, no number");
            }
            if let Some(p) = &d.phone_number {
                assert!(p.starts_with("+81") && p.len() == 13, "{p}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_data_and_another_seed_other_data() {
        let make = |seed| {
            let mut s = Seeder::new(seed);
            let users = s.users(20);
            let ids: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
            (users, s.devices(30, &ids, None))
        };
        assert_eq!(make(7), make(7));
        assert_ne!(make(7).1, make(8).1);
    }
}
