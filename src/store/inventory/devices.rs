//! Devices and their group memberships: the write path of a batch of
//! listed devices (and of one device an on-demand lookup found), and the
//! reads by identifier.

use super::collisions::{mark_collisions_bulk, Candidate};
use super::groups::resolve_groups;
use super::users::{upsert_users_bulk, user_values, UserSource};
use super::{json_rows, scope, Change, Pii, RowState, Scope, UpsertCounts};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use mtd_adapter::{
    normalize_imei, normalize_mac, normalize_serial, normalize_udid, Device, DeviceIdentifier,
    Group, Identifiers, Ownership, Platform, Posture, SignalLevel,
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
    /// What its MDM last reported of its state.
    pub posture: Posture,
    /// `secured`, or the highest severity among its open threats.
    pub risk_level: RiskLevel,
    /// Its agent's last successful activation (`None`: never activated).
    pub activation: Option<Activation>,
}

impl StoredDevice {
    /// The device as adapters take it: what the store knows (no user,
    /// groups or posture), enough for a command or a read at its MDM.
    pub fn to_adapter_device(&self) -> Device {
        Device {
            reported_risk: None,
            posture: Default::default(),
            mdm_device_id: self.mdm_device_id.clone(),
            identifiers: self.identifiers.clone(),
            name: self.name.clone(),
            platform: self.platform,
            model: self.model.clone(),
            os_version: self.os_version.clone(),
            ownership: self.ownership,
            user: None,
            groups: Vec::new(),
            last_checkin_at: self.last_checkin_at,
        }
    }
}

/// A device's risk level (CONTRACT §4): `secured` when it has no open
/// threat, else the highest severity among them. Ordered low to high.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    Secured,
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    pub const ALL: [RiskLevel; 5] = [
        RiskLevel::Secured,
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Secured => "secured",
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }

    /// The stored form (`None` for anything else; the column's CHECK admits
    /// only the five names).
    pub fn parse(s: &str) -> Option<RiskLevel> {
        RiskLevel::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl RiskLevel {
    /// The same level as adapters write it.
    pub fn signal(self) -> mtd_adapter::SignalLevel {
        match self {
            RiskLevel::Secured => mtd_adapter::SignalLevel::Secured,
            RiskLevel::Low => mtd_adapter::SignalLevel::Low,
            RiskLevel::Medium => mtd_adapter::SignalLevel::Medium,
            RiskLevel::High => mtd_adapter::SignalLevel::High,
            RiskLevel::Critical => mtd_adapter::SignalLevel::Critical,
        }
    }
}

impl From<mtd_adapter::SignalLevel> for RiskLevel {
    fn from(l: mtd_adapter::SignalLevel) -> Self {
        match l {
            mtd_adapter::SignalLevel::Secured => RiskLevel::Secured,
            mtd_adapter::SignalLevel::Low => RiskLevel::Low,
            mtd_adapter::SignalLevel::Medium => RiskLevel::Medium,
            mtd_adapter::SignalLevel::High => RiskLevel::High,
            mtd_adapter::SignalLevel::Critical => RiskLevel::Critical,
        }
    }
}

impl std::fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a device's agent said when it last activated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activation {
    pub first_activated_at: DateTime<Utc>,
    pub last_activated_at: DateTime<Utc>,
    pub platform: Option<String>,
    pub agent_version: Option<String>,
    pub tracking_id_1: Option<String>,
    pub tracking_id_2: Option<String>,
}

/// What an agent's activation tells about it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ActivationInput<'a> {
    pub platform: Option<&'a str>,
    pub agent_version: Option<&'a str>,
    pub tracking_id_1: Option<&'a str>,
    pub tracking_id_2: Option<&'a str>,
}

/// The result of storing one device found by an on-demand lookup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceUpsert {
    pub device: StoredDevice,
    /// True when the device was not in the store (or had been removed).
    pub added: bool,
}

/// A stored device row: from sqlx by column name, or (`Deserialize`) from
/// the JSON array [`DEVICE_JSON`] builds, in field order.
#[derive(FromRow, serde::Deserialize)]
pub(in crate::store) struct DeviceRow {
    pub(in crate::store) id: i64,
    tenant_id: String,
    mdm_id: i64,
    mdm_device_id: String,
    /// The columns a sync writes.
    #[sqlx(flatten)]
    values: DeviceValues,
    last_checkin_at: Option<DateTime<Utc>>,
    first_seen_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    removed_at: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "sql_bool")]
    collision: bool,
    #[serde(deserialize_with = "sql_opt_bool")]
    compliant: Option<bool>,
    #[serde(deserialize_with = "sql_opt_bool")]
    enrolled: Option<bool>,
    #[serde(deserialize_with = "sql_opt_bool")]
    encrypted: Option<bool>,
    #[serde(deserialize_with = "sql_opt_bool")]
    passcode: Option<bool>,
    #[serde(deserialize_with = "sql_opt_bool")]
    compromised: Option<bool>,
    manufacturer: Option<String>,
    phone_number: Option<String>,
    risk_level: String,
    activated_first_at: Option<DateTime<Utc>>,
    activated_last_at: Option<DateTime<Utc>>,
    agent_platform: Option<String>,
    agent_version: Option<String>,
    tracking_id_1: Option<String>,
    tracking_id_2: Option<String>,
}

/// SQLite's booleans are the integers 0 and 1, in JSON too.
pub(super) fn sql_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(<i64 as serde::Deserialize>::deserialize(d)? != 0)
}

fn sql_opt_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(<Option<i64> as serde::Deserialize>::deserialize(d)?.map(|v| v != 0))
}

/// A device row of `devices AS d` as one JSON array that deserializes into
/// [`DeviceRow`]: [`DEVICE_COLUMNS`] in order, the columns of
/// [`DeviceValues`] nested as one array.
pub(in crate::store) const DEVICE_JSON: &str =
    "json_array(d.id, d.tenant_id, d.mdm_id, d.mdm_device_id, \
     json_array(d.udid, d.serial, d.imei, d.mac, d.name, d.platform, d.model, d.os_version, \
     d.ownership, d.user_id), \
     d.last_checkin_at, d.first_seen_at, d.updated_at, d.last_seen_at, d.removed_at, \
     d.collision, d.compliant, d.enrolled, d.encrypted, d.passcode, d.compromised, \
     d.manufacturer, d.phone_number, d.risk_level, d.activated_first_at, d.activated_last_at, \
     d.agent_platform, d.agent_version, d.tracking_id_1, d.tracking_id_2)";

pub(in crate::store) const DEVICE_COLUMNS: &str =
    "id, tenant_id, mdm_id, mdm_device_id, udid, serial, imei, mac, \
     name, platform, model, os_version, ownership, user_id, last_checkin_at, first_seen_at, \
     updated_at, last_seen_at, removed_at, collision, compliant, enrolled, encrypted, passcode, \
     compromised, manufacturer, phone_number, risk_level, activated_first_at, activated_last_at, \
     agent_platform, agent_version, tracking_id_1, tracking_id_2";

impl From<DeviceRow> for StoredDevice {
    fn from(r: DeviceRow) -> Self {
        let v = r.values;
        StoredDevice {
            id: r.id,
            tenant_id: r.tenant_id,
            mdm_id: r.mdm_id,
            mdm_device_id: r.mdm_device_id,
            identifiers: Identifiers {
                udid: v.udid,
                serial: v.serial,
                imei: v.imei,
                mac: v.mac,
            },
            name: v.name,
            // Stored from `as_str`, so this round-trips; anything else is Other.
            platform: Platform::from_vendor(&v.platform),
            model: v.model,
            os_version: v.os_version,
            // Lenient on purpose: an unreadable value is never "corporate".
            ownership: Ownership::parse_lenient(&v.ownership),
            user_id: v.user_id,
            last_checkin_at: r.last_checkin_at,
            first_seen_at: r.first_seen_at,
            updated_at: r.updated_at,
            last_seen_at: r.last_seen_at,
            removed_at: r.removed_at,
            collision: r.collision,
            posture: Posture {
                compliant: r.compliant,
                enrolled: r.enrolled,
                encrypted: r.encrypted,
                passcode: r.passcode,
                compromised: r.compromised,
                manufacturer: r.manufacturer,
                phone_number: r.phone_number,
            },
            // The column's CHECK admits only the five names.
            risk_level: RiskLevel::parse(&r.risk_level).unwrap_or(RiskLevel::Secured),
            activation: r
                .activated_first_at
                .zip(r.activated_last_at)
                .map(|(first, last)| Activation {
                    first_activated_at: first,
                    last_activated_at: last,
                    platform: r.agent_platform,
                    agent_version: r.agent_version,
                    tracking_id_1: r.tracking_id_1,
                    tracking_id_2: r.tracking_id_2,
                }),
        }
    }
}

// The bulk statements of devices and memberships: one bound JSON array each (see
// [`json_rows`]), every one checked for its query plan by a test.
/// One JSON array for the whole batch rather than a row per device: sqlx
/// copies each column of each row off SQLite's thread (an allocation each)
/// and decodes it on the runtime; one text value is one copy, read by serde
/// in one pass. It took a tenth off a re-sync of 100,000 unchanged devices.
pub(super) const DEVICES_STORED: &str =
    "SELECT json_group_array(json_array(d.id, d.mdm_device_id, d.removed_at IS NOT NULL,
     d.collision, json_array(d.udid, d.serial, d.imei, d.mac, d.name, d.platform, d.model,
     d.os_version, d.ownership, d.user_id),
     (SELECT group_concat(group_id) FROM device_groups WHERE device_id = d.id)))
     FROM json_each(?2) AS j CROSS JOIN devices AS d
     ON d.mdm_id = ?1 AND d.mdm_device_id = j.value";

pub(super) const DEVICES_INSERT: &str =
    "INSERT INTO devices (tenant_id, mdm_id, mdm_device_id, udid, serial, imei, mac,
     name, platform, model, os_version, ownership, user_id, last_checkin_at,
     first_seen_at, updated_at, last_seen_at, last_sync_run_id,
     compliant, enrolled, encrypted, passcode, compromised, manufacturer, phone_number,
     reported_risk)
     SELECT ?1, ?2, j.value ->> 0, j.value ->> '$[1][0]', j.value ->> '$[1][1]',
     j.value ->> '$[1][2]', j.value ->> '$[1][3]', j.value ->> 2, j.value ->> 3,
     j.value ->> 4, j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8,
     ?3, ?3, ?3, ?4,
     j.value ->> '$[9][0]', j.value ->> '$[9][1]', j.value ->> '$[9][2]',
     j.value ->> '$[9][3]', j.value ->> '$[9][4]', j.value ->> '$[9][5]',
     j.value ->> '$[9][6]', j.value ->> '$[9][7]'
     FROM json_each(?5) AS j WHERE true
     RETURNING id, mdm_device_id";

pub(super) const DEVICES_UPDATE: &str =
    "UPDATE devices SET udid = j.value ->> '$[1][0]', serial = j.value ->> '$[1][1]',
     imei = j.value ->> '$[1][2]', mac = j.value ->> '$[1][3]',
     name = j.value ->> 2, platform = j.value ->> 3, model = j.value ->> 4,
     os_version = j.value ->> 5, ownership = j.value ->> 6, user_id = j.value ->> 7,
     last_checkin_at = COALESCE(j.value ->> 8, last_checkin_at),
     compliant = j.value ->> '$[9][0]', enrolled = j.value ->> '$[9][1]',
     encrypted = j.value ->> '$[9][2]', passcode = j.value ->> '$[9][3]',
     compromised = j.value ->> '$[9][4]', manufacturer = j.value ->> '$[9][5]',
     phone_number = j.value ->> '$[9][6]', reported_risk = j.value ->> '$[9][7]',
     updated_at = ?1, last_seen_at = ?1,
     last_sync_run_id = COALESCE(?2, last_sync_run_id), removed_at = NULL
     FROM json_each(?3) AS j WHERE devices.id = j.value ->> 0";

pub(super) const DEVICES_SEEN: &str =
    "UPDATE devices SET last_checkin_at = COALESCE(j.value ->> 1, last_checkin_at),
     compliant = j.value ->> '$[2][0]', enrolled = j.value ->> '$[2][1]',
     encrypted = j.value ->> '$[2][2]', passcode = j.value ->> '$[2][3]',
     compromised = j.value ->> '$[2][4]', manufacturer = j.value ->> '$[2][5]',
     phone_number = j.value ->> '$[2][6]', reported_risk = j.value ->> '$[2][7]',
     last_seen_at = ?1, last_sync_run_id = COALESCE(?2, last_sync_run_id)
     FROM json_each(?3) AS j WHERE devices.id = j.value ->> 0";

/// An MDM's live devices: counted in the `devices_live` index (migration
/// 0006), not by reading every device row.
pub(crate) const LIVE_DEVICE_COUNT: &str =
    "SELECT COUNT(*) FROM devices WHERE mdm_id = ? AND removed_at IS NULL";

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

/// A device's stored values (what `DEVICES_STORED` reads back and the
/// writes take, identifiers normalised).
#[derive(Debug, FromRow, PartialEq, serde::Deserialize)]
struct DeviceValues {
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
}

/// What a device's "changed?" compares: its stored values and its set of
/// groups (sorted ids).
#[derive(Debug, PartialEq)]
struct DeviceState {
    values: DeviceValues,
    groups: Vec<i64>,
}

impl DeviceValues {
    /// The row `DEVICES_INSERT` (keyed by `mdm_device_id`) and
    /// `DEVICES_UPDATE` (keyed by id) read: the key, the identifiers, the
    /// other values in column order, and the check-in time.
    fn json_row<'v, K: Serialize + 'v>(
        &'v self,
        key: K,
        checkin: Option<String>,
        posture: &'v Posture,
        reported: Option<SignalLevel>,
    ) -> impl Serialize + 'v {
        (
            key,
            (&self.udid, &self.serial, &self.imei, &self.mac),
            &self.name,
            &self.platform,
            &self.model,
            &self.os_version,
            &self.ownership,
            self.user_id,
            checkin,
            posture_row(posture, reported),
        )
    }
}

/// A posture as the write statements read it (`'$[n][0]'` … `'$[n][6]'`),
/// then the level the MDM reports (`'$[n][7]'`).
fn posture_row(p: &Posture, reported: Option<SignalLevel>) -> impl Serialize + '_ {
    (
        p.compliant,
        p.enrolled,
        p.encrypted,
        p.passcode,
        p.compromised,
        &p.manufacturer,
        &p.phone_number,
        reported.map(|l| l.as_lower()),
    )
}

/// A timestamp as sqlx's chrono encoding writes it (see the header of
/// `0001_init.sql`), for values passed inside a JSON parameter.
/// A time as the store writes it (one format for every table).
use crate::store::ingest::timestamp as sql_time;

/// Writes a batch of devices with their users and group memberships in a
/// fixed number of statements, whatever the batch size, in three steps:
/// [`plan`] (users and groups first, then the row each listing asks for),
/// [`diff`] (the planned rows against the stored ones, read in one
/// `SELECT`, in memory and in batch order exactly as the
/// one-device-at-a-time writes did, so the counts do not change), and
/// [`write()`] (one multi-row statement per kind of write).
///
/// Returns the id and the change of every listed device, in input order,
/// and the batch's counts.
async fn upsert_devices_bulk(
    conn: &mut SqliteConnection,
    s: &Scope,
    devices: &[Device],
    pii: Pii<'_>,
) -> Result<(Vec<(i64, Change)>, UpsertCounts), StoreError> {
    if devices.is_empty() {
        return Ok((Vec::new(), UpsertCounts::default()));
    }
    let planned = plan(conn, s, devices, pii).await?;
    let stored = stored_devices(conn, s, &planned).await?;
    write(conn, s, diff(planned, stored)).await
}

/// One listing of a device as the batch asks to store it (see [`plan`]).
struct PlannedDevice<'a> {
    key: &'a str,
    state: DeviceState,
    /// The check-in time it lists (`None`: the stored one stays).
    checkin: Option<DateTime<Utc>>,
    /// Its posture: state like the check-in time, written whenever the
    /// device is listed and not counted as an inventory change.
    posture: &'a Posture,
    /// The risk level the listing reports (BCDM), stored like the posture.
    reported: Option<SignalLevel>,
}

impl<'a> PlannedDevice<'a> {
    /// A listed device as the store keeps it: identifiers normalised, its
    /// user and groups by their ids (`group_ids` has every group it names).
    fn new(d: &'a Device, user_id: Option<i64>, group_ids: &HashMap<String, i64>) -> Self {
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
            user_id,
        };
        PlannedDevice {
            key: d.mdm_device_id.as_str(),
            state: DeviceState { values, groups },
            checkin: d.last_checkin_at,
            posture: &d.posture,
            reported: d.reported_risk,
        }
    }
}

/// Step 1, plan: the row each listed device asks for, in batch order. A
/// device row holds the ids of its user and its groups, so the users
/// embedded in the devices are written first ([`upsert_users_bulk`]) and
/// the groups they name resolved ([`resolve_groups`]).
async fn plan<'a>(
    conn: &mut SqliteConnection,
    s: &Scope,
    devices: &'a [Device],
    pii: Pii<'_>,
) -> Result<Vec<PlannedDevice<'a>>, StoreError> {
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

    Ok(devices
        .iter()
        .zip(&user_keys)
        .map(|(d, user)| {
            let user_id = user.as_ref().and_then(|k| user_ids.get(k).copied());
            PlannedDevice::new(d, user_id, &group_ids)
        })
        .collect())
}

/// A stored device as `DEVICES_STORED` reads it (an array, in field
/// order), with its memberships.
#[derive(serde::Deserialize)]
struct StoredRow {
    id: i64,
    mdm_device_id: String,
    #[serde(deserialize_with = "sql_bool")]
    removed: bool,
    #[serde(deserialize_with = "sql_bool")]
    collision: bool,
    values: DeviceValues,
    /// Its group ids, comma-separated (`NULL`: none).
    group_ids: Option<String>,
}

/// The stored rows of the devices a plan lists, in one `SELECT`.
async fn stored_devices(
    conn: &mut SqliteConnection,
    s: &Scope,
    planned: &[PlannedDevice<'_>],
) -> Result<Vec<StoredRow>, StoreError> {
    let mut keys: Vec<&str> = planned.iter().map(|p| p.key).collect();
    keys.sort_unstable();
    keys.dedup();
    // CROSS JOIN: json_each outside, one probe of UNIQUE (mdm_id,
    // mdm_device_id) per key rather than a scan of the MDM's devices.
    let (rows,): (String,) = sqlx::query_as(DEVICES_STORED)
        .bind(s.mdm_id)
        .bind(json_rows(&keys))
        .fetch_one(&mut *conn)
        .await?;
    serde_json::from_str(&rows)
        .map_err(|e| StoreError::Corrupt(format!("stored devices of a batch: {e}")))
}

/// One device of a batch, every listing of it applied in batch order.
struct BatchDevice<'a> {
    key: &'a str,
    /// Its id (`None` until a new device is inserted) and values as the batch leaves them.
    row: RowState<DeviceState>,
    /// The memberships stored before the batch (`None`: a new device).
    stored_groups: Option<Vec<i64>>,
    /// The latest check-in time the batch listed (a listing without one keeps the stored one).
    checkin: Option<DateTime<Utc>>,
    /// The posture of its last listing.
    posture: &'a Posture,
    reported: Option<SignalLevel>,
    /// Live (stored and not removed) before the batch.
    live_before: bool,
    /// Flagged as a collision before the batch.
    collision_before: bool,
    /// Position of its first listing in the batch.
    pos: usize,
}

impl<'a> BatchDevice<'a> {
    /// A device first listed at `pos` that is not stored: inserted with the
    /// values of its last listing.
    fn new(first: PlannedDevice<'a>, pos: usize) -> Self {
        BatchDevice {
            key: first.key,
            row: RowState {
                id: None,
                removed: false,
                values: first.state,
                changed: true,
                new: true,
            },
            stored_groups: None,
            checkin: first.checkin,
            posture: first.posture,
            reported: first.reported,
            live_before: false,
            collision_before: false,
            pos,
        }
    }

    /// A stored device first listed at `pos`, before any listing is applied.
    fn stored(
        key: &'a str,
        stored: StoredRow,
        pos: usize,
        posture: &'a Posture,
        reported: Option<SignalLevel>,
    ) -> Self {
        let mut groups: Vec<i64> = stored
            .group_ids
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter_map(|g| g.parse().ok())
            .collect();
        groups.sort_unstable();
        BatchDevice {
            key,
            row: RowState {
                id: Some(stored.id),
                removed: stored.removed,
                values: DeviceState {
                    values: stored.values,
                    groups: groups.clone(),
                },
                changed: false,
                new: false,
            },
            stored_groups: Some(groups),
            checkin: None,
            posture,
            reported,
            live_before: !stored.removed,
            collision_before: stored.collision,
            pos,
        }
    }

    /// Applies one more listing (see [`RowState::apply`]). A new check-in
    /// time alone is written but not counted: every active device checks in
    /// between two syncs, and "updated" is meant to show inventory changes.
    fn apply(&mut self, listing: PlannedDevice<'a>) -> Change {
        self.checkin = listing.checkin.or(self.checkin);
        self.posture = listing.posture;
        self.reported = listing.reported;
        self.row.apply(listing.state, false)
    }

    /// The check-in time as the write statements take it.
    fn checkin_text(&self) -> Option<String> {
        self.checkin.as_ref().map(sql_time)
    }
}

/// What a batch writes, decided in memory by [`diff`]: every device once,
/// and which of them (indexes into `devices`) each kind of write takes.
struct DeviceDiff<'a> {
    /// Every device of the batch, in the order of its first listing.
    devices: Vec<BatchDevice<'a>>,
    /// New devices: inserted with their final values.
    inserts: Vec<usize>,
    /// Stored devices whose values or groups changed, or that come back.
    updates: Vec<usize>,
    /// Stored devices listed without a change: stamped seen by the run,
    /// check-in time written.
    seen: Vec<usize>,
    /// Devices whose memberships become their listed groups (every new one).
    memberships: Vec<usize>,
    /// Of those, the stored devices whose old memberships are deleted first.
    memberships_cleared: Vec<usize>,
    /// What each listing did, in input order: its device and its change.
    listings: Vec<(usize, Change)>,
    counts: UpsertCounts,
}

/// Step 2, diff: the planned rows against the stored ones, listing by
/// listing in batch order, so the counts are those of one-row-at-a-time
/// writes (a device listed twice counts once as added and then as what its
/// second listing changed). Pure: no SQL.
fn diff<'a>(planned: Vec<PlannedDevice<'a>>, stored: Vec<StoredRow>) -> DeviceDiff<'a> {
    let mut stored: HashMap<String, StoredRow> = stored
        .into_iter()
        .map(|mut r| (std::mem::take(&mut r.mdm_device_id), r))
        .collect();
    let mut devices: Vec<BatchDevice<'a>> = Vec::with_capacity(planned.len());
    let mut index: HashMap<&'a str, usize> = HashMap::with_capacity(planned.len());
    let mut listings = Vec::with_capacity(planned.len());
    let mut counts = UpsertCounts::default();
    for (pos, listing) in planned.into_iter().enumerate() {
        let (i, change) = match index.get(listing.key) {
            Some(&i) => (i, devices[i].apply(listing)),
            None => {
                let i = devices.len();
                index.insert(listing.key, i);
                let (device, change) = match stored.remove(listing.key) {
                    Some(row) => {
                        let mut device = BatchDevice::stored(
                            listing.key,
                            row,
                            pos,
                            listing.posture,
                            listing.reported,
                        );
                        let change = device.apply(listing);
                        (device, change)
                    }
                    None => (BatchDevice::new(listing, pos), Change::Added),
                };
                devices.push(device);
                (i, change)
            }
        };
        counts.count(change);
        listings.push((i, change));
    }

    let mut diff = DeviceDiff {
        devices: Vec::new(),
        inserts: Vec::new(),
        updates: Vec::new(),
        seen: Vec::new(),
        memberships: Vec::new(),
        memberships_cleared: Vec::new(),
        listings,
        counts,
    };
    for (i, d) in devices.iter().enumerate() {
        if d.row.new {
            diff.inserts.push(i);
        } else if d.row.changed {
            diff.updates.push(i);
        } else {
            diff.seen.push(i);
        }
        if d.stored_groups.as_ref() != Some(&d.row.values.groups) {
            if d.stored_groups.as_ref().is_some_and(|g| !g.is_empty()) {
                diff.memberships_cleared.push(i);
            }
            diff.memberships.push(i);
        }
    }
    diff.devices = devices;
    diff
}

/// Step 3, write: one multi-row statement per kind of write of a diff, in
/// this order: the new devices, the changed ones, the unchanged ones, the
/// memberships that changed, then the collision check
/// ([`mark_collisions_bulk`]). Returns the id and change of every listing.
async fn write(
    conn: &mut SqliteConnection,
    s: &Scope,
    diff: DeviceDiff<'_>,
) -> Result<(Vec<(i64, Change)>, UpsertCounts), StoreError> {
    let DeviceDiff {
        mut devices,
        inserts,
        updates,
        seen,
        memberships,
        memberships_cleared,
        listings,
        mut counts,
    } = diff;
    insert_devices(conn, s, &mut devices, &inserts).await?;
    // Each device with its id; a new device the INSERT did not return (not
    // reachable) is written no further.
    let with_id = |i: &usize| devices[*i].row.id.map(|id| (id, &devices[*i]));

    let changed: Vec<_> = updates
        .iter()
        .filter_map(with_id)
        .map(|(id, d)| {
            d.row
                .values
                .values
                .json_row(id, d.checkin_text(), d.posture, d.reported)
        })
        .collect();
    s.update(conn, DEVICES_UPDATE, &changed).await?;
    let unchanged: Vec<_> = seen
        .iter()
        .filter_map(with_id)
        .map(|(id, d)| (id, d.checkin_text(), posture_row(d.posture, d.reported)))
        .collect();
    // Only columns no index covers: the cheapest write there is.
    s.update(conn, DEVICES_SEEN, &unchanged).await?;
    let cleared: Vec<i64> = memberships_cleared
        .iter()
        .filter_map(with_id)
        .map(|(id, _)| id)
        .collect();
    if !cleared.is_empty() {
        sqlx::query(MEMBERSHIPS_DELETE)
            .bind(json_rows(&cleared))
            .execute(&mut *conn)
            .await?;
    }
    let rows: Vec<(i64, i64)> = memberships
        .iter()
        .filter_map(with_id)
        .flat_map(|(id, d)| d.row.values.groups.iter().map(move |g| (id, *g)))
        .collect();
    if !rows.is_empty() {
        sqlx::query(MEMBERSHIPS_INSERT)
            .bind(json_rows(&rows))
            .execute(&mut *conn)
            .await?;
    }
    // A device that was live and is unchanged cannot have gained a peer:
    // every write that gives a live device an identifier (an insert, a
    // change, a return) probes here and flags both sides, and removals
    // recompute every flag. So a re-sync of an unchanged fleet probes nothing.
    let candidates: Vec<Candidate<'_>> = devices
        .iter()
        .filter(|d| d.row.changed || !d.live_before)
        .filter_map(|d| {
            let v = &d.row.values.values;
            Some(Candidate {
                id: d.row.id?,
                identifiers: [&v.udid, &v.serial, &v.imei, &v.mac],
                live_before: d.live_before,
                collision_before: d.collision_before,
                pos: d.pos,
            })
        })
        .collect();
    counts.collisions = mark_collisions_bulk(conn, &s.tenant_id, &candidates).await?;

    let out = listings
        .into_iter()
        .map(|(i, change)| (devices[i].row.id.unwrap_or_default(), change))
        .collect();
    Ok((out, counts))
}

/// Inserts the new devices of a batch in one statement and gives each its id.
async fn insert_devices(
    conn: &mut SqliteConnection,
    s: &Scope,
    devices: &mut [BatchDevice<'_>],
    inserts: &[usize],
) -> Result<(), StoreError> {
    if inserts.is_empty() {
        return Ok(());
    }
    let inserted = {
        let rows: Vec<_> = inserts
            .iter()
            .map(|&i| {
                let d = &devices[i];
                d.row
                    .values
                    .values
                    .json_row(d.key, d.checkin_text(), d.posture, d.reported)
            })
            .collect();
        s.insert(conn, DEVICES_INSERT, &rows).await?
    };
    let by_key: HashMap<&str, usize> = inserts.iter().map(|&i| (devices[i].key, i)).collect();
    for (id, key) in inserted {
        if let Some(&i) = by_key.get(key.as_str()) {
            devices[i].row.id = Some(id);
        }
    }
    Ok(())
}

/// Writes a batch of listed devices in the caller's transaction (the path
/// of [`Store::upsert_devices`] and of a sync's writer); the counts.
pub(super) async fn write_devices(
    conn: &mut SqliteConnection,
    s: &Scope,
    devices: &[Device],
    pii: Pii<'_>,
) -> Result<UpsertCounts, StoreError> {
    Ok(upsert_devices_bulk(conn, s, devices, pii).await?.1)
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
        let counts = write_devices(&mut tx, &s, devices, pii).await?;
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

    /// Records a successful agent activation on a device (the first time
    /// stays; the rest is the latest) and returns the device as stored.
    pub async fn record_activation(
        &self,
        device_id: i64,
        activation: &ActivationInput<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredDevice>, StoreError> {
        let row: Option<DeviceRow> = sqlx::query_as(&format!(
            "UPDATE devices SET activated_first_at = COALESCE(activated_first_at, ?2),
                 activated_last_at = ?2, agent_platform = ?3, agent_version = ?4,
                 tracking_id_1 = ?5, tracking_id_2 = ?6
             WHERE id = ?1 RETURNING {DEVICE_COLUMNS}"
        ))
        .bind(device_id)
        .bind(now)
        .bind(activation.platform)
        .bind(activation.agent_version)
        .bind(activation.tracking_id_1)
        .bind(activation.tracking_id_2)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(StoredDevice::from))
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

    /// The names of an MDM's live groups, as the MDM names them.
    pub async fn live_group_names(&self, mdm_id: i64) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM groups WHERE mdm_id = ? AND removed_at IS NULL")
                .bind(mdm_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(n,)| n).collect())
    }

    /// The number of live devices of an MDM (the base of `max_removal_percent`).
    pub async fn live_device_count(&self, mdm_id: i64) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(LIVE_DEVICE_COUNT)
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

    /// `DEVICE_JSON` (the ingest writer's read, by position) names the
    /// columns of `DEVICE_COLUMNS` (every other read, by name) in the same
    /// order: a column added to one and not the other fails here, not in a
    /// resolve at run time.
    #[test]
    fn device_json_lists_the_device_columns_in_order() {
        let from_json: Vec<String> = DEVICE_JSON
            .replace("json_array(", "")
            .replace(')', "")
            .split(',')
            .map(|c| c.trim().trim_start_matches("d.").to_string())
            .collect();
        let columns: Vec<String> = DEVICE_COLUMNS
            .split(',')
            .map(|c| c.trim().to_string())
            .collect();
        assert_eq!(from_json, columns);
    }

    fn values(serial: &str) -> DeviceValues {
        DeviceValues {
            udid: None,
            serial: Some(serial.into()),
            imei: None,
            mac: None,
            name: None,
            platform: "ios".into(),
            model: None,
            os_version: None,
            ownership: "corporate".into(),
            user_id: None,
        }
    }

    static NO_POSTURE: Posture = Posture {
        compliant: None,
        enrolled: None,
        encrypted: None,
        passcode: None,
        compromised: None,
        manufacturer: None,
        phone_number: None,
    };

    /// A listing of `key` with serial `serial` in the groups `groups`.
    fn listing<'a>(key: &'a str, serial: &str, groups: &[i64]) -> PlannedDevice<'a> {
        PlannedDevice {
            key,
            state: DeviceState {
                values: values(serial),
                groups: groups.to_vec(),
            },
            checkin: None,
            posture: &NO_POSTURE,
            reported: None,
        }
    }

    /// A stored device; `groups` as `group_concat` gives them.
    fn stored(id: i64, key: &str, serial: &str, groups: Option<&str>, removed: bool) -> StoredRow {
        StoredRow {
            id,
            mdm_device_id: key.into(),
            removed,
            collision: false,
            values: values(serial),
            group_ids: groups.map(Into::into),
        }
    }

    #[test]
    fn the_diff_sorts_a_batch_into_inserts_updates_seen_and_memberships_in_batch_order() {
        let stored = vec![
            stored(5, "ungrouped", "S5", Some("8,7"), false),
            stored(4, "back", "S4", None, true),
            stored(3, "regrouped", "S3", Some("7"), false),
            stored(2, "renamed", "S2", None, false),
            stored(1, "same", "S1", Some("7"), false),
        ];
        let planned = vec![
            listing("same", "S1", &[7]),
            listing("new", "N", &[9]),
            listing("renamed", "S2-renamed", &[]),
            listing("regrouped", "S3", &[8]),
            listing("back", "S4", &[]),
            listing("new", "N2", &[9]),
            listing("ungrouped", "S5", &[]),
        ];
        let d = diff(planned, stored);
        let keys: Vec<&str> = d.devices.iter().map(|d| d.key).collect();
        assert_eq!(
            keys,
            ["same", "new", "renamed", "regrouped", "back", "ungrouped"],
            "in the order of their first listing"
        );
        assert_eq!(d.inserts, [1]);
        assert_eq!(d.updates, [2, 3, 4, 5], "changed values, groups, or back");
        assert_eq!(d.seen, [0]);
        assert_eq!(d.memberships, [1, 3, 5], "new, regrouped, ungrouped");
        assert_eq!(d.memberships_cleared, [3, 5], "stored ones that had groups");
        use Change::*;
        assert_eq!(
            d.listings,
            [
                (0, Unchanged),
                (1, Added),
                (2, Updated),
                (3, Updated),
                (4, Added),
                (1, Updated),
                (5, Updated)
            ]
        );
        assert_eq!(
            (d.counts.added, d.counts.updated, d.counts.collisions),
            (2, 4, 0)
        );
        let new = &d.devices[1];
        assert_eq!(new.row.id, None);
        assert_eq!(
            new.row.values.values.serial.as_deref(),
            Some("N2"),
            "the last listing wins"
        );
        assert_eq!((new.pos, new.live_before), (1, false));
        let back = &d.devices[4];
        assert_eq!((back.row.id, back.live_before), (Some(4), false));
        let ungrouped = &d.devices[5];
        assert_eq!(ungrouped.stored_groups.as_deref(), Some(&[7, 8][..]));
        assert_eq!((ungrouped.pos, ungrouped.live_before), (6, true));
    }

    #[test]
    fn a_new_check_in_alone_is_a_seen_stamp_and_the_latest_listed_time_is_kept() {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        let mut first = listing("a", "S", &[]);
        first.checkin = Some(at);
        let d = diff(
            vec![first, listing("a", "S", &[])],
            vec![stored(1, "a", "S", None, false)],
        );
        assert_eq!((d.inserts.len(), d.updates.len(), d.seen), (0, 0, vec![0]));
        assert!(d.memberships.is_empty());
        assert_eq!(d.listings, [(0, Change::Unchanged), (0, Change::Unchanged)]);
        assert_eq!(d.counts, UpsertCounts::default());
        assert_eq!(
            d.devices[0].checkin,
            Some(at),
            "a listing without one keeps it"
        );
        assert_eq!(d.devices[0].checkin_text(), Some(sql_time(&at)));
    }

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
