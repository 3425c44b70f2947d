//! Read queries for the admin API: paginated, filtered lists of a tenant's
//! devices, users, events, actions and sync runs, one action by id, and the
//! per-MDM health figures of `GET /v1/admin/tenants/{id}/status`.
//!
//! Lists use keyset pagination on the row id (never an offset, so a row
//! written while an admin pages is neither repeated nor skipped): a page asks
//! for `limit + 1` rows after the last id it saw and reports whether there was
//! more. Inventory pages go by ascending id (stable, oldest first); events,
//! actions and sync runs by descending id (newest first, what an admin looks
//! for). Filters are built with `QueryBuilder` and bound, never formatted in.
//!
//! Everything here reads what the store holds: for an MDM with `mask_pii` that
//! is already the masked form, and nothing here can add a clear value.

use super::inventory::{DeviceRow, DEVICE_COLUMNS};
use super::RiskLevel;
use super::{ActionRecordKind, ActionState};
use super::{Store, StoreError, StoredAction, StoredDevice, StoredEvent, StoredUser, SyncRun};
use chrono::{DateTime, Utc};
use mtd_adapter::{normalize_imei, normalize_mac, normalize_serial, normalize_udid, Platform};
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, QueryBuilder, Row, Sqlite, SqliteConnection};
use std::collections::HashMap;

/// Live devices per MDM, for `/metrics` on every scrape: read from the
/// `devices_live` index (migration 0006), not from every device row.
pub(crate) const LIVE_DEVICES_PER_MDM: &str =
    "SELECT mdm_id, COUNT(*) FROM devices WHERE removed_at IS NULL GROUP BY mdm_id";

/// Which page of a list: the rows after `after` (in the list's order), at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// The id of the last row of the previous page; `None` for the first page.
    pub after: Option<i64>,
    /// Rows per page (the caller bounds it).
    pub limit: u32,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// The id to pass as [`Page::after`] for the next page; `None` on the last page.
    pub next_after: Option<i64>,
}

impl<T> Paged<T> {
    /// Cuts the `limit + 1` rows a query fetched down to a page.
    fn from_rows(mut rows: Vec<T>, page: Page, id: impl Fn(&T) -> i64) -> Paged<T> {
        let limit = page.limit as usize;
        let next_after = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(id)
        } else {
            None
        };
        Paged {
            items: rows,
            next_after,
        }
    }
}

/// Filters of the device list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Also list devices the MDM no longer has.
    pub include_removed: bool,
    /// Any of udid, serial, imei, mac (normalised here) or the MDM's device id.
    pub identifier: Option<String>,
    pub platform: Option<Platform>,
    /// A group's display name (`"<MDM name> <group name>"`) or its id at the MDM.
    pub group: Option<String>,
    pub mdm_id: Option<i64>,
    /// Devices at this risk level.
    pub risk: Option<RiskLevel>,
    /// Activated by their agent (`true`) or never (`false`).
    pub activated: Option<bool>,
    /// One device by the store's id.
    pub device_id: Option<i64>,
}

/// A device as the admin API lists it: the stored device, its MDM's name and
/// the display names of its groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminDevice {
    #[serde(flatten)]
    pub device: StoredDevice,
    /// The name of the MDM integration in the tenant file.
    pub mdm: String,
    /// `"<MDM name> <group name>"`, by name.
    pub groups: Vec<String>,
    /// The display name of the device's user (masked where the MDM masks PII).
    pub user_display_name: Option<String>,
}

/// Filters of the user list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub include_removed: bool,
    pub mdm_id: Option<i64>,
}

/// A user as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct AdminUser {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub user: StoredUser,
    pub mdm: String,
}

/// Filters of the event list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub device_id: Option<i64>,
    /// Exact threat type, e.g. `network.arp_mitm`.
    pub threat_type: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
}

/// Filters of the action list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionFilter {
    pub state: Option<ActionState>,
    pub kind: Option<ActionRecordKind>,
    pub device_id: Option<i64>,
}

/// An action as the admin API shows it: the stored row and its MDM's name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminAction {
    #[serde(flatten)]
    pub action: StoredAction,
    /// `None` when the action names no MDM (for example: device unknown).
    pub mdm: Option<String>,
}

impl FromRow<'_, SqliteRow> for AdminAction {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(AdminAction {
            action: StoredAction::from_row(row)?,
            mdm: row.try_get("mdm_name")?,
        })
    }
}

/// A sync run as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct AdminSyncRun {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub run: SyncRun,
    pub mdm: String,
}

/// What `/metrics` shows of one MDM integration ([`Store::mdm_metrics`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmMetrics {
    pub tenant_id: String,
    pub mdm: String,
    /// The end of its last successful full sync; `None`: never.
    pub last_synced_at: Option<DateTime<Utc>>,
    /// Live devices.
    pub devices: u64,
    /// Live devices at each level, in [`RiskLevel::ALL`] order.
    pub by_risk: Vec<(RiskLevel, u64)>,
}

/// The health figures of one MDM integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MdmHealth {
    /// The latest sync run, running or finished.
    pub last_sync: Option<SyncRun>,
    /// Failed sync runs that finished at or after the `since` asked for.
    pub failed_syncs: u64,
    /// The error of the latest of those.
    pub last_sync_error: Option<String>,
    pub last_sync_error_at: Option<DateTime<Utc>>,
    /// Live devices.
    pub devices: u64,
    /// Live devices flagged as sharing an identifier with another device.
    pub collisions: u64,
    /// Policy actions (Wi-Fi profile removals not included) by state.
    pub pending: u64,
    pub held: u64,
    pub failed: u64,
    pub dead: u64,
    /// Dead actions whose last change was at or after `since`.
    pub dead_recent: u64,
    /// Wi-Fi profile removals not sent yet (pending or failed).
    pub pending_wifi_removals: u64,
    /// Live devices whose agent has activated.
    pub activated_devices: u64,
}

#[derive(FromRow)]
struct DeviceListRow {
    /// The device columns, read exactly as `find_devices` reads them.
    #[sqlx(flatten)]
    device: DeviceRow,
    mdm_name: String,
    user_display_name: Option<String>,
}

impl DeviceListRow {
    fn into_admin(self, groups: Vec<String>) -> AdminDevice {
        AdminDevice {
            device: self.device.into(),
            mdm: self.mdm_name,
            groups,
            user_display_name: self.user_display_name,
        }
    }
}

/// Counts are INTEGER in SQLite; a negative one cannot happen.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Rows to fetch for a page: one more than shown tells whether there is more.
fn fetch_limit(page: Page) -> i64 {
    i64::from(page.limit) + 1
}

const ADMIN_SYNC_RUN_COLUMNS: &str = "r.id, r.tenant_id, r.mdm_id, r.trigger, r.started_at, \
     r.finished_at, r.outcome, r.error, r.added, r.updated, r.removed, r.skipped, \
     r.held_removals, m.name AS mdm";

impl Store {
    /// A page of a tenant's devices, by id, with their MDM and group names.
    pub async fn admin_devices(
        &self,
        tenant_id: &str,
        filter: &DeviceFilter,
        page: Page,
    ) -> Result<Paged<AdminDevice>, StoreError> {
        let columns: Vec<String> = DEVICE_COLUMNS
            .split(',')
            .map(|c| format!("d.{}", c.trim()))
            .collect();
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {}, m.name AS mdm_name, u.display_name AS user_display_name
             FROM devices d
             JOIN mdm_integrations m ON m.id = d.mdm_id
             LEFT JOIN users u ON u.id = d.user_id
             WHERE d.tenant_id = ",
            columns.join(", ")
        ));
        q.push_bind(tenant_id);
        if !filter.include_removed {
            q.push(" AND d.removed_at IS NULL");
        }
        if let Some(raw) = &filter.identifier {
            // One indexed lookup per identifier kind (as in inventory/collisions.rs); a
            // value that is not valid for a kind binds NULL, which matches nothing.
            q.push(" AND d.id IN (SELECT id FROM devices WHERE tenant_id = ")
                .push_bind(tenant_id)
                .push(" AND udid = ")
                .push_bind(normalize_udid(raw))
                .push(" UNION SELECT id FROM devices WHERE tenant_id = ")
                .push_bind(tenant_id)
                .push(" AND serial = ")
                .push_bind(normalize_serial(raw))
                .push(" UNION SELECT id FROM devices WHERE tenant_id = ")
                .push_bind(tenant_id)
                .push(" AND imei = ")
                .push_bind(normalize_imei(raw))
                .push(" UNION SELECT id FROM devices WHERE tenant_id = ")
                .push_bind(tenant_id)
                .push(" AND mac = ")
                .push_bind(normalize_mac(raw))
                .push(
                    " UNION SELECT id FROM devices WHERE mdm_id IN
                       (SELECT id FROM mdm_integrations WHERE tenant_id = ",
                )
                .push_bind(tenant_id)
                .push(") AND mdm_device_id = ")
                .push_bind(raw.trim().to_string())
                .push(")");
        }
        if let Some(platform) = filter.platform {
            q.push(" AND d.platform = ").push_bind(platform.as_str());
        }
        if let Some(group) = &filter.group {
            q.push(
                " AND EXISTS (SELECT 1 FROM device_groups dg
                   JOIN groups g ON g.id = dg.group_id
                   JOIN mdm_integrations gm ON gm.id = g.mdm_id
                   WHERE dg.device_id = d.id AND (gm.name || ' ' || g.name = ",
            )
            .push_bind(group.as_str())
            .push(" OR g.mdm_group_id = ")
            .push_bind(group.as_str())
            .push("))");
        }
        if let Some(mdm_id) = filter.mdm_id {
            q.push(" AND d.mdm_id = ").push_bind(mdm_id);
        }
        if let Some(risk) = filter.risk {
            q.push(" AND d.risk_level = ").push_bind(risk.as_str());
        }
        match filter.activated {
            Some(true) => {
                q.push(" AND d.activated_last_at IS NOT NULL");
            }
            Some(false) => {
                q.push(" AND d.activated_last_at IS NULL");
            }
            None => {}
        }
        if let Some(id) = filter.device_id {
            q.push(" AND d.id = ").push_bind(id);
        }
        if let Some(after) = page.after {
            q.push(" AND d.id > ").push_bind(after);
        }
        q.push(" ORDER BY d.id LIMIT ").push_bind(fetch_limit(page));
        let rows: Vec<DeviceListRow> = q.build_query_as().fetch_all(&self.pool).await?;
        let rows = Paged::from_rows(rows, page, |r| r.device.id);

        // The group names of the whole page in one query.
        let ids: Vec<i64> = rows.items.iter().map(|r| r.device.id).collect();
        let mut groups = self.group_names_of(&ids).await?;
        Ok(Paged {
            items: rows
                .items
                .into_iter()
                .map(|r| {
                    let g = groups.remove(&r.device.id).unwrap_or_default();
                    r.into_admin(g)
                })
                .collect(),
            next_after: rows.next_after,
        })
    }

    /// The groups of each device as admins see them (`"<MDM name> <group
    /// name>"`, by name), in one query; devices without a group are absent.
    pub async fn group_names_of(
        &self,
        device_ids: &[i64],
    ) -> Result<HashMap<i64, Vec<String>>, StoreError> {
        if device_ids.is_empty() {
            return Ok(HashMap::new());
        }
        group_names_on(&mut *self.pool.acquire().await?, device_ids).await
    }

    /// A page of a tenant's users, by id, with their MDM's name.
    pub async fn admin_users(
        &self,
        tenant_id: &str,
        filter: &UserFilter,
        page: Page,
    ) -> Result<Paged<AdminUser>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT u.id, u.tenant_id, u.mdm_id, u.mdm_user_id, u.username, u.email,
                    u.first_name, u.last_name, u.display_name, u.first_seen_at, u.updated_at,
                    u.last_seen_at, u.removed_at, m.name AS mdm
             FROM users u JOIN mdm_integrations m ON m.id = u.mdm_id
             WHERE u.tenant_id = ",
        );
        q.push_bind(tenant_id);
        if !filter.include_removed {
            q.push(" AND u.removed_at IS NULL");
        }
        if let Some(mdm_id) = filter.mdm_id {
            q.push(" AND u.mdm_id = ").push_bind(mdm_id);
        }
        if let Some(after) = page.after {
            q.push(" AND u.id > ").push_bind(after);
        }
        q.push(" ORDER BY u.id LIMIT ").push_bind(fetch_limit(page));
        let rows: Vec<AdminUser> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(Paged::from_rows(rows, page, |u| u.user.id))
    }

    /// A page of a tenant's threat events, newest first.
    pub async fn admin_events(
        &self,
        tenant_id: &str,
        filter: &EventFilter,
        page: Page,
    ) -> Result<Paged<StoredEvent>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM threat_events WHERE tenant_id = ");
        q.push_bind(tenant_id);
        if let Some(device_id) = filter.device_id {
            q.push(" AND device_id = ").push_bind(device_id);
        }
        if let Some(t) = &filter.threat_type {
            q.push(" AND threat_type = ").push_bind(t.as_str());
        }
        // RFC 3339 UTC text written by one encoder orders correctly as text.
        if let Some(since) = filter.since {
            q.push(" AND received_at >= ").push_bind(since);
        }
        if let Some(until) = filter.until {
            q.push(" AND received_at < ").push_bind(until);
        }
        if let Some(after) = page.after {
            q.push(" AND id < ").push_bind(after);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(fetch_limit(page));
        let rows: Vec<StoredEvent> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(Paged::from_rows(rows, page, |e| e.id))
    }

    /// A page of a tenant's actions, newest first, with their MDM's name.
    pub async fn admin_actions(
        &self,
        tenant_id: &str,
        filter: &ActionFilter,
        page: Page,
    ) -> Result<Paged<AdminAction>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT a.*, m.name AS mdm_name FROM actions a
             LEFT JOIN mdm_integrations m ON m.id = a.mdm_id
             WHERE a.tenant_id = ",
        );
        q.push_bind(tenant_id);
        if let Some(state) = filter.state {
            q.push(" AND a.state = ").push_bind(state);
        }
        if let Some(kind) = filter.kind {
            q.push(" AND a.kind = ").push_bind(kind);
        }
        if let Some(device_id) = filter.device_id {
            q.push(" AND a.device_id = ").push_bind(device_id);
        }
        if let Some(after) = page.after {
            q.push(" AND a.id < ").push_bind(after);
        }
        q.push(" ORDER BY a.id DESC LIMIT ")
            .push_bind(fetch_limit(page));
        let rows: Vec<AdminAction> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(Paged::from_rows(rows, page, |a| a.action.id))
    }

    /// One action of a tenant (`None` if there is none with this id in the tenant).
    pub async fn admin_action(
        &self,
        tenant_id: &str,
        action_id: i64,
    ) -> Result<Option<AdminAction>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT a.*, m.name AS mdm_name FROM actions a
             LEFT JOIN mdm_integrations m ON m.id = a.mdm_id
             WHERE a.tenant_id = ? AND a.id = ?",
        )
        .bind(tenant_id)
        .bind(action_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A page of a tenant's sync runs (of one MDM, or all), newest first.
    pub async fn admin_sync_runs(
        &self,
        tenant_id: &str,
        mdm_id: Option<i64>,
        page: Page,
    ) -> Result<Paged<AdminSyncRun>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {ADMIN_SYNC_RUN_COLUMNS} FROM sync_runs r
             JOIN mdm_integrations m ON m.id = r.mdm_id
             WHERE r.tenant_id = "
        ));
        q.push_bind(tenant_id);
        if let Some(mdm_id) = mdm_id {
            q.push(" AND r.mdm_id = ").push_bind(mdm_id);
        }
        if let Some(after) = page.after {
            q.push(" AND r.id < ").push_bind(after);
        }
        q.push(" ORDER BY r.id DESC LIMIT ")
            .push_bind(fetch_limit(page));
        let rows: Vec<AdminSyncRun> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(Paged::from_rows(rows, page, |r| r.run.id))
    }

    /// The health figures of one MDM; "recent" means at or after `since`.
    pub async fn mdm_health(
        &self,
        mdm_id: i64,
        since: DateTime<Utc>,
    ) -> Result<MdmHealth, StoreError> {
        let last_sync = self.sync_runs(mdm_id, 1).await?.into_iter().next();
        let (failed_syncs,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM sync_runs
             WHERE mdm_id = ? AND outcome = 'failed' AND finished_at >= ?",
        )
        .bind(mdm_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        let last_error: Option<(Option<DateTime<Utc>>, Option<String>)> = sqlx::query_as(
            "SELECT finished_at, error FROM sync_runs
             WHERE mdm_id = ? AND outcome = 'failed' AND finished_at >= ?
             ORDER BY id DESC LIMIT 1",
        )
        .bind(mdm_id)
        .bind(since)
        .fetch_optional(&self.pool)
        .await?;
        let (last_sync_error_at, last_sync_error) = last_error.unwrap_or((None, None));
        let (devices, collisions, activated): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(collision), 0),
                    COUNT(activated_last_at) FROM devices
             WHERE mdm_id = ? AND removed_at IS NULL",
        )
        .bind(mdm_id)
        .fetch_one(&self.pool)
        .await?;
        let by_state: Vec<(ActionState, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM actions
             WHERE mdm_id = ? AND kind <> 'remove_wifi_profile'
               AND state IN ('pending', 'held', 'failed', 'dead')
             GROUP BY state",
        )
        .bind(mdm_id)
        .fetch_all(&self.pool)
        .await?;
        let state = |s: ActionState| {
            by_state
                .iter()
                .find(|(st, _)| *st == s)
                .map_or(0, |(_, n)| count(*n))
        };
        let (dead_recent,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM actions
             WHERE mdm_id = ? AND kind <> 'remove_wifi_profile' AND state = 'dead'
               AND updated_at >= ?",
        )
        .bind(mdm_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        let (wifi,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM actions
             WHERE mdm_id = ? AND kind = 'remove_wifi_profile' AND state IN ('pending', 'failed')",
        )
        .bind(mdm_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(MdmHealth {
            last_sync,
            failed_syncs: count(failed_syncs),
            last_sync_error,
            last_sync_error_at,
            devices: count(devices),
            collisions: count(collisions),
            pending: state(ActionState::Pending),
            held: state(ActionState::Held),
            failed: state(ActionState::Failed),
            dead: state(ActionState::Dead),
            dead_recent: count(dead_recent),
            pending_wifi_removals: count(wifi),
            activated_devices: count(activated),
        })
    }

    /// Per MDM integration in service (tenant and name order): its last
    /// successful sync, its live devices, and those at each risk level
    /// (every level listed), for `/metrics`. Two grouped counts for all
    /// MDMs, each from a partial index: the live devices from
    /// `devices_live`, the levels other than `secured` from the devices at
    /// risk; `secured` is the rest.
    pub async fn mdm_metrics(&self) -> Result<Vec<MdmMetrics>, StoreError> {
        let mdms: Vec<(i64, String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT id, tenant_id, name, last_synced_at FROM mdm_integrations
             WHERE retired_at IS NULL ORDER BY tenant_id, name",
        )
        .fetch_all(&self.pool)
        .await?;
        let live: HashMap<i64, i64> = sqlx::query_as(LIVE_DEVICES_PER_MDM)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect();
        let at_risk: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT mdm_id, risk_level, COUNT(*) FROM devices
             WHERE risk_level <> 'secured' AND removed_at IS NULL
             GROUP BY mdm_id, risk_level",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(mdms
            .into_iter()
            .map(|(id, tenant_id, mdm, last_synced_at)| {
                let devices = count(live.get(&id).copied().unwrap_or(0));
                let of = |level: RiskLevel| {
                    at_risk
                        .iter()
                        .filter(|(m, l, _)| *m == id && l == level.as_str())
                        .map(|(_, _, n)| count(*n))
                        .sum::<u64>()
                };
                let risky: u64 = RiskLevel::ALL[1..].iter().map(|l| of(*l)).sum();
                let by_risk = RiskLevel::ALL
                    .iter()
                    .map(|l| match l {
                        RiskLevel::Secured => (*l, devices.saturating_sub(risky)),
                        _ => (*l, of(*l)),
                    })
                    .collect();
                MdmMetrics {
                    tenant_id,
                    mdm,
                    last_synced_at,
                    devices,
                    by_risk,
                }
            })
            .collect())
    }

    /// A tenant's live devices at each risk level, every level listed.
    pub async fn risk_counts(&self, tenant_id: &str) -> Result<Vec<(RiskLevel, u64)>, StoreError> {
        let all = self
            .risk_counts_by_tenant()
            .await?
            .into_iter()
            .find(|(t, _)| t == tenant_id)
            .map(|(_, counts)| counts);
        Ok(all.unwrap_or_else(|| RiskLevel::ALL.iter().map(|l| (*l, 0)).collect()))
    }

    /// Live devices at each risk level per tenant (tenants without devices
    /// are absent). The levels other than `secured` come from the partial
    /// index of devices at risk; `secured` is the rest.
    pub async fn risk_counts_by_tenant(
        &self,
    ) -> Result<Vec<(String, Vec<(RiskLevel, u64)>)>, StoreError> {
        let at_risk: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT tenant_id, risk_level, COUNT(*) FROM devices
             WHERE risk_level <> 'secured' AND removed_at IS NULL
             GROUP BY tenant_id, risk_level",
        )
        .fetch_all(&self.pool)
        .await?;
        let live = self.live_devices_by_tenant().await?;
        Ok(live
            .into_iter()
            .map(|(tenant, total)| {
                let of = |level: RiskLevel| {
                    at_risk
                        .iter()
                        .filter(|(t, l, _)| *t == tenant && l == level.as_str())
                        .map(|(_, _, n)| count(*n))
                        .sum::<u64>()
                };
                let risky: u64 = RiskLevel::ALL[1..].iter().map(|l| of(*l)).sum();
                let counts = RiskLevel::ALL
                    .iter()
                    .map(|l| match l {
                        RiskLevel::Secured => (*l, total.saturating_sub(risky)),
                        _ => (*l, of(*l)),
                    })
                    .collect();
                (tenant, counts)
            })
            .collect())
    }
}

/// [`Store::group_names_of`] on a given connection (also the ingest
/// writer's own, [`super::WriterConn`]).
pub(super) async fn group_names_on(
    conn: &mut SqliteConnection,
    device_ids: &[i64],
) -> Result<HashMap<i64, Vec<String>>, StoreError> {
    if device_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let names: Vec<(i64, String)> = sqlx::query_as(
        "SELECT dg.device_id, m.name || ' ' || g.name FROM device_groups dg
         JOIN groups g ON g.id = dg.group_id
         JOIN mdm_integrations m ON m.id = g.mdm_id
         WHERE dg.device_id IN (SELECT value FROM json_each(?))
         ORDER BY dg.device_id, g.name",
    )
    .bind(serde_json::Value::from(device_ids.to_vec()).to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut groups: HashMap<i64, Vec<String>> = HashMap::new();
    for (device_id, name) in names {
        groups.entry(device_id).or_default().push(name);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::super::ingest::testutil::record_event;
    use super::super::testutil::*;
    use super::super::{
        EventIdentifiers, NewAction, NewEvent, Pii, RunCounts, SyncOutcome, SyncTrigger,
        TenantRecord,
    };
    use super::*;
    use chrono::Duration;
    use mtd_adapter::{Group, MdmKind};

    fn page(after: Option<i64>, limit: u32) -> Page {
        Page { after, limit }
    }

    /// Follows `next_after` to the end; returns every id in order.
    async fn all_ids<T, F, Fut>(limit: u32, fetch: F, id: impl Fn(&T) -> i64) -> Vec<i64>
    where
        F: Fn(Page) -> Fut,
        Fut: std::future::Future<Output = Paged<T>>,
    {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let p = fetch(page(after, limit)).await;
            assert!(p.items.len() <= limit as usize);
            ids.extend(p.items.iter().map(&id));
            match p.next_after {
                Some(next) => after = Some(next),
                None => return ids,
            }
        }
    }

    async fn run(store: &Store, mdm: i64) -> i64 {
        store
            .start_sync_run(mdm, SyncTrigger::Scheduled)
            .await
            .unwrap()
    }

    fn action(kind: ActionRecordKind, state: ActionState, mdm: Option<i64>) -> NewAction {
        NewAction {
            signal_level: None,
            tenant_id: "acme".into(),
            event_id: None,
            device_id: None,
            mdm_id: mdm,
            kind,
            parent_action_id: None,
            state,
            reason: None,
            next_attempt_at: None,
        }
    }

    fn event(id: &str, device_id: Option<i64>, threat_type: &str, at: DateTime<Utc>) -> NewEvent {
        NewEvent {
            tenant_id: "acme".into(),
            event_id: id.into(),
            device_id,
            identifiers: EventIdentifiers::default(),
            threat_type: threat_type.into(),
            severity: "high".into(),
            threat_name: None,
            detected_at: at,
            received_at: at,
            network: None,
            details: None,
            status: crate::store::ThreatStatus::Detected,
            threat_key: String::new(),
            settled: true,
        }
    }

    #[tokio::test]
    async fn devices_page_by_id_with_group_display_names_and_filters() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        let mut devices: Vec<_> = (1..=7).map(|i| device(&i.to_string())).collect();
        devices[0].groups = vec!["/Acme/Sales".into(), "/Acme/EU".into()];
        devices[1].groups = vec!["/Acme/EU".into()];
        devices[2].platform = Platform::Android;
        devices[3].identifiers.mac = Some("A4:67:06:0C:15:3D".into());
        devices[4].user = Some(user("jdoe"));
        store
            .upsert_devices(r, mdm, &devices, Pii::Clear)
            .await
            .unwrap();
        store
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

        let f = DeviceFilter::default();
        let ids = all_ids(
            3,
            |p| {
                let (store, f) = (&store, &f);
                async move { store.admin_devices("acme", f, p).await.unwrap() }
            },
            |d: &AdminDevice| d.device.id,
        )
        .await;
        assert_eq!(ids, (1..=7).collect::<Vec<i64>>());

        let first = store
            .admin_devices("acme", &f, page(None, 1))
            .await
            .unwrap();
        assert_eq!(first.next_after, Some(1));
        let d = &first.items[0];
        assert_eq!(d.mdm, "Acme SOTI");
        assert_eq!(d.groups, vec!["Acme SOTI /Acme/Sales", "Acme SOTI Europe"]);
        let with_user = store
            .admin_devices("acme", &f, page(Some(4), 1))
            .await
            .unwrap();
        assert_eq!(
            with_user.items[0].user_display_name.as_deref(),
            Some("Jane Doe")
        );

        let by = |filter: DeviceFilter| {
            let store = &store;
            async move {
                store
                    .admin_devices("acme", &filter, page(None, 100))
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .map(|d| d.device.mdm_device_id.clone())
                    .collect::<Vec<_>>()
            }
        };
        let group = |g: &str| DeviceFilter {
            group: Some(g.into()),
            ..DeviceFilter::default()
        };
        assert_eq!(by(group("Acme SOTI Europe")).await, vec!["1", "2"]);
        assert_eq!(by(group("/Acme/EU")).await, vec!["1", "2"]);
        assert_eq!(by(group("Europe")).await, Vec::<String>::new());
        let ident = |i: &str| DeviceFilter {
            identifier: Some(i.into()),
            ..DeviceFilter::default()
        };
        assert_eq!(by(ident("a4-67-06-0c-15-3d")).await, vec!["4"]);
        assert_eq!(by(ident(" sn-6 ")).await, vec!["6"]);
        assert_eq!(by(ident("7")).await, vec!["7"]);
        assert_eq!(by(ident("nothing")).await, Vec::<String>::new());
        let platform = DeviceFilter {
            platform: Some(Platform::Android),
            ..DeviceFilter::default()
        };
        assert_eq!(by(platform).await, vec!["3"]);
        let other_mdm = DeviceFilter {
            mdm_id: Some(mdm + 1),
            ..DeviceFilter::default()
        };
        assert!(by(other_mdm).await.is_empty());
        assert!(store
            .admin_devices("other", &f, page(None, 10))
            .await
            .unwrap()
            .items
            .is_empty());

        // A removed device is listed only when asked for.
        let r2 = run(&store, mdm).await;
        store
            .upsert_devices(r2, mdm, &devices[1..], Pii::Clear)
            .await
            .unwrap();
        store.remove_unseen(mdm, r2).await.unwrap();
        assert_eq!(by(DeviceFilter::default()).await.len(), 6);
        let all = DeviceFilter {
            include_removed: true,
            ..DeviceFilter::default()
        };
        assert_eq!(by(all).await.len(), 7);
    }

    #[tokio::test]
    async fn users_page_by_id_and_removed_ones_only_on_request() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        let users: Vec<_> = (1..=5).map(|i| user(&format!("u{i}"))).collect();
        store
            .upsert_users(r, mdm, &users, Pii::Clear)
            .await
            .unwrap();
        let f = UserFilter::default();
        let ids = all_ids(
            2,
            |p| {
                let (store, f) = (&store, &f);
                async move { store.admin_users("acme", f, p).await.unwrap() }
            },
            |u: &AdminUser| u.user.id,
        )
        .await;
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        let one = store.admin_users("acme", &f, page(None, 1)).await.unwrap();
        assert_eq!(one.items[0].mdm, "Acme SOTI");
        assert_eq!(one.items[0].user.display_name, "Jane Doe");

        let r2 = run(&store, mdm).await;
        store
            .upsert_users(r2, mdm, &users[..3], Pii::Clear)
            .await
            .unwrap();
        store.remove_unseen(mdm, r2).await.unwrap();
        let live = store.admin_users("acme", &f, page(None, 10)).await.unwrap();
        assert_eq!(live.items.len(), 3);
        let all = UserFilter {
            include_removed: true,
            mdm_id: Some(mdm),
        };
        let all = store
            .admin_users("acme", &all, page(None, 10))
            .await
            .unwrap();
        assert_eq!(all.items.len(), 5);
        assert!(all.items[4].user.removed_at.is_some());
    }

    #[tokio::test]
    async fn events_page_newest_first_and_filter_by_device_type_and_time() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let found = store
            .store_found_device(mdm, &device("1"), Pii::Clear)
            .await
            .unwrap();
        let t0 = Utc::now() - Duration::hours(10);
        for i in 0..9 {
            let t = if i % 3 == 0 {
                "network.arp_mitm"
            } else {
                "app.malicious"
            };
            let dev = (i < 4).then_some(found.device.id);
            record_event(
                &store,
                &event(&format!("e{i}"), dev, t, t0 + Duration::hours(i)),
            )
            .await;
        }
        let f = EventFilter::default();
        let ids = all_ids(
            4,
            |p| {
                let (store, f) = (&store, &f);
                async move { store.admin_events("acme", f, p).await.unwrap() }
            },
            |e: &StoredEvent| e.id,
        )
        .await;
        assert_eq!(ids, (1..=9).rev().collect::<Vec<i64>>());

        let by = |filter: EventFilter| {
            let store = &store;
            async move {
                store
                    .admin_events("acme", &filter, page(None, 100))
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .map(|e| e.event_id.clone())
                    .collect::<Vec<_>>()
            }
        };
        let arp = EventFilter {
            threat_type: Some("network.arp_mitm".into()),
            ..EventFilter::default()
        };
        assert_eq!(by(arp).await, vec!["e6", "e3", "e0"]);
        let dev = EventFilter {
            device_id: Some(found.device.id),
            ..EventFilter::default()
        };
        assert_eq!(by(dev).await, vec!["e3", "e2", "e1", "e0"]);
        let window = EventFilter {
            since: Some(t0 + Duration::hours(2)),
            until: Some(t0 + Duration::hours(5)),
            ..EventFilter::default()
        };
        assert_eq!(by(window).await, vec!["e4", "e3", "e2"]);
    }

    #[tokio::test]
    async fn actions_page_newest_first_filter_and_are_found_only_in_their_tenant() {
        let (_dir, store, mdm) = store_with_mdm().await;
        for i in 0..6 {
            let (kind, state) = match i % 3 {
                0 => (ActionRecordKind::Lock, ActionState::Pending),
                1 => (ActionRecordKind::Wipe, ActionState::Held),
                _ => (ActionRecordKind::None, ActionState::Skipped),
            };
            store
                .insert_action(&action(kind, state, (i != 5).then_some(mdm)))
                .await
                .unwrap();
        }
        let f = ActionFilter::default();
        let ids = all_ids(
            4,
            |p| {
                let (store, f) = (&store, &f);
                async move { store.admin_actions("acme", f, p).await.unwrap() }
            },
            |a: &AdminAction| a.action.id,
        )
        .await;
        assert_eq!(ids, vec![6, 5, 4, 3, 2, 1]);
        let held = ActionFilter {
            state: Some(ActionState::Held),
            ..ActionFilter::default()
        };
        let held = store
            .admin_actions("acme", &held, page(None, 10))
            .await
            .unwrap();
        assert_eq!(
            held.items.iter().map(|a| a.action.id).collect::<Vec<_>>(),
            vec![5, 2]
        );
        let wipes = ActionFilter {
            kind: Some(ActionRecordKind::Wipe),
            device_id: None,
            state: None,
        };
        assert_eq!(
            store
                .admin_actions("acme", &wipes, page(None, 10))
                .await
                .unwrap()
                .items
                .len(),
            2
        );
        let one = store.admin_action("acme", 1).await.unwrap().unwrap();
        assert_eq!(one.mdm.as_deref(), Some("Acme SOTI"));
        assert_eq!(one.action.state, ActionState::Pending);
        assert_eq!(
            store.admin_action("acme", 6).await.unwrap().unwrap().mdm,
            None
        );
        assert!(store.admin_action("other", 1).await.unwrap().is_none());
        assert!(store.admin_action("acme", 99).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn sync_runs_page_newest_first_per_mdm() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let refs = store
            .sync_tenants(&[TenantRecord {
                id: "acme".into(),
                display_name: "Acme Corp".into(),
                mdms: vec![
                    super::super::MdmRecord {
                        name: "Acme SOTI".into(),
                        kind: MdmKind::Soti,
                        url: "https://soti.example/MobiControl".into(),
                    },
                    super::super::MdmRecord {
                        name: "Acme AirWatch".into(),
                        kind: MdmKind::Airwatch,
                        url: "https://airwatch.example/".into(),
                    },
                ],
            }])
            .await
            .unwrap();
        let other = refs.iter().find(|r| r.name == "Acme AirWatch").unwrap().id;
        for i in 0..5 {
            run(&store, if i % 2 == 0 { mdm } else { other }).await;
        }
        let ids = all_ids(
            2,
            |p| {
                let store = &store;
                async move { store.admin_sync_runs("acme", None, p).await.unwrap() }
            },
            |r: &AdminSyncRun| r.run.id,
        )
        .await;
        assert_eq!(ids, vec![5, 4, 3, 2, 1]);
        let soti = store
            .admin_sync_runs("acme", Some(mdm), page(None, 10))
            .await
            .unwrap();
        assert_eq!(
            soti.items.iter().map(|r| r.run.id).collect::<Vec<_>>(),
            vec![5, 3, 1]
        );
        assert!(soti.items.iter().all(|r| r.mdm == "Acme SOTI"));
    }

    #[tokio::test]
    async fn mdm_health_counts_runs_actions_removals_and_collisions() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let empty = store.mdm_health(mdm, Utc::now()).await.unwrap();
        assert_eq!(empty.last_sync, None);
        assert_eq!(
            (empty.devices, empty.failed_syncs, empty.pending),
            (0, 0, 0)
        );

        let since = Utc::now() - Duration::hours(24);
        let failed = run(&store, mdm).await;
        store
            .finish_sync_run(
                failed,
                SyncOutcome::Failed,
                RunCounts::default(),
                Some("MDM unavailable"),
            )
            .await
            .unwrap();
        let ok = run(&store, mdm).await;
        let mut a = device("1");
        a.identifiers.serial = Some("SAME".into());
        let mut b = device("2");
        b.identifiers.serial = Some("same".into());
        store
            .upsert_devices(ok, mdm, &[a, b, device("3")], Pii::Clear)
            .await
            .unwrap();
        let counts = RunCounts {
            added: 3,
            held_removals: 2,
            ..RunCounts::default()
        };
        store
            .finish_sync_run(ok, SyncOutcome::Succeeded, counts, None)
            .await
            .unwrap();
        for (kind, state) in [
            (ActionRecordKind::Lock, ActionState::Pending),
            (ActionRecordKind::Lock, ActionState::Pending),
            (ActionRecordKind::Wipe, ActionState::Held),
            (ActionRecordKind::Lock, ActionState::Failed),
            (ActionRecordKind::Lock, ActionState::Dead),
            (ActionRecordKind::Lock, ActionState::Sent),
            (ActionRecordKind::RemoveWifiProfile, ActionState::Pending),
        ] {
            store
                .insert_action(&action(kind, state, Some(mdm)))
                .await
                .unwrap();
        }
        let h = store.mdm_health(mdm, since).await.unwrap();
        let last = h.last_sync.clone().unwrap();
        assert_eq!(last.id, ok);
        assert_eq!((last.added, last.held_removals), (3, 2));
        assert_eq!(h.failed_syncs, 1);
        assert_eq!(h.last_sync_error.as_deref(), Some("MDM unavailable"));
        assert!(h.last_sync_error_at.is_some());
        assert_eq!((h.devices, h.collisions), (3, 2));
        assert_eq!((h.pending, h.held, h.failed, h.dead), (2, 1, 1, 1));
        assert_eq!(h.dead_recent, 1);
        assert_eq!(h.pending_wifi_removals, 1);

        let later = store
            .mdm_health(mdm, Utc::now() + Duration::hours(1))
            .await
            .unwrap();
        assert_eq!((later.failed_syncs, later.dead_recent), (0, 0));
        assert_eq!(later.last_sync_error, None);
    }
}
