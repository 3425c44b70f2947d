//! The store's side of the ingest writer (`ingest::writer`): its own
//! connection, and the statements that write the events of many requests and
//! their actions with a fixed number of statements per group, whatever the
//! group's size.
//!
//! Each statement takes its rows as one JSON array parameter and reads them
//! with `json_each`, so the SQL text never changes with the number of rows:
//! sqlx prepares it once on the writer's connection and reuses it (a
//! multi-row `VALUES` list would be a new statement for every group size).
//! The rows are written as sqlx binds values (actions exactly as the one-row
//! `insert_action` writes them): normalised identifiers, JSON text, and
//! timestamps in sqlx's encoding (RFC 3339, see [`timestamp`]), so queries
//! that compare them as text keep working. This is the only path that
//! writes events.

use super::resolve::Resolution;
use super::{
    ActionId, ActionRecordKind, ActionState, DeviceId, NewAction, NewEvent, Store, StoreError,
    WriteHealth, WriteTx,
};
use chrono::{DateTime, SecondsFormat, Utc};
use mtd_adapter::DeviceIdentifier;
use serde_json::{json, Value};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use std::collections::HashMap;
use std::sync::Arc;

impl Store {
    /// A connection of its own on the same database, kept open: the ingest
    /// writer's and the dispatch writer's ([`WriterConn`]). Close it with
    /// [`WriterConn::close`] before the main store.
    pub async fn open_writer(&self) -> Result<WriterConn, StoreError> {
        Ok(WriterConn {
            conn: self.pool.connect_options().connect().await?,
            health: self.health.clone(),
        })
    }
}

/// A writer's own connection (see [`Store::open_writer`]), held rather than
/// pooled: one connection means its prepared statements stay cached and its
/// transactions never compete with each other for SQLite's write lock
/// (other writers still do, through the process's write gate and the busy
/// timeout).
///
/// Not a pool of one, which it was until 2026-12-04: sqlx pings a pooled
/// connection each time it goes back to the pool, one more round trip to
/// SQLite's thread, and the next statement waited for it. That was 2 of the
/// 10 round trips of an ingest group, about 250 µs of its 2 ms (issue 19).
#[derive(Debug)]
pub struct WriterConn {
    conn: SqliteConnection,
    health: Arc<WriteHealth>,
}

impl WriterConn {
    /// A write transaction on this connection, as [`Store::begin`] opens
    /// one on the pool: `BEGIN IMMEDIATE` behind the process's write gate.
    pub async fn begin(&mut self) -> Result<WriteTx<'_>, StoreError> {
        Ok(WriteTx {
            tx: self
                .health
                .begin(self.conn.begin_with("BEGIN IMMEDIATE"))
                .await?,
        })
    }

    /// For each `(tenant, identifiers)`, the device [`Store::find_devices`]
    /// would pick for the first identifier that finds one, or `None`: the
    /// devices of a whole group in one statement.
    pub async fn resolve_devices(
        &mut self,
        asks: &[(&str, &[DeviceIdentifier])],
    ) -> Result<Vec<Option<Resolution>>, StoreError> {
        super::resolve::resolve_devices_on(&mut self.conn, asks).await
    }

    /// [`Store::group_names_of`] on this connection.
    pub async fn group_names_of(
        &mut self,
        device_ids: &[i64],
    ) -> Result<HashMap<i64, Vec<String>>, StoreError> {
        super::admin::group_names_on(&mut self.conn, device_ids).await
    }

    /// The connection in `slot`, opened first if `slot` is empty (on first
    /// use, and after [`WriterConn::forget_if_broken`] emptied it).
    pub async fn in_slot<'c>(
        slot: &'c mut Option<WriterConn>,
        store: &Store,
    ) -> Result<&'c mut WriterConn, StoreError> {
        if slot.is_none() {
            *slot = Some(store.open_writer().await?);
        }
        Ok(slot.as_mut().expect("filled above"))
    }

    /// After an error that is not SQLite's own (I/O, a crashed worker), the
    /// connection may be unusable: it is closed, and the slot's next use
    /// opens a new one.
    pub async fn forget_if_broken(slot: &mut Option<WriterConn>, e: &StoreError) {
        let sqlite_said_so = matches!(e, StoreError::Database(sqlx::Error::Database(_)));
        if !sqlite_said_so {
            if let Some(conn) = slot.take() {
                conn.close().await;
            }
        }
    }

    /// Closes the connection (a transaction dropped without commit was
    /// rolled back before: the connection runs its commands in order).
    pub async fn close(self) {
        if let Err(e) = self.conn.close().await {
            tracing::debug!(error = %e, "Closing a writer's connection failed");
        }
    }
}

/// A pool of exactly one connection, kept open, for a sync's writer (its
/// transactions span many pages, so the ping sqlx sends as the connection
/// goes back to the pool comes once per commit, not per statement).
pub(super) async fn one_connection(
    options: sqlx::sqlite::SqliteConnectOptions,
) -> Result<sqlx::SqlitePool, StoreError> {
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        // The connection lives as long as the writer: its statement cache
        // is the point.
        .idle_timeout(None)
        .max_lifetime(None)
        // A ping before every use would be one more round trip; a dead
        // connection shows as an error of the next statement.
        .test_before_acquire(false)
        .connect_with(options)
        .await?)
}

/// A timestamp as sqlx encodes `DateTime<Utc>` for SQLite (its `Encode`
/// impl calls exactly this), for rows passed as JSON.
pub(super) fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// What [`WriteTx::insert_events`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertedEvents {
    /// For each event, in order: the store's id when it was recorded now,
    /// `None` for a repeat.
    pub rows: Vec<Option<i64>>,
    /// The id SQLite gives the next action row (`INTEGER PRIMARY KEY`
    /// without AUTOINCREMENT: one more than the largest), when any event was
    /// recorded (only new events get actions). It stays right while this
    /// transaction holds the write lock, so a group can name its actions (a
    /// cool-down reason cites the action it repeats) before writing them.
    pub next_action_id: Option<i64>,
}

impl WriteTx<'_> {
    /// Records events in order, each unless its tenant already has its
    /// `event_id` (stored before, or earlier in `events`).
    pub async fn insert_events(
        &mut self,
        events: &[&NewEvent],
    ) -> Result<InsertedEvents, StoreError> {
        if events.is_empty() {
            return Ok(InsertedEvents::default());
        }
        let rows: Vec<Value> = events
            .iter()
            .map(|e| {
                let ids = &e.identifiers;
                json!([
                    e.tenant_id,
                    e.event_id,
                    e.device_id,
                    ids.normalized_udid(),
                    ids.normalized_serial(),
                    ids.normalized_imei(),
                    ids.normalized_mac(),
                    ids.normalized_mdm_device_id(),
                    e.threat_type,
                    e.severity,
                    e.threat_name,
                    timestamp(&e.detected_at),
                    timestamp(&e.received_at),
                    super::events::json_text(e.network.as_ref()),
                    super::events::json_text(e.details.as_ref()),
                    e.status.as_str(),
                    e.threat_key,
                    e.settled.then(|| timestamp(&e.received_at)),
                ])
            })
            .collect();
        // `WHERE true`: without it SQLite would read `ON CONFLICT` as a join
        // constraint of the FROM clause. Rows go in in array order, so of two
        // rows with the same key the first is the one recorded.
        // The last column is the next action id (see `InsertedEvents`), read
        // here to save a round trip; this statement does not change `actions`.
        let inserted: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "INSERT INTO threat_events (tenant_id, event_id, device_id, udid, serial, imei, mac,
                 mdm_device_id, threat_type, severity, threat_name, detected_at, received_at,
                 network, details, status, threat_key, settled_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                 value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9,
                 value ->> 10, value ->> 11, value ->> 12, value ->> 13, value ->> 14,
                 value ->> 15, value ->> 16, value ->> 17
             FROM json_each(?1) WHERE true ORDER BY key
             ON CONFLICT (tenant_id, event_id) DO NOTHING
             RETURNING id, tenant_id, event_id, (SELECT COALESCE(MAX(id), 0) + 1 FROM actions)",
        )
        .bind(Value::Array(rows).to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        let next_action_id = inserted.first().map(|row| row.3);
        let mut new: HashMap<(String, String), i64> = inserted
            .into_iter()
            .map(|(id, tenant, event, _)| ((tenant, event), id))
            .collect();
        let rows = events
            .iter()
            // `remove`: a later repeat of the same key inside `events` is a repeat.
            .map(|e| new.remove(&(e.tenant_id.clone(), e.event_id.clone())))
            .collect();
        Ok(InsertedEvents {
            rows,
            next_action_id,
        })
    }

    /// [`WriteTx::recent_action`] for many `(device, kind, since)` at once:
    /// for each, in order, the latest action of that kind for the device that
    /// is still waiting (pending, held, failed) or was sent at or after `since`.
    pub async fn recent_actions(
        &mut self,
        keys: &[(DeviceId, ActionRecordKind, DateTime<Utc>)],
    ) -> Result<Vec<Option<(ActionId, ActionState)>>, StoreError> {
        let mut out = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(out);
        }
        let rows: Vec<Value> = keys
            .iter()
            .map(|(device, kind, since)| json!([device, kind, timestamp(since)]))
            .collect();
        // The same condition as `recent_action`, per key.
        let found: Vec<(i64, ActionId, ActionState)> = sqlx::query_as(
            "SELECT k.key, a.id, a.state FROM json_each(?1) AS k
             JOIN actions AS a ON a.id = (
                 SELECT id FROM actions
                 WHERE device_id = k.value ->> 0 AND kind = k.value ->> 1
                   AND (state IN ('pending', 'held', 'failed')
                        OR (state = 'sent' AND sent_at >= k.value ->> 2))
                 ORDER BY id DESC LIMIT 1)",
        )
        .bind(Value::Array(rows).to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        for (key, id, state) in found {
            if let Some(slot) = usize::try_from(key).ok().and_then(|k| out.get_mut(k)) {
                *slot = Some((id, state));
            }
        }
        Ok(out)
    }

    /// Records actions with the ids `first_id`, `first_id + 1`, … (from
    /// `InsertedEvents::next_action_id`) and their first audit rows, as
    /// [`WriteTx::insert_action`] does one by one, with `now` as their time.
    pub async fn insert_actions_numbered(
        &mut self,
        first_id: i64,
        actions: &[NewAction],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if actions.is_empty() {
            return Ok(());
        }
        let now_text = timestamp(&now);
        let mut rows = Vec::with_capacity(actions.len());
        let mut audits = Vec::with_capacity(actions.len());
        for (id, a) in (first_id..).zip(actions) {
            // Only rows the dispatcher will pick up carry a due time.
            let due = match a.state {
                ActionState::Pending | ActionState::Failed => {
                    Some(a.next_attempt_at.unwrap_or(now))
                }
                _ => a.next_attempt_at,
            };
            rows.push(json!([
                id,
                a.tenant_id,
                a.event_id,
                a.device_id,
                a.mdm_id,
                a.kind,
                a.parent_action_id,
                a.state.as_str(),
                a.reason,
                due.as_ref().map(timestamp),
                a.signal_level.map(super::RiskLevel::as_str),
            ]));
            audits.push(json!([id, a.state.as_str(), a.reason]));
        }
        // Both statements in one round trip (sqlx runs every statement of a
        // query; `?N` parameters are bound by number in each).
        let written = sqlx::query(
            "INSERT INTO actions (id, tenant_id, event_id, device_id, mdm_id, kind,
                 parent_action_id, state, reason, next_attempt_at, created_at, updated_at,
                 signal_level)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                 value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, ?2, ?2,
                 value ->> 10
             FROM json_each(?1) ORDER BY key;
             INSERT INTO action_audit (action_id, at, from_state, to_state, note)
             SELECT value ->> 0, ?2, NULL, value ->> 1, value ->> 2
             FROM json_each(?3) ORDER BY key",
        )
        .bind(Value::Array(rows).to_string())
        .bind(&now_text)
        .bind(Value::Array(audits).to_string())
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        if written != 2 * actions.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "{written} rows written for {} actions and their audit rows",
                actions.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod testutil {
    //! Events for the store's tests, written the one way the daemon writes
    //! them: a group in one transaction, as the ingest writer does.

    use super::super::{EventIdentifiers, NewEvent, Store, StoreError};
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    /// An event with every identifier, spaced and cased as agents send them.
    pub fn event(event_id: &str, device_id: Option<i64>) -> NewEvent {
        NewEvent {
            tenant_id: "acme".into(),
            event_id: event_id.into(),
            device_id,
            identifiers: EventIdentifiers {
                udid: Some(" abc-def ".into()),
                serial: Some(" sn-1 ".into()),
                imei: Some("35-209900-176148-1".into()),
                mac: Some("AA:BB:CC:DD:EE:FF".into()),
                mdm_device_id: Some(" 1 ".into()),
            },
            threat_type: "network.arp_mitm".into(),
            severity: "high".into(),
            threat_name: Some("ARP MITM".into()),
            detected_at: Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap(),
            received_at: Utc.timestamp_nanos(1_795_000_000_123_456_789),
            network: Some(json!({"ssid": "CoffeeShop", "n": 1.5, "x": [1, null]})),
            details: None,
            status: crate::store::ThreatStatus::Detected,
            threat_key: String::new(),
            settled: true,
        }
    }

    /// Records `events` as one group; for each, its id, or `None` for a repeat.
    pub async fn record_events(
        store: &Store,
        events: &[&NewEvent],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let mut tx = store.begin().await?;
        let inserted = tx.insert_events(events).await?;
        tx.commit().await?;
        Ok(inserted.rows)
    }

    /// Records one new event; returns its id.
    pub async fn record_event(store: &Store, event: &NewEvent) -> i64 {
        record_events(store, &[event])
            .await
            .expect("the event is written")[0]
            .expect("a new event")
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Pii, SyncTrigger};
    use super::testutil::{event, record_event};
    use super::*;
    use chrono::TimeZone;

    fn action(
        event_id: Option<i64>,
        device: Option<i64>,
        kind: ActionRecordKind,
        state: ActionState,
    ) -> NewAction {
        NewAction {
            signal_level: None,
            tenant_id: "acme".into(),
            event_id,
            device_id: device,
            mdm_id: None,
            kind,
            parent_action_id: None,
            state,
            reason: (state != ActionState::Pending).then(|| format!("because {state}")),
            next_attempt_at: None,
        }
    }

    /// Every column of a row but `id` and `event_id`, as `value:type`.
    async fn row_text(store: &Store, table: &str, id: i64) -> Vec<Option<String>> {
        let columns: Vec<(String,)> = sqlx::query_as(&format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        ))
        .fetch_all(store.pool())
        .await
        .unwrap();
        let mut out = Vec::new();
        for (c,) in columns.iter().filter(|(c,)| c != "id" && c != "event_id") {
            let (v,): (Option<String>,) = sqlx::query_as(&format!(
                "SELECT CAST({c} AS TEXT) || ':' || typeof({c}) FROM {table} WHERE id = ?"
            ))
            .bind(id)
            .fetch_one(store.pool())
            .await
            .unwrap();
            out.push(v);
        }
        out
    }

    #[tokio::test]
    async fn a_timestamp_is_written_as_sqlx_writes_it() {
        let (_dir, store) = temp_store().await;
        for at in [
            Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap(),
            Utc::now(),
        ] {
            let (bound,): (String,) = sqlx::query_as("SELECT ?")
                .bind(at)
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(timestamp(&at), bound);
        }
    }

    /// Stored as sqlx binds the values (`timestamp` is checked against sqlx
    /// above), so queries that compare them with bound values keep working.
    #[tokio::test]
    async fn an_event_is_stored_with_normalised_identifiers_json_text_and_sqlx_timestamps() {
        let (_dir, store, _) = store_with_device("1").await;
        let mut writer = store.open_writer().await.unwrap();
        let mut tx = writer.begin().await.unwrap();
        let group = event("group", Some(1));
        let ids = tx.insert_events(&[&group]).await.unwrap().rows;
        tx.commit().await.unwrap();
        let id = ids[0].expect("new");
        let text = |v: &str| Some(format!("{v}:text"));
        assert_eq!(
            row_text(&store, "threat_events", id).await,
            [
                text("acme"),
                Some("1:integer".into()),
                text("ABC-DEF"),
                text("SN-1"),
                text("352099001761481"),
                text("aabbccddeeff"),
                text("1"),
                text("network.arp_mitm"),
                text("high"),
                text("ARP MITM"),
                text(&timestamp(&group.detected_at)),
                text(&timestamp(&group.received_at)),
                text(r#"{"n":1.5,"ssid":"CoffeeShop","x":[1,null]}"#),
                None,
                text("detected"),
                text(""),
                text(&timestamp(&group.received_at)),
            ],
            "every column but the two ids, details NULL"
        );
        assert_eq!(timestamp(&group.detected_at), "2026-11-22T10:00:00+00:00");
        assert_eq!(
            timestamp(&group.received_at),
            "2026-11-18T11:06:40.123456789+00:00"
        );
        let stored = store.get_event(id).await.unwrap().unwrap();
        assert_eq!(stored.identifiers.serial.as_deref(), Some("SN-1"));
        assert_eq!(stored.identifiers.mdm_device_id.as_deref(), Some("1"));
        assert_eq!(stored.network, group.network);
        assert_eq!(stored.received_at, group.received_at);
        writer.close().await;
    }

    #[tokio::test]
    async fn a_group_reports_repeats_of_stored_events_and_of_earlier_events_in_the_group() {
        let (_dir, store, _) = store_with_mdm().await;
        record_event(&store, &event("old", None)).await;
        let mut writer = store.open_writer().await.unwrap();
        let mut tx = writer.begin().await.unwrap();
        let mut low = event("b", None);
        low.severity = "low".into();
        let ids = tx
            .insert_events(&[
                &event("a", None),
                &event("old", None),
                &event("b", None),
                &event("a", None),
                &low,
            ])
            .await
            .unwrap()
            .rows;
        tx.commit().await.unwrap();
        let new: Vec<bool> = ids.iter().map(Option::is_some).collect();
        assert_eq!(new, [true, false, true, false, false]);
        assert!(ids[0] < ids[2], "in order");
        let b = store.get_event(ids[2].unwrap()).await.unwrap().unwrap();
        assert_eq!(b.severity, "high", "the first of a key is the one recorded");
        assert_eq!(crate::store::testutil::event_count(&store).await, 3);
        writer.close().await;
    }

    /// The writers reuse their connection after a failed group: what the
    /// dropped transaction wrote is gone, the gate is open again, and the
    /// next transaction on the connection begins normally.
    #[tokio::test]
    async fn a_transaction_dropped_on_a_writers_connection_rolls_back_before_the_next_one() {
        let (_dir, store, _) = store_with_mdm().await;
        let mut writer = store.open_writer().await.unwrap();
        let mut tx = writer.begin().await.unwrap();
        tx.insert_events(&[&event("dropped", None)]).await.unwrap();
        drop(tx);
        // Another writer of the process gets the gate and SQLite's lock.
        store.begin().await.unwrap().rollback().await.unwrap();
        let mut tx = writer.begin().await.unwrap();
        let rows = tx.insert_events(&[&event("dropped", None)]).await.unwrap();
        assert!(
            rows.rows[0].is_some(),
            "new again: the first was rolled back"
        );
        tx.commit().await.unwrap();
        assert_eq!(crate::store::testutil::event_count(&store).await, 1);
        writer.close().await;
    }

    #[tokio::test]
    async fn numbered_actions_get_the_ids_sqlite_would_give_and_the_same_rows_and_audit() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let e = record_event(&store, &event("e", None)).await;
        let mut single = action(Some(e), None, ActionRecordKind::Lock, ActionState::Pending);
        single.mdm_id = Some(mdm);
        let first = store.insert_action(&single).await.unwrap();
        let mut writer = store.open_writer().await.unwrap();
        let mut tx = writer.begin().await.unwrap();
        let inserted = tx.insert_events(&[&event("f", None)]).await.unwrap();
        let next = inserted.next_action_id.unwrap();
        assert_eq!(next, first + 1);
        let repeat = tx.insert_events(&[&event("f", None)]).await.unwrap();
        assert_eq!(repeat.next_action_id, None, "nothing new, no actions");
        let skipped = action(Some(e), None, ActionRecordKind::None, ActionState::Skipped);
        tx.insert_actions_numbered(next, &[single.clone(), skipped], Utc::now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let a = store.get_action(first).await.unwrap().unwrap();
        let b = store.get_action(next).await.unwrap().unwrap();
        assert_eq!(
            (a.kind, a.state, a.event_id, a.mdm_id, a.reason, a.attempts),
            (b.kind, b.state, b.event_id, b.mdm_id, b.reason, b.attempts)
        );
        assert!(b.next_attempt_at.is_some(), "a pending row is due");
        assert_eq!(b.created_at, b.updated_at);
        let c = store.get_action(next + 1).await.unwrap().unwrap();
        assert_eq!((c.state, c.next_attempt_at), (ActionState::Skipped, None));
        let audit = store.action_audit(next + 1).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(
            (audit[0].from_state, audit[0].to_state),
            (None, ActionState::Skipped)
        );
        assert_eq!(audit[0].note.as_deref(), Some("because skipped"));
        assert_eq!(audit[0].at, c.created_at);
        // The next single insert continues after the numbered ones.
        assert_eq!(store.insert_action(&single).await.unwrap(), next + 2);
        writer.close().await;
    }

    #[tokio::test]
    async fn recent_actions_answer_per_key_as_recent_action_does() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let run = store
            .start_sync_run(mdm, SyncTrigger::Initial)
            .await
            .unwrap();
        store
            .upsert_devices(run, mdm, &[device("1"), device("2")], Pii::Clear)
            .await
            .unwrap();
        let lock = |device, state| action(None, Some(device), ActionRecordKind::Lock, state);
        let skipped = store
            .insert_action(&lock(1, ActionState::Skipped))
            .await
            .unwrap();
        let pending = store
            .insert_action(&lock(1, ActionState::Pending))
            .await
            .unwrap();
        assert!(skipped < pending);
        store
            .insert_action(&lock(2, ActionState::Skipped))
            .await
            .unwrap();
        let now = Utc::now();
        let keys = [
            (DeviceId(1), ActionRecordKind::Lock, now),
            (DeviceId(2), ActionRecordKind::Lock, now),
            (DeviceId(1), ActionRecordKind::Wipe, now),
        ];
        let mut tx = store.begin().await.unwrap();
        let many = tx.recent_actions(&keys).await.unwrap();
        let mut one_by_one = Vec::new();
        for (d, k, since) in keys {
            one_by_one.push(tx.recent_action(d, k, since).await.unwrap());
        }
        assert_eq!(many, one_by_one);
        assert_eq!(
            many,
            [Some((ActionId(pending), ActionState::Pending)), None, None]
        );
    }
}
