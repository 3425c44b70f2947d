//! Seed tables and draws shared by the vendors' seeders: names, Apple
//! models, type allocation codes, serial alphabets, and the helpers that draw
//! from them. Each vendor's `seed.rs` keeps what is its own (its Android
//! models, groups, id formats, and BCDM its Japanese names and its own TACs).
//!
//! The tables are data the seeded sequences depend on: changing an entry or
//! its order changes what every seed produces.

use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

pub(crate) const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Chloé", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kofi",
    "Lena", "Marco", "Nora", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tara", "Uma", "Viktor",
    "Wen", "Yusuf", "Zoe",
];
pub(crate) const LAST_NAMES: &[&str] = &[
    "Schmidt",
    "Tremblay",
    "Nguyen",
    "Müller",
    "Okafor",
    "Rossi",
    "García",
    "Kowalski",
    "Sato",
    "Andersson",
    "Dubois",
    "Patel",
    "O'Brien",
    "Novak",
    "Silva",
    "Kim",
    "Fischer",
    "Haddad",
];

/// iPhones and iPads: (model, OS versions, is an iPad).
pub(crate) const IOS_MODELS: &[(&str, &[&str], bool)] = &[
    ("iPhone 12", &["16.7.8", "17.5.1"], false),
    ("iPhone 13", &["17.4.1", "17.5.1", "18.0.1"], false),
    ("iPhone 14 Pro", &["17.5.1", "18.1"], false),
    ("iPhone 15", &["17.6.1", "18.1", "18.2"], false),
    ("iPhone SE (3rd generation)", &["16.7.8", "17.5.1"], false),
    ("iPad Air (5th generation)", &["17.5.1", "18.1"], true),
    ("iPad (10th generation)", &["17.6.1", "18.0"], true),
];

/// Type allocation codes that start the generated IMEIs.
pub(crate) const IOS_TACS: &[&str] = &["35325811", "35391110", "35467208"];
pub(crate) const ANDROID_TACS: &[&str] = &["35274711", "35882109", "35166308", "86791604"];

/// Apple serials avoid easily confused letters.
pub(crate) const APPLE_SERIAL_CHARS: &[u8] = b"0123456789CDFGHJKLMNPQRTVWXY";
pub(crate) const UPPER_ALNUM: &[u8] = b"0123456789ABCDEFGHJKLMNPRSTUVWXYZ";
pub(crate) const HEX_UPPER: &[u8] = b"0123456789ABCDEF";
pub(crate) const HEX_LOWER: &[u8] = b"0123456789abcdef";

pub(crate) fn random_chars(rng: &mut StdRng, alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| *alphabet.choose(rng).expect("non-empty") as char)
        .collect()
}

/// A random version-4 UUID, lower case.
pub(crate) fn uuid(rng: &mut StdRng) -> String {
    let h = random_chars(rng, HEX_LOWER, 32);
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        ["8", "9", "a", "b"][rng.gen_range(0..4)],
        &h[17..20],
        &h[20..32]
    )
}

/// The RNG of a seeder's second stream, for the posture fields (compliance,
/// jailbreak, phone numbers, …). A stream of its own so that adding posture
/// left every value the main stream drew before (identifiers, names,
/// models) exactly as it was: data sets other tests and the benchmarks rely
/// on did not move.
pub(crate) fn posture_rng(seed: u64, salt: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ salt ^ 0x5053_5455_5245) // "PSTURE"
}

/// A mobile number in E.164 form (German, Canadian or British).
pub(crate) fn phone(rng: &mut StdRng) -> String {
    let prefix = ["+49151", "+49170", "+1416", "+1647", "+4479"][rng.gen_range(0..5)];
    format!("{prefix}{}", random_chars(rng, b"0123456789", 7))
}

/// A 15-digit IMEI: TAC, six random digits, Luhn check digit.
pub(crate) fn imei(rng: &mut StdRng, tac: &str) -> String {
    let mut digits: String = tac.to_owned();
    for _ in 0..6 {
        digits.push(char::from(b'0' + rng.gen_range(0..10u8)));
    }
    let check = luhn_check_digit(&digits);
    digits.push(char::from(b'0' + check));
    digits
}

pub(crate) fn luhn_check_digit(digits: &str) -> u8 {
    // Double every second digit counting from the right of the payload.
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let dd = d * 2;
                if dd > 9 {
                    dd - 9
                } else {
                    dd
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Lower-case ASCII rendering of a name for user names and emails.
pub(crate) fn ascii_fold(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'é' | 'è' => Some('e'),
            'ü' => Some('u'),
            'í' => Some('i'),
            'á' => Some('a'),
            '\'' => None,
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_imei_has_the_right_check_digit() {
        // 49015420323751 + 8 is the textbook example.
        assert_eq!(luhn_check_digit("49015420323751"), 8);
    }
}
