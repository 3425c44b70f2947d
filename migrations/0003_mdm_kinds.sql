-- no-transaction
-- Cisco MCMS is IBM MaaS360 (issue 15). Earlier builds stored the AirWatch
-- adapter's integrations as kind `mcms`: they become `airwatch`, and the
-- kinds `maas360` and `airwatch` are allowed. A CHECK constraint changes only
-- by rebuilding the table (SQLite's documented twelve-step procedure), with
-- foreign keys off meanwhile so that dropping the old table does not cascade
-- to devices, users, groups, actions and sync runs. Hence no transaction
-- around the file: the pragma has no effect inside one.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE mdm_integrations_new (
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
) STRICT;
INSERT INTO mdm_integrations_new
    (id, tenant_id, name, kind, url, first_seen_at, updated_at, retired_at, last_synced_at)
SELECT id, tenant_id, name, CASE kind WHEN 'mcms' THEN 'airwatch' ELSE kind END,
       url, first_seen_at, updated_at, retired_at, last_synced_at
FROM mdm_integrations;
DROP TABLE mdm_integrations;
ALTER TABLE mdm_integrations_new RENAME TO mdm_integrations;
COMMIT;
PRAGMA foreign_keys = ON;
