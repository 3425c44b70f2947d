//! The inventory mirrored from each MDM: users, groups, devices, their group
//! memberships, and the sync runs that wrote them.
//!
//! A full sync starts a run, streams batches through the `upsert_*` methods
//! (each batch one transaction, every row tagged with the run), then, only
//! if the listing completed, calls [`Store::remove_unseen`] and finishes the
//! run. Removal is a soft delete (`removed_at`), so events and actions keep
//! their device. "Updated" counts a row only when a stored value actually
//! changed, so a sync with nothing new reports 0.

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use mtd_adapter::{
    normalize_imei, normalize_mac, normalize_serial, normalize_udid, Device, DeviceIdentifier,
    Group, Identifiers, Ownership, Platform, User,
};
use serde::Serialize;
use sqlx::{FromRow, SqliteConnection};
use std::fmt;

/// What started a sync run (stored as text, for the admin API and the logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncTrigger {
    /// The first sync after start or after an integration was first seen.
    Initial,
    /// The `full_sync_every` schedule.
    Scheduled,
    /// `POST /v1/admin/tenants/{id}/sync`.
    Admin,
    /// The `sync` command.
    Cli,
}

impl SyncTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncTrigger::Initial => "initial",
            SyncTrigger::Scheduled => "scheduled",
            SyncTrigger::Admin => "admin",
            SyncTrigger::Cli => "cli",
        }
    }
}

impl fmt::Display for SyncTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a sync run ended (`running` until it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SyncOutcome {
    Running,
    Succeeded,
    Failed,
}

/// Rows a batch inserted and rows whose stored values it changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UpsertCounts {
    /// New rows, and removed rows that came back.
    pub added: u64,
    /// Existing rows where at least one stored value changed.
    pub updated: u64,
    /// Devices of this batch newly flagged as sharing an identifier with
    /// another live device of the tenant (always 0 for users and groups).
    pub collisions: u64,
}

impl std::ops::AddAssign for UpsertCounts {
    fn add_assign(&mut self, o: Self) {
        self.added += o.added;
        self.updated += o.updated;
        self.collisions += o.collisions;
    }
}

/// Rows a removal marked removed (or would mark, see [`Store::unseen_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RemovalCounts {
    pub devices: u64,
    pub users: u64,
    pub groups: u64,
}

/// The counts a finished run records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    pub skipped: u64,
    /// Removals this run held back for a confirming run (removal safety).
    pub held_removals: u64,
}

/// One sync run as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct SyncRun {
    pub id: i64,
    pub tenant_id: String,
    pub mdm_id: i64,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: SyncOutcome,
    pub error: Option<String>,
    #[sqlx(try_from = "i64")]
    pub added: u64,
    #[sqlx(try_from = "i64")]
    pub updated: u64,
    #[sqlx(try_from = "i64")]
    pub removed: u64,
    #[sqlx(try_from = "i64")]
    pub skipped: u64,
    #[sqlx(try_from = "i64")]
    pub held_removals: u64,
}

/// A user as one MDM's `mask_pii = true` allows it to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedUser {
    /// The user with names, e-mail (and `mdm_user_id`, where the MDM keys
    /// users by e-mail or name) replaced by masked forms.
    pub user: User,
    /// A keyed hash of the clear values, so the same person matches across syncs.
    pub pii_hash: String,
}

/// Masks user PII before it reaches the store. Implemented by the sync
/// engine, which holds the key; the store never sees clear values or the key.
pub trait PiiMasker: Send + Sync {
    fn mask(&self, user: &User) -> MaskedUser;
}

/// Whether users are written in clear or through a masker (per MDM: `mask_pii`).
/// The masker is applied inside the store, to listed users and to the users
/// embedded in devices alike, so no path can write a clear value by mistake.
#[derive(Clone, Copy)]
pub enum Pii<'a> {
    Clear,
    Masked(&'a dyn PiiMasker),
}

impl fmt::Debug for Pii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pii::Clear => "Pii::Clear",
            Pii::Masked(_) => "Pii::Masked",
        })
    }
}

/// A user as stored (masked forms where the MDM masks PII).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct StoredUser {
    pub id: i64,
    pub tenant_id: String,
    pub mdm_id: i64,
    pub mdm_user_id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub display_name: String,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
}

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
pub(super) struct DeviceRow {
    pub(super) id: i64,
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

/// The context every row of one batch is written in.
struct Scope {
    tenant_id: String,
    mdm_id: i64,
    /// `None` for an on-demand lookup, which keeps a device's run tag.
    run_id: Option<i64>,
    now: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Updated,
    Unchanged,
}

impl UpsertCounts {
    fn count(&mut self, c: Change) {
        match c {
            Change::Added => self.added += 1,
            Change::Updated => self.updated += 1,
            Change::Unchanged => {}
        }
    }
}

async fn scope(
    conn: &mut SqliteConnection,
    mdm_id: i64,
    run_id: Option<i64>,
) -> Result<Scope, StoreError> {
    let tenant: Option<(String,)> =
        sqlx::query_as("SELECT tenant_id FROM mdm_integrations WHERE id = ?")
            .bind(mdm_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (tenant_id,) = tenant.ok_or_else(|| StoreError::NotFound {
        what: "MDM integration",
        id: mdm_id.to_string(),
    })?;
    Ok(Scope {
        tenant_id,
        mdm_id,
        run_id,
        now: Utc::now(),
    })
}

/// The name admins see for a user: "First Last", else the user name, the
/// e-mail, or the MDM's key.
fn display_name(u: &User) -> String {
    let full = [u.first_name.as_deref(), u.last_name.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !full.is_empty() {
        return full;
    }
    [u.username.as_deref(), u.email.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or(&u.mdm_user_id)
        .to_string()
}

#[derive(FromRow, PartialEq)]
struct UserValues {
    username: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    display_name: String,
    pii_hash: Option<String>,
}

async fn upsert_user(
    conn: &mut SqliteConnection,
    s: &Scope,
    user: &User,
    pii: Pii<'_>,
) -> Result<(i64, Change), StoreError> {
    let (user, pii_hash) = match pii {
        Pii::Clear => (user.clone(), None),
        Pii::Masked(m) => {
            let masked = m.mask(user);
            (masked.user, Some(masked.pii_hash))
        }
    };
    let new = UserValues {
        display_name: display_name(&user),
        username: user.username,
        email: user.email,
        first_name: user.first_name,
        last_name: user.last_name,
        pii_hash,
    };
    #[derive(FromRow)]
    struct Existing {
        id: i64,
        removed: bool,
        #[sqlx(flatten)]
        values: UserValues,
    }
    let existing: Option<Existing> = sqlx::query_as(
        "SELECT id, removed_at IS NOT NULL AS removed, username, email, first_name, last_name,
                display_name, pii_hash
         FROM users WHERE mdm_id = ? AND mdm_user_id = ?",
    )
    .bind(s.mdm_id)
    .bind(&user.mdm_user_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(existing) = existing else {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO users (tenant_id, mdm_id, mdm_user_id, username, email, first_name,
                 last_name, display_name, pii_hash, first_seen_at, updated_at, last_seen_at,
                 last_sync_run_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10, ?11) RETURNING id",
        )
        .bind(&s.tenant_id)
        .bind(s.mdm_id)
        .bind(&user.mdm_user_id)
        .bind(&new.username)
        .bind(&new.email)
        .bind(&new.first_name)
        .bind(&new.last_name)
        .bind(&new.display_name)
        .bind(&new.pii_hash)
        .bind(s.now)
        .bind(s.run_id)
        .fetch_one(&mut *conn)
        .await?;
        return Ok((id, Change::Added));
    };
    let change = if existing.removed {
        Change::Added
    } else if existing.values != new {
        Change::Updated
    } else {
        Change::Unchanged
    };
    sqlx::query(
        "UPDATE users SET username = ?2, email = ?3, first_name = ?4, last_name = ?5,
             display_name = ?6, pii_hash = ?7,
             updated_at = CASE WHEN ?8 THEN ?9 ELSE updated_at END,
             last_seen_at = ?9, last_sync_run_id = COALESCE(?10, last_sync_run_id),
             removed_at = NULL
         WHERE id = ?1",
    )
    .bind(existing.id)
    .bind(&new.username)
    .bind(&new.email)
    .bind(&new.first_name)
    .bind(&new.last_name)
    .bind(&new.display_name)
    .bind(&new.pii_hash)
    .bind(change != Change::Unchanged)
    .bind(s.now)
    .bind(s.run_id)
    .execute(&mut *conn)
    .await?;
    Ok((existing.id, change))
}

/// Writes a group. `name: None` is a group known only from a device's
/// membership: created with its key as name, and an existing name is kept.
async fn upsert_group(
    conn: &mut SqliteConnection,
    s: &Scope,
    mdm_group_id: &str,
    name: Option<&str>,
) -> Result<(i64, Change), StoreError> {
    let existing: Option<(i64, String, bool)> = sqlx::query_as(
        "SELECT id, name, removed_at IS NOT NULL FROM groups WHERE mdm_id = ? AND mdm_group_id = ?",
    )
    .bind(s.mdm_id)
    .bind(mdm_group_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, old_name, removed)) = existing else {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO groups (tenant_id, mdm_id, mdm_group_id, name, first_seen_at, updated_at,
                 last_seen_at, last_sync_run_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, ?6) RETURNING id",
        )
        .bind(&s.tenant_id)
        .bind(s.mdm_id)
        .bind(mdm_group_id)
        .bind(name.unwrap_or(mdm_group_id))
        .bind(s.now)
        .bind(s.run_id)
        .fetch_one(&mut *conn)
        .await?;
        return Ok((id, Change::Added));
    };
    let name = name.unwrap_or(&old_name);
    let change = if removed {
        Change::Added
    } else if name != old_name {
        Change::Updated
    } else {
        Change::Unchanged
    };
    sqlx::query(
        "UPDATE groups SET name = ?2, updated_at = CASE WHEN ?3 THEN ?4 ELSE updated_at END,
             last_seen_at = ?4, last_sync_run_id = COALESCE(?5, last_sync_run_id),
             removed_at = NULL
         WHERE id = ?1",
    )
    .bind(id)
    .bind(name)
    .bind(change != Change::Unchanged)
    .bind(s.now)
    .bind(s.run_id)
    .execute(&mut *conn)
    .await?;
    Ok((id, change))
}

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

/// Writes one device with its user and group memberships. Returns the
/// device's id, what changed, and whether it was newly flagged as a collision.
async fn upsert_device(
    conn: &mut SqliteConnection,
    s: &Scope,
    device: &Device,
    pii: Pii<'_>,
) -> Result<(i64, Change, bool), StoreError> {
    let user_id = match &device.user {
        Some(u) => Some(upsert_user(conn, s, u, pii).await?.0),
        None => None,
    };
    let ids = normalised(&device.identifiers);
    let new = DeviceValues {
        udid: ids.udid,
        serial: ids.serial,
        imei: ids.imei,
        mac: ids.mac,
        name: device.name.clone(),
        platform: device.platform.as_str().to_string(),
        model: device.model.clone(),
        os_version: device.os_version.clone(),
        ownership: device.ownership.as_str().to_string(),
        user_id,
    };
    #[derive(FromRow)]
    struct Existing {
        id: i64,
        removed: bool,
        #[sqlx(flatten)]
        values: DeviceValues,
    }
    let existing: Option<Existing> = sqlx::query_as(
        "SELECT id, removed_at IS NOT NULL AS removed, udid, serial, imei, mac, name, platform,
                model, os_version, ownership, user_id
         FROM devices WHERE mdm_id = ? AND mdm_device_id = ?",
    )
    .bind(s.mdm_id)
    .bind(&device.mdm_device_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (id, mut change, inserted) = match existing {
        None => {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO devices (tenant_id, mdm_id, mdm_device_id, udid, serial, imei, mac,
                     name, platform, model, os_version, ownership, user_id, last_checkin_at,
                     first_seen_at, updated_at, last_seen_at, last_sync_run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                     ?15, ?15, ?15, ?16)
                 RETURNING id",
            )
            .bind(&s.tenant_id)
            .bind(s.mdm_id)
            .bind(&device.mdm_device_id)
            .bind(&new.udid)
            .bind(&new.serial)
            .bind(&new.imei)
            .bind(&new.mac)
            .bind(&new.name)
            .bind(&new.platform)
            .bind(&new.model)
            .bind(&new.os_version)
            .bind(&new.ownership)
            .bind(new.user_id)
            .bind(device.last_checkin_at)
            .bind(s.now)
            .bind(s.run_id)
            .fetch_one(&mut *conn)
            .await?;
            (id, Change::Added, true)
        }
        Some(e) => {
            // A new check-in time alone is written but not counted: every
            // active device checks in between two syncs, and "updated" is
            // meant to show inventory changes.
            let change = if e.removed {
                Change::Added
            } else if e.values != new {
                Change::Updated
            } else {
                Change::Unchanged
            };
            (e.id, change, false)
        }
    };

    // Group memberships: replaced as a whole when the set differs.
    let mut group_ids = Vec::with_capacity(device.groups.len());
    for g in &device.groups {
        group_ids.push(upsert_group(conn, s, g, None).await?.0);
    }
    group_ids.sort_unstable();
    group_ids.dedup();
    let current: Vec<(i64,)> =
        sqlx::query_as("SELECT group_id FROM device_groups WHERE device_id = ? ORDER BY group_id")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    if current.iter().map(|c| c.0).ne(group_ids.iter().copied()) {
        sqlx::query("DELETE FROM device_groups WHERE device_id = ?")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        for g in &group_ids {
            sqlx::query("INSERT INTO device_groups (device_id, group_id) VALUES (?, ?)")
                .bind(id)
                .bind(g)
                .execute(&mut *conn)
                .await?;
        }
        if change == Change::Unchanged {
            change = Change::Updated;
        }
    }

    if !inserted {
        sqlx::query(
            "UPDATE devices SET udid = ?2, serial = ?3, imei = ?4, mac = ?5, name = ?6,
                 platform = ?7, model = ?8, os_version = ?9, ownership = ?10, user_id = ?11,
                 last_checkin_at = COALESCE(?12, last_checkin_at),
                 updated_at = CASE WHEN ?13 THEN ?14 ELSE updated_at END,
                 last_seen_at = ?14, last_sync_run_id = COALESCE(?15, last_sync_run_id),
                 removed_at = NULL
             WHERE id = ?1",
        )
        .bind(id)
        .bind(&new.udid)
        .bind(&new.serial)
        .bind(&new.imei)
        .bind(&new.mac)
        .bind(&new.name)
        .bind(&new.platform)
        .bind(&new.model)
        .bind(&new.os_version)
        .bind(&new.ownership)
        .bind(new.user_id)
        .bind(device.last_checkin_at)
        .bind(change != Change::Unchanged)
        .bind(s.now)
        .bind(s.run_id)
        .execute(&mut *conn)
        .await?;
    }
    let collided = mark_collisions(conn, &s.tenant_id, id, &new).await?;
    Ok((id, change, collided))
}

/// Flags the device and every live device of the tenant that shares one of
/// its identifiers. Returns true if the device itself was newly flagged.
/// Flags are only set here; [`Store::refresh_collisions`] clears stale ones.
async fn mark_collisions(
    conn: &mut SqliteConnection,
    tenant_id: &str,
    id: i64,
    v: &DeviceValues,
) -> Result<bool, StoreError> {
    if v.udid.is_none() && v.serial.is_none() && v.imei.is_none() && v.mac.is_none() {
        return Ok(false);
    }
    // `col = NULL` is never true, so an absent identifier matches nothing.
    // One indexed lookup per identifier (an OR across the columns would make
    // SQLite scan the tenant's devices); `+removed_at` keeps the planner off
    // the (tenant_id, removed_at) index.
    let peers = sqlx::query(
        "UPDATE devices SET collision = 1
         WHERE id IN (
             SELECT id FROM devices WHERE tenant_id = ?1 AND udid = ?3
             UNION SELECT id FROM devices WHERE tenant_id = ?1 AND serial = ?4
             UNION SELECT id FROM devices WHERE tenant_id = ?1 AND imei = ?5
             UNION SELECT id FROM devices WHERE tenant_id = ?1 AND mac = ?6)
           AND id <> ?2 AND +removed_at IS NULL",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(&v.udid)
    .bind(&v.serial)
    .bind(&v.imei)
    .bind(&v.mac)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if peers == 0 {
        return Ok(false);
    }
    let newly = sqlx::query("UPDATE devices SET collision = 1 WHERE id = ? AND collision = 0")
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(newly == 1)
}

impl Store {
    /// Records the start of a full sync of one MDM; returns the run's id.
    pub async fn start_sync_run(
        &self,
        mdm_id: i64,
        trigger: SyncTrigger,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let s = scope(&mut tx, mdm_id, None).await?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO sync_runs (tenant_id, mdm_id, trigger, started_at) VALUES (?, ?, ?, ?)
             RETURNING id",
        )
        .bind(&s.tenant_id)
        .bind(mdm_id)
        .bind(trigger.as_str())
        .bind(s.now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Records how a running sync ended. A succeeded run also becomes the
    /// integration's `last_synced_at`. Fails with `NotFound` unless the run
    /// exists and is still running.
    pub async fn finish_sync_run(
        &self,
        run_id: i64,
        outcome: SyncOutcome,
        counts: RunCounts,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut tx = self.begin_write().await?;
        let mdm: Option<(i64,)> = sqlx::query_as(
            "UPDATE sync_runs SET finished_at = ?2, outcome = ?3, error = ?4, added = ?5,
                 updated = ?6, removed = ?7, skipped = ?8, held_removals = ?9
             WHERE id = ?1 AND outcome = 'running' RETURNING mdm_id",
        )
        .bind(run_id)
        .bind(now)
        .bind(outcome)
        .bind(error)
        .bind(count(counts.added))
        .bind(count(counts.updated))
        .bind(count(counts.removed))
        .bind(count(counts.skipped))
        .bind(count(counts.held_removals))
        .fetch_optional(&mut *tx)
        .await?;
        let (mdm_id,) = mdm.ok_or_else(|| StoreError::NotFound {
            what: "running sync run",
            id: run_id.to_string(),
        })?;
        if outcome == SyncOutcome::Succeeded {
            sqlx::query("UPDATE mdm_integrations SET last_synced_at = ? WHERE id = ?")
                .bind(now)
                .bind(mdm_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks every run still `running` as failed ("interrupted"): called once
    /// at start, when no sync can be running, for runs a crash cut short.
    pub async fn fail_interrupted_runs(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE sync_runs SET outcome = 'failed', finished_at = ?,
                 error = 'interrupted: the connector stopped during the sync'
             WHERE outcome = 'running'",
        )
        .bind(Utc::now())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// One sync run.
    pub async fn sync_run(&self, run_id: i64) -> Result<Option<SyncRun>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, tenant_id, mdm_id, trigger, started_at, finished_at, outcome, error,
                    added, updated, removed, skipped, held_removals
             FROM sync_runs WHERE id = ?",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The latest `limit` runs of an MDM, newest first.
    pub async fn sync_runs(&self, mdm_id: i64, limit: u32) -> Result<Vec<SyncRun>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, tenant_id, mdm_id, trigger, started_at, finished_at, outcome, error,
                    added, updated, removed, skipped, held_removals
             FROM sync_runs WHERE mdm_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(mdm_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Writes a batch of listed users in one transaction, tagged with the run.
    pub async fn upsert_users(
        &self,
        run_id: i64,
        mdm_id: i64,
        users: &[User],
        pii: Pii<'_>,
    ) -> Result<UpsertCounts, StoreError> {
        let mut tx = self.begin_write().await?;
        let s = scope(&mut tx, mdm_id, Some(run_id)).await?;
        let mut counts = UpsertCounts::default();
        for u in users {
            counts.count(upsert_user(&mut tx, &s, u, pii).await?.1);
        }
        tx.commit().await?;
        Ok(counts)
    }

    /// Writes a batch of listed groups in one transaction, tagged with the run.
    pub async fn upsert_groups(
        &self,
        run_id: i64,
        mdm_id: i64,
        groups: &[Group],
    ) -> Result<UpsertCounts, StoreError> {
        let mut tx = self.begin_write().await?;
        let s = scope(&mut tx, mdm_id, Some(run_id)).await?;
        let mut counts = UpsertCounts::default();
        for g in groups {
            counts.count(
                upsert_group(&mut tx, &s, &g.mdm_group_id, Some(&g.name))
                    .await?
                    .1,
            );
        }
        tx.commit().await?;
        Ok(counts)
    }

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
        let mut counts = UpsertCounts::default();
        for d in devices {
            let (_, change, collided) = upsert_device(&mut tx, &s, d, pii).await?;
            counts.count(change);
            counts.collisions += u64::from(collided);
        }
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
        let (id, change, _) = upsert_device(&mut tx, &s, device, pii).await?;
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

    /// What [`Store::remove_unseen`] would remove now, for the removal-safety
    /// decision (`max_removal_percent`) before removing anything.
    pub async fn unseen_counts(
        &self,
        mdm_id: i64,
        run_id: i64,
    ) -> Result<RemovalCounts, StoreError> {
        let started = self.run_started(mdm_id, run_id).await?;
        let mut counts = [0u64; 3];
        for (i, table) in ["devices", "users", "groups"].into_iter().enumerate() {
            let (n,): (i64,) = sqlx::query_as(&format!(
                "SELECT COUNT(*) FROM {table}
                 WHERE mdm_id = ?1 AND removed_at IS NULL
                   AND last_sync_run_id IS NOT ?2 AND last_seen_at < ?3"
            ))
            .bind(mdm_id)
            .bind(run_id)
            .bind(started)
            .fetch_one(&self.pool)
            .await?;
            counts[i] = n.try_into().unwrap_or(0);
        }
        Ok(RemovalCounts {
            devices: counts[0],
            users: counts[1],
            groups: counts[2],
        })
    }

    /// Soft-deletes the devices, users and groups of an MDM that this run did
    /// not see (not tagged with it, and not seen by a lookup since it
    /// started), then clears collision flags that no longer hold. Call only
    /// after the run listed everything without error.
    pub async fn remove_unseen(
        &self,
        mdm_id: i64,
        run_id: i64,
    ) -> Result<RemovalCounts, StoreError> {
        let started = self.run_started(mdm_id, run_id).await?;
        let now = Utc::now();
        let mut tx = self.begin_write().await?;
        let mut counts = [0u64; 3];
        for (i, table) in ["devices", "users", "groups"].into_iter().enumerate() {
            counts[i] = sqlx::query(&format!(
                "UPDATE {table} SET removed_at = ?4
                 WHERE mdm_id = ?1 AND removed_at IS NULL
                   AND last_sync_run_id IS NOT ?2 AND last_seen_at < ?3"
            ))
            .bind(mdm_id)
            .bind(run_id)
            .bind(started)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let (tenant_id,): (String,) =
            sqlx::query_as("SELECT tenant_id FROM mdm_integrations WHERE id = ?")
                .bind(mdm_id)
                .fetch_one(&mut *tx)
                .await?;
        refresh_collisions(&mut tx, &tenant_id).await?;
        tx.commit().await?;
        Ok(RemovalCounts {
            devices: counts[0],
            users: counts[1],
            groups: counts[2],
        })
    }

    async fn run_started(&self, mdm_id: i64, run_id: i64) -> Result<DateTime<Utc>, StoreError> {
        let started: Option<(DateTime<Utc>,)> =
            sqlx::query_as("SELECT started_at FROM sync_runs WHERE id = ? AND mdm_id = ?")
                .bind(run_id)
                .bind(mdm_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(started
            .ok_or_else(|| StoreError::NotFound {
                what: "sync run of this MDM",
                id: run_id.to_string(),
            })?
            .0)
    }

    /// Recomputes every collision flag of a tenant (sets and clears); returns
    /// how many live devices are flagged.
    pub async fn refresh_collisions(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = refresh_collisions(&mut tx, tenant_id).await?;
        tx.commit().await?;
        Ok(n)
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

    /// One user by the store's id, removed or not.
    pub async fn get_user(&self, id: i64) -> Result<Option<StoredUser>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, tenant_id, mdm_id, mdm_user_id, username, email, first_name, last_name,
                    display_name, first_seen_at, updated_at, last_seen_at, removed_at
             FROM users WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
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

    /// Users of an MDM that are not removed.
    pub async fn live_user_count(&self, mdm_id: i64) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE mdm_id = ? AND removed_at IS NULL",
        )
        .bind(mdm_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
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

async fn refresh_collisions(
    conn: &mut SqliteConnection,
    tenant_id: &str,
) -> Result<u64, StoreError> {
    sqlx::query(
        // Four EXISTS, each on its identifier's index: an OR inside one
        // subquery would scan the tenant's devices once per device.
        "UPDATE devices SET collision = (+removed_at IS NULL AND (
             EXISTS (SELECT 1 FROM devices o WHERE o.tenant_id = devices.tenant_id
                     AND o.udid = devices.udid AND o.id <> devices.id AND +o.removed_at IS NULL)
             OR EXISTS (SELECT 1 FROM devices o WHERE o.tenant_id = devices.tenant_id
                     AND o.serial = devices.serial AND o.id <> devices.id
                     AND +o.removed_at IS NULL)
             OR EXISTS (SELECT 1 FROM devices o WHERE o.tenant_id = devices.tenant_id
                     AND o.imei = devices.imei AND o.id <> devices.id AND +o.removed_at IS NULL)
             OR EXISTS (SELECT 1 FROM devices o WHERE o.tenant_id = devices.tenant_id
                     AND o.mac = devices.mac AND o.id <> devices.id AND +o.removed_at IS NULL)))
         WHERE tenant_id = ?",
    )
    .bind(tenant_id)
    .execute(&mut *conn)
    .await?;
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM devices WHERE tenant_id = ? AND collision = 1")
            .bind(tenant_id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(n.try_into().unwrap_or(0))
}

/// Counts are u64 in Rust and INTEGER (i64) in SQLite; no real count comes near the limit.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use chrono::TimeZone;

    async fn run(store: &Store, mdm: i64) -> i64 {
        store
            .start_sync_run(mdm, SyncTrigger::Scheduled)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_sync_run_records_its_outcome_counts_and_the_last_successful_sync() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let id = run(&store, mdm).await;
        let started = store.sync_run(id).await.unwrap().unwrap();
        assert_eq!(started.outcome, SyncOutcome::Running);
        assert_eq!(started.trigger, "scheduled");
        assert_eq!(started.tenant_id, "acme");
        let counts = RunCounts {
            added: 3,
            updated: 1,
            removed: 2,
            skipped: 4,
            held_removals: 5,
        };
        store
            .finish_sync_run(id, SyncOutcome::Succeeded, counts, None)
            .await
            .unwrap();
        let done = store.sync_run(id).await.unwrap().unwrap();
        assert_eq!(done.outcome, SyncOutcome::Succeeded);
        assert!(done.finished_at.is_some());
        assert_eq!(
            (
                done.added,
                done.updated,
                done.removed,
                done.skipped,
                done.held_removals
            ),
            (3, 1, 2, 4, 5)
        );
        assert_eq!(
            store.integration(mdm).await.unwrap().last_synced_at,
            done.finished_at
        );

        let again = store
            .finish_sync_run(id, SyncOutcome::Failed, RunCounts::default(), Some("x"))
            .await
            .unwrap_err();
        assert!(
            matches!(again, StoreError::NotFound { .. }),
            "a run ends once"
        );
    }

    #[tokio::test]
    async fn a_failed_run_keeps_its_error_and_interrupted_runs_are_marked_failed() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let failed = run(&store, mdm).await;
        store
            .finish_sync_run(
                failed,
                SyncOutcome::Failed,
                RunCounts::default(),
                Some("page 2: 503"),
            )
            .await
            .unwrap();
        let cut_short = run(&store, mdm).await;
        assert_eq!(store.fail_interrupted_runs().await.unwrap(), 1);
        let runs = store.sync_runs(mdm, 10).await.unwrap();
        assert_eq!(
            runs.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![cut_short, failed]
        );
        assert_eq!(runs[0].outcome, SyncOutcome::Failed);
        assert!(runs[0].error.as_deref().unwrap().contains("interrupted"));
        assert_eq!(runs[1].error.as_deref(), Some("page 2: 503"));
        assert_eq!(store.integration(mdm).await.unwrap().last_synced_at, None);
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
    async fn users_and_groups_count_added_then_unchanged_then_updated() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        let mut users = vec![user("a"), user("b")];
        let c = store
            .upsert_users(r, mdm, &users, Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (2, 0));
        let c = store
            .upsert_users(r, mdm, &users, Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (0, 0));
        users[1].last_name = Some("Roe".into());
        let c = store
            .upsert_users(r, mdm, &users, Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (0, 1));

        let groups = [Group {
            mdm_group_id: "7".into(),
            name: "Sales".into(),
        }];
        let c = store.upsert_groups(r, mdm, &groups).await.unwrap();
        assert_eq!((c.added, c.updated), (1, 0));
        let c = store.upsert_groups(r, mdm, &groups).await.unwrap();
        assert_eq!((c.added, c.updated), (0, 0));
    }

    #[tokio::test]
    async fn a_user_without_names_is_displayed_by_login_then_email_then_key() {
        let mut u = User {
            mdm_user_id: "42".into(),
            ..User::default()
        };
        assert_eq!(display_name(&u), "42");
        u.email = Some("j@x.example".into());
        assert_eq!(display_name(&u), "j@x.example");
        u.username = Some("jdoe".into());
        assert_eq!(display_name(&u), "jdoe");
        u.last_name = Some(" Doe ".into());
        assert_eq!(display_name(&u), "Doe");
    }

    #[tokio::test]
    async fn remove_unseen_soft_deletes_what_the_run_did_not_see() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut d1 = device("1");
        d1.user = Some(user("u1"));
        d1.groups = vec!["g1".into()];
        let mut d2 = device("2");
        d2.user = Some(user("u2"));
        let first = run(&store, mdm).await;
        store
            .upsert_devices(first, mdm, &[d1.clone(), d2.clone()], Pii::Clear)
            .await
            .unwrap();
        store
            .finish_sync_run(first, SyncOutcome::Succeeded, RunCounts::default(), None)
            .await
            .unwrap();

        let second = run(&store, mdm).await;
        d1.groups.clear();
        store
            .upsert_devices(second, mdm, &[d1.clone()], Pii::Clear)
            .await
            .unwrap();
        let would = store.unseen_counts(mdm, second).await.unwrap();
        assert_eq!(
            would,
            RemovalCounts {
                devices: 1,
                users: 1,
                groups: 1
            }
        );
        assert_eq!(
            store.live_device_count(mdm).await.unwrap(),
            2,
            "counting removes nothing"
        );
        let removed = store.remove_unseen(mdm, second).await.unwrap();
        assert_eq!(removed, would);
        assert_eq!(store.live_device_count(mdm).await.unwrap(), 1);
        assert!(store
            .find_devices("acme", &DeviceIdentifier::MdmDeviceId("2".into()))
            .await
            .unwrap()
            .is_empty());
        let gone = store.get_device(2).await.unwrap().expect("the row stays");
        assert!(gone.removed_at.is_some());
        assert!(store
            .get_user(gone.user_id.unwrap())
            .await
            .unwrap()
            .unwrap()
            .removed_at
            .is_some());

        // It comes back: counted as added, live again.
        let third = run(&store, mdm).await;
        let c = store
            .upsert_devices(third, mdm, &[d1, d2], Pii::Clear)
            .await
            .unwrap();
        assert_eq!((c.added, c.updated), (1, 0));
        assert!(store
            .get_device(2)
            .await
            .unwrap()
            .unwrap()
            .removed_at
            .is_none());
        assert_eq!(
            store.remove_unseen(mdm, third).await.unwrap(),
            RemovalCounts::default()
        );
    }

    #[tokio::test]
    async fn remove_unseen_refuses_a_run_of_another_mdm() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        let err = store.remove_unseen(mdm + 1, r).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        let err = store.unseen_counts(mdm, r + 1).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
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

    #[tokio::test]
    async fn devices_sharing_a_serial_are_both_kept_flagged_and_found_latest_check_in_first() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut old = device("1");
        old.identifiers.serial = Some("SAME".into());
        old.last_checkin_at = Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let mut new = device("2");
        new.identifiers.serial = Some("same".into());
        new.last_checkin_at = Some(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        let r = run(&store, mdm).await;
        let c = store
            .upsert_devices(r, mdm, &[old.clone(), new.clone(), device("3")], Pii::Clear)
            .await
            .unwrap();
        assert_eq!(c.collisions, 1, "the second one found the first");
        let found = store
            .find_devices("acme", &DeviceIdentifier::Serial("same".into()))
            .await
            .unwrap();
        assert_eq!(
            found
                .iter()
                .map(|d| d.mdm_device_id.as_str())
                .collect::<Vec<_>>(),
            vec!["2", "1"]
        );
        assert!(found.iter().all(|d| d.collision));
        assert!(!store.get_device(3).await.unwrap().unwrap().collision);

        // Once one of them is gone, the other is no longer a collision.
        let r2 = run(&store, mdm).await;
        store
            .upsert_devices(r2, mdm, &[new, device("3")], Pii::Clear)
            .await
            .unwrap();
        store.remove_unseen(mdm, r2).await.unwrap();
        let left = store
            .find_devices("acme", &DeviceIdentifier::Serial("SAME".into()))
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
        assert!(!left[0].collision);
        assert_eq!(store.refresh_collisions("acme").await.unwrap(), 0);
    }

    #[derive(Debug)]
    struct TestMasker;
    impl PiiMasker for TestMasker {
        fn mask(&self, u: &User) -> MaskedUser {
            MaskedUser {
                user: User {
                    mdm_user_id: u.mdm_user_id.clone(),
                    username: u.username.as_ref().map(|_| "j***".into()),
                    email: u.email.as_ref().map(|_| "j***@***".into()),
                    first_name: u.first_name.as_ref().map(|_| "J.".into()),
                    last_name: u.last_name.as_ref().map(|_| "D.".into()),
                },
                pii_hash: format!("hash-of-{}", u.mdm_user_id),
            }
        }
    }

    #[tokio::test]
    async fn masked_users_never_reach_the_database_file_in_clear() {
        let (dir, store, mdm) = store_with_mdm().await;
        let mut d = device("1");
        d.user = Some(user("secretperson"));
        let r = run(&store, mdm).await;
        store
            .upsert_devices(r, mdm, &[d], Pii::Masked(&TestMasker))
            .await
            .unwrap();
        let c = store
            .upsert_users(r, mdm, &[user("otherperson")], Pii::Masked(&TestMasker))
            .await
            .unwrap();
        assert_eq!(c.added, 1);
        let again = store
            .upsert_users(r, mdm, &[user("otherperson")], Pii::Masked(&TestMasker))
            .await
            .unwrap();
        assert_eq!(again, UpsertCounts::default(), "the masked form is stable");
        let u = store.get_user(1).await.unwrap().unwrap();
        assert_eq!(u.display_name, "J. D.");
        assert_eq!(u.email.as_deref(), Some("j***@***"));
        store.close().await;
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        let text = String::from_utf8_lossy(&bytes);
        for clear in [
            "secretperson@acme.example",
            "secretperson-login",
            "Jane",
            "otherperson@",
        ] {
            assert!(!text.contains(clear), "{clear} is in the file");
        }
        assert!(text.contains("hash-of-secretperson"));
    }
}
