//! The store's answers to Cisco ISE (CONTRACT §7): devices by an identifier
//! ISE knows, and the tenant's non-compliant devices, a page at a time.
//!
//! Each answer is one statement on an index (`devices_mac`, `…_udid`,
//! `…_imei`, the `(mdm_id, mdm_device_id)` key, `users_username`,
//! `devices_risk`, `devices_mdm_noncompliant`), with the user's name and the
//! open threat types read by correlated subqueries on their own indexes, so
//! an ISE query costs the same with 100 or 1,000,000 devices stored.

use super::inventory::{DeviceRow, DEVICE_COLUMNS};
use super::{RiskLevel, Store, StoreError, StoredDevice};
use mtd_adapter::{normalize_imei, normalize_mac, normalize_serial, normalize_udid};
use serde_json::json;
use sqlx::FromRow;

/// What ISE looks a device up by (`querycriteria`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IseCriterion {
    /// 12 hex digits, any case or separators.
    MacAddress,
    /// IMEI (stored with MEIDs and ESNs in one column).
    Imei,
    /// MEID: the same column as the IMEI.
    Meid,
    Udid,
    /// v3: the UDID or the MDM's device id (what MDMs put in device certificates).
    Guid,
    /// Not a documented criterion, accepted anyway.
    SerialNumber,
    /// Every device of the user with this MDM user name (any case).
    Username,
}

/// A device as ISE is told about it: the stored device, its user's name and
/// the types of its open threats.
#[derive(Debug, Clone)]
pub struct IseDeviceRow {
    pub device: StoredDevice,
    pub username: Option<String>,
    /// Distinct, sorted.
    pub open_threats: Vec<String>,
}

#[derive(FromRow)]
struct Row {
    #[sqlx(flatten)]
    device: DeviceRow,
    ise_username: Option<String>,
    ise_threats: Option<String>,
}

/// The threat types are joined with the unit separator, which no type holds
/// (types are `[a-z0-9_.]`, checked at ingest).
const SEP: char = '\u{1f}';

fn extra_columns(alias: &str) -> String {
    format!(
        "(SELECT username FROM users WHERE users.id = {alias}.user_id) AS ise_username,
         (SELECT group_concat(threat_type, char(31)) FROM
             (SELECT DISTINCT threat_type FROM threats
              WHERE threats.device_id = {alias}.id AND threats.closed_at IS NULL
              ORDER BY threat_type)) AS ise_threats"
    )
}

impl From<Row> for IseDeviceRow {
    fn from(r: Row) -> Self {
        IseDeviceRow {
            device: r.device.into(),
            username: r.ise_username,
            open_threats: r
                .ise_threats
                .map(|t| t.split(SEP).map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }
}

impl IseCriterion {
    /// The value in the store's normal form; `None` when it cannot match.
    fn normalise(self, raw: &str) -> Option<String> {
        match self {
            IseCriterion::MacAddress => normalize_mac(raw),
            IseCriterion::Imei | IseCriterion::Meid => normalize_imei(raw),
            IseCriterion::Udid => normalize_udid(raw),
            IseCriterion::SerialNumber => normalize_serial(raw),
            IseCriterion::Guid | IseCriterion::Username => {
                let v = raw.trim();
                (!v.is_empty()).then(|| v.to_owned())
            }
        }
    }
}

impl Store {
    /// The live devices of a tenant that match any of `values` by
    /// `criterion`, in the order of `values` (each device once), then the
    /// most recently checked-in first. Values that cannot match are ignored.
    pub async fn ise_devices(
        &self,
        tenant_id: &str,
        criterion: IseCriterion,
        values: &[&str],
    ) -> Result<Vec<IseDeviceRow>, StoreError> {
        let mut normal: Vec<String> = values
            .iter()
            .filter_map(|v| criterion.normalise(v))
            .collect();
        normal.dedup();
        if normal.is_empty() {
            return Ok(Vec::new());
        }
        // `+removed_at`: keeps the planner on the identifier's index.
        let condition = match criterion {
            IseCriterion::MacAddress => {
                "d.tenant_id = ?1 AND d.mac IN (SELECT value FROM json_each(?2))"
            }
            IseCriterion::Imei | IseCriterion::Meid => {
                "d.tenant_id = ?1 AND d.imei IN (SELECT value FROM json_each(?2))"
            }
            IseCriterion::Udid => {
                "d.tenant_id = ?1 AND d.udid IN (SELECT value FROM json_each(?2))"
            }
            IseCriterion::SerialNumber => {
                "d.tenant_id = ?1 AND d.serial IN (SELECT value FROM json_each(?2))"
            }
            // The UDID in its normal form, or the MDM's id as it is (through
            // the integrations, so the UNIQUE (mdm_id, mdm_device_id) index serves).
            IseCriterion::Guid => {
                "d.id IN (
                     SELECT id FROM devices WHERE tenant_id = ?1
                         AND udid IN (SELECT upper(value) FROM json_each(?2))
                     UNION
                     SELECT id FROM devices WHERE mdm_id IN
                         (SELECT id FROM mdm_integrations WHERE tenant_id = ?1)
                         AND mdm_device_id IN (SELECT value FROM json_each(?2)))"
            }
            IseCriterion::Username => {
                "d.user_id IN (SELECT id FROM users WHERE tenant_id = ?1
                     AND username COLLATE NOCASE IN (SELECT value FROM json_each(?2))
                     AND username IS NOT NULL AND removed_at IS NULL)"
            }
        };
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS}, {extra} FROM devices AS d
             WHERE {condition} AND +d.removed_at IS NULL AND d.tenant_id = ?1
             ORDER BY d.last_checkin_at DESC NULLS LAST, d.id DESC",
            extra = extra_columns("d"),
        ))
        .bind(tenant_id)
        .bind(json!(normal).to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(IseDeviceRow::from).collect())
    }

    /// A page of the tenant's live devices that ISE must be told are not
    /// compliant: risk level at or above `at`, or reported not compliant by
    /// their MDM. In id order after `after` (0: from the start), at most
    /// `limit`; the second value says whether more follow.
    pub async fn ise_noncompliant(
        &self,
        tenant_id: &str,
        at: RiskLevel,
        after: i64,
        limit: u32,
    ) -> Result<(Vec<IseDeviceRow>, bool), StoreError> {
        let levels: Vec<&str> = [
            RiskLevel::Low,
            RiskLevel::Medium,
            RiskLevel::High,
            RiskLevel::Critical,
        ]
        .into_iter()
        .filter(|l| *l >= at)
        .map(RiskLevel::as_str)
        .collect();
        // Two index ranges (devices_risk, devices_mdm_noncompliant), merged
        // by id; one more row than asked says whether a next page exists.
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS}, {extra} FROM devices AS d WHERE d.id IN (
                 SELECT id FROM (SELECT id FROM devices
                     WHERE tenant_id = ?1 AND risk_level IN (SELECT value FROM json_each(?2))
                       AND risk_level <> 'secured' AND id > ?3
                     ORDER BY id LIMIT ?4)
                 UNION
                 SELECT id FROM (SELECT id FROM devices
                     WHERE tenant_id = ?1 AND compliant = 0 AND id > ?3 ORDER BY id LIMIT ?4)
             ) AND d.removed_at IS NULL
             ORDER BY d.id LIMIT ?4",
            extra = extra_columns("d"),
        ))
        .bind(tenant_id)
        .bind(json!(levels).to_string())
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut page: Vec<IseDeviceRow> = rows.into_iter().map(IseDeviceRow::from).collect();
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        Ok((page, more))
    }

    /// A page of every live device of the tenant (ISE's `filter=all` without
    /// a criterion), in id order after `after`.
    pub async fn ise_all_devices(
        &self,
        tenant_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<(Vec<IseDeviceRow>, bool), StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS}, {extra} FROM devices AS d
             WHERE d.tenant_id = ?1 AND d.removed_at IS NULL AND d.id > ?2
             ORDER BY d.id LIMIT ?3",
            extra = extra_columns("d"),
        ))
        .bind(tenant_id)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut page: Vec<IseDeviceRow> = rows.into_iter().map(IseDeviceRow::from).collect();
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        Ok((page, more))
    }
}
