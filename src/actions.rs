//! What an admin does to action records: approve a held one, cancel one, cancel
//! every waiting wipe of a tenant.
//!
//! Why a service of its own: each operation is a state transition of a row
//! (the store writes its audit row in the same transaction), its metric, its
//! log line and, for an approval, the dispatcher's wake-up. The admin API
//! calls these, and so will the CLI and the console, so none of them can move a
//! row without the metric or leave an approved wipe waiting for the next poll.

use crate::dispatch::{record_moved, DispatchHandle};
use crate::store::{
    ActionState, AdminAction, CancelWhich, RiskLevel, Store, StoreError, StoredThreat, Transition,
};
use chrono::Utc;

#[derive(Debug, Clone)]
pub struct Actions {
    store: Store,
    wake: DispatchHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum ActionsError {
    /// No such action in this tenant.
    #[error("action not found")]
    NotFound,
    /// Approval of an action that is not held (any more).
    #[error("action is {0}, not held")]
    NotHeld(ActionState),
    /// Cancel of an action that was sent, is final, or is being sent right now.
    #[error("action cannot be cancelled: {message}")]
    NotCancellable {
        state: ActionState,
        message: &'static str,
    },
    /// No such device in this tenant.
    #[error("device not found")]
    DeviceNotFound,
    /// The threat to resolve is not open on the device.
    #[error("no open threat of that type and key on the device")]
    ThreatNotOpen,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an admin's resolution did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThreatResolved {
    pub threat: StoredThreat,
    /// The device's risk level after it.
    pub risk_level: RiskLevel,
}

impl Actions {
    pub fn new(store: Store, wake: DispatchHandle) -> Self {
        Actions { store, wake }
    }

    async fn read(&self, tenant: &str, id: i64) -> Result<AdminAction, ActionsError> {
        self.store
            .admin_action(tenant, id)
            .await?
            .ok_or(ActionsError::NotFound)
    }

    /// Held → pending, due at once; then the dispatcher is woken. Returns the
    /// action as approved (read before the wake-up, so it never shows a later
    /// send as the approval's result).
    pub async fn approve(&self, tenant: &str, id: i64) -> Result<AdminAction, ActionsError> {
        let current = self.read(tenant, id).await?;
        if current.action.state != ActionState::Held {
            return Err(ActionsError::NotHeld(current.action.state));
        }
        let t = Transition::new(
            ActionState::Held,
            ActionState::Pending,
            "approved by an admin",
        )
        // Due now: the row may carry a due time from before it was held.
        .next_attempt_at(Utc::now());
        match self.store.transition_action_with(id, t).await {
            Ok(row) => record_moved(&row),
            // Someone (another admin, a cancel) moved it first.
            Err(StoreError::ActionStateChanged { actual, .. }) => {
                return Err(ActionsError::NotHeld(actual))
            }
            Err(e) => return Err(e.into()),
        }
        let approved = self.read(tenant, id).await?;
        self.wake.wake();
        tracing::info!(tenant, action_id = id, kind = ?approved.action.kind, "Held action approved by an admin");
        Ok(approved)
    }

    /// A pending, held or failed action that is not being sent right now
    /// becomes `cancelled`; otherwise the error says why not.
    pub async fn cancel(&self, tenant: &str, id: i64) -> Result<AdminAction, ActionsError> {
        let current = self.read(tenant, id).await?;
        let cancelled = self
            .store
            .cancel_actions(tenant, CancelWhich::One(id), "cancelled by an admin")
            .await?;
        cancelled.iter().for_each(record_moved);
        if cancelled.is_empty() {
            // Re-read: the state may have moved on since the first read.
            let now = self
                .store
                .admin_action(tenant, id)
                .await?
                .map_or(current.action, |a| a.action);
            let message = if now.state.is_final() {
                "the action is already final"
            } else if now.claimed_at.is_some() {
                "the action is being sent to the MDM right now"
            } else {
                "the action changed state meanwhile; try again"
            };
            return Err(ActionsError::NotCancellable {
                state: now.state,
                message,
            });
        }
        let action = self.read(tenant, id).await?;
        tracing::info!(tenant, action_id = id, kind = ?action.action.kind, "Action cancelled by an admin");
        Ok(action)
    }

    /// Every pending, held or failed enterprise wipe and wipe of the tenant
    /// that has not been handed to its MDM; returns the ids cancelled.
    pub async fn cancel_destructive(&self, tenant: &str) -> Result<Vec<i64>, ActionsError> {
        let cancelled = self
            .store
            .cancel_actions(
                tenant,
                CancelWhich::Destructive,
                "cancelled by an admin (cancel-destructive)",
            )
            .await?;
        cancelled.iter().for_each(record_moved);
        let ids: Vec<i64> = cancelled.iter().map(|a| a.id).collect();
        tracing::warn!(
            tenant,
            cancelled = ids.len(),
            "Every waiting destructive action cancelled by an admin"
        );
        Ok(ids)
    }

    /// Closes an open threat of a device for an admin (recorded with the
    /// admin as its source), with the effects of a `resolved` event: the
    /// device's risk level follows in the same transaction.
    /// `signal_mdms` are the tenant's MDMs that take risk signals (a change
    /// of level there enqueues one, in the same transaction).
    pub async fn resolve_threat(
        &self,
        tenant: &crate::config::TenantConfig,
        signal_mdms: &[i64],
        device_id: i64,
        threat_type: &str,
        key: &str,
    ) -> Result<ThreatResolved, ActionsError> {
        let monitor = tenant.policy.mode == crate::config::PolicyMode::Monitor;
        let tenant = tenant.id.as_str();
        let device = self
            .store
            .get_device(device_id)
            .await?
            .filter(|d| d.tenant_id == tenant)
            .ok_or(ActionsError::DeviceNotFound)?;
        let mut tx = self.store.begin().await?;
        let Some((threat, changes)) = tx
            .resolve_threat_by_admin(device.id, threat_type, key, Utc::now())
            .await?
        else {
            return Err(ActionsError::ThreatNotOpen);
        };
        let now = Utc::now();
        let signalled = tx
            .signal_risk_changes(tenant, &changes, signal_mdms, monitor, now)
            .await?;
        tx.commit().await?;
        for (state, _) in &signalled.new {
            crate::metrics::action_entered("signal_risk", state.as_str());
        }
        if signalled
            .new
            .iter()
            .any(|(s, _)| *s == ActionState::Pending)
        {
            self.wake.wake();
        }
        let risk_level = changes.last().map_or(device.risk_level, |c| c.to);
        tracing::info!(tenant, device_id, threat = threat_type, %risk_level, "Threat resolved by an admin");
        Ok(ThreatResolved { threat, risk_level })
    }
}
