-- 0001_init: the connector's whole schema, version 1.
--
-- Shipped migrations are never edited: a change is a new file.
--
-- Conventions (the Rust side, src/store/, relies on them):
-- * Timestamps are TEXT, RFC 3339 in UTC, always written by the application
--   through sqlx's chrono encoding (`2026-11-22T10:00:00.123+00:00`). One writer
--   and one offset means they order correctly as text, which the due-time and
--   "unseen since" queries depend on. Never write SQL's `datetime('now')` (a
--   different format) into these columns.
-- * Enumerations are lower-case TEXT. Where the set is closed by the contract
--   and a wrong value would be a bug with consequences (action states and
--   kinds, sync outcomes, ownership), a CHECK enforces it.
-- * Identifiers on devices and events are stored normalised (see
--   mtd-adapter's ident.rs: MAC as 12 lower-case hex digits, serial / UDID /
--   IMEI upper case), so lookups are plain equality on an index.
-- * Inventory (users, groups, devices) is soft-deleted with `removed_at`: a
--   device the MDM no longer lists keeps its row, so its threat events and
--   actions keep pointing at it. Where a row is deleted for real, events and
--   actions survive through ON DELETE SET NULL and keep their own copies of
--   the identifiers.

-- A customer of the connector, as written in its tenant file.
CREATE TABLE tenants (
    id            TEXT PRIMARY KEY NOT NULL,   -- [a-z0-9-]{1,63}, from the tenant file
    display_name  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    -- Set when the tenant is no longer in the configuration. Its rows stay
    -- (events and actions are records); cleared if the tenant comes back.
    retired_at    TEXT
) STRICT;

-- One MDM of a tenant ([[mdm]] in the tenant file), keyed by its name there.
CREATE TABLE mdm_integrations (
    id              INTEGER PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT NOT NULL,             -- unique in the tenant; prefixes group names
    kind            TEXT NOT NULL CHECK (kind IN ('soti', 'mcms', 'bcdm')),
    url             TEXT NOT NULL,
    first_seen_at   TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    retired_at      TEXT,                      -- no longer in the tenant file
    last_synced_at  TEXT,                      -- end of the last successful full sync
    UNIQUE (tenant_id, name)
) STRICT;

-- A device user as one MDM knows it. With mask_pii the names and e-mail hold
-- masked display forms and pii_hash a keyed hash of the clear values.
CREATE TABLE users (
    id                INTEGER PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    mdm_id            INTEGER NOT NULL REFERENCES mdm_integrations (id) ON DELETE CASCADE,
    mdm_user_id       TEXT NOT NULL,           -- the MDM's key for the user
    username          TEXT,
    email             TEXT,
    first_name        TEXT,
    last_name         TEXT,
    display_name      TEXT NOT NULL,           -- computed by the store from the fields above
    pii_hash          TEXT,
    first_seen_at     TEXT NOT NULL,
    updated_at        TEXT NOT NULL,           -- last change of a stored value
    last_seen_at      TEXT NOT NULL,           -- last time a sync or lookup saw it
    last_sync_run_id  INTEGER REFERENCES sync_runs (id) ON DELETE SET NULL,
    removed_at        TEXT,                    -- soft delete: the MDM no longer lists it
    UNIQUE (mdm_id, mdm_user_id)
) STRICT;
CREATE INDEX users_tenant ON users (tenant_id, removed_at);
CREATE INDEX users_pii_hash ON users (tenant_id, pii_hash);

-- A device group as the MDM names it (a SOTI path, an AirWatch organisation
-- group). The name shown to admins is "<MDM name> <name>", computed by the
-- caller from mdm_integrations.name, so a renamed MDM needs no rewrite here.
CREATE TABLE groups (
    id                INTEGER PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    mdm_id            INTEGER NOT NULL REFERENCES mdm_integrations (id) ON DELETE CASCADE,
    mdm_group_id      TEXT NOT NULL,
    name              TEXT NOT NULL,
    first_seen_at     TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    last_seen_at      TEXT NOT NULL,
    last_sync_run_id  INTEGER REFERENCES sync_runs (id) ON DELETE SET NULL,
    removed_at        TEXT,
    UNIQUE (mdm_id, mdm_group_id)
) STRICT;

-- A managed device. Identity is (mdm_id, mdm_device_id); the hardware
-- identifiers are indexed per tenant for agent lookups, and deliberately NOT
-- unique: two records sharing one are both kept and flagged as a collision.
CREATE TABLE devices (
    id                INTEGER PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    mdm_id            INTEGER NOT NULL REFERENCES mdm_integrations (id) ON DELETE CASCADE,
    mdm_device_id     TEXT NOT NULL,
    udid              TEXT,
    serial            TEXT,
    imei              TEXT,
    mac               TEXT,
    name              TEXT,
    platform          TEXT NOT NULL,           -- ios | android | windows | macos | other
    model             TEXT,
    os_version        TEXT,
    ownership         TEXT NOT NULL DEFAULT 'unknown'
                      CHECK (ownership IN ('corporate', 'personal', 'shared', 'unknown')),
    user_id           INTEGER REFERENCES users (id) ON DELETE SET NULL,
    last_checkin_at   TEXT,
    first_seen_at     TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    last_seen_at      TEXT NOT NULL,
    last_sync_run_id  INTEGER REFERENCES sync_runs (id) ON DELETE SET NULL,
    removed_at        TEXT,
    -- 1 while another live device of the tenant shares a udid, serial, imei or mac.
    collision         INTEGER NOT NULL DEFAULT 0 CHECK (collision IN (0, 1)),
    UNIQUE (mdm_id, mdm_device_id)
) STRICT;
CREATE INDEX devices_udid ON devices (tenant_id, udid);
CREATE INDEX devices_serial ON devices (tenant_id, serial);
CREATE INDEX devices_imei ON devices (tenant_id, imei);
CREATE INDEX devices_mac ON devices (tenant_id, mac);
CREATE INDEX devices_user ON devices (user_id);
CREATE INDEX devices_tenant ON devices (tenant_id, removed_at);

-- Group memberships: replaced as a whole whenever the MDM reports a device.
CREATE TABLE device_groups (
    device_id  INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    group_id   INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (device_id, group_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX device_groups_group ON device_groups (group_id);

-- One threat event from an agent. (tenant_id, event_id) is the idempotency
-- key. The identifiers the agent sent are kept on the event itself, so the
-- event still says which device it was about after the device is gone.
CREATE TABLE threat_events (
    id             INTEGER PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    event_id       TEXT NOT NULL,
    device_id      INTEGER REFERENCES devices (id) ON DELETE SET NULL,
    udid           TEXT,
    serial         TEXT,
    imei           TEXT,
    mac            TEXT,
    mdm_device_id  TEXT,
    threat_type    TEXT NOT NULL,              -- category.name; unknown names are kept
    severity       TEXT NOT NULL,
    threat_name    TEXT,
    detected_at    TEXT NOT NULL,              -- the agent's clock
    received_at    TEXT NOT NULL,              -- ours
    network        TEXT CHECK (network IS NULL OR json_valid(network)),
    details        TEXT CHECK (details IS NULL OR json_valid(details)),
    UNIQUE (tenant_id, event_id)
) STRICT;
CREATE INDEX threat_events_device ON threat_events (device_id);
CREATE INDEX threat_events_tenant_time ON threat_events (tenant_id, received_at);

-- One decision of the policy and its delivery to the MDM: durable work is a
-- row. Every state change writes an action_audit row in the same transaction.
CREATE TABLE actions (
    id                INTEGER PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    event_id          INTEGER REFERENCES threat_events (id) ON DELETE SET NULL,
    device_id         INTEGER REFERENCES devices (id) ON DELETE SET NULL,
    mdm_id            INTEGER REFERENCES mdm_integrations (id) ON DELETE SET NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('none', 'lock', 'disconnect_wifi',
                          'enterprise_wipe', 'wipe', 'remove_wifi_profile')),
    -- The disconnect_wifi action a remove_wifi_profile row undoes.
    parent_action_id  INTEGER REFERENCES actions (id) ON DELETE SET NULL,
    state             TEXT NOT NULL CHECK (state IN ('skipped', 'held', 'pending', 'sent',
                          'failed', 'dead', 'cancelled')),
    reason            TEXT,                    -- why skipped / held / dead / cancelled
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TEXT,                    -- due time for pending and failed rows
    -- Set while a dispatcher holds the row; a row still claimed after a crash
    -- was perhaps sent, and is retried only where the MDM call is idempotent.
    claimed_at        TEXT,
    last_error        TEXT,
    receipt           TEXT CHECK (receipt IS NULL OR json_valid(receipt)),
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    sent_at           TEXT
) STRICT;
-- The dispatcher's claim: due rows in due order.
CREATE INDEX actions_due ON actions (state, next_attempt_at);
CREATE INDEX actions_device ON actions (device_id, kind, created_at);
CREATE INDEX actions_event ON actions (event_id);
CREATE INDEX actions_mdm ON actions (mdm_id);
CREATE INDEX actions_parent ON actions (parent_action_id);
CREATE INDEX actions_tenant_time ON actions (tenant_id, created_at);

-- The audit trail: one row per state change of an action (and per claim).
CREATE TABLE action_audit (
    id          INTEGER PRIMARY KEY,
    action_id   INTEGER NOT NULL REFERENCES actions (id) ON DELETE CASCADE,
    at          TEXT NOT NULL,
    from_state  TEXT,                          -- NULL for the creation of the action
    to_state    TEXT NOT NULL,
    note        TEXT
) STRICT;
CREATE INDEX action_audit_action ON action_audit (action_id, id);

-- One full sync of one MDM. Removal happens only after a succeeded run;
-- held_removals counts the removals a run held back for confirmation.
CREATE TABLE sync_runs (
    id             INTEGER PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    mdm_id         INTEGER NOT NULL REFERENCES mdm_integrations (id) ON DELETE CASCADE,
    -- initial | scheduled | admin | cli, informational, so no CHECK: a new
    -- trigger must not need a table rebuild.
    trigger        TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    outcome        TEXT NOT NULL DEFAULT 'running'
                   CHECK (outcome IN ('running', 'succeeded', 'failed')),
    error          TEXT,
    added          INTEGER NOT NULL DEFAULT 0,
    updated        INTEGER NOT NULL DEFAULT 0,
    removed        INTEGER NOT NULL DEFAULT 0,
    skipped        INTEGER NOT NULL DEFAULT 0,
    held_removals  INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX sync_runs_mdm ON sync_runs (mdm_id, id);

-- One row the readiness probe writes to (in a rolled-back transaction), to
-- prove the database file is writable and not locked.
CREATE TABLE store_heartbeat (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  TEXT
) STRICT;
INSERT INTO store_heartbeat (id, at) VALUES (1, NULL);

-- A per-tenant random key for the keyed hash of masked PII (mask_pii): the
-- same person hashes the same across syncs and restarts, and the key never
-- leaves the store. Created on first use.
CREATE TABLE tenant_keys (
    tenant_id   TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id),
    pii_key     BLOB NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;
