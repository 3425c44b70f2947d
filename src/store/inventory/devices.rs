//! Devices and their group memberships: the write path of a batch of
//! listed devices (and of one device an on-demand lookup found), and the
//! reads by identifier.

use super::collisions::mark_collisions_bulk;
use super::groups::resolve_groups;
use super::users::{upsert_users_bulk, user_values, UserSource};
use super::{json_rows, scope, Change, Pii, RowState, Scope, UpsertCounts};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use mtd_adapter::{
    normalize_imei, normalize_mac, normalize_serial, normalize_udid, Device, DeviceIdentifier,
    Group, Identifiers, Ownership, Platform,
};
use serde::Serialize;
use sqlx::{FromRow, SqliteConnection};
use std::collections::HashMap;

/// A device as stored, with normalised identifiers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredDevice {
    pub id: i64,
    pub tenant_id: String,
    pub mdm_id: i64,
    pub mdm_device_id: String,
    pub identifiers: Identifiers,
    pub name: Option<String>,
    pub platform: Platform,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub ownership: Ownership,
    pub user_id: Option<i64>,
    pub last_checkin_at: Option<DateTime<Utc>>,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
    /// Another live device of the tenant shares a udid, serial, imei or mac.
    pub collision: bool,
}

/// The result of storing one device found by an on-demand lookup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceUpsert {
    pub device: StoredDevice,
    /// True when the device was not in the store (or had been removed).
    pub added: bool,
}

#[derive(FromRow)]
pub(in crate::store) struct DeviceRow {
    pub(in crate::store) id: i64,
    tenant_id: String,
    mdm_id: i64,
    mdm_device_id: String,
    udid: Option<String>,
    serial: Option<String>,
    imei: Option<String>,
    mac: Option<String>,
    name: Option<String>,
    platform: String,
    model: Option<String>,
    os_version: Option<String>,
    ownership: String,
    user_id: Option<i64>,
    last_checkin_at: Option<DateTime<Utc>>,
    first_seen_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    removed_at: Option<DateTime<Utc>>,
    collision: bool,
}

const DEVICE_COLUMNS: &str = "id, tenant_id, mdm_id, mdm_device_id, udid, serial, imei, mac, \
     name, platform, model, os_version, ownership, user_id, last_checkin_at, first_seen_at, \
     updated_at, last_seen_at, removed_at, collision";

impl From<DeviceRow> for StoredDevice {
    fn from(r: DeviceRow) -> Self {
        StoredDevice {
            id: r.id,
            tenant_id: r.tenant_id,
            mdm_id: r.mdm_id,
            mdm_device_id: r.mdm_device_id,
            identifiers: Identifiers {
                udid: r.udid,
                serial: r.serial,
                imei: r.imei,
                mac: r.mac,
            },
            name: r.name,
            // Stored from `as_str`, so this round-trips; anything else is Other.
            platform: Platform::from_vendor(&r.platform),
            model: r.model,
            os_version: r.os_version,
            // Lenient on purpose: an unreadable value is never "corporate".
            ownership: Ownership::parse_lenient(&r.ownership),
            user_id: r.user_id,
            last_checkin_at: r.last_checkin_at,
            first_seen_at: r.first_seen_at,
            updated_at: r.updated_at,
            last_seen_at: r.last_seen_at,
            removed_at: r.removed_at,
            collision: r.collision,
        }
    }
}

// The statements of the bulk writes of devices and memberships, one bound JSON array each
// (see [`json_rows`]); every one is checked for its query plan by a test.
pub(super) const DEVICES_STORED: &str =
    "SELECT d.id, d.mdm_device_id, d.removed_at IS NOT NULL AS removed, d.collision,
     d.udid, d.serial, d.imei, d.mac, d.name, d.platform, d.model, d.os_version,
     d.ownership, d.user_id,
     (SELECT group_concat(group_id) FROM device_groups WHERE device_id = d.id)
     AS group_ids
     FROM json_each(?2) AS j CROSS JOIN devices AS d
     ON d.mdm_id = ?1 AND d.mdm_device_id = j.value";

pub(super) const DEVICES_INSERT: &str =
    "INSERT INTO devices (tenant_id, mdm_id, mdm_device_id, udid, serial, imei, mac,
     name, platform, model, os_version, ownership, user_id, last_checkin_at,
     first_seen_at, updated_at, last_seen_at, last_sync_run_id)
     SELECT ?1, ?2, j.value ->> 0, j.value ->> '$[1][0]', j.value ->> '$[1][1]',
     j.value ->> '$[1][2]', j.value ->> '$[1][3]', j.value ->> 2, j.value ->> 3,
     j.value ->> 4, j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8,
     ?3, ?3, ?3, ?4
     FROM json_each(?5) AS j WHERE true
     RETURNING id, mdm_device_id";

pub(super) const DEVICES_UPDATE: &str =
    "UPDATE devices SET udid = j.value ->> '$[1][0]', serial = j.value ->> '$[1][1]',
     imei = j.value ->> '$[1][2]', mac = j.value ->> '$[1][3]',
     name = j.value ->> 2, platform = j.value ->> 3, model = j.value ->> 4,
     os_version = j.value ->> 5, ownership = j.value ->> 6, user_id = j.value ->> 7,
     last_checkin_at = COALESCE(j.value ->> 8, last_checkin_at),
     updated_at = ?1, last_seen_at = ?1,
     last_sync_run_id = COALESCE(?2, last_sync_run_id), removed_at = NULL
     FROM json_each(?3) AS j WHERE devices.id = j.value ->> 0";

pub(super) const DEVICES_SEEN: &str =
    "UPDATE devices SET last_checkin_at = COALESCE(j.value ->> 1, last_checkin_at),
     last_seen_at = ?1, last_sync_run_id = COALESCE(?2, last_sync_run_id)
     FROM json_each(?3) AS j WHERE devices.id = j.value ->> 0";

pub(super) const MEMBERSHIPS_DELETE: &str =
    "DELETE FROM device_groups WHERE device_id IN (SELECT value FROM json_each(?1))";

pub(super) const MEMBERSHIPS_INSERT: &str = "INSERT INTO device_groups (device_id, group_id)
     SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?1) AS j";

/// The device's identifiers in normal form (idempotent on normalised input,
/// so the store compares like with like whatever the adapter did).
fn normalised(ids: &Identifiers) -> Identifiers {
    Identifiers {
        udid: ids.udid.as_deref().and_then(normalize_udid),
        serial: ids.serial.as_deref().and_then(normalize_serial),
        imei: ids.imei.as_deref().and_then(normalize_imei),
        mac: ids.mac.as_deref().and_then(normalize_mac),
    }
}

#[derive(FromRow, PartialEq)]
pub(super) struct DeviceValues {
    pub(super) udid: Option<String>,
    pub(super) serial: Option<String>,
    pub(super) imei: Option<String>,
    pub(super) mac: Option<String>,
    name: Option<String>,
    platform: String,
    model: Option<String>,
    os_version: Option<String>,
    ownership: String,
    user_id: Option<i64>,
}

/// What a device's "changed?" compares: its stored values and its set of
/// groups (sorted ids).
#[derive(PartialEq)]
pub(super) struct DeviceState {
    pub(super) values: DeviceValues,
    groups: Vec<i64>,
}

/// One device of a batch on its way through [`upsert_devices_bulk`].
pub(super) struct DeviceSlot {
    pub(super) row: RowState<DeviceState>,
    /// The memberships stored before the batch (`None`: a new device).
    stored_groups: Option<Vec<i64>>,
    /// The latest check-in time the batch listed (a listing without one keeps the stored one).
    checkin: Option<DateTime<Utc>>,
    /// Live (stored and not removed) before the batch.
    pub(super) live_before: bool,
    /// Flagged as a collision before the batch.
    pub(super) collision_before: bool,
    /// Position of its first listing in the batch.
    pub(super) pos: usize,
}

/// A timestamp as sqlx's chrono encoding writes it (see the header of
/// `0001_init.sql`), for values passed inside a JSON parameter.
fn sql_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Writes a batch of devices with their users and group memberships in a
/// fixed number of statements, whatever the batch size: users and groups
/// first (see [`upsert_users_bulk`], [`resolve_groups`]), one `SELECT` of
/// the stored devices with their memberships, then one multi-row statement
/// each for the new devices, the changed ones, the unchanged ones (stamped
/// seen, check-in time written), the memberships that changed, and the
/// collision check. Rows are compared in memory, in batch order, exactly as
/// the one-device-at-a-time writes did, so the counts do not change.
///
/// Returns the id and the change of every listed device, in input order,
/// and the batch's counts.
async fn upsert_devices_bulk(
    conn: &mut SqliteConnection,
    s: &Scope,
    devices: &[Device],
    pii: Pii<'_>,
) -> Result<(Vec<(i64, Change)>, UpsertCounts), StoreError> {
    let mut counts = UpsertCounts::default();
    if devices.is_empty() {
        return Ok((Vec::new(), counts));
    }

    // Users embedded in the devices: written first, their ids linked below.
    let mut user_keys: Vec<Option<String>> = Vec::with_capacity(devices.len());
    let mut users = Vec::new();
    for d in devices {
        user_keys.push(d.user.as_ref().map(|u| {
            let (key, values) = user_values(u, pii);
            users.push((key.clone(), values));
            key
        }));
    }
    let (user_ids, _) = upsert_users_bulk(conn, s, users, UserSource::Embedded).await?;

    let mut group_keys: Vec<&str> = devices
        .iter()
        .flat_map(|d| d.groups.iter().map(String::as_str))
        .collect();
    group_keys.sort_unstable();
    group_keys.dedup();
    let group_ids = resolve_groups(conn, s, &group_keys).await?;

    let listed: Vec<(&str, DeviceState)> = devices
        .iter()
        .zip(&user_keys)
        .map(|(d, user)| {
            let ids = normalised(&d.identifiers);
            let mut groups: Vec<i64> = d.groups.iter().map(|g| group_ids[g.as_str()]).collect();
            groups.sort_unstable();
            groups.dedup();
            let values = DeviceValues {
                udid: ids.udid,
                serial: ids.serial,
                imei: ids.imei,
                mac: ids.mac,
                name: d.name.clone(),
                platform: d.platform.as_str().to_string(),
                model: d.model.clone(),
                os_version: d.os_version.clone(),
                ownership: d.ownership.as_str().to_string(),
                user_id: user.as_ref().and_then(|k| user_ids.get(k).copied()),
            };
            (d.mdm_device_id.as_str(), DeviceState { values, groups })
        })
        .collect();

    let mut keys: Vec<&str> = listed.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    #[derive(FromRow)]
    struct Existing {
        id: i64,
        mdm_device_id: String,
        removed: bool,
        collision: bool,
        #[sqlx(flatten)]
        values: DeviceValues,
        group_ids: Option<String>,
    }
    // CROSS JOIN: json_each outside, one probe of UNIQUE (mdm_id,
    // mdm_device_id) per key rather than a scan of the MDM's devices.
    let existing: Vec<Existing> = sqlx::query_as(DEVICES_STORED)
        .bind(s.mdm_id)
        .bind(json_rows(&keys))
        .fetch_all(&mut *conn)
        .await?;
    let mut slots: HashMap<&str, DeviceSlot> = HashMap::with_capacity(keys.len());
    let by_key: HashMap<&str, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    for e in existing {
        let mut groups: Vec<i64> = e
            .group_ids
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter_map(|g| g.parse().ok())
            .collect();
        groups.sort_unstable();
        let Some(&k) = by_key.get(e.mdm_device_id.as_str()) else {
            continue;
        };
        slots.insert(
            keys[k],
            DeviceSlot {
                row: RowState {
                    id: Some(e.id),
                    removed: e.removed,
                    values: DeviceState {
                        values: e.values,
                        groups: groups.clone(),
                    },
                    changed: false,
                    new: false,
                },
                stored_groups: Some(groups),
                checkin: None,
                live_before: !e.removed,
                collision_before: e.collision,
                pos: usize::MAX,
            },
        );
    }

    // In batch order: what each listing does (a new-check-in time alone is
    // written but not counted: every active device checks in between two
    // syncs, and "updated" is meant to show inventory changes).
    let mut changes = Vec::with_capacity(listed.len());
    let mut new_keys = Vec::new();
    for (pos, ((key, state), d)) in listed.into_iter().zip(devices).enumerate() {
        let change = match slots.get_mut(key) {
            Some(slot) => {
                slot.pos = slot.pos.min(pos);
                slot.checkin = d.last_checkin_at.or(slot.checkin);
                slot.row.apply(state, false)
            }
            None => {
                new_keys.push(key);
                slots.insert(
                    key,
                    DeviceSlot {
                        row: RowState {
                            id: None,
                            removed: false,
                            values: state,
                            changed: true,
                            new: true,
                        },
                        stored_groups: None,
                        checkin: d.last_checkin_at,
                        live_before: false,
                        collision_before: false,
                        pos,
                    },
                );
                Change::Added
            }
        };
        counts.count(change);
        changes.push((key, change));
    }

    if !new_keys.is_empty() {
        let rows: Vec<_> = new_keys
            .iter()
            .map(|k| {
                let slot = &slots[k];
                let v = &slot.row.values.values;
                (
                    k,
                    (&v.udid, &v.serial, &v.imei, &v.mac),
                    &v.name,
                    &v.platform,
                    &v.model,
                    &v.os_version,
                    &v.ownership,
                    v.user_id,
                    slot.checkin.as_ref().map(sql_time),
                )
            })
            .collect();
        let inserted: Vec<(i64, String)> = sqlx::query_as(DEVICES_INSERT)
            .bind(&s.tenant_id)
            .bind(s.mdm_id)
            .bind(s.now)
            .bind(s.run_id)
            .bind(json_rows(&rows))
            .fetch_all(&mut *conn)
            .await?;
        for (id, key) in inserted {
            if let Some(slot) = slots.get_mut(key.as_str()) {
                slot.row.id = Some(id);
            }
        }
    }

    let mut changed = Vec::new();
    let mut unchanged = Vec::new();
    let mut memberships_replaced = Vec::new();
    let mut memberships = Vec::new();
    for slot in slots.values() {
        let Some(id) = slot.row.id else {
            // Not reachable: every new device got its id from the INSERT.
            continue;
        };
        let checkin = slot.checkin.as_ref().map(sql_time);
        if slot.row.new {
            // Inserted with its final values above.
        } else if slot.row.changed {
            let v = &slot.row.values.values;
            changed.push((
                id,
                (&v.udid, &v.serial, &v.imei, &v.mac),
                &v.name,
                &v.platform,
                &v.model,
                &v.os_version,
                &v.ownership,
                v.user_id,
                checkin,
            ));
        } else {
            unchanged.push((id, checkin));
        }
        let groups = &slot.row.values.groups;
        if slot.stored_groups.as_ref() != Some(groups) {
            if slot.stored_groups.as_ref().is_some_and(|g| !g.is_empty()) {
                memberships_replaced.push(id);
            }
            memberships.extend(groups.iter().map(|g| (id, *g)));
        }
    }
    if !changed.is_empty() {
        sqlx::query(DEVICES_UPDATE)
            .bind(s.now)
            .bind(s.run_id)
            .bind(json_rows(&changed))
            .execute(&mut *conn)
            .await?;
    }
    if !unchanged.is_empty() {
        // Only columns no index covers: the cheapest write there is.
        sqlx::query(DEVICES_SEEN)
            .bind(s.now)
            .bind(s.run_id)
            .bind(json_rows(&unchanged))
            .execute(&mut *conn)
            .await?;
    }
    if !memberships_replaced.is_empty() {
        sqlx::query(MEMBERSHIPS_DELETE)
            .bind(json_rows(&memberships_replaced))
            .execute(&mut *conn)
            .await?;
    }
    if !memberships.is_empty() {
        sqlx::query(MEMBERSHIPS_INSERT)
            .bind(json_rows(&memberships))
            .execute(&mut *conn)
            .await?;
    }
    counts.collisions = mark_collisions_bulk(conn, &s.tenant_id, &slots).await?;

    let out = changes
        .into_iter()
        .map(|(key, change)| (slots[key].row.id.unwrap_or_default(), change))
        .collect();
    Ok((out, counts))
}

impl Store {
    /// Writes a batch of listed devices in one transaction, tagged with the
    /// run: each device's embedded user is written and linked, its group
    /// memberships replaced by its `groups` (unknown groups are created with
    /// their key as name until the group listing names them). Counts are
    /// devices only.
    pub async fn upsert_devices(
        &self,
        run_id: i64,
        mdm_id: i64,
        devices: &[Device],
        pii: Pii<'_>,
    ) -> Result<UpsertCounts, StoreError> {
        let mut tx = self.begin_write().await?;
        let s = scope(&mut tx, mdm_id, Some(run_id)).await?;
        let (_, counts) = upsert_devices_bulk(&mut tx, &s, devices, pii).await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// Stores one device an on-demand lookup found, with its user and
    /// groups, outside any sync run (the device keeps its run tag, and its
    /// fresh `last_seen_at` protects it from the removal of a run already
    /// under way).
    pub async fn store_found_device(
        &self,
        mdm_id: i64,
        device: &Device,
        pii: Pii<'_>,
    ) -> Result<DeviceUpsert, StoreError> {
        let mut tx = self.begin_write().await?;
        let s = scope(&mut tx, mdm_id, None).await?;
        let (written, _) =
            upsert_devices_bulk(&mut tx, &s, std::slice::from_ref(device), pii).await?;
        let (id, change) = written[0];
        let row: DeviceRow = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DeviceUpsert {
            device: row.into(),
            added: change == Change::Added,
        })
    }

    /// The live devices of a tenant with this identifier (normalised here),
    /// the most recently checked-in first: with a collision, the first is
    /// the one to act on.
    pub async fn find_devices(
        &self,
        tenant_id: &str,
        identifier: &DeviceIdentifier,
    ) -> Result<Vec<StoredDevice>, StoreError> {
        let (condition, value) = match identifier {
            DeviceIdentifier::MdmDeviceId(v) => (
                // Through the integrations, so the UNIQUE (mdm_id, mdm_device_id) index serves.
                "+tenant_id = ?1 AND mdm_id IN (SELECT id FROM mdm_integrations WHERE tenant_id = ?1)
                 AND mdm_device_id = ?2",
                Some(v.trim().to_string()),
            ),
            DeviceIdentifier::Udid(v) => ("tenant_id = ?1 AND udid = ?2", normalize_udid(v)),
            DeviceIdentifier::Serial(v) => ("tenant_id = ?1 AND serial = ?2", normalize_serial(v)),
            DeviceIdentifier::Imei(v) => ("tenant_id = ?1 AND imei = ?2", normalize_imei(v)),
            DeviceIdentifier::Mac(v) => ("tenant_id = ?1 AND mac = ?2", normalize_mac(v)),
        };
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(Vec::new());
        };
        // `+removed_at`: keeps the planner on the identifier's index rather
        // than (tenant_id, removed_at), which would scan the tenant.
        let rows: Vec<DeviceRow> = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices
             WHERE {condition} AND +removed_at IS NULL
             ORDER BY last_checkin_at DESC NULLS LAST, id DESC"
        ))
        .bind(tenant_id)
        .bind(value)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(StoredDevice::from).collect())
    }

    /// One device by the store's id, removed or not.
    pub async fn get_device(&self, id: i64) -> Result<Option<StoredDevice>, StoreError> {
        let row: Option<DeviceRow> = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(StoredDevice::from))
    }

    /// The groups of a device as `(mdm_group_id, name)`, by name. The name
    /// admins see is the MDM's name, a space, and this name.
    pub async fn device_groups(&self, device_id: i64) -> Result<Vec<Group>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT g.mdm_group_id, g.name FROM device_groups dg
             JOIN groups g ON g.id = dg.group_id
             WHERE dg.device_id = ? ORDER BY g.name",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(mdm_group_id, name)| Group { mdm_group_id, name })
            .collect())
    }

    /// Live devices per tenant (tenants without any are absent).
    pub async fn live_devices_by_tenant(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT tenant_id, COUNT(*) FROM devices WHERE removed_at IS NULL GROUP BY tenant_id ORDER BY tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(t, n)| (t, n as u64)).collect())
    }

    /// The number of live devices of an MDM (the base of `max_removal_percent`).
    pub async fn live_device_count(&self, mdm_id: i64) -> Result<u64, StoreError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM devices WHERE mdm_id = ? AND removed_at IS NULL")
                .bind(mdm_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(n.try_into().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sync_runs::testutil::run;
    use crate::store::testutil::*;
    use crate::store::{RemovalCounts, RunCounts, SyncOutcome};
    use chrono::TimeZone;

    #[tokio::test]
    async fn one_batch_mixing_new_changed_unchanged_returning_and_repeated_devices_counts_each_exactly(
    ) {
        let (_dir, store, mdm) = store_with_mdm().await;
        let first = run(&store, mdm).await;
        let mut batch: Vec<Device> = (1..=4).map(|i| device(&i.to_string())).collect();
        batch[0].user = Some(user("u1"));
        batch[1].groups = vec!["g1".into()];
        let c = store
            .upsert_devices(first, mdm, &batch, Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (4, 0));
        store
            .finish_sync_run(first, SyncOutcome::Succeeded, RunCounts::default(), None)
            .await
            .unwrap();
        // Device 4 goes away.
        let second = run(&store, mdm).await;
        store
            .upsert_devices(second, mdm, &batch[..3], Pii::Clear)
            .await
            .unwrap();
        assert_eq!(store.remove_unseen(mdm, second).await.unwrap().devices, 1);

        // 1 unchanged, 2 with a new group set, 3 renamed, 4 back, 5 new and
        // listed twice (the second time with another model), 6 new.
        let third = run(&store, mdm).await;
        let mut again = batch.clone();
        again[1].groups = vec!["g1".into(), "g2".into()];
        again[2].name = Some("Renamed".into());
        let mut twice = device("5");
        again.push(twice.clone());
        twice.model = Some("iPhone 16".into());
        again.push(twice);
        again.push(device("6"));
        let c = store
            .upsert_devices(third, mdm, &again, Pii::Clear)
            .await
            .unwrap();
        assert_eq!(
            (c.added, c.updated),
            (3, 3),
            "added: 4 (back), 5, 6; updated: 2, 3, and 5's second listing"
        );
        let five = &store
            .find_devices("acme", &DeviceIdentifier::MdmDeviceId("5".into()))
            .await
            .unwrap()[0];
        assert_eq!(
            five.model.as_deref(),
            Some("iPhone 16"),
            "the last listing wins"
        );
        let two = &store
            .find_devices("acme", &DeviceIdentifier::MdmDeviceId("2".into()))
            .await
            .unwrap()[0];
        assert_eq!(store.device_groups(two.id).await.unwrap().len(), 2);
        assert_eq!(store.live_device_count(mdm).await.unwrap(), 6);
        assert_eq!(
            store.unseen_counts(mdm, third).await.unwrap(),
            RemovalCounts::default(),
            "every listed row, changed or not, is stamped with the run"
        );
    }

    #[tokio::test]
    async fn an_unchanged_second_sync_counts_nothing_added_or_updated() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut d = device("1");
        d.user = Some(user("u1"));
        d.groups = vec!["/Acme/Sales".into()];
        let batch = vec![d, device("2")];
        let first = store
            .upsert_devices(run(&store, mdm).await, mdm, &batch, Pii::Clear)
            .await
            .unwrap();
        assert_eq!((first.added, first.updated), (2, 0));
        let second = store
            .upsert_devices(run(&store, mdm).await, mdm, &batch, Pii::Clear)
            .await
            .unwrap();
        assert_eq!(second, UpsertCounts::default());
    }

    #[tokio::test]
    async fn the_same_mdm_device_id_twice_is_one_row() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        let counts = store
            .upsert_devices(r, mdm, &[device("1"), device("1")], Pii::Clear)
            .await
            .unwrap();
        assert_eq!((counts.added, counts.updated), (1, 0));
        store
            .upsert_devices(r, mdm, &[device("1")], Pii::Clear)
            .await
            .unwrap();
        assert_eq!(store.live_device_count(mdm).await.unwrap(), 1);
        assert_eq!(
            store.live_user_count(mdm).await.unwrap(),
            0,
            "device(\"1\") has no user"
        );
        assert_eq!(
            store.live_devices_by_tenant().await.unwrap(),
            vec![("acme".to_string(), 1)]
        );
        let dup = sqlx::query(
            "INSERT INTO devices (tenant_id, mdm_id, mdm_device_id, platform, first_seen_at,
                 updated_at, last_seen_at) VALUES ('acme', ?, '1', 'ios', 'x', 'x', 'x')",
        )
        .bind(mdm)
        .execute(store.pool())
        .await
        .map_err(StoreError::from)
        .unwrap_err();
        assert!(dup.is_constraint_violation(), "{dup:?}");
        assert!(!dup.is_unavailable());
    }

    #[tokio::test]
    async fn a_changed_value_counts_updated_but_a_new_check_in_alone_does_not() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut d = device("1");
        store
            .upsert_devices(run(&store, mdm).await, mdm, &[d.clone()], Pii::Clear)
            .await
            .unwrap();
        let checkin = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        d.last_checkin_at = Some(checkin);
        let c = store
            .upsert_devices(run(&store, mdm).await, mdm, &[d.clone()], Pii::Clear)
            .await
            .unwrap();
        assert_eq!(c.updated, 0, "check-in time alone");
        let stored = &store
            .find_devices("acme", &DeviceIdentifier::MdmDeviceId("1".into()))
            .await
            .unwrap()[0];
        assert_eq!(stored.last_checkin_at, Some(checkin), "but it is written");

        d.os_version = Some("18.0".into());
        d.ownership = Ownership::Personal;
        let c = store
            .upsert_devices(run(&store, mdm).await, mdm, &[d.clone()], Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (0, 1));
        let stored = store.get_device(stored.id).await.unwrap().unwrap();
        assert_eq!(stored.os_version.as_deref(), Some("18.0"));
        assert_eq!(stored.ownership, Ownership::Personal);
        assert!(stored.updated_at > stored.first_seen_at);
    }

    #[tokio::test]
    async fn a_device_links_its_user_and_its_group_memberships_are_replaced() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut d = device("1");
        d.user = Some(user("jdoe"));
        d.groups = vec!["/Acme/Sales".into(), "/Acme/EU".into(), "/Acme/EU".into()];
        let r = run(&store, mdm).await;
        store
            .upsert_devices(r, mdm, &[d.clone()], Pii::Clear)
            .await
            .unwrap();
        let stored = store.get_device(1).await.unwrap().unwrap();
        let u = store
            .get_user(stored.user_id.expect("linked"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.mdm_user_id, "jdoe");
        assert_eq!(u.display_name, "Jane Doe");
        assert_eq!(u.email.as_deref(), Some("jdoe@acme.example"));
        let groups = store.device_groups(stored.id).await.unwrap();
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0].name, "/Acme/EU", "named by its key until listed");

        // The group listing names it; the membership changes to one group.
        let g = store
            .upsert_groups(
                r,
                mdm,
                &[Group {
                    mdm_group_id: "/Acme/EU".into(),
                    name: "Europe".into(),
                }],
            )
            .await
            .unwrap();
        assert_eq!((g.added, g.updated), (0, 1));
        d.groups = vec!["/Acme/EU".into()];
        let c = store
            .upsert_devices(r, mdm, &[d.clone()], Pii::Clear)
            .await
            .unwrap();
        assert_eq!(c.updated, 1, "membership changed");
        let groups = store.device_groups(stored.id).await.unwrap();
        assert_eq!(
            groups,
            vec![Group {
                mdm_group_id: "/Acme/EU".into(),
                name: "Europe".into()
            }]
        );
        // A device without a user is unlinked.
        d.user = None;
        store
            .upsert_devices(r, mdm, &[d], Pii::Clear)
            .await
            .unwrap();
        assert_eq!(
            store.get_device(stored.id).await.unwrap().unwrap().user_id,
            None
        );
    }

    #[tokio::test]
    async fn a_device_found_on_demand_during_a_run_survives_that_runs_removal() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let mut d = device("9");
        d.user = Some(user("u9"));
        d.groups = vec!["g9".into()];
        let found = store.store_found_device(mdm, &d, Pii::Clear).await.unwrap();
        assert!(found.added);
        assert_eq!(found.device.mdm_device_id, "9");
        assert_eq!(found.device.identifiers.serial.as_deref(), Some("SN-9"));
        assert_eq!(
            store.remove_unseen(mdm, r).await.unwrap(),
            RemovalCounts::default()
        );
        let again = store.store_found_device(mdm, &d, Pii::Clear).await.unwrap();
        assert!(!again.added);
        assert_eq!(again.device.id, found.device.id);
    }

    #[tokio::test]
    async fn find_devices_normalises_the_identifier_and_skips_removed_devices() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut d = device("1");
        d.identifiers = Identifiers {
            udid: Some("00008030-001a".into()),
            serial: Some(" f17xk0abcd ".into()),
            imei: Some("35-209900-176148-1".into()),
            mac: Some("A4:67:06:0C:15:3D".into()),
        };
        store
            .upsert_devices(run(&store, mdm).await, mdm, &[d], Pii::Clear)
            .await
            .unwrap();
        for id in [
            DeviceIdentifier::Udid("00008030-001A".into()),
            DeviceIdentifier::Serial("F17XK0ABCD".into()),
            DeviceIdentifier::Serial("f17xk0abcd".into()),
            DeviceIdentifier::Imei("352099001761481".into()),
            DeviceIdentifier::Mac("a4-67-06-0c-15-3d".into()),
            DeviceIdentifier::MdmDeviceId("1".into()),
        ] {
            let found = store.find_devices("acme", &id).await.unwrap();
            assert_eq!(found.len(), 1, "{id}");
            assert_eq!(found[0].identifiers.mac.as_deref(), Some("a467060c153d"));
        }
        assert!(store
            .find_devices("other", &DeviceIdentifier::MdmDeviceId("1".into()))
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .find_devices("acme", &DeviceIdentifier::Mac("not a mac".into()))
            .await
            .unwrap()
            .is_empty());
    }
}
