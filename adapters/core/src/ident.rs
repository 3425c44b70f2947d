//! Device identifiers and their normal forms.
//!
//! MDMs and agents spell the same identifier differently (`A4:67:06:0C:15:3D`,
//! `a467060c153d`, `a4-67-06-0c-15-3d`); every identifier is normalised once,
//! at the edge, so that the store and lookups compare like with like.

use serde::{Deserialize, Serialize};
use std::fmt;

/// MAC address as 12 lowercase hex digits, whatever separators came in.
/// `None` when the input does not hold exactly 12 hex digits (or is all zero).
pub fn normalize_mac(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(12);
    for c in raw.trim().chars() {
        match c {
            ':' | '-' | '.' | ' ' => continue,
            c if c.is_ascii_hexdigit() => out.push(c.to_ascii_lowercase()),
            _ => return None,
        }
    }
    (out.len() == 12 && out != "000000000000").then_some(out)
}

/// IMEI / MEID / ESN: spaces and dashes dropped, upper case (MEIDs are hex).
pub fn normalize_imei(raw: &str) -> Option<String> {
    let out: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (!out.is_empty() && out.chars().all(|c| c.is_ascii_alphanumeric())).then_some(out)
}

/// Serial number: trimmed, upper case (vendors print serials in upper case,
/// agents sometimes do not).
pub fn normalize_serial(raw: &str) -> Option<String> {
    let out = raw.trim().to_ascii_uppercase();
    (!out.is_empty()).then_some(out)
}

/// UDID: trimmed, upper case. Apple's 40-hex UDIDs and the newer
/// `00008030-…` form are both compared case-insensitively this way.
pub fn normalize_udid(raw: &str) -> Option<String> {
    let out = raw.trim().to_ascii_uppercase();
    (!out.is_empty()).then_some(out)
}

/// One identifier to look a device up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum DeviceIdentifier {
    /// The MDM's own id for the device (opaque, never normalised).
    MdmDeviceId(String),
    Udid(String),
    Serial(String),
    Imei(String),
    Mac(String),
}

impl DeviceIdentifier {
    /// Builds a normalised identifier; `None` if the value is not valid for its kind.
    pub fn udid(raw: &str) -> Option<Self> {
        normalize_udid(raw).map(Self::Udid)
    }
    pub fn serial(raw: &str) -> Option<Self> {
        normalize_serial(raw).map(Self::Serial)
    }
    pub fn imei(raw: &str) -> Option<Self> {
        normalize_imei(raw).map(Self::Imei)
    }
    pub fn mac(raw: &str) -> Option<Self> {
        normalize_mac(raw).map(Self::Mac)
    }
    pub fn mdm_device_id(raw: &str) -> Option<Self> {
        let v = raw.trim();
        (!v.is_empty()).then(|| Self::MdmDeviceId(v.to_string()))
    }

    /// The name of the identifier kind, as used in logs and the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MdmDeviceId(_) => "mdm_device_id",
            Self::Udid(_) => "udid",
            Self::Serial(_) => "serial",
            Self::Imei(_) => "imei",
            Self::Mac(_) => "mac",
        }
    }

    /// The (normalised) value.
    pub fn value(&self) -> &str {
        match self {
            Self::MdmDeviceId(v)
            | Self::Udid(v)
            | Self::Serial(v)
            | Self::Imei(v)
            | Self::Mac(v) => v,
        }
    }
}

impl fmt::Display for DeviceIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.kind(), self.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_twelve_lowercase_hex_digits_whatever_the_separators() {
        for raw in [
            "a4:67:06:0c:15:3d",
            "A4-67-06-0C-15-3D",
            "A467060C153D",
            " a467.060c.153d ",
        ] {
            assert_eq!(normalize_mac(raw).as_deref(), Some("a467060c153d"), "{raw}");
        }
    }

    #[test]
    fn mac_with_wrong_length_or_letters_is_rejected() {
        for raw in [
            "",
            "a4:67:06:0c:15",
            "a4:67:06:0c:15:3d:00",
            "zz:67:06:0c:15:3d",
            "00:00:00:00:00:00",
        ] {
            assert_eq!(normalize_mac(raw), None, "{raw}");
        }
    }

    #[test]
    fn imei_serial_and_udid_are_trimmed_and_upper_cased() {
        assert_eq!(
            normalize_imei(" 35-209900-176148-1 ").as_deref(),
            Some("352099001761481")
        );
        assert_eq!(
            normalize_imei("a1000049d5e4b0").as_deref(),
            Some("A1000049D5E4B0")
        );
        assert_eq!(normalize_imei("35!2"), None);
        assert_eq!(
            normalize_serial(" f17xk0abcd ").as_deref(),
            Some("F17XK0ABCD")
        );
        assert_eq!(normalize_serial("   "), None);
        assert_eq!(
            normalize_udid("00008030-001a").as_deref(),
            Some("00008030-001A")
        );
    }

    #[test]
    fn identifier_display_names_its_kind() {
        assert_eq!(
            DeviceIdentifier::mac("A4:67:06:0C:15:3D")
                .unwrap()
                .to_string(),
            "mac=a467060c153d"
        );
        assert_eq!(DeviceIdentifier::mdm_device_id("  "), None);
    }
}
