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
//!
//! The same holds for `actions.kind` (issue 17): its CHECK gains
//! `signal_risk`, and the table gains `signal_level` (the level a
//! `signal_risk` row writes), in one rebuild ([`upgrade_actions`]).

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
    rebuild_once(
        pool,
        Rebuild {
            table: "mdm_integrations",
            done_when_sql_has: "'airwatch'",
            new_table: NEW_TABLE,
            copy: COPY,
            indexes: &[],
            orphans: "without their MDM",
        },
    )
    .await
}

const NEW_ACTIONS: &str = "CREATE TABLE actions_new (
    id                INTEGER PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    event_id          INTEGER REFERENCES threat_events (id) ON DELETE SET NULL,
    device_id         INTEGER REFERENCES devices (id) ON DELETE SET NULL,
    mdm_id            INTEGER REFERENCES mdm_integrations (id) ON DELETE SET NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('none', 'lock', 'disconnect_wifi',
                          'enterprise_wipe', 'wipe', 'remove_wifi_profile', 'signal_risk')),
    parent_action_id  INTEGER REFERENCES actions (id) ON DELETE SET NULL,
    state             TEXT NOT NULL CHECK (state IN ('skipped', 'held', 'pending', 'sent',
                          'failed', 'dead', 'cancelled')),
    reason            TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TEXT,
    claimed_at        TEXT,
    last_error        TEXT,
    receipt           TEXT CHECK (receipt IS NULL OR json_valid(receipt)),
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    sent_at           TEXT,
    sending_at        TEXT,
    -- signal_risk only: the level it writes (secured, low, medium, high, critical).
    signal_level      TEXT CHECK (signal_level IN ('secured', 'low', 'medium', 'high', 'critical'))
) STRICT";

const COPY_ACTIONS: &str = "INSERT INTO actions_new
    (id, tenant_id, event_id, device_id, mdm_id, kind, parent_action_id, state, reason,
     attempts, next_attempt_at, claimed_at, last_error, receipt, created_at, updated_at,
     sent_at, sending_at)
SELECT id, tenant_id, event_id, device_id, mdm_id, kind, parent_action_id, state, reason,
     attempts, next_attempt_at, claimed_at, last_error, receipt, created_at, updated_at,
     sent_at, sending_at
FROM actions";

/// The indexes of `actions` (0001 and 0002), dropped with the old table,
/// and the one `signal_risk` needs: a device's unsent signals, to supersede.
const ACTION_INDEXES: &[&str] = &[
    "CREATE INDEX actions_due ON actions (state, next_attempt_at)",
    "CREATE INDEX actions_device ON actions (device_id, kind, created_at)",
    "CREATE INDEX actions_event ON actions (event_id)",
    "CREATE INDEX actions_mdm ON actions (mdm_id)",
    "CREATE INDEX actions_parent ON actions (parent_action_id)",
    "CREATE INDEX actions_tenant_time ON actions (tenant_id, created_at)",
    "CREATE INDEX actions_tenant_sent ON actions (tenant_id, sent_at) WHERE sent_at IS NOT NULL",
];

/// Rebuilds `actions` with `signal_risk` and `signal_level`, once.
pub(super) async fn upgrade_actions(pool: &SqlitePool) -> Result<(), StoreError> {
    rebuild_once(
        pool,
        Rebuild {
            table: "actions",
            done_when_sql_has: "'signal_risk'",
            new_table: NEW_ACTIONS,
            copy: COPY_ACTIONS,
            indexes: ACTION_INDEXES,
            orphans: "without their action",
        },
    )
    .await
}

/// One table rebuild (SQLite's twelve-step procedure, in short): a new
/// table `{table}_new`, the rows copied, the old table dropped, the new one
/// renamed, its indexes created, every foreign key still resolving.
struct Rebuild {
    table: &'static str,
    /// The rebuild has been done when the table's `CREATE` text holds this.
    done_when_sql_has: &'static str,
    new_table: &'static str,
    copy: &'static str,
    indexes: &'static [&'static str],
    /// How rows of another table would be left, for the error.
    orphans: &'static str,
}

/// Runs `rebuild` unless it has been done, with foreign keys off on one
/// connection (the pragma is a no-op inside a transaction) and back on
/// whatever happened: the connection returns to the pool.
async fn rebuild_once(pool: &SqlitePool, rebuild: Rebuild) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let sql: String =
        sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?")
            .bind(rebuild.table)
            .fetch_one(&mut *conn)
            .await?;
    if sql.contains(rebuild.done_when_sql_has) {
        return Ok(());
    }
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    let rebuilt = run_rebuild(&mut conn, &rebuild).await;
    let on = sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await;
    rebuilt?;
    on?;
    Ok(())
}

async fn run_rebuild(conn: &mut SqliteConnection, rebuild: &Rebuild) -> Result<(), StoreError> {
    let table = rebuild.table;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(rebuild.new_table).execute(&mut *tx).await?;
    sqlx::query(rebuild.copy).execute(&mut *tx).await?;
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("ALTER TABLE {table}_new RENAME TO {table}"))
        .execute(&mut *tx)
        .await?;
    for index in rebuild.indexes {
        sqlx::query(index).execute(&mut *tx).await?;
    }
    // The children's references must all still resolve (SQLite's procedure, step 10).
    let broken: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&mut *tx)
        .await?;
    if let Some((child,)) = broken.first() {
        return Err(StoreError::Corrupt(format!(
            "rebuilding {table} would leave rows of {child} {}",
            rebuild.orphans
        )));
    }
    tx.commit().await?;
    Ok(())
}
