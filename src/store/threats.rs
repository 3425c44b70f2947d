//! The threat lifecycle (CONTRACT §3, §4): each device's open threats, their
//! history, and its risk level, kept current in the transaction that stores
//! the events that change them.
//!
//! A threat is (device, type, key). The events of a group are applied in
//! memory, in order, on top of what the store holds (one read for the
//! group), and the result written back with a fixed number of statements:
//! the same shape as the ingest writer's other statements (JSON rows read by
//! `json_each`). Events of one threat take effect in `detected_at` order: a
//! `resolved` dated before the latest detection closes nothing, and a
//! detection dated at or before the latest resolution (stored before this
//! group, or an admin's) opens nothing. Why the second half: agents retry,
//! so a late copy of an old detection must not reopen a threat the agent has
//! since reported fixed.

use super::ingest::timestamp;
use super::{RiskLevel, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::FromRow;
use std::collections::HashMap;

/// An event's `threat.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreatStatus {
    Detected,
    Resolved,
}

impl ThreatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ThreatStatus::Detected => "detected",
            ThreatStatus::Resolved => "resolved",
        }
    }
}

/// One stored event as the lifecycle takes it: a new event of a known device.
#[derive(Debug, Clone)]
pub struct ThreatEvent {
    /// The store's id of the event.
    pub event_row: i64,
    pub tenant_id: String,
    pub device_id: i64,
    pub threat_type: String,
    /// `""` for no key.
    pub key: String,
    /// `low` … `critical`.
    pub severity: String,
    pub name: Option<String>,
    pub status: ThreatStatus,
    pub detected_at: DateTime<Utc>,
}

impl ThreatEvent {
    /// The lifecycle's view of an event stored as `event_row` for `device_id`.
    pub fn of(e: &super::NewEvent, event_row: i64, device_id: i64) -> Self {
        ThreatEvent {
            event_row,
            tenant_id: e.tenant_id.clone(),
            device_id,
            threat_type: e.threat_type.clone(),
            key: e.threat_key.clone(),
            severity: e.severity.clone(),
            name: e.threat_name.clone(),
            status: e.status,
            detected_at: e.detected_at,
        }
    }

    /// The same for an event stored earlier, now linked to `device_id`.
    pub fn of_stored(e: &super::StoredEvent, device_id: i64) -> Self {
        ThreatEvent {
            event_row: e.id,
            tenant_id: e.tenant_id.clone(),
            device_id,
            threat_type: e.threat_type.clone(),
            key: e.threat_key.clone().unwrap_or_default(),
            severity: e.severity.clone(),
            name: e.threat_name.clone(),
            status: e.status,
            detected_at: e.detected_at,
        }
    }
}

/// A device whose risk level changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiskChange {
    pub device_id: i64,
    /// The device's MDM integration.
    pub mdm_id: i64,
    pub from: RiskLevel,
    pub to: RiskLevel,
}

/// Who closed a threat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClosedBy {
    Agent,
    Admin,
    Removal,
}

impl ClosedBy {
    fn as_str(self) -> &'static str {
        match self {
            ClosedBy::Agent => "agent",
            ClosedBy::Admin => "admin",
            ClosedBy::Removal => "removal",
        }
    }
}

/// A threat as stored, open or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct StoredThreat {
    pub id: i64,
    #[serde(rename = "type")]
    pub threat_type: String,
    /// `None` for no key.
    #[sqlx(try_from = "String")]
    pub key: ThreatKey,
    pub severity: String,
    pub name: Option<String>,
    pub first_detected_at: DateTime<Utc>,
    pub last_detected_at: DateTime<Utc>,
    pub detections: i64,
    /// The event that opened it and the latest that updated it (store ids).
    pub opened_by_event: Option<i64>,
    pub last_event: Option<i64>,
    pub closed_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_by: Option<String>,
    pub close_reason: Option<String>,
}

/// A threat key as the API shows it: `null` for none (stored as `""`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ThreatKey(pub Option<String>);

impl From<String> for ThreatKey {
    fn from(s: String) -> Self {
        ThreatKey((!s.is_empty()).then_some(s))
    }
}

/// The severities in order, for SQL: the highest open one is the risk level.
const LEVEL_OF_DEVICE: &str = "COALESCE((SELECT severity FROM threats
        WHERE device_id = devices.id AND closed_at IS NULL
        ORDER BY CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3
                               WHEN 'medium' THEN 2 ELSE 1 END DESC
        LIMIT 1), 'secured')";

/// What the store holds of one threat before a group (`THREATS_STATE`).
#[derive(FromRow)]
struct StateRow {
    slot: i64,
    id: Option<i64>,
    severity: Option<String>,
    name: Option<String>,
    first_detected_at: Option<DateTime<Utc>>,
    last_detected_at: Option<DateTime<Utc>>,
    opened_by_event: Option<i64>,
    last_event: Option<i64>,
    detections: Option<i64>,
    resolved_by_event: Option<DateTime<Utc>>,
    resolved_closed: Option<DateTime<Utc>>,
    device_risk: Option<String>,
}

/// Per threat of the group: the open row, and the latest resolution,
/// excluding the group's own events (`?2`), which are applied in order.
const THREATS_STATE: &str = "SELECT k.key AS slot, t.id, t.severity, t.threat_name AS name,
        t.first_detected_at, t.last_detected_at, t.opened_by_event, t.last_event, t.detections,
        (SELECT MAX(e.detected_at) FROM threat_events AS e
          WHERE e.device_id = k.value ->> 0 AND e.threat_type = k.value ->> 1
            AND e.threat_key = k.value ->> 2 AND e.status = 'resolved'
            AND e.id NOT IN (SELECT value FROM json_each(?2))) AS resolved_by_event,
        (SELECT MAX(c.resolved_at) FROM threats AS c
          WHERE c.device_id = k.value ->> 0 AND c.threat_type = k.value ->> 1
            AND c.threat_key = k.value ->> 2 AND c.closed_at IS NOT NULL) AS resolved_closed,
        (SELECT risk_level FROM devices WHERE id = k.value ->> 0) AS device_risk
     FROM json_each(?1) AS k
     LEFT JOIN threats AS t ON t.device_id = k.value ->> 0 AND t.threat_type = k.value ->> 1
        AND t.threat_key = k.value ->> 2 AND t.closed_at IS NULL";

const THREATS_UPDATE: &str = "UPDATE threats SET severity = j.value ->> 1,
        threat_name = j.value ->> 2, first_detected_at = j.value ->> 3,
        last_detected_at = j.value ->> 4, last_event = j.value ->> 5, detections = j.value ->> 6,
        closed_at = j.value ->> 7, resolved_at = j.value ->> 8, closed_by = j.value ->> 9,
        closed_by_event = j.value ->> 10, close_reason = j.value ->> 11
     FROM json_each(?1) AS j WHERE threats.id = j.value ->> 0";

const THREATS_INSERT: &str = "INSERT INTO threats (tenant_id, device_id, threat_type, threat_key,
        severity, threat_name, first_detected_at, last_detected_at, opened_by_event, last_event,
        detections, closed_at, resolved_at, closed_by, closed_by_event, close_reason)
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
        j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9,
        j.value ->> 10, j.value ->> 11, j.value ->> 12, j.value ->> 13, j.value ->> 14,
        j.value ->> 15
     FROM json_each(?1) AS j ORDER BY j.key";

/// One threat as the group leaves it.
#[derive(Debug, Clone)]
struct Row {
    /// The stored row's id (`None`: opened by this group).
    id: Option<i64>,
    severity: String,
    name: Option<String>,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    opened_by: Option<i64>,
    last_event: Option<i64>,
    detections: i64,
    /// Set once closed: (resolved as of, closing event).
    closed: Option<(DateTime<Utc>, i64)>,
    changed: bool,
}

/// One threat of the group while its events are applied.
struct Slot<'e> {
    event: &'e ThreatEvent,
    open: Option<Row>,
    /// Rows the group closed (written with their close).
    done: Vec<Row>,
    last_resolved: Option<DateTime<Utc>>,
}

impl Slot<'_> {
    fn apply(&mut self, e: &ThreatEvent) {
        match (e.status, &mut self.open) {
            (ThreatStatus::Detected, Some(open)) => {
                open.detections += 1;
                open.first = open.first.min(e.detected_at);
                if e.detected_at >= open.last {
                    open.last = e.detected_at;
                    open.severity = e.severity.clone();
                    open.name = e.name.clone().or(open.name.take());
                    open.last_event = Some(e.event_row);
                }
                open.changed = true;
            }
            (ThreatStatus::Detected, None) => {
                if self.last_resolved.is_some_and(|r| e.detected_at <= r) {
                    return; // an old copy of a detection since resolved
                }
                self.open = Some(Row {
                    id: None,
                    severity: e.severity.clone(),
                    name: e.name.clone(),
                    first: e.detected_at,
                    last: e.detected_at,
                    opened_by: Some(e.event_row),
                    last_event: Some(e.event_row),
                    detections: 1,
                    closed: None,
                    changed: true,
                });
            }
            (ThreatStatus::Resolved, open) => {
                self.last_resolved = Some(
                    self.last_resolved
                        .map_or(e.detected_at, |r| r.max(e.detected_at)),
                );
                if open.as_ref().is_some_and(|o| e.detected_at >= o.last) {
                    if let Some(mut row) = open.take() {
                        row.closed = Some((e.detected_at, e.event_row));
                        row.changed = true;
                        self.done.push(row);
                    }
                }
            }
        }
    }
}

impl WriteTx<'_> {
    /// Applies new events of known devices to their threats, in order, and
    /// brings the risk level of every device they touch up to date. Returns
    /// the devices whose level changed.
    pub async fn apply_threat_events(
        &mut self,
        events: &[ThreatEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<RiskChange>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut index: HashMap<(i64, &str, &str), usize> = HashMap::new();
        let mut slots: Vec<Slot<'_>> = Vec::new();
        let mut order = Vec::with_capacity(events.len());
        for e in events {
            let key = (e.device_id, e.threat_type.as_str(), e.key.as_str());
            let i = *index.entry(key).or_insert_with(|| {
                slots.push(Slot {
                    event: e,
                    open: None,
                    done: Vec::new(),
                    last_resolved: None,
                });
                slots.len() - 1
            });
            order.push(i);
        }
        let keys: Vec<Value> = slots
            .iter()
            .map(|s| json!([s.event.device_id, s.event.threat_type, s.event.key]))
            .collect();
        let own: Vec<i64> = events.iter().map(|e| e.event_row).collect();
        let state: Vec<StateRow> = sqlx::query_as(THREATS_STATE)
            .bind(Value::Array(keys).to_string())
            .bind(json!(own).to_string())
            .fetch_all(&mut *self.tx)
            .await?;
        let mut old_levels = HashMap::new();
        for r in state {
            let Some(slot) = usize::try_from(r.slot).ok().and_then(|i| slots.get_mut(i)) else {
                continue;
            };
            if let Some(level) = r.device_risk.as_deref().and_then(RiskLevel::parse) {
                old_levels.insert(slot.event.device_id, level);
            }
            slot.last_resolved = r.resolved_by_event.max(r.resolved_closed);
            if let (Some(id), Some(severity), Some(first), Some(last)) =
                (r.id, r.severity, r.first_detected_at, r.last_detected_at)
            {
                slot.open = Some(Row {
                    id: Some(id),
                    severity,
                    name: r.name,
                    first,
                    last,
                    opened_by: r.opened_by_event,
                    last_event: r.last_event,
                    detections: r.detections.unwrap_or(1),
                    closed: None,
                    changed: false,
                });
            }
        }
        for (e, i) in events.iter().zip(order) {
            slots[i].apply(e);
        }

        let now_text = timestamp(&now);
        let mut updates = Vec::new();
        let mut inserts = Vec::new();
        for slot in &slots {
            let e = slot.event;
            for row in slot.done.iter().chain(slot.open.iter()) {
                if !row.changed {
                    continue;
                }
                let (closed_at, resolved_at, closed_by, closed_by_event, reason) = match row.closed
                {
                    Some((at, event)) => (
                        Some(now_text.clone()),
                        Some(timestamp(&at)),
                        Some(ClosedBy::Agent.as_str()),
                        Some(event),
                        Some("resolved by the agent"),
                    ),
                    None => (None, None, None, None, None),
                };
                match row.id {
                    Some(id) => updates.push(json!([
                        id,
                        row.severity,
                        row.name,
                        timestamp(&row.first),
                        timestamp(&row.last),
                        row.last_event,
                        row.detections,
                        closed_at,
                        resolved_at,
                        closed_by,
                        closed_by_event,
                        reason
                    ])),
                    None => inserts.push(json!([
                        e.tenant_id,
                        e.device_id,
                        e.threat_type,
                        e.key,
                        row.severity,
                        row.name,
                        timestamp(&row.first),
                        timestamp(&row.last),
                        row.opened_by,
                        row.last_event,
                        row.detections,
                        closed_at,
                        resolved_at,
                        closed_by,
                        closed_by_event,
                        reason
                    ])),
                }
            }
        }
        // Updates first: a stored open row closed here makes room (the
        // unique index on open rows) for a new one of the same threat.
        if !updates.is_empty() {
            sqlx::query(THREATS_UPDATE)
                .bind(Value::Array(updates).to_string())
                .execute(&mut *self.tx)
                .await?;
        }
        if !inserts.is_empty() {
            sqlx::query(THREATS_INSERT)
                .bind(Value::Array(inserts).to_string())
                .execute(&mut *self.tx)
                .await?;
        }
        let mut devices: Vec<i64> = slots.iter().map(|s| s.event.device_id).collect();
        devices.sort_unstable();
        devices.dedup();
        let mut closed: Vec<i64> = slots
            .iter()
            .filter(|s| !s.done.is_empty())
            .map(|s| s.event.device_id)
            .collect();
        closed.sort_unstable();
        closed.dedup();
        self.hasten_wifi_removals(&closed, now).await?;
        self.refresh_risk(&devices, Some(&old_levels)).await
    }

    /// CONTRACT §4 "Resolution reverts": for devices a threat of which was
    /// just closed, a pending Wi-Fi profile removal becomes due now when the
    /// threat that caused its disconnect is closed and no `network.*` threat
    /// of the device is open. Returns how many removals became due (the
    /// caller wakes the dispatcher). Audited on each row.
    pub async fn hasten_wifi_removals(
        &mut self,
        devices: &[i64],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if devices.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "UPDATE actions SET next_attempt_at = ?2, updated_at = ?2
             WHERE kind = 'remove_wifi_profile' AND state IN ('pending', 'failed')
               AND claimed_at IS NULL AND next_attempt_at > ?2
               AND device_id IN (SELECT value FROM json_each(?1))
               AND NOT EXISTS (SELECT 1 FROM threats AS t
                   WHERE t.device_id = actions.device_id AND t.closed_at IS NULL
                     AND t.threat_type LIKE 'network.%')
               AND NOT EXISTS (SELECT 1 FROM actions AS p
                   JOIN threat_events AS e ON e.id = p.event_id
                   JOIN threats AS t ON t.device_id = p.device_id
                        AND t.threat_type = e.threat_type AND t.threat_key = e.threat_key
                        AND t.closed_at IS NULL
                   WHERE p.id = actions.parent_action_id)
             RETURNING id, state",
        )
        .bind(json!(devices).to_string())
        .bind(now)
        .fetch_all(&mut *self.tx)
        .await?;
        if !rows.is_empty() {
            let audit: Vec<Value> = rows.iter().map(|(id, state)| json!([id, state])).collect();
            sqlx::query(
                "INSERT INTO action_audit (action_id, at, from_state, to_state, note)
                 SELECT value ->> 0, ?2, value ->> 1, value ->> 1,
                     'due now: the threat that caused the disconnect was resolved and no network threat is open'
                 FROM json_each(?1)",
            )
            .bind(Value::Array(audit).to_string())
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(rows.len() as u64)
    }

    /// Recomputes the risk level of `devices` from their open threats;
    /// returns the changes.
    /// `old` has their levels before, when the caller read them already.
    async fn refresh_risk(
        &mut self,
        devices: &[i64],
        old: Option<&HashMap<i64, RiskLevel>>,
    ) -> Result<Vec<RiskChange>, StoreError> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let ids = json!(devices).to_string();
        let read;
        let old = match old {
            Some(old) => old,
            None => {
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT id, risk_level FROM devices WHERE id IN (SELECT value FROM json_each(?1))",
                )
                .bind(&ids)
                .fetch_all(&mut *self.tx)
                .await?;
                read = rows
                    .into_iter()
                    .filter_map(|(id, l)| Some((id, RiskLevel::parse(&l)?)))
                    .collect();
                &read
            }
        };
        // RETURNING sees only the new row: the old level comes from `old`.
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(&format!(
            "UPDATE devices SET risk_level = {LEVEL_OF_DEVICE}
             WHERE id IN (SELECT value FROM json_each(?1)) AND risk_level IS NOT {LEVEL_OF_DEVICE}
             RETURNING id, mdm_id, risk_level"
        ))
        .bind(&ids)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(device_id, mdm_id, to)| {
                Some(RiskChange {
                    device_id,
                    mdm_id,
                    from: old.get(&device_id).copied().unwrap_or(RiskLevel::Secured),
                    to: RiskLevel::parse(&to)?,
                })
            })
            .collect())
    }

    /// Closes an open threat for an admin: as of now, recorded with the
    /// admin as its source. `None` when the threat is not open.
    pub async fn resolve_threat_by_admin(
        &mut self,
        device_id: i64,
        threat_type: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(StoredThreat, Vec<RiskChange>)>, StoreError> {
        let closed: Option<StoredThreat> = sqlx::query_as(&format!(
            "UPDATE threats SET closed_at = ?4, resolved_at = ?4, closed_by = 'admin',
                 close_reason = 'resolved by an admin'
             WHERE device_id = ?1 AND threat_type = ?2 AND threat_key = ?3 AND closed_at IS NULL
             RETURNING {THREAT_COLUMNS}"
        ))
        .bind(device_id)
        .bind(threat_type)
        .bind(key)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(closed) = closed else {
            return Ok(None);
        };
        self.hasten_wifi_removals(&[device_id], now).await?;
        let changes = self.refresh_risk(&[device_id], None).await?;
        Ok(Some((closed, changes)))
    }
}

/// What [`WriteTx::signal_risk_changes`] recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signalled {
    /// New `signal_risk` rows: (state, level).
    pub new: Vec<(super::ActionState, RiskLevel)>,
    /// Unsent older rows superseded (moved to `skipped`).
    pub superseded: usize,
}

impl WriteTx<'_> {
    /// The risk signal of level changes (issue 17, CONTRACT §4): for each
    /// change of a device whose MDM is in `signal_mdms`, the unsent
    /// `signal_risk` rows of that device that no dispatcher holds are
    /// superseded (`skipped`, with the reason) and a new one carries the new
    /// level: `pending`, or `skipped` in monitor mode. In the caller's
    /// transaction, so the signal is as durable as the change. Call it after
    /// every other action row of the transaction is written (the ingest
    /// writer numbers its rows in advance).
    pub async fn signal_risk_changes(
        &mut self,
        tenant_id: &str,
        changes: &[RiskChange],
        signal_mdms: &[i64],
        monitor: bool,
        now: DateTime<Utc>,
    ) -> Result<Signalled, StoreError> {
        let changes: Vec<&RiskChange> = changes
            .iter()
            .filter(|c| signal_mdms.contains(&c.mdm_id))
            .collect();
        if changes.is_empty() {
            return Ok(Signalled::default());
        }
        let devices: Vec<i64> = changes.iter().map(|c| c.device_id).collect();
        let now_text = timestamp(&now);
        // The unsent rows to supersede and, in the same round trip, the id
        // the new rows start at (the last row: `state` NULL). It stays right
        // while this transaction holds the write lock.
        let mut older: Vec<(i64, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT a.id, a.state, a.device_id FROM actions AS a
             WHERE a.device_id IN (SELECT value FROM json_each(?1)) AND a.kind = 'signal_risk'
               AND a.state IN ('pending', 'failed') AND a.claimed_at IS NULL
             UNION ALL
             SELECT COALESCE(MAX(id), 0) + 1, NULL, NULL FROM actions",
        )
        .bind(json!(devices).to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        let first_id = match older.pop() {
            Some((id, None, None)) => id,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "the next action id is missing from the superseded rows: {other:?}"
                )))
            }
        };
        let level_of: HashMap<i64, RiskLevel> =
            changes.iter().map(|c| (c.device_id, c.to)).collect();
        let superseded: Vec<Value> = older
            .iter()
            .map(|(id, state, device)| {
                let to = device
                    .and_then(|d| level_of.get(&d))
                    .map_or("?", |l| l.as_str());
                json!([
                    id,
                    state,
                    format!(
                        "superseded: the device's level changed to {to} before this one was sent"
                    )
                ])
            })
            .collect();
        if !superseded.is_empty() {
            sqlx::query(
                "UPDATE actions SET state = 'skipped', reason = j.value ->> 2, next_attempt_at = NULL,
                     updated_at = ?2
                 FROM json_each(?1) AS j WHERE actions.id = j.value ->> 0;
                 INSERT INTO action_audit (action_id, at, from_state, to_state, note)
                 SELECT value ->> 0, ?2, value ->> 1, 'skipped', value ->> 2 FROM json_each(?1)",
            )
            .bind(Value::Array(superseded).to_string())
            .bind(&now_text)
            .execute(&mut *self.tx)
            .await?;
        }
        let (state, reason) = if monitor {
            (
                super::ActionState::Skipped,
                Some("monitor mode: the decision is recorded, nothing is sent".to_string()),
            )
        } else {
            (super::ActionState::Pending, None)
        };
        // One statement for all the rows, as the ingest writer's own actions.
        let rows: Vec<super::NewAction> = changes
            .iter()
            .map(|c| super::NewAction {
                tenant_id: tenant_id.to_string(),
                event_id: None,
                device_id: Some(c.device_id),
                mdm_id: Some(c.mdm_id),
                kind: super::ActionRecordKind::SignalRisk,
                parent_action_id: None,
                state,
                reason: reason.clone(),
                next_attempt_at: (!monitor).then_some(now),
                signal_level: Some(c.to),
            })
            .collect();
        self.insert_actions_numbered(first_id, &rows, now).await?;
        let new = changes.iter().map(|c| (state, c.to)).collect();
        Ok(Signalled {
            new,
            superseded: older.len(),
        })
    }
}

/// The columns of [`StoredThreat`].
const THREAT_COLUMNS: &str = "id, threat_type, threat_key AS key, severity, threat_name AS name,
    first_detected_at, last_detected_at, detections, opened_by_event, last_event, closed_at,
    resolved_at, closed_by, close_reason";

/// Closes the open threats of devices just removed at their MDM (those of
/// `mdm_id` with `removed_at = at`) and sets them `secured`. Returns the
/// devices whose level changed.
pub(super) async fn close_for_removed(
    conn: &mut sqlx::SqliteConnection,
    mdm_id: i64,
    at: DateTime<Utc>,
) -> Result<Vec<RiskChange>, StoreError> {
    sqlx::query(
        "UPDATE threats SET closed_at = ?2, resolved_at = ?2, closed_by = 'removal',
             close_reason = 'the device was removed at its MDM'
         WHERE closed_at IS NULL AND device_id IN
             (SELECT id FROM devices WHERE mdm_id = ?1 AND removed_at = ?2)",
    )
    .bind(mdm_id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let old: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT id, mdm_id, risk_level FROM devices
         WHERE mdm_id = ?1 AND removed_at = ?2 AND risk_level <> 'secured'",
    )
    .bind(mdm_id)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE devices SET risk_level = 'secured'
         WHERE mdm_id = ?1 AND removed_at = ?2 AND risk_level <> 'secured'",
    )
    .bind(mdm_id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(old
        .into_iter()
        .filter_map(|(device_id, mdm_id, from)| {
            Some(RiskChange {
                device_id,
                mdm_id,
                from: RiskLevel::parse(&from)?,
                to: RiskLevel::Secured,
            })
        })
        .collect())
}

impl super::Store {
    /// A device's open threats, the most severe and then most recent first.
    pub async fn open_threats(&self, device_id: i64) -> Result<Vec<StoredThreat>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {THREAT_COLUMNS} FROM threats WHERE device_id = ? AND closed_at IS NULL
             ORDER BY CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3
                                    WHEN 'medium' THEN 2 ELSE 1 END DESC,
                      last_detected_at DESC, id DESC"
        ))
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A device's closed threats, the latest closed first, at most `limit`.
    pub async fn threat_history(
        &self,
        device_id: i64,
        limit: u32,
    ) -> Result<Vec<StoredThreat>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {THREAT_COLUMNS} FROM threats WHERE device_id = ? AND closed_at IS NOT NULL
             ORDER BY closed_at DESC, id DESC LIMIT ?"
        ))
        .bind(device_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Devices of an MDM without an unsent `signal_risk` (one is coming anyway).
const NO_UNSENT_SIGNAL: &str = "NOT EXISTS (SELECT 1 FROM actions AS a
    WHERE a.device_id = d.id AND a.kind = 'signal_risk' AND a.state IN ('pending', 'failed'))";

impl super::Store {
    /// Drift repair where the listing reports the level (BCDM): the live
    /// devices of `mdm_id` whose reported level (none: `secured`) differs
    /// from the stored one, as changes from the reported to the stored level.
    pub async fn listing_risk_drift(&self, mdm_id: i64) -> Result<Vec<RiskChange>, StoreError> {
        let rows: Vec<(i64, Option<String>, String)> = sqlx::query_as(&format!(
            "SELECT d.id, d.reported_risk, d.risk_level FROM devices AS d
             WHERE d.mdm_id = ?1 AND d.removed_at IS NULL
               AND COALESCE(d.reported_risk, 'secured') <> d.risk_level AND {NO_UNSENT_SIGNAL}"
        ))
        .bind(mdm_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(device_id, reported, level)| {
                Some(RiskChange {
                    device_id,
                    mdm_id,
                    from: reported
                        .as_deref()
                        .and_then(RiskLevel::parse)
                        .unwrap_or(RiskLevel::Secured),
                    to: RiskLevel::parse(&level)?,
                })
            })
            .collect())
    }

    /// The live devices of `mdm_id` whose level the MDM is asked for: with
    /// `all`, every one (a bulk read costs the same); else only those whose
    /// level is not `secured` or whose latest signal was not confirmed sent
    /// (a read costs one request per device). Devices with an unsent signal
    /// are left out.
    pub async fn devices_to_verify(
        &self,
        mdm_id: i64,
        all: bool,
    ) -> Result<Vec<super::StoredDevice>, StoreError> {
        let which = if all {
            "1"
        } else {
            "(d.risk_level <> 'secured' OR EXISTS (SELECT 1 FROM actions AS s
                 WHERE s.id = (SELECT MAX(id) FROM actions
                               WHERE device_id = d.id AND kind = 'signal_risk')
                   AND s.state <> 'sent'))"
        };
        let columns: Vec<String> = super::inventory::DEVICE_COLUMNS
            .split(',')
            .map(|c| format!("d.{}", c.trim()))
            .collect();
        let rows: Vec<super::inventory::DeviceRow> = sqlx::query_as(&format!(
            "SELECT {} FROM devices AS d
             WHERE d.mdm_id = ?1 AND d.removed_at IS NULL AND {which} AND {NO_UNSENT_SIGNAL}
             ORDER BY d.id",
            columns.join(", ")
        ))
        .bind(mdm_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The newest action id: drift repair notes it before it reads the
    /// MDM's levels back, to tell which devices were signalled meanwhile.
    pub async fn last_action_id(&self) -> Result<i64, StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM actions")
            .fetch_one(&self.pool)
            .await?;
        Ok(id.unwrap_or(0))
    }

    /// Enqueues a `signal_risk` for each drifted device (the stored level,
    /// `to`), in one transaction. Returns how many. A device whose level is
    /// no longer `to`, that was removed, or that got a signal after action
    /// `compared_after` (its level changed while the MDM was read back) is
    /// left alone: its own signal carries the current level, and writing the
    /// compared one would put an older level over a newer one. The next full
    /// sync compares it again.
    pub async fn repair_risk_drift(
        &self,
        tenant_id: &str,
        mdm_id: i64,
        drift: &[RiskChange],
        compared_after: i64,
    ) -> Result<usize, StoreError> {
        if drift.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let asked: Vec<Value> = drift
            .iter()
            .map(|c| json!([c.device_id, c.to.as_str()]))
            .collect();
        let still: Vec<i64> = sqlx::query_scalar(
            "SELECT d.id FROM json_each(?1) AS j JOIN devices AS d ON d.id = j.value ->> 0
             WHERE d.risk_level = j.value ->> 1 AND d.removed_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM actions AS a
                   WHERE a.device_id = d.id AND a.kind = 'signal_risk'
                     AND (a.id > ?2 OR a.state IN ('pending', 'failed')))",
        )
        .bind(Value::Array(asked).to_string())
        .bind(compared_after)
        .fetch_all(&mut *tx.tx)
        .await?;
        let still: std::collections::HashSet<i64> = still.into_iter().collect();
        let drift: Vec<RiskChange> = drift
            .iter()
            .filter(|c| still.contains(&c.device_id))
            .cloned()
            .collect();
        let signalled = tx
            .signal_risk_changes(tenant_id, &drift, &[mdm_id], false, Utc::now())
            .await?;
        tx.commit().await?;
        Ok(signalled.new.len())
    }
}
