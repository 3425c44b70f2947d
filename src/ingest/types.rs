//! The agent's JSON, as CONTRACT §3 fixes it, and its checks beyond shape.

use crate::config::Severity;
use crate::store::ThreatStatus;
use chrono::{DateTime, Utc};
use mtd_adapter::DeviceIdentifier;
use serde::Deserialize;
use serde_json::Value;

/// The identifiers an agent sends for its device (at least one). An
/// identifier that is given must be a usable string: `null` or a blank one
/// is refused naming the field, not quietly dropped (the document at
/// `/openapi.json` says so, and a fuzzer holds the two together).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct AgentDevice {
    #[serde(default, deserialize_with = "present")]
    pub udid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub serial: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub imei: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub mac: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub mdm_device_id: Option<String>,
}

/// A field that, when present, is a string (`null` is refused; absent is `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// At most `max` characters and no control characters.
fn printable_within(value: &str, max: usize) -> bool {
    value.chars().count() <= max && !value.chars().any(char::is_control)
}

impl AgentDevice {
    /// The valid identifiers, normalised, most specific first.
    pub fn identifiers(&self) -> Vec<DeviceIdentifier> {
        let mut out = Vec::new();
        let mut add = |v: &Option<String>, f: fn(&str) -> Option<DeviceIdentifier>| {
            if let Some(id) = v.as_deref().and_then(f) {
                out.push(id);
            }
        };
        add(&self.mdm_device_id, DeviceIdentifier::mdm_device_id);
        add(&self.udid, DeviceIdentifier::udid);
        add(&self.serial, DeviceIdentifier::serial);
        add(&self.imei, DeviceIdentifier::imei);
        add(&self.mac, DeviceIdentifier::mac);
        out
    }

    /// At least one identifier, and every one given well-formed.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self
            .mac
            .as_deref()
            .is_some_and(|m| mtd_adapter::normalize_mac(m).is_none())
        {
            return Err(FieldError::new(
                "device.mac",
                "is not a MAC address (12 hex digits)",
            ));
        }
        if self
            .imei
            .as_deref()
            .is_some_and(|m| mtd_adapter::normalize_imei(m).is_none())
        {
            return Err(FieldError::new(
                "device.imei",
                "is not an IMEI, MEID or ESN",
            ));
        }
        for (field, value) in [
            ("device.udid", &self.udid),
            ("device.serial", &self.serial),
            ("device.mdm_device_id", &self.mdm_device_id),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(FieldError::new(
                    field,
                    "must not be blank; leave it out instead",
                ));
            }
        }
        if self.identifiers().is_empty() {
            return Err(FieldError::new(
                "device",
                "needs at least one identifier: udid, serial, imei, mac or mdm_device_id",
            ));
        }
        Ok(())
    }
}

/// `POST /v1/agent/activate`.
#[derive(Debug, Clone, Deserialize)]
pub struct ActivateRequest {
    pub device: AgentDevice,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub agent_version: Option<String>,
    #[serde(default)]
    pub tracking_id_1: Option<String>,
    #[serde(default)]
    pub tracking_id_2: Option<String>,
}

impl ActivateRequest {
    pub fn validate(&self) -> Result<(), FieldError> {
        for (field, value) in [
            ("platform", &self.platform),
            ("agent_version", &self.agent_version),
            ("tracking_id_1", &self.tracking_id_1),
            ("tracking_id_2", &self.tracking_id_2),
        ] {
            if value.as_deref().is_some_and(|v| !printable_within(v, 256)) {
                return Err(FieldError::new(
                    field,
                    "must be at most 256 characters, none of them control characters",
                ));
            }
        }
        self.device.validate()
    }
}

/// The threat of an event.
#[derive(Debug, Clone, Deserialize)]
pub struct Threat {
    /// `category.name`, e.g. `network.arp_mitm`.
    #[serde(rename = "type")]
    pub threat_type: String,
    pub severity: Severity,
    #[serde(default)]
    pub name: Option<String>,
    /// `detected` (the default) or `resolved`.
    #[serde(default = "detected")]
    pub status: ThreatStatus,
    /// Tells two threats of one type on a device apart (an app's package, a
    /// network's BSSID). A missing key, `null` and `""` are the same key.
    #[serde(default)]
    pub key: Option<String>,
}

fn detected() -> ThreatStatus {
    ThreatStatus::Detected
}

impl Threat {
    /// The key as stored: `""` for none.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("")
    }
}

/// One threat event.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentEvent {
    /// The idempotency key within the tenant.
    pub event_id: String,
    pub detected_at: DateTime<Utc>,
    pub device: AgentDevice,
    pub threat: Threat,
    #[serde(default)]
    pub network: Option<Value>,
    #[serde(default)]
    pub details: Option<Value>,
}

/// The longest `event_id` accepted (UUIDs are 36).
pub const MAX_EVENT_ID: usize = 128;

impl AgentEvent {
    pub fn validate(&self) -> Result<(), FieldError> {
        let id = self.event_id.trim();
        if id.is_empty() || id.len() != self.event_id.len() || !printable_within(id, MAX_EVENT_ID) {
            return Err(FieldError::new(
                "event_id",
                "must be 1 to 128 characters without surrounding spaces or control characters",
            ));
        }
        if !valid_threat_type(&self.threat.threat_type) {
            return Err(FieldError::new(
                "threat.type",
                "must be `category.name` of printable characters, at most 128 long, e.g. `network.arp_mitm`",
            ));
        }
        if self
            .threat
            .key
            .as_deref()
            .is_some_and(|k| !printable_within(k, MAX_THREAT_KEY))
        {
            return Err(FieldError::new(
                "threat.key",
                "must be at most 256 characters, none of them control characters",
            ));
        }
        // Stored as sent and shown as objects: a string or a list here is a mistake.
        for (field, value) in [("network", &self.network), ("details", &self.details)] {
            if value.as_ref().is_some_and(|v| !v.is_object()) {
                return Err(FieldError::new(field, "must be a JSON object (or null)"));
            }
        }
        self.device.validate()
    }
}

/// The longest `threat.key` accepted.
pub const MAX_THREAT_KEY: usize = 256;

/// `category.name` (CONTRACT §3): printable characters, at most 128, a
/// category and a name around the first dot. No `*` and no spaces: those
/// would read as rule patterns or be unreadable in a log line.
fn valid_threat_type(t: &str) -> bool {
    let printable = |c: char| !c.is_control() && !c.is_whitespace() && c != '*';
    t.chars().count() <= 128
        && t.chars().all(printable)
        && matches!(t.split_once('.'), Some((c, n)) if !c.is_empty() && !n.is_empty())
}

/// A field that is present and well-typed but not acceptable: 400 naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: &str) -> Self {
        FieldError {
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    /// The same error inside a batch: `events[3].threat.type`.
    pub fn in_batch(mut self, index: usize) -> Self {
        self.field = format!("events[{index}].{}", self.field);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threat_types_are_category_dot_name() {
        for ok in [
            "network.arp_mitm",
            "app.malicious",
            "device.usb_debugging",
            "future.thing2",
            "Network.ARP",
            "a.b.c",
            "vendor-x.détection",
        ] {
            assert!(valid_threat_type(ok), "{ok}");
        }
        for bad in [
            "",
            "network",
            ".x",
            "x.",
            "a b.c",
            "network.*",
            "net\u{7}.x",
        ] {
            assert!(!valid_threat_type(bad), "{bad}");
        }
    }

    #[test]
    fn a_device_needs_one_valid_identifier() {
        assert!(AgentDevice::default().validate().is_err());
        let d = AgentDevice {
            mac: Some("zz".into()),
            udid: Some("X".into()),
            ..Default::default()
        };
        assert_eq!(d.validate().unwrap_err().field, "device.mac");
        let d = AgentDevice {
            udid: Some("abc".into()),
            ..Default::default()
        };
        assert!(d.validate().is_ok());
        assert_eq!(d.identifiers().len(), 1);
    }
}
