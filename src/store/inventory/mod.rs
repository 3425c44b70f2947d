//! The inventory mirrored from each MDM: users, groups, devices and their
//! group memberships.
//!
//! A full sync starts a run (`sync_runs`), streams batches through the
//! `upsert_*` methods (each batch one transaction, every row tagged with the
//! run), then, only if the listing completed, calls [`Store::remove_unseen`]
//! and finishes the run. Removal is a soft delete (`removed_at`), so events and actions keep
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
//!
//! A full sync writes its pages through a [`SyncWriter`] ([`writer`]): the
//! same statements on a connection of the run's own, with a larger page
//! cache and several pages per bounded transaction.
//!
//! One module per kind of row, each with the one path that writes it:
//! [`users`], [`groups`], [`devices`] (with their memberships) and
//! [`collisions`] (the flag on devices that share an identifier). This
//! module holds what they share: the batch's [`Scope`], the [`Change`] a
//! listing makes and its [`RowState`], the JSON parameter of the bulk
//! statements, and the removal of what a run did not see.

mod collisions;
mod devices;
mod groups;
mod users;
mod writer;

pub use devices::{Activation, ActivationInput, DeviceUpsert, RiskLevel, StoredDevice};
pub(super) use devices::{DeviceRow, DEVICE_COLUMNS, DEVICE_JSON};
pub use users::{MaskedUser, Pii, PiiMasker, StoredUser};
pub use writer::{
    SyncWriter, SYNC_CACHE_KIB, SYNC_CONTENDED_CHUNK, SYNC_TX_MAX_AGE, SYNC_TX_MAX_RECORDS,
};

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use collisions::refresh_collisions;
use serde::Serialize;
use sqlx::SqliteConnection;

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

impl Scope {
    /// Runs one of the bulk `INSERT`s of new rows (`?1` tenant, `?2` MDM,
    /// `?3` now, `?4` run, `?5` the rows, see [`json_rows`]); returns the id
    /// and key of each row inserted.
    async fn insert<T: Serialize>(
        &self,
        conn: &mut SqliteConnection,
        sql: &'static str,
        rows: &[T],
    ) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(sqlx::query_as(sql)
            .bind(&self.tenant_id)
            .bind(self.mdm_id)
            .bind(self.now)
            .bind(self.run_id)
            .bind(json_rows(&rows))
            .fetch_all(&mut *conn)
            .await?)
    }

    /// Runs one of the bulk `UPDATE`s that write rows seen by the batch
    /// (`?1` now, `?2` run, `?3` the rows), unless there are none.
    async fn update<T: Serialize>(
        &self,
        conn: &mut SqliteConnection,
        sql: &'static str,
        rows: &[T],
    ) -> Result<(), StoreError> {
        if !rows.is_empty() {
            sqlx::query(sql)
                .bind(self.now)
                .bind(self.run_id)
                .bind(json_rows(&rows))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// The scope of a batch of one MDM: its tenant (`NotFound` for an unknown
/// MDM) and one `now` for every row the batch writes.
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

impl Store {
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
        // Its threats end with it; the risk changes matter to risk signals (issue 17).
        let _risk_changes = super::threats::close_for_removed(&mut tx, mdm_id, now).await?;
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
}

#[cfg(test)]
mod tests {
    use super::super::sync_runs::testutil::run;
    use super::super::testutil::*;
    use super::super::{RunCounts, SyncOutcome};
    use super::collisions::{COLLISIONS_FLAG, COLLISION_PAIRS};
    use super::devices::{
        DEVICES_INSERT, DEVICES_SEEN, DEVICES_STORED, DEVICES_UPDATE, MEMBERSHIPS_DELETE,
        MEMBERSHIPS_INSERT,
    };
    use super::groups::{GROUPS_SEEN, GROUPS_STORED};
    use super::users::{USERS_INSERT, USERS_SEEN, USERS_STORED, USERS_UPDATE};
    use super::*;
    use mtd_adapter::DeviceIdentifier;

    /// The live-device counts (`/metrics` on every scrape, a sync's removal
    /// check) read the small `devices_live` index, not every device row.
    #[tokio::test]
    async fn live_device_counts_read_the_live_index() {
        let (_dir, store, _) = store_with_mdm().await;
        for sql in [
            super::devices::LIVE_DEVICE_COUNT,
            crate::store::admin::LIVE_DEVICES_PER_MDM,
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .bind(1)
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            let plan: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
            assert!(
                plan.iter().any(|l| l.contains("USING INDEX devices_live")
                    || l.contains("USING COVERING INDEX devices_live")),
                "{sql}: {plan:?}"
            );
        }
    }

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

    /// Migration 0005 on a store written before it: the identifier indexes
    /// become partial (no entry for a device without the identifier), the
    /// devices stay, and the lookups by identifier still probe the index.
    #[tokio::test]
    async fn a_store_from_before_0005_gets_partial_identifier_indexes_that_lookups_still_use() {
        let (_dir, path) = old_store(
            "0004_ise.sql",
            &[
                "INSERT INTO tenants (id, display_name, created_at, updated_at) VALUES ('acme', 'Acme', ?1, ?1)",
                "INSERT INTO mdm_integrations (id, tenant_id, name, kind, url, first_seen_at, updated_at) \
                 VALUES (7, 'acme', 'Acme SOTI', 'soti', 'https://soti.example/', ?1, ?1)",
                "INSERT INTO devices (tenant_id, mdm_id, mdm_device_id, udid, serial, platform, \
                 first_seen_at, updated_at, last_seen_at) \
                 VALUES ('acme', 7, 'a', '00008030-001A', 'F17XK0', 'ios', ?1, ?1, ?1)",
                "INSERT INTO devices (tenant_id, mdm_id, mdm_device_id, imei, mac, platform, \
                 first_seen_at, updated_at, last_seen_at) \
                 VALUES ('acme', 7, 'b', '352099001761481', 'a467060c153d', 'android', ?1, ?1, ?1)",
            ],
        )
        .await;

        let store = Store::open(&path).await.expect("the old store opens");
        for (index, column) in [
            ("devices_udid", "udid"),
            ("devices_serial", "serial"),
            ("devices_imei", "imei"),
            ("devices_mac", "mac"),
        ] {
            let (sql,): (String,) =
                sqlx::query_as("SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = ?")
                    .bind(index)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            assert!(
                sql.contains(&format!("WHERE {column} IS NOT NULL")),
                "{index}: {sql}"
            );
            // One entry per device that has the identifier.
            let (entries,): (i64,) = sqlx::query_as(&format!(
                "SELECT COUNT(*) FROM devices INDEXED BY {index} \
                 WHERE tenant_id = 'acme' AND {column} IS NOT NULL"
            ))
            .fetch_one(store.pool())
            .await
            .unwrap();
            assert_eq!(entries, 1, "{index}");
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
                "EXPLAIN QUERY PLAN SELECT id FROM devices \
                 WHERE tenant_id = ?1 AND {column} = ?2 AND +removed_at IS NULL"
            ))
            .bind("acme")
            .bind("x")
            .fetch_all(store.pool())
            .await
            .unwrap();
            assert!(
                plan.iter()
                    .any(|r| r.3.starts_with("SEARCH") && r.3.contains(index)),
                "{index}: {plan:?}"
            );
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
                "EXPLAIN QUERY PLAN SELECT id FROM devices \
                 WHERE tenant_id = ?1 AND {column} IN (SELECT value FROM json_each(?2))"
            ))
            .bind("acme")
            .bind("[]")
            .fetch_all(store.pool())
            .await
            .unwrap();
            assert!(
                plan.iter()
                    .any(|r| r.3.starts_with("SEARCH") && r.3.contains(index)),
                "{index} (IN): {plan:?}"
            );
        }
        for (id, want) in [
            (DeviceIdentifier::Udid("00008030-001a".into()), "a"),
            (DeviceIdentifier::Serial("f17xk0".into()), "a"),
            (DeviceIdentifier::Imei("352099001761481".into()), "b"),
            (DeviceIdentifier::Mac("A4:67:06:0C:15:3D".into()), "b"),
        ] {
            let found = store.find_devices("acme", &id).await.unwrap();
            assert_eq!(found.len(), 1, "{id}");
            assert_eq!(found[0].mdm_device_id, want, "{id}");
        }
        store.close().await;
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
}
