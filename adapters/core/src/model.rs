//! The shared model every vendor maps into.
//!
//! Vendor crates convert their wire structs into these types at the edge; the
//! sync engine, the store and the dispatcher only ever see these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The MDM kinds the connector speaks (a closed set: one crate each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MdmKind {
    /// SOTI MobiControl.
    Soti,
    /// IBM MaaS360 (the MaaS360 Web Services API); Cisco's MCMS was MaaS360,
    /// so `mcms` is accepted for it.
    #[serde(alias = "mcms")]
    Maas360,
    /// VMware AirWatch / Workspace ONE UEM (the AirWatch REST API).
    Airwatch,
    /// SoftBank Business Concierge Device Management.
    Bcdm,
}

impl MdmKind {
    pub const ALL: [MdmKind; 4] = [
        MdmKind::Soti,
        MdmKind::Maas360,
        MdmKind::Airwatch,
        MdmKind::Bcdm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MdmKind::Soti => "soti",
            MdmKind::Maas360 => "maas360",
            MdmKind::Airwatch => "airwatch",
            MdmKind::Bcdm => "bcdm",
        }
    }
}

impl fmt::Display for MdmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MdmKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "soti" => Ok(MdmKind::Soti),
            "maas360" | "mcms" => Ok(MdmKind::Maas360),
            "airwatch" => Ok(MdmKind::Airwatch),
            "bcdm" => Ok(MdmKind::Bcdm),
            other => Err(format!(
                "unknown MDM kind `{other}`, expected one of: soti, maas360 (alias: mcms), airwatch, bcdm"
            )),
        }
    }
}

/// Who owns a device. `wipe` is only ever sent to [`Ownership::Corporate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    Corporate,
    Personal,
    Shared,
    #[default]
    Unknown,
}

impl Ownership {
    pub fn as_str(self) -> &'static str {
        match self {
            Ownership::Corporate => "corporate",
            Ownership::Personal => "personal",
            Ownership::Shared => "shared",
            Ownership::Unknown => "unknown",
        }
    }

    /// Parses the stored form; anything unrecognised is `Unknown` (never corporate).
    pub fn parse_lenient(s: &str) -> Self {
        match s.trim().to_ascii_lowercase().as_str() {
            "corporate" => Ownership::Corporate,
            "personal" => Ownership::Personal,
            "shared" => Ownership::Shared,
            _ => Ownership::Unknown,
        }
    }
}

impl fmt::Display for Ownership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operating system family of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Android,
    Windows,
    Macos,
    #[default]
    Other,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::Windows => "windows",
            Platform::Macos => "macos",
            Platform::Other => "other",
        }
    }

    /// Maps the many spellings vendors use (`iOS`, `Ios`, `Apple`, `AndroidPlus`,
    /// `Android`, `WindowsPhone`, `AppleOsX`, …), case-insensitively.
    pub fn from_vendor(raw: &str) -> Self {
        let s = raw.trim().to_ascii_lowercase();
        if s.is_empty() {
            Platform::Other
        } else if s == "ios" || s == "apple" || s == "ipados" || s.starts_with("ios") {
            Platform::Ios
        } else if s.starts_with("android") {
            Platform::Android
        } else if s.starts_with("windows")
            || s.starts_with("winrt")
            || s == "wince"
            || s.starts_with("winmobile")
        {
            Platform::Windows
        } else if s.contains("osx") || s.starts_with("mac") {
            Platform::Macos
        } else {
            Platform::Other
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The actions of the contract (CONTRACT §4), as a policy rule names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    None,
    Lock,
    DisconnectWifi,
    EnterpriseWipe,
    Wipe,
}

impl ActionKind {
    pub const ALL: [ActionKind; 5] = [
        ActionKind::None,
        ActionKind::Lock,
        ActionKind::DisconnectWifi,
        ActionKind::EnterpriseWipe,
        ActionKind::Wipe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::None => "none",
            ActionKind::Lock => "lock",
            ActionKind::DisconnectWifi => "disconnect_wifi",
            ActionKind::EnterpriseWipe => "enterprise_wipe",
            ActionKind::Wipe => "wipe",
        }
    }

    /// Enterprise wipe and wipe destroy data: they are capped and re-checked.
    pub fn is_destructive(self) -> bool {
        matches!(self, ActionKind::EnterpriseWipe | ActionKind::Wipe)
    }

    /// The MDM command that carries out this action (`None` sends nothing).
    pub fn command(self) -> Option<MdmCommand> {
        match self {
            ActionKind::None => None,
            ActionKind::Lock => Some(MdmCommand::Lock),
            ActionKind::DisconnectWifi => Some(MdmCommand::DisconnectWifi),
            ActionKind::EnterpriseWipe => Some(MdmCommand::EnterpriseWipe),
            ActionKind::Wipe => Some(MdmCommand::Wipe),
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActionKind::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| {
            format!(
                "unknown action `{s}`, expected one of: none, lock, disconnect_wifi, enterprise_wipe, wipe"
            )
        })
    }
}

/// One call an adapter makes to its MDM. Removing the disconnect-Wi-Fi profile
/// is a command of its own: the connector sends it later, as a separate row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MdmCommand {
    Lock,
    DisconnectWifi,
    RemoveWifiProfile,
    EnterpriseWipe,
    Wipe,
}

impl MdmCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            MdmCommand::Lock => "lock",
            MdmCommand::DisconnectWifi => "disconnect_wifi",
            MdmCommand::RemoveWifiProfile => "remove_wifi_profile",
            MdmCommand::EnterpriseWipe => "enterprise_wipe",
            MdmCommand::Wipe => "wipe",
        }
    }
}

impl fmt::Display for MdmCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identifiers of a device, each already normalised (see [`crate::normalize_mac`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifiers {
    pub udid: Option<String>,
    pub serial: Option<String>,
    pub imei: Option<String>,
    pub mac: Option<String>,
}

/// A device user as the MDM knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The MDM's key for the user (an id, or the user name where the MDM has no id).
    pub mdm_user_id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// A device group (a SOTI path, an AirWatch organisation group), as the MDM names it.
/// The connector prefixes the MDM's name when it shows groups to admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The MDM's key for the group (its id, or its path where paths are the key).
    pub mdm_group_id: String,
    pub name: String,
}

/// A managed device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The MDM's own id; the key for lookups and commands at that MDM.
    pub mdm_device_id: String,
    pub identifiers: Identifiers,
    pub name: Option<String>,
    pub platform: Platform,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub ownership: Ownership,
    /// The device's user, where the MDM tells it (embedded: SOTI derives users from devices).
    pub user: Option<User>,
    /// The `mdm_group_id`s of the groups the device belongs to.
    pub groups: Vec<String>,
    pub last_checkin_at: Option<DateTime<Utc>>,
    /// What the MDM reports of the device's state; see [`Posture`].
    #[serde(default)]
    pub posture: Posture,
    /// The risk level the MDM holds for the device, where its listing says
    /// (BCDM's `mtd_risk_level`); `None` elsewhere or when never written.
    #[serde(default)]
    pub reported_risk: Option<SignalLevel>,
}

/// A device's risk level as the connector writes it into an MDM (CONTRACT
/// §4 "Risk level"): `Secured` when it has no open threat, else the highest
/// severity among them. Vendors see the capitalised names (`High`); BCDM's
/// endpoint takes the lower-case ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SignalLevel {
    Secured,
    Low,
    Medium,
    High,
    Critical,
}

impl SignalLevel {
    pub const ALL: [SignalLevel; 5] = [
        SignalLevel::Secured,
        SignalLevel::Low,
        SignalLevel::Medium,
        SignalLevel::High,
        SignalLevel::Critical,
    ];

    /// `Secured`, `Low`, `Medium`, `High`, `Critical`: the value of a custom
    /// attribute, and the suffix of an AirWatch level tag.
    pub fn as_vendor(self) -> &'static str {
        match self {
            SignalLevel::Secured => "Secured",
            SignalLevel::Low => "Low",
            SignalLevel::Medium => "Medium",
            SignalLevel::High => "High",
            SignalLevel::Critical => "Critical",
        }
    }

    /// `secured`, `low`, …: the connector's own names (and BCDM's).
    pub fn as_lower(self) -> &'static str {
        match self {
            SignalLevel::Secured => "secured",
            SignalLevel::Low => "low",
            SignalLevel::Medium => "medium",
            SignalLevel::High => "high",
            SignalLevel::Critical => "critical",
        }
    }

    /// Either spelling, any case, surrounding spaces ignored.
    pub fn parse(s: &str) -> Option<SignalLevel> {
        let s = s.trim();
        SignalLevel::ALL
            .into_iter()
            .find(|l| l.as_vendor().eq_ignore_ascii_case(s))
    }
}

/// How an MDM can tell the connector which level it holds for a device
/// (drift repair, issue 17). The cost decides which devices a sync asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RiskReadBack {
    /// The listing carries it ([`Device::reported_risk`], BCDM): free.
    Listing,
    /// One request per device (SOTI custom attributes, MaaS360 identity).
    PerDevice,
    /// A few requests for all devices (AirWatch: the members of each level tag).
    Bulk,
}

/// What an MDM says about a device's security state (CONTRACT §5, device
/// detail). Each field is `None` where the MDM does not say; the model,
/// OS version and last check-in are [`Device`]'s own fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posture {
    /// The MDM's own compliance verdict.
    pub compliant: Option<bool>,
    /// Enrolled (managed) at the MDM.
    pub enrolled: Option<bool>,
    /// Storage encryption on.
    pub encrypted: Option<bool>,
    /// A passcode (PIN lock) is set.
    pub passcode: Option<bool>,
    /// Jailbroken or rooted.
    pub compromised: Option<bool>,
    pub manufacturer: Option<String>,
    pub phone_number: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_spellings_of_the_vendors_map_case_insensitively() {
        for (raw, want) in [
            ("iOS", Platform::Ios),
            ("Ios", Platform::Ios),
            ("IOS", Platform::Ios),
            ("Apple", Platform::Ios),
            ("AndroidPlus", Platform::Android),
            ("androidplus", Platform::Android),
            ("Android", Platform::Android),
            ("WindowsPhone", Platform::Windows),
            ("WinRT", Platform::Windows),
            ("AppleOsX", Platform::Macos),
            ("", Platform::Other),
            ("Symbian", Platform::Other),
        ] {
            assert_eq!(Platform::from_vendor(raw), want, "{raw}");
        }
    }

    #[test]
    fn action_kinds_round_trip_through_their_names() {
        for a in ActionKind::ALL {
            assert_eq!(a.as_str().parse::<ActionKind>().unwrap(), a);
        }
        assert!("format"
            .parse::<ActionKind>()
            .unwrap_err()
            .contains("expected one of"));
        assert!(ActionKind::Wipe.is_destructive() && !ActionKind::Lock.is_destructive());
        assert_eq!(ActionKind::None.command(), None);
    }

    #[test]
    fn only_corporate_is_corporate() {
        assert_eq!(Ownership::parse_lenient("Corporate"), Ownership::Corporate);
        assert_eq!(Ownership::parse_lenient("whatever"), Ownership::Unknown);
    }
}
