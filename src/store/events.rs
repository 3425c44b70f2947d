//! Threat events from the agents: what one holds, and the reads.
//!
//! Events are written only by the ingest writer, in groups
//! ([`WriteTx::insert_events`]). `(tenant_id, event_id)` is the idempotency
//! key: a repeat changes nothing and is reported as one. The identifiers the agent sent are stored on the
//! event, normalised, so an event still names its device after the device is
//! removed (its `device_id` then stays, or becomes NULL on a real delete).

use super::{Store, StoreError, ThreatStatus, WriteTx};
use chrono::{DateTime, Utc};
use mtd_adapter::{normalize_imei, normalize_mac, normalize_serial, normalize_udid};
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row};

/// The device identifiers an agent sent with an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventIdentifiers {
    pub udid: Option<String>,
    pub serial: Option<String>,
    pub imei: Option<String>,
    pub mac: Option<String>,
    pub mdm_device_id: Option<String>,
}

/// How the store writes each identifier (the form `find_devices` matches).
impl EventIdentifiers {
    pub(super) fn normalized_udid(&self) -> Option<String> {
        self.udid.as_deref().and_then(normalize_udid)
    }
    pub(super) fn normalized_serial(&self) -> Option<String> {
        self.serial.as_deref().and_then(normalize_serial)
    }
    pub(super) fn normalized_imei(&self) -> Option<String> {
        self.imei.as_deref().and_then(normalize_imei)
    }
    pub(super) fn normalized_mac(&self) -> Option<String> {
        self.mac.as_deref().and_then(normalize_mac)
    }
    pub(super) fn normalized_mdm_device_id(&self) -> Option<&str> {
        self.mdm_device_id.as_deref().map(str::trim)
    }
}

/// An event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub tenant_id: String,
    /// The agent's id for the event: the idempotency key within the tenant.
    pub event_id: String,
    /// The stored device, when it is already known.
    pub device_id: Option<i64>,
    /// As the agent sent them; normalised by the store.
    pub identifiers: EventIdentifiers,
    pub threat_type: String,
    pub severity: String,
    pub threat_name: Option<String>,
    pub detected_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub network: Option<serde_json::Value>,
    pub details: Option<serde_json::Value>,
    /// `detected` or `resolved`.
    pub status: ThreatStatus,
    /// `""` for none.
    pub threat_key: String,
    /// Needs no further decision although it may have neither device nor
    /// action (`settled_at` = `received_at`): every event but one whose
    /// device could not be looked up yet.
    pub settled: bool,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub tenant_id: String,
    pub event_id: String,
    pub device_id: Option<i64>,
    pub identifiers: EventIdentifiers,
    pub threat_type: String,
    pub severity: String,
    pub threat_name: Option<String>,
    pub detected_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub network: Option<serde_json::Value>,
    pub details: Option<serde_json::Value>,
    pub status: ThreatStatus,
    /// `None` for no key.
    pub threat_key: Option<String>,
}

impl FromRow<'_, SqliteRow> for StoredEvent {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(StoredEvent {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            event_id: row.try_get("event_id")?,
            device_id: row.try_get("device_id")?,
            identifiers: EventIdentifiers {
                udid: row.try_get("udid")?,
                serial: row.try_get("serial")?,
                imei: row.try_get("imei")?,
                mac: row.try_get("mac")?,
                mdm_device_id: row.try_get("mdm_device_id")?,
            },
            threat_type: row.try_get("threat_type")?,
            severity: row.try_get("severity")?,
            threat_name: row.try_get("threat_name")?,
            detected_at: row.try_get("detected_at")?,
            received_at: row.try_get("received_at")?,
            network: json_column(row, "network")?,
            details: json_column(row, "details")?,
            status: match row.try_get::<&str, _>("status")? {
                "resolved" => ThreatStatus::Resolved,
                _ => ThreatStatus::Detected,
            },
            threat_key: Some(row.try_get::<String, _>("threat_key")?).filter(|k| !k.is_empty()),
        })
    }
}

/// Reads a JSON TEXT column (sqlx's `json` feature is not enabled).
pub(super) fn json_column(
    row: &SqliteRow,
    column: &str,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: column.to_string(),
            source: Box::new(e),
        })
}

pub(super) fn json_text(v: Option<&serde_json::Value>) -> Option<String> {
    // Serialising a `Value` cannot fail (its map keys are strings).
    v.map(|v| v.to_string())
}

impl WriteTx<'_> {
    /// Marks an event as needing no further decision (a `resolved` event
    /// whose device no MDM knows).
    pub async fn settle_event(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE threat_events SET settled_at = ? WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Links an event to its device, inside a transaction with its action.
    pub async fn set_event_device(&mut self, id: i64, device_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE threat_events SET device_id = ? WHERE id = ?")
            .bind(device_id)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Links an event to its device once an on-demand lookup found it.
    pub async fn set_event_device(&self, id: i64, device_id: i64) -> Result<(), StoreError> {
        let n = sqlx::query("UPDATE threat_events SET device_id = ? WHERE id = ?")
            .bind(device_id)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "event",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Events whose device was not known when they arrived and whose action
    /// is not decided yet (the on-demand lookup could not reach an MDM),
    /// oldest first.
    pub async fn undecided_events(&self, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM threat_events e
             WHERE e.device_id IS NULL AND e.settled_at IS NULL AND NOT EXISTS (SELECT 1 FROM actions a WHERE a.event_id = e.id)
             ORDER BY e.id LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One event by the store's id.
    pub async fn get_event(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM threat_events WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ingest::testutil::{event, record_event, record_events};
    use super::super::testutil::*;
    use super::super::{ActionRecordKind, ActionState, NewAction, Pii, SyncTrigger};
    use super::*;

    fn action(event_id: i64, device_id: Option<i64>, mdm_id: i64) -> NewAction {
        NewAction {
            signal_level: None,
            tenant_id: "acme".into(),
            event_id: Some(event_id),
            device_id,
            mdm_id: Some(mdm_id),
            kind: ActionRecordKind::Lock,
            parent_action_id: None,
            state: ActionState::Pending,
            reason: None,
            next_attempt_at: None,
        }
    }

    #[tokio::test]
    async fn undecided_events_are_those_without_device_and_action() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut e = NewEvent {
            tenant_id: "acme".into(),
            event_id: "u1".into(),
            device_id: None,
            identifiers: EventIdentifiers {
                serial: Some("x1".into()),
                ..Default::default()
            },
            threat_type: "app.malicious".into(),
            severity: "high".into(),
            threat_name: None,
            detected_at: chrono::Utc::now(),
            received_at: chrono::Utc::now(),
            network: None,
            details: None,
            status: crate::store::ThreatStatus::Detected,
            threat_key: String::new(),
            settled: false,
        };
        let first = record_event(&store, &e).await;
        e.event_id = "u2".into();
        let second = record_event(&store, &e).await;
        // A settled one (a resolution whose device no MDM knows) is not undecided.
        e.event_id = "u3".into();
        e.settled = true;
        record_event(&store, &e).await;
        let ids: Vec<i64> = store
            .undecided_events(10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![first, second]);
        store
            .insert_action(&crate::store::NewAction {
                signal_level: None,
                tenant_id: "acme".into(),
                event_id: Some(first),
                device_id: None,
                mdm_id: Some(mdm),
                kind: crate::store::ActionRecordKind::None,
                parent_action_id: None,
                state: crate::store::ActionState::Skipped,
                reason: Some("device unknown".into()),
                next_attempt_at: None,
            })
            .await
            .unwrap();
        let ids: Vec<i64> = store
            .undecided_events(10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![second], "an event with an action is decided");
    }

    #[tokio::test]
    async fn inserting_the_same_event_id_twice_is_one_event_reported_as_a_repeat() {
        let (_dir, store, _) = store_with_mdm().await;
        let first = record_event(&store, &event("e-1", None)).await;
        let mut repeat = event("e-1", None);
        repeat.severity = "low".into();
        let second = record_events(&store, &[&repeat]).await.unwrap();
        assert_eq!(second, [None], "a repeat");
        let stored = store.get_event(first).await.unwrap().unwrap();
        assert_eq!(stored.severity, "high", "a repeat changes nothing");
        assert_eq!(stored.identifiers.serial.as_deref(), Some("SN-1"));
        assert_eq!(stored.identifiers.mac.as_deref(), Some("aabbccddeeff"));
        assert_eq!(stored.network.unwrap()["ssid"], "CoffeeShop");
        assert_eq!(stored.detected_at, event("x", None).detected_at);
        assert_eq!(crate::store::testutil::event_count(&store).await, 1);
    }

    #[tokio::test]
    async fn the_same_event_id_in_two_tenants_is_two_events() {
        let (_dir, store, _) = store_with_mdm().await;
        store
            .sync_tenants(&[
                super::super::TenantRecord {
                    id: "acme".into(),
                    display_name: "Acme".into(),
                    mdms: vec![],
                },
                super::super::TenantRecord {
                    id: "beta".into(),
                    display_name: "Beta".into(),
                    mdms: vec![],
                },
            ])
            .await
            .unwrap();
        let mut other = event("e-1", None);
        other.tenant_id = "beta".into();
        let acme = record_events(&store, &[&event("e-1", None)]).await.unwrap();
        let beta = record_events(&store, &[&other]).await.unwrap();
        assert!(acme[0].is_some() && beta[0].is_some(), "both new");
    }

    #[tokio::test]
    async fn an_event_of_an_unknown_tenant_is_refused_by_the_foreign_key() {
        let (_dir, store, _) = store_with_mdm().await;
        let mut e = event("e-1", None);
        e.tenant_id = "nobody".into();
        let err = record_events(&store, &[&e]).await.unwrap_err();
        assert!(err.is_constraint_violation(), "{err:?}");
    }

    #[tokio::test]
    async fn an_event_and_its_action_commit_together_or_not_at_all() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut tx = store.begin().await.unwrap();
        let e = tx.insert_events(&[&event("e-1", None)]).await.unwrap().rows[0].unwrap();
        tx.insert_action(&action(e, None, mdm)).await.unwrap();
        drop(tx); // no commit: rolled back
        assert!(store.get_event(e).await.unwrap().is_none());
        assert!(store.get_action(1).await.unwrap().is_none());

        let mut tx = store.begin().await.unwrap();
        let e = tx.insert_events(&[&event("e-1", None)]).await.unwrap().rows[0];
        let e = e.expect("new: the first one was rolled back");
        let a = tx.insert_action(&action(e, None, mdm)).await.unwrap();
        tx.commit().await.unwrap();
        assert!(store.get_event(e).await.unwrap().is_some());
        assert_eq!(
            store.get_action(a).await.unwrap().unwrap().event_id,
            Some(e)
        );
    }

    #[tokio::test]
    async fn an_event_is_linked_to_its_device_once_the_device_is_known() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let e = record_event(&store, &event("e-1", None)).await;
        let found = store
            .store_found_device(mdm, &device("1"), Pii::Clear)
            .await
            .unwrap();
        store.set_event_device(e, found.device.id).await.unwrap();
        assert_eq!(
            store.get_event(e).await.unwrap().unwrap().device_id,
            Some(found.device.id)
        );
        let err = store
            .set_event_device(999, found.device.id)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }));
    }

    #[tokio::test]
    async fn removing_a_device_keeps_its_events_and_actions() {
        let (_dir, store, mdm) = store_with_device("1").await;
        let e = record_event(&store, &event("e-1", Some(1))).await;
        let a = store.insert_action(&action(e, Some(1), mdm)).await.unwrap();

        // Soft removal by a later sync: everything still points at the device.
        let later = store
            .start_sync_run(mdm, SyncTrigger::Scheduled)
            .await
            .unwrap();
        assert_eq!(store.remove_unseen(mdm, later).await.unwrap().devices, 1);
        assert_eq!(
            store.get_event(e).await.unwrap().unwrap().device_id,
            Some(1)
        );
        assert_eq!(
            store.get_action(a).await.unwrap().unwrap().device_id,
            Some(1)
        );

        // Even a real delete keeps them, with the identifiers on the event.
        sqlx::query("DELETE FROM devices WHERE id = 1")
            .execute(store.pool())
            .await
            .unwrap();
        let kept = store.get_event(e).await.unwrap().unwrap();
        assert_eq!(kept.device_id, None);
        assert_eq!(kept.identifiers.mdm_device_id.as_deref(), Some("1"));
        assert_eq!(kept.identifiers.serial.as_deref(), Some("SN-1"));
        let kept = store.get_action(a).await.unwrap().unwrap();
        assert_eq!(kept.device_id, None);
        assert_eq!(kept.event_id, Some(e));
        assert_eq!(store.action_audit(a).await.unwrap().len(), 1);
    }
}
