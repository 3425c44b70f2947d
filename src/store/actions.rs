//! Actions: every policy decision as a row, its delivery state, and an audit
//! row for each change of that state, written in the same transaction.
//!
//! The dispatcher claims due rows with one `UPDATE … RETURNING` (which sets
//! `claimed_at` and counts the attempt), calls the MDM, then moves the row on
//! with [`Store::transition_action`], which succeeds only from the state the
//! caller saw: a cancel that won the race is never overwritten. A row still
//! claimed after a crash shows up in [`Store::unfinished_claims`].

use super::events::json_column;
use super::{ActionId, DeviceId, RiskLevel, Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use mtd_adapter::{ActionKind, MdmCommand};
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqliteConnection};
use std::fmt;

/// The state of an action (CONTRACT §4, plus `cancelled` by an admin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Decided but not to be sent; `reason` says why.
    Skipped,
    /// Waits for an admin's approval (a safety limit).
    Held,
    /// Due at `next_attempt_at`.
    Pending,
    /// The MDM accepted it; `receipt` holds its answer.
    Sent,
    /// The last attempt failed retryably; due again at `next_attempt_at`.
    Failed,
    /// Given up (or permanently refused); `last_error` says why.
    Dead,
    /// Cancelled by an admin before it was sent.
    Cancelled,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Skipped => "skipped",
            ActionState::Held => "held",
            ActionState::Pending => "pending",
            ActionState::Sent => "sent",
            ActionState::Failed => "failed",
            ActionState::Dead => "dead",
            ActionState::Cancelled => "cancelled",
        }
    }

    /// States a row never leaves.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ActionState::Skipped | ActionState::Sent | ActionState::Dead | ActionState::Cancelled
        )
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action row does: a policy action, or the later removal of the
/// disconnect-Wi-Fi profile (a row of its own, with a due time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ActionRecordKind {
    None,
    Lock,
    DisconnectWifi,
    EnterpriseWipe,
    Wipe,
    RemoveWifiProfile,
    /// Writes the device's risk level into its MDM (`[mdm.risk_signal]`);
    /// the level is the row's `signal_level`.
    SignalRisk,
}

impl ActionRecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionRecordKind::None => "none",
            ActionRecordKind::Lock => "lock",
            ActionRecordKind::DisconnectWifi => "disconnect_wifi",
            ActionRecordKind::EnterpriseWipe => "enterprise_wipe",
            ActionRecordKind::Wipe => "wipe",
            ActionRecordKind::RemoveWifiProfile => "remove_wifi_profile",
            ActionRecordKind::SignalRisk => "signal_risk",
        }
    }

    /// The MDM command to send (`None` sends nothing).
    pub fn command(self) -> Option<MdmCommand> {
        match self {
            ActionRecordKind::None => None,
            ActionRecordKind::Lock => Some(MdmCommand::Lock),
            ActionRecordKind::DisconnectWifi => Some(MdmCommand::DisconnectWifi),
            ActionRecordKind::EnterpriseWipe => Some(MdmCommand::EnterpriseWipe),
            ActionRecordKind::Wipe => Some(MdmCommand::Wipe),
            ActionRecordKind::RemoveWifiProfile => Some(MdmCommand::RemoveWifiProfile),
            // Not a command: the dispatcher calls the adapter's `signal_risk`.
            ActionRecordKind::SignalRisk => None,
        }
    }

    pub fn is_destructive(self) -> bool {
        matches!(
            self,
            ActionRecordKind::EnterpriseWipe | ActionRecordKind::Wipe
        )
    }
}

impl From<ActionKind> for ActionRecordKind {
    fn from(k: ActionKind) -> Self {
        match k {
            ActionKind::None => ActionRecordKind::None,
            ActionKind::Lock => ActionRecordKind::Lock,
            ActionKind::DisconnectWifi => ActionRecordKind::DisconnectWifi,
            ActionKind::EnterpriseWipe => ActionRecordKind::EnterpriseWipe,
            ActionKind::Wipe => ActionRecordKind::Wipe,
        }
    }
}

/// An action to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    pub tenant_id: String,
    /// The store's id of the event that caused it (None for follow-up rows).
    pub event_id: Option<i64>,
    pub device_id: Option<i64>,
    pub mdm_id: Option<i64>,
    pub kind: ActionRecordKind,
    /// For a Wi-Fi profile removal: the disconnect it undoes.
    pub parent_action_id: Option<i64>,
    pub state: ActionState,
    /// Why skipped or held; also the note of the first audit row.
    pub reason: Option<String>,
    /// When a pending row is due; `None` means now.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// `signal_risk` only: the level it writes.
    pub signal_level: Option<RiskLevel>,
}

/// An action as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredAction {
    pub id: i64,
    pub tenant_id: String,
    pub event_id: Option<i64>,
    pub device_id: Option<i64>,
    pub mdm_id: Option<i64>,
    pub kind: ActionRecordKind,
    pub parent_action_id: Option<i64>,
    pub state: ActionState,
    pub reason: Option<String>,
    /// Claims so far (each claim is one attempt to send).
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Set while a dispatcher holds the row.
    pub claimed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub receipt: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// `signal_risk` only: the level it writes.
    pub signal_level: Option<RiskLevel>,
}

impl FromRow<'_, SqliteRow> for StoredAction {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        let attempts: i64 = row.try_get("attempts")?;
        Ok(StoredAction {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            event_id: row.try_get("event_id")?,
            device_id: row.try_get("device_id")?,
            mdm_id: row.try_get("mdm_id")?,
            kind: row.try_get("kind")?,
            parent_action_id: row.try_get("parent_action_id")?,
            state: row.try_get("state")?,
            reason: row.try_get("reason")?,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            next_attempt_at: row.try_get("next_attempt_at")?,
            claimed_at: row.try_get("claimed_at")?,
            last_error: row.try_get("last_error")?,
            receipt: json_column(row, "receipt")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            sent_at: row.try_get("sent_at")?,
            signal_level: row
                .try_get::<Option<String>, _>("signal_level")?
                .as_deref()
                .and_then(RiskLevel::parse),
        })
    }
}

/// One audit row: a state change (or a claim) of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct ActionAudit {
    pub id: i64,
    pub action_id: i64,
    pub at: DateTime<Utc>,
    /// `None` for the creation of the action.
    pub from_state: Option<ActionState>,
    pub to_state: ActionState,
    pub note: Option<String>,
}

/// A change of an action's state, with what the change records.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The state the caller saw; the change fails if the row has moved on.
    pub from: ActionState,
    pub to: ActionState,
    /// For the audit row.
    pub note: String,
    /// Replaces the stored reason when set (skipped, held, dead, cancelled).
    pub reason: Option<String>,
    /// Replaces the stored last error when set.
    pub last_error: Option<String>,
    /// When a pending / failed row is due again; kept (or now) when unset.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The MDM's answer, for `sent`.
    pub receipt: Option<serde_json::Value>,
}

impl Transition {
    pub fn new(from: ActionState, to: ActionState, note: impl Into<String>) -> Self {
        Transition {
            from,
            to,
            note: note.into(),
            reason: None,
            last_error: None,
            next_attempt_at: None,
            receipt: None,
        }
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn last_error(mut self, error: impl Into<String>) -> Self {
        self.last_error = Some(error.into());
        self
    }

    pub fn next_attempt_at(mut self, at: DateTime<Utc>) -> Self {
        self.next_attempt_at = Some(at);
        self
    }

    pub fn receipt(mut self, receipt: serde_json::Value) -> Self {
        self.receipt = Some(receipt);
        self
    }
}

pub(super) const ACTION_COLUMNS: &str = "id, tenant_id, event_id, device_id, mdm_id, kind, \
     parent_action_id, state, reason, attempts, next_attempt_at, claimed_at, last_error, \
     receipt, created_at, updated_at, sent_at, signal_level";

async fn audit(
    conn: &mut SqliteConnection,
    action_id: i64,
    at: DateTime<Utc>,
    from: Option<ActionState>,
    to: ActionState,
    note: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO action_audit (action_id, at, from_state, to_state, note)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(action_id)
    .bind(at)
    .bind(from)
    .bind(to)
    .bind(note)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Audit rows for many actions at one time, in order: each row of `rows` is
/// `[action_id, from_state, to_state, note]`. One statement, whatever the count.
pub(super) async fn audit_rows(
    conn: &mut SqliteConnection,
    rows: Vec<serde_json::Value>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO action_audit (action_id, at, from_state, to_state, note)
         SELECT value ->> 0, ?2, value ->> 1, value ->> 2, value ->> 3
         FROM json_each(?1) ORDER BY key",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn insert_action(
    conn: &mut SqliteConnection,
    a: &NewAction,
) -> Result<i64, StoreError> {
    let now = Utc::now();
    // Only rows the dispatcher will pick up carry a due time.
    let due = match a.state {
        ActionState::Pending | ActionState::Failed => Some(a.next_attempt_at.unwrap_or(now)),
        _ => a.next_attempt_at,
    };
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO actions (tenant_id, event_id, device_id, mdm_id, kind, parent_action_id,
             state, reason, next_attempt_at, created_at, updated_at, signal_level)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11) RETURNING id",
    )
    .bind(&a.tenant_id)
    .bind(a.event_id)
    .bind(a.device_id)
    .bind(a.mdm_id)
    .bind(a.kind)
    .bind(a.parent_action_id)
    .bind(a.state)
    .bind(&a.reason)
    .bind(due)
    .bind(now)
    .bind(a.signal_level.map(RiskLevel::as_str))
    .fetch_one(&mut *conn)
    .await?;
    audit(conn, id, now, None, a.state, a.reason.as_deref()).await?;
    Ok(id)
}

impl WriteTx<'_> {
    /// Records an action and its first audit row; returns its id.
    pub async fn insert_action(&mut self, action: &NewAction) -> Result<i64, StoreError> {
        insert_action(&mut self.tx, action).await
    }
}

impl WriteTx<'_> {
    /// The latest action of this kind for the device that is still waiting
    /// (pending, held, failed) or was sent at or after `since`: the cool-down.
    pub async fn recent_action(
        &mut self,
        device_id: DeviceId,
        kind: ActionRecordKind,
        since: DateTime<Utc>,
    ) -> Result<Option<(ActionId, ActionState)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, state FROM actions
             WHERE device_id = ?1 AND kind = ?2
               AND (state IN ('pending', 'held', 'failed') OR (state = 'sent' AND sent_at >= ?3))
             ORDER BY id DESC LIMIT 1",
        )
        .bind(device_id)
        .bind(kind)
        .bind(since)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// Destructive actions (enterprise wipe, wipe) of the tenant created at
    /// or after `since` that went or will go out (pending, failed, sent).
    pub async fn destructive_since(
        &mut self,
        tenant_id: &str,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM actions
             WHERE tenant_id = ?1 AND kind IN ('enterprise_wipe', 'wipe')
               AND state IN ('pending', 'failed', 'sent') AND created_at >= ?2",
        )
        .bind(tenant_id)
        .bind(since)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(n as u64)
    }
}

/// How the audit note [`Store::begin_sending`] writes begins.
const SENDING_NOTE: &str = "sending attempt";

/// What [`Store::begin_sending`] decided for a claimed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendGate {
    /// Handed to the MDM: send it now.
    Go,
    /// Cancelled (or otherwise moved on) while it waited for its turn: do
    /// not send it.
    Gone(ActionState),
    /// The tenant's hourly cap of destructive actions is spent: released
    /// and due again at this time, when the oldest send in the hour leaves it.
    Later(DateTime<Utc>),
}

impl Store {
    /// The gate between waiting for a turn and calling the MDM, for a row
    /// this dispatcher claimed. In one write transaction, so that it and a
    /// cancel are strictly ordered: a row cancelled first is `Gone`; a row
    /// that passes is marked `sending_at` and no cancel takes it any more.
    ///
    /// `hourly_cap`: for a destructive action, the tenant's
    /// `max_destructive_actions_per_hour`; at most that many go out in any
    /// hour, also when a backlog built up during an outage (`Later`).
    /// `audit_send`: the call is not idempotent, so a "sending attempt" audit
    /// row is committed before it (see [`Store::was_being_sent`]).
    pub async fn begin_sending(
        &self,
        row: &StoredAction,
        hourly_cap: Option<u32>,
        audit_send: bool,
    ) -> Result<SendGate, StoreError> {
        let mut tx = self.begin().await?;
        let gate = tx
            .begin_sending(row, hourly_cap, audit_send, Utc::now())
            .await?;
        tx.commit().await?;
        Ok(gate)
    }
}

impl WriteTx<'_> {
    /// [`Store::begin_sending`] inside this transaction (the dispatch
    /// writer's group), at `now`.
    pub async fn begin_sending(
        &mut self,
        row: &StoredAction,
        hourly_cap: Option<u32>,
        audit_send: bool,
        now: DateTime<Utc>,
    ) -> Result<SendGate, StoreError> {
        let tx: &mut SqliteConnection = &mut self.tx;
        // (state, claimed_at, sending_at)
        type Current = (ActionState, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
        let current: Option<Current> =
            sqlx::query_as("SELECT state, claimed_at, sending_at FROM actions WHERE id = ?")
                .bind(row.id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((state, claimed_at, sending_at)) = current else {
            return Ok(SendGate::Gone(ActionState::Cancelled));
        };
        if state != row.state || claimed_at.is_none() || sending_at.is_some() {
            return Ok(SendGate::Gone(state));
        }
        // An admin's approval of a held action is the override of the cap.
        let approved: bool = hourly_cap.is_some()
            && sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM action_audit
                 WHERE action_id = ? AND from_state = 'held' AND to_state = 'pending')",
            )
            .bind(row.id)
            .fetch_one(&mut *tx)
            .await?;
        if let Some(cap) = hourly_cap.filter(|_| !approved) {
            let hour_ago = now - chrono::Duration::hours(1);
            // A send in flight counts from when it was handed over (its
            // `sent_at` will be a call's time later): with the dispatcher's
            // writes in one group, the gates of several wipes often pass
            // while the earlier ones are still at the MDM.
            let recent: Vec<(Option<DateTime<Utc>>,)> = sqlx::query_as(
                "SELECT COALESCE(sent_at, sending_at) FROM actions
                 WHERE tenant_id = ?1 AND kind IN ('enterprise_wipe', 'wipe') AND id <> ?3
                   AND (sent_at >= ?2 OR sending_at IS NOT NULL)
                 ORDER BY sent_at",
            )
            .bind(&row.tenant_id)
            .bind(hour_ago)
            .bind(row.id)
            .fetch_all(&mut *tx)
            .await?;
            if recent.len() >= cap as usize {
                // The send that leaves the window first frees a place.
                let oldest = recent.iter().filter_map(|(at,)| *at).min();
                let due = oldest.map_or(now + chrono::Duration::minutes(1), |at| {
                    (at + chrono::Duration::hours(1)).max(now + chrono::Duration::seconds(1))
                });
                let note = format!(
                    "not sent yet: {} destructive actions went to the MDMs of the tenant in the last hour, the limit of max_destructive_actions_per_hour = {cap}; due again at {due}",
                    recent.len()
                );
                // Released without counting the attempt: it never left.
                sqlx::query(
                    "UPDATE actions SET claimed_at = NULL, attempts = MAX(attempts - 1, 0),
                     next_attempt_at = ?2, updated_at = ?3 WHERE id = ?1",
                )
                .bind(row.id)
                .bind(due)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                audit(tx, row.id, now, Some(state), state, Some(&note)).await?;
                return Ok(SendGate::Later(due));
            }
        }
        sqlx::query("UPDATE actions SET sending_at = ?2 WHERE id = ?1")
            .bind(row.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if audit_send {
            let note = format!("{SENDING_NOTE} {}", row.attempts);
            audit(tx, row.id, now, Some(state), state, Some(&note)).await?;
        }
        Ok(SendGate::Go)
    }

    /// [`Store::note_not_sent`] inside this transaction, at `now`.
    pub async fn note_not_sent(
        &mut self,
        id: i64,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let state: Option<(ActionState,)> =
            sqlx::query_as("SELECT state FROM actions WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *self.tx)
                .await?;
        if let Some((state,)) = state {
            audit(&mut self.tx, id, now, Some(state), state, Some(note)).await?;
        }
        Ok(())
    }

    /// [`Store::release_claim`] inside this transaction, at `now`.
    pub async fn release_claim(
        &mut self,
        id: i64,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let state: Option<(ActionState,)> = sqlx::query_as(
            "UPDATE actions SET claimed_at = NULL, sending_at = NULL, updated_at = ?2
             WHERE id = ?1 AND claimed_at IS NOT NULL AND state IN ('pending', 'failed') RETURNING state",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        if let Some((state,)) = state {
            audit(&mut self.tx, id, now, Some(state), state, Some(note)).await?;
        }
        Ok(())
    }

    /// [`Store::reschedule_action`] inside this transaction, at `now`.
    pub async fn reschedule_action(
        &mut self,
        id: i64,
        at: DateTime<Utc>,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let state: Option<(ActionState,)> = sqlx::query_as(
            "UPDATE actions SET next_attempt_at = ?2, updated_at = ?3
             WHERE id = ?1 AND claimed_at IS NULL AND state IN ('pending', 'failed') RETURNING state",
        )
        .bind(id)
        .bind(at)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some((state,)) = state else {
            return Ok(false);
        };
        audit(&mut self.tx, id, now, Some(state), state, Some(note)).await?;
        Ok(true)
    }
}

impl Store {
    /// Records on a row that a claim of it ended without a call to the MDM
    /// because the row had moved on meanwhile (cancelled while it waited).
    pub async fn note_not_sent(&self, id: i64, note: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        tx.note_not_sent(id, note, Utc::now()).await?;
        tx.commit().await
    }

    /// Whether the last audit row of the action is [`Store::begin_sending`]'s:
    /// a row still claimed then was perhaps sent.
    pub async fn was_being_sent(&self, id: i64) -> Result<bool, StoreError> {
        let note: Option<Option<String>> = sqlx::query_scalar(
            "SELECT note FROM action_audit WHERE action_id = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(note.flatten().is_some_and(|n| n.starts_with(SENDING_NOTE)))
    }

    /// Releases the claim of a row a crash left claimed, so it is retried
    /// (only for commands that are idempotent at the MDM), with an audit row.
    pub async fn release_claim(&self, id: i64, note: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        tx.release_claim(id, note, Utc::now()).await?;
        tx.commit().await
    }

    /// The pending (not yet sent) Wi-Fi profile removal of a device, if any.
    pub async fn active_wifi_removal(
        &self,
        device_id: i64,
    ) -> Result<Option<StoredAction>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions
             WHERE device_id = ?1 AND kind = 'remove_wifi_profile' AND state IN ('pending', 'failed')
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Moves the due time of an unclaimed pending row (a second disconnect
    /// extends the removal window), with an audit row. False if the row was
    /// claimed or moved on meanwhile.
    pub async fn reschedule_action(
        &self,
        id: i64,
        at: DateTime<Utc>,
        note: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = tx.reschedule_action(id, at, note, Utc::now()).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Cancels actions of a tenant that have not been sent and are not being
    /// sent right now (pending, held or failed, and unclaimed): one action by
    /// id, or every destructive one. Returns the cancelled rows.
    pub async fn cancel_actions(
        &self,
        tenant_id: &str,
        which: CancelWhich,
        note: &str,
    ) -> Result<Vec<StoredAction>, StoreError> {
        let now = Utc::now();
        let mut tx = self.begin_write().await?;
        // Unclaimed, or an enterprise wipe or wipe claimed but not yet handed
        // to its MDM (waiting for its turn, or for the lookup before it): see
        // `begin_sending`, the gate such a row passes right before its call.
        // Other kinds pass no gate (it would cost a write per lock), so a
        // claimed lock is being sent and is not taken.
        const WAITING: &str = "state IN ('pending', 'held', 'failed') AND sending_at IS NULL
             AND (claimed_at IS NULL OR kind IN ('enterprise_wipe', 'wipe'))";
        let before: Vec<(i64, ActionState)> = match which {
            CancelWhich::One(id) => {
                sqlx::query_as(&format!(
                    "SELECT id, state FROM actions WHERE tenant_id = ?1 AND id = ?2 AND {WAITING}"
                ))
                .bind(tenant_id)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?
            }
            CancelWhich::Destructive => {
                sqlx::query_as(&format!(
                    "SELECT id, state FROM actions WHERE tenant_id = ?1
                       AND kind IN ('enterprise_wipe', 'wipe') AND {WAITING} ORDER BY id"
                ))
                .bind(tenant_id)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        let mut out = Vec::new();
        for (id, state) in before {
            let row: StoredAction = sqlx::query_as(&format!(
                "UPDATE actions SET state = 'cancelled', reason = ?2, next_attempt_at = NULL,
                 claimed_at = NULL, updated_at = ?3
                 WHERE id = ?1 RETURNING {ACTION_COLUMNS}"
            ))
            .bind(id)
            .bind(note)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            audit(
                &mut tx,
                id,
                now,
                Some(state),
                ActionState::Cancelled,
                Some(note),
            )
            .await?;
            out.push(row);
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// Which actions [`Store::cancel_actions`] cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelWhich {
    One(i64),
    Destructive,
}

impl Store {
    /// Whether a `signal_risk` row newer than `than` exists for the device
    /// (and was not itself superseded or skipped): then `than` must not be sent.
    pub async fn newer_risk_signal(&self, device_id: i64, than: i64) -> Result<bool, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM actions
             WHERE device_id = ?1 AND kind = 'signal_risk' AND id > ?2 AND state <> 'skipped'",
        )
        .bind(device_id)
        .bind(than)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Records an action and its first audit row; returns its id.
    pub async fn insert_action(&self, action: &NewAction) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        let id = tx.insert_action(action).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Moves an action from `from` to `to` with an audit row (see
    /// [`Store::transition_action_with`] to record errors, receipts and due times).
    pub async fn transition_action(
        &self,
        id: i64,
        from: ActionState,
        to: ActionState,
        note: &str,
    ) -> Result<StoredAction, StoreError> {
        self.transition_action_with(id, Transition::new(from, to, note))
            .await
    }

    /// Applies a transition with its audit row, in one transaction, and
    /// releases the row's claim. Fails with [`StoreError::ActionStateChanged`]
    /// if the row is no longer in `t.from`, and changes nothing then.
    pub async fn transition_action_with(
        &self,
        id: i64,
        t: Transition,
    ) -> Result<StoredAction, StoreError> {
        let mut tx = self.begin().await?;
        let moved = tx.transition_action_with(id, &t).await;
        // A refused transition changed nothing: the rollback of `drop` is right.
        let moved = moved?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Claims up to `limit` unclaimed pending or failed actions due at `now`,
    /// in due order: sets `claimed_at`, counts the attempt and audits the
    /// claim, in one transaction, so two dispatchers never get the same row.
    pub async fn claim_due_actions(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StoredAction>, StoreError> {
        let mut tx = self.begin().await?;
        let claimed = tx.claim_due_actions(now, limit).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Actions claimed but never moved on: after a crash, perhaps sent. The
    /// dispatcher decides at start whether each may be retried.
    pub async fn unfinished_claims(&self) -> Result<Vec<StoredAction>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions
             WHERE claimed_at IS NOT NULL AND state IN ('pending', 'failed') ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// One action by id.
    pub async fn get_action(&self, id: i64) -> Result<Option<StoredAction>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The audit trail of an action, oldest first.
    pub async fn action_audit(&self, action_id: i64) -> Result<Vec<ActionAudit>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, action_id, at, from_state, to_state, note FROM action_audit
             WHERE action_id = ? ORDER BY id",
        )
        .bind(action_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use chrono::Duration;
    use serde_json::json;

    fn new_action(state: ActionState, mdm: i64) -> NewAction {
        NewAction {
            signal_level: None,
            tenant_id: "acme".into(),
            event_id: None,
            device_id: None,
            mdm_id: Some(mdm),
            kind: ActionKind::Lock.into(),
            parent_action_id: None,
            state,
            reason: None,
            next_attempt_at: None,
        }
    }

    #[tokio::test]
    async fn inserting_an_action_writes_its_first_audit_row() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut a = new_action(ActionState::Skipped, mdm);
        a.reason = Some("monitor mode".into());
        let id = store.insert_action(&a).await.unwrap();
        let stored = store.get_action(id).await.unwrap().unwrap();
        assert_eq!(stored.state, ActionState::Skipped);
        assert_eq!(stored.kind, ActionRecordKind::Lock);
        assert_eq!(stored.reason.as_deref(), Some("monitor mode"));
        assert_eq!(stored.next_attempt_at, None, "a skipped row is never due");
        assert_eq!(stored.attempts, 0);
        let audit = store.action_audit(id).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].from_state, None);
        assert_eq!(audit[0].to_state, ActionState::Skipped);
        assert_eq!(audit[0].note.as_deref(), Some("monitor mode"));

        let pending = store
            .insert_action(&new_action(ActionState::Pending, mdm))
            .await
            .unwrap();
        assert!(store
            .get_action(pending)
            .await
            .unwrap()
            .unwrap()
            .next_attempt_at
            .is_some());
    }

    #[tokio::test]
    async fn a_transition_is_audited_and_refused_from_a_state_the_row_left() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let id = store
            .insert_action(&new_action(ActionState::Held, mdm))
            .await
            .unwrap();
        let approved = store
            .transition_action(
                id,
                ActionState::Held,
                ActionState::Pending,
                "approved by admin",
            )
            .await
            .unwrap();
        assert_eq!(approved.state, ActionState::Pending);
        assert!(approved.next_attempt_at.is_some(), "due now once approved");

        let err = store
            .transition_action(id, ActionState::Held, ActionState::Cancelled, "cancel")
            .await
            .unwrap_err();
        match err {
            StoreError::ActionStateChanged {
                action_id,
                expected,
                actual,
            } => {
                assert_eq!(
                    (action_id, expected, actual),
                    (id, ActionState::Held, ActionState::Pending)
                );
            }
            other => panic!("{other:?}"),
        }
        let audit = store.action_audit(id).await.unwrap();
        assert_eq!(audit.len(), 2, "the refused transition left no row");
        assert_eq!(audit[1].from_state, Some(ActionState::Held));
        assert_eq!(audit[1].to_state, ActionState::Pending);
        assert_eq!(audit[1].note.as_deref(), Some("approved by admin"));

        let err = store
            .transition_action(999, ActionState::Held, ActionState::Pending, "x")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }));
    }

    #[tokio::test]
    async fn a_claimed_row_is_being_sent_only_after_its_sending_note_until_it_moves_on() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let id = store
            .insert_action(&new_action(ActionState::Pending, mdm))
            .await
            .unwrap();
        assert!(!store.was_being_sent(id).await.unwrap());
        let claimed = store.claim_due_actions(Utc::now(), 1).await.unwrap();
        assert!(
            !store.was_being_sent(id).await.unwrap(),
            "claimed, not yet sent"
        );
        assert_eq!(
            store.begin_sending(&claimed[0], None, true).await.unwrap(),
            SendGate::Go
        );
        assert!(store.was_being_sent(id).await.unwrap());
        let audit = store.action_audit(id).await.unwrap();
        let last = audit.last().unwrap();
        assert_eq!(last.note.as_deref(), Some("sending attempt 1"));
        assert_eq!(
            (last.from_state, last.to_state),
            (Some(ActionState::Pending), ActionState::Pending)
        );
        store
            .transition_action(
                id,
                ActionState::Pending,
                ActionState::Failed,
                "attempt 1 failed",
            )
            .await
            .unwrap();
        assert!(!store.was_being_sent(id).await.unwrap());
        assert!(!store.was_being_sent(999).await.unwrap(), "no such action");
    }

    #[tokio::test]
    async fn a_claimed_wipe_waiting_for_its_turn_is_cancelled_and_then_never_handed_over() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let wipe = NewAction {
            kind: ActionKind::EnterpriseWipe.into(),
            ..new_action(ActionState::Pending, mdm)
        };
        let first = store.insert_action(&wipe).await.unwrap();
        let second = store.insert_action(&wipe).await.unwrap();
        let claimed = store.claim_due_actions(Utc::now(), 2).await.unwrap();
        assert_eq!(claimed.len(), 2);
        // One is handed to its MDM; the other still waits for its turn.
        let handed = claimed.iter().find(|a| a.id == first).unwrap();
        assert_eq!(
            store.begin_sending(handed, None, true).await.unwrap(),
            SendGate::Go
        );
        let none = store
            .cancel_actions("acme", CancelWhich::One(first), "admin")
            .await
            .unwrap();
        assert!(none.is_empty(), "a row being sent is not cancelled");
        let cancelled = store
            .cancel_actions("acme", CancelWhich::One(second), "admin")
            .await
            .unwrap();
        assert_eq!(cancelled.len(), 1, "a claimed row waiting is cancelled");
        assert_eq!(cancelled[0].state, ActionState::Cancelled);
        assert_eq!(cancelled[0].claimed_at, None);
        let waiting = claimed.iter().find(|a| a.id == second).unwrap();
        assert_eq!(
            store.begin_sending(waiting, None, true).await.unwrap(),
            SendGate::Gone(ActionState::Cancelled)
        );
    }

    #[tokio::test]
    async fn a_claimed_lock_is_being_sent_and_is_not_cancelled() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let id = store
            .insert_action(&new_action(ActionState::Pending, mdm))
            .await
            .unwrap();
        store.claim_due_actions(Utc::now(), 1).await.unwrap();
        let none = store
            .cancel_actions("acme", CancelWhich::One(id), "admin")
            .await
            .unwrap();
        assert!(none.is_empty(), "no gate for a lock: claimed is being sent");
    }

    #[tokio::test]
    async fn claiming_takes_due_rows_in_due_order_once_and_counts_the_attempt() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let now = Utc::now();
        let mut later = new_action(ActionState::Pending, mdm);
        later.next_attempt_at = Some(now + Duration::minutes(120));
        let later = store.insert_action(&later).await.unwrap();
        let mut second = new_action(ActionState::Pending, mdm);
        second.next_attempt_at = Some(now - Duration::seconds(1));
        let second = store.insert_action(&second).await.unwrap();
        let mut first = new_action(ActionState::Pending, mdm);
        first.next_attempt_at = Some(now - Duration::seconds(10));
        let first = store.insert_action(&first).await.unwrap();
        store
            .insert_action(&new_action(ActionState::Held, mdm))
            .await
            .unwrap();

        let claimed = store.claim_due_actions(now, 1).await.unwrap();
        assert_eq!(
            claimed.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![first]
        );
        assert_eq!(claimed[0].attempts, 1);
        assert!(claimed[0].claimed_at.is_some());
        let claimed = store.claim_due_actions(now, 10).await.unwrap();
        assert_eq!(
            claimed.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![second]
        );
        assert!(store.claim_due_actions(now, 10).await.unwrap().is_empty());
        assert_eq!(
            store
                .unfinished_claims()
                .await
                .unwrap()
                .iter()
                .map(|a| a.id)
                .collect::<Vec<_>>(),
            vec![second, first]
        );

        // A retryable failure releases the row and makes it due again.
        let retry_at = now + Duration::seconds(30);
        let failed = store
            .transition_action_with(
                first,
                Transition::new(
                    ActionState::Pending,
                    ActionState::Failed,
                    "MDM answered 503",
                )
                .last_error("unavailable: 503")
                .next_attempt_at(retry_at),
            )
            .await
            .unwrap();
        assert_eq!(failed.claimed_at, None);
        assert_eq!(failed.next_attempt_at, Some(retry_at));
        assert!(store.claim_due_actions(now, 10).await.unwrap().is_empty());
        let again = store.claim_due_actions(retry_at, 10).await.unwrap();
        assert_eq!(again.iter().map(|a| a.id).collect::<Vec<_>>(), vec![first]);
        assert_eq!(again[0].attempts, 2);
        assert_eq!(again[0].last_error.as_deref(), Some("unavailable: 503"));

        // Sent: receipt and sent_at recorded, never due again.
        let sent = store
            .transition_action_with(
                first,
                Transition::new(ActionState::Failed, ActionState::Sent, "MDM accepted")
                    .receipt(json!({"command_id": "c-1"})),
            )
            .await
            .unwrap();
        assert!(sent.sent_at.is_some());
        assert_eq!(sent.next_attempt_at, None);
        assert_eq!(sent.receipt.unwrap()["command_id"], "c-1");
        assert!(store
            .claim_due_actions(now + Duration::days(1), 10)
            .await
            .unwrap()
            .iter()
            .all(|a| a.id == later));
        let notes: Vec<_> = store
            .action_audit(first)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.note.unwrap_or_default())
            .collect();
        assert_eq!(
            notes,
            vec![
                "",
                "claimed for attempt 1",
                "MDM answered 503",
                "claimed for attempt 2",
                "MDM accepted"
            ]
        );
    }

    #[tokio::test]
    async fn a_wifi_profile_removal_row_points_at_its_disconnect() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut disconnect = new_action(ActionState::Sent, mdm);
        disconnect.kind = ActionKind::DisconnectWifi.into();
        let parent = store.insert_action(&disconnect).await.unwrap();
        let mut removal = new_action(ActionState::Pending, mdm);
        removal.kind = ActionRecordKind::RemoveWifiProfile;
        removal.parent_action_id = Some(parent);
        removal.next_attempt_at = Some(Utc::now() + Duration::minutes(120));
        let id = store.insert_action(&removal).await.unwrap();
        let stored = store.get_action(id).await.unwrap().unwrap();
        assert_eq!(stored.parent_action_id, Some(parent));
        assert_eq!(stored.kind.command(), Some(MdmCommand::RemoveWifiProfile));
    }

    #[tokio::test]
    async fn the_schema_refuses_an_unknown_state() {
        let (_dir, store, _) = store_with_mdm().await;
        let err = sqlx::query(
            "INSERT INTO actions (tenant_id, kind, state, created_at, updated_at)
             VALUES ('acme', 'lock', 'lost', 'x', 'x')",
        )
        .execute(store.pool())
        .await
        .map_err(StoreError::from)
        .unwrap_err();
        assert!(err.is_constraint_violation(), "{err:?}");
    }
}

/// One line of an overview of actions: who, what, how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct ActionSummary {
    pub tenant_id: String,
    /// The device's name, else its serial, else its id at the MDM.
    pub device: Option<String>,
    pub kind: String,
    pub state: String,
    pub reason: Option<String>,
    /// When a pending row is due.
    pub due: Option<String>,
}

impl Store {
    /// Every action, oldest first, with its device's name (the demo's summary).
    pub async fn action_summaries(&self) -> Result<Vec<ActionSummary>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT a.tenant_id, COALESCE(d.name, d.serial, d.mdm_device_id) AS device, a.kind, a.state,
                    a.reason, a.next_attempt_at AS due
             FROM actions a LEFT JOIN devices d ON d.id = a.device_id ORDER BY a.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod summary_tests {
    use super::super::testutil::*;
    use super::*;

    #[tokio::test]
    async fn action_summaries_name_the_device_and_keep_the_order() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let run = store
            .start_sync_run(mdm, crate::store::SyncTrigger::Cli)
            .await
            .unwrap();
        let mut d = device("dev-1");
        d.name = Some("Lobby iPad".into());
        store
            .upsert_devices(run, mdm, &[d], crate::store::Pii::Clear)
            .await
            .unwrap();
        let stored = store
            .find_devices(
                "acme",
                &mtd_adapter::DeviceIdentifier::MdmDeviceId("dev-1".into()),
            )
            .await
            .unwrap()
            .remove(0);
        for (kind, state) in [
            (ActionRecordKind::Lock, ActionState::Pending),
            (ActionRecordKind::None, ActionState::Skipped),
        ] {
            store
                .insert_action(&NewAction {
                    signal_level: None,
                    tenant_id: "acme".into(),
                    event_id: None,
                    device_id: Some(stored.id),
                    mdm_id: Some(mdm),
                    kind,
                    parent_action_id: None,
                    state,
                    reason: Some("why".into()),
                    next_attempt_at: None,
                })
                .await
                .unwrap();
        }
        let rows = store.action_summaries().await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].device.as_deref(), Some("Lobby iPad"));
        assert_eq!(
            (rows[0].kind.as_str(), rows[0].state.as_str()),
            ("lock", "pending")
        );
        assert!(rows[0].due.is_some() && rows[1].due.is_none());
    }
}
