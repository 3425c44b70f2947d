//! The inventory mirrored from each MDM: users, groups, devices and their
//! group memberships.
//!
//! A full sync starts a run (`sync_runs`), streams batches through the `upsert_*` methods
//! (each batch one transaction, every row tagged with the run), then, only
//! if the listing completed, calls [`Store::remove_unseen`] and finishes the
//! run. Removal is a soft delete (`removed_at`), so events and actions keep
//! their device. "Updated" counts a row only when a stored value actually
//! changed, so a sync with nothing new reports 0.
//!
//! A batch costs a fixed number of statements, not a few per row: the
//! stored rows of the batch are read in one `SELECT`, compared in memory
//! (in batch order, so the counts are those of one-row-at-a-time writes),
//! and written with one multi-row statement per kind of write (new rows,
//! changed rows, unchanged rows that are only stamped seen by the run,
//! memberships, collision flags). Each statement takes the batch as one
//! JSON array read with `json_each`, so its SQL text, and sqlx's cached
//! prepared statement, is the same for every batch size. Every statement
//! round trip goes to sqlx's SQLite thread; at ~10 per device they were
//! what a full sync spent its time on.

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use mtd_adapter::{
    normalize_imei, normalize_mac, normalize_serial, normalize_udid, Device, DeviceIdentifier,
    Group, Identifiers, Ownership, Platform, User,
};
use serde::Serialize;
use sqlx::{FromRow, SqliteConnection};
use std::collections::HashMap;
use std::fmt;

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
pub(super) struct Scope {
    pub(super) tenant_id: String,
    pub(super) mdm_id: i64,
    /// `None` for an on-demand lookup, which keeps a device's run tag.
    pub(super) run_id: Option<i64>,
    pub(super) now: DateTime<Utc>,
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

pub(super) async fn scope(
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

// The statements of the bulk writes below, one bound JSON array each (see
// [`json_rows`]); every one is checked for its query plan by a test.
const USERS_STORED: &str =
    "SELECT u.id, u.mdm_user_id, u.removed_at IS NOT NULL AS removed, u.username, u.email,
     u.first_name, u.last_name, u.display_name, u.pii_hash
     FROM json_each(?2) AS j CROSS JOIN users AS u
     ON u.mdm_id = ?1 AND u.mdm_user_id = j.value";

const USERS_INSERT: &str =
    "INSERT INTO users (tenant_id, mdm_id, mdm_user_id, username, email, first_name,
     last_name, display_name, pii_hash, first_seen_at, updated_at, last_seen_at,
     last_sync_run_id)
     SELECT ?1, ?2, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3,
     j.value ->> 4, j.value ->> 5, j.value ->> 6, ?3, ?3, ?3, ?4
     FROM json_each(?5) AS j WHERE true
     RETURNING id, mdm_user_id";

const USERS_UPDATE: &str = "UPDATE users SET username = j.value ->> 1, email = j.value ->> 2,
     first_name = j.value ->> 3, last_name = j.value ->> 4,
     display_name = j.value ->> 5, pii_hash = j.value ->> 6,
     updated_at = ?1, last_seen_at = ?1,
     last_sync_run_id = COALESCE(?2, last_sync_run_id), removed_at = NULL
     FROM json_each(?3) AS j WHERE users.id = j.value ->> 0";

const USERS_SEEN: &str =
    "UPDATE users SET last_seen_at = ?1, last_sync_run_id = COALESCE(?2, last_sync_run_id)
     WHERE id IN (SELECT value FROM json_each(?3))";

const GROUPS_STORED: &str = "SELECT g.id, g.mdm_group_id, g.removed_at IS NOT NULL
     FROM json_each(?2) AS j CROSS JOIN groups AS g
     ON g.mdm_id = ?1 AND g.mdm_group_id = j.value";

const GROUPS_SEEN: &str =
    "UPDATE groups SET last_seen_at = ?1, last_sync_run_id = COALESCE(?2, last_sync_run_id)
     WHERE id IN (SELECT value FROM json_each(?3))";

const DEVICES_STORED: &str =
    "SELECT d.id, d.mdm_device_id, d.removed_at IS NOT NULL AS removed, d.collision,
     d.udid, d.serial, d.imei, d.mac, d.name, d.platform, d.model, d.os_version,
     d.ownership, d.user_id,
     (SELECT group_concat(group_id) FROM device_groups WHERE device_id = d.id)
     AS group_ids
     FROM json_each(?2) AS j CROSS JOIN devices AS d
     ON d.mdm_id = ?1 AND d.mdm_device_id = j.value";

const DEVICES_INSERT: &str =
    "INSERT INTO devices (tenant_id, mdm_id, mdm_device_id, udid, serial, imei, mac,
     name, platform, model, os_version, ownership, user_id, last_checkin_at,
     first_seen_at, updated_at, last_seen_at, last_sync_run_id)
     SELECT ?1, ?2, j.value ->> 0, j.value ->> '$[1][0]', j.value ->> '$[1][1]',
     j.value ->> '$[1][2]', j.value ->> '$[1][3]', j.value ->> 2, j.value ->> 3,
     j.value ->> 4, j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8,
     ?3, ?3, ?3, ?4
     FROM json_each(?5) AS j WHERE true
     RETURNING id, mdm_device_id";

const DEVICES_UPDATE: &str =
    "UPDATE devices SET udid = j.value ->> '$[1][0]', serial = j.value ->> '$[1][1]',
     imei = j.value ->> '$[1][2]', mac = j.value ->> '$[1][3]',
     name = j.value ->> 2, platform = j.value ->> 3, model = j.value ->> 4,
     os_version = j.value ->> 5, ownership = j.value ->> 6, user_id = j.value ->> 7,
     last_checkin_at = COALESCE(j.value ->> 8, last_checkin_at),
     updated_at = ?1, last_seen_at = ?1,
     last_sync_run_id = COALESCE(?2, last_sync_run_id), removed_at = NULL
     FROM json_each(?3) AS j WHERE devices.id = j.value ->> 0";

const DEVICES_SEEN: &str =
    "UPDATE devices SET last_checkin_at = COALESCE(j.value ->> 1, last_checkin_at),
     last_seen_at = ?1, last_sync_run_id = COALESCE(?2, last_sync_run_id)
     FROM json_each(?3) AS j WHERE devices.id = j.value ->> 0";

const MEMBERSHIPS_DELETE: &str =
    "DELETE FROM device_groups WHERE device_id IN (SELECT value FROM json_each(?1))";

const MEMBERSHIPS_INSERT: &str = "INSERT INTO device_groups (device_id, group_id)
     SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?1) AS j";

const COLLISION_PAIRS: &str = "WITH p (id, udid, serial, imei, mac) AS MATERIALIZED (
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4
     FROM json_each(?2) AS j)
     SELECT p.id, o.id FROM p CROSS JOIN devices AS o
     ON o.tenant_id = ?1 AND o.udid = p.udid
     WHERE o.id <> p.id AND +o.removed_at IS NULL
     UNION SELECT p.id, o.id FROM p CROSS JOIN devices AS o
     ON o.tenant_id = ?1 AND o.serial = p.serial
     WHERE o.id <> p.id AND +o.removed_at IS NULL
     UNION SELECT p.id, o.id FROM p CROSS JOIN devices AS o
     ON o.tenant_id = ?1 AND o.imei = p.imei
     WHERE o.id <> p.id AND +o.removed_at IS NULL
     UNION SELECT p.id, o.id FROM p CROSS JOIN devices AS o
     ON o.tenant_id = ?1 AND o.mac = p.mac
     WHERE o.id <> p.id AND +o.removed_at IS NULL";

const COLLISIONS_FLAG: &str = "UPDATE devices SET collision = 1
     WHERE collision = 0 AND id IN (SELECT value FROM json_each(?1))";

/// Where a batch of users comes from: the MDM's user listing says all it
/// knows of a user; the user embedded in a device record often says less
/// (BCDM: the id alone; AirWatch: login and e-mail, no names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserSource {
    Listing,
    Embedded,
}

impl UserValues {
    /// An embedded user's values over a stored user's: a value the device
    /// record gives wins, one it does not give keeps the stored value, so a
    /// device may add to a user but never erase what a listing gave.
    fn added_to(self, stored: &UserValues) -> UserValues {
        let username = self.username.or_else(|| stored.username.clone());
        let email = self.email.or_else(|| stored.email.clone());
        let first_name = self.first_name.or_else(|| stored.first_name.clone());
        let last_name = self.last_name.or_else(|| stored.last_name.clone());
        let same = username == stored.username
            && email == stored.email
            && first_name == stored.first_name
            && last_name == stored.last_name;
        if same {
            // Nothing new: the stored row, hash included, stands as it is.
            return UserValues {
                username,
                email,
                first_name,
                last_name,
                display_name: stored.display_name.clone(),
                pii_hash: stored.pii_hash.clone(),
            };
        }
        let display_name = display_name(&User {
            mdm_user_id: String::new(),
            username: username.clone(),
            email: email.clone(),
            first_name: first_name.clone(),
            last_name: last_name.clone(),
        });
        UserValues {
            display_name: if display_name.is_empty() {
                stored.display_name.clone()
            } else {
                display_name
            },
            username,
            email,
            first_name,
            last_name,
            // The listing's hash, made from the fuller record, stays the key.
            pii_hash: stored.pii_hash.clone().or(self.pii_hash),
        }
    }
}

/// A user's values as they will be stored (masked where the MDM masks PII),
/// and its key (masked too where the MDM keys users by e-mail or name).
fn user_values(user: &User, pii: Pii<'_>) -> (String, UserValues) {
    let (user, pii_hash) = match pii {
        Pii::Clear => (user.clone(), None),
        Pii::Masked(m) => {
            let masked = m.mask(user);
            (masked.user, Some(masked.pii_hash))
        }
    };
    let values = UserValues {
        display_name: display_name(&user),
        username: user.username,
        email: user.email,
        first_name: user.first_name,
        last_name: user.last_name,
        pii_hash,
    };
    (user.mdm_user_id, values)
}

/// What a batch does to one stored row: its id (`None` until inserted),
/// whether it was removed before the batch, its values as the batch leaves
/// them, and whether any listing of it in the batch changed something.
struct RowState<V> {
    id: Option<i64>,
    removed: bool,
    values: V,
    changed: bool,
    /// Not stored before the batch: inserted with its final values.
    new: bool,
}

impl<V: PartialEq> RowState<V> {
    /// Applies one listing of the row, in batch order, and says what it did:
    /// the same decision the one-row-at-a-time writes made, so a record
    /// listed twice in one batch counts once as added and then as what its
    /// second listing changed.
    fn apply(&mut self, new: V, extra_change: bool) -> Change {
        let change = if self.removed {
            Change::Added
        } else if self.values != new || extra_change {
            Change::Updated
        } else {
            Change::Unchanged
        };
        self.removed = false;
        self.values = new;
        self.changed |= change != Change::Unchanged;
        change
    }
}

/// The JSON array a bulk statement reads with `json_each` (one bound
/// parameter, so the SQL text, and with it sqlx's cached prepared statement,
/// is the same whatever the batch size).
fn json_rows<T: Serialize>(rows: &T) -> String {
    // Plain tuples of strings, numbers and options: serialising cannot fail.
    serde_json::to_string(rows).expect("rows serialise to JSON")
}

/// Writes the users of a batch in a handful of statements: one `SELECT` of
/// the stored ones, one multi-row `INSERT` of the new ones, one `UPDATE` of
/// the changed ones, and one of the unchanged ones that only stamps them
/// seen by the run. Returns each user's id by its stored key, and the counts.
async fn upsert_users_bulk(
    conn: &mut SqliteConnection,
    s: &Scope,
    listed: Vec<(String, UserValues)>,
    source: UserSource,
) -> Result<(HashMap<String, i64>, UpsertCounts), StoreError> {
    let mut counts = UpsertCounts::default();
    if listed.is_empty() {
        return Ok((HashMap::new(), counts));
    }
    let mut keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    #[derive(FromRow)]
    struct Existing {
        id: i64,
        mdm_user_id: String,
        removed: bool,
        #[sqlx(flatten)]
        values: UserValues,
    }
    // CROSS JOIN: json_each outside, so each key is one probe of the
    // (mdm_id, mdm_user_id) index instead of a scan of the MDM's users.
    let existing: Vec<Existing> = sqlx::query_as(USERS_STORED)
        .bind(s.mdm_id)
        .bind(json_rows(&keys))
        .fetch_all(&mut *conn)
        .await?;
    let mut state: HashMap<String, RowState<UserValues>> = existing
        .into_iter()
        .map(|e| {
            let row = RowState {
                id: Some(e.id),
                removed: e.removed,
                values: e.values,
                changed: false,
                new: false,
            };
            (e.mdm_user_id, row)
        })
        .collect();
    let mut new_keys = Vec::new();
    for (key, values) in listed {
        match state.get_mut(&key) {
            Some(row) => {
                let values = match source {
                    UserSource::Listing => values,
                    UserSource::Embedded => values.added_to(&row.values),
                };
                counts.count(row.apply(values, false))
            }
            None => {
                counts.count(Change::Added);
                new_keys.push(key.clone());
                let row = RowState {
                    id: None,
                    removed: false,
                    values,
                    changed: true,
                    new: true,
                };
                state.insert(key, row);
            }
        }
    }

    if !new_keys.is_empty() {
        let rows: Vec<_> = new_keys
            .iter()
            .map(|k| {
                let v = &state[k].values;
                (
                    k,
                    &v.username,
                    &v.email,
                    &v.first_name,
                    &v.last_name,
                    &v.display_name,
                    &v.pii_hash,
                )
            })
            .collect();
        let inserted: Vec<(i64, String)> = sqlx::query_as(USERS_INSERT)
            .bind(&s.tenant_id)
            .bind(s.mdm_id)
            .bind(s.now)
            .bind(s.run_id)
            .bind(json_rows(&rows))
            .fetch_all(&mut *conn)
            .await?;
        for (id, key) in inserted {
            if let Some(row) = state.get_mut(&key) {
                row.id = Some(id);
            }
        }
    }

    let mut changed = Vec::new();
    let mut unchanged = Vec::new();
    for row in state.values().filter(|r| !r.new) {
        match row.id {
            Some(id) if row.changed => changed.push((id, &row.values)),
            Some(id) => unchanged.push(id),
            None => {}
        }
    }
    if !changed.is_empty() {
        let rows: Vec<_> = changed
            .iter()
            .map(|(id, v)| {
                (
                    id,
                    &v.username,
                    &v.email,
                    &v.first_name,
                    &v.last_name,
                    &v.display_name,
                    &v.pii_hash,
                )
            })
            .collect();
        sqlx::query(USERS_UPDATE)
            .bind(s.now)
            .bind(s.run_id)
            .bind(json_rows(&rows))
            .execute(&mut *conn)
            .await?;
    }
    if !unchanged.is_empty() {
        sqlx::query(USERS_SEEN)
            .bind(s.now)
            .bind(s.run_id)
            .bind(json_rows(&unchanged))
            .execute(&mut *conn)
            .await?;
    }
    let ids = state
        .into_iter()
        .filter_map(|(k, r)| r.id.map(|id| (k, id)))
        .collect();
    Ok((ids, counts))
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

/// Resolves the groups a batch of devices names to their ids: one `SELECT`
/// for all of them, one `UPDATE` that stamps the live ones seen, and the
/// one-row [`upsert_group`] only for the rare unknown or removed group.
async fn resolve_groups(
    conn: &mut SqliteConnection,
    s: &Scope,
    keys: &[&str],
) -> Result<HashMap<String, i64>, StoreError> {
    let mut ids = HashMap::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(ids);
    }
    let found: Vec<(i64, String, bool)> = sqlx::query_as(GROUPS_STORED)
        .bind(s.mdm_id)
        .bind(json_rows(&keys))
        .fetch_all(&mut *conn)
        .await?;
    let mut live = Vec::with_capacity(found.len());
    for (id, key, removed) in found {
        if !removed {
            live.push(id);
            ids.insert(key, id);
        }
    }
    if !live.is_empty() {
        sqlx::query(GROUPS_SEEN)
            .bind(s.now)
            .bind(s.run_id)
            .bind(json_rows(&live))
            .execute(&mut *conn)
            .await?;
    }
    for key in keys {
        if !ids.contains_key(*key) {
            let (id, _) = upsert_group(conn, s, key, None).await?;
            ids.insert((*key).to_string(), id);
        }
    }
    Ok(ids)
}

/// What a device's "changed?" compares: its stored values and its set of
/// groups (sorted ids).
#[derive(PartialEq)]
struct DeviceState {
    values: DeviceValues,
    groups: Vec<i64>,
}

/// One device of a batch on its way through [`upsert_devices_bulk`].
struct DeviceSlot {
    row: RowState<DeviceState>,
    /// The memberships stored before the batch (`None`: a new device).
    stored_groups: Option<Vec<i64>>,
    /// The latest check-in time the batch listed (a listing without one keeps the stored one).
    checkin: Option<DateTime<Utc>>,
    /// Live (stored and not removed) before the batch.
    live_before: bool,
    /// Flagged as a collision before the batch.
    collision_before: bool,
    /// Position of its first listing in the batch.
    pos: usize,
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

/// Flags every device of the batch that shares a udid, serial, imei or mac
/// with another live device of the tenant, and those devices too, in two
/// statements. Returns how many devices of the batch the one-at-a-time
/// writes would have counted as newly flagged: a device counts when, at its
/// turn in the batch, it had a live peer (devices later in the batch that
/// were not live yet did not exist then) and no earlier device of the batch
/// had flagged it already. Flags are only set here;
/// [`Store::refresh_collisions`] clears stale ones.
async fn mark_collisions_bulk(
    conn: &mut SqliteConnection,
    tenant_id: &str,
    slots: &HashMap<&str, DeviceSlot>,
) -> Result<u64, StoreError> {
    let rows: Vec<_> = slots
        .values()
        .filter_map(|slot| {
            let v = &slot.row.values.values;
            let any = v.udid.is_some() || v.serial.is_some() || v.imei.is_some() || v.mac.is_some();
            any.then_some((slot.row.id?, &v.udid, &v.serial, &v.imei, &v.mac))
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    // `col = NULL` is never true, so an absent identifier matches nothing.
    // One indexed probe per identifier and device (an OR across the columns
    // would make SQLite scan the tenant's devices); `+removed_at` keeps the
    // planner off the (tenant_id, removed_at) index.
    let pairs: Vec<(i64, i64)> = sqlx::query_as(COLLISION_PAIRS)
        .bind(tenant_id)
        .bind(json_rows(&rows))
        .fetch_all(&mut *conn)
        .await?;
    if pairs.is_empty() {
        return Ok(0);
    }
    let mut flagged: Vec<i64> = pairs.iter().flat_map(|(x, o)| [*x, *o]).collect();
    flagged.sort_unstable();
    flagged.dedup();
    sqlx::query(COLLISIONS_FLAG)
        .bind(json_rows(&flagged))
        .execute(&mut *conn)
        .await?;

    // The order-dependent count (see above).
    let by_id: HashMap<i64, &DeviceSlot> = slots
        .values()
        .filter_map(|s| s.row.id.map(|id| (id, s)))
        .collect();
    let mut peers: HashMap<i64, Vec<i64>> = HashMap::new();
    for (x, o) in &pairs {
        peers.entry(*x).or_default().push(*o);
    }
    let existed_at = |o: &i64, pos: usize| match by_id.get(o) {
        None => true,
        Some(other) => other.live_before || other.pos < pos,
    };
    let had_peer = |x: &i64| {
        let pos = by_id[x].pos;
        peers
            .get(x)
            .is_some_and(|ps| ps.iter().any(|o| existed_at(o, pos)))
    };
    let mut counted = 0;
    for (x, ps) in &peers {
        let slot = by_id[x];
        if slot.collision_before || !had_peer(x) {
            continue;
        }
        let flagged_earlier = slot.live_before
            && ps
                .iter()
                .any(|y| by_id.get(y).is_some_and(|o| o.pos < slot.pos) && had_peer(y));
        if !flagged_earlier {
            counted += 1;
        }
    }
    Ok(counted)
}

impl Store {
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
        let listed = users.iter().map(|u| user_values(u, pii)).collect();
        let (_, counts) = upsert_users_bulk(&mut tx, &s, listed, UserSource::Listing).await?;
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

#[cfg(test)]
mod tests {
    use super::super::sync_runs::testutil::run;
    use super::super::testutil::*;
    use super::super::{RunCounts, SyncOutcome};
    use super::*;
    use chrono::TimeZone;

    /// The bulk statements stay one index probe per row of the batch: a
    /// plan that scans an inventory table (or walks the tenant's index)
    /// makes every page cost as much as the whole MDM, and a full sync
    /// quadratic. SQLite has no statistics here (no ANALYZE), so the join
    /// order is pinned with CROSS JOIN; this test keeps it pinned.
    #[tokio::test]
    async fn every_bulk_statement_probes_an_index_per_row_and_scans_no_table() {
        let (_dir, store, _) = store_with_mdm().await;
        for (name, sql) in [
            ("USERS_STORED", USERS_STORED),
            ("USERS_INSERT", USERS_INSERT),
            ("USERS_UPDATE", USERS_UPDATE),
            ("USERS_SEEN", USERS_SEEN),
            ("GROUPS_STORED", GROUPS_STORED),
            ("GROUPS_SEEN", GROUPS_SEEN),
            ("DEVICES_STORED", DEVICES_STORED),
            ("DEVICES_INSERT", DEVICES_INSERT),
            ("DEVICES_UPDATE", DEVICES_UPDATE),
            ("DEVICES_SEEN", DEVICES_SEEN),
            ("MEMBERSHIPS_DELETE", MEMBERSHIPS_DELETE),
            ("MEMBERSHIPS_INSERT", MEMBERSHIPS_INSERT),
            ("COLLISION_PAIRS", COLLISION_PAIRS),
            ("COLLISIONS_FLAG", COLLISIONS_FLAG),
        ] {
            let params = (1..=9).filter(|n| sql.contains(&format!("?{n}"))).count();
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
            for _ in 0..params {
                q = q.bind("[]");
            }
            let plan: Vec<String> = q
                .fetch_all(store.pool())
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.3)
                .collect();
            for line in &plan {
                let scans_table = line.starts_with("SCAN ")
                    && !line.contains("VIRTUAL TABLE")
                    && !line.starts_with("SCAN p")
                    && !line.starts_with("SCAN json_each");
                assert!(
                    !scans_table && !line.contains("_tenant"),
                    "{name}: `{line}` in {plan:#?}"
                );
            }
        }
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
    async fn three_devices_sharing_a_serial_in_one_batch_count_as_two_new_collisions() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let batch: Vec<Device> = ["a", "b", "c"]
            .into_iter()
            .map(|id| {
                let mut d = device(id);
                d.identifiers.serial = Some("SHARED".into());
                d
            })
            .collect();
        let r = run(&store, mdm).await;
        let c = store
            .upsert_devices(r, mdm, &batch, Pii::Clear)
            .await
            .unwrap();
        assert_eq!(
            c.collisions, 2,
            "as one at a time: b finds a, c finds a and b"
        );
        let found = store
            .find_devices("acme", &DeviceIdentifier::Serial("shared".into()))
            .await
            .unwrap();
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|d| d.collision));
        let again = store
            .upsert_devices(run(&store, mdm).await, mdm, &batch, Pii::Clear)
            .await
            .unwrap();
        assert_eq!(again.collisions, 0, "already flagged");
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
