//! Groups: the write path of the MDM's group listing and of the groups a
//! device names that the listing has not (yet) given.

use super::{json_rows, scope, Change, Scope, UpsertCounts};
use crate::store::{Store, StoreError};
use mtd_adapter::Group;
use sqlx::SqliteConnection;
use std::collections::HashMap;

// The bulk statements of groups: one bound JSON array each (see
// [`json_rows`]), every one checked for its query plan by a test.
pub(super) const GROUPS_STORED: &str = "SELECT g.id, g.mdm_group_id, g.removed_at IS NOT NULL
     FROM json_each(?2) AS j CROSS JOIN groups AS g
     ON g.mdm_id = ?1 AND g.mdm_group_id = j.value";

pub(super) const GROUPS_SEEN: &str =
    "UPDATE groups SET last_seen_at = ?1, last_sync_run_id = COALESCE(?2, last_sync_run_id)
     WHERE id IN (SELECT value FROM json_each(?3))";

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

/// Resolves the groups a batch of devices names to their ids: one `SELECT`
/// for all of them, one `UPDATE` that stamps the live ones seen, and the
/// one-row [`upsert_group`] only for the rare unknown or removed group.
pub(super) async fn resolve_groups(
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
    s.update(conn, GROUPS_SEEN, &live).await?;
    for key in keys {
        if !ids.contains_key(*key) {
            let (id, _) = upsert_group(conn, s, key, None).await?;
            ids.insert((*key).to_string(), id);
        }
    }
    Ok(ids)
}

impl Store {
    /// Writes a batch of listed groups in one transaction, tagged with the run.
    pub async fn upsert_groups(
        &self,
        run_id: i64,
        mdm_id: i64,
        groups: &[Group],
    ) -> Result<UpsertCounts, StoreError> {
        let mut tx = self.begin_write().await?;
        let s = scope(&mut tx, mdm_id, Some(run_id)).await?;
        let counts = write_groups(&mut tx, &s, groups).await?;
        tx.commit().await?;
        Ok(counts)
    }
}

/// Writes a batch of listed groups in the caller's transaction (the path
/// of [`Store::upsert_groups`] and of a sync's writer).
pub(super) async fn write_groups(
    conn: &mut SqliteConnection,
    s: &Scope,
    groups: &[Group],
) -> Result<UpsertCounts, StoreError> {
    let mut counts = UpsertCounts::default();
    for g in groups {
        counts.count(
            upsert_group(conn, s, &g.mdm_group_id, Some(&g.name))
                .await?
                .1,
        );
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sync_runs::testutil::run;
    use crate::store::testutil::*;

    #[tokio::test]
    async fn groups_count_added_then_unchanged() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let r = run(&store, mdm).await;
        let groups = [Group {
            mdm_group_id: "7".into(),
            name: "Sales".into(),
        }];
        let c = store.upsert_groups(r, mdm, &groups).await.unwrap();
        assert_eq!((c.added, c.updated), (1, 0));
        let c = store.upsert_groups(r, mdm, &groups).await.unwrap();
        assert_eq!((c.added, c.updated), (0, 0));
    }
}
