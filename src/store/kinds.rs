//! The MDM kinds the store takes: `mdm_integrations.kind` was created with
//! `CHECK (kind IN ('soti', 'mcms', 'bcdm'))`, where `mcms` meant AirWatch.
//! Cisco MCMS is IBM MaaS360 (issue 15): stored `mcms` rows become
//! `airwatch`, and the CHECK takes `soti`, `maas360`, `airwatch`, `bcdm`.
//!
//! Why not a migration file: a CHECK changes only by rebuilding the table,
//! which needs foreign keys off (dropping the old table would otherwise
//! cascade to devices, users, groups, actions and sync runs), and that pragma
//! is a no-op inside a transaction, where sqlx runs every SQLite migration.
//! So this runs after the migrations, on one connection, once: a store whose
//! table already takes `airwatch` is left alone.

use super::StoreError;
use sqlx::{Connection, SqliteConnection, SqlitePool};

const NEW_TABLE: &str = "CREATE TABLE mdm_integrations_new (
    id              INTEGER PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT NOT NULL,             -- unique in the tenant; prefixes group names
    kind            TEXT NOT NULL CHECK (kind IN ('soti', 'maas360', 'airwatch', 'bcdm')),
    url             TEXT NOT NULL,
    first_seen_at   TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    retired_at      TEXT,                      -- no longer in the tenant file
    last_synced_at  TEXT,                      -- end of the last successful full sync
    UNIQUE (tenant_id, name)
) STRICT";

const COPY: &str = "INSERT INTO mdm_integrations_new
    (id, tenant_id, name, kind, url, first_seen_at, updated_at, retired_at, last_synced_at)
SELECT id, tenant_id, name, CASE kind WHEN 'mcms' THEN 'airwatch' ELSE kind END,
       url, first_seen_at, updated_at, retired_at, last_synced_at
FROM mdm_integrations";

/// Rebuilds `mdm_integrations` with the four kinds, once.
pub(super) async fn upgrade(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let sql: String = sqlx::query_scalar(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'mdm_integrations'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if sql.contains("'airwatch'") {
        return Ok(());
    }
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    let rebuilt = rebuild(&mut conn).await;
    // Back on whatever happened: the connection returns to the pool.
    let on = sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await;
    rebuilt?;
    on?;
    Ok(())
}

async fn rebuild(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(NEW_TABLE).execute(&mut *tx).await?;
    sqlx::query(COPY).execute(&mut *tx).await?;
    sqlx::query("DROP TABLE mdm_integrations")
        .execute(&mut *tx)
        .await?;
    sqlx::query("ALTER TABLE mdm_integrations_new RENAME TO mdm_integrations")
        .execute(&mut *tx)
        .await?;
    // The children's references must all still resolve (SQLite's procedure, step 10).
    let broken: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&mut *tx)
        .await?;
    if let Some((table,)) = broken.first() {
        return Err(StoreError::Corrupt(format!(
            "rebuilding mdm_integrations would leave rows of {table} without their MDM"
        )));
    }
    tx.commit().await?;
    Ok(())
}
