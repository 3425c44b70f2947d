//! The safety checks of every MDM action, in one place.
//!
//! [`decide`] runs when an event is ingested (inside the event's transaction,
//! so the cool-down and the hourly cap see every committed decision);
//! [`check_before_send`] runs in the dispatcher right before an action goes to
//! the MDM, on fresh facts. An admin's approval only lifts the hourly cap: the
//! approved row goes through the dispatcher and so through
//! `check_before_send` like every other. There is no other path to
//! `MdmAdapter::execute`.

use crate::config::{MdmConfig, PolicyMode, TenantConfig};
use crate::http::AppState;
use crate::store::{ActionRecordKind, ActionState, NewAction, StoreError, StoredDevice, WriteTx};
use crate::sync::Integration;
use chrono::{DateTime, Duration, Utc};
use mtd_adapter::{ActionKind, Ownership};
use std::sync::Arc;

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
    /// The action row for this verdict.
    pub fn new_action(
        &self,
        tenant: &TenantConfig,
        event_row: i64,
        device: Option<&StoredDevice>,
        action: ActionKind,
    ) -> NewAction {
        let (state, reason) = match self {
            Verdict::Pending => (ActionState::Pending, None),
            Verdict::Skipped(r) => (ActionState::Skipped, Some(r.clone())),
            Verdict::Held(r) => (ActionState::Held, Some(r.clone())),
        };
        NewAction {
            tenant_id: tenant.id.clone(),
            event_id: Some(event_row),
            device_id: device.map(|d| d.id),
            mdm_id: device.map(|d| d.mdm_id),
            kind: action.into(),
            parent_action_id: None,
            state,
            reason,
            next_attempt_at: None,
        }
    }
}

/// The integration (adapter) and the `[[mdm]]` config of a device's MDM.
pub fn mdm_of<'a>(
    state: &AppState,
    tenant: &'a TenantConfig,
    mdm_id: i64,
) -> Option<(Arc<Integration>, &'a MdmConfig)> {
    let integration = state
        .sync
        .integrations()
        .find(|i| i.mdm_id == mdm_id && i.tenant_id == tenant.id)?
        .clone();
    let config = tenant.mdms.iter().find(|m| m.name == integration.name)?;
    Some((integration, config))
}

/// The checks that hold at any time, for a device as last known: monitor
/// mode, device and MDM known, permit, capability, corporate ownership for a
/// wipe. `None` means the action may go out.
pub fn static_checks(
    state: &AppState,
    tenant: &TenantConfig,
    device: Option<&StoredDevice>,
    kind: ActionRecordKind,
) -> Option<String> {
    if tenant.policy.mode == PolicyMode::Monitor && kind != ActionRecordKind::RemoveWifiProfile {
        // Removing a profile the connector installed is always allowed: it undoes an action.
        return Some("monitor mode: the decision is recorded, nothing is sent".into());
    }
    let Some(device) = device else {
        return Some("device unknown: no MDM of the tenant knows it".into());
    };
    let Some((integration, mdm)) = mdm_of(state, tenant, device.mdm_id) else {
        return Some("the device's MDM is not configured for this tenant any more".into());
    };
    let action = match kind {
        ActionRecordKind::None => return Some("policy action is none: recorded only".into()),
        ActionRecordKind::Lock => ActionKind::Lock,
        ActionRecordKind::DisconnectWifi => ActionKind::DisconnectWifi,
        ActionRecordKind::EnterpriseWipe => ActionKind::EnterpriseWipe,
        ActionRecordKind::Wipe => ActionKind::Wipe,
        ActionRecordKind::RemoveWifiProfile => {
            return (!integration
                .adapter
                .capabilities()
                .supports(mtd_adapter::MdmCommand::RemoveWifiProfile))
            .then(|| format!("MDM `{}` removes its own Wi-Fi profile", mdm.name));
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
    if !integration.adapter.capabilities().supports(command) {
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

/// The decision for a new event's action, inside the event's transaction.
pub async fn decide(
    tx: &mut WriteTx,
    state: &AppState,
    tenant: &TenantConfig,
    device: Option<&StoredDevice>,
    action: ActionKind,
    now: DateTime<Utc>,
) -> Result<Verdict, StoreError> {
    let kind = ActionRecordKind::from(action);
    if let Some(reason) = static_checks(state, tenant, device, kind) {
        return Ok(Verdict::Skipped(reason));
    }
    let device = device.expect("static_checks skips unknown devices");
    let cooldown = Duration::minutes(i64::from(tenant.policy.action_cooldown_minutes));
    if let Some((id, st)) = tx.recent_action(device.id, kind, now - cooldown).await? {
        return Ok(Verdict::Skipped(format!(
            "repeat inside the cool-down of {} minutes: action {id} is {st}",
            tenant.policy.action_cooldown_minutes
        )));
    }
    if action.is_destructive() {
        let max = u64::from(tenant.policy.max_destructive_actions_per_hour);
        let recent = tx
            .destructive_since(&tenant.id, now - Duration::hours(1))
            .await?;
        if recent >= max {
            return Ok(Verdict::Held(format!(
                "{recent} destructive actions in the last hour reach max_destructive_actions_per_hour = {max}: approve it through the admin API"
            )));
        }
    }
    Ok(Verdict::Pending)
}

/// Right before sending: the static checks again, on the device as the MDM
/// reports it now (for destructive actions the dispatcher looks it up afresh).
pub fn check_before_send(
    state: &AppState,
    tenant: &TenantConfig,
    device: &StoredDevice,
    kind: ActionRecordKind,
) -> Option<String> {
    static_checks(state, tenant, Some(device), kind)
}
