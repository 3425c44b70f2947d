//! The safety checks of every MDM action, in one place, as pure functions.
//!
//! Policy reads nothing: callers hand it the tenant's config, the device as
//! stored, its MDM's config and capabilities ([`MdmFacts`]), and for the two
//! limits what the store says ([`Limits::verdict`]). [`static_checks`] runs
//! before an event's transaction; [`Limits::verdict`] (the one decider of the
//! cool-down and the hourly cap) inside it, in the ingest writer for a group
//! and for a deferred event alike ([`decide`] is both steps in one);
//! [`check_before_send`] runs in the dispatcher right before an action goes
//! to the MDM, on fresh facts. An admin's approval only lifts the hourly cap:
//! the approved row goes through the dispatcher and so through
//! `check_before_send` like every other. There is no other path to
//! `MdmAdapter::execute`.

use crate::config::{MdmConfig, Permit, PolicyConfig, PolicyMode, TenantConfig};
use crate::store::{ActionId, ActionRecordKind, ActionState, DeviceRef, NewAction, StoredDevice};
use chrono::{DateTime, Duration, Utc};
use mtd_adapter::{ActionKind, Capabilities, MdmCommand, MdmKind, Ownership};

/// What becomes of a decided action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// To be sent by the dispatcher.
    Pending,
    /// Recorded, not sent; the reason says why.
    Skipped(String),
    /// Waits for an admin's approval.
    Held(String),
}

impl Verdict {
    /// The state an action row with this verdict enters, and its reason.
    pub fn state_and_reason(&self) -> (ActionState, Option<String>) {
        match self {
            Verdict::Pending => (ActionState::Pending, None),
            Verdict::Skipped(r) => (ActionState::Skipped, Some(r.clone())),
            Verdict::Held(r) => (ActionState::Held, Some(r.clone())),
        }
    }

    /// The action row for this verdict.
    pub fn new_action(
        &self,
        tenant_id: &str,
        event_row: i64,
        device: Option<DeviceRef>,
        action: Option<ActionKind>,
    ) -> NewAction {
        let (state, reason) = self.state_and_reason();
        NewAction {
            signal_level: None,
            tenant_id: tenant_id.to_owned(),
            event_id: Some(event_row),
            device_id: device.map(|d| d.device.0),
            mdm_id: device.map(|d| d.mdm.0),
            kind: action.map_or(ActionRecordKind::None, ActionRecordKind::from),
            parent_action_id: None,
            state,
            reason,
            next_attempt_at: None,
        }
    }
}

/// What the policy needs to know of a device's MDM: its `[[mdm]]` settings
/// and what its adapter can do.
#[derive(Debug, Clone, Copy)]
pub struct MdmFacts<'a> {
    pub name: &'a str,
    pub kind: MdmKind,
    pub permit: &'a Permit,
    pub capabilities: &'a Capabilities,
    /// `enabled = false`: configured, but out of syncs, lookups and actions.
    pub enabled: bool,
    /// `[mdm.risk_signal] enabled = true`.
    pub risk_signal: bool,
}

impl<'a> MdmFacts<'a> {
    pub fn of(config: &'a MdmConfig, capabilities: &'a Capabilities) -> Self {
        MdmFacts {
            name: &config.name,
            kind: config.kind,
            permit: &config.permit,
            capabilities,
            enabled: config.enabled,
            risk_signal: config.risk_signal.is_some(),
        }
    }
}

/// The checks that hold at any time, for a device as last known: monitor
/// mode, device and MDM known, permit, capability, corporate ownership for a
/// wipe. `mdm` is the device's MDM (`None`: no longer configured). `None`
/// means the action may go out.
pub fn static_checks(
    policy: &PolicyConfig,
    device: Option<&StoredDevice>,
    mdm: Option<MdmFacts<'_>>,
    kind: ActionRecordKind,
) -> Option<String> {
    if policy.mode == PolicyMode::Monitor && kind != ActionRecordKind::RemoveWifiProfile {
        // Removing a profile the connector installed is always allowed: it undoes an action.
        return Some("monitor mode: the decision is recorded, nothing is sent".into());
    }
    let Some(device) = device else {
        return Some("device unknown: no MDM of the tenant knows it".into());
    };
    let Some(mdm) = mdm else {
        return Some("the device's MDM is not configured for this tenant any more".into());
    };
    if !mdm.enabled {
        return Some(format!(
            "MDM disabled: `{}` has enabled = false in the tenant file",
            mdm.name
        ));
    }
    let action = match kind {
        ActionRecordKind::None => return Some("policy action is none: recorded only".into()),
        ActionRecordKind::Lock => ActionKind::Lock,
        ActionRecordKind::DisconnectWifi => ActionKind::DisconnectWifi,
        ActionRecordKind::EnterpriseWipe => ActionKind::EnterpriseWipe,
        ActionRecordKind::Wipe => ActionKind::Wipe,
        ActionRecordKind::RemoveWifiProfile => {
            return (!mdm.capabilities.supports(MdmCommand::RemoveWifiProfile))
                .then(|| format!("MDM `{}` removes its own Wi-Fi profile", mdm.name));
        }
        // The risk signal is the opt-in itself: no permit, no ownership rule.
        ActionRecordKind::SignalRisk => {
            return (!mdm.risk_signal).then(|| {
                format!(
                    "[mdm.risk_signal] is not enabled on MDM `{}` any more",
                    mdm.name
                )
            });
        }
    };
    if !mdm.permit.allows(action) {
        return Some(format!(
            "not permitted on MDM `{}`: [mdm.permit] {} = false",
            mdm.name, action
        ));
    }
    let command = action
        .command()
        .expect("every action but none has a command");
    if !mdm.capabilities.supports(command) {
        return Some(format!(
            "MDM `{}` ({}) cannot {}",
            mdm.name, mdm.kind, action
        ));
    }
    if action == ActionKind::Wipe && device.ownership != Ownership::Corporate {
        return Some(format!(
            "wipe is only sent to corporate-owned devices; this device is {} at its MDM",
            device.ownership
        ));
    }
    None
}

/// The decision for a new event's action: [`static_checks`], then
/// [`Limits::verdict`] on what the store says: `recent`, the latest action
/// of the same kind for the device inside the cool-down, and
/// `destructive_last_hour`, the tenant's destructive actions in the last
/// hour (read only for a destructive action; 0 otherwise).
pub fn decide(
    tenant: &TenantConfig,
    device: Option<&StoredDevice>,
    mdm: Option<MdmFacts<'_>>,
    action: ActionKind,
    recent: Option<(ActionId, ActionState)>,
    destructive_last_hour: u64,
) -> Verdict {
    if let Some(reason) = static_checks(&tenant.policy, device, mdm, action.into()) {
        return Verdict::Skipped(reason);
    }
    Limits::of(tenant).verdict(action, recent, destructive_last_hour)
}

/// Where the hourly cap's window starts.
pub fn cap_since(now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::hours(1)
}

/// The two limits of a tenant's policy that are checked against the store:
/// the cool-down and the hourly cap on destructive actions. Small and
/// `Copy`, so the ingest writer carries them with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cooldown_minutes: u32,
    pub max_destructive_per_hour: u32,
}

impl Limits {
    pub fn of(tenant: &TenantConfig) -> Limits {
        Limits {
            cooldown_minutes: tenant.policy.action_cooldown_minutes,
            max_destructive_per_hour: tenant.policy.max_destructive_actions_per_hour,
        }
    }

    /// Where the cool-down window starts: an action of the same kind for the
    /// device that is still waiting, or was sent at or after this, blocks a repeat.
    pub fn cooldown_since(self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - Duration::minutes(i64::from(self.cooldown_minutes))
    }

    /// The one decider of the cool-down and the hourly cap, for an action
    /// that passed [`static_checks`]: a repeat inside the cool-down
    /// (`recent`, the latest blocking action of the same kind for the device)
    /// is skipped; a destructive action beyond the cap
    /// (`destructive_last_hour`, the tenant's destructive actions that went
    /// or will go out in the last hour) is held for approval.
    pub fn verdict(
        self,
        action: ActionKind,
        recent: Option<(ActionId, ActionState)>,
        destructive_last_hour: u64,
    ) -> Verdict {
        if let Some((id, st)) = recent {
            return Verdict::Skipped(format!(
                "repeat inside the cool-down of {} minutes: action {id} is {st}",
                self.cooldown_minutes
            ));
        }
        let max = u64::from(self.max_destructive_per_hour);
        if action.is_destructive() && destructive_last_hour >= max {
            return Verdict::Held(format!(
                "{destructive_last_hour} destructive actions in the last hour reach max_destructive_actions_per_hour = {max}: approve it through the admin API"
            ));
        }
        Verdict::Pending
    }
}

/// Right before sending: the static checks again, on the device as the MDM
/// reports it now (for destructive actions the dispatcher looks it up afresh).
pub fn check_before_send(
    tenant: &TenantConfig,
    device: &StoredDevice,
    mdm: MdmFacts<'_>,
    kind: ActionRecordKind,
) -> Option<String> {
    static_checks(&tenant.policy, Some(device), Some(mdm), kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{testutil, DeviceId, MdmId};
    use std::collections::BTreeSet;

    fn stored(ownership: Ownership) -> StoredDevice {
        let d = testutil::device("d1");
        let now = Utc::now();
        StoredDevice {
            id: 1,
            tenant_id: "acme".into(),
            mdm_id: 7,
            mdm_device_id: d.mdm_device_id,
            identifiers: d.identifiers,
            name: d.name,
            platform: d.platform,
            model: d.model,
            os_version: d.os_version,
            ownership,
            user_id: None,
            last_checkin_at: None,
            first_seen_at: now,
            updated_at: now,
            last_seen_at: now,
            removed_at: None,
            collision: false,
            posture: Default::default(),
            risk_level: crate::store::RiskLevel::Secured,
            activation: None,
        }
    }

    const ALL: Permit = Permit {
        lock: true,
        disconnect_wifi: true,
        enterprise_wipe: true,
        wipe: true,
    };

    fn caps(commands: &[MdmCommand]) -> Capabilities {
        Capabilities {
            commands: commands.iter().copied().collect::<BTreeSet<_>>(),
            removes_wifi_profile_itself: false,
            groups: false,
            user_listing: false,
        }
    }

    fn facts<'a>(permit: &'a Permit, capabilities: &'a Capabilities) -> MdmFacts<'a> {
        MdmFacts {
            name: "M",
            kind: MdmKind::Soti,
            permit,
            capabilities,
            enabled: true,
            risk_signal: true,
        }
    }

    #[test]
    fn every_action_for_a_disabled_mdm_is_skipped_saying_so() {
        let policy = PolicyConfig::default();
        let device = stored(Ownership::Corporate);
        let all = caps(&[MdmCommand::Lock, MdmCommand::Wipe]);
        let mut disabled = facts(&ALL, &all);
        disabled.enabled = false;
        for kind in [ActionRecordKind::Lock, ActionRecordKind::Wipe] {
            let reason = static_checks(&policy, Some(&device), Some(disabled), kind).unwrap();
            assert!(reason.starts_with("MDM disabled"), "{reason}");
        }
        assert_eq!(
            static_checks(
                &policy,
                Some(&device),
                Some(facts(&ALL, &all)),
                ActionRecordKind::Lock
            ),
            None
        );
    }

    #[test]
    fn an_action_the_mdm_cannot_do_is_skipped_with_the_reason_and_one_it_can_do_passes() {
        let policy = PolicyConfig::default();
        let device = stored(Ownership::Corporate);
        let lock_only = caps(&[MdmCommand::Lock]);
        let mdm = Some(facts(&ALL, &lock_only));
        let check = |kind| static_checks(&policy, Some(&device), mdm, kind);
        assert!(check(ActionRecordKind::Wipe)
            .unwrap()
            .contains("cannot wipe"));
        assert!(check(ActionRecordKind::DisconnectWifi)
            .unwrap()
            .contains("cannot disconnect_wifi"));
        assert_eq!(check(ActionRecordKind::Lock), None);
        // Unknown device and the `none` action are recorded, never sent.
        assert!(static_checks(&policy, None, mdm, ActionRecordKind::Lock)
            .unwrap()
            .contains("device unknown"));
        assert!(check(ActionRecordKind::None).unwrap().contains("none"));
        assert!(
            static_checks(&policy, Some(&device), None, ActionRecordKind::Lock)
                .unwrap()
                .contains("not configured")
        );
    }

    #[test]
    fn permits_monitor_mode_and_ownership_decide_before_any_limit() {
        let all = caps(&[
            MdmCommand::Lock,
            MdmCommand::EnterpriseWipe,
            MdmCommand::Wipe,
            MdmCommand::DisconnectWifi,
            MdmCommand::RemoveWifiProfile,
        ]);
        let no_wipe = Permit { wipe: false, ..ALL };
        let corporate = stored(Ownership::Corporate);
        let personal = stored(Ownership::Personal);
        let mut policy = PolicyConfig::default();
        let skipped = static_checks(
            &policy,
            Some(&corporate),
            Some(facts(&no_wipe, &all)),
            ActionRecordKind::Wipe,
        );
        assert!(skipped.unwrap().contains("wipe = false"));
        let skipped = static_checks(
            &policy,
            Some(&personal),
            Some(facts(&ALL, &all)),
            ActionRecordKind::Wipe,
        );
        assert!(skipped.unwrap().contains("only sent to corporate-owned"));
        assert_eq!(
            static_checks(
                &policy,
                Some(&corporate),
                Some(facts(&ALL, &all)),
                ActionRecordKind::Wipe
            ),
            None
        );
        policy.mode = PolicyMode::Monitor;
        let skipped = static_checks(
            &policy,
            Some(&corporate),
            Some(facts(&ALL, &all)),
            ActionRecordKind::Lock,
        );
        assert!(skipped.unwrap().contains("monitor mode"));
        assert_eq!(
            static_checks(
                &policy,
                Some(&corporate),
                Some(facts(&ALL, &all)),
                ActionRecordKind::RemoveWifiProfile
            ),
            None,
            "undoing a disconnect is allowed in monitor mode"
        );
    }

    #[test]
    fn the_cool_down_skips_a_repeat_and_the_hourly_cap_holds_only_destructive_actions() {
        let limits = Limits {
            cooldown_minutes: 15,
            max_destructive_per_hour: 2,
        };
        assert_eq!(limits.verdict(ActionKind::Lock, None, 99), Verdict::Pending);
        let repeat = limits.verdict(ActionKind::Lock, Some((ActionId(4), ActionState::Sent)), 0);
        assert!(
            matches!(&repeat, Verdict::Skipped(r) if r.contains("action 4 is sent")),
            "{repeat:?}"
        );
        assert_eq!(limits.verdict(ActionKind::Wipe, None, 1), Verdict::Pending);
        let held = limits.verdict(ActionKind::EnterpriseWipe, None, 2);
        assert!(
            matches!(&held, Verdict::Held(r) if r.contains("= 2")),
            "{held:?}"
        );
        // The cool-down decides first: a repeat is skipped, not held.
        assert!(matches!(
            limits.verdict(
                ActionKind::Wipe,
                Some((ActionId(1), ActionState::Pending)),
                5
            ),
            Verdict::Skipped(_)
        ));
    }

    #[test]
    fn each_verdict_maps_to_one_state_with_its_reason() {
        assert_eq!(
            Verdict::Pending.state_and_reason(),
            (ActionState::Pending, None)
        );
        assert_eq!(
            Verdict::Held("cap".into()).state_and_reason(),
            (ActionState::Held, Some("cap".into()))
        );
        let row = Verdict::Skipped("why".into()).new_action(
            "acme",
            3,
            Some(DeviceRef {
                device: DeviceId(5),
                mdm: MdmId(6),
            }),
            None,
        );
        assert_eq!(
            (
                row.kind,
                row.state,
                row.reason.as_deref(),
                row.device_id,
                row.mdm_id
            ),
            (
                ActionRecordKind::None,
                ActionState::Skipped,
                Some("why"),
                Some(5),
                Some(6)
            )
        );
    }
}
