//! The safety checks of every MDM action, in one place.
//!
//! [`decide`] runs when a deferred event is decided, inside its transaction,
//! so the cool-down and the hourly cap see every committed decision; the
//! ingest writer runs the same steps ([`static_checks`] before it queues a
//! request, then [`Limits`] inside the group's transaction, in order);
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
    let integration = state.sync.integration(&tenant.id, mdm_id)?;
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
///
/// [`static_checks`], then [`Limits::cooldown_verdict`] and [`Limits::cap_verdict`] on what
/// the transaction reads; the ingest writer runs the same three steps for a
/// group of events (`ingest::writer`), with the reads done once per group.
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
    let limits = Limits::of(tenant);
    let recent = tx
        .recent_action(device.id, kind, limits.cooldown_since(now))
        .await?;
    if let Some(skip) = limits.cooldown_verdict(recent) {
        return Ok(skip);
    }
    if action.is_destructive() {
        let recent = tx.destructive_since(&tenant.id, cap_since(now)).await?;
        if let Some(hold) = limits.cap_verdict(recent) {
            return Ok(hold);
        }
    }
    Ok(Verdict::Pending)
}

/// The two limits of a tenant's policy that are checked against the store:
/// the cool-down and the hourly cap on destructive actions. Small and
/// `Copy`, so the ingest writer carries them with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cooldown_minutes: u32,
    pub max_destructive_per_hour: u32,
}

/// Where the hourly cap's window starts.
pub fn cap_since(now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::hours(1)
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

    /// The cool-down, on the latest blocking action ([`WriteTx::recent_action`],
    /// or the ingest writer's view of its group): `Some` skips the new action.
    pub fn cooldown_verdict(self, recent: Option<(i64, ActionState)>) -> Option<Verdict> {
        let (id, st) = recent?;
        Some(Verdict::Skipped(format!(
            "repeat inside the cool-down of {} minutes: action {id} is {st}",
            self.cooldown_minutes
        )))
    }

    /// The hourly cap, on how many destructive actions of the tenant went or
    /// will go out in the last hour: `Some` holds the new one for approval.
    pub fn cap_verdict(self, recent: u64) -> Option<Verdict> {
        let max = u64::from(self.max_destructive_per_hour);
        (recent >= max).then(|| {
            Verdict::Held(format!(
                "{recent} destructive actions in the last hour reach max_destructive_actions_per_hour = {max}: approve it through the admin API"
            ))
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MdmRecord, Pii, Store, SyncTrigger, TenantRecord};
    use crate::sync::{SyncEngine, SyncSettings};
    use async_trait::async_trait;
    use futures::StreamExt;
    use mtd_adapter::{
        AdapterError, Capabilities, Device, DeviceIdentifier, Group, HealthReport, MdmAdapter,
        MdmCommand, MdmKind, PageStream, Receipt, User,
    };
    use std::collections::BTreeSet;

    /// An MDM that can only lock (no vendor is like this today; the check must hold anyway).
    #[derive(Debug)]
    struct LockOnly;

    #[async_trait]
    impl MdmAdapter for LockOnly {
        fn kind(&self) -> MdmKind {
            MdmKind::Soti
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                commands: BTreeSet::from([MdmCommand::Lock]),
                removes_wifi_profile_itself: false,
                groups: false,
                user_listing: false,
            }
        }
        async fn health_check(&self) -> Result<HealthReport, AdapterError> {
            Ok(HealthReport {
                devices_on_first_page: 0,
            })
        }
        fn devices(&self) -> PageStream<'_, Device> {
            futures::stream::empty().boxed()
        }
        fn users(&self) -> PageStream<'_, User> {
            futures::stream::empty().boxed()
        }
        fn groups(&self) -> PageStream<'_, Group> {
            futures::stream::empty().boxed()
        }
        async fn lookup_device(
            &self,
            _: &DeviceIdentifier,
        ) -> Result<Option<Device>, AdapterError> {
            Ok(None)
        }
        async fn execute(&self, command: MdmCommand, _: &Device) -> Result<Receipt, AdapterError> {
            Err(AdapterError::Unsupported(command.to_string()))
        }
    }

    async fn state_with(
        adapter: Arc<dyn MdmAdapter>,
    ) -> (tempfile::TempDir, AppState, StoredDevice) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tenants.d")).unwrap();
        std::fs::write(dir.path().join("c.toml"), "[store]\npath = \"s.db\"\n").unwrap();
        std::fs::write(
            dir.path().join("tenants.d/acme.toml"),
            "id = \"acme\"\nagent_secret = \"k\"\n[[mdm]]\nname = \"M\"\nkind = \"soti\"\nurl = \"https://m.example/MobiControl\"\n\
             wifi_disconnect_profile_id = \"1\"\n[mdm.credentials]\nclient_id = \"a\"\nclient_secret = \"b\"\nusername = \"c\"\npassword = \"d\"\n\
             [mdm.permit]\nlock = true\ndisconnect_wifi = true\nenterprise_wipe = true\nwipe = true\n",
        )
        .unwrap();
        let config = crate::config::load(&dir.path().join("c.toml")).unwrap();
        let store = Store::open(&config.store.path).await.unwrap();
        let refs = store
            .sync_tenants(&[TenantRecord {
                id: "acme".into(),
                display_name: "Acme".into(),
                mdms: vec![MdmRecord {
                    name: "M".into(),
                    kind: MdmKind::Soti,
                    url: "https://m.example".into(),
                }],
            }])
            .await
            .unwrap();
        let run = store
            .start_sync_run(refs[0].id, SyncTrigger::Cli)
            .await
            .unwrap();
        let mut device = crate::store::testutil::device("d1");
        device.ownership = mtd_adapter::Ownership::Corporate;
        store
            .upsert_devices(run, refs[0].id, &[device], Pii::Clear)
            .await
            .unwrap();
        let stored = store
            .find_devices("acme", &DeviceIdentifier::MdmDeviceId("d1".into()))
            .await
            .unwrap()
            .remove(0);
        let integration = crate::sync::Integration {
            tenant_id: "acme".into(),
            mdm_id: refs[0].id,
            name: "M".into(),
            kind: MdmKind::Soti,
            adapter,
            background_sync: false,
            masker: None,
            health: Default::default(),
        };
        let sync = SyncEngine::new(store.clone(), SyncSettings::default(), vec![integration]);
        let state = AppState {
            store,
            config: crate::config::LiveConfig::new(config),
            sync,
            dispatch: crate::dispatch::DispatchHandle::new(),
            ingest: crate::ingest::IngestQueue::new(),
        };
        (dir, state, stored)
    }

    #[tokio::test]
    async fn an_action_the_mdm_cannot_do_is_skipped_with_the_reason_and_one_it_can_do_passes() {
        let (_dir, state, device) = state_with(Arc::new(LockOnly)).await;
        let config = state.config.load();
        let tenant = &config.tenants[0];
        let reason = static_checks(&state, tenant, Some(&device), ActionRecordKind::Wipe).unwrap();
        assert!(reason.contains("cannot wipe"), "{reason}");
        let reason = static_checks(
            &state,
            tenant,
            Some(&device),
            ActionRecordKind::DisconnectWifi,
        )
        .unwrap();
        assert!(reason.contains("cannot disconnect_wifi"), "{reason}");
        assert_eq!(
            static_checks(&state, tenant, Some(&device), ActionRecordKind::Lock),
            None
        );
        // Unknown device and the `none` action are recorded, never sent.
        assert!(static_checks(&state, tenant, None, ActionRecordKind::Lock)
            .unwrap()
            .contains("device unknown"));
        assert!(
            static_checks(&state, tenant, Some(&device), ActionRecordKind::None)
                .unwrap()
                .contains("none")
        );
    }
}
