//! Sync runs: one row per full sync of one MDM, from its start to how it
//! ended, with the counts it recorded. The inventory rows a run writes are
//! tagged with its id (see `inventory`), which is how removal knows what the
//! run did not see.

use super::inventory::scope;
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
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
}

/// Counts are u64 in Rust and INTEGER (i64) in SQLite; no real count comes near the limit.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(super) mod testutil {
    use super::super::Store;
    use super::SyncTrigger;

    /// Starts a scheduled run of `mdm`; returns its id.
    pub async fn run(store: &Store, mdm: i64) -> i64 {
        store
            .start_sync_run(mdm, SyncTrigger::Scheduled)
            .await
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::testutil::run;
    use super::*;

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
}
