//! Many devices found by their identifiers in one statement: the ingest
//! writer resolves every event of a group at once, instead of one store
//! round trip per request on the pool (issue 19).
//!
//! It answers exactly as [`Store::find_devices`] tried one identifier after
//! the other: per ask, the first identifier (in the order given) that names
//! a live device of the tenant wins, and among several devices with it the
//! most recently checked in (then the highest id).

use super::inventory::{DeviceRow, DEVICE_JSON};
use super::{StoreError, StoredDevice};
use mtd_adapter::{
    normalize_imei, normalize_mac, normalize_serial, normalize_udid, DeviceIdentifier,
};
use serde_json::{json, Value};
use sqlx::SqliteConnection;

/// What one ask found: the device, and how many live devices shared the
/// identifier that found it (more than one is an identity collision).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub device: StoredDevice,
    pub candidates: usize,
}

/// For each `(tenant, identifiers)`, the device [`super::Store::find_devices`]
/// would pick for the first identifier that finds one, or `None`. One
/// statement for all of them, on the ingest writer's connection
/// ([`super::WriterConn::resolve_devices`]).
pub(super) async fn resolve_devices_on(
    conn: &mut SqliteConnection,
    asks: &[(&str, &[DeviceIdentifier])],
) -> Result<Vec<Option<Resolution>>, StoreError> {
    let mut rows: Vec<Value> = Vec::new();
    for (slot, (tenant, ids)) in asks.iter().enumerate() {
        for (pos, id) in ids.iter().enumerate() {
            let (kind, value) = match id {
                DeviceIdentifier::MdmDeviceId(v) => ("mdm", Some(v.trim().to_string())),
                DeviceIdentifier::Udid(v) => ("udid", normalize_udid(v)),
                DeviceIdentifier::Serial(v) => ("serial", normalize_serial(v)),
                DeviceIdentifier::Imei(v) => ("imei", normalize_imei(v)),
                DeviceIdentifier::Mac(v) => ("mac", normalize_mac(v)),
            };
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                rows.push(json!([slot, pos, kind, tenant, value]));
            }
        }
    }
    let mut out: Vec<Option<Resolution>> = vec![None; asks.len()];
    if rows.is_empty() {
        return Ok(out);
    }
    let arms: Vec<(String,)> = sqlx::query_as(resolve_sql())
        .bind(Value::Array(rows).to_string())
        .fetch_all(&mut *conn)
        .await?;
    let mut found: Vec<(i64, i64, DeviceRow)> = Vec::new();
    for (arm,) in &arms {
        found.extend(
            serde_json::from_str::<Vec<(i64, i64, DeviceRow)>>(arm)
                .map_err(|e| StoreError::Corrupt(format!("a resolved device: {e}")))?,
        );
    }
    // Per ask: the lowest position with a device, and its candidates.
    let mut best: Vec<Option<(i64, Vec<StoredDevice>)>> = vec![None; asks.len()];
    for (slot, pos, row) in found {
        let device = StoredDevice::from(row);
        let Some(entry) = usize::try_from(slot).ok().and_then(|s| best.get_mut(s)) else {
            continue;
        };
        match entry {
            Some((p, list)) if *p == pos => list.push(device),
            Some((p, _)) if *p < pos => {}
            _ => *entry = Some((pos, vec![device])),
        }
    }
    for (slot, entry) in best.into_iter().enumerate() {
        if let Some((_, mut list)) = entry {
            // `ORDER BY last_checkin_at DESC NULLS LAST, id DESC`.
            list.sort_by(|a, b| {
                b.last_checkin_at
                    .is_some()
                    .cmp(&a.last_checkin_at.is_some())
                    .then(b.last_checkin_at.cmp(&a.last_checkin_at))
                    .then(b.id.cmp(&a.id))
            });
            let candidates = list.len();
            out[slot] = list
                .into_iter()
                .next()
                .map(|device| Resolution { device, candidates });
        }
    }
    Ok(out)
}

/// The statement of [`resolve_devices_on`], built once: one row per
/// identifier kind, each a JSON array of `[slot, pos, device]`. One value per
/// arm rather than a row per device: sqlx hands each column of each row
/// over from its SQLite thread on its own, and a device has 34.
fn resolve_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        // One arm per identifier kind, each on its own index; `+removed_at`
        // as in `find_devices`, so the planner keeps the identifier's index.
        let arm = |kind: &str, condition: &str| {
            format!(
                "SELECT json_group_array(json_array(q.slot, q.pos, {DEVICE_JSON}))
                 FROM q JOIN devices AS d ON {condition}
                 WHERE q.kind = '{kind}' AND +d.removed_at IS NULL"
            )
        };
        format!(
            "WITH q(slot, pos, kind, tenant, value) AS MATERIALIZED (
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4
                 FROM json_each(?1))
             {} UNION ALL {} UNION ALL {} UNION ALL {} UNION ALL {}",
            arm(
                "mdm",
                "d.mdm_id IN (SELECT id FROM mdm_integrations WHERE tenant_id = q.tenant)
                 AND d.mdm_device_id = q.value AND +d.tenant_id = q.tenant"
            ),
            arm("udid", "d.tenant_id = q.tenant AND d.udid = q.value"),
            arm("serial", "d.tenant_id = q.tenant AND d.serial = q.value"),
            arm("imei", "d.tenant_id = q.tenant AND d.imei = q.value"),
            arm("mac", "d.tenant_id = q.tenant AND d.mac = q.value"),
        )
    });
    &SQL
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{device, store_with_mdm};
    use super::*;
    use crate::store::{Pii, SyncTrigger};
    use chrono::TimeZone;

    /// Every ask answers what `find_devices` gives for its first identifier
    /// that finds anything: normalised values, another tenant, removed
    /// devices, a collision (latest check-in first), identifier order.
    #[tokio::test]
    async fn each_ask_finds_what_find_devices_finds_first() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut a = device("1");
        a.identifiers.udid = Some("00008030-001a".into());
        a.identifiers.mac = Some("A4:67:06:0C:15:3D".into());
        a.identifiers.serial = Some("SAME".into());
        a.last_checkin_at = Some(chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        // Every kind of column, read back through the statement's JSON.
        a.name = Some("Zoë's \"work\" phone \\ ☎".into());
        a.posture.compliant = Some(true);
        a.posture.encrypted = Some(false);
        a.posture.manufacturer = Some("Apple".into());
        let mut b = device("2");
        b.identifiers.serial = Some("same".into());
        b.last_checkin_at = Some(chrono::Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        let c = device("3");
        let run = store
            .start_sync_run(mdm, SyncTrigger::Scheduled)
            .await
            .unwrap();
        store
            .upsert_devices(run, mdm, &[a.clone(), b.clone(), c], Pii::Clear)
            .await
            .unwrap();
        // Device 3 leaves its MDM.
        let run = store
            .start_sync_run(mdm, SyncTrigger::Scheduled)
            .await
            .unwrap();
        store
            .upsert_devices(run, mdm, &[a, b], Pii::Clear)
            .await
            .unwrap();
        store.remove_unseen(mdm, run).await.unwrap();
        let activation = crate::store::ActivationInput {
            platform: Some("ios"),
            agent_version: Some("4.2.0"),
            tracking_id_1: Some("t-1"),
            tracking_id_2: None,
        };
        let first = chrono::Utc
            .with_ymd_and_hms(2026, 7, 1, 12, 30, 15)
            .unwrap()
            + chrono::Duration::microseconds(123_456);
        for at in [first, first + chrono::Duration::days(2)] {
            store.record_activation(1, &activation, at).await.unwrap();
        }
        let activated = store.get_device(1).await.unwrap().unwrap();
        assert_eq!(
            activated.activation.as_ref().map(|a| a.first_activated_at),
            Some(first)
        );
        assert_eq!(activated.posture.compliant, Some(true));

        let id = |k: &str, v: &str| match k {
            "mdm" => DeviceIdentifier::MdmDeviceId(v.into()),
            "udid" => DeviceIdentifier::Udid(v.into()),
            "serial" => DeviceIdentifier::Serial(v.into()),
            "imei" => DeviceIdentifier::Imei(v.into()),
            _ => DeviceIdentifier::Mac(v.into()),
        };
        let cases: Vec<(&str, Vec<DeviceIdentifier>)> = vec![
            ("acme", vec![id("mdm", " 1 ")]),
            ("acme", vec![id("udid", "00008030-001A")]),
            ("acme", vec![id("mac", "a4-67-06-0c-15-3d")]),
            // A collision: the latest check-in.
            ("acme", vec![id("serial", "Same")]),
            // The first identifier that finds something wins, in order.
            (
                "acme",
                vec![id("mdm", "404"), id("serial", "same"), id("mdm", "1")],
            ),
            ("acme", vec![id("mdm", "1"), id("serial", "same")]),
            // Removed, another tenant, nothing, malformed.
            ("acme", vec![id("mdm", "3")]),
            ("other", vec![id("mdm", "1")]),
            ("acme", vec![]),
            ("acme", vec![id("mac", "not a mac")]),
        ];
        let asks: Vec<(&str, &[DeviceIdentifier])> =
            cases.iter().map(|(t, ids)| (*t, ids.as_slice())).collect();
        let mut writer = store.open_writer().await.unwrap();
        let resolved = writer.resolve_devices(&asks).await.unwrap();
        writer.close().await;
        assert_eq!(resolved.len(), cases.len());
        for ((tenant, ids), got) in cases.iter().zip(&resolved) {
            let mut want = None;
            for i in ids {
                let found = store.find_devices(tenant, i).await.unwrap();
                if !found.is_empty() {
                    want = Some(Resolution {
                        candidates: found.len(),
                        device: found[0].clone(),
                    });
                    break;
                }
            }
            assert_eq!(got, &want, "{tenant} {ids:?}");
        }
        let picked: Vec<Option<String>> = resolved
            .iter()
            .map(|r| r.as_ref().map(|r| r.device.mdm_device_id.clone()))
            .collect();
        assert_eq!(
            picked,
            [
                Some("1"),
                Some("1"),
                Some("1"),
                Some("2"),
                Some("2"),
                Some("1"),
                None,
                None,
                None,
                None
            ]
            .map(|s| s.map(str::to_string))
        );
        assert_eq!(resolved[3].as_ref().unwrap().candidates, 2);
    }

    /// Each arm of the statement probes an index (no scan of `devices`).
    #[tokio::test]
    async fn the_statement_probes_indexes() {
        let (_dir, store, _mdm) = store_with_mdm().await;
        let asks = [("acme", &[DeviceIdentifier::MdmDeviceId("1".into())][..])];
        let mut writer = store.open_writer().await.unwrap();
        writer.resolve_devices(&asks).await.unwrap();
        writer.close().await;
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", resolve_sql()))
                .bind("[]")
                .fetch_all(store.pool())
                .await
                .unwrap();
        let details: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
        assert!(
            !details.iter().any(|d| d.starts_with("SCAN d")),
            "{details:#?}"
        );
        assert_eq!(
            details
                .iter()
                .filter(|d| d.starts_with("SEARCH d USING INDEX"))
                .count(),
            5,
            "{details:#?}"
        );
    }
}
