//! A tenant's policy: which action a threat leads to (CONTRACT §4).
//!
//! Rules are tried in file order; the first whose threat pattern matches the
//! event's type, whose `min_severity` (if any) the event reaches, and whose
//! `groups` (if any) hold the device, decides.
//!
//! Groups are compared as the admin API shows them: the name of one of the
//! tenant's `[[mdm]]` entries, one space, then the MDM's own group name (a
//! SOTI path such as `\\Company\Sales`, an AirWatch organisation group name),
//! e.g. `Acme SOTI \\Company\Sales`. Comparison is case-sensitive, as the
//! names are shown.

use mtd_adapter::{ActionKind, MdmKind};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The threat categories of the contract. A pattern naming another category
/// is accepted with a warning: agents may send new ones.
pub const KNOWN_CATEGORIES: [&str; 4] = ["network", "device", "app", "phishing"];

/// How severe a threat is, as agents report it. Ordered `Low < … < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!("unknown severity `{s}`, expected one of: low, medium, high, critical")
            })
    }
}

/// `enforce` sends actions; `monitor` records the decisions and sends nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PolicyMode {
    #[default]
    Enforce,
    Monitor,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Monitor => "monitor",
        }
    }
}

impl fmt::Display for PolicyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(PolicyMode::Enforce),
            "monitor" => Ok(PolicyMode::Monitor),
            other => Err(format!(
                "unknown mode `{other}`, expected one of: enforce, monitor"
            )),
        }
    }
}

/// The `threat` of a rule: `*`, `category.*` or an exact `category.name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThreatPattern {
    /// `*`: every threat.
    Any,
    /// `network.*`: every threat of a category. Holds the category alone (`network`).
    Category(String),
    /// `network.arp_mitm`: one threat type.
    Exact(String),
}

impl ThreatPattern {
    /// Whether an event's threat type (`category.name`) is matched.
    pub fn matches(&self, threat_type: &str) -> bool {
        match self {
            ThreatPattern::Any => true,
            ThreatPattern::Category(c) => threat_type
                .strip_prefix(c.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
            ThreatPattern::Exact(t) => t == threat_type,
        }
    }

    /// The category the pattern is limited to, if any.
    pub fn category(&self) -> Option<&str> {
        match self {
            ThreatPattern::Any => None,
            ThreatPattern::Category(c) => Some(c),
            ThreatPattern::Exact(t) => t.split_once('.').map(|(c, _)| c),
        }
    }

    /// Whether every threat type `other` matches is also matched by `self`.
    pub(super) fn covers(&self, other: &ThreatPattern) -> bool {
        match (self, other) {
            (ThreatPattern::Any, _) => true,
            (ThreatPattern::Category(c), ThreatPattern::Category(d)) => c == d,
            (ThreatPattern::Category(_), ThreatPattern::Exact(t)) => self.matches(t),
            (ThreatPattern::Exact(a), ThreatPattern::Exact(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for ThreatPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThreatPattern::Any => f.write_str("*"),
            ThreatPattern::Category(c) => write!(f, "{c}.*"),
            ThreatPattern::Exact(t) => f.write_str(t),
        }
    }
}

impl FromStr for ThreatPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn part_ok(p: &str) -> bool {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }
        let invalid = || {
            format!(
                "invalid threat pattern `{s}`, expected \"*\", \"category.*\" or \"category.name\" \
                 (parts of lowercase letters, digits and _)"
            )
        };
        if s == "*" {
            return Ok(ThreatPattern::Any);
        }
        let (category, name) = s.split_once('.').ok_or_else(invalid)?;
        if !part_ok(category) {
            return Err(invalid());
        }
        if name == "*" {
            Ok(ThreatPattern::Category(category.to_owned()))
        } else if part_ok(name) {
            Ok(ThreatPattern::Exact(s.to_owned()))
        } else {
            Err(invalid())
        }
    }
}

/// Whether MDMs of this kind keep device groups a rule can name: SOTI (device
/// group paths) and AirWatch (organisation groups) do; MaaS360 and BCDM keep
/// none, so a device there is never in a group.
pub fn kind_keeps_groups(kind: MdmKind) -> bool {
    match kind {
        MdmKind::Soti | MdmKind::Airwatch => true,
        MdmKind::Maas360 | MdmKind::Bcdm => false,
    }
}

/// Splits a group display string into the name of the MDM it belongs to and
/// the MDM's own group name: `Acme SOTI \\Company\Sales` with the MDM names
/// `Acme` and `Acme SOTI` gives (`Acme SOTI`, `\\Company\Sales`).
///
/// An MDM name may be a prefix of another (and contain spaces), so the longest
/// name followed by a space wins. The group name may be empty (`"Acme SOTI "`);
/// `None` when no name followed by a space starts the string.
pub fn split_group<'n, 'g>(
    group: &'g str,
    mdm_names: impl IntoIterator<Item = &'n str>,
) -> Option<(&'n str, &'g str)> {
    mdm_names
        .into_iter()
        .filter(|name| !name.is_empty())
        .filter_map(|name| Some((name, group.strip_prefix(name)?.strip_prefix(' ')?)))
        .max_by_key(|(name, _)| name.len())
}

/// Whether a device in `device_group` is in `group`: the same group, or one of
/// its subgroups. SOTI paths are `\`-separated, so `… \\Company\Sales\East`
/// is inside `… \\Company\Sales`, but `… \\Company\SalesX` is not.
/// Both are full display strings; the comparison is case-sensitive.
pub fn group_contains(group: &str, device_group: &str) -> bool {
    match device_group.strip_prefix(group) {
        Some(rest) => rest.is_empty() || rest.starts_with('\\') || group.ends_with('\\'),
        None => false,
    }
}

/// One `[[policy.rule]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub threat: ThreatPattern,
    /// The rule matches only threats at or above this severity; `None`: any.
    pub min_severity: Option<Severity>,
    /// The rule matches only devices in one of these groups or their
    /// subgroups, each a full display string (`Acme SOTI \\Company\Sales`),
    /// checked at load to name an MDM of the tenant that keeps groups. In file
    /// order, duplicates kept. Empty: every device.
    pub groups: Vec<String>,
    pub action: ActionKind,
}

impl Rule {
    /// Whether the rule decides a threat of this type and severity on a device
    /// in `device_groups` (full display strings, as in [`Rule::groups`]).
    pub fn matches(&self, threat_type: &str, severity: Severity, device_groups: &[String]) -> bool {
        self.matches_threat(threat_type, severity) && self.applies_to(device_groups)
    }

    /// Whether the rule's threat pattern and `min_severity` take this threat,
    /// leaving its groups aside.
    pub fn matches_threat(&self, threat_type: &str, severity: Severity) -> bool {
        self.threat.matches(threat_type) && self.min_severity.iter().all(|&min| severity >= min)
    }

    /// Whether a device in `device_groups` is in the rule's scope: always for
    /// a rule without groups; otherwise some device group must be one of the
    /// rule's groups or inside one. A device in no group is in no scope.
    pub fn applies_to(&self, device_groups: &[String]) -> bool {
        self.groups.is_empty()
            || self
                .groups
                .iter()
                .any(|g| device_groups.iter().any(|d| group_contains(g, d)))
    }

    /// Whether every device `other` applies to is also in this rule's scope.
    pub(super) fn scope_covers(&self, other: &Rule) -> bool {
        if self.groups.is_empty() {
            return true;
        }
        !other.groups.is_empty()
            && other
                .groups
                .iter()
                .all(|o| self.groups.iter().any(|g| group_contains(g, o)))
    }
}

/// A tenant's `[policy]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub mode: PolicyMode,
    /// The same action for the same device is not repeated inside this window.
    pub action_cooldown_minutes: u32,
    /// Enterprise wipes and wipes beyond this per hour are held for approval.
    pub max_destructive_actions_per_hour: u32,
    /// In file order.
    pub rules: Vec<Rule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mode: PolicyMode::Enforce,
            action_cooldown_minutes: 15,
            max_destructive_actions_per_hour: 10,
            rules: Vec::new(),
        }
    }
}

impl PolicyConfig {
    /// The rule that decides a threat on a device in `device_groups` (full
    /// display strings): the first matching one in file order. `None` when no
    /// rule matches (the event is recorded, nothing is sent).
    pub fn decide(
        &self,
        threat_type: &str,
        severity: Severity,
        device_groups: &[String],
    ) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.matches(threat_type, severity, device_groups))
    }

    /// Whether some rule is limited to groups, so a decision needs the
    /// device's groups.
    pub fn has_group_rules(&self) -> bool {
        self.rules.iter().any(|r| !r.groups.is_empty())
    }

    /// Whether a `detected` threat of this type and severity may be decided
    /// an action other than `none`, on some device, whatever its groups: the
    /// first rule that matches without groups ends the search. True for an
    /// event whose device's groups would make it `none` as well (it errs on
    /// the side of acting), never false for one that acts.
    pub fn may_act(&self, threat_type: &str, severity: Severity) -> bool {
        for rule in self
            .rules
            .iter()
            .filter(|r| r.matches_threat(threat_type, severity))
        {
            if rule.action != ActionKind::None {
                return true;
            }
            if rule.groups.is_empty() {
                return false;
            }
        }
        false
    }
}
